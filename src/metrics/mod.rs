//! Every metric rolegate exports, registered on an explicit [`Registry`] (never the global
//! one) so that tests can encode a private registry and assert lines.
//!
//! Labels are bounded: listener, cluster, backend, role, direction and closed sets of reasons.
//! Never a client address. The data plane does not touch a `*Vec` per connection: the routing
//! table carries pre-bound children ([`SessionMetrics`]) built off the hot path.

use prometheus::{
    CounterVec, Gauge, GaugeVec, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Registry,
};

mod families;
mod series;

use families::Register;

pub use series::{ACCEPT_ERROR_REASONS, AUTHORITY_EVENTS, CONNECT_ERROR_REASONS, REFUSAL_REASONS};

/// All metric families. Cheap to clone (every field is an `Arc` inside).
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub sessions_active: IntGaugeVec,
    pub sessions_total: IntCounterVec,
    pub session_duration: HistogramVec,
    pub bytes_total: IntCounterVec,
    pub spliced_bytes_total: IntCounterVec,
    pub connect_errors_total: IntCounterVec,
    pub accept_errors_total: IntCounterVec,
    pub listener_refused_total: IntCounterVec,
    pub queued_connections: IntGaugeVec,
    pub sessions_rescued_total: IntCounterVec,
    pub backend_up: IntGaugeVec,
    pub backend_role: IntGaugeVec,
    pub backend_replication_lag: GaugeVec,
    pub check_duration: HistogramVec,
    pub check_failures_total: IntCounterVec,
    pub primary_changes_total: IntCounterVec,
    pub split_brain: IntGaugeVec,
    pub cluster_held: IntGaugeVec,
    pub holds_ended_total: IntCounterVec,
    pub stale_primaries: IntGaugeVec,
    pub primary_candidates: IntGaugeVec,
    pub seconds_without_primary_total: CounterVec,
    pub sessions_fenced_total: IntCounterVec,
    pub config_reloads_total: IntCounterVec,
    pub config_last_reload_success: Gauge,
    pub session_fd_capacity: IntGauge,
    pub admin_auth_failures_total: IntCounter,
    pub fleet_observing: IntGauge,
    pub fleet_leader: IntGauge,
    pub fleet_connected: IntGauge,
    pub fleet_records_refused_total: IntCounter,
    pub fleet_publications_refused_total: IntCounter,
    pub authority_up: IntGaugeVec,
    pub authority_agrees: IntGaugeVec,
    pub authority_events_total: IntCounterVec,
    pub steer_active: IntGaugeVec,
    pub steer_sessions: IntGaugeVec,
    pub steer_connections_total: IntCounterVec,
    pub steer_fenced_total: IntCounterVec,
    pub build_info: IntGaugeVec,
}

/// Direction labels, fixed strings so dashboards can rely on them.
pub const CLIENT_TO_BACKEND: &str = "client_to_backend";
pub const BACKEND_TO_CLIENT: &str = "backend_to_client";

impl Metrics {
    /// Builds and registers every family of the table (`families.rs`) on a fresh registry
    /// (plus process metrics on Linux).
    pub fn new() -> Metrics {
        let r = Registry::new();
        let m = Metrics {
            sessions_active: Register::register(&r, &families::SESSIONS_ACTIVE),
            sessions_total: Register::register(&r, &families::SESSIONS_TOTAL),
            session_duration: Register::register(&r, &families::SESSION_DURATION),
            bytes_total: Register::register(&r, &families::BYTES_TOTAL),
            spliced_bytes_total: Register::register(&r, &families::SPLICED_BYTES_TOTAL),
            connect_errors_total: Register::register(&r, &families::CONNECT_ERRORS_TOTAL),
            accept_errors_total: Register::register(&r, &families::ACCEPT_ERRORS_TOTAL),
            listener_refused_total: Register::register(&r, &families::LISTENER_REFUSED_TOTAL),
            queued_connections: Register::register(&r, &families::QUEUED_CONNECTIONS),
            sessions_rescued_total: Register::register(&r, &families::SESSIONS_RESCUED_TOTAL),
            backend_up: Register::register(&r, &families::BACKEND_UP),
            backend_role: Register::register(&r, &families::BACKEND_ROLE),
            backend_replication_lag: Register::register(&r, &families::BACKEND_REPLICATION_LAG),
            check_duration: Register::register(&r, &families::CHECK_DURATION),
            check_failures_total: Register::register(&r, &families::CHECK_FAILURES_TOTAL),
            primary_changes_total: Register::register(&r, &families::PRIMARY_CHANGES_TOTAL),
            split_brain: Register::register(&r, &families::SPLIT_BRAIN),
            cluster_held: Register::register(&r, &families::CLUSTER_HELD),
            holds_ended_total: Register::register(&r, &families::HOLDS_ENDED_TOTAL),
            stale_primaries: Register::register(&r, &families::STALE_PRIMARIES),
            primary_candidates: Register::register(&r, &families::PRIMARY_CANDIDATES),
            seconds_without_primary_total: Register::register(
                &r,
                &families::SECONDS_WITHOUT_PRIMARY_TOTAL,
            ),
            sessions_fenced_total: Register::register(&r, &families::SESSIONS_FENCED_TOTAL),
            config_reloads_total: Register::register(&r, &families::CONFIG_RELOADS_TOTAL),
            config_last_reload_success: Register::register(
                &r,
                &families::CONFIG_LAST_RELOAD_SUCCESS,
            ),
            session_fd_capacity: Register::register(&r, &families::SESSION_FD_CAPACITY),
            admin_auth_failures_total: Register::register(&r, &families::ADMIN_AUTH_FAILURES_TOTAL),
            fleet_observing: Register::register(&r, &families::FLEET_OBSERVING),
            fleet_leader: Register::register(&r, &families::FLEET_LEADER),
            fleet_connected: Register::register(&r, &families::FLEET_CONNECTED),
            fleet_records_refused_total: Register::register(
                &r,
                &families::FLEET_RECORDS_REFUSED_TOTAL,
            ),
            fleet_publications_refused_total: Register::register(
                &r,
                &families::FLEET_PUBLICATIONS_REFUSED_TOTAL,
            ),
            authority_up: Register::register(&r, &families::AUTHORITY_UP),
            authority_agrees: Register::register(&r, &families::AUTHORITY_AGREES),
            authority_events_total: Register::register(&r, &families::AUTHORITY_EVENTS_TOTAL),
            steer_active: Register::register(&r, &families::STEER_ACTIVE),
            steer_sessions: Register::register(&r, &families::STEER_SESSIONS),
            steer_connections_total: Register::register(&r, &families::STEER_CONNECTIONS_TOTAL),
            steer_fenced_total: Register::register(&r, &families::STEER_FENCED_TOTAL),
            build_info: Register::register(&r, &families::BUILD_INFO),
            registry: r,
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for result in ["success", "error"] {
            m.config_reloads_total.with_label_values(&[result]);
        }
        #[cfg(target_os = "linux")]
        {
            // process_* (fds, RSS, CPU) keep their conventional unprefixed names.
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            let _ = m.registry.register(Box::new(pc));
        }
        m
    }

    /// Pre-bound series for one (listener, backend) pair.
    pub fn session_metrics(&self, listener: &str, backend: &str) -> SessionMetrics {
        SessionMetrics {
            active: self.sessions_active.with_label_values(&[listener, backend]),
            total: self.sessions_total.with_label_values(&[listener, backend]),
            duration: self.session_duration.with_label_values(&[listener]),
            to_backend: self
                .bytes_total
                .with_label_values(&[listener, backend, CLIENT_TO_BACKEND]),
            to_client: self
                .bytes_total
                .with_label_values(&[listener, backend, BACKEND_TO_CLIENT]),
            spliced: self.spliced_bytes_total.with_label_values(&[listener]),
        }
    }

    /// Encodes the registry in the Prometheus text format.
    pub fn encode(&self) -> String {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        let encoder = prometheus::TextEncoder::new();
        // Encoding only fails on a write error, and a Vec cannot fail to write.
        let _ = encoder.encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Series of one (listener, backend) pair, bound once when a routing table is built.
#[derive(Clone)]
pub struct SessionMetrics {
    pub active: IntGauge,
    pub total: IntCounter,
    pub duration: Histogram,
    pub to_backend: IntCounter,
    pub to_client: IntCounter,
    pub spliced: IntCounter,
}
