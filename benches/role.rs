//! The per-backend role state machine (`BackendMachine::observe`): one check result in, one
//! transition out. It runs once per check per backend (4 per second per backend at the default
//! 250ms interval), so it only has to be cheap enough never to matter; this keeps it honest.
//!
//! Machines and observation sequences are built outside the timed closures (`iter_batched`).

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use tokio::time::Instant;

use rolegate::control_plane::checks::{
    CheckFailure, Facts, FailureReason, ObservedRole, ReplicaFacts,
};
use rolegate::control_plane::role::{BackendMachine, Thresholds};

fn thresholds() -> Thresholds {
    Thresholds {
        rise: NonZeroU32::new(2).unwrap(),
        fall: NonZeroU32::new(2).unwrap(),
    }
}

fn primary() -> Facts {
    Facts {
        role: ObservedRole::Primary,
        replica: None,
        write_position: Some(0x3_0000_0000),
        timeline: Some(3),
    }
}

fn replica() -> Facts {
    Facts {
        role: ObservedRole::Replica,
        replica: Some(ReplicaFacts {
            lag: Some(Duration::from_millis(12)),
            position: Some(0x2_ffff_f000),
            link_up: true,
        }),
        write_position: None,
        timeline: Some(3),
    }
}

/// A machine already confirmed primary and up.
fn confirmed_primary(now: Instant) -> BackendMachine {
    let mut m = BackendMachine::default();
    for _ in 0..2 {
        m.observe(Ok(&primary()), thresholds(), now);
    }
    m
}

fn role(c: &mut Criterion) {
    let now = Instant::now();
    let t = thresholds();
    let mut g = c.benchmark_group("role machine");

    // The common case: a steady primary observed again (no transition).
    g.bench_function("observe steady primary", |b| {
        let facts = primary();
        b.iter_batched_ref(
            || confirmed_primary(now),
            |m| black_box(m.observe(Ok(black_box(&facts)), t, now)),
            BatchSize::SmallInput,
        )
    });

    // A steady replica with replication facts (the clone of `Facts` is the only copy).
    g.bench_function("observe steady replica", |b| {
        let facts = replica();
        b.iter_batched_ref(
            || {
                let mut m = BackendMachine::default();
                m.observe(Ok(&replica()), t, now);
                m.observe(Ok(&replica()), t, now);
                m
            },
            |m| black_box(m.observe(Ok(black_box(&facts)), t, now)),
            BatchSize::SmallInput,
        )
    });

    // The demotion: a confirmed primary answers "in recovery" (a transition, at once).
    g.bench_function("observe demotion", |b| {
        let facts = replica();
        b.iter_batched_ref(
            || confirmed_primary(now),
            |m| black_box(m.observe(Ok(black_box(&facts)), t, now)),
            BatchSize::SmallInput,
        )
    });

    // A failed check (clones the failure's detail string into the machine).
    g.bench_function("observe failure", |b| {
        let failure = CheckFailure::new(FailureReason::Timeout, "no answer within 500ms");
        b.iter_batched_ref(
            || confirmed_primary(now),
            |m| black_box(m.observe(Err(black_box(&failure)), t, now)),
            BatchSize::SmallInput,
        )
    });

    // A whole switchover as one backend sees it: primary, demoted, down, back as replica,
    // promoted again after `rise` claims — 10 observations.
    g.bench_function("switchover sequence (10 observations)", |b| {
        let failure = CheckFailure::new(FailureReason::Refused, "connection refused");
        let seq: Vec<Result<Facts, CheckFailure>> = vec![
            Ok(primary()),
            Ok(replica()),
            Err(failure.clone()),
            Err(failure.clone()),
            Err(failure),
            Ok(replica()),
            Ok(replica()),
            Ok(replica()),
            Ok(primary()),
            Ok(primary()),
        ];
        b.iter_batched_ref(
            || confirmed_primary(now),
            |m| {
                for r in &seq {
                    black_box(m.observe(r.as_ref(), t, now));
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, role);
criterion_main!(benches);
