//! The Linux `splice(2)` path: socket → pipe → socket, driven by Tokio readiness.
//!
//! This is the only module of the crate that contains `unsafe` code, and all of it is four
//! system calls (`pipe2`, `fcntl`, `splice`, `read`) on file descriptors this module owns or
//! borrows for the duration of the call. Every `unsafe` block carries a `// SAFETY:` note.
//!
//! # What it owns
//! - [`Pipe`]: the two ends of a kernel pipe as [`OwnedFd`]s (closing is `OwnedFd`'s job, there is
//!   no hand-written `Drop` for descriptors) plus the number of bytes currently inside it.
//! - [`OpenPipe`]: what an open pipe holds besides its descriptors: one unit of the process-wide
//!   open-pipe count (at most [`MAX_OPEN_PIPES`]) and, when there is one, a permit of the
//!   descriptor budget.
//! - [`poll_splice`]: one direction's splice loop. Bytes enter the pipe only when it is empty and
//!   are then pushed to the writer until it is empty again.
//!
//! # The readiness invariant
//! Tokio clears a socket's readiness when the closure given to `try_io` returns `WouldBlock`, and
//! with edge-triggered epoll a wrongly cleared flag means a lost wake-up. A `splice` that returns
//! `EAGAIN` must therefore be unambiguous about *which* descriptor was not ready:
//! - socket → pipe is attempted only while the pipe is **empty**, so `EAGAIN` can only mean the
//!   socket has nothing to read (a pipe can look full with far fewer bytes than its capacity,
//!   because every socket fragment takes a whole pipe slot);
//! - pipe → socket is attempted only while the pipe is **non-empty**, so `EAGAIN` can only mean
//!   the socket's send buffer is full.
//!
//! A pipe is taken from the worker's free list (`pool.rs`, handed in as [`Pipes`], so this module
//! does not depend on it) only once the reader is readable and is given back as soon as it is
//! empty and the reader would block, so an idle direction holds no descriptors. Pipe capacity is a hint for how much to ask for per call, never an assertion.
//!
//! `splice` into a socket whose peer is gone may raise `SIGPIPE`; the Rust runtime ignores that
//! signal in every Rust binary, so the call returns `EPIPE` and is reported as a writer error.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::buffered::Spill;
use super::Failure;

/// Flags for every splice call: move pages instead of copying where the kernel can, and never
/// block on the pipe (the sockets are non-blocking already).
const FLAGS: libc::c_uint = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;

/// Capacity assumed when `F_GETPIPE_SZ` cannot be read (the Linux default, 16 pages).
const DEFAULT_PIPE_CAPACITY: usize = 64 * 1024;

/// Pipes (two descriptors each) the whole process may hold at once, pooled or in use.
pub(super) const MAX_OPEN_PIPES: usize = 1024;

/// Pipes open in the process: created and not yet closed. A bound on descriptors, not a setting:
/// it changes only when a pipe is created or closed, never per burst.
static OPEN_PIPES: AtomicUsize = AtomicUsize::new(0);

/// Number of pipes open in the process, pooled or in use (two descriptors each).
pub(super) fn open_pipes() -> usize {
    OPEN_PIPES.load(Ordering::Relaxed)
}

/// Where [`poll_splice`] takes an empty pipe when a burst starts and leaves it when the burst
/// ends: the worker's free list (`pool.rs`).
pub(super) trait Pipes {
    /// An empty pipe, pooled or new.
    ///
    /// # Errors
    /// None can be had (descriptor limit or budget, open-pipe cap, a test hook).
    fn take(&mut self) -> io::Result<Pipe>;

    /// Takes a pipe back; one that still holds bytes is closed.
    fn give(&mut self, pipe: Option<Pipe>);
}

/// How one call of [`poll_splice`] ended without an error.
pub(super) enum SpliceEnd {
    /// The reader reached EOF and every byte read was written.
    Eof,
    /// The reader would block and the pipe went back to the pool (the burst is over).
    Drained,
    /// No pipe could be had (descriptor limit, open-pipe cap, or the test hook).
    NoPipe(io::Error),
    /// The kernel refused to splice these descriptors (`EINVAL`/`ENOSYS`). The pipe, possibly
    /// still holding bytes, stays in the caller's slot; see [`Pipe::drain_into`].
    Unsupported(io::Error),
}

// === impl Pipe ===

/// A kernel pipe used as the in-kernel buffer between two sockets.
pub(super) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes spliced in and not yet spliced out. Only this module changes it.
    len: usize,
    /// What `F_GETPIPE_SZ` reported; the most we ask for per splice-in.
    capacity: usize,
    /// Keeps the process-wide open-pipe count right for as long as the descriptors live.
    _open: OpenPipe,
}

impl Pipe {
    /// Opens a non-blocking, close-on-exec pipe and asks for `size` bytes of capacity. A refused
    /// resize is silent: the pipe keeps whatever the kernel gave it.
    pub(super) fn new(size: usize, open: OpenPipe) -> io::Result<Pipe> {
        let mut fds: [libc::c_int; 2] = [-1, -1];
        // SAFETY: `fds` is a writable array of two `c_int`s, exactly what `pipe2` fills in.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `pipe2` succeeded, so both descriptors are open and nothing else owns them;
        // from here on `OwnedFd` closes them exactly once.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };

        let size = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
        // SAFETY: `F_SETPIPE_SZ` on a pipe descriptor we own, with the `int` argument it expects.
        // Failure (EPERM over `pipe-user-pages-soft`, EINVAL above `pipe-max-size`) is ignored.
        unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, size) };
        // SAFETY: `F_GETPIPE_SZ` on a pipe descriptor we own; it takes no argument.
        let got = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
        let capacity = usize::try_from(got)
            .ok()
            .filter(|&c| c > 0)
            .unwrap_or(DEFAULT_PIPE_CAPACITY);

        Ok(Pipe {
            read,
            write,
            len: 0,
            capacity,
            _open: open,
        })
    }

    /// True when no byte is waiting in the pipe (the only state in which it may be pooled).
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Moves up to `capacity` bytes from `from` into the pipe.
    fn splice_in(&mut self, from: BorrowedFd<'_>) -> io::Result<usize> {
        let n = splice(from, self.write.as_fd(), self.capacity)?;
        self.len += n;
        Ok(n)
    }

    /// Moves bytes from the pipe to `to`.
    fn splice_out(&mut self, to: BorrowedFd<'_>) -> io::Result<usize> {
        let n = splice(self.read.as_fd(), to, self.len)?;
        self.len -= n.min(self.len);
        Ok(n)
    }

    /// Reads whatever the pipe holds into `spill`, for the rare case where the kernel accepted
    /// bytes into the pipe but refuses to splice them out, so the buffered path can send them.
    pub(super) fn drain_into(&mut self, spill: &mut Spill) -> io::Result<()> {
        let fd = self.read.as_raw_fd();
        let filled = spill.fill_with(self.len, |buf| {
            // SAFETY: `buf` is a valid, writable, initialised slice of `buf.len()` bytes and `fd`
            // is the read end of this pipe, owned by `self`, which outlives the call.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n.unsigned_abs())
            }
        })?;
        self.len -= filled.min(self.len);
        Ok(())
    }
}

/// One non-blocking `splice(2)` call without offsets (both ends are a socket or a pipe).
fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are borrowed, so they stay open for the call; null offsets are
    // what splice requires for pipes and sockets; the kernel writes into no user memory.
    let n = unsafe {
        libc::splice(
            from.as_raw_fd(),
            std::ptr::null_mut(),
            to.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            FLAGS,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n.unsigned_abs())
    }
}

/// Errors meaning "these descriptors cannot be spliced", after which the direction copies.
fn is_unsupported(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS))
}

// === impl OpenPipe ===

/// One unit of the open-pipe count and, with a budget, one of its permits (a permit is two
/// descriptors: one session, or one pipe), held by a [`Pipe`] for as long as its descriptors
/// are open.
pub(super) struct OpenPipe {
    _budget: Option<OwnedSemaphorePermit>,
}

impl OpenPipe {
    /// Admits one more pipe under `budget` (none: no budget) and [`MAX_OPEN_PIPES`].
    ///
    /// # Errors
    /// `EMFILE` when the budget has no permit left or the cap is reached.
    pub(super) fn acquire(budget: Option<&Arc<Semaphore>>) -> io::Result<OpenPipe> {
        let refused = || io::Error::from_raw_os_error(libc::EMFILE);
        let budget = match budget {
            Some(budget) => Some(budget.clone().try_acquire_owned().map_err(|_| refused())?),
            None => None,
        };
        let admitted = OPEN_PIPES
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                (open < MAX_OPEN_PIPES).then_some(open + 1)
            })
            .is_ok();
        if admitted {
            Ok(OpenPipe { _budget: budget })
        } else {
            Err(refused())
        }
    }
}

impl Drop for OpenPipe {
    fn drop(&mut self) {
        OPEN_PIPES.fetch_sub(1, Ordering::Relaxed);
    }
}

// === the splice loop of one direction ===

/// Moves bytes from `reader` to `writer` through the pipe in `slot` until the reader would block
/// (the pipe is then back in `pipes`), reaches EOF, or fails.
///
/// `moved` and `spliced` count bytes written to `writer`; bytes still in the pipe are not counted.
pub(super) fn poll_splice(
    cx: &mut Context<'_>,
    reader: &TcpStream,
    writer: &TcpStream,
    slot: &mut Option<Pipe>,
    pipes: &mut impl Pipes,
    moved: &mut u64,
    spliced: &mut u64,
) -> Poll<Result<SpliceEnd, Failure>> {
    loop {
        // 1. Empty the pipe first: EAGAIN here can only be the writer's.
        if let Some(pipe) = slot.as_mut().filter(|pipe| !pipe.is_empty()) {
            ready!(writer.poll_write_ready(cx)).map_err(Failure::writer)?;
            match writer.try_io(Interest::WRITABLE, || pipe.splice_out(writer.as_fd())) {
                Ok(n) => {
                    *moved += n as u64;
                    *spliced += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if is_unsupported(&e) => return Poll::Ready(Ok(SpliceEnd::Unsupported(e))),
                Err(e) => return Poll::Ready(Err(Failure::writer(e))),
            }
            continue;
        }

        // 2. The pipe is empty (or absent): refill it, taking one only once there is data.
        ready!(reader.poll_read_ready(cx)).map_err(Failure::reader)?;
        let pipe = match slot {
            Some(pipe) => pipe,
            None => match pipes.take() {
                Ok(pipe) => slot.insert(pipe),
                Err(e) => return Poll::Ready(Ok(SpliceEnd::NoPipe(e))),
            },
        };
        match reader.try_io(Interest::READABLE, || pipe.splice_in(reader.as_fd())) {
            Ok(0) => {
                pipes.give(slot.take());
                return Poll::Ready(Ok(SpliceEnd::Eof));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                pipes.give(slot.take());
                return Poll::Ready(Ok(SpliceEnd::Drained));
            }
            Err(e) if is_unsupported(&e) => return Poll::Ready(Ok(SpliceEnd::Unsupported(e))),
            Err(e) => return Poll::Ready(Err(Failure::reader(e))),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    use std::sync::{Mutex, MutexGuard};

    use super::*;

    /// Unit tests that open pipes hold this, so the process-wide count is theirs to check.
    pub(in crate::data_plane::transfer) fn exclusive() -> MutexGuard<'static, ()> {
        static LOCK: Mutex<()> = Mutex::new(());
        LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Bytes spliced into a pipe and then stranded (the kernel refusing the splice-out) are read
    /// back in order into the spill, and the pipe ends up empty, fit for the pool.
    #[test]
    fn stranded_pipe_bytes_are_rescued_into_the_spill() {
        let _exclusive = exclusive();
        let (mut tx, rx) = UnixStream::pair().expect("socketpair");
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        tx.write_all(&data).expect("write");

        let mut pipe =
            Pipe::new(64 * 1024, OpenPipe::acquire(None).expect("admitted")).expect("pipe");
        let mut got = 0;
        while got < data.len() {
            got += pipe.splice_in(rx.as_fd()).expect("splice in");
        }
        assert!(!pipe.is_empty());

        let mut spill = Spill::new();
        pipe.drain_into(&mut spill).expect("drain");
        assert!(pipe.is_empty());
        assert_eq!(spill.pending(), &data[..]);
        drop(pipe);
    }
}
