//! An authority that cannot be reached: `on_authority_lost` decides.

use super::*;

/// An authority at a closed port: `trust_checks` routes by the checks alone, `fail_closed`
/// holds primary connections (queue, then refuse) and keeps the replica route; both report
/// the authority unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_authority_follows_on_authority_lost() {
    let Some(_) = require::lab(&[Engine::Pg]) else {
        return;
    };
    let _lock = lab::lock_read_only();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let auth = authority_yaml(&[format!("http://{closed}")], "/service", "gone");
    let (a, b) = (Engine::Pg.addr('A'), Engine::Pg.addr('B'));
    let yaml = config_yaml(&[
        ClusterYaml {
            name: "trust",
            a,
            b,
            extra: auth.clone(),
            queue: "200ms",
        },
        ClusterYaml {
            name: "closed",
            a,
            b,
            extra: format!("{auth}\n    on_authority_lost: fail_closed"),
            queue: "200ms",
        },
    ]);
    let proxy = Proxy::start(&yaml).await;
    for cluster in ["trust", "closed"] {
        wait_authority(&proxy, cluster, "unreachable reported", |s| {
            !s.reachable
                && s.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("unreachable"))
        })
        .await;
    }
    proxy
        .wait_route("rw_trust", "trust_checks routes a", |n| n == ["a"])
        .await;
    assert_eq!(authority(&proxy, "trust").gate, Some("trust_checks"));
    let port = db::connect_and_write(Engine::Pg, proxy.addr("rw_trust").await, "t")
        .await
        .expect("trust_checks: writes go through");
    assert_eq!(port, a.port());

    proxy.wait_candidates("ro_closed", 1).await;
    assert_eq!(authority(&proxy, "closed").gate, Some("fail_closed"));
    let table = proxy.app.router().load();
    let rw = table.route(&"rw_closed".into()).expect("route");
    assert!(
        rw.candidates.is_empty(),
        "fail_closed: the primary is not routed"
    );
    assert_eq!(rw.unavailable, Some(rolegate::routing::Unavailable::Held));
    let refused = db::connect_and_write(Engine::Pg, proxy.addr("rw_closed").await, "f").await;
    assert!(
        refused.is_err(),
        "fail_closed: queued, then refused: {refused:?}"
    );
    let mut replica = db::open(Engine::Pg, proxy.addr("ro_closed").await)
        .await
        .expect("fail_closed keeps the replica route");
    assert_eq!(replica.server_port().await.unwrap(), b.port());
    let up = "rolegate_authority_up{cluster=\"closed\",kind=\"patroni\"}";
    assert_eq!(metric_value(&proxy.metrics(), up), Some(0.0));
    proxy.stop().await;
}
