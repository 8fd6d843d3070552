//! The map writer: turns a stored routing table into the program's `routes` entries (once per
//! table, never per connection: an entry is rewritten only when what it names changes) and
//! fences the backends whose guard fires.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{layout, State, Steer};
use crate::routing::{Candidate, Route, RoutingTable};

/// What rolegate has written into `routes`, and the guards it watches.
#[derive(Default)]
pub struct Written {
    /// Each map key's entry now: (listener id, backends).
    entries: HashMap<SocketAddr, (u32, Vec<SocketAddr>)>,
    /// (listener id, backend) fenced since the last table: kept out of the entries until a table
    /// names the backend with a fresh guard.
    fenced: HashSet<(u32, SocketAddr)>,
    /// Guards watched per (listener id, backend); a fired guard is replaced by a new token.
    watched: HashMap<(u32, SocketAddr), CancellationToken>,
}

impl Steer {
    /// Writes every steered listener's entries from `table`, and watches the guards of the
    /// backends it steers to.
    pub(super) fn write(&self, state: &mut State, table: &Arc<RoutingTable>) {
        let mut wanted: HashMap<SocketAddr, (u32, Vec<SocketAddr>)> = HashMap::new();
        let mut guards = Vec::new();
        for l in &state.listeners {
            if state.cgroup_errors.contains_key(&l.cgroup) || state.kernel.is_err() {
                continue;
            }
            let mut backends = Vec::new();
            for (b, c) in table.route(&l.name).map(targets).unwrap_or_default() {
                state
                    .names
                    .insert(b, c.backend.key.backend.as_str().to_string());
                let key = (l.id, b);
                // A fresh guard for a fenced backend: it holds the role again.
                if state.written.fenced.contains(&key)
                    && state
                        .written
                        .watched
                        .get(&key)
                        .is_some_and(|g| g.is_cancelled())
                {
                    state.written.fenced.remove(&key);
                }
                guards.push((l.id, b, c.guard.clone()));
                backends.push(b);
            }
            backends.retain(|b| !state.written.fenced.contains(&(l.id, *b)));
            for key in l.keys(&state.local) {
                wanted.insert(key, (l.id, backends.clone()));
            }
        }
        for (id, backend, guard) in guards {
            let key = (id, backend);
            if state
                .written
                .watched
                .get(&key)
                .is_some_and(|g| !g.is_cancelled())
            {
                continue; // this guard (or its unfired predecessor) is watched already
            }
            state.written.watched.insert(key, guard.clone());
            let me = self.me.clone();
            tokio::spawn(async move {
                guard.cancelled().await;
                if let Some(steer) = me.upgrade() {
                    let _ = tokio::task::spawn_blocking(move || steer.fence(id, backend)).await;
                }
            });
        }
        let stale: Vec<SocketAddr> = state
            .written
            .entries
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .copied()
            .collect();
        for key in stale {
            set_route(state, key, 0, Vec::new());
        }
        for (key, (id, backends)) in wanted {
            set_route(state, key, id, backends);
        }
    }

    /// A backend lost the role a steered listener serves: stop steering to it, then close the
    /// sockets steered there for that listener.
    pub(super) fn fence(&self, id: u32, backend: SocketAddr) {
        let mut state = self.lock();
        state.written.fenced.insert((id, backend));
        let keys: Vec<(SocketAddr, Vec<SocketAddr>)> = state
            .written
            .entries
            .iter()
            .filter(|(_, (owner, _))| *owner == id)
            .map(|(k, (_, b))| (*k, b.clone()))
            .collect();
        for (key, mut backends) in keys {
            backends.retain(|b| *b != backend);
            set_route(&mut state, key, id, backends);
        }
        let closed = match &state.kernel {
            Ok(kernel) => kernel.fence(id, backend),
            Err(_) => Ok(0),
        };
        let name = state.label(backend);
        let listener = state
            .listeners
            .iter()
            .find(|l| l.id == id)
            .map(|l| l.name.as_str().to_string())
            .unwrap_or_else(|| format!("#{id}"));
        match closed {
            Ok(0) => {}
            Ok(n) => {
                self.metrics
                    .fenced
                    .with_label_values(&[listener.as_str(), name.as_str()])
                    .inc_by(n as u64);
                info!(
                    message = "Closed steered sessions of a backend that lost its role.",
                    listener = %listener,
                    backend = %name,
                    sessions = n,
                );
            }
            Err(e) => warn!(
                message = "Cannot close steered sessions of a backend that lost its role.",
                listener = %listener,
                backend = %name,
                error = %e,
            ),
        }
    }
}

/// Writes one map entry unless it already holds exactly this; no backends removes it.
fn set_route(state: &mut State, key: SocketAddr, id: u32, backends: Vec<SocketAddr>) {
    let entries = &mut state.written.entries;
    if backends.is_empty() && !entries.contains_key(&key)
        || entries
            .get(&key)
            .is_some_and(|(i, b)| *i == id && *b == backends)
    {
        return;
    }
    let Ok(kernel) = &mut state.kernel else {
        return;
    };
    match kernel.set_route(key, id, &backends) {
        Ok(()) if backends.is_empty() => {
            entries.remove(&key);
        }
        Ok(()) => {
            entries.insert(key, (id, backends));
        }
        // The entry stays as it was; the next table tries again. Fencing still closes
        // sessions of a backend that lost its role.
        Err(e) => warn!(message = "Cannot update the steering map.", key = %key, error = %e),
    }
}

/// The backends a steered listener's entry names for `route`: the primary only for primary
/// routes (the other candidates are the proxy's retry targets), every candidate (at most
/// `MAX_BACKENDS`) otherwise, and never one whose guard has fired. Both families: the program
/// leaves an AF_INET client's connect to the proxy when its turn falls on an IPv6 backend.
fn targets(route: &Route) -> Vec<(SocketAddr, &Candidate)> {
    let take = if route.ordered {
        1
    } else {
        layout::MAX_BACKENDS
    };
    route
        .candidates
        .iter()
        .take(take)
        .filter(|c| !c.guard.is_cancelled())
        .map(|c| (c.backend.addr, c))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;
    use crate::config::{Balance, RoleFilter, TransferMode};
    use crate::metrics::Metrics;
    use crate::routing::BackendKey;
    use crate::routing::{BackendEntry, RouteSettings, Unavailable};

    fn route(addrs: &[&str], serves: RoleFilter) -> Route {
        let metrics = Metrics::new();
        let candidates = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| Candidate {
                backend: Arc::new(BackendEntry {
                    key: BackendKey {
                        cluster: "c".into(),
                        backend: format!("b{i}").as_str().into(),
                    },
                    addr: a.parse().unwrap(),
                    active: Arc::new(AtomicUsize::new(0)),
                }),
                guard: CancellationToken::new(),
                metrics: metrics.session_metrics("l", &format!("b{i}")),
            })
            .collect();
        let settings = Arc::new(RouteSettings {
            connect_timeout: Duration::from_secs(1),
            retries: 2,
            idle_timeout: None,
            queue_timeout: Duration::from_secs(1),
            transfer: TransferMode::Auto,
            session_level: tracing::Level::INFO,
            proxy_protocol: Default::default(),
        });
        Route::new(
            "c".into(),
            settings,
            serves,
            candidates,
            Unavailable::NoPrimary,
            Balance::RoundRobin,
            Arc::new(AtomicUsize::new(0)),
        )
    }

    fn addrs(route: &Route) -> Vec<String> {
        targets(route).iter().map(|(a, _)| a.to_string()).collect()
    }

    #[test]
    fn a_primary_route_steers_to_the_primary_only() {
        let r = route(&["127.0.0.1:1", "127.0.0.1:2"], RoleFilter::Primary);
        assert_eq!(addrs(&r), ["127.0.0.1:1"]);
    }

    #[test]
    fn a_replica_route_steers_to_every_candidate_up_to_the_maximum() {
        let many: Vec<String> = (1..=10).map(|p| format!("127.0.0.1:{p}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let r = route(&refs, RoleFilter::Replica);
        assert_eq!(addrs(&r), many[..layout::MAX_BACKENDS]);
    }

    #[test]
    fn fired_guards_and_empty_routes_are_left_to_the_proxy_both_families_steered() {
        let r = route(
            &["127.0.0.1:1", "[::1]:2", "127.0.0.1:3"],
            RoleFilter::Replica,
        );
        r.candidates[2].guard.cancel();
        assert_eq!(addrs(&r), ["127.0.0.1:1", "[::1]:2"]);
        let primary = route(&["[::1]:1"], RoleFilter::Primary);
        assert_eq!(addrs(&primary), ["[::1]:1"]);
        primary.candidates[0].guard.cancel();
        assert!(
            addrs(&primary).is_empty(),
            "a demoted primary is never steered to"
        );
        assert!(addrs(&route(&[], RoleFilter::Primary)).is_empty());
    }
}
