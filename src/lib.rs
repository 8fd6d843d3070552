//! rolegate: a role-aware L4 TCP proxy that keeps clients on the current primary of a
//! replicated database (PostgreSQL, MySQL/MariaDB, Redis) or on its replicas.
//!
//! # Layout
//! The modules follow the two paths of DESIGN.md.
//!
//! A connection's path:
//! - [`workers`]: the data-plane threads, one single-threaded runtime each; a connection is
//!   accepted, served and closed on one of them.
//! - [`listener`]: one `SO_REUSEPORT` socket and accept loop per worker, the shared connection
//!   limit, EMFILE back-off.
//! - [`fd_budget`]: the sessions `RLIMIT_NOFILE` leaves room for once the control plane's
//!   descriptors are set aside.
//! - [`session`]: one client — one routing snapshot, connect (with retries), transfer, and
//!   closing when its backend loses the role its listener serves.
//! - [`transfer`]: moving bytes, with `splice(2)` on Linux and a buffered copy elsewhere.
//!
//! A role change's path:
//! - [`health`]: one probe task per backend producing [`health::Observation`]s.
//! - [`role`]: the pure per-backend state machine (rise/fall, demotion at first sight).
//! - [`supervisor`]: sole owner of backend state; decides each cluster's primary and replicas.
//! - [`routing`]: the immutable [`routing::RoutingTable`] swapped atomically for readers.
//!
//! Around them: [`config`] (file → validated `Config`), [`app`] (wiring, reload, graceful stop),
//! [`admin`] (HTTP: metrics, readiness, status, admin actions), [`metrics`] and [`logging`] (lines
//! written by a thread of their own); for deployment,
//! [`notify`] (systemd `sd_notify`) and [`probe_cli`] (`rolegate probe`, a curl-free health probe).
#![deny(unsafe_code)]
#![warn(rust_2018_idioms, clippy::undocumented_unsafe_blocks)]

pub mod admin;
pub mod app;
pub mod config;
/// Placeholder for the data-plane directory of the layout restructure; holds `steer` for now.
pub mod data_plane {
    pub mod steer;
}
pub mod fd_budget;
pub mod health;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod probe_cli;
pub mod role;
pub mod routing;
pub mod session;
pub mod supervisor;
pub mod transfer;
pub mod workers;
