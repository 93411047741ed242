//! The status page (`GET /` on the status address), rendered by a real
//! browser: Debian's headless Chromium loads it against a running corral,
//! and the test reads the DOM the page's script built from `/status`.
//! Needs `chromium` (`.ci/run` installs it): under `CI` its absence is a
//! failure, elsewhere the tests say they are skipped.

use crate::common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Fails to import once the file `broken` exists in its folder; the error
/// message carries markup that must stay text.
const APP: &str = r#"
import os
if os.path.exists("broken"):
    raise RuntimeError("the database <script>alert(1)</script> is down")

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"#;

fn chromium() -> Option<&'static Path> {
    debian_program(
        &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
        "chromium",
    )
}

/// Runs headless Chromium on `url` with `args` for at most 60 s (killed
/// after); its stdout.
fn browse(browser: &Path, profile: &Path, args: &[&str], url: &str) -> String {
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            // Long enough for the page's first fetch of /status.
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().unwrap()
}

/// The first element of `dom` that starts with `open` (up to its closing
/// `close`).
fn element<'a>(dom: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = dom.find(open)?;
    let end = dom[start..].find(close)? + start + close.len();
    Some(&dom[start..end])
}

#[test]
fn the_page_shows_every_slot_and_a_failing_workers_traceback() {
    let Some(browser) = chromium() else { return };
    let app = AppDir::new(&[("app.py", APP)]);
    let c = Corral::start(
        app.path(),
        &["app:app", "-w", "2", "--status-bind", "127.0.0.1:0"],
        2,
    );
    for _ in 0..20 {
        assert_eq!(c.get("/").status, 200);
    }
    // Slot 1's worker dies and its replacement cannot boot.
    std::fs::write(app.path().join("broken"), "").unwrap();
    let victim = c.status_json()["slots"][1]["worker"]["pid"]
        .as_u64()
        .unwrap();
    let survivor = c.status_json()["slots"][0]["worker"]["pid"]
        .as_u64()
        .unwrap();
    // SAFETY: a worker of the corral this test started (from its /status).
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    c.wait_until("slot 1 shows its boot error", || {
        !c.status_json()["slots"][1]["last_boot_error"].is_null()
    });
    // The uptime is now's, not the last snapshot's.
    std::thread::sleep(Duration::from_millis(1200));
    let up = c.status_json()["supervisor"]["uptime_seconds"]
        .as_f64()
        .unwrap();
    assert!(up >= 1.2, "uptime {up}");

    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://{}/", c.status_addr);
    let dom = browse(browser, profile.path(), &["--dump-dom"], &url);
    assert!(dom.contains("data-rendered=\"1\""), "{dom}");
    let rows = element(&dom, "<tbody>", "</tbody>").expect("the slots table");
    let row0 = element(rows, "<tr data-slot=\"0\">", "</tr>").expect("slot 0");
    assert!(row0.contains(&format!("<td>{survivor}</td>")), "{row0}");
    assert!(row0.contains("in_service"), "{row0}");
    // What the worker runs, and how corral reaches it.
    let transport = c.status_json()["slots"][0]["worker"]["transport"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        row0.contains(&format!("<td>wsgi, {transport}</td>")),
        "{row0}"
    );
    let row1 = element(rows, "<tr data-slot=\"1\">", "</tr>").expect("slot 1");
    assert!(row1.contains("exited with code 1"), "{row1}");
    let error = element(&dom, "<details data-slot=\"1\"", "</details>").expect("slot 1's error");
    assert!(
        error.contains("Traceback (most recent call last)"),
        "{error}"
    );
    assert!(
        error.contains("RuntimeError: the database &lt;script&gt;alert(1)&lt;/script&gt; is down"),
        "the message stays text: {error}"
    );
    assert!(!dom.contains("<script>alert(1)"), "no markup from /status");
    assert!(dom.contains("generation 1"), "{dom}");
    // The charts have the requests above.
    assert!(
        element(&dom, "<div class=\"chart\" id=\"chart-rate\"", "</svg>")
            .is_some_and(|c| c.contains("<polyline")),
        "{dom}"
    );

    // A screenshot, kept for a person to look at.
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    browse(
        browser,
        profile.path(),
        &[
            "--window-size=1100,700",
            &format!("--screenshot={}", shot.display()),
        ],
        &url,
    );
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000),
        "screenshot at {}",
        shot.display()
    );
    eprintln!("status page screenshot: {}", shot.display());
}

#[test]
fn with_a_token_the_page_asks_for_it_and_shows_nothing_without_it() {
    let Some(browser) = chromium() else { return };
    let token = "0123456789abcdef0123456789abcdef";
    let app = AppDir::new(&[("app.py", APP)]);
    let mut c = Corral::spawn(
        app.path(),
        &["app:app", "-w", "1", "--status-bind", "127.0.0.1:0"],
        &[("CORRAL_STATUS_TOKEN", token)],
    );
    c.wait_listening();
    c.wait_in_service(1);
    let page = request(&c.status_addr, "GET", "/", &[], b"");
    assert_eq!(page.status, 200, "the page itself is open");
    assert!(
        page.header("content-security-policy")
            .is_some_and(|p| p.contains("default-src 'none'")),
        "{:?}",
        page.headers
    );
    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://{}/", c.status_addr);
    let dom = browse(browser, profile.path(), &["--dump-dom"], &url);
    assert!(
        dom.contains("<form id=\"token\" style=\"display: block;\""),
        "{dom}"
    );
    assert!(
        !dom.contains("data-slot=\"0\""),
        "no data without the token"
    );
    let dom = browse(
        browser,
        profile.path(),
        &["--dump-dom"],
        &format!("{url}#token={token}"),
    );
    assert!(dom.contains("<tr data-slot=\"0\">"), "{dom}");
}

/// During a canary the page shows the new generation's workers under
/// their slots and the canary's share and figures; it showed the old
/// generation's only.
#[test]
fn the_page_shows_a_canarys_new_generation_beside_the_old() {
    let Some(browser) = chromium() else { return };
    let app = AppDir::new(&[("app.py", APP)]);
    let c = Corral::start(
        app.path(),
        &["app:app", "-w", "2", "--status-bind", "127.0.0.1:0"],
        2,
    );
    let out = std::process::Command::new(corral_bin())
        .args(["reload", "--canary", "50%", "--for", "120s", "--socket"])
        .arg(&c.socket)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    c.wait_until("both canary workers in service", || {
        let status = c.status_json();
        status["slots"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["also"][0]["state"] == "in_service")
            .count()
            == 2
    });
    for _ in 0..20 {
        assert_eq!(c.get("/").status, 200);
    }
    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://{}/", c.status_addr);
    let dom = browse(browser, profile.path(), &["--dump-dom"], &url);
    assert!(dom.contains("data-rendered=\"1\""), "{dom}");
    let rows = element(&dom, "<tbody>", "</tbody>").expect("the slots table");
    assert_eq!(
        rows.matches("class=\"also\"").count(),
        2,
        "a row for each new worker: {rows}"
    );
    assert_eq!(rows.matches("<td>gen 2</td>").count(), 2, "{rows}");
    assert!(dom.contains("canary: generation 2 gets 50%"), "{dom}");
}
