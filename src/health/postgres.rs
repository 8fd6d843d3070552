//! TODO(probes): placeholder until the postgres check lands; reports every backend as failing.

use std::net::SocketAddr;
use std::time::Duration;

use super::{CheckFailure, Facts, FailureReason};
use crate::config::CheckConfig;

pub struct PostgresProbe;

impl PostgresProbe {
    pub fn new(_check: &CheckConfig) -> Self {
        PostgresProbe
    }

    pub async fn check(
        &mut self,
        _addr: SocketAddr,
        _connect_timeout: Duration,
    ) -> Result<Facts, CheckFailure> {
        Err(CheckFailure::new(
            FailureReason::WrongProtocol,
            "not implemented",
        ))
    }

    pub fn reset(&mut self) {}
}
