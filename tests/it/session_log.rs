//! The per-session close line: a stalled stream is closed after `idle_timeout`, and the log
//! says so. Alone in a child process because it installs a global log subscriber.

use crate::support;

use std::time::Duration;

use support::config::{Check, Cluster, ConfigBuilder, Listener};
use support::logs::Captured;
use support::{eventually, fake, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Installs a process-wide log subscriber, so it runs alone in a child process: it would
/// collect the logs of every proxy the tests beside it start.
#[test]
fn a_stalled_stream_is_closed_after_idle_timeout_with_the_reason_logged() {
    support::isolated(
        "session_log::a_stalled_stream_is_closed_after_idle_timeout_with_the_reason_logged_alone",
    );
}

#[tokio::test]
#[ignore = "installs a global log subscriber; run alone, in a child process, by a_stalled_stream_is_closed_after_idle_timeout_with_the_reason_logged"]
async fn a_stalled_stream_is_closed_after_idle_timeout_with_the_reason_logged_alone() {
    let logs = Captured::install();

    let backend = fake::echo().spawn().await;
    let yaml = ConfigBuilder::new()
        .cluster(
            Cluster::tcp("app")
                .set("idle_timeout", "300ms")
                .check(Check::once())
                .backend("a", backend.addr),
        )
        .listener(Listener::new("rw", "app").role("primary"))
        .yaml();
    let proxy = Proxy::start(&yaml).await;
    proxy.wait_candidates("rw", 1).await;
    let mut client = TcpStream::connect(proxy.addr("rw").await).await.unwrap();
    // Activity keeps the session open past one idle period...
    for _ in 0..4 {
        client.write_all(b"tick").await.unwrap();
        let mut b = [0u8; 4];
        client.read_exact(&mut b).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await; // the traffic pattern under test
    }
    // ... then a stall closes it.
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf))
        .await
        .expect("closed by the proxy, not by the test timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);
    eventually(Duration::from_secs(5), "close line logged", || {
        let text = logs.text();
        async move { text.contains("Session closed.") }
    })
    .await;
    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("Session closed."))
        .unwrap();
    assert!(line.contains("reason=\"idle_timeout\""), "{line}");
    assert!(line.contains("listener=rw"), "{line}");
    assert!(
        line.contains("bytes_in=16") && line.contains("bytes_out=16"),
        "{line}"
    );
    proxy.stop().await;
}
