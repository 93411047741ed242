//! Deploys as a pipeline runs them: a real git repository, the
//! `integration/deploy.sh` script (`git pull`, `corral check`, `corral
//! reload --wait`), revisions, the last known good one, the rollback hook,
//! and release symlinks.

use crate::common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn app_source(tag: &str, extra: &str) -> String {
    format!(
        "import os\n{extra}\n\ndef app(environ, start_response):\n    body = b\"{tag}\"\n    start_response(\"200 OK\", [(\"Content-Length\", str(len(body)))])\n    return [body]\n"
    )
}

/// Commits `source` as app.py in the developer's clone and pushes it.
fn push(dev: &Path, source: &str, msg: &str) -> String {
    std::fs::write(dev.join("app.py"), source).unwrap();
    git(dev, &["commit", "-qam", msg]);
    git(dev, &["push", "-q", "origin", "main"]);
    git(dev, &["rev-parse", "--short=12", "HEAD"])
}

/// Writes the shell script `body` to `dir/hook.sh`, executable.
fn write_hook(dir: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("hook.sh");
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_pipeline_deploys_good_commits_and_a_broken_one_fails_with_its_traceback_and_the_hook() {
    let root = AppDir::new(&[]);
    let r = root.path();
    git(r, &["init", "-q", "--bare", "origin.git"]);
    git(r, &["clone", "-q", "origin.git", "dev"]);
    let dev = r.join("dev");
    std::fs::write(dev.join("app.py"), app_source("v1", "")).unwrap();
    git(&dev, &["add", "app.py"]);
    git(&dev, &["commit", "-qm", "v1"]);
    git(&dev, &["push", "-q", "origin", "HEAD:main"]);
    let v1 = git(&dev, &["rev-parse", "--short=12", "HEAD"]);
    git(r, &["clone", "-q", "origin.git", "app"]);
    write_hook(
        r,
        "#!/bin/sh\nenv | grep ^CORRAL_ | sort > \"$(dirname \"$0\")/hook-env.txt\"\necho rolled back from $CORRAL_FAILED_REVISION\n",
    );
    let socket = r.join("ctl.sock");
    std::fs::write(
        r.join("corral.toml"),
        format!(
            "[app]\nmodule = \"app:app\"\nchdir = \"app\"\npython = \"{}\"\n[server]\nbind = [\"127.0.0.1:0\"]\n[workers]\ncount = 2\n[health]\nstatus_bind = \"127.0.0.1:0\"\n[control]\nsocket = \"ctl.sock\"\n[deploy]\nstate_dir = \"state\"\nrollback_hook = [\"./hook.sh\"]\n",
            python()
        ),
    )
    .unwrap();
    let c = Corral::start(
        r,
        &["-c", "corral.toml", "--socket", socket.to_str().unwrap()],
        2,
    );
    assert_eq!(c.get("/").text(), "v1");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(r.join("state/last-good-revision"))
        .unwrap_or_default()
        .trim()
        != v1
    {
        assert!(Instant::now() < deadline, "v1 never recorded as good");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(c.status_json()["revision"], v1.as_str());

    let deploy = |expect_ok: bool| {
        let out = Command::new(repo("integration/deploy.sh"))
            .args([
                r.join("app").to_str().unwrap(),
                r.join("corral.toml").to_str().unwrap(),
            ])
            .env("CORRAL", corral_bin())
            .env("GIT_REF", "origin/main")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.success(), expect_ok, "deploy.sh:\n{text}");
        text
    };

    // A good commit goes live.
    let v2 = push(&dev, &app_source("v2", "# second"), "v2");
    let text = deploy(true);
    assert!(text.contains(&format!("{v2} is in service")), "{text}");
    assert_eq!(c.get("/").text(), "v2");
    assert_eq!(c.status_json()["revision"], v2.as_str());
    assert_eq!(c.status_json()["last_good_revision"], v2.as_str());

    // A commit that does not even import: `corral check` stops the deploy.
    push(&dev, "import no_such_dependency\n", "v3 broken import");
    let text = deploy(false);
    assert!(
        text.contains("ModuleNotFoundError: No module named 'no_such_dependency'"),
        "{text}"
    );
    assert!(
        text.contains("does not boot; nothing was reloaded"),
        "{text}"
    );
    assert_eq!(c.get("/").text(), "v2");

    // A commit that passes the check but fails to start in the real workers
    // (here: slot 1 only; `check` boots slot 0): the reload fails, v2 keeps
    // serving, and the rollback hook runs with the facts.
    let v4 = push(
        &dev,
        &app_source(
            "v4",
            "if os.environ.get('CORRAL_SLOT') == '1':\n    raise RuntimeError('cache warm-up failed')",
        ),
        "v4 fails at start-up",
    );
    let text = deploy(false);
    assert!(text.contains("reload FAILED"), "{text}");
    assert!(
        text.contains("RuntimeError: cache warm-up failed"),
        "{text}"
    );
    assert!(text.contains("Traceback"), "{text}");
    assert_eq!(c.get("/").text(), "v2");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !r.join("hook-env.txt").exists() {
        assert!(
            Instant::now() < deadline,
            "the hook did not run; log:\n{}",
            c.log.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The hook's shell creates the file before `sort` writes it.
    c.wait_until("the hook to write its environment", || {
        std::fs::read_to_string(r.join("hook-env.txt")).is_ok_and(|t| t.contains("CORRAL_REASON="))
    });
    let env = std::fs::read_to_string(r.join("hook-env.txt")).unwrap();
    assert!(
        env.contains(&format!("CORRAL_FAILED_REVISION={v4}")),
        "{env}"
    );
    assert!(env.contains(&format!("CORRAL_GOOD_REVISION={v2}")), "{env}");
    assert!(
        env.contains("CORRAL_REASON=slot 1 did not boot: RuntimeError: cache warm-up failed"),
        "{env}"
    );
    let error_file = env
        .lines()
        .find_map(|l| l.strip_prefix("CORRAL_ERROR_FILE="))
        .unwrap();
    assert!(
        std::fs::read_to_string(error_file)
            .unwrap()
            .contains("Traceback")
    );
    assert!(env.contains("CORRAL_APP_DIR="), "{env}");
    assert!(
        c.log
            .wait_for(
                &format!("rollback hook: rolled back from {v4}"),
                Duration::from_secs(5)
            )
            .is_some()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.status_json()["rollback_hook"]["exit_code"] != 0 {
        assert!(Instant::now() < deadline, "hook result not in /status");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(c.status_json()["last_good_revision"], v2.as_str());
}

#[test]
fn a_generation_keeps_its_release_after_the_current_symlink_moves() {
    let root = AppDir::new(&[
        ("releases/r1/app.py", &app_source("r1", "")),
        ("releases/r2/app.py", &app_source("r2", "# two")),
    ]);
    let r = root.path();
    std::os::unix::fs::symlink(r.join("releases/r1"), r.join("current")).unwrap();
    let c = Corral::start(
        r,
        &[
            "app:app",
            "-w",
            "1",
            "--chdir",
            "current",
            "--status-bind",
            "127.0.0.1:0",
        ],
        1,
    );
    assert_eq!(c.get("/").text(), "r1");
    assert_eq!(c.status_json()["revision"], "r1");
    // The symlink moves, and the worker dies: its replacement belongs to the
    // same generation, so it runs r1, not what `current` points at now.
    std::fs::remove_file(r.join("current")).unwrap();
    std::os::unix::fs::symlink(r.join("releases/r2"), r.join("current")).unwrap();
    let pid = children_of(c.pid())[0];
    // SAFETY: killing a worker of the corral this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = children_of(c.pid());
        if now.len() == 1 && now[0] != pid && c.get("/").status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no replacement");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(c.get("/").text(), "r1");
    // A reload moves to the new release.
    c.signal(libc::SIGHUP);
    assert!(
        c.log
            .wait_for("reload done", Duration::from_secs(20))
            .is_some()
    );
    // The old generation drains; then only r2 answers.
    c.wait_until("r2 to answer", || c.get("/").text() == "r2");
    assert_eq!(c.status_json()["revision"], "r2");
}

/// `current/`, a git checkout whose one commit is a good app; its revision.
fn git_app(root: &Path) -> (std::path::PathBuf, String) {
    let app = root.join("current");
    std::fs::create_dir(&app).unwrap();
    git(&app, &["init", "-q"]);
    std::fs::write(app.join("app.py"), app_source("good", "")).unwrap();
    git(&app, &["add", "app.py"]);
    git(&app, &["commit", "-qm", "good"]);
    let good = git(&app, &["rev-parse", "--short=12", "HEAD"]);
    (app, good)
}

fn config(extra: &str) -> String {
    format!(
        "[app]\nmodule = \"app:app\"\nchdir = \"current\"\npython = \"{}\"\n[server]\nbind = [\"127.0.0.1:0\"]\n[workers]\ncount = 1\n[health]\nstatus_bind = \"127.0.0.1:0\"\n[deploy]\nstate_dir = \"state\"\n{extra}\n",
        python()
    )
}

#[test]
fn the_built_in_git_reset_rollback_restores_the_last_good_commit_and_reloads_it() {
    let root = AppDir::new(&[]);
    let r = root.path();
    let (app, good) = git_app(r);
    std::fs::write(
        r.join("corral.toml"),
        config("revision = \"git\"\nrollback = \"git-reset\""),
    )
    .unwrap();
    let c = Corral::start(r, &["-c", "corral.toml"], 1);
    c.wait_until("good recorded", || {
        c.status_json()["last_good_revision"] == good.as_str()
    });
    // A broken commit lands on disk (a `git pull`), then a reload.
    std::fs::write(app.join("app.py"), "raise ImportError('broken release')\n").unwrap();
    git(&app, &["commit", "-qam", "broken"]);
    c.signal(libc::SIGHUP);
    assert!(
        c.log
            .wait_for("reload failed", Duration::from_secs(20))
            .is_some()
    );
    assert!(
        c.log
            .wait_for(
                &format!("to the last good commit {good}"),
                Duration::from_secs(20)
            )
            .is_some(),
        "{}",
        c.log.text()
    );
    assert!(
        c.log
            .wait_for("reload done: generation 3", Duration::from_secs(20))
            .is_some(),
        "{}",
        c.log.text()
    );
    assert_eq!(
        git(&app, &["rev-parse", "--short=12", "HEAD"]),
        good,
        "the checkout is back on the good commit"
    );
    assert_eq!(c.get("/").text(), "good");
    assert_eq!(c.status_json()["revision"], good.as_str());
}

/// A reload asked for while a failed reload's rollback still runs does
/// not start (`reload --wait` exits 4): the rollback would reset the
/// checkout over the newer code and reload the old one once it ended,
/// throwing the newer deploy away. Once the rollback has ended, the same
/// reload deploys the new code.
#[test]
fn a_reload_during_a_slow_rollback_does_not_start_and_nothing_is_thrown_away() {
    let root = AppDir::new(&[]);
    let r = root.path();
    let (app, good) = git_app(r);
    write_hook(
        r,
        "#!/bin/sh\nsleep 3\necho done > \"$(dirname \"$0\")/hook-done\"\n",
    );
    std::fs::write(
        r.join("corral.toml"),
        config("revision = \"git\"\nrollback = \"git-reset\"\nrollback_hook = [\"./hook.sh\"]"),
    )
    .unwrap();
    let c = Corral::start(r, &["-c", "corral.toml"], 1);
    c.wait_until("good recorded", || {
        c.status_json()["last_good_revision"] == good.as_str()
    });
    let reload = || reload_wait(&c);
    std::fs::write(app.join("app.py"), "raise ImportError('broken release')\n").unwrap();
    git(&app, &["commit", "-qam", "broken"]);
    let (code, out) = reload();
    assert_eq!(code, Some(1), "{out}");
    // The fix lands while the hook still runs, and is reloaded at once.
    std::fs::write(app.join("app.py"), app_source("fixed", "")).unwrap();
    git(&app, &["commit", "-qam", "fixed"]);
    let (code, out) = reload();
    assert!(!r.join("hook-done").exists(), "the hook took under 3 s");
    assert_eq!(code, Some(4), "{out}\n{}", c.log.text());
    assert!(
        out.contains("reload not started: generation 2 failed and the rollback hook, then the built-in rollback, still runs"),
        "{out}"
    );
    // The rollback ends: the checkout is back on the good commit, served.
    assert!(
        c.log
            .wait_for("reload done: generation 3", Duration::from_secs(20))
            .is_some(),
        "{}",
        c.log.text()
    );
    assert_eq!(c.get("/").text(), "good");
    // The fix again (the reset took its commit away), now deployed, and
    // nothing puts the old code back over it.
    std::fs::write(app.join("app.py"), app_source("fixed", "")).unwrap();
    git(&app, &["commit", "-qam", "fixed again"]);
    let fixed = git(&app, &["rev-parse", "--short=12", "HEAD"]);
    let (code, out) = reload();
    assert_eq!(code, Some(0), "{out}\n{}", c.log.text());
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(c.get("/").text(), "fixed");
    assert_eq!(git(&app, &["rev-parse", "--short=12", "HEAD"]), fixed);
    assert_eq!(c.status_json()["revision"], fixed.as_str());
}

/// Each generation's folder and revision are kept while they are used,
/// not for the life of the process: with a revision of 60,000 bytes, 40
/// more reloads grow corral by less than half of what keeping them all
/// would (2.4 MB).
#[test]
fn what_corral_keeps_per_generation_does_not_grow_with_every_reload() {
    let rev = "r".repeat(60_000);
    let root = AppDir::new(&[("current/app.py", &app_source("v", "")), ("REV", &rev)]);
    let r = root.path();
    std::fs::write(
        r.join("corral.toml"),
        config(&format!(
            "revision = [\"cat\", \"{}\"]",
            r.join("REV").display()
        )),
    )
    .unwrap();
    let c = Corral::start(r, &["-c", "corral.toml"], 1);
    let reload = || {
        let (code, out) = reload_wait(&c);
        assert_eq!(code, Some(0), "{out}");
    };
    for _ in 0..10 {
        reload();
    }
    let before = rss_kib(c.pid());
    for _ in 0..40 {
        reload();
    }
    let grew = rss_kib(c.pid()).saturating_sub(before);
    assert!(grew < 1200, "corral grew by {grew} KiB over 40 reloads");
    assert_eq!(c.status_json()["revision"], rev.as_str());
}

/// A revision command that prints more than a pipe holds after its
/// first line: read while it runs, so it ends at once and its first line
/// is the revision (it waited for a reader until the 5 s deadline, was
/// killed, and the revision was unknown).
#[test]
fn a_revision_command_with_much_output_gives_its_first_line_at_once() {
    let root = AppDir::new(&[("current/app.py", &app_source("v", ""))]);
    let r = root.path();
    std::fs::write(
        r.join("corral.toml"),
        config("revision = [\"sh\", \"-c\", \"echo abc123; seq 1 200000\"]"),
    )
    .unwrap();
    let t = Instant::now();
    let c = Corral::start(r, &["-c", "corral.toml"], 1);
    assert_eq!(c.status_json()["revision"], "abc123", "{}", c.log.text());
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "took {:?}",
        t.elapsed()
    );
}

/// A revision command whose first line holds a NUL or another control
/// byte gives no revision (it would go into every worker's environment,
/// where a NUL cannot go): the generation's workers start, and a reload
/// works, where each worker failed to start and the reload failed.
#[test]
fn a_revision_with_a_control_byte_is_unknown_and_the_workers_start() {
    let root = AppDir::new(&[("current/app.py", &app_source("v", ""))]);
    let r = root.path();
    std::fs::write(
        r.join("corral.toml"),
        config("revision = [\"printf\", \"abc\\\\000\\\\033[31mdef\\\\n\"]"),
    )
    .unwrap();
    let c = Corral::start(r, &["-c", "corral.toml"], 1);
    assert_eq!(c.status_json()["revision"], serde_json::Value::Null);
    let (code, out) = reload_wait(&c);
    assert_eq!(code, Some(0), "{out}\n{}", c.log.text());
    assert_eq!(c.get("/").text(), "v");
}

#[test]
fn the_built_in_symlink_rollback_points_current_back_at_the_last_good_release() {
    let root = AppDir::new(&[
        ("releases/r1/app.py", &app_source("r1", "")),
        ("releases/r2/app.py", "import no_such_module_in_r2\n"),
    ]);
    let r = root.path();
    std::os::unix::fs::symlink(r.join("releases/r1"), r.join("current")).unwrap();
    std::fs::write(
        r.join("corral.toml"),
        config("revision = \"symlink\"\nrollback = \"symlink\""),
    )
    .unwrap();
    let c = Corral::start(r, &["-c", "corral.toml"], 1);
    c.wait_until("r1 recorded", || {
        c.status_json()["last_good_revision"] == "r1"
    });
    std::fs::remove_file(r.join("current")).unwrap();
    std::os::unix::fs::symlink(r.join("releases/r2"), r.join("current")).unwrap();
    c.signal(libc::SIGHUP);
    assert!(
        c.log
            .wait_for("reload done: generation 3", Duration::from_secs(30))
            .is_some(),
        "{}",
        c.log.text()
    );
    assert!(c.log.has("pointed"), "{}", c.log.text());
    assert_eq!(
        std::fs::canonicalize(r.join("current")).unwrap(),
        std::fs::canonicalize(r.join("releases/r1")).unwrap()
    );
    assert_eq!(c.get("/").text(), "r1");
}

#[test]
fn a_cold_start_with_nothing_good_runs_the_hook_once_and_recovers_when_the_code_is_fixed() {
    let root = AppDir::new(&[("current/app.py", "raise RuntimeError('not yet')\n")]);
    let r = root.path();
    write_hook(
        r,
        "#!/bin/sh\necho ran >> \"$(dirname \"$0\")/hook-runs.txt\"\n",
    );
    std::fs::write(
        r.join("corral.toml"),
        config("rollback_hook = [\"./hook.sh\"]"),
    )
    .unwrap();
    let mut c = Corral::spawn(r, &["-c", "corral.toml"], &[]);
    c.wait_listening();
    c.wait_until("the hook", || r.join("hook-runs.txt").exists());
    let r503 = c.get("/");
    assert_eq!(r503.status, 503);
    assert!(r503.header("retry-after").is_some());
    assert_eq!(c.status("/health/ready").status, 503);
    // Several more boot attempts: the hook does not run again.
    c.wait_until("retries", || {
        c.status_json()["workers"]["boot_failures"]
            .as_u64()
            .unwrap_or(0)
            >= 3
    });
    assert_eq!(
        std::fs::read_to_string(r.join("hook-runs.txt"))
            .unwrap()
            .lines()
            .count(),
        1
    );
    // The code is fixed on disk: corral becomes ready by itself.
    std::fs::write(
        r.join("current/app.py"),
        app_source("fixed", "# now it works"),
    )
    .unwrap();
    c.wait_until("recovery", || c.get("/").status == 200);
    assert_eq!(c.get("/").text(), "fixed");
}

#[test]
fn exit_on_boot_failure_exits_with_its_own_code() {
    let root = AppDir::new(&[("current/app.py", "raise RuntimeError('broken')\n")]);
    let r = root.path();
    std::fs::write(r.join("corral.toml"), config("exit_on_boot_failure = true")).unwrap();
    let mut c = Corral::spawn(r, &["-c", "corral.toml"], &[]);
    let st = c.wait_exit(Duration::from_secs(20)).expect("corral exits");
    assert_eq!(st.code(), Some(3), "{}", c.log.text());
    assert!(c.log.text().contains("exit_on_boot_failure"));
    // Said as corral's own stop, not as a SIGQUIT no one sent.
    assert!(
        c.log
            .text()
            .contains("INFO no worker could boot: fast stop"),
        "{}",
        c.log.text()
    );
    assert!(!c.log.text().contains("SIGQUIT"), "{}", c.log.text());
}

#[test]
fn a_respawn_after_the_code_changed_in_place_reports_drift_and_never_takes_the_others_down() {
    let root = AppDir::new(&[]);
    let r = root.path();
    let (app, good) = git_app(r);
    let mut cfg = config("revision = \"git\"");
    cfg = cfg.replace("count = 1", "count = 2");
    std::fs::write(r.join("corral.toml"), cfg).unwrap();
    let c = Corral::start(r, &["-c", "corral.toml"], 2);
    // New, broken code lands in place, with no reload (gunicorn's
    // max_requests trap): a worker dies and is respawned from the disk.
    std::fs::write(app.join("app.py"), "raise RuntimeError('half-deployed')\n").unwrap();
    git(&app, &["commit", "-qam", "broken"]);
    let bad = git(&app, &["rev-parse", "--short=12", "HEAD"]);
    let victim = children_of(c.pid())[0];
    // SAFETY: killing a worker of the corral this test started.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    let expect = format!("generation 1 runs {good}; disk now has {bad}; reload to deploy it");
    c.wait_until("drift in /status", || {
        c.status_json()["revision_drift"] == expect.as_str()
    });
    assert!(c.log.has(&expect));
    // The respawn fails (new code), the other worker keeps serving.
    assert!(
        c.log
            .wait_for("half-deployed", Duration::from_secs(20))
            .is_some()
    );
    for _ in 0..20 {
        let resp = c.get("/");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.text(), "good");
    }
}

#[test]
fn the_last_known_good_revision_survives_a_restart() {
    let root = AppDir::new(&[]);
    let r = root.path();
    let (app, good) = git_app(r);
    write_hook(
        r,
        "#!/bin/sh\necho \"$CORRAL_GOOD_REVISION\" > \"$(dirname \"$0\")/hook-good.tmp\"\nmv \"$(dirname \"$0\")/hook-good.tmp\" \"$(dirname \"$0\")/hook-good.txt\"\n",
    );
    std::fs::write(
        r.join("corral.toml"),
        config("revision = \"git\"\nrollback_hook = [\"./hook.sh\"]"),
    )
    .unwrap();
    let mut c = Corral::start(r, &["-c", "corral.toml"], 1);
    c.wait_until("good recorded", || {
        c.status_json()["last_good_revision"] == good.as_str()
    });
    c.signal(libc::SIGTERM);
    assert_eq!(
        c.wait_exit(Duration::from_secs(15)).and_then(|s| s.code()),
        Some(0)
    );
    drop(c);

    // A broken commit lands while corral is down; the next corral (same
    // state_dir) cannot boot it, and still knows the good revision.
    std::fs::write(app.join("app.py"), "raise ImportError('broken release')\n").unwrap();
    git(&app, &["commit", "-qam", "broken"]);
    let mut c = Corral::spawn(r, &["-c", "corral.toml"], &[]);
    c.wait_listening();
    c.wait_until("the hook at a cold start with nothing good", || {
        r.join("hook-good.txt").exists()
    });
    assert_eq!(
        std::fs::read_to_string(r.join("hook-good.txt"))
            .unwrap()
            .trim(),
        good,
        "CORRAL_GOOD_REVISION after a restart"
    );
    assert_eq!(c.status_json()["last_good_revision"], good.as_str());
    assert_eq!(c.get("/").status, 503);
}
