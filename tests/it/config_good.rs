//! Valid configs: every example shipped in `config/` and every fixture in
//! `tests/configs/good/` must load, and omitted keys must get the documented defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rolegate::config::{
    BackendAddress, Balance, Config, LogFormat, OnDemote, Protocol, RoleFilter, SplitBrainPolicy,
    TransferMode,
};

/// The variables the shipped examples (and the demo) read; tests never touch the process env.
fn env(name: &str) -> Option<String> {
    match name {
        "PG_MONITOR_PASSWORD"
        | "MYSQL_MONITOR_PASSWORD"
        | "REDIS_MONITOR_PASSWORD"
        | "ROLEGATE_ADMIN_TOKEN" => Some(format!("secret-of-{name}")),
        _ => None,
    }
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .collect();
    files.sort();
    files
}

fn load(path: &Path) -> Config {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Config::from_yaml_str_with_env(&text, Some(path), &env)
        .unwrap_or_else(|errors| panic!("{} must be valid:\n{errors}", path.display()))
}

fn load_str(text: &str) -> Config {
    Config::from_yaml_str_with_env(text, None, &env)
        .unwrap_or_else(|errors| panic!("must be valid:\n{errors}"))
}

fn assert_all_valid(dir: &str) -> Vec<String> {
    let files = yaml_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join(dir));
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if let Err(errors) = Config::from_yaml_str_with_env(&text, Some(file), &env) {
            failures.push(errors.to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "invalid files:\n{}",
        failures.join("\n")
    );
    files
        .iter()
        .filter_map(|f| Some(f.file_name()?.to_str()?.to_string()))
        .collect()
}

/// New examples (such as the demo's) are picked up without touching this test.
#[test]
fn every_example_in_config_dir_is_valid() {
    let names = assert_all_valid("config");
    for required in ["example.yaml", "tcp.yaml"] {
        assert!(
            names.iter().any(|n| n == required),
            "config/{required} is missing: {names:?}"
        );
    }
}

#[test]
fn every_good_fixture_is_valid() {
    let names = assert_all_valid("tests/configs/good");
    assert!(names.len() >= 3, "{names:?}");
}

#[test]
fn omitted_keys_get_the_documented_defaults() {
    let config =
        load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs/good/minimal.yaml"));
    assert_eq!(
        config.admin.listen,
        Some(SocketAddr::from(([127, 0, 0, 1], 9813)))
    );
    assert_eq!(config.admin.token, None);
    assert_eq!(
        (config.log.format, config.log.level.as_str()),
        (LogFormat::Text, "info")
    );
    assert_eq!(config.log.session_level, tracing::Level::INFO);
    assert_eq!(config.shutdown_grace, Duration::from_secs(30));

    let cluster = &config.clusters[0];
    let check = &cluster.check;
    assert_eq!(check.interval, Duration::from_millis(250));
    assert_eq!(check.down_interval, Duration::from_millis(100));
    assert_eq!(check.timeout, Duration::from_millis(500));
    assert_eq!((check.rise.get(), check.fall.get()), (2, 2));
    assert_eq!(
        (&check.user, &check.password, &check.database),
        (&None, &None, &None)
    );
    assert_eq!(cluster.connect_timeout, Duration::from_secs(2));
    assert_eq!(cluster.idle_timeout, None);
    assert_eq!(cluster.retries, 2);
    assert_eq!(cluster.max_replica_lag, Duration::from_secs(10));
    assert_eq!(cluster.split_brain, SplitBrainPolicy::FailClosed);
    assert_eq!(cluster.on_demote, OnDemote::Close);

    let listener = &config.listeners[0];
    assert_eq!(
        (listener.role, listener.fallback),
        (RoleFilter::Primary, None)
    );
    assert_eq!(listener.balance, Balance::RoundRobin);
    assert_eq!(listener.max_connections, 10_000);
    assert_eq!(listener.queue_timeout, Duration::from_secs(5));
    assert_eq!(listener.backlog, 1024);
    assert_eq!(listener.transfer, TransferMode::Auto);
}

#[test]
fn down_interval_defaults_to_interval_when_that_is_shorter() {
    let config = load_str(
        "clusters:
  - { name: c, protocol: tcp, check: { interval: 40ms, timeout: 80ms }, backends: [{ name: b, address: 127.0.0.1:1 }] }
listeners: [{ name: l, bind: 127.0.0.1:2, cluster: c }]",
    );
    assert_eq!(
        config.clusters[0].check.down_interval,
        Duration::from_millis(40)
    );
}

#[test]
fn clusters_inherit_defaults_and_override_them_per_key() {
    let config = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs/good/full.yaml"));
    let [pg, my, cache, web] = config.clusters.as_slice() else {
        panic!("four clusters expected");
    };
    // pg overrides interval and down_interval, inherits the rest of defaults.check.
    assert_eq!(pg.check.interval, Duration::from_millis(500));
    assert_eq!(pg.check.down_interval, Duration::from_millis(50));
    assert_eq!(
        (pg.check.timeout, pg.check.rise.get()),
        (Duration::from_secs(1), 3)
    );
    assert_eq!(pg.check.database.as_deref(), Some("postgres"));
    assert_eq!(pg.split_brain, SplitBrainPolicy::HighestTimeline);
    assert_eq!((pg.on_demote, pg.retries), (OnDemote::Keep, 1));
    assert_eq!(pg.idle_timeout, Some(Duration::from_secs(3600)));
    // my overrides on_demote and turns the idle timeout off.
    assert_eq!((my.on_demote, my.idle_timeout), (OnDemote::Close, None));
    assert_eq!(my.check.down_interval, Duration::from_millis(200));
    assert_eq!(my.split_brain, SplitBrainPolicy::KeepCurrent);
    assert_eq!(cache.max_replica_lag, Duration::from_secs(2));
    assert_eq!(
        (web.connect_timeout, web.retries),
        (Duration::from_millis(500), 0)
    );
    assert_eq!(web.protocol, Protocol::Tcp);
}

#[test]
fn secrets_come_from_env_file_and_inline_and_never_print() {
    let config = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs/good/full.yaml"));
    let password = |i: usize| {
        config.clusters[i]
            .check
            .password
            .as_ref()
            .map(|s| s.expose())
    };
    assert_eq!(password(0), Some("secret-of-PG_MONITOR_PASSWORD"));
    assert_eq!(
        password(1),
        Some("mysql-pass"),
        "relative file, CRLF trimmed"
    );
    assert_eq!(password(2), Some("inline-redis-pass"));
    assert_eq!(password(3), None, "tcp checks carry no credentials");
    let token = config.admin.token.as_ref().map(|s| s.expose());
    assert_eq!(token, Some("admin-token-from-file"));

    let printed = format!("{config:?}");
    for secret in [
        "secret-of-PG",
        "mysql-pass",
        "inline-redis-pass",
        "admin-token-from-file",
    ] {
        assert!(
            !printed.contains(secret),
            "{secret} leaked into Debug output"
        );
    }
}

#[test]
fn addresses_keep_dns_names_and_ipv6() {
    let config = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs/good/full.yaml"));
    let addresses: Vec<String> = config.clusters[0]
        .backends
        .iter()
        .map(|b| b.address.to_string())
        .collect();
    assert_eq!(
        addresses,
        ["10.0.0.11:5432", "[fd00::12]:5432", "pg-c.db.internal:5432"]
    );
    assert_eq!(
        config.clusters[0].backends[2].address,
        BackendAddress::Dns {
            host: "pg-c.db.internal".into(),
            port: 5432
        }
    );
    let ipv6_loopback = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 3306));
    assert_eq!(config.listeners[2].bind, ipv6_loopback);
}

#[test]
fn example_yaml_is_the_config_md_example() {
    let config = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.yaml"));
    let pg = &config.clusters[0];
    assert_eq!(pg.name.as_str(), "pg");
    assert_eq!(pg.check.user.as_deref(), Some("rolegate_monitor"));
    assert_eq!(pg.check.interval, Duration::from_millis(500));
    assert_eq!(pg.check.down_interval, Duration::from_millis(100));
    let ro = &config.listeners[1];
    assert_eq!(
        (ro.role, ro.fallback, ro.balance),
        (
            RoleFilter::Replica,
            Some(RoleFilter::Primary),
            Balance::LeastConn
        )
    );
}

#[test]
fn admin_can_be_disabled() {
    let config =
        load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs/good/admin_disabled.yaml"));
    assert_eq!(config.admin.listen, None);
    assert_eq!(config.listeners[1].bind.port(), 0);
}
