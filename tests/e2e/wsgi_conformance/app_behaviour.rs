//! Streaming responses, threads, the Content-Length an app sets, and the
//! extensions gunicorn users rely on.

use super::*;

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
