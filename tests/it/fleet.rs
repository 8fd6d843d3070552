//! Fleet mode against the lab's real 3-member etcd and its real Redis pair: observers check,
//! followers route by the leader's decisions, a killed or frozen leader is replaced, a frozen
//! leader's late write is refused, a garbage record is ignored.
//!
//! Self-contained (no `mod support`): instances are real `rolegate` processes (so they can be
//! killed and frozen), each stopped by its pid. Without etcd the tests print a SKIPPED line,
//! or fail when `ROLEGATE_TESTS_REQUIRE_ALL=1`.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use etcd_client::Client;
use rolegate::control_plane::fleet::keys::Keys;
use rolegate::control_plane::fleet::publisher::{self, Published as Outcome};
use rolegate::control_plane::fleet::record::DecisionRecord;
use tokio::time::Instant;

const LEASE_TTL_S: u64 = 3;

// === the lab ===

fn lab_sh(args: &[&str]) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("loadtest/lab.sh");
    let out = Command::new("bash")
        .arg(script)
        .args(args)
        .output()
        .expect("run lab.sh");
    assert!(
        out.status.success(),
        "lab.sh {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn lab_env() -> serde_json::Value {
    serde_json::from_str(&lab_sh(&["env", "--json"])).expect("lab.sh env --json")
}

fn addresses(env: &serde_json::Value, engine: &str) -> Vec<String> {
    env["engines"][engine]["nodes"]
        .as_object()
        .unwrap_or_else(|| panic!("lab topology has no {engine}"))
        .values()
        .map(|n| n["address"].as_str().expect("address").to_string())
        .collect()
}

/// The etcd endpoints, or None (after printing why) when the test must be skipped.
fn etcd_or_skip(test: &str) -> Option<Vec<String>> {
    let env = lab_env();
    let endpoints = addresses(&env, "etcd");
    let reachable = endpoints.iter().any(|a| {
        TcpStream::connect_timeout(&a.parse().expect("etcd address"), Duration::from_secs(1))
            .is_ok()
    });
    if reachable {
        return Some(endpoints.iter().map(|a| format!("http://{a}")).collect());
    }
    let hint = "needs the lab's etcd; run: bash loadtest/lab.sh up etcd";
    if std::env::var("ROLEGATE_TESTS_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{test}: {hint}");
    }
    eprintln!("SKIPPED {test}: {hint}");
    None
}

/// Serialises with every other test that changes lab roles (same file as tests/support/lab.rs).
struct LabLock(#[allow(dead_code)] File);

fn lab_lock() -> LabLock {
    let path = std::env::temp_dir().join("rolegate-lab-tests.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .expect("open lab test lock");
    file.lock().expect("lock lab test lock");
    LabLock(file)
}

/// Redis's current primary node name ("A" or "B") as the lab sees it.
fn redis_primary() -> String {
    let v: serde_json::Value =
        serde_json::from_str(&lab_sh(&["status", "redis", "--json"])).expect("status json");
    ["A", "B"]
        .into_iter()
        .find(|n| v["redis"][n]["role"] == "primary")
        .expect("redis has a primary")
        .to_string()
}

async fn switchover_redis() {
    tokio::task::spawn_blocking(|| lab_sh(&["switchover", "redis", "--json"]))
        .await
        .expect("switchover");
}

struct ResetOnPanic;

impl Drop for ResetOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = std::panic::catch_unwind(|| lab_sh(&["reset", "redis"]));
        }
    }
}

// === instances ===

struct Instance {
    name: String,
    child: Child,
    admin: SocketAddr,
    log: PathBuf,
}

impl Instance {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {}", self.pid());
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Redis primary as this instance's /status says (None if no primary or no answer).
    fn primary(&self) -> Option<String> {
        let status = http_get(self.admin, "/status")?;
        let v: serde_json::Value = serde_json::from_str(&status).ok()?;
        v["clusters"][0]["primary"].as_str().map(str::to_string)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

struct Fleet {
    dir: tempfile::TempDir,
    prefix: String,
    endpoints: Vec<String>,
    env: serde_json::Value,
}

impl Drop for Fleet {
    /// The test's keys go with it (instance keys expire with their leases; decisions stay).
    fn drop(&mut self) {
        let _ = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints.join(",")))
            .args(["del", "--prefix", &self.prefix])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Fleet {
    fn new(endpoints: Vec<String>, test: &str) -> Fleet {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Fleet {
            dir: tempfile::tempdir().expect("tempdir"),
            prefix: format!("/rolegate-tests/{test}-{}-{nanos}", std::process::id()),
            endpoints,
            env: lab_env(),
        }
    }

    fn keys(&self) -> Keys {
        Keys::new(&self.prefix)
    }

    fn start(&self, name: &str, mode: &str) -> Instance {
        self.start_with(name, mode, &self.endpoints, "local")
    }

    fn start_with(&self, name: &str, mode: &str, endpoints: &[String], on_lost: &str) -> Instance {
        let redis = addresses(&self.env, "redis");
        let password = self.env["passwords"]["monitor"].as_str().expect("password");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let endpoints = endpoints
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let yaml = format!(
            "admin: {{ listen: \"{admin}\" }}
clusters:
  - name: r
    protocol: redis
    check: {{ password: \"{password}\", interval: 250ms }}
    backends: [ {{ name: A, address: \"{a}\" }}, {{ name: B, address: \"{b}\" }} ]
listeners:
  - {{ name: rw, bind: \"127.0.0.1:0\", cluster: r, role: primary }}
coordination:
  etcd: {{ endpoints: [{endpoints}] }}
  prefix: {prefix}
  instance: {name}
  mode: {mode}
  observers: 2
  lease_ttl: {LEASE_TTL_S}s
  on_lost: {on_lost}
",
            a = redis[0],
            b = redis[1],
            prefix = self.prefix,
        );
        let config = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&config, yaml).expect("write config");
        let log = self.dir.path().join(format!("{name}.log"));
        let out = File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_rolegate"))
            .args(["--config", config.to_str().unwrap(), "run"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out)
            .spawn()
            .expect("spawn rolegate");
        Instance {
            name: name.to_string(),
            child,
            admin,
            log,
        }
    }
}

fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// Polls `cond` until it holds, at most `limit`; panics with `what` and the last detail.
async fn eventually<F: FnMut() -> Result<(), String>>(limit: Duration, what: &str, mut cond: F) {
    let deadline = Instant::now() + limit;
    loop {
        let last = match cond() {
            Ok(()) => return,
            Err(detail) => detail,
        };
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn etcd(endpoints: &[String]) -> Client {
    Client::connect(endpoints, None)
        .await
        .expect("connect etcd")
}

async fn get(client: &mut Client, key: &str) -> Option<(String, i64)> {
    let resp = client.get(key, None).await.expect("etcd get");
    resp.kvs().first().map(|kv| {
        (
            String::from_utf8_lossy(kv.value()).into_owned(),
            kv.create_revision(),
        )
    })
}

async fn wait_key(client: &mut Client, key: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let value = get(client, key).await.map(|(v, _)| v);
        if let Some(v) = value.as_deref().filter(|v| ok(v)) {
            return v.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} ({key}): {value:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Monitoring sessions of `instances` on a Redis node, counted on the server: `CLIENT LIST`
/// entries named `rolegate` whose client port is a socket of one of these processes (other
/// tests' proxies share the lab).
fn monitoring_sessions(env: &serde_json::Value, node: &str, instances: &[&Instance]) -> usize {
    let ss = Command::new("ss")
        .args(["-tnpH", "state", "established", "dst", node])
        .output()
        .expect("ss");
    let ss = String::from_utf8_lossy(&ss.stdout);
    let mut ports = Vec::new();
    for line in ss.lines() {
        if instances
            .iter()
            .any(|i| line.contains(&format!("pid={},", i.pid())))
        {
            if let Some(local) = line.split_whitespace().nth(2) {
                ports.push(format!("addr={local} "));
            }
        }
    }
    let (host, port) = node.rsplit_once(':').expect("host:port");
    let password = env["passwords"]["monitor"].as_str().expect("password");
    let out = Command::new("redis-cli")
        .args(["-h", host, "-p", port, "-a", password, "--no-auth-warning"])
        .args(["CLIENT", "LIST"])
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(" name=rolegate ") && ports.iter().any(|p| l.contains(p)))
        .count()
}

fn all_route_to(instances: &[&Instance], node: &str) -> Result<(), String> {
    let seen: Vec<(String, Option<String>)> = instances
        .iter()
        .map(|i| (i.name.clone(), i.primary()))
        .collect();
    if seen.iter().all(|(_, p)| p.as_deref() == Some(node)) {
        Ok(())
    } else {
        Err(format!("want {node} everywhere: {seen:?}"))
    }
}

fn other(node: &str) -> &'static str {
    if node == "A" {
        "B"
    } else {
        "A"
    }
}

// === tests ===

/// 2 observers (auto) + 4 followers: the Redis nodes see 2 monitoring sessions from the
/// fleet; a switchover moves every instance; kill -9 of the leader hands leadership to the
/// standby and the next switchover is followed by everyone left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observers_check_followers_follow_and_a_killed_leader_is_replaced() {
    let Some(endpoints) = etcd_or_skip("fleet observers_check_followers_follow") else {
        return;
    };
    let _lock = lab_lock();
    let _reset = ResetOnPanic;
    let fleet = Fleet::new(endpoints.clone(), "follow");
    let keys = fleet.keys();
    let mut client = etcd(&endpoints).await;

    let mut instances: Vec<Instance> = Vec::new();
    for n in 0..2 {
        instances.push(fleet.start(&format!("obs{n}"), "auto"));
    }
    // Both slots held before the followers come, so who observes is known.
    for n in 0..2 {
        wait_key(&mut client, &keys.observer_slot(n), "observer slot", |_| {
            true
        })
        .await;
    }
    for n in 0..4 {
        instances.push(fleet.start(&format!("f{n}"), "auto"));
    }
    let leader = wait_key(&mut client, &keys.leader(), "a leader", |_| true).await;
    assert!(leader.starts_with("obs"), "an observer leads: {leader}");
    let li = instances.iter().position(|i| i.name == leader).unwrap();
    eventually(Duration::from_secs(10), "the leader says it leads", || {
        let s = http_get(instances[li].admin, "/status").unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&s).unwrap_or_default();
        let c = &v["coordination"];
        if c["leader"] == true && c["observing"] == true && c["source"] == "local" {
            Ok(())
        } else {
            Err(format!("{c}"))
        }
    })
    .await;

    let primary = redis_primary();
    let all: Vec<&Instance> = instances.iter().collect();
    eventually(
        Duration::from_secs(30),
        "every instance on the primary",
        || all_route_to(&all, &primary),
    )
    .await;
    let redis = addresses(&fleet.env, "redis");
    for node in &redis {
        eventually(
            Duration::from_secs(10),
            "one session per observer",
            || match monitoring_sessions(&fleet.env, node, &all) {
                2 => Ok(()),
                n => Err(format!("{n} monitoring sessions on {node}")),
            },
        )
        .await;
    }

    switchover_redis().await;
    let new_primary = other(&primary);
    eventually(
        Duration::from_secs(30),
        "every instance follows the switchover",
        || all_route_to(&all, new_primary),
    )
    .await;

    // kill -9 of the leader: the standby observer takes over.
    instances[li].signal("-KILL");
    let dead = instances.remove(li);
    drop(dead);
    let successor = wait_key(&mut client, &keys.leader(), "a new leader", |v| v != leader).await;
    assert!(
        successor.starts_with("obs"),
        "the standby leads: {successor}"
    );

    switchover_redis().await;
    let left: Vec<&Instance> = instances.iter().collect();
    eventually(
        Duration::from_secs(30),
        "the fleet follows after the takeover",
        || all_route_to(&left, &primary),
    )
    .await;
    // A follower took the freed slot: still two observers' sessions.
    for node in &redis {
        eventually(
            Duration::from_secs(15),
            "two observers again",
            || match monitoring_sessions(&fleet.env, node, &left) {
                2 => Ok(()),
                n => Err(format!("{n} monitoring sessions on {node}")),
            },
        )
        .await;
    }
}

/// A leader frozen (SIGSTOP) past its lease loses leadership; a switchover meanwhile is
/// published by its successor; after SIGCONT its publication is refused, the record in etcd
/// stays the successor's and no follower routes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_cannot_publish_after_waking() {
    let Some(endpoints) = etcd_or_skip("fleet a_frozen_leader_cannot_publish") else {
        return;
    };
    let _lock = lab_lock();
    let _reset = ResetOnPanic;
    let fleet = Fleet::new(endpoints.clone(), "frozen");
    let keys = fleet.keys();
    let mut client = etcd(&endpoints).await;
    let leader_i = fleet.start("lead", "observer");
    wait_key(&mut client, &keys.leader(), "the first leader", |v| {
        v == "lead"
    })
    .await;
    let standby = fleet.start("standby", "observer");
    let followers = [fleet.start("f0", "follower"), fleet.start("f1", "follower")];
    let primary = redis_primary();
    let everyone = [&leader_i, &standby, &followers[0], &followers[1]];
    eventually(
        Duration::from_secs(30),
        "every instance on the primary",
        || all_route_to(&everyone, &primary),
    )
    .await;
    let (_, old_term) = get(&mut client, &keys.leader()).await.expect("leader key");

    leader_i.signal("-STOP");
    wait_key(&mut client, &keys.leader(), "the standby leads", |v| {
        v == "standby"
    })
    .await;
    let (_, new_term) = get(&mut client, &keys.leader()).await.expect("leader key");
    assert!(new_term > old_term);
    switchover_redis().await;
    let new_primary = other(&primary);
    let fs = [&followers[0], &followers[1]];
    eventually(
        Duration::from_secs(30),
        "followers follow the new leader",
        || all_route_to(&fs, new_primary),
    )
    .await;
    let decision_key = keys.decision("r");
    let before = client.get(decision_key.as_str(), None).await.unwrap();
    let before_rev = before.kvs()[0].mod_revision();

    leader_i.signal("-CONT");
    // It wakes with a decision to publish (its checks see the switchover) and must refuse.
    eventually(
        Duration::from_secs(30),
        "the woken leader refuses to publish",
        || {
            let log = leader_i.log_text();
            if log.contains("Leadership lapsed") || log.contains("Publication refused") {
                Ok(())
            } else {
                Err("no refusal in its log yet".into())
            }
        },
    )
    .await;
    let after = client.get(decision_key.as_str(), None).await.unwrap();
    let record = DecisionRecord::parse("r", after.kvs()[0].value()).unwrap();
    assert_eq!(
        record.leader, "standby",
        "only the successor wrote: {record:?}"
    );
    assert_eq!(record.term, new_term);
    assert!(after.kvs()[0].mod_revision() >= before_rev);
    assert_eq!(
        all_route_to(&fs, new_primary),
        Ok(()),
        "no follower moved back"
    );

    // etcd's own fence: a write under the old term is refused by the transaction.
    let stale = DecisionRecord {
        term: old_term,
        leader: "lead".into(),
        ..record
    };
    let outcome = publisher::publish(&mut client, &keys, old_term, &stale)
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Fenced);
    let last = client.get(decision_key.as_str(), None).await.unwrap();
    assert_eq!(
        DecisionRecord::parse("r", last.kvs()[0].value())
            .unwrap()
            .leader,
        "standby"
    );
    // Put the lab back as it was found.
    switchover_redis().await;
}

/// A follower ignores a record that is not JSON or names an unknown backend, says why in
/// its log, and keeps routing by the record in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_record_is_ignored_and_the_table_kept() {
    let Some(endpoints) = etcd_or_skip("fleet a_garbage_record_is_ignored") else {
        return;
    };
    let fleet = Fleet::new(endpoints.clone(), "garbage");
    let keys = fleet.keys();
    let mut client = etcd(&endpoints).await;
    let follower = fleet.start("f", "follower");
    let redis = addresses(&fleet.env, "redis");
    let good = format!(
        r#"{{"version":1,"cluster":"r","leader":"test","term":1,"primary":["B"],"unavailable":null,"holders":["B"],"replicas":["A"],"any":["B","A"],"split_brain":false,"primary_claims":1,"stale":[],"up":["A","B"],"confirmed_replicas":["A"],"lag_ms":{{"A":0}},"addresses":{{"A":"{}","B":"{}"}},"decided_at_ms":1}}"#,
        redis[0], redis[1]
    );
    client
        .put(keys.decision("r"), good.clone(), None)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "the follower applies the record",
        || match follower.primary().as_deref() {
            Some("B") => Ok(()),
            p => Err(format!("primary {p:?}")),
        },
    )
    .await;
    client
        .put(keys.decision("r"), "{not json", None)
        .await
        .unwrap();
    let unknown = good
        .replace(r#""primary":["B"]"#, r#""primary":["Z"]"#)
        .replace(r#""holders":["B"]"#, r#""holders":["Z"]"#);
    client.put(keys.decision("r"), unknown, None).await.unwrap();
    eventually(
        Duration::from_secs(20),
        "both records refused in the log",
        || {
            let log = follower.log_text();
            let n = log.matches("Ignored a fleet decision record").count();
            if n >= 2 && log.contains("not valid JSON") && log.contains("no backend Z") {
                Ok(())
            } else {
                Err(format!("{n} refusals logged"))
            }
        },
    )
    .await;
    assert_eq!(follower.primary().as_deref(), Some("B"), "table kept");
    let refused = http_get(follower.admin, "/metrics")
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("rolegate_fleet_records_refused_total "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .expect("rolegate_fleet_records_refused_total in /metrics");
    assert!(refused >= 2.0, "refused records counted: {refused}");
    let status: serde_json::Value =
        serde_json::from_str(&http_get(follower.admin, "/status").expect("/status")).unwrap();
    let c = &status["coordination"];
    assert_eq!(c["mode"], "follower", "{status}");
    assert_eq!(c["instance"], "f");
    assert_eq!(c["observing"], false);
    assert_eq!(c["leader"], false);
    assert_eq!(c["connected"], true);
    assert_eq!(c["source"], "etcd");
    assert!(
        c["decision_revision"].as_i64().is_some_and(|r| r > 0),
        "{c}"
    );
    assert_eq!(status["clusters"][0]["decided_by"], "test");
}

/// A TCP relay to one etcd member that the test can cut and restore, so one instance loses
/// etcd while the lab's cluster stays up for everyone else.
struct Relay {
    addr: SocketAddr,
    target: SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut r = Relay {
            addr,
            target,
            task: None,
        };
        r.task = Some(tokio::spawn(Self::serve(listener, target)));
        r
    }

    async fn serve(listener: tokio::net::TcpListener, target: SocketAddr) {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((mut client, _)) = listener.accept().await {
            conns.spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    }

    /// Drops the listener and every relayed connection.
    fn cut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    async fn restore(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(Instant::now() < deadline, "rebind {}: {e}", self.addr);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        self.task = Some(tokio::spawn(Self::serve(listener, self.target)));
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
    }
}

fn coordination(i: &Instance) -> serde_json::Value {
    let s = http_get(i.admin, "/status").unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&s).unwrap_or_default();
    v
}

/// Three followers lose etcd (their relay is cut) while an observer keeps it: `local` starts
/// its own checks and keeps routing, `last_known` keeps the last decision, `fail_closed`
/// holds primary connections; when etcd is back all three follow the fleet again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_on_lost_policy_does_what_it_says() {
    let Some(endpoints) = etcd_or_skip("fleet each_on_lost_policy") else {
        return;
    };
    let _lock = lab_lock();
    let fleet = Fleet::new(endpoints.clone(), "onlost");
    let keys = fleet.keys();
    let mut client = etcd(&endpoints).await;
    let obs = fleet.start("obs", "observer");
    wait_key(&mut client, &keys.leader(), "a leader", |v| v == "obs").await;
    let target: SocketAddr = endpoints[0].trim_start_matches("http://").parse().unwrap();
    let mut relays = Vec::new();
    let mut followers = Vec::new();
    for policy in ["local", "last_known", "fail_closed"] {
        let relay = Relay::start(target).await;
        let via = vec![format!("http://{}", relay.addr)];
        followers.push(fleet.start_with(policy, "follower", &via, policy));
        relays.push(relay);
    }
    let primary = redis_primary();
    let all: Vec<&Instance> = std::iter::once(&obs).chain(followers.iter()).collect();
    eventually(
        Duration::from_secs(30),
        "every instance on the primary",
        || all_route_to(&all, &primary),
    )
    .await;

    for r in &mut relays {
        r.cut();
    }
    let [local, last, closed] = [&followers[0], &followers[1], &followers[2]];
    eventually(Duration::from_secs(30), "each policy in force", || {
        let (l, k, c) = (
            coordination(local),
            coordination(last),
            coordination(closed),
        );
        let ok = l["coordination"]["observing"] == true
            && l["coordination"]["source"] == "local"
            && l["clusters"][0]["primary"] == primary.as_str()
            && k["coordination"]["connected"] == false
            && k["coordination"]["source"] == "last_known"
            && k["clusters"][0]["primary"] == primary.as_str()
            && c["coordination"]["connected"] == false
            && c["clusters"][0]["primary"].is_null()
            && c["listeners"][0]["unavailable"] == "no_primary";
        if ok {
            Ok(())
        } else {
            Err(format!(
                "local {} / last_known {} / fail_closed {} {}",
                l["coordination"], k["coordination"], c["coordination"], c["listeners"][0]
            ))
        }
    })
    .await;

    for r in &mut relays {
        r.restore().await;
    }
    eventually(
        Duration::from_secs(30),
        "all three follow the fleet again",
        || {
            let mut bad = Vec::new();
            for f in &followers {
                let v = coordination(f);
                let c = &v["coordination"];
                if !(c["connected"] == true
                    && c["observing"] == false
                    && c["source"] == "etcd"
                    && v["clusters"][0]["primary"] == primary.as_str())
                {
                    bad.push(format!(
                        "{}: {c} primary {}",
                        f.name, v["clusters"][0]["primary"]
                    ));
                }
            }
            if bad.is_empty() {
                Ok(())
            } else {
                Err(bad.join("; "))
            }
        },
    )
    .await;
}

/// A follower that cannot connect to the decided primary reports it under its own lease, and
/// an observer re-checks that backend at once. The test holds the leader key itself, so its
/// record (B at a closed port) is the decision in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followers_failed_connect_makes_the_observers_recheck() {
    let Some(endpoints) = etcd_or_skip("fleet a_followers_failed_connect") else {
        return;
    };
    let fleet = Fleet::new(endpoints.clone(), "report");
    let keys = fleet.keys();
    let mut client = etcd(&endpoints).await;
    client.put(keys.leader(), "test", None).await.unwrap();
    // A port bound without listen(2): reserved (no instance gets it), and connects are refused.
    let reserved =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    reserved
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    let closed = reserved.local_addr().unwrap().as_socket().unwrap().port();
    let redis = addresses(&fleet.env, "redis");
    let record = format!(
        r#"{{"version":1,"cluster":"r","leader":"test","term":1,"primary":["B"],"unavailable":null,"holders":["B"],"replicas":[],"any":["B"],"split_brain":false,"primary_claims":1,"stale":[],"up":["B"],"confirmed_replicas":[],"lag_ms":{{}},"addresses":{{"A":"{}","B":"127.0.0.1:{closed}"}},"decided_at_ms":1}}"#,
        redis[0]
    );
    client.put(keys.decision("r"), record, None).await.unwrap();
    let observer = fleet.start("obs", "observer");
    let follower = fleet.start("f", "follower");
    eventually(
        Duration::from_secs(20),
        "the follower follows the record",
        || match follower.primary().as_deref() {
            Some("B") => Ok(()),
            p => Err(format!("primary {p:?}")),
        },
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "the observer's etcd session",
        || match coordination(&observer)["coordination"]["connected"].as_bool() {
            Some(true) => Ok(()),
            c => Err(format!("connected {c:?}")),
        },
    )
    .await;
    let status = coordination(&follower);
    let rw: SocketAddr = status["listeners"][0]["local_addr"]
        .as_str()
        .expect("local_addr")
        .parse()
        .unwrap();
    // Each connect to B fails and the client is closed by the proxy; clients retry, and so
    // does this one until the report is there.
    let report = keys.report("f", "r", "B");
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&mut client, &report).await.is_none() {
        assert!(
            Instant::now() < deadline,
            "no report at {report}; follower log:\n{}",
            follower.log_text()
        );
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            if let Ok(mut s) = tokio::net::TcpStream::connect(rw).await {
                let mut buf = [0u8; 1];
                let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
            }
        })
        .await;
    }
    let resp = client.get(report.as_str(), None).await.unwrap();
    assert_ne!(resp.kvs()[0].lease(), 0, "held by the follower's lease");
    eventually(Duration::from_secs(20), "the observer re-checks B", || {
        let log = observer.log_text();
        if log.contains("A follower could not connect; re-checking now.")
            && log.contains("backend=B")
        {
            Ok(())
        } else {
            Err("no re-check in the observer's log".into())
        }
    })
    .await;
}

fn http_post(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}

fn backend_admin(i: &Instance, backend: &str) -> (String, String) {
    let v = coordination(i);
    let b = v["clusters"][0]["backends"]
        .as_array()
        .and_then(|bs| bs.iter().find(|b| b["name"] == backend).cloned())
        .unwrap_or_default();
    (
        b["admin"].as_str().unwrap_or("?").to_string(),
        b["admin_by"].as_str().unwrap_or("-").to_string(),
    )
}

/// `disable` sent to one instance is applied by every instance (which says who set it);
/// `enable` sent to another lifts it everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_actions_apply_fleet_wide() {
    let Some(endpoints) = etcd_or_skip("fleet admin_actions_apply_fleet_wide") else {
        return;
    };
    let _lock = lab_lock();
    let fleet = Fleet::new(endpoints.clone(), "admin");
    let keys = fleet.keys();
    let mut client = etcd(&endpoints).await;
    let obs = fleet.start("obs", "observer");
    wait_key(&mut client, &keys.leader(), "a leader", |v| v == "obs").await;
    let f = fleet.start("f", "follower");
    let primary = redis_primary();
    let replica = other(&primary);
    eventually(Duration::from_secs(30), "both on the primary", || {
        all_route_to(&[&obs, &f], &primary)
    })
    .await;
    let reply = http_post(obs.admin, &format!("/backends/r/{replica}/disable")).unwrap_or_default();
    assert!(
        reply.starts_with("HTTP/1.1 2") || reply.starts_with("HTTP/1.0 2"),
        "{reply}"
    );
    eventually(
        Duration::from_secs(20),
        "disabled everywhere, set by obs",
        || {
            let seen = [backend_admin(&obs, replica), backend_admin(&f, replica)];
            if seen.iter().all(|(a, by)| a == "disabled" && by == "obs") {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    )
    .await;
    let reply = http_post(f.admin, &format!("/backends/r/{replica}/enable")).unwrap_or_default();
    assert!(
        reply.starts_with("HTTP/1.1 2") || reply.starts_with("HTTP/1.0 2"),
        "{reply}"
    );
    eventually(
        Duration::from_secs(20),
        "enabled everywhere, set by f",
        || {
            let seen = [backend_admin(&obs, replica), backend_admin(&f, replica)];
            if seen.iter().all(|(a, by)| a == "enabled" && by == "f") {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    )
    .await;
    let (record, _) = get(&mut client, &keys.admin("r", replica))
        .await
        .expect("admin key");
    assert!(
        record.contains(r#""action":"enable""#) && record.contains(r#""by":"f""#),
        "{record}"
    );
}
