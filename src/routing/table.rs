//! The routing snapshot: for every listener, the backends a new connection may go to, in the
//! order they should be tried, with the cancellation guard each session must register under.
//! Built by the supervisor off the hot path; never mutated after it is stored.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use std::time::Duration;

use crate::config::{BackendName, Balance, ClusterName, ListenerName, RoleFilter, TransferMode};
use crate::metrics::SessionMetrics;

/// Identifies one backend across the whole process (names are unique within a cluster).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendKey {
    pub cluster: ClusterName,
    pub backend: BackendName,
}

impl std::fmt::Display for BackendKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.cluster, self.backend)
    }
}

/// A backend as the data plane needs it.
#[derive(Debug)]
pub struct BackendEntry {
    pub key: BackendKey,
    /// Address from the latest check (a DNS name re-resolved by the probe).
    pub addr: SocketAddr,
    /// Sessions currently open on this backend through any listener (for `least_conn`).
    /// Shared by every table generation: it belongs to the backend, not to a snapshot.
    pub active: Arc<AtomicUsize>,
}

/// One backend a listener may use, with the guard its sessions register under.
#[derive(Clone)]
pub struct Candidate {
    pub backend: Arc<BackendEntry>,
    /// Cancelled when this backend stops serving the role the route serves (or is disabled,
    /// removed, goes down). A session holding an already-cancelled guard closes at once.
    pub guard: CancellationToken,
    pub metrics: SessionMetrics,
}

/// Why a route has no candidate; also the `reason` label of refused connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// No backend is a confirmed, routable primary.
    NoPrimary,
    /// Several backends claim primary and the split-brain policy refuses to choose.
    SplitBrain,
    /// No replica qualifies (up, replicating, within `max_replica_lag`) and no fallback.
    NoReplica,
    /// No backend is up at all (`role: any`, or tcp clusters).
    NoBackend,
}

impl Unavailable {
    pub fn as_str(self) -> &'static str {
        match self {
            Unavailable::NoPrimary => "no_primary",
            Unavailable::SplitBrain => "split_brain",
            Unavailable::NoReplica => "no_replica",
            Unavailable::NoBackend => "no_backend",
        }
    }
}

/// How a listener's sessions connect and transfer. Carried in the table (not read from the
/// config) so that a reload reaches new connections through the same single `load`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSettings {
    pub connect_timeout: Duration,
    /// Other candidates tried after a failed connect.
    pub retries: u32,
    pub idle_timeout: Option<Duration>,
    pub queue_timeout: Duration,
    pub transfer: TransferMode,
    /// Level of the one line logged when a session ends.
    pub session_level: tracing::Level,
    /// `accept_proxy` / `send_proxy`, as of the session's start.
    pub proxy_protocol: crate::data_plane::proxy_protocol::ProxyProtocol,
}

/// The routing of one listener in one snapshot.
#[derive(Clone)]
pub struct Route {
    pub cluster: ClusterName,
    pub settings: Arc<RouteSettings>,
    /// The role the candidates serve (after `fallback` was applied).
    pub serves: RoleFilter,
    pub candidates: Vec<Candidate>,
    /// Set exactly when `candidates` is empty.
    pub unavailable: Option<Unavailable>,
    pub(crate) balance: Balance,
    /// `true` for primary routes: always try candidates in order (the first is the primary).
    pub(crate) ordered: bool,
    /// Round-robin position; belongs to the listener, shared across snapshots.
    pub(crate) cursor: Arc<AtomicUsize>,
}

/// An immutable snapshot of every listener's route.
pub struct RoutingTable {
    /// Increases with every stored table.
    pub generation: u64,
    routes: HashMap<ListenerName, Route>,
}

impl RoutingTable {
    pub fn empty() -> Self {
        RoutingTable {
            generation: 0,
            routes: HashMap::new(),
        }
    }

    pub fn new(generation: u64, routes: HashMap<ListenerName, Route>) -> Self {
        let table = RoutingTable { generation, routes };
        table.debug_check_invariants();
        table
    }

    pub fn route(&self, listener: &ListenerName) -> Option<&Route> {
        self.routes.get(listener)
    }

    pub fn routes(&self) -> impl Iterator<Item = (&ListenerName, &Route)> {
        self.routes.iter()
    }

    /// Listeners that cannot place a new connection, with the reason (for `/readyz`).
    pub fn unavailable(&self) -> Vec<(ListenerName, Unavailable)> {
        let mut v: Vec<_> = self
            .routes
            .iter()
            .filter_map(|(name, r)| r.unavailable.map(|u| (name.clone(), u)))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn debug_check_invariants(&self) {
        for (name, route) in &self.routes {
            debug_assert_eq!(
                route.candidates.is_empty(),
                route.unavailable.is_some(),
                "route {name}: a reason is given exactly when there is no candidate"
            );
            for c in &route.candidates {
                debug_assert_eq!(c.backend.key.cluster, route.cluster);
            }
        }
    }
}

impl Route {
    pub fn new(
        cluster: ClusterName,
        settings: Arc<RouteSettings>,
        serves: RoleFilter,
        candidates: Vec<Candidate>,
        unavailable: Unavailable,
        balance: Balance,
        cursor: Arc<AtomicUsize>,
    ) -> Route {
        let unavailable = candidates.is_empty().then_some(unavailable);
        Route {
            cluster,
            settings,
            ordered: serves == RoleFilter::Primary,
            serves,
            candidates,
            unavailable,
            balance,
            cursor,
        }
    }
}
