//! corral where gunicorn, uvicorn and granian run today: the app gets the
//! environment, `$PORT` and `$WEB_CONCURRENCY` are honoured, every flag can
//! be set as `CORRAL_<FLAG>`, `workers = "auto"` counts the CPUs the process
//! may use, app factories are called (with literal arguments only), and
//! `--root-path` reaches WSGI and ASGI apps as their frameworks expect, and
//! `$FORWARDED_ALLOW_IPS` is the default list of trusted proxies.

use crate::common::*;

use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

/// An app that answers with the environment it sees, as JSON.
const ENV_APP: &str = "import os, json\n\n\
def app(environ, start_response):\n    \
    body = json.dumps(dict(os.environ)).encode()\n    \
    start_response('200 OK', [('Content-Type', 'application/json')])\n    \
    return [body]\n";

/// corral (after `prefix`, e.g. `taskset -c 0`) in `dir` with `args` and
/// `env` on top of the test's environment, and none of the harness's
/// defaults but the interpreter and a private control socket.
fn spawn(dir: &Path, prefix: &[&str], args: &[&str], env: &[(&str, &str)]) -> Corral {
    let mut cmd = match prefix {
        [] => Command::new(corral_bin()),
        [program, rest @ ..] => {
            let mut cmd = Command::new(program);
            cmd.args(rest).arg(corral_bin());
            cmd
        }
    };
    let socket = dir.join(".corral-control.sock");
    cmd.current_dir(dir)
        .args(args)
        .arg("--python")
        .arg(python())
        .arg("--socket")
        .arg(&socket)
        .env_remove("VIRTUAL_ENV")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start corral");
    let log = Log::collect(&mut child, "corral");
    Corral {
        child,
        log,
        addr: String::new(),
        status_addr: String::new(),
        socket,
    }
}

/// Runs a corral command to its end (at most 60 s): exit status, stdout,
/// stderr.
fn run(dir: &Path, prefix: &[&str], args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String) {
    let mut c = spawn(dir, prefix, args, env);
    let status = c
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("corral {args:?} did not end; log:\n{}", c.log.text()));
    // `wait_exit` has read its output to the end.
    let text = c.log.text();
    (status, text)
}

fn env_of(c: &Corral) -> serde_json::Map<String, serde_json::Value> {
    let r = c.get("/");
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn the_app_gets_corral_s_environment_but_not_corral_s_own_variables() {
    let app = AppDir::new(&[("main.py", ENV_APP)]);
    let mut c = spawn(
        app.path(),
        &[],
        &["main:app", "-b", "127.0.0.1:0"],
        &[
            ("DATABASE_URL", "postgresql://db/prod"),
            ("SECRET_KEY", "s3cret"),
            ("OTEL_SERVICE_NAME", "shop"),
            ("LISTEN_FDS", "2"),
            ("LISTEN_PID", "1"),
            ("LISTEN_FDNAMES", "a:b"),
            ("WATCHDOG_USEC", "1000000"),
            ("WATCHDOG_PID", "1"),
            ("CORRAL_STATUS_TOKEN", "0123456789abcdef0123"),
            ("CORRAL_MAX_REQUESTS", "1000"),
        ],
    );
    c.wait_listening();
    c.wait_in_service(1);
    let env = env_of(&c);
    for (name, value) in [
        ("DATABASE_URL", "postgresql://db/prod"),
        ("SECRET_KEY", "s3cret"),
        ("OTEL_SERVICE_NAME", "shop"),
        ("CORRAL_SLOT", "0"),
        ("CORRAL_GENERATION", "1"),
    ] {
        assert_eq!(
            env.get(name).and_then(|v| v.as_str()),
            Some(value),
            "{name}"
        );
    }
    for name in [
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "CORRAL_STATUS_TOKEN",
        "CORRAL_MAX_REQUESTS",
        "CORRAL_WORKER_APP",
        "CORRAL_WORKER_FD",
        "CORRAL_WORKER_SERVER_SOFTWARE",
    ] {
        assert!(!env.contains_key(name), "{name} reached the app");
    }
}

#[test]
fn env_allow_restricts_and_env_flags_override() {
    let app = AppDir::new(&[
        ("main.py", ENV_APP),
        (
            "corral.toml",
            "[app]\nmodule = \"main:app\"\nenv_allow = [\"PATH\", \"DATABASE_*\"]\n\
             [app.env]\nFROM_FILE = \"file\"\nDATABASE_POOL = \"file\"\n\
             [server]\nbind = [\"127.0.0.1:0\"]\n",
        ),
    ]);
    let mut c = spawn(
        app.path(),
        &[],
        &[
            "-c",
            "corral.toml",
            "--env",
            "DATABASE_URL=postgresql://flag",
        ],
        &[
            ("DATABASE_URL", "postgresql://environment"),
            ("DATABASE_POOL", "5"),
            ("DATABASE_REPLICA", "postgresql://replica"),
            ("SECRET_KEY", "s3cret"),
        ],
    );
    c.wait_listening();
    c.wait_in_service(1);
    let env = env_of(&c);
    let get = |name: &str| env.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    // --env over [app.env] over the inherited value.
    assert_eq!(get("DATABASE_URL").as_deref(), Some("postgresql://flag"));
    assert_eq!(get("DATABASE_POOL").as_deref(), Some("file"));
    assert_eq!(
        get("DATABASE_REPLICA").as_deref(),
        Some("postgresql://replica")
    );
    assert_eq!(get("FROM_FILE").as_deref(), Some("file"));
    assert!(get("PATH").is_some());
    for name in ["SECRET_KEY", "HOME", "NO_COLOR"] {
        assert!(get(name).is_none(), "{name} is not in env_allow");
    }
}

#[test]
fn the_old_pass_env_keeps_its_meaning_and_warns() {
    let app = AppDir::new(&[
        ("main.py", ENV_APP),
        (
            "corral.toml",
            "[app]\nmodule = \"main:app\"\npass_env = [\"DATABASE_URL\"]\n",
        ),
    ]);
    let mut c = spawn(
        app.path(),
        &[],
        &["-c", "corral.toml", "-b", "127.0.0.1:0"],
        &[("DATABASE_URL", "postgresql://db"), ("SECRET_KEY", "s")],
    );
    c.wait_listening();
    c.wait_in_service(1);
    let env = env_of(&c);
    assert!(env.contains_key("DATABASE_URL") && env.contains_key("PATH"));
    assert!(!env.contains_key("SECRET_KEY"));
    assert!(
        c.log
            .count("corral.toml:3 (key app.pass_env): pass_env is deprecated")
            == 1,
        "{}",
        c.log.text()
    );
}

/// `sh -c` that brings up the loopback interface of a fresh network
/// namespace and runs the rest: `0.0.0.0:$PORT` is then reachable from this
/// namespace only.
const NETNS: &[&str] = &[
    "unshare",
    "--net",
    "sh",
    "-c",
    "ip link set lo up && exec \"$@\"",
    "sh",
];

/// GET http://127.0.0.1:`port``path` from inside the network namespace of
/// `pid`: (status, body).
fn get_in_netns(pid: u32, port: u16, path: &str) -> (u16, String) {
    let script = format!(
        "import urllib.request as u\nr = u.urlopen('http://127.0.0.1:{port}{path}', timeout=20)\n\
         print(r.status)\nprint(r.read().decode())\n"
    );
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .arg(python())
        .arg("-c")
        .arg(script)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("nsenter");
    // Bounded: urlopen gives up after 20 s, and the interpreter then exits.
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child.wait().unwrap();
    let (status, body) = out.split_once('\n').unwrap_or(("0", ""));
    (status.trim().parse().unwrap_or(0), body.trim().to_owned())
}

fn netns_available() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root && (Path::new("/usr/bin/unshare").exists() || Path::new("/bin/unshare").exists())
}

#[test]
fn port_and_web_concurrency_as_on_a_paas() {
    if !netns_available() {
        eprintln!("skipped: needs root for a private network namespace");
        return;
    }
    let app = AppDir::new(&[(
        "main.py",
        "import os\n\ndef app(environ, start_response):\n    \
         start_response('200 OK', [])\n    return [os.environ['CORRAL_SLOT'].encode()]\n",
    )]);
    // No bind and no worker count anywhere: PORT and WEB_CONCURRENCY decide.
    let mut c = spawn(
        app.path(),
        NETNS,
        &["main:app"],
        &[("PORT", "5000"), ("WEB_CONCURRENCY", "2")],
    );
    c.wait_listening();
    assert_eq!(c.addr, "0.0.0.0:5000", "{}", c.log.text());
    c.wait_in_service(2);
    assert!(
        c.log
            .count("starting 2 worker(s) (WEB_CONCURRENCY (environment))")
            == 1,
        "{}",
        c.log.text()
    );
    let (status, body) = get_in_netns(c.pid(), 5000, "/");
    assert_eq!(status, 200);
    assert!(body == "0" || body == "1", "{body}");
}

#[test]
fn a_malformed_port_or_web_concurrency_names_the_variable() {
    let app = AppDir::new(&[("main.py", ENV_APP)]);
    let (status, out) = run(app.path(), &[], &["main:app"], &[("PORT", "http")]);
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(
        out.contains("error: PORT (environment): \"http\" is not a port number"),
        "{out}"
    );
    let (status, out) = run(
        app.path(),
        &[],
        &["main:app", "-b", "127.0.0.1:0"],
        &[("WEB_CONCURRENCY", "two")],
    );
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(
        out.contains("error: WEB_CONCURRENCY (environment): \"two\" is not a number of workers"),
        "{out}"
    );
}

/// A Dockerfile's exec-form `CMD ["corral", "app:app", "-b",
/// "0.0.0.0:$PORT"]` runs no shell, so corral is handed `$PORT` as
/// written: the error says so, and that corral reads PORT (and
/// WEB_CONCURRENCY) by itself, before any port is bound.
#[test]
fn a_variable_no_shell_expanded_is_named_with_the_way_out() {
    let app = AppDir::new(&[("main.py", ENV_APP)]);
    let env = [("PORT", "8080"), ("WEB_CONCURRENCY", "2")];
    for (args, needles) in [
        (
            &["main:app", "-b", "0.0.0.0:$PORT"][..],
            &[
                "\"0.0.0.0:$PORT\": $PORT was not expanded",
                "exec-form CMD",
                "corral binds 0.0.0.0:$PORT itself",
            ][..],
        ),
        (
            &["main:app", "--bind=:${PORT}"],
            &[
                "$PORT was not expanded",
                "corral binds 0.0.0.0:$PORT itself",
            ],
        ),
        (
            &["main:app", "--port", "$PORT"],
            &[
                "$PORT was not expanded",
                "corral binds 0.0.0.0:$PORT itself",
            ],
        ),
        (
            &["main:app", "-b", "127.0.0.1:0", "-w", "$WEB_CONCURRENCY"],
            &[
                "$WEB_CONCURRENCY was not expanded",
                "corral reads WEB_CONCURRENCY itself",
            ],
        ),
        (
            &["main:app", "-b", "0.0.0.0:${APP_PORT}"],
            &["$APP_PORT was not expanded", "$(APP_PORT)"],
        ),
    ] {
        let (status, out) = run(app.path(), &[], args, &env);
        assert_eq!(status.code(), Some(2), "{args:?}: {out}");
        for needle in needles {
            assert!(out.contains(needle), "{args:?}: no {needle:?} in {out}");
        }
        assert!(!out.contains("listening on"), "{args:?}: {out}");
    }
}

#[test]
fn flags_from_the_environment_between_the_command_line_and_the_file() {
    let app = AppDir::new(&[
        ("main.py", ENV_APP),
        (
            "corral.toml",
            "[app]\nmodule = \"main:app\"\n[workers]\ncount = 3\n",
        ),
    ]);
    // The environment over the file; a list variable split at commas.
    let mut c = spawn(
        app.path(),
        &[],
        &["-c", "corral.toml"],
        &[
            ("CORRAL_WORKERS", "2"),
            ("CORRAL_BIND", "127.0.0.1:0,unix:app.sock"),
        ],
    );
    c.wait_listening();
    c.wait_in_service(2);
    assert!(app.path().join("app.sock").exists(), "{}", c.log.text());
    assert_eq!(
        c.log
            .wait_count("listening on ", 2, Duration::from_secs(10)),
        2,
        "{}",
        c.log.text()
    );
    assert_eq!(c.log.count("starting 2 worker(s) (CORRAL_WORKERS)"), 1);
    drop(c);
    // The flag over the environment.
    let mut c = spawn(
        app.path(),
        &[],
        &["-c", "corral.toml", "-w", "1", "-b", "127.0.0.1:0"],
        &[("CORRAL_WORKERS", "2")],
    );
    c.wait_listening();
    c.wait_in_service(1);
    assert_eq!(c.log.count("starting 1 worker(s) (--workers)"), 1);
    drop(c);
    // A variable that names no flag (a typo) is not read, and says so.
    let c = spawn(
        app.path(),
        &[],
        &["-c", "corral.toml", "-b", "127.0.0.1:0"],
        &[("CORRAL_WORKER", "3")],
    );
    warned(c, "CORRAL_WORKER is set", "names no flag");
    // A bad value names the variable.
    let (status, out) = run(
        app.path(),
        &[],
        &["-c", "corral.toml", "-b", "127.0.0.1:0"],
        &[("CORRAL_WORKERS", "0")],
    );
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(
        out.contains("error: CORRAL_WORKERS: must be at least 1"),
        "{out}"
    );
    let (status, out) = run(
        app.path(),
        &[],
        &["-c", "corral.toml", "-b", "127.0.0.1:0"],
        &[("CORRAL_MAX_REQUESTS", "many")],
    );
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(
        out.contains("invalid value 'many' for '--max-requests <N>'")
            && out.contains(
                "note: the value comes from the environment variable CORRAL_MAX_REQUESTS"
            ),
        "{out}"
    );
    let (status, out) = run(app.path(), &[], &["--help"], &[]);
    assert!(status.success());
    for name in [
        "[env: CORRAL_MAX_REQUESTS=]",
        "[env: CORRAL_BIND=]",
        "[env: CORRAL_APP=]",
    ] {
        assert!(out.contains(name), "{name} not in --help:\n{out}");
    }
}

#[test]
fn auto_workers_follow_the_affinity_mask() {
    let app = AppDir::new(&[("main.py", ENV_APP)]);
    let mut c = spawn(
        app.path(),
        &["taskset", "-c", "0"],
        &["main:app", "-w", "auto", "-b", "127.0.0.1:0"],
        &[],
    );
    c.wait_listening();
    c.wait_in_service(1);
    assert_eq!(
        c.log
            .count("starting 1 worker(s) (--workers = auto: affinity mask: 1 CPUs"),
        1,
        "{}",
        c.log.text()
    );
    drop(c);
    let (status, out) = run(
        app.path(),
        &["taskset", "-c", "0"],
        &["check", "main:app", "--workers", "auto"],
        &[],
    );
    assert!(status.success(), "{out}");
    assert!(
        out.contains(
            "`corral run` would start 1 worker(s): --workers = auto: affinity mask: 1 CPUs"
        ),
        "{out}"
    );
}

const FACTORY_APP: &str = "import os\n\n\
def create_app(env='dev', debug=True, tags=()):\n    \
    def app(environ, start_response):\n        \
        start_response('200 OK', [])\n        \
        return [('%s %s %s' % (env, debug, list(tags))).encode()]\n    \
    return app\n\n\
def make_asgi(name='asgi'):\n    \
    async def app(scope, receive, send):\n        \
        if scope['type'] != 'http':\n            \
            return\n        \
        await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n        \
        await send({'type': 'http.response.body', 'body': ('%s %s' % (name, scope['type'])).encode()})\n    \
    return app\n\n\
def broken():\n    \
    raise RuntimeError('no DATABASE_URL configured')\n\n\
def returns_none():\n    \
    return None\n\n\
settings = {'debug': True}\n";

#[test]
fn factories_with_literal_arguments_and_the_factory_flag() {
    let app = AppDir::new(&[("main.py", FACTORY_APP)]);
    for (args, body) in [
        (
            &["main:create_app('prod', debug=False, tags=('a', 1))"][..],
            "prod False ['a', 1]",
        ),
        (&["main:create_app()"], "dev True []"),
        (&["main:create_app", "--factory"], "dev True []"),
        (&["main:make_asgi(name='shop')"], "shop http"),
        (
            &["main:make_asgi", "--factory", "--interface", "asgi"],
            "asgi http",
        ),
    ] {
        let args = [args, &["-b", "127.0.0.1:0"]].concat();
        let mut c = spawn(app.path(), &[], &args, &[]);
        c.wait_listening();
        c.wait_in_service(1);
        assert_eq!(c.get("/").text(), body, "{args:?}");
    }
    // From the environment, as a boolean variable is usually written.
    for value in ["1", "true", "yes"] {
        let env = [("CORRAL_APP", "main:create_app"), ("CORRAL_FACTORY", value)];
        let mut c = spawn(app.path(), &[], &["-b", "127.0.0.1:0"], &env);
        c.wait_listening();
        c.wait_in_service(1);
        assert_eq!(c.get("/").text(), "dev True []", "CORRAL_FACTORY={value}");
    }
}

/// An app factory given without its call (`main:create_app`, as a
/// FastAPI app is often run under uvicorn) is called, as uvicorn calls it,
/// with a warning that says how to say so. Before, corral took it for a
/// WSGI app: `corral check` said OK, and every request got a 500 (with
/// `-k uvicorn.workers.UvicornWorker`, the boot failed).
#[test]
fn an_app_factory_given_without_its_call_is_called_as_uvicorn_does() {
    let app = AppDir::new(&[("main.py", FACTORY_APP)]);
    for (args, interface, body) in [
        (&["main:create_app"][..], "WSGI", "dev True []"),
        (&["main:make_asgi"], "ASGI", "asgi http"),
        (
            &["main:make_asgi", "-k", "uvicorn.workers.UvicornWorker"],
            "ASGI",
            "asgi http",
        ),
    ] {
        let spec = args[0];
        let said = format!(
            "{spec} takes no arguments, so it is an app factory: it is called and what it \
             returns is served, as uvicorn does (write \"{spec}()\" or give --factory to say so)"
        );
        let check = [&["check"][..], args].concat();
        let (status, out) = run(app.path(), &[], &check, &[]);
        assert!(status.success(), "{args:?}: {out}");
        assert!(
            out.contains(&format!("OK: {spec} imported in"))
                && out.contains(&format!("({interface} app"))
                && out.contains(&said),
            "{args:?}: {out}"
        );
        let args = [args, &["-b", "127.0.0.1:0"]].concat();
        let mut c = spawn(app.path(), &[], &args, &[]);
        c.wait_listening();
        c.wait_in_service(1);
        let r = c.get("/");
        assert_eq!((r.status, r.text()), (200, body.to_owned()), "{args:?}");
        assert!(c.log.has(&said), "{}", c.log.text());
    }
}

#[test]
fn a_factory_that_fails_is_a_boot_failure_that_says_why() {
    let app = AppDir::new(&[("main.py", FACTORY_APP)]);
    for (spec, reason) in [
        ("main:broken()", "RuntimeError: no DATABASE_URL configured"),
        (
            "main:returns_none()",
            "TypeError: the app factory main:returns_none() returned NoneType, not a callable app",
        ),
        (
            "main:settings()",
            "TypeError: main:settings is not callable (got dict), so it cannot be an app factory",
        ),
        (
            "main:create_app(os.getcwd())",
            "argument os.getcwd() is not a literal (strings, numbers, True, False, None",
        ),
        ("main:create_app(*[1])", "unpacks *args"),
    ] {
        let (status, out) = run(app.path(), &[], &["check", spec], &[]);
        assert_eq!(status.code(), Some(1), "{spec}: {out}");
        assert!(
            out.contains(&format!("FAILED: {spec} does not boot")) && out.contains(reason),
            "{spec}: {out}"
        );
    }
    // The traceback starts in the app's own factory.
    let (_, out) = run(app.path(), &[], &["check", "main:broken()"], &[]);
    assert!(out.contains("in broken"), "{out}");
    // Arguments are parsed, never evaluated.
    let spec = "main:create_app(__import__('os').system('touch pwned'))";
    let (status, out) = run(app.path(), &[], &["check", spec], &[]);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("is not a literal"), "{out}");
    assert!(!app.path().join("pwned").exists());
    // Under `run`, the failure is in /status like a failed import.
    let mut c = spawn(
        app.path(),
        &[],
        &[
            "main:broken()",
            "-b",
            "127.0.0.1:0",
            "--status-bind",
            "127.0.0.1:0",
        ],
        &[],
    );
    c.wait_listening();
    c.wait_until("the boot error in /status", || {
        c.status_json()
            .to_string()
            .contains("no DATABASE_URL configured")
    });
    assert_eq!(c.get("/").status, 503);
}

const FLASK_APP: &str = "from flask import Flask, request, url_for\n\n\
app = Flask(__name__)\n\n\
@app.route('/items/<int:n>')\n\
def item(n):\n    \
    return {'url': url_for('item', n=n), 'script_name': request.environ['SCRIPT_NAME'],\n            \
            'path_info': request.environ['PATH_INFO']}\n";

const STARLETTE_APP: &str = "from starlette.applications import Starlette\n\
from starlette.responses import JSONResponse\n\
from starlette.routing import Route\n\n\
async def item(request):\n    \
    return JSONResponse({'url': str(request.url_for('item', n=request.path_params['n'])),\n                         \
                         'root_path': request.scope['root_path'], 'path': request.scope['path']})\n\n\
app = Starlette(routes=[Route('/items/{n:int}', item, name='item')])\n";

#[test]
fn root_path_for_wsgi_is_script_name() {
    let app = AppDir::new(&[("main.py", FLASK_APP)]);
    let mut c = spawn(
        app.path(),
        &[],
        &["main:app", "--root-path", "/api", "-b", "127.0.0.1:0"],
        &[],
    );
    c.wait_listening();
    c.wait_in_service(1);
    // Behind a proxy that keeps the prefix, and one that strips it.
    for path in ["/api/items/3", "/items/3"] {
        let r = c.get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let json = r.json();
        assert_eq!(json["url"], "/api/items/3", "{path}");
        assert_eq!(json["script_name"], "/api", "{path}");
        assert_eq!(json["path_info"], "/items/3", "{path}");
    }
    // "/apix" is not under "/api".
    assert_eq!(c.get("/apix/items/3").status, 404);
}

#[test]
fn root_path_for_asgi_is_in_the_scope_as_uvicorn_puts_it() {
    let app = AppDir::new(&[
        ("main.py", STARLETTE_APP),
        (
            "corral.toml",
            "[app]\nmodule = \"main:app\"\nroot_path = \"/api\"\n[server]\nbind = [\"127.0.0.1:0\"]\n",
        ),
    ]);
    let mut c = spawn(app.path(), &[], &["-c", "corral.toml"], &[]);
    c.wait_listening();
    c.wait_in_service(1);
    for path in ["/items/3", "/api/items/3"] {
        let r = c.get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let json = r.json();
        // The harness sends "Host: localhost".
        assert_eq!(json["url"], "http://localhost/api/items/3", "{path}");
        assert_eq!(json["root_path"], "/api", "{path}");
        assert_eq!(json["path"], "/api/items/3", "{path}");
    }
}

/// gunicorn's and uvicorn's `$FORWARDED_ALLOW_IPS`: the default list of
/// trusted proxies, below `--forwarded-allow-ips` and the file.
#[test]
fn forwarded_allow_ips_from_the_environment_as_gunicorn_reads_it() {
    let scheme_app = "def app(environ, start_response):\n    \
        body = environ['wsgi.url_scheme'].encode()\n    \
        start_response('200 OK', [('Content-Length', str(len(body)))])\n    \
        return [body]\n";
    let app = AppDir::new(&[("main.py", scheme_app)]);
    let scheme = |env: &[(&str, &str)]| {
        let mut c = spawn(app.path(), &[], &["main:app", "-b", "127.0.0.1:0"], env);
        c.wait_listening();
        c.wait_in_service(1);
        let r = request(&c.addr, "GET", "/", &[("X-Forwarded-Proto", "https")], b"");
        assert_eq!(r.status, 200, "{}", r.text());
        r.text()
    };
    // By default the loopback proxy is trusted...
    assert_eq!(scheme(&[]), "https");
    // ...and with the variable only the peers it names are: none here, and
    // a network that holds 127.0.0.1.
    assert_eq!(scheme(&[("FORWARDED_ALLOW_IPS", "10.0.0.1")]), "http");
    assert_eq!(scheme(&[("FORWARDED_ALLOW_IPS", "127.0.0.0/8")]), "https");
    // The flag wins over it.
    assert_eq!(
        scheme(&[
            ("FORWARDED_ALLOW_IPS", "10.0.0.1"),
            ("CORRAL_FORWARDED_ALLOW_IPS", "*")
        ]),
        "https"
    );
    // "*" (many images set it for gunicorn, where it only trusted the
    // scheme) is warned about: the client address is then the client's
    // own leftmost X-Forwarded-For entry.
    let c = spawn(
        app.path(),
        &[],
        &["main:app", "-b", "127.0.0.1:0"],
        &[("FORWARDED_ALLOW_IPS", "*")],
    );
    warned(c, "forwarded_allow_ips is \"*\"", "any client may write");
    // ...and so is the time a client then has between requests (see
    // hostile_client's a_clients_idle_connection_is_closed_after_keepalive).
    let c = spawn(
        app.path(),
        &[],
        &["main:app", "-b", "127.0.0.1:0"],
        &[("FORWARDED_ALLOW_IPS", "*")],
    );
    warned(
        c,
        "forwarded_allow_ips is \"*\"",
        "at least 75 s between its requests",
    );
}

/// Once `c` listens, its log has a WARN line with `line` and `saying`.
fn warned(mut c: Corral, line: &str, saying: &str) {
    c.wait_listening();
    let warned = c.log.wait_for(line, Duration::from_secs(5));
    assert!(
        warned.is_some_and(|l| l.contains("WARN") && l.contains(saying)),
        "{}",
        c.log.text()
    );
}

/// corral installed with pip into a conda environment (a conda-based
/// image's `/opt/conda/envs/app/bin/corral`, started by its path with no
/// `conda activate`) runs the app with that environment's python, as it
/// does for a virtualenv's corral; it ran `python3` on PATH, another
/// Python without the app's packages.
#[test]
fn corral_in_a_conda_environment_runs_that_environments_python() {
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join("envs/app");
    std::fs::create_dir_all(env.join("bin")).unwrap();
    std::fs::create_dir_all(env.join("conda-meta")).unwrap();
    std::os::unix::fs::symlink(python(), env.join("bin/python")).unwrap();
    let corral = env.join("bin/corral");
    if std::fs::hard_link(corral_bin(), &corral).is_err() {
        std::fs::copy(corral_bin(), &corral).unwrap();
    }
    let app = AppDir::new(&[(
        "app.py",
        "import sys\n\ndef app(environ, start_response):\n    start_response('200 OK', [])\n    return [sys.executable.encode()]\n",
    )]);
    let python = env.join("bin/python");
    let expected = format!(
        "interpreter: {} (the conda environment corral is installed in ({}))",
        python.display(),
        env.display()
    );
    let check = std::process::Command::new(&corral)
        .args(["check", "app:app"])
        .current_dir(app.path())
        .env_remove("VIRTUAL_ENV")
        .env_remove("CONDA_PREFIX")
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout).into_owned()
        + &String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(0), "{said}");
    assert!(said.contains(&expected), "{said}");

    let mut c = Corral::spawn_with(app.path(), &["app:app"], &[], |cmd| {
        // The environment's corral, with no --python (the harness adds one).
        *cmd = std::process::Command::new(&corral);
        cmd.current_dir(app.path())
            .args(["app:app", "-b", "127.0.0.1:0", "--socket"])
            .arg(app.path().join("ctl.sock"))
            .env_remove("VIRTUAL_ENV")
            .env_remove("CONDA_PREFIX")
            .env("PATH", "/usr/bin:/bin")
            .env("STATE_DIRECTORY", app.path().join(".state"))
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
    });
    c.wait_listening();
    c.wait_in_service(1);
    assert_eq!(c.get("/").text(), python.display().to_string());
}
