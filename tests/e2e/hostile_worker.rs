//! A worker is untrusted: a buggy or compromised app may break the worker
//! protocol, leave subprocesses behind, ignore signals or poke at corral's
//! files. It hurts only its own requests; its slot always comes back.

use crate::common::*;
use std::time::{Duration, Instant};

const APP: &str = r#"
import json, os, signal, subprocess, sys, time

def fds(pid="self"):
    out = {}
    for fd in os.listdir("/proc/%s/fd" % pid):
        try:
            out[fd] = os.readlink("/proc/%s/fd/%s" % (pid, fd))
        except OSError:
            pass
    return out

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/break":
        # A frame header announcing a 4 GiB payload, written straight into
        # corral's channel: a protocol error.
        os.write(3, b"\xff\xff\xff\xff\x0d\x00\x00\x00\x00")
        time.sleep(60)
    elif path == "/orphan":
        # A shell that leaves a child behind, then the worker dies.
        os.system("sleep 30 &")
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGKILL)
    elif path == "/fds":
        child = subprocess.run(
            [sys.executable, "-c", "import json, os\n"
             "print(json.dumps({fd: os.readlink('/proc/self/fd/' + fd) "
             "for fd in os.listdir('/proc/self/fd') if os.path.exists('/proc/self/fd/' + fd)}))"],
            close_fds=False, capture_output=True, check=True)
        body = json.dumps({"worker": fds(), "child": json.loads(child.stdout)}).encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    elif path == "/rundir":
        folder = os.path.dirname(os.path.abspath(sys.argv[0]))
        package = os.path.join(folder, "corral_worker")
        private = os.path.dirname(folder)
        body = json.dumps({"mode": os.stat(private).st_mode & 0o7777,
                           "holds": sorted(os.listdir(private)),
                           "folder": os.path.basename(folder),
                           "folder_mode": os.stat(folder).st_mode & 0o7777,
                           "files": sorted(os.listdir(folder)),
                           "package_mode": os.stat(package).st_mode & 0o7777,
                           "package": {name: os.stat(os.path.join(package, name)).st_mode & 0o7777
                                       for name in os.listdir(package)}}).encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    elif path == "/hang":
        time.sleep(60)
    elif path == "/session":
        def tty(pid):
            with open("/proc/%s/stat" % pid) as f:
                return int(f.read().rsplit(")", 1)[1].split()[4])
        try:
            os.close(os.open("/dev/tty", os.O_RDWR))
            opened = True
        except OSError:
            opened = False
        body = json.dumps({"pid": os.getpid(), "sid": os.getsid(0), "pgid": os.getpgid(0),
                           "tty": tty("self"), "corral_tty": tty(os.getppid()),
                           "corral_sid": os.getsid(os.getppid()),
                           "opens_dev_tty": opened}).encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    elif path == "/flood":
        # COUNT empty frames of KIND (18: HEARTBEAT) straight into corral's
        # channel, a thousand per write.
        kind, count = (int(x) for x in environ["QUERY_STRING"].split(","))
        chunk = (b"\x00\x00\x00\x00" + bytes([kind]) + b"\x00\x00\x00\x00") * 1000
        for _ in range(count // 1000):
            os.write(3, chunk)
    elif path == "/forge":
        # Lines dressed as corral's own, with a NUL, a CR and a terminal
        # escape, written into the stack dump file corral will log.
        fd = next(int(fd) for fd, target in fds().items() if "corral-stacks" in target)
        os.write(fd, b"\n2099-01-01T00:00:00.000000Z  INFO FORGED all checks passed\n"
                     b"x\x00y\rFORGED\x1b[2J\n")
        time.sleep(60)
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"#;

fn start(args: &[&str]) -> (AppDir, Corral) {
    let app = AppDir::new(&[("hostile.py", APP)]);
    let mut all = vec!["hostile:app", "-w", "1"];
    all.extend_from_slice(args);
    let c = Corral::start(app.path(), &all, 1);
    (app, c)
}

/// Waits until a worker other than `old` answers; returns its pid.
fn served_by_another(c: &Corral, old: u32, within: Duration) -> u32 {
    let deadline = Instant::now() + within;
    loop {
        let r = c.get("/");
        if r.status == 200 {
            let pid: u32 = r.text().parse().unwrap();
            if pid != old {
                return pid;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no other worker answered within {within:?} (last: {} {}); log:\n{}",
            r.status,
            r.text(),
            c.log.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `path` gets 502 within 5 s: its worker was killed or died, and corral
/// did not wait for the request timeout.
pub(crate) fn gets_502_at_once(c: &Corral, path: &str) {
    let t = Instant::now();
    let r = c.get(path);
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn a_worker_that_breaks_the_protocol_is_killed_and_its_slot_serves_again() {
    let (_app, c) = start(&["--timeout", "30s"]);
    let before = c.worker_pid("/");
    gets_502_at_once(&c, "/break");
    // Not a slot stuck in "stopping" until a reload: killed and replaced.
    served_by_another(&c, before, Duration::from_secs(10));
    assert!(wait_gone(&[before], Duration::from_secs(5)));
    assert!(c.log.has("broke the worker protocol"));
}

#[test]
fn a_subprocess_left_behind_holds_no_request_and_no_channel() {
    let (_app, c) = start(&["--timeout", "20s"]);
    let before = c.worker_pid("/");
    // The worker's exit ends its requests, even if a process it started
    // lives on: 502 at once, not 504 after the timeout.
    gets_502_at_once(&c, "/orphan");
    served_by_another(&c, before, Duration::from_secs(10));
}

#[test]
fn workers_and_their_subprocesses_get_no_fd_but_the_channel_the_rings_and_the_dump_file() {
    use std::os::unix::process::CommandExt;
    let app = AppDir::new(&[("hostile.py", APP)]);
    // corral itself inherits an open file (as from a careless parent or a
    // service manager); it must not reach the workers.
    let marker = app.path().join("inherited-marker");
    std::fs::write(&marker, "x").unwrap();
    let file = std::fs::File::open(&marker).unwrap();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&file);
    let mut c = Corral::spawn_with(app.path(), &["hostile:app", "-w", "1"], &[], |cmd| {
        // SAFETY: dup2 in the child between fork and exec: async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(raw, 9) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    c.wait_listening();
    c.wait_in_service(1);
    let r = c.get("/fds");
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let marker = marker.display().to_string();
    for (who, table) in [("worker", &v["worker"]), ("its subprocess", &v["child"])] {
        let table = table.as_object().unwrap();
        assert!(
            !table.values().any(|t| t.as_str() == Some(marker.as_str())),
            "{who} got corral's inherited fd: {table:?}"
        );
        let sockets = table
            .values()
            .filter(|t| t.as_str().is_some_and(|t| t.starts_with("socket:")))
            .count();
        let memfds = table
            .values()
            .filter(|t| t.as_str().is_some_and(|t| t.contains("corral-stacks")))
            .count();
        // The shared-memory rings' doorbells (the memory file itself is
        // mapped and closed).
        let eventfds = table
            .values()
            .filter(|t| t.as_str().is_some_and(|t| t.contains("eventfd")))
            .count();
        if who == "worker" {
            assert_eq!((sockets, memfds, eventfds), (1, 1, 4), "{who}: {table:?}");
        } else {
            assert_eq!((sockets, memfds, eventfds), (0, 0, 0), "{who}: {table:?}");
        }
    }
}

#[test]
fn the_runtime_folder_is_private_and_holds_only_the_script() {
    let (_app, c) = start(&["--timeout", "1s"]);
    let before = c.worker_pid("/");
    // A hung request gets its stacks dumped: into a file corral handed over
    // as an fd, not one in the folder.
    assert_eq!(c.get("/hang").status, 504);
    c.log
        .wait_for("Python stacks of worker", Duration::from_secs(10))
        .expect("the stacks are logged");
    served_by_another(&c, before, Duration::from_secs(10));
    let r = c.get("/rundir");
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["mode"], 0o700, "{v}");
    // The private folder holds one folder, named the same at every start.
    assert_eq!(v["holds"], serde_json::json!(["corral"]), "{v}");
    assert_eq!(v["folder"], "corral", "{v}");
    assert_eq!(v["folder_mode"], 0o700, "{v}");
    // The script and the package it imports, with nothing written beside
    // them (no __pycache__) though the worker has imported every module.
    assert_eq!(
        v["files"],
        serde_json::json!(["corral_worker", "corral_worker.py"]),
        "{v}"
    );
    assert_eq!(v["package_mode"], 0o700, "{v}");
    assert_eq!(
        v["package"],
        serde_json::json!({"__init__.py": 0o600, "arbiter.py": 0o600, "asgi.py": 0o600, "hooks.py": 0o600, "main.py": 0o600,
                           "ring.py": 0o600, "protocol.py": 0o600, "wsgi.py": 0o600}),
        "{v}"
    );
}

#[test]
fn a_worker_cannot_forge_corrals_log_lines_through_its_stack_dump_file() {
    let (_app, c) = start(&["--timeout", "1s"]);
    assert_eq!(c.get("/forge").status, 504);
    c.log
        .wait_for("Python stacks of worker", Duration::from_secs(10))
        .expect("the stacks are logged");
    c.wait_until("the dump to be logged whole", || {
        c.log.text().matches("FORGED").count() >= 2
    });
    let log = c.log.text();
    for line in log.lines() {
        assert!(
            !line.starts_with("2099-"),
            "a forged line of its own: {log}"
        );
        if line.contains("FORGED") {
            assert!(line.contains("stacks: "), "untagged: {line}");
        }
    }
    assert!(
        !log.contains(['\0', '\r', '\u{1b}']),
        "raw control characters: {log:?}"
    );
    assert!(log.contains("x\\x00y\\x0dFORGED"), "{log}");
}

#[test]
fn a_recycled_worker_that_ignores_sigterm_is_killed_after_its_grace() {
    let app = AppDir::new(&[(
        "stubborn.py",
        r#"
import os, signal
signal.signal(signal.SIGTERM, signal.SIG_IGN)

def app(environ, start_response):
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"#,
    )]);
    let c = Corral::start(
        app.path(),
        &[
            "stubborn:app",
            "-w",
            "1",
            "--max-requests",
            "2",
            "--graceful-timeout",
            "1s",
        ],
        1,
    );
    let first = c.worker_pid("/");
    c.worker_pid("/");
    // Recycled after two requests: the replacement serves, the old one
    // ignores TERM and is killed once its grace (1 s + 5 s) is over.
    served_by_another(&c, first, Duration::from_secs(15));
    assert!(
        wait_gone(&[first], Duration::from_secs(12)),
        "the stubborn worker outlived its grace; log:\n{}",
        c.log.text()
    );
    assert!(alive(c.pid()));
}

#[test]
fn a_worker_that_ignores_flow_control_is_killed_not_buffered() {
    // A compromised app switches the worker's flow control off: every
    // response may send without waiting for the client.
    let app = AppDir::new(&[(
        "flood.py",
        r#"
import os
from corral_worker import wsgi as worker
worker.RESPONSE_WINDOW = 1 << 40

def app(environ, start_response):
    if environ["PATH_INFO"] == "/flood":
        start_response("200 OK", [])
        chunk = b"x" * 65536
        return (chunk for _ in range(1000))  # 64 MB, as fast as it can
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"#,
    )]);
    let c = Corral::start(app.path(), &["flood:app", "-w", "1"], 1);
    let before_pid = c.worker_pid("/");
    let before = rss_kib(c.pid());
    // A client that reads the head and then nothing.
    let mut s = c.connect();
    send_request(&mut s, "GET", "/flood", &[], b"");
    c.log
        .wait_for("beyond its response window", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("not refused; log:\n{}", c.log.text()));
    let grown = rss_kib(c.pid()).saturating_sub(before);
    assert!(
        grown < 8 * 1024,
        "corral buffered {grown} KiB for a client that reads nothing"
    );
    served_by_another(&c, before_pid, Duration::from_secs(10));
    drop(s);
}

/// A client that retries at once on the 502 of a worker that broke the
/// protocol is served by another worker: the broken one is out of the
/// routing before any of its requests hears that it is gone.
#[test]
fn a_retry_right_after_a_broken_workers_502_goes_to_another_worker() {
    let app = AppDir::new(&[("hostile.py", APP)]);
    let c = Corral::start(
        app.path(),
        &["hostile:app", "-w", "2", "--timeout", "30s"],
        2,
    );
    for round in 0..15 {
        // The last round's broken worker replaced: two live workers.
        c.wait_until("both workers in service", || {
            c.log.count("all 2 workers in service") > round
        });
        gets_502_at_once(&c, "/break");
        let r = c.get("/");
        assert_eq!(
            r.status,
            200,
            "round {round}: the retry got {} {}; log:\n{}",
            r.status,
            r.text(),
            c.log.text()
        );
    }
}

/// A worker that floods its channel with heartbeats, or with frames of a
/// kind corral does not know, does not grow corral's memory or its log:
/// one heartbeat at a time waits for the supervisor, and an unknown kind
/// is logged once.
#[test]
fn a_worker_flooding_heartbeats_or_unknown_frames_grows_neither_memory_nor_log() {
    let (_app, c) = start(&[]);
    let before = rss_kib(c.pid());
    let (answers, peaks) = peak_rss_during(&[c.pid()], || {
        [c.get("/flood?18,3000000"), c.get("/flood?99,300000")]
    });
    for r in &answers {
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let grown = peaks[0].saturating_sub(before);
    assert!(
        grown < 40 * 1024,
        "corral grew by {grown} KiB (from {before} KiB); log:\n{}",
        c.log.text()
    );
    assert_eq!(
        c.log
            .wait_count("unknown frame kind", 1, Duration::from_secs(10)),
        1,
        "{}",
        c.log.text()
    );
    // The worker broke no rule: it serves on.
    let pid: u32 = c.get("/").text().parse().unwrap();
    assert_eq!(pid, answers[0].text().parse::<u32>().unwrap());
}

/// A worker has no controlling terminal, even when corral runs on one (an
/// operator's shell): a worker running as another user could otherwise
/// push keystrokes into root's shell (TIOCSTI). It stays in corral's
/// session, in a process group of its own: a session of its own would
/// make it a scheduler autogroup of its own, with as much CPU as corral
/// and every other worker together.
#[test]
fn a_worker_has_no_controlling_terminal_even_when_corral_runs_on_one() {
    let app = AppDir::new(&[("hostile.py", APP)]);
    let mut c = Corral::spawn_on_terminal(app.path(), &["hostile:app", "-w", "1"]);
    c.wait_listening();
    c.wait_in_service(1);
    let corral = children_of(c.pid());
    let ids = c.get("/session").json();
    // corral is Python's child, not the harness's: it is ended here, by
    // its pid (the harness ends only Python, and corral, a session leader
    // whose terminal then hangs up, took that for a reload and ran on).
    for pid in corral {
        // SAFETY: signalling the process this test started.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        if !wait_gone(&[pid], Duration::from_secs(10)) {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        assert!(
            wait_gone(&[pid], Duration::from_secs(10)),
            "corral {pid} lives on"
        );
    }
    assert_ne!(ids["corral_tty"], 0, "corral has a terminal: {ids:?}");
    assert_eq!(ids["tty"], 0, "{ids:?}");
    assert_eq!(ids["opens_dev_tty"], false, "{ids:?}");
    assert_eq!(ids["pgid"], ids["pid"], "{ids:?}");
    assert_eq!(ids["sid"], ids["corral_sid"], "{ids:?}");
}

/// What a worker writes that corral logs as one record of several lines
/// (its boot traceback, the report of an error it caught) could forge
/// lines of corral's own: the app controls its exception's message, and
/// reads the mark of its reports from /proc/self/environ. The boot
/// traceback also reached the log with a raw CR, which on a terminal
/// writes over the line. Now such a record's lines after the first are
/// indented and its control characters shown, so none of them starts a
/// line of the log.
#[test]
fn a_worker_cannot_forge_corrals_log_lines_through_its_tracebacks() {
    let app = AppDir::new(&[
        (
            "forge.py",
            r#"
import os, sys
env = open("/proc/self/environ", "rb").read().split(b"\0")
mark = [e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"CORRAL_LOG_MARK=")]
if mark:
    sys.stderr.write("\x1e%s report\x1f2099-01-01T00:00:00.000000Z  WARN FORGED by a report\n" % mark[0])
    sys.stderr.flush()

def app(environ, start_response):
    raise RuntimeError("x\n2099-01-01T00:00:00.000000Z  WARN FORGED by a request\rCR")
"#,
        ),
        (
            "noboot.py",
            "raise RuntimeError('x\\n2099-01-01T00:00:00.000000Z  WARN FORGED at boot\\r2099-CR')\n",
        ),
    ]);
    let c = Corral::start(app.path(), &["forge:app", "-w", "1"], 1);
    assert_eq!(c.get("/").status, 500);
    c.wait_until("the request's report to be logged", || {
        c.log.text().contains("FORGED by a request")
    });
    let log = c.log.text();
    assert!(log.contains("FORGED by a report"), "{log}");
    drop(c);

    let c = Corral::spawn(app.path(), &["noboot:app", "-w", "1"], &[]);
    c.wait_until("the boot traceback to be logged twice", || {
        c.log.text().matches("FORGED at boot").count() >= 2
    });
    let log = format!("{log}{}", c.log.text());
    for line in log.lines() {
        assert!(
            !line.starts_with("2099-"),
            "a forged line of its own:\n{log}"
        );
    }
    assert!(!log.contains('\r'), "a raw CR:\n{log:?}");
    assert!(
        log.contains("  2099-01-01T00:00:00.000000Z  WARN FORGED at boot\\x0d2099-CR"),
        "{log}"
    );
}
