//! Integration tests of `rolegate::data_plane::transfer` over real loopback sockets on port 0.
//!
//! Every test builds `app client ⇄ [client socket | transfer() | backend socket] ⇄ app server`
//! with [`Session::start`] and waits on conditions, never on sleeps. Tests about time use Tokio's
//! paused clock. The descriptor-count test runs alone in a child process, because descriptors
//! are process-wide and the other tests run in parallel.

use std::io;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use rolegate::config::TransferMode;
use rolegate::data_plane::transfer::{
    self, testing, transfer, EndReason, TransferOptions, TransferStats,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const SPLICE: bool = cfg!(all(target_os = "linux", feature = "splice"));
const MIB: usize = 1024 * 1024;

// === support ===

/// A proxied session: the two application ends and the task running `transfer()`.
struct Session {
    client: TcpStream,
    server: TcpStream,
    proxy: JoinHandle<TransferStats>,
    cancel: CancellationToken,
}

impl Session {
    async fn start(mode: TransferMode, idle_timeout: Option<Duration>) -> Session {
        let (client, mut client_side) = connected_pair().await;
        let (mut backend_side, server) = connected_pair().await;
        let cancel = CancellationToken::new();
        let token = cancel.clone();
        let opts = TransferOptions { mode, idle_timeout };
        let proxy = tokio::spawn(async move {
            transfer(&mut client_side, &mut backend_side, &opts, &token).await
        });
        Session {
            client,
            server,
            proxy,
            cancel,
        }
    }
}

/// A connected TCP pair on 127.0.0.1: (connecting end, accepted end).
async fn connected_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let (connected, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (connected.expect("connect"), accepted.expect("accept").0)
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Writes `data` in chunks of assorted sizes (small and bulk), then shuts the write side down.
async fn send_all(mut w: OwnedWriteHalf, data: &[u8]) -> io::Result<()> {
    let sizes = [1, 100, 1_000, 65_536, 300_000, 17, 128 * 1024];
    let mut rest = data;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at((*size).min(rest.len()));
        w.write_all(chunk).await?;
        rest = tail;
    }
    w.shutdown().await
}

/// Reads to EOF and returns (byte count, SHA-256).
async fn hash_to_eof(mut r: OwnedReadHalf) -> io::Result<(usize, [u8; 32])> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 64 * 1024];
    let mut total = 0;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok((total, hasher.finalize().into()));
        }
        hasher.update(&buf[..n]);
        total += n;
    }
}

/// Sends `up` client → server and `down` server → client at the same time, checks both arrive
/// byte-exact, and returns the proxy's stats.
async fn exchange(session: Session, up: &[u8], down: &[u8]) -> TransferStats {
    let (client_r, client_w) = session.client.into_split();
    let (server_r, server_w) = session.server.into_split();
    let (sent_up, sent_down, got_up, got_down) = tokio::join!(
        send_all(client_w, up),
        send_all(server_w, down),
        hash_to_eof(server_r),
        hash_to_eof(client_r),
    );
    sent_up.expect("client send");
    sent_down.expect("server send");
    assert_eq!(got_up.expect("server read"), (up.len(), sha256(up)));
    assert_eq!(got_down.expect("client read"), (down.len(), sha256(down)));
    session.proxy.await.expect("transfer task")
}

/// Writes `chunk` until the socket fails; returns the bytes written.
async fn write_until_error(mut w: impl AsyncWriteExt + Unpin, chunk: &[u8]) -> u64 {
    let mut total = 0;
    while w.write_all(chunk).await.is_ok() {
        total += chunk.len() as u64;
    }
    total
}

/// Reads until `at_least` bytes arrived, then returns the stream.
async fn read_at_least(mut r: TcpStream, at_least: usize) -> TcpStream {
    let mut buf = vec![0; 64 * 1024];
    let mut total = 0;
    while total < at_least {
        let n = r.read(&mut buf).await.expect("read");
        assert_ne!(n, 0, "EOF after {total} bytes, wanted {at_least}");
        total += n;
    }
    r
}

/// Closes with RST instead of FIN.
fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    drop(stream);
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

// === byte-exact bulk, both directions at once ===

async fn bulk_both_ways(mode: TransferMode) -> TransferStats {
    let up = random_bytes(8 * MIB + 12_345, 1);
    let down = random_bytes(8 * MIB + 54_321, 2);
    let stats = exchange(Session::start(mode, None).await, &up, &down).await;
    assert!(matches!(stats.end, EndReason::Completed), "{stats:?}");
    assert_eq!(stats.client_to_backend, up.len() as u64);
    assert_eq!(stats.backend_to_client, down.len() as u64);
    stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_both_ways_auto_splices() {
    let (sessions_before, _) = transfer::splice_stats();
    let stats = bulk_both_ways(TransferMode::Auto).await;
    if SPLICE {
        assert!(stats.spliced > 0, "Auto did not splice: {stats:?}");
        assert!(transfer::splice_stats().0 > sessions_before);
    } else {
        assert_eq!(stats.spliced, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_both_ways_copy_never_splices() {
    let stats = bulk_both_ways(TransferMode::Copy).await;
    assert_eq!(stats.spliced, 0);
}

// === half-close ===

async fn half_close(mode: TransferMode) {
    let session = Session::start(mode, None).await;
    let request = random_bytes(100 * 1024, 3);
    let response = random_bytes(3 * MIB, 4);

    let mut client = session.client;
    let mut server = session.server;
    let server_side = async {
        let mut got = Vec::new();
        server
            .read_to_end(&mut got)
            .await
            .expect("server reads to EOF");
        assert_eq!(got, request, "request arrives whole before EOF");
        server.write_all(&response).await.expect("server responds");
        drop(server);
    };
    let client_side = async {
        client.write_all(&request).await.expect("client sends");
        client.shutdown().await.expect("client half-closes");
        let mut got = Vec::new();
        client
            .read_to_end(&mut got)
            .await
            .expect("client reads response");
        assert_eq!(sha256(&got), sha256(&response));
    };
    tokio::join!(server_side, client_side);

    let stats = session.proxy.await.expect("transfer task");
    assert!(matches!(stats.end, EndReason::Completed), "{stats:?}");
    assert_eq!(stats.client_to_backend, request.len() as u64);
    assert_eq!(stats.backend_to_client, response.len() as u64);
}

#[tokio::test]
async fn half_close_is_forwarded_auto() {
    half_close(TransferMode::Auto).await;
}

#[tokio::test]
async fn half_close_is_forwarded_copy() {
    half_close(TransferMode::Copy).await;
}

// === small request/response traffic stays on the copy path ===

#[tokio::test]
async fn ping_pong_in_auto_does_not_splice() {
    const ROUNDS: usize = 1_000;
    let session = Session::start(TransferMode::Auto, None).await;
    let (mut client, mut server) = (session.client, session.server);

    let server_side = async {
        let mut msg = [0; 100];
        for _ in 0..ROUNDS {
            server
                .read_exact(&mut msg)
                .await
                .expect("server reads ping");
            msg.reverse();
            server.write_all(&msg).await.expect("server writes pong");
        }
        assert_eq!(server.read(&mut msg).await.expect("EOF"), 0);
    };
    let client_side = async {
        let mut pong = [0; 100];
        for round in 0..ROUNDS {
            let mut ping = [0; 100];
            ping[0] = round as u8;
            ping[99] = 0xAA;
            client.write_all(&ping).await.expect("client writes ping");
            client
                .read_exact(&mut pong)
                .await
                .expect("client reads pong");
            assert_eq!((pong[0], pong[99]), (0xAA, round as u8));
        }
        client.shutdown().await.expect("client half-closes");
    };
    tokio::join!(server_side, client_side);
    drop(server);

    let stats = session.proxy.await.expect("transfer task");
    assert!(matches!(stats.end, EndReason::Completed), "{stats:?}");
    assert_eq!(stats.client_to_backend, (ROUNDS * 100) as u64);
    assert_eq!(stats.backend_to_client, (ROUNDS * 100) as u64);
    assert_eq!(stats.spliced, 0, "small messages must not be spliced");
}

// === idle timeout (paused clock) ===

#[tokio::test(start_paused = true)]
async fn silent_session_ends_idle_on_time() {
    let started = tokio::time::Instant::now();
    let session = Session::start(TransferMode::Auto, Some(Duration::from_secs(10))).await;
    let stats = session.proxy.await.expect("transfer task");
    let elapsed = started.elapsed();

    assert!(matches!(stats.end, EndReason::Idle), "{stats:?}");
    assert!(
        elapsed >= Duration::from_secs(10),
        "ended early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(10_010),
        "ended late: {elapsed:?}"
    );
    assert_eq!((stats.client_to_backend, stats.backend_to_client), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn trickling_session_stays_open_then_goes_idle() {
    const DRIPS: usize = 12;
    let idle = Duration::from_secs(10);
    let session = Session::start(TransferMode::Auto, Some(idle)).await;
    let (mut client, mut server) = (session.client, session.server);

    // One byte every 4 s for 48 s: far longer than the timeout, never 10 s of silence.
    for drip in 0..DRIPS {
        client.write_all(&[drip as u8]).await.expect("drip");
        assert_eq!(server.read_u8().await.expect("drip arrives"), drip as u8);
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(!session.proxy.is_finished(), "closed while trickling");
    }
    let quiet_since = tokio::time::Instant::now() - Duration::from_secs(4);

    let stats = session.proxy.await.expect("transfer task");
    assert!(matches!(stats.end, EndReason::Idle), "{stats:?}");
    assert_eq!(stats.client_to_backend, DRIPS as u64);
    assert!(quiet_since.elapsed() >= idle);
}

// === cancellation ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_mid_stream_reports_bytes_so_far() {
    let session = Session::start(TransferMode::Auto, None).await;
    let chunk = random_bytes(64 * 1024, 5);
    let writer = tokio::spawn(write_until_error(session.client, chunk.leak()));

    let server = read_at_least(session.server, 2 * MIB).await;
    session.cancel.cancel();
    let stats = session.proxy.await.expect("transfer task");

    assert!(matches!(stats.end, EndReason::Cancelled), "{stats:?}");
    assert!(stats.client_to_backend >= 2 * MIB as u64, "{stats:?}");
    // The proxy dropped its sockets, so the writer fails and stops.
    drop(server);
    writer.await.expect("writer task");
}

// === peer resets are tagged with the right side ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reset_is_a_client_error() {
    for mode in [TransferMode::Auto, TransferMode::Copy] {
        let session = Session::start(mode, None).await;
        let chunk = random_bytes(64 * 1024, 6);
        let writer = tokio::spawn(write_until_error(session.server, chunk.leak()));

        let client = read_at_least(session.client, MIB).await;
        reset(client);
        let stats = session.proxy.await.expect("transfer task");

        assert!(
            matches!(stats.end, EndReason::ClientError(_)),
            "{mode:?}: {stats:?}"
        );
        assert!(stats.backend_to_client >= MIB as u64);
        writer.await.expect("writer task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_reset_is_a_backend_error() {
    for mode in [TransferMode::Auto, TransferMode::Copy] {
        let session = Session::start(mode, None).await;
        let chunk = random_bytes(64 * 1024, 7);
        let writer = tokio::spawn(write_until_error(session.client, chunk.leak()));

        let server = read_at_least(session.server, MIB).await;
        reset(server);
        let stats = session.proxy.await.expect("transfer task");

        assert!(
            matches!(stats.end, EndReason::BackendError(_)),
            "{mode:?}: {stats:?}"
        );
        assert!(stats.client_to_backend >= MIB as u64);
        writer.await.expect("writer task");
    }
}

// === forced fallback: no pipes on this thread ===

/// Current-thread runtime: the proxy task runs on this thread, where pipes are refused.
#[tokio::test]
async fn no_pipes_falls_back_to_copy_byte_exact() {
    let fallbacks_before = transfer::splice_fallbacks();
    testing::refuse_pipes_on_this_thread(true);

    let up = random_bytes(8 * MIB, 8);
    let down = random_bytes(8 * MIB, 9);
    let stats = exchange(Session::start(TransferMode::Auto, None).await, &up, &down).await;
    testing::refuse_pipes_on_this_thread(false);

    assert!(matches!(stats.end, EndReason::Completed), "{stats:?}");
    assert_eq!(stats.spliced, 0);
    if SPLICE {
        assert!(
            transfer::splice_fallbacks() > fallbacks_before,
            "fallback not counted"
        );
    }
}

// === pipes return to the pool; descriptors return to baseline ===

/// Runs [`pipe_and_fd_budget_child`] alone in a child process, so that no other test opens or
/// closes descriptors while it counts them.
#[test]
fn pipe_and_fd_budget() {
    crate::support::isolated("transfer::pipe_and_fd_budget_child");
}

#[tokio::test]
#[ignore = "counts process-wide descriptors; run alone, in a child process, by pipe_and_fd_budget"]
async fn pipe_and_fd_budget_child() {
    const SESSIONS: usize = 200;
    testing::clear_pipe_pool_on_this_thread();
    let baseline = open_fds();
    let (close_tx, close_rx) = tokio::sync::watch::channel(false);
    let (burst_tx, mut burst_rx) = tokio::sync::mpsc::channel(SESSIONS);

    let up: &'static [u8] = random_bytes(MIB, 10).leak();
    let down: &'static [u8] = random_bytes(MIB, 11).leak();

    let mut tasks = Vec::new();
    for i in 0..SESSIONS {
        let (mut close_rx, burst_tx) = (close_rx.clone(), burst_tx.clone());
        tasks.push(tokio::spawn(async move {
            let session = Session::start(TransferMode::Auto, None).await;
            let (mut client, mut server) = (session.client, session.server);
            let (mut got_up, mut got_down) = (vec![0; MIB], vec![0; MIB]);
            let ((mut client_r, mut client_w), (mut server_r, mut server_w)) =
                (client.split(), server.split());
            let (a, b, c, d) = tokio::join!(
                client_w.write_all(up),
                server_w.write_all(down),
                server_r.read_exact(&mut got_up),
                client_r.read_exact(&mut got_down),
            );
            a.and(b).expect("writes");
            c.and(d).expect("reads");
            assert!(got_up == up && got_down == down, "session {i} corrupted");

            // Burst over; stay connected and silent until told to close.
            burst_tx.send(()).await.expect("report burst");
            close_rx
                .wait_for(|close| *close)
                .await
                .expect("close signal");
            drop((client, server));
            session.proxy.await.expect("transfer task")
        }));
    }
    for _ in 0..SESSIONS {
        burst_rx.recv().await.expect("burst report");
    }

    // 1. All sessions open but idle: every open pipe is back in this thread's pool.
    tokio::time::timeout(Duration::from_secs(30), async {
        while transfer::open_pipes() != testing::pooled_pipes_on_this_thread() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("idle sessions still hold pipes");
    let pooled = testing::pooled_pipes_on_this_thread();
    println!("idle: {SESSIONS} sessions, {pooled} pooled pipes");
    assert!(pooled > 0 || !SPLICE, "no session spliced");
    assert_eq!(open_fds(), baseline + SESSIONS * 4 + pooled * 2);

    // 2. All sessions closed.
    close_tx.send(true).expect("signal close");
    let mut spliced = 0;
    for task in tasks {
        let stats = task.await.expect("session task");
        assert!(matches!(stats.end, EndReason::Completed), "{stats:?}");
        spliced += u64::from(stats.spliced > 0);
    }
    println!("closed: {spliced}/{SESSIONS} sessions spliced");
    let pooled = testing::pooled_pipes_on_this_thread();
    assert_eq!(transfer::open_pipes(), pooled);
    assert_eq!(open_fds(), baseline + pooled * 2);

    // 3. Pool emptied: back to the baseline exactly.
    testing::clear_pipe_pool_on_this_thread();
    assert_eq!(transfer::open_pipes(), 0);
    assert_eq!(open_fds(), baseline);
}

// === footprint ===

#[tokio::test]
async fn transfer_future_is_small() {
    let (mut a, mut b) = connected_pair().await;
    let opts = TransferOptions {
        mode: TransferMode::Auto,
        idle_timeout: Some(Duration::from_secs(60)),
    };
    let cancel = CancellationToken::new();
    let future = transfer(&mut a, &mut b, &opts, &cancel);
    let size = std::mem::size_of_val(&future);
    println!("transfer future: {size} bytes");
    assert!(size < 1024, "transfer future is {size} bytes");
}

// === measurement ===

/// Pushes `total` bytes from one end to the other and returns MiB/s.
async fn pump(mut from: TcpStream, mut to: TcpStream, total: usize) -> f64 {
    let started = std::time::Instant::now();
    let writer = tokio::spawn(async move {
        let chunk = vec![0x5A; 256 * 1024];
        let mut left = total;
        while left > 0 {
            let n = left.min(chunk.len());
            from.write_all(&chunk[..n]).await.expect("write");
            left -= n;
        }
        from.shutdown().await.expect("shutdown");
        from
    });
    let mut buf = vec![0; 256 * 1024];
    let mut got = 0;
    loop {
        let n = to.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        got += n;
    }
    assert_eq!(got, total);
    drop(writer.await.expect("writer"));
    total as f64 / MIB as f64 / started.elapsed().as_secs_f64()
}

/// User + system CPU seconds this process has used (from `/proc/self/stat`, 10 ms ticks).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

/// Median MiB/s of `rounds` runs of [`pump`] through `mode` (`None`: a direct socket pair), the
/// process CPU seconds per GiB moved (writer and reader included), and the spliced share.
async fn measure(mode: Option<TransferMode>, total: usize, rounds: usize) -> (f64, f64, f64) {
    let mut rates = Vec::new();
    let mut spliced = 0;
    let cpu_before = cpu_seconds();
    for _ in 0..rounds {
        let rate = match mode {
            None => {
                let (a, b) = connected_pair().await;
                pump(a, b, total).await
            }
            Some(mode) => {
                let session = Session::start(mode, None).await;
                let rate = pump(session.client, session.server, total).await;
                spliced += session.proxy.await.expect("transfer task").spliced;
                rate
            }
        };
        rates.push(rate);
    }
    let gib = (total * rounds) as f64 / (1024 * MIB) as f64;
    let cpu_per_gib = (cpu_seconds() - cpu_before) / gib;
    rates.sort_by(f64::total_cmp);
    let share = spliced as f64 / (total * rounds) as f64;
    (rates[rates.len() / 2], cpu_per_gib, share)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "measurement, run by hand: cargo test --release --test it -- --ignored --nocapture transfer::throughput"]
async fn throughput_1gib() {
    const TOTAL: usize = 1024 * MIB;
    const ROUNDS: usize = 5;
    println!("1 GiB one way, median of {ROUNDS} rounds; CPU = whole process per GiB");
    let (direct, cpu, _) = measure(None, TOTAL, ROUNDS).await;
    println!("direct socket pair : {direct:6.0} MiB/s  CPU {cpu:.2} s/GiB");
    for mode in [TransferMode::Auto, TransferMode::Copy] {
        let (rate, cpu, spliced) = measure(Some(mode), TOTAL, ROUNDS).await;
        println!(
            "transfer() {mode:<5?}   : {rate:6.0} MiB/s  CPU {cpu:.2} s/GiB  ({:.0}% of direct, {:.1}% spliced)",
            100.0 * rate / direct,
            100.0 * spliced
        );
    }
}

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("resident pages");
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run by hand: cargo test --release --test it -- --ignored --nocapture transfer::footprint"]
async fn idle_session_footprint() {
    const SESSIONS: usize = 4_000; // 4 sockets each in this process: 16,000 descriptors
    let mut ends = Vec::with_capacity(SESSIONS);
    let mut proxied = Vec::with_capacity(SESSIONS);
    for _ in 0..SESSIONS {
        let (client, client_side) = connected_pair().await;
        let (backend_side, server) = connected_pair().await;
        ends.push((client, server));
        proxied.push((client_side, backend_side));
    }
    let cancel = CancellationToken::new();
    let before = resident_bytes();

    let mut tasks = Vec::with_capacity(SESSIONS);
    for (mut client_side, mut backend_side) in proxied {
        let token = cancel.clone();
        tasks.push(tokio::spawn(async move {
            let opts = TransferOptions {
                mode: TransferMode::Auto,
                idle_timeout: Some(Duration::from_secs(3600)),
            };
            transfer(&mut client_side, &mut backend_side, &opts, &token).await
        }));
    }
    // One small exchange each way, then silence.
    for (client, server) in &mut ends {
        let mut buf = [0; 100];
        client.write_all(&[1; 100]).await.expect("write");
        server.read_exact(&mut buf).await.expect("read");
        server.write_all(&[2; 100]).await.expect("write");
        client.read_exact(&mut buf).await.expect("read");
    }
    let after = resident_bytes();
    println!(
        "{SESSIONS} idle sessions: {} bytes of RSS each for task + transfer state (sockets excluded), {} pipes open",
        (after.saturating_sub(before)) / SESSIONS,
        transfer::open_pipes(),
    );
    cancel.cancel();
    for task in tasks {
        task.await.expect("transfer task");
    }
}
