//! The real-server lab (`loadtest/lab.sh`, i.e. `loadtest/lab.py`) from Rust tests: endpoints
//! (from `lab.sh env --json`), a lock that serialises every test touching the lab, and scenario
//! commands (their `--json` output).
//!
//! Tests never start the lab themselves: CI does (`loadtest/test.sh`). A test asks
//! `require::lab` first, which skips it (or, in the full run, fails it) when the lab is down.

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use serde::Deserialize;

pub const START_HINT: &str = "the lab is not running; start it with: bash loadtest/lab.sh up";

/// Engines of the lab, named as `lab.sh` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Pg,
    Mysql,
    Redis,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Pg => "pg",
            Engine::Mysql => "mysql",
            Engine::Redis => "redis",
        }
    }

    fn node(self, node: char) -> &'static Node {
        let env = env();
        let nodes = &env
            .engines
            .get(self.as_str())
            .unwrap_or_else(|| panic!("`lab.sh env --json` has no engine {}", self.as_str()))
            .nodes;
        nodes.get(&node.to_string()).unwrap_or_else(|| {
            panic!(
                "`lab.sh env --json` has no node {node} of {}",
                self.as_str()
            )
        })
    }

    /// Address of node `A` or `B`.
    pub fn addr(self, node: char) -> SocketAddr {
        self.node(node).address
    }

    /// Where node `A` or `B` speaks TLS: Redis on its own TLS port, the others on their port.
    pub fn tls_addr(self, node: char) -> SocketAddr {
        let n = self.node(node);
        match n.tls_port {
            Some(port) => SocketAddr::new(n.address.ip(), port),
            None => n.address,
        }
    }
}

/// The lab's settings as `lab.sh env --json` prints them (loadtest/topology.json's defaults,
/// the `LAB_*` overrides of this environment and the values `$LAB_DIR/lab.env` recorded): the one
/// source of ports, users and passwords, so no test keeps its own copy of the defaults.
#[derive(Debug, Deserialize)]
pub struct LabEnv {
    pub lab_dir: String,
    pub tls_ca: String,
    pub users: std::collections::BTreeMap<String, String>,
    pub passwords: std::collections::BTreeMap<String, String>,
    pub engines: std::collections::BTreeMap<String, EngineEnv>,
}

/// One engine of `env --json`: its nodes, plus engine settings such as Sentinel's
/// `master_name` or Patroni's `scope` and `namespace` (kept as JSON).
#[derive(Debug, Deserialize)]
pub struct EngineEnv {
    pub nodes: std::collections::BTreeMap<String, Node>,
    #[serde(flatten)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

/// A node: `address` plus its extra ports (`tls_port` of redis, `rest_port` of patroni,
/// `peer_port` of etcd).
#[derive(Debug, Deserialize)]
pub struct Node {
    pub address: SocketAddr,
    #[serde(default)]
    pub tls_port: Option<u16>,
    #[serde(default)]
    pub rest_port: Option<u16>,
    #[serde(default)]
    pub peer_port: Option<u16>,
}

/// A node of any engine, the optional ones included (`"etcd", "e1"`, `"patroni", "A"`,
/// `"sentinel", "S1"`), for the fleet and authority tests.
pub fn node(engine: &str, node: &str) -> &'static Node {
    env()
        .engines
        .get(engine)
        .and_then(|e| e.nodes.get(node))
        .unwrap_or_else(|| panic!("the lab's topology has no {engine} node {node}"))
}

/// Every node address of an engine, in node order (e.g. the three etcd client endpoints).
pub fn addresses(engine: &str) -> Vec<SocketAddr> {
    env()
        .engines
        .get(engine)
        .map(|e| e.nodes.values().map(|n| n.address).collect())
        .unwrap_or_else(|| panic!("the lab's topology has no engine {engine}"))
}

/// `lab.sh env --json`, read once per test binary (it needs neither root nor a running lab).
pub fn env() -> &'static LabEnv {
    static ENV: OnceLock<LabEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let out = run(&["env", "--json"]);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("`lab.sh env --json` printed something else ({e}):\n{out}"))
    })
}

/// The password of a lab user: "monitor", "app", "md5", "native", "ed25519", "repl".
pub fn password(who: &str) -> String {
    env()
        .passwords
        .get(who)
        .unwrap_or_else(|| panic!("the lab has no user {who}"))
        .clone()
}

pub fn monitor_password() -> String {
    password("monitor")
}

pub fn app_password() -> String {
    password("app")
}

/// The lab's CA certificate (`LAB_TLS_CA`).
pub fn tls_ca() -> String {
    env().tls_ca.clone()
}

/// Held for the duration of a test that uses the lab; serialises such tests across threads
/// and test binaries (flock on a file of its own: `lab.sh` locks a different one).
pub struct LabLock(#[allow(dead_code)] File);

pub fn lock() -> LabLock {
    let path = std::env::temp_dir().join("rolegate-lab-tests.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.lock()
        .unwrap_or_else(|e| panic!("lock {}: {e}", path.display()));
    LabLock(file)
}

/// The lab's state directory (`$LAB_DIR`, as `lab.sh` resolves it).
pub fn dir() -> String {
    env().lab_dir.clone()
}

/// For tests that only read the lab: the lab test lock, then `lab.sh`'s own lock
/// (`$LAB_DIR.lock`), so no `lab.sh up/reset/switchover` runs underneath. Always in that order,
/// so there is no deadlock with a test that holds the first and runs `lab.sh`.
pub struct ReadLock {
    _tests: LabLock,
    _lab: File,
}

pub fn lock_read_only() -> ReadLock {
    let tests = lock();
    let path = format!("{}.lock", dir().trim_end_matches('/'));
    let file = File::options()
        .create(true)
        .truncate(false)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {path}: {e}"));
    file.lock().unwrap_or_else(|e| panic!("lock {path}: {e}"));
    ReadLock {
        _tests: tests,
        _lab: file,
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("loadtest/lab.sh")
}

/// Runs `lab.sh ARGS`, returning stdout; panics with its stderr on failure.
pub fn run(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run lab.sh {args:?}: {e}"));
    if !out.status.success() {
        panic!(
            "lab.sh {args:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Puts `engine` back to A primary, B replica (any state) — async wrapper for tests.
pub async fn reset(engine: Engine) {
    let e = engine.as_str().to_string();
    tokio::task::spawn_blocking(move || run(&["reset", &e]))
        .await
        .expect("reset task");
}

/// Runs a scenario command (`switchover`, `kill`, `hang`, `resume`, `promote`) off the runtime
/// threads, returning the timestamps of its `--json` output.
pub async fn scenario(cmd: &str, engine: Engine) -> Timestamps {
    let (c, e) = (cmd.to_string(), engine.as_str().to_string());
    let out = tokio::task::spawn_blocking(move || run(&[&c, &e, "--json"]))
        .await
        .expect("scenario task");
    Timestamps::parse(&out)
}

/// The wall-clock (seconds) fields of a scenario's JSON object: `start`, `demoted`, `promoted`,
/// `done` of `switchover`/`kill`; `at` of `hang`/`promote`/`stop`/`start`.
#[derive(Debug, Default, Clone)]
pub struct Timestamps(pub Vec<(String, f64)>);

impl Timestamps {
    fn parse(out: &str) -> Self {
        let v: serde_json::Value = serde_json::from_str(out)
            .unwrap_or_else(|e| panic!("lab.sh printed no JSON object ({e}):\n{out}"));
        let fields = v
            .as_object()
            .map(|o| {
                o.iter()
                    .filter(|(k, _)| k.as_str() != "pid")
                    .filter_map(|(k, t)| t.as_f64().map(|t| (k.clone(), t)))
                    .collect()
            })
            .unwrap_or_default();
        Timestamps(fields)
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, t)| *t)
    }
}

/// `lab.sh status --json`: engine → node → {address, state, up, role, pid, ...}.
pub fn status() -> serde_json::Value {
    let out = run(&["status", "--json"]);
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("`lab.sh status --json` printed something else ({e}):\n{out}"))
}

/// Wall-clock seconds now, comparable with lab timestamps.
pub fn wall() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Puts the lab back when a scenario test fails half-way, so one failure does not leave a
/// topology (say, two primaries) that makes every later test fail too.
pub struct ResetOnPanic(pub Engine);

impl Drop for ResetOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = Command::new("bash")
                .arg(script())
                .args(["reset", self.0.as_str()])
                .output();
        }
    }
}
