//! Proxies → the rolegate model. A *route* is what a client connection follows in HAProxy:
//! a `listen` section alone, or a `frontend` and the backend its `default_backend` (or
//! unconditional `use_backend`) names. Each route becomes listeners on a cluster; routes over
//! the same servers with the same cluster-level settings share one cluster, so Patroni's usual
//! pair of `listen` sections (primary on 5000, replicas on 5001) becomes one postgres cluster
//! with a primary and a replica listener — which is what lets rolegate move both at a failover.

use std::net::SocketAddr;

use super::cluster;
use super::credentials;
use super::detect::{self, Detected};
use super::listener;
use super::model::{
    noted, Backend, Cluster, ClusterSettings, Listener, Model, Noted, Protocol, Role,
};
use super::proxies::{self, Global, Proxy};
use super::proxy::Settings;
use super::sections::{Kind, Section};
use super::server::{self, Params, Server};
use super::values;
use super::Notes;

pub(super) fn translate(sections: &[Section], notes: &mut Notes) -> Model {
    let (global, proxies) = proxies::read(sections, notes);
    let mut builder = Builder::default();
    for front in proxies.iter().filter(|p| !p.skipped) {
        let back = match front.section.kind {
            Kind::Listen => front,
            Kind::Frontend => match proxies::route_target(front, &proxies, notes) {
                Some(back) => back,
                None => continue,
            },
            _ => continue,
        };
        builder.route(front, back, &global, notes);
    }
    for back in proxies
        .iter()
        .filter(|p| p.section.kind == Kind::Backend && !p.skipped)
    {
        if !builder.used.contains(&back.name().to_string()) {
            notes.add(
                back.section.header.line,
                format!(
                    "backend {}: no frontend routes to it; not translated",
                    back.name()
                ),
            );
        }
    }
    builder.finish(global.workers, notes)
}

/// A cluster being built: the routes that share it and their settings.
struct Pending {
    cluster: Cluster,
    /// The proxies it came from, for its name.
    sources: Vec<String>,
    detected: Detected,
    /// `tcp-check send AUTH` lines of the other sources (their password moves to the same
    /// variable, and each line is told so).
    more_auth: Vec<usize>,
    /// Listener indexes that point at it.
    listeners: Vec<usize>,
}

#[derive(Default)]
struct Builder {
    pending: Vec<Pending>,
    listeners: Vec<Listener>,
    /// Backend proxies some route used.
    used: Vec<String>,
}

impl Builder {
    fn route(&mut self, front: &Proxy<'_>, back: &Proxy<'_>, global: &Global, notes: &mut Notes) {
        self.used.push(back.name().to_string());
        let servers = servers(&back.settings, notes);
        if servers.is_empty() {
            notes.add(
                back.section.header.line,
                format!("{}: no usable server; not translated", back.label()),
            );
            return;
        }
        let detected = detect::detect(&back.settings, &servers, notes);
        let settings =
            cluster::settings(&front.settings, &back.settings, &servers, &detected, notes);
        let backends = cluster::backends(&servers, notes);
        if backends.is_empty() {
            return;
        }
        let binds = listener::binds(&front.settings.binds, notes);
        if binds.is_empty() {
            notes.add(
                front.section.header.line,
                format!(
                    "{}: no bind address rolegate can use; not translated",
                    front.label()
                ),
            );
            return;
        }
        let index = self.cluster_for(back, settings, backends, detected.clone(), notes);
        let role = detected.role.clone().unwrap_or_else(|| {
            let names = [front.name(), back.name()];
            listener::role_unsaid(names, detected.protocol, &back.settings, &servers)
        });
        let balance = match role.value {
            Role::Primary => None,
            _ => listener::balance(&back.settings, notes),
        };
        if role.value != Role::Primary {
            for s in servers.iter().filter(|s| s.is_backup()) {
                notes.add(s.line, format!("server {} backup: rolegate has no backup tier; here it takes its share of {} connections", s.name, role.value.as_str()));
            }
        }
        let count = binds.len();
        for (i, bind) in binds.iter().enumerate() {
            if let Some(other) = self.overlapping(&bind.address) {
                notes.add(bind.line, format!("bind {}: overlaps {other} on the same port (rolegate refuses two sockets where one binds every address); not translated", bind.address));
                continue;
            }
            let base = values::name(front.name());
            let name = if count == 1 {
                base
            } else {
                format!("{base}-{}", i + 1)
            };
            let mut comments = vec![format!(
                "{} (line {})",
                front.label(),
                front.section.header.line
            )];
            if count > 1 {
                comments.push(format!("HAProxy's maxconn held for its {count} binds together; max_connections is per listener"));
            }
            let listener = Listener {
                name,
                comments,
                bind: noted(bind.address.clone(), format!("bind (line {})", bind.line)),
                cluster: String::new(),
                role: role.clone(),
                fallback: None,
                balance: balance.clone(),
                max_connections: listener::max_connections(
                    bind,
                    &front.settings,
                    global.maxconn.as_ref(),
                    &servers,
                    role.value,
                ),
                backlog: bind
                    .backlog
                    .clone()
                    .or(front.settings.backlog.clone())
                    // listen(2) takes an int; 0 would refuse every connection.
                    .filter(|b| b.value > 0 && i32::try_from(b.value).is_ok())
                    .map(|b| noted(b.value, format!("backlog (line {})", b.line))),
            };
            self.pending[index].listeners.push(self.listeners.len());
            self.listeners.push(listener);
        }
    }

    /// A listener already bound where `address` would collide (same port, same or wildcard IP).
    fn overlapping(&self, address: &str) -> Option<String> {
        let new: SocketAddr = address.parse().ok()?;
        let collide = |old: SocketAddr| {
            old.port() == new.port()
                && (old.ip() == new.ip() || old.ip().is_unspecified() || new.ip().is_unspecified())
        };
        // The admin API's default address, which the output does not move.
        if collide(SocketAddr::from(([127, 0, 0, 1], 9813))) {
            return Some("admin.listen (127.0.0.1:9813, rolegate's admin API)".to_string());
        }
        self.listeners.iter().find_map(|l| {
            let old: SocketAddr = l.bind.value.parse().ok()?;
            collide(old).then(|| format!("listener {} ({})", l.name, l.bind.value))
        })
    }

    /// The cluster with these servers and settings, created when there is none.
    fn cluster_for(
        &mut self,
        back: &Proxy<'_>,
        settings: ClusterSettings,
        backends: Vec<Backend>,
        detected: Detected,
        notes: &mut Notes,
    ) -> usize {
        let mut key: Vec<&str> = backends.iter().map(|b| b.address.as_str()).collect();
        key.sort_unstable();
        let same_servers = |p: &Pending| {
            let mut other: Vec<&str> = p
                .cluster
                .backends
                .iter()
                .map(|b| b.address.as_str())
                .collect();
            other.sort_unstable();
            other == key && p.cluster.settings.protocol == settings.protocol
        };
        if let Some(i) = self
            .pending
            .iter()
            .position(|p| same_servers(p) && p.cluster.settings.same_values(&settings))
        {
            if !self.pending[i].sources.contains(&back.name().to_string()) {
                self.pending[i].sources.push(back.name().to_string());
                self.pending[i].more_auth.extend(detected.auth_line);
                self.pending[i].cluster.comments.push(format!(
                    "{} (line {}): {}",
                    back.label(),
                    back.section.header.line,
                    detected.how
                ));
            }
            return i;
        }
        if let Some(other) = self.pending.iter().find(|p| same_servers(p)) {
            notes.add(back.section.header.line, format!("{}: same servers as {} but other check or timeout settings; it gets a cluster of its own (its backends are checked twice)", back.label(), other.sources.join(", ")));
        }
        self.pending.push(Pending {
            cluster: Cluster {
                name: String::new(),
                comments: vec![format!(
                    "{} (line {}): {}",
                    back.label(),
                    back.section.header.line,
                    detected.how
                )],
                settings,
                backends,
            },
            sources: vec![back.name().to_string()],
            detected,
            more_auth: Vec::new(),
            listeners: Vec::new(),
        });
        self.pending.len() - 1
    }

    /// Names clusters and listeners uniquely, adds credentials, and returns the model.
    fn finish(mut self, workers: Option<Noted<u32>>, notes: &mut Notes) -> Model {
        let mut model = Model {
            workers,
            ..Model::default()
        };
        let mut taken: Vec<String> = Vec::new();
        for mut p in std::mem::take(&mut self.pending) {
            let name = unique(
                &cluster_name(&p.sources, p.cluster.settings.protocol),
                &mut taken,
            );
            p.cluster.name = name.clone();
            credentials::add(&mut p.cluster, &p.detected, &mut model.placeholders, notes);
            if let Some(env) = &p.cluster.settings.check.password_env {
                for &line in &p.more_auth {
                    let message = format!("tcp-check send AUTH: the password is not copied into the config; set {} to it", env.value);
                    notes.add(line, message);
                }
            }
            if p.cluster.settings.on_demote.is_none() {
                p.cluster.comments.push("HAProxy left sessions open on a server marked down (no on-marked-down shutdown-sessions); rolegate's default on_demote: close ends them at once, on_demote: keep restores HAProxy's behaviour".into());
            }
            for &l in &p.listeners {
                self.listeners[l].cluster = name.clone();
            }
            model.clusters.push(p.cluster);
        }
        let mut names: Vec<String> = Vec::new();
        for mut l in self.listeners {
            l.name = unique(&l.name, &mut names);
            model.listeners.push(l);
        }
        model
    }
}

/// Each server over the `default-server` lines of its proxy.
fn servers(s: &Settings, notes: &mut Notes) -> Vec<Server> {
    let mut defaults = Params::default();
    for d in &s.default_server {
        server::fold(&mut defaults, &d.words[1..], d.line, notes);
    }
    s.servers
        .iter()
        .filter_map(|d| server::server(d, &defaults, notes))
        .collect()
}

/// One source: its name. Several (`pg_primary`, `pg_replicas`): the whole words their names
/// start with (`pg`; `pg_rw` and `pg_ro` share `pg`, not `pg_r`), else the protocol.
fn cluster_name(sources: &[String], protocol: Protocol) -> String {
    let [first, rest @ ..] = sources else {
        return protocol.as_str().to_string();
    };
    if rest.is_empty() {
        return values::name(first);
    }
    let separator = |c: char| "_-. ".contains(c);
    let words: Vec<&str> = first.split(separator).collect();
    let mut shared = 0;
    for n in 1..=words.len() {
        let len = words[..n].iter().map(|w| w.len()).sum::<usize>() + n - 1;
        let stem = &first[..len.min(first.len())];
        let all = rest
            .iter()
            .all(|s| s.starts_with(stem) && s[stem.len()..].chars().next().is_none_or(separator));
        if !all || words[n - 1].is_empty() {
            break;
        }
        shared = len;
    }
    let stem = first[..shared].trim_end_matches(separator);
    if stem.len() >= 2 {
        values::name(stem)
    } else {
        protocol.as_str().to_string()
    }
}

fn unique(base: &str, taken: &mut Vec<String>) -> String {
    let mut name = base.to_string();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{base}-{n}");
        n += 1;
    }
    taken.push(name.clone());
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_clusters_are_named_for_the_words_their_sources_share() {
        let name = |names: &[&str]| {
            let owned: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            cluster_name(&owned, Protocol::Postgres)
        };
        assert_eq!(name(&["pg_rw", "pg_ro"]), "pg");
        assert_eq!(name(&["postgres_primary", "postgres_replicas"]), "postgres");
        assert_eq!(name(&["pxc-back", "pxc-onenode-back"]), "pxc");
        assert_eq!(name(&["primary", "replicas"]), "postgres");
        assert_eq!(name(&["master", "slave"]), "postgres");
        assert_eq!(name(&["db.main.rw", "db.main.ro"]), "db.main");
        assert_eq!(name(&["batman"]), "batman");
    }
}
