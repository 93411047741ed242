//! The control socket and its commands: `corral reload --wait`, `corral
//! scale`, `corral stop`, `corral status`, as a deploy pipeline uses them.

use crate::common::*;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn app_version(tag: &str, padding: usize) -> String {
    format!(
        "# {}\ndef app(environ, start_response):\n    body = b\"{tag}\"\n    start_response(\"200 OK\", [(\"Content-Length\", str(len(body)))])\n    return [body]\n",
        "x".repeat(padding)
    )
}

fn corral(args: &[&str]) -> Output {
    Command::new(corral_bin())
        .args(args)
        .output()
        .expect("run corral")
}

/// A client command (`corral status`, `reload`, ...) run in `dir` with
/// `env`, to its end.
fn client_in(dir: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(corral_bin())
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .output()
        .expect("run corral")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn reload_wait_reports_success_and_failure_with_the_traceback() {
    let app = AppDir::new(&[("app.py", &app_version("v1", 1))]);
    let c = Corral::start(app.path(), &["app:app", "-w", "2"], 2);
    let socket = c.socket.to_str().unwrap().to_string();

    std::fs::write(app.path().join("app.py"), app_version("v2", 30)).unwrap();
    let out = corral(&["reload", "--wait", "--socket", &socket]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("generation 2 (revision "),
        "{}",
        text(&out)
    );
    assert_eq!(c.get("/").text(), "v2");

    std::fs::write(
        app.path().join("app.py"),
        "import os\nSECRET = os.environ['SECRET_KEY_THAT_IS_MISSING']\n",
    )
    .unwrap();
    let out = corral(&["reload", "--wait", "--socket", &socket]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("reload FAILED"), "{t}");
    assert!(
        t.contains("generation 2 keeps serving") || t.contains("KeyError"),
        "{t}"
    );
    assert!(
        t.contains("Traceback") && t.contains("app.py\", line 2"),
        "the traceback: {t}"
    );
    assert!(t.contains("KeyError: 'SECRET_KEY_THAT_IS_MISSING'"), "{t}");
    assert_eq!(c.get("/").text(), "v2", "the good generation still serves");
}

#[test]
fn the_control_socket_is_0600_scale_adds_and_removes_workers_and_stop_exits_cleanly() {
    let app = AppDir::new(&[("app.py", &app_version("v1", 1))]);
    let mut c = Corral::start(app.path(), &["app:app", "-w", "1"], 1);
    let socket = c.socket.to_str().unwrap().to_string();
    // The control socket is the operator's alone.
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let meta = std::fs::metadata(&c.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "control socket mode"
    );
    let out = corral(&["scale", "3", "--socket", &socket]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    c.wait_in_service(3);
    assert_eq!(children_of(c.pid()).len(), 3);

    c.signal(libc::SIGTTOU);
    let deadline = Instant::now() + Duration::from_secs(15);
    while children_of(c.pid()).len() != 2 {
        assert!(Instant::now() < deadline, "TTOU did not remove a worker");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = corral(&["status", "--json", "--socket", &socket]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["workers"]["configured"], 2, "{v}");

    let workers = children_of(c.pid());
    let out = corral(&["stop", "--socket", &socket]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let st = c.wait_exit(Duration::from_secs(15)).expect("corral stops");
    assert_eq!(st.code(), Some(0));
    assert!(wait_gone(&workers, Duration::from_secs(5)));
    assert!(!c.socket.exists(), "the control socket is removed");
}

/// A control socket removed from under a running corral (by hand, or by
/// a clean-up of old files in /tmp) is made again within 10 s, so that
/// `corral reload` and `corral stop` reach it again without a restart;
/// at exit, the new one is removed as the first would have been.
#[test]
fn a_control_socket_removed_from_under_corral_is_made_again() {
    let app = AppDir::new(&[("app.py", &app_version("v1", 1))]);
    let mut c = Corral::start(app.path(), &["app:app", "-w", "1"], 1);
    let socket = c.socket.to_str().unwrap().to_string();
    std::fs::remove_file(&c.socket).unwrap();
    let out = corral(&["status", "--socket", &socket]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        c.log
            .wait_for("made it again", Duration::from_secs(15))
            .is_some(),
        "{}",
        c.log.text()
    );
    let out = corral(&["status", "--json", "--socket", &socket]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = corral(&["stop", "--socket", &socket]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let st = c.wait_exit(Duration::from_secs(15)).expect("corral stops");
    assert_eq!(st.code(), Some(0));
    assert!(!c.socket.exists(), "the control socket is removed at exit");
}

#[test]
fn commands_without_a_running_corral_say_so_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nothing.sock");
    for args in [
        vec!["reload", "--wait"],
        vec!["scale", "2"],
        vec!["stop"],
        vec!["status"],
    ] {
        let mut all = args.clone();
        all.extend(["--socket", socket.to_str().unwrap()]);
        let out = corral(&all);
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        let t = text(&out);
        assert!(
            t.contains("cannot reach corral's control socket"),
            "{args:?}: {t}"
        );
        assert!(t.contains("is corral running?"), "{args:?}: {t}");
        assert!(!t.contains("panicked"), "{t}");
    }
    // Given the config file only: its socket is not there. It said the
    // file "has no [health] status_bind", or, as another user than
    // `[workers] user` allows, that this user cannot run the workers.
    std::fs::write(
        dir.path().join("shop.toml"),
        "[app]\nmodule = \"app:app\"\n[workers]\nuser = \"root\"\n",
    )
    .unwrap();
    let out = client_in(
        dir.path(),
        &[("XDG_RUNTIME_DIR", dir.path().to_str().unwrap())],
        &["status", "-c", "shop.toml"],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("no corral answers at "), "{t}");
    assert!(t.contains("(is it running with this config?)"), "{t}");
}

#[test]
fn a_second_corral_on_the_same_control_socket_is_refused() {
    let app = AppDir::new(&[("app.py", &app_version("v1", 1))]);
    let c = Corral::start(app.path(), &["app:app", "-w", "1"], 1);
    let socket = c.socket.to_str().unwrap().to_string();
    let mut second = Corral::spawn(
        app.path(),
        &["app:app", "-w", "1", "--socket", &socket],
        &[],
    );
    let st = second
        .wait_exit(Duration::from_secs(10))
        .expect("refused at once");
    assert_eq!(st.code(), Some(2));
    assert!(
        second
            .log
            .text()
            .contains("another corral is running with the control socket")
    );
    assert_eq!(c.get("/").status, 200, "the first one is untouched");
}

/// Two corrals started with no config and no `--socket`, the same app on
/// two ports, as two gunicorn services would be: both start, each gets
/// its own control socket, and the client commands reach the right one
/// from any folder by the app and bind address given to `run`.
#[test]
fn two_instances_side_by_side_are_told_apart_by_app_and_bind() {
    let runtime = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let rt = runtime.path().to_str().unwrap().to_string();
    let (p1, p2) = (compare::free_port(), compare::free_port());
    let (b1, b2) = (format!("127.0.0.1:{p1}"), format!("127.0.0.1:{p2}"));
    let one = AppDir::new(&[("app.py", &app_version("one", 1))]);
    let two = AppDir::new(&[("app.py", &app_version("two", 1))]);
    let mut a = Corral::spawn_default_socket(
        one.path(),
        &["app:app", "-w", "1", "-b", &b1],
        &[("XDG_RUNTIME_DIR", &rt)],
    );
    let mut b = Corral::spawn_default_socket(
        two.path(),
        &["app:app", "-w", "1", "-b", &b2],
        &[("XDG_RUNTIME_DIR", &rt)],
    );
    a.wait_listening();
    b.wait_listening();
    a.wait_in_service(1);
    b.wait_in_service(1);
    let client = |args: &[&str]| client_in(elsewhere.path(), &[("XDG_RUNTIME_DIR", &rt)], args);

    // Listed, not guessed.
    let out = client(&["status"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("2 corral instances"), "{t}");
    for (c, bind) in [(&a, &b1), (&b, &b2)] {
        let line = t
            .lines()
            .find(|l| l.contains(bind))
            .unwrap_or_else(|| panic!("{bind} listed: {t}"));
        assert!(
            line.contains(&c.pid().to_string()) && line.contains("app:app"),
            "{line}"
        );
        assert!(line.contains("yes"), "ready: {line}");
    }

    // --json lists them as JSON too: each instance's /status.
    let out = client(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let all: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: not JSON:\n{}", text(&out)));
    let all = all.as_array().expect("an array");
    assert_eq!(all.len(), 2, "{all:?}");
    for c in [&a, &b] {
        let one = all
            .iter()
            .find(|i| i["status"]["supervisor"]["pid"] == c.pid())
            .unwrap_or_else(|| panic!("{} listed: {all:?}", c.pid()));
        assert!(
            one["instance"].is_string() && one["socket"].is_string(),
            "{one}"
        );
        assert_eq!(one["status"]["ready"], true, "{one}");
    }

    // The app alone is ambiguous here, and says so.
    let out = client(&["status", "app:app"]);
    assert_ne!(out.status.code(), Some(0));
    // Each with what it serves and where, to pick by.
    assert!(
        text(&out).contains("2 running corrals serve app:app")
            && text(&out).contains(&format!(": app:app on {b2}")),
        "{}",
        text(&out)
    );

    // The bind address picks one.
    let out = client(&["status", "--json", "-b", &b2]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["supervisor"]["pid"], b.pid(), "{v}");

    let out = client(&["scale", "2", "app:app", "-b", &b1]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    a.wait_in_service(2);
    let out = client(&["reload", "--wait", "--bind", &b2]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let gens = |bind: &str| {
        let out = client(&["status", "--json", "-b", bind]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (v["generation"].clone(), v["workers"]["configured"].clone())
    };
    assert_eq!(gens(&b1), (1.into(), 2.into()), "A scaled, not reloaded");
    assert_eq!(gens(&b2), (2.into(), 1.into()), "B reloaded, not scaled");

    let out = client(&["stop", "app:app", "-b", &b1]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        a.wait_exit(Duration::from_secs(15)).and_then(|s| s.code()),
        Some(0)
    );
    assert_eq!(b.get("/").text(), "two", "B serves on");

    // One left: `status` shows it without being told which.
    let out = client(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("(pid {})", b.pid())),
        "{}",
        text(&out)
    );
    let out = client(&["stop", "-b", &b1]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out).contains(&format!("no running corral serves {b1}")),
        "{}",
        text(&out)
    );
}

/// One config file shared by two services that differ in their flags
/// (gunicorn's `-c /etc/gunicorn/common.conf.py --chdir /srv/a -b ...`):
/// both start, as two gunicorns would, with their own socket and state;
/// `-c FILE` alone is ambiguous and says so, `-c FILE -b ADDR` picks one.
#[test]
fn two_services_sharing_one_config_file_are_two_instances() {
    let runtime = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let rt = runtime.path().to_str().unwrap().to_string();
    let st = state.path().to_str().unwrap().to_string();
    let shared = AppDir::new(&[("common.toml", "[workers]\ncount = 1\n")]);
    let common = shared.path().join("common.toml");
    let common = common.to_str().unwrap();
    let (p1, p2) = (compare::free_port(), compare::free_port());
    let (b1, b2) = (format!("127.0.0.1:{p1}"), format!("127.0.0.1:{p2}"));
    let one = AppDir::new(&[("app.py", &app_version("one", 1))]);
    let two = AppDir::new(&[("app.py", &app_version("two", 1))]);
    let env = [
        ("XDG_RUNTIME_DIR", rt.as_str()),
        ("XDG_STATE_HOME", st.as_str()),
    ];
    let start = |dir: &AppDir, bind: &str| {
        let folder = dir.path().to_str().unwrap().to_string();
        let mut c = Corral::spawn_default_socket(
            elsewhere.path(),
            &["-c", common, "--chdir", &folder, "app:app", "-b", bind],
            &env,
        );
        c.wait_listening();
        c.wait_in_service(1);
        c
    };
    let a = start(&one, &b1);
    let b = start(&two, &b2);
    assert_eq!(a.get("/").text(), "one");
    assert_eq!(b.get("/").text(), "two");
    let sockets: Vec<_> = std::fs::read_dir(runtime.path().join("corral"))
        .unwrap()
        .collect();
    assert_eq!(sockets.len(), 2, "{sockets:?}");
    let client = |args: &[&str]| client_in(elsewhere.path(), &env, args);
    let out = client(&["status", "--json", "-c", common]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out).contains(&format!("2 running corrals were started with {common}")),
        "{}",
        text(&out)
    );
    let out = client(&["status", "--json", "-c", common, "-b", &b2]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["supervisor"]["pid"], b.pid(), "{v}");
    // With one of them gone, the file alone finds the other.
    let out = client(&["stop", "-c", common, "-b", &b1]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut a = a;
    assert!(a.wait_exit(Duration::from_secs(15)).is_some());
    let out = client(&["status", "--json", "-c", common]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["supervisor"]["pid"], b.pid(), "{v}");
}

/// A corral killed with SIGKILL (the OOM killer) leaves its control socket
/// and its worker folder: the client commands pass over the socket, and the
/// next corral to start removes the folder.
#[test]
fn what_a_killed_corral_leaves_is_passed_over_and_cleared() {
    let runtime = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let rt = runtime.path().to_str().unwrap().to_string();
    let td = tmp.path().to_str().unwrap().to_string();
    let env = [("XDG_RUNTIME_DIR", rt.as_str()), ("TMPDIR", td.as_str())];
    let app = AppDir::new(&[("app.py", &app_version("one", 1))]);
    let folders = || {
        std::fs::read_dir(tmp.path())
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().into_string().ok())
            .filter(|n| n.starts_with("corral-"))
            .collect::<Vec<_>>()
    };
    let b1 = format!("127.0.0.1:{}", compare::free_port());
    let mut killed =
        Corral::spawn_default_socket(app.path(), &["app:app", "-w", "1", "-b", &b1], &env);
    killed.wait_listening();
    killed.wait_in_service(1);
    assert_eq!(folders().len(), 1, "{:?}", folders());
    killed.signal(libc::SIGKILL);
    assert!(killed.wait_exit(Duration::from_secs(10)).is_some());
    assert_eq!(folders().len(), 1, "left behind: {:?}", folders());
    let client = |args: &[&str]| client_in(elsewhere.path(), &[("XDG_RUNTIME_DIR", &rt)], args);
    let out = client(&["status"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out).contains("no running corral found"),
        "{}",
        text(&out)
    );
    let b2 = format!("127.0.0.1:{}", compare::free_port());
    let mut next =
        Corral::spawn_default_socket(app.path(), &["app:app", "-w", "1", "-b", &b2], &env);
    next.wait_listening();
    next.wait_in_service(1);
    assert!(
        next.log
            .has("removed 1 worker folder(s) that killed corrals left"),
        "{}",
        next.log.text()
    );
    let now = folders();
    assert_eq!(now.len(), 1, "{now:?}");
    assert!(
        now[0].starts_with(&format!("corral-{}-", next.pid())),
        "{now:?}"
    );
    let out = client(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// A corral a systemd unit runs puts its socket in the unit's own
/// runtime folder (`RuntimeDirectory=shop`: `$RUNTIME_DIRECTORY/corral.sock`,
/// `/run/shop/corral.sock` for a system unit). A client in a shell, which
/// has no `RUNTIME_DIRECTORY`, finds it beside the shared root all the
/// same: by its app and bind, by its config file, and in the list.
#[test]
fn a_client_outside_the_unit_finds_the_corral_in_a_units_runtime_folder() {
    use std::os::unix::fs::DirBuilderExt;
    let runtime = tempfile::tempdir().unwrap();
    let rt = runtime.path().to_str().unwrap().to_string();
    let unit = runtime.path().join("shop");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&unit)
        .unwrap();
    let port = compare::free_port();
    let bind = format!("127.0.0.1:{port}");
    let app = AppDir::new(&[("app.py", &app_version("shop", 1))]);
    std::fs::write(
        app.path().join("corral.toml"),
        format!(
            "[app]\nmodule = \"app:app\"\n[server]\nbind = [\"{bind}\"]\n[workers]\ncount = 1\n"
        ),
    )
    .unwrap();
    let mut c = Corral::spawn_default_socket(
        app.path(),
        &["-c", "corral.toml"],
        &[
            ("XDG_RUNTIME_DIR", &rt),
            ("RUNTIME_DIRECTORY", unit.to_str().unwrap()),
        ],
    );
    c.wait_listening();
    c.wait_in_service(1);
    assert!(unit.join("corral.sock").exists());
    let elsewhere = tempfile::tempdir().unwrap();
    let client = |args: &[&str]| {
        let out = Command::new(corral_bin())
            .args(args)
            .current_dir(elsewhere.path())
            .env("XDG_RUNTIME_DIR", &rt)
            .env_remove("RUNTIME_DIRECTORY")
            .output()
            .expect("run corral");
        (out.status.code(), text(&out), out.stdout)
    };
    let (code, t, _) = client(&["status"]);
    assert_eq!(code, Some(0), "{t}");
    assert!(t.contains(&format!("(pid {})", c.pid())), "{t}");
    let (code, t, stdout) = client(&["status", "--json", "-b", &bind]);
    assert_eq!(code, Some(0), "{t}");
    let v: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(v["supervisor"]["pid"], c.pid(), "{v}");
    let file = app.path().join("corral.toml");
    let (code, t, _) = client(&["reload", "--wait", "-c", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{t}");
    assert!(t.contains("generation 2"), "{t}");
}

/// Two apps' units made from one unit file copied, each still with
/// `RuntimeDirectory=corral` and `StateDirectory=corral`: the second
/// corral finds the first's control socket in what systemd calls its own
/// runtime folder. It refuses to start and says that the units share the
/// folder and how to give each its own, not to set a `[control] socket`,
/// which would leave their last known good releases shared (and the
/// folder removed under one when the other stops).
#[test]
fn a_second_unit_with_the_same_runtime_directory_is_told_to_give_each_its_own() {
    use std::os::unix::fs::DirBuilderExt;
    let run = tempfile::tempdir().unwrap();
    let shared = run.path().join("corral");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&shared)
        .unwrap();
    let state = run.path().join("state");
    let unit_env = [
        ("RUNTIME_DIRECTORY", shared.to_str().unwrap()),
        ("STATE_DIRECTORY", state.to_str().unwrap()),
    ];
    let shop = AppDir::new(&[("app.py", &app_version("shop", 1))]);
    let blog = AppDir::new(&[("app.py", &app_version("blog", 1))]);
    let mut a = Corral::spawn_default_socket(shop.path(), &["app:app", "-w", "1"], &unit_env);
    a.wait_listening();
    a.wait_in_service(1);
    assert!(shared.join("corral.sock").exists());
    let mut b = Corral::spawn_default_socket(blog.path(), &["app:app", "-w", "1"], &unit_env);
    let code = b.wait_exit(Duration::from_secs(20)).map(|s| s.code());
    let log = b.log.text();
    assert_eq!(code, Some(Some(2)), "{log}");
    assert!(
        log.contains(&format!(
            "another corral already serves the control socket {}",
            shared.join("corral.sock").display()
        )) && log.contains("RuntimeDirectory=")
            && log.contains("StateDirectory=")
            && log.contains("RuntimeDirectory=corral/NAME"),
        "{log}"
    );
    // The first serves on, reachable as before.
    assert_eq!(a.get("/").status, 200);
    let out = Command::new(corral_bin())
        .args(["status", "--json"])
        .envs(unit_env)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["supervisor"]["pid"], a.pid(), "{v}");
}

/// Two apps' units with runtime folders of their own but one
/// `StateDirectory=` (the unit file copied, only `RuntimeDirectory=`
/// changed): the second corral would share the first's last known good
/// release, which a rollback goes back to. It refuses to start, naming the
/// folder and the other corral's socket; once the first is gone, the
/// folder is the second's.
#[test]
fn a_second_unit_with_the_same_state_directory_is_refused() {
    use std::os::unix::fs::DirBuilderExt;
    let run = tempfile::tempdir().unwrap();
    let state = run.path().join("state");
    let mut made = std::fs::DirBuilder::new();
    made.mode(0o700);
    made.create(&state).unwrap();
    let unit = |name: &str| {
        let dir = run.path().join(name);
        made.create(&dir).unwrap();
        dir.to_str().unwrap().to_string()
    };
    let (shop_run, blog_run) = (unit("shop"), unit("blog"));
    let st = state.to_str().unwrap();
    let shop = AppDir::new(&[("app.py", &app_version("shop", 1))]);
    let blog = AppDir::new(&[("app.py", &app_version("blog", 1))]);
    let mut a = Corral::spawn_default_socket(
        shop.path(),
        &["app:app", "-w", "1"],
        &[("RUNTIME_DIRECTORY", &shop_run), ("STATE_DIRECTORY", st)],
    );
    a.wait_listening();
    a.wait_in_service(1);
    let blog_env = [
        ("RUNTIME_DIRECTORY", blog_run.as_str()),
        ("STATE_DIRECTORY", st),
    ];
    let mut b = Corral::spawn_default_socket(blog.path(), &["app:app", "-w", "1"], &blog_env);
    let code = b.wait_exit(Duration::from_secs(20)).map(|s| s.code());
    let log = b.log.text();
    assert_eq!(code, Some(Some(2)), "{log}");
    assert!(
        log.contains(&format!(
            "the state folder {} is another running corral's (control socket {}/corral.sock)",
            state.display(),
            shop_run
        )) && log.contains("StateDirectory=corral/NAME"),
        "{log}"
    );
    assert_eq!(a.get("/").status, 200);
    // The first stopped (or killed): the folder is the second's.
    a.signal(libc::SIGKILL);
    assert!(a.wait_exit(Duration::from_secs(10)).is_some());
    let mut b = Corral::spawn_default_socket(blog.path(), &["app:app", "-w", "1"], &blog_env);
    b.wait_listening();
    b.wait_in_service(1);
}

/// A control socket another user put in a folder anyone may write to
/// (sticky, as `/run/lock`): root's client commands neither find it
/// among the running corrals nor talk to it when named, so a local user
/// cannot answer root's `corral reload --wait` with "reloaded" or take its
/// `stop`.
#[test]
fn root_does_not_trust_a_socket_in_a_folder_anyone_may_write_to() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if !require_root("to run a socket as another user") {
        return;
    }
    // In /run, as a unit's runtime folder is: every folder above is
    // root's and private (one under /tmp would be refused for /tmp's sake).
    let runtime = tempfile::Builder::new()
        .prefix("corral-test-")
        .tempdir_in("/run")
        .unwrap();
    std::fs::set_permissions(runtime.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let lock = runtime.path().join("lock");
    std::fs::create_dir(&lock).unwrap();
    std::fs::set_permissions(&lock, PermissionsExt::from_mode(0o1777)).unwrap();
    let socket = lock.join("corral.sock");
    // Answers every request as a corral would: "reloaded", "stopping".
    let fake = "import json, os, socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.bind(sys.argv[1])\nos.chmod(sys.argv[1], 0o777)\ns.listen(8)\nwhile True:\n    c, _ = s.accept()\n    try:\n        if c.makefile().readline():\n            c.sendall(json.dumps({'ok': True, 'generation': 99, 'revision': 'attacker', 'status': {'supervisor': {'pid': 1, 'app': 'app:app', 'binds': [], 'config': None}}}).encode() + b'\\n')\n    except OSError:\n        pass\n    c.close()\n";
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _fake = Kill(
        Command::new("/usr/bin/python3")
            .args(["-c", fake, socket.to_str().unwrap()])
            .uid(65534)
            .gid(65534)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let rt = runtime.path().to_str().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let out = client_in(
        elsewhere.path(),
        &[("XDG_RUNTIME_DIR", rt)],
        &["reload", "--wait"],
    );
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!text(&out).contains("generation 99"), "{}", text(&out));
    let out = client_in(
        elsewhere.path(),
        &[("XDG_RUNTIME_DIR", rt)],
        &["reload", "--wait", "--socket", socket.to_str().unwrap()],
    );
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("refusing to talk to"), "{}", text(&out));
}

/// `HEALTHCHECK CMD corral status` in a Dockerfile: the exit code says
/// whether the app serves, as `systemctl status` says whether a unit is
/// active. An app that cannot import is unhealthy (3, with the table
/// that says why), the same app once it imports is healthy (0), and a
/// corral that is not there is 1.
#[test]
fn status_exits_non_zero_while_the_app_is_not_ready_for_a_health_check() {
    let app = AppDir::new(&[(
        "app.py",
        "import os\nif not os.path.exists('fixed'):\n    raise RuntimeError('the database is not there yet')\n\
         def app(environ, start_response):\n    start_response('200 OK', [('Content-Length', '2')])\n    return [b'ok']\n",
    )]);
    let mut c = Corral::spawn(app.path(), &["app:app", "-w", "1"], &[]);
    c.wait_listening();
    assert!(
        c.log
            .wait_for("failed to boot", Duration::from_secs(20))
            .is_some(),
        "{}",
        c.log.text()
    );
    let socket = c.socket.to_str().unwrap().to_string();
    let out = corral(&["status", "--socket", &socket]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(3), "{t}");
    assert!(t.contains("ready: NO"), "{t}");
    assert!(t.contains("the database is not there yet"), "{t}");
    let out = corral(&["status", "--json", "--socket", &socket]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));

    std::fs::write(app.path().join("fixed"), "").unwrap();
    c.wait_in_service(1);
    let out = corral(&["status", "--socket", &socket]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("ready: yes"), "{}", text(&out));

    c.signal(libc::SIGTERM);
    c.wait_exit(Duration::from_secs(15)).expect("corral stops");
    let out = corral(&["status", "--socket", &socket]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}
