//! The decision record: one JSON object per cluster under `PREFIX/decision/CLUSTER`, written
//! by the leader and read by every follower (and by any other tool: README documents it).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::BackendName;
use crate::control_plane::decision::Decision;
use crate::control_plane::supervisor::{FleetDecision, Published};
use crate::routing::Unavailable;

/// Format version; a follower refuses records of another.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRecord {
    pub version: u32,
    pub cluster: String,
    /// Instance that wrote it, and its term (the leader key's create_revision).
    pub leader: String,
    pub term: i64,
    /// Candidates for primary routes, in order; empty with `unavailable` set when none.
    pub primary: Vec<String>,
    /// `no_primary` | `split_brain` | `no_replica` | `no_backend` | `held` when `primary` is
    /// empty (`held`: the leader holds new primary connections, for a suspect primary or an
    /// operator hold).
    pub unavailable: Option<String>,
    /// Who holds the primary role, ignoring operator drain/disable.
    pub holders: Vec<String>,
    /// Qualifying replicas (up, replicating, within max_replica_lag).
    pub replicas: Vec<String>,
    /// Candidates of `role: any` listeners.
    pub any: Vec<String>,
    pub split_brain: bool,
    pub primary_claims: usize,
    /// Replaced while down: never routed.
    pub stale: Vec<String>,
    /// Backends whose checks pass, and those among them that are confirmed replicas.
    pub up: Vec<String>,
    pub confirmed_replicas: Vec<String>,
    /// Effective replication lag of each replica in milliseconds (null: unknown).
    pub lag_ms: BTreeMap<String, Option<u64>>,
    /// Resolved address of each backend the observer reached.
    pub addresses: BTreeMap<String, SocketAddr>,
    /// Wall clock of the decision, milliseconds since the Unix epoch.
    pub decided_at_ms: u64,
}

/// Why a record was not applied.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("not valid JSON for a decision record: {0}")]
    Json(#[from] serde_json::Error),
    #[error("record version {0} is not {VERSION}")]
    Version(u32),
    #[error("record names cluster {found:?} but sits under the key of {key:?}")]
    Cluster { key: String, found: String },
    #[error(
        "unavailable {0:?} is not one of no_primary, split_brain, no_replica, no_backend, held"
    )]
    Unavailable(String),
    #[error("primary is empty and no unavailable reason is given")]
    NoReason,
}

fn names(v: &[BackendName]) -> Vec<String> {
    v.iter().map(|b| b.as_str().to_string()).collect()
}

fn backends(v: &[String]) -> Vec<BackendName> {
    v.iter().map(|s| BackendName::from(s.as_str())).collect()
}

fn unavailable(text: &str) -> Result<Unavailable, RecordError> {
    Ok(match text {
        "no_primary" => Unavailable::NoPrimary,
        "split_brain" => Unavailable::SplitBrain,
        "no_replica" => Unavailable::NoReplica,
        "no_backend" => Unavailable::NoBackend,
        "held" => Unavailable::Held,
        other => return Err(RecordError::Unavailable(other.to_string())),
    })
}

impl DecisionRecord {
    pub fn new(
        cluster: &str,
        leader: &str,
        term: i64,
        p: &Published,
        decided_at_ms: u64,
    ) -> DecisionRecord {
        let d = &p.decision;
        let (primary, unavailable) = match &d.primary {
            Ok(v) => (names(v), None),
            Err(u) => (Vec::new(), Some(u.as_str().to_string())),
        };
        DecisionRecord {
            version: VERSION,
            cluster: cluster.to_string(),
            leader: leader.to_string(),
            term,
            primary,
            unavailable,
            holders: names(&d.holders),
            replicas: names(&d.replicas),
            any: names(&d.any),
            split_brain: d.split_brain,
            primary_claims: d.primary_claims,
            stale: names(&p.stale),
            up: names(&p.up),
            confirmed_replicas: names(&p.confirmed_replicas),
            lag_ms: d
                .lag
                .iter()
                .map(|(b, l)| (b.as_str().to_string(), l.map(|l| l.as_millis() as u64)))
                .collect(),
            addresses: p
                .addresses
                .iter()
                .map(|(b, a)| (b.as_str().to_string(), *a))
                .collect(),
            decided_at_ms,
        }
    }

    /// Parses a record read from `key_cluster`'s key. Names of backends are checked against
    /// the config by the supervisor, which knows them.
    pub fn parse(key_cluster: &str, bytes: &[u8]) -> Result<DecisionRecord, RecordError> {
        let r: DecisionRecord = serde_json::from_slice(bytes)?;
        if r.version != VERSION {
            return Err(RecordError::Version(r.version));
        }
        if r.cluster != key_cluster {
            return Err(RecordError::Cluster {
                key: key_cluster.to_string(),
                found: r.cluster,
            });
        }
        Ok(r)
    }

    pub fn into_fleet(self, revision: i64) -> Result<FleetDecision, RecordError> {
        let primary = match (&self.unavailable, self.primary.is_empty()) {
            (Some(u), true) => Err(unavailable(u)?),
            (None, true) => return Err(RecordError::NoReason),
            (_, false) => Ok(backends(&self.primary)),
        };
        let decision = Decision {
            primary,
            holders: backends(&self.holders),
            replicas: backends(&self.replicas),
            any: backends(&self.any),
            primary_claims: self.primary_claims,
            split_brain: self.split_brain,
            lag: self
                .lag_ms
                .iter()
                .map(|(b, l)| (BackendName::from(b.as_str()), l.map(Duration::from_millis)))
                .collect(),
            events: Vec::new(),
        };
        Ok(FleetDecision {
            published: Published {
                decision,
                up: backends(&self.up),
                confirmed_replicas: backends(&self.confirmed_replicas),
                addresses: self
                    .addresses
                    .iter()
                    .map(|(b, a)| (BackendName::from(b.as_str()), *a))
                    .collect(),
                stale: backends(&self.stale),
            },
            revision,
            leader: self.leader,
            decided_at_ms: self.decided_at_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published() -> Published {
        Published {
            decision: Decision {
                primary: Ok(vec!["a".into()]),
                holders: vec!["a".into()],
                replicas: vec!["b".into()],
                any: vec!["a".into(), "b".into()],
                primary_claims: 1,
                split_brain: false,
                lag: vec![("b".into(), Some(Duration::from_millis(12)))],
                events: Vec::new(),
            },
            up: vec!["a".into(), "b".into()],
            confirmed_replicas: vec!["b".into()],
            addresses: vec![("a".into(), "127.0.0.1:1".parse().unwrap())],
            stale: Vec::new(),
        }
    }

    #[test]
    fn a_record_round_trips_through_json() {
        let r = DecisionRecord::new("c", "obs-1", 7, &published(), 1);
        let json = serde_json::to_vec(&r).unwrap();
        let back = DecisionRecord::parse("c", &json).unwrap();
        assert_eq!(back, r);
        let f = back.into_fleet(42).unwrap();
        assert_eq!(f.published, published());
        assert_eq!((f.revision, f.leader.as_str()), (42, "obs-1"));
    }

    #[test]
    fn bad_records_are_refused_with_the_reason() {
        assert!(matches!(
            DecisionRecord::parse("c", b"{not json"),
            Err(RecordError::Json(_))
        ));
        let r = DecisionRecord::new("c", "o", 1, &published(), 1);
        let json = serde_json::to_vec(&r).unwrap();
        assert!(matches!(
            DecisionRecord::parse("other", &json),
            Err(RecordError::Cluster { .. })
        ));
        let mut v = r.clone();
        v.version = 9;
        let json = serde_json::to_vec(&v).unwrap();
        assert!(matches!(
            DecisionRecord::parse("c", &json),
            Err(RecordError::Version(9))
        ));
        let mut n = r;
        n.primary.clear();
        n.unavailable = Some("maybe".into());
        assert!(matches!(n.into_fleet(1), Err(RecordError::Unavailable(_))));
    }

    /// A leader holding new primary connections (a suspect primary, an operator hold)
    /// publishes `held`; followers must apply it, not refuse it as an unknown reason.
    #[test]
    fn a_held_decision_round_trips() {
        let mut p = published();
        p.decision.primary = Err(Unavailable::Held);
        p.decision.any = vec!["b".into()];
        let r = DecisionRecord::new("c", "o", 1, &p, 1);
        assert_eq!(r.unavailable.as_deref(), Some("held"));
        let f = r.into_fleet(3).unwrap();
        assert_eq!(f.published.decision.primary, Err(Unavailable::Held));
        assert_eq!(f.published.decision.holders, vec![BackendName::from("a")]);
    }
}
