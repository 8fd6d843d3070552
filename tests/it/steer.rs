//! Steering (listener `steer:`) with real clients in a cgroup v2 child and the lab's servers.
//!
//! Clients that must run inside the steered cgroup are this test binary run again
//! (`steer_client`, ignored as a test) by `sh`, which writes its own pid to the cgroup's
//! `cgroup.procs` before `exec`, so the client's sockets belong to the cgroup from the start.
//! It prints `CLIENT key=value` lines that the tests read.
//!
//! Needs root, cgroup2 at /sys/fs/cgroup/unified, the lab and a build with steering: without
//! them each test skips through [`require`] (and fails under `loadtest/test.sh`).

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

// === the tests ===

/// A client in the cgroup reaches the primary directly (Redis sees the client's own address),
/// `getpeername` shows the listener; a client outside the cgroup is proxied.
#[tokio::test(flavor = "multi_thread")]
async fn steered_client_reaches_the_primary_directly_outsider_is_proxied() {
    let Some(_met) = requirements(&[Engine::Redis]) else {
        return;
    };
    let _lab = lab::lock_read_only();
    let cgroup = Cgroup::create("direct");
    let cfg = config(Engine::Redis, &cgroup);
    let (rg, rw) = start(&cfg, Start::default()).await;
    if !built_with_steering(rg.admin()).await {
        return;
    }
    let lines = run_client(&cgroup, "identity", Engine::Redis, rw).await;
    let local: SocketAddr = field(&lines, "local").parse().unwrap();
    let peer: SocketAddr = field(&lines, "peer").parse().unwrap();
    let seen: SocketAddr = field(&lines, "seen").parse().unwrap();
    assert_eq!(peer, rw, "getpeername shows the listener address");
    assert_eq!(seen, local, "Redis sees the steered client's own address");
    assert!(steered_sum_of(rg.admin(), "rw").await >= 1);

    // A dual-stack client: AF_INET6 socket, IPv4-mapped listener address (connect6).
    let lines = run_client(&cgroup, "identity6", Engine::Redis, rw).await;
    let local: SocketAddr = field(&lines, "local").parse().unwrap();
    let peer: SocketAddr = field(&lines, "peer").parse().unwrap();
    let seen: SocketAddr = field(&lines, "seen").parse().unwrap();
    let SocketAddr::V4(rw4) = rw else {
        panic!("an IPv4 listener")
    };
    assert_eq!(
        peer,
        SocketAddr::new(rw4.ip().to_ipv6_mapped().into(), rw.port()),
        "getpeername6"
    );
    assert_eq!(
        seen.port(),
        local.port(),
        "Redis sees the dual-stack client's own port: {lines:?}"
    );

    let (local, peer, seen) = tokio::task::spawn_blocking(move || redis_identity(rw))
        .await
        .unwrap();
    assert_eq!(peer, rw);
    assert_ne!(seen, local, "a client outside the cgroup is proxied");
    rg.stop_cleanly().await;
}

/// Switchover under a write loop: the steered session on the demoted node is closed, new
/// connections are steered to the new primary.
async fn switchover(engine: Engine) {
    let Some(_met) = requirements(&[engine]) else {
        return;
    };
    let _lock = lab::lock();
    let _reset = lab::ResetOnPanic(engine);
    let cgroup = Cgroup::create(engine.as_str());
    let cfg = config(engine, &cgroup);
    let (rg, rw) = start(&cfg, Start::default()).await;
    if !built_with_steering(rg.admin()).await {
        return;
    }
    let (a, b) = (engine.addr('A').port(), engine.addr('B').port());
    let writer = Client::spawn(&cgroup.0, "writer", engine, rw);
    writer.until("open=", Duration::from_secs(20));
    assert_eq!(
        writer.until("wrote=", Duration::from_secs(20)),
        format!("wrote={a}")
    );
    assert_eq!(
        steered_total(rg.admin(), "a").await,
        1,
        "the writer was steered"
    );

    lab::scenario("switchover", engine).await;
    let end = writer.until("closed=", Duration::from_secs(30));
    assert_ne!(
        end, "closed=never",
        "{engine:?}: the steered session outlived the switchover"
    );

    let admin = rg.admin();
    support::eventually(Duration::from_secs(20), "route on b", || async move {
        steer_status(admin).await["connections_total"]
            .as_object()
            .is_some_and(|m| m.contains_key("b"))
    })
    .await;
    let lines = run_client(&cgroup, "write", engine, rw).await;
    assert_eq!(
        field(&lines, "wrote"),
        b.to_string(),
        "{engine:?}: {lines:?}"
    );
    assert!(
        steered_total(admin, "b").await >= 1,
        "the new connection was steered to b"
    );
    // PostgreSQL's demotion restarts the server, which closes the session itself; Redis and
    // MariaDB keep it open, so there rolegate must have destroyed it.
    let metrics = http::get(admin, "/metrics").await.body;
    let fenced = "rolegate_steer_fenced_total{backend=\"a\",listener=\"rw\"}";
    assert!(
        engine == Engine::Pg || support::metric_value(&metrics, fenced).is_some_and(|v| v >= 1.0),
        "fencing counted; writer ended with {end}; log: {:#?}",
        rg.lines()
    );
    drop(writer);
    rg.stop_cleanly().await;
    lab::reset(engine).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn switchover_redis() {
    switchover(Engine::Redis).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn switchover_pg() {
    switchover(Engine::Pg).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn switchover_mysql() {
    switchover(Engine::Mysql).await;
}

/// `disable` of the primary closes its steered sessions; with no primary a steered client's
/// connect reaches the proxy, waits in its queue and completes after `enable`.
#[tokio::test(flavor = "multi_thread")]
async fn no_primary_falls_back_to_the_proxy_queue() {
    let Some(_met) = requirements(&[Engine::Redis]) else {
        return;
    };
    let _lab = lab::lock_read_only();
    let cgroup = Cgroup::create("queue");
    let cfg = config(Engine::Redis, &cgroup);
    let (rg, rw) = start(&cfg, Start::default()).await;
    let admin = rg.admin();
    if !built_with_steering(admin).await {
        return;
    }
    let a = Engine::Redis.addr('A').port();
    let writer = Client::spawn(&cgroup.0, "writer", Engine::Redis, rw);
    assert_eq!(
        writer.until("wrote=", Duration::from_secs(20)),
        format!("wrote={a}")
    );
    // A dual-stack one too (AF_INET6 socket, IPv4-mapped address): fenced the same way.
    let SocketAddr::V4(rw4) = rw else {
        panic!("an IPv4 listener")
    };
    let mapped = SocketAddr::new(rw4.ip().to_ipv6_mapped().into(), rw.port());
    let writer6 = Client::spawn(&cgroup.0, "writer", Engine::Redis, mapped);
    assert_eq!(
        writer6.until("wrote=", Duration::from_secs(20)),
        format!("wrote={a}")
    );
    assert_eq!(
        steered_total(admin, "a").await,
        2,
        "both writers were steered"
    );
    let disabled = http::post(admin, "/backends/db/a/disable", None).await;
    assert_eq!(disabled.status, 200);
    let end = writer.until("closed=", Duration::from_secs(20));
    assert_ne!(end, "closed=never", "disable closes steered sessions");
    let end = writer6.until("closed=", Duration::from_secs(20));
    assert_ne!(
        end, "closed=never",
        "disable closes steered dual-stack sessions"
    );
    let before = steered_total(admin, "a").await;

    let queued = Client::spawn(&cgroup.0, "write", Engine::Redis, rw);
    support::eventually(
        Duration::from_secs(20),
        "the connect queued by the proxy",
        || async move {
            let m = http::get(admin, "/metrics").await.body;
            support::metric_value(&m, "rolegate_queued_connections{listener=\"rw\"}")
                .is_some_and(|v| v >= 1.0)
        },
    )
    .await;
    assert_eq!(
        http::post(admin, "/backends/db/a/enable", None)
            .await
            .status,
        200
    );
    assert_eq!(
        queued.until("wrote=", Duration::from_secs(30)),
        format!("wrote={a}")
    );
    assert_eq!(
        steered_total(admin, "a").await,
        before,
        "the queued client was proxied"
    );
    drop(queued);
    drop(writer);
    drop(writer6);
    rg.stop_cleanly().await;
}

/// Without the capabilities to load BPF: one warning, `/status` says why, clients in the
/// cgroup are proxied.
#[tokio::test(flavor = "multi_thread")]
async fn load_failure_degrades_to_the_proxy() {
    let Some(_met) = requirements(&[Engine::Redis]) else {
        return;
    };
    let Some(setpriv) = require::tool("setpriv", &[], "util-linux") else {
        return;
    };
    let setpriv = setpriv.display().to_string();
    let _lab = lab::lock_read_only();
    let cgroup = Cgroup::create("nocap");
    let cfg = config(Engine::Redis, &cgroup);
    let opts = Start {
        wrapper: vec![
            setpriv.as_str(),
            "--bounding-set=-all",
            "--inh-caps=-all",
            "--ambient-caps=-all",
            "--",
        ],
        ..Start::default()
    };
    let (rg, rw) = start(&cfg, opts).await;
    let steer = steer_status(rg.admin()).await;
    assert_eq!(steer["active"], false, "{steer}");
    let reason = steer["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("Operation not permitted"),
        "the reason says why: {steer}"
    );
    let metrics = http::get(rg.admin(), "/metrics").await.body;
    assert_eq!(
        support::metric_value(&metrics, "rolegate_steer_active{listener=\"rw\"}"),
        Some(0.0)
    );
    assert_eq!(
        rg.count(
            "Steering is off: the listeners with steer: serve their local clients as a proxy."
        ),
        1,
        "one warning: {:#?}",
        rg.lines()
    );
    let lines = run_client(&cgroup, "identity", Engine::Redis, rw).await;
    assert_ne!(field(&lines, "seen"), field(&lines, "local"), "proxied");
    rg.stop_cleanly().await;
}

/// After rolegate exits (SIGTERM, then kill -9 of a second run) nothing is steered: a client in
/// the cgroup connecting to the listener address is refused (nobody listens there), although
/// the backend is up.
#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_steered_after_exit() {
    let Some(_met) = requirements(&[Engine::Redis]) else {
        return;
    };
    let _lab = lab::lock_read_only();
    let cgroup = Cgroup::create("exit");
    let a = Engine::Redis.addr('A');
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let cfg = config(Engine::Redis, &cgroup);
        let (mut rg, rw) = start(&cfg, Start::default()).await;
        if !built_with_steering(rg.admin()).await {
            return;
        }
        let lines = run_client(&cgroup, "identity", Engine::Redis, rw).await;
        assert_eq!(
            field(&lines, "seen"),
            field(&lines, "local"),
            "steered while running"
        );
        rg.signal(signal);
        rg.wait(Duration::from_secs(30))
            .await
            .expect("rolegate exits");
        let refused = run_client(&cgroup, "write", Engine::Redis, rw).await;
        let error = field(&refused, "error");
        assert!(
            error.to_lowercase().contains("refused"),
            "after signal {signal}, a connect to {rw} must not reach {a}: {refused:?}"
        );
    }
}

/// A reload that adds `steer:` loads and attaches the program; one that removes it detaches
/// it, and the listener's clients are proxied again.
#[tokio::test(flavor = "multi_thread")]
async fn reload_turns_steering_on_and_off() {
    let Some(_met) = requirements(&[Engine::Redis]) else {
        return;
    };
    let _lab = lab::lock_read_only();
    let cgroup = Cgroup::create("reload");
    let steered = config(Engine::Redis, &cgroup);
    let plain_yaml = std::fs::read_to_string(&steered.path).unwrap().replace(
        &format!("    steer: {{ cgroup: {} }}\n", cgroup.0.display()),
        "",
    );
    steered.write(&plain_yaml);
    let (rg, _) = start(&steered, Start::default()).await;
    let admin = rg.admin();
    // `bind` stays `127.0.0.1:0` in every file: unchanged, so the socket (and port) stays.
    let rw = binary::listener_addr(admin, "rw").await;
    let steer_yaml = plain_yaml.replace(
        "    queue_timeout: 20s\n",
        &format!(
            "    queue_timeout: 20s\n    steer: {{ cgroup: {} }}\n",
            cgroup.0.display()
        ),
    );
    let direct = |lines: &[String]| field(lines, "seen") == field(lines, "local");

    assert!(
        !direct(&run_client(&cgroup, "identity", Engine::Redis, rw).await),
        "no steer: proxied"
    );
    steered.write(&steer_yaml);
    assert_eq!(http::post(admin, "/reload", None).await.status, 200);
    if !built_with_steering(admin).await {
        return;
    }
    assert!(
        direct(&run_client(&cgroup, "identity", Engine::Redis, rw).await),
        "steered after the reload"
    );
    steered.write(&plain_yaml);
    assert_eq!(http::post(admin, "/reload", None).await.status, 200);
    assert!(
        !direct(&run_client(&cgroup, "identity", Engine::Redis, rw).await),
        "proxied again"
    );
    rg.stop_cleanly().await;
}

// === IPv6, wildcard binds ===

/// A config with several steered listeners (`name`, `bind`, `cluster`) and extra clusters.
fn config_listeners(
    clusters: &str,
    listeners: &[(&str, &str, &str)],
    cgroup: &Cgroup,
) -> ConfigFile {
    let mut yaml = format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nlog: {{ format: json }}\nclusters:\n{clusters}listeners:\n"
    );
    for (name, bind, cluster) in listeners {
        yaml.push_str(&format!(
            "  - name: {name}\n    bind: \"{bind}\"\n    cluster: {cluster}\n    queue_timeout: 20s\n    steer: {{ cgroup: {} }}\n",
            cgroup.0.display()
        ));
    }
    ConfigFile::new(&yaml)
}

/// A Redis server of this test's own on `[::1]` (the lab's are IPv4), stopped on drop.
struct Redis6 {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Redis6 {
    fn start(server: &Path) -> Redis6 {
        // A free port: bound and released (redis-server fails loudly if it is taken meanwhile).
        let port = std::net::TcpListener::bind("[::1]:0")
            .and_then(|l| l.local_addr())
            .expect("a free IPv6 loopback port")
            .port();
        let addr: SocketAddr = format!("[::1]:{port}").parse().unwrap();
        let child = std::process::Command::new(server)
            .args(["--bind", "::1", "--port", &port.to_string(), "--save", ""])
            .args([
                "--appendonly",
                "no",
                "--requirepass",
                &lab::monitor_password(),
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server on [::1]");
        let redis = Redis6 { child, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server on {addr} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }
}

impl Drop for Redis6 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `identity` client run in the cgroup: (local, peer, seen by Redis).
async fn identity(
    cgroup: &Cgroup,
    mode: &str,
    addr: SocketAddr,
) -> (SocketAddr, SocketAddr, SocketAddr) {
    let lines = run_client(cgroup, mode, Engine::Redis, addr).await;
    let get = |k: &str| -> SocketAddr { field(&lines, k).parse().unwrap() };
    (get("local"), get("peer"), get("seen"))
}

/// Native IPv6 listeners: a client connecting to `[::1]:P` is steered to an IPv6 backend
/// (Redis sees its own `[::1]` address) and to an IPv4 one (by the mapped address: Redis sees
/// 127.0.0.1 and the client's port); `getpeername` shows `[::1]:P`. An AF_INET client of an
/// IPv4 listener whose backend is IPv6 cannot be rewritten across families: it is proxied.
#[tokio::test(flavor = "multi_thread")]
async fn ipv6_listeners_steer_to_ipv6_and_ipv4_backends() {
    let Some(_met) = requirements(&[Engine::Redis]) else {
        return;
    };
    let Some(server) = require::tool("redis-server", &[], "redis-server") else {
        return;
    };
    let _lab = lab::lock_read_only();
    let cgroup = Cgroup::create("ipv6");
    let own = tokio::task::spawn_blocking(move || Redis6::start(&server))
        .await
        .unwrap();
    let clusters = format!(
        "{}  - name: db6\n    protocol: redis\n    check: {{ password: \"{}\", interval: 250ms, rise: 2 }}\n    backends:\n      - {{ name: c, address: \"{}\" }}\n",
        cluster_yaml(Engine::Redis),
        lab::monitor_password(),
        own.addr
    );
    let cfg = config_listeners(
        &clusters,
        &[
            ("to4", "[::1]:0", "db"),
            ("to6", "[::1]:0", "db6"),
            ("v4to6", "127.0.0.1:0", "db6"),
        ],
        &cgroup,
    );
    let rg = Rolegate::start(&cfg.path, Start::default()).await;
    let admin = rg.admin();
    binary::wait_ready(admin).await;
    if !built_with_steering(admin).await {
        return;
    }
    for name in ["to4", "to6", "v4to6"] {
        let steer = steer_status_of(admin, name).await;
        assert_eq!(steer["active"], true, "{name}: {steer}");
    }

    let to4 = binary::listener_addr(admin, "to4").await;
    let (local, peer, seen) = identity(&cgroup, "identity", to4).await;
    assert_eq!(peer, to4, "getpeername6 shows the IPv6 listener");
    assert_eq!(
        (seen.ip(), seen.port()),
        ("127.0.0.1".parse().unwrap(), local.port()),
        "steered to the IPv4 backend by its mapped address (local {local})"
    );
    assert!(steered_sum_of(admin, "to4").await >= 1);

    let to6 = binary::listener_addr(admin, "to6").await;
    let (local, peer, seen) = identity(&cgroup, "identity", to6).await;
    assert_eq!(peer, to6, "getpeername6 shows the IPv6 listener");
    assert_eq!(seen, local, "Redis on [::1] sees the steered client itself");
    assert!(steered_total_of(admin, "to6", "c").await >= 1);

    let v4to6 = binary::listener_addr(admin, "v4to6").await;
    let (local, peer, seen) = identity(&cgroup, "identity", v4to6).await;
    assert_eq!(peer, v4to6);
    assert_ne!(seen, local, "an AF_INET socket cannot reach [::1]: proxied");
    assert_eq!(steered_total_of(admin, "v4to6", "c").await, 0);
    rg.stop_cleanly().await;
    drop(own);
}

/// An AF_INET6 socket with IPV6_V6ONLY cannot connect to an IPv4-mapped address, so a client
/// that sets it (or gets it from `net.ipv6.bindv6only=1`) and connects to an IPv6 listener whose
/// backend is IPv4 is left to the proxy, which connects to the backend itself (Redis sees
/// rolegate, the steering counter stays put); the same client without V6ONLY is steered.
#[tokio::test(flavor = "multi_thread")]
async fn ipv6_only_sockets_are_proxied_to_ipv4_backends() {
    let Some(_met) = requirements(&[Engine::Redis]) else {
        return;
    };
    let _lab = lab::lock_read_only();
    let cgroup = Cgroup::create("v6only");
    let cfg = config_listeners(
        &cluster_yaml(Engine::Redis),
        &[("to4", "[::1]:0", "db")],
        &cgroup,
    );
    let rg = Rolegate::start(&cfg.path, Start::default()).await;
    let admin = rg.admin();
    binary::wait_ready(admin).await;
    if !built_with_steering(admin).await {
        return;
    }
    let steer = steer_status_of(admin, "to4").await;
    assert_eq!(
        steer["ipv6_to_ipv4"],
        serde_json::json!({ "active": true, "reason": null }),
        "this kernel lets connect6 read IPV6_V6ONLY: {steer}"
    );
    let to4 = binary::listener_addr(admin, "to4").await;

    let (local, peer, seen) = identity(&cgroup, "identity", to4).await;
    assert_eq!(peer, to4, "getpeername6 shows the IPv6 listener");
    assert_eq!(
        (seen.ip(), seen.port()),
        ("127.0.0.1".parse().unwrap(), local.port()),
        "a dual-stack socket is steered to the IPv4 backend (local {local})"
    );
    let steered = steered_sum_of(admin, "to4").await;
    assert_eq!(steered, 1, "the steered connect is counted");

    let (local, peer, seen) = identity(&cgroup, "identity6only", to4).await;
    assert_eq!(
        peer, to4,
        "the IPv6-only socket is connected to the listener itself"
    );
    assert_ne!(
        seen.port(),
        local.port(),
        "Redis sees rolegate's connection, not the IPv6-only client (local {local}, seen {seen})"
    );
    assert_eq!(
        steered_sum_of(admin, "to4").await,
        steered,
        "the IPv6-only connect was not steered"
    );
    assert_eq!(
        rg.count(
            "Steering cannot read a socket's IPV6_V6ONLY: IPv6 clients of IPv4 backends are served by the proxy."
        ),
        0
    );
    rg.stop_cleanly().await;
}

/// Where connect6 cannot read IPV6_V6ONLY (here: no `CAP_PERFMON`, which the typed socket
/// pointer needs) steering stays on, one warning and `/status` say why, and every IPv6 client of
/// an IPv4 backend is proxied, IPv6-only or not; dual-stack clients of IPv4 listeners (mapped
/// destinations, which an IPv6-only socket could not connect to anyway) are still steered, and
/// so is every candidate of a round-robin route.
#[tokio::test(flavor = "multi_thread")]
async fn without_perfmon_ipv6_clients_of_ipv4_backends_are_proxied() {
    let Some(_met) = requirements(&[Engine::Redis]) else {
        return;
    };
    let Some(setpriv) = require::tool("setpriv", &[], "util-linux") else {
        return;
    };
    let setpriv = setpriv.display().to_string();
    let _lab = lab::lock_read_only();
    let cgroup = Cgroup::create("noperfmon");
    let cfg = config_listeners(
        &cluster_yaml(Engine::Redis),
        &[("to4", "[::1]:0", "db"), ("rw4", "127.0.0.1:0", "db")],
        &cgroup,
    );
    // And a round-robin route (two candidates: the variable-offset path of the program).
    let mut yaml = std::fs::read_to_string(&cfg.path).unwrap();
    yaml.push_str(&format!(
        "  - name: any4\n    bind: \"127.0.0.1:0\"\n    cluster: db\n    role: any\n    steer: {{ cgroup: {} }}\n",
        cgroup.0.display()
    ));
    cfg.write(&yaml);
    // Root keeps every other capability (CAP_BPF, CAP_NET_ADMIN); CAP_SYS_ADMIN implies
    // CAP_PERFMON, so both go.
    let opts = Start {
        wrapper: vec![
            setpriv.as_str(),
            "--bounding-set=-perfmon,-sys_admin",
            "--inh-caps=-perfmon,-sys_admin",
            "--",
        ],
        ..Start::default()
    };
    let rg = Rolegate::start(&cfg.path, opts).await;
    let admin = rg.admin();
    binary::wait_ready(admin).await;
    if !built_with_steering(admin).await {
        return;
    }
    let steer = steer_status_of(admin, "to4").await;
    assert_eq!(steer["active"], true, "steering itself stays on: {steer}");
    assert_eq!(steer["ipv6_to_ipv4"]["active"], false, "{steer}");
    assert!(
        steer["ipv6_to_ipv4"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("steer_connect6") && r.contains("bpf_skc_to_tcp_sock")),
        "the reason names the program and the verifier's verdict: {steer}"
    );
    assert_eq!(
        rg.count(
            "Steering cannot read a socket's IPV6_V6ONLY: IPv6 clients of IPv4 backends are served by the proxy."
        ),
        1,
        "one warning: {:#?}",
        rg.lines()
    );
    let to4 = binary::listener_addr(admin, "to4").await;
    for mode in ["identity", "identity6only"] {
        let (local, peer, seen) = identity(&cgroup, mode, to4).await;
        assert_eq!(peer, to4);
        assert_ne!(seen.port(), local.port(), "{mode}: proxied");
    }
    assert_eq!(steered_sum_of(admin, "to4").await, 0);

    let rw4 = binary::listener_addr(admin, "rw4").await;
    let (local, _, seen) = identity(&cgroup, "identity6", rw4).await;
    assert_eq!(
        seen.port(),
        local.port(),
        "a dual-stack client of an IPv4 listener is still steered"
    );
    assert_eq!(steered_sum_of(admin, "rw4").await, 1);

    // Round robin over A and B: each gets steered connects (bounded: 8 connects).
    let any4 = binary::listener_addr(admin, "any4").await;
    let mut reached = Vec::new();
    for _ in 0..8 {
        let (local, _, seen) = identity(&cgroup, "identity", any4).await;
        assert_eq!(seen.port(), local.port(), "steered to a candidate");
        let steer = steer_status_of(admin, "any4").await;
        reached = steer["connections_total"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(_, n)| n.as_u64() > Some(0))
                    .map(|(backend, _)| backend.clone())
                    .collect()
            })
            .unwrap_or_default();
        reached.sort();
        if reached.len() == 2 {
            break;
        }
    }
    assert_eq!(
        reached,
        ["a", "b"],
        "both candidates are steered to in turn"
    );
    rg.stop_cleanly().await;
}

/// Wildcard binds: a client in the cgroup connecting to any local address on the port of a
/// `0.0.0.0` listener (127.0.0.1, another loopback address, the host's own addresses, and the
/// mapped forms from an AF_INET6 socket) or of a `[::]` listener (`::1`, the host's IPv6
/// addresses) is steered, and `getpeername` shows the address it asked for. A client outside
/// the cgroup is proxied.
#[tokio::test(flavor = "multi_thread")]
async fn wildcard_binds_steer_every_local_address() {
    let Some(_met) = requirements(&[Engine::Redis]) else {
        return;
    };
    let _lab = lab::lock_read_only();
    let cgroup = Cgroup::create("wildcard");
    let cfg = config_listeners(
        &cluster_yaml(Engine::Redis),
        &[("any4", "0.0.0.0:0", "db"), ("any6", "[::]:0", "db")],
        &cgroup,
    );
    let rg = Rolegate::start(&cfg.path, Start::default()).await;
    let admin = rg.admin();
    binary::wait_ready(admin).await;
    if !built_with_steering(admin).await {
        return;
    }
    for name in ["any4", "any6"] {
        let steer = steer_status_of(admin, name).await;
        assert_eq!(steer["active"], true, "{name}: {steer}");
    }
    let p4 = binary::listener_addr(admin, "any4").await.port();
    let p6 = binary::listener_addr(admin, "any6").await.port();
    // The host's own addresses (traffic to them stays on the host, through `lo`).
    let own: Vec<std::net::IpAddr> = if_addrs::get_if_addrs()
        .expect("list the host's addresses")
        .iter()
        .map(|i| i.ip())
        .filter(|ip| !ip.is_loopback())
        // A link-local IPv6 address needs a scope id to connect to.
        .filter(|ip| !matches!(ip, std::net::IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80))
        .collect();
    let mut targets: Vec<(&str, SocketAddr)> = vec![
        ("identity", format!("127.0.0.1:{p4}").parse().unwrap()),
        ("identity", format!("127.0.0.2:{p4}").parse().unwrap()),
        ("identity6", format!("127.0.0.2:{p4}").parse().unwrap()),
        ("identity", format!("[::1]:{p6}").parse().unwrap()),
    ];
    for ip in &own {
        let port = if ip.is_ipv4() { p4 } else { p6 };
        targets.push(("identity", SocketAddr::new(*ip, port)));
    }
    for (mode, target) in &targets {
        let (local, peer, seen) = identity(&cgroup, mode, *target).await;
        let asked = match (*mode, target) {
            ("identity6", SocketAddr::V4(a)) => {
                SocketAddr::new(a.ip().to_ipv6_mapped().into(), a.port())
            }
            _ => *target,
        };
        assert_eq!(peer, asked, "getpeername shows {asked}");
        assert_eq!(
            seen.port(),
            local.port(),
            "{mode} to {target}: steered (Redis sees the client's port; local {local}, seen {seen})"
        );
    }
    let total = steered_sum_of(admin, "any4").await + steered_sum_of(admin, "any6").await;
    assert_eq!(total, targets.len() as u64, "every connect was steered");

    let outsider: SocketAddr = format!("127.0.0.2:{p4}").parse().unwrap();
    let (local, peer, seen) = tokio::task::spawn_blocking(move || redis_identity(outsider))
        .await
        .unwrap();
    assert_eq!(peer, outsider);
    assert_ne!(seen, local, "a client outside the cgroup is proxied");
    rg.stop_cleanly().await;
}

// === no primary until a real promotion ===

/// Takes the primary role from node A without giving it to anyone: Redis A follows B (both
/// replicas), MariaDB A turns read-only (B is a read-only replica already).
fn demote_a(engine: Engine) {
    match engine {
        Engine::Redis => {
            let b = engine.addr('B');
            let mut s = TcpStream::connect_timeout(&engine.addr('A'), Duration::from_secs(10))
                .expect("connect to redis A");
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let cmd = format!(
                "AUTH {}\r\nREPLICAOF {} {}\r\n",
                lab::monitor_password(),
                b.ip(),
                b.port()
            );
            s.write_all(cmd.as_bytes()).unwrap();
            let mut reply = Vec::new();
            let mut buf = [0u8; 256];
            while String::from_utf8_lossy(&reply).matches("\r\n").count() < 2 {
                let n = s.read(&mut buf).expect("read REPLICAOF's answer");
                assert!(
                    n > 0,
                    "redis A closed: {:?}",
                    String::from_utf8_lossy(&reply)
                );
                reply.extend_from_slice(&buf[..n]);
            }
            let text = String::from_utf8_lossy(&reply);
            assert_eq!(text.matches("+OK").count(), 2, "REPLICAOF on A: {text:?}");
        }
        Engine::Mysql => {
            let socket = format!("{}/run/mysql-A.sock", lab::dir());
            let out = std::process::Command::new("mariadb")
                .args(["--no-defaults", "--protocol=socket", "--user=root"])
                .arg(format!("--socket={socket}"))
                .args(["-e", "SET GLOBAL read_only = ON"])
                .output()
                .expect("run mariadb");
            assert!(
                out.status.success(),
                "read_only on mysql A: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Engine::Pg => panic!("pg is demoted by a switchover only"),
    }
}

/// No primary: the primary loses its role (nobody else has it), its steered session is
/// closed, a steered client's connect goes to the proxy's queue, and after a real promotion
/// of B it completes there; the next connect is steered to B.
async fn no_primary_until_promotion(engine: Engine) {
    let Some(_met) = requirements(&[engine]) else {
        return;
    };
    let _lock = lab::lock();
    let _reset = lab::ResetOnPanic(engine);
    let cgroup = Cgroup::create(&format!("promote-{}", engine.as_str()));
    let cfg = config(engine, &cgroup);
    let (rg, rw) = start(&cfg, Start::default()).await;
    let admin = rg.admin();
    if !built_with_steering(admin).await {
        return;
    }
    let (a, b) = (engine.addr('A').port(), engine.addr('B').port());
    let writer = Client::spawn(&cgroup.0, "writer", engine, rw);
    assert_eq!(
        writer.until("wrote=", Duration::from_secs(20)),
        format!("wrote={a}")
    );
    assert_eq!(steered_total(admin, "a").await, 1, "the writer was steered");

    tokio::task::spawn_blocking(move || demote_a(engine))
        .await
        .unwrap();
    let end = writer.until("closed=", Duration::from_secs(30));
    assert_ne!(
        end, "closed=never",
        "{engine:?}: the steered session outlived the demotion"
    );
    support::eventually(
        Duration::from_secs(20),
        "no primary routed",
        || async move {
            let m = http::get(admin, "/metrics").await.body;
            support::metric_value(&m, "rolegate_steer_sessions{backend=\"a\",listener=\"rw\"}")
                .is_none_or(|v| v == 0.0)
                && http::get(admin, "/readyz").await.status != 200
        },
    )
    .await;

    let queued = Client::spawn(&cgroup.0, "write", engine, rw);
    support::eventually(
        Duration::from_secs(20),
        "the connect queued by the proxy",
        || async move {
            let m = http::get(admin, "/metrics").await.body;
            support::metric_value(&m, "rolegate_queued_connections{listener=\"rw\"}")
                .is_some_and(|v| v >= 1.0)
        },
    )
    .await;
    lab::scenario("promote", engine).await;
    assert_eq!(
        queued.until("wrote=", Duration::from_secs(30)),
        format!("wrote={b}"),
        "{engine:?}: the queued connect completes on the promoted node"
    );
    assert_eq!(
        steered_total(admin, "b").await,
        0,
        "the queued client was proxied"
    );
    let lines = run_client(&cgroup, "write", engine, rw).await;
    assert_eq!(field(&lines, "wrote"), b.to_string(), "{lines:?}");
    assert_eq!(
        steered_total(admin, "b").await,
        1,
        "the next connect is steered to the new primary"
    );
    drop(queued);
    drop(writer);
    rg.stop_cleanly().await;
    lab::reset(engine).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_primary_until_promotion_redis() {
    no_primary_until_promotion(Engine::Redis).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_primary_until_promotion_mysql() {
    no_primary_until_promotion(Engine::Mysql).await;
}
