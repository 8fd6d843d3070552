//! The real-server lab (`loadtest/lab.sh`) from Rust tests: endpoints, a lock that serialises
//! every test touching the lab, and scenario commands.
//!
//! Tests never start the lab themselves: CI does (`loadtest/test.sh`). A test asks
//! `require::lab` first, which skips it (or, in the full run, fails it) when the lab is down.

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

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

    fn port_var(self, node: char) -> (&'static str, u16) {
        match (self, node) {
            (Engine::Pg, 'A') => ("LAB_PG_A_PORT", 15432),
            (Engine::Pg, _) => ("LAB_PG_B_PORT", 15433),
            (Engine::Mysql, 'A') => ("LAB_MY_A_PORT", 13306),
            (Engine::Mysql, _) => ("LAB_MY_B_PORT", 13307),
            (Engine::Redis, 'A') => ("LAB_REDIS_A_PORT", 16379),
            (Engine::Redis, _) => ("LAB_REDIS_B_PORT", 16380),
        }
    }

    /// Address of node `A` or `B`.
    pub fn addr(self, node: char) -> SocketAddr {
        let (var, default) = self.port_var(node);
        let port = std::env::var(var)
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(default);
        SocketAddr::from(([127, 0, 0, 1], port))
    }
}

pub fn monitor_password() -> String {
    std::env::var("LAB_MONITOR_PASSWORD").unwrap_or_else(|_| "monitor-secret".into())
}

pub fn app_password() -> String {
    std::env::var("LAB_APP_PASSWORD").unwrap_or_else(|_| "app-secret".into())
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
    std::env::var("LAB_DIR").unwrap_or_else(|_| "/tmp/rolegate-lab".into())
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
/// threads, returning the parsed `key=value` timestamps of its output line.
pub async fn scenario(cmd: &str, engine: Engine) -> Timestamps {
    let (c, e) = (cmd.to_string(), engine.as_str().to_string());
    let out = tokio::task::spawn_blocking(move || run(&[&c, &e]))
        .await
        .expect("scenario task");
    Timestamps::parse(&out)
}

/// `key=seconds.micros` pairs of a `lab.sh switchover|kill` line (wall clock).
#[derive(Debug, Default, Clone)]
pub struct Timestamps(pub Vec<(String, f64)>);

impl Timestamps {
    fn parse(out: &str) -> Self {
        let mut v = Vec::new();
        for word in out.split_whitespace() {
            if let Some((k, val)) = word.split_once('=') {
                if let Ok(t) = val.parse::<f64>() {
                    v.push((k.to_string(), t));
                }
            }
        }
        Timestamps(v)
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, t)| *t)
    }
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
