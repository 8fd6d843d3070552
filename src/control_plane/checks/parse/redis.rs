//! Redis: the `ROLE` reply as a typed value, the `INFO replication` text, and the facts both
//! give.
//!
//! `ROLE` is the source of the role: `master` (with its replication offset, the write
//! position), `slave` (its master, link state and processed offset), or `sentinel`, which is
//! not a data node at all and is reported as the wrong protocol. `INFO replication` is the
//! fallback for servers where `ROLE` is renamed or disabled, and the source of one number
//! `ROLE` lacks: `master_last_io_seconds_ago`.
//!
//! Lag. A Redis replica applies what it receives as it receives it, so there is no replay
//! delay to report; what can be stale is the link. The probe therefore reports, for a
//! connected replica, `lag = master_last_io_seconds_ago`: the seconds since the master last
//! sent anything — the same measure Redis itself uses for `min-replicas-max-lag`. It stays
//! below `repl-ping-replica-period` (10 s by default, the master pings an idle link) while
//! the link is healthy and grows when the master stops talking. A replica whose link is not
//! `connected` reports `None`: it cannot know what it is missing. The supervisor prefers
//! positions anyway: a replica whose offset has reached the master's `write_position` counts
//! as caught up whatever this lag says; the lag only decides when offsets differ (a few bytes
//! of PING between the two checks, or a real backlog).

use std::borrow::Cow;
use std::time::Duration;

use redis::Value;

use super::shorten;
use crate::control_plane::checks::{
    CheckFailure, Facts, FailureReason, ObservedRole, ReplicaFacts,
};

/// What `ROLE` (or `INFO replication`) says a node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyRole {
    Master {
        /// `master_repl_offset`: bytes of replication stream produced so far.
        offset: u64,
    },
    Replica {
        master_host: String,
        master_port: u16,
        /// `connect`, `connecting`, `sync`, `handshake`, `connected`, ...
        state: String,
        /// Processed replication offset; `None` while unknown (Redis says -1).
        offset: Option<u64>,
    },
    Sentinel {
        /// Names of the masters this sentinel monitors.
        masters: Vec<String>,
    },
}

/// `INFO replication`, the fields rolegate reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InfoReplication {
    pub role: Option<String>,
    pub master_host: Option<String>,
    pub master_port: Option<String>,
    pub master_link_status: Option<String>,
    pub master_last_io_seconds_ago: Option<i64>,
    pub slave_repl_offset: Option<i64>,
    pub master_repl_offset: Option<i64>,
}

/// Parses a `ROLE` reply.
///
/// # Errors
/// `UnexpectedReply` describing the shape that did not fit.
pub fn parse_role(value: &Value) -> Result<ReplyRole, CheckFailure> {
    let bad = |why: &str| {
        CheckFailure::new(
            FailureReason::UnexpectedReply,
            format!("ROLE reply {why}: {}", describe(value)),
        )
    };
    let Value::Array(items) = value else {
        return Err(bad("is not an array"));
    };
    let kind = items
        .first()
        .and_then(text)
        .ok_or_else(|| bad("has no role name"))?;
    match kind.as_ref() {
        "master" => {
            let offset = items
                .get(1)
                .and_then(integer)
                .and_then(|o| u64::try_from(o).ok())
                .ok_or_else(|| bad("has no master offset"))?;
            Ok(ReplyRole::Master { offset })
        }
        "slave" | "replica" => {
            let master_host = items
                .get(1)
                .and_then(text)
                .ok_or_else(|| bad("has no master host"))?;
            let master_port = items
                .get(2)
                .and_then(integer)
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| bad("has no master port"))?;
            let state = items
                .get(3)
                .and_then(text)
                .ok_or_else(|| bad("has no link state"))?;
            let offset = items
                .get(4)
                .and_then(integer)
                .ok_or_else(|| bad("has no offset"))?;
            Ok(ReplyRole::Replica {
                master_host: master_host.into_owned(),
                master_port,
                state: state.into_owned(),
                offset: u64::try_from(offset).ok(),
            })
        }
        "sentinel" => {
            let masters = match items.get(1) {
                Some(Value::Array(names)) => {
                    names.iter().filter_map(text).map(Cow::into_owned).collect()
                }
                _ => Vec::new(),
            };
            Ok(ReplyRole::Sentinel { masters })
        }
        _ => Err(bad("names an unknown role")),
    }
}

/// Parses `INFO replication` text (`key:value` lines, `#` comments, CRLF or LF).
pub fn parse_info(text: &str) -> InfoReplication {
    let mut info = InfoReplication::default();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let owned = || Some(value.to_string());
        let number = || value.trim().parse::<i64>().ok();
        match key {
            "role" => info.role = owned(),
            "master_host" => info.master_host = owned(),
            "master_port" => info.master_port = owned(),
            "master_link_status" => info.master_link_status = owned(),
            "master_last_io_seconds_ago" => info.master_last_io_seconds_ago = number(),
            "slave_repl_offset" => info.slave_repl_offset = number(),
            "master_repl_offset" => info.master_repl_offset = number(),
            _ => {}
        }
    }
    info
}

/// The role `INFO replication` describes (for servers where `ROLE` is unavailable).
///
/// # Errors
/// `UnexpectedReply` when the text has no usable `role:` line.
pub fn role_from_info(info: &InfoReplication) -> Result<ReplyRole, CheckFailure> {
    let bad = |why: &str| {
        CheckFailure::new(
            FailureReason::UnexpectedReply,
            format!("INFO replication {why}"),
        )
    };
    match info.role.as_deref() {
        Some("master") => Ok(ReplyRole::Master {
            offset: info
                .master_repl_offset
                .and_then(|o| u64::try_from(o).ok())
                .ok_or_else(|| bad("has no master_repl_offset"))?,
        }),
        Some("slave") | Some("replica") => Ok(ReplyRole::Replica {
            master_host: info.master_host.clone().unwrap_or_default(),
            master_port: info
                .master_port
                .as_deref()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or(0),
            state: match info.master_link_status.as_deref() {
                Some("up") => "connected".to_string(),
                Some(other) => format!("link {other}"),
                None => "unknown".to_string(),
            },
            offset: info.slave_repl_offset.and_then(|o| u64::try_from(o).ok()),
        }),
        Some(other) => Err(bad(&format!("reports role {:?}", shorten(other, 20)))),
        None => Err(bad("has no role line")),
    }
}

/// Facts from a role, with `INFO replication` (when it was read) for the replica's lag.
///
/// # Errors
/// `WrongProtocol` for a sentinel.
pub fn facts(role: &ReplyRole, info: Option<&InfoReplication>) -> Result<Facts, CheckFailure> {
    match role {
        ReplyRole::Master { offset } => Ok(Facts {
            role: ObservedRole::Primary,
            replica: None,
            write_position: Some(*offset),
            timeline: None,
        }),
        ReplyRole::Replica { state, offset, .. } => {
            let link_up = state == "connected";
            let lag = info
                .and_then(|i| i.master_last_io_seconds_ago)
                .filter(|_| link_up)
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs);
            Ok(Facts {
                role: ObservedRole::Replica,
                replica: Some(ReplicaFacts {
                    lag,
                    position: *offset,
                    link_up,
                }),
                write_position: None,
                timeline: None,
            })
        }
        ReplyRole::Sentinel { masters } => Err(CheckFailure::new(
            FailureReason::WrongProtocol,
            format!(
                "this is a Redis Sentinel, not a data node (it monitors: {}); point the backend \
                 at a Redis server's own port",
                if masters.is_empty() {
                    "nothing".to_string()
                } else {
                    shorten(&masters.join(", "), 80)
                }
            ),
        )),
    }
}

/// The code and message of an error reply (`-NOPERM this user has no permissions...`).
pub fn server_error(value: &Value) -> Option<(&str, &str)> {
    match value {
        Value::ServerError(error) => Some((error.code(), error.details().unwrap_or(""))),
        _ => None,
    }
}

/// Whether an error reply means the command does not exist (renamed or disabled with
/// `rename-command`), the one case where `INFO replication` stands in for `ROLE`.
pub fn is_unknown_command(code: &str, message: &str) -> bool {
    code == "ERR"
        && message
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("unknown command")
}

/// What an error reply to `command` means for the operator. `user` is the ACL user, if any.
pub fn error_reply_failure(
    command: &str,
    code: &str,
    message: &str,
    user: Option<&str>,
) -> CheckFailure {
    let message = shorten(message, 160);
    match code {
        "NOAUTH" => CheckFailure::new(
            FailureReason::AuthFailed,
            format!(
                "{command}: the server requires authentication (NOAUTH {message}); set the \
                 check password (and user, for an ACL user)"
            ),
        ),
        "WRONGPASS" => CheckFailure::new(
            FailureReason::AuthFailed,
            format!("{command}: WRONGPASS {message}"),
        ),
        "NOPERM" => CheckFailure::new(
            FailureReason::QueryFailed,
            format!(
                "missing permission: NOPERM {message}; allow the check's commands with \
                 `ACL SETUSER {} +role +info +ping`",
                user.unwrap_or("default")
            ),
        ),
        "LOADING" => CheckFailure::new(
            FailureReason::QueryFailed,
            format!("the server is loading its dataset into memory (LOADING {message})"),
        ),
        _ => CheckFailure::new(
            FailureReason::QueryFailed,
            format!("{command} failed: {code} {message}"),
        ),
    }
}

/// A reply element as text (bulk, simple or verbatim string).
pub fn text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes)),
        Value::SimpleString(s) => Some(Cow::Borrowed(s)),
        Value::VerbatimString { text, .. } => Some(Cow::Borrowed(text)),
        _ => None,
    }
}

/// A reply element as an integer (RESP integer, or a decimal string).
fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Int(i) => Some(*i),
        other => text(other)?.trim().parse().ok(),
    }
}

/// A short description of a reply for failure details (replies to ROLE/INFO hold no secrets).
pub fn describe(value: &Value) -> String {
    shorten(&format!("{value:?}"), 120)
}

#[cfg(test)]
mod tests;
