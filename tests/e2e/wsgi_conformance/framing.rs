//! Response heads and request framing on the wire.

use super::*;

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
    // The target as sent, as gunicorn gives it.
    assert_eq!(
        text(&env, "RAW_URI").as_deref(),
        Some("http://example.com:81/abs/p%20q?x=1")
    );
    assert_eq!(text(&env, "SERVER_NAME").as_deref(), Some("example.com"));
    assert_eq!(text(&env, "SERVER_PORT").as_deref(), Some("81"));
    // The target's host wins over Host (RFC 9112 section 3.2.2).
    let r = s.raw(
        b"GET http://good.example/abs HTTP/1.1\r\nHost: evil.example\r\n\r\n",
        false,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let env = r.json();
    assert_eq!(text(&env, "HTTP_HOST").as_deref(), Some("good.example"));
    assert_eq!(text(&env, "SERVER_NAME").as_deref(), Some("good.example"));
    assert_eq!(text(&env, "SERVER_PORT").as_deref(), Some("80"));
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
