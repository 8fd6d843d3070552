//! Whole imports: haproxy.cfg text in, and the output loaded by rolegate's own config
//! validator (with every placeholder variable set), so each mapping is asserted on the typed
//! config rolegate would run, not on the text.

use std::time::Duration;

use super::{import, Note};
use crate::config::{Balance, Config, OnDemote, Protocol, RoleFilter};

/// Imports `text` and validates the output; panics with the YAML when it does not load.
fn load(text: &str) -> (Config, Vec<Note>, String) {
    let imported = import(text, "test.cfg");
    let yaml = imported
        .config
        .unwrap_or_else(|| panic!("nothing translated: {:?}", imported.notes));
    let env = |key: &str| key.starts_with("ROLEGATE_").then(|| "secret".to_string());
    let config = Config::from_yaml_str_with_env(&yaml, None, &env)
        .unwrap_or_else(|errors| panic!("{errors}\n---\n{yaml}"));
    (config, imported.notes, yaml)
}

fn noted(notes: &[Note], line: usize, needle: &str) -> bool {
    notes
        .iter()
        .any(|n| n.line == line && n.message.contains(needle))
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const PATRONI: &str = "\
global
    maxconn 100
defaults
    mode tcp
    retries 2
    timeout client 30m
    timeout connect 4s
    timeout server 30m
    timeout check 5s
listen postgres_primary
    bind *:5000
    option httpchk OPTIONS /primary
    http-check expect status 200
    default-server inter 3s fall 3 rise 2 on-marked-down shutdown-sessions
    server pg1 10.0.0.11:5432 maxconn 100 check port 8008
    server pg2 10.0.0.12:5432 maxconn 100 check port 8008
listen postgres_replicas
    bind *:5001
    option httpchk OPTIONS /replica
    http-check expect status 200
    default-server inter 3s fall 3 rise 2 on-marked-down shutdown-sessions
    server pg1 10.0.0.11:5432 maxconn 100 check port 8008
    server pg2 10.0.0.12:5432 maxconn 100 check port 8008
";

#[test]
fn patroni_pair_becomes_one_postgres_cluster_with_primary_and_replica_listeners() {
    let (config, notes, yaml) = load(PATRONI);
    assert_eq!(config.clusters.len(), 1, "{yaml}");
    let c = &config.clusters[0];
    assert_eq!(
        (c.name.as_str(), c.protocol),
        ("postgres", Protocol::Postgres)
    );
    assert_eq!((c.check.interval, c.check.timeout), (secs(3), secs(5)));
    assert_eq!((c.check.rise.get(), c.check.fall.get()), (2, 3));
    assert_eq!(c.check.user.as_deref(), Some("rolegate_monitor"));
    assert!(c.check.password.is_some());
    assert_eq!(
        (c.connect_timeout, c.idle_timeout, c.retries),
        (secs(4), Some(secs(1800)), 2)
    );
    assert_eq!(c.on_demote, OnDemote::Close);
    let roles: Vec<_> = config
        .listeners
        .iter()
        .map(|l| (l.bind.to_string(), l.role, l.cluster.as_str().to_string()))
        .collect();
    assert_eq!(
        roles,
        [
            (
                "0.0.0.0:5000".to_string(),
                RoleFilter::Primary,
                "postgres".to_string()
            ),
            (
                "0.0.0.0:5001".into(),
                RoleFilter::Replica,
                "postgres".into()
            )
        ]
    );
    assert!(config.listeners.iter().all(|l| l.max_connections == 100));
    assert!(yaml.contains("ROLEGATE_POSTGRES_PASSWORD"));
    assert!(
        noted(&notes, 12, "set ROLEGATE_POSTGRES_PASSWORD"),
        "{notes:?}"
    );
}

#[test]
fn patroni_paths_pick_the_role() {
    for (check, role) in [
        ("option httpchk", RoleFilter::Primary),
        ("option httpchk GET /master", RoleFilter::Primary),
        (
            "option httpchk\n    http-check send meth GET uri /leader",
            RoleFilter::Primary,
        ),
        ("option httpchk GET /replica", RoleFilter::Replica),
        ("option httpchk GET /read-only", RoleFilter::Any),
    ] {
        let text = format!("listen pg\n    bind 127.0.0.1:5000\n    {check}\n    server a 10.0.0.1:5432 check port 8008\n    server b 10.0.0.2:5432 check port 8008\n");
        let (config, _, _) = load(&text);
        assert_eq!(config.listeners[0].role, role, "{check}");
        assert_eq!(config.clusters[0].protocol, Protocol::Postgres);
    }
}

#[test]
fn patroni_query_parameters_and_sync_endpoints_are_noted() {
    let text = "listen pg\n bind :5001\n option httpchk GET /replica?lag=10MB\n server a db-a:5432 check port 8008\n";
    let (config, notes, _) = load(text);
    assert_eq!(config.listeners[0].role, RoleFilter::Replica);
    assert!(noted(&notes, 3, "?lag=10MB counts WAL bytes"), "{notes:?}");
    let text =
        "listen pg\n bind :5001\n option httpchk GET /sync\n server a db-a:5432 check port 8008\n";
    assert!(noted(&load(text).1, 3, "synchronous state"));
}

const REDIS: &str = r"
defaults REDIS
 mode tcp
 timeout connect 4s
 timeout server 30s
 timeout client 30s
frontend ft_redis
 bind 10.0.0.1:6379 name redis
 default_backend bk_redis
backend bk_redis
 option tcp-check
 tcp-check connect
 tcp-check send AUTH\ app\ s3cret\r\n
 tcp-check expect string +OK
 tcp-check send info\ replication\r\n
 tcp-check expect string role:master
 tcp-check send QUIT\r\n
 tcp-check expect string +OK
 server R1 10.0.0.11:6379 check inter 1s
 server R2 10.0.0.12:6379 check inter 1s
";

#[test]
fn redis_tcp_check_script_becomes_a_redis_primary_listener_with_its_auth_moved_to_env() {
    let (config, notes, yaml) = load(REDIS);
    let c = &config.clusters[0];
    assert_eq!((c.name.as_str(), c.protocol), ("bk_redis", Protocol::Redis));
    assert_eq!(c.check.interval, secs(1));
    assert_eq!(c.check.user.as_deref(), Some("app"));
    assert!(c.check.password.is_some());
    assert!(
        !yaml.contains("s3cret"),
        "the password must not be copied:\n{yaml}"
    );
    assert_eq!(config.listeners[0].role, RoleFilter::Primary);
    assert_eq!(c.idle_timeout, Some(secs(30)));
    assert!(
        noted(&notes, 13, "set ROLEGATE_BK_REDIS_PASSWORD"),
        "{notes:?}"
    );
    // role:slave selects replicas.
    let replica = REDIS.replace("role:master", "role:slave");
    assert_eq!(load(&replica).0.listeners[0].role, RoleFilter::Replica);
}

#[test]
fn mysql_check_and_clustercheck_become_mysql_clusters() {
    let text = "\
listen galera
    bind 0.0.0.0:3306
    balance leastconn
    option httpchk
    server n1 10.0.1.1:3306 check port 9200 inter 12000 rise 3 fall 3
    server n2 10.0.1.2:3306 check port 9200 inter 12000 rise 3 fall 3 backup
    server n3 10.0.1.3:3306 check port 9200 inter 12000 rise 3 fall 3 backup
listen pool
    bind 0.0.0.0:3307
    balance leastconn
    option mysql-check user haproxy_check
    server r1 10.0.2.1:3306 check
    server r2 10.0.2.2:3306 check
    server r3 10.0.2.3:3306 check backup
";
    let (config, notes, _) = load(text);
    let galera = &config.clusters[0];
    assert_eq!(galera.protocol, Protocol::Mysql);
    assert_eq!(galera.check.interval, secs(12));
    assert_eq!(galera.check.user.as_deref(), Some("rolegate_monitor"));
    assert_eq!(
        config.listeners[0].role,
        RoleFilter::Primary,
        "one active server, the rest backup"
    );
    assert!(noted(&notes, 4, "Galera"), "{notes:?}");
    let reads = &config.clusters[1];
    assert_eq!(
        (reads.protocol, reads.check.user.as_deref()),
        (Protocol::Mysql, Some("haproxy_check"))
    );
    assert_eq!(
        config.listeners[1].role,
        RoleFilter::Any,
        "several active servers share the load"
    );
    assert_eq!(config.listeners[1].balance, Balance::LeastConn);
    let order: Vec<_> = reads
        .backends
        .iter()
        .map(|b| b.name.as_str().to_string())
        .collect();
    assert_eq!(order, ["r1", "r2", "r3"]);
    assert!(noted(&notes, 14, "no backup tier"), "{notes:?}");
}

#[test]
fn backups_are_listed_after_the_active_servers() {
    let text = "listen t\n bind :9000\n server b1 10.0.0.1:9000 check backup\n server a1 10.0.0.2:9000 check\n";
    let (config, _, _) = load(text);
    let order: Vec<_> = config.clusters[0]
        .backends
        .iter()
        .map(|b| b.name.as_str().to_string())
        .collect();
    assert_eq!(order, ["a1", "b1"]);
    assert_eq!(config.clusters[0].protocol, Protocol::Tcp);
    assert_eq!(config.listeners[0].role, RoleFilter::Primary);
}

#[test]
fn timeouts_combine_tunnel_else_the_shorter_side() {
    let base = "listen pg\n bind :5432\n server a 10.0.0.1:5432 check\n";
    let idle = |extra: &str| load(&format!("{base} {extra}\n")).0.clusters[0].idle_timeout;
    assert_eq!(
        idle("timeout client 1h\n timeout server 10m"),
        Some(secs(600))
    );
    assert_eq!(idle("timeout client 1h"), Some(secs(3600)));
    assert_eq!(
        idle("timeout client 1h\n timeout server 10m\n timeout tunnel 2h"),
        Some(secs(7200))
    );
    assert_eq!(
        idle("timeout client 0\n timeout server 0"),
        None,
        "0 is no timeout on both sides"
    );
}

#[test]
fn check_timing_is_kept_valid_for_rolegate() {
    // timeout check longer than inter × fall: clamped, noted.
    let text = "listen r\n bind :6379\n timeout check 10s\n server a 10.0.0.1:6379 check inter 1s fall 2 downinter 500ms\n";
    let (config, notes, _) = load(text);
    let check = &config.clusters[0].check;
    assert_eq!(
        (check.timeout, check.down_interval),
        (secs(2), Duration::from_millis(500))
    );
    assert!(noted(&notes, 3, "at most interval × fall"), "{notes:?}");
    // A fast inter leaves no room for rolegate's 500ms default timeout: it is set to the window.
    let text = "listen r\n bind :6379\n server a 10.0.0.1:6379 check inter 100ms fall 2\n";
    assert_eq!(
        load(text).0.clusters[0].check.timeout,
        Duration::from_millis(200)
    );
}

#[test]
fn what_haproxy_only_defaulted_is_left_to_rolegate() {
    let (config, _, yaml) = load("listen r\n bind :6379\n server a 10.0.0.1:6379 check\n");
    let c = &config.clusters[0];
    assert_eq!(
        c.check.interval,
        Duration::from_millis(250),
        "no inter written: rolegate's default"
    );
    assert_eq!(c.on_demote, OnDemote::Close);
    assert!(
        yaml.contains("on_demote: keep restores HAProxy's behaviour"),
        "{yaml}"
    );
}

#[test]
fn default_server_and_named_defaults_are_inherited() {
    let text = "\
defaults base
    mode tcp
    timeout connect 7s
    default-server inter 4s rise 3
defaults other
    timeout connect 1s
listen pg from base
    bind :5432
    default-server fall 4
    server a 10.0.0.1:5432 check
";
    let (config, _, _) = load(text);
    let c = &config.clusters[0];
    assert_eq!(c.connect_timeout, secs(7));
    assert_eq!(
        (c.check.interval, c.check.rise.get(), c.check.fall.get()),
        (secs(4), 3, 4)
    );
}

#[test]
fn frontends_route_through_default_or_unconditional_use_backend_only() {
    let text = "\
frontend a
    bind :7000
    acl local src 127.0.0.1
    use_backend two if local
    use_backend one
frontend b
    bind :7001
    default_backend missing
backend one
    server s 10.0.0.1:6379 check
backend two
    server s 10.0.0.2:6379 check
";
    let (config, notes, _) = load(text);
    assert_eq!(config.listeners.len(), 1);
    assert_eq!(config.listeners[0].cluster.as_str(), "one");
    assert!(noted(&notes, 3, "acl"));
    assert!(noted(&notes, 4, "conditional route"));
    assert!(noted(&notes, 8, "\"missing\" is not defined"));
    assert!(noted(&notes, 11, "no frontend routes to it"), "{notes:?}");
}

#[test]
fn max_connections_is_the_smallest_haproxy_limit() {
    let text = "\
global
    maxconn 5000
    nbthread 3
listen ro
    bind :5001 maxconn 900 backlog 2048
    option httpchk GET /replica
    server a 10.0.0.1:5432 check port 8008 maxconn 200
    server b 10.0.0.2:5432 check port 8008 maxconn 300
";
    let (config, _, _) = load(text);
    let l = &config.listeners[0];
    assert_eq!(
        (l.max_connections, l.backlog),
        (500, 2048),
        "sum of the replicas' maxconn"
    );
    assert_eq!(config.workers, 3);
}

#[test]
fn overlapping_binds_keep_the_first() {
    let text = "listen pg\n bind 192.0.2.1:5432\n bind :::5432 v4v6\n server a 10.0.0.1:5432 check port 8008\n";
    let (config, notes, _) = load(text);
    assert_eq!(config.listeners.len(), 1);
    assert!(noted(&notes, 3, "overlaps listener pg-1"), "{notes:?}");
    let admin =
        "listen pg\n bind :9813\n bind :5432 backlog 0\n server a 10.0.0.1:5432 check port 8008\n";
    let (config, notes, _) = load(admin);
    assert_eq!(config.listeners.len(), 1);
    assert!(noted(&notes, 2, "overlaps admin.listen"), "{notes:?}");
}

#[test]
fn names_yaml_would_misread_are_quoted() {
    let text = "listen true\n bind :6379\n server 123 10.0.0.1:6379 check\n server no 10.0.0.2:6379 check\n";
    let (config, _, yaml) = load(text);
    assert_eq!(config.listeners[0].name.as_str(), "true");
    let names: Vec<_> = config.clusters[0]
        .backends
        .iter()
        .map(|b| b.name.as_str().to_string())
        .collect();
    assert_eq!(names, ["123", "no"]);
    assert!(yaml.contains("name: \"true\""), "{yaml}");
}

#[test]
fn a_generic_http_check_becomes_a_tcp_check_with_a_note() {
    let text = "listen app\n bind :8080\n mode tcp\n option httpchk GET /healthz\n server a 10.0.0.1:8080 check\n server b 10.0.0.2:8080 check\n";
    let (config, notes, _) = load(text);
    assert_eq!(config.clusters[0].protocol, Protocol::Tcp);
    assert_eq!(config.listeners[0].role, RoleFilter::Any);
    assert!(noted(&notes, 4, "HTTP health endpoint"), "{notes:?}");
}

#[test]
fn legacy_listen_header_address_and_spellings() {
    let text = "defaults\n contimeout 5000\n clitimeout 50000\n srvtimeout 50000\nlisten master *:8306\n option mysql-check user hc\n server db1 10.0.0.1:3306 check\n";
    let (config, _, _) = load(text);
    assert_eq!(config.listeners[0].bind.to_string(), "0.0.0.0:8306");
    assert_eq!(config.clusters[0].connect_timeout, secs(5));
    assert_eq!(config.clusters[0].idle_timeout, Some(secs(50)));
}

#[test]
fn nothing_translatable_gives_no_config() {
    let imported = import("global\n daemon\ndefaults\n mode http\nlisten stats\n bind :8404\n stats enable\nfrontend web\n bind :80\n default_backend app\nbackend app\n server a 10.0.0.1:80\n", "web.cfg");
    assert!(imported.config.is_none());
    let lines: Vec<_> = imported.notes.iter().map(|n| n.line).collect();
    assert_eq!(lines, [2, 5, 8, 11], "{:?}", imported.notes);
}

#[test]
fn stats_in_defaults_is_noted_not_inherited() {
    let text = "defaults\n mode tcp\n stats enable\nlisten pg\n bind :5432\n server a 10.0.0.1:5432 check port 8008\n";
    let (config, notes, _) = load(text);
    assert_eq!(
        config.listeners.len(),
        1,
        "a tcp listen is not a statistics page"
    );
    assert!(noted(&notes, 3, "stats enable"), "{notes:?}");
    // In a TCP proxy with servers, `stats` is a stray line, not a statistics page.
    let text = "listen pg\n mode tcp\n stats enable\n bind :5432\n server a 10.0.0.1:5432 check port 8008\n";
    let (config, notes, _) = load(text);
    assert_eq!(config.listeners.len(), 1);
    assert!(noted(&notes, 3, "no effect"), "{notes:?}");
}

#[test]
fn clusters_whose_names_fold_to_one_variable_get_two() {
    let text = "listen pg-a\n bind :5432\n server a 10.0.0.1:5432 check port 8008\nlisten pg_a\n bind :5433\n server b 10.0.0.2:5432 check port 8008\n";
    let (config, _, yaml) = load(text);
    assert_eq!(config.clusters.len(), 2);
    assert!(
        yaml.contains("ROLEGATE_PG_A_PASSWORD") && yaml.contains("ROLEGATE_PG_A_2_PASSWORD"),
        "{yaml}"
    );
}

#[test]
fn an_http_oracle_rolegate_cannot_read_leaves_the_role_to_the_proxy_names() {
    let text = "\
listen master *:8306
  option httpchk
  server db1 10.0.0.1:3306 check port 7555 inter 5s
  server db2 10.0.0.2:3306 check port 7555 inter 5s
listen slave *:8307
  option httpchk
  server db1 10.0.0.1:3306 check port 7556 inter 5s
  server db2 10.0.0.2:3306 check port 7556 inter 5s
";
    let (config, notes, _) = load(text);
    assert_eq!(config.clusters.len(), 1, "the same servers: one cluster");
    assert_eq!(config.clusters[0].protocol, Protocol::Mysql);
    let roles: Vec<_> = config.listeners.iter().map(|l| l.role).collect();
    assert_eq!(roles, [RoleFilter::Primary, RoleFilter::Replica]);
    assert!(
        noted(&notes, 2, "HTTP health endpoint rolegate cannot ask"),
        "{notes:?}"
    );
    assert!(
        !notes.iter().any(|n| n.message.contains("Galera")),
        "port 7555 is not clustercheck"
    );
}

#[test]
fn any_truncation_of_the_fixtures_is_handled_without_panicking() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs/haproxy");
    let mut runs = 0;
    for entry in std::fs::read_dir(&dir).expect("fixtures") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            // Cut at every word boundary and inside words every few characters: enough to
            // leave each keyword without its value and each value half written.
            let cuts = line.char_indices().filter(|(i, c)| {
                c.is_whitespace() || line[..*i].ends_with(char::is_whitespace) || i % 3 == 0
            });
            for (cut, _) in cuts {
                let mut mutated = lines.clone();
                mutated[i] = &line[..cut];
                let imported = import(&mutated.join("\n"), "t.cfg");
                // Whatever is emitted must load: the importer never writes a config it knows
                // rolegate would refuse.
                // (Loading is the slow part: only for whole words left out.)
                let whole_words = cut == 0 || line[cut..].starts_with(char::is_whitespace);
                if let Some(yaml) = imported.config.filter(|_| whole_words) {
                    let env = |key: &str| key.starts_with("ROLEGATE_").then(|| "x".to_string());
                    if let Err(errors) = Config::from_yaml_str_with_env(&yaml, None, &env) {
                        panic!(
                            "line {} cut to {:?}:\n{errors}\n---\n{yaml}",
                            i + 1,
                            &line[..cut]
                        );
                    }
                }
                runs += 1;
            }
        }
    }
    assert!(runs > 500, "{runs}");
    let huge = "listen r\n bind :6379\n server a 10.0.0.1:6379 maxconn 18446744073709551615\n server b 10.0.0.2:6379 maxconn 18446744073709551615 check inter 99999999999d\n";
    let _ = import(huge, "huge.cfg");
}
