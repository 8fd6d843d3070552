//! Zero-hop steering: local clients in a cgroup connect straight to the backend the routing
//! table names, and the proxy stays the fallback.
//!
//! A cgroup `connect4`/`connect6` program (bpf/steer.bpf.c) rewrites the destination of a TCP
//! connect to a steered listener's address into the route's first candidate (round robin for
//! replica routes); `getpeername4`/`6` show the application the listener address again;
//! `sock_release` forgets the socket. The kernel reads one map entry per connect, and [`Steer`]
//! writes the entries in the step that stores a routing table (a [`TableObserver`], see
//! [`writer`]): when the route has no candidate (no primary, split brain refused, nothing
//! qualifies) the entries are removed and the connect reaches rolegate's listener, which
//! queues or refuses it as for any client.
//!
//! Both families: IPv4 and IPv6 listeners, IPv4 and IPv6 backends (an AF_INET6 client reaches
//! an IPv4 backend by its mapped address unless its socket is IPv6-only, which connect6 reads
//! from the kernel's socket; an AF_INET client whose turn falls on an IPv6 backend is proxied).
//! Where that bit cannot be read (no kernel BTF, no `CAP_PERFMON`) connect6 never sends an IPv6
//! destination to an IPv4 backend, and `/status` says why under `ipv6_to_ipv4`. Wildcard binds (`0.0.0.0:P`, `[::]:P`) are steered for every local address of
//! the host ([`local`], [`listeners`]).
//!
//! Fencing: each steered candidate's guard is watched; when it fires (the backend lost the
//! role, was disabled, the process drains) the backend leaves the entries and its steered
//! sockets from that listener are destroyed ([`fence`]). `drain` fires no guard: they stay.
//!
//! Degradation: anything that stops the program (no `CAP_BPF`/`CAP_NET_ADMIN`, a build without
//! the BPF toolchain, a cgroup that vanished) is one warning and `steer: {active: false,
//! reason}` in `/status` ([`status`]); the listener serves those clients as a proxy, as
//! without `steer:`.

#[cfg(rolegate_steer)]
mod fence;
mod layout;
mod listeners;
#[cfg(target_os = "linux")]
mod local;
#[cfg(rolegate_steer)]
mod program;
mod status;
#[cfg(not(rolegate_steer))]
mod unsupported;
mod writer;

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

use tracing::warn;

use crate::config::{Config, ListenerName};
use crate::routing::{RoutingTable, TableObserver};

#[cfg(rolegate_steer)]
use program::Kernel;
use status::SteerMetrics;
pub use status::{Ipv6ToIpv4, SteerStatus};
#[cfg(not(rolegate_steer))]
use unsupported::Kernel;

/// The kernel side before any listener asked for steering.
const NOT_LOADED: &str = "not loaded";

struct State {
    /// The loaded program, or why there is none.
    kernel: Result<Kernel, String>,
    /// Loading was attempted (once: the first config with a `steer:` listener).
    tried: bool,
    listeners: Vec<listeners::Steered>,
    /// Listener numbers in the maps, by name; kept across reloads so counters stay put.
    ids: HashMap<ListenerName, u32>,
    /// Why a cgroup could not be attached.
    cgroup_errors: HashMap<PathBuf, String>,
    /// The host's non-loopback addresses (wildcard listeners' keys), once one is steered.
    local: BTreeSet<IpAddr>,
    /// The address watcher runs (started with the first steered wildcard listener).
    watching: bool,
    table: Option<Arc<RoutingTable>>,
    written: writer::Written,
    /// Backend names by address, for labels.
    names: HashMap<SocketAddr, String>,
    /// Totals already added to the counter (it only moves forward).
    counted: HashMap<(u32, SocketAddr), u64>,
}

impl State {
    /// A backend's name for labels (its address if no table named it).
    fn label(&self, backend: SocketAddr) -> String {
        self.names
            .get(&backend)
            .cloned()
            .unwrap_or_else(|| backend.to_string())
    }
}

/// The steering of every listener with `steer:`; one per process.
pub struct Steer {
    state: Mutex<State>,
    metrics: SteerMetrics,
    me: Weak<Steer>,
    /// The runtime the guard watchers run on (the address watcher's thread writes too).
    runtime: Option<tokio::runtime::Handle>,
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
                ids: HashMap::new(),
                cgroup_errors: HashMap::new(),
                local: BTreeSet::new(),
                watching: false,
                table: None,
                written: writer::Written::default(),
                names: HashMap::new(),
                counted: HashMap::new(),
            }),
            metrics: SteerMetrics::new(metrics),
            me: me.clone(),
            runtime: tokio::runtime::Handle::try_current().ok(),
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
            match &state.kernel {
                Err(reason) => warn!(
                    message = "Steering is off: the listeners with steer: serve their local clients as a proxy.",
                    reason = %reason,
                ),
                Ok(kernel) => {
                    if let Some(reason) = kernel.unmapped() {
                        warn!(
                            message = "Steering cannot read a socket's IPV6_V6ONLY: IPv6 clients of IPv4 backends are served by the proxy.",
                            reason = %reason,
                        );
                    }
                }
            }
        }
        let mut ids = std::mem::take(&mut state.ids);
        state.listeners = listeners::from_config(config, bound, &mut ids);
        state.ids = ids;
        for l in &state.listeners {
            self.metrics.active.with_label_values(&[l.name.as_str()]);
        }
        listeners::attach_cgroups(&mut state);
        self.follow_addresses(&mut state);
        let table = state.table.clone();
        if let Some(table) = table {
            self.write(&mut state, &table);
        }
        self.refresh_gauges(&mut state);
    }

    /// With a wildcard listener steered: reads the host's addresses and, once, starts
    /// following their changes.
    #[cfg(target_os = "linux")]
    fn follow_addresses(&self, state: &mut State) {
        if state.kernel.is_err() || !state.listeners.iter().any(|l| l.wildcard()) {
            return;
        }
        state.local = local::addresses();
        if !state.watching {
            state.watching = local::watch(self.me.clone());
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn follow_addresses(&self, _state: &mut State) {}

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding it leaves maps written by complete syscalls only: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(target_os = "linux")]
impl local::AddressesChanged for Steer {
    /// Rewrites the wildcard listeners' entries for the host's addresses now.
    fn addresses_changed(&self) {
        let mut state = self.lock();
        let now = local::addresses();
        if now == state.local {
            return;
        }
        state.local = now;
        let _runtime = self.runtime.as_ref().map(|h| h.enter());
        let table = state.table.clone();
        if let Some(table) = table {
            self.write(&mut state, &table);
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
