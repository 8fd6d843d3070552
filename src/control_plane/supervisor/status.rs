//! The status snapshot behind `/status` and the backend gauges, refreshed after every
//! decision. Field names are part of the admin API (documented in README.md); never a secret.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::{BackendSlot, ClusterState, Supervisor};
use crate::config::ListenerConfig;
use crate::control_plane::role::{Health, Role};
use crate::metrics::Metrics;
use crate::routing::RoutingTable;

#[derive(Debug, Clone, Default, Serialize)]
pub struct StatusSnapshot {
    /// Generation of the routing table in force.
    pub generation: u64,
    pub clusters: Vec<ClusterStatus>,
    pub listeners: Vec<ListenerStatus>,
    /// Fleet mode only (`coordination:`); absent when standalone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coordination: Option<CoordinationStatus>,
}

/// `/status` `coordination`: this instance's place in the fleet.
#[derive(Debug, Clone, Serialize)]
pub struct CoordinationStatus {
    /// The configured `auto` | `observer` | `follower`.
    pub mode: &'static str,
    pub instance: String,
    /// Runs the checks (holds an observer slot, or `mode: observer`).
    pub observing: bool,
    /// Holds the leader key: publishes the decisions.
    pub leader: bool,
    /// Has a live etcd session.
    pub connected: bool,
    /// Highest etcd revision of a fleet decision in force (absent before the first).
    pub decision_revision: Option<i64>,
    /// Age of the newest fleet decision in force, by the writer's wall clock.
    pub decision_age_ms: Option<u64>,
    /// Where the routing decisions come from: `etcd` (following) or `local` (own checks).
    pub source: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    pub name: String,
    pub protocol: &'static str,
    /// The backend new primary connections go to, if any.
    pub primary: Option<String>,
    pub split_brain: bool,
    pub split_brain_policy: &'static str,
    /// Backends replaced while down that still claim primary; never routed.
    pub stale: Vec<String>,
    /// Seconds since the cluster last had a routable primary (absent when it has one).
    pub seconds_without_primary: Option<f64>,
    /// The operator hold in force (planned switchover), if any.
    pub hold: Option<super::HoldStatus>,
    /// Whose decision is in force: the fleet leader's instance name when following,
    /// `local` when this instance's own checks decide.
    pub decided_by: String,
    /// The cluster's authority (`authority:`), if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<super::AuthorityStatus>,
    pub backends: Vec<BackendStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackendStatus {
    pub name: String,
    pub address: String,
    pub resolved: Option<String>,
    /// `unknown` | `up` | `down`.
    pub health: &'static str,
    /// `unknown` | `primary` | `replica`.
    pub role: &'static str,
    /// `enabled` | `drain` | `disabled`.
    pub admin: &'static str,
    /// Fleet mode: the instance that set `admin`, and when (ms since the Unix epoch).
    pub admin_by: Option<String>,
    pub admin_at_ms: Option<u64>,
    pub stale: bool,
    pub replication_lag_seconds: Option<f64>,
    pub timeline: Option<u32>,
    /// `reason: detail` of the latest failed check; absent after a success.
    pub last_error: Option<String>,
    pub last_error_reason: Option<&'static str>,
    pub last_check_duration_ms: Option<f64>,
    pub sessions: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ListenerStatus {
    pub name: String,
    pub bind: String,
    pub cluster: String,
    pub role: &'static str,
    /// The role the route currently serves (differs from `role` when `fallback` applies).
    pub serving: &'static str,
    pub backends: Vec<String>,
    /// Why no new connection can be placed (absent when one can).
    pub unavailable: Option<&'static str>,
}

/// Refreshes the snapshot and the backend and cluster gauges from the supervisor's state and
/// `table`, the table in force or about to be stored: the snapshot is stored first, so whoever
/// sees a table also sees a status at least as new.
pub(super) fn publish(sup: &Supervisor, table: &RoutingTable) {
    let clusters = sup
        .clusters
        .iter()
        .enumerate()
        .map(|(ci, c)| {
            export_cluster(&sup.metrics, c);
            super::authority_input::export(&sup.metrics, c);
            let decided_by = sup
                .fleet_decision_in_force(ci)
                .map_or_else(|| "local".to_string(), |f| f.leader.clone());
            cluster_status(&sup.metrics, c, decided_by)
        })
        .collect();
    let listeners = sup
        .listeners
        .iter()
        .map(|l| listener_status(l, table))
        .collect();
    sup.status.store(Arc::new(StatusSnapshot {
        generation: table.generation,
        clusters,
        listeners,
        coordination: sup.coordination_status(),
    }));
}

/// One cluster and its backends; exports each backend's gauges on the way.
fn cluster_status(metrics: &Metrics, c: &ClusterState, decided_by: String) -> ClusterStatus {
    let decision = c.decision.as_ref();
    let backends = c
        .backends
        .iter()
        .map(|b| {
            let lag = decision
                .and_then(|d| d.lag.iter().find(|(n, _)| n == &b.key.backend))
                .and_then(|(_, l)| *l);
            export_backend(metrics, b, lag);
            backend_status(c, b, lag)
        })
        .collect();
    ClusterStatus {
        name: c.config.name.to_string(),
        protocol: c.config.protocol.as_str(),
        primary: decision
            .and_then(|d| d.primary.as_ref().ok())
            .and_then(|v| v.first())
            .map(|b| b.to_string()),
        split_brain: decision.is_some_and(|d| d.split_brain),
        split_brain_policy: c.config.split_brain.as_str(),
        stale: c.memory.stale.iter().map(|b| b.to_string()).collect(),
        seconds_without_primary: c.no_primary_since.map(|s| s.elapsed().as_secs_f64()),
        hold: super::hold::hold_status(c),
        decided_by,
        authority: super::authority_input::status(c),
        backends,
    }
}

fn backend_status(c: &ClusterState, b: &BackendSlot, lag: Option<Duration>) -> BackendStatus {
    let failure = b.machine.last_failure();
    BackendStatus {
        name: b.key.backend.to_string(),
        address: b.config.address.to_string(),
        resolved: b.resolved.map(|a| a.to_string()),
        health: b.machine.health().as_str(),
        role: b.machine.role().as_str(),
        admin: b.admin.as_str(),
        admin_by: b.admin_by.as_ref().map(|(by, _)| by.clone()),
        admin_at_ms: b.admin_by.as_ref().map(|(_, at)| *at),
        stale: c.memory.stale.contains(&b.key.backend),
        replication_lag_seconds: lag.map(|l| l.as_secs_f64()),
        timeline: b.machine.last_facts().and_then(|f| f.timeline),
        last_error: failure.map(|f| f.to_string()),
        last_error_reason: failure.map(|f| f.reason.as_str()),
        last_check_duration_ms: b.last_check.map(|(_, d)| d.as_secs_f64() * 1e3),
        sessions: b.active.load(Ordering::Relaxed),
    }
}

/// `rolegate_backend_up`, `_role` and `_replication_lag_seconds` of one backend.
fn export_backend(metrics: &Metrics, b: &BackendSlot, lag: Option<Duration>) {
    let labels = [b.key.cluster.as_str(), b.key.backend.as_str()];
    let up = b.machine.health() == Health::Up;
    metrics
        .backend_up
        .with_label_values(&labels)
        .set(i64::from(up));
    for role in [Role::Unknown, Role::Primary, Role::Replica] {
        metrics
            .backend_role
            .with_label_values(&[labels[0], labels[1], role.as_str()])
            .set(i64::from(b.machine.role() == role));
    }
    // An unknown lag (replication stopped, not a replica) exports no value rather than a
    // stale one.
    match lag {
        Some(l) => metrics
            .backend_replication_lag
            .with_label_values(&labels)
            .set(l.as_secs_f64()),
        None => {
            let _ = metrics.backend_replication_lag.remove_label_values(&labels);
        }
    }
}

/// The cluster gauges: split brain, primary candidates, stale primaries, and the (declared)
/// seconds-without-primary counter.
fn export_cluster(metrics: &Metrics, c: &ClusterState) {
    let name = [c.config.name.as_str()];
    let decision = c.decision.as_ref();
    metrics
        .split_brain
        .with_label_values(&name)
        .set(i64::from(decision.is_some_and(|d| d.split_brain)));
    let held = decision.is_some_and(|d| d.primary == Err(crate::routing::Unavailable::Held));
    metrics
        .cluster_held
        .with_label_values(&name)
        .set(i64::from(held));
    metrics
        .primary_candidates
        .with_label_values(&name)
        .set(decision.map_or(0, |d| d.primary_claims as i64));
    metrics
        .stale_primaries
        .with_label_values(&name)
        .set(c.memory.stale.len() as i64);
    metrics
        .seconds_without_primary_total
        .with_label_values(&name);
}

/// One listener as the table in force routes it.
fn listener_status(l: &ListenerConfig, table: &RoutingTable) -> ListenerStatus {
    let route = table.route(&l.name);
    ListenerStatus {
        name: l.name.to_string(),
        bind: l.bind.to_string(),
        cluster: l.cluster.to_string(),
        role: l.role.as_str(),
        serving: route.map_or(l.role.as_str(), |r| r.serves.as_str()),
        backends: route.map_or_else(Vec::new, |r| {
            r.candidates
                .iter()
                .map(|c| c.backend.key.backend.to_string())
                .collect()
        }),
        unavailable: route.map_or(Some("no_backend"), |r| r.unavailable.map(|u| u.as_str())),
    }
}
