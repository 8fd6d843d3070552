//! Role changes under steering: switchover of each engine (steered sessions on the demoted node
//! destroyed, new connects steered to the new primary), and no primary → the proxy's queue.

use super::*;

/// Switchover under a write loop: the steered session on the demoted node is closed, new
/// connections are steered to the new primary.
async fn switchover(engine: Engine) {
    let Some(_met) = requirements(&[engine]) else {
        return;
    };
    let _lock = lab::lock();
    let _reset = lab::ResetOnPanic(engine);
    // Another test (from another worktree or binary) may have left B primary between tests.
    lab::reset(engine).await;
    let cgroup = Cgroup::create(engine.as_str());
    let cfg = config(engine, &cgroup);
    let (rg, rw) = start(&cfg, Start::default()).await;
    if !built_with_steering(rg.admin()).await {
        return;
    }
    let (a, b) = (engine.addr('A').port(), engine.addr('B').port());
    let writer = Client::spawn(&cgroup.0, "writer", engine, rw);
    writer.until("open=", Duration::from_secs(20));
    assert_eq!(
        writer.until("wrote=", Duration::from_secs(20)),
        format!("wrote={a}")
    );
    assert_eq!(
        steered_total(rg.admin(), "a").await,
        1,
        "the writer was steered"
    );

    lab::scenario("switchover", engine).await;
    let end = writer.until("closed=", Duration::from_secs(30));
    assert_ne!(
        end, "closed=never",
        "{engine:?}: the steered session outlived the switchover"
    );

    let admin = rg.admin();
    support::eventually(Duration::from_secs(20), "route on b", || async move {
        steer_status(admin).await["connections_total"]
            .as_object()
            .is_some_and(|m| m.contains_key("b"))
    })
    .await;
    let lines = run_client(&cgroup, "write", engine, rw).await;
    assert_eq!(
        field(&lines, "wrote"),
        b.to_string(),
        "{engine:?}: {lines:?}"
    );
    assert!(
        steered_total(admin, "b").await >= 1,
        "the new connection was steered to b"
    );
    // PostgreSQL's demotion restarts the server, which closes the session itself; Redis and
    // MariaDB keep it open, so there rolegate must have destroyed it.
    let metrics = http::get(admin, "/metrics").await.body;
    let fenced = "rolegate_steer_fenced_total{backend=\"a\",listener=\"rw\"}";
    assert!(
        engine == Engine::Pg || support::metric_value(&metrics, fenced).is_some_and(|v| v >= 1.0),
        "fencing counted; writer ended with {end}; log: {:#?}",
        rg.lines()
    );
    drop(writer);
    rg.stop_cleanly().await;
    lab::reset(engine).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn switchover_redis() {
    switchover(Engine::Redis).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn switchover_pg() {
    switchover(Engine::Pg).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn switchover_mysql() {
    switchover(Engine::Mysql).await;
}

/// `disable` of the primary closes its steered sessions; with no primary a steered client's
/// connect reaches the proxy, waits in its queue and completes after `enable`.
#[tokio::test(flavor = "multi_thread")]
async fn no_primary_falls_back_to_the_proxy_queue() {
    let Some(_met) = requirements(&[Engine::Redis]) else {
        return;
    };
    let _lab = lab::lock_read_only();
    let cgroup = Cgroup::create("queue");
    let cfg = config(Engine::Redis, &cgroup);
    let (rg, rw) = start(&cfg, Start::default()).await;
    let admin = rg.admin();
    if !built_with_steering(admin).await {
        return;
    }
    let a = Engine::Redis.addr('A').port();
    let writer = Client::spawn(&cgroup.0, "writer", Engine::Redis, rw);
    assert_eq!(
        writer.until("wrote=", Duration::from_secs(20)),
        format!("wrote={a}")
    );
    // A dual-stack one too (AF_INET6 socket, IPv4-mapped address): fenced the same way.
    let SocketAddr::V4(rw4) = rw else {
        panic!("an IPv4 listener")
    };
    let mapped = SocketAddr::new(rw4.ip().to_ipv6_mapped().into(), rw.port());
    let writer6 = Client::spawn(&cgroup.0, "writer", Engine::Redis, mapped);
    assert_eq!(
        writer6.until("wrote=", Duration::from_secs(20)),
        format!("wrote={a}")
    );
    assert_eq!(
        steered_total(admin, "a").await,
        2,
        "both writers were steered"
    );
    let disabled = http::post(admin, "/backends/db/a/disable", None).await;
    assert_eq!(disabled.status, 200);
    let end = writer.until("closed=", Duration::from_secs(20));
    assert_ne!(end, "closed=never", "disable closes steered sessions");
    let end = writer6.until("closed=", Duration::from_secs(20));
    assert_ne!(
        end, "closed=never",
        "disable closes steered dual-stack sessions"
    );
    let before = steered_total(admin, "a").await;

    let queued = Client::spawn(&cgroup.0, "write", Engine::Redis, rw);
    support::eventually(
        Duration::from_secs(20),
        "the connect queued by the proxy",
        || async move {
            let m = http::get(admin, "/metrics").await.body;
            support::metric_value(&m, "rolegate_queued_connections{listener=\"rw\"}")
                .is_some_and(|v| v >= 1.0)
        },
    )
    .await;
    assert_eq!(
        http::post(admin, "/backends/db/a/enable", None)
            .await
            .status,
        200
    );
    assert_eq!(
        queued.until("wrote=", Duration::from_secs(30)),
        format!("wrote={a}")
    );
    assert_eq!(
        steered_total(admin, "a").await,
        before,
        "the queued client was proxied"
    );
    drop(queued);
    drop(writer);
    drop(writer6);
    rg.stop_cleanly().await;
}

/// Takes the primary role from node A without giving it to anyone: Redis A follows B (both
/// replicas), MariaDB A turns read-only (B is a read-only replica already).
fn demote_a(engine: Engine) {
    match engine {
        Engine::Redis => {
            let b = engine.addr('B');
            let mut s = TcpStream::connect_timeout(&engine.addr('A'), Duration::from_secs(10))
                .expect("connect to redis A");
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let cmd = format!(
                "AUTH {}\r\nREPLICAOF {} {}\r\n",
                lab::monitor_password(),
                b.ip(),
                b.port()
            );
            s.write_all(cmd.as_bytes()).unwrap();
            let mut reply = Vec::new();
            let mut buf = [0u8; 256];
            while String::from_utf8_lossy(&reply).matches("\r\n").count() < 2 {
                let n = s.read(&mut buf).expect("read REPLICAOF's answer");
                assert!(
                    n > 0,
                    "redis A closed: {:?}",
                    String::from_utf8_lossy(&reply)
                );
                reply.extend_from_slice(&buf[..n]);
            }
            let text = String::from_utf8_lossy(&reply);
            assert_eq!(text.matches("+OK").count(), 2, "REPLICAOF on A: {text:?}");
        }
        Engine::Mysql => {
            let socket = format!("{}/run/mysql-A.sock", lab::dir());
            let out = std::process::Command::new("mariadb")
                .args(["--no-defaults", "--protocol=socket", "--user=root"])
                .arg(format!("--socket={socket}"))
                .args(["-e", "SET GLOBAL read_only = ON"])
                .output()
                .expect("run mariadb");
            assert!(
                out.status.success(),
                "read_only on mysql A: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Engine::Pg => panic!("pg is demoted by a switchover only"),
    }
}

/// No primary: the primary loses its role (nobody else has it), its steered session is
/// closed, a steered client's connect goes to the proxy's queue, and after a real promotion
/// of B it completes there; the next connect is steered to B.
async fn no_primary_until_promotion(engine: Engine) {
    let Some(_met) = requirements(&[engine]) else {
        return;
    };
    let _lock = lab::lock();
    let _reset = lab::ResetOnPanic(engine);
    lab::reset(engine).await;
    let cgroup = Cgroup::create(&format!("promote-{}", engine.as_str()));
    let cfg = config(engine, &cgroup);
    let (rg, rw) = start(&cfg, Start::default()).await;
    let admin = rg.admin();
    if !built_with_steering(admin).await {
        return;
    }
    let (a, b) = (engine.addr('A').port(), engine.addr('B').port());
    let writer = Client::spawn(&cgroup.0, "writer", engine, rw);
    assert_eq!(
        writer.until("wrote=", Duration::from_secs(20)),
        format!("wrote={a}")
    );
    assert_eq!(steered_total(admin, "a").await, 1, "the writer was steered");

    tokio::task::spawn_blocking(move || demote_a(engine))
        .await
        .unwrap();
    let end = writer.until("closed=", Duration::from_secs(30));
    assert_ne!(
        end, "closed=never",
        "{engine:?}: the steered session outlived the demotion"
    );
    support::eventually(
        Duration::from_secs(20),
        "no primary routed",
        || async move {
            let m = http::get(admin, "/metrics").await.body;
            support::metric_value(&m, "rolegate_steer_sessions{backend=\"a\",listener=\"rw\"}")
                .is_none_or(|v| v == 0.0)
                && http::get(admin, "/readyz").await.status != 200
        },
    )
    .await;

    let queued = Client::spawn(&cgroup.0, "write", engine, rw);
    support::eventually(
        Duration::from_secs(20),
        "the connect queued by the proxy",
        || async move {
            let m = http::get(admin, "/metrics").await.body;
            support::metric_value(&m, "rolegate_queued_connections{listener=\"rw\"}")
                .is_some_and(|v| v >= 1.0)
        },
    )
    .await;
    lab::scenario("promote", engine).await;
    assert_eq!(
        queued.until("wrote=", Duration::from_secs(30)),
        format!("wrote={b}"),
        "{engine:?}: the queued connect completes on the promoted node"
    );
    assert_eq!(
        steered_total(admin, "b").await,
        0,
        "the queued client was proxied"
    );
    let lines = run_client(&cgroup, "write", engine, rw).await;
    assert_eq!(field(&lines, "wrote"), b.to_string(), "{lines:?}");
    assert_eq!(
        steered_total(admin, "b").await,
        1,
        "the next connect is steered to the new primary"
    );
    drop(queued);
    drop(writer);
    rg.stop_cleanly().await;
    lab::reset(engine).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_primary_until_promotion_redis() {
    no_primary_until_promotion(Engine::Redis).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_primary_until_promotion_mysql() {
    no_primary_until_promotion(Engine::Mysql).await;
}
