//! The bodies of rolegate's fuzz targets, one function per target: bytes in, no panic out.
//!
//! They live in this file (not in `fuzz_targets/`) so that `tests/it/fuzz_smoke.rs` can include it
//! with `#[path]` and run the committed corpus through the very same code in the normal test
//! suite, without libFuzzer or a nightly flag. So this file may only use what the main crate
//! depends on: `rolegate`, `redis`, `hyper`.
//!
//! Beyond "no panic", each target asserts a few invariants that must hold for every input
//! (a secret never echoed in an error, a parsed LSN printing back to itself, ...). An assertion
//! failure is a crash to libFuzzer, so a broken invariant is reported like a panic.
#![allow(clippy::missing_panics_doc)]

use std::net::SocketAddr;

use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Uri};
use rolegate::config::{Config, ConfigDiff, Secret};
use rolegate::control_plane::checks::parse::{self, mysql, postgres, redis as redis_parse};

/// Value of every environment variable whose name starts with `A` (others are unset), for
/// `password_env` / `token_env` in fuzzed configs. It must never show up in any output.
pub const ENV_SECRET: &str = "FuzzEnvSecret-9f3b";

/// The admin token of the admin target.
pub const ADMIN_TOKEN: &str = "fuzz-admin-token-51c2";

/// Config loader and validator: YAML text → `Config` or every error, with positions.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // `Config::load` reads the file with `read_to_string`: UTF-8 or a read error
    };
    // `*_file` keys read files from the fuzzing machine (a FIFO or /dev/stdin would block): not
    // what is under test here, and the reading is covered by the secret module's tests.
    if text.contains("_file") {
        return;
    }
    let env = |name: &str| name.starts_with('A').then(|| ENV_SECRET.to_string());
    match Config::from_yaml_str_with_env(text, None, &env) {
        Ok(config) => {
            // A valid config diffs to nothing against itself and prints no secret.
            assert!(ConfigDiff::between(&config, &config).is_empty());
            let _ = ConfigDiff::initial(&config);
            if !text.contains(ENV_SECRET) {
                assert!(!format!("{config:?}").contains(ENV_SECRET));
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "an error list is never empty");
            let shown = errors.to_string();
            if !text.contains(ENV_SECRET) {
                assert!(!shown.contains(ENV_SECRET), "secret in errors: {shown}");
            }
            for error in errors.iter() {
                let _ = (error.path(), error.location());
            }
        }
    }
}

/// Redis replies as they come off the wire (RESP, parsed by the redis crate the checks use):
/// `ROLE`, `INFO replication`, error replies.
pub fn redis_reply(data: &[u8]) {
    // The whole input as INFO text, also when it is not RESP.
    let info = redis_parse::parse_info(&String::from_utf8_lossy(data));
    if let Ok(role) = redis_parse::role_from_info(&info) {
        let _ = redis_parse::facts(&role, Some(&info));
    }
    let Ok(value) = redis::parse_redis_value(data) else {
        return;
    };
    let described = redis_parse::describe(&value);
    assert!(described.chars().count() <= 123, "describe is bounded");
    let _ = redis_parse::text(&value);
    match redis_parse::parse_role(&value) {
        Ok(role) => {
            let info = redis_parse::text(&value).map(|t| redis_parse::parse_info(&t));
            if let Ok(facts) = redis_parse::facts(&role, info.as_ref()) {
                assert_eq!(
                    facts.replica.is_some(),
                    matches!(role, redis_parse::ReplyRole::Replica { .. })
                );
            }
        }
        Err(failure) => {
            let _ = failure.to_string();
        }
    }
    if let Some((code, message)) = redis_parse::server_error(&value) {
        let unknown = redis_parse::is_unknown_command(code, message);
        let failure = redis_parse::error_reply_failure("ROLE", code, message, Some("monitor"));
        let _ = (unknown, failure.to_string());
    }
}

/// Splits `text` on `|` into columns; `\N` is SQL NULL (as `psql` prints it with `\pset null`).
fn columns(text: &str) -> Vec<Option<&str>> {
    text.split('|')
        .map(|c| if c == "\\N" { None } else { Some(c) })
        .collect()
}

/// PostgreSQL: the status row (`|`-separated columns in `STATUS_QUERY` order) and every value
/// parser on the whole input.
pub fn postgres_status(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let cols = columns(&text);
    let row = postgres::StatusRow::from_columns(|i| cols.get(i).copied().flatten());
    if let Ok(status) = postgres::interpret(&row) {
        // A replica has replica facts, a primary a write position and a timeline.
        match status.facts.replica {
            Some(_) => assert!(status.facts.write_position.is_none()),
            None => {
                assert!(status.facts.write_position.is_some() && status.facts.timeline.is_some())
            }
        }
    }
    for piece in std::iter::once(text.as_ref()).chain(cols.iter().flatten().copied()) {
        if let Some(lsn) = postgres::parse_lsn(piece) {
            // Printed the way PostgreSQL prints it, the position parses back to itself.
            let printed = format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF);
            assert_eq!(postgres::parse_lsn(&printed), Some(lsn), "{piece:?}");
        }
        if let Some(tli) = postgres::timeline_of_walfile(piece) {
            assert!(tli > 0);
        }
        if let Some(tli) = postgres::parse_timeline(piece) {
            assert!(tli > 0);
        }
        let _ = postgres::parse_bool(piece);
        let _ = parse::parse_seconds(piece);
    }
}

/// MySQL/MariaDB: `read_only|super_read_only|channel|channel...` where a channel is
/// `Column=value;Column=value` (`\N` is NULL; a `super_read_only` of `-` means the server has
/// no such variable).
pub fn mysql_status(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('|');
    let read_only = parts.next().filter(|v| *v != "\\N");
    let super_read_only = parts.next().filter(|v| *v != "\\N" && *v != "-");
    let channels: Vec<mysql::Channel> = parts
        .map(|row| {
            mysql::Channel::from_columns(row.split(';').map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (name, (value != "\\N").then_some(value))
            }))
        })
        .collect();
    let _ = mysql::parse_read_only(&text);
    let role = mysql::role(read_only, super_read_only);
    match mysql::replica_facts(&channels) {
        Ok(facts) => {
            if channels.is_empty() {
                assert!(!facts.link_up && facts.lag.is_none());
            }
            if let Ok(role) = role {
                let _ = mysql::facts(role, Some(facts));
            }
        }
        Err(failure) => {
            let _ = failure.to_string();
        }
    }
}

/// The admin server's request handling before any state is read: the request head as hyper
/// would hand it over (request line, headers), then [`rolegate::admin::route`] (404/405) and,
/// for mutating endpoints, [`rolegate::admin::auth::authorize`] (token, peer).
///
/// The first input byte picks the peer and whether a token is configured.
pub fn admin_request(data: &[u8]) {
    let Some((&selector, head)) = data.split_first() else {
        return;
    };
    let peer: SocketAddr = match selector % 4 {
        0 => ([127, 0, 0, 1], 40000).into(),
        1 => ([10, 1, 2, 3], 40000).into(),
        2 => "[::ffff:127.0.0.1]:40000".parse().expect("literal"),
        _ => "[2001:db8::1]:40000".parse().expect("literal"),
    };
    let token = Secret::new(ADMIN_TOKEN);
    let token = (selector & 4 != 0).then_some(&token);

    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let Some(request_line) = lines.next() else {
        return;
    };
    let mut words = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target)) = (words.next(), words.next()) else {
        return;
    };
    // hyper answers 400 itself to anything these refuse; `handle` never sees it.
    let Ok(method) = Method::from_bytes(method) else {
        return;
    };
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for line in lines.by_ref() {
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        else {
            return;
        };
        headers.append(name, value);
    }

    let endpoint = match rolegate::admin::route(&method, uri.path()) {
        Ok(endpoint) => endpoint,
        Err(response) => {
            let status = response.status().as_u16();
            assert!(status == 404 || status == 405, "{status}");
            return;
        }
    };
    if !endpoint.is_mutating() {
        return;
    }
    match rolegate::admin::auth::authorize(token, peer, &headers) {
        Ok(()) => match token {
            // Let through with a token: the one Authorization header carried exactly it.
            Some(_) => {
                let values: Vec<_> = headers
                    .get_all(hyper::header::AUTHORIZATION)
                    .iter()
                    .collect();
                assert_eq!(values.len(), 1);
                let presented = values[0].as_bytes();
                assert!(presented.len() > 7 && presented[..7].eq_ignore_ascii_case(b"bearer "));
                assert_eq!(presented[7..].trim_ascii(), ADMIN_TOKEN.as_bytes());
            }
            None => assert!(rolegate::admin::auth::is_loopback(peer)),
        },
        Err(denied) => assert!(!denied.to_string().contains(ADMIN_TOKEN)),
    }
}
