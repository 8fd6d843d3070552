//! Operator holds for a planned switchover: `POST /clusters/{cluster}/hold` asks the
//! supervisor to hold new primary connections of a cluster in the queue until the switchover is
//! done. The hold is a source like the checks: it sets [`ClusterMemory::hold`] and the pure
//! decision weighs it (policy 2 of `decision/mod.rs`), which also ends it when a primary other
//! than the one at hold time is routed. Only the clock lives here: the timeout, logged loudly
//! because a hold that times out means the switchover did not finish in time.
//!
//! In fleet mode a hold is fleet-wide: one taken here is offered to the fleet task as a
//! [`HoldChange`] (written to `PREFIX/hold/CLUSTER`), and one written by another instance
//! arrives as a [`FleetHold`] with an absolute deadline, so an instance that joins late holds
//! only for what is left. Each instance still ends its hold itself: on the confirmed new
//! primary (its own checks, or the fleet's decision while it follows), on release, or on its
//! own clock at the deadline.
//!
//! [`ClusterMemory::hold`]: crate::control_plane::decision::ClusterMemory::hold

use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;
use tracing::{info, warn};

use super::{AdminError, ClusterState, Supervisor};
use crate::config::{BackendName, ClusterName};
use crate::control_plane::decision::OperatorHold;

/// Hold timeout when the request names none.
pub const DEFAULT_HOLD: Duration = Duration::from_secs(10);
/// Longest hold an operator may ask for: connections wait at most `queue_timeout` anyway, and
/// a hold longer than this is an outage, not a switchover.
pub const MAX_HOLD: Duration = Duration::from_secs(300);

/// Why a hold ended; the `reason` label of `rolegate_holds_ended_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldEnd {
    NewPrimary,
    Released,
    Timeout,
}

impl HoldEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldEnd::NewPrimary => "new_primary",
            HoldEnd::Released => "released",
            HoldEnd::Timeout => "timeout",
        }
    }
}

/// A hold as the fleet carries it (`PREFIX/hold/CLUSTER`): who took it, when, until when
/// (wall clock, ms since the Unix epoch) and the primary routed when it was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetHold {
    pub by: String,
    pub at_ms: u64,
    pub until_ms: u64,
    pub primary: Option<BackendName>,
}

/// A hold change on this instance that the fleet must hear of (fleet mode only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldChange {
    /// An operator held (or extended the hold of) the cluster through this instance.
    Set(ClusterName, FleetHold),
    /// An operator released the cluster through this instance.
    Released(ClusterName),
    /// The hold ended here because another primary was confirmed: the leader removes the key,
    /// so an instance that joins later does not hold for a switchover already done.
    NewPrimary(ClusterName),
}

/// The clock of a hold in force (its primary is in the cluster's memory).
#[derive(Debug, Clone)]
pub(super) struct HoldClock {
    since: SystemTime,
    until: SystemTime,
    deadline: Instant,
    /// Fleet mode: the instance that took the hold and when (wall clock, ms).
    by: Option<(String, u64)>,
}

/// A hold as `/status` and the admin API show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HoldStatus {
    /// RFC 3339, UTC.
    pub since: String,
    pub until: String,
    /// The primary routed when the hold began; the hold ends when another one is routed.
    pub primary: Option<String>,
    /// Fleet mode: the instance an operator asked, and when (ms since the Unix epoch).
    pub held_by: Option<String>,
    pub held_at_ms: Option<u64>,
}

impl Supervisor {
    /// Starts (or extends) a hold of `cluster` for `timeout`.
    pub(super) fn hold(
        &mut self,
        cluster: &ClusterName,
        timeout: Duration,
    ) -> Result<HoldStatus, AdminError> {
        let ci = self
            .cluster_index(cluster)
            .ok_or_else(|| AdminError::UnknownCluster(cluster.clone()))?;
        let timeout = timeout.min(MAX_HOLD);
        let c = &mut self.clusters[ci];
        if c.config.protocol == crate::config::Protocol::Tcp {
            return Err(AdminError::NoRoles(cluster.clone()));
        }
        let now = SystemTime::now();
        let now_ms = super::wall_ms();
        let by = self.fleet.as_ref().map(|(_, me)| (me.clone(), now_ms));
        let clock = HoldClock {
            since: c.hold.as_ref().map_or(now, |h| h.since),
            until: now + timeout,
            deadline: Instant::now() + timeout,
            by: by.clone(),
        };
        if c.memory.hold.is_none() {
            c.memory.hold = Some(OperatorHold {
                primary: c.memory.routed_primary.clone(),
            });
        }
        c.hold = Some(clock);
        let status = hold_status(c).expect("hold just set");
        if let Some((by, at_ms)) = by {
            let fleet = FleetHold {
                by,
                at_ms,
                until_ms: at_ms + timeout.as_millis() as u64,
                primary: c.memory.hold.as_ref().and_then(|h| h.primary.clone()),
            };
            // No receiver while etcd is away: the hold stays this instance's.
            let _ = self
                .hold_out
                .send(HoldChange::Set(c.config.name.clone(), fleet));
        }
        info!(
            message = "Cluster held for a planned switchover: new primary connections wait until another primary is confirmed, a release, or the timeout.",
            cluster = %cluster,
            primary = status.primary.as_deref().unwrap_or("none"),
            timeout_ms = timeout.as_millis() as u64,
        );
        self.reconcile(ci);
        Ok(status)
    }

    /// Ends the hold of `cluster`; `Ok(false)` when none was in force.
    pub(super) fn release(&mut self, cluster: &ClusterName) -> Result<bool, AdminError> {
        let ci = self
            .cluster_index(cluster)
            .ok_or_else(|| AdminError::UnknownCluster(cluster.clone()))?;
        let held = self.clusters[ci].hold.is_some();
        if held {
            self.end_hold(ci, HoldEnd::Released);
            self.reconcile(ci);
        }
        if self.fleet.is_some() {
            // Also when not held here: the fleet may hold what this instance has not heard of.
            let _ = self.hold_out.send(HoldChange::Released(cluster.clone()));
        }
        Ok(held)
    }

    /// A hold the fleet carries for `cluster` (`None`: its key was removed, i.e. released).
    /// A hold this instance already applied (same taker and time) changes nothing; one whose
    /// deadline has passed is ignored.
    pub(super) fn on_fleet_hold(
        &mut self,
        cluster: &ClusterName,
        fleet: Option<FleetHold>,
    ) -> Result<(), String> {
        let ci = self
            .cluster_index(cluster)
            .ok_or_else(|| format!("no cluster {cluster} in this instance's config"))?;
        let c = &mut self.clusters[ci];
        let Some(fleet) = fleet else {
            if c.hold.is_some() {
                self.end_hold(ci, HoldEnd::Released);
                self.reconcile(ci);
            }
            return Ok(());
        };
        if c.config.protocol == crate::config::Protocol::Tcp {
            return Err(format!(
                "cluster {cluster} is a tcp cluster: it has no primary to hold"
            ));
        }
        if let Some(p) = &fleet.primary {
            if !c.backends.iter().any(|b| &b.key.backend == p) {
                return Err(format!("cluster {cluster} has no backend {p}"));
            }
        }
        let by = Some((fleet.by.clone(), fleet.at_ms));
        if c.hold.as_ref().is_some_and(|h| h.by == by) {
            return Ok(()); // this instance's own hold, or one applied already
        }
        let now_ms = super::wall_ms();
        let Some(left) = fleet.until_ms.checked_sub(now_ms).filter(|&l| l > 0) else {
            return Ok(()); // over before it reached this instance
        };
        let left = Duration::from_millis(left).min(MAX_HOLD);
        let now = SystemTime::now();
        let fresh = c.memory.hold.is_none();
        if fresh {
            c.memory.hold = Some(OperatorHold {
                primary: fleet.primary.clone(),
            });
        }
        c.hold = Some(HoldClock {
            since: c.hold.as_ref().map_or_else(
                || std::time::UNIX_EPOCH + Duration::from_millis(fleet.at_ms),
                |h| h.since,
            ),
            until: now + left,
            deadline: Instant::now() + left,
            by,
        });
        info!(
            message = if fresh {
                "Cluster held fleet-wide for a planned switchover: new primary connections wait until another primary is confirmed, a release, or the timeout."
            } else {
                "Fleet-wide hold extended."
            },
            cluster = %cluster,
            held_by = %fleet.by,
            primary = fleet.primary.as_ref().map_or("none", |p| p.as_str()),
            left_ms = left.as_millis() as u64,
        );
        self.reconcile(ci);
        Ok(())
    }

    /// The earliest hold deadline, for the supervisor's loop.
    pub(super) fn next_hold_deadline(&self) -> Option<Instant> {
        self.clusters
            .iter()
            .filter_map(|c| c.hold.as_ref().map(|h| h.deadline))
            .min()
    }

    /// Ends every hold whose deadline has passed.
    pub(super) fn expire_holds(&mut self) {
        let now = Instant::now();
        for ci in 0..self.clusters.len() {
            if self.clusters[ci]
                .hold
                .as_ref()
                .is_some_and(|h| h.deadline <= now)
            {
                self.end_hold(ci, HoldEnd::Timeout);
                self.reconcile(ci);
            }
        }
    }

    /// Forgets the hold of cluster `ci`, logs and counts why. The caller reconciles.
    pub(super) fn end_hold(&mut self, ci: usize, why: HoldEnd) {
        self.finish_hold(ci, why, None);
    }

    /// [`Supervisor::end_hold`] for a hold the decision step already took from memory (it
    /// ended on a new primary): `at_hold` is the primary it was taken for.
    pub(super) fn finish_hold(&mut self, ci: usize, why: HoldEnd, at_hold: Option<BackendName>) {
        let c = &mut self.clusters[ci];
        let was = c.memory.hold.take();
        if c.hold.take().is_none() && was.is_none() {
            return;
        }
        let primary = was.and_then(|h| h.primary).or(at_hold);
        let primary = primary.as_ref().map_or("none", |p| p.as_str());
        match why {
            HoldEnd::Timeout => warn!(
                message = "Hold TIMED OUT before another primary was confirmed: new primary connections go to the current primary again. The switchover did not finish within the hold.",
                cluster = %c.config.name,
                primary_at_hold = primary,
            ),
            HoldEnd::Released | HoldEnd::NewPrimary => info!(
                message = "Hold ended.",
                cluster = %c.config.name,
                reason = why.as_str(),
                primary_at_hold = primary,
            ),
        }
        self.metrics
            .holds_ended_total
            .with_label_values(&[c.config.name.as_str(), why.as_str()])
            .inc();
        if why == HoldEnd::NewPrimary && self.fleet.is_some() {
            let _ = self
                .hold_out
                .send(HoldChange::NewPrimary(c.config.name.clone()));
        }
    }
}

/// The hold of one cluster, if any, for `/status`.
pub(super) fn hold_status(c: &ClusterState) -> Option<HoldStatus> {
    let clock = c.hold.as_ref()?;
    let primary = c.memory.hold.as_ref().and_then(|h| h.primary.clone());
    Some(HoldStatus {
        since: humantime::format_rfc3339_millis(clock.since).to_string(),
        until: humantime::format_rfc3339_millis(clock.until).to_string(),
        primary: primary.map(|p| p.to_string()),
        held_by: clock.by.as_ref().map(|(by, _)| by.clone()),
        held_at_ms: clock.by.as_ref().map(|(_, at)| *at),
    })
}
