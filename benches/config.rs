//! Config parse + validate (`Config::from_yaml_str_with_env`, what `check-config`, startup and
//! every reload run) and config diff (`ConfigDiff::between`, what a reload applies), on
//! `config/example.yaml` and on a generated large config (40 clusters x 3 backends, 80
//! listeners). Texts and parsed configs are prepared outside the timed closures.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};

use rolegate::config::{Config, ConfigDiff};

/// Every `*_env` variable resolves: the benchmark measures parsing, not a missing secret.
fn env(_key: &str) -> Option<String> {
    Some("bench-secret".to_string())
}

fn parse(text: &str) -> Config {
    Config::from_yaml_str_with_env(text, Some(Path::new("bench.yaml")), &env)
        .unwrap_or_else(|e| panic!("bench config does not validate:\n{e}"))
}

/// `clusters` postgres clusters of three backends, a primary and a replica listener each.
/// `variant` changes one backend address (1) or adds a listener (2).
fn large(clusters: usize, variant: u8) -> String {
    let mut s = String::from(
        "admin:\n  listen: 127.0.0.1:9813\ndefaults:\n  check: { interval: 500ms, rise: 2, fall: 2 }\nclusters:\n",
    );
    for c in 0..clusters {
        s += &format!(
            "  - name: c{c}\n    protocol: postgres\n    check: {{ user: rolegate_monitor, password_env: PW }}\n    backends:\n"
        );
        for b in 0..3 {
            let host = if variant == 1 && c == clusters / 2 && b == 1 {
                200
            } else {
                b + 10
            };
            s += &format!("      - {{ name: b{b}, address: 10.{c}.0.{host}:5432 }}\n");
        }
    }
    s += "listeners:\n";
    for c in 0..clusters {
        s += &format!(
            "  - {{ name: c{c}-rw, bind: 127.0.{}.1:{}, cluster: c{c}, role: primary }}\n",
            c / 200,
            20000 + 2 * c
        );
        s += &format!(
            "  - {{ name: c{c}-ro, bind: 127.0.{}.1:{}, cluster: c{c}, role: replica, fallback: primary }}\n",
            c / 200,
            20001 + 2 * c
        );
    }
    if variant == 2 {
        s += "  - { name: extra, bind: 127.0.9.1:30000, cluster: c0, role: any }\n";
    }
    s
}

fn config(c: &mut Criterion) {
    let example_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.yaml");
    let example = std::fs::read_to_string(&example_path).expect("config/example.yaml");
    let big = large(40, 0);

    let mut g = c.benchmark_group("config parse+validate");
    g.bench_function("config/example.yaml", |b| {
        b.iter(|| {
            black_box(Config::from_yaml_str_with_env(
                black_box(&example),
                Some(&example_path),
                &env,
            ))
        })
    });
    g.bench_function("40 clusters x 3 backends, 80 listeners", |b| {
        b.iter(|| black_box(Config::from_yaml_str_with_env(black_box(&big), None, &env)))
    });
    g.finish();

    let ex_old = parse(&example);
    // The same file with one backend moved and one listener's limit changed.
    let ex_new = parse(
        &example
            .replace("10.0.0.12:5432", "10.0.0.13:5432")
            .replace("max_connections: 10000", "max_connections: 5000"),
    );
    let big_old = parse(&big);
    let big_moved = parse(&large(40, 1));
    let big_added = parse(&large(40, 2));

    let mut g = c.benchmark_group("config diff");
    g.bench_function("example.yaml: unchanged", |b| {
        b.iter(|| black_box(ConfigDiff::between(black_box(&ex_old), black_box(&ex_old))))
    });
    g.bench_function("example.yaml: backend moved + listener limit", |b| {
        b.iter(|| black_box(ConfigDiff::between(black_box(&ex_old), black_box(&ex_new))))
    });
    g.bench_function("large: unchanged", |b| {
        b.iter(|| {
            black_box(ConfigDiff::between(
                black_box(&big_old),
                black_box(&big_old),
            ))
        })
    });
    g.bench_function("large: one backend moved", |b| {
        b.iter(|| {
            black_box(ConfigDiff::between(
                black_box(&big_old),
                black_box(&big_moved),
            ))
        })
    });
    g.bench_function("large: one listener added", |b| {
        b.iter(|| {
            black_box(ConfigDiff::between(
                black_box(&big_old),
                black_box(&big_added),
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, config);
criterion_main!(benches);
