//! Address parsing for binds and backends, and the overlap rule for binds. Pure functions
//! returning [`Problem`]s; the validator attaches path and position.

use std::net::{IpAddr, SocketAddr};

use crate::config::error::Problem;
use crate::config::BackendAddress;

/// A bind address: an IP literal and a port. Port 0 is allowed (tests bind ephemeral ports).
/// A host name is refused: which address it resolves to at startup would decide which
/// interface accepts database traffic.
pub(crate) fn bind(text: &str) -> Result<SocketAddr, Problem> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    const HINT: &str = "write an IP address and port, e.g. 0.0.0.0:5432 or 127.0.0.1:5432";
    let (host, _) = split_port(text).map_err(|p| p.hint(HINT))?;
    if looks_like_ip(host) {
        return Err(invalid(text, &format!("invalid IP address {host:?}")).hint(HINT));
    }
    Err(Problem::new(format!(
        "invalid bind address {text:?}: a host name is not allowed here"
    ))
    .hint(HINT))
}

/// A backend address: `IP:PORT`, `[IPv6]:PORT` or `HOST:PORT` (resolved again on each check).
pub(crate) fn backend(text: &str) -> Result<BackendAddress, Problem> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return match addr.port() {
            0 => Err(invalid(text, "port 0 cannot be connected to")),
            _ => Ok(BackendAddress::Ip(addr)),
        };
    }
    let (host, port) = split_port(text)?;
    if port == 0 {
        return Err(invalid(text, "port 0 cannot be connected to"));
    }
    if looks_like_ip(host) {
        return Err(invalid(text, &format!("invalid IP address {host:?}")));
    }
    if !is_dns_name(host) {
        return Err(invalid(text, &format!("{host:?} is not a valid host name")));
    }
    Ok(BackendAddress::Dns {
        host: host.to_string(),
        port,
    })
}

/// Whether two listeners would fight over the same socket: same port and the same IP, or one
/// of them on the unspecified address (0.0.0.0 / [::]), which takes the port on every address.
/// Port 0 never overlaps: the kernel picks a fresh port for each.
pub(crate) fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn invalid(text: &str, reason: &str) -> Problem {
    Problem::new(format!("invalid socket address {text:?}: {reason}")).hint(
        "write HOST:PORT or IP:PORT with a port from 1 to 65535, and IPv6 in brackets: [::1]:5432",
    )
}

/// Splits `host:port`, with messages for the usual mistakes.
fn split_port(text: &str) -> Result<(&str, u16), Problem> {
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(invalid(text, "missing port"));
    };
    if host.is_empty() {
        return Err(invalid(text, "missing host"));
    }
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.contains(':') && host.parse::<IpAddr>().is_ok() && !text.starts_with('[') {
        return Err(invalid(text, "an IPv6 address needs brackets"));
    }
    if port.is_empty() {
        return Err(invalid(text, "missing port"));
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(text, &format!("port {port:?} is not a number")));
    }
    let port = port
        .parse::<u16>()
        .map_err(|_| invalid(text, "invalid port"))?;
    Ok((host, port))
}

/// Digits and dots only (`10.0.0.256`), or anything with a colon: meant as an IP, so it must
/// parse as one rather than be sent to DNS.
fn looks_like_ip(host: &str) -> bool {
    host.contains(':') || host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// RFC 1123 host name, with `_` tolerated (it appears in real internal names). A trailing dot
/// (fully qualified) is allowed.
fn is_dns_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend_err(text: &str) -> String {
        backend(text)
            .map(|a| a.to_string())
            .unwrap_or_else(|p| p.message)
    }

    #[test]
    fn backends_accept_ip_ipv6_and_dns() {
        assert_eq!(backend_err("10.0.0.1:5432"), "10.0.0.1:5432");
        assert_eq!(backend_err("[::1]:5432"), "[::1]:5432");
        assert_eq!(
            backend_err("db.example.internal:5432"),
            "db.example.internal:5432"
        );
        assert_eq!(
            backend_err("db-1.rds.amazonaws.com.:3306"),
            "db-1.rds.amazonaws.com.:3306"
        );
    }

    #[test]
    fn backends_name_the_mistake() {
        let reason = |text: &str| {
            let message = backend_err(text);
            message.rsplit(": ").next().unwrap_or_default().to_string()
        };
        assert_eq!(reason("10.0.0.1:99999"), "invalid port");
        assert_eq!(reason("10.0.0.1"), "missing port");
        assert_eq!(reason("db:"), "missing port");
        assert_eq!(reason("db:http"), "port \"http\" is not a number");
        assert_eq!(reason(":5432"), "missing host");
        assert_eq!(reason("::1:5432"), "an IPv6 address needs brackets");
        assert_eq!(
            reason("10.0.0.256:5432"),
            "invalid IP address \"10.0.0.256\""
        );
        assert_eq!(
            reason("db host:5432"),
            "\"db host\" is not a valid host name"
        );
        assert_eq!(reason("10.0.0.1:0"), "port 0 cannot be connected to");
    }

    #[test]
    fn binds_need_an_ip() {
        assert!(bind("0.0.0.0:5432").is_ok());
        assert!(bind("[::]:0").is_ok());
        let problem = bind("localhost:5432").expect_err("dns name");
        assert!(problem.message.contains("host name is not allowed"));
        assert!(bind("0.0.0.0:70000").is_err());
        assert!(bind("0.0.0.0").is_err());
    }

    #[test]
    fn overlap_rule() {
        let a = |s: &str| s.parse::<SocketAddr>().expect("addr");
        assert!(overlaps(a("0.0.0.0:5432"), a("127.0.0.1:5432")));
        assert!(overlaps(a("[::]:5432"), a("10.0.0.1:5432")));
        assert!(overlaps(a("10.0.0.1:5432"), a("10.0.0.1:5432")));
        assert!(!overlaps(a("10.0.0.1:5432"), a("10.0.0.2:5432")));
        assert!(!overlaps(a("0.0.0.0:5432"), a("0.0.0.0:5433")));
        assert!(!overlaps(a("127.0.0.1:0"), a("127.0.0.1:0")));
    }
}
