//! rolegate's integration tests: one crate, so one binary to build and link, with the helpers
//! every test shares in [`support`].
//!
//! A plain `cargo test` needs neither root nor the lab: a test that needs root, a tool or the
//! lab's servers asks [`support::require`] first and, when that is missing, prints one
//! `SKIPPED <test>: needs …; run: …` line and returns. `bash loadtest/test.sh` provides all of
//! them and sets `ROLEGATE_TESTS_REQUIRE_ALL=1`, which turns every such skip into a failure.
//!
//! Tests run as threads of this one process, so process-wide state is shared: a test that must
//! be alone with it (counting the process's descriptors, a global log subscriber) re-runs
//! itself in a child process with [`support::isolated`].
//!
//! Adding a test file: put `NAME.rs` next to this file and add `mod NAME;` below; in it,
//! `use crate::support;` and the helpers it needs (see `support/mod.rs`).

#[macro_use]
mod support;

mod admin;
mod admin_actions;
mod admin_client;
mod admin_server;
mod alert_rules;
mod authority_patroni;
mod authority_sentinel;
mod config_errors;
mod config_good;
mod data_plane;
mod deb_package;
mod deployment;
mod dns;
mod failover_lab;
mod faults_exhaustion;
mod faults_net;
mod faults_partition;
mod faults_restart;
mod fleet;
mod fuzz_smoke;
mod grafana;
mod hook_recipes;
mod import_haproxy;
mod keepalived;
mod loadtest_smoke;
mod metrics_promtool;
mod probes_lab;
mod proxy_protocol;
mod reload;
mod reload_errors;
mod reload_signals;
mod secrets;
mod session_log;
mod soak_smoke;
mod steer;
mod tls_lab;
mod transfer;
mod zero_error;
