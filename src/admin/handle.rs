//! The admin API's narrow view of the running proxy.
//!
//! The HTTP side reads the routing table, the status snapshot, the metrics and the config in
//! force, and asks for two things: a reload and a backend action. That is all it can do, and
//! all it knows: the app implements [`Proxy`] and hands it to [`AdminHandle::new`], so nothing
//! in `admin` depends on how the proxy is wired, and tests drive [`super::handle`] against a
//! real app without sockets.
//!
//! Operator requests become methods of [`Proxy`]: [`Proxy::backend_action`], and holding a
//! cluster's primary for a planned switchover ([`Proxy::cluster_hold`]); fleet actions are
//! still to come, next to them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::config::ClusterName;
use crate::config::{Config, ConfigErrors};
use crate::control_plane::supervisor::{AdminAction, AdminError, HoldStatus, StatusSnapshot};
use crate::data_plane::steer::SteerStatus;
use crate::metrics::Metrics;
use crate::routing::BackendKey;
use crate::routing::Router;

/// What the admin API may read of the running proxy and ask of it.
pub trait Proxy: Send + Sync + 'static {
    /// The routing table readers' view (readiness, the generation after a reload).
    fn router(&self) -> &Router;

    /// The registry `/metrics` encodes; refused admin requests are counted in it.
    fn metrics(&self) -> &Metrics;

    /// The supervisor's latest status snapshot.
    fn status(&self) -> Arc<StatusSnapshot>;

    /// The configuration in force: the token is read from it per request, so a reload that
    /// changes it applies at once.
    fn config(&self) -> BoxFuture<'_, Arc<Config>>;

    /// The address a listener is bound to (differs from its `bind` when that asks for port 0).
    fn listener_addr<'a>(&'a self, listener: &'a str) -> BoxFuture<'a, Option<SocketAddr>>;

    /// Re-reads the config file and applies it; the proxy counts and logs the outcome, and keeps
    /// the running configuration on any error.
    fn reload(&self) -> BoxFuture<'_, Result<(), ReloadRefused>>;

    /// Drain, disable or enable one backend.
    fn backend_action(
        &self,
        backend: BackendKey,
        action: AdminAction,
    ) -> BoxFuture<'_, Result<(), AdminError>>;

    /// Holds (`Some(timeout)`) or releases (`None`) the new primary connections of a cluster.
    /// A hold answers its status; a release answers `None` (and whether one was in force).
    fn cluster_hold(
        &self,
        cluster: ClusterName,
        timeout: Option<std::time::Duration>,
    ) -> BoxFuture<'_, Result<HoldReply, AdminError>>;

    /// Each listener with `steer:`, by name (`/status` `listeners[].steer`); none by default.
    fn steer_status(&self) -> HashMap<String, SteerStatus> {
        HashMap::new()
    }

    /// Brings the steering gauges up to date before `/metrics` is encoded.
    fn refresh_steer(&self) {}
}

/// What a hold or release did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldReply {
    Held(HoldStatus),
    /// Released; `false` when no hold was in force.
    Released(bool),
}

/// Why a requested reload left the running configuration as it was, in the three cases the
/// API answers differently (422, 409, 500).
#[derive(Debug, thiserror::Error)]
pub enum ReloadRefused {
    /// The file does not load: every error, with its position.
    #[error("{0}")]
    Invalid(ConfigErrors),
    /// The running configuration did not come from a file.
    #[error("{0}")]
    NoSource(String),
    /// The file is valid but cannot be applied (a new listener's address is taken).
    #[error("{0}")]
    NotApplied(String),
}

/// What the admin service reads and acts on. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct AdminHandle {
    proxy: Arc<dyn Proxy>,
}

impl AdminHandle {
    pub fn new(proxy: Arc<dyn Proxy>) -> Self {
        AdminHandle { proxy }
    }

    pub(super) fn proxy(&self) -> &dyn Proxy {
        &*self.proxy
    }
}
