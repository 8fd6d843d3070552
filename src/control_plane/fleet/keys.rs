//! The key layout under `coordination.prefix` (README, "Fleet mode"): one place that names
//! every key, so writers, readers and the docs cannot drift apart.
//!
//! | key | value | lease |
//! |---|---|---|
//! | `PREFIX/instances/NAME` | `{"mode":…,"observing":…}` | the instance's |
//! | `PREFIX/observers/N` (N < `observers`) | the holder's name | the holder's |
//! | `PREFIX/leader` | the leader's name | the leader's |
//! | `PREFIX/reports/INSTANCE/CLUSTER/BACKEND` | wall clock (ms) of a follower's failed connect | the reporter's |
//! | `PREFIX/admin/CLUSTER/BACKEND` | `{"action":"drain","by":…,"at_ms":…}` | none |
//! | `PREFIX/hold/CLUSTER` | `{"by":…,"at_ms":…,"until_ms":…,"primary":…}` | none: removed on release or by the leader once another primary is routed |
//! | `PREFIX/decision/CLUSTER` | a [`super::record::DecisionRecord`] (JSON) | none: it outlives its writer |

pub struct Keys {
    prefix: String,
}

/// The segments after `PREFIX/` of the keys the fleet applies.
const DECISION: &str = "decision";
const HOLD: &str = "hold";
const ADMIN: &str = "admin";
const REPORTS: &str = "reports";

/// What a key under the prefix is, for the one watch that reads them all (`follower.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetKey<'k> {
    Decision(&'k str),
    Hold(&'k str),
    /// (cluster, backend)
    Admin(&'k str, &'k str),
    /// (cluster, backend)
    Report(&'k str, &'k str),
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    /// `PREFIX/`: every key below; the followers' one watch covers it.
    pub fn root(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// Which of the keys the fleet applies `key` is (`None`: instances, slots, the leader,
    /// or anything else under the prefix). One pass over the key, no allocation: the one
    /// watch runs it on every event.
    pub fn classify<'k>(&self, key: &'k str) -> Option<FleetKey<'k>> {
        let rest = key.strip_prefix(self.prefix.as_str())?.strip_prefix('/')?;
        let (kind, tail) = rest.split_once('/')?;
        match kind {
            DECISION => (!tail.is_empty()).then_some(FleetKey::Decision(tail)),
            HOLD => (!tail.is_empty() && !tail.contains('/')).then_some(FleetKey::Hold(tail)),
            ADMIN => {
                let (cluster, backend) = tail.split_once('/')?;
                (!cluster.is_empty() && !backend.is_empty() && !backend.contains('/'))
                    .then_some(FleetKey::Admin(cluster, backend))
            }
            REPORTS => {
                let mut parts = tail.splitn(3, '/');
                let (_instance, cluster, backend) = (parts.next()?, parts.next()?, parts.next()?);
                (!cluster.is_empty() && !backend.is_empty())
                    .then_some(FleetKey::Report(cluster, backend))
            }
            _ => None,
        }
    }

    pub fn instance(&self, name: &str) -> String {
        format!("{}/instances/{name}", self.prefix)
    }

    pub fn observer_slot(&self, n: u32) -> String {
        format!("{}/observers/{n}", self.prefix)
    }

    pub fn leader(&self) -> String {
        format!("{}/leader", self.prefix)
    }

    /// Prefix of the fleet-wide operator actions.
    pub fn admins(&self) -> String {
        format!("{}/{ADMIN}/", self.prefix)
    }

    /// `PREFIX/admin/CLUSTER/BACKEND`.
    pub fn admin(&self, cluster: &str, backend: &str) -> String {
        format!("{}{cluster}/{backend}", self.admins())
    }

    /// (cluster, backend) of an admin key.
    pub fn admin_target<'k>(&self, key: &'k str) -> Option<(&'k str, &'k str)> {
        match self.classify(key)? {
            FleetKey::Admin(cluster, backend) => Some((cluster, backend)),
            _ => None,
        }
    }

    /// Prefix of the fleet-wide operator holds.
    pub fn holds(&self) -> String {
        format!("{}/{HOLD}/", self.prefix)
    }

    /// `PREFIX/hold/CLUSTER`.
    pub fn hold(&self, cluster: &str) -> String {
        format!("{}{cluster}", self.holds())
    }

    /// The cluster a hold key names, if it is one.
    pub fn held_cluster<'k>(&self, key: &'k str) -> Option<&'k str> {
        match self.classify(key)? {
            FleetKey::Hold(cluster) => Some(cluster),
            _ => None,
        }
    }

    /// Prefix of the followers' failed-connect reports (the observers watch it).
    pub fn reports(&self) -> String {
        format!("{}/{REPORTS}/", self.prefix)
    }

    /// `PREFIX/reports/INSTANCE/CLUSTER/BACKEND`, held by the reporter's lease.
    pub fn report(&self, instance: &str, cluster: &str, backend: &str) -> String {
        format!("{}{instance}/{cluster}/{backend}", self.reports())
    }

    /// (cluster, backend) of a report key.
    pub fn reported<'k>(&self, key: &'k str) -> Option<(&'k str, &'k str)> {
        match self.classify(key)? {
            FleetKey::Report(cluster, backend) => Some((cluster, backend)),
            _ => None,
        }
    }

    /// Prefix of every decision key.
    pub fn decisions(&self) -> String {
        format!("{}/{DECISION}/", self.prefix)
    }

    pub fn decision(&self, cluster: &str) -> String {
        format!("{}{cluster}", self.decisions())
    }

    /// The cluster a decision key names, if it is one.
    pub fn cluster_of<'k>(&self, key: &'k str) -> Option<&'k str> {
        match self.classify(key)? {
            FleetKey::Decision(cluster) => Some(cluster),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Keys;

    #[test]
    fn every_key_is_under_the_prefix_and_decisions_round_trip() {
        let k = Keys::new("/rolegate/prod/");
        assert_eq!(k.leader(), "/rolegate/prod/leader");
        assert_eq!(k.observer_slot(1), "/rolegate/prod/observers/1");
        assert_eq!(k.instance("a"), "/rolegate/prod/instances/a");
        let d = k.decision("pg");
        assert_eq!(d, "/rolegate/prod/decision/pg");
        assert_eq!(k.cluster_of(&d), Some("pg"));
        assert_eq!(k.cluster_of("/rolegate/prod/decision/"), None);
        assert_eq!(k.cluster_of("/rolegate/prod/leader"), None);
        let r = k.report("f1", "pg", "a");
        assert_eq!(r, "/rolegate/prod/reports/f1/pg/a");
        assert_eq!(k.reported(&r), Some(("pg", "a")));
        assert_eq!(k.reported("/rolegate/prod/reports/f1/pg"), None);
        let a = k.admin("pg", "a");
        assert_eq!(a, "/rolegate/prod/admin/pg/a");
        assert_eq!(k.admin_target(&a), Some(("pg", "a")));
        assert_eq!(k.admin_target("/rolegate/prod/admin/pg"), None);
        let h = k.hold("pg");
        assert_eq!(h, "/rolegate/prod/hold/pg");
        assert_eq!(k.held_cluster(&h), Some("pg"));
        assert_eq!(k.held_cluster("/rolegate/prod/hold/"), None);
        assert_eq!(k.held_cluster("/rolegate/prod/hold/pg/x"), None);
    }

    /// The followers' one watch covers `root()`: every key it must apply classifies, in
    /// order, from one stream; the others (instances, slots, the leader) are passed over.
    #[test]
    fn every_applied_key_is_under_the_root_and_classifies() {
        use super::FleetKey;
        let k = Keys::new("/rolegate/prod");
        let root = k.root();
        assert_eq!(root, "/rolegate/prod/");
        let d = k.decision("pg");
        let h = k.hold("pg");
        let a = k.admin("pg", "a");
        let r = k.report("f1", "pg", "a");
        for key in [
            &d,
            &h,
            &a,
            &r,
            &k.leader(),
            &k.instance("f1"),
            &k.observer_slot(0),
        ] {
            assert!(key.starts_with(&root), "{key}");
        }
        assert_eq!(k.classify(&d), Some(FleetKey::Decision("pg")));
        assert_eq!(k.classify(&h), Some(FleetKey::Hold("pg")));
        assert_eq!(k.classify(&a), Some(FleetKey::Admin("pg", "a")));
        assert_eq!(k.classify(&r), Some(FleetKey::Report("pg", "a")));
        assert_eq!(k.classify(&k.leader()), None);
        assert_eq!(k.classify(&k.instance("f1")), None);
        assert_eq!(k.classify(&k.observer_slot(0)), None);
        assert_eq!(k.classify("/rolegate/prodx/decision/pg"), None);
    }
}
