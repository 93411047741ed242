//! gunicorn deployments as they are, with the command renamed: the
//! command lines platforms document (Cloud Run, Azure), gunicorn's other
//! ways of passing settings (`gunicorn.conf.py` read by default or with
//! `-c`, `GUNICORN_CMD_ARGS`), every flag of the installed gunicorn, the
//! process names `-n` sets, the app's Unix sockets, the app's Python
//! logging as `--log-config` and `logconfig_dict` set it up, and a Pyramid
//! app served from its Paste ini file (`--paste`).

use crate::common::*;
use crate::gunicorn_compat::{APP, gunicorn_says, import_gunicorn, run_to_exit};
use std::os::unix::fs::PermissionsExt;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const ENV_APP: &str = r#"
import os

def app(environ, start_response):
    body = os.environ.get("FROM", "-").encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"#;

#[test]
fn gunicorn_cmd_args_is_read_below_the_command_line() {
    let app = AppDir::new(&[("app.py", ENV_APP)]);
    // As Heroku's docs set it: gunicorn's flags, quoted as a shell would.
    let env = [(
        "GUNICORN_CMD_ARGS",
        "--workers=3 --env 'FROM=cmd args' --timeout 90 --bind=127.0.0.1:1 ignored:app",
    )];
    let mut c = Corral::spawn(app.path(), &["app:app"], &env);
    c.wait_listening();
    c.wait_in_service(3);
    assert_eq!(c.get("/").text(), "cmd args");
    // The command line's own -b won over the variable's.
    assert_ne!(c.addr, "127.0.0.1:1");
    assert!(
        c.log.has("GUNICORN_CMD_ARGS read as gunicorn reads it"),
        "{}",
        c.log.text()
    );
    // The count is said to come from the variable, not the command line.
    assert!(
        c.log
            .has("starting 3 worker(s) (--workers in GUNICORN_CMD_ARGS)"),
        "{}",
        c.log.text()
    );
    drop(c);
    // A flag on the command line wins over the variable's.
    let mut c = Corral::spawn(app.path(), &["app:app", "--workers", "1"], &env);
    c.wait_listening();
    c.wait_in_service(1);
    assert!(!c.log.text().contains("all 3 workers"), "{}", c.log.text());
    drop(c);
    // A gunicorn flag corral does not take is refused with its reason.
    let mut c = Corral::spawn(
        app.path(),
        &["app:app"],
        &[("GUNICORN_CMD_ARGS", "--daemon --workers 2")],
    );
    let status = c.wait_exit(Duration::from_secs(10)).expect("corral exits");
    assert_eq!(status.code(), Some(2));
    assert!(
        c.log
            .text()
            .contains("GUNICORN_CMD_ARGS: corral does not take gunicorn's --daemon (`daemon`)"),
        "{}",
        c.log.text()
    );
}

/// Answers its pid and `sys.argv`.
const ARGV_APP: &str = r#"
import json, os, sys

def app(environ, start_response):
    body = json.dumps([os.getpid(), sys.argv]).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"#;

/// What `ps` shows as the command line of the worker that answers, and
/// what its app sees as `sys.argv`.
fn worker_as_ps_shows_it(c: &Corral) -> (String, Vec<String>) {
    let r = c.get("/");
    assert_eq!(r.status, 200, "{}", r.text());
    let (pid, argv): (u32, Vec<String>) = serde_json::from_slice(&r.body).unwrap();
    let ps = Command::new("ps")
        .args(["-o", "args=", "-p", &pid.to_string()])
        .output()
        .expect("run ps");
    (String::from_utf8_lossy(&ps.stdout).trim().to_owned(), argv)
}

#[test]
fn ps_names_each_worker_after_proc_name_or_the_instance() {
    let app = AppDir::new(&[("app.py", ARGV_APP)]);
    let c = Corral::start(
        app.path(),
        &["app:app", "-w", "1", "--status-bind", "127.0.0.1:0"],
        1,
    );
    let instance = c.status_json()["supervisor"]["instance"]
        .as_str()
        .expect("/status names the instance")
        .to_owned();
    let (ps, argv) = worker_as_ps_shows_it(&c);
    assert!(
        ps.ends_with(&format!(
            "corral_worker.py [{instance}] worker 0 generation 1"
        )),
        "{ps}"
    );
    // The app sees the script alone, as it did before the names.
    assert_eq!(argv.len(), 1, "{argv:?}");
    assert!(argv[0].ends_with("/corral_worker.py"), "{argv:?}");
    drop(c);

    // gunicorn's -n/--name.
    let c = Corral::start(app.path(), &["app:app", "-w", "2", "-n", "shop api"], 2);
    let (ps, _) = worker_as_ps_shows_it(&c);
    assert!(
        ps.ends_with("corral_worker.py [shop api] worker 0 generation 1")
            || ps.ends_with("corral_worker.py [shop api] worker 1 generation 1"),
        "{ps}"
    );
}

/// Cloud Run's quickstart command line (`gunicorn --bind :$PORT --workers 1
/// --threads 8 --timeout 0 main:app`) and Azure App Service's
/// (`gunicorn --bind=0.0.0.0 --timeout 600 application:app`), with the
/// command renamed: gunicorn's bind forms without a host or a port.
#[test]
fn cloud_run_and_azure_command_lines_run_with_the_command_renamed() {
    let app = AppDir::new(&[("main.py", APP)]);
    // Each in a network namespace of its own: 0.0.0.0 reachable from
    // nowhere else.
    let cloud_run = [
        "--bind",
        ":8080",
        "--workers",
        "1",
        "--threads",
        "8",
        "--timeout",
        "0",
        "main:app",
    ];
    let mut c = Corral::spawn_in_netns(app.path(), &cloud_run, &[("PORT", "8080")]);
    c.wait_listening();
    assert_eq!(c.addr, "0.0.0.0:8080", "{}", c.log.text());
    c.wait_in_service(1);
    drop(c);
    let azure = ["--bind", "0.0.0.0", "--timeout", "600", "main:app"];
    let mut c = Corral::spawn_in_netns(app.path(), &azure, &[]);
    c.wait_listening();
    assert_eq!(c.addr, "0.0.0.0:8000", "{}", c.log.text());
    c.wait_in_service(1);
}

const SLOW_APP: &str = r#"
import time

def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        time.sleep(2)
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
"#;

#[test]
fn timeout_0_is_no_limit_and_keep_alive_0_closes_each_connection() {
    use std::io::{Read, Write};
    let app = AppDir::new(&[("app.py", SLOW_APP)]);
    // A limit of 1 s cuts the 2 s request off...
    let c = Corral::start(app.path(), &["app:app", "-w", "1", "--timeout", "1"], 1);
    assert_eq!(c.get("/slow").status, 504);
    drop(c);
    // ...0 is none, as in gunicorn.
    let c = Corral::start(
        app.path(),
        &["app:app", "-w", "1", "--timeout", "0", "--keep-alive", "0"],
        1,
    );
    let r = c.get("/slow");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    // No keep-alive: the answer says so and the connection ends after it,
    // though the client asked to keep it.
    let mut s = c.connect();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all)
        .expect("corral closes the connection");
    let text = String::from_utf8_lossy(&all).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200 ok\r\n"), "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nok"), "{text}");
}

/// Every flag of the installed gunicorn: corral takes it (a bad value is
/// another matter), or refuses it naming gunicorn's setting and why, never
/// with a bare "unexpected argument".
#[test]
fn every_gunicorn_flag_is_taken_or_refused_with_its_reason() {
    let flags = gunicorn_says(
        "for s in c.KNOWN_SETTINGS:\n\
         \x20   for f in s.cli or []:\n\
         \x20       print(s.name, f, getattr(s, 'action', None) in ('store_true', 'store_const'))",
    );
    assert!(flags.lines().count() > 80, "{flags}");
    let (mut taken, mut refused) = (0, 0);
    for line in flags.lines() {
        let mut words = line.split(' ');
        let (setting, flag, switch) = (
            words.next().unwrap(),
            words.next().unwrap(),
            words.next() == Some("True"),
        );
        // A value (right or wrong), then --help: a flag corral takes ends
        // in the help or in a complaint about the value.
        let mut args = vec![flag];
        if !switch {
            args.push("1");
        }
        args.push("--help");
        let (code, stdout, stderr) = run_to_exit(Path::new("/"), &args);
        assert!(!stderr.contains("unexpected argument"), "{flag}: {stderr}");
        if code == Some(0) {
            assert!(stdout.contains("Usage:"), "{flag}: {stdout}");
            taken += 1;
        } else if stderr.contains("corral does not take gunicorn's") {
            assert!(
                stderr.contains(&format!(
                    "corral does not take gunicorn's {flag} (`{setting}`): "
                )),
                "{flag}: {stderr}"
            );
            assert_eq!(code, Some(2), "{flag}");
            refused += 1;
        } else {
            assert!(stderr.contains("invalid value"), "{flag}: {stderr}");
            taken += 1;
        }
    }
    assert!(
        taken > 40 && refused >= 30,
        "{taken} taken, {refused} refused"
    );
}

const UMASK_APP: &str = r#"
import os

def app(environ, start_response):
    mask = os.umask(0)
    os.umask(mask)
    body = oct(mask).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"#;

#[test]
fn check_config_umask_and_the_flags_for_what_corral_always_does() {
    let app = AppDir::new(&[("app.py", UMASK_APP)]);
    // gunicorn's --check-config is `corral check`.
    let (code, stdout, stderr) = run_to_exit(
        app.path(),
        &["--check-config", "app:app", "--python", &python()],
    );
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("OK: app:app imported"), "{stdout}{stderr}");
    let c = Corral::start(
        app.path(),
        &[
            "app:app",
            "-w",
            "1",
            "-b",
            "127.0.0.1:0",
            "-b",
            "unix:app.sock",
            "-m",
            "0o027",
            "--capture-output",
            "--initgroups",
            "--no-sendfile",
        ],
        1,
    );
    // As under gunicorn, -m shapes the app's Unix socket and leaves the
    // workers' umask (the files the app creates) as it was: corral's own.
    let mode = std::fs::metadata(app.path().join("app.sock"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o750, "{mode:o}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", c.pid())).unwrap();
    let corrals = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .map(|m| u32::from_str_radix(m.trim(), 8).unwrap())
        .unwrap();
    assert_eq!(c.get("/").text(), format!("{corrals:#o}"));
    for flag in ["--capture-output", "--initgroups", "--no-sendfile"] {
        assert!(
            c.log.has(&format!(
                "{flag} accepted (gunicorn's) and changes nothing: "
            )),
            "{flag}: {}",
            c.log.text()
        );
    }
}

const CONF_APP: &str = r#"
import os

def app(environ, start_response):
    body = os.environ.get("FROM_CONF", "-").encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"#;

/// A gunicorn.conf.py as projects keep them: settings, a computed value,
/// a server hook corral cannot run, a print.
const GUNICORN_CONF: &str = r#"
import multiprocessing
workers = min(2, multiprocessing.cpu_count() * 2 + 1)
raw_env = ["FROM_CONF=gunicorn.conf.py"]
timeout = 120
def pre_exec(server):
    pass
print("the config ran")
"#;

#[test]
fn a_gunicorn_conf_py_in_the_folder_is_read_as_gunicorn_reads_it() {
    let app = AppDir::new(&[("app.py", CONF_APP), ("gunicorn.conf.py", GUNICORN_CONF)]);
    // `corral app:app` where `gunicorn app:app` ran: its two workers and
    // its environment, with the hook named as not carried over.
    let c = Corral::start(app.path(), &["app:app"], 2);
    assert_eq!(c.get("/").text(), "gunicorn.conf.py");
    // The config's own output can arrive after the answer.
    c.log.has("the config ran");
    let log = c.log.text();
    assert!(
        log.contains("read gunicorn's gunicorn.conf.py as gunicorn would"),
        "{log}"
    );
    assert!(
        log.contains("gunicorn.conf.py: not carried over: pre_exec: is a function"),
        "{log}"
    );
    assert!(log.contains("the config ran"), "{log}");
    drop(c);
    // A corral.toml beside it wins, as -c does.
    std::fs::write(app.path().join("corral.toml"), "[workers]\ncount = 1\n").unwrap();
    let c = Corral::start(app.path(), &["app:app"], 1);
    assert_eq!(c.get("/").text(), "-");
    assert!(
        !c.log.text().contains("read gunicorn's"),
        "{}",
        c.log.text()
    );
}

#[test]
fn a_gunicorn_config_given_with_c_is_run_and_its_bind_used() {
    let port = compare::free_port();
    let conf = format!("{GUNICORN_CONF}\nbind = \"127.0.0.1:{port}\"\n");
    let app = AppDir::new(&[("app.py", CONF_APP), ("prod_conf.py", &conf)]);
    let c = Corral::start(app.path(), &["app:app", "-c", "prod_conf.py"], 2);
    assert_eq!(c.addr, format!("127.0.0.1:{port}"));
    assert_eq!(c.get("/").text(), "gunicorn.conf.py");
    drop(c);
    // It is code: one that another user could change is not run.
    let path = app.path().join("prod_conf.py");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let (code, _, stderr) = run_to_exit(app.path(), &["app:app", "-c", "prod_conf.py"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("refusing prod_conf.py: group or others may write to it (mode 0666)")
            || stderr.contains(
                "refusing to run prod_conf.py: group or others may write to it (mode 0666)"
            ),
        "{stderr}"
    );
    assert!(!stderr.contains("the config ran"), "{stderr}");
}

#[test]
fn gunicorns_python_module_and_file_config_locations_are_read_as_gunicorn_reads_them() {
    // `gunicorn -c python:config.gunicorn`: a module of the project, with a
    // relative import, as Django projects keep them.
    let port = compare::free_port();
    let conf = format!(
        "from .base import WORKERS\nworkers = WORKERS\nraw_env = [\"FROM_CONF=\" + __name__]\nbind = \"127.0.0.1:{port}\"\n"
    );
    let app = AppDir::new(&[
        ("app.py", CONF_APP),
        ("config/__init__.py", ""),
        ("config/base.py", "WORKERS = 2\n"),
        ("config/gunicorn.py", &conf),
    ]);
    let c = Corral::start(app.path(), &["app:app", "-c", "python:config.gunicorn"], 2);
    assert_eq!(c.addr, format!("127.0.0.1:{port}"));
    // It ran under its module's name, as gunicorn imports it.
    assert_eq!(c.get("/").text(), "config.gunicorn");
    assert!(
        c.log.has(
            "read gunicorn's config/gunicorn.py as gunicorn would; `corral import-gunicorn python:config.gunicorn > corral.toml`"
        ),
        "{}",
        c.log.text()
    );
    drop(c);
    // file:PATH, any name.
    std::fs::write(
        app.path().join("deploy.conf"),
        format!("workers = 1\nraw_env = [\"FROM_CONF=file\"]\nbind = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let c = Corral::start(app.path(), &["app:app", "-c", "file:deploy.conf"], 1);
    assert_eq!(c.get("/").text(), "file");
    drop(c);
    // A module that is not there says where it looked.
    let (code, _, stderr) = run_to_exit(app.path(), &["app:app", "-c", "python:config.prod"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "--config python:config.prod: neither config/prod.py nor config/prod/__init__.py is below the current folder"
        ),
        "{stderr}"
    );
    // import-gunicorn takes the same.
    let (stdout, _) = import_gunicorn(app.path(), "python:config.gunicorn");
    assert!(stdout.contains("count = 2"), "{stdout}");
}

/// A `unix:` bind without gunicorn's `-m`: 0666 under corral's umask, where
/// gunicorn's would be 0777; the log says who may connect and how to let
/// a proxy in.
#[test]
fn a_unix_socket_only_its_owner_may_reach_is_explained_in_the_log() {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    let app = AppDir::new(&[("app.py", APP)]);
    let mut c = Corral::spawn_with(
        app.path(),
        &["app:app", "-b", "127.0.0.1:0", "-b", "unix:app.sock"],
        &[],
        |cmd| {
            // SAFETY: umask(2) only, between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    libc::umask(0o022);
                    Ok(())
                });
            }
        },
    );
    c.wait_listening();
    c.wait_in_service(1);
    let mode = std::fs::metadata(app.path().join("app.sock"))
        .unwrap()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o644);
    let line = c
        .log
        .wait_for("may connect", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no hint; log:\n{}", c.log.text()));
    assert!(line.contains("app.sock is mode 0644"), "{line}");
    // 0644: writing, which connecting takes, is the owner's alone.
    // SAFETY: geteuid(2) has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert!(
        line.contains(&format!("only uid {uid} may connect")),
        "{line}"
    );
    assert!(line.contains("-g GROUP -m 007"), "{line}");
}

/// An app that logs through Python's `logging`, as most do.
const LOGGING_APP: &str = r#"
import logging

log = logging.getLogger("shop")
log.info("imported")

def app(environ, start_response):
    log.info("serving %s", environ["PATH_INFO"])
    logging.getLogger("shop.sql").debug("select 1")
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
"#;

/// A `logconfig_dict` as gunicorn.conf.py files carry them: gunicorn's own
/// loggers beside the app's, one formatter for all.
const LOGCONFIG_CONF: &str = r#"
workers = 1
logconfig_dict = {
    "version": 1,
    "formatters": {"plain": {"format": "APPLOG %(levelname)s %(name)s: %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stdout"},
        "error_console": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"},
    },
    "root": {"level": "WARNING", "handlers": ["console"]},
    "loggers": {
        "shop": {"level": "INFO"},
        "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
    },
}
"#;

#[test]
fn the_apps_loggers_log_as_gunicorns_logconfig_dict_says() {
    let app = AppDir::new(&[
        ("app.py", LOGGING_APP),
        ("gunicorn.conf.py", LOGCONFIG_CONF),
    ]);
    let c = Corral::start(app.path(), &["app:app"], 1);
    assert_eq!(c.get("/cart").text(), "ok");
    c.log
        .wait_for("APPLOG INFO shop: serving /cart", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{}", c.log.text()));
    let log = c.log.text();
    // At import too, and only at the levels it sets.
    assert!(log.contains("stdout: APPLOG INFO shop: imported"), "{log}");
    assert!(!log.contains("select 1"), "{log}");
    assert!(!log.contains("logconfig_dict"), "{log}");
}

#[test]
fn log_config_files_are_applied_in_each_worker_and_a_broken_one_fails_the_boot() {
    // An ini file as `--log-config` takes it, writing beside itself
    // (%(here)s) in its own format.
    let ini = r#"
[loggers]
keys = root, shop

[handlers]
keys = file

[formatters]
keys = plain

[logger_root]
level = WARNING
handlers = file

[logger_shop]
level = DEBUG
handlers =
qualname = shop

[handler_file]
class = FileHandler
args = ('%(here)s/app.log',)
formatter = plain

[formatter_plain]
format = %(process)d %(levelname)s %(name)s %(message)s
"#;
    let bad = r#"{"version": 1, "handlers": {"console": {"class": "no.such.Handler"}}}"#;
    let app = AppDir::new(&[
        ("app.py", LOGGING_APP),
        ("logging.ini", ini),
        ("bad.json", bad),
    ]);
    let c = Corral::start(
        app.path(),
        &["app:app", "-w", "2", "--log-config", "logging.ini"],
        2,
    );
    for _ in 0..4 {
        assert_eq!(c.get("/pay").text(), "ok");
    }
    let file = app.path().join("app.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut text = String::new();
    while std::time::Instant::now() < deadline && text.matches("serving /pay").count() < 4 {
        std::thread::sleep(Duration::from_millis(50));
        text = std::fs::read_to_string(&file).unwrap_or_default();
    }
    assert_eq!(text.matches("INFO shop serving /pay").count(), 4, "{text}");
    assert!(text.contains("DEBUG shop.sql select 1"), "{text}");
    // Both workers set it up before the import.
    let pids: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.ends_with("shop imported"))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert_eq!(pids.len(), 2, "{text}");
    // It sets up no gunicorn.access logger: no word about one.
    assert!(
        !c.log.text().contains("gunicorn.access"),
        "{}",
        c.log.text()
    );
    drop(c);

    // One that gives gunicorn.access a handler, as gunicorn's access log
    // goes through it: that logger gets nothing under corral, which says
    // so and how to have the lines (they went nowhere without a word).
    let with_access = ini.replace("keys = root, shop", "keys = root, shop, gunicorn.access")
        + "\n[logger_gunicorn.access]\nlevel = INFO\nhandlers = file\npropagate = 0\nqualname = gunicorn.access\n";
    std::fs::write(app.path().join("access.ini"), with_access).unwrap();
    let warned = "access.ini sets up the gunicorn.access logger, which gets no record under corral: corral writes the access log itself, and no access log is on; give --access-logfile FILE";
    let c = Corral::start(app.path(), &["app:app", "--log-config", "access.ini"], 1);
    assert!(c.log.has(warned), "{}", c.log.text());
    drop(c);
    let c = Corral::start(
        app.path(),
        &[
            "app:app",
            "--log-config",
            "access.ini",
            "--access-logfile",
            "-",
        ],
        1,
    );
    assert_eq!(c.get("/pay").text(), "ok");
    assert!(c.log.has("\"GET /pay HTTP/1.1\" 200"), "{}", c.log.text());
    assert!(!c.log.text().contains(warned), "{}", c.log.text());
    drop(c);

    // One a worker cannot apply: `corral check` shows why, as for an app
    // that fails its import.
    let (code, stdout, stderr) = run_to_exit(
        app.path(),
        &[
            "check",
            "app:app",
            "--log-config-json",
            "bad.json",
            "--python",
            &python(),
        ],
    );
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let out = format!("{stdout}{stderr}");
    assert!(
        out.contains("the workers' logging configuration (logconfig_json ")
            && out.contains("bad.json) cannot be applied: Unable to configure handler 'console'"),
        "{out}"
    );
    // A file that is not there is a configuration mistake, named as one.
    let (code, _, stderr) = run_to_exit(app.path(), &["app:app", "--log-config", "nope.ini"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--log-config: ") && stderr.contains("nope.ini is no file"),
        "{stderr}"
    );
}

/// A Pyramid app as its cookiecutter lays it out: a `main(global_config,
/// **settings)` factory named in `production.ini`, with its loggers there.
const PYRAMID_APP: &str = r#"
import logging
from pyramid.config import Configurator
from pyramid.response import Response

log = logging.getLogger("shop")

def hello(request):
    settings = request.registry.settings
    log.info("hello from %s", settings["shop.name"])
    return Response("%s on %s" % (settings["shop.name"], settings["sqlalchemy.url"]))

def main(global_config, **settings):
    config = Configurator(settings=settings)
    config.add_route("hello", "/")
    config.add_view(hello, route_name="hello")
    return config.make_wsgi_app()
"#;

const PRODUCTION_INI: &str = r#"
[app:main]
use = call:shop:main
shop.name = pyramid-shop
sqlalchemy.url = %(db)s

[app:admin]
use = call:shop:main
shop.name = admin
sqlalchemy.url = sqlite://

[loggers]
keys = root, shop

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARN
handlers = console

[logger_shop]
level = INFO
handlers =
qualname = shop

[handler_console]
class = StreamHandler
args = (sys.stderr,)
formatter = generic

[formatter_generic]
format = PYRLOG %(levelname)s [%(name)s] %(message)s
"#;

#[test]
fn a_pyramid_app_is_served_from_its_paste_ini_as_gunicorn_serves_it() {
    let app = AppDir::new(&[("shop.py", PYRAMID_APP), ("production.ini", PRODUCTION_INI)]);
    // `gunicorn --paste production.ini --paste-global db=...`, renamed.
    let c = Corral::start(
        app.path(),
        &[
            "--paste",
            "production.ini",
            "--paste-global",
            "db=sqlite:///shop.db",
            "-w",
            "2",
        ],
        2,
    );
    assert_eq!(c.get("/").text(), "pyramid-shop on sqlite:///shop.db");
    // The ini's [loggers] set up the workers' logging, as under gunicorn.
    c.log
        .wait_for(
            "stderr: PYRLOG INFO [shop] hello from pyramid-shop",
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("{}", c.log.text()));
    assert!(
        c.log.has("for paste:") && c.log.has("production.ini"),
        "{}",
        c.log.text()
    );
    drop(c);
    // FILE#NAME picks another [app:NAME]; `corral check` boots it.
    let (code, stdout, stderr) = run_to_exit(
        app.path(),
        &[
            "check",
            "--paste",
            "production.ini#admin",
            "--python",
            &python(),
        ],
    );
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("production.ini#admin imported"), "{stdout}");
    // From a gunicorn.conf.py, as gunicorn reads `paste` there.
    std::fs::write(
        app.path().join("gunicorn.conf.py"),
        "paste = 'production.ini'\nraw_paste_global_conf = ['db=postgresql:///shop']\nworkers = 1\n",
    )
    .unwrap();
    let c = Corral::start(app.path(), &[], 1);
    assert_eq!(c.get("/").text(), "pyramid-shop on postgresql:///shop");
    drop(c);
    // An app to serve beside it is a mistake, named as one.
    let (code, _, stderr) = run_to_exit(app.path(), &["shop:main", "--paste", "production.ini"]);
    assert_eq!(code, Some(2), "{stderr}");
}

#[test]
fn the_apps_socket_file_goes_when_corral_stops_and_stays_while_another_serves_on_it() {
    let app = AppDir::new(&[("app.py", APP)]);
    let sock = app.path().join("app.sock");
    let args = [
        "app:app",
        "-w",
        "1",
        "-b",
        "127.0.0.1:0",
        "-b",
        "unix:app.sock",
    ];
    // As gunicorn: the file is removed when corral stops.
    let mut c = Corral::start(app.path(), &args, 1);
    assert!(sock.exists());
    c.signal(libc::SIGTERM);
    assert_eq!(
        c.wait_exit(Duration::from_secs(20)).and_then(|s| s.code()),
        Some(0)
    );
    assert!(!sock.exists(), "the socket file outlived corral");

    // USR2: the old corral leaves the file to the new one, which serves
    // on it and removes it when it stops in turn.
    let mut c = Corral::start(app.path(), &args, 1);
    let before = get_unix(&sock).text();
    c.signal(libc::SIGUSR2);
    let new = c.reexec_child();
    c.log
        .wait_for("asking the old corral", Duration::from_secs(30))
        .unwrap_or_else(|| panic!("{}", c.log.text()));
    assert_eq!(
        c.wait_exit(Duration::from_secs(30)).and_then(|s| s.code()),
        Some(0)
    );
    assert!(
        sock.exists(),
        "the old corral removed the new one's socket file"
    );
    assert_eq!(get_unix(&sock).text(), before);
    // SAFETY: kill(2) on the corral the USR2 started.
    unsafe { libc::kill(new.0 as i32, libc::SIGTERM) };
    assert!(
        wait_gone(&[new.0], Duration::from_secs(20)),
        "the new corral did not stop"
    );
    assert!(!sock.exists(), "the socket file outlived the new corral");
}

/// A systemd unit without `WorkingDirectory=` runs from `/`: gunicorn's
/// `--chdir /srv/app --pythonpath src` finds the app in `/srv/app/src`,
/// since gunicorn adds the path after its chdir. So does corral (it once
/// looked in `/src`: ModuleNotFoundError).
#[test]
fn a_relative_pythonpath_is_in_the_chdir_folder() {
    let app = AppDir::new(&[("src/svc.py", APP)]);
    let dir = app.path().display().to_string();
    let mut c = Corral::spawn_with(
        app.path(),
        &["svc:app", "--chdir", &dir, "--pythonpath", "src"],
        &[],
        |cmd| {
            cmd.current_dir("/");
        },
    );
    c.wait_listening();
    c.wait_in_service(1);
    assert_eq!(c.get("/").status, 200);
}

/// `--pythonpath a,b` puts each folder in front of sys.path in turn, as
/// gunicorn does: b is searched first (corral searched a first, and
/// imported another module of the same name). `[app] pythonpath` is
/// searched in its order.
#[test]
fn pythonpath_folders_are_searched_in_gunicorns_order() {
    let module = |from: &str| {
        format!(
            "def app(environ, start_response):\n    start_response('200 OK', [])\n    return [b'{from}']\n"
        )
    };
    let app = AppDir::new(&[
        ("pp1/ppmod.py", &module("pp1")),
        ("pp2/ppmod.py", &module("pp2")),
        (
            "corral.toml",
            "[app]\nmodule = \"ppmod:app\"\npythonpath = [\"pp1\", \"pp2\"]\n",
        ),
        ("gunicorn.conf.py", "pythonpath = 'pp1,pp2'\n"),
    ]);
    for (args, from) in [
        (&["ppmod:app", "--pythonpath", "pp1,pp2"][..], "pp2"),
        (
            &["ppmod:app", "--pythonpath", "pp1", "--pythonpath", "pp2"][..],
            "pp2",
        ),
        (
            &["-c", "gunicorn.conf.py", "ppmod:app", "-b", "127.0.0.1:0"][..],
            "pp2",
        ),
        (&["-c", "corral.toml", "-b", "127.0.0.1:0"][..], "pp1"),
    ] {
        let c = Corral::start(app.path(), args, 1);
        assert_eq!(c.get("/").text(), from, "{args:?}");
    }
}

/// gunicorn changes to `--chdir` before it opens the files its flags name:
/// a unit without `WorkingDirectory=` (the current folder `/`) keeps its
/// pid file, logs and socket beside the app, not at the root of the
/// filesystem.
#[test]
fn relative_pid_log_and_socket_paths_on_the_command_line_are_in_the_chdir_folder() {
    let app = AppDir::new(&[("svc.py", APP)]);
    let dir = app.path().display().to_string();
    let cwd = AppDir::new(&[]);
    let port = crate::common::compare::free_port();
    let tcp = format!("127.0.0.1:{port}");
    let c = Corral::spawn_with(
        app.path(),
        &[
            "svc:app",
            "--chdir",
            &dir,
            "-b",
            &tcp,
            "-b",
            "unix:web.sock",
            "--pid",
            "run.pid",
            "--access-logfile",
            "access.log",
            "--error-logfile",
            "error.log",
        ],
        &[],
        |cmd| {
            cmd.current_dir(cwd.path());
        },
    );
    // corral's lines go to error.log, not to the harness: wait on the file.
    let errors = app.path().join("error.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&errors)
        .unwrap_or_default()
        .contains("in service")
    {
        assert!(
            Instant::now() < deadline,
            "no worker in service in error.log"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(request(&tcp, "GET", "/", &[], b"").status, 200);
    assert_eq!(get_unix(&app.path().join("web.sock")).status, 200);
    let pid: u32 = std::fs::read_to_string(app.path().join("run.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, c.child.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(app.path().join("access.log"))
        .unwrap_or_default()
        .lines()
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "no access lines in access.log");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stray: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().collect();
    assert!(stray.is_empty(), "files in the current folder: {stray:?}");
}

/// `-b [::]:PORT` serves IPv4 clients too, as gunicorn's does (a dual
/// stack socket); beside `-b 0.0.0.0:PORT` it takes IPv6 alone, so that
/// both bind.
#[test]
fn bind_to_the_ipv6_any_address_serves_ipv4_and_ipv6_clients() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    }
    let app = AppDir::new(&[("svc.py", APP)]);
    for extra in [false, true] {
        let port = crate::common::compare::free_port();
        let v6 = format!("[::]:{port}");
        let v4 = format!("0.0.0.0:{port}");
        let mut args = vec!["svc:app", "-b", &v6];
        if extra {
            args.extend(["-b", &v4]);
        }
        let c = Corral::start(app.path(), &args, 1);
        for addr in [format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
            let r = request(&addr, "GET", "/", &[], b"");
            assert_eq!(r.status, 200, "{addr} with {args:?}");
        }
        drop(c);
    }
}
