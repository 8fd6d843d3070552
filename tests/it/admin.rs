//! Admin API: authentication of the mutating endpoints, malformed requests and `/status` (the
//! server's own bounds are in `admin_server.rs`). Over real HTTP on ephemeral ports, and
//! through `admin::handle` where a socket cannot express the case (a non-loopback peer, a body
//! without a length).

use crate::support;

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use rolegate::admin::{self, AdminHandle as AdminState};
use rolegate::config::Config;
use serde_json::json;
use support::config::{Check, Cluster, ConfigBuilder, Listener};
use support::files::ConfigFile;
use support::http::{self, get, post, raw, request};
use support::{fake, metric_value, Proxy};

const TOKEN: &str = "correct-horse-battery-staple";

/// A tcp cluster `app` with backends `a` and `b`, listener `rw` (any); `admin` is the admin
/// block.
fn yaml(admin: serde_json::Value, a: SocketAddr, b: SocketAddr) -> String {
    ConfigBuilder::new()
        .admin(admin)
        .cluster(
            Cluster::tcp("app")
                .check(Check::fast())
                .backend("a", a)
                .backend("b", b),
        )
        .listener(
            Listener::new("rw", "app")
                .role("any")
                .set("queue_timeout", "0s"),
        )
        .yaml()
}

/// A proxy with a token in `token` next to its config file.
async fn with_token() -> (Proxy, ConfigFile, [fake::Backend; 2]) {
    let (a, b) = (
        fake::named("a").spawn().await,
        fake::named("b").spawn().await,
    );
    let file = ConfigFile::new(&yaml(
        json!({ "listen": "127.0.0.1:0", "token_file": "token" }),
        a.addr,
        b.addr,
    ));
    file.write_sibling("token", &format!("{TOKEN}\n"));
    let proxy = Proxy::start_file(&file.path).await;
    proxy.wait_candidates("rw", 2).await;
    (proxy, file, [a, b])
}

fn admin_state_of(proxy: &Proxy) -> String {
    let snapshot = proxy.app.supervisor().status.load_full();
    snapshot.clusters[0]
        .backends
        .iter()
        .map(|b| format!("{}={}", b.name, b.admin))
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test]
async fn mutating_endpoints_need_the_right_bearer_token() {
    let (proxy, _file, _backends) = with_token().await;
    let admin = proxy.admin();
    let endpoints = [
        "/reload",
        "/backends/app/a/drain",
        "/backends/app/a/disable",
        "/backends/app/a/enable",
    ];
    let mut refused = 0.0;
    for path in endpoints {
        for (token, what) in [(None, "missing"), (Some("wrong-token"), "wrong")] {
            let r = post(admin, path, token).await;
            assert_eq!(r.status, 401, "{what} token on {path}: {}", r.body);
            assert!(
                r.header("www-authenticate")
                    .is_some_and(|v| v.starts_with("Bearer")),
                "{r:?}"
            );
            assert!(!r.body.contains(TOKEN), "{}", r.body);
            refused += 1.0;
        }
        // A token of another scheme, and the right token in the wrong place, change nothing.
        let basic = request(admin, "POST", path, &["Authorization: Basic YTpi"], b"").await;
        assert_eq!(basic.status, 401, "{}", basic.body);
        let query = post(admin, &format!("{path}?token={TOKEN}"), None).await;
        assert_eq!(query.status, 401);
        refused += 2.0;
    }
    let m = proxy.metrics();
    assert_eq!(
        metric_value(&m, "rolegate_admin_auth_failures_total "),
        Some(refused)
    );
    assert_eq!(
        metric_value(&m, "rolegate_config_reloads_total{result=\"success\"}"),
        Some(0.0)
    );
    assert_eq!(
        admin_state_of(&proxy),
        "a=enabled,b=enabled",
        "nothing changed"
    );

    for path in endpoints {
        let r = post(admin, path, Some(TOKEN)).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    let m = proxy.metrics();
    assert_eq!(
        metric_value(&m, "rolegate_config_reloads_total{result=\"success\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&m, "rolegate_admin_auth_failures_total "),
        Some(refused)
    );
    proxy.stop().await;
}

#[tokio::test]
async fn without_a_token_only_loopback_peers_may_post() {
    let (a, b) = (
        fake::named("a").spawn().await,
        fake::named("b").spawn().await,
    );
    let file = ConfigFile::new(&yaml(json!({ "listen": "127.0.0.1:0" }), a.addr, b.addr));
    let proxy = Proxy::start_file(&file.path).await;
    let state = AdminState::new(proxy.app.clone());
    let post_from = |peer: &str| {
        let req = hyper::Request::post("/backends/app/a/drain")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let state = state.clone();
        let peer: SocketAddr = peer.parse().unwrap();
        async move { admin::handle(&state, peer, req).await }
    };
    for remote in [
        "10.0.0.7:40000",
        "[2001:db8::7]:40000",
        "[::ffff:192.0.2.1]:1",
    ] {
        let r = post_from(remote).await;
        assert_eq!(r.status(), 403, "{remote}");
        assert!(r.headers().get("www-authenticate").is_none());
    }
    assert_eq!(admin_state_of(&proxy), "a=enabled,b=enabled");
    assert_eq!(post_from("127.0.0.1:40000").await.status(), 200);
    assert_eq!(admin_state_of(&proxy), "a=drain,b=enabled");
    // Over a real loopback socket too.
    let r = post(proxy.admin(), "/backends/app/b/drain", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let m = proxy.metrics();
    assert_eq!(
        metric_value(&m, "rolegate_admin_auth_failures_total "),
        Some(3.0)
    );
    proxy.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_a_4xx_with_a_reason() {
    let (proxy, _file, _backends) = with_token().await;
    let admin = proxy.admin();
    let auth = format!("Authorization: Bearer {TOKEN}");
    let cases: Vec<(http::Response, u16, &str)> = vec![
        (get(admin, "/").await, 404, "endpoints: GET /metrics"),
        (get(admin, "/nope").await, 404, "no endpoint \"/nope\""),
        (get(admin, "/status/").await, 404, "no endpoint"),
        (
            post(admin, "/backends/app/a/reboot", Some(TOKEN)).await,
            404,
            "unknown backend action",
        ),
        (
            post(admin, "/backends/app/zz/drain", Some(TOKEN)).await,
            404,
            "no backend app/zz",
        ),
        (
            post(admin, "/backends/nope/a/drain", Some(TOKEN)).await,
            404,
            "no backend nope/a",
        ),
        (
            post(admin, "/backends/app/a", Some(TOKEN)).await,
            404,
            "backend actions are POST",
        ),
        (get(admin, "/reload").await, 405, "use POST"),
        (post(admin, "/metrics", None).await, 405, "use GET, HEAD"),
        (
            request(admin, "DELETE", "/status", &[], b"").await,
            405,
            "method DELETE",
        ),
        (
            request(admin, "POST", "/reload", &[&auth], b"{\"junk\": true}").await,
            400,
            "takes no request body",
        ),
        (
            request(
                admin,
                "POST",
                "/reload",
                &[&auth, "Content-Length: 100000"],
                b"",
            )
            .await,
            413,
            "larger than 4096 bytes",
        ),
    ];
    for (r, status, reason) in &cases {
        assert_eq!(r.status, *status, "{r:?}");
        assert!(r.body.contains(reason), "want {reason:?} in {:?}", r.body);
    }
    let allow: Vec<_> = cases
        .iter()
        .filter(|c| c.1 == 405)
        .map(|c| c.0.header("allow"))
        .collect();
    assert_eq!(allow, [Some("POST"), Some("GET, HEAD"), Some("GET, HEAD")]);
    assert_eq!(admin_state_of(&proxy), "a=enabled,b=enabled");

    // Not HTTP at all, control bytes in a header, a huge head: hyper answers, nothing panics.
    for (bytes, want) in [
        (&b"\x00\x01\x02 hello\r\n\r\n"[..], "HTTP/1.1 400"),
        (
            b"GET /status HTTP/1.1\r\nX-Junk: a\x01b\r\n\r\n",
            "HTTP/1.1 400",
        ),
        (
            b"GET /status HTTP/1.1\r\nno colon here\r\n\r\n",
            "HTTP/1.1 400",
        ),
    ] {
        let answer = raw(admin, bytes).await;
        assert!(answer.starts_with(want), "{bytes:?} -> {answer:?}");
    }
    let huge = format!(
        "GET /status HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "x".repeat(64 * 1024)
    );
    let answer = raw(admin, huge.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    // A non-UTF-8 token is just a wrong token.
    let r = raw(admin, b"POST /reload HTTP/1.1\r\nAuthorization: Bearer \xff\xfe\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 401"), "{r:?}");

    // A body without a declared length is still cut at the limit.
    let state = AdminState::new(proxy.app.clone());
    let req = hyper::Request::post("/reload")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::from(vec![
            b'x';
            admin::MAX_BODY_BYTES + 1
        ])))
        .unwrap();
    let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
    assert_eq!(admin::handle(&state, peer, req).await.status(), 413);

    // Every method on odd paths: a 4xx (or a 2xx for a plain read), never a 5xx or a panic.
    let methods = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "BREW",
    ];
    let paths = [
        "/",
        "//",
        "/%00",
        "/metrics?x=1",
        "/backends/%2F/a/drain",
        "/backends/app/a/drain/",
        "/backends/../reload",
        "/readyz#frag",
        "/status/../status",
        "*",
    ];
    for method in methods {
        for path in paths {
            let Ok(req) = hyper::Request::builder()
                .method(method)
                .uri(path)
                .body(Full::new(Bytes::from_static(b"junk")))
            else {
                continue; // not even a request; hyper would have refused it
            };
            let status = admin::handle(&state, peer, req).await.status();
            assert!(
                status.is_client_error() || status.is_success(),
                "{method} {path} -> {status}"
            );
        }
    }

    let head = request(admin, "HEAD", "/status", &[], b"").await;
    assert_eq!(
        (head.status, head.body.as_str()),
        (200, ""),
        "HEAD answers without a body"
    );

    assert_eq!(get(admin, "/healthz").await.status, 200, "still serving");
    assert_eq!(
        metric_value(
            &proxy.metrics(),
            "rolegate_config_reloads_total{result=\"success\"}"
        ),
        Some(0.0),
        "no refused request reloaded anything"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn status_has_the_documented_fields() {
    let (proxy, _file, _backends) = with_token().await;
    let r = get(proxy.admin(), "/status").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let s = r.json();
    for key in [
        "version",
        "ready",
        "config_file",
        "generation",
        "clusters",
        "listeners",
    ] {
        assert!(s.get(key).is_some(), "top-level {key} missing: {s:#}");
    }
    assert_eq!(s["ready"], true);
    let cluster = &s["clusters"][0];
    for key in [
        "name",
        "protocol",
        "primary",
        "split_brain",
        "split_brain_policy",
        "stale",
        "seconds_without_primary",
        "backends",
    ] {
        assert!(
            cluster.get(key).is_some(),
            "cluster.{key} missing: {cluster:#}"
        );
    }
    assert_eq!(cluster["protocol"], "tcp");
    let backend = &cluster["backends"][0];
    for key in [
        "name",
        "address",
        "resolved",
        "health",
        "role",
        "admin",
        "stale",
        "replication_lag_seconds",
        "timeline",
        "last_error",
        "last_error_reason",
        "last_check_duration_ms",
        "sessions",
    ] {
        assert!(
            backend.get(key).is_some(),
            "backend.{key} missing: {backend:#}"
        );
    }
    assert_eq!(
        (&backend["health"], &backend["admin"]),
        (&"up".into(), &"enabled".into())
    );
    let listener = &s["listeners"][0];
    for key in [
        "name",
        "bind",
        "local_addr",
        "cluster",
        "role",
        "serving",
        "backends",
        "unavailable",
    ] {
        assert!(
            listener.get(key).is_some(),
            "listener.{key} missing: {listener:#}"
        );
    }
    assert_eq!(listener["local_addr"], proxy.addr("rw").await.to_string());
    let text = r.body.to_lowercase();
    assert!(
        !text.contains(TOKEN) && !text.contains("token"),
        "no secret in /status"
    );
    proxy.stop().await;
}

#[test]
fn a_public_admin_address_without_a_token_is_refused_by_validation() {
    let text = "admin: { listen: 0.0.0.0:9813 }
clusters: [{ name: c, protocol: tcp, backends: [{ name: a, address: 127.0.0.1:1 }] }]
listeners: [{ name: l, bind: 127.0.0.1:7000, cluster: c }]
";
    let err = Config::from_yaml_str(text, None).expect_err("must not validate");
    let msg = err.to_string();
    assert!(
        msg.contains("admin.listen: 0.0.0.0:9813 is not a loopback address, so the admin actions need a token"),
        "{msg}"
    );
}
