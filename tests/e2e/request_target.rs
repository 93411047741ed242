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
    // A fragment (which clients do not send, but may): `RAW_URI` keeps
    // it, as gunicorn's does; the path and query do not.
    for target in [&b"/frag?q=1#sec"[..], b"/frag#x?y", b"/f\"q?a=\"#x\""] {
        let ours = json(&send_raw(&c.addr, &get(target)).1);
        let theirs = json(&send_raw(&g.addr, &get(target)).1);
        assert_eq!(ours["RAW_URI"], latin1(target));
        for key in ["RAW_URI", "QUERY_STRING", "PATH_INFO"] {
            assert_eq!(
                ours[key], theirs[key],
                "{key} of {target:?}: corral vs gunicorn"
            );
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
/// Logs each path it is called for in `calls.txt` and answers it.
const PATH_LOG_APP: &str = r#"
def app(environ, start_response):
    with open("calls.txt", "a") as f:
        f.write(environ["PATH_INFO"] + "\n")
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
"#;

/// What the app was called for, in order.
fn calls(app: &AppDir) -> Vec<String> {
    std::fs::read_to_string(app.path().join("calls.txt"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Sends `bytes` on one connection; the statuses and `Connection` headers
/// of every answer until corral closes it (or 5 s pass).
fn answers(addr: &str, bytes: &[u8]) -> Vec<(u16, Option<String>)> {
    let mut s = connect(addr);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    let mut r = BufReader::new(s);
    let mut seen = Vec::new();
    while let Ok(resp) = read_response(&mut r, false) {
        seen.push((resp.status, resp.header("connection").map(str::to_string)));
    }
    seen
}

/// A bare LF in a chunked body's trailers: hyper ends a trailer line at
/// CRLF only, and reads on as trailers up to the next CRLF CRLF, where a
/// proxy in front that takes a bare LF for a line's end (RFC 9112 section
/// 2.2 lets it) ends the body. That proxy sees POST /echo and POST /hidden
/// with a 35-byte body; hyper saw POST /echo and then, as its next
/// request, the proxy's body: GET /smuggled, past the proxy's rules.
/// gunicorn and uvicorn answer 400. corral answers the request it read,
/// closes the connection, and runs nothing after it; the same for a
/// request after any head the scanner in front of hyper does not follow.
#[test]
fn a_bare_lf_in_chunked_trailers_smuggles_no_request_past_a_proxy() {
    let smuggled: &[u8] = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let hidden = format!(
        "POST /hidden HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        smuggled.len()
    );
    let app = AppDir::new(&[("app.py", PATH_LOG_APP)]);
    let c = Corral::start(app.path(), &["app:app", "-w", "1"], 1);
    for trailers in [&b"0\r\n\n"[..], b"0\r\nX-T: 1\n\n", b"0\r\nX-T: 1\r\n\n"] {
        std::fs::remove_file(app.path().join("calls.txt")).ok();
        let mut attack =
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
                .to_vec();
        attack.extend_from_slice(trailers);
        attack.extend_from_slice(hidden.as_bytes());
        attack.extend_from_slice(smuggled);
        let seen = answers(&c.addr, &attack);
        let what = String::from_utf8_lossy(trailers);
        assert!(
            seen.len() <= 1
                && seen
                    .iter()
                    .all(|(_, conn)| conn.as_deref() == Some("close")),
            "{what:?}: {seen:?}"
        );
        assert!(
            !calls(&app).iter().any(|p| p == "/smuggled"),
            "{what:?}: the app ran {:?}",
            calls(&app)
        );
    }
    // Heads the scanner steps aside at (the same Content-Length twice,
    // which hyper takes): that request is answered, and the connection
    // closes after it.
    std::fs::remove_file(app.path().join("calls.txt")).ok();
    let seen = answers(
        &c.addr,
        b"POST /twice HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nokGET /after HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(seen, vec![(200, Some("close".to_string()))]);
    assert_eq!(calls(&app), ["/twice"]);
    // Chunk-size lines hyper takes and gunicorn and uvicorn answer 400
    // (white space with no extension, a control byte in an extension).
    for size in [&b"2 "[..], b"2;a\x00b", b"2;\x7f"] {
        std::fs::remove_file(app.path().join("calls.txt")).ok();
        let mut bytes =
            b"POST /chunks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        bytes.extend_from_slice(size);
        bytes.extend_from_slice(b"\r\nok\r\n0\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n");
        let seen = answers(&c.addr, &bytes);
        assert_eq!(seen, vec![(200, Some("close".to_string()))], "{size:?}");
        assert_eq!(calls(&app), ["/chunks"]);
    }
    // `Upgrade: h2c` (curl --http2 on http://) is no upgrade corral takes:
    // the connection stays HTTP/1.1 and is kept alive.
    std::fs::remove_file(app.path().join("calls.txt")).ok();
    let seen = answers(
        &c.addr,
        b"GET /one HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(calls(&app), ["/one", "/two"]);
}

/// A line of the head that ends in a bare LF, not CRLF: gunicorn and
/// uvicorn answer 400, and so does corral (hyper would take it), before
/// the app; a proxy in front may end that line elsewhere.
#[test]
fn a_head_line_ending_in_a_bare_lf_gets_400_from_corral() {
    let app = AppDir::new(&[("app.py", PATH_LOG_APP)]);
    let c = Corral::start(app.path(), &["app:app", "-w", "1"], 1);
    for head in [
        &b"POST /a HTTP/1.1\nHost: x\nContent-Length: 5\n\nhello"[..],
        b"GET /b HTTP/1.1\r\nHost: x\nX: y\r\n\r\n",
        b"GET /c HTTP/1.1\r\nHost: x\r\n\n",
        b"GET /d HTTP/1.1\nHost: x\r\n\r\n",
    ] {
        let seen = answers(&c.addr, head);
        assert_eq!(
            seen,
            vec![(400, Some("close".to_string()))],
            "{:?}",
            String::from_utf8_lossy(head)
        );
    }
    assert_eq!(calls(&app), Vec::<String>::new(), "the app was called");
    // Bare LFs before a request line are blank lines, as RFC 9112 allows.
    let seen = answers(
        &c.addr,
        b"\n\r\nGET /e HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(seen, vec![(200, Some("close".to_string()))]);
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
