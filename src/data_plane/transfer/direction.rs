//! One direction of a session (reader → writer): `Running → ShuttingDown → Done`, and while
//! running, which engine moves the bytes.
//!
//! # Engines and the `Auto` rule
//! - `CopyOnly`: the buffered path for the whole session ([`TransferMode::Copy`], no splice
//!   support compiled in, or splice refused by the kernel or the descriptor budget).
//! - `Copy` (Auto): every burst starts with the buffered path. Small request/response traffic
//!   costs one `read` and one `write` per message and never touches a pipe.
//! - `Splice` (Auto): entered when a `read` fills the whole scratch buffer (64 KiB), which only
//!   happens when the socket holds a bulk stream. It lasts until the reader would block with the
//!   pipe empty; the pipe then goes back to the pool and the direction returns to `Copy`, so the
//!   next burst is judged afresh. Each bulk burst thus pays for one 64 KiB user-space copy.
//!
//! A pipe that cannot be had (`EMFILE`, open-pipe cap) or a kernel that refuses to splice
//! (`EINVAL`, `ENOSYS`) moves the direction to `CopyOnly` for the rest of the session, counted in
//! [`super::splice_fallbacks`]. Bytes already in the pipe are read back into the spill first, so
//! none are lost or reordered.
//!
//! # Half-close
//! EOF from the reader (after every byte read has been written) becomes `shutdown(SHUT_WR)` on the
//! writer; the other direction is unaffected.
//!
//! [`TransferMode::Copy`]: crate::config::TransferMode::Copy

use std::net::Shutdown;
use std::task::{ready, Context, Poll};

use tokio::net::tcp::ReadHalf;
use tokio::net::TcpStream;

use super::buffered::{self, CopyEnd, Spill};
#[cfg(all(target_os = "linux", feature = "splice"))]
use super::splice::{self, Pipe, SpliceEnd};
use super::Failure;
use crate::config::TransferMode;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Reader at EOF, every byte written: the writer's write side is to be shut down.
    ShuttingDown,
    Done,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Engine {
    CopyOnly,
    #[cfg(all(target_os = "linux", feature = "splice"))]
    Copy,
    #[cfg(all(target_os = "linux", feature = "splice"))]
    Splice,
}

/// State of one direction. Holds no buffer and no pipe while the direction is idle.
pub(super) struct HalfDuplex {
    phase: Phase,
    engine: Engine,
    /// Bytes read that the writer has not taken yet (buffered path only).
    spill: Option<Spill>,
    /// The pipe of the burst in flight (splice path only).
    #[cfg(all(target_os = "linux", feature = "splice"))]
    pipe: Option<Pipe>,
    /// Bytes accepted by the writer.
    pub(super) moved: u64,
    /// The part of `moved` that went through splice(2).
    pub(super) spliced: u64,
}

impl HalfDuplex {
    pub(super) fn new(mode: TransferMode) -> HalfDuplex {
        let engine = match mode {
            #[cfg(all(target_os = "linux", feature = "splice"))]
            TransferMode::Auto => Engine::Copy,
            _ => Engine::CopyOnly,
        };
        HalfDuplex {
            phase: Phase::Running,
            engine,
            spill: None,
            #[cfg(all(target_os = "linux", feature = "splice"))]
            pipe: None,
            moved: 0,
            spliced: 0,
        }
    }

    pub(super) fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Drives the direction until it is done (`Ready(Ok)`), fails, or must wait.
    ///
    /// `last` says the other direction is already done: this direction's EOF then ends the whole
    /// session, the caller closes both sockets at once, and the close sends the FIN, so the
    /// `shutdown` call is skipped (one system call less per connection). Both receive queues are
    /// empty at that point (both readers saw EOF), so the close is a FIN, never a reset.
    pub(super) fn poll(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut ReadHalf<'_>,
        writer: &TcpStream,
        last: bool,
    ) -> Poll<Result<(), Failure>> {
        loop {
            match self.phase {
                Phase::Running => {
                    ready!(self.poll_running(cx, reader, writer))?;
                    self.phase = Phase::ShuttingDown;
                }
                Phase::ShuttingDown => {
                    // A TCP shutdown never blocks, so this state never waits; it is kept so that a
                    // failed shutdown is reported from a well-defined state.
                    if !last {
                        socket2::SockRef::from(writer)
                            .shutdown(Shutdown::Write)
                            .map_err(Failure::writer)?;
                    }
                    self.phase = Phase::Done;
                }
                Phase::Done => return Poll::Ready(Ok(())),
            }
        }
    }

    /// Moves bytes until the reader's EOF has been reached and everything before it written.
    fn poll_running(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut ReadHalf<'_>,
        writer: &TcpStream,
    ) -> Poll<Result<(), Failure>> {
        loop {
            #[cfg(all(target_os = "linux", feature = "splice"))]
            if self.engine == Engine::Splice {
                let end = ready!(splice::poll_splice(
                    cx,
                    reader.as_ref(),
                    writer,
                    &mut self.pipe,
                    &mut super::pool::ThisThread,
                    &mut self.moved,
                    &mut self.spliced,
                ))?;
                match end {
                    SpliceEnd::Eof => return Poll::Ready(Ok(())),
                    SpliceEnd::Drained => self.engine = Engine::Copy,
                    SpliceEnd::NoPipe(error) => self.fall_back("no pipe", &error),
                    SpliceEnd::Unsupported(error) => {
                        self.rescue_pipe()?;
                        self.fall_back("splice refused", &error);
                    }
                }
                continue;
            }

            let detect_bulk = self.engine != Engine::CopyOnly;
            let end = ready!(buffered::poll_copy(
                cx,
                reader,
                writer,
                &mut self.spill,
                &mut self.moved,
                detect_bulk,
            ))?;
            match end {
                CopyEnd::Eof => return Poll::Ready(Ok(())),
                CopyEnd::Bulk => self.start_splicing(),
            }
        }
    }

    fn start_splicing(&mut self) {
        #[cfg(all(target_os = "linux", feature = "splice"))]
        {
            self.engine = Engine::Splice;
        }
    }

    /// Moves bytes stranded in the pipe to the spill so the buffered path sends them next.
    #[cfg(all(target_os = "linux", feature = "splice"))]
    fn rescue_pipe(&mut self) -> Result<(), Failure> {
        if let Some(pipe) = self.pipe.as_mut() {
            let spill = self.spill.get_or_insert_with(Spill::new);
            pipe.drain_into(spill).map_err(Failure::reader)?;
        }
        super::pool::give(self.pipe.take());
        Ok(())
    }

    #[cfg(all(target_os = "linux", feature = "splice"))]
    fn fall_back(&mut self, why: &'static str, error: &std::io::Error) {
        tracing::debug!(message = "Splice unavailable, copying instead.", reason = why, %error);
        super::count_fallback();
        self.engine = Engine::CopyOnly;
    }
}

#[cfg(all(target_os = "linux", feature = "splice"))]
impl Drop for HalfDuplex {
    /// An empty pipe goes back to the pool; one that still holds bytes is closed by `OwnedFd`.
    fn drop(&mut self) {
        super::pool::give(self.pipe.take());
    }
}
