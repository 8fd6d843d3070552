//! Steering (listener `steer:`) with real clients in a cgroup v2 child and the lab's servers.
//!
//! Clients that must run inside the steered cgroup are this test binary run again
//! (`steer_client`, ignored as a test) by `sh`, which writes its own pid to the cgroup's
//! `cgroup.procs` before `exec`, so the client's sockets belong to the cgroup from the start.
//! It prints `CLIENT key=value` lines that the tests read.
//!
//! Needs root, cgroup2 at /sys/fs/cgroup/unified, the lab and a build with steering: without
//! them each test skips through [`require`] (and fails under `loadtest/test.sh`).

mod basic;
mod failover;
mod ipv6;

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::binary::{self, Rolegate, Start};
use crate::support::files::ConfigFile;
use crate::support::lab::{self, Engine};
use crate::support::{self, http, require};

const CGROUP_ROOT: &str = "/sys/fs/cgroup/unified";
/// How a helper run knows what to do: `MODE ENGINE ADDR`.
const CLIENT_ENV: &str = "ROLEGATE_STEER_CLIENT";

// === the cgroup ===

/// A cgroup v2 child of our own, removed on drop (after its processes have exited).
struct Cgroup(PathBuf);

impl Cgroup {
    fn create(tag: &str) -> Cgroup {
        let path =
            Path::new(CGROUP_ROOT).join(format!("rg-steer-test-{}-{tag}", std::process::id()));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Cgroup(path)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // rmdir fails with EBUSY while a member is still exiting: retry, bounded.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::remove_dir(&self.0).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Root, cgroup2 where the tests create their cgroup, and the lab's `engines`.
fn requirements(engines: &[Engine]) -> Option<require::Met> {
    let _root = require::root()?;
    let _cgroup2 = require::cgroup2(CGROUP_ROOT)?;
    require::lab(engines)
}

// === rolegate ===

fn cluster_yaml(engine: Engine) -> String {
    let (protocol, user, database) = match engine {
        Engine::Pg => (
            "postgres",
            "user: rolegate_monitor, ",
            ", database: postgres",
        ),
        Engine::Mysql => ("mysql", "user: rolegate_monitor, ", ""),
        Engine::Redis => ("redis", "", ""),
    };
    format!(
        "  - name: db\n    protocol: {protocol}\n    check: {{ {user}password: \"{pw}\"{database}, interval: 250ms, rise: 2 }}\n    backends:\n      - {{ name: a, address: \"{a}\" }}\n      - {{ name: b, address: \"{b}\" }}\n",
        pw = lab::monitor_password(),
        a = engine.addr('A'),
        b = engine.addr('B'),
    )
}

fn config(engine: Engine, cgroup: &Cgroup) -> ConfigFile {
    let yaml = format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nlog: {{ format: json }}\nclusters:\n{}listeners:\n  - name: rw\n    bind: 127.0.0.1:0\n    cluster: db\n    queue_timeout: 20s\n    steer: {{ cgroup: {} }}\n",
        cluster_yaml(engine),
        cgroup.0.display()
    );
    ConfigFile::new(&yaml)
}

/// Starts rolegate, waits until the listener routes, and returns it with the listener address.
async fn start(config: &ConfigFile, opts: Start<'_>) -> (Rolegate, SocketAddr) {
    let rg = Rolegate::start(&config.path, opts).await;
    binary::wait_ready(rg.admin()).await;
    let rw = binary::listener_addr(rg.admin(), "rw").await;
    (rg, rw)
}

/// The first listener's `steer` object from `/status`.
async fn steer_status(admin: SocketAddr) -> serde_json::Value {
    let status = http::get(admin, "/status").await.json();
    status["listeners"][0]["steer"].clone()
}

/// The `steer` object of listener `name` from `/status`.
async fn steer_status_of(admin: SocketAddr, name: &str) -> serde_json::Value {
    let status = http::get(admin, "/status").await.json();
    status["listeners"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["name"] == name))
        .map(|l| l["steer"].clone())
        .unwrap_or_else(|| panic!("no listener {name} in /status: {status}"))
}

/// Connections steered to `backend` so far, from `/status`.
async fn steered_total(admin: SocketAddr, backend: &str) -> u64 {
    steer_status(admin).await["connections_total"][backend]
        .as_u64()
        .unwrap_or(0)
}

/// Connections of listener `name` steered to `backend` so far, from `/status`.
async fn steered_total_of(admin: SocketAddr, name: &str, backend: &str) -> u64 {
    steer_status_of(admin, name).await["connections_total"][backend]
        .as_u64()
        .unwrap_or(0)
}

/// Connections of listener `name` steered so far, to any backend (the lab's primary may be A or
/// B when a test starts).
async fn steered_sum_of(admin: SocketAddr, name: &str) -> u64 {
    let steer = steer_status_of(admin, name).await;
    steer["connections_total"]
        .as_object()
        .map(|m| m.values().filter_map(serde_json::Value::as_u64).sum())
        .unwrap_or(0)
}

/// Skips when this build has no steering (rolegate says so in `/status`).
async fn built_with_steering(admin: SocketAddr) -> bool {
    let steer = steer_status(admin).await;
    let reason = steer["reason"].as_str().unwrap_or("");
    if reason.contains("built without steering") {
        return require::steering_built(reason).is_some();
    }
    assert_eq!(steer["active"], true, "steering is not active: {steer}");
    true
}

// === clients in the cgroup ===

/// A helper client running in `cgroup`; its `CLIENT` lines are read as they come.
struct Client {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Client {
    fn spawn(cgroup: &Path, mode: &str, engine: Engine, addr: SocketAddr) -> Client {
        let exe = std::env::current_exe().expect("test binary path");
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(r#"echo $$ > "$1/cgroup.procs" && exec "$2" --ignored --exact steer::steer_client --nocapture --test-threads 1"#)
            .arg("sh")
            .arg(cgroup)
            .arg(exe)
            .env(CLIENT_ENV, format!("{mode} {} {addr}", engine.as_str()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the client");
        let stdout = child.stdout.take().expect("client stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                // The harness prints `test steer_client ... ` before the first line.
                if let Some((_, rest)) = line.split_once("CLIENT ") {
                    if tx.send(rest.to_string()).is_err() {
                        break;
                    }
                }
            }
        });
        Client { child, lines: rx }
    }

    /// The next `CLIENT` line, within `limit`.
    fn next(&self, limit: Duration) -> String {
        self.lines
            .recv_timeout(limit)
            .unwrap_or_else(|e| panic!("no line from the client within {limit:?}: {e}"))
    }

    /// The next line starting with `prefix` (others are skipped), within `limit`.
    fn until(&self, prefix: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.next(left);
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    /// Runs a one-shot client to its end and returns its lines.
    fn run(cgroup: &Path, mode: &str, engine: Engine, addr: SocketAddr) -> Vec<String> {
        let mut c = Client::spawn(cgroup, mode, engine, addr);
        let status = wait_child(&mut c.child, Duration::from_secs(60));
        // The reader ends at EOF (it drops the sender): every line is in then.
        let mut lines = Vec::new();
        while let Ok(line) = c.lines.recv_timeout(Duration::from_secs(10)) {
            lines.push(line);
        }
        assert!(
            status.success(),
            "client {mode} failed ({status}): {lines:?}"
        );
        lines
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// [`Client::run`] off the runtime threads.
async fn run_client(cgroup: &Cgroup, mode: &str, engine: Engine, addr: SocketAddr) -> Vec<String> {
    let (path, mode) = (cgroup.0.clone(), mode.to_string());
    tokio::task::spawn_blocking(move || Client::run(&path, &mode, engine, addr))
        .await
        .expect("client task")
}

fn wait_child(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the client") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the client did not finish within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn field<'a>(lines: &'a [String], key: &str) -> &'a str {
    lines
        .iter()
        .flat_map(|l| l.split_whitespace())
        .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in {lines:?}"))
}

/// What one raw Redis connection to `addr` shows: (own local address, getpeername, the
/// client address Redis reports). Direct when Redis sees our own address.
fn redis_identity(addr: SocketAddr) -> (SocketAddr, SocketAddr, SocketAddr) {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(20)).expect("connect");
    redis_identity_of(s)
}

/// [`redis_identity`] from an AF_INET6 socket with IPV6_V6ONLY set before its connect (as
/// `net.ipv6.bindv6only=1` would set it by default): such a socket cannot connect to an
/// IPv4-mapped address (ENETUNREACH), so it must not be steered to an IPv4 backend.
fn redis_identity_v6only(addr: SocketAddr) -> (SocketAddr, SocketAddr, SocketAddr) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::STREAM, None).expect("an AF_INET6 socket");
    socket.set_only_v6(true).expect("set IPV6_V6ONLY");
    assert!(
        socket.only_v6().expect("read IPV6_V6ONLY"),
        "IPV6_V6ONLY is set"
    );
    socket
        .connect_timeout(&addr.into(), Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("connect an IPv6-only socket to {addr}: {e}"));
    redis_identity_of(socket.into())
}

fn redis_identity_of(mut s: TcpStream) -> (SocketAddr, SocketAddr, SocketAddr) {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let local = s.local_addr().unwrap();
    let peer = s.peer_addr().unwrap();
    let cmd = format!("AUTH {}\r\nCLIENT INFO\r\n", lab::monitor_password());
    s.write_all(cmd.as_bytes()).unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&reply).contains(" laddr=") {
        let n = s.read(&mut buf).expect("read CLIENT INFO");
        assert!(
            n > 0,
            "closed before CLIENT INFO: {:?}",
            String::from_utf8_lossy(&reply)
        );
        reply.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&reply);
    // `addr=IP:PORT`; IPv6 in brackets (Redis 7) or without (older versions).
    let seen = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .and_then(|a| {
            a.parse().ok().or_else(|| {
                let (ip, port) = a.rsplit_once(':')?;
                Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?))
            })
        })
        .unwrap_or_else(|| panic!("no addr= in {text:?}"));
    (local, peer, seen)
}

/// Not a test: the client the tests run inside the cgroup (see the module doc). Modes:
/// `identity` (one Redis connection: local, peer, seen; `identity6` from an AF_INET6 socket to
/// the mapped address, `identity6only` from an IPv6-only socket), `write` (one new connection,
/// one write: the server's port), `writer` (one session writing until it fails).
#[test]
#[ignore = "helper process of the steer tests, run by them inside a cgroup"]
fn steer_client() {
    let Ok(spec) = std::env::var(CLIENT_ENV) else {
        return;
    };
    let mut words = spec.split_whitespace();
    let (mode, engine, addr) = (
        words.next().unwrap_or_default().to_string(),
        words.next().unwrap_or_default(),
        words
            .next()
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .expect("address"),
    );
    let engine = match engine {
        "pg" => Engine::Pg,
        "mysql" => Engine::Mysql,
        _ => Engine::Redis,
    };
    let out = |line: String| {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "CLIENT {line}");
        let _ = stdout.flush();
    };
    if mode == "identity" || mode == "identity6" {
        // identity6: an AF_INET6 socket to the IPv4-mapped address (a dual-stack client).
        let addr = match (mode.as_str(), addr) {
            ("identity6", SocketAddr::V4(a)) => {
                SocketAddr::new(std::net::IpAddr::V6(a.ip().to_ipv6_mapped()), a.port())
            }
            _ => addr,
        };
        let (local, peer, seen) = redis_identity(addr);
        out(format!("local={local} peer={peer} seen={seen}"));
        return;
    }
    if mode == "identity6only" {
        let (local, peer, seen) = redis_identity_v6only(addr);
        out(format!("local={local} peer={peer} seen={seen}"));
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        match mode.as_str() {
            "write" => match support::db::connect_and_write(engine, addr, "steer").await {
                Ok(port) => out(format!("wrote={port}")),
                Err(e) => out(format!("error={}", e.replace(' ', "_"))),
            },
            "writer" => {
                // Writes until the session is gone. A demoted node refuses writes but still
                // answers a read: the session is closed only when the read fails too.
                let mut session = support::db::open(engine, addr).await.expect("open");
                out("open=1".into());
                for _ in 0..6000 {
                    match session.write("steer").await {
                        Ok(port) => out(format!("wrote={port}")),
                        Err(e) => match session.server_port().await {
                            Ok(port) => out(format!("refused_on={port}")),
                            Err(closed) => {
                                let why = format!("{e} / {closed}").replace(' ', "_");
                                out(format!("closed={why}"));
                                return;
                            }
                        },
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                out("closed=never".into());
            }
            other => panic!("unknown client mode {other}"),
        }
    });
}
