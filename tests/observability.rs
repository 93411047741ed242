//! What an operator watches: request ids from the client to the log, and
//! /metrics read with the official Prometheus parser.

mod common;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

const APP: &str = r#"
import json, os, time

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/hang":
        time.sleep(60)
    if path == "/slow":
        time.sleep(1)
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
