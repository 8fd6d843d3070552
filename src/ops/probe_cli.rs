//! `rolegate probe --url http://127.0.0.1:9813/readyz [--timeout 2s]`: one HTTP/1.0 GET, exit 0
//! on a 2xx answer and 1 otherwise.
//!
//! It exists so that the places that ask "is this rolegate ready?" — Docker's `HEALTHCHECK`,
//! keepalived's `vrrp_script`, a Kubernetes `exec` probe — need nothing but the rolegate binary
//! (no curl in the image). Deliberately tiny: plain `http://` only, blocking std sockets, one
//! deadline for the whole exchange (resolve, connect, write, read), the answer read up to
//! [`MAX_RESPONSE`] bytes.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// At most this much of an answer is read; the status line and a short body are all we need.
pub const MAX_RESPONSE: usize = 64 * 1024;

/// A parsed `http://host[:port][/path]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeUrl {
    /// As written in the URL (brackets kept for IPv6 literals): sent as the `Host` header.
    pub authority: String,
    host: String,
    pub port: u16,
    pub path: String,
}

impl ProbeUrl {
    /// Parses a plain-HTTP URL.
    ///
    /// # Errors
    /// Not `http://`, no host, a bad port, or a fragment/userinfo (not supported).
    pub fn parse(url: &str) -> Result<ProbeUrl, ProbeError> {
        let bad = |why: &str| ProbeError::BadUrl(format!("{url}: {why}"));
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("only http:// URLs are supported"))?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err(bad("user info is not supported"));
        }
        if path.contains('#') || path.chars().any(|c| c.is_ascii_whitespace()) {
            return Err(bad("the path must not contain '#' or whitespace"));
        }
        let (host, port) = if let Some(after) = authority.strip_prefix('[') {
            let (host, tail) = after
                .split_once(']')
                .ok_or_else(|| bad("unclosed '[' in the host"))?;
            match tail {
                "" => (host, None),
                _ => match tail.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err(bad("garbage after ']'")),
                },
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("the port must be 1-65535"))?,
        };
        Ok(ProbeUrl {
            authority: authority.to_string(),
            host: host.to_string(),
            port,
            path,
        })
    }
}

/// The answer's status line and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResponse {
    pub status: u16,
    pub reason: String,
    pub body: String,
}

impl ProbeResponse {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// `503 Service Unavailable: pg-rw: no_primary; redis-rw: no_primary` (body lines joined).
    pub fn summary(&self) -> String {
        let body: Vec<&str> = self
            .body
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let mut s = format!("{} {}", self.status, self.reason);
        if !body.is_empty() {
            s.push_str(": ");
            s.push_str(&body.join("; "));
        }
        s
    }
}

/// Why a probe got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("bad URL {0}")]
    BadUrl(String),
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not an HTTP answer: {0:?}")]
    BadResponse(String),
    #[error("the answer is longer than {limit} bytes")]
    TooLarge { limit: usize, partial: Vec<u8> },
}

/// One request of [`exchange`]: `GET` for probes; the admin client (`rolegate status`,
/// `drain`, …) also sends `POST`s with an `Authorization` header and reads longer answers.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// Extra `Name: value` header lines (never logged: one may carry the admin token).
    pub headers: &'a [(&'a str, &'a str)],
    /// An answer longer than this is [`ProbeError::TooLarge`] rather than cut short.
    pub max_response: usize,
}

impl Request<'_> {
    /// The probe's `GET`, answers read up to [`MAX_RESPONSE`] bytes.
    pub const GET: Request<'static> = Request {
        method: "GET",
        headers: &[],
        max_response: MAX_RESPONSE,
    };
}

/// GETs `url` within `timeout` (the whole exchange).
///
/// # Errors
/// See [`ProbeError`]; an HTTP error status is an `Ok` answer.
pub fn probe(url: &ProbeUrl, timeout: Duration) -> Result<ProbeResponse, ProbeError> {
    exchange(url, &Request::GET, timeout).or_else(|e| match e {
        // A probe only needs the status line: a long answer is still an answer.
        ProbeError::TooLarge { partial, .. } => parse_response(&partial),
        e => Err(e),
    })
}

/// Sends `request` to `url` and reads the answer within `timeout` (the whole exchange).
///
/// # Errors
/// See [`ProbeError`]; an HTTP error status is an `Ok` answer.
pub fn exchange(
    url: &ProbeUrl,
    request: &Request<'_>,
    timeout: Duration,
) -> Result<ProbeResponse, ProbeError> {
    let deadline = Instant::now() + timeout;
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(ProbeError::Timeout(timeout))
    };
    let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|source| ProbeError::Resolve {
            host: url.host.clone(),
            source,
        })?
        .collect();
    let mut last = None;
    let mut stream = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, remaining()?) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(ProbeError::Timeout(timeout))
            }
            Err(source) => {
                last = Some(ProbeError::Connect {
                    addr: addr.to_string(),
                    source,
                })
            }
        }
    }
    let Some(mut stream) = stream else {
        return Err(last.unwrap_or_else(|| ProbeError::Resolve {
            host: url.host.clone(),
            source: io::Error::new(io::ErrorKind::NotFound, "no addresses"),
        }));
    };
    let mut head = format!(
        "{} {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: rolegate-probe/{}\r\nAccept: */*\r\nConnection: close\r\n",
        request.method,
        url.path,
        url.authority,
        env!("CARGO_PKG_VERSION")
    );
    for (name, value) in request.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if request.method != "GET" && request.method != "HEAD" {
        head.push_str("Content-Length: 0\r\n");
    }
    head.push_str("\r\n");
    stream.set_write_timeout(Some(remaining()?))?;
    stream
        .write_all(head.as_bytes())
        .map_err(timeout_or(timeout))?;
    let limit = request.max_response;
    let mut answer = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    loop {
        stream.set_read_timeout(Some(remaining()?))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if answer.len() + n > limit => {
                answer.extend_from_slice(&buf[..limit - answer.len()]);
                return Err(ProbeError::TooLarge {
                    limit,
                    partial: answer,
                });
            }
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(timeout_or(timeout)(e)),
        }
    }
    parse_response(&answer)
}

fn timeout_or(timeout: Duration) -> impl Fn(io::Error) -> ProbeError {
    move |e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ProbeError::Timeout(timeout),
        _ => ProbeError::Io(e),
    }
}

/// Parses `HTTP/1.x CODE REASON\r\n...headers...\r\n\r\nBODY`.
///
/// # Errors
/// Anything that does not start with an HTTP status line.
pub fn parse_response(raw: &[u8]) -> Result<ProbeResponse, ProbeError> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .or_else(|| text.split_once("\n\n"))
        .unwrap_or((&text, ""));
    let status_line = head.lines().next().unwrap_or_default();
    let bad = || ProbeError::BadResponse(status_line.chars().take(80).collect());
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/") {
        return Err(bad());
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (100..1000).contains(s))
        .ok_or_else(bad)?;
    let reason = parts.next().unwrap_or_default().trim().to_string();
    Ok(ProbeResponse {
        status,
        reason,
        body: body.to_string(),
    })
}

/// The `probe` subcommand: prints the outcome (stdout on success, stderr otherwise) and
/// returns the exit code (0 on 2xx, 1 otherwise, 2 for a bad URL).
pub fn run(url: &str, timeout: Duration) -> ExitCode {
    let parsed = match ProbeUrl::parse(url) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("rolegate probe: {e}");
            return ExitCode::from(2);
        }
    };
    match probe(&parsed, timeout) {
        Ok(response) if response.is_success() => {
            println!("{url}: {}", response.summary());
            ExitCode::SUCCESS
        }
        Ok(response) => {
            eprintln!("rolegate probe: {url}: {}", response.summary());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("rolegate probe: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn parses_urls() {
        let u = ProbeUrl::parse("http://127.0.0.1:9813/readyz").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 9813, "/readyz")
        );
        let u = ProbeUrl::parse("http://localhost").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        let u = ProbeUrl::parse("http://[::1]:9813/readyz?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.authority.as_str(), u.path.as_str()),
            ("::1", "[::1]:9813", "/readyz?x=1")
        );
        let u = ProbeUrl::parse("http://h:1?x").unwrap();
        assert_eq!(u.path, "/?x");
        for bad in [
            "https://127.0.0.1/readyz",
            "127.0.0.1:9813/readyz",
            "http://:9813/",
            "http://h:0/",
            "http://h:99999/",
            "http://h:x/",
            "http://u@h/",
            "http://[::1/",
            "http://h/a b",
        ] {
            assert!(ProbeUrl::parse(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn parses_answers() {
        let r = parse_response(b"HTTP/1.0 503 Service Unavailable\r\ncontent-type: text/plain\r\n\r\npg-rw: no_primary\nredis-rw: no_primary\n").unwrap();
        assert_eq!(r.status, 503);
        assert!(!r.is_success());
        assert_eq!(
            r.summary(),
            "503 Service Unavailable: pg-rw: no_primary; redis-rw: no_primary"
        );
        let r = parse_response(b"HTTP/1.1 200 OK\r\n\r\nready\n").unwrap();
        assert!(r.is_success());
        assert_eq!(r.summary(), "200 OK: ready");
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(parse_response(b"").is_err());
        assert!(parse_response(b"HTTP/1.1 abc\r\n\r\n").is_err());
    }

    /// Serves one canned answer on a loopback port; returns the port and what was asked.
    fn serve_once(answer: &'static [u8]) -> (u16, std::thread::JoinHandle<String>) {
        let (addr, handle) = crate::ops::test_http::serve_once(answer);
        (addr.port(), handle)
    }

    #[test]
    fn gets_over_http_1_0() {
        let (port, server) = serve_once(b"HTTP/1.0 200 OK\r\n\r\nready\n");
        let url = ProbeUrl::parse(&format!("http://127.0.0.1:{port}/readyz")).unwrap();
        let r = probe(&url, Duration::from_secs(5)).unwrap();
        assert_eq!(r.status, 200);
        let request = server.join().unwrap();
        assert!(
            request.starts_with("GET /readyz HTTP/1.0\r\n"),
            "{request:?}"
        );
        assert!(request.contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")));
    }

    #[test]
    fn a_silent_server_times_out_within_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = ProbeUrl::parse(&format!(
            "http://127.0.0.1:{}/readyz",
            listener.local_addr().unwrap().port()
        ))
        .unwrap();
        let started = Instant::now();
        let err = probe(&url, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, ProbeError::Timeout(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3));
        drop(listener);
    }

    #[test]
    fn a_closed_port_is_a_connect_error() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = ProbeUrl::parse(&format!("http://127.0.0.1:{port}/readyz")).unwrap();
        let err = probe(&url, Duration::from_secs(2)).unwrap_err();
        assert!(matches!(err, ProbeError::Connect { .. }), "{err}");
    }
}
