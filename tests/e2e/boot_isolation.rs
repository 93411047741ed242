//! A broken worker never takes the service down: every way an app can fail
//! to boot is caught, shown in the log and `/status`, retried with back-off,
//! and never receives a request; workers that did boot keep serving.

use crate::common::*;
use std::time::{Duration, Instant};

const OK_APP: &str = r#"
import os

def app(environ, start_response):
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"#;

/// Starts corral on an app whose module body is `broken` and checks what a
/// user sees: 503 with Retry-After on the app port, 503 on /health/ready,
/// the error in the log and in /status.
fn assert_boot_failure(broken: &str, extra: &[&str], expect_in_error: &str) {
    let app = AppDir::new(&[("brokenapp.py", &format!("{broken}\n{OK_APP}"))]);
    // `extra` may end with `--` and another app spec to replace the default.
    let (extra, spec) = match extra.iter().position(|a| *a == "--") {
        Some(i) => (&extra[..i], extra[i + 1]),
        None => (extra, "brokenapp:app"),
    };
    let mut args = vec![spec, "-w", "1", "--status-bind", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut c = Corral::spawn(app.path(), &args, &[]);
    c.wait_listening();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let s = c.status_json();
        if s["slots"][0]["last_boot_error"]["text"].is_string() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "no boot error in /status; log:\n{}",
            c.log.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = status["slots"][0]["last_boot_error"]["text"]
        .as_str()
        .unwrap();
    assert!(
        text.contains(expect_in_error),
        "/status error {text:?} lacks {expect_in_error:?}"
    );
    assert_eq!(status["workers"]["in_service"], 0);
    assert!(status["workers"]["boot_failures"].as_u64().unwrap() >= 1);
    // /status can show the error before the log reader has read its line.
    assert!(
        c.log
            .wait_for(expect_in_error, Duration::from_secs(10))
            .is_some(),
        "log lacks {expect_in_error:?}"
    );

    let t = Instant::now();
    let r = c.get("/");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "503 took {:?}",
        t.elapsed()
    );
    let ready = c.status("/health/ready");
    assert_eq!(ready.status, 503);
    let v: serde_json::Value = serde_json::from_slice(&ready.body).unwrap();
    assert_eq!(v["ready"], false);
    assert!(v["reason"].as_str().unwrap().contains("0 of 1"), "{v}");
    assert!(alive(c.pid()), "the supervisor stays up");
}

#[test]
fn import_error() {
    assert_boot_failure(
        "import no_such_module_anywhere",
        &[],
        "ModuleNotFoundError: No module named 'no_such_module_anywhere'",
    );
}

#[test]
fn syntax_error() {
    assert_boot_failure("def broken(:\n    pass", &[], "SyntaxError");
}

#[test]
fn exception_at_import() {
    assert_boot_failure(
        "raise RuntimeError('DATABASE_URL is not set')",
        &[],
        "RuntimeError: DATABASE_URL is not set",
    );
}

#[test]
fn sys_exit_at_import() {
    assert_boot_failure("import sys\nsys.exit(3)", &[], "SystemExit: 3");
}

#[test]
fn os_exit_at_import() {
    assert_boot_failure(
        "import os\nos._exit(4)",
        &[],
        "exited with code 4 while booting",
    );
}

#[test]
fn an_app_that_forks_and_exits_at_import_fails_its_boot_and_its_check() {
    // Its child imports on and reports the boot; the worker corral started
    // is gone. `run` fails the boot; `corral check` said OK.
    let broken = "import os\nif os.fork() != 0:\n    os._exit(0)";
    assert_boot_failure(broken, &[], "exited with code 0 while booting");
    let app = AppDir::new(&[("brokenapp.py", &format!("{broken}\n{OK_APP}"))]);
    for _ in 0..3 {
        let out = std::process::Command::new(corral_bin())
            .args(["check", "--python", &python(), "brokenapp:app"])
            .current_dir(app.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(
            text.contains("FAILED: brokenapp:app does not boot")
                && text.contains("exited with code 0 while booting; a process it forked"),
            "{text}"
        );
    }
}

#[test]
fn segfault_at_import() {
    assert_boot_failure("import ctypes\nctypes.string_at(0)", &[], "SIGSEGV");
}

#[test]
fn import_that_hangs_past_boot_timeout() {
    let t = Instant::now();
    assert_boot_failure(
        "import time\ntime.sleep(600)",
        &["--boot-timeout", "2s"],
        "timed out after 2s while booting",
    );
    // Given up at boot_timeout, not at some multiple of it.
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the hung boot was given up after {:?}",
        t.elapsed()
    );
}

#[test]
fn missing_callable() {
    assert_boot_failure("", &["--", "brokenapp:nope"], "AttributeError");
}

#[test]
fn a_slot_that_cannot_boot_leaves_the_others_serving() {
    // Slot 1 fails to import; slots 0 and 2 serve every request.
    let src = format!(
        "import os\nif os.environ.get('CORRAL_SLOT') == '1':\n    raise ImportError('slot 1 is broken')\n{OK_APP}"
    );
    let app = AppDir::new(&[("partial.py", &src)]);
    let mut c = Corral::spawn(
        app.path(),
        &["partial:app", "-w", "3", "--status-bind", "127.0.0.1:0"],
        &[],
    );
    c.wait_listening();
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.status_json()["workers"]["in_service"] != 2 {
        assert!(
            Instant::now() < deadline,
            "two workers never served; log:\n{}",
            c.log.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in 0..200 {
        let r = c.get("/");
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    let s = c.status_json();
    assert!(
        s["slots"][1]["last_boot_error"]["text"]
            .as_str()
            .unwrap()
            .contains("slot 1 is broken")
    );
    assert!(s["slots"][0]["worker"]["requests"].as_u64().unwrap() > 0);
    assert!(s["slots"][2]["worker"]["requests"].as_u64().unwrap() > 0);
    assert_eq!(c.status("/health/ready").status, 200);
}

#[test]
fn a_broken_app_recovers_by_itself_once_the_code_is_fixed() {
    let src = format!(
        "import os\nif os.path.exists('broken'):\n    raise RuntimeError('still broken')\n{OK_APP}"
    );
    let app = AppDir::new(&[("fixable.py", &src), ("broken", "")]);
    let mut c = Corral::spawn(
        app.path(),
        &["fixable:app", "-w", "1", "--status-bind", "127.0.0.1:0"],
        &[],
    );
    c.wait_listening();
    assert!(
        c.log
            .wait_for("still broken", Duration::from_secs(20))
            .is_some()
    );
    assert_eq!(c.get("/").status, 503);
    std::fs::remove_file(app.path().join("broken")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.get("/").status != 200 {
        assert!(
            Instant::now() < deadline,
            "never recovered; log:\n{}",
            c.log.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(c.status("/health/ready").status, 200);
}

#[test]
fn a_hung_import_shows_its_python_stack_in_status() {
    let app = AppDir::new(&[(
        "hangs.py",
        "import time\n\ndef connect():\n    time.sleep(600)\n\nconnect()\n",
    )]);
    let mut c = Corral::spawn(
        app.path(),
        &[
            "hangs:app",
            "-w",
            "1",
            "--boot-timeout",
            "1s",
            "--status-bind",
            "127.0.0.1:0",
        ],
        &[],
    );
    c.wait_listening();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = c.status_json()["slots"][0]["last_boot_error"]["text"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if text.contains("Python stacks at that moment") {
            assert!(text.contains("hangs.py\", line 4 in connect"), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no stack in /status; log:\n{}",
            c.log.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(c.log.has("line 4 in connect"));
}

#[test]
fn asgi_lifespan_startup_that_raises() {
    assert_boot_failure(
        "async def asgi_app(scope, receive, send):\n    await receive()\n    raise ConnectionError('cannot reach redis')\n",
        &["--", "brokenapp:asgi_app"],
        "ConnectionError: cannot reach redis",
    );
}

#[test]
fn asgi_lifespan_startup_failed_message() {
    assert_boot_failure(
        "async def asgi_app(scope, receive, send):\n    await receive()\n    await send({'type': 'lifespan.startup.failed', 'message': 'migrations are not applied'})\n",
        &["--", "brokenapp:asgi_app"],
        "ASGI lifespan startup failed: migrations are not applied",
    );
}

#[test]
fn a_repeated_boot_error_is_logged_in_full_once_then_as_one_line() {
    let app = AppDir::new(&[(
        "brokenapp.py",
        "def connect():\n    raise RuntimeError('no database')\n\nconnect()\n",
    )]);
    let c = Corral::spawn(
        app.path(),
        &["brokenapp:app", "-w", "1", "--status-bind", "127.0.0.1:0"],
        &[],
    );
    let mut c = c;
    c.wait_listening();
    // Three failures after the first (the back-off starts at 100 ms).
    c.wait_until("four boot failures", || {
        c.status_json()["workers"]["boot_failures"]
            .as_u64()
            .unwrap_or(0)
            >= 4
            && c.log.count("failed to boot again with the same error") >= 3
    });
    let log = c.log.text();
    assert_eq!(
        c.log.count("Traceback (most recent call last)"),
        1,
        "the traceback once; log:\n{log}"
    );
    assert_eq!(
        c.log.count("in connect"),
        1,
        "the stack lines once; log:\n{log}"
    );
    for line in log
        .lines()
        .filter(|l| l.contains("failed to boot again with the same error"))
    {
        assert!(
            line.contains("RuntimeError: no database"),
            "each repeat names the error on its line: {line}"
        );
    }
}
