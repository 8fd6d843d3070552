//! The truth of this authority: the master address a *majority of the configured* Sentinels
//! report (`SENTINEL get-master-addr-by-name`), mapped to one of the cluster's backends by
//! address. Pure functions, so every case is a unit test.
//!
//! Why a majority of the *configured* sentinels and not of those that answered: a minority
//! partitioned with an old master keeps naming it (it cannot fail over without a majority), so
//! two answers out of three configured sentinels are needed whatever the third one says, and
//! one sentinel alone is never enough.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use crate::config::BackendName;

/// The master address as one Sentinel reports it. The host is kept as text: with
/// `resolve-hostnames yes` Sentinel may report a name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MasterAddr {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for MasterAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// One Sentinel's answer to the query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// It names this address.
    Master(MasterAddr),
    /// A nil reply: it does not monitor a master of that name.
    Unknown,
    /// No usable answer (connect, timeout, error reply, garbage), with why.
    Failed(String),
}

/// What the answers of all configured Sentinels add up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tally {
    /// A majority names this address.
    Agreed { addr: MasterAddr, votes: usize },
    /// Enough Sentinels answered, but no address has a majority (or a majority does not
    /// know the master name).
    Disagreed(String),
    /// Fewer than a majority answered at all.
    Unreachable(String),
}

/// The smallest majority of `configured` Sentinels.
pub fn majority(configured: usize) -> usize {
    configured / 2 + 1
}

/// Adds up `answers` (one per configured Sentinel, in config order, named by `labels`).
pub fn tally(labels: &[String], answers: &[Answer], master_name: &str) -> Tally {
    let need = majority(answers.len());
    let mut votes: BTreeMap<&MasterAddr, usize> = BTreeMap::new();
    let (mut unknown, mut failed) = (0, Vec::new());
    for (i, answer) in answers.iter().enumerate() {
        match answer {
            Answer::Master(addr) => *votes.entry(addr).or_default() += 1,
            Answer::Unknown => unknown += 1,
            Answer::Failed(why) => failed.push(format!(
                "{}: {why}",
                labels.get(i).map_or("?", String::as_str)
            )),
        }
    }
    if let Some((addr, &n)) = votes.iter().find(|(_, &n)| n >= need) {
        return Tally::Agreed {
            addr: (*addr).clone(),
            votes: n,
        };
    }
    let answered = answers.len() - failed.len();
    if answered < need {
        return Tally::Unreachable(format!(
            "{answered} of {} sentinels answered, {need} needed ({})",
            answers.len(),
            failed.join("; ")
        ));
    }
    if unknown >= need {
        return Tally::Disagreed(format!(
            "{unknown} of {} sentinels do not monitor a master named {master_name:?} \
             (check master_name, or SENTINEL MONITOR it)",
            answers.len()
        ));
    }
    let mut parts: Vec<String> = votes.iter().map(|(a, n)| format!("{a} ({n})")).collect();
    if unknown > 0 {
        parts.push(format!("unknown master ({unknown})"));
    }
    if !failed.is_empty() {
        parts.push(format!("no answer ({})", failed.len()));
    }
    Tally::Disagreed(format!(
        "no address has a majority ({need} of {}): {}",
        answers.len(),
        parts.join(", ")
    ))
}

/// Which backend the agreed address is. `backends` holds every backend with the addresses
/// its configured address resolves to; `reported` the addresses the Sentinels' host resolves
/// to (itself when it is an IP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapping {
    Backend(BackendName),
    /// No backend has that address.
    NoBackend,
    /// More than one backend has it (a config mistake: two names for one server).
    Ambiguous(Vec<BackendName>),
}

pub fn map_to_backend(
    reported: &[SocketAddr],
    backends: &[(BackendName, Vec<SocketAddr>)],
) -> Mapping {
    let hits: Vec<BackendName> = backends
        .iter()
        .filter(|(_, addrs)| addrs.iter().any(|a| reported.iter().any(|r| same(a, r))))
        .map(|(name, _)| name.clone())
        .collect();
    match hits.len() {
        0 => Mapping::NoBackend,
        1 => Mapping::Backend(hits.into_iter().next().expect("one hit")),
        _ => Mapping::Ambiguous(hits),
    }
}

/// Same IP and port; an IPv4-mapped IPv6 address equals its IPv4 form.
fn same(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("s{i}")).collect()
    }

    fn m(port: u16) -> Answer {
        Answer::Master(MasterAddr {
            host: "127.0.0.1".into(),
            port,
        })
    }

    fn fail() -> Answer {
        Answer::Failed("connection refused".into())
    }

    fn t(answers: &[Answer]) -> Tally {
        tally(&labels(answers.len()), answers, "mymaster")
    }

    #[test]
    fn majority_of_the_configured_count() {
        assert_eq!(
            [1, 2, 3, 4, 5].map(majority),
            [1, 2, 2, 3, 3],
            "two of two, two of three, three of four"
        );
    }

    #[test]
    fn a_majority_agrees_even_when_one_differs_or_is_down() {
        for answers in [
            vec![m(1), m(1), m(1)],
            vec![m(1), m(1), m(2)],
            vec![m(1), fail(), m(1)],
            vec![Answer::Unknown, m(1), m(1)],
        ] {
            match t(&answers) {
                Tally::Agreed { addr, .. } => assert_eq!(addr.port, 1, "{answers:?}"),
                other => panic!("{answers:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_minority_is_never_enough() {
        // One sentinel alone (say, back from maintenance with an old view) decides nothing.
        assert!(matches!(t(&[m(1), fail(), fail()]), Tally::Unreachable(_)));
        assert!(matches!(t(&[m(1), m(2), fail()]), Tally::Disagreed(_)));
        assert!(matches!(t(&[m(1), m(2), m(3)]), Tally::Disagreed(_)));
        assert!(matches!(t(&[m(1), m(1), m(2), m(2)]), Tally::Disagreed(_)));
        assert!(matches!(t(&[m(1), fail()]), Tally::Unreachable(_)));
    }

    #[test]
    fn the_reasons_say_what_was_seen() {
        let Tally::Unreachable(why) = t(&[fail(), fail(), m(1)]) else {
            panic!()
        };
        assert!(why.contains("1 of 3 sentinels answered, 2 needed"), "{why}");
        assert!(why.contains("s1: connection refused"), "{why}");
        let Tally::Disagreed(why) = t(&[m(1), m(2), fail()]) else {
            panic!()
        };
        assert!(
            why.contains("127.0.0.1:1 (1)") && why.contains("127.0.0.1:2 (1)"),
            "{why}"
        );
        let Tally::Disagreed(why) = t(&[Answer::Unknown, Answer::Unknown, m(1)]) else {
            panic!()
        };
        assert!(
            why.contains("do not monitor a master named \"mymaster\""),
            "{why}"
        );
    }

    #[test]
    fn mapping_compares_ip_and_port() {
        let a: SocketAddr = "127.0.0.1:16379".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:16380".parse().unwrap();
        let backends = vec![
            (BackendName::from("a"), vec![a]),
            (BackendName::from("b"), vec![b]),
        ];
        assert_eq!(
            map_to_backend(&[b], &backends),
            Mapping::Backend(BackendName::from("b"))
        );
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:16379".parse().unwrap();
        assert_eq!(
            map_to_backend(&[mapped], &backends),
            Mapping::Backend(BackendName::from("a"))
        );
        let other_port: SocketAddr = "127.0.0.1:6379".parse().unwrap();
        assert_eq!(map_to_backend(&[other_port], &backends), Mapping::NoBackend);
        let twice = vec![
            (BackendName::from("a"), vec![a]),
            (BackendName::from("a2"), vec![a]),
        ];
        assert!(matches!(
            map_to_backend(&[a], &twice),
            Mapping::Ambiguous(names) if names.len() == 2
        ));
    }
}
