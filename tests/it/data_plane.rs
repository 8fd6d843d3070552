//! Data-plane integration tests: a real proxy in-process, fake backends, ephemeral ports.

use crate::support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::RngCore;
use rolegate::control_plane::supervisor::AdminAction;
use rolegate::routing::BackendKey;
use sha2::{Digest, Sha256};
use support::config::{Check, Cluster, ConfigBuilder, Listener};
use support::{eventually, fake, metric_value, open_fds, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A tcp cluster `app` with the given backends, one `role: any` listener `rw` (round robin)
/// and a primary listener `pri`; tests change parts with `edit_cluster` / `edit_listener`.
fn config(backends: &[(&str, std::net::SocketAddr)]) -> ConfigBuilder {
    let mut app = Cluster::tcp("app").check(Check::once());
    for (name, addr) in backends {
        app = app.backend(name, addr);
    }
    ConfigBuilder::new()
        .cluster(app)
        .listener(
            Listener::new("rw", "app")
                .role("any")
                .set("queue_timeout", "0s"),
        )
        .listener(
            Listener::new("pri", "app")
                .role("primary")
                .set("queue_timeout", "0s"),
        )
}

fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

/// Writes `data` and reads the echo at the same time; returns the echo's hash.
async fn echo_roundtrip(stream: TcpStream, data: &[u8]) -> [u8; 32] {
    let (mut r, mut w) = stream.into_split();
    let len = data.len();
    let data = data.to_vec();
    let writer = tokio::spawn(async move {
        for chunk in data.chunks(256 * 1024) {
            w.write_all(chunk).await.expect("write through proxy");
        }
        w.shutdown().await.expect("half-close");
    });
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 128 * 1024];
    let mut got = 0;
    loop {
        let n = r.read(&mut buf).await.expect("read through proxy");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        got += n;
    }
    writer.await.expect("writer");
    assert_eq!(got, len, "echoed length");
    hasher.finalize().into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_transfer_is_byte_exact_in_both_directions_and_spliced() {
    let backend = fake::echo().spawn().await;
    let proxy = Proxy::start(&config(&[("a", backend.addr)]).yaml()).await;
    proxy.wait_candidates("rw", 1).await;
    let data = random(16 * 1024 * 1024);
    let expect: [u8; 32] = Sha256::digest(&data).into();
    let client = TcpStream::connect(proxy.addr("rw").await).await.unwrap();
    assert_eq!(echo_roundtrip(client, &data).await, expect);
    // The session's counters land when it ends.
    eventually(Duration::from_secs(5), "bytes counted", || {
        let m = proxy.metrics();
        async move {
            metric_value(&m, "rolegate_bytes_total{backend=\"a\",direction=\"client_to_backend\",listener=\"rw\"}") == Some(16.0 * 1024.0 * 1024.0)
        }
    })
    .await;
    let m = proxy.metrics();
    assert_eq!(
        metric_value(
            &m,
            "rolegate_bytes_total{backend=\"a\",direction=\"backend_to_client\",listener=\"rw\"}"
        ),
        Some(16.0 * 1024.0 * 1024.0)
    );
    let spliced = metric_value(&m, "rolegate_spliced_bytes_total{listener=\"rw\"}").unwrap_or(0.0);
    if cfg!(target_os = "linux") {
        assert!(
            spliced > 0.0,
            "bulk transfer on Linux must use splice(2); metrics:\n{m}"
        );
    }
    proxy.stop().await;
}

#[tokio::test]
async fn half_close_keeps_the_other_direction_flowing() {
    let backend = fake::reply_at_eof().spawn().await;
    let proxy = Proxy::start(&config(&[("a", backend.addr)]).yaml()).await;
    proxy.wait_candidates("rw", 1).await;
    let mut client = TcpStream::connect(proxy.addr("rw").await).await.unwrap();
    client.write_all(&[7u8; 100_000]).await.unwrap();
    client.shutdown().await.unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).await.unwrap();
    assert_eq!(answer, "got 100000 bytes");
    proxy.stop().await;
}

/// Counts this process's descriptors, so it runs alone in a child process: the tests beside it
/// in this binary open and close their own meanwhile.
#[test]
fn a_thousand_concurrent_sessions_complete_and_leak_nothing() {
    support::isolated("data_plane::a_thousand_concurrent_sessions_complete_and_leak_nothing_alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "counts process-wide descriptors; run alone, in a child process, by a_thousand_concurrent_sessions_complete_and_leak_nothing"]
async fn a_thousand_concurrent_sessions_complete_and_leak_nothing_alone() {
    let backend = fake::echo().spawn().await;
    let proxy = Proxy::start(&config(&[("a", backend.addr)]).yaml()).await;
    proxy.wait_candidates("rw", 1).await;
    let addr = proxy.addr("rw").await;
    // Warm-up: let the runtime and pipe pools reach their steady size before the baseline.
    let warm = random(256 * 1024);
    echo_roundtrip(TcpStream::connect(addr).await.unwrap(), &warm).await;
    let baseline = open_fds();

    let mut clients = Vec::new();
    for _ in 0..1000 {
        clients.push(TcpStream::connect(addr).await.expect("connect"));
    }
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            tokio::spawn(async move {
                let msg = format!("session {i} says hello").into_bytes();
                c.write_all(&msg).await?;
                let mut back = vec![0u8; msg.len()];
                c.read_exact(&mut back).await?;
                assert_eq!(back, msg);
                c.shutdown().await?;
                let mut rest = Vec::new();
                c.read_to_end(&mut rest).await?;
                assert!(rest.is_empty());
                std::io::Result::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().expect("session completes");
    }
    eventually(Duration::from_secs(10), "sessions closed", || {
        let n = proxy.app.sessions();
        async move { n == 0 }
    })
    .await;
    // Pooled pipes are bounded and may stay open; nothing else may.
    eventually(Duration::from_secs(10), "fd count back to baseline", || {
        let now = open_fds();
        async move { now <= baseline + 64 }
    })
    .await;
    assert_eq!(
        metric_value(
            &proxy.metrics(),
            "rolegate_sessions_active{backend=\"a\",listener=\"rw\"}"
        ),
        Some(0.0)
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_refusing_first_backend_fails_over_to_the_next_and_asks_for_a_recheck() {
    let a = fake::named("a").spawn().await;
    let b = fake::named("b").spawn().await;
    let proxy = Proxy::start(
        &config(&[("a", a.addr), ("b", b.addr)])
            .edit_cluster("app", |c| c.set("connect_timeout", "300ms"))
            .yaml(),
    )
    .await;
    proxy.wait_candidates("pri", 2).await;
    a.stop().await; // the port now refuses; the probe will not look again for 10 s unless asked
    let mut client = TcpStream::connect(proxy.addr("pri").await).await.unwrap();
    let mut greeting = [0u8; 2];
    client.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"b\n");
    let m = proxy.metrics();
    assert_eq!(
        metric_value(
            &m,
            "rolegate_connect_errors_total{backend=\"a\",listener=\"pri\",reason=\"refused\"}"
        ),
        Some(1.0),
        "{m}"
    );
    // The failed connect triggered an immediate re-check, which takes `a` out of the route.
    proxy
        .wait_route("pri", "a removed", |names| names == ["b"])
        .await;
    proxy.stop().await;
}

#[tokio::test]
async fn a_blackholed_first_backend_times_out_and_fails_over() {
    // A listener with a tiny backlog that never accepts: once its queue is full, further SYNs
    // are dropped and connects hang, as with a frozen host.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    sock.listen(0).unwrap();
    let hole = sock.local_addr().unwrap().as_socket().unwrap();
    let b = fake::named("b").spawn().await;
    let proxy = Proxy::start(
        &config(&[("hole", hole), ("b", b.addr)])
            .edit_cluster("app", |c| c.set("connect_timeout", "300ms"))
            .yaml(),
    )
    .await;
    proxy.wait_candidates("pri", 2).await;
    // Fill the accept queue (the health check already used one slot).
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(hole)).await
        {
            fillers.push(s);
        }
    }
    let mut client = TcpStream::connect(proxy.addr("pri").await).await.unwrap();
    let mut greeting = [0u8; 2];
    client.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"b\n");
    let m = proxy.metrics();
    assert_eq!(
        metric_value(
            &m,
            "rolegate_connect_errors_total{backend=\"hole\",listener=\"pri\",reason=\"timeout\"}"
        ),
        Some(1.0),
        "{m}"
    );
    drop(sock);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_table_swaps_do_not_disturb_streaming_sessions() {
    let a = fake::echo().spawn().await;
    let b = fake::echo().spawn().await;
    let extra = fake::echo().spawn().await;
    let base = config(&[("a", a.addr), ("b", b.addr)]).yaml();
    let proxy = Proxy::start(&base).await;
    proxy.wait_candidates("rw", 2).await;
    let addr = proxy.addr("rw").await;
    let generation_before = proxy.app.router().load().generation;

    // Every session is placed (on a or b) before the first swap.
    let mut clients = Vec::new();
    for _ in 0..100 {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        let mut b = [0u8; 5];
        c.read_exact(&mut b).await.unwrap();
        clients.push(c);
    }
    let sessions: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                for round in 0..200u32 {
                    let msg = format!("{i}:{round}:").repeat(50).into_bytes();
                    c.write_all(&msg).await?;
                    c.read_exact(&mut buf[..msg.len()]).await?;
                    assert_eq!(&buf[..msg.len()], &msg[..], "session {i} round {round}");
                    tokio::task::yield_now().await;
                }
                std::io::Result::Ok(())
            })
        })
        .collect();
    // 20 reloads that add and remove a backend, each storing a new table.
    let with_extra = config(&[("a", a.addr), ("b", b.addr), ("c", extra.addr)]).yaml();
    for i in 0..20 {
        let yaml = if i % 2 == 0 { &with_extra } else { &base };
        let cfg = rolegate::config::Config::from_yaml_str(yaml, None).unwrap();
        proxy.app.reload(cfg).await.expect("reload");
        if i % 2 == 0 {
            proxy.wait_candidates("rw", 3).await;
        }
    }
    for s in sessions {
        s.await.unwrap().expect("no session was disturbed");
    }
    assert!(proxy.app.router().load().generation >= generation_before + 20);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_backends_guard_closes_exactly_its_sessions() {
    let a = fake::named("a").spawn().await;
    let b = fake::named("b").spawn().await;
    let proxy = Proxy::start(&config(&[("a", a.addr), ("b", b.addr)]).yaml()).await;
    proxy.wait_candidates("rw", 2).await;
    let addr = proxy.addr("rw").await;
    let mut on_a = Vec::new();
    let mut on_b = Vec::new();
    for _ in 0..10 {
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut who = [0u8; 2];
        c.read_exact(&mut who).await.unwrap();
        match &who {
            b"a\n" => on_a.push(c),
            _ => on_b.push(c),
        }
    }
    assert!(
        !on_a.is_empty() && !on_b.is_empty(),
        "round robin spreads sessions"
    );
    let key = BackendKey {
        cluster: "app".into(),
        backend: "a".into(),
    };
    proxy
        .app
        .supervisor()
        .admin(key, AdminAction::Disable)
        .await
        .unwrap();
    for c in &mut on_a {
        let mut buf = [0u8; 16];
        let n = c.read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0, "session on the disabled backend is closed");
    }
    for c in &mut on_b {
        c.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
    }
    assert_eq!(
        a.sessions.load(Ordering::Relaxed),
        0,
        "named backends count only sessions that sent bytes"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn max_connections_holds_extra_clients_in_the_kernel_queue() {
    let backend = fake::echo().spawn().await;
    let yaml = config(&[("a", backend.addr)])
        .edit_listener("rw", |l| l.set("max_connections", 2))
        .yaml();
    let proxy = Proxy::start(&yaml).await;
    proxy.wait_candidates("rw", 1).await;
    let addr = proxy.addr("rw").await;
    let mut first = TcpStream::connect(addr).await.unwrap();
    let mut second = TcpStream::connect(addr).await.unwrap();
    for c in [&mut first, &mut second] {
        c.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        c.read_exact(&mut b).await.unwrap();
    }
    // The third completes the TCP handshake in the kernel but is not served yet.
    let mut third = TcpStream::connect(addr).await.unwrap();
    third.write_all(b"y").await.unwrap();
    let mut b = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), third.read_exact(&mut b))
            .await
            .is_err(),
        "third client must wait while two sessions are open"
    );
    eventually(Duration::from_secs(5), "refusal counted", || {
        let m = proxy.metrics();
        async move {
            metric_value(
                &m,
                "rolegate_listener_refused_total{listener=\"rw\",reason=\"max_connections\"}",
            )
            .is_some_and(|v| v >= 1.0)
        }
    })
    .await;
    drop(first);
    third.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"y");
    proxy.stop().await;
}

#[tokio::test]
async fn no_backend_refuses_after_queue_timeout_and_queued_clients_are_served_when_one_appears() {
    // Reserve a port, then free it: the backend is down when the proxy starts.
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port_addr = reserved.local_addr().unwrap();
    drop(reserved);
    let yaml = config(&[("a", port_addr)])
        .edit_cluster("app", |c| {
            c.check(Check::timing("100ms", "100ms", 1, 1).set("down_interval", "50ms"))
        })
        .edit_listener("pri", |l| l.set("queue_timeout", "20s"))
        .yaml();
    let proxy = Proxy::start(&yaml).await;
    // `rw` has no queue: refused at once.
    let mut c = TcpStream::connect(proxy.addr("rw").await).await.unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(c.read(&mut buf).await.unwrap_or(0), 0);
    // `pri` queues; the backend appears; the queued client is served.
    let pri = proxy.addr("pri").await;
    let queued = tokio::spawn(async move {
        let mut c = TcpStream::connect(pri).await.unwrap();
        c.write_all(b"hi").await.unwrap();
        let mut b = [0u8; 2];
        c.read_exact(&mut b).await.map(|_| b)
    });
    eventually(Duration::from_secs(5), "client queued", || {
        let m = proxy.metrics();
        async move { metric_value(&m, "rolegate_queued_connections{listener=\"pri\"}") == Some(1.0) }
    })
    .await;
    let listener = tokio::net::TcpListener::bind(port_addr).await.unwrap();
    let _backend = fake::echo().spawn_on(listener);
    assert_eq!(&queued.await.unwrap().unwrap(), b"hi");
    let m = proxy.metrics();
    assert_eq!(
        metric_value(
            &m,
            "rolegate_listener_refused_total{listener=\"rw\",reason=\"no_backend\"}"
        ),
        Some(1.0),
        "{m}"
    );
    proxy.stop().await;
}

/// Connections waiting in the queue hold a slot of the listener's `max_connections`: with
/// `max_connections: 3` and five clients waiting for a backend, three are queued in rolegate and
/// two wait in the kernel's backlog; when the backend appears, three are placed (at most three
/// backend connections at once, what keeps a failover's burst under the database's own limit)
/// and the other two follow as those end.
#[tokio::test]
async fn queued_connections_count_against_max_connections_and_drain_in_waves() {
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port_addr = reserved.local_addr().unwrap();
    drop(reserved);
    let yaml = config(&[("a", port_addr)])
        .edit_cluster("app", |c| {
            c.check(Check::timing("100ms", "100ms", 1, 1).set("down_interval", "50ms"))
        })
        .edit_listener("pri", |l| {
            l.set("queue_timeout", "30s").set("max_connections", 3)
        })
        .yaml();
    let proxy = Proxy::start(&yaml).await;
    let pri = proxy.addr("pri").await;
    // Each client sends its number, reports it once echoed, and stays open until told.
    let (echoed_tx, mut echoed) = tokio::sync::mpsc::unbounded_channel();
    let mut close = Vec::new();
    for i in 0..5u8 {
        let mut c = TcpStream::connect(pri).await.unwrap();
        c.write_all(&[i]).await.unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        close.push(Some(tx));
        let echoed_tx = echoed_tx.clone();
        tokio::spawn(async move {
            let mut b = [0u8; 1];
            if c.read_exact(&mut b).await.is_ok() {
                let _ = echoed_tx.send(b[0]);
            }
            let _ = rx.await;
        });
    }
    eventually(
        Duration::from_secs(5),
        "three queued, the rest stalled",
        || {
            let m = proxy.metrics();
            async move {
                metric_value(&m, "rolegate_queued_connections{listener=\"pri\"}") == Some(3.0)
                && metric_value(
                    &m,
                    "rolegate_listener_refused_total{listener=\"pri\",reason=\"max_connections\"}",
                )
                .is_some_and(|v| v >= 1.0)
            }
        },
    )
    .await;
    let listener = tokio::net::TcpListener::bind(port_addr).await.unwrap();
    let backend = fake::echo().spawn_on(listener);
    // The first wave: three placed, no more while they are open.
    let mut first = Vec::new();
    for _ in 0..3 {
        let i = tokio::time::timeout(Duration::from_secs(10), echoed.recv())
            .await
            .expect("a queued client is served")
            .unwrap();
        first.push(i);
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), echoed.recv())
            .await
            .is_err(),
        "a fourth session must wait while three are open"
    );
    assert_eq!(backend.sessions.load(Ordering::Relaxed), 3);
    // The second wave follows as the first ends.
    for i in &first {
        drop(close[usize::from(*i)].take());
    }
    let mut all = first.clone();
    for _ in 0..2 {
        let i = tokio::time::timeout(Duration::from_secs(10), echoed.recv())
            .await
            .expect("a stalled client is served once a slot frees")
            .unwrap();
        all.push(i);
    }
    all.sort_unstable();
    assert_eq!(all, [0, 1, 2, 3, 4]);
    assert_eq!(backend.sessions.load(Ordering::Relaxed), 5);
    drop(close);
    proxy.stop().await;
}

#[tokio::test]
async fn graceful_stop_lets_sessions_finish_within_the_grace_period() {
    let backend = fake::reply_at_eof().spawn().await;
    let proxy = Proxy::start(&config(&[("a", backend.addr)]).yaml()).await;
    proxy.wait_candidates("rw", 1).await;
    let addr = proxy.addr("rw").await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"in flight").await.unwrap();
    eventually(Duration::from_secs(5), "session placed", || {
        let n = proxy.app.sessions();
        async move { n == 1 }
    })
    .await;
    let app = proxy.app.clone();
    let stopping = tokio::spawn(async move { app.shutdown(Duration::from_secs(30)).await });
    // New connections are no longer accepted...
    eventually(Duration::from_secs(5), "listener closed", || async move {
        match TcpStream::connect(addr).await {
            Err(_) => true,
            Ok(mut s) => {
                let mut b = [0u8; 1];
                matches!(
                    tokio::time::timeout(Duration::from_millis(100), s.read(&mut b)).await,
                    Ok(Ok(0)) | Ok(Err(_))
                )
            }
        }
    })
    .await;
    // ... but the session in flight finishes normally.
    client.shutdown().await.unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).await.unwrap();
    assert_eq!(answer, "got 9 bytes");
    stopping.await.unwrap();
}

#[tokio::test]
async fn raising_max_connections_by_reload_admits_waiting_clients_without_rebinding() {
    let backend = fake::echo().spawn().await;
    let yaml = |max: usize| {
        config(&[("a", backend.addr)])
            .edit_listener("rw", |l| l.set("max_connections", max))
            .yaml()
    };
    let proxy = Proxy::start(&yaml(1)).await;
    proxy.wait_candidates("rw", 1).await;
    let addr = proxy.addr("rw").await;
    let mut first = TcpStream::connect(addr).await.unwrap();
    first.write_all(b"1").await.unwrap();
    let mut b = [0u8; 1];
    first.read_exact(&mut b).await.unwrap();
    let mut second = TcpStream::connect(addr).await.unwrap();
    second.write_all(b"2").await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), second.read_exact(&mut b))
            .await
            .is_err(),
        "the second client waits while the limit is 1"
    );
    let cfg = rolegate::config::Config::from_yaml_str(&yaml(2), None).unwrap();
    proxy.app.reload(cfg).await.unwrap();
    second.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"2");
    // The first session was never interrupted and the address did not change.
    first.write_all(b"x").await.unwrap();
    first.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"x");
    assert_eq!(proxy.addr("rw").await, addr);
    drop((first, second));
    proxy.stop().await;
}
