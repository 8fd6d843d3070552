//! The buffered copy path: `read` into a per-thread scratch buffer, `write` straight to the peer.
//!
//! It is the whole data path when splice is unavailable or [`TransferMode::Copy`] is chosen, and
//! the first step of every burst in `Auto` mode, where it also decides when a direction is a bulk
//! stream worth splicing.
//!
//! # Memory
//! A session owns no copy buffer while it is idle. Reads land in [`SCRATCH`], one 64 KiB buffer
//! per worker thread, and are written to the peer in the same poll. Only when the peer takes less
//! than was read does the direction copy the rest into its own [`Spill`]; no new byte is read
//! until the spill is written, and the spill is freed when it is empty and the reader would block.
//!
//! [`TransferMode::Copy`]: crate::config::TransferMode::Copy

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::tcp::ReadHalf;
use tokio::net::TcpStream;

use super::Failure;

/// Size of the per-thread read buffer, and the read size that marks a direction as bulk.
pub(super) const SCRATCH_SIZE: usize = 64 * 1024;

thread_local! {
    /// Read buffer shared by every session polled on this thread. Borrowed only inside
    /// [`read_through`], which neither awaits nor re-enters, so the borrow never conflicts.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_SIZE].into_boxed_slice());
}

/// How one call of [`poll_copy`] ended without an error.
pub(super) enum CopyEnd {
    /// The reader reached EOF and every byte read was written.
    Eof,
    /// A read filled the scratch buffer and everything read so far is written: a bulk stream
    /// that the caller may switch to splice. Only returned when asked to detect bulk.
    Bulk,
}

/// Copies from `reader` to `writer` until EOF, an error, or (with `detect_bulk`) a full read.
///
/// `moved` counts bytes accepted by `writer`.
pub(super) fn poll_copy(
    cx: &mut Context<'_>,
    reader: &mut ReadHalf<'_>,
    writer: &TcpStream,
    spill: &mut Option<Spill>,
    moved: &mut u64,
    detect_bulk: bool,
) -> Poll<Result<CopyEnd, Failure>> {
    loop {
        // 1. Leftovers first: nothing new is read while the peer owes us a write.
        if let Some(left) = spill.as_mut() {
            if !left.is_empty() {
                ready!(writer.poll_write_ready(cx)).map_err(Failure::writer)?;
                match writer.try_write(left.pending()) {
                    Ok(0) => return Poll::Ready(Err(Failure::writer(write_zero()))),
                    Ok(n) => {
                        left.consume(n);
                        *moved += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err(Failure::writer(e))),
                }
                continue;
            }
            if left.then_splice {
                *spill = None;
                return Poll::Ready(Ok(CopyEnd::Bulk));
            }
        }

        // 2. Read a chunk and write it through in the same step.
        match read_through(cx, reader, writer, spill, moved, detect_bulk) {
            Poll::Ready(Ok(Step::Continue)) => {}
            Poll::Ready(Ok(Step::Bulk)) => {
                *spill = None;
                return Poll::Ready(Ok(CopyEnd::Bulk));
            }
            Poll::Ready(Ok(Step::Eof)) => {
                *spill = None;
                return Poll::Ready(Ok(CopyEnd::Eof));
            }
            Poll::Ready(Err(failure)) => return Poll::Ready(Err(failure)),
            // The burst is over: free the (empty) spill while the reader waits.
            Poll::Pending => {
                *spill = None;
                return Poll::Pending;
            }
        }
    }
}

enum Step {
    Continue,
    Bulk,
    Eof,
}

/// One `read` into the scratch buffer and one `write` of what was read; the part the writer did
/// not take goes to the spill.
///
/// The read goes through [`AsyncRead::poll_read`] rather than `try_read`: Tokio treats a read
/// that returns less than the buffer as proof that the socket is drained and clears its
/// readiness, so a request/response message costs one `read` and one `write`, not a third call
/// that only returns `EAGAIN`.
fn read_through(
    cx: &mut Context<'_>,
    reader: &mut ReadHalf<'_>,
    writer: &TcpStream,
    spill: &mut Option<Spill>,
    moved: &mut u64,
    detect_bulk: bool,
) -> Poll<Result<Step, Failure>> {
    SCRATCH.with_borrow_mut(|scratch| {
        let mut buf = ReadBuf::new(scratch);
        ready!(Pin::new(&mut *reader).poll_read(cx, &mut buf)).map_err(Failure::reader)?;
        let n = buf.filled().len();
        if n == 0 {
            return Poll::Ready(Ok(Step::Eof));
        }
        let written = match writer.try_write(&scratch[..n]) {
            Ok(0) => return Poll::Ready(Err(Failure::writer(write_zero()))),
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Poll::Ready(Err(Failure::writer(e))),
        };
        *moved += written as u64;
        let bulk = detect_bulk && n == scratch.len();
        if written < n {
            spill
                .get_or_insert_with(Spill::new)
                .refill(&scratch[written..n], bulk);
            Poll::Ready(Ok(Step::Continue))
        } else if bulk {
            Poll::Ready(Ok(Step::Bulk))
        } else {
            Poll::Ready(Ok(Step::Continue))
        }
    })
}

fn write_zero() -> io::Error {
    io::Error::new(io::ErrorKind::WriteZero, "peer accepted zero bytes")
}

// === impl Spill ===

/// Bytes read but not yet accepted by the writer. Allocated when a write falls short, freed when
/// the direction goes idle.
pub(super) struct Spill {
    buf: Vec<u8>,
    /// Start of the bytes not yet written.
    pos: usize,
    /// The read that filled this spill was a full scratch buffer: switch to splice once written.
    then_splice: bool,
}

impl Spill {
    pub(super) fn new() -> Spill {
        Spill {
            buf: Vec::with_capacity(SCRATCH_SIZE),
            pos: 0,
            then_splice: false,
        }
    }

    fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

    pub(super) fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.is_empty() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Replaces the (empty) contents with `bytes`.
    fn refill(&mut self, bytes: &[u8], then_splice: bool) {
        self.buf.clear();
        self.pos = 0;
        self.buf.extend_from_slice(bytes);
        self.then_splice = then_splice;
    }

    /// Appends up to `max` bytes produced by `read` (called until it returns 0, an error, or
    /// `max` bytes arrived) and returns how many were appended.
    ///
    /// # Errors
    /// The first error of `read`; bytes appended before it are kept.
    #[cfg_attr(not(all(target_os = "linux", feature = "splice")), allow(dead_code))]
    pub(super) fn fill_with(
        &mut self,
        max: usize,
        mut read: impl FnMut(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let start = self.buf.len();
        self.buf.resize(start + max, 0);
        let mut filled = 0;
        let result = loop {
            if filled == max {
                break Ok(filled);
            }
            match read(&mut self.buf[start + filled..]) {
                Ok(0) => break Ok(filled),
                Ok(n) => filled += n,
                Err(e) => break Err(e),
            }
        };
        self.buf.truncate(start + filled);
        result
    }
}
