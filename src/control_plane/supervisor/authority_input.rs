//! Authorities' meeting point with the supervisor (`control_plane/authority/`): the source
//! tasks, kept in step with the config; each [`AuthorityReport`] into the cluster's memory
//! (`ClusterMemory::authority`), where the pure decision weighs it (policy 7); the gate's
//! changes logged and counted; `/status` `authority` and the authority metrics. The
//! authority's failover timing (Patroni's `ttl` + `loop_wait`) is compared with the cluster's
//! primary listeners' `queue_timeout` ([`short_queues`]) and a shortfall warned about.

use std::time::Duration;

use serde::Serialize;
use tracing::{error, info, warn};

use super::{ClusterState, Supervisor};
use crate::config::{ClusterName, Config, ListenerConfig, RoleFilter};
use crate::control_plane::authority::{
    AuthorityReport, FailoverTiming, Reporter, Tasks, Timing, Verdict,
};
use crate::control_plane::checks::ProbeCommand;
use crate::control_plane::decision::{AuthorityInput, Gate, OperatorHold, Refusal};
use crate::metrics::Metrics;

/// The source tasks of every cluster with an authority.
pub(super) struct Authorities {
    tasks: Tasks,
}

impl Authorities {
    pub(super) fn new(out: Reporter, parent: tokio_util::sync::CancellationToken) -> Self {
        Authorities {
            tasks: Tasks::new(out, parent),
        }
    }
}

/// `/status` `clusters[].authority`.
#[derive(Debug, Clone, Serialize)]
pub struct AuthorityStatus {
    /// `patroni` (the key under `authority:`).
    pub kind: &'static str,
    /// The latest report came from the authority (false before the first one, and while it
    /// cannot be asked).
    pub reachable: bool,
    /// The backend the authority names as primary.
    pub leader: Option<String>,
    /// The authority announces a switchover in progress (its hold is in force until another
    /// primary passes the gate, or the announcement ends).
    pub hold: bool,
    pub on_authority_lost: &'static str,
    /// Why the authority routes no one now (no leader, unknown member, unreachable).
    pub last_error: Option<String>,
    /// The gate for the node the checks chose: `agrees`, `trust_checks`, `disagrees`,
    /// `no_leader`, `unknown_member`, `fail_closed`; absent when the checks chose none.
    pub gate: Option<&'static str>,
    /// The authority's failover timing (Patroni's dynamic configuration); `null` for an
    /// authority that has none (Sentinel) and before the first report.
    pub failover_timing: Option<TimingStatus>,
}

/// `/status` `clusters[].authority.failover_timing`.
#[derive(Debug, Clone, Serialize)]
pub struct TimingStatus {
    /// The key it is read from (`/<namespace>/<scope>/config`).
    pub key: Option<String>,
    pub ttl_s: Option<u64>,
    pub loop_wait_s: Option<u64>,
    pub retry_timeout_s: Option<u64>,
    /// `ttl` + `loop_wait`: how long Patroni may take to replace a dead leader.
    pub unplanned_failover_s: Option<u64>,
    /// Fields absent from the key (Patroni's defaults apply to them).
    pub defaulted: Vec<&'static str>,
    /// Why the timing is unknown (absent or unreadable key).
    pub error: Option<String>,
    /// Primary listeners whose `queue_timeout` is shorter than `unplanned_failover_s`.
    pub short_queue_timeout: Vec<ShortQueue>,
}

/// A primary listener that refuses its queued connections before an unplanned failover ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShortQueue {
    pub listener: String,
    pub queue_timeout_ms: u64,
}

/// The authority's timing as last reported, and what was last logged about it (a warning is
/// logged once per distinct timing and set of short listeners, not on every report).
#[derive(Debug, Default)]
pub(super) struct TimingState {
    timing: Option<Timing>,
    short: Vec<ShortQueue>,
    logged: Option<(Timing, Vec<ShortQueue>)>,
}

/// The primary listeners of `cluster` whose `queue_timeout` is shorter than `window`: a new
/// connection they queue when the primary dies is refused before the authority can have
/// promoted a replica (`queue_timeout` must exceed `ttl` + `loop_wait`, README).
pub(super) fn short_queues(
    listeners: &[ListenerConfig],
    cluster: &ClusterName,
    window: Duration,
) -> Vec<ShortQueue> {
    listeners
        .iter()
        .filter(|l| &l.cluster == cluster && l.role == RoleFilter::Primary)
        .filter(|l| l.queue_timeout < window)
        .map(|l| ShortQueue {
            listener: l.name.to_string(),
            queue_timeout_ms: l.queue_timeout.as_millis() as u64,
        })
        .collect()
}

impl Supervisor {
    /// Starts, restarts and stops source tasks after a config was applied; a cluster whose
    /// task (re)started, or that has no authority any more, forgets what it was told.
    pub(super) fn sync_authorities(&mut self, config: &Config) {
        let started = self.authorities.tasks.sync(config);
        for c in &mut self.clusters {
            if c.config.authority.is_none() || started.contains(&c.config.name) {
                c.memory.authority = AuthorityInput::default();
                c.timing = TimingState::default();
            }
        }
        for c in &mut self.clusters {
            judge_timing(c, &config.listeners);
        }
    }

    /// One report: into the cluster's memory, re-checks if asked, then a new decision.
    pub(super) fn on_authority(&mut self, report: AuthorityReport) {
        let Some(ci) = self.cluster_index(&report.cluster) else {
            return; // removed by a reload while the report travelled
        };
        let metrics = self.metrics.clone();
        let c = &mut self.clusters[ci];
        let Some(kind) = c.config.authority.as_ref().map(|a| a.kind()) else {
            return;
        };
        let name = c.config.name.clone();
        let count = |event: &str| {
            metrics
                .authority_events_total
                .with_label_values(&[name.as_str(), kind, event])
                .inc();
        };
        // A leader that is no longer a backend (a reload raced the report) names nothing.
        let verdict = match report.verdict {
            Verdict::Leader(b) if !c.backends.iter().any(|s| s.key.backend == b) => {
                Verdict::UnknownMember {
                    name: b.to_string(),
                }
            }
            v => v,
        };
        let input = &mut c.memory.authority;
        if input.verdict.as_ref() != Some(&verdict) {
            count(verdict.as_str());
            log_verdict(&c.config, kind, &verdict);
        }
        if report.hold && !input.announced {
            count("hold_started");
            input.hold = Some(OperatorHold {
                primary: c.memory.routed_primary.clone(),
            });
            info!(
                message = "The authority announced a switchover: new primary connections wait until another primary is confirmed by the checks and the authority.",
                cluster = %name,
                kind,
                primary = c.memory.routed_primary.as_ref().map_or("none", |p| p.as_str()),
            );
        } else if !report.hold && input.announced {
            count("hold_cleared");
            if input.hold.take().is_some() {
                info!(message = "The authority ended its switchover announcement: hold released.", cluster = %name, kind);
            }
        }
        let input = &mut c.memory.authority;
        input.announced = report.hold;
        input.verdict = Some(verdict);
        if report.timing.is_some() {
            c.timing.timing = report.timing;
            judge_timing(c, &self.listeners);
        }
        if report.recheck {
            count("recheck");
            for slot in &c.backends {
                slot.probe.send(ProbeCommand::CheckNow);
            }
        }
        self.reconcile(ci);
    }
}

/// What [`TimingState::judge`] found worth a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Judgement {
    /// These primary listeners queue for less than the failover window.
    Short(FailoverTiming, Vec<ShortQueue>),
    /// None is short; `fixed` when some were at the last judgement.
    Fine(FailoverTiming, bool),
    Unknown(String),
}

impl TimingState {
    /// Compares the timing with `cluster`'s primary listeners' `queue_timeout`; returns what to
    /// log when the outcome differs from the last one logged (so each distinct timing and set
    /// of short listeners is logged once), `None` when it does not or no timing is known yet.
    fn judge(&mut self, cluster: &ClusterName, listeners: &[ListenerConfig]) -> Option<Judgement> {
        let timing = self.timing.clone()?;
        let short = match &timing {
            Timing::Known(t) => short_queues(listeners, cluster, t.window()),
            Timing::Unknown { .. } => Vec::new(),
        };
        self.short = short.clone();
        let now = (timing, short);
        if self.logged.as_ref() == Some(&now) {
            return None;
        }
        let was_short = matches!(&self.logged, Some((_, s)) if !s.is_empty());
        self.logged = Some(now.clone());
        Some(match now {
            (Timing::Known(t), short) if !short.is_empty() => Judgement::Short(t, short),
            (Timing::Known(t), _) => Judgement::Fine(t, was_short),
            (Timing::Unknown { reason }, _) => Judgement::Unknown(reason),
        })
    }
}

/// Judges the cluster's authority timing against `listeners` and logs what changed: a
/// warning naming the listeners that are too short, an all-clear when none is any more, or
/// why the timing is unknown.
fn judge_timing(c: &mut ClusterState, listeners: &[ListenerConfig]) {
    let name = &c.config.name;
    match c.timing.judge(name, listeners) {
        None => {}
        Some(Judgement::Short(t, short)) => {
            let listeners: Vec<String> = short
                .iter()
                .map(|s| format!("{} ({} ms)", s.listener, s.queue_timeout_ms))
                .collect();
            warn!(
                message = "queue_timeout is shorter than Patroni's failover time (ttl + loop_wait): when the primary dies, new connections these listeners queue are refused before Patroni promotes a replica. Raise queue_timeout above it.",
                cluster = %name,
                key = %t.key,
                ttl_s = t.ttl.as_secs(),
                loop_wait_s = t.loop_wait.as_secs(),
                unplanned_failover_s = t.window().as_secs(),
                listeners = ?listeners,
            );
        }
        Some(Judgement::Fine(t, fixed)) => {
            let message = if fixed {
                "Every primary listener's queue_timeout now exceeds Patroni's failover time (ttl + loop_wait)."
            } else {
                "Patroni's failover timing read."
            };
            info!(
                message,
                cluster = %name,
                key = %t.key,
                ttl_s = t.ttl.as_secs(),
                loop_wait_s = t.loop_wait.as_secs(),
                retry_timeout_s = t.retry_timeout.as_secs(),
                defaulted = ?t.defaulted,
            );
        }
        Some(Judgement::Unknown(reason)) => warn!(
            message = "Patroni's failover timing is unknown: primary listeners' queue_timeout cannot be compared with it (routing is not affected).",
            cluster = %name,
            %reason,
        ),
    }
}

fn timing_status(state: &TimingState) -> Option<TimingStatus> {
    let (known, error): (Option<&FailoverTiming>, _) = match state.timing.as_ref()? {
        Timing::Known(t) => (Some(t), None),
        Timing::Unknown { reason } => (None, Some(reason.clone())),
    };
    Some(TimingStatus {
        key: known.map(|t| t.key.clone()),
        ttl_s: known.map(|t| t.ttl.as_secs()),
        loop_wait_s: known.map(|t| t.loop_wait.as_secs()),
        retry_timeout_s: known.map(|t| t.retry_timeout.as_secs()),
        unplanned_failover_s: known.map(|t| t.window().as_secs()),
        defaulted: known.map(|t| t.defaulted.clone()).unwrap_or_default(),
        error,
        short_queue_timeout: state.short.clone(),
    })
}

fn log_verdict(cluster: &crate::config::ClusterConfig, kind: &str, verdict: &Verdict) {
    let name = &cluster.name;
    let on_lost = cluster.on_authority_lost.as_str();
    match verdict {
        Verdict::Leader(b) => {
            info!(message = "The authority names the primary.", cluster = %name, kind, leader = %b)
        }
        Verdict::NoLeader { reason } => {
            warn!(message = "The authority names no primary: primary routes are held.", cluster = %name, kind, %reason)
        }
        Verdict::UnknownMember { name: member } => error!(
            message = "The authority names a member that no backend stands for: NOT routed. Set patroni_member on the backend, or fix the cluster.",
            cluster = %name,
            kind,
            member = %member,
        ),
        Verdict::Unreachable { reason } => warn!(
            message = "The authority is out of reach: on_authority_lost applies.",
            cluster = %name,
            kind,
            on_authority_lost = on_lost,
            %reason,
        ),
    }
}

/// After a decision: logs and counts the gate turning to refuse a node the checks confirm.
pub(super) fn gate_changed(metrics: &Metrics, c: &ClusterState, before: Option<Gate>) {
    let after = c.memory.authority.gate;
    if after == before {
        return;
    }
    let (Some(authority), Some(Gate::Refused(Refusal::Disagrees))) = (&c.config.authority, after)
    else {
        return;
    };
    metrics
        .authority_events_total
        .with_label_values(&[c.config.name.as_str(), authority.kind(), "disagrees"])
        .inc();
    let leader = match &c.memory.authority.verdict {
        Some(Verdict::Leader(b)) => b.to_string(),
        _ => String::new(),
    };
    let checks: Vec<&str> = c
        .backends
        .iter()
        .filter(|b| b.machine.claims_primary())
        .map(|b| b.key.backend.as_str())
        .collect();
    error!(
        message = "The authority and rolegate's checks disagree on the primary: NOT routed until they agree.",
        cluster = %c.config.name,
        kind = authority.kind(),
        authority_leader = %leader,
        checks_primary = ?checks,
    );
}

/// `/status` `authority` of one cluster.
pub(super) fn status(c: &ClusterState) -> Option<AuthorityStatus> {
    let authority = c.config.authority.as_ref()?;
    let input = &c.memory.authority;
    let verdict = input.verdict.as_ref();
    Some(AuthorityStatus {
        kind: authority.kind(),
        reachable: verdict.is_some_and(|v| !matches!(v, Verdict::Unreachable { .. })),
        leader: match verdict {
            Some(Verdict::Leader(b)) => Some(b.to_string()),
            _ => None,
        },
        hold: input.announced,
        on_authority_lost: c.config.on_authority_lost.as_str(),
        last_error: match verdict {
            None => Some("no report from the authority yet".to_string()),
            Some(v) => v.error(),
        },
        gate: input.gate.map(Gate::as_str),
        failover_timing: timing_status(&c.timing),
    })
}

/// `rolegate_authority_up` and `rolegate_authority_agrees` of one cluster.
pub(super) fn export(metrics: &Metrics, c: &ClusterState) {
    let Some(s) = status(c) else { return };
    let name = c.config.name.as_str();
    metrics
        .authority_up
        .with_label_values(&[name, s.kind])
        .set(i64::from(s.reachable));
    metrics
        .authority_agrees
        .with_label_values(&[name])
        .set(i64::from(c.memory.authority.gate == Some(Gate::Agrees)));
}

/// The sources' reporter: their reports become [`Command::Authority`] in the supervisor's queue
/// (a forwarding task, so the sources do not name the supervisor's command type). Reports are
/// rare (a leader change, a hold), so one hop more costs nothing.
pub(super) fn reporter(commands: tokio::sync::mpsc::Sender<super::Command>) -> Reporter {
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(report) = rx.recv().await {
            if commands
                .send(super::Command::Authority(report))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    Reporter::new(tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listeners(text: &str) -> Vec<ListenerConfig> {
        let yaml = format!(
            "clusters:\n  - name: pg\n    protocol: postgres\n    check: {{ user: m }}\n    backends:\n      - {{ name: a, address: 127.0.0.1:1 }}\n  - name: other\n    protocol: postgres\n    check: {{ user: m }}\n    backends:\n      - {{ name: b, address: 127.0.0.1:2 }}\nlisteners:\n{text}"
        );
        Config::from_yaml_str(&yaml, None).expect("valid").listeners
    }

    #[test]
    fn only_the_clusters_primary_listeners_below_the_window_are_short() {
        let ls = listeners(concat!(
            "  - { name: rw, bind: 127.0.0.1:0, cluster: pg, role: primary }\n",
            "  - { name: rw-long, bind: 127.0.0.1:0, cluster: pg, role: primary, queue_timeout: 15s }\n",
            "  - { name: rw-equal, bind: 127.0.0.1:0, cluster: pg, role: primary, queue_timeout: 11s }\n",
            "  - { name: rw-now, bind: 127.0.0.1:0, cluster: pg, role: primary, queue_timeout: 0s }\n",
            "  - { name: ro, bind: 127.0.0.1:0, cluster: pg, role: replica, queue_timeout: 1s }\n",
            "  - { name: any, bind: 127.0.0.1:0, cluster: pg, role: any, queue_timeout: 1s }\n",
            "  - { name: elsewhere, bind: 127.0.0.1:0, cluster: other, role: primary, queue_timeout: 1s }\n",
        ));
        let pg: ClusterName = "pg".into();
        let short = short_queues(&ls, &pg, Duration::from_secs(11));
        let default_ms = ls[0].queue_timeout.as_millis() as u64;
        assert!(
            default_ms < 11_000,
            "the default queue_timeout is {default_ms} ms"
        );
        assert_eq!(
            short,
            vec![
                ShortQueue {
                    listener: "rw".into(),
                    queue_timeout_ms: default_ms
                },
                ShortQueue {
                    listener: "rw-now".into(),
                    queue_timeout_ms: 0
                },
            ]
        );
        // Patroni's defaults (30 s + 10 s): the 15 s listener is short too.
        let names: Vec<String> = short_queues(&ls, &pg, Duration::from_secs(40))
            .into_iter()
            .map(|s| s.listener)
            .collect();
        assert_eq!(names, ["rw", "rw-long", "rw-equal", "rw-now"]);
        assert!(short_queues(&ls, &pg, Duration::ZERO).is_empty());
    }

    #[test]
    fn the_timing_status_shows_the_values_or_why_they_are_unknown() {
        let mut state = TimingState::default();
        assert!(timing_status(&state).is_none());
        state.timing = Some(Timing::Known(FailoverTiming {
            key: "/service/batman/config".into(),
            ttl: Duration::from_secs(10),
            loop_wait: Duration::from_secs(1),
            retry_timeout: Duration::from_secs(5),
            defaulted: vec![],
        }));
        let s = timing_status(&state).expect("status");
        assert_eq!(
            (
                s.ttl_s,
                s.loop_wait_s,
                s.retry_timeout_s,
                s.unplanned_failover_s
            ),
            (Some(10), Some(1), Some(5), Some(11))
        );
        assert_eq!(s.error, None);
        state.timing = Some(Timing::Unknown {
            reason: "Patroni's configuration key /service/batman/config: absent".into(),
        });
        let s = timing_status(&state).expect("status");
        assert_eq!(s.ttl_s, None);
        assert!(s.error.expect("error").contains("/service/batman/config"));
    }

    #[test]
    fn a_short_queue_timeout_is_judged_once_and_again_when_anything_changes() {
        let pg: ClusterName = "pg".into();
        let short = listeners(
            "  - { name: rw, bind: 127.0.0.1:0, cluster: pg, role: primary, queue_timeout: 5s }\n",
        );
        let shorter = listeners(
            "  - { name: rw, bind: 127.0.0.1:0, cluster: pg, role: primary, queue_timeout: 4s }\n",
        );
        let long = listeners(
            "  - { name: rw, bind: 127.0.0.1:0, cluster: pg, role: primary, queue_timeout: 20s }\n",
        );
        let known = |ttl: u64| {
            Timing::Known(FailoverTiming {
                key: "/service/batman/config".into(),
                ttl: Duration::from_secs(ttl),
                loop_wait: Duration::from_secs(1),
                retry_timeout: Duration::from_secs(5),
                defaulted: vec![],
            })
        };
        let mut state = TimingState::default();
        assert_eq!(state.judge(&pg, &short), None, "nothing reported yet");
        state.timing = Some(known(10));
        assert!(matches!(state.judge(&pg, &short), Some(Judgement::Short(_, s)) if s.len() == 1));
        assert_eq!(state.judge(&pg, &short), None, "warned once");
        assert_eq!(state.short.len(), 1, "still shown in /status");
        // A reload that shortens it again: warned again.
        assert!(matches!(
            state.judge(&pg, &shorter),
            Some(Judgement::Short(..))
        ));
        // Patroni's values change (patronictl edit-config): warned again.
        state.timing = Some(known(12));
        assert!(
            matches!(state.judge(&pg, &shorter), Some(Judgement::Short(t, _)) if t.ttl.as_secs() == 12)
        );
        // Fixed by a reload: an all-clear, then silence; /status shows none.
        assert!(matches!(
            state.judge(&pg, &long),
            Some(Judgement::Fine(_, true))
        ));
        assert_eq!(state.judge(&pg, &long), None);
        assert!(state.short.is_empty());
        // A key that turns to garbage is said once, and short listeners are no longer claimed.
        state.timing = Some(Timing::Unknown { reason: "r".into() });
        assert_eq!(
            state.judge(&pg, &short),
            Some(Judgement::Unknown("r".into()))
        );
        assert_eq!(state.judge(&pg, &short), None);
        assert!(state.short.is_empty());
        // Long from the start: one informational line.
        let mut state = TimingState {
            timing: Some(known(10)),
            ..Default::default()
        };
        assert!(matches!(
            state.judge(&pg, &long),
            Some(Judgement::Fine(_, false))
        ));
    }
}
