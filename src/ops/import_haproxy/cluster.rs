//! One route's backend → a rolegate cluster: its servers as backends, the check timing of
//! `check inter/rise/fall/downinter` and `timeout check`, the session timeouts, `retries` and
//! `on-marked-down shutdown-sessions`.
//!
//! Timeouts: `timeout connect` → `connect_timeout`. rolegate has one idle timeout (no byte
//! either way), HAProxy one per side; a session idle both ways is closed by HAProxy after the
//! shorter of `timeout client` and `timeout server`, so that is `idle_timeout` — unless
//! `timeout tunnel` is set, which HAProxy applies in TCP mode instead of both, and is exactly
//! rolegate's meaning. rolegate does not close a session that is busy in one direction only.

use std::time::Duration;

use super::detect::Detected;
use super::model::{noted, Backend, Check, ClusterSettings, Noted};
use super::proxy::{At, Settings};
use super::server::Server;
use super::values::{self, show};
use super::Notes;

/// rolegate's built-in check timing (README, configuration reference).
const INTERVAL: Duration = Duration::from_millis(250);
const TIMEOUT: Duration = Duration::from_millis(500);
const FALL: u32 = 2;

/// The cluster-level keys of a route: `front` holds `timeout client`, `back` the rest.
pub(super) fn settings(
    front: &Settings,
    back: &Settings,
    servers: &[Server],
    detected: &Detected,
    notes: &mut Notes,
) -> ClusterSettings {
    let checked: Vec<&Server> = servers.iter().filter(|s| s.is_checked()).collect();
    let first = checked.first().copied().or(servers.first());
    let mut check = first.map(|f| timing(f, back, notes)).unwrap_or_default();
    if let Some(first) = first {
        for other in checked.iter().skip(1) {
            let p = (&other.params, &first.params);
            let differs = value(&p.0.inter) != value(&p.1.inter)
                || value(&p.0.rise) != value(&p.1.rise)
                || value(&p.0.fall) != value(&p.1.fall)
                || value(&p.0.shutdown_sessions) != value(&p.1.shutdown_sessions);
            if differs {
                notes.add(other.line, format!("server {}: its check settings differ from server {}'s; rolegate checks every backend of a cluster alike and uses {}'s", other.name, first.name, first.name));
            }
        }
    }
    check.user = detected.user.clone();
    let connect_timeout = match &back.timeout_connect {
        Some(At { value, line }) if value.is_zero() => {
            notes.add(*line, "timeout connect 0 (no limit) is not allowed in rolegate; its default of 2s applies");
            None
        }
        Some(At { value, line }) => Some(noted(*value, format!("timeout connect (line {line})"))),
        None => None,
    };
    ClusterSettings {
        protocol: detected.protocol,
        check,
        connect_timeout,
        idle_timeout: idle(front, back),
        retries: back
            .retries
            .as_ref()
            .map(|r| noted(r.value, format!("retries (line {})", r.line))),
        on_demote: first.and_then(|f| {
            let s = f.params.shutdown_sessions.as_ref()?;
            Some(noted(
                "close",
                format!("on-marked-down shutdown-sessions (line {})", s.line),
            ))
        }),
    }
}

fn value<T: Clone>(at: &Option<At<T>>) -> Option<T> {
    at.as_ref().map(|a| a.value.clone())
}

/// `check.*` from the first checked server and `timeout check`, kept valid for rolegate
/// (timeout ≤ interval × fall, down_interval ≤ interval).
fn timing(server: &Server, back: &Settings, notes: &mut Notes) -> Check {
    let p = &server.params;
    let from = |what: &str, line: usize| format!("{what} (line {line})");
    let mut check = Check {
        interval: p
            .inter
            .as_ref()
            .map(|i| noted(i.value, from(&format!("inter {}", show(i.value)), i.line))),
        rise: p
            .rise
            .as_ref()
            .map(|r| noted(r.value, from("rise", r.line))),
        fall: p
            .fall
            .as_ref()
            .map(|f| noted(f.value, from("fall", f.line))),
        ..Check::default()
    };
    if let Some(i) = p.inter.as_ref().filter(|i| i.value.is_zero()) {
        notes.add(
            i.line,
            "inter 0 is not allowed in rolegate; its default applies",
        );
        check.interval = None;
    }
    for (at, what, slot) in [
        (&p.rise, "rise", &mut check.rise),
        (&p.fall, "fall", &mut check.fall),
    ] {
        if let Some(n) = at.as_ref().filter(|n| n.value == 0) {
            notes.add(
                n.line,
                format!("{what} 0 is not allowed in rolegate; its default applies"),
            );
            *slot = None;
        }
    }
    let interval = check.interval.as_ref().map_or(INTERVAL, |i| i.value);
    let fall = check.fall.as_ref().map_or(FALL, |f| f.value);
    let window = interval.saturating_mul(fall);
    if let Some(down) = &p.downinter {
        if down.value <= interval && !down.value.is_zero() {
            check.down_interval = Some(noted(down.value, from("downinter", down.line)));
        } else {
            notes.add(down.line, format!("downinter {}: rolegate's down_interval is the faster pace used while a backend is down, at most interval ({}); its default min(interval, 100ms) applies", show(down.value), show(interval)));
        }
    }
    check.timeout = match &back.timeout_check {
        Some(t) if t.value > window => {
            notes.add(t.line, format!("timeout check {}: rolegate takes a hung backend out within fall checks, so its check timeout is at most interval × fall = {}; that is used", show(t.value), show(window)));
            Some(noted(
                window,
                "interval × fall: a hung backend is taken out within fall checks",
            ))
        }
        Some(t) if !t.value.is_zero() => Some(noted(t.value, from("timeout check", t.line))),
        _ if TIMEOUT > window => Some(noted(
            window,
            "interval × fall (rolegate's default 500ms would be longer)",
        )),
        _ => None,
    };
    check
}

/// `timeout tunnel`, else the shorter of `timeout client` and `timeout server`.
fn idle(front: &Settings, back: &Settings) -> Option<Noted<Duration>> {
    if let Some(t) = &back.timeout_tunnel {
        return Some(noted(t.value, format!("timeout tunnel (line {})", t.line)));
    }
    let sides = [
        ("client", &front.timeout_client),
        ("server", &back.timeout_server),
    ];
    let set: Vec<(&str, &At<Duration>)> = sides
        .iter()
        .filter_map(|(k, t)| Some((*k, t.as_ref()?)))
        .collect();
    let shortest = set.iter().min_by_key(|(_, t)| t.value)?;
    let written: Vec<String> = set
        .iter()
        .map(|(k, t)| format!("timeout {k} {} (line {})", show(t.value), t.line))
        .collect();
    let comment = match written.as_slice() {
        [one] => one.clone(),
        _ => format!("the shorter of {}", written.join(" and ")),
    };
    Some(noted(shortest.1.value, comment))
}

/// The servers as backends: active ones first, then `backup` ones (config order is the order
/// a primary route and a tcp cluster try them). Servers without a port are dropped.
pub(super) fn backends(servers: &[Server], notes: &mut Notes) -> Vec<Backend> {
    let mut out: Vec<Backend> = Vec::new();
    let ordered = servers
        .iter()
        .filter(|s| !s.is_backup())
        .chain(servers.iter().filter(|s| s.is_backup()));
    for s in ordered {
        let Some(port) = s.port else {
            notes.add(s.line, format!("server {}: no port; HAProxy connects to the port the client came to, rolegate needs it written (HOST:PORT)", s.name));
            continue;
        };
        let address = values::join(&s.host, port);
        if let Some(twin) = out.iter().find(|b| b.address == address) {
            notes.add(s.line, format!("server {}: the same address as server {}; a rolegate backend is one server, so it is left out", s.name, twin.name));
            continue;
        }
        let mut name = values::name(&s.name);
        let mut n = 2;
        while out.iter().any(|b| b.name == name) {
            name = format!("{}-{n}", values::name(&s.name));
            n += 1;
        }
        let comment = if s.is_backup() {
            format!("line {}, backup in HAProxy", s.line)
        } else {
            format!("line {}", s.line)
        };
        out.push(Backend {
            name,
            address,
            comment,
        });
    }
    out
}
