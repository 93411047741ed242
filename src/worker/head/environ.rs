//! Turns a parsed HTTP request head into a WSGI worker's request head:
//! environ keys and values (PEP 3333), as latin-1 `KEY\0VALUE\0...` bytes.

use std::borrow::Cow;

use http::request::Parts;
use http::{HeaderName, Version};
use percent_encoding::percent_decode;

use super::{ConnInfo, RawTarget};

#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// The decoded path holds a NUL byte.
    NulInPath,
}

struct Head(Vec<u8>);

impl Head {
    fn pair(&mut self, key: &[u8], value: &[u8]) {
        let out = self.next_key();
        out.extend_from_slice(key);
        out.push(0);
        out.extend_from_slice(value);
    }

    /// The buffer, where the next pair's key goes (then a NUL, its value).
    fn next_key(&mut self) -> &mut Vec<u8> {
        if !self.0.is_empty() {
            self.0.push(0);
        }
        &mut self.0
    }
}

/// Builds the environ part of a REQUEST frame.
pub fn encode(parts: &Parts, conn: &ConnInfo) -> Result<Vec<u8>, HeadError> {
    let mut h = Head(Vec::with_capacity(512));
    h.pair(b"REQUEST_METHOD", parts.method.as_str().as_bytes());
    let path = parts.uri.path();
    // Borrowed from the path when it has no escapes: no copy.
    let decoded: Cow<[u8]> = percent_decode(path.as_bytes()).into();
    if decoded.contains(&0) {
        return Err(HeadError::NulInPath);
    }
    h.pair(b"PATH_INFO", &decoded);
    // The target as the client sent it, when corral had to encode it for
    // hyper or it has a fragment hyper drops (see `target`); the decoded
    // path is the same either way.
    let raw = parts.extensions.get::<RawTarget>();
    let query = raw.map_or(parts.uri.query().unwrap_or("").as_bytes(), |r| r.query());
    h.pair(b"QUERY_STRING", query);
    // An HTTP/1 absolute-form target (`GET http://host/path`) as sent, as
    // gunicorn gives it; HTTP/2's scheme and authority are pseudo-headers,
    // not the target.
    let absolute = (parts.version <= Version::HTTP_11 && parts.uri.scheme().is_some())
        .then(|| parts.uri.to_string());
    let raw_uri = match (raw, &absolute) {
        (Some(r), _) => &r.0[..],
        (None, Some(target)) => target.as_bytes(),
        (None, None) => parts
            .uri
            .path_and_query()
            .map_or(path, |p| p.as_str())
            .as_bytes(),
    };
    h.pair(b"RAW_URI", raw_uri);
    h.pair(b"REQUEST_URI", raw_uri);
    let proto: &[u8] = match parts.version {
        Version::HTTP_2 => b"HTTP/2",
        Version::HTTP_10 => b"HTTP/1.0",
        Version::HTTP_09 => b"HTTP/0.9",
        _ => b"HTTP/1.1",
    };
    h.pair(b"SERVER_PROTOCOL", proto);
    let (name, port) = server_name_port(parts, conn);
    h.pair(b"SERVER_NAME", name.as_bytes());
    h.pair(b"SERVER_PORT", port.as_bytes());
    h.pair(b"REMOTE_ADDR", conn.remote_addr.as_bytes());
    // A Unix socket's peer has no port: no REMOTE_PORT, as under gunicorn
    // (an app's `int(environ["REMOTE_PORT"])` would fail on "").
    if !conn.remote_port.is_empty() {
        h.pair(b"REMOTE_PORT", conn.remote_port.as_bytes());
    }
    h.pair(b"wsgi.url_scheme", conn.scheme.as_bytes());
    if let Some(proxy) = &conn.proxy {
        // gunicorn's names for what the PROXY header said.
        h.pair(b"PROXY_PROTOCOL", proxy.protocol.as_bytes());
        h.pair(b"PROXY_ADDR", proxy.addr.as_bytes());
        h.pair(b"PROXY_PORT", proxy.port.as_bytes());
    }
    if conn.scheme == "https" {
        h.pair(b"HTTPS", b"on");
    }
    if let Some(tls) = &conn.tls {
        // As Apache's mod_ssl names them.
        h.pair(b"SSL_PROTOCOL", tls.version_name().as_bytes());
        if let Some(subject) = &tls.client_subject {
            h.pair(b"SSL_CLIENT_S_DN", subject.as_bytes());
        }
        if let Some(leaf) = tls.client_chain.first() {
            h.pair(b"SSL_CLIENT_CERT", leaf.as_bytes());
        }
    }

    for name in parts.headers.keys() {
        let n = name.as_str();
        // Like gunicorn: a header with "_" would alias one with "-" in the
        // environ (X_Forwarded vs X-Forwarded), so it is dropped.
        if n.contains('_') {
            continue;
        }
        // Key and value are written in place: no buffer of their own.
        let out = h.next_key();
        if name == http::header::CONTENT_TYPE {
            out.extend_from_slice(b"CONTENT_TYPE");
        } else if name == http::header::CONTENT_LENGTH {
            out.extend_from_slice(b"CONTENT_LENGTH");
        } else {
            out.extend_from_slice(b"HTTP_");
            out.extend(n.bytes().map(|b| {
                if b == b'-' {
                    b'_'
                } else {
                    b.to_ascii_uppercase()
                }
            }));
        }
        out.push(0);
        // Repeated fields join with ", " (RFC 9110 section 5.3), but
        // cookies with "; ": HTTP/2 clients send each cookie as a field of
        // its own (RFC 9113 section 8.2.3), and "a=1, b=2" is no cookie
        // header to Werkzeug or Django.
        let sep: &[u8] = if name == http::header::COOKIE {
            b"; "
        } else {
            b", "
        };
        for (i, v) in parts.headers.get_all(name).iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(sep);
            }
            out.extend_from_slice(v.as_bytes());
        }
    }
    Ok(h.0)
}

fn server_name_port<'a>(parts: &'a Parts, conn: &'a ConnInfo) -> (&'a str, &'a str) {
    let host = parts
        .headers
        .get(HeaderName::from_static("host"))
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()));
    if let Some(host) = host.filter(|h| !h.is_empty()) {
        // "[::1]:8000", "example.com:8000", "example.com"
        let (name, port) = match host.rfind(':') {
            Some(i) if !host[i..].contains(']') => (&host[..i], &host[i + 1..]),
            _ => (host, ""),
        };
        let port = if port.is_empty() {
            if conn.scheme == "https" { "443" } else { "80" }
        } else {
            port
        };
        return (name, port);
    }
    (&conn.server_name, &conn.server_port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::head::tests::conn;

    fn environ(req: http::Request<()>) -> Vec<(String, String)> {
        let (parts, ()) = req.into_parts();
        let head = encode(&parts, &conn()).unwrap();
        let text: String = head.iter().map(|&b| b as char).collect();
        let items: Vec<&str> = text.split('\0').collect();
        items
            .chunks(2)
            .map(|c| (c[0].to_string(), c[1].to_string()))
            .collect()
    }

    fn get<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
        env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    #[test]
    fn path_is_decoded_query_is_raw_and_repeated_headers_join() {
        let req = http::Request::builder()
            .uri("/caf%C3%A9/a%20b?x=%20y&z")
            .header("Host", "example.com:9000")
            .header("X-Thing", "1")
            .header("X-Thing", "2")
            .header("Cookie", "a=1")
            .header("Cookie", "b=2")
            .header("X_Spoof", "no")
            .header("Content-Type", "text/plain")
            .body(())
            .unwrap();
        let env = environ(req);
        // PEP 3333: the path's bytes, decoded as latin-1.
        assert_eq!(get(&env, "PATH_INFO"), Some("/caf\u{c3}\u{a9}/a b"));
        assert_eq!(get(&env, "QUERY_STRING"), Some("x=%20y&z"));
        assert_eq!(get(&env, "HTTP_X_THING"), Some("1, 2"));
        // An HTTP/2 client's cookies, one field each (RFC 9113 8.2.3).
        assert_eq!(get(&env, "HTTP_COOKIE"), Some("a=1; b=2"));
        assert_eq!(get(&env, "HTTP_X_SPOOF"), None);
        assert_eq!(get(&env, "CONTENT_TYPE"), Some("text/plain"));
        assert_eq!(get(&env, "SERVER_NAME"), Some("example.com"));
        assert_eq!(get(&env, "SERVER_PORT"), Some("9000"));
        assert_eq!(get(&env, "REMOTE_ADDR"), Some("127.0.0.1"));
    }

    #[test]
    fn nul_in_decoded_path_is_refused() {
        let (parts, ()) = http::Request::builder()
            .uri("/a%00b")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(encode(&parts, &conn()), Err(HeadError::NulInPath));
    }
}
