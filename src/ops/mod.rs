//! The operator's kit around the proxy: the admin API client (`rolegate status`, `drain`,
//! `disable`, `enable`), its human-readable status view, and the shell completions and manual
//! pages generated from the command line.

pub mod admin_client;
pub mod cli_docs;
pub mod status_view;
