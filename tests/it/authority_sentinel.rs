//! Redis Sentinel as a cluster's authority, against the lab's three real Sentinels (16479–
//! 16481, master `labmaster` over the redis pair 16379/16380; `bash loadtest/lab.sh up
//! sentinel`): a `SENTINEL FAILOVER` under a write loop, Sentinels and `ROLE` disagreeing, a
//! quorum naming no backend, Sentinels out of reach under each `on_authority_lost`.
//!
//! Tests that move roles or add master names hold the lab lock and put the lab back
//! (`lab.sh reset redis` re-points the Sentinels at A too), also when they fail.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;

use crate::support;
use support::lab::{self, wall, Engine};
use support::writer::Writer;
use support::{db, require, Proxy};

fn master_name() -> String {
    lab::env().engines["sentinel"].settings["master_name"]
        .as_str()
        .expect("the lab's sentinel master_name")
        .to_string()
}

/// The lab's Sentinels, as `host:port` strings.
fn sentinels() -> Vec<SocketAddr> {
    lab::addresses("sentinel")
}

/// The redis lab and its Sentinels are up (else SKIPPED, or a failure in the full run).
fn needs() -> Option<require::Met> {
    let _redis = require::lab(&[Engine::Redis])?;
    require::lab_engine("sentinel")
}

/// A rolegate over the lab's redis pair whose authority is the Sentinels at `addresses`
/// watching `master`; `extra` goes into the cluster (e.g. `on_authority_lost`). The authority
/// polls every 30 s: within a test, only a pushed event makes it ask again.
fn proxy_yaml(addresses: &[SocketAddr], master: &str, extra: &str, queue: &str) -> String {
    let list: Vec<String> = addresses.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "admin: {{ listen: 127.0.0.1:0 }}
clusters:
  - name: db
    protocol: redis
    check: {{ password: \"{pw}\" }}
    backends:
      - {{ name: a, address: \"{a}\" }}
      - {{ name: b, address: \"{b}\" }}
    authority:
      sentinel: {{ addresses: [{list}], master_name: {master}, interval: 30s, timeout: 500ms }}
{extra}listeners:
  - {{ name: rw, bind: \"127.0.0.1:0\", cluster: db, role: primary, queue_timeout: {queue} }}
",
        pw = lab::monitor_password(),
        a = Engine::Redis.addr('A'),
        b = Engine::Redis.addr('B'),
        list = list.join(", "),
    )
}

/// `redis-cli -h IP -p PORT ARGS...` (the lab's redis-tools), its trimmed stdout.
fn cli(addr: SocketAddr, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(args)
        .output()
        .expect("run redis-cli (Debian package redis-tools)");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A second master name monitored by every lab Sentinel for the test's duration, removed when
/// dropped (also on a failure).
struct TempMaster {
    name: String,
}

impl TempMaster {
    /// `SENTINEL MONITOR name IP PORT 2` on every Sentinel. Its down-after is long, so no
    /// Sentinel tries a failover of it while the test runs.
    fn monitor(name: &str, addr: SocketAddr) -> TempMaster {
        let m = TempMaster { name: name.into() };
        for s in sentinels() {
            let _ = cli(s, &["SENTINEL", "REMOVE", name]);
            let port = addr.port().to_string();
            let ip = addr.ip().to_string();
            assert_eq!(
                cli(s, &["SENTINEL", "MONITOR", name, &ip, &port, "2"]),
                "OK"
            );
            assert_eq!(
                cli(
                    s,
                    &[
                        "SENTINEL",
                        "SET",
                        name,
                        "down-after-milliseconds",
                        "600000",
                        "auth-pass",
                        &lab::monitor_password(),
                    ]
                ),
                "OK"
            );
        }
        m
    }
}

impl Drop for TempMaster {
    fn drop(&mut self) {
        for s in sentinels() {
            let _ = std::process::Command::new("redis-cli")
                .args(["-h", &s.ip().to_string(), "-p", &s.port().to_string()])
                .args(["SENTINEL", "REMOVE", &self.name])
                .output();
        }
    }
}

/// The authority's error of cluster `db` in the status snapshot, if any.
fn authority_error(proxy: &Proxy) -> Option<String> {
    let s = proxy.app.supervisor().status.load_full();
    let c = s.clusters.iter().find(|c| c.name == "db")?;
    c.authority.as_ref()?.last_error.clone()
}

/// One new connection and its write, through rolegate.
#[derive(Debug, Clone)]
struct Attempt {
    started: f64,
    result: Result<u16, String>,
}

/// One session opened on the primary route before the failover, writing every 10 ms until the
/// proxy closes it (or 30 s): the long-lived client whose writes on a demoted master are lost.
struct LongSession {
    stop: Arc<AtomicBool>,
    writes: Arc<Mutex<Vec<Attempt>>>,
    task: tokio::task::JoinHandle<()>,
}

impl LongSession {
    async fn open(addr: SocketAddr) -> LongSession {
        let mut session = db::open(Engine::Redis, addr)
            .await
            .expect("a long-lived session on rw");
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(Mutex::new(Vec::new()));
        let (halt, log) = (stop.clone(), writes.clone());
        let task = tokio::spawn(async move {
            for i in 0..3000 {
                if halt.load(Ordering::Relaxed) {
                    break;
                }
                let started = wall();
                let result = session.write(&format!("long-{i}")).await;
                let closed = result.is_err();
                log.lock().unwrap().push(Attempt { started, result });
                if closed {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        LongSession { stop, writes, task }
    }

    /// When its first write failed (the proxy closed it), if it did.
    fn closed_at(&self) -> Option<f64> {
        let w = self.writes.lock().unwrap();
        w.iter().find(|a| a.result.is_err()).map(|a| a.started)
    }

    async fn finish(self) -> Vec<Attempt> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let v = self.writes.lock().unwrap().clone();
        v
    }
}

/// Wall-clock times of the events one Sentinel publishes (the test's own subscription: the
/// figures, and the order of rolegate's route change against Sentinel's steps).
async fn spawn_event_clock(
    sentinel: SocketAddr,
) -> (tokio::task::JoinHandle<()>, Arc<Mutex<Vec<(String, f64)>>>) {
    let client = redis::Client::open(format!("redis://{sentinel}/")).expect("sentinel url");
    let mut pubsub = client
        .get_async_pubsub()
        .await
        .expect("subscribe to a sentinel");
    pubsub.psubscribe("*").await.expect("PSUBSCRIBE");
    let log = Arc::new(Mutex::new(Vec::new()));
    let out = log.clone();
    let task = tokio::spawn(async move {
        let mut messages = pubsub.into_on_message();
        while let Some(m) = messages.next().await {
            out.lock()
                .unwrap()
                .push((m.get_channel_name().to_string(), wall()));
        }
    });
    (task, log)
}

/// What rolegate thinks over time (authority leader, hold, gate, the rw route), each change
/// with its time in ms after `t0`: the test's diagnostics.
fn spawn_view_log(proxy: &Proxy, t0: f64) -> Arc<Mutex<Vec<String>>> {
    let (app, log) = (proxy.app.clone(), Arc::new(Mutex::new(Vec::new())));
    let out = log.clone();
    tokio::spawn(async move {
        let mut last = String::new();
        for _ in 0..3000 {
            let s = app.supervisor().status.load_full();
            let a = s
                .clusters
                .iter()
                .find(|c| c.name == "db")
                .and_then(|c| c.authority.clone());
            let route = support::route_names(app.router(), &"rw".into());
            let view = format!(
                "leader={:?} hold={:?} gate={:?} err={:?} route={route:?}",
                a.as_ref().and_then(|a| a.leader.clone()),
                a.as_ref().map(|a| a.hold),
                a.as_ref().and_then(|a| a.gate),
                a.as_ref().and_then(|a| a.last_error.clone()),
            );
            if view != last {
                out.lock()
                    .unwrap()
                    .push(format!("{:+.0} ms {view}", (wall() - t0) * 1e3));
                last = view;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    log
}

/// `SENTINEL FAILOVER` under a write loop: the Sentinels' push makes rolegate ask the quorum
/// and re-check at once (its own poll is 30 s away), new connections are held while the
/// failover runs and go to the new master; none fails, none writes on the old master.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentinel_failover_moves_the_route_on_the_push() {
    let Some(_) = needs() else { return };
    let _lock = lab::lock();
    let _reset = lab::ResetOnPanic(Engine::Redis);
    let (a, b) = (Engine::Redis.addr('A'), Engine::Redis.addr('B'));
    let s = sentinels();
    let proxy = Proxy::start(&proxy_yaml(&s, &master_name(), "", "20s")).await;
    proxy.wait_route("rw", "a is primary", |n| n == ["a"]).await;
    let rw = proxy.addr("rw").await;
    let mut clocks = Vec::new();
    for &sentinel in &s {
        clocks.push(spawn_event_clock(sentinel).await);
    }
    let writer = Writer::options(Engine::Redis, rw)
        .prefix("sentinel")
        .spawn();
    writer
        .wait_for_writes(10, a.port(), 0.0, "10 writes on A")
        .await;
    let long = LongSession::open(rw).await;
    support::eventually(
        Duration::from_secs(10),
        "the long session writes on A",
        || {
            let ok = long
                .writes
                .lock()
                .unwrap()
                .iter()
                .any(|w| w.result == Ok(a.port()));
            async move { ok }
        },
    )
    .await;

    let ordered = wall();
    let views = spawn_view_log(&proxy, ordered);
    assert_eq!(cli(s[0], &["SENTINEL", "FAILOVER", &master_name()]), "OK");
    proxy.wait_route("rw", "b routed", |n| n == ["b"]).await;
    let routed = wall();
    writer
        .wait_for_writes(10, b.port(), routed, "10 writes on B")
        .await;
    let attempts = writer.finish().await;
    // The old master still answers master and acknowledges writes: its sessions are closed
    // when B is routed (on_demote), not when Sentinel converts it ~10 s later.
    support::eventually(
        Duration::from_secs(30),
        "the long session on A closed",
        || {
            let closed = long.closed_at().is_some();
            async move { closed }
        },
    )
    .await;
    let long_closed = long.closed_at().expect("closed");
    let long_writes = long.finish().await;

    // The Sentinels have not all named B yet when rolegate routes to it; wait so the lab's
    // reset below starts from a settled state.
    support::eventually(Duration::from_secs(30), "every sentinel names B", || {
        let all = s.iter().all(|&x| {
            cli(x, &["SENTINEL", "get-master-addr-by-name", &master_name()])
                .ends_with(&b.port().to_string())
        });
        async move { all }
    })
    .await;
    // And until Sentinel turned the old master into B's replica (it waits ~10 s for that):
    // a conversion still pending when the lab is reset would undo the reset.
    support::eventually(Duration::from_secs(40), "A converted to a replica", || {
        let ok = proxy
            .try_backend_status("db", "a")
            .is_some_and(|s| s.role == "replica");
        async move { ok }
    })
    .await;
    for (clock, _) in &clocks {
        clock.abort();
    }
    // Each channel's earliest publication by any Sentinel.
    let mut seen: Vec<(String, f64)> = clocks
        .iter()
        .flat_map(|(_, log)| log.lock().unwrap().clone())
        .collect();
    seen.sort_by(|x, y| x.1.total_cmp(&y.1));
    let events = Arc::new(Mutex::new(seen));

    let failed: Vec<_> = attempts.iter().filter(|x| x.result.is_err()).collect();
    let timeline: Vec<String> = events
        .lock()
        .unwrap()
        .iter()
        .map(|(c, t)| format!("{c} {:+.0} ms", (t - ordered) * 1e3))
        .collect();
    assert!(
        failed.is_empty(),
        "{} new connections failed, started {:+.0}..{:+.0} ms after SENTINEL FAILOVER (routed {:+.0} ms); events: {timeline:?}; rolegate: {:?}",
        failed.len(),
        (failed[0].started - ordered) * 1e3,
        (failed[failed.len() - 1].started - ordered) * 1e3,
        (routed - ordered) * 1e3,
        views.lock().unwrap(),
    );
    // A write acknowledged by A after B was routed would be lost when A resyncs from B.
    let late_on_a: Vec<_> = attempts
        .iter()
        .filter(|x| x.started >= routed && x.result == Ok(a.port()))
        .collect();
    assert!(
        late_on_a.is_empty(),
        "writes on the old master: {late_on_a:?}"
    );
    let late_long: Vec<_> = long_writes
        .iter()
        .filter(|x| x.started >= routed && x.result == Ok(a.port()))
        .collect();
    assert!(
        late_long.is_empty(),
        "the long session wrote on the old master after B was routed: {late_long:?}"
    );
    assert_eq!(authority_error(&proxy), None);
    let at = |channel: &str| {
        events
            .lock()
            .unwrap()
            .iter()
            .find(|(c, _)| c == channel)
            .map(|(_, t)| *t)
    };
    let (tried, switched) = (at("+try-failover"), at("+switch-master"));
    // The order of the steps, not their times: B is routed once it is promoted (its ROLE says
    // master and the Sentinel leader named it), before the quorum learned the switch; the
    // session on A is closed then, before A is converted.
    let switched_at = switched.expect("a Sentinel published +switch-master");
    assert!(
        routed < switched_at,
        "B routed {:+.0} ms after SENTINEL FAILOVER, not before +switch-master ({:+.0} ms); events: {timeline:?}; rolegate: {:?}",
        (routed - ordered) * 1e3,
        (switched_at - ordered) * 1e3,
        views.lock().unwrap(),
    );
    let converted = at("+convert-to-slave").expect("a Sentinel published +convert-to-slave");
    assert!(
        long_closed < converted,
        "the long session on A ended {:+.0} ms after SENTINEL FAILOVER, not before A's conversion ({:+.0} ms)",
        (long_closed - ordered) * 1e3,
        (converted - ordered) * 1e3,
    );
    eprintln!(
        "FIGURES sentinel failover: routed {} ms after +promoted-slave, {:.0} ms before +switch-master, {} ms after SENTINEL FAILOVER; {} new connections, 0 failed",
        at("+promoted-slave").map_or("?".into(), |t| format!("{:.0}", (routed - t) * 1e3)),
        (switched_at - routed) * 1e3,
        ((routed - ordered) * 1e3).round(),
        attempts.len(),
    );
    let _ = tried;
    eprintln!(
        "events: {timeline:?}\nrolegate: {:?}",
        views.lock().unwrap()
    );
    proxy.stop().await;
    lab::reset(Engine::Redis).await;
}

/// The Sentinels name B (a second master name monitoring the replica) while B's `ROLE` says
/// replica and A's says master: the AND-gate routes no one, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_naming_a_replica_route_no_one() {
    let Some(_) = needs() else { return };
    let _lock = lab::lock();
    let _reset = lab::ResetOnPanic(Engine::Redis);
    let b = Engine::Redis.addr('B');
    let _temp = TempMaster::monitor("rolegate-test-replica", b);
    let proxy = Proxy::start(&proxy_yaml(
        &sentinels(),
        "rolegate-test-replica",
        "",
        "200ms",
    ))
    .await;
    let rw = proxy.addr("rw").await;
    support::eventually(
        Duration::from_secs(20),
        "A checked primary, B replica",
        || {
            let (sa, sb) = (
                proxy.try_backend_status("db", "a"),
                proxy.try_backend_status("db", "b"),
            );
            let ok =
                sa.is_some_and(|s| s.role == "primary") && sb.is_some_and(|s| s.role == "replica");
            async move { ok }
        },
    )
    .await;
    support::eventually(Duration::from_secs(20), "the authority names b", || {
        let s = proxy.app.supervisor().status.load_full();
        let ok = s
            .clusters
            .iter()
            .find(|c| c.name == "db")
            .and_then(|c| c.authority.as_ref())
            .is_some_and(|a| a.leader.as_deref() == Some("b"));
        async move { ok }
    })
    .await;
    let names = support::route_names(proxy.app.router(), &"rw".into());
    assert!(
        names.is_empty(),
        "routed although ROLE and the quorum disagree: {names:?}"
    );
    let write = db::connect_and_write(Engine::Redis, rw, "sentinel-deny").await;
    assert!(write.is_err(), "a write went through: {write:?}");
    proxy.stop().await;
}

/// The quorum names an address that is no backend: not routed (A is primary by its own
/// check), and the status says which address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_naming_no_backend_is_not_routed() {
    let Some(_) = needs() else { return };
    let _lock = lab::lock();
    // An address nothing listens on: Sentinel accepts it and reports it as the master.
    let nowhere = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let _temp = TempMaster::monitor("rolegate-test-nowhere", nowhere);
    let proxy = Proxy::start(&proxy_yaml(
        &sentinels(),
        "rolegate-test-nowhere",
        "",
        "200ms",
    ))
    .await;
    support::eventually(
        Duration::from_secs(20),
        "the authority's error names the address",
        || {
            let e = authority_error(&proxy);
            let ok = e
                .as_deref()
                .is_some_and(|e| e.contains(&nowhere.to_string()));
            async move { ok }
        },
    )
    .await;
    support::eventually(Duration::from_secs(20), "A checked primary", || {
        let ok = proxy
            .try_backend_status("db", "a")
            .is_some_and(|s| s.role == "primary");
        async move { ok }
    })
    .await;
    let names = support::route_names(proxy.app.router(), &"rw".into());
    assert!(
        names.is_empty(),
        "routed a backend the quorum does not name: {names:?}"
    );
    proxy.stop().await;
}

/// Sentinels that refuse connections or never answer: `trust_checks` routes A by its own
/// checks, `fail_closed` routes no primary; both report the authority unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_sentinels_follow_on_authority_lost() {
    let Some(_) = require::lab(&[Engine::Redis]) else {
        return;
    };
    let _lock = lab::lock_read_only();
    // Two refused ports and one that accepts and never answers.
    let refused: Vec<SocketAddr> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
        })
        .collect();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addresses = [refused[0], refused[1], silent.local_addr().unwrap()];
    for (policy, routed) in [("trust_checks", true), ("fail_closed", false)] {
        let extra = format!("    on_authority_lost: {policy}\n");
        let proxy = Proxy::start(&proxy_yaml(&addresses, &master_name(), &extra, "200ms")).await;
        support::eventually(
            Duration::from_secs(20),
            "the authority reported unreachable",
            || {
                let ok = authority_error(&proxy).is_some_and(|e| e.contains("unreachable"));
                async move { ok }
            },
        )
        .await;
        support::eventually(Duration::from_secs(20), "A checked primary", || {
            let ok = proxy
                .try_backend_status("db", "a")
                .is_some_and(|s| s.role == "primary");
            async move { ok }
        })
        .await;
        if routed {
            proxy
                .wait_route("rw", "a routed by the checks", |n| n == ["a"])
                .await;
        } else {
            let names = support::route_names(proxy.app.router(), &"rw".into());
            assert!(
                names.is_empty(),
                "{policy}: routed without the authority: {names:?}"
            );
        }
        let e = authority_error(&proxy).unwrap_or_default();
        assert!(e.contains("0 of 3 sentinels answered"), "{policy}: {e}");
        proxy.stop().await;
    }
    drop(silent);
}
