//! One observation through the role-change path: the backend's machine, the cluster's
//! decision, the guards of roles lost, the table, the status (steps 1–6 of the module doc).

use tokio::time::Instant;
use tracing::{error, info, warn};

use super::{status, table, ClusterState, Held, Supervisor};
use crate::control_plane::checks::{Observation, ProbeCommand};
use crate::control_plane::decision::{self, BackendView, Decision, DecisionEvent};
use crate::control_plane::role::{Health, Role, Thresholds};

impl Supervisor {
    /// Steps 1–6 of the module doc for one observation.
    pub fn on_observation(&mut self, obs: Observation) {
        let Some(ci) = self.cluster_index(&obs.backend.cluster) else {
            return; // removed by a reload while the check ran
        };
        let cluster = &mut self.clusters[ci];
        let thresholds = Thresholds {
            rise: cluster.config.check.rise,
            fall: cluster.config.check.fall,
        };
        let Some(slot) = cluster
            .backends
            .iter_mut()
            .find(|b| b.key.backend == obs.backend.backend)
        else {
            return;
        };
        let labels = [slot.key.cluster.as_str(), slot.key.backend.as_str()];
        self.metrics
            .check_duration
            .with_label_values(&labels)
            .observe(obs.latency.as_secs_f64());
        if let Err(f) = &obs.result {
            self.metrics
                .check_failures_total
                .with_label_values(&[labels[0], labels[1], f.reason.as_str()])
                .inc();
        }
        slot.last_check = Some((obs.at, obs.latency));
        if obs.resolved.is_some() && obs.resolved != slot.resolved {
            slot.resolved = obs.resolved;
            slot.entry = None;
        }
        let old_role = slot.machine.role();
        let transition = slot
            .machine
            .observe(obs.result.as_ref(), thresholds, obs.at);
        if let Some((from, to)) = transition.health {
            let reason = match &obs.result {
                Ok(_) => "checks pass".to_string(),
                Err(f) => f.to_string(),
            };
            let took_ms = transition.took.as_millis() as u64;
            if to == Health::Down {
                warn!(message = "Backend health changed.", cluster = %slot.key.cluster, backend = %slot.key.backend, from = from.as_str(), to = to.as_str(), %reason, took_ms, address = ?slot.resolved);
            } else {
                info!(message = "Backend health changed.", cluster = %slot.key.cluster, backend = %slot.key.backend, from = from.as_str(), to = to.as_str(), %reason, took_ms, address = ?slot.resolved);
            }
        }
        if let Some((from, to)) = transition.role {
            info!(
                message = "Backend role changed.",
                cluster = %slot.key.cluster,
                backend = %slot.key.backend,
                from = from.as_str(),
                to = to.as_str(),
                reason = role_reason(old_role, to),
                took_ms = transition.took.as_millis() as u64,
            );
        }
        self.reconcile(ci);
    }

    /// Re-decides one cluster, fires guards, stores a new table if routes changed, and
    /// publishes status (steps 2–6).
    pub(super) fn reconcile(&mut self, ci: usize) {
        let fleet = self.fleet_decision_in_force(ci).cloned();
        let cluster = &mut self.clusters[ci];
        let gate_before = cluster.memory.authority.gate;
        let decision = match &fleet {
            Some(f) => from_fleet(cluster, f, self.fleet_closed),
            None => decide_cluster(cluster),
        };
        super::authority_input::gate_changed(&self.metrics, cluster, gate_before);
        log_decision(cluster, &decision);
        let on_demote = cluster.config.on_demote;
        for slot in &mut cluster.backends {
            let (up, replica) = match &fleet {
                Some(f) => super::fleet_input::held_by_fleet(f, &slot.key.backend),
                None => {
                    let up = slot.machine.health() == Health::Up;
                    (up, up && slot.machine.role() == Role::Replica)
                }
            };
            let held = Held {
                up,
                primary: decision.holders.contains(&slot.key.backend),
                replica,
            };
            let fired = slot.guards.update(held, on_demote);
            if fired.any() {
                info!(
                    message = "Closing sessions of a backend that lost its role.",
                    cluster = %slot.key.cluster,
                    backend = %slot.key.backend,
                    primary_sessions = fired.primary || fired.root,
                    replica_sessions = fired.replica || fired.root,
                );
            }
        }
        let no_primary = decision.primary.is_err();
        match (no_primary, cluster.no_primary_since) {
            (true, None) => cluster.no_primary_since = Some(Instant::now()),
            (false, Some(_)) => cluster.no_primary_since = None,
            _ => {}
        }
        if fleet.is_none()
            && no_primary != cluster.fast
            && cluster.config.protocol != crate::config::Protocol::Tcp
        {
            cluster.fast = no_primary;
            for slot in &cluster.backends {
                slot.probe.send(ProbeCommand::Fast(no_primary));
            }
        }
        for event in &decision.events {
            if let DecisionEvent::PrimaryChanged { .. } = event {
                self.metrics
                    .primary_changes_total
                    .with_label_values(&[cluster.config.name.as_str()])
                    .inc();
            }
        }
        let hold_ended = decision
            .events
            .iter()
            .any(|e| matches!(e, DecisionEvent::HoldEnded { .. }));
        cluster.decision = Some(decision);
        if hold_ended {
            self.end_hold(ci, super::HoldEnd::NewPrimary);
        }
        self.offer_published(ci);
        self.publish();
    }

    /// Stores a new routing table if any route changed, after refreshing status and gauges.
    fn publish(&mut self) {
        let built = table::build(self);
        if self.stored.as_ref() == Some(&built.fingerprint) {
            status::publish(self, &self.router.current());
            return;
        }
        self.generation += 1;
        let table = std::sync::Arc::new(crate::routing::RoutingTable::new(
            self.generation,
            built.routes,
        ));
        status::publish(self, &table);
        self.router.store(table);
        self.stored = Some(built.fingerprint);
    }
}

/// A fleet decision as this cluster's decision; the primary change is an event here too, so
/// followers log and count it like observers do.
fn from_fleet(cluster: &ClusterState, fleet: &super::FleetDecision, closed: bool) -> Decision {
    let mut decision = fleet.published.decision.clone();
    decision.events.clear();
    if closed {
        // on_lost: fail_closed. Sessions keep their holders (nothing says the primary
        // changed); only new primary connections are held.
        decision.primary = Err(crate::routing::Unavailable::NoPrimary);
    }
    let before = cluster
        .decision
        .as_ref()
        .and_then(|d| d.primary.as_ref().ok()?.first().cloned());
    let after = decision
        .primary
        .as_ref()
        .ok()
        .and_then(|v| v.first().cloned());
    if let Some(to) = after.filter(|a| before.as_ref() != Some(a)) {
        decision
            .events
            .push(DecisionEvent::PrimaryChanged { from: before, to });
    }
    decision
}

fn decide_cluster(cluster: &mut ClusterState) -> Decision {
    let views: Vec<BackendView<'_>> = cluster
        .backends
        .iter()
        .map(|b| BackendView {
            name: &b.key.backend,
            health: b.machine.health(),
            role: b.machine.role(),
            admin: b.admin,
            facts: b
                .machine
                .last_failure()
                .is_none()
                .then(|| b.machine.last_facts())
                .flatten(),
            suspect: b.machine.suspect(),
        })
        .collect();
    let policy = decision::ClusterPolicy {
        protocol: cluster.config.protocol,
        split_brain: cluster.config.split_brain,
        max_replica_lag: cluster.config.max_replica_lag,
        authority: cluster
            .config
            .authority
            .as_ref()
            .map(|_| cluster.config.on_authority_lost),
    };
    decision::decide(policy, &views, &mut cluster.memory)
}

fn log_decision(cluster: &ClusterState, decision: &Decision) {
    let name = &cluster.config.name;
    for event in &decision.events {
        match event {
            DecisionEvent::PrimaryChanged { from, to } => info!(
                message = "Primary changed.",
                cluster = %name,
                from = from.as_ref().map(|b| b.as_str()).unwrap_or("none"),
                to = %to,
            ),
            DecisionEvent::StaleDetected(b) => warn!(
                message = "Primary replaced while it was down: if it returns claiming primary it is stale and never routed to, until it rejoins as a replica or an operator enables it.",
                cluster = %name,
                backend = %b,
            ),
            DecisionEvent::HoldEnded { to } => info!(
                message = "New primary confirmed during a hold: released to it.",
                cluster = %name,
                primary = %to,
            ),
            DecisionEvent::AuthorityHoldEnded { to } => info!(
                message = "New primary confirmed by the checks and the authority: the switchover it announced is over.",
                cluster = %name,
                primary = %to,
            ),
            DecisionEvent::StaleCleared(b) => info!(
                message = "Stale primary rejoined as a replica.",
                cluster = %name,
                backend = %b,
            ),
        }
    }
    if decision.split_brain {
        let claimers: Vec<&str> = cluster
            .backends
            .iter()
            .filter(|b| b.machine.claims_primary())
            .map(|b| b.key.backend.as_str())
            .collect();
        error!(
            message = "Split brain: more than one backend claims primary.",
            cluster = %name,
            claimers = ?claimers,
            policy = cluster.config.split_brain.as_str(),
            routing = match &decision.primary {
                Ok(v) => v.first().map(|b| b.as_str()).unwrap_or("none"),
                Err(_) => "refused",
            },
        );
    }
}

fn role_reason(old: Role, new: Role) -> &'static str {
    match (old, new) {
        (Role::Primary, Role::Replica) => {
            "reported read-only/recovery/replica (demoted at first sight)"
        }
        (_, Role::Primary) => "claimed primary on rise consecutive checks",
        (_, Role::Replica) => "reported read-only/recovery/replica",
        _ => "role forgotten",
    }
}
