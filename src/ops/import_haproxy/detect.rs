//! Which database a backend fronts and which role its listener serves, read from the health
//! check the operator wrote:
//!
//! | HAProxy check | protocol | role |
//! |---|---|---|
//! | `option httpchk` to Patroni (`check port 8008`, or a Patroni path) | postgres | by path: `/`, `/primary`, `/master`, `/leader`, `/read-write` → primary; `/replica`, `/standby-leader`, `/sync`, `/async` → replica; `/read-only`, `/health` → any |
//! | `option httpchk` to xinetd `clustercheck` (`check port 9200`) | mysql | by servers |
//! | `option mysql-check` / `pgsql-check` / `redis-check` | mysql / postgres / redis | by servers |
//! | `tcp-check` speaking Redis (`PING`, `info replication`, `expect string role:master`) | redis | `role:master` → primary, `role:slave` → replica |
//! | none, or a check rolegate cannot read | by the servers' port (5432, 3306, 6379), else tcp | by name, else by servers |
//!
//! "By name": when the check cannot say, a proxy named for a role (`pg-master`, `mysql-read`,
//! `redis_replicas`) serves that role. "By servers" is HAProxy's own layout: one active server (the rest `backup`) or
//! `balance first` means one writer at a time → primary; several active servers share the
//! load → any. rolegate then asks the database for its role itself (`pg_is_in_recovery()`,
//! `@@read_only`, `ROLE`), so the HTTP oracle or the script is replaced, not copied.

use super::model::{noted, Noted, Protocol, Role};
use super::proxy::{At, CheckType, Settings};
use super::server::Server;
use super::Notes;

/// What the check says about the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Detected {
    pub protocol: Protocol,
    /// The role the check selects; `None`: decided by the servers' layout.
    pub role: Option<Noted<Role>>,
    /// What HAProxy checked and what rolegate does instead, for the cluster's comment.
    pub how: String,
    /// The line of the check (0: there was none).
    pub line: usize,
    /// A user the HAProxy file names (`mysql-check user`, Redis `AUTH user pass`).
    pub user: Option<Noted<String>>,
    /// The line of a Redis `AUTH` whose password must move to an environment variable.
    pub auth_line: Option<usize>,
}

const PATRONI_REST_PORT: u16 = 8008;
const CLUSTERCHECK_PORT: u16 = 9200;

/// Reads the check of a backend with these settings and servers.
pub(super) fn detect(s: &Settings, servers: &[Server], notes: &mut Notes) -> Detected {
    let by_port = protocol_by_port(servers);
    let check_port = servers
        .iter()
        .find_map(|srv| srv.params.check_port.as_ref().map(|p| p.value));
    let base = |protocol, how: String, line| Detected {
        protocol,
        role: None,
        how,
        line,
        user: None,
        auth_line: None,
    };
    let Some(At { value: check, line }) = s.check.clone().or_else(|| {
        // HAProxy ≥ 2.2 runs tcp-check rules without `option tcp-check`.
        s.tcp_check.first().map(|d| At {
            value: CheckType::Tcp,
            line: d.line,
        })
    }) else {
        let protocol = by_port.unwrap_or(Protocol::Tcp);
        return base(
            protocol,
            format!("no HAProxy check type; {}", native(protocol)),
            0,
        );
    };
    match check {
        CheckType::Http(uri) => {
            let uri = s
                .http_send_uri
                .as_ref()
                .map(|u| u.value.clone())
                .or(uri)
                .unwrap_or_else(|| "/".to_string());
            http(uri, line, check_port, by_port, notes)
        }
        CheckType::Mysql(user) => Detected {
            user: user.map(|u| noted(u, format!("option mysql-check user (line {line})"))),
            ..base(
                Protocol::Mysql,
                format!(
                    "option mysql-check (line {line}); {}",
                    native(Protocol::Mysql)
                ),
                line,
            )
        },
        CheckType::Pgsql(user) => Detected {
            user: user.map(|u| noted(u, format!("option pgsql-check user (line {line})"))),
            ..base(
                Protocol::Postgres,
                format!(
                    "option pgsql-check (line {line}); {}",
                    native(Protocol::Postgres)
                ),
                line,
            )
        },
        CheckType::Redis => base(
            Protocol::Redis,
            format!(
                "option redis-check (line {line}); {}",
                native(Protocol::Redis)
            ),
            line,
        ),
        CheckType::Tcp => tcp_script(s, line, by_port, notes),
        CheckType::Other(name) => {
            let protocol = by_port.unwrap_or(Protocol::Tcp);
            notes.add(
                line,
                format!("option {name}: not translated; {}", native(protocol)),
            );
            base(
                protocol,
                format!("option {name} (line {line}) replaced; {}", native(protocol)),
                line,
            )
        }
    }
}

/// What rolegate's own check of `protocol` does.
fn native(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Postgres => "rolegate asks PostgreSQL itself (pg_is_in_recovery())",
        Protocol::Mysql => "rolegate asks MySQL itself (@@global.read_only)",
        Protocol::Redis => "rolegate asks Redis itself (ROLE)",
        Protocol::Tcp => "rolegate opens a TCP connection (protocol tcp has no roles)",
    }
}

fn protocol_by_port(servers: &[Server]) -> Option<Protocol> {
    servers.iter().find_map(|s| match s.port? {
        5432 | 5433 => Some(Protocol::Postgres),
        3306 | 3307 => Some(Protocol::Mysql),
        6379 | 6380 => Some(Protocol::Redis),
        _ => None,
    })
}

/// Patroni's REST endpoints and the role a 200 from each means.
fn patroni_role(path: &str) -> Option<Role> {
    Some(match path {
        "/" | "/primary" | "/master" | "/leader" | "/read-write" => Role::Primary,
        "/replica" | "/standby-leader" | "/standby_leader" | "/sync" | "/synchronous"
        | "/async" | "/asynchronous" | "/quorum" => Role::Replica,
        "/read-only" | "/health" | "/read-only-sync" | "/read-only-quorum" => Role::Any,
        _ => return None,
    })
}

fn http(
    uri: String,
    line: usize,
    check_port: Option<u16>,
    by_port: Option<Protocol>,
    notes: &mut Notes,
) -> Detected {
    let (path, query) = uri.split_once('?').unwrap_or((uri.as_str(), ""));
    let port = check_port.map_or(String::new(), |p| format!(" on port {p}"));
    // `/` and `/health` are every web server's paths; the others are Patroni's own.
    let specific = !matches!(path, "/" | "/health") && patroni_role(path).is_some();
    let patroni = check_port == Some(PATRONI_REST_PORT)
        || (specific && by_port.is_none_or(|p| p == Protocol::Postgres))
        || (by_port == Some(Protocol::Postgres) && check_port != Some(CLUSTERCHECK_PORT));
    let base = |protocol, how| Detected {
        protocol,
        role: None,
        how,
        line,
        user: None,
        auth_line: None,
    };
    if check_port == Some(CLUSTERCHECK_PORT) {
        notes.add(line, "clustercheck answers 200 while a Galera node is synced; rolegate routes by @@global.read_only instead, and several writable nodes are a split brain to it: set read_only=ON on the nodes that should not take writes");
        return base(
            Protocol::Mysql,
            format!(
                "HTTP check GET {uri}{port} (xinetd clustercheck, line {line}) replaced; {}",
                native(Protocol::Mysql)
            ),
        );
    }
    if !patroni {
        let protocol = by_port.unwrap_or(Protocol::Tcp);
        notes.add(
            line,
            format!(
                "option httpchk GET {uri}{port}: an HTTP health endpoint rolegate cannot ask; {}",
                native(protocol)
            ),
        );
        return base(
            protocol,
            format!(
                "HTTP check GET {uri}{port} (line {line}) replaced; {}",
                native(protocol)
            ),
        );
    }
    let Some(role) = patroni_role(path) else {
        notes.add(
            line,
            format!(
                "Patroni endpoint {path} has no rolegate role; the listener serves the primary"
            ),
        );
        return Detected {
            role: Some(noted(
                Role::Primary,
                format!("Patroni GET {path} is unknown (line {line})"),
            )),
            ..base(
                Protocol::Postgres,
                format!(
                    "Patroni REST check GET {uri}{port} (line {line}) replaced; {}",
                    native(Protocol::Postgres)
                ),
            )
        };
    };
    match path {
        "/sync" | "/synchronous" | "/async" | "/asynchronous" | "/quorum" | "/read-only-sync" | "/read-only-quorum" => notes.add(
            line,
            format!("Patroni GET {path} picks replicas by synchronous state; rolegate's replica route takes every replica within max_replica_lag"),
        ),
        "/standby-leader" | "/standby_leader" => notes.add(line, "Patroni GET /standby-leader is the leader of a standby cluster; rolegate's replica route takes every replica"),
        _ => {}
    }
    for param in query.split('&').filter(|p| !p.is_empty()) {
        match param.split_once('=') {
            Some(("lag", lag)) => notes.add(line, format!("Patroni ?lag={lag} counts WAL bytes; rolegate's max_replica_lag is a time (default 10s): set it on the cluster")),
            _ => notes.add(line, format!("Patroni query {param:?} has no rolegate equivalent")),
        }
    }
    let meaning = match role {
        Role::Primary => "200 on the leader only",
        Role::Replica => "200 on replicas only",
        Role::Any => "200 on the leader and replicas",
    };
    Detected {
        role: Some(noted(
            role,
            format!("Patroni GET {path}: {meaning} (line {line})"),
        )),
        ..base(
            Protocol::Postgres,
            format!(
                "Patroni REST check GET {uri}{port} (line {line}) replaced; {}",
                native(Protocol::Postgres)
            ),
        )
    }
}

/// A `tcp-check` script: Redis when it speaks Redis, else only its connect is kept.
fn tcp_script(s: &Settings, line: usize, by_port: Option<Protocol>, notes: &mut Notes) -> Detected {
    let mut redis = false;
    let mut role = None;
    let mut auth = None;
    for d in &s.tcp_check {
        let payload = d.words[2.min(d.words.len())..].join(" ");
        let text = payload.trim_end_matches(['\r', '\n']).to_ascii_lowercase();
        match d.arg(1) {
            "send" | "send-lf" => {
                let verb = text.split_whitespace().next().unwrap_or("");
                redis |= matches!(verb, "ping" | "info" | "role" | "auth" | "quit");
                if verb == "auth" {
                    let args: Vec<&str> = payload
                        .trim_end_matches(['\r', '\n'])
                        .split_whitespace()
                        .skip(1)
                        .collect();
                    auth = Some((d.line, (args.len() == 2).then(|| args[0].to_string())));
                }
            }
            "expect" => {
                redis |= text.contains("role:") || text.contains("+pong");
                if text.contains("role:master") {
                    role = Some(noted(
                        Role::Primary,
                        format!("tcp-check expect role:master (line {})", d.line),
                    ));
                } else if text.contains("role:slave") || text.contains("role:replica") {
                    role = Some(noted(
                        Role::Replica,
                        format!("tcp-check expect {} (line {})", d.arg(3), d.line),
                    ));
                }
            }
            _ => {}
        }
    }
    if redis {
        return Detected {
            protocol: Protocol::Redis,
            role,
            how: format!(
                "tcp-check Redis script (line {line}) replaced; {}",
                native(Protocol::Redis)
            ),
            line,
            user: auth.as_ref().and_then(|(l, user)| {
                user.clone()
                    .map(|u| noted(u, format!("tcp-check send AUTH (line {l})")))
            }),
            auth_line: auth.map(|(l, _)| l),
        };
    }
    let protocol = by_port.unwrap_or(Protocol::Tcp);
    if !s.tcp_check.iter().all(|d| d.arg(1) == "connect") {
        notes.add(
            line,
            format!("tcp-check script not translated; {}", native(protocol)),
        );
    }
    Detected {
        protocol,
        role: None,
        how: format!("tcp-check (line {line}) replaced; {}", native(protocol)),
        line,
        user: None,
        auth_line: None,
    }
}
