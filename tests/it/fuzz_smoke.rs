//! CI's short run of the fuzz targets: every committed corpus input, then a bounded number of
//! mutants of them, through the same target functions `cargo fuzz` drives
//! (`fuzz/src/lib.rs`, included here as a module).
//!
//! This is not coverage-guided: building the libFuzzer targets (ASan and coverage
//! instrumentation of rolegate and all its dependencies) takes over ten minutes on CI's two
//! cores, more than the whole budget for reliability tests. What it does catch in seconds: a
//! change that makes any stored input panic or break an invariant again (every crash the long
//! runs found is in the corpus), and shallow new crashes near the corpus. The long,
//! coverage-guided runs are `bash fuzz/run_all.sh` (docs/reliability.md).
//!
//! `FUZZ_SMOKE_MUTANTS` (default 50000 per target) and `FUZZ_SMOKE_SEED` change the run; a
//! failing input is written to `target/fuzz-smoke/<target>-crash` and printed, ready to be
//! replayed with `cargo fuzz run <target> <file>`.

#[path = "../../fuzz/src/lib.rs"]
mod targets;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Longest a target's mutation loop may run, whatever the count, so a slow machine stays
/// within CI's budget.
const TIME_LIMIT: Duration = Duration::from_secs(20);

/// Longest mutant, as libFuzzer's `-max_len` would bound it.
const MAX_LEN: usize = 8192;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    files.sort();
    let inputs: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())))
        .collect();
    assert!(!inputs.is_empty(), "no seeds in {}", dir.display());
    inputs
}

/// One libFuzzer-style mutation: flip, overwrite with an interesting byte, insert, erase,
/// duplicate a chunk, or splice in part of another corpus input.
fn mutate(rng: &mut StdRng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    const INTERESTING: &[u8] = b"\x00\xff\x7f\x80\r\n:|\\$*-+%_=/ {}[]\"'#&!@N0119";
    let mut out = input.to_vec();
    for _ in 0..rng.gen_range(1..=4) {
        let len = out.len();
        match rng.gen_range(0..6) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                out[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                out[i] = INTERESTING[rng.gen_range(0..INTERESTING.len())];
            }
            2 => {
                let i = rng.gen_range(0..=len);
                let b = INTERESTING[rng.gen_range(0..INTERESTING.len())];
                out.insert(i, b);
            }
            3 if len > 0 => {
                let i = rng.gen_range(0..len);
                let n = rng.gen_range(1..=(len - i).min(16));
                out.drain(i..i + n);
            }
            4 if len > 0 => {
                let i = rng.gen_range(0..len);
                let n = rng.gen_range(1..=(len - i).min(64));
                let chunk = out[i..i + n].to_vec();
                let at = rng.gen_range(0..=len);
                out.splice(at..at, chunk);
            }
            _ => {
                let other = &corpus[rng.gen_range(0..corpus.len())];
                if !other.is_empty() {
                    let i = rng.gen_range(0..other.len());
                    let n = rng.gen_range(1..=(other.len() - i));
                    let at = rng.gen_range(0..=out.len());
                    out.splice(at..at, other[i..i + n].iter().copied());
                }
            }
        }
    }
    out.truncate(MAX_LEN);
    out
}

/// Runs `f` on `input`; on a panic, saves the input and fails with it.
fn run_one(target: &str, f: fn(&[u8]), input: &[u8], what: &str) {
    if catch_unwind(AssertUnwindSafe(|| f(input))).is_ok() {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-smoke");
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join(format!("{target}-crash"));
    let _ = std::fs::write(&file, input);
    panic!(
        "fuzz target {target} failed on {what} (saved to {}): {:?}",
        file.display(),
        String::from_utf8_lossy(input)
    );
}

fn smoke(target: &str, f: fn(&[u8])) {
    let seeds = corpus(target);
    for (i, input) in seeds.iter().enumerate() {
        run_one(target, f, input, &format!("corpus input #{i}"));
    }
    let mutants: usize = std::env::var("FUZZ_SMOKE_MUTANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let seed: u64 = std::env::var("FUZZ_SMOKE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut done = 0;
    // Mutants of mutants too, as a fuzzer would: keep a small pool of recent inputs.
    let mut pool = seeds.clone();
    while done < mutants && started.elapsed() < TIME_LIMIT {
        let parent = pool[rng.gen_range(0..pool.len())].clone();
        let input = mutate(&mut rng, &parent, &seeds);
        run_one(target, f, &input, &format!("mutant #{done} (seed {seed})"));
        if pool.len() < 4 * seeds.len() {
            pool.push(input);
        } else {
            let i = rng.gen_range(0..pool.len());
            pool[i] = input;
        }
        done += 1;
    }
    eprintln!(
        "{target}: {} corpus inputs, {done} mutants in {:.1?}",
        seeds.len(),
        started.elapsed()
    );
}

#[test]
fn config_loader_survives_the_corpus_and_its_mutants() {
    smoke("config", targets::config);
}

#[test]
fn redis_reply_parsers_survive_the_corpus_and_its_mutants() {
    smoke("redis_reply", targets::redis_reply);
}

#[test]
fn postgres_status_parsers_survive_the_corpus_and_its_mutants() {
    smoke("postgres_status", targets::postgres_status);
}

#[test]
fn mysql_status_parsers_survive_the_corpus_and_its_mutants() {
    smoke("mysql_status", targets::mysql_status);
}

#[test]
fn admin_request_handling_survives_the_corpus_and_its_mutants() {
    smoke("admin_request", targets::admin_request);
}
