//! Listening sockets and the accept loop.
//!
//! Sockets are built with socket2 so that operators get what a database endpoint needs:
//! `SO_REUSEADDR` (restart without waiting for TIME_WAIT), `IP_FREEBIND` (bind a keepalived VIP
//! before it arrives on this host), `IPV6_V6ONLY` for `[::]` binds (so `0.0.0.0:P` can be a
//! separate listener) and a configurable backlog.
//!
//! Each worker has its own socket per listener (an `SO_REUSEPORT` group, [`bind_group`]) and its
//! own accept loop ([`run`]). A connection needs two permits ([`Limits`]): one of its listener's
//! `max_connections` (shared by that listener's loops) and one of the process's descriptor
//! budget (shared by all loops, see `fd_budget`).
//!
//! A loop accepts one connection, then takes the permits for it: at either limit each loop
//! holds the one connection it accepted until a session ends and stops accepting, so the
//! kernel's backlog holds the rest (counted once per stall). The permits come *after*
//! `accept()` because there are several sockets: a loop that took the last permit and then
//! waited in `accept()` on an empty socket would starve a client queued on another worker's
//! socket. The cost is at most one waiting connection per worker beyond the limit.
//! Resource errors (EMFILE, ENFILE, ENOBUFS, ENOMEM) back off briefly instead of spinning or
//! exiting; per-connection errors are ignored.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use crate::data_plane::session::{self, ListenerContext};

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

/// Creates a listening socket for `addr`, registered with the current runtime.
///
/// # Errors
/// Socket creation, option or bind failures (address in use, permission denied for ports
/// below 1024 without `CAP_NET_BIND_SERVICE`).
pub fn bind(addr: SocketAddr, backlog: u32) -> Result<TcpListener, BindError> {
    let socket = listening_socket(addr, backlog, false)?;
    TcpListener::from_std(socket.into()).map_err(|source| BindError { addr, source })
}

/// Creates one listening socket on `addr` per worker runtime, each registered with its worker,
/// so that each worker accepts (and serves) its own share of the connections.
///
/// With more than one worker the sockets form one `SO_REUSEPORT` group: the kernel spreads
/// incoming connections over them by flow hash. Any process of the same user could join such a
/// group, so the address is first bound once without `SO_REUSEPORT`: if anything else listens
/// there (a second rolegate, the database itself), this fails with "address in use" instead of
/// silently sharing the port. Each socket has its own accept queue of `backlog`.
///
/// # Errors
/// As [`bind`], for the first socket that fails; none stay open then.
pub fn bind_group(
    addr: SocketAddr,
    backlog: u32,
    workers: &[Handle],
) -> Result<Vec<Arc<TcpListener>>, BindError> {
    let shared = workers.len() > 1;
    if shared && addr.port() != 0 {
        drop(unbound_socket(addr, false)?.bind_to(addr)?);
    }
    let mut bound = addr;
    let mut group = Vec::with_capacity(workers.len());
    for handle in workers {
        let socket = listening_socket(bound, backlog, shared)?;
        if bound.port() == 0 {
            // Port 0: the others join the port the kernel picked for the first.
            bound = socket
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .ok_or_else(|| BindError {
                    addr,
                    source: io::Error::other("no local address after bind"),
                })?;
        }
        let _runtime = handle.enter();
        let listener =
            TcpListener::from_std(socket.into()).map_err(|source| BindError { addr, source })?;
        group.push(Arc::new(listener));
    }
    Ok(group)
}

/// A bound, listening, non-blocking socket with the options every listener gets.
fn listening_socket(addr: SocketAddr, backlog: u32, reuse_port: bool) -> Result<Socket, BindError> {
    let socket = unbound_socket(addr, reuse_port)?.bind_to(addr)?;
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    socket
        .listen(backlog)
        .map_err(|source| BindError { addr, source })?;
    Ok(socket)
}

/// A TCP socket for `addr` with `SO_REUSEADDR`, `IPV6_V6ONLY`, `IP_FREEBIND`, the options
/// accepted sockets inherit, and (if asked) `SO_REUSEPORT`; not bound yet.
fn unbound_socket(addr: SocketAddr, reuse_port: bool) -> Result<Unbound, BindError> {
    let err = |source| BindError { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    if reuse_port {
        socket.set_reuse_port(true).map_err(err)?;
    }
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
    crate::data_plane::session::tune(socket2::SockRef::from(&socket));
    socket.set_nonblocking(true).map_err(err)?;
    Ok(Unbound(socket))
}

/// A socket that has its options but no address yet.
struct Unbound(Socket);

impl Unbound {
    fn bind_to(self, addr: SocketAddr) -> Result<Socket, BindError> {
        self.0
            .bind(&addr.into())
            .map_err(|source| BindError { addr, source })?;
        Ok(self.0)
    }
}

/// Accepts from `listener` until `stop` fires, spawning one session task per connection on
/// `tracker` (on the current runtime: the worker that owns `listener`).
pub async fn run(
    listener: Arc<TcpListener>,
    ctx: Arc<ListenerContext>,
    limits: Limits,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let name = ctx.name.clone();
    let mut starved = Streak::default();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                let reason = accept_error_reason(&e);
                ctx.metrics
                    .accept_errors_total
                    .with_label_values(&[name.as_str(), reason])
                    .inc();
                if is_resource_exhaustion(&e) {
                    if let Some(failed) = starved.failed() {
                        warn!(message = "Accept failed for lack of resources; backing off.", listener = %name, error = %e, backoff_ms = RESOURCE_BACKOFF.as_millis() as u64, failed_accepts = failed);
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(RESOURCE_BACKOFF) => {}
                    }
                } else {
                    debug!(message = "Accept failed.", listener = %name, error = %e);
                }
                continue;
            }
        };
        if let Some(failed) = starved.ended() {
            info!(message = "Accepting again.", listener = %name, failed_accepts_since_warning = failed);
        }
        let Some(permits) = limits.admit(&ctx, &stop).await else {
            return;
        };
        let ctx = ctx.clone();
        let span = tracing::debug_span!("session", listener = %name, client.addr = %peer);
        tracker.spawn(
            async move {
                session::run(stream, peer, ctx).await;
                drop(permits);
            }
            .instrument(span),
        );
    }
}

/// The two limits a connection is admitted under, each one semaphore shared by the accept loops
/// concerned.
#[derive(Clone)]
pub struct Limits {
    /// The listener's `max_connections`.
    pub listener: Arc<Semaphore>,
    /// The process's descriptor budget (`fd_budget`), shared by every listener.
    pub descriptors: Arc<Semaphore>,
}

impl Limits {
    /// Waits for a permit of both (for the already accepted connection). A stall is counted
    /// once in `rolegate_listener_refused_total` with the limit's reason; `None` when `stop`
    /// fires first.
    async fn admit(
        &self,
        ctx: &ListenerContext,
        stop: &CancellationToken,
    ) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        let listener = permit(&self.listener, "max_connections", ctx, stop).await?;
        let descriptors = match self.descriptors.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // Splice pipes draw from the same permits: this thread's idle pooled ones give
                // theirs back before a client is kept waiting for them.
                crate::data_plane::transfer::release_idle_pipes();
                permit(&self.descriptors, "fd_budget", ctx, stop).await?
            }
        };
        Some((listener, descriptors))
    }
}

async fn permit(
    limit: &Arc<Semaphore>,
    reason: &'static str,
    ctx: &ListenerContext,
    stop: &CancellationToken,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(p) = limit.clone().try_acquire_owned() {
        return Some(p);
    }
    ctx.metrics
        .listener_refused_total
        .with_label_values(&[ctx.name.as_str(), reason])
        .inc();
    debug!(message = "Connection limit reached; not accepting.", listener = %ctx.name, limit = reason);
    tokio::select! {
        _ = stop.cancelled() => None,
        p = limit.clone().acquire_owned() => p.ok(),
    }
}

/// Rate limit for accept-failure logging: metrics count every failure, the log gets the first
/// warning of an outage, at most one more per [`WARN_EVERY`] while it lasts (with the failures
/// since), and one line when accepting works again. Running out of descriptors, which tends to
/// flap at the edge, is thus not also a log flood.
#[derive(Default)]
pub(crate) struct Streak {
    last_warning: Option<std::time::Instant>,
    /// Failures since the last warning.
    failures: u64,
    /// A warning was logged since the last successful accept.
    warned: bool,
}

/// Minimum time between two accept-failure warnings of one loop.
const WARN_EVERY: Duration = Duration::from_secs(10);

impl Streak {
    /// Counts a failure; `Some(failures since the last warning)` when a warning is due.
    pub(crate) fn failed(&mut self) -> Option<u64> {
        self.failures += 1;
        let due = self
            .last_warning
            .is_none_or(|at| at.elapsed() >= WARN_EVERY);
        if !due {
            return None;
        }
        self.last_warning = Some(std::time::Instant::now());
        self.warned = true;
        Some(std::mem::take(&mut self.failures))
    }

    /// Counts a success; `Some(failures not yet reported)` when it ends a warned-about outage.
    pub(crate) fn ended(&mut self) -> Option<u64> {
        if !std::mem::take(&mut self.warned) {
            return None;
        }
        Some(std::mem::take(&mut self.failures))
    }
}

pub(crate) fn is_resource_exhaustion(e: &io::Error) -> bool {
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

    #[test]
    fn a_group_has_one_socket_per_worker_and_keeps_other_listeners_off_its_port() {
        let workers = crate::data_plane::workers::Workers::start(2).unwrap();
        let group = bind_group("127.0.0.1:0".parse().unwrap(), 16, workers.handles()).unwrap();
        assert_eq!(group.len(), 2);
        let addr = group[0].local_addr().unwrap();
        assert_eq!(group[1].local_addr().unwrap(), addr, "port 0 resolved once");

        let again = bind_group(addr, 16, workers.handles()).unwrap_err();
        assert_eq!(again.source.kind(), io::ErrorKind::AddrInUse, "{again}");
        assert!(
            std::net::TcpListener::bind(addr).is_err(),
            "a plain listener cannot take the port either"
        );
    }

    #[test]
    fn the_kernel_spreads_connections_over_the_workers_sockets() {
        let workers = crate::data_plane::workers::Workers::start(2).unwrap();
        let group = bind_group("127.0.0.1:0".parse().unwrap(), 128, workers.handles()).unwrap();
        let addr = group[0].local_addr().unwrap();
        // Each flow hashes to one socket: 64 flows all on one of two sockets is a 2^-63 chance.
        let clients: Vec<_> = (0..64)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let mut per_socket = Vec::new();
        for (socket, worker) in group.iter().zip(workers.handles()) {
            let socket = socket.clone();
            let counted = worker.spawn(async move {
                let mut n = 0;
                while let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_millis(500), socket.accept()).await
                {
                    n += 1;
                }
                n
            });
            per_socket.push(worker.block_on(counted).unwrap());
        }
        assert_eq!(per_socket.iter().sum::<usize>(), clients.len());
        assert!(per_socket.iter().all(|&n| n > 0), "{per_socket:?}");
    }

    #[test]
    fn an_outage_is_one_warning_and_one_recovery_line() {
        let mut streak = Streak::default();
        assert_eq!(streak.ended(), None, "no outage, nothing to report");
        assert_eq!(streak.failed(), Some(1), "the first failure warns");
        for _ in 0..50 {
            assert_eq!(streak.failed(), None, "later ones within 10 s do not");
        }
        assert_eq!(
            streak.ended(),
            Some(50),
            "recovery reports the unlogged failures"
        );
        // Flapping: a new failure soon after is counted but not warned about again.
        assert_eq!(streak.failed(), None);
        assert_eq!(streak.ended(), None);
        streak.last_warning = Some(std::time::Instant::now() - WARN_EVERY);
        assert_eq!(streak.failed(), Some(2), "a warning again after 10 s");
    }

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
