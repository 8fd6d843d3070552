//! The mutating endpoints: `POST /reload` and `POST /backends/{cluster}/{backend}/{action}`,
//! and the bounded read of their (empty) request bodies.
//!
//! They run only after [`super::auth::authorize`] let the request through. Each logs one line
//! with the peer, so the log is an audit trail of who changed what.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::header::CONTENT_LENGTH;
use hyper::{HeaderMap, StatusCode};
use tracing::info;

use super::{text, Body};
use super::{Proxy, ReloadRefused};
use crate::control_plane::supervisor::{AdminAction, AdminError};
use crate::routing::BackendKey;

/// The mutating endpoints take no body; this bounds what a client can make the server buffer
/// before it is refused.
pub const MAX_BODY_BYTES: usize = 4 * 1024;

/// A body that trickles in is refused after this long, so it cannot hold a connection slot.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads the request body (at most [`MAX_BODY_BYTES`], within [`BODY_READ_TIMEOUT`]) and
/// insists that it is empty.
///
/// # Errors
/// The response to send instead: 413 too large, 408 too slow, 400 unreadable or not empty.
pub(super) async fn read_empty_body<B>(
    headers: &HeaderMap,
    body: B,
) -> Result<(), hyper::Response<Body>>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let too_large = || {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body larger than {MAX_BODY_BYTES} bytes; this endpoint takes no body\n"
            ),
        )
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let read = tokio::time::timeout(
        BODY_READ_TIMEOUT,
        Limited::new(body, MAX_BODY_BYTES).collect(),
    )
    .await;
    let collected = match read {
        Err(_) => {
            return Err(text(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time\n",
            ))
        }
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(too_large())
        }
        Ok(Err(error)) => {
            return Err(text(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {error}\n"),
            ))
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    if collected.is_empty() {
        Ok(())
    } else {
        Err(text(
            StatusCode::BAD_REQUEST,
            "this endpoint takes no request body; send an empty POST\n",
        ))
    }
}

/// `POST /reload`: re-reads the config file and applies it.
///
/// 200 on success; 422 with every error (`FILE:LINE:COLUMN: FIELD: MESSAGE`, one per line) for
/// an invalid file; 409 when the config did not come from a file; 500 when the new config was
/// valid but could not be applied (a new listener's address is taken). In every error case the
/// previous configuration keeps running, and the result is counted and logged by the proxy.
pub(super) async fn reload(proxy: &dyn Proxy, peer: SocketAddr) -> hyper::Response<Body> {
    info!(message = "Reload requested over the admin API.", peer = %peer);
    let kept = "the previous configuration keeps running";
    match proxy.reload().await {
        Ok(()) => {
            let generation = proxy.router().load().generation;
            text(
                StatusCode::OK,
                format!("configuration reloaded; routing table generation {generation}\n"),
            )
        }
        Err(ReloadRefused::Invalid(errors)) => text(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("configuration is invalid; {kept}:\n{errors}\n"),
        ),
        Err(error @ ReloadRefused::NoSource(_)) => {
            text(StatusCode::CONFLICT, format!("cannot reload: {error}\n"))
        }
        Err(error @ ReloadRefused::NotApplied(_)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot apply the configuration ({error}); {kept}\n"),
        ),
    }
}

/// Stable name of an action, as in the URL.
pub fn action_name(action: AdminAction) -> &'static str {
    match action {
        AdminAction::Drain => "drain",
        AdminAction::Disable => "disable",
        AdminAction::Enable => "enable",
    }
}

/// `POST /backends/{cluster}/{backend}/{action}`: 200, or 404 for a backend the running
/// config does not have.
pub(super) async fn backend(
    proxy: &dyn Proxy,
    peer: SocketAddr,
    cluster: &str,
    backend: &str,
    action: AdminAction,
) -> hyper::Response<Body> {
    let key = BackendKey {
        cluster: cluster.into(),
        backend: backend.into(),
    };
    let name = action_name(action);
    info!(message = "Backend action requested over the admin API.", peer = %peer, backend = %key, action = name);
    match proxy.backend_action(key.clone(), action).await {
        Ok(()) => text(StatusCode::OK, format!("{key}: {name}\n")),
        Err(error @ AdminError::UnknownBackend(_)) => {
            text(StatusCode::NOT_FOUND, format!("{error}\n"))
        }
        Err(error @ AdminError::Stopped) => {
            text(StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n"))
        }
    }
}
