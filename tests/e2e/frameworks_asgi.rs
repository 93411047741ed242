//! Real FastAPI and Starlette apps answer through corral (as ASGI apps) as
//! they do through uvicorn.
//!
//! Each test starts both servers on the same copy of the same app, one
//! worker process each (the apps keep background-task results and gates in
//! memory), sends both the same requests and compares the answers: status
//! line, body bytes and headers, except the ones that describe the server or
//! the connection rather than the app (see [`IGNORED_HEADERS`]). WebSockets
//! compare as transcripts: what the client saw, one line per event.
//!
//! The request and WebSocket comparisons here (`same_answers`,
//! `ws_session`, `Step`) serve the other frameworks' files too
//! (`channels`, `quart`, `litestar`).
//!
//! The apps live in `tests/apps/`. They need FastAPI and uvicorn in the
//! interpreter the tests use: `./test.sh` installs them into `.venv`.
//! Without them every test here fails and says so.

use crate::common::compare::*;
use crate::common::*;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Longest wait for uvicorn to accept connections, for the Python probe to
/// answer, or for a background task's effect to show.
const START_TIMEOUT: Duration = Duration::from_secs(20);

// ------------------------------------------------------------------ apps

/// An app in `tests/apps/`, and how corral is told to serve it.
struct App {
    name: &'static str,
    /// `module:attribute`, for both servers.
    spec: &'static str,
    /// The module's file name and text.
    file: (&'static str, &'static str),
    /// corral's `--interface`.
    interface: &'static str,
}

/// Detected as ASGI (`--interface auto`, the default): FastAPI's
/// `__call__` is a coroutine function.
const FASTAPI: App = App {
    name: "FastAPI",
    spec: "fastapiapp:app",
    file: (
        "fastapiapp.py",
        include_str!("../apps/fastapi_app/fastapiapp.py"),
    ),
    interface: "auto",
};

/// Named ASGI explicitly.
const STARLETTE: App = App {
    name: "Starlette",
    spec: "starletteapp:app",
    file: (
        "starletteapp.py",
        include_str!("../apps/starlette_app/starletteapp.py"),
    ),
    interface: "asgi",
};

// ------------------------------------------------ the Python environment

/// Panics, saying what to do, unless `python()` can import what these
/// tests serve.
fn check_python() {
    require_modules(
        "fastapi, starlette, uvicorn, websockets",
        "real FastAPI and Starlette apps",
    );
}

// --------------------------------------------------------------- uvicorn

/// `python -m uvicorn SPEC --port PORT --no-access-log` in `dir` (one
/// process), accepting connections (after the lifespan startup).
fn uvicorn(dir: &Path, spec: &str) -> Reference {
    uvicorn_with(dir, spec, &[])
}

/// [`uvicorn`], with `args` added to its command line.
pub(crate) fn uvicorn_with(dir: &Path, spec: &str, args: &[&str]) -> Reference {
    let port = free_port();
    let mut cmd = Command::new(python());
    cmd.args(["-m", "uvicorn", spec, "--host", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .args(["--no-access-log", "--app-dir"])
        .arg(dir)
        .args(args)
        .current_dir(dir)
        .env_remove("WEB_CONCURRENCY");
    Reference::start("uvicorn", cmd, format!("127.0.0.1:{port}"), START_TIMEOUT)
}

/// Both servers on one copy of the app, one worker process each.
fn start_servers(app: &'static App) -> Servers {
    check_python();
    Servers::start(
        app.name,
        &[app.file],
        |dir| uvicorn(dir, app.spec),
        &[app.spec, "-w", "1", "--interface", app.interface],
        1,
    )
}

// ----------------------------------------------- responses, read by hand

/// The status line and headers of a response, as text.
pub(crate) fn read_head(r: &mut impl BufRead) -> std::io::Result<String> {
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        if r.read_line(&mut head)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(head)
}

/// One chunk of a chunked body (empty for the last one).
pub(crate) fn read_chunk(r: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let size = usize::from_str_radix(line.trim(), 16)
        .map_err(|_| std::io::Error::other(format!("bad chunk size line {line:?}")))?;
    let mut chunk = vec![0; size + 2];
    r.read_exact(&mut chunk)?;
    chunk.truncate(size);
    Ok(chunk)
}

// ------------------------------------------------------------ comparison

/// Sends `reqs` in order to both servers and fails with a readable diff of
/// every request they answered differently, or not as expected.
pub(crate) fn same_answers(servers: &Servers, reqs: &[Req]) {
    assert_same_answers(servers, reqs, |req| {
        servers
            .both()
            .map(|(_, addr)| req.send_to(addr).map(normalise))
    });
}

/// Removes what legitimately differs between two servers running the same
/// app, so that everything else can compare byte for byte.
fn normalise(mut resp: Response) -> Response {
    // Starlette builds a 405's Allow from a set of method names, whose order
    // follows Python's per-process string hashing.
    sort_allow(&mut resp);
    // corral's reason phrase is hyper's standard one; uvicorn's is Python's
    // `http.HTTPStatus` phrase, worded otherwise for a few statuses, and
    // reworded after RFC 9110 in Python 3.13 (README, WSGI and ASGI: where
    // corral differs from uvicorn). Each is read as the first of its row.
    const SAME_REASON: &[(u16, &[&str])] = &[
        (
            203,
            &[
                "Non-Authoritative Information",
                "Non Authoritative Information",
            ],
        ),
        (
            413,
            &[
                "Content Too Large",
                "Payload Too Large",
                "Request Entity Too Large",
            ],
        ),
        (414, &["URI Too Long", "Request-URI Too Long"]),
        (
            416,
            &["Range Not Satisfiable", "Requested Range Not Satisfiable"],
        ),
        (418, &["I'm a Teapot", "I'm a teapot"]),
        (422, &["Unprocessable Content", "Unprocessable Entity"]),
    ];
    for (status, phrases) in SAME_REASON {
        if resp.status == *status && phrases.contains(&resp.reason.as_str()) {
            resp.reason = phrases[0].to_string();
        }
    }
    resp
}

/// Polls GET `path` on every server until its body contains `needle`.
pub(crate) fn wait_for_body(servers: &Servers, path: &str, needle: &str) {
    for (server, addr) in servers.both() {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let got = Req::get("poll", path).send_to(addr);
            if got
                .as_ref()
                .is_ok_and(|r| contains(&r.body, needle.as_bytes()))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{server}: GET {path} never showed {needle:?}; last answer: {got:?}\n{}",
                servers.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

// ---------------------------------------------------------- request data

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ------------------------------------------------------------- WebSocket

/// What a WebSocket client does, step by step.
pub(crate) enum Step {
    Send(Message),
    /// Sends a close frame with this code and reason, or with no code.
    Close(Option<(u16, &'static str)>),
    /// Reads the next event from the server into the transcript.
    Receive,
    /// Sends this signal to the server's main process (see
    /// [`ws_session`]) without waiting for anything.
    Signal(i32),
}

pub(crate) fn text(s: &str) -> Step {
    Step::Send(Message::text(s))
}

/// The session the framework tests play at `/ws/NAME`: the greeting, "hi"
/// and its echo, then "close" and what follows it.
pub(crate) fn hi_then_close() -> [Step; 6] {
    [
        Step::Receive,
        text("hi"),
        Step::Receive,
        text("close"),
        Step::Receive,
        Step::Receive,
    ]
}

/// uvicorn (with `uvicorn_args`) and corral (with `corral_args`) on one
/// copy of `files`, serving `spec` with one worker process each.
pub(crate) fn beside_uvicorn(
    app: &'static str,
    files: &[(&str, &str)],
    spec: &'static str,
    uvicorn_args: &[&str],
    corral_args: &[&str],
) -> Servers {
    let mut args = vec![spec, "-w", "1"];
    args.extend_from_slice(corral_args);
    Servers::start(
        app,
        files,
        |dir| uvicorn_with(dir, spec, uvicorn_args),
        &args,
        1,
    )
}

/// Opens `path`, an endless stream of `tick` lines, on each server,
/// reads its head and three ticks, and leaves.
pub(crate) fn leave_an_endless_stream(servers: &Servers, path: &str) {
    for (server, addr) in servers.both() {
        let mut s = connect_with_timeouts(addr).unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
            .unwrap();
        let mut r = BufReader::new(s);
        read_head(&mut r).unwrap_or_else(|e| panic!("{server}: head: {e}"));
        for _ in 0..3 {
            let tick = read_chunk(&mut r).unwrap_or_else(|e| panic!("{server}: {e}"));
            assert_eq!(tick, b"tick\n", "{server}");
        }
    }
}

/// Plays `steps` on WebSocket `path` (with `headers`) at both servers, and
/// checks what uvicorn's said against `expected` and corral's against
/// uvicorn's ([`assert_same_transcripts`]).
pub(crate) fn same_transcripts(
    servers: &Servers,
    path: &str,
    headers: &[(&str, &str)],
    steps: &[Step],
    expected: &[&str],
) {
    let [u, c] = servers
        .both()
        .map(|(_, addr)| ws_session(addr, path, headers, steps, 0));
    assert_same_transcripts(servers, path, expected, &u, &c);
}

/// That uvicorn's transcript of WebSocket `path`, `u`, is `expected`, and
/// corral's, `c`, the same.
pub(crate) fn assert_same_transcripts(
    servers: &Servers,
    path: &str,
    expected: &[&str],
    u: &[String],
    c: &[String],
) {
    assert_eq!(
        u,
        expected,
        "{}: uvicorn's WebSocket {path} did not behave as the app should\n{}",
        servers.app,
        servers.logs()
    );
    assert_eq!(
        c,
        u,
        "{}: corral's WebSocket {path} (left) differs from uvicorn's (right)\n{}",
        servers.app,
        servers.logs()
    );
}

/// Opens WebSocket `path` on each server (with `headers`), reads its
/// greeting, sends the server SIGTERM and reads what comes, then checks it
/// with [`assert_a_graceful_stop_closed_the_socket`].
pub(crate) fn a_graceful_stop_closes_an_open_socket(
    servers: &mut Servers,
    path: &str,
    headers: &[(&str, &str)],
) {
    let steps = [Step::Receive, Step::Signal(libc::SIGTERM), Step::Receive];
    let [u, c] = [
        (&servers.reference.addr, servers.reference.pid()),
        (&servers.corral.addr, servers.corral.pid()),
    ]
    .map(|(addr, pid)| ws_session(addr, path, headers, &steps, pid));
    assert_a_graceful_stop_closed_the_socket(servers, &u, &c);
}

/// What the client of a WebSocket left open across a graceful stop saw,
/// `u` under uvicorn and `c` under corral (a greeting, then the close),
/// and that both servers then exit: uvicorn closes with 1012, corral with
/// 1001 "server shutting down" (README: WebSockets).
pub(crate) fn assert_a_graceful_stop_closed_the_socket(
    servers: &mut Servers,
    u: &[String],
    c: &[String],
) {
    assert_eq!(
        u,
        ["accepted: 101", "text: hello anonymous", "close: 1012 \"\""],
        "uvicorn\n{}",
        servers.logs()
    );
    assert_eq!(
        c,
        [
            "accepted: 101",
            "text: hello anonymous",
            "close: 1001 \"server shutting down\""
        ],
        "corral\n{}",
        servers.logs()
    );
    assert!(
        servers.reference.stop(0, START_TIMEOUT).is_some(),
        "uvicorn did not exit\n{}",
        servers.logs()
    );
    assert!(
        servers.corral.wait_exit(START_TIMEOUT).is_some(),
        "corral did not exit\n{}",
        servers.logs()
    );
}

/// That under each server the app's logger `name` wrote `expected`, in
/// that order (each line without what comes before `name: `).
pub(crate) fn assert_both_said(servers: &Servers, name: &str, expected: &[&str]) {
    let mark = format!("{name}: ");
    for (server, log) in [
        ("uvicorn", servers.reference.log.text()),
        ("corral", servers.corral.log.text()),
    ] {
        let said: Vec<&str> = log
            .lines()
            .filter_map(|l| l.split(mark.as_str()).nth(1))
            .collect();
        assert_eq!(said, expected, "{server}:\n{log}");
    }
}

/// Opens a WebSocket to `addr` + `path` (offering `subprotocols`, if any),
/// plays `steps` and returns what the client saw, one line per event:
/// the handshake's outcome, then every message or close received.
fn ws_transcript(addr: &str, path: &str, subprotocols: &str, steps: &[Step]) -> Vec<String> {
    let headers: &[(&str, &str)] = if subprotocols.is_empty() {
        &[]
    } else {
        &[("Sec-WebSocket-Protocol", subprotocols)]
    };
    ws_session(addr, path, headers, steps, 0)
}

/// [`ws_transcript`] with `headers` added to the handshake request (an
/// `Origin`, a `Cookie`); a [`Step::Signal`] goes to `pid`.
pub(crate) fn ws_session(
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    steps: &[Step],
    pid: u32,
) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
        for (name, value) in headers {
            let name: tokio_tungstenite::tungstenite::http::HeaderName = name.parse().unwrap();
            req.headers_mut().insert(name, value.parse().unwrap());
        }
        let mut lines = Vec::new();
        let connect = tokio_tungstenite::connect_async(req);
        let mut ws = match tokio::time::timeout(IO_TIMEOUT, connect).await {
            Err(_) => return vec!["handshake timed out".to_string()],
            Ok(Err(WsError::Http(resp))) => {
                let body = resp.body().as_deref().unwrap_or_default();
                let mut headers = resp.headers().clone();
                if body.is_empty() {
                    // A Content-Type describes a body: uvicorn labels its
                    // empty 403 refusal text/plain, corral sends none.
                    headers.remove("content-type");
                }
                return vec![format!(
                    "refused: {}{} {:?}",
                    resp.status().as_u16(),
                    app_headers(&headers),
                    String::from_utf8_lossy(body)
                )];
            }
            Ok(Err(e)) => return vec![format!("handshake failed: {e}")],
            Ok(Ok((ws, resp))) => {
                let status = resp.status().as_u16();
                lines.push(format!("accepted: {status}{}", app_headers(resp.headers())));
                ws
            }
        };
        for step in steps {
            let outcome = match step {
                Step::Send(msg) => within("send", ws.send(msg.clone())).await.map(|()| None),
                Step::Close(code) => {
                    let frame = code.map(|(code, reason)| CloseFrame {
                        code: code.into(),
                        reason: reason.into(),
                    });
                    within("close", ws.close(frame)).await.map(|()| None)
                }
                Step::Signal(sig) => {
                    assert!(pid > 0, "Step::Signal needs the server's pid");
                    // SAFETY: signalling a server this test started.
                    unsafe {
                        libc::kill(pid as i32, *sig);
                    }
                    Ok(None)
                }
                Step::Receive => match tokio::time::timeout(IO_TIMEOUT, ws.next()).await {
                    Err(_) => Err("nothing received".to_string()),
                    Ok(None) => Ok(Some("end of stream".to_string())),
                    Ok(Some(Err(e))) => Err(format!("error: {e}")),
                    Ok(Some(Ok(msg))) => Ok(Some(describe(&msg))),
                },
            };
            match outcome {
                Ok(Some(line)) => lines.push(line),
                Ok(None) => {}
                // The steps left would only wait out their timeouts.
                Err(why) => {
                    lines.push(why);
                    break;
                }
            }
        }
        collapse(lines)
    })
}

/// A handshake answer's headers, but the ones any server sends (see
/// [`IGNORED_HEADERS`]) and the handshake's own, as " name=value" each.
fn app_headers(headers: &tokio_tungstenite::tungstenite::http::HeaderMap) -> String {
    const HANDSHAKE: &[&str] = &["upgrade", "sec-websocket-accept"];
    let mut out: Vec<String> = headers
        .iter()
        .filter(|(k, _)| !IGNORED_HEADERS.contains(&k.as_str()) && !HANDSHAKE.contains(&k.as_str()))
        .map(|(k, v)| format!(" {k}={}", String::from_utf8_lossy(v.as_bytes())))
        .collect();
    out.sort();
    out.concat()
}

/// `f`'s result, or what went wrong (it failed, or took over IO_TIMEOUT).
async fn within<T, E: std::fmt::Display>(
    what: &str,
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(IO_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what} failed: {e}")),
        Err(_) => Err(format!("{what} timed out")),
    }
}

/// Runs of the same line as one line ending in "(×N)".
fn collapse(lines: Vec<String>) -> Vec<String> {
    let mut out: Vec<(String, usize)> = Vec::new();
    for line in lines {
        match out.last_mut() {
            Some((last, n)) if *last == line => *n += 1,
            _ => out.push((line, 1)),
        }
    }
    out.into_iter()
        .map(|(line, n)| {
            if n == 1 {
                line
            } else {
                format!("{line} (×{n})")
            }
        })
        .collect()
}

fn describe(msg: &Message) -> String {
    match msg {
        Message::Text(t) if t.len() <= 120 => format!("text: {}", t.as_str()),
        Message::Text(t) => {
            let start: String = t.chars().take(20).collect();
            format!("text: {start}… ({} bytes)", t.len())
        }
        Message::Binary(b) if b.len() <= 32 => format!("binary: {:?}", &b[..]),
        Message::Binary(b) => format!("binary: {} bytes, sha256 {}", b.len(), sha256_hex(b)),
        Message::Close(Some(f)) => format!("close: {} {:?}", u16::from(f.code), f.reason.as_str()),
        Message::Close(None) => "close: no code".to_string(),
        other => format!("other: {other:?}"),
    }
}

/// Plays `steps` against both servers: uvicorn must give `expected`, and
/// corral what uvicorn gave.
pub(crate) fn same_transcript(
    servers: &Servers,
    path: &str,
    subprotocols: &str,
    steps: &[Step],
    expected: &[&str],
) {
    let [u, c] = servers
        .both()
        .map(|(_, addr)| ws_transcript(addr, path, subprotocols, steps));
    assert_same_transcripts(servers, path, expected, &u, &c);
}

// --------------------------------------------------------------- FastAPI

#[test]
fn fastapi_path_query_and_json_bodies() {
    let servers = start_servers(&FASTAPI);
    same_answers(
        &servers,
        &[
            Req::get("index", "/").expect(200, r#"{"hello":"FastAPI"}"#),
            Req::get(
                "int path parameter, query defaults",
                "/items/42?q=caf%C3%A9",
            )
            .expect(200, r#""item_id":42,"q":"café","limit":10"#),
            Req::get(
                "repeated and converted query parameters",
                "/items/7?limit=3&tags=a&tags=b+c",
            )
            .expect(200, r#""limit":3,"tags":["a","b c"]"#),
            Req::get("a path parameter that is not an int", "/items/abc")
                .expect(422, "int_parsing"),
            Req::get("a query parameter that is not an int", "/items/1?limit=x")
                .expect(422, "limit"),
            Req::get(
                "percent-encoded UTF-8 in a path parameter (a sync view)",
                "/hello/caf%C3%A9%20au%20lait",
            )
            .expect(200, "Hello, café au lait!"),
            Req::post(
                "a JSON body validated by a pydantic model",
                "/items",
                JSON_TYPE,
                r#"{"name": "naïve ✓", "price": 10.5, "tags": ["x"]}"#,
            )
            .expect(201, r#""total":12.6"#),
            Req::post(
                "a JSON body the model refuses",
                "/items",
                JSON_TYPE,
                r#"{"name": "", "price": -1}"#,
            )
            .expect(422, "greater_than"),
            Req::post("a body that is not JSON", "/items", JSON_TYPE, "{not json")
                .expect(422, "json_invalid"),
            Req::get(
                "an encoded slash stays inside a path parameter",
                "/hello/a%2Fb",
            )
            .expect(404, "Not Found"),
            Req::get("404 for an unknown path", "/no/such/page").expect(404, "Not Found"),
            Req::new("405 for HEAD on a GET route", "HEAD", "/").expect(405, ""),
            Req::get("500 when the view raises", "/boom").expect(500, "Internal Server Error"),
            Req::get("the app still serves after a 500", "/").expect(200, "FastAPI"),
        ],
    );
}

#[test]
fn fastapi_dependency_injection_and_lifespan_state() {
    let servers = start_servers(&FASTAPI);
    same_answers(
        &servers,
        &[
            Req::get("dependency refuses without X-Token", "/users/me")
                .expect(401, "missing or bad X-Token"),
            Req::get("dependency refuses a bad X-Token", "/users/me")
                .header("X-Token", "admin")
                .expect(401, "missing or bad X-Token"),
            Req::get("dependency reads X-Token", "/users/me")
                .header("X-Token", "user-ada")
                .expect(200, r#"{"user":"ada"}"#),
            Req::get("state yielded by the lifespan, set once", "/lifespan")
                .expect(200, r#"{"greeting":"hello from the lifespan","boots":1}"#),
        ],
    );
}

/// The request scope the app sees: version, method, scheme, paths, query,
/// client and headers (names lower case, a repeated header's values in the
/// order sent; the app sorts them by name, see `/scope`).
#[test]
fn fastapi_sees_the_scope_as_under_uvicorn() {
    let servers = start_servers(&FASTAPI);
    same_answers(
        &servers,
        &[
            Req::get(
                "scope of a plain request",
                "/scope?q=caf%C3%A9&x=1+2&empty=",
            )
            .header("Host", "example.test:8080")
            .header("User-Agent", "corral-tests/1.0")
            .header("X-Custom", "one")
            // From a trusted proxy (127.0.0.1), so corral keeps it where it
            // is instead of adding one of its own.
            .header("X-Request-ID", "req-1")
            .expect(
                200,
                r#""url":"http://example.test:8080/scope?q=caf%C3%A9&x=1+2&empty=""#,
            ),
            Req::get("scope with a repeated header", "/scope")
                .header("X-Custom", "one")
                .header("X-Request-ID", "req-2")
                .header("X-Other", "1")
                .header("X-Custom", "two")
                .expect(
                    200,
                    r#"[["host","localhost"],["x-custom","one"],["x-custom","two"],["x-other","1"],["x-request-id","req-2"]],"client_host":"127.0.0.1""#,
                ),
        ],
    );
}

/// A background task runs after its response was sent (the response does
/// not wait for it), and a later request sees what it did.
#[test]
fn fastapi_background_tasks_run_after_the_response() {
    let servers = start_servers(&FASTAPI);
    same_answers(
        &servers,
        &[
            Req::post(
                "queue a task held at its gate",
                "/tasks/report",
                JSON_TYPE,
                "",
            )
            .expect(202, r#"{"queued":"report"}"#),
            Req::get("the task has not run yet", "/tasks").expect(200, r#"{"done":[]}"#),
            Req::post("open the task's gate", "/gates/task-report", JSON_TYPE, "")
                .expect(200, "opened"),
        ],
    );
    wait_for_body(&servers, "/tasks", "report");
    same_answers(
        &servers,
        &[Req::get("the task ran", "/tasks").expect(200, r#"{"done":["report"]}"#)],
    );
}

#[test]
fn fastapi_streaming_response() {
    let servers = start_servers(&FASTAPI);
    let lines: String = (0..50).map(|i| format!("line {i}\n")).collect();
    same_answers(
        &servers,
        &[
            Req::get("50 chunks from an async generator", "/stream/50").expect(200, &lines),
            Req::get("an empty stream", "/stream/0").expect(200, ""),
        ],
    );
}

/// Each chunk reaches the client when the app yields it: the first arrives
/// while the generator waits at its gate for a second request.
#[test]
fn fastapi_streaming_response_sends_chunks_as_they_come() {
    let servers = start_servers(&FASTAPI);
    for (server, addr) in servers.both() {
        let mut s = connect_with_timeouts(addr).unwrap();
        s.write_all(b"GET /stream-gated HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut r = BufReader::new(s);
        let head = read_head(&mut r).unwrap_or_else(|e| panic!("{server}: head: {e}"));
        assert!(head.starts_with("HTTP/1.1 200"), "{server}: {head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("transfer-encoding: chunked"),
            "{server}: a stream of unknown length is chunked: {head}"
        );
        let first = read_chunk(&mut r).unwrap_or_else(|e| {
            panic!(
                "{server}: the first chunk did not arrive before the gate opened: {e}\n{}",
                servers.logs()
            )
        });
        assert_eq!(first, b"before the gate\n", "{server}");
        let open = Req::post("open", "/gates/stream", JSON_TYPE, "");
        assert_eq!(open.send_to(addr).map(|r| r.status), Ok(200), "{server}");
        let rest = read_chunk(&mut r).unwrap_or_else(|e| panic!("{server}: {e}"));
        assert_eq!(rest, b"after the gate\n", "{server}");
        assert_eq!(read_chunk(&mut r).unwrap(), b"", "{server}: the last chunk");
    }
}

/// A client that goes away stops an endless stream: the app's generator
/// is closed (under uvicorn by Starlette's disconnect listener, under
/// corral by `send` raising once corral reports the client gone).
#[test]
fn fastapi_streaming_response_stops_when_the_client_goes() {
    let servers = start_servers(&FASTAPI);
    leave_an_endless_stream(&servers, "/stream-endless");
    wait_for_body(&servers, "/stream-log", r#"{"log":["stopped"]}"#);
}

/// Text and binary messages both ways, 1 MiB ones too (several times
/// corral's flow-control windows), then the app closes with its own code.
#[test]
fn fastapi_websocket_echo_and_server_close() {
    let servers = start_servers(&FASTAPI);
    let big = binary(1024 * 1024);
    let reversed: Vec<u8> = big.iter().rev().copied().collect();
    let big_line = format!("binary: 1048576 bytes, sha256 {}", sha256_hex(&reversed));
    same_transcript(
        &servers,
        "/ws/echo?name=ada",
        "",
        &[
            Step::Receive,
            text("shout this"),
            Step::Receive,
            Step::Send(Message::binary(vec![1, 2, 3])),
            Step::Receive,
            Step::Send(Message::binary(big.clone())),
            Step::Send(Message::binary(big)),
            Step::Receive,
            Step::Receive,
            text("bye"),
            Step::Receive,
            Step::Receive,
        ],
        &[
            "accepted: 101",
            "text: hello ada",
            "text: SHOUT THIS",
            "binary: [3, 2, 1]",
            &format!("{big_line} (×2)"),
            "close: 4000 \"bye ada\"",
            "end of stream",
        ],
    );
    wait_for_body(&servers, "/ws/log", "ada: server closed 4000");
}

/// A long exchange of non-ASCII text messages (3 bytes a character in
/// UTF-8): more bytes in all than corral's credit for client messages.
#[test]
fn fastapi_websocket_many_non_ascii_messages() {
    let servers = start_servers(&FASTAPI);
    let message = "✓".repeat(1000);
    let mut steps = vec![Step::Receive];
    for _ in 0..300 {
        steps.push(text(&message));
        steps.push(Step::Receive);
    }
    steps.push(text("bye"));
    steps.push(Step::Receive);
    same_transcript(
        &servers,
        "/ws/echo?name=ada",
        "",
        &steps,
        &[
            "accepted: 101",
            "text: hello ada",
            "text: ✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓… (3000 bytes) (×300)",
            "close: 4000 \"bye ada\"",
        ],
    );
}

/// The app sees the code and reason of the client's close frame (1005 when
/// it has no code, as the ASGI spec says), and a WebSocket it closes before
/// accepting is refused with 403.
#[test]
fn fastapi_websocket_client_close_and_refusal() {
    let servers = start_servers(&FASTAPI);
    same_transcript(
        &servers,
        "/ws/echo?name=bob",
        "",
        &[
            Step::Receive,
            Step::Close(Some((4002, "done ✓"))),
            Step::Receive,
        ],
        &["accepted: 101", "text: hello bob", "close: 4002 \"done ✓\""],
    );
    wait_for_body(&servers, "/ws/log", "bob: client closed 4002 done ✓");
    same_transcript(
        &servers,
        "/ws/echo?name=carol",
        "",
        &[Step::Receive, Step::Close(None), Step::Receive],
        &["accepted: 101", "text: hello carol", "close: no code"],
    );
    wait_for_body(&servers, "/ws/log", "carol: client closed 1005");
    same_transcript(
        &servers,
        "/ws/echo?name=mallory",
        "",
        &[],
        &["refused: 403 content-length=0 \"\""],
    );
    same_answers(
        &servers,
        &[
            Req::get("what the app saw of each close", "/ws/log").expect(
                200,
                r#"{"log":["bob: client closed 4002 done ✓","carol: client closed 1005 "]}"#,
            ),
        ],
    );
}

// ------------------------------------------------------------- Starlette

#[test]
fn starlette_routes() {
    let servers = start_servers(&STARLETTE);
    same_answers(
        &servers,
        &[
            Req::get("index", "/").expect(200, "Hello from Starlette"),
            Req::new("HEAD of the index", "HEAD", "/").expect(200, ""),
            Req::get("int path convertor and query", "/users/42?b=2&a=1&a=0").expect(
                200,
                r#"{"user_id":42,"query":[["a","0"],["a","1"],["b","2"]]}"#,
            ),
            Req::get("path that does not match the convertor", "/users/abc")
                .expect(404, "Not Found"),
            Req::get("redirect to a URL built from the scope", "/go-home")
                .header("Host", "example.test:8080")
                .expect(303, ""),
            Req::post("405 for a POST to a GET route", "/", "text/plain", "x")
                .expect(405, "Method Not Allowed"),
            Req::post("echo a small body", "/echo", "text/plain", "naïve ✓").expect(200, "naïve ✓"),
            Req::post("echo an empty body", "/echo", "text/plain", "").expect(200, ""),
            Req::get("two Set-Cookie headers", "/cookies").expect(200, "cookies set"),
            Req::get(
                "a 3 MiB body in one message (past corral's response window)",
                "/download/3145728",
            )
            .expect(200, ""),
        ],
    );
}

/// A few MiB read with `request.stream()` arrive whole, with a length or
/// in chunks.
#[test]
fn starlette_streams_large_uploads() {
    let servers = start_servers(&STARLETTE);
    let body = binary(4 * 1024 * 1024 + 123);
    let sha = sha256_hex(&body);
    let octets = "application/octet-stream";
    same_answers(
        &servers,
        &[
            Req::post("4 MiB with Content-Length", "/upload", octets, body.clone())
                .expect(200, &format!(r#""size":4194427,"sha256":"{sha}""#)),
            Req::post("4 MiB in chunks", "/upload", octets, chunked(&body, 65_536))
                .header("Transfer-Encoding", "chunked")
                .expect(200, &format!(r#""size":4194427,"sha256":"{sha}""#)),
            Req::post(
                "4 MiB after Expect: 100-continue",
                "/upload",
                octets,
                body.clone(),
            )
            .header("Expect", "100-continue")
            .expect(200, &format!(r#""size":4194427,"sha256":"{sha}""#)),
        ],
    );
}

#[test]
fn starlette_websocket_subprotocol_json_and_binary() {
    let servers = start_servers(&STARLETTE);
    let big = binary(1024 * 1024);
    let big_line = format!("text: 1048576 bytes, sha256 {}", sha256_hex(&big));
    same_transcript(
        &servers,
        "/ws/lobby?token=secret",
        "chat.v1, chat.v2",
        &[
            Step::Receive,
            text("hi"),
            Step::Receive,
            Step::Send(Message::binary(big)),
            Step::Receive,
            text("close"),
            Step::Receive,
            Step::Receive,
        ],
        &[
            "accepted: 101 sec-websocket-protocol=chat.v2 x-room=lobby",
            r#"text: {"path":"/ws/lobby","room":"lobby","subprotocols":["chat.v1","chat.v2"]}"#,
            "text: echo: hi",
            &big_line,
            "close: 4001 \"closed by the room\"",
            "end of stream",
        ],
    );
}

/// An app may answer a WebSocket handshake with a plain HTTP response (the
/// `websocket.http.response` extension).
#[test]
fn starlette_websocket_denial_response() {
    let servers = start_servers(&STARLETTE);
    same_transcript(
        &servers,
        "/ws/lobby",
        "",
        &[],
        &[
            "refused: 401 content-length=15 content-type=text/plain; charset=utf-8 \"token required\\n\"",
        ],
    );
}
