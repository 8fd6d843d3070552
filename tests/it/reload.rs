//! Hot reload under load: twenty reloads that add and remove listeners, clusters and backends
//! and rebind a listener, while two clients stream through rolegate; and changed check
//! settings reaching the running probes. Reloads go through the real file, alternately via
//! `POST /reload` and `App::reload_from_source` (what SIGHUP calls; see `reload_signals.rs`).

use crate::support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::config::{Check, Cluster, ConfigBuilder, Listener};
use support::files::ConfigFile;
use support::http::post;
use support::{eventually, fake, metric_value, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// The backends every variant may name.
struct Backends {
    a: fake::Backend,
    a2: fake::Backend,
    o1: fake::Backend,
    o2: fake::Backend,
}

/// Config variant `i`: `stream` never changes; `moving` alternates between 127.0.0.1 and
/// 127.0.0.2 (so it is rebound every time); `a2` comes and goes in `app`; cluster `other`
/// exists two variants out of three, with a listener of a new name each time.
fn variant(i: usize, b: &Backends) -> String {
    let check = Check::timing("200ms", "200ms", 1, 3);
    let mut app = Cluster::tcp("app")
        .check(check.clone())
        .backend("a", b.a.addr);
    if i % 2 == 1 {
        app = app.backend("a2", b.a2.addr);
    }
    let moving: std::net::SocketAddr = ([127, 0, 0, 1 + (i % 2) as u8], 0).into();
    let mut config = ConfigBuilder::new()
        .cluster(app)
        .listener(Listener::new("stream", "app").role("any"))
        .listener(Listener::new("moving", "app").role("any").bind(moving));
    if has_other(i) {
        let mut other = Cluster::tcp("other").check(check).backend("o1", b.o1.addr);
        if i.is_multiple_of(2) {
            other = other.backend("o2", b.o2.addr);
        }
        config = config
            .cluster(other)
            .listener(Listener::new(&format!("extra-{i}"), "other").role("any"));
    }
    config.yaml()
}

fn has_other(i: usize) -> bool {
    !i.is_multiple_of(3)
}

/// A client that writes consecutive little-endian `u64` counters until told to stop, then
/// half-closes; its reader checks every echoed byte against the counter sequence, so a lost,
/// duplicated or reordered byte is reported with its offset. `verified` counts the bytes
/// checked so far (so the test can see the stream move across each reload); the task returns
/// the total.
fn stream_client(
    stream: TcpStream,
    stop: Arc<AtomicBool>,
    verified: Arc<AtomicU64>,
) -> JoinHandle<u64> {
    let (mut r, mut w) = stream.into_split();
    let writer = tokio::spawn(async move {
        let mut next: u64 = 0;
        let mut pace = tokio::time::interval(Duration::from_millis(2));
        while !stop.load(Ordering::Relaxed) {
            pace.tick().await; // bounds the rate (~16 MB/s) so checks keep their timing
            let chunk: Vec<u8> = (next..next + 4096).flat_map(u64::to_le_bytes).collect();
            next += 4096;
            w.write_all(&chunk)
                .await
                .expect("stream write through rolegate");
        }
        w.shutdown().await.expect("half-close");
        next * 8
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut offset: u64 = 0;
        loop {
            let n = r
                .read(&mut buf)
                .await
                .expect("stream read through rolegate");
            if n == 0 {
                break;
            }
            for &byte in &buf[..n] {
                let want = (offset / 8).to_le_bytes()[(offset % 8) as usize];
                assert_eq!(byte, want, "stream corrupted at byte offset {offset}");
                offset += 1;
            }
            verified.store(offset, Ordering::Relaxed);
        }
        let written = writer.await.expect("writer");
        assert_eq!(offset, written, "echoed length differs from written length");
        offset
    })
}

async fn echo(addr: SocketAddr, payload: &[u8]) -> Result<(), String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.write_all(payload).await.map_err(|e| e.to_string())?;
    s.shutdown().await.map_err(|e| e.to_string())?;
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.map_err(|e| e.to_string())?;
    (back == payload)
        .then_some(())
        .ok_or_else(|| format!("bad echo via {addr}"))
}

/// New connections to an unchanged listener, back to back, until `stop`: every connect must
/// succeed (its socket never closes) and every session must be served — a full echo, or a
/// prefix when it landed on `a2` just as a reload removed it (its sessions are closed then).
/// Returns how many sessions it made.
fn keep_knocking(addr: SocketAddr, stop: Arc<AtomicBool>) -> JoinHandle<usize> {
    tokio::spawn(async move {
        let payload: Vec<u8> = (0u8..=255).cycle().take(32 * 1024).collect();
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let mut s = TcpStream::connect(addr)
                .await
                .unwrap_or_else(|e| panic!("an unchanged listener refused a connection: {e}"));
            let _ = s.write_all(&payload).await;
            let _ = s.shutdown().await;
            let mut back = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut back));
            assert!(
                read.await.is_ok(),
                "an accepted connection was never served"
            );
            assert!(payload.starts_with(&back), "wrong bytes on a new session");
            n += 1;
        }
        n
    })
}

async fn refuses(addr: SocketAddr, what: &str) {
    eventually(Duration::from_secs(10), what, || async move {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_reloads_under_streaming_load_lose_no_byte() {
    let b = Backends {
        a: fake::echo().spawn().await,
        a2: fake::echo().spawn().await,
        o1: fake::echo().spawn().await,
        o2: fake::echo().spawn().await,
    };
    let file = ConfigFile::new(&variant(0, &b));
    let proxy = Proxy::start_file(&file.path).await;
    proxy.wait_candidates("stream", 1).await;
    proxy.wait_candidates("moving", 1).await;
    let stream_addr = proxy.addr("stream").await;
    let mut moving_addr = proxy.addr("moving").await;

    let stop = Arc::new(AtomicBool::new(false));
    let progress = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let long = [
        stream_client(
            TcpStream::connect(stream_addr).await.unwrap(),
            stop.clone(),
            progress[0].clone(),
        ),
        stream_client(
            TcpStream::connect(moving_addr).await.unwrap(),
            stop.clone(),
            progress[1].clone(),
        ),
    ];
    let knocker = keep_knocking(stream_addr, stop.clone());
    let mut previous_extra: Option<SocketAddr> = None;
    for i in 1..=20 {
        let at_reload: Vec<u64> = progress.iter().map(|p| p.load(Ordering::Relaxed)).collect();
        file.write(&variant(i, &b));
        if i.is_multiple_of(2) {
            let r = post(proxy.admin(), "/reload", None).await;
            assert_eq!(r.status, 200, "reload {i}: {}", r.body);
        } else {
            proxy
                .app
                .reload_from_source()
                .await
                .unwrap_or_else(|e| panic!("reload {i}: {e}"));
        }
        assert_eq!(
            proxy.addr("stream").await,
            stream_addr,
            "an unchanged listener keeps its socket"
        );
        let moved = proxy.addr("moving").await;
        assert_eq!(
            moved.ip().to_string(),
            format!("127.0.0.{}", 1 + i % 2),
            "rebound"
        );
        refuses(moving_addr, "the old socket of a rebound listener closes").await;
        moving_addr = moved;
        if let Some(old) = previous_extra.take() {
            refuses(old, "a removed listener refuses").await;
        }
        if has_other(i) {
            let name = format!("extra-{i}");
            proxy.wait_candidates(&name, 1).await;
            let addr = proxy.addr(&name).await;
            echo(addr, b"new listener")
                .await
                .unwrap_or_else(|e| panic!("reload {i}: {e}"));
            previous_extra = Some(addr);
        }
        for addr in [stream_addr, moving_addr] {
            echo(addr, format!("after reload {i}").as_bytes())
                .await
                .unwrap_or_else(|e| panic!("reload {i}: {e}"));
        }
        // Both long sessions carry data across this reload before the next one.
        eventually(Duration::from_secs(10), "the streams move on", || {
            let moved = progress
                .iter()
                .zip(&at_reload)
                .all(|(p, before)| p.load(Ordering::Relaxed) > before + 64 * 1024);
            async move { moved }
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for client in long {
        let verified = tokio::time::timeout(Duration::from_secs(60), client)
            .await
            .expect("streams finish")
            .expect("stream intact");
        assert!(verified > 0);
    }
    let knocks = knocker.await.expect("knocker");
    assert!(
        knocks > 20,
        "only {knocks} new connections during the reloads"
    );
    let m = proxy.metrics();
    assert_eq!(
        metric_value(&m, "rolegate_config_reloads_total{result=\"success\"}"),
        Some(20.0)
    );
    assert_eq!(
        metric_value(&m, "rolegate_config_reloads_total{result=\"error\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric_value(
            &m,
            "rolegate_sessions_fenced_total{backend=\"a\",cluster=\"app\"}"
        ),
        Some(0.0),
        "no session of the unchanged backend was closed"
    );
    assert!(
        !m.contains("listener=\"extra-19\""),
        "removed listeners' series are dropped"
    );
    proxy.stop().await;
}

fn check_count(proxy: &Proxy) -> f64 {
    metric_value(
        &proxy.metrics(),
        "rolegate_check_duration_seconds_count{backend=\"a\",cluster=\"app\"}",
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn changed_check_settings_reach_the_running_probe_without_a_gap() {
    let a = fake::echo().spawn().await;
    let yaml = |interval: &str| {
        ConfigBuilder::new()
            .cluster(
                Cluster::tcp("app")
                    .check(Check::timing(interval, "100ms", 1, 2))
                    .backend("a", a.addr),
            )
            .listener(Listener::new("l", "app").role("any"))
            .yaml()
    };
    let file = ConfigFile::new(&yaml("1m"));
    let proxy = Proxy::start_file(&file.path).await;
    proxy.wait_candidates("l", 1).await;
    let generation = proxy.app.router().load().generation;
    let before = check_count(&proxy);
    assert!(before >= 1.0);

    // From once a minute to ten times a second: the running probe must pick the new interval
    // up now, not after the minute it was already waiting.
    file.write(&yaml("100ms"));
    proxy.app.reload_from_source().await.expect("reload");
    eventually(Duration::from_secs(5), "checks at the new interval (the running probe must reschedule its pending check when its settings change)", || {
        let n = check_count(&proxy);
        async move { n >= before + 5.0 }
    })
    .await;
    // The same probe kept running: the backend never went back to unknown, so the route was
    // never rebuilt without it.
    assert_eq!(proxy.app.router().load().generation, generation);
    let status = proxy.app.supervisor().status.load_full();
    assert_eq!(status.clusters[0].backends[0].health, "up");
    proxy.stop().await;
}
