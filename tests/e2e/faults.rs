//! Faults: dead and hung workers, and bad requests that corral answers in
//! Rust without touching a worker.

use crate::common::*;
use std::io::{BufReader, Write};
use std::time::{Duration, Instant};

const FAULT_APP: &str = r#"
import os, signal, time
SEEN = 0

def app(environ, start_response):
    global SEEN
    path = environ["PATH_INFO"]
    if path == "/count":
        body = str(SEEN).encode()
    else:
        SEEN += 1
        if path == "/die":
            time.sleep(0.2)
            os.kill(os.getpid(), signal.SIGKILL)
        elif path == "/hang":
            time.sleep(60)
        elif path == "/slow":
            time.sleep(float(environ["QUERY_STRING"]))
        elif path == "/read":
            environ["wsgi.input"].read()
        body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"#;

fn start(args: &[&str]) -> (AppDir, Corral) {
    let app = AppDir::new(&[("faults.py", FAULT_APP)]);
    let mut all = vec!["faults:app", "-w", "1"];
    all.extend_from_slice(args);
    let c = Corral::start(app.path(), &all, 1);
    (app, c)
}

#[test]
fn a_request_on_a_worker_that_dies_gets_502_at_once_and_the_worker_is_replaced() {
    let (_app, c) = start(&[]);
    let before = c.worker_pid("/");
    // Past its first second in service: a plain crash, replaced at once
    // (one that dies younger backs its slot off, as tested below).
    std::thread::sleep(Duration::from_millis(1500));
    let t = Instant::now();
    let r = c.get("/die");
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "502 took {:?}",
        t.elapsed()
    );
    // The supervisor stays up and a new worker serves.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = c.get("/");
        if r.status == 200 {
            assert_ne!(r.text().parse::<u32>().unwrap(), before);
            break;
        }
        assert_eq!(r.status, 503, "while replacing: {}", r.text());
        assert!(Instant::now() < deadline, "never replaced");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(alive(c.pid()));
}

#[test]
fn a_request_past_the_timeout_gets_504_its_stack_is_dumped_and_its_worker_replaced() {
    let (_app, c) = start(&["--timeout", "1s"]);
    let before = c.worker_pid("/");
    let t = Instant::now();
    let r = c.get("/hang");
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "504 took {:?}",
        t.elapsed()
    );
    // faulthandler's dump shows where the app hung.
    assert!(
        c.log.wait_for("in app", Duration::from_secs(5)).is_some(),
        "no Python stack in the log:\n{}",
        c.log.text()
    );
    assert!(c.log.has("exceeded the timeout"));
    assert!(
        wait_gone(&[before], Duration::from_secs(5)),
        "hung worker still alive"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.get("/").status != 200 {
        assert!(Instant::now() < deadline, "never replaced");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_ne!(c.worker_pid("/"), before);
}

/// With threads, a request past the timeout gets 504 and its thread runs
/// on, while the worker's other threads serve (gunicorn's gthread worker
/// is not killed for one slow request either); only once every thread is
/// held by such a request is the worker replaced.
#[test]
fn a_request_past_the_timeout_on_a_threaded_worker_spares_the_others_until_every_thread_is_held() {
    let (_app, c) = start(&["--threads", "3", "--timeout", "2s"]);
    let before = c.worker_pid("/");
    let addr = c.addr.clone();
    let sent = Instant::now();
    let slow = std::thread::spawn(move || request(&addr, "GET", "/slow?3", &[], b""));
    std::thread::sleep(Duration::from_millis(1200));
    // Sent before the slow one times out, answered after.
    let t = Instant::now();
    let beside = c.get("/slow?1.5");
    assert_eq!(beside.status, 200, "{}", beside.text());
    assert!(t.elapsed() > Duration::from_millis(1400));
    assert_eq!(slow.join().unwrap().status, 504);
    assert!(c.log.has("its thread runs on"), "{}", c.log.text());
    assert_eq!(c.worker_pid("/"), before, "the worker was not replaced");
    // Once the slow request's thread is free, every thread held past the
    // timeout: the worker is replaced.
    std::thread::sleep(Duration::from_millis(3300).saturating_sub(sent.elapsed()));
    let hung: Vec<_> = (0..3)
        .map(|_| {
            let addr = c.addr.clone();
            std::thread::spawn(move || request(&addr, "GET", "/hang", &[], b"").status)
        })
        .collect();
    for h in hung {
        assert_eq!(h.join().unwrap(), 504);
    }
    assert!(
        wait_gone(&[before], Duration::from_secs(10)),
        "a worker whose every thread hangs still runs; log:\n{}",
        c.log.text()
    );
    c.wait_until("a new worker", || c.get("/").status == 200);
}

fn raw(c: &Corral, bytes: &[u8]) -> Response {
    let mut s = c.connect();
    s.write_all(bytes).unwrap();
    let mut r = BufReader::new(s);
    read_response(&mut r, false).expect("a response")
}

#[test]
fn malformed_and_oversize_requests_are_refused_by_corral_without_a_worker() {
    let (_app, c) = start(&["--max-header-bytes", "16KiB", "--max-body-bytes", "1KiB"]);
    assert_eq!(c.get("/count").text(), "0");

    let r = raw(&c, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n");
    assert_eq!(r.status, 400);
    let r = raw(&c, b"GARBAGE\r\n\r\n");
    assert_eq!(r.status, 400);
    let r = raw(&c, b"GET /a%00b HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 400);

    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(32 * 1024)
    );
    let r = raw(&c, big.as_bytes());
    assert_eq!(r.status, 431);

    // Declared too large: refused before the body is read.
    let r = raw(
        &c,
        b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n",
    );
    assert_eq!(r.status, 413);
    // Chunked, found too large while reading it.
    let mut chunked =
        b"POST /read HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        chunked.extend_from_slice(b"200\r\n");
        chunked.extend_from_slice(&[b'x'; 0x200]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let r = raw(&c, &chunked);
    assert_eq!(r.status, 413);
    // The limit is named in the log, once (gunicorn has none).
    c.log
        .wait_for(
            "got 413; raise it (--max-body-bytes)",
            Duration::from_secs(5),
        )
        .unwrap_or_else(|| panic!("no hint; log:\n{}", c.log.text()));
    assert_eq!(c.log.count("got 413; raise it"), 1, "{}", c.log.text());

    assert_eq!(
        c.get("/count").text(),
        "0",
        "no bad request reached the app"
    );
    // A request within the limits does.
    let r = request(&c.addr, "POST", "/read", &[], &[b'y'; 1000]);
    assert_eq!(r.status, 200);
    assert_eq!(c.get("/count").text(), "1");

    // The limit is exact: a body of max_body_bytes is served, one byte
    // more gets 413, declared or chunked.
    let declared = |n: usize| request(&c.addr, "POST", "/read", &[], &vec![b'y'; n]).status;
    let chunked = |n: usize| {
        let mut req = format!(
            "POST /read HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{n:x}\r\n"
        )
        .into_bytes();
        req.extend_from_slice(&vec![b'z'; n]);
        req.extend_from_slice(b"\r\n0\r\n\r\n");
        raw(&c, &req).status
    };
    assert_eq!(declared(1024), 200, "a declared body of exactly 1 KiB");
    assert_eq!(declared(1025), 413, "a declared body of 1 KiB and a byte");
    assert_eq!(chunked(1024), 200, "a chunked body of exactly 1 KiB");
    assert_eq!(chunked(1025), 413, "a chunked body of 1 KiB and a byte");
    assert_eq!(c.get("/count").text(), "3");
}

#[test]
fn with_no_worker_in_service_the_app_port_answers_503_with_retry_after() {
    let app = AppDir::new(&[("broken.py", "raise RuntimeError('no database')\n")]);
    let mut c = Corral::spawn(app.path(), &["broken:app", "-w", "1"], &[]);
    c.wait_listening();
    assert!(
        c.log
            .wait_for("no database", Duration::from_secs(20))
            .is_some(),
        "the boot error is logged"
    );
    let t = Instant::now();
    let r = c.get("/");
    assert_eq!(r.status, 503);
    assert!(r.header("retry-after").is_some());
    assert!(r.text().contains("no worker"), "{}", r.text());
    assert!(t.elapsed() < Duration::from_secs(2));
}

/// corral at `--log-level warning` (its INFO lines, which the harness
/// waits for, are filtered), with a status server; `ready` waits until the
/// app port answers 200.
fn start_quiet(app: &AppDir, args: &[&str], ready: bool) -> Corral {
    let addr = format!("127.0.0.1:{}", crate::common::compare::free_port());
    let status = format!("127.0.0.1:{}", crate::common::compare::free_port());
    let mut all = args.to_vec();
    all.extend_from_slice(&["-b", &addr, "--status-bind", &status]);
    all.extend_from_slice(&["--log-level", "warning"]);
    let mut c = Corral::spawn(app.path(), &all, &[]);
    c.addr = addr;
    c.status_addr = status;
    c.wait_until("the status server", || {
        std::net::TcpStream::connect(&c.status_addr).is_ok()
    });
    if ready {
        c.wait_until("a worker in service", || c.get("/").status == 200);
    }
    c
}

/// The line that says how a worker ended.
fn exit_line(c: &Corral, needle: &str) -> String {
    c.log
        .wait_for(needle, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no line with {needle:?}; log:\n{}", c.log.text()))
}

#[test]
fn a_worker_that_aborts_in_service_is_logged_at_error_with_its_signal_even_at_log_level_warning() {
    const ABORT_APP: &str = r#"
import os

def app(environ, start_response):
    if environ["PATH_INFO"] == "/abort":
        os.abort()
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"#;
    let app = AppDir::new(&[("aborts.py", ABORT_APP)]);
    let c = start_quiet(&app, &["aborts:app", "-w", "1"], true);
    let pid = c.worker_pid("/");
    // In service a good while: not a young death, so it is replaced at once.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(c.get("/abort").status, 502);
    let line = exit_line(&c, "was killed by SIGABRT");
    assert!(line.contains(" ERROR "), "{line}");
    assert!(line.contains(&format!("worker 0 (pid {pid}) ")), "{line}");
    assert!(line.contains("starting its replacement"), "{line}");
    c.wait_until("the replacement in service", || {
        c.get("/").status == 200 && c.worker_pid("/") != pid
    });
    assert_eq!(
        c.log.count(&format!("(pid {pid}) was killed by SIGABRT")),
        1,
        "logged once"
    );
}

/// A worker that dumped core (`[workers.limits] core` lets it) is said
/// to have, and where to look: the log said only which signal.
#[test]
fn a_worker_that_dumps_core_is_said_to_have_dumped_core() {
    const ABORT_APP: &str = "import os\n\ndef app(environ, start_response):\n    os.abort()\n";
    let app = AppDir::new(&[
        ("aborts.py", ABORT_APP),
        (
            "corral.toml",
            "[app]\nmodule = \"aborts:app\"\n[workers]\ncount = 1\n[workers.limits]\ncore = \"1GiB\"\n",
        ),
    ]);
    let c = start_quiet(&app, &["-c", "corral.toml"], false);
    c.wait_until("the worker in service", || {
        c.status_json()["workers"]["in_service"] == 1
    });
    assert_eq!(c.get("/").status, 502);
    let line = exit_line(&c, "was killed by SIGABRT");
    // Where the kernel writes it decides whether it could (a pipe to a
    // crash handler that is not there, a folder it may not write to).
    let pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default();
    if pattern.trim() == "core" || pattern.trim().starts_with("core.") {
        assert!(line.contains("and dumped core"), "{line}");
        assert!(line.contains("core_pattern"), "{line}");
        assert!(line.contains(" ERROR "), "{line}");
    }
    for entry in std::fs::read_dir(app.path()).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with("core") && entry.path().is_file() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[test]
fn a_worker_sigkilled_from_outside_is_logged_at_error_as_perhaps_out_of_memory() {
    let app = AppDir::new(&[("faults.py", FAULT_APP)]);
    let c = start_quiet(&app, &["faults:app", "-w", "1"], true);
    let pid = c.worker_pid("/");
    // SAFETY: killing a worker of the corral this test started, as the
    // kernel's OOM killer would.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let line = exit_line(&c, "perhaps out of memory");
    assert!(line.contains(" ERROR "), "{line}");
    assert!(
        line.contains(&format!(
            "worker 0 (pid {pid}) was killed by SIGKILL, not by corral: perhaps out of memory"
        )),
        "{line}"
    );
    c.wait_until("the replacement in service", || {
        c.get("/").status == 200 && c.worker_pid("/") != pid
    });
}

#[test]
fn a_worker_that_exits_right_after_it_boots_is_a_warning_and_its_restarts_back_off() {
    // Each worker exits on its own 0.3 s after its import began: after it
    // booted (its import takes a few milliseconds), within `young` (1 s).
    const SHORT_LIVED: &str = r#"
import os, threading, time

def leave():
    time.sleep(0.3)
    os._exit(0)

threading.Thread(target=leave, daemon=True).start()

def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
"#;
    let app = AppDir::new(&[("short.py", SHORT_LIVED)]);
    let c = start_quiet(&app, &["short:app", "-w", "1"], false);
    let restarts = || {
        c.status_json()["slots"][0]["restarts"]
            .as_u64()
            .unwrap_or(0)
    };
    c.wait_until("the first death", || restarts() > 0);
    // Without a back-off a worker dies every half second or so (its start
    // and its 0.3 s): ten or more in 5 s. With it (100ms, 200ms, 400ms,
    // 800ms, 1.6s, ...) at most five.
    let before = restarts();
    std::thread::sleep(Duration::from_secs(5));
    let deaths = restarts() - before;
    assert!(
        (1..=5).contains(&deaths),
        "{deaths} restarts in 5 s; log:\n{}",
        c.log.text()
    );
    let first = exit_line(&c, "exited with code 0 on its own");
    assert!(first.contains(" WARN "), "{first}");
    assert!(first.contains("after it entered service"), "{first}");
    assert!(alive(c.pid()));
}
