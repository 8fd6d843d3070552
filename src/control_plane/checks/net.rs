//! The raw TCP underneath the protocol checks: connecting under the check's deadline, keeping a
//! client crate's connection driver alive exactly as long as the probe's session, and — when a
//! client crate gives up on what it read — looking at the first bytes the port really sends, so
//! that "unexpected reply" can say *what* answered (an SSH banner, an HTTP error page, ...).
//!
//! Nothing here knows a database protocol beyond the few bytes a client sends first and a
//! predicate saying whether an answer looks native; the probes supply both.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::{timeout_at, Instant};

use super::{CheckFailure, FailureReason};

/// How long a dropped session's driver may keep running to close politely (PostgreSQL
/// `Terminate`, MySQL `COM_QUIT`): long enough for a healthy server, short enough that a hung
/// one cannot pile up tasks.
pub(super) const GOODBYE: Duration = Duration::from_secs(1);

/// How many bytes of an unexpected answer are kept for the failure detail.
pub(super) const SNIFF_BYTES: usize = 32;

/// Opens the TCP connection of a new session, bounded by the check's deadline.
///
/// # Errors
/// `Refused`, `Timeout` or `Io`, with the address in the detail.
pub(super) async fn connect(
    addr: SocketAddr,
    deadline: Instant,
) -> Result<TcpStream, CheckFailure> {
    let stream = match timeout_at(deadline, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            let failure = CheckFailure::from_io(&error);
            return Err(CheckFailure::new(
                failure.reason,
                format!("connect to {addr}: {error}"),
            ));
        }
        Err(_) => {
            return Err(CheckFailure::new(
                FailureReason::Timeout,
                format!("connect to {addr}: no answer to the TCP handshake in time"),
            ))
        }
    };
    // The checks are tiny request/response exchanges: Nagle plus delayed ACKs would add tens
    // of milliseconds to every one of them.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// The first `std::io::Error` in an error's source chain (client crates wrap them).
pub(super) fn io_source<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a io::Error> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io);
        }
        cause = e.source();
    }
    None
}

// === impl Driver ===

/// Keeps a client crate's connection driver (the future that owns the socket) running while
/// the session that owns this guard lives. When the guard is dropped — the session was reset,
/// or the check future was cancelled by its timeout — the driver gets [`GOODBYE`] to finish on
/// its own (it notices that its client is gone and says goodbye to the server), then is dropped,
/// which closes the socket. A driver waiting on a hung server therefore never outlives its
/// session by more than [`GOODBYE`].
#[derive(Debug)]
pub(super) struct Driver {
    _stop: oneshot::Sender<()>,
}

impl Driver {
    pub(super) fn spawn<F>(driver: F) -> Driver
    where
        F: Future + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let mut driver = std::pin::pin!(driver);
            tokio::select! {
                _ = &mut driver => return,
                // Never sent: resolves (with an error) when the guard is dropped.
                _ = stopped => {}
            }
            let _ = tokio::time::timeout(GOODBYE, driver).await;
        });
        Driver { _stop: stop }
    }
}

/// Runs `close` (a polite disconnect) in the background, bounded by [`GOODBYE`]. Used from
/// `Drop`, so it only spawns when called inside a runtime; otherwise `close` is simply dropped
/// (and the OS closes the socket).
pub(super) fn close_in_background<F>(close: F)
where
    F: Future + Send + 'static,
{
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = tokio::time::timeout(GOODBYE, close).await;
        });
    }
}

// === sniffing ===

/// What a protocol's client sends first and how its servers answer, for [`explain`].
pub(super) struct Greeting {
    /// The protocol's name as operators know it ("PostgreSQL").
    pub protocol: &'static str,
    /// Bytes a client of this protocol sends first (empty when the server speaks first).
    pub hello: Vec<u8>,
    /// Whether the first bytes of an answer look like this protocol's server.
    pub looks_native: fn(&[u8]) -> bool,
}

/// Connects again without the client crate, sends `hello`, and collects up to
/// [`SNIFF_BYTES`] bytes until EOF, an error (a reset) or `deadline`. Whatever arrived by then
/// is returned, possibly nothing.
///
/// # Errors
/// Only when the new connection cannot be made.
pub(super) async fn first_bytes(
    addr: SocketAddr,
    hello: &[u8],
    deadline: Instant,
) -> io::Result<Vec<u8>> {
    let mut stream = match timeout_at(deadline, TcpStream::connect(addr)).await {
        Ok(stream) => stream?,
        Err(_) => return Ok(Vec::new()),
    };
    // A peer that answers and closes at once may reset the connection before the hello is
    // written; what it sent first is still worth reading.
    let _ = timeout_at(deadline, stream.write_all(hello)).await;
    let mut buf = vec![0u8; SNIFF_BYTES];
    let mut filled = 0;
    while filled < buf.len() {
        match timeout_at(deadline, stream.read(&mut buf[filled..])).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => filled += n,
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// Refines a failure that a client crate reported as a protocol error or an early EOF, by
/// looking at what the port answers to a fresh client's first message. The look uses what is
/// left of the check's budget (slightly less, so that this answer beats the task's timeout).
///
/// - Something that does not look like the protocol: `UnexpectedReply` quoting the bytes.
/// - Nothing at all (EOF or silence): the original failure, noting that the port said nothing.
/// - A native-looking answer, or an error: the original failure unchanged.
pub(super) async fn explain(
    original: CheckFailure,
    addr: SocketAddr,
    greeting: &Greeting,
    deadline: Instant,
) -> CheckFailure {
    let now = Instant::now();
    let margin = deadline.saturating_duration_since(now) / 10;
    let sniffed = first_bytes(addr, &greeting.hello, deadline - margin).await;
    match sniffed {
        Ok(bytes) if bytes.is_empty() => CheckFailure::new(
            original.reason,
            format!(
                "{}; a new connection got no answer at all, so whatever listens on {addr} does not \
                 talk like a {} server",
                original.detail, greeting.protocol
            ),
        ),
        Ok(bytes) if !(greeting.looks_native)(&bytes) => CheckFailure::unexpected(
            &format!(
                "{addr} does not answer like a {} server ({})",
                greeting.protocol, original.detail
            ),
            &bytes,
        ),
        _ => original,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn first_bytes_sends_hello_and_stops_at_the_limit() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = [0u8; 6];
            s.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"PING\r\n");
            s.write_all(&[b'x'; 100]).await.unwrap();
            // Keep the socket open: the reader must stop at SNIFF_BYTES, not wait for EOF.
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let deadline = Instant::now() + Duration::from_secs(2);
        let bytes = first_bytes(addr, b"PING\r\n", deadline).await.unwrap();
        assert_eq!(bytes.len(), SNIFF_BYTES);
    }

    #[tokio::test]
    async fn explain_quotes_foreign_bytes_and_keeps_native_ones() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2p1\r\n").await;
            }
        });
        let original = CheckFailure::new(FailureReason::Io, "early eof");
        let deadline = Instant::now() + Duration::from_secs(2);
        let foreign = Greeting {
            protocol: "Test",
            hello: Vec::new(),
            looks_native: |b| b.starts_with(b"+"),
        };
        let failure = explain(original.clone(), addr, &foreign, deadline).await;
        assert_eq!(failure.reason, FailureReason::UnexpectedReply);
        assert!(failure.detail.contains("SSH-2.0-OpenSSH"), "{failure}");

        let native = Greeting {
            looks_native: |b| b.starts_with(b"SSH"),
            ..foreign
        };
        assert_eq!(
            explain(original.clone(), addr, &native, deadline).await,
            original
        );
    }
}
