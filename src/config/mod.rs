//! Configuration: the YAML file operators write (`RawConfig`, in `raw.rs`) and the validated,
//! typed `Config` the rest of the proxy reads.
//!
//! The pipeline is `text -> RawConfig (serde, deny_unknown_fields) -> validate (collects every
//! error with its YAML path and position) -> Config`. `Config::from_yaml_str` is pure so tests and
//! `check-config` share it; `Config::load` only adds the file read. A `Config` is immutable once
//! built: a reload builds a new one and the supervisor diffs them (`diff.rs`).

mod authority;
mod coordination;
mod diff;
mod duration;
mod error;
mod locate;
mod raw;
mod secret;
mod sentinel;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use authority::{Authority, OnAuthorityLost, PatroniConfig};
pub use coordination::{CoordinationConfig, EtcdConfig, EtcdTls, FleetMode, OnLost};
pub use diff::ConfigDiff;
pub(crate) use duration::parse as parse_duration;
pub use error::{ConfigError, ConfigErrors, Location};
pub use secret::{read_secret_file, Secret};
pub use sentinel::SentinelConfig;

/// A validated configuration. Every name is unique within its kind, every listener points at an
/// existing cluster, every duration is non-zero where zero would be meaningless.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// File the config was read from, if any (used in error messages and for reload).
    pub source: Option<PathBuf>,
    pub admin: AdminConfig,
    pub log: LogConfig,
    /// Grace period for draining sessions on SIGTERM/SIGINT before they are closed.
    pub shutdown_grace: Duration,
    /// Data-plane threads (one per CPU unless set). Read at start; a reload cannot change it.
    pub workers: usize,
    pub clusters: Vec<ClusterConfig>,
    pub listeners: Vec<ListenerConfig>,
    /// Fleet mode (`coordination:`); `None` is standalone. Read at start.
    pub coordination: Option<CoordinationConfig>,
    /// Field paths of the secrets written inline in the file (`clusters[0].check.password`),
    /// so that [`Config::file_warnings`] can object to a file others may read.
    pub inline_secrets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// `None` when the file says `admin: { enabled: false }`: no admin server. An omitted
    /// `admin` block means the default `127.0.0.1:9813`, not "off".
    pub listen: Option<SocketAddr>,
    /// Bearer token for mutating endpoints; required when `listen` is not loopback.
    pub token: Option<Secret>,
}

/// The `admin:` block of a file on its own ([`Config::load_admin`]), for the admin client.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminFile {
    /// `admin.listen`; `None` when the admin server is disabled.
    pub listen: Option<SocketAddr>,
    /// The token, or why it cannot be read here (every error, with file and position).
    pub token: Result<Option<Secret>, String>,
    /// Which key the token comes from (`admin.token_file (/etc/rolegate/token)`), for
    /// messages; never the token.
    pub token_source: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing `EnvFilter` directive such as `info` or `rolegate=debug`; `RUST_LOG` wins.
    pub level: String,
    /// Level of the one line logged per closed session (`info` by default, `debug` to quiet it).
    pub session_level: tracing::Level,
}

/// A cluster name; cheap to clone because it is copied into every routing table and metric label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterName(pub Arc<str>);

/// A backend name, unique within its cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendName(pub Arc<str>);

/// A listener name, unique in the config.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerName(pub Arc<str>);

macro_rules! name_impls {
    ($($t:ident),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl From<&str> for $t {
            fn from(s: &str) -> Self {
                Self(Arc::from(s))
            }
        }
        impl $t {
            /// The name as a string slice (for metric labels and logs).
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
    )*};
}
name_impls!(ClusterName, BackendName, ListenerName);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Postgres,
    Mysql,
    Redis,
    Tcp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Postgres => "postgres",
            Protocol::Mysql => "mysql",
            Protocol::Redis => "redis",
            Protocol::Tcp => "tcp",
        }
    }
}

/// What to do with two or more nodes claiming primary when rolegate did not see a handover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitBrainPolicy {
    /// Refuse new primary-listener connections until exactly one primary remains (default).
    FailClosed,
    /// Keep routing to the primary that was serving before the second one appeared.
    KeepCurrent,
    /// PostgreSQL only: follow the node on the newest timeline.
    HighestTimeline,
}

impl SplitBrainPolicy {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            SplitBrainPolicy::FailClosed => "fail_closed",
            SplitBrainPolicy::KeepCurrent => "keep_current",
            SplitBrainPolicy::HighestTimeline => "highest_timeline",
        }
    }
}

/// What happens to live sessions on a backend that lost the role of their listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDemote {
    Close,
    Keep,
}

/// Health check settings of one cluster, after `defaults.check` has been merged in.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckConfig {
    pub interval: Duration,
    /// Interval used while a backend is down, so that a returning node is noticed quickly.
    pub down_interval: Duration,
    pub timeout: Duration,
    pub rise: NonZeroU32,
    pub fall: NonZeroU32,
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// PostgreSQL database to connect to (default `postgres`).
    pub database: Option<String>,
    /// TLS of the check's session (`tls`, `tls_ca_file`, `tls_server_name`); off by default.
    /// Boxed: a `CheckConfig` travels in every probe settings update, which should stay small.
    pub tls: Box<CheckTls>,
}

/// How a check protects its session to a backend, named after libpq's `sslmode` values that
/// operators already know. Only the check's own connection is concerned: rolegate forwards the
/// clients' bytes untouched, so their TLS (if any) stays end to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TlsMode {
    /// Plain TCP (the default, as before TLS existed; `tls: disable`).
    #[default]
    Disable,
    /// Encrypt, but accept any certificate. Protects against passive eavesdropping only: anyone
    /// who can intercept the connection can present their own certificate (a MITM), read the
    /// check's login and lie about the role. Use `verify-full`.
    Require,
    /// Encrypt and verify that a trusted CA signed the certificate, but not the name in it: any
    /// server holding a certificate from that CA can impersonate the backend.
    VerifyCa,
    /// Encrypt, verify the chain and that the certificate names the backend (the address's host,
    /// or `tls_server_name`). What operators should use.
    VerifyFull,
}

impl TlsMode {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Require => "require",
            TlsMode::VerifyCa => "verify-ca",
            TlsMode::VerifyFull => "verify-full",
        }
    }

    /// Whether the certificate chain is verified (`verify-ca`, `verify-full`).
    pub fn verifies(self) -> bool {
        matches!(self, TlsMode::VerifyCa | TlsMode::VerifyFull)
    }
}

/// TLS settings of one cluster's checks, after `defaults.check` has been merged in.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CheckTls {
    pub mode: TlsMode,
    /// Roots from `tls_ca_file`; `None` means the system's trust store. Shared: every cluster
    /// that inherits `defaults.check.tls_ca_file` holds the same bundle.
    pub ca: Option<Arc<CaBundle>>,
    /// The name the certificate must hold under `verify-full`, instead of the backend address's
    /// host (for backends written as IP addresses whose certificates carry a DNS name).
    pub server_name: Option<String>,
}

/// The certificates of a `tls_ca_file`, read and parsed when the config is loaded: a missing or
/// broken file is a config error rather than a failing check, and a reload that finds a rotated
/// CA compares unequal, so the checks pick it up.
#[derive(Clone, PartialEq, Eq)]
pub struct CaBundle {
    /// The file as resolved (relative paths start at the config file's directory).
    pub path: PathBuf,
    /// DER certificates, in file order; never empty.
    pub certs: Arc<[rustls::pki_types::CertificateDer<'static>]>,
}

impl fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The DER bytes would drown a logged config; the path and count identify the bundle.
        f.debug_struct("CaBundle")
            .field("path", &self.path)
            .field("certs", &self.certs.len())
            .finish()
    }
}

/// A backend address as written: an IP socket address, or a DNS name re-resolved on every check.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BackendAddress {
    Ip(SocketAddr),
    Dns { host: String, port: u16 },
}

impl fmt::Display for BackendAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendAddress::Ip(a) => write!(f, "{a}"),
            BackendAddress::Dns { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    pub name: BackendName,
    pub address: BackendAddress,
    /// `patroni_member`: the Patroni member name of this backend (default: its name).
    pub patroni_member: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    pub name: ClusterName,
    pub protocol: Protocol,
    pub check: CheckConfig,
    pub max_replica_lag: Duration,
    pub split_brain: SplitBrainPolicy,
    pub on_demote: OnDemote,
    pub connect_timeout: Duration,
    /// `None` means no idle timeout (`0s` in the file).
    pub idle_timeout: Option<Duration>,
    /// Other candidates tried when a backend connect fails.
    pub retries: u32,
    pub backends: Vec<BackendConfig>,
    /// `authority:`: an orchestrator that must agree before a node is routed as primary.
    pub authority: Option<Authority>,
    /// `on_authority_lost:` (only meaningful with an authority).
    pub on_authority_lost: OnAuthorityLost,
}

/// Which backends a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoleFilter {
    Primary,
    Replica,
    /// Any backend that is up, whatever its role.
    Any,
}

impl RoleFilter {
    pub fn as_str(self) -> &'static str {
        match self {
            RoleFilter::Primary => "primary",
            RoleFilter::Replica => "replica",
            RoleFilter::Any => "any",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastConn,
}

/// How bytes are moved for a listener's sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferMode {
    /// splice(2) where available, buffered copy otherwise (default).
    Auto,
    /// Always the buffered copy path.
    Copy,
}

/// The PROXY protocol header `send_proxy` writes to backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    /// The text header (`PROXY TCP4 …\r\n`).
    V1,
    /// The binary header.
    V2,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    pub name: ListenerName,
    pub bind: SocketAddr,
    pub cluster: ClusterName,
    pub role: RoleFilter,
    /// Role used when no backend qualifies for `role`; `None` refuses instead.
    pub fallback: Option<RoleFilter>,
    pub balance: Balance,
    pub max_connections: usize,
    /// `max_connections` was written in the file: a descriptor limit too low for it is warned
    /// about. The default yields to the limit silently, as HAProxy's derived `maxconn` does.
    pub max_connections_set: bool,
    /// How long a new connection may wait for a qualifying backend; zero refuses at once.
    pub queue_timeout: Duration,
    pub backlog: u32,
    pub transfer: TransferMode,
    /// Clients send a PROXY protocol header first (`accept_proxy`).
    pub accept_proxy: bool,
    /// How long a client may take to send that header.
    pub proxy_timeout: Duration,
    /// The PROXY protocol header sent to backends, if any.
    pub send_proxy: Option<ProxyVersion>,
    /// `steer:`: local clients in this cgroup connect to the backend directly.
    pub steer: Option<SteerConfig>,
}

/// A listener's `steer:` (see src/data_plane/steer): TCP connects to the listener's bind address
/// from processes in `cgroup` (a cgroup v2 directory, and those below it) go straight to the
/// backend the route names; the listener itself stays the fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SteerConfig {
    pub cgroup: PathBuf,
}

// === impl Config ===

impl Config {
    /// Parses and validates YAML text. `source` only labels error messages.
    ///
    /// # Errors
    /// Every problem found, each with its line, column and field path.
    pub fn from_yaml_str(text: &str, source: Option<&Path>) -> Result<Config, ConfigErrors> {
        Self::from_yaml_str_with_env(text, source, &|k| std::env::var(k).ok())
    }

    /// Like [`Config::from_yaml_str`], with the environment (for `password_env`) supplied by the
    /// caller so tests need not mutate the process environment.
    pub fn from_yaml_str_with_env(
        text: &str,
        source: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        validate::compile(text, source, env)
    }

    /// Reads and validates a config file.
    ///
    /// # Errors
    /// The file cannot be read, or any validation error (all of them).
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            ConfigErrors::single(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })
        })?;
        Self::from_yaml_str(&text, Some(path))
    }

    /// Reads only the `admin:` block of a config file (address and token, resolved as the
    /// server resolves them); the rest of the file must parse but is not validated.
    ///
    /// # Errors
    /// The file cannot be read or parsed, or `admin.listen` is invalid.
    pub fn load_admin(path: &Path) -> Result<AdminFile, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            ConfigErrors::single(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })
        })?;
        validate::compile_admin(&text, Some(path), &|k| std::env::var(k).ok())
    }

    /// Problems with the config file that are not errors: today, a file that holds a secret
    /// inline (`password:`) while group or others may read it. Logged at start and reload,
    /// printed by `check-config`. Never contains a secret, only field paths and the mode.
    pub fn file_warnings(&self) -> Vec<String> {
        let Some(path) = &self.source else {
            return Vec::new();
        };
        if self.inline_secrets.is_empty() {
            return Vec::new();
        }
        let Ok(meta) = std::fs::metadata(path) else {
            return Vec::new();
        };
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
        if mode & 0o077 == 0 {
            return Vec::new();
        }
        vec![format!(
            "{} holds a secret inline ({}) and is readable by {} (mode {mode:04o}); \
             restrict it with chmod 600, or move the secret to password_env or password_file",
            path.display(),
            self.inline_secrets.join(", "),
            if mode & 0o007 != 0 {
                "others"
            } else {
                "its group"
            },
        )]
    }

    pub fn cluster(&self, name: &ClusterName) -> Option<&ClusterConfig> {
        self.clusters.iter().find(|c| &c.name == name)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const INLINE: &str = "clusters:
  - name: c
    protocol: redis
    check: { password: \"hunter2-inline\" }
    backends: [ { name: a, address: \"127.0.0.1:1\" } ]
listeners: [ { name: l, bind: \"127.0.0.1:0\", cluster: c } ]
";

    fn load_with_mode(text: &str, mode: u32) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("rolegate.yaml");
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let config = Config::load(&path).expect("valid");
        (dir, config)
    }

    #[test]
    fn an_inline_secret_in_a_file_others_may_read_is_warned_about() {
        for (mode, who) in [(0o644, "others"), (0o640, "its group")] {
            let (_dir, config) = load_with_mode(INLINE, mode);
            assert_eq!(config.inline_secrets, ["clusters[0].check.password"]);
            let warnings = config.file_warnings();
            assert_eq!(warnings.len(), 1, "{mode:o}");
            assert!(warnings[0].contains(who), "{}", warnings[0]);
            assert!(warnings[0].contains("clusters[0].check.password"));
            assert!(!warnings[0].contains("hunter2"), "{}", warnings[0]);
        }
    }

    #[test]
    fn private_files_and_secrets_from_elsewhere_are_not_warned_about() {
        let (_dir, config) = load_with_mode(INLINE, 0o600);
        assert!(config.file_warnings().is_empty());
        let from_env = INLINE.replace("password: \"hunter2-inline\"", "password_env: HOME");
        let (_dir, config) = load_with_mode(&from_env, 0o644);
        assert!(config.inline_secrets.is_empty());
        assert!(config.file_warnings().is_empty());
        // Parsed from a string (no file): nothing to check.
        let config = Config::from_yaml_str(INLINE, None).expect("valid");
        assert!(config.file_warnings().is_empty());
    }
}
