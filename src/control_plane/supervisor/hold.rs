//! Operator holds for a planned switchover: `POST /clusters/{cluster}/hold` asks the
//! supervisor to hold new primary connections of a cluster in the queue until the switchover is
//! done. The hold is a source like the checks: it sets [`ClusterMemory::hold`] and the pure
//! decision weighs it (policy 2 of `decision/mod.rs`), which also ends it when a primary other
//! than the one at hold time is routed. Only the clock lives here: the timeout, logged loudly
//! because a hold that times out means the switchover did not finish in time.
//!
//! [`ClusterMemory::hold`]: crate::control_plane::decision::ClusterMemory::hold

use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;
use tracing::{info, warn};

use super::{AdminError, ClusterState, Supervisor};
use crate::config::ClusterName;
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

/// The clock of a hold in force (its primary is in the cluster's memory).
#[derive(Debug, Clone)]
pub(super) struct HoldClock {
    since: SystemTime,
    until: SystemTime,
    deadline: Instant,
}

/// A hold as `/status` and the admin API show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HoldStatus {
    /// RFC 3339, UTC.
    pub since: String,
    pub until: String,
    /// The primary routed when the hold began; the hold ends when another one is routed.
    pub primary: Option<String>,
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
        let clock = HoldClock {
            since: c.hold.as_ref().map_or(now, |h| h.since),
            until: now + timeout,
            deadline: Instant::now() + timeout,
        };
        if c.memory.hold.is_none() {
            c.memory.hold = Some(OperatorHold {
                primary: c.memory.routed_primary.clone(),
            });
        }
        c.hold = Some(clock);
        let status = hold_status(c).expect("hold just set");
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
        Ok(held)
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
        let c = &mut self.clusters[ci];
        let was = c.memory.hold.take();
        if c.hold.take().is_none() && was.is_none() {
            return;
        }
        let primary = was.and_then(|h| h.primary);
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
    })
}
