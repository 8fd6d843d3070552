//! What changed between two validated configs, by name: the input of reload's `apply`.
//!
//! Startup is a reload from nothing ([`ConfigDiff::initial`]), so there is one code path that
//! starts listeners and checkers (vector's "startup is a reload from empty"). The comparison is
//! field by field on the typed values (not on serialized text), and names are the identity: a
//! renamed listener is one removal plus one addition.

use std::collections::HashMap;
use std::hash::Hash;

use super::{BackendName, ClusterConfig, ClusterName, Config, ListenerConfig, ListenerName};

/// Everything a reload must act on. Lists keep the order of the config file (the new one for
/// added and changed entries, the old one for removed entries), so applying is deterministic.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConfigDiff {
    /// Listeners by name: sockets to open, close or rebind, and settings to swap.
    pub listeners: ListenerDiff,
    /// Clusters by name: checkers to start, stop or restart, and routing to rebuild.
    pub clusters: ClusterDiff,
    /// The admin address or token changed (the admin server is restarted or re-keyed).
    pub admin_changed: bool,
    /// `log:` changed (the tracing filter and format are swapped).
    pub log_changed: bool,
    /// `shutdown_grace` changed (only the value read at the next shutdown changes).
    pub shutdown_grace_changed: bool,
}

/// Listeners added, removed and changed between two configs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ListenerDiff {
    pub added: Vec<ListenerName>,
    pub removed: Vec<ListenerName>,
    pub changed: Vec<ListenerChange>,
}

/// A listener present in both configs with different settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerChange {
    pub name: ListenerName,
    /// The socket must be bound anew; otherwise only settings (cluster, role, limits…) moved
    /// and the existing socket keeps accepting.
    pub bind_changed: bool,
}

/// Clusters added, removed and changed between two configs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClusterDiff {
    pub added: Vec<ClusterName>,
    pub removed: Vec<ClusterName>,
    pub changed: Vec<ClusterChange>,
}

/// A cluster present in both configs with different settings or backends.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterChange {
    pub name: ClusterName,
    pub backends: BackendDiff,
    /// The protocol or the `check:` settings changed: every checker of the cluster restarts.
    pub check_changed: bool,
    /// Routing settings changed (`max_replica_lag`, `split_brain`, `on_demote`, timeouts,
    /// `retries`): the routing table is rebuilt, checkers keep running.
    pub settings_changed: bool,
}

/// Backends of one cluster, by name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BackendDiff {
    pub added: Vec<BackendName>,
    pub removed: Vec<BackendName>,
    /// Same name, new address: its checker restarts and its state starts over from unknown.
    pub changed: Vec<BackendName>,
}

// === impl ConfigDiff ===

impl ConfigDiff {
    /// The diff from an empty config: everything in `config` is added.
    pub fn initial(config: &Config) -> ConfigDiff {
        ConfigDiff {
            listeners: ListenerDiff {
                added: config.listeners.iter().map(|l| l.name.clone()).collect(),
                ..ListenerDiff::default()
            },
            clusters: ClusterDiff {
                added: config.clusters.iter().map(|c| c.name.clone()).collect(),
                ..ClusterDiff::default()
            },
            admin_changed: true,
            log_changed: true,
            shutdown_grace_changed: true,
        }
    }

    /// What changed from `old` to `new`.
    pub fn between(old: &Config, new: &Config) -> ConfigDiff {
        let (added, removed, both) = by_name(&old.listeners, &new.listeners, |l| &l.name);
        let listeners = ListenerDiff {
            added,
            removed,
            changed: both
                .into_iter()
                .filter(|(o, n)| o != n)
                .map(|(o, n)| listener_change(o, n))
                .collect(),
        };
        let (added, removed, both) = by_name(&old.clusters, &new.clusters, |c| &c.name);
        let clusters = ClusterDiff {
            added,
            removed,
            changed: both
                .into_iter()
                .filter_map(|(o, n)| cluster_change(o, n))
                .collect(),
        };
        ConfigDiff {
            listeners,
            clusters,
            admin_changed: old.admin != new.admin,
            log_changed: old.log != new.log,
            shutdown_grace_changed: old.shutdown_grace != new.shutdown_grace,
        }
    }

    /// True when a reload would change nothing.
    pub fn is_empty(&self) -> bool {
        *self == ConfigDiff::default()
    }
}

fn listener_change(old: &ListenerConfig, new: &ListenerConfig) -> ListenerChange {
    ListenerChange {
        name: new.name.clone(),
        bind_changed: old.bind != new.bind,
    }
}

fn cluster_change(old: &ClusterConfig, new: &ClusterConfig) -> Option<ClusterChange> {
    let (added, removed, both) = by_name(&old.backends, &new.backends, |b| &b.name);
    let backends = BackendDiff {
        added,
        removed,
        changed: both
            .into_iter()
            .filter(|(o, n)| o.address != n.address)
            .map(|(_, n)| n.name.clone())
            .collect(),
    };
    let check_changed = old.protocol != new.protocol || old.check != new.check;
    let settings_changed = old.max_replica_lag != new.max_replica_lag
        || old.split_brain != new.split_brain
        || old.on_demote != new.on_demote
        || old.connect_timeout != new.connect_timeout
        || old.idle_timeout != new.idle_timeout
        || old.retries != new.retries;
    let unchanged = backends == BackendDiff::default() && !check_changed && !settings_changed;
    (!unchanged).then(|| ClusterChange {
        name: new.name.clone(),
        backends,
        check_changed,
        settings_changed,
    })
}

/// Matches two lists by name: (names only in `new`, names only in `old`, pairs in both).
/// Names are unique within a validated list, so a map lookup is exact.
fn by_name<'a, T, K: Clone + Eq + Hash>(
    old: &'a [T],
    new: &'a [T],
    name: impl Fn(&T) -> &K,
) -> (Vec<K>, Vec<K>, Vec<(&'a T, &'a T)>) {
    let old_by_name: HashMap<&K, &T> = old.iter().map(|item| (name(item), item)).collect();
    let new_by_name: HashMap<&K, &T> = new.iter().map(|item| (name(item), item)).collect();
    let mut added = Vec::new();
    let mut both = Vec::new();
    for item in new {
        match old_by_name.get(name(item)) {
            Some(previous) => both.push((*previous, item)),
            None => added.push(name(item).clone()),
        }
    }
    let removed = old
        .iter()
        .filter(|item| !new_by_name.contains_key(name(item)))
        .map(|item| name(item).clone())
        .collect();
    (added, removed, both)
}

#[cfg(test)]
mod tests;
