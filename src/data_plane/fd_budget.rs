//! The descriptor budget: how many sessions the process's `RLIMIT_NOFILE` leaves room for.
//!
//! Without one, a connection flood takes every descriptor, and then the control plane is what
//! fails: a role check that must reconnect (a restarted backend, a TCP check) gets `EMFILE` and
//! marks a healthy primary down, the admin API and `/metrics` stop answering, a reload cannot
//! read its file. So, as HAProxy derives its global `maxconn` from `ulimit -n`, the data plane
//! stops accepting at [`Plan::sessions`] (clients wait in the kernel's backlog, as at
//! `max_connections`) and the rest stays free for the control plane. `EMFILE` is still handled
//! (listener back-off) for what the plan cannot see, e.g. a limit lowered by `prlimit` later.
//!
//! A session costs two sockets; a splice pipe costs two descriptors too, so pipes draw from the
//! same permits (each worker is started with the budget, `Workers::with_pipe_budget`): while
//! sessions leave room, bulk transfers splice; at capacity a direction that finds no pipe
//! copies instead, and nothing reaches the reserve.

use std::io;

/// Descriptors kept for the control plane beyond its per-backend and per-listener needs: admin
/// connections, reading the config file on reload, notify hooks' pipes, name lookups.
pub const CONTROL_RESERVE: usize = 16;

/// Per backend: its check connection, and a second while a check reconnects.
const PER_BACKEND: usize = 2;

/// Per listener and worker: its listening socket, and the one connection its accept loop may
/// hold while it waits for a permit (see `listener::run`).
const PER_LOOP: usize = 2;

/// What the process may open, and how it is shared out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The soft `RLIMIT_NOFILE`.
    pub nofile: usize,
    /// Descriptors open before any session (runtimes, log, listening sockets).
    pub baseline: usize,
    /// Kept free for the control plane and the accept loops.
    pub reserved: usize,
    /// Descriptor pairs left: sessions (two sockets each), and splice pipes while sessions leave
    /// room.
    pub sessions: usize,
}

/// The shape of the configuration that the reserve depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub backends: usize,
    pub listeners: usize,
    pub workers: usize,
}

impl Plan {
    /// Shares out `nofile` descriptors of which `baseline` are open already.
    pub fn new(nofile: usize, baseline: usize, shape: Shape) -> Plan {
        let reserved = CONTROL_RESERVE
            + PER_BACKEND * shape.backends
            + PER_LOOP * shape.listeners * shape.workers;
        Plan {
            nofile,
            baseline,
            reserved,
            sessions: nofile.saturating_sub(baseline + reserved) / 2,
        }
    }

    /// The same limit and baseline for another configuration (after a reload).
    pub fn reshaped(&self, shape: Shape) -> Plan {
        Plan::new(self.nofile, self.baseline, shape)
    }

    /// Descriptors the control plane needs before a single session fits.
    pub fn minimum_nofile(&self) -> usize {
        self.baseline + self.reserved + 2
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard one, as HAProxy, nginx (`worker_rlimit_nofile`)
/// and Go programs do: the soft default (1,024 under systemd) is a safeguard for `select(2)`
/// programs, which this is not. Returns the soft limits `(before, after)`.
///
/// # Errors
/// `getrlimit`/`setrlimit` failed; the limit is then unchanged.
pub fn raise_nofile() -> io::Result<(u64, u64)> {
    let (before, _) = rlimit::Resource::NOFILE.get()?;
    let after = rlimit::increase_nofile_limit(u64::MAX)?;
    Ok((before, after))
}

/// The soft `RLIMIT_NOFILE`, saturated to `usize` (`RLIM_INFINITY` included).
///
/// # Errors
/// `getrlimit` failed.
pub fn nofile() -> io::Result<usize> {
    let (soft, _) = rlimit::Resource::NOFILE.get()?;
    Ok(usize::try_from(soft).unwrap_or(usize::MAX))
}

/// Descriptors open in this process now (`/proc/self/fd`, less the one reading it).
///
/// # Errors
/// `/proc` is not mounted or not readable.
pub fn open_now() -> io::Result<usize> {
    let entries = std::fs::read_dir("/proc/self/fd")?.count();
    Ok(entries.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: Shape = Shape {
        backends: 2,
        listeners: 1,
        workers: 2,
    };

    #[test]
    fn the_reserve_grows_with_backends_and_accept_loops() {
        let plan = Plan::new(1_000, 20, ONE);
        assert_eq!(plan.reserved, CONTROL_RESERVE + 2 * 2 + 2 * 2);
        let bigger = plan.reshaped(Shape {
            backends: 30,
            listeners: 4,
            workers: 2,
        });
        assert_eq!(bigger.reserved, CONTROL_RESERVE + 2 * 30 + 2 * 4 * 2);
        assert!(bigger.sessions < plan.sessions);
        assert_eq!(
            (bigger.nofile, bigger.baseline),
            (1_000, 20),
            "same limit and baseline"
        );
    }

    #[test]
    fn sessions_never_overrun_the_limit() {
        for nofile in [0, 1, 24, 40, 41, 64, 128, 1_024, 20_000, 1 << 20] {
            for baseline in [0, 15, 60, 500] {
                let plan = Plan::new(nofile, baseline, ONE);
                let used = plan.baseline + plan.reserved + 2 * plan.sessions;
                assert!(
                    plan.sessions == 0 || used <= nofile,
                    "{plan:?} uses {used} descriptors"
                );
                assert!(used + 2 > nofile, "{plan:?}: room for one more session");
            }
        }
    }

    #[test]
    fn a_tight_limit_leaves_no_session_and_says_what_is_needed() {
        let plan = Plan::new(40, 20, ONE);
        assert_eq!(plan.sessions, 0);
        assert_eq!(plan.minimum_nofile(), 20 + plan.reserved + 2);
        let just = Plan::new(plan.minimum_nofile(), 20, ONE);
        assert_eq!(just.sessions, 1);
    }

    #[test]
    fn a_usual_limit_leaves_nearly_all_to_sessions() {
        let plan = Plan::new(20_000, 30, ONE);
        assert_eq!(plan.sessions, (20_000 - 30 - plan.reserved) / 2);
        assert!(plan.sessions > 9_950, "{plan:?}");
    }

    #[test]
    fn raising_is_idempotent_and_reports_the_limit() {
        let (_, after) = raise_nofile().unwrap();
        assert_eq!(raise_nofile().unwrap(), (after, after));
        assert_eq!(
            nofile().unwrap(),
            usize::try_from(after).unwrap_or(usize::MAX)
        );
        assert!(open_now().unwrap() >= 3, "stdio at least");
    }
}
