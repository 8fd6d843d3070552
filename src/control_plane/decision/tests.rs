use super::*;
use crate::control_plane::checks::{Facts, ReplicaFacts};

pub(super) struct B {
    name: BackendName,
    health: Health,
    role: Role,
    admin: AdminMode,
    facts: Option<Facts>,
    suspect: bool,
}

pub(super) fn primary(name: &str) -> B {
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
        suspect: false,
    }
}

pub(super) fn replica(name: &str, lag: Option<u64>, position: Option<u64>) -> B {
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
        suspect: false,
    }
}

pub(super) fn down(mut b: B) -> B {
    b.health = Health::Down;
    b.facts = None;
    b
}

pub(super) fn policy(split_brain: SplitBrainPolicy) -> ClusterPolicy {
    ClusterPolicy {
        protocol: Protocol::Postgres,
        split_brain,
        max_replica_lag: Duration::from_secs(10),
        authority: None,
    }
}

pub(super) fn run(p: ClusterPolicy, bs: &[B], mem: &mut ClusterMemory) -> Decision {
    let views: Vec<BackendView<'_>> = bs
        .iter()
        .map(|b| BackendView {
            name: &b.name,
            health: b.health,
            role: b.role,
            admin: b.admin,
            facts: b.facts.as_ref(),
            suspect: b.suspect,
        })
        .collect();
    decide(p, &views, mem)
}

pub(super) fn names(v: &[&str]) -> Vec<BackendName> {
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

fn suspect(mut b: B) -> B {
    b.suspect = true;
    b.facts = None;
    b
}

/// Hold on suspicion, as a table: each row is one decision after the previous rows, starting
/// from `a` routed as primary and `b` a replica.
#[test]
fn suspect_primary_is_held_and_does_not_veto_a_confirmed_successor() {
    let p = policy(SplitBrainPolicy::FailClosed);
    type Row = (
        &'static str,
        fn() -> Vec<B>,
        Result<Vec<BackendName>, Unavailable>,
        &'static [&'static str], // holders
        bool,                    // split brain
        &'static [&'static str], // stale after the row
    );
    let rows: [Row; 6] = [
        (
            "a stops answering: held, its sessions stay",
            || vec![suspect(primary("a")), replica("b", Some(0), None)],
            Err(Unavailable::Held),
            &["a"],
            false,
            &[],
        ),
        (
            "a answers again: released to a",
            || vec![primary("a"), replica("b", Some(0), None)],
            Ok(names(&["a"])),
            &["a"],
            false,
            &[],
        ),
        (
            "a silent again",
            || vec![suspect(primary("a")), replica("b", Some(0), None)],
            Err(Unavailable::Held),
            &["a"],
            false,
            &[],
        ),
        (
            "b confirmed primary while a is silent: routed at once, no split brain",
            || vec![suspect(primary("a")), primary("b")],
            Ok(names(&["b"])),
            &["b"],
            false,
            &["a"],
        ),
        (
            "a answers claiming primary: stale, never routed, reported",
            || vec![primary("a"), primary("b")],
            Ok(names(&["b"])),
            &["b"],
            true,
            &["a"],
        ),
        (
            "a rejoins as a replica: no longer stale",
            || vec![replica("a", Some(0), None), primary("b")],
            Ok(names(&["b"])),
            &["b"],
            false,
            &[],
        ),
    ];
    let mut mem = ClusterMemory::default();
    run(p, &[primary("a"), replica("b", Some(0), None)], &mut mem);
    for (what, backends, routed, holders, split, stale) in rows {
        let d = run(p, &backends(), &mut mem);
        assert_eq!(d.primary, routed, "{what}");
        assert_eq!(d.holders, names(holders), "{what}");
        assert_eq!(d.split_brain, split, "{what}");
        let now: Vec<BackendName> = mem.stale.iter().cloned().collect();
        assert_eq!(now, names(stale), "{what}");
    }
}

#[test]
fn a_silent_claim_still_vetoes_nothing_but_two_answering_primaries_are_split_brain() {
    let p = policy(SplitBrainPolicy::FailClosed);
    // Without the suspicion rule a's last claim would make this a split brain.
    let mut mem = ClusterMemory::default();
    run(p, &[primary("a"), replica("b", Some(0), None)], &mut mem);
    let d = run(p, &[primary("a"), primary("b")], &mut mem);
    assert_eq!(d.primary, Err(Unavailable::SplitBrain), "both answer");
    // Two silent primaries and no answering one: still undecidable.
    let d = run(
        p,
        &[suspect(primary("a")), suspect(primary("b"))],
        &mut ClusterMemory::default(),
    );
    assert_eq!(d.primary, Err(Unavailable::SplitBrain));
    // A suspect primary that is drained: held (it is the primary), not routed.
    let mut a = suspect(primary("a"));
    a.admin = AdminMode::Drain;
    let d = run(p, &[a], &mut ClusterMemory::default());
    assert_eq!(d.primary, Err(Unavailable::Held));
}

#[test]
fn operator_hold_lasts_until_another_primary_is_routed() {
    let p = policy(SplitBrainPolicy::FailClosed);
    let mut mem = ClusterMemory::default();
    run(p, &[primary("a"), replica("b", Some(0), None)], &mut mem);
    mem.hold = Some(OperatorHold {
        primary: Some("a".into()),
    });
    let d = run(p, &[primary("a"), replica("b", Some(0), None)], &mut mem);
    assert_eq!(d.primary, Err(Unavailable::Held), "a still primary: held");
    assert_eq!(d.holders, names(&["a"]), "a's sessions stay");
    let d = run(
        p,
        &[replica("a", Some(0), None), replica("b", Some(0), None)],
        &mut mem,
    );
    assert_eq!(d.primary, Err(Unavailable::Held), "no primary: still held");
    let d = run(p, &[replica("a", Some(0), None), primary("b")], &mut mem);
    assert_eq!(d.primary, Ok(names(&["b"])));
    assert!(d.events.contains(&DecisionEvent::HoldEnded {
        from: Some("a".into()),
        to: "b".into()
    }));
    assert!(mem.hold.is_none());
}
