//! Operator holds fleet-wide: `POST /clusters/{c}/hold` sent to any instance is written to
//! `PREFIX/hold/CLUSTER` and honoured by every instance; `/release` removes the key. The
//! record carries the deadline as wall clock, so an instance that joins (or reconnects) late
//! holds only for the time left. When a hold ends because another primary was confirmed, the
//! leader removes the key (conditional on it still being the hold it applied), so nobody
//! joining afterwards holds for a switchover already done. A timed-out record is left in
//! place: every instance ignores a record whose deadline has passed.
//!
//! The records arrive on the one watch of the prefix (`follower.rs`), in revision order with
//! the decisions: the decision that ends a hold is applied before the removal of its key.

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use super::applied::{parse, Applied, Refused, Verdict};
use super::keys::Keys;
use super::FleetError;
use crate::config::{BackendName, ClusterName};
use crate::control_plane::supervisor::{FleetHold, HoldChange, SupervisorHandle};

/// The JSON under `PREFIX/hold/CLUSTER` (README, "Fleet mode").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldRecord {
    /// Instance the operator sent the hold to.
    pub by: String,
    /// Wall clock of the request, ms since the Unix epoch.
    pub at_ms: u64,
    /// Wall clock of the deadline, ms since the Unix epoch.
    pub until_ms: u64,
    /// The primary routed when the hold was taken (`null`: none); the hold ends when another
    /// one is routed.
    pub primary: Option<String>,
}

impl HoldRecord {
    pub fn of(h: &FleetHold) -> HoldRecord {
        HoldRecord {
            by: h.by.clone(),
            at_ms: h.at_ms,
            until_ms: h.until_ms,
            primary: h.primary.as_ref().map(|p| p.as_str().to_string()),
        }
    }

    fn into_hold(self) -> FleetHold {
        FleetHold {
            by: self.by,
            at_ms: self.at_ms,
            until_ms: self.until_ms,
            primary: self.primary.map(|p| BackendName::from(p.as_str())),
        }
    }
}

/// Applies the fleet's holds to this instance and writes this instance's hold changes.
#[derive(Debug, Default)]
pub struct HoldSync {
    /// mod_revision of the record applied, per hold key. Kept across sessions, so a key
    /// removed while etcd was out of reach is noticed (and released) by the resumed watch,
    /// or by the next read after a compaction.
    applied: Applied,
}

impl HoldSync {
    /// The hold keys applied here (a read that misses one implies its removal).
    pub fn applied_keys(&self) -> impl Iterator<Item = &String> {
        self.applied.keys()
    }

    /// Writes a change made on this instance. `leading`: whether this instance publishes the
    /// fleet's decisions (only the leader removes a hold that ended on a new primary).
    pub async fn write(
        &mut self,
        client: &mut Client,
        keys: &Keys,
        change: HoldChange,
        leading: bool,
    ) -> Result<(), FleetError> {
        match change {
            HoldChange::Set(cluster, hold) => {
                let json = serde_json::to_string(&HoldRecord::of(&hold))
                    .expect("a hold record always serialises");
                client.put(keys.hold(cluster.as_str()), json, None).await?;
                info!(message = "Hold written for the whole fleet.", cluster = %cluster, until_ms = hold.until_ms);
            }
            HoldChange::Released(cluster) => {
                client.delete(keys.hold(cluster.as_str()), None).await?;
                info!(message = "Release written for the whole fleet.", cluster = %cluster);
            }
            HoldChange::NewPrimary(cluster) if leading => {
                let key = keys.hold(cluster.as_str());
                let Some(revision) = self.applied.get(&key) else {
                    return Ok(());
                };
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        key.as_str(),
                        CompareOp::Equal,
                        revision,
                    )])
                    .and_then([TxnOp::delete(key.as_str(), None)]);
                if client.txn(txn).await?.succeeded() {
                    info!(message = "Hold over on a new primary: removed its key for the fleet.", cluster = %cluster);
                }
            }
            HoldChange::NewPrimary(_) => {}
        }
        Ok(())
    }

    /// The record under `key` (a hold of `cluster`), unless the one applied is as new.
    pub async fn apply(
        &mut self,
        key: &str,
        cluster: &str,
        value: &[u8],
        revision: i64,
        sup: &SupervisorHandle,
    ) -> Result<Verdict, FleetError> {
        const IGNORED: &str = "Ignored a fleet hold record.";
        if !self.applied.newer(key, revision) {
            return Ok(Ok(()));
        }
        let record = match parse::<HoldRecord>(value, IGNORED) {
            Ok(r) => r,
            Err(refused) => return Ok(Err(refused)),
        };
        let verdict = sup
            .fleet_hold(ClusterName::from(cluster), Some(record.into_hold()))
            .await
            .map_err(|_| FleetError::Stopped)?;
        Ok(verdict.map_err(|reason| Refused::new(IGNORED, reason)))
    }

    /// `key` (the hold of `cluster`) was removed: released, or over on a new primary (then
    /// the supervisor ended it already, on the decision that came first).
    pub async fn removed(
        &mut self,
        key: &str,
        cluster: &str,
        sup: &SupervisorHandle,
    ) -> Result<Verdict, FleetError> {
        if !self.applied.remove(key) {
            return Ok(Ok(()));
        }
        debug!(message = "A fleet hold key was removed.", key = %key);
        let verdict = sup
            .fleet_hold(ClusterName::from(cluster), None)
            .await
            .map_err(|_| FleetError::Stopped)?;
        Ok(verdict.map_err(|reason| Refused::new("Ignored a fleet release.", reason)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_refuses_unknown_fields() {
        let h = FleetHold {
            by: "f1".into(),
            at_ms: 1_765_050_000_000,
            until_ms: 1_765_050_010_000,
            primary: Some("a".into()),
        };
        let json = serde_json::to_string(&HoldRecord::of(&h)).unwrap();
        assert_eq!(
            json,
            r#"{"by":"f1","at_ms":1765050000000,"until_ms":1765050010000,"primary":"a"}"#
        );
        let back: HoldRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back.into_hold(), h);
        let extra = r#"{"by":"f1","at_ms":1,"until_ms":2,"primary":null,"x":1}"#;
        assert!(serde_json::from_str::<HoldRecord>(extra).is_err());
    }
}
