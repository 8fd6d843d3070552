//! The real binary end to end: SIGHUP reloads the config file (a good one applies, a broken
//! one is refused and counted), and SIGTERM stops it with exit status 0. Everything is
//! observed through the admin API, the way an operator would.

use crate::support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use support::binary::{self, Rolegate, Start};
use support::config::{Check, Cluster, ConfigBuilder, Listener};
use support::files::ConfigFile;
use support::http::get;
use support::{eventually, fake, metric_value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One tcp cluster with `backend`, a `role: any` listener per name in `listeners`.
fn config(backend: SocketAddr, listeners: &[&str]) -> String {
    let mut config = ConfigBuilder::new()
        .set("log", json!({ "format": "json" }))
        .cluster(
            Cluster::tcp("app")
                .check(Check::timing("200ms", "200ms", 1, 2))
                .backend("a", backend),
        );
    for l in listeners {
        config = config.listener(Listener::new(l, "app").role("any"));
    }
    config.yaml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reloads_on_sighup_and_exits_0_on_sigterm() {
    let backend = fake::echo().spawn().await;
    let file = ConfigFile::new(&config(backend.addr, &["one"]));
    let rg = Rolegate::start(
        &file.path,
        Start {
            rust_log: Some("info"),
            ..Start::default()
        },
    )
    .await;
    let admin = rg.admin();
    binary::wait_ready(admin).await;
    let before = binary::listeners(admin).await;
    assert_eq!(before.len(), 1, "{before:?}");

    file.write(&config(backend.addr, &["one", "two"]));
    rg.signal(libc::SIGHUP);
    eventually(
        Duration::from_secs(10),
        "listener two after SIGHUP",
        || async move {
            binary::listeners(admin).await.len() == 2 && get(admin, "/readyz").await.status == 200
        },
    )
    .await;
    let after = binary::listeners(admin).await;
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
    rg.signal(libc::SIGHUP);
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
        binary::listeners(admin).await,
        after,
        "a broken file changes nothing"
    );
    let m = get(admin, "/metrics").await.body;
    assert_eq!(
        metric_value(&m, "rolegate_config_reloads_total{result=\"success\"}"),
        Some(1.0)
    );
    let logged = rg.lines().join("\n");
    assert!(
        logged.contains("config.yaml:2:1:"),
        "the error names file:line:column:\n{logged}"
    );

    rg.stop_cleanly().await;
    assert!(
        TcpStream::connect(two).await.is_err(),
        "listeners are closed after exit"
    );
}
