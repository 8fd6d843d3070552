//! What steering reports: each listener's `/status` object and the steering metric families,
//! both read from the program's maps (live steered sockets, connection counters).

use std::collections::HashMap;
use std::net::SocketAddr;

use prometheus::{IntCounterVec, IntGaugeVec};
use serde::Serialize;

use super::listeners::Steered;
use super::{State, Steer};

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
    /// Whether an IPv6 client (an AF_INET6 socket asking for an IPv6 listener address) whose
    /// backend is IPv4 is steered to the mapped address (unless the socket is IPv6-only).
    pub ipv6_to_ipv4: Ipv6ToIpv4,
}

/// [`SteerStatus::ipv6_to_ipv4`]: off (those clients proxied) where the program cannot read a
/// socket's IPV6_V6ONLY bit, with the reason.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Ipv6ToIpv4 {
    pub active: bool,
    pub reason: Option<String>,
}

pub struct SteerMetrics {
    pub active: IntGaugeVec,
    pub sessions: IntGaugeVec,
    pub connections: IntCounterVec,
    pub fenced: IntCounterVec,
}

impl SteerMetrics {
    /// The steering families of the process's metrics (registered with the rest in
    /// `metrics/families.rs`).
    pub fn new(metrics: &crate::metrics::Metrics) -> SteerMetrics {
        SteerMetrics {
            active: metrics.steer_active.clone(),
            sessions: metrics.steer_sessions.clone(),
            connections: metrics.steer_connections_total.clone(),
            fenced: metrics.steer_fenced_total.clone(),
        }
    }
}

/// Counts per (listener id, backend).
type Counts = HashMap<(u32, SocketAddr), u64>;

impl Steer {
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
                let per_backend = |counts: &Counts| {
                    counts
                        .iter()
                        .filter(|((id, _), _)| *id == l.id)
                        .map(|((_, b), n)| (state.label(*b), *n))
                        .collect()
                };
                let mapped = reason.clone().or_else(|| unmapped_reason(&state));
                let status = SteerStatus {
                    cgroup: l.cgroup.display().to_string(),
                    active: reason.is_none(),
                    ipv6_to_ipv4: Ipv6ToIpv4 {
                        active: mapped.is_none(),
                        reason: mapped,
                    },
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

    pub(super) fn refresh_gauges(&self, state: &mut State) {
        let live = live_sessions(state);
        let totals = totals(state);
        let mut counted = std::mem::take(&mut state.counted);
        for l in &state.listeners {
            let active = inactive_reason(state, l).is_none();
            self.metrics
                .active
                .with_label_values(&[l.name.as_str()])
                .set(i64::from(active));
            for ((id, b), n) in &totals {
                if *id != l.id {
                    continue;
                }
                let backend = state.label(*b);
                let labels = [l.name.as_str(), backend.as_str()];
                let open = live.get(&(*id, *b)).copied().unwrap_or(0);
                self.metrics
                    .sessions
                    .with_label_values(&labels)
                    .set(i64::try_from(open).unwrap_or(i64::MAX));
                // The kernel's counter only moves forward; add what it gained since last time.
                let seen = counted.entry((*id, *b)).or_insert(0);
                if *n > *seen {
                    self.metrics
                        .connections
                        .with_label_values(&labels)
                        .inc_by(*n - *seen);
                    *seen = *n;
                }
            }
        }
        state.counted = counted;
    }
}

fn inactive_reason(state: &State, l: &Steered) -> Option<String> {
    if let Err(e) = &state.kernel {
        return Some(e.clone());
    }
    state.cgroup_errors.get(&l.cgroup).cloned()
}

/// Why IPv6 clients of IPv4 backends are proxied although steering is on.
fn unmapped_reason(state: &State) -> Option<String> {
    state
        .kernel
        .as_ref()
        .ok()
        .and_then(|k| k.unmapped())
        .map(str::to_string)
}

fn live_sessions(state: &State) -> Counts {
    let mut counts = HashMap::new();
    if let Ok(kernel) = &state.kernel {
        for (_, id, _, b) in kernel.steered() {
            *counts.entry((id, b)).or_insert(0) += 1;
        }
    }
    counts
}

fn totals(state: &State) -> Counts {
    match &state.kernel {
        Ok(kernel) => kernel
            .totals()
            .into_iter()
            .map(|(id, b, n)| ((id, b), n))
            .collect(),
        Err(_) => HashMap::new(),
    }
}
