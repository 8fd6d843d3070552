//! The host's own addresses, for listeners that bind a wildcard (`0.0.0.0:P`, `[::]:P`): a
//! client may connect to any of them, so each gets an entry of its own in the program's map
//! (one lookup per connect stays the rule). Loopback destinations need none: every address of
//! 127.0.0.0/8 and `::1` reaches the wildcard entry through the program's one fallback lookup.
//!
//! The list is read at start and again whenever the kernel announces an address change
//! (rtnetlink `RTMGRP_IPV4_IFADDR`/`RTMGRP_IPV6_IFADDR`), so an address added later (a VIP,
//! DHCP) is steered too, and a removed one stops being.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Weak;
use std::time::Duration;

use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};
use tracing::warn;

/// Multicast groups of address changes (linux/rtnetlink.h).
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
/// How often the watcher checks that steering still exists while no change comes.
const POLL: Duration = Duration::from_secs(5);

/// The non-loopback addresses of the host's interfaces (loopback ones are covered by the
/// program's fallback). An error leaves only loopback clients steered, with one warning.
pub fn addresses() -> BTreeSet<IpAddr> {
    match if_addrs::get_if_addrs() {
        Ok(interfaces) => interfaces
            .iter()
            .map(|i| i.ip())
            .filter(|ip| !ip.is_loopback())
            .collect(),
        Err(e) => {
            warn!(
                message = "Cannot list the host's addresses: wildcard listeners steer loopback clients only.",
                error = %e,
            );
            BTreeSet::new()
        }
    }
}

/// Something that wants to hear about address changes.
pub trait AddressesChanged: Send + Sync + 'static {
    fn addresses_changed(&self);
}

/// Calls `target.addresses_changed()` after each batch of address changes, on a thread of its
/// own, until `target` is gone. Returns false (and the caller keeps the start-time list) when
/// the rtnetlink socket cannot be opened.
pub fn watch<T: AddressesChanged>(target: Weak<T>) -> bool {
    let socket = match subscribe() {
        Ok(s) => s,
        Err(e) => {
            warn!(
                message = "Cannot follow address changes: wildcard listeners steer to the addresses the host had at start.",
                error = %e,
            );
            return false;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("steer-addresses".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                // A message is a change; its content does not matter (the list is read again).
                let changed = socket.recv(&mut &mut buf[..], 0).is_ok();
                let Some(target) = target.upgrade() else {
                    return;
                };
                if changed {
                    target.addresses_changed();
                }
            }
        });
    spawned.is_ok()
}

fn subscribe() -> std::io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind(&SocketAddr::new(0, RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))?;
    // Wake up now and then to notice that steering is gone.
    socket2::SockRef::from(&socket).set_read_timeout(Some(POLL))?;
    Ok(socket)
}
