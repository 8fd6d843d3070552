//! 1 leader + 1 standby observer + 10 followers (all `mode: auto`, `observers: 2`) on each
//! engine: each database node sees exactly two monitoring sessions from the fleet, counted on
//! the server, and a switchover moves all twelve instances to the new primary.

use std::time::Duration;

use super::*;
use crate::support::lab::{self, Engine};

const FOLLOWERS: usize = 10;

async fn twelve_instances_two_sessions_per_node_and_a_switchover(engine: Engine) {
    let test = format!("fleet engines::{}", engine.as_str());
    let Some(endpoints) = etcd_or_skip(&test) else {
        return;
    };
    let _lock = lab::lock();
    let _reset = lab::ResetOnPanic(engine);
    let fleet = Fleet::new(
        endpoints.clone(),
        &format!("twelve-{}", engine.as_str()),
        engine,
    );
    let keys = fleet.keys();
    let mut client = etcd(&endpoints).await;

    let mut instances: Vec<Instance> = (0..2)
        .map(|n| fleet.start(&format!("obs{n}"), "auto"))
        .collect();
    // Both slots held before the followers come, so who observes is known.
    for n in 0..2 {
        wait_key(&mut client, &keys.observer_slot(n), "observer slot", |_| {
            true
        })
        .await;
    }
    let leader = wait_key(&mut client, &keys.leader(), "a leader", |_| true).await;
    assert!(leader.starts_with("obs"), "an observer leads: {leader}");
    instances.extend((0..FOLLOWERS).map(|n| fleet.start(&format!("f{n}"), "auto")));
    let all: Vec<&Instance> = instances.iter().collect();

    let primary = lab_primary(engine);
    eventually(Duration::from_secs(60), "all twelve on the primary", || {
        all_route_to(&all, &primary)
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "exactly two observers, one leader",
        || {
            let roles: Vec<(String, bool, bool)> = all
                .iter()
                .map(|i| {
                    let c = &i.status()["coordination"];
                    (i.name.clone(), c["observing"] == true, c["leader"] == true)
                })
                .collect();
            let observing = roles.iter().filter(|r| r.1).count();
            let leading = roles.iter().filter(|r| r.2).count();
            let followers_follow = roles
                .iter()
                .filter(|r| r.0.starts_with('f'))
                .all(|r| !r.1 && !r.2);
            if observing == 2 && leading == 1 && followers_follow {
                Ok(())
            } else {
                Err(format!("(name, observing, leader): {roles:?}"))
            }
        },
    )
    .await;
    for node in [engine.addr('A'), engine.addr('B')] {
        crate::support::eventually_detail(
            Duration::from_secs(15),
            "one monitoring session per observer on each node",
            || async {
                match monitoring_sessions(engine, node, &all).await? {
                    2 => Ok(()),
                    n => Err(format!("{n} monitoring sessions on {node}")),
                }
            },
        )
        .await;
    }

    switchover(engine).await;
    let new_primary = other(&primary);
    eventually(
        Duration::from_secs(30),
        "all twelve follow the switchover",
        || all_route_to(&all, new_primary),
    )
    .await;
    // The followers took their decision from etcd, not from checks of their own.
    for i in all.iter().filter(|i| i.name.starts_with('f')) {
        let s = i.status();
        assert_eq!(s["coordination"]["source"], "etcd", "{}: {s}", i.name);
        assert_eq!(
            s["clusters"][0]["decided_by"],
            leader.as_str(),
            "{}",
            i.name
        );
    }
    // Put the lab back as it was found.
    switchover(engine).await;
}

per_engine!(twelve_instances_two_sessions_per_node_and_a_switchover);
