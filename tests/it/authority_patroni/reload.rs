//! Reloads start, restart and stop a cluster's authority source (`Tasks::sync`), seen from
//! outside the real binary: the route, `/status`, and the process's own TCP connections to
//! the lab's etcd.

use serde_json::Value;
use support::binary::{self, Rolegate, Start};
use support::files::ConfigFile;
use support::http::{get, post};
use support::{eventually, eventually_detail};

use super::*;

/// The lab's Patroni pair as cluster `pat` (`rw_pat`, `ro_pat`) with `extra` keys.
fn pat_yaml(extra: String) -> String {
    let (a, b) = (patroni_addr("A"), patroni_addr("B"));
    let cluster = ClusterYaml {
        name: "pat",
        a,
        b,
        extra,
        queue: "200ms",
    };
    format!("log: {{ format: json }}\n{}", config_yaml(&[cluster]))
}

/// How a reload is asked for: both paths end in the same apply.
#[derive(Clone, Copy)]
pub(super) enum Ask {
    Sighup,
    Post,
}

/// Replaces the file, asks for a reload, and waits until the `n`th successful one is counted.
pub(super) async fn reload(rg: &Rolegate, file: &ConfigFile, yaml: &str, ask: Ask, n: f64) {
    file.write(yaml);
    let admin = rg.admin();
    match ask {
        Ask::Sighup => rg.signal(libc::SIGHUP),
        Ask::Post => {
            let r = post(admin, "/reload", None).await;
            assert_eq!(r.status, 200, "POST /reload: {}", r.body);
        }
    }
    eventually_detail(
        Duration::from_secs(20),
        "the reload applied",
        || async move {
            let m = get(admin, "/metrics").await.body;
            let ok = metric_value(&m, "rolegate_config_reloads_total{result=\"success\"}");
            let bad = metric_value(&m, "rolegate_config_reloads_total{result=\"error\"}");
            match (ok, bad) {
                (_, Some(e)) if e > 0.0 => panic!("a reload was refused: {:#?}", rg.lines()),
                (Some(v), _) if v >= n => Ok(()),
                other => Err(format!("reloads (success, error): {other:?}")),
            }
        },
    )
    .await;
}

pub(super) async fn status(admin: SocketAddr) -> Value {
    get(admin, "/status").await.json()
}

pub(super) fn cluster<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["clusters"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no cluster {name} in /status: {status}"))
}

fn listener<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["listeners"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["name"] == name))
        .unwrap_or_else(|| panic!("no listener {name} in /status: {status}"))
}

/// The backends `listener` routes to, as `/status` lists them.
fn routed(status: &Value, name: &str) -> Vec<String> {
    listener(status, name)["backends"]
        .as_array()
        .map(|bs| {
            bs.iter()
                .filter_map(|b| b.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `/status` satisfies `pred` (`Err` says what it saw instead).
pub(super) async fn wait_status(
    admin: SocketAddr,
    what: &str,
    pred: impl Fn(&Value) -> Result<(), String>,
) {
    let pred = &pred;
    eventually_detail(Duration::from_secs(30), what, || async move {
        pred(&status(admin).await)
    })
    .await;
}

/// Started with no authority, the binary gains one by a reload (a hand-written scope whose
/// leader key names the replica: the primary route empties, `/status` reports the
/// disagreement), then a reload points it at Patroni's real scope (routed to the real
/// leader), and a last reload removes it: no `authority` in `/status`, routing by the checks
/// alone, and no connection from rolegate to etcd left (the source task stopped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_start_change_and_stop_the_authority() {
    let Some(_) = require::lab_engine("patroni") else {
        return;
    };
    let _lock = lab::lock_read_only();
    let leader_node = patroni_leader().expect("the lab's Patroni has a leader");
    let replica_node = if leader_node == "A" { "B" } else { "A" };
    let (leader, replica) = (leader_node.to_lowercase(), replica_node.to_lowercase());
    let leader_port = patroni_addr(&leader_node).port();
    let etcd_ports: Vec<u16> = lab::addresses("etcd").iter().map(|a| a.port()).collect();
    let mut keys = HandKeys::new().await;
    keys.put("leader", replica_node).await;

    // No authority: routed by the checks, and no etcd connection at all.
    let file = ConfigFile::new(&pat_yaml(String::new()));
    let rg = Rolegate::start(&file.path, Start::default()).await;
    let admin = rg.admin();
    binary::wait_ready(admin).await;
    wait_status(admin, "routed by the checks", |s| {
        let (r, a) = (routed(s, "rw_pat"), cluster(s, "pat").get("authority"));
        (r == [leader.as_str()] && a.is_none())
            .then_some(())
            .ok_or(format!("rw_pat {r:?}, authority {a:?}"))
    })
    .await;
    assert_eq!(
        tcp_connections_to(rg.pid, &etcd_ports),
        0,
        "no authority, no etcd"
    );

    // A reload adds an authority that names the replica: the primary route empties.
    let etcd = etcd_endpoints();
    let hand = authority_yaml(&etcd, &keys.namespace, &keys.scope);
    reload(&rg, &file, &pat_yaml(hand), Ask::Sighup, 1.0).await;
    wait_status(admin, "the authority names the replica", |s| {
        let a = &cluster(s, "pat")["authority"];
        let ok = a["kind"] == "patroni"
            && a["reachable"] == true
            && a["leader"] == replica.as_str()
            && a["gate"] == "disagrees"
            && routed(s, "rw_pat").is_empty()
            && !listener(s, "rw_pat")["unavailable"].is_null();
        ok.then_some(())
            .ok_or(format!("authority {a}, rw_pat {}", listener(s, "rw_pat")))
    })
    .await;
    assert_eq!(routed(&status(admin).await, "ro_pat"), [replica.as_str()]);
    let rw = binary::listener_addr(admin, "rw_pat").await;
    let refused = db::connect_and_write(Engine::Pg, rw, "reload-held").await;
    assert!(refused.is_err(), "disagreeing: not placed: {refused:?}");
    let ports = &etcd_ports;
    eventually(
        Duration::from_secs(30),
        "the source task watches etcd",
        || {
            let n = tcp_connections_to(rg.pid, ports);
            async move { n > 0 }
        },
    )
    .await;

    // A reload points it at Patroni's real scope: routed to the real leader.
    let real = authority_yaml(
        &etcd,
        &patroni_setting("namespace"),
        &patroni_setting("scope"),
    );
    reload(&rg, &file, &pat_yaml(real), Ask::Post, 2.0).await;
    wait_status(admin, "Patroni's own leader agrees", |s| {
        let a = &cluster(s, "pat")["authority"];
        let r = routed(s, "rw_pat");
        (a["leader"] == leader.as_str() && a["gate"] == "agrees" && r == [leader.as_str()])
            .then_some(())
            .ok_or(format!("authority {a}, rw_pat {r:?}"))
    })
    .await;
    let port = db::connect_and_write(Engine::Pg, rw, "reload-real")
        .await
        .expect("a write through rolegate once Patroni agrees");
    assert_eq!(port, leader_port);
    assert!(tcp_connections_to(rg.pid, &etcd_ports) > 0);

    // A reload removes it: no authority block, the checks alone route, the task is gone.
    let mark = rg.lines().len();
    reload(&rg, &file, &pat_yaml(String::new()), Ask::Sighup, 3.0).await;
    wait_status(admin, "the authority is gone", |s| {
        let (r, a) = (routed(s, "rw_pat"), cluster(s, "pat").get("authority"));
        (r == [leader.as_str()] && a.is_none())
            .then_some(())
            .ok_or(format!("rw_pat {r:?}, authority {a:?}"))
    })
    .await;
    // No connection, twice in a row (100 ms apart, the first reconnect pause), and no line
    // from a Patroni source since the reload: a task left running could be between two
    // connections (its watch broke), but it logs that before it reconnects.
    let mut clean = 0;
    eventually_detail(Duration::from_secs(30), "no etcd connection left", || {
        let n = tcp_connections_to(rg.pid, ports);
        let source_lines: Vec<String> = rg.lines()[mark..]
            .iter()
            .filter(|l| l.contains("\"message\":\"Patroni "))
            .cloned()
            .collect();
        clean = if n == 0 && source_lines.is_empty() { clean + 1 } else { 0 };
        let done = clean >= 2;
        async move {
            match done {
                true => Ok(()),
                false => Err(format!(
                    "{n} connections from rolegate to etcd {ports:?}; source lines {source_lines:#?}"
                )),
            }
        }
    })
    .await;
    let port = db::connect_and_write(Engine::Pg, rw, "reload-none")
        .await
        .expect("a write through rolegate with no authority");
    assert_eq!(port, leader_port);
    rg.stop_cleanly().await;
    keys.cleanup().await;
}
