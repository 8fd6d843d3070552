//! Shared helpers of the integration tests: a proxy in-process on ephemeral ports ([`Proxy`]),
//! the real binary as a child ([`binary`]), configs ([`config`], [`files`]), fake backends
//! ([`fake`]), real clients of the lab's servers ([`db`], [`lab`]), the failover tests'
//! new-connection write loop ([`writer`]), a private etcd cluster ([`etcd`]), captured logs
//! ([`logs`]), network namespaces and relays for fault injection ([`netns`], [`relay`]), HTTP
//! ([`http`]), scripts ([`script`]), what a test needs to run at all ([`require`]), and
//! condition waits with deadlines (never sleeps).
#![allow(dead_code)]

/// One test per lab engine of `scenario(engine)`, each skipped (or, in the full run, failed) by
/// `require::lab` when that engine's servers are not up: `per_engine!(switchover)` makes
/// `switchover::pg`, `switchover::mysql` and `switchover::redis`.
macro_rules! per_engine {
    ($scenario:ident) => {
        mod $scenario {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pg() {
                if $crate::support::require::lab(&[$crate::support::lab::Engine::Pg]).is_some() {
                    super::$scenario($crate::support::lab::Engine::Pg).await
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mysql() {
                if $crate::support::require::lab(&[$crate::support::lab::Engine::Mysql]).is_some() {
                    super::$scenario($crate::support::lab::Engine::Mysql).await
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                if $crate::support::require::lab(&[$crate::support::lab::Engine::Redis]).is_some() {
                    super::$scenario($crate::support::lab::Engine::Redis).await
                }
            }
        }
    };
}

pub mod binary;
pub mod config;
pub mod db;
pub mod etcd;
pub mod fake;
pub mod files;
pub mod http;
pub mod lab;
pub mod logs;
pub mod netns;
pub mod relay;
pub mod require;
pub mod script;
pub mod writer;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rolegate::app::App;
use rolegate::config::Config;
use rolegate::metrics::Metrics;

/// The backend names of `listener`'s route in the current table, in the order they are tried.
pub fn route_names(
    router: &rolegate::routing::Router,
    listener: &rolegate::config::ListenerName,
) -> Vec<String> {
    router
        .load()
        .route(listener)
        .map(|r| {
            r.candidates
                .iter()
                .map(|c| c.backend.key.backend.to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// A running proxy and what tests need to reach it.
pub struct Proxy {
    pub app: Arc<App>,
}

impl Proxy {
    /// Records the wall-clock times (`lab::wall`) at which `listener`'s route was seen held
    /// (`Unavailable::Held`), from the router's own change notifications, until aborted.
    pub fn watch_held(
        &self,
        listener: &str,
    ) -> (
        tokio::task::JoinHandle<()>,
        std::sync::Arc<std::sync::Mutex<Vec<f64>>>,
    ) {
        let router = self.app.router().clone();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = log.clone();
        let name = rolegate::config::ListenerName::from(listener);
        let handle = tokio::spawn(async move {
            let mut changes = router.subscribe();
            loop {
                let held = router
                    .load()
                    .route(&name)
                    .is_some_and(|r| r.unavailable == Some(rolegate::routing::Unavailable::Held));
                if held {
                    out.lock().unwrap().push(lab::wall());
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        });
        (handle, log)
    }

    /// Starts a proxy from YAML text (binds should use port 0).
    pub async fn start(yaml: &str) -> Proxy {
        let config = Config::from_yaml_str_with_env(yaml, None, &|k| std::env::var(k).ok())
            .unwrap_or_else(|e| panic!("test config is invalid:\n{e}"));
        let app = App::start(config, Metrics::new())
            .await
            .unwrap_or_else(|e| panic!("proxy failed to start: {e}"));
        Proxy { app }
    }

    /// Starts a proxy from a config file, so that `App::reload_from_source`, `POST /reload`
    /// and SIGHUP re-read that file.
    pub async fn start_file(path: &std::path::Path) -> Proxy {
        let config = Config::load(path)
            .unwrap_or_else(|e| panic!("test config {} is invalid:\n{e}", path.display()));
        let app = App::start(config, Metrics::new())
            .await
            .unwrap_or_else(|e| panic!("proxy failed to start: {e}"));
        Proxy { app }
    }

    pub async fn addr(&self, listener: &str) -> std::net::SocketAddr {
        self.app
            .listener_addr(listener)
            .await
            .unwrap_or_else(|| panic!("no listener {listener}"))
    }

    /// Waits until `listener` has at least `n` candidates.
    pub async fn wait_candidates(&self, listener: &str, n: usize) {
        let router = self.app.router().clone();
        let name = rolegate::config::ListenerName::from(listener);
        let mut changes = router.subscribe();
        eventually(Duration::from_secs(20), "listener candidates", || {
            let table = router.load();
            let ok = table.route(&name).is_some_and(|r| r.candidates.len() >= n);
            async move { ok }
        })
        .await;
        let _ = changes.borrow_and_update();
    }

    /// Waits until the route of `listener` satisfies `pred` on its candidate names.
    pub async fn wait_route(&self, listener: &str, what: &str, pred: impl Fn(&[String]) -> bool) {
        let router = self.app.router().clone();
        let name = rolegate::config::ListenerName::from(listener);
        let mut changes = router.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let names = route_names(&router, &name);
            if pred(&names) {
                return;
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                panic!("timed out waiting for route of {listener}: {what}; last: {names:?}");
            }
        }
    }

    /// The supervisor's current view of one backend, if the cluster and backend exist.
    pub fn try_backend_status(
        &self,
        cluster: &str,
        backend: &str,
    ) -> Option<rolegate::control_plane::supervisor::BackendStatus> {
        let s = self.app.supervisor().status.load_full();
        s.clusters
            .iter()
            .find(|c| c.name == cluster)
            .and_then(|c| c.backends.iter().find(|b| b.name == backend))
            .cloned()
    }

    /// The supervisor's current view of one backend; panics naming it when it does not exist.
    pub fn backend_status(
        &self,
        cluster: &str,
        backend: &str,
    ) -> rolegate::control_plane::supervisor::BackendStatus {
        self.try_backend_status(cluster, backend)
            .unwrap_or_else(|| panic!("no backend {cluster}/{backend} in the status"))
    }

    /// The admin server's bound address (the config must enable it, e.g. `127.0.0.1:0`).
    pub fn admin(&self) -> std::net::SocketAddr {
        self.app
            .admin_addr()
            .expect("the test config enables the admin server")
    }

    pub fn metrics(&self) -> String {
        self.app.metrics().encode()
    }

    pub async fn stop(&self) {
        self.app.shutdown(Duration::from_secs(5)).await;
    }
}

/// Polls `cond` until true, with a deadline. For conditions that have no event to await
/// (e.g. a counter in another process), polled every 10 ms.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("condition not met within {limit:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// [`eventually`] for a condition that can say what it saw: `Err(detail)` until it holds, and
/// the panic names the last detail. Polled every 100 ms (it usually asks other processes).
pub async fn eventually_detail<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let last = match cond().await {
            Ok(()) => return,
            Err(detail) => detail,
        };
        if tokio::time::Instant::now() >= deadline {
            panic!("condition not met within {limit:?}: {what}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Number of open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Value of a metric line (`name{labels} value`) in a scrape, matched by prefix.
pub fn metric_value(scrape: &str, prefix: &str) -> Option<f64> {
    scrape
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Raises this process's soft `RLIMIT_NOFILE` to at least `want` (bounded by the hard limit),
/// for tests that hold thousands of sockets; fails the test if that is impossible. Only ever
/// raises, so tests sharing the process never lose descriptors they planned for.
pub fn raise_fd_limit(want: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    let ok = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0
            && (limit.rlim_cur >= want || {
                limit.rlim_cur = want.min(limit.rlim_max);
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0
            })
    };
    assert!(
        ok && limit.rlim_cur >= want,
        "this test needs {want} file descriptors; the hard limit is {} (raise it, e.g. ulimit -Hn {want}, or run as root)",
        limit.rlim_max
    );
}

/// Runs the `#[ignore]`d test `name` (its full path, e.g. `data_plane::x_alone`) alone in a
/// child process of this test binary and fails with its output unless it passes. For tests
/// that measure process-wide state — this process's descriptors, a global log subscriber —
/// which the tests running beside them in this process would disturb.
pub fn isolated(name: &str) {
    let exe = std::env::current_exe().expect("test binary path");
    let output = std::process::Command::new(exe)
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the isolated test");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(
        output.status.success(),
        "isolated test {name} failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("1 passed"),
        "isolated test {name} did not run (wrong name?):\n{stdout}"
    );
}
