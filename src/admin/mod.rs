//! The admin HTTP server, on its own listener (loopback by default), never on the data plane.
//!
//! Endpoints:
//! - `GET /metrics` — Prometheus text format (every family in [`crate::metrics`]).
//! - `GET /healthz` — 200 while the process runs.
//! - `GET /readyz` — 200 when every listener can place a new connection (its route has a
//!   candidate in the current routing table); otherwise 503 and one `listener: reason` line per
//!   listener that cannot. For keepalived's `vrrp_script` and Kubernetes readiness probes.
//! - `GET /status` — JSON: clusters, backends (health, role, admin state, lag, last error,
//!   sessions), listeners (route, bound address), readiness and version.
//! - `POST /reload` — re-reads the config file and applies it; 422 with every error
//!   (`FILE:LINE:COLUMN: FIELD: MESSAGE`) when it is invalid, and the old config keeps running.
//! - `POST /backends/{cluster}/{backend}/{drain|disable|enable}` — operator actions: drain (no
//!   new sessions, existing ones finish), disable (no new sessions, existing ones closed),
//!   enable (back to what the checks say). 404 for a backend the config does not have.
//!
//! `GET` endpoints also answer `HEAD`. The `POST` endpoints need `Authorization: Bearer
//! <token>` when a token is configured, and a loopback peer when none is ([`auth`]). Any other
//! method gets 405 with `Allow`, an unknown path 404, a body on a `POST` 400 (413 when large).
//! Malformed HTTP is answered by hyper (400/431) before it reaches [`handle`].
//!
//! [`handle`] is a function of an [`AdminHandle`] (the narrow view of the proxy, [`Proxy`]) and
//! the request, so tests call it without sockets; [`serve`] puts it on a bounded listener
//! ([`server`]).

mod actions;
pub mod auth;
pub mod endpoint;
mod handle;
mod routes;
mod server;

use std::error::Error as StdError;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use tracing::warn;

pub use actions::{action_name, BODY_READ_TIMEOUT, MAX_BODY_BYTES};
pub use endpoint::{Endpoint, NotFound};
pub use handle::{AdminHandle, Proxy, ReloadRefused};
pub use routes::{unready, Unready};
pub use server::{serve, serve_with, Limits, MAX_HEAD_BYTES};

/// Every response body is built whole: the largest is a metrics scrape.
pub type Body = Full<Bytes>;

/// A plain-text response.
pub(crate) fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Answers one request from `peer`.
///
/// Order: route (404/405) → authorize mutating requests (401/403, counted, logged) → bounded
/// body read (413/408/400) → act. Nothing is read or changed for a request that is refused.
pub async fn handle<B>(state: &AdminHandle, peer: SocketAddr, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let proxy = state.proxy();
    let endpoint = match route(req.method(), req.uri().path()) {
        Ok(e) => e,
        Err(response) => return *response,
    };
    if endpoint.is_mutating() {
        let token = proxy.config().await.admin.token.clone();
        if let Err(denied) = auth::authorize(token.as_ref(), peer, req.headers()) {
            return refuse(proxy, peer, req.uri().path(), denied);
        }
        let (parts, body) = req.into_parts();
        if let Err(response) = actions::read_empty_body(&parts.headers, body).await {
            return response;
        }
    }
    match endpoint {
        Endpoint::Metrics => routes::metrics(proxy),
        Endpoint::Healthz => routes::healthz(),
        Endpoint::Readyz => routes::readyz(proxy).await,
        Endpoint::Status => routes::status(proxy).await,
        Endpoint::Reload => actions::reload(proxy, peer).await,
        Endpoint::Backend {
            cluster,
            backend,
            action,
        } => actions::backend(proxy, peer, &cluster, &backend, action).await,
    }
}

/// The endpoint a request names, or the 404/405 answer. Pure (no state, no I/O), so the fuzz
/// target `admin_request` drives exactly what [`handle`] decides first.
///
/// # Errors
/// 404 for a path that names no endpoint, 405 (with `Allow`) for a method it does not accept.
pub fn route(method: &Method, path: &str) -> Result<Endpoint, Box<Response<Body>>> {
    let endpoint = match Endpoint::parse(path) {
        Ok(e) => e,
        Err(not_found) => {
            return Err(Box::new(text(
                StatusCode::NOT_FOUND,
                format!("{not_found}\n"),
            )))
        }
    };
    if !endpoint.allows(method) {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "method {method} not allowed on {path}; use {}\n",
                endpoint.allow()
            ),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static(endpoint.allow()));
        return Err(Box::new(response));
    }
    Ok(endpoint)
}

/// 401 (with `WWW-Authenticate: Bearer`) or 403; counted and logged with the peer, never with
/// the token.
fn refuse(proxy: &dyn Proxy, peer: SocketAddr, path: &str, denied: auth::Denied) -> Response<Body> {
    proxy.metrics().admin_auth_failures_total.inc();
    warn!(
        message = "Admin request refused.",
        peer = %peer,
        path = %path.chars().take(200).collect::<String>(),
        reason = denied.as_str(),
    );
    if denied.is_unauthorized() {
        let mut response = text(StatusCode::UNAUTHORIZED, format!("{denied}\n"));
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"rolegate\""),
        );
        response
    } else {
        text(StatusCode::FORBIDDEN, format!("{denied}\n"))
    }
}
