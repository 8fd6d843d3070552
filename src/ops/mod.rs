//! Operator-facing tools around the proxy: telling systemd where the service is ([`notify`]),
//! a curl-free health probe for container and keepalived checks ([`probe_cli`]), and the
//! haproxy.cfg importer ([`import_haproxy`]).

pub mod import_haproxy;
pub mod notify;
pub mod probe_cli;
