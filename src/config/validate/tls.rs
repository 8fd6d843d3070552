//! The TLS keys of `check:` blocks whose values need more than serde: `tls_ca_file` (read and
//! parsed here, so that a missing or broken CA is a config error with the file's name, not a
//! check that fails at run time) and `tls_server_name` (must be a name or address a certificate
//! can hold). Which keys go with which `tls` mode is decided in `check.rs`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::RootCertStore;

use super::{Checked, Validator};
use crate::config::error::Problem;
use crate::config::CaBundle;

/// A CA bundle is a few certificates, a distribution's whole trust store a few hundred KiB; a
/// path to something far larger (or `/dev/zero`) must fail fast instead of eating memory.
const MAX_CA_FILE_BYTES: u64 = 8 * 1024 * 1024;

const PATH_HINT: &str =
    "check the path and the file's permissions (relative paths start at the config file's directory)";

/// Reads `tls_ca_file` (reported at `path`): a readable PEM file with at least one certificate,
/// every one of them usable as a trust anchor.
pub(super) fn ca_file(v: &mut Validator<'_>, path: &str, raw: &str) -> Checked<CaBundle> {
    read_ca_file(raw, v.base_dir).map_err(|problem| v.report(path, problem))
}

fn read_ca_file(raw: &str, base_dir: Option<&Path>) -> Result<CaBundle, Problem> {
    if raw.is_empty() {
        return Err(Problem::new("the file path is empty")
            .hint("remove tls_ca_file to verify against the system's trust store"));
    }
    let full: PathBuf = match base_dir {
        Some(dir) if Path::new(raw).is_relative() => dir.join(raw),
        _ => PathBuf::from(raw),
    };
    let shown = full.display();
    let mut bytes = Vec::new();
    std::fs::File::open(&full)
        .and_then(|file| file.take(MAX_CA_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| Problem::new(format!("cannot read {shown:?}: {e}")).hint(PATH_HINT))?;
    if bytes.len() as u64 > MAX_CA_FILE_BYTES {
        return Err(Problem::new(format!(
            "{shown:?} is larger than {} MiB, which no CA bundle is",
            MAX_CA_FILE_BYTES / (1024 * 1024)
        ))
        .hint(
            "point tls_ca_file at the PEM file of the CA that signed the backends' certificates",
        ));
    }
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            Problem::new(format!("{shown:?} is not a valid PEM file: {}", pem_error(&e))).hint(
                "a CA file holds one or more blocks from -----BEGIN CERTIFICATE----- to -----END CERTIFICATE-----",
            )
        })?;
    if certs.is_empty() {
        return Err(Problem::new(format!("{shown:?} holds no certificate")).hint(
            "a CA file holds one or more PEM blocks starting with -----BEGIN CERTIFICATE----- (DER files: convert with openssl x509 -inform der)",
        ));
    }
    let total = certs.len();
    for (i, cert) in certs.iter().enumerate() {
        // The same parse rustls does when the checks build their trust store, done now so that
        // the error names the file and the certificate.
        if let Err(e) = RootCertStore::empty().add(cert.clone()) {
            return Err(Problem::new(format!(
                "certificate {} of {total} in {shown:?} cannot be used as a CA: {e}",
                i + 1
            ))
            .hint("the file must hold X.509 CA certificates in PEM"));
        }
    }
    Ok(CaBundle {
        path: full,
        certs: Arc::from(certs),
    })
}

/// Words for a PEM error (its `Debug` names Rust types).
fn pem_error(error: &pem::Error) -> String {
    match error {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "a section is not closed (missing {:?})",
            String::from_utf8_lossy(end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => format!(
            "malformed section start {:?}",
            String::from_utf8_lossy(line)
        ),
        pem::Error::Base64Decode(e) => format!("invalid base64 inside a section ({e})"),
        other => format!("{other:?}"),
    }
}

/// `tls_server_name`: a DNS name or an IP address, as a certificate's subjectAltName holds them.
pub(super) fn server_name(v: &mut Validator<'_>, path: &str, raw: &str) -> Checked<String> {
    match ServerName::try_from(raw) {
        Ok(_) if !raw.is_empty() => Ok(raw.to_string()),
        _ => {
            let problem = Problem::new(format!(
                "{raw:?} is not a DNS name or an IP address a certificate could hold"
            ))
            .hint("write the name the backends' certificates carry, e.g. db.example.internal");
            Err(v.report(path, problem))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = include_str!("../../../tests/configs/tls/ca.pem");

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn a_pem_ca_is_read_relative_to_the_config_directory() {
        let d = dir();
        std::fs::write(d.path().join("ca.pem"), CA).unwrap();
        let bundle = read_ca_file("ca.pem", Some(d.path())).unwrap();
        assert_eq!(bundle.path, d.path().join("ca.pem"));
        assert_eq!(bundle.certs.len(), 1);
        let debug = format!("{bundle:?}");
        assert!(debug.contains("certs: 1"), "{debug}");
    }

    #[test]
    fn missing_empty_and_non_pem_files_name_the_file() {
        let d = dir();
        let missing = read_ca_file("nope.pem", Some(d.path())).unwrap_err();
        assert!(missing.message.contains("nope.pem"), "{missing}");
        assert!(missing.message.contains("cannot read"), "{missing}");

        std::fs::write(d.path().join("empty.pem"), "").unwrap();
        let empty = read_ca_file("empty.pem", Some(d.path())).unwrap_err();
        assert!(
            empty.message.contains("empty.pem\" holds no certificate"),
            "{empty}"
        );

        // A private key alone is PEM, but no certificate.
        let key =
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n";
        std::fs::write(d.path().join("key.pem"), key).unwrap();
        let key = read_ca_file("key.pem", Some(d.path())).unwrap_err();
        assert!(key.message.contains("holds no certificate"), "{key}");

        let cut = &CA[..CA.len() / 2];
        std::fs::write(d.path().join("cut.pem"), cut).unwrap();
        let cut = read_ca_file("cut.pem", Some(d.path())).unwrap_err();
        assert!(
            cut.message.contains("cut.pem\" is not a valid PEM file"),
            "{cut}"
        );

        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        std::fs::write(d.path().join("garbage.pem"), garbage).unwrap();
        let garbage = read_ca_file("garbage.pem", Some(d.path())).unwrap_err();
        assert!(
            garbage.message.contains("certificate 1 of 1 in")
                && garbage.message.contains("garbage.pem"),
            "{garbage}"
        );

        assert!(read_ca_file("", None).is_err());
    }

    // --- the keys together, through the loader ---

    use crate::config::{CheckTls, Config, ConfigDiff, TlsMode};

    fn ca_path() -> String {
        format!("{}/tests/configs/tls/ca.pem", env!("CARGO_MANIFEST_DIR"))
    }

    fn load(check_defaults: &str, clusters: &str) -> Result<Config, String> {
        let yaml = format!(
            "defaults:\n  check: {{ {check_defaults} }}\nclusters:\n{clusters}listeners:\n  - {{ name: l, bind: 127.0.0.1:5432, cluster: pg }}\n"
        );
        Config::from_yaml_str_with_env(&yaml, None, &|_| None).map_err(|e| e.to_string())
    }

    fn cluster(name: &str, protocol: &str, check: &str) -> String {
        format!(
            "  - name: {name}\n    protocol: {protocol}\n    check: {{ {check} }}\n    backends: [{{ name: a, address: \"db.{name}:1\" }}]\n"
        )
    }

    #[test]
    fn tls_is_off_unless_asked_for() {
        let config = load("interval: 1s", &cluster("pg", "postgres", "user: mon")).unwrap();
        assert_eq!(*config.clusters[0].check.tls, CheckTls::default());
        assert_eq!(config.clusters[0].check.tls.mode, TlsMode::Disable);
    }

    #[test]
    fn mode_and_ca_are_inherited_and_the_name_is_per_cluster() {
        let clusters = [
            cluster(
                "pg",
                "postgres",
                "user: mon, tls_server_name: db.example.internal",
            ),
            cluster("my", "mysql", "user: mon"),
            cluster("cache", "redis", "tls: require"),
            cluster("plain", "redis", "tls: disable"),
            cluster("web", "tcp", ""),
        ]
        .concat();
        let defaults = format!("tls: verify-full, tls_ca_file: \"{}\"", ca_path());
        let config = load(&defaults, &clusters).unwrap();
        let tls = |i: usize| (*config.clusters[i].check.tls).clone();
        assert_eq!(tls(0).mode, TlsMode::VerifyFull);
        assert_eq!(tls(0).server_name.as_deref(), Some("db.example.internal"));
        assert_eq!(tls(0).ca.as_ref().map(|c| c.certs.len()), Some(1));
        assert_eq!(tls(1).mode, TlsMode::VerifyFull);
        assert_eq!(tls(1).ca, tls(0).ca);
        // require verifies nothing, so it carries no CA; disable and tcp have no TLS at all.
        assert_eq!((tls(2).mode, tls(2).ca), (TlsMode::Require, None));
        assert_eq!(tls(3), CheckTls::default());
        assert_eq!(tls(4), CheckTls::default());
    }

    #[test]
    fn each_key_out_of_place_is_an_error() {
        let cases = [
            ("tls: require", cluster("pg", "postgres", &format!("user: m, tls_ca_file: \"{}\"", ca_path())), "clusters[0].check.tls_ca_file: tls_ca_file only serves to verify certificates, but tls is require"),
            ("", cluster("pg", "postgres", &format!("user: m, tls_ca_file: \"{}\"", ca_path())), "but tls is disable (plain TCP)"),
            ("", cluster("pg", "postgres", "user: m, tls: verify-ca, tls_server_name: db.x"), "clusters[0].check.tls_server_name: tls_server_name is only checked with tls: verify-full, but tls is verify-ca"),
            ("tls_server_name: db.x", cluster("pg", "postgres", "user: m"), "defaults.check.tls_server_name: tls_server_name is set per cluster"),
            ("tls: require, tls_ca_file: x.pem", cluster("pg", "postgres", "user: m"), "defaults.check.tls_ca_file: tls_ca_file only serves to verify certificates, but defaults.check.tls is require"),
            ("", cluster("pg", "mysql", "user: m, tls: verify-ca"), "clusters[0].check.tls: verify-ca is not available for mysql checks"),
            ("", cluster("pg", "tcp", "tls_server_name: db.x"), "clusters[0].check.tls_server_name: a tcp check only opens a connection, so tls_server_name is unused"),
            ("", cluster("pg", "postgres", "user: m, tls: verify-full, tls_server_name: \"a b\""), "\"a b\" is not a DNS name or an IP address"),
        ];
        for (defaults, clusters, expected) in cases {
            let errors = load(defaults, &clusters).expect_err(expected);
            assert!(
                errors.contains(expected),
                "expected {expected:?} in:\n{errors}"
            );
        }
    }

    #[test]
    fn a_rotated_ca_file_is_a_changed_check() {
        let d = dir();
        let path = d.path().join("ca.pem");
        let check = |p: &std::path::Path| {
            format!(
                "user: m, tls: verify-full, tls_ca_file: \"{}\"",
                p.display()
            )
        };
        std::fs::write(&path, CA).unwrap();
        let before = load("", &cluster("pg", "postgres", &check(&path))).unwrap();
        // Same path, one more certificate in it: the checks must pick it up on reload.
        std::fs::write(
            &path,
            format!(
                "{CA}{}",
                include_str!("../../../tests/configs/tls/server.pem")
            ),
        )
        .unwrap();
        let after = load("", &cluster("pg", "postgres", &check(&path))).unwrap();
        let diff = ConfigDiff::between(&before, &after);
        assert_eq!(diff.clusters.changed.len(), 1);
        assert!(diff.clusters.changed[0].check_changed);
    }
}
