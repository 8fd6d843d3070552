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
//!   the old timeline until the post-promotion checkpoint completes. On a replica,
//!   `pg_stat_wal_receiver.received_tli` (the timeline being streamed), or the last
//!   restartpoint's timeline when no WAL receiver runs.
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
use crate::health::{CheckFailure, Facts, FailureReason, ObservedRole, ReplicaFacts};

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
CASE WHEN s.in_recovery AND r.received_tli IS NULL \
THEN (SELECT timeline_id FROM pg_control_checkpoint()) END, \
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
    pub checkpoint_tli: Option<&'a str>,
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
            checkpoint_tli: column(9),
            backend_pid: column(10),
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
    let timeline = parse_value(row.current_walfile, "pg_walfile_name()", timeline_of_walfile)?
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
    let timeline = match row.received_tli {
        Some(_) => parse_value(row.received_tli, "received_tli", parse_timeline)?,
        None => parse_value(row.checkpoint_tli, "timeline_id", parse_timeline)?,
    };
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
mod tests {
    use super::*;

    fn primary() -> StatusRow<'static> {
        StatusRow {
            in_recovery: Some("f"),
            current_lsn: Some("0/9000878"),
            current_walfile: Some("000000050000000000000009"),
            backend_pid: Some("26044"),
            ..StatusRow::default()
        }
    }

    fn replica() -> StatusRow<'static> {
        StatusRow {
            in_recovery: Some("t"),
            receive_lsn: Some("0/9000878"),
            replay_lsn: Some("0/9000878"),
            replay_age: Some("317.263554"),
            receiver_pid: Some("22387"),
            receiver_status: Some("streaming"),
            received_tli: Some("5"),
            backend_pid: Some("26063"),
            ..StatusRow::default()
        }
    }

    #[test]
    fn lsn_strings() {
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("0/9000878"), Some(0x0900_0878));
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn("FFFFFFFF/FFFFFFFF"), Some(u64::MAX));
        for bad in ["", "/", "0/", "/0", "0", "1/2/3", "+1/0", "0/-1", "0x1/0", "1 /0", "G/0"] {
            assert_eq!(parse_lsn(bad), None, "{bad:?}");
        }
        assert_eq!(parse_lsn("100000000/0"), None);
    }

    #[test]
    fn walfile_timelines() {
        assert_eq!(timeline_of_walfile("000000050000000000000009"), Some(5));
        assert_eq!(timeline_of_walfile("0000000A00000001000000FF"), Some(10));
        assert_eq!(timeline_of_walfile("000000000000000000000009"), None);
        assert_eq!(timeline_of_walfile("00000005000000000000009"), None);
        assert_eq!(timeline_of_walfile("+0000005000000000000000009"), None);
        assert_eq!(timeline_of_walfile("éééééééééééé"), None);
    }

    #[test]
    fn primary_reports_write_position_and_walfile_timeline() {
        let status = interpret(&primary()).unwrap();
        assert_eq!(status.backend_pid, Some(26044));
        assert_eq!(
            status.facts,
            Facts {
                role: ObservedRole::Primary,
                replica: None,
                write_position: Some(0x0900_0878),
                timeline: Some(5),
            }
        );
    }

    #[test]
    fn caught_up_streaming_replica_has_zero_lag_however_old_the_last_transaction() {
        let facts = interpret(&replica()).unwrap().facts;
        assert_eq!(facts.role, ObservedRole::Replica);
        assert_eq!(facts.timeline, Some(5));
        assert_eq!(facts.write_position, None);
        assert_eq!(
            facts.replica,
            Some(ReplicaFacts {
                lag: Some(Duration::ZERO),
                position: Some(0x0900_0878),
                link_up: true,
            })
        );
    }

    #[test]
    fn replaying_replica_reports_replay_age_and_disconnected_one_reports_nothing() {
        let behind = StatusRow {
            replay_lsn: Some("0/9000000"),
            replay_age: Some("2.5"),
            ..replica()
        };
        let facts = interpret(&behind).unwrap().facts.replica.unwrap();
        assert_eq!(facts.lag, Some(Duration::from_millis(2500)));
        assert_eq!(facts.position, Some(0x0900_0000));

        let never_replayed = StatusRow {
            replay_age: None,
            ..behind
        };
        assert_eq!(interpret(&never_replayed).unwrap().facts.replica.unwrap().lag, None);

        let disconnected = StatusRow {
            receiver_pid: None,
            receiver_status: None,
            received_tli: None,
            checkpoint_tli: Some("4"),
            ..replica()
        };
        let facts = interpret(&disconnected).unwrap().facts;
        assert_eq!(facts.timeline, Some(4));
        let replica = facts.replica.unwrap();
        assert!(!replica.link_up);
        assert_eq!(replica.lag, None, "a replica cut off from its primary cannot know its lag");

        let restarting = StatusRow {
            receiver_status: Some("waiting"),
            ..replica()
        };
        assert!(!interpret(&restarting).unwrap().facts.replica.unwrap().link_up);
    }

    #[test]
    fn hidden_receiver_status_names_the_missing_privilege() {
        let hidden = StatusRow {
            receiver_status: None,
            received_tli: None,
            ..replica()
        };
        let failure = interpret(&hidden).unwrap_err();
        assert_eq!(failure.reason, FailureReason::QueryFailed);
        assert!(failure.detail.contains("pg_monitor"), "{failure}");
    }

    #[test]
    fn malformed_rows_are_unexpected_replies_not_panics() {
        let cases = [
            StatusRow::default(),
            StatusRow {
                in_recovery: Some("maybe"),
                ..primary()
            },
            StatusRow {
                current_lsn: None,
                ..primary()
            },
            StatusRow {
                current_lsn: Some("0/zz"),
                ..primary()
            },
            StatusRow {
                current_walfile: Some("nope"),
                ..primary()
            },
            StatusRow {
                backend_pid: Some("-1"),
                ..primary()
            },
            StatusRow {
                replay_lsn: Some("1/"),
                ..replica()
            },
            StatusRow {
                received_tli: Some("0"),
                ..replica()
            },
            StatusRow {
                replay_age: Some("NaN"),
                ..replica()
            },
        ];
        for row in cases {
            let failure = interpret(&row).unwrap_err();
            assert_eq!(failure.reason, FailureReason::UnexpectedReply, "{row:?}");
        }
    }

    #[test]
    fn row_is_read_in_query_order() {
        let values = ["t", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
        let row = StatusRow::from_columns(|i| values.get(i).copied());
        assert_eq!(row.in_recovery, Some("t"));
        assert_eq!(row.backend_pid, Some("j"));
    }
}
