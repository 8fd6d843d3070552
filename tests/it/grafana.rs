//! The Grafana dashboard (`config/grafana/rolegate.json`) is valid JSON, every query in it
//! names only metrics rolegate exports, and it charts every family operators alert on. A
//! renamed metric therefore breaks this test instead of silently emptying a panel.

use std::collections::BTreeSet;
use std::path::PathBuf;

use rolegate::metrics::Metrics;
use serde_json::Value;

/// Histogram families are queried through these series.
const HISTOGRAM_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];

fn dashboard() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/grafana/rolegate.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every PromQL string: panel and annotation `expr`s, and template variable queries.
fn queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    ("query", Value::String(s)) if s.contains('(') => out.push(s.clone()),
                    _ => queries(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| queries(i, out)),
        _ => {}
    }
}

/// Identifiers in our namespaces (`rolegate_*`, `process_*`). Label names and PromQL
/// functions never start with those prefixes, so no PromQL parser is needed.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut current = String::new();
    let mut in_string = false;
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c == '"' {
            in_string = !in_string;
        }
        if !in_string && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            current.push(c);
            continue;
        }
        if current.starts_with("rolegate_") || current.starts_with("process_") {
            names.push(current.clone());
        }
        current.clear();
    }
    names
}

fn family_of(name: &str, families: &BTreeSet<String>) -> Option<String> {
    if families.contains(name) {
        return Some(name.to_string());
    }
    HISTOGRAM_SUFFIXES
        .iter()
        .filter_map(|s| name.strip_suffix(s))
        .find(|base| families.contains(*base))
        .map(str::to_string)
}

#[test]
fn every_query_names_only_exported_metrics() {
    let families = Metrics::new().family_names();
    let mut exprs = Vec::new();
    queries(&dashboard(), &mut exprs);
    assert!(exprs.len() > 20, "found only {} queries", exprs.len());
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "query names no rolegate metric: {expr}");
        for name in names {
            assert!(
                family_of(&name, &families).is_some(),
                "{name} (in `{expr}`) is not exported; exported: {families:?}"
            );
        }
    }
}

#[test]
fn the_dashboard_charts_every_family_operators_watch() {
    let families = Metrics::new().family_names();
    let mut exprs = Vec::new();
    queries(&dashboard(), &mut exprs);
    let used: BTreeSet<String> = exprs
        .iter()
        .flat_map(|e| metric_names(e))
        .filter_map(|n| family_of(&n, &families))
        .collect();
    let unused: Vec<&String> = families
        .iter()
        .filter(|f| f.starts_with("rolegate_") && !used.contains(*f))
        .collect();
    assert!(unused.is_empty(), "families without a panel: {unused:?}");
}

#[test]
fn panels_have_unique_ids_a_datasource_and_targets() {
    let d = dashboard();
    assert_eq!(d["uid"], "rolegate");
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for p in panels {
        let id = p["id"].as_u64().expect("numeric panel id");
        assert!(ids.insert(id), "duplicate panel id {id}");
        assert!(p["gridPos"]["w"].as_u64().is_some_and(|w| w <= 24), "{p}");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{} has no query", p["title"]);
        assert!(
            p["description"].as_str().is_some_and(|s| !s.is_empty()),
            "{}",
            p["title"]
        );
    }
}

#[test]
fn the_name_scanner_skips_labels_strings_and_functions() {
    let expr = r#"histogram_quantile(0.99, sum by (le) (rate(rolegate_check_duration_seconds_bucket{instance=~"rolegate_x"}[5m]))) / process_open_fds"#;
    assert_eq!(
        metric_names(expr),
        ["rolegate_check_duration_seconds_bucket", "process_open_fds"]
    );
}
