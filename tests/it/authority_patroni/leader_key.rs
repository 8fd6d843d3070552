//! The leader and failover keys, written by hand into the lab's etcd over the lab's
//! PostgreSQL pair, gate the checks' choice.

use super::*;

/// The leader key decides with the checks: naming the replica holds the route (the checks
/// say a), naming a routes a, naming nobody we have holds it with a clear error, deleted
/// holds it; a failover key holds until it is cleared. Each change arrives by the watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_key_must_agree_with_the_checks() {
    let Some(_) = require::lab(&[Engine::Pg]) else {
        return;
    };
    let Some(_) = require::lab_engine("etcd") else {
        return;
    };
    let _lock = lab::lock_read_only();
    let mut keys = HandKeys::new().await;
    keys.put("leader", "B").await;
    let auth = authority_yaml(&etcd_endpoints(), &keys.namespace, &keys.scope);
    let yaml = config_yaml(&[ClusterYaml {
        name: "db",
        a: Engine::Pg.addr('A'),
        b: Engine::Pg.addr('B'),
        extra: auth,
        queue: "200ms",
    }]);
    let proxy = Proxy::start(&yaml).await;
    // The checks confirm a; the authority names b: not routed, reported.
    wait_authority(&proxy, "db", "the checks and the authority disagree", |s| {
        s.gate == Some("disagrees") && s.leader.as_deref() == Some("b")
    })
    .await;
    proxy.wait_candidates("ro_db", 1).await;
    let held = proxy.app.router().load();
    let route = held.route(&"rw_db".into()).expect("rw_db route");
    assert!(
        route.candidates.is_empty(),
        "disagreeing: a must not be routed"
    );
    assert!(events(&proxy, "db", "disagrees") >= 1.0);
    assert_eq!(
        metric_value(
            &proxy.metrics(),
            "rolegate_authority_agrees{cluster=\"db\"}"
        ),
        Some(0.0)
    );
    let refused = db::connect_and_write(Engine::Pg, proxy.addr("rw_db").await, "x").await;
    assert!(
        refused.is_err(),
        "a new primary connection is not placed: {refused:?}"
    );

    // The authority moves to a: routed at once (the watch, not a poll).
    keys.put("leader", "A").await;
    proxy.wait_route("rw_db", "a agreed", |n| n == ["a"]).await;
    assert_eq!(authority(&proxy, "db").gate, Some("agrees"));
    assert_eq!(
        metric_value(
            &proxy.metrics(),
            "rolegate_authority_agrees{cluster=\"db\"}"
        ),
        Some(1.0)
    );
    let port = db::connect_and_write(Engine::Pg, proxy.addr("rw_db").await, "y")
        .await
        .expect("write through rolegate once both agree");
    assert_eq!(port, Engine::Pg.addr('A').port());

    // A member no backend stands for: not routed, a clear error.
    keys.put("leader", "pg-nobody").await;
    proxy
        .wait_route("rw_db", "unknown member held", |n| n.is_empty())
        .await;
    let s = authority(&proxy, "db");
    assert_eq!(s.gate, Some("unknown_member"));
    let error = s.last_error.unwrap_or_default();
    assert!(
        error.contains("pg-nobody") && error.contains("patroni_member"),
        "{error}"
    );
    assert!(events(&proxy, "db", "unknown_member") >= 1.0);

    // No leader key: no one.
    keys.delete("leader").await;
    wait_authority(&proxy, "db", "no leader", |s| s.gate == Some("no_leader")).await;
    assert!(proxy
        .app
        .router()
        .load()
        .route(&"rw_db".into())
        .unwrap()
        .candidates
        .is_empty());

    // A switchover announced while a leads: held until it is cleared.
    keys.put("leader", "A").await;
    proxy
        .wait_route("rw_db", "a agreed again", |n| n == ["a"])
        .await;
    keys.put("failover", r#"{"leader":"A","member":"B"}"#).await;
    proxy
        .wait_route("rw_db", "held by the failover key", |n| n.is_empty())
        .await;
    assert!(authority(&proxy, "db").hold);
    assert!(events(&proxy, "db", "hold_started") >= 1.0);
    keys.put("failover", "{}").await; // Patroni's "done"
    proxy.wait_route("rw_db", "released", |n| n == ["a"]).await;
    assert!(!authority(&proxy, "db").hold);
    assert!(events(&proxy, "db", "hold_cleared") >= 1.0);
    proxy.stop().await;
    keys.cleanup().await;
}
