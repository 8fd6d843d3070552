//! Watching a session's cancel token without touching its locks on every wake-up.
//!
//! A session's token is its backend's guard, shared by every session on that backend. Polling
//! its `cancelled()` future takes the token's mutex and the mutex of its `Notify` each time, and
//! the transfer future is woken once per message: two shared locks per message, contended across
//! worker threads by all sessions of the backend. [`CancelWatch`] polls the future once to
//! register, with a waker of its own that records that it fired before waking the task, and
//! polls it again only when that waker fired or the task's waker changed. In between, a wake-up
//! costs one atomic load.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use tokio_util::sync::WaitForCancellationFuture;

/// The registered side of a token's `cancelled()` future, for one task.
pub(super) struct CancelWatch {
    /// The waker the token holds; `None` until the first poll.
    signal: Option<Arc<Signal>>,
}

/// Wakes the task and notes that the token (not a socket) did it.
struct Signal {
    fired: AtomicBool,
    task: Waker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

impl CancelWatch {
    pub(super) fn new() -> CancelWatch {
        CancelWatch { signal: None }
    }

    /// `Ready` once the token is cancelled. Polls `cancelled` (taking its locks) only on the first
    /// call, after the token woke the task, or when the task's waker changed.
    pub(super) fn poll(
        &mut self,
        cx: &mut Context<'_>,
        cancelled: Pin<&mut WaitForCancellationFuture<'_>>,
    ) -> Poll<()> {
        if let Some(signal) = &self.signal {
            if !signal.fired.load(Ordering::Acquire) && signal.task.will_wake(cx.waker()) {
                return Poll::Pending;
            }
        }
        let signal = Arc::new(Signal {
            fired: AtomicBool::new(false),
            task: cx.waker().clone(),
        });
        let waker = Waker::from(Arc::clone(&signal));
        let polled = cancelled.poll(&mut Context::from_waker(&waker));
        self.signal = Some(signal);
        polled
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::sync::atomic::AtomicUsize;

    use tokio_util::sync::CancellationToken;

    use super::*;

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_cancel_after_registration_wakes_the_task_and_is_seen() {
        let token = CancellationToken::new();
        let mut cancelled = pin!(token.cancelled());
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        let mut cx = Context::from_waker(&waker);
        let mut watch = CancelWatch::new();

        assert!(watch.poll(&mut cx, cancelled.as_mut()).is_pending());
        assert!(watch.poll(&mut cx, cancelled.as_mut()).is_pending());
        token.cancel();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "the task is woken");
        assert!(watch.poll(&mut cx, cancelled.as_mut()).is_ready());
    }

    #[test]
    fn a_token_cancelled_before_the_first_poll_is_seen_at_once() {
        let token = CancellationToken::new();
        token.cancel();
        let mut cancelled = pin!(token.cancelled());
        let waker = Waker::from(Arc::new(CountingWaker(AtomicUsize::new(0))));
        let mut watch = CancelWatch::new();
        assert!(watch
            .poll(&mut Context::from_waker(&waker), cancelled.as_mut())
            .is_ready());
    }

    #[test]
    fn a_new_task_waker_is_registered_so_the_cancel_reaches_it() {
        let token = CancellationToken::new();
        let mut cancelled = pin!(token.cancelled());
        let first = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let second = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let mut watch = CancelWatch::new();
        let w1 = Waker::from(Arc::clone(&first));
        let w2 = Waker::from(Arc::clone(&second));
        assert!(watch
            .poll(&mut Context::from_waker(&w1), cancelled.as_mut())
            .is_pending());
        assert!(watch
            .poll(&mut Context::from_waker(&w2), cancelled.as_mut())
            .is_pending());
        token.cancel();
        assert_eq!(
            second.0.load(Ordering::SeqCst),
            1,
            "the current waker is woken"
        );
        assert!(watch
            .poll(&mut Context::from_waker(&w2), cancelled.as_mut())
            .is_ready());
    }
}
