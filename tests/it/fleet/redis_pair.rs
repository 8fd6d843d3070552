//! On the lab's Redis pair: observers check, followers route by the leader's decisions, a
//! killed or frozen leader is replaced, a frozen leader's late write is refused, a garbage
//! record is ignored, a follower cut from etcd applies its `on_lost`, a follower's failed
//! connect is reported, admin actions apply fleet-wide.

use std::net::SocketAddr;
use std::time::Duration;

use rolegate::control_plane::fleet::publisher::{self, Published as Outcome};
use rolegate::control_plane::fleet::record::DecisionRecord;
use tokio::time::Instant;

use super::*;
use crate::support::lab::{self, Engine};

const E: Engine = Engine::Redis;

/// 2 observers (auto) + 4 followers: the Redis nodes see 2 monitoring sessions from the
/// fleet; a switchover moves every instance; kill -9 of the leader hands leadership to the
/// standby and the next switchover is followed by everyone left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observers_check_followers_follow_and_a_killed_leader_is_replaced() {
    let Some(endpoints) = etcd_or_skip("fleet observers_check_followers_follow") else {
        return;
    };
    let _lock = lab::lock();
    let _reset = lab::ResetOnPanic(E);
    let fleet = Fleet::new(endpoints.clone(), "follow", E);
    let keys = fleet.keys();
    let mut client = etcd(&endpoints).await;

    let mut instances: Vec<Instance> = Vec::new();
    for n in 0..2 {
        instances.push(fleet.start(&format!("obs{n}"), "auto"));
    }
    // Both slots held before the followers come, so who observes is known.
    for n in 0..2 {
        wait_key(&mut client, &keys.observer_slot(n), "observer slot", |_| {
            true
        })
        .await;
    }
    for n in 0..4 {
        instances.push(fleet.start(&format!("f{n}"), "auto"));
    }
    let leader = wait_key(&mut client, &keys.leader(), "a leader", |_| true).await;
    assert!(leader.starts_with("obs"), "an observer leads: {leader}");
    let li = instances.iter().position(|i| i.name == leader).unwrap();
    eventually(Duration::from_secs(10), "the leader says it leads", || {
        let s = http_get(instances[li].admin, "/status").unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&s).unwrap_or_default();
        let c = &v["coordination"];
        if c["leader"] == true && c["observing"] == true && c["source"] == "local" {
            Ok(())
        } else {
            Err(format!("{c}"))
        }
    })
    .await;

    let primary = lab_primary(E);
    let all: Vec<&Instance> = instances.iter().collect();
    eventually(
        Duration::from_secs(30),
        "every instance on the primary",
        || all_route_to(&all, &primary),
    )
    .await;
    let redis = [E.addr('A'), E.addr('B')];
    for node in redis {
        crate::support::eventually_detail(
            Duration::from_secs(10),
            "one session per observer",
            || async {
                match monitoring_sessions(E, node, &all).await? {
                    2 => Ok(()),
                    n => Err(format!("{n} monitoring sessions on {node}")),
                }
            },
        )
        .await;
    }

    switchover(E).await;
    let new_primary = other(&primary);
    eventually(
        Duration::from_secs(30),
        "every instance follows the switchover",
        || all_route_to(&all, new_primary),
    )
    .await;

    // kill -9 of the leader: the standby observer takes over.
    instances[li].signal("-KILL");
    let dead = instances.remove(li);
    drop(dead);
    let successor = wait_key(&mut client, &keys.leader(), "a new leader", |v| v != leader).await;
    assert!(
        successor.starts_with("obs"),
        "the standby leads: {successor}"
    );

    switchover(E).await;
    let left: Vec<&Instance> = instances.iter().collect();
    eventually(
        Duration::from_secs(30),
        "the fleet follows after the takeover",
        || all_route_to(&left, &primary),
    )
    .await;
    // A follower took the freed slot: still two observers' sessions.
    for node in redis {
        crate::support::eventually_detail(
            Duration::from_secs(15),
            "two observers again",
            || async {
                match monitoring_sessions(E, node, &left).await? {
                    2 => Ok(()),
                    n => Err(format!("{n} monitoring sessions on {node}")),
                }
            },
        )
        .await;
    }
}

/// A leader frozen (SIGSTOP) past its lease loses leadership; a switchover meanwhile is
/// published by its successor; after SIGCONT its publication is refused, the record in etcd
/// stays the successor's and no follower routes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_cannot_publish_after_waking() {
    let Some(endpoints) = etcd_or_skip("fleet a_frozen_leader_cannot_publish") else {
        return;
    };
    let _lock = lab::lock();
    let _reset = lab::ResetOnPanic(E);
    let fleet = Fleet::new(endpoints.clone(), "frozen", E);
    let keys = fleet.keys();
    let mut client = etcd(&endpoints).await;
    let leader_i = fleet.start("lead", "observer");
    wait_key(&mut client, &keys.leader(), "the first leader", |v| {
        v == "lead"
    })
    .await;
    let standby = fleet.start("standby", "observer");
    let followers = [fleet.start("f0", "follower"), fleet.start("f1", "follower")];
    let primary = lab_primary(E);
    let everyone = [&leader_i, &standby, &followers[0], &followers[1]];
    eventually(
        Duration::from_secs(30),
        "every instance on the primary",
        || all_route_to(&everyone, &primary),
    )
    .await;
    let (_, old_term) = get(&mut client, &keys.leader()).await.expect("leader key");

    leader_i.signal("-STOP");
    wait_key(&mut client, &keys.leader(), "the standby leads", |v| {
        v == "standby"
    })
    .await;
    let (_, new_term) = get(&mut client, &keys.leader()).await.expect("leader key");
    assert!(new_term > old_term);
    switchover(E).await;
    let new_primary = other(&primary);
    let fs = [&followers[0], &followers[1]];
    eventually(
        Duration::from_secs(30),
        "followers follow the new leader",
        || all_route_to(&fs, new_primary),
    )
    .await;
    let decision_key = keys.decision("r");
    let before = client.get(decision_key.as_str(), None).await.unwrap();
    let before_rev = before.kvs()[0].mod_revision();

    leader_i.signal("-CONT");
    // It wakes with a decision to publish (its checks see the switchover) and must refuse.
    eventually(
        Duration::from_secs(30),
        "the woken leader refuses to publish",
        || {
            let log = leader_i.log_text();
            if log.contains("Leadership lapsed") || log.contains("Publication refused") {
                Ok(())
            } else {
                Err("no refusal in its log yet".into())
            }
        },
    )
    .await;
    let after = client.get(decision_key.as_str(), None).await.unwrap();
    let record = DecisionRecord::parse("r", after.kvs()[0].value()).unwrap();
    assert_eq!(
        record.leader, "standby",
        "only the successor wrote: {record:?}"
    );
    assert_eq!(record.term, new_term);
    assert!(after.kvs()[0].mod_revision() >= before_rev);
    assert_eq!(
        all_route_to(&fs, new_primary),
        Ok(()),
        "no follower moved back"
    );

    // etcd's own fence: a write under the old term is refused by the transaction.
    let stale = DecisionRecord {
        term: old_term,
        leader: "lead".into(),
        ..record
    };
    let outcome = publisher::publish(&mut client, &keys, old_term, &stale)
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Fenced);
    let last = client.get(decision_key.as_str(), None).await.unwrap();
    assert_eq!(
        DecisionRecord::parse("r", last.kvs()[0].value())
            .unwrap()
            .leader,
        "standby"
    );
    // Put the lab back as it was found.
    switchover(E).await;
}

/// A follower ignores a record that is not JSON or names an unknown backend, says why in
/// its log, and keeps routing by the record in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_record_is_ignored_and_the_table_kept() {
    let Some(endpoints) = etcd_or_skip("fleet a_garbage_record_is_ignored") else {
        return;
    };
    let fleet = Fleet::new(endpoints.clone(), "garbage", E);
    let keys = fleet.keys();
    let mut client = etcd(&endpoints).await;
    let follower = fleet.start("f", "follower");
    let redis = [E.addr('A'), E.addr('B')];
    let good = format!(
        r#"{{"version":1,"cluster":"r","leader":"test","term":1,"primary":["B"],"unavailable":null,"holders":["B"],"replicas":["A"],"any":["B","A"],"split_brain":false,"primary_claims":1,"stale":[],"up":["A","B"],"confirmed_replicas":["A"],"lag_ms":{{"A":0}},"addresses":{{"A":"{}","B":"{}"}},"decided_at_ms":1}}"#,
        redis[0], redis[1]
    );
    client
        .put(keys.decision("r"), good.clone(), None)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "the follower applies the record",
        || match follower.primary().as_deref() {
            Some("B") => Ok(()),
            p => Err(format!("primary {p:?}")),
        },
    )
    .await;
    client
        .put(keys.decision("r"), "{not json", None)
        .await
        .unwrap();
    let unknown = good
        .replace(r#""primary":["B"]"#, r#""primary":["Z"]"#)
        .replace(r#""holders":["B"]"#, r#""holders":["Z"]"#);
    client.put(keys.decision("r"), unknown, None).await.unwrap();
    eventually(
        Duration::from_secs(20),
        "both records refused in the log",
        || {
            let log = follower.log_text();
            let n = log.matches("Ignored a fleet decision record").count();
            if n >= 2 && log.contains("not valid JSON") && log.contains("no backend Z") {
                Ok(())
            } else {
                Err(format!("{n} refusals logged"))
            }
        },
    )
    .await;
    assert_eq!(follower.primary().as_deref(), Some("B"), "table kept");
    let refused = http_get(follower.admin, "/metrics")
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("rolegate_fleet_records_refused_total "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .expect("rolegate_fleet_records_refused_total in /metrics");
    assert!(refused >= 2.0, "refused records counted: {refused}");
    let status: serde_json::Value =
        serde_json::from_str(&http_get(follower.admin, "/status").expect("/status")).unwrap();
    let c = &status["coordination"];
    assert_eq!(c["mode"], "follower", "{status}");
    assert_eq!(c["instance"], "f");
    assert_eq!(c["observing"], false);
    assert_eq!(c["leader"], false);
    assert_eq!(c["connected"], true);
    assert_eq!(c["source"], "etcd");
    assert!(
        c["decision_revision"].as_i64().is_some_and(|r| r > 0),
        "{c}"
    );
    assert_eq!(status["clusters"][0]["decided_by"], "test");
}

/// A TCP relay to one etcd member that the test can cut and restore, so one instance loses
/// etcd while the lab's cluster stays up for everyone else.
struct Relay {
    addr: SocketAddr,
    target: SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut r = Relay {
            addr,
            target,
            task: None,
        };
        r.task = Some(tokio::spawn(Self::serve(listener, target)));
        r
    }

    async fn serve(listener: tokio::net::TcpListener, target: SocketAddr) {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((mut client, _)) = listener.accept().await {
            conns.spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    }

    /// Drops the listener and every relayed connection.
    fn cut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    async fn restore(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(Instant::now() < deadline, "rebind {}: {e}", self.addr);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        self.task = Some(tokio::spawn(Self::serve(listener, self.target)));
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
    }
}

fn coordination(i: &Instance) -> serde_json::Value {
    let s = http_get(i.admin, "/status").unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&s).unwrap_or_default();
    v
}

/// Three followers lose etcd (their relay is cut) while an observer keeps it: `local` starts
/// its own checks and keeps routing, `last_known` keeps the last decision, `fail_closed`
/// holds primary connections; when etcd is back all three follow the fleet again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_on_lost_policy_does_what_it_says() {
    let Some(endpoints) = etcd_or_skip("fleet each_on_lost_policy") else {
        return;
    };
    let _lock = lab::lock();
    let fleet = Fleet::new(endpoints.clone(), "onlost", E);
    let keys = fleet.keys();
    let mut client = etcd(&endpoints).await;
    let obs = fleet.start("obs", "observer");
    wait_key(&mut client, &keys.leader(), "a leader", |v| v == "obs").await;
    let target: SocketAddr = endpoints[0].trim_start_matches("http://").parse().unwrap();
    let mut relays = Vec::new();
    let mut followers = Vec::new();
    for policy in ["local", "last_known", "fail_closed"] {
        let relay = Relay::start(target).await;
        let via = vec![format!("http://{}", relay.addr)];
        followers.push(fleet.start_with(policy, "follower", &via, policy));
        relays.push(relay);
    }
    let primary = lab_primary(E);
    let all: Vec<&Instance> = std::iter::once(&obs).chain(followers.iter()).collect();
    eventually(
        Duration::from_secs(30),
        "every instance on the primary",
        || all_route_to(&all, &primary),
    )
    .await;

    for r in &mut relays {
        r.cut();
    }
    let [local, last, closed] = [&followers[0], &followers[1], &followers[2]];
    eventually(Duration::from_secs(30), "each policy in force", || {
        let (l, k, c) = (
            coordination(local),
            coordination(last),
            coordination(closed),
        );
        let ok = l["coordination"]["observing"] == true
            && l["coordination"]["source"] == "local"
            && l["clusters"][0]["primary"] == primary.as_str()
            && k["coordination"]["connected"] == false
            && k["coordination"]["source"] == "last_known"
            && k["clusters"][0]["primary"] == primary.as_str()
            && c["coordination"]["connected"] == false
            && c["clusters"][0]["primary"].is_null()
            && c["listeners"][0]["unavailable"] == "no_primary";
        if ok {
            Ok(())
        } else {
            Err(format!(
                "local {} / last_known {} / fail_closed {} {}",
                l["coordination"], k["coordination"], c["coordination"], c["listeners"][0]
            ))
        }
    })
    .await;

    for r in &mut relays {
        r.restore().await;
    }
    eventually(
        Duration::from_secs(30),
        "all three follow the fleet again",
        || {
            let mut bad = Vec::new();
            for f in &followers {
                let v = coordination(f);
                let c = &v["coordination"];
                if !(c["connected"] == true
                    && c["observing"] == false
                    && c["source"] == "etcd"
                    && v["clusters"][0]["primary"] == primary.as_str())
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
        },
    )
    .await;
}

/// A follower that cannot connect to the decided primary reports it under its own lease, and
/// an observer re-checks that backend at once. The test holds the leader key itself, so its
/// record (B at a closed port) is the decision in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followers_failed_connect_makes_the_observers_recheck() {
    let Some(endpoints) = etcd_or_skip("fleet a_followers_failed_connect") else {
        return;
    };
    let fleet = Fleet::new(endpoints.clone(), "report", E);
    let keys = fleet.keys();
    let mut client = etcd(&endpoints).await;
    client.put(keys.leader(), "test", None).await.unwrap();
    // A port bound without listen(2): reserved (no instance gets it), and connects are refused.
    let reserved =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    reserved
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    let closed = reserved.local_addr().unwrap().as_socket().unwrap().port();
    let redis = [E.addr('A'), E.addr('B')];
    let record = format!(
        r#"{{"version":1,"cluster":"r","leader":"test","term":1,"primary":["B"],"unavailable":null,"holders":["B"],"replicas":[],"any":["B"],"split_brain":false,"primary_claims":1,"stale":[],"up":["B"],"confirmed_replicas":[],"lag_ms":{{}},"addresses":{{"A":"{}","B":"127.0.0.1:{closed}"}},"decided_at_ms":1}}"#,
        redis[0]
    );
    client.put(keys.decision("r"), record, None).await.unwrap();
    let observer = fleet.start("obs", "observer");
    let follower = fleet.start("f", "follower");
    eventually(
        Duration::from_secs(20),
        "the follower follows the record",
        || match follower.primary().as_deref() {
            Some("B") => Ok(()),
            p => Err(format!("primary {p:?}")),
        },
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "the observer's etcd session",
        || match coordination(&observer)["coordination"]["connected"].as_bool() {
            Some(true) => Ok(()),
            c => Err(format!("connected {c:?}")),
        },
    )
    .await;
    let status = coordination(&follower);
    let rw: SocketAddr = status["listeners"][0]["local_addr"]
        .as_str()
        .expect("local_addr")
        .parse()
        .unwrap();
    // Each connect to B fails and the client is closed by the proxy; clients retry, and so
    // does this one until the report is there.
    let report = keys.report("f", "r", "B");
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&mut client, &report).await.is_none() {
        assert!(
            Instant::now() < deadline,
            "no report at {report}; follower log:\n{}",
            follower.log_text()
        );
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            if let Ok(mut s) = tokio::net::TcpStream::connect(rw).await {
                let mut buf = [0u8; 1];
                let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
            }
        })
        .await;
    }
    let resp = client.get(report.as_str(), None).await.unwrap();
    assert_ne!(resp.kvs()[0].lease(), 0, "held by the follower's lease");
    eventually(Duration::from_secs(20), "the observer re-checks B", || {
        let log = observer.log_text();
        if log.contains("A follower could not connect; re-checking now.")
            && log.contains("backend=B")
        {
            Ok(())
        } else {
            Err("no re-check in the observer's log".into())
        }
    })
    .await;
}

fn backend_admin(i: &Instance, backend: &str) -> (String, String) {
    let v = coordination(i);
    let b = v["clusters"][0]["backends"]
        .as_array()
        .and_then(|bs| bs.iter().find(|b| b["name"] == backend).cloned())
        .unwrap_or_default();
    (
        b["admin"].as_str().unwrap_or("?").to_string(),
        b["admin_by"].as_str().unwrap_or("-").to_string(),
    )
}

/// `disable` sent to one instance is applied by every instance (which says who set it);
/// `enable` sent to another lifts it everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_actions_apply_fleet_wide() {
    let Some(endpoints) = etcd_or_skip("fleet admin_actions_apply_fleet_wide") else {
        return;
    };
    let _lock = lab::lock();
    let fleet = Fleet::new(endpoints.clone(), "admin", E);
    let keys = fleet.keys();
    let mut client = etcd(&endpoints).await;
    let obs = fleet.start("obs", "observer");
    wait_key(&mut client, &keys.leader(), "a leader", |v| v == "obs").await;
    let f = fleet.start("f", "follower");
    let primary = lab_primary(E);
    let replica = other(&primary);
    eventually(Duration::from_secs(30), "both on the primary", || {
        all_route_to(&[&obs, &f], &primary)
    })
    .await;
    let reply = http_post(obs.admin, &format!("/backends/r/{replica}/disable")).unwrap_or_default();
    assert!(is_2xx(&reply), "{reply}");
    eventually(
        Duration::from_secs(20),
        "disabled everywhere, set by obs",
        || {
            let seen = [backend_admin(&obs, replica), backend_admin(&f, replica)];
            if seen.iter().all(|(a, by)| a == "disabled" && by == "obs") {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    )
    .await;
    let reply = http_post(f.admin, &format!("/backends/r/{replica}/enable")).unwrap_or_default();
    assert!(is_2xx(&reply), "{reply}");
    eventually(
        Duration::from_secs(20),
        "enabled everywhere, set by f",
        || {
            let seen = [backend_admin(&obs, replica), backend_admin(&f, replica)];
            if seen.iter().all(|(a, by)| a == "enabled" && by == "f") {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    )
    .await;
    let (record, _) = get(&mut client, &keys.admin("r", replica))
        .await
        .expect("admin key");
    assert!(
        record.contains(r#""action":"enable""#) && record.contains(r#""by":"f""#),
        "{record}"
    );
}
