//! The PROXY protocol (HAProxy's v1 text and v2 binary headers) at both ends of a session.
//!
//! `accept_proxy`: a load balancer in front of rolegate writes one header before the client's
//! bytes; it carries the address the client connected from (and to). [`addresses`] reads it,
//! and only it: the stream after the header must stay untouched in the socket, so the session
//! can still splice it. A v1 header's length is only known at its CRLF, so the bytes are
//! *peeked* (`MSG_PEEK`) and parsed; a complete header is then consumed with one exact read of
//! its length. A header split over several TCP segments parses as incomplete, and then every
//! peeked byte belongs to it: those are consumed, which empties the socket, so the next peek
//! waits for the next segment instead of returning the same bytes again. A header that is not
//! complete within `proxy_timeout`, is malformed, or is longer than the spec allows ends the
//! session.
//!
//! `send_proxy`: [`encode`] builds the header written to each backend connection (each
//! attempt, so a retry to the next candidate sends it again) before any client byte.
//!
//! The codec itself is the `proxy-header` crate; this module is the glue to sockets.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proxy_header::{ParseConfig, Protocol, ProxiedAddress, ProxyHeader};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::config::ProxyVersion;

/// The longest v1 header, CRLF included (the spec's limit).
const V1_MAX: usize = 107;
/// The fixed part of a v2 header: signature, version/command, family, length.
const V2_FIXED: usize = 16;
/// The v2 signature, the first 12 bytes of every v2 header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v2 header accepted: addresses plus TLVs (which are not used) up to this. Load
/// balancers send a few dozen bytes of TLVs; the length field's 64 KiB would let any client
/// make each session buffer that much.
pub const V2_MAX: usize = 4096;

/// Only the addresses are used; TLVs are skipped without being copied.
const PARSE: ParseConfig = ParseConfig {
    include_tlvs: false,
    allow_v1: true,
    allow_v2: true,
};

/// A listener's PROXY protocol settings, carried in its route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProxyProtocol {
    /// `accept_proxy`: clients send a header first, within this time.
    pub accept: Option<Duration>,
    /// `send_proxy`: the header written to backends.
    pub send: Option<ProxyVersion>,
}

/// Who a connection is from and to, as the client made it: from the PROXY header when the
/// listener accepts one, else the socket's own addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    pub client: SocketAddr,
    /// The address the client connected to; only looked up when a header is sent.
    pub destination: Option<SocketAddr>,
}

/// Why a client's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("no complete PROXY header within {0:?}")]
    Timeout(Duration),
    #[error("the connection ended before the PROXY header was complete")]
    Closed,
    #[error("malformed PROXY header: {0}")]
    Malformed(proxy_header::Error),
    #[error("PROXY v2 header of {0} bytes, longer than the {V2_MAX} accepted")]
    TooLong(usize),
    #[error("reading the PROXY header: {0}")]
    Io(#[from] io::Error),
}

/// The connection's addresses under `settings`: the client's from its PROXY header if the
/// listener accepts one (the socket's own for a LOCAL or UNKNOWN header, as a load balancer's
/// health check sends), else the socket's. `peer` is the socket's peer address.
///
/// # Errors
/// See [`HeaderError`]; the session must then be closed.
pub async fn addresses(
    stream: &mut TcpStream,
    peer: SocketAddr,
    settings: ProxyProtocol,
) -> Result<Addresses, HeaderError> {
    let proxied = match settings.accept {
        Some(limit) => tokio::time::timeout(limit, read_header(stream))
            .await
            .map_err(|_| HeaderError::Timeout(limit))??,
        None => None,
    };
    if let Some(addresses) = proxied {
        return Ok(addresses);
    }
    let destination = match settings.send {
        Some(_) => Some(stream.local_addr()?),
        None => None,
    };
    Ok(Addresses {
        client: peer,
        destination,
    })
}

/// The header that tells a backend about `addresses`.
pub fn encode(version: ProxyVersion, addresses: &Addresses) -> Vec<u8> {
    let (source, destination) = same_family(addresses.client, addresses.destination);
    let header = ProxyHeader::with_address(ProxiedAddress::stream(source, destination));
    let mut out = Vec::with_capacity(V2_FIXED + 36);
    let encoded = match version {
        ProxyVersion::V1 => header.encode_v1(&mut out),
        ProxyVersion::V2 => header.encode_v2(&mut out),
    };
    if encoded.is_err() {
        // Not reachable (one family, a stream, no TLVs); a LOCAL header is still valid.
        out.clear();
        let local = ProxyHeader::with_local();
        let _ = match version {
            ProxyVersion::V1 => local.encode_v1(&mut out),
            ProxyVersion::V2 => local.encode_v2(&mut out),
        };
    }
    out
}

/// A header holds two addresses of one family: an IPv4 one beside an IPv6 one is written
/// v4-mapped; a missing destination is the unspecified address of the client's family.
fn same_family(client: SocketAddr, destination: Option<SocketAddr>) -> (SocketAddr, SocketAddr) {
    let unspecified = |a: &SocketAddr| match a {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    };
    let destination = destination.unwrap_or_else(|| unspecified(&client));
    let mapped = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        v6 => v6,
    };
    if client.is_ipv4() == destination.is_ipv4() {
        (client, destination)
    } else {
        (mapped(client), mapped(destination))
    }
}

/// What a header is read from: peek without consuming, then consume exactly.
pub(crate) trait Incoming {
    /// Copies the bytes waiting (at most `buf.len()`) without consuming them; waits for at
    /// least one; 0 at end of stream.
    async fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Consumes exactly `buf.len()` bytes (already peeked, so they are waiting).
    async fn consume(&mut self, buf: &mut [u8]) -> io::Result<()>;
}

impl Incoming for TcpStream {
    async fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        TcpStream::peek(self, buf).await
    }

    async fn consume(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.read_exact(buf).await.map(drop)
    }
}

/// Reads one PROXY header from `incoming`, not a byte more; `None` for a header without
/// usable addresses (LOCAL, UNKNOWN, AF_UNIX or datagram).
pub(crate) async fn read_header<S: Incoming>(
    incoming: &mut S,
) -> Result<Option<Addresses>, HeaderError> {
    let mut buf = vec![0u8; V1_MAX];
    // `buf[..consumed]` is read from the socket already, all of it header.
    let mut consumed = 0;
    // The header ends at or before this (grows once a v2 header's length is known).
    let mut limit = V1_MAX;
    loop {
        let peeked = incoming.peek(&mut buf[consumed..limit]).await?;
        if peeked == 0 {
            return Err(HeaderError::Closed);
        }
        let seen = consumed + peeked;
        match ProxyHeader::parse(&buf[..seen], PARSE) {
            Ok((header, len)) => {
                let addresses = usable(header.proxied_address());
                // The bytes consumed so far were an incomplete header, so it ends after them.
                let Some(rest) = buf.get_mut(consumed..len) else {
                    return Err(HeaderError::Malformed(proxy_header::Error::Invalid));
                };
                incoming.consume(rest).await?;
                return Ok(addresses);
            }
            Err(proxy_header::Error::BufferTooShort) => {
                if let Some(total) = v2_length(&buf[..seen]) {
                    if total > V2_MAX {
                        return Err(HeaderError::TooLong(total));
                    }
                    if total > buf.len() {
                        buf.resize(total, 0);
                    }
                    limit = total;
                }
                if seen >= limit {
                    // All the header's bytes are there and still too short (a v2 length
                    // that does not fit its addresses).
                    return Err(HeaderError::Malformed(proxy_header::Error::Invalid));
                }
                // Everything seen is header: take it, so the next peek waits for more.
                incoming.consume(&mut buf[consumed..seen]).await?;
                consumed = seen;
            }
            Err(e) => return Err(HeaderError::Malformed(e)),
        }
    }
}

/// A v2 header's total length, once its fixed part is in `buf`.
fn v2_length(buf: &[u8]) -> Option<usize> {
    let fixed = buf.get(..V2_FIXED)?;
    fixed.starts_with(V2_SIGNATURE).then(|| {
        V2_FIXED
            + usize::from(u16::from_be_bytes([
                fixed[V2_FIXED - 2],
                fixed[V2_FIXED - 1],
            ]))
    })
}

fn usable(proxied: Option<&ProxiedAddress>) -> Option<Addresses> {
    let addr = proxied.filter(|a| a.protocol == Protocol::Stream)?;
    Some(Addresses {
        client: addr.source,
        destination: Some(addr.destination),
    })
}

/// Rate limit for the warning about refused headers, shared by a listener's sessions: the
/// metric counts each one; the log gets at most one line per [`WarnEvery::PERIOD`] with the
/// number left out since (a misconfigured load balancer would otherwise log every
/// connection). Lock-free: sessions of several workers share it.
#[derive(Debug)]
pub struct WarnEvery {
    start: Instant,
    /// Milliseconds after `start` of the last warning, plus one (0: none yet).
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl Default for WarnEvery {
    fn default() -> Self {
        WarnEvery {
            start: Instant::now(),
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }
}

impl WarnEvery {
    pub const PERIOD: Duration = Duration::from_secs(10);

    /// `Some(events left out since the last warning)` when this event is to be warned about.
    pub fn due(&self) -> Option<u64> {
        let now = self.start.elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        let period = Self::PERIOD.as_millis() as u64;
        if last != 0 && now < last + period
            || self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// A socket's receive side, scripted: `segments` arrive one per peek that finds the
    /// buffer empty (as the next TCP segment would); what was consumed is recorded.
    struct Segments {
        waiting: Vec<u8>,
        segments: VecDeque<Vec<u8>>,
        consumed: Vec<u8>,
        peeks: usize,
    }

    impl Segments {
        fn new(segments: &[&[u8]]) -> Self {
            Segments {
                waiting: Vec::new(),
                segments: segments.iter().map(|s| s.to_vec()).collect(),
                consumed: Vec::new(),
                peeks: 0,
            }
        }
    }

    impl Incoming for Segments {
        async fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.peeks += 1;
            assert!(self.peeks < 1000, "peeking without progress");
            if self.waiting.is_empty() {
                // Blocks until the next segment; at the end, EOF.
                match self.segments.pop_front() {
                    Some(s) => self.waiting = s,
                    None => return Ok(0),
                }
            }
            let n = buf.len().min(self.waiting.len());
            buf[..n].copy_from_slice(&self.waiting[..n]);
            Ok(n)
        }

        async fn consume(&mut self, buf: &mut [u8]) -> io::Result<()> {
            assert!(buf.len() <= self.waiting.len(), "consumed unpeeked bytes");
            let rest = self.waiting.split_off(buf.len());
            buf.copy_from_slice(&self.waiting);
            self.consumed.extend_from_slice(&self.waiting);
            self.waiting = rest;
            Ok(())
        }
    }

    fn read(segments: &[&[u8]]) -> (Result<Option<Addresses>, HeaderError>, Segments) {
        let mut s = Segments::new(segments);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let r = rt.block_on(read_header(&mut s));
        (r, s)
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    fn v2(client: &str, dest: &str) -> Vec<u8> {
        let a = Addresses {
            client: addr(client),
            destination: Some(addr(dest)),
        };
        encode(ProxyVersion::V2, &a)
    }

    #[test]
    fn a_v1_header_gives_the_client_and_leaves_the_payload() {
        let (r, s) = read(&[b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 3306\r\nSELECT 1"]);
        let a = r.expect("valid").expect("addresses");
        assert_eq!(a.client, addr("192.0.2.7:40000"));
        assert_eq!(a.destination, Some(addr("198.51.100.1:3306")));
        assert_eq!(
            s.consumed,
            b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 3306\r\n"
        );
        assert_eq!(s.waiting, b"SELECT 1", "the payload stays in the socket");
    }

    #[test]
    fn a_v2_header_with_tlvs_gives_the_client_and_leaves_the_payload() {
        let mut header = v2("[2001:db8::5]:5000", "[2001:db8::1]:5432");
        // One TLV (PP2_TYPE_AUTHORITY, "db"): length field grows by 5.
        header.extend_from_slice(&[0x02, 0x00, 0x02, b'd', b'b']);
        let len = u16::from_be_bytes([header[14], header[15]]) + 5;
        header[14..16].copy_from_slice(&len.to_be_bytes());
        let mut stream = header.clone();
        stream.extend_from_slice(b"\x00payload");
        let (r, s) = read(&[&stream]);
        let a = r.expect("valid").expect("addresses");
        assert_eq!(a.client, addr("[2001:db8::5]:5000"));
        assert_eq!(s.consumed, header);
        assert_eq!(s.waiting, b"\x00payload");
    }

    #[test]
    fn a_header_split_over_segments_is_read_whole_and_only_it() {
        let v1 = b"PROXY TCP6 2001:db8::5 2001:db8::1 5000 5432\r\n".to_vec();
        let v2 = v2("192.0.2.9:1234", "192.0.2.1:6379");
        for header in [v1, v2] {
            // Every split point, with the payload arriving with the last piece.
            for cut in 1..header.len() {
                let mut tail = header[cut..].to_vec();
                tail.extend_from_slice(b"PING");
                let (r, s) = read(&[&header[..cut], &tail]);
                assert!(r.expect("valid").is_some(), "cut at {cut}");
                assert_eq!(s.consumed, header, "cut at {cut}");
                assert_eq!(s.waiting, b"PING", "cut at {cut}");
            }
            // One byte per segment.
            let bytes: Vec<&[u8]> = header.chunks(1).collect();
            let (r, s) = read(&bytes);
            assert!(r.expect("valid").is_some());
            assert_eq!(s.consumed, header);
        }
    }

    #[test]
    fn local_and_unknown_headers_use_the_socket_addresses() {
        let (r, s) = read(&[b"PROXY UNKNOWN\r\nhello"]);
        assert!(r.expect("valid").is_none());
        assert_eq!(s.waiting, b"hello");
        let mut local = Vec::new();
        ProxyHeader::with_local().encode_v2(&mut local).unwrap();
        local.extend_from_slice(b"hello");
        let (r, s) = read(&[&local]);
        assert!(r.expect("valid").is_none());
        assert_eq!(s.waiting, b"hello");
    }

    #[test]
    fn malformed_headers_are_refused() {
        let cases: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\n\r\n",
            b"PROXY TCP4 300.1.1.1 1.1.1.1 1 2\r\n",
            b"PROXY TCP4 1.1.1.1 1.1.1.1 99999 2\r\n",
            b"PROXY TCP5 1.1.1.1 1.1.1.1 1 2\r\n",
            b"PROXY TCP4 1.1.1.1 1.1.1.1 1 2\rX",
            b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x0c123456789012", // version 3
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x04abcd",         // too short for IPv4
        ];
        for case in cases {
            let (r, _) = read(&[case]);
            assert!(
                matches!(r, Err(HeaderError::Malformed(_))),
                "{:?}: {r:?}",
                String::from_utf8_lossy(case)
            );
        }
        // A v1 line without CRLF within 107 bytes.
        let long = [b'P', b'R', b'O', b'X', b'Y', b' ']
            .into_iter()
            .chain(std::iter::repeat_n(b'1', 200))
            .collect::<Vec<u8>>();
        let (r, s) = read(&[&long[..50], &long[50..]]);
        assert!(matches!(r, Err(HeaderError::Malformed(_))), "{r:?}");
        assert!(s.consumed.len() < V1_MAX, "never more than a v1 header");
    }

    #[test]
    fn an_oversized_v2_header_and_a_truncated_one_are_refused() {
        let mut big = V2_SIGNATURE.to_vec();
        big.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        big.extend(std::iter::repeat_n(0, 200));
        let (r, _) = read(&[&big]);
        assert!(matches!(r, Err(HeaderError::TooLong(65551))), "{r:?}");
        let (r, _) = read(&[b"PROXY TCP4 1.1.1.1"]);
        assert!(matches!(r, Err(HeaderError::Closed)), "{r:?}");
    }

    #[test]
    fn encoded_headers_parse_back_to_the_addresses() {
        let cases = [
            ("192.0.2.7:40000", Some("198.51.100.1:3306")),
            ("[2001:db8::5]:5000", Some("[2001:db8::1]:5432")),
            // Mixed families: v4-mapped.
            ("192.0.2.7:40000", Some("[2001:db8::1]:5432")),
            ("192.0.2.7:40000", None),
        ];
        for (client, dest) in cases {
            let a = Addresses {
                client: addr(client),
                destination: dest.map(addr),
            };
            for version in [ProxyVersion::V1, ProxyVersion::V2] {
                let bytes = encode(version, &a);
                let (header, len) = ProxyHeader::parse(&bytes, PARSE).expect("parses");
                assert_eq!(len, bytes.len());
                let got = header.proxied_address().expect("proxied");
                let (src, dst) = same_family(a.client, a.destination);
                assert_eq!((got.source, got.destination), (src, dst), "{version:?}");
            }
        }
        let v1 = encode(
            ProxyVersion::V1,
            &Addresses {
                client: addr("127.0.0.5:1000"),
                destination: Some(addr("127.0.0.1:3306")),
            },
        );
        assert_eq!(v1, b"PROXY TCP4 127.0.0.5 127.0.0.1 1000 3306\r\n");
    }

    #[test]
    fn refused_headers_warn_once_per_period_with_the_count_left_out() {
        let w = WarnEvery::default();
        assert_eq!(w.due(), Some(0));
        for _ in 0..5 {
            assert_eq!(w.due(), None);
        }
        // The same state one period later.
        let later = WarnEvery {
            start: Instant::now()
                .checked_sub(WarnEvery::PERIOD)
                .expect("uptime"),
            last: AtomicU64::new(w.last.load(Ordering::Relaxed)),
            suppressed: AtomicU64::new(w.suppressed.load(Ordering::Relaxed)),
        };
        assert_eq!(later.due(), Some(5));
        assert_eq!(later.due(), None);
    }

    #[tokio::test]
    async fn a_socket_keeps_the_bytes_after_a_header_that_came_in_two_writes() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, peer) = listener.accept().await.unwrap();
        let settings = ProxyProtocol {
            accept: Some(Duration::from_secs(10)),
            send: None,
        };
        let reading = tokio::spawn(async move {
            let a = addresses(&mut server, peer, settings).await;
            (a, server)
        });
        client.write_all(b"PROXY TCP4 192.0.2.7 19").await.unwrap();
        tokio::task::yield_now().await;
        client
            .write_all(b"2.0.2.1 40000 3306\r\npayload")
            .await
            .unwrap();
        client.shutdown().await.unwrap();
        let (a, mut server) = reading.await.unwrap();
        assert_eq!(a.expect("valid").client, addr("192.0.2.7:40000"));
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"payload");
    }

    #[tokio::test]
    async fn a_client_that_sends_no_header_is_refused_at_the_deadline() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, peer) = listener.accept().await.unwrap();
        let settings = ProxyProtocol {
            accept: Some(Duration::from_millis(50)),
            send: None,
        };
        let r = addresses(&mut server, peer, settings).await;
        assert!(matches!(r, Err(HeaderError::Timeout(_))), "{r:?}");
    }

    /// A real socket, counting what the reader does.
    struct Counting {
        inner: TcpStream,
        peeks: std::sync::Arc<AtomicU64>,
        consumed: std::sync::Arc<AtomicU64>,
    }

    impl Incoming for Counting {
        async fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.peeks.fetch_add(1, Ordering::Relaxed);
            Incoming::peek(&mut self.inner, buf).await
        }

        async fn consume(&mut self, buf: &mut [u8]) -> io::Result<()> {
            self.consumed.fetch_add(buf.len() as u64, Ordering::Relaxed);
            Incoming::consume(&mut self.inner, buf).await
        }
    }

    #[tokio::test]
    async fn waiting_for_the_rest_of_a_header_does_not_spin_on_the_peeked_bytes() {
        use std::sync::Arc;
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let peeks = Arc::new(AtomicU64::new(0));
        let consumed = Arc::new(AtomicU64::new(0));
        let mut reader = Counting {
            inner: server,
            peeks: peeks.clone(),
            consumed: consumed.clone(),
        };
        let reading = tokio::spawn(async move { read_header(&mut reader).await.map(|_| reader) });
        let first = b"PROXY TCP4 192.0.2.7 192.0.2.1 ";
        client.write_all(first).await.unwrap();
        // The first part is taken (so it arrived alone); the reader now waits for more.
        let deadline = Instant::now() + Duration::from_secs(10);
        while consumed.load(Ordering::Relaxed) < first.len() as u64 {
            assert!(Instant::now() < deadline, "first part not consumed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Turns for a reader that re-peeks the same bytes to show itself before the rest comes.
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        client.write_all(b"40000 3306\r\nrest").await.unwrap();
        let reader = reading.await.unwrap().expect("valid");
        assert_eq!(consumed.load(Ordering::Relaxed), first.len() as u64 + 12);
        // One peek per arrival, plus the one that found the socket empty and armed the wait.
        assert!(peeks.load(Ordering::Relaxed) <= 3, "{peeks:?}");
        let mut rest = [0u8; 4];
        let mut inner = reader.inner;
        inner.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"rest");
    }

    #[test]
    fn mutated_headers_in_random_segments_never_panic_nor_read_past_a_header() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(15);
        let seeds = [
            b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 3306\r\n".to_vec(),
            b"PROXY TCP6 2001:db8::5 2001:db8::1 5000 5432\r\n".to_vec(),
            b"PROXY UNKNOWN\r\n".to_vec(),
            v2("192.0.2.9:1234", "192.0.2.1:6379"),
            v2("[2001:db8::5]:5000", "[2001:db8::1]:5432"),
        ];
        for i in 0..5_000 {
            let mut input = seeds[i % seeds.len()].clone();
            for _ in 0..rng.gen_range(0..4) {
                let at = rng.gen_range(0..input.len());
                match rng.gen_range(0..3) {
                    0 => input[at] = rng.gen(),
                    1 => {
                        input.remove(at);
                    }
                    _ => input.insert(at, rng.gen()),
                }
                if input.is_empty() {
                    input.push(b'P');
                }
            }
            input.extend_from_slice(b"\xffPAYLOAD");
            let mut segments = Vec::new();
            let mut rest = &input[..];
            while !rest.is_empty() {
                let n = rng.gen_range(1..=rest.len());
                segments.push(&rest[..n]);
                rest = &rest[n..];
            }
            let (r, s) = read(&segments);
            if r.is_ok() {
                let (_, len) = ProxyHeader::parse(&input, PARSE).expect("a header was read");
                assert_eq!(s.consumed.len(), len, "{input:?}");
            }
            assert!(s.consumed.len() <= V2_MAX, "{input:?}");
        }
    }
}
