//! A Litestar app answers through corral as through uvicorn: routes with
//! typed parameters and JSON bodies, a lifespan context manager with
//! `on_startup`/`on_shutdown` hooks, `Stream` and `File` responses,
//! exception handlers, and a WebSocket handler.
//!
//! Each test starts both servers on one copy of the app, one worker
//! process each, and compares what a client sees as `frameworks_asgi`
//! does. The app lives in `tests/apps/litestar_app/`; it needs Litestar
//! and uvicorn in the interpreter the tests use (`./test.sh` installs them
//! into `.venv`).

use crate::common::compare::*;
use crate::frameworks_asgi::{Step, hi_then_close, same_answers, same_transcripts, text};

const SPEC: &str = "litestarapp:app";

const FILES: &[(&str, &str)] = &[(
    "litestarapp.py",
    include_str!("../apps/litestar_app/litestarapp.py"),
)];

/// Panics, saying what to do, unless `python()` can import what these
/// tests serve.
fn check_python() {
    require_modules("litestar, uvicorn", "a real Litestar app");
}

/// Both servers on one copy of the app, one worker process each.
fn start_servers() -> Servers {
    check_python();
    crate::frameworks_asgi::beside_uvicorn("Litestar", FILES, SPEC, &[], &[])
}

/// Routes, the state the lifespan set, `Stream` and `File` responses, the
/// app's exception handlers (its own 404 and 418) and Litestar's own
/// error answers (403 from an `HTTPException`, 400 for a body that is not
/// JSON, 500 for an exception nothing handles): the same answers from
/// corral as from uvicorn.
#[test]
fn litestar_routes_responses_and_exception_handlers_as_under_uvicorn() {
    let servers = start_servers();
    let lines: String = (0..5).map(|i| format!("line {i}\n")).collect();
    same_answers(
        &servers,
        &[
            Req::get("index", "/").expect(200, "Hello from Litestar"),
            Req::get("lifespan state, startup hooks in order", "/greeting").expect(
                200,
                r#"{"greeting":"hello from the lifespan","log":["lifespan enter","on_startup"]}"#,
            ),
            Req::get("typed path and query parameters", "/items/4?q=caf%C3%A9")
                .expect(200, r#"{"item_id":4,"q":"café"}"#),
            Req::get("a path parameter that is not an int", "/items/x")
                .expect(404, "nothing at /items/x"),
            Req::post("a JSON body", "/items", JSON_TYPE, r#"{"name": "naïve ✓"}"#)
                .expect(201, r#"{"created":{"name":"naïve ✓"}}"#),
            Req::post("a body that is not JSON", "/items", JSON_TYPE, "{not json")
                .expect(400, "status_code"),
            Req::get("Stream from an async generator", "/stream").expect(200, &lines),
            Req::get("File", "/file").expect(200, "A Litestar app"),
            Req::new("HEAD of a File", "HEAD", "/file"),
            Req::get("an exception handler's 418", "/teapot")
                .expect(418, r#"{"error":"teapot","detail":"short and stout"}"#),
            Req::get("HTTPException(403)", "/forbidden").expect(403, "not for you"),
            Req::get("an exception nothing handles", "/boom").expect(500, "Internal Server Error"),
            Req::get("the app's 404 handler", "/nowhere").expect(404, "nothing at /nowhere"),
        ],
    );
}

/// A WebSocket handler: text both ways, the app's close code and reason,
/// and a handler that raises after accepting, which Litestar itself
/// closes with 4500 (4000 and the HTTP status) under both servers.
#[test]
fn litestar_websocket_handler_as_under_uvicorn() {
    let servers = start_servers();
    for (steps, expected) in [
        (
            Vec::from(hi_then_close()),
            vec![
                "accepted: 101",
                "text: hello ada",
                "text: echo: hi",
                "close: 4001 \"closed by the app\"",
                "end of stream",
            ],
        ),
        (
            vec![Step::Receive, text("boom"), Step::Receive, Step::Receive],
            vec![
                "accepted: 101",
                "text: hello ada",
                "close: 4500 \"Internal Server Error\"",
                "end of stream",
            ],
        ),
    ] {
        same_transcripts(&servers, "/ws?name=ada", &[], &steps, &expected);
    }
}

/// The lifespan at stop: a graceful stop (SIGTERM) with a WebSocket open
/// closes it (uvicorn with 1012, corral with 1001: README, WebSockets),
/// then leaves the app's lifespan context manager and runs its
/// `on_shutdown` hook, in that order (Litestar's), under both servers.
#[test]
fn litestar_lifespan_runs_at_start_and_stop_with_a_websocket_open() {
    let mut servers = start_servers();
    same_answers(
        &servers,
        &[Req::get("startup ran once", "/log").expect(200, r#"["lifespan enter","on_startup"]"#)],
    );
    crate::frameworks_asgi::a_graceful_stop_closes_an_open_socket(&mut servers, "/ws", &[]);
    crate::frameworks_asgi::assert_both_said(
        &servers,
        "litestarapp",
        &[
            "lifespan enter",
            "on_startup",
            "lifespan exit",
            "on_shutdown",
        ],
    );
}

/// A client that leaves an endless `Stream` stops the app's generator,
/// under corral as under uvicorn (Litestar listens for `http.disconnect`
/// beside the stream and cancels it).
#[test]
fn litestar_a_stream_whose_client_leaves_is_stopped() {
    let servers = start_servers();
    crate::frameworks_asgi::leave_an_endless_stream(&servers, "/endless");
    crate::frameworks_asgi::wait_for_body(&servers, "/log", "endless stream stopped");
    same_answers(
        &servers,
        &[Req::get("how the generator stopped", "/log").expect(
            200,
            r#"["lifespan enter","on_startup","endless stream stopped: CancelledError"]"#,
        )],
    );
}
