//! USR2: a new corral binary takes over the listen sockets of the running
//! one without refusing a single connection; the old one exits once the new
//! one is in service.

use crate::common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const APP: &str = "import os\n\ndef app(environ, start_response):\n    body = str(os.getppid()).encode()\n    start_response(\"200 OK\", [(\"Content-Length\", str(len(body)))])\n    return [body]\n";

#[test]
fn usr2_hands_the_sockets_to_a_new_corral_without_a_refused_connection() {
    let app = AppDir::new(&[("app.py", APP)]);
    let mut c = Corral::start(
        app.path(),
        &[
            "app:app",
            "-w",
            "2",
            "--status-bind",
            "127.0.0.1:0",
            "--pid",
            "corral.pid",
        ],
        2,
    );
    let old = c.pid();
    let pid_file = app.path().join("corral.pid");
    let named = || {
        std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(named(), old.to_string());
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (addr, stop, failed, answered) = (
                c.addr.clone(),
                stop.clone(),
                failed.clone(),
                answered.clone(),
            );
            std::thread::spawn(move || {
                let mut served_by = std::collections::HashSet::new();
                let deadline = Instant::now() + Duration::from_secs(30);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    // A new connection each time: a refused one would show.
                    match std::net::TcpStream::connect(&addr) {
                        Err(e) => {
                            eprintln!("connect: {e}");
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {
                            let r = request(&addr, "GET", "/", &[("Connection", "close")], b"");
                            if r.status == 200 {
                                served_by.insert(r.text());
                                answered.fetch_add(1, Ordering::Relaxed);
                            } else {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
                served_by
            })
        })
        .collect();
    // `n` more answers to the load (at most 30 s).
    let more_answers = |n: usize| {
        let target = answered.load(Ordering::Relaxed) + n;
        let deadline = Instant::now() + Duration::from_secs(30);
        while answered.load(Ordering::Relaxed) < target {
            assert!(Instant::now() < deadline, "the load got no answers");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    more_answers(20);
    c.signal(libc::SIGUSR2);
    let guard = c.reexec_child();
    let new = guard.0;
    assert!(
        c.log
            .wait_for("asking the old corral", Duration::from_secs(30))
            .is_some(),
        "{}",
        c.log.text()
    );
    let st = c
        .wait_exit(Duration::from_secs(30))
        .expect("the old corral exits");
    assert_eq!(st.code(), Some(0));
    // The old corral is gone: these answers come from the new one.
    more_answers(20);
    stop.store(true, Ordering::Relaxed);
    let mut parents = std::collections::HashSet::new();
    for h in clients {
        parents.extend(h.join().unwrap());
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no refused or failed request"
    );
    assert!(parents.contains(&old.to_string()), "the old corral served");
    assert!(parents.contains(&new.to_string()), "the new corral serves");
    // The new one answers on the same address, status server included.
    assert_eq!(c.get("/").text(), new.to_string());
    let s = c.status_json();
    assert_eq!(s["supervisor"]["pid"].as_u64(), Some(new as u64));
    assert!(c.socket.exists(), "the new corral holds the control socket");
    // The new corral took the pid file over from the old one, which
    // still ran when it wrote it.
    assert_eq!(named(), new.to_string());
}

#[test]
fn after_a_new_corral_that_never_came_up_the_next_usr2_starts_another() {
    let app = AppDir::new(&[
        ("app.py", APP),
        ("corral.toml", "[deploy]\nready_timeout = \"2s\"\n"),
    ]);
    let mut c = Corral::start(app.path(), &["app:app", "-w", "1", "-b", "127.0.0.1:0"], 1);
    let old = c.pid();
    // A deploy that breaks the app: the new corral's workers never boot,
    // it gives up after ready_timeout, and the old one serves on.
    std::fs::write(
        app.path().join("app.py"),
        "raise RuntimeError('broken deploy')\n",
    )
    .unwrap();
    c.signal(libc::SIGUSR2);
    let failed = c.reexec_child();
    c.log
        .wait_for("is gone; this one serves on", Duration::from_secs(30))
        .unwrap_or_else(|| panic!("{}", c.log.text()));
    assert!(wait_gone(&[failed.0], Duration::from_secs(10)));
    assert_eq!(c.get("/").text(), old.to_string());
    // Fixed: the next USR2 is not "ignored", and its corral takes over.
    std::fs::write(app.path().join("app.py"), APP).unwrap();
    c.signal(libc::SIGUSR2);
    c.wait_until("a second new corral", || {
        c.log.count("started a new corral (pid ") == 2
    });
    let new = c.last_reexec_child();
    assert_ne!(new.0, failed.0);
    let st = c
        .wait_exit(Duration::from_secs(30))
        .expect("the old corral exits once the new one serves");
    assert_eq!(st.code(), Some(0));
    assert_eq!(c.get("/").text(), new.0.to_string());
    assert!(
        !c.log.text().contains("SIGUSR2 ignored"),
        "{}",
        c.log.text()
    );
}

/// An upgrade (pip, apt, `install`) puts a new file at corral's path and
/// leaves the running one's deleted: USR2 starts the new file, as
/// gunicorn's re-exec by path does (it failed with "No such file", and
/// gunicorn's USR2-then-QUIT recipe then stopped the only corral).
#[test]
fn usr2_after_the_binary_was_replaced_on_disk_starts_the_new_file() {
    let app = AppDir::new(&[("app.py", APP)]);
    let mut c = Corral::spawn_copy(app.path(), &["app:app", "-w", "1", "-b", "127.0.0.1:0"]);
    c.wait_listening();
    c.wait_in_service(1);
    let old = c.pid();
    let bin = app.path().join("corral");
    // A new file renamed over the path, as package tools install it.
    std::fs::copy(&bin, app.path().join("corral.new")).unwrap();
    std::fs::rename(app.path().join("corral.new"), &bin).unwrap();
    let running = std::fs::read_link(format!("/proc/{old}/exe")).unwrap();
    assert!(
        running.to_string_lossy().ends_with(" (deleted)"),
        "{running:?}"
    );
    c.signal(libc::SIGUSR2);
    let new = c.reexec_child();
    let st = c.wait_exit(Duration::from_secs(30)).unwrap_or_else(|| {
        panic!(
            "the old corral exits once the new one serves:\n{}",
            c.log.text()
        )
    });
    assert_eq!(st.code(), Some(0));
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/exe", new.0)).unwrap(),
        bin.canonicalize().unwrap(),
        "the new corral runs the file now at the path"
    );
    assert_eq!(c.get("/").text(), new.0.to_string());
}

/// A new corral that never comes into service (its workers cannot boot)
/// gives up after `ready_timeout` and leaves the old one as it was: the
/// pid file still names the old corral and its control socket still
/// answers (the new one takes both over only once it is in service), and
/// no rollback runs, since the old corral serves code that is not the
/// failure's (gunicorn renames its pid file to `.oldbin` and back).
#[test]
fn a_new_corral_that_never_came_up_leaves_the_pid_file_and_control_socket_and_rolls_nothing_back() {
    let app = AppDir::new(&[
        ("app.py", APP),
        (
            "corral.toml",
            "[deploy]\nready_timeout = \"2s\"\n\
             rollback_hook = [\"/bin/sh\", \"-c\", \"echo ran >> rolled-back\"]\n",
        ),
    ]);
    let mut c = Corral::start(
        app.path(),
        &[
            "app:app",
            "-w",
            "1",
            "-b",
            "127.0.0.1:0",
            "--pid",
            "corral.pid",
        ],
        1,
    );
    let old = c.pid();
    let pid_file = app.path().join("corral.pid");
    let named = || std::fs::read_to_string(&pid_file).map(|t| t.trim().to_owned());
    assert_eq!(named().unwrap(), old.to_string());
    std::fs::write(
        app.path().join("app.py"),
        "raise RuntimeError('broken deploy')\n",
    )
    .unwrap();
    c.signal(libc::SIGUSR2);
    let failed = c.reexec_child();
    c.log
        .wait_for("is gone; this one serves on", Duration::from_secs(30))
        .unwrap_or_else(|| panic!("{}", c.log.text()));
    assert!(wait_gone(&[failed.0], Duration::from_secs(10)));
    assert_eq!(c.get("/").text(), old.to_string());
    let mut wrong = Vec::new();
    match named() {
        Ok(pid) if pid == old.to_string() => {}
        other => wrong.push(format!(
            "the pid file should name the old corral {old}: {other:?}"
        )),
    }
    let status = std::process::Command::new(corral_bin())
        .args(["status", "--json", "--socket"])
        .arg(&c.socket)
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&status.stdout);
    let pid = serde_json::from_str::<serde_json::Value>(&answer)
        .ok()
        .and_then(|s| s["supervisor"]["pid"].as_u64());
    if pid != Some(old as u64) {
        wrong.push(format!(
            "the old corral should answer on its control socket: {answer}{}",
            String::from_utf8_lossy(&status.stderr)
        ));
    }
    let staged = app.path().join(".corral-control.sock.new");
    if staged.exists() {
        wrong.push("the new corral's control socket was left behind".into());
    }
    if app.path().join("rolled-back").exists() || c.log.text().contains("running the rollback hook")
    {
        wrong.push("the new corral ran the rollback hook".into());
    }
    assert!(
        wrong.is_empty(),
        "{}\nlog:\n{}",
        wrong.join("\n"),
        c.log.text()
    );
    // Fixed: `reload --wait` reaches the old corral and deploys it.
    std::fs::write(app.path().join("app.py"), APP).unwrap();
    let reload = std::process::Command::new(corral_bin())
        .args(["reload", "--wait", "--socket"])
        .arg(&c.socket)
        .output()
        .unwrap();
    assert!(reload.status.success(), "{reload:?}");
    c.signal(libc::SIGTERM);
    assert_eq!(
        c.wait_exit(Duration::from_secs(30)).and_then(|s| s.code()),
        Some(0)
    );
    assert!(!pid_file.exists(), "removed at the old corral's exit");
    assert!(!c.socket.exists(), "removed at the old corral's exit");
}

/// A new corral of a USR2 that is not in service by `ready_timeout` exits,
/// as the old one serves on; but when the old one is gone by then (killed,
/// or crashed), exiting would leave nothing on the sockets: it serves on,
/// and its workers come up once the code is fixed.
#[test]
fn a_new_corral_whose_old_one_is_gone_serves_on_past_its_ready_timeout() {
    let app = AppDir::new(&[
        ("app.py", APP),
        ("corral.toml", "[deploy]\nready_timeout = \"2s\"\n"),
    ]);
    let c = Corral::start(app.path(), &["app:app", "-w", "1", "-b", "127.0.0.1:0"], 1);
    std::fs::write(
        app.path().join("app.py"),
        "raise RuntimeError('broken deploy')\n",
    )
    .unwrap();
    c.signal(libc::SIGUSR2);
    let new = c.reexec_child();
    c.signal(libc::SIGKILL);
    c.log
        .wait_for("is gone: this one serves on", Duration::from_secs(15))
        .unwrap_or_else(|| panic!("{}", c.log.text()));
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) with no signal on the corral this test started.
    let alive = unsafe { libc::kill(new.0 as i32, 0) } == 0;
    assert!(alive, "the new corral exited:\n{}", c.log.text());
    std::fs::write(app.path().join("app.py"), APP).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let answer = request(&c.addr, "GET", "/", &[], b"");
        if answer.status == 200 {
            assert_eq!(answer.text(), new.0.to_string());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new corral never served:\n{}",
            c.log.text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An app that reads its version at import, notes each import, and then
/// takes as long to come up as `slow.txt` says.
const VERSIONED: &str = "import os, time\nhere = os.path.dirname(os.path.abspath(__file__))\nVERSION = open(os.path.join(here, 'version.txt')).read().strip()\nwith open(os.path.join(here, 'imports.log'), 'a') as f:\n    f.write(VERSION + '\\n')\ntime.sleep(float(open(os.path.join(here, 'slow.txt')).read()))\n\ndef app(environ, start_response):\n    body = VERSION.encode()\n    start_response('200 OK', [('Content-Length', str(len(body)))])\n    return [body]\n";

/// Starts corral on [`VERSIONED`] at v1, sends USR2, and returns once the
/// new corral's worker has read v1 and while it is still starting: the
/// moment a deploy writes v2 and reloads.
fn mid_handover(app: &AppDir) -> (Corral, KillOnDrop) {
    let c = Corral::start(app.path(), &["app:app", "-w", "1", "-b", "127.0.0.1:0"], 1);
    std::fs::write(app.path().join("slow.txt"), "3").unwrap();
    c.signal(libc::SIGUSR2);
    let new = c.reexec_child();
    let imports = app.path().join("imports.log");
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::fs::read_to_string(&imports)
        .unwrap_or_default()
        .lines()
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "the new corral's worker never imported:\n{}",
            c.log.text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(app.path().join("version.txt"), "v2").unwrap();
    (c, new)
}

fn versioned_app() -> AppDir {
    AppDir::new(&[
        ("app.py", VERSIONED),
        ("version.txt", "v1"),
        ("slow.txt", "0"),
    ])
}

/// A deploy that reloads while a USR2 hand-over is under way: the old
/// corral would cancel the reload at the hand-over (exit 3), and the new
/// one, which read the code before the deploy, would serve the old code
/// for good. The reload goes to the new corral instead.
#[test]
fn a_reload_wait_during_a_usr2_hand_over_reaches_the_new_corral_and_the_new_code_serves() {
    let app = versioned_app();
    let (mut c, new) = mid_handover(&app);
    let out = std::process::Command::new(corral_bin())
        .args(["reload", "--wait", "--timeout", "30s", "--socket"])
        .arg(&c.socket)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{text}{err}\n{}", c.log.text());
    assert!(text.contains("reloaded: generation 2"), "{text}");
    assert!(err.contains("USR2 hand-over"), "{err}");
    assert_eq!(c.get("/").text(), "v2");
    let st = c
        .wait_exit(Duration::from_secs(30))
        .expect("the old corral exits");
    assert_eq!(st.code(), Some(0));
    assert_eq!(
        c.get("/").text(),
        "v2",
        "served by the new corral (pid {})",
        new.0
    );
}

/// The same with a HUP (systemd's `ExecReload=kill -HUP $MAINPID` goes to
/// the old corral until the new one has taken over): passed on.
#[test]
fn a_hup_during_a_usr2_hand_over_is_passed_on_to_the_new_corral() {
    let app = versioned_app();
    let (c, _new) = mid_handover(&app);
    c.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let answer = request(&c.addr, "GET", "/", &[], b"");
        if answer.status == 200 && answer.text() == "v2" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "v2 never served:\n{}",
            c.log.text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(c.log.has("during a USR2 hand-over"), "{}", c.log.text());
}

/// A `corral reload` passed on (as a SIGHUP) to the new corral of a USR2
/// that then gives up (not in service by its `ready_timeout`) went with
/// it: told "passed on", the deploy kept the old corral serving the code
/// from before it for good. It starts in the old corral instead, as one
/// asked for before the new corral could take a HUP does.
#[test]
fn a_reload_passed_on_to_a_new_corral_that_gives_up_is_done_by_the_old_one() {
    let app = AppDir::new(&[
        ("app.py", VERSIONED),
        ("version.txt", "v1"),
        ("slow.txt", "0"),
        ("corral.toml", "[deploy]\nready_timeout = \"20s\"\n"),
    ]);
    let c = Corral::start(app.path(), &["app:app", "-w", "1", "-b", "127.0.0.1:0"], 1);
    // The new corral's worker takes longer than its ready_timeout (the
    // old one keeps its own until a restart).
    std::fs::write(
        app.path().join("corral.toml"),
        "[deploy]\nready_timeout = \"2s\"\n",
    )
    .unwrap();
    std::fs::write(app.path().join("slow.txt"), "3").unwrap();
    c.signal(libc::SIGUSR2);
    let new = c.reexec_child();
    c.wait_until("the new corral catches HUP", || {
        std::fs::read_to_string(format!("/proc/{}/status", new.0))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << (libc::SIGHUP - 1)) != 0)
    });
    std::fs::write(app.path().join("version.txt"), "v2").unwrap();
    let out = std::process::Command::new(corral_bin())
        .args(["reload", "--socket"])
        .arg(&c.socket)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("passed on to the new corral"), "{text}");
    c.log
        .wait_for("is gone; this one serves on", Duration::from_secs(30))
        .unwrap_or_else(|| panic!("{}", c.log.text()));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = request(&c.addr, "GET", "/", &[], b"");
        if answer.status == 200 && answer.text() == "v2" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old corral still serves {:?}, not v2:\n{}",
            answer.text(),
            c.log.text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
