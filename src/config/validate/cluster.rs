//! Clusters: `defaults:` merged over the built-in values ([`Inherited`]), each cluster merged
//! over that, then the rules that depend on the protocol and on several keys at once.
//!
//! An error about a value points at the line that wrote it: a cluster's own key, or the key in
//! `defaults:` it inherited. Cross-key timing checks run at the level that sets one of the keys
//! involved, so a bad `defaults.check` is reported once, not once per cluster.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use super::{address, all, builtin, Checked, Validator};
use crate::config::error::Problem;
use crate::config::raw::{RawBackend, RawCheck, RawCluster, RawDefaults};
use crate::config::{
    duration, BackendConfig, BackendName, CheckConfig, ClusterConfig, ClusterName, OnDemote,
    Protocol, Secret, SplitBrainPolicy,
};

const ZERO_TICK: &str = "a zero interval would check in a busy loop; e.g. 250ms";

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

/// What every cluster inherits: `defaults:` over the built-in values.
pub(super) struct Inherited {
    timing: Timing,
    user: Option<String>,
    password: Checked<Option<Secret>>,
    connect_timeout: Checked<Duration>,
    idle_timeout: Checked<Duration>,
    retries: u32,
    max_replica_lag: Checked<Duration>,
    split_brain: SplitBrainPolicy,
    /// Whether `split_brain` came from `defaults:` (an error about it then points there).
    split_brain_in_defaults: bool,
    on_demote: OnDemote,
}

/// Builds [`Inherited`] from the optional `defaults:` block.
pub(super) fn inherited(raw: Option<&RawDefaults>, v: &mut Validator<'_>) -> Inherited {
    let empty = RawDefaults::default();
    let raw = raw.unwrap_or(&empty);
    let no_check = RawCheck::default();
    let check = raw.check.as_ref().unwrap_or(&no_check);
    let builtin = Timing {
        interval: Ok(builtin::CHECK_INTERVAL),
        down_interval: Ok(None),
        timeout: Ok(builtin::CHECK_TIMEOUT),
        rise: Ok(builtin::RISE),
        fall: Ok(builtin::FALL),
    };
    let own = timing_keys(v, "defaults.check", check);
    let timing = merge(&own, &builtin);
    cross_check(v, "defaults.check", &own, &timing);
    if check.database.is_some() {
        let problem = Problem::new("database is set per postgres cluster, not in defaults")
            .hint("move it to the check of each postgres cluster");
        v.report("defaults.check.database", problem);
    }
    Inherited {
        timing,
        user: user(v, "defaults.check", check).ok().flatten(),
        password: v.secret("defaults.check", &password_keys(check)),
        connect_timeout: positive(v, "defaults.connect_timeout", &raw.connect_timeout)
            .map(|d| d.unwrap_or(builtin::CONNECT_TIMEOUT)),
        idle_timeout: v
            .duration("defaults.idle_timeout", raw.idle_timeout.as_deref())
            .map(|d| d.unwrap_or(builtin::IDLE_TIMEOUT)),
        retries: raw.retries.unwrap_or(builtin::RETRIES),
        max_replica_lag: v
            .duration("defaults.max_replica_lag", raw.max_replica_lag.as_deref())
            .map(|d| d.unwrap_or(builtin::MAX_REPLICA_LAG)),
        split_brain: raw.split_brain.map_or(SplitBrainPolicy::FailClosed, Into::into),
        split_brain_in_defaults: raw.split_brain.is_some(),
        on_demote: raw.on_demote.map_or(OnDemote::Close, Into::into),
    }
}

/// Checks every cluster, including name uniqueness across them.
pub(super) fn clusters(
    raw: &[RawCluster],
    inherited: &Inherited,
    v: &mut Validator<'_>,
) -> Checked<Vec<ClusterConfig>> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, cluster) in raw.iter().enumerate() {
        let path = format!("clusters[{i}]");
        let mut name = v.name(&format!("{path}.name"), cluster.name.as_deref(), "cluster");
        if let Some(raw_name) = cluster.name.as_deref().filter(|n| !n.is_empty()) {
            if let Some(&first) = seen.get(raw_name) {
                let problem = Problem::new(format!(
                    "cluster name {raw_name:?} is already used by clusters[{first}]"
                ))
                .hint("give each cluster a unique name");
                name = Err(v.report(format!("{path}.name"), problem));
            } else {
                seen.insert(raw_name, i);
            }
        }
        out.push(one_cluster(v, &path, cluster, inherited, name));
    }
    all(out)
}

fn one_cluster(
    v: &mut Validator<'_>,
    path: &str,
    raw: &RawCluster,
    inherited: &Inherited,
    name: Checked<String>,
) -> Checked<ClusterConfig> {
    let protocol = raw.protocol.map(Protocol::from).ok_or_else(|| {
        let problem = Problem::new("the cluster has no protocol")
            .hint("set protocol: postgres, mysql, redis or tcp");
        v.report(format!("{path}.protocol"), problem)
    });
    let check = check(v, path, raw.check.as_ref(), inherited, protocol.ok());
    let connect_timeout = positive(v, &format!("{path}.connect_timeout"), &raw.connect_timeout);
    let idle_timeout = v.duration(&format!("{path}.idle_timeout"), raw.idle_timeout.as_deref());
    let max_lag = v.duration(&format!("{path}.max_replica_lag"), raw.max_replica_lag.as_deref());
    let split_brain = split_brain(v, path, raw, inherited, protocol.ok(), name.as_deref().ok());
    let backends = backends(v, path, &raw.backends);
    let idle_timeout = pick(idle_timeout, inherited.idle_timeout)?;
    Ok(ClusterConfig {
        name: ClusterName::from(name?.as_str()),
        protocol: protocol?,
        check: check?,
        max_replica_lag: pick(max_lag, inherited.max_replica_lag)?,
        split_brain: split_brain?,
        on_demote: raw.on_demote.map_or(inherited.on_demote, Into::into),
        connect_timeout: pick(connect_timeout, inherited.connect_timeout)?,
        idle_timeout: (!idle_timeout.is_zero()).then_some(idle_timeout),
        retries: raw.retries.unwrap_or(inherited.retries),
        backends: backends?,
    })
}

fn check(
    v: &mut Validator<'_>,
    cluster_path: &str,
    raw: Option<&RawCheck>,
    inherited: &Inherited,
    protocol: Option<Protocol>,
) -> Checked<CheckConfig> {
    let path = format!("{cluster_path}.check");
    let no_check = RawCheck::default();
    let raw = raw.unwrap_or(&no_check);
    let own = timing_keys(v, &path, raw);
    let timing = merge(&own, &inherited.timing);
    cross_check(v, &path, &own, &timing);
    let own_user = user(v, &path, raw);
    let password_keys = password_keys(raw);
    let own_password = password_keys.iter().any(|(_, value)| value.is_some());
    let mut rules: Checked<()> = Ok(());

    let (user, password) = if protocol == Some(Protocol::Tcp) {
        // A tcp check only connects; credentials there would suggest a check that never runs.
        let keys = [("user", raw.user.is_some()), ("database", raw.database.is_some())];
        let set_keys = keys.into_iter().chain(password_keys.map(|(k, v)| (k, v.is_some())));
        for key in set_keys.filter_map(|(key, set)| set.then_some(key)) {
            let problem = Problem::new(format!("a tcp check only opens a connection, so {key} is unused"))
                .hint(format!("remove check.{key}, or use the protocol of the database"));
            rules = Err(v.report_key(format!("{path}.{key}"), problem));
        }
        (Ok(None), Ok(None))
    } else {
        let password = match own_password {
            true => v.secret(&path, &password_keys),
            false => inherited.password.clone(),
        };
        (own_user.map(|u| u.or_else(|| inherited.user.clone())), password)
    };

    let database = match (protocol, raw.database.as_deref()) {
        (Some(Protocol::Postgres), Some("")) => {
            Err(v.report(format!("{path}.database"), Problem::new("the database name is empty")))
        }
        (Some(Protocol::Postgres), database) => {
            Ok(Some(database.unwrap_or(builtin::POSTGRES_DATABASE).to_string()))
        }
        (Some(p @ (Protocol::Mysql | Protocol::Redis)), Some(_)) => {
            let problem = Problem::new(format!("database applies to postgres checks only, not {}", p.as_str()))
                .hint("remove check.database");
            Err(v.report_key(format!("{path}.database"), problem))
        }
        _ => Ok(None),
    };

    match (protocol, &user, &password) {
        (Some(p @ (Protocol::Postgres | Protocol::Mysql)), Ok(None), _) => {
            let problem = Problem::new(format!(
                "a {} cluster needs check.user, the account its health checks log in as",
                p.as_str()
            ))
            .hint("add check.user (e.g. rolegate_monitor) and password_env or password_file, or set them in defaults.check");
            rules = Err(v.report(format!("{path}.user"), problem));
        }
        (Some(Protocol::Redis), Ok(Some(_)), Ok(None)) => {
            let problem = Problem::new("check.user is set but there is no password; Redis AUTH needs both")
                .hint("add password_env or password_file, or remove user to authenticate with a password alone");
            rules = Err(v.report(format!("{path}.user"), problem));
        }
        _ => {}
    }

    let interval = timing.interval?;
    let down_interval = timing.down_interval?;
    rules?;
    Ok(CheckConfig {
        interval,
        down_interval: down_interval.unwrap_or(interval.min(builtin::DOWN_INTERVAL_CAP)),
        timeout: timing.timeout?,
        rise: timing.rise?,
        fall: timing.fall?,
        user: user?,
        password: password?,
        database: database?,
    })
}

fn split_brain(
    v: &mut Validator<'_>,
    path: &str,
    raw: &RawCluster,
    inherited: &Inherited,
    protocol: Option<Protocol>,
    name: Option<&str>,
) -> Checked<SplitBrainPolicy> {
    let (policy, from_defaults) = match raw.split_brain {
        Some(policy) => (policy.into(), false),
        None => (inherited.split_brain, inherited.split_brain_in_defaults),
    };
    let Some(protocol) = protocol.filter(|p| *p != Protocol::Postgres) else {
        return Ok(policy);
    };
    if policy != SplitBrainPolicy::HighestTimeline {
        return Ok(policy);
    }
    let protocol = protocol.as_str();
    Err(if from_defaults {
        let cluster = name.unwrap_or(path);
        let problem = Problem::new(format!(
            "highest_timeline compares PostgreSQL timelines, but cluster {cluster:?} is {protocol}"
        ))
        .hint(format!("set split_brain: fail_closed or keep_current on cluster {cluster:?}"));
        v.report("defaults.split_brain", problem)
    } else {
        let problem = Problem::new(format!(
            "highest_timeline compares PostgreSQL timelines and cannot be used with {protocol}"
        ))
        .hint("use fail_closed or keep_current");
        v.report(format!("{path}.split_brain"), problem)
    })
}

fn backends(v: &mut Validator<'_>, cluster_path: &str, raw: &[RawBackend]) -> Checked<Vec<BackendConfig>> {
    if raw.is_empty() {
        let problem = Problem::new("the cluster has no backends")
            .hint("list at least one backend with a name and an address");
        return Err(v.report(format!("{cluster_path}.backends"), problem));
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut addresses: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, backend) in raw.iter().enumerate() {
        let path = format!("{cluster_path}.backends[{i}]");
        let mut name = v.name(&format!("{path}.name"), backend.name.as_deref(), "backend");
        if let Some(raw_name) = backend.name.as_deref().filter(|n| !n.is_empty()) {
            if let Some(&first) = names.get(raw_name) {
                let problem = Problem::new(format!("backend name {raw_name:?} is already used by backends[{first}]"))
                    .hint("give each backend of a cluster a unique name");
                name = Err(v.report(format!("{path}.name"), problem));
            } else {
                names.insert(raw_name, i);
            }
        }
        let address = match backend.address.as_deref() {
            None => Err(Problem::new("the backend has no address").hint("add address: HOST:PORT")),
            Some(text) => address::backend(text),
        }
        .map_err(|problem| v.report(format!("{path}.address"), problem))
        .and_then(|address| match addresses.get(&address.to_string()) {
            Some(&first) => {
                let problem = Problem::new(format!("address {address} is already used by backends[{first}]"))
                    .hint("each backend must be a different server");
                Err(v.report(format!("{path}.address"), problem))
            }
            None => {
                addresses.insert(address.to_string(), i);
                Ok(address)
            }
        });
        out.push(name.and_then(|name| {
            Ok(BackendConfig { name: BackendName::from(name.as_str()), address: address? })
        }));
    }
    all(out)
}

fn timing_keys(v: &mut Validator<'_>, path: &str, raw: &RawCheck) -> TimingKeys {
    let timeout_hint = "a check needs time to answer; e.g. 1s";
    TimingKeys {
        interval: v.positive_duration(&format!("{path}.interval"), raw.interval.as_deref(), ZERO_TICK),
        down_interval: v.positive_duration(&format!("{path}.down_interval"), raw.down_interval.as_deref(), ZERO_TICK),
        timeout: v.positive_duration(&format!("{path}.timeout"), raw.timeout.as_deref(), timeout_hint),
        rise: threshold(v, path, "rise", raw.rise, "consecutive good checks before a backend is used"),
        fall: threshold(v, path, "fall", raw.fall, "consecutive failed checks before a backend is taken out"),
    }
}

fn threshold(v: &mut Validator<'_>, path: &str, key: &str, raw: Option<u32>, counts: &str) -> Checked<Option<NonZeroU32>> {
    match raw.map(NonZeroU32::new) {
        None => Ok(None),
        Some(Some(n)) => Ok(Some(n)),
        Some(None) => {
            let problem = Problem::new(format!("{key} must be at least 1"))
                .hint(format!("it counts {counts}; 2 is a good start"));
            Err(v.report(format!("{path}.{key}"), problem))
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
    let sets = |key: &str| match key {
        "interval" => matches!(own.interval, Ok(Some(_))),
        "down_interval" => matches!(own.down_interval, Ok(Some(_))),
        "timeout" => matches!(own.timeout, Ok(Some(_))),
        _ => matches!(own.fall, Ok(Some(_))),
    };
    let show = duration::display;
    if let (Ok(timeout), Ok(interval), Ok(fall)) = (t.timeout, t.interval, t.fall) {
        // Overflow means "longer than any timeout", which is fine.
        let window = interval.checked_mul(fall.get());
        if let (Some(window), Some(key)) = (window, ["timeout", "interval", "fall"].into_iter().find(|k| sets(k))) {
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
        if let (true, Some(key)) = (down > interval, ["down_interval", "interval"].into_iter().find(|k| sets(k))) {
            let problem = Problem::new(format!(
                "down_interval {} is longer than interval {}",
                show(down), show(interval)
            ))
            .hint("down_interval is the faster pace used while a backend is down; make it at most interval");
            v.report(format!("{path}.{key}"), problem);
        }
    }
}

/// A level's own value if it set one, else the parent's; an invalid own value stays invalid.
fn pick<T>(own: Checked<Option<T>>, parent: Checked<T>) -> Checked<T> {
    match own {
        Ok(Some(value)) => Ok(value),
        Ok(None) => parent,
        Err(reported) => Err(reported),
    }
}

fn positive(v: &mut Validator<'_>, path: &str, raw: &Option<String>) -> Checked<Option<Duration>> {
    v.positive_duration(path, raw.as_deref(), "a zero timeout would fail every attempt; e.g. 2s")
}

fn user(v: &mut Validator<'_>, path: &str, raw: &RawCheck) -> Checked<Option<String>> {
    match raw.user.as_deref() {
        Some("") => Err(v.report(format!("{path}.user"), Problem::new("the user name is empty"))),
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
