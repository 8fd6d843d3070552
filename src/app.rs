//! Wiring: owns the listeners, the supervisor handle, the admin server and the shutdown
//! tokens; applies reloads; drains on stop.
//!
//! Tokens, outermost first:
//! - `shutdown`: fired when the process stops — accept loops, probes, supervisor and admin end;
//! - `sessions`: fired when the drain grace period is over — every live session closes (each
//!   backend's guards are its children).
//!
//! Reload order of operations ([`App::reload`]):
//! 1. lock out concurrent reloads;
//! 2. bind the sockets of new and rebound listeners (a failure here changes nothing);
//! 3. hand the config to the supervisor, which stores a table with routes for them;
//! 4. start accept loops on the new sockets; apply changed limits (`max_connections`,
//!    `backlog`) in place, without stopping the loops (no connection is refused or dropped);
//! 5. stop the loops of removed and rebound listeners (their sessions finish or are closed
//!    by their backends' guards, never by the listener going away).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Mutex, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::admin::{self, AdminState};
use crate::config::{Config, ConfigDiff, ListenerConfig, ListenerName};
use crate::data_plane::steer::Steer;
use crate::fd_budget::{self, Plan, Shape};
use crate::listener::{self, BindError};
use crate::metrics::Metrics;
use crate::routing::new_router;
use crate::session::ListenerContext;
use crate::supervisor::{self, SupervisorHandle};
use crate::workers::Workers;

/// A reload was refused; the running configuration is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the running configuration was not loaded from a file")]
    NoSource,
    #[error("{0}")]
    Invalid(#[from] crate::config::ConfigErrors),
    #[error(transparent)]
    Apply(#[from] StartError),
}

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

/// A running proxy.
pub struct App {
    config: Mutex<Arc<Config>>,
    listeners: Mutex<HashMap<ListenerName, RunningListener>>,
    supervisor: SupervisorHandle,
    router: crate::routing::Router,
    metrics: Metrics,
    shutdown: CancellationToken,
    sessions: CancellationToken,
    tracker: TaskTracker,
    admin_addr: Option<SocketAddr>,
    /// Listeners' `steer:` (the kernel side of routing for local clients).
    steer: Arc<Steer>,
    /// The data plane: accept loops and sessions run here, probes and admin do not.
    workers: Workers,
    /// Session permits of the descriptor budget, shared by every listener.
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
        let workers = Workers::start(config.workers).map_err(|source| StartError::Workers {
            count: config.workers,
            source,
        })?;
        // Before the listening sockets: the plan reserves those per listener.
        let fd_plan = plan_descriptors(&config, workers.handles().len())?;
        let mut bound = HashMap::new();
        for l in &config.listeners {
            let sockets = bind_listener(l, &workers)?;
            bound.insert(l.name.clone(), sockets);
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
        let steer = Steer::start(&config, &local, &metrics.registry);
        let (mut writer, router) = new_router();
        writer.observe(steer.clone());
        let supervisor = supervisor::spawn(
            config.clone(),
            writer,
            metrics.clone(),
            sessions.clone(),
            shutdown.clone(),
        );
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
            descriptors: Arc::new(Semaphore::new(
                fd_plan.map_or(Semaphore::MAX_PERMITS, |p| p.sessions),
            )),
            fd_plan: std::sync::Mutex::new(fd_plan),
        });
        if fd_plan.is_some() {
            crate::transfer::draw_pipes_from(Some(app.descriptors.clone()));
        }
        app.apply_fd_plan(fd_plan, &config, None);
        {
            let mut running = app.listeners.lock().await;
            for l in &config.listeners {
                if let Some(sockets) = bound.remove(&l.name) {
                    running.insert(l.name.clone(), app.start_listener(l.clone(), sockets));
                }
            }
        }
        if let Some(socket) = admin_socket {
            let state = AdminState::new(app.clone());
            tokio::spawn(admin::serve(socket, state, app.shutdown.clone()));
        }
        app.metrics.declare(&config);
        app.metrics.config_last_reload_success.set(unix_now());
        warn_about_file(&config);
        Ok(app)
    }

    /// One accept loop per worker, each on its own socket and runtime, sharing one connection
    /// limit (changed in place by a reload, see [`resize`]).
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

    /// Applies a new validated config (SIGHUP, `POST /reload`). See the module doc for the
    /// order of operations.
    ///
    /// # Errors
    /// A new listener cannot be bound; then nothing changed.
    pub async fn reload(&self, new: Config) -> Result<(), StartError> {
        let new = Arc::new(new);
        // 1. One reload at a time: the listener map lock is held throughout.
        let mut running = self.listeners.lock().await;
        let diff = ConfigDiff::between(&self.config.lock().await.clone(), &new);
        info!(
            message = "Applying configuration.",
            listeners_added = diff.listeners.added.len(),
            listeners_removed = diff.listeners.removed.len(),
            listeners_changed = diff.listeners.changed.len(),
            clusters_added = diff.clusters.added.len(),
            clusters_removed = diff.clusters.removed.len(),
            clusters_changed = diff.clusters.changed.len(),
        );
        // The descriptor budget for the new shape; a config that leaves no room is refused.
        let fd_plan = self.replan_descriptors(&new)?;
        // 2. Bind what is new or moved before touching anything.
        let rebinds = diff
            .listeners
            .changed
            .iter()
            .filter(|c| c.bind_changed)
            .map(|c| &c.name);
        let mut fresh = HashMap::new();
        for name in diff.listeners.added.iter().chain(rebinds) {
            let Some(l) = new.listeners.iter().find(|l| &l.name == name) else {
                continue;
            };
            fresh.insert(l.name.clone(), bind_listener(l, &self.workers)?);
        }
        // 3. Routes for the new shape.
        let _ = self.supervisor.apply(new.clone()).await;
        // 4. New sockets start accepting; changed settings restart the loop on the same socket.
        for name in &diff.listeners.added {
            if let (Some(l), Some(socket)) = (
                new.listeners.iter().find(|l| &l.name == name),
                fresh.remove(name),
            ) {
                running.insert(name.clone(), self.start_listener(l.clone(), socket));
            }
        }
        for change in &diff.listeners.changed {
            let (Some(l), Some(old)) = (
                new.listeners.iter().find(|l| l.name == change.name),
                running.get_mut(&change.name),
            ) else {
                continue;
            };
            match fresh.remove(&change.name) {
                Some(sockets) => {
                    info!(message = "Listener rebound.", listener = %l.name, from = %old.local, to = %l.bind);
                    old.stop.cancel();
                    *old = self.start_listener(l.clone(), sockets);
                }
                None => {
                    // Routing settings live in the table; only the limits are the loops'. They
                    // change in place, so no connection (queued, or accepted and waiting for a
                    // permit) is dropped by a settings change.
                    info!(message = "Listener settings changed.", listener = %l.name);
                    resize(&old.limit, old.config.max_connections, l.max_connections);
                    if old.config.backlog != l.backlog {
                        relisten(&old.sockets, l.backlog);
                    }
                    old.config = l.clone();
                }
            }
        }
        // 5. Removed listeners stop accepting; their sessions finish or follow their backends.
        for name in &diff.listeners.removed {
            if let Some(old) = running.remove(name) {
                info!(message = "Listener removed.", listener = %name, addr = %old.local);
                old.stop.cancel();
            }
        }
        let local: HashMap<ListenerName, SocketAddr> = running
            .iter()
            .map(|(name, l)| (name.clone(), l.local))
            .collect();
        self.steer.configure(&new, &local);
        let old = std::mem::replace(&mut *self.config.lock().await, new.clone());
        if old.admin.listen != new.admin.listen {
            // The admin server is not rebound: it may be serving this very reload. The new
            // token applies at once (it is read per request); the address needs a restart.
            tracing::warn!(message = "admin.listen changed; the admin server keeps its address until restart.", running = ?self.admin_addr, configured = ?new.admin.listen);
        }
        if old.workers != new.workers {
            tracing::warn!(
                message = "workers changed; the data plane keeps its thread count until restart.",
                running = self.workers.handles().len(),
                configured = new.workers
            );
        }
        if let Some((old_plan, new_plan)) = fd_plan {
            resize(&self.descriptors, old_plan.sessions, new_plan.sessions);
            *self.fd_plan.lock().unwrap_or_else(|p| p.into_inner()) = Some(new_plan);
            self.apply_fd_plan(Some(new_plan), &new, Some((old_plan, &old)));
        }
        self.metrics.forget_removed(&old, &new);
        self.metrics.declare(&new);
        self.metrics.config_last_reload_success.set(unix_now());
        warn_about_file(&new);
        Ok(())
    }

    /// Reads the config file the running config came from again and applies it (SIGHUP,
    /// `POST /reload`). Counts the result, logs it, and leaves the old config running on any
    /// error.
    ///
    /// # Errors
    /// The file is unreadable or invalid (every error, with positions), or a new listener
    /// cannot be bound.
    pub async fn reload_from_source(&self) -> Result<(), ReloadError> {
        let source = self.config().await.source.clone();
        let result = match source.as_deref() {
            None => Err(ReloadError::NoSource),
            Some(path) => match Config::load(path) {
                Ok(config) => self.reload(config).await.map_err(ReloadError::from),
                Err(errors) => Err(ReloadError::from(errors)),
            },
        };
        let label = if result.is_ok() { "success" } else { "error" };
        self.metrics
            .config_reloads_total
            .with_label_values(&[label])
            .inc();
        let file = source
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        match &result {
            Ok(()) => info!(message = "Configuration reloaded.", config = %file),
            Err(error) => {
                tracing::warn!(message = "Reload failed; the previous configuration keeps running.", config = %file, %error)
            }
        }
        result
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

    pub fn router(&self) -> &crate::routing::Router {
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

    /// The descriptor plan for `new` with the limit and baseline measured at start-up:
    /// `(old, new)` plans, or `None` when there is no budget (no `/proc`).
    fn replan_descriptors(&self, new: &Config) -> Result<Option<(Plan, Plan)>, StartError> {
        let Some(old) = *self.fd_plan.lock().unwrap_or_else(|p| p.into_inner()) else {
            return Ok(None);
        };
        let plan = old.reshaped(shape(new, self.workers.handles().len()));
        check_plan(plan)?;
        Ok(Some((old, plan)))
    }

    /// Publishes a plan: the capacity gauge. Logs it, and warns when the
    /// `max_connections` written in the file add up to more than it allows, at start and when
    /// either changes (not on every reload).
    fn apply_fd_plan(&self, plan: Option<Plan>, config: &Config, before: Option<(Plan, &Config)>) {
        let Some(plan) = plan else {
            return;
        };
        self.metrics
            .session_fd_capacity
            .set(i64::try_from(plan.sessions).unwrap_or(i64::MAX));
        let configured = explicit_max_connections(config);
        if let Some((old, old_config)) = before {
            if old == plan && explicit_max_connections(old_config) == configured {
                return;
            }
        }
        info!(
            message = "Descriptor budget.",
            nofile = plan.nofile,
            open = plan.baseline,
            reserved = plan.reserved,
            sessions = plan.sessions
        );
        if configured > plan.sessions {
            tracing::warn!(
                message = "RLIMIT_NOFILE allows fewer sessions than the listeners' max_connections; beyond it clients wait in the backlog. Raise LimitNOFILE (systemd) or ulimit -n.",
                nofile = plan.nofile,
                sessions = plan.sessions,
                max_connections_total = configured
            );
        }
    }
}

/// The sum of the `max_connections` written in the file (defaults yield to the limit).
fn explicit_max_connections(config: &Config) -> usize {
    config
        .listeners
        .iter()
        .filter(|l| l.max_connections_set)
        .map(|l| l.max_connections)
        .sum()
}

/// The configuration's shape, as the descriptor plan sees it.
fn shape(config: &Config, workers: usize) -> Shape {
    Shape {
        backends: config.clusters.iter().map(|c| c.backends.len()).sum(),
        listeners: config.listeners.len(),
        workers,
    }
}

/// Measures the limit and what is open now and shares it out; `None` (no budget, only `EMFILE`
/// back-off) when either cannot be read.
fn plan_descriptors(config: &Config, workers: usize) -> Result<Option<Plan>, StartError> {
    let measured = fd_budget::nofile().and_then(|n| Ok((n, fd_budget::open_now()?)));
    let (nofile, open) = match measured {
        Ok(m) => m,
        Err(error) => {
            tracing::warn!(message = "Cannot measure descriptors; no session budget, only EMFILE back-off.", %error);
            return Ok(None);
        }
    };
    let plan = Plan::new(nofile, open, shape(config, workers));
    check_plan(plan)?;
    Ok(Some(plan))
}

fn check_plan(plan: Plan) -> Result<(), StartError> {
    if plan.sessions == 0 {
        return Err(StartError::Descriptors {
            nofile: plan.nofile,
            needed: plan.minimum_nofile(),
        });
    }
    Ok(())
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

/// Applies a new backlog to listening sockets in place: `listen(2)` on a listening socket only
/// changes its queue length (Linux). A failure keeps the old backlog and is logged.
fn relisten(sockets: &[Arc<TcpListener>], backlog: u32) {
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    for socket in sockets {
        if let Err(error) = socket2::SockRef::from(&**socket).listen(backlog) {
            tracing::warn!(message = "Cannot change the backlog; the old one stays.", %error);
        }
    }
}

/// Changes a listener's connection limit in place. Permits held by open sessions stay
/// counted; lowering the limit takes permits away as sessions release them.
fn resize(limit: &Arc<Semaphore>, old: usize, new: usize) {
    if new > old {
        limit.add_permits(new - old);
    } else if new < old {
        let limit = limit.clone();
        let excess = u32::try_from(old - new).unwrap_or(u32::MAX);
        tokio::spawn(async move {
            if let Ok(permits) = limit.acquire_many_owned(excess).await {
                permits.forget();
            }
        });
    }
}

/// Logs [`Config::file_warnings`] (a world-readable file with an inline secret).
fn warn_about_file(config: &Config) {
    for warning in config.file_warnings() {
        tracing::warn!(message = "Insecure config file.", %warning);
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
