//! systemd service notifications (`sd_notify(3)`) without libsystemd.
//!
//! When systemd starts rolegate from a `Type=notify` unit it passes the path of a unix datagram
//! socket in `NOTIFY_SOCKET` (a leading `@` names an abstract socket). A notification is one
//! datagram of newline-separated `KEY=VALUE` lines. rolegate sends:
//!
//! - `READY=1` once every listener and the admin server are bound (so `systemctl start` returns
//!   when clients can connect; readiness of the *databases* is `/readyz`, not this);
//! - `RELOADING=1` when a SIGHUP reload starts and `READY=1` when it is over, whatever its
//!   outcome (a bad file leaves the old config running);
//! - `STOPPING=1` when SIGTERM/SIGINT starts the drain;
//! - a human-readable `STATUS=` line with each, shown by `systemctl status`.
//!
//! Without `NOTIFY_SOCKET` every call is a no-op. A failed send is reported to the caller and
//! never stops the proxy.

use std::ffi::OsString;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

/// The variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Path(PathBuf),
    /// Linux abstract namespace (`@name` in the variable), without the leading `@`.
    Abstract(Vec<u8>),
}

/// Sends service-state notifications to the service manager, if there is one.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    target: Option<Target>,
}

impl Notifier {
    /// A notifier for the socket in `$NOTIFY_SOCKET`; disabled when it is unset or empty.
    pub fn from_env() -> Notifier {
        Notifier::from_socket_var(std::env::var_os(NOTIFY_SOCKET))
    }

    /// A notifier for the given `NOTIFY_SOCKET` value (tests, or callers that read the
    /// environment themselves).
    pub fn from_socket_var(value: Option<OsString>) -> Notifier {
        use std::os::unix::ffi::OsStringExt;
        let target = value
            .map(OsStringExt::into_vec)
            .filter(|v| !v.is_empty())
            .map(|v| match v.strip_prefix(b"@") {
                Some(name) => Target::Abstract(name.to_vec()),
                None => Target::Path(PathBuf::from(OsString::from_vec(v))),
            });
        Notifier { target }
    }

    /// Whether a service manager listens.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one notification made of `KEY=VALUE` lines. `Ok(false)` when disabled.
    ///
    /// # Errors
    /// The socket cannot be created or the datagram cannot be sent.
    pub fn notify(&self, lines: &[&str]) -> io::Result<bool> {
        let Some(target) = &self.target else {
            return Ok(false);
        };
        let message = encode(lines);
        let socket = UnixDatagram::unbound()?;
        match target {
            Target::Path(path) => {
                socket.send_to(message.as_bytes(), path)?;
            }
            Target::Abstract(name) => send_abstract(&socket, name, message.as_bytes())?,
        }
        Ok(true)
    }

    /// `READY=1` with a status line.
    ///
    /// # Errors
    /// See [`Notifier::notify`].
    pub fn ready(&self, status: &str) -> io::Result<bool> {
        self.notify(&["READY=1", &status_line(status)])
    }

    /// `RELOADING=1` with a status line.
    ///
    /// # Errors
    /// See [`Notifier::notify`].
    pub fn reloading(&self, status: &str) -> io::Result<bool> {
        self.notify(&["RELOADING=1", &status_line(status)])
    }

    /// `STOPPING=1` with a status line.
    ///
    /// # Errors
    /// See [`Notifier::notify`].
    pub fn stopping(&self, status: &str) -> io::Result<bool> {
        self.notify(&["STOPPING=1", &status_line(status)])
    }
}

/// A `STATUS=` line; newlines would start a new assignment, so they become spaces.
fn status_line(status: &str) -> String {
    format!("STATUS={}", status.replace('\n', " "))
}

fn encode(lines: &[&str]) -> String {
    let mut message = lines.join("\n");
    message.push('\n');
    message
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_abstract(socket: &UnixDatagram, name: &[u8], message: &[u8]) -> io::Result<()> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    socket.send_to_addr(message, &addr).map(drop)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_abstract(_socket: &UnixDatagram, _name: &[u8], _message: &[u8]) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract unix sockets exist only on Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_without_socket() {
        for value in [None, Some(OsString::new())] {
            let n = Notifier::from_socket_var(value);
            assert!(!n.is_enabled());
            assert!(!n.ready("x").unwrap());
        }
    }

    #[test]
    fn sends_lines_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::from_socket_var(Some(path.clone().into_os_string()));
        assert!(n.ready("listening on 2 sockets").unwrap());
        let mut buf = [0u8; 256];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..len]).unwrap(),
            "READY=1\nSTATUS=listening on 2 sockets\n"
        );
        assert!(n.stopping("a\nb").unwrap());
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1\nSTATUS=a b\n");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("rolegate-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::from_socket_var(Some(format!("@{name}").into()));
        assert!(n.reloading("reloading").unwrap());
        let mut buf = [0u8; 256];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"RELOADING=1\nSTATUS=reloading\n");
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let n = Notifier::from_socket_var(Some("/nonexistent/rolegate/notify.sock".into()));
        assert!(n.ready("x").is_err());
    }
}
