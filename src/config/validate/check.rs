//! `check:` blocks: timing (built-in → `defaults.check` → the cluster's `check`), credentials,
//! and the rules that depend on the protocol.
//!
//! TLS (`tls`, `tls_ca_file`, `tls_server_name`): the mode and the CA may be inherited from
//! `defaults.check`; the server name is per cluster (it is what one cluster's certificates say).
//! A key that would have no effect under the mode in force is an error where it is written, so
//! that nobody believes a CA is checked while the check runs unverified.
//!
//! Timing checks that combine keys (`timeout` vs `interval × fall`, `down_interval` vs
//! `interval`) run on merged values but report only at a level that sets one of the keys
//! involved, so a bad `defaults.check` is reported once, not once per cluster.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use super::{builtin, pick, tls, Checked, Validator};
use crate::config::error::Problem;
use crate::config::raw::RawCheck;
use crate::config::{duration, CaBundle, CheckConfig, CheckTls, Protocol, Secret, TlsMode};

const ZERO_TICK: &str = "a zero interval would check in a busy loop; e.g. 250ms";

/// What a cluster's check inherits: built-ins with `defaults.check` merged over them.
pub(super) struct InheritedCheck {
    timing: Timing,
    user: Option<String>,
    password: Checked<Option<Secret>>,
    /// `defaults.check.tls`, when set.
    tls_mode: Option<TlsMode>,
    /// `defaults.check.tls_ca_file`, read.
    tls_ca: Checked<Option<Arc<CaBundle>>>,
}

/// The timing keys of one `check:` block as written there (`Ok(None)`: not set).
struct TimingKeys {
    interval: Checked<Option<Duration>>,
    down_interval: Checked<Option<Duration>>,
    timeout: Checked<Option<Duration>>,
    rise: Checked<Option<NonZeroU32>>,
    fall: Checked<Option<NonZeroU32>>,
}

/// Effective timing after merging a block over its parent.
#[derive(Clone, Copy)]
struct Timing {
    interval: Checked<Duration>,
    /// `None` until some level sets it; then `min(interval, 100ms)` at the end.
    down_interval: Checked<Option<Duration>>,
    timeout: Checked<Duration>,
    rise: Checked<NonZeroU32>,
    fall: Checked<NonZeroU32>,
}

/// Checks `defaults.check` and merges it over the built-in values.
pub(super) fn inherited(v: &mut Validator<'_>, raw: &RawCheck) -> InheritedCheck {
    let path = "defaults.check";
    let builtin = Timing {
        interval: Ok(builtin::CHECK_INTERVAL),
        down_interval: Ok(None),
        timeout: Ok(builtin::CHECK_TIMEOUT),
        rise: Ok(builtin::RISE),
        fall: Ok(builtin::FALL),
    };
    let own = timing_keys(v, path, raw);
    let timing = merge(&own, &builtin);
    cross_check(v, path, &own, &timing);
    if raw.database.is_some() {
        let problem = Problem::new("database is set per postgres cluster, not in defaults")
            .hint("move it to the check of each postgres cluster");
        v.report_key(format!("{path}.database"), problem);
    }
    if raw.tls_server_name.is_some() {
        let problem = Problem::new("tls_server_name is set per cluster, not in defaults").hint(
            "it is the name one cluster's certificates carry: move it to the check of that cluster",
        );
        v.report_key(format!("{path}.tls_server_name"), problem);
    }
    if let (Some(mode), Some(_)) = (raw.tls.map(TlsMode::from), &raw.tls_ca_file) {
        if !mode.verifies() {
            let problem = Problem::new(format!(
                "tls_ca_file only serves to verify certificates, but defaults.check.tls is {}",
                mode.as_str()
            ))
            .hint("set tls: verify-full to verify the backends against this CA, or remove tls_ca_file");
            v.report_key(format!("{path}.tls_ca_file"), problem);
        }
    }
    let tls_ca = raw
        .tls_ca_file
        .as_deref()
        .map(|file| tls::ca_file(v, &format!("{path}.tls_ca_file"), file).map(Arc::new))
        .transpose();
    InheritedCheck {
        timing,
        user: user(v, path, raw).ok().flatten(),
        password: v.secret(path, &password_keys(raw)),
        tls_mode: raw.tls.map(TlsMode::from),
        tls_ca,
    }
}

/// Checks a cluster's `check:` block (possibly absent) and merges it over `inherited`.
pub(super) fn check(
    v: &mut Validator<'_>,
    (cluster_path, cluster_name): (&str, Option<&str>),
    raw: Option<&RawCheck>,
    inherited: &InheritedCheck,
    protocol: Option<Protocol>,
) -> Checked<CheckConfig> {
    let path = format!("{cluster_path}.check");
    let no_check = RawCheck::default();
    let raw = raw.unwrap_or(&no_check);
    let own = timing_keys(v, &path, raw);
    let timing = merge(&own, &inherited.timing);
    cross_check(v, &path, &own, &timing);
    let (user, password) = credentials(v, &path, raw, inherited, protocol);
    let database = database(v, &path, raw, protocol);
    let required = required_credentials(v, &path, protocol, &user, &password);
    let cluster = cluster_name.unwrap_or(cluster_path);
    let tls = tls_settings(v, (&path, cluster), raw, inherited, protocol);

    let interval = timing.interval?;
    let down_interval = timing.down_interval?;
    required?;
    Ok(CheckConfig {
        interval,
        down_interval: down_interval.unwrap_or(interval.min(builtin::DOWN_INTERVAL_CAP)),
        timeout: timing.timeout?,
        rise: timing.rise?,
        fall: timing.fall?,
        user: user?,
        password: password?,
        database: database?,
        tls: Box::new(tls?),
    })
}

type Credentials = (Checked<Option<String>>, Checked<Option<Secret>>);

/// The cluster's own user and password, else the inherited ones. A tcp check only connects,
/// so credentials written there are an error (they suggest a check that never happens) and
/// inherited ones are ignored.
fn credentials(
    v: &mut Validator<'_>,
    path: &str,
    raw: &RawCheck,
    inherited: &InheritedCheck,
    protocol: Option<Protocol>,
) -> Credentials {
    let password_keys = password_keys(raw);
    if protocol == Some(Protocol::Tcp) {
        let keys = [
            ("user", raw.user.is_some()),
            ("database", raw.database.is_some()),
            ("tls", raw.tls.is_some()),
            ("tls_ca_file", raw.tls_ca_file.is_some()),
            ("tls_server_name", raw.tls_server_name.is_some()),
        ];
        let set = keys
            .into_iter()
            .chain(password_keys.map(|(k, v)| (k, v.is_some())));
        let mut unused: Checked<()> = Ok(());
        for key in set.filter_map(|(key, set)| set.then_some(key)) {
            let problem = Problem::new(format!(
                "a tcp check only opens a connection, so {key} is unused"
            ))
            .hint(format!(
                "remove check.{key}, or use the protocol of the database"
            ));
            unused = Err(v.report_key(format!("{path}.{key}"), problem));
        }
        return (unused.map(|()| None), unused.map(|()| None));
    }
    let own_user = user(v, path, raw);
    let password = if password_keys.iter().any(|(_, value)| value.is_some()) {
        v.secret(path, &password_keys)
    } else {
        inherited.password.clone()
    };
    (
        own_user.map(|u| u.or_else(|| inherited.user.clone())),
        password,
    )
}

/// `database` is PostgreSQL's alone; it defaults to `postgres` there.
fn database(
    v: &mut Validator<'_>,
    path: &str,
    raw: &RawCheck,
    protocol: Option<Protocol>,
) -> Checked<Option<String>> {
    match (protocol, raw.database.as_deref()) {
        (Some(Protocol::Postgres), Some("")) => {
            let problem = Problem::new("the database name is empty");
            Err(v.report(format!("{path}.database"), problem))
        }
        (Some(Protocol::Postgres), database) => Ok(Some(
            database.unwrap_or(builtin::POSTGRES_DATABASE).to_string(),
        )),
        (Some(p @ (Protocol::Mysql | Protocol::Redis)), Some(_)) => {
            let problem = Problem::new(format!(
                "database applies to postgres checks only, not {}",
                p.as_str()
            ))
            .hint("remove check.database");
            Err(v.report_key(format!("{path}.database"), problem))
        }
        _ => Ok(None),
    }
}

/// The cluster's TLS: its own keys over the inherited ones. A tcp check sends nothing, so it has
/// no TLS (its own TLS keys are reported by [`credentials`] with the other unused keys, and
/// inherited ones are ignored).
fn tls_settings(
    v: &mut Validator<'_>,
    (path, cluster): (&str, &str),
    raw: &RawCheck,
    inherited: &InheritedCheck,
    protocol: Option<Protocol>,
) -> Checked<CheckTls> {
    if protocol == Some(Protocol::Tcp) {
        return Ok(CheckTls::default());
    }
    let own_mode = raw.tls.map(TlsMode::from);
    let mode = own_mode.or(inherited.tls_mode).unwrap_or_default();
    let mut ok: Checked<()> = Ok(());

    let ca = match raw.tls_ca_file.as_deref() {
        None => inherited.tls_ca.clone(),
        Some(file) => {
            let ca = tls::ca_file(v, &format!("{path}.tls_ca_file"), file);
            if !mode.verifies() {
                let problem = Problem::new(format!(
                    "tls_ca_file only serves to verify certificates, but tls is {}{}",
                    mode.as_str(),
                    if mode == TlsMode::Require { " (encrypted, nothing verified)" } else { " (plain TCP)" }
                ))
                .hint("set tls: verify-full to verify the backends against this CA, or remove tls_ca_file");
                ok = Err(v.report_key(format!("{path}.tls_ca_file"), problem));
            }
            ca.map(|ca| Some(Arc::new(ca)))
        }
    };

    let server_name = match raw.tls_server_name.as_deref() {
        None => Ok(None),
        Some(name) => {
            let name = tls::server_name(v, &format!("{path}.tls_server_name"), name);
            if mode != TlsMode::VerifyFull && name.is_ok() {
                let problem = Problem::new(format!(
                    "tls_server_name is only checked with tls: verify-full, but tls is {}",
                    mode.as_str()
                ))
                .hint("set tls: verify-full, or remove tls_server_name");
                ok = Err(v.report_key(format!("{path}.tls_server_name"), problem));
            }
            name.map(Some)
        }
    };

    // mysql_async verifies the chain and the name together and cannot be told to skip only the
    // name with current rustls (its switch matches an error text rustls no longer produces), so
    // verify-ca would silently behave like verify-full there. Refuse it rather than pretend.
    if protocol == Some(Protocol::Mysql) && mode == TlsMode::VerifyCa {
        let text = "verify-ca is not available for mysql checks: the MySQL client verifies the certificate's name whenever it verifies its chain";
        let hint = "use tls: verify-full, with tls_server_name when the certificates do not name the backend addresses";
        ok = Err(if own_mode.is_some() {
            v.report(format!("{path}.tls"), Problem::new(text).hint(hint))
        } else {
            let problem = Problem::new(format!("{text} (cluster {cluster:?} is mysql)"))
                .hint(format!("set tls: verify-full on cluster {cluster:?}"));
            v.report("defaults.check.tls", problem)
        });
    }
    ok?;
    Ok(CheckTls {
        mode,
        ca: if mode.verifies() { ca? } else { None },
        server_name: server_name?,
    })
}

/// PostgreSQL and MySQL checks log in, so they need a user; Redis `AUTH user` needs a password.
fn required_credentials(
    v: &mut Validator<'_>,
    path: &str,
    protocol: Option<Protocol>,
    user: &Checked<Option<String>>,
    password: &Checked<Option<Secret>>,
) -> Checked<()> {
    let problem = match (protocol, user, password) {
        (Some(p @ (Protocol::Postgres | Protocol::Mysql)), Ok(None), _) => Problem::new(format!(
            "a {} cluster needs check.user, the account its health checks log in as",
            p.as_str()
        ))
        .hint("add check.user (e.g. rolegate_monitor) and password_env or password_file, or set them in defaults.check"),
        (Some(Protocol::Redis), Ok(Some(_)), Ok(None)) => {
            Problem::new("check.user is set but there is no password; Redis AUTH needs both")
                .hint("add password_env or password_file, or remove user to authenticate with a password alone")
        }
        _ => return Ok(()),
    };
    Err(v.report(format!("{path}.user"), problem))
}

fn timing_keys(v: &mut Validator<'_>, path: &str, raw: &RawCheck) -> TimingKeys {
    let at = |key: &str| format!("{path}.{key}");
    let timeout_hint = "a check needs time to answer; e.g. 1s";
    TimingKeys {
        interval: v.positive_duration(&at("interval"), raw.interval.as_deref(), ZERO_TICK),
        down_interval: v.positive_duration(
            &at("down_interval"),
            raw.down_interval.as_deref(),
            ZERO_TICK,
        ),
        timeout: v.positive_duration(&at("timeout"), raw.timeout.as_deref(), timeout_hint),
        rise: threshold(
            v,
            &at("rise"),
            raw.rise,
            "consecutive good checks before a backend is used",
        ),
        fall: threshold(
            v,
            &at("fall"),
            raw.fall,
            "consecutive failed checks before a backend is taken out",
        ),
    }
}

fn threshold(
    v: &mut Validator<'_>,
    path: &str,
    raw: Option<u32>,
    counts: &str,
) -> Checked<Option<NonZeroU32>> {
    match raw.map(NonZeroU32::new) {
        None => Ok(None),
        Some(Some(n)) => Ok(Some(n)),
        Some(None) => {
            let key = path.rsplit('.').next().unwrap_or(path);
            let problem = Problem::new(format!("{key} must be at least 1"))
                .hint(format!("it counts {counts}; 2 is a good start"));
            Err(v.report(path, problem))
        }
    }
}

fn merge(own: &TimingKeys, parent: &Timing) -> Timing {
    Timing {
        interval: pick(own.interval, parent.interval),
        down_interval: match own.down_interval {
            Ok(None) => parent.down_interval,
            other => other,
        },
        timeout: pick(own.timeout, parent.timeout),
        rise: pick(own.rise, parent.rise),
        fall: pick(own.fall, parent.fall),
    }
}

/// Timing rules over merged values, reported at a key this level sets (or not at all).
fn cross_check(v: &mut Validator<'_>, path: &str, own: &TimingKeys, t: &Timing) {
    let sets = |key: &&str| match *key {
        "interval" => matches!(own.interval, Ok(Some(_))),
        "down_interval" => matches!(own.down_interval, Ok(Some(_))),
        "timeout" => matches!(own.timeout, Ok(Some(_))),
        _ => matches!(own.fall, Ok(Some(_))),
    };
    let show = duration::display;
    if let (Ok(timeout), Ok(interval), Ok(fall)) = (t.timeout, t.interval, t.fall) {
        // Overflow means a window longer than any timeout, which is fine.
        let window = interval.checked_mul(fall.get());
        let key = ["timeout", "interval", "fall"].into_iter().find(sets);
        if let (Some(window), Some(key)) = (window, key) {
            if timeout > window {
                let problem = Problem::new(format!(
                    "check timeout {} is longer than interval × fall = {} × {fall} = {}",
                    show(timeout), show(interval), show(window)
                ))
                .hint("a hung backend must be taken out within fall checks: lower timeout, or raise interval or fall");
                v.report(format!("{path}.{key}"), problem);
            }
        }
    }
    if let (Ok(Some(down)), Ok(interval)) = (t.down_interval, t.interval) {
        let key = ["down_interval", "interval"].into_iter().find(sets);
        if let (true, Some(key)) = (down > interval, key) {
            let problem = Problem::new(format!(
                "down_interval {} is longer than interval {}",
                show(down), show(interval)
            ))
            .hint("down_interval is the faster pace used while a backend is down; make it at most interval");
            v.report(format!("{path}.{key}"), problem);
        }
    }
}

fn user(v: &mut Validator<'_>, path: &str, raw: &RawCheck) -> Checked<Option<String>> {
    match raw.user.as_deref() {
        Some("") => Err(v.report(
            format!("{path}.user"),
            Problem::new("the user name is empty"),
        )),
        user => Ok(user.map(str::to_string)),
    }
}

fn password_keys(raw: &RawCheck) -> [(&'static str, Option<&str>); 3] {
    [
        ("password", raw.password.as_deref()),
        ("password_env", raw.password_env.as_deref()),
        ("password_file", raw.password_file.as_deref()),
    ]
}
