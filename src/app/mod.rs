//! Wiring: builds both paths and joins them. Owns the listeners, the supervisor handle, the
//! admin server and the shutdown tokens; applies reloads ([`App::reload`], `reload.rs`); drains
//! on stop.
//!
//! Start order ([`App::start`]): the data plane's workers (their pipes draw from the descriptor
//! budget), the descriptor plan (`descriptors.rs`), the listening sockets, the supervisor (the
//! control plane, which stores the first table), the accept loops, and the admin server with
//! its narrow handle (`admin_handle.rs`). A socket that cannot be bound stops the start with
//! nothing left running.
//!
//! Tokens, outermost first:
//! - `shutdown`: fired when the process stops — accept loops, probes, supervisor and admin end;
//! - `sessions`: fired when the drain grace period is over — every live session closes (each
//!   backend's guards are its children).

mod admin_handle;
mod descriptors;
mod reload;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Mutex, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::admin::{self, AdminHandle};
use crate::config::{Config, ListenerConfig, ListenerName};
use crate::control_plane::supervisor::{self, SupervisorHandle};
use crate::data_plane::fd_budget::Plan;
use crate::data_plane::listener::{self, BindError};
use crate::data_plane::session::ListenerContext;
use crate::data_plane::steer::Steer;
use crate::data_plane::workers::Workers;
use crate::metrics::Metrics;
use crate::routing::{new_router, Router};

pub use reload::ReloadError;

/// Start-up failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("listener {listener}: {source}")]
    Bind {
        listener: ListenerName,
        #[source]
        source: BindError,
    },
    #[error("admin server: {0}")]
    Admin(#[source] BindError),
    #[error("RLIMIT_NOFILE is {nofile}: the control plane needs {needed} descriptors before one session fits; raise it (LimitNOFILE= in the systemd unit, ulimit -n, docker run --ulimit nofile=)")]
    Descriptors { nofile: usize, needed: usize },
    #[error("cannot start {count} data-plane workers: {source}")]
    Workers {
        count: usize,
        #[source]
        source: std::io::Error,
    },
}

struct RunningListener {
    config: ListenerConfig,
    /// One per worker, in worker order (`SO_REUSEPORT` group when there are several).
    sockets: Vec<Arc<TcpListener>>,
    local: SocketAddr,
    /// Connection permits; kept across a settings change so sessions already open still
    /// count against the (possibly new) `max_connections`.
    limit: Arc<Semaphore>,
    /// Stops this accept loop only.
    stop: CancellationToken,
}

/// The running listeners by name.
type Listeners = HashMap<ListenerName, RunningListener>;

/// A running proxy.
pub struct App {
    config: Mutex<Arc<Config>>,
    /// Held throughout a reload, so there is one at a time.
    listeners: Mutex<Listeners>,
    supervisor: SupervisorHandle,
    router: Router,
    metrics: Metrics,
    shutdown: CancellationToken,
    sessions: CancellationToken,
    tracker: TaskTracker,
    admin_addr: Option<SocketAddr>,
    /// Listeners' `steer:` (the kernel side of routing for local clients).
    steer: Arc<Steer>,
    /// The data plane: accept loops and sessions run here, probes and admin do not.
    workers: Workers,
    /// Session permits of the descriptor budget, shared by every listener and by the workers'
    /// splice pipes.
    descriptors: Arc<Semaphore>,
    /// How the descriptor limit is shared out for the running config.
    fd_plan: std::sync::Mutex<Option<Plan>>,
}

impl App {
    /// Binds every listener and the admin server, starts the supervisor and probes, and
    /// starts accepting. Connections that arrive before the first checks confirm a primary
    /// wait in the queue like during a failover.
    ///
    /// # Errors
    /// A socket cannot be bound; nothing is left running then.
    pub async fn start(config: Config, metrics: Metrics) -> Result<Arc<App>, StartError> {
        let config = Arc::new(config);
        // Permits are added once the plan is known; nothing runs on the workers before that.
        let descriptors = Arc::new(Semaphore::new(0));
        let workers = Workers::with_pipe_budget(config.workers, Some(descriptors.clone()))
            .map_err(|source| StartError::Workers {
                count: config.workers,
                source,
            })?;
        // Before the listening sockets: the plan reserves those per listener.
        let fd_plan = descriptors::plan(&config, workers.handles().len())?;
        descriptors.add_permits(fd_plan.map_or(Semaphore::MAX_PERMITS, |p| p.sessions));
        let mut bound = HashMap::new();
        for l in &config.listeners {
            bound.insert(l.name.clone(), bind_listener(l, &workers)?);
        }
        let admin_socket = match config.admin.listen {
            Some(addr) => Some(listener::bind(addr, 128).map_err(StartError::Admin)?),
            None => None,
        };
        let shutdown = CancellationToken::new();
        let sessions = CancellationToken::new();
        let local: HashMap<ListenerName, SocketAddr> = bound
            .iter()
            .filter_map(|(name, s)| Some((name.clone(), s.first()?.local_addr().ok()?)))
            .collect();
        let steer = Steer::start(&config, &local, &metrics);
        let (mut writer, router) = new_router();
        writer.observe(steer.clone());
        let supervisor = supervisor::spawn(
            config.clone(),
            writer,
            metrics.clone(),
            sessions.clone(),
            shutdown.clone(),
        );
        // Fleet mode: the etcd session (observer slot, leadership, decision watch).
        if let Some(coordination) = config.coordination.clone() {
            tokio::spawn(crate::control_plane::fleet::run(
                coordination,
                supervisor.clone(),
                metrics.clone(),
                shutdown.child_token(),
            ));
        }
        let app = Arc::new(App {
            config: Mutex::new(config.clone()),
            listeners: Mutex::new(HashMap::new()),
            supervisor,
            router,
            metrics,
            shutdown,
            sessions,
            tracker: TaskTracker::new(),
            admin_addr: admin_socket.as_ref().and_then(|s| s.local_addr().ok()),
            steer,
            workers,
            descriptors,
            fd_plan: std::sync::Mutex::new(fd_plan),
        });
        app.publish_fd_plan(fd_plan, &config, None);
        {
            let mut running = app.listeners.lock().await;
            for l in &config.listeners {
                if let Some(sockets) = bound.remove(&l.name) {
                    running.insert(l.name.clone(), app.start_listener(l.clone(), sockets));
                }
            }
        }
        if let Some(socket) = admin_socket {
            let handle = AdminHandle::new(app.clone());
            tokio::spawn(admin::serve(socket, handle, app.shutdown.clone()));
        }
        app.record_config(None, &config);
        Ok(app)
    }

    /// One accept loop per worker, each on its own socket and runtime, sharing one connection
    /// limit (changed in place by a reload, see `reload.rs`).
    fn start_listener(
        &self,
        config: ListenerConfig,
        sockets: Vec<Arc<TcpListener>>,
    ) -> RunningListener {
        let limit = Arc::new(Semaphore::new(config.max_connections));
        let stop = self.shutdown.child_token();
        let ctx = Arc::new(ListenerContext {
            name: config.name.clone(),
            router: self.router.clone(),
            metrics: self.metrics.clone(),
            recheck: self.supervisor.recheck.clone(),
            sessions: self.sessions.clone(),
            proxy_warnings: Default::default(),
        });
        let local = sockets
            .first()
            .and_then(|s| s.local_addr().ok())
            .unwrap_or(config.bind);
        info!(message = "Listening.", listener = %config.name, addr = %local, cluster = %config.cluster, role = config.role.as_str(), workers = sockets.len());
        for (socket, worker) in sockets.iter().zip(self.workers.handles()) {
            let limits = listener::Limits {
                listener: limit.clone(),
                descriptors: self.descriptors.clone(),
            };
            worker.spawn(listener::run(
                socket.clone(),
                ctx.clone(),
                limits,
                stop.clone(),
                self.tracker.clone(),
            ));
        }
        RunningListener {
            config,
            sockets,
            local,
            limit,
            stop,
        }
    }

    /// Stops accepting, waits up to `grace` for sessions to finish, then closes the rest.
    pub async fn shutdown(&self, grace: Duration) {
        info!(
            message = "Stopping: no new connections; draining sessions.",
            grace_ms = grace.as_millis() as u64,
            sessions = self.tracker.len()
        );
        self.shutdown.cancel();
        // Close the listening sockets (accept loops drop their handles as they stop), so new
        // clients are refused at once instead of waiting in a backlog nobody serves.
        self.listeners.lock().await.clear();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            info!(
                message = "Grace period over; closing remaining sessions.",
                sessions = self.tracker.len()
            );
            self.sessions.cancel();
            self.tracker.wait().await;
        }
        info!(message = "Stopped.");
    }

    /// The address a listener is bound to (its configured port may be 0 in tests).
    pub async fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .lock()
            .await
            .get(&ListenerName::from(name))
            .map(|l| l.local)
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    pub fn supervisor(&self) -> &SupervisorHandle {
        &self.supervisor
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn steer(&self) -> &Steer {
        &self.steer
    }

    pub async fn config(&self) -> Arc<Config> {
        self.config.lock().await.clone()
    }

    /// Number of live client sessions (including queued ones).
    pub fn sessions(&self) -> usize {
        self.tracker.len()
    }

    /// Makes `config` the one the metrics and logs describe: forgets the series of what `old`
    /// had and `config` has not, declares the new ones, stamps the reload time, and warns
    /// about an insecure file. At start and after every applied reload.
    fn record_config(&self, old: Option<&Config>, config: &Config) {
        if let Some(old) = old {
            self.metrics.forget_removed(old, config);
        }
        self.metrics.declare(config);
        self.metrics.config_last_reload_success.set(unix_now());
        // [`Config::file_warnings`]: a world-readable file with an inline secret.
        for warning in config.file_warnings() {
            tracing::warn!(message = "Insecure config file.", %warning);
        }
    }
}

/// The listening sockets of `l`, one per worker.
fn bind_listener(
    l: &ListenerConfig,
    workers: &Workers,
) -> Result<Vec<Arc<TcpListener>>, StartError> {
    listener::bind_group(l.bind, l.backlog, workers.handles()).map_err(|source| StartError::Bind {
        listener: l.name.clone(),
        source,
    })
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
