//! Operator-facing tools around the proxy: telling systemd where the service is ([`notify`]),
//! a curl-free health probe for container and keepalived checks ([`probe_cli`]), the
//! haproxy.cfg importer ([`import_haproxy`]), the admin API client (`rolegate status`, `drain`,
//! `disable`, `enable`) with its human-readable status view, and the shell completions and
//! manual pages generated from the command line ([`cli_docs`]).

pub mod admin_client;
pub mod cli_docs;
pub mod import_haproxy;
pub mod notify;
pub mod probe_cli;
pub mod status_view;
#[cfg(test)]
mod test_http;
