//! TLS for the checks' sessions (`check.tls`): one rustls client per probe, the certificate
//! verifier behind the libpq-style modes, and (`explain.rs`) the translation of rustls' errors into
//! failures an operator can act on ("unknown issuer; set check.tls_ca_file ...", "name mismatch: ...").
//!
//! Why rustls, and ring: no OpenSSL to link or patch, one TLS stack for the three engines, and
//! typed errors (the verification failure is an enum, not a string to grep). ring builds with a
//! C compiler only; aws-lc-rs would add cmake-class build requirements for nothing the checks
//! need.
//!
//! Roots: `tls_ca_file` when set (read by the config loader), else the operating system's trust
//! store through `rustls-native-certs` — the store operators already manage with their
//! distribution's tools (`update-ca-certificates`), rather than a CA list compiled into the
//! binary (`webpki-roots`) that only a rebuild could change. The system store is read once per
//! process, on first use.
//!
//! PostgreSQL and Redis run their handshake on our own TCP stream with this module's client;
//! MySQL's TLS starts in the middle of its protocol, inside mysql_async, which is handed the same
//! roots and name (see `mysql.rs`); its errors are the same rustls errors, explained here too.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

mod explain;

use super::net::Greeting;
use super::{CheckFailure, FailureReason};
use crate::config::{CheckTls, TlsMode};

use explain::not_tls;
pub(super) use explain::rustls_error;

/// The crypto provider of every TLS session rolegate opens. Also installed as the process
/// default, because mysql_async builds its rustls config from the default (and would panic
/// without one if two providers were ever compiled in).
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            // Err means some provider is installed already; that one then serves mysql_async.
            let _ = rustls::crypto::ring::default_provider().install_default();
            Arc::new(rustls::crypto::ring::default_provider())
        })
        .clone()
}

/// Makes sure a process-wide crypto provider exists before mysql_async needs one.
pub(super) fn install_provider() {
    let _ = provider();
}

/// The operating system's trust store, read once (a few hundred certificates; reading and
/// parsing it per probe would cost every reload for nothing).
fn system_roots() -> Result<Roots, String> {
    static SYSTEM: OnceLock<Result<Roots, String>> = OnceLock::new();
    SYSTEM
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            let (added, _ignored) = store.add_parsable_certificates(found.certs.iter().cloned());
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default();
                return Err(format!(
                    "the system's trust store holds no usable CA certificate{why}"
                ));
            }
            Ok(Roots {
                der: Arc::from(found.certs),
                store: Arc::new(store),
            })
        })
        .clone()
}

/// A set of trust anchors, as DER (for mysql_async) and as a rustls store.
#[derive(Clone)]
struct Roots {
    der: Arc<[CertificateDer<'static>]>,
    store: Arc<RootCertStore>,
}

/// Where the roots came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RootsSource {
    File(PathBuf),
    System,
}

/// One probe's TLS client: mode, roots and the name to verify.
pub(super) struct TlsClient {
    mode: TlsMode,
    /// `tls_server_name`, else the backend's DNS host; `None`: the address's IP.
    name: Option<String>,
    source: RootsSource,
    /// The roots in force; `Err` when they could not be loaded (every check then fails with
    /// this, rather than the process refusing to start over one cluster).
    roots: Result<Roots, CheckFailure>,
    /// The client config for PostgreSQL and Redis, built from the same roots.
    config: Result<Arc<ClientConfig>, CheckFailure>,
}

// === impl TlsClient ===

impl TlsClient {
    /// The client for `tls`, or `None` when the check is plain. `host` is the backend address's
    /// DNS name, when it has one.
    pub(super) fn new(tls: &CheckTls, host: Option<&str>) -> Option<TlsClient> {
        if tls.mode == TlsMode::Disable {
            return None;
        }
        let source = match &tls.ca {
            Some(ca) => RootsSource::File(ca.path.clone()),
            None => RootsSource::System,
        };
        let roots = match &tls.ca {
            Some(ca) => {
                let mut store = RootCertStore::empty();
                store.add_parsable_certificates(ca.certs.iter().cloned());
                Ok(Roots {
                    der: ca.certs.clone(),
                    store: Arc::new(store),
                })
            }
            None => system_roots().map_err(|why| {
                CheckFailure::new(
                    FailureReason::Tls,
                    format!("cannot verify certificates: {why}; set check.tls_ca_file to the CA that signed the backends' certificates"),
                )
            }),
        };
        let config = build_config(tls.mode, &roots);
        Some(TlsClient {
            mode: tls.mode,
            name: tls.server_name.clone().or_else(|| host.map(str::to_string)),
            source,
            roots,
            config,
        })
    }

    pub(super) fn mode(&self) -> TlsMode {
        self.mode
    }

    /// The name given to the server (SNI) and, under `verify-full`, verified: the configured or
    /// DNS name, else the address's IP (which a certificate may hold as an IP SAN).
    pub(super) fn server_name(
        &self,
        addr: SocketAddr,
    ) -> Result<ServerName<'static>, CheckFailure> {
        match &self.name {
            None => Ok(ServerName::IpAddress(addr.ip().into())),
            Some(name) => ServerName::try_from(name.clone()).map_err(|_| {
                CheckFailure::new(
                    FailureReason::Tls,
                    format!("{name:?} cannot be used as a TLS server name; set check.tls_server_name to the name the certificate holds"),
                )
            }),
        }
    }

    /// The name as shown in messages.
    fn shown_name(&self, addr: SocketAddr) -> String {
        self.name.clone().unwrap_or_else(|| addr.ip().to_string())
    }

    /// The configured or DNS name, when there is one (MySQL: the name to verify instead of the
    /// IP it connects to).
    pub(super) fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The trust anchors as DER, for a client that builds its own TLS config (mysql_async).
    pub(super) fn roots_der(&self) -> Result<Arc<[CertificateDer<'static>]>, CheckFailure> {
        self.roots
            .as_ref()
            .map(|r| r.der.clone())
            .map_err(Clone::clone)
    }

    /// A connector and the server name for one handshake to `addr`.
    pub(super) fn connector(
        &self,
        addr: SocketAddr,
    ) -> Result<(TlsConnector, ServerName<'static>), CheckFailure> {
        let config = self.config.clone()?;
        Ok((TlsConnector::from(config), self.server_name(addr)?))
    }

    /// Runs the TLS handshake on a fresh TCP stream (protocols whose TLS starts before their
    /// first byte: Redis). A server that does not speak TLS may never answer a ClientHello (a
    /// plain Redis port waits for a newline that never comes), so the handshake gets three
    /// quarters of the budget; the rest looks at what the port says to a plain client.
    ///
    /// # Errors
    /// `Tls` with a verification or negotiation detail; `Tls` naming the plain protocol the port
    /// speaks instead; `Timeout` when the port says nothing at all.
    pub(super) async fn handshake(
        &self,
        stream: TcpStream,
        addr: SocketAddr,
        deadline: Instant,
        greeting: &Greeting,
    ) -> Result<TlsStream<TcpStream>, CheckFailure> {
        let (connector, name) = self.connector(addr)?;
        let margin = deadline.saturating_duration_since(Instant::now()) / 4;
        match timeout_at(deadline - margin, connector.connect(name, stream)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(error)) => {
                let explained = self.explain_io(&error, addr);
                if explained.not_tls {
                    Err(not_tls(explained.failure, addr, greeting, deadline).await)
                } else {
                    Err(explained.failure)
                }
            }
            Err(_) => {
                let silent = CheckFailure::new(
                    FailureReason::Timeout,
                    format!("{addr} did not answer the TLS handshake in time"),
                );
                Err(not_tls(silent, addr, greeting, deadline).await)
            }
        }
    }
}

/// The rustls client config of a mode: the verifier decides what `require`, `verify-ca` and
/// `verify-full` mean; everything else is rustls' safe defaults (TLS 1.2 and 1.3).
fn build_config(
    mode: TlsMode,
    roots: &Result<Roots, CheckFailure>,
) -> Result<Arc<ClientConfig>, CheckFailure> {
    let provider = provider();
    let webpki = match (mode, roots) {
        // Nothing is verified: no roots needed, so an empty system store does not matter.
        (TlsMode::Require, _) => None,
        (_, Ok(roots)) => Some(
            WebPkiServerVerifier::builder_with_provider(roots.store.clone(), provider.clone())
                .build()
                .map_err(|e| {
                    CheckFailure::new(
                        FailureReason::Tls,
                        format!("cannot verify certificates: {e}"),
                    )
                })?,
        ),
        (_, Err(failure)) => return Err(failure.clone()),
    };
    let verifier = Verifier {
        mode,
        webpki,
        algorithms: provider.signature_verification_algorithms,
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CheckFailure::new(FailureReason::Tls, format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

// === Verifier ===

/// The certificate check of a mode. The handshake signature is verified in every mode (the
/// server proves it holds the key of the certificate it sent), so `require` still encrypts to
/// *someone*; only the modes that verify the chain say who.
#[derive(Debug)]
struct Verifier {
    mode: TlsMode,
    /// `None` only under `require`.
    webpki: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(webpki) = &self.webpki else {
            return Ok(ServerCertVerified::assertion());
        };
        let verified =
            webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
        match (self.mode, verified) {
            // webpki checks the name only after the chain, so a name error means the chain
            // itself was good: that is all verify-ca asks for.
            (
                TlsMode::VerifyCa,
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )),
            ) => Ok(ServerCertVerified::assertion()),
            (_, verified) => verified,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests;
