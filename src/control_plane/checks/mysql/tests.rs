//! The MySQL probe against scripted servers: the greeting-level failures (a real login and the
//! queries are exercised against the lab's MariaDB in `tests/probes_lab.rs`).

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::*;
use crate::control_plane::checks::fake::{self, serve};

const BUDGET: Duration = Duration::from_secs(2);

fn check_config() -> CheckConfig {
    CheckConfig {
        interval: Duration::from_secs(1),
        down_interval: Duration::from_millis(100),
        timeout: BUDGET,
        rise: std::num::NonZeroU32::MIN,
        fall: std::num::NonZeroU32::MIN,
        user: Some("rolegate_monitor".into()),
        password: Some(Secret::new("hunter2")),
        database: None,
        tls: Default::default(),
    }
}

/// An error packet in place of the handshake, as a server sends when it refuses a host.
fn error_packet(code: u16, message: &str) -> Vec<u8> {
    let mut payload = vec![0xff];
    payload.extend_from_slice(&code.to_le_bytes());
    payload.extend_from_slice(message.as_bytes());
    let len = u32::try_from(payload.len()).unwrap().to_le_bytes();
    let mut packet = vec![len[0], len[1], len[2], 0];
    packet.extend(payload);
    packet
}

async fn refuse_with(mut stream: TcpStream, packet: Vec<u8>) {
    let _ = stream.write_all(&packet).await;
}

#[tokio::test]
async fn ssh_on_a_mysql_port_is_named() {
    let server = serve(fake::ssh).await;
    let mut probe = MysqlProbe::new(&check_config());
    let outcome = tokio::time::timeout(BUDGET, probe.check(server.addr, BUDGET)).await;
    let failure = outcome
        .expect("the probe answers before the task's timeout")
        .unwrap_err();
    assert_eq!(failure.reason, FailureReason::UnexpectedReply, "{failure}");
    assert!(failure.detail.contains("SSH-2.0"), "{failure}");
    assert!(!failure.to_string().contains("hunter2"));
}

#[tokio::test]
async fn a_refusal_instead_of_a_greeting_is_reported_with_its_code() {
    let blocked = error_packet(
        1129,
        "Host '10.0.0.9' is blocked because of many connection errors",
    );
    let server = serve(move |s, _| refuse_with(s, blocked.clone())).await;
    let mut probe = MysqlProbe::new(&check_config());
    let failure = probe.check(server.addr, BUDGET).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::QueryFailed, "{failure}");
    assert!(failure.detail.contains("1129"), "{failure}");

    let denied = error_packet(
        1130,
        "Host '10.0.0.9' is not allowed to connect to this MariaDB server",
    );
    let server = serve(move |s, _| refuse_with(s, denied.clone())).await;
    let failure = probe.check(server.addr, BUDGET).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::AuthFailed, "{failure}");
}

#[tokio::test]
async fn closing_silent_and_closed_ports() {
    let mut probe = MysqlProbe::new(&check_config());
    let closing = serve(fake::close_at_once).await;
    let failure = probe.check(closing.addr, BUDGET).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::Io, "{failure}");

    // An HTTP server waits for a request while a MySQL client waits for the greeting: only
    // the timeout can end that, and the task's timeout does.
    let http = serve(fake::http).await;
    let budget = Duration::from_millis(200);
    let outcome = tokio::time::timeout(budget, probe.check(http.addr, budget)).await;
    assert!(!matches!(outcome, Ok(Ok(_))));
    probe.reset();
    assert_eq!(probe.session_id(), None);

    let refused = fake::closed_port().await;
    let failure = probe.check(refused, BUDGET).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::Refused, "{failure}");
}

#[test]
fn greeting_shapes() {
    let handshake = b"\x5b\x00\x00\x00\x0a10.11.6-MariaDB";
    assert!(looks_like_mysql(handshake));
    assert!(looks_like_mysql(&error_packet(
        1040,
        "Too many connections"
    )));
    assert!(!looks_like_mysql(b"SSH-2.0-OpenSSH_9.2p1\r\n"));
    assert!(!looks_like_mysql(b"HTTP/1.1 400 Bad Request"));
    assert!(!looks_like_mysql(b"\x00\x00\x00\x00\x0a"));
    assert!(!looks_like_mysql(b""));
}

/// A protocol-10 greeting without the SSL capability (a server with no ssl_cert/ssl_key).
fn greeting_without_ssl() -> Vec<u8> {
    const PROTOCOL_41: u32 = 0x200;
    const SECURE_CONNECTION: u32 = 0x8000;
    const PLUGIN_AUTH: u32 = 0x8_0000;
    const LONG_PASSWORD: u32 = 0x1;
    const TRANSACTIONS: u32 = 0x2000;
    let caps = PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH | LONG_PASSWORD | TRANSACTIONS;
    let mut p = vec![10];
    p.extend_from_slice(b"10.11.99-fake\0");
    p.extend_from_slice(&7u32.to_le_bytes());
    p.extend_from_slice(b"abcdefgh\0");
    p.extend_from_slice(&(caps as u16).to_le_bytes());
    p.push(0x21);
    p.extend_from_slice(&2u16.to_le_bytes());
    p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    p.push(21);
    p.extend_from_slice(&[0; 10]);
    p.extend_from_slice(b"ijklmnopqrst\0");
    p.extend_from_slice(b"mysql_native_password\0");
    let len = u32::try_from(p.len()).unwrap().to_le_bytes();
    let mut packet = vec![len[0], len[1], len[2], 0];
    packet.extend(p);
    packet
}

#[tokio::test]
async fn a_server_without_tls_fails_with_reason_tls() {
    let server = serve(|s, _| refuse_with(s, greeting_without_ssl())).await;
    let mut config = check_config();
    config.tls.mode = crate::config::TlsMode::Require;
    let mut probe = MysqlProbe::new(&config);
    let failure = probe.check(server.addr, BUDGET).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::Tls, "{failure}");
    assert!(failure.detail.contains("does not offer TLS"), "{failure}");
    assert!(!failure.to_string().contains("hunter2"));
}
