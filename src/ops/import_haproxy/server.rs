//! `server` and `default-server` parameters: a server's effective settings are its
//! `default-server` lines (inherited ones first) with its own parameters over them. Each value
//! keeps the line that wrote it, so a `default-server` parameter with no rolegate meaning is
//! reported once, at the `default-server` line, not once per server.

use std::time::Duration;

use super::proxy::At;
use super::sections::Directive;
use super::values;
use super::Notes;

/// One server as HAProxy would run it.
#[derive(Debug, Clone, Default)]
pub(super) struct Server {
    pub name: String,
    pub line: usize,
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
}

/// The parameters rolegate has a use for.
#[derive(Debug, Clone, Default)]
pub(super) struct Params {
    pub check: Option<At<bool>>,
    pub inter: Option<At<Duration>>,
    pub downinter: Option<At<Duration>>,
    pub rise: Option<At<u32>>,
    pub fall: Option<At<u32>>,
    /// `port N`: where the check goes (Patroni's REST port, clustercheck's xinetd port).
    pub check_port: Option<At<u16>>,
    pub backup: Option<At<bool>>,
    pub maxconn: Option<At<u64>>,
    /// `on-marked-down shutdown-sessions`.
    pub shutdown_sessions: Option<At<bool>>,
}

/// Parameters that take no value; those not listed below as having a use are noted.
const FLAGS: &[&str] = &[
    "check",
    "no-check",
    "backup",
    "no-backup",
    "ssl",
    "no-ssl",
    "check-ssl",
    "no-check-ssl",
    "send-proxy",
    "send-proxy-v2",
    "send-proxy-v2-ssl",
    "send-proxy-v2-ssl-cn",
    "no-send-proxy",
    "agent-check",
    "no-agent-check",
    "disabled",
    "enabled",
    "non-stick",
    "stick",
    "tfo",
    "check-send-proxy",
    "allow-0rtt",
    "no-tls-tickets",
    "force-sslv3",
    "force-tlsv10",
    "force-tlsv11",
    "force-tlsv12",
    "force-tlsv13",
    "no-sslv3",
    "no-tlsv10",
    "no-tlsv11",
    "no-tlsv12",
    "no-tlsv13",
    "ssl-reuse",
    "no-ssl-reuse",
    "tls-tickets",
    "no-verifyhost",
    "check-via-socks4",
    "ws",
];

/// Folds `words` (the parameters after `default-server`, or after `server NAME ADDR`).
pub(super) fn fold(params: &mut Params, words: &[String], line: usize, notes: &mut Notes) {
    let mut i = 0;
    while i < words.len() {
        let key = words[i].as_str();
        let value = words.get(i + 1).map(String::as_str);
        let flag = FLAGS.contains(&key);
        i += if flag { 1 } else { 2 };
        if let Err(message) = apply(params, key, value.filter(|_| !flag), line) {
            notes.add(line, message);
        }
    }
}

fn apply(p: &mut Params, key: &str, value: Option<&str>, line: usize) -> Result<(), String> {
    let at = |v| Some(At::new(v, line));
    let needs = || value.ok_or_else(|| format!("{key} needs a value"));
    let time = || -> Result<Duration, String> {
        values::duration(needs()?).map_err(|e| format!("{key}: {e}"))
    };
    let count = || -> Result<u64, String> {
        let text = needs()?;
        text.parse()
            .map_err(|_| format!("{key}: {text:?} is not a number"))
    };
    match key {
        "check" => p.check = at(true),
        "no-check" => p.check = at(false),
        "backup" => p.backup = at(true),
        "no-backup" => p.backup = at(false),
        "inter" => p.inter = Some(At::new(time()?, line)),
        "downinter" => p.downinter = Some(At::new(time()?, line)),
        "rise" => p.rise = Some(At::new(u32::try_from(count()?).map_err(|_| "rise is too large")?, line)),
        "fall" => p.fall = Some(At::new(u32::try_from(count()?).map_err(|_| "fall is too large")?, line)),
        "port" => {
            let port = u16::try_from(count()?).map_err(|_| "port is too large")?;
            p.check_port = Some(At::new(port, line));
        }
        "maxconn" => p.maxconn = Some(At::new(count()?, line)),
        "on-marked-down" => match value {
            Some("shutdown-sessions") => p.shutdown_sessions = Some(At::new(true, line)),
            other => return Err(format!("on-marked-down {}: no rolegate equivalent", other.unwrap_or(""))),
        },
        "on-marked-up" => {
            return Err("on-marked-up shutdown-backup-sessions: rolegate has no backup tier; sessions follow the role (on_demote)".into())
        }
        "fastinter" => {
            return Err("fastinter: rolegate checks at interval, and at down_interval while a backend is down or the cluster has no primary".into())
        }
        "weight" | "minconn" | "maxqueue" | "slowstart" => {
            return Err(format!("{key}: rolegate spreads connections evenly (balance: round_robin or least_conn); per-server {key} has no equivalent"))
        }
        "addr" => {
            return Err("addr: rolegate checks each backend at its own address".into())
        }
        "resolvers" | "resolve-prefer" | "resolve-opts" | "resolve-net" | "init-addr" => {
            // rolegate resolves a backend host name again on every check.
            return Ok(());
        }
        "id" | "cookie" | "observe" | "error-limit" | "on-error" | "track" | "agent-port"
        | "agent-inter" | "agent-send" | "agent-addr" | "proto" | "alpn" | "pool-max-conn"
        | "pool-purge-delay" | "pool-low-conn" | "max-reuse" | "source" | "namespace" => {
            return Err(format!("{key}: no rolegate equivalent"))
        }
        "send-proxy" | "send-proxy-v2" | "send-proxy-v2-ssl" | "send-proxy-v2-ssl-cn" => {
            return Err(format!("{key}: rolegate sends no PROXY protocol header to this backend"))
        }
        "ssl" | "check-ssl" | "verify" | "ca-file" | "crt" | "sni" | "check-sni" | "ciphers"
        | "ciphersuites" | "crl-file" | "verifyhost" | "no-verifyhost" | "ssl-min-ver"
        | "ssl-max-ver" => {
            return Err(format!("{key}: rolegate does not wrap connections in TLS; clients negotiate TLS with the database (health checks: check.tls)"))
        }
        "disabled" => {
            return Err("disabled: rolegate has no start-disabled backends; POST /backends/{cluster}/{backend}/disable after start".into())
        }
        "enabled" => {}
        other => return Err(format!("{other}: no rolegate equivalent")),
    }
    Ok(())
}

/// Parses `server NAME ADDRESS PARAMS…` over `defaults` (the folded `default-server` lines).
pub(super) fn server(d: &Directive, defaults: &Params, notes: &mut Notes) -> Option<Server> {
    let (name, address) = (d.arg(1), d.arg(2));
    if address.is_empty() {
        notes.add(d.line, format!("server {name:?} has no address"));
        return None;
    }
    let (host, port) = match values::server(address) {
        Ok(hp) => hp,
        Err(message) => {
            notes.add(d.line, format!("server {name}: {message}"));
            return None;
        }
    };
    let mut params = defaults.clone();
    fold(&mut params, &d.words[3..], d.line, notes);
    Some(Server {
        name: name.to_string(),
        line: d.line,
        host,
        port,
        params,
    })
}

impl Server {
    pub fn is_backup(&self) -> bool {
        self.params.backup.as_ref().is_some_and(|b| b.value)
    }

    pub fn is_checked(&self) -> bool {
        self.params.check.as_ref().is_some_and(|c| c.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        super::super::lex::words(text).unwrap()
    }

    #[test]
    fn server_params_override_default_server() {
        let mut notes = Notes::default();
        let mut defaults = Params::default();
        fold(
            &mut defaults,
            &words("inter 3s fall 3 rise 2 on-marked-down shutdown-sessions"),
            4,
            &mut notes,
        );
        let d = Directive {
            line: 7,
            words: words("server pg1 10.0.0.1:5432 maxconn 100 check port 8008 inter 1s backup"),
        };
        let s = server(&d, &defaults, &mut notes).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!((s.host.as_str(), s.port), ("10.0.0.1", Some(5432)));
        assert_eq!(
            s.params.inter,
            Some(At {
                value: Duration::from_secs(1),
                line: 7
            })
        );
        assert_eq!(s.params.fall, Some(At { value: 3, line: 4 }));
        assert_eq!(s.params.check_port.as_ref().unwrap().value, 8008);
        assert_eq!(s.params.shutdown_sessions.as_ref().unwrap().line, 4);
        assert!(s.is_backup() && s.is_checked());
        assert_eq!(s.params.maxconn.unwrap().value, 100);
    }

    #[test]
    fn unknown_or_untranslatable_params_are_noted_at_their_line() {
        let mut notes = Notes::default();
        let d = Directive {
            line: 9,
            words: words(
                "server r1 10.0.0.1:6379 check weight 10 send-proxy ssl verify none fastinter 500",
            ),
        };
        let s = server(&d, &Params::default(), &mut notes).unwrap();
        assert!(s.is_checked());
        let keys: Vec<_> = notes
            .iter()
            .map(|n| n.message.split(':').next().unwrap().to_string())
            .collect();
        assert_eq!(keys, ["weight", "send-proxy", "ssl", "verify", "fastinter"]);
        assert!(notes.iter().all(|n| n.line == 9));
    }

    #[test]
    fn a_bad_address_drops_the_server_with_a_note() {
        let mut notes = Notes::default();
        let d = Directive {
            line: 3,
            words: words("server s /var/run/pg.sock check"),
        };
        assert!(server(&d, &Params::default(), &mut notes).is_none());
        assert!(notes.iter().next().unwrap().message.contains("UNIX socket"));
    }
}
