//! A client that leaves while its HTTP/1.1 request is in flight: corral
//! notices at every stage, without a byte to write, and cancels the
//! request. Waiting for a worker's place, it never reaches the app; waiting
//! for its answer (whole body or streamed), an ASGI app gets
//! `http.disconnect`; with its response started and nothing to send yet
//! (a long poll), the same. Over TCP and a Unix socket. Each test closes
//! the client's socket and watches what the app saw.

use crate::common::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

const WSGI: &str = r#"
import os, time

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/hold":
        open("holding", "w").close()
        while not os.path.exists("release"):
            time.sleep(0.01)
        body = b"held"
    elif path == "/stream":
        # A piece every 100 ms for up to 60 s: a stream that stops only
        # when closed (PEP 3333: the server calls close()).
        start_response("200 OK", [("Content-Type", "text/plain")])
        def pieces():
            try:
                for i in range(600):
                    yield b"piece %d\n" % i
                    time.sleep(0.1)
            finally:
                open("closed-" + environ["QUERY_STRING"], "w").close()
        return pieces()
    elif path == "/slow-stream":
        # A piece, then 3 s before the next: the worker is busy that long
        # after its client leaves.
        start_response("200 OK", [("Content-Type", "text/plain")])
        def pieces():
            for i in range(5):
                yield b"piece %d\n" % i
                time.sleep(3)
        return pieces()
    elif path == "/mark":
        open("ran-" + environ["QUERY_STRING"], "w").close()
        body = b"marked"
    else:
        body = b"ok"
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"#;

const ASGI: &str = r#"
import os

def mark(file, text):
    # Whole or not at all: the test reads the file as soon as it exists.
    open(file + ".tmp", "w").write(text)
    os.replace(file + ".tmp", file)

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    name = scope["query_string"].decode()
    total = 0
    while True:
        m = await receive()
        total += len(m.get("body", b""))
        if not m.get("more_body"):
            break
    if path == "/long-poll":
        # The head and a line go out, then nothing until the client leaves.
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"waiting\n", "more_body": True})
    mark("waiting-" + name, str(total))
    m = await receive()
    mark("gone-" + name, m["type"])
"#;

/// Waits (bounded) for `path` to exist and answers its text.
fn wait_file(path: &Path, timeout: Duration) -> Option<String> {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if let Ok(text) = std::fs::read_to_string(path) {
            return Some(text);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

const WAIT: Duration = Duration::from_secs(10);

/// The ASGI app's request `name` saw `http.disconnect`.
fn assert_disconnected(app: &AppDir, c: &Corral, name: &str) {
    assert_eq!(
        wait_file(&app.path().join(format!("gone-{name}")), WAIT).as_deref(),
        Some("http.disconnect"),
        "log:\n{}",
        c.log.text()
    );
}
const STATUS: &[&str] = &["--status-bind", "127.0.0.1:0"];

/// Requests sent to a worker whose only thread is held are given back and
/// wait in corral's queue; those whose clients leave there never reach
/// the app.
#[test]
fn a_request_whose_client_leaves_while_it_waits_for_a_worker_never_reaches_the_app() {
    let app = AppDir::new(&[("app.py", WSGI)]);
    let args = ["app:app", "-w", "1", "--threads", "1"];
    let c = Corral::start(app.path(), &[&args[..], STATUS].concat(), 1);
    let mut holder = c.connect();
    holder
        .write_all(b"GET /hold HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert!(wait_file(&app.path().join("holding"), WAIT).is_some());
    let mut clients = Vec::new();
    for i in 0..3 {
        let mut s = c.connect();
        let head = format!("GET /mark?q{i} HTTP/1.1\r\nHost: a\r\n\r\n");
        s.write_all(head.as_bytes()).unwrap();
        clients.push(s);
    }
    c.wait_until("the worker to give them back to corral's queue", || {
        let s = c.status_json();
        s["supervisor"]["queued"].as_u64() == Some(3)
            && s["slots"][0]["worker"]["in_flight"].as_u64() == Some(1)
    });
    drop(clients);
    c.wait_until("corral's queue to let them go", || {
        c.status_json()["supervisor"]["queued"].as_u64() == Some(0)
    });
    std::fs::write(app.path().join("release"), "").unwrap();
    let mut held = String::new();
    holder
        .set_read_timeout(Some(WAIT))
        .and_then(|()| holder.read_to_string(&mut held))
        .ok();
    assert!(
        held.starts_with("HTTP/1.1 200") && held.ends_with("held"),
        "{held}"
    );
    // The worker serves on; the requests that left never ran.
    assert_eq!(c.get("/mark?after").text(), "marked");
    assert!(app.path().join("ran-after").exists());
    let ran: Vec<_> = std::fs::read_dir(app.path())
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter(|name| name.starts_with("ran-q"))
        .collect();
    assert!(ran.is_empty(), "requests whose client left ran: {ran:?}");
}

/// POSTs `body` to the ASGI app as request `name`, waits until the app
/// has all of it, closes the connection and asserts the app saw it.
fn post_then_leave(name: &str, body: &[u8]) {
    let app = AppDir::new(&[("app.py", ASGI)]);
    let c = Corral::start(app.path(), &["app:app", "--interface", "asgi"], 1);
    let mut s = c.connect();
    let head = format!(
        "POST /?{name} HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(&[head.as_bytes(), body].concat()).unwrap();
    let waiting = app.path().join(format!("waiting-{name}"));
    assert_eq!(
        wait_file(&waiting, WAIT).as_deref(),
        Some(body.len().to_string().as_str())
    );
    drop(s);
    assert_disconnected(&app, &c, name);
}

#[test]
fn an_asgi_app_sees_the_client_leave_while_it_works_on_a_whole_body() {
    post_then_leave("small", b"hello");
}

#[test]
fn an_asgi_app_sees_the_client_leave_after_a_streamed_upload() {
    // Larger than what corral reads before it dispatches: the rest streams.
    post_then_leave("big", &vec![b'x'; 1 << 20]);
}

#[test]
fn a_long_poll_with_its_head_sent_sees_the_client_leave_over_a_unix_socket() {
    let app = AppDir::new(&[("app.py", ASGI)]);
    let sock = app.path().join("web.sock");
    let bind = format!("unix:{}", sock.display());
    // The TCP bind is where the harness sees corral listen.
    let args = [
        "app:app",
        "--interface",
        "asgi",
        "-b",
        "127.0.0.1:0",
        "-b",
        &bind,
    ];
    let c = Corral::start(app.path(), &args, 1);
    let mut s = UnixStream::connect(&sock).unwrap();
    s.write_all(b"GET /long-poll?poll HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut head = [0u8; 15];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200 OK");
    assert!(wait_file(&app.path().join("waiting-poll"), WAIT).is_some());
    // Nothing to write: only the watch on the socket can tell.
    drop(s);
    assert_disconnected(&app, &c, "poll");
}

/// A streamed response whose client leaves, from a worker with one thread:
/// the app's generator is closed at its next piece (as gunicorn's next
/// write to the closed socket fails), and the worker's place stays taken
/// until then. Before, the single thread never read corral's CANCEL: the
/// generator ran on, the worker counted as free, and the next request
/// waited behind it until its timeout (504, the worker killed).
#[test]
fn a_streamed_response_whose_client_leaves_is_closed_and_the_next_request_is_served() {
    let app = AppDir::new(&[("app.py", WSGI)]);
    for workers in ["1", "2"] {
        let c = Corral::start(
            app.path(),
            &["app:app", "-w", workers, "--threads", "1", "-t", "10"],
            workers.parse().unwrap(),
        );
        let name = format!("w{workers}");
        let mut s = connect(&c.addr);
        write!(s, "GET /stream?{name} HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut first = [0u8; 15];
        s.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"HTTP/1.1 200 OK");
        std::thread::sleep(Duration::from_millis(300));
        drop(s);
        assert!(
            wait_file(&app.path().join(format!("closed-{name}")), WAIT).is_some(),
            "the generator was never closed; log:\n{}",
            c.log.text()
        );
        for _ in 0..8 {
            let t = Instant::now();
            let r = c.get("/");
            assert_eq!(r.status, 200, "{}", r.text());
            assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        }
        assert!(!c.log.text().contains("timeout"), "{}", c.log.text());
    }
}

/// While a worker's only thread still works on a stream whose client left
/// (it learns of it at its next piece, 3 s on), its place stays taken:
/// requests go to the other worker, none waits behind the stream.
#[test]
fn a_worker_still_busy_with_a_left_stream_gets_no_request_while_another_is_free() {
    let app = AppDir::new(&[("app.py", WSGI)]);
    let c = Corral::start(app.path(), &["app:app", "-w", "2", "--threads", "1"], 2);
    let mut s = connect(&c.addr);
    s.write_all(b"GET /slow-stream HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut first = [0u8; 15];
    s.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200 OK");
    drop(s);
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..8 {
        let t = Instant::now();
        let r = c.get("/");
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "request {i} waited {:?}",
            t.elapsed()
        );
    }
}

/// Starlette's SSE as its docs write it: a generator that waits for events
/// between them. When the client leaves, the generator is cancelled at
/// once (as under uvicorn), not left waiting until the worker is recycled,
/// and nothing is logged as an error. corral says ASGI spec 2.3, as
/// uvicorn does, so Starlette watches `receive()` for the disconnect.
#[test]
fn a_starlette_event_stream_whose_client_leaves_is_cancelled_at_once() {
    let app = AppDir::new(&[(
        "sse.py",
        r#"
import asyncio
from starlette.applications import Starlette
from starlette.responses import StreamingResponse
from starlette.routing import Route

async def events(request):
    async def stream():
        try:
            yield b"data: first\n\n"
            await asyncio.Event().wait()  # the next event never comes
        finally:
            open("cancelled", "w").close()
    return StreamingResponse(stream(), media_type="text/event-stream")

app = Starlette(routes=[Route("/events", events)])
"#,
    )]);
    let c = Corral::start(app.path(), &["sse:app", "--interface", "asgi"], 1);
    let mut s = connect(&c.addr);
    s.write_all(b"GET /events HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("data: first") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    drop(s);
    assert!(
        wait_file(&app.path().join("cancelled"), Duration::from_secs(5)).is_some(),
        "the stream was never cancelled; log:\n{}",
        c.log.text()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(!c.log.text().contains("Traceback"), "{}", c.log.text());
}
