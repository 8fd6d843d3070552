//! Resource exhaustion: the real binary out of file descriptors (a low `RLIMIT_NOFILE`), and
//! a listener at `max_connections` whose kernel backlog overflows.
//!
//! The first needs root (to lower a child's limit reliably and raise ours) and the lab's Redis
//! pair, so it holds the lab lock; `bash loadtest/test.sh` provides both.

mod faults;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use faults::binary::{self, Rolegate, Start};
use support::files::ConfigFile;
use support::lab::{self, Engine};
use support::{eventually, fake, metric_value, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `AUTH app <password>` then `PING`, in RESP; the answer is `+OK\r\n+PONG\r\n`.
fn auth_and_ping() -> Vec<u8> {
    let pw = lab::app_password();
    format!(
        "*3\r\n$4\r\nAUTH\r\n$3\r\napp\r\n${}\r\n{pw}\r\n*1\r\n$4\r\nPING\r\n",
        pw.len()
    )
    .into_bytes()
}

const AUTH_PONG: &[u8] = b"+OK\r\n+PONG\r\n";

/// Reads exactly `expect.len()` bytes within `limit`: `Some(true)` when they match,
/// `Some(false)` on EOF/reset (the proxy closed the client), `None` on timeout.
async fn answer(s: &mut TcpStream, expect: &[u8], limit: Duration) -> Option<bool> {
    let mut buf = vec![0u8; expect.len()];
    match tokio::time::timeout(limit, s.read_exact(&mut buf)).await {
        Err(_) => None,
        Ok(Ok(_)) => Some(buf == expect),
        Ok(Err(_)) => Some(false),
    }
}

/// With 64 descriptors the process runs out after a couple of dozen sessions. Accept must
/// back off (not spin: at most one failed accept per back-off period and worker, and one warning
/// per exhaustion, not one per failure), sessions already open keep working, nobody waits
/// forever, and service resumes once descriptors are free again — with nothing leaked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_accept_backs_off_sessions_flow_and_service_resumes() {
    faults::require_root("the fd exhaustion test");
    let _lock = lab::lock();
    lab::require(Engine::Redis).await;
    faults::raise_fd_limit(4096);
    let file = ConfigFile::new(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}
log: {{ format: json }}
workers: 2
clusters:
  - name: r
    protocol: redis
    check: {{ password: \"{pw}\", interval: 250ms }}
    backends: [ {{ name: a, address: \"{a}\" }}, {{ name: b, address: \"{b}\" }} ]
listeners:
  - {{ name: rw, bind: \"127.0.0.1:0\", cluster: r, role: primary, queue_timeout: 2s }}
",
        pw = lab::monitor_password(),
        a = Engine::Redis.addr('A'),
        b = Engine::Redis.addr('B'),
    ));
    let mut rg = Rolegate::start(
        &file.path,
        Start {
            nofile: Some(64),
            ..Start::default()
        },
    )
    .await;
    let admin = rg.admin();
    binary::wait_ready(admin).await;
    let rw = binary::listener_addr(admin, "rw").await;
    let baseline = rg.open_fds();

    // 1. Fill: clients until several in a row are not served.
    let (mut served, mut waiting) = (Vec::new(), Vec::new());
    for _ in 0..200 {
        let mut s = TcpStream::connect(rw)
            .await
            .expect("the kernel still completes handshakes");
        s.write_all(&auth_and_ping()).await.unwrap();
        match answer(&mut s, AUTH_PONG, Duration::from_millis(300)).await {
            Some(true) => served.push(s),
            _ => waiting.push(s),
        }
        if waiting.len() >= 10 {
            break;
        }
    }
    assert!(
        served.len() >= 10,
        "only {} sessions before exhaustion",
        served.len()
    );
    assert_eq!(
        waiting.len(),
        10,
        "64 descriptors never ran out: {} sessions",
        served.len()
    );
    let warning = "Accept failed for lack of resources; backing off.";
    eventually(Duration::from_secs(5), "accept failures logged", || {
        let n = rg.count(warning);
        async move { n > 0 }
    })
    .await;

    // 2. Back-off, not a spin: at most one failed accept per 100 ms back-off and worker
    //    (2 workers; twice that as slack), and no warning beyond the first of each streak. The
    //    admin server is short of descriptors too, so a scrape may take a while: the rate is
    //    taken over the time between the two scrapes' answers.
    let failed_accepts = || async {
        let m = support::http::get(admin, "/metrics").await.body;
        let n = metric_value(
            &m,
            "rolegate_accept_errors_total{listener=\"rw\",reason=\"fd_limit\"}",
        )
        .unwrap_or(0.0);
        (n, std::time::Instant::now())
    };
    let warned = rg.count(warning);
    let (failed, since) = failed_accepts().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (now, until) = failed_accepts().await;
    let rate = (now - failed) / until.duration_since(since).as_secs_f64();
    assert!(
        rate <= 40.0,
        "{rate:.1} failed accepts per second: the accept loop spins"
    );
    assert!(
        rg.count(warning) <= warned + 2,
        "one warning per worker and exhaustion, not per failure: {} after {warned}",
        rg.count(warning)
    );

    // 3. Sessions already open keep flowing.
    for s in &mut served {
        s.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
        assert_eq!(
            answer(s, b"+PONG\r\n", Duration::from_secs(2)).await,
            Some(true),
            "an open session stopped working while descriptors were exhausted"
        );
    }

    // 4. Free the descriptors: every waiting client is served or closed, none hangs; service
    //    resumes.
    let held = served.len();
    drop(served);
    let mut resumed = 0;
    for s in &mut waiting {
        match answer(s, AUTH_PONG, Duration::from_secs(15)).await {
            Some(true) => resumed += 1,
            Some(false) => {} // accepted while no backend socket could be made: refused after queue_timeout
            None => panic!("a client waited more than 15 s after descriptors were freed"),
        }
    }
    assert!(
        resumed >= 1,
        "no waiting client was served after descriptors were freed"
    );
    drop(waiting);
    let mut fresh = TcpStream::connect(rw).await.unwrap();
    fresh.write_all(&auth_and_ping()).await.unwrap();
    assert_eq!(
        answer(&mut fresh, AUTH_PONG, Duration::from_secs(5)).await,
        Some(true)
    );
    drop(fresh);
    eventually(Duration::from_secs(5), "recovery logged", || {
        let n = rg.count("Accepting again.");
        async move { n >= 1 }
    })
    .await;

    // 5. Nothing leaked; the exhaustion was counted; a clean stop.
    eventually(Duration::from_secs(10), "fds back to baseline", || {
        let n = rg.open_fds();
        async move { n <= baseline + 2 }
    })
    .await;
    let m = support::http::get(admin, "/metrics").await.body;
    assert!(
        metric_value(
            &m,
            "rolegate_accept_errors_total{listener=\"rw\",reason=\"fd_limit\"}"
        )
        .is_some_and(|v| v >= 1.0),
        "{m}"
    );
    eprintln!(
        "fd exhaustion: {held} sessions at 64 fds, {resumed}/10 waiting clients served after the release, {rate:.1} failed accepts/s while exhausted, fds {baseline} before and after"
    );
    rg.signal(libc::SIGTERM);
    let status = rg
        .wait(Duration::from_secs(20))
        .await
        .expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "{:#?}", rg.lines());
}

/// Two sessions allowed, a backlog of two, twelve clients: the extra ones wait — in the
/// accept queue while it has room, as SYNs the kernel drops (and the client retransmits)
/// beyond it — and every one of them is served once the first two leave. Nobody is refused,
/// nobody hangs. (`tests/data_plane.rs` covers the simple case of one waiting client.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_with_a_full_backlog_serves_every_client_eventually() {
    let backend = fake::echo().spawn().await;
    let yaml = format!(
        "admin: {{ listen: 127.0.0.1:0 }}
clusters:
  - name: app
    protocol: tcp
    check: {{ interval: 10s, timeout: 1s, rise: 1, fall: 1 }}
    backends: [ {{ name: a, address: \"{}\" }} ]
listeners:
  - {{ name: rw, bind: \"127.0.0.1:0\", cluster: app, role: any, max_connections: 2, backlog: 2 }}
",
        backend.addr
    );
    let proxy = Proxy::start(&yaml).await;
    proxy.wait_candidates("rw", 1).await;
    let addr: SocketAddr = proxy.addr("rw").await;
    let mut first = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        c.read_exact(&mut b).await.unwrap();
        first.push(c);
    }
    let started = tokio::time::Instant::now();
    let extra: Vec<_> = (0..10u8)
        .map(|i| {
            tokio::spawn(async move {
                let mut c = TcpStream::connect(addr).await?;
                c.write_all(&[i]).await?;
                let mut b = [0u8; 1];
                c.read_exact(&mut b).await?;
                assert_eq!(b[0], i);
                std::io::Result::Ok(started.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        extra.iter().all(|t| !t.is_finished()),
        "a client was served while two sessions held the limit"
    );
    drop(first);
    let mut slowest = Duration::ZERO;
    for t in extra {
        let waited = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("a waiting client hung")
            .unwrap()
            .expect("a waiting client was refused");
        slowest = slowest.max(waited);
    }
    eprintln!("backlog overflow: the last of 10 extra clients was served after {slowest:?}");
    let m = proxy.metrics();
    assert!(
        metric_value(
            &m,
            "rolegate_listener_refused_total{listener=\"rw\",reason=\"max_connections\"}"
        )
        .is_some_and(|v| v >= 1.0),
        "{m}"
    );
    proxy.stop().await;
}
