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
        log_decision(cluster, &decision, fleet.as_ref());
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
        let hold_ended = decision.events.iter().find_map(|e| match e {
            DecisionEvent::HoldEnded { from, .. } => Some(from.clone()),
            _ => None,
        });
        cluster.decision = Some(decision);
        // Offered before the hold's end is told to the fleet task, so the leader writes the
        // decision that ended it before it removes the hold's key.
        self.offer_published(ci);
        if let Some(at_hold) = hold_ended {
            self.finish_hold(ci, super::HoldEnd::NewPrimary, at_hold);
        }
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
/// followers log and count it like observers do. An operator hold in force is weighed as
/// `decision::decide` weighs it: the fleet's primary is held while it is the one at hold
/// time, and the hold ends when the fleet routes another one.
fn from_fleet(cluster: &mut ClusterState, fleet: &super::FleetDecision, closed: bool) -> Decision {
    use crate::routing::Unavailable;
    let mut decision = fleet.published.decision.clone();
    decision.events.clear();
    if closed {
        // on_lost: fail_closed. Sessions keep their holders (nothing says the primary
        // changed); only new primary connections are held.
        decision.primary = Err(Unavailable::NoPrimary);
    }
    if let Some(hold) = &cluster.memory.hold {
        let fleet_primary = decision.primary.as_ref().ok().and_then(|v| v.first());
        match fleet_primary {
            Some(p) if hold.primary.as_ref() != Some(p) => {
                decision.events.push(DecisionEvent::HoldEnded {
                    from: hold.primary.clone(),
                    to: p.clone(),
                });
            }
            Some(_) => {
                if let Ok(held) = std::mem::replace(&mut decision.primary, Err(Unavailable::Held)) {
                    decision.any.retain(|b| !held.contains(b));
                }
            }
            None if decision.primary == Err(Unavailable::NoPrimary) => {
                decision.primary = Err(Unavailable::Held);
            }
            None => {}
        }
    }
    let before = cluster.memory.routed_primary.clone();
    let after = decision
        .primary
        .as_ref()
        .ok()
        .and_then(|v| v.first().cloned());
    if let Some(to) = after.filter(|a| before.as_ref() != Some(a)) {
        cluster.memory.routed_primary = Some(to.clone());
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

fn log_decision(cluster: &ClusterState, decision: &Decision, fleet: Option<&super::FleetDecision>) {
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
            DecisionEvent::HoldEnded { to, .. } => info!(
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
        let claimers = match fleet {
            Some(f) => super::fleet_input::claimers(&f.published),
            None => cluster
                .backends
                .iter()
                .filter(|b| b.machine.claims_primary())
                .map(|b| b.key.backend.as_str())
                .collect(),
        };
        error!(
            message = "Split brain: more than one backend claims primary.",
            cluster = %name,
            claimers = ?claimers,
            decided_by = fleet.map_or("local checks", |f| f.leader.as_str()),
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
