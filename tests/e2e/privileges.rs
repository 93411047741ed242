//! Workers run as `[workers] user`/`group` with their limits, each in its
//! own process group, while corral itself stays root (it binds the ports).
//! Needs root, as CI and the development machines have: without it, these
//! tests fail under `CI` and say they are skipped elsewhere.

use crate::common::*;
use std::time::Duration;

const APP: &str = r#"
import os, json, resource

def app(environ, start_response):
    mask = os.umask(0)
    os.umask(mask)
    body = json.dumps({
        "uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
        "core": resource.getrlimit(resource.RLIMIT_CORE),
        "as": resource.getrlimit(resource.RLIMIT_AS),
        "umask": mask,
        "pgid": os.getpgid(0), "pid": os.getpid(),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
"#;

/// Starts corral as root on APP with `config`, readable by the workers'
/// user (stdlib-only app, Debian's python3); None when not root.
fn start_as_root(config: &str, workers: usize) -> Option<(AppDir, Corral)> {
    start_as_root_with(config, workers, |_| {})
}

/// [`start_as_root`], with a last say on corral's command.
fn start_as_root_with(
    config: &str,
    workers: usize,
    setup: impl FnOnce(&mut std::process::Command),
) -> Option<(AppDir, Corral)> {
    use std::os::unix::fs::PermissionsExt;
    if !require_root("to change users") {
        return None;
    }
    let app = AppDir::new(&[("app.py", APP), ("corral.toml", config)]);
    std::fs::set_permissions(app.path(), PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::set_permissions(app.path().join("app.py"), PermissionsExt::from_mode(0o644)).unwrap();
    let mut c = Corral::spawn_with(
        app.path(),
        &["-c", "corral.toml", "--python", "/usr/bin/python3"],
        &[],
        setup,
    );
    c.wait_listening();
    c.wait_in_service(workers);
    Some((app, c))
}

#[test]
fn workers_drop_to_their_user_with_limits_in_their_own_process_group() {
    let Some((_app, c)) = start_as_root(
        "[app]\nmodule = \"app:app\"\npython = \"/usr/bin/python3\"\n[server]\nbind = [\"127.0.0.1:0\"]\n[workers]\ncount = 2\nuser = \"nobody\"\ngroup = \"nogroup\"\n[workers.limits]\nnofile = 1234\ncore = 0\naddress_space = \"4GiB\"\numask = \"027\"\n",
        2,
    ) else {
        return;
    };
    let r = c.get("/");
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["uid"], 65534, "{v}");
    assert_eq!(v["gid"], 65534, "{v}");
    assert_eq!(v["groups"], serde_json::json!([65534]), "{v}");
    assert_eq!(v["nofile"], serde_json::json!([1234, 1234]));
    assert_eq!(v["core"], serde_json::json!([0, 0]));
    assert_eq!(v["as"], serde_json::json!([4u64 << 30, 4u64 << 30]));
    assert_eq!(v["umask"], 0o027);
    assert_eq!(
        v["pgid"], v["pid"],
        "each worker leads its own process group"
    );
    // corral itself is still root; its runtime dir is not world-readable.
    let status = std::fs::read_to_string(format!("/proc/{}/status", c.pid())).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    );
}

#[test]
fn corral_can_drop_its_own_privileges_after_binding() {
    let Some((_app, c)) = start_as_root(
        "[app]\nmodule = \"app:app\"\npython = \"/usr/bin/python3\"\n[server]\nbind = [\"127.0.0.1:0\"]\ndrop_privileges = true\n[workers]\ncount = 1\nuser = \"nobody\"\n",
        1,
    ) else {
        return;
    };
    assert!(c.log.has("dropped privileges: corral now runs as nobody"));
    let status = std::fs::read_to_string(format!("/proc/{}/status", c.pid())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "65534"),
        "{uid_line}"
    );
    let v: serde_json::Value = serde_json::from_slice(&c.get("/").body).unwrap();
    assert_eq!(v["uid"], 65534);
}

/// The workers get their user's supplementary groups (initgroups), not
/// root's and not none: corral runs in a private mount namespace where
/// /etc/group (a copy, bind-mounted; the host's file is untouched) makes
/// nobody a member of two more groups.
#[test]
fn workers_get_their_users_supplementary_groups() {
    if !require_root("to change users and mount /etc/group") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let group = dir.path().join("group");
    let mut text = std::fs::read_to_string("/etc/group").unwrap();
    text.push_str("corral-test-a:x:4242:daemon,nobody\ncorral-test-b:x:4243:nobody\n");
    std::fs::write(&group, text).unwrap();
    let Some((_app, c)) = start_as_root_with(
        "[app]\nmodule = \"app:app\"\npython = \"/usr/bin/python3\"\n[server]\nbind = [\"127.0.0.1:0\"]\n[workers]\ncount = 1\nuser = \"nobody\"\n",
        1,
        move |cmd| {
            with_mounts(
                cmd,
                vec![Mount::bind(&group, std::path::Path::new("/etc/group"))],
            )
        },
    ) else {
        return;
    };
    let v: serde_json::Value = serde_json::from_slice(&c.get("/").body).unwrap();
    assert_eq!(v["uid"], 65534, "{v}");
    assert_eq!(v["gid"], 65534, "{v}");
    assert_eq!(v["groups"], serde_json::json!([4242, 4243, 65534]), "{v}");
}

/// gunicorn's `-u`/`-g` and `-m/--umask` shape the app's Unix sockets too:
/// the nginx set-up where the proxy reaches the socket through its group
/// (`-u app -g www-data -m 007`).
#[test]
fn app_unix_sockets_belong_to_the_workers_user_and_take_gunicorns_umask() {
    use std::os::unix::fs::MetadataExt;
    let Some((app, c)) = start_as_root(
        "[app]\nmodule = \"app:app\"\npython = \"/usr/bin/python3\"\n[server]\nbind = [\"127.0.0.1:0\", \"unix:app.sock\"]\n[workers]\ncount = 1\nuser = \"nobody\"\ngroup = \"nogroup\"\n[workers.limits]\numask = \"007\"\n",
        1,
    ) else {
        return;
    };
    let sock = app.path().join("app.sock");
    let meta = std::fs::metadata(&sock).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (65534, 65534, 0o770)
    );
    // A proxy running in that group connects; a user outside it cannot.
    let as_user = |user: &str, group: &str| {
        std::process::Command::new("setpriv")
            .args([
                &format!("--reuid={user}"),
                &format!("--regid={group}"),
                "--clear-groups",
                "curl",
                "-s",
                "--max-time",
                "10",
                "--unix-socket",
            ])
            .arg(&sock)
            .arg("http://localhost/")
            .output()
            .expect("run setpriv and curl")
    };
    let proxy = as_user("daemon", "nogroup");
    assert!(proxy.status.success(), "{proxy:?}");
    assert!(String::from_utf8_lossy(&proxy.stdout).contains("\"uid\": 65534"));
    let other = as_user("daemon", "daemon");
    assert_eq!(other.status.code(), Some(7), "{other:?}");
    drop(c);
}

/// corral not run as root: `--user` naming another user is a config error
/// at once (exit 2, naming both users), not a worker that fails to start
/// again and again with "Operation not permitted"; naming its own user is
/// no switch at all, and the workers serve (setgroups(2) failed even
/// then).
#[test]
fn a_corral_that_is_not_root_refuses_another_user_and_takes_its_own() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if !require_root("to run corral as another user") {
        return;
    }
    let app = AppDir::new(&[("app.py", APP)]);
    std::fs::set_permissions(app.path(), PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::set_permissions(app.path().join("app.py"), PermissionsExt::from_mode(0o644)).unwrap();
    let as_nobody = |user: &str| {
        std::process::Command::new("timeout")
            .args([
                "30",
                corral_bin(),
                "check",
                "app:app",
                "--python",
                "/usr/bin/python3",
            ])
            .args(["--user", user])
            .current_dir(app.path())
            .env("HOME", app.path())
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    let out = as_nobody("root");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("--user: corral runs as nobody (uid 65534, gid 65534), not as root, so it cannot run its workers as root (uid 0, gid 0)"),
        "{text}"
    );
    let out = as_nobody("nobody");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("OK: app:app imported"), "{text}");
}

/// Root can get anywhere; the workers' user may not. An app folder that
/// user may not enter (a checkout in root's 0700 folder) is said at the
/// start, naming the user and the folder, where each worker only failed
/// with `ModuleNotFoundError`.
#[test]
fn an_app_folder_the_workers_user_cannot_enter_is_named_at_the_start() {
    if !require_root("to change users") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let app = AppDir::new(&[("app.py", APP)]);
    std::fs::set_permissions(app.path(), PermissionsExt::from_mode(0o700)).unwrap();
    let c = Corral::spawn(
        app.path(),
        &[
            "app:app",
            "--python",
            "/usr/bin/python3",
            "--user",
            "nobody",
        ],
        &[],
    );
    let line = c
        .log
        .wait_for("out of their reach", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no warning:\n{}", c.log.text()));
    assert!(
        line.contains(&format!(
            "the workers run as nobody (uid 65534), and it may not read {} (mode 700, owner uid 0",
            app.path().display()
        )) && line.contains("the app folder is out of their reach"),
        "{line}"
    );
}

/// A container's user often has no home: `nobody`'s is `/nonexistent`,
/// and `docker run --user 1000` for a uid the image's passwd does not know
/// sets `HOME=/`. corral keeps its state (the last good generation, for
/// rollbacks) in `/tmp/corral-UID-state` then, as it does with no HOME,
/// where every good reload warned "cannot create the state dir
/// /nonexistent/.local/state/corral/..." and remembered nothing.
#[test]
fn a_user_without_a_home_of_its_own_keeps_its_state_in_tmp() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if !require_root("to run corral as another user") {
        return;
    }
    for home in ["/nonexistent", "/"] {
        let app = AppDir::new(&[("app.py", APP)]);
        std::fs::set_permissions(app.path(), PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::set_permissions(app.path().join("app.py"), PermissionsExt::from_mode(0o644))
            .unwrap();
        // The app folder is root's, as an image's is; the control socket
        // goes in a folder of nobody's.
        let run = app.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::os::unix::fs::chown(&run, Some(65534), Some(65534)).unwrap();
        let socket = run.join("corral.sock");
        // With --chdir, each good generation's folder is remembered.
        let mut c = Corral::spawn_with(
            app.path(),
            &[
                "app:app",
                "--chdir",
                app.path().to_str().unwrap(),
                "-w",
                "1",
                "--python",
                "/usr/bin/python3",
                "--socket",
                socket.to_str().unwrap(),
            ],
            &[("HOME", home)],
            |cmd| {
                cmd.env_remove("STATE_DIRECTORY")
                    .env_remove("XDG_STATE_HOME")
                    .env_remove("TMPDIR")
                    .uid(65534)
                    .gid(65534);
            },
        );
        c.wait_listening();
        c.wait_in_service(1);
        let log = c.log.text();
        let state = log
            .lines()
            .find_map(|l| l.split_once(", state ").map(|(_, s)| s.trim().to_string()))
            .unwrap_or_else(|| panic!("no state folder in the log:\n{log}"));
        let state = std::path::PathBuf::from(state);
        assert!(
            state.starts_with("/tmp/corral-65534-state"),
            "HOME={home}: state in {}:\n{log}",
            state.display()
        );
        c.signal(libc::SIGHUP);
        assert!(
            c.log
                .wait_for("reload done", Duration::from_secs(20))
                .is_some(),
            "{}",
            c.log.text()
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !state.join("last-good-path").exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "HOME={home}: no last-good-path in {}:\n{}",
                state.display(),
                c.log.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            !c.log.text().contains("cannot create the state dir"),
            "HOME={home}: {}",
            c.log.text()
        );
        c.signal(libc::SIGTERM);
        assert_eq!(
            c.wait_exit(Duration::from_secs(20)).and_then(|s| s.code()),
            Some(0)
        );
        std::fs::remove_dir_all(&state).unwrap();
        // The folder it was made in, when no other corral of nobody's
        // keeps its state there.
        let _ = std::fs::remove_dir(state.parent().unwrap());
    }
}

/// A worker whose user has reached its limit of processes and threads
/// (`ulimit -u`; a unit's `TasksMax=`) imports its app but cannot start the
/// threads that serve it. Its boot fails with the reason and what to do,
/// in the log as an import error's would. Before, corral said only that
/// the worker "exited with code 1 while booting, before it could report",
/// and the worker's own traceback was lost ("lost sys.stderr"): its
/// output writer asked for a Python frame above it, which the interpreter
/// printing an uncaught exception as it exits does not have.
#[test]
fn a_worker_that_cannot_start_its_threads_fails_its_boot_with_the_reason() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if !require_root("to run the workers as nobody, whose processes the limit counts") {
        return;
    }
    let config = "[app]\nmodule = \"app:app\"\npython = \"/usr/bin/python3\"\n[server]\nbind = [\"127.0.0.1:0\"]\n[workers]\ncount = 1\nthreads = 64\nuser = \"nobody\"\n";
    let app = AppDir::new(&[("app.py", APP), ("corral.toml", config)]);
    std::fs::set_permissions(app.path(), PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::set_permissions(app.path().join("app.py"), PermissionsExt::from_mode(0o644)).unwrap();
    // Root's own processes are not held to it; the worker, as nobody, is:
    // its 64 threads cannot all start.
    let c = Corral::spawn_with(
        app.path(),
        &["-c", "corral.toml", "--python", "/usr/bin/python3"],
        &[],
        |cmd| {
            // SAFETY: setrlimit is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    let limit = libc::rlimit {
                        rlim_cur: 32,
                        rlim_max: 32,
                    };
                    if libc::setrlimit(libc::RLIMIT_NPROC, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        },
    );
    // The record's last line, once it is all there.
    c.log
        .wait_for(
            "its user has reached its limit of processes and threads (ulimit -u",
            Duration::from_secs(20),
        )
        .unwrap_or_else(|| panic!("no boot failure with the reason; log:\n{}", c.log.text()));
    let log = c.log.text();
    assert!(
        log.contains("ERROR worker 0 (pid ")
            && log.contains(") failed to boot:")
            && log.contains("RuntimeError: can't start new thread")
            && !log.contains("before it could report")
            && !log.contains("lost sys.stderr"),
        "{log}"
    );
}
