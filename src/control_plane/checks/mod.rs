//! Health and role checks: one probe task per backend, each producing an [`Observation`] per
//! check for the supervisor.
//!
//! A probe keeps one persistent, authenticated session to its backend (a PostgreSQL connection
//! is a forked server process; opening one per check would cost the database more than the
//! check is worth). A failed or timed-out check drops that session and the next check
//! reconnects. Every check runs under `check.timeout`; a timeout is a failure with reason
//! `timeout`. The address is resolved again before every check so that a DNS name that moves
//! (a managed database endpoint) moves the route with it.
//!
//! This module owns the probe loop and the shared vocabulary; the protocol modules only turn a
//! connection into [`Facts`]. With `check.tls`, the protocol modules open their session over
//! TLS (`tls.rs`: the verifier, the roots, and failures with reason `tls`).

mod failure;
#[cfg(test)]
mod fake;
mod mysql;
mod net;
pub mod parse;
mod postgres;
mod probe;
mod redis;
mod task;
mod tcp;
mod tls;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::routing::BackendKey;

pub use failure::{CheckFailure, FailureReason};
pub use probe::Probe;
pub use task::{spawn_probe, ProbeCommand, ProbeHandle, ProbeSettings};

/// The role a backend reported about itself. Parsed into this type, never left as a bool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObservedRole {
    /// Accepts writes: PostgreSQL not in recovery, MySQL `read_only=0` (and `super_read_only=0`),
    /// Redis `ROLE` = master, or a `tcp` backend that accepts connections.
    Primary,
    /// Read-only / in recovery / Redis slave.
    Replica,
}

impl ObservedRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ObservedRole::Primary => "primary",
            ObservedRole::Replica => "replica",
        }
    }
}

/// Replication facts a replica reports about itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplicaFacts {
    /// Replay delay as the server reports it. PostgreSQL: zero when everything received has
    /// been replayed (an idle primary must not make a replica look minutes behind); MySQL:
    /// `Seconds_Behind_Master`; `None` when the server cannot tell (e.g. replication stopped).
    pub lag: Option<Duration>,
    /// Replayed/applied position (PostgreSQL LSN as bytes, Redis replication offset), compared
    /// by the supervisor with the primary's [`Facts::write_position`].
    pub position: Option<u64>,
    /// Whether the replica is connected to its upstream and applying (MySQL IO+SQL threads
    /// running, Redis `master_link_status:up`, PostgreSQL WAL receiver streaming).
    pub link_up: bool,
}

/// What one successful check learned about a backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub role: ObservedRole,
    /// Set when `role` is Replica.
    pub replica: Option<ReplicaFacts>,
    /// The primary's current write position (PostgreSQL `pg_current_wal_lsn()`, Redis
    /// `master_repl_offset`), used to measure replicas by distance.
    pub write_position: Option<u64>,
    /// PostgreSQL timeline id, for `split_brain: highest_timeline`.
    pub timeline: Option<u32>,
}

impl Facts {
    /// Facts of a backend whose only observable property is that it accepts connections.
    pub fn accepting() -> Self {
        Facts {
            role: ObservedRole::Primary,
            replica: None,
            write_position: None,
            timeline: None,
        }
    }
}

/// The result of one check of one backend.
#[derive(Debug, Clone)]
pub struct Observation {
    pub backend: BackendKey,
    /// When the check finished (tokio clock, so tests can pause time).
    pub at: Instant,
    /// How long the check took.
    pub latency: Duration,
    /// The address the backend's name resolved to for this check.
    pub resolved: Option<SocketAddr>,
    pub result: Result<Facts, CheckFailure>,
}
