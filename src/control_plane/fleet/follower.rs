//! Every instance's one watch on the whole prefix (`PREFIX/`): the leader's decisions, the
//! fleet's holds and operator actions, and the followers' failed-connect reports all arrive
//! on it, and are applied in etcd's revision order. It starts with one read of the prefix at
//! one revision and watches from the next, resumes from the last revision seen after a
//! reconnect, never applies a decision older than the one in force, and reads the prefix
//! again when the watch hits a compaction (a cancel without one, e.g. `require_leader`,
//! resumes from the last revision).
//!
//! **Why one watch.** A hold ends on each follower when the leader's decision routes another
//! primary; the leader then removes `PREFIX/hold/CLUSTER`, right after that decision. With a
//! watch per prefix the two arrived on separate streams, which etcd does not order against
//! each other, and a follower could apply the removal first and end its hold as `released`
//! instead of `new_primary`. One watch gets etcd's own order — one revision after another,
//! the operations of one transaction in their order — whatever the leader writes in one
//! transaction or in two, so the leader needs no batching and the followers no guessing.
//! (Writing the removal in the decision's transaction would not be enough alone: the
//! followers would still need one stream to see both together.) The price: the watch also
//! wakes on instance, slot and leader keys, which change once per session, not per decision;
//! don't nest one fleet's prefix inside another's.
//!
//! **A read** (the start, a compaction) knows when each present key was written but not when
//! a missing one went away: it applies the keys in `mod_revision` order, then the removal of
//! every hold applied before that is gone, so a hold whose switchover happened while this
//! instance was away ends on the new primary. Reports are live news only: a read skips them.

use etcd_client::{Client, EventType, GetOptions, WatchOptions, WatchResponse, WatchStream};
use tracing::{debug, error, info};

use super::admin::AdminSync;
use super::applied::{Applied, Refused, Verdict};
use super::hold::HoldSync;
use super::keys::{FleetKey, Keys};
use super::record::DecisionRecord;
use super::FleetError;
use crate::config::ClusterName;
use crate::control_plane::supervisor::SupervisorHandle;
use crate::routing::BackendKey;

/// One key's change under the prefix, as the watch delivers it or a read implies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    /// The put's `mod_revision`, or the delete's revision. A removal a read implies (the key
    /// is gone, when is unknown) is [`Change::GONE`]: after everything the read saw.
    pub revision: i64,
    /// `None`: the key was removed.
    pub value: Option<Vec<u8>>,
}

impl Change {
    pub const GONE: i64 = i64::MAX;
}

/// A follower's failed connect reported under the prefix (observers re-check the backend).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub backend: BackendKey,
    pub key: String,
}

pub struct Follower {
    /// Highest revision seen on the prefix (the watch resumes after it).
    revision: i64,
    /// mod_revision of the decision in force, per decision key.
    decisions: Applied,
    /// The fleet's holds, and this instance's writes of them.
    pub holds: HoldSync,
    /// The fleet's operator actions.
    pub admins: AdminSync,
    /// Counts the records refused (`rolegate_fleet_records_refused_total`).
    metrics: crate::metrics::Metrics,
}

impl Follower {
    /// A follower that counts refused records on `metrics`.
    pub fn new(metrics: crate::metrics::Metrics) -> Follower {
        Follower {
            revision: 0,
            decisions: Applied::default(),
            holds: HoldSync::default(),
            admins: AdminSync::default(),
            metrics,
        }
    }

    /// Reads the prefix if nothing was seen yet (or after a compaction), then watches from
    /// the next revision.
    pub async fn start(
        &mut self,
        client: &mut Client,
        keys: &Keys,
        instance: &str,
        sup: &SupervisorHandle,
    ) -> Result<WatchStream, FleetError> {
        if self.revision == 0 {
            self.read_all(client, keys, instance, sup).await?;
        }
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.revision + 1);
        Ok(client.watch(keys.root(), Some(options)).await?)
    }

    async fn read_all(
        &mut self,
        client: &mut Client,
        keys: &Keys,
        instance: &str,
        sup: &SupervisorHandle,
    ) -> Result<(), FleetError> {
        let resp = client
            .get(keys.root(), Some(GetOptions::new().with_prefix()))
            .await?;
        let read = resp.kvs().iter().map(|kv| Change {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            revision: kv.mod_revision(),
            value: Some(kv.value().to_vec()),
        });
        let changes = self.snapshot(keys, read.collect());
        self.apply(changes, keys, instance, sup).await?;
        self.revision = resp.header().map_or(self.revision, |h| h.revision());
        Ok(())
    }

    /// The changes a read of the prefix stands for: what it found (reports and keys the fleet
    /// does not apply left out), plus the removal of each hold applied here that it did not.
    pub fn snapshot(&self, keys: &Keys, read: Vec<Change>) -> Vec<Change> {
        let mut changes: Vec<Change> = read
            .into_iter()
            .filter(|c| {
                matches!(
                    keys.classify(&c.key),
                    Some(FleetKey::Decision(_) | FleetKey::Hold(_) | FleetKey::Admin(..))
                )
            })
            .collect();
        let gone: Vec<Change> = self
            .holds
            .applied_keys()
            .filter(|k| !changes.iter().any(|c| &c.key == *k))
            .map(|k| Change {
                key: k.clone(),
                revision: Change::GONE,
                value: None,
            })
            .collect();
        changes.extend(gone);
        changes
    }

    /// One watch response: its changes in order, or a fresh read after a compaction. Returns
    /// the reports it carried, for the session to act on when it observes.
    pub async fn on_watch(
        &mut self,
        resp: WatchResponse,
        client: &mut Client,
        keys: &Keys,
        instance: &str,
        sup: &SupervisorHandle,
        watch: &mut WatchStream,
    ) -> Result<Vec<Report>, FleetError> {
        if resp.compact_revision() > 0 || resp.canceled() {
            info!(
                message = "Fleet watch compacted or cancelled; reading every key again.",
                compact_revision = resp.compact_revision(),
                reason = resp.cancel_reason(),
            );
            if resp.compact_revision() > 0 {
                self.revision = 0; // `start` reads the prefix again
            }
            *watch = self.start(client, keys, instance, sup).await?;
            return Ok(Vec::new());
        }
        let mut changes = Vec::with_capacity(resp.events().len());
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            self.revision = self.revision.max(kv.mod_revision());
            changes.push(Change {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                revision: kv.mod_revision(),
                value: (event.event_type() == EventType::Put).then(|| kv.value().to_vec()),
            });
        }
        if let Some(h) = resp.header() {
            self.revision = self.revision.max(h.revision());
        }
        self.apply(changes, keys, instance, sup).await
    }

    /// Applies `changes` one after another in revision order (a stable sort: the operations
    /// of one transaction share a revision and keep their order). Each is through the
    /// supervisor before the next is sent, so it sees them in that order too.
    pub async fn apply(
        &mut self,
        mut changes: Vec<Change>,
        keys: &Keys,
        instance: &str,
        sup: &SupervisorHandle,
    ) -> Result<Vec<Report>, FleetError> {
        changes.sort_by_key(|c| c.revision);
        let mut reports = Vec::new();
        for c in &changes {
            let Some(what) = keys.classify(&c.key) else {
                continue;
            };
            let verdict = match (what, &c.value) {
                (FleetKey::Decision(cluster), Some(v)) => {
                    self.decision(&c.key, cluster, v, c.revision, sup).await?
                }
                (FleetKey::Decision(_), None) => {
                    debug!(message = "A decision key was deleted; keeping the decision in force.", key = %c.key);
                    Ok(())
                }
                (FleetKey::Hold(cluster), Some(v)) => {
                    self.holds
                        .apply(&c.key, cluster, v, c.revision, sup)
                        .await?
                }
                (FleetKey::Hold(cluster), None) => self.holds.removed(&c.key, cluster, sup).await?,
                (FleetKey::Admin(cluster, backend), Some(v)) => {
                    let target = BackendKey {
                        cluster: cluster.into(),
                        backend: backend.into(),
                    };
                    self.admins
                        .apply(&c.key, target, v, c.revision, instance, sup)
                        .await?
                }
                (FleetKey::Admin(..), None) => Ok(()), // the latest write stays in force
                (FleetKey::Report(cluster, backend), Some(_)) => {
                    reports.push(Report {
                        backend: BackendKey {
                            cluster: cluster.into(),
                            backend: backend.into(),
                        },
                        key: c.key.clone(),
                    });
                    Ok(())
                }
                (FleetKey::Report(..), None) => Ok(()), // the reporter's lease ended
            };
            if let Err(refused) = verdict {
                self.metrics.fleet_records_refused_total.inc();
                error!(
                    message = refused.message,
                    key = %c.key,
                    revision = c.revision,
                    reason = %refused.reason,
                );
            }
        }
        Ok(reports)
    }

    /// A decision record for `cluster`, unless the one in force is as new. A refused record
    /// leaves the one in force (and its revision) as it was.
    async fn decision(
        &mut self,
        key: &str,
        cluster: &str,
        value: &[u8],
        revision: i64,
        sup: &SupervisorHandle,
    ) -> Result<Verdict, FleetError> {
        const IGNORED: &str = "Ignored a fleet decision record; keeping the routing table.";
        if !self.decisions.is_newer(key, revision) {
            return Ok(Ok(()));
        }
        let decision =
            match DecisionRecord::parse(cluster, value).and_then(|r| r.into_fleet(revision)) {
                Ok(d) => d,
                Err(e) => return Ok(Err(Refused::new(IGNORED, e))),
            };
        let verdict = sup
            .fleet_decision(ClusterName::from(cluster), decision)
            .await
            .map_err(|_| FleetError::Stopped)?;
        if verdict.is_ok() {
            self.decisions.record(key, revision);
            debug!(message = "Applied a fleet decision.", cluster, revision);
        }
        Ok(verdict.map_err(|reason| Refused::new(IGNORED, reason)))
    }
}

#[cfg(test)]
#[path = "follower_tests.rs"]
mod tests;
