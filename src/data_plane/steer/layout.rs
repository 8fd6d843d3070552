//! The byte layout shared with bpf/steer.bpf.c: addresses exactly as the socket-address hooks
//! hold them (`user_ip4`, and `user_port` with the port in network order in its first two
//! bytes), encoded as native-endian `u32` words so that no `unsafe` Pod impl is needed.
//!
//! Built everywhere so that its tests run; only the loaded program (cfg `rolegate_steer`) uses it.
#![cfg_attr(not(rolegate_steer), allow(dead_code))]

use std::net::{Ipv4Addr, SocketAddrV4};

/// Backends per steered listener, `STEER_MAX_BACKENDS` in the C source.
pub const MAX_BACKENDS: usize = 8;

/// `struct addr4`: a listener's bind address or a backend address.
pub type Addr4 = [u32; 2];
/// `struct route4`: count, turn, then `MAX_BACKENDS` addresses.
pub type Route4 = [u32; 2 + 2 * MAX_BACKENDS];
/// `struct steered4` and `struct pair4`: listener address then backend address.
pub type Pair4 = [u32; 4];

pub fn addr4(addr: SocketAddrV4) -> Addr4 {
    let [hi, lo] = addr.port().to_be_bytes();
    [
        u32::from_ne_bytes(addr.ip().octets()),
        u32::from_ne_bytes([hi, lo, 0, 0]),
    ]
}

pub fn from_addr4(raw: [u32; 2]) -> SocketAddrV4 {
    let [hi, lo, _, _] = raw[1].to_ne_bytes();
    SocketAddrV4::new(
        Ipv4Addr::from(raw[0].to_ne_bytes()),
        u16::from_be_bytes([hi, lo]),
    )
}

/// The route entry for `backends` (at most `MAX_BACKENDS` are used); `turn` starts at 0.
pub fn route4(backends: &[SocketAddrV4]) -> Route4 {
    let mut value = [0u32; 2 + 2 * MAX_BACKENDS];
    let used = &backends[..backends.len().min(MAX_BACKENDS)];
    value[0] = used.len() as u32;
    for (i, b) in used.iter().enumerate() {
        let [ip, port] = addr4(*b);
        value[2 + 2 * i] = ip;
        value[3 + 2 * i] = port;
    }
    value
}

pub fn pair4(listener: SocketAddrV4, backend: SocketAddrV4) -> Pair4 {
    let [a, b] = addr4(listener);
    let [c, d] = addr4(backend);
    [a, b, c, d]
}

pub fn from_pair4(raw: Pair4) -> (SocketAddrV4, SocketAddrV4) {
    (from_addr4([raw[0], raw[1]]), from_addr4([raw[2], raw[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_in_the_hooks_byte_order() {
        let a: SocketAddrV4 = "127.0.0.1:16379".parse().unwrap();
        let raw = addr4(a);
        // In memory: the octets in order, and the port big-endian in the first two bytes.
        assert_eq!(raw[0].to_ne_bytes(), [127, 0, 0, 1]);
        assert_eq!(raw[1].to_ne_bytes(), [0x3f, 0xfb, 0, 0]);
        assert_eq!(from_addr4(raw), a);
        let b: SocketAddrV4 = "10.1.2.3:5432".parse().unwrap();
        assert_eq!(from_pair4(pair4(a, b)), (a, b));
    }

    #[test]
    fn a_route_holds_at_most_max_backends() {
        let many: Vec<SocketAddrV4> = (0..12)
            .map(|i| SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1000 + i))
            .collect();
        let r = route4(&many);
        assert_eq!(r[0] as usize, MAX_BACKENDS);
        assert_eq!(from_addr4([r[2], r[3]]), many[0]);
        let last = 2 + 2 * (MAX_BACKENDS - 1);
        assert_eq!(from_addr4([r[last], r[last + 1]]), many[MAX_BACKENDS - 1]);
        assert_eq!(route4(&[])[0], 0);
    }
}
