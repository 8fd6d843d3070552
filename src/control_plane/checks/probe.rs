//! The closed set of checks, chosen by the cluster's `protocol`. An enum rather than trait
//! objects: we are an application with four known protocols, not a library for other people's.

use std::net::SocketAddr;
use std::time::Duration;

use super::{mysql::MysqlProbe, postgres::PostgresProbe, redis::RedisProbe, tcp::TcpProbe};
use super::{CheckFailure, Facts};
use crate::config::{BackendAddress, CheckConfig, Protocol};

/// One backend's check, holding its persistent session between checks.
pub enum Probe {
    Tcp(TcpProbe),
    Postgres(PostgresProbe),
    Mysql(MysqlProbe),
    Redis(RedisProbe),
}

impl Probe {
    /// A probe for a backend written as an IP address: under `tls: verify-full` its
    /// certificate must name that IP (or `check.tls_server_name`).
    pub fn new(protocol: Protocol, check: &CheckConfig) -> Probe {
        Probe::with_host(protocol, check, None)
    }

    /// A probe for the backend at `address`: when it is a DNS name, that name is the one TLS
    /// verifies (unless `check.tls_server_name` says otherwise), not the IP it resolves to.
    pub fn for_backend(protocol: Protocol, check: &CheckConfig, address: &BackendAddress) -> Probe {
        let host = match address {
            BackendAddress::Dns { host, .. } => Some(host.as_str()),
            BackendAddress::Ip(_) => None,
        };
        Probe::with_host(protocol, check, host)
    }

    fn with_host(protocol: Protocol, check: &CheckConfig, host: Option<&str>) -> Probe {
        match protocol {
            Protocol::Tcp => Probe::Tcp(TcpProbe::new()),
            Protocol::Postgres => Probe::Postgres(PostgresProbe::for_host(check, host)),
            Protocol::Mysql => Probe::Mysql(MysqlProbe::for_host(check, host)),
            Protocol::Redis => Probe::Redis(RedisProbe::for_host(check, host)),
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
