//! Zero-error failover against the real servers of the lab (`loadtest/lab.sh`): a primary that
//! freezes (SIGSTOP) and is replaced, and a planned switchover under the hold API, each with a
//! client that opens a new connection and writes every 20 ms through rolegate. Plus the hold
//! API's answers to bad input, which need no lab.
//!
//! Every lab test takes the lab lock and puts the lab back (A primary, B replica) at its end,
//! also when it fails (`ResetOnPanic`).

use std::time::Duration;

use crate::support;
use support::lab::{self, wall, Engine};
use support::writer::{Attempt, Writer};
use support::{db, http, metric_value, require, Proxy};

/// rolegate's default checks; the write listener queues long enough for any hold here.
fn proxy_yaml(engine: Engine) -> String {
    let (protocol, database) = match engine {
        Engine::Pg => ("postgres", ", database: postgres"),
        Engine::Mysql => ("mysql", ""),
        Engine::Redis => ("redis", ""),
    };
    let user = match engine {
        Engine::Redis => "",
        _ => "user: rolegate_monitor, ",
    };
    format!(
        "admin: {{ listen: 127.0.0.1:0 }}
clusters:
  - name: db
    protocol: {protocol}
    check: {{ {user}password: \"{pw}\"{database} }}
    backends:
      - {{ name: a, address: \"{a}\" }}
      - {{ name: b, address: \"{b}\" }}
listeners:
  - {{ name: rw, bind: \"127.0.0.1:0\", cluster: db, role: primary, queue_timeout: 20s }}
",
        pw = lab::monitor_password(),
        a = engine.addr('A'),
        b = engine.addr('B'),
    )
}

async fn proxy_for(engine: Engine) -> Proxy {
    let proxy = Proxy::start(&proxy_yaml(engine)).await;
    proxy.wait_route("rw", "a is primary", |n| n == ["a"]).await;
    proxy
}

/// How many writes whose tag starts with `prefix` the server at `addr` holds (asked directly,
/// not through rolegate).
async fn writes_on(engine: Engine, addr: std::net::SocketAddr, prefix: &str) -> usize {
    let pattern = format!("{prefix}%");
    match engine {
        Engine::Pg => {
            let conn = format!(
                "host={} port={} user=app password={} dbname=app connect_timeout=10",
                addr.ip(),
                addr.port(),
                lab::app_password()
            );
            let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                .await
                .expect("pg connect");
            tokio::spawn(connection);
            let row = client
                .query_one(
                    "SELECT count(*) FROM writes WHERE node LIKE $1",
                    &[&pattern],
                )
                .await
                .expect("pg count");
            row.get::<_, i64>(0) as usize
        }
        Engine::Mysql => {
            use mysql_async::prelude::Queryable;
            let opts = mysql_async::OptsBuilder::default()
                .ip_or_hostname(addr.ip().to_string())
                .tcp_port(addr.port())
                .user(Some("app"))
                .pass(Some(lab::app_password()))
                .db_name(Some("app"))
                .prefer_socket(false);
            let mut c = mysql_async::Conn::new(opts).await.expect("mysql connect");
            let n: Option<u64> = c
                .exec_first("SELECT COUNT(*) FROM writes WHERE node LIKE ?", (pattern,))
                .await
                .expect("mysql count");
            let _ = c.disconnect().await;
            n.unwrap_or(0) as usize
        }
        Engine::Redis => {
            let url = format!("redis://app:{}@{}/", lab::app_password(), addr);
            let client = redis::Client::open(url).expect("redis url");
            let mut c = client
                .get_multiplexed_async_connection()
                .await
                .expect("redis connect");
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("writes:{prefix}*"))
                .query_async(&mut c)
                .await
                .expect("redis keys");
            keys.len()
        }
    }
}

/// The primary freezes (SIGSTOP), the standby is promoted while it is frozen, then the frozen
/// node wakes up still claiming primary.
async fn frozen_primary_then_promoted(engine: Engine) {
    let _lock = lab::lock();
    let _reset = lab::ResetOnPanic(engine);
    let proxy = proxy_for(engine).await;
    let rw = proxy.addr("rw").await;
    let (a, b) = (engine.addr('A'), engine.addr('B'));
    let (watch, held) = proxy.watch_held("rw");
    // A session that has received bytes: never replayed, it is closed with its backend's role.
    let mut long = db::open(engine, rw).await.expect("long session");
    assert_eq!(long.server_port().await, Ok(a.port()));
    let writer = Writer::options(engine, rw).prefix("ze").spawn();
    writer
        .wait_for_phase(10, a.port(), 0, "10 writes on A")
        .await;

    let hung = lab::scenario("hang", engine)
        .await
        .get("at")
        .expect("hang timestamp");
    // Tags of phase 1 and later are of writes started after the node was frozen.
    writer.enter_phase(1);
    // The first unanswered check makes A suspect: new connections are held, not sent to it.
    proxy
        .wait_route("rw", "frozen primary held", |n| n.is_empty())
        .await;
    support::eventually(Duration::from_secs(10), "rw held", || {
        let ok = !held.lock().unwrap().is_empty();
        async move { ok }
    })
    .await;
    let held_at = held.lock().unwrap()[0];
    let promoted = lab::scenario("promote", engine)
        .await
        .get("at")
        .expect("promote timestamp");
    // B is routed at once: A's earlier claim does not veto it while A is silent.
    proxy.wait_route("rw", "b routed", |n| n == ["b"]).await;
    let routed = wall();
    writer
        .wait_for_phase(10, b.port(), 1, "10 writes on B")
        .await;
    let after = tokio::time::timeout(Duration::from_secs(10), long.server_port()).await;
    assert!(
        matches!(after, Ok(Err(_))),
        "{engine:?}: a session that had received bytes was moved or kept: {after:?}"
    );

    writer.enter_phase(2);
    lab::scenario("resume", engine).await;
    support::eventually(Duration::from_secs(20), "a back up and stale", || {
        let a = proxy.backend_status("db", "a");
        async move { a.health == "up" && a.stale }
    })
    .await;
    writer
        .wait_for_phase(25, b.port(), 2, "25 writes on B while A is up again")
        .await;
    let run = writer.run().to_string();
    let attempts = writer.finish().await;
    watch.abort();

    let after_hang: Vec<&Attempt> = attempts.iter().filter(|x| x.started >= hung).collect();
    let on_a: Vec<_> = after_hang
        .iter()
        .filter(|x| x.result == Ok(a.port()))
        .collect();
    assert!(
        on_a.is_empty(),
        "{engine:?}: writes acknowledged by the frozen node: {on_a:?}"
    );
    // Asked directly: the woken node holds none of the writes started after it froze.
    let stored = writes_on(engine, a, &format!("{run}-1-")).await
        + writes_on(engine, a, &format!("{run}-2-")).await;
    assert_eq!(stored, 0, "{engine:?}: writes reached the frozen node");
    // No new connection failed: those held after the first unanswered check waited for B,
    // and those placed on A before it were rescued to B (they had received nothing).
    let failed: Vec<_> = after_hang.iter().filter(|x| x.result.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{engine:?}: new connections failed: {failed:?}"
    );
    let m = proxy.metrics();
    let rescued = metric_value(&m, "rolegate_sessions_rescued_total{listener=\"rw\"}");
    assert!(
        rescued.is_some_and(|n| n >= 1.0),
        "{engine:?}: sessions placed on the frozen node were rescued\n{m}"
    );
    eprintln!(
        "FIGURES {engine:?} hang+promote: held {:.0} ms after the freeze; routed {:.0} ms after promotion; 0 failed among {} new connections; {} rescued",
        (held_at - hung) * 1e3,
        (routed - promoted) * 1e3,
        after_hang.len(),
        rescued.unwrap_or(0.0),
    );
    assert_eq!(
        metric_value(&m, "rolegate_stale_primaries{cluster=\"db\"}"),
        Some(1.0),
        "{m}"
    );
    proxy.stop().await;
    lab::reset(engine).await;
}

/// The plain-shell hook recipe (config/hooks/hold-switchover.sh) around the lab's switchover,
/// with the real `rolegate hold` client.
fn hook_switchover(admin: std::net::SocketAddr, engine: Engine) -> std::process::Output {
    let root = env!("CARGO_MANIFEST_DIR");
    std::process::Command::new("sh")
        .arg(format!("{root}/config/hooks/hold-switchover.sh"))
        .args([
            "db",
            "bash",
            &format!("{root}/loadtest/lab.sh"),
            "switchover",
        ])
        .arg(engine.as_str())
        .env("ROLEGATE", env!("CARGO_BIN_EXE_rolegate"))
        .env("ROLEGATE_ADMIN_URL", format!("http://{admin}"))
        .env("HOLD_TIMEOUT", "15s")
        .env_remove("ROLEGATE_CONFIG")
        .output()
        .expect("run the hook script")
}

/// A planned switchover under the hold: new connections wait while the roles swap and go to
/// the new primary; none fails and none writes on the old primary.
async fn planned_switchover_with_hold(engine: Engine) {
    let _lock = lab::lock();
    let _reset = lab::ResetOnPanic(engine);
    let proxy = proxy_for(engine).await;
    let rw = proxy.addr("rw").await;
    let admin = proxy.admin();
    let (a, b) = (engine.addr('A'), engine.addr('B'));
    let (watch, held) = proxy.watch_held("rw");
    let writer = Writer::options(engine, rw).prefix("ze").spawn();
    writer
        .wait_for_phase(10, a.port(), 0, "10 writes on A")
        .await;

    let out = tokio::task::spawn_blocking(move || hook_switchover(admin, engine))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "hook script failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("db: held since") && stdout.contains("primary at hold time: a"),
        "{stdout}"
    );
    // The hold ends by itself when B is confirmed.
    proxy.wait_route("rw", "b routed", |n| n == ["b"]).await;
    writer.enter_phase(1);
    writer
        .wait_for_phase(10, b.port(), 1, "10 writes on B")
        .await;
    let attempts = writer.finish().await;
    watch.abort();

    let held_at = *held.lock().unwrap().first().expect("rw was held");
    let after: Vec<_> = attempts.iter().filter(|x| x.started >= held_at).collect();
    let failed: Vec<_> = after.iter().filter(|x| x.result.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{engine:?}: new connections failed during the held switchover: {failed:?}"
    );
    let on_old: Vec<_> = after.iter().filter(|x| x.result == Ok(a.port())).collect();
    assert!(
        on_old.is_empty(),
        "{engine:?}: writes on the old primary after the hold: {on_old:?}"
    );
    let failed_before = attempts
        .iter()
        .filter(|x| x.started < held_at && x.result.is_err())
        .count();
    let m = proxy.metrics();
    assert_eq!(
        metric_value(
            &m,
            "rolegate_holds_ended_total{cluster=\"db\",reason=\"new_primary\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric_value(&m, "rolegate_cluster_held{cluster=\"db\"}"),
        Some(0.0)
    );
    let status = http::get(admin, "/status").await.json();
    assert!(status["clusters"][0]["hold"].is_null(), "{status}");
    eprintln!(
        "FIGURES {engine:?} held switchover: {} new connections after the hold, 0 failed; {failed_before} failed among those opened before it",
        after.len()
    );
    proxy.stop().await;
    lab::reset(engine).await;
}

/// No switchover follows the hold: it times out, is logged and counted, and connections held
/// meanwhile go to the primary they would have gone to — none fails.
async fn hold_times_out_cleanly(engine: Engine) {
    let _lock = lab::lock();
    let _reset = lab::ResetOnPanic(engine);
    let proxy = proxy_for(engine).await;
    let rw = proxy.addr("rw").await;
    let admin = proxy.admin();
    let a = engine.addr('A');
    let (watch, held) = proxy.watch_held("rw");
    let writer = Writer::options(engine, rw).prefix("ze").spawn();
    writer.wait_for_phase(5, a.port(), 0, "5 writes on A").await;

    writer.enter_phase(1);
    let r = http::post(admin, "/clusters/db/hold?timeout=700ms", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let status = http::get(admin, "/status").await.json();
    let hold = &status["clusters"][0]["hold"];
    assert_eq!(hold["primary"], "a", "{status}");
    assert!(
        hold["since"].is_string() && hold["until"].is_string(),
        "{hold}"
    );
    assert_eq!(status["listeners"][0]["unavailable"], "held", "{status}");
    // Held is still ready: a VIP must not move because a switchover was announced.
    let ready = http::get(admin, "/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    support::eventually(Duration::from_secs(20), "hold timed out", || {
        let m = proxy.metrics();
        let n = metric_value(
            &m,
            "rolegate_holds_ended_total{cluster=\"db\",reason=\"timeout\"}",
        );
        async move { n == Some(1.0) }
    })
    .await;
    proxy
        .wait_route("rw", "a routed again", |n| n == ["a"])
        .await;
    writer.enter_phase(2);
    writer
        .wait_for_phase(5, a.port(), 2, "5 writes on A after the hold")
        .await;
    let attempts = writer.finish().await;
    watch.abort();
    assert!(!held.lock().unwrap().is_empty(), "rw was held");
    let failed: Vec<_> = attempts.iter().filter(|x| x.result.is_err()).collect();
    assert!(failed.is_empty(), "{engine:?}: {failed:?}");
    let held_writes = attempts
        .iter()
        .filter(|x| x.phase == 1 && x.result == Ok(a.port()))
        .count();
    assert!(held_writes > 0, "connections held meanwhile reached A");
    let status = http::get(admin, "/status").await.json();
    assert!(status["clusters"][0]["hold"].is_null(), "{status}");
    proxy.stop().await;
}

per_engine!(frozen_primary_then_promoted);
per_engine!(planned_switchover_with_hold);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_timeout_redis() {
    if require::lab(&[Engine::Redis]).is_some() {
        hold_times_out_cleanly(Engine::Redis).await
    }
}

/// Bad input needs no lab: a cluster the config does not have, a timeout that does not parse,
/// a tcp cluster (no primary to hold), and a release with nothing held.
#[tokio::test]
async fn hold_api_bad_input() {
    let proxy = Proxy::start(
        "admin: { listen: 127.0.0.1:0 }
clusters:
  - { name: plain, protocol: tcp, backends: [{ name: a, address: \"127.0.0.1:9\" }] }
  - name: r
    protocol: redis
    backends: [{ name: a, address: \"127.0.0.1:9\" }]
listeners:
  - { name: l, bind: \"127.0.0.1:0\", cluster: plain }
",
    )
    .await;
    let admin = proxy.admin();
    let r = http::post(admin, "/clusters/nope/hold", None).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("nope"), "{}", r.body);
    let r = http::post(admin, "/clusters/nope/release", None).await;
    assert_eq!(r.status, 404, "{}", r.body);
    for bad in ["soon", "10", "0s", "1h"] {
        let r = http::post(admin, &format!("/clusters/r/hold?timeout={bad}"), None).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert!(r.body.starts_with("timeout: "), "{bad}: {}", r.body);
    }
    let r = http::post(admin, "/clusters/r/hold?for=1s", None).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = http::post(admin, "/clusters/plain/hold", None).await;
    assert_eq!(r.status, 409, "{}", r.body);
    let r = http::get(admin, "/clusters/r/hold").await;
    assert_eq!(r.status, 405, "{}", r.body);
    let r = http::post(admin, "/clusters/r/release", None).await;
    assert_eq!((r.status, r.body.as_str()), (200, "r: was not held\n"));
    // A hold and a release through the CLI.
    let cli = move |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_rolegate"))
            .args(args)
            .args(["--admin", &format!("http://{admin}")])
            .env_remove("ROLEGATE_CONFIG")
            .output()
            .expect("run rolegate")
    };
    let out = tokio::task::spawn_blocking(move || cli(&["hold", "r", "--timeout", "30s"]))
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let status = http::get(admin, "/status").await.json();
    let r_status = status["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "r")
        .cloned()
        .unwrap();
    assert!(r_status["hold"]["until"].is_string(), "{r_status}");
    assert_eq!(
        metric_value(&proxy.metrics(), "rolegate_cluster_held{cluster=\"r\"}"),
        Some(1.0)
    );
    let out = tokio::task::spawn_blocking(move || cli(&["release", "r"]))
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "r: released\n");
    let m = proxy.metrics();
    assert_eq!(
        metric_value(
            &m,
            "rolegate_holds_ended_total{cluster=\"r\",reason=\"released\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric_value(&m, "rolegate_cluster_held{cluster=\"r\"}"),
        Some(0.0)
    );
    let out = tokio::task::spawn_blocking(move || cli(&["hold", "nope"]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    proxy.stop().await;
}
