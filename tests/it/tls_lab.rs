//! `check.tls` against the real lab (`loadtest/lab.sh`), whose servers all speak TLS with a
//! throwaway CA (`LAB_TLS_CA`): PostgreSQL 15 and MariaDB 10.11 on their usual ports, Redis 7 on
//! its own TLS ports (`tls_port` in loadtest/topology.json).
//!
//! For each engine: `verify-full` with the lab's CA sees A primary and B replica over a session
//! that the server itself reports as encrypted; `verify-full` with the system's roots fails with
//! reason `tls` and "unknown issuer"; a wrong `tls_server_name` fails with reason `tls` and a name
//! mismatch naming both names; TLS against a port without it fails with reason `tls` saying so.
//! Then a proxy, in process, routes by roles its TLS checks found, and its status shows an
//! operator why a cluster checked against the wrong roots, or a Redis plain port checked with
//! TLS (within the default 500ms timeout), is down.
//!
//! Check settings are built from YAML by the config loader, as an operator's would be. These
//! tests only read; they hold the lab test lock and `lab.sh`'s own lock like `probes_lab.rs`.

use crate::support;

use std::net::SocketAddr;
use std::time::Duration;

use rolegate::config::{BackendAddress, CheckConfig, Config, Protocol, TlsMode};
use rolegate::control_plane::checks::{CheckFailure, Facts, FailureReason, ObservedRole, Probe};
use support::lab::{self, Engine};
use support::require;
use support::{db, eventually, Proxy};

const BUDGET: Duration = Duration::from_secs(5);
const START: &str = "run: bash loadtest/lab.sh up (it also makes the lab's TLS certificates)";
const RESET: &str = "the lab is not in its canonical topology (A primary, B replica); run: bash loadtest/lab.sh reset";
/// A name the lab's certificate does not hold (it holds 127.0.0.1 and localhost).
const WRONG_NAME: &str = "db.wrong.example";

// === lab access ===

/// The lab's CA certificate (`lab.sh env` exports it as `LAB_TLS_CA`).
fn ca_file() -> String {
    let path = lab::tls_ca();
    assert!(
        std::path::Path::new(&path).is_file(),
        "the lab's CA {path} is missing; {START}"
    );
    path
}

/// Where node A/B of `engine` speaks TLS: Redis on its TLS port, the others on their port.
fn tls_addr(engine: Engine, node: char) -> SocketAddr {
    engine.tls_addr(node)
}

fn protocol(engine: Engine) -> Protocol {
    match engine {
        Engine::Pg => Protocol::Postgres,
        Engine::Mysql => Protocol::Mysql,
        Engine::Redis => Protocol::Redis,
    }
}

/// The `check:` block of a cluster for `engine` with the TLS keys in `tls` (YAML flow-map
/// entries, e.g. `tls: verify-full, tls_ca_file: "/path"`), through the config loader.
fn check_yaml(engine: Engine, tls: &str) -> String {
    let login = match engine {
        Engine::Pg => "user: rolegate_monitor, database: postgres, ",
        Engine::Mysql => "user: rolegate_monitor, ",
        Engine::Redis => "",
    };
    format!(
        "{{ {login}password: \"{pw}\", timeout: 2s, interval: 1s, {tls} }}",
        pw = lab::monitor_password()
    )
}

fn check(engine: Engine, tls: &str) -> CheckConfig {
    let yaml = format!(
        "clusters:\n  - name: db\n    protocol: {}\n    check: {}\n    backends:\n      - {{ name: a, address: \"{}\" }}\nlisteners:\n  - {{ name: rw, bind: \"127.0.0.1:0\", cluster: db }}\n",
        protocol(engine).as_str(),
        check_yaml(engine, tls),
        tls_addr(engine, 'A'),
    );
    let config = Config::from_yaml_str_with_env(&yaml, None, &|_| None)
        .unwrap_or_else(|e| panic!("test config is invalid:\n{e}\n{yaml}"));
    config.clusters[0].check.clone()
}

fn verified(engine: Engine) -> CheckConfig {
    let check = check(
        engine,
        &format!("tls: verify-full, tls_ca_file: \"{}\"", ca_file()),
    );
    assert_eq!(check.tls.mode, TlsMode::VerifyFull);
    check
}

async fn facts(probe: &mut Probe, addr: SocketAddr, what: &str) -> Facts {
    match probe.check(addr, BUDGET).await {
        Ok(facts) => facts,
        Err(failure) => {
            let hint = match failure.reason {
                FailureReason::Refused | FailureReason::Timeout => START,
                _ => "",
            };
            panic!("{what} at {addr}: check failed: {failure} {hint}")
        }
    }
}

/// A check that must fail; its words must never hold the check password.
async fn failure(probe: &mut Probe, addr: SocketAddr) -> CheckFailure {
    failure_within(probe, addr, BUDGET).await
}

async fn failure_within(probe: &mut Probe, addr: SocketAddr, budget: Duration) -> CheckFailure {
    match probe.check(addr, budget).await {
        Ok(facts) => panic!("the check of {addr} should fail, got {facts:?}"),
        Err(failure) => {
            assert!(
                !failure.to_string().contains(&lab::monitor_password()),
                "a failure shows the check password: {failure}"
            );
            failure
        }
    }
}

/// Checks A then B over verified TLS; asserts the canonical roles; returns both probes.
async fn verified_roles(engine: Engine) -> (Probe, Probe) {
    let config = verified(engine);
    let mut a = Probe::new(protocol(engine), &config);
    let mut b = Probe::new(protocol(engine), &config);
    let primary = facts(&mut a, tls_addr(engine, 'A'), "node A over TLS").await;
    let replica = facts(&mut b, tls_addr(engine, 'B'), "node B over TLS").await;
    assert_eq!(primary.role, ObservedRole::Primary, "node A: {RESET}");
    assert_eq!(replica.role, ObservedRole::Replica, "node B: {RESET}");
    assert!(
        replica.replica.as_ref().is_some_and(|r| r.link_up),
        "{replica:?}"
    );
    (a, b)
}

// === verified sessions ===

#[tokio::test]
async fn pg_verify_full_detects_roles_over_an_encrypted_session() {
    let Some(_) = require::lab(&[Engine::Pg]) else {
        return;
    };
    let _lab = lab::lock_read_only();
    let (a, b) = verified_roles(Engine::Pg).await;
    for (node, probe) in [('A', &a), ('B', &b)] {
        let Probe::Postgres(p) = probe else {
            unreachable!()
        };
        assert_eq!(
            p.session_ssl().await,
            Some(true),
            "pg_stat_ssl of node {node}'s check session"
        );
    }

    // A backend written as a DNS name is verified against that name (the certificate holds
    // `localhost`), not against the IP it resolves to.
    let named = BackendAddress::Dns {
        host: "localhost".into(),
        port: Engine::Pg.addr('A').port(),
    };
    let mut probe = Probe::for_backend(Protocol::Postgres, &verified(Engine::Pg), &named);
    facts(&mut probe, Engine::Pg.addr('A'), "node A as localhost").await;
}

#[tokio::test]
async fn mysql_verify_full_detects_roles_over_an_encrypted_session() {
    let Some(_) = require::lab(&[Engine::Mysql]) else {
        return;
    };
    let _lab = lab::lock_read_only();
    let (mut a, mut b) = verified_roles(Engine::Mysql).await;
    for (node, probe) in [('A', &mut a), ('B', &mut b)] {
        let Probe::Mysql(p) = probe else {
            unreachable!()
        };
        let cipher = p.session_tls_cipher().await.unwrap_or_default();
        assert!(
            !cipher.is_empty(),
            "Ssl_cipher of node {node}'s check session is empty: not encrypted"
        );
    }
}

#[tokio::test]
async fn redis_verify_full_detects_roles_on_the_tls_ports() {
    let Some(_) = require::lab(&[Engine::Redis]) else {
        return;
    };
    let _lab = lab::lock_read_only();
    verified_roles(Engine::Redis).await;

    // The TLS port only speaks TLS: a plain check of it fails (the server drops a client
    // whose first bytes are not a ClientHello).
    let plain = check(Engine::Redis, "tls: disable");
    let mut probe = Probe::new(Protocol::Redis, &plain);
    let failure = failure(&mut probe, tls_addr(Engine::Redis, 'A')).await;
    assert!(
        matches!(
            failure.reason,
            FailureReason::Io | FailureReason::UnexpectedReply
        ),
        "{failure}"
    );
}

// === failures an operator can act on ===

#[tokio::test]
async fn system_roots_do_not_trust_the_lab_ca_unknown_issuer() {
    let Some(_) = require::lab(&[Engine::Pg, Engine::Mysql, Engine::Redis]) else {
        return;
    };
    let _lab = lab::lock_read_only();
    for engine in [Engine::Pg, Engine::Mysql, Engine::Redis] {
        // No tls_ca_file: the system's trust store, which does not hold the lab's CA.
        let config = check(engine, "tls: verify-full");
        assert_eq!(config.tls.ca, None);
        let mut probe = Probe::new(protocol(engine), &config);
        let failure = failure(&mut probe, tls_addr(engine, 'A')).await;
        assert_eq!(failure.reason, FailureReason::Tls, "{engine:?}: {failure}");
        assert!(
            failure.detail.starts_with(
                "certificate for 127.0.0.1 not valid: unknown issuer (not signed by a CA in the system's trust store); set check.tls_ca_file to the CA that signed it"
            ),
            "{engine:?}: {failure}"
        );
    }
}

#[tokio::test]
async fn a_wrong_server_name_is_a_name_mismatch() {
    let Some(_) = require::lab(&[Engine::Pg, Engine::Mysql, Engine::Redis]) else {
        return;
    };
    let _lab = lab::lock_read_only();
    for engine in [Engine::Pg, Engine::Mysql, Engine::Redis] {
        let config = check(
            engine,
            &format!(
                "tls: verify-full, tls_ca_file: \"{}\", tls_server_name: {WRONG_NAME}",
                ca_file()
            ),
        );
        let mut probe = Probe::new(protocol(engine), &config);
        let failure = failure(&mut probe, tls_addr(engine, 'A')).await;
        assert_eq!(failure.reason, FailureReason::Tls, "{engine:?}: {failure}");
        assert!(
            failure.detail.starts_with(&format!(
                "name mismatch: certificate is for 127.0.0.1, localhost, expected {WRONG_NAME}; set check.tls_server_name"
            )),
            "{engine:?}: {failure}"
        );
    }
}

#[tokio::test]
async fn verify_ca_checks_the_chain_but_not_the_name() {
    let Some(_) = require::lab(&[Engine::Pg, Engine::Redis]) else {
        return;
    };
    let _lab = lab::lock_read_only();
    for engine in [Engine::Pg, Engine::Redis] {
        let config = check(
            engine,
            &format!("tls: verify-ca, tls_ca_file: \"{}\"", ca_file()),
        );
        // A backend named by a name its certificate lacks: fine for verify-ca...
        let named = BackendAddress::Dns {
            host: WRONG_NAME.into(),
            port: tls_addr(engine, 'A').port(),
        };
        let mut probe = Probe::for_backend(protocol(engine), &config, &named);
        facts(&mut probe, tls_addr(engine, 'A'), "verify-ca, any name").await;
        // ...but not an unknown CA.
        let untrusted = check(engine, "tls: verify-ca");
        let mut probe = Probe::for_backend(protocol(engine), &untrusted, &named);
        let failure = failure(&mut probe, tls_addr(engine, 'A')).await;
        assert!(failure.detail.contains("unknown issuer"), "{failure}");
    }
}

#[tokio::test]
async fn require_against_a_port_without_tls_is_a_tls_failure() {
    let Some(_) = require::lab(&[Engine::Redis]) else {
        return;
    };
    let _lab = lab::lock_read_only();
    // Redis' plain port never answers a ClientHello; the probe says what it does speak.
    let config = check(Engine::Redis, "tls: require");
    let mut probe = Probe::new(Protocol::Redis, &config);
    let addr = Engine::Redis.addr('A');
    // The default check timeout: the explanation must fit in it.
    let failure = failure_within(&mut probe, addr, Duration::from_millis(500)).await;
    assert_eq!(failure.reason, FailureReason::Tls, "{failure}");
    assert!(
        failure
            .detail
            .starts_with(&format!("{addr} answers plain Redis (\"-NOAUTH")),
        "{failure}"
    );
    assert!(failure.detail.contains("check.tls: disable"), "{failure}");

    // require encrypts without verifying: the lab's servers pass with no CA at all.
    for engine in [Engine::Pg, Engine::Mysql, Engine::Redis] {
        let config = check(engine, "tls: require");
        let mut probe = Probe::new(protocol(engine), &config);
        facts(&mut probe, tls_addr(engine, 'A'), "require, no CA").await;
    }
}

// === the proxy, in process ===

fn cluster_yaml(name: &str, engine: Engine, tls: &str) -> String {
    format!(
        "  - name: {name}\n    protocol: {}\n    check: {}\n    backends:\n      - {{ name: a, address: \"{}\" }}\n      - {{ name: b, address: \"{}\" }}\n",
        protocol(engine).as_str(),
        check_yaml(engine, tls),
        tls_addr(engine, 'A'),
        tls_addr(engine, 'B'),
    )
}

#[tokio::test]
async fn a_proxy_routes_by_roles_its_tls_checks_found() {
    let Some(_) = require::lab(&[Engine::Pg, Engine::Mysql, Engine::Redis]) else {
        return;
    };
    let _lab = lab::lock_read_only();
    let verify = format!("tls: verify-full, tls_ca_file: \"{}\"", ca_file());
    let mut clusters = String::new();
    let mut listeners = String::new();
    for (name, engine) in [
        ("pg", Engine::Pg),
        ("my", Engine::Mysql),
        ("rd", Engine::Redis),
    ] {
        clusters.push_str(&cluster_yaml(name, engine, &verify));
        listeners.push_str(&format!(
            "  - {{ name: {name}-rw, bind: \"127.0.0.1:0\", cluster: {name}, role: primary }}\n  - {{ name: {name}-ro, bind: \"127.0.0.1:0\", cluster: {name}, role: replica }}\n"
        ));
    }
    // The same PostgreSQL pair, checked against the system's roots: never trusted.
    clusters.push_str(&cluster_yaml("untrusted", Engine::Pg, "tls: verify-full"));
    listeners.push_str(
        "  - { name: untrusted-rw, bind: \"127.0.0.1:0\", cluster: untrusted, role: primary }\n",
    );
    // Redis' plain port with TLS asked for, at the default 500ms check timeout: the probe must
    // explain within that budget, not be cut short by it.
    clusters.push_str(&format!(
        "  - name: plainport\n    protocol: redis\n    check: {{ password: \"{}\", tls: require }}\n    backends:\n      - {{ name: a, address: \"{}\" }}\n",
        lab::monitor_password(),
        Engine::Redis.addr('A'),
    ));
    listeners.push_str(
        "  - { name: plainport-rw, bind: \"127.0.0.1:0\", cluster: plainport, role: primary }\n",
    );
    let yaml = format!("admin: {{ enabled: false }}\nclusters:\n{clusters}listeners:\n{listeners}");
    let proxy = Proxy::start(&yaml).await;

    for name in ["pg", "my", "rd"] {
        proxy
            .wait_route(&format!("{name}-rw"), "a is primary", |n| n == ["a"])
            .await;
        proxy
            .wait_route(&format!("{name}-ro"), "b is replica", |n| n == ["b"])
            .await;
    }
    // Clients (plain, end to end: TLS is the checks' business) land on the right servers.
    for (name, engine) in [("pg", Engine::Pg), ("my", Engine::Mysql)] {
        let rw = proxy.addr(&format!("{name}-rw")).await;
        let port = db::connect_and_write(engine, rw, "tls-check")
            .await
            .unwrap_or_else(|e| panic!("{name}-rw: {e}"));
        assert_eq!(port, engine.addr('A').port(), "{name}-rw: {RESET}");
        let mut ro = db::open(engine, proxy.addr(&format!("{name}-ro")).await)
            .await
            .unwrap_or_else(|e| panic!("{name}-ro: {e}"));
        assert_eq!(ro.server_port().await, Ok(engine.addr('B').port()));
    }

    // An operator looking at /status learns why those clusters have no backend.
    let status = proxy.app.supervisor().status.clone();
    for (cluster, words) in [
        ("untrusted", ["unknown issuer", "set check.tls_ca_file"]),
        ("plainport", ["answers plain Redis", "check.tls: disable"]),
    ] {
        let what = format!("{cluster}: backends down with reason tls and {words:?}");
        eventually(Duration::from_secs(20), &what, || {
            let status = status.load_full();
            let ok = status
                .clusters
                .iter()
                .find(|c| c.name == cluster)
                .is_some_and(|c| {
                    c.backends.iter().all(|b| {
                        b.health == "down"
                            && b.last_error_reason == Some("tls")
                            && b.last_error
                                .as_deref()
                                .is_some_and(|e| words.iter().all(|w| e.contains(w)))
                    })
                });
            async move { ok }
        })
        .await;
    }
    let table = proxy.app.router().load();
    for listener in ["untrusted-rw", "plainport-rw"] {
        let candidates = table
            .route(&rolegate::config::ListenerName::from(listener))
            .map(|r| r.candidates.len())
            .unwrap_or(0);
        assert_eq!(
            candidates, 0,
            "{listener}: a backend whose check failed is routed to"
        );
    }
    proxy.stop().await;
}
