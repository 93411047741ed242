//! Turns a parsed HTTP request head into the worker's request head: WSGI
//! environ keys and values (PEP 3333), as latin-1 `KEY\0VALUE\0...` bytes.
//! Also where a connection comes from ([`ConnInfo`]), as a trusted proxy
//! reports it ([`forwarded`]).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use http::header::GetAll;
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Version};

use super::target::RawTarget;
use crate::config::ForwardedAllow;
use percent_encoding::percent_decode;

/// Where the connection came from and where it arrived.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Peer address and port ("" for Unix sockets).
    pub remote_addr: String,
    pub remote_port: String,
    /// Listening address and port, used when the request has no Host.
    pub server_name: String,
    pub server_port: String,
    pub scheme: &'static str,
    /// The peer may report the client and scheme (`[server]
    /// forwarded_allow_ips`; Unix sockets always may).
    pub trusted: bool,
}

/// What a trusted proxy reports: `conn` with the client from
/// `X-Forwarded-For` (see [`forwarded_client`]) and the scheme from
/// `X-Forwarded-Proto`. None when the peer is not trusted or reports
/// neither.
pub fn forwarded(headers: &HeaderMap, conn: &ConnInfo, allow: &ForwardedAllow) -> Option<ConnInfo> {
    if !conn.trusted {
        return None;
    }
    let proto = headers.get(HeaderName::from_static("x-forwarded-proto"));
    let chain = headers.get_all(HeaderName::from_static("x-forwarded-for"));
    if proto.is_none() && chain.iter().next().is_none() {
        return None;
    }
    let mut out = conn.clone();
    if let Some(proto) = proto.and_then(|v| v.to_str().ok()) {
        match proto.rsplit(',').next().unwrap_or("").trim() {
            p if p.eq_ignore_ascii_case("https") || p.eq_ignore_ascii_case("wss") => {
                out.scheme = "https"
            }
            p if p.eq_ignore_ascii_case("http") || p.eq_ignore_ascii_case("ws") => {
                out.scheme = "http"
            }
            _ => {}
        }
    }
    if let Some((ip, port)) = forwarded_client(chain, allow) {
        out.remote_addr = ip.to_string();
        out.remote_port = port.unwrap_or(0).to_string();
    }
    Some(out)
}

/// The client in `X-Forwarded-For`: walking the hops from the right (the
/// nearest proxy first), the first that is not itself a trusted proxy, as
/// uvicorn does; the leftmost when all are trusted. Only IP addresses count
/// (`203.0.113.7`, `2001:db8::1`, with a port: `203.0.113.7:5000`,
/// `[2001:db8::1]:5000`): at a hop that is anything else the walk stops,
/// and the client is the hop before it (or nobody), since what lies beyond
/// was written by whoever wrote the garbage.
fn forwarded_client(
    chain: GetAll<'_, HeaderValue>,
    allow: &ForwardedAllow,
) -> Option<(IpAddr, Option<u16>)> {
    let mut nearest = None;
    for value in chain.iter().rev() {
        let Ok(value) = value.to_str() else {
            return nearest;
        };
        for hop in value.rsplit(',').map(str::trim).filter(|h| !h.is_empty()) {
            let Some((ip, port)) = ip_hop(hop) else {
                return nearest;
            };
            nearest = Some((ip, port));
            if !allow.allows(ip) {
                return nearest;
            }
        }
    }
    nearest
}

/// An IP address, maybe with a port (`[v6]:port` for IPv6).
fn ip_hop(hop: &str) -> Option<(IpAddr, Option<u16>)> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some((ip, None));
    }
    if let Ok(addr) = hop.parse::<SocketAddr>() {
        return Some((addr.ip(), Some(addr.port())));
    }
    let v6 = hop.strip_prefix('[')?.strip_suffix(']')?;
    v6.parse::<Ipv6Addr>().ok().map(|ip| (IpAddr::V6(ip), None))
}

#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// The decoded path holds a NUL byte.
    NulInPath,
}

struct Head(Vec<u8>);

impl Head {
    fn pair(&mut self, key: &[u8], value: &[u8]) {
        if !self.0.is_empty() {
            self.0.push(0);
        }
        self.0.extend_from_slice(key);
        self.0.push(0);
        self.0.extend_from_slice(value);
    }
}

/// Builds the environ part of a REQUEST frame.
pub fn encode(parts: &Parts, conn: &ConnInfo) -> Result<Vec<u8>, HeadError> {
    let mut h = Head(Vec::with_capacity(512));
    h.pair(b"REQUEST_METHOD", parts.method.as_str().as_bytes());
    let path = parts.uri.path();
    let decoded: Vec<u8> = percent_decode(path.as_bytes()).collect();
    if decoded.contains(&0) {
        return Err(HeadError::NulInPath);
    }
    h.pair(b"PATH_INFO", &decoded);
    // The target as the client sent it, when corral had to encode it for
    // hyper (see `target`); the decoded path is the same either way.
    let raw = parts.extensions.get::<RawTarget>();
    let query = raw.map_or(parts.uri.query().unwrap_or("").as_bytes(), |r| r.query());
    h.pair(b"QUERY_STRING", query);
    let raw_uri = match raw {
        Some(r) => r.without_fragment(),
        None => parts
            .uri
            .path_and_query()
            .map_or(path, |p| p.as_str())
            .as_bytes(),
    };
    h.pair(b"RAW_URI", raw_uri);
    h.pair(b"REQUEST_URI", raw_uri);
    let proto: &[u8] = match parts.version {
        Version::HTTP_10 => b"HTTP/1.0",
        Version::HTTP_09 => b"HTTP/0.9",
        _ => b"HTTP/1.1",
    };
    h.pair(b"SERVER_PROTOCOL", proto);
    let (name, port) = server_name_port(parts, conn);
    h.pair(b"SERVER_NAME", name.as_bytes());
    h.pair(b"SERVER_PORT", port.as_bytes());
    h.pair(b"REMOTE_ADDR", conn.remote_addr.as_bytes());
    h.pair(b"REMOTE_PORT", conn.remote_port.as_bytes());
    h.pair(b"wsgi.url_scheme", conn.scheme.as_bytes());

    let mut key = Vec::with_capacity(64);
    for name in parts.headers.keys() {
        let n = name.as_str();
        // Like gunicorn: a header with "_" would alias one with "-" in the
        // environ (X_Forwarded vs X-Forwarded), so it is dropped.
        if n.contains('_') {
            continue;
        }
        key.clear();
        if name == http::header::CONTENT_TYPE {
            key.extend_from_slice(b"CONTENT_TYPE");
        } else if name == http::header::CONTENT_LENGTH {
            key.extend_from_slice(b"CONTENT_LENGTH");
        } else {
            key.extend_from_slice(b"HTTP_");
            key.extend(n.bytes().map(|b| {
                if b == b'-' {
                    b'_'
                } else {
                    b.to_ascii_uppercase()
                }
            }));
        }
        let mut values = parts.headers.get_all(name).iter();
        let first = values.next().map(|v| v.as_bytes()).unwrap_or_default();
        match values.next() {
            None => h.pair(&key, first),
            Some(second) => {
                let mut joined = first.to_vec();
                for v in std::iter::once(second).chain(values) {
                    joined.extend_from_slice(b", ");
                    joined.extend_from_slice(v.as_bytes());
                }
                h.pair(&key, &joined);
            }
        }
    }
    Ok(h.0)
}

fn server_name_port(parts: &Parts, conn: &ConnInfo) -> (String, String) {
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
        return (name.to_string(), port.to_string());
    }
    (conn.server_name.clone(), conn.server_port.clone())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A connection from 127.0.0.1:5555 to 127.0.0.1:8000.
    pub(in crate::front) fn conn() -> ConnInfo {
        ConnInfo {
            remote_addr: "127.0.0.1".into(),
            remote_port: "5555".into(),
            server_name: "127.0.0.1".into(),
            server_port: "8000".into(),
            scheme: "http",
            trusted: false,
        }
    }

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
            .header("X_Spoof", "no")
            .header("Content-Type", "text/plain")
            .body(())
            .unwrap();
        let env = environ(req);
        // PEP 3333: the path's bytes, decoded as latin-1.
        assert_eq!(get(&env, "PATH_INFO"), Some("/caf\u{c3}\u{a9}/a b"));
        assert_eq!(get(&env, "QUERY_STRING"), Some("x=%20y&z"));
        assert_eq!(get(&env, "HTTP_X_THING"), Some("1, 2"));
        assert_eq!(get(&env, "HTTP_X_SPOOF"), None);
        assert_eq!(get(&env, "CONTENT_TYPE"), Some("text/plain"));
        assert_eq!(get(&env, "SERVER_NAME"), Some("example.com"));
        assert_eq!(get(&env, "SERVER_PORT"), Some("9000"));
        assert_eq!(get(&env, "REMOTE_ADDR"), Some("127.0.0.1"));
    }

    #[test]
    fn a_trusted_proxy_reports_the_client_and_scheme() {
        let allow = ForwardedAllow::Networks(vec!["127.0.0.1/32".parse().unwrap()]);
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, v.parse().unwrap());
            }
            h
        };
        let trusted = ConnInfo {
            trusted: true,
            ..conn()
        };
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.7, 10.1.1.1"),
            ("x-forwarded-for", "127.0.0.1"),
            ("x-forwarded-proto", "https"),
        ]);
        let f = forwarded(&h, &trusted, &allow).unwrap();
        // 127.0.0.1 is a trusted proxy; 10.1.1.1 is not, so it is the client
        // as far as anyone trusted can tell.
        assert_eq!((f.remote_addr.as_str(), f.scheme), ("10.1.1.1", "https"));
        let all = ForwardedAllow::Any;
        assert_eq!(
            forwarded(&h, &trusted, &all).unwrap().remote_addr,
            "203.0.113.7"
        );
        // An untrusted peer's headers change nothing; no headers, nothing.
        assert!(forwarded(&h, &conn(), &allow).is_none());
        assert!(forwarded(&HeaderMap::new(), &trusted, &allow).is_none());
        let h = headers(&[("x-forwarded-proto", "gopher")]);
        let f = forwarded(&h, &trusted, &allow).unwrap();
        assert_eq!((f.remote_addr.as_str(), f.scheme), ("127.0.0.1", "http"));
    }

    #[test]
    fn only_ip_addresses_count_as_forwarded_clients() {
        let allow = ForwardedAllow::Networks(vec!["127.0.0.1/32".parse().unwrap()]);
        let trusted = ConnInfo {
            trusted: true,
            ..conn()
        };
        let client = |xff: &'static str| {
            let mut h = HeaderMap::new();
            h.append("x-forwarded-for", xff.parse().unwrap());
            let f = forwarded(&h, &trusted, &allow).unwrap();
            (f.remote_addr, f.remote_port)
        };
        let got = |ip: &str, port: &str| (ip.to_string(), port.to_string());
        assert_eq!(client("203.0.113.7"), got("203.0.113.7", "0"));
        assert_eq!(client("203.0.113.7:5000"), got("203.0.113.7", "5000"));
        assert_eq!(client("[2001:db8::1]:443"), got("2001:db8::1", "443"));
        assert_eq!(client("[2001:db8::1]"), got("2001:db8::1", "0"));
        assert_eq!(client("2001:DB8:0::1"), got("2001:db8::1", "0"));
        // Not an address: the connection's own peer stays the client.
        for junk in [
            "\"><script>",
            "unknown",
            "evil.example",
            "1.2.3.4 - - [01/Jan/1970] \"GET /admin\"",
            "203.0.113.7:99999",
            "[203.0.113.7]",
        ] {
            let mut h = HeaderMap::new();
            h.append("x-forwarded-for", junk.parse().unwrap());
            let f = forwarded(&h, &trusted, &allow).unwrap();
            assert_eq!(f.remote_addr, "127.0.0.1", "{junk}");
        }
        // The walk stops at garbage: nothing left of it is believed.
        assert_eq!(
            client("198.51.100.1, junk, 127.0.0.1"),
            got("127.0.0.1", "0")
        );
        assert_eq!(
            client("junk, 198.51.100.1, 127.0.0.1"),
            got("198.51.100.1", "0")
        );
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
