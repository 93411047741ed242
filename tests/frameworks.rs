//! Real Flask and Django apps answer through corral exactly as they do
//! through gunicorn.
//!
//! Each test starts both servers on the same copy of the same app (corral
//! with the test harness, gunicorn from the interpreter's own venv), sends
//! both the same requests, one browser-like client per server (each keeps its
//! own cookies), and compares the answers: status line, body bytes and
//! headers, except the ones that describe the server or the connection
//! rather than the app (see [`IGNORED_HEADERS`]). Header names compare
//! case-insensitively: hyper writes them in lower case.
//!
//! The apps live in `tests/apps/`. They need Flask, Django and gunicorn in
//! the interpreter the tests use: `./test.sh` installs them into `.venv`.
//! Without them every test here fails and says so.

mod common;
use common::*;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Longest wait for any one connect, read or write.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for gunicorn to accept connections, or for the framework
/// probe to answer.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Headers that describe the server or the connection, not the app.
/// Content-Length is compared only when both servers send it (a server may
/// frame a body by chunks instead).
const IGNORED_HEADERS: &[&str] = &["date", "server", "connection", "transfer-encoding"];

// ------------------------------------------------------------------ apps

#[derive(Clone, Copy)]
enum Framework {
    Flask,
    Django,
}

const FLASK_FILES: &[(&str, &str)] = &[("flaskapp.py", include_str!("apps/flask_app/flaskapp.py"))];

const DJANGO_FILES: &[(&str, &str)] = &[
    (
        "djsite/__init__.py",
        include_str!("apps/django_site/djsite/__init__.py"),
    ),
    (
        "djsite/settings.py",
        include_str!("apps/django_site/djsite/settings.py"),
    ),
    (
        "djsite/urls.py",
        include_str!("apps/django_site/djsite/urls.py"),
    ),
    (
        "djsite/views.py",
        include_str!("apps/django_site/djsite/views.py"),
    ),
    (
        "djsite/wsgi.py",
        include_str!("apps/django_site/djsite/wsgi.py"),
    ),
];

impl Framework {
    fn name(self) -> &'static str {
        match self {
            Framework::Flask => "Flask",
            Framework::Django => "Django",
        }
    }

    fn app(self) -> &'static str {
        match self {
            Framework::Flask => "flaskapp:app",
            Framework::Django => "djsite.wsgi:application",
        }
    }

    fn files(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Framework::Flask => FLASK_FILES,
            Framework::Django => DJANGO_FILES,
        }
    }
}

// ------------------------------------------------ the Python environment

/// What the interpreter under test offers.
struct PyEnv {
    gunicorn: PathBuf,
    /// gunicorn >= 25.1 opens a control socket at a fixed path in $HOME
    /// unless told not to; two gunicorns at once would fight over it.
    no_control_socket: bool,
}

const PROBE: &str = r#"
import sys
missing = []
for name in ("flask", "django", "gunicorn"):
    try:
        __import__(name)
    except Exception as e:
        missing.append("%s (%s: %s)" % (name, type(e).__name__, e))
if missing:
    print("cannot import " + ", ".join(missing))
    sys.exit(1)
import gunicorn.config
print("no-control-socket" if hasattr(gunicorn.config, "ControlSocketDisable") else "")
"#;

/// Checks once that `python()` can import Flask, Django and gunicorn, and
/// finds the gunicorn next to it. Panics with what to do when it cannot.
fn py_env() -> &'static PyEnv {
    static ENV: OnceLock<Result<PyEnv, String>> = OnceLock::new();
    match ENV.get_or_init(probe_python) {
        Ok(env) => env,
        Err(why) => panic!(
            "{why}\nThese tests serve real Flask and Django apps and compare corral with gunicorn. \
             Run ./test.sh (it makes .venv from requirements-test.txt and runs the tests with it), \
             or set CORRAL_TEST_PYTHON to an interpreter that has flask, django and gunicorn."
        ),
    }
}

fn probe_python() -> Result<PyEnv, String> {
    let py = python();
    let mut child = Command::new(&py)
        .args(["-c", PROBE])
        .env_remove("VIRTUAL_ENV")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run the test interpreter {py}: {e}"))?;
    let deadline = Instant::now() + START_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{py} did not answer within {START_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    let mut err = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).ok();
    child.stderr.take().unwrap().read_to_string(&mut err).ok();
    if !status.success() {
        return Err(format!(
            "the test interpreter {py} {}{}",
            out.trim(),
            err.trim()
        ));
    }
    let gunicorn = Path::new(&py).with_file_name("gunicorn");
    if !gunicorn.is_file() {
        return Err(format!(
            "no gunicorn next to the test interpreter {py} (looked for {})",
            gunicorn.display()
        ));
    }
    Ok(PyEnv {
        gunicorn,
        no_control_socket: out.contains("no-control-socket"),
    })
}

// -------------------------------------------------------------- gunicorn

/// A running gunicorn; killed on drop.
struct Gunicorn {
    child: Child,
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Gunicorn {
    /// `gunicorn APP -w 2 -b 127.0.0.1:PORT --chdir DIR`, then waits until
    /// it accepts connections.
    fn start(dir: &Path, app: &str) -> Gunicorn {
        let env = py_env();
        let addr = format!("127.0.0.1:{}", free_port());
        let mut cmd = Command::new(&env.gunicorn);
        cmd.args([app, "-w", "2", "-b", &addr, "--chdir"])
            .arg(dir)
            .current_dir(dir)
            .env_remove("VIRTUAL_ENV")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that drop kills the workers too.
            .process_group(0);
        if env.no_control_socket {
            cmd.arg("--no-control-socket");
        }
        let mut child = cmd.spawn().expect("start gunicorn");
        let log = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        ] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    eprintln!("[gunicorn] {line}");
                    log.lock().unwrap().push(line);
                }
            });
        }
        let mut g = Gunicorn { child, addr, log };
        g.wait_accepting();
        g
    }

    fn wait_accepting(&mut self) {
        let addr: SocketAddr = self.addr.parse().unwrap();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "gunicorn exited ({st}) before it listened; log:\n{}",
                    self.log_text()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "gunicorn did not accept connections on {addr} within {START_TIMEOUT:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Gunicorn {
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
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// Both servers on one copy of the app.
struct Servers {
    corral: Corral,
    gunicorn: Gunicorn,
    _app: AppDir,
}

impl Servers {
    fn start(fw: Framework) -> Servers {
        py_env();
        let app = AppDir::new(fw.files());
        let dir = app.path().to_str().expect("utf-8 temp path").to_string();
        // gunicorn's workers import the app while corral starts.
        let gunicorn = Gunicorn::start(app.path(), fw.app());
        let corral = Corral::start(app.path(), &[fw.app(), "-w", "2", "--chdir", &dir], 2);
        Servers {
            corral,
            gunicorn,
            _app: app,
        }
    }
}

// -------------------------------------------------------------- requests

/// Stands for the CSRF token the client last saw in a form, in request
/// bodies and header values.
const CSRF: &str = "{csrf}";

#[derive(Clone)]
struct Req {
    label: &'static str,
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send the cookies the client holds (like a browser).
    cookies: bool,
    /// What the app must answer (checked on both servers, so that two
    /// servers broken the same way do not pass): status and a body excerpt.
    expect: Option<(u16, String)>,
}

impl Req {
    fn new(label: &'static str, method: &'static str, path: &str) -> Req {
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

    fn get(label: &'static str, path: &str) -> Req {
        Req::new(label, "GET", path)
    }

    fn post(label: &'static str, path: &str, content_type: &str, body: impl Into<Vec<u8>>) -> Req {
        let mut r = Req::new(label, "POST", path).header("Content-Type", content_type);
        r.body = body.into();
        r
    }

    fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    fn without_cookies(mut self) -> Req {
        self.cookies = false;
        self
    }

    fn expect(mut self, status: u16, body_contains: &str) -> Req {
        self.expect = Some((status, body_contains.to_string()));
        self
    }
}

type Outcome = Result<Response, String>;

/// A browser-like client of one server: keeps the cookies it is given and
/// the last CSRF token it saw in a form.
struct Client {
    addr: String,
    jar: Vec<(String, String)>,
    csrf_token: Option<String>,
    /// Values the app makes random on purpose, with the placeholder each
    /// stands for in the comparison.
    secrets: Vec<(String, &'static str)>,
}

impl Client {
    fn new(addr: &str) -> Client {
        Client {
            addr: addr.to_string(),
            jar: Vec::new(),
            csrf_token: None,
            secrets: Vec::new(),
        }
    }

    fn send(&mut self, req: &Req) -> Outcome {
        let token = self.csrf_token.clone().unwrap_or_default();
        let mut headers: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.replace(CSRF, &token)))
            .collect();
        if req.cookies && !self.jar.is_empty() {
            let cookie: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            headers.push(("Cookie".into(), cookie.join("; ")));
        }
        let body = replace_bytes(&req.body, CSRF.as_bytes(), token.as_bytes());
        let mut resp = exchange(&self.addr, req.method, &req.path, &headers, &body)?;
        self.learn(&resp);
        self.normalise(&mut resp);
        Ok(resp)
    }

    /// Takes cookies and the CSRF token from a response.
    fn learn(&mut self, resp: &Response) {
        for (name, value) in &resp.headers {
            if name != "set-cookie" {
                continue;
            }
            let pair = value.split(';').next().unwrap_or("");
            let Some((k, v)) = pair.split_once('=') else {
                continue;
            };
            let (k, v) = (k.trim().to_string(), v.trim().to_string());
            let expired = value
                .split(';')
                .any(|attr| attr.trim().eq_ignore_ascii_case("max-age=0"));
            self.jar.retain(|(name, _)| *name != k);
            if !expired {
                if k == "csrftoken" {
                    self.secrets.push((v.clone(), "<csrf cookie secret>"));
                }
                self.jar.push((k, v));
            }
        }
        let text = String::from_utf8_lossy(&resp.body);
        let marker = r#"name="csrfmiddlewaretoken" value=""#;
        if let Some(i) = text.find(marker) {
            let rest = &text[i + marker.len()..];
            let token = rest[..rest.find('"').unwrap_or(rest.len())].to_string();
            self.secrets.push((token.clone(), "<csrf form token>"));
            self.csrf_token = Some(token);
        }
    }

    /// Removes what legitimately differs between two servers running the
    /// same app, so that everything else can compare byte for byte.
    fn normalise(&self, resp: &mut Response) {
        // Django makes the CSRF secret (csrftoken cookie) random per client,
        // and masks the form token with fresh randomness on every response:
        // each server hands out its own. Stand them in by placeholders.
        for (secret, placeholder) in &self.secrets {
            resp.body = replace_bytes(&resp.body, secret.as_bytes(), placeholder.as_bytes());
            for (_, value) in &mut resp.headers {
                *value = value.replace(secret.as_str(), placeholder);
            }
        }
        // A header sent twice reaches the app joined by ", " under corral
        // (RFC 9110's list form, as corral documents) and by "," under
        // gunicorn; the tests' repeated header is X-Custom: one / two.
        let before = resp.body.len();
        resp.body = replace_bytes(&resp.body, b"one, two", b"one,two");
        if resp.body.len() != before {
            for (name, value) in &mut resp.headers {
                if name == "content-length" {
                    *value = resp.body.len().to_string();
                }
            }
        }
        // Werkzeug builds a 405's Allow from a set of method names, whose
        // order follows Python's per-process string hashing: two worker
        // processes of the same server may list them in different orders.
        for (name, value) in &mut resp.headers {
            if name == "allow" {
                let mut methods: Vec<&str> = value.split(',').map(str::trim).collect();
                methods.sort_unstable();
                *value = methods.join(", ");
            }
        }
    }
}

/// One request on a fresh connection, with timeouts; errors as text.
fn exchange(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Outcome {
    let sock: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr}: {e}"))?;
    let mut s = TcpStream::connect_timeout(&sock, IO_TIMEOUT)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
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
    read_response(&mut r, method == "HEAD").map_err(|e| format!("reading the response: {e}"))
}

fn replace_bytes(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    if from.is_empty() {
        return hay.to_vec();
    }
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

// ------------------------------------------------------------ comparison

/// Starts both servers on `fw`'s app, sends `reqs` in order to each, and
/// fails with a readable diff of every request they answered differently.
fn same_answers(fw: Framework, reqs: &[Req]) {
    let servers = Servers::start(fw);
    let mut reference = Client::new(&servers.gunicorn.addr);
    let mut tested = Client::new(&servers.corral.addr);
    let mut problems = Vec::new();
    for (i, req) in reqs.iter().enumerate() {
        let g = reference.send(req);
        let c = tested.send(req);
        let mut found = Vec::new();
        if let Some((status, needle)) = &req.expect {
            for (server, outcome) in [("gunicorn", &g), ("corral", &c)] {
                if let Ok(r) = outcome
                    && (r.status != *status || !contains(&r.body, needle.as_bytes()))
                {
                    found.push(format!(
                        "{server}: expected status {status} and a body containing {needle:?}; got {} {} with body {:?}",
                        r.status,
                        r.reason,
                        excerpt(&r.body, 0, 300)
                    ));
                }
            }
        }
        found.extend(differences(&g, &c));
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
        "{}: corral answered {} of {} requests differently from gunicorn, or not as the app should:\n\n{}\n",
        fw.name(),
        problems.len(),
        reqs.len(),
        problems.join("\n\n")
    );
}

/// What differs between the two answers, one line (or block) each.
fn differences(g: &Outcome, c: &Outcome) -> Vec<String> {
    let (g, c) = match (g, c) {
        (Ok(g), Ok(c)) => (g, c),
        (Err(ge), Err(ce)) => return vec![format!("no answer: gunicorn: {ge}; corral: {ce}")],
        (Err(ge), Ok(_)) => return vec![format!("gunicorn gave no answer: {ge}")],
        (Ok(g), Err(ce)) => {
            return vec![format!(
                "corral gave no answer ({ce}); gunicorn answered {} {}",
                g.status, g.reason
            )];
        }
    };
    let mut out = Vec::new();
    if (g.status, &g.reason) != (c.status, &c.reason) {
        out.push(format!(
            "status line: gunicorn {:?}, corral {:?}",
            format!("{} {}", g.status, g.reason),
            format!("{} {}", c.status, c.reason)
        ));
    }
    let names: BTreeSet<&str> = g
        .headers
        .iter()
        .chain(&c.headers)
        .map(|(k, _)| k.as_str())
        .filter(|k| !IGNORED_HEADERS.contains(k))
        .collect();
    for name in names {
        let gv = values(g, name);
        let cv = values(c, name);
        if name == "content-length" && (gv.is_empty() || cv.is_empty()) {
            continue;
        }
        if gv != cv {
            out.push(format!(
                "header {name}: gunicorn {}, corral {}",
                show_values(&gv),
                show_values(&cv)
            ));
        }
    }
    if g.body != c.body {
        out.push(body_diff(&g.body, &c.body));
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

fn contains(hay: &[u8], needle: &[u8]) -> bool {
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
fn body_diff(g: &[u8], c: &[u8]) -> String {
    let at = g
        .iter()
        .zip(c)
        .position(|(a, b)| a != b)
        .unwrap_or(g.len().min(c.len()));
    let from = at.saturating_sub(60);
    let mut out = format!(
        "body: gunicorn {} bytes, corral {} bytes, first difference at byte {at}:\n    gunicorn: {:?}\n    corral:   {:?}",
        g.len(),
        c.len(),
        excerpt(g, from, 120),
        excerpt(c, from, 120)
    );
    if let (Ok(gt), Ok(ct)) = (std::str::from_utf8(g), std::str::from_utf8(c))
        && (gt.lines().count() > 1 || ct.lines().count() > 1)
    {
        out.push_str("\n    line diff (- gunicorn, + corral):");
        out.push_str(&line_diff(gt, ct));
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

// ---------------------------------------------------------- request data

const FORM_TYPE: &str = "application/x-www-form-urlencoded";
const JSON_TYPE: &str = "application/json";
const BOUNDARY: &str = "----corral-test-boundary-7MA4YWxkTrZu0gW";

/// A urlencoded form with repeated keys, `+` for space, percent-encoded
/// UTF-8, an escaped `&` and an empty value.
const FORM_BODY: &str = "name=Ada+Lovelace&lang=fr&lang=en&note=caf%C3%A9+%26+cr%C3%A8me&empty=";

const JSON_BODY: &str =
    r#"{"numbers": [1, 2, 3], "text": "naïve ✓", "nested": {"a": null, "b": [true, false]}}"#;

enum Part<'a> {
    Field(&'a str, &'a str),
    File(&'a str, &'a str, &'a str, &'a [u8]),
}

fn multipart(parts: &[Part]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match part {
            Part::Field(name, value) => {
                out.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                );
                out.extend_from_slice(value.as_bytes());
            }
            Part::File(name, filename, content_type, data) => {
                out.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n"
                    )
                    .as_bytes(),
                );
                out.extend_from_slice(data);
            }
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

fn multipart_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// Deterministic bytes covering every byte value, CR/LF pairs and runs of
/// dashes (which a multipart parser must not mistake for a boundary).
fn binary(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x2545_f491;
    (0..len)
        .map(|i| match i % 997 {
            0 => b'\r',
            1 => b'\n',
            2..=5 => b'-',
            _ => {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 24) as u8
            }
        })
        .collect()
}

/// `body` in HTTP/1.1 chunks of `size` bytes.
fn chunked(body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in body.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// The form, JSON and upload requests; `slash` ends each path ("" for Flask's
/// routes, "/" suffix for Django's).
fn upload_requests(slash: &str) -> Vec<Req> {
    let small = binary(3000);
    let large = binary((1 << 20) + 123);
    let text_file = "first line\nsecond line, naïve ✓\n".as_bytes();
    vec![
        Req::post(
            "form post, urlencoded",
            &format!("/form{slash}"),
            FORM_TYPE,
            FORM_BODY,
        )
        .expect(200, "Ada Lovelace"),
        Req::post(
            "form post with a charset in the content type",
            &format!("/form{slash}"),
            "application/x-www-form-urlencoded; charset=utf-8",
            "a=1&b=%E2%9C%93",
        )
        .expect(200, "\"b\""),
        Req::post(
            "multipart: fields and two files in one field",
            &format!("/upload{slash}"),
            &multipart_type(),
            multipart(&[
                Part::Field("title", "Résumé ✓"),
                Part::File("doc", "notes.txt", "text/plain", text_file),
                Part::File("doc", "data.bin", "application/octet-stream", &small),
                Part::Field("tags", "a"),
                Part::Field("tags", "b"),
            ]),
        )
        .expect(200, "notes.txt"),
        Req::post(
            "multipart: a 1 MiB file (the body streams past the inline part)",
            &format!("/upload{slash}"),
            &multipart_type(),
            multipart(&[
                Part::Field("title", "big"),
                Part::File("doc", "big.bin", "application/octet-stream", &large),
            ]),
        )
        .expect(200, "1048699"),
        Req::post(
            "multipart: an empty file",
            &format!("/upload{slash}"),
            &multipart_type(),
            multipart(&[Part::File("doc", "empty.txt", "text/plain", b"")]),
        )
        .expect(200, "empty.txt"),
        Req::post("JSON body", &format!("/json{slash}"), JSON_TYPE, JSON_BODY)
            .expect(200, "numbers"),
        Req::post(
            "post/redirect/get",
            &format!("/after-post{slash}"),
            FORM_TYPE,
            "name=Ada",
        )
        .expect(303, ""),
    ]
}

// ----------------------------------------------------------------- Flask

#[test]
fn flask_routes_query_strings_and_json() {
    same_answers(
        Framework::Flask,
        &[
            Req::get("index", "/").expect(200, "Hello from Flask"),
            Req::new("HEAD of the index", "HEAD", "/").expect(200, ""),
            Req::get(
                "percent-encoded UTF-8 in the path",
                "/hello/caf%C3%A9%20au%20lait",
            )
            .expect(200, "café au lait"),
            Req::get(
                "query string: repeated keys, UTF-8, plus, empty value",
                "/search?q=caf%C3%A9&tag=a&tag=b&plus=1+2&empty=&flag",
            )
            .expect(200, r#""tag":["a","b"]"#),
            Req::get("no query string", "/search").expect(200, "query_string"),
            Req::get("JSON", "/json").expect(200, r#""name":"corral""#),
            Req::get("the app's own reason phrase", "/custom-status").expect(299, "custom reason"),
            Req::get("status 418 with an extra header", "/teapot").expect(418, "short and stout"),
            Req::get("streamed body of unknown length", "/stream").expect(200, "line 4\n"),
        ],
    );
}

#[test]
fn flask_form_posts_json_and_file_uploads() {
    same_answers(Framework::Flask, &upload_requests(""));
}

#[test]
fn flask_redirects_and_cookies() {
    same_answers(
        Framework::Flask,
        &[
            Req::get("redirect to a path", "/redirect").expect(302, "/target"),
            Req::get(
                "redirect to an absolute URL built from Host",
                "/redirect/external",
            )
            .header("Host", "example.test:8080")
            .expect(302, "http://example.test:8080/target"),
            Req::get("permanent redirect with a query", "/redirect/permanent")
                .expect(301, "/search?"),
            Req::get("set two cookies", "/cookies/set").expect(200, "cookies set"),
            Req::get("the cookies come back", "/cookies").expect(200, "oatmeal raisin"),
            Req::get("delete a cookie", "/cookies/clear").expect(200, "cookie cleared"),
            Req::get("the deleted cookie is gone", "/cookies").expect(200, "flavour"),
            Req::get("a cookie the client made up", "/cookies")
                .without_cookies()
                .header("Cookie", "a=1; b=\"two words\"; c=%E2%9C%93")
                .expect(200, "two words"),
        ],
    );
}

#[test]
fn flask_error_pages() {
    same_answers(
        Framework::Flask,
        &[
            Req::get("404 page", "/no/such/page").expect(404, "Not Found"),
            Req::get("500 page: the view raises", "/boom").expect(500, "Internal Server Error"),
            Req::get("405 page with Allow", "/form").expect(405, "Method Not Allowed"),
            Req::post("405 page for a POST", "/", FORM_TYPE, "a=1")
                .expect(405, "Method Not Allowed"),
            Req::get("the app still serves after a 500", "/").expect(200, "Hello from Flask"),
        ],
    );
}

/// Request headers reach the app as gunicorn hands them over.
#[test]
fn flask_sees_request_headers_as_under_gunicorn() {
    same_answers(
        Framework::Flask,
        &[
            Req::get("Host, User-Agent and a custom header", "/headers?x=1")
                .header("Host", "example.test:8080")
                .header("User-Agent", "corral-tests/1.0")
                .header("X-Custom", "one")
                .expect(200, "example.test:8080"),
            Req::get("a repeated header", "/headers")
                .header("X-Custom", "one")
                .header("X-Custom", "two")
                .expect(200, "two"),
        ],
    );
}

/// A request body sent in chunks (no Content-Length) reaches the app.
#[test]
fn flask_reads_chunked_request_bodies() {
    let big = binary(200_000);
    same_answers(
        Framework::Flask,
        &[
            Req::post(
                "chunked raw body",
                "/echo",
                "application/octet-stream",
                chunked(b"hello, chunked world", 7),
            )
            .header("Transfer-Encoding", "chunked")
            .expect(200, "\"size\":20"),
            Req::post(
                "chunked 200 kB body",
                "/echo",
                "application/octet-stream",
                chunked(&big, 16384),
            )
            .header("Transfer-Encoding", "chunked")
            .expect(200, "\"size\":200000"),
            Req::post(
                "chunked form post",
                "/form",
                FORM_TYPE,
                chunked(FORM_BODY.as_bytes(), 10),
            )
            .header("Transfer-Encoding", "chunked")
            .expect(200, "Ada Lovelace"),
        ],
    );
}

// ---------------------------------------------------------------- Django

#[test]
fn django_routes_query_strings_and_json() {
    same_answers(
        Framework::Django,
        &[
            Req::get("index", "/").expect(200, "Hello from Django"),
            Req::new("HEAD of the index", "HEAD", "/").expect(200, ""),
            Req::get(
                "percent-encoded UTF-8 in the path",
                "/hello/caf%C3%A9%20au%20lait/",
            )
            .expect(200, "café au lait"),
            Req::get(
                "query string: repeated keys, UTF-8, plus, empty value",
                "/search/?q=caf%C3%A9&tag=a&tag=b&plus=1+2&empty=&flag",
            )
            .expect(200, r#""tag": ["a", "b"]"#),
            Req::get("no query string", "/search/").expect(200, "query_string"),
            Req::get("JSON", "/json/").expect(200, r#""name": "corral""#),
            Req::get("the app's own reason phrase", "/custom-status/").expect(299, "custom reason"),
            Req::get("streamed body of unknown length", "/stream/").expect(200, "line 4\n"),
        ],
    );
}

#[test]
fn django_form_posts_json_and_file_uploads() {
    same_answers(Framework::Django, &upload_requests("/"));
}

#[test]
fn django_csrf_protected_form() {
    same_answers(
        Framework::Django,
        &[
            Req::get("a form with a CSRF token and cookie", "/csrf-form/")
                .expect(200, "csrfmiddlewaretoken"),
            Req::post(
                "post with the cookie and the form token",
                "/csrf-form/",
                FORM_TYPE,
                format!("csrfmiddlewaretoken={CSRF}&name=Ada"),
            )
            .expect(200, "Thanks, Ada!"),
            Req::post(
                "post with the token in X-CSRFToken",
                "/csrf-form/",
                FORM_TYPE,
                "name=Grace",
            )
            .header("X-CSRFToken", CSRF)
            .expect(200, "Thanks, Grace!"),
            Req::post(
                "post without the token",
                "/csrf-form/",
                FORM_TYPE,
                "name=Mallory",
            )
            .expect(403, "Forbidden"),
            Req::post(
                "post with the token but without the cookie",
                "/csrf-form/",
                FORM_TYPE,
                format!("csrfmiddlewaretoken={CSRF}&name=Eve"),
            )
            .without_cookies()
            .expect(403, "Forbidden"),
        ],
    );
}

#[test]
fn django_redirects_and_cookies() {
    same_answers(
        Framework::Django,
        &[
            Req::get("redirect to a path", "/redirect/").expect(302, ""),
            Req::get(
                "redirect to an absolute URL built from Host",
                "/redirect/external/",
            )
            .header("Host", "example.test:8080")
            .expect(302, ""),
            Req::get("permanent redirect with a query", "/redirect/permanent/").expect(301, ""),
            Req::get("APPEND_SLASH redirect", "/target?x=1").expect(301, ""),
            Req::get("set two cookies", "/cookies/set/").expect(200, "cookies set"),
            Req::get("the cookies come back", "/cookies/").expect(200, "oatmeal raisin"),
            Req::get("delete a cookie", "/cookies/clear/").expect(200, "cookie cleared"),
            Req::get("the deleted cookie is gone", "/cookies/").expect(200, "flavour"),
            Req::get("a cookie the client made up", "/cookies/")
                .without_cookies()
                .header("Cookie", "a=1; b=\"two words\"; c=%E2%9C%93")
                .expect(200, "two words"),
        ],
    );
}

#[test]
fn django_error_pages() {
    same_answers(
        Framework::Django,
        &[
            Req::get("404 page", "/no/such/page/").expect(404, "Not Found"),
            Req::get("500 page: the view raises", "/boom/").expect(500, "Server Error (500)"),
            Req::get("405 with Allow", "/form/").expect(405, ""),
            Req::get("the app still serves after a 500", "/").expect(200, "Hello from Django"),
        ],
    );
}

#[test]
fn django_sees_request_headers_as_under_gunicorn() {
    same_answers(
        Framework::Django,
        &[
            Req::get("Host, User-Agent and a custom header", "/headers/?x=1")
                .header("Host", "example.test:8080")
                .header("User-Agent", "corral-tests/1.0")
                .header("X-Custom", "one")
                .expect(200, "example.test:8080"),
            Req::get("a repeated header", "/headers/")
                .header("X-Custom", "one")
                .header("X-Custom", "two")
                .expect(200, "two"),
        ],
    );
}

/// Django reads only CONTENT_LENGTH bytes of a WSGI body, so a chunked body
/// reaches it empty under any WSGI server; corral must match that too.
#[test]
fn django_chunked_request_bodies_as_under_gunicorn() {
    same_answers(
        Framework::Django,
        &[Req::post(
            "chunked raw body",
            "/echo/",
            "application/octet-stream",
            chunked(b"hello, chunked world", 7),
        )
        .header("Transfer-Encoding", "chunked")
        .expect(200, "\"size\"")],
    );
}
