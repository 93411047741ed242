//! PEP 3333 conformance, as a gunicorn user would check it: each test writes
//! a small WSGI app, serves it with the real corral binary and real Python
//! workers, and asserts what an HTTP client sees on the wire.

use crate::common::*;

mod app_behaviour;
mod connections;
mod environ;
mod framing;
mod input;
mod response;

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
