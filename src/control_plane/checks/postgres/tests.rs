//! The PostgreSQL probe against scripted servers: a minimal PostgreSQL (trust login, one
//! canned answer to the status query), a password-rejecting one, and the impostors of
//! [`fake`](crate::control_plane::checks::fake).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;
use crate::config::Secret;
use crate::control_plane::checks::fake::{self, serve};
use crate::control_plane::checks::ObservedRole;

const BUDGET: Duration = Duration::from_secs(2);

fn check_config(password: Option<&str>) -> CheckConfig {
    CheckConfig {
        interval: Duration::from_secs(1),
        down_interval: Duration::from_millis(100),
        timeout: BUDGET,
        rise: std::num::NonZeroU32::MIN,
        fall: std::num::NonZeroU32::MIN,
        user: Some("rolegate_monitor".into()),
        password: password.map(Secret::new),
        database: None,
        tls: Default::default(),
    }
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn error_response(code: &str, text: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', code), (b'M', text)] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    message(b'E', &body)
}

/// Reads the startup packet (length-prefixed, no tag).
async fn read_startup(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let len = stream.read_u32().await.ok()?;
    let mut body = vec![0u8; usize::try_from(len).ok()?.checked_sub(4)?];
    stream.read_exact(&mut body).await.ok()?;
    Some(body)
}

/// Reads one tagged frontend message.
async fn read_message(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let tag = stream.read_u8().await.ok()?;
    let len = stream.read_u32().await.ok()?;
    let mut body = vec![0u8; usize::try_from(len).ok()?.checked_sub(4)?];
    stream.read_exact(&mut body).await.ok()?;
    Some((tag, body))
}

/// The answer to the status query: one text row, `None` for NULL.
fn status_answer(values: &[Option<&str>]) -> Vec<u8> {
    let mut desc = u16::try_from(values.len()).unwrap().to_be_bytes().to_vec();
    for i in 0..values.len() {
        desc.extend_from_slice(format!("c{i}\0").as_bytes());
        desc.extend_from_slice(&0u32.to_be_bytes()); // table oid
        desc.extend_from_slice(&0u16.to_be_bytes()); // column number
        desc.extend_from_slice(&25u32.to_be_bytes()); // text
        desc.extend_from_slice(&(-1i16).to_be_bytes());
        desc.extend_from_slice(&(-1i32).to_be_bytes());
        desc.extend_from_slice(&0u16.to_be_bytes()); // text format
    }
    let mut row = u16::try_from(values.len()).unwrap().to_be_bytes().to_vec();
    for value in values {
        match value {
            None => row.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                row.extend_from_slice(&u32::try_from(v.len()).unwrap().to_be_bytes());
                row.extend_from_slice(v.as_bytes());
            }
        }
    }
    let mut out = message(b'T', &desc);
    out.extend(message(b'D', &row));
    out.extend(message(b'C', b"SELECT 1\0"));
    out.extend(message(b'Z', b"I"));
    out
}

const PRIMARY_ROW: [Option<&str>; 10] = [
    Some("f"),
    Some("0/3000060"),
    Some("000000010000000000000003"),
    None,
    None,
    None,
    None,
    None,
    None,
    Some("4242"),
];

/// A trust-auth PostgreSQL that answers every query with `row`, for at most `queries` queries
/// per connection (then it closes the connection).
async fn postgres(mut stream: TcpStream, row: &'static [Option<&'static str>], queries: usize) {
    if read_startup(&mut stream).await.is_none() {
        return;
    }
    let mut hello = message(b'R', &0u32.to_be_bytes());
    hello.extend(message(b'S', b"server_version\x0015.8\0"));
    hello.extend(message(b'K', &[0, 0, 0x10, 0x92, 0, 0, 0, 7]));
    hello.extend(message(b'Z', b"I"));
    if stream.write_all(&hello).await.is_err() {
        return;
    }
    for _ in 0..queries {
        match read_message(&mut stream).await {
            Some((b'Q', _)) => {
                if stream.write_all(&status_answer(row)).await.is_err() {
                    return;
                }
            }
            _ => return,
        }
    }
}

#[tokio::test]
async fn primary_is_checked_over_one_reused_session() {
    let server = serve(|s, _| postgres(s, &PRIMARY_ROW, usize::MAX)).await;
    let mut probe = PostgresProbe::new(&check_config(Some("pw")));
    for _ in 0..5 {
        let facts = probe.check(server.addr, BUDGET).await.unwrap();
        assert_eq!(facts.role, ObservedRole::Primary);
        assert_eq!(facts.write_position, Some(0x0300_0060));
        assert_eq!(facts.timeline, Some(1));
    }
    assert_eq!(probe.session_id(), Some(4242));
    assert_eq!(server.accepted(), 1, "one session for all checks");
}

#[tokio::test]
async fn a_session_closed_by_the_server_fails_once_then_reconnects() {
    let server = serve(|s, _| postgres(s, &PRIMARY_ROW, 1)).await;
    let mut probe = PostgresProbe::new(&check_config(None));
    probe.check(server.addr, BUDGET).await.unwrap();
    let failure = probe.check(server.addr, BUDGET).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::Io, "{failure}");
    assert_eq!(probe.session_id(), None, "a failed check keeps no session");
    probe.check(server.addr, BUDGET).await.unwrap();
    assert_eq!(server.accepted(), 2);
}

#[tokio::test]
async fn a_new_address_gets_a_new_session() {
    let a = serve(|s, _| postgres(s, &PRIMARY_ROW, usize::MAX)).await;
    let b = serve(|s, _| postgres(s, &PRIMARY_ROW, usize::MAX)).await;
    let mut probe = PostgresProbe::new(&check_config(None));
    probe.check(a.addr, BUDGET).await.unwrap();
    probe.check(b.addr, BUDGET).await.unwrap();
    probe.check(a.addr, BUDGET).await.unwrap();
    assert_eq!((a.accepted(), b.accepted()), (2, 1));
}

#[tokio::test]
async fn wrong_password_is_auth_failed_and_never_echoed() {
    let server = serve(|mut s, _| async move {
        let _ = read_startup(&mut s).await;
        let refusal = error_response(
            "28P01",
            "password authentication failed for user \"rolegate_monitor\"",
        );
        let _ = s.write_all(&refusal).await;
    })
    .await;
    let mut probe = PostgresProbe::new(&check_config(Some("hunter2")));
    let failure = probe.check(server.addr, BUDGET).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::AuthFailed, "{failure}");
    assert!(failure.detail.contains("28P01"), "{failure}");
    assert!(!failure.to_string().contains("hunter2"));
}

#[tokio::test]
async fn missing_privilege_on_a_replica_names_pg_monitor() {
    const HIDDEN: [Option<&str>; 10] = [
        Some("t"),
        None,
        None,
        Some("0/3000060"),
        Some("0/3000060"),
        Some("1.5"),
        Some("77"),
        None,
        None,
        Some("4243"),
    ];
    let server = serve(|s, _| postgres(s, &HIDDEN, usize::MAX)).await;
    let mut probe = PostgresProbe::new(&check_config(None));
    let failure = probe.check(server.addr, BUDGET).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::QueryFailed);
    assert!(failure.detail.contains("GRANT pg_monitor"), "{failure}");
}

#[tokio::test]
async fn impostors_are_named_by_their_first_bytes() {
    let ssh = serve(fake::ssh).await;
    let mut probe = PostgresProbe::new(&check_config(Some("pw")));
    let failure = probe.check(ssh.addr, BUDGET).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::UnexpectedReply, "{failure}");
    assert!(failure.detail.contains("SSH-2.0-OpenSSH"), "{failure}");

    let http = serve(fake::http).await;
    let failure = probe.check(http.addr, BUDGET).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::UnexpectedReply, "{failure}");
    assert!(failure.detail.contains("HTTP/1.1 400"), "{failure}");
}

#[tokio::test]
async fn a_port_that_closes_at_once_says_so() {
    let server = serve(fake::close_at_once).await;
    let mut probe = PostgresProbe::new(&check_config(None));
    let failure = probe.check(server.addr, BUDGET).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::Io, "{failure}");
    assert!(failure.detail.contains("no answer at all"), "{failure}");
}

#[tokio::test]
async fn closed_port_is_refused() {
    let addr = fake::closed_port().await;
    let mut probe = PostgresProbe::new(&check_config(None));
    let failure = probe.check(addr, BUDGET).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::Refused, "{failure}");
    assert!(failure.detail.contains(&addr.to_string()));
}

#[tokio::test]
async fn a_hung_server_is_cut_by_the_task_timeout_and_reset_reconnects() {
    // First connection hangs after login (the server stops answering queries); later ones work.
    let server = serve(|s, n| async move {
        if n == 1 {
            fake::silent(s, n).await
        } else {
            postgres(s, &PRIMARY_ROW, usize::MAX).await
        }
    })
    .await;
    let mut probe = PostgresProbe::new(&check_config(None));
    let budget = Duration::from_millis(200);
    let timed_out = tokio::time::timeout(budget, probe.check(server.addr, budget)).await;
    assert!(
        timed_out.is_err(),
        "the check must still be waiting when the task gives up"
    );
    probe.reset();
    assert_eq!(probe.session_id(), None);
    let facts = probe.check(server.addr, BUDGET).await.unwrap();
    assert_eq!(facts.role, ObservedRole::Primary);
    assert_eq!(server.accepted(), 2);
}

#[test]
fn startup_packet_is_well_formed() {
    let packet = startup_packet("mon");
    let len = u32::from_be_bytes([packet[0], packet[1], packet[2], packet[3]]);
    assert_eq!(len as usize, packet.len());
    assert_eq!(&packet[4..8], &[0, 3, 0, 0]);
    assert!(packet.ends_with(b"user\0mon\0\0"));
    assert!(looks_like_postgres(b"R\0\0\0\x0c\0\0\0\x0a"));
    assert!(looks_like_postgres(b"E\0\0\0\x60SFATAL"));
    assert!(!looks_like_postgres(b"HTTP/1.1 400"));
    assert!(!looks_like_postgres(b"E\xff\xff\xff\xffxx"));
    assert!(!looks_like_postgres(b""));
}

/// SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 4] = [0x04, 0xd2, 0x16, 0x2f];

#[tokio::test]
async fn a_server_that_refuses_tls_fails_with_reason_tls() {
    // ssl = off: `N` to the SSLRequest; a plain startup (the probe's sniff) gets a login.
    let server = serve(|mut s, _| async move {
        while let Some(body) = read_startup(&mut s).await {
            if body == SSL_REQUEST {
                if s.write_all(b"N").await.is_err() {
                    return;
                }
            } else {
                let _ = s.write_all(&message(b'R', &0u32.to_be_bytes())).await;
                return;
            }
        }
    })
    .await;
    let mut config = check_config(Some("pw"));
    config.tls.mode = crate::config::TlsMode::VerifyFull;
    let mut probe = PostgresProbe::new(&config);
    let failure = probe.check(server.addr, BUDGET).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::Tls, "{failure}");
    assert!(failure.detail.contains("refused TLS"), "{failure}");
    assert!(failure.detail.contains("check.tls: disable"), "{failure}");

    // Something that is not PostgreSQL at all is named, not blamed on TLS.
    let http = serve(fake::http).await;
    let failure = probe.check(http.addr, BUDGET).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::UnexpectedReply, "{failure}");
    assert!(failure.detail.contains("HTTP/1.1 400"), "{failure}");
}
