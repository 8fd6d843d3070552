//! Fleet mode's two meeting points with the supervisor (`control_plane/fleet/`):
//!
//! - in: a decision published by the fleet's leader, fed into the same step as a local
//!   decision (`reconcile`): guards, `on_demote`, the table, fast mode and status all behave
//!   as if this instance had decided it. It replaces the local decision only while this
//!   instance does not observe (its probes are paused).
//! - out: each cluster's local decision, as a [`Published`] value on a watch channel, for the
//!   leader to write to etcd.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tracing::info;

use super::{ClusterState, Supervisor};
use crate::config::{BackendName, ClusterName};
use crate::control_plane::checks::ProbeCommand;
use crate::control_plane::decision::Decision;
use crate::control_plane::role::{Health, Role};

/// One cluster's decision as the fleet carries it: the decision itself, plus what a
/// follower without checks needs to judge its sessions (who is up, who is a confirmed
/// replica) and to connect (each routed backend's resolved address).
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub decision: Decision,
    pub up: Vec<BackendName>,
    pub confirmed_replicas: Vec<BackendName>,
    pub addresses: Vec<(BackendName, SocketAddr)>,
    pub stale: Vec<BackendName>,
}

/// Every cluster's latest local decision.
pub type PublishedSet = Arc<BTreeMap<ClusterName, Published>>;

/// A decision received from the fleet, with where it came from.
#[derive(Debug, Clone)]
pub struct FleetDecision {
    pub published: Published,
    /// etcd `mod_revision` of the record; never lower than the one in force.
    pub revision: i64,
    /// The leader instance that wrote it.
    pub leader: String,
    /// The writer's wall clock at the decision, ms since the Unix epoch.
    pub decided_at_ms: u64,
}

/// The backends a follower names in its split-brain alarm: those the leader saw up and not as
/// confirmed replicas (the record carries no role per backend; a follower's own machines are
/// paused and know none).
pub(super) fn claimers(p: &Published) -> Vec<&str> {
    p.up.iter()
        .filter(|b| !p.confirmed_replicas.contains(b))
        .map(|b| b.as_str())
        .collect()
}

impl Published {
    pub(super) fn of(cluster: &ClusterState, decision: &Decision) -> Published {
        let mut up = Vec::new();
        let mut confirmed_replicas = Vec::new();
        let mut addresses = Vec::new();
        for b in &cluster.backends {
            if b.machine.health() == Health::Up {
                up.push(b.key.backend.clone());
                if b.machine.role() == Role::Replica {
                    confirmed_replicas.push(b.key.backend.clone());
                }
            }
            if let Some(a) = b.resolved {
                addresses.push((b.key.backend.clone(), a));
            }
        }
        let mut decision = decision.clone();
        decision.events.clear();
        Published {
            decision,
            up,
            confirmed_replicas,
            addresses,
            stale: cluster.memory.stale.iter().cloned().collect(),
        }
    }
}

impl Supervisor {
    /// A decision from the fleet's leader. Older revisions than the one in force are ignored
    /// (a resumed watch may replay); an unknown cluster is the caller's error to report.
    pub(super) fn on_fleet_decision(
        &mut self,
        cluster: &ClusterName,
        fleet: FleetDecision,
    ) -> Result<(), String> {
        let ci = self
            .cluster_index(cluster)
            .ok_or_else(|| format!("no cluster {cluster} in this instance's config"))?;
        let state = &mut self.clusters[ci];
        for name in fleet
            .published
            .decision
            .holders
            .iter()
            .chain(&fleet.published.decision.any)
            .chain(&fleet.published.decision.replicas)
            .chain(&fleet.published.up)
            .chain(&fleet.published.confirmed_replicas)
            .chain(fleet.published.addresses.iter().map(|(b, _)| b))
        {
            if !state.backends.iter().any(|b| &b.key.backend == name) {
                return Err(format!("cluster {cluster} has no backend {name}"));
            }
        }
        if state
            .fleet
            .as_ref()
            .is_some_and(|f| f.revision >= fleet.revision)
        {
            return Ok(());
        }
        for (name, addr) in &fleet.published.addresses {
            if let Some(slot) = state.backends.iter_mut().find(|b| &b.key.backend == name) {
                if slot.resolved != Some(*addr) {
                    slot.resolved = Some(*addr);
                    slot.entry = None;
                }
            }
        }
        state.fleet = Some(fleet);
        if !self.observing {
            self.reconcile(ci);
        }
        Ok(())
    }

    /// Starts (an observer) or pauses (a follower) every probe. A follower routes by the
    /// fleet's decisions; an observer by its own checks again from its next observations.
    pub(super) fn set_observing(&mut self, observing: bool) {
        if observing == self.observing {
            return;
        }
        self.observing = observing;
        self.metrics.fleet_observing.set(i64::from(observing));
        info!(
            message = if observing {
                "Observing: this instance checks the databases."
            } else {
                "Following: this instance routes by the fleet's decisions."
            },
        );
        for c in &self.clusters {
            for slot in &c.backends {
                slot.probe.send(ProbeCommand::Pause(!observing));
            }
        }
        for ci in 0..self.clusters.len() {
            if !observing && self.clusters[ci].fleet.is_none() {
                continue; // keep the local decision until the fleet's first one
            }
            self.reconcile(ci);
        }
    }

    /// The decision step for one cluster: the fleet's while following, else the local one.
    pub(super) fn fleet_decision_in_force(&self, ci: usize) -> Option<&FleetDecision> {
        if self.observing {
            return None;
        }
        self.clusters[ci].fleet.as_ref()
    }

    /// After a local decision: offer it to the fleet's publisher (if anyone listens).
    pub(super) fn offer_published(&mut self, ci: usize) {
        if !self.observing {
            return;
        }
        let cluster = &self.clusters[ci];
        let Some(decision) = &cluster.decision else {
            return;
        };
        let published = Published::of(cluster, decision);
        let name = cluster.config.name.clone();
        self.published.send_if_modified(|set| {
            if set.get(&name) == Some(&published) {
                return false;
            }
            Arc::make_mut(set).insert(name, published);
            true
        });
    }
}

impl Supervisor {
    /// `/status` `coordination`, in fleet mode.
    pub(super) fn coordination_status(&self) -> Option<super::CoordinationStatus> {
        let (mode, instance) = self.fleet.as_ref()?;
        let newest = self
            .clusters
            .iter()
            .filter_map(|c| c.fleet.as_ref())
            .max_by_key(|f| f.revision);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let following = !self.observing && newest.is_some();
        Some(super::CoordinationStatus {
            mode: mode.as_str(),
            instance: instance.clone(),
            observing: self.observing,
            leader: self.fleet_link.1,
            connected: self.fleet_link.0,
            decision_revision: newest.map(|f| f.revision),
            decision_age_ms: newest.map(|f| now_ms.saturating_sub(f.decided_at_ms)),
            source: match (following, self.fleet_link.0) {
                (true, true) => "etcd",
                (true, false) => "last_known",
                (false, _) => "local",
            },
        })
    }
}

/// What guards need about a backend under a fleet decision.
pub(super) fn held_by_fleet(fleet: &FleetDecision, name: &BackendName) -> (bool, bool) {
    let p = &fleet.published;
    (p.up.contains(name), p.confirmed_replicas.contains(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Unavailable;

    fn published(up: &[&str], replicas: &[&str]) -> Published {
        Published {
            decision: Decision {
                primary: Err(Unavailable::SplitBrain),
                holders: Vec::new(),
                replicas: Vec::new(),
                any: Vec::new(),
                primary_claims: 2,
                split_brain: true,
                lag: Vec::new(),
                events: Vec::new(),
            },
            up: up.iter().map(|b| BackendName::from(*b)).collect(),
            confirmed_replicas: replicas.iter().map(|b| BackendName::from(*b)).collect(),
            addresses: Vec::new(),
            stale: Vec::new(),
        }
    }

    /// A follower's checks are paused: its split-brain alarm names the backends from the
    /// leader's record (before, each follower logged `claimers=[]`).
    #[test]
    fn a_followers_claimers_come_from_the_record() {
        assert_eq!(claimers(&published(&["a", "b"], &[])), ["a", "b"]);
        assert_eq!(claimers(&published(&["a", "b", "c"], &["b"])), ["a", "c"]);
        assert!(claimers(&published(&[], &[])).is_empty());
    }
}
