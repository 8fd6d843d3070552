//! Choosing among a route's candidates: the order in which a new connection tries them.
//!
//! Primary routes are ordered (the first candidate is the primary; for tcp clusters the order
//! of the config is a failover order). Replica and `any` routes spread connections with
//! `round_robin` (a shared cursor, one relaxed `fetch_add` per connection) or `least_conn`
//! (fewest open sessions first, ties broken by the cursor so that equal backends share load).
//! Either way every candidate after the first is a retry target, in a fixed rotation.

use std::sync::atomic::Ordering;

use super::{Candidate, Route};
use crate::config::Balance;

impl Route {
    /// The candidates to try for one new connection, first choice first, at most `limit`.
    pub fn pick(&self, limit: usize) -> impl Iterator<Item = &Candidate> + '_ {
        let n = self.candidates.len();
        let start = if n <= 1 || self.ordered {
            0
        } else {
            let turn = self.cursor.fetch_add(1, Ordering::Relaxed);
            match self.balance {
                Balance::RoundRobin => turn % n,
                Balance::LeastConn => self.least_loaded(turn % n),
            }
        };
        (0..n.min(limit)).map(move |i| &self.candidates[(start + i) % n])
    }

    /// Index of the candidate with the fewest open sessions, scanning from `from` so that ties
    /// rotate instead of always landing on the first backend.
    fn least_loaded(&self, from: usize) -> usize {
        let n = self.candidates.len();
        let mut best = from;
        let mut best_load = usize::MAX;
        for i in 0..n {
            let idx = (from + i) % n;
            let load = self.candidates[idx].backend.active.load(Ordering::Relaxed);
            if load < best_load {
                best = idx;
                best_load = load;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::config::RoleFilter;
    use crate::metrics::Metrics;
    use crate::routing::BackendKey;
    use crate::routing::{BackendEntry, Unavailable};

    fn route(n: usize, serves: RoleFilter, balance: Balance) -> Route {
        let metrics = Metrics::new();
        let candidates = (0..n)
            .map(|i| Candidate {
                backend: Arc::new(BackendEntry {
                    key: BackendKey {
                        cluster: "c".into(),
                        backend: format!("b{i}").as_str().into(),
                    },
                    addr: format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
                    active: Arc::new(AtomicUsize::new(0)),
                }),
                guard: CancellationToken::new(),
                metrics: metrics.session_metrics("l", &format!("b{i}")),
            })
            .collect();
        let settings = Arc::new(crate::routing::RouteSettings {
            connect_timeout: std::time::Duration::from_secs(1),
            retries: 2,
            idle_timeout: None,
            queue_timeout: std::time::Duration::ZERO,
            transfer: crate::config::TransferMode::Auto,
            session_level: tracing::Level::INFO,
            proxy_protocol: Default::default(),
        });
        Route::new(
            "c".into(),
            settings,
            serves,
            candidates,
            Unavailable::NoBackend,
            balance,
            Arc::new(AtomicUsize::new(0)),
        )
    }

    fn names(r: &Route, limit: usize) -> Vec<String> {
        r.pick(limit)
            .map(|c| c.backend.key.backend.to_string())
            .collect()
    }

    #[test]
    fn primary_route_always_starts_at_the_first_candidate() {
        let r = route(3, RoleFilter::Primary, Balance::RoundRobin);
        for _ in 0..5 {
            assert_eq!(names(&r, 3), ["b0", "b1", "b2"]);
        }
        assert_eq!(names(&r, 1), ["b0"]);
    }

    #[test]
    fn round_robin_rotates_and_retries_wrap_around() {
        let r = route(3, RoleFilter::Replica, Balance::RoundRobin);
        assert_eq!(names(&r, 3), ["b0", "b1", "b2"]);
        assert_eq!(names(&r, 3), ["b1", "b2", "b0"]);
        assert_eq!(names(&r, 2), ["b2", "b0"]);
    }

    #[test]
    fn least_conn_prefers_the_least_loaded_and_rotates_ties() {
        let r = route(3, RoleFilter::Replica, Balance::LeastConn);
        r.candidates[0].backend.active.store(5, Ordering::Relaxed);
        r.candidates[1].backend.active.store(1, Ordering::Relaxed);
        r.candidates[2].backend.active.store(1, Ordering::Relaxed);
        let firsts: Vec<_> = (0..4).map(|_| names(&r, 1)[0].clone()).collect();
        assert!(firsts.iter().all(|b| b != "b0"), "{firsts:?}");
        assert!(firsts.contains(&"b1".to_string()) && firsts.contains(&"b2".to_string()));
    }

    #[test]
    fn empty_route_yields_nothing() {
        let r = route(0, RoleFilter::Replica, Balance::RoundRobin);
        assert_eq!(names(&r, 3), Vec::<String>::new());
        assert_eq!(r.unavailable, Some(Unavailable::NoBackend));
    }
}
