//! The real binary end to end: SIGHUP reloads the config file (a good one applies, a broken
//! one is refused and counted), and SIGTERM stops it with exit status 0. Everything is
//! observed through the admin API, the way an operator would.

use crate::support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::files::ConfigFile;
use support::http::get;
use support::{eventually, fake, metric_value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

fn config(backend: SocketAddr, listeners: &[&str]) -> String {
    let mut y = format!(
        "admin: {{ listen: 127.0.0.1:0 }}
log: {{ format: json }}
clusters:
  - name: app
    protocol: tcp
    check: {{ interval: 200ms, timeout: 200ms, rise: 1, fall: 2 }}
    backends: [{{ name: a, address: \"{backend}\" }}]
listeners:
"
    );
    for l in listeners {
        y += &format!("  - {{ name: {l}, bind: \"127.0.0.1:0\", cluster: app, role: any }}\n");
    }
    y
}

fn signal(child: &Child, sig: libc::c_int) {
    let pid = child.id().expect("the child is running") as libc::pid_t;
    // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our own child, which has
    // not been reaped (we still hold it and have not awaited its exit).
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// Starts the binary and returns it with its admin address, read from its
/// `rolegate started.` log line. The rest of its output is kept for failure messages.
async fn start(path: &std::path::Path) -> (Child, SocketAddr, Arc<Mutex<Vec<String>>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rolegate"))
        .arg("--config")
        .arg(path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start the rolegate binary");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let log = Arc::new(Mutex::new(Vec::new()));
    let admin = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.expect("read the log") {
            log.lock().unwrap().push(line.clone());
            if let Some(addr) = admin_addr(&line) {
                return addr;
            }
        }
        panic!(
            "rolegate exited before it started: {:?}",
            log.lock().unwrap()
        );
    })
    .await
    .expect("rolegate logs its start within 20s");
    let keep = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            keep.lock().unwrap().push(line);
        }
    });
    (child, admin, log)
}

/// The admin address of a JSON `rolegate started.` line (`"admin": "Some(127.0.0.1:PORT)"`).
fn admin_addr(line: &str) -> Option<SocketAddr> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v["message"] != "rolegate started." {
        return None;
    }
    let field = v["admin"].as_str()?;
    let inner = field.trim_start_matches("Some(").trim_end_matches(')');
    inner.parse().ok()
}

async fn listener_addrs(admin: SocketAddr) -> Vec<(String, Option<SocketAddr>)> {
    let status = get(admin, "/status").await.json();
    status["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .map(|l| {
            let name = l["name"].as_str().unwrap_or_default().to_string();
            let addr = l["local_addr"].as_str().and_then(|a| a.parse().ok());
            (name, addr)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reloads_on_sighup_and_exits_0_on_sigterm() {
    let backend = fake::echo().spawn().await;
    let file = ConfigFile::new(&config(backend.addr, &["one"]));
    let (mut child, admin, log) = start(&file.path).await;
    eventually(Duration::from_secs(10), "ready", || async move {
        get(admin, "/readyz").await.status == 200
    })
    .await;
    let before = listener_addrs(admin).await;
    assert_eq!(before.len(), 1, "{before:?}");

    file.write(&config(backend.addr, &["one", "two"]));
    signal(&child, libc::SIGHUP);
    eventually(
        Duration::from_secs(10),
        "listener two after SIGHUP",
        || async move {
            listener_addrs(admin).await.len() == 2 && get(admin, "/readyz").await.status == 200
        },
    )
    .await;
    let after = listener_addrs(admin).await;
    assert_eq!(after[0], before[0], "listener one kept its socket");
    let two = after[1].1.expect("two is bound");
    let mut s = TcpStream::connect(two)
        .await
        .expect("connect to the new listener");
    s.write_all(b"hello").await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = String::new();
    s.read_to_string(&mut back).await.unwrap();
    assert_eq!(back, "hello");

    file.write("clusters: [\n");
    signal(&child, libc::SIGHUP);
    eventually(
        Duration::from_secs(10),
        "the broken reload is counted",
        || async move {
            let m = get(admin, "/metrics").await.body;
            metric_value(&m, "rolegate_config_reloads_total{result=\"error\"}") == Some(1.0)
        },
    )
    .await;
    assert_eq!(
        listener_addrs(admin).await,
        after,
        "a broken file changes nothing"
    );
    let m = get(admin, "/metrics").await.body;
    assert_eq!(
        metric_value(&m, "rolegate_config_reloads_total{result=\"success\"}"),
        Some(1.0)
    );
    let logged = log.lock().unwrap().join("\n");
    assert!(
        logged.contains("config.yaml:2:1:"),
        "the error names file:line:column:\n{logged}"
    );

    signal(&child, libc::SIGTERM);
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("rolegate stops within 20s of SIGTERM")
        .expect("wait");
    assert_eq!(
        status.code(),
        Some(0),
        "{status}; log:\n{}",
        log.lock().unwrap().join("\n")
    );
    assert!(
        TcpStream::connect(two).await.is_err(),
        "listeners are closed after exit"
    );
}
