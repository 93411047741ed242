//! What an operator watches: request ids from the client to the log, and
//! /metrics read with the official Prometheus parser.

use crate::common::*;
use std::process::Command;
use std::time::{Duration, Instant};

const APP: &str = r#"
import json, os, time

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/hang":
        time.sleep(60)
    if path == "/slow":
        time.sleep(0.5)
    if path == "/die":
        os._exit(1)
    body = json.dumps({
        "id": environ.get("HTTP_X_REQUEST_ID"),
        "traceparent": environ.get("HTTP_TRACEPARENT"),
        "pid": os.getpid(),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
"#;

/// A W3C trace context, which corral passes on as it came.
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn seen(r: &Response) -> (String, String) {
    let j = r.json();
    let s = |k: &str| j[k].as_str().unwrap_or("").to_string();
    (s("id"), s("traceparent"))
}

/// The JSON access line of the request with this id.
fn access_line(c: &Corral, id: &str) -> serde_json::Value {
    let needle = format!("\"request_id\":\"{id}\"");
    let line = c
        .log
        .wait_for(&needle, Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no access line with {needle}:\n{}", c.log.text()));
    let json = &line[line.find('{').expect("a JSON object")..];
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[test]
fn request_ids_are_made_or_kept_from_a_trusted_proxy_and_reach_app_response_and_logs() {
    let app = AppDir::new(&[("app.py", APP)]);
    // 127.0.0.1, where the test connects from, is a trusted proxy.
    let c = Corral::start(
        app.path(),
        &[
            "app:app",
            "-w",
            "1",
            "--timeout",
            "1s",
            "--access-log",
            "json",
            "--forwarded-allow-ips",
            "127.0.0.1",
        ],
        1,
    );
    // None sent: corral makes one; two requests, two ids.
    let r = request(&c.addr, "GET", "/", &[("traceparent", TRACEPARENT)], b"");
    let made = r
        .header("x-request-id")
        .expect("an X-Request-ID")
        .to_string();
    assert_eq!(made.len(), 16, "{made}");
    assert_eq!(seen(&r), (made.clone(), TRACEPARENT.to_string()));
    let line = access_line(&c, &made);
    assert_eq!(line["status"], 200);
    assert!(line["queue_ms"].as_f64().is_some(), "{line}");
    assert_eq!(line["worker_slot"], 0);
    assert_eq!(line["worker_pid"], r.json()["pid"]);
    assert_eq!(line["generation"], 1);
    let again = c.get("/");
    assert_ne!(again.header("x-request-id"), Some(made.as_str()));

    // From the trusted proxy: kept.
    let r = request(&c.addr, "GET", "/", &[("X-Request-ID", "edge-42.a")], b"");
    assert_eq!(r.header("x-request-id"), Some("edge-42.a"));
    assert_eq!(seen(&r).0, "edge-42.a");
    access_line(&c, "edge-42.a");

    // A 504: its log line names the request.
    let r = request(&c.addr, "GET", "/hang", &[("X-Request-ID", "hung-1")], b"");
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.header("x-request-id"), Some("hung-1"));
    let line = c
        .log
        .wait_for("exceeded the timeout", Duration::from_secs(5))
        .expect("a timeout line");
    assert!(line.contains("request hung-1 GET /hang"), "{line}");
    assert!(
        c.log
            .wait_for(
                "before it is killed (request hung-1",
                Duration::from_secs(10)
            )
            .is_some(),
        "the stack dump does not name the request:\n{}",
        c.log.text()
    );
    drop(c);

    // Not from a trusted proxy: the client's id is replaced.
    let c = Corral::start(
        app.path(),
        &["app:app", "-w", "1", "--forwarded-allow-ips", "10.0.0.1"],
        1,
    );
    let r = request(&c.addr, "GET", "/", &[("X-Request-ID", "forged")], b"");
    let id = r
        .header("x-request-id")
        .expect("an X-Request-ID")
        .to_string();
    assert_ne!(id, "forged");
    assert_eq!(seen(&r).0, id);
}

/// /metrics, parsed by prometheus_client: one JSON object per family with
/// its type and samples.
fn scrape(c: &Corral) -> serde_json::Value {
    let text = c.status("/metrics").text();
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    out[f.name] = {"type": f.type,
                   "samples": [[s.name, s.labels, s.value] for s in f.samples]}
print(json.dumps(out))
"#;
    let mut child = Command::new(python())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("parser");
    assert!(
        out.status.success(),
        "prometheus_client refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("parser output")
}

/// The value of `name`'s sample whose labels include `labels`.
fn sample(m: &serde_json::Value, family: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let f = m
        .get(family)
        .unwrap_or_else(|| panic!("no family {family}"));
    f["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s[0] == name && labels.iter().all(|(k, v)| s[1][*k].as_str() == Some(*v)))
        .unwrap_or_else(|| panic!("no {name}{labels:?} in {f}"))[2]
        .as_f64()
        .unwrap()
}

fn kind(m: &serde_json::Value, family: &str) -> String {
    m[family]["type"].as_str().unwrap_or("missing").to_string()
}

/// Scrapes until `family`'s sample `name{labels}` passes `ok`, or panics
/// after 20 s; returns that scrape.
fn wait_metric(
    c: &Corral,
    family: &str,
    name: &str,
    labels: &[(&str, &str)],
    ok: impl Fn(f64) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = scrape(c);
        if m.get(family).is_some() && ok(sample(&m, family, name, labels)) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{labels:?} never got there: {}",
            m.get(family).map(|f| f.to_string()).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn metrics_parse_with_prometheus_client_and_move_with_their_events() {
    let app = AppDir::new(&[("app.py", APP)]);
    let c = Corral::start(
        app.path(),
        &[
            "app:app",
            "-w",
            "2",
            "--threads",
            "1",
            "--status-bind",
            "127.0.0.1:0",
        ],
        2,
    );
    let m = scrape(&c);
    for (family, type_) in [
        ("process_cpu_seconds", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
        ("corral_build_info", "gauge"),
        ("corral_generation", "gauge"),
        ("corral_reloads", "counter"),
        ("corral_rollback_hook_runs", "counter"),
        ("corral_revision_drift", "gauge"),
        ("corral_queue_wait_seconds", "histogram"),
        ("corral_gateway_errors", "counter"),
        ("corral_requests_dispatched", "counter"),
        ("corral_request_body_bytes", "counter"),
        ("corral_response_body_bytes", "counter"),
        ("corral_worker_state", "gauge"),
        ("corral_worker_requests", "counter"),
        ("corral_worker_in_flight", "gauge"),
        ("corral_worker_resident_memory_bytes", "gauge"),
        ("corral_worker_cpu_seconds", "counter"),
        ("corral_slot_restarts", "counter"),
    ] {
        assert_eq!(kind(&m, family), type_, "{family}");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = sample(
        &m,
        "process_start_time_seconds",
        "process_start_time_seconds",
        &[],
    );
    assert!(
        started <= now && started > now - 120.0,
        "{started} vs {now}"
    );
    assert!(
        sample(
            &m,
            "process_resident_memory_bytes",
            "process_resident_memory_bytes",
            &[]
        ) > 1e6
    );
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        sample(
            &m,
            "corral_build_info",
            "corral_build_info",
            &[("version", version)]
        ),
        1.0
    );
    assert_eq!(
        sample(&m, "corral_generation", "corral_generation", &[]),
        1.0
    );
    assert_eq!(
        sample(&m, "corral_revision_drift", "corral_revision_drift", &[]),
        0.0
    );
    // One series per slot, labelled with its generation.
    for slot in ["0", "1"] {
        let at = [("slot", slot), ("generation", "1")];
        let state = [("slot", slot), ("generation", "1"), ("state", "in_service")];
        assert_eq!(
            sample(&m, "corral_worker_state", "corral_worker_state", &state),
            1.0
        );
        let rss = "corral_worker_resident_memory_bytes";
        assert!(sample(&m, rss, rss, &at) > 1e6);
        let cpu = "corral_worker_cpu_seconds_total";
        assert!(sample(&m, "corral_worker_cpu_seconds", cpu, &at) > 0.0);
    }

    // Bodies both ways are counted, and the request by its protocol and
    // interface.
    let dispatched = |m: &serde_json::Value, protocol, interface| {
        let at = [("protocol", protocol), ("interface", interface)];
        sample(
            m,
            "corral_requests_dispatched",
            "corral_requests_dispatched_total",
            &at,
        )
    };
    let before = dispatched(&m, "HTTP/1.1", "wsgi");
    let body = vec![b'x'; 3000];
    let r = request(&c.addr, "POST", "/", &[], &body);
    assert_eq!(r.status, 200);
    let m = scrape(&c);
    assert_eq!(dispatched(&m, "HTTP/1.1", "wsgi"), before + 1.0);
    assert_eq!(dispatched(&m, "WebSocket", "asgi"), 0.0);
    let req_bytes = "corral_request_body_bytes_total";
    assert!(sample(&m, "corral_request_body_bytes", req_bytes, &[]) >= 3000.0);
    let resp_bytes = "corral_response_body_bytes_total";
    assert!(sample(&m, "corral_response_body_bytes", resp_bytes, &[]) >= r.body.len() as f64);
    let served: f64 = ["0", "1"]
        .iter()
        .map(|s| {
            let at = [("slot", *s), ("generation", "1")];
            sample(
                &m,
                "corral_worker_requests",
                "corral_worker_requests_total",
                &at,
            )
        })
        .sum();
    assert!(served >= 1.0, "{served}");

    // Requests that wait in corral for a worker: each worker, once it is
    // timed as slow, holds two (one running, one next); six at once leave
    // two waiting.
    let queue = "corral_queue_wait_seconds";
    let waited_before = sample(&m, queue, "corral_queue_wait_seconds_sum", &[]);
    let warm: Vec<_> = (0..2)
        .map(|_| {
            let addr = c.addr.clone();
            std::thread::spawn(move || request(&addr, "GET", "/slow", &[], b"").status)
        })
        .collect();
    for t in warm {
        assert_eq!(t.join().unwrap(), 200);
    }
    let burst: Vec<_> = (0..6)
        .map(|_| {
            let addr = c.addr.clone();
            std::thread::spawn(move || request(&addr, "GET", "/slow", &[], b"").status)
        })
        .collect();
    for t in burst {
        assert_eq!(t.join().unwrap(), 200);
    }
    let m = scrape(&c);
    let waited = sample(&m, queue, "corral_queue_wait_seconds_sum", &[]) - waited_before;
    assert!(waited > 0.8, "the burst waited {waited} s in corral");
    let count = sample(&m, queue, "corral_queue_wait_seconds_count", &[]);
    let quick = sample(
        &m,
        queue,
        "corral_queue_wait_seconds_bucket",
        &[("le", "0.25")],
    );
    assert!(
        count - quick >= 2.0,
        "{quick} of {count} waited under 0.25 s"
    );

    // A worker that dies mid-request: a 502 by cause, a restart in its slot.
    let r = c.get("/die");
    assert_eq!(r.status, 502, "{}", r.text());
    let m = wait_metric(
        &c,
        "corral_worker_restarts",
        "corral_worker_restarts_total",
        &[],
        |n| n >= 1.0,
    );
    let died = [("status", "502"), ("cause", "worker_died")];
    assert_eq!(
        sample(
            &m,
            "corral_gateway_errors",
            "corral_gateway_errors_total",
            &died
        ),
        1.0
    );
    let restarts: f64 = ["0", "1"]
        .iter()
        .map(|s| {
            sample(
                &m,
                "corral_slot_restarts",
                "corral_slot_restarts_total",
                &[("slot", s)],
            )
        })
        .sum();
    assert_eq!(restarts, 1.0);
    c.wait_in_service(2);

    // A reload that works, then one that fails.
    let reloads = |outcome| [("outcome", outcome)];
    assert_eq!(
        sample(&m, "corral_reloads", "corral_reloads_total", &reloads("ok")),
        0.0
    );
    assert!(m.get("corral_last_reload_timestamp_seconds").is_none());
    c.signal(libc::SIGHUP);
    let m = wait_metric(
        &c,
        "corral_reloads",
        "corral_reloads_total",
        &reloads("ok"),
        |n| n == 1.0,
    );
    assert_eq!(
        sample(&m, "corral_generation", "corral_generation", &[]),
        2.0
    );
    let at = sample(
        &m,
        "corral_last_reload_timestamp_seconds",
        "corral_last_reload_timestamp_seconds",
        &[],
    );
    assert!(at >= now, "{at} vs {now}");
    // Replacing both workers for the reload is no restart: the count is
    // still the one death above, and an alert on it fires for crashes,
    // not for deploys.
    assert_eq!(
        sample(
            &m,
            "corral_worker_restarts",
            "corral_worker_restarts_total",
            &[]
        ),
        1.0
    );
    std::fs::write(app.path().join("app.py"), "def app(environ:\n").unwrap();
    c.signal(libc::SIGHUP);
    let m = wait_metric(
        &c,
        "corral_reloads",
        "corral_reloads_total",
        &reloads("failed"),
        |n| n == 1.0,
    );
    assert_eq!(
        sample(&m, "corral_reloads", "corral_reloads_total", &reloads("ok")),
        1.0
    );
    assert_eq!(
        sample(&m, "corral_generation", "corral_generation", &[]),
        2.0
    );
}

/// The metric names in a PromQL expression: its words that start like
/// corral's and the process metrics.
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("corral_") || w.starts_with("process_"))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_grafana_dashboard_and_alert_rules_name_only_metrics_that_exist() {
    let dashboard = std::fs::read_to_string(repo("integration/grafana/corral-dashboard.json"))
        .expect("the dashboard");
    let dashboard: serde_json::Value =
        serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().expect("targets").iter())
        .map(|t| t["expr"].as_str().expect("an expr").to_string())
        .collect();
    for list in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = list["definition"].as_str() {
            exprs.push(q.to_string());
        }
    }
    // Alert rules: each `expr:`, on its line or in the block under it.
    let alerts = std::fs::read_to_string(repo("integration/grafana/corral-alerts.yml"))
        .expect("the alert rules");
    let mut rules = 0;
    let mut lines = alerts.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.trim().strip_prefix("expr:") {
            rules += 1;
            let mut expr = rest.to_string();
            while let Some(next) = lines.peek() {
                if next.trim_start().len() + 10 <= next.len() && !next.trim().ends_with(':') {
                    expr.push_str(next);
                    lines.next();
                } else {
                    break;
                }
            }
            exprs.push(expr);
        }
    }
    assert!(rules >= 4, "{rules} alert rules");
    assert!(exprs.len() >= 20, "{} expressions", exprs.len());

    // A corral with a reload behind it, so every family has samples.
    let app = AppDir::new(&[("app.py", APP)]);
    let c = Corral::start(
        app.path(),
        &["app:app", "-w", "1", "--status-bind", "127.0.0.1:0"],
        1,
    );
    c.signal(libc::SIGHUP);
    let m = wait_metric(
        &c,
        "corral_reloads",
        "corral_reloads_total",
        &[("outcome", "ok")],
        |n| n == 1.0,
    );
    let mut known = std::collections::HashSet::new();
    for (family, f) in m.as_object().unwrap() {
        known.insert(family.clone());
        // A counter with no sample yet (no rollback hook has run) is
        // declared all the same.
        if f["type"] == "counter" {
            known.insert(format!("{family}_total"));
        }
        for s in f["samples"].as_array().unwrap() {
            known.insert(s[0].as_str().unwrap().to_string());
        }
    }
    let mut named = 0;
    for expr in &exprs {
        for name in metric_names(expr) {
            named += 1;
            assert!(
                known.contains(&name),
                "{name} (in {expr}) is not in /metrics"
            );
        }
    }
    assert!(
        named >= exprs.len(),
        "{named} names in {} expressions",
        exprs.len()
    );
}
