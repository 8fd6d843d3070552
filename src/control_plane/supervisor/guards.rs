//! Session guards of one backend: the cancellation tokens sessions register under, and the
//! rule for when each is fired.
//!
//! `root` covers every session on the backend; `primary` and `replica` are its children and
//! cover the sessions routed to it *as* primary or replica. Firing a token closes exactly its
//! sessions; a fired token is replaced at once so that sessions placed later are unaffected.
//! Firing is a one-shot, lock-free broadcast, so closing 10,000 sessions is one call.

use tokio_util::sync::CancellationToken;

use crate::config::OnDemote;

/// The roles a backend held at the last decision, to detect losses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// Routed (or routable, if not for an operator drain) as its cluster's primary.
    pub primary: bool,
    /// Up and confirmed replica (lag does not matter: a lagging replica keeps its sessions).
    pub replica: bool,
    /// Up at all.
    pub up: bool,
}

/// Which guards fired, so the caller can log and count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fired {
    pub root: bool,
    pub primary: bool,
    pub replica: bool,
}

impl Fired {
    pub fn any(self) -> bool {
        self.root || self.primary || self.replica
    }
}

#[derive(Debug)]
pub struct Guards {
    parent: CancellationToken,
    pub root: CancellationToken,
    pub primary: CancellationToken,
    pub replica: CancellationToken,
    /// Bumped whenever a token is replaced, so the routing table is rebuilt with the new one.
    pub epoch: u64,
    held: Held,
}

impl Guards {
    /// Guards under `parent` (the process-wide session token, fired at the end of a drain).
    pub fn new(parent: &CancellationToken) -> Guards {
        let root = parent.child_token();
        Guards {
            parent: parent.clone(),
            primary: root.child_token(),
            replica: root.child_token(),
            root,
            epoch: 0,
            held: Held::default(),
        }
    }

    /// Records the roles held now and fires the guards of roles lost, per `on_demote`.
    /// `Held` ignores operator drains, so draining a backend never closes its sessions.
    pub fn update(&mut self, now: Held, on_demote: OnDemote) -> Fired {
        let before = std::mem::replace(&mut self.held, now);
        let mut fired = Fired::default();
        if on_demote == OnDemote::Keep {
            return fired;
        }
        if before.up && !now.up {
            self.fire_all();
            fired.root = true;
            return fired;
        }
        if before.primary && !now.primary {
            self.primary.cancel();
            self.primary = self.root.child_token();
            fired.primary = true;
        }
        if before.replica && !now.replica {
            self.replica.cancel();
            self.replica = self.root.child_token();
            fired.replica = true;
        }
        if fired.any() {
            self.epoch += 1;
        }
        fired
    }

    /// Closes every session on the backend (disable, removal) regardless of `on_demote`.
    pub fn fire_all(&mut self) {
        self.root.cancel();
        self.root = self.parent.child_token();
        self.primary = self.root.child_token();
        self.replica = self.root.child_token();
        self.epoch += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(primary: bool, replica: bool, up: bool) -> Held {
        Held {
            primary,
            replica,
            up,
        }
    }

    #[test]
    fn losing_primary_fires_only_the_primary_guard_and_replaces_it() {
        let parent = CancellationToken::new();
        let mut g = Guards::new(&parent);
        g.update(held(true, false, true), OnDemote::Close);
        let (old_primary, old_replica, old_root) =
            (g.primary.clone(), g.replica.clone(), g.root.clone());
        let fired = g.update(held(false, true, true), OnDemote::Close);
        assert_eq!(
            fired,
            Fired {
                primary: true,
                ..Fired::default()
            }
        );
        assert!(old_primary.is_cancelled());
        assert!(!old_replica.is_cancelled() && !old_root.is_cancelled());
        assert!(!g.primary.is_cancelled(), "new sessions get a fresh guard");
        assert_eq!(g.epoch, 1);
    }

    #[test]
    fn going_down_fires_everything_and_keep_fires_nothing() {
        let parent = CancellationToken::new();
        let mut g = Guards::new(&parent);
        g.update(held(false, true, true), OnDemote::Close);
        let old = g.root.clone();
        assert!(g.update(held(false, false, false), OnDemote::Close).root);
        assert!(old.is_cancelled());

        let mut g = Guards::new(&parent);
        g.update(held(true, false, true), OnDemote::Keep);
        assert!(!g.update(held(false, false, false), OnDemote::Keep).any());
    }

    #[test]
    fn parent_cancellation_reaches_every_guard() {
        let parent = CancellationToken::new();
        let g = Guards::new(&parent);
        parent.cancel();
        assert!(g.primary.is_cancelled() && g.replica.is_cancelled() && g.root.is_cancelled());
    }
}
