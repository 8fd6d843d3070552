//! The admin server's own bounds, so admin clients cannot take resources from the data plane:
//! the header read timeout (silent and idle keep-alive connections) and the connection cap.
//! Each test runs a second admin server with tight limits on its own port-0 socket.

use crate::support;

use std::net::SocketAddr;
use std::time::Duration;

use rolegate::admin::{self, AdminHandle as AdminState, Limits};
use support::config::{Check, Cluster, ConfigBuilder, Listener};
use support::http::raw;
use support::{fake, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

fn yaml(a: SocketAddr) -> String {
    ConfigBuilder::new()
        .cluster(Cluster::tcp("app").check(Check::fast()).backend("a", a))
        .listener(Listener::new("rw", "app").role("any"))
        .yaml()
}

/// An admin server with tight limits on its own socket, serving `proxy`'s state.
async fn tight_server(proxy: &Proxy, limits: Limits) -> (SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let state = AdminState::new(proxy.app.clone());
    tokio::spawn(admin::serve_with(listener, state, limits, stop.clone()));
    (addr, stop)
}

#[tokio::test]
async fn silent_and_idle_connections_are_closed_by_the_header_timeout() {
    let a = fake::echo().spawn().await;
    let proxy = Proxy::start(&yaml(a.addr)).await;
    let limits = Limits {
        max_connections: 4,
        header_read_timeout: Duration::from_millis(200),
    };
    let (addr, stop) = tight_server(&proxy, limits).await;
    // Half a request head, then nothing: closed (hyper may answer 408 first).
    let partial = raw(addr, b"GET /status HTTP/1.1\r\nHost: x\r\n").await;
    assert!(
        partial.is_empty() || partial.starts_with("HTTP/1.1 408"),
        "{partial:?}"
    );
    // A keep-alive connection that goes idle after one answer is closed too, so idle clients
    // cannot hold the connection slots forever.
    let answer = raw(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    stop.cancel();
    proxy.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_slot() {
    let a = fake::echo().spawn().await;
    let proxy = Proxy::start(&yaml(a.addr)).await;
    let limits = Limits {
        max_connections: 1,
        header_read_timeout: Duration::from_secs(30),
    };
    let (addr, stop) = tight_server(&proxy, limits).await;
    let mut holder = TcpStream::connect(addr).await.unwrap();
    holder
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    holder.read_exact(&mut first).await.unwrap();
    assert_eq!(
        &first, b"HTTP/1.1 200",
        "the holder is being served (keep-alive)"
    );
    let waiting = tokio::spawn(raw(
        addr,
        b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n",
    ));
    // Absence check: the second client is not served while the only slot is held.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "served beyond the connection cap");
    drop(holder);
    let answer = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    stop.cancel();
    proxy.stop().await;
}
