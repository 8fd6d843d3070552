use std::io;
use std::time::Duration;

use rustls::AlertDescription;

use super::explain::presented_name;
use super::*;
use crate::config::CaBundle;

fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 16389))
}

fn client(mode: TlsMode, ca: bool, name: Option<&str>) -> TlsClient {
    let fixture = include_str!("../../../../tests/configs/tls/ca.pem");
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
    let pem = include_str!("../../../../tests/configs/tls/server.pem");
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
