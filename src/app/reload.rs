//! Applying a new configuration to the running proxy: [`App::reload`] as named steps, and
//! [`App::reload_from_source`] (SIGHUP, `POST /reload`) around it.
//!
//! Order of operations:
//! 1. lock out concurrent reloads (the listener map stays locked throughout);
//! 2. bind the sockets of new and rebound listeners (a failure here changes nothing);
//! 3. hand the config to the supervisor, which stores a table with routes for them;
//! 4. start accept loops on the new sockets; apply changed limits (`max_connections`,
//!    `backlog`) in place, without stopping the loops (no connection is refused or dropped);
//! 5. stop the loops of removed and rebound listeners (their sessions finish or are closed
//!    by their backends' guards, never by the listener going away);
//! 6. keep the new config: the descriptor budget, the metrics' series, the warnings.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use super::{bind_listener, App, Listeners, StartError};
use crate::config::{Config, ConfigDiff, ListenerName};

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

/// Sockets bound for listeners that are new or moved, not accepting yet.
type Fresh = HashMap<ListenerName, Vec<Arc<TcpListener>>>;

impl App {
    /// Applies a new validated config (SIGHUP, `POST /reload`). See the module doc for the
    /// order of operations.
    ///
    /// # Errors
    /// A new listener cannot be bound, or the descriptor limit leaves no room for the new
    /// shape; then nothing changed.
    pub async fn reload(&self, new: Config) -> Result<(), StartError> {
        let new = Arc::new(new);
        let mut running = self.listeners.lock().await;
        let running_config = App::config(self).await;
        let diff = ConfigDiff::between(&running_config, &new);
        log_diff(&diff);
        let fd_plan = self.replan_descriptors(&new)?;
        let mut fresh = self.bind_new_sockets(&diff, &new)?;
        let _ = self.supervisor.apply(new.clone()).await;
        self.start_added(&mut running, &diff, &new, &mut fresh);
        self.update_changed(&mut running, &diff, &new, &mut fresh);
        stop_removed(&mut running, &diff);
        let local: HashMap<ListenerName, std::net::SocketAddr> = running
            .iter()
            .map(|(name, l)| (name.clone(), l.local))
            .collect();
        self.steer.configure(&new, &local);
        let old = std::mem::replace(&mut *self.config.lock().await, new.clone());
        self.warn_about_restart_only(&old, &new);
        if let Some(plans) = fd_plan {
            self.take_fd_plan(plans, &new, &old);
        }
        self.record_config(Some(&old), &new);
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
                warn!(message = "Reload failed; the previous configuration keeps running.", config = %file, %error)
            }
        }
        result
    }

    /// Step 2: binds what is new or moved before anything is touched.
    fn bind_new_sockets(&self, diff: &ConfigDiff, new: &Config) -> Result<Fresh, StartError> {
        let rebinds = diff
            .listeners
            .changed
            .iter()
            .filter(|c| c.bind_changed)
            .map(|c| &c.name);
        let mut fresh = HashMap::new();
        for name in diff.listeners.added.iter().chain(rebinds) {
            if let Some(l) = new.listeners.iter().find(|l| &l.name == name) {
                fresh.insert(l.name.clone(), bind_listener(l, &self.workers)?);
            }
        }
        Ok(fresh)
    }

    /// Step 4: new listeners start accepting on their fresh sockets.
    fn start_added(
        &self,
        running: &mut Listeners,
        diff: &ConfigDiff,
        new: &Config,
        fresh: &mut Fresh,
    ) {
        for name in &diff.listeners.added {
            if let (Some(l), Some(sockets)) = (
                new.listeners.iter().find(|l| &l.name == name),
                fresh.remove(name),
            ) {
                running.insert(name.clone(), self.start_listener(l.clone(), sockets));
            }
        }
    }

    /// Steps 4 and 5 for changed listeners: a rebound one moves to its fresh sockets (the old
    /// loop stops); otherwise only the limits change, in place.
    fn update_changed(
        &self,
        running: &mut Listeners,
        diff: &ConfigDiff,
        new: &Config,
        fresh: &mut Fresh,
    ) {
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
    }

    /// What a reload cannot change while running, said once per reload that tries.
    fn warn_about_restart_only(&self, old: &Config, new: &Config) {
        if old.admin.listen != new.admin.listen {
            // The admin server is not rebound: it may be serving this very reload. The new
            // token applies at once (it is read per request); the address needs a restart.
            warn!(message = "admin.listen changed; the admin server keeps its address until restart.", running = ?self.admin_addr, configured = ?new.admin.listen);
        }
        if old.workers != new.workers {
            warn!(
                message = "workers changed; the data plane keeps its thread count until restart.",
                running = self.workers.handles().len(),
                configured = new.workers
            );
        }
    }
}

/// One line saying what the reload changes.
fn log_diff(diff: &ConfigDiff) {
    info!(
        message = "Applying configuration.",
        listeners_added = diff.listeners.added.len(),
        listeners_removed = diff.listeners.removed.len(),
        listeners_changed = diff.listeners.changed.len(),
        clusters_added = diff.clusters.added.len(),
        clusters_removed = diff.clusters.removed.len(),
        clusters_changed = diff.clusters.changed.len(),
    );
}

/// Step 5: removed listeners stop accepting; their sessions finish or follow their backends.
fn stop_removed(running: &mut Listeners, diff: &ConfigDiff) {
    for name in &diff.listeners.removed {
        if let Some(old) = running.remove(name) {
            info!(message = "Listener removed.", listener = %name, addr = %old.local);
            old.stop.cancel();
        }
    }
}

/// Applies a new backlog to listening sockets in place: `listen(2)` on a listening socket only
/// changes its queue length (Linux). A failure keeps the old backlog and is logged.
fn relisten(sockets: &[Arc<TcpListener>], backlog: u32) {
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    for socket in sockets {
        if let Err(error) = socket2::SockRef::from(&**socket).listen(backlog) {
            warn!(message = "Cannot change the backlog; the old one stays.", %error);
        }
    }
}

/// Changes a limit in place (a listener's connections, the descriptor budget). Permits held
/// by open sessions stay counted; lowering the limit takes permits away as sessions release
/// them.
pub(super) fn resize(limit: &Arc<Semaphore>, old: usize, new: usize) {
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
