//! A role change's path, as sources → decision → table (see docs/design.md, "A role change's
//! path"). Consumers of the table live elsewhere: the data plane's listeners and sessions.
//!
//! - [`authority`]: outside sources (Patroni, Sentinel) whose verdict must agree before a
//!   node is routed as primary.
//! - [`checks`]: the local source — one probe task per backend producing
//!   [`checks::Observation`]s.
//! - [`role`]: the pure per-backend state machine (rise/fall, demotion at first sight).
//! - [`decision`]: the pure per-cluster step — from every backend's state, who receives new
//!   primary, replica and `any` connections. Tested without I/O.
//! - [`etcd`]: how the etcd readers (fleet, Patroni) connect.
//! - [`supervisor`]: sole owner of backend state: feeds observations and operator actions to
//!   the machines and the decision, builds and stores the [`crate::routing::RoutingTable`],
//!   fires session guards, publishes status.

pub mod authority;
pub mod checks;
pub mod decision;
pub mod etcd;
pub mod fleet;
pub mod role;
pub mod supervisor;
