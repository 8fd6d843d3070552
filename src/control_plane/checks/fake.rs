//! Scripted fake servers for the probes' protocol tests: bound on `127.0.0.1:0`, one task per
//! accepted connection running the test's script, counting connections (to prove session
//! reuse). Also the classic impostors a probe can meet on a port: an SSH daemon, an HTTP
//! server, a port that closes at once, one that never answers.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A running fake server; dropping it stops accepting and aborts nothing else.
pub(crate) struct FakeServer {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl FakeServer {
    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves every connection with `script(stream, n)`, `n` counting from 1.
pub(crate) async fn serve<F, Fut>(script: F) -> FakeServer
where
    F: Fn(TcpStream, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind fake server");
    let addr = listener.local_addr().expect("fake server address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::spawn(script(stream, n));
        }
    });
    FakeServer {
        addr,
        accepted,
        task,
    }
}

/// An address where nothing listens (bound, then closed).
pub(crate) async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("address")
}

/// An SSH daemon: banner first, then a complaint and EOF as soon as the client says anything.
pub(crate) async fn ssh(mut stream: TcpStream, _: usize) {
    let _ = stream
        .write_all(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
        .await;
    let mut buf = [0u8; 256];
    if matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {
        let _ = stream
            .write_all(b"Invalid SSH identification string.\r\n")
            .await;
    }
}

/// An HTTP server: reads what the client sends, answers 400 and closes.
pub(crate) async fn http(mut stream: TcpStream, _: usize) {
    let mut buf = [0u8; 1024];
    let _ = stream.read(&mut buf).await;
    let _ = stream
        .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await;
}

/// Accepts and closes at once.
pub(crate) async fn close_at_once(stream: TcpStream, _: usize) {
    drop(stream);
}

/// Accepts, reads everything, never writes a byte (a hung server).
pub(crate) async fn silent(mut stream: TcpStream, _: usize) {
    let mut buf = [0u8; 1024];
    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
    tokio::time::sleep(Duration::from_secs(3600)).await;
}
