//! `[hooks]`: commands run when a worker exits, when a generation is in
//! service and when a reload fails, with their `CORRAL_*` variables; a
//! hook past `hook_timeout` is killed without holding anything up; and the
//! README's prometheus_client multiprocess recipe with the real library.

use crate::common::*;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// A WSGI app: `/pid` says which worker answered, `/exit` ends that worker
/// with code 7 just after it answered.
const APP: &str = r#"
import os, threading

def app(environ, start_response):
    if environ["PATH_INFO"] == "/exit":
        threading.Timer(0.2, os._exit, (7,)).start()
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"#;

/// The hook: writes the `CORRAL_*` variables it got and its folder to
/// `events/<kind>-<worker pid or generation>.json`.
const HOOK: &str = r#"
import json, os, sys
kind = sys.argv[1]
env = {k: v for k, v in os.environ.items() if k.startswith("CORRAL_")}
name = "%s-%s" % (kind, env.get("CORRAL_WORKER_PID") or env.get("CORRAL_GENERATION"))
os.makedirs("events", exist_ok=True)
with open("events/%s.tmp" % name, "w") as f:
    json.dump({"env": env, "cwd": os.getcwd()}, f)
os.replace("events/%s.tmp" % name, "events/%s.json" % name)
print("recorded", name)
"#;

/// What the hook recorded as `name`, once it has.
fn event(c: &Corral, dir: &Path, name: &str) -> serde_json::Value {
    let path = dir.join("events").join(format!("{name}.json"));
    c.wait_until(&format!("the hook to record {name}"), || path.exists());
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// What `corral check -c corral.toml` in `dir` printed, once it failed.
fn check_refused(dir: &Path) -> String {
    let out = Command::new(corral_bin())
        .args(["check", "-c", "corral.toml", "--python", &python()])
        .current_dir(dir)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    text
}

fn reload(c: &Corral) -> Output {
    Command::new(corral_bin())
        .args(["reload", "--wait", "--socket"])
        .arg(&c.socket)
        .output()
        .expect("corral reload")
}

/// Whether a worker other than `old` answers `/pid`.
fn new_pid(c: &Corral, old: &str) -> bool {
    let text = c.get("/pid").text();
    text.parse::<u32>().is_ok() && text != old
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a worker pid a live worker just gave us.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

#[test]
fn each_hook_runs_with_its_variables_in_the_app_folder() {
    let dir = AppDir::new(&[("app.py", APP), ("hook.py", HOOK)]);
    let py = python();
    let config = format!(
        "[app]\nmodule = \"app:app\"\n[workers]\ncount = 1\n[hooks]\n\
         on_worker_exit = [\"{py}\", \"hook.py\", \"exit\"]\n\
         on_ready = [\"{py}\", \"hook.py\", \"ready\"]\n\
         on_reload_failed = [\"{py}\", \"hook.py\", \"failed\"]\n"
    );
    std::fs::write(dir.path().join("corral.toml"), config).unwrap();
    let mut c = Corral::spawn(
        dir.path(),
        &["-c", "corral.toml", "-b", "127.0.0.1:0"],
        &[("CORRAL_HOOK_TEST_SECRET", "not for hooks")],
    );
    c.wait_listening();
    c.wait_in_service(1);
    let here = std::fs::canonicalize(dir.path()).unwrap();

    // Generation 1 in service.
    let ready = event(&c, dir.path(), "ready-1");
    assert_eq!(ready["env"]["CORRAL_GENERATION"], "1", "{ready}");
    assert!(ready["env"].get("CORRAL_REVISION").is_some(), "{ready}");
    assert_eq!(ready["cwd"], here.to_str().unwrap());
    assert!(
        ready["env"].get("CORRAL_HOOK_TEST_SECRET").is_none(),
        "corral's own variables stay out: {ready}"
    );

    // A worker that exits with a code.
    let first = c.get("/exit").text();
    let exit = event(&c, dir.path(), &format!("exit-{first}"));
    let env = &exit["env"];
    assert_eq!(env["CORRAL_WORKER_PID"], first.as_str(), "{exit}");
    assert_eq!(env["CORRAL_SLOT"], "0", "{exit}");
    assert_eq!(env["CORRAL_GENERATION"], "1", "{exit}");
    assert_eq!(env["CORRAL_EXIT_CODE"], "7", "{exit}");
    assert!(env.get("CORRAL_EXIT_SIGNAL").is_none(), "{exit}");
    let logged = format!("hook on_worker_exit: recorded exit-{first}");
    let seen = c.log.wait_for(&logged, Duration::from_secs(10));
    assert!(seen.is_some(), "the hook's output is logged");

    // A worker killed by a signal.
    let mut second = first.clone();
    c.wait_until("a new worker", || {
        second = c.get("/pid").text();
        second.parse::<u32>().is_ok() && second != first
    });
    kill(second.parse().unwrap(), libc::SIGKILL);
    let exit = event(&c, dir.path(), &format!("exit-{second}"));
    assert_eq!(exit["env"]["CORRAL_EXIT_SIGNAL"], "9", "{exit}");
    assert!(exit["env"].get("CORRAL_EXIT_CODE").is_none(), "{exit}");

    // A reload that comes up, then one that does not.
    let out = reload(&c);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        event(&c, dir.path(), "ready-2")["env"]["CORRAL_GENERATION"],
        "2"
    );
    std::fs::write(dir.path().join("app.py"), "def app(:\n").unwrap();
    let out = reload(&c);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let failed = event(&c, dir.path(), "failed-3");
    assert_eq!(failed["env"]["CORRAL_GENERATION"], "3", "{failed}");
    let reason = failed["env"]["CORRAL_REASON"].as_str().unwrap();
    assert!(reason.contains("SyntaxError"), "{failed}");
    assert!(
        !dir.path().join("events/ready-3.json").exists(),
        "a failed generation is never ready"
    );
    c.signal(libc::SIGTERM);
    c.wait_exit(Duration::from_secs(20)).expect("corral stops");
}

/// The pids of `pid`'s children.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    out
}

fn command_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[test]
fn a_hook_past_hook_timeout_is_killed_and_holds_nothing_up() {
    let dir = AppDir::new(&[("app.py", APP)]);
    let config = "[app]\nmodule = \"app:app\"\n[workers]\ncount = 1\n\
                  [deploy]\nhook_timeout = \"1s\"\n[hooks]\non_worker_exit = [\"sleep\", \"60\"]\n";
    std::fs::write(dir.path().join("corral.toml"), config).unwrap();
    let c = Corral::start(dir.path(), &["-c", "corral.toml", "-b", "127.0.0.1:0"], 1);
    let first = c.get("/exit").text();
    // The hook sleeps, and meanwhile the replacement comes up and serves.
    c.wait_until("the hook to start", || {
        children(c.pid())
            .into_iter()
            .any(|p| command_of(p) == "sleep")
    });
    c.wait_until("a new worker to serve", || new_pid(&c, &first));
    c.log
        .wait_for(
            "hook on_worker_exit: sleep still running after 1s",
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("the hook was not killed; log:\n{}", c.log.text()));
    c.wait_until("the hook to be gone", || {
        !children(c.pid())
            .into_iter()
            .any(|p| command_of(p) == "sleep")
    });
}

/// A hook killed at `hook_timeout` takes what it started with it: each
/// hook leads a process group of its own, and the group is killed. A
/// script's `sleep` outlived it before, reparented. The rollback hook (at
/// a cold start where nothing boots) and the `[hooks]` (`on_ready`) alike.
#[test]
fn a_hook_killed_at_hook_timeout_takes_the_processes_it_started_with_it() {
    // Starts a sleep, notes its pid, and waits for it.
    let script = |file: &str| {
        format!(
            "[\"/bin/sh\", \"-c\", \"sleep 77 & echo $! > {file}.tmp; mv {file}.tmp {file}; wait\"]"
        )
    };
    let good = AppDir::new(&[("app.py", APP)]);
    let config = format!(
        "[app]\nmodule = \"app:app\"\n[workers]\ncount = 1\n\
         [deploy]\nhook_timeout = \"2s\"\n[hooks]\non_ready = {}\n",
        script("sleeper")
    );
    std::fs::write(good.path().join("corral.toml"), config).unwrap();
    let broken = AppDir::new(&[("app.py", "raise RuntimeError('broken')\n")]);
    let config = format!(
        "[app]\nmodule = \"app:app\"\n[workers]\ncount = 1\n\
         [deploy]\nhook_timeout = \"2s\"\nrollback_hook = {}\n",
        script("sleeper")
    );
    std::fs::write(broken.path().join("corral.toml"), config).unwrap();
    let args = ["-c", "corral.toml", "-b", "127.0.0.1:0"];
    let on_ready = Corral::spawn(good.path(), &args, &[]);
    let rollback = Corral::spawn(broken.path(), &args, &[]);
    let sleeper = |c: &Corral, dir: &Path| -> u32 {
        let file = dir.join("sleeper");
        c.wait_until("the hook to start its sleep", || file.exists());
        std::fs::read_to_string(&file)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let sleepers = [
        (
            sleeper(&on_ready, good.path()),
            &on_ready,
            "hook on_ready: /bin/sh still running after 2s",
        ),
        (
            sleeper(&rollback, broken.path()),
            &rollback,
            "rollback hook timed out after 2s; killed",
        ),
    ];
    // Killed by the test when one outlives it (they are not corral's
    // children), while it still is that sleep.
    struct Sleeper(u32);
    impl Drop for Sleeper {
        fn drop(&mut self) {
            if alive(self.0) && command_of(self.0) == "sleep" {
                // SAFETY: kill(2) on the sleep this test's hook started.
                unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
            }
        }
    }
    let _guards: Vec<Sleeper> = sleepers.iter().map(|(pid, _, _)| Sleeper(*pid)).collect();
    let mut outlived = Vec::new();
    for (pid, c, killed) in &sleepers {
        c.log
            .wait_for(killed, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("the hook was not killed; log:\n{}", c.log.text()));
        if !wait_gone(&[*pid], Duration::from_secs(5)) {
            outlived.push(format!(
                "after \"{killed}\", the hook's {} (pid {pid}) runs on",
                command_of(*pid)
            ));
        }
    }
    assert!(outlived.is_empty(), "{}", outlived.join("\n"));
}

/// The README's recipe: prometheus_client in multiprocess mode, with
/// `mark_process_dead` run by `on_worker_exit`.
pub(crate) const METRICS_APP: &str = r#"
import os
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, multiprocess

HITS = Counter("demo_hits", "Requests served")
BUSY = Gauge("demo_busy", "Set to 1 by each worker that served", multiprocess_mode="livesum")

def app(environ, start_response):
    if environ["PATH_INFO"] == "/metrics":
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        if environ["PATH_INFO"] == "/hit":
            HITS.inc()
            BUSY.set(1)
        body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"#;

#[test]
fn the_prometheus_multiprocess_recipe_marks_dead_workers() {
    let dir = AppDir::new(&[("app.py", METRICS_APP)]);
    let metrics_dir = dir.path().join("prometheus");
    std::fs::create_dir(&metrics_dir).unwrap();
    let py = python();
    let config = format!(
        "[app]\nmodule = \"app:app\"\n[app.env]\nPROMETHEUS_MULTIPROC_DIR = \"{}\"\n\
         [workers]\ncount = 1\n[hooks]\non_worker_exit = [\"{py}\", \"-c\", \"import os; \
         from prometheus_client import multiprocess; \
         multiprocess.mark_process_dead(int(os.environ['CORRAL_WORKER_PID']))\"]\n",
        metrics_dir.display()
    );
    std::fs::write(dir.path().join("corral.toml"), config).unwrap();
    let c = Corral::start(dir.path(), &["-c", "corral.toml", "-b", "127.0.0.1:0"], 1);
    let pid = c.get("/hit").text();
    let live = metrics_dir.join(format!("gauge_livesum_{pid}.db"));
    assert!(
        live.exists(),
        "prometheus_client wrote no {}",
        live.display()
    );
    let before = c.get("/metrics").text();
    assert!(before.contains("demo_busy 1.0"), "{before}");

    kill(pid.parse().unwrap(), libc::SIGKILL);
    c.wait_until(
        "mark_process_dead to remove the dead worker's gauge",
        || !live.exists(),
    );
    c.wait_until("a new worker", || new_pid(&c, &pid));
    let after = c.get("/metrics").text();
    assert!(
        !after.contains("demo_busy 1.0"),
        "a dead worker's gauge: {after}"
    );
    // Counters of dead workers are kept, as prometheus_client intends.
    assert!(after.contains("demo_hits_total 1.0"), "{after}");
}

#[test]
fn at_a_stop_corral_waits_for_the_last_workers_exit_hooks() {
    let dir = AppDir::new(&[("app.py", APP)]);
    let config = "[app]\nmodule = \"app:app\"\n[workers]\ncount = 2\n[hooks]\n\
                  on_worker_exit = [\"sh\", \"-c\", \"sleep 1; echo done > exited-$CORRAL_WORKER_PID\"]\n";
    std::fs::write(dir.path().join("corral.toml"), config).unwrap();
    let mut c = Corral::start(dir.path(), &["-c", "corral.toml", "-b", "127.0.0.1:0"], 2);
    let pids: Vec<String> = (0..2)
        .map(|slot| {
            let line = c
                .log
                .wait_for(&format!("worker {slot} (pid "), Duration::from_secs(5));
            let line = line.expect("a booted worker");
            line.split("(pid ")
                .nth(1)
                .unwrap()
                .split(')')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    c.signal(libc::SIGTERM);
    let status = c.wait_exit(Duration::from_secs(20)).expect("corral stops");
    assert!(status.success(), "{status:?}");
    let exited: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("exited-")
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(exited.len(), 2, "{exited:?}; log:\n{}", c.log.text());
    for pid in &pids {
        assert!(exited.contains(pid), "{pid} not in {exited:?}");
    }
}

/// As root, corral runs no hook whose program, or a file its arguments
/// name, another user can change: the config is refused at start, saying
/// which file and how to fix it, and a file changed after start is not
/// run. Before, an app's user who could write a hook in the app's folder
/// (or the virtualenv's interpreter a hook ran) had it run as root.
#[test]
fn as_root_a_hook_another_user_can_change_is_refused() {
    if !require_root("chown to nobody") {
        return;
    }
    let app = AppDir::new(&[("app.py", APP), ("hook.py", HOOK)]);
    // A folder of nobody's holding a hook.
    let theirs = app.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::write(theirs.join("hook.py"), HOOK).unwrap();
    let chown = Command::new("chown")
        .args(["-R", "nobody"])
        .arg(&theirs)
        .status()
        .unwrap();
    assert!(chown.success());
    let hook = theirs.join("hook.py");
    let config = format!(
        "[app]\nmodule = \"app:app\"\n[hooks]\non_ready = [\"{}\", \"{}\", \"ready\"]\n",
        python(),
        hook.display()
    );
    std::fs::write(app.path().join("corral.toml"), &config).unwrap();
    let text = check_refused(app.path());
    assert!(
        text.contains("hooks.on_ready")
            && text.contains(&format!("{} can be changed by others", hook.display()))
            && text.contains("runuser"),
        "{text}"
    );
    // Root's own hook, in the app's folder, runs; made another user's
    // after the start, it is not run, and a reload (which reads the
    // config again) is refused.
    let mine = app.path().join("hook.py");
    let config = format!(
        "[app]\nmodule = \"app:app\"\n[hooks]\non_ready = [\"{0}\", \"{1}\", \"ready\"]\n\
         on_worker_exit = [\"{0}\", \"{1}\", \"exit\"]\n",
        python(),
        mine.display()
    );
    std::fs::write(app.path().join("corral.toml"), &config).unwrap();
    let c = Corral::start(app.path(), &["-c", "corral.toml", "-w", "1"], 1);
    c.log
        .wait_for("recorded ready-1", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("the hook ran; log:\n{}", c.log.text()));
    let chown = Command::new("chown")
        .arg("nobody")
        .arg(&mine)
        .status()
        .unwrap();
    assert!(chown.success());
    assert_eq!(c.get("/exit").status, 200);
    let line = c
        .log
        .wait_for("hook on_worker_exit not run", Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no refusal; log:\n{}", c.log.text()));
    assert!(line.contains("can be changed by others"), "{line}");
    assert_eq!(c.log.count("recorded exit-"), 0);
    let out = reload(&c);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stdout).into_owned()
        + &String::from_utf8_lossy(&out.stderr)
        + &c.log.text();
    assert!(said.contains("can be changed by others"), "{said}");
}

/// As root, a Python hook that imports first from the folder it runs in
/// (`-m`, `-c`), the app's folder, is refused when another user may add a
/// module there: `["python3", "-m", "notify"]` imported `notify` from the
/// app's folder before the standard library, so the app's user ran code as
/// root. The same hook in a folder of root's runs; the folder given to
/// another user after the start, it is not run.
#[test]
fn as_root_a_python_hook_importing_from_a_folder_another_user_can_change_is_refused() {
    if !require_root("chown to nobody") {
        return;
    }
    let app = AppDir::new(&[
        ("site/app.py", APP),
        ("site/notify.py", "print('notify ran')\n"),
    ]);
    let site = app.path().join("site");
    let chown = |user: &str| {
        let done = Command::new("chown")
            .args(["-R", user])
            .arg(&site)
            .status()
            .unwrap();
        assert!(done.success());
    };
    let config = format!(
        "[app]\nmodule = \"app:app\"\nchdir = \"site\"\n[hooks]\n\
         on_ready = [\"{0}\", \"-m\", \"notify\"]\non_worker_exit = [\"{0}\", \"-m\", \"notify\"]\n",
        python()
    );
    std::fs::write(app.path().join("corral.toml"), &config).unwrap();
    chown("nobody");
    let text = check_refused(app.path());
    assert!(
        text.contains("hooks.on_ready")
            && text.contains(&format!(
                "-m notify` puts {} first on Python's import path",
                site.display()
            ))
            && text.contains("a notify.py of their own")
            && text.contains("give Python -P"),
        "{text}"
    );
    chown("root");
    let args = ["-c", "corral.toml", "-w", "1", "-b", "127.0.0.1:0"];
    let c = Corral::start(app.path(), &args, 1);
    c.log
        .wait_for("notify ran", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("the hook ran; log:\n{}", c.log.text()));
    chown("nobody");
    assert_eq!(c.get("/exit").status, 200);
    let line = c
        .log
        .wait_for("hook on_worker_exit not run", Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no refusal; log:\n{}", c.log.text()));
    assert!(line.contains("first on Python's import path"), "{line}");
    assert_eq!(c.log.count("notify ran"), 1, "{}", c.log.text());
}

/// A reload whose new code fails with a NUL (and an escape sequence) in
/// its error's message: `CORRAL_REASON` quotes the last line of the
/// worker's boot error, and an environment variable cannot hold a NUL, so
/// neither `on_reload_failed` nor the rollback hook started at all (the
/// app chose whether the rollback ran). Now the reason's control
/// characters are shown as `\xHH`, and both hooks run.
#[test]
fn a_boot_error_with_control_characters_does_not_keep_the_failure_hooks_from_running() {
    let dir = AppDir::new(&[("app.py", APP), ("hook.py", HOOK)]);
    let py = python();
    let config = format!(
        "[app]\nmodule = \"app:app\"\n[workers]\ncount = 1\n[hooks]\n\
         on_reload_failed = [\"{py}\", \"hook.py\", \"failed\"]\n\
         [deploy]\nrollback_hook = [\"{py}\", \"hook.py\", \"rollback\"]\n"
    );
    std::fs::write(dir.path().join("corral.toml"), config).unwrap();
    let mut c = Corral::spawn(dir.path(), &["-c", "corral.toml", "-b", "127.0.0.1:0"], &[]);
    c.wait_listening();
    c.wait_in_service(1);
    std::fs::write(
        dir.path().join("app.py"),
        "raise RuntimeError('bad\\x00code\\x1b[2J')\n",
    )
    .unwrap();
    let out = reload(&c);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // The rollback hook gets no CORRAL_GENERATION: the hook names its
    // record "rollback-None".
    for name in ["failed-2", "rollback-None"] {
        let run = event(&c, dir.path(), name);
        let reason = run["env"]["CORRAL_REASON"].as_str().unwrap();
        assert!(
            reason.contains("RuntimeError: bad\\x00code\\x1b[2J"),
            "{name}: {run}"
        );
    }
}
