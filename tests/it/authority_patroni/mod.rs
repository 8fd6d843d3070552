//! Patroni as an authority (`authority: { patroni: ... }`), against real components:
//!
//! - [`following`]: the lab's Patroni pair (Debian's Patroni 3.0 on the lab's etcd):
//!   `patronictl`'s REST switchover under a write loop (rolegate follows the leader key, the
//!   failover key holds new connections: none fails) and a killed Patroni primary (followed);
//! - [`leader_key`]: the lab's own PostgreSQL pair with an authority whose keys a test writes
//!   into the lab's etcd by hand: a leader key naming the replica (checks and authority
//!   disagree: not routed, reported), naming no backend (not routed, clear error), a failover
//!   key (held);
//! - [`unreachable`]: an authority at a closed port: each `on_authority_lost` policy does
//!   what it says;
//! - [`reload`]: the real binary gains, changes and loses an authority by reloads (the
//!   source task is started, restarted and stopped with the config);
//! - [`timing`]: Patroni's dynamic configuration key: `/status` shows the `ttl`/`loop_wait`
//!   Patroni uses, a primary listener queuing for less than their sum is warned about, an
//!   absent or garbage key is reported without touching routing.
//!
//! This file is the shared harness: the lab's pieces, rolegate configs, the authority's
//! `/status`, and keys written by hand. Tests that move Patroni's roles hold the lab lock and
//! put Patroni back (A leads) at their end, also when they fail.

mod following;
mod leader_key;
mod reload;
mod session;
mod timing;
mod unreachable;

use std::net::SocketAddr;
use std::time::Duration;

use crate::support;
use support::lab::{self, wall, Engine};
use support::{db, metric_value, require, Proxy};

use rolegate::control_plane::supervisor::AuthorityStatus;

// === the lab's pieces ===

/// The TCP connections process `pid` holds to any of `ports`, as socket inodes: its
/// `/proc/PID/fd` sockets matched against `/proc/PID/net/tcp{,6}` by remote port. Only that
/// process's connections, not the test's own etcd client.
fn tcp_sockets_to(pid: u32, ports: &[u16]) -> std::collections::HashSet<String> {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|target| {
                    let t = target.to_string_lossy();
                    Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(format!("/proc/{pid}/net/{t}")).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    let remote_port = f
                        .get(2)
                        .and_then(|r| r.rsplit(':').next())
                        .and_then(|p| u16::from_str_radix(p, 16).ok());
                    let inode = f.get(9).filter(|i| inodes.contains(**i))?;
                    remote_port
                        .is_some_and(|p| ports.contains(&p))
                        .then(|| inode.to_string())
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// How many of those connections there are.
fn tcp_connections_to(pid: u32, ports: &[u16]) -> usize {
    tcp_sockets_to(pid, ports).len()
}

fn etcd_endpoints() -> Vec<String> {
    lab::addresses("etcd")
        .iter()
        .map(|a| format!("http://{a}"))
        .collect()
}

fn patroni_setting(key: &str) -> String {
    lab::env()
        .engines
        .get("patroni")
        .and_then(|e| e.settings.get(key))
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("`lab.sh env --json` has no patroni {key}"))
        .to_string()
}

fn patroni_addr(node: &str) -> SocketAddr {
    lab::node("patroni", node).address
}

/// Which Patroni node leads now ("A" or "B"), as the lab sees it.
fn patroni_leader() -> Option<String> {
    let s = lab::status();
    ["A", "B"]
        .into_iter()
        .find(|n| s["patroni"][n]["role"] == "primary")
        .map(str::to_string)
}

async fn lab_sh(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        lab::run(&a)
    })
    .await
    .expect("lab.sh task")
}

/// Puts Patroni back (A leads, B streams) when a test fails half-way.
struct ResetPatroniOnPanic;

impl Drop for ResetPatroniOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = std::panic::catch_unwind(|| lab::run(&["reset", "patroni"]));
        }
    }
}

/// A leads and B streams from it, whatever an earlier test left.
async fn patroni_canonical() {
    if patroni_leader().as_deref() != Some("A") {
        lab_sh(&["reset", "patroni"]).await;
    }
}

// === rolegate ===

fn authority_yaml(etcd: &[String], namespace: &str, scope: &str) -> String {
    format!(
        "authority: {{ patroni: {{ etcd: {{ endpoints: {etcd:?} }}, namespace: \"{namespace}\", scope: \"{scope}\" }} }}"
    )
}

/// One postgres cluster `name` over `a`/`b` (Patroni members A and B) with `extra` keys
/// (the authority), served by `rw_<name>` (primary, waiting `queue` for a route) and
/// `ro_<name>` (replica).
struct ClusterYaml {
    name: &'static str,
    a: SocketAddr,
    b: SocketAddr,
    extra: String,
    queue: &'static str,
}

fn config_yaml(clusters: &[ClusterYaml]) -> String {
    let pw = lab::monitor_password();
    let mut text = String::from("admin: { listen: 127.0.0.1:0 }\nclusters:\n");
    for c in clusters {
        // The mapping only with a Patroni authority: the config refuses it otherwise.
        let member = |m: &str| match c.extra.contains("patroni:") {
            true => format!(", patroni_member: {m}"),
            false => String::new(),
        };
        text.push_str(&format!(
            "  - name: {name}
    protocol: postgres
    check: {{ user: rolegate_monitor, password: \"{pw}\", database: postgres }}
    {extra}
    backends:
      - {{ name: a, address: \"{a}\"{ma} }}
      - {{ name: b, address: \"{b}\"{mb} }}
",
            name = c.name,
            extra = c.extra,
            ma = member("A"),
            mb = member("B"),
            a = c.a,
            b = c.b,
        ));
    }
    text.push_str("listeners:\n");
    for c in clusters {
        text.push_str(&format!(
            "  - {{ name: rw_{name}, bind: \"127.0.0.1:0\", cluster: {name}, role: primary, queue_timeout: {queue} }}\n  - {{ name: ro_{name}, bind: \"127.0.0.1:0\", cluster: {name}, role: replica }}\n",
            name = c.name,
            queue = c.queue,
        ));
    }
    text
}

fn authority(proxy: &Proxy, cluster: &str) -> AuthorityStatus {
    let s = proxy.app.supervisor().status.load_full();
    s.clusters
        .iter()
        .find(|c| c.name == cluster)
        .and_then(|c| c.authority.clone())
        .unwrap_or_else(|| panic!("cluster {cluster} has no authority in /status"))
}

async fn wait_authority(
    proxy: &Proxy,
    cluster: &str,
    what: &str,
    pred: impl Fn(&AuthorityStatus) -> bool,
) {
    support::eventually(Duration::from_secs(30), what, || {
        let ok = pred(&authority(proxy, cluster));
        async move { ok }
    })
    .await;
}

fn events(proxy: &Proxy, cluster: &str, event: &str) -> f64 {
    let prefix =
        format!("rolegate_authority_events_total{{cluster=\"{cluster}\",event=\"{event}\",kind=\"patroni\"}}");
    metric_value(&proxy.metrics(), &prefix).unwrap_or(0.0)
}

// === keys written by hand into the lab's etcd, over the lab's PostgreSQL pair ===

struct HandKeys {
    client: etcd_client::Client,
    namespace: String,
    scope: String,
}

impl HandKeys {
    async fn new() -> HandKeys {
        let client = etcd_client::Client::connect(etcd_endpoints(), None)
            .await
            .expect("connect to the lab's etcd");
        let namespace = format!("/rolegate-test-{}-{}", std::process::id(), wall() as u64);
        HandKeys {
            client,
            namespace,
            scope: "hand".into(),
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}/{}/{name}", self.namespace, self.scope)
    }

    async fn put(&mut self, name: &str, value: &str) {
        let key = self.key(name);
        self.client.put(key, value, None).await.expect("etcd put");
    }

    async fn delete(&mut self, name: &str) {
        let key = self.key(name);
        self.client.delete(key, None).await.expect("etcd delete");
    }

    async fn cleanup(mut self) {
        let opts = etcd_client::DeleteOptions::new().with_prefix();
        let _ = self.client.delete(self.namespace.clone(), Some(opts)).await;
    }
}

impl Drop for HandKeys {
    /// A test that fails half-way leaves no key behind either (`etcdctl`, as there is no
    /// async drop); `cleanup` already deleted them otherwise.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = std::process::Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={}", etcd_endpoints().join(",")))
                .args(["del", "--prefix", &self.namespace])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}
