//! The admin HTTP server, on its own listener (loopback by default), never on the data plane.
//!
//! Endpoints:
//! - `GET /metrics` — Prometheus text format.
//! - `GET /healthz` — 200 while the process runs.
//! - `GET /readyz` — 200 when every listener can place a new connection; otherwise 503 and one
//!   line per listener that cannot, with the reason.
//! - `GET /status` — JSON: clusters, backends (health, role, lag, last error, sessions),
//!   listeners.
//!
//! The service is a function of [`AdminState`], so tests call [`handle`] without sockets.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::app::App;

/// What the admin service reads.
#[derive(Clone)]
pub struct AdminState {
    app: Arc<App>,
}

impl AdminState {
    pub fn new(app: Arc<App>) -> Self {
        AdminState { app }
    }
}

type Body = Full<Bytes>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(body.into()))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// Answers one request.
pub async fn handle<B>(state: &AdminState, req: Request<B>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => Response::builder()
            .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
            .body(Full::new(Bytes::from(state.app.metrics().encode())))
            .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "encode failed")),
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => {
            let table = state.app.router().load();
            let missing = table.unavailable();
            if missing.is_empty() && table.generation > 0 {
                text(StatusCode::OK, "ready\n")
            } else {
                let mut body = String::new();
                for (listener, why) in missing {
                    body.push_str(&format!("{listener}: {}\n", why.as_str()));
                }
                text(StatusCode::SERVICE_UNAVAILABLE, body)
            }
        }
        (&Method::GET, "/status") => {
            let snapshot = state.app.supervisor().status.load_full();
            match serde_json::to_vec_pretty(&*snapshot) {
                Ok(body) => Response::builder()
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "")),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        (_, "/metrics" | "/healthz" | "/readyz" | "/status") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Serves admin requests until `shutdown` fires.
pub async fn serve(listener: TcpListener, state: AdminState, shutdown: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    debug!(message = "Admin accept failed.", error = %e);
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r {
                    debug!(message = "Admin connection error.", peer = %peer, error = %e);
                },
                _ = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
            }
        });
    }
}
