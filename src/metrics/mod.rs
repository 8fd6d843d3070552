//! Every metric rolegate exports, registered on an explicit [`Registry`] (never the global
//! one) so that tests can encode a private registry and assert lines.
//!
//! Labels are bounded: listener, cluster, backend, role, direction and closed sets of reasons.
//! Never a client address. The data plane does not touch a `*Vec` per connection: the routing
//! table carries pre-bound children ([`SessionMetrics`]) built off the hot path.

use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

mod series;

pub use series::{ACCEPT_ERROR_REASONS, CONNECT_ERROR_REASONS, REFUSAL_REASONS};

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
    pub backend_up: IntGaugeVec,
    pub backend_role: IntGaugeVec,
    pub backend_replication_lag: prometheus::GaugeVec,
    pub check_duration: HistogramVec,
    pub check_failures_total: IntCounterVec,
    pub primary_changes_total: IntCounterVec,
    pub split_brain: IntGaugeVec,
    pub stale_primaries: IntGaugeVec,
    pub primary_candidates: IntGaugeVec,
    pub seconds_without_primary_total: prometheus::CounterVec,
    pub sessions_fenced_total: IntCounterVec,
    pub config_reloads_total: IntCounterVec,
    pub config_last_reload_success: Gauge,
    pub session_fd_capacity: IntGauge,
    pub admin_auth_failures_total: IntCounter,
    pub build_info: IntGaugeVec,
}

/// Direction labels, fixed strings so dashboards can rely on them.
pub const CLIENT_TO_BACKEND: &str = "client_to_backend";
pub const BACKEND_TO_CLIENT: &str = "backend_to_client";

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone()))
        .expect("metric names are unique and valid (static definitions)");
    c
}

impl Metrics {
    /// Builds and registers every family on a fresh registry (plus process metrics on Linux).
    pub fn new() -> Metrics {
        let r = Registry::new();
        let lb = ["listener", "backend"];
        let cb = ["cluster", "backend"];
        let latency_buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        let session_buckets = vec![
            0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 86400.0,
        ];
        let m = Metrics {
            sessions_active: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "rolegate_sessions_active",
                        "Client sessions currently proxied.",
                    ),
                    &lb,
                )
                .unwrap(),
            ),
            sessions_total: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "rolegate_sessions_total",
                        "Client sessions connected to a backend.",
                    ),
                    &lb,
                )
                .unwrap(),
            ),
            session_duration: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "rolegate_session_duration_seconds",
                        "Lifetime of proxied sessions.",
                    )
                    .buckets(session_buckets),
                    &["listener"],
                )
                .unwrap(),
            ),
            bytes_total: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "rolegate_bytes_total",
                        "Bytes proxied, by direction (counted when a session ends).",
                    ),
                    &["listener", "backend", "direction"],
                )
                .unwrap(),
            ),
            spliced_bytes_total: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "rolegate_spliced_bytes_total",
                        "Bytes of bytes_total moved with splice(2).",
                    ),
                    &["listener"],
                )
                .unwrap(),
            ),
            connect_errors_total: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "rolegate_connect_errors_total",
                        "Failed connects to a backend.",
                    ),
                    &["listener", "backend", "reason"],
                )
                .unwrap(),
            ),
            accept_errors_total: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "rolegate_accept_errors_total",
                        "accept(2) errors on a listener.",
                    ),
                    &["listener", "reason"],
                )
                .unwrap(),
            ),
            listener_refused_total: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "rolegate_listener_refused_total",
                        "Client connections not proxied, by reason.",
                    ),
                    &["listener", "reason"],
                )
                .unwrap(),
            ),
            queued_connections: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "rolegate_queued_connections",
                        "Connections waiting for a qualifying backend.",
                    ),
                    &["listener"],
                )
                .unwrap(),
            ),
            backend_up: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "rolegate_backend_up",
                        "1 when the backend's checks pass (after rise).",
                    ),
                    &cb,
                )
                .unwrap(),
            ),
            backend_role: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("rolegate_backend_role", "1 for the backend's current role."),
                    &["cluster", "backend", "role"],
                )
                .unwrap(),
            ),
            backend_replication_lag: reg(
                &r,
                prometheus::GaugeVec::new(
                    Opts::new(
                        "rolegate_backend_replication_lag_seconds",
                        "Replica lag as last checked.",
                    ),
                    &cb,
                )
                .unwrap(),
            ),
            check_duration: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "rolegate_check_duration_seconds",
                        "Duration of role checks.",
                    )
                    .buckets(latency_buckets),
                    &cb,
                )
                .unwrap(),
            ),
            check_failures_total: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("rolegate_check_failures_total", "Failed checks, by reason."),
                    &["cluster", "backend", "reason"],
                )
                .unwrap(),
            ),
            primary_changes_total: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "rolegate_primary_changes_total",
                        "Times the routed primary of a cluster changed.",
                    ),
                    &["cluster"],
                )
                .unwrap(),
            ),
            split_brain: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "rolegate_split_brain",
                        "1 while more than one backend claims primary or a stale primary is seen.",
                    ),
                    &["cluster"],
                )
                .unwrap(),
            ),
            stale_primaries: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "rolegate_stale_primaries",
                        "Backends claiming primary after another was confirmed in their place.",
                    ),
                    &["cluster"],
                )
                .unwrap(),
            ),
            primary_candidates: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "rolegate_primary_candidates",
                        "Backends whose latest check claims primary.",
                    ),
                    &["cluster"],
                )
                .unwrap(),
            ),
            seconds_without_primary_total: reg(
                &r,
                prometheus::CounterVec::new(
                    Opts::new(
                        "rolegate_seconds_without_primary_total",
                        "Time the cluster had no routable primary.",
                    ),
                    &["cluster"],
                )
                .unwrap(),
            ),
            sessions_fenced_total: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "rolegate_sessions_fenced_total",
                        "Sessions closed because their backend lost their listener's role, went down, or was disabled or removed.",
                    ),
                    &cb,
                )
                .unwrap(),
            ),
            config_reloads_total: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "rolegate_config_reloads_total",
                        "Configuration reloads, by result.",
                    ),
                    &["result"],
                )
                .unwrap(),
            ),
            config_last_reload_success: reg(
                &r,
                Gauge::new(
                    "rolegate_config_last_reload_success_timestamp_seconds",
                    "Unix time of the last successful configuration load.",
                )
                .unwrap(),
            ),
            session_fd_capacity: reg(
                &r,
                IntGauge::new(
                    "rolegate_session_fd_capacity",
                    "Sessions the descriptor limit (RLIMIT_NOFILE) leaves room for, over all listeners, once the control plane's descriptors are set aside; beyond it clients wait in the backlog.",
                )
                .unwrap(),
            ),
            admin_auth_failures_total: reg(
                &r,
                IntCounter::new(
                    "rolegate_admin_auth_failures_total",
                    "Admin requests refused: missing or wrong token, or a non-loopback peer when no token is set.",
                )
                .unwrap(),
            ),
            build_info: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("rolegate_build_info", "Always 1; labels carry the version."),
                    &["version"],
                )
                .unwrap(),
            ),
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
