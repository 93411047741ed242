//! The real binary refuses a bad config before it starts anything, and says
//! where the problem is (file, line, key) and how to fix it. Also: `--help`
//! documents every flag.

use crate::common::{python, require_root};

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Longest any one run of the binary may take.
const DEADLINE: Duration = Duration::from_secs(10);

/// Kills the child on drop, so a failing test never leaves one behind.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// The child's stdout and stderr, each read to its end on a thread of
/// its own (so that neither pipe fills while the other is read).
fn read_output(
    child: &mut std::process::Child,
) -> (thread::JoinHandle<String>, thread::JoinHandle<String>) {
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    (
        drain(Box::new(child.stdout.take().unwrap())),
        drain(Box::new(child.stderr.take().unwrap())),
    )
}

/// Runs corral in `dir` and waits at most [`DEADLINE`] for it to exit.
fn corral(dir: &Path, args: &[&str]) -> Output {
    let mut child = Guard(
        Command::new(env!("CARGO_BIN_EXE_corral"))
            .args(args)
            .current_dir(dir)
            .env_remove("VIRTUAL_ENV")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn corral"),
    );
    let (stdout, stderr) = read_output(&mut child.0);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait for corral") {
            break status;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "corral {args:?} still running after {DEADLINE:?}; a bad config must stop it at once"
        );
        thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// A temporary folder holding `name` with `text`.
fn dir_with(name: &str, text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(name), text).unwrap();
    dir
}

/// Runs corral in a folder holding `corral.toml` = `toml` and asserts it
/// refused to start with every one of `needles` on stderr.
fn refused_config(toml: &str, args: &[&str], needles: &[&str]) {
    let dir = dir_with("corral.toml", toml);
    assert_refused(&corral(dir.path(), args), needles);
}

/// Asserts corral exited on its own with a non-zero code, and that stderr
/// contains every one of `needles`.
fn assert_refused(out: &Output, needles: &[&str]) {
    assert!(
        out.status.code().is_some_and(|code| code != 0),
        "expected a non-zero exit, got {:?}; stderr:\n{}",
        out.status,
        out.stderr
    );
    for needle in needles {
        assert!(
            out.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            out.stderr
        );
    }
}

#[test]
fn unknown_key_names_file_line_key_and_the_valid_keys() {
    let dir = dir_with(
        "corral.toml",
        "[app]\nmodule = \"main:app\"\n\n[server]\nkeepalvie = \"5s\"\n",
    );
    // ./corral.toml is read without --config.
    let out = corral(dir.path(), &[]);
    assert_refused(
        &out,
        &[
            "error: corral.toml:5: server.keepalvie: unknown key `keepalvie`",
            "`keepalive`",
            "`max_body_bytes`",
        ],
    );
}

#[test]
fn mistakes_in_a_corral_toml_are_explained_in_its_own_words_with_the_fix() {
    // serde's "expected struct RawWorkers", "expected usize", "sequence"
    // and a list of sections meant nothing to whoever wrote the file.
    for (toml, said) in [
        (
            "workers = 4\n[server]\nbind = [\"127.0.0.1:8000\"]\n",
            "error: corral.toml:1: workers: is a section, not a value: write its keys below a `[workers]` line, like `[workers]`, then `count = 4`",
        ),
        (
            "bind = [\"127.0.0.1:8000\"]\n[workers]\ncount = 2\n",
            "error: corral.toml:1: bind: `bind` is not a key outside any section: it belongs in [server]; move it below a `[server]` line: `[server]` then `bind = [\"127.0.0.1:8000\"]`",
        ),
        (
            "[workers]\nthreads = \"8\"\n",
            "error: corral.toml:2: workers.threads: invalid type: string \"8\", expected a whole number of 0 or more; for example: threads = 1",
        ),
        (
            "[app]\nenv = [\"A=1\"]\n",
            "error: corral.toml:2: app.env: invalid type: array, expected a table; write it as a section of its own, one key a line: `[app.env]` then `A = \"1\"`",
        ),
        (
            "[workers]\ntimeout = -1\n",
            "error: corral.toml:2: workers.timeout: invalid duration -1: a duration is 0 or more, with a unit and quotes, like \"30s\"",
        ),
    ] {
        refused_config(toml, &["check", "main:app"], &[said]);
    }
    // gunicorn runs a config file of any name as Python: one not named
    // .py is read as a corral.toml, and the error says how to name it.
    let dir = dir_with("g.conf", "workers = 3\nbind = \"127.0.0.1:8000\"\n");
    let out = corral(dir.path(), &["check", "main:app", "-c", "g.conf"]);
    assert_refused(
        &out,
        &[
            "error: g.conf:2: bind: ",
            "; if g.conf is a gunicorn config file (Python: gunicorn runs any file name as one), give it as `-c file:g.conf`",
        ],
    );
}

#[test]
fn wrong_type_names_file_line_key_and_an_example() {
    let dir = dir_with("prod.toml", "[workers]\nthreads = \"four\"\n");
    let out = corral(dir.path(), &["main:app", "-c", "prod.toml"]);
    assert_refused(
        &out,
        &[
            "prod.toml:2",
            "workers.threads",
            "invalid type",
            "threads = 1",
        ],
    );
    // workers.count takes a number or "auto", and says so.
    let dir = dir_with("prod.toml", "[workers]\ncount = \"four\"\n");
    let out = corral(dir.path(), &["main:app", "-c", "prod.toml"]);
    assert_refused(
        &out,
        &[
            "prod.toml:2: workers.count: \"four\" is not a number of workers: use a number of workers like 4, or \"auto\"",
        ],
    );
}

#[test]
fn bad_duration_names_file_line_key_and_the_format() {
    let dir = dir_with(
        "corral.toml",
        "[app]\nmodule = \"main:app\"\n[server]\nkeepalive = \"5x\"\n",
    );
    for args in [&[][..], &["run"][..]] {
        let out = corral(dir.path(), args);
        assert_refused(
            &out,
            &[
                "corral.toml:4: server.keepalive: invalid duration \"5x\"",
                "\"30s\"",
            ],
        );
    }
}

#[test]
fn unreadable_file_names_the_path_and_the_os_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = corral(dir.path(), &["main:app", "-c", "missing.toml"]);
    assert_refused(&out, &["missing.toml", "os error"]);
    std::fs::create_dir(dir.path().join("folder.toml")).unwrap();
    let out = corral(dir.path(), &["main:app", "--config", "folder.toml"]);
    assert_refused(&out, &["folder.toml", "it is a folder, not a regular file"]);
}

#[test]
fn every_invalid_value_is_reported_at_once() {
    refused_config(
        "[app]\nmodule = \"main.py:app\"\n[server]\nbind = [\"example.com:80\"]\n[workers]\ncount = 0\n",
        &[],
        &[
            "3 problems",
            "corral.toml:2: app.module:",
            "\"main:app\"",
            "corral.toml:4: server.bind: invalid bind address \"example.com:80\"",
            "corral.toml:6: workers.count: must be at least 1",
        ],
    );
}

#[test]
fn health_and_restart_problems_name_the_keys_they_clash_with() {
    refused_config(
        "[app]\nmodule = \"main:app\"\n[server]\nbind = [\"127.0.0.1:8000\"]\n\
         [workers]\ncount = 2\nrestart_backoff = \"1s\"\nrestart_backoff_max = \"500ms\"\n\
         [health]\nstatus_bind = \"127.0.0.1:8000\"\nmin_ready = 3\n",
        &[],
        &[
            "3 problems",
            "corral.toml:8: workers.restart_backoff_max: 500ms is shorter than workers.restart_backoff (1s)",
            "corral.toml:10: health.status_bind: 127.0.0.1:8000 is also a server address (at corral.toml:4 (key server.bind))",
            "corral.toml:11: health.min_ready: needs 3 workers in service but workers.count is 2",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let out = corral(
        dir.path(),
        &[
            "main:app",
            "-b",
            "unix:web.sock",
            "--status-bind",
            "unix:web.sock",
        ],
    );
    assert_refused(
        &out,
        &[
            "--status-bind: unix:",
            "web.sock is also a server address (at --bind)",
        ],
    );
    let out = corral(dir.path(), &["main:app", "--min-ready", "half"]);
    assert_refused(
        &out,
        &[
            "--min-ready",
            "use a count like 2 or a percentage like \"50%\"",
        ],
    );
}

#[test]
fn probe_and_recycling_problems_name_file_line_and_key() {
    refused_config(
        "[app]\nmodule = \"main:app\"\n[workers]\ncount = 2\nheartbeat_timeout = \"0s\"\n\
         max_memory = 512\n[health]\nready_path = \"health/ready\"\nprobe_timeout = \"0s\"\n\
         unhealthy_after = 0\nmin_in_service = 3\n",
        &[],
        &[
            "6 problems",
            "corral.toml:5: workers.heartbeat_timeout: must be longer than 0s",
            "corral.toml:6: workers.max_memory: 512 bytes is less than a Python worker needs",
            "\"512MiB\"",
            "corral.toml:8: health.ready_path: \"health/ready\" must start with \"/\"",
            "corral.toml:9: health.probe_timeout: must be longer than 0s",
            "corral.toml:10: health.unhealthy_after: must be at least 1",
            "corral.toml:11: health.min_in_service: needs 3 workers in service but workers.count is 2",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let out = corral(dir.path(), &["main:app", "--ready-path", "ready"]);
    assert_refused(&out, &["--ready-path: \"ready\" must start with \"/\""]);
    let out = corral(dir.path(), &["main:app", "--max-memory", "1G"]);
    assert_refused(&out, &["--max-memory", "\"1GiB\" (1024-based)"]);
    let out = corral(dir.path(), &["main:app", "--max-requests", "many"]);
    assert_refused(&out, &["--max-requests", "invalid digit"]);
}

#[test]
fn concurrency_and_queue_problems_name_file_line_and_key() {
    let dir = dir_with(
        "corral.toml",
        "[app]\nmodule = \"main:app\"\n[server]\nmax_queued = 0\n[workers]\nthreads = 0\n\
         concurrency = 0\n",
    );
    let out = corral(dir.path(), &[]);
    assert_refused(
        &out,
        &[
            "2 problems",
            "corral.toml:6: workers.threads: must be at least 1",
            "corral.toml:7: workers.concurrency: must be at least 1 (it is the number of \
             requests one ASGI worker holds at once), like 1000",
        ],
    );
    // max_queued = 0 is allowed (no request ever waits).
    assert!(!out.stderr.contains("max_queued"), "{}", out.stderr);
    // The flag wins over the file and is named when it is at fault.
    let out = corral(dir.path(), &["--threads", "2", "--concurrency", "0"]);
    assert_refused(&out, &["error: --concurrency: must be at least 1"]);
    assert!(!out.stderr.contains("corral.toml"), "{}", out.stderr);
    let dir = dir_with("corral.toml", "[server]\nmax_queued = -1\n");
    let out = corral(dir.path(), &["main:app"]);
    assert_refused(
        &out,
        &[
            "error: corral.toml:2: server.max_queued: invalid value: integer `-1`, expected a \
             whole number of 0 or more; for example: max_queued = 1024",
        ],
    );
    let out = corral(dir.path(), &["main:app", "--max-queued", "many"]);
    assert_refused(&out, &["--max-queued", "invalid digit"]);
}

#[test]
fn io_threads_problems_name_file_line_and_key() {
    refused_config(
        "[app]\nmodule = \"main:app\"\n[server]\nio_threads = \"auto\"\n",
        &[],
        &[
            "error: corral.toml:4: server.io_threads: invalid type: string \"auto\", expected a \
             whole number of 0 or more; for example: io_threads = 0",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let out = corral(dir.path(), &["main:app", "--io-threads=-1"]);
    assert_refused(&out, &["--io-threads", "invalid digit"]);
}

#[test]
fn forwarded_allow_ips_problems_name_file_line_key_and_the_fix() {
    let how = "is not an IP address or network: use e.g. \"127.0.0.1\", \"10.0.0.0/8\" or \"*\"";
    let dir = dir_with(
        "corral.toml",
        "[app]\nmodule = \"main:app\"\n[server]\nforwarded_allow_ips = [\"10.0.0.300\"]\n",
    );
    let out = corral(dir.path(), &[]);
    assert_refused(
        &out,
        &[&format!(
            "error: corral.toml:4: server.forwarded_allow_ips: \"10.0.0.300\" {how}"
        )],
    );
    // The flag wins over the file and is named when it is at fault.
    let out = corral(dir.path(), &["--forwarded-allow-ips", "127.0.0.1,nginx"]);
    assert_refused(
        &out,
        &[&format!("error: --forwarded-allow-ips: \"nginx\" {how}")],
    );
    assert!(!out.stderr.contains("corral.toml"), "{}", out.stderr);
    refused_config(
        "[server]\nforwarded_allow_ips = \"127.0.0.1\"\n",
        &["main:app"],
        &[
            "error: corral.toml:2: server.forwarded_allow_ips: invalid type: string \
             \"127.0.0.1\", expected an array; for example: \
             forwarded_allow_ips = [\"127.0.0.1\", \"::1\"]",
        ],
    );
}

#[test]
fn forwarded_allow_ips_from_the_file_or_the_flag_start_the_app() {
    let app = "def app(environ, start_response):\n    start_response('200 OK', [])\n    \
               return [b'ok']\n";
    let dir = dir_with("main.py", app);
    std::fs::write(
        dir.path().join("corral.toml"),
        "[app]\nmodule = \"main:app\"\n[server]\n\
         forwarded_allow_ips = [\"10.0.0.0/8\", \"fd00::/8\", \"::1\"]\n",
    )
    .unwrap();
    let python = python();
    // The file's networks, then "*" and "" (nobody) from the flag over it.
    for flags in [
        &[][..],
        &["--forwarded-allow-ips", "*"],
        &["--forwarded-allow-ips", ""],
    ] {
        let args = [&["check", "--python", &python][..], flags].concat();
        let out = corral(dir.path(), &args);
        assert!(
            out.status.success() && out.stdout.starts_with("OK: main:app imported"),
            "corral {args:?}: {:?}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            out.stdout,
            out.stderr
        );
    }
}

#[test]
fn io_threads_zero_or_a_number_starts_the_runtime() {
    let app = "def app(environ, start_response):\n    start_response('200 OK', [])\n    \
               return [b'ok']\n";
    let dir = dir_with("main.py", app);
    std::fs::write(
        dir.path().join("corral.toml"),
        "[app]\nmodule = \"main:app\"\n[server]\nio_threads = 0\n",
    )
    .unwrap();
    let python = python();
    // 0 (automatic) from the file, then a number from the flag over it.
    for flags in [&[][..], &["--io-threads", "3"]] {
        let args = [&["check", "--python", &python][..], flags].concat();
        let out = corral(dir.path(), &args);
        assert!(
            out.status.success() && out.stdout.starts_with("OK: main:app imported"),
            "corral {args:?}: {:?}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            out.stdout,
            out.stderr
        );
    }
}

#[test]
fn unknown_users_and_bad_limits_name_file_line_and_key() {
    let dir = dir_with(
        "corral.toml",
        "[app]\nmodule = \"main:app\"\n[workers]\nuser = \"corral-no-such-user\"\n\
         group = \"corral-no-such-group\"\n[workers.limits]\nnofile = 10\n\
         address_space = 4096\n",
    );
    let out = corral(dir.path(), &[]);
    assert_refused(
        &out,
        &[
            "4 problems",
            "corral.toml:4: workers.user: unknown user \"corral-no-such-user\"",
            "`getent passwd`",
            "corral.toml:5: workers.group: unknown group \"corral-no-such-group\"",
            "corral.toml:7: workers.limits.nofile: 10 is too few open files",
            "corral.toml:8: workers.limits.address_space: 4096 bytes is less than a Python worker needs",
        ],
    );
    // The flags, gunicorn's -u and -g, win over the file.
    let out = corral(
        dir.path(),
        &["-u", "corral-other-user", "--group", "root", "-w", "0"],
    );
    assert_refused(
        &out,
        &[
            "--user: unknown user \"corral-other-user\"",
            "--workers: must be at least 1",
        ],
    );
    assert!(!out.stderr.contains("workers.group"), "{}", out.stderr);
    let dir = tempfile::tempdir().unwrap();
    let out = corral(dir.path(), &["main:app", "-g", "4294967294"]);
    assert_refused(&out, &["--group: no group has gid 4294967294"]);
    refused_config(
        "[workers.limits]\numask = 22\n",
        &["main:app"],
        &[
            "error: corral.toml:2: workers.limits.umask: invalid umask 22: write the octal digits in quotes, like \"027\"",
        ],
    );
    refused_config(
        "[workers.limits]\numask = \"0999\"\n",
        &["main:app"],
        &["error: corral.toml:2: workers.limits.umask: invalid umask \"0999\": use octal digits"],
    );
}

#[test]
fn deploy_problems_name_file_line_and_key() {
    refused_config(
        "[app]\nmodule = \"main:app\"\n[deploy]\nrevision = \"gti\"\nstate_dir = \"\"\n\
         rollback_hook = \"./rollback.sh --notify\"\nhook_timeout = \"0s\"\n",
        &[],
        &[
            "4 problems",
            "corral.toml:4: deploy.revision: unknown revision source \"gti\": use \"auto\", \"git\", \"symlink\" or \"none\"",
            "corral.toml:5: deploy.state_dir: is empty",
            "corral.toml:6: deploy.rollback_hook: is a string: write the command as an array of strings",
            "[\"./rollback.sh\", \"--notify\"]",
            "corral.toml:7: deploy.hook_timeout: must be longer than 0s",
        ],
    );
    refused_config(
        "[app]\nmodule = \"main:app\"\n[deploy]\nrevision = []\n",
        &[],
        &[
            "error: corral.toml:4: deploy.revision: is empty: give a command like [\"cat\", \"REVISION\"]",
        ],
    );
    refused_config(
        "[deploy]\nhook_timeout = 60\n",
        &["main:app"],
        &["error: corral.toml:2: deploy.hook_timeout: invalid duration 60: add a unit"],
    );
}

#[test]
fn rollback_and_strategy_problems_name_the_keys_they_clash_with() {
    let dir = dir_with(
        "corral.toml",
        "[app]\nmodule = \"main:app\"\n[deploy]\nrevision = \"symlink\"\n\
         rollback = \"git-reset\"\nstrategy = \"Rolling\"\nmax_surge = 0\n",
    );
    let out = corral(dir.path(), &[]);
    assert_refused(
        &out,
        &[
            "3 problems",
            "corral.toml:5: deploy.rollback: \"git-reset\" resets the app folder to the last known \
             good commit, so it needs deploy.revision \"git\" or \"auto\", but deploy.revision is \
             \"symlink\" (at corral.toml:4)",
            "corral.toml:6: deploy.strategy: unknown strategy \"Rolling\": write \"rolling\"",
            "corral.toml:7: deploy.max_surge: must be at least 1",
        ],
    );
    // "symlink" needs the app folder, named by app.chdir or --chdir.
    let dir = dir_with(
        "corral.toml",
        "[app]\nmodule = \"main:app\"\n[deploy]\nrollback = \"symlink\"\n",
    );
    let out = corral(dir.path(), &[]);
    assert_refused(
        &out,
        &["error: corral.toml:4: deploy.rollback: \"symlink\" needs app.chdir"],
    );
    let out = corral(dir.path(), &["--chdir", "current", "--workers", "0"]);
    assert_refused(&out, &["--workers: must be at least 1"]);
    assert!(!out.stderr.contains("deploy.rollback"), "{}", out.stderr);
    refused_config(
        "[deploy]\nexit_on_boot_failure = \"yes\"\n",
        &["main:app"],
        &[
            "error: corral.toml:2: deploy.exit_on_boot_failure: invalid type: string \"yes\", \
             expected a boolean; for example: exit_on_boot_failure = false",
        ],
    );
}

#[test]
fn missing_app_says_how_to_give_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = corral(dir.path(), &[]);
    assert_refused(&out, &["no app given", "corral main:app", "[app] module"]);
}

#[test]
fn bad_flag_value_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out = corral(dir.path(), &["main:app", "--timeout", "30x"]);
    assert_refused(&out, &["--timeout", "invalid duration", "\"30s\""]);
}

#[test]
fn help_documents_every_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = corral(dir.path(), &["--help"]);
    assert!(out.status.success(), "{:?}: {}", out.status, out.stderr);
    let flags = [
        "APP",
        "-c, --config",
        "-b, --bind",
        "-w, --workers",
        "--threads",
        "--concurrency",
        "--interface",
        "--python",
        "--chdir",
        "--pythonpath",
        "-e, --env",
        "-t, --timeout",
        "--graceful-timeout",
        "--keepalive",
        "--backlog",
        "--max-header-bytes",
        "--max-body-bytes",
        "--max-queued",
        "--io-threads",
        "--forwarded-allow-ips",
        "--boot-timeout",
        "--status-bind",
        "--min-ready",
        "--ready-path",
        "--max-requests",
        "--max-requests-jitter",
        "--max-memory",
        "-u, --user",
        "-g, --group",
        "--socket",
        "--log-level",
    ];
    let keys = [
        "app.module",
        "server.bind",
        "workers.count",
        "workers.threads",
        "workers.concurrency",
        "app.interface",
        "app.python",
        "app.chdir",
        "app.pythonpath",
        "app.env",
        "workers.timeout",
        "workers.graceful_timeout",
        "server.keepalive",
        "server.backlog",
        "server.max_header_bytes",
        "server.max_body_bytes",
        "server.max_queued",
        "server.io_threads",
        "server.forwarded_allow_ips",
        "workers.boot_timeout",
        "health.status_bind",
        "health.min_ready",
        "health.ready_path",
        "workers.max_requests",
        "workers.max_requests_jitter",
        "workers.max_memory",
        "workers.user",
        "workers.group",
        "control.socket",
    ];
    for needle in flags.iter().chain(&keys) {
        assert!(
            out.stdout.contains(needle),
            "--help lacks {needle:?}:\n{}",
            out.stdout
        );
    }
    // Beyond the list above: every option --help prints names the TOML
    // key it overrides, but those that have none on purpose.
    let no_key = [
        "-c, --config",
        "--worker-tmp-dir",   // gunicorn's: a flag only
        "-k, --worker-class", // gunicorn's, maps to --interface
        "--preload",          // gunicorn's, refused
        "--check-config",     // gunicorn's, `corral check`
        "-h, --help",
        "-V, --version",
    ];
    let options = out
        .stdout
        .split_once("\nOptions:")
        .expect("an Options section")
        .1;
    let mut blocks: Vec<Vec<&str>> = Vec::new();
    for line in options.lines() {
        let text = line.trim_start_matches(' ');
        if text.starts_with('-') && line.len() - text.len() <= 6 {
            blocks.push(vec![line]);
        } else if let Some(block) = blocks.last_mut() {
            block.push(line);
        }
    }
    assert!(
        blocks.len() > 50,
        "{} options:\n{}",
        blocks.len(),
        out.stdout
    );
    let mut keyless = Vec::new();
    for block in &blocks {
        let name = block[0].trim().split(" <").next().unwrap();
        if !block.join(" ").contains("[toml: ") {
            keyless.push(name);
        }
    }
    assert_eq!(keyless, no_key, "options whose help names no [toml: key]");
}

#[test]
fn control_commands_document_their_flags() {
    let dir = tempfile::tempdir().unwrap();
    let out = corral(dir.path(), &["reload", "--help"]);
    assert!(out.status.success(), "{:?}: {}", out.status, out.stderr);
    for needle in [
        "new generation",
        "--wait",
        "--timeout",
        "-c, --config",
        "--socket",
        "deploy.ready_timeout",
    ] {
        assert!(
            out.stdout.contains(needle),
            "reload --help lacks {needle:?}:\n{}",
            out.stdout
        );
    }
    for (command, about) in [
        ("scale", "number of workers"),
        ("stop", "gracefully"),
        ("status", "workers"),
    ] {
        let out = corral(dir.path(), &[command, "--help"]);
        assert!(out.status.success(), "{:?}: {}", out.status, out.stderr);
        for needle in [about, "-c, --config", "--socket"] {
            assert!(
                out.stdout.contains(needle),
                "{command} --help lacks {needle:?}:\n{}",
                out.stdout
            );
        }
    }
    let out = corral(dir.path(), &["--help"]);
    for command in ["reload", "scale", "stop"] {
        assert!(
            out.stdout.contains(command),
            "--help lacks {command:?}:\n{}",
            out.stdout
        );
    }
}

#[test]
fn control_commands_report_a_bad_config_file_like_run() {
    // ./corral.toml is read without --config; no app is needed, but the
    // file must parse.
    let dir = dir_with(
        "corral.toml",
        "[control]\nsocket = \"ctl.sock\"\nsokcet = 1\n",
    );
    for args in [&["reload"][..], &["scale", "2"], &["stop"]] {
        let out = corral(dir.path(), args);
        assert_refused(
            &out,
            &["error: corral.toml:3: control.sokcet: unknown key `sokcet`, expected `socket`"],
        );
    }
    let out = corral(dir.path(), &["stop", "-c", "missing.toml"]);
    assert_refused(&out, &["missing.toml", "os error"]);
    let out = corral(dir.path(), &["scale", "0"]);
    assert_refused(&out, &["must be at least 1"]);
}

#[test]
fn an_address_in_use_names_the_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    std::fs::write(
        dir.path().join("corral.toml"),
        format!("[app]\nmodule = \"main:app\"\n\n[server]\nbind = [\"127.0.0.1:{port}\"]\n"),
    )
    .unwrap();
    let out = corral(
        dir.path(),
        &["--socket", dir.path().join("c.sock").to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert_refused(
        &out,
        &[
            &format!("cannot listen on 127.0.0.1:{port}"),
            "corral.toml:5 (key server.bind)",
            "another process already listens there",
        ],
    );
    drop(taken);
}

/// As root, a config file someone else may change is refused: it names
/// commands corral runs as root, and where `corral status` sends its
/// token. A `./corral.toml` planted by another user in the folder root
/// starts corral from runs nothing and gets no token.
#[test]
fn a_config_file_others_can_change_is_refused_as_root() {
    if !require_root("the rule is for a corral running as root") {
        return;
    }
    let witness = tempfile::tempdir().unwrap();
    let pwned = witness.path().join("PWNED");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let toml = format!(
        "[app]\nmodule = \"app:app\"\n[hooks]\non_ready = [\"/bin/touch\", \"{}\"]\n[control]\nsocket = \"/nonexistent/c.sock\"\n[health]\nstatus_bind = \"{}\"\n",
        pwned.display(),
        listener.local_addr().unwrap()
    );
    let dir = dir_with("corral.toml", &toml);
    std::fs::write(
        dir.path().join("app.py"),
        "def app(environ, start_response):\n    start_response('200 OK', [])\n    return [b'']\n",
    )
    .unwrap();
    let python = python();
    let check = ["check", "-c", "corral.toml", "--python", &python];
    let out = corral(dir.path(), &check);
    assert!(
        out.status.success(),
        "root's own file is fine: {}",
        out.stderr
    );
    let path = dir.path().join("corral.toml");
    let refusal = "and corral runs as root";
    // Its mode lets others write to it.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    assert_refused(
        &corral(dir.path(), &check),
        &[
            "corral.toml: group or others may write to it (mode 0666)",
            refusal,
        ],
    );
    // Planted by another user in a folder anyone may write to, and found
    // there without -c.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let run = ["app:app", "--python", &python, "-b", "127.0.0.1:0"];
    assert_refused(
        &corral(dir.path(), &run),
        &["it belongs to uid 65534", refusal],
    );
    assert!(!pwned.exists(), "the planted hook ran");
    let out = Command::new(env!("CARGO_BIN_EXE_corral"))
        .arg("status")
        .current_dir(dir.path())
        .env("CORRAL_STATUS_TOKEN", "operator-secret-token-0123456789")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(refusal),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        listener.accept().is_err(),
        "corral status connected to the planted address"
    );
}

/// A mistyped `--python` (or a virtualenv since removed) is a start-up
/// error naming it, exit 2, before a port is bound: not a corral that
/// binds, answers 503, and starts the worker again and again for good.
#[test]
fn an_interpreter_that_is_not_there_stops_the_start_with_its_name() {
    let dir = dir_with("app.py", "def app(e, s):\n    return []\n");
    let port = crate::common::compare::free_port();
    let bind = format!("127.0.0.1:{port}");
    for (python, why) in [
        (
            "/srv/nowhere/.venv/bin/python",
            "/srv/nowhere/.venv/bin/python (--python) does not exist",
        ),
        (
            "python3.99-not-a-python",
            "python3.99-not-a-python (--python) is not on PATH",
        ),
        ("/tmp", "/tmp (--python) is not a file"),
    ] {
        let out = corral(dir.path(), &["app:app", "--python", python, "-b", &bind]);
        assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
        assert!(out.stderr.contains(why), "{}", out.stderr);
        assert!(
            std::net::TcpStream::connect(&bind).is_err(),
            "nothing was to listen on {bind}"
        );
        // `corral check` says the same, with the same exit code.
        let out = corral(dir.path(), &["check", "app:app", "--python", python]);
        assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
        assert!(out.stderr.contains(why), "{}", out.stderr);
    }
}

/// `corral check` exits 2 where `corral run` would refuse to start: an
/// access log or pid file in a folder that is not there. It exited 0.
#[test]
fn check_refuses_what_run_refuses_an_access_log_or_pid_file_in_no_folder() {
    let dir = dir_with("app.py", "def app(e, s):\n    return []\n");
    let python = crate::common::python();
    let gone = dir.path().join("gone");
    let log = format!("{}/access.log", gone.display());
    let pid = format!("{}/corral.pid", gone.display());
    for (flag, path, what) in [
        ("--access-logfile", &log, "the access log"),
        ("--pid", &pid, "the pid file"),
    ] {
        let port = crate::common::compare::free_port();
        let bind = format!("127.0.0.1:{port}");
        let run = corral(
            dir.path(),
            &["app:app", "--python", &python, "-b", &bind, flag, path],
        );
        assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
        let check = corral(
            dir.path(),
            &["check", "app:app", "--python", &python, flag, path],
        );
        assert_eq!(
            check.status.code(),
            Some(2),
            "{}{}",
            check.stdout,
            check.stderr
        );
        assert!(
            check
                .stderr
                .contains(&format!("{what} {path}: its folder {}", gone.display())),
            "{}",
            check.stderr
        );
    }
    assert!(!gone.exists(), "check made nothing");
}

/// Container images run gunicorn with `--access-logfile /dev/stdout
/// --error-logfile /dev/stderr` (pipes there, under Docker and here) and
/// turn the access log off with `--access-logfile /dev/null`. `corral run`
/// refused each (a FIFO, a device: not a regular file, exit 2) where
/// `corral check` passed them. They are the streams corral writes itself,
/// and no access log: both now serve, and check agrees.
#[test]
fn the_standard_streams_and_dev_null_as_log_files_serve_as_under_gunicorn() {
    let dir = dir_with(
        "app.py",
        "def app(e, s):\n    s('200 OK', [('Content-Length', '2')])\n    return [b'hi']\n",
    );
    let python = python();
    for (flags, logged) in [
        (
            [
                "--access-logfile",
                "/dev/stdout",
                "--error-logfile",
                "/dev/stderr",
            ],
            true,
        ),
        (
            ["--access-logfile", "/dev/null", "--log-level", "info"],
            false,
        ),
    ] {
        let mut args = vec!["app:app"];
        args.extend(flags);
        let mut c = crate::common::Corral::spawn(dir.path(), &args, &[]);
        c.wait_listening();
        assert_eq!(c.get("/marker-path").status, 200, "{}", c.log.text());
        let line = c.log.wait_for("/marker-path", Duration::from_secs(3));
        assert_eq!(line.is_some(), logged, "{flags:?}: {}", c.log.text());
        let _ = c.child.kill();
        let _ = c.child.wait();
        let mut check = vec!["check", "app:app", "--python", &python];
        check.extend(flags);
        let out = corral(dir.path(), &check);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{flags:?}: {}{}",
            out.stdout,
            out.stderr
        );
    }
}

/// gunicorn's `--error-logfile /dev/null` (no log): `corral run` refused
/// it, exit 2, "it is a device, not a regular file". corral's own lines go
/// there now and the app serves; `corral check` agrees.
#[test]
fn dev_null_as_the_error_log_serves_with_no_log_as_under_gunicorn() {
    let dir = dir_with(
        "app.py",
        "def app(e, s):\n    s('200 OK', [('Content-Length', '2')])\n    return [b'hi']\n",
    );
    let port = crate::common::compare::free_port();
    let addr = format!("127.0.0.1:{port}");
    let python = python();
    let flags = ["app:app", "-b", &addr, "--error-logfile", "/dev/null"];
    let mut c = crate::common::Corral::spawn(dir.path(), &flags, &[]);
    let mut served = None;
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while served.is_none() && std::time::Instant::now() < until {
        if c.child.try_wait().unwrap().is_some() {
            break;
        }
        if std::net::TcpStream::connect(&addr).is_ok() {
            let r = crate::common::request(&addr, "GET", "/", &[], b"");
            if r.status == 200 {
                served = Some(r);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = c.child.kill();
    let _ = c.child.wait();
    let log = c.log.text();
    assert_eq!(served.map(|r| r.text()), Some("hi".into()), "{log}");
    assert!(
        !log.contains("listening on"),
        "the log went to /dev/null: {log}"
    );
    let mut check = vec!["check", "--python", &python];
    check.extend(flags);
    let out = corral(dir.path(), &check);
    assert_eq!(out.status.code(), Some(0), "{}{}", out.stdout, out.stderr);
}

/// The other way round, as many images pass gunicorn: `--access-logfile
/// /dev/stderr` and `--error-logfile /dev/stdout`. `corral run` refused
/// each, exit 2, "it is a FIFO, not a regular file (another user may have
/// put it there)", where gunicorn writes to them. corral's own lines now
/// go to its stdout and the access lines to its stderr.
#[test]
fn the_access_log_on_stderr_and_the_error_log_on_stdout_serve_as_under_gunicorn() {
    let dir = dir_with(
        "app.py",
        "def app(e, s):\n    s('200 OK', [('Content-Length', '2')])\n    return [b'hi']\n",
    );
    let port = crate::common::compare::free_port();
    let addr = format!("127.0.0.1:{port}");
    let flags = [
        "--access-logfile",
        "/dev/stderr",
        "--error-logfile",
        "/dev/stdout",
    ];
    let mut child = Guard(
        Command::new(env!("CARGO_BIN_EXE_corral"))
            .args(["app:app", "-b", &addr, "--python", &python()])
            .args(flags)
            .arg("--socket")
            .arg(dir.path().join(".corral.sock"))
            .env("STATE_DIRECTORY", dir.path().join(".corral-state"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn corral"),
    );
    let (stdout, stderr) = read_output(&mut child.0);
    let started = Instant::now();
    let mut served = false;
    while !served && started.elapsed() < Duration::from_secs(20) {
        if child.0.try_wait().unwrap().is_some() {
            break;
        }
        if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
            use std::io::Write;
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ =
                s.write_all(b"GET /marker-path HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            served = answer.starts_with("HTTP/1.1 200");
        }
        thread::sleep(Duration::from_millis(50));
    }
    // A graceful stop, so that corral's own lines end.
    if child.0.try_wait().unwrap().is_none() {
        let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let until = Instant::now() + Duration::from_secs(10);
        while child.0.try_wait().unwrap().is_none() && Instant::now() < until {
            thread::sleep(Duration::from_millis(20));
        }
    }
    drop(child);
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    assert!(served, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stderr.contains("\"GET /marker-path HTTP/1.1\" 200 2"),
        "the access line is not on stderr: {stderr}"
    );
    assert!(
        !stdout.contains("/marker-path"),
        "the access line is on stdout: {stdout}"
    );
    assert!(
        stdout.contains("in service"),
        "corral's own lines are not on stdout: {stdout}\nstderr: {stderr}"
    );
    let mut check = vec!["check", "app:app", "--python"];
    let python = python();
    check.push(&python);
    check.extend(flags);
    let out = corral(dir.path(), &check);
    assert_eq!(out.status.code(), Some(0), "{}{}", out.stdout, out.stderr);
}

#[test]
fn an_app_folder_that_is_not_there_is_refused_at_the_start_as_gunicorn_refuses_it() {
    // gunicorn exits at once ("can't chdir"); corral bound its port, then
    // every worker failed to start blaming the interpreter, and the port
    // answered 503 for good.
    let dir = dir_with("main.py", "def app(e, s):\n    pass\n");
    let python = python();
    for (args, why) in [
        (
            vec![
                "--chdir",
                "/nonexistent/app",
                "main:app",
                "-b",
                "127.0.0.1:0",
            ],
            "error: the app's folder /nonexistent/app (--chdir, app.chdir) cannot be entered: No such file or directory",
        ),
        (
            vec!["--chdir", "main.py", "main:app", "-b", "127.0.0.1:0"],
            "(--chdir, app.chdir) is not a folder: give the folder the app is in",
        ),
    ] {
        for check in [false, true] {
            let mut all = if check { vec!["check"] } else { vec![] };
            all.extend(["--python", &python]);
            all.extend(&args);
            let out = corral(dir.path(), &all);
            assert_eq!(out.status.code(), Some(2), "{all:?}: {}", out.stderr);
            assert!(out.stderr.contains(why), "{all:?}: {}", out.stderr);
        }
    }
}

#[test]
fn config_dev_null_reads_no_file_as_gunicorn_takes_it() {
    // `-c /dev/null` is how a gunicorn command keeps off a gunicorn.conf.py
    // in its folder (gunicorn warns and serves); corral refused it as a
    // device.
    let dir = dir_with(
        "main.py",
        "def app(environ, start_response):\n    start_response('200 OK', [])\n    return [b'ok']\n",
    );
    std::fs::write(dir.path().join("gunicorn.conf.py"), "workers = 3\n").unwrap();
    let python = python();
    let out = corral(dir.path(), &["check", "--python", &python, "main:app"]);
    assert!(
        out.status.success() && out.stdout.contains("would start 3 worker(s)"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    let out = corral(
        dir.path(),
        &["check", "-c", "/dev/null", "--python", &python, "main:app"],
    );
    assert!(
        out.status.success() && out.stdout.contains("would start 1 worker(s): default"),
        "{}{}",
        out.stdout,
        out.stderr
    );
}
