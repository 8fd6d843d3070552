//! `authority.sentinel`: the Redis Sentinels whose quorum names a Redis cluster's master
//! (README, "Authorities", "Redis Sentinel").

use std::time::Duration;

use super::{BackendAddress, Secret};

/// Where the Sentinels are and how to ask them.
#[derive(Debug, Clone, PartialEq)]
pub struct SentinelConfig {
    /// Every Sentinel that monitors the master (at least one; three or more in production).
    /// The truth is what a majority of *these* reports, so list them all.
    pub addresses: Vec<BackendAddress>,
    /// The name the Sentinels monitor the master under (`sentinel monitor <name> ...`).
    pub master_name: String,
    /// ACL user of the Sentinels (`user` with `+sentinel|get-master-addr-by-name +subscribe
    /// +psubscribe +ping`); `None` with a password: `requirepass` of the Sentinels.
    pub user: Option<String>,
    /// The Sentinels' password (not the Redis nodes': those are in `check`).
    pub password: Option<Secret>,
    /// Bound of every exchange with one Sentinel: connect, login, query, subscribe, ping.
    pub timeout: Duration,
    /// How often the quorum is asked without an event (events ask at once).
    pub interval: Duration,
    /// The longest a failover announced by the Sentinels holds new primary connections before
    /// the quorum names the new master; past it the hold ends and a warning is logged.
    pub hold_timeout: Duration,
}

impl SentinelConfig {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
    pub const DEFAULT_HOLD_TIMEOUT: Duration = Duration::from_secs(10);
}
