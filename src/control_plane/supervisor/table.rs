//! Building the routing table from the supervisor's state (off the hot path), and the
//! fingerprint that tells whether a new table differs from the stored one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use super::{ClusterState, Supervisor};
use crate::config::{ListenerConfig, ListenerName, RoleFilter};
use crate::control_plane::decision::Decision;
use crate::routing::{BackendEntry, BackendKey, Candidate, Route, RouteSettings, Unavailable};

/// Everything that makes two tables route differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(Vec<RouteFingerprint>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct RouteFingerprint {
    listener: ListenerName,
    settings: RouteSettings,
    serves: RoleFilter,
    candidates: Vec<(BackendKey, SocketAddr, u64)>,
    unavailable: Option<Unavailable>,
}

pub struct Built {
    pub routes: HashMap<ListenerName, Route>,
    pub fingerprint: Fingerprint,
}

/// The backends a listener's route uses, and the role they serve.
fn route_members(
    listener: &ListenerConfig,
    decision: &Decision,
) -> Result<(RoleFilter, Vec<crate::config::BackendName>), Unavailable> {
    let for_role = |role: RoleFilter| -> Result<Vec<_>, Unavailable> {
        match role {
            RoleFilter::Primary => decision.primary.clone(),
            RoleFilter::Replica if decision.replicas.is_empty() => Err(Unavailable::NoReplica),
            RoleFilter::Replica => Ok(decision.replicas.clone()),
            RoleFilter::Any if decision.any.is_empty() => Err(Unavailable::NoBackend),
            RoleFilter::Any => Ok(decision.any.clone()),
        }
    };
    match for_role(listener.role) {
        Ok(v) => Ok((listener.role, v)),
        Err(first) => match listener.fallback {
            Some(fb) => for_role(fb).map(|v| (fb, v)).map_err(|_| first),
            None => Err(first),
        },
    }
}

pub fn build(sup: &mut Supervisor) -> Built {
    let mut routes = HashMap::new();
    let mut prints = Vec::new();
    let listeners = sup.listeners.clone();
    for listener in &listeners {
        let cursor = sup
            .cursors
            .entry(listener.name.clone())
            .or_insert_with(|| Arc::new(AtomicUsize::new(0)))
            .clone();
        let Some(ci) = sup.cluster_index(&listener.cluster) else {
            continue; // validated configs always name a cluster
        };
        let members = match &sup.clusters[ci].decision {
            Some(d) => route_members(listener, d),
            None => Err(Unavailable::NoBackend),
        };
        let (serves, names, reason) = match members {
            Ok((serves, names)) => (serves, names, Unavailable::NoBackend),
            Err(u) => (listener.role, Vec::new(), u),
        };
        let mut candidates = Vec::with_capacity(names.len());
        let mut print = Vec::with_capacity(names.len());
        for name in &names {
            let Some(c) = candidate(sup, ci, listener, serves, name) else {
                continue;
            };
            print.push((c.0.backend.key.clone(), c.0.backend.addr, c.1));
            candidates.push(c.0);
        }
        // Members without a resolved address cannot be used; if none is left the route is
        // unavailable for the reason of the role it serves.
        let reason = if names.is_empty() {
            reason
        } else {
            unavailable_for(serves)
        };
        let cfg = &sup.clusters[ci].config;
        let settings = RouteSettings {
            connect_timeout: cfg.connect_timeout,
            retries: cfg.retries,
            idle_timeout: cfg.idle_timeout,
            queue_timeout: listener.queue_timeout,
            transfer: listener.transfer,
            session_level: sup.session_level,
            proxy_protocol: crate::data_plane::proxy_protocol::ProxyProtocol {
                accept: listener.accept_proxy.then_some(listener.proxy_timeout),
                send: listener.send_proxy,
            },
        };
        let route = Route::new(
            cfg.name.clone(),
            Arc::new(settings.clone()),
            serves,
            candidates,
            reason,
            listener.balance,
            cursor,
        );
        prints.push(RouteFingerprint {
            listener: listener.name.clone(),
            settings,
            serves,
            candidates: print,
            unavailable: route.unavailable,
        });
        routes.insert(listener.name.clone(), route);
    }
    Built {
        routes,
        fingerprint: Fingerprint(prints),
    }
}

fn unavailable_for(serves: RoleFilter) -> Unavailable {
    match serves {
        RoleFilter::Primary => Unavailable::NoPrimary,
        RoleFilter::Replica => Unavailable::NoReplica,
        RoleFilter::Any => Unavailable::NoBackend,
    }
}

fn candidate(
    sup: &mut Supervisor,
    ci: usize,
    listener: &ListenerConfig,
    serves: RoleFilter,
    name: &crate::config::BackendName,
) -> Option<(Candidate, u64)> {
    let cluster: &mut ClusterState = &mut sup.clusters[ci];
    let slot = cluster
        .backends
        .iter_mut()
        .find(|b| &b.key.backend == name)?;
    let addr = slot.resolved?;
    let entry = slot
        .entry
        .get_or_insert_with(|| {
            Arc::new(BackendEntry {
                key: slot.key.clone(),
                addr,
                active: slot.active.clone(),
            })
        })
        .clone();
    let guard = match serves {
        RoleFilter::Primary => slot.guards.primary.clone(),
        RoleFilter::Replica => slot.guards.replica.clone(),
        RoleFilter::Any => slot.guards.root.clone(),
    };
    let epoch = slot.guards.epoch;
    let key = (listener.name.clone(), slot.key.clone());
    let metrics = sup
        .session_metrics
        .entry(key)
        .or_insert_with(|| {
            sup.metrics
                .session_metrics(listener.name.as_str(), entry.key.backend.as_str())
        })
        .clone();
    Some((
        Candidate {
            backend: entry,
            guard,
            metrics,
        },
        epoch,
    ))
}
