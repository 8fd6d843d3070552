//! `rolegate status` without `--json`: the `/status` document as tables a person reads at a
//! glance — per cluster its primary and backends (role, health, admin state, lag, sessions,
//! last error), then the listeners and what each serves.
//!
//! It reads the documented field names (README.md, "/status") leniently: a field this build
//! does not know is ignored and a missing one shows as `-`, so an older or newer server still
//! prints.

use std::fmt::Write as _;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Status {
    version: Option<String>,
    ready: Option<bool>,
    config_file: Option<String>,
    generation: Option<u64>,
    clusters: Vec<Cluster>,
    listeners: Vec<Listener>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Cluster {
    name: String,
    protocol: String,
    primary: Option<String>,
    split_brain: bool,
    stale: Vec<String>,
    seconds_without_primary: Option<f64>,
    backends: Vec<Backend>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Backend {
    name: String,
    address: String,
    health: String,
    role: String,
    admin: String,
    stale: bool,
    replication_lag_seconds: Option<f64>,
    last_error: Option<String>,
    sessions: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Listener {
    name: String,
    bind: String,
    local_addr: Option<String>,
    cluster: String,
    role: String,
    serving: String,
    backends: Vec<String>,
    unavailable: Option<String>,
}

/// Renders a `/status` JSON document.
///
/// # Errors
/// The text is not JSON of the `/status` shape.
pub fn render(json: &str) -> Result<String, serde_json::Error> {
    let status: Status = serde_json::from_str(json)?;
    let mut out = String::new();
    let ready = match status.ready {
        Some(true) => "ready",
        Some(false) => "NOT READY",
        None => "readiness unknown",
    };
    let _ = writeln!(
        out,
        "rolegate {}: {ready}, routing generation {}, config {}",
        status.version.as_deref().unwrap_or("?"),
        status
            .generation
            .map_or_else(|| "?".to_string(), |g| g.to_string()),
        status.config_file.as_deref().unwrap_or("(none)"),
    );
    for cluster in &status.clusters {
        out.push('\n');
        out.push_str(&cluster_line(cluster));
        let mut rows = vec![row([
            "BACKEND",
            "ROLE",
            "HEALTH",
            "ADMIN",
            "SESSIONS",
            "LAG",
            "ADDRESS",
            "LAST ERROR",
        ])];
        for b in &cluster.backends {
            let role = if b.stale {
                format!("{} (stale)", b.role)
            } else {
                b.role.clone()
            };
            rows.push(vec![
                b.name.clone(),
                role,
                b.health.clone(),
                b.admin.clone(),
                b.sessions.to_string(),
                b.replication_lag_seconds
                    .map_or_else(dash, |l| format!("{l:.1}s")),
                b.address.clone(),
                b.last_error.clone().unwrap_or_else(dash),
            ]);
        }
        out.push_str(&table(&rows, "  "));
    }
    if !status.listeners.is_empty() {
        out.push('\n');
        let mut rows = vec![row([
            "LISTENER", "ADDRESS", "CLUSTER", "ROLE", "SERVING", "BACKENDS", "STATE",
        ])];
        for l in &status.listeners {
            rows.push(vec![
                l.name.clone(),
                l.local_addr.clone().unwrap_or_else(|| l.bind.clone()),
                l.cluster.clone(),
                l.role.clone(),
                l.serving.clone(),
                if l.backends.is_empty() {
                    dash()
                } else {
                    l.backends.join(",")
                },
                l.unavailable
                    .as_ref()
                    .map_or_else(|| "ok".to_string(), |u| format!("UNAVAILABLE: {u}")),
            ]);
        }
        out.push_str(&table(&rows, ""));
    }
    Ok(out)
}

/// `pg (postgres): primary pg-a` with what is wrong, if anything.
fn cluster_line(c: &Cluster) -> String {
    let mut line = format!("{} ({}): ", c.name, c.protocol);
    match &c.primary {
        Some(p) => {
            let _ = write!(line, "primary {p}");
        }
        None if c.protocol == "tcp" => line.push_str("NO BACKEND UP"),
        None => {
            line.push_str("NO PRIMARY");
            if let Some(s) = c.seconds_without_primary {
                let _ = write!(line, " for {s:.0}s");
            }
        }
    }
    if c.split_brain {
        line.push_str(", SPLIT BRAIN");
    }
    if !c.stale.is_empty() {
        let _ = write!(line, ", stale primaries: {}", c.stale.join(","));
    }
    line.push('\n');
    line
}

fn dash() -> String {
    "-".to_string()
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_string()).collect()
}

/// Left-aligned columns two spaces apart, the last column unpadded.
fn table(rows: &[Vec<String>], indent: &str) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        out.push_str(indent);
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<width$}  ", width = widths[i]);
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = r#"{
  "version": "0.1.0", "ready": false, "config_file": "/etc/rolegate/rolegate.yaml",
  "generation": 7, "future_field": {"ignored": true},
  "clusters": [
    {"name": "pg", "protocol": "postgres", "primary": "pg-a", "split_brain": false,
     "split_brain_policy": "fail_closed", "stale": [], "seconds_without_primary": null,
     "backends": [
       {"name": "pg-a", "address": "127.0.0.1:15432", "health": "up", "role": "primary",
        "admin": "enabled", "stale": false, "replication_lag_seconds": null,
        "last_error": null, "sessions": 3},
       {"name": "pg-b", "address": "127.0.0.1:15433", "health": "up", "role": "replica",
        "admin": "drain", "stale": false, "replication_lag_seconds": 0.3,
        "last_error": null, "sessions": 0}]},
    {"name": "redis", "protocol": "redis", "primary": null, "split_brain": true,
     "stale": ["r-b"], "seconds_without_primary": 12.4,
     "backends": [
       {"name": "r-a", "address": "127.0.0.1:16379", "health": "down", "role": "unknown",
        "admin": "enabled", "stale": false, "last_error": "refused: connection refused",
        "sessions": 0}]}],
  "listeners": [
    {"name": "pg-rw", "bind": "127.0.0.1:0", "local_addr": "127.0.0.1:40001", "cluster": "pg",
     "role": "primary", "serving": "primary", "backends": ["pg-a"], "unavailable": null},
    {"name": "redis-rw", "bind": "127.0.0.1:6379", "cluster": "redis", "role": "primary",
     "serving": "primary", "backends": [], "unavailable": "split_brain"}]
}"#;

    #[test]
    fn renders_clusters_backends_and_listeners() {
        let text = render(STATUS).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "rolegate 0.1.0: NOT READY, routing generation 7, config /etc/rolegate/rolegate.yaml"
        );
        assert!(text.contains("pg (postgres): primary pg-a\n"), "{text}");
        assert!(
            text.contains("redis (redis): NO PRIMARY for 12s, SPLIT BRAIN, stale primaries: r-b\n"),
            "{text}"
        );
        let pg_b = lines.iter().find(|l| l.contains("pg-b")).unwrap();
        let cells: Vec<&str> = pg_b.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "pg-b",
                "replica",
                "up",
                "drain",
                "0",
                "0.3s",
                "127.0.0.1:15433",
                "-"
            ]
        );
        let r_a = lines.iter().find(|l| l.contains("r-a")).unwrap();
        assert!(r_a.ends_with("refused: connection refused"), "{r_a}");
        let rw = lines.iter().find(|l| l.starts_with("pg-rw")).unwrap();
        assert!(rw.contains("127.0.0.1:40001") && rw.ends_with("ok"), "{rw}");
        let redis = lines.iter().find(|l| l.starts_with("redis-rw")).unwrap();
        assert!(redis.ends_with("UNAVAILABLE: split_brain"), "{redis}");
        // Columns line up: every backend row of a cluster starts its ROLE cell at one offset.
        let header = lines.iter().find(|l| l.contains("BACKEND")).unwrap();
        let at = header.find("ROLE").unwrap();
        assert_eq!(pg_b.find("replica"), Some(at));
    }

    #[test]
    fn not_json_is_an_error() {
        assert!(render("ready\n").is_err());
    }
}
