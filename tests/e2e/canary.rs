//! Canary reloads (`[deploy] canary_*`): the new generation first gets a
//! share of the requests beside the old one, which serves the rest, and
//! takes over only when its figures are no worse. Real workers, real load
//! over five endpoints, every answer counted.

use crate::common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ENDPOINTS: [&str; 5] = ["/a", "/b", "/c", "/d", "/e"];

/// Five endpoints answering `tag`; `broken` raises on /c.
fn app(tag: &str, broken: bool, padding: usize) -> String {
    format!(
        "# {}\nimport time\n\ndef app(environ, start_response):\n    time.sleep(0.002)\n    if {} and environ['PATH_INFO'] == '/c':\n        raise KeyError('user_id')\n    body = b'{tag}'\n    start_response('200 OK', [('Content-Length', str(len(body)))])\n    return [body]\n",
        "x".repeat(padding),
        if broken { "True" } else { "False" },
    )
}

fn config(share: u32, duration: &str, min_requests: u64) -> String {
    format!(
        "[app]\nmodule = \"app:app\"\n[server]\nbind = [\"127.0.0.1:0\"]\n[workers]\ncount = 2\n\
         [health]\nstatus_bind = \"127.0.0.1:0\"\n[deploy]\n\
         rollback_hook = [\"/bin/sh\", \"-c\", \"env > \\\"$CORRAL_APP_DIR/hook.env\\\"\"]\n\
         canary_share = {share}\ncanary_duration = \"{duration}\"\n\
         canary_min_requests = {min_requests}\n"
    )
}

/// One answer: when, its status and body.
type Answer = (Instant, u16, String);

/// Constant load from 4 clients over the five endpoints in turn.
struct Load {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answer>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..4)
            .map(|t| {
                let (addr, stop, answers) = (addr.to_string(), stop.clone(), answers.clone());
                std::thread::spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    let mut i = t;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let r = request(&addr, "GET", ENDPOINTS[i % 5], &[], b"");
                        i += 1;
                        let answer = (Instant::now(), r.status, r.text());
                        answers.lock().unwrap().push(answer);
                    }
                })
            })
            .collect();
        Load {
            stop,
            answers,
            threads,
        }
    }

    fn count(&self) -> usize {
        self.answers.lock().unwrap().len()
    }

    fn wait_answered(&self, n: usize) {
        let target = self.count() + n;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.count() < target {
            assert!(Instant::now() < deadline, "the load got no answers");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn finish(self) -> Vec<Answer> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        Arc::try_unwrap(self.answers)
            .ok()
            .unwrap()
            .into_inner()
            .unwrap()
    }
}

/// `corral reload --wait`: its exit code, output and how long it took.
fn reload_wait(c: &Corral) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let out = std::process::Command::new(corral_bin())
        .args(["reload", "--wait", "--socket", c.socket.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    (out.status.code(), text, started.elapsed())
}

/// The longest time without a good answer between `from` and `to`.
fn longest_gap(answers: &[Answer], from: Instant, to: Instant) -> Duration {
    let mut good: Vec<Instant> = answers
        .iter()
        .filter(|(at, status, _)| *status == 200 && *at >= from && *at <= to)
        .map(|(at, _, _)| *at)
        .collect();
    good.sort();
    good.windows(2)
        .map(|w| w[1] - w[0])
        .chain([good.first().map_or(to - from, |f| *f - from)])
        .max()
        .unwrap_or_default()
}

#[test]
fn a_canary_that_raises_on_one_endpoint_fails_within_its_window_and_the_old_generation_serves_on() {
    let share = 20;
    let window = Duration::from_secs(15);
    let dir = AppDir::new(&[
        ("app.py", &app("v1", false, 1)),
        ("corral.toml", &config(share, "15s", 50)),
    ]);
    let c = Corral::start(dir.path(), &["-c", "corral.toml"], 2);
    let load = Load::start(&c.addr);
    load.wait_answered(100);
    std::fs::write(dir.path().join("app.py"), app("v2", true, 40)).unwrap();
    let reload_started = Instant::now();
    let (code, text, took) = reload_wait(&c);
    let verdict_at = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    load.wait_answered(100);
    let answers = load.finish();

    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("reload FAILED: canary failed: 5xx on"),
        "{text}"
    );
    for column in [
        "requests",
        "5xx",
        "p50 ms",
        "p99 ms",
        "old (gen 1)",
        "new (gen 2)",
    ] {
        assert!(text.contains(column), "{column:?} in the table:\n{text}");
    }
    assert!(took < window, "failed within its window: took {took:?}");

    // Failures: only /c's 500s from v2, all before the verdict, and at most
    // share x time x traffic.
    let failed: Vec<&Answer> = answers.iter().filter(|a| a.1 != 200).collect();
    assert!(!failed.is_empty(), "the canary saw the bug");
    assert!(failed.iter().all(|a| a.1 == 500), "{failed:?}");
    assert!(
        failed
            .iter()
            .all(|a| a.0 <= verdict_at + Duration::from_millis(100)),
        "no failure after the verdict"
    );
    let first = answers.first().unwrap().0;
    let rate = answers.len() as f64 / (answers.last().unwrap().0 - first).as_secs_f64();
    let bound = (f64::from(share) / 100.0 * took.as_secs_f64() * rate).ceil() as usize;
    assert!(
        failed.len() <= bound,
        "{} failed requests, more than share x time x traffic = {bound} ({rate:.0} requests/s for {took:?})",
        failed.len()
    );
    // The old generation never stopped serving.
    let gap = longest_gap(&answers, reload_started, verdict_at);
    assert!(gap < Duration::from_secs(1), "no answer for {gap:?}");
    // (Requests the canary had in flight at the verdict finish there.)
    let settled = verdict_at + Duration::from_millis(200);
    let after: Vec<&Answer> = answers.iter().filter(|a| a.0 > settled).collect();
    assert!(after.len() >= 50);
    let odd: Vec<_> = after.iter().filter(|a| a.1 != 200 || a.2 != "v1").collect();
    assert!(odd.is_empty(), "after the verdict: {odd:?}");
    assert_eq!(c.get("/c").text(), "v1");

    // The rollback hook ran with the figures.
    c.wait_until("the rollback hook", || dir.path().join("hook.env").exists());
    let mut env = String::new();
    c.wait_until("the hook's environment", || {
        env = std::fs::read_to_string(dir.path().join("hook.env")).unwrap_or_default();
        env.contains("CORRAL_CANARY_NEW_P99_MS=")
    });
    assert!(env.contains("CORRAL_REASON=canary\n"), "{env}");
    let new_errors: usize = env
        .lines()
        .find_map(|l| l.strip_prefix("CORRAL_CANARY_NEW_ERRORS="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{env}"));
    assert!(new_errors > 0 && new_errors <= failed.len(), "{env}");
    assert!(env.contains("CORRAL_CANARY_OLD_ERRORS=0\n"), "{env}");
    let status = c.status_json();
    let last = status["last_reload"].as_str().unwrap_or_default();
    assert!(last.contains("canary failed"), "{status}");
    let metrics = c.status("/metrics").text();
    for sample in [
        "corral_reloads_total{outcome=\"canary_failed\"} 1\n",
        "corral_reloads_total{outcome=\"failed\"} 0\n",
    ] {
        assert!(metrics.contains(sample), "no {sample:?} in:\n{metrics}");
    }
}

#[test]
fn a_correct_canary_is_promoted_with_zero_failed_requests() {
    let dir = AppDir::new(&[
        ("app.py", &app("v1", false, 1)),
        ("corral.toml", &config(20, "3s", 50)),
    ]);
    let c = Corral::start(dir.path(), &["-c", "corral.toml"], 2);
    let load = Load::start(&c.addr);
    load.wait_answered(100);
    std::fs::write(dir.path().join("app.py"), app("v2", false, 40)).unwrap();
    let (code, text, took) = reload_wait(&c);
    load.wait_answered(100);
    let answers = load.finish();
    assert_eq!(code, Some(0), "{text}");
    assert!(
        took >= Duration::from_secs(3),
        "not before its window ended: {took:?}"
    );
    assert!(c.log.has("canary passed: generation 2 takes over"));
    let failed: Vec<&Answer> = answers.iter().filter(|a| a.1 != 200).collect();
    assert!(failed.is_empty(), "{failed:?}");
    // Both served during the canary; the new one serves alone after.
    assert!(answers.iter().any(|a| a.2 == "v1") && answers.iter().any(|a| a.2 == "v2"));
    assert_eq!(answers.last().unwrap().2, "v2");
    assert_eq!(c.get("/a").text(), "v2");
    assert!(!dir.path().join("hook.env").exists(), "no rollback");
}

#[test]
fn a_canary_with_too_little_traffic_is_never_promoted() {
    let dir = AppDir::new(&[
        ("app.py", &app("v1", false, 1)),
        ("corral.toml", &config(20, "1s", 1000)),
    ]);
    let c = Corral::start(dir.path(), &["-c", "corral.toml"], 2);
    std::fs::write(dir.path().join("app.py"), app("v2", false, 40)).unwrap();
    // A trickle: far fewer than 1000 requests reach the new generation.
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = {
        let (addr, stop) = (c.addr.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut statuses = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                statuses.push(request(&addr, "GET", "/a", &[], b"").status);
                std::thread::sleep(Duration::from_millis(50));
            }
            statuses
        })
    };
    let (code, text, took) = reload_wait(&c);
    stop.store(true, Ordering::Relaxed);
    let statuses = trickle.join().unwrap();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("too little traffic"), "{text}");
    assert!(
        took >= Duration::from_secs(2),
        "the window was extended once: {took:?}"
    );
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(c.get("/a").text(), "v1", "never promoted");
}

#[test]
fn a_canary_ten_times_slower_on_one_endpoint_is_rejected_on_latency() {
    let slow = |tag: &str, delay: &str, padding: usize| {
        format!(
            "# {}\nimport time\n\ndef app(environ, start_response):\n    time.sleep({delay} if environ['PATH_INFO'] == '/d' else 0.002)\n    body = b'{tag}'\n    start_response('200 OK', [('Content-Length', str(len(body)))])\n    return [body]\n",
            "x".repeat(padding)
        )
    };
    let dir = AppDir::new(&[
        ("app.py", &slow("v1", "0.02", 1)),
        ("corral.toml", &config(20, "3s", 30)),
    ]);
    let c = Corral::start(dir.path(), &["-c", "corral.toml"], 2);
    let load = Load::start(&c.addr);
    load.wait_answered(100);
    std::fs::write(dir.path().join("app.py"), slow("v2", "0.2", 40)).unwrap();
    let (code, text, took) = reload_wait(&c);
    load.wait_answered(50);
    let answers = load.finish();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("canary failed: p99 latency"), "{text}");
    assert!(
        took >= Duration::from_secs(3),
        "judged at the window's end: {took:?}"
    );
    assert!(answers.iter().all(|a| a.1 == 200), "slow, not failed");
    assert_eq!(c.get("/a").text(), "v1");
    c.wait_until("the rollback hook", || dir.path().join("hook.env").exists());
}

/// `corral CMD --socket ...`: its exit code and output (stdout, stderr).
fn control(c: &Corral, args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(corral_bin())
        .args(args)
        .args(["--socket", c.socket.to_str().unwrap()])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

/// `corral reload --wait --canary 20% --for 60s`, on a thread of its own.
fn canary_reload_in_background(c: &Corral) -> std::thread::JoinHandle<std::process::Output> {
    let socket = c.socket.clone();
    std::thread::spawn(move || {
        std::process::Command::new(corral_bin())
            .args(["reload", "--wait", "--canary", "20%", "--for", "60s"])
            .arg("--socket")
            .arg(socket)
            .output()
            .unwrap()
    })
}

/// Starts v1 without a canary in its config, under load; reloads to v2
/// with `reload --wait --canary 20% --for 60s`, and once v2 has answered
/// some requests, runs `corral CMD`. Returns reload's exit code, output and
/// time, CMD's answer, and the answers.
fn canary_ended_by(cmd: &str) -> (Option<i32>, String, Duration, String, Vec<Answer>, Corral) {
    let dir = AppDir::new(&[("app.py", &app("v1", false, 1))]);
    let c = Corral::start(
        dir.path(),
        &["app:app", "-w", "2", "--status-bind", "127.0.0.1:0"],
        2,
    );
    let (code, text) = control(&c, &[cmd]);
    assert_eq!(code, Some(1), "no canary yet: {text}");
    assert!(text.contains("no canary is running"), "{text}");
    let load = Load::start(&c.addr);
    load.wait_answered(100);
    std::fs::write(dir.path().join("app.py"), app("v2", false, 40)).unwrap();
    let started = Instant::now();
    let reload = canary_reload_in_background(&c);
    c.wait_until("the canary to answer", || {
        load.answers.lock().unwrap().iter().any(|a| a.2 == "v2")
    });
    // While it runs, /status and /metrics show both generations' figures.
    let status = c.status_json();
    let canary = &status["canary"];
    assert_eq!(canary["generation"], 2, "{status}");
    assert_eq!(canary["share_percent"], 20.0, "{status}");
    assert!(canary["new"]["requests"].as_u64() > Some(0), "{status}");
    assert!(canary["old"]["requests"].as_u64() > Some(0), "{status}");
    assert!(canary["new"]["p99_ms"].as_f64() > Some(0.0), "{status}");
    // Both generations' workers, each under its slot: `corral status`
    // showed the old generation's only.
    let canary_workers = |status: &serde_json::Value| {
        status["slots"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["also"].as_array().cloned().unwrap_or_default())
            .filter(|w| w["generation"] == 2 && w["state"] == "in_service")
            .count()
    };
    c.wait_until("both canary workers in service", || {
        canary_workers(&c.status_json()) == 2
    });
    let (code, table) = control(&c, &["status"]);
    assert_eq!(code, Some(0), "{table}");
    assert!(
        table.contains("canary: generation 2 gets 20% of requests; generation 2: "),
        "{table}"
    );
    // A slot's row: SLOT PID GEN STATE ...; the rows under it: PID GEN STATE ...
    let rows = |generation: &str| {
        table
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|f| {
                let at = f.iter().position(|w| *w == "in_service");
                at.is_some_and(|i| i >= 2 && f[i - 1] == generation)
            })
            .count()
    };
    assert_eq!((rows("1"), rows("2")), (2, 2), "{table}");
    let metrics = c.status("/metrics").text();
    assert!(
        metrics.contains("corral_canary_requests{generation=\"new\"} "),
        "{metrics}"
    );
    assert!(
        metrics.contains("corral_canary_errors{generation=\"old\"} 0"),
        "{metrics}"
    );
    let (code, answer) = control(&c, &[cmd]);
    assert_eq!(code, Some(0), "{answer}");
    let out = reload.join().unwrap();
    let took = started.elapsed();
    // `corral status` says how the deploy ended, under the table of
    // workers: before, nothing in it said that an aborted one had failed.
    let (code, table) = control(&c, &["status"]);
    assert_eq!(code, Some(0), "{table}");
    let ended = match cmd {
        "abort" => "\nlast reload: generation 2 failed: canary failed: aborted by `corral abort`\n",
        _ => "\nlast reload: generation 2 in service\n",
    };
    assert!(table.contains(ended), "{table}");
    load.wait_answered(100);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    (out.status.code(), text, took, answer, load.finish(), c)
}

#[test]
fn corral_promote_ends_a_canary_at_once_and_the_new_generation_takes_over() {
    let (code, text, took, answer, answers, c) = canary_ended_by("promote");
    assert_eq!(answer.trim(), "canary promoted");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        took < Duration::from_secs(30),
        "promoted before its window: {took:?}"
    );
    assert!(answers.iter().all(|a| a.1 == 200));
    assert_eq!(answers.last().unwrap().2, "v2");
    assert!(c.log.has("promoted by `corral promote`"));
    assert!(
        c.status_json()["canary"].is_null(),
        "no canary after it ended"
    );
}

#[test]
fn corral_abort_stops_a_canary_and_the_old_generation_serves_on() {
    let (code, text, took, answer, answers, c) = canary_ended_by("abort");
    assert_eq!(answer.trim(), "canary aborted");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("canary failed: aborted by `corral abort`"),
        "{text}"
    );
    assert!(text.contains("new (gen 2)"), "{text}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert!(answers.iter().all(|a| a.1 == 200));
    assert_eq!(answers.last().unwrap().2, "v1");
    assert_eq!(c.get("/a").text(), "v1");
}

#[test]
fn canary_sticky_keeps_each_cookie_on_one_generation() {
    let dir = AppDir::new(&[
        ("app.py", &app("v1", false, 1)),
        (
            "corral.toml",
            "[app]\nmodule = \"app:app\"\n[server]\nbind = [\"127.0.0.1:0\"]\n[workers]\ncount = 2\n\
             [deploy]\ncanary_share = 50\ncanary_duration = \"60s\"\ncanary_sticky = \"cookie:sid\"\n",
        ),
    ]);
    let c = Corral::start(dir.path(), &["-c", "corral.toml"], 2);
    std::fs::write(dir.path().join("app.py"), app("v2", false, 40)).unwrap();
    let (code, text) = control(&c, &["reload"]);
    assert_eq!(code, Some(0), "{text}");
    let get = |sid: usize| {
        let cookie = format!("theme=dark; sid={sid}");
        request(&c.addr, "GET", "/a", &[("Cookie", cookie.as_str())], b"").text()
    };
    c.wait_until("the canary to serve", || {
        (0..20).any(|sid| get(sid) == "v2")
    });
    let mut seen = std::collections::BTreeSet::new();
    for sid in 0..20 {
        let first = get(sid);
        for _ in 0..10 {
            assert_eq!(get(sid), first, "sid={sid} changed generation");
        }
        seen.insert(first);
    }
    assert_eq!(
        seen.len(),
        2,
        "both generations serve some clients: {seen:?}"
    );
    let (code, text) = control(&c, &["abort"]);
    assert_eq!(code, Some(0), "{text}");
}

/// Five endpoints answering `tag` after `delay_ms`; with a `wedge`
/// (Python), once a file `wedged` is in the app's folder every request
/// runs it first.
fn wedging_app(tag: &str, wedge: Option<&str>, delay_ms: u32, padding: usize) -> String {
    let (on, wedge) = match wedge {
        Some(w) => ("True", w),
        None => ("False", "pass"),
    };
    format!(
        "# {}\nimport os, signal, time\n\
         WEDGED = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'wedged')\n\n\
         def app(environ, start_response):\n    if {on} and os.path.exists(WEDGED):\n        {wedge}\n    \
         time.sleep({delay_ms} / 1000)\n    body = b'{tag}'\n    \
         start_response('200 OK', [('Content-Length', str(len(body)))])\n    return [body]\n",
        "x".repeat(padding)
    )
}

/// `config` with `threads` threads per worker.
fn with_threads(config: &str, threads: usize) -> String {
    config.replace("count = 2\n", &format!("count = 2\nthreads = {threads}\n"))
}

/// One request of a keep-alive client: when it was sent, and its status
/// and body (status 0: no answer within the client's timeout).
type Sent = (Instant, u16, String);

/// Constant load from `clients` keep-alive clients, each giving up on a
/// request after `patience` (and reconnecting).
struct KeepAliveLoad {
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<Sent>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl KeepAliveLoad {
    fn start(addr: &str, clients: usize, patience: Duration) -> KeepAliveLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|t| {
                let (addr, stop, sent) = (addr.to_string(), stop.clone(), sent.clone());
                std::thread::spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    let mut conn: Option<std::io::BufReader<std::net::TcpStream>> = None;
                    let mut i = t;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let r = conn.get_or_insert_with(|| {
                            let s = connect(&addr);
                            s.set_read_timeout(Some(patience)).unwrap();
                            std::io::BufReader::new(s)
                        });
                        let at = Instant::now();
                        send_request(r.get_mut(), "GET", ENDPOINTS[i % 5], &[], b"");
                        i += 1;
                        let answer = match read_response(r, false) {
                            Ok(resp) => (at, resp.status, resp.text()),
                            Err(_) => {
                                conn = None;
                                (at, 0, String::new())
                            }
                        };
                        sent.lock().unwrap().push(answer);
                    }
                })
            })
            .collect();
        KeepAliveLoad {
            stop,
            sent,
            threads,
        }
    }

    /// Waits (at most 30 s) until `n` more requests have answers from
    /// the version answering `tag`.
    fn wait_for(&self, tag: &str, n: usize) {
        let count = || {
            let sent = self.sent.lock().unwrap();
            sent.iter().filter(|a| a.2 == tag).count()
        };
        let target = count() + n;
        let deadline = Instant::now() + Duration::from_secs(30);
        while count() < target {
            assert!(
                Instant::now() < deadline,
                "fewer than {n} answers from {tag}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn finish(self) -> Vec<Sent> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        Arc::try_unwrap(self.sent)
            .ok()
            .unwrap()
            .into_inner()
            .unwrap()
    }
}

/// `corral reload --wait` on a thread of its own: its exit code, output,
/// and when it returned.
fn reload_in_background(c: &Corral) -> std::thread::JoinHandle<(Option<i32>, String, Instant)> {
    let socket = c.socket.clone();
    std::thread::spawn(move || {
        let out = std::process::Command::new(corral_bin())
            .args(["reload", "--wait", "--socket"])
            .arg(socket)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text, Instant::now())
    })
}

/// The black-box repro: v2 answers normally, then, once the test says so,
/// runs `wedge` on every request; a 30% canary under 8 keep-alive clients
/// that give up after 3 s. Requests stuck on the canary answer nothing, so
/// without counting them it looked clean and was promoted. Checks that it
/// fails within seconds of the wedge by the normal failed-canary path,
/// and the old generation serves on.
fn a_wedged_canary_fails_early(wedge: &str) {
    // Room for every client on each generation's workers: requests wait in
    // corral's line only for the wedged canary's.
    let dir = AppDir::new(&[
        ("app.py", &wedging_app("v1", None, 1, 1)),
        ("corral.toml", &with_threads(&config(30, "12s", 50), 4)),
    ]);
    let c = Corral::start(dir.path(), &["-c", "corral.toml"], 2);
    let load = KeepAliveLoad::start(&c.addr, 8, Duration::from_secs(3));
    load.wait_for("v1", 100);
    std::fs::write(
        dir.path().join("app.py"),
        wedging_app("v2", Some(wedge), 1, 40),
    )
    .unwrap();
    let reload = reload_in_background(&c);
    load.wait_for("v2", 100);
    std::fs::write(dir.path().join("wedged"), "").unwrap();
    let wedged_at = Instant::now();
    // reload --wait returns at the verdict: at the latest at the window's
    // end (12 s), or its extension's (24 s) with requests still hung.
    let (code, text, verdict_at) = reload.join().unwrap();
    let took = verdict_at - wedged_at;
    // Stopped workers that corral has not killed yet go on, to be killed
    // with it.
    let go_on = || {
        for pid in children_of(c.pid()) {
            // SAFETY: kill(2) on a worker of the corral this test started.
            unsafe {
                libc::kill(pid as i32, libc::SIGCONT);
            }
        }
    };
    if code != Some(1) {
        go_on();
        drop(load.finish());
        panic!("promoted although its requests hang (exit {code:?}):\n{text}");
    }
    std::thread::sleep(Duration::from_millis(300));
    load.wait_for("v1", 100);
    let sent = load.finish();
    go_on();

    assert!(
        text.contains("reload FAILED: canary failed: 5xx or no answer on"),
        "{text}"
    );
    assert!(text.contains("of them unanswered after"), "{text}");
    assert!(
        text.contains("new (gen 2): ") && text.contains("of the 5xx are requests unanswered"),
        "{text}"
    );
    assert!(
        took < Duration::from_secs(5),
        "failed early, not at the window's end: {took:?} after the wedge"
    );
    // The old generation served on: every request sent after the verdict
    // got v1 (those the canary held before it may still time out).
    let after: Vec<&Sent> = sent
        .iter()
        .filter(|a| a.0 > verdict_at + Duration::from_millis(100))
        .collect();
    assert!(
        after.len() >= 100,
        "{} requests after the verdict",
        after.len()
    );
    let odd: Vec<_> = after.iter().filter(|a| a.1 != 200 || a.2 != "v1").collect();
    assert!(odd.is_empty(), "after the verdict: {odd:?}");
    assert_eq!(c.get("/a").text(), "v1");

    // The normal failed-canary path: rollback hook with the figures,
    // /status's last_reload, the metric.
    let mut env = String::new();
    c.wait_until("the rollback hook's environment", || {
        env = std::fs::read_to_string(dir.path().join("hook.env")).unwrap_or_default();
        env.contains("CORRAL_CANARY_NEW_UNANSWERED=")
    });
    assert!(env.contains("CORRAL_REASON=canary\n"), "{env}");
    let unanswered: u64 = env
        .lines()
        .find_map(|l| l.strip_prefix("CORRAL_CANARY_NEW_UNANSWERED="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{env}"));
    assert!(unanswered > 0, "{env}");
    assert!(
        env.contains("CORRAL_CANARY_VERDICT=5xx or no answer"),
        "{env}"
    );
    let status = c.status_json();
    let last = status["last_reload"].as_str().unwrap_or_default();
    assert!(last.contains("canary failed"), "{status}");
    assert!(status["canary"].is_null(), "{status}");
    let metrics = c.status("/metrics").text();
    assert!(
        metrics.contains("corral_reloads_total{outcome=\"canary_failed\"} 1\n"),
        "{metrics}"
    );
}

#[test]
fn a_canary_whose_requests_hang_fails_early_and_the_old_generation_serves_on() {
    a_wedged_canary_fails_early("time.sleep(25)");
}

#[test]
fn a_canary_whose_workers_stop_fails_early_and_the_old_generation_serves_on() {
    // The requests sent to it wait for its workers, in corral: they count.
    a_wedged_canary_fails_early("os.kill(os.getpid(), signal.SIGSTOP)");
}

#[test]
fn a_healthy_canary_under_steady_keep_alive_load_still_passes() {
    // Many requests in flight on both generations at every judgment, each
    // taking 20 ms: young, so none counts against the canary.
    let dir = AppDir::new(&[
        ("app.py", &wedging_app("v1", None, 20, 1)),
        ("corral.toml", &with_threads(&config(30, "4s", 50), 4)),
    ]);
    let c = Corral::start(dir.path(), &["-c", "corral.toml"], 2);
    let load = KeepAliveLoad::start(&c.addr, 8, Duration::from_secs(10));
    load.wait_for("v1", 100);
    std::fs::write(dir.path().join("app.py"), wedging_app("v2", None, 20, 40)).unwrap();
    let reload = reload_in_background(&c);
    // While it runs, /status shows the requests each generation holds.
    load.wait_for("v2", 50);
    let status = c.status_json();
    assert!(
        status["canary"]["new"]["in_flight"].as_u64().is_some(),
        "{status}"
    );
    let (code, text, _) = reload.join().unwrap();
    load.wait_for("v2", 100);
    let sent = load.finish();
    assert_eq!(code, Some(0), "{text}");
    assert!(
        c.log.has("canary passed: generation 2 takes over"),
        "{}",
        c.log.text()
    );
    let failed: Vec<&Sent> = sent.iter().filter(|a| a.1 != 200).collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(sent.last().unwrap().2, "v2");
}

/// More keep-alive clients than a generation has places (16 against
/// 2 workers × 4 threads on each side of a 30% canary): requests wait in
/// corral's lines for one side or the other, on both front shards. A place
/// freed on one side woke a request waiting for the other, which handed the
/// wake-up back to its own line, woke itself, and never yielded: both
/// front threads spun and corral answered nothing until the clients gave
/// up. Every request is answered, and the canary passes.
#[test]
fn a_canary_with_more_clients_than_places_answers_every_request() {
    let dir = AppDir::new(&[
        ("app.py", &wedging_app("v1", None, 20, 1)),
        ("corral.toml", &with_threads(&config(30, "4s", 50), 4)),
    ]);
    let c = Corral::start(dir.path(), &["-c", "corral.toml"], 2);
    let load = KeepAliveLoad::start(&c.addr, 16, Duration::from_secs(5));
    load.wait_for("v1", 100);
    std::fs::write(dir.path().join("app.py"), wedging_app("v2", None, 20, 40)).unwrap();
    let reload = reload_in_background(&c);
    // The verdict comes at the window's end (4 s); a corral that answers
    // nothing never gives one.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reload.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = load.finish();
    let failed: Vec<&Sent> = sent.iter().filter(|a| a.1 != 200).collect();
    assert!(
        reload.is_finished(),
        "no verdict in 30 s; {} of {} requests failed",
        failed.len(),
        sent.len()
    );
    let (code, text, _) = reload.join().unwrap();
    assert_eq!(code, Some(0), "{text}");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        sent.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        sent.iter().filter(|a| a.2 == "v2").count() >= 50,
        "the canary served"
    );
}

/// A worker added by `corral scale` during a canary starts on the canary's
/// generation. When the canary ends without taking over (here by `corral
/// abort`), that worker stops as the canary's own do, and its slot starts
/// again on the generation that serves on. Before, it stayed in service
/// on the rejected code, taking its share of requests with no end, while
/// the log and /status said the old generation kept serving.
///
/// A release per folder and a `current` link, as Capistrano-style deploys
/// do: each generation keeps the folder it started in, so the slot's new
/// worker of generation 1 runs v1 again (in place, any worker started
/// after the files changed runs what is on disk, which is what the
/// rollback hook is for).
#[test]
fn a_worker_scaled_up_during_a_canary_goes_when_the_canary_fails() {
    let dir = AppDir::new(&[
        ("releases/v1/app.py", &app("v1", false, 1)),
        ("releases/v2/app.py", &app("v2", false, 40)),
    ]);
    let current = dir.path().join("current");
    std::os::unix::fs::symlink("releases/v1", &current).unwrap();
    let c = Corral::start(
        dir.path(),
        &[
            "app:app",
            "-w",
            "2",
            "--chdir",
            "current",
            "--status-bind",
            "127.0.0.1:0",
        ],
        2,
    );
    // The deploy: `current` now leads to v2.
    let next = dir.path().join("current.next");
    std::os::unix::fs::symlink("releases/v2", &next).unwrap();
    std::fs::rename(&next, &current).unwrap();
    let reload = canary_reload_in_background(&c);
    c.wait_until("the canary", || {
        c.status_json()["canary"]["generation"] == 2
    });
    let (code, text) = control(&c, &["scale", "3"]);
    assert_eq!(code, Some(0), "{text}");
    // The added slot's worker, on generation 2, in service.
    let slot2_generation = |status: &serde_json::Value| {
        status["slots"][2]["worker"]["generation"]
            .as_u64()
            .unwrap_or(0)
    };
    c.wait_until("slot 2 in service", || {
        let s = c.status_json();
        s["slots"][2]["worker"]["state"] == "in_service"
    });
    assert_eq!(slot2_generation(&c.status_json()), 2);
    let (code, text) = control(&c, &["abort"]);
    assert_eq!(code, Some(0), "{text}");
    let out = reload.join().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // Slot 2 starts again on generation 1, and then only v1 answers.
    c.wait_until("slot 2 back on generation 1, in service", || {
        let s = c.status_json();
        slot2_generation(&s) == 1 && s["slots"][2]["worker"]["state"] == "in_service"
    });
    let bodies: Vec<String> = (0..60).map(|_| c.get("/").text()).collect();
    assert!(bodies.iter().all(|b| b == "v1"), "{bodies:?}");
    let s = c.status_json();
    assert_eq!(s["generation"], 1, "{s}");
}
