//! Request targets gunicorn and nginx accept and hyper's URI parser does
//! not: a raw `"`, `<`, `>` or `` ` `` (curl sends `?q="hello"` as it is)
//! and bytes above 0x7F. corral serves them, and the app sees the bytes as
//! received (`RAW_URI`, `QUERY_STRING`, ASGI `raw_path` and
//! `query_string`), the same as gunicorn hands them over. Controls, spaces
//! and NUL still get 400 from corral; `CONNECT` and `OPTIONS *` get a
//! clear 4xx from corral, not an answer from the app.

use crate::common::compare::{Reference, free_port};
use crate::common::*;
use std::io::{BufReader, Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Answers what it was given, as JSON of latin-1 text (PEP 3333's "bytes
/// as str"), and counts its calls in `calls.txt`.
const WSGI_APP: &str = r#"
import json

def app(environ, start_response):
    with open("calls.txt", "a") as f:
        f.write(environ["REQUEST_METHOD"] + "\n")
    body = environ["wsgi.input"].read()
    out = {k: environ.get(k) for k in ("PATH_INFO", "QUERY_STRING", "RAW_URI")}
    out["body"] = body.decode("latin-1")
    data = json.dumps(out).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
"#;

const ASGI_APP: &str = r#"
import json

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    out = {
        "path": scope["path"],
        "raw_path": scope["raw_path"].decode("latin-1"),
        "query_string": scope["query_string"].decode("latin-1"),
    }
    data = json.dumps(out).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": data})
"#;

/// The targets, as raw bytes on the request line.
const TARGETS: &[&[u8]] = &[
    b"/search?q=\"hello\"",
    b"/a<b>/c?x=<y>&z=\"1\"",
    b"/tick`s`?t=`x`",
    b"/caf\xc3\xa9/%C3%A9?n=\xff&m=%22",
    b"/{json}?j={\"a\":[1]}|^",
];

/// One request with `target` on its own connection: the status line and
/// the body.
fn send_raw(addr: &str, head: &[u8]) -> (String, Vec<u8>) {
    let mut s = connect(addr);
    s.write_all(head).unwrap();
    let mut r = BufReader::new(s);
    match read_response(&mut r, false) {
        Ok(resp) => (resp.status.to_string(), resp.body),
        Err(e) => (format!("no answer: {e}"), Vec::new()),
    }
}

fn get(target: &[u8]) -> Vec<u8> {
    let mut head = b"GET ".to_vec();
    head.extend_from_slice(target);
    head.extend_from_slice(b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    head
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("JSON: {e}: {}", String::from_utf8_lossy(body)))
}

/// The bytes as the app sees them in a latin-1 str.
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

fn gunicorn(dir: &Path) -> Reference {
    let bin = Path::new(&python()).with_file_name("gunicorn");
    assert!(
        bin.exists(),
        "gunicorn is not installed beside {}: run ./test.sh (it installs requirements-test.txt)",
        python()
    );
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(bin);
    cmd.args(["app:app", "-w", "1", "-b", &addr, "--chdir"])
        .arg(dir)
        .current_dir(dir);
    Reference::start("gunicorn", cmd, addr, Duration::from_secs(30))
}

#[test]
fn wsgi_targets_reach_the_app_as_received_like_gunicorn() {
    let app = AppDir::new(&[("app.py", WSGI_APP)]);
    let c = Corral::start(app.path(), &["app:app", "-w", "1"], 1);
    let g = gunicorn(app.path());
    for target in TARGETS {
        let (status, body) = send_raw(&c.addr, &get(target));
        assert_eq!(
            status,
            "200",
            "{}: {}",
            latin1(target),
            String::from_utf8_lossy(&body)
        );
        let ours = json(&body);
        let raw = latin1(target);
        let (path, query) = raw.split_once('?').unwrap_or((&raw, ""));
        assert_eq!(ours["RAW_URI"], raw, "{raw}");
        assert_eq!(ours["QUERY_STRING"], query, "{raw}");
        let split = target
            .iter()
            .position(|&b| b == b'?')
            .unwrap_or(target.len());
        let decoded: Vec<u8> = percent_encoding::percent_decode(&target[..split]).collect();
        assert_eq!(latin1(&target[..split]), path);
        assert_eq!(ours["PATH_INFO"], latin1(&decoded), "{raw}");

        // gunicorn (27) answers 400 to bytes above 0x7F; corral serves them
        // as nginx does (hyper already took them when they were UTF-8).
        if !target.is_ascii() {
            continue;
        }
        let (status, body) = send_raw(&g.addr, &get(target));
        assert_eq!(
            status,
            "200",
            "gunicorn on {raw}: {}",
            String::from_utf8_lossy(&body)
        );
        let theirs = json(&body);
        for key in ["RAW_URI", "QUERY_STRING", "PATH_INFO"] {
            assert_eq!(ours[key], theirs[key], "{key} of {raw}: corral vs gunicorn");
        }
    }
}

#[test]
fn asgi_targets_reach_the_app_as_received() {
    let app = AppDir::new(&[("app.py", ASGI_APP)]);
    let c = Corral::start(
        app.path(),
        &["app:app", "-w", "1", "--interface", "asgi"],
        1,
    );
    for target in TARGETS {
        let (status, body) = send_raw(&c.addr, &get(target));
        assert_eq!(
            status,
            "200",
            "{}: {}",
            latin1(target),
            String::from_utf8_lossy(&body)
        );
        let v = json(&body);
        let raw = latin1(target);
        let split = target
            .iter()
            .position(|&b| b == b'?')
            .unwrap_or(target.len());
        assert_eq!(v["raw_path"], latin1(&target[..split]), "{raw}");
        assert_eq!(
            v["query_string"],
            latin1(target.get(split + 1..).unwrap_or_default()),
            "{raw}"
        );
        // The ASGI path: percent-decoded, then UTF-8.
        let decoded: Vec<u8> = percent_encoding::percent_decode(&target[..split]).collect();
        assert_eq!(
            v["path"],
            String::from_utf8_lossy(&decoded).into_owned(),
            "{raw}"
        );
    }
}

/// Pipelined requests in one write, bodies holding request-like bytes: each
/// target is relaxed, each body arrives byte for byte.
#[test]
fn pipelined_requests_and_their_bodies_stay_intact() {
    let app = AppDir::new(&[("app.py", WSGI_APP)]);
    let c = Corral::start(app.path(), &["app:app", "-w", "1"], 1);
    let body1 = b"GET /\"x\" HTTP/1.1\r\n\r\n<\"`>";
    let chunk = b"\r\nGET /<y> HTTP/1.1\r\n\r\n";
    let mut all = Vec::new();
    all.extend_from_slice(
        format!(
            "POST /one?\"a\" HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body1.len()
        )
        .as_bytes(),
    );
    all.extend_from_slice(body1);
    all.extend_from_slice(
        b"POST /two<b> HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    all.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
    all.extend_from_slice(chunk);
    all.extend_from_slice(b"\r\n0\r\n\r\n");
    all.extend_from_slice(b"GET /three?q=\"c\" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut s = connect(&c.addr);
    s.write_all(&all).unwrap();
    let mut r = BufReader::new(s);
    let expect: [(&str, &[u8]); 3] = [
        ("/one?\"a\"", body1),
        ("/two<b>", chunk),
        ("/three?q=\"c\"", b""),
    ];
    for (raw_uri, body) in expect {
        let resp = read_response(&mut r, false).expect("an answer per request");
        assert_eq!(resp.status, 200, "{raw_uri}: {}", resp.text());
        let v = json(&resp.body);
        assert_eq!(v["RAW_URI"], raw_uri);
        assert_eq!(v["body"], latin1(body), "{raw_uri}");
    }
}

/// A bare LF in a chunked body's trailers: hyper reads on past it as
/// trailer bytes (a trailer line ends at CRLF only), so what follows is no
/// request of its own. corral's target scanner once took the LF for the
/// end of the trailers, and the raw target of the "request" it saw there
/// went to the app with hyper's next request: `GET /env?safe=1` reached a
/// WSGI app with `QUERY_STRING` `role=admin&x="` and an ASGI app at the
/// path `/admin`.
#[test]
fn a_bare_lf_in_chunked_trailers_gives_no_request_another_ones_target() {
    let attack: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
        0\r\nX: y\n\nGET /admin?role=admin&x=\" HTTP/1.1\r\n\r\n\
        GET /env?safe=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    for (source, args) in [
        (WSGI_APP, &["app:app", "-w", "1"][..]),
        (ASGI_APP, &["app:app", "-w", "1", "--interface", "asgi"][..]),
    ] {
        let app = AppDir::new(&[("app.py", source)]);
        let c = Corral::start(app.path(), args, 1);
        let mut s = connect(&c.addr);
        s.write_all(attack).unwrap();
        let mut r = BufReader::new(s);
        let mut seen = Vec::new();
        while let Ok(resp) = read_response(&mut r, false) {
            assert_eq!(resp.status, 200, "{}", resp.text());
            seen.push(json(&resp.body));
        }
        assert_eq!(seen.len(), 2, "the POST and the GET: {seen:?}");
        let env = &seen[1];
        if source == WSGI_APP {
            assert_eq!(env["PATH_INFO"], "/env", "{env}");
            assert_eq!(env["QUERY_STRING"], "safe=1", "{env}");
            assert_eq!(env["RAW_URI"], "/env?safe=1", "{env}");
        } else {
            assert_eq!(env["path"], "/env", "{env}");
            assert_eq!(env["raw_path"], "/env", "{env}");
            assert_eq!(env["query_string"], "safe=1", "{env}");
        }
        assert!(
            !seen.iter().any(|v| v.to_string().contains("admin")),
            "{seen:?}"
        );
    }
}

#[test]
fn controls_spaces_and_nul_in_targets_are_refused_by_corral() {
    let app = AppDir::new(&[("app.py", WSGI_APP)]);
    let c = Corral::start(app.path(), &["app:app", "-w", "1"], 1);
    for target in [&b"/a\x01b"[..], b"/a\x00b", b"/a\x7fb", b"/a\tb", b"/a b"] {
        let (status, _) = send_raw(&c.addr, &get(target));
        assert_eq!(status, "400", "{:?}", latin1(target));
    }
    // The app was never called.
    assert!(!app.path().join("calls.txt").exists());
    assert_eq!(c.get("/ok").status, 200);
}

#[test]
fn connect_and_options_asterisk_get_a_clear_answer_from_corral() {
    let app = AppDir::new(&[("app.py", WSGI_APP)]);
    let c = Corral::start(app.path(), &["app:app", "-w", "1"], 1);
    let mut s = connect(&c.addr);
    s.write_all(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut BufReader::new(&mut s), false).expect("an answer");
    assert_eq!(resp.status, 405, "{}", resp.text());
    let allow = resp.header("allow").expect("Allow").to_string();
    assert!(
        allow.contains("GET") && !allow.contains("CONNECT"),
        "{allow}"
    );
    assert!(resp.text().contains("CONNECT"), "{}", resp.text());
    // Nothing after it on that connection is read as a tunnel.
    let mut rest = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.read_to_end(&mut rest);

    let (status, body) = send_raw(
        &c.addr,
        b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, "400");
    assert!(String::from_utf8_lossy(&body).contains("OPTIONS *"));
    assert!(
        !app.path().join("calls.txt").exists(),
        "the app never sees them"
    );
    // An OPTIONS on a path is the app's.
    let resp = request(&c.addr, "OPTIONS", "/x", &[], b"");
    assert_eq!(resp.status, 200);
}

/// An absolute-form target names the host the app sees, checked as `Host`
/// is: one with user info (`http://evil@good/`) is refused, so the app's
/// `Host` can never be a value a `Host` header could not carry.
#[test]
fn an_absolute_form_target_with_user_info_is_refused() {
    let app = AppDir::new(&[(
        "app.py",
        "def app(environ, start_response):\n    body = environ['HTTP_HOST'].encode()\n    start_response('200 OK', [('Content-Length', str(len(body)))])\n    return [body]\n",
    )]);
    let c = Corral::start(app.path(), &["app:app", "-w", "1"], 1);
    let (status, body) = send_raw(
        &c.addr,
        b"GET http://evil@good/ HTTP/1.1\r\nHost: good\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, "400", "{}", String::from_utf8_lossy(&body));
    let (status, body) = send_raw(
        &c.addr,
        b"GET http://good:8080/ HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, "200");
    assert_eq!(body, b"good:8080");
}
