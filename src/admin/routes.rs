//! The read-only endpoints: `/metrics`, `/healthz`, `/readyz`, `/status`.
//!
//! None of them takes a lock the data plane waits on: the routing table and the status
//! snapshot are `ArcSwap` loads, and the metrics registry is read with atomics.

use hyper::header::CONTENT_TYPE;
use hyper::{Response, StatusCode};
use serde_json::Value;

use super::Proxy;
use super::{text, Body};
use crate::config::Config;
use crate::routing::{RoutingTable, Unavailable};

/// The Prometheus text exposition format the encoder writes.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(super) fn metrics(proxy: &dyn Proxy) -> Response<Body> {
    proxy.refresh_steer();
    let mut response = Response::new(Body::from(proxy.metrics().encode()));
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(METRICS_CONTENT_TYPE),
    );
    response
}

/// 200 while the process runs: nothing here can fail without the process being gone.
pub(super) fn healthz() -> Response<Body> {
    text(StatusCode::OK, "ok\n")
}

/// One listener that cannot place a new connection now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unready {
    pub listener: String,
    pub reason: &'static str,
}

/// Listeners of `config` that cannot place a new connection with `table`, in config order.
/// A listener without a route (a reload added it and the table is not stored yet) counts as
/// unready, so readiness never runs ahead of the routing.
pub fn unready(config: &Config, table: &RoutingTable) -> Vec<Unready> {
    if table.generation == 0 {
        return vec![Unready {
            listener: "*".to_string(),
            reason: "no routing table yet",
        }];
    }
    config
        .listeners
        .iter()
        .filter_map(|l| {
            let reason = match table.route(&l.name) {
                None => "no_route",
                // Held connections are accepted and placed within the hold: still ready.
                Some(route) if route.unavailable == Some(Unavailable::Held) => return None,
                Some(route) => route.unavailable?.as_str(),
            };
            Some(Unready {
                listener: l.name.to_string(),
                reason,
            })
        })
        .collect()
}

/// 200 when every listener has a candidate; otherwise 503 and `listener: reason` per line
/// (keepalived's `vrrp_script` and Kubernetes only look at the status; humans read the body).
pub(super) async fn readyz(proxy: &dyn Proxy) -> Response<Body> {
    let config = proxy.config().await;
    let missing = unready(&config, &proxy.router().load());
    if missing.is_empty() {
        return text(StatusCode::OK, "ready\n");
    }
    let body: String = missing
        .iter()
        .map(|u| format!("{}: {}\n", u.listener, u.reason))
        .collect();
    text(StatusCode::SERVICE_UNAVAILABLE, body)
}

/// The supervisor's snapshot (field names documented in README.md, "/status"), plus what
/// only the proxy knows: `version`, `ready`, the config file, and each listener's `local_addr`
/// (the bound address; differs from `bind` when that asks for port 0).
pub(super) async fn status(proxy: &dyn Proxy) -> Response<Body> {
    let snapshot = proxy.status();
    let config = proxy.config().await;
    let mut value = match serde_json::to_value(&*snapshot) {
        Ok(v) => v,
        Err(error) => return internal(&error),
    };
    if let Some(top) = value.as_object_mut() {
        let ready = unready(&config, &proxy.router().load()).is_empty();
        top.insert("version".into(), env!("CARGO_PKG_VERSION").into());
        top.insert("ready".into(), ready.into());
        let file = config.source.as_ref().map(|p| p.display().to_string());
        top.insert("config_file".into(), file.into());
    }
    let steer = proxy.steer_status();
    if let Some(listeners) = value.get_mut("listeners").and_then(Value::as_array_mut) {
        for listener in listeners {
            let name = listener.get("name").and_then(Value::as_str).unwrap_or("");
            let local = proxy.listener_addr(name).await.map(|a| a.to_string());
            let steered = steer.get(name).and_then(|s| serde_json::to_value(s).ok());
            if let Some(obj) = listener.as_object_mut() {
                obj.insert("local_addr".into(), local.into());
                if let Some(steered) = steered {
                    obj.insert("steer".into(), steered);
                }
            }
        }
    }
    match serde_json::to_vec_pretty(&value) {
        Ok(mut body) => {
            body.push(b'\n');
            let mut response = Response::new(Body::from(body));
            response.headers_mut().insert(
                CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(error) => internal(&error),
    }
}

fn internal(error: &serde_json::Error) -> Response<Body> {
    tracing::error!(message = "Cannot encode /status.", %error);
    text(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("cannot encode status: {error}\n"),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config() -> Config {
        let yaml =
            "clusters: [{ name: c, protocol: tcp, backends: [{ name: a, address: 127.0.0.1:1 }] }]
listeners:
  - { name: one, bind: 127.0.0.1:0, cluster: c }
  - { name: two, bind: 127.0.0.1:0, cluster: c }
";
        Config::from_yaml_str(yaml, None).expect("valid test config")
    }

    #[test]
    fn not_ready_before_the_first_routing_table() {
        let missing = unready(&config(), &RoutingTable::empty());
        assert_eq!(
            missing,
            [Unready {
                listener: "*".into(),
                reason: "no routing table yet"
            }]
        );
    }

    #[test]
    fn a_listener_without_a_route_is_not_ready_in_config_order() {
        let table = RoutingTable::new(1, HashMap::new());
        let names: Vec<_> = unready(&config(), &table)
            .into_iter()
            .map(|u| format!("{}: {}", u.listener, u.reason))
            .collect();
        assert_eq!(names, ["one: no_route", "two: no_route"]);
    }
}
