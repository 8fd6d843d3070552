//! The Redis probe against scripted RESP servers (each answers commands from a table) and the
//! impostors of [`fake`](crate::control_plane::checks::fake).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::*;
use crate::config::Secret;
use crate::control_plane::checks::fake::{self, serve};
use crate::control_plane::checks::ObservedRole;

const BUDGET: Duration = Duration::from_secs(2);

fn check_config(user: Option<&str>, password: Option<&str>) -> CheckConfig {
    CheckConfig {
        interval: Duration::from_secs(1),
        down_interval: Duration::from_millis(100),
        timeout: BUDGET,
        rise: std::num::NonZeroU32::MIN,
        fall: std::num::NonZeroU32::MIN,
        user: user.map(String::from),
        password: password.map(Secret::new),
        database: None,
        tls: Default::default(),
    }
}

/// Reads one command (a RESP array of bulk strings), upper-casing the command name.
async fn read_command(reader: &mut BufReader<TcpStream>) -> Option<Vec<String>> {
    let mut line = String::new();
    reader.read_line(&mut line).await.ok()?;
    let count: usize = line.trim_end().strip_prefix('*')?.parse().ok()?;
    let mut args = Vec::with_capacity(count);
    for _ in 0..count {
        line.clear();
        reader.read_line(&mut line).await.ok()?;
        let len: usize = line.trim_end().strip_prefix('$')?.parse().ok()?;
        let mut arg = vec![0u8; len + 2];
        reader.read_exact(&mut arg).await.ok()?;
        arg.truncate(len);
        args.push(String::from_utf8_lossy(&arg).into_owned());
    }
    if let Some(name) = args.first_mut() {
        *name = name.to_ascii_uppercase();
    }
    Some(args)
}

fn bulk(text: &str) -> String {
    format!("${}\r\n{text}\r\n", text.len())
}

/// A Redis that answers each command with `answer(args)`; `None` means never answer (and
/// nothing after it, as Redis answers in order). Every command is logged in `seen`.
async fn redis_server(
    stream: TcpStream,
    answer: fn(&[String]) -> Option<String>,
    seen: Arc<Mutex<Vec<String>>>,
) {
    let mut reader = BufReader::new(stream);
    while let Some(args) = read_command(&mut reader).await {
        seen.lock().unwrap().push(args.join(" "));
        let Some(reply) = answer(&args) else {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return;
        };
        if reader.get_mut().write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn spawn_redis(
    answer: fn(&[String]) -> Option<String>,
) -> (fake::FakeServer, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let server = serve(move |s, _| redis_server(s, answer, log.clone())).await;
    (server, seen)
}

const MASTER_INFO: &str =
    "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_repl_offset:5000\r\n";
const REPLICA_INFO: &str = "# Replication\r\nrole:slave\r\nmaster_host:10.0.0.1\r\nmaster_port:6379\r\nmaster_link_status:up\r\nmaster_last_io_seconds_ago:2\r\nslave_repl_offset:4990\r\nmaster_repl_offset:4990\r\n";

/// Common answers: AUTH ok, CLIENT SETNAME ok, CLIENT ID 42, CLIENT SETINFO ok.
fn housekeeping(args: &[String]) -> Option<String> {
    match (
        args[0].as_str(),
        args.get(1).map(|a| a.to_ascii_uppercase()),
    ) {
        ("AUTH", _) => Some("+OK\r\n".into()),
        ("CLIENT", Some(sub)) if sub == "ID" => Some(":42\r\n".into()),
        ("CLIENT", _) => Some("+OK\r\n".into()),
        _ => None,
    }
}

fn master(args: &[String]) -> Option<String> {
    housekeeping(args).or_else(|| match args[0].as_str() {
        "ROLE" => Some("*3\r\n$6\r\nmaster\r\n:5000\r\n*0\r\n".into()),
        "INFO" => Some(bulk(MASTER_INFO)),
        _ => Some("-ERR unknown command\r\n".into()),
    })
}

#[tokio::test]
async fn master_is_checked_over_one_reused_connection() {
    let (server, seen) = spawn_redis(master).await;
    let mut probe = RedisProbe::new(&check_config(Some("rolegate_monitor"), Some("pw")));
    for _ in 0..5 {
        let facts = probe.check(server.addr, BUDGET).await.unwrap();
        assert_eq!(facts.role, ObservedRole::Primary);
        assert_eq!(facts.write_position, Some(5000));
    }
    assert_eq!(server.accepted(), 1);
    assert_eq!(probe.session_id(), Some(42));
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0], "AUTH rolegate_monitor pw");
    assert!(seen.contains(&format!("CLIENT SETNAME {CLIENT_NAME}")));
    assert_eq!(seen.iter().filter(|c| *c == "ROLE").count(), 5);
}

#[tokio::test]
async fn password_only_auth_sends_no_user() {
    let (server, seen) = spawn_redis(master).await;
    let mut probe = RedisProbe::new(&check_config(None, Some("requirepass-secret")));
    probe.check(server.addr, BUDGET).await.unwrap();
    assert_eq!(seen.lock().unwrap()[0], "AUTH requirepass-secret");
}

#[tokio::test]
async fn replica_facts_combine_role_and_info() {
    fn replica(args: &[String]) -> Option<String> {
        housekeeping(args).or_else(|| match args[0].as_str() {
            "ROLE" => Some(
                "*5\r\n$5\r\nslave\r\n$8\r\n10.0.0.1\r\n:6379\r\n$9\r\nconnected\r\n:4990\r\n"
                    .into(),
            ),
            "INFO" => Some(bulk(REPLICA_INFO)),
            _ => None,
        })
    }
    let (server, _) = spawn_redis(replica).await;
    let mut probe = RedisProbe::new(&check_config(None, None));
    let facts = probe.check(server.addr, BUDGET).await.unwrap();
    assert_eq!(facts.role, ObservedRole::Replica);
    let replica = facts.replica.unwrap();
    assert!(replica.link_up);
    assert_eq!(replica.position, Some(4990));
    assert_eq!(replica.lag, Some(Duration::from_secs(2)));
}

#[tokio::test]
async fn sentinel_is_the_wrong_protocol() {
    fn sentinel(args: &[String]) -> Option<String> {
        housekeeping(args).or_else(|| match args[0].as_str() {
            "ROLE" => Some("*2\r\n$8\r\nsentinel\r\n*1\r\n$8\r\nmymaster\r\n".into()),
            "INFO" => Some(bulk("# Sentinel\r\nsentinel_masters:1\r\n")),
            _ => None,
        })
    }
    let (server, _) = spawn_redis(sentinel).await;
    let mut probe = RedisProbe::new(&check_config(None, None));
    let failure = probe.check(server.addr, BUDGET).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::WrongProtocol);
    assert!(
        failure
            .detail
            .contains("this is a Redis Sentinel, not a data node"),
        "{failure}"
    );
}

#[tokio::test]
async fn renamed_role_falls_back_to_info_replication() {
    fn no_role(args: &[String]) -> Option<String> {
        housekeeping(args).or_else(|| match args[0].as_str() {
            "ROLE" => Some("-ERR unknown command 'ROLE', with args beginning with: \r\n".into()),
            "INFO" => Some(bulk(REPLICA_INFO)),
            _ => None,
        })
    }
    let (server, _) = spawn_redis(no_role).await;
    let mut probe = RedisProbe::new(&check_config(None, None));
    let facts = probe.check(server.addr, BUDGET).await.unwrap();
    assert_eq!(facts.role, ObservedRole::Replica);
    assert_eq!(facts.replica.unwrap().position, Some(4990));
}

#[tokio::test]
async fn role_without_permission_names_the_acl_fix() {
    fn noperm(args: &[String]) -> Option<String> {
        housekeeping(args).or_else(|| {
            Some("-NOPERM User mon has no permissions to run the 'role' command\r\n".into())
        })
    }
    let (server, _) = spawn_redis(noperm).await;
    let mut probe = RedisProbe::new(&check_config(Some("mon"), Some("pw")));
    let failure = probe.check(server.addr, BUDGET).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::QueryFailed);
    assert!(
        failure.detail.contains("ACL SETUSER mon +role"),
        "{failure}"
    );
}

#[tokio::test]
async fn auth_failures() {
    fn wrongpass(args: &[String]) -> Option<String> {
        match args[0].as_str() {
            "AUTH" => {
                Some("-WRONGPASS invalid username-password pair or user is disabled.\r\n".into())
            }
            _ => housekeeping(args),
        }
    }
    let (server, _) = spawn_redis(wrongpass).await;
    let mut probe = RedisProbe::new(&check_config(Some("mon"), Some("hunter2")));
    let failure = probe.check(server.addr, BUDGET).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::AuthFailed, "{failure}");
    assert!(!failure.to_string().contains("hunter2"));

    fn noauth(args: &[String]) -> Option<String> {
        match args[0].as_str() {
            "CLIENT" | "ROLE" | "INFO" => Some("-NOAUTH Authentication required.\r\n".into()),
            _ => None,
        }
    }
    let (server, _) = spawn_redis(noauth).await;
    let mut probe = RedisProbe::new(&check_config(None, None));
    let failure = probe.check(server.addr, BUDGET).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::AuthFailed, "{failure}");
    assert!(failure.detail.contains("NOAUTH"), "{failure}");
}

#[tokio::test]
async fn a_role_that_never_comes_is_a_timeout_not_an_info_fallback() {
    fn hang_on_role(args: &[String]) -> Option<String> {
        housekeeping(args)
    }
    let (server, seen) = spawn_redis(hang_on_role).await;
    let mut probe = RedisProbe::new(&check_config(None, None));
    let budget = Duration::from_millis(300);
    let outcome =
        tokio::time::timeout(Duration::from_secs(2), probe.check(server.addr, budget)).await;
    let failure = outcome
        .expect("the crate's response timeout fires first")
        .unwrap_err();
    assert_eq!(failure.reason, FailureReason::Timeout, "{failure}");
    probe.reset();
    assert_eq!(
        seen.lock()
            .unwrap()
            .iter()
            .filter(|c| c.starts_with("INFO"))
            .count(),
        0
    );
}

#[tokio::test]
async fn impostors_are_named_by_their_first_bytes() {
    let http = serve(fake::http).await;
    let mut probe = RedisProbe::new(&check_config(None, Some("pw")));
    let failure = probe.check(http.addr, BUDGET).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::UnexpectedReply, "{failure}");
    assert!(failure.detail.contains("HTTP/1.1 400"), "{failure}");

    let ssh = serve(fake::ssh).await;
    let failure = probe.check(ssh.addr, BUDGET).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::UnexpectedReply, "{failure}");
    assert!(failure.detail.contains("SSH-2.0"), "{failure}");
}

#[tokio::test]
async fn closing_and_silent_ports() {
    let closing = serve(fake::close_at_once).await;
    let mut probe = RedisProbe::new(&check_config(None, Some("pw")));
    let failure = probe.check(closing.addr, BUDGET).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::Io, "{failure}");

    let silent = serve(fake::silent).await;
    let budget = Duration::from_millis(200);
    let outcome = tokio::time::timeout(budget, probe.check(silent.addr, budget)).await;
    // Either the task's timeout or the probe's own deadline ends it; never a success.
    assert!(!matches!(outcome, Ok(Ok(_))));
    probe.reset();
    assert_eq!(probe.session_id(), None);

    let refused = fake::closed_port().await;
    let failure = probe.check(refused, BUDGET).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::Refused, "{failure}");
}

#[test]
fn resp_type_bytes() {
    assert!(looks_like_redis(b"+PONG\r\n"));
    assert!(looks_like_redis(b"-NOAUTH Authentication required.\r\n"));
    assert!(!looks_like_redis(b"HTTP/1.1 400"));
    assert!(!looks_like_redis(b""));
}

fn tls_config(mode: crate::config::TlsMode) -> CheckConfig {
    CheckConfig {
        tls: Box::new(crate::config::CheckTls {
            mode,
            ..Default::default()
        }),
        ..check_config(None, Some("pw"))
    }
}

#[tokio::test]
async fn tls_against_a_plain_port_says_the_port_speaks_plain_redis() {
    // Like a real Redis, the scripted one waits for a newline that a ClientHello rarely holds
    // (or, when it does, drops the line as garbage and closes): either way no TLS comes back.
    let (server, _) = spawn_redis(master).await;
    let mut probe = RedisProbe::new(&tls_config(crate::config::TlsMode::Require));
    let failure = tokio::time::timeout(BUDGET, probe.check(server.addr, BUDGET))
        .await
        .expect("the probe explains before the task's timeout")
        .unwrap_err();
    assert_eq!(failure.reason, FailureReason::Tls, "{failure}");
    assert!(
        failure
            .detail
            .contains("answers plain Redis (\"-ERR unknown command\"), not TLS"),
        "{failure}"
    );
    assert!(failure.detail.contains("check.tls: disable"), "{failure}");
    assert!(!failure.to_string().contains("pw\""), "{failure}");
}

#[tokio::test]
async fn tls_against_a_silent_port_is_a_timeout_and_a_foreign_one_is_quoted() {
    let silent = serve(fake::silent).await;
    let mut probe = RedisProbe::new(&tls_config(crate::config::TlsMode::VerifyFull));
    let budget = Duration::from_millis(400);
    let failure = tokio::time::timeout(budget, probe.check(silent.addr, budget))
        .await
        .expect("the probe answers before the task's timeout")
        .unwrap_err();
    assert_eq!(failure.reason, FailureReason::Timeout, "{failure}");
    assert!(
        failure.detail.contains("did not answer the TLS handshake"),
        "{failure}"
    );

    let http = serve(fake::http).await;
    let failure = probe.check(http.addr, BUDGET).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::UnexpectedReply, "{failure}");
    assert!(
        failure
            .detail
            .contains("neither TLS nor like a Redis server"),
        "{failure}"
    );
    assert!(failure.detail.contains("HTTP/1.1 400"), "{failure}");
}
