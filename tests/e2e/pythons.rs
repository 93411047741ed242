//! The worker on the CPythons the README promises (3.9 and newer), with
//! nothing but the standard library: the oldest (3.9) and newer ones
//! (3.13, Debian 13's, and 3.14, the newest) that `tests/pythons.sh`
//! builds from Debian's source packages,
//! beside the 3.11 that `.venv` is made from. `./test.sh` also runs the
//! end-to-end tests whose apps need only the standard library once more
//! with each of them (the WSGI and ASGI conformance, WebSocket, streaming,
//! shared-memory, boot, hook and signal tests); this module checks that
//! they are there and that each serves WSGI and ASGI.

use crate::common::*;
use std::time::Duration;

/// The interpreters `$CORRAL_TEST_PYTHONS` names (colon-separated), else
/// those `tests/pythons.sh` built in `.pythons/`, each with its
/// `major.minor`.
fn pythons() -> Vec<(String, String)> {
    let listed = std::env::var("CORRAL_TEST_PYTHONS").unwrap_or_default();
    let mut paths: Vec<String> = listed
        .split(':')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    if paths.is_empty() {
        let built = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".pythons");
        for entry in std::fs::read_dir(&built).into_iter().flatten().flatten() {
            let python = entry.path().join("python");
            if python.exists() {
                paths.push(python.display().to_string());
            }
        }
        paths.sort();
    }
    paths
        .into_iter()
        .map(|p| {
            let out = std::process::Command::new(&p)
                .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
                .output()
                .unwrap_or_else(|e| panic!("cannot run {p}: {e}"));
            assert!(out.status.success(), "{p} does not run: {out:?}");
            let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
            (p, version)
        })
        .collect()
}

const APP: &str = r#"
import sys

VERSION = ("%d.%d" % sys.version_info[:2]).encode()


def app(environ, start_response):
    if environ["PATH_INFO"] == "/echo":
        body = environ["wsgi.input"].read()
    else:
        body = VERSION
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
"#;

const ASGI_APP: &str = r#"
import sys

VERSION = ("%d.%d" % sys.version_info[:2]).encode()
started = []


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                started.append(VERSION)
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b"asgi " + b"".join(started)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
"#;

#[test]
fn the_worker_serves_wsgi_and_asgi_on_the_oldest_and_a_newer_python_the_readme_promises() {
    let pythons = pythons();
    let versions: Vec<&str> = pythons.iter().map(|(_, v)| v.as_str()).collect();
    for wanted in ["3.9", "3.13", "3.14"] {
        assert!(
            versions.contains(&wanted),
            "no CPython {wanted} among {pythons:?}: run tests/pythons.sh (./test.sh does; it \
             builds 3.9, 3.13 and 3.14 into .pythons/), or name interpreters in CORRAL_TEST_PYTHONS"
        );
    }
    let app = AppDir::new(&[("app.py", APP), ("asgi_app.py", ASGI_APP)]);
    for (python, version) in &pythons {
        let (code, stdout, stderr) = crate::gunicorn_compat::run_to_exit(
            app.path(),
            &["check", "app:app", "--python", python],
        );
        assert_eq!(code, Some(0), "corral check on {version}: {stdout}{stderr}");
        assert!(stdout.starts_with("OK: app:app imported"), "{stdout}");

        let c = Corral::start(
            app.path(),
            &[
                "app:app",
                "-w",
                "2",
                "--python",
                python,
                "--status-bind",
                "127.0.0.1:0",
            ],
            2,
        );
        assert_eq!(c.get("/").text(), *version, "{}", c.log.text());
        // A body several times the shared-memory ring, both ways.
        let body: Vec<u8> = (0..1_000_003u32).map(|i| (i % 251) as u8).collect();
        let r = request(&c.addr, "POST", "/echo", &[], &body);
        assert!(
            r.status == 200 && r.body == body,
            "echo on {version}: {r:?}"
        );
        for slot in c.status_json()["slots"].as_array().unwrap() {
            assert_eq!(slot["worker"]["transport"], "shared-memory", "{slot}");
        }
        // Stopped, so that the next one may take the folder's control socket.
        drop(c);

        let c = Corral::start(
            app.path(),
            &["asgi_app:app", "-w", "1", "--python", python],
            1,
        );
        assert_eq!(c.get("/").text(), format!("asgi {version}"));
    }
}

/// An interpreter older than 3.9 stops before the worker's package, with
/// the reason as its boot error, where it would have failed at whatever
/// newer syntax it met first. Played by the tests' Python under a
/// `sitecustomize` that says it is 3.8.10.
#[test]
fn a_python_older_than_3_9_fails_its_boot_with_the_reason() {
    let app = AppDir::new(&[
        ("app.py", APP),
        (
            "old/sitecustomize.py",
            "import sys\nsys.version_info = (3, 8, 10, 'final', 0)\nsys.version = '3.8.10 (default)'\n",
        ),
    ]);
    let old = app.path().join("old").display().to_string();
    let said = "corral's worker needs CPython 3.9 or newer, and";
    let (code, stdout, stderr) = crate::gunicorn_compat::run_to_exit_with_env(
        app.path(),
        &["check", "app:app", "--python", &python()],
        &[("PYTHONPATH", &old)],
    );
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains(said)
            && stdout.contains("is Python 3.8.10: give corral a newer interpreter"),
        "{stdout}{stderr}"
    );
    let c = Corral::spawn(app.path(), &["app:app", "-w", "1"], &[("PYTHONPATH", &old)]);
    let line = c
        .log
        .wait_for(said, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no boot error said why; log:\n{}", c.log.text()));
    assert!(c.log.has("failed to boot"), "{line}\n{}", c.log.text());
}
