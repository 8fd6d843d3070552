use super::*;
use crate::control_plane::checks::{Facts, ReplicaFacts};

struct B {
    name: BackendName,
    health: Health,
    role: Role,
    admin: AdminMode,
    facts: Option<Facts>,
}

fn primary(name: &str) -> B {
    B {
        name: name.into(),
        health: Health::Up,
        role: Role::Primary,
        admin: AdminMode::Enabled,
        facts: Some(Facts {
            role: ObservedRole::Primary,
            replica: None,
            write_position: Some(1000),
            timeline: Some(1),
        }),
    }
}

fn replica(name: &str, lag: Option<u64>, position: Option<u64>) -> B {
    B {
        name: name.into(),
        health: Health::Up,
        role: Role::Replica,
        admin: AdminMode::Enabled,
        facts: Some(Facts {
            role: ObservedRole::Replica,
            replica: Some(ReplicaFacts {
                lag: lag.map(Duration::from_secs),
                position,
                link_up: true,
            }),
            write_position: None,
            timeline: Some(1),
        }),
    }
}

fn down(mut b: B) -> B {
    b.health = Health::Down;
    b.facts = None;
    b
}

fn policy(split_brain: SplitBrainPolicy) -> ClusterPolicy {
    ClusterPolicy {
        protocol: Protocol::Postgres,
        split_brain,
        max_replica_lag: Duration::from_secs(10),
    }
}

fn run(p: ClusterPolicy, bs: &[B], mem: &mut ClusterMemory) -> Decision {
    let views: Vec<BackendView<'_>> = bs
        .iter()
        .map(|b| BackendView {
            name: &b.name,
            health: b.health,
            role: b.role,
            admin: b.admin,
            facts: b.facts.as_ref(),
        })
        .collect();
    decide(p, &views, mem)
}

fn names(v: &[&str]) -> Vec<BackendName> {
    v.iter().map(|s| BackendName::from(*s)).collect()
}

#[test]
fn one_primary_and_fresh_replica() {
    let mut mem = ClusterMemory::default();
    let d = run(
        policy(SplitBrainPolicy::FailClosed),
        &[primary("a"), replica("b", Some(1), None)],
        &mut mem,
    );
    assert_eq!(d.primary, Ok(names(&["a"])));
    assert_eq!(d.replicas, names(&["b"]));
    assert_eq!(d.any, names(&["a", "b"]));
    assert!(!d.split_brain);
    assert_eq!(d.primary_claims, 1);
    assert_eq!(
        d.events,
        [DecisionEvent::PrimaryChanged {
            from: None,
            to: "a".into()
        }]
    );
}

#[test]
fn lagging_or_unknown_lag_replicas_do_not_qualify_unless_caught_up_by_position() {
    let mut mem = ClusterMemory::default();
    let d = run(
        policy(SplitBrainPolicy::FailClosed),
        &[
            primary("a"),
            replica("late", Some(60), Some(10)),
            replica("stopped", None, None),
            replica("idle", Some(600), Some(1000)),
        ],
        &mut mem,
    );
    assert_eq!(d.replicas, names(&["idle"]));
    assert_eq!(d.lag[2], ("idle".into(), Some(Duration::ZERO)));
}

#[test]
fn no_primary_is_unavailable() {
    let mut mem = ClusterMemory::default();
    let d = run(
        policy(SplitBrainPolicy::FailClosed),
        &[replica("a", Some(0), None), down(primary("b"))],
        &mut mem,
    );
    assert_eq!(d.primary, Err(Unavailable::NoPrimary));
    assert_eq!(d.primary_claims, 0);
}

#[test]
fn split_brain_policies() {
    let both = [primary("a"), primary("b")];
    let mut mem = ClusterMemory::default();
    let d = run(policy(SplitBrainPolicy::FailClosed), &both, &mut mem);
    assert_eq!(d.primary, Err(Unavailable::SplitBrain));
    assert!(d.split_brain);
    assert_eq!(d.primary_claims, 2);

    // keep_current: the one routed before keeps the route.
    let mut mem = ClusterMemory::default();
    run(
        policy(SplitBrainPolicy::KeepCurrent),
        &[primary("a"), replica("b", Some(0), None)],
        &mut mem,
    );
    let d = run(policy(SplitBrainPolicy::KeepCurrent), &both, &mut mem);
    assert_eq!(d.primary, Ok(names(&["a"])));
    assert!(d.split_brain);
    // ... and with no history it fails closed.
    let d = run(
        policy(SplitBrainPolicy::KeepCurrent),
        &both,
        &mut ClusterMemory::default(),
    );
    assert_eq!(d.primary, Err(Unavailable::SplitBrain));

    // highest_timeline: the promoted node is on a newer timeline.
    let mut newer = primary("b");
    newer.facts.as_mut().unwrap().timeline = Some(2);
    let d = run(
        policy(SplitBrainPolicy::HighestTimeline),
        &[primary("a"), newer],
        &mut ClusterMemory::default(),
    );
    assert_eq!(d.primary, Ok(names(&["b"])));
    // A tie fails closed.
    let d = run(
        policy(SplitBrainPolicy::HighestTimeline),
        &both,
        &mut ClusterMemory::default(),
    );
    assert_eq!(d.primary, Err(Unavailable::SplitBrain));
}

#[test]
fn returning_old_primary_after_observed_handover_is_stale_until_seen_as_replica() {
    let p = policy(SplitBrainPolicy::FailClosed);
    let mut mem = ClusterMemory::default();
    run(p, &[primary("a"), replica("b", Some(0), None)], &mut mem);
    // a goes down while primary; b is then confirmed primary.
    run(
        p,
        &[down(primary("a")), replica("b", Some(0), None)],
        &mut mem,
    );
    let d = run(p, &[down(primary("a")), primary("b")], &mut mem);
    assert_eq!(d.primary, Ok(names(&["b"])));
    assert!(d.events.contains(&DecisionEvent::StaleDetected("a".into())));
    // a wakes up still claiming primary: never routed, reported as split brain.
    let d = run(p, &[primary("a"), primary("b")], &mut mem);
    assert_eq!(
        d.primary,
        Ok(names(&["b"])),
        "the confirmed primary keeps serving"
    );
    assert!(d.split_brain);
    assert_eq!(d.primary_claims, 2);
    assert!(!d.any.contains(&"a".into()));
    // Rebuilt as a replica: usable again.
    let d = run(p, &[replica("a", Some(0), None), primary("b")], &mut mem);
    assert!(d.events.contains(&DecisionEvent::StaleCleared("a".into())));
    assert_eq!(d.replicas, names(&["a"]));
    assert!(!d.split_brain);
}

#[test]
fn primary_that_returns_before_any_replacement_is_not_stale() {
    let p = policy(SplitBrainPolicy::FailClosed);
    let mut mem = ClusterMemory::default();
    run(p, &[primary("a"), replica("b", Some(0), None)], &mut mem);
    let d = run(
        p,
        &[down(primary("a")), replica("b", Some(0), None)],
        &mut mem,
    );
    assert_eq!(d.primary, Err(Unavailable::NoPrimary));
    let d = run(p, &[primary("a"), replica("b", Some(0), None)], &mut mem);
    assert_eq!(d.primary, Ok(names(&["a"])));
    assert!(mem.stale.is_empty());
    // It was already the routed primary: no change event.
    assert!(d.events.is_empty());
}

#[test]
fn drained_primary_is_not_routed_but_still_counted() {
    let mut a = primary("a");
    a.admin = AdminMode::Drain;
    let d = run(
        policy(SplitBrainPolicy::FailClosed),
        &[a],
        &mut ClusterMemory::default(),
    );
    assert_eq!(d.primary, Err(Unavailable::NoPrimary));
    assert_eq!(d.primary_claims, 1);
}

#[test]
fn tcp_clusters_route_every_up_backend_in_config_order() {
    let p = ClusterPolicy {
        protocol: Protocol::Tcp,
        ..policy(SplitBrainPolicy::FailClosed)
    };
    let d = run(
        p,
        &[down(primary("a")), primary("b"), primary("c")],
        &mut ClusterMemory::default(),
    );
    assert_eq!(d.primary, Ok(names(&["b", "c"])));
    assert!(!d.split_brain);
    let d = run(p, &[down(primary("a"))], &mut ClusterMemory::default());
    assert_eq!(d.primary, Err(Unavailable::NoBackend));
}
