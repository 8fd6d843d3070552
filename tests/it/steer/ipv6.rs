//! IPv6 listeners and backends (v4-mapped IPv4 backends, IPv6-only sockets) and wildcard binds.

use super::*;

/// A config with several steered listeners (`name`, `bind`, `cluster`) and extra clusters.
fn config_listeners(
    clusters: &str,
    listeners: &[(&str, &str, &str)],
    cgroup: &Cgroup,
) -> ConfigFile {
    let mut yaml = format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nlog: {{ format: json }}\nclusters:\n{clusters}listeners:\n"
    );
    for (name, bind, cluster) in listeners {
        yaml.push_str(&format!(
            "  - name: {name}\n    bind: \"{bind}\"\n    cluster: {cluster}\n    queue_timeout: 20s\n    steer: {{ cgroup: {} }}\n",
            cgroup.0.display()
        ));
    }
    ConfigFile::new(&yaml)
}

/// A Redis server of this test's own on `[::1]` (the lab's are IPv4), stopped on drop.
struct Redis6 {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Redis6 {
    fn start(server: &Path) -> Redis6 {
        // A free port: bound and released (redis-server fails loudly if it is taken meanwhile).
        let port = std::net::TcpListener::bind("[::1]:0")
            .and_then(|l| l.local_addr())
            .expect("a free IPv6 loopback port")
            .port();
        let addr: SocketAddr = format!("[::1]:{port}").parse().unwrap();
        let child = std::process::Command::new(server)
            .args(["--bind", "::1", "--port", &port.to_string(), "--save", ""])
            .args([
                "--appendonly",
                "no",
                "--requirepass",
                &lab::monitor_password(),
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server on [::1]");
        let redis = Redis6 { child, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server on {addr} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }
}

impl Drop for Redis6 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `identity` client run in the cgroup: (local, peer, seen by Redis).
async fn identity(
    cgroup: &Cgroup,
    mode: &str,
    addr: SocketAddr,
) -> (SocketAddr, SocketAddr, SocketAddr) {
    let lines = run_client(cgroup, mode, Engine::Redis, addr).await;
    let get = |k: &str| -> SocketAddr { field(&lines, k).parse().unwrap() };
    (get("local"), get("peer"), get("seen"))
}

/// Native IPv6 listeners: a client connecting to `[::1]:P` is steered to an IPv6 backend
/// (Redis sees its own `[::1]` address) and to an IPv4 one (by the mapped address: Redis sees
/// 127.0.0.1 and the client's port); `getpeername` shows `[::1]:P`. An AF_INET client of an
/// IPv4 listener whose backend is IPv6 cannot be rewritten across families: it is proxied.
#[tokio::test(flavor = "multi_thread")]
async fn ipv6_listeners_steer_to_ipv6_and_ipv4_backends() {
    let Some(_met) = requirements(&[Engine::Redis]) else {
        return;
    };
    let Some(server) = require::tool("redis-server", &[], "redis-server") else {
        return;
    };
    let _lab = lab::lock_read_only();
    let cgroup = Cgroup::create("ipv6");
    let own = tokio::task::spawn_blocking(move || Redis6::start(&server))
        .await
        .unwrap();
    let clusters = format!(
        "{}  - name: db6\n    protocol: redis\n    check: {{ password: \"{}\", interval: 250ms, rise: 2 }}\n    backends:\n      - {{ name: c, address: \"{}\" }}\n",
        cluster_yaml(Engine::Redis),
        lab::monitor_password(),
        own.addr
    );
    let cfg = config_listeners(
        &clusters,
        &[
            ("to4", "[::1]:0", "db"),
            ("to6", "[::1]:0", "db6"),
            ("v4to6", "127.0.0.1:0", "db6"),
        ],
        &cgroup,
    );
    let rg = Rolegate::start(&cfg.path, Start::default()).await;
    let admin = rg.admin();
    binary::wait_ready(admin).await;
    if !built_with_steering(admin).await {
        return;
    }
    for name in ["to4", "to6", "v4to6"] {
        let steer = steer_status_of(admin, name).await;
        assert_eq!(steer["active"], true, "{name}: {steer}");
    }

    let to4 = binary::listener_addr(admin, "to4").await;
    let (local, peer, seen) = identity(&cgroup, "identity", to4).await;
    assert_eq!(peer, to4, "getpeername6 shows the IPv6 listener");
    assert_eq!(
        (seen.ip(), seen.port()),
        ("127.0.0.1".parse().unwrap(), local.port()),
        "steered to the IPv4 backend by its mapped address (local {local})"
    );
    assert!(steered_sum_of(admin, "to4").await >= 1);

    let to6 = binary::listener_addr(admin, "to6").await;
    let (local, peer, seen) = identity(&cgroup, "identity", to6).await;
    assert_eq!(peer, to6, "getpeername6 shows the IPv6 listener");
    assert_eq!(seen, local, "Redis on [::1] sees the steered client itself");
    assert!(steered_total_of(admin, "to6", "c").await >= 1);

    let v4to6 = binary::listener_addr(admin, "v4to6").await;
    let (local, peer, seen) = identity(&cgroup, "identity", v4to6).await;
    assert_eq!(peer, v4to6);
    assert_ne!(seen, local, "an AF_INET socket cannot reach [::1]: proxied");
    assert_eq!(steered_total_of(admin, "v4to6", "c").await, 0);
    rg.stop_cleanly().await;
    drop(own);
}

/// An AF_INET6 socket with IPV6_V6ONLY cannot connect to an IPv4-mapped address, so a client
/// that sets it (or gets it from `net.ipv6.bindv6only=1`) and connects to an IPv6 listener whose
/// backend is IPv4 is left to the proxy, which connects to the backend itself (Redis sees
/// rolegate, the steering counter stays put); the same client without V6ONLY is steered.
#[tokio::test(flavor = "multi_thread")]
async fn ipv6_only_sockets_are_proxied_to_ipv4_backends() {
    let Some(_met) = requirements(&[Engine::Redis]) else {
        return;
    };
    let _lab = lab::lock_read_only();
    let cgroup = Cgroup::create("v6only");
    let cfg = config_listeners(
        &cluster_yaml(Engine::Redis),
        &[("to4", "[::1]:0", "db")],
        &cgroup,
    );
    let rg = Rolegate::start(&cfg.path, Start::default()).await;
    let admin = rg.admin();
    binary::wait_ready(admin).await;
    if !built_with_steering(admin).await {
        return;
    }
    let steer = steer_status_of(admin, "to4").await;
    assert_eq!(
        steer["ipv6_to_ipv4"],
        serde_json::json!({ "active": true, "reason": null }),
        "this kernel lets connect6 read IPV6_V6ONLY: {steer}"
    );
    let to4 = binary::listener_addr(admin, "to4").await;

    let (local, peer, seen) = identity(&cgroup, "identity", to4).await;
    assert_eq!(peer, to4, "getpeername6 shows the IPv6 listener");
    assert_eq!(
        (seen.ip(), seen.port()),
        ("127.0.0.1".parse().unwrap(), local.port()),
        "a dual-stack socket is steered to the IPv4 backend (local {local})"
    );
    let steered = steered_sum_of(admin, "to4").await;
    assert_eq!(steered, 1, "the steered connect is counted");

    let (local, peer, seen) = identity(&cgroup, "identity6only", to4).await;
    assert_eq!(
        peer, to4,
        "the IPv6-only socket is connected to the listener itself"
    );
    assert_ne!(
        seen.port(),
        local.port(),
        "Redis sees rolegate's connection, not the IPv6-only client (local {local}, seen {seen})"
    );
    assert_eq!(
        steered_sum_of(admin, "to4").await,
        steered,
        "the IPv6-only connect was not steered"
    );
    assert_eq!(
        rg.count(
            "Steering cannot read a socket's IPV6_V6ONLY: IPv6 clients of IPv4 backends are served by the proxy."
        ),
        0
    );
    rg.stop_cleanly().await;
}

/// Where connect6 cannot read IPV6_V6ONLY (here: no `CAP_PERFMON`, which the typed socket
/// pointer needs) steering stays on, one warning and `/status` say why, and every IPv6 client of
/// an IPv4 backend is proxied, IPv6-only or not; dual-stack clients of IPv4 listeners (mapped
/// destinations, which an IPv6-only socket could not connect to anyway) are still steered, and
/// so is every candidate of a round-robin route.
#[tokio::test(flavor = "multi_thread")]
async fn without_perfmon_ipv6_clients_of_ipv4_backends_are_proxied() {
    let Some(_met) = requirements(&[Engine::Redis]) else {
        return;
    };
    let Some(setpriv) = require::tool("setpriv", &[], "util-linux") else {
        return;
    };
    let setpriv = setpriv.display().to_string();
    let _lab = lab::lock_read_only();
    let cgroup = Cgroup::create("noperfmon");
    let cfg = config_listeners(
        &cluster_yaml(Engine::Redis),
        &[("to4", "[::1]:0", "db"), ("rw4", "127.0.0.1:0", "db")],
        &cgroup,
    );
    // And a round-robin route (two candidates: the variable-offset path of the program).
    let mut yaml = std::fs::read_to_string(&cfg.path).unwrap();
    yaml.push_str(&format!(
        "  - name: any4\n    bind: \"127.0.0.1:0\"\n    cluster: db\n    role: any\n    steer: {{ cgroup: {} }}\n",
        cgroup.0.display()
    ));
    cfg.write(&yaml);
    // Root keeps every other capability (CAP_BPF, CAP_NET_ADMIN); CAP_SYS_ADMIN implies
    // CAP_PERFMON, so both go.
    let opts = Start {
        wrapper: vec![
            setpriv.as_str(),
            "--bounding-set=-perfmon,-sys_admin",
            "--inh-caps=-perfmon,-sys_admin",
            "--",
        ],
        ..Start::default()
    };
    let rg = Rolegate::start(&cfg.path, opts).await;
    let admin = rg.admin();
    binary::wait_ready(admin).await;
    if !built_with_steering(admin).await {
        return;
    }
    let steer = steer_status_of(admin, "to4").await;
    assert_eq!(steer["active"], true, "steering itself stays on: {steer}");
    assert_eq!(steer["ipv6_to_ipv4"]["active"], false, "{steer}");
    assert!(
        steer["ipv6_to_ipv4"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("steer_connect6") && r.contains("bpf_skc_to_tcp_sock")),
        "the reason names the program and the verifier's verdict: {steer}"
    );
    assert_eq!(
        rg.count(
            "Steering cannot read a socket's IPV6_V6ONLY: IPv6 clients of IPv4 backends are served by the proxy."
        ),
        1,
        "one warning: {:#?}",
        rg.lines()
    );
    let to4 = binary::listener_addr(admin, "to4").await;
    for mode in ["identity", "identity6only"] {
        let (local, peer, seen) = identity(&cgroup, mode, to4).await;
        assert_eq!(peer, to4);
        assert_ne!(seen.port(), local.port(), "{mode}: proxied");
    }
    assert_eq!(steered_sum_of(admin, "to4").await, 0);

    let rw4 = binary::listener_addr(admin, "rw4").await;
    let (local, _, seen) = identity(&cgroup, "identity6", rw4).await;
    assert_eq!(
        seen.port(),
        local.port(),
        "a dual-stack client of an IPv4 listener is still steered"
    );
    assert_eq!(steered_sum_of(admin, "rw4").await, 1);

    // Round robin over A and B: each gets steered connects (bounded: 8 connects).
    let any4 = binary::listener_addr(admin, "any4").await;
    let mut reached = Vec::new();
    for _ in 0..8 {
        let (local, _, seen) = identity(&cgroup, "identity", any4).await;
        assert_eq!(seen.port(), local.port(), "steered to a candidate");
        let steer = steer_status_of(admin, "any4").await;
        reached = steer["connections_total"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(_, n)| n.as_u64() > Some(0))
                    .map(|(backend, _)| backend.clone())
                    .collect()
            })
            .unwrap_or_default();
        reached.sort();
        if reached.len() == 2 {
            break;
        }
    }
    assert_eq!(
        reached,
        ["a", "b"],
        "both candidates are steered to in turn"
    );
    rg.stop_cleanly().await;
}

/// Wildcard binds: a client in the cgroup connecting to any local address on the port of a
/// `0.0.0.0` listener (127.0.0.1, another loopback address, the host's own addresses, and the
/// mapped forms from an AF_INET6 socket) or of a `[::]` listener (`::1`, the host's IPv6
/// addresses) is steered, and `getpeername` shows the address it asked for. A client outside
/// the cgroup is proxied.
#[tokio::test(flavor = "multi_thread")]
async fn wildcard_binds_steer_every_local_address() {
    let Some(_met) = requirements(&[Engine::Redis]) else {
        return;
    };
    let _lab = lab::lock_read_only();
    let cgroup = Cgroup::create("wildcard");
    let cfg = config_listeners(
        &cluster_yaml(Engine::Redis),
        &[("any4", "0.0.0.0:0", "db"), ("any6", "[::]:0", "db")],
        &cgroup,
    );
    let rg = Rolegate::start(&cfg.path, Start::default()).await;
    let admin = rg.admin();
    binary::wait_ready(admin).await;
    if !built_with_steering(admin).await {
        return;
    }
    for name in ["any4", "any6"] {
        let steer = steer_status_of(admin, name).await;
        assert_eq!(steer["active"], true, "{name}: {steer}");
    }
    let p4 = binary::listener_addr(admin, "any4").await.port();
    let p6 = binary::listener_addr(admin, "any6").await.port();
    // The host's own addresses (traffic to them stays on the host, through `lo`).
    let own: Vec<std::net::IpAddr> = if_addrs::get_if_addrs()
        .expect("list the host's addresses")
        .iter()
        .map(|i| i.ip())
        .filter(|ip| !ip.is_loopback())
        // A link-local IPv6 address needs a scope id to connect to.
        .filter(|ip| !matches!(ip, std::net::IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80))
        .collect();
    let mut targets: Vec<(&str, SocketAddr)> = vec![
        ("identity", format!("127.0.0.1:{p4}").parse().unwrap()),
        ("identity", format!("127.0.0.2:{p4}").parse().unwrap()),
        ("identity6", format!("127.0.0.2:{p4}").parse().unwrap()),
        ("identity", format!("[::1]:{p6}").parse().unwrap()),
    ];
    for ip in &own {
        let port = if ip.is_ipv4() { p4 } else { p6 };
        targets.push(("identity", SocketAddr::new(*ip, port)));
    }
    for (mode, target) in &targets {
        let (local, peer, seen) = identity(&cgroup, mode, *target).await;
        let asked = match (*mode, target) {
            ("identity6", SocketAddr::V4(a)) => {
                SocketAddr::new(a.ip().to_ipv6_mapped().into(), a.port())
            }
            _ => *target,
        };
        assert_eq!(peer, asked, "getpeername shows {asked}");
        assert_eq!(
            seen.port(),
            local.port(),
            "{mode} to {target}: steered (Redis sees the client's port; local {local}, seen {seen})"
        );
    }
    let total = steered_sum_of(admin, "any4").await + steered_sum_of(admin, "any6").await;
    assert_eq!(total, targets.len() as u64, "every connect was steered");

    let outsider: SocketAddr = format!("127.0.0.2:{p4}").parse().unwrap();
    let (local, peer, seen) = tokio::task::spawn_blocking(move || redis_identity(outsider))
        .await
        .unwrap();
    assert_eq!(peer, outsider);
    assert_ne!(seen, local, "a client outside the cgroup is proxied");
    rg.stop_cleanly().await;
}

// === no primary until a real promotion ===
