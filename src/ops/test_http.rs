//! A one-shot HTTP peer on loopback for the unit tests of the tools that speak HTTP to the
//! admin API (the admin client, the health probe).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::thread::JoinHandle;

/// Answers one request with `answer`; returns the address it listens on and the handle that
/// yields the request head it got.
pub(crate) fn serve_once(answer: &'static [u8]) -> (SocketAddr, JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.ends_with(b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            req.extend_from_slice(&buf[..n]);
        }
        s.write_all(answer).unwrap();
        String::from_utf8(req).unwrap()
    });
    (addr, handle)
}
