//! A plain HTTP/1.1 GET over a TCP socket, for tests that read a page's API or `/metrics` with a token.

use std::io::{Read, Write};

/// `GET path` on `addr` with a bearer token: the body of a 200 answer (anything else panics).
pub fn get_ok(addr: &str, path: &str, token: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{addr}{path}: {head}");
    body.to_string()
}
