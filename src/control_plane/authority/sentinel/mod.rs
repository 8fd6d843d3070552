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
//! `+selected-slave`, `+promoted-slave`) holds new primary connections ([`HoldState`]) until the *quorum* names
//! a master other than the one named when the hold began; a `-failover-abort-*` or
//! `+failover-end-for-timeout` ends it, and so does `hold_timeout` (logged as a warning).
//! Why: between the promotion of the replica and the reconfiguration of the old master both
//! answer `ROLE` master, and until a majority of Sentinels learned the switch the quorum still
//! names the old one. Holding there means no new connection is sent to a node about to be
//! demoted; the held ones go to the new master once quorum and `ROLE` agree on it.
//!
//! **Candidate**: the quorum learns the switch only at `+switch-master` (~1 s after the
//! promotion), and the old master keeps answering `ROLE` master and acknowledging writes until
//! it is converted (~10 s later), writes its conversion then discards. So during a hold, the
//! replica a promotion event names (`+selected-slave` … `+promoted-slave`, [`events`]) becomes
//! the verdict at once, and the gate routes it as soon as its own `ROLE` says master; the old
//! master is then no longer routed, and its sessions are closed (`on_demote`). The event only
//! names a node, it never routes one alone; and it is believed only in a live failover of the
//! master the quorum names (a hold already begun by an earlier event of this failover, or a
//! `+new-epoch` newer than any seen), so a stale republished event (redis/redis#12798) keeps
//! the quorum's answer. An abort, the quorum's switch or the hold's timeout drop the candidate.
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
use self::events::{Effect, Event};
use self::quorum::{Mapping, MasterAddr, Tally};
use super::{Source, Verdict};
use crate::config::{BackendAddress, BackendName, ClusterConfig, SentinelConfig};

/// How often the quorum is asked while a hold lasts or no backend is named: the switch is
/// expected any moment, and the held connections wait for it.
const FAST_INTERVAL: Duration = Duration::from_millis(100);

/// How often, while a candidate is named, the quorum is asked and the backends re-checked:
/// the old master acknowledges writes (lost at its conversion) until the candidate's own
/// `ROLE` says master and it is routed, and Sentinel only publishes `+promoted-slave` up to a
/// second after the promotion. Lasts until the quorum's switch (~1 s), so ~40 checks at most.
const CANDIDATE_INTERVAL: Duration = Duration::from_millis(25);

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
        let mut verdict = verdict(&tally, &source.cluster, config.timeout).await;
        let now = Instant::now();
        let holding = hold.on_tally(&tally, now, &source.cluster.name.to_string());
        let mut promoting = None;
        if let Some(candidate) = hold.candidate() {
            // The replica being promoted, if it maps to a backend; otherwise the quorum's.
            let named = to_backend(candidate, &source.cluster, config.timeout).await;
            if let Verdict::Leader(_) = named {
                promoting = Some(candidate.clone());
                verdict = named;
            }
        }
        let changed = last.as_ref() != Some(&(verdict.clone(), holding));
        if changed {
            log_change(&source, &verdict, holding, &tally, promoting.as_ref());
        }
        // A candidate not yet routed is re-checked until its ROLE agrees (see CANDIDATE_INTERVAL).
        if changed || recheck || promoting.is_some() {
            // A new verdict is worth a check of the backends too: the node it names must
            // confirm its role before anything is routed to it.
            if source
                .report(verdict.clone(), holding, true, None)
                .await
                .is_err()
            {
                return;
            }
        }
        let fast = holding || !matches!(verdict, Verdict::Leader(_));
        last = Some((verdict, holding));
        next = now
            + if promoting.is_some() {
                CANDIDATE_INTERVAL
            } else if fast {
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
            let before = hold.candidate().cloned();
            if hold.on_event(event, Instant::now()) {
                info!(message = "Sentinel announced a failover; holding new primary connections until the quorum names the new master.", cluster = %cluster, sentinel, event = %event.channel);
            }
            match (hold.candidate(), &event.promotion) {
                (Some(c), _) if before.as_ref() != Some(c) => {
                    info!(message = "Sentinel is promoting a replica: it is the authority's candidate, routed once its own ROLE says master.", cluster = %cluster, sentinel, event = %event.channel, replica = %c);
                }
                (None, Some(p)) => {
                    info!(message = "Sentinel promotion event not believed (no failover of the quorum's master under way, no new epoch); keeping the quorum's answer.", cluster = %cluster, sentinel, event = %event.channel, replica = %p.replica, master = %p.master);
                }
                _ => {}
            }
            if event.effect == Effect::FailoverAborted && !hold.holding() {
                info!(message = "Sentinel failover ended without a switch; hold released.", cluster = %cluster, sentinel, event = %event.channel);
            }
        }
    }
    true
}

fn log_change(
    source: &Source,
    verdict: &Verdict,
    holding: bool,
    tally: &Tally,
    promoting: Option<&MasterAddr>,
) {
    let cluster = &source.cluster.name;
    match verdict {
        Verdict::Leader(name) if promoting.is_some() => {
            info!(message = "Sentinel names the replica it is promoting; the quorum has not switched yet.", cluster = %cluster, backend = %name, replica = %promoting.map(ToString::to_string).unwrap_or_default(), hold = holding);
        }
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
    to_backend(addr, cluster, budget).await
}

/// The backend of `cluster` at the address a Sentinel reported.
async fn to_backend(addr: &MasterAddr, cluster: &ClusterConfig, budget: Duration) -> Verdict {
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
    /// The highest `+new-epoch` seen.
    epoch: Option<u64>,
    /// A `+new-epoch` above every earlier one arrived since the last failover ended.
    fresh_epoch: bool,
}

#[derive(Debug)]
struct Hold {
    since: Instant,
    /// The quorum's master when the hold began; the hold lasts until it names another.
    from: Option<MasterAddr>,
    /// The replica this failover promotes, as a believed promotion event named it.
    candidate: Option<MasterAddr>,
}

impl HoldState {
    pub fn new(timeout: Duration) -> Self {
        HoldState {
            timeout,
            agreed: None,
            hold: None,
            epoch: None,
            fresh_epoch: false,
        }
    }

    pub fn holding(&self) -> bool {
        self.hold.is_some()
    }

    /// The replica a believed promotion event of the failover under way names.
    pub fn candidate(&self) -> Option<&MasterAddr> {
        self.hold.as_ref()?.candidate.as_ref()
    }

    /// Weighs an event; returns whether it started a hold.
    ///
    /// A promotion event names the candidate only when it is of the master the quorum named
    /// at the hold's start and this failover is live: a hold already begun by an earlier event,
    /// or a fresh `+new-epoch`. A stale event arriving alone starts a hold, names no one.
    pub fn on_event(&mut self, event: &Event, now: Instant) -> bool {
        match event.effect {
            Effect::NewEpoch(e) => {
                if self.epoch.is_none_or(|seen| e > seen) {
                    self.epoch = Some(e);
                    self.fresh_epoch = true;
                }
                false
            }
            Effect::FailoverStarted => {
                let live = self.hold.is_some() || self.fresh_epoch;
                let started = self.hold.is_none();
                let hold = self.hold.get_or_insert_with(|| Hold {
                    since: now,
                    from: self.agreed.clone(),
                    candidate: None,
                });
                if let Some(p) = &event.promotion {
                    if live && hold.from.as_ref() == Some(&p.master) && p.replica != p.master {
                        hold.candidate = Some(p.replica.clone());
                    }
                }
                started
            }
            Effect::FailoverAborted => {
                self.end();
                false
            }
            Effect::Recheck => false,
        }
    }

    fn end(&mut self) {
        self.hold = None;
        self.fresh_epoch = false;
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
                self.end();
            }
            self.agreed = Some(addr.clone());
        }
        if let Some(h) = &self.hold {
            if now.duration_since(h.since) >= self.timeout {
                warn!(message = "Sentinel failover hold timed out: the quorum still names the old master; routing by the checks and the quorum again.", cluster, hold_timeout = ?self.timeout, master = ?self.agreed.as_ref().map(ToString::to_string));
                self.end();
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

    fn ev(effect: Effect) -> Event {
        Event {
            channel: "test".into(),
            effect,
            promotion: None,
        }
    }

    /// `channel` about replica `replica` of master `master` (ports on 127.0.0.1).
    fn promoting(channel: &str, replica: u16, master: u16) -> Event {
        let payload =
            format!("slave 127.0.0.1:{replica} 127.0.0.1 {replica} @ labmaster 127.0.0.1 {master}");
        events::parse(channel, &payload, "labmaster").unwrap()
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
        assert!(h.on_event(&ev(Effect::FailoverStarted), t0));
        assert!(
            !h.on_event(&ev(Effect::FailoverStarted), t0),
            "one hold at a time"
        );
        assert!(!h.on_event(&ev(Effect::Recheck), t0) && h.holding());
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
        h.on_event(&ev(Effect::FailoverStarted), t0);
        h.on_event(&ev(Effect::FailoverAborted), t0);
        assert!(!h.on_tally(&agreed(1), t0, "c"));
        h.on_event(&ev(Effect::FailoverStarted), t0);
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
        h.on_event(&ev(Effect::FailoverStarted), t0);
        assert!(!h.on_tally(&agreed(2), t0, "c"));
    }

    #[test]
    fn a_promotion_in_a_live_failover_names_the_candidate_until_the_switch() {
        let t0 = Instant::now();
        let mut h = HoldState::new(Duration::from_secs(10));
        h.on_tally(&agreed(1), t0, "c");
        assert!(h.on_event(&ev(Effect::FailoverStarted), t0));
        assert_eq!(h.candidate(), None);
        h.on_event(&promoting("+selected-slave", 2, 1), t0);
        assert_eq!(h.candidate(), Some(&addr(2)));
        h.on_event(&promoting("+promoted-slave", 2, 1), t0);
        assert_eq!(h.candidate(), Some(&addr(2)));
        // The quorum still names the old master: the candidate stays.
        assert!(h.on_tally(&agreed(1), t0 + Duration::from_millis(500), "c"));
        assert_eq!(h.candidate(), Some(&addr(2)));
        // The quorum switched: its answer is the truth again.
        assert!(!h.on_tally(&agreed(2), t0 + Duration::from_secs(1), "c"));
        assert_eq!(h.candidate(), None);
    }

    #[test]
    fn a_stale_promotion_alone_names_no_one() {
        // redis/redis#12798: a Sentinel back from maintenance republishes old events. A
        // `+promoted-slave` with no failover under way and no new epoch starts a hold only.
        let t0 = Instant::now();
        let mut h = HoldState::new(Duration::from_secs(10));
        h.on_tally(&agreed(1), t0, "c");
        assert!(h.on_event(&promoting("+promoted-slave", 2, 1), t0));
        assert_eq!(h.candidate(), None);
        // A promotion in a failover of another master than the quorum's names no one either.
        h.on_event(&promoting("+promoted-slave", 3, 9), t0);
        assert_eq!(h.candidate(), None);
    }

    #[test]
    fn a_fresh_epoch_makes_the_first_promotion_event_believed() {
        let t0 = Instant::now();
        let mut h = HoldState::new(Duration::from_secs(10));
        h.on_tally(&agreed(1), t0, "c");
        h.on_event(&ev(Effect::NewEpoch(7)), t0);
        h.on_event(&promoting("+promoted-slave", 2, 1), t0);
        assert_eq!(h.candidate(), Some(&addr(2)));
        h.on_tally(&agreed(2), t0, "c");
        // An epoch not above the highest seen is no new failover.
        h.on_event(&ev(Effect::NewEpoch(7)), t0);
        h.on_event(&ev(Effect::NewEpoch(5)), t0);
        h.on_event(&promoting("+promoted-slave", 1, 2), t0);
        assert_eq!(h.candidate(), None);
    }

    #[test]
    fn an_abort_or_the_timeout_drops_the_candidate() {
        let t0 = Instant::now();
        let mut h = HoldState::new(Duration::from_secs(10));
        h.on_tally(&agreed(1), t0, "c");
        h.on_event(&ev(Effect::NewEpoch(3)), t0);
        h.on_event(&ev(Effect::FailoverStarted), t0);
        h.on_event(&promoting("+failover-state-wait-promotion", 2, 1), t0);
        assert_eq!(h.candidate(), Some(&addr(2)));
        h.on_event(&ev(Effect::FailoverAborted), t0);
        assert_eq!(h.candidate(), None);
        // The abort consumed the epoch: a late promotion event alone is not believed.
        h.on_event(&promoting("+promoted-slave", 2, 1), t0);
        assert_eq!(h.candidate(), None);
        h.on_event(&promoting("+promoted-slave", 2, 1), t0);
        assert_eq!(
            h.candidate(),
            Some(&addr(2)),
            "the hold it began makes it live"
        );
        assert!(!h.on_tally(&agreed(1), t0 + Duration::from_secs(10), "c"));
        assert_eq!(h.candidate(), None);
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
