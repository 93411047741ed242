//! Workers are separate Python processes, each importing the app itself.

use crate::common::*;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

const PID_APP: &str = r#"
import os
IMPORTED_IN = os.getpid()

def app(environ, start_response):
    body = ("%d %d" % (IMPORTED_IN, os.getpid())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"#;

#[test]
fn each_worker_imports_the_app_in_its_own_process() {
    let app = AppDir::new(&[("pidapp.py", PID_APP)]);
    let c = Corral::start(app.path(), &["pidapp:app", "-w", "3"], 3);
    let mut pids = HashSet::new();
    // Concurrent connections spread over the least-loaded workers.
    for _ in 0..10 {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let addr = c.addr.clone();
                std::thread::spawn(move || request(&addr, "GET", "/", &[], b"").text())
            })
            .collect();
        for h in handles {
            let text = h.join().unwrap();
            let (imported, serving) = text.split_once(' ').unwrap();
            assert_eq!(
                imported, serving,
                "the app was imported in the process that serves it"
            );
            pids.insert(serving.parse::<u32>().unwrap());
        }
        if pids.len() == 3 {
            break;
        }
    }
    assert_eq!(pids.len(), 3, "3 workers report 3 distinct pids: {pids:?}");
    assert!(!pids.contains(&c.pid()), "no worker runs in the supervisor");
    let children: HashSet<u32> = children_of(c.pid()).into_iter().collect();
    assert_eq!(children, pids, "the workers are corral's child processes");
}

/// A request that comes while no worker is in service but one boots (at
/// start, before the app has imported; after the only worker died) waits
/// for it, as a connection waits in gunicorn's listen queue, instead of
/// an immediate 503. With none booting (an app that cannot import), 503
/// with the reason, without waiting for the request timeout.
#[test]
fn a_request_waits_for_a_booting_worker_and_gets_503_only_when_none_comes() {
    let app = AppDir::new(&[(
        "app.py",
        "import os, time\n\
         if os.path.exists('broken'):\n\
         \x20   raise RuntimeError('cannot start')\n\
         time.sleep(1.5)\n\n\
         def app(environ, start_response):\n\
         \x20   if environ['PATH_INFO'] == '/die':\n\
         \x20       os._exit(1)\n\
         \x20   start_response('200 OK', [('Content-Length', '2')])\n\
         \x20   return [b'ok']\n",
    )]);
    let mut c = Corral::spawn(app.path(), &["app:app", "-w", "1"], &[]);
    c.wait_listening();
    let t = Instant::now();
    let r = c.get("/");
    assert_eq!(r.status, 200, "at start: {}", r.text());
    assert!(
        t.elapsed() > Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    // The only worker dies: its successor imports for 1.5 s.
    assert_eq!(c.get("/die").status, 502);
    let r = c.get("/");
    assert_eq!(r.status, 200, "after the worker died: {}", r.text());
    // No worker can come: the successor of the next one fails its import.
    std::fs::write(app.path().join("broken"), "").unwrap();
    assert_eq!(c.get("/die").status, 502);
    c.wait_until("the failed boot", || c.log.text().contains("cannot start"));
    let t = Instant::now();
    let r = c.get("/");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("no worker is in service"), "{}", r.text());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn a_dead_worker_is_replaced_and_the_supervisor_stays_up() {
    let app = AppDir::new(&[("pidapp.py", PID_APP)]);
    let c = Corral::start(app.path(), &["pidapp:app", "-w", "1"], 1);
    let first: u32 = c
        .get("/")
        .text()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    // SAFETY: killing a worker process of the corral we started.
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = c.get("/");
        if r.status == 200 {
            let pid: u32 = r.text().split(' ').nth(1).unwrap().parse().unwrap();
            if pid != first {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no replacement worker"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        c.log
            .wait_for("was killed by SIGKILL", Duration::from_secs(1))
            .is_some()
    );
}

const SPEED_APP: &str = r#"
import time

def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        time.sleep(0.05)
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
"#;

/// What /status says one worker may hold at once.
fn capacity(c: &Corral) -> u64 {
    c.status_json()["slots"][0]["worker"]["capacity"]
        .as_u64()
        .expect("capacity in /status")
}

#[test]
fn a_wsgi_workers_prefetch_queue_follows_how_fast_the_app_answers() {
    let app = AppDir::new(&[("speed.py", SPEED_APP)]);
    let c = Corral::start(
        app.path(),
        &["speed:app", "-w", "1", "--status-bind", "127.0.0.1:0"],
        1,
    );
    let burst = |path: &'static str, n: usize| {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let addr = c.addr.clone();
                std::thread::spawn(move || {
                    let mut s = connect(&addr);
                    let mut r = std::io::BufReader::new(s.try_clone().unwrap());
                    for _ in 0..n {
                        send_request(&mut s, "GET", path, &[], b"");
                        assert_eq!(read_response(&mut r, false).unwrap().status, 200);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    };
    // Answers in microseconds: a deep queue, so one read carries many.
    burst("/fast", 200);
    // (How deep depends on this machine's speed: the hop to the worker
    // counts too; the bench reaches the cap of 64.)
    let fast = capacity(&c);
    assert!(fast > 2, "capacity {fast} after fast answers");
    // Answers in 50 ms: one request waits in the worker, the rest in
    // corral, where any free worker can take them.
    burst("/slow", 2);
    assert_eq!(capacity(&c), 2, "one thread plus one queued");
    burst("/fast", 200);
    assert!(capacity(&c) > 2, "it deepens again");
}

#[test]
fn corral_raises_its_own_open_file_limit_and_workers_get_the_old_one_back() {
    use std::os::unix::process::CommandExt;
    let app = AppDir::new(&[(
        "limits.py",
        r#"
import resource

def app(environ, start_response):
    body = ("%d %d" % resource.getrlimit(resource.RLIMIT_NOFILE)).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"#,
    )]);
    let mut hard: libc::rlimit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut hard) };
    let hard = hard.rlim_max;
    assert!(hard > 256, "the machine's hard limit is too low to tell");
    // corral starts with a low soft limit, as under many service managers.
    let mut c = Corral::spawn_with(app.path(), &["limits:app", "-w", "1"], &[], |cmd| {
        // SAFETY: setrlimit in the child between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: 256,
                    rlim_max: hard,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    c.wait_listening();
    c.wait_in_service(1);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", c.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let soft: u64 = line.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert_eq!(soft, hard.min(1 << 20), "{line}");
    let r = c.get("/");
    assert_eq!(
        r.text(),
        format!("256 {hard}"),
        "the worker got the old limit"
    );
}

/// The value of the sample `name` (with its labels) in a /metrics text.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn the_front_runs_a_shard_per_worker_each_serving_its_own_connections() {
    let app = AppDir::new(&[("pidapp.py", PID_APP)]);
    // Four asked for, two started: no more shards than workers.
    let c = Corral::start(
        app.path(),
        &[
            "pidapp:app",
            "-w",
            "2",
            "--io-threads",
            "4",
            "--status-bind",
            "127.0.0.1:0",
        ],
        2,
    );
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", c.pid()))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect();
    assert!(threads.iter().any(|t| t == "corral-front-1"), "{threads:?}");
    assert!(
        !threads.iter().any(|t| t == "corral-front-2"),
        "{threads:?}"
    );
    // The log says so at start-up.
    assert!(
        c.log
            .wait_for(
                "the front runs 2 shard(s): server.io_threads 4",
                Duration::from_secs(5)
            )
            .is_some(),
        "{}",
        c.log.text()
    );
    // Eight keep-alive connections, open together: the shards share them
    // out, and each shard's requests go to its own worker while it has
    // room, so both workers serve.
    let mut conns: Vec<_> = (0..8)
        .map(|_| std::io::BufReader::new(c.connect()))
        .collect();
    let mut pids = HashSet::new();
    for _ in 0..5 {
        for conn in &mut conns {
            send_request(conn.get_mut(), "GET", "/", &[], b"");
        }
        for conn in &mut conns {
            let r = read_response(conn, false).unwrap();
            assert_eq!(r.status, 200);
            let text = r.text();
            pids.insert(text.split(' ').nth(1).unwrap().to_string());
        }
    }
    assert_eq!(pids.len(), 2, "both workers served: {pids:?}");
    // Each shard counts in its own counters; /metrics adds them up.
    let m = c.status("/metrics").text();
    assert_eq!(
        sample(&m, "corral_requests_total{class=\"2xx\"}"),
        Some(40.0),
        "{m}"
    );
    assert_eq!(sample(&m, "corral_connections_open"), Some(8.0), "{m}");
    drop(conns);
    c.wait_until("the connections counted closed", || {
        sample(&c.status("/metrics").text(), "corral_connections_open") == Some(0.0)
    });
}

/// Answers at once, but `/slow` after 3 s; every call appends its path and
/// query to calls.log, so that a test can count how often each ran.
const MIXED_APP: &str = r#"
import os, time
HERE = os.path.dirname(os.path.abspath(__file__))

def app(environ, start_response):
    with open(os.path.join(HERE, "calls.log"), "a") as f:
        f.write("%s?%s\n" % (environ["PATH_INFO"], environ["QUERY_STRING"]))
    if environ["PATH_INFO"] == "/slow":
        time.sleep(3)
    if environ["PATH_INFO"] == "/ready":
        time.sleep(0.05)
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"#;

/// `clients` threads each send `each` GETs of `/?c=K-J`, a connection
/// each; the longest any took.
fn fast_requests(addr: &str, clients: usize, each: usize) -> Duration {
    let handles: Vec<_> = (0..clients)
        .map(|k| {
            let addr = addr.to_string();
            std::thread::spawn(move || {
                (0..each)
                    .map(|j| {
                        let t = Instant::now();
                        let r = request(&addr, "GET", &format!("/?c={k}-{j}"), &[], b"");
                        assert_eq!(r.status, 200, "{}", r.text());
                        t.elapsed()
                    })
                    .max()
                    .unwrap_or_default()
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .max()
        .unwrap_or_default()
}

/// How many times each line of calls.log was written.
fn calls(app: &AppDir) -> HashMap<String, usize> {
    let text = std::fs::read_to_string(app.path().join("calls.log")).unwrap_or_default();
    let mut counts = HashMap::new();
    for line in text.lines() {
        *counts.entry(line.to_string()).or_insert(0) += 1;
    }
    counts
}

fn moved_total(c: &Corral) -> u64 {
    c.status("/metrics")
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("corral_requests_moved_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("corral_requests_moved_total in /metrics")
}

/// A gunicorn sync worker takes a request only when it is free, so a
/// request never waits behind a slow one while another worker could run
/// it. corral queues a few requests in each worker for speed; those
/// queued behind a long request are given back and run elsewhere.
fn queued_behind_a_long_one(shared_memory: bool) {
    let app = AppDir::new(&[
        ("app.py", MIXED_APP),
        (
            "corral.toml",
            &format!(
                "[app]\nmodule = \"app:app\"\n[workers]\ncount = 2\nthreads = 1\n\
                 shared_memory = {shared_memory}\n[health]\nstatus_bind = \"127.0.0.1:0\"\n\
                 [server]\nbind = [\"127.0.0.1:0\"]\n"
            ),
        ),
    ]);
    let c = Corral::start(app.path(), &["-c", "corral.toml"], 2);
    let transport = if shared_memory {
        "shared-memory"
    } else {
        "socket"
    };
    let status = c.status_json();
    for slot in status["slots"].as_array().unwrap() {
        assert_eq!(slot["worker"]["transport"], transport, "{status}");
    }
    // Fast answers deepen each worker's queue.
    for i in 0..100 {
        assert_eq!(c.get(&format!("/?warm={i}")).status, 200);
    }
    let addr = c.addr.clone();
    let slow = std::thread::spawn(move || {
        let t = Instant::now();
        let r = request(&addr, "GET", "/slow", &[], b"");
        (r.status, t.elapsed())
    });
    c.wait_until("the slow request to start", || {
        calls(&app).contains_key("/slow?")
    });
    let worst = fast_requests(&c.addr, 8, 10);
    let (status, took) = slow.join().unwrap();
    assert_eq!(status, 200);
    assert!(took >= Duration::from_secs(3), "{took:?}");
    assert!(
        worst < Duration::from_millis(1500),
        "a fast request waited {worst:?} while the slow one ran"
    );
    let counts = calls(&app);
    for k in 0..8 {
        for j in 0..10 {
            assert_eq!(counts.get(&format!("/?c={k}-{j}")), Some(&1), "{counts:?}");
        }
    }
    assert_eq!(counts.values().sum::<usize>(), 100 + 1 + 80, "{counts:?}");
    assert!(moved_total(&c) >= 1);
}

#[test]
fn requests_queued_behind_a_long_one_are_run_by_a_free_worker_and_each_only_once() {
    queued_behind_a_long_one(true);
}

#[test]
fn requests_queued_behind_a_long_one_move_over_the_socket_transport_too() {
    queued_behind_a_long_one(false);
}

/// With one worker, what it gives back waits in corral until it is free
/// (no 503, no request run twice), and its readiness probe is never given
/// back: it waits for the long request, within probe_timeout, and passes.
#[test]
fn with_one_worker_requests_given_back_wait_for_it_and_its_probe_stays() {
    let app = AppDir::new(&[
        ("app.py", MIXED_APP),
        (
            "corral.toml",
            "[app]\nmodule = \"app:app\"\n[workers]\ncount = 1\nthreads = 1\n[health]\nready_path = \"/ready\"\nprobe_interval = \"100ms\"\nprobe_timeout = \"5s\"\nunhealthy_after = 1\nstatus_bind = \"127.0.0.1:0\"\n[server]\nbind = [\"127.0.0.1:0\"]\n",
        ),
    ]);
    let c = Corral::start(app.path(), &["-c", "corral.toml"], 1);
    for i in 0..50 {
        assert_eq!(c.get(&format!("/?warm={i}")).status, 200);
    }
    let addr = c.addr.clone();
    let slow = std::thread::spawn(move || request(&addr, "GET", "/slow", &[], b"").status);
    c.wait_until("the slow request to start", || {
        calls(&app).contains_key("/slow?")
    });
    let worst = fast_requests(&c.addr, 4, 1);
    assert_eq!(slow.join().unwrap(), 200);
    assert!(worst < Duration::from_secs(5), "{worst:?}");
    let counts = calls(&app);
    for k in 0..4 {
        assert_eq!(counts.get(&format!("/?c={k}-0")), Some(&1), "{counts:?}");
    }
    assert!(moved_total(&c) >= 1);
    let log = c.log.text();
    assert!(!log.contains("readiness check"), "{log}");
    assert_eq!(c.status("/health/ready").status, 200);
}

/// A request that comes the moment the port opens (a new container's
/// first request, a probe) waits for the booting workers as later ones
/// do: in the few milliseconds before the supervisor's first step it got
/// 503 "no worker is in service".
#[test]
fn a_request_the_moment_the_port_opens_waits_for_the_first_workers() {
    let app = AppDir::new(&[(
        "app.py",
        "import time\ntime.sleep(0.3)\n\n\
         def app(environ, start_response):\n\
         \x20   start_response('200 OK', [('Content-Length', '2')])\n\
         \x20   return [b'ok']\n",
    )]);
    for round in 0..4 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let c = Corral::spawn(app.path(), &["app:app", "-w", "1", "-b", &addr], &[]);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut s = loop {
            match std::net::TcpStream::connect(&addr) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_micros(500))
                }
                Err(e) => panic!("corral never listened: {e}\n{}", c.log.text()),
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        send_request(&mut s, "GET", "/", &[], b"");
        let r = read_response(&mut std::io::BufReader::new(s), false).expect("a response");
        assert_eq!(r.status, 200, "round {round}: {}", r.text());
    }
}
