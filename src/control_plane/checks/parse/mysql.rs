//! MySQL / MariaDB: the `read_only` flags and the rows of `SHOW REPLICA STATUS`.
//!
//! The rule: a node is primary iff `@@global.read_only` is off (and `@@global.super_read_only`
//! is off where the server has it). `read_only` is the contract operators and failover tools
//! (Orchestrator, MHA, `mysqlrpladmin`) use to fence a node, so it wins over everything else:
//! a writable node that *also* has replication configured and running (an intermediate master,
//! a replica someone forgot to fence) is still reported primary, and its replication status is
//! not even read. Two writable nodes are then a split brain for the supervisor to handle —
//! which is exactly what they are.
//!
//! Replica facts come from the replication channels: link up when both the IO and the SQL
//! thread say `Yes`; lag is `Seconds_Behind_Master`/`Seconds_Behind_Source` as the server
//! reports it (`NULL` — threads stopped, or the IO thread reconnecting with nothing left to
//! apply — means unknown). With several channels (multi-source) the link is up only when every
//! channel is up, and the lag is the largest. MySQL positions are GTID sets or file offsets,
//! not one number, so no position is reported.

use std::time::Duration;

use super::{parse_seconds, shorten};
use crate::control_plane::checks::{
    CheckFailure, Facts, FailureReason, ObservedRole, ReplicaFacts,
};

/// Role query where `super_read_only` exists (MySQL ≥ 5.7, Percona).
pub const READ_ONLY_QUERY: &str = "SELECT @@global.read_only, @@global.super_read_only";
/// Role query for servers without `super_read_only` (MariaDB), used after error 1193.
pub const READ_ONLY_ONLY_QUERY: &str = "SELECT @@global.read_only";
/// Replication status, MySQL ≥ 8.0.22 and MariaDB ≥ 10.5.1.
pub const REPLICA_STATUS_QUERY: &str = "SHOW REPLICA STATUS";
/// Replication status for older servers, used after a syntax error (MySQL 8.4 dropped it).
pub const SLAVE_STATUS_QUERY: &str = "SHOW SLAVE STATUS";

/// A `read_only`-style flag: `0`/`1`, or the words MariaDB ≥ 11 prints for its enum
/// (`OFF`, `ON`, `NO_LOCK`, `NO_LOCK_NO_ADMIN`; everything but `OFF` refuses writes).
pub fn parse_read_only(text: &str) -> Option<bool> {
    let text = text.trim();
    if text == "0" || text.eq_ignore_ascii_case("OFF") {
        return Some(false);
    }
    let read_only = text == "1"
        || ["ON", "NO_LOCK", "NO_LOCK_NO_ADMIN"]
            .iter()
            .any(|word| text.eq_ignore_ascii_case(word));
    read_only.then_some(true)
}

/// The role from the flags. `super_read_only` is `None` when the server has no such variable.
///
/// # Errors
/// `UnexpectedReply` when `read_only` is missing (NULL) or a flag is not a known value.
pub fn role(
    read_only: Option<&str>,
    super_read_only: Option<&str>,
) -> Result<ObservedRole, CheckFailure> {
    let flag = |value: Option<&str>, name: &str| match value {
        None => Err(CheckFailure::new(
            FailureReason::UnexpectedReply,
            format!("@@global.{name} is NULL"),
        )),
        Some(text) => parse_read_only(text).ok_or_else(|| {
            CheckFailure::new(
                FailureReason::UnexpectedReply,
                format!("@@global.{name} is {:?}", shorten(text, 40)),
            )
        }),
    };
    let read_only = flag(read_only, "read_only")?;
    let super_read_only = match super_read_only {
        Some(_) => flag(super_read_only, "super_read_only")?,
        None => false,
    };
    Ok(if read_only || super_read_only {
        ObservedRole::Replica
    } else {
        ObservedRole::Primary
    })
}

/// One row of `SHOW REPLICA STATUS` / `SHOW SLAVE STATUS`: one replication channel.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Channel {
    pub io_running: Option<String>,
    pub sql_running: Option<String>,
    pub seconds_behind: Option<String>,
    /// Whether the row had the thread columns at all (else it is not a status row).
    pub recognised: bool,
}

impl Channel {
    /// Picks the columns rolegate reads, under their MySQL 8 (`Replica_*`, `*_Source`) or
    /// classic (`Slave_*`, `*_Master`) names.
    pub fn from_columns<'a>(columns: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> Self {
        let mut channel = Channel::default();
        let mut io_seen = false;
        let mut sql_seen = false;
        for (name, value) in columns {
            let value = value.map(str::to_string);
            let is =
                |a: &str, b: &str| name.eq_ignore_ascii_case(a) || name.eq_ignore_ascii_case(b);
            if is("Slave_IO_Running", "Replica_IO_Running") {
                channel.io_running = value;
                io_seen = true;
            } else if is("Slave_SQL_Running", "Replica_SQL_Running") {
                channel.sql_running = value;
                sql_seen = true;
            } else if is("Seconds_Behind_Master", "Seconds_Behind_Source") {
                channel.seconds_behind = value;
            }
        }
        channel.recognised = io_seen && sql_seen;
        channel
    }

    fn is_running(&self) -> bool {
        let yes = |v: &Option<String>| v.as_deref().is_some_and(|v| v.eq_ignore_ascii_case("Yes"));
        yes(&self.io_running) && yes(&self.sql_running)
    }
}

/// Replica facts from all channels. No channel at all (a read-only node that replicates from
/// nobody) is a replica whose link is down and whose lag is unknown.
///
/// # Errors
/// `UnexpectedReply` for a row without the thread columns or an unparseable lag.
pub fn replica_facts(channels: &[Channel]) -> Result<ReplicaFacts, CheckFailure> {
    let mut link_up = !channels.is_empty();
    let mut lag = Some(Duration::ZERO);
    if channels.is_empty() {
        lag = None;
    }
    for channel in channels {
        if !channel.recognised {
            return Err(CheckFailure::new(
                FailureReason::UnexpectedReply,
                "replication status has no IO/SQL thread columns",
            ));
        }
        link_up &= channel.is_running();
        let behind = match channel.seconds_behind.as_deref() {
            None => None,
            Some(text) => Some(parse_seconds(text).ok_or_else(|| {
                CheckFailure::new(
                    FailureReason::UnexpectedReply,
                    format!("Seconds_Behind_Master is {:?}", shorten(text, 40)),
                )
            })?),
        };
        lag = match (lag, behind) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }
    Ok(ReplicaFacts {
        lag,
        position: None,
        link_up,
    })
}

/// Facts of a node from its role and, for a read-only node, its replication channels.
pub fn facts(role: ObservedRole, replica: Option<ReplicaFacts>) -> Facts {
    Facts {
        role,
        replica: match role {
            ObservedRole::Primary => None,
            ObservedRole::Replica => replica,
        },
        write_position: None,
        timeline: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(io: &str, sql: &str, behind: Option<&str>) -> Channel {
        Channel::from_columns([
            ("Slave_IO_Running", Some(io)),
            ("Slave_SQL_Running", Some(sql)),
            ("Seconds_Behind_Master", behind),
        ])
    }

    #[test]
    fn read_only_flags() {
        for (text, expected) in [
            ("0", Some(false)),
            ("1", Some(true)),
            ("OFF", Some(false)),
            ("on", Some(true)),
            ("NO_LOCK", Some(true)),
            ("NO_LOCK_NO_ADMIN", Some(true)),
            ("2", None),
            ("", None),
            ("yes", None),
        ] {
            assert_eq!(parse_read_only(text), expected, "{text:?}");
        }
    }

    #[test]
    fn primary_iff_both_flags_are_off() {
        assert_eq!(role(Some("0"), Some("0")), Ok(ObservedRole::Primary));
        assert_eq!(role(Some("0"), None), Ok(ObservedRole::Primary));
        assert_eq!(role(Some("1"), Some("0")), Ok(ObservedRole::Replica));
        assert_eq!(role(Some("1"), Some("1")), Ok(ObservedRole::Replica));
        // Not a state MySQL allows, but if a server says so it refuses writes.
        assert_eq!(role(Some("0"), Some("1")), Ok(ObservedRole::Replica));
        assert_eq!(role(Some("1"), None), Ok(ObservedRole::Replica));
        for (ro, sro) in [(None, None), (Some("x"), None), (Some("0"), Some("?"))] {
            let failure = role(ro, sro).unwrap_err();
            assert_eq!(failure.reason, FailureReason::UnexpectedReply);
        }
    }

    #[test]
    fn running_channel_reports_its_lag() {
        let facts = replica_facts(&[channel("Yes", "Yes", Some("0"))]).unwrap();
        assert_eq!(
            facts,
            ReplicaFacts {
                lag: Some(Duration::ZERO),
                position: None,
                link_up: true
            }
        );
        let facts = replica_facts(&[channel("Yes", "Yes", Some("42"))]).unwrap();
        assert_eq!(facts.lag, Some(Duration::from_secs(42)));
    }

    #[test]
    fn stopped_or_connecting_threads_mean_link_down() {
        for (io, sql, behind) in [
            ("Connecting", "Yes", None),
            ("No", "Yes", Some("3")),
            ("Yes", "No", None),
            ("", "", None),
        ] {
            let facts = replica_facts(&[channel(io, sql, behind)]).unwrap();
            assert!(!facts.link_up, "{io} {sql}");
        }
        let null_lag = replica_facts(&[channel("Connecting", "Yes", None)]).unwrap();
        assert_eq!(null_lag.lag, None);
    }

    #[test]
    fn mysql8_column_names_are_understood() {
        let row = Channel::from_columns([
            ("Replica_IO_Running", Some("Yes")),
            ("Replica_SQL_Running", Some("Yes")),
            ("Seconds_Behind_Source", Some("7")),
        ]);
        let facts = replica_facts(&[row]).unwrap();
        assert!(facts.link_up);
        assert_eq!(facts.lag, Some(Duration::from_secs(7)));
    }

    #[test]
    fn several_channels_combine_pessimistically() {
        let facts = replica_facts(&[
            channel("Yes", "Yes", Some("1")),
            channel("Yes", "Yes", Some("9")),
        ])
        .unwrap();
        assert_eq!(facts.lag, Some(Duration::from_secs(9)));
        assert!(facts.link_up);
        let facts =
            replica_facts(&[channel("Yes", "Yes", Some("1")), channel("No", "Yes", None)]).unwrap();
        assert_eq!(facts.lag, None);
        assert!(!facts.link_up);
    }

    #[test]
    fn no_channel_is_a_replica_without_a_link() {
        let facts = replica_facts(&[]).unwrap();
        assert_eq!(facts, ReplicaFacts::default());
    }

    #[test]
    fn malformed_status_rows_are_unexpected_replies() {
        let unknown = Channel::from_columns([("Foo", Some("Yes"))]);
        assert!(replica_facts(&[unknown]).is_err());
        let failure = replica_facts(&[channel("Yes", "Yes", Some("soon"))]).unwrap_err();
        assert_eq!(failure.reason, FailureReason::UnexpectedReply);
    }

    #[test]
    fn writable_node_never_carries_replica_facts() {
        let running = replica_facts(&[channel("Yes", "Yes", Some("0"))]).unwrap();
        let f = facts(ObservedRole::Primary, Some(running.clone()));
        assert_eq!(f.replica, None);
        assert_eq!(
            facts(ObservedRole::Replica, Some(running.clone())).replica,
            Some(running)
        );
    }
}
