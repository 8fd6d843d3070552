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

mod admin;
mod apply;
mod authority_input;
mod fleet_input;
mod guards;
mod handle;
mod hold;
mod reconcile;
mod status;
mod table;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::config::{BackendConfig, ClusterConfig, ClusterName, Config, ListenerConfig};
use crate::control_plane::checks::{Observation, ProbeCommand, ProbeHandle};
use crate::control_plane::decision::{AdminMode, ClusterMemory, Decision};
use crate::control_plane::role::BackendMachine;
use crate::metrics::Metrics;
use crate::routing::{BackendEntry, BackendKey, RouterWriter};

pub use authority_input::AuthorityStatus;
pub use fleet_input::{FleetDecision, Published, PublishedSet};
pub use guards::Held;
pub use handle::{AdminAction, AdminError, Command, SupervisorHandle};
pub use hold::{FleetHold, HoldChange, HoldEnd, HoldStatus, DEFAULT_HOLD, MAX_HOLD};
pub use status::{
    BackendStatus, ClusterStatus, CoordinationStatus, ListenerStatus, StatusSnapshot,
};

use guards::Guards;

/// One backend as the supervisor owns it.
struct BackendSlot {
    key: BackendKey,
    config: BackendConfig,
    machine: BackendMachine,
    admin: AdminMode,
    /// Fleet mode: who set `admin` and when (wall clock, ms).
    admin_by: Option<(String, u64)>,
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
    /// The clock of an operator hold in force (`hold.rs`).
    hold: Option<hold::HoldClock>,
    /// The latest decision received from the fleet (fleet mode).
    fleet: Option<FleetDecision>,
    /// The authority's failover timing and what was logged about it (`authority_input.rs`).
    timing: authority_input::TimingState,
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
    /// Whether the probes run (always, unless fleet mode makes this instance a follower).
    observing: bool,
    published: tokio::sync::watch::Sender<PublishedSet>,
    /// Fleet mode: the config's mode and name, and the session's (connected, leader).
    fleet: Option<(crate::config::FleetMode, String)>,
    fleet_link: (bool, bool),
    /// `on_lost: fail_closed` in force.
    fleet_closed: bool,
    unreachable: tokio::sync::broadcast::Sender<BackendKey>,
    admin_out: tokio::sync::broadcast::Sender<(BackendKey, AdminAction)>,
    /// The authorities' source tasks and what each last said (`authority_input.rs`).
    authorities: authority_input::Authorities,
    hold_out: tokio::sync::broadcast::Sender<HoldChange>,
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
    let (published_tx, published_rx) = tokio::sync::watch::channel(PublishedSet::default());
    let (unreachable_tx, _) = tokio::sync::broadcast::channel(256);
    let (admin_out_tx, _) = tokio::sync::broadcast::channel(256);
    let (hold_out_tx, _) = tokio::sync::broadcast::channel(256);
    // Fleet mode: only a fixed observer checks from the start; `auto` and followers wait for
    // the fleet task to say whether they hold an observer slot.
    let observing = config
        .coordination
        .as_ref()
        .is_none_or(|c| c.mode == crate::config::FleetMode::Observer);
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
        observing,
        published: published_tx,
        fleet: config
            .coordination
            .as_ref()
            .map(|c| (c.mode, c.instance.clone())),
        fleet_link: (false, false),
        fleet_closed: false,
        unreachable: unreachable_tx.clone(),
        admin_out: admin_out_tx.clone(),
        authorities: authority_input::Authorities::new(
            authority_input::reporter(cmd_tx.clone()),
            shutdown.child_token(),
        ),
        hold_out: hold_out_tx.clone(),
    };
    sup.apply_config(&config);
    tokio::spawn(sup.run(obs_rx, cmd_rx, recheck_rx, shutdown));
    SupervisorHandle {
        commands: cmd_tx,
        recheck: recheck_tx,
        status,
        published: published_rx,
        unreachable: unreachable_tx,
        admin_out: admin_out_tx,
        hold_out: hold_out_tx,
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
            let hold_deadline = self.next_hold_deadline();
            let hold_expiry = async move {
                match hold_deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                () = hold_expiry => self.expire_holds(),
                Some(obs) = observations.recv() => self.on_observation(obs),
                Some(key) = recheck.recv() => {
                    if !self.observing {
                        // No receiver outside fleet mode: nothing to report to.
                        let _ = self.unreachable.send(key.clone());
                    }
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
                if result.is_ok() {
                    if let Some((_, instance)) = &self.fleet {
                        let by = (instance.clone(), wall_ms());
                        if let Some(slot) = self.slot(&backend) {
                            slot.admin_by = Some(by);
                        }
                        // No receiver while etcd is away: the action stays local.
                        let _ = self.admin_out.send((backend.clone(), action));
                        status::publish(self, &self.router.current());
                    }
                }
                let _ = reply.send(result);
            }
            Command::Hold {
                cluster,
                timeout,
                reply,
            } => {
                let _ = reply.send(self.hold(&cluster, timeout));
            }
            Command::Release { cluster, reply } => {
                let _ = reply.send(self.release(&cluster));
            }
            Command::Fleet {
                cluster,
                decision,
                reply,
            } => {
                let _ = reply.send(self.on_fleet_decision(&cluster, *decision));
            }
            Command::Observing(observing) => self.set_observing(observing),
            Command::FleetClosed(closed) => {
                self.fleet_closed = closed;
                for ci in 0..self.clusters.len() {
                    if self.fleet_decision_in_force(ci).is_some() {
                        self.reconcile(ci);
                    }
                }
            }
            Command::FleetAdmin {
                backend,
                action,
                by,
                at_ms,
            } => {
                if self.admin_action(&backend, action).is_ok() {
                    if let Some(slot) = self.slot(&backend) {
                        slot.admin_by = Some((by, at_ms));
                    }
                    status::publish(self, &self.router.current());
                }
            }
            Command::FleetHold {
                cluster,
                hold,
                reply,
            } => {
                let _ = reply.send(self.on_fleet_hold(&cluster, hold));
            }
            Command::FleetLink { connected, leader } => {
                self.fleet_link = (connected, leader);
                self.metrics.fleet_connected.set(i64::from(connected));
                self.metrics.fleet_leader.set(i64::from(leader));
                status::publish(self, &self.router.current());
            }
            Command::Authority(report) => self.on_authority(report),
            Command::Apply { config, reply } => {
                self.apply_config(&config);
                let _ = reply.send(());
            }
        }
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

/// Wall clock in ms since the Unix epoch (fleet mode's "when", comparable across hosts).
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
