//! The descriptor plan of the running config: how `RLIMIT_NOFILE` is shared out between the
//! control plane, the listening sockets and the sessions (`data_plane::fd_budget`), measured
//! once at start and reshaped by every reload.

use tracing::info;

use super::{App, StartError};
use crate::config::Config;
use crate::data_plane::fd_budget::{self, Plan, Shape};

/// Measures the limit and what is open now and shares it out; `None` (no budget, only `EMFILE`
/// back-off) when either cannot be read.
///
/// # Errors
/// The limit leaves no room for a single session.
pub(super) fn plan(config: &Config, workers: usize) -> Result<Option<Plan>, StartError> {
    let measured = fd_budget::nofile().and_then(|n| Ok((n, fd_budget::open_now()?)));
    let (nofile, open) = match measured {
        Ok(m) => m,
        Err(error) => {
            tracing::warn!(message = "Cannot measure descriptors; no session budget, only EMFILE back-off.", %error);
            return Ok(None);
        }
    };
    let plan = Plan::new(nofile, open, shape(config, workers));
    check(plan)?;
    Ok(Some(plan))
}

impl App {
    /// The descriptor plan for `new` with the limit and baseline measured at start-up:
    /// `(old, new)` plans, or `None` when there is no budget (no `/proc`).
    ///
    /// # Errors
    /// `new` leaves no room for a single session.
    pub(super) fn replan_descriptors(
        &self,
        new: &Config,
    ) -> Result<Option<(Plan, Plan)>, StartError> {
        let Some(old) = *self.fd_plan.lock().unwrap_or_else(|p| p.into_inner()) else {
            return Ok(None);
        };
        let plan = old.reshaped(shape(new, self.workers.handles().len()));
        check(plan)?;
        Ok(Some((old, plan)))
    }

    /// Makes `plan` the budget in force: the session permits change in place (permits held
    /// by open sessions and pipes stay counted) and the plan is published.
    pub(super) fn take_fd_plan(&self, (old, new): (Plan, Plan), config: &Config, before: &Config) {
        super::reload::resize(&self.descriptors, old.sessions, new.sessions);
        *self.fd_plan.lock().unwrap_or_else(|p| p.into_inner()) = Some(new);
        self.publish_fd_plan(Some(new), config, Some((old, before)));
    }

    /// Publishes a plan: the capacity gauge. Logs it, and warns when the
    /// `max_connections` written in the file add up to more than it allows, at start and when
    /// either changes (not on every reload).
    pub(super) fn publish_fd_plan(
        &self,
        plan: Option<Plan>,
        config: &Config,
        before: Option<(Plan, &Config)>,
    ) {
        let Some(plan) = plan else {
            return;
        };
        self.metrics
            .session_fd_capacity
            .set(i64::try_from(plan.sessions).unwrap_or(i64::MAX));
        let configured = explicit_max_connections(config);
        if let Some((old, old_config)) = before {
            if old == plan && explicit_max_connections(old_config) == configured {
                return;
            }
        }
        info!(
            message = "Descriptor budget.",
            nofile = plan.nofile,
            open = plan.baseline,
            reserved = plan.reserved,
            sessions = plan.sessions
        );
        if configured > plan.sessions {
            tracing::warn!(
                message = "RLIMIT_NOFILE allows fewer sessions than the listeners' max_connections; beyond it clients wait in the backlog. Raise LimitNOFILE (systemd) or ulimit -n.",
                nofile = plan.nofile,
                sessions = plan.sessions,
                max_connections_total = configured
            );
        }
    }
}

/// The sum of the `max_connections` written in the file (defaults yield to the limit).
fn explicit_max_connections(config: &Config) -> usize {
    config
        .listeners
        .iter()
        .filter(|l| l.max_connections_set)
        .map(|l| l.max_connections)
        .sum()
}

/// The configuration's shape, as the descriptor plan sees it.
fn shape(config: &Config, workers: usize) -> Shape {
    Shape {
        backends: config.clusters.iter().map(|c| c.backends.len()).sum(),
        listeners: config.listeners.len(),
        workers,
    }
}

/// A plan that leaves no room for one session is refused.
fn check(plan: Plan) -> Result<(), StartError> {
    if plan.sessions == 0 {
        return Err(StartError::Descriptors {
            nofile: plan.nofile,
            needed: plan.minimum_nofile(),
        });
    }
    Ok(())
}
