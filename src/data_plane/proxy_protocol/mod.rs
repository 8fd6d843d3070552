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
mod tests;
