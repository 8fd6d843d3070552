//! The byte layout shared with bpf/steer.bpf.c: addresses exactly as the socket-address hooks
//! hold them (`user_ip6`, IPv4 as `::ffff:a.b.c.d`, and `user_port` with the port in network
//! order in its first two bytes), encoded as native-endian `u32` words so that no `unsafe` Pod
//! impl is needed.
//!
//! Built everywhere so that its tests run; only the loaded program (cfg `rolegate_steer`) uses it.
#![cfg_attr(not(rolegate_steer), allow(dead_code))]

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// Backends per steered listener, `STEER_MAX_BACKENDS` in the C source.
pub const MAX_BACKENDS: usize = 8;

/// Words of `struct addr`.
const ADDR: usize = 5;

/// `struct addr`: a listener address or a backend address.
pub type Addr = [u32; ADDR];
/// `struct route`: listener id, count, turn, then `MAX_BACKENDS` addresses.
pub type Route = [u32; 3 + ADDR * MAX_BACKENDS];
/// `struct steered`: the address asked for, the backend, the listener id.
pub type Steered = [u32; 2 * ADDR + 1];
/// `struct pair`: listener id, backend address.
pub type Pair = [u32; 1 + ADDR];

/// The address as the hooks see it: IPv6, or IPv4 mapped.
fn ip6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

pub fn addr(a: SocketAddr) -> Addr {
    let o = ip6(a.ip()).octets();
    let word = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
    let [hi, lo] = a.port().to_be_bytes();
    [
        word(0),
        word(4),
        word(8),
        word(12),
        u32::from_ne_bytes([hi, lo, 0, 0]),
    ]
}

/// Back to a socket address; an IPv4-mapped one becomes IPv4 (the family rolegate configured).
pub fn from_addr(raw: &[u32]) -> SocketAddr {
    let mut o = [0u8; 16];
    for (i, w) in raw[..4].iter().enumerate() {
        o[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
    }
    let [hi, lo, _, _] = raw[4].to_ne_bytes();
    let v6 = Ipv6Addr::from(o);
    let ip = match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    };
    SocketAddr::new(ip, u16::from_be_bytes([hi, lo]))
}

/// The route entry of listener `id` for `backends` (at most `MAX_BACKENDS` are used); `turn`
/// starts at 0.
pub fn route(id: u32, backends: &[SocketAddr]) -> Route {
    let mut value = [0u32; 3 + ADDR * MAX_BACKENDS];
    let used = &backends[..backends.len().min(MAX_BACKENDS)];
    value[0] = id;
    value[1] = used.len() as u32;
    for (i, b) in used.iter().enumerate() {
        let at = 3 + ADDR * i;
        value[at..at + ADDR].copy_from_slice(&addr(*b));
    }
    value
}

pub fn pair(id: u32, backend: SocketAddr) -> Pair {
    let mut value = [0u32; 1 + ADDR];
    value[0] = id;
    value[1..].copy_from_slice(&addr(backend));
    value
}

pub fn from_pair(raw: Pair) -> (u32, SocketAddr) {
    (raw[0], from_addr(&raw[1..]))
}

/// A steered socket: (listener id, address asked for, backend).
pub fn from_steered(raw: Steered) -> (u32, SocketAddr, SocketAddr) {
    (
        raw[2 * ADDR],
        from_addr(&raw[..ADDR]),
        from_addr(&raw[ADDR..2 * ADDR]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_in_the_hooks_byte_order() {
        let a: SocketAddr = "127.0.0.1:16379".parse().unwrap();
        let raw = addr(a);
        // In memory: ::ffff:127.0.0.1, and the port big-endian in the first two bytes.
        assert_eq!(raw[2].to_ne_bytes(), [0, 0, 0xff, 0xff]);
        assert_eq!(raw[3].to_ne_bytes(), [127, 0, 0, 1]);
        assert_eq!(raw[4].to_ne_bytes(), [0x3f, 0xfb, 0, 0]);
        assert_eq!(from_addr(&raw), a);
        let v6: SocketAddr = "[fd00::2]:5432".parse().unwrap();
        assert_eq!(addr(v6)[0].to_ne_bytes(), [0xfd, 0, 0, 0]);
        assert_eq!(from_addr(&addr(v6)), v6);
        assert_eq!(from_pair(pair(7, v6)), (7, v6));
        let mut s = [0u32; 2 * ADDR + 1];
        s[..ADDR].copy_from_slice(&addr(a));
        s[ADDR..2 * ADDR].copy_from_slice(&addr(v6));
        s[2 * ADDR] = 3;
        assert_eq!(from_steered(s), (3, a, v6));
    }

    #[test]
    fn a_route_holds_at_most_max_backends() {
        let many: Vec<SocketAddr> = (0..12)
            .map(|i| SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 1000 + i))
            .collect();
        let r = route(9, &many);
        assert_eq!(r[0], 9);
        assert_eq!(r[1] as usize, MAX_BACKENDS);
        assert_eq!(from_addr(&r[3..3 + ADDR]), many[0]);
        let last = 3 + ADDR * (MAX_BACKENDS - 1);
        assert_eq!(from_addr(&r[last..last + ADDR]), many[MAX_BACKENDS - 1]);
        assert_eq!(route(1, &[])[1], 0);
    }
}
