//! A worker's subprocesses (its process group) go with it: once the worker
//! has exited, after its own grace period, whatever the app left running in
//! its group is killed, on a graceful stop as when the worker dies.

use crate::common::*;
use std::time::Duration;

/// `/keep` starts a long subprocess in the worker's process group and
/// answers "worker-pid subprocess-pid".
const APP: &str = r#"
import os, subprocess

def app(environ, start_response):
    body = b"hello"
    if environ["PATH_INFO"] == "/keep":
        p = subprocess.Popen(["sleep", "1000"])
        body = f"{os.getpid()} {p.pid}".encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"#;

/// Starts a subprocess through the app; (worker pid, subprocess pid) and a
/// guard that kills the subprocess when the test ends, whatever happened.
fn keep(c: &Corral) -> (u32, u32, KillOnDrop) {
    let r = c.get("/keep");
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    let mut pids = text.split_whitespace().map(|p| p.parse::<u32>().unwrap());
    let (worker, sub) = (pids.next().unwrap(), pids.next().unwrap());
    assert!(alive(sub), "the app's subprocess runs");
    (worker, sub, KillOnDrop(sub))
}

#[test]
fn a_graceful_stop_ends_the_apps_subprocesses_too() {
    let app = AppDir::new(&[("app.py", APP)]);
    let mut c = Corral::start(app.path(), &["app:app", "-w", "1"], 1);
    let (_worker, sub, _guard) = keep(&c);
    c.signal(libc::SIGTERM);
    let st = c.wait_exit(Duration::from_secs(20)).expect("corral stops");
    assert_eq!(st.code(), Some(0), "log:\n{}", c.log.text());
    assert!(
        wait_gone(&[sub], Duration::from_secs(5)),
        "the subprocess the app started outlived corral"
    );
}

#[test]
fn a_killed_workers_subprocesses_are_killed_with_it() {
    let app = AppDir::new(&[("app.py", APP)]);
    let c = Corral::start(app.path(), &["app:app", "-w", "1"], 1);
    let (worker, sub, _guard) = keep(&c);
    // SAFETY: kill(2) on the worker corral started for this test.
    unsafe {
        libc::kill(worker as i32, libc::SIGKILL);
    }
    assert!(
        wait_gone(&[sub], Duration::from_secs(5)),
        "the subprocess of a killed worker lives on"
    );
    // The slot's replacement serves.
    c.wait_until("a replacement in service", || c.get("/").status == 200);
    assert!(alive(c.pid()));
}

#[test]
fn a_subprocess_lives_as_long_as_its_worker() {
    let app = AppDir::new(&[("app.py", APP)]);
    let c = Corral::start(app.path(), &["app:app", "-w", "2"], 2);
    let (_worker, sub, _guard) = keep(&c);
    // Other requests, other workers' exits: the worker that started it
    // still lives, and so does the subprocess.
    for _ in 0..5 {
        assert_eq!(c.get("/").status, 200);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(sub), "a live worker's subprocess was killed");
}
