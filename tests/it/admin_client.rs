//! The operator commands against a real rolegate process: `rolegate status` / `drain` /
//! `disable` / `enable` find the admin API and its token through the server's config file
//! (`admin.listen`, `admin.token_file`, `admin.token_env`), change what `/status` reports,
//! and fail with the documented exit codes and messages (unknown backend named, refused token
//! traced to its source, an unreachable URL named). Also: the completion scripts the binary
//! prints load in bash (and complete a subcommand), zsh and fish, and its manual pages render
//! without warnings.
//!
//! Self-contained (no lab, no root): the backend is a loopback listener of this test. zsh and
//! fish are installed by `bash loadtest/test.sh`; without them the completion test fails
//! saying so.

use crate::support;
use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_rolegate");
const TOKEN: &str = "admin-client-test-token";

/// Runs `rolegate ARGS` to completion within 30 s, with `ROLEGATE_*` variables of the
/// caller's environment removed so that only what the test passes counts.
fn rolegate(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("ROLEGATE_CONFIG")
        .env_remove("ROLEGATE_ADMIN_URL")
        .envs(env.iter().copied());
    support::script::run_with_deadline(&mut cmd, Duration::from_secs(30))
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The proxy under test; SIGTERM (then SIGKILL) by pid on drop.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

fn stop(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let pid = libc::pid_t::try_from(child.id()).expect("pid");
        // SAFETY: kill(2) on the pid of a child this test started and has not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
    /// The same server, its token named by `admin.token_env: ROLEGATE_TEST_ADMIN_TOKEN`.
    config_env: PathBuf,
    url: String,
    server: Server,
}

fn config_text(admin_port: u16, token: &str, backend: u16, bind: u16) -> String {
    format!(
        "admin: {{ listen: \"0.0.0.0:{admin_port}\", {token} }}\n\
         clusters:\n\
         \x20 - name: db\n\
         \x20   protocol: tcp\n\
         \x20   check: {{ interval: 100ms, timeout: 100ms, rise: 1, fall: 2 }}\n\
         \x20   backends:\n\
         \x20     - {{ name: db-1, address: \"127.0.0.1:{backend}\" }}\n\
         listeners:\n\
         \x20 - {{ name: db, bind: \"127.0.0.1:{bind}\", cluster: db, queue_timeout: 0s }}\n"
    )
}

/// Starts a proxy whose admin API needs `TOKEN` (from `admin.token_file`), with one tcp
/// backend that is up, and waits until `rolegate status` reports it up.
fn setup() -> Setup {
    let backend = TcpListener::bind("127.0.0.1:0").expect("backend");
    let backend_port = backend.local_addr().expect("addr").port();
    // Accepts and drops the check connections, so the backlog never fills.
    std::thread::spawn(move || {
        for stream in backend.incoming() {
            drop(stream);
        }
    });
    let dir = tempfile::tempdir().expect("temp dir");
    fs::write(dir.path().join("token"), format!("{TOKEN}\n")).expect("token");
    let admin_port = free_port();
    let bind = free_port();
    let config = dir.path().join("rolegate.yaml");
    fs::write(
        &config,
        config_text(admin_port, "token_file: token", backend_port, bind),
    )
    .expect("config");
    let config_env = dir.path().join("rolegate-env.yaml");
    fs::write(
        &config_env,
        config_text(
            admin_port,
            "token_env: ROLEGATE_TEST_ADMIN_TOKEN",
            backend_port,
            bind,
        ),
    )
    .expect("config");
    let log = dir.path().join("rolegate.log");
    let log_file = fs::File::create(&log).expect("log");
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("log"))
        .stderr(log_file)
        .spawn()
        .expect("start rolegate");
    let server = Server { child, log };
    let mut setup = Setup {
        url: format!("http://127.0.0.1:{admin_port}"),
        config,
        config_env,
        _dir: dir,
        server,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = rolegate(&["status", "--json", "--config", setup.path()], &[]);
        if o.status.success() && backend_state(&out(&o)).0 == "up" {
            break;
        }
        assert!(
            setup.server.child.try_wait().expect("wait").is_none(),
            "rolegate exited; log:\n{}",
            fs::read_to_string(&setup.server.log).unwrap_or_default()
        );
        assert!(
            Instant::now() < deadline,
            "db-1 not up within 30 s; last status: {}{}\nlog:\n{}",
            out(&o),
            err(&o),
            fs::read_to_string(&setup.server.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    setup
}

impl Setup {
    fn path(&self) -> &str {
        self.config.to_str().expect("utf-8 path")
    }
}

/// `(health, admin)` of db-1 in a `/status` document.
fn backend_state(json: &str) -> (String, String) {
    let v: serde_json::Value = match serde_json::from_str(json) {
        Ok(v) => v,
        Err(_) => return (String::new(), String::new()),
    };
    let b = &v["clusters"][0]["backends"][0];
    let field = |k: &str| b[k].as_str().unwrap_or_default().to_string();
    (field("health"), field("admin"))
}

fn admin_state(s: &Setup) -> String {
    let o = rolegate(&["status", "--json", "--config", s.path()], &[]);
    assert!(o.status.success(), "{}", err(&o));
    backend_state(&out(&o)).1
}

#[test]
fn status_and_backend_actions_through_the_config_file() {
    let s = setup();

    let table = rolegate(&["status", "--config", s.path()], &[]);
    assert!(table.status.success(), "{}", err(&table));
    let text = out(&table);
    assert!(text.starts_with("rolegate "), "{text}");
    assert!(text.contains("db (tcp): primary db-1\n"), "{text}");
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("db-1"))
        .unwrap_or_else(|| panic!("no db-1 row in\n{text}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..4], ["db-1", "primary", "up", "enabled"], "{row}");

    for (action, state) in [
        ("drain", "drain"),
        ("disable", "disabled"),
        ("enable", "enabled"),
    ] {
        let o = rolegate(&[action, "--config", s.path(), "db", "db-1"], &[]);
        assert!(o.status.success(), "{action}: {}", err(&o));
        assert_eq!(out(&o), format!("db/db-1: {action}\n"));
        assert_eq!(admin_state(&s), state, "after {action}");
    }

    // admin.token_env: the token from the variable the config names.
    let env_config = s.config_env.to_str().expect("utf-8");
    let o = rolegate(
        &["drain", "--config", env_config, "db", "db-1"],
        &[("ROLEGATE_TEST_ADMIN_TOKEN", TOKEN)],
    );
    assert!(o.status.success(), "token_env: {}", err(&o));
    assert_eq!(admin_state(&s), "drain");
    // Without the variable, reads still work (they need no token); actions say what is missing.
    let o = rolegate(&["status", "--config", env_config], &[]);
    assert!(o.status.success(), "status without token_env: {}", err(&o));
    let o = rolegate(&["enable", "--config", env_config, "db", "db-1"], &[]);
    assert_eq!(o.status.code(), Some(2), "unset token_env: {}", err(&o));
    assert!(
        err(&o).contains("ROLEGATE_TEST_ADMIN_TOKEN is not set"),
        "{}",
        err(&o)
    );
}

#[test]
fn refusals_have_exit_codes_and_say_why() {
    let mut s = setup();

    let o = rolegate(&["drain", "--config", s.path(), "db", "db-9"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("unknown backend db/db-9"), "{}", err(&o));

    // No config: the URL given, no token, so the server's 401 is explained.
    let o = rolegate(&["drain", "--admin", &s.url, "db", "db-1"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("401"), "{}", err(&o));
    assert!(err(&o).contains("no token was sent"), "{}", err(&o));

    // A wrong token is traced to where it came from, and never printed.
    let wrong = s._dir.path().join("wrong");
    fs::write(&wrong, "not-the-token\n").expect("write");
    let wrong = wrong.to_str().expect("utf-8");
    let o = rolegate(
        &[
            "disable",
            "--config",
            s.path(),
            "--token-file",
            wrong,
            "db",
            "db-1",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    let msg = err(&o);
    assert!(
        msg.contains(&format!("the token from --token-file {wrong} was refused")),
        "{msg}"
    );
    assert!(!msg.contains("not-the-token"), "{msg}");
    assert_eq!(admin_state(&s), "enabled", "a refused action changed state");

    // ROLEGATE_ADMIN_URL is the default of --admin; `status` needs no token.
    let o = rolegate(&["status", "--json"], &[("ROLEGATE_ADMIN_URL", &s.url)]);
    assert!(o.status.success(), "{}", err(&o));

    // A name that cannot exist is refused before anything is sent.
    let o = rolegate(&["drain", "--config", s.path(), "db", "db/1"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));

    // Server gone: exit 3 and the URL it tried.
    stop(&mut s.server.child);
    let o = rolegate(&["status", "--config", s.path()], &[]);
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    assert!(
        err(&o).contains(&format!("cannot reach the admin API at {}", s.url)),
        "{}",
        err(&o)
    );
}

/// Finds `name` on PATH, or fails saying how to get it.
fn tool(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not installed: apt-get install {name} (bash loadtest/test.sh does)")
        })
}

fn run_ok(cmd: &mut Command) -> String {
    let o = cmd.stdin(Stdio::null()).output().expect("run");
    assert!(
        o.status.success(),
        "{cmd:?} failed:\n{}{}",
        out(&o),
        err(&o)
    );
    out(&o) + &err(&o)
}

#[test]
fn completion_scripts_load_in_their_shells() {
    let Some(_) = support::require::tool("zsh", &[], "zsh") else {
        return;
    };
    let Some(_) = support::require::tool("fish", &[], "fish") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let script = |shell: &str| -> PathBuf {
        let o = rolegate(&["completions", shell], &[]);
        assert!(o.status.success(), "{}", err(&o));
        let path = dir.path().join(format!("rolegate.{shell}"));
        fs::write(&path, &o.stdout).expect("write");
        path
    };
    // bash: sourced, it completes `rolegate dr` to `drain` and `rolegate status --j` to --json.
    let bash = script("bash");
    let complete = |words: &str, cword: usize| {
        run_ok(Command::new(tool("bash")).arg("-c").arg(format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{words}'; \
             COMP_POINT=${{#COMP_LINE}}; \
             _rolegate rolegate \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            bash.display()
        )))
    };
    let words = complete("rolegate dr", 1);
    assert_eq!(words.trim(), "drain", "{words}");
    let words = complete("rolegate status --j", 2);
    assert_eq!(words.trim(), "--json", "{words}");
    // zsh and fish: the scripts parse.
    run_ok(Command::new(tool("zsh")).arg("-n").arg(script("zsh")));
    run_ok(
        Command::new(tool("fish"))
            .arg("--no-execute")
            .arg(script("fish")),
    );
    let fish = fs::read_to_string(script("fish")).expect("read");
    assert!(fish.contains("-a \"drain\""), "{fish}");
}

#[test]
fn man_pages_render_without_warnings() {
    let Some(_) = support::require::tool("groff", &[], "groff-base") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let o = rolegate(&["man", "--dir", dir.path().to_str().expect("utf-8")], &[]);
    assert!(o.status.success(), "{}", err(&o));
    let listed: Vec<String> = out(&o).lines().map(str::to_string).collect();
    for page in [
        "rolegate.1",
        "rolegate-status.1",
        "rolegate-drain.1",
        "rolegate-man.1",
    ] {
        let path = dir.path().join(page);
        assert!(
            listed.contains(&path.display().to_string()),
            "{page} not in {listed:?}"
        );
        let text = render(&path);
        assert!(text.contains("rolegate"), "{text}");
    }
    let status = render(&dir.path().join("rolegate-status.1"));
    assert!(
        status.contains("--json") && status.contains("--token-file"),
        "{status}"
    );
    // `rolegate man` alone prints the top page, the same as the file.
    let o = rolegate(&["man"], &[]);
    assert_eq!(
        out(&o),
        fs::read_to_string(dir.path().join("rolegate.1")).expect("read")
    );
}

/// The page as text; groff's warnings (`-ww`) are failures.
fn render(page: &Path) -> String {
    let o = Command::new(tool("groff"))
        .args(["-man", "-Tascii", "-ww", "-P-cbou"])
        .arg(page)
        .stdin(Stdio::null())
        .output()
        .expect("groff");
    assert!(o.status.success(), "groff {}: {}", page.display(), err(&o));
    assert!(
        o.stderr.is_empty(),
        "groff warns on {}:\n{}",
        page.display(),
        err(&o)
    );
    let mut text = String::new();
    let _ = o.stdout.as_slice().read_to_string(&mut text);
    text
}
