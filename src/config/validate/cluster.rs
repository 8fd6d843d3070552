//! Clusters: `defaults:` merged over the built-in values ([`Inherited`]), each cluster merged
//! over that; names, backends and the split-brain policy. `check:` blocks live in `check.rs`.
//!
//! An error about a value points at the line that wrote it: a cluster's own key, or the key in
//! `defaults:` it inherited.

use std::collections::HashMap;
use std::time::Duration;

use super::check::{self, InheritedCheck};
use super::{address, all, authority, builtin, pick, Checked, Validator};
use crate::config::error::Problem;
use crate::config::raw::{RawBackend, RawCheck, RawCluster, RawDefaults};
use crate::config::{
    BackendAddress, BackendConfig, BackendName, ClusterConfig, ClusterName, OnDemote, Protocol,
    SplitBrainPolicy,
};

/// What every cluster inherits: `defaults:` over the built-in values.
pub(super) struct Inherited {
    check: InheritedCheck,
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
    Inherited {
        check: check::inherited(v, raw.check.as_ref().unwrap_or(&no_check)),
        connect_timeout: positive(v, "defaults.connect_timeout", &raw.connect_timeout)
            .map(|d| d.unwrap_or(builtin::CONNECT_TIMEOUT)),
        idle_timeout: v
            .duration("defaults.idle_timeout", raw.idle_timeout.as_deref())
            .map(|d| d.unwrap_or(builtin::IDLE_TIMEOUT)),
        retries: raw.retries.unwrap_or(builtin::RETRIES),
        max_replica_lag: v
            .duration("defaults.max_replica_lag", raw.max_replica_lag.as_deref())
            .map(|d| d.unwrap_or(builtin::MAX_REPLICA_LAG)),
        split_brain: raw
            .split_brain
            .map_or(SplitBrainPolicy::FailClosed, Into::into),
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
    let mut names = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, cluster) in raw.iter().enumerate() {
        let path = format!("clusters[{i}]");
        let name = v.unique_name(
            &path,
            cluster.name.as_deref(),
            &mut names,
            ("cluster", "the config"),
        );
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
    let check = check::check(
        v,
        (path, name.as_deref().ok()),
        raw.check.as_ref(),
        &inherited.check,
        protocol.ok(),
    );
    let connect_timeout = positive(v, &format!("{path}.connect_timeout"), &raw.connect_timeout);
    let idle_timeout = v.duration(&format!("{path}.idle_timeout"), raw.idle_timeout.as_deref());
    let max_lag = v.duration(
        &format!("{path}.max_replica_lag"),
        raw.max_replica_lag.as_deref(),
    );
    let split_brain = split_brain(v, path, raw, inherited, protocol.ok(), name.as_deref().ok());
    let backends = backends(v, path, &raw.backends);
    let authority = authority::authority(v, path, raw, protocol.ok());
    let idle_timeout = pick(idle_timeout, inherited.idle_timeout)?;
    let (authority, on_authority_lost) = authority?;
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
        authority,
        on_authority_lost,
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
        .hint(format!(
            "set split_brain: fail_closed or keep_current on cluster {cluster:?}"
        ));
        v.report("defaults.split_brain", problem)
    } else {
        let problem = Problem::new(format!(
            "highest_timeline compares PostgreSQL timelines and cannot be used with {protocol}"
        ))
        .hint("use fail_closed or keep_current");
        v.report(format!("{path}.split_brain"), problem)
    })
}

fn backends(
    v: &mut Validator<'_>,
    cluster_path: &str,
    raw: &[RawBackend],
) -> Checked<Vec<BackendConfig>> {
    if raw.is_empty() {
        let problem = Problem::new("the cluster has no backends")
            .hint("list at least one backend with a name and an address");
        return Err(v.report(format!("{cluster_path}.backends"), problem));
    }
    let mut names = HashMap::new();
    let mut addresses = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, backend) in raw.iter().enumerate() {
        let path = format!("{cluster_path}.backends[{i}]");
        let name = v.unique_name(
            &path,
            backend.name.as_deref(),
            &mut names,
            ("backend", "a cluster"),
        );
        let address = backend_address(v, &path, backend.address.as_deref(), &mut addresses);
        out.push(name.and_then(|name| {
            Ok(BackendConfig {
                name: BackendName::from(name.as_str()),
                address: address?,
                patroni_member: backend.patroni_member.clone(),
            })
        }));
    }
    all(out)
}

/// A valid address that no earlier backend of the cluster uses (`seen`: address → path).
fn backend_address(
    v: &mut Validator<'_>,
    backend_path: &str,
    raw: Option<&str>,
    seen: &mut HashMap<String, String>,
) -> Checked<BackendAddress> {
    let path = format!("{backend_path}.address");
    let address = match raw {
        None => Err(Problem::new("the backend has no address").hint("add address: HOST:PORT")),
        Some(text) => address::backend(text),
    }
    .map_err(|problem| v.report(&path, problem))?;
    let key = address.to_string();
    if let Some(first) = seen.get(&key) {
        let problem = Problem::new(format!("address {address} is already used by {first}"))
            .hint("each backend must be a different server");
        return Err(v.report(path, problem));
    }
    seen.insert(key, backend_path.to_string());
    Ok(address)
}

fn positive(v: &mut Validator<'_>, path: &str, raw: &Option<String>) -> Checked<Option<Duration>> {
    v.positive_duration(
        path,
        raw.as_deref(),
        "a zero timeout would fail every attempt; e.g. 2s",
    )
}
