//! The real `rolegate` binary as a child process: started from a config file with JSON logs,
//! every line of stdout and stderr kept, the admin address read from its start line, signals,
//! exit status, and its fd count and RSS from `/proc`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// Options of one start.
#[derive(Default)]
pub struct Start<'a> {
    /// Soft and hard `RLIMIT_NOFILE` of the child (set between fork and exec).
    pub nofile: Option<u64>,
    /// Extra environment variables.
    pub env: Vec<(&'a str, String)>,
    /// `RUST_LOG` (default: none, so the config's `log.level` applies).
    pub rust_log: Option<&'a str>,
    /// A command that execs the binary (e.g. `setpriv … --`), empty to run it directly.
    pub wrapper: Vec<&'a str>,
}

impl Start<'_> {
    /// Only a descriptor limit.
    pub fn nofile(n: u64) -> Self {
        Start {
            nofile: Some(n),
            ..Start::default()
        }
    }
}

pub struct Rolegate {
    pub child: Child,
    pub pid: u32,
    pub admin: Option<SocketAddr>,
    /// Every line the process wrote, stdout and stderr interleaved as read.
    pub log: Arc<Mutex<Vec<String>>>,
    /// The readers filling `log`; they end at EOF, after the process exits.
    readers: Vec<tokio::task::JoinHandle<()>>,
}

fn keep_lines<R: AsyncRead + Unpin + Send + 'static>(
    stream: R,
    log: Arc<Mutex<Vec<String>>>,
    started: Option<tokio::sync::oneshot::Sender<Option<SocketAddr>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut started = started;
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(addr) = started_line(&line) {
                if let Some(tx) = started.take() {
                    let _ = tx.send(addr);
                }
            }
            log.lock().unwrap().push(line);
        }
    })
}

/// `Some(admin)` for the `rolegate started.` line, JSON (`"admin": "Some(127.0.0.1:PORT)"`)
/// or text (`admin=Some(127.0.0.1:PORT)`).
pub fn started_line(line: &str) -> Option<Option<SocketAddr>> {
    if !line.contains("rolegate started.") {
        return None;
    }
    let field = match serde_json::from_str::<serde_json::Value>(line) {
        Ok(v) => v["admin"].as_str()?.to_string(),
        Err(_) => line
            .split("admin=")
            .nth(1)?
            .split_whitespace()
            .next()?
            .to_string(),
    };
    let inner = field.trim_start_matches("Some(").trim_end_matches(')');
    Some(inner.parse().ok())
}

impl Rolegate {
    /// Starts `rolegate --config PATH` and waits (20 s at most) for its start line. The
    /// helpers that read log fields (`count`, `json_lines`) need `log: { format: json }`.
    pub async fn start(config: &Path, opts: Start<'_>) -> Rolegate {
        let (mut rolegate, started) = Rolegate::spawn(config, opts);
        rolegate.admin = match tokio::time::timeout(Duration::from_secs(20), started).await {
            Ok(Ok(addr)) => addr,
            _ => panic!(
                "rolegate did not log its start within 20 s: {:#?}",
                rolegate.lines()
            ),
        };
        rolegate
    }

    /// Starts `rolegate --config PATH` without waiting for anything (for a start that is meant
    /// to fail: `wait` for the exit, then read `lines`).
    pub fn launch(config: &Path, opts: Start<'_>) -> Rolegate {
        Rolegate::spawn(config, opts).0
    }

    /// The child, and a channel that gets the admin address from its start line.
    fn spawn(
        config: &Path,
        opts: Start<'_>,
    ) -> (Rolegate, tokio::sync::oneshot::Receiver<Option<SocketAddr>>) {
        let binary = env!("CARGO_BIN_EXE_rolegate");
        let mut cmd = match opts.wrapper.split_first() {
            None => Command::new(binary),
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(binary);
                cmd
            }
        };
        cmd.arg("--config")
            .arg(config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(filter) = opts.rust_log {
            cmd.env("RUST_LOG", filter);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        if let Some(n) = opts.nofile {
            // SAFETY: the closure runs between fork and exec and only calls setrlimit(2),
            // which is async-signal-safe, on a struct on its own stack.
            unsafe {
                cmd.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("start the rolegate binary");
        let pid = child.id().expect("running child");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let readers = vec![
            keep_lines(child.stdout.take().expect("stdout"), log.clone(), Some(tx)),
            keep_lines(child.stderr.take().expect("stderr"), log.clone(), None),
        ];
        let rolegate = Rolegate {
            child,
            pid,
            admin: None,
            log,
            readers,
        };
        (rolegate, rx)
    }

    pub fn admin(&self) -> SocketAddr {
        self.admin.expect("the config enables the admin server")
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child, which has not been reaped (we hold `child` and
        // have not awaited its exit).
        let rc = unsafe { libc::kill(self.pid as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.pid);
    }

    /// Waits for the exit, at most `limit`, and then for every line written before it to be
    /// in `log` (the readers reach EOF), so counts taken after an exit are complete.
    pub async fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)?;
        for reader in self.readers.drain(..) {
            // EOF follows the exit unless a grandchild inherited the pipe: bounded.
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
        Some(status)
    }

    pub fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Parsed JSON log lines (other lines, e.g. a panic message, are skipped).
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.lines()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Number of lines whose JSON `message` is `message`.
    pub fn count(&self, message: &str) -> usize {
        self.json_lines()
            .iter()
            .filter(|v| v["message"] == message)
            .count()
    }

    /// Lowers the running process's `RLIMIT_NOFILE` (soft and hard) to `n`, as `prlimit -n`
    /// would: what it had planned for no longer fits, so `accept` meets `EMFILE`.
    pub fn limit_fds(&self, n: u64) {
        let limit = libc::rlimit {
            rlim_cur: n,
            rlim_max: n,
        };
        // SAFETY: prlimit(2) on our own, not yet reaped child, with a valid new limit and no
        // old-limit out pointer.
        let rc = unsafe {
            libc::prlimit(
                self.pid as libc::pid_t,
                libc::RLIMIT_NOFILE,
                &limit,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(
            rc,
            0,
            "prlimit({}, NOFILE, {n}): {}",
            self.pid,
            std::io::Error::last_os_error()
        );
    }

    /// Waits (10 s at most) until the open descriptors are back to `baseline` (+2 for what a
    /// scrape may hold): nothing leaked.
    pub async fn settles_to_fds(&self, baseline: usize) {
        crate::support::eventually(Duration::from_secs(10), "fds back to baseline", || {
            let n = self.open_fds();
            async move { n <= baseline + 2 }
        })
        .await;
    }

    /// SIGTERM, then asserts an exit with status 0 within 20 s (the log on failure).
    pub async fn stop_cleanly(mut self) {
        self.signal(libc::SIGTERM);
        let status = self
            .wait(Duration::from_secs(20))
            .await
            .expect("exits after SIGTERM");
        assert_eq!(status.code(), Some(0), "{:#?}", self.lines());
    }

    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Resident set size in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }
}

/// Every listener of `/status` in order: its name and bound address (`None` while unbound).
pub async fn listeners(admin: SocketAddr) -> Vec<(String, Option<SocketAddr>)> {
    let status = crate::support::http::get(admin, "/status").await.json();
    status["listeners"]
        .as_array()
        .expect("listeners in /status")
        .iter()
        .map(|l| {
            let name = l["name"].as_str().unwrap_or_default().to_string();
            let addr = l["local_addr"].as_str().and_then(|a| a.parse().ok());
            (name, addr)
        })
        .collect()
}

/// The bound address of listener `name`, from `/status`.
pub async fn listener_addr(admin: SocketAddr, name: &str) -> SocketAddr {
    let status = crate::support::http::get(admin, "/status").await.json();
    status["listeners"]
        .as_array()
        .expect("listeners in /status")
        .iter()
        .find(|l| l["name"] == name)
        .and_then(|l| l["local_addr"].as_str())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no bound listener {name} in /status: {status}"))
}

/// Waits until `/readyz` answers 200.
pub async fn wait_ready(admin: SocketAddr) {
    crate::support::eventually(Duration::from_secs(20), "rolegate ready", || async move {
        crate::support::http::get(admin, "/readyz").await.status == 200
    })
    .await;
}
