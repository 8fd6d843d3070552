//! The Patroni source keeps one etcd connection for as long as etcd is there. Its HTTP/2 pings
//! once came every 2 s, more often than etcd's `--grpc-keepalive-min-time` (5 s) allows, and
//! etcd answered with a GOAWAY ~8 s after every connect: each break reported the authority
//! unreachable, so `on_authority_lost: fail_closed` held writes every 8 s.

use support::binary::{self, Rolegate, Start};
use support::eventually_detail;
use support::files::ConfigFile;

use super::*;

/// One connection to etcd that survives well past the old 8 s break (20 s by the test's
/// clock), with no "out of reach" line and the authority reachable throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_session_is_not_cut_by_its_own_pings() {
    let Some(_) = require::lab_engine("patroni") else {
        return;
    };
    let _lock = lab::lock_read_only();
    let (a, b) = (patroni_addr("A"), patroni_addr("B"));
    let auth = authority_yaml(
        &etcd_endpoints(),
        &patroni_setting("namespace"),
        &patroni_setting("scope"),
    );
    let cluster = ClusterYaml {
        name: "pat",
        a,
        b,
        extra: format!("on_authority_lost: fail_closed\n    {auth}"),
        queue: "200ms",
    };
    let file = ConfigFile::new(&format!(
        "log: {{ format: json }}\n{}",
        config_yaml(&[cluster])
    ));
    let rg = Rolegate::start(&file.path, Start::default()).await;
    let admin = rg.admin();
    binary::wait_ready(admin).await;
    let ports: Vec<u16> = lab::addresses("etcd").iter().map(|a| a.port()).collect();
    let ports = &ports;
    let rgr = &rg;

    let mut first: Option<(std::collections::HashSet<String>, std::time::Instant)> = None;
    eventually_detail(Duration::from_secs(60), "one etcd session for 20 s", || {
        let now = tcp_sockets_to(rgr.pid, ports);
        let lost: Vec<String> = rgr
            .lines()
            .iter()
            .filter(|l| l.contains("Patroni authority out of reach"))
            .cloned()
            .collect();
        assert!(lost.is_empty(), "the etcd session broke: {lost:#?}");
        let verdict = match &first {
            None if now.is_empty() => Err("no etcd connection yet".to_string()),
            None => {
                first = Some((now, std::time::Instant::now()));
                Err("connected; watching it".to_string())
            }
            Some((sockets, since)) => {
                assert!(
                    sockets.is_subset(&now),
                    "the first etcd connection {sockets:?} is gone (now {now:?})"
                );
                let age = since.elapsed();
                (age >= Duration::from_secs(20))
                    .then_some(())
                    .ok_or(format!("the connection is {age:?} old"))
            }
        };
        async move { verdict }
    })
    .await;
    let s = support::http::get(admin, "/status").await.json();
    let auth = s["clusters"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "pat"))
        .map(|c| c["authority"].clone())
        .unwrap_or_default();
    assert_eq!(auth["reachable"], true, "authority {auth}");
    rg.stop_cleanly().await;
}
