//! A real scrape of `GET /metrics` passes `promtool check metrics` (Prometheus' own linter:
//! naming, units, `_total` counters, help texts) and contains every family the issue names.
//!
//! `promtool` comes from Debian's `prometheus` package. `bash loadtest/test.sh` installs it and
//! fails these tests without it; a plain `cargo test` skips them with a `SKIPPED` line.

use crate::support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::config::{Check, Cluster, ConfigBuilder, Listener};
use support::http::get;
use support::lab::{self, Engine};
use support::require;
use support::{eventually, fake, metric_value, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Every family the issue lists, plus the process metrics. `replication_lag_seconds` is only
/// exported for role-aware clusters; the lab test checks it.
const FAMILIES: &[&str] = &[
    "rolegate_sessions_active",
    "rolegate_sessions_total",
    "rolegate_session_duration_seconds",
    "rolegate_bytes_total",
    "rolegate_connect_errors_total",
    "rolegate_accept_errors_total",
    "rolegate_listener_refused_total",
    "rolegate_backend_up",
    "rolegate_backend_role",
    "rolegate_check_duration_seconds",
    "rolegate_check_failures_total",
    "rolegate_primary_changes_total",
    "rolegate_split_brain",
    "rolegate_primary_candidates",
    "rolegate_seconds_without_primary_total",
    "rolegate_sessions_fenced_total",
    "rolegate_queued_connections",
    "rolegate_config_reloads_total",
    "rolegate_config_last_reload_success_timestamp_seconds",
    "rolegate_session_fd_capacity",
    "process_open_fds",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
];

/// `$PROMTOOL`, else `promtool` from Debian's prometheus package (the test is skipped without).
fn promtool() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PROMTOOL") {
        return Some(PathBuf::from(path));
    }
    require::tool("promtool", &["/usr/bin/promtool"], "prometheus")
}

/// Runs `promtool check metrics` on `scrape`; panics with its findings unless it is silent.
fn assert_promtool_clean(promtool: &Path, scrape: &str) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {} ({e})", promtool.display()));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(scrape.as_bytes())
        .expect("write scrape to promtool");
    let out = child.wait_with_output().expect("promtool output");
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && findings.trim().is_empty(),
        "promtool check metrics ({}):\n{findings}\n--- scrape ---\n{scrape}",
        out.status
    );
}

fn assert_has_families(scrape: &str, families: &[&str]) {
    let missing: Vec<&&str> = families
        .iter()
        .filter(|f| !scrape.contains(&format!("# TYPE {f} ")))
        .collect();
    assert!(
        missing.is_empty(),
        "missing families {missing:?} in:\n{scrape}"
    );
}

async fn echo_once(addr: std::net::SocketAddr, payload: &[u8]) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(payload).await.expect("write");
    s.shutdown().await.expect("half-close");
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.expect("read");
    assert_eq!(back, payload);
}

/// A port nothing listens on (bound, then closed again).
async fn closed_port() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_passes_promtool_and_has_every_family() {
    let Some(promtool) = promtool() else {
        return;
    };
    let (flaky, good) = (fake::echo().spawn().await, fake::echo().spawn().await);
    let dead = closed_port().await;
    let yaml = ConfigBuilder::new()
        .cluster(
            Cluster::tcp("app")
                .check(Check::once())
                .backend("flaky", flaky.addr)
                .backend("good", good.addr),
        )
        .cluster(
            Cluster::tcp("void")
                .check(Check::timing("100ms", "100ms", 1, 1))
                .backend("dead", dead),
        )
        .listener(
            Listener::new("pri", "app")
                .role("primary")
                .set("queue_timeout", "0s"),
        )
        .listener(
            Listener::new("nothing", "void")
                .role("any")
                .set("queue_timeout", "0s"),
        )
        .yaml();
    let proxy = Proxy::start(&yaml).await;
    proxy.wait_candidates("pri", 2).await;
    let pri = proxy.addr("pri").await;
    // A session (the first candidate, in config order, is `flaky`).
    echo_once(pri, &[1u8; 100_000]).await;
    // `flaky` goes away before its next check: a connect error, then the session fails over.
    let flaky_addr = flaky.addr;
    drop(flaky);
    eventually(
        Duration::from_secs(5),
        "flaky's port closed",
        || async move { TcpStream::connect(flaky_addr).await.is_err() },
    )
    .await;
    echo_once(pri, b"failed over").await;
    // No backend at all: refused.
    let mut s = TcpStream::connect(proxy.addr("nothing").await)
        .await
        .unwrap();
    let _ = s.read_to_end(&mut Vec::new()).await;
    eventually(Duration::from_secs(10), "counters of the session, the connect error, the refusal and the failed check", || {
        let m = proxy.metrics();
        async move {
            metric_value(&m, "rolegate_connect_errors_total{backend=\"flaky\",listener=\"pri\",reason=\"refused\"}") == Some(1.0)
                && metric_value(&m, "rolegate_listener_refused_total{listener=\"nothing\",reason=\"no_backend\"}") == Some(1.0)
                && metric_value(&m, "rolegate_check_failures_total{backend=\"dead\",cluster=\"void\"").is_some_and(|v| v >= 1.0)
                && metric_value(&m, "rolegate_sessions_total{backend=\"good\",listener=\"pri\"}") == Some(1.0)
        }
    })
    .await;

    let response = get(proxy.admin(), "/metrics").await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let scrape = response.body;
    assert_has_families(&scrape, FAMILIES);
    // Zero series for known label sets, so rate() and alerts see 0 rather than nothing.
    for zero in [
        "rolegate_config_reloads_total{result=\"error\"} 0",
        "rolegate_sessions_fenced_total{backend=\"good\",cluster=\"app\"} 0",
        "rolegate_primary_changes_total{cluster=\"void\"} 0",
        "rolegate_listener_refused_total{listener=\"pri\",reason=\"max_connections\"} 0",
        "rolegate_accept_errors_total{listener=\"pri\",reason=\"fd_limit\"} 0",
        "rolegate_backend_up{backend=\"dead\",cluster=\"void\"} 0",
        "rolegate_queued_connections{listener=\"nothing\"} 0",
    ] {
        assert!(scrape.contains(zero), "{zero} not in:\n{scrape}");
    }
    assert!(!scrape.contains("127.0.0.1"), "no addresses in labels");
    assert_promtool_clean(&promtool, &scrape);
    proxy.stop().await;
}

/// The role-aware families (role, lag, candidates) against the lab's Redis pair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_aware_scrape_passes_promtool_and_exports_lag() {
    let Some(promtool) = promtool() else {
        return;
    };
    let Some(_) = require::lab(&[Engine::Redis]) else {
        return;
    };
    let _lab = lab::lock();
    // Another test (a fleet or failover one) may have left B primary.
    lab::reset(Engine::Redis).await;
    let yaml = ConfigBuilder::new()
        .cluster(Cluster::lab("db", Engine::Redis))
        .listener(Listener::new("rw", "db").role("primary"))
        .listener(Listener::new("ro", "db").role("replica"))
        .yaml();
    let proxy = Proxy::start(&yaml).await;
    proxy.wait_route("rw", "a is primary", |n| n == ["a"]).await;
    proxy.wait_route("ro", "b is replica", |n| n == ["b"]).await;
    let scrape = get(proxy.admin(), "/metrics").await.body;
    // Error families appear at the first error (the other test makes some); these are the
    // ones only a role-aware cluster fills.
    assert_has_families(
        &scrape,
        &[
            "rolegate_backend_role",
            "rolegate_backend_replication_lag_seconds",
            "rolegate_primary_candidates",
            "rolegate_split_brain",
            "rolegate_check_duration_seconds",
        ],
    );
    for (line, value) in [
        (
            "rolegate_backend_role{backend=\"a\",cluster=\"db\",role=\"primary\"}",
            1.0,
        ),
        (
            "rolegate_backend_role{backend=\"a\",cluster=\"db\",role=\"replica\"}",
            0.0,
        ),
        (
            "rolegate_backend_role{backend=\"b\",cluster=\"db\",role=\"replica\"}",
            1.0,
        ),
        ("rolegate_primary_candidates{cluster=\"db\"}", 1.0),
        ("rolegate_split_brain{cluster=\"db\"}", 0.0),
    ] {
        assert_eq!(metric_value(&scrape, line), Some(value), "{line}\n{scrape}");
    }
    let lag = metric_value(
        &scrape,
        "rolegate_backend_replication_lag_seconds{backend=\"b\",cluster=\"db\"}",
    );
    assert!(
        lag.is_some_and(|l| (0.0..60.0).contains(&l)),
        "lag {lag:?}\n{scrape}"
    );
    assert_promtool_clean(&promtool, &scrape);
    proxy.stop().await;
}
