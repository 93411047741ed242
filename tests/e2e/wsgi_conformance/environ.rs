//! The environ a WSGI app sees: every PEP 3333 key, its types and values.

use super::*;

// ------------------------------------------------------------------ environ

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
        // As gunicorn's "gunicorn/27.0.1".
        (
            "SERVER_SOFTWARE",
            concat!("corral/", env!("CARGO_PKG_VERSION")),
        ),
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
        // One worker (-w 1), as gunicorn's `cfg.workers > 1`.
        ("wsgi.multiprocess", "False"),
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

    // Host without a port: SERVER_PORT is the scheme's default, as gunicorn
    // gives it on a Unix socket (on TCP gunicorn gives the address it
    // listens on: README, "WSGI and ASGI").
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
    assert_eq!(text(&env, "HTTPS").as_deref(), Some("on"));
    assert_eq!(text(&env, "SERVER_PORT").as_deref(), Some("443"));
    // The client is the nearest hop that is not a trusted proxy, as under
    // uvicorn: what the client wrote to the left of it (6.6.6.6, passed on
    // by the proxy) is not taken, nor the trusted hop to its right.
    let chain: &[(&str, &str)] = &[("X-Forwarded-For", "6.6.6.6, 203.0.113.9, 127.0.0.1")];
    let env = request(s.addr(), "GET", "/p", chain, b"").json();
    assert_eq!(text(&env, "REMOTE_ADDR").as_deref(), Some("203.0.113.9"));
    // Not from a trusted proxy: the headers change nothing.
    let s = Server::start(ENVIRON_APP, &["--forwarded-allow-ips", "10.0.0.0/8"]);
    let env = request(s.addr(), "GET", "/p", proxied, b"").json();
    assert_eq!(text(&env, "REMOTE_ADDR").as_deref(), Some("127.0.0.1"));
    assert_eq!(text(&env, "wsgi.url_scheme").as_deref(), Some("http"));
    assert_eq!(text(&env, "HTTPS"), None);
}

#[test]
fn gunicorns_x_forwarded_ssl_and_protocol_headers_set_the_scheme_from_a_trusted_proxy() {
    // nginx's `proxy_set_header X-Forwarded-Ssl on;`: an app that insists
    // on https (Django's SECURE_SSL_REDIRECT) must not loop on redirects.
    let s = Server::start(ENVIRON_APP, &[]);
    for header in [("X-Forwarded-Ssl", "on"), ("X-Forwarded-Protocol", "ssl")] {
        let env = request(
            s.addr(),
            "GET",
            "/p",
            &[("Host", "example.com"), header],
            b"",
        )
        .json();
        assert_eq!(
            text(&env, "wsgi.url_scheme").as_deref(),
            Some("https"),
            "{header:?}"
        );
        assert_eq!(text(&env, "HTTPS").as_deref(), Some("on"), "{header:?}");
        assert_eq!(
            text(&env, "SERVER_PORT").as_deref(),
            Some("443"),
            "{header:?}"
        );
    }
    // X-Forwarded-Proto wins where they disagree.
    let both = [("X-Forwarded-Proto", "http"), ("X-Forwarded-Ssl", "on")];
    let env = request(s.addr(), "GET", "/p", &both, b"").json();
    assert_eq!(text(&env, "wsgi.url_scheme").as_deref(), Some("http"));
    // Two lines (a client's, then the one a proxy such as HAProxy's
    // `add-header` appends): the last one, the nearest proxy's, counts, as
    // the last value of a single line does. Before, the client's won.
    for (lines, scheme) in [
        (
            [
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Proto", "http"),
            ],
            "http",
        ),
        (
            [
                ("X-Forwarded-Proto", "http"),
                ("X-Forwarded-Proto", "https"),
            ],
            "https",
        ),
    ] {
        let env = request(s.addr(), "GET", "/p", &lines, b"").json();
        assert_eq!(
            text(&env, "wsgi.url_scheme").as_deref(),
            Some(scheme),
            "{lines:?}"
        );
    }
    // From a peer that is not trusted: nothing.
    let s = Server::start(ENVIRON_APP, &["--forwarded-allow-ips", ""]);
    let env = request(s.addr(), "GET", "/p", &[("X-Forwarded-Ssl", "on")], b"").json();
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
fn wsgi_multithread_and_multiprocess_follow_the_threads_and_workers_settings() {
    let one = Server::start(ENVIRON_APP, &["--threads", "1"]);
    let four = Server::start(ENVIRON_APP, &["--threads", "4"]);
    let env1 = one.get("/").json();
    let env4 = four.get("/").json();
    assert_eq!(text(&env1, "wsgi.multithread").as_deref(), Some("False"));
    assert_eq!(text(&env4, "wsgi.multithread").as_deref(), Some("True"));
    for env in [&env1, &env4] {
        // -w 1: as gunicorn's `cfg.workers > 1`.
        assert_eq!(text(env, "wsgi.multiprocess").as_deref(), Some("False"));
        assert_eq!(text(env, "wsgi.run_once").as_deref(), Some("False"));
    }
    let dir = AppDir::new(&[("conformance_app.py", ENVIRON_APP)]);
    let two = Corral::start(dir.path(), &["conformance_app:app", "-w", "2"], 2);
    let env2 = two.get("/").json();
    assert_eq!(text(&env2, "wsgi.multiprocess").as_deref(), Some("True"));
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
