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
//! 4. start accept loops on the new sockets; restart loops whose limits changed on the same
//!    socket (the socket never closes, so no connection is refused meanwhile);
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
use crate::listener::{self, BindError};
use crate::metrics::Metrics;
use crate::routing::new_router;
use crate::session::ListenerContext;
use crate::supervisor::{self, SupervisorHandle};

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
}

struct RunningListener {
    config: ListenerConfig,
    socket: Arc<TcpListener>,
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
        let mut bound = HashMap::new();
        for l in &config.listeners {
            let socket = listener::bind(l.bind, l.backlog).map_err(|source| StartError::Bind {
                listener: l.name.clone(),
                source,
            })?;
            bound.insert(l.name.clone(), socket);
        }
        let admin_socket = match config.admin.listen {
            Some(addr) => Some(listener::bind(addr, 128).map_err(StartError::Admin)?),
            None => None,
        };
        let shutdown = CancellationToken::new();
        let sessions = CancellationToken::new();
        let (writer, router) = new_router();
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
        });
        {
            let mut running = app.listeners.lock().await;
            for l in &config.listeners {
                if let Some(socket) = bound.remove(&l.name) {
                    running.insert(
                        l.name.clone(),
                        app.start_listener(l.clone(), Arc::new(socket)),
                    );
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

    fn start_listener(&self, config: ListenerConfig, socket: Arc<TcpListener>) -> RunningListener {
        let limit = Arc::new(Semaphore::new(config.max_connections));
        self.start_accepting(config, socket, limit)
    }

    fn start_accepting(
        &self,
        config: ListenerConfig,
        socket: Arc<TcpListener>,
        limit: Arc<Semaphore>,
    ) -> RunningListener {
        let stop = self.shutdown.child_token();
        let ctx = Arc::new(ListenerContext {
            name: config.name.clone(),
            router: self.router.clone(),
            metrics: self.metrics.clone(),
            recheck: self.supervisor.recheck.clone(),
            sessions: self.sessions.clone(),
        });
        let local = socket.local_addr().unwrap_or(config.bind);
        info!(message = "Listening.", listener = %config.name, addr = %local, cluster = %config.cluster, role = config.role.as_str());
        tokio::spawn(listener::run(
            socket.clone(),
            ctx,
            limit.clone(),
            stop.clone(),
            self.tracker.clone(),
        ));
        RunningListener {
            config,
            socket,
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
            let socket = listener::bind(l.bind, l.backlog).map_err(|source| StartError::Bind {
                listener: l.name.clone(),
                source,
            })?;
            fresh.insert(l.name.clone(), Arc::new(socket));
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
                running.remove(&change.name),
            ) else {
                continue;
            };
            old.stop.cancel();
            let entry = match fresh.remove(&change.name) {
                Some(socket) => {
                    info!(message = "Listener rebound.", listener = %l.name, from = %old.local, to = %l.bind);
                    self.start_listener(l.clone(), socket)
                }
                None => {
                    info!(message = "Listener settings changed.", listener = %l.name);
                    resize(&old.limit, old.config.max_connections, l.max_connections);
                    self.start_accepting(l.clone(), old.socket, old.limit)
                }
            };
            running.insert(change.name.clone(), entry);
        }
        // 5. Removed listeners stop accepting; their sessions finish or follow their backends.
        for name in &diff.listeners.removed {
            if let Some(old) = running.remove(name) {
                info!(message = "Listener removed.", listener = %name, addr = %old.local);
                old.stop.cancel();
            }
        }
        let old = std::mem::replace(&mut *self.config.lock().await, new.clone());
        if old.admin.listen != new.admin.listen {
            // The admin server is not rebound: it may be serving this very reload. The new
            // token applies at once (it is read per request); the address needs a restart.
            tracing::warn!(message = "admin.listen changed; the admin server keeps its address until restart.", running = ?self.admin_addr, configured = ?new.admin.listen);
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

    pub async fn config(&self) -> Arc<Config> {
        self.config.lock().await.clone()
    }

    /// Number of live client sessions (including queued ones).
    pub fn sessions(&self) -> usize {
        self.tracker.len()
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
