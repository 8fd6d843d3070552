//! The README's switchover hook recipes ("Switchover hooks"), run as an operator would run them,
//! against real components, each under a client that opens a new connection and writes every
//! 20 ms through rolegate:
//!
//! - **Patroni:** `config/hooks/hold-switchover.sh db patronictl -c <config> switchover
//!   --leader A --candidate B --force` with Debian's Patroni 3.0 (the lab's Patroni pair on the
//!   lab's etcd). The cluster has no Patroni authority, so only the hook holds.
//! - **Orchestrator:** Orchestrator itself is **not run**: it is not packaged in Debian 12
//!   (`apt-cache policy orchestrator` finds nothing), so it is not installable here. The test
//!   runs exactly the README's `PreGracefulTakeoverProcesses` command line, with Orchestrator's
//!   `{placeholder}`s replaced by plain text substitution and run by `bash` as Orchestrator runs
//!   a hook, before `lab.sh switchover mysql` (the lab's MariaDB pair) in place of the graceful
//!   takeover. The README puts no release in `PostGracefulTakeoverProcesses` (it could end the
//!   hold before the new primary is confirmed); the test checks that it still does not.
//!
//! There is no Sentinel hook test: a hold around `SENTINEL FAILOVER` without the Sentinel
//! authority was tried against the lab's Sentinels and fails new connections (both nodes
//! answer `ROLE` master until Sentinel reconfigures the old one), so the README recommends the
//! authority instead (tests/it/authority_sentinel.rs tests that).
//!
//! Each asserts zero failed new connections and zero writes on the old primary once the hold
//! began — without the hold a switchover fails new connections (docs/performance.md, failover
//! rows) — and that the hold was ended by the new primary. Both take the lab lock and put the
//! lab back (A primary) at their end, also when they fail.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support;
use support::lab::{self, wall, Engine};
use support::writer::{Attempt, Writer};
use support::{metric_value, require, Proxy};

/// A cluster `db` of `protocol` on `a`/`b` with rolegate's default checks (no authority: the
/// hook is the only thing that holds) and a write listener that queues longer than any hold.
fn proxy_yaml(protocol: &str, a: SocketAddr, b: SocketAddr) -> String {
    let database = if protocol == "postgres" {
        ", database: postgres"
    } else {
        ""
    };
    format!(
        "admin: {{ listen: 127.0.0.1:0 }}
clusters:
  - name: db
    protocol: {protocol}
    check: {{ user: rolegate_monitor, password: \"{pw}\"{database} }}
    backends:
      - {{ name: a, address: \"{a}\" }}
      - {{ name: b, address: \"{b}\" }}
listeners:
  - {{ name: rw, bind: \"127.0.0.1:0\", cluster: db, role: primary, queue_timeout: 20s }}
",
        pw = lab::monitor_password(),
    )
}

/// At most this many of the writer's connections are open at once. The lab's Patroni
/// PostgreSQL allows 100 connections: a 2 s hold queues 100 new connections, and released at
/// once onto the new primary they would exceed its `max_connections` ("too many clients"),
/// which is the server's limit, not the recipe's.
const IN_FLIGHT: usize = 40;

/// A new connection through rolegate and a write every 20 ms (at most 3,000, at most
/// [`IN_FLIGHT`] open at once).
fn writer(engine: Engine, rw: SocketAddr) -> Writer {
    Writer::options(engine, rw)
        .prefix("hr")
        .in_flight(IN_FLIGHT)
        .wait(Duration::from_secs(60))
        .spawn()
}

/// Runs `program args` off the runtime threads with the real `rolegate` client on `PATH` and
/// pointed at `admin`; panics with its output when it fails.
async fn run_hook(admin: SocketAddr, program: &str, args: Vec<String>) -> String {
    let program = program.to_string();
    let out = tokio::task::spawn_blocking(move || {
        let bin = std::path::Path::new(env!("CARGO_BIN_EXE_rolegate"));
        let path = format!(
            "{}:{}",
            bin.parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        std::process::Command::new(&program)
            .args(&args)
            .env("PATH", path)
            .env("ROLEGATE", bin)
            .env("ROLEGATE_ADMIN_URL", format!("http://{admin}"))
            .env("HOLD_TIMEOUT", "15s")
            .env_remove("ROLEGATE_CONFIG")
            .output()
            .expect("run the hook")
    })
    .await
    .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "hook failed ({}):\n{text}",
        out.status
    );
    text
}

/// The recipe's outcome: no new connection opened after the hold began failed or reached the
/// old primary `old`, and the hold was ended by the new primary (not by its timeout or a
/// release).
async fn assert_clean_switchover(proxy: &Proxy, attempts: &[Attempt], held_at: f64, old: u16) {
    let after: Vec<_> = attempts.iter().filter(|x| x.started >= held_at).collect();
    assert!(
        !after.is_empty(),
        "no connection was opened during the hold"
    );
    let failed: Vec<_> = after.iter().filter(|x| x.result.is_err()).collect();
    assert!(
        failed.is_empty(),
        "new connections failed during the held switchover: {failed:?}"
    );
    let on_old: Vec<_> = after.iter().filter(|x| x.result == Ok(old)).collect();
    assert!(
        on_old.is_empty(),
        "writes on the old primary after the hold began: {on_old:?}"
    );
    let m = proxy.metrics();
    assert_eq!(
        metric_value(
            &m,
            "rolegate_holds_ended_total{cluster=\"db\",reason=\"new_primary\"}"
        ),
        Some(1.0),
        "the hold did not end by the new primary:\n{m}"
    );
    let status = support::http::get(proxy.admin(), "/status").await.json();
    assert!(status["clusters"][0]["hold"].is_null(), "{status}");
    eprintln!(
        "FIGURES hook recipe: {} new connections after the hold began, 0 failed, 0 on the old primary",
        after.len()
    );
}

/// Puts the lab's Patroni back (A leads) when the test fails half-way.
struct ResetPatroniOnPanic;

impl Drop for ResetPatroniOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = std::process::Command::new("bash")
                .arg(format!("{}/loadtest/lab.sh", env!("CARGO_MANIFEST_DIR")))
                .args(["reset", "patroni"])
                .output();
        }
    }
}

/// README's Patroni recipe: `hold-switchover.sh` around Debian's `patronictl switchover`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patroni_patronictl_switchover() {
    if require::lab(&[Engine::Pg]).is_none() || require::lab_engine("patroni").is_none() {
        return;
    }
    if require::tool("patronictl", &[], "patroni").is_none() {
        return;
    }
    let _lock = lab::lock();
    let _reset = ResetPatroniOnPanic;
    let (a, b) = (
        lab::node("patroni", "A").address,
        lab::node("patroni", "B").address,
    );
    if lab::status()["patroni"]["A"]["role"] != "primary" {
        tokio::task::spawn_blocking(|| lab::run(&["reset", "patroni"]))
            .await
            .unwrap();
    }
    let proxy = Proxy::start(&proxy_yaml("postgres", a, b)).await;
    proxy.wait_route("rw", "a is primary", |n| n == ["a"]).await;
    proxy.wait_candidates("rw", 1).await;
    let rw = proxy.addr("rw").await;
    let (watch, held) = proxy.watch_held("rw");
    let writer = writer(Engine::Pg, rw);
    writer
        .wait_for_writes(10, a.port(), 0.0, "10 writes on A")
        .await;

    let root = env!("CARGO_MANIFEST_DIR");
    let conf = format!("{}/patroni/A.yml", lab::dir().trim_end_matches('/'));
    let args = [
        "db",
        "patronictl",
        "-c",
        &conf,
        "switchover",
        "--leader",
        "A",
        "--candidate",
        "B",
        "--force",
    ];
    let out = run_hook(
        proxy.admin(),
        "sh",
        std::iter::once(format!("{root}/config/hooks/hold-switchover.sh"))
            .chain(args.iter().map(|s| s.to_string()))
            .collect(),
    )
    .await;
    assert!(out.contains("db: held since"), "{out}");
    proxy.wait_route("rw", "b routed", |n| n == ["b"]).await;
    let switched = wall();
    writer
        .wait_for_writes(10, b.port(), switched, "10 writes on B")
        .await;
    let attempts = writer.finish().await;
    watch.abort();
    let held_at = *held.lock().unwrap().first().expect("rw was held");
    assert_clean_switchover(&proxy, &attempts, held_at, a.port()).await;
    proxy.stop().await;
    tokio::task::spawn_blocking(|| lab::run(&["reset", "patroni"]))
        .await
        .unwrap();
}

/// Replaces Orchestrator's `{placeholder}`s in a hook command line the way Orchestrator does
/// (plain text replacement of each placeholder it knows, before running the line).
fn orchestrator_substitute(command: &str, values: &[(&str, String)]) -> String {
    values.iter().fold(command.to_string(), |c, (k, v)| {
        c.replace(&format!("{{{k}}}"), v)
    })
}

/// The README's `"PreGracefulTakeoverProcesses"` line (and that it documents no
/// `PostGracefulTakeoverProcesses` release).
fn readme_orchestrator_hook() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let hook = |key: &str| {
        let line = readme
            .lines()
            .find(|l| l.contains(&format!("\"{key}\"")))
            .unwrap_or_else(|| panic!("README.md documents no {key}"));
        let v: serde_json::Value =
            serde_json::from_str(&format!("{{{}}}", line.trim().trim_end_matches(',')))
                .unwrap_or_else(|e| panic!("README's {key} line is not JSON ({e}): {line}"));
        let cmds = v[key].as_array().unwrap_or_else(|| panic!("{key}: {v}"));
        assert_eq!(cmds.len(), 1, "{key}: {v}");
        cmds[0].as_str().unwrap().to_string()
    };
    assert!(
        !readme
            .lines()
            .any(|l| l.contains("\"PostGracefulTakeoverProcesses\":")),
        "README.md documents a PostGracefulTakeoverProcesses hook again: a release there can end \
         the hold before the new primary is confirmed"
    );
    hook("PreGracefulTakeoverProcesses")
}

/// README's Orchestrator recipe around the lab's MariaDB switchover (Orchestrator itself is not
/// installable on Debian 12, see the module comment).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestrator_graceful_takeover_hooks() {
    if require::lab(&[Engine::Mysql]).is_none() {
        return;
    }
    let engine = Engine::Mysql;
    let _lock = lab::lock();
    let _reset = lab::ResetOnPanic(engine);
    let (a, b) = (engine.addr('A'), engine.addr('B'));
    let proxy = Proxy::start(&proxy_yaml("mysql", a, b)).await;
    proxy.wait_route("rw", "a is primary", |n| n == ["a"]).await;
    let rw = proxy.addr("rw").await;
    let (watch, held) = proxy.watch_held("rw");
    let writer = writer(engine, rw);
    writer
        .wait_for_writes(10, a.port(), 0.0, "10 writes on A")
        .await;

    let pre = readme_orchestrator_hook();
    // What Orchestrator knows at a graceful takeover of A by B; the cluster alias is rolegate's
    // cluster name, as the README asks.
    let values = [
        ("failureClusterAlias", "db".to_string()),
        ("failureCluster", a.to_string()),
        ("failedHost", a.ip().to_string()),
        ("failedPort", a.port().to_string()),
        ("successorHost", b.ip().to_string()),
        ("successorPort", b.port().to_string()),
        ("failureType", "DeadMaster".to_string()),
    ];
    let pre = orchestrator_substitute(&pre, &values);
    assert!(
        !pre.contains('{'),
        "a placeholder Orchestrator would not fill: {pre}"
    );
    let out = run_hook(proxy.admin(), "bash", vec!["-c".into(), pre]).await;
    assert!(out.contains("db: held since"), "{out}");
    lab::scenario("switchover", engine).await;
    proxy.wait_route("rw", "b routed", |n| n == ["b"]).await;
    let switched = wall();
    writer
        .wait_for_writes(10, b.port(), switched, "10 writes on B")
        .await;
    let attempts = writer.finish().await;
    watch.abort();
    let held_at = *held.lock().unwrap().first().expect("rw was held");
    assert_clean_switchover(&proxy, &attempts, held_at, a.port()).await;
    proxy.stop().await;
    lab::reset(engine).await;
}
