//! Moving the bytes of one proxied session: [`transfer`] copies client → backend and
//! backend → client at the same time until both directions are closed, the session goes idle, the
//! caller cancels it, or a side fails, and always reports what it moved in [`TransferStats`].
//!
//! # Shape
//! One future drives both directions (no task or thread per direction). Each direction is a
//! `Running → ShuttingDown → Done` machine (`direction.rs`) like Tokio's `copy_bidirectional`:
//! EOF from one side becomes `shutdown(SHUT_WR)` on the other while the other direction keeps
//! flowing, and the session is [`EndReason::Completed`] when both are done. The two directions use
//! disjoint waker slots (client read + backend write, backend read + client write), are polled in
//! alternating order so a busy one cannot starve the other, and all socket work goes through
//! Tokio readiness (`poll_*_ready` + `try_*`), so nothing blocks the runtime.
//!
//! # Engines
//! - Buffered (`buffered.rs`, every platform): `read` into a per-thread 64 KiB scratch buffer and
//!   `write` straight to the peer; only a short write allocates a per-direction spill.
//! - Splice (`splice.rs`, Linux with the `splice` feature, the crate's only `unsafe` module):
//!   socket → pipe → socket with `SPLICE_F_MOVE | SPLICE_F_NONBLOCK`. Pipes come from a bounded
//!   per-thread free list (`pool.rs`) and are held only while a burst is in flight.
//!
//! [`TransferMode::Auto`] picks per direction and per burst: copy first, splice once a read fills
//! the scratch buffer, back to copy when the burst ends (see `direction.rs`). [`TransferMode::Copy`]
//! never splices.
//!
//! # Invariant: an idle session owns nothing but its state
//! While neither side is sending, a session holds no pipe (no descriptors beyond its two sockets)
//! and no buffer; its whole state is the future itself (see the size test in `tests/transfer.rs`).
//! Pipes and spills are acquired when bytes arrive and released when the reader would block.
//!
//! # Idle timeout
//! No timer is touched per chunk. One `Sleep` is armed for `idle_timeout`; each time the future
//! is about to wait, it notes the time if bytes moved since the last note. When the `Sleep` fires
//! and the last activity is older than `idle_timeout`, the session ends with [`EndReason::Idle`];
//! otherwise the `Sleep` is moved to `last activity + idle_timeout`. A session therefore ends
//! between `idle_timeout` and `idle_timeout` + one timer tick (1 ms) + one poll after its last
//! written byte. "Activity" means bytes accepted by a writer: a peer that stops reading for longer
//! than `idle_timeout` is idle even if the other side still has bytes to send.
//!
//! # Counters
//! [`splice_stats`] is updated once per session, when its future is dropped (completed or not);
//! [`splice_fallbacks`] once per direction that gives up on splice. Nothing is counted, logged,
//! locked or allocated per chunk.

mod buffered;
mod cancel;
mod direction;
#[cfg(all(target_os = "linux", feature = "splice"))]
mod pool;
#[cfg(all(target_os = "linux", feature = "splice"))]
#[allow(unsafe_code)]
mod splice;

use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::tcp::ReadHalf;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

pub use crate::config::TransferMode;
use cancel::CancelWatch;
use direction::HalfDuplex;

/// Direction label for logs and metrics: bytes from the client to the backend.
pub const CLIENT_TO_BACKEND: &str = "client->backend";
/// Direction label for logs and metrics: bytes from the backend to the client.
pub const BACKEND_TO_CLIENT: &str = "backend->client";

/// How a session's bytes are moved.
#[derive(Debug, Clone)]
pub struct TransferOptions {
    /// Splice where possible (`Auto`) or always copy (`Copy`).
    pub mode: TransferMode,
    /// End the session when no byte moved either way for this long; `None` never ends it.
    pub idle_timeout: Option<Duration>,
}

impl Default for TransferOptions {
    fn default() -> Self {
        TransferOptions {
            mode: TransferMode::Auto,
            idle_timeout: None,
        }
    }
}

/// Why a transfer ended.
#[derive(Debug)]
pub enum EndReason {
    /// Both directions reached EOF and were shut down.
    Completed,
    /// No byte either way for `idle_timeout`.
    Idle,
    /// The cancel token fired.
    Cancelled,
    /// Reading from or writing to the client failed (resets are ordinary).
    ClientError(io::Error),
    /// Reading from or writing to the backend failed.
    BackendError(io::Error),
}

/// What a transfer moved and why it ended. Returned in every case, also after errors.
#[derive(Debug)]
pub struct TransferStats {
    /// Bytes written to the backend.
    pub client_to_backend: u64,
    /// Bytes written to the client.
    pub backend_to_client: u64,
    /// The part of the two totals that went through splice(2).
    pub spliced: u64,
    /// Why the transfer ended.
    pub end: EndReason,
}

/// Moves bytes between `client` and `backend` in both directions until both are closed, the
/// session is idle for `opts.idle_timeout`, `cancel` fires, or a side fails.
///
/// Half-close is kept: EOF from one side becomes `shutdown(Write)` on the other while the other
/// direction keeps flowing. The sockets are left open; the caller drops them. When both sides
/// reached EOF ([`EndReason::Completed`]) the last `shutdown` is left to that close, which sends
/// the same FIN one system call cheaper: drop the sockets promptly.
///
/// Errors are not returned but reported in [`TransferStats::end`], tagged with the failing side,
/// together with the bytes moved until then. If this future is dropped early, bytes it moved are
/// still added to [`splice_stats`].
pub async fn transfer(
    client: &mut TcpStream,
    backend: &mut TcpStream,
    opts: &TransferOptions,
    cancel: &CancellationToken,
) -> TransferStats {
    let (mut client_read, client_write) = client.split();
    let (mut backend_read, backend_write) = backend.split();
    let (client_write, backend_write) = (client_write.as_ref(), backend_write.as_ref());
    let start = Instant::now();
    let mut duplex = Duplex::new(opts, start);
    let mut cancelled = pin!(cancel.cancelled());
    let mut idle = pin!(opts
        .idle_timeout
        .map(|timeout| tokio::time::sleep_until(start + timeout.min(FAR_FUTURE))));

    let end = poll_fn(|cx| {
        let sockets = Sockets {
            client_read: &mut client_read,
            client_write,
            backend_read: &mut backend_read,
            backend_write,
        };
        duplex.poll(cx, sockets, cancelled.as_mut(), idle.as_mut())
    })
    .await;
    duplex.stats(end)
}

/// Sessions that spliced at least one byte, and the bytes they spliced, since the process
/// started. Updated once per session end.
pub fn splice_stats() -> (u64, u64) {
    (
        SESSIONS_SPLICED.load(Ordering::Relaxed),
        BYTES_SPLICED.load(Ordering::Relaxed),
    )
}

/// Directions that wanted to splice but copied instead (no pipe, or the kernel refused).
pub fn splice_fallbacks() -> u64 {
    SPLICE_FALLBACKS.load(Ordering::Relaxed)
}

/// Splice pipes open in the process right now, pooled or in use (two descriptors each).
pub fn open_pipes() -> usize {
    #[cfg(all(target_os = "linux", feature = "splice"))]
    {
        splice::open_pipes()
    }
    #[cfg(not(all(target_os = "linux", feature = "splice")))]
    {
        0
    }
}

/// Makes new splice pipes opened on this thread take a permit of `budget` (the descriptor budget,
/// whose permits are descriptor pairs); past it directions copy instead. Called on each worker
/// thread by [`crate::data_plane::workers`]. Without splice support this does nothing.
pub fn draw_pipes_from(budget: Option<std::sync::Arc<tokio::sync::Semaphore>>) {
    #[cfg(all(target_os = "linux", feature = "splice"))]
    pool::draw_from(budget);
    #[cfg(not(all(target_os = "linux", feature = "splice")))]
    let _ = budget;
}

/// Closes the current thread's idle pooled pipes, returning their budget permits.
pub fn release_idle_pipes() {
    #[cfg(all(target_os = "linux", feature = "splice"))]
    pool::release_idle();
}

/// Longest idle timeout honoured (about 30 years, as Tokio's own "far future"), so that adding it
/// to an `Instant` cannot overflow.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

static SESSIONS_SPLICED: AtomicU64 = AtomicU64::new(0);
static BYTES_SPLICED: AtomicU64 = AtomicU64::new(0);
static SPLICE_FALLBACKS: AtomicU64 = AtomicU64::new(0);

#[cfg(all(target_os = "linux", feature = "splice"))]
fn count_fallback() {
    SPLICE_FALLBACKS.fetch_add(1, Ordering::Relaxed);
}

/// Hooks for tests of the pipe pool; no-ops where splice is not compiled in. Not part of the API.
#[doc(hidden)]
pub mod testing {
    #[cfg(all(target_os = "linux", feature = "splice"))]
    use super::pool;

    /// Makes pipe creation on this thread fail as if the descriptor table were full (`true`), or
    /// work again (`false`).
    pub fn refuse_pipes_on_this_thread(refuse: bool) {
        #[cfg(all(target_os = "linux", feature = "splice"))]
        pool::refuse_on_this_thread(refuse);
        #[cfg(not(all(target_os = "linux", feature = "splice")))]
        let _ = refuse;
    }

    /// Empty pipes waiting in this thread's pool.
    pub fn pooled_pipes_on_this_thread() -> usize {
        #[cfg(all(target_os = "linux", feature = "splice"))]
        {
            pool::pooled_on_this_thread()
        }
        #[cfg(not(all(target_os = "linux", feature = "splice")))]
        {
            0
        }
    }

    /// Closes the pipes waiting in this thread's pool.
    pub fn clear_pipe_pool_on_this_thread() {
        #[cfg(all(target_os = "linux", feature = "splice"))]
        pool::clear_this_thread();
    }
}

// === impl Failure ===

/// An I/O error of one direction, tagged with the socket it came from.
struct Failure {
    on_writer: bool,
    error: io::Error,
}

impl Failure {
    fn reader(error: io::Error) -> Failure {
        Failure {
            on_writer: false,
            error,
        }
    }

    fn writer(error: io::Error) -> Failure {
        Failure {
            on_writer: true,
            error,
        }
    }

    /// Names the failing side: in the client → backend direction the reader is the client.
    fn into_end(self, client_to_backend: bool) -> EndReason {
        if self.on_writer != client_to_backend {
            EndReason::ClientError(self.error)
        } else {
            EndReason::BackendError(self.error)
        }
    }
}

// === impl Duplex ===

/// The two sockets of a session, split so that each direction owns its reader.
struct Sockets<'s, 'a> {
    client_read: &'s mut ReadHalf<'a>,
    client_write: &'a TcpStream,
    backend_read: &'s mut ReadHalf<'a>,
    backend_write: &'a TcpStream,
}

/// Both directions of one session plus the idle bookkeeping; the state of the [`transfer`]
/// future apart from its timer and cancel registration.
struct Duplex {
    c2b: HalfDuplex,
    b2c: HalfDuplex,
    /// Flipped on every poll so that each direction goes first half of the time.
    c2b_first: bool,
    idle_timeout: Duration,
    /// `moved` total at the last activity note.
    seen: u64,
    /// When the future last went to sleep after moving bytes (or the start).
    last_activity: Instant,
    cancel: CancelWatch,
}

impl Duplex {
    fn new(opts: &TransferOptions, start: Instant) -> Duplex {
        Duplex {
            c2b: HalfDuplex::new(opts.mode),
            b2c: HalfDuplex::new(opts.mode),
            c2b_first: false,
            idle_timeout: opts.idle_timeout.unwrap_or(FAR_FUTURE).min(FAR_FUTURE),
            seen: 0,
            last_activity: start,
            cancel: CancelWatch::new(),
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        sockets: Sockets<'_, '_>,
        cancelled: Pin<&mut WaitForCancellationFuture<'_>>,
        idle: Pin<&mut Option<Sleep>>,
    ) -> Poll<EndReason> {
        if self.cancel.poll(cx, cancelled).is_ready() {
            return Poll::Ready(EndReason::Cancelled);
        }

        self.c2b_first = !self.c2b_first;
        for to_backend in [self.c2b_first, !self.c2b_first] {
            let polled = if to_backend {
                let last = self.b2c.is_done();
                self.c2b
                    .poll(cx, sockets.client_read, sockets.backend_write, last)
            } else {
                let last = self.c2b.is_done();
                self.b2c
                    .poll(cx, sockets.backend_read, sockets.client_write, last)
            };
            if let Poll::Ready(Err(failure)) = polled {
                return Poll::Ready(failure.into_end(to_backend));
            }
        }
        if self.c2b.is_done() && self.b2c.is_done() {
            return Poll::Ready(EndReason::Completed);
        }
        self.poll_idle(cx, idle)
    }

    /// Called only when both directions wait. See "Idle timeout" in the module docs.
    fn poll_idle(
        &mut self,
        cx: &mut Context<'_>,
        idle: Pin<&mut Option<Sleep>>,
    ) -> Poll<EndReason> {
        let Some(mut sleep) = idle.as_pin_mut() else {
            return Poll::Pending;
        };
        let moved = self.c2b.moved + self.b2c.moved;
        if moved != self.seen {
            self.seen = moved;
            self.last_activity = Instant::now();
        }
        while sleep.as_mut().poll(cx).is_ready() {
            let deadline = self.last_activity + self.idle_timeout;
            if deadline <= sleep.deadline() {
                return Poll::Ready(EndReason::Idle);
            }
            sleep.as_mut().reset(deadline);
        }
        Poll::Pending
    }

    fn stats(&self, end: EndReason) -> TransferStats {
        TransferStats {
            client_to_backend: self.c2b.moved,
            backend_to_client: self.b2c.moved,
            spliced: self.c2b.spliced + self.b2c.spliced,
            end,
        }
    }
}

impl Drop for Duplex {
    /// The one place the process-wide splice counters change: once per session.
    fn drop(&mut self) {
        let spliced = self.c2b.spliced + self.b2c.spliced;
        if spliced > 0 {
            SESSIONS_SPLICED.fetch_add(1, Ordering::Relaxed);
            BYTES_SPLICED.fetch_add(spliced, Ordering::Relaxed);
        }
    }
}
