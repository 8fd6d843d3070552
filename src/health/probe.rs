//! The closed set of checks, chosen by the cluster's `protocol`. An enum rather than trait
//! objects: we are an application with four known protocols, not a library for other people's.

use std::net::SocketAddr;
use std::time::Duration;

use super::{mysql::MysqlProbe, postgres::PostgresProbe, redis::RedisProbe, tcp::TcpProbe};
use super::{CheckFailure, Facts};
use crate::config::{CheckConfig, Protocol};

/// One backend's check, holding its persistent session between checks.
pub enum Probe {
    Tcp(TcpProbe),
    Postgres(PostgresProbe),
    Mysql(MysqlProbe),
    Redis(RedisProbe),
}

impl Probe {
    pub fn new(protocol: Protocol, check: &CheckConfig) -> Probe {
        match protocol {
            Protocol::Tcp => Probe::Tcp(TcpProbe::new()),
            Protocol::Postgres => Probe::Postgres(PostgresProbe::new(check)),
            Protocol::Mysql => Probe::Mysql(MysqlProbe::new(check)),
            Protocol::Redis => Probe::Redis(RedisProbe::new(check)),
        }
    }

    /// Runs one check against `addr`. The caller bounds the whole call with `check.timeout`
    /// (and calls [`Probe::reset`] when it fires); `connect_timeout` is the same budget, given
    /// so that a client crate's own connect timeout can be set to it.
    pub async fn check(
        &mut self,
        addr: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<Facts, CheckFailure> {
        match self {
            Probe::Tcp(p) => p.check(addr, connect_timeout).await,
            Probe::Postgres(p) => p.check(addr, connect_timeout).await,
            Probe::Mysql(p) => p.check(addr, connect_timeout).await,
            Probe::Redis(p) => p.check(addr, connect_timeout).await,
        }
    }

    /// Drops the persistent session so that the next check reconnects (after a failure or a
    /// timeout, whose session state is unknown).
    pub fn reset(&mut self) {
        match self {
            Probe::Tcp(_) => {}
            Probe::Postgres(p) => p.reset(),
            Probe::Mysql(p) => p.reset(),
            Probe::Redis(p) => p.reset(),
        }
    }
}
