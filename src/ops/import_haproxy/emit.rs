//! The model → YAML text, by hand: block style, one key per line, the comment that says where
//! each value came from beside it. Written as text rather than through a YAML library so the
//! comments survive and the layout matches config/example.yaml. Every scalar goes through
//! [`scalar`], which quotes what a YAML parser would otherwise read as something else.

use std::fmt::Write as _;

use super::model::{Check, Cluster, Listener, Model, Noted};
use super::values::show;

/// Column where trailing comments start (as in config/example.yaml).
const COMMENT_COLUMN: usize = 38;

pub(super) fn yaml(model: &Model, source: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# rolegate config imported from {source} by `rolegate import-haproxy`."
    );
    out.push_str("# Each value says where it came from; what could not be translated was listed on stderr.\n");
    out.push_str("# What HAProxy only defaulted is left to rolegate's defaults (README: Coming from HAProxy).\n");
    if !model.placeholders.is_empty() {
        out.push_str(
            "#\n# Set these variables before starting (the file names the secrets, never holds them):\n",
        );
        for p in &model.placeholders {
            let _ = writeln!(out, "#   {}: {}", p.env, p.what);
        }
    }
    out.push('\n');
    if let Some(workers) = &model.workers {
        line(
            &mut out,
            0,
            "workers",
            &workers.value.to_string(),
            &workers.comment,
        );
        out.push('\n');
    }
    out.push_str("clusters:\n");
    for c in &model.clusters {
        cluster(&mut out, c);
    }
    out.push_str("\nlisteners:\n");
    for l in &model.listeners {
        listener(&mut out, l);
    }
    out
}

fn cluster(out: &mut String, c: &Cluster) {
    for comment in &c.comments {
        let _ = writeln!(out, "  # {comment}");
    }
    let s = &c.settings;
    line(out, 2, "- name", &scalar(&c.name), "");
    line(out, 4, "protocol", s.protocol.as_str(), "");
    check(out, &s.check);
    opt(out, 4, "connect_timeout", &s.connect_timeout, |d| show(*d));
    opt(out, 4, "idle_timeout", &s.idle_timeout, |d| show(*d));
    opt(out, 4, "retries", &s.retries, u32::to_string);
    opt(out, 4, "on_demote", &s.on_demote, |v| v.to_string());
    out.push_str("    backends:\n");
    for b in &c.backends {
        let entry = format!(
            "{{ name: {}, address: {} }}",
            scalar(&b.name),
            scalar(&b.address)
        );
        line(out, 6, "-", &entry, &b.comment);
    }
}

fn check(out: &mut String, c: &Check) {
    let empty = c.user.is_none()
        && c.password_env.is_none()
        && c.interval.is_none()
        && c.down_interval.is_none()
        && c.timeout.is_none()
        && c.rise.is_none()
        && c.fall.is_none();
    if empty {
        return;
    }
    out.push_str("    check:\n");
    opt(out, 6, "user", &c.user, |u| scalar(u));
    opt(out, 6, "password_env", &c.password_env, |e| scalar(e));
    opt(out, 6, "interval", &c.interval, |d| show(*d));
    opt(out, 6, "down_interval", &c.down_interval, |d| show(*d));
    opt(out, 6, "timeout", &c.timeout, |d| show(*d));
    opt(out, 6, "rise", &c.rise, u32::to_string);
    opt(out, 6, "fall", &c.fall, u32::to_string);
}

fn listener(out: &mut String, l: &Listener) {
    for comment in &l.comments {
        let _ = writeln!(out, "  # {comment}");
    }
    line(out, 2, "- name", &scalar(&l.name), "");
    line(out, 4, "bind", &scalar(&l.bind.value), &l.bind.comment);
    line(out, 4, "cluster", &scalar(&l.cluster), "");
    line(out, 4, "role", l.role.value.as_str(), &l.role.comment);
    opt(out, 4, "fallback", &l.fallback, |r| r.as_str().to_string());
    opt(out, 4, "balance", &l.balance, |b| b.to_string());
    opt(
        out,
        4,
        "max_connections",
        &l.max_connections,
        u64::to_string,
    );
    opt(out, 4, "backlog", &l.backlog, u32::to_string);
}

fn opt<T>(
    out: &mut String,
    indent: usize,
    key: &str,
    value: &Option<Noted<T>>,
    show: impl Fn(&T) -> String,
) {
    if let Some(v) = value {
        line(out, indent, key, &show(&v.value), &v.comment);
    }
}

fn line(out: &mut String, indent: usize, key: &str, value: &str, comment: &str) {
    let start = out.len();
    let _ = write!(
        out,
        "{:indent$}{key}{} {value}",
        "",
        if key == "-" { "" } else { ":" }
    );
    if !comment.is_empty() {
        let width = out.len() - start;
        let pad = COMMENT_COLUMN.saturating_sub(width).max(1);
        let _ = write!(out, "{:pad$}# {}", "", comment.replace('\n', " "));
    }
    out.push('\n');
}

/// A YAML scalar that reads back as this string: plain when it is unambiguous, else quoted.
pub(super) fn scalar(text: &str) -> String {
    const KEYWORDS: &[&str] = &[
        "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~",
    ];
    let safe_chars = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-:/".contains(c));
    let first_ok = text
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let numeric = text.parse::<f64>().is_ok()
        || (text.starts_with(|c: char| c.is_ascii_digit()) && !text.contains(':'));
    let keyword = KEYWORDS.contains(&text.to_ascii_lowercase().as_str());
    if safe_chars && first_ok && !numeric && !keyword && !text.ends_with(':') {
        return text.to_string();
    }
    let mut quoted = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(quoted, "\\x{:02x}", u32::from(c));
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}
