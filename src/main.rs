//! The `rolegate` binary: CLI, logging, signals. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use rolegate::app::App;
use rolegate::config::Config;
use rolegate::logging::LogGuard;
use rolegate::metrics::Metrics;
use rolegate::ops::notify::Notifier;
use tracing::{error, info, warn};

#[derive(Parser)]
#[command(
    name = "rolegate",
    version,
    about = "Role-aware TCP proxy for replicated databases"
)]
struct Cli {
    /// Config file to run with.
    #[arg(long, short, env = "ROLEGATE_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run,
    /// Validate a config file: exit 0, or print every error and exit 1.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// GET an admin URL (e.g. /readyz): exit 0 on 2xx, 1 otherwise. For HEALTHCHECK,
    /// keepalived's vrrp_script and exec probes, so that no curl is needed.
    Probe {
        /// Plain-HTTP URL to GET.
        #[arg(long, default_value = "http://127.0.0.1:9813/readyz")]
        url: String,
        /// Deadline for the whole exchange (connect, request, answer).
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Translate a haproxy.cfg into a rolegate config on stdout; what cannot be translated is
    /// listed on stderr as FILE:LINE: message. Exit 0 when something was translated, else 1.
    ImportHaproxy {
        /// The haproxy.cfg to read.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => check_config(&file),
        Some(Command::Probe { url, timeout }) => rolegate::ops::probe_cli::run(&url, timeout),
        Some(Command::ImportHaproxy { file }) => rolegate::ops::import_haproxy::run(&file),
        Some(Command::Run) | None => {
            let Some(path) = cli.config else {
                eprintln!("rolegate: no config file; pass --config FILE or set ROLEGATE_CONFIG");
                return ExitCode::from(2);
            };
            run(path)
        }
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match Config::load(file) {
        Ok(config) => {
            for warning in config.file_warnings() {
                eprintln!("{}: warning: {warning}", file.display());
            }
            println!(
                "{}: ok ({} clusters, {} listeners)",
                file.display(),
                config.clusters.len(),
                config.listeners.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: PathBuf) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    // Held to the end of `run`: dropping it writes the lines still queued.
    let log = rolegate::logging::init(&config.log);
    // The control plane (probes, supervisor, admin API, signals): one thread. The data plane
    // runs on its own `workers` threads (see `rolegate::data_plane::workers`).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            error!(message = "Cannot start the runtime.", error = %e);
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(path, config, &log))
}

async fn serve(path: PathBuf, config: Config, log: &LogGuard) -> ExitCode {
    use tokio::signal::unix::{signal, SignalKind};
    let grace = config.shutdown_grace;
    // Handlers first: a SIGHUP (`systemctl reload`) or SIGTERM that arrives while starting, or
    // right after READY=1, must not hit the default action (terminate).
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!(message = "Cannot install signal handlers.");
        return ExitCode::FAILURE;
    };
    match rolegate::data_plane::fd_budget::raise_nofile() {
        Ok((before, after)) if after > before => {
            info!(
                message = "Raised the descriptor limit to its hard limit.",
                from = before,
                to = after
            );
        }
        Ok(_) => {}
        Err(e) => warn!(message = "Cannot raise the descriptor limit.", error = %e),
    }
    let metrics = Metrics::new();
    let _ = metrics.registry.register(Box::new(log.dropped_lines()));
    let app = match App::start(config, metrics).await {
        Ok(app) => app,
        Err(e) => {
            error!(message = "Cannot start.", error = %e);
            return ExitCode::FAILURE;
        }
    };
    info!(message = "rolegate started.", version = env!("CARGO_PKG_VERSION"), config = %path.display(), admin = ?app.admin_addr());
    // Listeners are bound: tell systemd (Type=notify) that clients can connect.
    let notifier = Notifier::from_env();
    notify(&notifier.ready(&serving(&app).await));
    loop {
        tokio::select! {
            _ = hup.recv() => {
                notify(&notifier.reloading("reloading the configuration"));
                // Outcome is logged and counted by the app; the old config keeps running on error.
                let status = match app.reload_from_source().await {
                    Ok(()) => serving(&app).await,
                    Err(_) => "reload failed; the previous configuration keeps running".to_string(),
                };
                notify(&notifier.ready(&status));
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    notify(&notifier.stopping("draining sessions"));
    app.shutdown(grace).await;
    ExitCode::SUCCESS
}

/// The `STATUS=` line while running.
async fn serving(app: &App) -> String {
    format!("serving {} listeners", app.config().await.listeners.len())
}

/// A failed notification is worth a warning, never a stop.
fn notify(result: &std::io::Result<bool>) {
    if let Err(e) = result {
        warn!(message = "Cannot notify the service manager.", error = %e);
    }
}
