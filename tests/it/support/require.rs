//! What a test needs beyond a plain `cargo test` — root, a tool, the lab's servers — asked in
//! one place, so a run without them passes and says, one line per test, what did not run:
//!
//! ```text
//! SKIPPED faults_net::a_blackholed_primary_fails_over: needs root; run: bash loadtest/test.sh
//! ```
//!
//! Each check returns `None` after printing that line, and the test returns early
//! (`let Some(..) = require::…() else { return };`). With `ROLEGATE_TESTS_REQUIRE_ALL=1`
//! (`loadtest/test.sh` sets it) the same line fails the test instead: the full run cannot pass
//! with a test that did not run.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use super::lab::Engine;

/// Set to `1` by `loadtest/test.sh`: a missing requirement fails the test.
pub const REQUIRE_ALL: &str = "ROLEGATE_TESTS_REQUIRE_ALL";

/// The command that provides everything.
const FULL_RUN: &str = "bash loadtest/test.sh";

/// A requirement that holds.
#[derive(Debug)]
#[must_use]
pub struct Met;

/// The running test's name: the harness names each test's thread after it.
fn test_name() -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => name.to_string(),
        _ => "this test".to_string(),
    }
}

/// Skips (or, under [`REQUIRE_ALL`], fails) the running test: `what` it needs, `how` to get it.
fn missing<T>(what: &str, how: &str) -> Option<T> {
    let line = format!("SKIPPED {}: needs {what}; run: {how}", test_name());
    if std::env::var(REQUIRE_ALL).is_ok_and(|v| v == "1") {
        panic!("{line} ({REQUIRE_ALL}=1: every test must run)");
    }
    // Straight to stderr, past the harness's output capture: a skip must show in a plain run.
    let _ = writeln!(std::io::stderr(), "{line}");
    None
}

/// Root: network namespaces, nftables, other users, limits of other processes.
pub fn root() -> Option<Met> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        Some(Met)
    } else {
        missing("root", FULL_RUN)
    }
}

/// For helpers that only make sense after [`root`] was asked (a namespace, a lowered limit):
/// fails with `what` when not root.
pub fn root_or_fail(what: &str) {
    // SAFETY: geteuid(2) has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "{what} needs root; ask require::root() first");
}

/// An executable: the first `name` on `PATH`, else the first of `extra` that exists.
pub fn find_tool(name: &str, extra: &[&str]) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| extra.iter().map(PathBuf::from).find(|p| p.is_file()))
}

/// A tool from a Debian package (`loadtest/test.sh` installs it): its path, found as
/// [`find_tool`] does.
pub fn tool(name: &str, extra: &[&str], package: &str) -> Option<PathBuf> {
    find_tool(name, extra).or_else(|| {
        missing(
            &format!("{name} (Debian package {package})"),
            &format!("{FULL_RUN}, which installs it"),
        )
    })
}

/// Python modules for `/usr/bin/python3` (Debian packages, e.g. `python3-yaml`).
pub fn python_modules(modules: &[&str], packages: &str) -> Option<Met> {
    let ok = std::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(format!("import {}", modules.join(", ")))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Some(Met)
    } else {
        missing(
            &format!("python3 with {} ({packages})", modules.join(", ")),
            &format!("{FULL_RUN}, which installs them"),
        )
    }
}

/// Both nodes of each of `engines` accept TCP connections (the lab is up; it does not lock it:
/// `lab::lock` does).
pub fn lab(engines: &[Engine]) -> Option<Met> {
    for &engine in engines {
        for node in ['A', 'B'] {
            let addr = engine.addr(node);
            // Blocking, also in async tests: loopback answers at once, 2 s at most.
            let ok = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok();
            if !ok {
                return missing(
                    &format!(
                        "the lab's {} servers ({addr} is unreachable)",
                        engine.as_str()
                    ),
                    &format!(
                        "{FULL_RUN} (or: bash loadtest/lab.sh up; eval \"$(bash loadtest/lab.sh env)\")"
                    ),
                );
            }
        }
    }
    Some(Met)
}

/// Every node of one of the lab's optional engines (`etcd`, `patroni`, `sentinel`) accepts
/// TCP connections (`lab.sh up ENGINE` started it).
pub fn lab_engine(engine: &str) -> Option<Met> {
    for addr in super::lab::addresses(engine) {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
            return missing(
                &format!("the lab's {engine} ({addr} is unreachable)"),
                &format!("{FULL_RUN} (or: bash loadtest/lab.sh up {engine})"),
            );
        }
    }
    Some(Met)
}

/// Root and the lab: the fault-injection tests.
pub fn root_and_lab(engines: &[Engine]) -> Option<Met> {
    let _root = root()?;
    lab(engines)
}

/// cgroup v2 mounted at `mount` (the steering tests create a child cgroup there).
pub fn cgroup2(mount: &str) -> Option<Met> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mounted = mounts.lines().any(|l| {
        let fields: Vec<&str> = l.split_whitespace().collect();
        fields.get(1) == Some(&mount) && fields.get(2) == Some(&"cgroup2")
    });
    if mounted {
        Some(Met)
    } else {
        missing(
            &format!("cgroup2 mounted at {mount}"),
            "a host with cgroup v2",
        )
    }
}

/// A rolegate built with its steering program; `reason` is what rolegate reports without it.
pub fn steering_built(reason: &str) -> Option<Met> {
    missing(
        &format!("a build with steering ({reason})"),
        &format!("{FULL_RUN}, which installs clang and libbpf-dev"),
    )
}
