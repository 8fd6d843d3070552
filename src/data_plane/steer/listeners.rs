//! The listeners with `steer:` and the map keys each one owns: its bound address, or for a
//! wildcard bind the unspecified address (which loopback destinations fall back to in the
//! program) plus every local address of that family ([`super::local`]).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use tracing::warn;

use super::State;
use crate::config::{Config, ListenerName};

/// One listener with `steer:`.
pub struct Steered {
    pub name: ListenerName,
    /// The listener's number in the program's maps (stable across reloads).
    pub id: u32,
    pub cgroup: PathBuf,
    /// The address clients connect to (the bound one, so port 0 works).
    pub addr: SocketAddr,
}

impl Steered {
    /// Whether the listener binds `0.0.0.0` or `[::]` (rolegate binds `[::]` IPv6-only).
    pub fn wildcard(&self) -> bool {
        self.addr.ip().is_unspecified()
    }

    /// The map keys of this listener given the host's non-loopback addresses `local`.
    pub fn keys(&self, local: &BTreeSet<IpAddr>) -> Vec<SocketAddr> {
        let addr = self.addr;
        let mut keys = vec![addr];
        if addr.ip().is_unspecified() {
            keys.extend(
                local
                    .iter()
                    .filter(|ip| ip.is_ipv4() == addr.is_ipv4())
                    .map(|ip| SocketAddr::new(*ip, addr.port())),
            );
        }
        keys
    }
}

/// The steered listeners of `config`, numbered from `ids` (new names get new numbers).
pub fn from_config(
    config: &Config,
    bound: &HashMap<ListenerName, SocketAddr>,
    ids: &mut HashMap<ListenerName, u32>,
) -> Vec<Steered> {
    config
        .listeners
        .iter()
        .filter_map(|l| {
            let steer = l.steer.as_ref()?;
            let next = u32::try_from(ids.len()).unwrap_or(u32::MAX);
            let id = *ids.entry(l.name.clone()).or_insert(next);
            Some(Steered {
                name: l.name.clone(),
                id,
                cgroup: steer.cgroup.clone(),
                addr: bound.get(&l.name).copied().unwrap_or(l.bind),
            })
        })
        .collect()
}

/// Attaches the program to every cgroup a listener names and detaches it from the others; a
/// cgroup that cannot be attached is recorded (its listeners report why) with one warning.
pub fn attach_cgroups(state: &mut State) {
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
        if let Err(e) = kernel.attach(&path) {
            warn!(
                message = "Steering is off for a cgroup: its listeners serve those clients as a proxy.",
                cgroup = %path.display(),
                reason = %e,
            );
            state.cgroup_errors.insert(path, e.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steered(addr: &str) -> Steered {
        Steered {
            name: "l".into(),
            id: 0,
            cgroup: "/x".into(),
            addr: addr.parse().unwrap(),
        }
    }

    #[test]
    fn a_wildcard_owns_the_unspecified_key_and_the_local_addresses_of_its_family() {
        let local: BTreeSet<IpAddr> = ["192.0.2.2", "fd00::2"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let keys = |a: &str| -> Vec<String> {
            steered(a)
                .keys(&local)
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(keys("0.0.0.0:5432"), ["0.0.0.0:5432", "192.0.2.2:5432"]);
        assert_eq!(keys("[::]:5432"), ["[::]:5432", "[fd00::2]:5432"]);
        assert_eq!(keys("127.0.0.1:5432"), ["127.0.0.1:5432"]);
        assert_eq!(keys("[::1]:5432"), ["[::1]:5432"]);
        assert!(steered("0.0.0.0:1").wildcard() && !steered("[::1]:1").wildcard());
    }
}
