//! A Quart app (Flask's API on asyncio) answers through corral as through
//! uvicorn: routes, a response streamed from an async generator, the
//! 413 past `MAX_CONTENT_LENGTH`, WebSocket routes (a refusal through the
//! `websocket.http.response` extension too), `before_serving` and
//! `after_serving` (the ASGI lifespan), a background task
//! (`app.add_background_task`) that the graceful stop waits for, and
//! `request.scheme`/`remote_addr` behind a trusted proxy.
//!
//! Each test starts both servers on one copy of the app, one worker
//! process each, and compares what a client sees as `frameworks_asgi`
//! does. The app lives in `tests/apps/quart_app/`; it needs Quart and
//! uvicorn in the interpreter the tests use (`./test.sh` installs them
//! into `.venv`).

use crate::common::compare::*;
use crate::frameworks_asgi::{Step, same_answers, text, ws_session};

use std::time::Duration;

use tokio_tungstenite::tungstenite::Message;

/// Longest wait for uvicorn to accept connections, for the Python probe to
/// answer, or for a server to stop.
const START_TIMEOUT: Duration = Duration::from_secs(20);

const SPEC: &str = "quartapp:app";

const FILES: &[(&str, &str)] = &[("quartapp.py", include_str!("../apps/quart_app/quartapp.py"))];

/// Panics, saying what to do, unless `python()` can import what these
/// tests serve.
fn check_python() {
    require_modules("quart, uvicorn", "a real Quart app");
}

/// Both servers on one copy of the app, one worker process each, uvicorn
/// with `uvicorn_args` and corral with `corral_args` added.
fn start_servers(uvicorn_args: &[&str], corral_args: &[&str]) -> Servers {
    check_python();
    crate::frameworks_asgi::beside_uvicorn("Quart", FILES, SPEC, uvicorn_args, corral_args)
}

/// Plays `steps` on a WebSocket to `path` against both servers: uvicorn
/// must give `expected`, and corral what uvicorn gave.
fn same_session(servers: &Servers, path: &str, steps: &[Step], expected: &[&str]) {
    let u = ws_session(
        &servers.reference.addr,
        path,
        &[],
        steps,
        servers.reference.pid(),
    );
    assert_eq!(
        u,
        expected,
        "uvicorn's WebSocket {path} did not behave as the app should\n{}",
        servers.logs()
    );
    let c = ws_session(&servers.corral.addr, path, &[], steps, servers.corral.pid());
    assert_eq!(
        c,
        u,
        "corral's WebSocket {path} (left) differs from uvicorn's (right)\n{}",
        servers.logs()
    );
}

/// Routes, converters, an async generator's stream, forms, Werkzeug's
/// error pages (404, 418 from `abort`, 500 from an exception) and the 413
/// Quart answers past `MAX_CONTENT_LENGTH` (1000 bytes), with a length
/// or chunked: the same answers from corral as from uvicorn.
#[test]
fn quart_routes_streaming_and_body_limit_as_under_uvicorn() {
    let servers = start_servers(&[], &[]);
    let lines: String = (0..5).map(|i| format!("line {i}\n")).collect();
    let octets = "application/octet-stream";
    same_answers(
        &servers,
        &[
            Req::get("index", "/").expect(200, "Hello from Quart"),
            Req::new("HEAD of the index", "HEAD", "/").expect(200, ""),
            Req::get("before_serving ran", "/greeting").expect(200, "hello from before_serving"),
            Req::get("int converter and query", "/items/4?q=caf%C3%A9")
                .expect(200, r#"{"item_id":4,"q":"caf\u00e9"}"#),
            Req::get("a path the converter refuses", "/items/x").expect(404, "Not Found"),
            Req::get("an async generator's stream", "/stream").expect(200, &lines),
            Req::post("a body under the limit", "/echo", octets, binary(1000)).expect(200, ""),
            Req::post("a body over the limit", "/echo", octets, binary(1001))
                .expect(413, "Request Entity Too Large"),
            Req::post(
                "a chunked body over the limit",
                "/echo",
                octets,
                chunked(&binary(5000), 700),
            )
            .header("Transfer-Encoding", "chunked")
            .expect(413, "Request Entity Too Large"),
            Req::post(
                "a form",
                "/form",
                "application/x-www-form-urlencoded",
                "b=2&a=caf%C3%A9",
            )
            .expect(200, r#"[["a","caf\u00e9"],["b","2"]]"#),
            Req::get("abort(418)", "/teapot").expect(418, "teapot"),
            Req::get("a view that raises", "/boom").expect(500, "Internal Server Error"),
            Req::get("404", "/nowhere").expect(404, "Not Found"),
        ],
    );
    assert!(
        servers
            .corral
            .log
            .wait_for("RuntimeError: boom in a Quart view", START_TIMEOUT)
            .is_some(),
        "Quart's own error record reaches corral's log\n{}",
        servers.corral.log.text()
    );
}

/// A `websocket` route: text and bytes both ways, the app's close code and
/// reason, a client close (Quart cancels the handler), and a route that
/// aborts before accepting, which Quart answers with a plain HTTP 401
/// through the `websocket.http.response` extension.
#[test]
fn quart_websocket_routes_as_under_uvicorn() {
    let servers = start_servers(&[], &[]);
    same_session(
        &servers,
        "/ws?name=ada",
        &[
            Step::Receive,
            text("hi"),
            Step::Receive,
            Step::Send(Message::binary(vec![1, 2, 3])),
            Step::Receive,
            text("close"),
            Step::Receive,
            Step::Receive,
        ],
        &[
            "accepted: 101",
            "text: hello ada",
            "text: echo: hi",
            "binary: [3, 2, 1]",
            "close: 4001 \"closed by the app\"",
            "end of stream",
        ],
    );
    same_session(
        &servers,
        "/ws?name=bob",
        &[
            Step::Receive,
            Step::Close(Some((4002, "gone"))),
            Step::Receive,
        ],
        &["accepted: 101", "text: hello bob", "close: 4002 \"gone\""],
    );
    crate::frameworks_asgi::wait_for_body(&servers, "/log", "ws cancelled");
    for (path, status, length, title) in [
        ("/ws/refuse", 401, 317, "401 Unauthorized"),
        ("/ws/nowhere", 404, 207, "404 Not Found"),
    ] {
        let [u, c] = servers
            .both()
            .map(|(_, addr)| ws_session(addr, path, &[], &[], 0));
        let expected = format!(
            "refused: {status} content-length={length} content-type=text/html; charset=utf-8"
        );
        assert!(
            u.len() == 1 && u[0].starts_with(&expected) && u[0].contains(title),
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

/// Lifespan at start and stop, and a graceful stop (SIGTERM) with a
/// WebSocket open and a background task running: `before_serving` ran
/// before the first request; the client gets a close frame (uvicorn's code
/// 1012, corral's 1001: README, WebSockets) and Quart cancels the
/// handler; the stop waits for the background task, then runs
/// `after_serving`, under both.
#[test]
fn quart_graceful_stop_finishes_background_tasks_then_after_serving() {
    let mut servers = start_servers(&[], &[]);
    same_answers(
        &servers,
        &[
            Req::get("before_serving ran once", "/log").expect(200, r#"["before_serving"]"#),
            Req::get("a background task of 1 s", "/background?delay=1").expect(200, "queued"),
        ],
    );
    crate::frameworks_asgi::a_graceful_stop_closes_an_open_socket(&mut servers, "/ws", &[]);
    crate::frameworks_asgi::assert_both_said(
        &servers,
        "quartapp",
        &[
            "before_serving",
            "ws cancelled",
            "background task finished",
            "after_serving",
        ],
    );
}

/// `request.scheme`, `remote_addr` and `url` from a trusted proxy's
/// `X-Forwarded-Proto` and `X-Forwarded-For` (uvicorn's
/// `--forwarded-allow-ips`, which corral takes as it is), on a WebSocket
/// too (`wss`), and from a proxy that is not trusted, the connection's
/// own.
#[test]
fn quart_scheme_and_remote_addr_behind_forwarded_allow_ips() {
    let servers = start_servers(
        &["--proxy-headers", "--forwarded-allow-ips", "127.0.0.1"],
        &["--forwarded-allow-ips", "127.0.0.1"],
    );
    same_answers(
        &servers,
        &[
            Req::get("no proxy headers", "/whereami").expect(
                200,
                r#"{"host":"localhost","remote_addr":"127.0.0.1","scheme":"http","url":"http://localhost/whereami"}"#,
            ),
            Req::get("from a trusted proxy", "/whereami?x=1")
                .header("Host", "app.example.com")
                .header("X-Forwarded-Proto", "https")
                .header("X-Forwarded-For", "203.0.113.9")
                .expect(
                    200,
                    r#"{"host":"app.example.com","remote_addr":"203.0.113.9","scheme":"https","url":"https://app.example.com/whereami?x=1"}"#,
                ),
            Req::get("a chain of proxies", "/whereami")
                .header("X-Forwarded-Proto", "https")
                .header("X-Forwarded-For", "198.51.100.1, 203.0.113.9")
                .expect(200, r#""remote_addr":"203.0.113.9","scheme":"https""#),
        ],
    );
    let proxied = [
        ("Host", "app.example.com"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-For", "203.0.113.9"),
    ];
    let [u, c] = servers
        .both()
        .map(|(_, addr)| ws_session(addr, "/ws/whereami", &proxied, &[Step::Receive], 0));
    assert_eq!(
        u,
        [
            "accepted: 101",
            r#"text: {"remote_addr": "203.0.113.9", "scheme": "wss", "url": "wss://app.example.com/ws/whereami"}"#
        ],
        "uvicorn\n{}",
        servers.logs()
    );
    assert_eq!(c, u, "corral (left), uvicorn (right)\n{}", servers.logs());
    let servers = start_servers(
        &["--proxy-headers", "--forwarded-allow-ips", "10.0.0.1"],
        &["--forwarded-allow-ips", "10.0.0.1"],
    );
    same_answers(
        &servers,
        &[Req::get("from a proxy that is not trusted", "/whereami")
            .header("X-Forwarded-Proto", "https")
            .header("X-Forwarded-For", "203.0.113.9")
            .expect(200, r#""remote_addr":"127.0.0.1","scheme":"http""#)],
    );
}

/// A client that leaves an endless stream stops the app's generator, under
/// corral as under uvicorn (Quart cancels the response when it reads
/// `http.disconnect`).
#[test]
fn quart_a_stream_whose_client_leaves_is_stopped() {
    let servers = start_servers(&[], &[]);
    crate::frameworks_asgi::leave_an_endless_stream(&servers, "/endless");
    crate::frameworks_asgi::wait_for_body(&servers, "/log", "endless stream stopped");
    same_answers(
        &servers,
        &[Req::get("how the generator stopped", "/log").expect(
            200,
            r#"["before_serving","endless stream stopped: CancelledError"]"#,
        )],
    );
}
