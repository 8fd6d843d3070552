//! Patroni as an authority (`authority: { patroni: ... }`), against real components:
//!
//! - the lab's Patroni pair (Debian's Patroni 3.0 on the lab's etcd): `patronictl`'s REST
//!   switchover under a write loop (rolegate follows the leader key, the failover key holds
//!   new connections: none fails) and a killed Patroni primary (followed);
//! - the lab's own PostgreSQL pair with an authority whose keys this test writes into the
//!   lab's etcd by hand: a leader key naming the replica (checks and authority disagree: not
//!   routed, reported), naming no backend (not routed, clear error), a failover key (held);
//! - an authority at a closed port: each `on_authority_lost` policy does what it says.
//!
//! Tests that move Patroni's roles hold the lab lock and put Patroni back (A leads) at their
//! end, also when they fail.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support;
use support::lab::{self, wall, Engine};
use support::{db, metric_value, require, Proxy};

use rolegate::control_plane::supervisor::AuthorityStatus;

// === the lab's pieces ===

fn etcd_endpoints() -> Vec<String> {
    lab::addresses("etcd")
        .iter()
        .map(|a| format!("http://{a}"))
        .collect()
}

fn patroni_setting(key: &str) -> String {
    lab::env()
        .engines
        .get("patroni")
        .and_then(|e| e.settings.get(key))
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("`lab.sh env --json` has no patroni {key}"))
        .to_string()
}

fn patroni_addr(node: &str) -> SocketAddr {
    lab::node("patroni", node).address
}

/// Which Patroni node leads now ("A" or "B"), as the lab sees it.
fn patroni_leader() -> Option<String> {
    let s = lab::status();
    ["A", "B"]
        .into_iter()
        .find(|n| s["patroni"][n]["role"] == "primary")
        .map(str::to_string)
}

async fn lab_sh(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        lab::run(&a)
    })
    .await
    .expect("lab.sh task")
}

/// Puts Patroni back (A leads, B streams) when a test fails half-way.
struct ResetPatroniOnPanic;

impl Drop for ResetPatroniOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = std::panic::catch_unwind(|| lab::run(&["reset", "patroni"]));
        }
    }
}

/// A leads and B streams from it, whatever an earlier test left.
async fn patroni_canonical() {
    if patroni_leader().as_deref() != Some("A") {
        lab_sh(&["reset", "patroni"]).await;
    }
}

// === rolegate ===

fn authority_yaml(etcd: &[String], namespace: &str, scope: &str) -> String {
    format!(
        "authority: {{ patroni: {{ etcd: {{ endpoints: {etcd:?} }}, namespace: \"{namespace}\", scope: \"{scope}\" }} }}"
    )
}

/// One postgres cluster `name` over `a`/`b` (Patroni members A and B) with `extra` keys
/// (the authority), served by `rw_<name>` (primary, waiting `queue` for a route) and
/// `ro_<name>` (replica).
struct ClusterYaml {
    name: &'static str,
    a: SocketAddr,
    b: SocketAddr,
    extra: String,
    queue: &'static str,
}

fn config_yaml(clusters: &[ClusterYaml]) -> String {
    let pw = lab::monitor_password();
    let mut text = String::from("admin: { listen: 127.0.0.1:0 }\nclusters:\n");
    for c in clusters {
        text.push_str(&format!(
            "  - name: {name}
    protocol: postgres
    check: {{ user: rolegate_monitor, password: \"{pw}\", database: postgres }}
    {extra}
    backends:
      - {{ name: a, address: \"{a}\", patroni_member: A }}
      - {{ name: b, address: \"{b}\", patroni_member: B }}
",
            name = c.name,
            extra = c.extra,
            a = c.a,
            b = c.b,
        ));
    }
    text.push_str("listeners:\n");
    for c in clusters {
        text.push_str(&format!(
            "  - {{ name: rw_{name}, bind: \"127.0.0.1:0\", cluster: {name}, role: primary, queue_timeout: {queue} }}\n  - {{ name: ro_{name}, bind: \"127.0.0.1:0\", cluster: {name}, role: replica }}\n",
            name = c.name,
            queue = c.queue,
        ));
    }
    text
}

fn authority(proxy: &Proxy, cluster: &str) -> AuthorityStatus {
    let s = proxy.app.supervisor().status.load_full();
    s.clusters
        .iter()
        .find(|c| c.name == cluster)
        .and_then(|c| c.authority.clone())
        .unwrap_or_else(|| panic!("cluster {cluster} has no authority in /status"))
}

async fn wait_authority(
    proxy: &Proxy,
    cluster: &str,
    what: &str,
    pred: impl Fn(&AuthorityStatus) -> bool,
) {
    support::eventually(Duration::from_secs(30), what, || {
        let ok = pred(&authority(proxy, cluster));
        async move { ok }
    })
    .await;
}

fn events(proxy: &Proxy, cluster: &str, event: &str) -> f64 {
    let prefix =
        format!("rolegate_authority_events_total{{cluster=\"{cluster}\",event=\"{event}\",kind=\"patroni\"}}");
    metric_value(&proxy.metrics(), &prefix).unwrap_or(0.0)
}

// === a write loop: a new connection and a write every 20 ms ===

#[derive(Debug, Clone)]
struct Attempt {
    started: f64,
    result: Result<u16, String>,
}

struct Writer {
    stop: Arc<std::sync::atomic::AtomicBool>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn spawn(addr: SocketAddr) -> Writer {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let (halt, log) = (stop.clone(), attempts.clone());
        let run = format!("ap{}", (wall() * 1e3) as u64);
        let task = tokio::spawn(async move {
            let mut handles = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            // At most 6,000 attempts (two minutes).
            for i in 0..6000 {
                tick.tick().await;
                if halt.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let (log, tag) = (log.clone(), format!("{run}-{i}"));
                handles.push(tokio::spawn(async move {
                    let started = wall();
                    let result = db::connect_and_write(Engine::Pg, addr, &tag).await;
                    log.lock().unwrap().push(Attempt { started, result });
                }));
            }
            for h in handles {
                let _ = h.await;
            }
        });
        Writer {
            stop,
            attempts,
            task,
        }
    }

    fn acknowledged_by(&self, port: u16) -> usize {
        let log = self.attempts.lock().unwrap();
        log.iter().filter(|a| a.result == Ok(port)).count()
    }

    async fn wait_for_writes(&self, n: usize, port: u16, what: &str) {
        support::eventually(Duration::from_secs(60), what, || {
            let ok = self.acknowledged_by(port) >= n;
            async move { ok }
        })
        .await;
    }

    async fn finish(self) -> Vec<Attempt> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.expect("writer task");
        let mut v = self.attempts.lock().unwrap().clone();
        v.sort_by(|a, b| a.started.total_cmp(&b.started));
        v
    }
}

fn failed(attempts: &[Attempt]) -> Vec<&Attempt> {
    attempts.iter().filter(|a| a.result.is_err()).collect()
}

// === Patroni itself ===

/// Patroni's own switchover (REST POST /switchover, what `patronictl switchover` sends):
/// rolegate holds new connections while the failover key announces it, follows the leader
/// key to B, and no new connection fails — none is sent to A once it refuses writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_patroni_switchover_is_followed_with_no_failed_connection() {
    let Some(_) = require::lab_engine("patroni") else {
        return;
    };
    let _lock = lab::lock();
    let _reset = ResetPatroniOnPanic;
    patroni_canonical().await;
    let (a, b) = (patroni_addr("A"), patroni_addr("B"));
    let auth = authority_yaml(
        &etcd_endpoints(),
        &patroni_setting("namespace"),
        &patroni_setting("scope"),
    );
    let yaml = config_yaml(&[ClusterYaml {
        name: "pat",
        a,
        b,
        extra: auth,
        queue: "60s",
    }]);
    let proxy = Proxy::start(&yaml).await;
    proxy.wait_route("rw_pat", "a leads", |n| n == ["a"]).await;
    wait_authority(&proxy, "pat", "Patroni names a", |s| {
        s.leader.as_deref() == Some("a") && s.gate == Some("agrees") && s.reachable
    })
    .await;

    let rw = proxy.addr("rw_pat").await;
    let writer = Writer::spawn(rw);
    writer
        .wait_for_writes(20, a.port(), "writes on A before")
        .await;
    let t = lab_sh(&["switchover", "patroni", "--json"]).await;
    let done = serde_json::from_str::<serde_json::Value>(&t)
        .ok()
        .and_then(|v| v["done"].as_f64())
        .unwrap_or_else(wall);
    proxy.wait_route("rw_pat", "b leads", |n| n == ["b"]).await;
    writer
        .wait_for_writes(20, b.port(), "writes on B after")
        .await;
    let attempts = writer.finish().await;

    let bad = failed(&attempts);
    assert!(
        bad.is_empty(),
        "{} of {} new connections failed during the switchover: {:?}",
        bad.len(),
        attempts.len(),
        bad.iter().take(5).collect::<Vec<_>>()
    );
    let late_on_a = attempts
        .iter()
        .filter(|x| x.started > done && x.result == Ok(a.port()))
        .count();
    assert_eq!(
        late_on_a, 0,
        "writes acknowledged by A after the switchover"
    );
    assert!(
        events(&proxy, "pat", "hold_started") >= 1.0,
        "the failover key held new connections"
    );
    assert!(events(&proxy, "pat", "hold_cleared") >= 1.0);
    assert!(
        events(&proxy, "pat", "recheck") >= 1.0,
        "a leader change re-checks"
    );
    let s = authority(&proxy, "pat");
    assert_eq!(s.leader.as_deref(), Some("b"));
    assert!(!s.hold);
    proxy.stop().await;
    lab_sh(&["reset", "patroni"]).await;
}

/// A Patroni primary killed (Patroni and PostgreSQL, -9): Patroni promotes B once A's leader
/// key expires, and rolegate follows the leader key to B.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_patroni_primary_is_followed() {
    let Some(_) = require::lab_engine("patroni") else {
        return;
    };
    let _lock = lab::lock();
    let _reset = ResetPatroniOnPanic;
    patroni_canonical().await;
    let (a, b) = (patroni_addr("A"), patroni_addr("B"));
    let auth = authority_yaml(
        &etcd_endpoints(),
        &patroni_setting("namespace"),
        &patroni_setting("scope"),
    );
    let yaml = config_yaml(&[ClusterYaml {
        name: "pat",
        a,
        b,
        extra: auth,
        queue: "60s",
    }]);
    let proxy = Proxy::start(&yaml).await;
    proxy.wait_route("rw_pat", "a leads", |n| n == ["a"]).await;
    let rw = proxy.addr("rw_pat").await;
    let writer = Writer::spawn(rw);
    writer
        .wait_for_writes(10, a.port(), "writes on A before")
        .await;
    let killed = wall();
    lab_sh(&["kill", "patroni", "--json"]).await;
    proxy.wait_route("rw_pat", "b leads", |n| n == ["b"]).await;
    wait_authority(&proxy, "pat", "Patroni names b", |s| {
        s.leader.as_deref() == Some("b") && s.gate == Some("agrees")
    })
    .await;
    writer
        .wait_for_writes(10, b.port(), "writes on B after")
        .await;
    let attempts = writer.finish().await;
    let on_a_after = attempts
        .iter()
        .filter(|x| x.started > killed + 1.0 && x.result == Ok(a.port()))
        .count();
    assert_eq!(on_a_after, 0, "writes acknowledged by the killed A");
    proxy.stop().await;
    lab_sh(&["reset", "patroni"]).await;
}

// === keys written by hand into the lab's etcd, over the lab's PostgreSQL pair ===

struct HandKeys {
    client: etcd_client::Client,
    namespace: String,
    scope: String,
}

impl HandKeys {
    async fn new() -> HandKeys {
        let client = etcd_client::Client::connect(etcd_endpoints(), None)
            .await
            .expect("connect to the lab's etcd");
        let namespace = format!("/rolegate-test-{}-{}", std::process::id(), wall() as u64);
        HandKeys {
            client,
            namespace,
            scope: "hand".into(),
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}/{}/{name}", self.namespace, self.scope)
    }

    async fn put(&mut self, name: &str, value: &str) {
        let key = self.key(name);
        self.client.put(key, value, None).await.expect("etcd put");
    }

    async fn delete(&mut self, name: &str) {
        let key = self.key(name);
        self.client.delete(key, None).await.expect("etcd delete");
    }

    async fn cleanup(mut self) {
        let opts = etcd_client::DeleteOptions::new().with_prefix();
        let _ = self.client.delete(self.namespace.clone(), Some(opts)).await;
    }
}

/// The leader key decides with the checks: naming the replica holds the route (the checks
/// say a), naming a routes a, naming nobody we have holds it with a clear error, deleted
/// holds it; a failover key holds until it is cleared. Each change arrives by the watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_key_must_agree_with_the_checks() {
    let Some(_) = require::lab(&[Engine::Pg]) else {
        return;
    };
    let Some(_) = require::lab_engine("etcd") else {
        return;
    };
    let _lock = lab::lock_read_only();
    let mut keys = HandKeys::new().await;
    keys.put("leader", "B").await;
    let auth = authority_yaml(&etcd_endpoints(), &keys.namespace, &keys.scope);
    let yaml = config_yaml(&[ClusterYaml {
        name: "db",
        a: Engine::Pg.addr('A'),
        b: Engine::Pg.addr('B'),
        extra: auth,
        queue: "200ms",
    }]);
    let proxy = Proxy::start(&yaml).await;
    // The checks confirm a; the authority names b: not routed, reported.
    wait_authority(&proxy, "db", "the checks and the authority disagree", |s| {
        s.gate == Some("disagrees") && s.leader.as_deref() == Some("b")
    })
    .await;
    proxy.wait_candidates("ro_db", 1).await;
    let held = proxy.app.router().load();
    let route = held.route(&"rw_db".into()).expect("rw_db route");
    assert!(
        route.candidates.is_empty(),
        "disagreeing: a must not be routed"
    );
    assert!(events(&proxy, "db", "disagrees") >= 1.0);
    assert_eq!(
        metric_value(
            &proxy.metrics(),
            "rolegate_authority_agrees{cluster=\"db\"}"
        ),
        Some(0.0)
    );
    let refused = db::connect_and_write(Engine::Pg, proxy.addr("rw_db").await, "x").await;
    assert!(
        refused.is_err(),
        "a new primary connection is not placed: {refused:?}"
    );

    // The authority moves to a: routed at once (the watch, not a poll).
    keys.put("leader", "A").await;
    proxy.wait_route("rw_db", "a agreed", |n| n == ["a"]).await;
    assert_eq!(authority(&proxy, "db").gate, Some("agrees"));
    assert_eq!(
        metric_value(
            &proxy.metrics(),
            "rolegate_authority_agrees{cluster=\"db\"}"
        ),
        Some(1.0)
    );
    let port = db::connect_and_write(Engine::Pg, proxy.addr("rw_db").await, "y")
        .await
        .expect("write through rolegate once both agree");
    assert_eq!(port, Engine::Pg.addr('A').port());

    // A member no backend stands for: not routed, a clear error.
    keys.put("leader", "pg-nobody").await;
    proxy
        .wait_route("rw_db", "unknown member held", |n| n.is_empty())
        .await;
    let s = authority(&proxy, "db");
    assert_eq!(s.gate, Some("unknown_member"));
    let error = s.last_error.unwrap_or_default();
    assert!(
        error.contains("pg-nobody") && error.contains("patroni_member"),
        "{error}"
    );
    assert!(events(&proxy, "db", "unknown_member") >= 1.0);

    // No leader key: no one.
    keys.delete("leader").await;
    wait_authority(&proxy, "db", "no leader", |s| s.gate == Some("no_leader")).await;
    assert!(proxy
        .app
        .router()
        .load()
        .route(&"rw_db".into())
        .unwrap()
        .candidates
        .is_empty());

    // A switchover announced while a leads: held until it is cleared.
    keys.put("leader", "A").await;
    proxy
        .wait_route("rw_db", "a agreed again", |n| n == ["a"])
        .await;
    keys.put("failover", r#"{"leader":"A","member":"B"}"#).await;
    proxy
        .wait_route("rw_db", "held by the failover key", |n| n.is_empty())
        .await;
    assert!(authority(&proxy, "db").hold);
    assert!(events(&proxy, "db", "hold_started") >= 1.0);
    keys.put("failover", "{}").await; // Patroni's "done"
    proxy.wait_route("rw_db", "released", |n| n == ["a"]).await;
    assert!(!authority(&proxy, "db").hold);
    assert!(events(&proxy, "db", "hold_cleared") >= 1.0);
    proxy.stop().await;
    keys.cleanup().await;
}

/// An authority at a closed port: `trust_checks` routes by the checks alone, `fail_closed`
/// holds primary connections (queue, then refuse) and keeps the replica route; both report
/// the authority unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_authority_follows_on_authority_lost() {
    let Some(_) = require::lab(&[Engine::Pg]) else {
        return;
    };
    let _lock = lab::lock_read_only();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let auth = authority_yaml(&[format!("http://{closed}")], "/service", "gone");
    let (a, b) = (Engine::Pg.addr('A'), Engine::Pg.addr('B'));
    let yaml = config_yaml(&[
        ClusterYaml {
            name: "trust",
            a,
            b,
            extra: auth.clone(),
            queue: "200ms",
        },
        ClusterYaml {
            name: "closed",
            a,
            b,
            extra: format!("{auth}\n    on_authority_lost: fail_closed"),
            queue: "200ms",
        },
    ]);
    let proxy = Proxy::start(&yaml).await;
    for cluster in ["trust", "closed"] {
        wait_authority(&proxy, cluster, "unreachable reported", |s| {
            !s.reachable
                && s.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("unreachable"))
        })
        .await;
    }
    proxy
        .wait_route("rw_trust", "trust_checks routes a", |n| n == ["a"])
        .await;
    assert_eq!(authority(&proxy, "trust").gate, Some("trust_checks"));
    let port = db::connect_and_write(Engine::Pg, proxy.addr("rw_trust").await, "t")
        .await
        .expect("trust_checks: writes go through");
    assert_eq!(port, a.port());

    proxy.wait_candidates("ro_closed", 1).await;
    assert_eq!(authority(&proxy, "closed").gate, Some("fail_closed"));
    let table = proxy.app.router().load();
    let rw = table.route(&"rw_closed".into()).expect("route");
    assert!(
        rw.candidates.is_empty(),
        "fail_closed: the primary is not routed"
    );
    assert_eq!(rw.unavailable, Some(rolegate::routing::Unavailable::Held));
    let refused = db::connect_and_write(Engine::Pg, proxy.addr("rw_closed").await, "f").await;
    assert!(
        refused.is_err(),
        "fail_closed: queued, then refused: {refused:?}"
    );
    let mut replica = db::open(Engine::Pg, proxy.addr("ro_closed").await)
        .await
        .expect("fail_closed keeps the replica route");
    assert_eq!(replica.server_port().await.unwrap(), b.port());
    let up = "rolegate_authority_up{cluster=\"closed\",kind=\"patroni\"}";
    assert_eq!(metric_value(&proxy.metrics(), up), Some(0.0));
    proxy.stop().await;
}
