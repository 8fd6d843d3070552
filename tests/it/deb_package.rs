//! The Debian package, built and installed on this machine: `packaging/build-deb.sh` packages
//! the binary under test (`--binary`, the debug build: a release build with fat LTO takes
//! minutes on two cores, and what is tested here is the packaging, not the compiler), then
//!
//! - `dpkg -i` installs it: `/usr/bin/rolegate --version` runs, the unit passes
//!   `systemd-analyze verify` and runs `/usr/bin/rolegate`, the example config is the conffile
//!   `/etc/rolegate/rolegate.yaml` and passes `check-config` as the `rolegate` user the
//!   postinst created, `man` finds every page, the completions load, the alert rules are there;
//! - `dpkg -r` removes the program but keeps the conffile, and `dpkg --purge` leaves none of the
//!   package's files behind.
//!
//! Needs root and dpkg (CI runs it as root via `bash loadtest/test.sh`). It refuses to run where
//! rolegate is already installed or /etc/rolegate exists, takes a lock so two runs on one
//! machine cannot interleave, and purges the package (and removes the user, when it created
//! it) even when an assertion fails. cargo-deb is installed by the build script when missing
//! (`CARGO_DEB=/path/to/cargo-deb` uses another).

use crate::support;
use crate::support::script::run_with_deadline;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_rolegate");
const UNIT: &str = "/usr/lib/systemd/system/rolegate.service";
const CONFFILE: &str = "/etc/rolegate/rolegate.yaml";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

/// Runs `cmd` and fails unless it exits 0; returns stdout and stderr.
fn ok(cmd: &mut Command) -> String {
    let o = run_with_deadline(cmd, Duration::from_secs(300));
    assert!(o.status.success(), "{cmd:?} failed:\n{}", text(&o));
    text(&o)
}

fn sh(program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args);
    cmd
}

fn user_exists() -> bool {
    run_with_deadline(
        &mut sh("getent", &["passwd", "rolegate"]),
        Duration::from_secs(30),
    )
    .status
    .success()
}

/// `dpkg-query`'s status of the package, `None` when dpkg knows nothing of it.
fn package_status() -> Option<String> {
    let o = run_with_deadline(
        &mut sh("dpkg-query", &["-W", "-f=${Status}", "rolegate"]),
        Duration::from_secs(30),
    );
    let status = String::from_utf8_lossy(&o.stdout).trim().to_string();
    (o.status.success() && !status.is_empty()).then_some(status)
}

/// Purges the package and removes the user it created, whatever happened in the test.
struct Cleanup {
    created_user: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if package_status().is_some() {
            let o = run_with_deadline(
                &mut sh("dpkg", &["--purge", "rolegate"]),
                Duration::from_secs(120),
            );
            if !o.status.success() {
                eprintln!("cleanup: dpkg --purge rolegate failed:\n{}", text(&o));
            }
        }
        if self.created_user && user_exists() {
            let o = run_with_deadline(&mut sh("userdel", &["rolegate"]), Duration::from_secs(30));
            if !o.status.success() {
                eprintln!("cleanup: userdel rolegate failed:\n{}", text(&o));
            }
        }
    }
}

/// An exclusive lock for the length of the test: one package install per machine at a time.
fn machine_lock() -> fs::File {
    let file = fs::File::create("/tmp/rolegate-deb-package-test.lock").expect("lock file");
    // SAFETY: flock(2) on a descriptor this function owns; the lock lives as long as the file.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
    file
}

/// The shipped configs' variables, with made-up values (the process env is never used).
const CONFIG_ENV: &[(&str, &str)] = &[
    ("PG_MONITOR_PASSWORD", "secret-pg"),
    ("MYSQL_MONITOR_PASSWORD", "secret-mysql"),
    ("REDIS_MONITOR_PASSWORD", "secret-redis"),
    ("ROLEGATE_ADMIN_TOKEN", "secret-token"),
];

#[test]
fn deb_installs_runs_and_purges_cleanly() {
    let Some(_root) = support::require::root() else {
        return;
    };
    let _lock = machine_lock();
    assert_eq!(
        package_status(),
        None,
        "rolegate is already known to dpkg here; this test will not replace it"
    );
    assert!(
        !Path::new("/etc/rolegate").exists(),
        "/etc/rolegate exists; this test will not install over it"
    );

    // Build.
    let out_dir = tempfile::tempdir().expect("temp dir");
    ok(Command::new("bash")
        .arg(repo("packaging/build-deb.sh"))
        .arg("--binary")
        .arg(BIN)
        .arg("--output")
        .arg(out_dir.path()));
    let deb = fs::read_dir(out_dir.path())
        .expect("output dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("no .deb written");
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        name.starts_with(&format!("rolegate_{version}-1_")),
        "{name}"
    );
    let conffiles = ok(sh("dpkg-deb", &["-I"]).arg(&deb).arg("conffiles"));
    assert_eq!(conffiles.trim(), CONFFILE);

    // Install.
    let created_user = !user_exists();
    let _cleanup = Cleanup { created_user };
    ok(sh("dpkg", &["-i"]).arg(&deb));
    assert_eq!(package_status().as_deref(), Some("install ok installed"));
    let files: Vec<PathBuf> = ok(&mut sh("dpkg", &["-L", "rolegate"]))
        .lines()
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .collect();
    for expected in [
        "/usr/bin/rolegate",
        UNIT,
        CONFFILE,
        "/usr/share/man/man1/rolegate.1.gz",
        "/usr/share/man/man1/rolegate-status.1.gz",
        "/usr/share/bash-completion/completions/rolegate",
        "/usr/share/zsh/vendor-completions/_rolegate",
        "/usr/share/fish/vendor_completions.d/rolegate.fish",
        "/usr/share/rolegate/prometheus/rolegate-alerts.yml",
        "/usr/share/doc/rolegate/README.md",
        "/usr/share/doc/rolegate/copyright",
    ] {
        assert!(
            files.iter().any(|f| f == Path::new(expected)),
            "{expected} not installed; files: {files:?}"
        );
    }

    // The binary, the user, the config.
    let v = ok(&mut sh("/usr/bin/rolegate", &["--version"]));
    assert_eq!(v.trim(), format!("rolegate {version}"));
    let passwd = ok(&mut sh("getent", &["passwd", "rolegate"]));
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    assert_eq!(
        (fields[5], fields[6]),
        ("/nonexistent", "/usr/sbin/nologin"),
        "{passwd}"
    );
    assert_eq!(
        fs::read(CONFFILE).expect("conffile"),
        fs::read(repo("config/example.yaml")).expect("example")
    );
    let checked = ok(sh(
        "setpriv",
        &[
            "--reuid=rolegate",
            "--regid=rolegate",
            "--clear-groups",
            "/usr/bin/rolegate",
            "check-config",
            CONFFILE,
        ],
    )
    .envs(CONFIG_ENV.iter().copied()));
    assert!(checked.contains(&format!("{CONFFILE}: ok")), "{checked}");

    // The unit: /usr/bin paths, valid for systemd.
    let unit = fs::read_to_string(UNIT).expect("unit");
    assert!(
        unit.lines()
            .any(|l| l == "ExecStart=/usr/bin/rolegate --config ${ROLEGATE_CONFIG}"),
        "{unit}"
    );
    assert!(!unit.contains("/usr/local/"), "{unit}");
    let verify = ok(&mut sh("systemd-analyze", &["verify", UNIT]));
    let findings: Vec<&str> = verify.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        findings.is_empty(),
        "systemd-analyze verify {UNIT}:\n{}",
        findings.join("\n")
    );
    // Installed, not enabled: the example config must be edited first.
    assert!(!Path::new("/etc/systemd/system/multi-user.target.wants/rolegate.service").exists());

    // Manual pages and completions.
    for page in [
        "rolegate",
        "rolegate-status",
        "rolegate-drain",
        "rolegate-completions",
    ] {
        let path = ok(&mut sh("man", &["-w", page]));
        assert_eq!(
            path.trim(),
            format!("/usr/share/man/man1/{page}.1.gz"),
            "man -w {page}"
        );
    }
    let page = ok(&mut sh(
        "zcat",
        &["/usr/share/man/man1/rolegate-status.1.gz"],
    ));
    assert!(page.contains("\\-\\-json"), "{page}");
    let bash = ok(&mut sh(
        "bash",
        &[
            "-c",
            "source /usr/share/bash-completion/completions/rolegate && complete -p rolegate",
        ],
    ));
    assert!(bash.contains("_rolegate"), "{bash}");
    assert_eq!(
        fs::read("/usr/share/rolegate/prometheus/rolegate-alerts.yml").expect("rules"),
        fs::read(repo("config/prometheus/rolegate-alerts.yml")).expect("rules")
    );

    // Remove: the program goes, the conffile stays.
    ok(&mut sh("dpkg", &["-r", "rolegate"]));
    assert_eq!(
        package_status().as_deref(),
        Some("deinstall ok config-files")
    );
    assert!(!Path::new("/usr/bin/rolegate").exists());
    assert!(!Path::new(UNIT).exists());
    assert!(
        Path::new(CONFFILE).exists(),
        "dpkg -r must keep the conffile"
    );

    // Purge: nothing of the package is left.
    ok(&mut sh("dpkg", &["--purge", "rolegate"]));
    assert_eq!(package_status(), None);
    let left: Vec<&PathBuf> = files.iter().filter(|f| f.exists()).collect();
    assert!(left.is_empty(), "left after purge: {left:?}");
    assert!(!Path::new("/etc/rolegate").exists(), "/etc/rolegate left");
    // `dpkg -r` masks the unit (deb-systemd-helper); the purge must undo that too.
    assert!(
        fs::symlink_metadata("/etc/systemd/system/rolegate.service").is_err(),
        "a mask of rolegate.service is left in /etc/systemd/system"
    );
}

#[test]
fn packaging_scripts_pass_shellcheck() {
    let scripts = ["packaging/build-deb.sh", "packaging/debian/postinst"];
    for script in scripts {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &fs::metadata(repo(script))
                .unwrap_or_else(|e| panic!("{script}: {e}"))
                .permissions(),
        );
        assert_eq!(mode & 0o111, 0o111, "{script} must be executable");
    }
    let o = run_with_deadline(
        Command::new("shellcheck").args(scripts.iter().map(|s| repo(s))),
        Duration::from_secs(120),
    );
    assert!(o.status.success(), "shellcheck:\n{}", text(&o));
}
