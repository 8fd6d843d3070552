//! The supervisor: sole owner of every backend's state. It receives probe observations, runs
//! the role machine and the cluster decision, fires session guards, and builds and stores the
//! routing table. Nothing else writes backend state, so there are no locks around it.
//!
//! Order of operations for one observation (`reconcile.rs`, [`Supervisor::on_observation`]):
//! 1. feed the backend's role machine; log a transition (one line each);
//! 2. decide the cluster again (`decision::decide`), log its events;
//! 3. fire the guards of roles lost (sessions on a demoted node close now);
//! 4. if the routes changed, build a new table and store it (waiting connections wake);
//! 5. ask the cluster's probes to go fast while it has no primary;
//! 6. publish the status snapshot and metrics.

mod apply;
mod guards;
mod reconcile;
mod status;
mod table;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::{BackendConfig, ClusterConfig, ClusterName, Config, ListenerConfig};
use crate::control_plane::checks::{Observation, ProbeCommand, ProbeHandle};
use crate::control_plane::decision::{AdminMode, ClusterMemory, Decision};
use crate::control_plane::role::BackendMachine;
use crate::metrics::Metrics;
use crate::routing::{BackendEntry, BackendKey, RouterWriter};

pub use guards::Held;
pub use status::{BackendStatus, ClusterStatus, ListenerStatus, StatusSnapshot};

use guards::Guards;

/// An operator action on one backend (admin API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAction {
    Drain,
    Disable,
    Enable,
}

/// Why an admin action was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdminError {
    #[error("no backend {0}")]
    UnknownBackend(BackendKey),
    #[error("the supervisor is not running")]
    Stopped,
}

/// Requests to the supervisor.
pub enum Command {
    Admin {
        backend: BackendKey,
        action: AdminAction,
        reply: oneshot::Sender<Result<(), AdminError>>,
    },
    /// Applies a new, already validated config (reload). Replies when the table is stored.
    Apply {
        config: Arc<Config>,
        reply: oneshot::Sender<()>,
    },
}

/// What the rest of the process holds to talk to the supervisor.
#[derive(Clone)]
pub struct SupervisorHandle {
    commands: mpsc::Sender<Command>,
    /// Sessions send a backend here when they could not connect to it: it is checked now.
    pub recheck: mpsc::Sender<BackendKey>,
    pub status: Arc<ArcSwap<StatusSnapshot>>,
}

impl SupervisorHandle {
    pub async fn admin(&self, backend: BackendKey, action: AdminAction) -> Result<(), AdminError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Admin {
                backend,
                action,
                reply,
            })
            .await
            .map_err(|_| AdminError::Stopped)?;
        rx.await.map_err(|_| AdminError::Stopped)?
    }

    /// Applies a validated config; returns once the new routing table is stored.
    pub async fn apply(&self, config: Arc<Config>) -> Result<(), AdminError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Apply { config, reply })
            .await
            .map_err(|_| AdminError::Stopped)?;
        rx.await.map_err(|_| AdminError::Stopped)
    }
}

/// One backend as the supervisor owns it.
struct BackendSlot {
    key: BackendKey,
    config: BackendConfig,
    machine: BackendMachine,
    admin: AdminMode,
    resolved: Option<SocketAddr>,
    /// Data-plane view, rebuilt when the resolved address changes.
    entry: Option<Arc<BackendEntry>>,
    active: Arc<AtomicUsize>,
    guards: Guards,
    probe: ProbeHandle,
    last_check: Option<(Instant, Duration)>,
}

struct ClusterState {
    config: ClusterConfig,
    backends: Vec<BackendSlot>,
    memory: ClusterMemory,
    decision: Option<Decision>,
    /// Whether its probes were last told to go fast.
    fast: bool,
    no_primary_since: Option<Instant>,
}

/// The supervisor task's state.
pub struct Supervisor {
    clusters: Vec<ClusterState>,
    listeners: Vec<ListenerConfig>,
    router: RouterWriter,
    metrics: Metrics,
    generation: u64,
    /// Parent of every session guard; fired by the app when the drain deadline passes.
    sessions: CancellationToken,
    /// Parent of every probe task.
    probes: CancellationToken,
    observations: mpsc::Sender<Observation>,
    cursors: HashMap<crate::config::ListenerName, Arc<AtomicUsize>>,
    session_metrics:
        HashMap<(crate::config::ListenerName, BackendKey), crate::metrics::SessionMetrics>,
    /// Fingerprint of the stored table, to store only real changes.
    stored: Option<table::Fingerprint>,
    status: Arc<ArcSwap<StatusSnapshot>>,
    /// Level of the per-session close line (from `log.session_level`).
    session_level: tracing::Level,
    /// Monotonic clock of the last tick (for seconds-without-primary accounting).
    last_tick: Instant,
}

/// Starts the supervisor task with `config`. Returns once the initial (empty-state) table is
/// stored, so listeners can start immediately.
pub fn spawn(
    config: Arc<Config>,
    router: RouterWriter,
    metrics: Metrics,
    sessions: CancellationToken,
    shutdown: CancellationToken,
) -> SupervisorHandle {
    let (obs_tx, obs_rx) = mpsc::channel(1024);
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let (recheck_tx, recheck_rx) = mpsc::channel(1024);
    let status = Arc::new(ArcSwap::from_pointee(StatusSnapshot::default()));
    let mut sup = Supervisor {
        clusters: Vec::new(),
        listeners: Vec::new(),
        router,
        metrics,
        generation: 0,
        sessions,
        probes: shutdown.child_token(),
        observations: obs_tx,
        cursors: HashMap::new(),
        session_metrics: HashMap::new(),
        stored: None,
        status: status.clone(),
        session_level: config.log.session_level,
        last_tick: Instant::now(),
    };
    sup.apply_config(&config);
    tokio::spawn(sup.run(obs_rx, cmd_rx, recheck_rx, shutdown));
    SupervisorHandle {
        commands: cmd_tx,
        recheck: recheck_tx,
        status,
    }
}

impl Supervisor {
    async fn run(
        mut self,
        mut observations: mpsc::Receiver<Observation>,
        mut commands: mpsc::Receiver<Command>,
        mut recheck: mpsc::Receiver<BackendKey>,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(obs) = observations.recv() => self.on_observation(obs),
                Some(key) = recheck.recv() => {
                    if let Some(slot) = self.slot(&key) {
                        slot.probe.send(ProbeCommand::CheckNow);
                    }
                }
                Some(cmd) = commands.recv() => self.on_command(cmd),
                _ = tick.tick() => self.on_tick(),
            }
        }
        self.probes.cancel();
    }

    fn slot(&mut self, key: &BackendKey) -> Option<&mut BackendSlot> {
        self.clusters
            .iter_mut()
            .find(|c| c.config.name == key.cluster)?
            .backends
            .iter_mut()
            .find(|b| b.key.backend == key.backend)
    }

    fn cluster_index(&self, name: &ClusterName) -> Option<usize> {
        self.clusters.iter().position(|c| &c.config.name == name)
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Admin {
                backend,
                action,
                reply,
            } => {
                let result = self.admin_action(&backend, action);
                let _ = reply.send(result);
            }
            Command::Apply { config, reply } => {
                self.apply_config(&config);
                let _ = reply.send(());
            }
        }
    }

    fn admin_action(&mut self, key: &BackendKey, action: AdminAction) -> Result<(), AdminError> {
        let ci = self
            .cluster_index(&key.cluster)
            .ok_or_else(|| AdminError::UnknownBackend(key.clone()))?;
        let cluster = &mut self.clusters[ci];
        let slot = cluster
            .backends
            .iter_mut()
            .find(|b| b.key.backend == key.backend)
            .ok_or_else(|| AdminError::UnknownBackend(key.clone()))?;
        let before = slot.admin;
        match action {
            AdminAction::Drain => slot.admin = AdminMode::Drain,
            AdminAction::Disable => {
                slot.admin = AdminMode::Disabled;
                slot.guards.fire_all();
            }
            AdminAction::Enable => {
                slot.admin = AdminMode::Enabled;
                // An operator vouches for the node: forget that it was stale, and let its
                // checks establish its role again from scratch.
                cluster.memory.forget(&key.backend);
                slot.machine.forget_role();
                slot.probe.send(ProbeCommand::CheckNow);
            }
        }
        info!(
            message = "Operator changed backend state.",
            cluster = %key.cluster,
            backend = %key.backend,
            from = before.as_str(),
            to = slot.admin.as_str(),
        );
        self.reconcile(ci);
        Ok(())
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last_tick).as_secs_f64();
        self.last_tick = now;
        for c in &self.clusters {
            let label = [c.config.name.as_str()];
            if c.no_primary_since.is_some() {
                self.metrics
                    .seconds_without_primary_total
                    .with_label_values(&label)
                    .inc_by(elapsed);
            }
        }
    }
}
