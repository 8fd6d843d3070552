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
//!   exist in the whole process (pooled or in use), each holding a permit of the descriptor
//!   budget ([`draw_from`]) so that pipes never take the descriptors sessions and the control
//!   plane were promised. A stalled accept loop gives its thread's pooled pipes back
//!   ([`release_idle`]). Past that, [`take`] fails and the direction
//!   copies instead, which keeps descriptors for `accept`.
//! - [`open_pipes`] changes only when a pipe is created or closed, never per burst.

use std::cell::RefCell;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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

/// The descriptor budget (`fd_budget`) a new pipe takes one permit of (a permit is two
/// descriptors: one session, or one pipe); none means no budget. Read only when a pipe is
/// created, never per burst.
static BUDGET: ArcSwapOption<Semaphore> = ArcSwapOption::const_empty();

/// Makes new pipes draw from `budget` (pipes already open keep what they hold).
pub(super) fn draw_from(budget: Option<Arc<Semaphore>>) {
    BUDGET.store(budget);
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
    release_idle();
}

/// Closes this thread's pooled pipes, giving their budget permits back: called by an accept
/// loop that waits for a descriptor permit, so idle pipes never keep a client waiting.
pub(super) fn release_idle() {
    let pipes = FREE
        .try_with(|free| std::mem::take(&mut free.borrow_mut().pipes))
        .unwrap_or_default();
    drop(pipes);
}

// === impl OpenPipe ===

/// One unit of [`OPEN_PIPES`] and one permit of the descriptor budget, held by a [`Pipe`] for
/// as long as its descriptors are open.
pub(super) struct OpenPipe {
    _budget: Option<OwnedSemaphorePermit>,
}

impl OpenPipe {
    fn acquire() -> io::Result<OpenPipe> {
        let refused = || io::Error::from_raw_os_error(libc::EMFILE);
        let budget = match BUDGET.load_full() {
            Some(budget) => Some(budget.try_acquire_owned().map_err(|_| refused())?),
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

#[cfg(test)]
pub(super) mod tests {
    use std::sync::{Mutex, MutexGuard};

    use super::*;

    /// Unit tests that open pipes hold this, so the process-wide count is theirs to check.
    pub(in crate::data_plane::transfer) fn exclusive() -> MutexGuard<'static, ()> {
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
    fn pipes_draw_from_the_descriptor_budget_and_idle_ones_give_it_back() {
        let _exclusive = exclusive();
        clear_this_thread();
        let before = open_pipes();
        let budget = Arc::new(Semaphore::new(2));
        draw_from(Some(budget.clone()));
        let a = take().expect("first pipe within the budget");
        let b = take().expect("second pipe within the budget");
        let refused = take().err().and_then(|e| e.raw_os_error());
        assert_eq!(refused, Some(libc::EMFILE), "a third would pass the budget");
        assert_eq!(budget.available_permits(), 0);
        give(Some(a));
        assert_eq!(
            budget.available_permits(),
            0,
            "a pooled pipe keeps its permit"
        );
        let again = take().expect("a pooled pipe needs no new permit");
        give(Some(again));
        release_idle();
        assert_eq!(
            budget.available_permits(),
            1,
            "closing idle pipes frees their permits"
        );
        draw_from(None);
        drop(b);
        assert_eq!(budget.available_permits(), 2);
        assert_eq!(open_pipes(), before);
    }
}
