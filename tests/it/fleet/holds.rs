//! Holds fleet-wide: `POST /clusters/r/hold` sent to one follower is written to etcd and
//! honoured by every instance (another follower queues its new primary connections and says
//! who held); the switchover that follows ends the hold everywhere, the queued connections
//! complete on the new primary, none fails, and the leader removes the key. A release sent
//! to a third instance ends a second hold everywhere.

use std::time::Duration;

use super::*;
use crate::support::db;
use crate::support::lab::{self, Engine};

const E: Engine = Engine::Redis;
const CLIENTS: usize = 5;

fn hold_of(i: &Instance) -> serde_json::Value {
    i.status()["clusters"][0]["hold"].clone()
}

fn queued(i: &Instance) -> f64 {
    http_get(i.admin, "/metrics")
        .and_then(|m| {
            crate::support::metric_value(&m, "rolegate_queued_connections{listener=\"rw\"}")
        })
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_sent_to_one_follower_holds_the_fleet_until_the_switchover() {
    let Some(endpoints) = etcd_or_skip("fleet a_hold_sent_to_one_follower") else {
        return;
    };
    if crate::support::require::lab(&[E]).is_none() {
        return;
    }
    let _lock = lab::lock();
    let _reset = lab::ResetOnPanic(E);
    let mut fleet = Fleet::new(endpoints.clone(), "hold", E);
    // Held connections must outlast the switchover.
    fleet.queue_timeout = "30s";
    let keys = fleet.keys();
    let mut client = etcd(&endpoints).await;
    let obs = fleet.start("obs", "observer");
    wait_key(&mut client, &keys.leader(), "a leader", |v| v == "obs").await;
    let standby = fleet.start("standby", "observer");
    let (f0, f1) = (fleet.start("f0", "follower"), fleet.start("f1", "follower"));
    let all = [&obs, &standby, &f0, &f1];
    let primary = lab_primary(E);
    eventually(
        Duration::from_secs(30),
        "every instance on the primary",
        || all_route_to(&all, &primary),
    )
    .await;

    let reply =
        http_post(f0.admin, &format!("/clusters/{CLUSTER}/hold?timeout=60s")).unwrap_or_default();
    assert!(is_2xx(&reply), "{reply}");
    eventually(Duration::from_secs(20), "held everywhere, by f0", || {
        let seen: Vec<_> = all.iter().map(|i| (i.name.clone(), hold_of(i))).collect();
        let ok = seen.iter().all(|(_, h)| {
            h["held_by"] == "f0"
                && h["held_at_ms"].as_u64().is_some()
                && h["primary"] == primary.as_str()
        });
        if ok {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await;
    let (record, _) = get(&mut client, &keys.hold(CLUSTER))
        .await
        .expect("the hold key");
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    assert_eq!(record["by"], "f0", "{record}");
    assert!(
        record["until_ms"].as_u64() > record["at_ms"].as_u64(),
        "an absolute deadline: {record}"
    );

    // New connections through the other follower wait in its queue.
    let rw = f1.listener();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            tokio::spawn(async move { db::connect_and_write(E, rw, &format!("held{n}")).await })
        })
        .collect();
    eventually(Duration::from_secs(20), "f1 queues them", || {
        match queued(&f1) {
            q if q >= CLIENTS as f64 => Ok(()),
            q => Err(format!("{q} queued")),
        }
    })
    .await;
    assert!(
        clients.iter().all(|c| !c.is_finished()),
        "held, not answered"
    );

    switchover(E).await;
    let new_primary = other(&primary);
    let port = E.addr(new_primary.chars().next().unwrap()).port();
    let mut failed = Vec::new();
    for c in clients {
        match c.await.expect("client task") {
            Ok(p) if p == port => {}
            other => failed.push(format!("{other:?}")),
        }
    }
    assert!(
        failed.is_empty(),
        "every held connection completes on {new_primary} (port {port}): {failed:?}"
    );
    eventually(
        Duration::from_secs(20),
        "the hold is over everywhere",
        || {
            let seen: Vec<_> = all
                .iter()
                .map(|i| (i.name.clone(), hold_of(i), i.primary()))
                .collect();
            if seen
                .iter()
                .all(|(_, h, p)| h.is_null() && p.as_deref() == Some(new_primary))
            {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    )
    .await;
    // The leader removes the hold key right after the decision that ended the hold; each
    // follower sees both on its one watch, in that order, so it ends the hold on the new
    // primary, never as released (control_plane/fleet/follower.rs).
    for i in [&f0, &f1] {
        i.await_log("Hold ended.", Duration::from_secs(5)).await;
        let log = i.log_text();
        let ended: Vec<&str> = log.lines().filter(|l| l.contains("Hold ended.")).collect();
        assert!(
            ended.len() == 1 && ended[0].contains("reason=\"new_primary\""),
            "{}: the hold ended once, on the new primary: {ended:?}\n{log}",
            i.name
        );
    }
    wait_key_gone(&mut client, &keys.hold(CLUSTER)).await;

    // A second hold, released through another instance: released everywhere.
    let reply =
        http_post(f1.admin, &format!("/clusters/{CLUSTER}/hold?timeout=60s")).unwrap_or_default();
    assert!(is_2xx(&reply), "{reply}");
    eventually(Duration::from_secs(20), "held everywhere, by f1", || {
        let seen: Vec<_> = all.iter().map(|i| hold_of(i)["held_by"].clone()).collect();
        if seen.iter().all(|h| h == "f1") {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await;
    let reply =
        http_post(standby.admin, &format!("/clusters/{CLUSTER}/release")).unwrap_or_default();
    assert!(is_2xx(&reply), "{reply}");
    eventually(Duration::from_secs(20), "released everywhere", || {
        let seen: Vec<_> = all.iter().map(|i| (i.name.clone(), hold_of(i))).collect();
        if seen.iter().all(|(_, h)| h.is_null()) {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await;
    wait_key_gone(&mut client, &keys.hold(CLUSTER)).await;
    let n = db::connect_and_write(E, f0.listener(), "after").await;
    assert_eq!(n, Ok(port), "routed to {new_primary} again");
}

async fn wait_key_gone(client: &mut etcd_client::Client, key: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Some(v) = get(client, key).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key} still there: {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
