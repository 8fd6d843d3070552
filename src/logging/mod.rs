//! Where log lines go: standard output, in batches written by a thread of their own.
//!
//! Every closed session logs one line, so on a busy proxy the log is a data-plane cost. Lines are
//! formatted on the thread that logs them (text fields without the colour machinery when the
//! output is not a terminal: [`PlainFields`]) and appended to a buffer that a writer thread
//! writes with one `write(2)` per 100 ms at most (`batch.rs`), so a data-plane thread never
//! blocks on a slow terminal, pipe or journal. If the output cannot keep up and 8 MiB are
//! waiting, lines are dropped rather than stalling sessions (as syslog over UDP does for
//! HAProxy) and counted in `rolegate_log_lines_dropped_total`.

mod batch;

use std::fmt;
use std::io::IsTerminal;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, Opts};
use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Keeps the writer thread alive; dropping it writes every pending line and stops the thread.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _flusher: Option<batch::Flusher>,
    dropped: Option<batch::Dropped>,
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi);
    let Ok((writer, flusher, dropped)) = batch::start(std::io::stdout(), batch::Limits::default())
    else {
        // No thread for the writer: write each line directly, as a plain subscriber does.
        let _ = builder.try_init();
        return LogGuard {
            _flusher: None,
            dropped: None,
        };
    };
    let builder = builder.with_writer(writer);
    let _ = match config.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        // On a terminal, the default (coloured) fields; elsewhere the plain ones.
        LogFormat::Text if ansi => builder.try_init(),
        LogFormat::Text => builder.fmt_fields(PlainFields).try_init(),
    };
    LogGuard {
        _flusher: Some(flusher),
        dropped: Some(dropped),
    }
}

/// Text-format fields without colour: `message key=value key="text"`, as the default
/// formatter writes them with colours off, but without passing every field name through the
/// colour machinery (which, even with colours off, was a third of the cost of a session's close
/// line under callgrind).
struct PlainFields;

impl<'w> FormatFields<'w> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = PlainVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct PlainVisitor<'w> {
    writer: Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    fn write(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.result.is_err() {
            return;
        }
        let space = if std::mem::take(&mut self.first) {
            ""
        } else {
            " "
        };
        self.result = if field.name() == "message" {
            write!(self.writer, "{space}{value}")
        } else {
            write!(self.writer, "{space}{}={value}", field.name())
        };
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.write(field, format_args!("{value}"));
        } else {
            self.write(field, format_args!("{value:?}"));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.write(field, format_args!("{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.write(field, format_args!("{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.write(field, format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, format_args!("{value:?}"));
    }
}

/// `rolegate_log_lines_dropped_total`, read from the writer's counter at scrape time.
pub struct DroppedLines {
    counter: Option<batch::Dropped>,
    metric: IntCounter,
}

impl DroppedLines {
    fn new(counter: Option<batch::Dropped>) -> DroppedLines {
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
        let now = self.counter.as_ref().map_or(0, batch::Dropped::get);
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

    use super::*;

    /// A `MakeWriter` into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn emit_sample() {
        let addr: std::net::SocketAddr = "127.0.0.1:5432".parse().unwrap();
        tracing::info!(
            message = "Session closed.",
            listener = %"pg-rw",
            client.addr = %addr,
            bytes_in = 42u64,
            delta = -3i64,
            reason = "completed",
            fenced = false,
            detail = ?Some(1),
        );
    }

    #[test]
    fn plain_fields_read_exactly_like_the_default_without_colours() {
        let (default, plain) = (Buffer::default(), Buffer::default());
        let out = default.clone();
        let sub = tracing_subscriber::fmt()
            .without_time()
            .with_target(false)
            .with_ansi(false)
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(sub, emit_sample);
        let out = plain.clone();
        let sub = tracing_subscriber::fmt()
            .without_time()
            .with_target(false)
            .with_ansi(false)
            .with_writer(move || out.clone())
            .fmt_fields(PlainFields)
            .finish();
        tracing::subscriber::with_default(sub, emit_sample);
        let (default, plain) = (
            String::from_utf8(default.0.lock().unwrap().clone()).unwrap(),
            String::from_utf8(plain.0.lock().unwrap().clone()).unwrap(),
        );
        assert_eq!(
            plain,
            " INFO Session closed. listener=pg-rw client.addr=127.0.0.1:5432 bytes_in=42 delta=-3 reason=\"completed\" fenced=false detail=Some(1)\n"
        );
        assert_eq!(plain, default);
    }

    #[test]
    fn dropped_lines_are_exported_as_a_counter() {
        let (writer, flusher, dropped) = batch::start(
            std::io::sink(),
            batch::Limits {
                max_pending: 0,
                ..batch::Limits::default()
            },
        )
        .unwrap();
        let collector = DroppedLines::new(Some(dropped));
        let exported = |c: &DroppedLines| {
            let families = c.collect();
            assert_eq!(families[0].name(), "rolegate_log_lines_dropped_total");
            families[0].get_metric()[0].get_counter().value()
        };
        assert_eq!(exported(&collector), 0.0);
        let mut line = tracing_subscriber::fmt::MakeWriter::make_writer(&writer);
        line.write_all(b"does not fit\n").unwrap();
        line.write_all(b"nor this\n").unwrap();
        assert_eq!(exported(&collector), 2.0);
        assert_eq!(exported(&collector), 2.0, "a scrape does not count twice");
        drop(flusher);
    }
}
