//! The load-test instruments must not rot: CI runs the smoke versions of `loadtest/bench.sh` and
//! `loadtest/failover.sh` here. These tests check that each script ran to the end and printed a
//! table with every row filled in; they assert no performance figure (the smoke runs are far too
//! short for that, and CI machines are noisy).
//!
//! Like the lab tests, they need root and the lab (`loadtest/test.sh` provides both); the scripts
//! install what they miss with apt-get. They use the debug binary cargo built for the tests, so
//! no release build happens here. Both scripts take the lab tests' lock themselves when they need
//! the lab, so these tests must not hold it.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use support::lab::Engine;
use support::script;

/// The two scripts share ports and machine time: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `bash SCRIPT ARGS` with a hard deadline; returns (success, stdout, stderr).
fn run_script(
    script: &str,
    args: &[&str],
    out_dir: &Path,
    limit: Duration,
) -> (bool, String, String) {
    let mut cmd = Command::new("bash");
    cmd.arg(root().join(script))
        .args(args)
        .env("ROLEGATE_BIN", env!("CARGO_BIN_EXE_rolegate"))
        .env("BENCH_OUT", out_dir)
        // Ports apart from a full run someone may be doing by hand (27000.. and 27600..).
        .env("BENCH_PORT_BASE", "28000")
        .env("FAILOVER_PORT_BASE", "28600")
        .env("PROFILE_PORT_BASE", "28900");
    let run = script::run_bounded(cmd, limit);
    (run.success(), run.stdout, run.stderr)
}

/// The cells of one markdown table line.
fn cells(line: &str) -> Vec<&str> {
    line.trim()
        .trim_matches('|')
        .split('|')
        .map(str::trim)
        .collect()
}

/// The cells of the markdown table row whose first cells are `labels`.
fn row<'a>(table: &'a str, labels: &[&str]) -> Option<Vec<&'a str>> {
    table
        .lines()
        .map(cells)
        .find(|c| c.len() >= labels.len() && c[..labels.len()] == *labels)
}

#[test]
fn bench_smoke_prints_every_row() {
    let Some(_root) = support::require::root() else {
        return;
    };
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let out = tempfile::tempdir().expect("tempdir");
    let (ok, stdout, stderr) = run_script(
        "loadtest/bench.sh",
        &["--smoke"],
        out.path(),
        Duration::from_secs(600),
    );
    assert!(
        ok,
        "bench.sh --smoke failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );

    // Rows: every workload of the issue; columns: every setup plus the ratios.
    let rows: &[(&str, bool)] = &[
        // (label, has a value for direct)
        ("iperf3 1 stream, Gbit/s", true),
        ("iperf3 1 stream -R, Gbit/s", true),
        ("iperf3 4 streams, Gbit/s", true),
        ("iperf3 4 streams -R, Gbit/s", true),
        ("redis PING_INLINE -P1, rps", true),
        ("redis SET -P1, rps", true),
        ("redis GET -P1, rps", true),
        ("redis GET -P1, p50 ms", true),
        ("redis GET -P1, p99 ms", true),
        ("redis SET -P1, p99 ms", true),
        ("redis PING_INLINE -P16, rps", true),
        ("redis SET -P16, rps", true),
        ("redis GET -P16, rps", true),
        ("redis GET -P16, p50 ms", true),
        ("redis GET -P16, p99 ms", true),
        ("redis SET -P16, p99 ms", true),
        ("churn (new conn per request), conn/s", true),
        ("churn p99 ms", true),
        ("pgbench -S (8 clients), tps", true),
        ("pgbench -S -C (8 clients), tps", true),
        ("idle memory, KiB per session", false),
        ("proxy CPU s per GiB (iperf3, all 4 runs)", false),
    ];
    let header = row(&stdout, &["workload"]).expect("no table header in the output");
    assert_eq!(
        &header[1..6],
        [
            "direct",
            "HAProxy splice-auto",
            "HAProxy no splice",
            "HAProxy forced splice",
            "rolegate"
        ],
        "setups (columns) of the table"
    );
    for (label, direct) in rows {
        let cells =
            row(&stdout, &[label]).unwrap_or_else(|| panic!("no row {label:?} in:\n{stdout}"));
        assert_eq!(
            cells.len(),
            header.len(),
            "row {label:?} has {} cells",
            cells.len()
        );
        let first_setup = if *direct { 1 } else { 2 };
        for (i, cell) in cells.iter().enumerate().take(6).skip(first_setup) {
            assert_ne!(
                *cell, "–",
                "row {label:?}: no value for {} (the run failed?)\n{stdout}",
                header[i]
            );
        }
    }
    assert!(!stdout.contains("## Errors"), "some runs failed:\n{stdout}");
    let written: Vec<_> = std::fs::read_dir(out.path())
        .expect("results dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    assert!(
        written.iter().any(|n| n.ends_with("-smoke.md")),
        "no .md written: {written:?}"
    );
    assert!(
        written.iter().any(|n| n.ends_with("-smoke.json")),
        "no .json written: {written:?}"
    );
}

#[test]
fn profile_prints_syscalls_and_cpu_per_op_for_both_proxies() {
    let Some(_root) = support::require::root() else {
        return;
    };
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let out = tempfile::tempdir().expect("tempdir");
    let (ok, stdout, stderr) = run_script(
        "loadtest/profile.sh",
        &["--requests", "2000", "--connections", "300"],
        out.path(),
        Duration::from_secs(300),
    );
    assert!(
        ok,
        "profile.sh failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    for setup in ["rolegate", "haproxy"] {
        for workload in ["p1", "churn"] {
            let cells = row(&stdout, &[setup, workload])
                .unwrap_or_else(|| panic!("no row {setup}/{workload} in:\n{stdout}"));
            let cpu: f64 = cells[2].parse().unwrap_or(-1.0);
            let calls: f64 = cells[3].parse().unwrap_or(-1.0);
            assert!(cpu >= 0.0, "{setup}/{workload}: CPU cell {:?}", cells[2]);
            // A forwarded request is at least a read and a write; a connection more.
            assert!(
                calls >= 2.0,
                "{setup}/{workload}: {calls} syscalls per op (strace saw nothing?)\n{stdout}"
            );
            assert!(
                cells[4].contains("recvfrom") || cells[4].contains("read"),
                "{setup}/{workload}: no read call listed: {:?}",
                cells[4]
            );
        }
    }
}

#[test]
fn failover_smoke_prints_every_row_and_resets_the_lab() {
    let Some(_) = support::require::root_and_lab(&[Engine::Pg, Engine::Mysql, Engine::Redis])
    else {
        return;
    };
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let out = tempfile::tempdir().expect("tempdir");
    let (ok, stdout, stderr) = run_script(
        "loadtest/failover.sh",
        &["--smoke"],
        out.path(),
        Duration::from_secs(900),
    );
    assert!(
        ok,
        "failover.sh --smoke failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    // One table per row (event); the smoke runs the switchover everywhere and the unplanned
    // rows once, on Redis through rolegate.
    let mut expected: Vec<(&str, &str, &str)> = Vec::new();
    for engine in ["pg", "mysql", "redis"] {
        for setup in ["rolegate default", "HAProxy"] {
            expected.push(("switchover", engine, setup));
        }
    }
    expected.push(("hang", "redis", "rolegate default"));
    expected.push(("split", "redis", "rolegate default"));
    for (event, engine, setup) in expected {
        let table = section(&stdout, &format!("### {event}:"))
            .unwrap_or_else(|| panic!("no {event} table in:\n{stdout}"));
        let line = table
            .lines()
            .find(|l| l.starts_with(&format!("| {engine} | {setup} |")))
            .unwrap_or_else(|| panic!("no {event} row for {engine} / {setup} in:\n{stdout}"));
        assert!(
            !line.contains("error:"),
            "{event} {engine} / {setup} failed: {line}"
        );
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        // The first write on the new primary happened (a number, not "–").
        assert!(
            cells[3].parse::<f64>().is_ok(),
            "{event} {engine} / {setup}: no write on the new primary: {line}"
        );
        // The route − ref cell is filled in too, and the goal verdict is one of the two.
        assert!(
            cells[4].parse::<f64>().is_ok() && ["met", "missed"].contains(&cells[10]),
            "{event} {engine} / {setup}: cells {cells:?}"
        );
    }
    // The script put every engine back: A primary, B replica. It reports the lab's status
    // while it still holds the lab lock; once it has let go, other tests may move roles.
    let after = stderr
        .split_once("lab after the run:")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no lab status at the end of the run:\n{stderr}"));
    for engine in ["pg", "mysql", "redis"] {
        let line = after
            .lines()
            .find(|l| l.starts_with(&format!("{engine} A ")))
            .unwrap_or_else(|| panic!("no {engine} A in the final status:\n{after}"));
        assert!(
            line.contains(" up primary "),
            "{engine} A is not primary after the run: {line}"
        );
    }
}

/// The text from the line starting with `heading` to the next `### ` heading.
fn section<'a>(text: &'a str, heading: &str) -> Option<&'a str> {
    let start = text.find(&format!("\n{heading}"))? + 1;
    let rest = &text[start..];
    let end = rest[4..].find("\n### ").map_or(rest.len(), |i| i + 4);
    Some(&rest[..end])
}
