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
//! What a session costs: two sockets, plus splice pipes (two descriptors each) during bursts;
//! pipes get a bounded share ([`Plan::pipes`]) and a direction that finds none copies instead.

use std::io;

/// Descriptors kept for the control plane beyond its per-backend and per-listener needs: admin
/// connections, reading the config file on reload, notify hooks' pipes, name lookups.
pub const CONTROL_RESERVE: usize = 16;

/// Per backend: its check connection, and a second while a check reconnects.
const PER_BACKEND: usize = 2;

/// Per listener and worker: its listening socket, and the one connection its accept loop may
/// hold while it waits for a permit (see `listener::run`).
const PER_LOOP: usize = 2;

/// Splice pipes get at most this fraction of the descriptors left for sessions.
const PIPE_SHARE: usize = 4;

/// What the process may open, and how it is shared out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The soft `RLIMIT_NOFILE`.
    pub nofile: usize,
    /// Descriptors open before any session (runtimes, log, listening sockets).
    pub baseline: usize,
    /// Kept free for the control plane and the accept loops.
    pub reserved: usize,
    /// Splice pipes the data plane may hold at once.
    pub pipes: usize,
    /// Sessions (two sockets each) that fit in what is left.
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
        let free = nofile.saturating_sub(baseline + reserved);
        let pipes = free / PIPE_SHARE / 2;
        Plan {
            nofile,
            baseline,
            reserved,
            pipes,
            sessions: (free - 2 * pipes) / 2,
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
/// programs, which this is not. Returns the limits `(before, after)`.
///
/// # Errors
/// `getrlimit`/`setrlimit` failed; the limit is then unchanged.
#[allow(unsafe_code)]
pub fn raise_nofile() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((before, limit.rlim_cur))
}

/// The soft `RLIMIT_NOFILE`, saturated to `usize` (`RLIM_INFINITY` included).
///
/// # Errors
/// `getrlimit` failed.
#[allow(unsafe_code)]
pub fn nofile() -> io::Result<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid pointer to a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX))
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
    fn sessions_and_pipes_never_overrun_the_limit() {
        for nofile in [0, 1, 24, 40, 41, 64, 128, 1_024, 20_000, 1 << 20] {
            for baseline in [0, 15, 60, 500] {
                let plan = Plan::new(nofile, baseline, ONE);
                let used = plan.baseline + plan.reserved + 2 * plan.sessions + 2 * plan.pipes;
                assert!(
                    plan.sessions == 0 || used <= nofile,
                    "{plan:?} uses {used} descriptors"
                );
                assert!(plan.pipes * 2 * PIPE_SHARE <= nofile, "{plan:?}");
            }
        }
    }

    #[test]
    fn a_tight_limit_leaves_no_session_and_says_what_is_needed() {
        let plan = Plan::new(40, 20, ONE);
        assert_eq!(plan.sessions, 0);
        assert_eq!(plan.minimum_nofile(), 20 + plan.reserved + 2);
        let just = Plan::new(plan.minimum_nofile(), 20, ONE);
        assert_eq!((just.sessions, just.pipes), (1, 0));
    }

    #[test]
    fn a_usual_limit_gives_a_quarter_to_pipes() {
        let plan = Plan::new(20_000, 30, ONE);
        let free = 20_000 - 30 - plan.reserved;
        assert_eq!(plan.pipes, free / 8);
        assert_eq!(plan.sessions, (free - 2 * plan.pipes) / 2);
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
