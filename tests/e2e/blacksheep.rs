//! A BlackSheep app answers through corral as through uvicorn: routes with
//! typed parameters, JSON, forms, file uploads, a chunked body read as a
//! stream, a streamed response, the app's exception handlers and
//! BlackSheep's own errors, WebSocket routes, `on_start`/`on_stop` (the
//! ASGI lifespan) across a graceful stop, and the request's scheme and
//! client behind a trusted proxy.
//!
//! Each test starts both servers on one copy of the app, one worker
//! process each, and compares what a client sees as `frameworks_asgi`
//! does. The app lives in `tests/apps/blacksheep_app/`; it needs
//! BlackSheep and uvicorn in the interpreter the tests use (`./test.sh`
//! installs them into `.venv`).

use crate::common::compare::*;
use crate::frameworks::{FORM_TYPE, file_uploads};
use crate::frameworks_asgi::{Step, hi_then_close, same_answers, same_transcripts, ws_session};

const SPEC: &str = "bsapp:app";

const FILES: &[(&str, &str)] = &[("bsapp.py", include_str!("../apps/blacksheep_app/bsapp.py"))];

/// Both servers on one copy of the app, one worker process each, uvicorn
/// with `uvicorn_args` and corral with `corral_args` added.
fn start_servers(uvicorn_args: &[&str], corral_args: &[&str]) -> Servers {
    require_modules("blacksheep, uvicorn", "a real BlackSheep app");
    crate::frameworks_asgi::beside_uvicorn("BlackSheep", FILES, SPEC, uvicorn_args, corral_args)
}

/// Routes, bodies, uploads, a streamed response, the app's exception
/// handler (418), BlackSheep's 400, 404 and 500: the same answers from
/// corral as from uvicorn.
#[test]
fn blacksheep_routes_bodies_and_errors_as_under_uvicorn() {
    let servers = start_servers(&[], &[]);
    let lines: String = (0..5).map(|i| format!("line {i}\n")).collect();
    let octets = "application/octet-stream";
    same_answers(
        &servers,
        &[
            Req::get("index", "/").expect(200, "Hello from BlackSheep"),
            Req::get("on_start ran", "/log").expect(200, r#"["on_start"]"#),
            Req::get("typed path and query parameters", "/items/4?q=caf%C3%A9")
                .expect(200, r#"{"item_id":4,"q":"café"}"#),
            Req::get("a path parameter that is not an int", "/items/x")
                .expect(400, "expected a valid int"),
            Req::get("a non-ASCII path parameter", "/hello/caf%C3%A9").expect(200, "hello café"),
            Req::post("JSON", "/json", JSON_TYPE, r#"{"a": [1, "naïve ✓"]}"#)
                .expect(200, r#"{"got":{"a":[1,"naïve ✓"]}}"#),
            Req::post("a body read whole", "/echo", octets, binary(300_000))
                .expect(200, r#""length":300000"#),
            Req::post(
                "a chunked body read as a stream",
                "/chunks",
                octets,
                chunked(&binary((1 << 20) + 123), 7000),
            )
            .header("Transfer-Encoding", "chunked")
            .expect(200, r#""length":1048699"#),
            Req::post("a form", "/form", FORM_TYPE, "a=1&b=caf%C3%A9")
                .expect(200, r#"{"a":"1","b":"café"}"#),
            file_uploads("file uploads", "/upload", 400_000),
            Req::get("a streamed response", "/stream").expect(200, &lines),
            Req::get("the app's exception handler", "/teapot").expect(418, "short and stout"),
            Req::get("NotFound", "/missing").expect(404, "Resource not found"),
            Req::get("BadRequest", "/bad").expect(400, "no good"),
            Req::get("a handler that raises", "/boom").expect(500, "Internal Server Error"),
            Req::get("a path nothing routes", "/nowhere").expect(404, "Resource not found"),
        ],
    );
}

/// A WebSocket route: text both ways, the app's close code, a client
/// close (BlackSheep raises `WebSocketDisconnectError` with its code), and
/// a path nothing routes.
#[test]
fn blacksheep_websocket_routes_as_under_uvicorn() {
    let servers = start_servers(&[], &[]);
    let steps = hi_then_close();
    same_transcripts(
        &servers,
        "/ws/ada",
        &[],
        &steps,
        &[
            "accepted: 101",
            "text: hello ada",
            "text: echo: hi",
            "close: 4001 \"\"",
            "end of stream",
        ],
    );
    let steps = [
        Step::Receive,
        Step::Close(Some((4002, "gone"))),
        Step::Receive,
    ];
    same_transcripts(
        &servers,
        "/ws/bob",
        &[],
        &steps,
        &["accepted: 101", "text: hello bob", "close: 4002 \"gone\""],
    );
    crate::frameworks_asgi::wait_for_body(&servers, "/log", "ws disconnected: 4002");
    let [u, c] = servers
        .both()
        .map(|(_, addr)| ws_session(addr, "/ws-nowhere/x", &[], &[], 0));
    assert!(
        u.len() == 1 && u[0].starts_with("refused: "),
        "uvicorn: {u:?}"
    );
    assert_eq!(c, u, "corral (left), uvicorn (right)\n{}", servers.logs());
}

/// `on_start` and `on_stop` with a WebSocket open across a graceful stop:
/// the client gets a close frame (uvicorn's 1012, corral's 1001: README,
/// WebSockets), the handler sees the disconnect with that code, then
/// `on_stop` runs.
#[test]
fn blacksheep_on_start_and_on_stop_with_a_websocket_open() {
    let mut servers = start_servers(&[], &[]);
    crate::frameworks_asgi::a_graceful_stop_closes_an_open_socket(&mut servers, "/ws", &[]);
    // The handler sees the code its client was sent.
    for (server, log, code) in [
        ("uvicorn", servers.reference.log.text(), 1012),
        ("corral", servers.corral.log.text(), 1001),
    ] {
        let said: Vec<&str> = log
            .lines()
            .filter_map(|l| l.split("bsapp: ").nth(1))
            .collect();
        let disconnected = format!("ws disconnected: {code}");
        assert_eq!(
            said,
            ["on_start", disconnected.as_str(), "on_stop"],
            "{server}:\n{log}"
        );
    }
}

/// `request.scheme` and `client_ip` from a trusted proxy (uvicorn's
/// `--forwarded-allow-ips`, which corral takes as it is).
#[test]
fn blacksheep_scheme_and_client_behind_forwarded_allow_ips() {
    let servers = start_servers(
        &["--proxy-headers", "--forwarded-allow-ips", "127.0.0.1"],
        &["--forwarded-allow-ips", "127.0.0.1"],
    );
    same_answers(
        &servers,
        &[
            Req::get("no proxy headers", "/whereami").expect(
                200,
                r#"{"scheme":"http","host":"localhost","client_ip":"127.0.0.1","url":"/whereami"}"#,
            ),
            Req::get("from a trusted proxy", "/whereami?x=1")
                .header("Host", "app.example.com")
                .header("X-Forwarded-Proto", "https")
                .header("X-Forwarded-For", "198.51.100.1, 203.0.113.9")
                .expect(
                    200,
                    r#"{"scheme":"https","host":"app.example.com","client_ip":"203.0.113.9","url":"/whereami?x=1"}"#,
                ),
        ],
    );
}
