//! Authorities' meeting point with the supervisor (`control_plane/authority/`): the source
//! tasks, kept in step with the config; each [`AuthorityReport`] into the cluster's memory
//! (`ClusterMemory::authority`), where the pure decision weighs it (policy 7); the gate's
//! changes logged and counted; `/status` `authority` and the authority metrics.

use serde::Serialize;
use tracing::{error, info, warn};

use super::{ClusterState, Supervisor};
use crate::config::Config;
use crate::control_plane::authority::{AuthorityReport, Reporter, Tasks, Verdict};
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
}

impl Supervisor {
    /// Starts, restarts and stops source tasks after a config was applied; a cluster whose
    /// task (re)started, or that has no authority any more, forgets what it was told.
    pub(super) fn sync_authorities(&mut self, config: &Config) {
        let started = self.authorities.tasks.sync(config);
        for c in &mut self.clusters {
            if c.config.authority.is_none() || started.contains(&c.config.name) {
                c.memory.authority = AuthorityInput::default();
            }
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
        if report.recheck {
            count("recheck");
            for slot in &c.backends {
                slot.probe.send(ProbeCommand::CheckNow);
            }
        }
        self.reconcile(ci);
    }
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
