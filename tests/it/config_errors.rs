//! Broken configs: each file in `tests/configs/bad/` must fail with exactly the listed lines,
//! in the `FILE:LINE:COLUMN: FIELD.PATH: MESSAGE; HINT` form `rolegate check-config` prints.
//! `many_mistakes.yaml` holds several independent mistakes that must all come out in one run.

use std::path::Path;

use rolegate::config::{Config, ConfigError, ConfigErrors, Location};

/// The test environment: the variables the fixtures may name. The process env is never read.
fn env(name: &str) -> Option<String> {
    matches!(name, "PG_MONITOR_PASSWORD" | "ROLEGATE_ADMIN_TOKEN")
        .then(|| format!("value-of-{name}"))
}

fn bad_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs/bad")
}

/// Loads a fixture, labelling errors with its bare file name (as `check-config name.yaml` would).
fn errors_of(name: &str) -> ConfigErrors {
    let text =
        std::fs::read_to_string(bad_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    match Config::from_yaml_str_with_env(&text, Some(Path::new(name)), &env) {
        Ok(_) => panic!("{name} must not validate"),
        Err(errors) => errors,
    }
}

/// (fixture, every expected line in order).
const CASES: &[(&str, &[&str])] = &[
    (
        "admin_public.yaml",
        &[
            "admin_public.yaml:2:11: admin.listen: 0.0.0.0:9813 is not a loopback address, so the admin actions need a token; set admin.token_file or admin.token_env, or listen on 127.0.0.1",
        ],
    ),
    (
        "admin_tokens.yaml",
        &[
            "admin_tokens.yaml:4:3: admin.token_env: token_file and token_env are alternatives; set only one; keep the one you deploy with",
        ],
    ),
    (
        "bad_addresses.yaml",
        &[
            "bad_addresses.yaml:5:29: clusters[0].backends[0].address: invalid socket address \"10.0.0.1:99999\": invalid port; write HOST:PORT or IP:PORT with a port from 1 to 65535, and IPv6 in brackets: [::1]:5432",
            "bad_addresses.yaml:6:29: clusters[0].backends[1].address: invalid socket address \"10.0.0.2\": missing port; write HOST:PORT or IP:PORT with a port from 1 to 65535, and IPv6 in brackets: [::1]:5432",
            "bad_addresses.yaml:7:29: clusters[0].backends[2].address: invalid socket address \"::1:5432\": an IPv6 address needs brackets; write HOST:PORT or IP:PORT with a port from 1 to 65535, and IPv6 in brackets: [::1]:5432",
            "bad_addresses.yaml:8:29: clusters[0].backends[3].address: invalid socket address \"10.0.0.256:5432\": invalid IP address \"10.0.0.256\"; write HOST:PORT or IP:PORT with a port from 1 to 65535, and IPv6 in brackets: [::1]:5432",
            "bad_addresses.yaml:9:9: clusters[0].backends[4].address: the backend has no address; add address: HOST:PORT",
            "bad_addresses.yaml:11:24: listeners[0].bind: invalid bind address \"localhost:5432\": a host name is not allowed here; write an IP address and port, e.g. 0.0.0.0:5432 or 127.0.0.1:5432",
            "bad_addresses.yaml:12:25: listeners[1].bind: invalid socket address \"0.0.0.0:http\": port \"http\" is not a number; write an IP address and port, e.g. 0.0.0.0:5432 or 127.0.0.1:5432",
        ],
    ),
    (
        "bad_names.yaml",
        &[
            "bad_names.yaml:2:11: clusters[0].name: name \"pg primary\" contains ' '; give the cluster a name of letters, digits, '_', '.' and '-' (names become metric labels and URL path segments)",
            "bad_names.yaml:5:17: clusters[0].backends[0].name: name \"a/b\" contains '/'; give the backend a name of letters, digits, '_', '.' and '-' (names become metric labels and URL path segments)",
            "bad_names.yaml:6:11: clusters[1].name: the name is empty; give the cluster a name of letters, digits, '_', '.' and '-' (names become metric labels and URL path segments)",
            "bad_names.yaml:10:5: clusters[2].name: this cluster has no name; give the cluster a name of letters, digits, '_', '.' and '-' (names become metric labels and URL path segments)",
            "bad_names.yaml:14:13: listeners[0].name: name \"rw:1\" contains ':'; give the listener a name of letters, digits, '_', '.' and '-' (names become metric labels and URL path segments)",
        ],
    ),
    (
        "bare_duration.yaml",
        &[
            "bare_duration.yaml:2:20: defaults.connect_timeout: duration 5 has no unit; write 5s or 5ms",
        ],
    ),
    (
        "bind_overlap.yaml",
        &[
            "bind_overlap.yaml:10:26: listeners[1].bind: 127.0.0.1:5432 collides with listener \"all\" on 0.0.0.0:5432; use another port, or bind each to a different specific address",
            "bind_overlap.yaml:12:23: listeners[3].bind: 10.0.0.5:5433 collides with listener \"v6\" on [::]:5433; use another port, or bind each to a different specific address",
            "bind_overlap.yaml:13:32: listeners[4].bind: 0.0.0.0:9813 collides with admin.listen 127.0.0.1:9813; use another port, or bind each to a different specific address",
        ],
    ),
    (
        "check_timing.yaml",
        &[
            "check_timing.yaml:2:35: defaults.check.timeout: check timeout 5s is longer than interval × fall = 1s × 2 = 2s; a hung backend must be taken out within fall checks: lower timeout, or raise interval or fall",
            "check_timing.yaml:7:17: clusters[0].check.interval: check timeout 5s is longer than interval × fall = 2s × 2 = 4s; a hung backend must be taken out within fall checks: lower timeout, or raise interval or fall",
            "check_timing.yaml:8:22: clusters[0].check.down_interval: down_interval 3s is longer than interval 2s; down_interval is the faster pace used while a backend is down; make it at most interval",
        ],
    ),
    (
        "duplicate_key.yaml",
        &[
            "duplicate_key.yaml:4:5: clusters[0].name: `name` is set twice; keep one of them",
        ],
    ),
    (
        "duplicate_names.yaml",
        &[
            "duplicate_names.yaml:6:17: clusters[0].backends[1].name: backend name \"a\" is already used by clusters[0].backends[0]; backend names must be unique in a cluster",
            "duplicate_names.yaml:7:11: clusters[1].name: cluster name \"app\" is already used by clusters[0]; cluster names must be unique in the config",
            "duplicate_names.yaml:11:29: clusters[1].backends[1].address: address 10.0.0.3:80 is already used by clusters[1].backends[0]; each backend must be a different server",
            "duplicate_names.yaml:14:13: listeners[1].name: listener name \"web\" is already used by listeners[0]; listener names must be unique in the config",
        ],
    ),
    (
        "empty.yaml",
        &[
            "empty.yaml: listeners: no listeners are configured, so rolegate would accept nothing; add a listener (name, bind, cluster); see config/example.yaml",
        ],
    ),
    (
        "fallback.yaml",
        &[
            "fallback.yaml:8:50: listeners[0].fallback: a primary listener never falls back to another role; remove fallback: writes must only go to the primary",
            "fallback.yaml:9:75: listeners[1].fallback: fallback is the same as role (replica); remove fallback, or name the role to use when none qualifies for role",
        ],
    ),
    (
        "inherited_timeline.yaml",
        &[
            "inherited_timeline.yaml:2:16: defaults.split_brain: highest_timeline compares PostgreSQL timelines, but cluster \"cache\" is redis; set split_brain: fail_closed or keep_current on cluster \"cache\"",
        ],
    ),
    (
        "log_level.yaml",
        &[
            "log_level.yaml:2:10: log.level: \"inof\" is not a log level; use trace, debug, info, warn or error, or directives such as rolegate=debug,info",
        ],
    ),
    (
        "many_mistakes.yaml",
        &[
            "many_mistakes.yaml:2:17: shutdown_grace: duration 30 has no unit; write 30s or 30ms",
            "many_mistakes.yaml:9:7: clusters[0].check.user: a postgres cluster needs check.user, the account its health checks log in as; add check.user (e.g. rolegate_monitor) and password_env or password_file, or set them in defaults.check",
            "many_mistakes.yaml:10:17: clusters[0].check.interval: interval must be longer than 0s; a zero interval would check in a busy loop; e.g. 250ms",
            "many_mistakes.yaml:13:32: clusters[0].backends[1].address: invalid socket address \"10.0.0.12:99999\": invalid port; write HOST:PORT or IP:PORT with a port from 1 to 65535, and IPv6 in brackets: [::1]:5432",
            "many_mistakes.yaml:14:17: clusters[0].backends[2].name: backend name \"pg-a\" is already used by clusters[0].backends[0]; backend names must be unique in a cluster",
            "many_mistakes.yaml:17:26: listeners[1].bind: 0.0.0.0:5432 collides with listener \"pg-rw\" on 0.0.0.0:5432; use another port, or bind each to a different specific address",
            "many_mistakes.yaml:17:78: listeners[1].fallback: fallback is the same as role (replica); remove fallback, or name the role to use when none qualifies for role",
            "many_mistakes.yaml:18:49: listeners[2].cluster: cluster \"mysql\" is not defined; use one of the clusters defined under clusters: pg",
        ],
    ),
    (
        "missing_cluster.yaml",
        &[
            "missing_cluster.yaml:7:49: listeners[0].cluster: cluster \"postgres\" is not defined; use one of the clusters defined under clusters: pg",
        ],
    ),
    (
        "no_backends.yaml",
        &[
            "no_backends.yaml:2:5: clusters[0].backends: the cluster has no backends; list at least one backend with a name and an address",
            "no_backends.yaml:6:15: clusters[1].backends: the cluster has no backends; list at least one backend with a name and an address",
        ],
    ),
    (
        "password_env_unset.yaml",
        &[
            "password_env_unset.yaml:6:21: clusters[0].check.password_env: environment variable NOT_SET_IN_TESTS is not set; export it before starting rolegate, or use a *_file key instead",
        ],
    ),
    (
        "password_sources.yaml",
        &[
            "password_sources.yaml:7:7: clusters[0].check.password_env: password and password_env are alternatives; set only one; prefer the *_env or *_file key: an inline secret stays readable in the file",
            "password_sources.yaml:14:22: clusters[1].check.password_file: cannot read \"does/not/exist\": No such file or directory (os error 2); check the path and the file's permissions (relative paths start at the config file's directory)",
        ],
    ),
    (
        "protocol_rules.yaml",
        &[
            "protocol_rules.yaml:2:5: clusters[0].check.user: a postgres cluster needs check.user, the account its health checks log in as; add check.user (e.g. rolegate_monitor) and password_env or password_file, or set them in defaults.check",
            "protocol_rules.yaml:8:29: clusters[1].check.database: database applies to postgres checks only, not mysql; remove check.database",
            "protocol_rules.yaml:9:18: clusters[1].split_brain: highest_timeline compares PostgreSQL timelines and cannot be used with mysql; use fail_closed or keep_current",
            "protocol_rules.yaml:14:20: clusters[2].check.user: check.user is set but there is no password; Redis AUTH needs both; add password_env or password_file, or remove user to authenticate with a password alone",
            "protocol_rules.yaml:19:14: clusters[3].check.user: a tcp check only opens a connection, so user is unused; remove check.user, or use the protocol of the database",
            "protocol_rules.yaml:22:5: clusters[4].protocol: the cluster has no protocol; set protocol: postgres, mysql, redis or tcp",
        ],
    ),
    (
        "syntax.yaml",
        &[
            "syntax.yaml:4:1: did not find expected ',' or ']', while parsing a flow sequence at line 3 column 15",
        ],
    ),
    (
        "thresholds.yaml",
        &[
            "thresholds.yaml:4:20: clusters[0].check.rise: rise must be at least 1; it counts consecutive good checks before a backend is used; 2 is a good start",
            "thresholds.yaml:4:29: clusters[0].check.fall: fall must be at least 1; it counts consecutive failed checks before a backend is taken out; 2 is a good start",
            "thresholds.yaml:8:67: listeners[0].max_connections: max_connections must be at least 1; omit it for the default of 10000",
            "thresholds.yaml:8:79: listeners[0].backlog: backlog must be at least 1; omit it for the default of 1024",
            "thresholds.yaml:9:10: workers: workers must be at least 1; omit it for one per CPU",
        ],
    ),
    (
        "tls.yaml",
        &[
            "tls.yaml:2:17: defaults.check.tls: verify-ca is not available for mysql checks: the MySQL client verifies the certificate's name whenever it verifies its chain (cluster \"my\" is mysql); set tls: verify-full on cluster \"my\"",
            "tls.yaml:2:28: defaults.check.tls_server_name: tls_server_name is set per cluster, not in defaults; it is the name one cluster's certificates carry: move it to the check of that cluster",
            "tls.yaml:6:39: clusters[0].check.tls_ca_file: tls_ca_file only serves to verify certificates, but tls is require (encrypted, nothing verified); set tls: verify-full to verify the backends against this CA, or remove tls_ca_file",
            "tls.yaml:6:78: clusters[0].check.tls_server_name: tls_server_name is only checked with tls: verify-full, but tls is require; set tls: verify-full, or remove tls_server_name",
            "tls.yaml:16:45: clusters[2].check.tls_ca_file: cannot read \"does/not/exist.pem\": No such file or directory (os error 2); check the path and the file's permissions (relative paths start at the config file's directory)",
            "tls.yaml:16:82: clusters[2].check.tls_server_name: \"not a name\" is not a DNS name or an IP address a certificate could hold; write the name the backends' certificates carry, e.g. db.example.internal",
            "tls.yaml:21:14: clusters[3].check.tls: a tcp check only opens a connection, so tls is unused; remove check.tls, or use the protocol of the database",
            "tls.yaml:26:56: clusters[4].check.tls_ca_file: \"Cargo.toml\" holds no certificate; a CA file holds one or more PEM blocks starting with -----BEGIN CERTIFICATE----- (DER files: convert with openssl x509 -inform der)",
        ],
    ),
    (
        "tls_mode.yaml",
        &[
            "tls_mode.yaml:4:30: clusters[0].check.tls: unknown variant `verify_full`, expected one of `disable`, `require`, `verify-ca`, `verify-full`; did you mean `verify-full`?",
        ],
    ),
    (
        "unknown_key.yaml",
        &[
            "unknown_key.yaml:3:5: clusters[0].protocl: unknown field `protocl`, expected one of `name`, `protocol`, `check`, `max_replica_lag`, `split_brain`, `on_demote`, `connect_timeout`, `idle_timeout`, `retries`, `backends`, `authority`, `on_authority_lost`; did you mean `protocol`?",
        ],
    ),
    (
        "unknown_variant.yaml",
        &[
            "unknown_variant.yaml:7:56: listeners[0].role: unknown variant `primry`, expected one of `primary`, `replica`, `any`; did you mean `primary`?",
        ],
    ),
    (
        "wrong_type.yaml",
        &[
            "wrong_type.yaml:5:13: clusters[0].check.rise: invalid type: string \"two\", expected a whole number (0 or more)",
        ],
    ),
    (
        "steer.yaml",
        &[
            "steer.yaml:8:69: listeners[0].steer.cgroup: cgroup directory /sys/fs/cgroup/unified/no-such-app does not exist; create the cgroup (mkdir under the cgroup2 mount) before rolegate starts, or fix the path",
            "steer.yaml:9:74: listeners[1].steer.cgroup: steer has no cgroup; name the cgroup v2 directory of the local clients, e.g. /sys/fs/cgroup/unified/app",
        ],
    ),
    (
        "zero_durations.yaml",
        &[
            "zero_durations.yaml:4:22: clusters[0].connect_timeout: connect_timeout must be longer than 0s; a zero timeout would fail every attempt; e.g. 2s",
            "zero_durations.yaml:6:17: clusters[0].check.interval: interval must be longer than 0s; a zero interval would check in a busy loop; e.g. 250ms",
            "zero_durations.yaml:7:22: clusters[0].check.down_interval: down_interval must be longer than 0s; a zero interval would check in a busy loop; e.g. 250ms",
            "zero_durations.yaml:8:16: clusters[0].check.timeout: timeout must be longer than 0s; a check needs time to answer; e.g. 1s",
        ],
    ),
];

#[test]
fn every_bad_fixture_reports_exactly_the_expected_lines() {
    let mut mismatches = Vec::new();
    for (name, expected) in CASES {
        let actual = errors_of(name).to_string();
        if actual != expected.join("\n") {
            mismatches.push(format!(
                "--- {name}\nexpected:\n{}\nactual:\n{actual}",
                expected.join("\n")
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn the_table_covers_every_bad_fixture() {
    let mut files: Vec<String> = std::fs::read_dir(bad_dir())
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut listed: Vec<String> = CASES.iter().map(|(name, _)| name.to_string()).collect();
    listed.sort();
    assert_eq!(files, listed);
    assert!(CASES.len() >= 20);
}

#[test]
fn all_mistakes_are_reported_at_once_with_paths_and_positions() {
    let errors = errors_of("many_mistakes.yaml");
    assert_eq!(errors.len(), 8);
    assert!(!errors.is_empty());
    let paths: Vec<&str> = errors.iter().map(ConfigError::path).collect();
    assert_eq!(
        paths,
        [
            "shutdown_grace",
            "clusters[0].check.user",
            "clusters[0].check.interval",
            "clusters[0].backends[1].address",
            "clusters[0].backends[2].name",
            "listeners[1].bind",
            "listeners[1].fallback",
            "listeners[2].cluster",
        ]
    );
    let first = errors.iter().next().and_then(ConfigError::location);
    assert_eq!(
        first,
        Some(Location {
            line: 2,
            column: 17
        })
    );
    assert_eq!(errors.file(), Some(Path::new("many_mistakes.yaml")));
}

#[test]
fn secret_values_never_appear_in_errors() {
    let output = errors_of("password_sources.yaml").to_string();
    assert!(!output.contains("hunter2"), "{output}");
    let text = "clusters: [{ name: c, protocol: redis, check: { password: s3cr3t-value, rise: 0 }, backends: [] }]";
    let errors = Config::from_yaml_str_with_env(text, None, &env)
        .err()
        .map(|e| e.to_string());
    assert!(
        errors
            .as_deref()
            .is_some_and(|e| !e.contains("s3cr3t-value")),
        "{errors:?}"
    );
}

#[test]
fn errors_without_a_file_are_labelled_config() {
    let errors = Config::from_yaml_str_with_env("listeners: []", None, &env)
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        errors.as_deref(),
        Some("<config>:1:12: listeners: no listeners are configured, so rolegate would accept nothing; add a listener (name, bind, cluster); see config/example.yaml")
    );
}

#[test]
fn an_unreadable_file_names_the_file() {
    let path = bad_dir().join("does-not-exist.yaml");
    let errors = Config::load(&path)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert_eq!(
        errors,
        format!(
            "{}: cannot read the config file: No such file or directory (os error 2)",
            path.display()
        )
    );
}

/// A cheap stand-in until the fuzzer exists: every prefix of some real files, and a few
/// corruptions, must produce a result (valid or errors), never a panic.
#[test]
fn truncated_and_corrupted_files_never_panic() {
    let good = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs/good/full.yaml");
    let texts: Vec<String> = [good, bad_dir().join("many_mistakes.yaml")]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect();
    assert_eq!(texts.len(), 2);
    for text in &texts {
        for (cut, _) in text.char_indices() {
            let _ = Config::from_yaml_str_with_env(&text[..cut], None, &env);
        }
        for (from, to) in [
            (":", ""),
            (" ", ""),
            ("-", "- -"),
            ("{", "["),
            ("s", ""),
            ("\n", "\n  "),
        ] {
            let _ = Config::from_yaml_str_with_env(&text.replace(from, to), None, &env);
        }
    }
    for odd in [
        "\u{feff}",
        "---\n...\n",
        "[]",
        "~",
        "!!binary aGk=",
        "a: &a [*a]",
        "listeners: *x",
    ] {
        let _ = Config::from_yaml_str_with_env(odd, None, &env);
    }
}
