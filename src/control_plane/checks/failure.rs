//! Why a check failed, in words an operator can act on. The reason is a bounded label (metrics,
//! `/status`); the detail is free text for logs and never contains a secret.

use std::fmt;

/// The class of a check failure; used as a metric label, so the set is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The name did not resolve.
    Resolve,
    /// TCP connection refused.
    Refused,
    /// The check did not finish within `check.timeout`.
    Timeout,
    /// The server rejected the monitor user's credentials.
    AuthFailed,
    /// TLS negotiation or certificate verification failed.
    Tls,
    /// The server answered something that cannot be parsed as the expected reply.
    UnexpectedReply,
    /// The server speaks another protocol than the cluster's (or is a Redis sentinel).
    WrongProtocol,
    /// The connection broke (reset, EOF) or another I/O error.
    Io,
    /// The query ran but the server reported an error (e.g. missing privilege).
    QueryFailed,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Resolve => "resolve",
            FailureReason::Refused => "refused",
            FailureReason::Timeout => "timeout",
            FailureReason::AuthFailed => "auth failed",
            FailureReason::Tls => "tls",
            FailureReason::UnexpectedReply => "unexpected reply",
            FailureReason::WrongProtocol => "wrong protocol",
            FailureReason::Io => "io",
            FailureReason::QueryFailed => "query failed",
        }
    }

    /// All reasons, for exporting zero-valued metric series.
    pub const ALL: [FailureReason; 9] = [
        FailureReason::Resolve,
        FailureReason::Refused,
        FailureReason::Timeout,
        FailureReason::AuthFailed,
        FailureReason::Tls,
        FailureReason::UnexpectedReply,
        FailureReason::WrongProtocol,
        FailureReason::Io,
        FailureReason::QueryFailed,
    ];
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed check: a bounded reason plus a human detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckFailure {
    pub reason: FailureReason,
    pub detail: String,
}

impl CheckFailure {
    pub fn new(reason: FailureReason, detail: impl Into<String>) -> Self {
        CheckFailure {
            reason,
            detail: detail.into(),
        }
    }

    /// Classifies an I/O error from connecting or talking to a backend.
    pub fn from_io(error: &std::io::Error) -> Self {
        use std::io::ErrorKind;
        let reason = match error.kind() {
            ErrorKind::ConnectionRefused => FailureReason::Refused,
            ErrorKind::TimedOut => FailureReason::Timeout,
            _ => FailureReason::Io,
        };
        CheckFailure::new(reason, error.to_string())
    }

    /// An unexpected reply, quoting its first bytes (escaped) so the operator can recognise
    /// what is really listening on the port.
    pub fn unexpected(what: &str, bytes: &[u8]) -> Self {
        CheckFailure::new(
            FailureReason::UnexpectedReply,
            format!("{what}; first bytes: \"{}\"", escaped(bytes)),
        )
    }
}

/// Up to 32 bytes of a peer's answer, printable (`\r\n`, `\x16`), for failure details.
pub(super) fn escaped(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(32)
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect()
}

impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

impl std::error::Error for CheckFailure {}
