//! A gunicorn user's command line and gunicorn.conf.py, run by corral: the
//! same flags with the command renamed, log files reopened on SIGUSR1, the
//! request-head limits, the flags corral refuses with what to use instead,
//! `corral import-gunicorn`, and the README's migration table against the
//! installed gunicorn's own list of settings.

use crate::common::*;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const APP: &str = r#"
import os

def app(environ, start_response):
    body = ("%s %s" % (environ["PATH_INFO"], os.environ.get("FOO", "-"))).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                              ("X-Served-By", "app")])
    return [body]
"#;

const ASGI_APP: &str = r#"
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"asgi"})
"#;

/// Waits until the file at `path` has a line containing `needle`; returns
/// that line.
fn wait_line(path: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no line with {needle:?} in {} within 30 s; it holds:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The app address from an error log file ("listening on http://ADDR").
fn address_from(log: &Path) -> String {
    let line = wait_line(log, "listening on http://");
    let addr = line.split("listening on http://").nth(1).unwrap();
    addr.split_whitespace().next().unwrap().to_owned()
}

/// Runs corral with `args` in `dir` to its exit; (code, stdout, stderr).
pub(crate) fn run_to_exit(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    run_to_exit_with_env(dir, args, &[])
}

/// `corral import-gunicorn LOCATION --python` the tests' Python, in
/// `dir`, which must succeed: its stdout (the corral.toml) and stderr.
pub(crate) fn import_gunicorn(dir: &Path, location: &str) -> (String, String) {
    let (code, stdout, stderr) =
        run_to_exit(dir, &["import-gunicorn", location, "--python", &python()]);
    assert_eq!(code, Some(0), "{stderr}");
    (stdout, stderr)
}

/// [`run_to_exit`] with these environment variables set.
pub(crate) fn run_to_exit_with_env(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Option<i32>, String, String) {
    let mut child = Command::new(corral_bin())
        .current_dir(dir)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("VIRTUAL_ENV")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start corral");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("corral {args:?} did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A command line as it would be given to gunicorn.
fn gunicorn_args(dir: &Path, statsd: &str) -> Vec<String> {
    let d = dir.display();
    [
        "-w",
        "2",
        "-k",
        "gthread",
        "--threads",
        "4",
        "-b",
        "127.0.0.1:0",
        "--timeout",
        "30",
        "--graceful-timeout",
        "10",
        "--keep-alive",
        "5",
        "--max-requests",
        "1000",
        "--max-requests-jitter",
        "50",
        "--access-logfile",
        &format!("{d}/access.log"),
        "--access-logformat",
        r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(D)s %({x-served-by}o)s %({x-request-id}o)s"#,
        "--error-logfile",
        &format!("{d}/error.log"),
        "--log-level",
        "info",
        "--limit-request-line",
        "4094",
        "--limit-request-fields",
        "100",
        "--limit-request-field_size",
        "8190",
        "-p",
        &format!("{d}/app.pid"),
        "--worker-tmp-dir",
        "/dev/shm",
        "--forwarded-allow-ips",
        "127.0.0.1",
        "--statsd-host",
        statsd,
        "--statsd-prefix",
        "app",
        "--chdir",
        &d.to_string(),
        "-e",
        "FOO=bar",
        "app:app",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn a_gunicorn_command_line_runs_with_the_command_renamed() {
    let app = AppDir::new(&[("app.py", APP)]);
    // The StatsD agent gunicorn would send to.
    let agent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    agent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let args = gunicorn_args(app.path(), &agent.local_addr().unwrap().to_string());
    // The command line is gunicorn's own: gunicorn checks it (and imports
    // the app) without error.
    let gunicorn = Path::new(&python()).with_file_name("gunicorn");
    let check = Command::new(&gunicorn)
        .arg("--check-config")
        .args(&args)
        .current_dir(app.path())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", gunicorn.display()));
    assert!(
        check.status.success(),
        "gunicorn --check-config refused the command line: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let _ = std::fs::remove_file(app.path().join("error.log"));

    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut c = Corral::spawn(app.path(), &arg_refs, &[]);
    let error_log = app.path().join("error.log");
    let addr = address_from(&error_log);
    wait_line(&error_log, "all 2 workers in service");
    let r = request(
        &addr,
        "GET",
        "/hello?x=1",
        &[("User-Agent", "test-agent"), ("Referer", "http://ref/")],
        b"",
    );
    assert_eq!((r.status, r.text().as_str()), (200, "/hello bar"));
    let line = wait_line(&app.path().join("access.log"), "/hello?x=1");
    assert!(
        line.starts_with("127.0.0.1 - - ["),
        "gunicorn's atoms, in the access log file: {line}"
    );
    // The response's X-Request-ID, which corral sets, is among the
    // response headers `o` reads. Before, it was `-`.
    let id = r.header("x-request-id").expect("an X-Request-ID");
    assert!(
        line.contains("\"GET /hello?x=1 HTTP/1.1\" 200 10 \"http://ref/\" \"test-agent\" ")
            && line.ends_with(&format!(" app {id}")),
        "{line}"
    );
    let micros: u64 = line.split(' ').rev().nth(2).unwrap().parse().unwrap();
    assert!(micros > 0 && micros < 30_000_000, "%(D)s: {line}");
    // The request reached the StatsD agent under gunicorn's name.
    let mut buf = [0u8; 2048];
    let n = agent.recv(&mut buf).expect("a StatsD datagram within 10 s");
    let datagram = String::from_utf8_lossy(&buf[..n]);
    assert!(
        datagram.contains("app.gunicorn.request.duration:"),
        "{datagram}"
    );
    // corral's own log went to the file, stderr kept quiet; the worker
    // script's folder went to --worker-tmp-dir, as gunicorn's heartbeat
    // files do.
    wait_line(
        &error_log,
        "--worker-tmp-dir /dev/shm: the worker script's private folder goes there",
    );
    let worker = children_of(c.pid())[0];
    let cmdline = std::fs::read_to_string(format!("/proc/{worker}/cmdline")).unwrap();
    assert!(cmdline.contains("\0/dev/shm/corral-"), "{cmdline:?}");
    assert!(
        c.log
            .wait_for("listening on", Duration::from_millis(300))
            .is_none(),
        "corral's log belongs in --error-logfile, not on stderr"
    );
    let pid_file = app.path().join("app.pid");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap(),
        format!("{}\n", c.pid())
    );
    let mode = std::fs::metadata(&pid_file).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o644
    );

    c.signal(libc::SIGTERM);
    let status = c.wait_exit(Duration::from_secs(30)).expect("corral exits");
    assert_eq!(status.code(), Some(0));
    assert!(
        !pid_file.exists(),
        "the pid file is removed on a clean exit"
    );
}

/// A pid file that names a corral that still runs keeps a second corral
/// (another folder, another address) from starting, with the way out, and
/// the first serves on, still named there; a stale file is replaced, whether
/// its pid has gone or now belongs to another program (gunicorn refuses
/// that one too); under `--reuse-port` the next corral, started beside the
/// last on purpose, takes the file over.
#[test]
fn a_pid_file_naming_a_running_corral_refuses_a_second_and_a_stale_one_is_replaced() {
    let (one, two) = (
        AppDir::new(&[("app.py", APP)]),
        AppDir::new(&[("app.py", APP)]),
    );
    let pid_file = one.path().join("app.pid");
    let pid_arg = pid_file.to_str().unwrap();
    let named = || {
        std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .to_owned()
    };
    // A live process that is no corral: this test.
    let me = std::process::id();
    std::fs::write(&pid_file, format!("{me}\n")).unwrap();
    let args = ["app:app", "--pid", pid_arg, "--reuse-port"];
    let mut first = Corral::start(one.path(), &args, 1);
    assert_eq!(named(), first.pid().to_string());
    let stale = format!("replacing the stale pid file {pid_arg}: pid {me} is now ");
    assert!(first.log.has(&stale), "{}", first.log.text());
    let mut second = Corral::spawn(two.path(), &["app:app", "--pid", pid_arg], &[]);
    let status = second.wait_exit(Duration::from_secs(20));
    let text = second.log.text();
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{text}");
    let refusal = format!(
        "error: the pid file {pid_arg} names corral pid {}, which is still running: stop that corral first, or give this one a pid file of its own (--pid, [server] pid_file)",
        first.pid()
    );
    assert!(text.contains(&refusal), "{text}");
    assert_eq!(named(), first.pid().to_string());
    assert_eq!(first.get("/").status, 200);
    // Beside the first on its address, under --reuse-port.
    let beside = [
        "app:app",
        "-b",
        &first.addr,
        "--pid",
        pid_arg,
        "--reuse-port",
    ];
    let mut third = Corral::start(two.path(), &beside, 1);
    assert_eq!(named(), third.pid().to_string());
    first.signal(libc::SIGTERM);
    assert!(first.wait_exit(Duration::from_secs(30)).is_some());
    assert_eq!(named(), third.pid().to_string());
    third.signal(libc::SIGTERM);
    assert!(third.wait_exit(Duration::from_secs(30)).is_some());
    assert!(!pid_file.exists());
    // A pid that no longer runs.
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    std::fs::write(&pid_file, format!("{gone_pid}\n")).unwrap();
    let fourth = Corral::start(one.path(), &["app:app", "--pid", pid_arg], 1);
    assert_eq!(named(), fourth.pid().to_string());
    let stale = format!("replacing the stale pid file {pid_arg}: pid {gone_pid} no longer runs");
    assert!(fourth.log.has(&stale), "{}", fourth.log.text());
}

/// Under `--reuse-port` the newer of two corrals on one pid file takes it
/// over; stopped first, it gives the file back to the older one, which
/// serves on (the file named nobody: a `kill $(cat FILE)` found no file),
/// and the older one removes it at its own exit.
#[test]
fn under_reuse_port_the_newer_corral_stopped_first_gives_the_pid_file_back() {
    let (one, two) = (
        AppDir::new(&[("app.py", APP)]),
        AppDir::new(&[("app.py", APP)]),
    );
    let pid_file = one.path().join("app.pid");
    let pid_arg = pid_file.to_str().unwrap();
    let named = || std::fs::read_to_string(&pid_file).map(|t| t.trim().to_owned());
    let mut older = Corral::start(
        one.path(),
        &["app:app", "--pid", pid_arg, "--reuse-port"],
        1,
    );
    let beside = [
        "app:app",
        "-b",
        &older.addr,
        "--pid",
        pid_arg,
        "--reuse-port",
    ];
    let mut newer = Corral::start(two.path(), &beside, 1);
    assert_eq!(named().unwrap(), newer.pid().to_string());
    newer.signal(libc::SIGTERM);
    assert!(newer.wait_exit(Duration::from_secs(30)).is_some());
    assert_eq!(older.get("/").status, 200);
    assert_eq!(
        named().ok(),
        Some(older.pid().to_string()),
        "the pid file names the corral that serves on; log:\n{}",
        newer.log.text()
    );
    older.signal(libc::SIGTERM);
    assert!(older.wait_exit(Duration::from_secs(30)).is_some());
    assert!(!pid_file.exists());
}

#[test]
fn usr1_reopens_the_log_files_for_logrotate() {
    let app = AppDir::new(&[("app.py", APP)]);
    let (access, error) = (app.path().join("access.log"), app.path().join("error.log"));
    let mut c = Corral::spawn(
        app.path(),
        &[
            "app:app",
            "--access-logfile",
            "access.log",
            "--log-file",
            "error.log",
        ],
        &[],
    );
    let addr = address_from(&error);
    wait_line(&error, "all 1 workers in service");
    assert_eq!(request(&addr, "GET", "/before", &[], b"").status, 200);
    wait_line(&access, "/before");
    // logrotate: move the files away, then USR1.
    std::fs::rename(&access, app.path().join("access.log.1")).unwrap();
    std::fs::rename(&error, app.path().join("error.log.1")).unwrap();
    c.signal(libc::SIGUSR1);
    wait_line(&error, "SIGUSR1: reopened");
    assert_eq!(request(&addr, "GET", "/after", &[], b"").status, 200);
    wait_line(&access, "/after");
    let new_access = std::fs::read_to_string(&access).unwrap();
    assert!(!new_access.contains("/before"), "{new_access}");
    let old_access = std::fs::read_to_string(app.path().join("access.log.1")).unwrap();
    assert!(
        old_access.contains("/before") && !old_access.contains("/after"),
        "{old_access}"
    );
    let old_error = std::fs::read_to_string(app.path().join("error.log.1")).unwrap();
    assert!(old_error.contains("listening on"), "{old_error}");
    assert!(!old_error.contains("reopened"), "{old_error}");
    let mode = std::fs::metadata(&access).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o007,
        0,
        "no access for others"
    );
    c.signal(libc::SIGTERM);
    assert_eq!(
        c.wait_exit(Duration::from_secs(30)).and_then(|s| s.code()),
        Some(0)
    );
}

#[test]
fn access_logfile_dash_is_stdout_without_corral_s_prefix() {
    let app = AppDir::new(&[("app.py", APP)]);
    let c = Corral::start(app.path(), &["app:app", "--access-logfile", "-"], 1);
    assert_eq!(c.get("/to-stdout").status, 200);
    let line = c
        .log
        .wait_for("/to-stdout HTTP/1.1", Duration::from_secs(10))
        .expect("an access line");
    assert!(
        line.starts_with("127.0.0.1 - - [") && line.ends_with(" 200 12 \"-\" \"-\""),
        "gunicorn's default line, alone on stdout: {line}"
    );
}

/// Another user's link where root's corral opens its access log, in a
/// folder anyone may write to (as `/tmp`): refused, the file it points to
/// untouched. (A link of root's own there is followed, as in a Kubernetes
/// secret volume: only root can have put it there; so the test plants
/// nobody's, which only root can do.)
#[test]
fn a_log_file_symlink_planted_in_a_shared_folder_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: planting another user's link needs root");
        return;
    }
    let app = AppDir::new(&[("app.py", APP)]);
    let shared = app.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let victim = app.path().join("victim");
    std::fs::write(&victim, "untouched\n").unwrap();
    std::os::unix::fs::symlink(&victim, shared.join("access.log")).unwrap();
    std::os::unix::fs::lchown(shared.join("access.log"), Some(65534), Some(65534)).unwrap();
    let (code, _, stderr) = run_to_exit(
        app.path(),
        &[
            "app:app",
            "--python",
            &python(),
            "-b",
            "127.0.0.1:0",
            "--socket",
            &app.path().join("ctl.sock").display().to_string(),
            "--access-logfile",
            "shared/access.log",
        ],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("symlink in a folder another user may change"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched\n");
}

#[test]
fn daemon_true_in_a_gunicorn_conf_py_is_refused_as_dash_d_is() {
    // An init script or a Type=forking unit would wait for a fork that
    // never comes: refused at once, exit 2, with -D's reason.
    let app = AppDir::new(&[
        ("app.py", APP),
        ("gunicorn.conf.py", "daemon = True\nworkers = 1\n"),
    ]);
    let mut c = Corral::spawn(app.path(), &["app:app"], &[]);
    let status = c.wait_exit(Duration::from_secs(20));
    let log = c.log.text();
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{log}");
    assert!(
        log.contains("gunicorn.conf.py: it sets daemon = True: corral does not take gunicorn's --daemon (`daemon`): not supported: run corral under systemd or a container"),
        "{log}"
    );
    // daemon = False is gunicorn's default, and taken.
    std::fs::write(
        app.path().join("gunicorn.conf.py"),
        "daemon = False\nworkers = 1\n",
    )
    .unwrap();
    let mut c = Corral::spawn(app.path(), &["app:app"], &[]);
    c.wait_listening();
    c.wait_in_service(1);
    assert_eq!(c.get("/x").text(), "/x -");
}

#[test]
fn a_value_gunicorn_refuses_in_a_gunicorn_conf_py_is_an_error_naming_its_line() {
    // gunicorn refuses to start with these; corral ran one worker, the
    // default, after a warning.
    for (setting, said) in [
        (
            "workers = 3.0",
            "error: gunicorn.conf.py:3: workers: 3.0 is not a whole number of 0 or more, which gunicorn requires (it refuses to start with it too); write it like workers = 4",
        ),
        (
            "workers = \"four\"",
            "error: gunicorn.conf.py:3: workers: \"four\" is not a whole number of 0 or more",
        ),
        (
            "timeout = \"abc\"",
            "error: gunicorn.conf.py:3: timeout: \"abc\" is not a number of seconds of 0 or more",
        ),
        (
            "max_requests = -5",
            "error: gunicorn.conf.py:3: max_requests: -5 is not a whole number of 0 or more",
        ),
        (
            "access_log_format = \"%(h)s %z\"",
            "error: gunicorn.conf.py:3: access_log_format: ",
        ),
        // gunicorn takes these; corral's numbers end at 64 bits.
        (
            "workers = 10**30",
            "error: gunicorn.conf.py:3: workers: 1000000000000000000000000000000 is too large: the largest corral takes is 9223372036854775807",
        ),
        (
            "max_requests = 2**63",
            "error: gunicorn.conf.py:3: max_requests: 9223372036854775808 is too large: the largest corral takes is 9223372036854775807",
        ),
    ] {
        let conf = format!("import os\n\n{setting}\n");
        let app = AppDir::new(&[("app.py", APP), ("gunicorn.conf.py", &conf)]);
        let (code, _, err) = run_to_exit(app.path(), &["check", "app:app", "--python", &python()]);
        assert_eq!(code, Some(2), "{setting}: {err}");
        assert!(err.contains(said), "{setting}: {said} missing from:\n{err}");
    }
    // Where a setting comes from is the user's line, not the converted
    // text's.
    let app = AppDir::new(&[
        ("app.py", APP),
        ("gunicorn.conf.py", "import os\n\nworkers = 2\n"),
    ]);
    let (code, out, err) = run_to_exit(app.path(), &["check", "app:app", "--python", &python()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(
            "`corral run` would start 2 worker(s): gunicorn.conf.py:3 (key workers.count)"
        ),
        "{out}"
    );
}

/// What gunicorn's validators take is taken, with the value gunicorn
/// gives it: a loglevel it does not know is info, a bool as "true", a
/// whole number as Python's `int(s, 0)` reads it, and True as 1.
#[test]
fn values_gunicorn_takes_in_a_gunicorn_conf_py_are_taken() {
    let conf = "loglevel = \"warn\"\nproxy_protocol = \"true\"\ntimeout = \"0x1e\"\nkeepalive = \"0b101\"\nlimit_request_line = \"0o10\"\nmax_requests = \"1_000\"\nworkers = True\n";
    let app = AppDir::new(&[("app.py", APP), ("gunicorn.conf.py", conf)]);
    // gunicorn itself starts with this file.
    let gunicorn = Path::new(&python()).with_file_name("gunicorn");
    let check = Command::new(&gunicorn)
        .args(["--check-config", "-c", "gunicorn.conf.py", "app:app"])
        .current_dir(app.path())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", gunicorn.display()));
    assert!(
        check.status.success(),
        "gunicorn --check-config refused the file: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let (toml, notes) = import_gunicorn(app.path(), "gunicorn.conf.py");
    for line in [
        "level = \"info\"",
        "proxy_protocol = \"auto\"",
        "timeout = \"30s\"",
        "keepalive = \"5s\"",
        "max_request_line = 8",
        "max_requests = 1000",
        "count = 1",
    ] {
        assert!(
            toml.lines().any(|l| l.trim() == line),
            "{line} missing from:\n{toml}\n{notes}"
        );
    }
    assert!(
        notes.contains("loglevel: \"warn\" is no level gunicorn knows"),
        "{notes}"
    );
    let (code, out, err) = run_to_exit(app.path(), &["check", "app:app", "--python", &python()]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        out.contains(
            "`corral run` would start 1 worker(s): gunicorn.conf.py:7 (key workers.count)"
        ),
        "{out}\n{err}"
    );
}

#[test]
fn header_map_drop_is_taken_silently_and_the_others_refused_with_the_reason() {
    // `drop` is gunicorn's default and what corral does: a command line
    // that spells it out runs, and says nothing of it.
    let app = AppDir::new(&[("app.py", APP)]);
    for args in [
        &["check", "app:app", "--header-map", "drop"][..],
        &["check", "app:app", "--header-map=drop"][..],
    ] {
        let mut args = args.to_vec();
        let py = python();
        args.extend(["--python", &py]);
        let (code, out, err) = run_to_exit(app.path(), &args);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert!(
            !err.contains("header-map") && !out.contains("header-map"),
            "{err}"
        );
    }
    let (code, _, err) = run_to_exit(
        app.path(),
        &[
            "check",
            "app:app",
            "--header-map",
            "dangerous",
            "--python",
            &python(),
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("error: --header-map dangerous: not supported: corral drops headers with `_` in their name (gunicorn's `drop`, its default)"),
        "{err}"
    );
}

/// An `Expect` other than `100-continue` gets 417, as from gunicorn
/// (hyper would ignore it, and the client would wait for its 100).
#[test]
fn an_expectation_corral_cannot_meet_gets_417() {
    let app = AppDir::new(&[("app.py", APP)]);
    let c = Corral::start(app.path(), &["app:app"], 1);
    let r = request(
        &c.addr,
        "POST",
        "/x",
        &[("Expect", "100-continue, foo")],
        b"hi",
    );
    assert_eq!(r.status, 417, "{}", r.text());
    // The one corral meets: a 100 first (the harness reads it as the
    // answer), then the app's.
    let r = request(&c.addr, "POST", "/x", &[("Expect", "100-Continue")], b"hi");
    assert!([100, 200].contains(&r.status), "{}", r.status);
}

#[test]
fn gunicorn_request_limits_answer_414_and_431() {
    let app = AppDir::new(&[("app.py", APP)]);
    let c = Corral::start(
        app.path(),
        &[
            "app:app",
            "--limit-request-line",
            "100",
            "--limit-request-fields",
            "10",
            "--limit-request-field_size",
            "60",
        ],
        1,
    );
    assert_eq!(c.get("/ok").status, 200);
    // "GET " + 87 + " HTTP/1.1" = 100 bytes: at the limit, served.
    let at_limit = format!("/{}", "a".repeat(86));
    assert_eq!(c.get(&at_limit).status, 200);
    let r = c.get(&format!("{at_limit}b"));
    assert_eq!(r.status, 414, "{}", r.text());
    let nine: Vec<(String, String)> = (0..9).map(|i| (format!("X-H{i}"), "v".into())).collect();
    let headers: Vec<(&str, &str)> = nine.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // Host plus nine: ten fields, served; one more is refused.
    assert_eq!(request(&c.addr, "GET", "/", &headers, b"").status, 200);
    let mut eleven = headers.clone();
    eleven.push(("X-Extra", "v"));
    assert_eq!(request(&c.addr, "GET", "/", &eleven, b"").status, 431);
    // "X-Long: " + 50 = 58 bytes and CRLF: 60, served, as gunicorn counts
    // the line (with its CRLF); 59 and CRLF is refused.
    let value = "v".repeat(50);
    assert_eq!(
        request(&c.addr, "GET", "/", &[("X-Long", &value)], b"").status,
        200
    );
    let longer = format!("{value}v");
    let r = request(&c.addr, "GET", "/", &[("X-Long", &longer)], b"");
    assert_eq!(r.status, 431, "{}", r.text());
}

#[test]
fn worker_classes_map_to_interfaces_and_the_rest_is_refused_with_advice() {
    let app = AppDir::new(&[("app.py", APP), ("asgiapp.py", ASGI_APP)]);
    let c = Corral::start(
        app.path(),
        &["asgiapp:app", "-k", "uvicorn.workers.UvicornWorker"],
        1,
    );
    assert_eq!(c.get("/").text(), "asgi");
    drop(c);
    let base = ["app:app", "--python", "python3", "-b", "127.0.0.1:0"];
    for (extra, needle, code) in [
        (
            &["-k", "eventlet"][..],
            "corral has no eventlet workers (eventlet is no longer developed",
            2,
        ),
        (
            &[
                "-k",
                "geventwebsocket.gunicorn.workers.GeventWebSocketWorker",
            ],
            "a WSGI app cannot take WebSockets under corral",
            2,
        ),
        (
            &["-k", "tornado"],
            "corral has no worker class \"tornado\"",
            2,
        ),
        (
            &["--preload"],
            "--preload: corral never preloads the app",
            2,
        ),
        (
            &["-k", "sync", "--interface", "asgi"],
            "--worker-class: says wsgi but --interface says asgi",
            2,
        ),
    ] {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let (got, _, stderr) = run_to_exit(app.path(), &args);
        assert_eq!(got, Some(code), "{extra:?}: {stderr}");
        assert!(stderr.contains(needle), "{extra:?}: {stderr}");
    }
}

const CONF: &str = r#"
import multiprocessing, os

here = os.path.dirname(os.path.abspath(__file__))
bind = "127.0.0.1:0"
workers = 2
threads = 2
timeout = 20
graceful_timeout = 5
keepalive = 3
max_requests = 500
max_requests_jitter = 25
accesslog = os.path.join(here, "access.log")
errorlog = os.path.join(here, "error.log")
loglevel = "info"
user = os.getuid()
group = os.getgid()
chdir = here
raw_env = ["FOO=from-conf"]
forwarded_allow_ips = "127.0.0.1,::1"
limit_request_line = 4094
limit_request_fields = 50
limit_request_field_size = 8190
wsgi_app = "app:app"
preload_app = True
print("this print goes to stderr")

def post_fork(server, worker):
    pass

def pre_exec(server):
    pass
"#;

#[test]
fn import_gunicorn_converts_a_conf_file_that_corral_then_serves() {
    let app = AppDir::new(&[("app.py", APP), ("gunicorn.conf.py", CONF)]);
    let (stdout, stderr) = import_gunicorn(app.path(), "gunicorn.conf.py");
    assert!(stdout.contains("[workers]\ncount = 2\n"), "{stdout}");
    assert!(stdout.contains("timeout = \"20s\""), "{stdout}");
    for needle in [
        "this print goes to stderr",
        "preload_app: not supported",
        "pre_exec: is a function; not supported",
        "not gunicorn settings, ignored (as gunicorn ignores them): here",
    ] {
        assert!(
            stderr.contains(needle),
            "{needle} missing from stderr:\n{stderr}"
        );
    }
    // The workers run its post_fork from the file itself.
    assert!(!stderr.contains("post_fork"), "{stderr}");
    assert!(
        stdout.contains(&format!(
            "gunicorn_hooks = \"{}\"",
            app.path().join("gunicorn.conf.py").display()
        )),
        "{stdout}"
    );
    std::fs::write(app.path().join("corral.toml"), &stdout).unwrap();
    let mut c = Corral::spawn(app.path(), &["-c", "corral.toml"], &[]);
    let error_log = app.path().join("error.log");
    let addr = address_from(&error_log);
    wait_line(&error_log, "all 2 workers in service");
    let r = request(&addr, "GET", "/converted", &[], b"");
    assert_eq!((r.status, r.text().as_str()), (200, "/converted from-conf"));
    wait_line(
        &app.path().join("access.log"),
        "\"GET /converted HTTP/1.1\" 200",
    );
    c.signal(libc::SIGTERM);
    assert_eq!(
        c.wait_exit(Duration::from_secs(30)).and_then(|s| s.code()),
        Some(0)
    );
}

#[test]
fn import_gunicorn_reports_a_file_that_does_not_run() {
    let app = AppDir::new(&[("gunicorn.conf.py", "workers = undefined_name\n")]);
    let (code, stdout, stderr) = run_to_exit(
        app.path(),
        &["import-gunicorn", "gunicorn.conf.py", "--python", &python()],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("NameError"), "{stderr}");
    assert!(stderr.contains("gunicorn.conf.py did not run"), "{stderr}");
}

/// What `script` prints about the installed gunicorn's settings (with
/// `gunicorn.config` imported as `c`).
pub(crate) fn gunicorn_says(script: &str) -> String {
    let out = Command::new(python())
        .args(["-c", &format!("import gunicorn.config as c\n{script}")])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "gunicorn must be installed for this test (./test.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every setting of the installed gunicorn's reference is in the README's
/// migration table and in `corral import-gunicorn`'s list.
#[test]
fn the_migration_table_lists_every_gunicorn_setting() {
    let names = gunicorn_says("print('\\n'.join(s.name for s in c.KNOWN_SETTINGS))");
    let names: Vec<&str> = names.lines().collect();
    assert!(names.len() > 50, "{names:?}");
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let table = readme
        .split("### Every gunicorn setting")
        .nth(1)
        .expect("README has a section \"### Every gunicorn setting\"");
    let table = table.split("\n#").next().unwrap();
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| `")).collect();
    let settings = std::fs::read_to_string(repo("src/import_gunicorn/settings.rs")).unwrap();
    let mut missing = Vec::new();
    for name in &names {
        if !rows.iter().any(|r| r.starts_with(&format!("| `{name}` |"))) {
            missing.push(format!("README: {name}"));
        }
        if !settings.contains(&format!("\"{name}\",")) {
            missing.push(format!("src/import_gunicorn/settings.rs: {name}"));
        }
    }
    assert!(
        missing.is_empty(),
        "gunicorn settings not covered:\n{}",
        missing.join("\n")
    );
}

#[test]
fn reuse_port_lets_a_second_corral_bind_the_address_and_share_its_connections() {
    // Two deployments of one app (two folders, two instances) on one
    // address, as a deployment tool starts the next beside the last.
    const PID_APP: &str = "import os\n\ndef app(environ, start_response):\n    body = str(os.getpid()).encode()\n    start_response(\"200 OK\", [(\"Content-Length\", str(len(body)))])\n    return [body]\n";
    let (one, two) = (
        AppDir::new(&[("app.py", PID_APP)]),
        AppDir::new(&[("app.py", PID_APP)]),
    );
    let addr = format!("127.0.0.1:{}", compare::free_port());
    let first = Corral::start(one.path(), &["app:app", "-b", &addr, "--reuse-port"], 1);
    // Without the flag on its side, the address is taken.
    let (code, _, stderr) = run_to_exit(two.path(), &["app:app", "-b", &addr]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(&addr), "{stderr}");
    // From the config file too (CORRAL_REUSE_PORT and the flag say the same).
    std::fs::write(
        two.path().join("corral.toml"),
        format!("[app]\nmodule = \"app:app\"\n[server]\nbind = [\"{addr}\"]\nreuse_port = true\n"),
    )
    .unwrap();
    let second = Corral::start(two.path(), &["-c", "corral.toml"], 1);
    // The kernel spreads new connections between them: in 64, both answer.
    let pids: std::collections::HashSet<String> = (0..64)
        .map(|_| {
            let r = request(&addr, "GET", "/", &[], b"");
            assert_eq!(r.status, 200);
            r.text()
        })
        .collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    // The first one stops; the second serves every new connection alone.
    let mut first = first;
    first.signal(libc::SIGTERM);
    assert!(first.wait_exit(Duration::from_secs(30)).is_some());
    for _ in 0..16 {
        let r = request(&addr, "GET", "/", &[], b"");
        assert_eq!(r.status, 200, "{}", second.log.text());
    }
}

/// The same command started twice with `--reuse-port` (the same folder,
/// app and address: one instance), as gunicorn's users start the next
/// beside the last: the second gets a control socket of its own beside the
/// first's instead of refusing to start, and both serve.
#[test]
fn reuse_port_lets_the_same_command_start_twice() {
    const PID_APP: &str = "import os\n\ndef app(environ, start_response):\n    body = str(os.getpid()).encode()\n    start_response(\"200 OK\", [(\"Content-Length\", str(len(body)))])\n    return [body]\n";
    let app = AppDir::new(&[("app.py", PID_APP)]);
    let runtime = tempfile::tempdir().unwrap();
    let rt = runtime.path().to_str().unwrap().to_string();
    let addr = format!("127.0.0.1:{}", compare::free_port());
    let args = ["app:app", "-w", "1", "-b", &addr, "--reuse-port"];
    let env = [("XDG_RUNTIME_DIR", rt.as_str())];
    let mut first = Corral::spawn_default_socket(app.path(), &args, &env);
    first.wait_listening();
    first.wait_in_service(1);
    let mut second = Corral::spawn_default_socket(app.path(), &args, &env);
    second.wait_listening();
    second.wait_in_service(1);
    assert!(
        second.log.has("this one's control socket is"),
        "{}",
        second.log.text()
    );
    let mut folders: Vec<String> = std::fs::read_dir(runtime.path().join("corral"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    folders.sort();
    assert_eq!(folders.len(), 2, "{folders:?}");
    assert_eq!(format!("{}-2", folders[0]), folders[1]);
    let pids: std::collections::HashSet<String> = (0..64)
        .map(|_| request(&addr, "GET", "/", &[], b"").text())
        .collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    first.signal(libc::SIGTERM);
    assert!(first.wait_exit(Duration::from_secs(30)).is_some());
    second.signal(libc::SIGTERM);
    assert!(second.wait_exit(Duration::from_secs(30)).is_some());
}

const STREAMED_APP: &str = r#"
def app(environ, start_response):
    if environ["PATH_INFO"] == "/streamed":
        start_response("200 OK", [("Content-Type", "text/plain")])
        def parts():
            yield b"x"
            yield b"y"
        return parts()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"xy"]
"#;

const STREAMED_ASGI_APP: &str = r#"
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"x", "more_body": True})
    await send({"type": "http.response.body", "body": b"y"})
"#;

/// `GET path` as HTTP/1.0 with `Connection: keep-alive`, on a connection of
/// its own: the answer (read to the connection's end when it has no
/// length), and whether the same connection then answers the request again.
fn http10_keep_alive(addr: &str, path: &str) -> (Response, bool) {
    use std::io::{BufReader, Write};
    let mut s = connect(addr);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let first = read_response(&mut r, false).expect("an answer");
    let again = s.write_all(head.as_bytes()).is_ok()
        && read_response(&mut r, false).is_ok_and(|a| a.status == 200);
    (first, again)
}

/// gunicorn with two threads (so that it keeps connections alive) serving
/// `app:app` from `dir`, accepting connections.
fn gunicorn_threads(dir: &Path) -> compare::Reference {
    let bin = Path::new(&python()).with_file_name("gunicorn");
    let addr = format!("127.0.0.1:{}", compare::free_port());
    let mut cmd = Command::new(bin);
    // gunicorn 25.1 and later open a control socket in $HOME: one of its own.
    cmd.args([
        "app:app",
        "-w",
        "1",
        "--threads",
        "2",
        "-b",
        &addr,
        "--chdir",
    ])
    .arg(dir)
    .current_dir(dir)
    .env("HOME", dir);
    compare::Reference::start("gunicorn", cmd, addr, Duration::from_secs(30))
}

/// An HTTP/1.0 client asking for keep-alive, answered with a body of no
/// length (HTTP/1.0 has no chunks): the body ends where the connection
/// does, so the answer says `Connection: close`, as gunicorn's does. hyper
/// alone said `Connection: keep-alive` and then closed. An answer with a
/// length keeps the connection, as under gunicorn's threads.
#[test]
fn an_http10_keep_alive_answer_without_a_length_says_the_connection_closes() {
    let app = AppDir::new(&[("app.py", STREAMED_APP)]);
    let asgi = AppDir::new(&[("app.py", STREAMED_ASGI_APP)]);
    let c = Corral::start(app.path(), &["app:app", "-w", "1"], 1);
    let a = Corral::start(asgi.path(), &["app:app", "-w", "1"], 1);
    let g = gunicorn_threads(app.path());
    for (name, addr, path) in [
        ("gunicorn", g.addr.as_str(), "/streamed"),
        ("corral", c.addr.as_str(), "/streamed"),
        ("corral (ASGI)", a.addr.as_str(), "/"),
    ] {
        let (r, again) = http10_keep_alive(addr, path);
        assert_eq!((r.status, r.text().as_str()), (200, "xy"), "{name}: {r:?}");
        assert!(
            r.header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close")),
            "{name} must say the connection closes: {r:?}"
        );
        assert!(!again, "{name} served again on a closed connection");
    }
    for (name, addr) in [("gunicorn", g.addr.as_str()), ("corral", c.addr.as_str())] {
        let (r, again) = http10_keep_alive(addr, "/sized");
        assert_eq!((r.status, r.text().as_str()), (200, "xy"), "{name}: {r:?}");
        assert!(
            r.header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("keep-alive")),
            "{name}: {r:?}"
        );
        assert!(again, "{name} closed a keep-alive connection");
    }
}

/// A request over a Unix socket has no peer port: no `REMOTE_PORT` in the
/// environ, as under gunicorn (not an empty one, which `int()` fails on),
/// and `REMOTE_ADDR` empty; over TCP both are there.
#[test]
fn a_unix_socket_request_has_no_remote_port_as_under_gunicorn() {
    const PEER_APP: &str = r#"
import json

def app(environ, start_response):
    body = json.dumps({k: environ[k] for k in ("REMOTE_ADDR", "REMOTE_PORT") if k in environ}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
"#;
    let app = AppDir::new(&[("app.py", PEER_APP)]);
    let sock = app.path().join("app.sock");
    let unix = format!("unix:{}", sock.display());
    let c = Corral::start(
        app.path(),
        &["app:app", "-w", "1", "-b", "127.0.0.1:0", "-b", &unix],
        1,
    );
    let r = get_unix(&sock);
    assert_eq!(r.status, 200, "{}", r.text());
    let env = r.json();
    assert_eq!(
        env.get("REMOTE_ADDR"),
        Some(&serde_json::json!("")),
        "{env:?}"
    );
    assert!(!env.contains_key("REMOTE_PORT"), "{env:?}");
    let env = c.get("/").json();
    assert_eq!(
        env.get("REMOTE_ADDR"),
        Some(&serde_json::json!("127.0.0.1"))
    );
    assert!(
        env["REMOTE_PORT"]
            .as_str()
            .is_some_and(|p| p.parse::<u16>().is_ok()),
        "{env:?}"
    );
}

/// Two framings gunicorn and uvicorn answer with 400 are served, as RFC
/// 9112 allows: `chunked` beside a `Content-Length` is read as chunked,
/// the length never reaches the app, and the connection closes after the
/// answer, so what a proxy framing by the length sent next is never read
/// as a request; the same `Content-Length` twice counts once.
#[test]
fn chunked_beside_a_content_length_is_read_as_chunked_and_ends_the_connection() {
    use std::io::{BufReader, Read, Write};
    const ECHO_APP: &str = r#"
import json

def app(environ, start_response):
    body = json.dumps({"length": environ.get("CONTENT_LENGTH"),
                       "body": environ["wsgi.input"].read().decode(),
                       "path": environ["PATH_INFO"]}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
"#;
    let app = AppDir::new(&[("app.py", ECHO_APP)]);
    let c = Corral::start(app.path(), &["app:app", "-w", "1"], 1);
    let mut s = connect(&c.addr);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n\
          3\r\nabc\r\n0\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let first = read_response(&mut r, false).expect("an answer");
    assert_eq!(first.status, 200, "{}", first.text());
    let seen = first.json();
    assert_eq!(seen["body"], "abc", "{seen:?}");
    assert_eq!(seen["length"], serde_json::Value::Null, "{seen:?}");
    assert_eq!(first.header("connection"), Some("close"), "{first:?}");
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "answered after the connection's last request: {}",
        String::from_utf8_lossy(&rest)
    );

    let r = request(
        &c.addr,
        "POST",
        "/twice",
        &[("Content-Length", "3"), ("Content-Length", "3")],
        b"abc",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.json();
    assert_eq!(
        (&seen["length"], &seen["body"]),
        (&serde_json::json!("3"), &serde_json::json!("abc"))
    );
}

/// A request with two `Content-Type` lines gets 400 before any worker sees
/// it, as from gunicorn: a WSGI app would get them joined ("a/b, c/d"),
/// where a proxy or filter in front may have read the first alone.
#[test]
fn a_repeated_content_type_gets_400_as_from_gunicorn() {
    let app = AppDir::new(&[("app.py", APP)]);
    let c = Corral::start(
        app.path(),
        &["app:app", "-w", "1", "--status-bind", "127.0.0.1:0"],
        1,
    );
    let served = || c.status_json()["slots"][0]["worker"]["requests"].as_u64();
    let before = served().expect("a count of requests served");
    let g = gunicorn_threads(app.path());
    for (name, addr) in [("gunicorn", g.addr.as_str()), ("corral", c.addr.as_str())] {
        let r = request(
            addr,
            "POST",
            "/x",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Content-Type", "multipart/form-data; boundary=b"),
            ],
            b"a=1",
        );
        assert_eq!(r.status, 400, "{name}: {}", r.text());
        let r = request(
            addr,
            "POST",
            "/x",
            &[("Content-Type", "text/plain")],
            b"a=1",
        );
        assert_eq!(r.status, 200, "{name}: {}", r.text());
    }
    assert_eq!(
        served(),
        Some(before + 1),
        "the refused request reached the worker"
    );
}

/// A gunicorn.conf.py that starts a helper in the background (a
/// `subprocess.Popen` of a sidecar, a forked process) as gunicorn runs it
/// and goes on: corral waited for the end of the file's output, which the
/// helper held, so `import-gunicorn`, `corral -c gunicorn.conf.py` and
/// each reload hung for as long as the helper lived. And what a command
/// the file runs printed (`subprocess.run(["git", ...])`) went into the
/// settings corral reads: "unexpected output". The helpers are killed
/// when the test ends.
#[test]
fn a_gunicorn_conf_that_leaves_helpers_running_is_read_without_waiting_for_them() {
    const CONF: &str = r#"
import os, subprocess, sys, time
subprocess.run(["echo", "hello from a command"])
pids = open("helpers.pid", "a")
p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], stderr=subprocess.DEVNULL)
pids.write(f"{p.pid}\n")
pid = os.fork()
if pid == 0:
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    time.sleep(60)
    os._exit(0)
pids.write(f"{pid}\n")
pids.close()
workers = 3
"#;
    struct Helpers(std::path::PathBuf);
    impl Drop for Helpers {
        fn drop(&mut self) {
            let pids = std::fs::read_to_string(&self.0).unwrap_or_default();
            for pid in pids.lines().filter_map(|l| l.parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let app = AppDir::new(&[("app.py", APP), ("gunicorn.conf.py", CONF)]);
    let _helpers = Helpers(app.path().join("helpers.pid"));
    // The helpers hold corral's stderr, as a helper gunicorn's config
    // starts holds gunicorn's: a file here, not a pipe the test reads to
    // its end.
    let stderr = app.path().join("stderr");
    let mut child = Command::new(corral_bin())
        .current_dir(app.path())
        .args(["import-gunicorn", "gunicorn.conf.py", "--python", &python()])
        .env_remove("VIRTUAL_ENV")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("start corral");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let toml = String::from_utf8_lossy(&out.stdout);
    let log = std::fs::read_to_string(&stderr).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "not read in 20 s: {log}"
    );
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(toml.contains("count = 3"), "{toml}");
    // A command's output goes where the file's prints go.
    assert!(log.contains("hello from a command"), "{log}");
}

/// The interpreter the file was read with (`--python`, or the
/// virtualenv's) is the converted file's `[app] python`: without it the
/// file, started by a unit that sets no `VIRTUAL_ENV`, ran the app with
/// the `python3` on PATH, which has none of the app's packages.
#[test]
fn import_gunicorn_writes_the_interpreter_it_read_the_file_with() {
    let app = AppDir::new(&[("app.py", APP), ("gunicorn.conf.py", "workers = 3\n")]);
    let (toml, _) = import_gunicorn(app.path(), "gunicorn.conf.py");
    let table: toml::Table = toml.parse().unwrap();
    assert_eq!(
        table["app"]["python"].as_str(),
        Some(python().as_str()),
        "{toml}"
    );
    // The converted file serves with it, given nothing else.
    std::fs::write(app.path().join("corral.toml"), &toml).unwrap();
    let c = Corral::start(app.path(), &["-c", "corral.toml", "app:app"], 3);
    assert_eq!(c.get("/").status, 200);
}
