//! The data plane's threads: one single-threaded Tokio runtime per worker, each with its own
//! listening socket for every listener (`SO_REUSEPORT`, see [`crate::data_plane::listener::bind_group`]).
//!
//! # Why not one multi-thread runtime
//! A proxied session is two sockets and one future that is woken once per message. On a
//! work-stealing runtime that wake-up may land on another core (a cross-thread wake, a futex and
//! a cold cache) and every task pays for the shared run queues. Here the kernel spreads
//! connections over the workers' sockets and a session lives and dies on the thread that accepted
//! it, like HAProxy's threads or Envoy's workers: no hand-over, no stealing, one event loop per
//! core. Measured with `loadtest/bench.sh` (see docs/performance.md).
//!
//! The control plane (probes, supervisor, admin API, signals) stays on the main runtime, so a
//! busy data plane cannot delay a role check and a slow check cannot delay a session.
//!
//! Each worker's splice pipes draw from the descriptor budget it is started with (see
//! `transfer/pool.rs`), so the budget belongs to these threads, not to the process.

use std::io;
use std::sync::Arc;

use tokio::runtime::{Builder, Handle};
use tokio::sync::{oneshot, Semaphore};

use crate::data_plane::transfer;

/// Running data-plane threads. Dropping it stops them (without waiting: the caller may be async);
/// tasks still on them are dropped.
pub struct Workers {
    handles: Vec<Handle>,
    /// One per thread: dropping it ends that thread's `block_on`, and the thread drops its
    /// runtime (and the tasks left on it) as it exits.
    stops: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Starts `count` threads (at least one), named `rolegate-worker-N`, whose splice pipes have
    /// no descriptor budget.
    ///
    /// # Errors
    /// A runtime or thread cannot be created (out of memory, thread limit).
    pub fn start(count: usize) -> io::Result<Workers> {
        Workers::with_pipe_budget(count, None)
    }

    /// As [`Workers::start`], but each splice pipe opened on these threads takes a permit of
    /// `budget` (the descriptor budget sessions draw from too).
    ///
    /// # Errors
    /// A runtime or thread cannot be created (out of memory, thread limit).
    pub fn with_pipe_budget(count: usize, budget: Option<Arc<Semaphore>>) -> io::Result<Workers> {
        let mut workers = Workers {
            handles: Vec::new(),
            stops: Vec::new(),
        };
        for index in 0..count.max(1) {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            let budget = budget.clone();
            workers.handles.push(runtime.handle().clone());
            workers.stops.push(stop);
            std::thread::Builder::new()
                .name(format!("rolegate-worker-{index}"))
                .spawn(move || {
                    transfer::draw_pipes_from(budget);
                    // Runs the spawned accept loops and sessions until the stop signal.
                    let _ = runtime.block_on(stopped);
                })?;
        }
        Ok(workers)
    }

    /// The workers' runtimes, in thread order.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_run_on_the_worker_they_were_spawned_on() {
        let workers = Workers::start(2).unwrap();
        for (index, handle) in workers.handles().iter().enumerate() {
            // `Handle::block_on` only waits here: the worker thread runs the task.
            let task = handle.spawn(async { std::thread::current().name().map(str::to_owned) });
            let name = handle.block_on(task).unwrap();
            assert_eq!(name.as_deref(), Some(&*format!("rolegate-worker-{index}")));
        }
    }

    #[test]
    fn dropping_the_workers_ends_their_threads() {
        let workers = Workers::start(1).unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        workers.handles()[0].spawn(async move {
            // Dropped with the runtime when the worker stops, which closes the channel.
            let _keep = tx;
            std::future::pending::<()>().await;
        });
        drop(workers);
        assert!(rx.recv().is_err(), "the task was dropped with its worker");
    }
}
