//! Workers are recycled (max_requests with jitter, max_memory,
//! max_lifetime) with their
//! replacement in service first, so no request is dropped and capacity never
//! falls; a wedged interpreter is found by its missing heartbeats.

use crate::common::*;
use std::time::{Duration, Instant};

const APP: &str = r#"
import os, time

BALLAST = []

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/grow":
        BALLAST.append(bytearray(64 << 20))
    elif path == "/wedge":
        # A C call that keeps the GIL (PyDLL does not release it): no other
        # thread of this interpreter can run.
        import ctypes
        ctypes.PyDLL(None).sleep(60)
    elif path == "/slow":
        time.sleep(0.05)
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"#;

#[test]
fn max_requests_recycles_under_load_without_a_failed_request_or_lost_capacity() {
    let app = AppDir::new(&[("app.py", APP)]);
    let c = Corral::start(
        app.path(),
        &[
            "app:app",
            "-w",
            "2",
            "--max-requests",
            "40",
            "--max-requests-jitter",
            "10",
            "--status-bind",
            "127.0.0.1:0",
        ],
        2,
    );
    // Rounds of 2 requests at once, each held 50 ms by the app: with both
    // workers in service every round is answered by 2 distinct pids. A
    // worker stopped before its replacement is in service shows as a round
    // answered by one pid (or a failed request).
    let load = CapacityLoad::start(&c.addr, "/slow", 2);
    // The load runs for 6 s (the time it takes to recycle a few workers).
    std::thread::sleep(Duration::from_secs(6));
    let seen = load.finish();
    eprintln!(
        "{} rounds, {} failed, {} worker processes served, fewest pids in a round {}",
        seen.rounds,
        seen.failed.len(),
        seen.pids.len(),
        seen.fewest_pids
    );
    assert_eq!(
        seen.failed,
        Vec::<String>::new(),
        "no request fails while workers recycle"
    );
    assert!(seen.rounds > 50, "only {} rounds", seen.rounds);
    assert!(
        seen.pids.len() >= 4,
        "workers were recycled: {} pids",
        seen.pids.len()
    );
    assert_eq!(
        seen.fewest_pids,
        2,
        "a round of 2 requests found fewer than 2 workers; log:\n{}",
        c.log.text()
    );
    assert!(c.log.has("(its limit: "), "the log says why");
    // Counted by cause, apart from crashes' restarts.
    let recycles = |cause: &str| {
        c.metric(&format!(
            "corral_worker_recycles_total{{cause=\"{cause}\"}}"
        ))
    };
    assert!(
        recycles("max_requests") >= Some(2.0),
        "{:?}",
        recycles("max_requests")
    );
    assert_eq!(recycles("max_memory"), Some(0.0));
    assert_eq!(c.metric("corral_worker_restarts_total"), Some(0.0));
    // Once the load stops, any recycling in progress settles on 2 workers.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let live: Vec<u32> = children_of(c.pid())
            .into_iter()
            .filter(|p| alive(*p))
            .collect();
        if live.len() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "recycled workers linger: {live:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn max_requests_recycles_each_worker_close_to_its_limit_under_sequential_requests() {
    let app = AppDir::new(&[("app.py", APP)]);
    let c = Corral::start(
        app.path(),
        &["app:app", "-w", "2", "--max-requests", "10"],
        2,
    );
    // One request at a time, 10 ms apart (a client in a shell loop): a
    // worker is marked at its 10th answer, and the other takes the next
    // ones while its replacement boots. Polled twice a second instead,
    // the limit went unseen for up to 500 ms: 50 requests.
    let mut answered = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..100 {
        let r = c.get("/");
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        *answered.entry(r.text()).or_default() += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "requests per worker pid: {:?}",
        answered.values().collect::<Vec<_>>()
    );
    assert!(
        answered.values().all(|n| *n <= 20),
        "a worker served far past its limit of 10: {answered:?}; log:\n{}",
        c.log.text()
    );
}

#[test]
fn max_memory_recycles_a_worker_over_the_limit() {
    let app = AppDir::new(&[("app.py", APP)]);
    let c = Corral::start(
        app.path(),
        &[
            "app:app",
            "-w",
            "1",
            "--max-memory",
            "200MiB",
            "--status-bind",
            "127.0.0.1:0",
        ],
        1,
    );
    let first = c.get("/").text();
    for _ in 0..4 {
        assert_eq!(c.get("/grow").status, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = c.get("/");
        assert_eq!(r.status, 200, "never a failed request: {}", r.text());
        if r.text() != first {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not recycled; log:\n{}",
            c.log.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        c.log.has("MiB of memory (max_memory 200 MiB)"),
        "{}",
        c.log.text()
    );
    assert_eq!(
        c.metric("corral_worker_recycles_total{cause=\"max_memory\"}"),
        Some(1.0)
    );
    assert_eq!(
        c.status_json()["workers"]["recycles"],
        serde_json::json!({"max_requests": 0, "max_memory": 1, "max_lifetime": 0})
    );
}

#[test]
fn max_lifetime_recycles_workers_by_age_under_load_without_a_failed_request() {
    let app = AppDir::new(&[("app.py", APP)]);
    // granian's spelling, in seconds.
    let c = Corral::start(
        app.path(),
        &[
            "app:app",
            "-w",
            "2",
            "--workers-lifetime",
            "1",
            "--status-bind",
            "127.0.0.1:0",
        ],
        2,
    );
    let load = CapacityLoad::start(&c.addr, "/slow", 2);
    std::thread::sleep(Duration::from_secs(5));
    let seen = load.finish();
    assert_eq!(seen.failed, Vec::<String>::new(), "no request fails");
    // Each worker lives 1 to 1.1 s (and a replacement takes a moment to
    // boot): two workers over 5 s are at least 3 more processes.
    assert!(
        seen.pids.len() >= 5,
        "workers were recycled by age: {} pids; log:\n{}",
        seen.pids.len(),
        c.log.text()
    );
    assert_eq!(seen.fewest_pids, 2, "capacity fell; log:\n{}", c.log.text());
    assert!(
        c.log.has("(max_lifetime 1s, plus up to a tenth)"),
        "the log says why: {}",
        c.log.text()
    );
    let lifetime = c.metric("corral_worker_recycles_total{cause=\"max_lifetime\"}");
    assert!(lifetime >= Some(3.0), "{lifetime:?}");
}

#[test]
fn a_wedged_interpreter_is_found_by_its_heartbeats_dumped_and_replaced() {
    let app = AppDir::new(&[
        ("app.py", APP),
        (
            "corral.toml",
            "[app]\nmodule = \"app:app\"\n[workers]\ncount = 1\nheartbeat_timeout = \"2s\"\ntimeout = \"60s\"\n[server]\nbind = [\"127.0.0.1:0\"]\n",
        ),
    ]);
    let c = Corral::start(app.path(), &["-c", "corral.toml"], 1);
    let first = c.get("/").text();
    let addr = c.addr.clone();
    let wedged = std::thread::spawn(move || {
        let t = Instant::now();
        let status = request(&addr, "GET", "/wedge", &[], b"").status;
        (status, t.elapsed())
    });
    assert!(
        c.log
            .wait_for("sent no heartbeat for 2s", Duration::from_secs(10))
            .is_some(),
        "{}",
        c.log.text()
    );
    // faulthandler dumps the stacks even with the GIL held.
    assert!(
        c.log.wait_for("in app", Duration::from_secs(5)).is_some(),
        "{}",
        c.log.text()
    );
    let (status, took) = wedged.join().unwrap();
    assert_eq!(status, 502, "its request fails");
    // At once: heartbeat_timeout (2 s; the last beat came at most half a
    // second before the app wedged) and the dump, far from the 60 s the
    // app would hold it or the 60 s timeout, and well before twice the
    // heartbeat_timeout.
    assert!(
        took < Duration::from_secs(4),
        "the wedged request took {took:?} to fail"
    );
    assert!(
        took > Duration::from_millis(1500),
        "the wedged request failed after {took:?}, before heartbeat_timeout"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = c.get("/");
        if r.status == 200 && r.text() != first {
            break;
        }
        assert!(Instant::now() < deadline, "not replaced");
        std::thread::sleep(Duration::from_millis(50));
    }
}
