//! Stopping under load: SIGTERM to the real binary while 1,000 sessions stream through it.
//! Every byte in flight must arrive (each session is checked end to end), the process must
//! exit with status 0 once the last session is done — well within the grace period — and new
//! connections must be refused from the moment the signal arrives.

use crate::support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};
use support::binary::{self, Rolegate, Start};
use support::config::{Check, Cluster, ConfigBuilder, Listener};
use support::fake;
use support::files::ConfigFile;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SESSIONS: usize = 1000;
/// Each session sends CHUNKS chunks of CHUNK bytes, one every PACE: about 2 s of streaming.
const CHUNKS: usize = 40;
const CHUNK: usize = 2048;
const PACE: Duration = Duration::from_millis(50);
const GRACE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_1000_streaming_sessions_delivers_every_byte_and_exits_0() {
    support::raise_fd_limit(8192);
    let backend = fake::echo().spawn().await;
    let file = ConfigFile::new(
        &ConfigBuilder::new()
            .set("log", json!({ "format": "json" }))
            .set("shutdown_grace", format!("{}s", GRACE.as_secs()))
            .cluster(
                Cluster::tcp("app")
                    .check(
                        Check::default()
                            .set("interval", "1s")
                            .set("timeout", "500ms"),
                    )
                    .backend("a", backend.addr),
            )
            .listener(Listener::new("rw", "app").role("any").set("backlog", 2048))
            .yaml(),
    );
    let mut rg = Rolegate::start(&file.path, Start::nofile(8192)).await;
    let admin = rg.admin();
    binary::wait_ready(admin).await;
    let rw = binary::listener_addr(admin, "rw").await;

    // Every session is placed (its first chunk echoed) before any streaming starts.
    let mut clients = Vec::with_capacity(SESSIONS);
    for _ in 0..SESSIONS {
        let mut c = TcpStream::connect(rw).await.expect("connect");
        c.write_all(b"hello").await.unwrap();
        let mut b = [0u8; 5];
        c.read_exact(&mut b).await.expect("placed");
        clients.push(c);
    }
    let streaming = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let streaming = streaming.clone();
            tokio::spawn(async move {
                let (mut r, mut w) = c.into_split();
                let writer = tokio::spawn(async move {
                    let mut sent = Sha256::new();
                    let mut tick = tokio::time::interval(PACE);
                    for n in 0..CHUNKS {
                        tick.tick().await;
                        let chunk = vec![(i + n) as u8; CHUNK];
                        w.write_all(&chunk).await?;
                        sent.update(&chunk);
                    }
                    w.shutdown().await?;
                    std::io::Result::Ok(<[u8; 32]>::from(sent.finalize()))
                });
                streaming.fetch_add(1, Ordering::Relaxed);
                let mut got = Sha256::new();
                let mut total = 0;
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = r.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    got.update(&buf[..n]);
                    total += n;
                }
                let sent = writer.await.expect("writer")?;
                assert_eq!(total, CHUNKS * CHUNK, "session {i}: bytes echoed");
                assert_eq!(
                    <[u8; 32]>::from(got.finalize()),
                    sent,
                    "session {i}: content"
                );
                std::io::Result::Ok(Instant::now())
            })
        })
        .collect();
    while streaming.load(Ordering::Relaxed) < SESSIONS {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let signalled = Instant::now();
    rg.signal(libc::SIGTERM);
    // New clients are refused from now on (the listening socket is closed).
    support::eventually(Duration::from_secs(5), "listener closed", || async move {
        TcpStream::connect(rw).await.is_err()
    })
    .await;
    let mut last_done = signalled;
    for (i, t) in tasks.into_iter().enumerate() {
        let done = tokio::time::timeout(GRACE, t)
            .await
            .unwrap_or_else(|_| panic!("session {i} did not finish within the grace period"))
            .unwrap()
            .unwrap_or_else(|e| panic!("session {i} failed during the drain: {e}"));
        last_done = last_done.max(done);
    }
    let status = rg
        .wait(GRACE)
        .await
        .expect("rolegate exits after its sessions");
    let exited = signalled.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "{:#?}",
        rg.lines().iter().rev().take(20).collect::<Vec<_>>()
    );
    assert!(
        exited < GRACE,
        "exit took {exited:?}, the whole grace period"
    );
    let sessions_logged = rg
        .json_lines()
        .iter()
        .filter(|v| v["message"] == "Session closed." && v["reason"] == "completed")
        .count();
    assert!(
        sessions_logged >= SESSIONS,
        "{sessions_logged} sessions logged as completed; shutdown must not cut any"
    );
    eprintln!(
        "restart under load: {SESSIONS} sessions x {} KiB delivered; last session done {:?} after SIGTERM, exit 0 after {exited:?}",
        CHUNKS * CHUNK / 1024,
        last_done - signalled
    );
}
