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
    assert!(
        c.log
            .text()
            .contains("canary passed: generation 2 takes over")
    );
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
    let socket = c.socket.clone();
    let reload = std::thread::spawn(move || {
        std::process::Command::new(corral_bin())
            .args(["reload", "--wait", "--canary", "20%", "--for", "60s"])
            .arg("--socket")
            .arg(socket)
            .output()
            .unwrap()
    });
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
    assert!(c.log.text().contains("promoted by `corral promote`"));
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
