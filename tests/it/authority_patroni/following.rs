//! Patroni's own role changes, on the lab's Patroni pair: a REST switchover and a killed
//! primary are followed by the leader key, under a write loop.

use super::*;
use crate::support::writer::{failed, Writer};

/// A new connection and a write every 20 ms through `rw` (at most 6,000: two minutes), waits of
/// up to 60 s.
fn writer(rw: SocketAddr) -> Writer {
    Writer::options(Engine::Pg, rw)
        .prefix("ap")
        .max_attempts(6000)
        .wait(Duration::from_secs(60))
        .spawn()
}

/// Patroni's own switchover (REST POST /switchover, what `patronictl switchover` sends):
/// rolegate holds new connections while the failover key announces it, follows the leader
/// key to B, and no new connection fails — none is sent to A once it refuses writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_patroni_switchover_is_followed_with_no_failed_connection() {
    let Some(_) = require::lab_engine("patroni") else {
        return;
    };
    let _lock = lab::lock();
    let _reset = ResetPatroniOnPanic;
    let (proxy, a, b) = on_canonical_patroni().await;
    wait_authority(&proxy, "pat", "Patroni names a", |s| {
        s.leader.as_deref() == Some("a") && s.gate == Some("agrees") && s.reachable
    })
    .await;

    let rw = proxy.addr("rw_pat").await;
    let writer = writer(rw);
    writer
        .wait_for_writes(20, a.port(), 0.0, "writes on A before")
        .await;
    let t = lab_sh(&["switchover", "patroni", "--json"]).await;
    let done = serde_json::from_str::<serde_json::Value>(&t)
        .ok()
        .and_then(|v| v["done"].as_f64())
        .unwrap_or_else(wall);
    proxy.wait_route("rw_pat", "b leads", |n| n == ["b"]).await;
    writer
        .wait_for_writes(20, b.port(), 0.0, "writes on B after")
        .await;
    let attempts = writer.finish().await;

    let bad = failed(&attempts);
    assert!(
        bad.is_empty(),
        "{} of {} new connections failed during the switchover: {:?}",
        bad.len(),
        attempts.len(),
        bad.iter().take(5).collect::<Vec<_>>()
    );
    let late_on_a = attempts
        .iter()
        .filter(|x| x.started > done && x.result == Ok(a.port()))
        .count();
    assert_eq!(
        late_on_a, 0,
        "writes acknowledged by A after the switchover"
    );
    assert!(
        events(&proxy, "pat", "hold_started") >= 1.0,
        "the failover key held new connections"
    );
    assert!(events(&proxy, "pat", "hold_cleared") >= 1.0);
    assert!(
        events(&proxy, "pat", "recheck") >= 1.0,
        "a leader change re-checks"
    );
    let s = authority(&proxy, "pat");
    assert_eq!(s.leader.as_deref(), Some("b"));
    assert!(!s.hold);
    proxy.stop().await;
    lab_sh(&["reset", "patroni"]).await;
}

/// A Patroni primary killed (Patroni and PostgreSQL, -9): Patroni promotes B once A's leader
/// key expires, and rolegate follows the leader key to B.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_patroni_primary_is_followed() {
    let Some(_) = require::lab_engine("patroni") else {
        return;
    };
    let _lock = lab::lock();
    let _reset = ResetPatroniOnPanic;
    let (proxy, a, b) = on_canonical_patroni().await;
    let rw = proxy.addr("rw_pat").await;
    let writer = writer(rw);
    writer
        .wait_for_writes(10, a.port(), 0.0, "writes on A before")
        .await;
    let killed = wall();
    lab_sh(&["kill", "patroni", "--json"]).await;
    proxy.wait_route("rw_pat", "b leads", |n| n == ["b"]).await;
    wait_authority(&proxy, "pat", "Patroni names b", |s| {
        s.leader.as_deref() == Some("b") && s.gate == Some("agrees")
    })
    .await;
    writer
        .wait_for_writes(10, b.port(), 0.0, "writes on B after")
        .await;
    let attempts = writer.finish().await;
    let on_a_after = attempts
        .iter()
        .filter(|x| x.started > killed + 1.0 && x.result == Ok(a.port()))
        .count();
    assert_eq!(on_a_after, 0, "writes acknowledged by the killed A");
    proxy.stop().await;
    lab_sh(&["reset", "patroni"]).await;
}

/// The lab's Patroni put back to A leading, and a proxy whose cluster `pat` has Patroni's real
/// scope as its authority, routing `rw_pat` to A.
async fn on_canonical_patroni() -> (Proxy, SocketAddr, SocketAddr) {
    patroni_canonical().await;
    let (a, b) = (patroni_addr("A"), patroni_addr("B"));
    let auth = authority_yaml(
        &etcd_endpoints(),
        &patroni_setting("namespace"),
        &patroni_setting("scope"),
    );
    let yaml = config_yaml(&[ClusterYaml {
        name: "pat",
        a,
        b,
        extra: auth,
        queue: "60s",
    }]);
    let proxy = Proxy::start(&yaml).await;
    proxy.wait_route("rw_pat", "a leads", |n| n == ["a"]).await;
    (proxy, a, b)
}
