//! Network faults between rolegate and real lab servers, injected by the kernel inside network
//! namespaces the tests create (`tests/it/support/netns.rs`): a backend that accepts TCP and never
//! answers, one whose packets are black-holed, one whose connections are reset mid-stream, a
//! slow one and a lossy one. Every test is bounded in time and checks that the faulty backend
//! is judged by its checks, that clients never hang, and that other clusters do not notice.
//!
//! They need root, nftables and the lab (`bash loadtest/test.sh` provides all three) and hold
//! the lab lock for their whole run.

use crate::support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::config::{Check, Cluster, ConfigBuilder, Listener};
use support::lab::{self, Engine};
use support::netns::Node;
use support::relay::{self, AbortOnDrop, Relay};
use support::require;
use support::{db, eventually, metric_value, Proxy};

/// One cluster of the test config: the lab's credentials for `engine`, `check` on top.
fn cluster(name: &str, engine: Engine, check: Check, backends: &[(&str, SocketAddr)]) -> Cluster {
    let mut cluster = Cluster::lab_protocol(name, engine).check_with(check);
    for (b, addr) in backends {
        cluster = cluster.backend(b, addr);
    }
    cluster
}

fn check_failures(proxy: &Proxy, cluster: &str, backend: &str, reason: &str) -> f64 {
    metric_value(
        &proxy.metrics(),
        &format!("rolegate_check_failures_total{{backend=\"{backend}\",cluster=\"{cluster}\",reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0)
}

/// PINGs the healthy Redis cluster through rolegate every 10 ms until stopped; returns the
/// number of PINGs and the slowest one. Any error fails the test.
fn spawn_pinger(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Duration)> {
    tokio::spawn(async move {
        let db::Session::Redis(mut conn) = db::open(Engine::Redis, addr)
            .await
            .expect("redis through rolegate")
        else {
            unreachable!()
        };
        let (mut n, mut worst) = (0, Duration::ZERO);
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            let pong: String = tokio::time::timeout(
                Duration::from_secs(2),
                redis::cmd("PING").query_async(&mut conn),
            )
            .await
            .expect("PING through rolegate timed out while another cluster was faulty")
            .expect("PING through rolegate failed while another cluster was faulty");
            assert_eq!(pong, "PONG");
            worst = worst.max(t.elapsed());
            n += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (n, worst)
    })
}

/// Node A of `engine` reached through a relay inside a network namespace of its own (where
/// faults are injected), node B direct, one cluster `name` with `check` settings and a primary
/// listener `rw` (with `queue_timeout` if given); returned once the route names A.
struct RelayedA {
    node: Node,
    relay: Relay,
    proxy: Proxy,
    rw: SocketAddr,
}

async fn relayed_a(
    engine: Engine,
    port: u16,
    name: &str,
    check: Check,
    queue_timeout: Option<&str>,
) -> RelayedA {
    let node = Node::new();
    let relay = Relay::spawn(node.listen(port), engine.addr('A'));
    let mut rw = Listener::new("rw", name).role("primary");
    if let Some(timeout) = queue_timeout {
        rw = rw.set("queue_timeout", timeout);
    }
    let yaml = ConfigBuilder::new()
        .cluster(cluster(
            name,
            engine,
            check,
            &[("a", relay.addr), ("b", engine.addr('B'))],
        ))
        .listener(rw)
        .yaml();
    let proxy = Proxy::start(&yaml).await;
    proxy.wait_route("rw", "a primary", |n| n == ["a"]).await;
    let rw = proxy.addr("rw").await;
    RelayedA {
        node,
        relay,
        proxy,
        rw,
    }
}

/// A backend that accepts TCP and never answers, for each protocol, and one whose packets
/// are black-holed: checks fail with `timeout` (the probe never waits past its timeout,
/// whatever the client library does), a client of the black-holed primary gets a data-plane
/// connect timeout and is closed after `queue_timeout` instead of hanging, and a healthy
/// cluster in the same process keeps answering within milliseconds throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_blackholed_backends_time_out_and_other_clusters_are_unaffected() {
    let Some(_) = require::root_and_lab(&[Engine::Pg, Engine::Redis]) else {
        return;
    };
    let _lock = lab::lock();
    let silent_node = Node::new();
    let hole = Node::new();
    let _silent: Vec<AbortOnDrop> = [5432, 3306, 6379]
        .into_iter()
        .map(|port| AbortOnDrop(relay::silent(silent_node.listen(port))))
        .collect();
    let pg_a = Relay::spawn(hole.listen(5432), Engine::Pg.addr('A'));
    let silent_at = |port: u16| SocketAddr::from((silent_node.ip, port));

    // Fast checks for the silent ones; slow ones for the black hole, so that a client meets
    // the hole before the checks take it out.
    let fast = || Check::timing("200ms", "300ms", 1, 2);
    let yaml = ConfigBuilder::new()
        .cluster(cluster(
            "pg_silent",
            Engine::Pg,
            fast(),
            &[("a", silent_at(5432))],
        ))
        .cluster(cluster(
            "my_silent",
            Engine::Mysql,
            fast(),
            &[("a", silent_at(3306))],
        ))
        .cluster(cluster(
            "redis_silent",
            Engine::Redis,
            fast(),
            &[("a", silent_at(6379))],
        ))
        .cluster(
            cluster(
                "hole",
                Engine::Pg,
                Check::timing("2s", "1s", 1, 3),
                &[("a", pg_a.addr), ("b", Engine::Pg.addr('B'))],
            )
            .set("connect_timeout", "300ms"),
        )
        .cluster(cluster(
            "healthy",
            Engine::Redis,
            Check::default()
                .set("interval", "100ms")
                .set("timeout", "200ms"),
            &[
                ("a", Engine::Redis.addr('A')),
                ("b", Engine::Redis.addr('B')),
            ],
        ))
        .listener(
            Listener::new("hole-rw", "hole")
                .role("primary")
                .set("queue_timeout", "2s"),
        )
        .listener(Listener::new("healthy-rw", "healthy").role("primary"))
        .listener(
            Listener::new("silent-rw", "pg_silent")
                .role("primary")
                .set("queue_timeout", "500ms"),
        )
        .yaml();
    let proxy = Proxy::start(&yaml).await;
    proxy
        .wait_route("healthy-rw", "redis a primary", |n| n == ["a"])
        .await;
    proxy
        .wait_route("hole-rw", "pg a primary", |n| n == ["a"])
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let pinger = spawn_pinger(proxy.addr("healthy-rw").await, stop.clone());

    // 1. Silent backends: every protocol's check times out, again and again (no stuck probe).
    for c in ["pg_silent", "my_silent", "redis_silent"] {
        eventually(
            Duration::from_secs(10),
            &format!("{c}: three check timeouts"),
            || {
                let n = check_failures(&proxy, c, "a", "timeout");
                async move { n >= 3.0 }
            },
        )
        .await;
        let s = proxy.backend_status(c, "a");
        assert_ne!(s.health, "up", "{c}: {s:?}");
        assert_eq!(s.last_error_reason, Some("timeout"), "{c}: {s:?}");
        let took = s.last_check_duration_ms.unwrap_or(0.0);
        assert!(
            took < 1000.0,
            "{c}: a check ran {took} ms past its 300 ms timeout"
        );
    }
    // A client of the silent cluster is closed after queue_timeout, never proxied.
    let started = Instant::now();
    let mut c = tokio::net::TcpStream::connect(proxy.addr("silent-rw").await)
        .await
        .unwrap();
    let mut b = [0u8; 1];
    let n = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut c, &mut b),
    )
    .await
    .expect("a client of a cluster without a usable backend must not hang");
    assert!(matches!(n, Ok(0) | Err(_)));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // 2. Black hole: SYNs and everything else to pg node a vanish.
    hole.partition();
    let started = Instant::now();
    let outcome =
        db::connect_and_write(Engine::Pg, proxy.addr("hole-rw").await, "faults-hole").await;
    let waited = started.elapsed();
    assert!(
        outcome.is_err(),
        "a write went through a black hole: {outcome:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "the client waited {waited:?}; queue_timeout is 2 s"
    );
    let m = proxy.metrics();
    assert!(
        metric_value(
            &m,
            "rolegate_connect_errors_total{backend=\"a\",listener=\"hole-rw\",reason=\"timeout\"}"
        )
        .is_some_and(|v| v >= 1.0),
        "the data-plane connect must time out: {m}"
    );
    // The failed connect asked for a re-check; the checks then take the node out.
    proxy
        .wait_route("hole-rw", "a taken out", |n| n.is_empty())
        .await;
    assert!(check_failures(&proxy, "hole", "a", "timeout") >= 1.0);

    // 3. Healed: a is primary again and takes writes.
    hole.heal();
    proxy.wait_route("hole-rw", "a back", |n| n == ["a"]).await;
    let port = db::connect_and_write(Engine::Pg, proxy.addr("hole-rw").await, "faults-hole")
        .await
        .expect("write after the black hole healed");
    assert_eq!(port, Engine::Pg.addr('A').port());

    stop.store(true, Ordering::Relaxed);
    let (pings, worst) = pinger.await.unwrap();
    assert!(pings > 50, "{pings} pings");
    assert!(
        worst < Duration::from_millis(500),
        "the healthy cluster slowed to {worst:?} while others were faulty"
    );
    proxy.stop().await;
}

/// The kernel resets every established connection to node a (nftables `reject with tcp
/// reset`) while a client streams query results through rolegate: the client's session ends
/// with an error at once (no hang, no half-dead session), rolegate logs it as a backend error,
/// and after the fault a new session works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_reset_mid_stream_end_promptly_and_new_sessions_work() {
    let Some(_) = require::root_and_lab(&[Engine::Pg]) else {
        return;
    };
    let _lock = lab::lock();
    let RelayedA {
        node,
        relay,
        proxy,
        rw,
    } = relayed_a(
        Engine::Pg,
        5432,
        "pg",
        Check::timing("250ms", "500ms", 1, 3),
        None,
    )
    .await;
    let db::Session::Pg(client) = db::open(Engine::Pg, rw).await.expect("open") else {
        unreachable!()
    };
    // Stream ~1 MB per query until the reset.
    let streaming = tokio::spawn(async move {
        let mut rounds = 0u32;
        loop {
            let r = tokio::time::timeout(
                Duration::from_secs(10),
                client.query(
                    "SELECT repeat('x', 1000) FROM generate_series(1, 1000)",
                    &[],
                ),
            )
            .await;
            match r {
                Err(_) => panic!("a query hung across the reset"),
                Ok(Ok(rows)) => assert_eq!(rows.len(), 1000),
                Ok(Err(e)) => return (rounds, e.to_string(), Instant::now()),
            }
            rounds += 1;
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reset_at = Instant::now();
    node.reset_established(relay.addr.port());
    let (rounds, error, failed_at) = tokio::time::timeout(Duration::from_secs(10), streaming)
        .await
        .expect("the client must see the reset")
        .unwrap();
    node.heal();
    assert!(rounds > 0, "streamed before the reset");
    let noticed = failed_at.saturating_duration_since(reset_at);
    assert!(
        noticed < Duration::from_secs(2),
        "the session ended {noticed:?} after the reset: {error}"
    );

    eventually(
        Duration::from_secs(5),
        "session counted as a backend error",
        || {
            let m = proxy.metrics();
            async move {
                metric_value(
                    &m,
                    "rolegate_sessions_active{backend=\"a\",listener=\"rw\"}",
                ) == Some(0.0)
            }
        },
    )
    .await;
    // The check session was reset too; the probe reconnects and a stays (or is again) primary.
    proxy.wait_route("rw", "a primary", |n| n == ["a"]).await;
    let port = db::connect_and_write(Engine::Pg, rw, "faults-reset")
        .await
        .expect("a new session after the reset");
    assert_eq!(port, Engine::Pg.addr('A').port());
    proxy.stop().await;
}

/// A slow backend (every chunk delayed in both directions; the kernel here has no netem):
/// 50 ms is slow but within the check timeout — nothing flaps and queries still work; 1 s is
/// past the check timeout — the node is taken out with reason `timeout`; back to normal, it
/// returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_is_kept_while_within_the_check_timeout_and_taken_out_beyond_it() {
    let Some(_) = require::root_and_lab(&[Engine::Pg]) else {
        return;
    };
    let _lock = lab::lock();
    let RelayedA {
        node: _node,
        relay,
        proxy,
        rw,
    } = relayed_a(
        Engine::Pg,
        5432,
        "pg",
        Check::timing("250ms", "500ms", 2, 2),
        Some("1s"),
    )
    .await;

    relay.set_delay(Duration::from_millis(50));
    let changes = proxy.app.router().load().generation;
    let mut s = db::open(Engine::Pg, rw)
        .await
        .expect("open through a slow link");
    let t = Instant::now();
    for i in 0..5 {
        assert_eq!(
            s.write(&format!("faults-slow-{i}")).await,
            Ok(Engine::Pg.addr('A').port())
        );
    }
    let per_write = t.elapsed() / 5;
    assert!(
        per_write >= Duration::from_millis(100),
        "the delay applies: {per_write:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        proxy.app.router().load().generation,
        changes,
        "a backend slower than usual but within its check timeout must not flap"
    );

    relay.set_delay(Duration::from_secs(1));
    proxy
        .wait_route("rw", "a taken out", |n| n.is_empty())
        .await;
    assert!(check_failures(&proxy, "pg", "a", "timeout") >= 2.0);
    // The open session is on a backend that lost the primary role: closed.
    let r = tokio::time::timeout(Duration::from_secs(5), s.write("faults-slow-after")).await;
    assert!(
        matches!(r, Ok(Err(_))),
        "the session on the taken-out node must be closed: {r:?}"
    );

    relay.set_delay(Duration::ZERO);
    proxy.wait_route("rw", "a back", |n| n == ["a"]).await;
    assert_eq!(
        db::connect_and_write(Engine::Pg, rw, "faults-slow-back").await,
        Ok(Engine::Pg.addr('A').port())
    );
    proxy.stop().await;
}

/// 10 % packet loss each way (nftables `numgen random`): TCP retransmits, so what rolegate
/// forwards stays byte-exact — a 1 MiB value written and read back through it, and 100
/// one-packet INCRs whose replies must count up without a gap — and writes land on the primary
/// only. The checks may time out now and then; whatever they decide,
/// the node is back as primary within seconds of the loss ending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packet_loss_never_corrupts_or_misroutes_and_the_node_recovers() {
    let Some(_) = require::root_and_lab(&[Engine::Redis]) else {
        return;
    };
    let _lock = lab::lock();
    let RelayedA {
        node,
        relay: _relay,
        proxy,
        rw,
    } = relayed_a(
        Engine::Redis,
        6379,
        "r",
        Check::timing("500ms", "1s", 2, 3),
        Some("10s"),
    )
    .await;

    node.loss(10);
    let lossy_since = Instant::now();
    let mut value = vec![0u8; 1024 * 1024];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut value);
    let expect: [u8; 32] = Sha256::digest(&value).into();
    let key = format!("faults-loss-{}", std::process::id());
    let mut attempt = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    // Sessions may be closed when the checks give up on the node (that is their job); a
    // closed session is simply reopened, as an application would.
    let got = loop {
        assert!(
            Instant::now() < deadline,
            "no round trip completed in 60 s at 10 % loss"
        );
        let Ok(db::Session::Redis(mut conn)) = db::open(Engine::Redis, rw).await else {
            continue;
        };
        let round = async {
            let () = redis::cmd("SET")
                .arg(&key)
                .arg(&value)
                .query_async(&mut conn)
                .await?;
            let port: u16 = {
                let info: String = redis::cmd("INFO")
                    .arg("server")
                    .query_async(&mut conn)
                    .await?;
                info.lines()
                    .find_map(|l| l.strip_prefix("tcp_port:"))
                    .and_then(|p| p.trim().parse().ok())
                    .unwrap_or(0)
            };
            let back: Vec<u8> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
            // Many small request/reply pairs, one packet each way: each reply must be exactly
            // the previous plus one — no request lost, doubled or reordered.
            let counter = format!("{key}-counter-{attempt}");
            for expect in 1..=100i64 {
                let n: i64 = redis::cmd("INCR")
                    .arg(&counter)
                    .query_async(&mut conn)
                    .await?;
                assert_eq!(n, expect, "INCR reply out of sequence through a lossy link");
            }
            redis::RedisResult::Ok((port, back))
        };
        match tokio::time::timeout(Duration::from_secs(30), round).await {
            Ok(Ok((port, back))) => {
                assert_eq!(
                    port,
                    Engine::Redis.addr('A').port(),
                    "a write went to the replica"
                );
                break back;
            }
            Ok(Err(_)) | Err(_) => {
                attempt += 1; // a fresh counter for the next attempt
                continue;
            }
        }
    };
    let dropped = node.dropped();
    node.heal();
    eprintln!(
        "10 % loss: 1 MiB SET+GET and 100 INCRs in {:?}, {dropped} packets dropped; {} check timeouts meanwhile",
        lossy_since.elapsed(),
        check_failures(&proxy, "r", "a", "timeout")
    );
    assert!(dropped > 0, "the loss rule dropped nothing");
    let got: [u8; 32] = Sha256::digest(&got).into();
    assert_eq!(
        got, expect,
        "1 MiB through a lossy link came back different"
    );
    proxy
        .wait_route("rw", "a primary after the loss", |n| n == ["a"])
        .await;
    let m = proxy.metrics();
    for reason in [
        "refused",
        "auth failed",
        "unexpected reply",
        "wrong protocol",
    ] {
        assert_eq!(
            check_failures(&proxy, "r", "a", reason),
            0.0,
            "{reason}: {m}"
        );
    }
    proxy.stop().await;
}
