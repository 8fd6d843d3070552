//! The rolegate config the importer writes: only the keys it can fill, each optional value
//! with the comment that says where it came from (`inter 3s`, line 12).

use std::time::Duration;

/// A value and why it is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Noted<T> {
    pub value: T,
    pub comment: String,
}

pub(super) fn noted<T>(value: T, comment: impl Into<String>) -> Noted<T> {
    Noted {
        value,
        comment: comment.into(),
    }
}

/// The config's own types: what the importer writes is what the config parser reads.
pub(super) use crate::config::{Protocol, RoleFilter as Role};

/// `check:` of a cluster.
#[derive(Debug, Clone, Default)]
pub(super) struct Check {
    pub user: Option<Noted<String>>,
    pub password_env: Option<Noted<String>>,
    pub interval: Option<Noted<Duration>>,
    pub down_interval: Option<Noted<Duration>>,
    pub timeout: Option<Noted<Duration>>,
    pub rise: Option<Noted<u32>>,
    pub fall: Option<Noted<u32>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Backend {
    pub name: String,
    pub address: String,
    pub comment: String,
}

/// The cluster-level keys; two HAProxy proxies over the same servers share one cluster only
/// when these agree.
#[derive(Debug, Clone)]
pub(super) struct ClusterSettings {
    pub protocol: Protocol,
    pub check: Check,
    pub connect_timeout: Option<Noted<Duration>>,
    pub idle_timeout: Option<Noted<Duration>>,
    pub retries: Option<Noted<u32>>,
    pub on_demote: Option<Noted<&'static str>>,
}

impl ClusterSettings {
    /// Whether the values agree, whatever their comments say (two `listen` sections write
    /// the same `inter 3s` on different lines).
    pub fn same_values(&self, other: &Self) -> bool {
        self.shape() == other.shape()
    }

    #[allow(clippy::type_complexity)]
    fn shape(
        &self,
    ) -> (
        Protocol,
        [Option<Duration>; 5],
        [Option<u32>; 3],
        [Option<&str>; 3],
    ) {
        fn v<T: Copy>(n: &Option<Noted<T>>) -> Option<T> {
            n.as_ref().map(|n| n.value)
        }
        fn s(n: &Option<Noted<String>>) -> Option<&str> {
            n.as_ref().map(|n| n.value.as_str())
        }
        let c = &self.check;
        (
            self.protocol,
            [
                v(&c.interval),
                v(&c.down_interval),
                v(&c.timeout),
                v(&self.connect_timeout),
                v(&self.idle_timeout),
            ],
            [v(&c.rise), v(&c.fall), v(&self.retries)],
            [s(&c.user), s(&c.password_env), v(&self.on_demote)],
        )
    }
}

#[derive(Debug, Clone)]
pub(super) struct Cluster {
    pub name: String,
    /// Comment lines above the entry (where it came from, what differs from HAProxy).
    pub comments: Vec<String>,
    pub settings: ClusterSettings,
    pub backends: Vec<Backend>,
}

#[derive(Debug, Clone)]
pub(super) struct Listener {
    pub name: String,
    pub comments: Vec<String>,
    pub bind: Noted<String>,
    pub cluster: String,
    pub role: Noted<Role>,
    pub fallback: Option<Noted<Role>>,
    pub balance: Option<Noted<&'static str>>,
    pub max_connections: Option<Noted<u64>>,
    pub backlog: Option<Noted<u32>>,
}

/// An environment variable the operator must set before the config loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Placeholder {
    pub env: String,
    pub what: String,
}

#[derive(Debug, Clone, Default)]
pub(super) struct Model {
    pub workers: Option<Noted<u32>>,
    pub clusters: Vec<Cluster>,
    pub listeners: Vec<Listener>,
    pub placeholders: Vec<Placeholder>,
}
