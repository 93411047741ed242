//! The status server (/health/live, /health/ready, /status, /metrics),
//! `corral status`, `corral check`, and readiness probes through the
//! worker's private channel.

use crate::common::*;
use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

const APP: &str = r#"
import os

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/health/ready":
        ok = os.path.exists("ready")
        if not ok and os.path.exists("moved"):
            start_response("302 Found", [("Location", "/login")])
            return [b""]
        start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
        return [b"ready" if ok else b"database is down"]
    if path == "/boom":
        raise RuntimeError("boom")
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"#;

/// A minimal Prometheus text-format parser: every sample line is
/// `name{labels} value`, every family has HELP and TYPE before its samples.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().unwrap();
            let kind = parts.next().unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let name = key.split('{').next().unwrap();
        if let Some(labels) = key.strip_prefix(name)
            && !labels.is_empty()
        {
            assert!(
                labels.starts_with('{') && labels.ends_with('}'),
                "bad labels: {line}"
            );
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(typed.contains(family), "sample before its TYPE: {line}");
        samples.insert(key.to_string(), value);
    }
    samples
}

#[test]
fn status_server_reports_health_status_and_metrics() {
    let app = AppDir::new(&[("app.py", APP), ("ready", "")]);
    let c = Corral::start(
        app.path(),
        &["app:app", "-w", "2", "--status-bind", "127.0.0.1:0"],
        2,
    );
    assert_eq!(c.status("/health/live").status, 200);
    let r = c.status("/health/ready");
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        (v["ready"].as_bool(), v["in_service"].as_u64()),
        (Some(true), Some(2))
    );

    for _ in 0..10 {
        assert_eq!(c.get("/").status, 200);
    }
    assert_eq!(c.get("/boom").status, 500);
    let s = c.status_json();
    assert_eq!(s["supervisor"]["pid"].as_u64(), Some(c.pid() as u64));
    assert!(s["supervisor"]["version"].is_string());
    assert!(s["supervisor"]["uptime_seconds"].as_f64().unwrap() >= 0.0);
    let slots = s["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 2);
    let mut served = 0;
    let workers: Vec<u32> = children_of(c.pid());
    for slot in slots {
        let w = &slot["worker"];
        assert_eq!(w["state"], "in_service");
        assert!(workers.contains(&(w["pid"].as_u64().unwrap() as u32)));
        assert!(w["boot_ms"].as_f64().unwrap() > 0.0);
        assert!(w["rss_bytes"].as_u64().unwrap() > 1 << 20);
        assert_eq!(w["in_flight"], 0);
        served += w["requests"].as_u64().unwrap();
        assert!(slot["restarts"].is_u64() && slot.get("last_exit").is_some());
    }
    assert_eq!(served, 11, "requests served, as counted per worker");

    let m = c.status("/metrics");
    assert_eq!(m.status, 200);
    assert!(
        m.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let samples = parse_metrics(&m.text());
    assert_eq!(samples["corral_requests_total{class=\"2xx\"}"], 10.0);
    assert_eq!(samples["corral_requests_total{class=\"5xx\"}"], 1.0);
    assert_eq!(samples["corral_request_duration_seconds_count"], 11.0);
    assert_eq!(
        samples["corral_request_duration_seconds_bucket{le=\"+Inf\"}"],
        11.0
    );
    assert_eq!(samples["corral_workers{state=\"in_service\"}"], 2.0);
    assert_eq!(samples["corral_boot_failures_total"], 0.0);
    assert!(samples.contains_key("corral_worker_restarts_total"));
    assert!(samples.contains_key("corral_probe_failures_total"));

    // `corral status` prints the same as a table, and as JSON.
    let out = Command::new(corral_bin())
        .args(["status", "--status-bind", &c.status_addr])
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("ready: yes"), "{table}");
    assert!(table.contains("in_service"), "{table}");
    assert!(table.contains("INFL/CAP"), "{table}");
    for w in &workers {
        assert!(table.contains(&w.to_string()), "{table}");
    }
    let out = Command::new(corral_bin())
        .args(["status", "--json", "--status-bind", &c.status_addr])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["workers"]["in_service"], 2);
    assert_eq!(v["slots"][0]["worker"]["interface"], "wsgi");
}

/// While the first generation boots (a slow Django or ML import), /status
/// shows corral and its booting workers. Before, it showed an empty
/// supervisor, pid 0 and no slot, until a worker's first report:
/// monitoring read pid 0, and `corral status` said nothing of what booted.
#[test]
fn status_shows_the_first_generation_while_it_boots() {
    let app = AppDir::new(&[(
        "app.py",
        "import time\ntime.sleep(90)\n\ndef app(environ, start_response):\n    start_response('200 OK', [])\n    return [b'x']\n",
    )]);
    let mut c = Corral::spawn(
        app.path(),
        &["app:app", "-w", "2", "--status-bind", "127.0.0.1:0"],
        &[],
    );
    c.wait_listening();
    // The workers are spawned just after the listeners are up: at most a
    // moment (the app's import takes 90 s).
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.status_json()["generation"] != 1 {
        assert!(
            Instant::now() < deadline,
            "/status never showed generation 1 booting: {}",
            c.status_json()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = c.status_json();
    assert_eq!(s["supervisor"]["pid"], c.pid(), "{s}");
    let states: Vec<&str> = s["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|slot| slot["worker"]["state"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(states, ["booting", "booting"], "{s}");
    assert_eq!(s["readiness"]["booting"], 2, "{s}");
}

#[test]
fn corral_status_without_a_running_corral_says_so() {
    let out = Command::new(corral_bin())
        .args(["status", "--status-bind", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the status server at 127.0.0.1:1"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
}

#[test]
fn a_worker_enters_service_only_once_its_ready_path_answers_2xx() {
    let app = AppDir::new(&[("app.py", APP)]);
    let mut c = Corral::spawn(
        app.path(),
        &[
            "app:app",
            "-w",
            "1",
            "--status-bind",
            "127.0.0.1:0",
            "--ready-path",
            "/health/ready",
        ],
        &[],
    );
    c.wait_listening();
    assert!(
        c.log
            .wait_for("booted in", Duration::from_secs(20))
            .is_some()
    );
    assert!(c.log.wait_for("is not ready yet: GET /health/ready answered 503 Service Unavailable: database is down", Duration::from_secs(10)).is_some(), "{}", c.log.text());
    // Booted, not ready: /status says why (the snapshot it reads is
    // published just after the log line); /health/ready says no, with the
    // counts only (the app's answer is for the operator, not for probes).
    c.wait_until("the reason in /status", || {
        c.status("/status").text().contains("database is down")
    });
    let ready = c.status("/health/ready");
    assert_eq!(ready.status, 503);
    assert!(
        !ready.text().contains("database is down"),
        "{}",
        ready.text()
    );
    let s = c.status_json();
    assert_eq!(s["slots"][0]["worker"]["state"], "probing");
    // Only a 2xx passes: a redirect (or any 3xx or 4xx) keeps it out.
    std::fs::write(app.path().join("moved"), "").unwrap();
    c.wait_until("the redirect in /status", || {
        c.status("/status").text().contains("answered 302")
    });
    assert_eq!(c.status("/health/ready").status, 503);
    assert_eq!(c.status_json()["slots"][0]["worker"]["state"], "probing");
    // The database comes up: the worker enters service by itself.
    std::fs::write(app.path().join("ready"), "").unwrap();
    c.wait_until("readiness", || c.status("/health/ready").status == 200);
    assert_eq!(c.get("/").status, 200);
}

#[test]
fn a_worker_failing_unhealthy_after_probes_leaves_service_and_the_panic_threshold_keeps_serving() {
    let app = AppDir::new(&[
        ("app.py", APP),
        ("ready", ""),
        (
            "corral.toml",
            "[app]\nmodule = \"app:app\"\n[workers]\ncount = 1\n[health]\nready_path = \"/health/ready\"\nprobe_interval = \"200ms\"\nunhealthy_after = 2\nstatus_bind = \"127.0.0.1:0\"\n[server]\nbind = [\"127.0.0.1:0\"]\n",
        ),
    ]);
    let c = Corral::start(app.path(), &["-c", "corral.toml"], 1);
    c.wait_until("readiness", || c.status("/health/ready").status == 200);
    std::fs::remove_file(app.path().join("ready")).unwrap();
    c.wait_until("the worker to leave service", || {
        c.status_json()["slots"][0]["worker"]["state"] == "unready"
    });
    assert!(c.log.has("failed 2 readiness checks in a row"));
    let s = c.status_json();
    assert_eq!(c.status("/health/ready").status, 503);
    // With no worker in service, the panic threshold routes to the live one
    // rather than answering 503 to everyone, and says so.
    assert_eq!(s["panic"], true, "{s}");
    assert_eq!(c.get("/").status, 200);
    std::fs::write(app.path().join("ready"), "").unwrap();
    c.wait_until("the worker to come back", || {
        c.status("/health/ready").status == 200
    });
    assert!(c.log.has("is ready again"));
}

/// The other side of the panic threshold: while `min_in_service` workers
/// are in service, a worker that left service gets no request.
#[test]
fn an_unready_worker_gets_no_request_while_min_in_service_others_serve() {
    let app = AppDir::new(&[
        (
            "app.py",
            r#"
import os, time

def app(environ, start_response):
    if environ["PATH_INFO"] == "/health/ready":
        down = os.path.exists("down-" + os.environ["CORRAL_SLOT"])
        start_response("503 Service Unavailable" if down else "200 OK", [])
        return [b"down" if down else b"up"]
    time.sleep(0.2)
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"#,
        ),
        (
            "corral.toml",
            "[app]\nmodule = \"app:app\"\n[workers]\ncount = 2\n[health]\nready_path = \"/health/ready\"\nprobe_interval = \"200ms\"\nunhealthy_after = 2\nmin_in_service = 1\nstatus_bind = \"127.0.0.1:0\"\n[server]\nbind = [\"127.0.0.1:0\"]\n",
        ),
    ]);
    let c = Corral::start(app.path(), &["-c", "corral.toml"], 2);
    std::fs::write(app.path().join("down-1"), "").unwrap();
    c.wait_until("slot 1 to leave service", || {
        c.status_json()["slots"][1]["worker"]["state"] == "unready"
    });
    let s = c.status_json();
    assert_eq!(s["panic"], false, "{s}");
    assert_eq!(s["slots"][0]["worker"]["state"], "in_service", "{s}");
    let serving = s["slots"][0]["worker"]["pid"].to_string();
    // Four requests at once: the one worker in service answers them all.
    let round: Vec<_> = (0..4)
        .map(|_| {
            let addr = c.addr.clone();
            std::thread::spawn(move || request(&addr, "GET", "/", &[], b"").text())
        })
        .collect();
    for answer in round {
        assert_eq!(answer.join().unwrap(), serving, "{}", c.log.text());
    }
}

fn check(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String, Duration) {
    let t = Instant::now();
    let out = Command::new(corral_bin())
        .current_dir(dir)
        .arg("check")
        .args(args)
        .args(["--python", &python()])
        .env_remove("VIRTUAL_ENV")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text, t.elapsed())
}

/// `corral check`'s worker writes to the terminal, and what its app writes
/// there on import (a banner of several lines, a warning logged) shows as
/// the app wrote it: no line marked for corral's log, which nothing reads.
#[test]
fn corral_check_shows_what_the_app_writes_as_it_wrote_it() {
    let app = AppDir::new(&[(
        "noisy.py",
        "import logging, sys\n\
         print('banner\\nsecond line of it')\n\
         logging.getLogger('noisy').warning('careful:\\n  two lines')\n\
         def app(environ, start_response):\n\
         \x20   start_response('200 OK', [])\n\
         \x20   return [b'ok']\n",
    )]);
    let (code, text, _) = check(app.path(), &["noisy:app"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("banner\nsecond line of it\n") && text.contains("careful:\n  two lines\n"),
        "{text:?}"
    );
    assert!(!text.contains('\x1e') && !text.contains('\x1f'), "{text:?}");
}

#[test]
fn corral_check_says_ok_or_shows_the_traceback() {
    let app = AppDir::new(&[
        ("good.py", APP),
        ("bad.py", "import json\nCONFIG = json.loads('{not json')\n"),
        ("hangs.py", "import time\ntime.sleep(600)\n"),
        ("ready", ""),
    ]);
    let (code, text, _) = check(app.path(), &["good:app"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.starts_with("OK: good:app imported in"), "{text}");
    // A WSGI app under gunicorn's uvicorn worker class: the mistake named.
    let (code, text, _) = check(
        app.path(),
        &["good:app", "-k", "uvicorn.workers.UvicornWorker"],
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("good:app is a WSGI app (it takes environ and start_response)"),
        "{text}"
    );

    let (code, text, _) = check(app.path(), &["bad:app"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("FAILED: bad:app does not boot"), "{text}");
    // Which interpreter failed (a module missing is often another venv's).
    assert!(text.contains("\ninterpreter: "), "{text}");
    assert!(
        text.contains("File \"") && text.contains("bad.py\", line 2"),
        "{text}"
    );
    assert!(text.contains("json.decoder.JSONDecodeError"), "{text}");
    assert!(
        !text.contains("corral_worker.py"),
        "the traceback starts at the app: {text}"
    );

    let (code, text, took) = check(app.path(), &["hangs:app", "--boot-timeout", "1s"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("timed out after 1s"), "{text}");
    assert!(
        text.contains("hangs.py\", line 2"),
        "the stack shows where it hung: {text}"
    );
    assert!(took < Duration::from_secs(10));

    // Errors that only show at start-up: the readiness check runs too.
    std::fs::remove_file(app.path().join("ready")).unwrap();
    let (code, text, _) = check(
        app.path(),
        &[
            "good:app",
            "--ready-path",
            "/health/ready",
            "--boot-timeout",
            "2s",
        ],
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("readiness check failed: GET /health/ready answered 503"),
        "{text}"
    );

    // A config mistake is exit code 2, not 1.
    let (code, text, _) = check(app.path(), &["good:app", "--timeout", "5x"]);
    assert_eq!(code, Some(2), "{text}");
}

/// `--status-token-file`: /status and /metrics want the token the file
/// holds (its trailing newline ignored); the probes stay open; the flag
/// wins over a token in the environment (flag > environment > file).
#[test]
fn the_status_token_can_come_from_a_file() {
    let app = AppDir::new(&[("app.py", APP)]);
    let token = "5e884898da28047151d0e56f8dc62927";
    let file = app.path().join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let file = file.to_str().unwrap().to_string();
    let mut c = Corral::spawn(
        app.path(),
        &[
            "app:app",
            "--status-bind",
            "127.0.0.1:0",
            "--status-token-file",
            &file,
        ],
        &[],
    );
    c.wait_listening();
    c.wait_in_service(1);
    let get = |path: &str, auth: Option<String>| {
        let auth = auth.map(|a| ("Authorization", a));
        let headers: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
        request(&c.status_addr, "GET", path, &headers, b"").status
    };
    for path in ["/status", "/metrics"] {
        assert_eq!(get(path, None), 401, "{path}");
        assert_eq!(
            get(path, Some("Bearer not-the-token-at-all-xx".into())),
            401
        );
        assert_eq!(get(path, Some(format!("Bearer {token}"))), 200, "{path}");
    }
    assert_eq!(get("/health/ready", None), 200);
    drop(c);

    let other = "0123456789abcdef0123456789abcdef";
    let mut c = Corral::spawn(
        app.path(),
        &[
            "app:app",
            "--status-bind",
            "127.0.0.1:0",
            "--status-token-file",
            &file,
        ],
        &[("CORRAL_STATUS_TOKEN", other)],
    );
    c.wait_listening();
    let status = |t: &str| {
        let auth = format!("Bearer {t}");
        request(
            &c.status_addr,
            "GET",
            "/status",
            &[("Authorization", &auth)],
            b"",
        )
        .status
    };
    assert_eq!(status(token), 200, "the flag wins");
    assert_eq!(status(other), 401);
}
