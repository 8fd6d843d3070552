//! The worker's free list of splice pipes, and the descriptor budget its new pipes draw from.
//!
//! A session holds a pipe only while one of its directions is in the middle of a burst; an idle
//! session holds none. Taking and giving back happen at the edges of bursts, so each worker
//! thread keeps its own [`FreeList`] (`thread_local!`: no lock, no atomic on the way in or out),
//! handed to the splice loop as [`Pipes`]. A pipe is two descriptors and may be given back on a
//! different worker thread from the one it was taken on.
//!
//! The budget is passed in: the data plane's wiring ([`crate::data_plane::workers`]) gives each
//! worker thread's list the descriptor budget of its proxy, so two proxies in one process keep
//! theirs apart. A thread that was given none (a test's) opens pipes without a budget.
//!
//! # Invariants
//! - Only **empty** pipes enter the list; a pipe that still holds bytes is closed instead.
//! - At most [`POOL_PER_THREAD`] pipes wait in one thread's list, and at most
//!   [`MAX_OPEN_PIPES`](super::splice::MAX_OPEN_PIPES) exist in the whole process (pooled or in use), each holding a permit of
//!   its list's budget so that pipes never take the descriptors sessions and the control plane
//!   were promised. A stalled accept loop gives its thread's pooled pipes back
//!   ([`release_idle`]). Past that, [`take`] fails and the direction copies instead, which
//!   keeps descriptors for `accept`.
//! - The open-pipe count changes only when a pipe is created or closed, never per burst.

use std::cell::RefCell;
use std::io;
use std::sync::Arc;

use tokio::sync::Semaphore;

use super::splice::{OpenPipe, Pipe, Pipes};

/// Capacity asked for with `F_SETPIPE_SZ`. 256 KiB (64 pages) measured as fast as 1 MiB on
/// loopback and stays well inside the default `pipe-user-pages-soft` budget (64 MiB per user)
/// when the proxy runs unprivileged.
const PIPE_SIZE: usize = 256 * 1024;

/// Empty pipes kept per worker thread for the next burst.
pub(super) const POOL_PER_THREAD: usize = 16;

/// A bounded list of empty pipes, and the budget new ones take a permit of.
pub(super) struct FreeList {
    pipes: Vec<Pipe>,
    /// The descriptor budget (`fd_budget`); none means no budget. Read only when a pipe is
    /// created, never per burst.
    budget: Option<Arc<Semaphore>>,
    /// Test hook: when set, [`FreeList::take`] fails as if the descriptor table were full.
    refuse: bool,
}

impl FreeList {
    const fn new() -> FreeList {
        FreeList {
            pipes: Vec::new(),
            budget: None,
            refuse: false,
        }
    }

    /// An empty pipe from the list, or a new one under the budget.
    fn take(&mut self) -> io::Result<Pipe> {
        if self.refuse {
            return Err(io::Error::from_raw_os_error(libc::EMFILE));
        }
        match self.pipes.pop() {
            Some(pipe) => Ok(pipe),
            None => Pipe::new(PIPE_SIZE, OpenPipe::acquire(self.budget.as_ref())?),
        }
    }

    /// Keeps an empty pipe while there is room; closes it otherwise.
    fn give(&mut self, pipe: Pipe) {
        if pipe.is_empty() && self.pipes.len() < POOL_PER_THREAD {
            self.pipes.push(pipe);
        }
    }
}

thread_local! {
    static FREE: RefCell<FreeList> = const { RefCell::new(FreeList::new()) };
}

/// This thread's free list, as the splice loop takes it.
pub(super) struct ThisThread;

impl Pipes for ThisThread {
    fn take(&mut self) -> io::Result<Pipe> {
        take()
    }

    fn give(&mut self, pipe: Option<Pipe>) {
        give(pipe);
    }
}

/// Makes this thread's new pipes draw from `budget` (pipes already open keep what they hold).
pub(super) fn draw_from(budget: Option<Arc<Semaphore>>) {
    FREE.with_borrow_mut(|free| free.budget = budget);
}

/// Takes an empty pipe from this thread's list, or opens a new one.
///
/// # Errors
/// `EMFILE`/`ENFILE` from `pipe2`, or `EMFILE` when the budget or the open-pipe cap allow no
/// more, the test hook refuses pipes on this thread, or the thread is being torn down.
pub(super) fn take() -> io::Result<Pipe> {
    FREE.try_with(|free| free.borrow_mut().take())
        .unwrap_or_else(|_| Err(io::Error::from_raw_os_error(libc::EMFILE)))
}

/// Gives a pipe back. Pipes that still hold bytes, and pipes beyond the per-thread bound, are
/// closed.
pub(super) fn give(pipe: Option<Pipe>) {
    let Some(pipe) = pipe else {
        return;
    };
    // If the list is gone (thread teardown) the pipe is dropped, which closes it.
    let _ = FREE.try_with(|free| free.borrow_mut().give(pipe));
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

#[cfg(test)]
mod tests {
    use super::super::splice::{open_pipes, tests::exclusive};
    use super::*;

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

    #[test]
    fn each_thread_draws_from_the_budget_it_was_given() {
        let _exclusive = exclusive();
        let budgets = [Arc::new(Semaphore::new(4)), Arc::new(Semaphore::new(4))];
        let barrier = std::sync::Barrier::new(2);
        std::thread::scope(|scope| {
            for budget in &budgets {
                let barrier = &barrier;
                scope.spawn(move || {
                    draw_from(Some(budget.clone()));
                    // Both budgets are set before either thread opens a pipe, so one setting
                    // shared by the process would put both pipes on the same budget.
                    barrier.wait();
                    let pipe = take().expect("a pipe within this thread's budget");
                    barrier.wait();
                    assert_eq!(budget.available_permits(), 3, "one pipe on each budget");
                    drop(pipe);
                });
            }
        });
        for budget in &budgets {
            assert_eq!(budget.available_permits(), 4);
        }
    }
}
