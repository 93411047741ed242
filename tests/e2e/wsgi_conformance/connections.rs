//! Keep-alive and closing, `wsgiref.validate`, and errors an app raises.

use super::*;

// ------------------------------------------------------------------ connections

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
