//! SIGHUP reload: generation N+1 starts beside N and takes over only once it
//! is all in service; broken new code never takes the service down. Both
//! under constant load, counting every failed request.

use crate::common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn app_version(tag: &str, padding: usize) -> String {
    // Different sizes for different versions: Python's bytecode cache keys
    // on the source's mtime (in seconds) and size.
    format!(
        "# {}\nimport time\n\ndef app(environ, start_response):\n    time.sleep(0.005)\n    body = b\"{tag}\"\n    start_response(\"200 OK\", [(\"Content-Length\", str(len(body)))])\n    return [body]\n",
        "x".repeat(padding)
    )
}

fn asgi_app_version(tag: &str, padding: usize) -> String {
    format!(
        "# {}\nimport asyncio\n\nasync def app(scope, receive, send):\n    if scope['type'] != 'http':\n        return\n    await asyncio.sleep(0.005)\n    await send({{'type': 'http.response.start', 'status': 200, 'headers': []}})\n    await send({{'type': 'http.response.body', 'body': b'{tag}'}})\n",
        "x".repeat(padding)
    )
}

/// Constant load from 4 clients; counts answers by body and failures.
struct Load {
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(addr: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let threads = (0..4)
            .map(|_| {
                let (addr, stop, failed, answered) = (
                    addr.to_string(),
                    stop.clone(),
                    failed.clone(),
                    answered.clone(),
                );
                std::thread::spawn(move || {
                    let mut bodies = Vec::new();
                    let deadline = Instant::now() + Duration::from_secs(40);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let r = request(&addr, "GET", "/", &[], b"");
                        if r.status == 200 {
                            bodies.push(r.text());
                            answered.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                            eprintln!("failed: {} {}", r.status, r.text());
                        }
                    }
                    bodies
                })
            })
            .collect();
        Load {
            stop,
            failed,
            answered,
            threads,
        }
    }

    /// Waits until the load has had `n` more answers (at most 30 s).
    fn wait_answered(&self, n: usize) {
        let target = self.answered.load(Ordering::Relaxed) + n;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.answered.load(Ordering::Relaxed) < target {
            assert!(Instant::now() < deadline, "the load got no answers");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn finish(self) -> (Vec<String>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let mut bodies = Vec::new();
        for t in self.threads {
            bodies.extend(t.join().unwrap());
        }
        (bodies, self.failed.load(Ordering::Relaxed))
    }
}

fn wait_log(c: &Corral, needle: &str) {
    assert!(
        c.log.wait_for(needle, Duration::from_secs(30)).is_some(),
        "no {needle:?} in the log:\n{}",
        c.log.text()
    );
}

/// Starts `version("v1")` on two workers, reloads to `version("v2")` under
/// load and checks that no request failed and the old workers are gone.
fn good_reload_under_load(version: fn(&str, usize) -> String) -> (AppDir, Corral) {
    let app = AppDir::new(&[("app.py", &version("v1", 1))]);
    let c = Corral::start(
        app.path(),
        &["app:app", "-w", "2", "--status-bind", "127.0.0.1:0"],
        2,
    );
    let load = Load::start(&c.addr);
    load.wait_answered(40);
    std::fs::write(app.path().join("app.py"), version("v2", 20)).unwrap();
    c.signal(libc::SIGHUP);
    wait_log(&c, "reload done: generation 2 is in service");
    // The old generation drains and exits; then the load sees the new one.
    c.wait_until("the old workers to exit", || {
        children_of(c.pid()).len() == 2
    });
    load.wait_answered(40);
    let (bodies, failed) = load.finish();
    assert_eq!(failed, 0, "no request fails during a good reload");
    assert!(bodies.iter().any(|b| b == "v1") && bodies.last().map(String::as_str) == Some("v2"));
    assert_eq!(c.get("/").text(), "v2");
    // The old generation is gone: two workers, both new.
    let deadline = Instant::now() + Duration::from_secs(10);
    while children_of(c.pid()).len() != 2 {
        assert!(Instant::now() < deadline, "old workers linger");
        std::thread::sleep(Duration::from_millis(50));
    }
    (app, c)
}

#[test]
fn sighup_reloads_good_code_under_load_with_zero_failed_requests() {
    let (_app, c) = good_reload_under_load(app_version);
    let s = c.status_json();
    assert_eq!(s["generation"], 2);
    assert_eq!(s["slots"][0]["worker"]["generation"], 2);
    assert!(
        s["last_reload"]
            .as_str()
            .unwrap()
            .contains("generation 2 in service")
    );
}

#[test]
fn sighup_with_broken_code_keeps_the_old_generation_serving_with_zero_failed_requests() {
    let app = AppDir::new(&[("app.py", &app_version("v1", 1))]);
    let c = Corral::start(
        app.path(),
        &["app:app", "-w", "2", "--status-bind", "127.0.0.1:0"],
        2,
    );
    let before = children_of(c.pid());
    let load = Load::start(&c.addr);
    load.wait_answered(40);
    std::fs::write(
        app.path().join("app.py"),
        "def app(environ, start_response:\n    pass\n",
    )
    .unwrap();
    c.signal(libc::SIGHUP);
    wait_log(&c, "reload failed");
    load.wait_answered(40);
    let (bodies, failed) = load.finish();
    assert_eq!(failed, 0, "no request fails during a failed reload");
    assert!(bodies.len() > 50 && bodies.iter().all(|b| b == "v1"));
    assert!(c.log.has("SyntaxError"), "the reason is logged");
    let s = c.status_json();
    assert_eq!(s["generation"], 1);
    assert!(
        s["last_reload"]
            .as_str()
            .unwrap()
            .contains("generation 2 failed"),
        "{s}"
    );
    let mut before = before;
    before.sort();
    // The new generation's workers stop; the old ones were never touched.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut after = children_of(c.pid());
        after.sort();
        if after == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "workers {after:?}, expected {before:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // /status shows why the reload failed, on the slot it failed in.
    let errors = |s: &serde_json::Value| -> Vec<String> {
        s["slots"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|slot| slot["last_boot_error"]["text"].as_str().map(str::to_owned))
            .collect()
    };
    let failed = errors(&c.status_json());
    assert!(
        !failed.is_empty() && failed.iter().all(|e| e.contains("SyntaxError")),
        "{failed:?}"
    );
    // Once a later reload is in service, that error is no slot's state any
    // more: before, /status and `corral status` showed it (on some slots)
    // after the good deploy, as if it were current.
    std::fs::write(app.path().join("app.py"), app_version("v2", 1)).unwrap();
    c.signal(libc::SIGHUP);
    wait_log(&c, "reload done: generation 3 is in service");
    let s = c.status_json();
    assert_eq!(errors(&s), Vec::<String>::new(), "{s}");
}

/// `app_version` that holds each request 100 ms and answers "TAG PID".
fn app_version_pid(tag: &str, padding: usize) -> String {
    format!(
        "# {}\nimport os, time\n\ndef app(environ, start_response):\n    time.sleep(0.1)\n    body = b\"{tag} %d\" % os.getpid()\n    start_response(\"200 OK\", [(\"Content-Length\", str(len(body)))])\n    return [body]\n",
        "x".repeat(padding)
    )
}

#[test]
fn a_rolling_reload_under_load_fails_no_request_and_keeps_capacity() {
    let app = AppDir::new(&[
        ("app.py", &app_version_pid("v1", 1)),
        (
            "corral.toml",
            "[app]\nmodule = \"app:app\"\n[server]\nbind = [\"127.0.0.1:0\"]\n[workers]\ncount = 3\n[deploy]\nstrategy = \"rolling\"\nmax_surge = 1\n",
        ),
    ]);
    let c = Corral::start(app.path(), &["-c", "corral.toml"], 3);
    // Rounds of 3 requests at once, each held 100 ms: with 3 workers in
    // service each round is answered by 3 distinct pids.
    let load = CapacityLoad::start(&c.addr, "/", 3);
    // A few rounds on the old generation first (the load's own duration).
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(app.path().join("app.py"), app_version_pid("v2", 20)).unwrap();
    c.signal(libc::SIGHUP);
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c.log.text().contains("reload done") {
        assert!(
            Instant::now() < deadline,
            "no reload done; log:\n{}",
            c.log.text()
        );
        most = most.max(children_of(c.pid()).len());
        std::thread::sleep(Duration::from_millis(10));
    }
    // The old workers drain and exit; then a few rounds on the new ones
    // (the load itself must be the only client: another request would take
    // a worker from a round).
    c.wait_until("the old workers to exit", || {
        children_of(c.pid()).len() == 3
    });
    std::thread::sleep(Duration::from_millis(500));
    let seen = load.finish();
    eprintln!(
        "{} rounds, {} failed, {} worker processes served, fewest pids in a round {}",
        seen.rounds,
        seen.failed.len(),
        seen.pids.len(),
        seen.fewest_pids
    );
    assert_eq!(seen.failed, Vec::<String>::new());
    assert!(seen.bodies.iter().any(|b| b.starts_with("v1 ")));
    assert!(seen.bodies.last().unwrap().starts_with("v2 "), "{seen:?}");
    assert!(
        seen.pids.len() >= 6,
        "3 old and 3 new workers served: {seen:?}"
    );
    assert!(most <= 4, "at most max_surge = 1 extra worker, saw {most}");
    assert_eq!(
        seen.fewest_pids,
        3,
        "a round of 3 requests found fewer than 3 workers; log:\n{}",
        c.log.text()
    );
    assert!(c.log.text().contains("rolling"));
}

#[test]
fn a_reload_whose_new_code_fails_its_readiness_check_is_stopped_and_the_old_keeps_serving() {
    let ready_app = |tag: &str, ready: bool, pad: usize| {
        format!(
            "# {}\ndef app(environ, start_response):\n    if environ['PATH_INFO'] == '/ready':\n        start_response('{}', [])\n        return [b'db?']\n    body = b'{tag}'\n    start_response('200 OK', [('Content-Length', str(len(body)))])\n    return [body]\n",
            "x".repeat(pad),
            if ready {
                "200 OK"
            } else {
                "503 Service Unavailable"
            }
        )
    };
    let app = AppDir::new(&[
        ("app.py", &ready_app("v1", true, 1)),
        (
            "corral.toml",
            "[app]\nmodule = \"app:app\"\n[server]\nbind = [\"127.0.0.1:0\"]\n[workers]\ncount = 2\n[health]\nready_path = \"/ready\"\nprobe_interval = \"200ms\"\nstatus_bind = \"127.0.0.1:0\"\n[deploy]\nready_timeout = \"2s\"\n",
        ),
    ]);
    let c = Corral::start(app.path(), &["-c", "corral.toml"], 2);
    let load = Load::start(&c.addr);
    load.wait_answered(40);
    std::fs::write(app.path().join("app.py"), ready_app("v2", false, 30)).unwrap();
    let (code, text) = reload_wait(&c);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("was not all in service within 2s"), "{text}");
    load.wait_answered(40);
    let (bodies, failed) = load.finish();
    assert_eq!(failed, 0, "no request fails");
    // The new generation's workers never passed readiness, so they never
    // took a request: every answer came from v1.
    assert!(bodies.len() > 20, "{} answers", bodies.len());
    assert_all_from_v1(&bodies);
    assert!(
        c.status_json()["last_reload"]
            .as_str()
            .unwrap()
            .contains("generation 2 failed")
    );
}

/// A reload is all or nothing: when one slot's new worker never passes
/// its readiness check, the reload fails even though the other slot's new
/// worker passed, and the old generation keeps serving in every slot
/// (none of its workers was replaced by the one that passed).
#[test]
fn a_reload_with_one_slot_never_ready_fails_whole_and_the_old_generation_serves_on() {
    let version = |tag: &str, pad: usize| {
        format!(
            "# {}\nimport os\n\ndef app(environ, start_response):\n    if environ['PATH_INFO'] == '/ready':\n        ok = '{tag}' == 'v1' or os.environ['CORRAL_SLOT'] == '0'\n        start_response('200 OK' if ok else '503 Service Unavailable', [])\n        return [b'db?']\n    body = b'{tag}'\n    start_response('200 OK', [('Content-Length', str(len(body)))])\n    return [body]\n",
            "x".repeat(pad)
        )
    };
    let app = AppDir::new(&[
        ("app.py", &version("v1", 1)),
        (
            "corral.toml",
            "[app]\nmodule = \"app:app\"\n[server]\nbind = [\"127.0.0.1:0\"]\n[workers]\ncount = 2\n[health]\nready_path = \"/ready\"\nprobe_interval = \"200ms\"\nstatus_bind = \"127.0.0.1:0\"\n[deploy]\nready_timeout = \"2s\"\n",
        ),
    ]);
    let c = Corral::start(app.path(), &["-c", "corral.toml"], 2);
    std::fs::write(app.path().join("app.py"), version("v2", 30)).unwrap();
    let (code, text) = reload_wait(&c);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("was not all in service within 2s"), "{text}");
    assert!(
        c.status_json()["last_reload"]
            .as_str()
            .unwrap()
            .contains("generation 2 failed")
    );
    // Both old workers serve on: every answer is v1.
    let load = Load::start(&c.addr);
    load.wait_answered(40);
    let (bodies, failed) = load.finish();
    assert_eq!(failed, 0, "no request fails");
    assert_all_from_v1(&bodies);
    assert_eq!(
        c.status_json()["generation"],
        1,
        "{}",
        c.status("/status").text()
    );
}

#[test]
fn an_asgi_app_reloads_under_load_with_zero_failed_requests() {
    good_reload_under_load(asgi_app_version);
}

/// An app that answers with what its environment says (`COLOR`) and the
/// threads it was started with.
const ENV_APP: &str = "import os\n\ndef app(environ, start_response):\n    body = ('%s %s' % (os.environ.get('COLOR'), environ['wsgi.multithread'])).encode()\n    start_response('200 OK', [('Content-Length', str(len(body)))])\n    return [body]\n";

fn toml(color: &str, count: usize, threads: usize, keepalive: &str) -> String {
    format!(
        "[app]\nmodule = \"app:app\"\nenv = {{ COLOR = \"{color}\" }}\n[server]\nbind = [\"127.0.0.1:0\"]\nkeepalive = \"{keepalive}\"\n[workers]\ncount = {count}\nthreads = {threads}\n"
    )
}

/// corral started from `corral.toml` = `toml("red", 1, 1, "5s")` (one
/// worker of [`ENV_APP`]) beside `files`, with a status server.
fn started_from_file(files: &[(&str, &str)]) -> (AppDir, Corral) {
    let first = toml("red", 1, 1, "5s");
    let mut all = vec![("app.py", ENV_APP), ("corral.toml", first.as_str())];
    all.extend_from_slice(files);
    let app = AppDir::new(&all);
    let c = Corral::start(
        app.path(),
        &["-c", "corral.toml", "--status-bind", "127.0.0.1:0"],
        1,
    );
    (app, c)
}

/// gunicorn reads its config file again on HUP: so does a corral reload.
/// The new generation runs with the file's `[app]` and `[workers]`; a
/// change to what lives in corral's own process (here `[server]`) keeps
/// its value until a re-exec, and the log says which and how.
#[test]
fn a_reload_reads_the_config_file_again_and_the_new_generation_runs_with_it() {
    let (app, c) = started_from_file(&[("other.py", ENV_APP)]);
    assert_eq!(c.get("/").text(), "red False");
    assert_eq!(c.status_json()["supervisor"]["app"], "app:app");
    let other = toml("blue", 3, 4, "9s").replace("app:app", "other:app");
    std::fs::write(app.path().join("corral.toml"), other).unwrap();
    c.signal(libc::SIGHUP);
    wait_log(&c, "reload done: generation 2 is in service");
    // Once the log says so, the new generation answers.
    assert_eq!(c.get("/").text(), "blue True", "{}", c.log.text());
    assert_eq!(c.status_json()["supervisor"]["app"], "other:app");
    // The count the file sets follows once the new generation serves.
    wait_log(&c, "scaling from 1 to 3 workers");
    c.wait_until("three workers of generation 2 in service", || {
        let slots = c.status_json()["slots"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        slots.len() == 3
            && slots
                .iter()
                .all(|s| s["worker"]["state"] == "in_service" && s["worker"]["generation"] == 2)
    });
    for _ in 0..6 {
        assert_eq!(c.get("/").text(), "blue True");
    }
    let kept = c
        .log
        .wait_for("server changed and keeps", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no word of the kept key; log:\n{}", c.log.text()));
    assert!(
        kept.contains("corral.toml") && kept.contains("USR2"),
        "{kept}"
    );
    assert!(
        c.log
            .has("starts with the changed app, workers, workers.count"),
        "{}",
        c.log.text()
    );
    // A reload with the file as it is changes nothing more and says nothing.
    c.signal(libc::SIGHUP);
    wait_log(&c, "reload done: generation 3 is in service");
    assert_eq!(c.log.count("scaling from"), 1, "{}", c.log.text());
    assert_eq!(c.get("/").text(), "blue True");
}

/// A config file that no longer reads refuses the reload with the file,
/// line and key (gunicorn exits on a HUP with a broken file): no new
/// generation starts, the workers serve on, `reload --wait` exits 1 and
/// `/status` shows why until a reload reads it again.
#[test]
fn a_config_file_that_no_longer_reads_refuses_the_reload_and_the_workers_serve_on() {
    let (app, c) = started_from_file(&[]);
    let pids = children_of(c.pid());
    std::fs::write(
        app.path().join("corral.toml"),
        toml("blue", 1, 1, "5s") + "[workers.limits]\nno_such_key = 1\n",
    )
    .unwrap();
    let (code, out) = reload_wait(&c);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("reload refused")
            && out.contains("corral.toml:11")
            && out.contains("no_such_key"),
        "{out}"
    );
    // `corral reload` without --wait hears the refusal too: it said
    // "reload started", exit 0.
    let out = std::process::Command::new(corral_bin())
        .args(["reload", "--socket"])
        .arg(&c.socket)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("reload refused") && text.contains("no_such_key"),
        "{text}"
    );
    assert_eq!(c.get("/").text(), "red False");
    assert_eq!(children_of(c.pid()), pids, "the worker was not replaced");
    let status = c.status_json();
    assert!(
        status["config_error"]
            .as_str()
            .is_some_and(|e| e.contains("no_such_key")),
        "{status}"
    );
    assert_eq!(status["generation"], 1, "{status}");
    let metrics = c.status("/metrics").text();
    assert!(
        metrics.contains("corral_reloads_total{outcome=\"failed\"} 2"),
        "{metrics}"
    );
    std::fs::write(app.path().join("corral.toml"), toml("blue", 1, 1, "5s")).unwrap();
    let (code, out) = reload_wait(&c);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(c.get("/").text(), "blue False");
    assert!(c.status_json()["config_error"].is_null());
}

/// The same from a gunicorn.conf.py: its `raw_env` and `timeout` apply to
/// the new generation, as gunicorn's HUP applies them.
#[test]
fn a_reload_reads_a_gunicorn_conf_py_again() {
    let conf = |color: &str, timeout: u32| {
        format!(
            "bind = '127.0.0.1:0'\nworkers = 1\nraw_env = ['COLOR={color}']\ntimeout = {timeout}\n"
        )
    };
    let slow = "import os, time\n\ndef app(environ, start_response):\n    if environ['PATH_INFO'] == '/slow':\n        time.sleep(3)\n    body = os.environ.get('COLOR', '').encode()\n    start_response('200 OK', [('Content-Length', str(len(body)))])\n    return [body]\n";
    let app = AppDir::new(&[("app.py", slow), ("gunicorn.conf.py", &conf("red", 30))]);
    let c = Corral::start(app.path(), &["-c", "gunicorn.conf.py", "app:app"], 1);
    assert_eq!(c.get("/").text(), "red");
    std::fs::write(app.path().join("gunicorn.conf.py"), conf("green", 1)).unwrap();
    c.signal(libc::SIGHUP);
    wait_log(&c, "reload done: generation 2 is in service");
    assert_eq!(c.get("/").text(), "green", "{}", c.log.text());
    // The new timeout holds: a 3 s request is cut at 1 s.
    let started = Instant::now();
    assert_eq!(c.get("/slow").status, 504, "{}", c.log.text());
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    // A file that raises is refused with its traceback, from the file's
    // own line, in `reload --wait`'s answer and the log. Before, both said
    // "its traceback is above", and the traceback had gone to corral's
    // stderr alone (not to an error log, nor as JSON).
    let broken = conf("blue", 30) + "workers = undefined_name\n";
    std::fs::write(app.path().join("gunicorn.conf.py"), broken).unwrap();
    let (code, out) = reload_wait(&c);
    assert_eq!(code, Some(1), "{out}");
    // The answer can come before the log's reader has the line.
    wait_log(&c, "NameError: name 'undefined_name'");
    for said in [&out, &c.log.text()] {
        assert!(
            said.contains("reload refused")
                && said.contains("File \"gunicorn.conf.py\", line 5, in <module>")
                && said.contains("NameError: name 'undefined_name' is not defined")
                && !said.contains("<string>")
                && !said.contains("exec(compile")
                && !said.contains("above"),
            "{said}"
        );
    }
    assert_eq!(c.get("/").text(), "green");
}

/// Two `reload --wait` close together with a gunicorn.conf.py, whose
/// reads run side by side and may end in either order: neither is told
/// that good code failed (the one whose read ended last was answered
/// "superseded" with exit 1, and a deploy script rolled a good deploy
/// back); each hears how the reload that deployed its code ended.
#[test]
fn reloads_close_together_each_hear_that_their_code_came_up() {
    let conf = "bind = '127.0.0.1:0'\nworkers = 1\n";
    let app = AppDir::new(&[
        ("app.py", &app_version("one", 1)),
        ("gunicorn.conf.py", conf),
    ]);
    let c = Corral::start(app.path(), &["-c", "gunicorn.conf.py", "app:app"], 1);
    for round in 0..5 {
        let codes: Vec<(Option<i32>, String)> = std::thread::scope(|s| {
            let first = s.spawn(|| reload_wait(&c));
            std::thread::sleep(Duration::from_millis(20));
            let second = s.spawn(|| reload_wait(&c));
            vec![first.join().unwrap(), second.join().unwrap()]
        });
        for (code, out) in &codes {
            assert_eq!(*code, Some(0), "round {round}: {out}\n{}", c.log.text());
        }
    }
}

/// A reload whose read of the gunicorn.conf.py is slow, and a later one
/// whose read is quick and whose generation is in service before the
/// first read ends: the first is folded into the later one and hears its
/// outcome. It heard "reload not started: a later reload ... did not start
/// either", exit 4, for code that came up (seen under load in the test
/// above).
#[test]
fn a_reload_whose_read_ends_after_a_later_reload_ended_hears_its_outcome() {
    let conf = "import os, time\nif os.path.exists('slow-once'):\n    os.remove('slow-once')\n    time.sleep(2)\nbind = '127.0.0.1:0'\nworkers = 1\n";
    let app = AppDir::new(&[
        ("app.py", &app_version("one", 1)),
        ("gunicorn.conf.py", conf),
    ]);
    let c = Corral::start(app.path(), &["-c", "gunicorn.conf.py", "app:app"], 1);
    std::fs::write(app.path().join("slow-once"), "").unwrap();
    std::fs::write(app.path().join("app.py"), app_version("two", 1)).unwrap();
    let (slow, quick) = std::thread::scope(|s| {
        let slow = s.spawn(|| reload_wait(&c));
        // The slow read has taken the marker: the next read is quick.
        let deadline = Instant::now() + Duration::from_secs(10);
        while app.path().join("slow-once").exists() {
            assert!(Instant::now() < deadline, "the first read never began");
            std::thread::sleep(Duration::from_millis(10));
        }
        let quick = reload_wait(&c);
        (slow.join().unwrap(), quick)
    });
    assert_eq!(quick.0, Some(0), "{}", quick.1);
    assert!(quick.1.contains("reloaded: generation 2"), "{}", quick.1);
    assert_eq!(slow.0, Some(0), "{}\n{}", slow.1, c.log.text());
    assert!(slow.1.contains("reloaded: generation 2"), "{}", slow.1);
    // Logged as the answer goes: the test may read the log before it.
    assert!(
        c.log
            .wait_for("is folded into that one", Duration::from_secs(5))
            .is_some(),
        "{}",
        c.log.text()
    );
}

/// A reload whose new generation fails leaves the serving one as it was:
/// a shorter `heartbeat_timeout` in that file does not apply to the old
/// workers (which beat at the pace their own timeout set), and a second
/// `reload --wait` while one is under way waits for its own, queued
/// behind it, rather than report the other's outcome as its own.
#[test]
fn a_failed_reload_changes_nothing_for_the_generation_that_serves() {
    let (app, c) = started_from_file(&[]);
    let pids = children_of(c.pid());
    let broken =
        toml("blue", 1, 1, "5s").replace("app:app", "missing:app") + "heartbeat_timeout = \"1s\"\n";
    std::fs::write(app.path().join("corral.toml"), broken).unwrap();
    let (code, out) = reload_wait(&c);
    assert_eq!(code, Some(1), "{out}");
    // Past a few of the new file's heartbeat timeouts: the old worker
    // serves on, never replaced.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(c.get("/").text(), "red False");
    assert_eq!(children_of(c.pid()), pids, "{}", c.log.text());
    assert!(
        !c.log.text().contains("sent no heartbeat"),
        "{}",
        c.log.text()
    );
    // A slow new generation, and a second reload meanwhile.
    let slow = "import time\ntime.sleep(3)\n".to_string() + ENV_APP;
    std::fs::write(app.path().join("slow.py"), slow).unwrap();
    let next = toml("green", 1, 1, "5s").replace("app:app", "slow:app");
    std::fs::write(app.path().join("corral.toml"), next).unwrap();
    c.signal(libc::SIGHUP);
    // Generation 2's line is in the log already: wait for the HUP's own,
    // or the reload below may be read first and start generation 3 itself.
    wait_log(&c, "reload: starting generation 3");
    // Queued behind it, and answered with its own outcome.
    let (code, out) = reload_wait(&c);
    assert_eq!(code, Some(0), "{out}\n{}", c.log.text());
    assert!(out.contains("generation 4"), "{out}");
    // The answer can come before the log's reader has the lines.
    wait_log(&c, "reload done: generation 3 is in service");
    let log = c.log.text();
    assert!(
        log.contains("reload queued: generation 3 is still starting"),
        "{log}"
    );
    assert!(
        log.contains("reload done: generation 3 is in service"),
        "{log}"
    );
}

/// Two deploys close together: the second `corral reload` (no `--wait`)
/// comes while the first one's generation still imports. It is queued
/// and starts once that one is in service, so the code last written is
/// the code served, as with gunicorn's second HUP.
#[test]
fn a_reload_asked_for_while_one_is_starting_runs_after_it_and_the_newest_code_serves() {
    let app = AppDir::new(&[
        (
            "app.py",
            "import time\ntime.sleep(1.5)\nV = open('VERSION').read().strip().encode()\n\ndef app(environ, start_response):\n    start_response('200 OK', [('Content-Length', str(len(V)))])\n    return [V]\n",
        ),
        ("VERSION", "v1"),
    ]);
    let c = Corral::start(app.path(), &["app:app"], 1);
    // `corral reload` (no --wait) says what became of the request.
    let reload = |said: &str| {
        let out = std::process::Command::new(corral_bin())
            .args(["reload", "--socket", c.socket.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with(said), "{text}");
    };
    std::fs::write(app.path().join("VERSION"), "v2").unwrap();
    reload("reload started: generation 2 is starting beside generation 1");
    wait_log(&c, "reload: starting generation 2");
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(app.path().join("VERSION"), "v3").unwrap();
    reload("reload queued: generation 2 is still starting");
    wait_log(&c, "reload done: generation 3 is in service");
    assert_eq!(c.get("/").text(), "v3", "{}", c.log.text());
    assert!(
        c.log
            .text()
            .contains("reload done: generation 2 is in service")
    );
}

/// A config for `app:app` on `workers` workers whose rollback hook and
/// `on_reload_failed` hook each leave a file in the app folder
/// (`rolled_back`, `reload_failed`): a failed reload shows there.
fn witnessed(workers: usize, ready_timeout: &str) -> String {
    format!(
        "[app]\nmodule = \"app:app\"\n[server]\nbind = [\"127.0.0.1:0\"]\n\
         [workers]\ncount = {workers}\n\
         [deploy]\nready_timeout = \"{ready_timeout}\"\n\
         rollback_hook = [\"/bin/sh\", \"-c\", \"echo \\\"$CORRAL_REASON\\\" > \\\"$CORRAL_APP_DIR/rolled_back\\\"\"]\n\
         [hooks]\non_reload_failed = [\"/bin/sh\", \"-c\", \"echo ran > reload_failed\"]\n"
    )
}

/// `app_version`, whose import takes `seconds` when `condition` (Python)
/// holds: good code that is slow to come up.
fn slow_app(tag: &str, padding: usize, condition: &str, seconds: u32) -> String {
    format!(
        "import os, time\nif {condition}:\n    time.sleep({seconds})\n{}",
        app_version(tag, padding)
    )
}

/// Runs `corral reload --wait ARGS` on a thread; its exit code and output
/// arrive on the receiver.
fn reload_in_background(
    c: &Corral,
    args: &[&str],
) -> std::sync::mpsc::Receiver<(Option<i32>, String)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let socket = c.socket.clone();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    std::thread::spawn(move || {
        let out = std::process::Command::new(corral_bin())
            .args(["reload", "--wait"])
            .args(&args)
            .arg("--socket")
            .arg(&socket)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        let _ = tx.send((out.status.code(), text));
    });
    rx
}

#[test]
fn a_stop_during_a_reload_cancels_it_without_a_rollback() {
    // TERM while the new generation imports slowly (8 s), the same with a
    // `shutdown_delay` (the reload ends at the first TERM, while the old
    // generation serves on for the delay), and `corral stop` while a
    // canary of good code serves its share: none is a failed reload.
    for stop in ["TERM", "TERM within shutdown_delay", "corral stop"] {
        let canary = stop == "corral stop";
        let delay = stop == "TERM within shutdown_delay";
        let mut config = witnessed(2, "60s");
        if delay {
            config = config.replace("[server]\n", "[server]\nshutdown_delay = \"30s\"\n");
        }
        let app = AppDir::new(&[("app.py", &app_version("v1", 1)), ("corral.toml", &config)]);
        let mut c = Corral::start(app.path(), &["-c", "corral.toml"], 2);
        let v2 = if canary {
            app_version("v2", 20)
        } else {
            slow_app("v2", 20, "True", 8)
        };
        std::fs::write(app.path().join("app.py"), v2).unwrap();
        let args: &[&str] = if canary {
            &["--canary", "20%", "--for", "30s"]
        } else {
            &[]
        };
        let reload = reload_in_background(&c, args);
        wait_log(&c, "reload: starting generation 2");
        if canary {
            // Its workers are in service and take their share.
            c.wait_until("the canary to answer", || {
                (0..10).any(|_| c.get("/").text() == "v2")
            });
        } else {
            std::thread::sleep(Duration::from_secs(1));
        }
        if canary {
            let out = std::process::Command::new(corral_bin())
                .args(["stop", "--socket", c.socket.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
        } else {
            c.signal(libc::SIGTERM);
        }
        if delay {
            wait_log(&c, "reload of generation 2 cancelled: corral is stopping");
            // The old generation serves on for the delay; a second TERM
            // skips the rest of it.
            assert_eq!(c.get("/").text(), "v1");
            c.signal(libc::SIGTERM);
        }
        let status = c
            .wait_exit(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("{stop}: corral did not stop; log:\n{}", c.log.text()));
        let (code, text) = reload
            .recv_timeout(Duration::from_secs(30))
            .expect("reload --wait answers");
        // Hooks run off corral's loop: give one that was started time to
        // leave its file.
        std::thread::sleep(Duration::from_millis(500));
        let log = c.log.text();
        assert!(status.success(), "{stop}: {status:?}; log:\n{log}");
        assert!(
            text.contains("the reload was cancelled: corral is stopping"),
            "{stop}: {text}"
        );
        assert!(
            !text.contains("FAILED") && !text.contains("did not boot"),
            "{stop}: {text}"
        );
        assert_eq!(code, Some(3), "{stop}: exits 3, not 1 (failed): {text}");
        assert!(!log.contains("reload failed"), "{stop}: log:\n{log}");
        assert!(!log.contains("rollback hook"), "{stop}: log:\n{log}");
        assert!(
            log.contains("reload of generation 2 cancelled: corral is stopping"),
            "{stop}: log:\n{log}"
        );
        for witness in ["rolled_back", "reload_failed"] {
            assert!(
                !app.path().join(witness).exists(),
                "{stop}: the {witness} hook ran; log:\n{log}"
            );
        }
    }
}

#[test]
fn a_slot_scaled_away_during_a_reload_neither_holds_it_back_nor_fails_it() {
    // Generation 2 is good, but its worker for slot 2 takes 20 s to
    // import; TTOU removes slot 2 once slots 0 and 1 are in service.
    let app = AppDir::new(&[
        ("app.py", &app_version("v1", 1)),
        ("corral.toml", &witnessed(2, "5s")),
    ]);
    let mut c = Corral::start(app.path(), &["-c", "corral.toml"], 2);
    c.signal(libc::SIGTTIN);
    c.wait_in_service(3);
    let v2 = slow_app(
        "v2",
        20,
        "os.environ['CORRAL_GENERATION'] == '2' and os.environ['CORRAL_SLOT'] == '2'",
        20,
    );
    std::fs::write(app.path().join("app.py"), v2).unwrap();
    c.signal(libc::SIGHUP);
    wait_log(&c, "reload: starting generation 2");
    // Three boots of generation 1, then slots 0 and 1 of generation 2.
    c.wait_until("slots 0 and 1 of generation 2 to boot", || {
        c.log.count(" booted in ") >= 5
    });
    c.signal(libc::SIGTTOU);
    let done = c.log.wait_for(
        "reload done: generation 2 is in service",
        Duration::from_secs(10),
    );
    let log = c.log.text();
    assert!(done.is_some(), "the reload waited for slot 2; log:\n{log}");
    assert!(!log.contains("reload failed"), "log:\n{log}");
    assert_eq!(c.get("/").text(), "v2");
    // Past its ready_timeout, nothing fails it either.
    std::thread::sleep(Duration::from_secs(5));
    let log = c.log.text();
    assert!(!log.contains("reload failed"), "log:\n{log}");
    for witness in ["rolled_back", "reload_failed"] {
        assert!(
            !app.path().join(witness).exists(),
            "the {witness} hook ran; log:\n{log}"
        );
    }
    c.signal(libc::SIGTERM);
    assert!(c.wait_exit(Duration::from_secs(30)).is_some());
}

/// A reload whose workers cannot even be started (the virtualenv was
/// removed or rebuilt elsewhere) fails at once with the reason, not at its
/// deadline with "not all in service"; the old generation serves on.
#[test]
fn a_reload_whose_interpreter_is_gone_fails_at_once_and_says_why() {
    let app = AppDir::new(&[("app.py", ENV_APP)]);
    let venv = app.path().join("venv");
    std::fs::create_dir(&venv).unwrap();
    let interpreter = venv.join("python");
    std::os::unix::fs::symlink(python(), &interpreter).unwrap();
    let c = Corral::start(
        app.path(),
        &[
            "app:app",
            "-w",
            "1",
            "-b",
            "127.0.0.1:0",
            "--python",
            interpreter.to_str().unwrap(),
        ],
        1,
    );
    std::fs::remove_file(&interpreter).unwrap();
    let out = std::process::Command::new(corral_bin())
        .args(["reload", "--wait", "--timeout", "20s", "--socket"])
        .arg(&c.socket)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "slot 0 did not start: cannot start `{}`",
            interpreter.display()
        )),
        "{text}"
    );
    assert_eq!(c.get("/").status, 200, "the old generation serves on");
}

/// Every answer came from the old code (v1); else the first few that did not.
fn assert_all_from_v1(bodies: &[String]) {
    let others: Vec<_> = bodies.iter().filter(|b| *b != "v1").take(3).collect();
    assert!(others.is_empty(), "{others:?}");
}
