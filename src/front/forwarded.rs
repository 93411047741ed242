//! Where a request comes from when a trusted proxy says so: the client in
//! `X-Forwarded-For` and the scheme in `X-Forwarded-Proto` (or, as in
//! gunicorn's default `secure_scheme_headers`, `X-Forwarded-Ssl: on` and
//! `X-Forwarded-Protocol: ssl`), believed only from the peers `[server]
//! forwarded_allow_ips` names (Unix sockets always).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use http::header::GetAll;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::ForwardedAllow;
use crate::worker::head::ConnInfo;

/// What a trusted proxy reports: `conn` with the client from
/// `X-Forwarded-For` (see [`forwarded_client`]) and the scheme (see
/// [`forwarded_scheme`]). None when the peer is not trusted or reports
/// neither.
pub fn forwarded(headers: &HeaderMap, conn: &ConnInfo, allow: &ForwardedAllow) -> Option<ConnInfo> {
    if !conn.trusted {
        return None;
    }
    let scheme = forwarded_scheme(headers);
    let chain = headers.get_all(HeaderName::from_static("x-forwarded-for"));
    if scheme.is_none() && chain.iter().next().is_none() {
        return None;
    }
    let mut out = conn.clone();
    if let Some(Some(scheme)) = scheme {
        out.scheme = scheme;
    }
    if let Some((ip, port)) = forwarded_client(chain, allow) {
        out.remote_addr = ip.to_string();
        out.remote_port = port.unwrap_or(0).to_string();
    }
    Some(out)
}

/// The scheme a trusted proxy reports: `X-Forwarded-Proto` (its last
/// value, of its last line: the nearest proxy's, whether it appends a
/// value or a line of its own; `https` or `wss`, `http` or `ws`, in any
/// case), else gunicorn's
/// other two default `secure_scheme_headers`, `X-Forwarded-Ssl` (`on`:
/// https, anything else: http) and `X-Forwarded-Protocol` (`ssl`: https).
/// None when none is sent; Some(None) when the one sent names no scheme
/// corral knows (the connection's stands).
fn forwarded_scheme(headers: &HeaderMap) -> Option<Option<&'static str>> {
    // The last line: a proxy that adds a line of its own (HAProxy's
    // `add-header`) adds it after the client's.
    let value = |name: &'static str| {
        headers
            .get_all(HeaderName::from_static(name))
            .iter()
            .next_back()
            .map(|v| v.to_str().unwrap_or("").trim())
    };
    if let Some(proto) = value("x-forwarded-proto") {
        return Some(match proto.rsplit(',').next().unwrap_or("").trim() {
            p if p.eq_ignore_ascii_case("https") || p.eq_ignore_ascii_case("wss") => Some("https"),
            p if p.eq_ignore_ascii_case("http") || p.eq_ignore_ascii_case("ws") => Some("http"),
            _ => None,
        });
    }
    for (name, secure) in [("x-forwarded-ssl", "on"), ("x-forwarded-protocol", "ssl")] {
        if let Some(v) = value(name) {
            return Some(Some(if v.eq_ignore_ascii_case(secure) {
                "https"
            } else {
                "http"
            }));
        }
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::head::tests::conn;

    #[test]
    fn gunicorns_other_secure_scheme_headers_set_the_scheme_and_proto_wins() {
        let scheme = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, v.parse().unwrap());
            }
            forwarded_scheme(&h)
        };
        assert_eq!(scheme(&[]), None);
        assert_eq!(scheme(&[("x-forwarded-ssl", "on")]), Some(Some("https")));
        assert_eq!(scheme(&[("x-forwarded-ssl", "ON")]), Some(Some("https")));
        assert_eq!(scheme(&[("x-forwarded-ssl", "off")]), Some(Some("http")));
        assert_eq!(
            scheme(&[("x-forwarded-protocol", "ssl")]),
            Some(Some("https"))
        );
        assert_eq!(
            scheme(&[("x-forwarded-protocol", "tcp")]),
            Some(Some("http"))
        );
        assert_eq!(
            scheme(&[("x-forwarded-proto", "http"), ("x-forwarded-ssl", "on")]),
            Some(Some("http"))
        );
        assert_eq!(scheme(&[("x-forwarded-proto", "gopher")]), Some(None));
        // Two lines: the last is the nearest proxy's, as the last value of
        // one line is. Before, the first line (the client's) won.
        assert_eq!(
            scheme(&[
                ("x-forwarded-proto", "https"),
                ("x-forwarded-proto", "http")
            ]),
            Some(Some("http"))
        );
        assert_eq!(
            scheme(&[
                ("x-forwarded-proto", "http"),
                ("x-forwarded-proto", "https")
            ]),
            Some(Some("https"))
        );
        assert_eq!(
            scheme(&[("x-forwarded-ssl", "on"), ("x-forwarded-ssl", "off")]),
            Some(Some("http"))
        );
        // Not from a trusted peer: nothing.
        let h = {
            let mut h = HeaderMap::new();
            h.append("x-forwarded-ssl", "on".parse().unwrap());
            h
        };
        assert!(forwarded(&h, &conn(), &ForwardedAllow::Any).is_none());
        let trusted = ConnInfo {
            trusted: true,
            ..conn()
        };
        let f = forwarded(&h, &trusted, &ForwardedAllow::Any).unwrap();
        assert_eq!((f.scheme, f.remote_addr.as_str()), ("https", "127.0.0.1"));
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
}
