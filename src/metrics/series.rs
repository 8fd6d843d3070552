//! The lifecycle of labelled series, apart from the family definitions in `metrics.rs`:
//! zero-valued series for every label set a config makes known (so `rate()` and alerts see 0,
//! not nothing), removal of the series of what a reload removed (so label sets stay bounded),
//! and the list of family names (for the dashboard check).
//!
//! The `reason` lists mirror the strings the data plane uses; a reason missing here is still
//! exported at its first occurrence, it only lacks the zero series before it.

use std::collections::BTreeSet;

use super::{Metrics, BACKEND_TO_CLIENT, CLIENT_TO_BACKEND};
use crate::config::{ClusterName, Config};
use crate::control_plane::checks::FailureReason;

/// `reason` values of `rolegate_listener_refused_total`: `max_connections` and `fd_budget`
/// (listener.rs `Limits`: stalls, not refusals), the route's `Unavailable` reasons, and
/// `connect_failed` / `no_route` / `proxy_header` (session.rs `Refusal`).
pub const REFUSAL_REASONS: [&str; 10] = [
    "max_connections",
    "fd_budget",
    "no_primary",
    "split_brain",
    "no_replica",
    "no_backend",
    "held",
    "connect_failed",
    "no_route",
    "proxy_header",
];

/// `reason` values of `rolegate_connect_errors_total` (session.rs `connect_error_reason`).
pub const CONNECT_ERROR_REASONS: [&str; 6] = [
    "refused",
    "timeout",
    "reset",
    "unreachable",
    "fd_limit",
    "other",
];

/// `reason` values of `rolegate_holds_ended_total` (supervisor/hold.rs `HoldEnd`).
pub const HOLD_END_REASONS: [&str; 3] = ["new_primary", "released", "timeout"];

/// `event` values of `rolegate_authority_events_total` (supervisor/authority_input.rs).
pub const AUTHORITY_EVENTS: [&str; 8] = [
    "leader",
    "no_leader",
    "unknown_member",
    "unreachable",
    "hold_started",
    "hold_cleared",
    "recheck",
    "disagrees",
];

/// `reason` values of `rolegate_accept_errors_total` (listener.rs `accept_error_reason`).
pub const ACCEPT_ERROR_REASONS: [&str; 4] = ["fd_limit", "no_memory", "aborted", "other"];

impl Metrics {
    /// Creates the zero-valued series of every label set `config` makes known, so dashboards
    /// and alerts (`rate()`, `increase()`, `absent()`) see 0 instead of nothing before the
    /// first event. Series whose labels include a backend *and* a listener are created when
    /// the pair is first routed (see [`Metrics::session_metrics`]); open-ended reasons of
    /// errors (`connect_errors_total`, `check_failures_total`) appear at the first error.
    pub fn declare(&self, config: &Config) {
        for l in &config.listeners {
            let name = l.name.as_str();
            for reason in REFUSAL_REASONS {
                self.listener_refused_total
                    .with_label_values(&[name, reason]);
            }
            for reason in ACCEPT_ERROR_REASONS {
                self.accept_errors_total.with_label_values(&[name, reason]);
            }
            self.queued_connections.with_label_values(&[name]);
            self.sessions_rescued_total.with_label_values(&[name]);
        }
        for c in &config.clusters {
            let cluster = c.name.as_str();
            self.primary_changes_total.with_label_values(&[cluster]);
            self.cluster_held.with_label_values(&[cluster]);
            for reason in HOLD_END_REASONS {
                self.holds_ended_total.with_label_values(&[cluster, reason]);
            }
            self.seconds_without_primary_total
                .with_label_values(&[cluster]);
            if let Some(a) = &c.authority {
                self.authority_up.with_label_values(&[cluster, a.kind()]);
                self.authority_agrees.with_label_values(&[cluster]);
                for event in AUTHORITY_EVENTS {
                    self.authority_events_total
                        .with_label_values(&[cluster, a.kind(), event]);
                }
            }
            for b in &c.backends {
                self.sessions_fenced_total
                    .with_label_values(&[cluster, b.name.as_str()]);
            }
        }
    }

    /// Drops the series of listeners, clusters and backends that `old` had and `new` has not,
    /// so label sets stay bounded across reloads and a removed cluster's `split_brain` cannot
    /// stay at 1 forever. A (listener, backend) pair goes when the listener, its cluster or the
    /// backend goes; sessions still draining on it then stop being exported. Backend gauges
    /// (`up`, `role`, lag) are dropped by the supervisor when it retires a backend.
    pub fn forget_removed(&self, old: &Config, new: &Config) {
        let backend_kept = |cluster: &ClusterName, backend: &str| {
            new.cluster(cluster)
                .is_some_and(|c| c.backends.iter().any(|b| b.name.as_str() == backend))
        };
        for l in &old.listeners {
            let name = l.name.as_str();
            let same = new.listeners.iter().find(|n| n.name == l.name);
            if same.is_none() {
                for reason in REFUSAL_REASONS {
                    let _ = self
                        .listener_refused_total
                        .remove_label_values(&[name, reason]);
                }
                for reason in ACCEPT_ERROR_REASONS {
                    let _ = self
                        .accept_errors_total
                        .remove_label_values(&[name, reason]);
                }
                let _ = self.queued_connections.remove_label_values(&[name]);
                let _ = self.sessions_rescued_total.remove_label_values(&[name]);
                let _ = self.session_duration.remove_label_values(&[name]);
                let _ = self.spliced_bytes_total.remove_label_values(&[name]);
            }
            let Some(cluster) = old.cluster(&l.cluster) else {
                continue;
            };
            let same_cluster = same.is_some_and(|n| n.cluster == l.cluster);
            for b in &cluster.backends {
                if !same_cluster || !backend_kept(&l.cluster, b.name.as_str()) {
                    self.forget_pair(name, b.name.as_str());
                }
            }
        }
        for c in &old.clusters {
            let cluster = c.name.as_str();
            for b in &c.backends {
                if !backend_kept(&c.name, b.name.as_str()) {
                    self.forget_backend(cluster, b.name.as_str());
                }
            }
            if let Some(a) = &c.authority {
                let kept = new
                    .cluster(&c.name)
                    .is_some_and(|n| n.authority.as_ref().map(|n| n.kind()) == Some(a.kind()));
                if !kept {
                    self.forget_authority(cluster, a.kind());
                }
            }
            if new.cluster(&c.name).is_some() {
                continue;
            }
            let _ = self.primary_changes_total.remove_label_values(&[cluster]);
            let _ = self
                .seconds_without_primary_total
                .remove_label_values(&[cluster]);
            let _ = self.split_brain.remove_label_values(&[cluster]);
            let _ = self.cluster_held.remove_label_values(&[cluster]);
            for reason in HOLD_END_REASONS {
                let _ = self
                    .holds_ended_total
                    .remove_label_values(&[cluster, reason]);
            }
            let _ = self.stale_primaries.remove_label_values(&[cluster]);
            let _ = self.primary_candidates.remove_label_values(&[cluster]);
        }
    }

    fn forget_authority(&self, cluster: &str, kind: &str) {
        let _ = self.authority_up.remove_label_values(&[cluster, kind]);
        let _ = self.authority_agrees.remove_label_values(&[cluster]);
        for event in AUTHORITY_EVENTS {
            let _ = self
                .authority_events_total
                .remove_label_values(&[cluster, kind, event]);
        }
    }

    fn forget_pair(&self, listener: &str, backend: &str) {
        let _ = self
            .sessions_active
            .remove_label_values(&[listener, backend]);
        let _ = self
            .sessions_total
            .remove_label_values(&[listener, backend]);
        for direction in [CLIENT_TO_BACKEND, BACKEND_TO_CLIENT] {
            let _ = self
                .bytes_total
                .remove_label_values(&[listener, backend, direction]);
        }
        for reason in CONNECT_ERROR_REASONS {
            let _ = self
                .connect_errors_total
                .remove_label_values(&[listener, backend, reason]);
        }
    }

    fn forget_backend(&self, cluster: &str, backend: &str) {
        let _ = self
            .sessions_fenced_total
            .remove_label_values(&[cluster, backend]);
        let _ = self.check_duration.remove_label_values(&[cluster, backend]);
        for reason in FailureReason::ALL {
            let _ =
                self.check_failures_total
                    .remove_label_values(&[cluster, backend, reason.as_str()]);
        }
    }

    /// Names of every family registered here, with or without series yet (`gather()` omits
    /// empty families; a dashboard check must not), plus the process collector's.
    pub fn family_names(&self) -> BTreeSet<String> {
        use prometheus::core::Collector;
        let collectors: [&dyn Collector; 34] = [
            &self.sessions_active,
            &self.sessions_total,
            &self.session_duration,
            &self.bytes_total,
            &self.spliced_bytes_total,
            &self.connect_errors_total,
            &self.accept_errors_total,
            &self.listener_refused_total,
            &self.queued_connections,
            &self.sessions_rescued_total,
            &self.backend_up,
            &self.backend_role,
            &self.backend_replication_lag,
            &self.check_duration,
            &self.check_failures_total,
            &self.primary_changes_total,
            &self.split_brain,
            &self.cluster_held,
            &self.holds_ended_total,
            &self.stale_primaries,
            &self.primary_candidates,
            &self.seconds_without_primary_total,
            &self.sessions_fenced_total,
            &self.config_reloads_total,
            &self.config_last_reload_success,
            &self.admin_auth_failures_total,
            &self.authority_up,
            &self.authority_agrees,
            &self.authority_events_total,
            &self.steer_active,
            &self.steer_sessions,
            &self.steer_connections_total,
            &self.steer_fenced_total,
            &self.build_info,
        ];
        let mut names: BTreeSet<String> = collectors
            .iter()
            .flat_map(|c| c.desc())
            .map(|d| d.fq_name.clone())
            .collect();
        names.extend(
            self.registry
                .gather()
                .into_iter()
                .map(|f| f.name().to_string()),
        );
        names
    }
}
