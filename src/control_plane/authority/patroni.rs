//! Patroni as an authority: its leader key in the etcd (v3) DCS names the member that holds
//! the leader lock, and `patronictl switchover` writes the failover key before the old
//! primary demotes.
//!
//! One etcd session per attempt: read `/<namespace>/<scope>/leader` and `…/failover` in one
//! transaction (one revision), then watch both from the next revision. A leader change is
//! reported with `recheck` (the cluster's backends are checked at once: push, not polling);
//! a failover key naming a leader or candidate is reported as `hold`. A compacted or
//! cancelled watch (a member cut off from the quorum: watches require a leader) reads again;
//! a lost connection reports `Unreachable` and reconnects with [`Backoff`].
//!
//! Members map to backends by `patroni_member`, else by the backend's name; a leader key
//! naming anything else is [`Verdict::UnknownMember`]. Patroni's values are read the way
//! Patroni reads them (`patroni/dcs/__init__.py`, `Failover.from_node`), and nothing it
//! writes can make this task panic.

use std::time::Duration;

use etcd_client::{Client, EventType, Txn, TxnOp, TxnOpResponse, WatchOptions};
use tracing::{info, warn};

use super::{Backoff, Source, Stopped, Verdict};
use crate::config::{BackendName, ClusterConfig, EtcdConfig, PatroniConfig};

/// etcd connect, request and keep-alive timeout: a lost DCS is noticed within about this.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Runs until the source's shutdown.
pub async fn run(source: Source, config: PatroniConfig) {
    let members = Members::of(&source.cluster);
    let mut backoff = Backoff::new();
    let mut sent: Option<(Verdict, bool)> = None;
    info!(
        message = "Patroni authority: watching the leader key.",
        cluster = %source.cluster.name,
        leader_key = %config.leader_key(),
        failover_key = %config.failover_key(),
    );
    loop {
        let outcome = tokio::select! {
            _ = source.shutdown.cancelled() => return,
            r = session(&source, &config, &members, &mut sent, &mut backoff) => r,
        };
        let pause = match outcome {
            Err(SessionError::Stopped(_)) => return,
            Ok(()) => Backoff::FIRST,
            Err(e) => {
                warn!(
                    message = "Patroni authority out of reach; reconnecting.",
                    cluster = %source.cluster.name,
                    endpoints = ?config.etcd.endpoints,
                    error = %e,
                );
                let verdict = Verdict::Unreachable {
                    reason: e.to_string(),
                };
                if send(&source, &mut sent, verdict, false, false)
                    .await
                    .is_err()
                {
                    return;
                }
                backoff.next_delay()
            }
        };
        tokio::select! {
            _ = source.shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("read {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("the etcd watch ended")]
    WatchEnded,
    #[error(transparent)]
    Stopped(#[from] Stopped),
}

/// One session: read both keys, report, watch. `Ok(())` asks for a fresh read (compaction,
/// cancelled watch); an error means etcd could not be asked.
async fn session(
    source: &Source,
    config: &PatroniConfig,
    members: &Members,
    sent: &mut Option<(Verdict, bool)>,
    backoff: &mut Backoff,
) -> Result<(), SessionError> {
    let mut client = connect(&config.etcd).await?;
    let (leader_key, failover_key) = (config.leader_key(), config.failover_key());
    let read = Txn::new().and_then([
        TxnOp::get(leader_key.clone(), None),
        TxnOp::get(failover_key.clone(), None),
    ]);
    let resp = client.txn(read).await?;
    let revision = resp.header().map_or(0, |h| h.revision());
    let mut keys = Keys::default();
    for op in resp.op_responses() {
        if let TxnOpResponse::Get(get) = op {
            for kv in get.kvs() {
                keys.put(config, kv.key(), kv.value());
            }
        }
    }
    backoff.reset();
    let recheck = sent.as_ref().map(|(v, _)| v) != Some(&keys.verdict(members));
    send(source, sent, keys.verdict(members), keys.hold(), recheck).await?;

    let from = WatchOptions::new().with_start_revision(revision + 1);
    let mut watch = client.watch(leader_key, Some(from.clone())).await?;
    watch.watch(failover_key, Some(from)).await?;
    loop {
        let Some(resp) = watch.message().await? else {
            return Err(SessionError::WatchEnded);
        };
        if resp.compact_revision() > 0 || resp.canceled() {
            info!(
                message = "Patroni key watch compacted or cancelled; reading the keys again.",
                cluster = %source.cluster.name,
                compact_revision = resp.compact_revision(),
                reason = resp.cancel_reason(),
            );
            return Ok(());
        }
        let before = keys.leader.clone();
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            match event.event_type() {
                EventType::Put => keys.put(config, kv.key(), kv.value()),
                EventType::Delete => keys.put(config, kv.key(), b""),
            }
        }
        let recheck = before != keys.leader;
        send(source, sent, keys.verdict(members), keys.hold(), recheck).await?;
    }
}

/// Reports when the verdict or the hold changed, or a re-check is due.
async fn send(
    source: &Source,
    sent: &mut Option<(Verdict, bool)>,
    verdict: Verdict,
    hold: bool,
    recheck: bool,
) -> Result<(), Stopped> {
    let now = (verdict, hold);
    if sent.as_ref() == Some(&now) && !recheck {
        return Ok(());
    }
    source.report(now.0.clone(), now.1, recheck).await?;
    *sent = Some(now);
    Ok(())
}

/// The two keys as last read (an empty value stands for an absent key).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Keys {
    leader: Option<String>,
    failover: Option<Vec<u8>>,
}

impl Keys {
    fn put(&mut self, config: &PatroniConfig, key: &[u8], value: &[u8]) {
        let present = (!value.is_empty()).then(|| value.to_vec());
        if key == config.leader_key().as_bytes() {
            self.leader = present.map(|v| String::from_utf8_lossy(&v).trim().to_string());
        } else if key == config.failover_key().as_bytes() {
            self.failover = present;
        }
    }

    fn verdict(&self, members: &Members) -> Verdict {
        match self.leader.as_deref() {
            None | Some("") => Verdict::NoLeader {
                reason:
                    "Patroni's leader key is absent (a leader race, or no member holds the lock)"
                        .to_string(),
            },
            Some(name) => match members.backend(name) {
                Some(b) => Verdict::Leader(b),
                None => Verdict::UnknownMember {
                    name: name.to_string(),
                },
            },
        }
    }

    fn hold(&self) -> bool {
        self.failover.as_deref().is_some_and(switchover_pending)
    }
}

/// Whether a failover key's value announces a switchover about to happen, as Patroni's
/// `Failover.from_node` reads it: a JSON object naming a `leader` or a `member`, or the old
/// `leader:candidate` text. `{}` (Patroni's "done") and a switchover scheduled for later
/// (`scheduled_at`) hold nothing: a scheduled one is announced again when its time comes only
/// by the leader change, which re-checks at once.
fn switchover_pending(value: &[u8]) -> bool {
    let text = String::from_utf8_lossy(value);
    let text = text.trim();
    if text.is_empty() {
        return false;
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(o)) => {
            let named = |k: &str| {
                o.get(k)
                    .and_then(|v| v.as_str())
                    .is_some_and(|s| !s.is_empty())
            };
            let scheduled = o.get("scheduled_at").is_some_and(|v| !v.is_null());
            (named("leader") || named("member")) && !scheduled
        }
        Ok(_) => false,
        Err(_) => text.split(':').any(|part| !part.trim().is_empty()),
    }
}

/// Patroni member name → backend of the cluster.
#[derive(Debug, Clone)]
struct Members(Vec<(String, BackendName)>);

impl Members {
    fn of(cluster: &ClusterConfig) -> Members {
        Members(
            cluster
                .backends
                .iter()
                .map(|b| {
                    let member = b.patroni_member.clone();
                    (member.unwrap_or_else(|| b.name.to_string()), b.name.clone())
                })
                .collect(),
        )
    }

    fn backend(&self, member: &str) -> Option<BackendName> {
        self.0
            .iter()
            .find(|(m, _)| m == member)
            .map(|(_, b)| b.clone())
    }
}

/// An etcd client for Patroni's DCS (`control_plane/etcd.rs`).
async fn connect(etcd: &EtcdConfig) -> Result<Client, SessionError> {
    use crate::control_plane::etcd::{self, ConnectError};
    etcd::connect(etcd, TIMEOUT).await.map_err(|e| match e {
        ConnectError::Etcd(e) => SessionError::Etcd(e),
        ConnectError::File { path, source } => SessionError::File { path, source },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn cluster() -> (ClusterConfig, PatroniConfig) {
        let text = "clusters:\n  - name: c\n    protocol: postgres\n    check: { user: m }\n    authority: { patroni: { etcd: { endpoints: [http://127.0.0.1:1] }, namespace: /ns/, scope: s } }\n    backends:\n      - { name: a, address: 127.0.0.1:1 }\n      - { name: b, address: 127.0.0.1:2, patroni_member: pg-b }\nlisteners:\n  - { name: l, bind: 127.0.0.1:0, cluster: c }\n";
        let c = Config::from_yaml_str(text, None).expect("valid").clusters[0].clone();
        let Some(crate::config::Authority::Patroni(p)) = c.authority.clone() else {
            panic!("no patroni authority")
        };
        (c, p)
    }

    #[test]
    fn the_leader_key_maps_to_backends_by_member_name() {
        let (c, p) = cluster();
        let members = Members::of(&c);
        let mut keys = Keys::default();
        let cases: [(&[u8], Verdict); 5] = [
            (b"a", Verdict::Leader("a".into())),
            (b"pg-b\n", Verdict::Leader("b".into())),
            (
                b"b",
                Verdict::UnknownMember {
                    name: "b".to_string(),
                },
            ),
            (
                b"\xff\xfe",
                Verdict::UnknownMember {
                    name: "\u{fffd}\u{fffd}".to_string(),
                },
            ),
            (
                b"",
                Verdict::NoLeader {
                    reason: String::new(),
                },
            ),
        ];
        for (value, want) in cases {
            keys.put(&p, b"/ns/s/leader", value);
            let got = keys.verdict(&members);
            match (&got, &want) {
                (Verdict::NoLeader { .. }, Verdict::NoLeader { .. }) => {}
                _ => assert_eq!(got, want, "{value:?}"),
            }
        }
        // Other keys are not the leader's.
        keys.put(&p, b"/ns/s/leader", b"a");
        keys.put(&p, b"/ns/s/members/a", b"{}");
        keys.put(&p, b"/other/s/leader", b"b");
        assert_eq!(keys.verdict(&members), Verdict::Leader("a".into()));
    }

    #[test]
    fn a_failover_key_holds_only_while_a_switchover_is_pending() {
        let cases: [(&[u8], bool); 12] = [
            (br#"{"leader":"a","member":"b"}"#, true),
            (br#"{"leader":"a"}"#, true),
            (br#"{"member":"b"}"#, true),
            (b"{}", false),
            (b"", false),
            (br#"{"leader":"","member":""}"#, false),
            (
                br#"{"leader":"a","scheduled_at":"2030-01-01T00:00:00+00:00"}"#,
                false,
            ),
            (b"null", false),
            (b"[1,2]", false),
            (b"a:b", true),
            (b" : ", false),
            (b"\xff{", true),
        ];
        for (value, want) in cases {
            assert_eq!(
                switchover_pending(value),
                want,
                "{}",
                String::from_utf8_lossy(value)
            );
        }
        let (_, p) = cluster();
        let mut keys = Keys::default();
        keys.put(&p, b"/ns/s/failover", br#"{"leader":"a","member":"b"}"#);
        assert!(keys.hold());
        keys.put(&p, b"/ns/s/failover", b"");
        assert!(!keys.hold());
    }
}
