//! A hostile client must not be able to hurt the service: stalled uploads,
//! clients that stop reading, too many connections, idle connections on
//! the status server, bad request heads and forged X-Forwarded-For. Each
//! test talks raw TCP to the real binary with real Python workers, and
//! checks what a user sees: status codes, bytes on the wire, /metrics, log
//! lines, and the worker's pid (unchanged: not killed).

use crate::common::*;
use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const APP: &str = r#"
import os, sys, time

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/upload":
        print("upload started", file=sys.stderr, flush=True)
        try:
            data = environ["wsgi.input"].read()
        except Exception as e:
            print("upload failed: %s" % type(e).__name__, file=sys.stderr, flush=True)
            raise
        body = b"read %d" % len(data)
    elif path.startswith("/sleep"):
        time.sleep(60)
        body = b"slept"
    elif path == "/stream":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        def chunks():
            try:
                for _ in range(1024):
                    yield b"x" * 65536
            finally:
                print("stream closed", file=sys.stderr, flush=True)
        return chunks()
    elif path == "/late":
        # The response starts before the app reads the upload.
        start_response("200 OK", [("Content-Type", "text/plain")])
        def late():
            yield b"started\n"
            yield b"read %d\n" % len(environ["wsgi.input"].read())
        return late()
    elif path == "/remote":
        body = environ["REMOTE_ADDR"].encode()
    else:
        body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"#;

const ASGI_APP: &str = r#"
import os, sys

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        try:
            while True:
                await send({"type": "websocket.send", "bytes": b"x" * 65536})
        except Exception as e:
            print("ws send failed: %s" % type(e).__name__, file=sys.stderr, flush=True)
        return
    body = b""
    if scope["path"] == "/upload":
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                print("upload disconnected", file=sys.stderr, flush=True)
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        body = b"read %d" % len(body)
    else:
        body = str(os.getpid()).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
"#;

/// 64 MiB: far more than the socket buffers between corral and a client.
const STREAM_BYTES: usize = 1024 * 65536;

/// corral with one single-threaded worker (one stuck request would block
/// it), a status server, and `args`.
fn start(args: &[&str]) -> (AppDir, Corral) {
    let app = AppDir::new(&[("hostile.py", APP)]);
    let mut all = vec![
        "hostile:app",
        "-w",
        "1",
        "--threads",
        "1",
        "--status-bind",
        "127.0.0.1:0",
    ];
    all.extend_from_slice(args);
    let c = Corral::start(app.path(), &all, 1);
    (app, c)
}

/// One sample of `/metrics`, by its full name (labels included).
fn metric(c: &Corral, name: &str) -> f64 {
    let text = c.status("/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

fn connect_with(addr: &str, read_timeout: Duration) -> TcpStream {
    let s = connect(addr);
    s.set_read_timeout(Some(read_timeout)).unwrap();
    s
}

/// Writes `bytes` on a new connection and reads one response.
fn raw(addr: &str, bytes: &[u8]) -> Response {
    let mut s = connect_with(addr, Duration::from_secs(10));
    // A refused head may be cut short by corral: what it answered counts.
    let _ = s.write_all(bytes);
    read_response(&mut BufReader::new(s), false).expect("a response")
}

/// Reads until the peer closes; the bytes read, or None when it stays open
/// for `timeout`.
fn read_to_close(s: &mut TcpStream, timeout: Duration) -> Option<usize> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0; 1 << 16];
    let mut total = 0;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Some(total),
            Ok(n) => total += n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Some(total),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None;
            }
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// True when nothing arrives on `s` for `wait` (and it is still open).
fn silent_for(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut byte = [0u8; 1];
    matches!(s.read(&mut byte), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
}

// ------------------------------------------------------------ slow uploads

#[test]
fn a_stalled_upload_gets_408_the_app_sees_the_client_gone_and_the_worker_lives_on() {
    let (_app, c) = start(&["--timeout", "2s", "--body-timeout", "1s"]);
    let pid = c.worker_pid("/pid");
    // 70 KB of a 200 KB body: more than corral reads before dispatch, so
    // the app is already reading it when the client stalls.
    let mut s = connect_with(&c.addr, Duration::from_secs(10));
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n")
        .unwrap();
    s.write_all(&[b'a'; 70_000]).unwrap();
    let t = Instant::now();
    let r = read_response(&mut BufReader::new(s.try_clone().unwrap()), false).expect("an answer");
    assert_eq!(r.status, 408, "{}", r.text());
    assert_eq!(r.header("connection"), Some("close"));
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "408 took {:?}",
        t.elapsed()
    );
    assert!(read_to_close(&mut s, Duration::from_secs(5)).is_some());
    // The app's wsgi.input raised: the request was cancelled, not the worker.
    assert!(
        c.log
            .wait_for("upload failed: ClientDisconnected", Duration::from_secs(5))
            .is_some(),
        "the app never saw the client go"
    );
    // Past the request timeout, the worker is the same one.
    std::thread::sleep(Duration::from_millis(2500).saturating_sub(t.elapsed()));
    assert_eq!(c.worker_pid("/pid"), pid);
    assert!(
        !c.log.text().contains("exceeded the timeout"),
        "{}",
        c.log.text()
    );
    assert_eq!(metric(&c, "corral_body_timeouts_total"), 1.0);
}

/// A client that never stalls for `body_timeout` but sends a byte now and
/// then would hold its worker's thread without end: past its first
/// `body_timeout` of keeping the app waiting, a body must average
/// `body_min_rate`. With the minimum off, the same client is still being
/// waited for.
#[test]
fn a_trickling_upload_gets_408_once_it_falls_below_the_least_rate() {
    /// Sends 64 KiB of a 10 MB body (what corral reads before dispatch),
    /// then 2 KiB more, then a byte every 300 ms; the status it got, and
    /// how long after the 2 KiB.
    fn trickle(c: &Corral, within: Duration) -> Option<(u16, Duration)> {
        let mut s = connect_with(&c.addr, Duration::from_millis(10));
        s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
            .unwrap();
        s.write_all(&[b'a'; 64 * 1024]).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        s.write_all(&[b'a'; 2 * 1024]).unwrap();
        let t = Instant::now();
        let mut got = Vec::new();
        while t.elapsed() < within {
            std::thread::sleep(Duration::from_millis(300));
            if s.write_all(b"a").is_err() {
                break;
            }
            let mut buf = [0u8; 4096];
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
            if got.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        let text = String::from_utf8_lossy(&got);
        let status = text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
        Some((status, t.elapsed()))
    }

    let (_app, c) = start(&["--body-timeout", "1s", "--body-min-rate", "1KiB"]);
    let pid = c.worker_pid("/pid");
    // The app may wait 1 s (the body timeout), plus 2 s for the 2 KiB at
    // 1 KiB/s, plus a second per KiB of the trickle (a byte per 300 ms
    // earns about 1 ms of each 300).
    let (status, after) = trickle(&c, Duration::from_secs(15)).expect("an answer");
    assert_eq!(status, 408);
    assert!(
        after > Duration::from_millis(2000) && after < Duration::from_secs(5),
        "408 after {after:?}"
    );
    assert!(
        c.log
            .wait_for("upload failed: ClientDisconnected", Duration::from_secs(5))
            .is_some(),
        "the app never saw the client go"
    );
    assert_eq!(c.worker_pid("/pid"), pid, "the same worker, free again");
    assert_eq!(metric(&c, "corral_body_timeouts_total"), 1.0);

    let (_app, c) = start(&["--body-timeout", "1s", "--body-min-rate", "0"]);
    assert_eq!(
        trickle(&c, Duration::from_secs(5)),
        None,
        "still waited for"
    );
}

#[test]
fn a_body_stalled_before_dispatch_gets_408_without_a_worker() {
    let (_app, c) = start(&["--body-timeout", "1s"]);
    let pid = c.worker_pid("/pid");
    let mut s = connect_with(&c.addr, Duration::from_secs(10));
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n\r\n")
        .unwrap();
    s.write_all(&[b'a'; 10_000]).unwrap();
    let t = Instant::now();
    let r = read_response(&mut BufReader::new(s), false).expect("an answer");
    assert_eq!(r.status, 408, "{}", r.text());
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "408 took {:?}",
        t.elapsed()
    );
    assert!(!c.log.text().contains("upload failed"), "the app saw it");
    assert_eq!(metric(&c, "corral_body_timeouts_total"), 1.0);
    assert_eq!(c.worker_pid("/pid"), pid);
}

#[test]
fn a_slow_but_steady_upload_does_not_count_against_the_request_timeout() {
    let (_app, c) = start(&["--timeout", "1s", "--body-timeout", "1s"]);
    let pid = c.worker_pid("/pid");
    let mut s = connect_with(&c.addr, Duration::from_secs(10));
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n")
        .unwrap();
    // 20 KB every 150 ms: 2.2 s in all, twice the request timeout, with
    // every gap well inside the body timeout.
    for _ in 0..15 {
        s.write_all(&[b'a'; 20_000]).unwrap();
        std::thread::sleep(Duration::from_millis(150));
    }
    let r = read_response(&mut BufReader::new(s), false).expect("an answer");
    assert_eq!((r.status, r.text().as_str()), (200, "read 300000"));
    assert_eq!(c.worker_pid("/pid"), pid);
    assert!(!c.log.text().contains("exceeded the timeout"));
}

#[test]
fn an_asgi_app_reading_a_stalled_upload_sees_a_disconnect() {
    let app = AppDir::new(&[("hostile_asgi.py", ASGI_APP)]);
    let c = Corral::start(
        app.path(),
        &[
            "hostile_asgi:app",
            "-w",
            "1",
            "--timeout",
            "2s",
            "--body-timeout",
            "1s",
        ],
        1,
    );
    let pid = c.worker_pid("/pid");
    let mut s = connect_with(&c.addr, Duration::from_secs(10));
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n")
        .unwrap();
    s.write_all(&[b'a'; 70_000]).unwrap();
    let r = read_response(&mut BufReader::new(s), false).expect("an answer");
    assert_eq!(r.status, 408, "{}", r.text());
    assert!(
        c.log
            .wait_for("upload disconnected", Duration::from_secs(5))
            .is_some()
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(c.worker_pid("/pid"), pid);
    assert!(!c.log.text().contains("exceeded the timeout"));
}

#[test]
fn a_client_that_vanishes_mid_upload_frees_the_apps_thread() {
    let (_app, c) = start(&["--timeout", "3s"]);
    let pid = c.worker_pid("/pid");
    let mut s = connect(&c.addr);
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n")
        .unwrap();
    s.write_all(&[b'a'; 70_000]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    reset(s);
    assert!(
        c.log
            .wait_for("upload failed: ClientDisconnected", Duration::from_secs(2))
            .is_some(),
        "the app still waits for the body"
    );
    let t = Instant::now();
    assert_eq!(c.worker_pid("/pid"), pid);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
}

/// Closes `s` with a reset (SO_LINGER 0), as a client that crashed.
fn reset(s: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket this test owns, with a valid linger
    // struct of the size given.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    drop(s);
}

#[test]
fn a_chunked_body_that_outgrows_the_limit_while_it_streams_gets_413() {
    let (_app, c) = start(&["--max-body-bytes", "100KiB"]);
    let pid = c.worker_pid("/pid");
    let chunk = [b"5000\r\n".as_slice(), &[b'a'; 0x5000], b"\r\n"].concat();
    let mut s = c.connect();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    // 80 KiB, more than corral reads before it dispatches: the app starts
    // reading (a request cancelled before its app starts never runs).
    for _ in 0..4 {
        s.write_all(&chunk).unwrap();
    }
    assert!(
        c.log
            .wait_for("upload started", Duration::from_secs(10))
            .is_some()
    );
    // 200 KiB in all, in one write: corral answers 413 at 100 KiB and
    // closes, so a write after that could fail.
    let rest = [chunk.repeat(6).as_slice(), b"0\r\n\r\n"].concat();
    let _ = s.write_all(&rest);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let r = read_response(&mut BufReader::new(s), false).unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
    // The app, already reading, was told; its worker serves on.
    assert!(
        c.log
            .wait_for("upload failed: ClientDisconnected", Duration::from_secs(5))
            .is_some()
    );
    assert_eq!(c.worker_pid("/pid"), pid);

    // The limit is exact while the body streams too (past the 64 KiB read
    // before dispatch): 100 KiB is served, a byte more gets 413.
    let exactly = |n: usize| {
        let mut s = c.connect();
        s.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        for _ in 0..4 {
            s.write_all(&chunk).unwrap();
        }
        let tail = n - 4 * 0x5000;
        let mut rest = format!("{tail:x}\r\n").into_bytes();
        rest.extend_from_slice(&vec![b'b'; tail]);
        rest.extend_from_slice(b"\r\n0\r\n\r\n");
        let _ = s.write_all(&rest);
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        read_response(&mut BufReader::new(s), false).unwrap()
    };
    let r = exactly(100 * 1024);
    assert_eq!((r.status, r.text().as_str()), (200, "read 102400"));
    let r = exactly(100 * 1024 + 1);
    assert_eq!(r.status, 413, "{}", r.text());
}

#[test]
fn an_app_that_hangs_while_its_body_streams_still_times_out() {
    let (_app, c) = start(&["--timeout", "1s"]);
    let pid = c.worker_pid("/pid");
    // The app never reads: the body goes to the worker at once (within its
    // credit), and the app's own time runs out.
    let r = request(&c.addr, "POST", "/sleep", &[], &[b'a'; 100_000]);
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(
        wait_gone(&[pid], Duration::from_secs(10)),
        "hung worker kept"
    );
}

// ------------------------------------------------------- clients that stop reading

#[test]
fn a_client_that_stops_reading_is_cut_off_and_its_worker_thread_freed() {
    let (_app, c) = start(&["--timeout", "3s", "--send-timeout", "1s"]);
    let pid = c.worker_pid("/pid");
    let mut stalled = connect_with(&c.addr, Duration::from_secs(10));
    stalled
        .write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // Never read: the socket buffers fill, then the app's writes block.
    std::thread::sleep(Duration::from_millis(1500));
    // Its only thread is free again: the next request is answered at once,
    // by the same worker.
    let t = Instant::now();
    assert_eq!(c.worker_pid("/pid"), pid);
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        c.log
            .wait_for("stream closed", Duration::from_secs(5))
            .is_some(),
        "the app's response was never cancelled"
    );
    // The stalled client finds its connection closed, its response cut.
    let got = read_to_close(&mut stalled, Duration::from_secs(10)).expect("closed");
    assert!(got < STREAM_BYTES, "got all {got} bytes");
    assert_eq!(metric(&c, "corral_send_timeouts_total"), 1.0);
    assert!(!c.log.text().contains("exceeded the timeout"));
}

/// `send_timeout` counts a stall, not the whole response: a client that
/// reads slowly, but never takes no byte for that long, gets its response.
#[test]
fn a_client_that_reads_slowly_but_steadily_is_not_cut_off() {
    let (_app, c) = start(&["--timeout", "60s", "--send-timeout", "1s"]);
    let mut s = connect_with(&c.addr, Duration::from_secs(10));
    s.write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // 1 MiB every 100 ms for 3 s (30 of the 64 MiB): corral's writes block
    // again and again (the socket buffers are full), each time for well
    // under send_timeout.
    let mut buf = vec![0u8; 1024 * 1024];
    let mut got = 0;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(100));
        s.read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("cut off after {got} bytes and {:?}: {e}", t.elapsed()));
        got += buf.len();
    }
    assert_eq!(metric(&c, "corral_send_timeouts_total"), 0.0);
}

/// Reads `chunk` bytes every `every` from a `/stream` response on a thread
/// of its own for `for_`, or until the connection ends; the bytes it got.
/// (A client cut off still reads what its socket had received first: MiB
/// on loopback.)
fn read_steadily(
    c: &Corral,
    chunk: usize,
    every: Duration,
    for_: Duration,
) -> std::thread::JoinHandle<usize> {
    let mut s = connect_with(&c.addr, Duration::from_secs(10));
    s.write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; chunk];
        let mut got = 0;
        let t = Instant::now();
        while t.elapsed() < for_ {
            std::thread::sleep(every);
            if s.read_exact(&mut buf).is_err() {
                break;
            }
            got += chunk;
        }
        got
    })
}

/// A download slower than the kernel lets corral's writes go on (a
/// blocked write resumes only once a third of the socket's send buffer,
/// MiB on loopback, is free) is not a stall as long as the client takes
/// 16 KiB or more per `send_timeout`, seen from the socket's send queue.
/// Before, 64 KiB every 200 ms was counted as a send timeout (and its
/// connection closed) with a 1 s send timeout. One that takes less is
/// cut as a stall.
#[test]
fn a_slow_download_is_judged_by_what_the_client_takes_not_by_corrals_blocked_writes() {
    let (_app, c) = start(&["--timeout", "60s", "--send-timeout", "1s"]);
    // 320 KB/s for 4 s: corral's writes stay blocked for seconds at a time.
    let steady = read_steadily(
        &c,
        64 * 1024,
        Duration::from_millis(200),
        Duration::from_secs(4),
    );
    let got = steady.join().unwrap();
    assert_eq!(got, 20 * 64 * 1024, "the steady download ended early");
    assert_eq!(metric(&c, "corral_send_timeouts_total"), 0.0);
    // 4 KB/s: under 16 KiB per second, the client is as good as stalled.
    let slow = read_steadily(&c, 1024, Duration::from_millis(250), Duration::from_secs(6));
    let t = Instant::now();
    c.wait_until("the 4 KB/s client's send timeout", || {
        metric(&c, "corral_send_timeouts_total") == 1.0
    });
    assert!(
        t.elapsed() < Duration::from_secs(6),
        "cut after {:?}",
        t.elapsed()
    );
    slow.join().unwrap();
}

#[test]
fn a_websocket_client_that_stops_reading_is_closed_and_its_place_freed() {
    let app = AppDir::new(&[("hostile_asgi.py", ASGI_APP)]);
    let c = Corral::start(
        app.path(),
        &[
            "hostile_asgi:app",
            "-w",
            "1",
            "--concurrency",
            "1",
            "--timeout",
            "2s",
            "--send-timeout",
            "1s",
            "--status-bind",
            "127.0.0.1:0",
        ],
        1,
    );
    let mut ws = connect_with(&c.addr, Duration::from_secs(10));
    ws.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut r = BufReader::new(ws);
    assert_eq!(read_response(&mut r, false).unwrap().status, 101);
    // Never read the messages: the app's sends block, then the socket is
    // given up and the app told.
    assert!(
        c.log
            .wait_for("ws send failed: ClientDisconnected", Duration::from_secs(6))
            .is_some(),
        "the app was never told"
    );
    // The worker's only place is free again.
    assert_eq!(c.get("/pid").status, 200);
    assert_eq!(metric(&c, "corral_send_timeouts_total"), 1.0);
}

// ------------------------------------------------------------- connection cap

#[test]
fn at_max_connections_new_ones_wait_in_the_backlog_and_open_ones_keep_working() {
    let (_app, c) = start(&["--max-connections", "2", "--keepalive", "30s"]);
    let get_pid = b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(metric(&c, "corral_connections_open"), 0.0);
    let mut open: Vec<BufReader<TcpStream>> = (0..2)
        .map(|_| {
            let mut s = connect_with(&c.addr, Duration::from_secs(10));
            s.write_all(get_pid).unwrap();
            let mut r = BufReader::new(s);
            assert_eq!(read_response(&mut r, false).unwrap().status, 200);
            r
        })
        .collect();
    // A third connects (the kernel queues it) but is not served...
    let mut third = connect_with(&c.addr, Duration::from_secs(10));
    third.write_all(get_pid).unwrap();
    assert!(silent_for(&mut third, Duration::from_millis(700)));
    // ...while the open ones are.
    open[0].get_mut().write_all(get_pid).unwrap();
    assert_eq!(read_response(&mut open[0], false).unwrap().status, 200);
    assert_eq!(metric(&c, "corral_connections_open"), 2.0);
    assert!(metric(&c, "corral_connections_capped_total") >= 1.0);
    // One closes: the third is taken and answered.
    open.remove(0);
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let r = read_response(&mut BufReader::new(third), false).expect("served");
    assert_eq!(r.status, 200);
    drop(open);
    c.wait_until("every connection closed", || {
        metric(&c, "corral_connections_open") == 0.0
    });
}

/// A connection corral closes lingers until the client closes it too
/// (see `Socket::linger`), and keeps its place under `max_connections`
/// meanwhile: clients that never close cannot make corral hold more
/// sockets than that, and the next one is taken once they do.
#[test]
fn a_lingering_connection_keeps_its_place_until_the_client_closes() {
    let (_app, c) = start(&["--max-connections", "1"]);
    let close = b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut first = connect_with(&c.addr, Duration::from_secs(10));
    first.write_all(close).unwrap();
    // Answered and closed on corral's side; the client keeps its socket.
    assert!(read_to_close(&mut first, Duration::from_secs(5)).is_some());
    let mut second = connect_with(&c.addr, Duration::from_secs(10));
    second.write_all(close).unwrap();
    assert!(silent_for(&mut second, Duration::from_millis(500)));
    let t = Instant::now();
    drop(first);
    second
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let r = read_response(&mut BufReader::new(second), false).expect("served");
    assert_eq!(r.status, 200);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
}

/// A connection from `source` (an address of this machine's loopback) to
/// `addr`.
fn connect_from(source: &str, addr: &str) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(format!("{source}:0").parse().unwrap()).unwrap();
        let to = addr.parse().unwrap();
        tokio::time::timeout(Duration::from_secs(10), s.connect(to))
            .await
            .expect("connects within 10 s")
            .unwrap()
    });
    let s = s.into_std().unwrap();
    s.set_nonblocking(false).unwrap();
    s
}

/// A client's idle keep-alive connection is closed after `keepalive`, as
/// is one whose head stalls; a proxy's (a peer in `forwarded_allow_ips`)
/// is kept between its requests for at least 75 s, so that the proxy,
/// which keeps its idle upstream connections for 60 s (nginx, AWS's load
/// balancers), closes it, never corral just as the proxy sends on it.
#[test]
fn a_clients_idle_connection_is_closed_after_keepalive_and_a_proxys_is_kept() {
    let (_app, c) = start(&["--keepalive", "1s", "--forwarded-allow-ips", "127.0.0.2"]);
    let get_pid = b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n";
    let served = |s: &mut TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(get_pid).unwrap();
        let r = read_response(&mut BufReader::new(s.try_clone().unwrap()), false);
        assert_eq!(r.map(|r| r.status).ok(), Some(200));
    };
    let mut client = connect_with(&c.addr, Duration::from_secs(10));
    served(&mut client);
    let mut proxy = connect_from("127.0.0.2", &c.addr);
    served(&mut proxy);
    let mut stalled = connect_with(&c.addr, Duration::from_secs(10));
    stalled
        .write_all(b"GET /pid HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let t = Instant::now();
    assert!(read_to_close(&mut client, Duration::from_secs(5)).is_some());
    assert!(read_to_close(&mut stalled, Duration::from_secs(5)).is_some());
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "took {:?}",
        t.elapsed()
    );
    // Three times the keep-alive later, the proxy's connection serves on.
    std::thread::sleep(Duration::from_secs(3).saturating_sub(t.elapsed()));
    served(&mut proxy);
}

// ------------------------------------------------------------- status server

#[test]
fn the_status_server_closes_silent_and_half_sent_connections() {
    let (_app, c) = start(&["--keepalive", "1s"]);
    let mut silent = connect_with(&c.status_addr, Duration::from_secs(5));
    let mut half = connect_with(&c.status_addr, Duration::from_secs(5));
    half.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let t = Instant::now();
    assert!(read_to_close(&mut silent, Duration::from_secs(5)).is_some());
    assert!(read_to_close(&mut half, Duration::from_secs(5)).is_some());
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "took {:?}",
        t.elapsed()
    );
}

/// A client that holds every connection the status server takes (64) and
/// opens another as soon as one closes, as a slowloris on a Kubernetes
/// pod's status port would: each probe (kubelet's 1 s timeout) is still
/// answered, since corral closes the connection open longest to make
/// room. Before, new connections waited in the listen queue for a free
/// one, and 11 of 13 probes timed out.
#[test]
fn a_client_holding_the_status_servers_connections_cannot_keep_a_probe_out() {
    let (_app, c) = start(&["--keepalive", "30s"]);
    let addr = c.status_addr.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let attacker = std::thread::spawn(move || {
        let open = || {
            let mut s = connect_with(&addr, Duration::from_secs(5));
            let _ = s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n");
            s.set_nonblocking(true).unwrap();
            s
        };
        let mut held: Vec<TcpStream> = (0..70).map(|_| open()).collect();
        let mut reopened = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
            for s in held.iter_mut() {
                let mut byte = [0u8; 1];
                match s.read(&mut byte) {
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    _ => {
                        *s = open();
                        reopened += 1;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        reopened
    });
    // Every connection taken, and older than what corral waits for.
    std::thread::sleep(Duration::from_secs(1));
    for i in 0..10 {
        let t = Instant::now();
        let mut probe = connect_with(&c.status_addr, Duration::from_secs(1));
        probe
            .write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let r = read_response(&mut BufReader::new(probe), false)
            .unwrap_or_else(|e| panic!("probe {i} not answered within 1 s: {e}"));
        assert_eq!(r.status, 200);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "probe {i}: {:?}",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(c.get("/pid").status, 200, "the app port serves");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reopened = attacker.join().unwrap();
    assert!(reopened >= 10, "corral closed {reopened} to make room");
}

#[test]
fn health_ready_tells_probes_counts_and_states_only() {
    let app = AppDir::new(&[(
        "broken.py",
        "raise RuntimeError('could not connect to postgresql://app:s3cret@db/app')\n",
    )]);
    let mut c = Corral::spawn(
        app.path(),
        &["broken:app", "-w", "1", "--status-bind", "127.0.0.1:0"],
        &[],
    );
    c.wait_listening();
    c.wait_until("the boot error in /status", || {
        c.status("/status").text().contains("s3cret")
    });
    let r = c.status("/health/ready");
    assert_eq!(r.status, 503);
    assert!(
        r.text().contains("0 of 1 workers in service"),
        "{}",
        r.text()
    );
    assert!(!r.text().contains("s3cret"), "{}", r.text());
    assert!(!r.text().contains("RuntimeError"), "{}", r.text());
}

#[test]
fn status_and_metrics_want_the_bearer_token_and_probes_stay_open() {
    let token = "9f86d081884c7d659a2feaa0c55ad015";
    let app = AppDir::new(&[("hostile.py", APP)]);
    let mut c = Corral::spawn(
        app.path(),
        &["hostile:app", "-w", "1", "--status-bind", "127.0.0.1:0"],
        &[("CORRAL_STATUS_TOKEN", token)],
    );
    c.wait_listening();
    c.wait_in_service(1);
    let addr = c.status_addr.clone();
    let get = |path: &str, auth: Option<&str>| {
        let auth = auth.map(|a| ("Authorization", a));
        request(&addr, "GET", path, auth.as_slice(), b"")
    };
    for path in ["/status", "/metrics"] {
        // A part of the token, or the token with more after it, is no
        // token.
        let (part, more) = (
            format!("Bearer {}", &token[..8]),
            format!("Bearer {token}0"),
        );
        for auth in [
            None,
            Some("Bearer wrong-token-wrong-token-xx"),
            Some(token),
            Some(part.as_str()),
            Some(more.as_str()),
        ] {
            let r = get(path, auth);
            assert_eq!(r.status, 401, "{path} with {auth:?}");
            assert_eq!(
                r.header("www-authenticate"),
                Some("Bearer realm=\"corral\"")
            );
        }
        let r = get(path, Some(&format!("Bearer {token}")));
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    assert!(
        get("/status", Some(&format!("Bearer {token}")))
            .text()
            .contains("\"slots\"")
    );
    assert_eq!(get("/health/live", None).status, 200);
    assert_eq!(get("/health/ready", None).status, 200);
    // Bound to every address, but with a token: no warning.
    assert!(!c.log.text().contains("reachable from other hosts"));

    // `corral status` sends the token from the environment; through the
    // control socket it needs none.
    let status_cmd = |args: &[&str], env: &[(&str, &str)]| {
        let out = std::process::Command::new(corral_bin())
            .arg("status")
            .args(args)
            .current_dir(app.path())
            .env_remove("CORRAL_STATUS_TOKEN")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = status_cmd(
        &["--status-bind", &addr, "--json"],
        &[("CORRAL_STATUS_TOKEN", token)],
    );
    assert_eq!(code, Some(0));
    assert!(out.contains("\"slots\""), "{out}");
    let (code, _) = status_cmd(&["--status-bind", &addr], &[]);
    assert_eq!(code, Some(1));
    let socket = c.socket.display().to_string();
    let (code, out) = status_cmd(&["--socket", &socket, "--json"], &[]);
    assert_eq!(code, Some(0));
    assert!(out.contains("\"slots\""), "{out}");
}

#[test]
fn a_status_server_reachable_from_other_hosts_without_a_token_is_warned_about() {
    let app = AppDir::new(&[("hostile.py", APP)]);
    // 0.0.0.0 in a network namespace of its own: reachable from nowhere.
    let mut open = Corral::spawn_in_netns(
        app.path(),
        &["hostile:app", "-w", "1", "--status-bind", "0.0.0.0:0"],
        &[],
    );
    open.wait_listening();
    assert!(
        open.log
            .wait_for(
                "reachable from other hosts and has no token",
                Duration::from_secs(5)
            )
            .is_some()
    );
    let (_app, local) = start(&[]);
    assert!(!local.log.text().contains("reachable from other hosts"));
}

// ------------------------------------------------------------- request heads

#[test]
fn host_and_transfer_encoding_are_checked_before_any_worker() {
    let (_app, c) = start(&[]);
    let served = || {
        c.status_json()["slots"][0]["worker"]["requests"]
            .as_u64()
            .unwrap()
    };
    let refused = [
        &b"GET /pid HTTP/1.1\r\n\r\n"[..],
        b"GET /pid HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
        b"GET /pid HTTP/1.1\r\nHost: user@a.example\r\n\r\n",
        b"GET /pid HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
          Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ];
    for head in refused {
        let r = raw(&c.addr, head);
        assert_eq!(
            r.status,
            400,
            "{}: {}",
            String::from_utf8_lossy(head),
            r.text()
        );
    }
    // None of them reached the app; good ones do.
    assert_eq!(served(), 0);
    let r = raw(&c.addr, b"GET /pid HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
    let r = raw(
        &c.addr,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
    assert_eq!((r.status, r.text().as_str()), (200, "read 3"));
    assert_eq!(served(), 2);
}

#[test]
fn the_head_size_limit_is_exact() {
    let (_app, c) = start(&[]); // max_header_bytes = 64 KiB
    let head = |size: usize| {
        let start = "GET /pid HTTP/1.1\r\nHost: x\r\nX-Pad: ";
        let end = "\r\n\r\n";
        format!("{start}{}{end}", "p".repeat(size - start.len() - end.len())).into_bytes()
    };
    assert_eq!(raw(&c.addr, &head(64 * 1024)).status, 200);
    assert_eq!(raw(&c.addr, &head(64 * 1024 + 1)).status, 431);
    assert_eq!(raw(&c.addr, &head(100_000)).status, 431);
    assert_eq!(raw(&c.addr, &head(8 * 1024)).status, 200);
}

/// Heads hyper answers itself, before corral's handler (a header line
/// without a colon: 400; one over `max_header_bytes`: 431), are counted in
/// `/metrics` (`corral_malformed_requests_total` by status, and among the
/// 4xx answers) and said at DEBUG with the peer, as gunicorn says "Invalid
/// request from ip=". Before, neither counted nor said them: a client
/// sending broken requests by the thousand was seen nowhere.
#[test]
fn heads_hyper_refuses_are_counted_and_said_at_debug() {
    let (_app, c) = start(&["--log-level", "debug"]);
    let four = |c: &Corral| metric(c, "corral_requests_total{class=\"4xx\"}");
    let before = four(&c);
    let no_colon = b"GET /pid HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n";
    assert_eq!(raw(&c.addr, no_colon).status, 400);
    let big = format!(
        "GET /pid HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(70_000)
    );
    assert_eq!(raw(&c.addr, big.as_bytes()).status, 431);
    c.wait_until("both counted", || {
        metric(&c, "corral_malformed_requests_total{status=\"400\"}") == 1.0
            && metric(&c, "corral_malformed_requests_total{status=\"431\"}") == 1.0
    });
    assert_eq!(four(&c) - before, 2.0);
    let line = c
        .log
        .wait_for(
            "invalid request from 127.0.0.1: invalid HTTP header",
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("not said; log:\n{}", c.log.text()));
    assert!(line.contains("DEBUG"), "{line}");
    assert!(
        c.log
            .wait_for(
                "invalid request from 127.0.0.1: message head is too large",
                Duration::from_secs(10)
            )
            .is_some(),
        "{}",
        c.log.text()
    );
}

// ------------------------------------------------------- forwarded and logs

#[test]
fn a_forwarded_for_that_is_no_address_is_ignored_and_log_lines_are_escaped() {
    let (_app, c) = start(&["--access-log", "combined", "--timeout", "1s"]);
    let remote =
        |xff: &str| request(&c.addr, "GET", "/remote", &[("X-Forwarded-For", xff)], b"").text();
    // The test's own address (127.0.0.1) is a trusted proxy by default.
    assert_eq!(remote("203.0.113.9:4711"), "203.0.113.9");
    assert_eq!(remote("[2001:db8::7]:443"), "2001:db8::7");
    let forged = "6.6.6.6 - - [01/Jan/2030:00:00:00 +0000] \"GET /admin HTTP/1.1\" 200 0";
    assert_eq!(remote(forged), "127.0.0.1");
    assert_eq!(remote("<script>alert(1)</script>"), "127.0.0.1");
    // Their access lines first: those would show a forged address.
    c.log
        .wait_count("\"GET /remote HTTP/1.1\"", 4, Duration::from_secs(10));
    assert!(!c.log.text().contains("6.6.6.6"), "{}", c.log.text());
    assert!(!c.log.text().contains("<script>"), "{}", c.log.text());

    // A user agent with a quote and a byte that is not ASCII.
    let mut s = connect(&c.addr);
    s.write_all(b"GET /pid HTTP/1.1\r\nHost: x\r\nUser-Agent: a\"b \xe9\r\n\r\n")
        .unwrap();
    assert_eq!(
        read_response(&mut BufReader::new(s), false).unwrap().status,
        200
    );
    assert!(
        c.log
            .wait_for("\"a\\\"b \\xE9\"", Duration::from_secs(5))
            .is_some(),
        "{}",
        c.log.text()
    );
    // corral's own lines quote request data escaped too: a right-to-left
    // override in a path that timed out.
    let r = raw(
        &c.addr,
        b"GET /sleep/\xe2\x80\xae HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(r.status, 504);
    let line = c
        .log
        .wait_for("exceeded the timeout", Duration::from_secs(5))
        .unwrap();
    assert!(line.contains("/sleep/\\xE2\\x80\\xAE"), "{line}");
    assert!(!line.contains('\u{202e}'), "{line}");
}

#[test]
fn a_response_cut_short_by_a_stalled_upload_does_not_look_complete() {
    let (_app, c) = start(&["--body-timeout", "1s"]);
    let mut s = connect_with(&c.addr, Duration::from_secs(10));
    s.write_all(b"POST /late HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n")
        .unwrap();
    s.write_all(&[b'a'; 70_000]).unwrap();
    // The head and the first chunk come; then the upload stalls, and the
    // response must end without chunked encoding's last chunk, or the
    // client would take "started" for the whole body.
    let mut raw = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    loop {
        let mut buf = [0; 4096];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the connection never closed: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("started"), "{text}");
    assert!(!text.contains("read "), "{text}");
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "ended as if complete: {text:?}"
    );
}

/// Out of file descriptors, accepts fail 20 times a second: the log says
/// so once (then once every 10 s, with how many), not with a line each,
/// and corral serves again once connections close.
#[test]
fn running_out_of_file_descriptors_is_said_once_not_twenty_times_a_second() {
    use std::os::unix::process::CommandExt;
    let app = AppDir::new(&[("hostile.py", APP)]);
    let mut c = Corral::spawn_with(
        app.path(),
        &["hostile:app", "-w", "1", "--threads", "1"],
        &[],
        |cmd| unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 64,
                    rlim_max: 64,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        },
    );
    c.wait_listening();
    c.wait_in_service(1);
    let held: Vec<TcpStream> = (0..100)
        .filter_map(|_| TcpStream::connect(&c.addr).ok())
        .collect();
    c.log
        .wait_for("accept failed", Duration::from_secs(10))
        .expect("corral ran out of file descriptors");
    std::thread::sleep(Duration::from_millis(2500));
    let lines = c.log.count("accept failed");
    assert!(lines <= 2, "{lines} lines:\n{}", c.log.text());
    drop(held);
    c.wait_until("serving again", || {
        TcpStream::connect(&c.addr).is_ok() && c.get("/pid").status == 200
    });
}
