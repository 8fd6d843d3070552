//! Routing: the immutable [`RoutingTable`] that the data plane reads and the supervisor
//! replaces, and the choice among a route's candidates ([`select`]). The table is where the two
//! paths meet (docs/design.md): the control plane's supervisor is its only writer
//! ([`RouterWriter`]), listeners and sessions are its readers ([`Router`]). Who may receive new
//! connections is decided in [`crate::control_plane::decision`], not here.
//!
//! One `ArcSwap` holds the whole table, so a reader never sees half an update; a session does
//! exactly one `load` per routing decision. A `watch` channel carries the table's generation so
//! that connections waiting for a backend (a failover in progress) wake the moment a new table
//! is stored.

pub mod select;
pub mod table;

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

pub use table::{
    BackendEntry, BackendKey, Candidate, Route, RouteSettings, RoutingTable, Unavailable,
};

/// The data plane's read-only view: cheap to clone, one per listener.
#[derive(Clone)]
pub struct Router {
    table: Arc<ArcSwap<RoutingTable>>,
    changes: watch::Receiver<u64>,
}

/// The supervisor's write side. There is exactly one.
pub struct RouterWriter {
    table: Arc<ArcSwap<RoutingTable>>,
    changes: watch::Sender<u64>,
    observers: Vec<Arc<dyn TableObserver>>,
}

/// Told of every table in the step that stores it, so that a second reader of the routing
/// (the steering map the kernel reads, `data_plane::steer`) follows exactly the table the proxy
/// reads, never a table of its own. Called on the supervisor's task: keep it short.
pub trait TableObserver: Send + Sync {
    fn stored(&self, table: &Arc<RoutingTable>);
}

/// A router and its writer around an empty table (no listener has a route yet).
pub fn new_router() -> (RouterWriter, Router) {
    let table = Arc::new(ArcSwap::from_pointee(RoutingTable::empty()));
    let (tx, rx) = watch::channel(0);
    (
        RouterWriter {
            table: table.clone(),
            changes: tx,
            observers: Vec::new(),
        },
        Router { table, changes: rx },
    )
}

impl Router {
    /// The current table. Held for the whole routing decision (connect and retries), so it is
    /// an owned `Arc`, not a guard.
    pub fn load(&self) -> Arc<RoutingTable> {
        self.table.load_full()
    }

    /// A receiver that resolves when a newer table is stored.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        let mut rx = self.changes.clone();
        rx.mark_unchanged();
        rx
    }
}

impl RouterWriter {
    /// Publishes a new table (its generation must be newer) and wakes waiting connections.
    pub fn store(&self, table: impl Into<Arc<RoutingTable>>) {
        let table = table.into();
        let generation = table.generation;
        self.table.store(table.clone());
        for observer in &self.observers {
            observer.stored(&table);
        }
        self.changes.send_replace(generation);
    }

    /// Adds an observer of every table stored from now on.
    pub fn observe(&mut self, observer: Arc<dyn TableObserver>) {
        self.observers.push(observer);
    }

    pub fn current(&self) -> Arc<RoutingTable> {
        self.table.load_full()
    }
}
