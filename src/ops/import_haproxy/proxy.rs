//! A proxy section's settings: its `defaults` section's, with its own directives folded over
//! them in order, as HAProxy does (the last `option httpchk`/`mysql-check`/… wins, a later
//! `timeout connect` replaces an earlier one). Directives with no rolegate meaning are noted
//! here, where their line is known; a `defaults` section is folded once, so its lines are
//! noted once however many proxies inherit them.

use std::time::Duration;

use super::reasons;
use super::sections::Directive;
use super::values;
use super::Notes;

/// A value and the line that set it, for comments and messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct At<T> {
    pub value: T,
    pub line: usize,
}

impl<T> At<T> {
    pub fn new(value: T, line: usize) -> Self {
        At { value, line }
    }
}

/// The health-check type of a backend: HAProxy runs exactly one, the last one set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CheckType {
    /// `option httpchk [[METHOD] URI]`: the URI, when written.
    Http(Option<String>),
    /// `option mysql-check [user NAME]`.
    Mysql(Option<String>),
    /// `option pgsql-check user NAME`.
    Pgsql(Option<String>),
    /// `option redis-check` (PING only).
    Redis,
    /// `option tcp-check` (the rules are in [`Settings::tcp_check`]).
    Tcp,
    /// Another check (`ssl-hello-chk`, `ldap-check`, …): only its name is kept.
    Other(String),
}

/// What is known about a proxy after folding its directives.
#[derive(Debug, Clone, Default)]
pub(super) struct Settings {
    pub mode: Option<At<String>>,
    pub maxconn: Option<At<u64>>,
    pub backlog: Option<At<u32>>,
    pub timeout_connect: Option<At<Duration>>,
    pub timeout_client: Option<At<Duration>>,
    pub timeout_server: Option<At<Duration>>,
    pub timeout_tunnel: Option<At<Duration>>,
    pub timeout_check: Option<At<Duration>>,
    pub retries: Option<At<u32>>,
    pub balance: Option<At<String>>,
    /// `default-server` lines, inherited ones first.
    pub default_server: Vec<Directive>,
    pub check: Option<At<CheckType>>,
    /// `http-check send … uri URI` (HAProxy ≥ 2.2), which overrides the URI of `option httpchk`.
    pub http_send_uri: Option<At<String>>,
    /// `tcp-check` rules in order.
    pub tcp_check: Vec<Directive>,
    // Proxy-only (never inherited from `defaults`):
    pub binds: Vec<Directive>,
    pub servers: Vec<Directive>,
    pub default_backend: Option<At<String>>,
    /// `stats enable|uri|…` seen: a statistics page, not a database route.
    pub stats: Option<usize>,
}

/// Which kind of section a directive is folded into (some keywords only mean something in one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    Defaults,
    Listen,
    Frontend,
    Backend,
}

impl Scope {
    fn has_frontend(self) -> bool {
        matches!(self, Scope::Listen | Scope::Frontend)
    }
    fn has_backend(self) -> bool {
        matches!(self, Scope::Listen | Scope::Backend)
    }
}

/// Folds `body` over `settings`.
pub(super) fn fold(settings: &mut Settings, body: &[Directive], scope: Scope, notes: &mut Notes) {
    for d in body {
        if let Err(message) = apply(settings, d, scope) {
            notes.add(d.line, message);
        }
    }
}

/// One directive; `Err` is the note for it.
fn apply(s: &mut Settings, d: &Directive, scope: Scope) -> Result<(), String> {
    let line = d.line;
    match d.keyword() {
        "mode" => match d.arg(1) {
            "tcp" | "http" => s.mode = Some(At::new(d.arg(1).to_string(), line)),
            other => return Err(format!("mode {other} has no rolegate equivalent; rolegate is a TCP proxy")),
        },
        "maxconn" => s.maxconn = Some(At::new(number(d, 1)?, line)),
        "backlog" => s.backlog = Some(At::new(number(d, 1)?, line)),
        "retries" => s.retries = Some(At::new(number(d, 1)?, line)),
        "timeout" => timeout(s, d, d.arg(1), 2)?,
        // HAProxy < 2.1 spellings.
        "contimeout" => timeout(s, d, "connect", 1)?,
        "clitimeout" => timeout(s, d, "client", 1)?,
        "srvtimeout" => timeout(s, d, "server", 1)?,
        "balance" => s.balance = Some(At::new(d.words[1..].join(" "), line)),
        "default-server" => s.default_server.push(d.clone()),
        "option" => option(s, d)?,
        "no" if d.arg(1) == "option" => match d.arg(2) {
            "redispatch" => {
                return Err("no option redispatch: rolegate always retries another candidate after a failed connect (retries)".into())
            }
            _ => return Err(format!("{}: {}", d.text(), reasons::proxy(d.arg(2)))),
        },
        "http-check" => http_check(s, d)?,
        "tcp-check" => s.tcp_check.push(d.clone()),
        "bind" if scope.has_frontend() => s.binds.push(d.clone()),
        "server" if scope.has_backend() => s.servers.push(d.clone()),
        "default_backend" if scope.has_frontend() => {
            s.default_backend = Some(At::new(d.arg(1).to_string(), line))
        }
        "use_backend" if scope.has_frontend() && d.words.len() == 2 => {
            s.default_backend = Some(At::new(d.arg(1).to_string(), line))
        }
        "use_backend" => {
            return Err(format!(
                "{}: a conditional route; {}",
                d.text(),
                reasons::proxy("use_backend")
            ))
        }
        "stats" if scope == Scope::Defaults => {
            return Err(format!("{}: {}", d.text(), reasons::proxy("stats")))
        }
        "stats" => s.stats = Some(d.line),
        // HAProxy 1.x spelling of `option redispatch`: rolegate retries another candidate anyway.
        "redispatch" => {}
        "description" | "id" | "enabled" => {}
        "disabled" => return Err("disabled: this proxy was off in HAProxy; its translation is kept, delete it if it should stay off".into()),
        "bind" | "server" | "default_backend" => {
            return Err(format!("{} does not belong in this section; ignored", d.keyword()))
        }
        keyword => return Err(format!("{keyword}: {}", reasons::proxy(keyword))),
    }
    Ok(())
}

fn number<T: std::str::FromStr>(d: &Directive, i: usize) -> Result<T, String> {
    d.arg(i)
        .parse()
        .map_err(|_| format!("{}: {:?} is not a number", d.keyword(), d.arg(i)))
}

fn timeout(s: &mut Settings, d: &Directive, which: &str, value: usize) -> Result<(), String> {
    let slot = match which {
        "connect" => &mut s.timeout_connect,
        "client" => &mut s.timeout_client,
        "server" => &mut s.timeout_server,
        "tunnel" => &mut s.timeout_tunnel,
        "check" => &mut s.timeout_check,
        "queue" => return Err("timeout queue: rolegate queues no connections for a full backend; queue_timeout is how long a connection waits for a backend of the right role during a failover (default 5s)".into()),
        "client-fin" | "server-fin" => return Err(format!("timeout {which}: rolegate keeps half-closed sessions until both sides close or idle_timeout")),
        "http-request" | "http-keep-alive" | "tarpit" => return Err(format!("timeout {which}: HTTP-only; rolegate is a TCP proxy")),
        other => return Err(format!("timeout {other}: no rolegate equivalent")),
    };
    let time = values::duration(d.arg(value)).map_err(|e| format!("timeout {which}: {e}"))?;
    *slot = Some(At {
        value: time,
        line: d.line,
    });
    Ok(())
}

fn option(s: &mut Settings, d: &Directive) -> Result<(), String> {
    let rest = &d.words[2.min(d.words.len())..];
    let check = match d.arg(1) {
        // `option httpchk`, `option httpchk URI`, `option httpchk METHOD URI [VERSION]`.
        "httpchk" => CheckType::Http(match rest {
            [] => None,
            [uri] => Some(uri.clone()),
            [_method, uri, ..] => Some(uri.clone()),
        }),
        "mysql-check" => CheckType::Mysql(user_arg(rest)),
        "pgsql-check" => CheckType::Pgsql(user_arg(rest)),
        "redis-check" => CheckType::Redis,
        "tcp-check" => CheckType::Tcp,
        name @ ("ssl-hello-chk" | "ldap-check" | "smtpchk" | "spop-check" | "external-check") => {
            CheckType::Other(name.to_string())
        }
        // rolegate tries another candidate after a failed connect anyway.
        "redispatch" => return Ok(()),
        // rolegate splices whenever it pays (listeners[].transfer: auto).
        "splice-auto" | "splice-request" | "splice-response" => return Ok(()),
        "tcplog" | "httplog" | "dontlognull" | "log-health-checks" | "logasap" | "log-separate-errors" => {
            return Err(format!("option {}: {}", d.arg(1), reasons::proxy("log")))
        }
        "tcpka" | "clitcpka" | "srvtcpka" => {
            return Err(format!("option {}: rolegate sets no TCP keepalive; a dead peer is noticed by idle_timeout or by the health checks", d.arg(1)))
        }
        "allbackups" => {
            return Err("option allbackups: rolegate has no backup tier; every backend is a candidate of the roles it reports".into())
        }
        other => return Err(format!("option {other}: {}", http_or_generic(other))),
    };
    s.check = Some(At::new(check, d.line));
    Ok(())
}

fn http_or_generic(option: &str) -> &'static str {
    const HTTP: &[&str] = &[
        "forwardfor",
        "http-server-close",
        "httpclose",
        "http-keep-alive",
        "http-buffer-request",
        "http-pretend-keepalive",
        "http-no-delay",
        "http-use-proxy-header",
        "originalto",
        "http-ignore-probes",
        "http-restrict-req-hdr-names",
        "accept-invalid-http-request",
        "accept-invalid-http-response",
        "forceclose",
        "http_proxy",
    ];
    if HTTP.contains(&option) {
        reasons::proxy("errorfile")
    } else {
        "no rolegate equivalent"
    }
}

/// `user NAME [post-41|pre-41]`.
fn user_arg(rest: &[String]) -> Option<String> {
    match rest {
        [kw, name, ..] if kw == "user" => Some(name.clone()),
        _ => None,
    }
}

fn http_check(s: &mut Settings, d: &Directive) -> Result<(), String> {
    match d.arg(1) {
        // The status a Patroni or clustercheck endpoint answers is what picks the nodes;
        // rolegate asks the database for its role directly, so any expectation is consumed.
        "expect" if !d.words.iter().any(|w| w == "!") => Ok(()),
        "expect" => Err(format!("{}: a negated expectation; rolegate reads the role from the database instead", d.text())),
        "send" => {
            if let Some(i) = d.words.iter().position(|w| w == "uri") {
                s.http_send_uri = Some(At {
                    value: d.arg(i + 1).to_string(),
                    line: d.line,
                });
            }
            if s.check.is_none() {
                s.check = Some(At::new(CheckType::Http(None), d.line));
            }
            Ok(())
        }
        "connect" | "comment" | "set-var" | "unset-var" => Ok(()),
        "disable-on-404" => Err("http-check disable-on-404: drain a backend with POST /backends/{cluster}/{backend}/drain instead".into()),
        "send-state" => Err("http-check send-state: no rolegate equivalent".into()),
        other => Err(format!("http-check {other}: no rolegate equivalent")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold_text(text: &str, scope: Scope) -> (Settings, Notes) {
        let mut notes = Notes::default();
        let body: Vec<Directive> = text
            .lines()
            .enumerate()
            .map(|(i, l)| Directive {
                line: i + 1,
                words: super::super::lex::words(l).unwrap(),
            })
            .collect();
        let mut s = Settings::default();
        fold(&mut s, &body, scope, &mut notes);
        (s, notes)
    }

    #[test]
    fn timeouts_accept_both_spellings_and_bare_milliseconds() {
        let (s, notes) = fold_text("timeout connect 4s\nclitimeout 50000\ntimeout server 30m\ntimeout check 5s\ntimeout tunnel 1h", Scope::Listen);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(s.timeout_connect.unwrap().value, Duration::from_secs(4));
        assert_eq!(
            s.timeout_client.unwrap(),
            At {
                value: Duration::from_secs(50),
                line: 2
            }
        );
        assert_eq!(s.timeout_server.unwrap().value, Duration::from_secs(1800));
        assert_eq!(s.timeout_check.unwrap().value, Duration::from_secs(5));
        assert_eq!(s.timeout_tunnel.unwrap().value, Duration::from_secs(3600));
    }

    #[test]
    fn the_last_check_type_wins_and_httpchk_takes_its_uri() {
        let (s, _) = fold_text(
            "option tcp-check\noption httpchk OPTIONS /primary",
            Scope::Backend,
        );
        assert_eq!(
            s.check.unwrap(),
            At {
                value: CheckType::Http(Some("/primary".into())),
                line: 2
            }
        );
        let (s, _) = fold_text("option httpchk /replica", Scope::Backend);
        assert_eq!(
            s.check.unwrap().value,
            CheckType::Http(Some("/replica".into()))
        );
        let (s, _) = fold_text(
            "option httpchk\nhttp-check send meth GET uri /read-only ver HTTP/1.1",
            Scope::Backend,
        );
        assert_eq!(s.check.unwrap().value, CheckType::Http(None));
        assert_eq!(s.http_send_uri.unwrap().value, "/read-only");
        let (s, _) = fold_text(
            "option mysql-check user haproxy_check post-41",
            Scope::Backend,
        );
        assert_eq!(
            s.check.unwrap().value,
            CheckType::Mysql(Some("haproxy_check".into()))
        );
    }

    #[test]
    fn untranslatable_directives_are_noted_with_a_reason() {
        let (s, notes) = fold_text(
            "acl is_rw dst_port 5000\nuse_backend pg_rw if is_rw\nuse_backend pg_all\noption tcplog\nbind *:5000\ntimeout queue 1m\noption redispatch\nhttp-check expect status 200\nredispatch",
            Scope::Frontend,
        );
        assert_eq!(s.default_backend.unwrap().value, "pg_all");
        assert_eq!(s.binds.len(), 1);
        let noted: Vec<_> = notes
            .iter()
            .map(|n| (n.line, n.message.split(':').next().unwrap().to_string()))
            .collect();
        assert_eq!(
            noted,
            [
                (1, "acl".to_string()),
                (2, "use_backend pg_rw if is_rw".into()),
                (4, "option tcplog".into()),
                (6, "timeout queue".into())
            ]
        );
    }

    #[test]
    fn proxy_only_keywords_are_refused_in_the_wrong_section() {
        let (s, notes) = fold_text("server a 10.0.0.1:5432\nbind *:5000", Scope::Defaults);
        assert!(s.servers.is_empty() && s.binds.is_empty());
        assert_eq!(notes.iter().count(), 2);
    }
}
