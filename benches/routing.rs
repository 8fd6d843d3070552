//! The data plane's routing decision: one `ArcSwap` load of the routing table, the listener's
//! route, and the candidate order (`Route::pick`), as `session::place` does per connection —
//! measured alone and while another thread keeps storing new tables (a supervisor publishing
//! role changes), which is the case the design promises never blocks a reader.
//!
//! Tables are built outside the timed closures.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tokio_util::sync::CancellationToken;

use rolegate::config::{Balance, ListenerName, RoleFilter, TransferMode};
use rolegate::metrics::Metrics;
use rolegate::routing::BackendKey;
use rolegate::routing::{
    new_router, BackendEntry, Candidate, Route, RouteSettings, RoutingTable, Unavailable,
};

const LISTENERS: usize = 8;
const BACKENDS: usize = 3;

/// Shared across generations, as the supervisor shares them: backends' session counts and the
/// listeners' round-robin cursors.
struct Fixture {
    metrics: Metrics,
    backends: Vec<Vec<Arc<BackendEntry>>>,
    cursors: Vec<Arc<AtomicUsize>>,
    settings: Arc<RouteSettings>,
    names: Vec<ListenerName>,
}

impl Fixture {
    fn new() -> Fixture {
        let backends = (0..LISTENERS)
            .map(|l| {
                (0..BACKENDS)
                    .map(|b| {
                        Arc::new(BackendEntry {
                            key: BackendKey {
                                cluster: format!("c{l}").as_str().into(),
                                backend: format!("b{b}").as_str().into(),
                            },
                            addr: format!("10.0.{l}.{b}:5432").parse().unwrap(),
                            active: Arc::new(AtomicUsize::new(b)),
                        })
                    })
                    .collect()
            })
            .collect();
        Fixture {
            metrics: Metrics::new(),
            backends,
            cursors: (0..LISTENERS)
                .map(|_| Arc::new(AtomicUsize::new(0)))
                .collect(),
            settings: Arc::new(RouteSettings {
                connect_timeout: Duration::from_secs(2),
                retries: 2,
                idle_timeout: None,
                queue_timeout: Duration::from_secs(5),
                transfer: TransferMode::Auto,
                session_level: tracing::Level::INFO,
                proxy_protocol: Default::default(),
            }),
            names: (0..LISTENERS)
                .map(|l| format!("l{l}").as_str().into())
                .collect(),
        }
    }

    /// Listener `l`: even ones are primary routes (ordered), odd ones replica routes balanced
    /// with `least_conn` (the costlier selection: it reads every candidate's session count).
    fn table(&self, generation: u64) -> RoutingTable {
        let mut routes = HashMap::new();
        for (l, name) in self.names.iter().enumerate() {
            let primary = l % 2 == 0;
            let candidates = self.backends[l]
                .iter()
                .map(|b| Candidate {
                    backend: b.clone(),
                    guard: CancellationToken::new(),
                    metrics: self
                        .metrics
                        .session_metrics(name.as_str(), b.key.backend.as_str()),
                })
                .collect();
            let route = Route::new(
                format!("c{l}").as_str().into(),
                self.settings.clone(),
                if primary {
                    RoleFilter::Primary
                } else {
                    RoleFilter::Replica
                },
                candidates,
                Unavailable::NoPrimary,
                if primary {
                    Balance::RoundRobin
                } else {
                    Balance::LeastConn
                },
                self.cursors[l].clone(),
            );
            routes.insert(name.clone(), route);
        }
        RoutingTable::new(generation, routes)
    }
}

/// What a session does with a snapshot: its route, then the first candidate whose guard is
/// not cancelled (the address it connects to).
fn decide(table: &RoutingTable, name: &ListenerName) -> Option<std::net::SocketAddr> {
    let route = table.route(name)?;
    route
        .pick(1 + route.settings.retries as usize)
        .find(|c| !c.guard.is_cancelled())
        .map(|c| c.backend.addr)
}

fn routing(c: &mut Criterion) {
    let fx = Arc::new(Fixture::new());
    let (writer, router) = new_router();
    writer.store(fx.table(1));
    let primary = fx.names[0].clone();
    let replica = fx.names[1].clone();

    let mut g = c.benchmark_group("routing");
    g.bench_function("load+pick primary, quiet", |b| {
        b.iter(|| {
            let t = router.load();
            black_box(decide(&t, black_box(&primary)))
        })
    });
    g.bench_function("load+pick least_conn replica, quiet", |b| {
        b.iter(|| {
            let t = router.load();
            black_box(decide(&t, black_box(&replica)))
        })
    });
    // The whole per-connection read side of session::place: subscribe to changes, load, pick.
    g.bench_function("subscribe+load+pick, quiet", |b| {
        b.iter(|| {
            let rx = router.subscribe();
            let t = router.load();
            black_box((decide(&t, black_box(&primary)), rx))
        })
    });

    // A writer thread building and storing a fresh table as fast as it can (far more often than
    // any supervisor would: every store is a role change). The last `Arc` of a replaced table is
    // dropped by whoever holds it last, sometimes the reader: that cost is part of the figure.
    let stop = Arc::new(AtomicBool::new(false));
    let stores = Arc::new(AtomicUsize::new(0));
    let writer_thread = {
        let (fx, stop, stores) = (fx.clone(), stop.clone(), stores.clone());
        thread::spawn(move || {
            let mut generation = 1;
            while !stop.load(Ordering::Relaxed) {
                generation += 1;
                writer.store(fx.table(generation));
                stores.fetch_add(1, Ordering::Relaxed);
            }
            writer
        })
    };
    g.bench_function("load+pick primary, writer storing", |b| {
        b.iter(|| {
            let t = router.load();
            black_box(decide(&t, black_box(&primary)))
        })
    });
    g.bench_function("subscribe+load+pick, writer storing", |b| {
        b.iter(|| {
            let rx = router.subscribe();
            let t = router.load();
            black_box((decide(&t, black_box(&primary)), rx))
        })
    });
    stop.store(true, Ordering::Relaxed);
    let _writer = writer_thread.join().expect("writer thread");
    g.finish();
    eprintln!(
        "routing: the writer stored {} tables during the contended benchmarks",
        stores.load(Ordering::Relaxed)
    );

    // The write side for scale: building and storing one table (the supervisor's cost per change).
    let (writer, _router) = new_router();
    let mut g = c.benchmark_group("routing table store");
    let mut generation = 1;
    g.bench_function("store prebuilt table (8 listeners x 3 backends)", |b| {
        b.iter_batched(
            || {
                generation += 1;
                fx.table(generation)
            },
            |t| writer.store(t),
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);
