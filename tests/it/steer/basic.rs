//! A steered client reaches the primary itself, an outsider is proxied; safe degradation when the
//! programs cannot load; nothing steered after rolegate exits; reloads turn steering on and off.

use super::*;

/// A client in the cgroup reaches the primary directly (Redis sees the client's own address),
/// `getpeername` shows the listener; a client outside the cgroup is proxied.
#[tokio::test(flavor = "multi_thread")]
async fn steered_client_reaches_the_primary_directly_outsider_is_proxied() {
    let Some(_met) = requirements(&[Engine::Redis]) else {
        return;
    };
    let _lab = lab::lock_read_only();
    let cgroup = Cgroup::create("direct");
    let cfg = config(Engine::Redis, &cgroup);
    let (rg, rw) = start(&cfg, Start::default()).await;
    if !built_with_steering(rg.admin()).await {
        return;
    }
    let lines = run_client(&cgroup, "identity", Engine::Redis, rw).await;
    let local: SocketAddr = field(&lines, "local").parse().unwrap();
    let peer: SocketAddr = field(&lines, "peer").parse().unwrap();
    let seen: SocketAddr = field(&lines, "seen").parse().unwrap();
    assert_eq!(peer, rw, "getpeername shows the listener address");
    assert_eq!(seen, local, "Redis sees the steered client's own address");
    assert!(steered_sum_of(rg.admin(), "rw").await >= 1);

    // A dual-stack client: AF_INET6 socket, IPv4-mapped listener address (connect6).
    let lines = run_client(&cgroup, "identity6", Engine::Redis, rw).await;
    let local: SocketAddr = field(&lines, "local").parse().unwrap();
    let peer: SocketAddr = field(&lines, "peer").parse().unwrap();
    let seen: SocketAddr = field(&lines, "seen").parse().unwrap();
    let SocketAddr::V4(rw4) = rw else {
        panic!("an IPv4 listener")
    };
    assert_eq!(
        peer,
        SocketAddr::new(rw4.ip().to_ipv6_mapped().into(), rw.port()),
        "getpeername6"
    );
    assert_eq!(
        seen.port(),
        local.port(),
        "Redis sees the dual-stack client's own port: {lines:?}"
    );

    let (local, peer, seen) = tokio::task::spawn_blocking(move || redis_identity(rw))
        .await
        .unwrap();
    assert_eq!(peer, rw);
    assert_ne!(seen, local, "a client outside the cgroup is proxied");
    rg.stop_cleanly().await;
}

/// Without the capabilities to load BPF: one warning, `/status` says why, clients in the
/// cgroup are proxied.
#[tokio::test(flavor = "multi_thread")]
async fn load_failure_degrades_to_the_proxy() {
    let Some(_met) = requirements(&[Engine::Redis]) else {
        return;
    };
    let Some(setpriv) = require::tool("setpriv", &[], "util-linux") else {
        return;
    };
    let setpriv = setpriv.display().to_string();
    let _lab = lab::lock_read_only();
    let cgroup = Cgroup::create("nocap");
    let cfg = config(Engine::Redis, &cgroup);
    let opts = Start {
        wrapper: vec![
            setpriv.as_str(),
            "--bounding-set=-all",
            "--inh-caps=-all",
            "--ambient-caps=-all",
            "--",
        ],
        ..Start::default()
    };
    let (rg, rw) = start(&cfg, opts).await;
    let steer = steer_status(rg.admin()).await;
    assert_eq!(steer["active"], false, "{steer}");
    let reason = steer["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("Operation not permitted"),
        "the reason says why: {steer}"
    );
    let metrics = http::get(rg.admin(), "/metrics").await.body;
    assert_eq!(
        support::metric_value(&metrics, "rolegate_steer_active{listener=\"rw\"}"),
        Some(0.0)
    );
    assert_eq!(
        rg.count(
            "Steering is off: the listeners with steer: serve their local clients as a proxy."
        ),
        1,
        "one warning: {:#?}",
        rg.lines()
    );
    let lines = run_client(&cgroup, "identity", Engine::Redis, rw).await;
    assert_ne!(field(&lines, "seen"), field(&lines, "local"), "proxied");
    rg.stop_cleanly().await;
}

/// After rolegate exits (SIGTERM, then kill -9 of a second run) nothing is steered: a client in
/// the cgroup connecting to the listener address is refused (nobody listens there), although
/// the backend is up.
#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_steered_after_exit() {
    let Some(_met) = requirements(&[Engine::Redis]) else {
        return;
    };
    let _lab = lab::lock_read_only();
    let cgroup = Cgroup::create("exit");
    let a = Engine::Redis.addr('A');
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let cfg = config(Engine::Redis, &cgroup);
        let (mut rg, rw) = start(&cfg, Start::default()).await;
        if !built_with_steering(rg.admin()).await {
            return;
        }
        let lines = run_client(&cgroup, "identity", Engine::Redis, rw).await;
        assert_eq!(
            field(&lines, "seen"),
            field(&lines, "local"),
            "steered while running"
        );
        rg.signal(signal);
        rg.wait(Duration::from_secs(30))
            .await
            .expect("rolegate exits");
        let refused = run_client(&cgroup, "write", Engine::Redis, rw).await;
        let error = field(&refused, "error");
        assert!(
            error.to_lowercase().contains("refused"),
            "after signal {signal}, a connect to {rw} must not reach {a}: {refused:?}"
        );
    }
}

/// A reload that adds `steer:` loads and attaches the program; one that removes it detaches
/// it, and the listener's clients are proxied again.
#[tokio::test(flavor = "multi_thread")]
async fn reload_turns_steering_on_and_off() {
    let Some(_met) = requirements(&[Engine::Redis]) else {
        return;
    };
    let _lab = lab::lock_read_only();
    let cgroup = Cgroup::create("reload");
    let steered = config(Engine::Redis, &cgroup);
    let plain_yaml = std::fs::read_to_string(&steered.path).unwrap().replace(
        &format!("    steer: {{ cgroup: {} }}\n", cgroup.0.display()),
        "",
    );
    steered.write(&plain_yaml);
    let (rg, _) = start(&steered, Start::default()).await;
    let admin = rg.admin();
    // `bind` stays `127.0.0.1:0` in every file: unchanged, so the socket (and port) stays.
    let rw = binary::listener_addr(admin, "rw").await;
    let steer_yaml = plain_yaml.replace(
        "    queue_timeout: 20s\n",
        &format!(
            "    queue_timeout: 20s\n    steer: {{ cgroup: {} }}\n",
            cgroup.0.display()
        ),
    );
    let direct = |lines: &[String]| field(lines, "seen") == field(lines, "local");

    assert!(
        !direct(&run_client(&cgroup, "identity", Engine::Redis, rw).await),
        "no steer: proxied"
    );
    steered.write(&steer_yaml);
    assert_eq!(http::post(admin, "/reload", None).await.status, 200);
    if !built_with_steering(admin).await {
        return;
    }
    assert!(
        direct(&run_client(&cgroup, "identity", Engine::Redis, rw).await),
        "steered after the reload"
    );
    steered.write(&plain_yaml);
    assert_eq!(http::post(admin, "/reload", None).await.status, 200);
    assert!(
        !direct(&run_client(&cgroup, "identity", Engine::Redis, rw).await),
        "proxied again"
    );
    rg.stop_cleanly().await;
}

// === IPv6, wildcard binds ===
