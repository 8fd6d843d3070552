//! Resource exhaustion: the real binary out of file descriptors (a limit lowered under it), its
//! descriptor budget (a low `RLIMIT_NOFILE` from the start), and a listener at
//! `max_connections` whose kernel backlog overflows.
//!
//! The first needs root (to lower a child's limit reliably and raise ours) and the lab's Redis
//! pair, so it holds the lab lock; `bash loadtest/test.sh` provides both.

use crate::support;

use std::net::SocketAddr;
use std::time::Duration;

use support::binary::{self, Rolegate, Start};
use support::files::ConfigFile;
use support::lab::{self, Engine};
use support::require;
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

/// The descriptor limit lowered under a running proxy (`prlimit`, 64 descriptors): its budget,
/// planned for the old limit, no longer fits, so accept meets `EMFILE` after a couple of dozen
/// sessions. Accept must back off (not spin: at most one failed accept per back-off period and
/// worker, and one warning per exhaustion, not one per failure), sessions already open keep
/// working, nobody waits forever, and service resumes once descriptors are free again — with
/// nothing leaked.
///
/// Nothing is asked of the admin server while descriptors are exhausted (it competes for each
/// freed one with the accept loops): the failed-accept rate is taken from the counter after the
/// release, over the time from the first client that was not served to the release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_accept_backs_off_sessions_flow_and_service_resumes() {
    let Some(_) = require::root_and_lab(&[Engine::Redis]) else {
        return;
    };
    let _lock = lab::lock();
    support::raise_fd_limit(4096);
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
    let rg = Rolegate::start(&file.path, Start::default()).await;
    let admin = rg.admin();
    binary::wait_ready(admin).await;
    let rw = binary::listener_addr(admin, "rw").await;
    let baseline = rg.open_fds();
    rg.limit_fds(64);

    // 1. Fill: clients until several in a row are not served.
    let (mut served, mut waiting) = (Vec::new(), Vec::new());
    let mut exhausted = None;
    for _ in 0..200 {
        let tried = std::time::Instant::now();
        let mut s = TcpStream::connect(rw)
            .await
            .expect("the kernel still completes handshakes");
        s.write_all(&auth_and_ping()).await.unwrap();
        match answer(&mut s, AUTH_PONG, Duration::from_millis(300)).await {
            Some(true) => served.push(s),
            _ => {
                // The first accept that can fail is this client's.
                exhausted.get_or_insert(tried);
                waiting.push(s);
            }
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
    let exhausted = exhausted.expect("a client waited");
    let warned = rg.count(warning);

    // 2. Sessions already open keep flowing.
    for s in &mut served {
        s.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
        assert_eq!(
            answer(s, b"+PONG\r\n", Duration::from_secs(2)).await,
            Some(true),
            "an open session stopped working while descriptors were exhausted"
        );
    }

    // 3. Stay exhausted for a measured while (the window the failure rate is taken over).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let window = exhausted.elapsed();
    assert!(
        rg.count(warning) <= warned + 2,
        "one warning per worker and exhaustion, not per failure: {} after {warned}",
        rg.count(warning)
    );

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

    // 5. Back-off, not a spin: at most one failed accept per 100 ms back-off and worker
    //    (2 workers; twice that as slack). The few failures after the release (before the
    //    loops' next try) count too, which only overstates the rate.
    let m = support::http::get(admin, "/metrics").await.body;
    let failed = metric_value(
        &m,
        "rolegate_accept_errors_total{listener=\"rw\",reason=\"fd_limit\"}",
    )
    .unwrap_or(0.0);
    let rate = failed / window.as_secs_f64();
    assert!(failed >= 1.0, "the exhaustion was not counted: {m}");
    assert!(
        rate <= 40.0,
        "{failed} failed accepts in {window:?} ({rate:.1}/s): the accept loop spins"
    );

    // 6. Nothing leaked; a clean stop.
    rg.settles_to_fds(baseline).await;
    eprintln!(
        "fd exhaustion: {held} sessions at 64 fds, {resumed}/10 waiting clients served after the release, {rate:.1} failed accepts/s while exhausted, fds {baseline} before and after"
    );
    rg.stop_cleanly().await;
}

/// A limit of 128 descriptors from the start: the proxy plans for it, so a client flood stops
/// at the planned session capacity and waits in the backlog instead of taking the descriptors
/// the control plane needs. While full, not one accept fails, role checks that open a new
/// connection each time (`protocol: tcp`) keep passing, and the admin API answers; once
/// sessions end, every waiting client is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_descriptor_limit_caps_sessions_and_keeps_checks_and_admin_working() {
    let backend = fake::echo().spawn().await;
    let file = ConfigFile::new(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}
log: {{ format: json }}
workers: 2
clusters:
  - name: app
    protocol: tcp
    check: {{ interval: 100ms, timeout: 250ms, rise: 1, fall: 3 }}
    backends: [ {{ name: a, address: \"{}\" }} ]
listeners:
  - {{ name: rw, bind: \"127.0.0.1:0\", cluster: app, role: any, max_connections: 1000 }}
",
        backend.addr
    ));
    let rg = Rolegate::start(&file.path, Start::nofile(128)).await;
    let admin = rg.admin();
    binary::wait_ready(admin).await;
    let rw = binary::listener_addr(admin, "rw").await;
    let baseline = rg.open_fds();
    let scrape = || async { support::http::get(admin, "/metrics").await.body };
    let capacity = metric_value(&scrape().await, "rolegate_session_fd_capacity ")
        .expect("rolegate_session_fd_capacity exported") as usize;
    assert!(
        (10..64).contains(&capacity),
        "{capacity} sessions planned for 128 descriptors"
    );
    let shortfall = "RLIMIT_NOFILE allows fewer sessions than the listeners' max_connections; beyond it clients wait in the backlog. Raise LimitNOFILE (systemd) or ulimit -n.";
    assert!(
        rg.count(shortfall) == 1,
        "the start-up warning names the shortfall against the max_connections set: {:#?}",
        rg.lines()
    );

    // 1. Fill past the capacity: exactly `capacity` clients are served, the rest wait.
    let (mut served, mut waiting) = (Vec::new(), Vec::new());
    for i in 0..capacity + 4 {
        let mut s = TcpStream::connect(rw).await.expect("handshake");
        let byte = [i as u8];
        s.write_all(&byte).await.unwrap();
        match answer(&mut s, &byte, Duration::from_millis(300)).await {
            Some(true) => served.push(s),
            Some(false) => panic!("client {i} was closed, not held in the backlog"),
            None => waiting.push((s, byte)),
        }
    }
    assert_eq!(
        served.len(),
        capacity,
        "served exactly the planned capacity"
    );

    // 2. While full: the admin API answers, checks that need a new socket each keep passing,
    //    and no accept failed.
    let checks = "rolegate_check_duration_seconds_count{backend=\"a\",cluster=\"app\"}";
    let before = metric_value(&scrape().await, checks).expect("check count");
    eventually(Duration::from_secs(10), "five more checks", || async {
        metric_value(&scrape().await, checks).unwrap_or(0.0) >= before + 5.0
    })
    .await;
    let m = scrape().await;
    assert!(
        !m.lines()
            .any(|l| l.starts_with("rolegate_check_failures_total{") && !l.ends_with(" 0")),
        "a check failed while sessions were at capacity:\n{m}"
    );
    assert_eq!(
        metric_value(&m, "rolegate_backend_up{backend=\"a\",cluster=\"app\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &m,
            "rolegate_accept_errors_total{listener=\"rw\",reason=\"fd_limit\"}"
        ),
        Some(0.0),
        "the budget keeps accept from running out of descriptors"
    );
    assert!(
        metric_value(
            &m,
            "rolegate_listener_refused_total{listener=\"rw\",reason=\"fd_budget\"}"
        )
        .is_some_and(|v| v >= 1.0),
        "the stall is counted: {m}"
    );

    // 3. Sessions end: every waiting client is served, in its own session.
    drop(served);
    for (s, byte) in &mut waiting {
        assert_eq!(
            answer(s, byte.as_slice(), Duration::from_secs(5)).await,
            Some(true),
            "a waiting client was not served after sessions ended"
        );
    }
    drop(waiting);
    rg.settles_to_fds(baseline).await;
    // A reload that changes neither the plan nor max_connections does not repeat the warning.
    rg.signal(libc::SIGHUP);
    eventually(Duration::from_secs(10), "reloaded", || {
        let n = rg.count("Configuration reloaded.");
        async move { n == 1 }
    })
    .await;
    assert_eq!(
        rg.count(shortfall),
        1,
        "warned again on an unchanged reload"
    );
    eprintln!("descriptor budget: {capacity} sessions at 128 descriptors, fds {baseline} before and after");
    rg.stop_cleanly().await;
}

/// Two sessions allowed, a backlog of two, twelve clients: the extra ones wait — in the
/// accept queue while it has room, as SYNs the kernel drops (and the client retransmits)
/// beyond it — and every one of them is served once the first two leave. Nobody is refused,
/// nobody hangs. (`tests/it/data_plane.rs` covers the simple case of one waiting client.)
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

/// A descriptor limit that leaves no room for a single session next to the control plane is a
/// clear error naming the limit, what is needed and how to raise it — at start (exit 1) and on
/// reload (refused; the running configuration, and its sessions, stay).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_too_low_for_the_control_plane_is_refused_at_start_and_on_reload() {
    let backend = fake::echo().spawn().await;
    let config = |backends: usize| {
        // The first is the echo server; the others (never started: the config is refused)
        // only need distinct addresses.
        let list: Vec<String> = (0..backends)
            .map(|i| match i {
                0 => format!("{{ name: b0, address: \"{}\" }}", backend.addr),
                i => format!("{{ name: b{i}, address: \"127.0.0.2:{i}\" }}"),
            })
            .collect();
        format!(
            "admin: {{ listen: 127.0.0.1:0 }}
log: {{ format: json }}
workers: 2
clusters:
  - name: app
    protocol: tcp
    check: {{ interval: 1s, timeout: 500ms, rise: 1, fall: 1 }}
    backends: [ {} ]
listeners:
  - {{ name: rw, bind: \"127.0.0.1:0\", cluster: app, role: any }}
",
            list.join(", ")
        )
    };
    let too_low =
        |text: &str| text.contains("RLIMIT_NOFILE is 128") && text.contains("LimitNOFILE=");

    // At start: 200 backends need 400 descriptors for their checks alone.
    let file = ConfigFile::new(&config(200));
    let mut rg = Rolegate::launch(&file.path, Start::nofile(128));
    let status = rg
        .wait(Duration::from_secs(20))
        .await
        .expect("exits at once");
    assert_eq!(status.code(), Some(1));
    assert!(rg.lines().iter().any(|l| too_low(l)), "{:#?}", rg.lines());

    // On reload: the same growth is refused and the proxy keeps serving.
    file.write(&config(1));
    let rg = Rolegate::start(&file.path, Start::nofile(128)).await;
    let admin = rg.admin();
    binary::wait_ready(admin).await;
    let rw = binary::listener_addr(admin, "rw").await;
    let mut open = TcpStream::connect(rw).await.unwrap();
    open.write_all(b"1").await.unwrap();
    assert_eq!(
        answer(&mut open, b"1", Duration::from_secs(5)).await,
        Some(true)
    );
    file.write(&config(200));
    rg.signal(libc::SIGHUP);
    let refused = "Reload failed; the previous configuration keeps running.";
    eventually(Duration::from_secs(10), "reload refused", || {
        let n = rg.count(refused);
        async move { n == 1 }
    })
    .await;
    let line = rg
        .json_lines()
        .into_iter()
        .find(|v| v["message"] == refused)
        .expect("logged");
    assert!(too_low(&line.to_string()), "{line}");
    open.write_all(b"2").await.unwrap();
    assert_eq!(
        answer(&mut open, b"2", Duration::from_secs(5)).await,
        Some(true),
        "the open session survived the refused reload"
    );
    drop(open);
    rg.stop_cleanly().await;
}
