//! Listeners: names, binds that do not collide (with each other or the admin server), the
//! cluster they serve, and role/fallback combinations that make sense.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::{address, all, builtin, Checked, Validator};
use crate::config::error::Problem;
use crate::config::raw::{RawCluster, RawListener};
use crate::config::{
    Balance, ClusterName, ListenerConfig, ListenerName, ProxyVersion, RoleFilter, SteerConfig,
    TransferMode,
};

/// Checks every listener; `admin` is the admin server's address, which no listener may take.
pub(super) fn listeners(
    raw: &[RawListener],
    clusters: &[RawCluster],
    admin: Option<SocketAddr>,
    v: &mut Validator<'_>,
) -> Checked<Vec<ListenerConfig>> {
    let cluster_names: Vec<&str> = clusters.iter().filter_map(|c| c.name.as_deref()).collect();
    let mut names = HashMap::new();
    let mut binds: Vec<(usize, SocketAddr)> = Vec::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, listener) in raw.iter().enumerate() {
        let path = format!("listeners[{i}]");
        let name = v.unique_name(
            &path,
            listener.name.as_deref(),
            &mut names,
            ("listener", "the config"),
        );
        let bind = bind(v, &path, listener, &binds, raw, admin);
        if let Ok(addr) = bind {
            binds.push((i, addr));
        }
        let cluster = cluster(v, &path, listener.cluster.as_deref(), &cluster_names);
        let fields = settings(v, &path, listener);
        out.push(assemble(name, bind, cluster, fields));
    }
    all(out)
}

/// The listener settings other than name, bind and cluster.
struct Settings {
    role: RoleFilter,
    fallback: Checked<Option<RoleFilter>>,
    balance: Balance,
    transfer: TransferMode,
    max_connections: Checked<usize>,
    max_connections_set: bool,
    queue_timeout: Checked<std::time::Duration>,
    backlog: Checked<u32>,
    steer: Checked<Option<SteerConfig>>,
    accept_proxy: bool,
    proxy_timeout: Checked<std::time::Duration>,
    send_proxy: Option<ProxyVersion>,
}

fn assemble(
    name: Checked<String>,
    bind: Checked<SocketAddr>,
    cluster: Checked<ClusterName>,
    settings: Settings,
) -> Checked<ListenerConfig> {
    Ok(ListenerConfig {
        name: ListenerName::from(name?.as_str()),
        bind: bind?,
        cluster: cluster?,
        role: settings.role,
        fallback: settings.fallback?,
        balance: settings.balance,
        max_connections: settings.max_connections?,
        max_connections_set: settings.max_connections_set,
        queue_timeout: settings.queue_timeout?,
        backlog: settings.backlog?,
        transfer: settings.transfer,
        steer: settings.steer?,
        accept_proxy: settings.accept_proxy,
        proxy_timeout: settings.proxy_timeout?,
        send_proxy: settings.send_proxy,
    })
}

fn bind(
    v: &mut Validator<'_>,
    path: &str,
    listener: &RawListener,
    earlier: &[(usize, SocketAddr)],
    all_listeners: &[RawListener],
    admin: Option<SocketAddr>,
) -> Checked<SocketAddr> {
    let bind_path = format!("{path}.bind");
    let addr = match listener.bind.as_deref() {
        None => Err(Problem::new("the listener has no bind address")
            .hint("add bind: IP:PORT, e.g. 0.0.0.0:5432")),
        Some(text) => address::bind(text),
    }
    .map_err(|problem| v.report(&bind_path, problem))?;
    let hint = "use another port, or bind each to a different specific address";
    if let Some((j, other)) = earlier
        .iter()
        .find(|(_, other)| address::overlaps(addr, *other))
    {
        let other_name = all_listeners
            .get(*j)
            .and_then(|l| l.name.as_deref())
            .unwrap_or("?");
        let problem = Problem::new(format!(
            "{addr} collides with listener {other_name:?} on {other}"
        ))
        .hint(hint);
        return Err(v.report(bind_path, problem));
    }
    if let Some(admin) = admin.filter(|admin| address::overlaps(addr, *admin)) {
        let problem = Problem::new(format!("{addr} collides with admin.listen {admin}")).hint(hint);
        return Err(v.report(bind_path, problem));
    }
    Ok(addr)
}

fn cluster(
    v: &mut Validator<'_>,
    path: &str,
    raw: Option<&str>,
    known: &[&str],
) -> Checked<ClusterName> {
    let problem = match raw {
        Some(name) if known.contains(&name) => return Ok(ClusterName::from(name)),
        None => Problem::new("the listener has no cluster"),
        Some(name) => Problem::new(format!("cluster {name:?} is not defined")),
    };
    let hint = match known {
        [] => "define the cluster under clusters:".to_string(),
        _ => format!(
            "use one of the clusters defined under clusters: {}",
            known.join(", ")
        ),
    };
    Err(v.report(format!("{path}.cluster"), problem.hint(hint)))
}

fn settings(v: &mut Validator<'_>, path: &str, raw: &RawListener) -> Settings {
    let role = raw.role.map_or(RoleFilter::Primary, Into::into);
    let fallback = match raw.fallback.map(RoleFilter::from) {
        Some(_) if role == RoleFilter::Primary => {
            let problem = Problem::new("a primary listener never falls back to another role")
                .hint("remove fallback: writes must only go to the primary");
            Err(v.report_key(format!("{path}.fallback"), problem))
        }
        Some(fallback) if fallback == role => {
            let problem = Problem::new(format!("fallback is the same as role ({})", role.as_str()))
                .hint("remove fallback, or name the role to use when none qualifies for role");
            Err(v.report(format!("{path}.fallback"), problem))
        }
        other => Ok(other),
    };
    let max_connections = match raw.max_connections {
        Some(0) => {
            let problem = Problem::new("max_connections must be at least 1").hint(format!(
                "omit it for the default of {}",
                builtin::MAX_CONNECTIONS
            ));
            Err(v.report(format!("{path}.max_connections"), problem))
        }
        other => Ok(other.unwrap_or(builtin::MAX_CONNECTIONS)),
    };
    let backlog = match raw.backlog {
        Some(0) => Err(Problem::new("backlog must be at least 1")),
        Some(n) if i32::try_from(n).is_err() => {
            Err(Problem::new(format!("backlog {n} is too large")))
        }
        other => Ok(other.unwrap_or(builtin::BACKLOG)),
    }
    .map_err(|problem| {
        let hint = format!("omit it for the default of {}", builtin::BACKLOG);
        v.report(format!("{path}.backlog"), problem.hint(hint))
    });
    let queue_timeout = v
        .duration(
            &format!("{path}.queue_timeout"),
            raw.queue_timeout.as_deref(),
        )
        .map(|d| d.unwrap_or(builtin::QUEUE_TIMEOUT));
    let steer = steer(v, path, raw);
    let proxy_timeout = v
        .positive_duration(
            &format!("{path}.proxy_timeout"),
            raw.proxy_timeout.as_deref(),
            "a client that must send a PROXY header gets no time to send it",
        )
        .map(|d| d.unwrap_or(builtin::PROXY_TIMEOUT));
    Settings {
        steer,
        role,
        fallback,
        balance: raw.balance.map_or(Balance::RoundRobin, Into::into),
        transfer: raw.transfer.map_or(TransferMode::Auto, Into::into),
        max_connections,
        max_connections_set: raw.max_connections.is_some(),
        queue_timeout,
        backlog,
        accept_proxy: raw.accept_proxy.unwrap_or(false),
        proxy_timeout,
        send_proxy: raw.send_proxy.map(Into::into),
    }
}

/// `steer.cgroup` must name an existing directory: a typo would otherwise only show at run time
/// as a listener that is silently proxied. Whether it is a cgroup v2 directory and whether the
/// program attaches are run-time questions (reported in `/status`, never fatal).
fn steer(v: &mut Validator<'_>, path: &str, raw: &RawListener) -> Checked<Option<SteerConfig>> {
    let Some(steer) = &raw.steer else {
        return Ok(None);
    };
    let field = format!("{path}.steer.cgroup");
    let problem = match steer.cgroup.as_deref() {
        None | Some("") => Problem::new("steer has no cgroup")
            .hint("name the cgroup v2 directory of the local clients, e.g. /sys/fs/cgroup/unified/app"),
        Some(dir) if std::path::Path::new(dir).is_dir() => {
            return Ok(Some(SteerConfig {
                cgroup: dir.into(),
            }))
        }
        Some(dir) => Problem::new(format!("cgroup directory {dir} does not exist"))
            .hint("create the cgroup (mkdir under the cgroup2 mount) before rolegate starts, or fix the path"),
    };
    Err(v.report(field, problem))
}
