//! CI's soak: `loadtest/soak.sh --duration 60s` — mixed traffic through the debug binary to all
//! three engines of the lab, a switchover every 20 s, a SIGHUP every 5 s — must pass its own
//! checks (no misrouted or lost write, no leak, no unexpected log line, metrics that match the
//! clients). People run the same script for an hour (docs/reliability.md).
//!
//! Holds the lab lock for the whole run and tells the script so (`SOAK_LAB_LOCK_HELD=1`); the
//! script's `lab.sh` calls take the lab's own lock themselves. Needs root (the script installs
//! the Python client libraries with apt-get) and the lab, as `bash loadtest/test.sh` provides.

use crate::support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use support::lab::{self, Engine};
use support::script;

/// 60 s of load, lab resets before and after, package checks: well under this.
const LIMIT: Duration = Duration::from_secs(360);

#[test]
fn soak_60s_passes_its_checks() {
    let Some(_) = support::require::root_and_lab(&[Engine::Pg, Engine::Mysql, Engine::Redis])
    else {
        return;
    };
    let _lock = lab::lock();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("loadtest/soak.sh"))
        .args(["--duration", "60s"])
        .env("SOAK_LAB_LOCK_HELD", "1")
        .env("ROLEGATE_BIN", env!("CARGO_BIN_EXE_rolegate"))
        // Apart from a soak someone may be running by hand (27800..) and the other smokes.
        .env("SOAK_PORT_BASE", "28800")
        .env("SOAK_OUT", out.path());
    let script::Finished {
        status,
        stdout,
        stderr,
    } = script::run_bounded(cmd, LIMIT);
    let Some(status) = status else {
        lab::run(&["reset"]);
        panic!(
            "soak.sh did not finish within {LIMIT:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        );
    };
    assert!(
        status.success() && stdout.contains("result: PASS"),
        "soak.sh failed ({status})\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    // The figures are in the table; the JSON report is the machine-readable copy.
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("soak.json")).expect("soak.json"),
    )
    .expect("soak.json is JSON");
    assert_eq!(report["switchovers"], 3, "{report}");
    for engine in ["pg", "mysql", "redis"] {
        let e = &report["engines"][engine];
        assert_eq!(e["misrouted"], 0, "{engine}: {e}");
        assert_eq!(e["lost"], 0, "{engine}: {e}");
        assert!(e["writes"].as_u64().unwrap_or(0) > 100, "{engine}: {e}");
    }
    eprintln!("{stdout}");
}
