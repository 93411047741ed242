//! Turns a parsed HTTP request head into an ASGI worker's request head: the
//! fields of the ASGI `http` / `websocket` scope the worker cannot know,
//! NUL-separated in a fixed order, then the headers.
//!
//! `METHOD\0SCHEME\0RAW_PATH\0QUERY\0HTTP_VERSION\0CLIENT_HOST\0CLIENT_PORT\0
//! SERVER_HOST\0SERVER_PORT\0TLS_VERSION\0CIPHER_SUITE\0CLIENT_CERT_NAME\0
//! CLIENT_CERT_CHAIN` then `name\0value` per header. The four TLS fields
//! (for the ASGI TLS extension) are empty on a plain connection; the
//! version and suite are decimal numbers, the chain is PEM, leaf first. Header names are
//! lower case (hyper's), in the order the request sent them, except that
//! repeated headers come together at the first one's place and `cookie`
//! fields are one, joined with "; ". The worker
//! decodes the path (percent-decoding, UTF-8) and builds the scope. NUL
//! cannot occur in any part: hyper refuses it in the request line and in
//! headers, the relaxed target bytes (see `target`) are printable or above
//! 0x7F, and the client and server addresses are corral's own text.

use http::Version;
use http::request::Parts;

use super::{ConnInfo, RawTarget};

/// Builds the scope part of a REQUEST frame for an ASGI worker.
pub fn encode(parts: &Parts, conn: &ConnInfo) -> Vec<u8> {
    let mut h = Vec::with_capacity(256 + 48 * parts.headers.len());
    let version: &[u8] = match parts.version {
        Version::HTTP_2 => b"2",
        Version::HTTP_10 => b"1.0",
        Version::HTTP_09 => b"0.9",
        _ => b"1.1",
    };
    // The path and query as the client sent them, when corral had to
    // encode them for hyper (see `target`).
    let raw = parts.extensions.get::<RawTarget>();
    let tls = conn.tls.as_deref();
    let number = |n: Option<u16>| n.map(|n| n.to_string()).unwrap_or_default();
    let version_number = number(tls.map(|t| t.version));
    let suite = number(tls.map(|t| t.cipher_suite));
    let chain = tls.map(|t| t.client_chain.concat()).unwrap_or_default();
    for field in [
        parts.method.as_str().as_bytes(),
        conn.scheme.as_bytes(),
        raw.map_or(parts.uri.path().as_bytes(), |r| r.path()),
        raw.map_or(parts.uri.query().unwrap_or("").as_bytes(), |r| r.query()),
        version,
        conn.remote_addr.as_bytes(),
        conn.remote_port.as_bytes(),
        conn.server_name.as_bytes(),
        conn.server_port.as_bytes(),
        version_number.as_bytes(),
        suite.as_bytes(),
        tls.and_then(|t| t.client_subject.as_deref())
            .unwrap_or("")
            .as_bytes(),
        chain.as_bytes(),
    ] {
        h.extend_from_slice(field);
        h.push(0);
    }
    let mut cookies_done = false;
    for (name, value) in &parts.headers {
        // One `cookie` header, joined with "; " (RFC 9113 section 8.2.3):
        // an HTTP/2 client may send each cookie as a field of its own, and
        // Starlette reads the first `cookie` only.
        let cookie = name == http::header::COOKIE;
        if cookie && std::mem::replace(&mut cookies_done, true) {
            continue;
        }
        h.extend_from_slice(name.as_str().as_bytes());
        h.push(0);
        if cookie {
            for (i, v) in parts.headers.get_all(name).iter().enumerate() {
                if i > 0 {
                    h.extend_from_slice(b"; ");
                }
                h.extend_from_slice(v.as_bytes());
            }
        } else {
            h.extend_from_slice(value.as_bytes());
        }
        h.push(0);
    }
    h.pop();
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_then_lower_case_headers_in_order() {
        let (parts, ()) = http::Request::builder()
            .uri("/caf%C3%A9?a=1")
            .header("Host", "example.com")
            .header("X-B", "2")
            .header("x-b", "3")
            .body(())
            .unwrap()
            .into_parts();
        let head = encode(&parts, &crate::worker::head::tests::conn());
        let fields: Vec<&[u8]> = head.split(|&b| b == 0).collect();
        assert_eq!(
            fields,
            [
                &b"GET"[..],
                b"http",
                b"/caf%C3%A9",
                b"a=1",
                b"1.1",
                b"127.0.0.1",
                b"5555",
                b"127.0.0.1",
                b"8000",
                b"",
                b"",
                b"",
                b"",
                b"host",
                b"example.com",
                b"x-b",
                b"2",
                b"x-b",
                b"3"
            ]
        );
    }
}
