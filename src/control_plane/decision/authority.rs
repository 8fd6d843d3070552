//! The AND-gate of a cluster with an authority (policy 7 of `mod.rs`): the node rolegate's
//! checks chose as primary is routed only when the authority's latest verdict names it.
//! Pure: the verdict arrives in [`AuthorityInput`], the policy in `ClusterPolicy::authority`.
//!
//! | verdict (latest report)            | routed as primary                              |
//! |------------------------------------|------------------------------------------------|
//! | `Leader(X)`, checks chose X        | X (the authority agrees)                       |
//! | `Leader(X)`, checks chose Y        | no one: held, reported (`disagrees`); Y's      |
//! |                                    | sessions are closed (`on_demote`)              |
//! | `NoLeader`                         | no one: held                                   |
//! | `UnknownMember`                    | no one: held, reported                         |
//! | `Unreachable` or none yet          | `trust_checks`: Y by the checks alone;         |
//! |                                    | `fail_closed`: no one, held                    |
//!
//! A switchover the authority announces (`hold`) holds the primary routes like an operator
//! hold until a primary other than the one at its start passes this gate.

use super::OperatorHold;
use crate::config::{BackendName, OnAuthorityLost};
use crate::control_plane::authority::Verdict;

/// What the cluster's authority last said, as the decision weighs it; kept in the cluster's
/// memory by the supervisor (`supervisor/authority_input.rs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorityInput {
    /// The latest verdict; `None` until the source's first report (treated as unreachable).
    pub verdict: Option<Verdict>,
    /// The latest report announced a switchover in progress (for `/status`; the decision
    /// weighs `hold`, which the supervisor sets when this turns on).
    pub announced: bool,
    /// A switchover the authority announced, with the primary routed when it began; the
    /// decision ends it when another primary passes the gate.
    pub hold: Option<OperatorHold>,
    /// The gate's latest outcome for the node the checks chose (`None`: they chose none).
    pub gate: Option<Gate>,
}

/// The gate's outcome for one candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// The authority names the candidate.
    Agrees,
    /// The authority is out of reach and `on_authority_lost: trust_checks`.
    TrustChecks,
    /// Not routed.
    Refused(Refusal),
}

/// Why the gate refused the checks' candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The authority names another backend.
    Disagrees,
    /// The authority names no leader.
    NoLeader,
    /// The authority names no backend of the cluster.
    UnknownMember,
    /// The authority is out of reach and `on_authority_lost: fail_closed`.
    Lost,
}

impl Gate {
    /// `/status` `authority.gate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Gate::Agrees => "agrees",
            Gate::TrustChecks => "trust_checks",
            Gate::Refused(Refusal::Disagrees) => "disagrees",
            Gate::Refused(Refusal::NoLeader) => "no_leader",
            Gate::Refused(Refusal::UnknownMember) => "unknown_member",
            Gate::Refused(Refusal::Lost) => "fail_closed",
        }
    }

    pub fn routes(self) -> bool {
        !matches!(self, Gate::Refused(_))
    }
}

/// The gate for the checks' `candidate`, under the cluster's `on_lost` policy.
pub fn gate(on_lost: OnAuthorityLost, input: &AuthorityInput, candidate: &BackendName) -> Gate {
    match &input.verdict {
        Some(Verdict::Leader(leader)) if leader == candidate => Gate::Agrees,
        Some(Verdict::Leader(_)) => Gate::Refused(Refusal::Disagrees),
        Some(Verdict::NoLeader { .. }) => Gate::Refused(Refusal::NoLeader),
        Some(Verdict::UnknownMember { .. }) => Gate::Refused(Refusal::UnknownMember),
        Some(Verdict::Unreachable { .. }) | None => match on_lost {
            OnAuthorityLost::TrustChecks => Gate::TrustChecks,
            OnAuthorityLost::FailClosed => Gate::Refused(Refusal::Lost),
        },
    }
}
