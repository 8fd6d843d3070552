//! A connection's path: accept on a worker, place it with one routing snapshot, move its bytes,
//! close it when its backend loses the role its listener serves. Consumers of the routing
//! table; nothing here decides a role (see docs/design.md, "A connection's path").
//!
//! - [`workers`]: the data-plane threads, one single-threaded runtime each; a connection is
//!   accepted, served and closed on one of them.
//! - [`listener`]: one `SO_REUSEPORT` socket and accept loop per worker, the shared connection
//!   limit, EMFILE back-off.
//! - [`fd_budget`]: the sessions `RLIMIT_NOFILE` leaves room for once the control plane's
//!   descriptors are set aside.
//! - [`session`]: one client — one routing snapshot, connect (with retries), transfer, and
//!   closing when its backend loses the role its listener serves.
//! - [`transfer`]: moving bytes, with `splice(2)` on Linux and a buffered copy elsewhere.
//! - [`steer`]: local clients in a cgroup connect to the backend directly (a cgroup BPF program
//!   reading the routing table); the listener stays their fallback.

pub mod fd_budget;
pub mod listener;
pub mod proxy_protocol;
pub mod rescue;
pub mod session;
pub mod steer;
pub mod transfer;
pub mod workers;
