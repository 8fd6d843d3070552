//! Operator-facing tools around the proxy: telling systemd where the service is ([`notify`]),
//! and a curl-free health probe for container and keepalived checks ([`probe_cli`]).

pub mod notify;
pub mod probe_cli;
