//! Authorities: outside systems that own a cluster's roles (Patroni's leader key, Sentinel's
//! quorum) as *sources* of the role-change path (docs/design.md, "How what comes next plugs
//! in"). A source task per cluster with an `authority:` watches its authority and sends
//! [`AuthorityReport`]s to the supervisor; it never writes the table. The decision weighs the
//! latest report (`decision/authority.rs`): a node is routed as primary only when rolegate's
//! own checks say primary AND the authority names it.
//!
//! The contract every source keeps:
//! - report what the authority says now, as a [`Verdict`] naming a *configured backend*
//!   (the source maps the authority's names to backends; a name it cannot map is
//!   [`Verdict::UnknownMember`]);
//! - report [`Verdict::Unreachable`] when it cannot ask, then reconnect with [`Backoff`];
//! - set `recheck` when the authority's leader changed (push: the cluster's backends are
//!   checked at once) and `hold` while the authority announces a switchover in progress;
//! - never panic on what the authority sends: garbage is a verdict or a logged error;
//! - report the authority's own failover timing where it can be read ([`Timing`]; Patroni's
//!   dynamic configuration), `None` where not: shown and compared with `queue_timeout`, never
//!   a routing input.

pub mod patroni;
pub mod sentinel;

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Authority, BackendName, ClusterConfig, ClusterName, Config};

/// One fact from a cluster's authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorityReport {
    pub cluster: ClusterName,
    pub verdict: Verdict,
    /// The authority announced a switchover in progress: hold new primary connections.
    pub hold: bool,
    /// Re-check the cluster's backends now (the authority's leader changed).
    pub recheck: bool,
    /// The authority's own failover timing, for sources that can read it (Patroni's dynamic
    /// configuration); `None` for those that cannot.
    pub timing: Option<Timing>,
}

/// What the authority's own configuration says about how long an unplanned failover takes.
/// Not a routing input: `/status` shows it, and a primary listener whose `queue_timeout` is
/// shorter than [`FailoverTiming::window`] is warned about (its connections queued while the
/// dead primary's lock expires are refused before the authority promotes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timing {
    /// Read and understood.
    Known(FailoverTiming),
    /// The key is absent or its value is unusable; `reason` names the key.
    Unknown { reason: String },
}

/// Patroni's `ttl`, `loop_wait` and `retry_timeout` as Patroni applies them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverTiming {
    /// Where it was read (`/<namespace>/<scope>/config`).
    pub key: String,
    pub ttl: Duration,
    pub loop_wait: Duration,
    pub retry_timeout: Duration,
    /// Fields absent from the key, for which Patroni's defaults apply.
    pub defaulted: Vec<&'static str>,
}

impl FailoverTiming {
    /// The longest a dead leader's lock takes to be taken over: the lock expires `ttl` after
    /// the leader's last renewal, and a replica acts on it within one `loop_wait`.
    pub fn window(&self) -> Duration {
        self.ttl + self.loop_wait
    }
}

/// What the authority says about the cluster's primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The authority names this configured backend as the primary.
    Leader(BackendName),
    /// The authority names no primary (a leader race, or the cluster is down).
    NoLeader { reason: String },
    /// The authority names something no backend of the cluster stands for: not routed, and
    /// an operator must fix the mapping (`patroni_member`) or the cluster.
    UnknownMember { name: String },
    /// The authority cannot be asked; `on_authority_lost` decides.
    Unreachable { reason: String },
}

impl Verdict {
    /// Short name: the `event` label of `rolegate_authority_events_total`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Leader(_) => "leader",
            Verdict::NoLeader { .. } => "no_leader",
            Verdict::UnknownMember { .. } => "unknown_member",
            Verdict::Unreachable { .. } => "unreachable",
        }
    }

    /// Why this verdict routes no one, for `/status` `last_error`; `None` for a leader.
    pub fn error(&self) -> Option<String> {
        match self {
            Verdict::Leader(_) => None,
            Verdict::NoLeader { reason } => Some(format!("no leader: {reason}")),
            Verdict::UnknownMember { name } => Some(format!(
                "the authority names {name:?}, which is no backend of this cluster (Patroni: set patroni_member; Sentinel: a backend needs that address)"
            )),
            Verdict::Unreachable { reason } => Some(format!("unreachable: {reason}")),
        }
    }
}

/// Where a source sends its reports. The supervisor owns the receiving end (and turns each report
/// into one of its commands), so a source depends on nothing of the supervisor's.
#[derive(Clone)]
pub struct Reporter(mpsc::Sender<AuthorityReport>);

/// The supervisor is gone (shutdown): the source ends.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the supervisor stopped")]
pub struct Stopped;

impl Reporter {
    pub fn new(reports: mpsc::Sender<AuthorityReport>) -> Reporter {
        Reporter(reports)
    }

    pub async fn send(&self, report: AuthorityReport) -> Result<(), Stopped> {
        self.0.send(report).await.map_err(|_| Stopped)
    }
}

/// What a source task is given: its cluster (backends included, for the name mapping), where
/// to report, and when to stop.
pub struct Source {
    pub cluster: ClusterConfig,
    pub out: Reporter,
    pub shutdown: CancellationToken,
}

impl Source {
    /// Sends one report for this source's cluster.
    pub async fn report(
        &self,
        verdict: Verdict,
        hold: bool,
        recheck: bool,
        timing: Option<Timing>,
    ) -> Result<(), Stopped> {
        self.out
            .send(AuthorityReport {
                cluster: self.cluster.name.clone(),
                verdict,
                hold,
                recheck,
                timing,
            })
            .await
    }
}

/// Reconnect pacing: 100 ms doubling to 5 s, back to the start after a good session. Short
/// at first because a cluster with `on_authority_lost: fail_closed` holds its writes meanwhile.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(100);
    pub const MAX: Duration = Duration::from_secs(5);

    pub fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    /// The pause before the next attempt; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        d
    }

    /// A session worked: the next failure retries quickly again.
    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// Starts the source task of `cluster`'s authority, if it has one.
pub fn spawn(
    cluster: &ClusterConfig,
    out: Reporter,
    shutdown: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let authority = cluster.authority.clone()?;
    let source = Source {
        cluster: cluster.clone(),
        out,
        shutdown,
    };
    Some(match authority {
        Authority::Patroni(config) => tokio::spawn(patroni::run(source, config)),
        Authority::Sentinel(config) => tokio::spawn(sentinel::run(source, config)),
    })
}

/// The running source tasks, one per cluster with an authority; kept in step with the config
/// by [`Tasks::sync`] (start, reload, removal).
pub struct Tasks {
    out: Reporter,
    parent: CancellationToken,
    running: HashMap<ClusterName, Running>,
}

struct Running {
    /// What the task was started with; a change restarts it.
    authority: Authority,
    backends: Vec<crate::config::BackendConfig>,
    stop: CancellationToken,
}

impl Tasks {
    /// No task yet; each stops with `parent` (the supervisor's shutdown).
    pub fn new(out: Reporter, parent: CancellationToken) -> Tasks {
        Tasks {
            out,
            parent,
            running: HashMap::new(),
        }
    }

    /// Stops the tasks of clusters whose authority was removed or changed, starts those of
    /// new or changed ones. Returns the clusters whose task (re)started: their latest
    /// verdict is void until the new task reports.
    pub fn sync(&mut self, config: &Config) -> Vec<ClusterName> {
        let mut started = Vec::new();
        self.running.retain(|name, r| {
            let same = config.cluster(name).is_some_and(|c| {
                c.authority.as_ref() == Some(&r.authority) && c.backends == r.backends
            });
            if !same {
                r.stop.cancel();
            }
            same
        });
        for c in &config.clusters {
            let Some(authority) = &c.authority else {
                continue;
            };
            if self.running.contains_key(&c.name) {
                continue;
            }
            let stop = self.parent.child_token();
            if spawn(c, self.out.clone(), stop.clone()).is_some() {
                started.push(c.name.clone());
                self.running.insert(
                    c.name.clone(),
                    Running {
                        authority: authority.clone(),
                        backends: c.backends.clone(),
                        stop,
                    },
                );
            }
        }
        started
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for r in self.running.values() {
            r.stop.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new();
        let first: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert_eq!(first[0], Backoff::FIRST);
        assert_eq!(first[1], Backoff::FIRST * 2);
        assert!(first.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*first.last().unwrap(), Backoff::MAX);
        b.reset();
        assert_eq!(b.next_delay(), Backoff::FIRST);
    }

    #[test]
    fn only_a_leader_is_not_an_error() {
        assert_eq!(Verdict::Leader("a".into()).error(), None);
        for v in [
            Verdict::NoLeader { reason: "r".into() },
            Verdict::UnknownMember { name: "x".into() },
            Verdict::Unreachable { reason: "r".into() },
        ] {
            assert!(v.error().is_some(), "{v:?}");
        }
    }
}
