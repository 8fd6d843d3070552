//! The `rolegate` binary: CLI, logging, signals. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use rolegate::app::App;
use rolegate::config::Config;
use rolegate::logging::LogGuard;
use rolegate::metrics::Metrics;
use rolegate::ops::admin_client::{self, ClientOptions};
use rolegate::ops::cli_docs;
use rolegate::ops::notify::Notifier;
use tracing::{error, info, warn};

#[derive(Parser)]
#[command(
    name = "rolegate",
    version,
    about = "Role-aware TCP proxy for replicated databases"
)]
struct Cli {
    /// Config file to run with (the admin commands read its admin: block for URL and token).
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
    /// Show the running proxy's clusters, backends (role, health, sessions) and listeners,
    /// from its admin API (GET /status).
    #[command(after_help = ADMIN_EXIT_CODES)]
    Status {
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the raw /status JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Drain a backend: no new sessions, existing ones finish.
    #[command(after_help = ADMIN_EXIT_CODES)]
    Drain(BackendArgs),
    /// Disable a backend: no new sessions, existing ones are closed now.
    #[command(after_help = ADMIN_EXIT_CODES)]
    Disable(BackendArgs),
    /// Enable a backend again: back to what its checks say.
    #[command(after_help = ADMIN_EXIT_CODES)]
    Enable(BackendArgs),
    /// Print a shell completion script, e.g. `rolegate completions bash > /etc/bash_completion.d/rolegate`.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) on stdout, or write one page per subcommand into --dir.
    Man {
        /// Write rolegate.1 and rolegate-SUBCOMMAND.1 into this directory.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// The admin commands' exit codes (also in README.md, "Command line").
const ADMIN_EXIT_CODES: &str = "Exit status: 0 done; 1 the server refused (unknown backend, \
    refused token, error answer); 2 bad arguments, config or token file; 3 no answer from the \
    admin API (not running, wrong address, timeout).";

/// Where the admin client finds the server. Without flags: admin.listen and the token of the
/// --config file, else http://127.0.0.1:9813 without a token.
#[derive(clap::Args)]
struct AdminArgs {
    /// Admin API base URL (default: admin.listen of --config, else http://127.0.0.1:9813).
    #[arg(long, value_name = "URL", env = "ROLEGATE_ADMIN_URL")]
    admin: Option<String>,
    /// File holding the admin token (default: admin.token_file / admin.token_env of --config).
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Deadline for the whole exchange.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

impl AdminArgs {
    fn options(self, config: Option<PathBuf>) -> ClientOptions {
        ClientOptions {
            admin: self.admin,
            config,
            token_file: self.token_file,
            timeout: self.timeout,
        }
    }
}

/// A backend action's arguments.
#[derive(clap::Args)]
struct BackendArgs {
    /// Cluster name, as in the config.
    cluster: String,
    /// Backend name, as in the config.
    backend: String,
    #[command(flatten)]
    admin: AdminArgs,
}

impl BackendArgs {
    /// `POST /backends/{cluster}/{backend}/{action}`.
    fn run(self, config: Option<PathBuf>, action: &str) -> ExitCode {
        let (cluster, backend) = (self.cluster, self.backend);
        admin_client::run(&self.admin.options(config), |c| {
            c.backend_action(&cluster, &backend, action)
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => check_config(&file),
        Some(Command::Probe { url, timeout }) => rolegate::ops::probe_cli::run(&url, timeout),
        Some(Command::ImportHaproxy { file }) => rolegate::ops::import_haproxy::run(&file),
        Some(Command::Status { admin, json }) => {
            admin_client::run(&admin.options(cli.config), |c| {
                admin_client::status(c, json)
            })
        }
        Some(Command::Drain(args)) => args.run(cli.config, "drain"),
        Some(Command::Disable(args)) => args.run(cli.config, "disable"),
        Some(Command::Enable(args)) => args.run(cli.config, "enable"),
        Some(Command::Completions { shell }) => {
            cli_docs::completions(shell, &mut Cli::command(), &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Some(Command::Man { dir }) => man(dir.as_deref()),
        Some(Command::Run) | None => {
            let Some(path) = cli.config else {
                eprintln!("rolegate: no config file; pass --config FILE or set ROLEGATE_CONFIG");
                return ExitCode::from(2);
            };
            run(path)
        }
    }
}

fn man(dir: Option<&std::path::Path>) -> ExitCode {
    let result = match dir {
        None => cli_docs::man_page(Cli::command(), &mut std::io::stdout()),
        Some(dir) => cli_docs::man_pages(Cli::command(), dir).map(|files| {
            for f in files {
                println!("{}", f.display());
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rolegate man: {e}");
            ExitCode::FAILURE
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
