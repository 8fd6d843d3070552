//! The supervisor's interface: the commands it takes and the handle the rest of the process
//! (admin API, fleet, app) sends them through. The supervisor itself (state, loop) is in mod.rs.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};

use super::{FleetDecision, FleetHold, HoldChange, HoldStatus, PublishedSet, StatusSnapshot};
use crate::config::{ClusterName, Config};
use crate::routing::BackendKey;

/// An operator action on one backend (admin API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAction {
    Drain,
    Disable,
    Enable,
}

/// Why an admin action was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdminError {
    #[error("no backend {0}")]
    UnknownBackend(BackendKey),
    #[error("no cluster {0:?}")]
    UnknownCluster(ClusterName),
    #[error("cluster {0:?} is a tcp cluster: it has no primary to hold")]
    NoRoles(ClusterName),
    #[error("the supervisor is not running")]
    Stopped,
}

/// Requests to the supervisor.
pub enum Command {
    Admin {
        backend: BackendKey,
        action: AdminAction,
        reply: oneshot::Sender<Result<(), AdminError>>,
    },
    /// Holds a cluster's primary routes for at most `timeout` (planned switchover).
    Hold {
        cluster: ClusterName,
        timeout: Duration,
        reply: oneshot::Sender<Result<HoldStatus, AdminError>>,
    },
    /// Ends a cluster's hold; replies whether one was in force.
    Release {
        cluster: ClusterName,
        reply: oneshot::Sender<Result<bool, AdminError>>,
    },
    /// A decision published by the fleet's leader for one cluster (fleet mode, follower).
    /// Replies with why it was refused (unknown cluster or backend).
    Fleet {
        cluster: ClusterName,
        decision: Box<FleetDecision>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Fleet mode: this instance took (true) or does not hold (false) an observer slot.
    Observing(bool),
    /// Fleet mode, `on_lost: fail_closed`: while true, primary routes of followed clusters
    /// are unavailable (new connections queue, then are refused); replica routes stay.
    FleetClosed(bool),
    /// Fleet mode: an operator action another instance wrote to etcd.
    FleetAdmin {
        backend: BackendKey,
        action: AdminAction,
        by: String,
        at_ms: u64,
    },
    /// Fleet mode: a hold another instance took (`Some`) or the fleet released (`None`).
    /// Replies with why it was refused (unknown cluster or backend).
    FleetHold {
        cluster: ClusterName,
        hold: Option<FleetHold>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Fleet mode: the etcd session's state, for `/status`.
    FleetLink { connected: bool, leader: bool },
    /// What a cluster's authority (Patroni, Sentinel) says now (`control_plane/authority/`).
    Authority(crate::control_plane::authority::AuthorityReport),
    /// Applies a new, already validated config (reload). Replies when the table is stored.
    Apply {
        config: Arc<Config>,
        reply: oneshot::Sender<()>,
    },
}

/// What the rest of the process holds to talk to the supervisor.
#[derive(Clone)]
pub struct SupervisorHandle {
    pub(super) commands: mpsc::Sender<Command>,
    /// Sessions send a backend here when they could not connect to it: it is checked now.
    pub recheck: mpsc::Sender<BackendKey>,
    pub status: Arc<ArcSwap<StatusSnapshot>>,
    /// Each cluster's local decision, for fleet mode's publisher.
    pub published: tokio::sync::watch::Receiver<PublishedSet>,
    /// Fleet mode: backends a session could not connect to while this instance follows
    /// (its own probes are paused), for the fleet task to report to the observers.
    pub unreachable: tokio::sync::broadcast::Sender<BackendKey>,
    /// Fleet mode: operator actions taken on this instance, for the fleet task to write to
    /// etcd so that every instance applies them.
    pub admin_out: tokio::sync::broadcast::Sender<(BackendKey, AdminAction)>,
    /// Fleet mode: holds taken, released or ended on this instance, for the fleet task.
    pub hold_out: tokio::sync::broadcast::Sender<HoldChange>,
}

impl SupervisorHandle {
    /// Applies a hold the fleet carries (see [`Command::FleetHold`]).
    pub async fn fleet_hold(
        &self,
        cluster: ClusterName,
        hold: Option<FleetHold>,
    ) -> Result<Result<(), String>, AdminError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::FleetHold {
                cluster,
                hold,
                reply,
            })
            .await
            .map_err(|_| AdminError::Stopped)?;
        rx.await.map_err(|_| AdminError::Stopped)
    }

    /// Applies an operator action another instance of the fleet took.
    pub async fn fleet_admin(
        &self,
        backend: BackendKey,
        action: AdminAction,
        by: String,
        at_ms: u64,
    ) -> Result<(), AdminError> {
        self.commands
            .send(Command::FleetAdmin {
                backend,
                action,
                by,
                at_ms,
            })
            .await
            .map_err(|_| AdminError::Stopped)
    }

    /// Feeds a fleet decision into the decision step (see [`Command::Fleet`]).
    pub async fn fleet_decision(
        &self,
        cluster: ClusterName,
        decision: FleetDecision,
    ) -> Result<Result<(), String>, AdminError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Fleet {
                cluster,
                decision: Box::new(decision),
                reply,
            })
            .await
            .map_err(|_| AdminError::Stopped)?;
        rx.await.map_err(|_| AdminError::Stopped)
    }

    /// Starts or pauses the checks (fleet mode: observer slot taken or not).
    pub async fn set_observing(&self, observing: bool) -> Result<(), AdminError> {
        self.commands
            .send(Command::Observing(observing))
            .await
            .map_err(|_| AdminError::Stopped)
    }

    /// `on_lost: fail_closed` in force (true) or lifted (false).
    pub async fn fleet_closed(&self, closed: bool) -> Result<(), AdminError> {
        self.commands
            .send(Command::FleetClosed(closed))
            .await
            .map_err(|_| AdminError::Stopped)
    }

    /// Reports the etcd session's state (connected, leading) for `/status`.
    pub async fn fleet_link(&self, connected: bool, leader: bool) -> Result<(), AdminError> {
        self.commands
            .send(Command::FleetLink { connected, leader })
            .await
            .map_err(|_| AdminError::Stopped)
    }

    pub async fn admin(&self, backend: BackendKey, action: AdminAction) -> Result<(), AdminError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Admin {
                backend,
                action,
                reply,
            })
            .await
            .map_err(|_| AdminError::Stopped)?;
        rx.await.map_err(|_| AdminError::Stopped)?
    }

    /// Holds `cluster`'s new primary connections until another primary is confirmed, a
    /// release, or `timeout` (capped at [`MAX_HOLD`]).
    pub async fn hold(
        &self,
        cluster: ClusterName,
        timeout: Duration,
    ) -> Result<HoldStatus, AdminError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Hold {
                cluster,
                timeout,
                reply,
            })
            .await
            .map_err(|_| AdminError::Stopped)?;
        rx.await.map_err(|_| AdminError::Stopped)?
    }

    /// Ends `cluster`'s hold; `Ok(false)` when none was in force.
    pub async fn release(&self, cluster: ClusterName) -> Result<bool, AdminError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Release { cluster, reply })
            .await
            .map_err(|_| AdminError::Stopped)?;
        rx.await.map_err(|_| AdminError::Stopped)?
    }

    /// Applies a validated config; returns once the new routing table is stored.
    pub async fn apply(&self, config: Arc<Config>) -> Result<(), AdminError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Apply { config, reply })
            .await
            .map_err(|_| AdminError::Stopped)?;
        rx.await.map_err(|_| AdminError::Stopped)
    }
}
