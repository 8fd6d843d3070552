//! Fleet mode with real etcd, real rolegate processes (so they can be killed and frozen, each
//! stopped by its pid) and the lab's real database pairs:
//! - [`redis_pair`]: observers and followers on Redis, a killed or frozen leader, a garbage
//!   record, a follower cut from etcd by a relay, failed-connect reports, admin actions;
//! - [`engines`]: 1 leader + 1 standby observer + 10 followers on each engine: monitoring
//!   sessions counted on the servers, a switchover followed by everyone;
//! - [`holds`]: a hold sent to one follower is honoured fleet-wide and ends on the switchover;
//! - [`etcd_lost`]: every member of a private etcd cluster stopped, and a follower cut off in
//!   a network namespace: each `on_lost` policy, and convergence when etcd is back.
//!
//! The lab's etcd serves every test but `etcd_lost` (which must stop all members, so it starts
//! its own). Without the lab's etcd the tests print a SKIPPED line, or fail when
//! `ROLEGATE_TESTS_REQUIRE_ALL=1`.

mod engines;
mod etcd_lost;
mod holds;
mod redis_pair;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use etcd_client::Client;
use rolegate::control_plane::fleet::keys::Keys;
use serde_json::json;
use tokio::time::Instant;

use crate::support::config::{Cluster, ConfigBuilder, Listener};
use crate::support::lab::{self, Engine};

pub const LEASE_TTL_S: u64 = 3;
/// The cluster's name in every fleet test's config.
pub const CLUSTER: &str = "r";

/// The lab's etcd endpoints, or None (after printing why) when the test must be skipped.
pub fn etcd_or_skip(test: &str) -> Option<Vec<String>> {
    let endpoints = lab::addresses("etcd");
    let reachable = endpoints
        .iter()
        .any(|a| TcpStream::connect_timeout(a, Duration::from_secs(1)).is_ok());
    if reachable {
        return Some(endpoints.iter().map(|a| format!("http://{a}")).collect());
    }
    let hint = "needs the lab's etcd; run: bash loadtest/lab.sh up etcd";
    if std::env::var("ROLEGATE_TESTS_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{test}: {hint}");
    }
    eprintln!("SKIPPED {test}: {hint}");
    None
}

/// The engine's current primary node name ("A" or "B") as the lab sees it.
pub fn lab_primary(engine: Engine) -> String {
    let v = lab::status();
    ["A", "B"]
        .into_iter()
        .find(|n| v[engine.as_str()][n]["role"] == "primary")
        .unwrap_or_else(|| panic!("{} has no primary: {v}", engine.as_str()))
        .to_string()
}

pub async fn switchover(engine: Engine) {
    lab::scenario("switchover", engine).await;
}

// === instances ===

pub struct Instance {
    pub name: String,
    child: Child,
    pub admin: SocketAddr,
    log: PathBuf,
}

impl Instance {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {}", self.pid());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (at most `limit`) for `needle` in its log: a line reaches the file up to 100 ms
    /// after the change it tells of (logging/batch.rs batches writes).
    pub async fn await_log(&self, needle: &str, limit: Duration) {
        eventually(
            limit,
            &format!("{:?} in {}'s log", needle, self.name),
            || match self.log_text().contains(needle) {
                true => Ok(()),
                false => Err("not logged yet".into()),
            },
        )
        .await
    }

    /// `/status` (JSON null when the instance does not answer).
    pub fn status(&self) -> serde_json::Value {
        let s = http_get(self.admin, "/status").unwrap_or_default();
        serde_json::from_str(&s).unwrap_or_default()
    }

    /// The primary as this instance's /status says (None if no primary or no answer).
    pub fn primary(&self) -> Option<String> {
        self.status()["clusters"][0]["primary"]
            .as_str()
            .map(str::to_string)
    }

    /// The address of its primary listener (`rw`).
    pub fn listener(&self) -> SocketAddr {
        self.listener_at(0)
    }

    /// The address of listener `n` of its config: 0 is `rw` (primary), 1 is `ro` (replica).
    pub fn listener_at(&self, n: usize) -> SocketAddr {
        self.status()["listeners"][n]["local_addr"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{}: no listener {n} address in /status", self.name))
    }
}

impl Drop for Instance {
    /// Stops it by its pid; when the test is failing, its log goes to the test's output first
    /// (the log lives in the fleet's tempdir, which goes with the test).
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "--- {} (pid {}) log, last {} lines ---",
                self.name,
                self.pid(),
                tail.len()
            );
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// One test's fleet: a prefix of its own in etcd, configs and logs in a tempdir.
pub struct Fleet {
    dir: tempfile::TempDir,
    pub prefix: String,
    pub endpoints: Vec<String>,
    pub engine: Engine,
    /// `queue_timeout` of the primary listener (rolegate's default unless a test sets it).
    pub queue_timeout: &'static str,
}

impl Drop for Fleet {
    /// The test's keys go with it (instance keys expire with their leases; decisions stay).
    fn drop(&mut self) {
        let _ = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints.join(",")))
            .args(["--command-timeout=3s", "del", "--prefix", &self.prefix])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Fleet {
    pub fn new(endpoints: Vec<String>, test: &str, engine: Engine) -> Fleet {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Fleet {
            dir: tempfile::tempdir().expect("tempdir"),
            prefix: format!("/rolegate-tests/{test}-{}-{nanos}", std::process::id()),
            endpoints,
            engine,
            queue_timeout: "5s",
        }
    }

    pub fn keys(&self) -> Keys {
        Keys::new(&self.prefix)
    }

    pub fn start(&self, name: &str, mode: &str) -> Instance {
        self.start_with(name, mode, &self.endpoints, "local")
    }

    /// An instance of the lab pair of `engine` (backends `A`, `B`; rolegate's default check
    /// timing), one worker thread, its own etcd endpoints and `on_lost`. Returns once it has
    /// logged its start; panics (with its log) if it exits or does not start within 20 s.
    ///
    /// Every port it listens on is chosen by its own bind (port 0), the admin one included: a
    /// port picked here and bound later by the child may meanwhile be taken by any of the
    /// fleet's many other sockets (CI saw a follower exit on "Address already in use").
    pub fn start_with(
        &self,
        name: &str,
        mode: &str,
        endpoints: &[String],
        on_lost: &str,
    ) -> Instance {
        let e = self.engine;
        let yaml = ConfigBuilder::new()
            .admin(json!({ "listen": "127.0.0.1:0" }))
            .set("workers", 1)
            .cluster(
                Cluster::lab_protocol(CLUSTER, e)
                    .backend("A", e.addr('A'))
                    .backend("B", e.addr('B')),
            )
            .listener(
                Listener::new("rw", CLUSTER)
                    .role("primary")
                    .set("queue_timeout", self.queue_timeout),
            )
            .listener(Listener::new("ro", CLUSTER).role("replica"))
            .set(
                "coordination",
                json!({
                    "etcd": { "endpoints": endpoints },
                    "prefix": self.prefix,
                    "instance": name,
                    "mode": mode,
                    "observers": 2,
                    "lease_ttl": format!("{LEASE_TTL_S}s"),
                    "on_lost": on_lost,
                }),
            )
            .yaml();
        let config = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&config, yaml).expect("write config");
        let log = self.dir.path().join(format!("{name}.log"));
        let out = File::create(&log).expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_rolegate"))
            .args(["--config", config.to_str().unwrap(), "run"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out)
            .spawn()
            .expect("spawn rolegate");
        let admin = started(name, &mut child, &log);
        Instance {
            name: name.to_string(),
            child,
            admin,
            log,
        }
    }
}

/// The admin address from the child's `rolegate started.` line, polled for in its log file.
fn started(name: &str, child: &mut Child, log: &std::path::Path) -> SocketAddr {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(admin) = text.lines().find_map(crate::support::binary::started_line) {
            return admin
                .unwrap_or_else(|| panic!("{name} started without an admin address:\n{text}"));
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{name} exited ({status}) before it started:\n{text}");
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} did not log its start within 20 s:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// A POST; the whole response (status line included).
pub fn http_post(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}

pub fn is_2xx(reply: &str) -> bool {
    reply.starts_with("HTTP/1.1 2") || reply.starts_with("HTTP/1.0 2")
}

/// Polls `cond` until it holds, at most `limit`; panics with `what` and the last detail.
pub async fn eventually<F: FnMut() -> Result<(), String>>(
    limit: Duration,
    what: &str,
    mut cond: F,
) {
    crate::support::eventually_detail(limit, what, || std::future::ready(cond())).await
}

pub async fn etcd(endpoints: &[String]) -> Client {
    Client::connect(endpoints, None)
        .await
        .expect("connect etcd")
}

pub async fn get(client: &mut Client, key: &str) -> Option<(String, i64)> {
    let resp = client.get(key, None).await.expect("etcd get");
    resp.kvs().first().map(|kv| {
        (
            String::from_utf8_lossy(kv.value()).into_owned(),
            kv.create_revision(),
        )
    })
}

pub async fn wait_key(
    client: &mut Client,
    key: &str,
    what: &str,
    ok: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let value = get(client, key).await.map(|(v, _)| v);
        if let Some(v) = value.as_deref().filter(|v| ok(v)) {
            return v.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} ({key}): {value:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The local ports of `instances`' established connections to `node` (from `ss`), so that a
/// count on the server includes only these processes (other tests' proxies share the lab).
fn ports_to(node: SocketAddr, instances: &[&Instance]) -> Vec<u16> {
    let ss = Command::new("ss")
        .args(["-tnpH", "state", "established", "dst", &node.to_string()])
        .output()
        .expect("ss");
    let ss = String::from_utf8_lossy(&ss.stdout);
    ss.lines()
        .filter(|line| {
            instances
                .iter()
                .any(|i| line.contains(&format!("pid={},", i.pid())))
        })
        .filter_map(|line| {
            line.split_whitespace()
                .nth(2)?
                .rsplit_once(':')?
                .1
                .parse()
                .ok()
        })
        .collect()
}

/// Monitoring sessions of `instances` on one database node, counted on the server
/// (`pg_stat_activity`, `information_schema.processlist`, `CLIENT LIST`): the monitor user's
/// sessions whose client port is a socket of one of these processes.
pub async fn monitoring_sessions(
    engine: Engine,
    node: SocketAddr,
    instances: &[&Instance],
) -> Result<usize, String> {
    let ports = ports_to(node, instances);
    if ports.is_empty() {
        return Ok(0);
    }
    let ports_i32: Vec<i32> = ports.iter().map(|&p| i32::from(p)).collect();
    let password = lab::monitor_password();
    match engine {
        Engine::Pg => {
            let conn = format!(
                "host={} port={} user=rolegate_monitor password={password} dbname=postgres",
                node.ip(),
                node.port()
            );
            let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                .await
                .map_err(|e| format!("pg {node}: {e}"))?;
            tokio::spawn(connection);
            let n: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE usename = 'rolegate_monitor' AND client_port = ANY($1)",
                    &[&ports_i32],
                )
                .await
                .map_err(|e| format!("pg_stat_activity on {node}: {e}"))?
                .get(0);
            Ok(n as usize)
        }
        Engine::Mysql => {
            use mysql_async::prelude::Queryable;
            let opts = mysql_async::OptsBuilder::default()
                .ip_or_hostname(node.ip().to_string())
                .tcp_port(node.port())
                .prefer_socket(false)
                .user(Some("rolegate_monitor"))
                .pass(Some(password));
            let mut conn = mysql_async::Conn::new(opts)
                .await
                .map_err(|e| format!("mysql {node}: {e}"))?;
            let hosts: Vec<String> = conn
                .query("SELECT HOST FROM information_schema.PROCESSLIST WHERE USER = 'rolegate_monitor'")
                .await
                .map_err(|e| format!("processlist on {node}: {e}"))?;
            let _ = conn.disconnect().await;
            Ok(hosts
                .iter()
                .filter(|h| {
                    h.rsplit_once(':')
                        .and_then(|(_, p)| p.parse::<u16>().ok())
                        .is_some_and(|p| ports.contains(&p))
                })
                .count())
        }
        Engine::Redis => {
            let out = Command::new("redis-cli")
                .args(["-h", &node.ip().to_string(), "-p", &node.port().to_string()])
                .args(["-a", &password, "--no-auth-warning", "CLIENT", "LIST"])
                .output()
                .map_err(|e| format!("redis-cli: {e}"))?;
            Ok(String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains(" name=rolegate "))
                .filter(|l| {
                    ports
                        .iter()
                        .any(|p| l.contains(&format!("addr={}:{p} ", node.ip())))
                })
                .count())
        }
    }
}

pub fn all_route_to(instances: &[&Instance], node: &str) -> Result<(), String> {
    let seen: Vec<(String, Option<String>)> = instances
        .iter()
        .map(|i| (i.name.clone(), i.primary()))
        .collect();
    if seen.iter().all(|(_, p)| p.as_deref() == Some(node)) {
        Ok(())
    } else {
        Err(format!("want {node} everywhere: {seen:?}"))
    }
}

pub fn other(node: &str) -> &'static str {
    if node == "A" {
        "B"
    } else {
        "A"
    }
}
