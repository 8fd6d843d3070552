//! PostgreSQL: the status query the probe sends, and the interpretation of its one-row answer.
//!
//! The query and [`StatusRow`] live together because the column order is the contract between
//! them. Values arrive as text (simple query protocol) and are parsed here.
//!
//! How the facts are derived:
//! - role: `pg_is_in_recovery()`.
//! - primary write position: `pg_current_wal_lsn()` as a byte position (`X/Y` → `X << 32 | Y`).
//! - timeline: on a primary, the timeline in the name of the WAL file being written
//!   (`pg_walfile_name(pg_current_wal_lsn())`, first 8 hex digits). That is correct from the
//!   first moment after a promotion, unlike `pg_control_checkpoint().timeline_id`, which keeps
//!   the old timeline until the post-promotion checkpoint completes (seen in the lab: a promoted
//!   node on timeline 3 still said 1 there for a quarter of a second, longer with more dirty
//!   buffers). On a replica, `pg_stat_wal_receiver.received_tli`, the timeline being streamed;
//!   unknown when no WAL receiver runs, because the other source, the last restartpoint's
//!   timeline, is stale right after the primary changes (a replica following timeline 3 still
//!   said 2 there).
//! - replica position: `pg_last_wal_replay_lsn()`, compared by the supervisor with the
//!   primary's write position.
//! - replica lag: zero when the WAL receiver is streaming and everything received has been
//!   replayed (an idle primary must not make a caught-up replica look minutes behind);
//!   `now() - pg_last_xact_replay_timestamp()` while streaming with WAL still to replay; unknown
//!   (`None`) when the receiver is not streaming, because the replica then cannot know what the
//!   primary has written since.
//! - link up: `pg_stat_wal_receiver.status = 'streaming'`. Reading that status needs
//!   `pg_read_all_stats` (part of `pg_monitor`); without it PostgreSQL shows the receiver's pid
//!   but hides its status, which is reported as a failure naming the missing role rather than
//!   silently as "link down".

use std::time::Duration;

use super::{parse_seconds, shorten};
use crate::control_plane::checks::{
    CheckFailure, Facts, FailureReason, ObservedRole, ReplicaFacts,
};

/// The status query: one round trip, one row, on a primary and on a replica alike. Functions
/// that fail during recovery (`pg_current_wal_lsn`) are only evaluated on a primary; the
/// recovery flag is computed once (a CTE with a volatile function is materialised).
pub const STATUS_QUERY: &str = "\
WITH s AS (SELECT pg_is_in_recovery() AS in_recovery) \
SELECT s.in_recovery, \
CASE WHEN NOT s.in_recovery THEN pg_current_wal_lsn() END, \
CASE WHEN NOT s.in_recovery THEN pg_walfile_name(pg_current_wal_lsn()) END, \
CASE WHEN s.in_recovery THEN pg_last_wal_receive_lsn() END, \
CASE WHEN s.in_recovery THEN pg_last_wal_replay_lsn() END, \
CASE WHEN s.in_recovery THEN extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END, \
r.pid, r.status, r.received_tli, \
pg_backend_pid() \
FROM s LEFT JOIN pg_stat_wal_receiver AS r ON true";

/// The answer to [`STATUS_QUERY`], column by column (`None` is SQL NULL or a missing column).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusRow<'a> {
    pub in_recovery: Option<&'a str>,
    pub current_lsn: Option<&'a str>,
    pub current_walfile: Option<&'a str>,
    pub receive_lsn: Option<&'a str>,
    pub replay_lsn: Option<&'a str>,
    /// Seconds since the last replayed transaction committed on the primary.
    pub replay_age: Option<&'a str>,
    pub receiver_pid: Option<&'a str>,
    pub receiver_status: Option<&'a str>,
    pub received_tli: Option<&'a str>,
    pub backend_pid: Option<&'a str>,
}

impl<'a> StatusRow<'a> {
    /// Builds the row from a column getter (index → text), in [`STATUS_QUERY`]'s order.
    pub fn from_columns(column: impl Fn(usize) -> Option<&'a str>) -> Self {
        StatusRow {
            in_recovery: column(0),
            current_lsn: column(1),
            current_walfile: column(2),
            receive_lsn: column(3),
            replay_lsn: column(4),
            replay_age: column(5),
            receiver_pid: column(6),
            receiver_status: column(7),
            received_tli: column(8),
            backend_pid: column(9),
        }
    }
}

/// What one status row says.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub facts: Facts,
    /// `pg_backend_pid()`: identifies the session (a reconnect changes it).
    pub backend_pid: Option<u32>,
}

/// Interprets a status row.
///
/// # Errors
/// `UnexpectedReply` for a missing or malformed value; `QueryFailed` when the monitor user may
/// not read the WAL receiver's status.
pub fn interpret(row: &StatusRow<'_>) -> Result<Status, CheckFailure> {
    let in_recovery = parse_value(row.in_recovery, "pg_is_in_recovery()", parse_bool)?
        .ok_or_else(|| missing("pg_is_in_recovery()"))?;
    let backend_pid = parse_value(row.backend_pid, "pg_backend_pid()", |t| t.parse().ok())?;
    let facts = if in_recovery {
        replica_facts(row)?
    } else {
        primary_facts(row)?
    };
    Ok(Status { facts, backend_pid })
}

fn primary_facts(row: &StatusRow<'_>) -> Result<Facts, CheckFailure> {
    let written = parse_value(row.current_lsn, "pg_current_wal_lsn()", parse_lsn)?
        .ok_or_else(|| missing("pg_current_wal_lsn()"))?;
    let timeline = parse_value(
        row.current_walfile,
        "pg_walfile_name()",
        timeline_of_walfile,
    )?
    .ok_or_else(|| missing("pg_walfile_name()"))?;
    Ok(Facts {
        role: ObservedRole::Primary,
        replica: None,
        write_position: Some(written),
        timeline: Some(timeline),
    })
}

fn replica_facts(row: &StatusRow<'_>) -> Result<Facts, CheckFailure> {
    if row.receiver_pid.is_some() && row.receiver_status.is_none() {
        return Err(CheckFailure::new(
            FailureReason::QueryFailed,
            "missing privilege: the check user may not read pg_stat_wal_receiver's status \
             (PostgreSQL hides it without pg_read_all_stats); GRANT pg_monitor TO the check user",
        ));
    }
    let link_up = row.receiver_status == Some("streaming");
    let replayed = parse_value(row.replay_lsn, "pg_last_wal_replay_lsn()", parse_lsn)?;
    let received = parse_value(row.receive_lsn, "pg_last_wal_receive_lsn()", parse_lsn)?;
    let age = parse_value(row.replay_age, "replay age", parse_seconds)?;
    let lag = match (link_up, replayed, received) {
        (false, _, _) => None,
        (true, Some(replayed), Some(received)) if replayed >= received => Some(Duration::ZERO),
        (true, _, _) => age,
    };
    let timeline = parse_value(row.received_tli, "received_tli", parse_timeline)?;
    Ok(Facts {
        role: ObservedRole::Replica,
        replica: Some(ReplicaFacts {
            lag,
            position: replayed,
            link_up,
        }),
        write_position: None,
        timeline,
    })
}

/// Parses an optional column; a present but unparseable value is an error naming the column.
fn parse_value<T>(
    value: Option<&str>,
    what: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, CheckFailure> {
    match value {
        None => Ok(None),
        Some(text) => parse(text).map(Some).ok_or_else(|| {
            CheckFailure::new(
                FailureReason::UnexpectedReply,
                format!("{what} returned {:?}", shorten(text, 40)),
            )
        }),
    }
}

fn missing(what: &str) -> CheckFailure {
    CheckFailure::new(
        FailureReason::UnexpectedReply,
        format!("the status query returned no value for {what}"),
    )
}

/// A boolean in PostgreSQL's text output (`t`/`f`).
pub fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "t" | "true" | "on" => Some(true),
        "f" | "false" | "off" => Some(false),
        _ => None,
    }
}

/// A `pg_lsn` in text form (`16/B374D848`) as a byte position.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.split_once('/')?;
    Some(u64::from(hex_u32(high)?) << 32 | u64::from(hex_u32(low)?))
}

/// The timeline in a WAL file name (`000000050000000000000009` → 5).
pub fn timeline_of_walfile(name: &str) -> Option<u32> {
    if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    hex_u32(name.get(..8)?).filter(|&tli| tli > 0)
}

/// A timeline id in decimal; timelines start at 1.
pub fn parse_timeline(text: &str) -> Option<u32> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|&tli| tli > 0)
}

/// 1 to 8 hex digits (no sign, no prefix: `from_str_radix` alone would accept `+1`).
fn hex_u32(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 8 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(text, 16).ok()
}

#[cfg(test)]
mod tests;
