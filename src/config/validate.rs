//! `RawConfig` → `Config`: applies the defaults and checks everything, collecting **every**
//! error (vector's `compile()` is the model) so an operator fixes a file in one round.
//!
//! Each check reports through [`Validator::report`] with the field path; the position comes
//! from [`Locator`]. A value that failed is carried on as `Err(Reported)`, so checks that
//! combine several values skip it instead of piling a second, misleading error on the first.
//! The typed `Config` is assembled only when no error was reported.

mod address;
mod authority;
mod check;
mod cluster;
mod coordination;
mod listener;
mod sentinel;
mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::error::{ConfigError, ConfigErrors, Location, Problem};
use super::locate::{self, Locator};
use super::raw::{self, RawAdmin, RawConfig, RawLog};
use super::secret::SecretSource;
use super::{duration, AdminConfig, AdminFile, Config, LogConfig, LogFormat, Secret};

/// Built-in values for every key that may be omitted (config/example.yaml shows the same).
mod builtin {
    use std::num::NonZeroU32;
    use std::time::Duration;

    pub(super) const CHECK_INTERVAL: Duration = Duration::from_millis(250);
    pub(super) const CHECK_TIMEOUT: Duration = Duration::from_millis(500);
    /// `down_interval` defaults to `min(interval, DOWN_INTERVAL_CAP)`.
    pub(super) const DOWN_INTERVAL_CAP: Duration = Duration::from_millis(100);
    pub(super) const RISE: NonZeroU32 = NonZeroU32::MIN.saturating_add(1);
    pub(super) const FALL: NonZeroU32 = NonZeroU32::MIN.saturating_add(1);
    pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    pub(super) const IDLE_TIMEOUT: Duration = Duration::ZERO;
    pub(super) const RETRIES: u32 = 2;
    pub(super) const MAX_REPLICA_LAG: Duration = Duration::from_secs(10);
    pub(super) const POSTGRES_DATABASE: &str = "postgres";
    pub(super) const MAX_CONNECTIONS: usize = 10_000;
    pub(super) const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
    /// Time a client of an `accept_proxy` listener has to send its PROXY header: a load
    /// balancer sends it with the connection, so anything slower holds a slot for nothing.
    pub(super) const PROXY_TIMEOUT: Duration = Duration::from_secs(5);
    pub(super) const BACKLOG: u32 = 1024;
    pub(super) const ADMIN_LISTEN: &str = "127.0.0.1:9813";
    pub(super) const LOG_LEVEL: &str = "info";
    pub(super) const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
    /// Upper bound for `workers`: far above any core count, low enough to catch a typo.
    pub(super) const MAX_WORKERS: usize = 1024;

    /// One data-plane thread per CPU this process may use (affinity and cgroup quota count).
    pub(super) fn workers() -> usize {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    }
}

/// Marker for "this value was invalid and its error is already in the list".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Reported;

/// A value that is either good or already reported.
pub(super) type Checked<T> = Result<T, Reported>;

/// Collects errors while the checks run.
pub(super) struct Validator<'a> {
    locator: Locator,
    errors: Vec<ConfigError>,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// Relative secret file paths start here (the config file's directory).
    base_dir: Option<&'a Path>,
    /// Field paths of secrets written inline (`password: ...`), for [`Config::inline_secrets`].
    inline_secrets: Vec<String>,
}

/// Parses and validates a config; see the module docs.
///
/// # Errors
/// The first structural (serde) error, or every validation error, sorted by position.
pub(crate) fn compile(
    text: &str,
    source: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    validate_with(text, source, env, |raw, v| build(raw, source, v))
}

/// Only the `admin:` block of a config, for the admin client (`rolegate status`, `drain`, …):
/// it needs the address and the token, resolved as the server resolves them, and must not fail
/// on a check password whose variable only the server's environment has. The token is
/// resolved on its own: `rolegate status` needs none, so an operator's shell without the
/// server's `token_env` variable (or a token file only the service user may read) can still
/// read the status.
///
/// # Errors
/// A syntax error anywhere in the file, or an invalid `admin.listen`; a token that cannot be
/// read is [`AdminFile::token`]'s `Err`.
pub(crate) fn compile_admin(
    text: &str,
    source: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<AdminFile, ConfigErrors> {
    let default = RawAdmin::default();
    let mut token_source = None;
    let listen = validate_with(text, source, env, |raw, v| {
        let raw = raw.admin.as_ref().unwrap_or(&default);
        token_source = match (&raw.token_file, &raw.token_env) {
            (Some(file), _) => Some(format!("admin.token_file ({file})")),
            (None, Some(var)) => Some(format!("admin.token_env ({var})")),
            (None, None) => None,
        };
        admin_listen(raw, token_source.is_some(), v)
    })?;
    let token = validate_with(text, source, env, |raw, v| {
        admin_token(raw.admin.as_ref().unwrap_or(&default), v)
    })
    .map_err(|errors| errors.to_string());
    Ok(AdminFile {
        listen,
        token,
        token_source,
    })
}

/// Parses `text` and runs `check` on it, collecting every error it reports.
fn validate_with<T>(
    text: &str,
    source: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    check: impl FnOnce(&RawConfig, &mut Validator<'_>) -> Checked<T>,
) -> Result<T, ConfigErrors> {
    let raw = raw::parse(text)
        .map_err(|error| ConfigErrors::single(locate::syntax_error(error, text)).in_file(source))?;
    let mut v = Validator {
        locator: Locator::new(text),
        errors: Vec::new(),
        env,
        base_dir: source.and_then(Path::parent),
        inline_secrets: Vec::new(),
    };
    let config = check(&raw, &mut v);
    v.errors
        .sort_by_key(|e| (e.location().is_none(), e.location()));
    match (ConfigErrors::new(source, v.errors), config) {
        (Some(errors), _) => Err(errors),
        (None, Ok(config)) => Ok(config),
        // Every `Err(Reported)` comes with a pushed error; this arm only guards that invariant.
        (None, Err(Reported)) => Err(ConfigErrors::single(ConfigError::Invalid {
            path: String::new(),
            location: None,
            message: "internal error: validation failed without a message".into(),
            hint: Some("please report this with the config file".into()),
        })
        .in_file(source)),
    }
}

fn build(raw: &RawConfig, source: Option<&Path>, v: &mut Validator<'_>) -> Checked<Config> {
    let admin = admin(raw.admin.as_ref(), v);
    let log = log(raw.log.as_ref(), v);
    let shutdown_grace = v.duration("shutdown_grace", raw.shutdown_grace.as_deref());
    let workers = workers(raw.workers, v);
    let inherited = cluster::inherited(raw.defaults.as_ref(), v);
    let clusters = cluster::clusters(&raw.clusters, &inherited, v);
    let admin_listen = admin.as_ref().ok().and_then(|a| a.listen);
    let listeners = listener::listeners(&raw.listeners, &raw.clusters, admin_listen, v);
    let coordination = raw
        .coordination
        .as_ref()
        .map(|c| coordination::coordination(c, v))
        .transpose();
    if raw.listeners.is_empty() {
        v.report(
            "listeners",
            Problem::new("no listeners are configured, so rolegate would accept nothing")
                .hint("add a listener (name, bind, cluster); see config/example.yaml"),
        );
    }
    Ok(Config {
        source: source.map(Path::to_path_buf),
        admin: admin?,
        log: log?,
        shutdown_grace: shutdown_grace?.unwrap_or(builtin::SHUTDOWN_GRACE),
        workers: workers?,
        clusters: clusters?,
        listeners: listeners?,
        coordination: coordination?,
        inline_secrets: std::mem::take(&mut v.inline_secrets),
    })
}

fn workers(raw: Option<usize>, v: &mut Validator<'_>) -> Checked<usize> {
    let problem = match raw {
        None => return Ok(builtin::workers()),
        Some(n) if (1..=builtin::MAX_WORKERS).contains(&n) => return Ok(n),
        Some(0) => Problem::new("workers must be at least 1"),
        Some(n) => Problem::new(format!("workers {n} is more than {}", builtin::MAX_WORKERS)),
    };
    Err(v.report("workers", problem.hint("omit it for one per CPU")))
}

fn admin(raw: Option<&RawAdmin>, v: &mut Validator<'_>) -> Checked<AdminConfig> {
    let default = RawAdmin::default();
    let raw = raw.unwrap_or(&default);
    let token = admin_token(raw, v);
    // A token that failed to resolve is reported already; only a missing one is a problem
    // for a public listen address.
    let listen = admin_listen(raw, !matches!(token, Ok(None)), v);
    Ok(AdminConfig {
        listen: listen?,
        token: token?,
    })
}

fn admin_token(raw: &RawAdmin, v: &mut Validator<'_>) -> Checked<Option<Secret>> {
    v.secret(
        "admin",
        &[
            ("token_file", raw.token_file.as_deref()),
            ("token_env", raw.token_env.as_deref()),
        ],
    )
}

/// `None` when the admin server is disabled.
fn admin_listen(
    raw: &RawAdmin,
    has_token: bool,
    v: &mut Validator<'_>,
) -> Checked<Option<SocketAddr>> {
    if raw.enabled == Some(false) {
        return Ok(None);
    }
    let text = raw.listen.as_deref().unwrap_or(builtin::ADMIN_LISTEN);
    let listen = address::bind(text).map_err(|p| v.report("admin.listen", p))?;
    if !listen.ip().is_loopback() && !has_token {
        let problem = Problem::new(format!(
            "{listen} is not a loopback address, so the admin actions need a token"
        ))
        .hint("set admin.token_file or admin.token_env, or listen on 127.0.0.1");
        return Err(v.report("admin.listen", problem));
    }
    Ok(Some(listen))
}

fn log(raw: Option<&RawLog>, v: &mut Validator<'_>) -> Checked<LogConfig> {
    let default = RawLog::default();
    let raw = raw.unwrap_or(&default);
    let level = raw.level.as_deref().unwrap_or(builtin::LOG_LEVEL);
    // EnvFilter accepts any bare word as a target name, so `inof` would silently log nothing
    // useful; a bare word must be a level here.
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let bare_word = level.split(',').find(|d| {
        !d.contains(['=', '[']) && !LEVELS.contains(&d.trim().to_ascii_lowercase().as_str())
    });
    let problem = match (bare_word, tracing_subscriber::EnvFilter::try_new(level)) {
        _ if level.trim().is_empty() => Some(Problem::new("the log level is empty")),
        (Some(word), _) => Some(Problem::new(format!("{word:?} is not a log level"))),
        (None, Err(error)) => Some(Problem::new(format!(
            "invalid log filter {level:?}: {error}"
        ))),
        (None, Ok(_)) => None,
    };
    if let Some(problem) = problem {
        let hint =
            "use trace, debug, info, warn or error, or directives such as rolegate=debug,info";
        return Err(v.report("log.level", problem.hint(hint)));
    }
    Ok(LogConfig {
        format: raw.format.map_or(LogFormat::Text, Into::into),
        level: level.to_string(),
        session_level: raw.session_level.map_or(tracing::Level::INFO, Into::into),
    })
}

/// A level's own value if it set one, else the parent's; an invalid own value stays invalid.
pub(super) fn pick<T>(own: Checked<Option<T>>, parent: Checked<T>) -> Checked<T> {
    match own {
        Ok(Some(value)) => Ok(value),
        Ok(None) => parent,
        Err(reported) => Err(reported),
    }
}

/// Collects a list whose items were each checked, keeping every item's errors.
pub(super) fn all<T>(items: Vec<Checked<T>>) -> Checked<Vec<T>> {
    items.into_iter().collect()
}

// === impl Validator ===

impl Validator<'_> {
    /// Records an error at `path` (positioned at the value, or the nearest enclosing one).
    pub(super) fn report(&mut self, path: impl Into<String>, problem: Problem) -> Reported {
        let path = path.into();
        let location = self.locator.value(&path);
        self.push(path, location, problem)
    }

    /// Records an error positioned at the key of `path` rather than its value.
    pub(super) fn report_key(&mut self, path: impl Into<String>, problem: Problem) -> Reported {
        let path = path.into();
        let location = self.locator.key(&path);
        self.push(path, location, problem)
    }

    fn push(&mut self, path: String, location: Option<Location>, p: Problem) -> Reported {
        self.errors.push(ConfigError::Invalid {
            path,
            location,
            message: p.message,
            hint: p.hint,
        });
        Reported
    }

    /// An optional duration.
    pub(super) fn duration(&mut self, path: &str, raw: Option<&str>) -> Checked<Option<Duration>> {
        raw.map(duration::parse)
            .transpose()
            .map_err(|p| self.report(path, p))
    }

    /// An optional duration that must not be zero (`why` says what zero would break).
    pub(super) fn positive_duration(
        &mut self,
        path: &str,
        raw: Option<&str>,
        why: &str,
    ) -> Checked<Option<Duration>> {
        match self.duration(path, raw)? {
            Some(Duration::ZERO) => {
                let key = path.rsplit('.').next().unwrap_or(path);
                Err(self.report(
                    path,
                    Problem::new(format!("{key} must be longer than 0s")).hint(why),
                ))
            }
            other => Ok(other),
        }
    }

    /// A required name: non-empty, and only characters that are safe in metric labels and
    /// URL path segments (`/backends/{cluster}/{backend}/drain`).
    pub(super) fn name(&mut self, path: &str, raw: Option<&str>, kind: &str) -> Checked<String> {
        let problem = match raw {
            None => Problem::new(format!("this {kind} has no name")),
            Some("") => Problem::new("the name is empty"),
            Some(name) => match name
                .chars()
                .find(|c| !c.is_ascii_alphanumeric() && !"_.-".contains(*c))
            {
                None => return Ok(name.to_string()),
                Some(c) => Problem::new(format!("name {name:?} contains {c:?}")),
            },
        };
        let hint = format!("give the {kind} a name of letters, digits, '_', '.' and '-' (names become metric labels and URL path segments)");
        Err(self.report(path, problem.hint(hint)))
    }

    /// A valid name (see [`Validator::name`]) that no earlier item of the same list used;
    /// `seen` maps each name to the path of the item that took it first, and `scope` says
    /// where names must be unique (for the hint).
    pub(super) fn unique_name<'r>(
        &mut self,
        item_path: &str,
        raw: Option<&'r str>,
        seen: &mut HashMap<&'r str, String>,
        (kind, scope): (&str, &str),
    ) -> Checked<String> {
        let path = format!("{item_path}.name");
        let name = self.name(&path, raw, kind);
        let Some(raw) = raw.filter(|n| !n.is_empty()) else {
            return name;
        };
        match seen.get(raw) {
            Some(first) => {
                let problem =
                    Problem::new(format!("{kind} name {raw:?} is already used by {first}"))
                        .hint(format!("{kind} names must be unique in {scope}"));
                Err(self.report(path, problem))
            }
            None => {
                seen.insert(raw, item_path.to_string());
                name
            }
        }
    }

    /// One secret from at most one of `keys` (`password`, `*_env`, `*_file`) under `parent`.
    pub(super) fn secret(
        &mut self,
        parent: &str,
        keys: &[(&str, Option<&str>)],
    ) -> Checked<Option<Secret>> {
        let set: Vec<(&str, &str)> = keys.iter().filter_map(|(k, v)| Some((*k, (*v)?))).collect();
        let [(key, value), rest @ ..] = set.as_slice() else {
            return Ok(None);
        };
        if let Some((second, _)) = rest.first() {
            let hint = match (*key == "password", *second == "password") {
                (false, false) => "keep the one you deploy with",
                _ => "prefer the *_env or *_file key: an inline secret stays readable in the file",
            };
            let problem =
                Problem::new(format!("{key} and {second} are alternatives; set only one"))
                    .hint(hint);
            return Err(self.report_key(format!("{parent}.{second}"), problem));
        }
        let source = if key.ends_with("_env") {
            SecretSource::Env(value)
        } else if key.ends_with("_file") {
            SecretSource::File(value)
        } else {
            self.inline_secrets.push(format!("{parent}.{key}"));
            SecretSource::Inline(value)
        };
        match source.resolve(self.env, self.base_dir) {
            Ok(secret) => Ok(Some(secret)),
            Err(problem) => Err(self.report(format!("{parent}.{key}"), problem)),
        }
    }
}
