//! gunicorn's `-k gevent`: a WSGI app written for gevent runs in gevent's
//! greenlets, monkey-patched before its import, one worker serving many
//! requests that wait on I/O, up to `--worker-connections`; a request past
//! the timeout has its greenlet killed, not its worker; a missing gevent or
//! an ASGI app are boot errors that say what to do; `import-gunicorn`
//! carries `worker_class = "gevent"` over; an app that monkey-patches
//! itself at import runs in greenlets without `-k gevent`, and one that
//! does eventlet's fails its boot with the reason.

use crate::common::*;
use crate::gunicorn_compat::{import_gunicorn, run_to_exit};

use serde_json::json;
use std::time::{Duration, Instant};

/// Says whether gevent patched the socket module before the app's import;
/// `/wait?S` sleeps S seconds with `time.sleep` (a greenlet switch once
/// patched) and counts the requests inside at once, `/inside` answers
/// how many are, `/max` the most there were; `/slow` sleeps 30 s and logs
/// what ended it.
const APP: &str = r#"
import os, sys, time
from gevent import monkey

PATCHED = monkey.is_module_patched("socket") and monkey.is_module_patched("time")
inside = 0
most = 0

def app(environ, start_response):
    global inside, most
    path = environ["PATH_INFO"]
    if path == "/wait":
        inside += 1
        most = max(most, inside)
        try:
            time.sleep(float(environ["QUERY_STRING"]))
        finally:
            inside -= 1
        body = str(os.getpid())
    elif path == "/max":
        body = str(most)
    elif path == "/inside":
        body = str(inside)
    elif path == "/echo":
        body = environ["wsgi.input"].read()
    elif path == "/slow":
        try:
            time.sleep(30)
        except BaseException as e:
            print("slow request ended by", type(e).__name__, flush=True)
            raise
        body = "slept"
    else:
        body = "patched before import=%s multithread=%s" % (
            PATCHED, environ["wsgi.multithread"])
    if isinstance(body, str):
        body = body.encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"#;

/// Sends `n` requests for `path` at once, each on its own connection;
/// their statuses and bodies.
fn at_once(addr: &str, path: &str, n: usize) -> Vec<(u16, String)> {
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (addr, path) = (addr.to_owned(), path.to_owned());
            std::thread::spawn(move || {
                let r = request(&addr, "GET", &path, &[], b"");
                (r.status, r.text())
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// POSTs `size` bytes to `/echo` from a thread: whether the answer is 200
/// with the same bytes.
fn echo_in_background(addr: &str, size: usize) -> std::thread::JoinHandle<(u16, bool)> {
    let addr = addr.to_owned();
    std::thread::spawn(move || {
        let body: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        let r = request(&addr, "POST", "/echo", &[], &body);
        (r.status, r.body == body)
    })
}

#[test]
fn gevent_workers_serve_many_waiting_requests_from_one_process_and_time_out_a_greenlet_alone() {
    let app = AppDir::new(&[("app.py", APP)]);
    let mut c = Corral::start(
        app.path(),
        &[
            "app:app",
            "-k",
            "gevent",
            "-w",
            "1",
            "--worker-connections",
            "40",
            "-t",
            "3",
        ],
        1,
    );
    assert!(
        c.log.has(
            "each worker runs its requests in gevent's greenlets, up to 40 at once \
             (workers.concurrency)"
        ),
        "{}",
        c.log.text()
    );
    // Monkey-patched before the app's import, as gunicorn's gevent worker
    // does; wsgi.multithread is True, as it sets it (requests run side by
    // side in the process).
    assert_eq!(
        c.get("/").text(),
        "patched before import=True multithread=True"
    );
    let pid = c.worker_pid("/wait?0");

    // 60 requests that wait 1 s each, on one worker: 40 at once (the
    // bound), the rest as places free up. One at a time they would take
    // 60 s.
    let start = Instant::now();
    // A 2 MiB body streams in meanwhile, under its flow control.
    let upload = echo_in_background(&c.addr, 2 << 20);
    let answers = at_once(&c.addr, "/wait?1", 60);
    let took = start.elapsed();
    assert!(
        answers
            .iter()
            .all(|(s, b)| *s == 200 && *b == pid.to_string()),
        "{answers:?}\n{}",
        c.log.text()
    );
    assert_eq!(c.get("/max").text(), "40", "{}", c.log.text());
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert_eq!(upload.join().unwrap(), (200, true));

    // A request past the timeout: 504, its greenlet killed where it waits;
    // the requests beside it finish and the worker stays.
    let addr = c.addr.clone();
    let slow = std::thread::spawn(move || request(&addr, "GET", "/slow", &[], b"").status);
    std::thread::sleep(Duration::from_millis(500));
    let beside = at_once(&c.addr, "/wait?1", 5);
    assert_eq!(slow.join().unwrap(), 504);
    assert!(beside.iter().all(|(s, _)| *s == 200), "{beside:?}");
    c.log
        .wait_for(
            "slow request ended by GreenletExit",
            Duration::from_secs(10),
        )
        .expect("the greenlet is killed");
    assert!(
        c.log.has("exceeded the timeout of 3s") && c.log.has("cancelling it"),
        "{}",
        c.log.text()
    );
    assert_eq!(c.worker_pid("/wait?0"), pid, "{}", c.log.text());
    assert_eq!(c.log.count("booted in"), 1, "{}", c.log.text());

    // A graceful stop lets the requests in flight finish.
    let addr = c.addr.clone();
    let in_flight = std::thread::spawn(move || at_once(&addr, "/wait?1", 5));
    c.wait_until("the 5 requests inside the app", || {
        c.get("/inside").text() == "5"
    });
    c.signal(libc::SIGTERM);
    let st = c.wait_exit(Duration::from_secs(30)).expect("corral stops");
    assert!(st.success(), "{st:?}\n{}", c.log.text());
    let finished = in_flight.join().unwrap();
    assert!(
        finished.iter().all(|(s, _)| *s == 200),
        "{finished:?}\n{}",
        c.log.text()
    );
}

#[test]
fn without_gevent_or_with_an_asgi_app_the_boot_error_says_what_to_do() {
    const WSGI: &str = "def app(environ, start_response):\n    start_response(\"200 OK\", [])\n    return [b\"ok\"]\n";
    // A folder whose `gevent` cannot be imported (it comes first on the
    // path, as the app's folder does), as in a venv without gevent.
    let app = AppDir::new(&[
        ("app.py", WSGI),
        (
            "gevent/__init__.py",
            "raise ImportError(\"No module named 'gevent'\")\n",
        ),
    ]);
    let py = python();
    let check = ["check", "app:app", "-k", "gevent", "--python", &py];
    let (code, stdout, stderr) = run_to_exit(app.path(), &check);
    let out = format!("{stdout}{stderr}");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("FAILED: app:app does not boot"), "{out}");
    assert!(
        out.contains(
            "workers.gevent is set (gunicorn's -k gevent) but gevent's monkey-patching failed: \
             ImportError: No module named 'gevent'"
        ) && out.contains("(pip install gevent)"),
        "{out}"
    );

    let asgi = AppDir::new(&[("app.py", "async def app(scope, receive, send):\n    pass\n")]);
    let (code, stdout, stderr) = run_to_exit(asgi.path(), &check);
    let out = format!("{stdout}{stderr}");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("app:app is an ASGI app but workers.gevent is set"),
        "{out}"
    );
}

#[test]
fn import_gunicorn_carries_a_gevent_worker_class_over_and_it_serves() {
    let conf = "worker_class = \"gevent\"\nworker_connections = 25\nworkers = 1\n";
    let app = AppDir::new(&[("app.py", APP), ("gunicorn.conf.py", conf)]);
    let (toml, _) = import_gunicorn(app.path(), "gunicorn.conf.py");
    assert!(
        toml.contains("gevent = true") && toml.contains("concurrency = 25"),
        "{toml}"
    );
    // Over the worker's socket rather than the shared-memory rings (as on
    // machines that have no rings): the socket's reads and writes yield to
    // the other greenlets too.
    let toml = toml.replacen("[workers]\n", "[workers]\nshared_memory = false\n", 1);
    assert!(toml.contains("shared_memory = false"), "{toml}");
    std::fs::write(app.path().join("corral.toml"), toml).unwrap();
    // The converted file serves as gunicorn did: 25 at once.
    let c = Corral::start(
        app.path(),
        &[
            "-c",
            "corral.toml",
            "app:app",
            "-b",
            "127.0.0.1:0",
            "--status-bind",
            "127.0.0.1:0",
        ],
        1,
    );
    let upload = echo_in_background(&c.addr, 1 << 20);
    let answers = at_once(&c.addr, "/wait?1", 30);
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    assert_eq!(c.get("/max").text(), "25", "{}", c.log.text());
    assert_eq!(upload.join().unwrap(), (200, true));
    // /status says how the worker runs its requests and what it holds.
    let status = c.status_json();
    let w = &status["slots"][0]["worker"];
    assert_eq!(
        (
            &w["interface"],
            &w["gevent"],
            &w["capacity"],
            &w["transport"]
        ),
        (&json!("wsgi"), &json!(true), &json!(25), &json!("socket")),
        "{status:#}"
    );
}

/// An app that does gevent's monkey-patching itself when it is imported
/// (`monkey.patch_all()` at the top of its wsgi.py, as gevent apps do;
/// with `thread=False` as grequests does), counting its requests inside at
/// once as APP does.
fn self_patching_app(patch: &str) -> String {
    format!(
        "from gevent import monkey\nmonkey.{patch}\n{}",
        APP.replace("from gevent import monkey\n", "")
    )
}

#[test]
fn an_app_that_monkey_patches_itself_runs_in_greenlets_without_k_gevent() {
    // Threads made before the app's patching would block one another on
    // the channel's real locks: corral's worker moves to greenlets.
    let app = AppDir::new(&[("app.py", &self_patching_app("patch_all()"))]);
    let c = Corral::start(
        app.path(),
        &["app:app", "-w", "1", "--status-bind", "127.0.0.1:0"],
        1,
    );
    c.log
        .wait_for(
            "the app did gevent's monkey-patching when it was imported: its requests run in \
             gevent's greenlets, as under -k gevent",
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("{}", c.log.text()));
    let answers = at_once(&c.addr, "/wait?1", 8);
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    assert_eq!(c.get("/max").text(), "8", "{}", c.log.text());
    let body: Vec<u8> = (0..1 << 20).map(|i| (i * 3 % 251) as u8).collect();
    let r = request(&c.addr, "POST", "/echo", &[], &body);
    assert!(r.status == 200 && r.body == body, "{}", r.status);
    let status = c.status_json();
    assert_eq!(status["slots"][0]["worker"]["gevent"], json!(true));
    // `corral check` says so too.
    let py = python();
    let (code, stdout, stderr) = run_to_exit(app.path(), &["check", "app:app", "--python", &py]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("(WSGI app in gevent's greenlets; worker booted in"),
        "{stdout}"
    );

    // Patched without threading (grequests' way): threads stay threads,
    // 2 of them here.
    let app = AppDir::new(&[(
        "app.py",
        &self_patching_app("patch_all(thread=False, select=False)"),
    )]);
    let c = Corral::start(
        app.path(),
        &[
            "app:app",
            "-w",
            "1",
            "--threads",
            "2",
            "--status-bind",
            "127.0.0.1:0",
        ],
        1,
    );
    let answers = at_once(&c.addr, "/wait?1", 4);
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    assert_eq!(c.get("/max").text(), "2", "{}", c.log.text());
    let status = c.status_json();
    assert_eq!(status["slots"][0]["worker"]["gevent"], json!(false));
    assert!(
        !c.log
            .text()
            .contains("monkey-patching when it was imported")
    );
}

#[test]
fn an_app_that_does_eventlets_monkey_patching_fails_its_boot_with_the_reason() {
    // Flask-SocketIO's eventlet set-up: eventlet.monkey_patch() at the top.
    let app = AppDir::new(&[(
        "app.py",
        "import eventlet\neventlet.monkey_patch()\n\ndef app(environ, start_response):\n    start_response(\"200 OK\", [])\n    return [b\"ok\"]\n",
    )]);
    let py = python();
    let (code, stdout, stderr) = run_to_exit(app.path(), &["check", "app:app", "--python", &py]);
    let out = format!("{stdout}{stderr}");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(
            "the app did eventlet's monkey-patching when it was imported \
             (eventlet.monkey_patch()): corral's workers do not run under eventlet"
        ),
        "{out}"
    );
}
