//! The frontend side of a route → rolegate listeners: one per bind address, with the role the
//! check selects (or the servers' layout), `balance`, and `max_connections` from `maxconn`.
//!
//! `max_connections` is the smallest limit HAProxy would have applied: `maxconn` on the
//! `bind`, on the proxy (or its `defaults`), the process-wide `global maxconn`, and the
//! servers' own `maxconn` (HAProxy queues above them): the largest one for a primary listener
//! (one server takes the writes), their sum for replica and `any` listeners.

use super::model::{noted, Noted, Protocol, Role};
use super::proxy::{At, Settings};
use super::sections::Directive;
use super::server::Server;
use super::values;
use super::Notes;

/// A bind address with the limits written on its `bind` line.
#[derive(Debug, Clone)]
pub(super) struct Bind {
    pub address: String,
    pub line: usize,
    pub maxconn: Option<At<u64>>,
    pub backlog: Option<At<u32>>,
}

const BIND_FLAGS: &[&str] = &[
    "v4v6",
    "v6only",
    "transparent",
    "accept-proxy",
    "ssl",
    "tfo",
    "defer-accept",
    "strict-sni",
    "prefer-client-ciphers",
    "no-sslv3",
    "no-tlsv10",
    "no-tlsv11",
    "no-tlsv12",
    "no-tlsv13",
    "force-tlsv12",
    "force-tlsv13",
    "no-tls-tickets",
    "allow-0rtt",
    "quic-force-retry",
    "generate-certificates",
    "expose-fd",
];

/// Every address of `bind` lines (and of an old-style `listen NAME ADDRESS` header).
pub(super) fn binds(lines: &[Directive], notes: &mut Notes) -> Vec<Bind> {
    let mut out = Vec::new();
    for d in lines {
        let addresses = match values::binds(d.arg(1)) {
            Ok(a) => a,
            Err(message) => {
                notes.add(d.line, format!("bind {message}"));
                continue;
            }
        };
        let (mut maxconn, mut backlog) = (None, None);
        let mut i = 2;
        while i < d.words.len() {
            let key = d.arg(i);
            let value = d.arg(i + 1);
            i += if BIND_FLAGS.contains(&key) { 1 } else { 2 };
            match (key, value.parse::<u64>()) {
                ("maxconn", Ok(n)) => maxconn = Some(At::new(n, d.line)),
                ("backlog", Ok(n)) => backlog = u32::try_from(n).ok().map(|n| At::new(n, d.line)),
                ("name" | "v4v6" | "v6only" | "id", _) => {}
                // rolegate binds with IP_FREEBIND: a VIP not yet on the host is fine.
                ("transparent", _) => {}
                ("accept-proxy", _) => notes.add(d.line, "bind accept-proxy: this listener reads no PROXY protocol header from an upstream balancer"),
                ("ssl" | "crt" | "crt-list" | "ca-file" | "verify" | "alpn" | "ciphers", _) => notes.add(d.line, format!("bind {key}: rolegate terminates no TLS; clients negotiate TLS with the database through it")),
                _ => notes.add(d.line, format!("bind {key}: no rolegate equivalent")),
            }
        }
        for address in addresses {
            out.push(Bind {
                address,
                line: d.line,
                maxconn: maxconn.clone(),
                backlog: backlog.clone(),
            });
        }
    }
    out
}

/// The role when the check does not select one: by the proxies' names (operators name them
/// for the role their check script picked: `master`, `mysql-read`), else by the servers'
/// layout. A tcp cluster has no roles, so only its layout counts.
pub(super) fn role_unsaid(
    names: [&str; 2],
    protocol: Protocol,
    back: &Settings,
    servers: &[Server],
) -> Noted<Role> {
    if protocol != Protocol::Tcp {
        for name in names {
            if let Some(role) = role_by_name(name) {
                let comment = format!("by the name {name:?}; the HAProxy check did not say");
                return noted(role, comment);
            }
        }
    }
    role_by_layout(back, servers)
}

fn role_by_name(name: &str) -> Option<Role> {
    const PRIMARY: &[&str] = &[
        "master", "primary", "leader", "write", "writer", "writes", "rw",
    ];
    const REPLICA: &[&str] = &[
        "slave", "slaves", "replica", "replicas", "standby", "read", "reader", "reads", "ro",
        "readonly",
    ];
    let words: Vec<String> = name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .map(str::to_ascii_lowercase)
        .collect();
    let has = |set: &[&str]| words.iter().any(|w| set.contains(&w.as_str()));
    match (has(PRIMARY), has(REPLICA)) {
        (true, false) => Some(Role::Primary),
        (false, true) => Some(Role::Replica),
        _ => None,
    }
}

fn role_by_layout(back: &Settings, servers: &[Server]) -> Noted<Role> {
    let active = servers.iter().filter(|s| !s.is_backup()).count();
    if let Some(b) = back.balance.as_ref().filter(|b| b.value == "first") {
        return noted(
            Role::Primary,
            format!("balance first (line {}): one server at a time", b.line),
        );
    }
    if active <= 1 && servers.len() > 1 {
        return noted(
            Role::Primary,
            "one active server, the others backup: one server at a time",
        );
    }
    if active <= 1 {
        return noted(Role::Primary, "one server");
    }
    noted(
        Role::Any,
        format!("{active} active servers shared the load"),
    )
}

/// `balance` for a replica or `any` listener (a primary listener has one candidate).
pub(super) fn balance(back: &Settings, notes: &mut Notes) -> Option<Noted<&'static str>> {
    let b = back.balance.as_ref()?;
    let algorithm = b.value.split_whitespace().next().unwrap_or("");
    match algorithm {
        "roundrobin" | "static-rr" => Some(noted(
            "round_robin",
            format!("balance {algorithm} (line {})", b.line),
        )),
        "leastconn" => Some(noted(
            "least_conn",
            format!("balance leastconn (line {})", b.line),
        )),
        "first" => None,
        other => {
            notes.add(b.line, format!("balance {other}: rolegate balances round_robin or least_conn; round_robin is used"));
            None
        }
    }
}

/// The smallest of the limits HAProxy applied to connections through this bind.
pub(super) fn max_connections(
    bind: &Bind,
    front: &Settings,
    global: Option<&At<u64>>,
    servers: &[Server],
    role: Role,
) -> Option<Noted<u64>> {
    let mut limits: Vec<(u64, String)> = Vec::new();
    if let Some(m) = &bind.maxconn {
        limits.push((m.value, format!("bind maxconn (line {})", m.line)));
    }
    if let Some(m) = &front.maxconn {
        limits.push((m.value, format!("maxconn (line {})", m.line)));
    }
    if let Some(m) = global {
        limits.push((m.value, format!("global maxconn (line {})", m.line)));
    }
    let active: Vec<&Server> = servers.iter().filter(|s| !s.is_backup()).collect();
    let per_server: Option<Vec<u64>> = active
        .iter()
        .map(|s| s.params.maxconn.as_ref().map(|m| m.value))
        .collect();
    if let Some(per_server) = per_server.filter(|p| !p.is_empty()) {
        let (n, how) = match role {
            Role::Primary => (
                per_server.iter().copied().max().unwrap_or(0),
                "the primary server's maxconn",
            ),
            _ => (
                per_server.iter().fold(0u64, |a, b| a.saturating_add(*b)),
                "the sum of the servers' maxconn",
            ),
        };
        limits.push((n, how.to_string()));
    }
    let (n, why) = limits
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .min_by_key(|(n, _)| *n)?;
    Some(noted(n, why))
}
