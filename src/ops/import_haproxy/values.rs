//! HAProxy's value syntax → rolegate's: durations (a bare number is milliseconds there, and
//! rolegate refuses bare numbers), bind and server addresses, and names.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// An HAProxy time: `<n>[us|ms|s|m|h|d]`, milliseconds without a unit.
pub(super) fn duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| {
        format!("{text:?} is not an HAProxy time (a number with us, ms, s, m, h or d)")
    })?;
    let micros = match unit {
        "us" => 1,
        "" | "ms" => 1_000,
        "s" => 1_000_000,
        "m" => 60_000_000,
        "h" => 3_600_000_000,
        "d" => 86_400_000_000,
        _ => return Err(format!("{text:?} has an unknown time unit {unit:?}")),
    };
    n.checked_mul(micros)
        .map(Duration::from_micros)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// A duration the way rolegate's file writes it: the largest unit that is exact.
pub(super) fn show(d: Duration) -> String {
    let micros = d.as_micros();
    const UNITS: [(u128, &str); 5] = [
        (3_600_000_000, "h"),
        (60_000_000, "m"),
        (1_000_000, "s"),
        (1_000, "ms"),
        (1, "us"),
    ];
    if micros == 0 {
        return "0s".to_string();
    }
    let (size, unit) = UNITS
        .iter()
        .find(|(size, _)| micros.is_multiple_of(*size))
        .copied()
        .unwrap_or((1, "us"));
    format!("{}{unit}", micros / size)
}

/// One `bind` word → rolegate bind addresses (`*:5000,:5001` is two). Host names, UNIX
/// sockets, inherited descriptors and port ranges have no rolegate equivalent.
pub(super) fn binds(word: &str) -> Result<Vec<String>, String> {
    word.split(',').map(bind).collect()
}

fn bind(text: &str) -> Result<String, String> {
    let (family, rest) = family(text)?;
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{text:?} has no port"))?;
    if port.contains('-') {
        return Err(format!(
            "{text:?} is a port range; a rolegate listener binds one port"
        ));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{text:?} has an invalid port {port:?}"))?;
    let host = unbracket(host);
    let ip: IpAddr = match (host, family) {
        ("" | "*", Family::V6) => Ipv6Addr::UNSPECIFIED.into(),
        ("" | "*", _) => Ipv4Addr::UNSPECIFIED.into(),
        (host, _) => host.parse().map_err(|_| {
            format!("{text:?}: {host:?} is a host name; rolegate binds IP addresses only (which address a name resolves to would decide the interface)")
        })?,
    };
    Ok(std::net::SocketAddr::new(ip, port).to_string())
}

/// A server address: host and, when written, port (`None`: HAProxy reuses the port the client
/// connected to). Offsets (`+1`) are refused.
pub(super) fn server(text: &str) -> Result<(String, Option<u16>), String> {
    let (_, rest) = family(text)?;
    let bracketed = rest.starts_with('[');
    // As in HAProxy, the last colon starts the port (`fd00::1:6379`), unless what precedes it
    // is no address at all (`fd00::1` written without a port).
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if bracketed && host.ends_with(']') => (host, Some(port)),
        Some((host, port))
            if !bracketed && (!host.contains(':') || host.parse::<Ipv6Addr>().is_ok()) =>
        {
            (host, Some(port))
        }
        _ => (rest, None),
    };
    let host = unbracket(host);
    if host.is_empty() || host == "*" {
        return Err(format!("{text:?} has no host"));
    }
    let port = match port {
        None | Some("") => None,
        Some(p) if p.starts_with('+') || p.starts_with('-') => {
            return Err(format!(
                "{text:?} is a port offset from the client's port; write the backend's port"
            ))
        }
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(format!("{text:?} has an invalid port {p:?}")),
            Ok(p) => Some(p),
        },
    };
    Ok((host.to_string(), port))
}

/// `host` and `port` as a rolegate backend address (IPv6 in brackets).
pub(super) fn join(host: &str, port: u16) -> String {
    match host.parse::<Ipv6Addr>() {
        Ok(v6) => format!("[{v6}]:{port}"),
        Err(_) => format!("{host}:{port}"),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    Any,
    V4,
    V6,
}

fn family(text: &str) -> Result<(Family, &str), String> {
    if let Some(rest) = text.strip_prefix("ipv4@") {
        return Ok((Family::V4, rest));
    }
    if let Some(rest) = text.strip_prefix("ipv6@") {
        return Ok((Family::V6, rest));
    }
    if text.starts_with('/') || text.starts_with("unix@") || text.starts_with("abns@") {
        return Err(format!(
            "{text:?} is a UNIX socket; rolegate listens and connects over TCP only"
        ));
    }
    if let Some((prefix, _)) = text.split_once('@') {
        return Err(format!(
            "{text:?}: the {prefix}@ address family has no rolegate equivalent"
        ));
    }
    if text.contains('$') {
        return Err(format!(
            "{text:?} uses an environment variable; write the address it stands for"
        ));
    }
    Ok((Family::Any, text))
}

fn unbracket(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// A rolegate name (`[A-Za-z0-9_.-]`) from an HAProxy one: other characters become `-`.
pub(super) fn name(text: &str) -> String {
    let name: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.is_empty() {
        "unnamed".to_string()
    } else {
        name
    }
}

/// An environment variable name from a cluster name: `pg-main` → `ROLEGATE_PG_MAIN_PASSWORD`.
pub(super) fn password_env(cluster: &str) -> String {
    let stem: String = cluster
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("ROLEGATE_{stem}_PASSWORD")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_default_to_milliseconds_and_show_exact_units() {
        assert_eq!(duration("12000"), Ok(Duration::from_secs(12)));
        assert_eq!(duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(duration("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(duration("500us"), Ok(Duration::from_micros(500)));
        assert!(duration("3 s").is_err() && duration("3x").is_err() && duration("").is_err());
        assert_eq!(show(Duration::from_secs(12)), "12s");
        assert_eq!(show(Duration::from_secs(1800)), "30m");
        assert_eq!(show(Duration::from_secs(86400)), "24h");
        assert_eq!(show(Duration::from_millis(1500)), "1500ms");
        assert_eq!(show(Duration::ZERO), "0s");
    }

    #[test]
    fn binds_cover_wildcards_families_lists_and_refusals() {
        assert_eq!(binds("*:5000"), Ok(vec!["0.0.0.0:5000".to_string()]));
        assert_eq!(binds(":5000"), Ok(vec!["0.0.0.0:5000".to_string()]));
        assert_eq!(
            binds("10.0.0.1:5000,10.0.0.1:5001"),
            Ok(vec!["10.0.0.1:5000".into(), "10.0.0.1:5001".into()])
        );
        assert_eq!(binds(":::5432"), Ok(vec!["[::]:5432".to_string()]));
        assert_eq!(binds("[::1]:5432"), Ok(vec!["[::1]:5432".to_string()]));
        assert_eq!(binds("ipv6@:5432"), Ok(vec!["[::]:5432".to_string()]));
        assert_eq!(
            binds("ipv4@127.0.0.1:5432"),
            Ok(vec!["127.0.0.1:5432".to_string()])
        );
        for bad in [
            "db.local:5432",
            "/run/pg.sock",
            "unix@/x",
            "fd@3",
            "*:5000-5005",
            "*",
            "$VIP:5000",
        ] {
            assert!(binds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn server_addresses_keep_hosts_and_optional_ports() {
        assert_eq!(server("10.0.0.1:5432"), Ok(("10.0.0.1".into(), Some(5432))));
        assert_eq!(
            server("pg-1.internal:5432"),
            Ok(("pg-1.internal".into(), Some(5432)))
        );
        assert_eq!(server("10.0.0.1"), Ok(("10.0.0.1".into(), None)));
        assert_eq!(server("[fd00::1]:6379"), Ok(("fd00::1".into(), Some(6379))));
        assert_eq!(server("fd00::1"), Ok(("fd00::1".into(), None)));
        assert_eq!(
            server("ipv6@fd00::1:6379"),
            Ok(("fd00::1".into(), Some(6379)))
        );
        assert!(server("10.0.0.1:+1").is_err());
        assert!(server("10.0.0.1:0").is_err());
        assert!(server("/tmp/.s.PGSQL.5432").is_err());
        assert_eq!(join("fd00::1", 6379), "[fd00::1]:6379");
        assert_eq!(join("db", 5432), "db:5432");
    }

    #[test]
    fn names_and_env_vars_are_made_valid() {
        assert_eq!(
            name("postgresql_127.0.0.1_5432"),
            "postgresql_127.0.0.1_5432"
        );
        assert_eq!(name("pg primary/rw"), "pg-primary-rw");
        assert_eq!(password_env("pg-main.eu"), "ROLEGATE_PG_MAIN_EU_PASSWORD");
    }
}
