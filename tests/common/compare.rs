//! Comparing corral with a reference server (gunicorn, uvicorn) on one real
//! app: the reference server's process, the request table's `Req`, one HTTP
//! exchange, and the comparison of two answers with a readable diff.
//!
//! Each framework test file keeps its apps, its requests and its
//! normalisations; this module holds what compares them.

use std::collections::BTreeSet;
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{AppDir, Corral, Log, Response, python, read_response};

/// Longest wait for any one connect, read or write.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Headers that describe the server or the connection, not the app.
/// Content-Length is compared only when both servers send it (a server may
/// frame a body by chunks instead).
pub const IGNORED_HEADERS: &[&str] = &[
    "date",
    "server",
    "connection",
    "transfer-encoding",
    // corral adds one to every response (README: request ids).
    "x-request-id",
];

pub const JSON_TYPE: &str = "application/json";

// ------------------------------------------------ the Python environment

/// Panics, saying what to do, unless `python()` imports each of `modules`
/// (Python's names, comma-separated). Asked once per list in a test run;
/// `serves` says what the tests that need them serve ("a real Quart
/// app").
pub fn require_modules(modules: &str, serves: &str) {
    static CHECKED: std::sync::Mutex<Vec<(String, Result<String, String>)>> =
        std::sync::Mutex::new(Vec::new());
    let mut checked = CHECKED.lock().unwrap_or_else(|e| e.into_inner());
    let known = checked.iter().position(|(m, _)| m == modules);
    let i = known.unwrap_or_else(|| {
        let import = format!("import {modules}");
        let found = probe_python(&import, Duration::from_secs(20));
        checked.push((modules.to_string(), found));
        checked.len() - 1
    });
    if let Err(why) = &checked[i].1 {
        panic!(
            "{why}\nThese tests serve {serves} and compare corral with uvicorn. Run ./test.sh \
             (it makes .venv from requirements-test.txt), or set CORRAL_TEST_PYTHON to an \
             interpreter that has {modules}."
        );
    }
}

/// Runs `python() -c script` for at most `timeout`; its stdout, or why it
/// failed (with what it printed).
pub fn probe_python(script: &str, timeout: Duration) -> Result<String, String> {
    let py = python();
    let mut child = Command::new(&py)
        .args(["-c", script])
        .env_remove("VIRTUAL_ENV")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run the test interpreter {py}: {e}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{py} did not answer within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    let mut err = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).ok();
    child.stderr.take().unwrap().read_to_string(&mut err).ok();
    if !status.success() {
        let said: Vec<&str> = [out.trim(), err.trim()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
        return Err(format!(
            "the test interpreter {py} failed: {}",
            said.join("\n")
        ));
    }
    Ok(out)
}

// ------------------------------------------------------ reference server

/// A running reference server; its whole process group is killed on drop.
pub struct Reference {
    /// What messages call it: "gunicorn", "uvicorn".
    pub name: &'static str,
    pub addr: String,
    pub log: Log,
    child: Child,
}

impl Reference {
    /// Spawns `cmd` (which must listen on `addr`) in its own process group,
    /// collects its output, and waits at most `timeout` until it accepts
    /// connections.
    pub fn start(name: &'static str, mut cmd: Command, addr: String, timeout: Duration) -> Self {
        cmd.env_remove("VIRTUAL_ENV")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that drop kills its workers and
            // anything else it started.
            .process_group(0);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        let log = Log::collect(&mut child, name);
        let mut server = Reference {
            name,
            addr,
            log,
            child,
        };
        server.wait_accepting(timeout);
        server
    }

    /// The server's main process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` to the server (its main process) and waits at most
    /// `timeout` for it to exit, and for every line it wrote before.
    pub fn stop(&mut self, sig: i32, timeout: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: signalling a child we started and have not reaped.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
        super::wait_exit(&mut self.child, &self.log, timeout)
    }

    fn wait_accepting(&mut self, timeout: Duration) {
        let name = self.name;
        let addr: SocketAddr = self.addr.parse().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "{name} exited ({st}) before it listened; log:\n{}",
                    self.log.text()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not accept connections on {addr} within {timeout:?}; log:\n{}",
                self.log.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        // SAFETY: signalling the process group of a child we started (its
        // pid is the group id: see `process_group(0)`) and have not reaped.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on (the OS picks it; released before use).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// Both servers on one copy of an app.
pub struct Servers {
    /// The app's name, for failure messages.
    pub app: &'static str,
    pub reference: Reference,
    pub corral: Corral,
    _dir: AppDir,
}

impl Servers {
    /// Writes `files` to a temporary folder, starts the reference server
    /// there with `reference`, then corral with `corral_args` plus `--chdir`
    /// the folder, and waits for its `workers`.
    pub fn start(
        app: &'static str,
        files: &[(&str, &str)],
        reference: impl FnOnce(&Path) -> Reference,
        corral_args: &[&str],
        workers: usize,
    ) -> Servers {
        let dir = AppDir::new(files);
        let path = dir.path().to_str().expect("utf-8 temp path").to_string();
        let reference = reference(dir.path());
        let mut args = corral_args.to_vec();
        args.extend(["--chdir", &path]);
        let corral = Corral::start(dir.path(), &args, workers);
        Servers {
            app,
            reference,
            corral,
            _dir: dir,
        }
    }

    /// (name, address) of each server, the reference first.
    pub fn both(&self) -> [(&'static str, &str); 2] {
        [
            (self.reference.name, &self.reference.addr),
            ("corral", &self.corral.addr),
        ]
    }

    /// What each server logged, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "{} log:\n{}\ncorral log:\n{}",
            self.reference.name,
            self.reference.log.text(),
            self.corral.log.text()
        )
    }
}

// -------------------------------------------------------------- requests

#[derive(Clone)]
pub struct Req {
    pub label: &'static str,
    pub method: &'static str,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Send the cookies the client holds (like a browser), for clients that
    /// keep them.
    pub cookies: bool,
    /// What the app must answer (checked on both servers, so that two
    /// servers broken the same way do not pass): status and a body excerpt.
    pub expect: Option<(u16, String)>,
}

impl Req {
    pub fn new(label: &'static str, method: &'static str, path: &str) -> Req {
        Req {
            label,
            method,
            path: path.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            cookies: true,
            expect: None,
        }
    }

    pub fn get(label: &'static str, path: &str) -> Req {
        Req::new(label, "GET", path)
    }

    pub fn post(
        label: &'static str,
        path: &str,
        content_type: &str,
        body: impl Into<Vec<u8>>,
    ) -> Req {
        let mut r = Req::new(label, "POST", path).header("Content-Type", content_type);
        r.body = body.into();
        r
    }

    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn without_cookies(mut self) -> Req {
        self.cookies = false;
        self
    }

    pub fn expect(mut self, status: u16, body_contains: &str) -> Req {
        self.expect = Some((status, body_contains.to_string()));
        self
    }

    /// This request, as it is, on a fresh connection to `addr`.
    pub fn send_to(&self, addr: &str) -> Outcome {
        exchange(addr, self.method, &self.path, &self.headers, &self.body)
    }
}

pub type Outcome = Result<Response, String>;

/// One request on a fresh connection, with timeouts; errors as text.
/// Interim (1xx) responses are kept as "(interim response)" headers of the
/// final one, so that they compare like headers.
pub fn exchange(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Outcome {
    let mut s = connect_with_timeouts(addr)?;
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str("Host: localhost\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let framed = headers.iter().any(|(k, _)| {
        k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding")
    });
    if !body.is_empty() && !framed {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(body))
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut r = BufReader::new(s);
    let mut interim = Vec::new();
    loop {
        let mut resp = read_response(&mut r, method == "HEAD")
            .map_err(|e| format!("reading the response: {e}"))?;
        if !(100..200).contains(&resp.status) {
            for status in interim {
                resp.headers
                    .push(("(interim response)".to_string(), status));
            }
            return Ok(resp);
        }
        interim.push(format!("{} {}", resp.status, resp.reason));
    }
}

/// A connection to `addr` with [`IO_TIMEOUT`] on connect, reads and writes.
pub fn connect_with_timeouts(addr: &str) -> Result<TcpStream, String> {
    let sock: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr}: {e}"))?;
    let s = TcpStream::connect_timeout(&sock, IO_TIMEOUT)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    Ok(s)
}

/// `body` in HTTP/1.1 chunks of `size` bytes.
pub fn chunked(body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in body.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

// ------------------------------------------------------------ comparison

/// Asks both servers each of `reqs` in order (`ask` returns the reference's
/// answer, then corral's) and fails with a readable diff of every request
/// they answered differently, or not as expected.
#[track_caller]
pub fn assert_same_answers(
    servers: &Servers,
    reqs: &[Req],
    mut ask: impl FnMut(&Req) -> [Outcome; 2],
) {
    let reference = servers.reference.name;
    let mut problems = Vec::new();
    for (i, req) in reqs.iter().enumerate() {
        let [r, c] = ask(req);
        let mut found = Vec::new();
        if let Some((status, needle)) = &req.expect {
            for (server, outcome) in [(reference, &r), ("corral", &c)] {
                if let Ok(resp) = outcome
                    && (resp.status != *status || !contains(&resp.body, needle.as_bytes()))
                {
                    found.push(format!(
                        "{server}: expected status {status} and a body containing {needle:?}; got {} {} with body {:?}",
                        resp.status,
                        resp.reason,
                        excerpt(&resp.body, 0, 300)
                    ));
                }
            }
        }
        found.extend(differences(reference, &r, &c));
        if !found.is_empty() {
            problems.push(format!(
                "#{} {} {} ({}):\n  {}",
                i + 1,
                req.method,
                req.path,
                req.label,
                found.join("\n  ")
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{}: corral answered {} of {} requests differently from {reference}, or not as the app should:\n\n{}\n\n{}",
        servers.app,
        problems.len(),
        reqs.len(),
        problems.join("\n\n"),
        servers.logs()
    );
}

/// What differs between the reference server's answer `r` and corral's
/// `c`, one line (or block) each.
fn differences(reference: &str, r: &Outcome, c: &Outcome) -> Vec<String> {
    let (r, c) = match (r, c) {
        (Ok(r), Ok(c)) => (r, c),
        (Err(re), Err(ce)) => return vec![format!("no answer: {reference}: {re}; corral: {ce}")],
        (Err(re), Ok(_)) => return vec![format!("{reference} gave no answer: {re}")],
        (Ok(r), Err(ce)) => {
            return vec![format!(
                "corral gave no answer ({ce}); {reference} answered {} {}",
                r.status, r.reason
            )];
        }
    };
    let mut out = Vec::new();
    if (r.status, &r.reason) != (c.status, &c.reason) {
        out.push(format!(
            "status line: {reference} {:?}, corral {:?}",
            format!("{} {}", r.status, r.reason),
            format!("{} {}", c.status, c.reason)
        ));
    }
    let names: BTreeSet<&str> = r
        .headers
        .iter()
        .chain(&c.headers)
        .map(|(k, _)| k.as_str())
        .filter(|k| !IGNORED_HEADERS.contains(k))
        .collect();
    for name in names {
        let rv = values(r, name);
        let cv = values(c, name);
        if name == "content-length" && (rv.is_empty() || cv.is_empty()) {
            continue;
        }
        if rv != cv {
            out.push(format!(
                "header {name}: {reference} {}, corral {}",
                show_values(&rv),
                show_values(&cv)
            ));
        }
    }
    if r.body != c.body {
        out.push(body_diff(reference, &r.body, &c.body));
    }
    out
}

/// Every value of header `name` (names are lower case), in order.
fn values<'a>(r: &'a Response, name: &str) -> Vec<&'a str> {
    r.headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn show_values(v: &[&str]) -> String {
    if v.is_empty() {
        "(absent)".into()
    } else {
        format!("{v:?}")
    }
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

fn excerpt(b: &[u8], from: usize, len: usize) -> String {
    let to = (from + len).min(b.len());
    let from = from.min(to);
    let mut s = String::from_utf8_lossy(&b[from..to]).into_owned();
    if to < b.len() {
        s.push('…');
    }
    s
}

/// Where two bodies part, and a line diff when they are text.
fn body_diff(reference: &str, r: &[u8], c: &[u8]) -> String {
    let at = r
        .iter()
        .zip(c)
        .position(|(a, b)| a != b)
        .unwrap_or(r.len().min(c.len()));
    let from = at.saturating_sub(60);
    let width = reference.len().max("corral".len()) + 1;
    let mut out = format!(
        "body: {reference} {} bytes, corral {} bytes, first difference at byte {at}:\n    {:width$} {:?}\n    {:width$} {:?}",
        r.len(),
        c.len(),
        format!("{reference}:"),
        excerpt(r, from, 120),
        "corral:",
        excerpt(c, from, 120)
    );
    if let (Ok(rt), Ok(ct)) = (std::str::from_utf8(r), std::str::from_utf8(c))
        && (rt.lines().count() > 1 || ct.lines().count() > 1)
    {
        out.push_str(&format!("\n    line diff (- {reference}, + corral):"));
        out.push_str(&line_diff(rt, ct));
    }
    out
}

/// A longest-common-subsequence line diff, changed lines only.
fn line_diff(a: &str, b: &str) -> String {
    let a: Vec<&str> = a.lines().take(400).collect();
    let b: Vec<&str> = b.lines().take(400).collect();
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = String::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j == m || (i < n && lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("\n    - {:4} {:?}", i + 1, a[i]));
            i += 1;
        } else {
            out.push_str(&format!("\n    + {:4} {:?}", j + 1, b[j]));
            j += 1;
        }
    }
    out
}

// ---------------------------------------------------------- normalising

/// Sorts the methods an Allow header lists (why: at each caller).
pub fn sort_allow(resp: &mut Response) {
    for (name, value) in &mut resp.headers {
        if name == "allow" {
            let mut methods: Vec<&str> = value.split(',').map(str::trim).collect();
            methods.sort_unstable();
            *value = methods.join(", ");
        }
    }
}

/// Deterministic bytes covering every byte value, for bodies that must
/// arrive as sent.
pub fn binary(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x2545_f491;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect()
}
