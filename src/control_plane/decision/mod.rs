//! The cluster decision: from every backend's state, who receives new primary, replica and
//! `any` connections. Pure, like `role.rs`; the supervisor calls it after every observation.
//!
//! Policies, in the order they apply:
//!
//! 1. **Stale primaries (zombies).** A backend that went `Down` while it was the confirmed
//!    primary is remembered as *lost*. If another backend is then routed as primary while it is
//!    lost, it becomes *stale*: rolegate saw the handover, so whatever the old node says when it
//!    returns, it is never routed to and is reported loudly. It stops being stale when it is
//!    seen as a replica (it was rebuilt or re-pointed) or when an operator re-enables it.
//! 2. **Suspect primaries and holds.** A confirmed primary whose latest check got no answer
//!    (`BackendView::suspect`) neither receives new connections nor vetoes anyone: while it is
//!    the only primary, its routes are *held* (`Unavailable::Held`: new connections wait in the
//!    queue, its open sessions stay); a node confirmed primary (`rise`) while the old one is
//!    not answering is routed at once, and the silent one is remembered as lost, so it is stale
//!    (1.) the moment the new one is routed. An operator hold (`ClusterMemory::hold`) holds
//!    the primary routes the same way until a primary other than the one at hold time is
//!    routed, which ends the hold.
//! 3. **Zero primaries.** Primary routes are unavailable (`no_primary`); new connections queue
//!    for `queue_timeout` and are refused after it.
//! 4. **Two or more primaries** with no observed handover (e.g. a manual promotion while the
//!    old primary is still up) are a split brain, decided by `split_brain`: `fail_closed`
//!    (default) routes no one; `keep_current` keeps the primary routed before, if it is one of
//!    them; `highest_timeline` (PostgreSQL) follows the unique newest timeline. Anything
//!    undecidable fails closed. Only answering primaries are judged when one answers.
//!    With an authority naming one of them (policy 7), that one is chosen: the authority saw
//!    the handover.
//! 5. **Replicas** qualify when up, confirmed replica, and within `max_replica_lag` (a replica
//!    whose lag is unknown — replication stopped — does not qualify). A replica whose applied
//!    position has reached the primary's write position has zero lag, whatever its clock says.
//! 6. **Operator states.** `drain` and `disable` remove a backend from every route; they do not
//!    change what rolegate believes about its role.
//! 7. **Authorities** (`authority.rs`). With an `authority:`, the node chosen by 1.–4. is routed
//!    only when the authority's latest verdict names it (AND-gate); otherwise its routes are
//!    held and nothing about the handover is observed (no stale marking, no hold ended). An
//!    unreachable authority is `on_authority_lost`'s case: `trust_checks` routes by the
//!    checks alone, `fail_closed` holds. A switchover the authority announces holds like an
//!    operator hold, until a primary other than the one at its start passes the gate.
//!
//! `tcp` clusters have no roles: every up backend is a candidate for every listener, in the
//! order of the config, and two "primaries" are not a split brain.

use std::collections::BTreeSet;
use std::time::Duration;

mod authority;

pub use authority::{gate, AuthorityInput, Gate, Refusal};

use crate::config::{BackendName, OnAuthorityLost, Protocol, SplitBrainPolicy};
use crate::control_plane::checks::{Facts, ObservedRole};
use crate::control_plane::role::{Health, Role};
use crate::routing::Unavailable;

/// What an operator asked for a backend through the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdminMode {
    #[default]
    Enabled,
    /// No new sessions; existing ones finish.
    Drain,
    /// No new sessions; existing ones are closed.
    Disabled,
}

impl AdminMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminMode::Enabled => "enabled",
            AdminMode::Drain => "drain",
            AdminMode::Disabled => "disabled",
        }
    }
}

/// The decision's view of one backend.
#[derive(Debug, Clone)]
pub struct BackendView<'a> {
    pub name: &'a BackendName,
    pub health: Health,
    pub role: Role,
    pub admin: AdminMode,
    /// Facts of the latest successful check, if the latest check succeeded.
    pub facts: Option<&'a Facts>,
    /// Confirmed primary whose latest check got no answer (`BackendMachine::suspect`).
    pub suspect: bool,
}

/// What the decision remembers about a cluster between decisions.
#[derive(Debug, Clone, Default)]
pub struct ClusterMemory {
    /// The backend most recently routed as primary.
    pub routed_primary: Option<BackendName>,
    /// Went down while confirmed primary; not yet replaced.
    lost: BTreeSet<BackendName>,
    /// Replaced while down: never routed until seen as a replica or re-enabled.
    pub stale: BTreeSet<BackendName>,
    /// An operator's planned-switchover hold, if one is in force.
    pub hold: Option<OperatorHold>,
    /// The cluster's authority: its latest verdict, announced hold and gate (policy 7).
    pub authority: AuthorityInput,
}

/// A hold asked by an operator: primary routes are held until a primary other than
/// `primary` is routed (the supervisor ends it earlier on release or timeout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorHold {
    /// The primary routed when the hold began.
    pub primary: Option<BackendName>,
}

impl ClusterMemory {
    /// Forgets everything about one backend (operator `enable`, or removal by reload).
    pub fn forget(&mut self, name: &BackendName) {
        self.lost.remove(name);
        self.stale.remove(name);
        if self.routed_primary.as_ref() == Some(name) {
            self.routed_primary = None;
        }
    }
}

/// Something the supervisor should log and count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecisionEvent {
    PrimaryChanged {
        from: Option<BackendName>,
        to: BackendName,
    },
    StaleDetected(BackendName),
    StaleCleared(BackendName),
    /// The operator hold ended because `to` was routed as the new primary; `from` was the
    /// primary when the hold began (the hold itself is gone from memory by then).
    HoldEnded {
        from: Option<BackendName>,
        to: BackendName,
    },
    /// The switchover the authority announced ended: `to` passed the gate.
    AuthorityHoldEnded {
        to: BackendName,
    },
}

/// The routing decision for one cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Candidates for primary routes, in order, or why there is none.
    pub primary: Result<Vec<BackendName>, Unavailable>,
    /// Who holds the primary role, ignoring operator drain/disable (their sessions are judged
    /// by the operator's action, not by the role).
    pub holders: Vec<BackendName>,
    /// Qualifying replicas, in config order.
    pub replicas: Vec<BackendName>,
    /// Candidates for `role: any` routes.
    pub any: Vec<BackendName>,
    /// Backends up and claiming primary (stale ones included).
    pub primary_claims: usize,
    /// Two or more non-stale primaries, or a stale one claiming primary.
    pub split_brain: bool,
    /// Effective replication lag per backend (replicas only), in config order.
    pub lag: Vec<(BackendName, Option<Duration>)>,
    pub events: Vec<DecisionEvent>,
}

/// Inputs that do not change between decisions.
#[derive(Debug, Clone, Copy)]
pub struct ClusterPolicy {
    pub protocol: Protocol,
    pub split_brain: SplitBrainPolicy,
    pub max_replica_lag: Duration,
    /// `Some(on_authority_lost)` when the cluster has an authority (policy 7).
    pub authority: Option<OnAuthorityLost>,
}

/// Decides the routing of one cluster and updates its memory.
pub fn decide(
    policy: ClusterPolicy,
    backends: &[BackendView<'_>],
    memory: &mut ClusterMemory,
) -> Decision {
    if policy.protocol == Protocol::Tcp {
        return decide_tcp(backends);
    }
    let mut events = Vec::new();
    track_lost_and_stale(backends, memory, &mut events);

    let claimers: Vec<&BackendView<'_>> = backends
        .iter()
        .filter(|b| b.health == Health::Up && b.role == Role::Primary)
        .filter(|b| !memory.stale.contains(b.name))
        .collect();
    // A primary that stopped answering has no vote while another one answers.
    let answering: Vec<&BackendView<'_>> =
        claimers.iter().filter(|b| !b.suspect).copied().collect();
    let judged = if answering.is_empty() {
        &claimers
    } else {
        &answering
    };
    // Judged on the confirmed role (which only a replica answer changes), not on the latest
    // check, so one slow check of a woken zombie does not hide it from the alarm.
    let stale_claiming = backends.iter().any(|b| {
        memory.stale.contains(b.name) && b.health == Health::Up && b.role == Role::Primary
    });
    let chosen = choose_primary(policy, judged, memory);
    let gated = match (&chosen, policy.authority) {
        (Ok(b), Some(on_lost)) => Some(gate(on_lost, &memory.authority, b.name)),
        _ => None,
    };
    memory.authority.gate = gated;
    let refused = gated.is_some_and(|g| !g.routes());
    let mut primary = match &chosen {
        Ok(b) if b.suspect || refused => Err(Unavailable::Held),
        Ok(b) if b.admin == AdminMode::Enabled => Ok(vec![b.name.clone()]),
        Ok(_) => Err(Unavailable::NoPrimary),
        Err(u) => Err(*u),
    };
    if let Ok(b) = chosen {
        let new_primary = memory.routed_primary.as_ref() != Some(b.name);
        // Each hold in force (operator, authority): Some(true) once another primary is here.
        let over =
            |h: &Option<OperatorHold>| h.as_ref().map(|h| h.primary.as_ref() != Some(b.name));
        let (operator_over, authority_over) = (over(&memory.hold), over(&memory.authority.hold));
        if b.suspect || refused {
            // Held for its answer or the authority's: no handover is observed.
        } else if operator_over == Some(false) || authority_over == Some(false) {
            primary = Err(Unavailable::Held);
        } else {
            if operator_over == Some(true) {
                let from = memory.hold.take().and_then(|h| h.primary);
                events.push(DecisionEvent::HoldEnded {
                    from,
                    to: b.name.clone(),
                });
            }
            if authority_over == Some(true) {
                memory.authority.hold = None;
                events.push(DecisionEvent::AuthorityHoldEnded { to: b.name.clone() });
            }
            if new_primary {
                events.push(DecisionEvent::PrimaryChanged {
                    from: memory.routed_primary.clone(),
                    to: b.name.clone(),
                });
                memory.routed_primary = Some(b.name.clone());
            }
            // The handover is now observed: whoever was lost is stale.
            let replaced: Vec<_> = memory
                .lost
                .iter()
                .filter(|n| *n != b.name)
                .cloned()
                .collect();
            for name in replaced {
                memory.lost.remove(&name);
                memory.stale.insert(name.clone());
                events.push(DecisionEvent::StaleDetected(name));
            }
        }
    } else if (memory.hold.is_some() || memory.authority.hold.is_some())
        && primary == Err(Unavailable::NoPrimary)
    {
        primary = Err(Unavailable::Held);
    }

    let primary_facts = chosen.as_ref().ok().and_then(|b| b.facts);
    let mut lag = Vec::new();
    let mut replicas = Vec::new();
    for b in backends {
        if b.health != Health::Up || b.role != Role::Replica {
            continue;
        }
        let effective = effective_lag(b.facts, primary_facts);
        lag.push((b.name.clone(), effective));
        let fresh = effective.is_some_and(|l| l <= policy.max_replica_lag);
        if fresh && b.admin == AdminMode::Enabled {
            replicas.push(b.name.clone());
        }
    }
    let mut any = primary.clone().unwrap_or_default();
    any.extend(replicas.iter().cloned());
    Decision {
        primary,
        // A node the authority says is not the leader (it names another backend) keeps no
        // sessions: they are closed like a demoted node's, before the handover could let them
        // write where the orchestrator will discard it (Sentinel's old master acknowledges
        // writes until it is reconfigured). Other refusals (no leader, unknown member, lost)
        // name no successor, so the checks' holder keeps its sessions.
        holders: chosen
            .iter()
            .filter(|_| gated != Some(Gate::Refused(Refusal::Disagrees)))
            .map(|b| b.name.clone())
            .collect(),
        replicas,
        any,
        primary_claims: claimers.len() + usize::from(stale_claiming),
        split_brain: judged.len() > 1 || stale_claiming,
        lag,
        events,
    }
}

fn track_lost_and_stale(
    backends: &[BackendView<'_>],
    memory: &mut ClusterMemory,
    events: &mut Vec<DecisionEvent>,
) {
    for b in backends {
        let stale = memory.stale.contains(b.name);
        let silent = b.health == Health::Down || b.suspect;
        if silent && b.role == Role::Primary && !stale {
            memory.lost.insert(b.name.clone());
        } else if b.health == Health::Up && !b.suspect {
            // Back before anyone replaced it: the same primary, not a zombie.
            memory.lost.remove(b.name);
        }
        if stale && b.facts.is_some_and(|f| f.role == ObservedRole::Replica) {
            memory.stale.remove(b.name);
            events.push(DecisionEvent::StaleCleared(b.name.clone()));
        }
    }
}

fn choose_primary<'v, 'a>(
    policy: ClusterPolicy,
    claimers: &[&'v BackendView<'a>],
    memory: &ClusterMemory,
) -> Result<&'v BackendView<'a>, Unavailable> {
    match claimers {
        [] => Err(Unavailable::NoPrimary),
        [only] => Ok(only),
        // An authority naming one of the claimers observed the handover: Sentinel promotes
        // the replica and reconfigures the old master ~10 s later (it waits for the old one
        // to keep reporting the wrong role), so both answer master meanwhile. The named one
        // is chosen; the other is not routed (the gate would refuse it anyway).
        several if named_by_authority(policy, several, memory).is_some() => {
            named_by_authority(policy, several, memory).ok_or(Unavailable::SplitBrain)
        }
        several => match policy.split_brain {
            SplitBrainPolicy::FailClosed => Err(Unavailable::SplitBrain),
            SplitBrainPolicy::KeepCurrent => several
                .iter()
                .find(|b| memory.routed_primary.as_ref() == Some(b.name))
                .copied()
                .ok_or(Unavailable::SplitBrain),
            SplitBrainPolicy::HighestTimeline => {
                let timeline = |b: &BackendView<'_>| b.facts.and_then(|f| f.timeline);
                let best = several.iter().filter_map(|b| timeline(b)).max();
                let mut on_best = several
                    .iter()
                    .filter(|b| best.is_some() && timeline(b) == best);
                match (on_best.next(), on_best.next()) {
                    (Some(b), None) => Ok(b),
                    _ => Err(Unavailable::SplitBrain),
                }
            }
        },
    }
}

/// The claimer the cluster's authority names as leader, if it has an authority that does.
fn named_by_authority<'v, 'a>(
    policy: ClusterPolicy,
    claimers: &[&'v BackendView<'a>],
    memory: &ClusterMemory,
) -> Option<&'v BackendView<'a>> {
    policy.authority?;
    let Some(crate::control_plane::authority::Verdict::Leader(leader)) = &memory.authority.verdict
    else {
        return None;
    };
    claimers.iter().find(|b| b.name == leader).copied()
}

/// A replica's lag, preferring position over time: a replica that has applied everything the
/// primary has written is not behind, however long ago the last transaction was.
fn effective_lag(replica: Option<&Facts>, primary: Option<&Facts>) -> Option<Duration> {
    let facts = replica?.replica.as_ref()?;
    let caught_up = match (facts.position, primary.and_then(|p| p.write_position)) {
        (Some(applied), Some(written)) => applied >= written,
        _ => false,
    };
    if caught_up {
        Some(Duration::ZERO)
    } else {
        facts.lag
    }
}

fn decide_tcp(backends: &[BackendView<'_>]) -> Decision {
    let holders: Vec<BackendName> = backends
        .iter()
        .filter(|b| b.health == Health::Up)
        .map(|b| b.name.clone())
        .collect();
    let up: Vec<BackendName> = backends
        .iter()
        .filter(|b| b.health == Health::Up && b.admin == AdminMode::Enabled)
        .map(|b| b.name.clone())
        .collect();
    let primary = if up.is_empty() {
        Err(Unavailable::NoBackend)
    } else {
        Ok(up.clone())
    };
    Decision {
        primary,
        holders,
        replicas: up.clone(),
        primary_claims: usize::from(!up.is_empty()),
        any: up,
        split_brain: false,
        lag: Vec::new(),
        events: Vec::new(),
    }
}

#[cfg(test)]
mod authority_tests;
#[cfg(test)]
mod tests;
