//! Logs: workers' stdout and stderr line by line, tagged with slot and pid;
//! JSON with --log-format json; no second timestamp under journald.

use crate::common::*;
use std::time::Duration;

const APP: &str = r#"
import sys, os
print("imported in", os.getpid())
sys.stderr.write("half a ")
sys.stderr.flush()
sys.stderr.write("line, then the rest\n")

def app(environ, start_response):
    print("request for", environ["PATH_INFO"])
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
"#;

#[test]
fn worker_output_is_logged_line_by_line_with_slot_and_pid() {
    let app = AppDir::new(&[("app.py", APP)]);
    let c = Corral::start(app.path(), &["app:app", "-w", "1"], 1);
    let pid = children_of(c.pid())[0];
    let line = c
        .log
        .wait_for("imported in", Duration::from_secs(10))
        .expect("stdout line");
    assert!(
        line.contains(&format!("worker 0 (pid {pid}) stdout: imported in {pid}")),
        "{line}"
    );
    let line = c.log.wait_for("half a", Duration::from_secs(10)).unwrap();
    assert!(
        line.contains(&format!(
            "worker 0 (pid {pid}) stderr: half a line, then the rest"
        )),
        "a line written in two pieces is logged whole: {line}"
    );
    assert_eq!(c.get("/hello").status, 200);
    assert!(
        c.log
            .wait_for("stdout: request for /hello", Duration::from_secs(10))
            .is_some()
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let app = AppDir::new(&[("app.py", APP)]);
    let mut c = Corral::spawn(
        app.path(),
        &["app:app", "-w", "1", "--log-format", "json"],
        &[],
    );
    assert!(
        c.log
            .wait_for("all 1 workers in service", Duration::from_secs(20))
            .is_some()
    );
    assert!(
        c.log
            .wait_for("imported in", Duration::from_secs(10))
            .is_some()
    );
    for line in c.log.text().lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
        assert!(v["fields"]["message"].is_string(), "{line}");
    }
    c.signal(libc::SIGTERM);
    c.wait_exit(Duration::from_secs(10));
}

#[test]
fn under_journald_lines_carry_no_timestamp_of_their_own() {
    let app = AppDir::new(&[("app.py", APP)]);
    let mut c = Corral::spawn(
        app.path(),
        &["app:app", "-w", "1"],
        &[("JOURNAL_STREAM", "8:12345")],
    );
    let line = c
        .log
        .wait_for("all 1 workers in service", Duration::from_secs(20))
        .unwrap();
    assert!(
        line.starts_with(" INFO") || line.starts_with("INFO"),
        "{line}"
    );
    assert!(
        !line.contains("2026-") && !line.contains('T'),
        "no timestamp: {line}"
    );
    c.signal(libc::SIGTERM);
    c.wait_exit(Duration::from_secs(10));
}

#[test]
fn the_access_log_is_off_by_default_and_writes_combined_lines_when_asked() {
    let app = AppDir::new(&[("app.py", APP)]);
    let c = Corral::start(app.path(), &["app:app", "-w", "1"], 1);
    c.get("/quiet");
    // An absence is checked: a short wait in which the line would appear
    // (with --access-log it is written as the response ends, below).
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !c.log.text().contains("\"GET /quiet"),
        "no access log by default"
    );
    drop(c);

    let c = Corral::start(
        app.path(),
        &["app:app", "-w", "1", "--access-log", "combined"],
        1,
    );
    let r = request(
        &c.addr,
        "GET",
        "/x?y=1",
        &[("User-Agent", "tester/1.0"), ("Referer", "http://ref/")],
        b"",
    );
    assert_eq!(r.status, 200);
    let line = c
        .log
        .wait_for("\"GET /x?y=1 HTTP/1.1\"", Duration::from_secs(5))
        .expect("an access line");
    assert!(line.contains("127.0.0.1 - - ["), "{line}");
    assert!(
        line.contains("\"GET /x?y=1 HTTP/1.1\" 200 2 \"http://ref/\" \"tester/1.0\""),
        "{line}"
    );
    // Requests corral answers itself are logged too.
    let raw = request(&c.addr, "GET", "/a%00b", &[], b"");
    assert_eq!(raw.status, 400);
    assert!(
        c.log
            .wait_for("\"GET /a%00b HTTP/1.1\" 400", Duration::from_secs(5))
            .is_some()
    );
}
