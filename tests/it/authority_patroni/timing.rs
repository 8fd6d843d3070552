//! Patroni's dynamic configuration key (`/<namespace>/<scope>/config`): `/status` shows the
//! failover timing Patroni uses, a primary listener whose `queue_timeout` is below `ttl` +
//! `loop_wait` is warned about (once, and again when it changes), and an absent or garbage key
//! is reported without touching routing.

use serde_json::Value;
use support::binary::{self, Rolegate, Start};
use support::files::ConfigFile;
use support::http::get;

use super::reload::{cluster, reload, status, wait_status, Ask};
use super::*;

const SHORT_WARNING: &str = "queue_timeout is shorter than Patroni's failover time (ttl + loop_wait): when the primary dies, new connections these listeners queue are refused before Patroni promotes a replica. Raise queue_timeout above it.";
const ALL_CLEAR: &str =
    "Every primary listener's queue_timeout now exceeds Patroni's failover time (ttl + loop_wait).";

/// The lab's Patroni pair as cluster `pat` under Patroni's real scope, with two primary
/// listeners (`rw_a` waiting `queue_a`, `rw_b` waiting `queue_b`) and a replica listener that
/// refuses at once (never judged: replica routes are not held by a dead primary).
fn two_listeners(queue_a: &str, queue_b: &str) -> String {
    let (a, b) = (patroni_addr("A"), patroni_addr("B"));
    let pw = lab::monitor_password();
    let auth = authority_yaml(
        &etcd_endpoints(),
        &patroni_setting("namespace"),
        &patroni_setting("scope"),
    );
    format!(
        "log: {{ format: json }}
admin: {{ listen: 127.0.0.1:0 }}
clusters:
  - name: pat
    protocol: postgres
    check: {{ user: rolegate_monitor, password: \"{pw}\", database: postgres }}
    {auth}
    backends:
      - {{ name: a, address: \"{a}\", patroni_member: A }}
      - {{ name: b, address: \"{b}\", patroni_member: B }}
listeners:
  - {{ name: rw_a, bind: \"127.0.0.1:0\", cluster: pat, role: primary, queue_timeout: {queue_a} }}
  - {{ name: rw_b, bind: \"127.0.0.1:0\", cluster: pat, role: primary, queue_timeout: {queue_b} }}
  - {{ name: ro_pat, bind: \"127.0.0.1:0\", cluster: pat, role: replica, queue_timeout: 0s }}
"
    )
}

/// The warning lines logged so far.
fn warnings(rg: &Rolegate) -> Vec<Value> {
    rg.json_lines()
        .into_iter()
        .filter(|l| l["message"] == SHORT_WARNING)
        .collect()
}

/// The short listeners `/status` names.
fn short_in_status(s: &Value) -> Vec<(String, u64)> {
    cluster(s, "pat")["authority"]["failover_timing"]["short_queue_timeout"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    (
                        x["listener"].as_str().unwrap_or_default().to_string(),
                        x["queue_timeout_ms"].as_u64().unwrap_or(u64::MAX),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Against the lab's real Patroni: `/status` reports the `ttl`, `loop_wait` and
/// `retry_timeout` that Patroni's own REST API (`GET /config`) says it applies; the primary
/// listener queuing for less than `ttl` + `loop_wait` is warned about by name, the one queuing
/// longer is not; a reload that lengthens the short one logs an all-clear and no new warning,
/// and a reload that shortens the other warns again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_patronis_timing_and_a_short_queue_timeout_is_warned() {
    let Some(_) = require::lab_engine("patroni") else {
        return;
    };
    let _lock = lab::lock_read_only();
    // What Patroni itself applies, from its REST API (not from the key rolegate reads).
    let rest = lab::node("patroni", "A")
        .rest_port
        .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
        .expect("the lab's Patroni A has a REST port");
    let conf = get(rest, "/config").await;
    assert_eq!(conf.status, 200, "Patroni GET /config: {}", conf.body);
    let conf = conf.json();
    let ttl = conf["ttl"].as_u64().expect("Patroni's ttl");
    let loop_wait = conf["loop_wait"].as_u64().expect("Patroni's loop_wait");
    let retry = conf["retry_timeout"]
        .as_u64()
        .expect("Patroni's retry_timeout");
    let window_ms = (ttl + loop_wait) * 1000;
    let (short, long) = (window_ms / 2, window_ms * 2);

    let file = ConfigFile::new(&two_listeners(&format!("{short}ms"), &format!("{long}ms")));
    let rg = Rolegate::start(&file.path, Start::default()).await;
    let admin = rg.admin();
    binary::wait_ready(admin).await;
    wait_status(admin, "Patroni's timing in /status", |s| {
        let t = &cluster(s, "pat")["authority"]["failover_timing"];
        let ok = t["ttl_s"].as_u64() == Some(ttl)
            && t["loop_wait_s"].as_u64() == Some(loop_wait)
            && t["retry_timeout_s"].as_u64() == Some(retry)
            && t["unplanned_failover_s"].as_u64() == Some(ttl + loop_wait)
            && t["error"].is_null()
            && short_in_status(s) == [("rw_a".to_string(), short)];
        ok.then_some(()).ok_or(format!("failover_timing {t}"))
    })
    .await;
    let now = status(admin).await;
    let t = &cluster(&now, "pat")["authority"]["failover_timing"];
    let key = format!(
        "/{}/{}/config",
        patroni_setting("namespace").trim_matches('/'),
        patroni_setting("scope")
    );
    assert_eq!(t["key"], key.as_str(), "{t}");
    let ws = warnings(&rg);
    assert_eq!(ws.len(), 1, "one warning: {ws:#?}");
    let w = &ws[0];
    assert_eq!(w["level"], "WARN", "{w}");
    let named = w["listeners"].as_str().unwrap_or_default();
    assert!(
        named.contains("rw_a") && !named.contains("rw_b") && !named.contains("ro_pat"),
        "only the short primary listener is named: {w}"
    );
    assert_eq!(
        (w["ttl_s"].as_u64(), w["loop_wait_s"].as_u64()),
        (Some(ttl), Some(loop_wait)),
        "{w}"
    );

    // Lengthened by a reload: an all-clear, no second warning, nothing short in /status.
    reload(
        &rg,
        &file,
        &two_listeners(&format!("{long}ms"), &format!("{long}ms")),
        Ask::Sighup,
        1.0,
    )
    .await;
    wait_status(admin, "no short listener left", |s| {
        let short = short_in_status(s);
        short.is_empty().then_some(()).ok_or(format!("{short:?}"))
    })
    .await;
    support::eventually(Duration::from_secs(10), "the all-clear line", || {
        let n = rg.count(ALL_CLEAR);
        async move { n == 1 }
    })
    .await;
    assert_eq!(warnings(&rg).len(), 1, "no warning for long queues");

    // The other one shortened: warned again, naming it.
    reload(
        &rg,
        &file,
        &two_listeners(&format!("{long}ms"), "0s"),
        Ask::Post,
        2.0,
    )
    .await;
    wait_status(admin, "rw_b short", |s| {
        let short = short_in_status(s);
        (short == [("rw_b".to_string(), 0)])
            .then_some(())
            .ok_or(format!("{short:?}"))
    })
    .await;
    support::eventually(Duration::from_secs(10), "a second warning", || {
        let n = warnings(&rg).len();
        async move { n == 2 }
    })
    .await;
    let named = warnings(&rg)[1]["listeners"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(named.contains("rw_b") && !named.contains("rw_a"), "{named}");
    rg.stop_cleanly().await;
}

/// Hand-written keys over the lab's PostgreSQL pair: with no configuration key `/status`
/// says so, naming the key, and routing goes on; garbage in the key is reported the same way;
/// a key with some fields gives them and Patroni's defaults for the rest (each change arrives
/// by the watch); deleted, it is unknown again. The route never moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_or_garbage_config_key_is_reported_and_routing_goes_on() {
    let Some(_) = require::lab(&[Engine::Pg]) else {
        return;
    };
    let Some(_) = require::lab_engine("etcd") else {
        return;
    };
    let _lock = lab::lock_read_only();
    let mut keys = HandKeys::new().await;
    keys.put("leader", "A").await;
    let key = keys.key("config");
    let auth = authority_yaml(&etcd_endpoints(), &keys.namespace, &keys.scope);
    let yaml = config_yaml(&[ClusterYaml {
        name: "db",
        a: Engine::Pg.addr('A'),
        b: Engine::Pg.addr('B'),
        extra: auth,
        queue: "200ms",
    }]);
    let proxy = Proxy::start(&yaml).await;
    let timing = |proxy: &Proxy| authority(proxy, "db").failover_timing;
    wait_authority(&proxy, "db", "no config key: unknown, routed", |s| {
        let t = s.failover_timing.as_ref();
        s.gate == Some("agrees")
            && t.is_some_and(|t| {
                t.ttl_s.is_none()
                    && t.error
                        .as_deref()
                        .is_some_and(|e| e.contains(&key) && e.contains("absent"))
            })
    })
    .await;
    proxy.wait_route("rw_db", "a routed", |n| n == ["a"]).await;
    let port = db::connect_and_write(Engine::Pg, proxy.addr("rw_db").await, "timing-absent")
        .await
        .expect("routed without a config key");
    assert_eq!(port, Engine::Pg.addr('A').port());

    keys.put("config", "{ this is not json").await;
    wait_authority(&proxy, "db", "garbage: unknown, naming the key", |s| {
        s.failover_timing.as_ref().is_some_and(|t| {
            t.error
                .as_deref()
                .is_some_and(|e| e.contains(&key) && e.contains("not JSON"))
        })
    })
    .await;
    assert_eq!(authority(&proxy, "db").gate, Some("agrees"));

    keys.put("config", r#"{"ttl": 20, "loop_wait": "5"}"#).await;
    wait_authority(&proxy, "db", "the key's values", |s| {
        s.failover_timing
            .as_ref()
            .is_some_and(|t| t.ttl_s == Some(20) && t.loop_wait_s == Some(5))
    })
    .await;
    let t = timing(&proxy).expect("timing");
    assert_eq!(t.retry_timeout_s, Some(10), "Patroni's default");
    assert_eq!(t.defaulted, vec!["retry_timeout"]);
    assert_eq!(t.unplanned_failover_s, Some(25));
    assert_eq!(t.key.as_deref(), Some(key.as_str()));
    assert_eq!(t.error, None);
    let short: Vec<&str> = t
        .short_queue_timeout
        .iter()
        .map(|s| s.listener.as_str())
        .collect();
    assert_eq!(short, ["rw_db"], "200 ms < 25 s");

    keys.delete("config").await;
    wait_authority(&proxy, "db", "deleted: unknown again", |s| {
        s.failover_timing
            .as_ref()
            .is_some_and(|t| t.ttl_s.is_none() && t.short_queue_timeout.is_empty())
    })
    .await;
    let port = db::connect_and_write(Engine::Pg, proxy.addr("rw_db").await, "timing-deleted")
        .await
        .expect("still routed");
    assert_eq!(port, Engine::Pg.addr('A').port());
    proxy.stop().await;
    keys.cleanup().await;
}
