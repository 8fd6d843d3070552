//! One client connection: place it on a backend, then move its bytes until both sides are done
//! or its backend loses the role the listener serves.
//!
//! Placing takes exactly one routing snapshot per attempt. Candidates are tried in the route's
//! order with `connect_timeout` each, up to `1 + retries`; a failed connect sends the backend
//! to its probe for an immediate re-check. When no candidate is left — a failover in progress —
//! the connection waits (accepted, not yet connected upstream) for a newer table, up to
//! `queue_timeout`, and is refused only after that: a switchover should cost new clients
//! latency, not errors.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, event, Level};

use crate::config::ListenerName;
use crate::data_plane::proxy_protocol::{self, Addresses};
use crate::data_plane::transfer::{transfer, EndReason, TransferOptions, TransferStats};
use crate::metrics::Metrics;
use crate::routing::{BackendKey, Candidate, Route, RouteSettings, Router};

/// What every session of one listener shares.
pub struct ListenerContext {
    pub name: ListenerName,
    pub router: Router,
    pub metrics: Metrics,
    /// Backends a session could not connect to, for an immediate re-check.
    pub recheck: mpsc::Sender<BackendKey>,
    /// The process-wide session token: when it fires, sessions end because of shutdown, not
    /// because of their backend.
    pub sessions: CancellationToken,
    /// Rate limit of the warning about refused PROXY headers.
    pub proxy_warnings: proxy_protocol::WarnEvery,
}

/// Why a connection was not proxied; the `reason` label of `rolegate_listener_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Unavailable(crate::routing::Unavailable),
    /// Candidates existed but none accepted a connection before the queue deadline.
    ConnectFailed,
    /// The listener has no route (it was removed by a reload).
    NoRoute,
    /// `accept_proxy`: the client's PROXY header was malformed, late or missing.
    ProxyHeader,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Unavailable(u) => u.as_str(),
            Refusal::ConnectFailed => "connect_failed",
            Refusal::NoRoute => "no_route",
            Refusal::ProxyHeader => "proxy_header",
        }
    }
}

/// Serves one accepted client to the end.
///
/// The client socket already has TCP_NODELAY and keepalive: accepted sockets inherit them from
/// the listening socket ([`crate::data_plane::listener::bind`]), which saves four syscalls per connection.
pub async fn run(mut client: TcpStream, peer: SocketAddr, ctx: Arc<ListenerContext>) {
    let accepted = Instant::now();
    let Some((addresses, header)) = proxy_header(&mut client, peer, &ctx).await else {
        return;
    };
    let client_addr = addresses.client;
    let (mut backend, candidate, settings) = match place(&ctx, header.as_deref()).await {
        Ok(p) => p,
        Err(refusal) => {
            ctx.metrics
                .listener_refused_total
                .with_label_values(&[ctx.name.as_str(), refusal.as_str()])
                .inc();
            debug!(
                message = "Connection refused.",
                listener = %ctx.name,
                client.addr = %client_addr,
                reason = refusal.as_str(),
                waited_ms = accepted.elapsed().as_millis() as u64,
            );
            return;
        }
    };
    let m = &candidate.metrics;
    m.total.inc();
    m.active.inc();
    candidate.backend.active.fetch_add(1, Ordering::Relaxed);
    let options = TransferOptions {
        mode: settings.transfer,
        idle_timeout: settings.idle_timeout,
    };
    let stats = transfer(&mut client, &mut backend, &options, &candidate.guard).await;
    candidate.backend.active.fetch_sub(1, Ordering::Relaxed);
    m.active.dec();
    m.to_backend.inc_by(stats.client_to_backend);
    m.to_client.inc_by(stats.backend_to_client);
    m.spliced.inc_by(stats.spliced);
    let duration = accepted.elapsed();
    m.duration.observe(duration.as_secs_f64());
    let reason = end_reason(&stats, &ctx.sessions);
    if reason == "fenced" {
        // The backend lost the role this session needs. Bytes still queued towards it (a
        // write the client sent just before) must never arrive, not even minutes later when a
        // partition heals: an abortive close (RST) discards the socket's send queue, where a
        // normal close would keep retransmitting it to what is now a stale node.
        let _ = backend.set_zero_linger();
        ctx.metrics
            .sessions_fenced_total
            .with_label_values(&[
                candidate.backend.key.cluster.as_str(),
                candidate.backend.key.backend.as_str(),
            ])
            .inc();
    }
    log_close(
        &ctx,
        client_addr,
        &candidate,
        &stats,
        duration,
        reason,
        settings.session_level,
    );
}

/// The client's addresses (from its PROXY header under `accept_proxy`) and the header to send
/// each backend connection under `send_proxy`, by the settings at the session's start. `None`
/// when the client's header was refused (counted and logged here).
async fn proxy_header(
    client: &mut TcpStream,
    peer: SocketAddr,
    ctx: &ListenerContext,
) -> Option<(Addresses, Option<Vec<u8>>)> {
    let settings = ctx
        .router
        .load()
        .route(&ctx.name)
        .map(|r| r.settings.proxy_protocol)
        .unwrap_or_default();
    let addresses = match proxy_protocol::addresses(client, peer, settings).await {
        Ok(a) => a,
        Err(error) => {
            let reason = Refusal::ProxyHeader.as_str();
            ctx.metrics
                .listener_refused_total
                .with_label_values(&[ctx.name.as_str(), reason])
                .inc();
            match ctx.proxy_warnings.due() {
                Some(left_out) => {
                    tracing::warn!(message = "Connection refused.", listener = %ctx.name, peer.addr = %peer, reason, %error, not_logged_since = left_out)
                }
                None => {
                    debug!(message = "Connection refused.", listener = %ctx.name, peer.addr = %peer, reason, %error)
                }
            }
            return None;
        }
    };
    if settings.accept.is_some() {
        debug!(message = "PROXY header read.", listener = %ctx.name, peer.addr = %peer, client.addr = %addresses.client);
    }
    let header = settings
        .send
        .map(|version| proxy_protocol::encode(version, &addresses));
    Some((addresses, header))
}

/// Finds a backend and connects to it (sending `header` first), waiting for a newer table
/// while none can be used.
async fn place(
    ctx: &ListenerContext,
    header: Option<&[u8]>,
) -> Result<(TcpStream, Candidate, Arc<RouteSettings>), Refusal> {
    let mut changes = ctx.router.subscribe();
    let mut deadline = None;
    let mut queued = false;
    let result = loop {
        let table = ctx.router.load();
        let Some(route) = table.route(&ctx.name) else {
            break Err(Refusal::NoRoute);
        };
        let deadline =
            *deadline.get_or_insert_with(|| Instant::now() + route.settings.queue_timeout);
        match try_candidates(ctx, route, header).await {
            Ok(placed) => break Ok(placed),
            Err(refusal) if Instant::now() >= deadline => break Err(refusal),
            Err(_) => {}
        }
        if !queued {
            queued = true;
            ctx.metrics
                .queued_connections
                .with_label_values(&[ctx.name.as_str()])
                .inc();
        }
        // Wait for a table newer than the one just tried; `changed` also fires for a table
        // stored while we were connecting, so nothing is missed.
        let newer = async {
            while *changes.borrow_and_update() <= table.generation {
                if changes.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        if timeout(deadline.saturating_duration_since(Instant::now()), newer)
            .await
            .is_err()
        {
            break Err(route
                .unavailable
                .map_or(Refusal::ConnectFailed, Refusal::Unavailable));
        }
    };
    if queued {
        ctx.metrics
            .queued_connections
            .with_label_values(&[ctx.name.as_str()])
            .dec();
    }
    result
}

/// Tries the route's candidates in order; the first that accepts (and takes `header`) wins.
async fn try_candidates(
    ctx: &ListenerContext,
    route: &Route,
    header: Option<&[u8]>,
) -> Result<(TcpStream, Candidate, Arc<RouteSettings>), Refusal> {
    if let Some(u) = route.unavailable {
        return Err(Refusal::Unavailable(u));
    }
    let limit = 1 + route.settings.retries as usize;
    for candidate in route.pick(limit) {
        if candidate.guard.is_cancelled() {
            continue; // lost its role after this table was built
        }
        let addr = candidate.backend.addr;
        let reason = match timeout(route.settings.connect_timeout, connect(addr, header)).await {
            Ok(Ok(stream)) => return Ok((stream, candidate.clone(), route.settings.clone())),
            Ok(Err(e)) => {
                debug!(message = "Backend connect failed.", listener = %ctx.name, backend = %candidate.backend.key, %addr, error = %e);
                connect_error_reason(&e)
            }
            Err(_) => {
                debug!(message = "Backend connect timed out.", listener = %ctx.name, backend = %candidate.backend.key, %addr);
                "timeout"
            }
        };
        ctx.metrics
            .connect_errors_total
            .with_label_values(&[
                ctx.name.as_str(),
                candidate.backend.key.backend.as_str(),
                reason,
            ])
            .inc();
        // Best effort: if the channel is full, a re-check is already on its way.
        let _ = ctx.recheck.try_send(candidate.backend.key.clone());
    }
    Err(Refusal::ConnectFailed)
}

/// Connects and writes `header` (`send_proxy`): it fits any fresh socket's send buffer, so
/// the write does not wait for the backend.
async fn connect(addr: SocketAddr, header: Option<&[u8]>) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    tune(socket2::SockRef::from(&socket));
    let mut stream = socket.connect(addr).await?;
    if let Some(header) = header {
        tokio::io::AsyncWriteExt::write_all(&mut stream, header).await?;
    }
    Ok(stream)
}

/// TCP_NODELAY (database protocols are request/response: Nagle only adds latency) and
/// keepalive (a peer that vanished without a FIN is found eventually, and idle firewalls keep
/// the flow). Set before connect or listen, so the connected or accepted socket starts with
/// them. Failures are harmless and ignored.
pub(crate) fn tune(sock: socket2::SockRef<'_>) {
    let _ = sock.set_tcp_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(std::time::Duration::from_secs(60))
        .with_interval(std::time::Duration::from_secs(10));
    let _ = sock.set_tcp_keepalive(&keepalive);
}

fn connect_error_reason(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "refused",
        io::ErrorKind::TimedOut => "timeout",
        io::ErrorKind::ConnectionReset => "reset",
        _ => match e.raw_os_error() {
            Some(libc::EHOSTUNREACH) | Some(libc::ENETUNREACH) => "unreachable",
            Some(libc::EMFILE) | Some(libc::ENFILE) => "fd_limit",
            _ => "other",
        },
    }
}

fn end_reason(stats: &TransferStats, sessions: &CancellationToken) -> &'static str {
    match &stats.end {
        EndReason::Completed => "completed",
        EndReason::Idle => "idle_timeout",
        EndReason::Cancelled if sessions.is_cancelled() => "shutdown",
        EndReason::Cancelled => "fenced",
        EndReason::ClientError(_) => "client_error",
        EndReason::BackendError(_) => "backend_error",
    }
}

fn log_close(
    ctx: &ListenerContext,
    client_addr: SocketAddr,
    candidate: &Candidate,
    stats: &TransferStats,
    duration: std::time::Duration,
    reason: &'static str,
    level: Level,
) {
    let error = match &stats.end {
        EndReason::ClientError(e) | EndReason::BackendError(e) => Some(e.to_string()),
        _ => None,
    };
    macro_rules! close_line {
        ($lvl:expr) => {
            event!(
                $lvl,
                message = "Session closed.",
                listener = %ctx.name,
                client.addr = %client_addr,
                backend = %candidate.backend.key.backend,
                backend.addr = %candidate.backend.addr,
                bytes_in = stats.client_to_backend,
                bytes_out = stats.backend_to_client,
                duration_ms = duration.as_millis() as u64,
                reason,
                error = error.as_deref().unwrap_or(""),
            )
        };
    }
    match level {
        Level::TRACE => close_line!(Level::TRACE),
        Level::DEBUG => close_line!(Level::DEBUG),
        Level::INFO => close_line!(Level::INFO),
        Level::WARN => close_line!(Level::WARN),
        _ => close_line!(Level::ERROR),
    }
}
