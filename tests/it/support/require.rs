//! Helpers of the fault-injection tests (`tests/faults_*.rs`): network namespaces with a
//! kernel-level packet filter in front of a real lab server ([`netns`]), the user-space relay
//! that joins a namespace to the lab's loopback servers and can delay bytes ([`relay`]), and
//! the real `rolegate` binary as a child process ([`binary`]).
#![allow(dead_code)]

pub mod binary;
pub mod netns;
pub mod relay;

/// Fails the test unless it runs as root (network namespaces, nftables, raising rlimits).
pub fn require_root(what: &str) {
    // SAFETY: geteuid(2) has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "{what} needs root; CI runs it as root via bash loadtest/test.sh"
    );
}

/// Raises this process's soft `RLIMIT_NOFILE` to at least `want` (bounded by the hard limit),
/// for tests that hold thousands of sockets; fails the test if that is impossible.
pub fn raise_fd_limit(want: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    let ok = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0
            && (limit.rlim_cur >= want || {
                limit.rlim_cur = want.min(limit.rlim_max);
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0
            })
    };
    assert!(
        ok && limit.rlim_cur >= want,
        "this test needs {want} file descriptors; the hard limit is {} (raise it, e.g. ulimit -Hn {want}, or run as root)",
        limit.rlim_max
    );
}
