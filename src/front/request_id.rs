//! Each request's id, in `X-Request-ID`: the one a trusted proxy sent (the
//! peers `[server] forwarded_allow_ips` names, as for `X-Forwarded-For`),
//! or a fresh one. The handler puts it in the request the app sees
//! (`HTTP_X_REQUEST_ID`, the ASGI scope's headers), in the response, in the
//! access log and in corral's own log lines about the request. A client
//! that is not a trusted proxy cannot choose it.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderName, HeaderValue};

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest id taken from a proxy (longer ones are replaced).
const MAX_LEN: usize = 128;

/// The request's id: the proxy's when `trusted` and it is one, else a new
/// one. A proxy's id must be 1 to 128 visible ASCII characters, so it
/// needs no escaping in a log line.
pub fn take(headers: &HeaderMap, trusted: bool) -> HeaderValue {
    if trusted
        && let Some(v) = headers.get(&HEADER)
        && (1..=MAX_LEN).contains(&v.len())
        && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
    {
        return v.clone();
    }
    generate()
}

/// A new id: 16 hex digits, unique within this corral (a counter through a
/// bijective mix keyed at start-up), and unlike the previous corral's.
pub fn generate() -> HeaderValue {
    static KEY: LazyLock<u64> = LazyLock::new(|| RandomState::new().hash_one(std::process::id()));
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    HeaderValue::from_bytes(&hex(mix(n ^ *KEY))).expect("hex digits are a header value")
}

/// `v` as 16 lower-case hex digits, written in place (no `String` on the
/// request path).
fn hex(mut v: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    for b in out.iter_mut().rev() {
        *b = b"0123456789abcdef"[(v & 0xf) as usize];
        v >>= 4;
    }
    out
}

/// SplitMix64's finaliser: a bijection on u64, so distinct counts give
/// distinct ids.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trusted_proxys_id_is_kept_anything_else_is_replaced() {
        let mut h = HeaderMap::new();
        h.insert(&HEADER, HeaderValue::from_static("abc-123"));
        assert_eq!(take(&h, true), "abc-123");
        assert_ne!(take(&h, false), "abc-123");
        for bad in [&b""[..], b"a b", b"x\xe9", b"a\tb"] {
            h.insert(&HEADER, HeaderValue::from_bytes(bad).unwrap());
            assert_ne!(take(&h, true).as_bytes(), bad, "{bad:?}");
        }
        h.insert(&HEADER, HeaderValue::from_str(&"a".repeat(129)).unwrap());
        assert_eq!(take(&h, true).len(), 16);
        assert_eq!(take(&HeaderMap::new(), true).len(), 16);
    }

    #[test]
    fn hex_is_sixteen_lower_case_digits() {
        for v in [0, 1, 0xabc, u64::MAX, 0x0123_4567_89ab_cdef, mix(7)] {
            assert_eq!(&hex(v), format!("{v:016x}").as_bytes());
        }
    }

    #[test]
    fn generated_ids_differ() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| generate()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(
            ids.iter()
                .all(|v| v.len() == 16 && v.as_bytes().iter().all(u8::is_ascii_hexdigit))
        );
    }
}
