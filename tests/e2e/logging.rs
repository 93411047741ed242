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

/// Whether `GET path` on `addr` answers 200 within `timeout`: for a corral
/// whose start-up lines the harness cannot wait for.
fn served_within(addr: &str, path: &str, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if std::net::TcpStream::connect(addr).is_ok()
            && request(addr, "GET", path, &[], b"").status == 200
        {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// corral serving `app:app` from `dir` with `args` on a port of its own,
/// once `GET path` answers 200 (the harness reads the address from a text
/// log line at INFO, which these logs are not): corral and the address.
fn serving(dir: &std::path::Path, args: &[&str], path: &str) -> (Corral, String) {
    let addr = format!("127.0.0.1:{}", crate::common::compare::free_port());
    let mut all = vec!["app:app", "-w", "1", "-b", &addr];
    all.extend_from_slice(args);
    let c = Corral::spawn(dir, &all, &[]);
    assert!(
        served_within(&addr, path, Duration::from_secs(30)),
        "never served; log:\n{}",
        c.log.text()
    );
    (c, addr)
}

/// gunicorn's `loglevel` filters gunicorn's own logger: an app's output,
/// its tracebacks and the access lines pass whatever it is. A common
/// production config (`loglevel = "warning"`) once hid every 500's
/// traceback under corral.
#[test]
fn log_level_warning_keeps_the_apps_output_tracebacks_and_access_lines() {
    let app = AppDir::new(&[(
        "app.py",
        r#"
def app(environ, start_response):
    print("the app says", environ["PATH_INFO"], flush=True)
    if environ["PATH_INFO"] == "/boom":
        1 / 0
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
"#,
    )]);
    // corral's own INFO lines (what the harness waits for) are filtered.
    let (c, addr) = serving(
        app.path(),
        &["--log-level", "warning", "--access-logfile", "-"],
        "/hello",
    );
    assert_eq!(request(&addr, "GET", "/boom", &[], b"").status, 500);
    c.log
        .wait_for("ZeroDivisionError", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no traceback; log:\n{}", c.log.text()));
    c.log
        .wait_for("\"GET /boom HTTP/1.1\" 500", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no access line; log:\n{}", c.log.text()));
    // The app's output can come after the traceback and the access line.
    c.log.has("stdout: the app says /boom");
    let log = c.log.text();
    assert!(log.contains("stdout: the app says /boom"), "{log}");
    assert!(log.contains("Error handling request GET /boom"), "{log}");
    assert!(!log.contains(" INFO all 1 workers in service"), "{log}");
}

/// corral serving `app:app` in `dir` on `addr` with `--app-output raw`, its
/// stdout and stderr files of their own; SIGKILLed when dropped.
struct RawOutput {
    child: std::process::Child,
    out: std::path::PathBuf,
    err: std::path::PathBuf,
}

impl RawOutput {
    fn start(dir: &std::path::Path, addr: &str) -> RawOutput {
        let (out, err) = (dir.join("stdout.txt"), dir.join("stderr.txt"));
        let child = std::process::Command::new(corral_bin())
            .current_dir(dir)
            .args(["app:app", "-w", "1", "-b", addr, "--app-output", "raw"])
            .arg("--python")
            .arg(python())
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        RawOutput { child, out, err }
    }

    /// The file's text once it holds `needle`, or after 10 s.
    fn wait_for(path: &std::path::Path, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.contains(needle) || std::time::Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RawOutput {
    fn drop(&mut self) {
        // SAFETY: the corral this test started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// `--app-output raw`: what the app prints goes out as it wrote it, its
/// stdout to corral's stdout and its stderr to corral's stderr, as under
/// gunicorn, so that a JSON log line reaches a platform's log agent as
/// one object (tagged, it is a string inside corral's line).
#[test]
fn app_output_raw_passes_the_apps_lines_as_it_wrote_them() {
    let app = AppDir::new(&[(
        "app.py",
        r#"
import json, sys
def app(environ, start_response):
    print(json.dumps({"severity": "ERROR", "message": "from the app"}), flush=True)
    sys.stderr.write("plain on stderr\n")
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
"#,
    )]);
    let addr = format!("127.0.0.1:{}", crate::common::compare::free_port());
    let raw = RawOutput::start(app.path(), &addr);
    let served = served_within(&addr, "/", Duration::from_secs(30));
    let stdout = RawOutput::wait_for(&raw.out, "from the app");
    let stderr = RawOutput::wait_for(&raw.err, "plain on stderr");
    drop(raw);
    assert!(served, "never served; stderr:\n{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l == r#"{"severity": "ERROR", "message": "from the app"}"#),
        "stdout:\n{stdout}"
    );
    assert!(stderr.lines().any(|l| l == "plain on stderr"), "{stderr}");
    // corral's own lines stay on stderr, and nothing of the app's is tagged.
    assert!(stderr.contains("all 1 workers in service"), "{stderr}");
    assert!(
        !stderr.contains("stdout:") && !stdout.contains("INFO"),
        "{stdout}\n{stderr}"
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
        // The message and the level in Cloud Logging's name at the top,
        // where log platforms look for them.
        assert!(v["message"].is_string(), "{line}");
        let severity = match v["level"].as_str().unwrap() {
            "WARN" => "WARNING",
            "TRACE" => "DEBUG",
            level => level,
        };
        assert_eq!(v["severity"], severity, "{line}");
    }
    c.signal(libc::SIGTERM);
    c.wait_exit(Duration::from_secs(10));
}

/// With corral's log in JSON, a JSON access line is the record's fields,
/// not a string of JSON in its message that a pipeline parses twice.
#[test]
fn json_access_lines_in_a_json_log_are_the_records_fields() {
    let app = AppDir::new(&[("app.py", APP)]);
    // The harness reads the address from a text log line: bind it here.
    let (c, _) = serving(
        app.path(),
        &["--log-format", "json", "--access-log", "json"],
        "/a?b=1",
    );
    let line = c
        .log
        .wait_for("GET /a?b=1 200", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no access record:\n{}", c.log.text()));
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON record");
    assert_eq!(v["message"], "GET /a?b=1 200", "{line}");
    let f = &v["fields"];
    assert_eq!(f["method"], "GET", "{line}");
    assert_eq!(f["target"], "/a?b=1", "{line}");
    assert_eq!(f["status"], 200, "{line}");
    assert!(
        f["duration_ms"].is_f64() && f["worker_pid"].is_u64(),
        "{line}"
    );
    assert_eq!(f["request_id"].as_str().map(str::len), Some(16), "{line}");
}

/// Under journald a line has no timestamp of corral's own (the journal
/// stamps it) and begins with its level as syslog's priority (`<6>` info,
/// `<4>` warning, `<3>` error), which journald takes and strips, so that
/// `journalctl -p warning` shows corral's warnings and errors: they were
/// all at the unit's default priority. Under journald means stderr is the
/// stream `JOURNAL_STREAM` names (its device and inode), as systemd asks;
/// the variable alone, left by a unit whose shell sent stderr elsewhere,
/// is not.
#[test]
fn under_journald_lines_carry_their_priority_and_no_timestamp_of_their_own() {
    use std::os::unix::fs::MetadataExt;
    let app = AppDir::new(&[
        ("app.py", APP),
        ("broken.py", "raise RuntimeError('boom')\n"),
    ]);
    // stderr a file here, standing for the journal's socket.
    let run = |module: &str, journal: bool, until: &str| {
        let path = app.path().join(format!("{module}-{journal}.log"));
        let file = std::fs::File::create(&path).unwrap();
        let meta = file.metadata().unwrap();
        let stream = if journal {
            format!("{}:{}", meta.dev(), meta.ino())
        } else {
            format!("{}:{}", meta.dev(), meta.ino() + 1)
        };
        let mut child = std::process::Command::new(corral_bin())
            .current_dir(app.path())
            .args([
                module,
                "-w",
                "1",
                "-b",
                "127.0.0.1:0",
                "--python",
                &python(),
            ])
            .args(["--socket", app.path().join("c.sock").to_str().unwrap()])
            .env("JOURNAL_STREAM", stream)
            .env("STATE_DIRECTORY", app.path().join("state"))
            .env_remove("VIRTUAL_ENV")
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut text = String::new();
        while !text.contains(until) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            text = std::fs::read_to_string(&path).unwrap_or_default();
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(text.contains(until), "{text}");
        text
    };
    let text = run("app:app", true, "all 1 workers in service");
    let line = text.lines().find(|l| l.contains("in service")).unwrap();
    assert!(line.starts_with("<6> INFO"), "{text}");
    assert!(!text.contains("2026-"), "no timestamp: {text}");
    let text = run("broken:app", true, "boom");
    let mut levels = std::collections::BTreeSet::new();
    for line in text.lines() {
        for (level, priority) in [("ERROR ", "<3>"), ("WARN ", "<4>"), ("INFO ", "<6>")] {
            if line
                .strip_prefix(priority)
                .is_some_and(|rest| rest.trim_start().starts_with(level))
            {
                levels.insert(priority);
            }
        }
    }
    assert!(
        levels.contains("<6>") && (levels.contains("<3>") || levels.contains("<4>")),
        "{text}"
    );
    // journald makes an entry of each line: every line of the boot's
    // traceback carries its priority too.
    assert!(
        text.contains("  RuntimeError: boom") && text.lines().all(|l| l.starts_with('<')),
        "{text}"
    );
    // The variable names another stream: plain lines, with their time.
    let text = run("app:app", false, "all 1 workers in service");
    assert!(!text.contains("<6>"), "{text}");
    assert!(
        text.contains("Z  INFO") || text.contains("Z INFO"),
        "{text}"
    );
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

/// `%(b)s`, `%(B)s` and the JSON line's `bytes` give the bytes of the
/// body sent, as gunicorn logs them: a whole body's, a streamed one's (it
/// was `-`), a cut one's (it was the length the app declared), none for
/// a HEAD request (it was the length declared). The line is written once the body
/// has gone, so `%(D)s` is the whole response's time, as under gunicorn
/// (it was the time to the response's head).
#[test]
fn the_access_log_gives_the_bytes_sent_and_the_whole_responses_time() {
    let app = AppDir::new(&[(
        "app.py",
        "import time\n\
         def app(environ, start_response):\n\
         \x20   path = environ['PATH_INFO']\n\
         \x20   if path == '/cut':\n\
         \x20       start_response('200 OK', [('Content-Length', '100000')])\n\
         \x20       def cut():\n\
         \x20           yield b'x' * 1000\n\
         \x20           raise RuntimeError('cut short')\n\
         \x20       return cut()\n\
         \x20   if path == '/slow':\n\
         \x20       start_response('200 OK', [])\n\
         \x20       def slow():\n\
         \x20           for _ in range(3):\n\
         \x20               time.sleep(0.3)\n\
         \x20               yield b'ab'\n\
         \x20       return slow()\n\
         \x20   start_response('200 OK', [])\n\
         \x20   if path == '/streamed':\n\
         \x20       return iter([b'hel', b'lo\\n'])\n\
         \x20   return [b'hello\\n']\n",
    )]);
    let c = Corral::start(
        app.path(),
        &[
            "app:app",
            "-w",
            "1",
            "--access-logfile",
            "-",
            "--access-logformat",
            "access %(m)s %(U)s %(s)s %(b)s %(B)s %(D)s",
        ],
        1,
    );
    let line_for = |what: &str| {
        let line = c
            .log
            .wait_for(&format!("access {what} "), Duration::from_secs(5))
            .expect("an access line");
        let fields: Vec<String> = line.split(' ').map(str::to_owned).collect();
        let micros: u64 = fields.last().unwrap().parse().unwrap();
        (line, micros)
    };
    let r = c.get("/whole");
    assert_eq!(r.header("content-length"), Some("6"));
    let (line, _) = line_for("GET /whole");
    assert!(line.contains("access GET /whole 200 6 6 "), "{line}");
    let r = c.get("/streamed");
    assert_eq!(
        (r.header("content-length"), r.text().as_str()),
        (None, "hello\n")
    );
    let (line, _) = line_for("GET /streamed");
    assert!(line.contains("access GET /streamed 200 6 6 "), "{line}");
    assert_eq!(request(&c.addr, "HEAD", "/whole", &[], b"").status, 200);
    let (line, _) = line_for("HEAD /whole");
    assert!(line.contains("access HEAD /whole 200 0 0 "), "{line}");
    // Cut after 1,000 of its 100,000 bytes.
    let mut s = connect(&c.addr);
    send_request(&mut s, "GET", "/cut", &[], b"");
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut got);
    let (line, _) = line_for("GET /cut");
    assert!(line.contains("access GET /cut 200 1000 1000 "), "{line}");
    // Three pieces 0.3 s apart: the line comes with the last.
    assert_eq!(c.get("/slow").text(), "ababab");
    let (line, micros) = line_for("GET /slow");
    assert!(line.contains("access GET /slow 200 6 6 "), "{line}");
    assert!(micros >= 800_000, "{line}");
    drop(c);

    let c = Corral::start(
        app.path(),
        &["app:app", "-w", "1", "--access-log", "json"],
        1,
    );
    for (path, bytes) in [
        ("/whole", serde_json::json!(6)),
        ("/streamed", serde_json::json!(6)),
    ] {
        assert_eq!(c.get(path).status, 200);
        let line = c
            .log
            .wait_for(&format!("\"target\":\"{path}\""), Duration::from_secs(5))
            .expect("an access line");
        let json = &line[line.find('{').expect("a JSON object")..];
        let v: serde_json::Value =
            serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["bytes"], bytes, "{line}");
    }
}

/// Datagrams from `read` until one contains `needle` (at most 10 s); the
/// one that does.
fn datagram_with(read: impl Fn(&mut [u8]) -> std::io::Result<usize>, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 65536];
    let mut seen = Vec::new();
    while std::time::Instant::now() < deadline {
        if let Ok(n) = read(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if text.contains(needle) {
                return text;
            }
            seen.push(text);
        }
    }
    panic!("no datagram with {needle:?}; got:\n{}", seen.join("\n"));
}

#[test]
fn log_syslog_sends_each_line_to_the_daemon_tagged_as_gunicorn_tags_it() {
    const SAYS: &str = "import sys\n\ndef app(environ, start_response):\n    print('the app says hello', file=sys.stderr, flush=True)\n    start_response('200 OK', [('Content-Length', '2')])\n    return [b'ok']\n";
    // gunicorn's flags, over UDP.
    let app = AppDir::new(&[("app.py", SAYS)]);
    let daemon = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    daemon
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let to = format!("udp://{}", daemon.local_addr().unwrap());
    let c = Corral::start(
        app.path(),
        &[
            "app:app",
            "-w",
            "1",
            "--log-syslog",
            "--log-syslog-to",
            &to,
            "--log-syslog-prefix",
            "shop",
            "--log-syslog-facility",
            "local0",
        ],
        1,
    );
    // local0 (16) × 8 + info (6) = 134.
    let line = datagram_with(|b| daemon.recv(b), "all 1 workers in service");
    assert_eq!(
        line,
        format!(
            "<134>corral.shop.error: [{}] INFO all 1 workers in service",
            c.pid()
        )
    );
    assert_eq!(c.get("/").status, 200);
    let said = datagram_with(|b| daemon.recv(b), "the app says hello");
    assert!(said.contains("stderr: the app says hello"), "{said}");
    // The log goes on to stderr as before.
    c.log
        .wait_for("the app says hello", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{}", c.log.text()));
    drop(c);

    // Without a prefix, gunicorn tags its lines with -n/--name (its
    // proc_name, ':' made '.'): so do corral's, and two apps on one host
    // that gave each a name are told apart in the syslog.
    let c = Corral::start(
        app.path(),
        &[
            "app:app",
            "-w",
            "1",
            "-n",
            "shop:api",
            "--log-syslog",
            "--log-syslog-to",
            &to,
        ],
        1,
    );
    let line = datagram_with(|b| daemon.recv(b), "all 1 workers in service");
    assert_eq!(
        line,
        format!(
            "<14>corral.shop.api.error: [{}] INFO all 1 workers in service",
            c.pid()
        )
    );
    drop(c);

    // From the file, to a Unix datagram socket (as /dev/log is), and again
    // after the daemon is restarted (its socket made anew).
    let app = AppDir::new(&[("app.py", SAYS)]);
    let path = app.path().join("log.sock");
    let daemon = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    daemon
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    std::fs::write(
        app.path().join("corral.toml"),
        format!(
            "[app]\nmodule = \"app:app\"\n[log]\nsyslog = true\nsyslog_to = \"unix://{}#dgram\"\n",
            path.display()
        ),
    )
    .unwrap();
    let c = Corral::start(app.path(), &["-c", "corral.toml", "-b", "127.0.0.1:0"], 1);
    // user (1) × 8 + info = 14; the tag is the instance's name.
    let line = datagram_with(|b| daemon.recv(b), "all 1 workers in service");
    assert!(
        line.starts_with("<14>corral.") && line.contains(&format!(".error: [{}] INFO", c.pid())),
        "{line}"
    );
    drop(daemon);
    std::fs::remove_file(&path).unwrap();
    let daemon = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    daemon
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // The first line after the restart finds the old socket gone and
    // connects again; it or the next one arrives.
    for _ in 0..2 {
        assert_eq!(c.get("/").status, 200);
    }
    datagram_with(|b| daemon.recv(b), "the app says hello");
}

/// Flask's recipe for logging under gunicorn borrows the "gunicorn.error"
/// logger's handlers and level, and FastAPI apps log through
/// "uvicorn.error": both reach the log at the server's level, as under
/// gunicorn and uvicorn, not lost to Python's WARNING default.
#[test]
fn the_gunicorn_and_uvicorn_loggers_apps_borrow_log_at_the_level_given() {
    let app = AppDir::new(&[(
        "app.py",
        r#"
import logging
from flask import Flask

app = Flask(__name__)
server = logging.getLogger("gunicorn.error")
app.logger.handlers = server.handlers
app.logger.setLevel(server.level)

@app.route("/")
def index():
    app.logger.info("flask info line")
    app.logger.debug("flask debug line")
    logging.getLogger("uvicorn.error").info("uvicorn info line")
    return "ok"
"#,
    )]);
    for (level, debug) in [("info", false), ("debug", true)] {
        let c = Corral::start(app.path(), &["app:app", "--log-level", level], 1);
        assert_eq!(c.get("/").text(), "ok");
        c.wait_until("the app's lines", || {
            let log = c.log.text();
            log.contains("[INFO] flask info line") && log.contains("INFO:     uvicorn info line")
        });
        if debug {
            c.wait_until("the debug line", || {
                c.log.text().contains("[DEBUG] flask debug line")
            });
        } else {
            std::thread::sleep(Duration::from_millis(200));
            assert!(
                !c.log.text().contains("flask debug line"),
                "{}",
                c.log.text()
            );
        }
    }
}

/// A request's traceback is one record at ERROR, as gunicorn logs "Error
/// handling request": one JSON object with the whole traceback, not one
/// INFO record per line (alerting on ERROR, and error reporting that
/// groups a traceback, missed every 500). WSGI and ASGI alike.
#[test]
fn a_request_traceback_is_one_error_record() {
    const WSGI: &str = "def app(environ, start_response):\n\
         \x20   if environ['PATH_INFO'] == '/boom':\n\
         \x20       1 / 0\n\
         \x20   start_response('200 OK', [('Content-Length', '2')])\n\
         \x20   return [b'ok']\n";
    const ASGI: &str = "async def app(scope, receive, send):\n\
         \x20   if scope['type'] != 'http':\n\
         \x20       return\n\
         \x20   if scope['path'] == '/boom':\n\
         \x20       1 / 0\n\
         \x20   await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n\
         \x20   await send({'type': 'http.response.body', 'body': b'ok'})\n";
    for (app, interface) in [(WSGI, "wsgi"), (ASGI, "asgi")] {
        let dir = AppDir::new(&[("app.py", app)]);
        let (c, addr) = serving(
            dir.path(),
            &["--interface", interface, "--log-format", "json"],
            "/",
        );
        assert_eq!(request(&addr, "GET", "/boom", &[], b"").status, 500);
        let line = c
            .log
            .wait_for("Error handling request GET /boom", Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{interface}: no report; log:\n{}", c.log.text()));
        let record: serde_json::Value = serde_json::from_str(&line).expect("a JSON record");
        assert_eq!(record["level"], "ERROR", "{interface}: {line}");
        assert_eq!(record["severity"], "ERROR", "{interface}: {line}");
        let message = record["message"].as_str().unwrap();
        assert!(
            message.contains("Traceback (most recent call last):\n")
                && message.contains("ZeroDivisionError: division by zero"),
            "{interface}: {message}"
        );
        assert!(
            !c.log.text().contains("stderr: Traceback"),
            "{interface}: the traceback came line by line:\n{}",
            c.log.text()
        );
    }
}

/// A log reader that stalls (a container runtime's logging driver in
/// blocking mode, a pipe nobody drains) stops no request: corral queues
/// its lines, drops and counts them past the queue, and says how many once
/// the reader is back. Before, the front thread that logged a line waited
/// on the full pipe, with every connection and worker channel it served:
/// the port stopped answering. The same with the streams crossed
/// (`--error-logfile /dev/stdout --access-logfile /dev/stderr`), which
/// corral wrote itself, past its writer threads, when it first took them.
#[test]
fn a_log_reader_that_stalls_stops_no_request() {
    for flags in [
        &["--access-logfile", "-"][..],
        &[
            "--access-logfile",
            "/dev/stderr",
            "--error-logfile",
            "/dev/stdout",
        ][..],
    ] {
        a_log_reader_that_stalls_stops_no_request_with(flags);
    }
}

fn a_log_reader_that_stalls_stops_no_request_with(flags: &[&str]) {
    let app = AppDir::new(&[(
        "app.py",
        "def app(environ, start_response):\n\
         \x20   for i in range(10):\n\
         \x20       print('a line of the app, ' * 5, i)\n\
         \x20   start_response('200 OK', [('Content-Length', '2')])\n\
         \x20   return [b'ok']\n",
    )]);
    let mut args = vec!["app:app", "-w", "1"];
    args.extend(flags);
    let c = Corral::start(app.path(), &args, 1);
    c.log.pause(true);
    // 10 lines of the app and an access line a request: far more than
    // the pipes and the queue hold.
    let mut s = std::io::BufReader::new(connect(&c.addr));
    s.get_ref()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let t = std::time::Instant::now();
    for i in 0..600 {
        send_request(s.get_mut(), "GET", "/", &[], b"");
        let r = read_response(&mut s, false);
        assert!(
            r.as_ref().is_ok_and(|r| r.status == 200),
            "{flags:?}: request {i}, {:?} into the stall: {r:?}",
            t.elapsed()
        );
    }
    c.log.pause(false);
    let said = c
        .log
        .wait_for("log lines dropped", Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no word of the dropped lines; log:\n{}", c.log.text()));
    assert!(said.contains("WARN"), "{said}");
}

/// A line an app prints that starts as the worker's error reports do (RS,
/// line breaks as US), a client's input among it, forges nothing: it is
/// one line of the app's, escaped, and no record of corral's. Only the
/// worker knows the mark corral gave it. Before, any line starting with RS
/// was a report whose US became real line breaks: `print(q)` with
/// `?q=%1E...%1F...` wrote lines that read as corral's own.
#[test]
fn a_printed_line_cannot_pass_for_an_error_report() {
    let app = AppDir::new(&[(
        "app.py",
        "from urllib.parse import unquote\n\
         def app(environ, start_response):\n\
         \x20   print(unquote(environ['QUERY_STRING']))\n\
         \x20   if environ['PATH_INFO'] == '/boom':\n\
         \x20       1 / 0\n\
         \x20   start_response('200 OK', [('Content-Length', '2')])\n\
         \x20   return [b'ok']\n",
    )]);
    let c = Corral::start(app.path(), &["app:app", "-w", "1"], 1);
    let forged = "%1Ex%1F2026-12-06T00:00:00.000000Z%20%20WARN%20SIGTERM:%20forged%20stop";
    assert_eq!(c.get(&format!("/?{forged}")).status, 200);
    let line = c
        .log
        .wait_for("forged stop", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("the line was not logged; log:\n{}", c.log.text()));
    assert!(line.contains("stdout: \\x1ex\\x1f2026"), "{line}");
    assert!(
        !c.log
            .text()
            .lines()
            .any(|l| l.starts_with("2026-12-06T00:00")),
        "a forged line:\n{}",
        c.log.text()
    );
    // The worker's own reports still are records of their own.
    assert_eq!(c.get("/boom").status, 500);
    let report = c
        .log
        .wait_for("Error handling request GET /boom", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no report; log:\n{}", c.log.text()));
    assert!(report.contains("ERROR"), "{report}");
}

/// A log file on a full disk: corral serves on, says on stderr that the
/// file's lines are lost (before, nothing was said anywhere), and counts
/// them in the file once it can write again. The disk is a 16 KiB tmpfs
/// mounted for corral alone (a mount namespace of its own: root only),
/// filled and emptied through `/proc/PID/root`.
#[test]
fn lines_a_full_disk_loses_are_said_on_stderr_and_counted_in_the_log() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let app = AppDir::new(&[("app.py", APP)]);
    let disk = app.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let mount = disk.clone();
    let mut c = Corral::spawn_with(
        app.path(),
        &["app:app", "-w", "1", "--access-logfile", "disk/access.log"],
        &[],
        move |cmd| with_mounts(cmd, vec![Mount::new_fs("tmpfs", &mount, "size=16k")]),
    );
    c.wait_listening();
    c.wait_in_service(1);
    // corral's view of the folder.
    let seen = std::path::PathBuf::from(format!("/proc/{}/root{}", c.pid(), disk.display()));
    assert_eq!(c.get("/first").text(), "ok");
    let filler = seen.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        while f.write_all(&[0u8; 4096]).is_ok() {}
    }
    // The log's last page still has room: a few dozen lines fill it.
    let mut sent = 0;
    while sent < 300 && c.log.count("its lines are lost") == 0 {
        assert_eq!(c.get("/lost").text(), "ok");
        sent += 1;
    }
    assert!(
        c.log
            .wait_for(
                "access.log: No space left on device (os error 28); its lines are lost",
                Duration::from_secs(10)
            )
            .is_some(),
        "{}",
        c.log.text()
    );
    for _ in 0..3 {
        assert_eq!(c.get("/lost").text(), "ok");
    }
    assert_eq!(c.log.count("cannot write to the log file"), 1, "said once");
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(c.get("/after").text(), "ok");
    let log = std::fs::read_to_string(seen.join("access.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines[0].contains("/first"), "{log}");
    let n = lines.len();
    assert!(lines[n - 1].contains("/after"), "{log}");
    // At least the three sent after it was said, and some of the line
    // that failed may have made it in.
    let notice = lines[n - 2].split_once("corral: ").map(|(_, n)| n);
    let lost: usize = notice
        .and_then(|n| n.split_once(" line(s) of this log were lost"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no count before the next line: {log}"));
    assert!(lost >= 4, "{lost}: {log}");
}

/// What an app writes in one call is one record of corral's log: Flask's
/// report of an exception in a view ("Exception on /boom [GET]" and its
/// traceback, which its logging handler writes at once, on stderr), a
/// `logger.exception` to stdout, a `print()` of a text of several lines.
/// Lines written one by one stay records of their own, and with
/// `--app-output raw` the lines go out as the app wrote them. A logging
/// handler's record at WARNING or ERROR is a record at WARN or ERROR
/// (`journalctl -p err` and a JSON log's `level` see Flask's 500s). Before,
/// each line of a traceback was a record: 20 JSON objects for one 500
/// of a Flask app, the traceback's lines apart from the message they
/// belong to.
#[test]
fn what_the_app_writes_in_one_call_is_one_record() {
    const APP: &str = r#"
import logging, sys
from flask import Flask

# A logger of the app's own to stdout; Flask's logs to stderr, as by default.
handler = logging.StreamHandler(sys.stdout)
handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
logging.getLogger("shop").addHandler(handler)
app = Flask(__name__)

@app.route("/boom")
def boom():
    1 / 0

@app.route("/log")
def log():
    try:
        {}["missing"]
    except KeyError:
        logging.getLogger("shop").exception("lookup failed")
    logging.getLogger("shop").warning("stock low")
    print("first of two\nsecond of two")
    print("alone", 1)
    print("alone", 2)
    print("stream:", type(sys.stdout.buffer).__name__)
    # A line begun and flushed, then ended by a print of two lines.
    sys.stdout.write("no end")
    sys.stdout.flush()
    print(" then its end\nand a line after")
    return "ok"
"#;
    let dir = AppDir::new(&[("app.py", APP)]);
    let (c, addr) = serving(dir.path(), &["--log-format", "json"], "/log");
    assert_eq!(request(&addr, "GET", "/boom", &[], b"").status, 500);
    c.log
        .wait_for("ZeroDivisionError", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no traceback; log:\n{}", c.log.text()));
    // /log's last line: its output can come after the answer and /boom's.
    c.log.has("and a line after");
    // (level, message) of every record.
    let records: Vec<(String, String)> = c
        .log
        .text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| {
            let message = r["message"].as_str()?.to_owned();
            Some((r["level"].as_str()?.to_owned(), message))
        })
        .collect();
    let messages: Vec<&String> = records.iter().map(|(_, m)| m).collect();
    // The one record that holds `needle`, and its level.
    let one_at = |needle: &str, level: &str| {
        let found: Vec<&(String, String)> =
            records.iter().filter(|(_, m)| m.contains(needle)).collect();
        assert_eq!(found.len(), 1, "{needle:?} in one record: {records:#?}");
        assert_eq!(found[0].0, level, "{needle:?}: {records:#?}");
        found[0].1.clone()
    };
    let one = |needle: &str| one_at(needle, "INFO");
    // Flask's and the app's logging records at their level: ERROR; the
    // traceback's lines as Python wrote them (a JSON record needs no
    // indent to keep them from passing for records of corral's).
    let flask = one_at("ERROR in app: Exception on /boom [GET]", "ERROR");
    assert!(
        flask.contains("stderr: [")
            && flask.contains(" [GET]\nTraceback (most recent call last):\n  File \"")
            && flask.contains(", in boom\n    1 / 0\n")
            && flask.ends_with("\nZeroDivisionError: division by zero"),
        "{flask}"
    );
    let logged = one_at("ERROR shop: lookup failed", "ERROR");
    assert!(one_at("WARNING shop: stock low", "WARN").ends_with("stdout: WARNING shop: stock low"));
    assert!(
        logged.contains("stdout: ERROR shop: lookup failed\nTraceback")
            && logged.ends_with("\nKeyError: 'missing'"),
        "{logged}"
    );
    let printed = one("first of two");
    assert!(
        printed.ends_with("stdout: first of two\nsecond of two"),
        "{printed}"
    );
    assert!(one("stdout: stream:").ends_with("stream: RecordWriter"));
    assert!(one("stdout: alone 1").ends_with("alone 1"));
    assert!(one("stdout: alone 2").ends_with("alone 2"));
    // A flushed line without its end is ended by what comes next, as the
    // app wrote it; no mark is ever inside a line. Before, the print that
    // followed went out marked at the end of the open line: the log showed
    // the mark and the separators (`no end\x1e...Ithen its end\x1f...`).
    assert!(one("stdout: no end then its end").ends_with("no end then its end"));
    assert!(one("stdout: and a line after").ends_with("and a line after"));
    assert!(
        !messages
            .iter()
            .any(|m| m.contains('\u{1e}') || m.contains("\\x1e") || m.contains("\\x1f")),
        "{messages:#?}"
    );
    assert!(
        !messages.iter().any(|m| m.contains("stderr: Traceback")),
        "a traceback came line by line: {messages:#?}"
    );
    drop(c);

    // Raw: the lines as the app wrote them.
    let raw = RawOutput::start(dir.path(), &addr);
    let served = served_within(&addr, "/log", Duration::from_secs(30))
        && request(&addr, "GET", "/boom", &[], b"").status == 500;
    let stdout = RawOutput::wait_for(&raw.out, "stream:");
    let stderr = RawOutput::wait_for(&raw.err, "ZeroDivisionError");
    drop(raw);
    assert!(served, "never served; stderr:\n{stderr}");
    assert!(
        stdout.contains("ERROR shop: lookup failed\nTraceback (most recent call last):\n  File \"")
            && stdout
                .contains("KeyError: 'missing'\nWARNING shop: stock low\nfirst of two\nsecond of two\nalone 1\nalone 2\n"),
        "stdout:\n{stdout}"
    );
    assert!(
        stderr.contains(
            "ERROR in app: Exception on /boom [GET]\nTraceback (most recent call last):\n"
        ) && stderr.contains("\nZeroDivisionError: division by zero\n"),
        "stderr:\n{stderr}"
    );
    // Python's own streams: corral passes the lines on as written.
    assert!(
        stdout.contains("\nstream: ") && !stdout.contains("stream: RecordWriter"),
        "{stdout}"
    );
    assert!(
        !stdout.contains('\x1e') && !stderr.contains('\x1e'),
        "a mark in the raw output:\n{stdout}\n{stderr}"
    );
}
