//! A "network node": a namespace of its own joined to the test's (root) namespace by a veth
//! pair, with nftables rules inside it that the test switches on and off to drop, lose or reset
//! packets between rolegate and whatever listens in the namespace.
//!
//! ```text
//!   root namespace (rolegate, the test)          namespace rgf-<pid>-<n>
//!   rgf<n>h 198.19.<200+n>.1/30  ── veth ──  rgf<n>n 198.19.<200+n>.2/30
//!                                                   │ nft table inet rgfault: drop / loss / reset
//!                                                   └ listeners (relays to the lab, silent ones)
//! ```
//!
//! Every packet rolegate exchanges with an address of the node crosses the veth and the
//! node's `input`/`output` hooks, so a drop rule is a real partition (silence, retransmissions,
//! timeouts), not a refused connection. Addresses come from 198.18.0.0/15 (RFC 2544, reserved
//! for benchmarks) only. The kernel here has no `sch_netem` (`tc qdisc add … netem` answers
//! "Specified qdisc kind is unknown"), so delay is the relay's job and loss is an nftables
//! `numgen random` rule — see docs/reliability.md.
//!
//! `Drop` deletes the namespace (which removes both veth ends). Namespaces left behind by a
//! killed test run are deleted on the next run (their name carries the pid).

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};

/// Per-process node counter: the third octet of the node's /30.
static NEXT: AtomicU8 = AtomicU8::new(0);

pub struct Node {
    pub ns: String,
    /// The root namespace's end (rolegate's side).
    pub host_ip: Ipv4Addr,
    /// The address inside the namespace, where listeners bind.
    pub ip: Ipv4Addr,
}

/// Runs a command, panicking with its output on failure.
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e} (is iproute2/nftables installed?)"));
    assert!(
        out.status.success(),
        "{args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `name` (`rgf-<pid>-<n>`) belongs to a test process that is gone.
fn is_stale(name: &str) -> bool {
    name.strip_prefix("rgf-")
        .and_then(|rest| rest.split('-').next())
        .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
}

/// Deletes what killed or failed runs left behind: `rgf-<pid>-*` namespaces, and root-side
/// veth ends (their alias is the namespace name) whose namespace lingers unnamed — the kernel
/// keeps a deleted namespace alive while something still references it.
fn remove_stale() {
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if is_stale(name) {
                let _ = Command::new("ip").args(["netns", "delete", name]).status();
            }
        }
    }
    if let Ok(out) = Command::new("ip").args(["-o", "link", "show"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut words = line.split_whitespace();
            let dev = words.nth(1).unwrap_or_default().trim_end_matches(':');
            let dev = dev.split('@').next().unwrap_or_default();
            let alias = line.split(" alias ").nth(1).unwrap_or_default();
            let alias = alias.split_whitespace().next().unwrap_or_default();
            if dev.starts_with("rgf") && is_stale(alias) {
                let _ = Command::new("ip").args(["link", "delete", dev]).status();
            }
        }
    }
}

impl Node {
    /// Creates the namespace, the veth pair and an empty nftables table (with its chains)
    /// inside the namespace.
    pub fn new() -> Node {
        super::require::root_or_fail("network fault injection");
        remove_stale();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < 50, "too many fault nodes in one test process");
        let octet = 200 + n;
        let ns = format!("rgf-{}-{n}", std::process::id());
        let (host_if, ns_if) = (format!("rgf{n}h"), format!("rgf{n}n"));
        let node = Node {
            ns: ns.clone(),
            host_ip: Ipv4Addr::new(198, 19, octet, 1),
            ip: Ipv4Addr::new(198, 19, octet, 2),
        };
        run(&["ip", "netns", "add", &ns]);
        // From here on, Drop cleans up even if a later step fails.
        let host_cidr = format!("{}/30", node.host_ip);
        let ns_cidr = format!("{}/30", node.ip);
        run(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if, "netns", &ns,
        ]);
        run(&["ip", "link", "set", "dev", &host_if, "alias", &ns]);
        run(&["ip", "addr", "add", &host_cidr, "dev", &host_if]);
        run(&["ip", "link", "set", &host_if, "up"]);
        run(&["ip", "-n", &ns, "addr", "add", &ns_cidr, "dev", &ns_if]);
        run(&["ip", "-n", &ns, "link", "set", &ns_if, "up"]);
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        node.nft(
            "add table inet rgfault\n\
             add chain inet rgfault input { type filter hook input priority 0; policy accept; }\n\
             add chain inet rgfault output { type filter hook output priority 0; policy accept; }\n",
        );
        node
    }

    /// Runs an nftables script inside the namespace.
    pub fn nft(&self, script: &str) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("nft (apt-get install nftables; loadtest/test.sh does)");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin
                .write_all(script.as_bytes())
                .expect("write nft script");
        }
        let out = child.wait_with_output().expect("nft");
        assert!(
            out.status.success(),
            "nft in {} failed: {}\n{script}",
            self.ns,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Removes every fault rule: traffic flows again.
    pub fn heal(&self) {
        self.nft("flush chain inet rgfault input\nflush chain inet rgfault output\n");
    }

    /// Drops every packet in and out of the node: a partition. Established connections go
    /// silent (no RST, no FIN), new connects get no SYN-ACK.
    pub fn partition(&self) {
        self.heal();
        self.nft(
            "add rule inet rgfault input iifname != \"lo\" drop\n\
             add rule inet rgfault output oifname != \"lo\" drop\n",
        );
    }

    /// Drops `percent` % of packets at random in each direction.
    pub fn loss(&self, percent: u8) {
        self.heal();
        self.nft(&format!(
            "add rule inet rgfault input iifname != \"lo\" numgen random mod 100 < {percent} counter drop\n\
             add rule inet rgfault output oifname != \"lo\" numgen random mod 100 < {percent} counter drop\n"
        ));
    }

    /// Packets dropped so far by rules with a counter (the loss rules).
    pub fn dropped(&self) -> u64 {
        let out = run(&[
            "ip", "netns", "exec", &self.ns, "nft", "list", "table", "inet", "rgfault",
        ]);
        out.split("counter packets ")
            .skip(1)
            .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    /// Answers every packet of an established TCP connection to `port` with a RST (new
    /// connections still pass): sessions are reset mid-stream, by the kernel.
    pub fn reset_established(&self, port: u16) {
        self.heal();
        self.nft(&format!(
            "add rule inet rgfault input iifname != \"lo\" tcp dport {port} ct state established reject with tcp reset\n"
        ));
    }

    /// Runs `f` on a thread that has entered the namespace (`setns` affects that thread
    /// only); sockets it creates belong to the namespace for their whole life.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.ns);
        std::thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns(2) with a valid namespace fd owned by `file` for the call's
            // duration; it changes the network namespace of this short-lived thread only.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    /// A listening socket at `self.ip:port` inside the namespace, ready for tokio.
    pub fn listen(&self, port: u16) -> std::net::TcpListener {
        let addr = std::net::SocketAddr::from((self.ip, port));
        self.enter(move || {
            let l = std::net::TcpListener::bind(addr)
                .unwrap_or_else(|e| panic!("bind {addr} in the node: {e}"));
            l.set_nonblocking(true).expect("nonblocking");
            l
        })
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Err(e) = Command::new("ip")
            .args(["netns", "delete", &self.ns])
            .status()
        {
            eprintln!("cleanup of {}: {e}", self.ns);
        }
    }
}
