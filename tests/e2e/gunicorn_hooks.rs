//! gunicorn's worker hooks (`post_fork`, `post_worker_init`, `pre_request`,
//! `post_request`, `worker_int`, `worker_abort`, `worker_exit`) run in
//! corral's workers,
//! from the gunicorn.conf.py itself, at the points of a worker's life where
//! gunicorn's workers run them; a failing `post_fork` fails the boot with
//! its traceback. The arbiter hooks (`on_starting`, `when_ready`,
//! `on_reload`, `nworkers_changed`, `child_exit`, `on_exit`) run in one
//! Python process of their own beside the workers
//! (prometheus_client's `child_exit` recipe); OpenTelemetry's documented
//! `post_fork` set-up traces each worker.

use crate::common::*;
use crate::gunicorn_compat::{import_gunicorn, run_to_exit};
use crate::hooks::METRICS_APP;

use std::path::Path;
use std::time::{Duration, Instant};

/// Answers what the hooks left in the worker: the variable `post_fork` set
/// and the attribute `post_worker_init` put on the app; `/pid` its pid.
const HOOKED_APP: &str = r#"
import os

def app(environ, start_response):
    if environ["PATH_INFO"] == "/pid":
        body = str(os.getpid())
    else:
        body = "forked=%s init=%s pid=%d" % (
            os.environ.get("FORKED"), getattr(app, "initialised", None), os.getpid())
    body = body.encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"#;

/// A gunicorn.conf.py with every worker hook, as projects write them (the
/// log lines of gunicorn's example config), and one arbiter hook.
const HOOKS_CONF: &str = r#"
import os
workers = 2

def post_fork(server, worker):
    os.environ["FORKED"] = "%d/%d" % (worker.pid, server.pid)
    server.log.info("Worker spawned (pid: %s)", worker.pid)

def post_worker_init(worker):
    worker.wsgi.initialised = worker.pid

def pre_request(worker, req):
    if req.path == "/refused":
        raise PermissionError("pre_request refused " + req.path)
    worker.log.info("pre_request %s %s query=%s", req.method, req.path, req.query)

def post_request(worker, req, environ, resp):
    worker.log.info("post_request %s %s sent=%s", req.path, resp.status_code, resp.sent)

def worker_int(worker):
    worker.log.info("worker_int %s", worker.pid)

def worker_exit(server, worker):
    with open(os.path.join(os.path.dirname(__file__), "exits.txt"), "a") as f:
        f.write("%d\n" % worker.pid)

def pre_exec(server):
    pass
"#;

/// The pids `worker_exit` wrote into the app folder's exits.txt.
fn exits(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("exits.txt"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

fn wait_for_exits(dir: &Path, n: usize) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let pids = exits(dir);
        if pids.len() >= n || Instant::now() > deadline {
            return pids;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn gunicorns_worker_hooks_run_in_each_worker_where_gunicorn_runs_them() {
    let app = AppDir::new(&[("app.py", HOOKED_APP), ("gunicorn.conf.py", HOOKS_CONF)]);
    // `corral app:app` where `gunicorn app:app` ran, the file in the folder.
    let mut c = Corral::start(app.path(), &["app:app"], 2);
    let log = c.log.text();
    assert!(
        log.contains("gunicorn.conf.py's post_fork, post_worker_init, worker_int, pre_request, post_request, worker_exit run in each worker"),
        "{log}"
    );
    assert!(
        log.contains("not carried over: pre_exec: is a function"),
        "{log}"
    );
    assert!(!log.contains("not carried over: post_fork"), "{log}");

    // post_fork ran in the worker, before the app's import, with the
    // worker's and corral's pids; post_worker_init after it.
    let body = c.get("/").text();
    let pid: u32 = body.rsplit("pid=").next().unwrap().parse().unwrap();
    assert_eq!(
        body,
        format!("forked={pid}/{} init={pid} pid={pid}", c.pid()),
        "{}",
        c.log.text()
    );
    assert!(
        c.log.has(&format!("[INFO] Worker spawned (pid: {pid})")),
        "server.log.info reaches corral's log: {}",
        c.log.text()
    );

    // pre_request and post_request around each request.
    let hello = c.get("/hello?x=1");
    assert_eq!(hello.status, 200);
    c.log
        .wait_for("pre_request GET /hello query=x=1", Duration::from_secs(10))
        .expect("pre_request ran");
    c.log
        .wait_for(
            &format!("post_request /hello 200 sent={}", hello.body.len()),
            Duration::from_secs(10),
        )
        .expect("post_request ran");
    // An exception in pre_request answers 500, as under gunicorn, and
    // post_request still runs.
    let r = c.get("/refused");
    assert_eq!(r.status, 500, "{}", r.text());
    c.log
        .wait_for(
            "PermissionError: pre_request refused /refused",
            Duration::from_secs(10),
        )
        .expect("the traceback is logged");
    c.log
        .wait_for("post_request /refused None sent=0", Duration::from_secs(10))
        .expect("post_request ran after the refusal");

    // SIGQUIT: worker_int, then worker_exit, and a replacement.
    let quit = c.worker_pid("/pid");
    // SAFETY: signalling a worker of the corral this test started.
    unsafe { libc::kill(quit as i32, libc::SIGQUIT) };
    c.log
        .wait_for(&format!("worker_int {quit}"), Duration::from_secs(10))
        .expect("worker_int ran");
    assert_eq!(wait_for_exits(app.path(), 1), [quit]);
    c.wait_until("a replacement", || {
        c.log.count("all 2 workers in service") >= 2
    });

    // A graceful stop: worker_exit in each worker, after its requests.
    c.signal(libc::SIGTERM);
    assert!(c.wait_exit(Duration::from_secs(30)).is_some());
    let exited = wait_for_exits(app.path(), 3);
    assert_eq!(exited.len(), 3, "{exited:?}\n{}", c.log.text());
    assert_eq!(exited.iter().filter(|p| **p == quit).count(), 1);
}

const ASGI_APP: &str = r#"
import os

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = ("forked=%s" % os.environ.get("FORKED")).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
"#;

#[test]
fn asgi_workers_run_the_hooks_gunicorns_uvicorn_worker_runs_and_a_failing_hook_fails_the_boot() {
    let conf = r#"
import os
workers = 1
def post_fork(server, worker):
    os.environ["FORKED"] = "asgi"
def pre_request(worker, req):
    worker.log.info("pre_request ran")
def worker_exit(server, worker):
    with open(os.path.join(os.path.dirname(__file__), "exits.txt"), "a") as f:
        f.write("%d\n" % worker.pid)
"#;
    let bad = "def post_worker_init(worker):\n    raise RuntimeError(\"no database at boot\")\n";
    let app = AppDir::new(&[("app.py", ASGI_APP), ("hooks.py", conf), ("bad.py", bad)]);
    let mut c = Corral::start(
        app.path(),
        &["app:app", "-c", "hooks.py", "-b", "127.0.0.1:0"],
        1,
    );
    assert_eq!(c.get("/").text(), "forked=asgi");
    // gunicorn's uvicorn worker calls no pre_request, and neither does corral.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !c.log.text().contains("pre_request ran"),
        "{}",
        c.log.text()
    );
    c.signal(libc::SIGTERM);
    assert!(c.wait_exit(Duration::from_secs(30)).is_some());
    assert_eq!(wait_for_exits(app.path(), 1).len(), 1, "{}", c.log.text());

    // `corral check` shows the hook's traceback, from the hook's own line.
    let (code, stdout, stderr) = run_to_exit(app.path(), &["check", "app:app", "-c", "bad.py"]);
    assert_ne!(code, Some(0), "{stdout}{stderr}");
    let out = format!("{stdout}{stderr}");
    assert!(out.contains("FAILED: app:app does not boot"), "{out}");
    assert!(
        out.contains("bad.py\", line 2, in post_worker_init"),
        "{out}"
    );
    assert!(out.contains("RuntimeError: no database at boot"), "{out}");

    // Workers that run as root never run a file someone else may change.
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        std::fs::write(
            app.path().join("corral.toml"),
            "[app]\ngunicorn_hooks = \"hooks.py\"\n",
        )
        .unwrap();
        let path = app.path().join("hooks.py");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .unwrap();
        let (code, _, stderr) = run_to_exit(app.path(), &["app:app"]);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(
            stderr.contains("refusing app.gunicorn_hooks")
                && stderr.contains("group or others may write to it (mode 0666)"),
            "{stderr}"
        );
        // So is an env file (its PYTHONPATH would reach root's workers).
        std::fs::write(
            app.path().join("corral.toml"),
            "[app]\nenv_file = \"app.env\"\n",
        )
        .unwrap();
        let env = app.path().join("app.env");
        std::fs::write(&env, "COLOR=red\n").unwrap();
        std::fs::set_permissions(&env, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .unwrap();
        let (code, _, stderr) = run_to_exit(app.path(), &["app:app"]);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(
            stderr.contains("refusing app.env_file")
                && stderr.contains("group or others may write to it (mode 0666)"),
            "{stderr}"
        );
    }
}

#[test]
fn a_python_module_configs_hooks_keep_its_relative_imports_through_import_gunicorn() {
    // `gunicorn -c python:config.gunicorn`, the hook using its package.
    let conf = "import os\nfrom .base import GREETING\nworkers = 1\n\ndef post_fork(server, worker):\n    os.environ[\"FORKED\"] = GREETING\n";
    let app = AppDir::new(&[
        ("app.py", HOOKED_APP),
        ("config/__init__.py", ""),
        ("config/base.py", "GREETING = 'from-base'\n"),
        ("config/gunicorn.py", conf),
    ]);
    let c = Corral::start(
        app.path(),
        &[
            "app:app",
            "-c",
            "python:config.gunicorn",
            "-b",
            "127.0.0.1:0",
        ],
        1,
    );
    assert!(
        c.get("/").text().starts_with("forked=from-base "),
        "{}",
        c.log.text()
    );
    drop(c);
    // import-gunicorn writes the key; the corral.toml it printed serves the
    // same.
    let (stdout, _) = import_gunicorn(app.path(), "python:config.gunicorn");
    assert!(
        stdout.contains("gunicorn_hooks = \"python:config.gunicorn\""),
        "{stdout}"
    );
    std::fs::write(app.path().join("corral.toml"), stdout).unwrap();
    let c = Corral::start(app.path(), &["app:app"], 1);
    assert!(
        c.get("/").text().starts_with("forked=from-base "),
        "{}",
        c.log.text()
    );
}

/// prometheus_client's documented gunicorn set-up, as its docs give it.
const PROMETHEUS_CONF: &str = r#"
from prometheus_client import multiprocess

workers = 1

def child_exit(server, worker):
    server.log.info("child_exit %s (slot %s) seen by %s", worker.pid, worker.age, server.pid)
    multiprocess.mark_process_dead(worker.pid)
"#;

#[test]
fn prometheus_clients_child_exit_recipe_runs_after_each_worker_exit_as_it_is() {
    let app = AppDir::new(&[
        ("app.py", METRICS_APP),
        ("gunicorn.conf.py", PROMETHEUS_CONF),
    ]);
    let metrics_dir = app.path().join("prometheus");
    std::fs::create_dir(&metrics_dir).unwrap();
    let dir = metrics_dir.display().to_string();
    let mut c = Corral::spawn(
        app.path(),
        &["app:app"],
        &[("PROMETHEUS_MULTIPROC_DIR", dir.as_str())],
    );
    c.wait_listening();
    c.wait_in_service(1);
    assert!(
        c.log.has(
            "gunicorn.conf.py's child_exit runs in a Python process of corral's beside the workers"
        ),
        "{}",
        c.log.text()
    );
    let pid = c.get("/hit").text();
    let live = metrics_dir.join(format!("gauge_livesum_{pid}.db"));
    assert!(
        live.exists(),
        "prometheus_client wrote no {}",
        live.display()
    );
    assert!(c.get("/metrics").text().contains("demo_busy 1.0"));

    // SAFETY: killing a worker of the corral this test started.
    unsafe { libc::kill(pid.parse().unwrap(), libc::SIGKILL) };
    c.wait_until("child_exit to remove the dead worker's gauge", || {
        !live.exists()
    });
    c.log
        .wait_for(
            &format!("child_exit {pid} (slot 0) seen by {}", c.pid()),
            Duration::from_secs(10),
        )
        .expect("the hook's log line");
    c.wait_until("a new worker", || {
        let now = c.get("/hit").text();
        now.parse::<u32>().is_ok() && now != pid
    });
    let after = c.get("/metrics").text();
    assert!(after.contains("demo_busy 1.0"), "the new worker's: {after}");
}

/// OpenTelemetry's documented gunicorn set-up: the tracer provider and its
/// batch processor (a thread) started in post_fork, with the console
/// exporter in place of OTLP (no collector here).
const OTEL_CONF: &str = r#"
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

workers = 2

def post_fork(server, worker):
    server.log.info("Worker spawned (pid: %s)", worker.pid)
    resource = Resource.create(attributes={"service.name": "api-service"})
    trace.set_tracer_provider(TracerProvider(resource=resource))
    span_processor = BatchSpanProcessor(ConsoleSpanExporter(), schedule_delay_millis=100)
    trace.get_tracer_provider().add_span_processor(span_processor)
"#;

const OTEL_APP: &str = r#"
import os
from opentelemetry import trace

tracer = trace.get_tracer(__name__)

def app(environ, start_response):
    with tracer.start_as_current_span("handle " + environ["PATH_INFO"]) as span:
        span.set_attribute("served.by", os.getpid())
        body = str(os.getpid()).encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
"#;

#[test]
fn opentelemetrys_documented_post_fork_set_up_traces_each_worker() {
    let app = AppDir::new(&[("app.py", OTEL_APP), ("gunicorn.conf.py", OTEL_CONF)]);
    let c = Corral::start(app.path(), &["app:app"], 2);
    let mut pids = std::collections::BTreeSet::new();
    for i in 0..40 {
        pids.insert(c.get(&format!("/traced-{i}")).text());
        if pids.len() == 2 {
            break;
        }
    }
    assert_eq!(pids.len(), 2, "both workers served");
    // Each worker's batch processor thread exported its spans, with the
    // resource post_fork gave its provider.
    for pid in &pids {
        c.log
            .wait_for(&format!("\"served.by\": {pid}"), Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no span from worker {pid}; log:\n{}", c.log.text()));
    }
    c.log.has("\"name\": \"handle /traced-0\"");
    let log = c.log.text();
    assert!(log.contains("\"name\": \"handle /traced-0\""), "{log}");
    assert!(log.contains("\"service.name\": \"api-service\""), "{log}");
}

/// gunicorn's arbiter hooks as projects use them: on_starting prepares
/// what the workers read, when_ready starts a metrics server in the
/// arbiter (PostHog's gunicorn config does), the others log.
const ARBITER_CONF: &str = r#"
import os, threading
from http.server import BaseHTTPRequestHandler, HTTPServer

workers = 1
HERE = os.path.dirname(os.path.abspath(__file__))
state = {"exits": 0}

def on_starting(server):
    with open(os.path.join(HERE, "prepared.txt"), "w") as f:
        f.write("by on_starting in %d" % os.getpid())

def when_ready(server):
    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self):
            body = ("arbiter %d saw %d exits" % (os.getpid(), state["exits"])).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    httpd = HTTPServer(("127.0.0.1", 0), Metrics)
    with open(os.path.join(HERE, "metrics_port.txt"), "w") as f:
        f.write(str(httpd.server_address[1]))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    server.log.info("when_ready: %s workers, metrics on %s", server.num_workers, httpd.server_address[1])

def on_reload(server):
    server.log.info("on_reload in %d", os.getpid())

def nworkers_changed(server, new_value, old_value):
    server.log.info("nworkers_changed %s -> %s", old_value, new_value)

def child_exit(server, worker):
    state["exits"] += 1
    server.log.info("child_exit %s code %s", worker.pid, worker.exitcode)

def on_exit(server):
    with open(os.path.join(HERE, "on_exit.txt"), "w") as f:
        f.write("exits %d" % state["exits"])
"#;

/// Answers what on_starting prepared before the worker started, and its pid.
const PREPARED_APP: &str = r#"
import os

PREPARED = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "prepared.txt")).read()

def app(environ, start_response):
    body = ("%s; worker %d" % (PREPARED, os.getpid())).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"#;

fn corral_says(c: &Corral, args: &[&str]) -> String {
    let out = std::process::Command::new(corral_bin())
        .args(args)
        .args(["--socket", c.socket.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "corral {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn gunicorns_arbiter_hooks_run_in_one_process_beside_the_workers() {
    let app = AppDir::new(&[("app.py", PREPARED_APP), ("gunicorn.conf.py", ARBITER_CONF)]);
    let mut c = Corral::start(app.path(), &["app:app"], 1);
    // on_starting ran before the worker imported the app, in a process
    // that is neither corral nor the worker.
    let body = c.get("/").text();
    let (prepared, worker) = body.split_once("; worker ").unwrap();
    let arbiter: u32 = prepared
        .strip_prefix("by on_starting in ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        arbiter != c.pid() && arbiter.to_string() != worker,
        "{body}"
    );
    assert!(
        c.log.has(
            "gunicorn.conf.py's on_starting, on_reload, when_ready, child_exit, nworkers_changed, on_exit run in a Python process of corral's beside the workers"
        ),
        "{}",
        c.log.text()
    );
    // when_ready started a server that lives on in that process.
    c.log
        .wait_for("when_ready: 1 workers, metrics on", Duration::from_secs(10))
        .expect("when_ready ran");
    let port = std::fs::read_to_string(app.path().join("metrics_port.txt")).unwrap();
    let metrics = |c: &Corral| {
        let r = request(&format!("127.0.0.1:{port}"), "GET", "/", &[], b"");
        assert_eq!(r.status, 200, "{}", c.log.text());
        r.text()
    };
    assert_eq!(metrics(&c), format!("arbiter {arbiter} saw 0 exits"));

    // A killed worker: child_exit, in the same process (its state counts).
    // SAFETY: killing a worker of the corral this test started.
    unsafe { libc::kill(worker.parse().unwrap(), libc::SIGKILL) };
    c.log
        .wait_for(
            &format!("child_exit {worker} code -9"),
            Duration::from_secs(10),
        )
        .expect("child_exit ran");
    assert_eq!(metrics(&c), format!("arbiter {arbiter} saw 1 exits"));
    c.wait_until("a new worker", || {
        c.log.count("all 1 workers in service") >= 2
    });

    // Scaled: nworkers_changed; reloaded: on_reload, and no second when_ready.
    corral_says(&c, &["scale", "2"]);
    c.log
        .wait_for("nworkers_changed 1 -> 2", Duration::from_secs(10))
        .expect("nworkers_changed ran");
    corral_says(&c, &["reload", "--wait"]);
    c.log
        .wait_for(&format!("on_reload in {arbiter}"), Duration::from_secs(10))
        .expect("on_reload ran");
    assert_eq!(c.log.count("when_ready: "), 1, "{}", c.log.text());

    // A stop: on_exit, after the workers' exits, then the process is gone.
    c.signal(libc::SIGTERM);
    assert!(c.wait_exit(Duration::from_secs(30)).is_some());
    let on_exit = std::fs::read_to_string(app.path().join("on_exit.txt")).unwrap_or_default();
    let exits: u32 = on_exit
        .strip_prefix("exits ")
        .unwrap_or_else(|| panic!("on_exit ran: {on_exit:?}\n{}", c.log.text()))
        .parse()
        .unwrap();
    // The killed one, the generation-1 pair the reload replaced, the two
    // stopped last.
    assert!(exits >= 4, "{on_exit}\n{}", c.log.text());
    assert!(
        wait_gone(&[arbiter], Duration::from_secs(5)),
        "the arbiter process is gone"
    );
}

#[test]
fn worker_abort_runs_in_a_worker_past_its_timeout_after_its_stacks_are_logged() {
    let conf = "workers = 1\ntimeout = 1\n\ndef worker_abort(worker):\n    worker.log.info(\"worker_abort %s alive=%s\", worker.pid, worker.alive)\n";
    let app_py = "import os, time\n\ndef app(environ, start_response):\n    if environ[\"PATH_INFO\"] == \"/hang\":\n        time.sleep(30)\n    body = str(os.getpid()).encode()\n    start_response(\"200 OK\", [(\"Content-Length\", str(len(body)))])\n    return [body]\n";
    let app = AppDir::new(&[("app.py", app_py), ("hooks.py", conf)]);
    let c = Corral::start(
        app.path(),
        &["app:app", "-c", "hooks.py", "-b", "127.0.0.1:0"],
        1,
    );
    let pid = c.worker_pid("/");
    assert_eq!(c.get("/hang").status, 504);
    c.log
        .wait_for(
            &format!("worker_abort {pid} alive=False"),
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("worker_abort did not run; log:\n{}", c.log.text()));
    // The stacks were dumped before the hook ran: the main thread was
    // still waiting, not in the hook (corral logs them at the kill).
    c.log
        .wait_for(
            &format!("Python stacks of worker 0 (pid {pid})"),
            Duration::from_secs(10),
        )
        .expect("the stacks are logged");
    c.wait_until("the dump to be logged whole", || {
        c.log.text().contains("line 5 in app")
    });
    let log = c.log.text();
    let dump = &log[log.find("Python stacks of worker 0").unwrap()..];
    assert!(!dump.contains("in worker_abort"), "{log}");
}

/// corral's peak RSS (VmHWM) in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn a_hooks_file_that_floods_corrals_channel_is_cut_off_and_the_workers_start() {
    // The hooks' process runs the app's code: a file that writes 32 MiB
    // without a newline onto the channel (fd 3) where the process names
    // its hooks must cost corral no more than the line's bound.
    let conf = r#"
import os
workers = 1
def on_starting(server):
    chunk = b"x" * (1 << 20)
    for _ in range(32):
        os.write(3, chunk)
def when_ready(server):
    pass
"#;
    let app = AppDir::new(&[("app.py", HOOKED_APP), ("hooks.py", conf)]);
    let c = Corral::start(
        app.path(),
        &["app:app", "-c", "hooks.py", "-b", "127.0.0.1:0"],
        1,
    );
    c.log
        .wait_for(
            "the process said more than 65536 bytes without a newline",
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("{}", c.log.text()));
    assert_eq!(c.get("/pid").status, 200);
    let peak = peak_rss_kib(c.pid());
    assert!(
        peak < 24 * 1024,
        "corral's peak RSS {peak} KiB: it held the flood\n{}",
        c.log.text()
    );
    // The process was killed, not left blocked on its write.
    let hooks_processes = || {
        children_of(c.pid())
            .into_iter()
            .filter(|k| {
                std::fs::read_to_string(format!("/proc/{k}/cmdline"))
                    .unwrap_or_default()
                    .contains("gunicorn-hooks")
            })
            .count()
    };
    c.wait_until("the hooks' process to be gone", || hooks_processes() == 0);
}

/// Hooks read settings from `server.cfg`, as from gunicorn's Config:
/// what corral runs with (the command line over the file, as gunicorn's
/// does), the file's own, and gunicorn's defaults for the rest. A
/// `post_fork` reading `server.cfg.timeout` once failed every boot when
/// the file did not set it. `cfg.proc_name` is the file's `proc_name`
/// (`-n`), as corral names the workers, not the instance's name.
#[test]
fn hooks_read_settings_from_cfg_as_gunicorn_gives_them() {
    let conf = r#"
workers = 1
raw_env = ["A=1"]
proc_name = "shop"

def show(cfg):
    return "timeout=%s workers=%s class=%s loglevel=%s bind=%s raw_env=%s proc_name=%s" % (
        cfg.timeout, cfg.workers, cfg.worker_class_str, cfg.loglevel, cfg.bind, cfg.raw_env,
        cfg.proc_name)

def on_starting(server):
    server.log.info("on_starting %s server.proc_name=%s", show(server.cfg), server.proc_name)

def post_fork(server, worker):
    server.log.info("post_fork %s", show(worker.cfg))
"#;
    let app = AppDir::new(&[("app.py", HOOKED_APP), ("gunicorn.conf.py", conf)]);
    let c = Corral::start(
        app.path(),
        &["app:app", "-w", "2", "--timeout", "45", "--threads", "3"],
        2,
    );
    let want = "timeout=45 workers=2 class=gthread loglevel=info";
    for hook in ["on_starting", "post_fork"] {
        let line = c
            .log
            .wait_for(&format!("{hook} timeout="), Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{hook} did not run; log:\n{}", c.log.text()));
        assert!(line.contains(want), "{line}");
        // As configured (the harness binds port 0), as gunicorn's cfg.bind.
        assert!(line.contains("bind=['127.0.0.1:0']"), "{line}");
        assert!(line.contains("raw_env=['A=1']"), "{line}");
        assert!(line.contains("proc_name=shop"), "{line}");
    }
    let line = c.log.text();
    assert!(line.contains("server.proc_name=shop"), "{line}");
    assert_eq!(c.get("/pid").status, 200);
}
