//! The table of every metric family rolegate exports: name, help text, label names and, for
//! histograms, buckets. Names, help and labels are part of the contract (README.md's metrics
//! table, dashboards, alert rules): change them here only on purpose. [`super::Metrics::new`]
//! registers one typed family per entry ([`Register`]).

use prometheus::core::Collector;
use prometheus::{
    CounterVec, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// One metric family as exported.
pub(super) struct Family {
    pub name: &'static str,
    pub help: &'static str,
    /// Label names; empty for a single series.
    pub labels: &'static [&'static str],
    /// Histogram buckets; empty for everything else.
    pub buckets: &'static [f64],
}

impl Family {
    fn opts(&self) -> Opts {
        Opts::new(self.name, self.help)
    }
}

/// A family type that can be built from its table entry.
pub(super) trait Register: Collector + Clone + Sized + 'static {
    /// # Errors
    /// The entry is malformed (an invalid name or label); the table is static, so a test
    /// catches this before a release.
    fn build(family: &Family) -> prometheus::Result<Self>;

    /// Builds the family and registers it on `registry`.
    ///
    /// # Panics
    /// On a malformed or duplicated entry of the static table, which `Metrics::new`'s own
    /// test exercises.
    fn register(registry: &Registry, family: &Family) -> Self {
        let built = Self::build(family)
            .and_then(|c| registry.register(Box::new(c.clone())).map(|()| c))
            .unwrap_or_else(|e| panic!("metric family {}: {e}", family.name));
        built
    }
}

macro_rules! labelled {
    ($($ty:ty),*) => {$(
        impl Register for $ty {
            fn build(family: &Family) -> prometheus::Result<Self> {
                <$ty>::new(family.opts(), family.labels)
            }
        }
    )*};
}
labelled!(IntGaugeVec, IntCounterVec, GaugeVec, CounterVec);

impl Register for HistogramVec {
    fn build(family: &Family) -> prometheus::Result<Self> {
        let opts = HistogramOpts::new(family.name, family.help).buckets(family.buckets.to_vec());
        HistogramVec::new(opts, family.labels)
    }
}

macro_rules! single {
    ($($ty:ty),*) => {$(
        impl Register for $ty {
            fn build(family: &Family) -> prometheus::Result<Self> {
                <$ty>::with_opts(family.opts())
            }
        }
    )*};
}
single!(Gauge, IntGauge, IntCounter);

/// Check latency: sub-millisecond on loopback up to a check that hits its timeout.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Session lifetime: a ping up to a day-long pooled connection.
const SESSION_BUCKETS: &[f64] = &[
    0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 86400.0,
];

pub(super) const SESSIONS_ACTIVE: Family = Family {
    name: "rolegate_sessions_active",
    help: "Client sessions currently proxied.",
    labels: &["listener", "backend"],
    buckets: &[],
};

pub(super) const SESSIONS_TOTAL: Family = Family {
    name: "rolegate_sessions_total",
    help: "Client sessions connected to a backend.",
    labels: &["listener", "backend"],
    buckets: &[],
};

pub(super) const SESSION_DURATION: Family = Family {
    name: "rolegate_session_duration_seconds",
    help: "Lifetime of proxied sessions.",
    labels: &["listener"],
    buckets: SESSION_BUCKETS,
};

pub(super) const BYTES_TOTAL: Family = Family {
    name: "rolegate_bytes_total",
    help: "Bytes proxied, by direction (counted when a session ends).",
    labels: &["listener", "backend", "direction"],
    buckets: &[],
};

pub(super) const SPLICED_BYTES_TOTAL: Family = Family {
    name: "rolegate_spliced_bytes_total",
    help: "Bytes of bytes_total moved with splice(2).",
    labels: &["listener"],
    buckets: &[],
};

pub(super) const CONNECT_ERRORS_TOTAL: Family = Family {
    name: "rolegate_connect_errors_total",
    help: "Failed connects to a backend.",
    labels: &["listener", "backend", "reason"],
    buckets: &[],
};

pub(super) const ACCEPT_ERRORS_TOTAL: Family = Family {
    name: "rolegate_accept_errors_total",
    help: "accept(2) errors on a listener.",
    labels: &["listener", "reason"],
    buckets: &[],
};

pub(super) const LISTENER_REFUSED_TOTAL: Family = Family {
    name: "rolegate_listener_refused_total",
    help: "Client connections not proxied, by reason.",
    labels: &["listener", "reason"],
    buckets: &[],
};

pub(super) const QUEUED_CONNECTIONS: Family = Family {
    name: "rolegate_queued_connections",
    help: "Connections waiting for a qualifying backend.",
    labels: &["listener"],
    buckets: &[],
};

pub(super) const BACKEND_UP: Family = Family {
    name: "rolegate_backend_up",
    help: "1 when the backend's checks pass (after rise).",
    labels: &["cluster", "backend"],
    buckets: &[],
};

pub(super) const BACKEND_ROLE: Family = Family {
    name: "rolegate_backend_role",
    help: "1 for the backend's current role.",
    labels: &["cluster", "backend", "role"],
    buckets: &[],
};

pub(super) const BACKEND_REPLICATION_LAG: Family = Family {
    name: "rolegate_backend_replication_lag_seconds",
    help: "Replica lag as last checked.",
    labels: &["cluster", "backend"],
    buckets: &[],
};

pub(super) const CHECK_DURATION: Family = Family {
    name: "rolegate_check_duration_seconds",
    help: "Duration of role checks.",
    labels: &["cluster", "backend"],
    buckets: LATENCY_BUCKETS,
};

pub(super) const CHECK_FAILURES_TOTAL: Family = Family {
    name: "rolegate_check_failures_total",
    help: "Failed checks, by reason.",
    labels: &["cluster", "backend", "reason"],
    buckets: &[],
};

pub(super) const PRIMARY_CHANGES_TOTAL: Family = Family {
    name: "rolegate_primary_changes_total",
    help: "Times the routed primary of a cluster changed.",
    labels: &["cluster"],
    buckets: &[],
};

pub(super) const SESSIONS_RESCUED_TOTAL: Family = Family {
    name: "rolegate_sessions_rescued_total",
    help: "Sessions moved to another backend because theirs lost its role or closed before sending a byte (client bytes replayed).",
    labels: &["listener"],
    buckets: &[],
};

pub(super) const CLUSTER_HELD: Family = Family {
    name: "rolegate_cluster_held",
    help: "1 while new primary connections of the cluster are held in the queue (operator hold or suspect primary).",
    labels: &["cluster"],
    buckets: &[],
};

pub(super) const HOLDS_ENDED_TOTAL: Family = Family {
    name: "rolegate_holds_ended_total",
    help: "Operator holds ended, by reason: new_primary, released, timeout.",
    labels: &["cluster", "reason"],
    buckets: &[],
};

pub(super) const SPLIT_BRAIN: Family = Family {
    name: "rolegate_split_brain",
    help: "1 while more than one backend claims primary or a stale primary is seen.",
    labels: &["cluster"],
    buckets: &[],
};

pub(super) const STALE_PRIMARIES: Family = Family {
    name: "rolegate_stale_primaries",
    help: "Backends claiming primary after another was confirmed in their place.",
    labels: &["cluster"],
    buckets: &[],
};

pub(super) const PRIMARY_CANDIDATES: Family = Family {
    name: "rolegate_primary_candidates",
    help: "Backends whose latest check claims primary.",
    labels: &["cluster"],
    buckets: &[],
};

pub(super) const SECONDS_WITHOUT_PRIMARY_TOTAL: Family = Family {
    name: "rolegate_seconds_without_primary_total",
    help: "Time the cluster had no routable primary.",
    labels: &["cluster"],
    buckets: &[],
};

pub(super) const SESSIONS_FENCED_TOTAL: Family = Family {
    name: "rolegate_sessions_fenced_total",
    help: "Sessions closed because their backend lost their listener's role, went down, or was disabled or removed.",
    labels: &["cluster", "backend"],
    buckets: &[],
};

pub(super) const CONFIG_RELOADS_TOTAL: Family = Family {
    name: "rolegate_config_reloads_total",
    help: "Configuration reloads, by result.",
    labels: &["result"],
    buckets: &[],
};

pub(super) const CONFIG_LAST_RELOAD_SUCCESS: Family = Family {
    name: "rolegate_config_last_reload_success_timestamp_seconds",
    help: "Unix time of the last successful configuration load.",
    labels: &[],
    buckets: &[],
};

pub(super) const SESSION_FD_CAPACITY: Family = Family {
    name: "rolegate_session_fd_capacity",
    help: "Sessions the descriptor limit (RLIMIT_NOFILE) leaves room for, over all listeners, once the control plane's descriptors are set aside; beyond it clients wait in the backlog.",
    labels: &[],
    buckets: &[],
};

pub(super) const ADMIN_AUTH_FAILURES_TOTAL: Family = Family {
    name: "rolegate_admin_auth_failures_total",
    help: "Admin requests refused: missing or wrong token, or a non-loopback peer when no token is set.",
    labels: &[],
    buckets: &[],
};

pub(super) const FLEET_OBSERVING: Family = Family {
    name: "rolegate_fleet_observing",
    help: "Fleet mode: 1 while this instance checks the databases (observer), 0 while it follows.",
    labels: &[],
    buckets: &[],
};

pub(super) const FLEET_LEADER: Family = Family {
    name: "rolegate_fleet_leader",
    help: "Fleet mode: 1 while this instance holds the leader key and publishes the decisions.",
    labels: &[],
    buckets: &[],
};

pub(super) const FLEET_CONNECTED: Family = Family {
    name: "rolegate_fleet_connected",
    help: "Fleet mode: 1 while this instance has a live etcd session.",
    labels: &[],
    buckets: &[],
};

pub(super) const FLEET_RECORDS_REFUSED_TOTAL: Family = Family {
    name: "rolegate_fleet_records_refused_total",
    help: "Fleet mode: records read from etcd and ignored (decision, hold or operator-action records: invalid JSON, wrong version, unknown cluster, backend or action).",
    labels: &[],
    buckets: &[],
};

pub(super) const FLEET_PUBLICATIONS_REFUSED_TOTAL: Family = Family {
    name: "rolegate_fleet_publications_refused_total",
    help: "Fleet mode: decisions this instance did not publish because its leadership had lapsed or etcd fenced its term.",
    labels: &[],
    buckets: &[],
};

pub(super) const AUTHORITY_UP: Family = Family {
    name: "rolegate_authority_up",
    help: "1 while the cluster's authority (Patroni, Sentinel) answers; 0 while it cannot be asked (on_authority_lost applies).",
    labels: &["cluster", "kind"],
    buckets: &[],
};

pub(super) const AUTHORITY_AGREES: Family = Family {
    name: "rolegate_authority_agrees",
    help: "1 while the cluster's authority names the primary rolegate's checks confirm (the AND-gate routes it); 0 otherwise.",
    labels: &["cluster"],
    buckets: &[],
};

pub(super) const AUTHORITY_EVENTS_TOTAL: Family = Family {
    name: "rolegate_authority_events_total",
    help: "What a cluster's authority reported, by event: leader, no_leader, unknown_member, unreachable, hold_started, hold_cleared, recheck, disagrees.",
    labels: &["cluster", "kind", "event"],
    buckets: &[],
};

pub(super) const STEER_ACTIVE: Family = Family {
    name: "rolegate_steer_active",
    help: "1 when the listener's local clients are steered to the backend directly, 0 when the proxy serves them (see /status steer.reason).",
    labels: &["listener"],
    buckets: &[],
};

pub(super) const STEER_SESSIONS: Family = Family {
    name: "rolegate_steer_sessions",
    help: "Steered sessions open now (client connected to the backend directly).",
    labels: &["listener", "backend"],
    buckets: &[],
};

pub(super) const STEER_CONNECTIONS_TOTAL: Family = Family {
    name: "rolegate_steer_connections_total",
    help: "Connections steered to the backend directly.",
    labels: &["listener", "backend"],
    buckets: &[],
};

pub(super) const STEER_FENCED_TOTAL: Family = Family {
    name: "rolegate_steer_fenced_total",
    help: "Steered sessions closed because their backend lost its role or was disabled.",
    labels: &["listener", "backend"],
    buckets: &[],
};

pub(super) const BUILD_INFO: Family = Family {
    name: "rolegate_build_info",
    help: "Always 1; labels carry the version.",
    labels: &["version"],
    buckets: &[],
};
