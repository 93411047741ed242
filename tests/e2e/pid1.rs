//! corral as PID 1 of a PID namespace, as in a container started without
//! `--init`: it reaps the orphans it inherits, stops on TERM with exit code
//! 0, and leaves none of the app's processes behind. Runs corral under
//! `unshare --pid --fork --mount-proc`, which needs root: under `CI` a
//! missing precondition fails the test; elsewhere it is skipped, loudly.

use crate::common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `/orphan` runs a shell that backgrounds a short sleep and exits: the
/// sleep is orphaned, and given to PID 1. `/keep` starts a long subprocess
/// in the worker's process group.
const APP: &str = r#"
import subprocess

def app(environ, start_response):
    body = b"hello"
    if environ["PATH_INFO"] == "/orphan":
        subprocess.run(["sh", "-c", "sleep 0.1 &"], check=True)
    elif environ["PATH_INFO"] == "/keep":
        subprocess.Popen(["sleep", environ["QUERY_STRING"]])
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"#;

/// Whether this machine can run corral as PID 1 of a new PID namespace.
fn can_unshare() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root for unshare --pid".into());
    }
    match Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "unshare --pid --fork --mount-proc fails: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run unshare (util-linux): {e}")),
    }
}

/// Skips the test outside CI when the precondition is missing; fails under CI.
fn precondition() -> bool {
    match can_unshare() {
        Ok(()) => true,
        Err(why) if std::env::var_os("CI").is_some() => panic!("{why}"),
        Err(why) => {
            eprintln!("SKIPPED (not in CI): {why}");
            false
        }
    }
}

/// The process's state letter and parent, from /proc/PID/stat.
fn state_and_parent(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit(')').next()?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.next()?.parse().ok()?))
}

fn zombies_of(parent: u32) -> Vec<u32> {
    children_of(parent)
        .into_iter()
        .filter(|p| matches!(state_and_parent(*p), Some(('Z', _))))
        .collect()
}

/// Pids (as seen from here) of the processes whose command line is `argv`.
fn processes_running(argv: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .ok()
                .as_deref()
                == Some(&want[..])
        })
        .collect()
}

/// Starts corral as PID 1 of a new PID namespace, serving APP with two
/// workers; the Corral (its child is unshare) and corral's pid as seen here.
fn start_as_pid_1(app: &AppDir) -> (Corral, u32) {
    let mut cmd = Command::new("unshare");
    // --kill-child: if this test dies, corral (and so the namespace) does too.
    cmd.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(corral_bin())
        .args([
            "app:app",
            "-w",
            "2",
            "-b",
            "127.0.0.1:0",
            "--python",
            &python(),
        ])
        .arg("--socket")
        .arg(app.path().join("control.sock"))
        .current_dir(app.path())
        .env_remove("VIRTUAL_ENV")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start unshare");
    let log = Log::collect(&mut child, "corral");
    let mut c = Corral {
        child,
        log,
        addr: String::new(),
        status_addr: String::new(),
        socket: app.path().join("control.sock"),
    };
    c.wait_listening();
    c.wait_in_service(2);
    // corral as this test sees it: unshare's only child.
    let corral = children_of(c.pid());
    assert_eq!(corral.len(), 1, "unshare runs one child: {corral:?}");
    (c, corral[0])
}

#[test]
fn as_pid_1_corral_reaps_orphans_stops_on_term_and_leaves_nothing_behind() {
    if !precondition() {
        return;
    }
    let app = AppDir::new(&[("app.py", APP)]);
    let (mut c, corral) = start_as_pid_1(&app);

    for _ in 0..20 {
        let r = c.get("/orphan");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // The sleeps end 0.1 s after their request; a zombie left behind stays.
    std::thread::sleep(Duration::from_millis(500));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut zombies = zombies_of(corral);
    while !zombies.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        zombies = zombies_of(corral);
    }
    assert!(
        zombies.is_empty(),
        "{} zombie(s) left under corral after 20 requests: {zombies:?}",
        zombies.len()
    );

    // A subprocess of a worker, there at the stop.
    let marker = format!("1000.{}", std::process::id());
    assert_eq!(c.get(&format!("/keep?{marker}")).status, 200);
    // Seen there once only after the answer, under a loaded machine: look
    // for it a while.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut kept = processes_running(&["sleep", &marker]);
    while kept.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        kept = processes_running(&["sleep", &marker]);
    }
    assert_eq!(kept.len(), 1, "the app's subprocess runs");
    let _guard = KillOnDrop(kept[0]);

    // TERM reaches PID 1 (it has a handler), and it stops cleanly.
    // SAFETY: kill(2) on corral, the child of the unshare this test runs.
    unsafe {
        libc::kill(corral as i32, libc::SIGTERM);
    }
    let st = c
        .wait_exit(Duration::from_secs(30))
        .expect("corral stops on TERM");
    assert_eq!(st.code(), Some(0), "exit code; log:\n{}", c.log.text());
    let text = c.log.text();
    assert!(text.contains("running as PID 1"), "log:\n{text}");
    assert!(text.contains("stopped"), "log:\n{text}");
    assert!(
        wait_gone(&kept, Duration::from_secs(5)),
        "the app's subprocess outlived corral"
    );
}

#[test]
fn as_pid_1_corral_stops_fast_on_int_with_exit_code_0() {
    if !precondition() {
        return;
    }
    let app = AppDir::new(&[("app.py", APP)]);
    let (mut c, corral) = start_as_pid_1(&app);
    assert_eq!(c.get("/").status, 200);
    let t = Instant::now();
    // SAFETY: kill(2) on corral, the child of the unshare this test runs.
    unsafe {
        libc::kill(corral as i32, libc::SIGINT);
    }
    let st = c
        .wait_exit(Duration::from_secs(10))
        .expect("corral stops on INT");
    assert_eq!(st.code(), Some(0), "exit code; log:\n{}", c.log.text());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        c.log.text().contains("SIGINT: fast stop"),
        "log:\n{}",
        c.log.text()
    );
}

/// A container whose root file system is read-only (Kubernetes'
/// `readOnlyRootFilesystem`): the worker script's folder goes to /dev/shm,
/// and with nowhere to put its control socket corral serves without one,
/// says so, and still reloads on HUP.
#[test]
fn a_read_only_container_serves_without_a_control_socket_and_reloads_on_hup() {
    if !require_root("a mount namespace with read-only folders") {
        return;
    }
    let app = AppDir::new(&[(
        "app.py",
        "def app(environ, start_response):\n    start_response('200 OK', [])\n    return [b'ok']\n",
    )]);
    let mut c = Corral::spawn_read_only(app.path(), &["app:app", "-w", "1"], &[]);
    c.wait_listening();
    c.wait_in_service(1);
    assert_eq!(c.get("/").text(), "ok");
    let log = c.log.text();
    assert!(
        log.contains("WARN no control socket") && log.contains("the file system is read-only"),
        "{log}"
    );
    c.signal(libc::SIGHUP);
    assert!(
        c.log
            .wait_for("reload done", Duration::from_secs(20))
            .is_some(),
        "{}",
        c.log.text()
    );
    assert_eq!(c.get("/").text(), "ok");
    c.signal(libc::SIGTERM);
    assert_eq!(
        c.wait_exit(Duration::from_secs(20)).and_then(|s| s.code()),
        Some(0)
    );
}

/// `CMD ["corral", "main:app"]` in a Dockerfile: with no --bind (and no
/// PORT) corral listens where gunicorn does, 127.0.0.1:8000, which no
/// client outside the container reaches (`docker run -p 8000:8000` gets
/// "connection reset"). The start-up log says so and what to give; an
/// address given on purpose is left alone. In a network namespace of its
/// own, so that port 8000 is nobody else's.
#[test]
fn as_pid_1_the_default_loopback_address_is_named_as_unreachable_from_outside() {
    if !precondition() {
        return;
    }
    let app = AppDir::new(&[("app.py", APP)]);
    let start = |bind: &[&str]| {
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--net",
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child",
            "sh",
            "-c",
            "ip link set lo up && exec \"$@\"",
            "sh",
        ])
        .arg(corral_bin())
        .args(["app:app", "-w", "1", "--python", &python()])
        .args(bind)
        .arg("--socket")
        .arg(app.path().join("control.sock"))
        .current_dir(app.path())
        .env_remove("VIRTUAL_ENV")
        .env_remove("PORT")
        .env("STATE_DIRECTORY", app.path().join(".corral-state"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start unshare");
        let log = Log::collect(&mut child, "corral");
        let c = Corral {
            child,
            log,
            addr: String::new(),
            status_addr: String::new(),
            socket: app.path().join("control.sock"),
        };
        c.wait_in_service(1);
        c
    };
    let c = start(&[]);
    let text = c.log.text();
    assert!(
        text.contains("listening on http://127.0.0.1:8000"),
        "{text}"
    );
    assert!(
        text.contains("WARN listening on 127.0.0.1:8000 only, the default")
            && text.contains("(corral is PID 1)")
            && text.contains("nothing outside it can connect")
            && text.contains("give --bind 0.0.0.0:8000"),
        "{text}"
    );
    drop(c);
    let c = start(&["-b", "127.0.0.1:8000"]);
    let text = c.log.text();
    assert!(!text.contains("nothing outside it can connect"), "{text}");
}
