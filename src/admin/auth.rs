//! Who may call the mutating endpoints (`POST /reload`, backend actions).
//!
//! - With a token configured (`admin.token_file` / `admin.token_env`), every mutating request
//!   must carry `Authorization: Bearer <token>`, from any peer, loopback included: a token that
//!   loopback could skip would protect nothing on a shared host.
//! - Without a token (the validator only allows that on a loopback `admin.listen`), mutating
//!   requests are accepted from loopback peers only. This also covers a reload that dropped the
//!   token while the admin socket, which a reload does not rebind, still listens publicly.
//!
//! The token is compared in constant time (for a presented token of the right length), so
//! response timing does not reveal how many leading bytes were right. The token never appears
//! in a log line, a response or an error.

use std::net::SocketAddr;

use hyper::header::AUTHORIZATION;
use hyper::HeaderMap;
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// Why a mutating request was refused. `Display` is the response body and the log reason; it
/// never contains the presented or the configured token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("missing Authorization header; send Authorization: Bearer <token> (admin.token_file)")]
    MissingToken,
    #[error("malformed Authorization header; expected Authorization: Bearer <token>")]
    Malformed,
    #[error("wrong token")]
    WrongToken,
    #[error(
        "no admin token is configured, so admin actions are only accepted from loopback; \
         set admin.token_file to allow other peers"
    )]
    NotLoopback,
}

impl Denied {
    /// 401 asks for credentials (and carries `WWW-Authenticate`); 403 means none would help.
    pub fn is_unauthorized(self) -> bool {
        !matches!(self, Denied::NotLoopback)
    }

    /// Stable short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Denied::MissingToken => "missing_token",
            Denied::Malformed => "malformed",
            Denied::WrongToken => "wrong_token",
            Denied::NotLoopback => "not_loopback",
        }
    }
}

/// Decides whether a mutating request from `peer` with `headers` may proceed.
///
/// # Errors
/// The reason the request is refused; the caller answers 401/403 and changes nothing.
pub fn authorize(
    token: Option<&Secret>,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<(), Denied> {
    let Some(token) = token else {
        return if is_loopback(peer) {
            Ok(())
        } else {
            Err(Denied::NotLoopback)
        };
    };
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(Denied::MissingToken)?;
    if values.next().is_some() {
        return Err(Denied::Malformed);
    }
    let presented = bearer(value.as_bytes()).ok_or(Denied::Malformed)?;
    if constant_time_eq(presented, token.expose().as_bytes()) {
        Ok(())
    } else {
        Err(Denied::WrongToken)
    }
}

/// The credentials of a `Bearer` authorization value (the scheme is case-insensitive,
/// RFC 7235 §2.1), or `None` for another scheme or an empty token.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if value.len() <= SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let token = value[SCHEME.len()..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Compares `presented` with `secret` in time that does not depend on their content (subtle's
/// `ct_eq`, which keeps the optimiser from short-cutting the fold). Lengths are compared
/// first: a wrong length is refused sooner, which reveals at most the token's length, never a
/// byte of it.
pub fn constant_time_eq(presented: &[u8], secret: &[u8]) -> bool {
    presented.ct_eq(secret).into()
}

/// Loopback, including IPv4-mapped IPv6 (`::ffff:127.0.0.1`, seen on dual-stack sockets).
pub fn is_loopback(peer: SocketAddr) -> bool {
    peer.ip().to_canonical().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(auth: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for a in auth {
            h.append(AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    const LOCAL: &str = "127.0.0.1:5000";
    const REMOTE: &str = "10.1.2.3:5000";

    #[test]
    fn with_a_token_only_the_right_bearer_passes_from_anywhere() {
        let token = Secret::new("s3cret-token");
        let t = Some(&token);
        for peer in [LOCAL, REMOTE] {
            let peer = peer.parse().unwrap();
            assert_eq!(
                authorize(t, peer, &headers(&["Bearer s3cret-token"])),
                Ok(())
            );
            assert_eq!(
                authorize(t, peer, &headers(&["bearer  s3cret-token "])),
                Ok(())
            );
            assert_eq!(authorize(t, peer, &headers(&[])), Err(Denied::MissingToken));
            for wrong in [
                "Bearer s3cret-tokem",
                "Bearer s3cret",
                "Bearer s3cret-token2",
            ] {
                assert_eq!(
                    authorize(t, peer, &headers(&[wrong])),
                    Err(Denied::WrongToken)
                );
            }
            for malformed in ["s3cret-token", "Basic czNjcmV0", "Bearer", "Bearer   "] {
                assert_eq!(
                    authorize(t, peer, &headers(&[malformed])),
                    Err(Denied::Malformed),
                    "{malformed}"
                );
            }
            let twice = headers(&["Bearer s3cret-token", "Bearer s3cret-token"]);
            assert_eq!(authorize(t, peer, &twice), Err(Denied::Malformed));
        }
    }

    #[test]
    fn without_a_token_only_loopback_passes() {
        let none = headers(&[]);
        assert_eq!(authorize(None, LOCAL.parse().unwrap(), &none), Ok(()));
        assert_eq!(authorize(None, "[::1]:1".parse().unwrap(), &none), Ok(()));
        let mapped = "[::ffff:127.0.0.1]:1".parse().unwrap();
        assert_eq!(authorize(None, mapped, &none), Ok(()));
        for remote in [REMOTE, "[::ffff:10.0.0.1]:1", "[2001:db8::1]:1"] {
            assert_eq!(
                authorize(None, remote.parse().unwrap(), &none),
                Err(Denied::NotLoopback)
            );
        }
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(constant_time_eq(b"", b""));
        for (a, b) in [
            (&b"abc"[..], &b"abd"[..]),
            (b"ab", b"abc"),
            (b"abc", b"ab"),
            (b"", b"a"),
        ] {
            assert!(!constant_time_eq(a, b));
        }
        // The secret padded with NULs is a different token.
        assert!(!constant_time_eq(b"ab\0", b"ab"));
    }

    #[test]
    fn messages_never_carry_the_token() {
        for d in [
            Denied::MissingToken,
            Denied::Malformed,
            Denied::WrongToken,
            Denied::NotLoopback,
        ] {
            assert!(!d.to_string().contains("s3cret"));
        }
    }
}
