//! Compiles the steering BPF program (bpf/steer.bpf.c) into OUT_DIR, where
//! src/data_plane/steer embeds it. Without a BPF toolchain (not Linux, no clang, no libbpf
//! headers) rolegate is built without steering: `cfg(rolegate_steer)` stays unset, a listener's
//! `steer:` then reports `active: false` and the proxy serves it, and one cargo warning says why.
//! `ROLEGATE_CLANG` names another clang; `ROLEGATE_NO_STEER=1` builds without steering on purpose.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCE: &str = "bpf/steer.bpf.c";

fn main() {
    println!("cargo:rustc-check-cfg=cfg(rolegate_steer)");
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=ROLEGATE_CLANG");
    println!("cargo:rerun-if-env-changed=ROLEGATE_NO_STEER");
    // So that installing libbpf-dev later turns steering on without `cargo clean`.
    println!("cargo:rerun-if-changed=/usr/include/bpf/bpf_helpers.h");
    match compile() {
        Ok(()) => println!("cargo:rustc-cfg=rolegate_steer"),
        Err(Missing(why)) => {
            println!("cargo:warning=building without steering (listener `steer:`): {why}")
        }
    }
}

/// The toolchain is not there: build without steering.
struct Missing(String);

/// Compiles the program. A program that the toolchain rejects is a bug in this repository and
/// fails the build (a panic) rather than quietly dropping the feature.
fn compile() -> Result<(), Missing> {
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return Err(Missing("not a Linux target".into()));
    }
    if env::var_os("ROLEGATE_NO_STEER").is_some_and(|v| v == "1") {
        return Err(Missing("ROLEGATE_NO_STEER=1".into()));
    }
    if !Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
        return Err(Missing(
            "no /usr/include/bpf/bpf_helpers.h (apt-get install libbpf-dev)".into(),
        ));
    }
    let clang = env::var("ROLEGATE_CLANG").unwrap_or_else(|_| "clang".into());
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("steer.bpf.o");
    let mut cmd = Command::new(&clang);
    cmd.args([
        "-target", "bpf", "-mcpu=v3", "-O2", "-g", "-Wall", "-Werror",
    ]);
    // linux/types.h includes <asm/types.h>, which Debian keeps in the multiarch directory.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = format!("/usr/include/{}-linux-gnu", debian_arch(&arch));
    if Path::new(&multiarch).exists() {
        cmd.arg(format!("-I{multiarch}"));
    }
    cmd.args(["-c", SOURCE, "-o"]).arg(&out);
    let output = cmd
        .output()
        .map_err(|e| Missing(format!("cannot run {clang} ({e}; apt-get install clang)")))?;
    if !output.status.success() {
        panic!(
            "{clang} failed on {SOURCE}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Debian's multiarch name for a Rust target architecture.
fn debian_arch(arch: &str) -> &str {
    match arch {
        "x86" => "i386",
        other => other,
    }
}
