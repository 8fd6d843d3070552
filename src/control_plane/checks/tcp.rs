//! `protocol: tcp`: a backend is up when its port accepts a connection. It has no role of its
//! own, so an accepting backend is reported as `Primary` (writable) and routing treats every up
//! tcp backend as a candidate in configuration order.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use super::{CheckFailure, Facts};

/// Connect-only check; keeps nothing between checks.
#[derive(Debug, Default)]
pub struct TcpProbe;

impl TcpProbe {
    pub fn new() -> Self {
        TcpProbe
    }

    pub async fn check(
        &mut self,
        addr: SocketAddr,
        _connect_timeout: Duration,
    ) -> Result<Facts, CheckFailure> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| CheckFailure::from_io(&e))?;
        // Closing with a clean FIN is what a polite client does; nothing to read.
        drop(stream);
        Ok(Facts::accepting())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepting_port_is_up_and_closed_port_is_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut probe = TcpProbe::new();
        let facts = probe.check(addr, Duration::from_secs(1)).await.unwrap();
        assert_eq!(facts.role, super::super::ObservedRole::Primary);
        drop(listener);
        let err = probe.check(addr, Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(err.reason, super::super::FailureReason::Refused);
    }
}
