//! How every etcd reader of the control plane (fleet mode, Patroni's DCS) connects: the
//! config's endpoints, credentials and TLS, watches that require a leader (a member cut off
//! from the quorum cancels them instead of going silent), and HTTP/2 pings no more often than
//! etcd allows.

use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use crate::config::EtcdConfig;

/// etcd's default `--grpc-keepalive-min-time`: a client that pings more often is sent a GOAWAY
/// (`too_many_pings`) after a few pings, which cut every session ~8 s after it was opened while
/// the pings came every 2 s.
pub const MIN_PING_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("read {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
}

/// Connects with `timeout` for the connect, each request and a ping's answer. Pings (which find
/// a dead connection under a watch or a lease keep-alive) are sent every `timeout`, but never
/// more often than [`MIN_PING_INTERVAL`], and only on connections that carry a stream.
pub async fn connect(etcd: &EtcdConfig, timeout: Duration) -> Result<Client, ConnectError> {
    let mut options = ConnectOptions::new()
        .with_require_leader(true)
        .with_connect_timeout(timeout)
        .with_timeout(timeout)
        .with_keep_alive(timeout.max(MIN_PING_INTERVAL), timeout)
        // etcd refuses pings on a connection without a stream (its default
        // `PermitWithoutStream: false`): the idle connections to the other endpoints would be
        // sent a GOAWAY for them. A request on such a connection has its own timeout.
        .with_keep_alive_while_idle(false);
    if let (Some(user), Some(password)) = (&etcd.user, &etcd.password) {
        options = options.with_user(user.clone(), password.expose().to_string());
    }
    if let Some(tls) = &etcd.tls {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|source| ConnectError::File {
                path: p.display().to_string(),
                source,
            })
        };
        let mut t = TlsOptions::new();
        if let Some(ca) = &tls.ca_file {
            t = t.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            t = t.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        options = options.with_tls(t);
    }
    Ok(Client::connect(&etcd.endpoints, Some(options)).await?)
}
