//! Listening sockets and the accept loop.
//!
//! Sockets are built with socket2 so that operators get what a database endpoint needs:
//! `SO_REUSEADDR` (restart without waiting for TIME_WAIT), `IP_FREEBIND` (bind a keepalived VIP
//! before it arrives on this host), `IPV6_V6ONLY` for `[::]` binds (so `0.0.0.0:P` can be a
//! separate listener) and a configurable backlog.
//!
//! The accept loop takes a connection permit *before* `accept()`: at `max_connections` it
//! simply stops accepting and the kernel's backlog holds the rest (counted once per stall).
//! Resource errors (EMFILE, ENFILE, ENOBUFS, ENOMEM) back off briefly instead of spinning or
//! exiting; per-connection errors are ignored.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn, Instrument};

use crate::session::{self, ListenerContext};

/// Back-off after a resource-exhaustion accept error: long enough for sessions to end and free
/// descriptors, short enough that service resumes quickly.
const RESOURCE_BACKOFF: Duration = Duration::from_millis(100);

/// A listening socket could not be created.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: io::Error,
}

/// Creates a listening socket for `addr`.
///
/// # Errors
/// Socket creation, option or bind failures (address in use, permission denied for ports
/// below 1024 without `CAP_NET_BIND_SERVICE`).
pub fn bind(addr: SocketAddr, backlog: u32) -> Result<TcpListener, BindError> {
    let err = |source| BindError { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(err)?;
    }
    #[cfg(target_os = "linux")]
    {
        if addr.is_ipv4() {
            socket.set_freebind_v4(true).map_err(err)?;
        } else {
            socket.set_freebind_v6(true).map_err(err)?;
        }
    }
    // Inherited by every accepted socket (Linux), instead of set per connection.
    crate::session::tune(socket2::SockRef::from(&socket));
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    socket.listen(backlog).map_err(err)?;
    TcpListener::from_std(socket.into()).map_err(err)
}

/// Accepts until `stop` fires, spawning one session task per connection on `tracker`.
pub async fn run(
    listener: Arc<TcpListener>,
    ctx: Arc<ListenerContext>,
    limit: Arc<Semaphore>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let name = ctx.name.clone();
    loop {
        let permit = match limit.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                ctx.metrics
                    .listener_refused_total
                    .with_label_values(&[name.as_str(), "max_connections"])
                    .inc();
                debug!(message = "max_connections reached; not accepting.", listener = %name);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    p = limit.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                }
            }
        };
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                let ctx = ctx.clone();
                let span = tracing::debug_span!("session", listener = %name, client.addr = %peer);
                tracker.spawn(
                    async move {
                        session::run(stream, peer, ctx).await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                drop(permit);
                let reason = accept_error_reason(&e);
                ctx.metrics
                    .accept_errors_total
                    .with_label_values(&[name.as_str(), reason])
                    .inc();
                if is_resource_exhaustion(&e) {
                    warn!(message = "Accept failed for lack of resources; backing off.", listener = %name, error = %e, backoff_ms = RESOURCE_BACKOFF.as_millis() as u64);
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(RESOURCE_BACKOFF) => {}
                    }
                } else {
                    debug!(message = "Accept failed.", listener = %name, error = %e);
                }
            }
        }
    }
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}

fn accept_error_reason(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EMFILE) | Some(libc::ENFILE) => "fd_limit",
        Some(libc::ENOBUFS) | Some(libc::ENOMEM) => "no_memory",
        Some(libc::ECONNABORTED) => "aborted",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay_and_keepalive_from_the_listener() {
        let listener = bind("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let sock = socket2::SockRef::from(&accepted);
        assert!(sock.tcp_nodelay().unwrap(), "TCP_NODELAY inherited");
        assert!(sock.keepalive().unwrap(), "SO_KEEPALIVE inherited");
    }
}
