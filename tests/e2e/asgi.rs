//! ASGI apps over HTTP, with plain ASGI apps for the edge cases: the scope,
//! request bodies in chunks with back-pressure, streamed responses and
//! server-sent events beside other requests, `http.disconnect`, lifespan
//! (and `--asgi-lifespan`), the event loop (`--asgi-loop`), interface
//! detection, the concurrency cap and corral's bounded queue, and
//! the faults (crash, timeout, app error, graceful stop).
//! WebSockets are in `websocket.rs`; FastAPI and Starlette in
//! `frameworks_asgi.rs`.

use crate::common::*;

use std::io::{BufReader, Read, Write};
use std::time::{Duration, Instant};

const APP: &str = r#"
import asyncio, hashlib, json, os

INFLIGHT = [0, 0]  # now, most at once

async def lifespan(scope, receive, send):
    await receive()
    scope["state"]["started"] = "yes"
    await send({"type": "lifespan.startup.complete"})
    await receive()
    with open("shutdown.txt", "w") as f:
        f.write("clean")
    await send({"type": "lifespan.shutdown.complete"})

async def respond(send, status, body, ctype=b"text/plain"):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})

def text(b):
    return b.decode("latin-1") if isinstance(b, bytes) else b

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(scope, receive, send)
    path = scope["path"]
    query = scope["query_string"].decode()
    INFLIGHT[0] += 1
    INFLIGHT[1] = max(INFLIGHT)
    try:
        if path.startswith("/scope"):
            s = {k: v for k, v in scope.items() if k not in ("headers", "raw_path", "query_string")}
            s["raw_path"] = text(scope["raw_path"])
            s["query_string"] = text(scope["query_string"])
            s["headers"] = [[text(k), text(v)] for k, v in scope["headers"]]
            s["header_types"] = sorted({type(x).__name__ for h in scope["headers"] for x in h})
            await respond(send, 200, json.dumps(s).encode(), b"application/json")
        elif path == "/upload":
            h, total, flags = hashlib.sha256(), 0, []
            while True:
                m = await receive()
                assert m["type"] == "http.request", m
                h.update(m["body"]); total += len(m["body"]); flags.append(m["more_body"])
                if query == "slow":
                    await asyncio.sleep(0.002)
                if not m["more_body"]:
                    break
            out = {"total": total, "sha": h.hexdigest(), "chunks": len(flags),
                   "more_flags_ok": flags[-1] is False and all(flags[:-1])}
            await respond(send, 200, json.dumps(out).encode(), b"application/json")
        elif path == "/events":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            i = 0
            async def listen():
                while (await receive())["type"] != "http.disconnect":
                    pass
            gone = asyncio.ensure_future(listen())
            while not gone.done():
                await send({"type": "http.response.body", "body": b"data: %d\n\n" % i,
                            "more_body": True})
                i += 1
                await asyncio.wait({gone}, timeout=0.05)
            with open("disconnected.txt", "w") as f:
                f.write("after %d events" % i)
        elif path == "/big-stream":
            # Starlette's pattern: one task listens for the disconnect while
            # another streams to a slow client (and waits for credit).
            await send({"type": "http.response.start", "status": 200, "headers": []})
            async def listen():
                while True:
                    m = await receive()
                    if m["type"] == "http.disconnect":
                        with open("listener.txt", "w") as f:
                            f.write(m["type"])
                        return
            listener = asyncio.ensure_future(listen())
            await asyncio.sleep(0)
            try:
                for _ in range(1024):
                    await send({"type": "http.response.body", "body": b"x" * 65536,
                                "more_body": True})
            except OSError:
                pass
            await asyncio.wait_for(listener, 20)
        elif path == "/sleep":
            try:
                await asyncio.sleep(float(query))
            except asyncio.CancelledError:
                with open("cancelled.txt", "w") as f:
                    f.write("cancelled")
                raise
            await respond(send, 200, b"slept")
        elif path == "/slow-first":
            # A streaming response whose first chunk comes late (a slow
            # query before a CSV export, a first model token).
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain")]})
            await asyncio.sleep(float(query))
            await send({"type": "http.response.body", "body": b"first", "more_body": True})
            await send({"type": "http.response.body", "body": b" last"})
        elif path == "/raise-mid":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"part1;", "more_body": True})
            raise RuntimeError("failed mid-body")
        elif path == "/raise-base":
            # Exceptions that are no Exception, raised by the app itself.
            class QuotaExceeded(BaseException):
                pass
            raise {"cancelled": asyncio.CancelledError, "keyboard": KeyboardInterrupt,
                   "exit": SystemExit, "custom": QuotaExceeded}[query]("raised by the app")
        elif path == "/cancel-mid":
            # A task of its own cancelled (a backend call given up on),
            # whose CancelledError the app lets through after the head.
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"part1;", "more_body": True})
            call = asyncio.ensure_future(asyncio.sleep(1))
            call.cancel()
            await call
        elif path == "/start-only":
            await send({"type": "http.response.start", "status": 200, "headers": []})
        elif path == "/inflight":
            await respond(send, 200, str(INFLIGHT[1]).encode())
        elif path == "/loop":
            await respond(send, 200, type(asyncio.get_running_loop()).__module__.encode())
        elif path == "/pid":
            await respond(send, 200, str(os.getpid()).encode())
        elif path == "/block":
            import time
            time.sleep(60)  # a synchronous call that blocks the event loop
        elif path == "/crash":
            os._exit(1)
        elif path == "/error":
            raise RuntimeError("the app broke")
        elif path == "/no-response":
            return
        else:
            await respond(send, 404, b"not found")
    finally:
        INFLIGHT[0] -= 1
"#;

fn start(args: &[&str], workers: usize) -> (AppDir, Corral) {
    let dir = AppDir::new(&[("app.py", APP)]);
    let mut all = vec!["app:app"];
    all.extend_from_slice(args);
    let c = Corral::start(dir.path(), &all, workers);
    (dir, c)
}

/// Waits until the app holds a request besides the one asking: `/inflight`
/// answers the most requests the worker held at once.
fn wait_in_app(c: &Corral) {
    c.wait_until("the app to hold the request", || {
        c.get("/inflight").text() == "2"
    });
}

/// The text of a file the app writes, once it has some (the app opens it,
/// then writes: an empty file is not written yet).
fn wait_for_file(c: &Corral, path: &std::path::Path) -> String {
    let mut text = String::new();
    c.wait_until(&format!("{} to be written", path.display()), || {
        text = std::fs::read_to_string(path).unwrap_or_default();
        !text.is_empty()
    });
    text
}

#[test]
fn the_http_scope_is_complete_and_correct() {
    let (_dir, c) = start(&["-w", "1"], 1);
    let r = request(
        &c.addr,
        "GET",
        "/scope/caf%C3%A9%20x?a=1&b=%20",
        &[("X-One", "1"), ("x-two", "2"), ("X-One", "3")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let s = r.json();
    assert_eq!(s["type"], "http");
    assert_eq!(s["asgi"]["version"], "3.0");
    assert!(s["asgi"]["spec_version"].is_string());
    assert_eq!(s["http_version"], "1.1");
    assert_eq!(s["method"], "GET");
    assert_eq!(s["scheme"], "http");
    assert_eq!(s["path"], "/scope/café x", "decoded, as UTF-8");
    assert_eq!(s["raw_path"], "/scope/caf%C3%A9%20x", "as sent");
    assert_eq!(s["query_string"], "a=1&b=%20", "as sent");
    assert_eq!(s["root_path"], "");
    assert_eq!(
        s["state"]["started"], "yes",
        "lifespan state reaches requests"
    );
    assert_eq!(s["header_types"], serde_json::json!(["bytes"]));
    let headers: Vec<(String, String)> = s["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h[0].as_str().unwrap().into(), h[1].as_str().unwrap().into()))
        .collect();
    let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert_eq!(
        headers,
        [
            pair("host", "localhost"),
            pair("x-one", "1"),
            pair("x-one", "3"),
            pair("x-two", "2"),
            pair("x-request-id", r.header("x-request-id").unwrap()),
        ],
        "lower-case names; a repeated header's values stay in order; the \
         request's id last"
    );
    let port: u64 = c.addr.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(s["server"], serde_json::json!(["127.0.0.1", port]));
    assert_eq!(s["client"][0], "127.0.0.1");
    assert!(s["client"][1].as_u64().unwrap() > 0);
}

#[test]
fn request_bodies_arrive_in_chunks_with_more_body_and_back_pressure() {
    let (_dir, c) = start(&["-w", "1"], 1);
    let body: Vec<u8> = (0..16 << 20).map(|i: u32| (i * 7 % 251) as u8).collect();
    let sha = {
        use sha2::{Digest, Sha256};
        Sha256::digest(&body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let worker = children_of(c.pid())[0];
    let before = [rss_kib(c.pid()), rss_kib(worker)];
    // The app reads slowly: without back-pressure corral (or the worker)
    // would buffer the whole 16 MiB. The peak is sampled while the body
    // flows, so a buffer freed at the end still counts.
    let (r, peak) = peak_rss_during(&[c.pid(), worker], || {
        request(&c.addr, "POST", "/upload?slow", &[], &body)
    });
    let grew = [
        peak[0].saturating_sub(before[0]),
        peak[1].saturating_sub(before[1]),
    ];
    eprintln!(
        "RSS growth during a 16 MiB upload: corral {} KiB, worker {} KiB",
        grew[0], grew[1]
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let out = r.json();
    assert_eq!(out["total"], 16 << 20);
    assert_eq!(out["sha"], sha.as_str());
    assert!(out["chunks"].as_u64().unwrap() > 10, "{out:?}");
    assert_eq!(out["more_flags_ok"], true, "{out:?}");
    // The README's bound for a body in flight: under 2 MiB.
    assert!(
        grew[0] < 2 * 1024,
        "corral grew by {} KiB for a 16 MiB body",
        grew[0]
    );
    assert!(
        grew[1] < 2 * 1024,
        "the worker grew by {} KiB for a 16 MiB body",
        grew[1]
    );

    // An empty body is one http.request with more_body false.
    let out = request(&c.addr, "POST", "/upload", &[], b"").json();
    assert_eq!(
        (out["total"].as_u64(), out["chunks"].as_u64()),
        (Some(0), Some(1))
    );
}

#[test]
fn server_sent_events_stream_beside_other_requests_and_see_the_disconnect() {
    // The timeout bounds the wait for the response head, not a stream.
    let (dir, c) = start(&["-w", "1", "-t", "1s"], 1);
    let mut sse = c.connect();
    send_request(&mut sse, "GET", "/events", &[], b"");
    let mut reader = BufReader::new(sse.try_clone().unwrap());
    let head = read_head(&mut reader);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/event-stream"), "{head}");
    // The same single worker answers other requests while the stream runs.
    let mut seen = String::new();
    for _ in 0..5 {
        assert_eq!(c.get("/pid").status, 200);
        seen.push_str(&read_some(&mut reader));
    }
    // Events keep coming for three times the request timeout.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        seen.push_str(&read_some(&mut reader));
    }
    assert!(
        seen.contains("data: 0\n\n") && seen.contains("data: 30\n\n"),
        "{seen:?}"
    );
    // The client goes away: the app gets http.disconnect and stops.
    drop(reader);
    sse.shutdown(std::net::Shutdown::Both).unwrap();
    let note = wait_for_file(&c, &dir.path().join("disconnected.txt"));
    assert!(note.starts_with("after "), "{note}");
}

#[test]
fn a_response_started_before_the_timeout_is_not_cut_however_late_its_first_chunk() {
    // As under uvicorn: the head goes when the app awaits something after
    // http.response.start, and the timeout bounds only the wait for it.
    let (_dir, c) = start(&["-w", "1", "-t", "1s"], 1);
    let mut s = c.connect();
    let t0 = Instant::now();
    send_request(&mut s, "GET", "/slow-first?2.5", &[], b"");
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let head = read_head(&mut reader);
    let head_at = t0.elapsed();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head_at < Duration::from_millis(2000),
        "the head waited for the first chunk ({head_at:?})"
    );
    let mut body = String::new();
    while !body.ends_with("0\r\n\r\n") {
        let more = read_some(&mut reader);
        assert!(!more.is_empty(), "the stream ended early: {body:?}");
        body.push_str(&more);
    }
    assert_eq!(body, "5\r\nfirst\r\n5\r\n last\r\n0\r\n\r\n");
    // A head and no body at all is still the app's error: 500, not a
    // head followed by a cut stream.
    let r = c.get("/start-only");
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(c.get("/pid").status, 200);
}

#[test]
fn an_app_that_fails_mid_body_has_what_it_sent_delivered_then_the_body_cut() {
    // As from uvicorn: the head and the first part, then no end of the
    // chunked body (an empty reply before).
    let (_dir, c) = start(&["-w", "1"], 1);
    for _ in 0..8 {
        let mut s = c.connect();
        send_request(&mut s, "GET", "/raise-mid", &[], b"");
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw);
        assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
        assert!(text.ends_with("part1;\r\n"), "{text:?}");
    }
    assert_eq!(c.get("/pid").status, 200);
}

#[test]
fn an_app_raising_a_base_exception_fails_its_request_alone_as_under_uvicorn() {
    // A CancelledError of the app's own, KeyboardInterrupt, SystemExit or
    // a BaseException of its own: a 500 and the traceback, as uvicorn
    // answers, while the worker serves on. Before, KeyboardInterrupt and
    // SystemExit ended the worker (every request on it got 502), and the
    // others were a 502 "the worker died" from a worker still alive.
    let (_dir, c) = start(&["-w", "1"], 1);
    let pid = c.get("/pid").text();
    let slow = {
        let addr = c.addr.clone();
        std::thread::spawn(move || request(&addr, "GET", "/sleep?2", &[], b"").text())
    };
    wait_in_app(&c);
    for (kind, logged) in [
        ("cancelled", "CancelledError: raised by the app"),
        ("keyboard", "KeyboardInterrupt: raised by the app"),
        ("exit", "SystemExit: raised by the app"),
        ("custom", "QuotaExceeded: raised by the app"),
    ] {
        let r = c.get(&format!("/raise-base?{kind}"));
        assert_eq!(r.status, 500, "{kind}: {}", r.text());
        let seen = c.log.wait_for(logged, Duration::from_secs(10));
        assert!(seen.is_some(), "{kind}: no {logged:?} in\n{}", c.log.text());
    }
    // After the head, the body is cut (no last chunk), not ended as if
    // whole.
    let mut s = c.connect();
    send_request(&mut s, "GET", "/cancel-mid", &[], b"");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
    assert!(text.ends_with("part1;\r\n"), "{text:?}");
    assert_eq!(slow.join().unwrap(), "slept", "the request beside them");
    assert_eq!(c.get("/pid").text(), pid, "the worker was not replaced");
}

#[test]
fn a_nul_in_the_decoded_path_gets_400_and_no_asgi_app_sees_it() {
    // The app would answer /scope... with 200 and anything else with 404:
    // the 400 and its text are corral's.
    let (_dir, c) = start(&["-w", "1"], 1);
    for path in ["/a%00b", "/scope/%00", "/scope%00?x=1"] {
        let r = request(&c.addr, "GET", path, &[], b"");
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert_eq!(r.text(), "Bad Request: NUL in path\n", "{path}");
    }
    assert_eq!(request(&c.addr, "GET", "/scope/%01", &[], b"").status, 200);
}

fn read_head(r: &mut BufReader<std::net::TcpStream>) -> String {
    use std::io::BufRead;
    let mut head = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("response head");
        if line == "\r\n" || line.is_empty() {
            return head;
        }
        head.push_str(&line);
    }
}

fn read_some(r: &mut impl Read) -> String {
    let mut buf = [0u8; 4096];
    let n = r.read(&mut buf).expect("stream data");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn lifespan_shutdown_runs_on_a_graceful_stop() {
    let (dir, mut c) = start(&["-w", "1"], 1);
    assert_eq!(c.get("/pid").status, 200);
    c.signal(libc::SIGTERM);
    let st = c.wait_exit(Duration::from_secs(20)).expect("corral exits");
    assert!(st.success(), "{st:?}");
    let note = std::fs::read_to_string(dir.path().join("shutdown.txt"));
    assert_eq!(note.ok().as_deref(), Some("clean"), "{}", c.log.text());
}

#[test]
fn apps_without_lifespan_support_still_work() {
    let dir = AppDir::new(&[(
        "app.py",
        "async def app(scope, receive, send):\n    \
         assert scope['type'] == 'http', 'no lifespan here'\n    \
         await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n    \
         await send({'type': 'http.response.body', 'body': b'fine'})\n",
    )]);
    let mut c = Corral::start(dir.path(), &["app:app", "--interface", "asgi"], 1);
    assert_eq!(c.get("/").text(), "fine");
    c.signal(libc::SIGTERM);
    assert!(c.wait_exit(Duration::from_secs(20)).unwrap().success());
}

/// The worker remembers the last head it encoded for each status; a
/// response with other headers, or with a header value the app changed in
/// place (a bytearray), still gets its own headers.
#[test]
fn each_asgi_response_has_the_headers_sent_for_it_not_the_last_ones() {
    let dir = AppDir::new(&[(
        "app.py",
        r#"
VALUE = bytearray(b"first")
SHARED = [(b"x-kind", VALUE)]
TUPLES = [(b"x-kind", b"tuple")]

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    q = scope["query_string"]
    if q.startswith(b"mutate="):
        # The same list and bytearray every time, the value changed in place.
        VALUE[:] = q[len(b"mutate="):]
        headers = SHARED
    elif q == b"same":
        headers = TUPLES
    else:
        headers = [(b"x-kind", b"fresh"), (b"x-query", q)]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
"#,
    )]);
    let c = Corral::start(dir.path(), &["app:app", "--interface", "asgi"], 1);
    assert_each_response_has_its_own_headers(&c.addr);
}

#[test]
fn an_asgi_app_under_interface_wsgi_fails_to_boot_with_a_hint() {
    let dir = AppDir::new(&[("app.py", APP)]);
    let c = Corral::spawn(
        dir.path(),
        &[
            "app:app",
            "--interface",
            "wsgi",
            "--status-bind",
            "127.0.0.1:0",
        ],
        &[],
    );
    let line = c
        .log
        .wait_for("is an ASGI app", Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no boot error; log:\n{}", c.log.text()));
    assert!(line.contains("interface = \"asgi\""), "{line}");
}

#[test]
fn the_concurrency_cap_holds_and_the_queue_is_bounded() {
    let (_dir, c) = start(
        &[
            "-w",
            "1",
            "--concurrency",
            "2",
            "--max-queued",
            "1",
            "--status-bind",
            "127.0.0.1:0",
        ],
        1,
    );
    // Two run, one waits in corral's queue; the fourth is refused at once.
    let slow: Vec<_> = (0..3)
        .map(|_| {
            let addr = c.addr.clone();
            std::thread::spawn(move || request(&addr, "GET", "/sleep?1.5", &[], b"").status)
        })
        .collect();
    c.wait_until("two requests in the worker and one queued", || {
        let s = c.status_json();
        s["supervisor"]["queued"] == 1 && s["slots"][0]["worker"]["in_flight"] == 2
    });
    let w = &c.status_json()["slots"][0]["worker"];
    assert_eq!(
        (&w["interface"], &w["capacity"]),
        (&"asgi".into(), &2.into())
    );
    let t0 = Instant::now();
    let refused = c.get("/pid");
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "refused at once, not after waiting"
    );
    // Said in the log, once for a burst (a flood would flood it): the 503
    // was in /metrics alone.
    assert_eq!(c.get("/pid").status, 503);
    let said = "GET /pid: 503, all workers are busy and corral's queue is full; more workers";
    assert!(c.log.has(said), "{}", c.log.text());
    assert_eq!(
        c.log.count("503, all workers are busy"),
        1,
        "{}",
        c.log.text()
    );
    let statuses: Vec<u16> = slow.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        statuses,
        [200, 200, 200],
        "the queued one ran once a place freed"
    );
    assert_eq!(
        c.get("/inflight").text(),
        "2",
        "never more than 2 in the app"
    );
}

#[test]
fn a_worker_crash_answers_502_and_the_worker_is_replaced() {
    let (_dir, c) = start(&["-w", "1"], 1);
    let before = c.get("/pid").text();
    let slow = {
        let addr = c.addr.clone();
        std::thread::spawn(move || request(&addr, "GET", "/sleep?5", &[], b"").status)
    };
    wait_in_app(&c);
    assert_eq!(c.get("/crash").status, 502);
    assert_eq!(slow.join().unwrap(), 502, "in flight on the crashed worker");
    c.wait_until("a replacement worker", || {
        let r = c.get("/pid");
        r.status == 200 && r.text() != before
    });
}

#[test]
fn a_request_past_the_timeout_gets_504_and_only_its_task_is_cancelled() {
    let (dir, c) = start(&["-w", "1", "-t", "1s"], 1);
    let pid = c.get("/pid").text();
    let t0 = Instant::now();
    let r = c.get("/sleep?30");
    assert_eq!(r.status, 504);
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(
        wait_for_file(&c, &dir.path().join("cancelled.txt")),
        "cancelled"
    );
    assert_eq!(
        c.get("/pid").text(),
        pid,
        "the worker itself was not replaced"
    );
}

#[test]
fn app_errors_are_500s_with_the_traceback_logged() {
    let (_dir, c) = start(&["-w", "1"], 1);
    let r = c.get("/error");
    assert_eq!(r.status, 500);
    assert_eq!(r.text(), "Internal Server Error");
    c.log
        .wait_for("RuntimeError: the app broke", Duration::from_secs(10))
        .expect("traceback in the log");
    let r = c.get("/no-response");
    assert_eq!(r.status, 500, "an app that returns without answering");
    assert_eq!(c.get("/pid").status, 200, "the worker carries on");
}

#[test]
fn a_graceful_stop_lets_requests_in_flight_finish() {
    let (_dir, mut c) = start(&["-w", "1"], 1);
    let mut s = c.connect();
    send_request(&mut s, "GET", "/sleep?1", &[], b"");
    wait_in_app(&c);
    c.signal(libc::SIGTERM);
    let r = read_response(&mut BufReader::new(&mut s), false).expect("an answer");
    assert_eq!((r.status, r.text().as_str()), (200, "slept"));
    let st = c.wait_exit(Duration::from_secs(20)).expect("corral exits");
    assert!(st.success(), "{st:?}");
    s.write_all(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n").ok();
}

#[test]
fn an_event_loop_blocked_by_a_synchronous_call_is_found_and_replaced() {
    let dir = AppDir::new(&[
        ("app.py", APP),
        (
            "corral.toml",
            "[app]\nmodule = \"app:app\"\n[workers]\nheartbeat_timeout = \"1s\"\ntimeout = \"60s\"\n[server]\nbind = [\"127.0.0.1:0\"]\n",
        ),
    ]);
    let c = Corral::start(dir.path(), &["-c", "corral.toml"], 1);
    let first = c.get("/pid").text();
    let addr = c.addr.clone();
    let blocked = std::thread::spawn(move || request(&addr, "GET", "/block", &[], b"").status);
    c.log
        .wait_for("sent no heartbeat for 1s", Duration::from_secs(15))
        .unwrap_or_else(|| panic!("not noticed; log:\n{}", c.log.text()));
    // The stack dump shows where the loop is stuck.
    c.log
        .wait_for("in app", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no stack dump; log:\n{}", c.log.text()));
    assert_eq!(blocked.join().unwrap(), 502);
    c.wait_until("a replacement worker", || {
        let r = c.get("/pid");
        r.status == 200 && r.text() != first
    });
}

#[test]
fn a_listener_and_a_streamer_on_one_request_both_see_the_client_leave() {
    let (dir, c) = start(&["-w", "1"], 1);
    let mut s = c.connect();
    send_request(&mut s, "GET", "/big-stream", &[], b"");
    // Read slowly, so that the app runs out of credit and waits for it
    // while its listener waits for the disconnect.
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    while total < 2 << 20 {
        total += s.read(&mut buf).expect("stream data");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(s);
    assert_eq!(
        wait_for_file(&c, &dir.path().join("listener.txt")),
        "http.disconnect"
    );
}

#[test]
fn the_event_loop_is_uvloop_when_installed_and_asyncio_otherwise() {
    // The test venv has uvloop (uvicorn[standard] brings it).
    let (_dir, c) = start(&["-w", "1"], 1);
    assert_eq!(c.get("/loop").text(), "uvloop");
    // Without uvloop (a module in the app's folder hides it), plain asyncio.
    let dir = AppDir::new(&[
        ("app.py", APP),
        ("uvloop.py", "raise ImportError('hidden by the test')\n"),
    ]);
    let c = Corral::start(dir.path(), &["app:app", "-w", "1"], 1);
    assert_eq!(c.get("/loop").text(), "asyncio.unix_events");
    let out = request(&c.addr, "POST", "/upload", &[], &[7u8; 300_000]).json();
    assert_eq!(out["total"], 300_000);
    assert_eq!(c.get("/scope").json()["state"]["started"], "yes");
}

#[test]
fn a_trusted_proxy_sets_the_scopes_client_and_scheme() {
    let proxied: &[(&str, &str)] = &[
        ("X-Forwarded-For", "198.51.100.4, 127.0.0.1"),
        ("X-Forwarded-Proto", "https"),
    ];
    let (_dir, c) = start(&["-w", "1"], 1);
    let s = request(&c.addr, "GET", "/scope", proxied, b"").json();
    assert_eq!(s["client"], serde_json::json!(["198.51.100.4", 0]));
    assert_eq!(s["scheme"], "https");
    let (_dir, c) = start(&["-w", "1", "--forwarded-allow-ips", "10.0.0.1"], 1);
    let s = request(&c.addr, "GET", "/scope", proxied, b"").json();
    assert_eq!(s["client"][0], "127.0.0.1");
    assert_eq!(s["scheme"], "http");
}

/// Says which event loop runs it and whether its lifespan started.
const LOOP_APP: &str = r#"
import asyncio

STARTED = []

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                STARTED.append(True)
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    body = ("%s %s" % (loop, "started" if STARTED else "no-lifespan")).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
"#;

/// An ASGI app with no lifespan: it raises on any other scope.
const NO_LIFESPAN_APP: &str = r#"
async def app(scope, receive, send):
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
"#;

#[test]
fn the_event_loop_and_the_lifespan_are_chosen_as_gunicorn_and_uvicorn_choose_them() {
    let app = AppDir::new(&[("loopy.py", LOOP_APP), ("plain.py", NO_LIFESPAN_APP)]);
    // uvloop is installed here (uvicorn[standard]): auto takes it. Then
    // gunicorn's spelling, then uvicorn's.
    for (flags, answer) in [
        (&[][..], "uvloop started"),
        (
            &["--asgi-loop", "asyncio", "--asgi-lifespan", "off"][..],
            "asyncio no-lifespan",
        ),
        (
            &["--loop", "asyncio", "--lifespan", "on"][..],
            "asyncio started",
        ),
    ] {
        let mut args = vec!["loopy:app", "-w", "1"];
        args.extend_from_slice(flags);
        let c = Corral::start(app.path(), &args, 1);
        assert_eq!(c.get("/").text(), answer, "{flags:?}");
    }
    // `on` for an app without a lifespan fails its boot, with the reason.
    let (code, stdout, stderr) = crate::gunicorn_compat::run_to_exit(
        app.path(),
        &[
            "check",
            "plain:app",
            "--asgi-lifespan",
            "on",
            "--python",
            &python(),
        ],
    );
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains(
            "the app does not support the lifespan protocol, and asgi_lifespan is \"on\""
        ),
        "{stdout}{stderr}"
    );
    let (code, stdout, stderr) = crate::gunicorn_compat::run_to_exit(
        app.path(),
        &["check", "plain:app", "--python", &python()],
    );
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    // `uvloop` where it is not installed (a module in the app's folder
    // hides it) fails the boot with the reason and what to do.
    std::fs::write(
        app.path().join("uvloop.py"),
        "raise ImportError(\"No module named 'uvloop'\")\n",
    )
    .unwrap();
    let (code, stdout, stderr) = crate::gunicorn_compat::run_to_exit(
        app.path(),
        &[
            "check",
            "loopy:app",
            "--loop",
            "uvloop",
            "--python",
            &python(),
        ],
    );
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("asgi_loop = \"uvloop\" (--asgi-loop uvloop) needs uvloop in the app's environment: pip install uvloop"),
        "{stdout}{stderr}"
    );
    // auto falls back to asyncio.
    let c = Corral::start(app.path(), &["loopy:app", "-w", "1"], 1);
    assert_eq!(c.get("/").text(), "asyncio started");
}
