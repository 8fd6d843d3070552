//! Where log lines go: standard output, written by a thread of its own.
//!
//! Every closed session logs one line, so on a busy proxy the log is a data-plane cost. Lines are
//! formatted on the thread that logs them and handed to a writer thread through a bounded
//! queue; that thread writes whatever has queued up with one `write(2)` (a 64 KiB buffer, flushed
//! whenever the queue runs empty), so a data-plane thread never blocks on a slow terminal, pipe
//! or journal. If the writer cannot keep up and the queue is full, lines are dropped rather than
//! stalling sessions (as syslog over UDP does for HAProxy) and counted in
//! `rolegate_log_lines_dropped_total`.

use std::io::{BufWriter, IsTerminal};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, Opts};
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Lines that may wait for the writer thread before new ones are dropped.
const QUEUE_LINES: usize = 128 * 1024;

/// Bytes gathered into one `write(2)`.
const WRITE_BUFFER: usize = 64 * 1024;

/// Keeps the writer thread alive; dropping it writes every queued line and stops the thread.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _writer: WorkerGuard,
    dropped: ErrorCounter,
}

impl LogGuard {
    /// A Prometheus collector for the lines dropped so far, to register in the metrics registry.
    pub fn dropped_lines(&self) -> DroppedLines {
        DroppedLines::new(self.dropped.clone())
    }
}

/// Installs the global subscriber: `config.level` (or `RUST_LOG`) as filter, text or JSON lines,
/// colours only on a terminal (a journal, file or pipe would get escape codes).
///
/// # Panics
/// Not at all; if a global subscriber is already set, this one is not installed.
pub fn init(config: &LogConfig) -> LogGuard {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stdout().is_terminal();
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUE_LINES)
        .thread_name("rolegate-log")
        .finish(BufWriter::with_capacity(WRITE_BUFFER, std::io::stdout()));
    let dropped = writer.error_counter();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer);
    let _ = match config.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    LogGuard {
        _writer: guard,
        dropped,
    }
}

/// `rolegate_log_lines_dropped_total`, read from the writer's counter at scrape time.
pub struct DroppedLines {
    counter: ErrorCounter,
    metric: IntCounter,
}

impl DroppedLines {
    fn new(counter: ErrorCounter) -> DroppedLines {
        let metric = IntCounter::with_opts(Opts::new(
            "rolegate_log_lines_dropped_total",
            "Log lines dropped because the log writer could not keep up.",
        ))
        .expect("static metric options are valid");
        DroppedLines { counter, metric }
    }
}

impl Collector for DroppedLines {
    fn desc(&self) -> Vec<&Desc> {
        self.metric.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let now = self.counter.dropped_lines() as u64;
        let seen = self.metric.get();
        if now > seen {
            self.metric.inc_by(now - seen);
        }
        self.metric.collect()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::mpsc;

    use super::*;

    /// A log destination that accepts nothing until released, like a full pipe.
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

    fn exported(collector: &DroppedLines) -> f64 {
        let families = collector.collect();
        assert_eq!(families[0].name(), "rolegate_log_lines_dropped_total");
        families[0].get_metric()[0].get_counter().value()
    }

    #[test]
    fn lines_that_find_the_queue_full_are_dropped_and_counted() {
        let (release, stuck) = mpsc::channel();
        let (mut writer, guard) = NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(1)
            .finish(Stuck(stuck));
        let collector = DroppedLines::new(writer.error_counter());
        assert_eq!(exported(&collector), 0.0);
        // One line may sit in the writer, one in the queue: the third has nowhere to go, and
        // writing it returns at once instead of blocking the logging thread.
        for _ in 0..3 {
            writer.write_all(b"line\n").unwrap();
        }
        let dropped = exported(&collector);
        assert!(dropped >= 1.0, "dropped {dropped}");
        assert_eq!(
            exported(&collector),
            dropped,
            "a scrape does not count twice"
        );
        drop(release);
        drop(guard);
    }
}
