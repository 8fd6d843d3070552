//! Which endpoint a request path names, and which methods it accepts.
//!
//! Parsing is separate from handling so that the routing rules (404 versus 405, the `Allow`
//! header, the shape of `/backends/{cluster}/{backend}/{action}`) are pure and tested without a
//! proxy. Paths are matched exactly: no trailing slash, no percent-decoding (config names are
//! plain `[A-Za-z0-9_.-]`, so a name that needs decoding cannot exist anyway).

use hyper::Method;

use crate::control_plane::supervisor::AdminAction;

/// One admin endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Metrics,
    Healthz,
    Readyz,
    Status,
    Reload,
    Backend {
        cluster: String,
        backend: String,
        action: AdminAction,
    },
}

/// A path that names no endpoint; the message says why (it becomes the 404 body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotFound(String);

/// What a 404 lists, so a typo is answered with the right spelling.
pub const ENDPOINTS: &str = "GET /metrics, /healthz, /readyz, /status; \
    POST /reload, /backends/{cluster}/{backend}/{drain|disable|enable}";

// === impl Endpoint ===

impl Endpoint {
    /// The endpoint `path` names.
    ///
    /// # Errors
    /// The path names no endpoint, or names an unknown backend action.
    pub fn parse(path: &str) -> Result<Endpoint, NotFound> {
        match path {
            "/metrics" => return Ok(Endpoint::Metrics),
            "/healthz" => return Ok(Endpoint::Healthz),
            "/readyz" => return Ok(Endpoint::Readyz),
            "/status" => return Ok(Endpoint::Status),
            "/reload" => return Ok(Endpoint::Reload),
            _ => {}
        }
        let unknown = || {
            NotFound(format!(
                "no endpoint {}; endpoints: {ENDPOINTS}",
                printable(path)
            ))
        };
        let rest = path.strip_prefix("/backends/").ok_or_else(unknown)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let [cluster, backend, action] = parts.as_slice() else {
            return Err(NotFound(format!(
                "no endpoint {}; backend actions are POST /backends/{{cluster}}/{{backend}}/{{drain|disable|enable}}",
                printable(path)
            )));
        };
        if cluster.is_empty() || backend.is_empty() {
            return Err(unknown());
        }
        let action = match *action {
            "drain" => AdminAction::Drain,
            "disable" => AdminAction::Disable,
            "enable" => AdminAction::Enable,
            other => {
                return Err(NotFound(format!(
                    "unknown backend action {}; use drain, disable or enable",
                    printable(other)
                )))
            }
        };
        Ok(Endpoint::Backend {
            cluster: (*cluster).to_string(),
            backend: (*backend).to_string(),
            action,
        })
    }

    /// Whether the endpoint changes something (and so needs the token).
    pub fn is_mutating(&self) -> bool {
        matches!(self, Endpoint::Reload | Endpoint::Backend { .. })
    }

    /// The value of the `Allow` header: reads accept `HEAD` too (hyper sends no body for it).
    pub fn allow(&self) -> &'static str {
        if self.is_mutating() {
            "POST"
        } else {
            "GET, HEAD"
        }
    }

    pub fn allows(&self, method: &Method) -> bool {
        if self.is_mutating() {
            method == Method::POST
        } else {
            method == Method::GET || method == Method::HEAD
        }
    }
}

/// `path` quoted, with at most 100 characters, so a 404 body cannot be used to reflect
/// arbitrarily long input back to the client.
fn printable(path: &str) -> String {
    let mut shown: String = path.chars().take(100).collect();
    if shown.len() < path.len() {
        shown.push('…');
    }
    format!("{shown:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_paths_and_their_methods() {
        for (path, endpoint) in [
            ("/metrics", Endpoint::Metrics),
            ("/healthz", Endpoint::Healthz),
            ("/readyz", Endpoint::Readyz),
            ("/status", Endpoint::Status),
        ] {
            assert_eq!(Endpoint::parse(path), Ok(endpoint.clone()));
            assert!(endpoint.allows(&Method::GET) && endpoint.allows(&Method::HEAD));
            assert!(!endpoint.allows(&Method::POST));
            assert_eq!(endpoint.allow(), "GET, HEAD");
        }
        let reload = Endpoint::parse("/reload").unwrap();
        assert!(reload.allows(&Method::POST) && !reload.allows(&Method::GET));
        assert_eq!(reload.allow(), "POST");
    }

    #[test]
    fn backend_actions() {
        assert_eq!(
            Endpoint::parse("/backends/pg/pg-a/drain"),
            Ok(Endpoint::Backend {
                cluster: "pg".into(),
                backend: "pg-a".into(),
                action: AdminAction::Drain
            })
        );
        for path in ["/backends/pg/pg-a/enable", "/backends/pg/pg-a/disable"] {
            assert!(Endpoint::parse(path).is_ok_and(|e| e.is_mutating()));
        }
    }

    #[test]
    fn unknown_paths_say_what_exists() {
        for path in [
            "/",
            "",
            "/metrics/",
            "/backends",
            "/backends/pg",
            "/backends/pg/a",
            "/backends//a/drain",
            "/backends/pg//drain",
            "/backends/pg/a/drain/now",
            "/backends/pg/a/reboot",
        ] {
            let err = Endpoint::parse(path).expect_err(path);
            assert!(
                err.0.contains("drain") || err.0.contains("/metrics"),
                "{path}: {err}"
            );
        }
    }

    #[test]
    fn a_huge_path_is_not_echoed_whole() {
        let path = format!("/{}", "x".repeat(10_000));
        let err = Endpoint::parse(&path).unwrap_err();
        assert!(err.0.len() < 400, "{}", err.0.len());
    }
}
