//! A tiny HTTP/1.1 client for the admin API tests: one request per connection
//! (`Connection: close`), so a response is everything up to EOF. Raw access is kept on purpose:
//! tests send malformed requests that a real client library would refuse to build.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest any admin response may take in a test before it counts as a hang.
const RESPONSE_LIMIT: Duration = Duration::from_secs(20);

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// First value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends `bytes` as they are, then reads until the server closes. Write errors are ignored
/// (the server may answer and close before reading everything).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect to admin");
    let _ = stream.write_all(bytes).await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(RESPONSE_LIMIT, stream.read_to_end(&mut out)).await;
    match read {
        Ok(Ok(_)) => {}
        Ok(Err(e)) if !out.is_empty() => eprintln!("read after response: {e}"),
        Ok(Err(e)) => panic!("admin connection failed: {e}"),
        Err(_) => panic!("admin server did not close within {RESPONSE_LIMIT:?}"),
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a whole HTTP/1.1 response (as read up to EOF).
pub fn parse(text: &str) -> Response {
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Response {
        status,
        headers,
        body: body.to_string(),
    }
}

/// One request with the given extra header lines (`"Name: value"`).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &[u8],
) -> Response {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: rolegate\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    let has_length = headers
        .iter()
        .any(|h| h.to_ascii_lowercase().starts_with("content-length:"));
    if !has_length && (!body.is_empty() || method == "POST") {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    parse(&raw(addr, &bytes).await)
}

pub async fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, &[], b"").await
}

/// An empty `POST`, with `Authorization: Bearer <token>` when a token is given.
pub async fn post(addr: SocketAddr, path: &str, token: Option<&str>) -> Response {
    let auth = token.map(|t| format!("Authorization: Bearer {t}"));
    let headers: Vec<&str> = auth.iter().map(String::as_str).collect();
    request(addr, "POST", path, &headers, b"").await
}
