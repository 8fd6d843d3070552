//! Losing etcd for real:
//! - every member of a private 3-member cluster is stopped (the lab's etcd serves other
//!   tests): `local` checks and routes on its own, `last_known` keeps the last decision,
//!   `fail_closed` queues then refuses primary connections while its replica listener keeps
//!   working; no connection lands on a node that is not in the role asked for; when the
//!   members are back, every follower routes by the fleet again;
//! - one follower cut off in a network namespace (its etcd traffic black-holed, not refused)
//!   while the rest of the fleet keeps the lab's etcd.

use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::support::db;
use crate::support::etcd::EtcdCluster;
use crate::support::lab::{self, Engine};
use crate::support::{netns, relay, require};

const E: Engine = Engine::Redis;

fn port_of(node: &str) -> u16 {
    E.addr(node.chars().next().expect("node name")).port()
}

/// Which of the three followers are back on the fleet's decisions, routing to `primary`.
fn back_on_the_fleet(followers: &[Instance], primary: &str) -> Result<(), String> {
    let mut bad = Vec::new();
    for f in followers {
        let v = f.status();
        let c = &v["coordination"];
        if !(c["connected"] == true
            && c["observing"] == false
            && c["source"] == "etcd"
            && v["clusters"][0]["primary"] == primary)
        {
            bad.push(format!(
                "{}: {c} primary {}",
                f.name, v["clusters"][0]["primary"]
            ));
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join("; "))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_etcd_member_stopped_each_on_lost_policy_then_convergence() {
    if require::lab(&[E]).is_none() {
        return;
    }
    let Some(mut etcd_cluster) = EtcdCluster::start().await else {
        return;
    };
    let _lock = lab::lock();
    let fleet = Fleet::new(etcd_cluster.endpoints(), "allgone", E);
    let keys = fleet.keys();
    let mut client = etcd(&fleet.endpoints).await;
    let obs = fleet.start("obs", "observer");
    wait_key(&mut client, &keys.leader(), "a leader", |v| v == "obs").await;
    let followers: Vec<Instance> = ["local", "last_known", "fail_closed"]
        .iter()
        .map(|policy| fleet.start_with(policy, "follower", &fleet.endpoints, policy))
        .collect();
    let primary = lab_primary(E);
    let replica = other(&primary);
    let all: Vec<&Instance> = std::iter::once(&obs).chain(followers.iter()).collect();
    eventually(
        Duration::from_secs(30),
        "every instance on the primary",
        || all_route_to(&all, &primary),
    )
    .await;

    etcd_cluster.stop_all();
    let [local, last, closed] = [&followers[0], &followers[1], &followers[2]];
    eventually(Duration::from_secs(30), "each policy in force", || {
        let (l, k, c) = (local.status(), last.status(), closed.status());
        let ok = l["coordination"]["connected"] == false
            && l["coordination"]["observing"] == true
            && l["coordination"]["source"] == "local"
            && l["clusters"][0]["primary"] == primary.as_str()
            && k["coordination"]["connected"] == false
            && k["coordination"]["source"] == "last_known"
            && k["clusters"][0]["primary"] == primary.as_str()
            && c["coordination"]["connected"] == false
            && c["clusters"][0]["primary"].is_null()
            && c["listeners"][0]["unavailable"] == "no_primary"
            && c["listeners"][1]["unavailable"].is_null();
        if ok {
            Ok(())
        } else {
            Err(format!(
                "local {} / last_known {} / fail_closed {} {:?}",
                l["coordination"], k["coordination"], c["coordination"], c["listeners"]
            ))
        }
    })
    .await;
    // Traffic: writes through local and last_known land on the primary; fail_closed refuses
    // its primary connections after the queue and keeps serving its replica listener.
    for f in [local, last, &obs] {
        let landed = db::connect_and_write(E, f.listener(), "etcd-gone").await;
        assert_eq!(
            landed,
            Ok(port_of(&primary)),
            "{} routes to the primary",
            f.name
        );
    }
    let refused = db::connect_and_write(E, closed.listener(), "etcd-gone").await;
    assert!(
        refused.is_err(),
        "fail_closed refuses primary connections: {refused:?}"
    );
    let mut ro = db::open(E, closed.listener_at(1))
        .await
        .expect("fail_closed's replica listener");
    assert_eq!(
        ro.server_port().await,
        Ok(port_of(replica)),
        "replica listener on the replica"
    );
    closed
        .await_log("applying on_lost", Duration::from_secs(5))
        .await;

    etcd_cluster.start_all();
    etcd_cluster.wait_ready().await;
    eventually(
        Duration::from_secs(60),
        "every follower routes by the fleet again",
        || back_on_the_fleet(&followers, &primary),
    )
    .await;
    let landed = db::connect_and_write(E, closed.listener(), "etcd-back").await;
    assert_eq!(landed, Ok(port_of(&primary)), "fail_closed routes again");
    let leader = wait_key(&mut client, &keys.leader(), "a leader again", |v| {
        v == "obs"
    })
    .await;
    assert_eq!(leader, "obs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cut_off_in_a_netns_goes_local_while_the_fleet_keeps_etcd() {
    let Some(endpoints) = etcd_or_skip("fleet a_follower_cut_off_in_a_netns") else {
        return;
    };
    if require::root().is_none() || require::lab(&[E]).is_none() {
        return;
    }
    let _lock = lab::lock();
    let fleet = Fleet::new(endpoints.clone(), "netns", E);
    let keys = fleet.keys();
    let mut client = etcd(&endpoints).await;
    let obs = fleet.start("obs", "observer");
    wait_key(&mut client, &keys.leader(), "a leader", |v| v == "obs").await;
    let node = netns::Node::new();
    let upstream: SocketAddr = endpoints[0]
        .trim_start_matches("http://")
        .parse()
        .expect("etcd address");
    let relay = relay::Relay::spawn(node.listen(free_port()), upstream);
    let via = vec![format!("http://{}", relay.addr)];
    let cut = fleet.start_with("cut", "follower", &via, "local");
    let kept = fleet.start("kept", "follower");
    let primary = lab_primary(E);
    let all = [&obs, &cut, &kept];
    eventually(
        Duration::from_secs(30),
        "every instance on the primary",
        || all_route_to(&all, &primary),
    )
    .await;

    node.partition();
    eventually(
        Duration::from_secs(40),
        "the cut follower goes local",
        || {
            let (c, k) = (cut.status(), kept.status());
            let ok = c["coordination"]["connected"] == false
                && c["coordination"]["observing"] == true
                && c["coordination"]["source"] == "local"
                && c["clusters"][0]["primary"] == primary.as_str()
                && k["coordination"]["connected"] == true
                && k["coordination"]["source"] == "etcd";
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "cut {} / kept {}",
                    c["coordination"], k["coordination"]
                ))
            }
        },
    )
    .await;
    for f in [&cut, &kept] {
        let landed = db::connect_and_write(E, f.listener(), "netns").await;
        assert_eq!(
            landed,
            Ok(port_of(&primary)),
            "{} routes to the primary",
            f.name
        );
    }

    node.heal();
    eventually(Duration::from_secs(60), "the cut follower rejoins", || {
        back_on_the_fleet(std::slice::from_ref(&cut), &primary)
    })
    .await;
    drop(relay);
}
