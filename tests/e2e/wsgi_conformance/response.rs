//! `start_response`, `close()` on the returned iterable, and HEAD.

use super::*;

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
/// server aborts the response: the client gets the head and what the app
/// sent before the error (as from gunicorn), then a cut body, never a
/// response that looks complete nor anything the app tried to send after
/// the error.
#[test]
fn start_response_with_exc_info_after_the_head_was_sent_aborts_the_response() {
    let s = Server::start(EXC_INFO_APP, &[]);
    // The bytes before the error were sometimes lost with the head
    // (an empty reply): a few rounds.
    for _ in 0..8 {
        let mut r = s.connect();
        send_request(r.get_mut(), "GET", "/after-body", &[], b"");
        let mut raw = Vec::new();
        match r.read_to_end(&mut raw) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("the aborted response's connection was not closed: {e}"),
        }
        let raw_text = String::from_utf8_lossy(&raw);
        assert!(raw_text.starts_with("HTTP/1.1 200"), "{raw_text:?}");
        assert!(raw_text.contains("first-chunk;"), "{raw_text:?}");
        assert!(!raw_text.contains("must-not-be-sent"), "{raw_text:?}");
        assert!(
            !raw.ends_with(b"0\r\n\r\n"),
            "an aborted response must not look complete to the client: {raw_text:?}"
        );
    }
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

/// The worker remembers the last head it encoded for each status; an app
/// that answers the same status with other headers, or changes a header
/// list it passed before in place, gets the headers it passes now.
#[test]
fn each_response_has_the_headers_passed_for_it_not_the_last_ones() {
    let s = Server::start(
        r#"
SHARED = [["X-Kind", "first"]]
TUPLES = [("X-Kind", "tuple")]

def app(environ, start_response):
    q = environ["QUERY_STRING"]
    if q.startswith("mutate="):
        # The same list object every time, its header changed in place.
        SHARED[0][1] = q[len("mutate="):]
        start_response("200 OK", SHARED)
        return [b""]
    if q == "same":
        start_response("200 OK", TUPLES)
        return [b""]
    start_response("200 OK", [("X-Kind", "fresh"), ("X-Query", q)])
    return [b""]
"#,
        &[],
    );
    assert_each_response_has_its_own_headers(s.addr());
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
