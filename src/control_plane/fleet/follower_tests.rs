//! The order in which a follower applies what the fleet wrote, through a real supervisor
//! (a follower's: its probes paused) and without etcd: the changes are what the one watch
//! or a read of the prefix hands over.

use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::Config;
use crate::metrics::Metrics;

struct Instance {
    follower: Follower,
    sup: SupervisorHandle,
    metrics: Metrics,
    keys: Keys,
    shutdown: CancellationToken,
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A follower of cluster `r` (Redis, backends `a` and `b`); nothing listens on their
/// ports and nothing connects to them (a follower's probes are paused).
fn follower() -> Instance {
    let yaml = "clusters:
  - name: r
    protocol: redis
    backends:
      - { name: a, address: 127.0.0.1:1 }
      - { name: b, address: 127.0.0.1:2 }
listeners:
  - { name: rw, bind: 127.0.0.1:0, cluster: r, role: primary }
coordination:
  etcd: { endpoints: [http://127.0.0.1:1] }
  prefix: /rg
  instance: f1
  mode: follower
";
    let config = Config::from_yaml_str(yaml, None).expect("valid test config");
    let metrics = Metrics::new();
    let shutdown = CancellationToken::new();
    let (writer, _router) = crate::routing::new_router();
    let sup = crate::control_plane::supervisor::spawn(
        std::sync::Arc::new(config),
        writer,
        metrics.clone(),
        CancellationToken::new(),
        shutdown.clone(),
    );
    Instance {
        follower: Follower::new(metrics.clone()),
        sup,
        metrics,
        keys: Keys::new("/rg"),
        shutdown,
    }
}

impl Instance {
    async fn apply(&mut self, changes: Vec<Change>) {
        self.follower
            .apply(changes, &self.keys, "f1", &self.sup)
            .await
            .expect("applied");
    }

    /// The leader routes `a`; then f0 holds the cluster (primary `a`, 60 s): revisions 2, 3.
    async fn held_on_a(&mut self) {
        let (d, h) = (self.keys.decision("r"), self.keys.hold("r"));
        self.apply(vec![put(&d, 2, decision("a", "b"))]).await;
        self.apply(vec![put(&h, 3, hold("a"))]).await;
        let status = self.sup.status.load();
        let hold = status.clusters[0].hold.as_ref().expect("held");
        assert_eq!(hold.held_by.as_deref(), Some("f0"));
        assert_eq!(self.ended(), (0, 0));
    }

    /// Holds ended here: (new_primary, released).
    fn ended(&self) -> (u64, u64) {
        let n = |reason| {
            self.metrics
                .holds_ended_total
                .with_label_values(&["r", reason])
                .get()
        };
        (n("new_primary"), n("released"))
    }
}

fn put(key: &str, revision: i64, value: Vec<u8>) -> Change {
    Change {
        key: key.to_string(),
        revision,
        value: Some(value),
    }
}

fn removed(key: &str, revision: i64) -> Change {
    Change {
        key: key.to_string(),
        revision,
        value: None,
    }
}

fn decision(primary: &str, replica: &str) -> Vec<u8> {
    serde_json::json!({
        "version": 1, "cluster": "r", "leader": "obs", "term": 1,
        "primary": [primary], "unavailable": null, "holders": [primary],
        "replicas": [replica], "any": [primary, replica], "split_brain": false,
        "primary_claims": 1, "stale": [], "up": [primary, replica],
        "confirmed_replicas": [replica], "lag_ms": { replica: 0 },
        "addresses": { "a": "127.0.0.1:1", "b": "127.0.0.1:2" }, "decided_at_ms": 1
    })
    .to_string()
    .into_bytes()
}

fn hold(primary: &str) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    serde_json::json!({ "by": "f0", "at_ms": now, "until_ms": now + 60_000, "primary": primary })
        .to_string()
        .into_bytes()
}

/// The switchover as the leader writes it: the decision routing `b` (revision 4), then
/// the removal of the hold key (5). From one stream the hold ends on the new primary,
/// even when the batch lists them out of order (a stable sort by revision); handed over
/// one at a time in the order two separate watches could deliver them (the removal
/// first), the same changes end it as `released` — the race this module's one watch
/// closes.
#[tokio::test]
async fn the_decision_that_ends_a_hold_is_applied_before_the_removal_of_its_key() {
    let mut one = follower();
    one.held_on_a().await;
    let (d, h) = (one.keys.decision("r"), one.keys.hold("r"));
    one.apply(vec![put(&d, 4, decision("b", "a")), removed(&h, 5)])
        .await;
    assert_eq!(one.ended(), (1, 0), "one stream: ended on the new primary");
    assert!(one.sup.status.load().clusters[0].hold.is_none());

    let mut sorted = follower();
    sorted.held_on_a().await;
    sorted
        .apply(vec![removed(&h, 5), put(&d, 4, decision("b", "a"))])
        .await;
    assert_eq!(sorted.ended(), (1, 0), "applied in revision order");

    let mut two = follower();
    two.held_on_a().await;
    two.apply(vec![removed(&h, 5)]).await;
    two.apply(vec![put(&d, 4, decision("b", "a"))]).await;
    assert_eq!(two.ended(), (0, 1), "two streams, removal first: released");
}

/// A read after a compaction (or any read, e.g. the start) that finds the switchover
/// done and the hold key gone: the decision first, the implied removal last, so the hold
/// ends on the new primary. A read that finds the key gone and no new primary: released.
#[tokio::test]
async fn a_read_applies_what_it_found_before_what_went_away() {
    let mut i = follower();
    i.held_on_a().await;
    let d = i.keys.decision("r");
    let read = vec![
        put(&i.keys.root(), 1, b"ignored".to_vec()),
        put(&i.keys.report("f2", "r", "a"), 6, b"1".to_vec()),
        put(&d, 4, decision("b", "a")),
    ];
    let changes = i.follower.snapshot(&i.keys, read);
    assert_eq!(
        changes,
        vec![
            put(&d, 4, decision("b", "a")),
            removed(&i.keys.hold("r"), Change::GONE)
        ],
        "reports and unknown keys left out; the hold's removal implied"
    );
    i.apply(changes).await;
    assert_eq!(i.ended(), (1, 0));

    let mut r = follower();
    r.held_on_a().await;
    let d = r.keys.decision("r");
    let changes = r
        .follower
        .snapshot(&r.keys, vec![put(&d, 2, decision("a", "b"))]);
    r.apply(changes).await;
    assert_eq!(r.ended(), (0, 1), "released while away");
}

/// Reports reach the session only from the watch, and a deleted decision or admin key
/// keeps what is in force.
#[tokio::test]
async fn reports_are_handed_back_and_deletions_keep_the_decision() {
    let mut i = follower();
    i.held_on_a().await;
    let report = i.keys.report("f2", "r", "b");
    let reports = i
        .follower
        .apply(
            vec![
                removed(&i.keys.decision("r"), 4),
                put(&report, 5, b"1".to_vec()),
            ],
            &i.keys,
            "f1",
            &i.sup,
        )
        .await
        .unwrap();
    assert_eq!(
        reports,
        vec![Report {
            backend: BackendKey {
                cluster: "r".into(),
                backend: "b".into()
            },
            key: report
        }]
    );
    let status = i.sup.status.load();
    assert!(status.clusters[0].hold.is_some(), "still held on a");
    assert_eq!(i.ended(), (0, 0));
}

/// A hold or operator-action record that is not JSON, or names an unknown action, is
/// ignored like a bad decision record: counted on `rolegate_fleet_records_refused_total`,
/// and what is in force (here: the hold on `a`) kept.
#[tokio::test]
async fn bad_hold_and_admin_records_are_counted_and_change_nothing() {
    let mut i = follower();
    i.held_on_a().await;
    let refused = || i.metrics.fleet_records_refused_total.get();
    assert_eq!(refused(), 0);
    let (h, a) = (i.keys.hold("r"), i.keys.admin("r", "a"));
    let bad_action = br#"{"action":"explode","by":"f0","at_ms":1}"#.to_vec();
    i.apply(vec![
        put(&h, 4, b"{not json".to_vec()),
        put(&a, 5, bad_action),
        put(&i.keys.admin("r", "b"), 6, b"[]".to_vec()),
    ])
    .await;
    assert_eq!(i.metrics.fleet_records_refused_total.get(), 3);
    let status = i.sup.status.load();
    let hold = status.clusters[0].hold.as_ref().expect("still held");
    assert_eq!(hold.held_by.as_deref(), Some("f0"));
    assert!(status.clusters[0]
        .backends
        .iter()
        .all(|b| b.admin == "enabled" && b.admin_by.is_none()));
}
