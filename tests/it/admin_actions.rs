//! Operator actions and readiness over the admin API: drain, disable and enable a backend
//! while sessions run on it; `/readyz` following a tcp cluster's only backend.

use crate::support;

use std::net::SocketAddr;
use std::time::Duration;

use support::config::{Check, Cluster, ConfigBuilder, Listener};
use support::http::{get, post};
use support::{eventually, fake, Proxy};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

fn two_backends(a: SocketAddr, b: SocketAddr) -> String {
    ConfigBuilder::new()
        .cluster(
            Cluster::tcp("app")
                .check(Check::fast())
                .backend("a", a)
                .backend("b", b),
        )
        .listener(
            Listener::new("rw", "app")
                .role("any")
                .set("queue_timeout", "0s"),
        )
        .yaml()
}

/// Connects and returns the stream with the name the backend greeted with.
async fn open(addr: SocketAddr) -> (BufReader<TcpStream>, String) {
    let mut stream = BufReader::new(TcpStream::connect(addr).await.expect("connect"));
    let mut name = String::new();
    stream.read_line(&mut name).await.expect("greeting");
    (stream, name.trim().to_string())
}

async fn echoes(stream: &mut BufReader<TcpStream>, payload: &[u8]) -> bool {
    if stream.get_mut().write_all(payload).await.is_err() {
        return false;
    }
    let mut back = vec![0u8; payload.len()];
    stream.read_exact(&mut back).await.is_ok() && back == payload
}

fn admin_state(proxy: &Proxy, backend: &str) -> String {
    let s = proxy.app.supervisor().status.load_full();
    s.clusters[0]
        .backends
        .iter()
        .find(|b| b.name == backend)
        .map(|b| b.admin.to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_keeps_sessions_disable_closes_them_enable_restores() {
    let (a, b) = (
        fake::named("a").spawn().await,
        fake::named("b").spawn().await,
    );
    let proxy = Proxy::start(&two_backends(a.addr, b.addr)).await;
    proxy.wait_candidates("rw", 2).await;
    let rw = proxy.addr("rw").await;
    let admin = proxy.admin();

    // Round robin: a session on `a` comes within two tries.
    let mut on_a = None;
    for _ in 0..4 {
        let (stream, name) = open(rw).await;
        if name == "a" {
            on_a = Some(stream);
            break;
        }
    }
    let mut on_a = on_a.expect("a session on backend a");
    assert!(echoes(&mut on_a, b"before").await);

    let r = post(admin, "/backends/app/a/drain", None).await;
    assert_eq!((r.status, r.body.as_str()), (200, "app/a: drain\n"));
    assert_eq!(admin_state(&proxy, "a"), "drain");
    proxy.wait_route("rw", "only b", |c| c == ["b"]).await;
    for _ in 0..6 {
        assert_eq!(
            open(rw).await.1,
            "b",
            "a drained backend gets no new session"
        );
    }
    assert!(
        echoes(&mut on_a, b"draining").await,
        "drain keeps existing sessions"
    );

    let r = post(admin, "/backends/app/a/disable", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(admin_state(&proxy, "a"), "disabled");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), on_a.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "disable closes existing sessions");

    let r = post(admin, "/backends/app/a/enable", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    proxy
        .wait_route("rw", "a back per its checks", |c| {
            c.iter().any(|n| n == "a")
        })
        .await;
    assert_eq!(admin_state(&proxy, "a"), "enabled");
    let mut names = Vec::new();
    for _ in 0..4 {
        names.push(open(rw).await.1);
    }
    assert!(names.iter().any(|n| n == "a"), "{names:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn readyz_flips_when_a_tcp_cluster_loses_its_primary_and_back() {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let backend = fake::echo().spawn_on(socket);
    let yaml = format!(
        "admin: {{ listen: 127.0.0.1:0 }}
clusters:
  - name: db
    protocol: tcp
    check: {{ interval: 50ms, timeout: 100ms, rise: 1, fall: 2 }}
    backends: [{{ name: only, address: \"{addr}\" }}]
listeners:
  - {{ name: db-rw, bind: \"127.0.0.1:0\", cluster: db, role: primary, queue_timeout: 0s }}
  - {{ name: db-any, bind: \"127.0.0.1:0\", cluster: db, role: any, queue_timeout: 0s }}
"
    );
    let proxy = Proxy::start(&yaml).await;
    let admin = proxy.admin();
    let status_is = |want: u16| async move {
        eventually(
            Duration::from_secs(10),
            &format!("/readyz {want}"),
            || async move { get(admin, "/readyz").await.status == want },
        )
        .await;
        get(admin, "/readyz").await
    };
    let ready = status_is(200).await;
    assert_eq!(ready.body, "ready\n");

    drop(backend); // the port closes: the check fails, the only primary is gone
    let down = status_is(503).await;
    // tcp clusters have no roles: every listener lacks "a backend that is up".
    assert_eq!(down.body, "db-rw: no_backend\ndb-any: no_backend\n");
    assert!(!get(admin, "/status").await.json()["ready"]
        .as_bool()
        .unwrap());

    let socket = TcpListener::bind(addr)
        .await
        .expect("rebind the backend's port");
    let _backend = fake::echo().spawn_on(socket);
    let back = status_is(200).await;
    assert_eq!(back.body, "ready\n");
    assert_eq!(get(admin, "/healthz").await.status, 200);
    proxy.stop().await;
}
