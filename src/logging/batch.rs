//! A log writer that batches lines into one `write(2)` every [`Limits::every`].
//!
//! The proxy logs a line per closed session: at 15,000 connections per second, a `write` per
//! line (the default for standard output) or a thread wake-up per line (a queue to a writer
//! thread, which then writes each line as soon as it arrives) costs more system calls than the
//! session itself. Here a line is appended to a shared buffer under a lock held for one
//! `memcpy`; a writer thread sleeps until the first line of a batch arrives, lets lines gather for
//! `every` (less when the batch reaches `batch_bytes`, or a warning or error arrives), and writes
//! them with one call. So a line appears at most `every` late, and a busy proxy makes a handful
//! of log writes per second.
//!
//! Standard output may block (a full pipe, a stalled journal). The buffer is bounded by
//! `max_pending`: lines that find it full are dropped and counted, so sessions never wait for the
//! log.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// When a batch is written.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Longest time a line waits.
    pub every: Duration,
    /// A batch this big is written at once.
    pub batch_bytes: usize,
    /// Bytes that may wait; a line that does not fit is dropped.
    pub max_pending: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            every: Duration::from_millis(100),
            batch_bytes: 64 * 1024,
            max_pending: 8 * 1024 * 1024,
        }
    }
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    dropped: AtomicU64,
    limits: Limits,
}

#[derive(Default)]
struct State {
    pending: Vec<u8>,
    /// A warning or error is waiting: write now.
    urgent: bool,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves only bytes behind; keep logging.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The `MakeWriter` handed to the subscriber. Cheap to clone.
#[derive(Clone)]
pub(super) struct BatchWriter(Arc<Shared>);

/// Stops the writer thread when dropped, after it wrote what is pending (waiting at most a
/// second for a blocked output).
pub(super) struct Flusher {
    shared: Arc<Shared>,
    done: mpsc::Receiver<()>,
}

/// Lines dropped so far because the buffer was full.
#[derive(Clone)]
pub(super) struct Dropped(Arc<Shared>);

impl Dropped {
    pub(super) fn get(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }
}

/// Starts the writer thread over `out`.
///
/// # Errors
/// The thread cannot be started.
pub(super) fn start(
    out: impl Write + Send + 'static,
    limits: Limits,
) -> std::io::Result<(BatchWriter, Flusher, Dropped)> {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        wake: Condvar::new(),
        dropped: AtomicU64::new(0),
        limits,
    });
    let (finished, done) = mpsc::channel();
    let thread_shared = shared.clone();
    std::thread::Builder::new()
        .name("rolegate-log".into())
        .spawn(move || {
            write_batches(&thread_shared, out);
            let _ = finished.send(());
        })?;
    Ok((
        BatchWriter(shared.clone()),
        Flusher {
            shared: shared.clone(),
            done,
        },
        Dropped(shared),
    ))
}

/// The writer thread: one `write_all` per batch until closed and drained.
fn write_batches(shared: &Shared, mut out: impl Write) {
    let limits = shared.limits;
    let mut batch = Vec::new();
    loop {
        let mut state = shared.lock();
        while state.pending.is_empty() && !state.closed {
            state = shared.wake.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        if !state.closed && !state.urgent && state.pending.len() < limits.batch_bytes {
            // Let the batch gather; woken early by size, urgency or close.
            state = shared
                .wake
                .wait_timeout_while(state, limits.every, |s| {
                    !s.closed && !s.urgent && s.pending.len() < limits.batch_bytes
                })
                .map_or_else(|p| p.into_inner().0, |(s, _)| s);
        }
        std::mem::swap(&mut state.pending, &mut batch);
        state.urgent = false;
        let closed = state.closed;
        drop(state);
        // Nothing to do about a failing output but keep the proxy running.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if closed && shared.lock().pending.is_empty() {
            return;
        }
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line {
            shared: &self.0,
            urgent: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line<'a> {
        Line {
            shared: &self.0,
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

/// One event's bytes (the formatter writes a whole line with one `write_all`).
pub(super) struct Line<'a> {
    shared: &'a Shared,
    urgent: bool,
}

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let limits = self.shared.limits;
        let mut state = self.shared.lock();
        let before = state.pending.len();
        if before + buf.len() > limits.max_pending {
            drop(state);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(buf.len());
        }
        state.pending.extend_from_slice(buf);
        let crossed = before < limits.batch_bytes && state.pending.len() >= limits.batch_bytes;
        let wake = before == 0 || crossed || (self.urgent && !state.urgent);
        state.urgent |= self.urgent;
        drop(state);
        if wake {
            self.shared.wake.notify_one();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        let _ = self.done.recv_timeout(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records each `write` call.
    #[derive(Clone, Default)]
    struct Calls(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Calls {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn line(writer: &BatchWriter, text: &str) {
        writer.make_writer().write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn lines_are_written_in_order_in_few_calls_and_all_flushed_at_the_end() {
        let calls = Calls::default();
        let (writer, flusher, dropped) = start(
            calls.clone(),
            Limits {
                every: Duration::from_secs(3600),
                ..Limits::default()
            },
        )
        .unwrap();
        let lines: Vec<String> = (0..1000).map(|i| format!("line {i}\n")).collect();
        for l in &lines {
            line(&writer, l);
        }
        drop(flusher); // closing writes what is pending without waiting an hour
        let calls = calls.0.lock().unwrap();
        assert_eq!(calls.concat(), lines.concat().into_bytes());
        assert!(calls.len() <= 2, "{} writes for 1,000 lines", calls.len());
        assert_eq!(dropped.get(), 0);
    }

    /// Sends each write's bytes to the test, so it can await a write instead of sleeping.
    struct Notify(mpsc::Sender<Vec<u8>>);

    impl Write for Notify {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.send(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_batch_is_written_without_waiting_for_the_period() {
        let (tx, rx) = mpsc::channel();
        let (writer, _flusher, _) = start(
            Notify(tx),
            Limits {
                every: Duration::from_secs(3600),
                batch_bytes: 100,
                max_pending: 1 << 20,
            },
        )
        .unwrap();
        line(&writer, &"x".repeat(150));
        // Bounded wait: with the hour-long period, only the size rule can write this batch.
        let written = rx.recv_timeout(Duration::from_secs(30)).expect("written");
        assert_eq!(written.len(), 150);
    }

    #[test]
    fn a_warning_is_written_without_waiting_for_the_period() {
        let (tx, rx) = mpsc::channel();
        let (writer, _flusher, _) = start(
            Notify(tx),
            Limits {
                every: Duration::from_secs(3600),
                ..Limits::default()
            },
        )
        .unwrap();
        // What `make_writer_for` gives a WARN event.
        let mut w = Line {
            shared: &writer.0,
            urgent: true,
        };
        w.write_all(b"careful\n").unwrap();
        let written = rx.recv_timeout(Duration::from_secs(30)).expect("written");
        assert_eq!(written, b"careful\n");
    }

    #[test]
    fn lines_that_do_not_fit_are_dropped_and_counted_without_blocking() {
        // An output that accepts nothing until released, like a full pipe.
        struct Stuck(mpsc::Receiver<()>);
        impl Write for Stuck {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let _ = self.0.recv();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (release, stuck) = mpsc::channel();
        let (writer, flusher, dropped) = start(
            Stuck(stuck),
            Limits {
                every: Duration::ZERO,
                batch_bytes: 10,
                max_pending: 100,
            },
        )
        .unwrap();
        // However the writer thread is scheduled, at most 100 bytes wait in the buffer and the
        // thread holds at most one batch (≤ 100 bytes): of 50 lines of 10 bytes, 30 are dropped.
        for _ in 0..50 {
            line(&writer, "123456789\n");
        }
        assert!(dropped.get() >= 30, "dropped {}", dropped.get());
        drop(release);
        drop(flusher);
    }
}
