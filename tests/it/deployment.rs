//! The deployment files, checked as far as this machine allows (no systemd as PID 1, no Docker
//! engine, no Kubernetes):
//!
//! - systemd: `config/systemd/rolegate.service` passes `systemd-analyze verify` with no
//!   warnings and keeps its required settings; the binary speaks the `Type=notify` protocol
//!   (READY after the listeners are bound, RELOADING/READY around SIGHUP, STOPPING on SIGTERM);
//!   the unit's privilege model (a non-root user with only an ambient CAP_NET_BIND_SERVICE and
//!   no_new_privs) binds a port below 1024.
//! - Docker: the Dockerfile's HEALTHCHECK command follows `/readyz`; its build stage
//!   (`docker/build.sh`) runs as a plain script; `docker/compose.yaml` validates against the
//!   vendored Compose schema and `docker-compose config`; `docker/prometheus.yml` passes
//!   `promtool check config`; `docker/rolegate.yaml` is a valid rolegate config.
//! - Sidecar: the Kubernetes manifest's ConfigMap is `config/sidecar.yaml`, a valid config, and
//!   the probes, mounts and secrets line up.
//! - Every deployment script passes shellcheck.
//!
//! The tools are installed by `bash loadtest/test.sh`; a missing one fails with an install hint.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rolegate::config::Config;

use crate::support::config::{Check, Cluster, ConfigBuilder, Listener};
use crate::support::require;
use crate::support::script::run_with_deadline;

const BIN: &str = env!("CARGO_BIN_EXE_rolegate");

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The variables the shipped configs read (the process env is never used).
fn env(name: &str) -> Option<String> {
    match name {
        "PG_MONITOR_PASSWORD"
        | "MYSQL_MONITOR_PASSWORD"
        | "REDIS_MONITOR_PASSWORD"
        | "ROLEGATE_ADMIN_TOKEN" => Some(format!("secret-of-{name}")),
        _ => None,
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A rolegate process started by a test: SIGTERM, then SIGKILL, by pid on drop.
struct Rolegate {
    child: Child,
    log: PathBuf,
}

impl Rolegate {
    fn spawn(mut cmd: Command, log: PathBuf) -> Rolegate {
        let out = fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Rolegate { child, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: i32) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid");
        // SAFETY: kill(2) on the pid of a child this test started and has not yet reaped.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill {pid}: {}", std::io::Error::last_os_error());
    }

    /// Waits for the process to exit within `limit`.
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "rolegate did not exit within {limit:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Rolegate {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A port that was free a moment ago (the test binds it right away).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Polls `cond` every 20 ms until it holds, failing after `limit`.
fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A minimal config: one tcp cluster whose only backend is `backend`, one listener on `bind`.
fn tcp_config(admin_port: u16, backend: SocketAddr, bind: SocketAddr) -> String {
    ConfigBuilder::new()
        .admin(serde_json::json!({ "listen": format!("127.0.0.1:{admin_port}") }))
        .cluster(
            Cluster::tcp("db")
                .check(Check::timing("200ms", "200ms", 1, 1))
                .backend("db-1", backend),
        )
        .listener(
            Listener::new("db", "db")
                .bind(bind)
                .set("queue_timeout", "0s"),
        )
        .yaml()
}

// ---------------------------------------------------------------------------------------------
// systemd
// ---------------------------------------------------------------------------------------------

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = require::tool(
        "systemd-analyze",
        &["/usr/bin/systemd-analyze", "/bin/systemd-analyze"],
        "systemd",
    ) else {
        return;
    };
    let unit = read("config/systemd/rolegate.service");
    for required in [
        "Type=notify",
        "ExecStart=/usr/local/bin/rolegate --config ${ROLEGATE_CONFIG}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "LimitNOFILE=1048576",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "User=rolegate",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
    ] {
        assert!(
            unit.lines().any(|l| l.trim() == required),
            "rolegate.service lacks `{required}`"
        );
    }
    // verify wants ExecStart's binary to exist: point the unit at the one just built.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rolegate.service");
    fs::write(&path, unit.replace("/usr/local/bin/rolegate", BIN)).expect("write unit");
    let out = run_with_deadline(
        Command::new(&analyze)
            .arg("verify")
            .arg(&path)
            .current_dir(dir.path()),
        Duration::from_secs(60),
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stdout}{stderr}"
    );
    // verify exits 0 on unknown keys and bad values too; it only warns. Any line is a finding.
    let findings: Vec<&str> = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(
        findings.is_empty(),
        "systemd-analyze verify reported:\n{}",
        findings.join("\n")
    );

    // The exposure score of the hardening (0 = locked down, 10 = none), offline.
    let out = run_with_deadline(
        Command::new(&analyze)
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(&path)
            .current_dir(dir.path()),
        Duration::from_secs(60),
    );
    let report = text(&out.stdout) + &text(&out.stderr);
    let score = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .and_then(|l| l.split(": ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    eprintln!("FIGURES systemd: rolegate.service exposure level {score} (systemd-analyze security --offline)");
    assert!(
        score <= 2.0,
        "the unit's hardening got weaker: exposure {score}\n{report}"
    );
}

/// Reads one notification, within the socket's read timeout.
fn recv_notification(socket: &UnixDatagram, what: &str, log: &Rolegate) -> String {
    let mut buf = [0u8; 4096];
    match socket.recv(&mut buf) {
        Ok(n) => text(&buf[..n]),
        Err(e) => panic!("no {what} notification: {e}; log:\n{}", log.log_text()),
    }
}

#[test]
fn rolegate_speaks_the_systemd_notify_protocol() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let config = dir.path().join("rolegate.yaml");
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
    fs::write(&config, tcp_config(free_port(), nobody, listen)).expect("config");

    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path);
    let mut rolegate = Rolegate::spawn(cmd, dir.path().join("rolegate.log"));

    let ready = recv_notification(&socket, "READY", &rolegate);
    assert!(ready.starts_with("READY=1\n"), "{ready:?}");
    assert!(ready.contains("STATUS=serving 1 listeners"), "{ready:?}");
    // READY means bound: a client connects at once (the kernel accepts into the backlog).
    TcpStream::connect_timeout(&listen, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("listener not bound when READY=1 arrived: {e}"));

    // SIGHUP: RELOADING=1, then READY=1 once the reload is done.
    rolegate.signal(libc::SIGHUP);
    let reloading = recv_notification(&socket, "RELOADING", &rolegate);
    assert!(reloading.starts_with("RELOADING=1\n"), "{reloading:?}");
    let ready = recv_notification(&socket, "READY after reload", &rolegate);
    assert!(
        ready.starts_with("READY=1\n") && ready.contains("serving 1 listeners"),
        "{ready:?}"
    );

    // A broken file: still READY (the old config keeps running), and the status says so.
    fs::write(&config, "clusters: [").expect("break config");
    rolegate.signal(libc::SIGHUP);
    let reloading = recv_notification(&socket, "RELOADING", &rolegate);
    assert!(reloading.starts_with("RELOADING=1\n"), "{reloading:?}");
    let ready = recv_notification(&socket, "READY after a failed reload", &rolegate);
    assert!(
        ready.starts_with("READY=1\n") && ready.contains("reload failed"),
        "{ready:?}"
    );

    // SIGTERM: STOPPING=1, then a clean exit.
    rolegate.signal(libc::SIGTERM);
    let stopping = recv_notification(&socket, "STOPPING", &rolegate);
    assert!(stopping.starts_with("STOPPING=1\n"), "{stopping:?}");
    let status = rolegate.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "exit status {status}");
}

/// The unit's privilege model, without systemd: `setpriv` gives rolegate what User=,
/// AmbientCapabilities=, CapabilityBoundingSet= and NoNewPrivileges= give it, and it binds a
/// port below 1024; without the capability the same start fails.
#[test]
fn unprivileged_user_with_ambient_cap_net_bind_service_binds_a_low_port() {
    // Root, to drop to another user.
    let Some(_root) = require::root() else {
        return;
    };
    let Some(setpriv) = require::tool("setpriv", &["/usr/bin/setpriv"], "util-linux") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    // A copy the unprivileged user can surely reach (the checkout may be in a private home).
    let bin = dir.path().join("rolegate");
    fs::copy(BIN, &bin).expect("copy binary");
    let low = (600..1000)
        .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port below 1024");
    let listen: SocketAddr = format!("127.0.0.1:{low}").parse().unwrap();
    let config = dir.path().join("rolegate.yaml");
    let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
    fs::write(&config, tcp_config(free_port(), nobody, listen)).expect("config");
    fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).expect("chmod");

    let start = |caps: &str, log: &str| {
        let mut cmd = Command::new(&setpriv);
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            &format!("--inh-caps=-all{caps}"),
            &format!("--ambient-caps=-all{caps}"),
            &format!("--bounding-set=-all{caps}"),
            "--no-new-privs",
        ])
        .arg(&bin)
        .arg("--config")
        .arg(&config);
        Rolegate::spawn(cmd, dir.path().join(log))
    };

    let mut without = start("", "without.log");
    let status = without.wait_exit(Duration::from_secs(15));
    assert!(!status.success(), "bound port {low} without the capability");
    assert!(
        without.log_text().contains("Permission denied"),
        "{}",
        without.log_text()
    );

    let with = start(",+net_bind_service", "with.log");
    wait_until(
        Duration::from_secs(15),
        "rolegate listening on a port below 1024",
        || TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok(),
    );
    let proc_status =
        fs::read_to_string(format!("/proc/{}/status", with.pid())).expect("proc status");
    let field = |name: &str| {
        proc_status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(field("Uid:"), "65534");
    assert_eq!(field("NoNewPrivs:"), "1");
    // CAP_NET_BIND_SERVICE is capability 10: exactly that bit, nothing else.
    assert_eq!(
        u64::from_str_radix(&field("CapEff:"), 16).ok(),
        Some(1 << 10)
    );
    drop(with);
}

// ---------------------------------------------------------------------------------------------
// Docker
// ---------------------------------------------------------------------------------------------

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn dockerfile_instructions() -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in read("docker/Dockerfile").lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') && current.is_empty() || trimmed.is_empty() {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

#[test]
fn dockerfile_is_multi_stage_non_root_and_built_by_build_sh() {
    let ins = dockerfile_instructions();
    let has = |prefix: &str| ins.iter().any(|i| i.starts_with(prefix));
    assert!(
        has("FROM rust:1-bookworm AS build"),
        "builder stage: {ins:#?}"
    );
    assert!(has("FROM debian:bookworm-slim"), "runtime stage: {ins:#?}");
    assert!(
        ins.iter().any(|i| i.starts_with("RUN ")
            && i.contains("install -y --no-install-recommends ca-certificates")),
        "checks with tls: verify against the system roots, which the slim image lacks: {ins:#?}"
    );
    assert!(
        ins.iter()
            .any(|i| i.starts_with("RUN ") && i.contains("sh docker/build.sh /out")),
        "the build stage must run docker/build.sh (what CI runs): {ins:#?}"
    );
    assert!(has(
        "COPY --from=build /out/rolegate /usr/local/bin/rolegate"
    ));
    assert!(has("COPY docker/rolegate.yaml /etc/rolegate/rolegate.yaml"));
    let user = ins
        .iter()
        .rev()
        .find_map(|i| i.strip_prefix("USER "))
        .expect("a USER instruction");
    assert!(
        !user.starts_with('0') && !user.starts_with("root"),
        "runs as {user}"
    );
    assert!(has("ENTRYPOINT [\"/usr/local/bin/rolegate\"]"));
    assert!(has("CMD [\"--config\", \"/etc/rolegate/rolegate.yaml\"]"));
}

/// The HEALTHCHECK's command as an argv.
fn healthcheck_argv() -> Vec<String> {
    let ins = dockerfile_instructions();
    let hc = ins
        .iter()
        .find(|i| i.starts_with("HEALTHCHECK "))
        .expect("a HEALTHCHECK instruction");
    let json = hc
        .split_once(" CMD ")
        .map(|(_, cmd)| cmd.trim())
        .expect("HEALTHCHECK ... CMD [...]");
    serde_json::from_str(json).unwrap_or_else(|e| panic!("HEALTHCHECK CMD {json}: {e}"))
}

#[test]
fn docker_healthcheck_command_follows_readyz() {
    let argv = healthcheck_argv();
    assert_eq!(
        argv,
        [
            "/usr/local/bin/rolegate",
            "probe",
            "--url",
            "http://127.0.0.1:9813/readyz",
            "--timeout",
            "2s"
        ],
        "the image's HEALTHCHECK"
    );
    // Run exactly that command against a rolegate on a free admin port (9813 may be taken).
    let admin = free_port();
    let run_healthcheck = || {
        let args: Vec<String> = argv[1..]
            .iter()
            .map(|a| a.replace(":9813/", &format!(":{admin}/")))
            .collect();
        run_with_deadline(Command::new(BIN).args(&args), Duration::from_secs(10))
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = TcpListener::bind("127.0.0.1:0").expect("backend");
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.path().join("rolegate.yaml");
    fs::write(
        &config,
        tcp_config(admin, backend.local_addr().unwrap(), listen),
    )
    .expect("config");
    let mut cmd = Command::new(BIN);
    cmd.arg("--config").arg(&config);
    let mut rolegate = Rolegate::spawn(cmd, dir.path().join("rolegate.log"));

    wait_until(Duration::from_secs(15), "HEALTHCHECK healthy", || {
        run_healthcheck().status.success()
    });
    let ok = run_healthcheck();
    assert!(text(&ok.stdout).contains("200 OK"), "{}", text(&ok.stdout));

    // The only backend goes away: /readyz answers 503 and the HEALTHCHECK fails with status 1.
    drop(backend);
    let mut last = None;
    wait_until(Duration::from_secs(15), "HEALTHCHECK unhealthy", || {
        let out = run_healthcheck();
        let failed = out.status.code() == Some(1);
        last = Some(out);
        failed
    });
    let stderr = text(&last.expect("output").stderr);
    assert!(
        stderr.contains("503 Service Unavailable") && stderr.contains("db"),
        "{stderr}"
    );

    // rolegate stopped: nothing answers, status 1 again.
    rolegate.signal(libc::SIGTERM);
    rolegate.wait_exit(Duration::from_secs(15));
    let out = run_healthcheck();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cannot connect"),
        "{}",
        text(&out.stderr)
    );
}

/// The Dockerfile's build stage, outside Docker: `docker/build.sh` builds the release binary
/// with `--locked`, strips it and smoke-tests it.
#[test]
fn docker_build_steps_run_as_a_plain_script() {
    let out_dir = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    let out = run_with_deadline(
        Command::new("sh")
            .arg(repo("docker/build.sh"))
            .arg(out_dir.path()),
        Duration::from_secs(1800),
    );
    assert!(
        out.status.success(),
        "docker/build.sh failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let bin = out_dir.path().join("rolegate");
    let size = fs::metadata(&bin).expect("binary").len();
    eprintln!(
        "FIGURES docker: build.sh took {} s; image binary {} bytes",
        started.elapsed().as_secs(),
        size
    );
    // Every shared library it links must come from a Debian package that debian:bookworm-slim
    // already has (its minbase: the C library, the GCC runtime, and what dpkg and apt link).
    const IN_BOOKWORM_SLIM: &[&str] = &[
        "libc6",
        "libgcc-s1",
        "zlib1g",
        "libzstd1",
        "liblzma5",
        "libbz2-1.0",
        "libstdc++6",
    ];
    let ldd = run_with_deadline(Command::new("ldd").arg(&bin), Duration::from_secs(30));
    for line in text(&ldd.stdout).lines() {
        let Some(path) = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(str::to_string)
        else {
            continue; // linux-vdso.so.1, provided by the kernel
        };
        // dpkg knows a file by the path its package ships (/lib/... or /usr/lib/... on a
        // merged /usr): ask for the path ldd printed, then for the resolved one.
        let resolved = fs::canonicalize(&path).map(|p| p.display().to_string());
        let package = [Some(path.clone()), resolved.ok()]
            .into_iter()
            .flatten()
            .find_map(|candidate| {
                let out = run_with_deadline(
                    Command::new("dpkg").args(["-S", &candidate]),
                    Duration::from_secs(30),
                );
                out.status.success().then(|| {
                    text(&out.stdout)
                        .split(':')
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .to_string()
                })
            })
            .unwrap_or_else(|| panic!("dpkg -S {path}: no package owns it"));
        assert!(
            IN_BOOKWORM_SLIM.contains(&package.as_str()),
            "the binary links {path} from package {package:?}, which debian:bookworm-slim may \
             lack: install it in docker/Dockerfile's runtime stage (and list it here)"
        );
    }
}

#[test]
fn compose_file_validates_against_the_compose_schema() {
    let Some(_) =
        require::python_modules(&["yaml", "jsonschema"], "python3-yaml python3-jsonschema")
    else {
        return;
    };
    let Some(compose) = require::tool(
        "docker-compose",
        &["/usr/bin/docker-compose"],
        "docker-compose",
    ) else {
        return;
    };
    let python = "/usr/bin/python3";
    let out = run_with_deadline(
        Command::new(python)
            .arg(repo("docker/check-compose.py"))
            .arg(repo("docker/compose.yaml")),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // A second opinion from a Compose implementation (Debian's docker-compose 1.29, which
    // needs no engine for `config`): interpolation, merges and references resolved.
    let out = run_with_deadline(
        Command::new(compose)
            .arg("--file")
            .arg(repo("docker/compose.yaml"))
            .args(["config", "--quiet"])
            .env_remove("DOCKER_HOST"),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "docker-compose config:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn prometheus_config_passes_promtool() {
    let Some(promtool) = require::tool("promtool", &["/usr/bin/promtool"], "prometheus") else {
        return;
    };
    let out = run_with_deadline(
        Command::new(promtool)
            .args(["check", "config"])
            .arg(repo("docker/prometheus.yml")),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn docker_rolegate_config_is_valid() {
    let text = read("docker/rolegate.yaml");
    let config = Config::from_yaml_str_with_env(&text, Some(&repo("docker/rolegate.yaml")), &env)
        .unwrap_or_else(|e| panic!("docker/rolegate.yaml:\n{e}"));
    let mut ports: Vec<u16> = config.listeners.iter().map(|l| l.bind.port()).collect();
    ports.sort_unstable();
    assert_eq!(ports, [3306, 3307, 5432, 5433, 6379, 6380]);
    assert_eq!(
        config.admin.listen.map(|a| a.port()),
        Some(9813),
        "the HEALTHCHECK and Prometheus use 9813"
    );
}

// ---------------------------------------------------------------------------------------------
// Sidecar
// ---------------------------------------------------------------------------------------------

fn get<'a>(v: &'a yaml_serde::Value, path: &[&str]) -> &'a yaml_serde::Value {
    path.iter().fold(v, |v, k| &v[*k])
}

fn str_at<'a>(v: &'a yaml_serde::Value, path: &[&str]) -> &'a str {
    get(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("no string at {path:?}"))
}

#[test]
fn sidecar_config_and_kubernetes_manifest_agree() {
    use serde::Deserialize;
    let sidecar = read("config/sidecar.yaml");
    let config = Config::from_yaml_str_with_env(&sidecar, Some(&repo("config/sidecar.yaml")), &env)
        .unwrap_or_else(|e| panic!("config/sidecar.yaml:\n{e}"));
    for l in &config.listeners {
        assert!(
            l.bind.ip().is_loopback(),
            "a sidecar listens on loopback only: {} binds {}",
            l.name,
            l.bind
        );
    }
    let admin_port = config.admin.listen.expect("admin listener").port();

    let manifest = read("config/kubernetes/sidecar-deployment.yaml");
    let docs: Vec<yaml_serde::Value> = yaml_serde::Deserializer::from_str(&manifest)
        .map(yaml_serde::Value::deserialize)
        .collect::<Result<_, _>>()
        .expect("manifest parses");
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"].as_str() == Some(k))
            .unwrap_or_else(|| panic!("no {k} in the manifest"))
    };
    let (config_map, secret, deployment) = (kind("ConfigMap"), kind("Secret"), kind("Deployment"));
    assert_eq!(
        str_at(config_map, &["data", "rolegate.yaml"]),
        sidecar,
        "the ConfigMap must carry config/sidecar.yaml verbatim"
    );

    let pod = get(deployment, &["spec", "template", "spec"]);
    let containers: Vec<&yaml_serde::Value> = ["initContainers", "containers"]
        .iter()
        .filter_map(|k| pod[*k].as_sequence())
        .flatten()
        .collect();
    let rolegate = containers
        .iter()
        .find(|c| c["name"].as_str() == Some("rolegate"))
        .expect("a rolegate container");
    assert!(
        containers
            .iter()
            .any(|c| c["name"].as_str() != Some("rolegate")),
        "an app container next to rolegate"
    );

    // Probes on the admin port: readiness = /readyz, liveness = /healthz.
    let port_named = |name: &str| {
        rolegate["ports"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_u64())
    };
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(str_at(rolegate, &[probe, "httpGet", "path"]), path);
        let port = get(rolegate, &[probe, "httpGet", "port"]);
        let port = port
            .as_u64()
            .or_else(|| port.as_str().and_then(port_named))
            .expect("probe port");
        assert_eq!(port, u64::from(admin_port), "{probe} port");
    }

    // The config file comes from the ConfigMap, mounted where --config points.
    let args: Vec<&str> = rolegate["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    let config_path = args
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| w[1])
        .expect("--config in args");
    let volume = pod["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .find(|v| v["configMap"]["name"] == config_map["metadata"]["name"])
        .expect("a volume from the ConfigMap");
    let mount = rolegate["volumeMounts"]
        .as_sequence()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the ConfigMap volume mounted");
    assert_eq!(
        format!("{}/rolegate.yaml", str_at(mount, &["mountPath"])),
        config_path
    );

    // Every secret the config reads comes from the Secret.
    let env_vars = rolegate["env"].as_sequence().expect("env");
    let secret_name = str_at(secret, &["metadata", "name"]);
    for var in [
        "PG_MONITOR_PASSWORD",
        "REDIS_MONITOR_PASSWORD",
        "ROLEGATE_ADMIN_TOKEN",
    ] {
        let entry = env_vars
            .iter()
            .find(|e| e["name"].as_str() == Some(var))
            .unwrap_or_else(|| panic!("rolegate container lacks env {var}"));
        let key_ref = get(entry, &["valueFrom", "secretKeyRef"]);
        assert_eq!(str_at(key_ref, &["name"]), secret_name, "{var}");
        let key = str_at(key_ref, &["key"]);
        assert!(
            secret["stringData"][key].is_string(),
            "{var}: the Secret has no key {key}"
        );
    }
    for var in ["password_env: ", "token_env: "] {
        for name in sidecar
            .lines()
            .filter_map(|l| l.split_once(var).map(|(_, n)| n.trim()))
        {
            assert!(
                env_vars.iter().any(|e| e["name"].as_str() == Some(name)),
                "sidecar.yaml reads {name}, which the container does not set"
            );
        }
    }
    assert_eq!(
        get(rolegate, &["securityContext", "runAsNonRoot"]).as_bool(),
        Some(true)
    );
}

// ---------------------------------------------------------------------------------------------
// Scripts
// ---------------------------------------------------------------------------------------------

#[test]
fn deployment_scripts_pass_shellcheck() {
    let Some(shellcheck) = require::tool("shellcheck", &["/usr/bin/shellcheck"], "shellcheck")
    else {
        return;
    };
    let scripts = [
        "config/keepalived/rolegate-notify.sh",
        "docker/build.sh",
        "docker/failover.sh",
        "docker/initdb/pg-primary.sh",
        "docker/initdb/pg-replica.sh",
        "docker/initdb/mysql-users.sh",
        "docker/initdb/mysql-replica.sh",
    ];
    for script in scripts {
        let mode = fs::metadata(repo(script))
            .unwrap_or_else(|e| panic!("{script}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "{script} must be executable");
    }
    let out = run_with_deadline(
        Command::new(shellcheck).args(scripts.iter().map(|s| repo(s))),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "shellcheck:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}
