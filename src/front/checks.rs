//! What corral refuses in a request head, beyond what hyper refuses itself,
//! before any worker sees it (RFC 9112): no `Host` on HTTP/1.1, several
//! `Host` lines, a `Host` that is no `host[:port]`, and any
//! `Transfer-Encoding` but exactly `chunked` (hyper takes `gzip, chunked`
//! and repeated lines, which a proxy in front may read differently: the
//! stuff of request smuggling), several `Content-Type` lines (as gunicorn
//! refuses them), and an HTTP/2 field value with white space
//! around it (RFC 9113 calls it malformed; h2 passes it on). An `Expect`
//! other than `100-continue` gets 417 ([`expectation_met`]). Also
//! gunicorn's `limit_request_line` (414) and `limit_request_field_size`
//! (431) ([`over_limits`]); hyper counts an
//! HTTP/1 head's fields itself (`max_headers`, 431), [`over_limits`] an
//! HTTP/2 one's (`limit_request_fields`).

use http::header::{CONTENT_TYPE, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, Version};

/// Why the head must get 400, or `None` when it may go on.
pub fn refuse(version: Version, headers: &HeaderMap) -> Option<&'static str> {
    let mut hosts = headers.get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if version == Version::HTTP_11 => return Some("no Host header"),
        (Some(_), Some(_)) => return Some("more than one Host header"),
        (Some(host), None) if !is_host(host.as_bytes()) => return Some("invalid Host header"),
        _ => {}
    }
    // RFC 9113 section 8.2.1: HTTP/2 carries field values as they are, and
    // one with white space around it is malformed (h2 passes it on; on
    // HTTP/1.1 hyper strips it).
    if version == Version::HTTP_2
        && headers.values().any(|v| {
            let b = v.as_bytes();
            matches!(b.first(), Some(b' ' | b'\t')) || matches!(b.last(), Some(b' ' | b'\t'))
        })
    {
        return Some("white space around an HTTP/2 field value");
    }
    // Content-Type is one value (RFC 9110 section 8.3): two would reach a
    // WSGI app joined ("a/b, c/d"), where a proxy or filter in front may
    // have read the first alone, and an ASGI app as two. gunicorn answers
    // 400.
    if headers.get_all(CONTENT_TYPE).iter().nth(1).is_some() {
        return Some("more than one Content-Type header");
    }
    let mut codings = headers.get_all(TRANSFER_ENCODING).iter();
    match (codings.next(), codings.next()) {
        (None, _) => None,
        (Some(te), None) if te.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked") => None,
        _ => Some("Transfer-Encoding other than chunked"),
    }
}

/// Whether corral can meet the request's `Expect`: none, or exactly
/// `100-continue` (hyper answers it when the body is read). Anything else
/// gets 417, as from gunicorn: hyper would ignore it, and a client that
/// waits for its 100 would wait.
pub fn expectation_met(headers: &HeaderMap) -> bool {
    headers.get_all(http::header::EXPECT).iter().all(|v| {
        v.as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"100-continue")
    })
}

/// The status and reason when the head is over a limit of `limits`. The
/// request line is counted as gunicorn counts it (method, target and
/// version with their two spaces, no CRLF), a field as "Name: value" and
/// its CRLF (gunicorn 27 takes a 58-byte field line under a limit of 60).
pub fn over_limits<B>(
    req: &http::Request<B>,
    limits: &crate::config::HeadLimits,
) -> Option<(http::StatusCode, &'static str)> {
    if let Some(max) = limits.request_line {
        let target = match req.uri().path_and_query() {
            Some(pq) if req.uri().scheme().is_none() => pq.as_str().len(),
            _ => req.uri().to_string().len(),
        };
        if req.method().as_str().len() + 1 + target + 1 + "HTTP/1.1".len() > max {
            return Some((http::StatusCode::URI_TOO_LONG, "request line too long"));
        }
    }
    // hyper counts an HTTP/1 head's fields itself (`max_headers`), not an
    // HTTP/2 one's.
    if req.version() >= http::Version::HTTP_2 && req.headers().len() > limits.fields {
        return Some((
            http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "too many header fields",
        ));
    }
    if let Some(max) = limits.field_bytes {
        let long = req
            .headers()
            .iter()
            .any(|(name, value)| name.as_str().len() + 2 + value.len() + 2 > max);
        if long {
            return Some((
                http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "a header field is too long",
            ));
        }
    }
    None
}

/// Whether a target's authority may stand for `Host`: `uri-host [":"
/// port]`, not empty.
pub fn is_authority(value: &[u8]) -> bool {
    !value.is_empty() && is_host(value)
}

/// `uri-host [":" port]` (RFC 9110 section 7.2), or empty (allowed when
/// the target has no authority). No user info, no path, no white space.
fn is_host(value: &[u8]) -> bool {
    let (host, port) = match value {
        [b'[', rest @ ..] => match rest.iter().position(|&b| b == b']') {
            // An IP literal: hex digits, ':' and '.' (an IPv4 tail).
            Some(end) => {
                let literal = &rest[..end];
                if literal.is_empty()
                    || !literal
                        .iter()
                        .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
                {
                    return false;
                }
                match &rest[end + 1..] {
                    [] => return true,
                    [b':', port @ ..] => (&[][..], port),
                    _ => return false,
                }
            }
            None => return false,
        },
        _ => match value.iter().position(|&b| b == b':') {
            Some(i) => (&value[..i], &value[i + 1..]),
            None => (value, &[][..]),
        },
    };
    // A reg-name or IPv4 address: unreserved, pct-encoded, sub-delims.
    let name_ok = host
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b));
    name_ok && port.iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(version: Version, pairs: &[(&'static str, &'static str)]) -> Option<&'static str> {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        refuse(version, &h)
    }

    #[test]
    fn host_once_on_http_1_1() {
        let v11 = Version::HTTP_11;
        assert_eq!(head(v11, &[("host", "example.com")]), None);
        assert_eq!(head(v11, &[]), Some("no Host header"));
        assert_eq!(head(Version::HTTP_10, &[]), None);
        let two = [("host", "a.example"), ("host", "b.example")];
        assert_eq!(head(v11, &two), Some("more than one Host header"));
        assert_eq!(
            head(Version::HTTP_10, &two),
            Some("more than one Host header")
        );
        for good in [
            "",
            "example.com:8080",
            "127.0.0.1",
            "[::1]",
            "[::1]:80",
            "xn--caf-dma.fr",
        ] {
            assert_eq!(head(v11, &[("host", good)]), None, "{good}");
        }
        for bad in [
            "user@example.com",
            "example.com/path",
            "example.com:80:80",
            "example.com:http",
            "[::1",
            "[]",
            "[::1]x",
            "a b",
            "\"quoted\"",
        ] {
            assert_eq!(
                head(v11, &[("host", bad)]),
                Some("invalid Host header"),
                "{bad}"
            );
        }
    }

    #[test]
    fn content_type_once() {
        let v11 = Version::HTTP_11;
        let host = ("host", "x");
        assert_eq!(head(v11, &[host, ("content-type", "a/b")]), None);
        assert_eq!(
            head(
                v11,
                &[host, ("content-type", "a/b"), ("content-type", "a/b")]
            ),
            Some("more than one Content-Type header")
        );
        assert_eq!(
            head(
                Version::HTTP_2,
                &[("content-type", "a/b"), ("content-type", "c/d")]
            ),
            Some("more than one Content-Type header")
        );
    }

    #[test]
    fn transfer_encoding_exactly_chunked() {
        let v11 = Version::HTTP_11;
        let host = ("host", "x");
        assert_eq!(head(v11, &[host, ("transfer-encoding", "chunked")]), None);
        assert_eq!(head(v11, &[host, ("transfer-encoding", "Chunked ")]), None);
        let refused = Some("Transfer-Encoding other than chunked");
        for te in ["gzip, chunked", "chunked, chunked", "identity", ""] {
            assert_eq!(
                head(v11, &[host, ("transfer-encoding", te)]),
                refused,
                "{te}"
            );
        }
        let twice = [
            host,
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", "chunked"),
        ];
        assert_eq!(head(v11, &twice), refused);
    }
}
