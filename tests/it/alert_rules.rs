//! `config/prometheus/rolegate-alerts.yml`, the alerting rules operators load into
//! Prometheus:
//!
//! - `promtool check rules` accepts it (syntax, PromQL, templates);
//! - `promtool test rules` runs its unit tests (`rolegate-alerts.test.yml`), in which every
//!   alert fires on incident-shaped series with the expected labels and annotations and stays
//!   quiet on the healthy ones, so a wrong expression fails here;
//! - every alert of the file is expected to fire in at least one of those tests;
//! - every `rolegate_*` / `process_*` name the rules use is exported by a real rolegate
//!   process (a scrape of `GET /metrics`), so a renamed metric cannot leave a dead alert.
//!
//! `promtool` comes from Debian's `prometheus` package (`bash loadtest/test.sh` installs it);
//! without it these tests fail and say how to install it.

use crate::support;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_rolegate");
const RULES: &str = "config/prometheus/rolegate-alerts.yml";
const RULE_TESTS: &str = "config/prometheus/rolegate-alerts.test.yml";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn promtool() -> PathBuf {
    if let Some(path) = std::env::var_os("PROMTOOL") {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("promtool"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "promtool is not installed: apt-get install --no-install-recommends prometheus \
                 (bash loadtest/test.sh does, without starting the daemon), or set PROMTOOL"
            )
        })
}

/// Runs promtool with `args` in config/prometheus/ and returns its output; fails unless it
/// exits 0.
fn run_promtool(args: &[&str]) -> String {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(repo("config/prometheus"))
        .stdin(Stdio::null())
        .output()
        .expect("run promtool");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// The `- alert: NAME` entries of the rules file.
fn alert_names() -> Vec<String> {
    read(RULES)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_string())
        .collect()
}

#[test]
fn promtool_check_rules_accepts_every_rule() {
    let Some(_) = support::require::tool("promtool", &[], "prometheus") else {
        return;
    };
    let names = alert_names();
    assert!(names.len() >= 10, "only {} alerts: {names:?}", names.len());
    let text = run_promtool(&["check", "rules", "rolegate-alerts.yml"]);
    let expected = format!("SUCCESS: {} rules found", names.len());
    assert!(text.contains(&expected), "{text}");
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(
        unique.len(),
        names.len(),
        "duplicate alert names: {names:?}"
    );
}

#[test]
fn promtool_unit_tests_fire_every_alert() {
    let Some(_) = support::require::tool("promtool", &[], "prometheus") else {
        return;
    };
    let text = run_promtool(&["test", "rules", "rolegate-alerts.test.yml"]);
    assert!(text.contains("SUCCESS"), "{text}");
    // Alerts some test expects to fire: an `alertname:` followed by an `exp_labels` entry
    // before the next `alertname:`.
    let mut fired = BTreeSet::new();
    let mut current: Option<String> = None;
    for line in read(RULE_TESTS).lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("alertname:") {
            current = Some(name.trim().to_string());
        } else if line.starts_with("- exp_labels:") {
            if let Some(name) = &current {
                fired.insert(name.clone());
            }
        }
    }
    let names = alert_names();
    let untested: Vec<&String> = names.iter().filter(|n| !fired.contains(*n)).collect();
    assert!(
        untested.is_empty(),
        "alerts no unit test in {RULE_TESTS} expects to fire: {untested:?}"
    );
    let unknown: Vec<&String> = fired.iter().filter(|n| !names.contains(n)).collect();
    assert!(
        unknown.is_empty(),
        "tests of alerts that do not exist: {unknown:?}"
    );
}

/// The metric names a text mentions (`rolegate_…`, `process_…`), histogram suffixes kept.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("rolegate_") || w.starts_with("process_"))
        .map(str::to_string)
        .collect()
}

#[test]
fn rules_use_only_metrics_rolegate_exports() {
    let used = metric_names(&read(RULES));
    assert!(used.len() >= 10, "{used:?}");
    let scrape = scrape_a_running_rolegate();
    let exported: BTreeSet<String> = scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    let readme = read("README.md");
    let missing: Vec<&String> = used
        .iter()
        .filter(|m| {
            if NEEDS_A_DATABASE.contains(&m.as_str()) {
                !readme.contains(&format!("| `{m}` |"))
            } else {
                !exported.contains(*m)
            }
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the rules use metrics a rolegate scrape does not have: {missing:?}\nscrape:\n{scrape}"
    );
}

/// Exported only for role-aware clusters once a replica's lag is known (the lab tests of
/// tests/metrics_promtool.rs scrape it): checked against README's metrics table instead.
const NEEDS_A_DATABASE: &[&str] = &["rolegate_backend_replication_lag_seconds"];

/// Starts the binary on a one-backend tcp config, holds one client session open through it
/// (so the per-session series exist) and returns a `GET /metrics` body that has them.
fn scrape_a_running_rolegate() -> String {
    let backend = TcpListener::bind("127.0.0.1:0").expect("backend");
    let backend_addr = backend.local_addr().expect("addr");
    // Accepted connections are kept open until the test process ends.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in backend.incoming().take(1000) {
            held.push(stream);
        }
    });
    let admin_port = free_port();
    let listen_port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("rolegate.yaml");
    std::fs::write(
        &config,
        format!(
            "admin: {{ listen: \"127.0.0.1:{admin_port}\" }}\n\
             clusters:\n\
             \x20 - name: db\n\
             \x20   protocol: tcp\n\
             \x20   backends: [{{ name: db-1, address: \"{backend_addr}\" }}]\n\
             listeners:\n\
             \x20 - {{ name: db, bind: \"127.0.0.1:{listen_port}\", cluster: db }}\n"
        ),
    )
    .expect("config");
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rolegate");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut client = None;
    let body = loop {
        if client.is_none() {
            client = TcpStream::connect(("127.0.0.1", listen_port)).ok();
        }
        match get_metrics(admin_port) {
            Some(body) if body.contains("\nrolegate_sessions_active{") => break Some(body),
            _ => {}
        }
        if Instant::now() > deadline || child.try_wait().expect("wait").is_some() {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    drop(client);
    body.expect("no /metrics answer from rolegate within 30 s")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// One HTTP/1.0 `GET /metrics`; `None` until the admin server answers 200.
fn get_metrics(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200").then(|| body.to_string())
}
