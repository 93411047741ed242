//! uvicorn and granian deployments with the command renamed: the command
//! line FastAPI's and uvicorn's docs give (`--host`, `--port`, `--uds`,
//! `--proxy-headers`, `--workers`), uvicorn's names for the settings corral
//! has (`--timeout-keep-alive`, `--limit-concurrency`, `--limit-max-requests`,
//! `--timeout-graceful-shutdown`, `--ssl-*`, `--app-dir`, `--interface
//! asgi3`), `--env-file`, `--log-config` in YAML and `--no-access-log`; and
//! granian's names (`--blocking-threads`, `--url-path-prefix`,
//! `--process-name`, `--pid-file`); waitress's command line from Flask's
//! docs and hypercorn's; and every flag of each one's `--help`, taken or
//! refused with the reason.

use crate::common::*;
use crate::gunicorn_compat::{run_to_exit, run_to_exit_with_env};

use std::time::Duration;

const FASTAPI_APP: &str = r#"
from fastapi import FastAPI, Request

app = FastAPI()

@app.get("/")
async def root(request: Request):
    # No client address on a Unix socket, as under uvicorn.
    client = request.client.host if request.client else None
    return {"scheme": request.url.scheme, "client": client}
"#;

#[test]
fn fastapis_uvicorn_command_line_runs_with_the_command_renamed() {
    let app = AppDir::new(&[("main.py", FASTAPI_APP)]);
    // FastAPI's deployment docs: `uvicorn main:app --host 0.0.0.0 --port 80
    // --proxy-headers`, on a free port of the loopback.
    let port = compare::free_port().to_string();
    let c = Corral::start(
        app.path(),
        &[
            "main:app",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--proxy-headers",
            "--workers",
            "2",
            "--timeout-keep-alive",
            "0",
            "--limit-max-requests",
            "1000",
            "--timeout-graceful-shutdown",
            "5",
            "--limit-concurrency",
            "50",
            "--interface",
            "asgi3",
        ],
        2,
    );
    assert_eq!(c.addr, format!("127.0.0.1:{port}"));
    // A proxy on the same host says the client came over HTTPS.
    let r = request(
        &c.addr,
        "GET",
        "/",
        &[
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-For", "203.0.113.7"),
        ],
        b"",
    );
    assert_eq!(r.text(), r#"{"scheme":"https","client":"203.0.113.7"}"#);
    // --timeout-keep-alive 0: each response closes its connection.
    assert_eq!(r.header("connection"), Some("close"));
    assert!(
        c.log
            .has("--proxy-headers accepted (uvicorn's) and changes nothing"),
        "{}",
        c.log.text()
    );
    drop(c);
    // --port alone is 127.0.0.1:PORT, as in uvicorn.
    let c = Corral::start(app.path(), &["main:app", "--port", &port, "-w", "1"], 1);
    assert_eq!(c.addr, format!("127.0.0.1:{port}"));
}

#[test]
fn uds_serves_on_a_unix_socket_and_a_second_address_is_refused() {
    let app = AppDir::new(&[("main.py", FASTAPI_APP)]);
    let mut c = Corral::spawn(
        app.path(),
        &[
            "main:app",
            "--uds",
            "app.sock",
            "-w",
            "1",
            "--status-bind",
            "127.0.0.1:0",
        ],
        &[],
    );
    c.log
        .wait_for("all 1 workers in service", Duration::from_secs(30))
        .unwrap_or_else(|| panic!("{}", c.log.text()));
    let r = get_unix(&app.path().join("app.sock"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().ends_with(r#"{"scheme":"http","client":null}"#),
        "{}",
        r.text()
    );
    c.signal(libc::SIGTERM);
    assert!(c.wait_exit(Duration::from_secs(20)).is_some());
    // Two ways of naming the address at once are a mistake, named as one.
    for args in [
        &["main:app", "--host", "127.0.0.1", "-b", "127.0.0.1:0"][..],
        &["main:app", "--uds", "x.sock", "--port", "9"][..],
    ] {
        let (code, _, stderr) = run_to_exit(app.path(), args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: --"), "{args:?}: {stderr}");
    }
}

const ENV_APP: &str = r#"
import os

# Read at import time, as settings modules do.
DATABASE_URL = os.environ.get("DATABASE_URL", "-")

async def app(scope, receive, send):
    body = ("%s %s" % (DATABASE_URL, os.environ.get("SET_BEFORE", "-"))).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
"#;

#[test]
fn env_file_is_loaded_by_each_worker_before_the_app_as_uvicorn_loads_it() {
    let app = AppDir::new(&[
        ("main.py", ENV_APP),
        (
            ".env",
            "# the app's settings\nexport DATABASE_URL=\"postgresql://db/shop\"\nSET_BEFORE=from-file\n",
        ),
    ]);
    // A variable already set stays as it is, as with uvicorn.
    let mut c = Corral::spawn(
        app.path(),
        &["main:app", "-w", "2", "--env-file", ".env"],
        &[("SET_BEFORE", "from-environment")],
    );
    c.wait_listening();
    c.wait_in_service(2);
    for _ in 0..4 {
        assert_eq!(c.get("/").text(), "postgresql://db/shop from-environment");
    }
    drop(c);
    let (code, _, stderr) = run_to_exit(app.path(), &["main:app", "--env-file", "missing.env"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("missing.env is no file"), "{stderr}");
}

const ROOT_APP: &str = r#"
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = ("%s %s" % (scope["root_path"], scope["path"])).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
"#;

#[test]
fn granians_command_line_runs_with_the_command_renamed() {
    let app = AppDir::new(&[("main.py", ROOT_APP)]);
    let port = compare::free_port().to_string();
    // granian's docs: `granian --interface asgi main:app --host ... --port
    // ... --workers N`, with its names for a prefix, a name and a pid file.
    let c = Corral::start(
        app.path(),
        &[
            "--interface",
            "asgi",
            "main:app",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--workers",
            "2",
            "--blocking-threads",
            "2",
            "--url-path-prefix",
            "/api",
            "--process-name",
            "shop",
            "--pid-file",
            "corral.pid",
        ],
        2,
    );
    assert_eq!(c.addr, format!("127.0.0.1:{port}"));
    assert_eq!(c.get("/api/items").text(), "/api /api/items");
    let pid = std::fs::read_to_string(app.path().join("corral.pid")).unwrap();
    assert_eq!(pid.trim(), c.pid().to_string());
}

#[test]
fn uvicorns_and_granians_environment_variables_are_read_as_they_read_them() {
    let app = AppDir::new(&[("main.py", FASTAPI_APP)]);
    let port = compare::free_port().to_string();
    // A container image's settings, no flags: `CMD ["corral"]`.
    let mut c = Corral::spawn(
        app.path(),
        &[],
        &[
            ("UVICORN_APP", "main:app"),
            ("UVICORN_HOST", "127.0.0.1"),
            ("UVICORN_PORT", &port),
            ("UVICORN_WORKERS", "2"),
            ("UVICORN_PROXY_HEADERS", "true"),
            ("UVICORN_ACCESS_LOG", "false"),
            ("GRANIAN_HTTP1_KEEP_ALIVE", "false"),
            ("GRANIAN_INTERFACE", "asgi"),
            // Not a flag of either: left alone, as click leaves it.
            ("UVICORN_SOMETHING_ELSE", "x"),
        ],
    );
    c.wait_listening();
    c.wait_in_service(2);
    assert_eq!(c.addr, format!("127.0.0.1:{port}"));
    let r = c.get("/");
    assert_eq!(r.text(), r#"{"scheme":"http","client":"127.0.0.1"}"#);
    // GRANIAN_HTTP1_KEEP_ALIVE=false: --no-http1-keep-alive.
    assert_eq!(r.header("connection"), Some("close"));
    let log = c.log.text();
    for said in [
        &format!("UVICORN_PORT={port} read as uvicorn reads it: --port={port}"),
        "UVICORN_APP=main:app read as uvicorn reads it: the app",
        "UVICORN_ACCESS_LOG=false read as uvicorn reads it: --no-access-log",
        "GRANIAN_HTTP1_KEEP_ALIVE=false read as granian reads it: --no-http1-keep-alive",
    ] {
        assert!(log.contains(said), "{said}:\n{log}");
    }
    drop(c);
    // The command line wins over a variable, and corral's own variable too.
    let port2 = compare::free_port().to_string();
    let c = Corral::spawn(
        app.path(),
        &["main:app", "--port", &port2, "-w", "1"],
        &[
            ("UVICORN_PORT", &port),
            ("UVICORN_WORKERS", "3"),
            ("GRANIAN_BACKLOG", "64"),
            ("CORRAL_BACKLOG", "128"),
        ],
    );
    let mut c = c;
    c.wait_listening();
    c.wait_in_service(1);
    assert_eq!(c.addr, format!("127.0.0.1:{port2}"));
    assert!(
        !c.log.text().contains("UVICORN_WORKERS"),
        "{}",
        c.log.text()
    );
    assert!(
        !c.log.text().contains("GRANIAN_BACKLOG"),
        "{}",
        c.log.text()
    );
    // A variable for what corral does not do is refused with the reason.
    let (code, _, err) = run_to_exit_with_env(app.path(), &["main:app"], &[("UVICORN_FD", "3")]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("error: UVICORN_FD: corral does not take --fd (uvicorn's)"),
        "{err}"
    );
    // A bad value names the variable it came from.
    let (code, _, err) =
        run_to_exit_with_env(app.path(), &["main:app"], &[("GRANIAN_INTERFACE", "rsgi")]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("invalid value 'rsgi' for '--interface")
            && err
                .contains("note: the value comes from the environment variable GRANIAN_INTERFACE"),
        "{err}"
    );
}

/// A Flask app made by its factory, as Flask's tutorial has it.
const FLASK_FACTORY: &str = r#"
from flask import Flask, request

def create_app():
    app = Flask(__name__)

    @app.get("/hello")
    def hello():
        return "%s %s" % (request.script_root, request.path)

    return app
"#;

#[test]
fn waitresss_command_line_from_flasks_docs_runs_with_the_command_renamed() {
    let app = AppDir::new(&[("hello.py", FLASK_FACTORY)]);
    let port = compare::free_port();
    // Flask's docs: `waitress-serve --call hello:create_app`; with
    // waitress's listen-everywhere address and its names for the rest.
    let listen = format!("--listen=*:{port}");
    let c = Corral::start(
        app.path(),
        &[
            &listen,
            "--call",
            "hello:create_app",
            "--url-prefix=/shop",
            "--ident=shop",
            "--threads=2",
            "--connection-limit=500",
            "--channel-timeout=30",
            "--send-bytes=18000",
            "--no-expose-tracebacks",
        ],
        1,
    );
    // *:PORT is every IPv4 and IPv6 address, as waitress binds it.
    for addr in [format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
        let r = request(&addr, "GET", "/shop/hello", &[], b"");
        assert_eq!(r.text(), "/shop /hello", "{addr}");
        // --ident: the Server header.
        assert_eq!(r.header("server"), Some("shop"), "{addr}");
    }
    assert!(
        c.log
            .has("--send-bytes 18000 accepted (waitress's) and changes nothing"),
        "{}",
        c.log.text()
    );
    // What corral does not do is refused with the reason.
    let (code, _, err) = run_to_exit(
        app.path(),
        &["--call", "hello:create_app", "--unix-socket-perms=660"],
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("for 660 --umask 117"), "{err}");
}

#[test]
fn hypercorns_command_line_runs_with_the_command_renamed() {
    let app = AppDir::new(&[("main.py", FASTAPI_APP)]);
    let c = Corral::start(
        app.path(),
        &[
            "main:app",
            "-k",
            "asyncio",
            "--keep-alive",
            "5",
            "--read-timeout",
            "30",
            "--websocket-ping-interval",
            "10",
            "--error-log",
            "-",
            "--debug",
        ],
        1,
    );
    assert_eq!(
        c.get("/").text(),
        r#"{"scheme":"http","client":"127.0.0.1"}"#
    );
    let (code, _, err) = run_to_exit(app.path(), &["main:app", "-k", "trio"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("not trio"), "{err}");
}

#[test]
fn a_hypercorn_toml_config_is_read_as_hypercorn_reads_it() {
    // Quart's and hypercorn's documented way: `hypercorn -c hypercorn.toml
    // main:app`, flat keys, most of them gunicorn's.
    let port = compare::free_port();
    let conf = format!(
        "bind = [\"127.0.0.1:{port}\"]\nworkers = 2\nworker_class = \"asyncio\"\n\
         keep_alive_timeout = 0\nwebsocket_ping_interval = 5\naccesslog = \"-\"\n\
         server_names = [\"example.com\"]\n"
    );
    let app = AppDir::new(&[("main.py", FASTAPI_APP), ("hypercorn.toml", &conf)]);
    let c = Corral::start(app.path(), &["main:app", "-c", "hypercorn.toml"], 2);
    assert_eq!(c.addr, format!("127.0.0.1:{port}"));
    let r = c.get("/");
    assert_eq!(r.text(), r#"{"scheme":"http","client":"127.0.0.1"}"#);
    // keep_alive_timeout = 0: each response closes its connection.
    assert_eq!(r.header("connection"), Some("close"));
    let log = c.log.text();
    for said in [
        "read hypercorn's hypercorn.toml as hypercorn would",
        "hypercorn.toml: not carried over: server_names: corral serves every Host",
    ] {
        assert!(log.contains(said), "{said}:\n{log}");
    }
    c.log
        .wait_for("\"GET / HTTP/1.1\" 200", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no access log line:\n{}", c.log.text()));
    drop(c);
    let (code, stdout, stderr) = run_to_exit(app.path(), &["import-gunicorn", "hypercorn.toml"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("ws_ping_interval = \"5s\""), "{stdout}");
    assert!(
        stderr.contains("server_names: corral serves every Host"),
        "{stderr}"
    );
}

#[test]
fn a_corral_toml_of_flat_keys_is_converted_without_emptying_it_and_a_key_hypercorn_lacks_is_an_error()
 {
    // The log's advice must not redirect onto the file it converts: the
    // shell would empty it before corral reads it.
    let conf = "bind = \"127.0.0.1:20345\"\nworkers = 2\n";
    let app = AppDir::new(&[("main.py", FASTAPI_APP), ("corral.toml", conf)]);
    let (code, _, err) = run_to_exit(
        app.path(),
        &[
            "check",
            "-c",
            "corral.toml",
            "main:app",
            "--python",
            &python(),
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains(
            "read hypercorn's corral.toml as hypercorn would; `corral import-gunicorn corral.toml > corral.new.toml && mv corral.new.toml corral.toml` converts it for good"
        ),
        "{err}"
    );
    // Following it converts the file for good.
    let (code, out, err) = run_to_exit(app.path(), &["import-gunicorn", "corral.toml"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("[workers]\ncount = 2"), "{out}");
    // A typo is an error naming the line and the key meant, not a warning
    // and a server on the default.
    std::fs::write(
        app.path().join("corral.toml"),
        "bind = \"127.0.0.1:20345\"\nworkerz = 2\n",
    )
    .unwrap();
    let (code, _, err) = run_to_exit(
        app.path(),
        &[
            "check",
            "-c",
            "corral.toml",
            "main:app",
            "--python",
            &python(),
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(
            "error: corral.toml:2: workerz: not a hypercorn setting (a TOML file of keys outside sections is read as hypercorn's): did you mean `workers`?"
        ),
        "{err}"
    );
}

const LOGGING_APP: &str = r#"
import logging

log = logging.getLogger("shop")

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    log.info("serving %s", scope["path"])
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
"#;

/// A YAML logging configuration as uvicorn users keep them.
const LOG_YAML: &str = r#"
version: 1
disable_existing_loggers: false
formatters:
  plain:
    format: "YAMLLOG %(levelname)s %(name)s %(message)s"
handlers:
  out:
    class: logging.StreamHandler
    formatter: plain
    stream: ext://sys.stdout
loggers:
  shop:
    level: INFO
    handlers: [out]
"#;

#[test]
fn a_uvicorn_log_config_in_yaml_shapes_the_apps_loggers_and_no_access_log_is_taken() {
    let app = AppDir::new(&[
        ("main.py", LOGGING_APP),
        ("log.yaml", LOG_YAML),
        ("corral.toml", "[log]\naccess = \"combined\"\n"),
    ]);
    let access_line = "\"GET /cart HTTP/1.1\" 200";
    // The file turns the access log on; --no-access-log turns it off.
    let c = Corral::start(
        app.path(),
        &[
            "main:app",
            "-w",
            "1",
            "--log-config",
            "log.yaml",
            "--no-access-log",
        ],
        1,
    );
    assert_eq!(c.get("/cart").text(), "ok");
    c.log
        .wait_for(
            "stdout: YAMLLOG INFO shop serving /cart",
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("{}", c.log.text()));
    assert!(!c.log.text().contains(access_line), "{}", c.log.text());
    drop(c);
    let c = Corral::start(app.path(), &["main:app", "-w", "1"], 1);
    assert_eq!(c.get("/cart").text(), "ok");
    c.log
        .wait_for(access_line, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no access line without the flag: {}", c.log.text()));
}

/// The flags in `program --help` (uvicorn's, granian's, waitress's or
/// hypercorn's, installed beside the test interpreter), `--help` and
/// `--version` aside. Reads click's ("--ws / --no-ws"), argparse's ("-b
/// BINDS, --bind BINDS") and waitress's ("--host=ADDR", "--[no-]ipv4").
fn flags_of(program: &str) -> Vec<String> {
    let bin = std::path::Path::new(&python()).with_file_name(program);
    let out = std::process::Command::new(&bin)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let help = String::from_utf8_lossy(&out.stdout);
    let mut flags: Vec<String> = Vec::new();
    for line in help.lines().map(str::trim_start) {
        if !line.starts_with('-') {
            continue;
        }
        let head = line.split("  ").next().unwrap_or(line);
        for word in head.split([' ', '/', '=', ',']) {
            let forms = match word.strip_prefix("--[no-]") {
                Some(name) => vec![format!("--{name}"), format!("--no-{name}")],
                None => vec![word.to_owned()],
            };
            for word in forms {
                let name = word.strip_prefix("--").unwrap_or("");
                if !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !["--help", "--version"].contains(&word.as_str())
                    && !flags.contains(&word)
                {
                    flags.push(word);
                }
            }
        }
    }
    flags
}

#[test]
fn every_flag_of_uvicorn_granian_waitress_and_hypercorn_is_taken_or_refused_with_the_reason() {
    let dir = AppDir::new(&[]);
    for program in ["uvicorn", "granian", "waitress-serve", "hypercorn"] {
        let flags = flags_of(program);
        assert!(flags.len() > 30, "{program}: only {flags:?}");
        let mut refused = Vec::new();
        for flag in &flags {
            // Nothing after the flag: a switch parses, and the missing
            // file is the error; a flag that takes a value asks for one.
            let (code, out, err) = run_to_exit(dir.path(), &["check", "-c", "missing.toml", flag]);
            assert_eq!(code, Some(2), "{program} {flag}: {out}{err}");
            assert!(
                !err.contains("unexpected argument"),
                "{program}'s {flag} is unknown to corral: {err}"
            );
            if err.contains("corral does not take") {
                // With the reason, after the flag (gunicorn's --ssl-version
                // is uvicorn's too).
                let why = err.split_once(flag.as_str()).map(|(_, why)| why);
                assert!(why.is_some_and(|w| w.len() > 30), "{err}");
                refused.push(flag.as_str());
            } else {
                assert!(
                    err.contains("missing.toml") || err.contains("a value is required"),
                    "{program} {flag}: {err}"
                );
            }
        }
        eprintln!(
            "{program}: {} flags, refused with the reason: {refused:?}",
            flags.len()
        );
    }
}

#[test]
fn uvicorns_and_granians_tuning_flags_run_and_say_what_they_mean() {
    let app = AppDir::new(&[("main.py", FASTAPI_APP), ("sub/.keep", "")]);
    let c = Corral::start(
        app.path(),
        &[
            "main:app",
            "--interface",
            "asgi",
            "--no-proxy-headers",
            "--http",
            "httptools",
            "--loop",
            "uvloop",
            "--no-use-colors",
            "--no-server-header",
            "--respawn-failed-workers",
            "--runtime-threads",
            "2",
            "--no-http1-keep-alive",
            "--workers-max-rss",
            "512",
            "--access-log",
        ],
        1,
    );
    // --no-proxy-headers: a proxy's X-Forwarded-Proto from the loopback is
    // not trusted any more.
    let r = request(
        &c.addr,
        "GET",
        "/",
        &[
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-For", "203.0.113.9"),
        ],
        b"",
    );
    assert_eq!(r.text(), r#"{"scheme":"http","client":"127.0.0.1"}"#);
    // --no-http1-keep-alive: each response closes its connection.
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.header("server"), None);
    let log = c.log.text();
    for said in [
        "--no-proxy-headers (uvicorn's) taken as --forwarded-allow-ips \"\"",
        "--no-http1-keep-alive (granian's) taken as --keepalive 0",
        "--workers-max-rss 512 (granian's) taken as --max-memory in MiB",
        "--http httptools accepted (uvicorn's, granian's) and changes nothing",
        "--runtime-threads 2 accepted (granian's) and changes nothing",
        "--respawn-failed-workers accepted (granian's) and changes nothing",
        "--no-server-header accepted (uvicorn's) and changes nothing",
    ] {
        assert!(log.contains(said), "{said}:\n{log}");
    }
    // The bare --access-log is uvicorn's and granian's: on, combined.
    c.log
        .wait_for("\"GET / HTTP/1.1\" 200", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no access log line:\n{}", c.log.text()));

    // The bare --access-log before the app takes it for a format: the
    // error says what happened and what to write.
    let (code, _, err) = run_to_exit(app.path(), &["--access-log", "main:app"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("put the app before it, or write --access-log=combined"),
        "{err}"
    );
    // What corral does not do is refused, before anything starts.
    let (code, _, err) = run_to_exit(app.path(), &["main:app", "--static-path-mount", "static"]);
    assert_eq!(code, Some(2));
    assert_eq!(
        err.trim(),
        "error: corral does not take --static-path-mount (granian's): corral does not serve files: serve them from the app (WhiteNoise, Starlette's StaticFiles) or from the proxy in front"
    );
}

#[test]
fn header_adds_to_every_response_and_the_apps_own_wins() {
    let app = AppDir::new(&[(
        "app.py",
        "def app(environ, start_response):\n    \
         own = [('X-Frame-Options', 'SAMEORIGIN')] if environ['PATH_INFO'] == '/own' else []\n    \
         start_response('200 OK', [('Content-Length', '2')] + own)\n    return [b'ok']\n",
    )]);
    let c = Corral::start(
        app.path(),
        &[
            "app:app",
            "--header",
            "X-Frame-Options:DENY",
            "--header",
            "Strict-Transport-Security: max-age=63072000; includeSubDomains",
        ],
        1,
    );
    let r = c.get("/");
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(
        r.header("strict-transport-security"),
        Some("max-age=63072000; includeSubDomains")
    );
    // The app's own header of that name, alone.
    let r = c.get("/own");
    assert_eq!(r.header("x-frame-options"), Some("SAMEORIGIN"));
    assert_eq!(
        r.headers
            .iter()
            .filter(|(n, _)| n == "x-frame-options")
            .count(),
        1
    );
    // corral's own answers carry them too: a CONNECT gets its 405 from Rust.
    let r = request(&c.addr, "CONNECT", "example.com:443", &[], b"");
    assert!(r.status >= 400, "{}", r.status);
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    // A header corral frames the response with is a configuration mistake.
    let (code, _, err) = run_to_exit(app.path(), &["app:app", "--header", "Connection: close"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--header: Connection is set by corral itself"),
        "{err}"
    );
}
