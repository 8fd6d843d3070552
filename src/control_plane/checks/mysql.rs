//! `protocol: mysql` (MySQL, MariaDB, Percona): asks the server whether it refuses writes
//! (`read_only`, `super_read_only`) and, when it does, how its replication threads are doing.
//!
//! Cost to the server: one persistent connection per backend per rolegate instance, and per
//! check one `SELECT @@global.read_only[, @@global.super_read_only]` (no table, no lock), plus
//! on a read-only node one `SHOW REPLICA STATUS` — two round trips for a replica, one for a
//! primary. Nothing is written. The monitor user needs no privilege for the first query, and
//! `REPLICATION CLIENT` (MySQL) / `SLAVE MONITOR` (MariaDB ≥ 10.5.9) for the second.
//!
//! Two things differ between servers and are learned once per connection, on first use:
//! whether `super_read_only` exists (MariaDB answers error 1193, "Unknown system variable";
//! the probe then asks for `read_only` alone), and which of `SHOW REPLICA STATUS` (MySQL ≥
//! 8.0.22, MariaDB ≥ 10.5.1) or `SHOW SLAVE STATUS` (older servers) the server accepts.
//!
//! The role rule (read_only is the contract) and the derivation of lag and link state are
//! documented in [`parse::mysql`](super::parse::mysql).
//!
//! The connection is a bare `mysql_async::Conn` (no pool): over TCP to the given address only
//! (`prefer_socket` off), with the settings mysql_async would otherwise query at connect given
//! up front, so that logging in costs no extra query. Login methods are whatever the account
//! uses among those mysql_async speaks: `mysql_native_password` and `caching_sha2_password`
//! (whose full authentication, without TLS, fetches the server's RSA public key to encrypt the
//! password).
//!
//! TLS (`check.tls`): MySQL switches to TLS in the middle of its handshake, so mysql_async runs
//! it (its `rustls-tls` build), given the probe's roots and name: `require` accepts any
//! certificate, `verify-full` checks chain and name (the address's IP, the backend's DNS name,
//! or `tls_server_name`). `verify-ca` is refused by the config loader: mysql_async cannot skip
//! only the name check with the rustls in use. A server without TLS (no SSL capability in its
//! greeting) fails the check with reason `tls`. With TLS, `caching_sha2_password` sends the
//! password inside the tunnel — to whoever holds the certificate, so `require` exposes it to a
//! man in the middle.

use std::net::SocketAddr;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, DriverError, Error as MyError, OptsBuilder, Row, SslOpts, Value};
use tokio::time::{timeout_at, Instant};
use tracing::debug;

use super::net::{self, Greeting};
use super::parse::mysql::{self as parse, Channel};
use super::tls::{self, TlsClient};
use super::{CheckFailure, Facts, FailureReason, ObservedRole};
use crate::config::{CheckConfig, Secret, TlsMode};

/// Client-side packet limit; the check's replies are a few hundred bytes.
const MAX_ALLOWED_PACKET: usize = 4 * 1024 * 1024;
/// The server's default `wait_timeout`; the probe talks far more often than that.
const WAIT_TIMEOUT_SECONDS: usize = 28_800;

/// One backend's MySQL check and its persistent connection.
pub struct MysqlProbe {
    user: Option<String>,
    password: Option<Secret>,
    /// `None`: plain TCP (`tls: disable`).
    tls: Option<TlsClient>,
    session: Option<Session>,
}

struct Session {
    addr: SocketAddr,
    conn: Connection,
    /// Whether `@@global.super_read_only` exists; `None` until the first check asks.
    has_super_read_only: Option<bool>,
    /// The replication status statement this server accepts, once known.
    status_query: Option<&'static str>,
}

/// A `Conn` that, when dropped, says goodbye (`COM_QUIT`) within [`net::GOODBYE`] instead of
/// mysql_async's own unbounded clean-up, which would wait for a hung server forever.
struct Connection(Option<Conn>);

// === impl MysqlProbe ===

impl MysqlProbe {
    pub fn new(check: &CheckConfig) -> Self {
        Self::for_host(check, None)
    }

    /// A probe whose TLS verifies `host` (the backend's DNS name) rather than the address's IP.
    pub fn for_host(check: &CheckConfig, host: Option<&str>) -> Self {
        let tls = TlsClient::new(&check.tls, host);
        if tls.is_some() {
            tls::install_provider();
        }
        MysqlProbe {
            user: check.user.clone(),
            password: check.password.clone(),
            tls,
            session: None,
        }
    }

    /// `Ssl_cipher` of the open connection as the server reports it (empty: not encrypted),
    /// for tests that prove `check.tls` is in force.
    #[doc(hidden)]
    pub async fn session_tls_cipher(&mut self) -> Option<String> {
        let conn = self.session.as_mut()?.conn.0.as_mut()?;
        let row: Option<(String, String)> = conn
            .query_first("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            .await
            .ok()?;
        row.map(|(_, cipher)| cipher)
    }

    /// Runs one check against `addr`, opening the connection first if needed (or if it was
    /// opened to another address). The connection is kept only when the check succeeds.
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
        let role = session.role().await?;
        let replica = match role {
            ObservedRole::Primary => None,
            ObservedRole::Replica => Some(parse::replica_facts(&session.channels().await?)?),
        };
        self.session = Some(session);
        Ok(parse::facts(role, replica))
    }

    /// Drops the connection; the next check opens a new one.
    pub fn reset(&mut self) {
        self.session = None;
    }

    /// `CONNECTION_ID()` of the open connection, for tests that prove the connection is reused.
    #[doc(hidden)]
    pub fn session_id(&self) -> Option<u64> {
        let conn = self.session.as_ref()?.conn.0.as_ref()?;
        Some(u64::from(conn.id()))
    }

    async fn open(&self, addr: SocketAddr, deadline: Instant) -> Result<Session, CheckFailure> {
        let ssl = self.tls.as_ref().map(ssl_opts).transpose()?;
        let opts = OptsBuilder::default()
            .ip_or_hostname(addr.ip().to_string())
            .resolved_ips(Some(vec![addr.ip()]))
            .tcp_port(addr.port())
            .prefer_socket(false)
            .user(self.user.clone())
            .pass(self.password.as_ref().map(|p| p.expose().to_string()))
            .max_allowed_packet(Some(MAX_ALLOWED_PACKET))
            .wait_timeout(Some(WAIT_TIMEOUT_SECONDS))
            .ssl_opts(ssl);
        let conn = match timeout_at(deadline, Conn::new(opts)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(error)) => {
                if let Some(failure) = self.tls_failure(&error, addr) {
                    return Err(failure);
                }
                let (mut failure, sniff) = classify(&error, true);
                failure.detail = format!("{addr}: {}", failure.detail);
                if !sniff {
                    return Err(failure);
                }
                return Err(net::explain(failure, addr, &greeting(), deadline).await);
            }
            Err(_) => {
                return Err(CheckFailure::new(
                    FailureReason::Timeout,
                    format!("connecting and logging in to {addr} did not finish in time"),
                ))
            }
        };
        debug!(message = "Check session opened.", backend = %addr, connection_id = conn.id(), tls = self.tls.is_some());
        Ok(Session {
            addr,
            conn: Connection(Some(conn)),
            has_super_read_only: None,
            status_query: None,
        })
    }

    /// The TLS part of a failed login, in words (see `health::tls`): verification errors, and
    /// a server that offers no TLS.
    fn tls_failure(&self, error: &MyError, addr: SocketAddr) -> Option<CheckFailure> {
        let client = self.tls.as_ref()?;
        if let Some(cause) = tls::rustls_error(error) {
            return Some(client.explain(cause, addr).failure);
        }
        match error {
            MyError::Driver(DriverError::NoClientSslFlagFromServer) => Some(CheckFailure::new(
                FailureReason::Tls,
                format!(
                    "{addr} does not offer TLS (its greeting lacks the SSL capability: no ssl_cert/ssl_key configured); enable TLS on the server, or set check.tls: disable"
                ),
            )),
            _ => None,
        }
    }
}

/// mysql_async's TLS options for the probe's client: the same roots and name as the other
/// engines use, and the mode's leniency.
fn ssl_opts(client: &TlsClient) -> Result<SslOpts, CheckFailure> {
    let mut ssl = SslOpts::default();
    if client.mode() == TlsMode::Require {
        // mysql_async builds a chain verifier even when told to accept any certificate, and
        // that needs some root: its built-in list serves, and is never consulted.
        ssl = ssl.with_danger_accept_invalid_certs(true);
    } else {
        let roots = client.roots_der()?;
        ssl = ssl
            .with_disable_built_in_roots(true)
            .with_root_certs(
                // DER buffers (mysql_async takes PEM or DER; the type is not exported by name).
                roots.iter().map(|cert| cert.to_vec().into()).collect(),
            )
            // Refused by the config loader for mysql (see the module docs); kept so that the
            // mode still means "at least the chain" should it get here.
            .with_danger_skip_domain_validation(client.mode() == TlsMode::VerifyCa);
    }
    // Connect to the IP, verify the name (mysql_async would otherwise verify the IP it was given).
    Ok(ssl.with_danger_tls_hostname_override(client.name().map(str::to_string)))
}

// === impl Session ===

impl Session {
    fn conn(&mut self) -> Result<&mut Conn, CheckFailure> {
        self.conn
            .0
            .as_mut()
            .ok_or_else(|| CheckFailure::new(FailureReason::Io, "the connection is closed"))
    }

    /// Reads the `read_only` flags, learning on first use whether `super_read_only` exists.
    async fn role(&mut self) -> Result<ObservedRole, CheckFailure> {
        if self.has_super_read_only != Some(false) {
            match self.conn()?.query::<Row, _>(parse::READ_ONLY_QUERY).await {
                Ok(rows) => {
                    self.has_super_read_only = Some(true);
                    let row = first_row(&rows, "read_only")?;
                    return parse::role(text(row, 0).as_deref(), text(row, 1).as_deref());
                }
                Err(MyError::Server(e)) if e.code == ER_UNKNOWN_SYSTEM_VARIABLE => {
                    self.has_super_read_only = Some(false);
                }
                Err(error) => return Err(classify(&error, false).0),
            }
        }
        let rows = self
            .conn()?
            .query::<Row, _>(parse::READ_ONLY_ONLY_QUERY)
            .await
            .map_err(|e| classify(&e, false).0)?;
        let row = first_row(&rows, "read_only")?;
        parse::role(text(row, 0).as_deref(), None)
    }

    /// Reads the replication channels, learning on first use which statement the server knows.
    async fn channels(&mut self) -> Result<Vec<Channel>, CheckFailure> {
        let known = self.status_query;
        let both = [
            known.unwrap_or(parse::REPLICA_STATUS_QUERY),
            parse::SLAVE_STATUS_QUERY,
        ];
        let candidates = if known.is_some() {
            &both[..1]
        } else {
            &both[..]
        };
        let mut last = None;
        for &query in candidates {
            match self.conn()?.query::<Row, _>(query).await {
                Ok(rows) => {
                    self.status_query = Some(query);
                    return Ok(rows.iter().map(channel).collect());
                }
                Err(MyError::Server(e)) if e.code == ER_PARSE_ERROR => {
                    last = Some(MyError::Server(e));
                }
                Err(error) => return Err(classify(&error, false).0),
            }
        }
        Err(match last {
            Some(error) => classify(&error, false).0,
            None => CheckFailure::new(
                FailureReason::QueryFailed,
                "no replication status statement",
            ),
        })
    }
}

// === impl Connection ===

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            net::close_in_background(conn.disconnect());
        }
    }
}

/// `ER_UNKNOWN_SYSTEM_VARIABLE`: MariaDB has no `super_read_only`.
const ER_UNKNOWN_SYSTEM_VARIABLE: u16 = 1193;
/// `ER_PARSE_ERROR`: the server does not know `SHOW REPLICA STATUS`.
const ER_PARSE_ERROR: u16 = 1064;

fn first_row<'r>(rows: &'r [Row], what: &str) -> Result<&'r Row, CheckFailure> {
    rows.first().ok_or_else(|| {
        CheckFailure::new(
            FailureReason::UnexpectedReply,
            format!("the {what} query returned no row"),
        )
    })
}

/// A column as text, as the text protocol sends it (`None` for NULL or a missing column).
fn text(row: &Row, index: usize) -> Option<String> {
    match row.as_ref(index)? {
        Value::NULL => None,
        Value::Bytes(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) => Some(u.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Double(d) => Some(d.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn channel(row: &Row) -> Channel {
    let columns: Vec<(String, Option<String>)> = row
        .columns_ref()
        .iter()
        .enumerate()
        .map(|(i, column)| (column.name_str().into_owned(), text(row, i)))
        .collect();
    Channel::from_columns(columns.iter().map(|(n, v)| (n.as_str(), v.as_deref())))
}

/// Maps a mysql_async error to a failure; the flag says whether the port is worth sniffing
/// (the server accepted TCP but did not talk like MySQL). `login` is true while connecting.
///
/// - 1045/1044/1698 (access denied, no database access, no password), 1130 (host not
///   allowed), 1251 (auth method the client lacks), or a client-side auth-plugin refusal:
///   `AuthFailed`.
/// - 1227/1142/1143/1370 (missing privilege): `QueryFailed`, naming the privilege to grant.
/// - 1053/1927 (shutdown, connection killed): `Io`. Other server errors: `QueryFailed`
///   (at login: "login refused", e.g. 1040 too many connections, 1129 host blocked).
/// - I/O errors: `Refused`/`Timeout`/`Io`; after the TCP handshake they are sniffed.
/// - Malformed or out-of-order packets: `UnexpectedReply`, sniffed.
fn classify(error: &MyError, login: bool) -> (CheckFailure, bool) {
    match error {
        MyError::Server(e) => {
            let text = format!("ERROR {} ({}): {}", e.code, e.state, e.message);
            let failure = match e.code {
                1044 | 1045 | 1130 | 1251 | 1698 => {
                    CheckFailure::new(FailureReason::AuthFailed, text)
                }
                1142 | 1143 | 1227 | 1370 => CheckFailure::new(
                    FailureReason::QueryFailed,
                    format!(
                        "missing privilege: {text}; GRANT REPLICATION CLIENT (MySQL) or SLAVE \
                         MONITOR (MariaDB 10.5.9 and later) ON *.* TO the check user"
                    ),
                ),
                1053 | 1927 => CheckFailure::new(FailureReason::Io, text),
                _ if login => {
                    CheckFailure::new(FailureReason::QueryFailed, format!("login refused: {text}"))
                }
                _ => CheckFailure::new(FailureReason::QueryFailed, text),
            };
            (failure, false)
        }
        MyError::Io(_) => match net::io_source(error) {
            Some(io) => {
                let reason = CheckFailure::from_io(io).reason;
                let sniff = login && reason == FailureReason::Io;
                let during = if login {
                    "connecting or logging in"
                } else {
                    "querying"
                };
                (CheckFailure::new(reason, format!("{during}: {io}")), sniff)
            }
            None => (
                CheckFailure::new(FailureReason::Tls, error.to_string()),
                false,
            ),
        },
        MyError::Driver(
            DriverError::UnknownAuthPlugin { .. }
            | DriverError::CleartextPluginDisabled
            | DriverError::MysqlOldPasswordDisabled,
        ) => (
            CheckFailure::new(FailureReason::AuthFailed, error.to_string()),
            false,
        ),
        MyError::Driver(DriverError::ConnectionClosed) => (
            CheckFailure::new(FailureReason::Io, "the server closed the connection"),
            login,
        ),
        MyError::Driver(_) | MyError::Other(_) => (
            CheckFailure::new(FailureReason::UnexpectedReply, error.to_string()),
            login,
        ),
        MyError::Url(_) => (
            CheckFailure::new(FailureReason::QueryFailed, error.to_string()),
            false,
        ),
    }
}

fn greeting() -> Greeting {
    Greeting {
        protocol: "MySQL",
        hello: Vec::new(),
        looks_native: looks_like_mysql,
    }
}

/// A MySQL server speaks first: a packet (3-byte length, sequence 0) holding a protocol-10
/// handshake or an error packet (`0xff`).
fn looks_like_mysql(bytes: &[u8]) -> bool {
    match bytes {
        [l0, l1, l2, 0, kind, ..] => {
            let len = u32::from_le_bytes([*l0, *l1, *l2, 0]);
            (1..4096).contains(&len) && (*kind == 10 || *kind == 0xff)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
