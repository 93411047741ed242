//! Test harness: starts the real `corral` binary with real Python workers on
//! an app written to a temporary folder, and talks HTTP to it over real
//! sockets. Every wait has a timeout; every process is killed on drop.
#![allow(dead_code)]

pub mod compare;
pub mod h2;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The interpreter the tests run workers with: `$CORRAL_TEST_PYTHON`, else
/// the project's `.venv` (made by `./test.sh`), else `python3`.
pub fn python() -> String {
    if let Ok(p) = std::env::var("CORRAL_TEST_PYTHON") {
        return p;
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if venv.exists() {
        return venv.display().to_string();
    }
    "python3".into()
}

/// A temporary folder holding the app's files.
pub struct AppDir {
    pub dir: tempfile::TempDir,
}

impl AppDir {
    pub fn new(files: &[(&str, &str)]) -> AppDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            let p = dir.path().join(name);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).unwrap();
            }
            std::fs::write(p, text).unwrap();
        }
        AppDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Waits for `child` to exit, then for every line it wrote to `log`
/// before it did; None on timeout.
pub fn wait_exit(
    child: &mut Child,
    log: &Log,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            log.wait_closed(Duration::from_secs(5));
            return Some(st);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Log lines of a running process, shared with the threads that read them,
/// and how many of its streams have reached their end.
#[derive(Clone, Default)]
pub struct Log(
    Arc<(Mutex<LogState>, Condvar)>,
    Arc<std::sync::atomic::AtomicBool>,
);

/// The lines so far, and how many streams have ended.
type LogState = (Vec<String>, usize);

impl Log {
    /// The lines `child` writes to its piped stderr and stdout, each also
    /// echoed to the test's output as "[name] line".
    pub fn collect(child: &mut Child, name: &'static str) -> Log {
        let log = Log::default();
        for stream in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        ] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    // A reader that stalls (see `pause`), for at most a minute.
                    let stalled = Instant::now();
                    while log.1.load(std::sync::atomic::Ordering::Relaxed)
                        && stalled.elapsed() < Duration::from_secs(60)
                    {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    eprintln!("[{name}] {line}");
                    log.push(line);
                }
                let (state, cv) = &*log.0;
                state.lock().unwrap().1 += 1;
                cv.notify_all();
            });
        }
        log
    }

    /// Stops (true) or resumes (false) reading the process's output, as a
    /// log reader that stalls does: its pipes fill up. A pause ends by
    /// itself after a minute.
    pub fn pause(&self, paused: bool) {
        self.1.store(paused, std::sync::atomic::Ordering::Relaxed);
    }

    fn push(&self, line: String) {
        let (state, cv) = &*self.0;
        state.lock().unwrap().0.push(line);
        cv.notify_all();
    }

    pub fn text(&self) -> String {
        self.0.0.lock().unwrap().0.join("\n")
    }

    /// Waits until a line contains `needle`; returns that line.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Option<String> {
        let (state, cv) = &*self.0;
        let deadline = Instant::now() + timeout;
        let mut guard = state.lock().unwrap();
        loop {
            if let Some(l) = guard.0.iter().find(|l| l.contains(needle)) {
                return Some(l.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            guard = cv.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    /// Waits (at most `timeout`) until both streams have ended, so that
    /// every line the process wrote before it exited is here. A stream a
    /// child of the process still holds open may not end: then it returns
    /// after the timeout.
    pub fn wait_closed(&self, timeout: Duration) {
        let (state, cv) = &*self.0;
        let deadline = Instant::now() + timeout;
        let mut guard = state.lock().unwrap();
        while guard.1 < 2 {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            guard = cv.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    /// Waits (at most 10 s) for a line with `needle`: corral's lines go
    /// through a queue and a pipe, so they can arrive after the event a
    /// client saw (an answer, an exit), and reading `text()` right away races.
    pub fn has(&self, needle: &str) -> bool {
        self.wait_for(needle, Duration::from_secs(10)).is_some()
    }

    /// Waits (at most `timeout`) until at least `n` lines contain `needle`,
    /// as [`Log::has`] does for one; returns how many do.
    pub fn wait_count(&self, needle: &str, n: usize, timeout: Duration) -> usize {
        let (state, cv) = &*self.0;
        let deadline = Instant::now() + timeout;
        let mut guard = state.lock().unwrap();
        loop {
            let seen = guard.0.iter().filter(|l| l.contains(needle)).count();
            let now = Instant::now();
            if seen >= n || now >= deadline {
                return seen;
            }
            guard = cv.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    pub fn count(&self, needle: &str) -> usize {
        self.0
            .0
            .lock()
            .unwrap()
            .0
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
}

/// A running corral; killed (SIGKILL) on drop if still running.
pub struct Corral {
    pub child: Child,
    pub log: Log,
    pub addr: String,
    /// The status server's address, when one was asked for.
    pub status_addr: String,
    /// The control socket (unless the test gave its own `--socket`).
    pub socket: PathBuf,
}

pub fn corral_bin() -> &'static str {
    env!("CARGO_BIN_EXE_corral")
}

impl Corral {
    /// Starts corral in `dir` with `args` (binding 127.0.0.1:0 unless the
    /// args bind something) and waits until `workers` workers are in service.
    pub fn start(dir: &Path, args: &[&str], workers: usize) -> Corral {
        let mut c = Corral::spawn(dir, args, &[]);
        c.wait_listening();
        if workers > 0 {
            c.wait_in_service(workers);
        }
        c
    }

    /// Starts corral without waiting for anything.
    pub fn spawn(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Corral {
        Corral::spawn_with(dir, args, env, |_| {})
    }

    /// [`Corral::spawn`], with a last say on the command (`setup`).
    pub fn spawn_with(
        dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        setup: impl FnOnce(&mut Command),
    ) -> Corral {
        Corral::spawn_inner(&[], dir, args, env, setup, true)
    }

    /// [`Corral::spawn`] in a private network namespace with only its
    /// loopback up: corral may bind `0.0.0.0` there, reachable from
    /// nowhere else (read its log; requests from the test cannot reach it).
    pub fn spawn_in_netns(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Corral {
        let netns = [
            "unshare",
            "--net",
            "sh",
            "-c",
            "ip link set lo up && exec \"$@\"",
            "sh",
        ];
        Corral::spawn_inner(&netns, dir, args, env, |_| {}, true)
    }

    /// [`Corral::spawn`] as in a read-only container: in a mount namespace
    /// of its own where /tmp, /run, /var/lib and /root are read-only (each
    /// a read-only bind of itself there; nothing changes outside), with
    /// corral's default control socket. Needs root.
    pub fn spawn_read_only(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Corral {
        let read_only = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "for d in /tmp /run /var/lib /root; do \
             mount --bind \"$d\" \"$d\" && mount -o remount,bind,ro \"$d\" || exit 1; done; \
             exec \"$@\"",
            "sh",
        ];
        Corral::spawn_inner(&read_only, dir, args, env, |_| {}, false)
    }

    /// [`Corral::spawn`] on a terminal: Python's `pty.spawn` runs corral
    /// as the leader of a session whose controlling terminal is a new
    /// pseudo-terminal, as from an operator's shell. `pid()` is Python's;
    /// corral is its child (see [`children_of`]): stop it by its pid.
    pub fn spawn_on_terminal(dir: &Path, args: &[&str]) -> Corral {
        let python = python();
        let pty = [
            python.as_str(),
            "-c",
            "import pty, sys; pty.spawn(sys.argv[1:])",
        ];
        Corral::spawn_inner(&pty, dir, args, &[], |_| {}, true)
    }

    /// [`Corral::spawn`] of a copy of corral's binary, made in `dir` as
    /// `corral` and run as `./corral`, as an installed binary that an
    /// upgrade replaces is.
    pub fn spawn_copy(dir: &Path, args: &[&str]) -> Corral {
        let copy = ["sh", "-c", "cp \"$0\" corral && exec ./corral \"$@\""];
        Corral::spawn_inner(&copy, dir, args, &[], |_| {}, true)
    }

    /// [`Corral::spawn`] under a wrapper that runs the program it is given,
    /// as `opentelemetry-instrument corral app:app`: `wrapper` is the
    /// wrapper's program and its arguments, corral's path comes after them.
    pub fn spawn_under(
        wrapper: &[&str],
        dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Corral {
        Corral::spawn_inner(wrapper, dir, args, env, |_| {}, true)
    }

    /// [`Corral::spawn`] with corral's default control socket (no
    /// `--socket`): one per instance under `$XDG_RUNTIME_DIR/corral`, so
    /// pass `XDG_RUNTIME_DIR` (a private temporary folder) in `env`.
    pub fn spawn_default_socket(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Corral {
        Corral::spawn_inner(&[], dir, args, env, |_| {}, false)
    }

    /// Starts corral, after `prefix` (a program and its arguments that run
    /// corral's path, given last) when there is one.
    fn spawn_inner(
        prefix: &[&str],
        dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        setup: impl FnOnce(&mut Command),
        own_socket: bool,
    ) -> Corral {
        let mut cmd = match prefix {
            [] => Command::new(corral_bin()),
            [program, rest @ ..] => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(corral_bin());
                cmd
            }
        };
        cmd.current_dir(dir).args(args);
        if !args.contains(&"--python") {
            cmd.arg("--python").arg(python());
        }
        cmd.env_remove("VIRTUAL_ENV")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // uvicorn's --host, --port and --uds, and waitress's --listen and
        // --unix-socket, name the address too ("--listen=*:8080" as well).
        let names_address = |a: &&str| {
            [
                "-b",
                "--bind",
                "-c",
                "--config",
                "--host",
                "--port",
                "--uds",
                "--listen",
                "--unix-socket",
            ]
            .contains(&a.split('=').next().unwrap_or(a))
        };
        // So do uvicorn's and granian's variables for them.
        let env_names_address = env.iter().any(|(k, _)| {
            ["UVICORN_", "GRANIAN_"].iter().any(|p| {
                ["HOST", "PORT", "UDS"]
                    .iter()
                    .any(|n| *k == format!("{p}{n}"))
            })
        });
        if !args.iter().any(names_address) && !env_names_address {
            cmd.args(["-b", "127.0.0.1:0"]);
        }
        // Each corral gets its own control socket (tests run in parallel).
        let socket = dir.join(".corral-control.sock");
        if own_socket && !args.contains(&"--socket") {
            cmd.arg("--socket").arg(&socket);
        }
        // Each corral keeps its state in its own folder, never in the
        // host's default (/var/lib/corral/NAME as root), which would fill
        // up with every test run; a test's own env or setup may override.
        cmd.env("STATE_DIRECTORY", dir.join(".corral-state"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        setup(&mut cmd);
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

    pub fn wait_listening(&mut self) {
        let line = self
            .log
            .wait_for("listening on http", Duration::from_secs(20))
            .unwrap_or_else(|| panic!("corral never listened; log:\n{}", self.log.text()));
        // http://ADDR, or https://ADDR on a TLS bind.
        let addr = line.split("listening on http").nth(1).unwrap();
        let addr = addr.split("://").nth(1).unwrap().trim();
        self.addr = addr.split_whitespace().next().unwrap().to_string();
        if let Some(line) = self
            .log
            .wait_for("status server on http://", Duration::from_millis(200))
        {
            let addr = line
                .split("status server on http://")
                .nth(1)
                .unwrap()
                .trim();
            self.status_addr = addr.split_whitespace().next().unwrap().to_string();
        }
    }

    /// GET on the status server (start corral with `--status-bind 127.0.0.1:0`).
    pub fn status(&self, path: &str) -> Response {
        assert!(
            !self.status_addr.is_empty(),
            "no status server: pass --status-bind"
        );
        request(&self.status_addr, "GET", path, &[], b"")
    }

    /// `/status` as JSON.
    pub fn status_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.status("/status").body).expect("/status is JSON")
    }

    /// One sample of `/metrics`, by its full name (labels included).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let text = self.status("/metrics").text();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    pub fn wait_in_service(&self, n: usize) {
        let needle = format!("all {n} workers in service");
        self.log
            .wait_for(&needle, Duration::from_secs(30))
            .unwrap_or_else(|| panic!("workers never came in service; log:\n{}", self.log.text()));
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The pid of the worker that answers `path` (an app that answers its
    /// pid there).
    pub fn worker_pid(&self, path: &str) -> u32 {
        let r = self.get(path);
        assert_eq!(r.status, 200, "{}", r.text());
        r.text().parse().unwrap()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling a child we started and have not reaped.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for corral to exit; None on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        wait_exit(&mut self.child, &self.log, timeout)
    }

    /// Waits until `ok()` holds, for at most 30 s; fails with the log.
    pub fn wait_until(&self, what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ok() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; log:\n{}",
                self.log.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// After a SIGUSR2: the new corral's pid, from the log, in a guard that
    /// kills it when the test ends (it is not our child).
    pub fn reexec_child(&self) -> KillOnDrop {
        let line = self
            .log
            .wait_for(STARTED_NEW, Duration::from_secs(10))
            .expect("USR2 starts a new corral");
        started_pid(&line)
    }

    /// The corral the last USR2 started (see [`Corral::reexec_child`]).
    pub fn last_reexec_child(&self) -> KillOnDrop {
        let text = self.log.text();
        let line = text
            .lines()
            .rev()
            .find(|l| l.contains(STARTED_NEW))
            .expect("USR2 started a new corral");
        started_pid(line)
    }

    pub fn get(&self, path: &str) -> Response {
        request(&self.addr, "GET", path, &[], b"")
    }

    pub fn connect(&self) -> TcpStream {
        connect(&self.addr)
    }
}

/// Kills a process this test caused to start (by its pid) on drop.
/// What corral logs when a USR2 started a new corral, before its pid.
const STARTED_NEW: &str = "started a new corral (pid ";

/// The pid in a "started a new corral (pid N)" line.
fn started_pid(line: &str) -> KillOnDrop {
    let pid = line
        .split(STARTED_NEW)
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .expect("a pid after \"started a new corral\"");
    KillOnDrop(pid.parse().unwrap())
}

pub struct KillOnDrop(pub u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a pid this test started, found in corral's log.
        unsafe {
            libc::kill(self.0 as i32, libc::SIGKILL);
        }
    }
}

impl Drop for Corral {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `corral reload --wait` on `c`'s control socket: its exit code and
/// what it printed (stdout, then stderr).
pub fn reload_wait(c: &Corral) -> (Option<i32>, String) {
    let out = Command::new(corral_bin())
        .args(["reload", "--wait", "--socket", c.socket.to_str().unwrap()])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

/// The Python worker processes whose parent is `ppid`.
pub fn children_of(ppid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // pid (comm) state ppid ...
            if let Some(rest) = stat.rsplit(')').next() {
                let fields: Vec<&str> = rest.split_whitespace().collect();
                if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(ppid) {
                    out.push(pid);
                }
            }
        }
    }
    out
}

/// True when the test runs as root (as CI does). Otherwise the test
/// fails under `CI` (a missing precondition must not pass for a green
/// run) and says it is skipped elsewhere; `why` says what needs root.
pub fn require_root(why: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "this test needs root ({why}), and CI runs as root"
    );
    eprintln!("SKIPPED: needs root ({why})");
    false
}

/// The first of `paths` that exists: a program from Debian's `package`,
/// which `.ci/run` installs. Missing, the test fails under `CI` and says
/// it is skipped elsewhere, as [`require_root`] does.
pub fn debian_program(paths: &[&'static str], package: &str) -> Option<&'static Path> {
    let found = paths.iter().map(|p| Path::new(*p)).find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{package} is not installed (apt-get install {package}; .ci/run does)"
        );
        eprintln!("SKIPPED: no {package}");
    }
    found
}

pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie has exited; only its parent has not reaped it yet.
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// Sends SIGSTOP to `pid` and waits until every thread of it has stopped.
/// The kernel stops each thread only when it next runs, so on a busy
/// machine a process keeps working for tens of milliseconds after kill(2)
/// returns: a test that means "the worker no longer reads" waits for it.
pub fn stop_process(pid: u32) {
    // SAFETY: signalling a process the test started.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    let stopped = |task: &std::fs::DirEntry| {
        std::fs::read_to_string(task.path().join("stat"))
            .map(|stat| {
                stat.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('T')
            })
            .unwrap_or(true)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| d.flatten().collect::<Vec<_>>())
            .unwrap_or_default();
        if tasks.iter().all(stopped) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "process {pid} did not stop in 10 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until none of `pids` is alive.
pub fn wait_gone(pids: &[u32], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if pids.iter().all(|p| !alive(*p)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------- HTTP

pub fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

#[derive(Debug, Clone)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub reason: String,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == &name.to_ascii_lowercase())
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> HashMap<String, serde_json::Value> {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// For an app that answers `?mutate=V` with `X-Kind: V` from a header
/// list it changes in place, `?same` with `X-Kind: tuple` from a list it
/// never changes, and any other query with `X-Kind: fresh` and `X-Query:`
/// the query: checks that each response has the headers passed for it (a
/// worker reuses the head it encoded for a status only while the headers
/// are equal).
pub fn assert_each_response_has_its_own_headers(addr: &str) {
    for q in ["a", "a", "b", "same", "c", "same"] {
        let r = request(addr, "GET", &format!("/?{q}"), &[], b"");
        assert_eq!(r.status, 200, "{r:?}");
        if q == "same" {
            assert_eq!(r.header("x-kind"), Some("tuple"), "{r:?}");
            assert_eq!(r.header("x-query"), None, "{r:?}");
        } else {
            assert_eq!(r.header("x-kind"), Some("fresh"), "{r:?}");
            assert_eq!(r.header("x-query"), Some(q), "{r:?}");
        }
    }
    for v in ["one", "one", "two", "three"] {
        let r = request(addr, "GET", &format!("/?mutate={v}"), &[], b"");
        assert_eq!(r.header("x-kind"), Some(v), "{r:?}");
    }
}

/// One request on a new connection.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut s = connect(addr);
    send_request(&mut s, method, path, headers, body);
    let mut r = BufReader::new(s);
    read_response(&mut r, method == "HEAD").expect("response")
}

/// `GET /` over the Unix socket at `path`, on a connection of its own.
pub fn get_unix(path: &Path) -> Response {
    let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    read_response(&mut BufReader::new(s), false).expect("an answer over the Unix socket")
}

pub fn send_request(
    s: &mut TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) {
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str("Host: localhost\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty()
        && !headers.iter().any(|(k, _)| {
            k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding")
        })
    {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
}

/// Reads one response; `head_only` for responses to HEAD.
pub fn read_response<R: BufRead>(r: &mut R, head_only: bool) -> std::io::Result<Response> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    let mut parts = line.trim_end().splitn(3, ' ');
    let version = parts.next().unwrap_or("").to_string();
    let status: u16 = parts.next().unwrap_or("0").parse().unwrap_or(0);
    let reason = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let mut resp = Response {
        version,
        status,
        reason,
        headers,
        body: Vec::new(),
    };
    if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(resp);
    }
    if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            if size == 0 {
                // trailers
                loop {
                    line.clear();
                    r.read_line(&mut line)?;
                    if line.trim_end().is_empty() {
                        break;
                    }
                }
                break;
            }
            let mut chunk = vec![0; size];
            r.read_exact(&mut chunk)?;
            resp.body.extend_from_slice(&chunk);
            line.clear();
            r.read_line(&mut line)?;
        }
    } else if let Some(n) = resp
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        resp.body = vec![0; n];
        r.read_exact(&mut resp.body)?;
    } else {
        r.read_to_end(&mut resp.body)?;
    }
    Ok(resp)
}

/// A path relative to the repository.
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

// ---------------------------------------------------------------- memory

/// Runs `f` while a thread samples the RSS of each of `pids` every 20 ms;
/// returns what `f` returned and the largest RSS (KiB) seen for each pid,
/// so a buffer that grows while a body flows and is freed at the end still
/// counts.
pub fn peak_rss_during<T>(pids: &[u32], f: impl FnOnce() -> T) -> (T, Vec<u64>) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let peaks: Vec<Arc<AtomicU64>> = pids.iter().map(|_| Arc::new(AtomicU64::new(0))).collect();
    let sampler = {
        let (stop, peaks, pids) = (stop.clone(), peaks.clone(), pids.to_vec());
        std::thread::spawn(move || {
            loop {
                for (pid, peak) in pids.iter().zip(&peaks) {
                    peak.fetch_max(rss_kib(*pid), Ordering::Relaxed);
                }
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let out = f();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    (
        out,
        peaks.iter().map(|p| p.load(Ordering::Relaxed)).collect(),
    )
}

// ---------------------------------------------------------------- capacity

/// Capacity seen from the outside: rounds of `width` requests sent at once
/// to `path` (an endpoint that holds each request a while and answers the
/// worker's pid), each round started when the last one ended. With `width`
/// workers in service, each round is answered by `width` distinct pids; a
/// worker missing from service shows as a round with fewer.
pub struct CapacityLoad {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<CapacityReport>,
}

/// What a [`CapacityLoad`] saw.
#[derive(Debug, Default)]
pub struct CapacityReport {
    pub rounds: usize,
    /// The fewest distinct pids that answered one round.
    pub fewest_pids: usize,
    /// Requests not answered 200, with what they got.
    pub failed: Vec<String>,
    /// Every pid that answered, and every body.
    pub pids: std::collections::HashSet<String>,
    pub bodies: Vec<String>,
}

impl CapacityLoad {
    pub fn start(addr: &str, path: &str, width: usize) -> CapacityLoad {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (addr, path, flag) = (addr.to_string(), path.to_string(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut report = CapacityReport {
                fewest_pids: usize::MAX,
                ..Default::default()
            };
            let deadline = Instant::now() + Duration::from_secs(60);
            while !flag.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                let round: Vec<_> = (0..width)
                    .map(|_| {
                        let (addr, path) = (addr.clone(), path.clone());
                        std::thread::spawn(move || request(&addr, "GET", &path, &[], b""))
                    })
                    .collect();
                let mut pids = std::collections::HashSet::new();
                for r in round {
                    let r = r.join().unwrap();
                    if r.status == 200 {
                        let body = r.text();
                        let pid = body.split_whitespace().last().unwrap_or("").to_string();
                        pids.insert(pid.clone());
                        report.pids.insert(pid);
                        report.bodies.push(body);
                    } else {
                        report.failed.push(format!("{} {}", r.status, r.text()));
                    }
                }
                report.rounds += 1;
                report.fewest_pids = report.fewest_pids.min(pids.len());
            }
            report
        });
        CapacityLoad { stop, thread }
    }

    pub fn finish(self) -> CapacityReport {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// Runs the openssl CLI in `dir` (a test's own CA and certificates).
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One mount(2) call for [`with_mounts`]: source, target, file system
/// type, flags and data, as mount(2) takes them (None: a null pointer).
pub struct Mount {
    pub source: Option<std::ffi::CString>,
    pub target: std::ffi::CString,
    pub fstype: Option<std::ffi::CString>,
    pub flags: libc::c_ulong,
    pub data: Option<std::ffi::CString>,
}

impl Mount {
    /// `dir` bound onto itself, then made read-only there.
    pub fn read_only(dir: &Path) -> [Mount; 2] {
        let bound = Mount::bind(dir, dir);
        let target = bound.target.clone();
        [
            bound,
            Mount {
                source: None,
                target,
                fstype: None,
                flags: libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                data: None,
            },
        ]
    }

    /// `source` bound at `target`.
    pub fn bind(source: &Path, target: &Path) -> Mount {
        let c = |p: &Path| std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        Mount {
            source: Some(c(source)),
            target: c(target),
            fstype: None,
            flags: libc::MS_BIND,
            data: None,
        }
    }

    /// A new file system of `fstype` at `target`, with `data` its options.
    pub fn new_fs(fstype: &str, target: &Path, data: &str) -> Mount {
        let c = |s: &str| std::ffi::CString::new(s).unwrap();
        Mount {
            source: Some(c(fstype)),
            target: c(target.to_str().unwrap()),
            fstype: Some(c(fstype)),
            flags: 0,
            data: Some(c(data)),
        }
    }
}

/// Runs `cmd` in a mount namespace of its own (root only), every mount in
/// it private, with `mounts` made there in order before it runs.
pub fn with_mounts(cmd: &mut Command, mounts: Vec<Mount>) {
    use std::os::unix::process::CommandExt;
    let ptr = |s: &Option<std::ffi::CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: between fork and exec, only async-signal-safe calls on
    // memory made before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let none = std::ptr::null::<libc::c_char>();
            let mut ok = libc::unshare(libc::CLONE_NEWNS) == 0
                && libc::mount(
                    none,
                    c"/".as_ptr(),
                    none,
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) == 0;
            for m in &mounts {
                ok = ok
                    && libc::mount(
                        ptr(&m.source),
                        m.target.as_ptr(),
                        ptr(&m.fstype),
                        m.flags,
                        ptr(&m.data).cast(),
                    ) == 0;
            }
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}
