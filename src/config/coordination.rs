//! `coordination:` — fleet mode (README, "Fleet mode"). Absent means standalone: every
//! instance checks the databases itself, exactly as before.

use std::path::PathBuf;
use std::time::Duration;

use super::Secret;

/// What this instance does in the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetMode {
    /// Takes one of `observers` slots if one is free, else follows.
    Auto,
    /// Always checks the databases (and may lead).
    Observer,
    /// Never checks; routes by the leader's decisions.
    Follower,
}

impl FleetMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FleetMode::Auto => "auto",
            FleetMode::Observer => "observer",
            FleetMode::Follower => "follower",
        }
    }
}

/// What a follower does while it cannot reach etcd for longer than `lease_ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnLost {
    /// Start its own checks and route standalone until etcd is back.
    Local,
    /// Keep routing by the last decision received.
    LastKnown,
    /// Hold new connections to primary listeners; keep replica listeners.
    FailClosed,
}

impl OnLost {
    pub fn as_str(self) -> &'static str {
        match self {
            OnLost::Local => "local",
            OnLost::LastKnown => "last_known",
            OnLost::FailClosed => "fail_closed",
        }
    }
}

/// Client TLS towards etcd; paths already resolved against the config file's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EtcdConfig {
    /// `http://host:port` or `https://host:port`, at least one.
    pub endpoints: Vec<String>,
    pub tls: Option<EtcdTls>,
    pub user: Option<String>,
    pub password: Option<Secret>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CoordinationConfig {
    pub etcd: EtcdConfig,
    /// Every key rolegate writes lives under it; no trailing slash.
    pub prefix: String,
    /// Unique name of this instance in the fleet (default: the host name).
    pub instance: String,
    pub mode: FleetMode,
    /// `auto`: at most this many instances check the databases.
    pub observers: u32,
    pub lease_ttl: Duration,
    pub on_lost: OnLost,
}
