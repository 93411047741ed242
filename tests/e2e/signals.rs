//! Signals sent to corral: TERM drains gracefully, INT and QUIT stop fast,
//! TTIN adds a worker and TTOU drains the highest slot, and no Python
//! worker outlives corral, even when corral is SIGKILLed.

use crate::common::*;
use std::time::{Duration, Instant};

const SLEEP_APP: &str = r#"
import time

def app(environ, start_response):
    secs = float(environ["QUERY_STRING"] or 0)
    if secs:
        open("started-%s" % environ["QUERY_STRING"], "w").close()
    time.sleep(secs)
    body = b"slept %.1f" % secs
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"#;

fn start(args: &[&str]) -> (AppDir, Corral, Vec<u32>) {
    let app = AppDir::new(&[("sleepy.py", SLEEP_APP)]);
    let mut all = vec!["sleepy:app", "-w", "2"];
    all.extend_from_slice(args);
    let c = Corral::start(app.path(), &all, 2);
    let workers = children_of(c.pid());
    assert_eq!(workers.len(), 2);
    (app, c, workers)
}

/// Starts a request in the background and waits until the app has it
/// (it leaves `started-SECS` in the app folder).
fn in_flight(
    app: &AppDir,
    c: &Corral,
    secs: f64,
) -> std::thread::JoinHandle<Result<Response, String>> {
    let addr = c.addr.clone();
    let query = format!("{secs:.1}");
    let started = app.path().join(format!("started-{query}"));
    let h = std::thread::spawn(move || {
        let mut s = connect(&addr);
        send_request(&mut s, "GET", &format!("/?{query}"), &[], b"");
        let mut r = std::io::BufReader::new(s);
        read_response(&mut r, false).map_err(|e| e.to_string())
    });
    c.wait_until("the app to have the request", || started.exists());
    h
}

#[test]
fn term_finishes_requests_in_flight_then_exits_0_with_no_worker_left() {
    let (app, mut c, workers) = start(&[]);
    let req = in_flight(&app, &c, 2.0);
    let t = Instant::now();
    c.signal(libc::SIGTERM);
    // New connections are refused while the old request finishes.
    c.wait_until("corral to stop accepting after TERM", || {
        std::net::TcpStream::connect(&c.addr).is_err()
    });
    let r = req
        .join()
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!((r.status, r.text().as_str()), (200, "slept 2.0"));
    let st = c.wait_exit(Duration::from_secs(15)).expect("corral exits");
    assert_eq!(st.code(), Some(0), "exit code after TERM");
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "did not wait for the request"
    );
    assert!(
        wait_gone(&workers, Duration::from_secs(5)),
        "orphan workers: {workers:?}"
    );
}

/// TERM with a request that outlasts `graceful_timeout`: corral exits
/// about `graceful_timeout` later, as gunicorn does, so that a stop timeout
/// sized as the README says (`shutdown_delay` + `graceful_timeout` + a few
/// seconds) is enough. It once took twice `graceful_timeout`: the front's
/// drain, then the workers' own graceful stop.
/// A keep-alive connection that carries a request in a graceful stop's
/// first moments gets its answer with `Connection: close`, and then its
/// end: a proxy that pools connections (nginx's upstream keepalive) drops
/// it after that answer. Before, the answer said nothing, and the proxy
/// kept the connection to send its next request on, as corral closed it
/// idle 300 ms later: nginx retried a GET elsewhere and logged the error,
/// and answered a POST with 502.
#[test]
fn term_closes_keep_alive_connections_after_their_next_answer() {
    use std::io::{BufReader, Read, Write};
    let (_app, mut c, _) = start(&[]);
    let get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut s = BufReader::new(connect(&c.addr));
    s.get_ref()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    s.get_mut().write_all(get).unwrap();
    let before = read_response(&mut s, false).unwrap();
    let closes = |r: &Response| {
        r.headers
            .iter()
            .any(|(k, v)| k == "connection" && v.eq_ignore_ascii_case("close"))
    };
    assert!(before.status == 200 && !closes(&before), "{before:?}");
    c.signal(libc::SIGTERM);
    c.log
        .wait_for("SIGTERM: graceful stop", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no graceful stop; log:\n{}", c.log.text()));
    std::thread::sleep(Duration::from_millis(50));
    s.get_mut().write_all(get).unwrap();
    let during = read_response(&mut s, false).unwrap();
    assert!(during.status == 200 && closes(&during), "{during:?}");
    let mut rest = Vec::new();
    assert_eq!(
        s.read_to_end(&mut rest).map_err(|e| e.kind()),
        Ok(0),
        "the connection ends after the answer"
    );
    assert_eq!(
        c.wait_exit(Duration::from_secs(30))
            .and_then(|st| st.code()),
        Some(0),
        "log:\n{}",
        c.log.text()
    );
}

#[test]
fn term_gives_up_on_requests_after_graceful_timeout() {
    let (app, mut c, workers) = start(&["--graceful-timeout", "3s"]);
    let req = in_flight(&app, &c, 30.0);
    let t = Instant::now();
    c.signal(libc::SIGTERM);
    let st = c.wait_exit(Duration::from_secs(15)).expect("corral exits");
    assert_eq!(st.code(), Some(0));
    assert!(
        t.elapsed() > Duration::from_millis(2500) && t.elapsed() < Duration::from_millis(4500),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        wait_gone(&workers, Duration::from_secs(5)),
        "orphan workers: {workers:?}"
    );
    // The cut request gets a 502 or its connection closed, never a hang.
    if let Ok(r) = req.join().unwrap() {
        assert_eq!(r.status, 502, "{}", r.text());
    }
}

fn fast_stop(sig: i32) {
    let (app, mut c, workers) = start(&[]);
    let _req = in_flight(&app, &c, 30.0);
    let t = Instant::now();
    c.signal(sig);
    let st = c.wait_exit(Duration::from_secs(10)).expect("corral exits");
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "fast stop took {:?}",
        t.elapsed()
    );
    assert_eq!(st.code(), Some(0));
    assert!(
        wait_gone(&workers, Duration::from_secs(5)),
        "orphan workers: {workers:?}"
    );
}

#[test]
fn int_stops_fast_with_no_worker_left() {
    fast_stop(libc::SIGINT);
}

#[test]
fn quit_stops_fast_with_no_worker_left() {
    fast_stop(libc::SIGQUIT);
}

#[test]
fn workers_exit_when_corral_is_killed() {
    let (app, mut c, workers) = start(&[]);
    let _req = in_flight(&app, &c, 30.0);
    c.signal(libc::SIGKILL);
    c.wait_exit(Duration::from_secs(5)).expect("corral died");
    assert!(
        wait_gone(&workers, Duration::from_secs(5)),
        "orphan workers: {workers:?}"
    );
}

#[test]
fn term_to_corral_and_its_workers_at_once_starts_no_replacement() {
    // What systemd does on `systemctl stop` (KillMode=control-group): TERM
    // to every process of the unit. The idle worker drains and exits at
    // once, while the front still finishes the other worker's request.
    let (app, mut c, workers) = start(&[]);
    let req = in_flight(&app, &c, 2.0);
    c.signal(libc::SIGTERM);
    for &w in &workers {
        // SAFETY: kill(2) on a worker of the corral this test started,
        // still alive (found as its child a moment ago).
        unsafe {
            libc::kill(w as i32, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while alive(c.pid()) && Instant::now() < deadline {
        let new: Vec<u32> = children_of(c.pid())
            .into_iter()
            .filter(|p| !workers.contains(p))
            .collect();
        assert!(
            new.is_empty(),
            "a stopping corral started worker(s) {new:?}; log:\n{}",
            c.log.text()
        );
        if c.child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = req
        .join()
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(r.status, 200);
    let st = c.wait_exit(Duration::from_secs(15)).expect("corral exits");
    assert_eq!(st.code(), Some(0));
    assert!(!c.log.text().contains("starting its replacement"));
}

/// Answers "SLOT PID" after holding the request 100 ms.
const SLOT_APP: &str = r#"
import os, time

def app(environ, start_response):
    time.sleep(0.1)
    body = ("%s %d" % (os.environ["CORRAL_SLOT"], os.getpid())).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"#;

/// The "SLOT PID" answers of `n` requests sent at once.
fn answers_at_once(c: &Corral, n: usize) -> std::collections::BTreeSet<String> {
    let round: Vec<_> = (0..n)
        .map(|_| {
            let addr = c.addr.clone();
            std::thread::spawn(move || request(&addr, "GET", "/", &[], b""))
        })
        .collect();
    round
        .into_iter()
        .map(|h| {
            let r = h.join().unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            r.text()
        })
        .collect()
}

#[test]
fn ttin_adds_a_worker_and_ttou_drains_the_highest_slot_first() {
    let app = AppDir::new(&[("app.py", SLOT_APP)]);
    let c = Corral::start(app.path(), &["app:app", "-w", "2"], 2);
    c.signal(libc::SIGTTIN);
    c.wait_in_service(3);
    // From outside: three requests at once are answered by three workers,
    // slots 0, 1 and 2.
    let three = answers_at_once(&c, 3);
    let slots: Vec<&str> = three.iter().map(|a| a.split(' ').next().unwrap()).collect();
    assert_eq!(slots, ["0", "1", "2"], "{three:?}");
    let pid_of = |slot: &str| -> u32 {
        three
            .iter()
            .find_map(|a| a.strip_prefix(&format!("{slot} ")))
            .unwrap()
            .parse()
            .unwrap()
    };
    let (low, high) = ([pid_of("0"), pid_of("1")], pid_of("2"));

    c.signal(libc::SIGTTOU);
    assert!(
        wait_gone(&[high], Duration::from_secs(15)),
        "slot 2 (pid {high}) still runs after TTOU; log:\n{}",
        c.log.text()
    );
    assert!(low.iter().all(|p| alive(*p)), "slots 0 and 1 keep running");
    let two = answers_at_once(&c, 2);
    let pids: Vec<u32> = two
        .iter()
        .map(|a| a.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    let mut expect = low.to_vec();
    expect.sort();
    let mut pids = pids;
    pids.sort();
    assert_eq!(pids, expect, "the two lowest slots serve: {two:?}");
}
