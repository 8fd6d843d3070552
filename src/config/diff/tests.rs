use super::*;

const BASE: &str = "
clusters:
  - name: pg
    protocol: postgres
    check: { user: monitor, password: pw }
    backends:
      - { name: a, address: 10.0.0.1:5432 }
      - { name: b, address: 10.0.0.2:5432 }
  - name: cache
    protocol: tcp
    backends:
      - { name: c, address: 10.0.0.3:6379 }
listeners:
  - { name: rw, bind: 127.0.0.1:5432, cluster: pg }
  - { name: ro, bind: 127.0.0.1:5433, cluster: pg, role: replica }
";

fn config(text: &str) -> Config {
    match Config::from_yaml_str_with_env(text, None, &|_| None) {
        Ok(config) => config,
        Err(errors) => panic!("test config must be valid:\n{errors}"),
    }
}

fn names<N: ToString>(list: &[N]) -> Vec<String> {
    list.iter().map(N::to_string).collect()
}

#[test]
fn identical_configs_have_an_empty_diff() {
    assert!(ConfigDiff::between(&config(BASE), &config(BASE)).is_empty());
}

#[test]
fn initial_adds_everything() {
    let diff = ConfigDiff::initial(&config(BASE));
    assert_eq!(names(&diff.listeners.added), ["rw", "ro"]);
    assert_eq!(names(&diff.clusters.added), ["pg", "cache"]);
    assert!(diff.listeners.removed.is_empty() && diff.clusters.changed.is_empty());
    assert!(diff.admin_changed && diff.log_changed);
}

#[test]
fn listener_rebind_is_told_apart_from_a_settings_change() {
    let new = BASE
        .replace("bind: 127.0.0.1:5432", "bind: 127.0.0.1:6432")
        .replace("role: replica", "role: replica, balance: least_conn");
    let diff = ConfigDiff::between(&config(BASE), &config(&new));
    assert_eq!(
        diff.listeners.changed,
        [
            ListenerChange {
                name: "rw".into(),
                bind_changed: true
            },
            ListenerChange {
                name: "ro".into(),
                bind_changed: false
            },
        ]
    );
    assert!(diff.clusters == ClusterDiff::default());
}

#[test]
fn renamed_listener_is_a_removal_and_an_addition() {
    let new = BASE.replace("name: ro,", "name: read-only,");
    let diff = ConfigDiff::between(&config(BASE), &config(&new));
    assert_eq!(names(&diff.listeners.added), ["read-only"]);
    assert_eq!(names(&diff.listeners.removed), ["ro"]);
    assert!(diff.listeners.changed.is_empty());
}

#[test]
fn backend_changes_are_listed_per_cluster() {
    let new = BASE
        .replace(
            "{ name: a, address: 10.0.0.1:5432 }",
            "{ name: a, address: 10.0.0.9:5432 }",
        )
        .replace(
            "      - { name: b, address: 10.0.0.2:5432 }\n",
            "      - { name: d, address: 10.0.0.4:5432 }\n",
        );
    let diff = ConfigDiff::between(&config(BASE), &config(&new));
    let [change] = diff.clusters.changed.as_slice() else {
        panic!("one cluster should change: {diff:?}");
    };
    assert_eq!(change.name.as_str(), "pg");
    assert_eq!(names(&change.backends.added), ["d"]);
    assert_eq!(names(&change.backends.removed), ["b"]);
    assert_eq!(names(&change.backends.changed), ["a"]);
    assert!(!change.check_changed && !change.settings_changed);
}

#[test]
fn check_and_settings_changes_are_flagged_separately() {
    let new = BASE.replace("user: monitor,", "user: monitor, interval: 1s,");
    let diff = ConfigDiff::between(&config(BASE), &config(&new));
    assert!(diff.clusters.changed[0].check_changed);
    assert!(!diff.clusters.changed[0].settings_changed);

    let new = BASE.replace("protocol: tcp", "protocol: tcp\n    on_demote: keep");
    let diff = ConfigDiff::between(&config(BASE), &config(&new));
    let change = &diff.clusters.changed[0];
    assert_eq!(change.name.as_str(), "cache");
    assert!(change.settings_changed && !change.check_changed);
}

#[test]
fn removed_cluster_and_admin_change() {
    let without_cache = BASE.replace(
        "  - name: cache\n    protocol: tcp\n    backends:\n      - { name: c, address: 10.0.0.3:6379 }\n",
        "",
    );
    let new = format!("admin: {{ listen: 127.0.0.1:9999 }}\n{without_cache}");
    let diff = ConfigDiff::between(&config(BASE), &config(&new));
    assert_eq!(names(&diff.clusters.removed), ["cache"]);
    assert!(diff.admin_changed && !diff.log_changed);
}
