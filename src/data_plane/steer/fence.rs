//! Fencing steered sessions: closing the TCP sockets that the program sent to a backend
//! which lost its role, as `on_demote: close` closes proxied sessions.
//!
//! A steered socket is not rolegate's, so it is closed by the kernel on our behalf: a
//! sock_diag dump lists the TCP sockets connected to the backend, each is kept only if its
//! cookie is in the program's map of steered sockets (so only sockets of the steered cgroup
//! that the program sent there), and `SOCK_DESTROY` (CONFIG_INET_DIAG_DESTROY) aborts it: the
//! application sees ECONNABORTED and reconnects, through the map, to the new primary.

use std::io;
use std::net::{IpAddr, SocketAddr};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable, NLM_F_ACK, NLM_F_DUMP,
    NLM_F_REQUEST,
};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::{SockDiagDestroy, SockDiagMessage};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use netlink_sys::{Socket, SocketAddr as NetlinkAddr};

/// Bound on the messages read for one dump (every TCP socket of the host at worst).
const MAX_MESSAGES: usize = 1_000_000;

/// A TCP socket as the dump reports it.
#[derive(Debug, Clone)]
pub struct TcpSocket {
    /// `AF_INET`, or `AF_INET6` (an IPv6 peer, or an IPv4 one by its mapped address).
    pub family: u8,
    pub id: SocketId,
    pub cookie: u64,
}

/// The socket cookie from inet_diag's `idiag_cookie[2]` (two host-order words, low first).
fn cookie(id: &SocketId) -> u64 {
    let b = id.cookie;
    let lo = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
    let hi = u32::from_ne_bytes([b[4], b[5], b[6], b[7]]);
    (u64::from(hi) << 32) | u64::from(lo)
}

fn connect() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&NetlinkAddr::new(0, 0))?;
    Ok(socket)
}

fn send<T: NetlinkSerializable + Clone + std::fmt::Debug + PartialEq + Eq>(
    socket: &Socket,
    flags: u16,
    payload: T,
) -> io::Result<()>
where
    NetlinkPayload<T>: From<T>,
{
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(payload));
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0)?;
    Ok(())
}

/// Reads messages until the dump's `Done` (or an ack/error for a single request), handing
/// each socket to `each`.
fn receive(socket: &Socket, mut each: impl FnMut(u8, SocketId)) -> io::Result<()> {
    let mut seen = 0usize;
    loop {
        let (buf, _) = socket.recv_from_full()?;
        let mut offset = 0;
        while offset < buf.len() {
            let message = NetlinkMessage::<SockDiagMessage>::deserialize(&buf[offset..])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let len = message.header.length as usize;
            match message.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                    each(r.header.family, r.header.socket_id);
                }
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => {
                    return match e.code {
                        None => Ok(()),
                        Some(_) => Err(e.to_io()),
                    }
                }
                _ => {}
            }
            seen += 1;
            if len == 0 || seen > MAX_MESSAGES {
                return Ok(());
            }
            offset += len;
        }
    }
}

/// TCP sockets of this host (this network namespace) connected to `peer`. For an IPv4 peer:
/// AF_INET sockets, and AF_INET6 sockets connected to its IPv4-mapped form (steered by
/// `connect6`); for an IPv6 peer, AF_INET6 sockets.
pub fn connected_to(peer: SocketAddr) -> io::Result<Vec<TcpSocket>> {
    let queries = match peer.ip() {
        IpAddr::V4(v4) => vec![
            (AF_INET, SocketId::new_v4(), IpAddr::V4(v4)),
            (
                AF_INET6,
                SocketId::new_v6(),
                IpAddr::V6(v4.to_ipv6_mapped()),
            ),
        ],
        IpAddr::V6(v6) => vec![(AF_INET6, SocketId::new_v6(), IpAddr::V6(v6))],
    };
    let mut found = Vec::new();
    for (family, id, want) in queries {
        let socket = connect()?;
        let mut id = id;
        id.destination_port = peer.port();
        let request = InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all() & !(StateFlags::LISTEN | StateFlags::TIME_WAIT),
            socket_id: id,
        };
        send(
            &socket,
            NLM_F_REQUEST | NLM_F_DUMP,
            SockDiagMessage::InetRequest(request),
        )?;
        receive(&socket, |family, id| {
            if id.destination_address == want && id.destination_port == peer.port() {
                found.push(TcpSocket {
                    family,
                    cookie: cookie(&id),
                    id,
                });
            }
        })?;
    }
    Ok(found)
}

/// Aborts one socket (`SOCK_DESTROY`). A socket that closed meanwhile is not an error.
pub fn destroy(target: &TcpSocket) -> io::Result<()> {
    let socket = connect()?;
    let request = InetRequest {
        family: target.family,
        protocol: IPPROTO_TCP,
        extensions: ExtensionFlags::empty(),
        states: StateFlags::all(),
        socket_id: target.id.clone(),
    };
    send(
        &socket,
        NLM_F_REQUEST | NLM_F_ACK,
        SockDiagDestroy::new(SockDiagMessage::InetRequest(request)),
    )?;
    match receive(&socket, |_, _| {}) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

/// Destroys the sockets connected to `backend` that `steered` says the program sent there
/// for listener `listener` (its id); returns how many were closed.
pub fn fence(
    listener: u32,
    backend: SocketAddr,
    steered: impl Fn(u64) -> Option<(u32, SocketAddr)>,
) -> io::Result<usize> {
    let mut closed = 0;
    for s in connected_to(backend)? {
        if steered(s.cookie) == Some((listener, backend)) {
            destroy(&s)?;
            closed += 1;
        }
    }
    Ok(closed)
}
