//! The protocol probes against the real lab (`loadtest/lab.sh`): PostgreSQL 15, MariaDB 10.11
//! and Redis 7 pairs on loopback, A primary and B replica.
//!
//! For each engine: the primary is reported primary, the replica replica with its link up and a
//! small lag (and qualifies for a replica listener the way the supervisor judges it), one
//! server session serves many checks, a wrong password is `auth failed`, and the other login
//! methods the lab offers work (PostgreSQL md5, Redis ACL user and `requirepass`, MariaDB
//! `mysql_native_password`).
//!
//! These tests only read: they never change the lab's topology. Each holds the lab test lock
//! (shared with the failover tests, which do switch roles) and `lab.sh`'s own lock, so neither
//! a scenario nor a manual `lab.sh` command runs underneath them. A lab that is not running
//! fails the tests with the command that starts it.

use crate::support;

use std::net::SocketAddr;
use std::time::Duration;

use rolegate::config::{CheckConfig, Protocol, Secret};
use rolegate::control_plane::checks::{CheckFailure, Facts, FailureReason, ObservedRole, Probe};
use support::lab::{self, Engine};
use support::require;

const BUDGET: Duration = Duration::from_secs(5);
/// What "a small lag" means for a healthy, idle lab replica.
const SMALL_LAG: Duration = Duration::from_secs(5);
const START: &str = "run: bash loadtest/lab.sh up";
const RESET: &str = "the lab is not in its canonical topology (A primary, B replica); run: bash loadtest/lab.sh reset";

// === lab access ===

fn check(user: &str, password: &str) -> CheckConfig {
    CheckConfig {
        interval: Duration::from_millis(500),
        down_interval: Duration::from_millis(100),
        timeout: BUDGET,
        rise: std::num::NonZeroU32::MIN,
        fall: std::num::NonZeroU32::MIN,
        user: Some(user.to_string()),
        password: Some(Secret::new(password)),
        database: None,
        tls: Default::default(),
    }
}

fn monitor() -> CheckConfig {
    check("rolegate_monitor", &lab::monitor_password())
}

/// One check that must succeed; a failure names itself, and says how to start the lab when
/// nothing listens.
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

async fn failure(probe: &mut Probe, addr: SocketAddr) -> CheckFailure {
    match probe.check(addr, BUDGET).await {
        Ok(facts) => panic!("the check of {addr} should fail, got {facts:?}"),
        Err(failure) => failure,
    }
}

fn session_id(probe: &Probe) -> Option<u64> {
    match probe {
        Probe::Postgres(p) => p.session_id(),
        Probe::Mysql(p) => p.session_id(),
        Probe::Redis(p) => p.session_id(),
        Probe::Tcp(_) => None,
    }
}

/// Checks the primary, then the replica, and asserts the canonical roles; returns both facts.
async fn primary_then_replica(engine: Engine, protocol: Protocol) -> (Facts, Facts) {
    let mut a = Probe::new(protocol, &monitor());
    let mut b = Probe::new(protocol, &monitor());
    let primary = facts(&mut a, engine.addr('A'), "node A").await;
    let replica = facts(&mut b, engine.addr('B'), "node B").await;
    assert_eq!(primary.role, ObservedRole::Primary, "node A: {RESET}");
    assert_eq!(replica.role, ObservedRole::Replica, "node B: {RESET}");
    assert_eq!(primary.replica, None);
    (primary, replica)
}

/// The supervisor's judgement of a replica (routing::policy `effective_lag`): caught up by
/// position, or else its reported lag.
fn qualifies(replica: &Facts, primary: &Facts) -> bool {
    let Some(r) = &replica.replica else {
        return false;
    };
    let caught_up = matches!((r.position, primary.write_position), (Some(p), Some(w)) if p >= w);
    caught_up || r.lag.is_some_and(|lag| lag <= Duration::from_secs(10))
}

/// Five checks over one probe: the server-side session id never changes.
async fn assert_session_reused(probe: &mut Probe, addr: SocketAddr) -> u64 {
    facts(probe, addr, "first check").await;
    let first = session_id(probe).expect("an open session has an id");
    for n in 2..=5 {
        facts(probe, addr, "later check").await;
        assert_eq!(
            session_id(probe),
            Some(first),
            "check {n} opened a new session"
        );
    }
    first
}

// === PostgreSQL ===

#[tokio::test]
async fn pg_roles_lag_position_and_timeline() {
    let Some(_) = require::lab(&[Engine::Pg]) else {
        return;
    };
    let _lab = lab::lock_read_only();
    let (primary, replica) = primary_then_replica(Engine::Pg, Protocol::Postgres).await;
    let written = primary
        .write_position
        .expect("a primary reports its WAL position");
    let timeline = primary.timeline.expect("a primary reports its timeline");
    let facts = replica.replica.clone().expect("replica facts");
    assert!(
        facts.link_up,
        "the WAL receiver of B should be streaming: {facts:?}"
    );
    assert!(facts.lag.is_some_and(|l| l <= SMALL_LAG), "lag: {facts:?}");
    let replayed = facts
        .position
        .expect("a replica reports its replay position");
    assert!(
        replayed <= written + 1024 * 1024,
        "replay {replayed} far beyond {written}"
    );
    assert_eq!(replica.timeline, Some(timeline), "B follows A's timeline");
    assert!(qualifies(&replica, &primary), "{replica:?} vs {primary:?}");
}

#[tokio::test]
async fn pg_one_session_serves_many_checks() {
    let Some(_) = require::lab(&[Engine::Pg]) else {
        return;
    };
    let _lab = lab::lock_read_only();
    let addr = Engine::Pg.addr('B');
    let mut probe = Probe::new(Protocol::Postgres, &monitor());
    let pid = assert_session_reused(&mut probe, addr).await;

    // The server agrees: that backend process is a live rolegate session. (Other rolegate
    // processes, such as a benchmark, may hold sessions of their own, so only ours is counted.)
    let conn = format!(
        "host={} port={} user=rolegate_monitor password={} dbname=postgres",
        addr.ip(),
        addr.port(),
        lab::monitor_password()
    );
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("psql-like login to {addr}: {e}; {START}"));
    tokio::spawn(connection);
    let pid = i32::try_from(pid).expect("pid fits");
    let ours: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = 'rolegate' AND usename = 'rolegate_monitor' AND pid = $1",
            &[&pid],
        )
        .await
        .expect("pg_stat_activity")
        .get(0);
    assert_eq!(ours, 1, "backend {pid} should be the probe's session");
}

#[tokio::test]
async fn pg_wrong_password_is_auth_failed() {
    let Some(_) = require::lab(&[Engine::Pg]) else {
        return;
    };
    let _lab = lab::lock_read_only();
    let mut probe = Probe::new(
        Protocol::Postgres,
        &check("rolegate_monitor", "not-the-password"),
    );
    let failure = failure(&mut probe, Engine::Pg.addr('A')).await;
    assert_eq!(failure.reason, FailureReason::AuthFailed, "{failure}");
    assert!(failure.detail.contains("28P01"), "{failure}");
    assert!(!failure.detail.contains("not-the-password"));
}

#[tokio::test]
async fn pg_md5_user_logs_in_and_missing_pg_monitor_is_named() {
    let Some(_) = require::lab(&[Engine::Pg]) else {
        return;
    };
    let _lab = lab::lock_read_only();
    let md5 = check("md5user", &lab::password("md5"));
    let mut probe = Probe::new(Protocol::Postgres, &md5);
    let primary = facts(&mut probe, Engine::Pg.addr('A'), "md5 login on A").await;
    assert_eq!(primary.role, ObservedRole::Primary, "{RESET}");

    // md5user is not in pg_monitor: on a replica, the WAL receiver's state is hidden from it.
    let mut probe = Probe::new(Protocol::Postgres, &md5);
    let failure = failure(&mut probe, Engine::Pg.addr('B')).await;
    assert_eq!(failure.reason, FailureReason::QueryFailed, "{failure}");
    assert!(failure.detail.contains("GRANT pg_monitor"), "{failure}");
}

// === MariaDB ===

#[tokio::test]
async fn mysql_roles_and_replication_threads() {
    let Some(_) = require::lab(&[Engine::Mysql]) else {
        return;
    };
    let _lab = lab::lock_read_only();
    let (primary, replica) = primary_then_replica(Engine::Mysql, Protocol::Mysql).await;
    let facts = replica.replica.clone().expect("replica facts");
    assert!(
        facts.link_up,
        "IO and SQL threads of B should run: {facts:?}"
    );
    assert!(facts.lag.is_some_and(|l| l <= SMALL_LAG), "lag: {facts:?}");
    assert!(qualifies(&replica, &primary));
}

#[tokio::test]
async fn mysql_one_connection_serves_many_checks() {
    let Some(_) = require::lab(&[Engine::Mysql]) else {
        return;
    };
    let _lab = lab::lock_read_only();
    let addr = Engine::Mysql.addr('B');
    let mut probe = Probe::new(Protocol::Mysql, &monitor());
    let id = assert_session_reused(&mut probe, addr).await;

    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(addr.ip().to_string())
        .tcp_port(addr.port())
        .prefer_socket(false)
        .user(Some("rolegate_monitor"))
        .pass(Some(lab::monitor_password()));
    let mut conn = mysql_async::Conn::new(opts)
        .await
        .unwrap_or_else(|e| panic!("login to {addr}: {e}; {START}"));
    use mysql_async::prelude::Queryable;
    let alive: Option<u64> = conn
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?",
            (id,),
        )
        .await
        .expect("processlist");
    assert_eq!(
        alive,
        Some(1),
        "connection {id} is the probe's and still open"
    );
    let _ = conn.disconnect().await;
}

#[tokio::test]
async fn mysql_wrong_password_is_auth_failed() {
    let Some(_) = require::lab(&[Engine::Mysql]) else {
        return;
    };
    let _lab = lab::lock_read_only();
    let mut probe = Probe::new(
        Protocol::Mysql,
        &check("rolegate_monitor", "not-the-password"),
    );
    let failure = failure(&mut probe, Engine::Mysql.addr('A')).await;
    assert_eq!(failure.reason, FailureReason::AuthFailed, "{failure}");
    assert!(failure.detail.contains("1045"), "{failure}");
    assert!(!failure.detail.contains("not-the-password"));
}

#[tokio::test]
async fn mysql_native_password_user_and_missing_privilege() {
    let Some(_) = require::lab(&[Engine::Mysql]) else {
        return;
    };
    let _lab = lab::lock_read_only();
    let native = check("native_user", &lab::password("native"));
    let mut probe = Probe::new(Protocol::Mysql, &native);
    let primary = facts(&mut probe, Engine::Mysql.addr('A'), "native login on A").await;
    assert_eq!(primary.role, ObservedRole::Primary, "{RESET}");

    // native_user may not read the replication status.
    let mut probe = Probe::new(Protocol::Mysql, &native);
    let failure = failure(&mut probe, Engine::Mysql.addr('B')).await;
    assert_eq!(failure.reason, FailureReason::QueryFailed, "{failure}");
    assert!(failure.detail.contains("SLAVE MONITOR"), "{failure}");
}

// === Redis ===

#[tokio::test]
async fn redis_roles_offsets_and_lag() {
    let Some(_) = require::lab(&[Engine::Redis]) else {
        return;
    };
    let _lab = lab::lock_read_only();
    let (primary, replica) = primary_then_replica(Engine::Redis, Protocol::Redis).await;
    assert!(primary.write_position.is_some(), "{primary:?}");
    let facts = replica.replica.clone().expect("replica facts");
    assert!(facts.link_up, "B's link to A should be up: {facts:?}");
    assert!(facts.position.is_some(), "{facts:?}");
    assert!(facts.lag.is_some_and(|l| l <= SMALL_LAG), "lag: {facts:?}");
    assert!(qualifies(&replica, &primary), "{replica:?} vs {primary:?}");
}

#[tokio::test]
async fn redis_one_connection_serves_many_checks() {
    let Some(_) = require::lab(&[Engine::Redis]) else {
        return;
    };
    let _lab = lab::lock_read_only();
    let addr = Engine::Redis.addr('B');
    let mut probe = Probe::new(Protocol::Redis, &monitor());
    let id = assert_session_reused(&mut probe, addr).await;

    let url = format!(
        "redis://:{}@{}:{}/",
        lab::monitor_password(),
        addr.ip(),
        addr.port()
    );
    let client = redis::Client::open(url).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("login to {addr}: {e}; {START}"));
    let listed: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("ID")
        .arg(id)
        .query_async(&mut conn)
        .await
        .expect("CLIENT LIST");
    assert!(listed.contains("name=rolegate "), "{listed}");
    assert!(listed.contains("user=rolegate_monitor"), "{listed}");
}

#[tokio::test]
async fn redis_acl_user_and_requirepass_both_log_in_and_wrong_passwords_fail() {
    let Some(_) = require::lab(&[Engine::Redis]) else {
        return;
    };
    let _lab = lab::lock_read_only();
    let addr = Engine::Redis.addr('A');
    let mut requirepass = monitor();
    requirepass.user = None;
    let mut probe = Probe::new(Protocol::Redis, &requirepass);
    let facts = facts(&mut probe, addr, "requirepass login").await;
    assert_eq!(facts.role, ObservedRole::Primary, "{RESET}");

    for user in [Some("rolegate_monitor"), None] {
        let mut wrong = check("unused", "not-the-password");
        wrong.user = user.map(String::from);
        let mut probe = Probe::new(Protocol::Redis, &wrong);
        let failure = failure(&mut probe, addr).await;
        assert_eq!(
            failure.reason,
            FailureReason::AuthFailed,
            "{user:?}: {failure}"
        );
        assert!(!failure.detail.contains("not-the-password"));
    }
}
