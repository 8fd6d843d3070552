//! The admin API client behind `rolegate status`, `drain`, `disable` and `enable`.
//!
//! It finds the server and its token where the server itself does: `admin.listen` and
//! `admin.token_file` / `admin.token_env` of the config file (`--config`, `ROLEGATE_CONFIG`),
//! read with the server's own loader ([`Config::load_admin`]), so an operator on the proxy host
//! types `rolegate drain pg pg-a` and nothing else. `--admin URL` and `--token-file PATH`
//! override them. The HTTP exchange is the probe's ([`crate::ops::probe_cli::exchange`]): one
//! blocking HTTP/1.0 request, one deadline.
//!
//! Every failure is a [`ClientError`] whose message says what to do next (the URL that refused
//! the connection, where the refused token came from, which backend does not exist), and whose
//! [`ClientError::exit_code`] tells scripts apart "the server said no" from "no server".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{read_secret_file, Config, Secret};
use crate::ops::probe_cli::{exchange, ProbeError, ProbeResponse, ProbeUrl, Request};

/// Where the server listens when neither `--admin` nor a config file says (the default
/// `admin.listen`).
pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:9813";

/// `/status` of a large fleet (hundreds of backends) is a few hundred KiB; this bounds what
/// the client buffers.
pub const MAX_STATUS_BYTES: usize = 16 * 1024 * 1024;

/// Exit code: the server answered with an error (unknown backend, refused token, 5xx).
pub const EXIT_REFUSED: u8 = 1;
/// Exit code: bad arguments or local input (URL, config file, token file, names).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: no HTTP answer (connection refused, timeout, not an HTTP server).
pub const EXIT_UNREACHABLE: u8 = 3;

/// What the command line says about the server to talk to.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// `--admin URL`: wins over the config file.
    pub admin: Option<String>,
    /// `--config FILE`: its `admin:` block gives the URL and the token.
    pub config: Option<PathBuf>,
    /// `--token-file PATH`: wins over the config file's token.
    pub token_file: Option<PathBuf>,
    pub timeout: Duration,
}

/// Why an admin command failed. `Display` never contains the token.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the admin API at {url}: {source}; is rolegate running, and is that its admin.listen?")]
    Unreachable {
        url: String,
        #[source]
        source: ProbeError,
    },
    #[error("{url}: 401 Unauthorized: {body}; {hint}")]
    Unauthorized {
        url: String,
        body: String,
        hint: String,
    },
    #[error("{url}: 403 Forbidden: {body}")]
    Forbidden { url: String, body: String },
    #[error("unknown backend {cluster}/{backend}: the running configuration has no such backend (see `rolegate status`)")]
    UnknownBackend { cluster: String, backend: String },
    #[error("{url}: {summary}")]
    Server { url: String, summary: String },
    #[error("{url}: {what}")]
    BadAnswer { url: String, what: String },
}

impl ClientError {
    /// The process exit code for this error (documented in README.md, "Command line").
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Usage(_) => EXIT_USAGE,
            ClientError::Unreachable { .. } | ClientError::BadAnswer { .. } => EXIT_UNREACHABLE,
            ClientError::Unauthorized { .. }
            | ClientError::Forbidden { .. }
            | ClientError::UnknownBackend { .. }
            | ClientError::Server { .. } => EXIT_REFUSED,
        }
    }
}

/// A resolved admin server: base URL, token and where that token came from.
#[derive(Debug)]
pub struct AdminClient {
    /// `http://host:port` (plus a path prefix if `--admin` has one), no trailing `/`.
    base: String,
    /// Sent with `POST`s only (reads need none), so a token this shell cannot read (the
    /// server's `token_env` variable unset here) fails an action, not `status`.
    token: Result<Option<Secret>, String>,
    /// `--token-file /root/token`, `admin.token_file (/etc/rolegate/token) of FILE`: for the
    /// 401 message. Never the token itself.
    token_source: Option<String>,
    timeout: Duration,
}

impl AdminClient {
    /// Resolves the URL and token from the options (see the module docs for the precedence).
    ///
    /// # Errors
    /// [`ClientError::Usage`]: an unreadable or invalid config or token file, a config whose
    /// admin server is disabled (and no `--admin`), a malformed `--admin`.
    pub fn resolve(options: &ClientOptions) -> Result<AdminClient, ClientError> {
        let file = match &options.config {
            Some(path) => Some((path, load_admin(path)?)),
            None => None,
        };
        let base = match (&options.admin, &file) {
            (Some(url), _) => normalize_url(url)?,
            (None, Some((path, admin))) => match admin.listen {
                Some(listen) => url_for(listen),
                None => {
                    return Err(ClientError::Usage(format!(
                        "{}: the admin server is disabled (admin.enabled: false); pass --admin URL",
                        path.display()
                    )))
                }
            },
            (None, None) => DEFAULT_ADMIN_URL.to_string(),
        };
        let (token, token_source) = match (&options.token_file, file) {
            (Some(path), _) => {
                let token = read_secret_file(path)
                    .map_err(|e| ClientError::Usage(format!("--token-file: {e}")))?;
                (
                    Ok(Some(token)),
                    Some(format!("--token-file {}", path.display())),
                )
            }
            (None, Some((path, admin))) => (
                admin.token,
                admin
                    .token_source
                    .map(|s| format!("{s} of {}", path.display())),
            ),
            (None, None) => (Ok(None), None),
        };
        Ok(AdminClient {
            base,
            token,
            token_source,
            timeout: options.timeout,
        })
    }

    /// The base URL requests go to.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /status`: the JSON text, as the server wrote it.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn status(&self) -> Result<String, ClientError> {
        let (url, response) = self.send("GET", "/status", MAX_STATUS_BYTES)?;
        if !response.is_success() {
            return Err(self.refused(url, &response));
        }
        Ok(response.body)
    }

    /// `POST path` (an admin action); the server's one-line answer on success.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn post(&self, path: &str) -> Result<String, ClientError> {
        let (url, response) = self.send("POST", path, crate::ops::probe_cli::MAX_RESPONSE)?;
        if !response.is_success() {
            return Err(self.refused(url, &response));
        }
        Ok(response.body.trim_end().to_string())
    }

    /// `POST /backends/{cluster}/{backend}/{action}`; a 404 becomes
    /// [`ClientError::UnknownBackend`] naming the backend.
    ///
    /// # Errors
    /// A name the server could not have (checked here, so no request is sent), or see
    /// [`ClientError`].
    pub fn backend_action(
        &self,
        cluster: &str,
        backend: &str,
        action: &str,
    ) -> Result<String, ClientError> {
        for (what, name) in [("cluster", cluster), ("backend", backend)] {
            check_name(what, name)?;
        }
        match self.post(&format!("/backends/{cluster}/{backend}/{action}")) {
            Err(ClientError::Server { summary, .. }) if summary.starts_with("404") => {
                Err(ClientError::UnknownBackend {
                    cluster: cluster.to_string(),
                    backend: backend.to_string(),
                })
            }
            other => other,
        }
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        max_response: usize,
    ) -> Result<(String, ProbeResponse), ClientError> {
        let url = format!("{}{path}", self.base);
        let parsed = ProbeUrl::parse(&url).map_err(|e| ClientError::Usage(e.to_string()))?;
        let token = match (method, &self.token) {
            ("GET" | "HEAD", _) => None,
            (_, Ok(token)) => token.as_ref(),
            (_, Err(why)) => {
                return Err(ClientError::Usage(format!(
                    "cannot read the admin token: {why}\n(pass --token-file PATH, or export \
                     the variable the server's token_env names)"
                )))
            }
        };
        let authorization = token.map(|t| format!("Bearer {}", t.expose()));
        let headers: Vec<(&str, &str)> = authorization
            .iter()
            .map(|a| ("Authorization", a.as_str()))
            .collect();
        let request = Request {
            method,
            headers: &headers,
            max_response,
        };
        match exchange(&parsed, &request, self.timeout) {
            Ok(response) => Ok((url, response)),
            Err(ProbeError::BadResponse(line)) => Err(ClientError::BadAnswer {
                url,
                what: format!("not an HTTP answer ({line:?}); is that rolegate's admin port?"),
            }),
            Err(ProbeError::TooLarge { limit, .. }) => Err(ClientError::BadAnswer {
                url,
                what: format!("the answer is longer than {limit} bytes"),
            }),
            Err(ProbeError::BadUrl(e)) => Err(ClientError::Usage(format!("bad URL {e}"))),
            Err(source) => Err(ClientError::Unreachable {
                url: self.base.clone(),
                source,
            }),
        }
    }

    /// The error for a non-2xx answer.
    fn refused(&self, url: String, response: &ProbeResponse) -> ClientError {
        let body = response.body.trim().to_string();
        match response.status {
            401 => {
                let hint = match (&self.token, &self.token_source) {
                    (Ok(None) | Err(_), _) => {
                        "no token was sent: pass --config FILE (the server's config, \
                         for its admin.token_file or admin.token_env) or --token-file PATH"
                            .to_string()
                    }
                    (Ok(Some(_)), Some(source)) => {
                        format!("the token from {source} was refused; is it the server's token?")
                    }
                    (Ok(Some(_)), None) => "the token sent was refused".to_string(),
                };
                ClientError::Unauthorized { url, body, hint }
            }
            403 => ClientError::Forbidden { url, body },
            _ => ClientError::Server {
                url,
                summary: response.summary(),
            },
        }
    }
}

/// Runs one admin command: resolves the client, calls `act`, prints its answer on stdout or
/// the error on stderr, and returns the exit code (0, or [`ClientError::exit_code`]). A new
/// `POST` subcommand is one call: `run(&options, |c| c.post("/path"))`.
pub fn run(
    options: &ClientOptions,
    act: impl FnOnce(&AdminClient) -> Result<String, ClientError>,
) -> std::process::ExitCode {
    match AdminClient::resolve(options).and_then(|client| act(&client)) {
        Ok(answer) => {
            println!("{}", answer.trim_end());
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("rolegate: {error}");
            std::process::ExitCode::from(error.exit_code())
        }
    }
}

/// `GET /status`, as the server's JSON (`json`) or as [`super::status_view`] tables.
///
/// # Errors
/// See [`ClientError`]; an answer that is not `/status` JSON is [`ClientError::BadAnswer`].
pub fn status(client: &AdminClient, json: bool) -> Result<String, ClientError> {
    let body = client.status()?;
    if json {
        return Ok(body);
    }
    super::status_view::render(&body).map_err(|e| ClientError::BadAnswer {
        url: format!("{}/status", client.base()),
        what: format!("not a /status document: {e}"),
    })
}

fn load_admin(path: &Path) -> Result<crate::config::AdminFile, ClientError> {
    Config::load_admin(path).map_err(|errors| ClientError::Usage(errors.to_string()))
}

/// `http://…` for `admin.listen`: a wildcard bind is reached on loopback of its family.
fn url_for(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

/// `--admin` as given, with `http://` added when no scheme is written and the trailing `/`
/// dropped; refused when the probe's URL parser refuses it.
fn normalize_url(url: &str) -> Result<String, ClientError> {
    let with_scheme = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    let base = with_scheme.trim_end_matches('/').to_string();
    ProbeUrl::parse(&base).map_err(|e| ClientError::Usage(format!("--admin: {e}")))?;
    Ok(base)
}

impl AdminClient {
    /// `POST /clusters/{cluster}/hold?timeout=…` (`Some`) or `/clusters/{cluster}/release`
    /// (`None`); the server's one-line answer.
    ///
    /// # Errors
    /// A cluster name the server could not have (no request is sent), or see [`ClientError`].
    pub fn cluster_hold(
        &self,
        cluster: &str,
        timeout: Option<std::time::Duration>,
    ) -> Result<String, ClientError> {
        check_name("cluster", cluster)?;
        match timeout {
            Some(t) => self.post(&format!(
                "/clusters/{cluster}/hold?timeout={}ms",
                t.as_millis()
            )),
            None => self.post(&format!("/clusters/{cluster}/release")),
        }
    }
}

/// Config names are `[A-Za-z0-9_.-]` (the server matches paths without decoding).
fn check_name(what: &str, name: &str) -> Result<(), ClientError> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ClientError::Usage(format!(
            "{what} name {name:?} cannot exist: names are letters, digits, '_', '.' and '-'"
        )))
    }
}

#[cfg(test)]
mod tests;
