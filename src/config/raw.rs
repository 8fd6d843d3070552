//! The config file exactly as written: serde types mirroring CONFIG.md key for key.
//!
//! Every struct denies unknown keys (a typo must not silently become a default), and every
//! key is optional here: durations, addresses and names stay strings, so that one pass of
//! validation can report *all* missing and malformed values with their positions instead of
//! serde stopping at the first one. Enums are closed sets, so serde checks them directly.
//!
//! Keys beyond CONFIG.md (extensions) are marked "Extension" below.

use serde::Deserialize;

use super::authority::OnAuthorityLost;
use super::coordination::{FleetMode, OnLost};
use super::{
    Balance, LogFormat, OnDemote, Protocol, ProxyVersion, RoleFilter, SplitBrainPolicy, TlsMode,
    TransferMode,
};

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub admin: Option<RawAdmin>,
    pub log: Option<RawLog>,
    /// Extension: how long SIGTERM/SIGINT waits for sessions to finish before closing them
    /// (default `30s`; `0s` closes at once).
    pub shutdown_grace: Option<String>,
    /// Extension: data-plane threads, each with its own event loop and listening socket per
    /// listener (default: one per CPU available to the process).
    pub workers: Option<usize>,
    pub defaults: Option<RawDefaults>,
    #[serde(default)]
    pub clusters: Vec<RawCluster>,
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    /// Extension: fleet mode through etcd (README, "Fleet mode"); absent means standalone.
    pub coordination: Option<RawCoordination>,
}

/// `coordination:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCoordination {
    pub etcd: Option<RawEtcd>,
    pub prefix: Option<String>,
    pub instance: Option<String>,
    pub mode: Option<RawFleetMode>,
    pub observers: Option<u32>,
    pub lease_ttl: Option<String>,
    pub on_lost: Option<RawOnLost>,
}

/// `coordination.etcd:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEtcd {
    #[serde(default)]
    pub endpoints: Vec<String>,
    pub tls: Option<RawEtcdTls>,
    pub user: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
}

/// `coordination.etcd.tls:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEtcdTls {
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

/// `admin:`; omitted entirely means `listen: 127.0.0.1:9813` without a token.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    /// Extension: `false` runs no admin server at all (default `true`).
    pub enabled: Option<bool>,
    pub listen: Option<String>,
    pub token_file: Option<String>,
    /// Extension: name of an environment variable holding the token (containers often inject
    /// secrets that way); an alternative to `token_file`.
    pub token_env: Option<String>,
}

/// `log:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    pub format: Option<RawLogFormat>,
    pub level: Option<String>,
    /// Extension: level of the one line logged per closed session (default `info`); `debug`
    /// quiets busy proxies without hiding role changes.
    pub session_level: Option<RawSessionLevel>,
}

/// `defaults:` — what every cluster inherits unless it sets the key itself.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDefaults {
    /// `user` and the password keys are accepted here too (one monitoring account for many
    /// clusters is common); `database` is not, it is per PostgreSQL cluster.
    pub check: Option<RawCheck>,
    pub connect_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub retries: Option<u32>,
    pub max_replica_lag: Option<String>,
    pub split_brain: Option<RawSplitBrain>,
    pub on_demote: Option<RawOnDemote>,
}

/// `check:` of a cluster (or of `defaults`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCheck {
    pub interval: Option<String>,
    /// Extension: interval while a backend is down or the cluster has no primary, so that a
    /// returning or newly promoted node is noticed fast (default `min(interval, 100ms)`).
    pub down_interval: Option<String>,
    pub timeout: Option<String>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    pub database: Option<String>,
    /// Extension: TLS of the check's session, with libpq's `sslmode` names: `disable` (default),
    /// `require` (encrypted, certificate not verified: open to a man in the middle),
    /// `verify-ca` (chain verified, name not), `verify-full` (chain and name verified).
    pub tls: Option<RawTlsMode>,
    /// Extension: PEM file of the CA certificates that verify the backends' certificates
    /// (default: the system's trust store). Relative paths start at the config file's directory.
    pub tls_ca_file: Option<String>,
    /// Extension: the name a backend's certificate must hold under `verify-full`, for backends
    /// written as IP addresses (default: the host of the backend's address). Per cluster only.
    pub tls_server_name: Option<String>,
}

/// `check.tls`: kebab-case like libpq's `sslmode`, so `verify-full` reads the same in both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum RawTlsMode {
    Disable,
    Require,
    VerifyCa,
    VerifyFull,
}

impl From<RawTlsMode> for TlsMode {
    fn from(raw: RawTlsMode) -> Self {
        match raw {
            RawTlsMode::Disable => TlsMode::Disable,
            RawTlsMode::Require => TlsMode::Require,
            RawTlsMode::VerifyCa => TlsMode::VerifyCa,
            RawTlsMode::VerifyFull => TlsMode::VerifyFull,
        }
    }
}

/// One entry of `clusters:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    pub name: Option<String>,
    pub protocol: Option<RawProtocol>,
    pub check: Option<RawCheck>,
    pub max_replica_lag: Option<String>,
    pub split_brain: Option<RawSplitBrain>,
    pub on_demote: Option<RawOnDemote>,
    pub connect_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub retries: Option<u32>,
    #[serde(default)]
    pub backends: Vec<RawBackend>,
    /// Extension: an orchestrator that must agree before a node is routed as primary.
    pub authority: Option<RawAuthority>,
    /// Extension: `trust_checks | fail_closed` while the authority is out of reach.
    pub on_authority_lost: Option<RawOnAuthorityLost>,
}

/// A cluster's `authority:`; exactly one key is set (each names one kind of authority).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuthority {
    pub patroni: Option<RawPatroni>,
    pub sentinel: Option<RawSentinel>,
}

/// `authority.sentinel:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSentinel {
    #[serde(default)]
    pub addresses: Vec<String>,
    pub master_name: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    pub timeout: Option<String>,
    pub interval: Option<String>,
    pub hold_timeout: Option<String>,
}

/// `authority.patroni:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPatroni {
    pub etcd: Option<RawEtcd>,
    pub namespace: Option<String>,
    pub scope: Option<String>,
}

/// One entry of a cluster's `backends:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackend {
    pub name: Option<String>,
    pub address: Option<String>,
    /// Extension: the backend's Patroni member name (default: its name).
    pub patroni_member: Option<String>,
}

/// One entry of `listeners:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListener {
    pub name: Option<String>,
    pub bind: Option<String>,
    pub cluster: Option<String>,
    pub role: Option<RawRole>,
    pub fallback: Option<RawRole>,
    pub balance: Option<RawBalance>,
    pub max_connections: Option<usize>,
    pub queue_timeout: Option<String>,
    /// Extension: `listen(2)` backlog (default 1024); raise it with `net.core.somaxconn` for
    /// connection storms after a failover.
    pub backlog: Option<u32>,
    /// Extension: `auto` uses splice(2) where available, `copy` forces the buffered path
    /// (a way around a kernel or platform that misbehaves with splice).
    pub transfer: Option<RawTransfer>,
    /// Extension: read a PROXY protocol v1/v2 header from each client (an upstream load
    /// balancer) before routing, and take the client's address from it (default `false`).
    pub accept_proxy: Option<bool>,
    /// Extension: how long a client may take to send that header (default `5s`).
    pub proxy_timeout: Option<String>,
    /// Extension: `v1 | v2`: send a PROXY protocol header with the client's address to the
    /// backend on each connection (default: none).
    pub send_proxy: Option<RawProxyVersion>,
    /// Extension: steer local clients' connects straight to the backend (src/data_plane/steer).
    pub steer: Option<RawSteer>,
}

/// A listener's `steer:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSteer {
    /// cgroup v2 directory whose processes (and those below it) are steered.
    pub cgroup: Option<String>,
}

/// Serde mirrors of the typed enums in `mod.rs`, which stay free of serde attributes.
macro_rules! raw_enum {
    ($raw:ident => $typed:ident { $($variant:ident => $target:ident),* $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub(crate) enum $raw { $($variant),* }

        impl From<$raw> for $typed {
            fn from(raw: $raw) -> Self {
                match raw { $($raw::$variant => $typed::$target),* }
            }
        }
    };
}

raw_enum!(RawLogFormat => LogFormat { Text => Text, Json => Json });
raw_enum!(RawProtocol => Protocol { Postgres => Postgres, Mysql => Mysql, Redis => Redis, Tcp => Tcp });
raw_enum!(RawSplitBrain => SplitBrainPolicy {
    FailClosed => FailClosed,
    KeepCurrent => KeepCurrent,
    HighestTimeline => HighestTimeline,
});
raw_enum!(RawOnDemote => OnDemote { Close => Close, Keep => Keep });
raw_enum!(RawRole => RoleFilter { Primary => Primary, Replica => Replica, Any => Any });
raw_enum!(RawBalance => Balance { RoundRobin => RoundRobin, LeastConn => LeastConn });
raw_enum!(RawTransfer => TransferMode { Auto => Auto, Copy => Copy });
raw_enum!(RawProxyVersion => ProxyVersion { V1 => V1, V2 => V2 });
raw_enum!(RawFleetMode => FleetMode { Auto => Auto, Observer => Observer, Follower => Follower });
raw_enum!(RawOnLost => OnLost { Local => Local, LastKnown => LastKnown, FailClosed => FailClosed });
raw_enum!(RawOnAuthorityLost => OnAuthorityLost { TrustChecks => TrustChecks, FailClosed => FailClosed });

/// `trace | debug | info | warn`; `error` is left out on purpose: a session close is never an
/// error, and logging it at that level would page someone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawSessionLevel {
    Trace,
    Debug,
    Info,
    Warn,
}

impl From<RawSessionLevel> for tracing::Level {
    fn from(raw: RawSessionLevel) -> Self {
        match raw {
            RawSessionLevel::Trace => tracing::Level::TRACE,
            RawSessionLevel::Debug => tracing::Level::DEBUG,
            RawSessionLevel::Info => tracing::Level::INFO,
            RawSessionLevel::Warn => tracing::Level::WARN,
        }
    }
}

/// Parses the text into the raw shape. Structural errors (syntax, unknown key, wrong type,
/// unknown enum value) stop here at the first one, as serde cannot resume after them. An empty
/// or comment-only file parses as an empty config, so the validator can say what is missing.
pub(crate) fn parse(text: &str) -> Result<RawConfig, yaml_serde::Error> {
    yaml_serde::from_str(text)
}
