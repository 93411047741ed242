//! The shared-memory rings between corral and a WSGI worker
//! (`[workers] shared_memory`): bodies far bigger than a ring go through
//! both ways while it fills and wraps, and a worker that forges the rings'
//! indices or writes garbage frames into them is killed and replaced while
//! the other worker serves on. A worker reaches its rings through the
//! worker package's own `Ring` object, as a hostile app could.

use crate::common::*;
use std::time::{Duration, Instant};

const APP: &str = r#"
import gc, os, time

def ring():
    from corral_worker.ring import Ring
    return next(o for o in gc.get_objects() if type(o) is Ring)

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/echo":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    if path == "/big":
        n = int(environ["QUERY_STRING"])
        start_response("200 OK", [("Content-Length", str(n))])
        return [(bytes(range(251)) * (n // 251 + 1))[:n]]
    if path == "/forge":
        # A response tail a whole ring ahead of what corral has read.
        from corral_worker import ring as r
        w = ring()
        w.words[r.RESP_TAIL] = w.resp_tail + w.size + 1
        os.write(w.resp_data, r.ONE)
        time.sleep(60)
    if path == "/forge-head":
        # A request head past what corral has written: found on corral's
        # next write.
        from corral_worker import ring as r
        w = ring()
        w.words[r.REQ_HEAD] = w.req_head + 10**9
    if path == "/garbage":
        # A frame header announcing a 4 GiB payload, through the ring.
        ring().send_pieces([b"\xff\xff\xff\xff\x0d\x00\x00\x00\x00"])
        time.sleep(60)
    if path == "/transport":
        body = type(ring()).__name__.encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"#;

fn start(workers: usize, extra: &[&str]) -> (AppDir, Corral) {
    let app = AppDir::new(&[("ringapp.py", APP)]);
    let w = workers.to_string();
    let mut args = vec![
        "ringapp:app",
        "-w",
        &w,
        "--timeout",
        "20s",
        "--status-bind",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let c = Corral::start(app.path(), &args, workers);
    (app, c)
}

fn transports(c: &Corral) -> Vec<String> {
    c.status_json()["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["worker"]["transport"].as_str().unwrap_or("").to_string())
        .collect()
}

/// The pattern `/big` answers with.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[test]
fn bodies_many_times_the_ring_go_through_both_ways_at_once() {
    let (_app, c) = start(1, &[]);
    assert_eq!(transports(&c), ["shared-memory"]);
    // A ring is 256 KiB each way: 3 MiB uploads and downloads from four
    // clients at once fill both rings, wait for room and wrap many times.
    let addr = c.addr.clone();
    let clients: Vec<_> = (0..4u8)
        .map(|k| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                for round in 0..3u8 {
                    let body: Vec<u8> = (0..3 * 1024 * 1024 + 7)
                        .map(|i: usize| (i as u8) ^ k ^ round.wrapping_mul(17))
                        .collect();
                    let r = request(&addr, "POST", "/echo", &[], &body);
                    assert_eq!(r.status, 200, "client {k}: {}", r.text());
                    assert!(r.body == body, "client {k} round {round}: echo differs");
                    let n = 3 * 1024 * 1024 + 11 * k as usize;
                    let r = request(&addr, "GET", &format!("/big?{n}"), &[], b"");
                    assert_eq!(r.status, 200);
                    assert!(
                        r.body == pattern(n),
                        "client {k} round {round}: download differs"
                    );
                }
            })
        })
        .collect();
    for t in clients {
        t.join().expect("a client failed");
    }
    // 24 requests of 60 KiB (bodies that travel whole in their REQUEST
    // frame) at once to a worker that runs one at a time: 1.4 MiB queued
    // for a 256 KiB request ring, and responses bigger than the response
    // ring (head + a 256 KiB body in one frame).
    let clients: Vec<_> = (0..24u8)
        .map(|k| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let body = vec![k; 60 * 1024];
                let r = request(&addr, "POST", "/echo", &[], &body);
                assert!(r.status == 200 && r.body == body, "client {k}");
                let r = request(&addr, "GET", "/big?262144", &[], b"");
                assert!(r.status == 200 && r.body == pattern(262_144), "client {k}");
            })
        })
        .collect();
    for t in clients {
        t.join().expect("a client failed");
    }
    assert_eq!(c.get("/transport").text(), "Ring");
}

#[test]
fn shared_memory_false_keeps_everything_on_the_socket() {
    let app = AppDir::new(&[
        ("ringapp.py", APP),
        ("corral.toml", "[workers]\nshared_memory = false\n"),
    ]);
    let c = Corral::start(
        app.path(),
        &[
            "ringapp:app",
            "-c",
            "corral.toml",
            "--status-bind",
            "127.0.0.1:0",
        ],
        1,
    );
    assert_eq!(transports(&c), ["socket"]);
    let body = vec![7u8; 1 << 20];
    let r = request(&c.addr, "POST", "/echo", &[], &body);
    assert!(r.status == 200 && r.body == body);
}

/// Asks `path` of one worker, expects it killed and replaced while the
/// other one serves every request meanwhile; the log names `why`. A forged
/// request index is found when corral next writes to the liar: that one
/// request (the liar's own) gets 502.
fn a_lying_worker_is_replaced(path: &str, why: &str) {
    let (_app, c) = start(2, &[]);
    let pids: Vec<u32> = (0..20).map(|_| c.worker_pid("/")).collect();
    if path == "/forge-head" {
        c.get(path);
    } else {
        crate::hostile_worker::gets_502_at_once(&c, path);
    }
    // The other worker never failed a request; the liar is gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen_new = false;
    let mut failed = 0;
    while !seen_new {
        let r = c.get("/");
        if r.status == 502 && path == "/forge-head" && failed == 0 {
            failed += 1;
            continue;
        }
        assert_eq!(r.status, 200, "{}\n{}", r.text(), c.log.text());
        let pid: u32 = r.text().parse().unwrap();
        seen_new = !pids.contains(&pid);
        assert!(
            Instant::now() < deadline,
            "no new worker; log:\n{}",
            c.log.text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    c.log
        .wait_for(why, Duration::from_secs(5))
        .unwrap_or_else(|| panic!("log does not say {why:?}:\n{}", c.log.text()));
    assert!(c.log.has("broke the worker protocol"));
    c.wait_in_service(2);
    assert_eq!(transports(&c), ["shared-memory", "shared-memory"]);
}

#[test]
fn a_worker_that_forges_its_response_index_is_replaced_and_the_other_serves_on() {
    a_lying_worker_is_replaced("/forge", "response ring index is out of range");
}

#[test]
fn a_worker_that_forges_its_request_index_is_replaced_and_the_other_serves_on() {
    a_lying_worker_is_replaced("/forge-head", "request ring index is out of range");
}

#[test]
fn a_worker_that_writes_garbage_into_its_ring_is_replaced_and_the_other_serves_on() {
    a_lying_worker_is_replaced("/garbage", "bad frame");
}

#[test]
fn a_worker_killed_mid_response_costs_only_that_response() {
    let (_app, c) = start(2, &[]);
    // A 64 MiB response is still going through its ring when the worker
    // serving it is killed.
    let mut s = c.connect();
    send_request(&mut s, "GET", "/big?67108864", &[], b"");
    let mut r = std::io::BufReader::new(s);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut r, &mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let busy = c.status_json()["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["worker"]["in_flight"].as_u64() == Some(1))
        .map(|s| s["worker"]["pid"].as_u64().unwrap() as u32)
        .expect("a worker with the request in flight");
    unsafe { libc::kill(busy as i32, libc::SIGKILL) };
    // The cut response ends short of its length, and nothing else fails.
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut r, &mut rest);
    assert!(rest.len() < 64 << 20, "the whole response came");
    for _ in 0..50 {
        let r = c.get("/");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    c.wait_in_service(2);
}

/// corral's open file descriptors.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn a_worker_that_dies_while_its_request_ring_is_full_leaves_no_channel_behind() {
    // Eight threads: room for the eight uploads below whatever the
    // prefetch queue learned from the first answer's time.
    let (_app, mut c) = start(1, &["--threads", "8", "--graceful-timeout", "1s"]);
    let pid = c.worker_pid("/");
    let before = open_fds(c.pid());
    // The worker stops reading: uploads fill its 256 KiB request ring and
    // corral's writer waits for room that only the worker could make.
    stop_process(pid);
    let body = vec![b'x'; 60 * 1024];
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let mut s = c.connect();
            send_request(&mut s, "POST", "/echo", &[], &body);
            s
        })
        .collect();
    c.wait_until("the request ring to fill", || {
        c.status_json()["slots"][0]["worker"]["in_flight"].as_u64() >= Some(5)
    });
    std::thread::sleep(Duration::from_millis(300));
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    c.log
        .wait_for("was killed by SIGKILL", Duration::from_secs(10))
        .expect("corral saw the worker die");
    c.wait_until("the replacement in service", || {
        c.get("/").status == 200 && c.worker_pid("/") != pid
    });
    drop(clients);
    // The dead worker's socket, its rings' four eventfds and their memory
    // are closed with its channel, as after any other exit.
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds(c.pid()) > before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = open_fds(c.pid());
    assert!(
        after <= before,
        "{after} fds open, {before} before: the dead worker's channel is left"
    );
    c.signal(libc::SIGTERM);
    c.wait_exit(Duration::from_secs(10)).expect("corral stops");
}
