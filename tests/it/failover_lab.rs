//! Role-aware routing against the real replicated servers of the lab (`loadtest/lab.sh`):
//! PostgreSQL streaming replication, MariaDB GTID replication, Redis replicaof.
//!
//! Every test takes the lab lock, so scenarios never overlap, and puts the lab back to its
//! canonical topology (A primary, B replica) when it is done.

use crate::support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::config::{Cluster, ConfigBuilder, Listener};
use support::lab::{self, wall, Engine};
use support::writer::Writer;
use support::{db, metric_value, Proxy};

/// Clusters of the lab's pairs with rolegate's default check settings ([`Cluster::lab`]), a
/// primary listener `rw` and a replica listener `ro`.
fn proxy_yaml(engine: Engine) -> String {
    ConfigBuilder::new()
        .cluster(Cluster::lab("db", engine))
        .listener(Listener::new("rw", "db").role("primary"))
        .listener(Listener::new("ro", "db").role("replica"))
        .yaml()
}

/// Starts a proxy in front of `engine` and waits for A as primary and B as replica.
async fn proxy_for(engine: Engine) -> Proxy {
    let proxy = Proxy::start(&proxy_yaml(engine)).await;
    proxy.wait_route("rw", "a is primary", |n| n == ["a"]).await;
    proxy.wait_route("ro", "b is replica", |n| n == ["b"]).await;
    proxy
}

/// The 20 ms new-connection writer, bounded to 2,000 attempts; waits of up to 20 s.
fn writer(engine: Engine, rw: std::net::SocketAddr) -> Writer {
    Writer::options(engine, rw)
        .max_attempts(2000)
        .wait(Duration::from_secs(20))
        .spawn()
}

/// `(wall-clock time, candidate names)` for every stored table.
type RouteLog = Arc<Mutex<Vec<(f64, Vec<String>)>>>;

/// Records, with wall-clock times, every change of the `rw` route's candidates.
fn spawn_route_watch(proxy: &Proxy) -> (tokio::task::JoinHandle<()>, RouteLog) {
    let router = proxy.app.router().clone();
    let log = Arc::new(Mutex::new(Vec::new()));
    let out = log.clone();
    let name = rolegate::config::ListenerName::from("rw");
    let handle = tokio::spawn(async move {
        let mut changes = router.subscribe();
        loop {
            let names = support::route_names(&router, &name);
            out.lock().unwrap().push((wall(), names));
            if changes.changed().await.is_err() {
                return;
            }
        }
    });
    (handle, log)
}

async fn switchover(engine: Engine) {
    let _lock = lab::lock();
    let _reset = lab::ResetOnPanic(engine);
    let proxy = proxy_for(engine).await;
    let rw = proxy.addr("rw").await;
    let (a_port, b_port) = (engine.addr('A').port(), engine.addr('B').port());
    let mut long = db::open(engine, rw).await.expect("long session");
    assert_eq!(long.server_port().await, Ok(a_port));
    let (watch, routes) = spawn_route_watch(&proxy);
    let writer = writer(engine, rw);
    writer
        .wait_for_writes(10, a_port, 0.0, "10 writes on A before the switchover")
        .await;
    let ts = lab::scenario("switchover", engine).await;
    let start = ts.get("start").expect("switchover start timestamp");
    let promoted = ts.get("promoted").expect("promoted timestamp");
    proxy.wait_route("rw", "b is primary", |n| n == ["b"]).await;
    writer
        .wait_for_writes(10, b_port, wall(), "10 more writes on the new primary")
        .await;
    let attempts = writer.finish().await;
    watch.abort();

    // When the primary route stopped naming A (rolegate's first read-only/down observation).
    let routes = routes.lock().unwrap().clone();
    let a_off = routes
        .iter()
        .find(|(t, names)| *t >= start - 0.001 && !names.contains(&"a".to_string()))
        .map(|(t, _)| *t)
        .expect("route left a");
    let late_on_a: Vec<_> = attempts
        .iter()
        .filter(|a| a.started > a_off && a.result == Ok(a_port))
        .collect();
    assert!(late_on_a.is_empty(), "{engine:?}: writes landed on the demoted node after rolegate saw it demoted: {late_on_a:?}");
    let first_b = attempts
        .iter()
        .filter(|a| a.started >= start && a.result == Ok(b_port))
        .map(|a| a.finished)
        .fold(f64::INFINITY, f64::min);
    assert!(
        first_b.is_finite(),
        "{engine:?}: no write reached the new primary: {attempts:?}"
    );
    let errors = attempts
        .iter()
        .filter(|a| a.started >= start - 0.5 && a.finished <= first_b && a.result.is_err())
        .count();
    let window: Vec<_> = attempts
        .iter()
        .filter(|a| a.started >= start - 0.5 && a.finished <= first_b)
        .collect();
    eprintln!(
        "FIGURES {engine:?} switchover: first write on new primary {:.0} ms after the switchover started, {:.0} ms after promotion; {} client errors among {} attempts in that window",
        (first_b - start) * 1e3,
        (first_b - promoted) * 1e3,
        errors,
        window.len(),
    );
    // interval (250ms) x rise (2) + one interval, plus the client's own connect+write time and
    // a noisy machine's slack.
    assert!(
        first_b - promoted < 0.75 + 2.0,
        "{engine:?}: new primary used {:.2}s after promotion",
        first_b - promoted
    );
    // The session open on the old primary was closed (by rolegate, or for PostgreSQL by the
    // server's own shutdown during the switchover).
    let after = tokio::time::timeout(Duration::from_secs(5), long.server_port()).await;
    assert!(
        !matches!(after, Ok(Ok(p)) if p == a_port),
        "{engine:?}: session on the demoted node is still open"
    );
    if engine != Engine::Pg {
        let m = proxy.metrics();
        let fenced = metric_value(
            &m,
            "rolegate_sessions_fenced_total{backend=\"a\",cluster=\"db\"}",
        )
        .unwrap_or(0.0);
        assert!(
            fenced >= 1.0,
            "{engine:?}: rolegate closed the old primary's sessions\n{m}"
        );
    }
    proxy.stop().await;
    lab::reset(engine).await;
}

async fn routes_by_role(engine: Engine) {
    let _lock = lab::lock();
    let _reset = lab::ResetOnPanic(engine);
    let proxy = proxy_for(engine).await;
    let mut w = db::open(engine, proxy.addr("rw").await).await.unwrap();
    assert_eq!(w.server_port().await, Ok(engine.addr('A').port()));
    assert_eq!(w.write("routes").await, Ok(engine.addr('A').port()));
    let mut r = db::open(engine, proxy.addr("ro").await).await.unwrap();
    assert_eq!(r.server_port().await, Ok(engine.addr('B').port()));
    let status = proxy.backend_status("db", "b");
    assert_eq!((status.health, status.role), ("up", "replica"));
    assert!(
        status.replication_lag_seconds.is_some_and(|l| l < 10.0),
        "{status:?}"
    );
    proxy.stop().await;
}

async fn kill_primary(engine: Engine) {
    let _lock = lab::lock();
    let _reset = lab::ResetOnPanic(engine);
    let proxy = proxy_for(engine).await;
    let rw = proxy.addr("rw").await;
    let ts = lab::scenario("kill", engine).await;
    assert!(ts.get("promoted").is_some());
    proxy.wait_route("rw", "b is primary", |n| n == ["b"]).await;
    // The route can move before A is down: a silent primary stops vetoing a confirmed one at
    // its first failed check (hold on suspicion), while `down` takes `fall` failed checks.
    support::eventually(Duration::from_secs(10), "a marked down", || {
        let a = proxy.backend_status("db", "a");
        async move { a.health == "down" }
    })
    .await;
    assert_eq!(
        db::connect_and_write(engine, rw, "after-kill").await,
        Ok(engine.addr('B').port())
    );
    proxy.stop().await;
    lab::reset(engine).await;
}

async fn hang_and_resume(engine: Engine) {
    let _lock = lab::lock();
    let _reset = lab::ResetOnPanic(engine);
    let proxy = proxy_for(engine).await;
    let rw = proxy.addr("rw").await;
    lab::scenario("hang", engine).await;
    proxy
        .wait_route("rw", "frozen primary taken out", |n| n.is_empty())
        .await;
    let a = proxy.backend_status("db", "a");
    assert_eq!(a.last_error_reason, Some("timeout"), "{a:?}");
    lab::scenario("resume", engine).await;
    // No other node was promoted: the same primary comes back.
    proxy.wait_route("rw", "primary back", |n| n == ["a"]).await;
    assert_eq!(
        db::connect_and_write(engine, rw, "after-resume").await,
        Ok(engine.addr('A').port())
    );
    proxy.stop().await;
    lab::reset(engine).await;
}

async fn frozen_primary_replaced_then_woken_is_stale(engine: Engine) {
    let _lock = lab::lock();
    let _reset = lab::ResetOnPanic(engine);
    let proxy = proxy_for(engine).await;
    let rw = proxy.addr("rw").await;
    lab::scenario("hang", engine).await;
    proxy
        .wait_route("rw", "frozen primary taken out", |n| n.is_empty())
        .await;
    lab::scenario("promote", engine).await;
    proxy.wait_route("rw", "b promoted", |n| n == ["b"]).await;
    let writer = writer(engine, rw);
    lab::scenario("resume", engine).await;
    // The old primary answers again, still claiming primary: stale, never routed.
    support::eventually(Duration::from_secs(20), "a back up and stale", || {
        let a = proxy.backend_status("db", "a");
        async move { a.health == "up" && a.stale }
    })
    .await;
    // Keep writing while the zombie is up: 25 more writes (0.5 s at 20 ms) must all land on B.
    let b_port = engine.addr('B').port();
    writer
        .wait_for_writes(25, b_port, wall(), "25 writes while the zombie is up")
        .await;
    let attempts = writer.finish().await;
    let on_a = attempts
        .iter()
        .filter(|a| a.result == Ok(engine.addr('A').port()))
        .count();
    let on_b = attempts
        .iter()
        .filter(|a| a.result == Ok(engine.addr('B').port()))
        .count();
    assert_eq!(on_a, 0, "{engine:?}: writes reached the stale primary");
    assert!(
        on_b > 10,
        "{engine:?}: writes kept flowing to the confirmed primary ({on_b})"
    );
    let m = proxy.metrics();
    assert_eq!(
        metric_value(&m, "rolegate_split_brain{cluster=\"db\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric_value(&m, "rolegate_stale_primaries{cluster=\"db\"}"),
        Some(1.0)
    );
    proxy.stop().await;
    lab::reset(engine).await;
}

async fn split_brain_policies(engine: Engine) {
    let _lock = lab::lock();
    let _reset = lab::ResetOnPanic(engine);
    let mut config = ConfigBuilder::new()
        .cluster(Cluster::lab("fc", engine))
        .cluster(Cluster::lab("kc", engine).set("split_brain", "keep_current"))
        .listener(Listener::new("fc", "fc").set("queue_timeout", "0s"))
        .listener(Listener::new("kc", "kc"));
    if engine == Engine::Pg {
        config = config
            .cluster(Cluster::lab("ht", engine).set("split_brain", "highest_timeline"))
            .listener(Listener::new("ht", "ht"));
    }
    let proxy = Proxy::start(&config.yaml()).await;
    for l in ["fc", "kc"] {
        proxy.wait_route(l, "a primary", |n| n == ["a"]).await;
    }
    let mut on_fc = db::open(engine, proxy.addr("fc").await).await.unwrap();
    assert_eq!(on_fc.server_port().await, Ok(engine.addr('A').port()));
    lab::scenario("promote", engine).await;
    // fail_closed: no one gets new write connections, and the session on A is closed.
    proxy.wait_route("fc", "refused", |n| n.is_empty()).await;
    let err = db::connect_and_write(engine, proxy.addr("fc").await, "sb").await;
    assert!(err.is_err(), "fail_closed refuses new connections: {err:?}");
    let after = tokio::time::timeout(Duration::from_secs(5), on_fc.server_port()).await;
    assert!(
        !matches!(after, Ok(Ok(_))),
        "fail_closed closed the open session"
    );
    // keep_current: the primary that was serving keeps the route.
    proxy.wait_route("kc", "still a", |n| n == ["a"]).await;
    assert_eq!(
        db::connect_and_write(engine, proxy.addr("kc").await, "sb").await,
        Ok(engine.addr('A').port())
    );
    if engine == Engine::Pg {
        // highest_timeline: the promoted standby is on timeline 2.
        proxy
            .wait_route("ht", "b on the newer timeline", |n| n == ["b"])
            .await;
    }
    let m = proxy.metrics();
    assert_eq!(
        metric_value(&m, "rolegate_split_brain{cluster=\"fc\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric_value(&m, "rolegate_primary_candidates{cluster=\"fc\"}"),
        Some(2.0)
    );
    proxy.stop().await;
    lab::reset(engine).await;
}

per_engine!(routes_by_role);
per_engine!(switchover);
per_engine!(kill_primary);
per_engine!(hang_and_resume);
per_engine!(frozen_primary_replaced_then_woken_is_stale);
per_engine!(split_brain_policies);
