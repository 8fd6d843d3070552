//! The admin listener's accept loop: HTTP/1 over hyper, bounded so that a misbehaving or
//! hostile admin client cannot take resources from the data plane, which shares the runtime.
//!
//! Bounds ([`Limits`]):
//! - at most `max_connections` admin connections at once; further clients wait in the
//!   kernel's backlog until a slot frees (the accept loop does not spin);
//! - the request head must arrive within `header_read_timeout` (this also closes idle
//!   keep-alive connections, so they cannot hold slots forever);
//! - request heads are at most [`MAX_HEAD_BYTES`] (hyper answers 431 beyond that);
//! - bodies are read up to a few KiB within a deadline (see `actions::read_empty_body`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{handle, AdminHandle};
use crate::data_plane::listener::Streak;

/// Largest request head (request line and headers) hyper buffers; the minimum hyper allows
/// is 8 KiB, and no admin request needs more than a few hundred bytes.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// How long an in-flight request may finish after shutdown began.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Back-off after a failed `accept` (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Resource bounds of the admin server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(5),
        }
    }
}

/// Serves admin requests with the default [`Limits`] until `shutdown` fires.
pub async fn serve(listener: TcpListener, state: AdminHandle, shutdown: CancellationToken) {
    serve_with(listener, state, Limits::default(), shutdown).await;
}

/// Serves admin requests until `shutdown` fires; connections in progress then get
/// [`SHUTDOWN_GRACE`] to finish their current request.
pub async fn serve_with(
    listener: TcpListener,
    state: AdminHandle,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    let mut failures = Streak::default();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return, // the semaphore is never closed
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(error) => {
                    if let Some(failed) = failures.failed() {
                        warn!(message = "Admin accept failed; retrying.", %error, retry_ms = ACCEPT_BACKOFF.as_millis() as u64, failed_accepts = failed);
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    }
                }
            },
        };
        if let Some(failed) = failures.ended() {
            info!(
                message = "Admin server accepting again.",
                failed_accepts_since_warning = failed
            );
        }
        if slots.available_permits() == 0 {
            debug!(
                message = "Admin connection limit reached; new clients wait.",
                limit = limits.max_connections
            );
        }
        tokio::spawn(connection(
            http.clone(),
            stream,
            peer,
            state.clone(),
            permit,
            shutdown.clone(),
        ));
    }
}

/// Serves one connection; its slot is released when it ends.
async fn connection(
    http: http1::Builder,
    stream: TcpStream,
    peer: SocketAddr,
    state: AdminHandle,
    _slot: OwnedSemaphorePermit,
    shutdown: CancellationToken,
) {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(&state, peer, req).await) }
    });
    let conn = http.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => return,
            }
        }
    };
    if let Err(error) = result {
        // Malformed requests (hyper answered 400/431), header timeouts, resets: the client's
        // problem, not an operational event.
        debug!(message = "Admin connection ended with an error.", peer = %peer, %error);
    }
}
