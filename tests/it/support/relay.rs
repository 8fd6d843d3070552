//! User-space TCP relays for the fault tests.
//!
//! The lab's servers listen on 127.0.0.1 of the root namespace, which a network namespace
//! cannot reach. A [`Relay`] listens *inside* a fault node's namespace (its socket was created
//! there) and connects *from the root namespace* to the real server, so rolegate reaches the
//! server only through the node — and through the node's nftables rules. It also stands in for
//! `tc netem delay`, which this kernel lacks: with [`Relay::set_delay`] every chunk waits that
//! long before it is passed on, in both directions, in order.
//!
//! [`silent`] is the other kind of backend: it accepts TCP connections and never sends a byte.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

pub struct Relay {
    pub addr: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Drop for Relay {
    /// Stops accepting and drops every relayed connection (the accept task owns them).
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    /// Relays connections accepted on `listener` (created in a node's namespace, see
    /// `Node::listen`) to `upstream`. Must be called inside a tokio runtime.
    pub fn spawn(listener: std::net::TcpListener, upstream: SocketAddr) -> Relay {
        let addr = listener.local_addr().expect("relay address");
        let listener = TcpListener::from_std(listener).expect("tokio listener");
        let delay_ms = Arc::new(AtomicU64::new(0));
        let delay = delay_ms.clone();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((inbound, _)) = accepted else { continue };
                        connections.spawn(relay_one(inbound, upstream, delay.clone()));
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Relay {
            addr,
            delay_ms,
            task,
        }
    }

    /// Every chunk from now on waits `delay` before it is forwarded (each direction).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }
}

async fn relay_one(inbound: TcpStream, upstream: SocketAddr, delay: Arc<AtomicU64>) {
    let Ok(outbound) = TcpStream::connect(upstream).await else {
        return; // dropping `inbound` closes it, as a dead server would
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    // Either direction failing (a reset) ends both: the other side is dropped, not kept half
    // open, like a real server process whose client vanished. Both ending cleanly ends it too.
    let to_server = pump(in_read, out_write, delay.clone());
    let to_client = pump(out_read, in_write, delay);
    tokio::pin!(to_server, to_client);
    let (mut server_done, mut client_done) = (false, false);
    while !(server_done && client_done) {
        tokio::select! {
            clean = &mut to_server, if !server_done => {
                if !clean { return; }
                server_done = true;
            }
            clean = &mut to_client, if !client_done => {
                if !clean { return; }
                client_done = true;
            }
        }
    }
}

/// Copies `from` → `to`, each chunk held for the current delay; EOF becomes a half-close.
/// Returns `true` when this direction ended with a clean EOF.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Arc<AtomicU64>) -> bool {
    let (tx, mut rx) = mpsc::channel::<(Instant, Option<Vec<u8>>)>(256);
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            match chunk {
                Some(bytes) => {
                    if to.write_all(&bytes).await.is_err() {
                        return false;
                    }
                }
                None => return to.shutdown().await.is_ok(),
            }
        }
        false
    };
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(n) => n,
                Err(_) => return false,
            };
            let due = Instant::now() + Duration::from_millis(delay.load(Ordering::Relaxed));
            let chunk = (n > 0).then(|| buf[..n].to_vec());
            if tx.send((due, chunk)).await.is_err() {
                return false;
            }
            if n == 0 {
                return true;
            }
        }
    };
    let (read_ok, write_ok) = tokio::join!(reader, writer);
    read_ok && write_ok
}

/// A backend that completes the TCP handshake and then never sends a byte (a wedged server
/// whose kernel still accepts). Connections are held until the returned task is aborted.
pub fn silent(listener: std::net::TcpListener) -> JoinHandle<()> {
    let listener = TcpListener::from_std(listener).expect("tokio listener");
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            if let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        }
    })
}

/// Aborts a task when dropped.
pub struct AbortOnDrop(pub JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
