//! Connection rescue: a session whose backend loses its role (or closes) before it has sent the
//! client a single byte is moved to the new primary instead of failing.
//!
//! Until the backend's first byte, a session is in its *opening*: the client's bytes are
//! relayed to the backend and kept (at most [`RESCUE_LIMIT`]). If the session's guard fires in
//! that phase (its backend was demoted, replaced, went stale or down) or the backend closes
//! without a word, the session is placed again — waiting in the queue like a new connection —
//! and the kept bytes are replayed to the new backend. The client never learns it moved.
//!
//! Why a replay cannot duplicate a write: PostgreSQL and MySQL clients send no query before the
//! server has answered the handshake (PostgreSQL's startup or SSLRequest waits for the server;
//! MySQL's server speaks first), and Redis clients that authenticate wait for the reply to
//! `AUTH`/`HELLO`. The kept bytes are then only the handshake. A Redis client that pipelines a
//! write without waiting for any reply may have it applied by the old node too, if that node
//! wakes up and reads its socket before the reset sent here (the old node is stale by then, and
//! never routed). Beyond [`RESCUE_LIMIT`] bytes the session is not rescued.
//!
//! Once the backend's first byte is readable (only peeked: the transfer moves it), the opening
//! is over and the session is never replayed.

use bytes::BufMut as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Most client bytes kept for a replay.
pub const RESCUE_LIMIT: usize = 16 * 1024;

/// How a session's opening ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Opening {
    /// Transfer as usual: the backend answered, the client closed or failed, or it sent more
    /// than [`RESCUE_LIMIT`]. `sent` client bytes already went to the backend.
    Handover { sent: u64 },
    /// The backend lost its role or closed before answering: place the session again and
    /// replay these bytes.
    Rescue(Vec<u8>),
}

/// Runs the opening on a freshly connected `backend`, first replaying `kept` (the bytes a
/// previous backend of this session received).
pub async fn opening(
    client: &mut TcpStream,
    backend: &mut TcpStream,
    guard: &CancellationToken,
    mut kept: Vec<u8>,
) -> Opening {
    if !kept.is_empty() && !forward(backend, &kept, guard).await {
        return Opening::Rescue(kept);
    }
    let mut probe = [0u8; 1];
    loop {
        if kept.len() >= RESCUE_LIMIT {
            return Opening::Handover {
                sent: kept.len() as u64,
            };
        }
        let before = kept.len();
        let event = {
            let mut room = (&mut kept).limit(RESCUE_LIMIT - before);
            tokio::select! {
                biased;
                () = guard.cancelled() => Event::Cancelled,
                answered = backend.peek(&mut probe) => Event::Answered(answered),
                read = client.read_buf(&mut room) => Event::Read(read),
            }
        };
        match event {
            Event::Cancelled => return Opening::Rescue(kept),
            Event::Answered(Ok(n)) if n > 0 => {
                return Opening::Handover {
                    sent: before as u64,
                }
            }
            // Closed or reset without a word: nothing was answered, so nothing is lost.
            Event::Answered(_) => return Opening::Rescue(kept),
            Event::Read(Ok(n)) if n > 0 => {
                if !forward(backend, &kept[before..], guard).await {
                    return Opening::Rescue(kept);
                }
            }
            // The client closed or failed: the transfer sees it again and ends the session.
            Event::Read(_) => {
                return Opening::Handover {
                    sent: before as u64,
                }
            }
        }
    }
}

enum Event {
    Cancelled,
    Answered(std::io::Result<usize>),
    Read(std::io::Result<usize>),
}

/// Writes `bytes` to the backend unless the guard fires first; `false` when they may not have
/// arrived (the caller rescues).
async fn forward(backend: &mut TcpStream, bytes: &[u8], guard: &CancellationToken) -> bool {
    tokio::select! {
        biased;
        () = guard.cancelled() => false,
        written = backend.write_all(bytes) => written.is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A connected pair (ours, theirs).
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
        (a.unwrap(), b.unwrap().0)
    }

    #[tokio::test]
    async fn a_guard_fired_before_the_first_reply_rescues_with_the_client_bytes() {
        let (mut client_side, mut client) = pair().await;
        let (mut backend, mut server) = pair().await;
        let guard = CancellationToken::new();
        client_side.write_all(b"startup").await.unwrap();
        let g = guard.clone();
        let run = tokio::spawn(async move {
            let r = opening(&mut client, &mut backend, &g, Vec::new()).await;
            (r, client, backend)
        });
        let mut got = [0u8; 7];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"startup", "relayed to the backend");
        guard.cancel();
        let (r, mut client, mut backend2) = run.await.unwrap();
        assert_eq!(r, Opening::Rescue(b"startup".to_vec()));
        // Replayed to the next backend, before anything new.
        let (mut next, mut next_server) = pair().await;
        drop(backend2.shutdown().await);
        let g = CancellationToken::new();
        let run = tokio::spawn(async move {
            let r = opening(&mut client, &mut next, &g, b"startup".to_vec()).await;
            (r, next)
        });
        next_server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"startup");
        next_server.write_all(b"R").await.unwrap();
        let (r, _next) = run.await.unwrap();
        assert_eq!(r, Opening::Handover { sent: 7 });
    }

    #[tokio::test]
    async fn a_session_that_received_a_byte_is_never_rescued() {
        let (_client_side, mut client) = pair().await;
        let (mut backend, mut server) = pair().await;
        let guard = CancellationToken::new();
        server.write_all(b"greeting").await.unwrap();
        let r = opening(&mut client, &mut backend, &guard, Vec::new()).await;
        assert_eq!(r, Opening::Handover { sent: 0 });
        // The greeting is still there for the transfer (peeked, not read).
        let mut got = [0u8; 8];
        backend.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"greeting");
    }

    #[tokio::test]
    async fn a_backend_that_closes_without_a_word_is_rescued_and_one_past_the_limit_is_not() {
        let (mut client_side, mut client) = pair().await;
        let (mut backend, server) = pair().await;
        let guard = CancellationToken::new();
        client_side.write_all(b"x").await.unwrap();
        drop(server);
        let r = opening(&mut client, &mut backend, &guard, Vec::new()).await;
        assert!(matches!(r, Opening::Rescue(_)), "{r:?}");

        let (mut client_side, mut client) = pair().await;
        let (mut backend, mut server) = pair().await;
        let big = vec![7u8; RESCUE_LIMIT + 1];
        let sink = tokio::spawn(async move {
            let mut v = Vec::new();
            let mut buf = [0u8; 4096];
            while v.len() < RESCUE_LIMIT {
                let n = server.read(&mut buf).await.unwrap();
                v.extend_from_slice(&buf[..n]);
            }
            server
        });
        client_side.write_all(&big).await.unwrap();
        let r = opening(&mut client, &mut backend, &guard, Vec::new()).await;
        assert_eq!(
            r,
            Opening::Handover {
                sent: RESCUE_LIMIT as u64
            }
        );
        let _server = sink.await.unwrap();
    }
}
