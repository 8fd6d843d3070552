//! Test configs built from typed parts instead of `format!`ed YAML: a [`ConfigBuilder`] of
//! [`Cluster`]s and [`Listener`]s whose `.yaml()` is JSON text (JSON is YAML, so rolegate
//! reads it as it reads any config file; no YAML writer needed). The defaults are what most
//! tests want — an admin server on an ephemeral port, listeners on `127.0.0.1:0` — and every
//! other key of CONFIG.md is set with `.set(key, value)`, so a test names only what it is about.
//!
//! ```ignore
//! let yaml = ConfigBuilder::new()
//!     .cluster(Cluster::tcp("app").check(Check::fast()).backend("a", a.addr))
//!     .listener(Listener::new("rw", "app").role("any").set("queue_timeout", "0s"))
//!     .yaml();
//! ```

use std::net::SocketAddr;

use serde_json::{json, Map, Value};

use super::lab::{self, Engine};

/// A whole config: `admin`, `clusters`, `listeners` and any other top-level key.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    top: Map<String, Value>,
    clusters: Vec<Cluster>,
    listeners: Vec<Listener>,
}

impl Default for ConfigBuilder {
    fn default() -> Self {
        ConfigBuilder::new()
    }
}

impl ConfigBuilder {
    /// No clusters or listeners yet; the admin server on `127.0.0.1:0`.
    pub fn new() -> ConfigBuilder {
        let mut top = Map::new();
        top.insert("admin".into(), json!({ "listen": "127.0.0.1:0" }));
        ConfigBuilder {
            top,
            clusters: Vec::new(),
            listeners: Vec::new(),
        }
    }

    /// The `admin` block, replaced as a whole (e.g. `json!({ "enabled": false })`).
    pub fn admin(self, admin: Value) -> Self {
        self.set("admin", admin)
    }

    /// Any top-level key (`log`, `workers`, `fd_reserve`, …).
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.top.insert(key.into(), value.into());
        self
    }

    pub fn cluster(mut self, cluster: Cluster) -> Self {
        self.clusters.push(cluster);
        self
    }

    pub fn listener(mut self, listener: Listener) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Changes cluster `name` in place (panics naming it when there is none).
    pub fn edit_cluster(mut self, name: &str, edit: impl FnOnce(Cluster) -> Cluster) -> Self {
        let i = self
            .clusters
            .iter()
            .position(|c| c.fields["name"] == name)
            .unwrap_or_else(|| panic!("no cluster {name} in the test config"));
        let cluster = self.clusters.remove(i);
        self.clusters.insert(i, edit(cluster));
        self
    }

    /// Changes listener `name` in place (panics naming it when there is none).
    pub fn edit_listener(mut self, name: &str, edit: impl FnOnce(Listener) -> Listener) -> Self {
        let i = self
            .listeners
            .iter()
            .position(|l| l.0["name"] == name)
            .unwrap_or_else(|| panic!("no listener {name} in the test config"));
        let listener = self.listeners.remove(i);
        self.listeners.insert(i, edit(listener));
        self
    }

    /// The config as a JSON value.
    pub fn value(&self) -> Value {
        let mut top = self.top.clone();
        top.insert(
            "clusters".into(),
            self.clusters.iter().map(Cluster::value).collect(),
        );
        top.insert(
            "listeners".into(),
            self.listeners
                .iter()
                .map(|l| Value::Object(l.0.clone()))
                .collect(),
        );
        Value::Object(top)
    }

    /// The config as text for a file or [`super::Proxy::start`] (indented JSON, which is YAML).
    pub fn yaml(&self) -> String {
        let mut text = serde_json::to_string_pretty(&self.value()).expect("a JSON value");
        text.push('\n');
        text
    }
}

/// A cluster: `name`, `protocol`, `check`, `backends` and any other key.
#[derive(Debug, Clone)]
pub struct Cluster {
    fields: Map<String, Value>,
    check: Check,
    backends: Vec<Value>,
}

impl Cluster {
    pub fn new(name: &str, protocol: &str) -> Cluster {
        let mut fields = Map::new();
        fields.insert("name".into(), name.into());
        fields.insert("protocol".into(), protocol.into());
        Cluster {
            fields,
            check: Check::default(),
            backends: Vec::new(),
        }
    }

    /// A `protocol: tcp` cluster (a backend that accepts is a primary).
    pub fn tcp(name: &str) -> Cluster {
        Cluster::new(name, "tcp")
    }

    /// A cluster of the lab's pair for `engine` (backends `a` and `b`) whose checks log in as
    /// the lab's monitor user; rolegate's default check timing.
    pub fn lab(name: &str, engine: Engine) -> Cluster {
        Cluster::lab_protocol(name, engine)
            .backend("a", engine.addr('A'))
            .backend("b", engine.addr('B'))
    }

    /// [`Cluster::lab`] without backends, for tests that put something between rolegate and
    /// the lab's servers (relays, silent listeners).
    pub fn lab_protocol(name: &str, engine: Engine) -> Cluster {
        let (protocol, check) = match engine {
            Engine::Pg => (
                "postgres",
                Check::default()
                    .set("user", "rolegate_monitor")
                    .set("database", "postgres"),
            ),
            Engine::Mysql => ("mysql", Check::default().set("user", "rolegate_monitor")),
            Engine::Redis => ("redis", Check::default()),
        };
        Cluster::new(name, protocol).check(check.set("password", lab::monitor_password()))
    }

    /// Replaces the check block.
    pub fn check(mut self, check: Check) -> Self {
        self.check = check;
        self
    }

    /// Adds `more`'s keys to the check block (replacing those it shares), keeping the others:
    /// timing on top of the lab's credentials.
    pub fn check_with(mut self, more: Check) -> Self {
        self.check.0.extend(more.0);
        self
    }

    /// Changes one key of the check block (`interval`, `tls`, …), keeping the others.
    pub fn check_set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.check = self.check.set(key, value);
        self
    }

    pub fn backend(self, name: &str, address: impl ToString) -> Self {
        self.backend_with(name, address, json!({}))
    }

    /// A backend with more keys (`check_address`, `weight`, …) from a JSON object.
    pub fn backend_with(mut self, name: &str, address: impl ToString, more: Value) -> Self {
        let mut backend = Map::new();
        backend.insert("name".into(), name.into());
        backend.insert("address".into(), address.to_string().into());
        if let Value::Object(more) = more {
            backend.extend(more);
        }
        self.backends.push(Value::Object(backend));
        self
    }

    /// Any other key of the cluster (`idle_timeout`, `on_demote`, `split_brain`, …).
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(key.into(), value.into());
        self
    }

    fn value(&self) -> Value {
        let mut fields = self.fields.clone();
        if !self.check.0.is_empty() {
            fields.insert("check".into(), Value::Object(self.check.0.clone()));
        }
        fields.insert("backends".into(), Value::Array(self.backends.clone()));
        Value::Object(fields)
    }
}

/// A cluster's `check` block; empty means rolegate's defaults.
#[derive(Debug, Clone, Default)]
pub struct Check(Map<String, Value>);

impl Check {
    /// `interval`, `timeout`, `rise` and `fall`.
    pub fn timing(interval: &str, timeout: &str, rise: u32, fall: u32) -> Check {
        Check::default()
            .set("interval", interval)
            .set("timeout", timeout)
            .set("rise", rise)
            .set("fall", fall)
    }

    /// Quick to react, for fake backends: every 100 ms, out after two failures.
    pub fn fast() -> Check {
        Check::timing("100ms", "200ms", 1, 2)
    }

    /// Checks that never come round again during a test (every 10 s), in after one success.
    pub fn once() -> Check {
        Check::timing("10s", "1s", 1, 1)
    }

    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.insert(key.into(), value.into());
        self
    }
}

/// A listener: `name`, `bind` (default `127.0.0.1:0`), `cluster`, and any other key.
#[derive(Debug, Clone)]
pub struct Listener(Map<String, Value>);

impl Listener {
    pub fn new(name: &str, cluster: &str) -> Listener {
        let mut fields = Map::new();
        fields.insert("name".into(), name.into());
        fields.insert("bind".into(), "127.0.0.1:0".into());
        fields.insert("cluster".into(), cluster.into());
        Listener(fields)
    }

    /// `role: primary | replica | any`.
    pub fn role(self, role: &str) -> Self {
        self.set("role", role)
    }

    pub fn bind(self, addr: SocketAddr) -> Self {
        self.set("bind", addr.to_string())
    }

    /// Any other key (`queue_timeout`, `max_connections`, …).
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.insert(key.into(), value.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_config_is_a_valid_rolegate_config_with_what_was_asked() {
        let a: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let text = ConfigBuilder::new()
            .set("workers", 1)
            .cluster(
                Cluster::tcp("app")
                    .check(Check::fast())
                    .set("idle_timeout", "300ms")
                    .backend("a", a),
            )
            .listener(
                Listener::new("rw", "app")
                    .role("any")
                    .set("queue_timeout", "0s"),
            )
            .yaml();
        let config = rolegate::config::Config::from_yaml_str_with_env(&text, None, &|_| None)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(config.clusters.len(), 1);
        assert_eq!(config.clusters[0].backends[0].name.to_string(), "a");
        assert_eq!(config.listeners[0].name.to_string(), "rw");
        assert_eq!(
            config.clusters[0].idle_timeout,
            Some(std::time::Duration::from_millis(300))
        );
    }
}
