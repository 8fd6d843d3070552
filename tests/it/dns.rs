//! Backends named by DNS: resolved on every check, and the route follows a changed answer.
//!
//! The moving-answer test runs the real binary in a private mount namespace (`unshare -m`)
//! whose `/etc/hosts` is a file the test rewrites, so the name really changes its address for
//! the resolver rolegate uses, without touching the host's configuration.

use crate::support;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::config::{Check, Cluster, ConfigBuilder, Listener};
use support::{fake, Proxy};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Connects through the proxy and returns the greeting of the backend reached.
fn landed_on(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut buf = [0u8; 2];
    s.read_exact(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..1]).into_owned())
}

fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_dns_name_moves_the_route() {
    // Root, for the private mount namespace.
    let Some(_root) = support::require::root() else {
        return;
    };
    // Two servers on the same port of two loopback addresses, told apart by their greeting.
    let a = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let port = a.local_addr().unwrap().port();
    let b = tokio::net::TcpListener::bind(("127.0.0.3", port))
        .await
        .unwrap();
    let _a = fake::named("a").spawn_on(a);
    let _b = fake::named("b").spawn_on(b);

    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n127.0.0.2 db.rolegate.test\n").unwrap();
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = dir.path().join("rolegate.yaml");
    std::fs::write(
        &config,
        ConfigBuilder::new()
            .admin(json!({ "enabled": false }))
            .cluster(
                Cluster::tcp("app")
                    .check(Check::timing("100ms", "100ms", 1, 1))
                    .backend("db", format!("db.rolegate.test:{port}")),
            )
            .listener(
                Listener::new("rw", "app")
                    .bind(listen)
                    .set("queue_timeout", "0s"),
            )
            .yaml(),
    )
    .unwrap();
    let script = format!(
        "mount --bind {} /etc/hosts && exec {} --config {}",
        hosts.display(),
        env!("CARGO_BIN_EXE_rolegate"),
        config.display()
    );
    let child = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("unshare (util-linux) runs rolegate in a private mount namespace");
    let _child = Killed(child);

    tokio::task::spawn_blocking(move || {
        wait_for(Duration::from_secs(20), "route to a", || {
            landed_on(listen).as_deref() == Some("a")
        });
        // Rewrite in place (same inode, so the bind mount sees it): the name now points at b.
        std::fs::write(&hosts, "127.0.0.1 localhost\n127.0.0.3 db.rolegate.test\n").unwrap();
        wait_for(Duration::from_secs(20), "route follows DNS to b", || {
            landed_on(listen).as_deref() == Some("b")
        });
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn an_unresolvable_name_is_a_check_failure_not_a_startup_error() {
    let good = fake::named("g").spawn().await;
    let yaml = ConfigBuilder::new()
        .cluster(
            Cluster::tcp("app")
                .check(Check::timing("100ms", "100ms", 1, 1))
                .backend("ghost", "no-such-host.invalid:5432")
                .backend("good", good.addr),
        )
        .listener(Listener::new("rw", "app").role("any"))
        .yaml();
    let proxy = Proxy::start(&yaml).await;
    proxy.wait_route("rw", "good only", |n| n == ["good"]).await;
    support::eventually(
        Duration::from_secs(10),
        "ghost down with reason resolve",
        || {
            let s = proxy.app.supervisor().status.load_full();
            let ghost = s.clusters[0]
                .backends
                .iter()
                .find(|b| b.name == "ghost")
                .cloned();
            async move {
                ghost.is_some_and(|g| g.health == "down" && g.last_error_reason == Some("resolve"))
            }
        },
    )
    .await;
    proxy.stop().await;
}
