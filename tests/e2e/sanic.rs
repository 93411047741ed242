//! A Sanic app in ASGI mode answers through corral as through uvicorn:
//! routes with typed parameters, JSON, forms, uploads, a chunked body, a
//! response streamed with `request.respond()`, Sanic's error pages, a
//! WebSocket route, and the server listeners (`before_server_start` ...
//! `after_server_stop`) that the ASGI lifespan runs, across a graceful
//! stop.
//!
//! Each test starts both servers on one copy of the app, one worker
//! process each, and compares what a client sees as `frameworks_asgi`
//! does. The app lives in `tests/apps/sanic_app/`; it needs Sanic and
//! uvicorn in the interpreter the tests use (`./test.sh` installs them
//! into `.venv`).

use crate::common::compare::*;
use crate::frameworks::{FORM_TYPE, file_uploads};
use crate::frameworks_asgi::{Step, hi_then_close, same_answers, same_transcripts, ws_session};

const SPEC: &str = "sanicapp:app";

const FILES: &[(&str, &str)] = &[("sanicapp.py", include_str!("../apps/sanic_app/sanicapp.py"))];

/// Both servers on one copy of the app, one worker process each.
fn start_servers() -> Servers {
    require_modules("sanic, uvicorn", "a real Sanic app");
    crate::frameworks_asgi::beside_uvicorn("Sanic", FILES, SPEC, &[], &[])
}

/// Routes, bodies, uploads, a streamed response and Sanic's error pages
/// (404, 418 from a `SanicException`, 500): the same answers from corral
/// as from uvicorn.
#[test]
fn sanic_routes_bodies_and_errors_as_under_uvicorn() {
    let servers = start_servers();
    let lines: String = (0..5).map(|i| format!("line {i}\n")).collect();
    let octets = "application/octet-stream";
    same_answers(
        &servers,
        &[
            Req::get("index", "/").expect(200, "Hello from Sanic"),
            Req::get("the start listeners ran", "/log")
                .expect(200, r#"["before_server_start","after_server_start"]"#),
            Req::get("typed path and query parameters", "/items/4?q=caf%C3%A9")
                .expect(200, r#"{"item_id":4,"q":"caf\u00e9"}"#),
            Req::get("a path parameter that is not an int", "/items/x")
                .expect(404, "Requested URL /items/x not found"),
            // Sanic matches routes on the raw path, escapes and all.
            Req::get("a non-ASCII path parameter", "/hello/caf%C3%A9")
                .expect(200, "hello caf%C3%A9"),
            Req::post("JSON", "/json", JSON_TYPE, r#"{"a": [1, "naïve ✓"]}"#)
                .expect(200, r#"{"got":{"a":[1,"na\u00efve \u2713"]}}"#),
            Req::post("a body", "/echo", octets, binary(300_000)).expect(200, r#""length":300000"#),
            Req::post(
                "a chunked body",
                "/echo",
                octets,
                chunked(&binary(200_000), 7000),
            )
            .header("Transfer-Encoding", "chunked")
            .expect(200, r#""length":200000"#),
            Req::post("a form", "/form", FORM_TYPE, "a=1&a=2&b=caf%C3%A9")
                .expect(200, r#"{"a":["1","2"],"b":["caf\u00e9"]}"#),
            file_uploads("file uploads", "/upload", 400_000),
            Req::get("request.respond() and send()", "/stream").expect(200, &lines),
            Req::get("a SanicException", "/teapot").expect(418, "short and stout"),
            Req::get("NotFound", "/missing").expect(404, "not here"),
            Req::get("a handler that raises", "/boom").expect(500, "Internal Server Error"),
            Req::get("a path nothing routes", "/nowhere").expect(404, "Not Found"),
        ],
    );
}

/// A WebSocket route: text both ways, and a client close (Sanic's
/// `recv()` then returns None), as under uvicorn. Sanic's `ws.close()`
/// sends nothing over ASGI: the handler returns, which corral follows with
/// a close (1000), where uvicorn drops the connection (README,
/// WebSockets).
#[test]
fn sanic_websocket_route_as_under_uvicorn() {
    let servers = start_servers();
    let steps = hi_then_close();
    let [u, c] = servers
        .both()
        .map(|(_, addr)| ws_session(addr, "/ws/ada", &[], &steps, 0));
    let said = |end: &str| {
        vec![
            "accepted: 101".to_string(),
            "text: hello ada".to_string(),
            "text: echo: hi".to_string(),
            end.to_string(),
        ]
    };
    assert_eq!(
        u,
        said("error: WebSocket protocol error: Connection reset without closing handshake"),
        "uvicorn\n{}",
        servers.logs()
    );
    let mut closed = said("close: 1000 \"\"");
    closed.push("end of stream".to_string());
    assert_eq!(c, closed, "corral\n{}", servers.logs());
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
    crate::frameworks_asgi::wait_for_body(&servers, "/log", "ws ended");
}

/// The server listeners at start and at a graceful stop, in Sanic's order,
/// under both servers.
#[test]
fn sanic_server_listeners_run_at_start_and_stop() {
    let mut servers = start_servers();
    assert!(
        servers
            .reference
            .stop(libc::SIGTERM, std::time::Duration::from_secs(20))
            .is_some(),
        "uvicorn did not exit\n{}",
        servers.logs()
    );
    servers.corral.signal(libc::SIGTERM);
    assert!(
        servers
            .corral
            .wait_exit(std::time::Duration::from_secs(20))
            .is_some(),
        "corral did not exit\n{}",
        servers.logs()
    );
    crate::frameworks_asgi::assert_both_said(
        &servers,
        "sanicapp",
        &[
            "before_server_start",
            "after_server_start",
            "before_server_stop",
            "after_server_stop",
        ],
    );
}
