//! corral under the APM wrappers gunicorn is run with, which exec the
//! server they are given with their `sitecustomize` on `PYTHONPATH`:
//! `opentelemetry-instrument corral app:app`, `ddtrace-run corral ...`,
//! `newrelic-admin run-program corral ...`, and sentry-sdk set up in the
//! app. Each test runs the real wrapper around the real corral binary, the
//! real packages in its workers, and reads what the tracer sent: the
//! console exporter's spans in corral's log, New Relic's audit log of what
//! it would have sent, and a stand-in on loopback
//! (`tests/apps/apm/collector.py`) for an OTLP collector, the Datadog
//! agent and Sentry, which the real clients send to over a real socket.
//! gunicorn runs under the same wrapper in the same test where that is
//! cheap. Spans are held back (batch delays of 10 minutes) so that what
//! arrives was sent as the worker exited: a graceful stop, a fast stop, a
//! `max_requests` recycle and a reload each flush them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::compare::{Reference, free_port};
use crate::common::{AppDir, Corral, python, reload_wait, repo};

/// corral serving `args` from `dir`, run by `wrapper` with `env`, once
/// `workers` workers are in service.
fn corral_under(
    wrapper: &str,
    dir: &Path,
    args: &[&str],
    env: &[(&'static str, String)],
    workers: usize,
) -> Corral {
    let mut c = Corral::spawn_under(&[&venv_bin(wrapper)], dir, args, &pairs(env));
    c.wait_listening();
    c.wait_in_service(workers);
    c
}

/// gunicorn with one worker serving `app` from `dir`, run by `wrapper`
/// (`opentelemetry-instrument`, `ddtrace-run`) with `env`.
fn gunicorn_under(wrapper: &str, dir: &Path, env: Vec<(&'static str, String)>) -> Reference {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(venv_bin(wrapper));
    cmd.arg(venv_bin("gunicorn"))
        .args(["app:app", "-w", "1", "-b", &addr])
        .current_dir(dir)
        .envs(env);
    Reference::start("gunicorn", cmd, addr, Duration::from_secs(30))
}

/// `otel_env` with OTLP over HTTP to `collector`.
fn otlp_env(collector: &Collector) -> Vec<(&'static str, String)> {
    let mut env = otel_env("otlp_proto_http");
    env.push((
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        format!("{}/v1/traces", collector.url()),
    ));
    env
}

/// A program of the test virtualenv's, beside its `python`.
fn venv_bin(name: &str) -> String {
    let python = python();
    match Path::new(&python).parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(name).display().to_string(),
        _ => name.to_string(),
    }
}

/// The stand-in for an OTLP collector, the Datadog agent and Sentry
/// (`tests/apps/apm/collector.py`): every request it gets, decoded, one
/// JSON value each. Killed on drop.
struct Collector {
    child: Child,
    out: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Collector {
    fn start() -> Collector {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("received.jsonl");
        let port_file = dir.path().join("port");
        let child = Command::new(python())
            .arg(repo("tests/apps/apm/collector.py"))
            .arg(&out)
            .arg(&port_file)
            .stdin(Stdio::null())
            .spawn()
            .expect("start the collector stand-in");
        let mut c = Collector {
            child,
            out,
            port: 0,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.port == 0 {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                c.port = p.trim().parse().unwrap();
                break;
            }
            assert!(Instant::now() < deadline, "the collector never listened");
            assert!(
                c.child.try_wait().unwrap().is_none(),
                "the collector exited"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        c
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request received so far.
    fn received(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            .filter(|l| l.ends_with('}'))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Every span received so far (OTLP's or Datadog's).
    fn spans(&self) -> Vec<Value> {
        let received = self.received();
        for r in &received {
            assert!(r.get("error").is_none(), "could not decode: {r}");
        }
        received
            .iter()
            .filter_map(|r| r["spans"].as_array())
            .flatten()
            .cloned()
            .collect()
    }

    /// Waits (at most 20 s) until `ok` holds of the spans received;
    /// returns them.
    fn wait_spans(&self, what: &str, ok: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans = self.spans();
            if ok(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; received:\n{:#?}",
                self.received()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const FLASK_APP: &str = r#"
import os
from flask import Flask

app = Flask(__name__)

@app.route("/users/<name>")
def user(name):
    return "%s %d" % (name, os.getpid())

@app.route("/boom")
def boom():
    raise RuntimeError("boom in %d" % os.getpid())
"#;

/// OpenTelemetry's settings for the tests: spans held back 10 minutes
/// (only an exit flushes them), the worker's pid in each span's resource.
fn otel_env(exporter: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_TRACES_EXPORTER", exporter.to_string()),
        ("OTEL_METRICS_EXPORTER", "none".into()),
        ("OTEL_LOGS_EXPORTER", "none".into()),
        ("OTEL_SERVICE_NAME", "shop".into()),
        ("OTEL_BSP_SCHEDULE_DELAY", "600000".into()),
        (
            "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS",
            "otel,process".into(),
        ),
    ]
}

fn pairs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The JSON objects the console exporter printed in each worker, from
/// corral's log: the lines each worker wrote to stdout (`worker 0 (pid
/// 123) stdout: ...`), put back together per pid.
fn console_spans(log: &str) -> BTreeMap<u32, Vec<Value>> {
    let mut text: BTreeMap<u32, String> = BTreeMap::new();
    for line in log.lines() {
        let Some((head, printed)) = line.split_once(") stdout: ") else {
            continue;
        };
        let pid = head.rsplit("(pid ").next().unwrap().parse().unwrap();
        let t = text.entry(pid).or_default();
        t.push_str(printed);
        t.push('\n');
    }
    text.into_iter()
        .map(|(pid, t)| {
            let spans = serde_json::Deserializer::from_str(&t)
                .into_iter::<Value>()
                .collect::<Result<Vec<_>, _>>()
                .unwrap_or_else(|e| panic!("worker {pid} printed no JSON ({e}):\n{t}"));
            (pid, spans)
        })
        .collect()
}

/// An OTLP span's attributes, or a console span's.
fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

#[test]
fn opentelemetry_instrument_traces_each_worker_and_the_last_spans_leave_at_a_graceful_stop() {
    let app = AppDir::new(&[("app.py", FLASK_APP)]);
    let env = otel_env("console");
    let mut c = corral_under(
        "opentelemetry-instrument",
        app.path(),
        &["app:app", "-w", "2"],
        &env,
        2,
    );
    // Behind a proxy corral trusts (loopback, by default), the client is
    // the one X-Forwarded-For names.
    let mut pids = std::collections::BTreeSet::new();
    for i in 0..40 {
        let r = crate::common::request(
            &c.addr,
            "GET",
            &format!("/users/u{i}"),
            &[("X-Forwarded-For", "203.0.113.9")],
            b"",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        pids.insert(r.text().rsplit(' ').next().unwrap().parse::<u32>().unwrap());
        if pids.len() == 2 && i >= 3 {
            break;
        }
    }
    assert_eq!(pids.len(), 2, "both workers served");
    assert_eq!(c.get("/boom").status, 500);
    // Nothing before the stop: the batch processor holds the spans.
    std::thread::sleep(Duration::from_millis(300));
    assert!(console_spans(&c.log.text()).is_empty(), "{}", c.log.text());
    c.signal(libc::SIGTERM);
    let st = c.wait_exit(Duration::from_secs(30)).expect("corral stops");
    assert!(st.success(), "{st}");

    let by_pid = console_spans(&c.log.text());
    assert_eq!(
        by_pid
            .keys()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        pids,
        "each worker's spans, sent as it exited; log:\n{}",
        c.log.text()
    );
    let mut users = 0;
    let mut boom = 0;
    for (pid, spans) in &by_pid {
        for span in spans {
            // The tracer provider each worker's sitecustomize made, in
            // that worker (no fork: no post_fork set-up needed).
            assert_eq!(span["resource"]["attributes"]["process.pid"], *pid);
            assert_eq!(span["resource"]["attributes"]["service.name"], "shop");
            assert_eq!(span["kind"], "SpanKind.SERVER", "{span:#}");
            assert_eq!(attr(span, "http.method"), "GET");
            assert_eq!(attr(span, "http.scheme"), "http");
            // SERVER_PORT: the Host header's (its scheme's default here),
            // where gunicorn gives the port it listens on (see below).
            assert_eq!(attr(span, "net.host.port"), 80);
            assert_eq!(attr(span, "http.host"), "localhost");
            let target = attr(span, "http.target").as_str().unwrap();
            if target == "/boom" {
                boom += 1;
                assert_eq!(attr(span, "http.status_code"), 500);
                assert_eq!(attr(span, "http.route"), "/boom");
                assert_eq!(span["status"]["status_code"], "ERROR", "{span:#}");
                assert_eq!(attr(span, "net.peer.ip"), "127.0.0.1");
            } else {
                users += 1;
                assert!(target.starts_with("/users/u"), "{span:#}");
                assert_eq!(span["name"], "GET /users/<name>");
                assert_eq!(attr(span, "http.route"), "/users/<name>");
                assert_eq!(attr(span, "http.status_code"), 200);
                assert_eq!(attr(span, "net.peer.ip"), "203.0.113.9");
            }
        }
    }
    assert_eq!(boom, 1);
    assert!(users >= 4, "{by_pid:#?}");

    // gunicorn under the same wrapper, its spans sent over OTLP: the same
    // attributes, but the client is the proxy (gunicorn reads only the
    // scheme from X-Forwarded-*).
    let collector = Collector::start();
    let mut g = gunicorn_under("opentelemetry-instrument", app.path(), otlp_env(&collector));
    let r = crate::common::request(
        &g.addr,
        "GET",
        "/users/g",
        &[("X-Forwarded-For", "203.0.113.9")],
        b"",
    );
    assert_eq!(r.status, 200);
    g.stop(libc::SIGTERM, Duration::from_secs(30))
        .expect("gunicorn stops");
    let theirs = collector.wait_spans("gunicorn's span", |s| !s.is_empty());
    let theirs = &theirs[0];
    let ours = &by_pid
        .values()
        .flatten()
        .find(|s| attr(s, "http.target") != "/boom")
        .unwrap();
    let keys = |s: &Value| -> std::collections::BTreeSet<String> {
        s["attributes"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(
        keys(ours),
        keys(theirs),
        "ours: {ours:#}\ngunicorn's: {theirs:#}"
    );
    assert_eq!(attr(theirs, "http.route"), "/users/<name>");
    assert_eq!(attr(theirs, "net.peer.ip"), "127.0.0.1");
    let gport: u16 = g.addr.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(attr(theirs, "net.host.port"), gport);
}

#[test]
fn with_env_allow_the_wrapper_reaches_the_workers_only_through_pythonpath() {
    // [app] env_allow passes only what it names: the wrapper's
    // sitecustomize comes through PYTHONPATH, its settings through OTEL_*.
    for (allow, traced) in [
        (r#"["PATH", "PYTHONPATH", "OTEL_*"]"#, true),
        (r#"["PATH", "OTEL_*"]"#, false),
    ] {
        let toml = format!(
            "[app]\nmodule = \"app:app\"\nenv_allow = {allow}\n[server]\nbind = [\"127.0.0.1:0\"]\n"
        );
        let app = AppDir::new(&[("app.py", FLASK_APP), ("corral.toml", &toml)]);
        let env = otel_env("console");
        let mut c = corral_under(
            "opentelemetry-instrument",
            app.path(),
            &["-c", "corral.toml"],
            &env,
            1,
        );
        assert_eq!(c.get("/users/allowed").status, 200);
        c.signal(libc::SIGTERM);
        assert!(c.wait_exit(Duration::from_secs(30)).unwrap().success());
        let spans: Vec<Value> = console_spans(&c.log.text())
            .into_values()
            .flatten()
            .collect();
        assert_eq!(
            spans
                .iter()
                .any(|s| attr(s, "http.target") == "/users/allowed"),
            traced,
            "env_allow = {allow}; log:\n{}",
            c.log.text()
        );
    }
}

/// An ASGI app traced by OpenTelemetry's ASGI middleware, as a
/// framework's instrumentation does it; it answers its pid.
const OTEL_ASGI_APP: &str = r#"
import os
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

async def answer(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = str(os.getpid()).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

app = OpenTelemetryMiddleware(answer)
"#;

/// The server spans received, by the pid in their resource, each as its
/// `http.target`.
fn server_targets(spans: &[Value]) -> BTreeMap<i64, Vec<String>> {
    let mut out: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    // OTLP's SPAN_KIND_SERVER.
    for s in spans.iter().filter(|s| s["kind"] == 2) {
        let pid = s["resource"]["process.pid"].as_i64().unwrap();
        let target = attr(s, "http.target").as_str().unwrap_or("").to_string();
        out.entry(pid).or_default().push(target);
    }
    out
}

fn pid_of(c: &Corral, path: &str) -> i64 {
    let r = c.get(path);
    assert_eq!(r.status, 200, "{}", r.text());
    r.text().parse().unwrap()
}

#[test]
fn otlp_spans_leave_each_worker_that_max_requests_a_reload_or_a_stop_ends() {
    let collector = Collector::start();
    let app = AppDir::new(&[("app.py", OTEL_ASGI_APP)]);
    let env = otlp_env(&collector);
    let mut c = corral_under(
        "opentelemetry-instrument",
        app.path(),
        &["app:app", "-w", "1", "--max-requests", "2"],
        &env,
        1,
    );
    let port = c.addr.rsplit(':').next().unwrap().to_string();

    // The second request recycles the worker: its spans leave as it exits.
    let first = pid_of(&c, "/recycled/1");
    assert_eq!(pid_of(&c, "/recycled/2"), first);
    let spans = collector.wait_spans("the recycled worker's spans", |s| {
        server_targets(s).get(&first).is_some_and(|t| t.len() == 2)
    });
    for s in spans.iter().filter(|s| s["kind"] == 2) {
        assert_eq!(attr(s, "http.method"), "GET", "{s:#}");
        assert_eq!(attr(s, "http.status_code"), 200, "{s:#}");
        assert_eq!(attr(s, "net.host.port").to_string(), port, "{s:#}");
        assert_eq!(attr(s, "net.peer.ip"), "127.0.0.1", "{s:#}");
        assert_eq!(s["resource"]["service.name"], "shop");
    }

    // A reload ends the next one (in service before the first exited).
    let second = pid_of(&c, "/reloaded");
    assert_ne!(second, first);
    let (code, out) = reload_wait(&c);
    assert_eq!(code, Some(0), "{out}");
    collector.wait_spans("the reloaded worker's span", |s| {
        server_targets(s).get(&second).map(Vec::as_slice) == Some(&["/reloaded".to_string()])
    });

    // A graceful stop ends the last.
    let third = pid_of(&c, "/stopped");
    assert!(third != first && third != second);
    c.signal(libc::SIGTERM);
    assert!(c.wait_exit(Duration::from_secs(30)).unwrap().success());
    let spans = collector.wait_spans("the stopped worker's span", |s| {
        server_targets(s).contains_key(&third)
    });
    assert_eq!(
        server_targets(&spans).values().flatten().count(),
        4,
        "each request's span once: {:#?}",
        server_targets(&spans)
    );
}

#[test]
fn a_fast_stop_sends_the_spans_the_workers_hold_as_gunicorns_does() {
    // SIGINT (Ctrl-C) and SIGQUIT stop the workers at once, as gunicorn's
    // do; gunicorn's workers leave through sys.exit, which runs the atexit
    // handlers where OpenTelemetry's batch processor sends what it holds.
    for (app_py, sig) in [(FLASK_APP, libc::SIGINT), (OTEL_ASGI_APP, libc::SIGQUIT)] {
        let collector = Collector::start();
        let app = AppDir::new(&[("app.py", app_py)]);
        let env = otlp_env(&collector);
        let mut c = corral_under(
            "opentelemetry-instrument",
            app.path(),
            &["app:app", "-w", "1"],
            &env,
            1,
        );
        assert_eq!(c.get("/users/fast").status, 200);
        c.signal(sig);
        assert!(c.wait_exit(Duration::from_secs(30)).is_some());
        collector.wait_spans(&format!("the span, after signal {sig}"), |s| {
            s.iter().any(|s| attr(s, "http.target") == "/users/fast")
        });
    }
    // gunicorn, under the same wrapper, on the same app.
    let collector = Collector::start();
    let app = AppDir::new(&[("app.py", FLASK_APP)]);
    let mut g = gunicorn_under("opentelemetry-instrument", app.path(), otlp_env(&collector));
    assert_eq!(
        crate::common::request(&g.addr, "GET", "/users/fast", &[], b"").status,
        200
    );
    g.stop(libc::SIGINT, Duration::from_secs(30))
        .expect("gunicorn stops");
    collector.wait_spans("gunicorn's span", |s| {
        s.iter().any(|s| attr(s, "http.target") == "/users/fast")
    });
}

/// The Datadog agent's settings for the tests: its traces to the stand-in,
/// held back 10 minutes (only an exit sends them).
fn datadog_env(collector: &Collector) -> Vec<(&'static str, String)> {
    vec![
        ("DD_TRACE_AGENT_URL", collector.url()),
        ("DD_SERVICE", "shop".into()),
        ("DD_ENV", "test".into()),
        ("DD_TRACE_WRITER_INTERVAL_SECONDS", "600".into()),
        ("DD_INSTRUMENTATION_TELEMETRY_ENABLED", "false".into()),
        ("DD_REMOTE_CONFIGURATION_ENABLED", "false".into()),
    ]
}

/// The root spans of the Datadog traces received (a Flask request's), by
/// the pid of the process that sent them.
fn datadog_roots(spans: &[Value]) -> BTreeMap<i64, Vec<Value>> {
    let mut out: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    for s in spans.iter().filter(|s| s["parent_id"] == 0) {
        let pid = s["metrics"]["process_id"].as_f64().unwrap() as i64;
        out.entry(pid).or_default().push(s.clone());
    }
    out
}

#[test]
fn ddtrace_run_traces_each_worker_to_the_agent_and_the_last_traces_leave_at_a_stop() {
    let collector = Collector::start();
    let app = AppDir::new(&[("app.py", FLASK_APP)]);
    let env = datadog_env(&collector);
    let mut c = corral_under("ddtrace-run", app.path(), &["app:app", "-w", "2"], &env, 2);
    let mut pids = std::collections::BTreeSet::new();
    for i in 0..40 {
        let r = c.get(&format!("/users/u{i}"));
        assert_eq!(r.status, 200, "{}", r.text());
        pids.insert(r.text().rsplit(' ').next().unwrap().parse::<i64>().unwrap());
        if pids.len() == 2 && i >= 3 {
            break;
        }
    }
    assert_eq!(pids.len(), 2, "both workers served");
    assert_eq!(c.get("/boom").status, 500);
    std::thread::sleep(Duration::from_millis(300));
    assert!(collector.spans().is_empty(), "the writer holds the traces");
    c.signal(libc::SIGTERM);
    assert!(c.wait_exit(Duration::from_secs(30)).unwrap().success());

    let spans = collector.wait_spans("each worker's traces", |s| {
        datadog_roots(s)
            .keys()
            .copied()
            .collect::<std::collections::BTreeSet<_>>()
            == pids
    });
    let roots = datadog_roots(&spans);
    let mut boom = 0;
    for span in roots.values().flatten() {
        assert_eq!(span["name"], "flask.request", "{span:#}");
        assert_eq!(span["service"], "shop");
        assert_eq!(span["type"], "web");
        let meta = &span["meta"];
        assert_eq!(meta["env"], "test");
        assert_eq!(meta["http.method"], "GET");
        assert_eq!(meta["span.kind"], "server");
        let url = meta["http.url"].as_str().unwrap();
        if url.ends_with("/boom") {
            boom += 1;
            assert_eq!(span["resource"], "GET /boom");
            assert_eq!(span["error"], 1);
            assert_eq!(meta["http.status_code"], "500");
            // The exception, on the span of the trace that raised it.
            let raised = spans
                .iter()
                .find(|s| s["trace_id"] == span["trace_id"] && !s["meta"]["error.type"].is_null())
                .unwrap_or_else(|| panic!("no span with the error: {spans:#?}"));
            assert_eq!(raised["meta"]["error.type"], "builtins.RuntimeError");
            assert!(
                raised["meta"]["error.message"]
                    .as_str()
                    .unwrap()
                    .starts_with("boom in "),
                "{raised:#}"
            );
        } else {
            assert!(url.starts_with("http://localhost/users/u"), "{span:#}");
            assert_eq!(span["resource"], "GET /users/<name>");
            assert_eq!(meta["http.route"], "/users/<name>");
            assert_eq!(meta["http.status_code"], "200");
        }
    }
    assert_eq!(boom, 1, "{roots:#?}");

    // gunicorn under the same wrapper: the same HTTP tags.
    let theirs_collector = Collector::start();
    let mut g = gunicorn_under("ddtrace-run", app.path(), datadog_env(&theirs_collector));
    let r = crate::common::request(&g.addr, "GET", "/users/g", &[], b"");
    assert_eq!(r.status, 200);
    g.stop(libc::SIGTERM, Duration::from_secs(30))
        .expect("gunicorn stops");
    let theirs = theirs_collector.wait_spans("gunicorn's trace", |s| !datadog_roots(s).is_empty());
    let theirs = datadog_roots(&theirs)
        .into_values()
        .flatten()
        .next()
        .unwrap();
    let ours = roots
        .values()
        .flatten()
        .find(|s| s["resource"] == "GET /users/<name>")
        .unwrap();
    let http_tags = |s: &Value| -> std::collections::BTreeSet<String> {
        s["meta"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with("http.") || k.starts_with("flask.") || *k == "component")
            .cloned()
            .collect()
    };
    assert_eq!(
        http_tags(ours),
        http_tags(&theirs),
        "ours: {ours:#}\ngunicorn's: {theirs:#}"
    );
    assert_eq!(theirs["resource"], "GET /users/<name>");
}

/// A Flask app that answers the service ddtrace gives its spans.
const DD_SERVICE_APP: &str = r#"
import ddtrace
from flask import Flask

app = Flask(__name__)

@app.route("/service")
def service():
    return str(ddtrace.config.service)
"#;

#[test]
fn ddtrace_without_dd_service_names_the_service_corral_not_the_private_folder() {
    // ddtrace names the service after the folder of the script the
    // process runs; corral's private folder has a new random name at
    // every start, which would make every start a new service.
    let collector = Collector::start();
    let app = AppDir::new(&[("app.py", DD_SERVICE_APP)]);
    let env: Vec<_> = datadog_env(&collector)
        .into_iter()
        .filter(|(k, _)| *k != "DD_SERVICE")
        .collect();
    let mut c = corral_under("ddtrace-run", app.path(), &["app:app", "-w", "1"], &env, 1);
    let r = c.get("/service");
    assert_eq!((r.status, r.text().as_str()), (200, "corral"));
    c.signal(libc::SIGTERM);
    assert!(c.wait_exit(Duration::from_secs(30)).unwrap().success());
    let spans = collector.wait_spans("the trace", |s| !datadog_roots(s).is_empty());
    let root = datadog_roots(&spans)
        .into_values()
        .flatten()
        .next()
        .unwrap();
    assert_eq!(root["meta"]["_dd.base_service"], "corral", "{root:#}");
}

/// What New Relic's agent, in developer mode (no licence key, no
/// network), would have sent: its audit log, in the app's folder.
const NEW_RELIC_AUDIT: &str = "newrelic-audit.log";

#[test]
fn newrelic_admin_run_program_records_each_workers_transactions_and_errors() {
    let app = AppDir::new(&[("app.py", FLASK_APP)]);
    let audit = app.path().join(NEW_RELIC_AUDIT);
    let audit_env = audit.display().to_string();
    let mut c = Corral::spawn_under(
        &[&venv_bin("newrelic-admin"), "run-program"],
        app.path(),
        &["app:app", "-w", "2"],
        &[
            ("NEW_RELIC_DEVELOPER_MODE", "true"),
            ("NEW_RELIC_APP_NAME", "shop"),
            ("NEW_RELIC_AUDIT_LOG", &audit_env),
            // A worker's first requests wait for the agent to register
            // (with the fake collector) instead of going unrecorded.
            ("NEW_RELIC_STARTUP_TIMEOUT", "10"),
        ],
    );
    c.wait_listening();
    c.wait_in_service(2);
    let mut pids = std::collections::BTreeSet::new();
    for i in 0..40 {
        let r = c.get(&format!("/users/u{i}"));
        assert_eq!(r.status, 200, "{}", r.text());
        pids.insert(r.text().rsplit(' ').next().unwrap().to_string());
        if pids.len() == 2 {
            break;
        }
    }
    assert_eq!(pids.len(), 2, "both workers served");
    assert_eq!(c.get("/boom").status, 500);
    c.signal(libc::SIGTERM);
    assert!(c.wait_exit(Duration::from_secs(30)).unwrap().success());

    // Each worker's agent harvested as it exited and said goodbye.
    let text = std::fs::read_to_string(&audit).expect("the agent's audit log");
    let records: Vec<&str> = text.split("\n=====").collect();
    for pid in &pids {
        let sent = |method: &str| {
            records.iter().any(|r| {
                r.contains(&format!("PID: {pid}\n")) && r.contains(&format!("'method': '{method}'"))
            })
        };
        for method in ["analytic_event_data", "metric_data", "shutdown"] {
            assert!(sent(method), "worker {pid} sent no {method}:\n{text}");
        }
    }
    for expected in [
        "'name': 'WebTransaction/Function/app:user'",
        "'request.method': 'GET'",
        "'request.uri': '/users/u0'",
        "'http.statusCode': 200",
        "'name': 'WebTransaction/Function/app:boom'",
        "'error.class': 'builtins:RuntimeError'",
        "'http.statusCode': 500",
    ] {
        assert!(text.contains(expected), "no {expected} in:\n{text}");
    }
}

/// sentry-sdk set up in the app, its DSN the stand-in: Flask's integration
/// (on by itself) and the ASGI middleware.
const SENTRY_FLASK_APP: &str = r#"
import os
import sentry_sdk
from flask import Flask

sentry_sdk.init(dsn=os.environ["SENTRY_DSN"], traces_sample_rate=1.0)
app = Flask(__name__)

@app.route("/users/<name>")
def user(name):
    return "%s %d" % (name, os.getpid())

@app.route("/boom")
def boom():
    raise RuntimeError("boom in %d" % os.getpid())
"#;

const SENTRY_ASGI_APP: &str = r#"
import os
import sentry_sdk
from sentry_sdk.integrations.asgi import SentryAsgiMiddleware

sentry_sdk.init(dsn=os.environ["SENTRY_DSN"], traces_sample_rate=1.0)

async def answer(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/boom":
        raise RuntimeError("boom in %d" % os.getpid())
    body = b"ok"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": body})

app = SentryAsgiMiddleware(answer)
"#;

/// The envelope items of `kind` ("event", "span") received; a span
/// item's spans (sentry-sdk 3 streams spans, where 2 sent transactions).
fn sentry_items(collector: &Collector, kind: &str) -> Vec<Value> {
    collector
        .received()
        .iter()
        .filter_map(|r| r["envelope"]["items"].as_array())
        .flatten()
        .filter(|i| i["header"]["type"] == kind)
        .flat_map(|i| match i["payload"]["items"].as_array() {
            Some(items) if kind == "span" => items.clone(),
            _ => vec![i["payload"].clone()],
        })
        .collect()
}

/// Whether a streamed span is the server's for a request to `path`.
fn sentry_span_for(span: &Value, path: &str) -> bool {
    span["attributes"]["url.full"]["value"]
        .as_str()
        .is_some_and(|u| u.ends_with(path))
        && span["attributes"]["http.request.method"]["value"] == "GET"
}

#[test]
fn sentry_captures_errors_and_request_spans_in_corrals_workers() {
    for app_py in [SENTRY_FLASK_APP, SENTRY_ASGI_APP] {
        let collector = Collector::start();
        let app = AppDir::new(&[("app.py", app_py)]);
        let dsn = format!("http://public@127.0.0.1:{}/1", collector.port);
        let mut c = Corral::spawn(app.path(), &["app:app", "-w", "1"], &[("SENTRY_DSN", &dsn)]);
        c.wait_listening();
        c.wait_in_service(1);
        assert_eq!(c.get("/users/bob").status, 200);
        assert_eq!(c.get("/boom").status, 500);
        c.signal(libc::SIGTERM);
        assert!(c.wait_exit(Duration::from_secs(30)).unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(20);
        while sentry_items(&collector, "event").is_empty()
            || !sentry_items(&collector, "span")
                .iter()
                .any(|s| sentry_span_for(s, "/users/bob"))
        {
            assert!(
                Instant::now() < deadline,
                "no error event and request span; received:\n{:#?}",
                collector.received()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let events = sentry_items(&collector, "event");
        assert_eq!(events.len(), 1, "{events:#?}");
        let exception = &events[0]["exception"]["values"][0];
        assert_eq!(exception["type"], "RuntimeError", "{:#}", events[0]);
        assert!(exception["value"].as_str().unwrap().starts_with("boom in "));
        let url = events[0]["request"]["url"].as_str().unwrap();
        assert!(url.ends_with("/boom"), "{:#}", events[0]);
        let spans = sentry_items(&collector, "span");
        let span = spans
            .iter()
            .find(|s| sentry_span_for(s, "/users/bob"))
            .unwrap();
        let attrs = &span["attributes"];
        assert_eq!(attrs["http.response.status_code"]["value"], 200, "{span:#}");
        assert_eq!(attrs["client.address"]["value"], "127.0.0.1", "{span:#}");
    }
}
