//! What a failed TLS handshake means for the operator: rustls' typed errors turned into
//! failures that say what to do ("unknown issuer; set check.tls_ca_file ...", "name mismatch:
//! the certificate holds ...", an expired certificate with both dates, an alert with its hint).

use std::error::Error as StdError;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

use rustls::pki_types::UnixTime;
use rustls::{AlertDescription, CertificateError};

use tokio::time::Instant;

use super::{RootsSource, TlsClient};
use crate::control_plane::checks::failure::escaped;
use crate::control_plane::checks::net::{self, Greeting};
use crate::control_plane::checks::{CheckFailure, FailureReason};

/// A TLS failure, and whether it looks like the port does not speak TLS at all (then the
/// caller may look at what it does speak).
pub(in crate::control_plane::checks) struct Explained {
    pub failure: CheckFailure,
    pub not_tls: bool,
}

impl TlsClient {
    /// Explains an I/O error from a handshake (tokio-rustls wraps rustls' error in one).
    pub(in crate::control_plane::checks) fn explain_io(
        &self,
        error: &io::Error,
        addr: SocketAddr,
    ) -> Explained {
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
    pub(in crate::control_plane::checks) fn explain(
        &self,
        error: &rustls::Error,
        addr: SocketAddr,
    ) -> Explained {
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

/// The rustls error somewhere in an error's chain. Client crates wrap it in `io::Error`s, whose
/// `source()` skips the wrapped error itself, so those are opened with `get_ref`.
pub(in crate::control_plane::checks) fn rustls_error<'a>(
    error: &'a (dyn StdError + 'static),
) -> Option<&'a rustls::Error> {
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
pub(super) async fn not_tls(
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
pub(super) fn presented_name(shown: &str) -> String {
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
