//! A reload that cannot be applied changes nothing: with each of several broken files, and
//! with a new listener whose address is taken, the old config keeps serving, `POST /reload`
//! answers with the error (file:line:column and field), and the attempt is counted as an
//! error.

use crate::support;

use std::net::SocketAddr;

use support::files::ConfigFile;
use support::http::post;
use support::{fake, metric_value, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Line 5 is the check, line 9 the listener: the broken variants edit those two lines, so
/// the expected columns do not depend on the backend's (ephemeral) address on line 7.
fn good(backend: SocketAddr) -> String {
    format!(
        "admin: {{ listen: 127.0.0.1:0 }}
clusters:
  - name: app
    protocol: tcp
    check: {{ interval: 200ms, timeout: 200ms, rise: 1, fall: 2 }}
    backends:
      - {{ name: a, address: \"{backend}\" }}
listeners:
  - {{ name: l, bind: \"127.0.0.1:0\", cluster: app, role: any }}
"
    )
}

/// (what, edit of the good file, expected error after `FILE:`).
fn broken(good: &str) -> Vec<(&'static str, String, &'static str)> {
    vec![
        (
            "indentation",
            good.replace("    protocol: tcp", "   protocol: tcp"),
            ":4:4: did not find expected '-' indicator",
        ),
        (
            "unknown key",
            good.replace("{ interval:", "{ intervall:"),
            ":5:14: clusters[0].check.intervall: unknown field `intervall`",
        ),
        (
            "wrong type",
            good.replace("rise: 1", "rise: many"),
            ":5:53: clusters[0].check.rise: invalid type: string \"many\"",
        ),
        (
            "duration without unit",
            good.replace("interval: 200ms", "interval: 200"),
            ":5:24: clusters[0].check.interval: duration 200 has no unit; write 200s or 200ms",
        ),
        (
            "undefined cluster",
            good.replace("cluster: app,", "cluster: nope,"),
            ":9:46: listeners[0].cluster: cluster \"nope\" is not defined",
        ),
        (
            "unknown role",
            good.replace("role: any", "role: leader"),
            ":9:57: listeners[0].role: unknown variant `leader`",
        ),
        (
            "empty file",
            String::new(),
            ": listeners: no listeners are configured",
        ),
    ]
}

async fn serves(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return false;
    };
    let ok = s.write_all(b"ping").await.is_ok() && s.shutdown().await.is_ok();
    let mut back = Vec::new();
    ok && s.read_to_end(&mut back).await.is_ok() && back == b"ping"
}

fn errors_counted(proxy: &Proxy) -> (Option<f64>, Option<f64>) {
    let m = proxy.metrics();
    (
        metric_value(&m, "rolegate_config_reloads_total{result=\"success\"}"),
        metric_value(&m, "rolegate_config_reloads_total{result=\"error\"}"),
    )
}

#[tokio::test]
async fn broken_files_change_nothing_and_say_where() {
    let backend = fake::echo().spawn().await;
    let good = good(backend.addr);
    let file = ConfigFile::new(&good);
    let proxy = Proxy::start_file(&file.path).await;
    proxy.wait_candidates("l", 1).await;
    let listener = proxy.addr("l").await;
    let running = proxy.app.config().await;
    let stamp = "rolegate_config_last_reload_success_timestamp_seconds ";
    let loaded_at = metric_value(&proxy.metrics(), stamp);
    let path = file.path.display().to_string();

    let cases = broken(&good);
    for (n, (what, text, expected)) in cases.iter().enumerate() {
        file.write(text);
        let r = post(proxy.admin(), "/reload", None).await;
        assert_eq!(r.status, 422, "{what}: {}", r.body);
        let want = format!("{path}{expected}");
        assert!(
            r.body.contains(&want),
            "{what}: want {want:?} in\n{}",
            r.body
        );
        assert!(
            r.body.contains("previous configuration keeps running"),
            "{}",
            r.body
        );
        assert_eq!(
            *proxy.app.config().await,
            *running,
            "{what}: config unchanged"
        );
        assert_eq!(proxy.addr("l").await, listener);
        assert!(
            serves(listener).await,
            "{what}: the old config still serves"
        );
        assert_eq!(errors_counted(&proxy), (Some(0.0), Some(n as f64 + 1.0)));
    }
    // The file disappears (a deploy tool deleted it before writing the new one).
    std::fs::remove_file(&file.path).unwrap();
    let r = proxy.app.reload_from_source().await.expect_err("no file");
    assert!(r.to_string().contains("cannot read the config file"), "{r}");
    assert!(serves(listener).await);
    assert_eq!(
        metric_value(&proxy.metrics(), stamp),
        loaded_at,
        "no success stamped"
    );

    file.write(&good);
    let r = post(proxy.admin(), "/reload", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (ok, errors) = errors_counted(&proxy);
    assert_eq!((ok, errors), (Some(1.0), Some(cases.len() as f64 + 1.0)));
    proxy.stop().await;
}

#[tokio::test]
async fn a_new_listener_on_a_taken_address_changes_nothing() {
    let backend = fake::echo().spawn().await;
    let good = good(backend.addr);
    let file = ConfigFile::new(&good);
    let proxy = Proxy::start_file(&file.path).await;
    proxy.wait_candidates("l", 1).await;
    let listener = proxy.addr("l").await;
    let running = proxy.app.config().await;

    // A port the test holds: the new listener cannot bind it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    file.write(&format!(
        "{good}  - {{ name: l2, bind: \"127.0.0.1:{port}\", cluster: app, role: any }}\n"
    ));
    let r = post(proxy.admin(), "/reload", None).await;
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(r.body.contains("listener l2"), "{}", r.body);
    assert!(
        r.body.contains("previous configuration keeps running"),
        "{}",
        r.body
    );
    assert_eq!(*proxy.app.config().await, *running);
    assert!(proxy.app.listener_addr("l2").await.is_none());
    assert!(serves(listener).await);
    assert_eq!(errors_counted(&proxy), (Some(0.0), Some(1.0)));
    proxy.stop().await;
}

#[tokio::test]
async fn a_config_not_from_a_file_cannot_be_reloaded() {
    let backend = fake::echo().spawn().await;
    let proxy = Proxy::start(&good(backend.addr)).await;
    let r = post(proxy.admin(), "/reload", None).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("not loaded from a file"), "{}", r.body);
    assert_eq!(errors_counted(&proxy), (Some(0.0), Some(1.0)));
    proxy.stop().await;
}
