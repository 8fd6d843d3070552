//! Policy 7 (authorities, `authority.rs`) as a table of cases, then the sequences: an
//! announced switchover, a disagreement that must not mark anyone stale.

use super::tests::{down, names, policy, primary, replica, run};
use super::*;
use crate::control_plane::authority::Verdict;

fn with(on_lost: OnAuthorityLost) -> ClusterPolicy {
    ClusterPolicy {
        authority: Some(on_lost),
        ..policy(SplitBrainPolicy::FailClosed)
    }
}

fn told(verdict: Option<Verdict>) -> ClusterMemory {
    ClusterMemory {
        authority: AuthorityInput {
            verdict,
            ..AuthorityInput::default()
        },
        ..ClusterMemory::default()
    }
}

fn leader(name: &str) -> Option<Verdict> {
    Some(Verdict::Leader(name.into()))
}

fn unreachable() -> Option<Verdict> {
    Some(Verdict::Unreachable {
        reason: "connection refused".into(),
    })
}

/// (what, on_authority_lost, verdict, routed backend, gate)
type Row = (
    &'static str,
    OnAuthorityLost,
    Option<Verdict>,
    Option<&'static str>,
    Gate,
);

#[test]
fn a_node_is_routed_only_when_the_checks_and_the_authority_agree() {
    use OnAuthorityLost::{FailClosed, TrustChecks};
    let no_leader = Some(Verdict::NoLeader {
        reason: "race".into(),
    });
    let unknown = Some(Verdict::UnknownMember {
        name: "pg-9".into(),
    });
    let rows: [Row; 10] = [
        ("agree", TrustChecks, leader("a"), Some("a"), Gate::Agrees),
        (
            "agree, fail_closed",
            FailClosed,
            leader("a"),
            Some("a"),
            Gate::Agrees,
        ),
        (
            "authority names the replica",
            TrustChecks,
            leader("b"),
            None,
            Gate::Refused(Refusal::Disagrees),
        ),
        (
            "no leader",
            TrustChecks,
            no_leader,
            None,
            Gate::Refused(Refusal::NoLeader),
        ),
        (
            "unknown member",
            TrustChecks,
            unknown,
            None,
            Gate::Refused(Refusal::UnknownMember),
        ),
        (
            "unreachable, trust_checks",
            TrustChecks,
            unreachable(),
            Some("a"),
            Gate::TrustChecks,
        ),
        (
            "unreachable, fail_closed",
            FailClosed,
            unreachable(),
            None,
            Gate::Refused(Refusal::Lost),
        ),
        (
            "no report yet, trust_checks",
            TrustChecks,
            None,
            Some("a"),
            Gate::TrustChecks,
        ),
        (
            "no report yet, fail_closed",
            FailClosed,
            None,
            None,
            Gate::Refused(Refusal::Lost),
        ),
        (
            "authority names a node that is down",
            TrustChecks,
            leader("c"),
            None,
            Gate::Refused(Refusal::Disagrees),
        ),
    ];
    for (what, on_lost, verdict, routed, gate) in rows {
        let mut mem = told(verdict);
        let d = run(
            with(on_lost),
            &[
                primary("a"),
                replica("b", Some(0), None),
                down(primary("c")),
            ],
            &mut mem,
        );
        match routed {
            Some(b) => {
                assert_eq!(d.primary, Ok(names(&[b])), "{what}");
                assert_eq!(mem.routed_primary, Some(b.into()), "{what}");
            }
            None => {
                assert_eq!(
                    d.primary,
                    Err(Unavailable::Held),
                    "{what}: held, not routed"
                );
                assert_eq!(mem.routed_primary, None, "{what}: nothing observed");
                assert!(d.events.is_empty(), "{what}: {:?}", d.events);
            }
        }
        assert_eq!(mem.authority.gate, Some(gate), "{what}");
        // The authority naming another node takes a's sessions (they close like a demoted
        // node's); any other refusal names no successor and leaves them. Replicas still serve.
        let holders: &[&str] = match gate {
            Gate::Refused(Refusal::Disagrees) => &[],
            _ => &["a"],
        };
        assert_eq!(d.holders, names(holders), "{what}");
        assert_eq!(d.replicas, names(&["b"]), "{what}");
    }
}

#[test]
fn without_an_authority_the_verdict_weighs_nothing() {
    let mut mem = told(leader("b"));
    let d = run(
        policy(SplitBrainPolicy::FailClosed),
        &[primary("a"), replica("b", Some(0), None)],
        &mut mem,
    );
    assert_eq!(d.primary, Ok(names(&["a"])));
    assert_eq!(mem.authority.gate, None);
}

#[test]
fn the_authority_never_makes_a_primary_of_a_node_the_checks_do_not_confirm() {
    for on_lost in [OnAuthorityLost::TrustChecks, OnAuthorityLost::FailClosed] {
        // Zero primaries by the checks: no route, whatever the authority says.
        let mut mem = told(leader("b"));
        let d = run(
            with(on_lost),
            &[replica("a", Some(0), None), replica("b", Some(0), None)],
            &mut mem,
        );
        assert_eq!(d.primary, Err(Unavailable::NoPrimary));
        assert_eq!(mem.authority.gate, None);
        // Two primaries, the authority naming one: it saw the handover (Sentinel leaves the
        // old master answering master ~10 s after the promotion), the named one is routed.
        let mut mem = told(leader("b"));
        let d = run(with(on_lost), &[primary("a"), primary("b")], &mut mem);
        assert_eq!(d.primary, Ok(names(&["b"])));
        // Naming neither: still the split-brain policy's case.
        let mut mem = told(Some(Verdict::NoLeader { reason: "r".into() }));
        let d = run(with(on_lost), &[primary("a"), primary("b")], &mut mem);
        assert_eq!(d.primary, Err(Unavailable::SplitBrain));
    }
}

#[test]
fn an_announced_switchover_holds_until_another_primary_passes_the_gate() {
    let p = with(OnAuthorityLost::TrustChecks);
    let mut mem = told(leader("a"));
    let d = run(p, &[primary("a"), replica("b", Some(0), None)], &mut mem);
    assert_eq!(d.primary, Ok(names(&["a"])));
    // The failover key appears: the supervisor records the primary at that time.
    mem.authority.hold = Some(OperatorHold {
        primary: mem.routed_primary.clone(),
    });
    let d = run(p, &[primary("a"), replica("b", Some(0), None)], &mut mem);
    assert_eq!(
        d.primary,
        Err(Unavailable::Held),
        "old primary still claims"
    );
    assert_eq!(d.holders, names(&["a"]), "its sessions stay");
    // a demotes: nobody is primary; still held (queue), not no_primary.
    mem.authority.verdict = Some(Verdict::NoLeader {
        reason: "a released the lock".into(),
    });
    let both_replicas = [replica("a", Some(0), None), replica("b", Some(0), None)];
    let d = run(p, &both_replicas, &mut mem);
    assert_eq!(d.primary, Err(Unavailable::Held));
    // b is primary by the checks before the leader key names it: not routed yet.
    let d = run(p, &[replica("a", Some(0), None), primary("b")], &mut mem);
    assert_eq!(d.primary, Err(Unavailable::Held));
    assert!(mem.authority.hold.is_some());
    // The leader key names b: routed, and the hold ends.
    mem.authority.verdict = leader("b");
    let d = run(p, &[replica("a", Some(0), None), primary("b")], &mut mem);
    assert_eq!(d.primary, Ok(names(&["b"])));
    assert!(d
        .events
        .contains(&DecisionEvent::AuthorityHoldEnded { to: "b".into() }));
    assert!(mem.authority.hold.is_none());
    assert!(
        mem.hold.is_none(),
        "an operator hold is not the authority's"
    );
}

#[test]
fn an_announced_switchover_does_not_end_an_operator_hold_nor_the_reverse() {
    let p = with(OnAuthorityLost::TrustChecks);
    let mut mem = told(leader("a"));
    run(p, &[primary("a"), replica("b", Some(0), None)], &mut mem);
    mem.hold = Some(OperatorHold {
        primary: Some("a".into()),
    });
    mem.authority.hold = Some(OperatorHold {
        primary: Some("a".into()),
    });
    // The operator hold is over for b, but the authority still names a: not routed.
    let d = run(p, &[replica("a", Some(0), None), primary("b")], &mut mem);
    assert_eq!(d.primary, Err(Unavailable::Held));
    assert!(mem.hold.is_some() && mem.authority.hold.is_some());
    mem.authority.verdict = leader("b");
    let d = run(p, &[replica("a", Some(0), None), primary("b")], &mut mem);
    assert_eq!(d.primary, Ok(names(&["b"])));
    assert!(d.events.contains(&DecisionEvent::HoldEnded {
        from: Some("a".into()),
        to: "b".into()
    }));
    assert!(d
        .events
        .contains(&DecisionEvent::AuthorityHoldEnded { to: "b".into() }));
}

#[test]
fn a_disagreement_observes_no_handover() {
    let p = with(OnAuthorityLost::TrustChecks);
    let mut mem = told(leader("a"));
    run(p, &[primary("a"), replica("b", Some(0), None)], &mut mem);
    // a goes down; b claims primary, but the authority still names a.
    run(
        p,
        &[down(primary("a")), replica("b", Some(0), None)],
        &mut mem,
    );
    let d = run(p, &[down(primary("a")), primary("b")], &mut mem);
    assert_eq!(d.primary, Err(Unavailable::Held));
    assert!(mem.stale.is_empty(), "no handover observed: a is not stale");
    assert_eq!(mem.routed_primary, Some("a".into()));
    // The authority moves to b: routed, and a (replaced while down) is stale.
    mem.authority.verdict = leader("b");
    let d = run(p, &[down(primary("a")), primary("b")], &mut mem);
    assert_eq!(d.primary, Ok(names(&["b"])));
    assert!(d.events.contains(&DecisionEvent::StaleDetected("a".into())));
    // a returns claiming primary and the authority named it again (a stale report):
    // a is stale, so it is not routed; b the authority no longer names: held.
    mem.authority.verdict = leader("a");
    let d = run(p, &[primary("a"), primary("b")], &mut mem);
    assert_eq!(d.primary, Err(Unavailable::Held));
    assert!(mem.stale.contains(&BackendName::from("a")));
}
