//! Talking to one Sentinel: the quorum query on a kept connection, and the event subscription
//! on a connection of its own, each exchange bounded by `timeout`, each lost connection
//! re-opened with a back-off. RESP goes through redis-rs, as in the Redis check
//! (`checks/redis.rs`): the same crate already in the tree, no second parser.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ErrorKind, ProtocolVersion, RedisConnectionInfo, RedisError, Value,
};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::events::{self, Event};
use super::quorum::{Answer, MasterAddr};
use crate::config::{BackendAddress, SentinelConfig};
use crate::control_plane::authority::Backoff;

/// How often a quiet subscription is pinged: a Sentinel frozen or cut off sends no FIN, and
/// its events would be lost without anyone noticing.
const SUBSCRIPTION_PING: Duration = Duration::from_secs(5);

/// What the subscriptions tell the authority's loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// An event about the watched master, from Sentinel `from` (its index in the config).
    Event { from: usize, event: Event },
    /// Sentinel `from`'s subscription is (again) in place: events sent while it was not are
    /// lost, so the quorum is asked at once.
    Subscribed { from: usize },
}

/// How to reach one Sentinel.
#[derive(Debug, Clone)]
pub struct Target {
    pub index: usize,
    /// The address as configured, for messages.
    pub label: String,
    pub address: BackendAddress,
    login: LoginInfo,
    pub timeout: Duration,
}

/// `RedisConnectionInfo` holds the password in a public field and prints it in `Debug`: this
/// wrapper never prints it.
#[derive(Clone)]
struct LoginInfo(RedisConnectionInfo);

impl std::fmt::Debug for LoginInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginInfo")
            .field("user", &self.0.username)
            .finish_non_exhaustive()
    }
}

/// One `Target` per configured Sentinel, in config order.
pub fn targets(config: &SentinelConfig) -> Vec<Target> {
    let login = LoginInfo(RedisConnectionInfo {
        db: 0,
        username: config.user.clone(),
        password: config.password.as_ref().map(|p| p.expose().to_string()),
        protocol: ProtocolVersion::RESP2,
    });
    config
        .addresses
        .iter()
        .enumerate()
        .map(|(index, address)| Target {
            index,
            label: address.to_string(),
            address: address.clone(),
            login: login.clone(),
            timeout: config.timeout,
        })
        .collect()
}

/// The framework's back-off, plus the moment before which a querier does not retry (a query
/// arrives every interval, or sooner on events, and must not hammer a dead Sentinel).
#[derive(Debug)]
struct Pace {
    backoff: Backoff,
    not_before: Option<Instant>,
}

impl Pace {
    fn new() -> Self {
        Pace {
            backoff: Backoff::new(),
            not_before: None,
        }
    }

    fn failed(&mut self) -> Duration {
        let wait = self.backoff.next_delay();
        self.not_before = Some(Instant::now() + wait);
        wait
    }

    fn succeeded(&mut self) {
        self.backoff.reset();
        self.not_before = None;
    }

    fn waiting(&self) -> bool {
        self.not_before.is_some_and(|t| Instant::now() < t)
    }
}

/// Aborts a spawned connection driver when its connection is dropped.
struct Driver(JoinHandle<()>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The kept query connection to one Sentinel.
pub struct Querier {
    target: Target,
    connection: Option<(MultiplexedConnection, Driver)>,
    backoff: Pace,
    /// Why the last attempt failed, repeated while the back-off lasts.
    last_error: String,
}

impl Querier {
    pub fn new(target: Target) -> Self {
        Querier {
            target,
            connection: None,
            backoff: Pace::new(),
            last_error: String::new(),
        }
    }

    pub fn label(&self) -> &str {
        &self.target.label
    }

    /// `SENTINEL get-master-addr-by-name <master_name>`, within the target's timeout (connect
    /// and login included). Never panics: every failure is an [`Answer::Failed`] with why.
    pub async fn ask(&mut self, master_name: &str) -> Answer {
        let budget = self.target.timeout;
        let mut connection = match self.connection.take() {
            Some(c) => c,
            None if self.backoff.waiting() => {
                // The same text as the failure itself, so a verdict does not flap between two
                // wordings of one outage.
                return Answer::Failed(self.last_error.clone());
            }
            None => match open_query(&self.target).await {
                Ok(c) => c,
                Err(why) => return self.failed(why),
            },
        };
        let mut cmd = redis::cmd("SENTINEL");
        cmd.arg("get-master-addr-by-name").arg(master_name);
        match timeout(budget, cmd.query_async::<Value>(&mut connection.0)).await {
            Ok(Ok(value)) => {
                self.backoff.succeeded();
                self.connection = Some(connection);
                parse_master_reply(&value)
            }
            Ok(Err(error)) if is_error_reply(&error) => {
                // The connection is fine; the server said no (not a Sentinel, ACL, ...).
                self.backoff.succeeded();
                self.connection = Some(connection);
                Answer::Failed(describe(&error))
            }
            Ok(Err(error)) => self.failed(describe(&error)),
            Err(_) => self.failed(format!(
                "no answer within {}",
                humantime::format_duration(budget)
            )),
        }
    }

    fn failed(&mut self, why: String) -> Answer {
        let wait = self.backoff.failed();
        debug!(message = "Sentinel query failed.", sentinel = %self.target.label, reason = %why, retry_in = ?wait);
        self.last_error.clone_from(&why);
        Answer::Failed(why)
    }
}

/// Connects to the target within its timeout (the name, if any, resolved by the OS).
async fn connect(target: &Target, deadline: Instant) -> Result<TcpStream, String> {
    let connect = async {
        match &target.address {
            BackendAddress::Ip(a) => TcpStream::connect(*a).await,
            BackendAddress::Dns { host, port } => TcpStream::connect((host.as_str(), *port)).await,
        }
    };
    match tokio::time::timeout_at(deadline, connect).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(e)) => Err(format!("connect: {e}")),
        Err(_) => Err("connect: no answer to the TCP handshake in time".into()),
    }
}

async fn open_query(target: &Target) -> Result<(MultiplexedConnection, Driver), String> {
    let deadline = Instant::now() + target.timeout;
    let stream = connect(target, deadline).await?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(target.timeout)
        .set_response_timeout(target.timeout);
    let login = MultiplexedConnection::new_with_config(&target.login.0, stream, config);
    match tokio::time::timeout_at(deadline, login).await {
        Ok(Ok((connection, driver))) => Ok((connection, Driver(tokio::spawn(driver)))),
        Ok(Err(error)) => Err(login_error(&error, &target.login.0)),
        Err(_) => Err("accepted the connection but did not answer the login in time".into()),
    }
}

/// Keeps one subscription to `target` until `stop`: subscribes, forwards each event about
/// `master_name` into `out`, pings a quiet connection, re-subscribes after any loss with a
/// back-off. Every exchange is bounded by the target's timeout.
pub async fn watch(
    target: Target,
    master_name: String,
    out: mpsc::Sender<Signal>,
    stop: CancellationToken,
) {
    let mut backoff = Pace::new();
    let mut was_up = true;
    loop {
        let ended = tokio::select! {
            () = stop.cancelled() => return,
            ended = subscription(&target, &master_name, &out, &mut backoff, &mut was_up) => ended,
        };
        if out.is_closed() {
            return;
        }
        let wait = backoff.failed();
        if was_up {
            warn!(message = "Sentinel subscription lost; re-subscribing.", sentinel = %target.label, reason = %ended, retry_in = ?wait);
            was_up = false;
        } else {
            debug!(message = "Sentinel subscription still down.", sentinel = %target.label, reason = %ended, retry_in = ?wait);
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = sleep(wait) => {}
        }
    }
}

/// One subscription's life; returns why it ended.
async fn subscription(
    target: &Target,
    master_name: &str,
    out: &mpsc::Sender<Signal>,
    backoff: &mut Pace,
    was_up: &mut bool,
) -> String {
    let budget = target.timeout;
    let deadline = Instant::now() + budget;
    let stream = match connect(target, deadline).await {
        Ok(s) => s,
        Err(why) => return why,
    };
    let pubsub =
        match tokio::time::timeout_at(deadline, redis::aio::PubSub::new(&target.login.0, stream))
            .await
        {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return login_error(&e, &target.login.0),
            Err(_) => return "accepted the connection but did not answer the login in time".into(),
        };
    let (mut sink, mut messages) = pubsub.split();
    let subscribe = async {
        sink.subscribe(events::CHANNELS).await?;
        sink.psubscribe(events::PATTERNS).await
    };
    match timeout(budget, subscribe).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return format!("SUBSCRIBE: {}", describe(&e)),
        Err(_) => return "SUBSCRIBE: no answer in time".into(),
    }
    backoff.succeeded();
    if !*was_up {
        info!(message = "Sentinel subscription restored.", sentinel = %target.label);
    }
    *was_up = true;
    if out
        .send(Signal::Subscribed { from: target.index })
        .await
        .is_err()
    {
        return "the authority stopped".into();
    }
    let mut ping = tokio::time::interval_at(Instant::now() + SUBSCRIPTION_PING, SUBSCRIPTION_PING);
    loop {
        tokio::select! {
            msg = messages.next() => {
                let Some(msg) = msg else { return "the Sentinel closed the connection".into() };
                let channel = msg.get_channel_name();
                let payload = String::from_utf8_lossy(msg.get_payload_bytes());
                match events::parse(channel, &payload, master_name) {
                    Ok(event) => {
                        debug!(message = "Sentinel event.", sentinel = %target.label, channel, payload = %payload);
                        if out.send(Signal::Event { from: target.index, event }).await.is_err() {
                            return "the authority stopped".into();
                        }
                    }
                    Err(ignored) => debug!(message = "Sentinel message ignored.", sentinel = %target.label, reason = %ignored),
                }
            }
            _ = ping.tick() => {
                match timeout(budget, sink.ping::<Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return format!("PING: {}", describe(&e)),
                    Err(_) => return "PING: no answer in time".into(),
                }
            }
        }
    }
}

/// Reads the reply to `get-master-addr-by-name`: `[ip, port]`, or nil for a master name the
/// Sentinel does not monitor. Anything else is a clear failure, never a panic.
pub fn parse_master_reply(value: &Value) -> Answer {
    match value {
        Value::Nil => Answer::Unknown,
        Value::Array(items) => match items.as_slice() {
            [host, port] => match (text(host), text(port).and_then(|p| p.parse::<u16>().ok())) {
                (Some(host), Some(port)) if !host.is_empty() && port > 0 => {
                    Answer::Master(MasterAddr { host, port })
                }
                _ => Answer::Failed(format!("unexpected reply {}", short(value))),
            },
            // RESP2 nil array (`*-1`) arrives as Nil; an empty array is the same "unknown".
            [] => Answer::Unknown,
            _ => Answer::Failed(format!("unexpected reply {}", short(value))),
        },
        Value::ServerError(e) => Answer::Failed(format!("error reply: {e:?}")),
        _ => Answer::Failed(format!("unexpected reply {}", short(value))),
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn short(value: &Value) -> String {
    crate::control_plane::checks::parse::shorten(&format!("{value:?}"), 120)
}

/// Whether the error is the server's answer (the connection is still good).
fn is_error_reply(error: &RedisError) -> bool {
    !matches!(
        error.kind(),
        ErrorKind::IoError | ErrorKind::ParseError | ErrorKind::ClientError
    ) && !error.is_unrecoverable_error()
}

fn describe(error: &RedisError) -> String {
    let text = error.to_string();
    let first = text.lines().next().unwrap_or_default();
    let hint =
        if first.contains("unknown command") && first.to_ascii_lowercase().contains("sentinel") {
            " (is this a Sentinel port? a Redis server does not know SENTINEL)"
        } else {
            ""
        };
    match error.kind() {
        ErrorKind::ParseError => "the reply is not RESP".into(),
        _ => format!(
            "{}{hint}",
            crate::control_plane::checks::parse::shorten(first, 160)
        ),
    }
}

fn login_error(error: &RedisError, login: &RedisConnectionInfo) -> String {
    match error.kind() {
        ErrorKind::AuthenticationFailed => match &login.username {
            Some(user) => format!("the Sentinel rejected AUTH for user \"{user}\""),
            None => "the Sentinel rejected AUTH (requirepass); set the authority's user if it needs an ACL user".into(),
        },
        _ => format!("login: {}", describe(error)),
    }
}

/// The addresses `host` stands for (itself if it is an IP), for mapping the quorum's answer.
pub async fn resolve(addr: &MasterAddr, budget: Duration) -> Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = addr.host.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, addr.port)]);
    }
    match timeout(
        budget,
        tokio::net::lookup_host((addr.host.as_str(), addr.port)),
    )
    .await
    {
        Ok(Ok(found)) => Ok(found.collect()),
        Ok(Err(e)) => Err(format!("resolve {}: {e}", addr.host)),
        Err(_) => Err(format!("resolve {}: no answer in time", addr.host)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn the_master_reply_is_read_and_garbage_is_refused() {
        assert_eq!(
            parse_master_reply(&Value::Array(vec![bulk("127.0.0.1"), bulk("16379")])),
            Answer::Master(MasterAddr {
                host: "127.0.0.1".into(),
                port: 16379
            })
        );
        assert_eq!(parse_master_reply(&Value::Nil), Answer::Unknown);
        for garbage in [
            Value::Array(vec![bulk("127.0.0.1"), bulk("port")]),
            Value::Array(vec![bulk("127.0.0.1"), bulk("0")]),
            Value::Array(vec![bulk(""), bulk("1")]),
            Value::Array(vec![bulk("a"), bulk("1"), bulk("x")]),
            Value::Array(vec![Value::BulkString(vec![0xff]), bulk("1")]),
            Value::Int(3),
            Value::Okay,
        ] {
            assert!(
                matches!(parse_master_reply(&garbage), Answer::Failed(ref why) if why.contains("unexpected reply")),
                "{garbage:?}"
            );
        }
    }
}
