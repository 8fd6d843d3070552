//! `authority: { sentinel: ... }`: Redis Sentinel as the authority of a Redis cluster.
//!
//! **Truth** is what a majority of the configured Sentinels answer to `SENTINEL
//! get-master-addr-by-name <master_name>` ([`quorum`]), mapped to the backend with that
//! address (IP and port, after resolving both sides). No majority → `NoLeader`, fewer than a
//! majority answering → `Unreachable`, an address no backend has → `UnknownMember`.
//!
//! **Push**: every Sentinel is subscribed to ([`events`]); an event about the master asks the
//! quorum at once and sets `recheck`, so the cluster's backends are checked at once too. An
//! event is a trigger, never the truth: a Sentinel back from maintenance can republish a
//! stale `+switch-master` (redis/redis#12798), and the verdict still comes from the quorum,
//! while the decision routes a node only when its own `ROLE` agrees (the AND-gate).
//!
//! **Hold**: the start of a failover (`+try-failover`, `+elected-leader`, `+failover-state-*`,
//! `+promoted-slave`) holds new primary connections ([`HoldState`]) until the *quorum* names
//! a master other than the one named when the hold began; a `-failover-abort-*` or
//! `+failover-end-for-timeout` ends it, and so does `hold_timeout` (logged as a warning).
//! Why: between the promotion of the replica and the reconfiguration of the old master both
//! answer `ROLE` master, and until a majority of Sentinels learned the switch the quorum still
//! names the old one. Holding there means no new connection is sent to a node about to be
//! demoted; the held ones go to the new master once quorum and `ROLE` agree on it.
//!
//! Sentinel's `client-reconfig-script` is not needed with this authority: the events reach
//! rolegate directly and the quorum is asked by rolegate itself.

pub mod client;
pub mod events;
pub mod quorum;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tracing::{info, warn};

use self::client::{Querier, Signal};
use self::events::Effect;
use self::quorum::{Mapping, MasterAddr, Tally};
use super::{Source, Verdict};
use crate::config::{BackendAddress, BackendName, ClusterConfig, SentinelConfig};

/// How often the quorum is asked while a hold lasts or no backend is named: the switch is
/// expected any moment, and the held connections wait for it.
const FAST_INTERVAL: Duration = Duration::from_millis(100);

/// Runs the Sentinel source of one cluster until its shutdown token fires.
pub async fn run(source: Source, config: SentinelConfig) {
    let targets = client::targets(&config);
    let labels: Vec<String> = targets.iter().map(|t| t.label.clone()).collect();
    let (tx, mut rx) = mpsc::channel(64);
    let stop = source.shutdown.child_token();
    let _stop_watchers = stop.clone().drop_guard();
    for target in &targets {
        tokio::spawn(client::watch(
            target.clone(),
            config.master_name.clone(),
            tx.clone(),
            stop.clone(),
        ));
    }
    drop(tx);
    let mut queriers: Vec<Querier> = targets.into_iter().map(Querier::new).collect();
    let mut hold = HoldState::new(config.hold_timeout);
    let mut last: Option<(Verdict, bool)> = None;
    let mut next = Instant::now();
    info!(message = "Sentinel authority started.", cluster = %source.cluster.name, master_name = %config.master_name, sentinels = ?labels);
    loop {
        let mut recheck = false;
        tokio::select! {
            () = source.shutdown.cancelled() => return,
            () = sleep_until(next) => {}
            signal = rx.recv() => match signal {
                Some(signal) => recheck |= on_signal(&mut hold, &signal, &labels, &source),
                None => return,
            },
        }
        while let Ok(signal) = rx.try_recv() {
            recheck |= on_signal(&mut hold, &signal, &labels, &source);
        }
        let answers =
            futures_util::future::join_all(queriers.iter_mut().map(|q| q.ask(&config.master_name)))
                .await;
        let tally = quorum::tally(&labels, &answers, &config.master_name);
        let verdict = verdict(&tally, &source.cluster, config.timeout).await;
        let now = Instant::now();
        let holding = hold.on_tally(&tally, now, &source.cluster.name.to_string());
        let changed = last.as_ref() != Some(&(verdict.clone(), holding));
        if changed {
            log_change(&source, &verdict, holding, &tally);
        }
        if changed || recheck {
            // A new verdict is worth a check of the backends too: the node it names must
            // confirm its role before anything is routed to it.
            if source.report(verdict.clone(), holding, true).await.is_err() {
                return;
            }
        }
        let fast = holding || !matches!(verdict, Verdict::Leader(_));
        last = Some((verdict, holding));
        next = now
            + if fast {
                FAST_INTERVAL.min(config.interval)
            } else {
                config.interval
            };
    }
}

fn on_signal(hold: &mut HoldState, signal: &Signal, labels: &[String], source: &Source) -> bool {
    let cluster = &source.cluster.name;
    match signal {
        Signal::Subscribed { .. } => {}
        Signal::Event { from, event } => {
            let sentinel = labels.get(*from).map_or("?", String::as_str);
            if hold.on_event(&event.effect, Instant::now()) {
                info!(message = "Sentinel announced a failover; holding new primary connections until the quorum names the new master.", cluster = %cluster, sentinel, event = %event.channel);
            }
            if event.effect == Effect::FailoverAborted && !hold.holding() {
                info!(message = "Sentinel failover ended without a switch; hold released.", cluster = %cluster, sentinel, event = %event.channel);
            }
        }
    }
    true
}

fn log_change(source: &Source, verdict: &Verdict, holding: bool, tally: &Tally) {
    let cluster = &source.cluster.name;
    match verdict {
        Verdict::Leader(name) => {
            let votes = match tally {
                Tally::Agreed { votes, .. } => *votes,
                _ => 0,
            };
            info!(message = "Sentinel quorum names the master.", cluster = %cluster, backend = %name, votes, hold = holding);
        }
        other => {
            warn!(message = "Sentinel quorum names no backend.", cluster = %cluster, reason = %other.error().unwrap_or_default(), hold = holding)
        }
    }
}

/// The verdict of a tally for `cluster`: the agreed address mapped to a backend.
async fn verdict(tally: &Tally, cluster: &ClusterConfig, budget: Duration) -> Verdict {
    let addr = match tally {
        Tally::Agreed { addr, .. } => addr,
        Tally::Disagreed(reason) => {
            return Verdict::NoLeader {
                reason: reason.clone(),
            }
        }
        Tally::Unreachable(reason) => {
            return Verdict::Unreachable {
                reason: reason.clone(),
            }
        }
    };
    let reported = match client::resolve(addr, budget).await {
        Ok(r) => r,
        Err(reason) => return Verdict::NoLeader { reason },
    };
    let mut backends = Vec::with_capacity(cluster.backends.len());
    for b in &cluster.backends {
        backends.push((b.name.clone(), backend_addrs(&b.address, budget).await));
    }
    to_verdict(addr, quorum::map_to_backend(&reported, &backends))
}

fn to_verdict(addr: &MasterAddr, mapping: Mapping) -> Verdict {
    match mapping {
        Mapping::Backend(name) => Verdict::Leader(name),
        Mapping::NoBackend => Verdict::UnknownMember {
            name: addr.to_string(),
        },
        Mapping::Ambiguous(names) => Verdict::NoLeader {
            reason: format!(
                "the Sentinels' master {addr} is the address of backends {}; give each server one backend",
                names.iter().map(BackendName::as_str).collect::<Vec<_>>().join(", ")
            ),
        },
    }
}

/// A backend's addresses now (a name that does not resolve has none, so it matches nothing).
async fn backend_addrs(address: &BackendAddress, budget: Duration) -> Vec<SocketAddr> {
    match address {
        BackendAddress::Ip(a) => vec![*a],
        BackendAddress::Dns { host, port } => {
            match tokio::time::timeout(budget, tokio::net::lookup_host((host.as_str(), *port)))
                .await
            {
                Ok(Ok(found)) => found.collect(),
                _ => Vec::new(),
            }
        }
    }
}

/// The hold a Sentinel failover imposes: started by a failover event, ended when the quorum
/// names another master than at the start, by an abort event, or by its timeout. Pure: the
/// clock comes in as arguments.
#[derive(Debug)]
pub struct HoldState {
    timeout: Duration,
    /// The address the quorum agreed on last.
    agreed: Option<MasterAddr>,
    hold: Option<Hold>,
}

#[derive(Debug)]
struct Hold {
    since: Instant,
    /// The quorum's master when the hold began; the hold lasts until it names another.
    from: Option<MasterAddr>,
}

impl HoldState {
    pub fn new(timeout: Duration) -> Self {
        HoldState {
            timeout,
            agreed: None,
            hold: None,
        }
    }

    pub fn holding(&self) -> bool {
        self.hold.is_some()
    }

    /// Weighs an event; returns whether it started a hold.
    pub fn on_event(&mut self, effect: &Effect, now: Instant) -> bool {
        match effect {
            Effect::FailoverStarted if self.hold.is_none() => {
                self.hold = Some(Hold {
                    since: now,
                    from: self.agreed.clone(),
                });
                true
            }
            Effect::FailoverAborted => {
                self.hold = None;
                false
            }
            _ => false,
        }
    }

    /// Weighs the quorum's latest answer; returns whether the hold still lasts.
    pub fn on_tally(&mut self, tally: &Tally, now: Instant, cluster: &str) -> bool {
        if let Tally::Agreed { addr, .. } = tally {
            if self
                .hold
                .as_ref()
                .is_some_and(|h| h.from.as_ref() != Some(addr))
            {
                info!(message = "Sentinel quorum confirms the switch; hold released.", cluster, master = %addr);
                self.hold = None;
            }
            self.agreed = Some(addr.clone());
        }
        if let Some(h) = &self.hold {
            if now.duration_since(h.since) >= self.timeout {
                warn!(message = "Sentinel failover hold timed out: the quorum still names the old master; routing by the checks and the quorum again.", cluster, hold_timeout = ?self.timeout, master = ?self.agreed.as_ref().map(ToString::to_string));
                self.hold = None;
            }
        }
        self.hold.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> MasterAddr {
        MasterAddr {
            host: "127.0.0.1".into(),
            port,
        }
    }

    fn agreed(port: u16) -> Tally {
        Tally::Agreed {
            addr: addr(port),
            votes: 2,
        }
    }

    #[test]
    fn a_failover_holds_until_the_quorum_names_another_master() {
        let t0 = Instant::now();
        let mut h = HoldState::new(Duration::from_secs(10));
        assert!(!h.on_tally(&agreed(1), t0, "c"));
        assert!(h.on_event(&Effect::FailoverStarted, t0));
        assert!(
            !h.on_event(&Effect::FailoverStarted, t0),
            "one hold at a time"
        );
        assert!(!h.on_event(&Effect::Recheck, t0) && h.holding());
        // The leader switched, the majority not yet: still the old master, still holding.
        assert!(h.on_tally(&agreed(1), t0 + Duration::from_millis(500), "c"));
        assert!(h.on_tally(&Tally::Disagreed("1 vs 2".into()), t0, "c"));
        // The quorum names the new master: released.
        assert!(!h.on_tally(&agreed(2), t0 + Duration::from_secs(1), "c"));
    }

    #[test]
    fn an_abort_or_the_timeout_ends_the_hold() {
        let t0 = Instant::now();
        let mut h = HoldState::new(Duration::from_secs(10));
        h.on_tally(&agreed(1), t0, "c");
        h.on_event(&Effect::FailoverStarted, t0);
        h.on_event(&Effect::FailoverAborted, t0);
        assert!(!h.on_tally(&agreed(1), t0, "c"));
        h.on_event(&Effect::FailoverStarted, t0);
        assert!(h.on_tally(&agreed(1), t0 + Duration::from_secs(9), "c"));
        assert!(!h.on_tally(&agreed(1), t0 + Duration::from_secs(10), "c"));
    }

    #[test]
    fn a_hold_begun_after_the_switch_is_released_by_the_next_answer() {
        // Events are read before the quorum is asked: a late `+promoted-slave` arriving when
        // the quorum already names the new master does not hold for nothing.
        let t0 = Instant::now();
        let mut h = HoldState::new(Duration::from_secs(10));
        h.on_tally(&agreed(1), t0, "c");
        h.on_event(&Effect::FailoverStarted, t0);
        assert!(!h.on_tally(&agreed(2), t0, "c"));
    }

    #[test]
    fn unknown_and_ambiguous_addresses_route_no_one() {
        assert_eq!(
            to_verdict(&addr(9), Mapping::NoBackend),
            Verdict::UnknownMember {
                name: "127.0.0.1:9".into()
            }
        );
        let v = to_verdict(&addr(9), Mapping::Ambiguous(vec!["a".into(), "b".into()]));
        assert!(
            matches!(v, Verdict::NoLeader { ref reason } if reason.contains("backends a, b")),
            "{v:?}"
        );
        assert_eq!(
            to_verdict(&addr(9), Mapping::Backend("a".into())),
            Verdict::Leader("a".into())
        );
    }
}
