//! PROXY protocol end to end: `send_proxy` v1/v2 to a real MariaDB with
//! `proxy_protocol_networks` (its own instance, started here), `accept_proxy` behind a real
//! HAProxy with `send-proxy-v2`, raw headers split over writes with splice on, malformed and
//! missing headers, and a reload that turns `accept_proxy` on.
//!
//! Needs `mariadb-server`, `mariadb-client` and `haproxy` (loadtest/test.sh installs them),
//! and root or a user that may run mariadbd. A separate binary: it installs a global log
//! subscriber to check the session lines.

use crate::support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use proxy_header::{ParseConfig, ProxyHeader};
use rand::RngCore;
use support::logs::Captured;
use support::{eventually, fake, metric_value, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, Command};

const APP_PASSWORD: &str = "pp-secret";

// === logs ===

/// The process's log lines (info and above), shared by the tests of this binary.
fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(Captured::install)
}

fn log_lines(containing: &[&str]) -> Vec<String> {
    let text = logs().text();
    text.lines()
        .filter(|l| containing.iter().all(|c| l.contains(c)))
        .map(str::to_string)
        .collect()
}

// === processes ===

/// A free loopback port (bound, then released: the server started next takes it).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn need(binary: &str, package: &str) -> PathBuf {
    let path = ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(binary))
        .find(|p| p.exists());
    path.unwrap_or_else(|| {
        panic!("{binary} not found; install it with: apt-get install -y {package} (loadtest/test.sh does)")
    })
}

/// A mariadbd of this test's own (the lab's A/B stay untouched), trusting PROXY headers from
/// 127.0.0.0/8, with a user `app@'%'`. Stopped by its pid when dropped.
struct Mariadb {
    port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl Mariadb {
    async fn start() -> Mariadb {
        let install = need("mariadb-install-db", "mariadb-server");
        let server = need("mariadbd", "mariadb-server");
        need("mariadb", "mariadb-client");
        let dir = tempfile::Builder::new()
            .prefix("rg-pp-my")
            .tempdir()
            .expect("tempdir");
        let data = dir.path().join("data");
        let user: &[&str] = if is_root() { &["--user=root"] } else { &[] };
        let out = Command::new(install)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=socket", "--skip-test-db"])
            .args(user)
            .output()
            .await
            .expect("run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let child = Command::new(server)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", dir.path().join("sock").display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg(format!(
                "--log-error={}",
                dir.path().join("err.log").display()
            ))
            .arg(format!("--port={port}"))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                "--skip-log-bin",
                "--performance-schema=OFF",
                "--innodb-buffer-pool-size=16M",
                // rolegate's TCP checks connect and close; never block 127.0.0.1 for it.
                "--max-connect-errors=1000000000",
                "--proxy-protocol-networks=127.0.0.0/8",
            ])
            .args(user)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start mariadbd");
        let mut db = Mariadb { port, dir, child };
        let socket = db.socket();
        eventually(
            Duration::from_secs(60),
            "mariadbd accepts on its socket",
            || {
                let socket = socket.clone();
                async move { root_sql(&socket, "SELECT 1").await.is_ok() }
            },
        )
        .await;
        if let Ok(Some(status)) = db.child.try_wait() {
            panic!("mariadbd exited: {status}; see {}", db.err_log());
        }
        root_sql(
            &db.socket(),
            &format!("CREATE USER app@'%' IDENTIFIED BY '{APP_PASSWORD}'"),
        )
        .await
        .expect("create user");
        db
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    fn err_log(&self) -> String {
        self.dir.path().join("err.log").display().to_string()
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }
}

async fn root_sql(socket: &Path, sql: &str) -> Result<String, String> {
    let out = Command::new("mariadb")
        .arg(format!("--socket={}", socket.display()))
        .args(["--user=root", "--batch", "--skip-column-names", "-e", sql])
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A plain TCP relay on 127.0.0.1 that connects on to `to` from the address `from`: the
/// `mariadb` client cannot choose its source address, and the test needs one other than
/// rolegate's own 127.0.0.1. Serves one connection.
async fn relay_from(from: &str, to: SocketAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let from = from.to_string();
    tokio::spawn(async move {
        let Ok((mut inbound, _)) = listener.accept().await else {
            return;
        };
        let mut outbound = connect_from(&from, to).await;
        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
    });
    addr
}

/// `USER()` and the processlist host of a session to `to`, connecting from `from` (a loopback
/// address other than rolegate's 127.0.0.1), as MariaDB sees them.
async fn whoami(from: &str, to: SocketAddr) -> (String, String) {
    let via = relay_from(from, to).await;
    let out = Command::new("mariadb")
        .arg("--protocol=TCP")
        .arg(format!("--host={}", via.ip()))
        .arg(format!("--port={}", via.port()))
        .args(["--user=app", &format!("--password={APP_PASSWORD}")])
        .args(["--batch", "--skip-column-names", "--connect-timeout=10"])
        .arg("-e")
        .arg(
            "SELECT USER(), (SELECT host FROM information_schema.processlist \
             WHERE id = CONNECTION_ID()), LENGTH(REPEAT('x', 4000000))",
        )
        .output()
        .await
        .expect("run mariadb");
    assert!(
        out.status.success(),
        "mariadb via {to} from {from} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let fields: Vec<&str> = text.split('\t').collect();
    assert_eq!(fields.len(), 3, "{text:?}");
    assert_eq!(fields[2], "4000000", "{text:?}");
    (fields[0].to_string(), fields[1].to_string())
}

/// A session that moves a few MB each way, so splice has bulk to carry.
async fn bulk_query(from: &str, to: SocketAddr) {
    let via = relay_from(from, to).await;
    let mut child = Command::new("mariadb")
        .arg("--protocol=TCP")
        .arg(format!("--host={}", via.ip()))
        .arg(format!("--port={}", via.port()))
        .args(["--user=app", &format!("--password={APP_PASSWORD}")])
        .args(["--batch", "--skip-column-names", "--max-allowed-packet=64M"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mariadb");
    // Too long for an argument: the query goes in on stdin.
    let sql = format!(
        "SELECT LENGTH('{}'), LENGTH(REPEAT('y', 8000000));\n",
        "z".repeat(3_000_000)
    );
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(sql.as_bytes()).await.expect("write query");
    drop(stdin);
    let out = child.wait_with_output().await.expect("mariadb output");
    assert!(
        out.status.success(),
        "bulk query failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "3000000\t8000000"
    );
}

/// HAProxy in TCP mode in front of `backend`, sending it a v2 header per connection.
struct Haproxy {
    port: u16,
    _dir: tempfile::TempDir,
    child: Child,
}

impl Haproxy {
    async fn start(backend: SocketAddr) -> Haproxy {
        let binary = need("haproxy", "haproxy");
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n  maxconn 64\ndefaults\n  mode tcp\n  timeout connect 5s\n  \
                 timeout client 60s\n  timeout server 60s\nlisten db\n  bind 127.0.0.1:{port}\n  \
                 server rolegate {backend} send-proxy-v2\n"
            ),
        )
        .expect("write haproxy.cfg");
        let child = Command::new(binary)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start haproxy");
        let mut h = Haproxy {
            port,
            _dir: dir,
            child,
        };
        let addr = h.addr();
        eventually(Duration::from_secs(20), "haproxy listens", || async move {
            TcpStream::connect(addr).await.is_ok()
        })
        .await;
        assert!(
            h.child.try_wait().ok().flatten().is_none(),
            "haproxy exited"
        );
        h
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

// === configs ===

fn config(backend: SocketAddr, listeners: &[&str]) -> String {
    let mut yaml = format!(
        "admin: {{ listen: 127.0.0.1:0 }}\n\
         clusters:\n  - name: db\n    protocol: tcp\n\
         \x20   check: {{ interval: 1s, timeout: 1s, rise: 1, fall: 1 }}\n\
         \x20   backends: [{{ name: m, address: \"{backend}\" }}]\n\
         listeners:\n"
    );
    for l in listeners {
        yaml.push_str(&format!(
            "  - {{ bind: \"127.0.0.1:0\", cluster: db, queue_timeout: 0s, {l} }}\n"
        ));
    }
    yaml
}

fn refused(proxy: &Proxy, listener: &str) -> f64 {
    metric_value(
        &proxy.metrics(),
        &format!(
            "rolegate_listener_refused_total{{listener=\"{listener}\",reason=\"proxy_header\"}}"
        ),
    )
    .unwrap_or(0.0)
}

fn spliced(proxy: &Proxy, listener: &str) -> f64 {
    metric_value(
        &proxy.metrics(),
        &format!("rolegate_spliced_bytes_total{{listener=\"{listener}\"}}"),
    )
    .unwrap_or(0.0)
}

async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    socket.connect(to).await.unwrap()
}

/// Sends `data` and reads the same number of bytes back (an echo backend) concurrently.
async fn round_trip(stream: TcpStream, data: Vec<u8>, expect: usize) -> (Vec<u8>, TcpStream) {
    let (mut r, mut w) = stream.into_split();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        w
    });
    let mut got = vec![0u8; expect];
    tokio::time::timeout(Duration::from_secs(30), r.read_exact(&mut got))
        .await
        .expect("echo in time")
        .expect("echo");
    let w = writer.await.unwrap();
    (got, r.reunite(w).unwrap())
}

fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

/// Reads until EOF or reset, with a deadline: true if the proxy closed the connection.
async fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_sees_the_client_address_through_send_proxy_and_through_haproxy() {
    let Some(_) = support::require::tool("mariadb-install-db", &[], "mariadb-server") else {
        return;
    };
    let Some(_) = support::require::tool("mariadbd", &["/usr/sbin/mariadbd"], "mariadb-server")
    else {
        return;
    };
    let Some(_) = support::require::tool("mariadb", &[], "mariadb-client") else {
        return;
    };
    let Some(_) = support::require::tool("haproxy", &["/usr/sbin/haproxy"], "haproxy") else {
        return;
    };
    logs();
    let db = Mariadb::start().await;
    let proxy = Proxy::start(&config(
        db.addr(),
        &[
            "name: plain",
            "name: pp-v1, send_proxy: v1",
            "name: pp-v2, send_proxy: v2",
            "name: behind-lb, accept_proxy: true, send_proxy: v2",
        ],
    ))
    .await;
    for l in ["plain", "pp-v1", "pp-v2", "behind-lb"] {
        proxy.wait_candidates(l, 1).await;
    }

    // Without send_proxy MariaDB sees rolegate: the control that makes the rest meaningful.
    let (user, host) = whoami("127.0.0.5", proxy.addr("plain").await).await;
    assert_eq!(user, "app@127.0.0.1", "{host}");

    for listener in ["pp-v1", "pp-v2"] {
        let (user, host) = whoami("127.0.0.5", proxy.addr(listener).await).await;
        assert_eq!(user, "app@127.0.0.5", "{listener}");
        assert!(host.starts_with("127.0.0.5:"), "{listener}: {host}");
        let port = host.rsplit(':').next().unwrap().to_string();
        eventually(Duration::from_secs(10), "the session's close line", || {
            let found = !log_lines(&[
                "Session closed.",
                &format!("listener={listener} "),
                &format!("client.addr=127.0.0.5:{port}"),
            ])
            .is_empty();
            async move { found }
        })
        .await;
    }

    // A real load balancer in front: HAProxy sends v2, rolegate reads it and sends v2 on.
    let lb = Haproxy::start(proxy.addr("behind-lb").await).await;
    let (user, host) = whoami("127.0.0.6", lb.addr()).await;
    assert_eq!(user, "app@127.0.0.6", "{host}");
    assert!(host.starts_with("127.0.0.6:"), "{host}");
    let port = host.rsplit(':').next().unwrap().to_string();
    eventually(
        Duration::from_secs(10),
        "the close line names the client",
        || {
            let found = !log_lines(&[
                "Session closed.",
                "listener=behind-lb ",
                &format!("client.addr=127.0.0.6:{port}"),
            ])
            .is_empty();
            async move { found }
        },
    )
    .await;
    // Bulk through both headers: the stream after them is spliced, byte for byte.
    let before = spliced(&proxy, "behind-lb");
    bulk_query("127.0.0.6", lb.addr()).await;
    eventually(Duration::from_secs(10), "bulk was spliced", || {
        let now = spliced(&proxy, "behind-lb");
        async move { now > before }
    })
    .await;
    assert_eq!(refused(&proxy, "behind-lb"), 0.0);

    lb.stop().await;
    proxy.stop().await;
    db.stop().await;
}

#[tokio::test]
async fn a_raw_header_split_over_writes_is_read_and_the_payload_spliced_intact() {
    logs();
    let backend = fake::echo().spawn().await;
    let proxy = Proxy::start(&config(
        backend.addr,
        &["name: raw, accept_proxy: true, send_proxy: v2"],
    ))
    .await;
    proxy.wait_candidates("raw", 1).await;
    let addr = proxy.addr("raw").await;

    for header in [b"PROXY TCP4 192.0.2.44 192.0.2.1 5555 3306\r\n".to_vec(), {
        let mut v2 = Vec::new();
        ProxyHeader::with_address(proxy_header::ProxiedAddress::stream(
            "192.0.2.44:5555".parse().unwrap(),
            "192.0.2.1:3306".parse().unwrap(),
        ))
        .encode_v2(&mut v2)
        .unwrap();
        v2
    }] {
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.set_nodelay(true).unwrap();
        // The header in two segments; the second waits until the first was sent.
        let (first, second) = header.split_at(header.len() / 2);
        client.write_all(first).await.unwrap();
        client.flush().await.unwrap();
        tokio::task::yield_now().await;
        client.write_all(second).await.unwrap();
        // The echo backend returns what it got: rolegate's v2 header, then the payload.
        let payload = random(4 << 20);
        let before = spliced(&proxy, "raw");
        let expect = 16 + 12 + payload.len();
        let (got, mut client) = round_trip(client, payload.clone(), expect).await;
        let (sent, len) = ProxyHeader::parse(&got, ParseConfig::default()).expect("a v2 header");
        assert_eq!(len, 28);
        let a = sent.proxied_address().expect("addresses");
        assert_eq!(a.source, "192.0.2.44:5555".parse::<SocketAddr>().unwrap());
        assert_eq!(
            a.destination,
            "192.0.2.1:3306".parse::<SocketAddr>().unwrap()
        );
        assert!(got[len..] == payload[..], "payload changed on the way");
        // Byte counts are added when the session ends.
        client.shutdown().await.unwrap();
        assert!(closed(&mut client).await);
        eventually(Duration::from_secs(10), "the payload was spliced", || {
            let now = spliced(&proxy, "raw");
            async move { now > before }
        })
        .await;
    }
    assert_eq!(refused(&proxy, "raw"), 0.0);
    proxy.stop().await;
}

#[tokio::test]
async fn local_and_unknown_headers_fall_back_to_the_socket_address() {
    logs();
    let backend = fake::echo().spawn().await;
    let proxy = Proxy::start(&config(
        backend.addr,
        &["name: hc, accept_proxy: true, send_proxy: v1"],
    ))
    .await;
    proxy.wait_candidates("hc", 1).await;
    let addr = proxy.addr("hc").await;
    let mut local = Vec::new();
    ProxyHeader::with_local().encode_v2(&mut local).unwrap();
    for header in [b"PROXY UNKNOWN\r\n".to_vec(), local] {
        let mut client = connect_from("127.0.0.9", addr).await;
        let port = client.local_addr().unwrap().port();
        client.write_all(&header).await.unwrap();
        let expect = format!("PROXY TCP4 127.0.0.9 127.0.0.1 {port} {}\r\n", addr.port());
        let (got, _client) = round_trip(client, b"ping".to_vec(), expect.len() + 4).await;
        assert_eq!(String::from_utf8_lossy(&got), format!("{expect}ping"));
    }
    proxy.stop().await;
}

#[tokio::test]
async fn malformed_and_missing_headers_are_closed_and_counted_and_others_carry_on() {
    logs();
    let backend = fake::echo().spawn().await;
    let proxy = Proxy::start(&config(
        backend.addr,
        &["name: strict, accept_proxy: true, proxy_timeout: 300ms"],
    ))
    .await;
    proxy.wait_candidates("strict", 1).await;
    let addr = proxy.addr("strict").await;

    let good = |n: u8| async move {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(format!("PROXY TCP4 192.0.2.{n} 192.0.2.1 4000 5432\r\n").as_bytes())
            .await
            .unwrap();
        let (got, c) = round_trip(c, b"hello".to_vec(), 5).await;
        assert_eq!(got, b"hello");
        c
    };
    let open = good(1).await;

    let mut http = TcpStream::connect(addr).await.unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(closed(&mut http).await, "a malformed header is closed");
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed(&mut silent).await,
        "no header: closed at proxy_timeout"
    );
    eventually(Duration::from_secs(5), "both refusals counted", || {
        let n = refused(&proxy, "strict");
        async move { n == 2.0 }
    })
    .await;
    assert_eq!(
        backend.sessions.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    // One warning for the two (rate-limited), naming the reason.
    let warned = log_lines(&[
        "WARN",
        "Connection refused.",
        "listener=strict",
        "proxy_header",
    ]);
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains("malformed PROXY header"), "{warned:?}");

    // The open session and new ones are unaffected.
    let (got, _open) = round_trip(open, b"still here".to_vec(), 10).await;
    assert_eq!(got, b"still here");
    let _ = good(2).await;
    assert_eq!(refused(&proxy, "strict"), 2.0);
    proxy.stop().await;
}

#[tokio::test]
async fn a_reload_turns_accept_proxy_on_for_new_sessions_on_the_same_socket() {
    logs();
    let backend = fake::echo().spawn().await;
    let before = config(backend.addr, &["name: flip"]);
    let proxy = Proxy::start(&before).await;
    proxy.wait_candidates("flip", 1).await;
    let addr = proxy.addr("flip").await;
    let plain = TcpStream::connect(addr).await.unwrap();
    let (_, plain) = round_trip(plain, b"plain".to_vec(), 5).await;

    let after = config(backend.addr, &["name: flip, accept_proxy: true"]);
    let config = rolegate::config::Config::from_yaml_str(&after, None).unwrap();
    proxy.app.reload(config).await.expect("reload");
    assert_eq!(proxy.addr("flip").await, addr, "not rebound");
    proxy.wait_candidates("flip", 1).await;

    let mut no_header = TcpStream::connect(addr).await.unwrap();
    no_header.write_all(b"plain again\r\n").await.unwrap();
    assert!(closed(&mut no_header).await, "a header is now required");
    let mut with = TcpStream::connect(addr).await.unwrap();
    with.write_all(b"PROXY TCP4 192.0.2.3 192.0.2.1 1 2\r\n")
        .await
        .unwrap();
    let (got, _with) = round_trip(with, b"proxied".to_vec(), 7).await;
    assert_eq!(got, b"proxied");
    // The session from before the reload goes on as it started.
    let (got, _plain) = round_trip(plain, b"old".to_vec(), 3).await;
    assert_eq!(got, b"old");
    assert_eq!(refused(&proxy, "flip"), 1.0);
    proxy.stop().await;
}

#[test]
fn send_proxy_takes_v1_or_v2_and_proxy_timeout_a_positive_duration() {
    let yaml = |extra: &str| config("127.0.0.1:1".parse().unwrap(), &[extra]);
    let err = rolegate::config::Config::from_yaml_str(&yaml("name: l, send_proxy: v3"), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("send_proxy"), "{err}");
    assert!(err.contains("v1") && err.contains("v2"), "{err}");
    let err = rolegate::config::Config::from_yaml_str(
        &yaml("name: l, accept_proxy: true, proxy_timeout: 0s"),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("listeners[0].proxy_timeout"), "{err}");
    let ok = rolegate::config::Config::from_yaml_str(&yaml("name: l, send_proxy: v2"), None)
        .expect("valid");
    let l = &ok.listeners[0];
    assert!(!l.accept_proxy);
    assert_eq!(l.proxy_timeout, Duration::from_secs(5));
    assert_eq!(l.send_proxy, Some(rolegate::config::ProxyVersion::V2));
}
