//! `--reload`: a save starts a new generation within a couple of seconds,
//! a broken save keeps the last good code serving and logs its traceback
//! once, and the fix is picked up; files that do not count (not `*.py`,
//! `__pycache__`) change nothing.

use crate::common::*;

use std::time::{Duration, Instant};

fn app(tag: &str) -> String {
    format!(
        "def app(environ, start_response):\n    body = b\"{tag}\"\n    \
         start_response(\"200 OK\", [(\"Content-Length\", str(len(body)))])\n    return [body]\n"
    )
}

/// Waits (at most 10 s) until `/` answers `tag`; how long it took.
fn until_serving(c: &Corral, tag: &str) -> Duration {
    let started = Instant::now();
    loop {
        if c.get("/").text() == tag {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{tag} never served; log:\n{}",
            c.log.text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `text` to `app.py` as editors do: a new file renamed over it.
fn save(dir: &AppDir, text: &str) {
    let tmp = dir.path().join(".app.py.swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.path().join("app.py")).unwrap();
}

#[test]
fn a_save_is_followed_a_broken_one_keeps_the_old_code_and_the_fix_is_picked_up() {
    let dir = AppDir::new(&[("app.py", &app("v1"))]);
    let c = Corral::start(dir.path(), &["app:app", "--reload"], 1);
    let banner = c
        .log
        .wait_for(
            "--reload: serving app:app on http://",
            Duration::from_secs(5),
        )
        .unwrap_or_else(|| panic!("no banner; log:\n{}", c.log.text()));
    assert!(banner.contains("with 1 worker(s)"), "{banner}");
    assert_eq!(c.get("/").text(), "v1");

    save(&dir, &app("v2"));
    let took = until_serving(&c, "v2");
    assert!(took < Duration::from_secs(3), "the edit took {took:?}");

    // A broken save: v2 keeps serving, the traceback is logged once.
    // A mistake every CPython from 3.9 on reports at the same line.
    let broken = "def app(environ, start_response):\n    return 1 +\n";
    let failed = "reload failed: slot 0 did not boot: SyntaxError";
    let shown = "    return 1 +";
    save(&dir, broken);
    c.log
        .wait_for(failed, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("the broken save was not tried; log:\n{}", c.log.text()));
    for _ in 0..5 {
        assert_eq!(c.get("/").text(), "v2");
    }
    assert_eq!(
        c.log.wait_count(shown, 1, Duration::from_secs(10)),
        1,
        "{}",
        c.log.text()
    );
    // The same mistake saved again is tried again, and said in one line.
    save(&dir, broken);
    c.wait_until("the second try", || c.log.count(failed) == 2);
    assert_eq!(c.log.count(shown), 1, "{}", c.log.text());
    assert_eq!(c.get("/").text(), "v2");

    // The fix is the retry.
    save(&dir, &app("v3"));
    let took = until_serving(&c, "v3");
    assert!(took < Duration::from_secs(3), "the fix took {took:?}");
}

#[test]
fn changes_that_do_not_count_start_nothing() {
    let dir = AppDir::new(&[("app.py", &app("v1")), ("notes.txt", "x")]);
    let c = Corral::start(dir.path(), &["app:app", "--reload", "-w", "2"], 2);
    std::fs::write(dir.path().join("notes.txt"), "changed").unwrap();
    std::fs::create_dir_all(dir.path().join("__pycache__")).unwrap();
    std::fs::write(dir.path().join("__pycache__/stale.py"), "x = 1\n").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        c.log.count("--reload:"),
        1,
        "only the banner; log:\n{}",
        c.log.text()
    );
    assert_eq!(c.log.count("reload: starting generation"), 0);
    // A file that counts does, with -w 2 workers.
    std::fs::write(dir.path().join("helpers.py"), "X = 1\n").unwrap();
    c.log
        .wait_for("reload: starting generation 2", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("helpers.py did not count; log:\n{}", c.log.text()));
    c.wait_in_service(2);
}

#[test]
fn an_asgi_app_is_followed_too_and_a_failing_startup_keeps_the_old_code() {
    let asgi = |tag: &str, startup: &str| {
        format!(
            "async def app(scope, receive, send):\n\
             \x20   if scope[\"type\"] == \"lifespan\":\n\
             \x20       await receive()\n\
             \x20       {startup}\n\
             \x20       await send({{\"type\": \"lifespan.startup.complete\"}})\n\
             \x20       await receive()\n\
             \x20       return\n\
             \x20   await send({{\"type\": \"http.response.start\", \"status\": 200, \
             \"headers\": [(b\"content-length\", b\"2\")]}})\n\
             \x20   await send({{\"type\": \"http.response.body\", \"body\": b\"{tag}\"}})\n"
        )
    };
    let dir = AppDir::new(&[("app.py", &asgi("a1", "pass"))]);
    let c = Corral::start(dir.path(), &["app:app", "--reload"], 1);
    assert_eq!(c.get("/").text(), "a1");
    save(&dir, &asgi("a2", "pass"));
    until_serving(&c, "a2");
    save(&dir, &asgi("a3", "raise RuntimeError('no database')"));
    c.log
        .wait_for("reload failed", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("the failing startup was not tried; log:\n{}", c.log.text()));
    assert_eq!(c.get("/").text(), "a2");
    assert!(c.log.has("RuntimeError: no database"));
    save(&dir, &asgi("a4", "pass"));
    until_serving(&c, "a4");
}

#[test]
fn a_start_with_broken_code_serves_as_soon_as_the_fix_is_saved() {
    let dir = AppDir::new(&[("app.py", "def app(environ, start_response:\n")]);
    let mut c = Corral::spawn(dir.path(), &["app:app", "--reload"], &[]);
    c.wait_listening();
    c.log
        .wait_for("failed to boot", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("log:\n{}", c.log.text()));
    assert_eq!(c.get("/").status, 503);
    save(&dir, &app("fixed"));
    let took = until_serving(&c, "fixed");
    assert!(took < Duration::from_secs(3), "the fix took {took:?}");
}

#[test]
fn an_extra_file_anywhere_and_added_globs_count_as_under_gunicorn_and_uvicorn() {
    // The app reads a file from outside its folder: gunicorn's
    // --reload-extra-file watches it.
    let etc = AppDir::new(&[("greeting.txt", "hello")]);
    let greeting = etc.path().join("greeting.txt");
    let code = format!(
        "import pathlib\nG = pathlib.Path({:?}).read_text().encode()\n\n\
         def app(environ, start_response):\n    \
         start_response(\"200 OK\", [(\"Content-Length\", str(len(G)))])\n    return [G]\n",
        greeting.display().to_string()
    );
    let dir = AppDir::new(&[("app.py", &code)]);
    let extra = greeting.display().to_string();
    let c = Corral::start(
        dir.path(),
        &[
            "app:app",
            "--reload",
            "--reload-extra-file",
            &extra,
            "--reload-include",
            "*.html",
            "--reload-engine",
            "inotify",
            "--reload-delay",
            "0.25",
        ],
        1,
    );
    let banner = c
        .log
        .wait_for("--reload: serving app:app", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no banner; log:\n{}", c.log.text()));
    assert!(
        banner.contains("a change to *.py, *.html in ")
            && banner.contains(&format!("or to {extra}")),
        "{banner}"
    );
    for said in [
        "--reload-engine inotify accepted (gunicorn's) and changes nothing",
        "--reload-delay 0.25 accepted (uvicorn's) and changes nothing",
    ] {
        assert!(c.log.has(said), "{said}: {}", c.log.text());
    }
    assert_eq!(c.get("/").text(), "hello");

    std::fs::write(&greeting, "bonjour").unwrap();
    until_serving(&c, "bonjour");
    // An added glob counts, and *.py still does: uvicorn adds its
    // --reload-include to *.py.
    std::fs::write(dir.path().join("page.html"), "<p>").unwrap();
    c.log
        .wait_for("reload: starting generation 3", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("page.html did not count; log:\n{}", c.log.text()));
    c.wait_in_service(1);
    std::fs::write(dir.path().join("helpers.py"), "X = 1\n").unwrap();
    c.log
        .wait_for("reload: starting generation 4", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("helpers.py did not count; log:\n{}", c.log.text()));
    // A file beside the extra one does not.
    c.wait_in_service(1);
    std::fs::write(etc.path().join("other.txt"), "x").unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        c.log.count("reload: starting generation"),
        3,
        "{}",
        c.log.text()
    );
}

#[test]
fn reload_dir_watches_that_folder_instead_of_the_app_folder() {
    let dir = AppDir::new(&[("app.py", &app("v1")), ("lib/util.py", "X = 1\n")]);
    // uvicorn's --reload-dir and granian's --reload-paths.
    for flag in ["--reload-dir", "--reload-paths"] {
        let c = Corral::start(dir.path(), &["app:app", "--reload", flag, "lib"], 1);
        let banner = c
            .log
            .wait_for("--reload: serving app:app", Duration::from_secs(5))
            .unwrap_or_else(|| panic!("no banner; log:\n{}", c.log.text()));
        let lib = std::fs::canonicalize(dir.path().join("lib")).unwrap();
        assert!(
            banner.contains(&format!("in {} starts", lib.display())),
            "{banner}"
        );
        // The app folder itself is not watched.
        save(&dir, &app("v2"));
        std::thread::sleep(Duration::from_millis(1000));
        assert_eq!(
            c.log.count("reload: starting generation"),
            0,
            "{}",
            c.log.text()
        );
        std::fs::write(dir.path().join("lib/util.py"), "X = 2\n").unwrap();
        until_serving(&c, "v2");
        save(&dir, &app("v1"));
    }
    let (code, _, err) = crate::gunicorn_compat::run_to_exit(
        dir.path(),
        &["app:app", "--reload", "--reload-dir", "nowhere"],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--reload-dir: ") && err.contains("nowhere is not a folder that exists"),
        "{err}"
    );
}
