//! Sections → the rolegate model. A *route* is what a client connection follows in HAProxy:
//! a `listen` section alone, or a `frontend` and the backend its `default_backend` (or
//! unconditional `use_backend`) names. Each route becomes listeners on a cluster; routes over
//! the same servers with the same cluster-level settings share one cluster, so Patroni's usual
//! pair of `listen` sections (primary on 5000, replicas on 5001) becomes one postgres cluster
//! with a primary and a replica listener — which is what lets rolegate move both at a failover.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::cluster;
use super::detect::{self, Detected};
use super::listener;
use super::model::{
    noted, Cluster, ClusterSettings, Listener, Model, Noted, Placeholder, Protocol, Role,
};
use super::proxy::{self, At, Scope, Settings};
use super::reasons;
use super::sections::{Directive, Kind, Section};
use super::server::{self, Params, Server};
use super::values;
use super::Notes;

/// A proxy section after folding.
struct Proxy<'a> {
    section: &'a Section,
    settings: Settings,
    /// Why it is not translated (http mode, statistics page), already noted.
    skipped: bool,
}

impl Proxy<'_> {
    fn name(&self) -> &str {
        self.section.name().unwrap_or("")
    }
    fn label(&self) -> String {
        format!("{} {}", self.section.header.keyword(), self.name())
    }
}

/// `global` settings with a rolegate meaning.
#[derive(Default)]
struct Global {
    maxconn: Option<At<u64>>,
    workers: Option<Noted<u32>>,
}

pub(super) fn translate(sections: &[Section], notes: &mut Notes) -> Model {
    let mut global = Global::default();
    let mut defaults = Settings::default();
    let mut named: HashMap<&str, Settings> = HashMap::new();
    let mut proxies: Vec<Proxy<'_>> = Vec::new();
    for section in sections {
        match &section.kind {
            Kind::Global => read_global(section, &mut global, notes),
            Kind::Defaults => {
                let mut s = base(section, &defaults, &named, notes);
                proxy::fold(&mut s, &section.body, Scope::Defaults, notes);
                if let Some(name) = section.name().filter(|n| *n != "from") {
                    named.insert(name, s.clone());
                }
                defaults = s;
            }
            Kind::Listen | Kind::Frontend | Kind::Backend => {
                proxies.push(read_proxy(section, &defaults, &named, notes));
            }
            Kind::Other(kind) => notes.add(
                section.header.line,
                format!(
                    "section {}: not translated; {}",
                    section.header.text(),
                    other_section(kind)
                ),
            ),
        }
    }
    let mut builder = Builder::default();
    for front in proxies.iter().filter(|p| !p.skipped) {
        let back = match front.section.kind {
            Kind::Listen => front,
            Kind::Frontend => match route_target(front, &proxies, notes) {
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

/// The settings a section starts from: its `from NAME` defaults, else the last `defaults`.
fn base(
    section: &Section,
    last: &Settings,
    named: &HashMap<&str, Settings>,
    notes: &mut Notes,
) -> Settings {
    let words = &section.header.words;
    let Some(i) = words.iter().position(|w| w == "from") else {
        return last.clone();
    };
    let name = words.get(i + 1).map_or("", String::as_str);
    named.get(name).cloned().unwrap_or_else(|| {
        notes.add(
            section.header.line,
            format!("defaults section {name:?} is not defined; the previous defaults apply"),
        );
        last.clone()
    })
}

fn read_global(section: &Section, global: &mut Global, notes: &mut Notes) {
    for d in &section.body {
        match (d.keyword(), d.arg(1).parse::<u64>()) {
            ("maxconn", Ok(n)) => {
                global.maxconn = Some(At {
                    value: n,
                    line: d.line,
                })
            }
            ("nbthread", Ok(n)) => match u32::try_from(n) {
                Ok(n) if n > 0 => {
                    global.workers = Some(noted(n, format!("nbthread (line {})", d.line)))
                }
                _ => notes.add(d.line, "nbthread: not a thread count"),
            },
            (keyword, _) => notes.add(
                d.line,
                format!("global {keyword}: {}", reasons::global(keyword)),
            ),
        }
    }
}

fn other_section(kind: &str) -> &'static str {
    match kind {
        "resolvers" => "rolegate resolves backend host names with the system resolver again on every check",
        "userlist" => "rolegate's admin API authenticates POST requests with a bearer token (admin.token_file)",
        "peers" => "rolegate keeps no stick tables to share",
        "program" => "run other programs under systemd",
        "mailers" => "alert on rolegate's metrics instead",
        _ => "no rolegate equivalent",
    }
}

fn read_proxy<'a>(
    section: &'a Section,
    defaults: &Settings,
    named: &HashMap<&str, Settings>,
    notes: &mut Notes,
) -> Proxy<'a> {
    let scope = match section.kind {
        Kind::Listen => Scope::Listen,
        Kind::Frontend => Scope::Frontend,
        _ => Scope::Backend,
    };
    let mut settings = base(section, defaults, named, notes);
    // `listen NAME ADDRESS` (HAProxy 1.x) binds in the header.
    let header = &section.header;
    if scope != Scope::Backend && header.words.len() > 2 && header.arg(2) != "from" {
        settings.binds.push(Directive {
            line: header.line,
            words: vec!["bind".into(), header.arg(2).into()],
        });
    }
    proxy::fold(&mut settings, &section.body, scope, notes);
    let mut proxy = Proxy {
        section,
        settings,
        skipped: false,
    };
    let label = proxy.label();
    if let Some(line) = proxy.settings.stats {
        notes.add(
            header.line,
            format!(
                "{label}: a statistics page (stats at line {line}); not translated: {}",
                reasons::proxy("stats")
            ),
        );
        proxy.skipped = true;
    } else if let Some(mode) = proxy.settings.mode.as_ref().filter(|m| m.value == "http") {
        notes.add(
            header.line,
            format!(
                "{label}: mode http (line {}); not translated: rolegate is a TCP proxy",
                mode.line
            ),
        );
        proxy.skipped = true;
    }
    proxy
}

fn route_target<'p, 'a>(
    front: &Proxy<'a>,
    proxies: &'p [Proxy<'a>],
    notes: &mut Notes,
) -> Option<&'p Proxy<'a>> {
    let Some(target) = &front.settings.default_backend else {
        notes.add(
            front.section.header.line,
            format!(
                "{}: no default_backend (or unconditional use_backend); nothing to route to",
                front.label()
            ),
        );
        return None;
    };
    let found = proxies.iter().find(|p| {
        p.name() == target.value && matches!(p.section.kind, Kind::Backend | Kind::Listen)
    });
    match found {
        None => notes.add(
            target.line,
            format!("backend {:?} is not defined", target.value),
        ),
        Some(back) if back.skipped => notes.add(
            target.line,
            format!(
                "{}: routes to {}, which is not translated",
                front.label(),
                back.label()
            ),
        ),
        Some(back) => return Some(back),
    }
    None
}

/// A cluster being built: the routes that share it and their settings.
struct Pending {
    cluster: Cluster,
    /// The proxies it came from, for its name.
    sources: Vec<String>,
    detected: Detected,
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
        let role = detected
            .role
            .clone()
            .unwrap_or_else(|| listener::role_by_layout(&back.settings, &servers));
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
                notes.add(bind.line, format!("bind {}: overlaps listener {other}'s address on the same port (rolegate refuses two listeners where one binds every address); not translated", bind.address));
                continue;
            }
            let base = values::name(front.name());
            let name = if count == 1 {
                base
            } else {
                format!("{base}-{}", i + 1)
            };
            let listener = Listener {
                name,
                comments: vec![format!(
                    "{} (line {})",
                    front.label(),
                    front.section.header.line
                )],
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
                    .map(|b| noted(b.value, format!("backlog (line {})", b.line))),
            };
            self.pending[index].listeners.push(self.listeners.len());
            self.listeners.push(listener);
        }
    }

    /// A listener already bound where `address` would collide (same port, same or wildcard IP).
    fn overlapping(&self, address: &str) -> Option<String> {
        let new: SocketAddr = address.parse().ok()?;
        self.listeners.iter().find_map(|l| {
            let old: SocketAddr = l.bind.value.parse().ok()?;
            let collide = old.port() == new.port()
                && (old.ip() == new.ip() || old.ip().is_unspecified() || new.ip().is_unspecified());
            collide.then(|| format!("{} ({})", l.name, l.bind.value))
        })
    }

    /// The cluster with these servers and settings, created when there is none.
    fn cluster_for(
        &mut self,
        back: &Proxy<'_>,
        settings: ClusterSettings,
        backends: Vec<super::model::Backend>,
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
            credentials(&mut p, &mut model.placeholders, notes);
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

/// One source: its name. Several (`pg_primary`, `pg_replicas`): what their names share, else
/// the protocol.
fn cluster_name(sources: &[String], protocol: Protocol) -> String {
    let [first, rest @ ..] = sources else {
        return protocol.as_str().to_string();
    };
    if rest.is_empty() {
        return values::name(first);
    }
    let mut prefix = first.as_str();
    for s in rest {
        let common = prefix
            .char_indices()
            .zip(s.chars())
            .take_while(|((_, a), b)| a == b)
            .count();
        prefix = &prefix[..prefix
            .char_indices()
            .nth(common)
            .map_or(prefix.len(), |(i, _)| i)];
    }
    let prefix = prefix.trim_end_matches(['_', '-', '.']);
    if prefix.len() >= 2 {
        values::name(prefix)
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

/// The login rolegate's check needs and HAProxy's did not: a placeholder user and a
/// `password_env` for PostgreSQL and MySQL; for Redis, the password of a `tcp-check` AUTH.
fn credentials(p: &mut Pending, placeholders: &mut Vec<Placeholder>, notes: &mut Notes) {
    let protocol = p.cluster.settings.protocol;
    let check = &mut p.cluster.settings.check;
    let name = p.cluster.name.clone();
    let env = values::password_env(&name);
    let line = if p.detected.line > 0 {
        p.detected.line
    } else {
        1
    };
    match protocol {
        Protocol::Postgres | Protocol::Mysql => {
            let user = match &check.user {
                Some(user) => user.value.clone(),
                None => {
                    check.user = Some(noted(
                        "rolegate_monitor".to_string(),
                        "placeholder: the account rolegate's checks log in as; create it",
                    ));
                    "rolegate_monitor".to_string()
                }
            };
            let grant = match protocol {
                Protocol::Postgres => "grant it pg_monitor so that it can read replica lag",
                _ => "grant it REPLICATION CLIENT, and SLAVE MONITOR on MariaDB 10.5.9 and later, so that it can read replica lag",
            };
            notes.add(line, format!("cluster {name}: HAProxy's check logged in with no password; rolegate's {} check logs in as {user:?}: set {env} to its password ({grant})", protocol.as_str()));
            check.password_env = Some(noted(env.clone(), "placeholder: set this variable"));
            placeholders.push(Placeholder {
                env,
                what: format!("password of {user} for the checks of cluster {name}"),
            });
        }
        Protocol::Redis if p.detected.auth_line.is_some() => {
            let at = p.detected.auth_line.unwrap_or(line);
            notes.add(at, format!("tcp-check send AUTH: the password is not copied into the config; set {env} to it"));
            check.password_env = Some(noted(
                env.clone(),
                format!("the password of tcp-check send AUTH (line {at})"),
            ));
            placeholders.push(Placeholder {
                env,
                what: format!("the Redis password of cluster {name}"),
            });
        }
        _ => {}
    }
}
