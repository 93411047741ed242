//! sd_notify, with a real Unix datagram socket as NOTIFY_SOCKET: the exact
//! messages and their order across start, reloads (good and broken), stop,
//! and the watchdog.

use crate::common::*;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

const APP: &str = "# v1\ndef app(environ, start_response):\n    start_response('200 OK', [])\n    return [b'ok']\n";

/// Reads datagrams until one contains `needle`; returns all read so far.
fn until(sock: &UnixDatagram, needle: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            let done = msg.contains(needle);
            seen.push(msg);
            if done {
                return;
            }
        }
    }
    panic!("no {needle:?} from corral; got {seen:?}");
}

/// Every "N/M" count in a STATUS= line.
fn counts(msg: &str) -> Vec<(usize, usize)> {
    let status = msg.lines().find_map(|l| l.strip_prefix("STATUS="));
    status
        .into_iter()
        .flat_map(|s| s.split([' ', ';', ',']))
        .filter_map(|w| w.split_once('/'))
        .filter_map(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .collect()
}

fn listen(dir: &std::path::Path) -> (UnixDatagram, String) {
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    (sock, path.to_str().unwrap().to_string())
}

#[test]
fn ready_reloading_stopping_and_status_in_order() {
    let app = AppDir::new(&[("app.py", APP)]);
    let (sock, path) = listen(app.path());
    let mut c = Corral::spawn(
        app.path(),
        &["app:app", "-w", "2", "--min-ready", "2"],
        &[("NOTIFY_SOCKET", &path)],
    );
    c.wait_listening();
    let mut seen = Vec::new();
    until(&sock, "READY=1", &mut seen);
    let ready = seen.last().unwrap().clone();
    assert!(
        ready.contains("STATUS=2/2 workers in service, generation 1"),
        "{ready}"
    );
    assert!(
        seen[..seen.len() - 1]
            .iter()
            .all(|m| !m.contains("READY=1")),
        "READY=1 only once in service: {seen:?}"
    );
    // Ready as seen from outside: the app answers.
    assert_eq!(c.get("/").text(), "ok");
    let mut before_stop = seen.clone();

    // A good reload: RELOADING=1 with MONOTONIC_USEC, then READY=1.
    std::fs::write(app.path().join("app.py"), format!("{APP}# v2, longer\n")).unwrap();
    c.signal(libc::SIGHUP);
    let mut seen = Vec::new();
    until(&sock, "RELOADING=1", &mut seen);
    let reloading = seen.last().unwrap().clone();
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("MONOTONIC_USEC")
        .parse()
        .unwrap();
    assert!(usec > 0);
    until(&sock, "READY=1", &mut seen);
    assert!(seen.last().unwrap().contains("generation 2"), "{seen:?}");
    // While it starts, the new generation is counted apart from the one
    // that serves, and no count is ever over the workers configured.
    assert!(
        reloading.contains("STATUS=2/2 workers in service, generation 1")
            && reloading.contains("; generation 2 starting: "),
        "{reloading}"
    );
    for (done, of) in seen.iter().flat_map(|m| counts(m)) {
        assert!(done <= of, "{done}/{of} in {seen:?}");
    }
    before_stop.extend(seen);

    // A broken reload: RELOADING=1, then READY=1 again (the old generation
    // still serves).
    std::fs::write(app.path().join("app.py"), "raise ImportError('broken')\n").unwrap();
    c.signal(libc::SIGHUP);
    let mut seen = Vec::new();
    until(&sock, "RELOADING=1", &mut seen);
    until(&sock, "READY=1", &mut seen);
    assert!(seen.last().unwrap().contains("generation 2"), "{seen:?}");
    // `systemctl status` says the reload failed, and why.
    assert!(
        seen.last()
            .unwrap()
            .contains("; reload to generation 3 failed: "),
        "{seen:?}"
    );
    assert!(
        c.log
            .wait_for("reload failed", Duration::from_secs(5))
            .is_some()
    );
    before_stop.extend(seen);
    assert!(
        !before_stop.iter().any(|m| m.contains("STOPPING=1")),
        "STOPPING=1 before any stop: {before_stop:?}"
    );

    c.signal(libc::SIGTERM);
    let mut seen = Vec::new();
    until(&sock, "STOPPING=1", &mut seen);
    assert_eq!(
        c.wait_exit(Duration::from_secs(15)).and_then(|s| s.code()),
        Some(0)
    );
}

#[test]
fn a_broken_deploy_never_reports_ready() {
    let app = AppDir::new(&[("app.py", "raise RuntimeError('no database')\n")]);
    let (sock, path) = listen(app.path());
    let mut c = Corral::spawn(
        app.path(),
        &["app:app", "-w", "1"],
        &[("NOTIFY_SOCKET", &path)],
    );
    c.wait_listening();
    assert!(
        c.log
            .wait_for("no database", Duration::from_secs(20))
            .is_some()
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            assert!(
                !msg.contains("READY=1"),
                "READY=1 with no worker in service: {msg}"
            );
            assert!(msg.contains("STATUS=0/1 workers in service"), "{msg}");
        }
    }
}

/// Counts `WATCHDOG=1` datagrams for `window`.
fn watchdog_pings(sock: &UnixDatagram, window: Duration) -> usize {
    let t = Instant::now();
    let mut beats = 0;
    let mut buf = [0u8; 4096];
    while t.elapsed() < window {
        if let Ok(n) = sock.recv(&mut buf)
            && String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1")
        {
            beats += 1;
        }
    }
    beats
}

#[test]
fn the_watchdog_is_fed_by_the_supervisor_loop_and_abstract_sockets_work() {
    // The revision command runs on the supervisor loop when a generation
    // starts (at most 5 s). With the file `wedge` present it holds the loop
    // for 3 s (and says so with `wedged`): the only way from outside to
    // wedge the loop alone while the HTTP front keeps serving.
    let config = "[app]\nmodule = \"app:app\"\n[server]\nbind = [\"127.0.0.1:0\"]\n[workers]\ncount = 1\n[deploy]\nrevision = [\"sh\", \"-c\", \"if [ -e wedge ]; then touch wedged; sleep 3; fi; echo r1\"]\n";
    let app = AppDir::new(&[("app.py", APP), ("corral.toml", config)]);
    let name = format!("corral-test-{}", std::process::id());
    let sock = {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        UnixDatagram::bind_addr(&addr).unwrap()
    };
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut c = Corral::spawn(
        app.path(),
        &["-c", "corral.toml"],
        &[
            ("NOTIFY_SOCKET", &format!("@{name}")),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    c.wait_listening();
    c.wait_in_service(1);
    // Every 200 ms for 1.5 s: about 7.
    let beats = watchdog_pings(&sock, Duration::from_millis(1500));
    assert!((4..=10).contains(&beats), "{beats} watchdog pings in 1.5 s");

    // Wedge the loop: a reload runs the revision command on it.
    std::fs::write(app.path().join("wedge"), "").unwrap();
    c.signal(libc::SIGHUP);
    c.wait_until("the revision command to hold the loop", || {
        app.path().join("wedged").exists()
    });
    // Drop what was sent before the wedge, then count for 1.5 s of it.
    while sock.recv(&mut [0u8; 4096]).is_ok() {}
    let t = Instant::now();
    let wedged_beats = watchdog_pings(&sock, Duration::from_millis(1500));
    // The front still answers: only the supervisor loop is stuck.
    assert_eq!(c.get("/").text(), "ok");
    assert!(
        t.elapsed() < Duration::from_millis(2800),
        "the count ran past the wedge"
    );
    assert_eq!(
        wedged_beats, 0,
        "WATCHDOG=1 went on while the supervisor loop was stuck"
    );
    // Unstuck, it pings again.
    std::fs::remove_file(app.path().join("wedge")).unwrap();
    let beats = watchdog_pings(&sock, Duration::from_millis(3000));
    assert!(beats >= 4, "{beats} watchdog pings after the wedge");
    c.signal(libc::SIGTERM);
    c.wait_exit(Duration::from_secs(10));
}

#[test]
fn a_usr2_handover_tells_systemd_the_new_main_pid() {
    let app = AppDir::new(&[("app.py", APP)]);
    let (sock, path) = listen(app.path());
    let mut c = Corral::spawn(
        app.path(),
        &["app:app", "-w", "1"],
        &[("NOTIFY_SOCKET", &path)],
    );
    c.wait_listening();
    let mut seen = Vec::new();
    until(&sock, "READY=1", &mut seen);
    c.signal(libc::SIGUSR2);
    let guard = c.reexec_child();
    let new = guard.0;
    let mut seen = Vec::new();
    until(&sock, "MAINPID=", &mut seen);
    assert!(
        seen.last().unwrap().contains(&format!("MAINPID={new}")),
        "{seen:?}"
    );
    assert_eq!(
        c.wait_exit(Duration::from_secs(15)).and_then(|s| s.code()),
        Some(0)
    );
    // Everything the old corral sent, up to its exit, and what the new one
    // sends after it: a short wait, since an absence is what is checked.
    let deadline = Instant::now() + Duration::from_millis(500);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
    }
    assert!(
        !seen.iter().any(|m| m.contains("STOPPING=1")),
        "a handover is not a stop: {seen:?}"
    );
}

/// Slot 0 imports at once; the other slots wait (at import) until the file
/// `release` exists.
const SLOW_BOOT_APP: &str = r#"
import os, time
if os.environ["CORRAL_SLOT"] != "0":
    deadline = time.monotonic() + 60
    mine = "release-" + os.environ["CORRAL_SLOT"]
    while not (os.path.exists("release") or os.path.exists(mine)) and time.monotonic() < deadline:
        time.sleep(0.02)

def app(environ, start_response):
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"#;

#[test]
fn ready_is_sent_at_min_ready_while_other_workers_still_boot() {
    let app = AppDir::new(&[("app.py", SLOW_BOOT_APP)]);
    let (sock, path) = listen(app.path());
    let mut c = Corral::spawn(
        app.path(),
        &["app:app", "-w", "3", "--min-ready", "2"],
        &[("NOTIFY_SOCKET", &path)],
    );
    c.wait_listening();
    // Slot 0 serves; with one of the two required in service, no READY=1.
    c.wait_until("slot 0 to answer", || c.get("/").status == 200);
    let mut seen = Vec::new();
    let quiet = Instant::now() + Duration::from_secs(1);
    let mut buf = [0u8; 4096];
    while Instant::now() < quiet {
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
    }
    assert!(
        seen.iter().all(|m| !m.contains("READY=1")),
        "READY=1 with one of the two required in service: {seen:?}"
    );
    std::fs::write(app.path().join("release-1"), "").unwrap();
    until(&sock, "READY=1", &mut seen);
    let ready = seen.last().unwrap().clone();
    assert!(
        ready.contains("STATUS=2/3 workers in service"),
        "READY=1 with two of three in service: {ready}"
    );
    // From the outside: the service answers, from two workers, while the
    // third is still importing (it waits for `release`).
    let booting = children_of(c.pid());
    assert_eq!(booting.len(), 3, "{booting:?}");
    let pids: std::collections::HashSet<String> = (0..12).map(|_| c.get("/").text()).collect();
    assert!(pids.len() <= 2, "two workers answer: {pids:?}");
    assert!(!app.path().join("release").exists());

    std::fs::write(app.path().join("release"), "").unwrap();
    c.wait_in_service(3);
    c.signal(libc::SIGTERM);
    c.wait_exit(Duration::from_secs(15));
}
