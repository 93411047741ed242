//! sd_notify, with a real Unix datagram socket as NOTIFY_SOCKET: the exact
//! messages and their order across start, reloads (good and broken), stop,
//! and the watchdog.

mod common;
use common::*;
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

    // A broken reload: RELOADING=1, then READY=1 again (the old generation
    // still serves).
    std::fs::write(app.path().join("app.py"), "raise ImportError('broken')\n").unwrap();
    c.signal(libc::SIGHUP);
    let mut seen = Vec::new();
    until(&sock, "RELOADING=1", &mut seen);
    until(&sock, "READY=1", &mut seen);
    assert!(seen.last().unwrap().contains("generation 2"), "{seen:?}");
    assert!(
        c.log
            .wait_for("reload failed", Duration::from_secs(5))
            .is_some()
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

#[test]
fn the_watchdog_is_fed_at_half_its_interval_and_abstract_sockets_work() {
    let app = AppDir::new(&[("app.py", APP)]);
    let name = format!("corral-test-{}", std::process::id());
    let sock = {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        UnixDatagram::bind_addr(&addr).unwrap()
    };
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut c = Corral::spawn(
        app.path(),
        &["app:app", "-w", "1"],
        &[
            ("NOTIFY_SOCKET", &format!("@{name}")),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    c.wait_listening();
    let t = Instant::now();
    let mut beats = 0;
    let mut buf = [0u8; 4096];
    while t.elapsed() < Duration::from_millis(1500) {
        if let Ok(n) = sock.recv(&mut buf)
            && String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1")
        {
            beats += 1;
        }
    }
    // Every 200 ms for 1.5 s: about 7; a stuck loop would send none.
    assert!((4..=10).contains(&beats), "{beats} watchdog pings in 1.5 s");
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
    assert!(
        !seen.iter().any(|m| m.contains("STOPPING=1")),
        "a handover is not a stop: {seen:?}"
    );
    assert_eq!(
        c.wait_exit(Duration::from_secs(15)).and_then(|s| s.code()),
        Some(0)
    );
}
