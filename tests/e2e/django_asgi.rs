//! A Django project served through Django's own ASGI handler
//! (`djasgi.asgi:application`, laid out as `django-admin startproject`
//! writes it: `DJANGO_SETTINGS_MODULE` set in `asgi.py`) answers through
//! corral as through uvicorn, the way Django users deploy it (`uvicorn
//! project.asgi:application`, `gunicorn -k uvicorn.workers.UvicornWorker`).
//!
//! Each comparison starts both servers on one copy of the project, one
//! worker process each, sends both the same requests and compares the
//! answers as `frameworks_asgi` does (status line, headers but those that
//! describe the connection, body bytes), the port each server listens on
//! replaced by `PORT` (Django's `SERVER_PORT` is the port of the ASGI
//! scope's `server`).
//!
//! The project lives in `tests/apps/django_asgi/`. It needs Django and
//! uvicorn in the interpreter the tests use: `./test.sh` installs them into
//! `.venv`.

use crate::common::compare::*;
use crate::common::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Longest wait for uvicorn to accept connections, for the Python probe to
/// answer, or for a view's cancellation to show.
const START_TIMEOUT: Duration = Duration::from_secs(20);

const SPEC: &str = "djasgi.asgi:application";

const FILES: &[(&str, &str)] = &[
    (
        "djasgi/__init__.py",
        include_str!("../apps/django_asgi/djasgi/__init__.py"),
    ),
    (
        "djasgi/settings.py",
        include_str!("../apps/django_asgi/djasgi/settings.py"),
    ),
    (
        "djasgi/urls.py",
        include_str!("../apps/django_asgi/djasgi/urls.py"),
    ),
    (
        "djasgi/views.py",
        include_str!("../apps/django_asgi/djasgi/views.py"),
    ),
    (
        "djasgi/asgi.py",
        include_str!("../apps/django_asgi/djasgi/asgi.py"),
    ),
];

/// Panics, saying what to do, unless `python()` can import what these
/// tests serve.
fn check_python() {
    require_modules(
        "django, uvicorn",
        "a real Django project through its ASGI handler",
    );
}

/// `python -m uvicorn djasgi.asgi:application --port PORT` in `dir` (one
/// process, lifespan `auto` as by default), with `args` and `env` added.
fn uvicorn(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Reference {
    let port = free_port();
    let mut cmd = Command::new(python());
    cmd.args(["-m", "uvicorn", SPEC, "--host", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .args(["--no-access-log", "--app-dir"])
        .arg(dir)
        .args(args)
        .current_dir(dir)
        .env_remove("WEB_CONCURRENCY")
        .env_remove("DJANGO_SETTINGS_MODULE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Reference::start("uvicorn", cmd, format!("127.0.0.1:{port}"), START_TIMEOUT)
}

/// Both servers on one copy of the project, one worker process each;
/// `args` go to both (uvicorn's flags corral takes too), `debug` sets
/// Django's DEBUG (uvicorn gets it in its environment, corral by `-e`).
fn start_servers(args: &[&str], debug: bool) -> Servers {
    check_python();
    let env: &[(&str, &str)] = if debug { &[("DJASGI_DEBUG", "1")] } else { &[] };
    let mut corral_args = vec![SPEC, "-w", "1"];
    corral_args.extend_from_slice(args);
    if debug {
        corral_args.extend(["-e", "DJASGI_DEBUG=1"]);
    }
    Servers::start(
        "Django (ASGI)",
        FILES,
        |dir| uvicorn(dir, args, env),
        &corral_args,
        1,
    )
}

/// `resp` with every occurrence of `addr`'s port in its body made `PORT`.
fn without_port(mut resp: Response, addr: &str) -> Response {
    let port = addr.rsplit(':').next().unwrap().as_bytes();
    let mut body = Vec::with_capacity(resp.body.len());
    let mut rest = &resp.body[..];
    while !rest.is_empty() {
        if rest.starts_with(port) {
            body.extend_from_slice(b"PORT");
            rest = &rest[port.len()..];
        } else {
            body.push(rest[0]);
            rest = &rest[1..];
        }
    }
    resp.body = body;
    resp
}

/// Sends `reqs` in order to both servers and fails with a readable diff of
/// every request they answered differently, or not as expected.
fn same_answers(servers: &Servers, reqs: &[Req]) {
    assert_same_answers(servers, reqs, |req| {
        servers
            .both()
            .map(|(_, addr)| req.send_to(addr).map(|r| without_port(r, addr)))
    });
}

/// A multipart/form-data body with one file field `f` holding `data` and
/// one text field `note`; its content type.
fn multipart(data: &[u8]) -> (String, Vec<u8>) {
    let boundary = "corral-django-boundary-7f3a";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nnaïve \
             café\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"f\"; \
             filename=\"data.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Async and sync views, request.META, streaming (async and sync
/// iterators), FileResponse, uploads spooled to a temporary file, the
/// form-size limit, CSRF, 404 and 500: the same answers from corral as from
/// uvicorn.
#[test]
fn django_asgi_answers_as_uvicorn() {
    let servers = start_servers(&[], false);
    let (small_type, small) = multipart(&binary(3000));
    let (big_type, big) = multipart(&binary(300_000));
    let form_over_limit = format!("x={}", "a".repeat(6000));
    same_answers(
        &servers,
        &[
            Req::get("async view", "/").expect(200, "hello from an async view"),
            Req::get("sync view, in a thread", "/sync/").expect(200, "sync view in a thread"),
            Req::get("META", "/meta/?a=1&b=%C3%A9&b=2&empty=&sp=a+b")
                .header("X-Custom", "custom value")
                .header("User-Agent", "corral-test")
                .header("Accept-Language", "fr-CH, fr;q=0.9")
                .expect(200, r#""QUERY_STRING": "a=1&b=%C3%A9&b=2&empty=&sp=a+b""#),
            Req::get("non-ASCII path", "/caf%C3%A9/?q=%E2%82%AC")
                .expect(200, r#""path_info": "/caf\u00e9/""#),
            Req::get("is_secure from a trusted proxy", "/meta/")
                .header("X-Forwarded-Proto", "https")
                .header("X-Forwarded-For", "203.0.113.7")
                .expect(200, r#""secure": true"#),
            Req::get("cookies", "/meta/")
                .header("Cookie", "a=1; b=caf%C3%A9; c=\"quoted\"")
                .expect(200, r#""a": "1""#),
            Req::get("StreamingHttpResponse, async iterator", "/astream/")
                .expect(200, "async chunk 2\n"),
            Req::get("StreamingHttpResponse, sync iterator", "/sstream/")
                .expect(200, "sync chunk 2\n"),
            Req::get("FileResponse", "/file/").expect(200, "def fileresp(request)"),
            Req::new("HEAD of a stream", "HEAD", "/astream/"),
            Req::post(
                "upload over FILE_UPLOAD_MAX_MEMORY_SIZE",
                "/upload/",
                &small_type,
                small,
            )
            .expect(200, "TemporaryUploadedFile"),
            Req::post("upload of 300 KB", "/upload/", &big_type, big)
                .expect(200, r#""size": 300000"#),
            Req::post(
                "form over DATA_UPLOAD_MAX_MEMORY_SIZE",
                "/body/",
                "application/x-www-form-urlencoded",
                form_over_limit,
            )
            .expect(400, "Bad Request"),
            Req::post(
                "POST without a CSRF token",
                "/form/",
                "application/x-www-form-urlencoded",
                "x=1",
            )
            .expect(403, "Forbidden"),
            Req::get("APPEND_SLASH", "/meta?x=1").expect(301, ""),
            Req::get("a Host ALLOWED_HOSTS (*) allows", "/")
                .header("Host", "app.example.com:8443")
                .expect(200, "hello"),
            Req::get("404", "/nowhere/").expect(404, "Not Found"),
            Req::get("500 (DEBUG off)", "/boom/").expect(500, "Server Error (500)"),
        ],
    );
    // CSRF: the token from a GET, with its cookie, lets the POST in.
    for (server, addr) in servers.both() {
        let got = Req::get("token", "/form/").send_to(addr).unwrap();
        let token = got.text();
        let cookie = got
            .header("set-cookie")
            .and_then(|c| c.split(';').next())
            .unwrap_or_else(|| panic!("{server}: no csrftoken cookie: {got:?}"))
            .to_string();
        let post = Req::post(
            "POST with the token",
            "/form/",
            "application/x-www-form-urlencoded",
            format!("x=yes&csrfmiddlewaretoken={token}"),
        )
        .header("Cookie", &cookie)
        .send_to(addr)
        .unwrap();
        assert_eq!(
            (post.status, post.text()),
            (200, "accepted yes".to_string()),
            "{server}"
        );
    }
}

/// The project mounted under a prefix (`--root-path /api`, which both
/// servers take; Django's `FORCE_SCRIPT_NAME` unset): a request the proxy
/// stripped the prefix from gets SCRIPT_NAME `/api` and its own path, under
/// both; one that still carries it is served by corral (uvicorn would look
/// for `/api/api/...`: README, `--root-path`).
#[test]
fn django_asgi_root_path() {
    let servers = start_servers(&["--root-path", "/api"], false);
    same_answers(
        &servers,
        &[
            Req::get("stripped by the proxy", "/meta/?x=1").expect(200, r#""SCRIPT_NAME": "/api""#),
            Req::get("non-ASCII, stripped", "/caf%C3%A9/")
                .expect(200, r#""absolute": "http://localhost/api/caf%C3%A9/""#),
        ],
    );
    let resp = servers.corral.get("/api/meta/");
    assert_eq!(resp.status, 200, "{resp:?}");
    let json = resp.json();
    assert_eq!(json["path"], "/api/meta/", "{json:?}");
    assert_eq!(json["path_info"], "/meta/", "{json:?}");
}

/// Reads a streamed response's head and first `n` bytes of body from a
/// fresh connection, then drops the connection (the client leaves).
fn leave_mid_stream(server: &str, addr: &str, path: &str, n: usize) {
    let mut s = connect_with_timeouts(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{server}: {line:?}");
    let mut got = vec![0; n];
    r.read_exact(&mut got)
        .unwrap_or_else(|e| panic!("{server}: reading {path}: {e}"));
}

/// Polls GET /events/ until it answers `want`.
fn wait_for_events(servers: &Servers, server: &str, addr: &str, want: &str) {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let got = Req::get("events", "/events/").send_to(addr);
        if got.as_ref().is_ok_and(|r| r.text() == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{server}: /events/ never showed {want}; last answer: {got:?}\n{}",
            servers.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A client that leaves mid-stream, or while an async view waits: Django
/// cancels the view's task (it listens for `http.disconnect`), under corral
/// as under uvicorn, and corral's log says nothing about it. It used to log
/// "ASGI app returned without completing the response to GET /slow/" for
/// every client that left a Django stream: Django's handler returns once
/// it has cancelled the response, which is no fault of the app.
#[test]
fn django_asgi_client_leaving_cancels_the_view_quietly() {
    let servers = start_servers(&[], false);
    for (server, addr) in servers.both() {
        leave_mid_stream(server, addr, "/slow/", 10_000);
        wait_for_events(
            &servers,
            server,
            addr,
            r#"["stream: CancelledError", "stream: finally"]"#,
        );
        let mut s = connect_with_timeouts(addr).unwrap();
        s.write_all(b"GET /long/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        drop(s);
        wait_for_events(
            &servers,
            server,
            addr,
            r#"["stream: CancelledError", "stream: finally", "view: CancelledError"]"#,
        );
    }
    // The worker serves on.
    assert_eq!(servers.corral.get("/").status, 200);
    let log = servers.corral.log.text();
    assert!(
        !log.contains("without completing") && !log.contains("ERROR"),
        "a client leaving is logged as the app's fault:\n{log}"
    );
}

/// Django's ASGI handler refuses the lifespan protocol (it raises
/// ValueError); with `auto`, the default, corral serves it as uvicorn does:
/// `corral check` says OK (and that the app runs without lifespan), the
/// gunicorn command line with `-k uvicorn.workers.UvicornWorker` boots
/// each worker (each importing Django on its own), each says once that the
/// app refused the lifespan, with Django's reason, and no error is logged;
/// `--asgi-lifespan on` refuses it with the reason. Before, nothing said
/// the lifespan did not run.
#[test]
fn django_asgi_boots_without_lifespan() {
    check_python();
    let dir = AppDir::new(FILES);
    let (code, stdout, stderr) =
        crate::gunicorn_compat::run_to_exit(dir.path(), &["check", SPEC, "--python", &python()]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("OK: djasgi.asgi:application imported in")
            && stdout.contains(
                "(ASGI app, without lifespan: the app does not support it; worker booted"
            ),
        "{stdout}{stderr}"
    );
    let (code, stdout, stderr) = crate::gunicorn_compat::run_to_exit(
        dir.path(),
        &[
            "check",
            SPEC,
            "--asgi-lifespan",
            "on",
            "--python",
            &python(),
        ],
    );
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains(
            "the app does not support the lifespan protocol, and asgi_lifespan is \"on\""
        ) && stdout.contains("Django can only handle ASGI/HTTP connections, not lifespan."),
        "{stdout}{stderr}"
    );
    // gunicorn's documented command line for Django's ASGI handler,
    // renamed.
    let c = Corral::start(
        dir.path(),
        &[
            "-k",
            "uvicorn.workers.UvicornWorker",
            "-w",
            "2",
            "--status-bind",
            "127.0.0.1:0",
            SPEC,
        ],
        2,
    );
    let mut pids = std::collections::BTreeSet::new();
    let status = c.status_json();
    for slot in status["slots"].as_array().expect("slots in /status") {
        assert_eq!(slot["worker"]["interface"], "asgi", "{slot}");
        pids.insert(slot["worker"]["pid"].as_u64().unwrap());
    }
    assert_eq!(pids.len(), 2, "{status}");
    for _ in 0..4 {
        let resp = c.get("/");
        assert_eq!(
            (resp.status, resp.text()),
            (200, "hello from an async view".to_string())
        );
    }
    // The workers' stderr lines can arrive after the answers.
    c.log.wait_count(
        "the app does not support the ASGI lifespan protocol",
        2,
        Duration::from_secs(10),
    );
    let log = c.log.text();
    assert_eq!(log.matches(" booted in ").count(), 2, "{log}");
    // Said once by each worker, as uvicorn says "ASGI 'lifespan' protocol
    // appears unsupported.", with Django's reason.
    assert_eq!(
        log.matches(
            "stderr: corral worker: the app does not support the ASGI lifespan protocol (it \
             raised ValueError: Django can only handle ASGI/HTTP connections, not lifespan.): \
             serving it without one"
        )
        .count(),
        2,
        "{log}"
    );
    assert!(
        !log.contains("ERROR") && !log.contains("Traceback"),
        "Django's refusal of the lifespan is logged as an error:\n{log}"
    );
}

/// Django's errors, as a Django user looks for them: with DEBUG on,
/// Django logs a view's exception (and a 404) to stderr, which reaches
/// corral's log as uvicorn's, and answers its debug page; an import error
/// in the settings fails `corral check` and the boot with its traceback.
#[test]
fn django_asgi_errors_in_the_log() {
    let servers = start_servers(&[], true);
    for (server, addr) in servers.both() {
        let resp = Req::get("boom", "/boom/").send_to(addr).unwrap();
        assert_eq!(resp.status, 500, "{server}");
        assert!(
            resp.text().contains("boom in a Django view"),
            "{server}: no debug page"
        );
        let resp = Req::get("404", "/nowhere/").send_to(addr).unwrap();
        assert_eq!(resp.status, 404, "{server}");
    }
    for (name, log) in [
        ("uvicorn", &servers.reference.log),
        ("corral", &servers.corral.log),
    ] {
        for needle in [
            "Internal Server Error: /boom/",
            "RuntimeError: boom in a Django view",
            "Not Found: /nowhere/",
        ] {
            assert!(
                log.wait_for(needle, START_TIMEOUT).is_some(),
                "{name}: no {needle:?} in the log:\n{}",
                log.text()
            );
        }
    }

    // Django caught the exception itself: it is not corral's record of
    // an exception the app raised.
    assert!(
        !servers.corral.log.text().contains("Error handling request"),
        "{}",
        servers.logs()
    );

    let dir = AppDir::new(FILES);
    let settings = dir.path().join("djasgi/settings.py");
    let mut text = std::fs::read_to_string(&settings).unwrap();
    text.push_str("\nimport djasgi_missing_module\n");
    std::fs::write(&settings, text).unwrap();
    let (code, stdout, stderr) =
        crate::gunicorn_compat::run_to_exit(dir.path(), &["check", SPEC, "--python", &python()]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    for needle in [
        "FAILED: djasgi.asgi:application does not boot",
        "djasgi/settings.py\", line",
        "ModuleNotFoundError: No module named 'djasgi_missing_module'",
    ] {
        assert!(
            stdout.contains(needle),
            "no {needle:?} in:\n{stdout}{stderr}"
        );
    }
    let c = Corral::spawn(dir.path(), &[SPEC, "-w", "1"], &[]);
    assert!(
        c.log
            .wait_for(
                "ModuleNotFoundError: No module named 'djasgi_missing_module'",
                START_TIMEOUT
            )
            .is_some(),
        "{}",
        c.log.text()
    );
}

/// A production-like ALLOWED_HOSTS (with Django's CommonMiddleware, which
/// checks every request's Host) answers corral's readiness probe, sent
/// with `Host: localhost`, 400: every worker failed its readiness, and the
/// reason given was a bare "answered 400" and Django's 400 page. corral now
/// says which Host the probe sent and that ALLOWED_HOSTS must allow it;
/// with "localhost" added, the probe passes. Likewise SECURE_SSL_REDIRECT,
/// whose 301 now says where to and that SECURE_REDIRECT_EXEMPT must list
/// the path.
#[test]
fn django_asgi_readiness_probe_and_allowed_hosts() {
    check_python();
    let dir = AppDir::new(FILES);
    let python = python();
    // The check probes until the boot timeout: a short one.
    let args = [
        "check",
        SPEC,
        "--ready-path",
        "/pid/",
        "--boot-timeout",
        "3s",
        "--python",
        &python,
    ];
    let env = [("DJASGI_ALLOWED_HOSTS", "app.example.com")];
    let (code, stdout, stderr) =
        crate::gunicorn_compat::run_to_exit_with_env(dir.path(), &args, &env);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains(
            "its readiness check failed: GET /pid/ answered 400 (the probe is sent with \"Host: \
             localhost\": an app that checks the Host, as Django does with ALLOWED_HOSTS, must \
             allow \"localhost\"): <!doctype html>"
        ),
        "{stdout}{stderr}"
    );
    let env = [("DJASGI_ALLOWED_HOSTS", "app.example.com,localhost")];
    let (code, stdout, stderr) =
        crate::gunicorn_compat::run_to_exit_with_env(dir.path(), &args, &env);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("readiness GET /pid/ passed"),
        "{stdout}{stderr}"
    );
    // SECURE_SSL_REDIRECT sends the probe, plain http from no proxy, to
    // https: the failure said only "answered 301".
    let env = [("DJASGI_SSL_REDIRECT", "1")];
    let (code, stdout, stderr) =
        crate::gunicorn_compat::run_to_exit_with_env(dir.path(), &args, &env);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains(
            "its readiness check failed: GET /pid/ answered 301 to \"https://localhost/pid/\" (the \
             probe is a plain http request from no proxy: an app that redirects those to https, \
             as Django does with SECURE_SSL_REDIRECT, must exempt the path, in Django's \
             SECURE_REDIRECT_EXEMPT)"
        ),
        "{stdout}{stderr}"
    );
    let env = [
        ("DJASGI_SSL_REDIRECT", "1"),
        ("DJASGI_REDIRECT_EXEMPT", "^pid/$"),
    ];
    let (code, stdout, stderr) =
        crate::gunicorn_compat::run_to_exit_with_env(dir.path(), &args, &env);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
}
