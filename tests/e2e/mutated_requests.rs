//! Requests from a seeded generator, many of them malformed, against the
//! real binary with real Python workers: every one gets a well-formed
//! status line below 500 or a closed connection (on HTTP/2: a status below
//! 500, a reset stream or a GOAWAY), corral logs no panic, no worker dies,
//! and corral serves on. The generator mixes valid requests
//! with odd methods, targets, versions, headers (forwarded addresses,
//! WebSocket handshakes, framing that conflicts) and bodies, and mutates
//! the bytes of some; the apps read every environ key or scope field and
//! the whole body, so whatever corral lets through reaches the worker's
//! decoding too. The seed is fixed: a failure names the request that
//! caused it, and reruns the same way. For a longer run with other seeds:
//! `CORRAL_TEST_SEED=7 CORRAL_TEST_REQUESTS=20000 cargo test --test e2e
//! mutated_requests`.

use crate::common::h2;
use crate::common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const WSGI_APP: &str = r#"
import os

def app(environ, start_response):
    seen = sum(len(k) + len(str(v)) for k, v in environ.items())
    body = environ["wsgi.input"].read()
    out = b"%d %d %d" % (os.getpid(), seen, len(body))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]
"#;

const ASGI_APP: &str = r#"
import os

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    if scope["type"] == "websocket":
        await send({"type": "websocket.close"})
        return
    seen = sum(len(n) + len(v) for n, v in scope["headers"])
    seen += len(scope["path"]) + len(scope["raw_path"]) + len(scope["query_string"])
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    out = b"%d %d %d" % (os.getpid(), seen, size)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": out})
"#;

/// xorshift64*: a few lines, and the same numbers on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())]
    }
}

const METHODS: &[&[u8]] = &[
    b"GET", b"POST", b"HEAD", b"PUT", b"OPTIONS", b"DELETE", b"PATCH", b"TRACE", b"CONNECT",
    b"get", b"G\0T", b"", b"BREW",
];
/// How many of [`METHODS`] are valid.
const VALID_METHODS: usize = 8;
const TARGETS: &[&[u8]] = &[
    b"/",
    b"/a/b?c=d&e",
    b"/%2e%2e/%00/%ff",
    b"/caf\xc3\xa9",
    b"/\xff\xfe",
    b"/a?b=%zz",
    b"//x",
    b"*",
    b"http://example.com/x?y",
    b"http://[::1]:80/",
    b"example.com:443",
    b"https://h/p?q#f",
    b"/%",
    b"?",
    b"",
];
const VERSIONS: &[&[u8]] = &[
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"HTTP/2.0",
    b"HTTP/0.9",
    b"http/1.1",
    b"",
];
const VALID_VERSIONS: usize = 2;
const HEADERS: &[(&[u8], &[&[u8]])] = &[
    (
        b"Host",
        &[
            b"127.0.0.1",
            b"",
            b"a b",
            b"h:99999",
            b"[::1]",
            b"\xff",
            b"h:0",
        ],
    ),
    (
        b"Content-Length",
        &[
            b"0",
            b"5",
            b"-1",
            b"1e3",
            b"99999999999999999999",
            b"5, 5",
            b"5,6",
            b" 3",
        ],
    ),
    (
        b"Transfer-Encoding",
        &[
            b"chunked",
            b"gzip, chunked",
            b"chunked, gzip",
            b"identity",
            b"xchunked",
        ],
    ),
    (
        b"Connection",
        &[
            b"close",
            b"keep-alive",
            b"Upgrade",
            b"upgrade, keep-alive",
            b"te",
            b"content-length",
        ],
    ),
    (
        b"Upgrade",
        &[b"websocket", b"h2c", b"WebSocket", b"tls/1.0"],
    ),
    (
        b"Sec-WebSocket-Key",
        &[b"dGhlIHNhbXBsZSBub25jZQ==", b"", b"\x01"],
    ),
    (b"Sec-WebSocket-Version", &[b"13", b"8", b"", b"13, 8"]),
    (b"Sec-WebSocket-Protocol", &[b"chat", b"a, b", b"", b"\x7f"]),
    (
        b"X-Forwarded-For",
        &[
            b"1.2.3.4",
            b"1.2.3.4, 5.6.7.8",
            b"::1",
            b"garbage",
            b"[::1]:80",
            b"",
            b"\xff\xff",
        ],
    ),
    (
        b"X-Forwarded-Proto",
        &[b"https", b"ftp", b"", b"https, http"],
    ),
    (
        b"Forwarded",
        &[
            b"for=1.2.3.4;proto=https",
            b"for=\"[::1]:80\"",
            b"for=unknown",
            b"by=x;;;",
            b"for=",
        ],
    ),
    (b"X-Request-ID", &[b"abc", b"", b"\x01", b"\xc3\xa9"]),
    (b"Expect", &[b"100-continue", b"200-ok", b""]),
    (b"Cookie", &[b"a=b", b"a=\xff", b"=", b";;;"]),
    (
        b"Content-Type",
        &[b"text/plain", b"multipart/form-data; boundary=x", b"\xff"],
    ),
    (b"TE", &[b"trailers", b"gzip"]),
    (b"Proxy-Connection", &[b"keep-alive"]),
    (b"Script-Name", &[b"/x"]),
    (b"X-Under_Score", &[b"1"]),
    (b"Content_Length", &[b"4"]),
    (b"Name With Space", &[b"x"]),
    (b"", &[b"empty name"]),
];
const BODIES: &[&[u8]] = &[
    b"",
    b"hello",
    b"5\r\nhello\r\n0\r\n\r\n",
    b"0\r\n\r\n",
    b"5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n",
    b"ff\r\nx\r\n",
    b"-1\r\n\r\n",
    b"fffffffffffffffff\r\n",
    b"\0\0\0\0",
];

/// One request: seven in ten well-formed in their line and line ends, the
/// rest drawn from everything, half of those with bytes changed, cut out
/// or put in.
fn request(rng: &mut Rng) -> Vec<u8> {
    let sane = rng.chance(70);
    let (methods, versions) = if sane {
        (&METHODS[..VALID_METHODS], &VERSIONS[..VALID_VERSIONS])
    } else {
        (METHODS, VERSIONS)
    };
    let mut out = Vec::new();
    let eol: &[u8] = if sane {
        b"\r\n"
    } else {
        rng.pick(
            &[
                &b"\r\n"[..],
                b"\r\n",
                b"\r\n",
                b"\n",
                b"\r",
                b"\r\n ",
                b"\r\r\n",
            ][..],
        )
    };
    out.extend_from_slice(rng.pick(methods));
    out.push(b' ');
    out.extend_from_slice(rng.pick(TARGETS));
    if rng.chance(5) {
        out.extend(std::iter::repeat_n(b'a', 9000));
    }
    out.push(b' ');
    out.extend_from_slice(rng.pick(versions));
    out.extend_from_slice(eol);
    if rng.chance(85) {
        out.extend_from_slice(b"Host: 127.0.0.1");
        out.extend_from_slice(eol);
    }
    for _ in 0..rng.below(8) {
        let (name, values) = rng.pick(HEADERS);
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(rng.pick(values));
        out.extend_from_slice(eol);
    }
    out.extend_from_slice(eol);
    out.extend_from_slice(rng.pick(BODIES));
    if !sane && rng.chance(50) {
        for _ in 0..=rng.below(4) {
            if out.is_empty() {
                break;
            }
            let at = rng.below(out.len());
            match rng.below(3) {
                0 => out[at] = rng.next() as u8,
                1 => {
                    let end = (at + 1 + rng.below(10)).min(out.len());
                    out.drain(at..end);
                }
                _ => {
                    let bytes: Vec<u8> = (0..=rng.below(10)).map(|_| rng.next() as u8).collect();
                    out.splice(at..at, bytes);
                }
            }
        }
    }
    out
}

/// What came back for one request.
#[derive(Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Clone, Copy)]
enum Answer {
    Status(u16),
    /// Closed (or reset) with no byte.
    Closed,
    /// Nothing within the wait: corral waits for more of the request.
    Waiting,
}

/// Sends `raw` in one to three writes and reads the status line; None when
/// the answer is no HTTP/1.x status line.
fn send(addr: &str, raw: &[u8], pieces: usize) -> Option<Answer> {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    for piece in raw.chunks(raw.len().div_ceil(pieces).max(1)) {
        if s.write_all(piece).is_err() {
            // corral answered (and closed) before taking all of it.
            break;
        }
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(2);
    while !got.windows(2).any(|w| w == b"\r\n") && Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if got.is_empty() {
                    return Some(Answer::Waiting);
                }
                break;
            }
            Err(_) => break,
        }
    }
    if got.is_empty() {
        return Some(Answer::Closed);
    }
    let line = got.split(|&b| b == b'\r').next()?;
    let mut parts = line.splitn(3, |&b| b == b' ');
    let version = parts.next()?;
    let code = parts.next()?;
    if !(version == b"HTTP/1.1" || version == b"HTTP/1.0") || code.len() != 3 {
        return None;
    }
    let status: u16 = std::str::from_utf8(code).ok()?.parse().ok()?;
    (100..600)
        .contains(&status)
        .then_some(Answer::Status(status))
}

/// Sends `count` generated requests from four threads; fails on any
/// malformed answer or 5xx, naming the request.
fn hammer(c: &Corral, seed: u64, count: usize) -> std::collections::BTreeMap<Answer, usize> {
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let addr = c.addr.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(seed.wrapping_mul(31).wrapping_add(t) | 1);
                let mut seen = Vec::new();
                for _ in 0..count / 4 {
                    let raw = request(&mut rng);
                    let pieces = 1 + rng.below(3);
                    let answer = send(&addr, &raw, pieces);
                    match answer {
                        Some(Answer::Status(s)) if s >= 500 => {
                            panic!("{s} for {:?}", String::from_utf8_lossy(&raw))
                        }
                        Some(a) => seen.push(a),
                        None => panic!(
                            "no HTTP/1.x status line for {:?}",
                            String::from_utf8_lossy(&raw)
                        ),
                    }
                }
                seen
            })
        })
        .collect();
    let mut counts = std::collections::BTreeMap::new();
    for t in threads {
        for a in t.join().expect("a client thread failed") {
            *counts.entry(a).or_insert(0) += 1;
        }
    }
    counts
}

/// The seed and the number of requests: fixed, unless the environment
/// asks for others.
fn campaign(seed: u64) -> (u64, usize) {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
    (
        var("CORRAL_TEST_SEED").unwrap_or(seed),
        var("CORRAL_TEST_REQUESTS").map_or(2000, |n: u64| n as usize),
    )
}

/// What every test checks after its load: no panic, no worker replaced
/// (it would have died), and corral still serves.
fn unhurt(c: &Corral, counts: &std::collections::BTreeMap<Answer, usize>) {
    let log = c.log.text();
    assert!(!log.contains("panicked"), "corral panicked:\n{log}");
    assert_eq!(
        c.log.count("booted in"),
        2,
        "a worker was replaced (it died?); answers {counts:?}; log:\n{log}"
    );
    assert_eq!(c.get("/").status, 200, "corral no longer serves");
}

/// The checks both HTTP/1.1 tests share, after the load.
fn survived(c: &Corral, counts: &std::collections::BTreeMap<Answer, usize>, total: usize) {
    // Not all refused: the generator reaches the app (and its decoding).
    let served = counts.get(&Answer::Status(200)).copied().unwrap_or(0);
    assert!(
        served * 10 >= total,
        "only {served} of {total} served: {counts:?}"
    );
    let refused: usize = counts
        .iter()
        .filter(|(a, _)| matches!(a, Answer::Status(400..=499)))
        .map(|(_, n)| n)
        .sum();
    assert!(
        refused * 10 >= total,
        "only {refused} of {total} refused: {counts:?}"
    );
    unhurt(c, counts);
}

#[test]
fn mutated_requests_to_a_wsgi_app_get_a_status_or_a_close_and_hurt_nothing() {
    let app = AppDir::new(&[("fuzzed.py", WSGI_APP)]);
    let c = Corral::start(app.path(), &["fuzzed:app", "-w", "2", "--timeout", "5"], 2);
    let (seed, total) = campaign(1);
    let counts = hammer(&c, seed, total);
    survived(&c, &counts, total);
}

#[test]
fn mutated_requests_to_an_asgi_app_get_a_status_or_a_close_and_hurt_nothing() {
    let app = AppDir::new(&[("fuzzed.py", ASGI_APP)]);
    let c = Corral::start(
        app.path(),
        &[
            "fuzzed:app",
            "-w",
            "2",
            "--timeout",
            "5",
            "--interface",
            "asgi",
        ],
        2,
    );
    let (seed, total) = campaign(2);
    let counts = hammer(&c, seed, total);
    survived(&c, &counts, total);
}

// ------------------------------------------------------------------ HTTP/2

/// An HPACK integer with an `n`-bit prefix (RFC 7541, 5.1).
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A header block of literals without indexing (no Huffman, no table),
/// so any name and value go on the wire as they are.
fn hpack_block(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0);
        hpack_int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name);
        hpack_int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value);
    }
    out
}

const H2_PSEUDO: &[(&[u8], &[&[u8]])] = &[
    (
        b":method",
        &[
            b"GET", b"POST", b"HEAD", b"CONNECT", b"OPTIONS", b"", b"get", b"G T",
        ],
    ),
    (
        b":path",
        &[
            b"/",
            b"*",
            b"",
            b"x",
            b"/\xff",
            b"/a?b",
            b"http://x/y",
            b"/%00",
        ],
    ),
    (b":scheme", &[b"http", b"https", b"ftp", b""]),
    (
        b":authority",
        &[b"127.0.0.1", b"", b"a b", b"h:99999", b"\xff", b"[::1]:80"],
    ),
    (b":protocol", &[b"websocket"]),
    (b":status", &[b"200"]),
    (b":bogus", &[b"x"]),
];
const H2_REGULAR: &[(&[u8], &[&[u8]])] = &[
    (b"host", &[b"127.0.0.1", b"other", b""]),
    (b"content-length", &[b"0", b"5", b"-1", b"x", b"5, 5"]),
    (b"transfer-encoding", &[b"chunked"]),
    (b"connection", &[b"keep-alive", b"close"]),
    (b"te", &[b"trailers", b"gzip"]),
    (b"upgrade", &[b"websocket"]),
    (b"x-forwarded-for", &[b"1.2.3.4", b"junk"]),
    (b"x-request-id", &[b"abc", b"\x01", b""]),
    (b"Upper-Case", &[b"x"]),
    (b"bad name", &[b"x"]),
    (b"", &[b"x"]),
    (b"x-nul", &[b"a\0b"]),
    (b"x-crlf", &[b"a\r\nb: c"]),
    (b"cookie", &[b"a=b", b"c=d"]),
];

/// One HTTP/2 request's frames on stream 1: half with the four
/// pseudo-headers as a client sends them, half with some of them dropped,
/// doubled, moved or odd; then regular headers, some that HTTP/2 forbids.
fn h2_request(rng: &mut Rng) -> Vec<u8> {
    let mut fields: Vec<(&[u8], &[u8])> = vec![
        (b":method", rng.pick(&[&b"GET"[..], b"POST", b"HEAD"][..])),
        (
            b":path",
            rng.pick(&[&b"/"[..], b"/a?b=c", b"/caf%C3%A9"][..]),
        ),
        (b":scheme", b"http"),
        (b":authority", b"127.0.0.1"),
    ];
    if rng.chance(50) {
        for _ in 0..=rng.below(3) {
            let (name, values) = rng.pick(H2_PSEUDO);
            if rng.chance(50) {
                fields.retain(|(n, _)| *n != name);
            }
            let at = rng.below(fields.len() + 1);
            fields.insert(at, (name, rng.pick(values)));
        }
    }
    for _ in 0..rng.below(5) {
        let (name, values) = rng.pick(H2_REGULAR);
        fields.push((name, rng.pick(values)));
    }
    let body: &[u8] = rng.pick(&[&b""[..], b"hello"][..]);
    let mut out = h2::PREFACE.to_vec();
    out.extend(h2::frame(h2::SETTINGS, 0, 0, &[]));
    // END_HEADERS, and END_STREAM when there is no body.
    let flags = if body.is_empty() { 0x5 } else { 0x4 };
    out.extend(h2::frame(h2::HEADERS, flags, 1, &hpack_block(&fields)));
    if !body.is_empty() {
        out.extend(h2::frame(h2::DATA, 0x1, 1, body));
    }
    out
}

/// What came back on stream 1: its status (from hyper's encoding: a static
/// index, or a literal with the `:status` name), or `Closed` for a reset
/// stream, a GOAWAY or a closed connection; an error for a response head
/// whose status cannot be read.
fn h2_send(addr: &str, raw: &[u8]) -> Result<Answer, String> {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    if s.write_all(raw).is_err() {
        return Ok(Answer::Closed);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let h2::Frame {
            kind,
            stream,
            payload,
            ..
        } = match h2::next(&mut s) {
            Ok(f) => f,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(Answer::Waiting);
            }
            Err(_) => return Ok(Answer::Closed),
        };
        match kind {
            h2::GOAWAY | h2::RST_STREAM => return Ok(Answer::Closed),
            h2::HEADERS if stream == 1 => {
                // Static indices 8-14: 200 204 206 304 400 404 500.
                let status = match payload.first() {
                    Some(&b) if (0x88..=0x8e).contains(&b) => {
                        [200, 204, 206, 304, 400, 404, 500][usize::from(b - 0x88)]
                    }
                    // A literal (with or without indexing) named by index 8.
                    Some(&b) if b == 0x48 || b == 0x08 => payload
                        .get(2..2 + usize::from(*payload.get(1).unwrap_or(&0)))
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| format!("an unreadable :status in {payload:?}"))?,
                    _ => {
                        return Err(format!(
                            "a response head without :status first: {payload:?}"
                        ));
                    }
                };
                return Ok(Answer::Status(status));
            }
            _ => {}
        }
    }
    Ok(Answer::Waiting)
}

#[test]
fn mutated_http2_requests_get_a_status_a_reset_or_a_goaway_and_hurt_nothing() {
    let app = AppDir::new(&[("fuzzed.py", WSGI_APP)]);
    let c = Corral::start(app.path(), &["fuzzed:app", "-w", "2", "--timeout", "5"], 2);
    let (seed, total) = campaign(3);
    let mut rng = Rng(seed.wrapping_mul(31) | 1);
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..total / 2 {
        let raw = h2_request(&mut rng);
        let answer = h2_send(&c.addr, &raw).unwrap_or_else(|e| panic!("{e}"));
        if let Answer::Status(s) = answer {
            assert!(s < 500, "{s} for {:?}", String::from_utf8_lossy(&raw));
        }
        *counts.entry(answer).or_insert(0) += 1;
    }
    let served = counts.get(&Answer::Status(200)).copied().unwrap_or(0);
    assert!(served * 10 >= total / 2, "only {served} served: {counts:?}");
    let refused = counts.len() > 1;
    assert!(refused, "nothing refused: {counts:?}");
    unhurt(&c, &counts);
}
