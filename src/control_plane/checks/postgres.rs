//! `protocol: postgres`: asks the server whether it is in recovery, and what a replica needs to
//! be judged (replay position and delay, WAL receiver state, timeline).
//!
//! Cost to the database: one persistent session (one backend process, `application_name =
//! rolegate`) per backend per rolegate instance, and one simple query per check — a single
//! round trip that reads a few in-memory counters ([`STATUS_QUERY`]). No table is touched and
//! nothing is written. The session is opened on the first check, reused until a check fails or
//! times out, and then opened again on the next check.
//!
//! The user logs in like any client (SCRAM-SHA-256 or md5, whatever `pg_hba.conf` asks), into
//! `check.database` (default `postgres`). It needs no privilege on a primary; on a replica it
//! needs `pg_monitor` (precisely `pg_read_all_stats`) to read the WAL receiver's status, and a
//! check without it fails saying so.
//!
//! How the answer becomes [`Facts`] is documented in [`parse::postgres`](super::parse::postgres).
//!
//! TLS (`check.tls`): the session is opened by [`connect_raw`](tokio_postgres::Config::connect_raw)
//! on our own TCP stream, with `sslmode=require` and the probe's rustls client as the
//! `TlsConnect` (`postgres/tls.rs`); which certificates are accepted is the mode's verifier's
//! business (`health::tls`), so `verify-full` behaves like libpq's. A server with `ssl = off`
//! answers the SSLRequest with `N`: that is a `tls` failure saying so, never a silent fallback
//! to plain text.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::TlsConnect;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};
use tracing::debug;

use self::tls::PgTls;
use super::net::{self, Driver, Greeting};
use super::parse::postgres::{self as parse, StatusRow, STATUS_QUERY};
use super::tls::{self as check_tls, TlsClient};
use super::{CheckFailure, Facts, FailureReason};
use crate::config::CheckConfig;

mod tls;

/// `application_name` of the probe's sessions, so that operators can find them in
/// `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "rolegate";

/// One backend's PostgreSQL check and its persistent session.
pub struct PostgresProbe {
    /// Login settings, built once from the check config (the password stays inside; the
    /// `Debug` of `tokio_postgres::Config` redacts it, but it is never logged anyway). Boxed:
    /// it is large, and `Probe` is an enum whose other variants are small.
    config: Box<tokio_postgres::Config>,
    /// User name for sniffing and messages (never the password).
    user: String,
    /// `None`: plain TCP (`tls: disable`).
    tls: Option<TlsClient>,
    session: Option<Session>,
}

/// An open, authenticated session.
struct Session {
    addr: SocketAddr,
    client: Client,
    /// `pg_backend_pid()` as last reported; identifies the session.
    backend_pid: Option<u32>,
    /// Runs the connection until the session is dropped, then closes it politely.
    _driver: Driver,
}

// === impl PostgresProbe ===

impl PostgresProbe {
    pub fn new(check: &CheckConfig) -> Self {
        Self::for_host(check, None)
    }

    /// A probe whose TLS verifies `host` (the backend's DNS name) rather than the address's IP.
    pub fn for_host(check: &CheckConfig, host: Option<&str>) -> Self {
        let tls = TlsClient::new(&check.tls, host);
        let user = check.user.clone().unwrap_or_else(|| "postgres".to_string());
        let mut config = tokio_postgres::Config::new();
        config
            .user(&user)
            .dbname(check.database.as_deref().unwrap_or("postgres"))
            .application_name(APPLICATION_NAME)
            // Never `Prefer`: a check that asked for TLS must not quietly run in plain text.
            .ssl_mode(if tls.is_some() {
                SslMode::Require
            } else {
                SslMode::Disable
            });
        if let Some(password) = &check.password {
            config.password(password.expose());
        }
        PostgresProbe {
            config: Box::new(config),
            user,
            tls,
            session: None,
        }
    }

    /// Runs one check against `addr`, opening the session first if needed (or if it was opened
    /// to another address). The session is kept only when the check succeeds.
    ///
    /// # Errors
    /// A [`CheckFailure`] an operator can act on; see [`classify`] for the mapping.
    pub async fn check(
        &mut self,
        addr: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<Facts, CheckFailure> {
        let deadline = Instant::now() + connect_timeout;
        let mut session = match self.session.take() {
            Some(session) if session.addr == addr => session,
            _ => self.open(addr, deadline).await?,
        };
        let messages = session
            .client
            .simple_query(STATUS_QUERY)
            .await
            .map_err(|e| classify(&e, Phase::Query).0)?;
        let row = messages.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        });
        let Some(row) = row else {
            return Err(CheckFailure::new(
                FailureReason::UnexpectedReply,
                "the status query returned no row",
            ));
        };
        let status = parse::interpret(&StatusRow::from_columns(|i| row.try_get(i).ok().flatten()))?;
        session.backend_pid = status.backend_pid;
        self.session = Some(session);
        Ok(status.facts)
    }

    /// Drops the session; the next check opens a new one.
    pub fn reset(&mut self) {
        self.session = None;
    }

    /// The server process id of the open session (`pg_backend_pid()`), for tests that prove
    /// the session is reused.
    #[doc(hidden)]
    pub fn session_id(&self) -> Option<u64> {
        self.session
            .as_ref()
            .and_then(|s| s.backend_pid)
            .map(u64::from)
    }

    /// Whether the open session is encrypted, as the server sees it (`pg_stat_ssl`), for tests
    /// that prove `check.tls` is in force.
    #[doc(hidden)]
    pub async fn session_ssl(&self) -> Option<bool> {
        let session = self.session.as_ref()?;
        let messages = session
            .client
            .simple_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .await
            .ok()?;
        messages.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(|v| v == "t"),
            _ => None,
        })
    }

    async fn open(&self, addr: SocketAddr, deadline: Instant) -> Result<Session, CheckFailure> {
        let stream = net::connect(addr, deadline).await?;
        let (client, driver) = match &self.tls {
            None => self.login(stream, NoTls, addr, deadline).await?,
            Some(tls) => {
                let (connector, name) = tls.connector(addr)?;
                self.login(stream, PgTls { connector, name }, addr, deadline)
                    .await?
            }
        };
        debug!(message = "Check session opened.", backend = %addr, user = %self.user, tls = self.tls.is_some());
        Ok(Session {
            addr,
            client,
            backend_pid: None,
            _driver: driver,
        })
    }

    /// Logs in over `stream`, negotiating TLS first when `tls` is a real connector.
    async fn login<T>(
        &self,
        stream: TcpStream,
        tls: T,
        addr: SocketAddr,
        deadline: Instant,
    ) -> Result<(Client, Driver), CheckFailure>
    where
        T: TlsConnect<TcpStream>,
        T::Stream: Send + 'static,
    {
        match self.config.connect_raw(stream, tls).await {
            Ok((client, connection)) => Ok((client, Driver::spawn(connection))),
            Err(error) => {
                if let Some((failure, refused)) = self.tls_failure(&error, addr) {
                    return Err(if refused {
                        // Only a PostgreSQL answers an SSLRequest with `N`; anything else
                        // that did is named by its first bytes.
                        net::explain(failure, addr, &self.greeting(), deadline).await
                    } else {
                        failure
                    });
                }
                let (failure, sniff) = classify(&error, Phase::Connect);
                if !sniff {
                    return Err(failure);
                }
                Err(net::explain(failure, addr, &self.greeting(), deadline).await)
            }
        }
    }

    /// The TLS part of a failed login, in words (see `health::tls`): verification errors, and
    /// (flagged `true`) a server that refused TLS.
    fn tls_failure(
        &self,
        error: &tokio_postgres::Error,
        addr: SocketAddr,
    ) -> Option<(CheckFailure, bool)> {
        let tls = self.tls.as_ref()?;
        if let Some(cause) = check_tls::rustls_error(error) {
            return Some((tls.explain(cause, addr).failure, false));
        }
        // tokio-postgres' own words (the error's cause) when the server answers the SSLRequest
        // with `N`.
        let refused =
            std::iter::successors(Some(error as &(dyn std::error::Error + 'static)), |e| {
                e.source()
            })
            .any(|e| e.to_string() == "server does not support TLS");
        if refused {
            let failure = CheckFailure::new(
                FailureReason::Tls,
                format!(
                    "{addr} refused TLS (it answered the SSLRequest with N: ssl = off in its postgresql.conf); enable ssl on the server, or set check.tls: disable"
                ),
            );
            return Some((failure, true));
        }
        None
    }

    fn greeting(&self) -> Greeting {
        Greeting {
            protocol: "PostgreSQL",
            hello: startup_packet(&self.user),
            looks_native: looks_like_postgres,
        }
    }
}

/// Where an error happened: a login problem and a query problem read differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connect,
    Query,
}

/// Maps a tokio-postgres error to a failure; the flag says whether the port is worth sniffing
/// (the server accepted TCP but did not talk like PostgreSQL).
///
/// - SQLSTATE 28P01/28000 (wrong password, no `pg_hba.conf` entry, unknown role), or a
///   client-side authentication error (a method the client cannot do): `AuthFailed`.
/// - 42501 (insufficient privilege): `QueryFailed`, naming `pg_monitor`.
/// - class 08 (connection exception) and 57 (operator intervention: shutdown, terminated
///   session): `Io`. Any other server error: `QueryFailed` with SQLSTATE and message.
/// - I/O errors: `Refused`/`Timeout`/`Io`; while logging in they are sniffed.
/// - parse errors and unexpected messages: `UnexpectedReply`, sniffed.
fn classify(error: &tokio_postgres::Error, phase: Phase) -> (CheckFailure, bool) {
    if let Some(db) = error.as_db_error() {
        let code = db.code();
        let text = format!("{} {}: {}", db.severity(), code.code(), db.message());
        let failure = if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            CheckFailure::new(FailureReason::AuthFailed, text)
        } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
            CheckFailure::new(
                FailureReason::QueryFailed,
                format!("missing privilege: {text}; GRANT pg_monitor TO the check user"),
            )
        } else if code.code().starts_with("08") || code.code().starts_with("57") {
            CheckFailure::new(FailureReason::Io, text)
        } else if phase == Phase::Connect {
            CheckFailure::new(FailureReason::QueryFailed, format!("login refused: {text}"))
        } else {
            CheckFailure::new(FailureReason::QueryFailed, text)
        };
        return (failure, false);
    }
    if let Some(io) = net::io_source(error) {
        // The TCP connection is already up: an I/O error while logging in (EOF in the middle
        // of a frame, a reset) usually means the peer did not like what a PostgreSQL client
        // says, so it is worth a look at what it says itself.
        let failure = CheckFailure::from_io(io);
        return (
            CheckFailure::new(failure.reason, format!("{error}: {io}")),
            phase == Phase::Connect,
        );
    }
    if error.is_closed() {
        let failure = CheckFailure::new(FailureReason::Io, "the server closed the session");
        return (failure, phase == Phase::Connect);
    }
    // tokio-postgres exposes no error kind; its Display names it, which is stable API text.
    let shown = error.to_string();
    if shown.starts_with("authentication error") {
        return (CheckFailure::new(FailureReason::AuthFailed, shown), false);
    }
    if shown.starts_with("error performing TLS handshake") {
        return (CheckFailure::new(FailureReason::Tls, shown), false);
    }
    (
        CheckFailure::new(FailureReason::UnexpectedReply, shown),
        phase == Phase::Connect,
    )
}

/// A protocol 3.0 StartupMessage for `user` (database defaults to the user name; the answer
/// is all we want).
fn startup_packet(user: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(32 + user.len());
    body.extend_from_slice(&196_608u32.to_be_bytes()); // protocol 3.0
    body.extend_from_slice(b"user\0");
    body.extend_from_slice(user.as_bytes());
    body.extend_from_slice(b"\0\0");
    let len = u32::try_from(body.len() + 4).unwrap_or(u32::MAX);
    let mut packet = len.to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

/// A PostgreSQL server answers a startup packet with an authentication request (`R`) or an
/// error (`E`), followed by a sane length.
fn looks_like_postgres(bytes: &[u8]) -> bool {
    match bytes {
        [b'R' | b'E', l0, l1, l2, l3, ..] => {
            let len = u32::from_be_bytes([*l0, *l1, *l2, *l3]);
            (4..=65_536).contains(&len)
        }
        [b'R' | b'E', ..] => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
