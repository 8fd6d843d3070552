//! Zero-hop steering: local clients in a cgroup connect straight to the backend the routing
//! table names, and the proxy stays the fallback.
//!
//! A cgroup `connect4`/`connect6` program (bpf/steer.bpf.c) rewrites the destination of a TCP connect to
//! a steered listener's bind address into the route's first candidate (round robin for replica
//! routes); `getpeername4`/`6` show the application the listener address again; `sock_release`
//! forgets the socket. The kernel reads one map entry per listener, and [`Steer`] writes it in
//! the step that stores a routing table (a [`TableObserver`]): when the route has no candidate
//! (no primary, split brain refused, nothing qualifies) the entry is removed and the connect
//! reaches rolegate's listener, which queues or refuses it as for any client.
//!
//! Fencing: each steered candidate's guard is watched; when it fires (the backend lost the
//! role, was disabled, the process drains) the backend leaves the map entry and its steered
//! sockets from that listener are destroyed ([`fence`]). `drain` fires no guard: they stay.
//!
//! Degradation: anything that stops the program (no `CAP_BPF`/`CAP_NET_ADMIN`, a build without
//! the BPF toolchain, a cgroup that vanished) is one warning and `steer: {active: false,
//! reason}` in `/status`; the listener serves those clients as a proxy, as without `steer:`.
//! Only IPv4 listeners are steered; `connect6` covers dual-stack clients that reach them by the
//! IPv4-mapped address.

#[cfg(rolegate_steer)]
mod fence;
mod layout;
#[cfg(rolegate_steer)]
mod program;

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

use prometheus::{IntCounterVec, IntGaugeVec};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Config, ListenerName};
use crate::routing::{Candidate, Route, RoutingTable, TableObserver};

#[cfg(rolegate_steer)]
use program::Kernel;

/// Stand-in when the build had no BPF toolchain: never loads.
#[cfg(not(rolegate_steer))]
struct Kernel;

#[cfg(not(rolegate_steer))]
impl Kernel {
    fn load() -> Result<Kernel, String> {
        Err(
            "rolegate was built without steering (no clang/libbpf-dev at build time, or not Linux)"
                .into(),
        )
    }
}

/// The kernel side before any listener asked for steering.
const NOT_LOADED: &str = "not loaded";

/// A listener's steering as `/status` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SteerStatus {
    pub cgroup: String,
    pub active: bool,
    /// Why steering is off (absent when active).
    pub reason: Option<String>,
    /// Steered sessions open now, per backend.
    pub sessions: HashMap<String, u64>,
    /// Connections steered since start, per backend.
    pub connections_total: HashMap<String, u64>,
}

/// One listener with `steer:`.
struct Steered {
    name: ListenerName,
    cgroup: PathBuf,
    /// The address clients connect to (the bound address, so port 0 works).
    addr: Result<SocketAddrV4, String>,
}

struct State {
    /// The loaded program, or why there is none.
    kernel: Result<Kernel, String>,
    /// Loading was attempted (once: the first config with a `steer:` listener).
    tried: bool,
    listeners: Vec<Steered>,
    /// Why a cgroup could not be attached.
    cgroup_errors: HashMap<PathBuf, String>,
    table: Option<Arc<RoutingTable>>,
    /// Backends each listener's map entry names now.
    written: HashMap<SocketAddrV4, Vec<SocketAddrV4>>,
    /// Backends fenced since the last table: kept out of the entry until a table names them
    /// with a fresh guard.
    fenced: HashSet<(SocketAddrV4, SocketAddrV4)>,
    /// Guards watched per (listener, backend); a fired guard is replaced by a new token.
    watched: HashMap<(SocketAddrV4, SocketAddrV4), CancellationToken>,
    /// Backend names by address, for labels.
    names: HashMap<SocketAddrV4, String>,
    /// Totals already added to the counter (it only moves forward).
    counted: HashMap<(SocketAddrV4, SocketAddrV4), u64>,
}

struct SteerMetrics {
    active: IntGaugeVec,
    sessions: IntGaugeVec,
    connections: IntCounterVec,
    fenced: IntCounterVec,
}

/// The steering of every listener with `steer:`; one per process.
pub struct Steer {
    state: Mutex<State>,
    metrics: SteerMetrics,
    me: Weak<Steer>,
}

impl SteerMetrics {
    /// The steering families of the process's metrics (registered with the rest in
    /// `metrics/families.rs`).
    fn new(metrics: &crate::metrics::Metrics) -> SteerMetrics {
        SteerMetrics {
            active: metrics.steer_active.clone(),
            sessions: metrics.steer_sessions.clone(),
            connections: metrics.steer_connections_total.clone(),
            fenced: metrics.steer_fenced_total.clone(),
        }
    }
}

impl Steer {
    /// Loads the program if any listener of `config` asks for steering (nothing is loaded
    /// otherwise: a reload that adds the first `steer:` loads it) and attaches it to their
    /// cgroups. `bound` gives each listener's bound address.
    pub fn start(
        config: &Config,
        bound: &HashMap<ListenerName, SocketAddr>,
        metrics: &crate::metrics::Metrics,
    ) -> Arc<Steer> {
        let steer = Arc::new_cyclic(|me| Steer {
            state: Mutex::new(State {
                kernel: Err(NOT_LOADED.to_string()),
                tried: false,
                listeners: Vec::new(),
                cgroup_errors: HashMap::new(),
                table: None,
                written: HashMap::new(),
                fenced: HashSet::new(),
                watched: HashMap::new(),
                names: HashMap::new(),
                counted: HashMap::new(),
            }),
            metrics: SteerMetrics::new(metrics),
            me: me.clone(),
        });
        steer.configure(config, bound);
        steer
    }

    /// Takes the steered listeners of a (new) config: attaches new cgroups, detaches those no
    /// longer named, and rewrites the map from the last table. Called before the table of the
    /// new config is stored, and again by it.
    pub fn configure(&self, config: &Config, bound: &HashMap<ListenerName, SocketAddr>) {
        let mut state = self.lock();
        if !state.tried && config.listeners.iter().any(|l| l.steer.is_some()) {
            state.tried = true;
            state.kernel = Kernel::load().map_err(|e| e.to_string());
            if let Err(reason) = &state.kernel {
                warn!(
                    message = "Steering is off: the listeners with steer: serve their local clients as a proxy.",
                    reason = %reason,
                );
            }
        }
        state.listeners = config
            .listeners
            .iter()
            .filter_map(|l| {
                let steer = l.steer.as_ref()?;
                let addr = match bound.get(&l.name).copied().unwrap_or(l.bind) {
                    SocketAddr::V4(a) if !a.ip().is_unspecified() => Ok(a),
                    SocketAddr::V4(_) => Err("the listener binds 0.0.0.0: steering needs the specific IPv4 address clients connect to".to_string()),
                    SocketAddr::V6(_) => Err("only IPv4 listeners are steered".to_string()),
                };
                Some(Steered {
                    name: l.name.clone(),
                    cgroup: steer.cgroup.clone(),
                    addr,
                })
            })
            .collect();
        for l in &state.listeners {
            self.metrics.active.with_label_values(&[l.name.as_str()]);
        }
        attach_cgroups(&mut state);
        let table = state.table.clone();
        if let Some(table) = table {
            self.write(&mut state, &table);
        }
        self.refresh_gauges(&mut state);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding it leaves maps written by complete syscalls only: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes every steered listener's entry from `table`, and watches the guards of the
    /// backends it steers to.
    fn write(&self, state: &mut State, table: &Arc<RoutingTable>) {
        let mut wanted: Vec<(SocketAddrV4, Vec<SocketAddrV4>)> = Vec::new();
        let mut guards = Vec::new();
        for l in &state.listeners {
            let Ok(addr) = l.addr else { continue };
            if state.cgroup_errors.contains_key(&l.cgroup) || state.kernel.is_err() {
                continue;
            }
            let mut backends = Vec::new();
            for (b, c) in table.route(&l.name).map(targets).unwrap_or_default() {
                state
                    .names
                    .insert(b, c.backend.key.backend.as_str().to_string());
                // A fresh guard for a fenced backend: it holds the role again.
                if state.fenced.contains(&(addr, b))
                    && state
                        .watched
                        .get(&(addr, b))
                        .is_some_and(|g| g.is_cancelled())
                {
                    state.fenced.remove(&(addr, b));
                }
                guards.push((addr, b, c.guard.clone()));
                backends.push(b);
            }
            backends.retain(|b| !state.fenced.contains(&(addr, *b)));
            wanted.push((addr, backends));
        }
        for (listener, backend, guard) in guards {
            let key = (listener, backend);
            if state.watched.get(&key).is_some_and(|g| !g.is_cancelled()) {
                continue; // this guard (or its unfired predecessor) is watched already
            }
            state.watched.insert(key, guard.clone());
            let me = self.me.clone();
            tokio::spawn(async move {
                guard.cancelled().await;
                if let Some(steer) = me.upgrade() {
                    let _ =
                        tokio::task::spawn_blocking(move || steer.fence(listener, backend)).await;
                }
            });
        }
        let keep: HashSet<SocketAddrV4> = wanted.iter().map(|(l, _)| *l).collect();
        let stale: Vec<SocketAddrV4> = state
            .written
            .keys()
            .filter(|l| !keep.contains(l))
            .copied()
            .collect();
        for listener in stale {
            set_route(state, listener, Vec::new());
        }
        for (listener, backends) in wanted {
            set_route(state, listener, backends);
        }
    }

    /// A backend lost the role a steered listener serves: stop steering to it, then close the
    /// sockets steered there from that listener.
    fn fence(&self, listener: SocketAddrV4, backend: SocketAddrV4) {
        let mut state = self.lock();
        state.fenced.insert((listener, backend));
        if let Some(mut backends) = state.written.get(&listener).cloned() {
            backends.retain(|b| *b != backend);
            set_route(&mut state, listener, backends);
        }
        let closed = fence_sockets(&state, listener, backend);
        let name = state
            .names
            .get(&backend)
            .cloned()
            .unwrap_or_else(|| backend.to_string());
        let listener_name = state
            .listeners
            .iter()
            .find(|l| l.addr.as_ref().ok() == Some(&listener))
            .map(|l| l.name.as_str().to_string())
            .unwrap_or_else(|| listener.to_string());
        match closed {
            Ok(0) => {}
            Ok(n) => {
                self.metrics
                    .fenced
                    .with_label_values(&[listener_name.as_str(), name.as_str()])
                    .inc_by(n as u64);
                info!(
                    message = "Closed steered sessions of a backend that lost its role.",
                    listener = %listener_name,
                    backend = %name,
                    sessions = n,
                );
            }
            Err(e) => warn!(
                message = "Cannot close steered sessions of a backend that lost its role.",
                listener = %listener_name,
                backend = %name,
                error = %e,
            ),
        }
        drop(state);
    }

    /// Each steered listener's status, by listener name.
    pub fn status(&self) -> HashMap<String, SteerStatus> {
        let mut state = self.lock();
        self.refresh_gauges(&mut state);
        let live = live_sessions(&state);
        let totals = totals(&state);
        state
            .listeners
            .iter()
            .map(|l| {
                let reason = inactive_reason(&state, l);
                let per_backend = |counts: &HashMap<(SocketAddrV4, SocketAddrV4), u64>| {
                    let Ok(addr) = l.addr else {
                        return HashMap::new();
                    };
                    counts
                        .iter()
                        .filter(|((la, _), _)| *la == addr)
                        .map(|((_, b), n)| (label(&state, *b), *n))
                        .collect()
                };
                let status = SteerStatus {
                    cgroup: l.cgroup.display().to_string(),
                    active: reason.is_none(),
                    reason,
                    sessions: per_backend(&live),
                    connections_total: per_backend(&totals),
                };
                (l.name.as_str().to_string(), status)
            })
            .collect()
    }

    /// Brings the gauges and counters up to date (called before `/metrics` is encoded).
    pub fn refresh(&self) {
        let mut state = self.lock();
        self.refresh_gauges(&mut state);
    }

    fn refresh_gauges(&self, state: &mut State) {
        let live = live_sessions(state);
        let totals = totals(state);
        for l in &state.listeners {
            let active = inactive_reason(state, l).is_none();
            self.metrics
                .active
                .with_label_values(&[l.name.as_str()])
                .set(i64::from(active));
            let Ok(addr) = l.addr else { continue };
            for ((la, b), n) in &totals {
                if *la != addr {
                    continue;
                }
                let backend = label(state, *b);
                let labels = [l.name.as_str(), backend.as_str()];
                let open = live.get(&(addr, *b)).copied().unwrap_or(0);
                self.metrics
                    .sessions
                    .with_label_values(&labels)
                    .set(i64::try_from(open).unwrap_or(i64::MAX));
                let seen = state.counted.entry((addr, *b)).or_insert(0);
                if *n > *seen {
                    self.metrics
                        .connections
                        .with_label_values(&labels)
                        .inc_by(*n - *seen);
                    *seen = *n;
                }
            }
        }
    }
}

impl TableObserver for Steer {
    fn stored(&self, table: &Arc<RoutingTable>) {
        let mut state = self.lock();
        state.table = Some(table.clone());
        if state.listeners.is_empty() {
            return;
        }
        self.write(&mut state, table);
    }
}

/// The backends a steered listener's entry names for `route`: the primary only for primary
/// routes (the other candidates are the proxy's retry targets), every candidate (at most
/// `MAX_BACKENDS`) otherwise; IPv4 backends only, and never one whose guard has fired.
fn targets(route: &Route) -> Vec<(SocketAddrV4, &Candidate)> {
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
        .filter_map(|c| match c.backend.addr {
            SocketAddr::V4(b) => Some((b, c)),
            SocketAddr::V6(_) => None,
        })
        .collect()
}

fn label(state: &State, backend: SocketAddrV4) -> String {
    state
        .names
        .get(&backend)
        .cloned()
        .unwrap_or_else(|| backend.to_string())
}

fn inactive_reason(state: &State, l: &Steered) -> Option<String> {
    if let Err(e) = &state.kernel {
        return Some(e.clone());
    }
    if let Err(e) = &l.addr {
        return Some(e.clone());
    }
    state.cgroup_errors.get(&l.cgroup).cloned()
}

#[cfg(rolegate_steer)]
fn attach_cgroups(state: &mut State) {
    let wanted: HashSet<PathBuf> = state.listeners.iter().map(|l| l.cgroup.clone()).collect();
    let Ok(kernel) = &mut state.kernel else {
        return;
    };
    let gone: Vec<PathBuf> = kernel
        .attached()
        .filter(|p| !wanted.contains(*p))
        .map(Into::into)
        .collect();
    for path in gone {
        kernel.detach(&path);
    }
    state.cgroup_errors.clear();
    for path in wanted {
        match kernel.attach(&path) {
            Ok(()) => {}
            Err(e) => {
                warn!(
                    message = "Steering is off for a cgroup: its listeners serve those clients as a proxy.",
                    cgroup = %path.display(),
                    reason = %e,
                );
                state.cgroup_errors.insert(path, e.to_string());
            }
        }
    }
}

#[cfg(not(rolegate_steer))]
fn attach_cgroups(_state: &mut State) {}

#[cfg(rolegate_steer)]
fn set_route(state: &mut State, listener: SocketAddrV4, backends: Vec<SocketAddrV4>) {
    if state.written.get(&listener) == Some(&backends)
        || (backends.is_empty() && !state.written.contains_key(&listener))
    {
        return;
    }
    let Ok(kernel) = &mut state.kernel else {
        return;
    };
    match kernel.set_route(listener, &backends) {
        Ok(()) if backends.is_empty() => {
            state.written.remove(&listener);
        }
        Ok(()) => {
            state.written.insert(listener, backends);
        }
        // The entry stays as it was; the next table tries again. Fencing still closes
        // sessions of a backend that lost its role.
        Err(e) => {
            warn!(message = "Cannot update the steering map.", listener = %listener, error = %e)
        }
    }
}

#[cfg(not(rolegate_steer))]
fn set_route(_state: &mut State, _listener: SocketAddrV4, _backends: Vec<SocketAddrV4>) {}

#[cfg(rolegate_steer)]
fn fence_sockets(
    state: &State,
    listener: SocketAddrV4,
    backend: SocketAddrV4,
) -> std::io::Result<usize> {
    let Ok(kernel) = &state.kernel else {
        return Ok(0);
    };
    fence::fence(listener, backend, |cookie| kernel.steered_socket(cookie))
}

#[cfg(not(rolegate_steer))]
fn fence_sockets(_: &State, _: SocketAddrV4, _: SocketAddrV4) -> std::io::Result<usize> {
    Ok(0)
}

#[cfg(rolegate_steer)]
fn live_sessions(state: &State) -> HashMap<(SocketAddrV4, SocketAddrV4), u64> {
    let mut counts = HashMap::new();
    if let Ok(kernel) = &state.kernel {
        for (_, l, b) in kernel.steered() {
            *counts.entry((l, b)).or_insert(0) += 1;
        }
    }
    counts
}

#[cfg(not(rolegate_steer))]
fn live_sessions(_: &State) -> HashMap<(SocketAddrV4, SocketAddrV4), u64> {
    HashMap::new()
}

#[cfg(rolegate_steer)]
fn totals(state: &State) -> HashMap<(SocketAddrV4, SocketAddrV4), u64> {
    match &state.kernel {
        Ok(kernel) => kernel
            .totals()
            .into_iter()
            .map(|(l, b, n)| ((l, b), n))
            .collect(),
        Err(_) => HashMap::new(),
    }
}

#[cfg(not(rolegate_steer))]
fn totals(_: &State) -> HashMap<(SocketAddrV4, SocketAddrV4), u64> {
    HashMap::new()
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
    fn fired_guards_ipv6_backends_and_empty_routes_are_left_to_the_proxy() {
        let r = route(
            &["127.0.0.1:1", "[::1]:2", "127.0.0.1:3"],
            RoleFilter::Replica,
        );
        r.candidates[2].guard.cancel();
        assert_eq!(addrs(&r), ["127.0.0.1:1"]);
        let primary = route(&["127.0.0.1:1"], RoleFilter::Primary);
        primary.candidates[0].guard.cancel();
        assert!(
            addrs(&primary).is_empty(),
            "a demoted primary is never steered to"
        );
        assert!(addrs(&route(&[], RoleFilter::Primary)).is_empty());
    }
}
