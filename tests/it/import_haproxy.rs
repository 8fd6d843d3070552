//! `rolegate import-haproxy` on realistic haproxy.cfg files (tests/configs/haproxy/: Patroni's
//! documented layout, a Sentinel-less Redis tcp-check, Galera clustercheck + mysql-check, a
//! frontend/backend pair, a web balancer with nothing to translate). Each run checks the exit
//! code, every `FILE:LINE: message` on stderr, and that the config on stdout passes
//! `rolegate check-config` once the password variables it names are set — and fails while
//! they are not, so the placeholders are real. Self-contained: no servers, no root.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support;
use support::lab::Engine;

const BIN: &str = env!("CARGO_BIN_EXE_rolegate");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/configs/haproxy")
        .join(name)
}

fn import(name: &str) -> (Output, String) {
    let path = fixture(name);
    let out = Command::new(BIN)
        .arg("import-haproxy")
        .arg(&path)
        .output()
        .expect("run rolegate import-haproxy");
    (out, path.display().to_string())
}

/// Every stderr line as (line number, message), after checking the `FILE:LINE: ` shape.
fn notes(out: &Output, file: &str) -> Vec<(usize, String)> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .filter_map(|l| {
            let rest = l
                .strip_prefix(file)
                .and_then(|r| r.strip_prefix(':'))
                .unwrap_or_else(|| panic!("stderr line without the file name: {l}"));
            let (line, message) = rest.split_once(": ")?;
            Some((
                line.parse()
                    .unwrap_or_else(|_| panic!("no line number: {l}")),
                message.to_string(),
            ))
        })
        .collect()
}

/// Asserts that the notes are exactly these lines, each containing its fragment.
fn assert_notes(notes: &[(usize, String)], expected: &[(usize, &str)]) {
    let lines: Vec<usize> = notes.iter().map(|(l, _)| *l).collect();
    let want: Vec<usize> = expected.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, want, "{notes:#?}");
    for ((line, message), (_, fragment)) in notes.iter().zip(expected) {
        assert!(
            message.contains(fragment),
            "line {line}: {message:?} lacks {fragment:?}"
        );
    }
}

/// The `ROLEGATE_*_PASSWORD` variables the config's header asks for.
fn placeholders(yaml: &str) -> Vec<String> {
    let mut vars: Vec<String> = yaml
        .lines()
        .take_while(|l| l.starts_with('#') || l.is_empty())
        .filter_map(|l| {
            l.strip_prefix("#   ")?
                .split_once(':')
                .map(|(v, _)| v.to_string())
        })
        .collect();
    vars.dedup();
    vars
}

/// Writes the config and runs `check-config` on it with `vars` set.
fn check_config(yaml: &str, vars: &[String]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rolegate.yaml");
    std::fs::write(&path, yaml).expect("write config");
    let mut cmd = Command::new(BIN);
    cmd.arg("check-config")
        .arg(&path)
        .env_remove("ROLEGATE_CONFIG");
    for var in vars {
        cmd.env(var, "placeholder-secret");
    }
    cmd.output().expect("run rolegate check-config")
}

/// Import `name`, expect exit 0, and check the config with and without its variables.
fn translated(name: &str) -> (String, Vec<(usize, String)>, Vec<String>) {
    let (out, file) = import(name);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout.clone()).expect("utf-8 config");
    let vars = placeholders(&yaml);
    let ok = check_config(&yaml, &vars);
    assert!(
        ok.status.success(),
        "check-config refused the import of {name}:\n{}\n---\n{yaml}",
        String::from_utf8_lossy(&ok.stderr)
    );
    if let Some(first) = vars.first() {
        let without: Vec<String> = vars.iter().filter(|v| *v != first).cloned().collect();
        let refused = check_config(&yaml, &without);
        assert!(
            !refused.status.success(),
            "{first} unset must fail check-config"
        );
        assert!(String::from_utf8_lossy(&refused.stderr).contains(first.as_str()));
    }
    (yaml.clone(), notes(&out, &file), vars)
}

#[test]
fn patroni_documented_layout() {
    let (yaml, notes, vars) = translated("patroni.cfg");
    assert_notes(
        &notes,
        &[
            (6, "global log"),
            (9, "log: rolegate writes one line per session"),
            (17, "listen stats: a statistics page"),
            (25, "set ROLEGATE_POSTGRES_PASSWORD"),
        ],
    );
    assert_eq!(vars, ["ROLEGATE_POSTGRES_PASSWORD"]);
    // One cluster, both listeners on it, primary and replica by the Patroni path.
    assert_eq!(yaml.matches("protocol: postgres").count(), 1, "{yaml}");
    assert!(yaml.contains("bind: 0.0.0.0:5000") && yaml.contains("bind: 0.0.0.0:5001"));
    assert!(
        yaml.contains("role: primary") && yaml.contains("role: replica"),
        "{yaml}"
    );
    assert!(
        yaml.contains("on_demote: close")
            && yaml.contains("interval: 3s")
            && yaml.contains("fall: 3")
    );
    assert!(
        !yaml.contains("7000"),
        "the stats listener is not translated"
    );
}

#[test]
fn redis_tcp_check_without_sentinel() {
    let (yaml, notes, vars) = translated("redis.cfg");
    assert_notes(
        &notes,
        &[
            (4, "global log"),
            (5, "global daemon"),
            (20, "tcp-check send AUTH: the password is not copied"),
            (40, "set ROLEGATE_BK_REDIS_PASSWORD"),
        ],
    );
    assert_eq!(vars, ["ROLEGATE_BK_REDIS_PASSWORD"]);
    assert!(
        !yaml.contains("s3cret"),
        "an inline password must not be copied"
    );
    assert_eq!(
        yaml.matches("protocol: redis").count(),
        1,
        "both frontends share one cluster: {yaml}"
    );
    assert!(
        yaml.contains("role: primary")
            && yaml.contains("role: replica")
            && yaml.contains("balance: least_conn")
    );
}

#[test]
fn galera_clustercheck_and_mysql_check() {
    let (yaml, notes, vars) = translated("galera.cfg");
    assert_notes(
        &notes,
        &[
            (5, "global log"),
            (7, "global user"),
            (8, "global group"),
            (12, "log:"),
            (14, "option tcplog"),
            (15, "option dontlognull"),
            (26, "Galera node is synced"),
            (26, "set ROLEGATE_GALERA_WRITER_PASSWORD"),
            (27, "slowstart"),
            (27, "weight"),
            (27, "downinter 5s"),
            (38, "logs in as \"haproxy_check\""),
        ],
    );
    assert_eq!(
        vars,
        [
            "ROLEGATE_GALERA_WRITER_PASSWORD",
            "ROLEGATE_MARIADB_REPLICAS_PASSWORD"
        ]
    );
    assert_eq!(yaml.matches("protocol: mysql").count(), 2);
    assert!(yaml.contains("workers: 4"), "nbthread → workers");
    assert!(
        yaml.contains("max_connections: 256"),
        "the writer's maxconn (default-server): {yaml}"
    );
    // mysql-check only says a server is up; the frontend's name says it reads.
    assert!(
        yaml.contains("role: replica") && yaml.contains("by the name \"mysql-read\""),
        "{yaml}"
    );
    assert!(yaml.contains("balance: round_robin"));
}

#[test]
fn frontend_backend_pair() {
    let (yaml, notes, _) = translated("frontend_backend.cfg");
    assert_notes(
        &notes,
        &[
            (13, "tcp-request"),
            (17, "set ROLEGATE_PG_PRIMARY_PASSWORD"),
        ],
    );
    assert!(
        yaml.contains("bind: 192.0.2.10:5432") && yaml.contains("bind: \"[2001:db8::10]:5432\""),
        "{yaml}"
    );
    assert!(yaml.contains("address: pg-a.db.internal:5432"));
    assert!(
        yaml.contains("idle_timeout: 45m"),
        "the shorter of client 1h and server 45m"
    );
}

#[test]
fn nothing_translatable_exits_1_with_every_reason() {
    let (out, file) = import("nothing.cfg");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "no config on stdout when nothing was translated"
    );
    let notes = notes(&out, &file);
    assert_notes(
        &notes,
        &[
            (3, "global log"),
            (4, "global chroot"),
            (5, "global stats"),
            (9, "option httplog"),
            (14, "frontend web: mode http"),
            (16, "acl"),
            (17, "conditional route"),
            (20, "backend api: mode http"),
            (23, "backend static: mode http"),
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr)
        .ends_with("nothing could be translated into a rolegate listener\n"));
}

#[test]
fn an_unreadable_file_exits_2() {
    let out = Command::new(BIN)
        .args(["import-haproxy", "/nonexistent/haproxy.cfg"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/haproxy.cfg: cannot read"));
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind :0");
    listener.local_addr().expect("addr").port()
}

/// Stops the proxy this test started, by its own handle, even when an assertion fails.
struct Proxy(std::process::Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether a session through `port` lands on a node in recovery, polled until `want` or the
/// deadline (a failover elsewhere in the lab may leave no primary for a moment).
async fn lands_in_recovery(port: u16, want: bool) -> Result<(), String> {
    let conn = format!(
        "host=127.0.0.1 port={port} user=app password={} dbname=app connect_timeout=2",
        support::lab::app_password(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut last = String::from("never connected");
    while std::time::Instant::now() < deadline {
        match tokio_postgres::connect(&conn, tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                let task = tokio::spawn(connection);
                let row = client.query_one("SELECT pg_is_in_recovery()", &[]).await;
                task.abort();
                match row.map(|r| r.get::<_, bool>(0)) {
                    Ok(got) if got == want => return Ok(()),
                    Ok(got) => last = format!("pg_is_in_recovery() = {got}"),
                    Err(e) => last = e.to_string(),
                }
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(format!("port {port}: {last}"))
}

/// The output runs: a Patroni-style haproxy.cfg for the lab's PostgreSQL pair is imported,
/// rolegate runs the result, and the primary and replica listeners reach a primary and a
/// replica. Needs the loopback lab (`bash loadtest/lab.sh up`); says so and returns without it.
#[test]
fn the_imported_config_routes_the_lab_postgres_pair() {
    let Some(_) = support::require::lab(&[Engine::Pg]) else {
        return;
    };
    let _lab = support::lab::lock_read_only();
    let (a, b) = (Engine::Pg.addr('A').port(), Engine::Pg.addr('B').port());
    let (rw, ro) = (free_port(), free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let haproxy = dir.path().join("haproxy.cfg");
    std::fs::write(
        &haproxy,
        format!(
            "defaults\n    mode tcp\n    timeout connect 2s\n\n\
             listen pg_rw\n    bind 127.0.0.1:{rw}\n    option httpchk GET /primary\n    http-check expect status 200\n\
             \x20   default-server inter 250ms fall 2 rise 1 on-marked-down shutdown-sessions\n\
             \x20   server pg-a 127.0.0.1:{a} check port 8008\n    server pg-b 127.0.0.1:{b} check port 8008\n\n\
             listen pg_ro\n    bind 127.0.0.1:{ro}\n    option httpchk GET /replica\n    http-check expect status 200\n\
             \x20   default-server inter 250ms fall 2 rise 1 on-marked-down shutdown-sessions\n\
             \x20   server pg-a 127.0.0.1:{a} check port 8008\n    server pg-b 127.0.0.1:{b} check port 8008\n"
        ),
    )
    .expect("write haproxy.cfg");
    let out = Command::new(BIN)
        .arg("import-haproxy")
        .arg(&haproxy)
        .output()
        .expect("import");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).expect("utf-8");
    let vars = placeholders(&yaml);
    assert_eq!(vars, ["ROLEGATE_PG_PASSWORD"], "{yaml}");
    // The one edit an operator makes on a shared host: no admin server on the default port.
    let config = dir.path().join("rolegate.yaml");
    std::fs::write(&config, format!("{yaml}\nadmin:\n  enabled: false\n")).expect("write config");
    let log = std::fs::File::create(dir.path().join("rolegate.log")).expect("log");
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .env("ROLEGATE_PG_PASSWORD", support::lab::monitor_password())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start rolegate");
    let _proxy = Proxy(child);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let routed = runtime.block_on(async {
        lands_in_recovery(rw, false).await?;
        lands_in_recovery(ro, true).await
    });
    if let Err(e) = routed {
        let log = std::fs::read_to_string(dir.path().join("rolegate.log")).unwrap_or_default();
        panic!("{e}\n--- rolegate log ---\n{log}\n--- config ---\n{yaml}");
    }
}
