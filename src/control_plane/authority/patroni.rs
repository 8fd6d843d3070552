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
//! The dynamic configuration key `…/config` is read and watched with them: its `ttl` and
//! `loop_wait` bound how long Patroni takes to replace a dead leader, which `/status` shows
//! and the supervisor compares with the primary listeners' `queue_timeout`. It never affects
//! routing: an absent or unreadable key is reported as [`Timing::Unknown`], naming the key.
//!
//! Members map to backends by `patroni_member`, else by the backend's name; a leader key
//! naming anything else is [`Verdict::UnknownMember`]. Patroni's values are read the way
//! Patroni reads them (`patroni/dcs/__init__.py`, `Failover.from_node`), and nothing it
//! writes can make this task panic.

use std::time::Duration;

use etcd_client::{Client, EventType, Txn, TxnOp, TxnOpResponse, WatchOptions};
use tracing::{info, warn};

use super::{Backoff, FailoverTiming, Source, Stopped, Timing, Verdict};
use crate::config::{BackendName, ClusterConfig, EtcdConfig, PatroniConfig};

/// etcd connect, request and keep-alive timeout: a lost DCS is noticed within about this.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Runs until the source's shutdown.
pub async fn run(source: Source, config: PatroniConfig) {
    let members = Members::of(&source.cluster);
    let mut backoff = Backoff::new();
    let mut sent: Option<Sent> = None;
    info!(
        message = "Patroni authority: watching the leader key.",
        cluster = %source.cluster.name,
        leader_key = %config.leader_key(),
        failover_key = %config.failover_key(),
        config_key = %config.config_key(),
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
                // What the configuration key said stays true while etcd is away.
                let timing = sent.as_ref().and_then(|s| s.2.clone());
                if send(&source, &mut sent, (verdict, false, timing), false)
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
    sent: &mut Option<Sent>,
    backoff: &mut Backoff,
) -> Result<(), SessionError> {
    let mut client = connect(&config.etcd).await?;
    let (leader_key, failover_key, config_key) = (
        config.leader_key(),
        config.failover_key(),
        config.config_key(),
    );
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
    // The configuration key apart from the gate's keys: an etcd user allowed only those still
    // gets the gate, with the timing unknown (and that key not watched).
    let config_revision = match client.get(config_key.clone(), None).await {
        Ok(get) => {
            for kv in get.kvs() {
                keys.put(config, kv.key(), kv.value());
            }
            Some(get.header().map_or(0, |h| h.revision()))
        }
        Err(etcd_client::Error::GRpcStatus(status)) => {
            keys.config_error = Some(format!("etcd refused to read it: {}", status.message()));
            None
        }
        Err(e) => return Err(e.into()),
    };
    backoff.reset();
    let recheck = sent.as_ref().map(|s| &s.0) != Some(&keys.verdict(members));
    send(source, sent, keys.now(config, members), recheck).await?;

    let from = WatchOptions::new().with_start_revision(revision + 1);
    let mut watch = client.watch(leader_key, Some(from.clone())).await?;
    watch.watch(failover_key, Some(from)).await?;
    if let Some(r) = config_revision {
        let from = WatchOptions::new().with_start_revision(r + 1);
        watch.watch(config_key, Some(from)).await?;
    }
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
        send(source, sent, keys.now(config, members), recheck).await?;
    }
}

/// What was last reported: verdict, hold, timing.
type Sent = (Verdict, bool, Option<Timing>);

/// Reports when the verdict, the hold or the timing changed, or a re-check is due.
async fn send(
    source: &Source,
    sent: &mut Option<Sent>,
    now: Sent,
    recheck: bool,
) -> Result<(), Stopped> {
    if sent.as_ref() == Some(&now) && !recheck {
        return Ok(());
    }
    source
        .report(now.0.clone(), now.1, recheck, now.2.clone())
        .await?;
    *sent = Some(now);
    Ok(())
}

/// The three keys as last read (an empty value stands for an absent key).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Keys {
    leader: Option<String>,
    failover: Option<Vec<u8>>,
    config: Option<Vec<u8>>,
    /// Why the configuration key could not be read at all (etcd refused it).
    config_error: Option<String>,
}

impl Keys {
    fn put(&mut self, config: &PatroniConfig, key: &[u8], value: &[u8]) {
        let present = (!value.is_empty()).then(|| value.to_vec());
        if key == config.leader_key().as_bytes() {
            self.leader = present.map(|v| String::from_utf8_lossy(&v).trim().to_string());
        } else if key == config.failover_key().as_bytes() {
            self.failover = present;
        } else if key == config.config_key().as_bytes() {
            self.config = present;
        }
    }

    /// The report these keys make.
    fn now(&self, config: &PatroniConfig, members: &Members) -> Sent {
        let key = config.config_key();
        let timing = match &self.config_error {
            Some(why) => Timing::Unknown {
                reason: format!("Patroni's configuration key {key}: {why}"),
            },
            None => timing(&key, self.config.as_deref()),
        };
        (self.verdict(members), self.hold(), Some(timing))
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

/// Patroni's defaults for the timing fields (`patroni/config.py`, `__DEFAULT_CONFIG`), which
/// apply when the dynamic configuration leaves one out.
const DEFAULTS: [(&str, u64); 3] = [("ttl", 30), ("loop_wait", 10), ("retry_timeout", 10)];

/// The failover timing in the dynamic configuration key's value, read as Patroni reads it
/// (`Config._safe_copy_dynamic_configuration`: each present field through Python's `int()`,
/// so `10`, `10.7` and `"10"` are 10 s; an absent field takes Patroni's default). Anything
/// Patroni itself could not apply is [`Timing::Unknown`] with the reason and the key.
fn timing(key: &str, value: Option<&[u8]>) -> Timing {
    let unknown = |why: String| Timing::Unknown {
        reason: format!("Patroni's configuration key {key}: {why}"),
    };
    let Some(value) = value else {
        return unknown("absent (Patroni has not written its dynamic configuration)".into());
    };
    let object = match serde_json::from_slice::<serde_json::Value>(value) {
        Ok(serde_json::Value::Object(o)) => o,
        Ok(other) => return unknown(format!("not a JSON object but {}", json_kind(&other))),
        Err(e) => return unknown(format!("not JSON ({e})")),
    };
    let mut seconds = [0u64; 3];
    let mut defaulted = Vec::new();
    for (slot, (field, default)) in seconds.iter_mut().zip(DEFAULTS) {
        *slot = match object.get(field) {
            None => {
                defaulted.push(field);
                default
            }
            Some(v) => match python_int(v) {
                Some(s) => s,
                None => return unknown(format!("{field} is {v}, not a whole number of seconds")),
            },
        };
    }
    let [ttl, loop_wait, retry_timeout] = seconds.map(Duration::from_secs);
    Timing::Known(FailoverTiming {
        key: key.to_string(),
        ttl,
        loop_wait,
        retry_timeout,
        defaulted,
    })
}

/// Python's `int(v)` for what JSON can hold, limited to non-negative seconds: an integer, a
/// number (truncated), a string of digits (surrounding blanks allowed). Booleans, null,
/// negatives and anything else are refused.
fn python_int(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && *f < u32::MAX as f64)
                .map(|f| f.trunc() as u64)
        }),
        serde_json::Value::String(s) => {
            let s = s.trim();
            let digits = s.strip_prefix('+').unwrap_or(s);
            (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse().ok())
                .flatten()
        }
        _ => None,
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
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

    fn known(t: Timing) -> FailoverTiming {
        match t {
            Timing::Known(k) => k,
            Timing::Unknown { reason } => panic!("unknown: {reason}"),
        }
    }

    #[test]
    fn the_config_key_gives_patronis_timing_as_patroni_reads_it() {
        let key = "/ns/s/config";
        // What the lab's Patroni 3.0 writes at bootstrap, PostgreSQL settings and all.
        let lab = br#"{"ttl":10,"loop_wait":1,"retry_timeout":5,"maximum_lag_on_failover":1048576,"postgresql":{"parameters":{"max_connections":100}}}"#;
        let t = known(timing(key, Some(lab)));
        assert_eq!(
            (t.ttl, t.loop_wait, t.retry_timeout),
            (
                Duration::from_secs(10),
                Duration::from_secs(1),
                Duration::from_secs(5)
            )
        );
        assert_eq!(t.window(), Duration::from_secs(11));
        assert!(t.defaulted.is_empty());
        assert_eq!(t.key, key);
        // Python's int(): numbers truncate, digit strings parse.
        let t = known(timing(
            key,
            Some(br#"{"ttl":"20","loop_wait":2.9,"retry_timeout":" 7 "}"#),
        ));
        assert_eq!(
            (
                t.ttl.as_secs(),
                t.loop_wait.as_secs(),
                t.retry_timeout.as_secs()
            ),
            (20, 2, 7)
        );
        // Absent fields are Patroni's defaults, and said to be.
        let t = known(timing(key, Some(br#"{"ttl":40}"#)));
        assert_eq!((t.ttl.as_secs(), t.loop_wait.as_secs()), (40, 10));
        assert_eq!(t.defaulted, vec!["loop_wait", "retry_timeout"]);
        let t = known(timing(key, Some(b"{}")));
        assert_eq!(t.window(), Duration::from_secs(40));
    }

    #[test]
    fn a_missing_or_garbage_config_key_is_unknown_and_names_the_key() {
        let key = "/ns/s/config";
        let cases: [(Option<&[u8]>, &str); 9] = [
            (None, "absent"),
            (Some(b"not json"), "not JSON"),
            (Some(b"\xff\xfe"), "not JSON"),
            (Some(b"[10, 1]"), "an array"),
            (Some(b"null"), "null"),
            (Some(br#"{"ttl":null}"#), "ttl is null"),
            (Some(br#"{"ttl":-5}"#), "ttl is -5"),
            (Some(br#"{"loop_wait":"ten"}"#), "loop_wait is \"ten\""),
            (Some(br#"{"retry_timeout":true}"#), "retry_timeout is true"),
        ];
        for (value, want) in cases {
            match timing(key, value) {
                Timing::Unknown { reason } => {
                    assert!(reason.contains(key), "{reason}");
                    assert!(reason.contains(want), "{want:?} not in {reason}");
                }
                Timing::Known(t) => panic!("{value:?} read as {t:?}"),
            }
        }
    }

    #[test]
    fn the_config_key_is_tracked_with_the_others() {
        let (c, p) = cluster();
        let members = Members::of(&c);
        let mut keys = Keys::default();
        keys.put(&p, b"/ns/s/leader", b"a");
        let (_, _, t) = keys.now(&p, &members);
        assert!(matches!(t, Some(Timing::Unknown { .. })), "{t:?}");
        keys.put(&p, b"/ns/s/config", br#"{"ttl":30,"loop_wait":10}"#);
        let (v, hold, t) = keys.now(&p, &members);
        assert_eq!((v, hold), (Verdict::Leader("a".into()), false));
        assert_eq!(known(t.expect("timing")).window(), Duration::from_secs(40));
        // A deleted key (an empty value) is unknown again.
        keys.put(&p, b"/ns/s/config", b"");
        assert!(matches!(
            keys.now(&p, &members).2,
            Some(Timing::Unknown { .. })
        ));
    }
}
