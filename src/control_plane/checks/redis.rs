//! `protocol: redis`: asks the server for its `ROLE`, and for `INFO replication` in the same
//! round trip (the one number `ROLE` lacks: how long ago a replica's master last talked).
//!
//! Cost to the server: one persistent connection per backend per rolegate instance (named
//! `rolegate` in `CLIENT LIST`), and per check one pipelined `ROLE` + `INFO replication` — two
//! O(1) commands, one round trip. The connection authenticates once, with `AUTH password`
//! (`requirepass`, the `default` user) or `AUTH user password` (an ACL user; it needs
//! `+role +info`, and `+client` for the connection name).
//!
//! `INFO replication` replaces `ROLE` only when `ROLE` is answered with an unknown-command
//! error (renamed or disabled with `rename-command`); a timeout or any other failure of `ROLE`
//! fails the check. A Redis Sentinel answers `ROLE` with `sentinel`: that is reported as the
//! wrong protocol, since a sentinel holds no data. How replies become [`Facts`], and why a
//! replica's lag is `master_last_io_seconds_ago`, is in [`parse::redis`](super::parse::redis).
//!
//! TLS (`check.tls`): Redis serves TLS on its own port (`tls-port`), from the first byte, so the
//! probe runs the handshake itself (`health::tls`) and hands the encrypted stream to redis-rs;
//! no redis-rs TLS feature is involved, and all engines share one verifier and one set of
//! messages. The backend address must then be the TLS port. A plain Redis port never answers a
//! ClientHello (it waits for a newline): the probe notices, asks the port a plain `PING`, and
//! says that it speaks plain Redis rather than timing out without a reason.

use std::net::SocketAddr;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ErrorKind, ProtocolVersion, RedisConnectionInfo, RedisError, Value,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{timeout_at, Instant};
use tracing::debug;

use super::net::{self, Driver, Greeting};
use super::parse::redis::{self as parse, InfoReplication, ReplyRole};
use super::tls::TlsClient;
use super::{CheckFailure, Facts, FailureReason};
use crate::config::CheckConfig;

/// `CLIENT SETNAME` of the probe's connections.
pub const CLIENT_NAME: &str = "rolegate";

/// One backend's Redis check and its persistent connection.
pub struct RedisProbe {
    /// Login settings. Its `Debug` would print the password: this struct is never printed.
    login: RedisConnectionInfo,
    /// `None`: plain TCP (`tls: disable`).
    tls: Option<TlsClient>,
    session: Option<Session>,
}

struct Session {
    addr: SocketAddr,
    connection: MultiplexedConnection,
    /// `CLIENT ID`, when the user may ask for it.
    client_id: Option<i64>,
    _driver: Driver,
}

// === impl RedisProbe ===

impl RedisProbe {
    pub fn new(check: &CheckConfig) -> Self {
        Self::for_host(check, None)
    }

    /// A probe whose TLS verifies `host` (the backend's DNS name) rather than the address's IP.
    pub fn for_host(check: &CheckConfig, host: Option<&str>) -> Self {
        RedisProbe {
            tls: TlsClient::new(&check.tls, host),
            login: RedisConnectionInfo {
                db: 0,
                username: check.user.clone(),
                password: check.password.as_ref().map(|p| p.expose().to_string()),
                protocol: ProtocolVersion::RESP2,
            },
            session: None,
        }
    }

    /// Runs one check against `addr`, opening the connection first if needed (or if it was
    /// opened to another address). The connection is kept only when the check succeeds.
    ///
    /// # Errors
    /// A [`CheckFailure`] an operator can act on; see [`classify`] and
    /// [`parse::error_reply_failure`].
    pub async fn check(
        &mut self,
        addr: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<Facts, CheckFailure> {
        let deadline = Instant::now() + connect_timeout;
        let mut session = match self.session.take() {
            Some(session) if session.addr == addr => session,
            _ => self.open(addr, connect_timeout, deadline).await?,
        };
        let mut pipeline = redis::pipe();
        pipeline.cmd("ROLE").cmd("INFO").arg("replication");
        let replies = session
            .connection
            .send_packed_commands(&pipeline, 0, 2)
            .await
            .map_err(|e| classify(&e, self.user()).0)?;
        let facts = self.interpret(&replies)?;
        self.session = Some(session);
        Ok(facts)
    }

    /// Drops the connection; the next check opens a new one.
    pub fn reset(&mut self) {
        self.session = None;
    }

    /// `CLIENT ID` of the open connection, for tests that prove the connection is reused.
    #[doc(hidden)]
    pub fn session_id(&self) -> Option<u64> {
        self.session
            .as_ref()
            .and_then(|s| s.client_id)
            .and_then(|id| u64::try_from(id).ok())
    }

    fn user(&self) -> Option<&str> {
        self.login.username.as_deref()
    }

    /// Turns the `[ROLE, INFO replication]` replies into facts.
    fn interpret(&self, replies: &[Value]) -> Result<Facts, CheckFailure> {
        let [role_reply, info_reply] = replies else {
            return Err(CheckFailure::new(
                FailureReason::UnexpectedReply,
                format!("expected 2 replies to ROLE + INFO, got {}", replies.len()),
            ));
        };
        // INFO is optional (an ACL user may lack +info); only its text is used.
        let info: Option<InfoReplication> = parse::text(info_reply).map(|t| parse::parse_info(&t));
        let role: ReplyRole = match parse::server_error(role_reply) {
            None => parse::parse_role(role_reply)?,
            Some((code, message)) if parse::is_unknown_command(code, message) => {
                match (&info, parse::server_error(info_reply)) {
                    (Some(info), _) => parse::role_from_info(info)?,
                    (None, Some((code, message))) => {
                        return Err(parse::error_reply_failure(
                            "ROLE is unknown and INFO replication",
                            code,
                            message,
                            self.user(),
                        ))
                    }
                    (None, None) => {
                        return Err(CheckFailure::new(
                            FailureReason::UnexpectedReply,
                            format!(
                                "ROLE is unknown and INFO replication answered {}",
                                parse::describe(info_reply)
                            ),
                        ))
                    }
                }
            }
            Some((code, message)) => {
                return Err(parse::error_reply_failure(
                    "ROLE",
                    code,
                    message,
                    self.user(),
                ))
            }
        };
        parse::facts(&role, info.as_ref())
    }

    async fn open(
        &self,
        addr: SocketAddr,
        budget: Duration,
        deadline: Instant,
    ) -> Result<Session, CheckFailure> {
        let stream = net::connect(addr, deadline).await?;
        let (mut connection, driver) = match &self.tls {
            None => self.login(stream, addr, budget, deadline, true).await?,
            Some(tls) => {
                let stream = tls.handshake(stream, addr, deadline, &greeting()).await?;
                // A sniff talks plain text, which a TLS port cannot answer sensibly.
                self.login(stream, addr, budget, deadline, false).await?
            }
        };
        let client_id = identify(&mut connection).await;
        debug!(message = "Check session opened.", backend = %addr, client_id = ?client_id, tls = self.tls.is_some());
        Ok(Session {
            addr,
            connection,
            client_id,
            _driver: driver,
        })
    }
}

impl RedisProbe {
    /// Authenticates over `stream` (plain or TLS). `may_sniff`: whether a failure may be
    /// explained by a plain-text look at the port.
    async fn login<C>(
        &self,
        stream: C,
        addr: SocketAddr,
        budget: Duration,
        deadline: Instant,
        may_sniff: bool,
    ) -> Result<(MultiplexedConnection, Driver), CheckFailure>
    where
        C: Unpin + AsyncRead + AsyncWrite + Send + 'static,
    {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(budget)
            .set_response_timeout(budget);
        // Login (AUTH) happens inside; it is bounded by the deadline here, not by the crate.
        let login = MultiplexedConnection::new_with_config(&self.login, stream, config);
        match timeout_at(deadline, login).await {
            Ok(Ok((connection, driver))) => Ok((connection, Driver::spawn(driver))),
            Ok(Err(error)) => {
                let (failure, sniff) = classify(&error, self.user());
                if !(sniff && may_sniff) {
                    return Err(failure);
                }
                Err(net::explain(failure, addr, &greeting(), deadline).await)
            }
            Err(_) => Err(CheckFailure::new(
                FailureReason::Timeout,
                format!("{addr} accepted the connection but did not answer the login"),
            )),
        }
    }
}

/// Names the connection and learns its id; both are conveniences, so errors are ignored (the
/// check's own commands will report a broken connection).
async fn identify(connection: &mut MultiplexedConnection) -> Option<i64> {
    let mut pipeline = redis::pipe();
    pipeline
        .cmd("CLIENT")
        .arg("SETNAME")
        .arg(CLIENT_NAME)
        .cmd("CLIENT")
        .arg("ID");
    match connection
        .send_packed_commands(&pipeline, 0, 2)
        .await
        .ok()?
        .get(1)?
    {
        Value::Int(id) => Some(*id),
        _ => None,
    }
}

/// Maps a redis-rs error to a failure; the flag says whether the port is worth sniffing (the
/// login did not get a Redis-shaped answer). Error *replies* to the check's commands are not
/// errors here (they arrive as values) and are mapped by [`parse::error_reply_failure`].
fn classify(error: &RedisError, user: Option<&str>) -> (CheckFailure, bool) {
    match error.kind() {
        ErrorKind::AuthenticationFailed => {
            let detail = match user {
                Some(user) => format!(
                    "the server rejected AUTH for user \"{user}\" (wrong password, or the ACL \
                     user does not exist or is off)"
                ),
                None => "the server rejected AUTH with the check password (requirepass); if \
                         the server needs an ACL user, set the check user"
                    .to_string(),
            };
            (CheckFailure::new(FailureReason::AuthFailed, detail), false)
        }
        ErrorKind::IoError if error.is_connection_refusal() => (
            CheckFailure::new(FailureReason::Refused, error.to_string()),
            false,
        ),
        ErrorKind::IoError if error.is_timeout() => (
            CheckFailure::new(FailureReason::Timeout, "the server did not reply in time"),
            false,
        ),
        ErrorKind::IoError => (
            CheckFailure::new(FailureReason::Io, error.to_string()),
            true,
        ),
        // The parser's own text is a multi-line dump; the sniff shows the bytes instead.
        ErrorKind::ParseError => (
            CheckFailure::new(FailureReason::UnexpectedReply, "the reply is not RESP"),
            true,
        ),
        _ => (
            CheckFailure::new(
                FailureReason::UnexpectedReply,
                first_line(&error.to_string()),
            ),
            true,
        ),
    }
}

fn first_line(text: &str) -> String {
    super::parse::shorten(text.lines().next().unwrap_or_default(), 160)
}

fn greeting() -> Greeting {
    Greeting {
        protocol: "Redis",
        // RESP, not the inline form: every Redis-speaking server (and proxy) parses it.
        hello: b"*1\r\n$4\r\nPING\r\n".to_vec(),
        looks_native: looks_like_redis,
    }
}

/// A RESP reply starts with a type byte (RESP2 `+ - : $ *`, RESP3 `_ , # ! = ( % ~ > |`).
fn looks_like_redis(bytes: &[u8]) -> bool {
    bytes
        .first()
        .is_some_and(|b| b"+-:$*_,#!=(%~>|".contains(b))
}

#[cfg(test)]
mod tests;
