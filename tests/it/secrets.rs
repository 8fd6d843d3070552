//! No secret ever leaves rolegate: the real binary runs with known secrets — check passwords
//! from `password_env`, `password_file` and inline, right and wrong ones, the admin token from
//! `token_file`, the application's password on the data plane — at `log.level: trace` (every
//! crate, in JSON and in text), and the test scans everything it produced for them: every log
//! line, `/status`, `/metrics`, `/readyz`, refused and accepted admin requests, reloads good and
//! bad (SIGHUP and `POST /reload`), and `check-config` on valid and invalid files.
//!
//! Also checked here: failed admin logins are logged with the peer and counted, and a config
//! file holding a secret inline that others may read gets a warning at start.
//!
//! Needs the lab (real PostgreSQL, MariaDB and Redis logins) and holds its lock.

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use rand::RngCore;
use support::binary::{self, Rolegate, Start};
use support::files::ConfigFile;
use support::lab::{self, Engine};
use support::require;
use support::{db, http, metric_value};

/// Everything the test must never find in any output, with a name for the failure message.
struct Secrets {
    monitor: String,
    app: String,
    token: String,
    wrong_env: String,
    wrong_file: String,
    wrong_inline: String,
    /// A base64-looking secret an operator wrote where a variable *name* belongs.
    misplaced: String,
}

fn random(prefix: &str) -> String {
    let mut b = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut b);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{prefix}{hex}")
}

impl Secrets {
    fn new() -> Secrets {
        Secrets {
            monitor: lab::monitor_password(),
            app: lab::app_password(),
            token: random("tok-"),
            wrong_env: random("wrongenv-"),
            wrong_file: random("wrongfile-"),
            wrong_inline: random("wronginline-"),
            misplaced: format!("{}==", random("c2VjcmV0")),
        }
    }

    fn all(&self) -> [(&'static str, &str); 7] {
        [
            ("monitor password", &self.monitor),
            ("application password", &self.app),
            ("admin token", &self.token),
            ("wrong password (env)", &self.wrong_env),
            ("wrong password (file)", &self.wrong_file),
            ("wrong password (inline)", &self.wrong_inline),
            ("misplaced secret", &self.misplaced),
        ]
    }

    /// Fails with the secret's name and the offending line if `text` contains any secret.
    fn assert_absent(&self, what: &str, text: &str) {
        for (name, secret) in self.all() {
            if let Some(line) = text.lines().find(|l| l.contains(secret)) {
                panic!("the {name} appears in {what}:\n{line}");
            }
        }
    }
}

fn cluster(name: &str, engine: Engine, check: &str, node: char) -> String {
    let protocol = match engine {
        Engine::Pg => "postgres",
        Engine::Mysql => "mysql",
        Engine::Redis => "redis",
    };
    let mut y = format!(
        "  - name: {name}\n    protocol: {protocol}\n    check: {{ {check}, interval: 250ms }}\n    backends:\n"
    );
    for n in ['A', 'B'] {
        if node == '*' || node == n {
            y += &format!(
                "      - {{ name: {}, address: \"{}\" }}\n",
                n.to_ascii_lowercase(),
                engine.addr(n)
            );
        }
    }
    y
}

/// The config of the main run: good credentials from env, file and ACL user; wrong ones from
/// env, file and inline (their checks fail with authentication errors, on every protocol).
fn config(format: &str) -> String {
    let mut y = format!(
        "admin: {{ listen: 127.0.0.1:0, token_file: token }}\nlog: {{ level: trace, format: {format} }}\nclusters:\n"
    );
    y += &cluster(
        "pg",
        Engine::Pg,
        "user: rolegate_monitor, password_env: RG_TEST_MONITOR, database: postgres",
        '*',
    );
    y += &cluster(
        "my",
        Engine::Mysql,
        "user: rolegate_monitor, password_file: monitor.pw",
        '*',
    );
    y += &cluster(
        "redis",
        Engine::Redis,
        "user: rolegate_monitor, password_env: RG_TEST_MONITOR",
        '*',
    );
    y += &cluster(
        "pg_wrong",
        Engine::Pg,
        "user: rolegate_monitor, password_env: RG_TEST_WRONG, database: postgres",
        'A',
    );
    y += &cluster(
        "my_wrong",
        Engine::Mysql,
        &format!("user: rolegate_monitor, password: \"{}\"", "@INLINE@"),
        'A',
    );
    y += &cluster("redis_wrong", Engine::Redis, "password_file: wrong.pw", 'A');
    y += "listeners:\n";
    for (l, c) in [("pg-rw", "pg"), ("my-rw", "my"), ("redis-rw", "redis")] {
        y += &format!("  - {{ name: {l}, bind: \"127.0.0.1:0\", cluster: {c}, role: primary }}\n");
    }
    y
}

/// The config directory: config, token and password files, a world-readable mode.
fn files(s: &Secrets, format: &str) -> ConfigFile {
    let file = ConfigFile::new(&config(format).replace("@INLINE@", &s.wrong_inline));
    file.write_sibling("token", &format!("{}\n", s.token));
    file.write_sibling("monitor.pw", &format!("{}\n", s.monitor));
    file.write_sibling("wrong.pw", &s.wrong_file);
    std::fs::set_permissions(&file.path, std::fs::Permissions::from_mode(0o644))
        .expect("chmod config");
    file
}

fn env(s: &Secrets) -> Vec<(&'static str, String)> {
    vec![
        ("RG_TEST_MONITOR", s.monitor.clone()),
        ("RG_TEST_WRONG", s.wrong_env.clone()),
    ]
}

/// `rolegate check-config FILE`: (exit success, stdout + stderr).
fn check_config(file: &Path, s: &Secrets) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rolegate"))
        .arg("check-config")
        .arg(file)
        .envs(env(s))
        .output()
        .expect("run check-config");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn raw(r: &http::Response) -> String {
    let headers: Vec<String> = r.headers.iter().map(|(n, v)| format!("{n}: {v}")).collect();
    format!("{}\n{}\n{}", r.status, headers.join("\n"), r.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_logs_status_metrics_or_check_config_output() {
    let Some(_) = require::lab(&[Engine::Pg, Engine::Mysql, Engine::Redis]) else {
        return;
    };
    let _lock = lab::lock();
    let s = Secrets::new();
    let file = files(&s, "json");
    let mut outputs: Vec<(String, String)> = Vec::new();

    // --- check-config: the valid file, then files broken around their secrets.
    let (ok, text) = check_config(&file.path, &s);
    assert!(ok, "{text}");
    assert!(
        text.contains("warning:") && text.contains("clusters[4].check.password"),
        "check-config warns about the inline secret in a world-readable file:\n{text}"
    );
    outputs.push(("check-config (valid)".into(), text));
    let good = std::fs::read_to_string(&file.path).unwrap();
    let broken = [
        // A syntax error on the line of an inline secret.
        good.replace(
            &format!("password: \"{}\"", s.wrong_inline),
            &format!("password: \"{}", s.wrong_inline),
        ),
        // A type error right next to it.
        good.replace(
            &format!("password: \"{}\"", s.wrong_inline),
            &format!("password: \"{}\", rise: many", s.wrong_inline),
        ),
        // Two sources for one secret.
        good.replace(
            "password_file: wrong.pw",
            &format!("password_file: wrong.pw, password: \"{}\"", s.wrong_inline),
        ),
        // The secret itself where its variable's name belongs.
        good.replace(
            "password_env: RG_TEST_WRONG",
            &format!("password_env: \"{}\"", s.misplaced),
        ),
        // Unset variable, missing file, missing token file.
        good.replace("RG_TEST_WRONG", "RG_TEST_NOT_SET"),
        good.replace("wrong.pw", "missing.pw"),
        good.replace("token_file: token", "token_file: no-token"),
    ];
    for (i, text) in broken.iter().enumerate() {
        let path = file.write_sibling(&format!("broken-{i}.yaml"), text);
        let (ok, out) = check_config(&path, &s);
        assert!(!ok, "broken-{i} must be refused:\n{out}");
        outputs.push((format!("check-config (broken-{i})"), out));
    }

    // --- The proxy itself, every crate at trace.
    let mut rg = Rolegate::start(
        &file.path,
        Start {
            env: env(&s),
            ..Start::default()
        },
    )
    .await;
    let admin = rg.admin();
    binary::wait_ready(admin).await;
    // Wrong credentials fail as authentication failures (they were really sent).
    support::eventually(Duration::from_secs(15), "wrong passwords refused", || {
        async move {
            let m = http::get(admin, "/metrics").await.body;
            ["pg_wrong", "my_wrong", "redis_wrong"].iter().all(|c| {
                metric_value(
                    &m,
                    &format!("rolegate_check_failures_total{{backend=\"a\",cluster=\"{c}\",reason=\"auth failed\"}}"),
                )
                .is_some_and(|v| v >= 1.0)
            })
        }
    })
    .await;
    // The application's password crosses the data plane in every protocol.
    for (engine, listener) in [
        (Engine::Pg, "pg-rw"),
        (Engine::Mysql, "my-rw"),
        (Engine::Redis, "redis-rw"),
    ] {
        let addr = binary::listener_addr(admin, listener).await;
        db::connect_and_write(engine, addr, "secrets-test")
            .await
            .unwrap_or_else(|e| panic!("{listener}: {e}"));
    }
    for path in ["/status", "/metrics", "/readyz", "/healthz"] {
        let r = http::get(admin, path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        outputs.push((format!("GET {path}"), raw(&r)));
    }
    // Refused admin requests: each logged with the peer and counted. Two of them present
    // strings that contain the real token.
    let refused = [
        vec![],
        vec![format!("Authorization: Bearer {}x", s.token)],
        vec![format!("Authorization: Basic {}", s.token)],
        vec!["Authorization: Bearer not-the-token".to_string()],
    ];
    for headers in &refused {
        let h: Vec<&str> = headers.iter().map(String::as_str).collect();
        let r = http::request(admin, "POST", "/reload", &h, b"").await;
        assert_eq!(r.status, 401, "{}", r.body);
        outputs.push(("refused POST /reload".into(), raw(&r)));
    }
    let bearer = format!("Authorization: Bearer {}", s.token);
    for path in ["/reload", "/backends/pg/a/drain", "/backends/pg/a/enable"] {
        let r = http::request(admin, "POST", path, &[&bearer], b"").await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        outputs.push((format!("POST {path}"), raw(&r)));
    }
    // Reloads: good (SIGHUP), broken (POST /reload, then SIGHUP), good again. Each SIGHUP is
    // awaited through the reload counter (signals that arrive during a reload coalesce).
    let reloads = |result: &'static str| async move {
        let m = http::get(admin, "/metrics").await.body;
        let label = format!("rolegate_config_reloads_total{{result=\"{result}\"}}");
        metric_value(&m, &label).unwrap_or(0.0)
    };
    let sighup = |result: &'static str| {
        let rg = &rg;
        async move {
            let before = reloads(result).await;
            rg.signal(libc::SIGHUP);
            support::eventually(
                Duration::from_secs(10),
                "SIGHUP reload counted",
                || async move { reloads(result).await > before },
            )
            .await;
        }
    };
    sighup("success").await;
    for text in &broken[..4] {
        file.write(text);
        let r = http::request(admin, "POST", "/reload", &[&bearer], b"").await;
        assert_eq!(r.status, 422, "{}", r.body);
        outputs.push(("POST /reload (broken)".into(), raw(&r)));
        sighup("error").await;
    }
    file.write(&good);
    sighup("success").await;
    let m = http::get(admin, "/metrics").await.body;
    assert_eq!(
        metric_value(&m, "rolegate_admin_auth_failures_total"),
        Some(refused.len() as f64),
        "every refused admin request is counted"
    );
    outputs.push(("GET /metrics (end)".into(), m));
    rg.signal(libc::SIGTERM);
    let status = rg.wait(Duration::from_secs(20)).await.expect("exit");
    assert_eq!(status.code(), Some(0));

    // --- What the log says.
    let refusals: Vec<serde_json::Value> = rg
        .json_lines()
        .into_iter()
        .filter(|v| v["message"] == "Admin request refused.")
        .collect();
    assert_eq!(
        refusals.len(),
        refused.len(),
        "one line per refused request"
    );
    for r in &refusals {
        let peer = r["peer"].as_str().unwrap_or_default();
        assert!(
            peer.starts_with("127.0.0.1:"),
            "refusals name the peer: {r}"
        );
    }
    assert!(
        rg.count("Insecure config file.") >= 1,
        "a world-readable config with an inline secret is warned about at start"
    );
    let lines = rg.lines();
    assert!(
        lines.iter().any(|l| l.contains("\"TRACE\"")),
        "the run logged at trace level ({} lines)",
        lines.len()
    );
    outputs.push(("rolegate's output (json, trace)".into(), lines.join("\n")));

    // --- A second, short run with the text format (fields are rendered differently).
    let text_file = files(&s, "text");
    let mut rg = Rolegate::start(
        &text_file.path,
        Start {
            env: env(&s),
            ..Start::default()
        },
    )
    .await;
    let admin = rg.admin();
    binary::wait_ready(admin).await;
    let r = http::request(
        admin,
        "POST",
        "/reload",
        &[&format!("Authorization: Bearer {}x", s.token)],
        b"",
    )
    .await;
    assert_eq!(r.status, 401);
    let addr = binary::listener_addr(admin, "pg-rw").await;
    db::connect_and_write(Engine::Pg, addr, "secrets-test")
        .await
        .expect("pg write");
    tokio::time::sleep(Duration::from_secs(1)).await;
    rg.signal(libc::SIGTERM);
    assert_eq!(
        rg.wait(Duration::from_secs(20))
            .await
            .and_then(|s| s.code()),
        Some(0)
    );
    let text_lines = rg.lines().join("\n");
    assert!(
        !text_lines.contains('\x1b'),
        "no terminal escape codes in a log that is not a terminal"
    );
    outputs.push(("rolegate's output (text, trace)".into(), text_lines));

    let total: usize = outputs.iter().map(|(_, t)| t.len()).sum();
    for (what, text) in &outputs {
        s.assert_absent(what, text);
    }
    eprintln!(
        "secrets: scanned {} outputs, {total} bytes, for {} secrets",
        outputs.len(),
        s.all().len()
    );
}
