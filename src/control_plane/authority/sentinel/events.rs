//! Sentinel's Pub/Sub events, as far as this authority reads them: which channels it
//! subscribes to, and what one message means for the watched master.
//!
//! An event is only ever a *trigger* (re-query the quorum, re-check the backends, start or end
//! a hold, name a candidate); it never routes a node by itself: the candidate a promotion event
//! names ([`Promotion`]) is routed only once its own `ROLE` says master (the decision's gate). A Sentinel back from maintenance can
//! republish a stale `+switch-master` (redis/redis#12798), and one Sentinel's view is not the
//! quorum's.
//!
//! Payload shapes (sentinel.c, `sentinelEvent`): most events are written with `%@`, which is
//! `<type> <name> <ip> <port>` for a master and `<type> <name> <ip> <port> @ <master-name>
//! <master-ip> <master-port>` for a replica or a sentinel; `+switch-master` is
//! `<master-name> <old-ip> <old-port> <new-ip> <new-port>`; `+new-epoch` is the bare epoch
//! (`%llu`, Sentinel's current epoch, shared by all the masters it watches).
//!
//! The replica being promoted is named, in order, by `+selected-slave`,
//! `+failover-state-send-slaveof-noone`, `+failover-state-wait-promotion` and
//! `+promoted-slave`, all `%@` of that replica (so its address and its master's).

use super::quorum::MasterAddr;

/// Channels subscribed to by name.
pub const CHANNELS: &[&str] = &[
    "+switch-master",
    "+sdown",
    "-sdown",
    "+odown",
    "-odown",
    "+try-failover",
    "+elected-leader",
    "+selected-slave",
    "+promoted-slave",
    "+new-epoch",
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
    /// A Sentinel's current epoch (`+new-epoch`): a failover newer than any seen began.
    NewEpoch(u64),
}

/// One event about the watched master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub channel: String,
    pub effect: Effect,
    /// The replica this event says the failover promotes, if it names one.
    pub promotion: Option<Promotion>,
}

/// A replica being promoted, and the master it replaces, as a promotion event names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    pub replica: MasterAddr,
    pub master: MasterAddr,
}

/// The events that name the replica the leader promotes, earliest first.
const PROMOTING: &[&str] = &[
    "+selected-slave",
    "+failover-state-send-slaveof-noone",
    "+failover-state-wait-promotion",
    "+promoted-slave",
];

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
    let mut promotion = None;
    if channel == "+new-epoch" {
        // Not about one master: Sentinel's epoch is shared by all it watches.
        return match words.as_slice() {
            [epoch] => epoch.parse().map_err(|_| malformed()).map(|e| Event {
                channel: channel.into(),
                effect: Effect::NewEpoch(e),
                promotion: None,
            }),
            _ => Err(malformed()),
        };
    }
    let master = if channel == "+switch-master" {
        // <master-name> <old-ip> <old-port> <new-ip> <new-port>
        match words.as_slice() {
            [name, _, old_port, _, new_port] if is_port(old_port) && is_port(new_port) => *name,
            _ => return Err(malformed()),
        }
    } else {
        match words.as_slice() {
            // A replica or a sentinel: `<type> <name> <ip> <port> @ <master> <ip> <port>`.
            [kind, _, ip, port, "@", master, master_ip, master_port]
                if is_port(port) && is_port(master_port) =>
            {
                // Of a replica, only its promotion and the conversion of the old master are
                // worth reading: the moments a node changes role.
                let promoting = *kind == "slave" && PROMOTING.contains(&channel);
                if channel != "+convert-to-slave" && !promoting {
                    return Err(Ignored::NotTheMaster {
                        channel: channel.into(),
                        kind: (*kind).into(),
                    });
                }
                if promoting {
                    promotion = Some(Promotion {
                        replica: addr(ip, port),
                        master: addr(master_ip, master_port),
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
        promotion,
    })
}

/// An address of a payload whose port [`is_port`] already accepted.
fn addr(host: &str, port: &str) -> MasterAddr {
    MasterAddr {
        host: host.into(),
        port: port.parse().unwrap_or_default(),
    }
}

/// Which channels start a hold: the leader's first step (`+try-failover`), its election and
/// every `+failover-state-*`. A Sentinel that did not lead sees none of them, but the leader is
/// one of the sentinels subscribed to, and a Sentinel that cannot reach the master in time
/// sends `+odown` first, which re-checks.
fn effect_of(channel: &str) -> Option<Effect> {
    match channel {
        "+try-failover" | "+elected-leader" | "+selected-slave" | "+promoted-slave" => {
            Some(Effect::FailoverStarted)
        }
        "+new-epoch" => Some(Effect::NewEpoch(0)),
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
    fn promotion_events_name_the_replica_and_its_master() {
        let replica = "slave 127.0.0.1:16380 127.0.0.1 16380 @ labmaster 127.0.0.1 16379";
        let at = |port| MasterAddr {
            host: "127.0.0.1".into(),
            port,
        };
        for channel in PROMOTING {
            let e = parse(channel, replica, M).unwrap();
            assert_eq!(e.effect, Effect::FailoverStarted, "{channel}");
            assert_eq!(
                e.promotion,
                Some(Promotion {
                    replica: at(16380),
                    master: at(16379)
                }),
                "{channel}"
            );
        }
        // The conversion of the old master names no promotion; a master event neither.
        let e = parse("+convert-to-slave", replica, M).unwrap();
        assert_eq!(e.promotion, None);
        let e = parse("+try-failover", "master labmaster 127.0.0.1 16379", M).unwrap();
        assert_eq!(e.promotion, None);
        // A sentinel's `+selected-slave` is no replica's.
        let sentinel = "sentinel 1a2b 127.0.0.1 16480 @ labmaster 127.0.0.1 16379";
        assert!(matches!(
            parse("+selected-slave", sentinel, M),
            Err(Ignored::NotTheMaster { .. })
        ));
    }

    #[test]
    fn new_epoch_is_a_bare_number() {
        assert_eq!(effect("+new-epoch", "12"), Ok(Effect::NewEpoch(12)));
        for payload in ["", "x", "1 2", "-1"] {
            assert!(
                matches!(
                    effect("+new-epoch", payload),
                    Err(Ignored::Malformed { .. })
                ),
                "{payload:?}"
            );
        }
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
