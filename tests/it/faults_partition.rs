//! A network partition between rolegate and the PostgreSQL primary while clients write, then a
//! promotion, then the partition heals with the old primary still claiming the role.
//!
//! ```text
//!   clients ─► rolegate ─► 198.19.x.2:15432 [namespace, nftables: drop all] relay ─► lab pg A
//!                     └──► 127.0.0.1:15433 ───────────────────────────────────────► lab pg B
//! ```
//!
//! Replication between A and B is untouched (it runs on the root namespace's loopback): only
//! rolegate loses A, which is exactly the situation where a proxy must not trust a primary it
//! cannot see. Every write carries a unique tag; afterwards each node's own table is the
//! judge:
//! - A is taken out after the configured checks and the sessions on it are closed;
//! - no write is acknowledged by A after rolegate stopped routing to it;
//! - no write at all reaches A after that, not even bytes that were queued towards it when its
//!   sessions were closed (they would arrive when the partition heals);
//! - every acknowledged write is on B, the final primary;
//! - after the heal A is a stale primary: reported, never routed to.

use crate::support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::lab::{self, wall, Engine};
use support::netns::Node;
use support::relay::Relay;
use support::require;
use support::{eventually, metric_value, Proxy};

/// One write as the client saw it.
#[derive(Debug, Clone)]
struct Write {
    tag: String,
    /// Port of the server that acknowledged it, or the error.
    result: Result<u16, String>,
    /// Wall-clock time the acknowledgement (or error) arrived.
    at: f64,
}

type Log = Arc<Mutex<Vec<Write>>>;

/// A PostgreSQL session to `addr` (through rolegate or direct) as the lab's md5 user: md5
/// costs the client nothing, where SCRAM's key derivation in a debug build takes a good part
/// of a CPU second per connection — CPU the probes under test need.
async fn connect(addr: SocketAddr) -> Result<tokio_postgres::Client, String> {
    let password = lab::password("md5");
    let conn = format!(
        "host={} port={} user=md5user password={password} dbname=app connect_timeout=10",
        addr.ip(),
        addr.port(),
    );
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tokio::spawn(connection);
    Ok(client)
}

/// One write, as one simple-protocol `Query` message: whenever its bytes reach a server, it
/// executes (an extended-protocol write is two round trips, and bytes stuck in the first would
/// never commit anything). Returns the port of the server that acknowledged it.
async fn write(client: &tokio_postgres::Client, tag: &str) -> Result<u16, String> {
    let messages = client
        .simple_query(&format!(
            "INSERT INTO writes(node) VALUES ('{tag}') RETURNING inet_server_port()"
        ))
        .await
        .map_err(|e| format!("write: {e}"))?;
    messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0)?.parse().ok(),
            _ => None,
        })
        .ok_or_else(|| "write: no port in the answer".to_string())
}

/// A client that keeps one session and writes in a loop; on an error it reopens (as a pool
/// would). The write timeout is long on purpose: a session rolegate failed to close would
/// hang in the partition and be acknowledged by A after the heal, which the test must see.
fn long_session_writer(
    id: usize,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    log: Log,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seq = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let Ok(session) = connect(addr).await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            while !stop.load(Ordering::Relaxed) {
                let tag = format!("part-{}-s{id}-{seq}", std::process::id());
                seq += 1;
                let result = tokio::time::timeout(Duration::from_secs(60), write(&session, &tag))
                    .await
                    .unwrap_or_else(|_| Err("write timed out".into()));
                let failed = result.is_err();
                log.lock().unwrap().push(Write {
                    tag,
                    result,
                    at: wall(),
                });
                if failed {
                    break;
                }
                // A steady writer, not a CPU hog: the probes share these two cores.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    })
}

/// A client that opens a new connection for every write, every 50 ms.
fn new_connection_writer(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    log: Log,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seq = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut inflight = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let tag = format!("part-{}-c-{seq}", std::process::id());
            seq += 1;
            let log = log.clone();
            inflight.push(tokio::spawn(async move {
                let result = match connect(addr).await {
                    Ok(client) => write(&client, &tag).await,
                    Err(e) => Err(e),
                };
                log.lock().unwrap().push(Write {
                    tag,
                    result,
                    at: wall(),
                });
            }));
        }
        for t in inflight {
            let _ = t.await;
        }
    })
}

/// Wall-clock time at which the `rw` route first satisfied `pred`, recorded by a watcher.
fn watch_route(
    proxy: &Proxy,
    pred: impl Fn(&[String]) -> bool + Send + 'static,
) -> tokio::task::JoinHandle<f64> {
    let router = proxy.app.router().clone();
    let name = rolegate::config::ListenerName::from("rw");
    tokio::spawn(async move {
        let mut changes = router.subscribe();
        loop {
            let names = support::route_names(&router, &name);
            if pred(&names) {
                return wall();
            }
            if changes.changed().await.is_err() {
                return f64::INFINITY;
            }
        }
    })
}

/// A direct (not proxied) connection to a lab node, as `app`.
async fn direct(node: char) -> tokio_postgres::Client {
    connect(Engine::Pg.addr(node))
        .await
        .unwrap_or_else(|e| panic!("direct connection to pg {node}: {e}"))
}

/// The tags of this run present in node's own table.
async fn tags_on(node: char) -> HashSet<String> {
    let pattern = format!("part-{}-%", std::process::id());
    direct(node)
        .await
        .query("SELECT node FROM writes WHERE node LIKE $1", &[&pattern])
        .await
        .expect("read writes")
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

/// Waits until B has replayed everything A has written so far.
async fn wait_b_caught_up() {
    let a = direct('A').await;
    let b = direct('B').await;
    let lsn: String = a
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .expect("A's LSN")
        .get(0);
    eventually(Duration::from_secs(20), "B replays A's WAL", || {
        let (b, lsn) = (&b, lsn.clone());
        async move {
            b.query_one(
                "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                &[&lsn],
            )
            .await
            .is_ok_and(|r| r.get::<_, bool>(0))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_primary_is_fenced_and_stays_fenced_after_the_heal() {
    let Some(_) = require::root_and_lab(&[Engine::Pg]) else {
        return;
    };
    let _lock = lab::lock();
    let _reset = lab::ResetOnPanic(Engine::Pg);
    lab::reset(Engine::Pg).await;
    let node = Node::new();
    let relay = Relay::spawn(node.listen(15432), Engine::Pg.addr('A'));
    let (interval, timeout, fall) = (0.5, 1.0, 2.0);
    let yaml = format!(
        "admin: {{ listen: 127.0.0.1:0 }}
clusters:
  - name: pg
    protocol: postgres
    check: {{ user: rolegate_monitor, password: \"{pw}\", database: postgres, interval: 500ms, timeout: 1s, rise: 2, fall: 2 }}
    backends:
      - {{ name: a, address: \"{a}\" }}
      - {{ name: b, address: \"{b}\" }}
listeners:
  - {{ name: rw, bind: \"127.0.0.1:0\", cluster: pg, role: primary, queue_timeout: 15s }}
",
        pw = lab::monitor_password(),
        a = relay.addr,
        b = Engine::Pg.addr('B'),
    );
    let proxy = Proxy::start(&yaml).await;
    proxy.wait_route("rw", "a primary", |n| n == ["a"]).await;
    let rw = proxy.addr("rw").await;
    let (a_port, b_port) = (Engine::Pg.addr('A').port(), Engine::Pg.addr('B').port());

    let stop = Arc::new(AtomicBool::new(false));
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let mut writers: Vec<_> = (0..3)
        .map(|i| long_session_writer(i, rw, stop.clone(), log.clone()))
        .collect();
    writers.push(new_connection_writer(rw, stop.clone(), log.clone()));
    eventually(Duration::from_secs(10), "writes on A", || {
        let n = log
            .lock()
            .unwrap()
            .iter()
            .filter(|w| w.result == Ok(a_port))
            .count();
        async move { n >= 50 }
    })
    .await;

    // 1. Partition. The checks time out and A is taken out; its sessions are closed.
    let fenced = watch_route(&proxy, |n| n.is_empty());
    let partitioned_at = wall();
    node.partition();
    let fenced_at = tokio::time::timeout(Duration::from_secs(10), fenced)
        .await
        .expect("A taken out within 10 s")
        .unwrap();
    let took = fenced_at - partitioned_at;
    assert!(
        took >= timeout && took <= fall * (interval + timeout) + 1.5,
        "A was taken out {took:.3} s after the partition; the checks allow {timeout} to {} s",
        fall * (interval + timeout)
    );
    eventually(
        Duration::from_secs(5),
        "the sessions on A are closed",
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
    let fenced_sessions = metric_value(
        &proxy.metrics(),
        "rolegate_sessions_fenced_total{backend=\"a\",cluster=\"pg\"}",
    )
    .unwrap_or(0.0);
    assert!(
        fenced_sessions >= 3.0,
        "the three long sessions were fenced: {fenced_sessions}"
    );

    // 2. Promote B once it has everything A acknowledged; A keeps running as primary, cut off
    //    from rolegate only.
    wait_b_caught_up().await;
    let promoted = watch_route(&proxy, |n| n == ["b"]);
    lab::scenario("promote", Engine::Pg).await;
    let promoted_at = tokio::time::timeout(Duration::from_secs(20), promoted)
        .await
        .expect("B routed within 20 s of its promotion")
        .unwrap();
    eventually(Duration::from_secs(10), "writes on B", || {
        let n = log
            .lock()
            .unwrap()
            .iter()
            .filter(|w| w.result == Ok(b_port))
            .count();
        async move { n >= 20 }
    })
    .await;

    // 3. Heal: A answers again, still claiming primary. Stale: never routed to.
    let healed_at = wall();
    node.heal();
    eventually(Duration::from_secs(15), "A back and stale", || {
        let a = proxy.try_backend_status("pg", "a");
        async move { a.is_some_and(|a| a.health == "up" && a.stale) }
    })
    .await;
    // Long enough for TCP to retransmit anything still queued towards A (the retransmission
    // timer backs off to several seconds during the partition).
    tokio::time::sleep(Duration::from_secs(12)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = tokio::time::timeout(Duration::from_secs(70), w).await;
    }
    let writes = log.lock().unwrap().clone();

    // The nodes' own tables are the judges.
    let on_a = tags_on('A').await;
    let on_b = tags_on('B').await;
    let acked_a: Vec<&Write> = writes.iter().filter(|w| w.result == Ok(a_port)).collect();
    let acked_b: Vec<&Write> = writes.iter().filter(|w| w.result == Ok(b_port)).collect();
    let failed = writes.iter().filter(|w| w.result.is_err()).count();
    let late_on_a: Vec<&Write> = acked_a
        .iter()
        .copied()
        .filter(|w| w.at > fenced_at)
        .collect();
    let reached_a_after_fence: Vec<&String> = on_a.difference(&on_b).collect();
    let lost: Vec<&Write> = acked_a
        .iter()
        .chain(acked_b.iter())
        .copied()
        .filter(|w| !on_b.contains(&w.tag))
        .collect();
    eprintln!(
        "partition: {} writes acknowledged by A, {} by B, {failed} failed; A fenced {took:.3} s \
         after the partition ({fenced_sessions} sessions closed); B routed {:.3} s after the \
         fence; healed {:.1} s after the partition",
        acked_a.len(),
        acked_b.len(),
        promoted_at - fenced_at,
        healed_at - partitioned_at,
    );
    assert!(
        late_on_a.is_empty(),
        "writes acknowledged by A after it was fenced: {late_on_a:?}"
    );
    assert!(
        reached_a_after_fence.is_empty(),
        "writes that reached A after it was fenced (A has them, B does not): {reached_a_after_fence:?}"
    );
    assert!(
        lost.is_empty(),
        "acknowledged writes missing on B: {lost:?}"
    );
    assert!(
        acked_b.iter().all(|w| w.at >= promoted_at - 0.5),
        "B acknowledged a write before rolegate routed to it"
    );
    assert!(
        acked_b.iter().any(|w| w.at > healed_at + 1.0),
        "writes kept flowing to B after the heal"
    );
    let m = proxy.metrics();
    assert_eq!(
        metric_value(&m, "rolegate_stale_primaries{cluster=\"pg\"}"),
        Some(1.0),
        "{m}"
    );
    proxy.stop().await;
    drop(relay);
    lab::reset(Engine::Pg).await;
}
