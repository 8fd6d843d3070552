//! A cluster's `authority:` — an outside system that owns the cluster's roles (Patroni,
//! Sentinel) and must agree before a node is routed as primary (README, "Authorities").
//! Absent means rolegate's own checks decide alone, exactly as before.

use super::{EtcdConfig, SentinelConfig};

/// The orchestrator a cluster takes its truth from; exactly one per cluster. Each variant is
/// one source in `control_plane/authority/` (the dispatcher matches on it).
#[derive(Debug, Clone, PartialEq)]
pub enum Authority {
    /// Patroni's leader key in its etcd (v3) DCS.
    Patroni(PatroniConfig),
    /// The master a majority of Redis Sentinels names.
    Sentinel(SentinelConfig),
}

impl Authority {
    /// The config key naming it, also the `kind` of `/status` and the metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Authority::Patroni(_) => "patroni",
            Authority::Sentinel(_) => "sentinel",
        }
    }
}

/// `authority.patroni`: where Patroni keeps its cluster state.
#[derive(Debug, Clone, PartialEq)]
pub struct PatroniConfig {
    /// The etcd cluster Patroni uses as its DCS (same shape as `coordination.etcd`).
    pub etcd: EtcdConfig,
    /// Patroni's `namespace`, normalised as Patroni does: one leading slash, no trailing one
    /// (`/service` by default; `/` becomes the empty string).
    pub namespace: String,
    /// Patroni's `scope` (the cluster name in its config).
    pub scope: String,
}

impl PatroniConfig {
    /// `/<namespace>/<scope>`: every key of this Patroni cluster lives under it.
    pub fn base(&self) -> String {
        format!("{}/{}", self.namespace, self.scope)
    }

    /// The leader key: its value is the member name of the leader.
    pub fn leader_key(&self) -> String {
        format!("{}/leader", self.base())
    }

    /// The failover key: a switchover (`patronictl switchover`) is in progress while it names
    /// a leader or a candidate.
    pub fn failover_key(&self) -> String {
        format!("{}/failover", self.base())
    }

    /// The dynamic configuration key (`patronictl edit-config`): JSON with `ttl`, `loop_wait`,
    /// `retry_timeout` and the PostgreSQL settings Patroni applies to every member.
    pub fn config_key(&self) -> String {
        format!("{}/config", self.base())
    }
}

/// What a cluster with an authority does while the authority cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnAuthorityLost {
    /// Route by rolegate's own checks alone until the authority answers again (default).
    #[default]
    TrustChecks,
    /// Hold new primary connections (queue, then refuse); replica routes stay.
    FailClosed,
}

impl OnAuthorityLost {
    pub fn as_str(self) -> &'static str {
        match self {
            OnAuthorityLost::TrustChecks => "trust_checks",
            OnAuthorityLost::FailClosed => "fail_closed",
        }
    }
}
