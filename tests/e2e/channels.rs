//! A Django Channels project (`chanapp.asgi:application`, laid out as
//! Channels' tutorial lays it out) answers through corral as through
//! uvicorn: `ProtocolTypeRouter` sends HTTP to Django's ASGI handler and
//! WebSockets through `AllowedHostsOriginValidator` and
//! `AuthMiddlewareStack` to a `URLRouter` of consumers (a sync
//! `WebsocketConsumer`, an `AsyncWebsocketConsumer` in a group of the
//! in-memory channel layer).
//!
//! Each test starts both servers on one copy of the project, one worker
//! process each (the channel layer and the consumers' event record live in
//! that process), and compares what a client sees: HTTP answers as
//! `frameworks_asgi` compares them, WebSockets as transcripts, one line
//! per event.
//!
//! The project lives in `tests/apps/channels_app/`. It needs Django,
//! Channels and uvicorn in the interpreter the tests use: `./test.sh`
//! installs them into `.venv`.

use crate::common::compare::*;
use crate::frameworks_asgi::{Step, same_answers, text, ws_session};

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// Longest wait for uvicorn to accept connections, for the Python probe to
/// answer, or for a consumer's record to show.
const START_TIMEOUT: Duration = Duration::from_secs(20);

const SPEC: &str = "chanapp.asgi:application";

const FILES: &[(&str, &str)] = &[
    (
        "chanapp/__init__.py",
        include_str!("../apps/channels_app/chanapp/__init__.py"),
    ),
    (
        "chanapp/settings.py",
        include_str!("../apps/channels_app/chanapp/settings.py"),
    ),
    (
        "chanapp/auth.py",
        include_str!("../apps/channels_app/chanapp/auth.py"),
    ),
    (
        "chanapp/events.py",
        include_str!("../apps/channels_app/chanapp/events.py"),
    ),
    (
        "chanapp/views.py",
        include_str!("../apps/channels_app/chanapp/views.py"),
    ),
    (
        "chanapp/urls.py",
        include_str!("../apps/channels_app/chanapp/urls.py"),
    ),
    (
        "chanapp/consumers.py",
        include_str!("../apps/channels_app/chanapp/consumers.py"),
    ),
    (
        "chanapp/asgi.py",
        include_str!("../apps/channels_app/chanapp/asgi.py"),
    ),
];

/// The Origin a browser on the site sends; `AllowedHostsOriginValidator`
/// refuses a handshake without one.
const ORIGIN: (&str, &str) = ("Origin", "http://localhost");

/// Panics, saying what to do, unless `python()` can import what these
/// tests serve.
fn check_python() {
    require_modules(
        "channels, django, uvicorn",
        "a real Django Channels project",
    );
}

/// Both servers on one copy of the project, one worker process each.
fn start_servers() -> Servers {
    check_python();
    Servers::start(
        "Django Channels",
        FILES,
        |dir| crate::frameworks_asgi::uvicorn_with(dir, SPEC, &[]),
        &[SPEC, "-w", "1"],
        1,
    )
}

/// Plays `steps` on a WebSocket to `path` (with `headers`) against both
/// servers: uvicorn must give `expected`, and corral what uvicorn gave.
fn same_session(
    servers: &Servers,
    path: &str,
    headers: &[(&str, &str)],
    steps: &[Step],
    expected: &[&str],
) {
    let [u, c] = both_sessions(servers, path, headers, steps);
    crate::frameworks_asgi::assert_same_transcripts(servers, path, expected, &u, &c);
}

/// The transcripts of `steps` against uvicorn, then corral.
fn both_sessions(
    servers: &Servers,
    path: &str,
    headers: &[(&str, &str)],
    steps: &[Step],
) -> [Vec<String>; 2] {
    [
        ws_session(
            &servers.reference.addr,
            path,
            headers,
            steps,
            servers.reference.pid(),
        ),
        ws_session(
            &servers.corral.addr,
            path,
            headers,
            steps,
            servers.corral.pid(),
        ),
    ]
}

/// Polls GET /events/ on every server until it answers `want` (a JSON
/// list of what the consumers recorded).
fn same_events(servers: &Servers, want: &str) {
    for (server, addr) in servers.both() {
        wait_for_events(servers, server, addr, want);
    }
}

/// Polls GET /events/ on `addr` until it answers `want`.
fn wait_for_events(servers: &Servers, server: &str, addr: &str, want: &str) {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let got = Req::get("events", "/events/").send_to(addr);
        if got.as_ref().is_ok_and(|r| r.text() == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{server}: /events/ never showed {want}; last answer: {:?}\n{}",
            got.map(|r| r.text()),
            servers.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The session cookie of user 7 (ada), as `name=value`: a signed cookie,
/// good on both servers (one SECRET_KEY).
fn login(addr: &str) -> String {
    let resp = Req::get("login", "/login/?id=7").send_to(addr).unwrap();
    assert_eq!((resp.status, resp.text()), (200, "logged in".to_string()));
    resp.header("set-cookie")
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no session cookie: {resp:?}"))
        .to_string()
}

/// Django's ASGI handler behind `ProtocolTypeRouter`, and the consumers
/// through the Origin check and the session/auth middleware: a session
/// cookie made over HTTP names the user on the WebSocket handshake;
/// `disconnect()` runs with the client's close code, and with the app's
/// own when the consumer closes (it waits for the `websocket.disconnect`
/// that follows its `websocket.close`, which corral did not send: its
/// `disconnect()` never ran, and its task waited on).
#[test]
fn channels_http_auth_and_consumers_as_under_uvicorn() {
    let servers = start_servers();
    let cookie = login(&servers.reference.addr);
    let with_cookie = cookie.clone();
    same_answers(
        &servers,
        &[
            Req::get("Django's ASGI handler", "/").expect(200, "hello from Django under Channels"),
            Req::get("anonymous over HTTP", "/whoami/").expect(200, "anonymous"),
            Req::get("the session cookie over HTTP", "/whoami/")
                .header("Cookie", &with_cookie)
                .expect(200, "ada"),
            Req::get("404", "/nowhere/").expect(404, "Not Found"),
            Req::get("500", "/boom/").expect(500, "Server Error (500)"),
            Req::get("nothing recorded yet", "/events/").expect(200, "[]"),
        ],
    );
    let cookie_header = ("Cookie", cookie.as_str());
    same_session(
        &servers,
        "/ws/echo/",
        &[ORIGIN],
        &[
            Step::Receive,
            text("hi"),
            Step::Receive,
            Step::Send(Message::binary(vec![1, 2, 3])),
            Step::Receive,
            Step::Close(Some((4003, "bye"))),
            Step::Receive,
        ],
        &[
            "accepted: 101",
            "text: hello anonymous",
            "text: echo: hi",
            "binary: [3, 2, 1]",
            "close: 4003 \"bye\"",
        ],
    );
    same_events(&servers, r#"["echo anonymous disconnect 4003"]"#);
    same_session(
        &servers,
        "/ws/echo/",
        &[ORIGIN, cookie_header],
        &[Step::Receive, Step::Close(None), Step::Receive],
        &["accepted: 101", "text: hello ada", "close: no code"],
    );
    same_events(
        &servers,
        r#"["echo anonymous disconnect 4003", "echo ada disconnect 1005"]"#,
    );
    // The consumer closes: the client gets its code, and disconnect() runs
    // with it (the server's websocket.disconnect after websocket.close).
    same_session(
        &servers,
        "/ws/echo/",
        &[ORIGIN],
        &[Step::Receive, text("close"), Step::Receive, Step::Receive],
        &[
            "accepted: 101",
            "text: hello anonymous",
            "close: 4001 \"\"",
            "end of stream",
        ],
    );
    same_events(
        &servers,
        r#"["echo anonymous disconnect 4003", "echo ada disconnect 1005", "echo anonymous disconnect 4001"]"#,
    );
}

/// Handshakes the app refuses: a bad Origin, or none, gets 403
/// (`AllowedHostsOriginValidator` closes before accepting), a consumer
/// that raises in `connect()`, or a path no route matches, 500, labelled
/// as uvicorn labels it (corral's was `text/plain` without the charset).
/// Channels' refusing consumer then waits for `websocket.disconnect`,
/// which it gets as from uvicorn, so that it ends: before, it waited on,
/// and a graceful stop waited for it (30 s, the graceful timeout) before
/// the worker exited.
#[test]
fn channels_refused_handshakes_as_under_uvicorn_and_a_quick_stop_after() {
    let mut servers = start_servers();
    for (why, origin) in [
        ("another site's Origin", Some("http://evil.example")),
        (
            "a host that only starts as an allowed one",
            Some("http://localhost.evil.example"),
        ),
        ("no Origin", None),
    ] {
        let headers: Vec<(&str, &str)> = origin.map(|o| ("Origin", o)).into_iter().collect();
        let [u, c] = both_sessions(&servers, "/ws/echo/", &headers, &[Step::Receive]);
        assert_eq!(u, ["refused: 403 content-length=0 \"\""], "uvicorn, {why}");
        assert_eq!(c, u, "corral, {why}\n{}", servers.logs());
    }
    let refused_500 = "refused: 500 content-length=21 content-type=text/plain; charset=utf-8 \"Internal Server Error\"";
    for (why, path) in [
        ("a consumer that raises in connect()", "/ws/echo/?raise"),
        ("a path no route matches", "/ws/nowhere/"),
    ] {
        let [u, c] = both_sessions(&servers, path, &[ORIGIN], &[Step::Receive]);
        assert_eq!(u, [refused_500], "uvicorn, {why}");
        assert_eq!(c, u, "corral, {why}\n{}", servers.logs());
    }
    // Nothing is left running: a graceful stop is quick under both.
    let quick = Duration::from_secs(5);
    assert!(
        servers.reference.stop(libc::SIGTERM, quick).is_some(),
        "uvicorn did not exit within {quick:?}\n{}",
        servers.logs()
    );
    servers.corral.signal(libc::SIGTERM);
    assert!(
        servers.corral.wait_exit(quick).is_some(),
        "corral did not exit within {quick:?}: the refusing consumers wait on\n{}",
        servers.logs()
    );
}

/// A consumer that raises after accepting: uvicorn drops the connection
/// without a close frame (a client sees 1006), corral closes with 1011
/// (internal error), as RFC 6455 has it (README: WebSockets). Neither runs
/// `disconnect()`; both log the traceback, and serve on.
#[test]
fn channels_a_consumer_that_raises_is_closed_with_1011() {
    let servers = start_servers();
    let steps = [Step::Receive, text("boom"), Step::Receive];
    let [u, c] = both_sessions(&servers, "/ws/echo/", &[ORIGIN], &steps);
    assert_eq!(
        u,
        [
            "accepted: 101",
            "text: hello anonymous",
            "error: WebSocket protocol error: Connection reset without closing handshake"
        ],
        "uvicorn\n{}",
        servers.logs()
    );
    assert_eq!(
        c,
        ["accepted: 101", "text: hello anonymous", "close: 1011 \"\""],
        "corral\n{}",
        servers.logs()
    );
    for (name, log) in [
        ("uvicorn", &servers.reference.log),
        ("corral", &servers.corral.log),
    ] {
        assert!(
            log.wait_for("RuntimeError: boom in a consumer", START_TIMEOUT)
                .is_some(),
            "{name}: no traceback in the log:\n{}",
            log.text()
        );
    }
    same_answers(
        &servers,
        &[Req::get("no disconnect() ran; the worker serves on", "/events/").expect(200, "[]")],
    );
}

/// Two sockets in one room of the in-memory channel layer (one worker):
/// what one sends, `group_send` hands to both consumers, in the order
/// sent; a socket that leaves is discarded from the group in
/// `disconnect()` and gets nothing more.
#[test]
fn channels_group_send_reaches_every_socket_in_the_room() {
    let servers = start_servers();
    let [u, c] = servers.both().map(|(_, addr)| chat(addr));
    assert_eq!(
        u,
        [
            "ada got: ada: hi",
            "bob got: ada: hi",
            "bob got: bob: hello ada",
            "ada got: bob: hello ada",
            "ada got: close 1000",
            "bob got: bob: alone",
        ],
        "uvicorn\n{}",
        servers.logs()
    );
    assert_eq!(
        c,
        u,
        "corral (left) and uvicorn (right)\n{}",
        servers.logs()
    );
    // bob's connection was dropped without a close frame: corral gives
    // disconnect() 1006 (abnormal closure), as RFC 6455 names it, where
    // uvicorn gives 1005 (README: WebSockets).
    for (server, addr, bob) in [
        ("uvicorn", &servers.reference.addr, 1005),
        ("corral", &servers.corral.addr, 1006),
    ] {
        let want = format!(r#"["chat ada disconnect 1000", "chat bob disconnect {bob}"]"#);
        wait_for_events(&servers, server, addr, &want);
    }
}

/// ada and bob in room "lobby" on `addr`, as the lines of what each got.
fn chat(addr: &str) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let open = |name: &str| {
            let mut req = format!("ws://{addr}/ws/chat/lobby/?{name}")
                .into_client_request()
                .unwrap();
            req.headers_mut()
                .insert(ORIGIN.0, ORIGIN.1.parse().unwrap());
            async move {
                tokio::time::timeout(IO_TIMEOUT, tokio_tungstenite::connect_async(req))
                    .await
                    .expect("handshake timed out")
                    .expect("handshake")
                    .0
            }
        };
        let mut ada = open("ada").await;
        let mut bob = open("bob").await;
        let mut lines = Vec::new();
        async fn next(
            who: &str,
            ws: &mut (
                     impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
                     + Unpin
                 ),
        ) -> String {
            match tokio::time::timeout(IO_TIMEOUT, ws.next()).await {
                Err(_) => format!("{who}: nothing received"),
                Ok(Some(Ok(Message::Text(t)))) => format!("{who} got: {}", t.as_str()),
                Ok(Some(Ok(Message::Close(Some(f))))) => {
                    format!("{who} got: close {}", u16::from(f.code))
                }
                Ok(other) => format!("{who} got: {other:?}"),
            }
        }
        ada.send(Message::text("hi")).await.unwrap();
        lines.push(next("ada", &mut ada).await);
        lines.push(next("bob", &mut bob).await);
        bob.send(Message::text("hello ada")).await.unwrap();
        lines.push(next("bob", &mut bob).await);
        lines.push(next("ada", &mut ada).await);
        ada.close(Some(CloseFrame {
            code: 1000.into(),
            reason: "".into(),
        }))
        .await
        .unwrap();
        lines.push(next("ada", &mut ada).await);
        bob.send(Message::text("alone")).await.unwrap();
        lines.push(next("bob", &mut bob).await);
        lines
    })
}

/// The lifespan, which the project refuses, and a graceful stop (SIGTERM)
/// with a WebSocket open: the client gets a close frame and the consumer's
/// `disconnect()` runs with its code before the server exits: uvicorn's
/// code is 1012 (service restart), corral's 1001 (going away), on purpose
/// (README: WebSockets).
#[test]
fn channels_graceful_stop_closes_an_open_websocket() {
    let mut servers = start_servers();
    crate::frameworks_asgi::a_graceful_stop_closes_an_open_socket(
        &mut servers,
        "/ws/echo/",
        &[ORIGIN],
    );
    // At the start, each said that the app refused the lifespan
    // (`ProtocolTypeRouter` has no "lifespan" entry).
    for (name, log, needle) in [
        (
            "uvicorn",
            &servers.reference.log,
            "ASGI 'lifespan' protocol appears unsupported.",
        ),
        (
            "corral",
            &servers.corral.log,
            "the app does not support the ASGI lifespan protocol (it raised ValueError: No \
             application configured for scope type 'lifespan'): serving it without one",
        ),
    ] {
        assert!(
            log.text().contains(needle),
            "{name}: no {needle:?} in:\n{}",
            log.text()
        );
    }
    for (name, log, code) in [
        ("uvicorn", &servers.reference.log, 1012),
        ("corral", &servers.corral.log, 1001),
    ] {
        assert!(
            log.text()
                .contains(&format!("chanapp: echo anonymous disconnect {code}")),
            "{name}: disconnect() did not run with {code} before the exit:\n{}",
            log.text()
        );
    }
}
