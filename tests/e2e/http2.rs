//! HTTP/2 streams as worker requests (h2c with prior knowledge): RST_STREAM
//! cancels one request and leaves the connection serving, a rapid-reset
//! flood (CVE-2023-44487) stays within a memory bound, and a graceful stop
//! sends GOAWAY and finishes the streams in flight. The client is a few
//! lines of raw frames (HPACK with static-table indices and literals only),
//! so each test sends exactly the frames it names.

use crate::common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;

struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HEADERS (END_STREAM | END_HEADERS) for `GET path`, HPACK without the
/// dynamic table: :method GET (2), :scheme http (6), :path as a literal
/// (name 4), :authority "a" as a literal (name 1).
fn get(stream: u32, path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x01, 0x01, b'a']);
    frame(HEADERS, 0x5, stream, &block)
}

/// RST_STREAM with CANCEL (8).
fn reset(stream: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &8u32.to_be_bytes())
}

fn open(addr: &str) -> TcpStream {
    let mut s = connect(addr);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    s.write_all(&hello).unwrap();
    s
}

/// The next frame; SETTINGS and PING are acknowledged on the way.
fn next(s: &mut TcpStream) -> std::io::Result<Frame> {
    loop {
        let mut head = [0u8; 9];
        s.read_exact(&mut head)?;
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let mut payload = vec![0; len];
        s.read_exact(&mut payload)?;
        let f = Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload,
        };
        match (f.kind, f.flags & 1) {
            (SETTINGS, 0) => s.write_all(&frame(SETTINGS, 1, 0, &[]))?,
            (PING, 0) => s.write_all(&frame(PING, 1, 0, &f.payload))?,
            _ => return Ok(f),
        }
    }
}

/// Reads until stream `stream` ends; its status (hyper sends 200 as the
/// static index 8) and body.
fn response(s: &mut TcpStream, stream: u32) -> (bool, Vec<u8>) {
    let mut ok = false;
    let mut body = Vec::new();
    loop {
        let f = next(s).expect("a frame");
        if f.stream != stream {
            continue;
        }
        match f.kind {
            HEADERS => ok = f.payload.first() == Some(&0x88),
            DATA => body.extend_from_slice(&f.payload),
            RST_STREAM => panic!("stream {stream} was reset"),
            _ => {}
        }
        if f.flags & 1 == 1 {
            return (ok, body);
        }
    }
}

fn wait_file(path: &Path, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

const ASGI: &str = "import asyncio\n\nasync def app(scope, receive, send):\n    if scope['type'] != 'http':\n        return\n    if scope['path'] == '/slow':\n        open('started', 'w').close()\n        await receive()\n        if (await receive())['type'] == 'http.disconnect':\n            open('cancelled', 'w').close()\n        return\n    if scope['path'] == '/sleep':\n        await asyncio.sleep(1)\n    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n    await send({'type': 'http.response.body', 'body': b'ok ' + scope['http_version'].encode()})\n";

#[test]
fn rst_stream_cancels_its_request_and_the_connection_serves_on() {
    let app = AppDir::new(&[("app.py", ASGI)]);
    let c = Corral::start(app.path(), &["app:app", "--interface", "asgi"], 1);
    let mut s = open(&c.addr);
    s.write_all(&get(1, "/slow")).unwrap();
    assert!(wait_file(
        &app.path().join("started"),
        Duration::from_secs(10)
    ));
    s.write_all(&reset(1)).unwrap();
    assert!(
        wait_file(&app.path().join("cancelled"), Duration::from_secs(10)),
        "the app never saw http.disconnect; log:\n{}",
        c.log.text()
    );
    s.write_all(&get(3, "/")).unwrap();
    assert_eq!(response(&mut s, 3), (true, b"ok 2".to_vec()));
    // The same for an HTTP/1.1 client that closes its connection.
    for f in ["started", "cancelled"] {
        std::fs::remove_file(app.path().join(f)).unwrap();
    }
    let mut h1 = connect(&c.addr);
    h1.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    assert!(wait_file(
        &app.path().join("started"),
        Duration::from_secs(10)
    ));
    drop(h1);
    assert!(wait_file(
        &app.path().join("cancelled"),
        Duration::from_secs(10)
    ));
}

#[test]
fn a_graceful_stop_sends_goaway_and_finishes_the_streams_in_flight() {
    let app = AppDir::new(&[("app.py", ASGI)]);
    let mut c = Corral::start(app.path(), &["app:app", "--interface", "asgi"], 1);
    let mut s = open(&c.addr);
    s.write_all(&get(1, "/sleep")).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    c.signal(libc::SIGTERM);
    let mut goaway = false;
    let mut body = Vec::new();
    loop {
        let f = next(&mut s).expect("a frame before the stream ends");
        match f.kind {
            GOAWAY => goaway = true,
            DATA if f.stream == 1 => body.extend_from_slice(&f.payload),
            RST_STREAM => panic!("stream {} was reset", f.stream),
            _ => {}
        }
        if f.stream == 1 && f.flags & 1 == 1 {
            break;
        }
    }
    assert!(goaway, "no GOAWAY before the stream ended");
    assert_eq!(body, b"ok 2");
    let status = c.wait_exit(Duration::from_secs(20)).expect("corral exits");
    assert!(status.success());
}

/// corral's CPU time so far (user + system), from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    // utime and stime are fields 14 and 15; `after` starts at field 3.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// Sends `count` HEADERS + RST_STREAM pairs, ten at a time, each ten
/// followed by a PING: its ACK means corral has read and handled them
/// (frames are handled in order), and only those count. A connection that
/// gets GOAWAY is replaced by a new one. Returns (connections, GOAWAYs).
fn flood(addr: &str, count: u32) -> (u32, u32) {
    let mut handled = 0;
    let mut connections = 0;
    let mut goaways = 0;
    while handled < count {
        connections += 1;
        let mut s = open(addr);
        let mut stream = 1;
        'conn: loop {
            let mut batch = Vec::new();
            for _ in 0..10 {
                batch.extend(get(stream, "/"));
                batch.extend(reset(stream));
                stream += 2;
            }
            batch.extend(frame(PING, 0, 0, &[0; 8]));
            if s.write_all(&batch).is_err() {
                break;
            }
            loop {
                match next_raw(&mut s) {
                    Ok(f) if f.kind == PING && f.flags & 1 == 1 => break,
                    Ok(f) if f.kind == GOAWAY => {
                        goaways += 1;
                        break 'conn;
                    }
                    Ok(_) => {}
                    Err(_) => break 'conn,
                }
            }
            handled += 10;
            if handled >= count {
                break;
            }
        }
    }
    (connections, goaways)
}

/// The next frame, acknowledging nothing (the flood's reader).
fn next_raw(s: &mut TcpStream) -> std::io::Result<Frame> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head)?;
    let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
    let mut payload = vec![0; len];
    s.read_exact(&mut payload)?;
    Ok(Frame {
        kind: head[3],
        flags: head[4],
        stream: 0,
        payload,
    })
}

/// CVE-2023-44487: 10,000 streams opened and reset at once raise corral's
/// RSS by less than 16 MiB (hyper's h2 sends GOAWAY ENHANCE_YOUR_CALM to a
/// client whose reset streams pile up), and corral serves on.
#[test]
fn a_rapid_reset_flood_is_bounded_and_corral_serves_on() {
    let app = AppDir::new(&[("app.py", ASGI)]);
    let c = Corral::start(
        app.path(),
        &[
            "app:app",
            "--interface",
            "asgi",
            "--status-bind",
            "127.0.0.1:0",
        ],
        1,
    );
    let pid = c.pid();
    flood(&c.addr, 200);
    let rss_before = rss_kib(pid);
    let cpu_before = cpu_time(pid);
    let start = Instant::now();
    let (connections, goaways) = flood(&c.addr, 10_000);
    let took = start.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let rss_after = rss_kib(pid);
    let cpu = cpu_time(pid) - cpu_before;
    let metrics = c.status("/metrics").text();
    let dispatched = metrics
        .lines()
        .find(|l| l.starts_with("corral_requests_by_version_total{version=\"2\"}"))
        .unwrap_or_default()
        .to_owned();
    eprintln!(
        "10,000 resets in {took:?} on {connections} connection(s), {goaways} GOAWAY(s); \
         corral RSS {rss_before} -> {rss_after} KiB, CPU {cpu:?}; {dispatched}"
    );
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    let mut s = open(&c.addr);
    s.write_all(&get(1, "/")).unwrap();
    assert_eq!(response(&mut s, 1), (true, b"ok 2".to_vec()));
}
