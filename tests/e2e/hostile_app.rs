//! A buggy or hostile app can hurt only its own response: header injection
//! through NUL, CR or LF (a real Flask app included), statuses and framing
//! headers that make no sense, bodies too big for one frame, non-UTF-8
//! reason phrases, and WebSocket close codes and sizes. Each test looks at
//! what the client gets on the wire and what corral logs. Some apps reach
//! into the worker (`from corral_worker import wsgi`) to send heads its own
//! checks would refuse, as a compromised app could: corral must refuse them
//! too.

use crate::common::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::time::{Duration, Instant};

const WSGI_APP: &str = r#"
import os, struct, sys
from urllib.parse import unquote
from corral_worker import wsgi as worker  # the corral worker's WSGI side


def fields(first, *pairs):
    """A head as the worker encodes it, with no checks."""
    fs = [first] + [x for pair in pairs for x in pair]
    return struct.pack("<H%dI" % len(fs), len(pairs), *map(len, fs)) + b"".join(fs)


# Heads the worker's own checks would refuse, sent anyway for /raw/<name>.
RAW = {
    "nul-value": fields(b"200 OK", (b"X-A", b"a\0set-cookie\0session=attacker")),
    "crlf-value": fields(b"200 OK", (b"X-A", b"a\r\nSet-Cookie: session=attacker")),
    "crlf-reason": fields(b"200 OK\r\nSet-Cookie: session=attacker"),
    "bad-name": fields(b"200 OK", (b"Set-Cookie: session", b"attacker")),
    "status-999": fields(b"999 Weird"),
    "status-101": fields(b"101 Switching Protocols", (b"Upgrade", b"websocket")),
    "status-103": fields(b"103 Early Hints"),
    "short": fields(b"200 OK", (b"X-A", b"b"))[:-1],
    "garbage": b"\xff\xff\x00\x00",
    # Past what an http::HeaderMap holds (about 24,500): corral panicked.
    "many-fields": fields(b"200 OK", *[(b"X-%d" % i, b"v") for i in range(30000)]),
}
checked_head = getattr(worker, "wsgi_head", None)


def unchecked_head(status, headers):
    raw = RAW.get(status)
    return raw if raw is not None else checked_head(status, headers)


if checked_head is not None:
    worker.wsgi_head = unchecked_head


def arg(environ):
    return unquote(environ["QUERY_STRING"], encoding="latin-1")


WINDOW = getattr(worker, "RESPONSE_WINDOW", 0)
stream_init = worker.Stream.__init__


def unlimited_stream(self, sid, head, body, flags):
    # /whole-over-window makes the worker send a big body in one frame.
    stream_init(self, sid, head, body, flags)
    if "\0/whole-over-window\0" in head:
        self.window = 1 << 30


worker.Stream.__init__ = unlimited_stream


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/whole-over-window":
        start_response("200 OK", [])
        return [b"x" * (WINDOW + 1)]
    if path == "/huge-header":
        start_response("200 OK", [("X-Big", "x" * 70_000_000)])
        return [b"huge"]
    if path == "/exit-mid-body":
        def parts():
            yield b"part1;"
            import time
            time.sleep(0.2)
            os._exit(4)
        start_response("200 OK", [])
        return parts()
    if path == "/many-headers":
        try:
            start_response("200 OK", [("X-%x" % i, "") for i in range(int(arg(environ)))])
        except ValueError as e:
            start_response("503 Service Unavailable", [], sys.exc_info())
            return [str(e).encode()]
        return [b"sent"]
    if path == "/huge-error":
        def body():
            yield b"start"
            raise ValueError("x" * 70_000_000)
        start_response("200 OK", [])
        return body()
    if path.startswith("/raw/"):
        start_response(path[5:], [])
        return [b"raw"]
    if path == "/status":
        start_response(arg(environ), [("Content-Type", "text/plain")])
        return [b"status"]
    if path == "/header":
        name, _, value = arg(environ).partition(":")
        start_response("200 OK", [(name, value)])
        return [b"header"]
    if path == "/caught":
        try:
            start_response("200 OK", [("X-Bad", "a\r\nSet-Cookie: x")])
        except ValueError as e:
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [str(e).encode()]
        return [b"not refused"]
    if path == "/content-length":
        start_response("200 OK", [("Content-Length", arg(environ))])
        return [b"hello"]
    if path == "/short":
        start_response("200 OK", [("Content-Length", "1000")])
        return [b"x" * 500]
    if path == "/streamed-length":
        start_response("200 OK", [("Content-Length", arg(environ))])
        return (b for b in [b"hel", b"lo"])
    if path == "/two-lengths-streamed":
        start_response("200 OK", [("Content-Length", "5"), ("Content-Length", "6")])
        return (b"x" * 65536 for _ in range(64))  # more than the window
    if path in ("/204", "/304"):
        start_response("204 No Content" if path == "/204" else "304 Not Modified",
                       [("Content-Length", "5"), ("ETag", '"v1"')])
        return [b"hello"]
    if path == "/head":
        start_response("200 OK", [("Content-Length", "5")])
        return [b"hello"]
    if path == "/hop":
        start_response("200 OK", [("Content-Length", "3"), ("Connection", "keep-alive, x-a"),
                                  ("Keep-Alive", "timeout=999"), ("Upgrade", "h2c"),
                                  ("TE", "trailers"), ("Trailer", "X-Sum"), ("X-A", "kept")])
        return [b"hop"]
    if path == "/close":
        start_response("200 OK", [("Content-Length", "5"), ("Connection", "close")])
        return [b"close"]
    if path == "/big":
        n = int(environ["QUERY_STRING"])
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [bytes(range(256)) * (n // 256)]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
"#;

const FLASK_APP: &str = r#"
from flask import Flask, request, Response

app = Flask(__name__)


@app.route("/download")
def download():
    name = request.args.get("name", "file.txt")
    return Response("data", headers={
        "Content-Disposition": 'attachment; filename="%s"' % name})
"#;

fn start(module: &str, files: &[(&str, &str)]) -> (AppDir, Corral) {
    let dir = AppDir::new(files);
    let c = Corral::start(dir.path(), &[module, "-w", "1"], 1);
    (dir, c)
}

fn wsgi() -> (AppDir, Corral) {
    start("app:app", &[("app.py", WSGI_APP)])
}

/// Sends raw request bytes (the last request should say `Connection:
/// close`) and reads everything until corral closes the connection.
fn exchange(addr: &str, raw: &[u8]) -> Vec<u8> {
    let mut s = connect(addr);
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read until close");
    out
}

fn get_close(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()
}

/// Fails with the log unless a log line containing `needle` shows up.
fn logged(c: &Corral, needle: &str) -> String {
    c.log
        .wait_for(needle, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no log line with {needle:?}; log:\n{}", c.log.text()))
}

/// The worker's pid, from the app's default route.
fn pid(c: &Corral) -> String {
    let r = c.get("/pid");
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

#[test]
fn flask_content_disposition_with_nul_gets_500_and_sets_no_cookie() {
    let (_dir, c) = start("app:app", &[("app.py", FLASK_APP)]);
    let ok = c.get("/download?name=report.csv");
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.header("content-disposition"),
        Some(r#"attachment; filename="report.csv""#)
    );

    let wire = exchange(
        &c.addr,
        &get_close("/download?name=x%00set-cookie%00session=attacker%00x"),
    );
    let text = String::from_utf8_lossy(&wire).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 500 "), "{text}");
    assert!(!text.contains("set-cookie"), "{text}");
    assert!(!text.contains("attacker"), "{text}");
    logged(
        &c,
        "invalid value for WSGI response header 'Content-Disposition'",
    );
    // CR and LF, too.
    let r = c.get("/download?name=x%0d%0aSet-Cookie:%20session=attacker");
    assert_eq!(r.status, 500);
    assert_eq!(r.header("set-cookie"), None);
}

#[test]
fn wsgi_statuses_and_headers_with_control_characters_make_start_response_raise() {
    let (_dir, c) = wsgi();
    let wire = exchange(&c.addr, &get_close("/status?200%20OK%00Set-Cookie%00x"));
    let text = String::from_utf8_lossy(&wire).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 500 "), "{text}");
    assert!(!text.contains("set-cookie"), "{text}");
    logged(&c, "invalid status '200 OK\\x00Set-Cookie\\x00x'");
    // A final status is 200 to 599, as gunicorn's start_response checks:
    // an interim 1xx or a 600 raises there too.
    for (status, needle) in [
        ("103%20Early%20Hints", "invalid status '103 Early Hints'"),
        ("600%20Beyond", "invalid status '600 Beyond'"),
    ] {
        let r = c.get(&format!("/status?{status}"));
        assert_eq!(r.status, 500, "{status}");
        logged(&c, needle);
    }

    for (query, needle) in [
        ("X-A:a%00b", "invalid value for WSGI response header 'X-A'"),
        (
            "X-B:a%0d%0ab",
            "invalid value for WSGI response header 'X-B'",
        ),
        ("X-C:a%7fb", "invalid value for WSGI response header 'X-C'"),
        (
            "Bad%20Name:x",
            "invalid WSGI response header name 'Bad Name'",
        ),
    ] {
        let r = c.get(&format!("/header?{query}"));
        assert_eq!(r.status, 500, "{query}");
        logged(&c, needle);
    }
    // HTAB is fine in a value.
    let r = c.get("/header?X-Ok:a%09b");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "header");

    // The app sees the error where it called start_response, and may answer.
    let r = c.get("/caught");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("'X-Bad'"), "{}", r.text());
    assert_eq!(r.header("set-cookie"), None);
}

#[test]
fn heads_that_skip_the_workers_checks_get_500_from_corral() {
    let (_dir, c) = wsgi();
    let worker = pid(&c);
    for (name, needle) in [
        ("nul-value", "invalid value for header x-a"),
        ("crlf-value", "invalid value for header x-a"),
        ("crlf-reason", "invalid reason phrase"),
        ("bad-name", "invalid header name \"Set-Cookie: session\""),
        ("status-999", "status 999 cannot end a response"),
        ("status-101", "status 101 cannot end a response"),
        ("status-103", "status 103 cannot end a response"),
        ("short", "malformed head"),
        ("garbage", "65535 header fields: at most 10000"),
        ("many-fields", "30000 header fields: at most 10000"),
    ] {
        let wire = exchange(&c.addr, &get_close(&format!("/raw/{name}")));
        let text = String::from_utf8_lossy(&wire).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 500 "), "{name}: {text}");
        assert!(!text.contains("set-cookie"), "{name}: {text}");
        assert!(!text.contains("upgrade: websocket"), "{name}: {text}");
        // With the request and the worker: with several workers, which
        // app request got the 500 was not said.
        let line = logged(
            &c,
            &format!(
                " GET /raw/{name}: 500, the app sent an invalid response on worker 0 (pid {worker}): "
            ),
        );
        assert!(line.contains(needle), "{line}");
    }
    // The worker is fine: it keeps serving.
    assert_eq!(pid(&c), worker);
}

#[test]
fn latin1_reason_phrases_reach_the_client_as_bytes() {
    let (_dir, c) = wsgi();
    let wire = exchange(&c.addr, &get_close("/status?200%20Caf%E9"));
    assert!(wire.starts_with(b"HTTP/1.1 200 Caf\xe9\r\n"), "{wire:?}");
    assert!(wire.ends_with(b"status"));
    // This one panicked the connection task: lengths of a lossy string.
    let wire = exchange(&c.addr, &get_close("/status?200%20%E9%E9%E9"));
    assert!(
        wire.starts_with(b"HTTP/1.1 200 \xe9\xe9\xe9\r\n"),
        "{wire:?}"
    );
    assert!(wire.ends_with(b"status"));
    assert_eq!(c.log.count("panicked"), 0, "{}", c.log.text());
    // A status with no standard reason and none from the app: an empty
    // one, as gunicorn and uvicorn send, not hyper's `<none>`.
    let wire = exchange(&c.addr, &get_close("/status?499"));
    assert!(wire.starts_with(b"HTTP/1.1 499 \r\n"), "{wire:?}");
}

#[test]
fn white_space_around_a_header_value_is_stripped_as_gunicorn_strips_it() {
    let (_dir, c) = wsgi();
    let wire = exchange(
        &c.addr,
        &get_close("/header?X-A:%20%09lead%20and%20trail%20%20"),
    );
    let text = String::from_utf8_lossy(&wire);
    assert!(text.contains("\r\nx-a: lead and trail\r\n"), "{text}");
}

#[test]
fn asgi_statuses_with_no_standard_reason_go_out_with_an_empty_one() {
    let (_dir, c) = asgi();
    for status in ["499", "420", "299", "599"] {
        let wire = exchange(&c.addr, &get_close(&format!("/status?{status}")));
        assert!(
            wire.starts_with(format!("HTTP/1.1 {status} \r\n").as_bytes()),
            "{}",
            String::from_utf8_lossy(&wire)
        );
        assert!(wire.ends_with(b"status"));
    }
    let wire = exchange(&c.addr, &get_close("/status?404"));
    assert!(wire.starts_with(b"HTTP/1.1 404 Not Found\r\n"));
}

#[test]
fn content_length_must_be_a_number_and_one_number() {
    let (_dir, c) = wsgi();
    let r = c.get("/content-length?abc");
    assert_eq!(r.status, 500);
    logged(&c, "invalid Content-Length \"abc\"");
    let r = c.get("/content-length?5,%205");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("5"));
    assert_eq!(r.text(), "hello");

    // A streamed body longer than its length is cut; a shorter one ends
    // the connection (the client sees it cut), and corral says why.
    let wire = exchange(&c.addr, &get_close("/streamed-length?3"));
    assert!(wire.ends_with(b"\r\n\r\nhel"), "{wire:?}");
    // The client gets the head and what was sent, then the close (as from
    // gunicorn), not an empty reply.
    let wire = exchange(&c.addr, &get_close("/streamed-length?10"));
    assert!(wire.starts_with(b"HTTP/1.1 200 "), "{wire:?}");
    assert!(wire.ends_with(b"\r\n\r\nhello"), "{wire:?}");
    let worker = pid(&c);
    let line = logged(&c, "declared Content-Length: 10 but sent 5 bytes");
    assert!(
        line.contains(&format!(
            "a response of worker 0 (pid {worker}): the app declared"
        )),
        "{line}"
    );
    assert_eq!(c.log.count("panicked"), 0, "{}", c.log.text());

    // Two lengths on a streamed body: a 500 and a log line, not an empty
    // reply with nothing said.
    let r = c.get("/two-lengths-streamed");
    assert_eq!(r.status, 500);
    let line = logged(&c, "conflicting Content-Length values 5 and 6");
    assert!(line.contains(" GET /two-lengths-streamed: 500, "), "{line}");
    // A worker that dies after the head: the client gets what was sent
    // and a cut; the log says so, where it said only that the worker
    // exited.
    let (head, body) = read_until_closed(&c.addr, "/exit-mid-body");
    assert!(head.starts_with("http/1.1 200 "), "{head}");
    assert!(body.ends_with(b"part1;\r\n"), "{body:?}");
    logged(
        &c,
        &format!(
            "worker 0 (pid {worker}) ended mid-response: the client got the head and 6 bytes of the body, then a cut"
        ),
    );
    // The refused stream was cancelled: the worker's one thread is free.
    assert_eq!(c.get("/pid").status, 200);
}

/// GET `path` on a connection the client would keep open: the response's
/// head and the bytes after it, read until corral closes the connection.
fn read_until_closed(addr: &str, path: &str) -> (String, Vec<u8>) {
    let mut s = connect(addr);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut wire = Vec::new();
    let closed = s.read_to_end(&mut wire);
    let text = String::from_utf8_lossy(&wire).into_owned();
    assert!(
        closed.is_ok(),
        "the connection stayed open: {closed:?}; {text}"
    );
    let end = text.find("\r\n\r\n").expect("a whole head") + 4;
    (text[..end].to_ascii_lowercase(), wire[end..].to_vec())
}

/// A body the app sent in one piece, shorter than its Content-Length, goes
/// out as a streamed one that ends short does: under the length the app
/// declared, then the connection is closed, so that the client (and a
/// cache in front) sees the response cut, as from gunicorn and uvicorn. A
/// corrected length would have made it look complete.
#[test]
fn a_whole_body_short_of_its_content_length_goes_out_cut_under_that_length() {
    for (_dir, c) in [wsgi(), asgi()] {
        let (head, body) = read_until_closed(&c.addr, "/short");
        assert!(head.starts_with("http/1.1 200 "), "{head}");
        assert!(head.contains("\r\ncontent-length: 1000\r\n"), "{head}");
        assert_eq!(body, vec![b'x'; 500], "{head}");
        let line = logged(
            &c,
            "the app declared Content-Length: 1000 but sent 500 bytes",
        );
        assert!(line.contains(" GET /short on worker 0 (pid "), "{line}");
        // The worker serves on.
        assert_eq!(c.get("/pid").status, 200);
    }
    // A longer body is cut to its length.
    let (_dir, c) = wsgi();
    let wire = exchange(&c.addr, &get_close("/content-length?3"));
    let text = String::from_utf8_lossy(&wire);
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(text.contains("\r\ncontent-length: 3\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nhel"), "{text}");
}

#[test]
fn no_body_or_length_on_204_and_304_and_heads_keep_their_length() {
    let (_dir, c) = wsgi();
    for status in ["204", "304"] {
        // Then another request on the same connection: a stray body would
        // show up where its status line should be.
        let mut raw = format!("GET /{status} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes();
        raw.extend_from_slice(&get_close("/pid"));
        let wire = exchange(&c.addr, &raw);
        let mut r = BufReader::new(&wire[..]);
        let first = read_response(&mut r, false).unwrap();
        assert_eq!(first.status.to_string(), status);
        assert_eq!(first.header("content-length"), None, "{status}");
        assert_eq!(first.header("etag"), Some("\"v1\""));
        let second = read_response(&mut r, false).unwrap();
        assert_eq!(second.status, 200, "{status}: {wire:?}");
        assert!(second.text().parse::<u32>().is_ok(), "{status}: {wire:?}");
    }
    let r = request(&c.addr, "HEAD", "/head", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("5"));
}

#[test]
fn hop_by_hop_headers_from_the_app_are_dropped_but_connection_close_is_kept() {
    let (_dir, c) = wsgi();
    let mut raw = b"GET /hop HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    raw.extend_from_slice(&get_close("/pid"));
    let wire = exchange(&c.addr, &raw);
    let mut r = BufReader::new(&wire[..]);
    let first = read_response(&mut r, false).unwrap();
    assert_eq!((first.status, first.text().as_str()), (200, "hop"));
    for name in ["connection", "keep-alive", "upgrade", "te", "trailer"] {
        assert_eq!(first.header(name), None, "{name}: {wire:?}");
    }
    assert_eq!(first.header("x-a"), Some("kept"));
    // The connection is corral's: it stayed open for the next request.
    let second = read_response(&mut r, false).unwrap();
    assert_eq!(second.status, 200, "{wire:?}");
    // Connection: close from the app closes it after the response.
    let mut raw = b"GET /close HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    raw.extend_from_slice(&get_close("/pid"));
    let wire = exchange(&c.addr, &raw);
    let mut r = BufReader::new(&wire[..]);
    let first = read_response(&mut r, false).unwrap();
    assert_eq!(first.header("connection"), Some("close"));
    assert!(read_response(&mut r, false).is_err(), "{wire:?}");
}

/// Reads a response's head; returns the reader positioned at the body.
fn read_head<R: BufRead>(r: &mut R) -> String {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).unwrap() > 0, "closed in the head");
        if line == "\r\n" {
            return head;
        }
        head.push_str(&line);
    }
}

/// Reads a body framed as `head` says (chunked, or a Content-Length);
/// returns its length and whether every byte follows the app's 0, 1, ...,
/// 255 pattern.
fn read_body<R: BufRead>(r: &mut R, head: &str) -> (usize, bool) {
    let length = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    let Some(n) = length else {
        return read_chunked(r);
    };
    let mut body = vec![0u8; n];
    r.read_exact(&mut body).unwrap();
    let ok = body.iter().enumerate().all(|(i, &b)| b == (i % 256) as u8);
    (n, ok)
}

/// Reads a chunked body to its end; returns its length and whether every
/// byte follows the app's 0, 1, ..., 255 pattern.
fn read_chunked<R: BufRead>(r: &mut R) -> (usize, bool) {
    let (mut total, mut ok) = (0usize, true);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let mut size = usize::from_str_radix(line.trim(), 16).unwrap();
        if size == 0 {
            r.read_line(&mut line).unwrap();
            return (total, ok);
        }
        while size > 0 {
            let k = size.min(buf.len());
            r.read_exact(&mut buf[..k]).unwrap();
            ok &= buf[..k]
                .iter()
                .enumerate()
                .all(|(i, &b)| b == ((total + i) % 256) as u8);
            total += k;
            size -= k;
        }
        r.read_line(&mut line).unwrap();
    }
}

#[test]
fn a_70_mb_list_body_arrives_whole_and_the_worker_keeps_serving() {
    let (_dir, c) = wsgi();
    let worker = pid(&c);
    let n = 70_000_128;
    let mut s = c.connect();
    send_request(&mut s, "GET", &format!("/big?{n}"), &[], b"");
    let mut r = BufReader::new(s);
    let head = read_head(&mut r);
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert_eq!(read_body(&mut r, &head), (n, true));
    assert_eq!(pid(&c), worker);
    assert_eq!(c.log.count("bad frame"), 0, "{}", c.log.text());
}

#[test]
fn a_slow_reader_of_a_20_mb_list_body_costs_corral_no_more_than_the_window() {
    let (_dir, c) = wsgi();
    // Warm up the paths and buffers a big body uses.
    let mut s = c.connect();
    send_request(&mut s, "GET", "/big?4000000", &[], b"");
    let mut r = BufReader::new(s);
    let head = read_head(&mut r);
    assert_eq!(read_body(&mut r, &head).0, 4_000_000);
    let before = rss_kib(c.pid());

    // Read the head, then nothing: the worker must wait for window.
    let mut s = c.connect();
    send_request(&mut s, "GET", "/big?20000000", &[], b"");
    let mut r = BufReader::with_capacity(1024, s);
    let head = read_head(&mut r);
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    std::thread::sleep(Duration::from_millis(1500));
    let grown = rss_kib(c.pid()).saturating_sub(before);
    eprintln!("corral's RSS grew by {grown} KiB with a slow reader of 20 MB");
    assert!(
        grown < 4 * 1024,
        "corral grew by {grown} KiB for one slow reader of a 20 MB body"
    );
    // And the body is all there when the client reads on.
    assert_eq!(read_body(&mut r, &head), (20_000_000, true));
}

#[test]
fn nothing_an_app_sends_makes_a_frame_over_the_limit() {
    let (_dir, c) = wsgi();
    let worker = pid(&c);
    // A 70 MB header: refused in the worker, as a head over 1 MiB.
    let r = c.get("/huge-header");
    assert_eq!(r.status, 500);
    logged(
        &c,
        "response headers of 70000011 bytes: the limit is 1048576",
    );
    // A 70 MB error message after the head: the traceback is clipped.
    let mut s = c.connect();
    send_request(&mut s, "GET", "/huge-error", &[], b"");
    let mut r = BufReader::new(s);
    assert!(read_head(&mut r).starts_with("HTTP/1.1 200 OK"));
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    assert!(
        !contains(&rest, b"0\r\n\r\n"),
        "a failed body must not end cleanly"
    );
    // A whole body over the window in one frame: corral refuses it.
    let r = c.get("/whole-over-window");
    assert_eq!(r.status, 500);
    logged(&c, "a whole body of 262145 bytes, over the response window");
    assert_eq!(pid(&c), worker);
    assert_eq!(c.log.count("bad frame"), 0, "{}", c.log.text());
}

#[test]
fn more_header_fields_than_corral_takes_make_start_response_and_send_raise() {
    // Past 10,000 fields corral refuses a head: the worker refuses it
    // first, so the app's own error handling runs (its 503 and message),
    // as for a head over 1 MiB. Before, 10,001 were a 500 from corral the
    // app never heard of, and 65,536 a struct.error.
    for (name, (_dir, c)) in [("WSGI", wsgi()), ("ASGI", asgi())] {
        let r = c.get("/many-headers?10000");
        assert_eq!((r.status, r.text()), (200, "sent".into()), "{name}");
        for n in [10_001, 70_000] {
            let r = c.get(&format!("/many-headers?{n}"));
            assert_eq!(
                (r.status, r.text()),
                (
                    503,
                    format!("{n} response header fields: at most 10000 may go in a response")
                ),
                "{name}"
            );
        }
    }
}

#[test]
fn a_70_mb_boot_error_is_clipped_and_reported() {
    let dir = AppDir::new(&[("app.py", "raise RuntimeError('x' * 70_000_000)\n")]);
    let c = Corral::start(dir.path(), &["app:app", "-w", "1"], 0);
    logged(&c, "failed to boot");
    logged(&c, "characters cut ...]");
    assert_eq!(c.log.count("bad frame"), 0, "{}", c.log.text());
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ------------------------------------------------------------------ ASGI

const ASGI_APP: &str = r#"
import os, struct
from corral_worker import asgi as worker  # the corral worker's ASGI side

checked_fields = getattr(worker, "asgi_fields", None)


def unchecked_fields(first, headers, kind):
    """The subprotocol "raw" sends a header with NUL, unchecked."""
    if first == b"raw":
        fs = [b"", b"x-a", b"1\0set-cookie\0x"]
        return struct.pack("<H3I", 1, *map(len, fs)) + b"".join(fs)
    return checked_fields(first, headers, kind)


if checked_fields is not None:
    worker.asgi_fields = unchecked_fields


async def body(send, status, headers, data=b""):
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def http(scope, receive, send):
    path = scope["path"]
    if path == "/header":
        await body(send, 200, [(b"x-evil", b"a\0set-cookie\0session=attacker")])
    elif path == "/caught":
        try:
            await body(send, 200, [(b"x-evil", b"a\r\nset-cookie: x")])
        except ValueError as e:
            await body(send, 400, [], str(e).encode())
    elif path == "/many-headers":
        n = int(scope["query_string"])
        try:
            await body(send, 200, [(b"x-%x" % i, b"") for i in range(n)], b"sent")
        except ValueError as e:
            await body(send, 503, [], str(e).encode())
    elif path == "/short":
        await body(send, 200, [(b"content-length", b"1000")], b"x" * 500)
    elif path == "/103":
        await body(send, 103, [])
    elif path == "/status":
        await body(send, int(scope["query_string"]), [], b"status")
    elif path == "/str-body":
        await body(send, 200, [], "text, not bytes")
    elif path == "/bytearray-body":
        await body(send, 200, [], bytearray(b"a bytearray"))
    elif path == "/big":
        n = int(scope["query_string"])
        await body(send, 200, [], bytes(range(256)) * (n // 256))
    else:
        await body(send, 200, [], str(os.getpid()).encode())


async def websocket(scope, receive, send):
    path = scope["path"]
    await receive()  # websocket.connect
    if path == "/bad-accept":
        await send({"type": "websocket.accept", "headers": [(b"x-a", b"1\r\nset-cookie: x")]})
    elif path == "/raw-accept":
        await send({"type": "websocket.accept", "subprotocol": "raw"})
    elif path == "/bad-denial":
        await send({"type": "websocket.http.response.start", "status": 403,
                    "headers": [(b"x-a", b"1\0set-cookie\0x")]})
    elif path == "/big-denial":
        await send({"type": "websocket.http.response.start", "status": 403, "headers": []})
        await send({"type": "websocket.http.response.body",
                    "body": bytes(range(256)) * (70_000_128 // 256)})
    elif path == "/huge-message":
        await send({"type": "websocket.accept"})
        try:
            await send({"type": "websocket.send", "bytes": b"x" * 20_000_000})
        except ValueError as e:
            await send({"type": "websocket.send", "text": str(e)})
        await send({"type": "websocket.close", "code": 1000})
    elif path.startswith("/close/"):
        await send({"type": "websocket.accept"})
        code = int(path.split("/")[2])
        await send({"type": "websocket.close", "code": code, "reason": "é" * 200})
    else:
        await send({"type": "websocket.accept"})
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                with open("disconnect.txt", "w") as f:
                    f.write("%d %s" % (m["code"], m.get("reason") or ""))
                return
            await send({"type": "websocket.send", "bytes": b"got %d" % len(m["bytes"])})


async def app(scope, receive, send):
    if scope["type"] == "http":
        await http(scope, receive, send)
    elif scope["type"] == "websocket":
        await websocket(scope, receive, send)
"#;

fn asgi() -> (AppDir, Corral) {
    start("app:app", &[("app.py", ASGI_APP)])
}

#[test]
fn asgi_send_raises_on_bad_headers_and_1xx_final_statuses() {
    let (_dir, c) = asgi();
    let wire = exchange(&c.addr, &get_close("/header"));
    let text = String::from_utf8_lossy(&wire).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 500 "), "{text}");
    assert!(!text.contains("set-cookie"), "{text}");
    logged(&c, "invalid value for ASGI response header b'x-evil'");

    let r = c.get("/caught");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("b'x-evil'"), "{}", r.text());

    let r = c.get("/103");
    assert_eq!(r.status, 500);
    logged(&c, "invalid status 103");

    // A body that is no bytes is the app's error, answered 500 by the
    // worker that stays: not a 502 with "died before it answered".
    let pid = c.get("/").text();
    let r = c.get("/str-body");
    assert_eq!(r.status, 500, "{}", r.text());
    logged(&c, "body must be bytes, not str");
    assert!(!c.log.text().contains("died"), "{}", c.log.text());
    assert_eq!(c.get("/").text(), pid, "the same worker");
    // bytes-like bodies are taken, as uvicorn takes them.
    let r = c.get("/bytearray-body");
    assert_eq!((r.status, r.text()), (200, "a bytearray".to_string()));
}

#[test]
fn a_70_mb_asgi_body_arrives_whole() {
    let (_dir, c) = asgi();
    let n = 70_000_128;
    let mut s = c.connect();
    send_request(&mut s, "GET", &format!("/big?{n}"), &[], b"");
    let mut r = BufReader::new(s);
    assert!(read_head(&mut r).starts_with("HTTP/1.1 200 OK"));
    assert_eq!(read_chunked(&mut r), (n, true));
    assert_eq!(c.get("/pid").status, 200);
}

/// A raw WebSocket handshake for `path`; returns the response head.
fn ws_handshake(c: &Corral, path: &str) -> (String, BufReader<std::net::TcpStream>) {
    let mut s = c.connect();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let head = read_head(&mut r);
    (head, r)
}

#[test]
fn websocket_handshake_heads_are_checked_too() {
    let (_dir, c) = asgi();
    for (path, needle) in [
        (
            "/bad-accept",
            "invalid value for websocket.accept response header b'x-a'",
        ),
        (
            "/bad-denial",
            "invalid value for ASGI response header b'x-a'",
        ),
        (
            "/raw-accept",
            "websocket.accept: invalid value for header x-a",
        ),
    ] {
        let (head, _) = ws_handshake(&c, path);
        let head = head.to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 500 "), "{path}: {head}");
        assert!(!head.contains("set-cookie"), "{path}: {head}");
        logged(&c, needle);
    }
}

#[test]
fn a_70_mb_denial_body_streams_and_a_20_mb_message_raises_in_send() {
    let (_dir, c) = asgi();
    let worker = c.get("/pid").text();
    let (head, mut r) = ws_handshake(&c, "/big-denial");
    assert!(head.starts_with("HTTP/1.1 403 "), "{head}");
    assert_eq!(read_chunked(&mut r), (70_000_128, true));

    let (head, mut r) = ws_handshake(&c, "/huge-message");
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let (op, text) = read_frame(&mut r);
    assert_eq!(op, 1);
    assert_eq!(
        String::from_utf8(text).unwrap(),
        "WebSocket message of 20000000 bytes: the limit is 16777216"
    );
    assert_eq!(read_frame(&mut r).0, 8);
    assert_eq!(c.get("/pid").text(), worker);
    assert_eq!(c.log.count("bad frame"), 0, "{}", c.log.text());
}

/// Reads one server frame (unmasked): opcode and payload.
fn read_frame<R: Read>(r: &mut R) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    r.read_exact(&mut h).unwrap();
    let len = match h[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            r.read_exact(&mut l).unwrap();
            u16::from_be_bytes(l) as usize
        }
        127 => {
            let mut l = [0u8; 8];
            r.read_exact(&mut l).unwrap();
            u64::from_be_bytes(l) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).unwrap();
    (h[0] & 0x0f, payload)
}

/// A masked client frame header for a binary message of `len` bytes
/// (mask key zero, so the payload goes as it is).
fn binary_frame_header(len: u64) -> Vec<u8> {
    let mut f = vec![0x82, 0x80 | 127];
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0]);
    f
}

#[test]
fn close_codes_the_app_may_not_send_become_1011_and_reasons_are_cut() {
    let (_dir, c) = asgi();
    for (code, sent) in [
        (999, 1011),
        (1005, 1011),
        (1006, 1011),
        (1015, 1011),
        (5000, 1011),
        (4000, 4000),
    ] {
        let (head, mut r) = ws_handshake(&c, &format!("/close/{code}"));
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        let (op, payload) = read_frame(&mut r);
        assert_eq!(op, 8, "a close frame for {code}");
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), sent, "{code}");
        // 200 "é" cut to 123 bytes at a character boundary: 61 of them.
        let reason = std::str::from_utf8(&payload[2..]).expect("the reason is UTF-8");
        assert_eq!(reason, "é".repeat(61), "{code}");
        if sent == 1011 {
            logged(&c, &format!("closed a WebSocket with code {code}"));
        }
    }
}

#[test]
fn a_client_message_over_16_mib_closes_with_1009() {
    let (dir, c) = asgi();
    let (head, mut r) = ws_handshake(&c, "/echo");
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let s = r.get_mut();
    // A small message goes through.
    s.write_all(&binary_frame_header(5)).unwrap();
    s.write_all(b"hello").unwrap();
    assert_eq!(read_frame(&mut r), (2, b"got 5".to_vec()));
    // Then one over the limit: the header alone says so.
    let s = r.get_mut();
    s.write_all(&binary_frame_header(16 * 1024 * 1024 + 1))
        .unwrap();
    s.write_all(&[0u8; 4096]).unwrap();
    let (op, payload) = read_frame(&mut r);
    assert_eq!(op, 8, "a close frame");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1009);
    // The app hears of it with the same code.
    let path = dir.path().join("disconnect.txt");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "the app never saw the disconnect"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(50));
    let seen = std::fs::read_to_string(&path).unwrap();
    assert!(seen.starts_with("1009"), "{seen}");
}

/// corral serves on after a socket was closed for the cap: a new socket
/// takes a message and answers it.
fn a_new_socket_works(c: &Corral) {
    let (head, mut r) = ws_handshake(c, "/echo");
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    r.get_mut().write_all(&binary_frame_header(5)).unwrap();
    r.get_mut().write_all(b"hello").unwrap();
    assert_eq!(read_frame(&mut r), (2, b"got 5".to_vec()));
}

/// Many sockets each sending most of a message in fragments, never the
/// last, hold no more of corral's memory than 8 whole messages
/// (`ws_max_message`, here 1 MiB; about twice that in buffers): the socket
/// that reads past that is closed with 1013 (try again later). Before, each socket held up to
/// `ws_max_message` for as long as it liked, with no cap over them all.
#[test]
fn unfinished_websocket_messages_of_all_sockets_together_are_capped() {
    let dir = AppDir::new(&[("app.py", ASGI_APP)]);
    let c = Corral::start(
        dir.path(),
        &["app:app", "-w", "1", "--ws-max-message", "1MiB"],
        1,
    );
    let before = rss_kib(c.pid());
    let fragment = 900 * 1024;
    let (sockets, peaks) = peak_rss_during(&[c.pid()], || {
        let mut sockets = Vec::new();
        for _ in 0..40 {
            let (head, mut r) = ws_handshake(&c, "/echo");
            assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
            // A binary frame that is not the last of its message (FIN 0),
            // masked with a zero key.
            let mut f = vec![0x02, 0x80 | 127];
            f.extend_from_slice(&(fragment as u64).to_be_bytes());
            f.extend_from_slice(&[0, 0, 0, 0]);
            let s = r.get_mut();
            s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
            if s.write_all(&f).is_ok() {
                let _ = s.write_all(&vec![b'x'; fragment]);
            }
            sockets.push(r);
        }
        std::thread::sleep(Duration::from_millis(500));
        sockets
    });
    let grown = peaks[0].saturating_sub(before);
    let mut busy = 0;
    for mut r in sockets {
        r.get_mut()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut h = [0u8; 2];
        if r.read_exact(&mut h).is_ok() && h[0] & 0x0f == 8 {
            let mut rest = vec![0u8; (h[1] & 0x7f) as usize];
            if r.read_exact(&mut rest).is_ok() && rest.len() >= 2 {
                busy += usize::from(u16::from_be_bytes([rest[0], rest[1]]) == 1013);
            }
        }
    }
    assert!(
        busy > 0,
        "no socket was closed with 1013; log:\n{}",
        c.log.text()
    );
    assert!(
        grown < 32 * 1024,
        "corral grew by {grown} KiB for 40 x 900 KiB of unfinished messages"
    );
    a_new_socket_works(&c);
}

/// A client that sends pings flat out and reads nothing: corral answers
/// only the latest ping (RFC 6455 allows it), so at most one pong waits
/// (a client that takes nothing at all is closed after `send_timeout`, as
/// `hostile_client.rs` shows); corral's memory stays flat. Before, each ping queued a
/// pong of its own: 300 MiB a second from one socket.
#[test]
fn pongs_a_client_never_reads_do_not_pile_up() {
    let dir = AppDir::new(&[("app.py", ASGI_APP)]);
    let c = Corral::start(dir.path(), &["app:app", "-w", "1"], 1);
    let before = rss_kib(c.pid());
    let (head, mut r) = ws_handshake(&c, "/echo");
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    // Masked (a zero key) pings of 125 bytes, 500 to a write.
    let mut ping = vec![0x89, 0x80 | 125, 0, 0, 0, 0];
    ping.extend_from_slice(&[b'p'; 125]);
    let burst = ping.repeat(500);
    let ((), peaks) = peak_rss_during(&[c.pid()], || {
        let s = r.get_mut();
        s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        let deadline = Instant::now() + Duration::from_secs(4);
        let mut sent = 0usize;
        while Instant::now() < deadline && sent < 400 << 20 {
            if s.write_all(&burst).is_err() {
                break;
            }
            sent += burst.len();
        }
    });
    let grown = peaks[0].saturating_sub(before);
    assert!(
        grown < 48 * 1024,
        "corral grew by {grown} KiB for pongs a client never read"
    );
    // What the client finds when it reads at last: pongs, far fewer than
    // its pings.
    r.get_mut()
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let t = Instant::now();
    let mut pongs = 0usize;
    while t.elapsed() < Duration::from_secs(20) {
        let mut h = [0u8; 2];
        if r.read_exact(&mut h).is_err() {
            break;
        }
        let mut payload = vec![0u8; (h[1] & 0x7f) as usize];
        if r.read_exact(&mut payload).is_err() {
            break;
        }
        pongs += usize::from(h[0] & 0x0f == 0xa);
    }
    assert!(pongs > 0, "no pong came");
    a_new_socket_works(&c);
}
