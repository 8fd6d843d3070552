//! keepalived moves the VIP between two rolegate hosts: real VRRP (Debian's keepalived), real
//! network namespaces, the shipped `config/keepalived/keepalived.conf` and notify script.
//!
//! ```text
//!          namespace "sw" (a switch, the client and the database)
//!   client 198.18.0.1 on br0 ── backend 198.19.0.10:5432 on lo (greets "backend via <peer>")
//!              │ br0 (bridge)
//!        ┌─────┴─────────────┐
//!   eth0 198.18.0.2     eth0 198.18.0.3          VIP 198.18.0.100/24 moves between them
//!   namespace "a"        namespace "b"
//!   rolegate  (listens on 198.18.0.100:5432 in both, IP_FREEBIND; admin 127.0.0.1:9813)
//!   keepalived -i proxy-a     keepalived -i proxy-b   (unicast VRRP, probe /readyz)
//! ```
//!
//! The backend is a `protocol: tcp` cluster, so "primary" means "the backend accepts". A host is
//! made unready by giving it an `unreachable` route to the backend (and ready again by removing
//! it), or by stopping its rolegate. The test shows, in order:
//! 1. the VIP settles on A and a client through the VIP reaches the backend via A;
//! 2. A unready → the VIP moves to B within the configured time and clients get through via B
//!    (B's rolegate was started before the VIP existed there and serves without a restart);
//!    prints `FIGURES keepalived: VIP moved in X ms`;
//! 3. A ready again → the preemption policy holds: no fail-back, the VIP stays on B;
//! 4. B's rolegate stopped → the VIP returns to A (a ready backup takes over from an unready
//!    holder);
//! 5. both unready → the VIP stays where it is (no flapping while the database itself fails
//!    over);
//! 6. keepalived stopped on the holder (maintenance) → the peer takes the VIP at once.
//!
//! Needs root, `ip` (iproute2) and keepalived (`apt-get install keepalived`;
//! `bash loadtest/test.sh` installs both). Only addresses from 198.18.0.0/15 are used, only
//! inside namespaces this test creates (unique names, deleted on exit, even on failure). Every
//! wait polls a condition against a deadline; every process started is stopped by pid.

use std::fs::{self, File};
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rolegate::ops::probe_cli::{probe, ProbeUrl};

use crate::support::require;

const KEEPALIVED_HINT: &str = "keepalived is not installed: apt-get install keepalived \
     (with a policy-rc.d that exits 101 so that no service starts), or run the test command \
     `bash loadtest/test.sh`, which installs it";

const A_ADDR: &str = "198.18.0.2";
const B_ADDR: &str = "198.18.0.3";
const CLIENT_ADDR: &str = "198.18.0.1";
const VIP: &str = "198.18.0.100";
const BACKEND: &str = "198.19.0.10:5432";
const VIP_PORT: u16 = 5432;
const READYZ: &str = "http://127.0.0.1:9813/readyz";

/// rolegate's check settings in this test (its defaults, written out): the VIP-move bound is
/// computed from them and from the shipped keepalived.conf.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
const CHECK_FALL: u32 = 2;

/// keepalived's path (found by `require::tool` at the test's start).
fn keepalived_binary() -> PathBuf {
    require::find_tool(
        "keepalived",
        &[
            "/usr/sbin/keepalived",
            "/sbin/keepalived",
            "/usr/local/sbin/keepalived",
        ],
    )
    .unwrap_or_else(|| panic!("{KEEPALIVED_HINT}"))
}

/// Runs a short command with a deadline; panics with its output when it fails.
fn run(args: &[&str]) -> String {
    try_run(args).unwrap_or_else(|e| panic!("{e}"))
}

fn try_run(args: &[&str]) -> Result<String, String> {
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {args:?}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{args:?} did not finish within 10 s"));
            }
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{args:?} failed ({}): {}{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Runs `f` on a thread that has entered network namespace `ns` (`setns` affects only that
/// thread; sockets it creates stay in `ns`).
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: setns(2) with a valid namespace fd, owned by `file` for the call's duration;
        // it changes the network namespace of this (short-lived) thread only.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// A process we started, stopped by pid.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    /// keepalived's VRRP child, which keepalived starts itself: killed by pid if it outlives
    /// its parent.
    child_pidfile: Option<PathBuf>,
    /// Stopped on purpose by the test.
    stopped: bool,
}

fn signal(pid: u32, sig: i32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) on a pid of a process we started (or its recorded child); no memory.
    unsafe { libc::kill(pid, sig) == 0 }
}

impl Proc {
    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            signal(self.child.id(), libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(pidfile) = &self.child_pidfile {
            let pid = fs::read_to_string(pidfile)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            if let Some(pid) = pid {
                let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if comm.trim() == "keepalived" {
                    signal(pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// The namespaces, processes and files of one run; `Drop` tears everything down.
struct Lab {
    ns_sw: String,
    ns_a: String,
    ns_b: String,
    created: Vec<String>,
    procs: Vec<Proc>,
    dir: tempfile::TempDir,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        // keepalived first (it removes the VIP), then rolegate, then the backend.
        for p in self.procs.iter_mut().rev() {
            p.stop();
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
        for ns in self.created.drain(..).rev() {
            if let Err(e) = try_run(&["ip", "netns", "delete", &ns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

impl Lab {
    fn new() -> Lab {
        // SAFETY: geteuid(2) has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "the keepalived test needs root (network namespaces); CI runs it as root via bash loadtest/test.sh"
        );
        let base = format!("rgka-{}", std::process::id());
        let existing = run(&["ip", "netns", "list"]);
        let mut lab = Lab {
            ns_sw: format!("{base}-sw"),
            ns_a: format!("{base}-a"),
            ns_b: format!("{base}-b"),
            created: Vec::new(),
            procs: Vec::new(),
            dir: tempfile::Builder::new()
                .prefix("rolegate-keepalived-")
                .tempdir()
                .expect("temp dir"),
            runtime: None,
        };
        for ns in [lab.ns_sw.clone(), lab.ns_a.clone(), lab.ns_b.clone()] {
            assert!(
                !existing
                    .lines()
                    .any(|l| l.split_whitespace().next() == Some(ns.as_str())),
                "network namespace {ns} already exists"
            );
            run(&["ip", "netns", "add", &ns]);
            lab.created.push(ns.clone());
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        }
        let sw = lab.ns_sw.clone();
        run(&["ip", "-n", &sw, "link", "add", "br0", "type", "bridge"]);
        run(&["ip", "-n", &sw, "link", "set", "br0", "up"]);
        run(&[
            "ip",
            "-n",
            &sw,
            "addr",
            "add",
            &format!("{CLIENT_ADDR}/24"),
            "dev",
            "br0",
        ]);
        let backend_ip = BACKEND.split(':').next().unwrap_or_default();
        run(&[
            "ip",
            "-n",
            &sw,
            "addr",
            "add",
            &format!("{backend_ip}/32"),
            "dev",
            "lo",
        ]);
        for (ns, port, addr) in [
            (lab.ns_a.clone(), "va", A_ADDR),
            (lab.ns_b.clone(), "vb", B_ADDR),
        ] {
            run(&[
                "ip", "-n", &sw, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            run(&["ip", "-n", &sw, "link", "set", port, "master", "br0", "up"]);
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            run(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            run(&[
                "ip",
                "-n",
                &ns,
                "route",
                "add",
                "198.19.0.0/24",
                "via",
                CLIENT_ADDR,
            ]);
        }
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The backend in the switch namespace: greets every connection with the proxy it came
    /// through (`backend via 198.18.0.2`), then closes.
    fn start_backend(&mut self) {
        let addr: SocketAddr = BACKEND.parse().expect("backend addr");
        let listener = in_netns(&self.ns_sw, move || {
            let l = std::net::TcpListener::bind(addr).expect("bind backend in its namespace");
            l.set_nonblocking(true).expect("nonblocking");
            l
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.spawn(async move {
            use tokio::io::AsyncWriteExt;
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            loop {
                let Ok((mut stream, peer)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let greeting = format!("backend via {}\n", peer.ip());
                    let _ = stream.write_all(greeting.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        self.runtime = Some(rt);
    }

    fn spawn(&mut self, name: &str, ns: &str, program: &Path, args: &[&str]) {
        let log = self.path(&format!("{name}.log"));
        let out = File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let child_pidfile =
            (name.starts_with("keepalived")).then(|| self.path(&format!("{name}-vrrp.pid")));
        self.procs.push(Proc {
            name: name.to_string(),
            child,
            log,
            child_pidfile,
            stopped: false,
        });
    }

    fn start_rolegate(&mut self, host: char) {
        let config = format!(
            "# rolegate on proxy host {host}: the listener is bound to the VIP on both hosts.\n\
             admin: {{ listen: 127.0.0.1:9813 }}\n\
             clusters:\n\
             \x20 - name: db\n\
             \x20   protocol: tcp\n\
             \x20   check: {{ interval: {}ms, timeout: 1s, rise: 2, fall: {CHECK_FALL} }}\n\
             \x20   backends:\n\
             \x20     - {{ name: db-1, address: \"{BACKEND}\" }}\n\
             listeners:\n\
             \x20 - {{ name: db, bind: \"{VIP}:{VIP_PORT}\", cluster: db, role: primary, queue_timeout: 0s }}\n",
            CHECK_INTERVAL.as_millis()
        );
        let path = self.path(&format!("rolegate-{host}.yaml"));
        fs::write(&path, config).expect("write rolegate config");
        let ns = self.ns(host);
        let path = path.to_string_lossy().into_owned();
        self.spawn(
            &format!("rolegate-{host}"),
            &ns,
            Path::new(env!("CARGO_BIN_EXE_rolegate")),
            &["--config", &path],
        );
    }

    /// The shipped keepalived.conf with the settings block pointed at this lab, and private
    /// root-owned copies of the scripts (keepalived's `enable_script_security` refuses scripts
    /// under paths that others can write to).
    fn write_keepalived_conf(&self) -> (PathBuf, String) {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/keepalived");
        let text = fs::read_to_string(shipped.join("keepalived.conf")).expect("keepalived.conf");
        let bin = self.path("rolegate");
        fs::copy(env!("CARGO_BIN_EXE_rolegate"), &bin).expect("copy rolegate");
        let notify = self.path("rolegate-notify.sh");
        fs::copy(shipped.join("rolegate-notify.sh"), &notify).expect("copy notify script");
        for f in [&bin, &notify] {
            fs::set_permissions(f, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let settings = [
            ("IFACE", "eth0".to_string()),
            ("PROXY_A", A_ADDR.to_string()),
            ("PROXY_B", B_ADDR.to_string()),
            ("VIP", format!("{VIP}/24")),
            ("VRID", "51".to_string()),
            ("ROLEGATE", bin.display().to_string()),
            ("READYZ", READYZ.to_string()),
            ("NOTIFY", notify.display().to_string()),
            ("NOTIFY_LOG", self.path("notify.log").display().to_string()),
            ("SCRIPT_USER", "root".to_string()),
        ];
        let mut out = String::new();
        let mut replaced = Vec::new();
        for line in text.lines() {
            let setting = settings
                .iter()
                .find(|(name, _)| line.starts_with(&format!("${name}=")));
            match setting {
                Some((name, value)) => {
                    out.push_str(&format!("${name}={value}\n"));
                    replaced.push(*name);
                }
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        for (name, _) in &settings {
            assert_eq!(
                replaced.iter().filter(|n| *n == name).count(),
                1,
                "config/keepalived/keepalived.conf must define ${name}= exactly once"
            );
        }
        let path = self.path("keepalived.conf");
        fs::write(&path, out).expect("write keepalived.conf");
        (path, text)
    }

    fn start_keepalived(&mut self, host: char, conf: &Path) {
        let name = format!("keepalived-{host}");
        let id = format!("proxy-{}", host);
        let pid = self.path(&format!("{name}.pid"));
        let vrrp_pid = self.path(&format!("{name}-vrrp.pid"));
        let (conf, pid, vrrp_pid) = (
            conf.display().to_string(),
            pid.display().to_string(),
            vrrp_pid.display().to_string(),
        );
        let ns = self.ns(host);
        self.spawn(
            &name,
            &ns,
            &keepalived_binary(),
            &[
                "--dont-fork",
                "--log-console",
                "--log-detail",
                "--no-syslog",
                "--vrrp",
                "--config-id",
                &id,
                "--use-file",
                &conf,
                "--pid",
                &pid,
                "--vrrp_pid",
                &vrrp_pid,
            ],
        );
    }

    /// Stops one process by pid (SIGTERM, then SIGKILL after 5 s).
    fn stop(&mut self, name: &str) {
        let p = self
            .procs
            .iter_mut()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no process {name}"));
        p.stop();
        p.stopped = true;
    }

    fn ns(&self, host: char) -> String {
        match host {
            'a' => self.ns_a.clone(),
            _ => self.ns_b.clone(),
        }
    }

    /// Whether the VIP is configured in `host`'s namespace.
    fn has_vip(&self, host: char) -> bool {
        let out = run(&[
            "ip",
            "-n",
            &self.ns(host),
            "-4",
            "-o",
            "addr",
            "show",
            "dev",
            "eth0",
        ]);
        out.contains(&format!(" {VIP}/"))
    }

    /// `Some('a')` / `Some('b')` when exactly that host has the VIP.
    fn vip_holder(&self) -> Option<char> {
        match (self.has_vip('a'), self.has_vip('b')) {
            (true, false) => Some('a'),
            (false, true) => Some('b'),
            _ => None,
        }
    }

    fn ready(&self, host: char) -> bool {
        let url = ProbeUrl::parse(READYZ).expect("url");
        in_netns(&self.ns(host), move || {
            probe(&url, Duration::from_millis(500)).is_ok_and(|r| r.is_success())
        })
    }

    /// One client connection through the VIP from the switch namespace: the proxy host it
    /// went through (`'a'`/`'b'`), or why it failed.
    fn client(&self) -> Result<char, String> {
        let vip: SocketAddr = format!("{VIP}:{VIP_PORT}").parse().expect("vip");
        let got = in_netns(&self.ns_sw, move || -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&vip, Duration::from_millis(500))?;
            s.set_read_timeout(Some(Duration::from_millis(1000)))?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok(text)
        })
        .map_err(|e| e.to_string())?;
        match got.trim() {
            t if t == format!("backend via {A_ADDR}") => Ok('a'),
            t if t == format!("backend via {B_ADDR}") => Ok('b'),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    fn set_unready(&self, host: char, unready: bool) {
        let backend_ip = BACKEND.split(':').next().unwrap_or_default();
        let op = if unready { "add" } else { "del" };
        run(&[
            "ip",
            "-n",
            &self.ns(host),
            "route",
            op,
            "unreachable",
            &format!("{backend_ip}/32"),
        ]);
    }

    fn notify_log(&self) -> String {
        fs::read_to_string(self.path("notify.log")).unwrap_or_default()
    }

    fn log(&self, name: &str) -> String {
        fs::read_to_string(self.path(&format!("{name}.log"))).unwrap_or_default()
    }

    /// Polls `cond` every 20 ms until it holds; panics after `limit`. Returns when it held.
    fn wait(&self, limit: Duration, what: &str, mut cond: impl FnMut(&Lab) -> bool) -> Instant {
        let deadline = Instant::now() + limit;
        loop {
            if cond(self) {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "not within {limit:?}: {what}\nnotify log:\n{}",
                self.notify_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asserts that `cond` holds at every poll during `window` (a non-event, such as "the VIP
    /// does not move", can only be watched for a while).
    fn holds_for(&self, window: Duration, what: &str, mut cond: impl FnMut(&Lab) -> bool) {
        let end = Instant::now() + window;
        while Instant::now() < end {
            assert!(cond(self), "{what} stopped holding");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn dump_logs(&self) {
        for p in &self.procs {
            let text = fs::read_to_string(&p.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("---- {} (last lines) ----", p.name);
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        eprintln!("---- notify log ----\n{}", self.notify_log());
    }
}

/// `key N` inside the `block {` of a keepalived.conf (seconds or a plain number).
fn conf_number(text: &str, block: &str, key: &str) -> f64 {
    let start = text
        .find(&format!("{block} "))
        .unwrap_or_else(|| panic!("keepalived.conf has no {block} block"));
    text[start..]
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .take_while(|l| *l != "}")
        .find_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some(key)).then(|| words.next()?.parse::<f64>().ok())?
        })
        .unwrap_or_else(|| panic!("keepalived.conf: no `{key}` in {block}"))
}

/// Count of lines in keepalived's log saying its priority changed `from` → `to`.
fn priority_changes(log: &str, from: u32, to: u32) -> usize {
    log.matches(&format!("Changing effective priority from {from} to {to}"))
        .count()
}

#[test]
fn keepalived_moves_the_vip_to_the_ready_rolegate_host() {
    let Some(_root) = require::root() else {
        return;
    };
    let (Some(_), Some(_)) = (
        require::tool(
            "keepalived",
            &[
                "/usr/sbin/keepalived",
                "/sbin/keepalived",
                "/usr/local/sbin/keepalived",
            ],
            "keepalived",
        ),
        require::tool("ip", &["/usr/sbin/ip", "/sbin/ip"], "iproute2"),
    ) else {
        return;
    };
    let mut lab = Lab::new();
    lab.start_backend();
    let (conf, shipped) = lab.write_keepalived_conf();

    // The bound for a move, from the configuration: rolegate notices (check interval x fall),
    // keepalived's probe notices (interval x fall), then the peer takes over when its
    // master-down timer expires (3 x advert_int + skew < 1 s); plus 1.5 s for process starts
    // and scheduling on a busy CI machine.
    let script_interval = conf_number(&shipped, "vrrp_script", "interval");
    let script_fall = conf_number(&shipped, "vrrp_script", "fall");
    let script_rise = conf_number(&shipped, "vrrp_script", "rise");
    let advert = conf_number(&shipped, "vrrp_instance", "advert_int");
    let priority = conf_number(&shipped, "vrrp_instance", "priority") as u32;
    let weight = conf_number(&shipped, "vrrp_script", "weight");
    let lowered = (f64::from(priority) + weight) as u32;
    let move_bound = CHECK_INTERVAL.mul_f64(f64::from(CHECK_FALL))
        + Duration::from_secs_f64(script_interval * script_fall + 3.0 * advert + 1.0 + 1.5);

    // rolegate first on both hosts: B's listener binds the VIP although B does not have it.
    lab.start_rolegate('a');
    lab.start_rolegate('b');
    lab.wait(Duration::from_secs(20), "both rolegates ready", |l| {
        l.ready('a') && l.ready('b')
    });

    // 1. A's keepalived first: it takes the VIP. B's joins as BACKUP (equal priority).
    lab.start_keepalived('a', &conf);
    lab.wait(Duration::from_secs(15), "VIP on A", |l| {
        l.vip_holder() == Some('a')
    });
    lab.start_keepalived('b', &conf);
    lab.wait(
        Duration::from_secs(15),
        "B's keepalived in BACKUP state",
        |l| {
            l.notify_log()
                .contains("proxy-b INSTANCE rolegate_vip BACKUP")
        },
    );
    lab.wait(
        Duration::from_secs(5),
        "the notify script logged A's MASTER transition",
        |l| {
            l.notify_log()
                .contains("proxy-a INSTANCE rolegate_vip MASTER")
        },
    );
    lab.wait(
        Duration::from_secs(5),
        "a client through the VIP reaches the backend via A",
        |l| l.client() == Ok('a'),
    );

    // 2. A unready: the VIP moves to B, clients reach the backend via B.
    let t0 = Instant::now();
    lab.set_unready('a', true);
    let mut a_unready_at = None;
    let moved_at = lab.wait(move_bound + Duration::from_secs(5), "VIP moved to B", |l| {
        if a_unready_at.is_none() && !l.ready('a') {
            a_unready_at = Some(Instant::now());
        }
        l.vip_holder() == Some('b')
    });
    let served_at = lab.wait(
        Duration::from_secs(5),
        "a client through the VIP reaches the backend via B",
        |l| l.client() == Ok('b'),
    );
    let moved = moved_at - t0;
    eprintln!(
        "FIGURES keepalived: VIP moved in {} ms (A's rolegate unready after {} ms; first client through B after {} ms; bound from the config {} ms)",
        moved.as_millis(),
        a_unready_at.map_or(0, |t| (t - t0).as_millis()),
        (served_at - t0).as_millis(),
        move_bound.as_millis(),
    );
    assert!(
        moved <= move_bound,
        "the VIP moved in {moved:?}, more than the configured {move_bound:?}"
    );
    // keepalived runs the notify script after it has taken the VIP: wait for the line.
    let master_b = format!("proxy-b INSTANCE rolegate_vip MASTER priority={priority}");
    lab.wait(
        Duration::from_secs(5),
        "the notify script logged B's MASTER transition",
        |l| l.notify_log().contains(&master_b),
    );

    // 3. A ready again: its keepalived restores its priority (after `rise` probes); with equal
    //    priorities it does not preempt B. Watched for longer than B's adverts take to reach A
    //    (a preempting A would take over at the first one).
    lab.set_unready('a', false);
    lab.wait(Duration::from_secs(10), "A's rolegate ready again", |l| {
        l.ready('a')
    });
    let restore_limit = Duration::from_secs_f64(script_interval * (script_rise + 1.0) + 5.0);
    lab.wait(restore_limit, "A's keepalived restored its priority", |l| {
        priority_changes(&l.log("keepalived-a"), lowered, priority) >= 1
    });
    lab.holds_for(
        Duration::from_secs_f64(3.0 * advert),
        "no fail-back: the VIP stays on B after A is ready again",
        |l| l.vip_holder() == Some('b'),
    );
    assert_eq!(lab.client(), Ok('b'));

    // 4. B's rolegate stopped: its probe fails (nothing answers), so the ready A takes the VIP.
    let t1 = Instant::now();
    lab.stop("rolegate-b");
    let back_at = lab.wait(move_bound + Duration::from_secs(5), "VIP back on A", |l| {
        l.vip_holder() == Some('a')
    });
    lab.wait(
        Duration::from_secs(5),
        "a client through the VIP reaches the backend via A",
        |l| l.client() == Ok('a'),
    );
    eprintln!(
        "FIGURES keepalived: VIP moved back to A in {} ms after B's rolegate was stopped",
        (back_at - t1).as_millis()
    );
    assert!(back_at - t1 <= move_bound);

    // 5. Both unready (as while the database itself fails over): equal lowered priorities, so
    //    the VIP stays on A instead of flapping or disappearing.
    let drops_before = priority_changes(&lab.log("keepalived-a"), priority, lowered);
    lab.set_unready('a', true);
    lab.wait(move_bound, "A's keepalived lowered its priority", |l| {
        priority_changes(&l.log("keepalived-a"), priority, lowered) > drops_before
    });
    lab.holds_for(
        Duration::from_secs_f64(3.0 * advert + 1.0),
        "with both hosts unready the VIP stays on A",
        |l| l.vip_holder() == Some('a'),
    );

    // 6. keepalived stopped on the holder (maintenance): it gives the VIP up and sends a
    //    priority-0 advert, so the peer takes over at once instead of after its timeout.
    let t2 = Instant::now();
    lab.stop("keepalived-a");
    let handed_at = lab.wait(
        Duration::from_secs_f64(3.0 * advert + 2.0),
        "VIP on B",
        |l| l.vip_holder() == Some('b'),
    );
    eprintln!(
        "FIGURES keepalived: VIP moved to B in {} ms after keepalived was stopped on A",
        (handed_at - t2).as_millis()
    );

    for p in &mut lab.procs {
        assert!(
            p.stopped || matches!(p.child.try_wait(), Ok(None)),
            "{} exited during the test",
            p.name
        );
    }
}
