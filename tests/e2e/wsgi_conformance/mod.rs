//! PEP 3333 conformance, as a gunicorn user would check it: each test writes
//! a small WSGI app, serves it with the real corral binary and real Python
//! workers, and asserts what an HTTP client sees on the wire.

use crate::common::*;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A corral serving one app module with one worker; the app folder lives as
/// long as the server (fields drop in order: corral first).
struct Server {
    c: Corral,
    _dir: AppDir,
}

impl Server {
    /// Serves `conformance_app:app` (the Python source `app`) with `-w 1`
    /// and the `extra` flags.
    fn start(app: &str, extra: &[&str]) -> Server {
        let dir = AppDir::new(&[("conformance_app.py", app)]);
        let mut args = vec!["conformance_app:app", "-w", "1"];
        args.extend_from_slice(extra);
        let c = Corral::start(dir.path(), &args, 1);
        Server { c, _dir: dir }
    }

    fn addr(&self) -> &str {
        &self.c.addr
    }

    fn get(&self, path: &str) -> Response {
        request(self.addr(), "GET", path, &[], b"")
    }

    /// A connection whose reads give up after 5 s, so a test that waits for
    /// bytes corral never sends fails quickly instead of hanging.
    fn connect(&self) -> BufReader<TcpStream> {
        let s = connect(self.addr());
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        BufReader::new(s)
    }

    /// Sends raw bytes on a new connection and reads one response.
    fn raw(&self, bytes: &[u8], head_only: bool) -> Response {
        let mut r = self.connect();
        r.get_mut().write_all(bytes).unwrap();
        read_response(&mut r, head_only).expect("a response")
    }
}

/// Asserts that the server closed the connection and sent nothing more.
fn expect_closed(r: &mut BufReader<TcpStream>, what: &str) {
    r.get_ref()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut rest = Vec::new();
    match r.read_to_end(&mut rest) {
        Ok(_) => assert!(
            rest.is_empty(),
            "{what}: stray bytes after the response: {:?}",
            String::from_utf8_lossy(&rest)
        ),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{what}: corral did not close the connection: {e}"),
    }
}

/// A body in chunked transfer coding, split every `piece` bytes; every other
/// chunk carries a chunk extension, which the server must ignore.
fn chunked(body: &[u8], piece: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, c) in body.chunks(piece).enumerate() {
        if i % 2 == 1 {
            out.extend_from_slice(format!("{:x};ext=\"v\"\r\n", c.len()).as_bytes());
        } else {
            out.extend_from_slice(format!("{:X}\r\n", c.len()).as_bytes());
        }
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Reads one chunk of a chunked response body (after its head).
fn read_chunk<R: BufRead>(r: &mut R) -> Vec<u8> {
    let mut line = String::new();
    r.read_line(&mut line).expect("chunk size line");
    let size = usize::from_str_radix(line.trim().split(';').next().unwrap(), 16)
        .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
    let mut data = vec![0; size];
    r.read_exact(&mut data).expect("chunk data");
    let mut crlf = [0; 2];
    r.read_exact(&mut crlf).expect("chunk CRLF");
    assert_eq!(&crlf, b"\r\n", "chunk not followed by CRLF");
    data
}

fn text(v: &HashMap<String, Value>, key: &str) -> Option<String> {
    v.get(key).and_then(|x| x.as_str()).map(str::to_string)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// The headers, but the date and the request's id (each response has its
/// own).
fn headers_without_date(r: &Response) -> Vec<(String, String)> {
    r.headers
        .iter()
        .filter(|(k, _)| k != "date" && k != "x-request-id")
        .cloned()
        .collect()
}

// ------------------------------------------------------------------ environ

/// Returns the whole environ as JSON: str values as they are, others by
/// repr(); plus the type of every value and what the streams offer.
const ENVIRON_APP: &str = r#"
import json

def app(environ, start_response):
    body = environ["wsgi.input"].read()
    err = environ["wsgi.errors"]
    marker = environ.get("HTTP_X_MARKER")
    if marker:
        err.write("wsgi.errors write " + marker + "\n")
        err.writelines(["wsgi.errors writelines " + marker + "\n"])
        err.flush()
    out = {}
    for k, v in environ.items():
        out[k] = v if isinstance(v, str) else repr(v)
    out["__types__"] = {k: type(v).__name__ for k, v in environ.items()}
    out["__body__"] = body.decode("latin-1")
    out["__input_api__"] = all(
        callable(getattr(environ["wsgi.input"], m, None))
        for m in ("read", "readline", "readlines", "__iter__"))
    out["__errors_api__"] = all(
        callable(getattr(err, m, None)) for m in ("write", "writelines", "flush"))
    data = json.dumps(out).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(data)))])
    return [data]
"#;

#[test]
fn environ_has_every_required_key_with_pep3333_values_and_types() {
    let s = Server::start(ENVIRON_APP, &[]);
    let mut r = s.connect();
    let local_port = r.get_ref().local_addr().unwrap().port();
    let mut req = Vec::new();
    req.extend_from_slice(b"GET /caf%C3%A9/a%20b%2Fc+d?x=%20y&z=%C3%A9+1&empty= HTTP/1.1\r\n");
    req.extend_from_slice(b"Host: example.com:8123\r\n");
    req.extend_from_slice(b"X-Multi: a\r\n");
    req.extend_from_slice(b"User-Agent: conformance/1.0\r\n");
    req.extend_from_slice(b"X-Multi: b, c\r\n");
    req.extend_from_slice(b"X_Under: dropped\r\n");
    req.extend_from_slice(b"X-Under: kept\r\n");
    req.extend_from_slice(b"X-Latin: caf\xe9\r\n");
    req.extend_from_slice(b"\r\n");
    r.get_mut().write_all(&req).unwrap();
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let env = resp.json();
    let want = [
        ("REQUEST_METHOD", "GET"),
        ("SCRIPT_NAME", ""),
        // Percent-decoded (%2F too, like gunicorn), then bytes as latin-1.
        ("PATH_INFO", "/caf\u{c3}\u{a9}/a b/c+d"),
        // Raw, not decoded.
        ("QUERY_STRING", "x=%20y&z=%C3%A9+1&empty="),
        ("SERVER_NAME", "example.com"),
        ("SERVER_PORT", "8123"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("HTTP_HOST", "example.com:8123"),
        ("HTTP_USER_AGENT", "conformance/1.0"),
        ("HTTP_X_MULTI", "a, b, c"),
        // X_Under is dropped (it would alias X-Under), X-Under is kept.
        ("HTTP_X_UNDER", "kept"),
        // Header bytes are latin-1.
        ("HTTP_X_LATIN", "caf\u{e9}"),
        ("wsgi.version", "(1, 0)"),
        ("wsgi.url_scheme", "http"),
        ("wsgi.multiprocess", "True"),
        ("wsgi.multithread", "False"),
        ("wsgi.run_once", "False"),
    ];
    for (key, value) in want {
        assert_eq!(text(&env, key).as_deref(), Some(value), "environ[{key:?}]");
    }
    assert_eq!(
        text(&env, "REMOTE_PORT"),
        Some(local_port.to_string()),
        "REMOTE_PORT is the client's port"
    );
    for key in [
        "CONTENT_TYPE",
        "CONTENT_LENGTH",
        "HTTP_CONTENT_TYPE",
        "HTTP_CONTENT_LENGTH",
    ] {
        assert!(
            !env.contains_key(key),
            "{key} must be absent on a GET without body"
        );
    }
    let under: Vec<&String> = env.keys().filter(|k| k.contains("UNDER")).collect();
    assert_eq!(
        under,
        ["HTTP_X_UNDER"],
        "only the dash header reaches the app"
    );

    let types = env["__types__"].as_object().unwrap();
    for (key, ty) in types {
        // CGI keys are native strings; only dotted (wsgi.*) keys may be other types.
        if !key.contains('.') {
            assert_eq!(ty, "str", "environ[{key:?}] must be a str");
        }
    }
    assert_eq!(types["wsgi.version"], "tuple");
    assert_eq!(types["wsgi.url_scheme"], "str");
    for key in ["wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once"] {
        assert_eq!(types[key], "bool", "{key}");
    }
    assert_eq!(
        env["__input_api__"],
        Value::Bool(true),
        "wsgi.input is file-like"
    );
    assert_eq!(
        env["__errors_api__"],
        Value::Bool(true),
        "wsgi.errors is writable"
    );
}

#[test]
fn environ_content_type_and_length_are_present_only_when_sent() {
    let s = Server::start(ENVIRON_APP, &[]);
    let get = s.get("/").json();
    for key in ["CONTENT_TYPE", "CONTENT_LENGTH"] {
        assert!(
            !get.contains_key(key),
            "{key} on a GET without them: {get:?}"
        );
    }

    let body = b"a=1&b=two+2";
    let post = request(
        s.addr(),
        "POST",
        "/form",
        &[(
            "Content-Type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )],
        body,
    )
    .json();
    assert_eq!(text(&post, "REQUEST_METHOD").as_deref(), Some("POST"));
    assert_eq!(
        text(&post, "CONTENT_TYPE").as_deref(),
        Some("application/x-www-form-urlencoded; charset=utf-8")
    );
    assert_eq!(text(&post, "CONTENT_LENGTH"), Some(body.len().to_string()));
    assert_eq!(text(&post, "__body__").as_deref(), Some("a=1&b=two+2"));
    for key in ["HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"] {
        assert!(!post.contains_key(key), "{key} must not be in the environ");
    }

    // Host without a port: SERVER_PORT is the scheme's default, like gunicorn.
    let r = request(s.addr(), "GET", "/", &[("Host", "example.org")], b"").json();
    assert_eq!(text(&r, "SERVER_NAME").as_deref(), Some("example.org"));
    assert_eq!(text(&r, "SERVER_PORT").as_deref(), Some("80"));
}

#[test]
fn environ_request_method_is_passed_verbatim() {
    let s = Server::start(ENVIRON_APP, &[]);
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE"] {
        let r = request(s.addr(), method, "/m", &[], b"x");
        assert_eq!(r.status, 200, "{method}: {}", r.text());
        assert_eq!(text(&r.json(), "REQUEST_METHOD").as_deref(), Some(method));
    }
}

#[test]
fn a_trusted_proxy_sets_the_client_address_and_url_scheme() {
    let proxied: &[(&str, &str)] = &[
        ("Host", "example.com"),
        ("X-Forwarded-For", "203.0.113.9"),
        ("X-Forwarded-Proto", "https"),
    ];
    // The test client is 127.0.0.1, trusted by default (like gunicorn's
    // forwarded_allow_ips and uvicorn's).
    let s = Server::start(ENVIRON_APP, &[]);
    let env = request(s.addr(), "GET", "/p", proxied, b"").json();
    assert_eq!(text(&env, "REMOTE_ADDR").as_deref(), Some("203.0.113.9"));
    assert_eq!(text(&env, "wsgi.url_scheme").as_deref(), Some("https"));
    assert_eq!(text(&env, "SERVER_PORT").as_deref(), Some("443"));
    // Not from a trusted proxy: the headers change nothing.
    let s = Server::start(ENVIRON_APP, &["--forwarded-allow-ips", "10.0.0.0/8"]);
    let env = request(s.addr(), "GET", "/p", proxied, b"").json();
    assert_eq!(text(&env, "REMOTE_ADDR").as_deref(), Some("127.0.0.1"));
    assert_eq!(text(&env, "wsgi.url_scheme").as_deref(), Some("http"));
}

#[test]
fn environ_for_http10_without_host_uses_the_listen_address() {
    let s = Server::start(ENVIRON_APP, &[]);
    let port = s.addr().rsplit(':').next().unwrap().to_string();
    let r = s.raw(b"GET /old?q=1 HTTP/1.0\r\n\r\n", false);
    assert_eq!(r.status, 200, "{}", r.text());
    let env = r.json();
    assert_eq!(text(&env, "SERVER_PROTOCOL").as_deref(), Some("HTTP/1.0"));
    assert_eq!(text(&env, "SERVER_NAME").as_deref(), Some("127.0.0.1"));
    assert_eq!(text(&env, "SERVER_PORT"), Some(port));
    assert_eq!(text(&env, "PATH_INFO").as_deref(), Some("/old"));
    assert_eq!(text(&env, "QUERY_STRING").as_deref(), Some("q=1"));
    assert!(!env.contains_key("HTTP_HOST"));
}

#[test]
fn wsgi_multithread_follows_the_threads_setting() {
    let one = Server::start(ENVIRON_APP, &["--threads", "1"]);
    let four = Server::start(ENVIRON_APP, &["--threads", "4"]);
    let env1 = one.get("/").json();
    let env4 = four.get("/").json();
    assert_eq!(text(&env1, "wsgi.multithread").as_deref(), Some("False"));
    assert_eq!(text(&env4, "wsgi.multithread").as_deref(), Some("True"));
    for env in [&env1, &env4] {
        assert_eq!(text(env, "wsgi.multiprocess").as_deref(), Some("True"));
        assert_eq!(text(env, "wsgi.run_once").as_deref(), Some("False"));
    }
}

#[test]
fn wsgi_errors_is_a_text_stream_that_reaches_the_log() {
    let s = Server::start(ENVIRON_APP, &[]);
    let r = request(s.addr(), "GET", "/", &[("X-Marker", "m-7f3a91")], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    for needle in [
        "wsgi.errors write m-7f3a91",
        "wsgi.errors writelines m-7f3a91",
    ] {
        assert!(
            s.c.log.wait_for(needle, Duration::from_secs(5)).is_some(),
            "{needle:?} is not in corral's log:\n{}",
            s.c.log.text()
        );
    }
}

// ------------------------------------------------------------------ wsgi.input

const INPUT_APP: &str = r#"
import json

def run(mode, inp):
    if mode == "read":
        return [inp.read()]
    if mode == "read_n":
        out = []
        while True:
            c = inp.read(5)
            if not c:
                return out
            out.append(c)
    if mode == "readline":
        out = []
        while True:
            line = inp.readline()
            if not line:
                return out
            out.append(line)
    if mode == "readline_limit":
        out = []
        while True:
            line = inp.readline(4)
            if not line:
                return out
            out.append(line)
    if mode == "readlines":
        return inp.readlines()
    if mode == "iter":
        return [line for line in inp]
    if mode == "mixed":
        out = [inp.read(3), inp.readline(), inp.readline(2), inp.read(4)]
        out += inp.readlines()
        out += [inp.read(), inp.readline(), inp.read(10), inp.read()]
        return out
    raise ValueError(mode)

def app(environ, start_response):
    parts = run(environ["PATH_INFO"].strip("/"), environ["wsgi.input"])
    assert all(type(p) is bytes for p in parts), parts
    data = json.dumps({
        "parts": [p.decode("latin-1") for p in parts],
        "content_length": environ.get("CONTENT_LENGTH"),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(data)))])
    return [data]
"#;

const LINES: &[u8] = b"line one\nline two\n\nlast-no-newline";

/// What each mode of INPUT_APP returns for LINES, as io.BytesIO does.
fn input_expectations() -> Vec<(&'static str, Vec<String>)> {
    let v = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let body = std::str::from_utf8(LINES).unwrap();
    let lines = v(&["line one\n", "line two\n", "\n", "last-no-newline"]);
    vec![
        ("read", vec![body.to_string()]),
        (
            "read_n",
            LINES
                .chunks(5)
                .map(|c| String::from_utf8(c.to_vec()).unwrap())
                .collect(),
        ),
        ("readline", lines.clone()),
        (
            "readline_limit",
            v(&[
                "line", " one", "\n", "line", " two", "\n", "\n", "last", "-no-", "newl", "ine",
            ]),
        ),
        ("readlines", lines.clone()),
        ("iter", lines),
        (
            "mixed",
            v(&[
                "lin",
                "e one\n",
                "li",
                "ne t",
                "wo\n",
                "\n",
                "last-no-newline",
                "",
                "",
                "",
                "",
            ]),
        ),
    ]
}

#[test]
fn wsgi_input_reads_a_content_length_body_every_way() {
    let s = Server::start(INPUT_APP, &[]);
    for (mode, want) in input_expectations() {
        let r = request(s.addr(), "POST", &format!("/{mode}"), &[], LINES);
        assert_eq!(r.status, 200, "{mode}: {}", r.text());
        let got = r.json();
        assert_eq!(strings(&got["parts"]), want, "wsgi.input {mode}");
        assert_eq!(got["content_length"], Value::from(LINES.len().to_string()));
    }
}

#[test]
fn wsgi_input_reads_a_chunked_body_dechunked_every_way() {
    let s = Server::start(INPUT_APP, &[]);
    for (mode, want) in input_expectations() {
        let mut req = format!(
            "POST /{mode} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        req.extend_from_slice(&chunked(LINES, 3));
        let r = s.raw(&req, false);
        assert_eq!(r.status, 200, "{mode}: {}", r.text());
        let got = r.json();
        assert_eq!(strings(&got["parts"]), want, "chunked wsgi.input {mode}");
        assert!(
            got["content_length"].is_null() || got["content_length"] == "",
            "a chunked request has no CONTENT_LENGTH: {:?}",
            got["content_length"]
        );
    }
}

#[test]
fn wsgi_input_readline_waits_for_slowly_arriving_chunks() {
    let s = Server::start(INPUT_APP, &[]);
    let mut r = s.connect();
    r.get_mut()
        .write_all(
            b"POST /readline HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .unwrap();
    for piece in LINES.chunks(4) {
        let mut c = format!("{:x}\r\n", piece.len()).into_bytes();
        c.extend_from_slice(piece);
        c.extend_from_slice(b"\r\n");
        r.get_mut().write_all(&c).unwrap();
        std::thread::sleep(Duration::from_millis(40));
    }
    r.get_mut().write_all(b"0\r\n\r\n").unwrap();
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        strings(&resp.json()["parts"]),
        ["line one\n", "line two\n", "\n", "last-no-newline"]
    );
}

/// Echoes the body: /read with one read() and a one-piece list, /pieces with
/// read(65536) calls and a streamed (non-list) iterable.
const ECHO_APP: &str = r#"
def app(environ, start_response):
    inp = environ["wsgi.input"]
    if environ["PATH_INFO"] == "/pieces":
        pieces = []
        while True:
            c = inp.read(65536)
            if not c:
                break
            assert len(c) <= 65536
            pieces.append(c)
        body = iter(pieces)
    else:
        pieces = [inp.read()]
        body = pieces
    total = sum(len(p) for p in pieces)
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(total)),
                              ("X-Reads", str(len(pieces)))])
    return body
"#;

fn big_body(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| ((i.wrapping_mul(7919) % 251) as u8) ^ ((i >> 13) as u8))
        .collect()
}

#[test]
fn a_5_mib_body_is_echoed_intact_with_content_length_and_chunked() {
    let s = Server::start(ECHO_APP, &[]);
    let body = big_body(5 * 1024 * 1024);
    for path in ["/read", "/pieces"] {
        let r = request(s.addr(), "POST", path, &[], &body);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.body.len(), body.len(), "{path}: echoed length");
        assert!(
            r.body == body,
            "{path}: the echoed body differs from the one sent"
        );
        if path == "/pieces" {
            let reads: usize = r.header("x-reads").unwrap().parse().unwrap();
            assert!(
                reads >= 80,
                "read(65536) returned more than asked? {reads} reads"
            );
        }
    }
    // The same body, chunked in 100000-byte chunks.
    for path in ["/read", "/pieces"] {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        req.extend_from_slice(&chunked(&body, 100_000));
        let r = s.raw(&req, false);
        assert_eq!(r.status, 200, "chunked {path}");
        assert_eq!(r.body.len(), body.len(), "chunked {path}: echoed length");
        assert!(r.body == body, "chunked {path}: the echoed body differs");
    }
}

#[test]
fn expect_100_continue_gets_the_interim_response_before_the_body_is_sent() {
    let s = Server::start(INPUT_APP, &[]);
    let mut r = s.connect();
    r.get_mut()
        .write_all(
            format!(
                "POST /read HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\
                 Expect: 100-continue\r\n\r\n",
                LINES.len()
            )
            .as_bytes(),
        )
        .unwrap();
    let interim = read_response(&mut r, false).expect("an interim response before the body");
    assert_eq!(interim.status, 100, "{interim:?}");
    assert_eq!(interim.version, "HTTP/1.1");
    r.get_mut().write_all(LINES).unwrap();
    let fin = read_response(&mut r, false).expect("the final response");
    assert_eq!(fin.status, 200, "{}", fin.text());
    assert_eq!(
        strings(&fin.json()["parts"]),
        [std::str::from_utf8(LINES).unwrap()]
    );
}

// ------------------------------------------------------------------ start_response

const EXC_INFO_APP: &str = r#"
import sys

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/before-body":
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-First", "yes")])
        try:
            raise RuntimeError("failed after start_response")
        except RuntimeError:
            body = b"custom error page"
            start_response("500 Internal Server Error",
                           [("Content-Type", "text/plain"),
                            ("Content-Length", str(len(body)))],
                           sys.exc_info())
            return [body]
    if path == "/after-body":
        def gen():
            yield b"first-chunk;"
            try:
                raise RuntimeError("failed-after-headers-sent")
            except RuntimeError:
                # Headers are out: start_response must re-raise.
                start_response("500 Internal Server Error",
                               [("Content-Type", "text/plain")], sys.exc_info())
            yield b"must-not-be-sent"
        start_response("200 OK", [("Content-Type", "text/plain")])
        return gen()
    body = b"ok"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [body]
"#;

#[test]
fn start_response_with_exc_info_before_the_body_replaces_the_status() {
    let s = Server::start(EXC_INFO_APP, &[]);
    let r = s.get("/before-body");
    assert_eq!(r.status, 500, "{r:?}");
    assert_eq!(r.text(), "custom error page");
    assert_eq!(
        r.header("x-first"),
        None,
        "headers of the replaced start_response leaked"
    );
    assert_eq!(s.get("/").status, 200);
}

/// Once the head is out, start_response(..., exc_info) re-raises and the
/// server aborts the response: the client must not see it as complete
/// (a truncated 200, or nothing at all), nor anything the app tried to send
/// after the error.
#[test]
fn start_response_with_exc_info_after_the_head_was_sent_aborts_the_response() {
    let s = Server::start(EXC_INFO_APP, &[]);
    let mut r = s.connect();
    send_request(r.get_mut(), "GET", "/after-body", &[], b"");
    let mut raw = Vec::new();
    match r.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the aborted response's connection was not closed: {e}"),
    }
    let raw_text = String::from_utf8_lossy(&raw);
    if !raw.is_empty() {
        assert!(raw_text.starts_with("HTTP/1.1 200"), "{raw_text:?}");
    }
    assert!(!raw_text.contains("must-not-be-sent"), "{raw_text:?}");
    assert!(
        !raw.ends_with(b"0\r\n\r\n"),
        "an aborted response must not look complete to the client: {raw_text:?}"
    );
    assert!(
        s.c.log
            .wait_for("failed-after-headers-sent", Duration::from_secs(5))
            .is_some(),
        "the error is logged:\n{}",
        s.c.log.text()
    );
    assert_eq!(s.get("/").status, 200, "the worker keeps serving");
}

const WRITE_APP: &str = r#"
def app(environ, start_response):
    headers = [("Content-Type", "text/plain")]
    if environ["PATH_INFO"] == "/with-length":
        headers.append(("Content-Length", str(len(b"written-1;written-2;returned-1;end"))))
    write = start_response("200 OK", headers)
    write(b"written-1;")
    write(b"written-2;")
    return [b"returned-1;", b"end"]
"#;

#[test]
fn the_legacy_write_callable_sends_its_data_before_the_iterable() {
    let s = Server::start(WRITE_APP, &[]);
    for path in ["/chunked", "/with-length"] {
        let r = s.get(path);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.text(), "written-1;written-2;returned-1;end", "{path}");
    }
    // And on HTTP/1.0, where the body ends at the close.
    let mut r = s.connect();
    r.get_mut()
        .write_all(b"GET /chunked HTTP/1.0\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!(resp.text(), "written-1;written-2;returned-1;end");
}

#[test]
fn status_reason_and_repeated_response_headers_are_preserved() {
    let s = Server::start(
        r#"
def app(environ, start_response):
    start_response("299 Custom Reason", [
        ("Content-Type", "text/plain"),
        ("Set-Cookie", "a=1; Path=/"),
        ("Set-Cookie", "b=2; Path=/"),
        ("Content-Length", "2"),
    ])
    return [b"ok"]
"#,
        &[],
    );
    let r = s.get("/");
    assert_eq!((r.status, r.reason.as_str()), (299, "Custom Reason"));
    let cookies: Vec<&str> = r
        .headers
        .iter()
        .filter(|(k, _)| k == "set-cookie")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(cookies, ["a=1; Path=/", "b=2; Path=/"]);
}

// ------------------------------------------------------------------ close()

const CLOSE_APP: &str = r#"
import json

CLOSED = []

class Body:
    def __init__(self, tag):
        self.tag = tag
        self.n = 0
    def __iter__(self):
        return self
    def __next__(self):
        self.n += 1
        if self.tag == "endless":
            if self.n > 4000:  # 250 MiB: only reached when nothing stops it
                raise StopIteration
            return b"x" * 65536
        if self.tag == "raises" and self.n == 2:
            raise RuntimeError("iteration failed")
        if self.n > 1:
            raise StopIteration
        return b"body of " + self.tag.encode()
    def close(self):
        CLOSED.append([self.tag, self.n])

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/closed":
        data = json.dumps(CLOSED).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(data)))])
        return [data]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Body(path.strip("/"))
"#;

/// Polls /closed until close() was called for `tag`; returns the count of
/// chunks produced when it was.
fn wait_closed(s: &Server, tag: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = s.get("/closed");
        assert_eq!(r.status, 200);
        let list: Vec<Value> = serde_json::from_slice(&r.body).unwrap();
        if let Some(entry) = list.iter().find(|e| e[0] == tag) {
            return entry[1].as_u64().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "close() was never called for {tag:?}; closed: {list:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn close_is_called_on_the_returned_iterable() {
    let s = Server::start(CLOSE_APP, &["--threads", "1"]);
    let r = s.get("/first");
    assert_eq!(r.text(), "body of first");
    // One worker, one thread: the next request runs after close().
    let r = s.get("/closed");
    let list: Vec<Value> = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        list,
        [serde_json::json!(["first", 2])],
        "close() after the response"
    );

    let r = request(s.addr(), "HEAD", "/head", &[], b"");
    assert_eq!(r.status, 200);
    wait_closed(&s, "head");

    // An iterable that fails half way is closed too.
    let mut c = s.connect();
    send_request(c.get_mut(), "GET", "/raises", &[], b"");
    let _ = read_response(&mut c, false);
    wait_closed(&s, "raises");
}

#[test]
fn close_is_called_when_the_client_disconnects_mid_stream() {
    let s = Server::start(CLOSE_APP, &["--threads", "2"]);
    let mut r = s.connect();
    send_request(r.get_mut(), "GET", "/endless", &[], b"");
    let head = read_response(&mut r, true).unwrap();
    assert_eq!(head.status, 200);
    let mut got = vec![0; 200_000];
    r.read_exact(&mut got).unwrap();
    r.get_ref().shutdown(std::net::Shutdown::Both).unwrap();
    drop(r);
    let produced = wait_closed(&s, "endless");
    assert!(
        produced < 4000,
        "the app ran to the end ({produced} chunks) instead of being stopped"
    );
}

// ------------------------------------------------------------------ HEAD

const HEAD_APP: &str = r#"
def app(environ, start_response):
    if environ["PATH_INFO"] == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Kind", "stream")])
        return (c for c in [b"a", b"b", b"c"])
    body = b"hello, head"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body))),
                              ("X-Kind", "list")])
    return [body]
"#;

#[test]
fn head_has_the_headers_of_get_and_no_body() {
    let s = Server::start(HEAD_APP, &[]);
    let mut r = s.connect();
    send_request(r.get_mut(), "GET", "/", &[], b"");
    let get = read_response(&mut r, false).unwrap();
    assert_eq!(get.text(), "hello, head");
    send_request(r.get_mut(), "HEAD", "/", &[], b"");
    let head = read_response(&mut r, true).unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("11"), "{head:?}");
    assert_eq!(headers_without_date(&head), headers_without_date(&get));

    // A streamed response to HEAD sends no body either.
    send_request(r.get_mut(), "HEAD", "/stream", &[], b"");
    let head = read_response(&mut r, true).unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("x-kind"), Some("stream"));

    // No stray body bytes: the next responses on the connection parse.
    send_request(r.get_mut(), "GET", "/stream", &[], b"");
    let next = read_response(&mut r, false).unwrap();
    assert_eq!(
        (next.status, next.text().as_str()),
        (200, "abc"),
        "{next:?}"
    );
    send_request(r.get_mut(), "GET", "/", &[], b"");
    let next = read_response(&mut r, false).unwrap();
    assert_eq!((next.status, next.text().as_str()), (200, "hello, head"));
}

// ------------------------------------------------------------------ connections

const PATH_APP: &str = r#"
def app(environ, start_response):
    if environ["PATH_INFO"].startswith("/stream"):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (c for c in [b"streamed ", environ["PATH_INFO"].encode()])
    body = ("path " + environ["PATH_INFO"]).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
"#;

#[test]
fn http10_without_keep_alive_closes_after_the_response() {
    let s = Server::start(PATH_APP, &[]);
    let mut r = s.connect();
    r.get_mut().write_all(b"GET /one HTTP/1.0\r\n\r\n").unwrap();
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!((resp.status, resp.text().as_str()), (200, "path /one"));
    expect_closed(&mut r, "HTTP/1.0");

    // A streamed response to HTTP/1.0 is not chunked: it ends at the close.
    let mut r = s.connect();
    r.get_mut()
        .write_all(b"GET /stream HTTP/1.0\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!(
        resp.header("transfer-encoding"),
        None,
        "no chunked for HTTP/1.0"
    );
    assert_eq!(resp.text(), "streamed /stream");
}

#[test]
fn http10_with_keep_alive_keeps_the_connection() {
    let s = Server::start(PATH_APP, &[]);
    let mut r = s.connect();
    for path in ["/a", "/b"] {
        r.get_mut()
            .write_all(format!("GET {path} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").as_bytes())
            .unwrap();
        let resp = read_response(&mut r, false).expect("response on the kept connection");
        assert_eq!(resp.text(), format!("path {path}"));
        assert!(
            resp.header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("keep-alive")),
            "{resp:?}"
        );
    }
}

#[test]
fn http11_keep_alive_serves_three_requests_on_one_connection() {
    let s = Server::start(PATH_APP, &[]);
    let mut r = s.connect();
    for path in ["/1", "/stream-2", "/3"] {
        send_request(r.get_mut(), "GET", path, &[], b"");
        let resp = read_response(&mut r, false).expect("response on the same connection");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.version, "HTTP/1.1");
        let want = if path.starts_with("/stream") {
            format!("streamed {path}")
        } else {
            format!("path {path}")
        };
        assert_eq!(resp.text(), want);
        assert_ne!(resp.header("connection"), Some("close"));
    }
    // Pipelined: three requests in one write, three responses in order.
    let mut batch = Vec::new();
    for path in ["/p1", "/stream-p2", "/p3"] {
        batch.extend_from_slice(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    }
    r.get_mut().write_all(&batch).unwrap();
    for want in ["path /p1", "streamed /stream-p2", "path /p3"] {
        let resp = read_response(&mut r, false).expect("pipelined response");
        assert_eq!(resp.text(), want);
    }
}

#[test]
fn http11_connection_close_closes_after_the_response() {
    let s = Server::start(PATH_APP, &[]);
    for path in ["/x", "/stream-x"] {
        let mut r = s.connect();
        send_request(r.get_mut(), "GET", path, &[("Connection", "close")], b"");
        let resp = read_response(&mut r, false).unwrap();
        assert_eq!(resp.status, 200);
        assert!(resp.text().ends_with(path), "{}", resp.text());
        assert_eq!(resp.header("connection"), Some("close"), "{resp:?}");
        expect_closed(&mut r, "Connection: close");
    }
}

// ------------------------------------------------------------------ wsgiref.validate

const VALIDATED_APP: &str = r#"
import warnings
warnings.simplefilter("error")  # any WSGIWarning is an exception, hence a 500
from wsgiref.validate import validator

def inner(environ, start_response):
    path = environ["PATH_INFO"]
    inp = environ["wsgi.input"]
    environ["wsgi.errors"].write("validated %s %s\n" % (environ["REQUEST_METHOD"], path))
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written;")
        return [b"returned"]
    if path == "/generator":
        start_response("200 OK", [("Content-Type", "text/plain")])
        def gen():
            yield b"gen-a;"
            yield b"gen-b"
        return gen()
    if path == "/query":
        body = environ["QUERY_STRING"].encode("latin-1")
    elif path == "/read":
        body = inp.read(int(environ["CONTENT_LENGTH"]))
    elif path == "/pieces":
        parts = []
        while True:
            c = inp.read(4)
            if not c:
                break
            parts.append(c)
        body = b"|".join(parts)
    elif path == "/readline":
        parts = []
        while True:
            line = inp.readline()
            if not line:
                break
            parts.append(line)
        body = b"|".join(parts)
    elif path == "/readline-limit":
        parts = []
        while True:
            line = inp.readline(3)
            if not line:
                break
            parts.append(line)
        body = b"|".join(parts)
    elif path == "/readlines":
        body = b"|".join(inp.readlines())
    elif path == "/iter":
        body = b"|".join(line for line in inp)
    else:
        body = b"unknown path"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]

app = validator(inner)
"#;

#[test]
fn an_app_wrapped_in_wsgiref_validator_sees_no_violation() {
    let s = Server::start(VALIDATED_APP, &[]);
    let body: &[u8] = b"ab\ncdefg\n\nhij";
    let post = |path: &str| request(s.addr(), "POST", path, &[], body);
    let mut chunked_req =
        b"POST /readline HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    chunked_req.extend_from_slice(&chunked(body, 2));
    let cases: Vec<(&str, Response, &str)> = vec![
        ("GET /query", s.get("/query?a=1&b=%20c"), "a=1&b=%20c"),
        ("GET /write", s.get("/write"), "written;returned"),
        ("GET /generator", s.get("/generator"), "gen-a;gen-b"),
        ("POST /read", post("/read"), "ab\ncdefg\n\nhij"),
        ("POST /pieces", post("/pieces"), "ab\nc|defg|\n\nhi|j"),
        ("POST /readline", post("/readline"), "ab\n|cdefg\n|\n|hij"),
        (
            "POST /readline-limit",
            post("/readline-limit"),
            "ab\n|cde|fg\n|\n|hij",
        ),
        ("POST /readlines", post("/readlines"), "ab\n|cdefg\n|\n|hij"),
        ("POST /iter", post("/iter"), "ab\n|cdefg\n|\n|hij"),
        (
            "POST /readline (chunked)",
            s.raw(&chunked_req, false),
            "ab\n|cdefg\n|\n|hij",
        ),
        (
            "POST /read (empty)",
            request(s.addr(), "POST", "/read", &[("Content-Length", "0")], b""),
            "",
        ),
    ];
    for (what, r, want) in cases {
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, want),
            "{what}; log:\n{}",
            s.c.log.text()
        );
    }
    let head = request(s.addr(), "HEAD", "/query?x=1", &[], b"");
    assert_eq!(head.status, 200, "HEAD; log:\n{}", s.c.log.text());
    assert_eq!(head.header("content-length"), Some("3"));
    let get = s.get("/query?x=1");
    assert_eq!(headers_without_date(&head), headers_without_date(&get));

    // The validator prints this when the server never calls close().
    assert!(
        s.c.log
            .wait_for("validated GET /query", Duration::from_secs(2))
            .is_some()
    );
    // An absence is checked: the validator's warning would come when the
    // iterable is collected, just after the request; a short wait for it.
    std::thread::sleep(Duration::from_millis(200));
    let log = s.c.log.text();
    assert!(!log.contains("without being closed"), "{log}");
    assert!(!log.contains("Traceback"), "{log}");
}

// ------------------------------------------------------------------ errors

const ERROR_APP: &str = r#"
import os

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/raise":
        raise ValueError("boom-before-start-response")
    if path == "/raise-in-iter":
        start_response("200 OK", [("Content-Type", "text/plain")])
        def gen():
            raise KeyError("boom-in-first-iteration")
            yield b""
        return gen()
    if path == "/str-body":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ["a str is not bytes"]
    if path == "/twice":
        start_response("200 OK", [("Content-Type", "text/plain")])
        start_response("201 Created", [("Content-Type", "text/plain")])
        return [b"start_response twice without exc_info"]
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
"#;

#[test]
fn an_app_error_before_the_head_is_a_500_with_the_traceback_logged() {
    let s = Server::start(ERROR_APP, &[]);
    let pid = s.get("/").text();
    for (path, needle) in [
        ("/raise", "boom-before-start-response"),
        ("/raise-in-iter", "boom-in-first-iteration"),
        ("/str-body", "TypeError"),
        ("/twice", "start_response"),
    ] {
        let r = s.get(path);
        assert_eq!(r.status, 500, "{path}: {r:?}");
        assert!(
            r.text().contains("Internal Server Error"),
            "{path}: {}",
            r.text()
        );
        assert!(
            s.c.log.wait_for(needle, Duration::from_secs(5)).is_some(),
            "{path}: {needle:?} not logged:\n{}",
            s.c.log.text()
        );
        let next = s.get("/");
        assert_eq!(next.status, 200, "after {path}");
        assert_eq!(
            next.text(),
            pid,
            "after {path}: the same worker keeps serving"
        );
    }
    assert!(
        s.c.log
            .wait_for("Traceback", Duration::from_secs(1))
            .is_some()
    );
}

// ------------------------------------------------------------------ streaming

const GENERATOR_APP: &str = r#"
import time

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    if environ["PATH_INFO"] == "/slow":
        def slow():
            yield b"first;"
            time.sleep(1.5)
            yield b"second"
        return slow()
    def gen():
        for i in range(10):
            yield ("chunk-%d;" % i).encode()
        yield b""  # an empty chunk must not end the response
        yield b"last"
    return gen()
"#;

#[test]
fn a_generator_app_streams_all_chunks_with_chunked_encoding() {
    let s = Server::start(GENERATOR_APP, &[]);
    let r = s.get("/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), None);
    assert!(
        r.header("transfer-encoding")
            .is_some_and(|v| v.contains("chunked")),
        "{r:?}"
    );
    let want: String = (0..10).map(|i| format!("chunk-{i};")).collect::<String>() + "last";
    assert_eq!(r.text(), want);

    // Each chunk goes out when it is yielded, not at the end.
    let mut c = s.connect();
    let t0 = Instant::now();
    send_request(c.get_mut(), "GET", "/slow", &[], b"");
    let head = read_response(&mut c, true).unwrap();
    assert_eq!(head.status, 200);
    let mut first = read_chunk(&mut c);
    while first.is_empty() {
        first = read_chunk(&mut c);
    }
    let waited = t0.elapsed();
    assert_eq!(first, b"first;");
    assert!(
        waited < Duration::from_millis(1000),
        "the first chunk came after {waited:?}: it was held back"
    );
    let mut rest = Vec::new();
    loop {
        let chunk = read_chunk(&mut c);
        if chunk.is_empty() {
            break;
        }
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(rest, b"second");
}

// ------------------------------------------------------------------ threads

const SLEEP_APP: &str = r#"
import threading, time

def app(environ, start_response):
    time.sleep(1)
    body = str(threading.get_ident()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
"#;

#[test]
fn one_worker_with_four_threads_runs_four_requests_at_once() {
    let s = Server::start(SLEEP_APP, &["--threads", "4"]);
    let t0 = Instant::now();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let addr = s.addr().to_string();
            std::thread::spawn(move || request(&addr, "GET", "/", &[], b""))
        })
        .collect();
    let mut threads = std::collections::HashSet::new();
    for h in handles {
        let r = h.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        threads.insert(r.text());
    }
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "4 requests of 1 s on 4 threads took {took:?}: they did not run concurrently"
    );
    assert_eq!(
        threads.len(),
        4,
        "4 different threads served them: {threads:?}"
    );
}

// ------------------------------------------------------------------ Content-Length from the app

const LYING_LENGTH_APP: &str = r#"
def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/ok":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    if path == "/generator":
        return (c for c in [b"hel", b"lo wor", b"ld"])
    return [b"hello world"]
"#;

/// PEP 3333: "the server should not transmit more bytes to the client than
/// the header allows" (gunicorn truncates). Extra bytes on a keep-alive
/// connection would be read as the start of the next response.
fn assert_body_capped_at_content_length(path: &str) {
    let s = Server::start(LYING_LENGTH_APP, &[]);
    let mut r = s.connect();
    send_request(r.get_mut(), "GET", path, &[], b"");
    let first = read_response(&mut r, false).expect("a response to the over-long body");
    assert_eq!((first.status, first.text().as_str()), (200, "hello"));
    // The connection now either carries a clean next response or is
    // closed; never the 6 bytes the header did not allow.
    r.get_mut()
        .write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        .ok();
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(0) => {}
        Ok(_) => assert!(
            line.starts_with("HTTP/1.1 200"),
            "bytes beyond Content-Length reached the client: {line:?}"
        ),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{e}"),
    }
    assert_eq!(s.get("/ok").text(), "ok", "corral keeps serving");
}

#[test]
fn the_app_content_length_caps_a_list_body() {
    assert_body_capped_at_content_length("/list");
}

#[test]
fn the_app_content_length_caps_a_streamed_body() {
    assert_body_capped_at_content_length("/generator");
}

// ------------------------------------------------------------------ extensions gunicorn users rely on

/// gunicorn sets wsgi.input_terminated; werkzeug (Flask) reads a body that
/// has no Content-Length, such as a chunked one, only when it is set, and
/// sees an empty body otherwise.
#[test]
fn flask_reads_a_chunked_request_body() {
    let s = Server::start(
        r#"
from flask import Flask, request

app = Flask(__name__)

@app.post("/echo")
def echo():
    return request.get_data()
"#,
        &[],
    );
    let body = b"chunked body for flask\nsecond line";
    let r = request(s.addr(), "POST", "/echo", &[], body);
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &body[..]),
        "Content-Length body"
    );
    let mut req =
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(&chunked(body, 7));
    let r = s.raw(&req, false);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text(),
        String::from_utf8_lossy(body),
        "Flask saw a different body for a chunked request"
    );
}

#[test]
fn wsgi_file_wrapper_sends_a_file() {
    let s = Server::start(
        r#"
import os

def app(environ, start_response):
    path = os.path.join(os.path.dirname(__file__), "data.bin")
    with open(path, "wb") as f:
        f.write(bytes(range(256)) * 1000)
    f = open(path, "rb")
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(256 * 1000))])
    return environ["wsgi.file_wrapper"](f, 8192)
"#,
        &[],
    );
    let r = s.get("/");
    assert_eq!(r.status, 200);
    let want: Vec<u8> = (0..1000).flat_map(|_| 0..=255u8).collect();
    assert!(
        r.body == want,
        "the file arrived altered ({} bytes)",
        r.body.len()
    );
}

// ------------------------------------------------------------------ response heads

/// Reads a response head as raw bytes (header values may be latin-1).
fn read_raw_head(r: &mut BufReader<TcpStream>) -> Vec<u8> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let n = r.read_until(b'\n', &mut head).expect("response head");
        assert!(n > 0, "connection closed in the head: {head:?}");
    }
    head
}

#[test]
fn response_header_values_are_latin1_and_crlf_injection_is_refused() {
    let s = Server::start(
        r#"
def app(environ, start_response):
    if environ["PATH_INFO"] == "/inject":
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("X-Evil", "a\r\nX-Injected: yes")])
        return [b"injected"]
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("X-Latin", "caf\xe9"), ("Content-Length", "2")])
    return [b"ok"]
"#,
        &[],
    );
    let mut r = s.connect();
    send_request(r.get_mut(), "GET", "/latin", &[], b"");
    let head = read_raw_head(&mut r);
    let needle = b"x-latin: caf\xe9\r\n";
    assert!(
        head.to_ascii_lowercase()
            .windows(needle.len())
            .any(|w| w == needle),
        "the latin-1 value is not on the wire as one byte: {:?}",
        String::from_utf8_lossy(&head)
    );

    let r = s.get("/inject");
    assert_eq!(r.header("x-injected"), None, "header injection: {r:?}");
    assert_eq!(
        r.status, 500,
        "an invalid header value is an app error: {r:?}"
    );
    assert_ne!(r.text(), "injected");
}

#[test]
fn empty_bodies_and_bodyless_statuses_keep_the_connection_usable() {
    let s = Server::start(
        r#"
def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/empty-list":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return []
    if path == "/empty-generator":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (c for c in [])
    if path == "/204":
        start_response("204 No Content", [])
        return []
    if path == "/304":
        start_response("304 Not Modified", [("ETag", '"v1"')])
        return [b""]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
    return [b"next"]
"#,
        &[],
    );
    let mut r = s.connect();
    for (path, status) in [
        ("/empty-list", 200),
        ("/empty-generator", 200),
        ("/204", 204),
        ("/304", 304),
    ] {
        send_request(r.get_mut(), "GET", path, &[], b"");
        let resp = read_response(&mut r, false).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(resp.status, status, "{path}: {resp:?}");
        assert!(resp.body.is_empty(), "{path}: {resp:?}");
        send_request(r.get_mut(), "GET", "/", &[], b"");
        let next = read_response(&mut r, false).unwrap_or_else(|e| panic!("after {path}: {e}"));
        assert_eq!(
            (next.status, next.text().as_str()),
            (200, "next"),
            "after {path}"
        );
    }
}

// ------------------------------------------------------------------ request framing

#[test]
fn absolute_form_request_target_gives_path_and_query() {
    let s = Server::start(ENVIRON_APP, &[]);
    let r = s.raw(
        b"GET http://example.com:81/abs/p%20q?x=1 HTTP/1.1\r\nHost: example.com:81\r\n\r\n",
        false,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let env = r.json();
    assert_eq!(text(&env, "PATH_INFO").as_deref(), Some("/abs/p q"));
    assert_eq!(text(&env, "QUERY_STRING").as_deref(), Some("x=1"));
    assert_eq!(text(&env, "SERVER_NAME").as_deref(), Some("example.com"));
    assert_eq!(text(&env, "SERVER_PORT").as_deref(), Some("81"));
}

#[test]
fn wsgi_input_ends_at_content_length_on_pipelined_requests() {
    let s = Server::start(
        r#"
def app(environ, start_response):
    inp = environ["wsgi.input"]
    body = inp.read(1 << 20)  # far more than was sent: must not block
    assert inp.read(10) == b""
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
"#,
        &[],
    );
    let mut r = s.connect();
    let mut batch = Vec::new();
    for body in ["first", "second body", ""] {
        batch.extend_from_slice(
            format!(
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
    r.get_mut().write_all(&batch).unwrap();
    for want in ["first", "second body", ""] {
        let resp = read_response(&mut r, false).expect("pipelined response");
        assert_eq!((resp.status, resp.text().as_str()), (200, want));
    }
}

/// An app may answer without reading the body (a 401 or 413 of its own).
/// The client gets that response; afterwards the connection either serves
/// the next request (gunicorn drains the unread body) or the response said
/// `Connection: close`. A keep-alive connection closed without notice makes
/// pooled clients (requests, urllib3) fail their next request on it.
#[test]
fn an_unread_request_body_does_not_break_the_response_or_the_connection() {
    let s = Server::start(PATH_APP, &[]);
    let body = big_body(1024 * 1024);
    let (sent_first, rest) = body.split_at(256 * 1024);
    let mut r = s.connect();
    r.get_mut()
        .write_all(
            format!(
                "POST /ignored HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
    r.get_mut().write_all(sent_first).unwrap();
    let first = read_response(&mut r, false).expect("the response to the unread body");
    assert_eq!(
        (first.status, first.text().as_str()),
        (200, "path /ignored")
    );
    let announced_close = first.header("connection") == Some("close");
    let mut next_req = rest.to_vec();
    next_req.extend_from_slice(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n");
    if let Err(e) = r.get_mut().write_all(&next_req) {
        assert!(
            announced_close,
            "the connection was closed ({e}) without Connection: close"
        );
        return;
    }
    match read_response(&mut r, false) {
        Ok(next) => assert_eq!(
            (next.status, next.text().as_str()),
            (200, "path /after"),
            "{next:?}"
        ),
        Err(e) => assert!(
            announced_close,
            "the connection was closed ({e}) without Connection: close"
        ),
    }
}

#[test]
fn concurrent_uploads_to_one_threaded_worker_each_get_their_own_body() {
    let s = Server::start(ECHO_APP, &["--threads", "4"]);
    let handles: Vec<_> = (0..8u8)
        .map(|i| {
            let addr = s.addr().to_string();
            std::thread::spawn(move || {
                let body: Vec<u8> = big_body(1024 * 1024 + usize::from(i) * 4099)
                    .into_iter()
                    .map(|b| b.wrapping_add(i.wrapping_mul(37)))
                    .collect();
                let path = if i % 2 == 0 { "/pieces" } else { "/read" };
                let r = request(&addr, "POST", path, &[], &body);
                (i, r.status, r.body == body, r.body.len(), body.len())
            })
        })
        .collect();
    for h in handles {
        let (i, status, same, got, sent) = h.join().unwrap();
        assert_eq!(status, 200, "upload {i}");
        assert!(
            same,
            "upload {i}: echoed {got} bytes of {sent}, not its own body"
        );
    }
}
