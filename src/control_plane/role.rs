//! The per-backend state machine: observations in, transitions out. Pure — no IO, no clock of
//! its own (the caller passes the observation's time), so every rule is unit-tested.
//!
//! Two things are tracked separately:
//!
//! - **Health** (`Unknown → Up/Down`) with hysteresis: `rise` consecutive successful checks
//!   make a backend `Up`, `fall` consecutive failed checks make it `Down`. Each counter resets
//!   on the opposite result. Every backend starts `Unknown` and is never routed to until `Up`.
//! - **Role** (`Unknown`, `Primary`, `Replica`) as confirmed by successful checks:
//!
//! | current role | observed replica          | observed primary                         |
//! |--------------|---------------------------|------------------------------------------|
//! | Unknown      | Replica at once           | Primary after `rise` consecutive claims  |
//! | Replica      | stays                     | Primary after `rise` consecutive claims  |
//! | Primary      | Replica at ONCE (demoted) | stays                                    |
//!
//! A primary is demoted at the first read-only/recovery answer because every write sent after
//! that answer would fail or, worse, land on a node that is about to follow another. A node is
//! promoted only after `rise` confirmations so that a transient answer (a node mid-promotion,
//! a restored snapshot) does not steal the write route. Failed checks do not change the role;
//! `Down` hides the backend from routing, and the role it reports when it comes back is judged
//! by the supervisor (which knows whether another node was confirmed in the meantime).

use std::num::NonZeroU32;

use tokio::time::Instant;

use crate::control_plane::checks::{CheckFailure, Facts, ObservedRole};

/// Health of a backend as the hysteresis sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Unknown,
    Up,
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// The role rolegate currently believes a backend has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Unknown,
    Primary,
    Replica,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Unknown => "unknown",
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }

    pub fn is_primary(self) -> bool {
        self == Role::Primary
    }
}

/// Rise/fall thresholds of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub rise: NonZeroU32,
    pub fall: NonZeroU32,
}

/// What one observation changed. `None` fields did not change.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub health: Option<(Health, Health)>,
    pub role: Option<(Role, Role)>,
    /// How long the change took to confirm: from the first observation that pointed to it
    /// (first failure, first primary claim, first success) to this one. Zero for a demotion.
    pub took: std::time::Duration,
}

impl Transition {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.health.is_none() && self.role.is_none()
    }
}

/// One backend's machine.
#[derive(Debug, Clone)]
pub struct BackendMachine {
    health: Health,
    role: Role,
    successes: u32,
    failures: u32,
    /// Consecutive successful checks claiming primary while not yet confirmed primary.
    primary_claims: u32,
    last_facts: Option<Facts>,
    last_failure: Option<CheckFailure>,
    /// When health or role last changed.
    since: Option<Instant>,
    /// First observation of the current streak (successes, failures or primary claims).
    streak_since: Option<Instant>,
    claims_since: Option<Instant>,
}

impl Default for BackendMachine {
    fn default() -> Self {
        BackendMachine {
            health: Health::Unknown,
            role: Role::Unknown,
            successes: 0,
            failures: 0,
            primary_claims: 0,
            last_facts: None,
            last_failure: None,
            since: None,
            streak_since: None,
            claims_since: None,
        }
    }
}

impl BackendMachine {
    pub fn health(&self) -> Health {
        self.health
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// Facts of the last successful check (kept while the backend is down, for `/status`).
    pub fn last_facts(&self) -> Option<&Facts> {
        self.last_facts.as_ref()
    }

    /// The most recent failure; cleared by the next success.
    pub fn last_failure(&self) -> Option<&CheckFailure> {
        self.last_failure.as_ref()
    }

    pub fn since(&self) -> Option<Instant> {
        self.since
    }

    /// Whether the latest successful check claimed primary (confirmed or not yet).
    pub fn claims_primary(&self) -> bool {
        self.last_failure.is_none()
            && self
                .last_facts
                .as_ref()
                .is_some_and(|f| f.role == ObservedRole::Primary)
    }

    /// Feeds one check result and returns what changed.
    pub fn observe(
        &mut self,
        result: Result<&Facts, &CheckFailure>,
        t: Thresholds,
        now: Instant,
    ) -> Transition {
        let before = (self.health, self.role);
        let streak_broken = match result {
            Ok(_) => self.successes == 0,
            Err(_) => self.failures == 0,
        };
        if streak_broken {
            self.streak_since = Some(now);
        }
        if matches!(result, Ok(f) if f.role == ObservedRole::Primary) && self.primary_claims == 0 {
            self.claims_since = Some(now);
        }
        match result {
            Ok(facts) => self.on_success(facts, t),
            Err(failure) => self.on_failure(failure, t),
        }
        let health = (before.0 != self.health).then_some((before.0, self.health));
        let role = (before.1 != self.role).then_some((before.1, self.role));
        if health.is_some() || role.is_some() {
            self.since = Some(now);
        }
        let from = match role {
            Some((_, Role::Primary)) => self.claims_since,
            Some(_) => Some(now),
            None => self.streak_since,
        };
        let took = from.map_or(std::time::Duration::ZERO, |f| {
            now.saturating_duration_since(f)
        });
        Transition { health, role, took }
    }

    /// Forgets the confirmed role (used when a backend is re-enabled by an operator, so that
    /// it must prove its role again).
    pub fn forget_role(&mut self) {
        self.role = Role::Unknown;
        self.primary_claims = 0;
    }

    fn on_success(&mut self, facts: &Facts, t: Thresholds) {
        self.failures = 0;
        self.successes = self.successes.saturating_add(1);
        self.last_failure = None;
        if self.health != Health::Up && self.successes >= t.rise.get() {
            self.health = Health::Up;
        }
        match facts.role {
            ObservedRole::Replica => {
                self.primary_claims = 0;
                self.role = Role::Replica;
            }
            ObservedRole::Primary => {
                if self.role != Role::Primary {
                    self.primary_claims = self.primary_claims.saturating_add(1);
                    if self.primary_claims >= t.rise.get() {
                        self.role = Role::Primary;
                    }
                }
            }
        }
        self.last_facts = Some(facts.clone());
    }

    fn on_failure(&mut self, failure: &CheckFailure, t: Thresholds) {
        self.successes = 0;
        self.primary_claims = 0;
        self.failures = self.failures.saturating_add(1);
        self.last_failure = Some(failure.clone());
        if self.health != Health::Down && self.failures >= t.fall.get() {
            self.health = Health::Down;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control_plane::checks::FailureReason;

    fn t(rise: u32, fall: u32) -> Thresholds {
        Thresholds {
            rise: NonZeroU32::new(rise).unwrap(),
            fall: NonZeroU32::new(fall).unwrap(),
        }
    }

    fn facts(role: ObservedRole) -> Facts {
        Facts {
            role,
            ..Facts::accepting()
        }
    }

    fn fail() -> CheckFailure {
        CheckFailure::new(FailureReason::Timeout, "no answer")
    }

    #[test]
    fn starts_unknown_and_needs_rise_confirmations_to_become_primary() {
        let now = Instant::now();
        let mut m = BackendMachine::default();
        assert_eq!((m.health(), m.role()), (Health::Unknown, Role::Unknown));
        let tr = m.observe(Ok(&facts(ObservedRole::Primary)), t(3, 2), now);
        assert!(tr.is_empty());
        m.observe(Ok(&facts(ObservedRole::Primary)), t(3, 2), now);
        assert_eq!(m.role(), Role::Unknown);
        let tr = m.observe(Ok(&facts(ObservedRole::Primary)), t(3, 2), now);
        assert_eq!(tr.health, Some((Health::Unknown, Health::Up)));
        assert_eq!(tr.role, Some((Role::Unknown, Role::Primary)));
        assert_eq!(m.since(), Some(now));
    }

    #[test]
    fn took_measures_from_the_first_observation_of_the_streak() {
        let t0 = Instant::now();
        let mut m = BackendMachine::default();
        m.observe(Ok(&facts(ObservedRole::Primary)), t(3, 2), t0);
        m.observe(
            Ok(&facts(ObservedRole::Primary)),
            t(3, 2),
            t0 + std::time::Duration::from_millis(250),
        );
        let tr = m.observe(
            Ok(&facts(ObservedRole::Primary)),
            t(3, 2),
            t0 + std::time::Duration::from_millis(500),
        );
        assert_eq!(tr.role, Some((Role::Unknown, Role::Primary)));
        assert_eq!(tr.took, std::time::Duration::from_millis(500));
        let tr = m.observe(
            Ok(&facts(ObservedRole::Replica)),
            t(3, 2),
            t0 + std::time::Duration::from_secs(1),
        );
        assert_eq!(tr.took, std::time::Duration::ZERO, "demotion is immediate");
        let t1 = t0 + std::time::Duration::from_secs(2);
        m.observe(Err(&fail()), t(3, 2), t1);
        let tr = m.observe(
            Err(&fail()),
            t(3, 2),
            t1 + std::time::Duration::from_millis(100),
        );
        assert_eq!(tr.health, Some((Health::Up, Health::Down)));
        assert_eq!(tr.took, std::time::Duration::from_millis(100));
    }

    #[test]
    fn primary_is_demoted_at_first_replica_observation() {
        let now = Instant::now();
        let mut m = BackendMachine::default();
        for _ in 0..2 {
            m.observe(Ok(&facts(ObservedRole::Primary)), t(2, 2), now);
        }
        assert_eq!(m.role(), Role::Primary);
        let tr = m.observe(Ok(&facts(ObservedRole::Replica)), t(2, 2), now);
        assert_eq!(tr.role, Some((Role::Primary, Role::Replica)));
        assert_eq!(m.health(), Health::Up);
    }

    #[test]
    fn an_interrupted_primary_claim_starts_counting_again() {
        let now = Instant::now();
        let mut m = BackendMachine::default();
        let th = t(2, 3);
        m.observe(Ok(&facts(ObservedRole::Replica)), th, now);
        m.observe(Ok(&facts(ObservedRole::Replica)), th, now);
        m.observe(Ok(&facts(ObservedRole::Primary)), th, now);
        m.observe(Err(&fail()), th, now);
        m.observe(Ok(&facts(ObservedRole::Primary)), th, now);
        assert_eq!(
            m.role(),
            Role::Replica,
            "claims were interrupted by a failure"
        );
        m.observe(Ok(&facts(ObservedRole::Primary)), th, now);
        assert_eq!(m.role(), Role::Primary);
    }

    #[test]
    fn fall_failures_take_it_down_and_rise_successes_bring_it_back() {
        let now = Instant::now();
        let mut m = BackendMachine::default();
        let th = t(2, 3);
        for _ in 0..2 {
            m.observe(Ok(&facts(ObservedRole::Replica)), th, now);
        }
        assert_eq!(m.health(), Health::Up);
        m.observe(Err(&fail()), th, now);
        m.observe(Err(&fail()), th, now);
        assert_eq!(m.health(), Health::Up);
        m.observe(Ok(&facts(ObservedRole::Replica)), th, now);
        m.observe(Err(&fail()), th, now);
        m.observe(Err(&fail()), th, now);
        assert_eq!(m.health(), Health::Up, "a success reset the failure count");
        let tr = m.observe(Err(&fail()), th, now);
        assert_eq!(tr.health, Some((Health::Up, Health::Down)));
        assert_eq!(
            m.last_failure().map(|f| f.reason),
            Some(FailureReason::Timeout)
        );
        assert_eq!(m.role(), Role::Replica, "failures do not change the role");
        m.observe(Ok(&facts(ObservedRole::Replica)), th, now);
        assert_eq!(m.health(), Health::Down);
        assert!(m.last_failure().is_none());
        let tr = m.observe(Ok(&facts(ObservedRole::Replica)), th, now);
        assert_eq!(tr.health, Some((Health::Down, Health::Up)));
    }

    #[test]
    fn unknown_backend_that_never_answers_goes_down_after_fall() {
        let now = Instant::now();
        let mut m = BackendMachine::default();
        m.observe(Err(&fail()), t(2, 2), now);
        assert_eq!(m.health(), Health::Unknown);
        let tr = m.observe(Err(&fail()), t(2, 2), now);
        assert_eq!(tr.health, Some((Health::Unknown, Health::Down)));
    }

    #[test]
    fn claims_primary_reflects_latest_successful_answer() {
        let now = Instant::now();
        let mut m = BackendMachine::default();
        m.observe(Ok(&facts(ObservedRole::Primary)), t(2, 2), now);
        assert!(m.claims_primary());
        m.observe(Err(&fail()), t(2, 2), now);
        assert!(!m.claims_primary());
    }
}
