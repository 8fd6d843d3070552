//! TLS for the checks' sessions (`check.tls`): one rustls client per probe, the certificate
//! verifier behind the libpq-style modes, and the translation of rustls' errors into failures
//! an operator can act on ("unknown issuer; set check.tls_ca_file ...", "name mismatch: ...").
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

use std::error::Error as StdError;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
    SignatureScheme,
};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::failure::escaped;
use super::net::{self, Greeting};
use super::{CheckFailure, FailureReason};
use crate::config::{CheckTls, TlsMode};

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

/// A TLS failure, and whether it looks like the port does not speak TLS at all (then the
/// caller may look at what it does speak).
pub(super) struct Explained {
    pub failure: CheckFailure,
    pub not_tls: bool,
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

    /// Explains an I/O error from a handshake (tokio-rustls wraps rustls' error in one).
    pub(super) fn explain_io(&self, error: &io::Error, addr: SocketAddr) -> Explained {
        if let Some(tls) = rustls_error(error) {
            return self.explain(tls, addr);
        }
        if error.kind() == io::ErrorKind::UnexpectedEof {
            return Explained {
                failure: CheckFailure::new(
                    FailureReason::Tls,
                    format!("{addr} closed the connection during the TLS handshake"),
                ),
                not_tls: true,
            };
        }
        let failure = CheckFailure::from_io(error);
        Explained {
            failure: CheckFailure::new(
                failure.reason,
                format!("TLS handshake with {addr}: {error}"),
            ),
            not_tls: false,
        }
    }

    /// Words for a rustls error: what failed, about which name, and what to change.
    pub(super) fn explain(&self, error: &rustls::Error, addr: SocketAddr) -> Explained {
        let name = self.shown_name(addr);
        let tls = |detail: String| Explained {
            failure: CheckFailure::new(FailureReason::Tls, detail),
            not_tls: false,
        };
        match error {
            rustls::Error::InvalidCertificate(cert) => tls(self.certificate(cert, &name)),
            rustls::Error::AlertReceived(alert) => tls(alert_detail(*alert, addr)),
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                Explained {
                    failure: CheckFailure::new(
                        FailureReason::Tls,
                        format!("{addr} did not answer the TLS handshake with TLS ({error})"),
                    ),
                    not_tls: true,
                }
            }
            rustls::Error::PeerIncompatible(_) => tls(format!(
                "{addr} and rolegate share no TLS version or cipher suite ({error}); rolegate speaks TLS 1.2 and 1.3"
            )),
            rustls::Error::NoCertificatesPresented => {
                tls(format!("{addr} presented no certificate"))
            }
            other => tls(format!("TLS handshake with {addr} failed: {other}")),
        }
    }

    fn certificate(&self, error: &CertificateError, name: &str) -> String {
        let invalid = format!("certificate for {name} not valid");
        match error {
            CertificateError::UnknownIssuer => {
                let whose = match &self.source {
                    RootsSource::File(path) => format!("no CA in {} signed it", path.display()),
                    RootsSource::System => "not signed by a CA in the system's trust store".into(),
                };
                format!("{invalid}: unknown issuer ({whose}); set check.tls_ca_file to the CA that signed it")
            }
            CertificateError::NotValidForNameContext {
                expected,
                presented,
            } => {
                let expected = expected.to_str();
                let held: Vec<String> = presented.iter().map(|n| presented_name(n)).collect();
                let holds = if held.is_empty() {
                    "certificate names no host (no subjectAltName)".to_string()
                } else {
                    format!("certificate is for {}", held.join(", "))
                };
                format!("name mismatch: {holds}, expected {expected}; set check.tls_server_name to a name the certificate holds, or reissue the certificate for {expected}")
            }
            CertificateError::NotValidForName => format!(
                "name mismatch: the certificate is not valid for {name}; set check.tls_server_name to a name the certificate holds"
            ),
            CertificateError::ExpiredContext { time, not_after } => format!(
                "{invalid}: expired at {} (now {}); renew the server's certificate",
                unix(*not_after),
                unix(*time)
            ),
            CertificateError::Expired => {
                format!("{invalid}: expired; renew the server's certificate")
            }
            CertificateError::NotValidYetContext { time, not_before } => format!(
                "{invalid}: not valid before {} (now {}); check the clocks of rolegate and the server",
                unix(*not_before),
                unix(*time)
            ),
            CertificateError::NotValidYet => format!(
                "{invalid}: not valid yet; check the clocks of rolegate and the server"
            ),
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                format!("{invalid}: it is not a TLS server certificate (extended key usage)")
            }
            other => format!("{invalid}: {other}"),
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

// === helpers ===

/// The rustls error somewhere in an error's chain. Client crates wrap it in `io::Error`s, whose
/// `source()` skips the wrapped error itself, so those are opened with `get_ref`.
pub(super) fn rustls_error<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            if let Some(tls) = rustls_error(inner) {
                return Some(tls);
            }
        }
        cause = e.source();
    }
    None
}

/// After a handshake that got no TLS back: what does the port say to a plain client of the
/// protocol? A native answer means TLS is simply not enabled there; anything else is quoted.
/// The look ends a little before `deadline`, so that this answer beats the task's timeout.
async fn not_tls(
    original: CheckFailure,
    addr: SocketAddr,
    greeting: &Greeting,
    deadline: Instant,
) -> CheckFailure {
    let margin = deadline.saturating_duration_since(Instant::now()) / 10;
    let bytes = net::first_bytes(addr, &greeting.hello, deadline - margin)
        .await
        .unwrap_or_default();
    if bytes.is_empty() {
        return original;
    }
    if (greeting.looks_native)(&bytes) {
        return CheckFailure::new(
            FailureReason::Tls,
            format!(
                "{addr} answers plain {} (\"{}\"), not TLS: point the backend at the server's TLS port, or set check.tls: disable",
                greeting.protocol,
                escaped(bytes.trim_ascii_end())
            ),
        );
    }
    CheckFailure::unexpected(
        &format!(
            "{addr} answers neither TLS nor like a {} server ({})",
            greeting.protocol, original.detail
        ),
        &bytes,
    )
}

/// `DnsName("db.internal")` / `IpAddress(10.0.0.1)` (webpki's rendering) as plain names.
fn presented_name(shown: &str) -> String {
    shown
        .strip_prefix("DnsName(\"")
        .and_then(|s| s.strip_suffix("\")"))
        .or_else(|| {
            shown
                .strip_prefix("IpAddress(")
                .and_then(|s| s.strip_suffix(')'))
        })
        .unwrap_or(shown)
        .to_string()
}

fn unix(time: UnixTime) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(time.as_secs());
    humantime::format_rfc3339_seconds(at).to_string()
}

fn alert_detail(alert: AlertDescription, addr: SocketAddr) -> String {
    let hint = match alert {
        AlertDescription::CertificateRequired | AlertDescription::BadCertificate => {
            "; the server wants a client certificate, which rolegate's checks do not present (allow the check user without one)"
        }
        AlertDescription::HandshakeFailure | AlertDescription::ProtocolVersion => {
            "; the server and rolegate share no TLS version or cipher suite (rolegate speaks TLS 1.2 and 1.3)"
        }
        _ => "",
    };
    format!("{addr} refused the TLS handshake (alert {alert:?}){hint}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CaBundle;

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 16389))
    }

    fn client(mode: TlsMode, ca: bool, name: Option<&str>) -> TlsClient {
        let fixture = include_str!("../../../tests/configs/tls/ca.pem");
        let certs: Vec<_> = rustls::pki_types::pem::PemObject::pem_slice_iter(fixture.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let tls = CheckTls {
            mode,
            ca: ca.then(|| {
                Arc::new(CaBundle {
                    path: PathBuf::from("/etc/rolegate/db-ca.pem"),
                    certs: Arc::from(certs),
                })
            }),
            server_name: name.map(str::to_string),
        };
        TlsClient::new(&tls, None).unwrap()
    }

    #[test]
    fn disable_is_no_client_and_names_default_to_the_ip() {
        assert!(TlsClient::new(&CheckTls::default(), Some("db")).is_none());
        let c = client(TlsMode::VerifyFull, true, None);
        assert_eq!(
            c.server_name(addr()).unwrap(),
            ServerName::IpAddress(addr().ip().into())
        );
        let tls = CheckTls {
            mode: TlsMode::VerifyFull,
            ..CheckTls::default()
        };
        let named = TlsClient::new(&tls, Some("db.example.internal")).unwrap();
        assert_eq!(named.name(), Some("db.example.internal"));
        let explicit = client(TlsMode::VerifyFull, true, Some("pg.internal"));
        assert_eq!(explicit.name(), Some("pg.internal"));
    }

    #[test]
    fn unknown_issuer_names_the_roots_and_the_key_to_set() {
        let with_file = client(TlsMode::VerifyFull, true, None);
        let e = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let explained = with_file.explain(&e, addr());
        assert_eq!(explained.failure.reason, FailureReason::Tls);
        assert!(!explained.not_tls);
        assert_eq!(
            explained.failure.detail,
            "certificate for 127.0.0.1 not valid: unknown issuer (no CA in /etc/rolegate/db-ca.pem signed it); set check.tls_ca_file to the CA that signed it"
        );
        let system = client(TlsMode::VerifyFull, false, None);
        let detail = system.explain(&e, addr()).failure.detail;
        assert!(detail.contains("system's trust store"), "{detail}");
        assert!(detail.contains("set check.tls_ca_file"), "{detail}");
    }

    #[test]
    fn name_mismatch_lists_what_the_certificate_holds() {
        let c = client(TlsMode::VerifyFull, true, Some("db.wrong.example"));
        let e = rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            expected: ServerName::try_from("db.wrong.example").unwrap(),
            presented: vec![
                "DnsName(\"localhost\")".into(),
                "IpAddress(127.0.0.1)".into(),
            ],
        });
        assert_eq!(
            c.explain(&e, addr()).failure.detail,
            "name mismatch: certificate is for localhost, 127.0.0.1, expected db.wrong.example; set check.tls_server_name to a name the certificate holds, or reissue the certificate for db.wrong.example"
        );
    }

    #[test]
    fn expiry_garbage_and_alerts_read_as_actions() {
        let c = client(TlsMode::VerifyFull, true, None);
        let expired = rustls::Error::InvalidCertificate(CertificateError::ExpiredContext {
            time: UnixTime::since_unix_epoch(Duration::from_secs(1_800_000_000)),
            not_after: UnixTime::since_unix_epoch(Duration::from_secs(1_700_000_000)),
        });
        let detail = c.explain(&expired, addr()).failure.detail;
        assert!(
            detail.contains("expired at 2023-11-14T22:13:20Z"),
            "{detail}"
        );
        assert!(detail.contains("renew"), "{detail}");

        let garbage = rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
        assert!(c.explain(&garbage, addr()).not_tls);

        let alert = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        let detail = c.explain(&alert, addr()).failure.detail;
        assert!(detail.contains("client certificate"), "{detail}");
    }

    #[test]
    fn the_rustls_error_is_found_inside_io_errors() {
        let inner = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let io = io::Error::new(io::ErrorKind::InvalidData, inner.clone());
        assert_eq!(rustls_error(&io), Some(&inner));
        let plain = io::Error::other("nope");
        assert_eq!(rustls_error(&plain), None);
    }

    /// The fixture server certificate (localhost, 127.0.0.1) signed by the fixture CA; both
    /// keys were discarded, which verification does not need.
    fn server_cert() -> CertificateDer<'static> {
        let pem = include_str!("../../../tests/configs/tls/server.pem");
        rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap()
    }

    fn verifier(mode: TlsMode, with_fixture_ca: bool) -> Verifier {
        let provider = provider();
        let roots = if with_fixture_ca {
            client(mode, true, None).roots.unwrap().store
        } else {
            system_roots().unwrap().store
        };
        Verifier {
            mode,
            webpki: (mode != TlsMode::Require).then(|| {
                WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .unwrap()
            }),
            algorithms: provider.signature_verification_algorithms,
        }
    }

    fn verify(v: &Verifier, name: &str) -> Result<ServerCertVerified, rustls::Error> {
        let name = ServerName::try_from(name.to_string()).unwrap();
        v.verify_server_cert(&server_cert(), &[], &name, &[], UnixTime::now())
    }

    #[test]
    fn each_mode_verifies_what_it_promises() {
        let full = verifier(TlsMode::VerifyFull, true);
        assert!(verify(&full, "localhost").is_ok());
        assert!(verify(&full, "127.0.0.1").is_ok());
        let wrong = verify(&full, "db.wrong.example").unwrap_err();
        let detail = client(TlsMode::VerifyFull, true, None)
            .explain(&wrong, addr())
            .failure
            .detail;
        assert!(
            detail.starts_with(
                "name mismatch: certificate is for localhost, 127.0.0.1, expected db.wrong.example"
            ),
            "{detail}"
        );

        // verify-ca: the chain, not the name.
        let ca = verifier(TlsMode::VerifyCa, true);
        assert!(verify(&ca, "db.wrong.example").is_ok());
        let unknown = verify(&verifier(TlsMode::VerifyCa, false), "localhost").unwrap_err();
        assert_eq!(
            unknown,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        );
        let unknown = verify(&verifier(TlsMode::VerifyFull, false), "localhost").unwrap_err();
        assert_eq!(
            unknown,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        );

        // require: anything (the handshake signature is still checked, elsewhere).
        assert!(verify(&verifier(TlsMode::Require, false), "db.wrong.example").is_ok());
    }

    #[test]
    fn presented_names_are_unwrapped() {
        assert_eq!(presented_name("DnsName(\"db.internal\")"), "db.internal");
        assert_eq!(presented_name("IpAddress(10.0.0.1)"), "10.0.0.1");
        assert_eq!(presented_name("DirectoryName"), "DirectoryName");
    }
}
