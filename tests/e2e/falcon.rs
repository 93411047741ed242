//! A Falcon app answers through corral as through the server its users run
//! today: `falcon.App` (WSGI) as under gunicorn, `falcon.asgi.App` as
//! under uvicorn. Routes with typed and non-ASCII parameters, bodies read
//! whole, in pieces and chunked, `get_media()` (JSON and multipart),
//! `resp.stream` (a file-like object and a generator), `set_stream()`,
//! HEAD, Falcon's own 404 and 405 (with `Allow`), `req.scheme`,
//! `remote_addr`, `access_route` behind `--forwarded-allow-ips`,
//! `root_path`; on ASGI also server-sent events, `on_websocket`
//! responders and the lifespan (`process_startup`/`process_shutdown`).
//!
//! Each test starts both servers on one copy of the app and compares what
//! a client sees. The apps live in `tests/apps/falcon_app/`; they need
//! Falcon, gunicorn and uvicorn in the interpreter the tests use
//! (`./test.sh` installs them into `.venv`).

use crate::common::compare::*;
use crate::frameworks::{FORM_TYPE, file_uploads};
use crate::frameworks_asgi::{Step, hi_then_close, same_answers, same_transcripts, ws_session};

use std::time::Duration;

use tokio_tungstenite::tungstenite::Message;

/// Longest wait for the app's log to say something.
const LOG_TIMEOUT: Duration = Duration::from_secs(20);

const WSGI_SPEC: &str = "falconwsgi:app";
const ASGI_SPEC: &str = "falconasgi:app";

const FILES: &[(&str, &str)] = &[
    (
        "falconwsgi.py",
        include_str!("../apps/falcon_app/falconwsgi.py"),
    ),
    (
        "falconasgi.py",
        include_str!("../apps/falcon_app/falconasgi.py"),
    ),
];

/// Panics, saying what to do, unless `python()` can import what these
/// tests serve.
fn check_python() {
    require_modules("falcon, gunicorn, uvicorn", "a real Falcon app");
}

/// Both servers on one copy of the WSGI app, two worker processes each,
/// gunicorn with `gunicorn_args` and corral with `corral_args` added.
fn start_wsgi(gunicorn_args: &[&str], corral_args: &[&str]) -> Servers {
    check_python();
    let mut args = vec![WSGI_SPEC, "-w", "2"];
    args.extend_from_slice(corral_args);
    Servers::start(
        "Falcon (WSGI)",
        FILES,
        |dir| crate::frameworks::gunicorn_with(dir, WSGI_SPEC, gunicorn_args),
        &args,
        2,
    )
}

/// Both servers on one copy of the ASGI app, one worker process each,
/// uvicorn with `uvicorn_args` and corral with `corral_args` added.
fn start_asgi(uvicorn_args: &[&str], corral_args: &[&str]) -> Servers {
    check_python();
    let mut args = vec![ASGI_SPEC, "-w", "1"];
    args.extend_from_slice(corral_args);
    Servers::start(
        "Falcon (ASGI)",
        FILES,
        |dir| crate::frameworks_asgi::uvicorn_with(dir, ASGI_SPEC, uvicorn_args),
        &args,
        1,
    )
}

/// The requests both apps answer alike: routes, bodies, media, streams and
/// Falcon's own errors.
fn common_requests() -> Vec<Req> {
    let octets = "application/octet-stream";
    let lines: String = (0..5).map(|i| format!("line {i}\n")).collect();
    vec![
        Req::get("int converter and query", "/items/4?q=caf%C3%A9").expect(200, r#""item_id": 4"#),
        Req::new("HEAD of a route", "HEAD", "/items/4").expect(200, ""),
        Req::get("a path the converter refuses", "/items/x").expect(404, ""),
        Req::post("a method the resource lacks", "/items/4", octets, "x").expect(405, ""),
        Req::get("a non-ASCII path parameter", "/hello/caf%C3%A9").expect(200, "hello café"),
        Req::get("a path nothing routes", "/nowhere").expect(404, ""),
        Req::post(
            "bounded_stream read whole",
            "/echo",
            octets,
            binary((1 << 20) + 123),
        )
        .expect(200, r#""length": 1048699"#),
        Req::post("an empty body", "/echo", octets, Vec::new()).expect(200, r#""length": 0"#),
        Req::post("stream read in pieces", "/pieces", octets, binary(5500))
            .expect(200, r#""length": 5500"#),
        Req::post(
            "get_media(), JSON",
            "/media",
            JSON_TYPE,
            r#"{"text": "naïve ✓", "n": [1, 2]}"#,
        )
        .expect(200, r#""n": [1, 2]"#),
        Req::post(
            "get_media(), JSON that is not",
            "/media",
            JSON_TYPE,
            "{nope",
        )
        .expect(400, "Invalid JSON"),
        file_uploads("get_media(), multipart", "/upload", 300_000),
        Req::post(
            "get_media(), a urlencoded form",
            "/media",
            FORM_TYPE,
            "a=1&b=caf%C3%A9",
        )
        .expect(200, r#"{"got": {"a": "1", "b": "café"}}"#),
        Req::post(
            "get_media(), a type Falcon has no handler for",
            "/media",
            "text/csv",
            "a,b",
        )
        .expect(415, "Unsupported Media Type"),
        Req::get("resp.stream, a file", "/file").expect(200, ""),
        Req::get("resp.stream, a generator", "/generator").expect(200, &lines),
        Req::new("HEAD of a stream", "HEAD", "/generator").expect(200, ""),
        Req::get("set_stream() with a length", "/set-stream").expect(200, "set_stream set_stream"),
        Req::get("set_stream() of a file on disk", "/real-file").expect(200, "import falcon"),
        Req::new("HEAD of a file on disk", "HEAD", "/real-file").expect(405, ""),
        Req::post("a body after 100 Continue", "/echo", octets, binary(3000))
            .header("Expect", "100-continue")
            .expect(200, r#""length": 3000"#),
        Req::get("an escaped slash in a parameter", "/hello/a%2Fb").expect(404, ""),
        Req::get("a percent-encoded byte that is not UTF-8", "/hello/caf%E9"),
        Req::get("an HTTPError", "/teapot").expect(418, "short and stout"),
        Req::get("a responder that raises", "/boom").expect(500, ""),
    ]
}

/// A path with raw UTF-8 bytes (not percent-encoded): gunicorn and
/// uvicorn answer 400, corral serves it as its percent-encoded form
/// (README: request targets with bytes above 0x7F).
fn assert_a_raw_utf8_path_is_served_by_corral_only(servers: &Servers) {
    let raw = Req::get("a non-ASCII path sent raw", "/hello/café");
    let [r, c] = servers.both().map(|(_, addr)| raw.send_to(addr).unwrap());
    assert_eq!(r.status, 400, "{}: {r:?}", servers.reference.name);
    assert!(
        c.status == 200 && c.body == "hello café".as_bytes(),
        "corral: {c:?}\n{}",
        servers.logs()
    );
}

// ------------------------------------------------------------------ WSGI

/// The WSGI app's routes, bodies (whole, in pieces, chunked), media,
/// streams and errors: the same answers from corral as from gunicorn.
#[test]
fn falcon_wsgi_routes_bodies_and_streams_as_under_gunicorn() {
    let servers = start_wsgi(&[], &[]);
    let mut reqs = common_requests();
    reqs.push(
        // Falcon's bounded_stream reads up to the Content-Length, so a
        // WSGI app sees nothing of a chunked upload there.
        Req::post(
            "bounded_stream of a chunked upload",
            "/echo",
            "application/octet-stream",
            chunked(&binary(70_000), 3000),
        )
        .header("Transfer-Encoding", "chunked")
        .expect(200, r#""length": 0"#),
    );
    reqs.push(
        Req::post(
            "req.stream, chunked",
            "/stream",
            "application/octet-stream",
            chunked(&binary(70_000), 3000),
        )
        .header("Transfer-Encoding", "chunked")
        .expect(200, r#""length": 70000"#),
    );
    reqs.push(
        Req::get("a cookie set and sent back", "/cookies")
            .header("Cookie", "a=1; b=caf%C3%A9")
            .expect(200, r#""a": "1""#),
    );
    same_answers(&servers, &reqs);
    assert_a_raw_utf8_path_is_served_by_corral_only(&servers);
    assert!(
        servers
            .corral
            .log
            .wait_for("RuntimeError: boom in a Falcon responder", LOG_TIMEOUT)
            .is_some(),
        "Falcon's error record reaches corral's log\n{}",
        servers.corral.log.text()
    );
}

/// `req.scheme` and `access_route` from a trusted proxy, as under
/// gunicorn; `remote_addr` is the client `X-Forwarded-For` names under
/// corral, the proxy's under gunicorn, which takes only the scheme from a
/// proxy (README: `--forwarded-allow-ips`), so Falcon's `access_route`,
/// which ends with `remote_addr`, ends with the client under corral.
#[test]
fn falcon_wsgi_scheme_and_client_behind_forwarded_allow_ips() {
    let servers = start_wsgi(
        &["--forwarded-allow-ips", "127.0.0.1"],
        &["--forwarded-allow-ips", "127.0.0.1"],
    );
    same_answers(
        &servers,
        &[
            Req::get("no proxy headers", "/whereami").expect(
                200,
                r#"{"scheme": "http", "host": "localhost", "remote_addr": "127.0.0.1", "access_route": ["127.0.0.1"], "root_path": "", "path": "/whereami", "uri": "http://localhost/whereami"}"#,
            ),
            Req::get("Forwarded, which neither server reads", "/whereami")
                .header("Forwarded", "for=198.51.100.1;proto=https")
                .expect(200, r#""scheme": "http", "host": "localhost", "remote_addr": "127.0.0.1", "access_route": ["198.51.100.1", "127.0.0.1"]"#),
        ],
    );
    let proxied = Req::get("from a trusted proxy", "/whereami")
        .header("Host", "app.example.com")
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-For", "198.51.100.1, 203.0.113.9");
    let [g, c] = servers
        .both()
        .map(|(_, addr)| String::from_utf8(proxied.send_to(addr).unwrap().body).unwrap());
    let said = |remote_addr: &str, route: &str| {
        format!(
            r#"{{"scheme": "https", "host": "app.example.com", "remote_addr": "{remote_addr}", "access_route": [{route}], "root_path": "", "path": "/whereami", "uri": "https://app.example.com/whereami"}}"#
        )
    };
    assert_eq!(
        g,
        said("127.0.0.1", r#""198.51.100.1", "203.0.113.9", "127.0.0.1""#),
        "gunicorn\n{}",
        servers.logs()
    );
    assert_eq!(
        c,
        said("203.0.113.9", r#""198.51.100.1", "203.0.113.9""#),
        "corral\n{}",
        servers.logs()
    );
}

/// `req.root_path` from `SCRIPT_NAME` (gunicorn, here its `--env`) or
/// `--root-path`: a request under the prefix is routed without it and the
/// URLs Falcon builds carry it, under both; one the proxy stripped the
/// prefix from keeps its path under corral, where gunicorn 27 answers it 500
/// (README: `--root-path`).
#[test]
fn falcon_wsgi_root_path_as_under_gunicorn() {
    let servers = start_wsgi(&["--env", "SCRIPT_NAME=/api"], &["--root-path", "/api"]);
    same_answers(
        &servers,
        &[Req::get("under the root path", "/api/whereami?x=1").expect(
            200,
            r#""root_path": "/api", "path": "/whereami", "uri": "http://localhost/api/whereami?x=1""#,
        )],
    );
    let stripped = Req::get("stripped by the proxy", "/whereami");
    let [g, c] = servers
        .both()
        .map(|(_, addr)| stripped.send_to(addr).unwrap());
    assert!(
        g.status == 500 && contains(&g.body, b"does not start with SCRIPT_NAME"),
        "gunicorn: {g:?}\n{}",
        servers.logs()
    );
    assert!(
        c.status == 200 && contains(&c.body, br#""root_path": "/api", "path": "/whereami""#),
        "corral: {c:?}\n{}",
        servers.logs()
    );
}

/// A client that leaves an endless `resp.stream` generator: the write
/// that fails ends it (`close()`, so `GeneratorExit` in the generator)
/// under corral as under gunicorn.
#[test]
fn falcon_wsgi_a_stream_whose_client_leaves_is_closed() {
    let servers = start_wsgi(&[], &[]);
    crate::frameworks_asgi::leave_an_endless_stream(&servers, "/endless");
    let stopped = "falconwsgi: endless stream stopped: GeneratorExit";
    for (server, log) in [
        ("gunicorn", &servers.reference.log),
        ("corral", &servers.corral.log),
    ] {
        assert!(
            log.wait_for(stopped, LOG_TIMEOUT).is_some(),
            "{server}\n{}",
            servers.logs()
        );
    }
}

// ------------------------------------------------------------------ ASGI

/// The ASGI app's routes, bodies, media, streams, server-sent events and
/// errors: the same answers from corral as from uvicorn.
#[test]
fn falcon_asgi_routes_bodies_streams_and_events_as_under_uvicorn() {
    let servers = start_asgi(&[], &[]);
    let mut reqs = common_requests();
    reqs.push(
        Req::post(
            "a chunked upload, read by async for",
            "/pieces",
            "application/octet-stream",
            chunked(&binary((1 << 20) + 123), 7000),
        )
        .header("Transfer-Encoding", "chunked")
        .expect(200, r#""length": 1048699"#),
    );
    reqs.push(
        Req::post(
            "stream.read(1000) until empty",
            "/sized",
            "application/octet-stream",
            binary(7777),
        )
        .expect(200, r#""length": 7777"#),
    );
    reqs.push(
        Req::get("server-sent events", "/events").expect(200, "id: 0\ndata: event 0\n\nid: 1"),
    );
    reqs.push(Req::get("process_startup ran", "/log").expect(200, r#"["process_startup"]"#));
    // uvicorn words 418's reason "I'm a Teapot" (README: where corral
    // differs from uvicorn).
    same_answers(&servers, &reqs);
    assert_a_raw_utf8_path_is_served_by_corral_only(&servers);
}

/// `req.scheme`, `remote_addr` and `access_route` from a trusted proxy
/// (and on a WebSocket), and `root_path` from `--root-path`.
#[test]
fn falcon_asgi_scheme_client_and_root_path_as_under_uvicorn() {
    let servers = start_asgi(
        &[
            "--proxy-headers",
            "--forwarded-allow-ips",
            "127.0.0.1",
            "--root-path",
            "/api",
        ],
        &["--forwarded-allow-ips", "127.0.0.1", "--root-path", "/api"],
    );
    same_answers(
        &servers,
        &[
            // uvicorn puts the root path before the path the client asked
            // for (ASGI spec), and Falcon routes on that whole path.
            Req::get("no proxy headers", "/whereami")
                .expect(200, r#""root_path": "/api", "path": "/api/whereami""#),
            Req::get("from a trusted proxy", "/whereami")
                .header("Host", "app.example.com")
                .header("X-Forwarded-Proto", "https")
                .header("X-Forwarded-For", "198.51.100.1, 203.0.113.9")
                .expect(200, r#""remote_addr": "203.0.113.9""#),
        ],
    );
    // A request that carries the root path already: corral does not put it
    // in front again, where uvicorn makes it /api/api/whereami, which the
    // app does not route (README: --root-path).
    let carried = Req::get("the root path asked for too", "/api/whereami");
    let [u, c] = servers
        .both()
        .map(|(_, addr)| carried.send_to(addr).unwrap());
    assert_eq!(u.status, 404, "uvicorn\n{}", servers.logs());
    assert!(
        c.status == 200 && contains(&c.body, br#""root_path": "/api", "path": "/api/whereami""#),
        "corral: {c:?}\n{}",
        servers.logs()
    );
    let proxied = [
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-For", "203.0.113.9"),
    ];
    let steps = [
        Step::Send(Message::binary(vec![1, 2, 3])),
        Step::Receive,
        Step::Receive,
        Step::Receive,
    ];
    same_transcripts(
        &servers,
        "/ws-bytes",
        &proxied,
        &steps,
        &[
            "accepted: 101",
            "binary: [3, 2, 1]",
            r#"text: {"scheme": "wss", "remote_addr": "203.0.113.9"}"#,
            "close: 1000 \"Normal Closure\"",
        ],
    );
}

/// `on_websocket` responders: text both ways, the app's close code, a
/// client close (Falcon raises `WebSocketDisconnected` with its code), a
/// responder that refuses with an `HTTPError` and a path nothing routes.
#[test]
fn falcon_asgi_websockets_as_under_uvicorn() {
    let servers = start_asgi(&[], &[]);
    same_transcripts(
        &servers,
        "/ws/ada",
        &[],
        &hi_then_close(),
        &[
            "accepted: 101",
            "text: hello ada",
            "text: echo: hi",
            "close: 4001 \"\"",
            "end of stream",
        ],
    );
    same_transcripts(
        &servers,
        "/ws/bob",
        &[],
        &[
            Step::Receive,
            Step::Close(Some((4002, "gone"))),
            Step::Receive,
        ],
        &["accepted: 101", "text: hello bob", "close: 4002 \"gone\""],
    );
    crate::frameworks_asgi::wait_for_body(&servers, "/log", "ws disconnected: 4002");
    for path in ["/ws-refuse", "/ws-nowhere"] {
        let [u, c] = servers
            .both()
            .map(|(_, addr)| ws_session(addr, path, &[], &[], 0));
        assert!(
            u.len() == 1 && u[0].starts_with("refused: 403"),
            "uvicorn {path}: {u:?}"
        );
        assert_eq!(
            c,
            u,
            "corral {path} (left), uvicorn (right)\n{}",
            servers.logs()
        );
    }
}

/// The lifespan at start and stop with a WebSocket open: the client gets
/// a close frame (uvicorn's 1012, corral's 1001: README, WebSockets),
/// Falcon's responder sees the disconnect, then `process_shutdown` runs.
#[test]
fn falcon_asgi_lifespan_runs_at_start_and_stop_with_a_websocket_open() {
    let mut servers = start_asgi(&[], &[]);
    crate::frameworks_asgi::a_graceful_stop_closes_an_open_socket(&mut servers, "/ws", &[]);
    let said: Vec<String> = [servers.reference.log.text(), servers.corral.log.text()]
        .iter()
        .map(|log| {
            log.lines()
                .filter_map(|l| l.split("falconasgi: ").nth(1))
                .filter(|l| !l.starts_with("ws disconnected"))
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect();
    assert_eq!(
        said[0],
        "process_startup | process_shutdown",
        "uvicorn\n{}",
        servers.logs()
    );
    assert_eq!(said[1], said[0], "corral\n{}", servers.logs());
}

/// A client that leaves an endless `resp.stream`: under corral the app's
/// next `send()` raises (ASGI spec 2.4; README, WSGI and ASGI), and Falcon
/// closes the generator; under uvicorn, whose `send()` drops what a gone
/// client is sent, the generator runs on until the server stops.
#[test]
fn falcon_asgi_a_stream_whose_client_leaves_is_closed_under_corral_only() {
    let servers = start_asgi(&[], &[]);
    crate::frameworks_asgi::leave_an_endless_stream(&servers, "/endless");
    let stopped = "endless stream stopped: GeneratorExit";
    assert!(
        servers.corral.log.wait_for(stopped, LOG_TIMEOUT).is_some(),
        "corral\n{}",
        servers.logs()
    );
    // Time for uvicorn's generator to have noticed, had it been told.
    std::thread::sleep(Duration::from_millis(500));
    let [u, c] = servers
        .both()
        .map(|(_, addr)| Req::get("log", "/log").send_to(addr).unwrap().body);
    assert_eq!(
        String::from_utf8_lossy(&c),
        format!(r#"["process_startup", "{stopped}"]"#),
        "corral\n{}",
        servers.logs()
    );
    assert_eq!(
        String::from_utf8_lossy(&u),
        r#"["process_startup"]"#,
        "uvicorn\n{}",
        servers.logs()
    );
}
