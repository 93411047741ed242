//! Workers are separate Python processes, each importing the app itself.

mod common;
use common::*;
use std::collections::HashSet;
use std::time::Duration;

const PID_APP: &str = r#"
import os
IMPORTED_IN = os.getpid()

def app(environ, start_response):
    body = ("%d %d" % (IMPORTED_IN, os.getpid())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"#;

#[test]
fn each_worker_imports_the_app_in_its_own_process() {
    let app = AppDir::new(&[("pidapp.py", PID_APP)]);
    let c = Corral::start(app.path(), &["pidapp:app", "-w", "3"], 3);
    let mut pids = HashSet::new();
    // Concurrent connections spread over the least-loaded workers.
    for _ in 0..10 {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let addr = c.addr.clone();
                std::thread::spawn(move || request(&addr, "GET", "/", &[], b"").text())
            })
            .collect();
        for h in handles {
            let text = h.join().unwrap();
            let (imported, serving) = text.split_once(' ').unwrap();
            assert_eq!(
                imported, serving,
                "the app was imported in the process that serves it"
            );
            pids.insert(serving.parse::<u32>().unwrap());
        }
        if pids.len() == 3 {
            break;
        }
    }
    assert_eq!(pids.len(), 3, "3 workers report 3 distinct pids: {pids:?}");
    assert!(!pids.contains(&c.pid()), "no worker runs in the supervisor");
    let children: HashSet<u32> = children_of(c.pid()).into_iter().collect();
    assert_eq!(children, pids, "the workers are corral's child processes");
}

#[test]
fn a_dead_worker_is_replaced_and_the_supervisor_stays_up() {
    let app = AppDir::new(&[("pidapp.py", PID_APP)]);
    let c = Corral::start(app.path(), &["pidapp:app", "-w", "1"], 1);
    let first: u32 = c
        .get("/")
        .text()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    // SAFETY: killing a worker process of the corral we started.
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = c.get("/");
        if r.status == 200 {
            let pid: u32 = r.text().split(' ').nth(1).unwrap().parse().unwrap();
            if pid != first {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no replacement worker"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        c.log
            .wait_for("was killed by SIGKILL", Duration::from_secs(1))
            .is_some()
    );
}
