//! rolegate: a role-aware L4 TCP proxy that keeps clients on the current primary of a
//! replicated database (PostgreSQL, MySQL/MariaDB, Redis) or on its replicas.
//!
//! # Layout
//! The tree follows the two paths of `docs/design.md`, which meet in one value, the routing
//! table.
//!
//! A connection's path, [`data_plane`]: [`data_plane::workers`] (one runtime per core),
//! [`data_plane::listener`] (accept loops and limits), [`data_plane::fd_budget`] (sessions the
//! descriptor limit leaves room for), [`data_plane::session`] (one client: snapshot, connect,
//! transfer, close on role loss) and [`data_plane::transfer`] (`splice(2)` and the buffered
//! copy).
//!
//! A role change's path, [`control_plane`], as sources → decision → table → consumers: the
//! local checks ([`control_plane::checks`]) and operator actions are sources;
//! [`control_plane::role`] (per backend) and [`control_plane::decision`] (per cluster) are the
//! pure steps; [`control_plane::supervisor`] owns the state, builds and stores the
//! [`routing::RoutingTable`], fires session guards and publishes status. The table's consumers
//! are the data plane's listeners and sessions.
//!
//! Shared by both: [`routing`] (the table, [`routing::Router`], selection). Around them:
//! [`app`] (wiring, reload as named steps, graceful stop), [`admin`] (HTTP: metrics, readiness,
//! status, admin actions, through the narrow [`admin::Proxy`]), [`metrics`] and [`logging`]
//! (lines written by a thread of their own), [`config`] (file → validated `Config`), and
//! [`ops`] (systemd `sd_notify`, `rolegate probe`, `rolegate import-haproxy`, the admin client
//! `rolegate status`/`drain`/`disable`/`enable`, completions, man pages).
#![deny(unsafe_code)]
#![warn(rust_2018_idioms, clippy::undocumented_unsafe_blocks)]

pub mod admin;
pub mod app;
pub mod config;
pub mod control_plane;
pub mod data_plane;
pub mod logging;
pub mod metrics;
pub mod ops;
pub mod routing;
