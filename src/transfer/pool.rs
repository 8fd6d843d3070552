//! A bounded, per-thread free list of splice pipes, and the process-wide open-pipe count.
//!
//! A session holds a pipe only while one of its directions is in the middle of a burst; an idle
//! session holds none. Taking and giving back happen at the edges of bursts, so the list is a
//! `thread_local!` `Vec` (no lock, no atomic on the way in or out). A pipe is two descriptors and
//! may be given back on a different worker thread from the one it was taken on.
//!
//! # Invariants
//! - Only **empty** pipes enter the list; a pipe that still holds bytes is closed instead.
//! - At most [`POOL_PER_THREAD`] pipes wait in one thread's list, and at most [`MAX_OPEN_PIPES`]
//!   (or the descriptor budget's share, [`set_cap`]) exist in the whole process (pooled or in use). Past that, [`take`] fails and the direction
//!   copies instead, which keeps descriptors for `accept`.
//! - [`open_pipes`] changes only when a pipe is created or closed, never per burst.

use std::cell::RefCell;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::splice::Pipe;

/// Capacity asked for with `F_SETPIPE_SZ`. 256 KiB (64 pages) measured as fast as 1 MiB on
/// loopback and stays well inside the default `pipe-user-pages-soft` budget (64 MiB per user)
/// when the proxy runs unprivileged.
const PIPE_SIZE: usize = 256 * 1024;

/// Empty pipes kept per worker thread for the next burst.
pub(super) const POOL_PER_THREAD: usize = 16;

/// Pipes (two descriptors each) the whole process may hold at once.
pub(super) const MAX_OPEN_PIPES: usize = 1024;

/// Pipes open in the process: created and not yet closed, pooled or in use.
static OPEN_PIPES: AtomicUsize = AtomicUsize::new(0);

/// The most pipes that may be open: [`MAX_OPEN_PIPES`], or less when the descriptor budget
/// (`fd_budget::Plan::pipes`) is smaller.
static PIPE_CAP: AtomicUsize = AtomicUsize::new(MAX_OPEN_PIPES);

/// Lowers (or restores) the open-pipe cap to `pipes`, at most [`MAX_OPEN_PIPES`]. Pipes open
/// beyond a lowered cap stay until they close; no new one opens until the count is below it.
pub(super) fn set_cap(pipes: usize) {
    PIPE_CAP.store(pipes.min(MAX_OPEN_PIPES), Ordering::Relaxed);
}

struct FreeList {
    pipes: Vec<Pipe>,
    /// Test hook: when set, [`take`] fails as if the descriptor table were full.
    refuse: bool,
}

thread_local! {
    static FREE: RefCell<FreeList> = const {
        RefCell::new(FreeList { pipes: Vec::new(), refuse: false })
    };
}

/// Takes an empty pipe from this thread's list, or opens a new one.
///
/// # Errors
/// `EMFILE`/`ENFILE` from `pipe2`, or `EMFILE` when [`MAX_OPEN_PIPES`] are open or the test hook
/// refuses pipes on this thread.
pub(super) fn take() -> io::Result<Pipe> {
    let pooled = FREE.try_with(|free| {
        let mut free = free.borrow_mut();
        if free.refuse {
            return Err(io::Error::from_raw_os_error(libc::EMFILE));
        }
        Ok(free.pipes.pop())
    });
    match pooled {
        Ok(Ok(Some(pipe))) => Ok(pipe),
        Ok(Err(e)) => Err(e),
        // Empty list, or the thread is being torn down: open a fresh pipe.
        Ok(Ok(None)) | Err(_) => Pipe::new(PIPE_SIZE, OpenPipe::acquire()?),
    }
}

/// Gives a pipe back. Pipes that still hold bytes, and pipes beyond the per-thread bound, are
/// closed.
pub(super) fn give(pipe: Option<Pipe>) {
    let Some(pipe) = pipe.filter(Pipe::is_empty) else {
        return;
    };
    // If the list is gone (thread teardown) the pipe is dropped, which closes it.
    let _ = FREE.try_with(|free| {
        let mut free = free.borrow_mut();
        if free.pipes.len() < POOL_PER_THREAD {
            free.pipes.push(pipe);
        }
    });
}

/// Number of pipes open in the process, pooled or in use (two descriptors each).
pub(super) fn open_pipes() -> usize {
    OPEN_PIPES.load(Ordering::Relaxed)
}

/// Test hook: make [`take`] on this thread fail (`true`) or work again (`false`).
pub(super) fn refuse_on_this_thread(refuse: bool) {
    FREE.with_borrow_mut(|free| free.refuse = refuse);
}

/// Test hook: pipes waiting in this thread's list.
pub(super) fn pooled_on_this_thread() -> usize {
    FREE.with_borrow(|free| free.pipes.len())
}

/// Test hook: close every pipe waiting in this thread's list.
pub(super) fn clear_this_thread() {
    let pipes = FREE.with_borrow_mut(|free| std::mem::take(&mut free.pipes));
    drop(pipes);
}

// === impl OpenPipe ===

/// One unit of [`OPEN_PIPES`], held by a [`Pipe`] for as long as its descriptors are open.
pub(super) struct OpenPipe(());

impl OpenPipe {
    fn acquire() -> io::Result<OpenPipe> {
        let cap = PIPE_CAP.load(Ordering::Relaxed);
        let admitted = OPEN_PIPES
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                (open < cap).then_some(open + 1)
            })
            .is_ok();
        if admitted {
            Ok(OpenPipe(()))
        } else {
            Err(io::Error::from_raw_os_error(libc::EMFILE))
        }
    }
}

impl Drop for OpenPipe {
    fn drop(&mut self) {
        OPEN_PIPES.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::{Mutex, MutexGuard};

    use super::*;

    /// Unit tests that open pipes hold this, so the process-wide count is theirs to check.
    pub(in crate::transfer) fn exclusive() -> MutexGuard<'static, ()> {
        static LOCK: Mutex<()> = Mutex::new(());
        LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[test]
    fn pool_is_bounded_and_keeps_only_empty_pipes() {
        let _exclusive = exclusive();
        clear_this_thread();
        let before = open_pipes();

        let pipes: Vec<Pipe> = (0..POOL_PER_THREAD + 4)
            .map(|_| take().expect("pipe"))
            .collect();
        assert_eq!(open_pipes(), before + POOL_PER_THREAD + 4);

        for pipe in pipes {
            give(Some(pipe));
        }
        assert_eq!(pooled_on_this_thread(), POOL_PER_THREAD);
        assert_eq!(open_pipes(), before + POOL_PER_THREAD);

        // Reuse, not creation.
        let pipe = take().expect("pooled pipe");
        assert_eq!(open_pipes(), before + POOL_PER_THREAD);
        give(Some(pipe));

        refuse_on_this_thread(true);
        let refused = take().err().and_then(|e| e.raw_os_error());
        assert_eq!(refused, Some(libc::EMFILE));
        refuse_on_this_thread(false);

        clear_this_thread();
        assert_eq!(open_pipes(), before);
    }

    #[test]
    fn the_budget_cap_stops_new_pipes_and_pooled_ones_still_serve() {
        let _exclusive = exclusive();
        clear_this_thread();
        let before = open_pipes();
        set_cap(before + 2);
        let a = take().expect("first pipe under the cap");
        let b = take().expect("second pipe under the cap");
        let refused = take().err().and_then(|e| e.raw_os_error());
        assert_eq!(refused, Some(libc::EMFILE), "a third would pass the cap");
        give(Some(a));
        let again = take().expect("a pooled pipe is no new descriptor");
        set_cap(usize::MAX);
        assert_eq!(
            PIPE_CAP.load(Ordering::Relaxed),
            MAX_OPEN_PIPES,
            "never above the constant"
        );
        drop((again, b));
        assert_eq!(open_pipes(), before);
    }
}
