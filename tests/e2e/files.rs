//! Files, folders and sockets that a worker or another local user can
//! touch: corral never trusts them. Several tests need root (to be two
//! users at once), as CI is; without root they fail under `CI` and are
//! skipped (with a note) on a developer's machine.

use crate::common::*;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const NOBODY: u32 = 65534;
const DAEMON: u32 = 1;

/// True when root; otherwise a failure under CI, a skip elsewhere.
fn root() -> bool {
    require_root("to be two users at once")
}

/// An app folder other users may read (the workers run as nobody).
fn shared_app(files: &[(&str, &str)]) -> AppDir {
    let app = AppDir::new(files);
    std::fs::set_permissions(app.path(), PermissionsExt::from_mode(0o755)).unwrap();
    for (name, _) in files {
        std::fs::set_permissions(app.path().join(name), PermissionsExt::from_mode(0o644)).unwrap();
    }
    app
}

/// corral with exactly `args` (no socket or bind added), as `uid` when
/// given, in `dir`, with `env` last (it may set HOME); output collected.
fn corral_as(dir: &Path, args: &[&str], uid: Option<u32>, env: &[(&str, &str)]) -> Corral {
    let mut cmd = Command::new(corral_bin());
    cmd.current_dir(dir)
        .args(args)
        .env_remove("VIRTUAL_ENV")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("RUNTIME_DIRECTORY")
        .env_remove("STATE_DIRECTORY")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid).env("HOME", "/nonexistent");
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start corral");
    let log = Log::collect(&mut child, "corral");
    Corral {
        child,
        log,
        addr: String::new(),
        status_addr: String::new(),
        socket: PathBuf::new(),
    }
}

/// A config that binds as root, then drops corral's own privileges to
/// nobody, the workers' user.
const DROP_TO_NOBODY: &str = "[app]\nmodule = \"app:app\"\npython = \"/usr/bin/python3\"\n\
     [server]\nbind = [\"127.0.0.1:0\"]\ndrop_privileges = true\n\
     [workers]\nuser = \"nobody\"\n[health]\nstatus_bind = \"127.0.0.1:0\"\n";

const PID_APP: &str = r#"
import json, os, sys

def app(environ, start_response):
    body = json.dumps({"pid": os.getpid(),
                       "rundir": os.path.dirname(os.path.abspath(sys.argv[0]))}).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"#;

#[test]
fn a_worker_running_as_another_user_cannot_plant_files_where_corral_reads() {
    if !root() {
        return;
    }
    // At import the app tries what a compromised worker would: write its
    // own stack file, plant a symlink to a secret, plant a FIFO. Then it
    // hangs, so corral dumps its stacks and kills it.
    let app = shared_app(&[(
        "planter.py",
        r#"
import os, sys, time
folder = os.path.dirname(os.path.abspath(sys.argv[0]))
for name, attempt in [
        ("file", lambda p: open(p, "w")),
        ("symlink", lambda p: os.symlink("/etc/shadow", p)),
        ("fifo", lambda p: os.mkfifo(p))]:
    try:
        attempt(os.path.join(folder, "stacks-%d.txt" % os.getpid()))
        print("PLANTED", name, flush=True)
    except OSError as e:
        print("REFUSED", name, type(e).__name__, flush=True)
st = os.stat(folder)
print("FOLDER %o %d %d" % (st.st_mode & 0o7777, st.st_uid, st.st_gid), flush=True)
for name in ["corral_worker", "corral_worker/main.py"]:
    st = os.stat(os.path.join(folder, name))
    print("SHARED %s %o %d %d" % (name, st.st_mode & 0o7777, st.st_uid, st.st_gid), flush=True)
time.sleep(60)
app = None
"#,
    )]);
    let mut c = corral_as(
        app.path(),
        &[
            "planter:app",
            "-b",
            "127.0.0.1:0",
            "--status-bind",
            "127.0.0.1:0",
            "--socket",
            "ctl.sock",
            "--python",
            "/usr/bin/python3",
            "--user",
            "nobody",
            "--boot-timeout",
            "2s",
        ],
        None,
        &[("STATE_DIRECTORY", "/nonexistent-state")],
    );
    c.wait_listening();
    c.log
        .wait_for("Python stacks of worker", Duration::from_secs(20))
        .expect("the hung boot is dumped");
    // The worker's last line; its output can arrive after corral's dump.
    c.log.has("SHARED corral_worker/main.py");
    let log = c.log.text();
    assert_eq!(log.matches("REFUSED").count(), 3, "{log}");
    assert!(!log.contains("PLANTED"), "{log}");
    assert!(
        log.contains("FOLDER 750 0 65534"),
        "root's, shared read-only with the workers' group (nogroup) only: {log}"
    );
    assert!(log.contains("SHARED corral_worker 750 0 65534"), "{log}");
    assert!(
        log.contains("SHARED corral_worker/main.py 640 0 65534"),
        "{log}"
    );
    assert_eq!(c.status("/health/live").status, 200);
    let status = c.status_json();
    let err = status["slots"][0]["last_boot_error"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(err.contains("Python stacks at that moment"), "{err}");
    assert!(err.contains("planter.py"), "{err}");
    assert!(!err.contains("root:"), "a secret leaked: {err}");
}

#[test]
fn a_control_socket_folder_others_can_write_is_refused() {
    let app = AppDir::new(&[("app.py", PID_APP)]);
    let open = app.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, PermissionsExt::from_mode(0o777)).unwrap();
    let socket = open.join("ctl.sock");
    let mut c = Corral::spawn(
        app.path(),
        &["app:app", "--socket", socket.to_str().unwrap()],
        &[],
    );
    let st = c.wait_exit(Duration::from_secs(20)).expect("corral exits");
    assert_eq!(st.code(), Some(2), "{}", c.log.text());
    // The exit can come before the thread reading the log has the line.
    assert!(
        c.log
            .wait_for(
                "is not private: group or others may write to it (mode 0777)",
                Duration::from_secs(5)
            )
            .is_some(),
        "{}",
        c.log.text()
    );
    assert!(!socket.exists());
}

#[test]
fn default_folders_another_user_made_first_are_passed_over_with_a_warning() {
    if !root() {
        return;
    }
    // /tmp/corral-65534 and /tmp/corral-65534-state made by another user
    // (uid 1) before nobody's corral starts without XDG_RUNTIME_DIR: taking
    // them would let that user swap the socket or the state; refusing to
    // start would let that user keep corral down. corral serves without
    // them and says why.
    let squat = PathBuf::from(format!("/tmp/corral-{NOBODY}"));
    let squat_state = PathBuf::from(format!("/tmp/corral-{NOBODY}-state"));
    for dir in [&squat, &squat_state] {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir(dir).unwrap();
        std::os::unix::fs::chown(dir, Some(DAEMON), Some(DAEMON)).unwrap();
        // Open to anyone: the victim could make its folder there, and
        // their owner swap it afterwards.
        std::fs::set_permissions(dir, PermissionsExt::from_mode(0o777)).unwrap();
    }
    // A revision, so that corral has a last known good one to keep.
    let app = shared_app(&[
        ("app.py", PID_APP),
        (
            "corral.toml",
            "[app]\nmodule = \"app:app\"\n[server]\nbind = [\"127.0.0.1:0\"]\n\
             [deploy]\nrevision = [\"echo\", \"r1\"]\n",
        ),
    ]);
    // No HOME: the state's default is /tmp/corral-UID-state.
    let mut c = corral_as(
        app.path(),
        &["--python", "/usr/bin/python3"],
        Some(NOBODY),
        &[("HOME", "")],
    );
    let served = c
        .log
        .wait_for("listening on http", Duration::from_secs(20))
        .is_some();
    let in_service = c
        .log
        .wait_for("all 1 workers in service", Duration::from_secs(20))
        .is_some();
    // The state is written once the generation is good, from a thread.
    c.log
        .wait_for("not using the state dir", Duration::from_secs(10));
    let log = c.log.text();
    let made: Vec<_> = [&squat, &squat_state]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap().flatten().map(|e| e.path()))
        .collect();
    c.signal(libc::SIGTERM);
    let st = c.wait_exit(Duration::from_secs(20));
    let _ = std::fs::remove_dir_all(&squat);
    let _ = std::fs::remove_dir_all(&squat_state);
    assert!(served && in_service, "{log}");
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{log}");
    assert!(
        log.contains(&format!(
            "no control socket: the default one, {}/",
            squat.display()
        )) && log.contains(&format!(
            "its folder {} is not private: it belongs to uid 1",
            squat.display()
        )) && log.contains("signals still work")
            && log.contains("set XDG_RUNTIME_DIR"),
        "{log}"
    );
    assert!(log.contains("control socket none"), "{log}");
    assert!(
        log.contains(&format!(
            "the folder it is in, {}, is not private: it belongs to uid 1",
            squat_state.display()
        )),
        "{log}"
    );
    assert!(
        made.is_empty(),
        "corral made {made:?} in the other user's folders"
    );
}

#[test]
fn the_client_refuses_a_control_socket_served_by_another_user() {
    if !root() {
        return;
    }
    // Another user (uid 1) listens where the victim (nobody) looks, in a
    // folder it owns, and would answer that a reload succeeded.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let trap = dir.path().join("trap");
    std::fs::create_dir(&trap).unwrap();
    std::os::unix::fs::chown(&trap, Some(DAEMON), Some(DAEMON)).unwrap();
    let socket = trap.join("corral.sock");
    let mut liar = Reaped(Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import os, socket, sys\n\
             s = socket.socket(socket.AF_UNIX)\n\
             s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o777); s.listen()\n\
             print('listening', flush=True)\n\
             while True:\n\
             \x20   c, _ = s.accept()\n\
             \x20   try: c.recv(4096); c.sendall(b'{\"ok\": true, \"generation\": 7, \"revision\": \"fake\"}\\n')\n\
             \x20   except OSError: pass  # corral hung up on it, as it should\n\
             \x20   c.close()\n",
        ])
        .arg(&socket)
        .uid(DAEMON)
        .gid(DAEMON)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(liar.0.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let out = Command::new(corral_bin())
        .args(["reload", "--wait", "--socket"])
        .arg(&socket)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("refusing to talk to"), "{text}");
    assert!(text.contains("served by uid 1"), "{text}");
    assert!(!text.contains("reloaded"), "{text}");
}

#[test]
fn a_regular_file_at_a_socket_path_is_never_deleted() {
    let app = AppDir::new(&[("app.py", PID_APP)]);
    let precious = app.path().join("precious.txt");
    for args in [
        vec!["app:app", "-b", "unix:precious.txt"],
        vec!["app:app", "--socket", "precious.txt"],
    ] {
        std::fs::write(&precious, "keep me").unwrap();
        let mut c = Corral::spawn(app.path(), &args, &[]);
        let st = c.wait_exit(Duration::from_secs(20)).expect("corral exits");
        assert_eq!(st.code(), Some(2), "{args:?}: {}", c.log.text());
        assert_eq!(
            std::fs::read_to_string(&precious).unwrap(),
            "keep me",
            "{args:?}"
        );
        assert!(c.log.text().contains("not a socket"), "{}", c.log.text());
    }
}

/// Starts corral in `dir` with `args`, which must refuse to start: it
/// exits 2 within a few seconds (a FIFO it opened without `O_NONBLOCK`
/// would hang it until killed), saying `needle`. Returns the log.
fn refuses_quickly(dir: &Path, args: &[&str], needle: &str) -> String {
    let mut c = Corral::spawn(dir, args, &[]);
    let st = c.wait_exit(Duration::from_secs(10));
    let log = c.log.text();
    assert_eq!(st.and_then(|s| s.code()), Some(2), "{args:?}: {log}");
    assert!(log.contains(needle), "{args:?}: {log}");
    log
}

#[test]
fn a_fifo_at_a_log_or_config_path_is_refused_without_hanging() {
    // Another user's FIFO where corral writes a log or reads its config:
    // opening it would wait for a reader (or writer) forever.
    let app = AppDir::new(&[("app.py", PID_APP)]);
    let fifo = app.path().join("planted");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
    let refused = format!("{}: it is a FIFO, not a regular file", fifo.display());
    for flag in ["--access-logfile", "--error-logfile"] {
        refuses_quickly(
            app.path(),
            &["app:app", flag, fifo.to_str().unwrap()],
            &refused,
        );
    }
    refuses_quickly(
        app.path(),
        &["app:app", "-c", fifo.to_str().unwrap()],
        "planted: it is a FIFO, not a regular file",
    );
    // The config file corral looks for without -c.
    std::fs::rename(&fifo, app.path().join("corral.toml")).unwrap();
    refuses_quickly(
        app.path(),
        &["app:app"],
        "cannot read config file corral.toml: it is a FIFO",
    );
    std::fs::remove_file(app.path().join("corral.toml")).unwrap();

    // A log file swapped for a FIFO before a USR1: the old file is kept,
    // and corral goes on serving and answering signals.
    let log = app.path().join("access.log");
    let mut c = Corral::start(
        app.path(),
        &["app:app", "--access-logfile", log.to_str().unwrap()],
        1,
    );
    std::fs::remove_file(&log).unwrap();
    nix::unistd::mkfifo(&log, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
    c.signal(libc::SIGUSR1);
    assert!(
        c.log
            .wait_for("SIGUSR1: kept the old file", Duration::from_secs(10))
            .is_some_and(|line| line.contains("it is a FIFO")),
        "{}",
        c.log.text()
    );
    assert_eq!(c.get("/").status, 200);
    c.signal(libc::SIGTERM);
    assert!(
        c.wait_exit(Duration::from_secs(20)).is_some(),
        "{}",
        c.log.text()
    );
}

#[test]
fn instances_keep_their_own_state_privately() {
    if !root() {
        return;
    }
    // Two apps on one host, neither with [deploy] state_dir: as two
    // gunicorn services, they must not share a last known good revision.
    let start = |rev: &str| {
        let app = AppDir::new(&[
            ("app.py", PID_APP),
            (
                "corral.toml",
                &format!(
                    "[app]\nmodule = \"app:app\"\n[server]\nbind = [\"127.0.0.1:0\"]\n\
                     [health]\nstatus_bind = \"127.0.0.1:0\"\n\
                     [deploy]\nrevision = [\"echo\", \"{rev}\"]\nrollback_hook = [\"true\"]\n"
                ),
            ),
        ]);
        let mut c = corral_as(
            app.path(),
            &[
                "-c",
                "corral.toml",
                "--python",
                &python(),
                "--socket",
                "ctl.sock",
            ],
            None,
            &[],
        );
        c.wait_listening();
        c.wait_in_service(1);
        (app, c)
    };
    let (app_a, a) = start("rev-a");
    let (_app_b, b) = start("rev-b");
    let state =
        |c: &Corral| PathBuf::from(c.status_json()["supervisor"]["state_dir"].as_str().unwrap());
    let (sa, sb) = (state(&a), state(&b));
    let cleanup = (sa.clone(), sb.clone());
    let _guard = RemoveOnDrop(vec![cleanup.0, cleanup.1]);
    assert_ne!(sa, sb);
    assert!(sa.starts_with("/var/lib/corral"), "{}", sa.display());
    a.wait_until("a's revision recorded", || {
        std::fs::read_to_string(sa.join("last-good-revision")).is_ok_and(|t| t == "rev-a\n")
    });
    b.wait_until("b's revision recorded", || {
        std::fs::read_to_string(sb.join("last-good-revision")).is_ok_and(|t| t == "rev-b\n")
    });
    assert_eq!(a.status_json()["last_good_revision"], "rev-a");
    assert_eq!(b.status_json()["last_good_revision"], "rev-b");
    assert_eq!(std::fs::metadata(&sa).unwrap().mode() & 0o777, 0o700);
    let file = std::fs::metadata(sa.join("last-good-revision")).unwrap();
    assert_eq!(file.mode() & 0o777, 0o600);
    // A failed reload's traceback (it may hold secrets) is private too.
    std::fs::write(app_a.path().join("app.py"), "raise RuntimeError('boom')\n").unwrap();
    let out = Command::new(corral_bin())
        .args(["reload", "--wait", "--socket"])
        .arg(app_a.path().join("ctl.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    a.wait_until("the traceback saved", || sa.join("last-error.txt").exists());
    let err = std::fs::metadata(sa.join("last-error.txt")).unwrap();
    assert_eq!(err.mode() & 0o777, 0o600);
    let names: Vec<String> = std::fs::read_dir(&sa)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
}

/// A child process killed and reaped on drop.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Removes folders the test made outside its temporary folder.
struct RemoveOnDrop(Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

#[test]
fn with_drop_privileges_corral_removes_its_folder_and_socket_at_exit() {
    if !root() {
        return;
    }
    let app = shared_app(&[("app.py", PID_APP), ("corral.toml", DROP_TO_NOBODY)]);
    let mut c = corral_as(
        app.path(),
        &["-c", "corral.toml"],
        None,
        &[("STATE_DIRECTORY", "/nonexistent-state")],
    );
    c.wait_listening();
    c.wait_in_service(1);
    let v: serde_json::Value = serde_json::from_slice(&c.get("/").body).unwrap();
    let rundir = PathBuf::from(v["rundir"].as_str().unwrap());
    let socket = PathBuf::from(
        c.status_json()["supervisor"]["control_socket"]
            .as_str()
            .unwrap(),
    );
    assert!(socket.starts_with("/run/corral"), "{}", socket.display());
    assert!(rundir.exists() && socket.exists());
    // The root client trusts the unprivileged corral in root's folder.
    let out = Command::new(corral_bin())
        .args(["stop", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = c.wait_exit(Duration::from_secs(20)).expect("corral exits");
    assert_eq!(st.code(), Some(0), "{}", c.log.text());
    assert!(!rundir.exists(), "runtime folder left behind");
    assert!(!socket.exists(), "control socket left behind");
    // The next start (as root again) takes the instance's folder back.
    let mut again = corral_as(
        app.path(),
        &["-c", "corral.toml"],
        None,
        &[("STATE_DIRECTORY", "/nonexistent-state")],
    );
    again.wait_listening();
    again.wait_in_service(1);
    again.signal(libc::SIGTERM);
    let st = again
        .wait_exit(Duration::from_secs(20))
        .expect("corral exits");
    assert_eq!(st.code(), Some(0), "{}", again.log.text());
}

#[test]
fn corral_check_as_root_boots_the_app_as_the_workers_user() {
    if !root() {
        return;
    }
    let app = shared_app(&[("app.py", PID_APP)]);
    let out = Command::new(corral_bin())
        .current_dir(app.path())
        .args([
            "check",
            "app:app",
            "--python",
            "/usr/bin/python3",
            "--user",
            "nobody",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("OK: app:app imported"), "{text}");
}

/// The attack on `--worker-tmp-dir` (a folder the workers' user owns): it
/// waits for root's corral to make its folder there, swaps that folder for
/// one of its own, and when root has written the worker script into it
/// (into the folder that holds it there), puts a symlink to a root-only file in its place, hoping that root's
/// chown/chmod of the script lands on that file. Thousands of names in the
/// folder (a PID that runs) slowed corral's sweep of it, and widened the
/// window the swap needs.
const TMP_DIR_ATTACKER: &str = r#"
import ctypes, os, struct, sys, time
TMP, TARGET = sys.argv[1], sys.argv[2]
libc = ctypes.CDLL("libc.so.6", use_errno=True)
IN_CREATE, IN_CLOSE_WRITE, IN_ISDIR = 0x100, 0x8, 0x40000000
fd = libc.inotify_init()
libc.inotify_add_watch(fd, TMP.encode(), IN_CREATE)
print("watching", flush=True)
deadline = time.time() + 30
mine = None
def events(fd):
    buf = os.read(fd, 65536); i = 0
    while i < len(buf):
        wd, mask, cookie, ln = struct.unpack_from("iIII", buf, i)
        name = buf[i+16:i+16+ln].rstrip(b"\0").decode(); i += 16 + ln
        yield mask, name
while time.time() < deadline and mine is None:
    for mask, name in events(fd):
        if name.startswith("corral-") and mask & IN_ISDIR:
            p = os.path.join(TMP, name)
            os.rename(p, os.path.join(TMP, "moved-" + name))
            os.mkdir(p); os.chmod(p, 0o777)
            mine = p
            libc.inotify_add_watch(fd, p.encode(), IN_CREATE | IN_CLOSE_WRITE)
            break
print("swapped", mine, flush=True)
# The script is written in a folder of its own in corral's ("corral").
holder = mine
while time.time() < deadline:
    for mask, name in events(fd):
        if name == "corral" and mask & IN_ISDIR:
            holder = os.path.join(mine, name)
            libc.inotify_add_watch(fd, holder.encode(), IN_CLOSE_WRITE)
        if name == "corral_worker.py" and mask & IN_CLOSE_WRITE:
            p = os.path.join(holder, name)
            os.rename(p, p + ".root"); os.symlink(TARGET, p)
            print("planted", p, flush=True)
            sys.exit(0)
"#;

#[test]
fn a_worker_tmp_dir_the_workers_user_owns_cannot_aim_roots_chown_at_another_file() {
    if !root() {
        return;
    }
    let app = shared_app(&[("app.py", PID_APP), ("attacker.py", TMP_DIR_ATTACKER)]);
    let tmp = app.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    for n in 0..50_000 {
        std::fs::File::create(tmp.join(format!("corral-1-{n}"))).unwrap();
    }
    std::os::unix::fs::chown(&tmp, Some(NOBODY), Some(NOBODY)).unwrap();
    let vault = app.path().join("vault");
    std::fs::create_dir(&vault).unwrap();
    let secret = vault.join("secret");
    std::fs::write(&secret, "root only\n").unwrap();
    std::fs::set_permissions(&secret, PermissionsExt::from_mode(0o600)).unwrap();
    let mut attacker = Command::new("/usr/bin/python3");
    attacker
        .arg(app.path().join("attacker.py"))
        .arg(&tmp)
        .arg(&secret)
        .uid(NOBODY)
        .gid(NOBODY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut attacker = Reaped(attacker.spawn().unwrap());
    let attacker_log = Log::collect(&mut attacker.0, "attacker");
    attacker_log
        .wait_for("watching", Duration::from_secs(20))
        .expect("the attacker watches");
    let mut c = corral_as(
        app.path(),
        &[
            "app:app",
            "-b",
            "127.0.0.1:0",
            "--status-bind",
            "127.0.0.1:0",
            "--socket",
            "ctl.sock",
            "--python",
            "/usr/bin/python3",
            "--user",
            "nobody",
            "--worker-tmp-dir",
            tmp.to_str().unwrap(),
        ],
        None,
        &[("STATE_DIRECTORY", "/nonexistent-state")],
    );
    // The attacker has swapped the folder by the time corral boots workers
    // (or has given up: corral refused the swapped folder).
    let _ = attacker_log.wait_for("swapped", Duration::from_secs(20));
    let _ = attacker_log.wait_for("planted", Duration::from_secs(5));
    let _ = c.wait_exit(Duration::from_secs(2));
    let meta = std::fs::symlink_metadata(&secret).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (0, 0, 0o600),
        "root's file was given to the workers: attacker: {}\ncorral: {}",
        attacker_log.text(),
        c.log.text()
    );
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "root only\n");
    // Either corral found the swapped folder in place of its own and
    // refused it, or it had opened its own first and made everything in
    // it; then it looked at a bounded number of the names, and said so.
    let log = c.log.text();
    assert!(
        log.contains("was replaced before corral could open it")
            || log.contains("at only 1000 of its entries"),
        "{log}"
    );
}

/// `srv/` in `dir`, the workers' user's (nobody), which has replaced
/// `srv/run` with a symlink to `vault/`, root's private folder: (srv, vault).
fn swapped_folder(dir: &Path) -> (PathBuf, PathBuf) {
    let srv = dir.join("srv");
    std::fs::create_dir(&srv).unwrap();
    std::os::unix::fs::chown(&srv, Some(NOBODY), Some(NOBODY)).unwrap();
    let vault = dir.join("vault");
    std::fs::create_dir(&vault).unwrap();
    std::fs::set_permissions(&vault, PermissionsExt::from_mode(0o700)).unwrap();
    let ln = Command::new("ln")
        .arg("-s")
        .arg(&vault)
        .arg(srv.join("run"))
        .uid(NOBODY)
        .gid(NOBODY)
        .status()
        .unwrap();
    assert!(ln.success());
    (srv, vault)
}

#[test]
fn log_pid_and_socket_paths_through_a_folder_another_user_may_change_are_refused() {
    if !root() {
        return;
    }
    let app = shared_app(&[("app.py", PID_APP)]);
    let (srv, vault) = swapped_folder(app.path());
    for name in ["f", "corral.pid"] {
        std::fs::write(vault.join(name), "ROOT DATA\n").unwrap();
        std::fs::set_permissions(vault.join(name), PermissionsExt::from_mode(0o600)).unwrap();
    }
    let refused = format!(
        "the folder {} on its way may be changed by another user (it belongs to uid {NOBODY}",
        srv.display()
    );
    for (flag, file) in [
        ("--access-logfile", "srv/run/f"),
        ("--error-logfile", "srv/run/f"),
        ("--pid", "srv/run/corral.pid"),
        ("-b", "unix:srv/run/app.sock"),
    ] {
        let mut c = Corral::spawn(app.path(), &["app:app", flag, file], &[]);
        let st = c.wait_exit(Duration::from_secs(20));
        let log = c.log.text();
        assert!(st.is_some_and(|s| !s.success()), "{flag}: {log}");
        assert!(log.contains(&refused), "{flag}: {log}");
        assert!(log.contains("chmod go-w"), "says how to fix it: {log}");
        for name in ["f", "corral.pid"] {
            assert_eq!(
                std::fs::read_to_string(vault.join(name)).unwrap(),
                "ROOT DATA\n",
                "{flag}"
            );
        }
        let names: Vec<_> = std::fs::read_dir(&vault).unwrap().flatten().collect();
        assert_eq!(names.len(), 2, "{flag}: nothing made in root's folder");
    }
    // The same paths through a folder of root's: an operator's symlink on
    // the way is followed, as before.
    std::fs::remove_file(srv.join("run")).unwrap();
    std::os::unix::fs::chown(&srv, Some(0), Some(0)).unwrap();
    std::os::unix::fs::symlink(&vault, srv.join("run")).unwrap();
    let mut c = Corral::start(
        app.path(),
        &["app:app", "--access-logfile", "srv/run/access.log"],
        1,
    );
    assert_eq!(c.get("/").status, 200);
    c.signal(libc::SIGTERM);
    assert!(c.wait_exit(Duration::from_secs(20)).is_some());
    assert!(vault.join("access.log").exists());
}

/// The StatsD and syslog Unix sockets are walked as log and pid paths are:
/// through a folder the workers' user owns, which has swapped a folder
/// below it for a symlink to root's private folder, corral sends nothing to
/// the socket there (which, the last folder being root's, it took before).
#[test]
fn statsd_and_syslog_sockets_through_a_folder_another_user_may_change_are_refused() {
    if !root() {
        return;
    }
    let app = shared_app(&[("app.py", PID_APP)]);
    let (srv, vault) = swapped_folder(app.path());
    let agent = std::os::unix::net::UnixDatagram::bind(vault.join("agent.sock")).unwrap();
    agent
        .set_read_timeout(Some(Duration::from_millis(2500)))
        .unwrap();
    let socket = srv.join("run/agent.sock");
    let refused = format!(
        "refusing the socket {}: the folder {} on its way may be changed by another user (it belongs to uid {NOBODY}",
        socket.display(),
        srv.display()
    );
    // syslog: corral does not start.
    let to = format!("unix://{}#dgram", socket.display());
    let args = ["app:app", "--log-syslog", "--log-syslog-to", &to];
    let mut c = Corral::spawn(app.path(), &args, &[]);
    let st = c.wait_exit(Duration::from_secs(20));
    let log = c.log.text();
    assert!(st.is_some_and(|s| !s.success()), "{log}");
    assert!(log.contains(&refused), "{log}");
    assert!(log.contains("chmod go-w"), "says how to fix it: {log}");
    // StatsD: corral serves, says why no metrics go out, and sends none
    // (it flushes every second).
    let host = format!("unix:{}", socket.display());
    let mut c = Corral::start(app.path(), &["app:app", "--statsd-host", &host], 1);
    assert_eq!(c.get("/").status, 200);
    assert!(
        c.log.wait_for(&refused, Duration::from_secs(10)).is_some(),
        "{}",
        c.log.text()
    );
    let mut buf = [0u8; 4096];
    let got = agent.recv(&mut buf);
    assert!(
        got.is_err(),
        "a datagram reached root's socket: {:?}",
        got.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    );
    c.signal(libc::SIGTERM);
    assert!(c.wait_exit(Duration::from_secs(20)).is_some());
}

#[test]
fn with_drop_privileges_a_link_the_workers_user_left_at_the_control_socket_is_removed() {
    if !root() {
        return;
    }
    let app = shared_app(&[("app.py", PID_APP), ("corral.toml", DROP_TO_NOBODY)]);
    let start = || {
        let mut c = corral_as(
            app.path(),
            &["-c", "corral.toml"],
            None,
            &[("STATE_DIRECTORY", "/nonexistent-state")],
        );
        c.wait_listening();
        c.wait_in_service(1);
        c
    };
    let mut c = start();
    let v: serde_json::Value = serde_json::from_slice(&c.get("/").body).unwrap();
    let socket = PathBuf::from(
        c.status_json()["supervisor"]["control_socket"]
            .as_str()
            .unwrap(),
    );
    // A killed corral leaves its folders (the workers' user's) behind.
    let _cleanup = RemoveOnDrop(vec![
        PathBuf::from(v["rundir"].as_str().unwrap()),
        socket.parent().unwrap().to_path_buf(),
    ]);
    c.signal(libc::SIGKILL);
    c.wait_exit(Duration::from_secs(20)).expect("corral exits");
    // The workers' user puts a link to a file of root's there.
    let precious = app.path().join("precious");
    std::fs::write(&precious, "keep me\n").unwrap();
    std::fs::set_permissions(&precious, PermissionsExt::from_mode(0o600)).unwrap();
    let _ = std::fs::remove_file(&socket);
    let ln = Command::new("ln")
        .arg("-s")
        .arg(&precious)
        .arg(&socket)
        .uid(NOBODY)
        .gid(NOBODY)
        .status()
        .unwrap();
    assert!(ln.success());
    // The next start (as root) removes the link, not what it points to.
    let mut again = start();
    assert!(
        again.log.has("a symlink, owned by uid 65534"),
        "{}",
        again.log.text()
    );
    let meta = std::fs::metadata(&precious).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o600));
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me\n");
    assert!(
        std::fs::symlink_metadata(&socket)
            .unwrap()
            .file_type()
            .is_socket()
    );
    again.signal(libc::SIGTERM);
    let st = again
        .wait_exit(Duration::from_secs(20))
        .expect("corral exits");
    assert_eq!(st.code(), Some(0), "{}", again.log.text());
}

/// A `$TMPDIR` corral cannot make its worker folder in (missing here; not
/// writable or a symlink alike) is not the end: the folder goes to
/// /dev/shm with a warning that names why, as Python's tempfile tries one
/// folder after another, where corral exited 1 without naming the folder.
#[test]
fn a_tmpdir_corral_cannot_use_falls_back_to_dev_shm_with_a_warning() {
    if !std::path::Path::new("/dev/shm").is_dir() {
        eprintln!("skipped: no /dev/shm");
        return;
    }
    let app = AppDir::new(&[(
        "app.py",
        "def app(environ, start_response):\n    start_response('200 OK', [('Content-Length', '2')])\n    return [b'ok']\n",
    )]);
    let missing = app.path().join("no-such-tmp");
    let mut c = Corral::spawn(
        app.path(),
        &["app:app"],
        &[("TMPDIR", missing.to_str().unwrap())],
    );
    c.wait_listening();
    c.wait_in_service(1);
    assert_eq!(c.get("/").text(), "ok");
    assert!(
        c.log.has(&format!(
            "the worker script's folder is in /dev/shm: not in {}",
            missing.display()
        )),
        "{}",
        c.log.text()
    );
}

/// A gunicorn config file that corral runs as root, in a folder another
/// user owns: Python's `-c` puts the current folder first on its module
/// path, and a `json.py` that user left there ran as root in place of the
/// standard module (corral's own reader imports json before it runs the
/// file). Now nothing is imported from such a folder: the file is
/// converted, the planted module never runs, and a file that imports the
/// app's modules from there fails with a note that says why. In a folder
/// only root can change, the file still imports from it, as gunicorn's
/// does.
#[test]
fn root_runs_no_module_another_user_left_beside_a_gunicorn_config() {
    if !root() {
        return;
    }
    let planted = |marker: &Path| {
        format!(
            "import os\nopen({:?}, 'w').write(str(os.getuid()))\nraise ImportError('planted')\n",
            marker.to_str().unwrap()
        )
    };
    let theirs = AppDir::new(&[]);
    let marker = theirs.path().with_extension("ran-as-root");
    let _ = std::fs::remove_file(&marker);
    for (name, text) in [
        ("json.py", planted(&marker)),
        ("types.py", planted(&marker)),
        ("multiprocessing.py", planted(&marker)),
        ("settings.py", "WORKERS = 5\n".to_owned()),
    ] {
        std::fs::write(theirs.path().join(name), text).unwrap();
        std::os::unix::fs::chown(theirs.path().join(name), Some(NOBODY), Some(NOBODY)).unwrap();
    }
    // The config file itself is root's: corral runs it.
    std::fs::write(
        theirs.path().join("gunicorn.conf.py"),
        "import multiprocessing\nworkers = 3\n",
    )
    .unwrap();
    std::fs::write(
        theirs.path().join("imports.conf.py"),
        "from settings import WORKERS\nworkers = WORKERS\n",
    )
    .unwrap();
    std::fs::set_permissions(theirs.path(), PermissionsExt::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(theirs.path(), Some(NOBODY), Some(NOBODY)).unwrap();

    let python = python();
    let import = |dir: &Path, file: &str| {
        crate::gunicorn_compat::run_to_exit(dir, &["import-gunicorn", file, "--python", &python])
    };
    let (code, stdout, stderr) = import(theirs.path(), "gunicorn.conf.py");
    assert!(
        !marker.exists(),
        "root ran a module another user left in the config's folder: {stderr}"
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("count = 3"), "{stdout}");

    let (code, _, stderr) = import(theirs.path(), "imports.conf.py");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("as root, it may not import from the current folder")
            && stderr.contains("belongs to uid 65534"),
        "{stderr}"
    );

    // `run` with gunicorn's python:MODULE, from that folder: the same.
    std::fs::create_dir(theirs.path().join("conf")).unwrap();
    std::fs::copy(
        theirs.path().join("gunicorn.conf.py"),
        theirs.path().join("conf/gunicorn.py"),
    )
    .unwrap();
    let (_, _, stderr) = crate::gunicorn_compat::run_to_exit(
        theirs.path(),
        &[
            "check",
            "-c",
            "python:conf.gunicorn",
            "--python",
            &python,
            "--user",
            "nobody",
        ],
    );
    assert!(
        !marker.exists(),
        "root ran a module another user left in the current folder: {stderr}"
    );

    // A folder only root can change: the file imports the app's settings.
    let ours = AppDir::new(&[("settings.py", "WORKERS = 5\n")]);
    std::fs::copy(
        theirs.path().join("imports.conf.py"),
        ours.path().join("imports.conf.py"),
    )
    .unwrap();
    let (code, stdout, stderr) = import(ours.path(), "imports.conf.py");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("count = 5"), "{stdout}");
}

/// The interpreter that reads a gunicorn config file as root runs the
/// `.pth` files of its site-packages at start, before any code of corral's:
/// one in a virtualenv whose site-packages another user may write to ran
/// as root, though the interpreter itself passed corral's checks. Now the
/// folders it imports from and their `.pth` files are checked first.
#[test]
fn root_does_not_start_an_interpreter_whose_site_packages_another_user_may_change() {
    if !root() {
        return;
    }
    let app = AppDir::new(&[("gunicorn.conf.py", "workers = 2\n")]);
    let venv = app.path().join("venv");
    let made = Command::new(python())
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let site = std::fs::read_dir(venv.join("lib"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.is_dir())
        .expect("the virtualenv's site-packages");
    let marker = app.path().join("ran-as-root");
    let pth = site.join("planted.pth");
    std::fs::write(
        &pth,
        format!(
            "import os; open({:?}, 'w').write(str(os.getuid()))\n",
            marker.to_str().unwrap()
        ),
    )
    .unwrap();
    let venv_python = venv.join("bin/python");
    let import = || {
        crate::gunicorn_compat::run_to_exit(
            app.path(),
            &[
                "import-gunicorn",
                "gunicorn.conf.py",
                "--python",
                venv_python.to_str().unwrap(),
            ],
        )
    };
    // All root's: it runs (the .pth too, as root put it there).
    let (code, stdout, stderr) = import();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("count = 2"), "{stdout}");
    std::fs::remove_file(&marker).unwrap();

    // The .pth another user's, in root's folder: refused, not run.
    std::os::unix::fs::chown(&pth, Some(NOBODY), Some(NOBODY)).unwrap();
    let (code, _, stderr) = import();
    assert!(
        !marker.exists(),
        "root ran another user's .pth file: {stderr}"
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("it runs {} at start", pth.display())),
        "{stderr}"
    );

    // site-packages another user's: refused, whatever is in it.
    std::os::unix::fs::chown(&pth, Some(0), Some(0)).unwrap();
    std::os::unix::fs::chown(&site, Some(NOBODY), Some(NOBODY)).unwrap();
    let (code, _, stderr) = import();
    assert!(
        !marker.exists(),
        "root ran a .pth file in another user's folder: {stderr}"
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("it imports from {}", site.display())),
        "{stderr}"
    );
}

/// The TLS files and the status token file, which a root corral reads, in
/// a folder another user may change: a link that user put there made root
/// read a key of root's own (another site's, 0600 in a folder of root's)
/// and serve with it, and take a file of root's as the token. They are
/// now opened under the log files' rule: a symlink there is refused, and
/// so is a file of someone else's; the folder's owner's own files still
/// serve.
#[test]
fn root_does_not_follow_a_link_another_user_put_where_it_reads_a_key() {
    if !root() {
        return;
    }
    let app = shared_app(&[("app.py", PID_APP)]);
    // Root's own site: its key readable by root alone.
    let secret = AppDir::new(&[("token", "root-only-token-0123456789abcdef\n")]);
    crate::tls::make_certs(secret.path(), "victim.example");
    // A folder of nobody's, with links to root's files.
    let theirs = AppDir::new(&[]);
    std::fs::set_permissions(theirs.path(), PermissionsExt::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(theirs.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    for (link, target) in [
        ("cert.pem", "server.pem"),
        ("key.pem", "server.key"),
        ("token", "token"),
    ] {
        let at = theirs.path().join(link);
        std::os::unix::fs::symlink(secret.path().join(target), &at).unwrap();
        std::os::unix::fs::lchown(&at, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let path = |name: &str| theirs.path().join(name).to_str().unwrap().to_owned();
    let refused = "it is a symlink in a folder another user may change";
    refuses_quickly(
        app.path(),
        &[
            "app:app",
            "--certfile",
            &path("cert.pem"),
            "--keyfile",
            &path("key.pem"),
        ],
        refused,
    );
    refuses_quickly(
        app.path(),
        &["app:app", "--status-token-file", &path("token")],
        refused,
    );
    // A copy of root's key that root left in that folder for itself is
    // still read; so would be the folder owner's own.
    for name in ["cert.pem", "key.pem"] {
        std::fs::remove_file(theirs.path().join(name)).unwrap();
    }
    std::fs::copy(
        secret.path().join("server.pem"),
        theirs.path().join("cert.pem"),
    )
    .unwrap();
    std::fs::copy(
        secret.path().join("server.key"),
        theirs.path().join("key.pem"),
    )
    .unwrap();
    let mut c = Corral::spawn(
        app.path(),
        &[
            "app:app",
            "--certfile",
            &path("cert.pem"),
            "--keyfile",
            &path("key.pem"),
        ],
        &[],
    );
    c.log
        .wait_for("listening on https://", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{}", c.log.text()));
    let _ = c.child.kill();
}

/// `corral status` asking the status server on a Unix socket sends the
/// status token there: a socket another user put in the socket's folder
/// (one they may write to) got it, where the control socket's client
/// already refused such a server. The token now goes only to a server of
/// the client's own user or root, under the control socket's rule.
#[test]
fn the_status_token_is_not_sent_to_a_socket_another_user_serves() {
    if !root() {
        return;
    }
    let theirs = AppDir::new(&[(
        "fake.py",
        "import socket, sys\n\
         s = socket.socket(socket.AF_UNIX)\n\
         s.bind(sys.argv[1])\n\
         s.listen(1)\n\
         s.settimeout(10)\n\
         c, _ = s.accept()\n\
         c.settimeout(2)\n\
         open(sys.argv[2], 'wb').write(c.recv(65536))\n\
         c.sendall(b'HTTP/1.0 200 OK\\r\\n\\r\\n{}')\n",
    )]);
    std::fs::set_permissions(theirs.path(), PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        theirs.path().join("fake.py"),
        PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    std::os::unix::fs::chown(theirs.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    let socket = theirs.path().join("status.sock");
    let got = theirs.path().join("got");
    let fake = Command::new("/usr/bin/python3")
        .arg(theirs.path().join("fake.py"))
        .arg(&socket)
        .arg(&got)
        .uid(NOBODY)
        .gid(NOBODY)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the fake server never bound"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let token = "not-for-nobody-0123456789abcdef";
    let bind = format!("unix:{}", socket.display());
    let (code, _, stderr) = crate::gunicorn_compat::run_to_exit_with_env(
        theirs.path(),
        &["status", "--status-bind", &bind],
        &[("CORRAL_STATUS_TOKEN", token)],
    );
    assert_token_not_sent(fake, &got, token, "nobody's socket");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("it is served by uid 65534"), "{stderr}");
}

/// A Kubernetes TLS secret, as kubelet mounts it: a folder of root's,
/// mode 1777, whose files are links of root's into its `..data` folder
/// (`tls.key -> ..data/tls.key`). Nobody else may remove or rename them
/// (the sticky bit), so they are followed, as before the TLS files were
/// guarded; a link another user put in that folder is still refused.
#[test]
fn root_serves_tls_from_a_kubernetes_secret_volume_and_refuses_others_links_there() {
    if !root() {
        return;
    }
    let app = shared_app(&[("app.py", PID_APP)]);
    let volume = AppDir::new(&[]);
    let timestamped = volume.path().join("..2026_12_07_07_00_00.123456789");
    std::fs::create_dir(&timestamped).unwrap();
    crate::tls::make_certs(&timestamped, "localhost");
    std::fs::write(timestamped.join("token"), "k8s-token-0123456789abcdef\n").unwrap();
    std::os::unix::fs::symlink(
        timestamped.file_name().unwrap(),
        volume.path().join("..data"),
    )
    .unwrap();
    for (link, file) in [
        ("tls.crt", "server.pem"),
        ("tls.key", "server.key"),
        ("token", "token"),
    ] {
        std::os::unix::fs::symlink(format!("..data/{file}"), volume.path().join(link)).unwrap();
    }
    std::fs::set_permissions(volume.path(), PermissionsExt::from_mode(0o1777)).unwrap();
    let path = |name: &str| volume.path().join(name).to_str().unwrap().to_owned();
    let mut c = Corral::spawn(
        app.path(),
        &[
            "app:app",
            "--certfile",
            &path("tls.crt"),
            "--keyfile",
            &path("tls.key"),
            "--status-token-file",
            &path("token"),
        ],
        &[],
    );
    let served = c
        .log
        .wait_for("listening on https://", Duration::from_secs(15));
    let log = c.log.text();
    let _ = c.child.kill();
    let _ = c.child.wait();
    assert!(served.is_some(), "{log}");
    // The same folder, a link of nobody's to root's key: refused.
    let planted = volume.path().join("planted.key");
    std::os::unix::fs::symlink(timestamped.join("server.key"), &planted).unwrap();
    std::os::unix::fs::lchown(&planted, Some(NOBODY), Some(NOBODY)).unwrap();
    refuses_quickly(
        app.path(),
        &[
            "app:app",
            "--certfile",
            &path("tls.crt"),
            "--keyfile",
            &path("planted.key"),
        ],
        "it is a symlink in a folder another user may change",
    );
}

/// A Kubernetes volume as kubelet makes it, holding `files`: a folder of
/// root's with the given mode, whose files are root's links through
/// `..data` into a dated folder.
fn kubelet_volume(mode: u32, files: &[(&str, &str)]) -> AppDir {
    let volume = AppDir::new(&[]);
    let dated = volume.path().join("..2026_12_07_09_00_00.987654321");
    std::fs::create_dir(&dated).unwrap();
    for (name, text) in files {
        std::fs::write(dated.join(name), text).unwrap();
        std::os::unix::fs::symlink(format!("..data/{name}"), volume.path().join(name)).unwrap();
    }
    std::os::unix::fs::symlink(dated.file_name().unwrap(), volume.path().join("..data")).unwrap();
    std::fs::set_permissions(volume.path(), PermissionsExt::from_mode(mode)).unwrap();
    volume
}

/// corral.toml from a Kubernetes secret volume (a folder of root's, mode
/// 1777) and from a ConfigMap volume (mode 0777, no sticky bit; kubelet
/// always mounts both read-only), read by a corral running as root, as a
/// container's default user is. Both were refused ("its folder ...: group
/// or others may write to it ... chown root, chmod go-w"), which a
/// container cannot do to its volumes. The ConfigMap's folder mounted
/// writable is still refused: anyone could swap the file there.
#[test]
fn root_reads_corral_toml_from_kubernetes_secret_and_configmap_volumes() {
    if !root() {
        return;
    }
    let app = shared_app(&[("app.py", PID_APP)]);
    let toml = format!(
        "[app]\nmodule = \"app:app\"\nchdir = {:?}\n",
        app.path().display().to_string()
    );
    let serves = |c: &mut Corral| {
        let up = c.log.wait_for("in service", Duration::from_secs(20));
        let log = c.log.text();
        let _ = c.child.kill();
        let _ = c.child.wait();
        assert!(up.is_some(), "{log}");
    };
    let secret = kubelet_volume(0o1777, &[("corral.toml", &toml)]);
    let config = secret.path().join("corral.toml");
    let mut c = Corral::spawn(app.path(), &["-c", config.to_str().unwrap()], &[]);
    serves(&mut c);

    let configmap = kubelet_volume(
        0o777,
        &[
            ("corral.toml", &toml),
            ("gunicorn.conf.py", "workers = 2\n"),
        ],
    );
    let config = configmap.path().join("corral.toml");
    refuses_quickly(
        app.path(),
        &["-c", config.to_str().unwrap()],
        "group or others may write to it (mode 0777)",
    );
    // Mounted read-only in a mount namespace of corral's own, as kubelet
    // mounts it into the container.
    let read_only = configmap.path().to_path_buf();
    let mut c = Corral::spawn_with(
        app.path(),
        &["-c", config.to_str().unwrap()],
        &[],
        move |cmd| mounted_read_only(cmd, &read_only),
    );
    serves(&mut c);
    // A gunicorn.conf.py there, read the same way.
    let conf = configmap.path().join("gunicorn.conf.py");
    let python = python();
    let import = |read_only: bool| {
        let mut cmd = Command::new(corral_bin());
        cmd.current_dir(app.path())
            .args([
                "import-gunicorn",
                conf.to_str().unwrap(),
                "--python",
                &python,
            ])
            .env_remove("VIRTUAL_ENV");
        if read_only {
            mounted_read_only(&mut cmd, configmap.path());
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, text) = import(false);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("it is a symlink in a folder another user may change"),
        "{text}"
    );
    let (code, text) = import(true);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("count = 2"), "{text}");
}

/// Runs `cmd` in a mount namespace of its own where `dir` is mounted
/// read-only (root only).
fn mounted_read_only(cmd: &mut Command, dir: &Path) {
    with_mounts(cmd, Mount::read_only(dir).into());
}

/// An access log made for corral's user in a folder of root's (as
/// logrotate's `create 0640 app app` in /var/log leaves it): `corral run`
/// appends to it, so `corral check` passes it too. It exited 2 ("its
/// folder ... is not writable"), failing a deploy whose `corral run`
/// would serve; a pid file there, which `run` replaces, still fails both.
#[test]
fn check_passes_an_access_log_corral_may_write_in_a_folder_it_may_not() {
    if !root() {
        return;
    }
    let app = shared_app(&[("app.py", "def app(e, s):\n    return []\n")]);
    let logs = app.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    std::fs::set_permissions(&logs, PermissionsExt::from_mode(0o755)).unwrap();
    let log = logs.join("access.log");
    std::fs::write(&log, "").unwrap();
    std::os::unix::fs::chown(&log, Some(NOBODY), Some(NOBODY)).unwrap();
    let log = log.to_str().unwrap();
    let mut check = corral_as(
        app.path(),
        &[
            "check",
            "app:app",
            "--python",
            "/usr/bin/python3",
            "--access-logfile",
            log,
        ],
        Some(NOBODY),
        &[],
    );
    let st = check.wait_exit(Duration::from_secs(30));
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{}", check.log.text());
    // `corral run` serves with it.
    let mut run = corral_as(
        app.path(),
        &[
            "app:app",
            "--python",
            "/usr/bin/python3",
            "-b",
            "127.0.0.1:0",
            "--access-logfile",
            log,
        ],
        Some(NOBODY),
        &[],
    );
    let served = run
        .log
        .wait_for("listening on http://", Duration::from_secs(15));
    let text = run.log.text();
    let _ = run.child.kill();
    let _ = run.child.wait();
    assert!(served.is_some(), "{text}");
    // A pid file there is replaced, which needs the folder: refused.
    let pid = logs.join("corral.pid");
    let mut check = corral_as(
        app.path(),
        &[
            "check",
            "app:app",
            "--python",
            "/usr/bin/python3",
            "--pid",
            pid.to_str().unwrap(),
        ],
        Some(NOBODY),
        &[],
    );
    let st = check.wait_exit(Duration::from_secs(30));
    assert_eq!(st.and_then(|s| s.code()), Some(2), "{}", check.log.text());
    assert!(
        check.log.text().contains("is not writable"),
        "{}",
        check.log.text()
    );
}

/// A `.pth` file of root's that puts another user's folder on Python's
/// path (an editable install of the app: `pip install -e /srv/app`): the
/// interpreter that reads a gunicorn config file as root imports
/// `sitecustomize` from its path at start, so that user's module ran as
/// root, though the `.pth` file and site-packages were root's. The folders
/// a `.pth` file names are checked as site-packages is.
#[test]
fn root_does_not_start_an_interpreter_whose_pth_file_names_another_users_folder() {
    if !root() {
        return;
    }
    let app = AppDir::new(&[("gunicorn.conf.py", "workers = 2\n")]);
    let venv = app.path().join("venv");
    let made = Command::new(python())
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let site = std::fs::read_dir(venv.join("lib"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.is_dir())
        .expect("the virtualenv's site-packages");
    let source = app.path().join("src");
    std::fs::create_dir(&source).unwrap();
    let marker = app.path().join("ran-as-root");
    std::fs::write(
        source.join("sitecustomize.py"),
        format!(
            "import os; open({:?}, 'w').write(str(os.getuid()))\n",
            marker.to_str().unwrap()
        ),
    )
    .unwrap();
    std::fs::write(
        site.join("__editable__.app-0.1.pth"),
        format!("{}\n", source.display()),
    )
    .unwrap();
    let venv_python = venv.join("bin/python");
    let import = || {
        crate::gunicorn_compat::run_to_exit(
            app.path(),
            &[
                "import-gunicorn",
                "gunicorn.conf.py",
                "--python",
                venv_python.to_str().unwrap(),
            ],
        )
    };
    // The folder root's: it runs.
    let (code, stdout, stderr) = import();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("count = 2"), "{stdout}");
    let _ = std::fs::remove_file(&marker);
    // The folder another user's: refused, their module not run.
    std::os::unix::fs::chown(&source, Some(NOBODY), Some(NOBODY)).unwrap();
    let (code, _, stderr) = import();
    assert!(
        !marker.exists(),
        "root ran a module from another user's folder: {stderr}"
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("puts {} on its path", source.display())),
        "{stderr}"
    );
}

/// A Kubernetes secret volume: a tmpfs of root's, mode 1777, whose
/// `tls.crt` and `tls.key` are root's links through `..data`, a link that
/// each update swaps for one to a new folder named for its time. corral
/// refused them as symlinks in a folder others may write to, and said to
/// give the real path, which the next update removes. In a sticky folder
/// of root's no one else can rename or remove root's links, so they are
/// followed (as the kernel's `fs.protected_symlinks` follows them), and a
/// reload reads the swapped one; another user's link there still is not.
#[test]
fn root_serves_the_linked_files_of_a_kubernetes_secret_volume() {
    if !root() {
        return;
    }
    let app = shared_app(&[("app.py", PID_APP)]);
    let volume = AppDir::new(&[]);
    std::fs::set_permissions(volume.path(), PermissionsExt::from_mode(0o1777)).unwrap();
    let dated = "..2026_12_07_07_50_00.123456789";
    std::fs::create_dir(volume.path().join(dated)).unwrap();
    crate::tls::make_certs(&volume.path().join(dated), "localhost");
    std::os::unix::fs::symlink(dated, volume.path().join("..data")).unwrap();
    for (link, target) in [("tls.crt", "server.pem"), ("tls.key", "server.key")] {
        std::os::unix::fs::symlink(format!("..data/{target}"), volume.path().join(link)).unwrap();
    }
    let path = |name: &str| volume.path().join(name).to_str().unwrap().to_owned();
    let mut c = Corral::spawn(
        app.path(),
        &[
            "app:app",
            "--certfile",
            &path("tls.crt"),
            "--keyfile",
            &path("tls.key"),
        ],
        &[],
    );
    c.log
        .wait_for("listening on https://", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{}", c.log.text()));
    // An update: a new dated folder, `..data` swapped to it, the old one
    // removed; a reload reads the new files through the same links.
    let next = "..2026_12_07_08_00_00.987654321";
    std::fs::create_dir(volume.path().join(next)).unwrap();
    for name in ["server.pem", "server.key"] {
        std::fs::copy(
            volume.path().join(dated).join(name),
            volume.path().join(next).join(name),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink(next, volume.path().join("..data_tmp")).unwrap();
    std::fs::rename(
        volume.path().join("..data_tmp"),
        volume.path().join("..data"),
    )
    .unwrap();
    std::fs::remove_dir_all(volume.path().join(dated)).unwrap();
    c.signal(libc::SIGHUP);
    c.log
        .wait_for("certificate and key read again", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{}", c.log.text()));
    let _ = c.child.kill();
    let _ = c.child.wait();
    // Another user's link in that folder is refused.
    let theirs = volume.path().join("theirs.key");
    std::os::unix::fs::symlink("..data/server.key", &theirs).unwrap();
    std::os::unix::fs::lchown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    refuses_quickly(
        app.path(),
        &[
            "app:app",
            "--certfile",
            &path("tls.crt"),
            "--keyfile",
            &path("theirs.key"),
        ],
        "it is a symlink in a folder another user may change",
    );
}

/// gunicorn's classic layout: the app's user owns the app folder and its
/// gunicorn.conf.py, and root starts the server there. Root must not run
/// that user's Python; the refusal spoke of a corral.toml's commands and
/// status token, and said only to make the file root's. It now says the
/// file is code root would run, and how to keep the app's user's file:
/// convert it once as that user and give corral the result from a folder
/// of root's.
#[test]
fn root_refuses_the_app_users_gunicorn_config_and_says_how_to_convert_it() {
    if !root() {
        return;
    }
    let app = shared_app(&[
        ("app.py", PID_APP),
        ("gunicorn.conf.py", "wsgi_app = \"app:app\"\nworkers = 1\n"),
    ]);
    std::os::unix::fs::chown(
        app.path().join("gunicorn.conf.py"),
        Some(NOBODY),
        Some(NOBODY),
    )
    .unwrap();
    let log = refuses_quickly(
        app.path(),
        &["-c", "gunicorn.conf.py"],
        "it is Python code that corral runs as root",
    );
    assert!(log.contains("belongs to uid 65534"), "{log}");
    assert!(
        log.contains("corral import-gunicorn gunicorn.conf.py > app.toml"),
        "{log}"
    );
}

/// A gunicorn.conf.py of root's read with the app's user's virtualenv
/// (`--python /srv/app/.venv/bin/python`, in a folder that user owns):
/// refused, rightly, but the message was a hook's, ending in "run the
/// command as the app's user, e.g. [\"runuser\", ...]", which `--python`
/// cannot take. It now names the interpreter's ways out.
#[test]
fn root_refuses_the_app_users_interpreter_for_a_gunicorn_config_with_its_own_fix() {
    if !root() {
        return;
    }
    let app = shared_app(&[
        ("app.py", PID_APP),
        ("gunicorn.conf.py", "wsgi_app = \"app:app\"\nworkers = 1\n"),
    ]);
    let theirs = AppDir::new(&[]);
    std::fs::set_permissions(theirs.path(), PermissionsExt::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(theirs.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    let python = theirs.path().join("python");
    std::os::unix::fs::symlink("/usr/bin/python3", &python).unwrap();
    let log = refuses_quickly(
        app.path(),
        &[
            "-c",
            "gunicorn.conf.py",
            "--python",
            python.to_str().unwrap(),
        ],
        "someone besides root can change it",
    );
    assert!(
        log.contains("Give an interpreter only root can change"),
        "{log}"
    );
    assert!(
        log.contains("corral import-gunicorn gunicorn.conf.py"),
        "{log}"
    );
    assert!(!log.contains("runuser"), "{log}");
}

/// The same on a TCP status port on this host: while corral is down any
/// user may serve its port, and `corral status --status-bind
/// 127.0.0.1:PORT` sent that user the token. It goes only to a server of
/// the client's own user or root now (the owner of the server's socket,
/// from the kernel's table of TCP sockets).
#[test]
fn the_status_token_is_not_sent_to_a_tcp_port_another_user_serves() {
    if !root() {
        return;
    }
    let (theirs, fake, port, got) = nobodys_tcp_server();
    let token = "not-for-nobody-0123456789abcdef";
    let bind = format!("127.0.0.1:{port}");
    let (code, _, stderr) = crate::gunicorn_compat::run_to_exit_with_env(
        theirs.path(),
        &["status", "--status-bind", &bind],
        &[("CORRAL_STATUS_TOKEN", token)],
    );
    assert_token_not_sent(fake, &got, token, "nobody's port");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("it is served by uid 65534"), "{stderr}");
}

/// Stops nobody's fake status server `fake` and checks that what it got
/// (it writes that to `got`) holds no `token`.
fn assert_token_not_sent(mut fake: std::process::Child, got: &Path, token: &str, whose: &str) {
    let _ = fake.kill();
    let _ = fake.wait();
    let sent = std::fs::read_to_string(got).unwrap_or_default();
    assert!(!sent.contains(token), "the token went to {whose}: {sent:?}");
}

/// A TCP server of nobody's on a free port of 127.0.0.1 that keeps what
/// its first client sends in `got` (the folder's `got`): the folder, the
/// server, the port and that file.
fn nobodys_tcp_server() -> (AppDir, std::process::Child, u16, PathBuf) {
    let theirs = AppDir::new(&[(
        "fake.py",
        "import socket, sys\n\
         s = socket.socket()\n\
         s.bind(('127.0.0.1', int(sys.argv[1])))\n\
         s.listen(1)\n\
         open(sys.argv[2] + '.up', 'w').close()\n\
         s.settimeout(10)\n\
         c, _ = s.accept()\n\
         c.settimeout(2)\n\
         open(sys.argv[2], 'wb').write(c.recv(65536))\n\
         c.sendall(b'HTTP/1.0 200 OK\\r\\n\\r\\n{}')\n",
    )]);
    std::fs::set_permissions(theirs.path(), PermissionsExt::from_mode(0o777)).unwrap();
    std::fs::set_permissions(
        theirs.path().join("fake.py"),
        PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let port = crate::common::compare::free_port();
    let got = theirs.path().join("got");
    let fake = Command::new("/usr/bin/python3")
        .arg(theirs.path().join("fake.py"))
        .arg(port.to_string())
        .arg(&got)
        .uid(NOBODY)
        .gid(NOBODY)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !theirs.path().join("got.up").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the fake server never bound"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (theirs, fake, port, got)
}

/// The same where `corral status` cannot read the kernel's table of TCP
/// sockets: a /proc mounted with `subset=pid` (systemd's `ProcSubset=pid`)
/// has no net folder. Who served the port was then not checked at all
/// and the token went to nobody's server; it stays now, and the error
/// says why.
#[test]
fn the_status_token_is_not_sent_to_a_local_tcp_port_when_the_socket_table_is_hidden() {
    if !root() {
        return;
    }
    let (theirs, fake, port, got) = nobodys_tcp_server();
    let token = "not-for-nobody-0123456789abcdef";
    let bind = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(corral_bin());
    cmd.current_dir(theirs.path())
        .args(["status", "--status-bind", &bind])
        .env("CORRAL_STATUS_TOKEN", token)
        .stdin(Stdio::null());
    with_mounts(
        &mut cmd,
        vec![Mount::new_fs("proc", Path::new("/proc"), "subset=pid")],
    );
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_token_not_sent(fake, &got, token, "nobody's port");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("does not say by whom"), "{stderr}");
}

/// A folder of root's that anyone may write to (mode 0777), bound
/// read-only where corral reads it (as a unit's `ProtectHome=read-only`
/// or a read-only bind mount does) while it stays writable at its own
/// path: another user may still put links and files there, so they are
/// not taken. A link of nobody's to root's key (a key nobody chose, not
/// the one the folder's owner gave) was followed and served, and a link
/// of nobody's to another of root's files was read as corral.toml; both
/// are refused as in a writable one, while the volume's own links of
/// root's (`tls.key -> ..data/tls.key`) still serve.
#[test]
fn root_refuses_others_links_in_a_world_writable_folder_mounted_read_only() {
    if !root() {
        return;
    }
    let app = shared_app(&[("app.py", PID_APP)]);
    let toml = format!(
        "[app]\nmodule = \"app:app\"\nchdir = {:?}\n",
        app.path().display().to_string()
    );
    let volume = kubelet_volume(0o777, &[("corral.toml", &toml)]);
    let dated = volume.path().join("..2026_12_07_09_00_00.987654321");
    crate::tls::make_certs(&dated, "localhost");
    for (link, file) in [("tls.crt", "server.pem"), ("tls.key", "server.key")] {
        std::os::unix::fs::symlink(format!("..data/{file}"), volume.path().join(link)).unwrap();
    }
    // Root's files elsewhere, which nobody points corral at.
    let elsewhere = AppDir::new(&[("other.toml", &toml)]);
    crate::tls::make_certs(elsewhere.path(), "localhost");
    for (name, target) in [
        ("planted.key", elsewhere.path().join("server.key")),
        ("planted.toml", elsewhere.path().join("other.toml")),
    ] {
        let planted = volume.path().join(name);
        std::os::unix::fs::symlink(target, &planted).unwrap();
        std::os::unix::fs::lchown(&planted, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let path = |name: &str| volume.path().join(name).to_str().unwrap().to_owned();
    let run = |args: &[&str]| {
        let ro = volume.path().to_path_buf();
        let mut c = Corral::spawn_with(app.path(), args, &[], move |cmd| {
            mounted_read_only(cmd, &ro)
        });
        // Refused at once (exit 2), or in service within the time.
        let st = c.wait_exit(Duration::from_secs(5));
        let up = st.is_none()
            && c.log
                .wait_for("in service", Duration::from_secs(20))
                .is_some();
        let log = c.log.text();
        let _ = c.child.kill();
        let _ = c.child.wait();
        (up, st.and_then(|s| s.code()), log)
    };
    // The volume's own links of root's serve.
    let (up, _, log) = run(&[
        "app:app",
        "--certfile",
        &path("tls.crt"),
        "--keyfile",
        &path("tls.key"),
    ]);
    assert!(up, "{log}");
    assert!(log.contains("listening on https://"), "{log}");
    // nobody's link to root's key.
    let (up, code, log) = run(&[
        "app:app",
        "--certfile",
        &path("tls.crt"),
        "--keyfile",
        &path("planted.key"),
    ]);
    assert!(!up, "served with the key nobody's link led to: {log}");
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("it is a symlink in a folder another user may change"),
        "{log}"
    );
    // nobody's link to root's other file, as corral.toml.
    let (up, code, log) = run(&["-c", &path("planted.toml")]);
    assert!(
        !up,
        "read the file nobody's link led to as corral.toml: {log}"
    );
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("group or others may write to it (mode 0777)"),
        "{log}"
    );
    // The volume's own corral.toml, through root's links, still serves.
    let (up, _, log) = run(&["-c", &path("corral.toml")]);
    assert!(up, "{log}");
}
