//! Sentinel's Pub/Sub events, as far as this authority reads them: which channels it
//! subscribes to, and what one message means for the watched master.
//!
//! An event is only ever a *trigger* (re-query the quorum, re-check the backends, start or end
//! a hold); it never names the primary by itself. A Sentinel back from maintenance can
//! republish a stale `+switch-master` (redis/redis#12798), and one Sentinel's view is not the
//! quorum's.
//!
//! Payload shapes (sentinel.c, `sentinelEvent`): most events are written with `%@`, which is
//! `<type> <name> <ip> <port>` for a master and `<type> <name> <ip> <port> @ <master-name>
//! <master-ip> <master-port>` for a replica or a sentinel; `+switch-master` is
//! `<master-name> <old-ip> <old-port> <new-ip> <new-port>`.

/// Channels subscribed to by name.
pub const CHANNELS: &[&str] = &[
    "+switch-master",
    "+sdown",
    "-sdown",
    "+odown",
    "-odown",
    "+try-failover",
    "+elected-leader",
    "+promoted-slave",
    "+failover-end",
    "+failover-end-for-timeout",
    "+convert-to-slave",
];

/// Channel patterns: every state of a running failover, every way it can be aborted.
pub const PATTERNS: &[&str] = &["+failover-state-*", "-failover-abort-*"];

/// What an event about the watched master means here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Re-query the quorum and re-check the cluster's backends now (`+sdown`, `+odown`, their
    /// ends, a replica converted, `+switch-master`, the end of a failover).
    Recheck,
    /// A failover of the master has started or is under way: hold new primary connections until
    /// the quorum names another master (or the failover is aborted, or the hold times out).
    FailoverStarted,
    /// The failover was given up: the master stays; the hold ends.
    FailoverAborted,
}

/// One event about the watched master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub channel: String,
    pub effect: Effect,
}

/// Why a message was not taken as an event of the watched master.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    #[error("event {channel} is about master {master:?}, not the watched one")]
    OtherMaster { channel: String, master: String },
    #[error("event {channel} is about a {kind}, not the master")]
    NotTheMaster { channel: String, kind: String },
    #[error("channel {0:?} is not one this authority subscribes to")]
    UnknownChannel(String),
    #[error("event {channel}: payload {payload:?} is not in Sentinel's format")]
    Malformed { channel: String, payload: String },
}

/// Reads one message of `channel` with `payload`, for the master named `master_name`.
///
/// # Errors
/// [`Ignored`] says why the message is not an event of the watched master (another master, a
/// replica's `+sdown`, a payload in no known shape). A malformed payload is never a panic.
pub fn parse(channel: &str, payload: &str, master_name: &str) -> Result<Event, Ignored> {
    let effect = effect_of(channel).ok_or_else(|| Ignored::UnknownChannel(channel.into()))?;
    let words: Vec<&str> = payload.split_ascii_whitespace().collect();
    let malformed = || Ignored::Malformed {
        channel: channel.into(),
        payload: crate::control_plane::checks::parse::shorten(payload, 120),
    };
    let master = if channel == "+switch-master" {
        // <master-name> <old-ip> <old-port> <new-ip> <new-port>
        match words.as_slice() {
            [name, _, old_port, _, new_port] if is_port(old_port) && is_port(new_port) => *name,
            _ => return Err(malformed()),
        }
    } else {
        match words.as_slice() {
            // A replica or a sentinel: `<type> <name> <ip> <port> @ <master> <ip> <port>`.
            [kind, _, _, port, "@", master, _, master_port]
                if is_port(port) && is_port(master_port) =>
            {
                // Of a replica, only its promotion and the conversion of the old master are
                // worth reading: the moments a node changes role.
                if channel != "+convert-to-slave" && channel != "+promoted-slave" {
                    return Err(Ignored::NotTheMaster {
                        channel: channel.into(),
                        kind: (*kind).into(),
                    });
                }
                *master
            }
            // The master: `master <name> <ip> <port>`, plus what some events append
            // (`+odown` adds `#quorum <q>/<n>`).
            ["master", name, _, port, rest @ ..] if is_port(port) && rest.first() != Some(&"@") => {
                *name
            }
            _ => return Err(malformed()),
        }
    };
    if master != master_name {
        return Err(Ignored::OtherMaster {
            channel: channel.into(),
            master: master.into(),
        });
    }
    Ok(Event {
        channel: channel.into(),
        effect,
    })
}

/// Which channels start a hold: the leader's first step (`+try-failover`), its election and
/// every `+failover-state-*`. A Sentinel that did not lead sees none of them, but the leader is
/// one of the sentinels subscribed to, and a Sentinel that cannot reach the master in time
/// sends `+odown` first, which re-checks.
fn effect_of(channel: &str) -> Option<Effect> {
    match channel {
        "+try-failover" | "+elected-leader" | "+promoted-slave" => Some(Effect::FailoverStarted),
        c if c.starts_with("+failover-state-") => Some(Effect::FailoverStarted),
        c if c.starts_with("-failover-abort-") => Some(Effect::FailoverAborted),
        "+failover-end-for-timeout" => Some(Effect::FailoverAborted),
        "+switch-master" | "+sdown" | "-sdown" | "+odown" | "-odown" | "+failover-end"
        | "+convert-to-slave" => Some(Effect::Recheck),
        _ => None,
    }
}

fn is_port(text: &str) -> bool {
    text.parse::<u16>().is_ok_and(|p| p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str = "labmaster";

    fn effect(channel: &str, payload: &str) -> Result<Effect, Ignored> {
        parse(channel, payload, M).map(|e| e.effect)
    }

    #[test]
    fn master_events_trigger_their_effect() {
        let master = "master labmaster 127.0.0.1 16379";
        assert_eq!(effect("+sdown", master), Ok(Effect::Recheck));
        assert_eq!(effect("-odown", master), Ok(Effect::Recheck));
        assert_eq!(effect("+try-failover", master), Ok(Effect::FailoverStarted));
        assert_eq!(
            effect("+elected-leader", master),
            Ok(Effect::FailoverStarted)
        );
        assert_eq!(
            effect("+failover-state-wait-promotion", master),
            Ok(Effect::FailoverStarted)
        );
        assert_eq!(
            effect("-failover-abort-no-good-slave", master),
            Ok(Effect::FailoverAborted)
        );
        assert_eq!(effect("+failover-end", master), Ok(Effect::Recheck));
        assert_eq!(
            effect(
                "+switch-master",
                "labmaster 127.0.0.1 16379 127.0.0.1 16380"
            ),
            Ok(Effect::Recheck)
        );
    }

    #[test]
    fn odown_with_its_quorum_suffix_is_read() {
        // +odown is written "%@ #quorum %d/%d".
        let got = effect("+odown", "master labmaster 127.0.0.1 16379 #quorum 2/2");
        assert_eq!(got, Ok(Effect::Recheck));
    }

    #[test]
    fn replica_events_count_only_for_the_conversion_and_promotion() {
        let replica = "slave 127.0.0.1:16380 127.0.0.1 16380 @ labmaster 127.0.0.1 16379";
        assert_eq!(effect("+convert-to-slave", replica), Ok(Effect::Recheck));
        assert_eq!(
            effect("+promoted-slave", replica),
            Ok(Effect::FailoverStarted)
        );
        assert!(matches!(
            effect("+sdown", replica),
            Err(Ignored::NotTheMaster { .. })
        ));
        let sentinel = "sentinel 1a2b 127.0.0.1 16480 @ labmaster 127.0.0.1 16379";
        assert!(matches!(
            effect("+sdown", sentinel),
            Err(Ignored::NotTheMaster { .. })
        ));
    }

    #[test]
    fn other_masters_and_garbage_are_ignored_with_a_reason() {
        assert!(matches!(
            effect("+sdown", "master other 127.0.0.1 1"),
            Err(Ignored::OtherMaster { .. })
        ));
        assert!(matches!(
            effect("+switch-master", "other 10.0.0.1 1 10.0.0.2 2"),
            Err(Ignored::OtherMaster { .. })
        ));
        for payload in [
            "",
            "master",
            "master labmaster 127.0.0.1 port",
            "\u{0}\u{ff}",
            "a b c d e f g h i",
        ] {
            assert!(
                matches!(effect("+sdown", payload), Err(Ignored::Malformed { .. })),
                "{payload:?}"
            );
        }
        assert!(matches!(
            effect("+switch-master", "labmaster 127.0.0.1 16379 127.0.0.1"),
            Err(Ignored::Malformed { .. })
        ));
        assert!(matches!(
            effect("+sentinel", "master labmaster 127.0.0.1 16379"),
            Err(Ignored::UnknownChannel(_))
        ));
    }
}
