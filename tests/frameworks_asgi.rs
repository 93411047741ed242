//! Real FastAPI and Starlette apps answer through corral (as ASGI apps) as
//! they do through uvicorn.
//!
//! Each test starts both servers on the same copy of the same app, one
//! worker process each (the apps keep background-task results and gates in
//! memory), sends both the same requests and compares the answers: status
//! line, body bytes and headers, except the ones that describe the server or
//! the connection rather than the app (see [`IGNORED_HEADERS`]). WebSockets
//! compare as transcripts: what the client saw, one line per event.
//!
//! The apps live in `tests/apps/`. They need FastAPI and uvicorn in the
//! interpreter the tests use: `./test.sh` installs them into `.venv`.
//! Without them every test here fails and says so.

mod common;
use common::*;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Longest wait for any one connect, read or write.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for uvicorn to accept connections, for the Python probe to
/// answer, or for a background task's effect to show.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Headers that describe the server or the connection, not the app.
/// Content-Length is compared only when both servers send it (a server may
/// frame a body by chunks instead).
const IGNORED_HEADERS: &[&str] = &["date", "server", "connection", "transfer-encoding"];

// ------------------------------------------------------------------ apps

/// An app in `tests/apps/`, and how corral is told to serve it.
struct App {
    name: &'static str,
    /// `module:attribute`, for both servers.
    spec: &'static str,
    /// The module's file name and text.
    file: (&'static str, &'static str),
    /// corral's `--interface`.
    interface: &'static str,
}

/// Detected as ASGI (`--interface auto`, the default): FastAPI's
/// `__call__` is a coroutine function.
const FASTAPI: App = App {
    name: "FastAPI",
    spec: "fastapiapp:app",
    file: (
        "fastapiapp.py",
        include_str!("apps/fastapi_app/fastapiapp.py"),
    ),
    interface: "auto",
};

/// Named ASGI explicitly.
const STARLETTE: App = App {
    name: "Starlette",
    spec: "starletteapp:app",
    file: (
        "starletteapp.py",
        include_str!("apps/starlette_app/starletteapp.py"),
    ),
    interface: "asgi",
};

// ------------------------------------------------ the Python environment

/// Checks once that `python()` can import FastAPI, Starlette and uvicorn;
/// panics with what to do when it cannot.
fn check_python() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(why) = CHECKED.get_or_init(probe_python) {
        panic!(
            "{why}\nThese tests serve real FastAPI and Starlette apps and compare corral with \
             uvicorn. Run ./test.sh (it makes .venv from requirements-test.txt and runs the tests \
             with it), or set CORRAL_TEST_PYTHON to an interpreter that has fastapi and uvicorn."
        );
    }
}

fn probe_python() -> Result<(), String> {
    let py = python();
    let mut child = Command::new(&py)
        .args(["-c", "import fastapi, starlette, uvicorn, websockets"])
        .env_remove("VIRTUAL_ENV")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run the test interpreter {py}: {e}"))?;
    let status = wait_child(&mut child, START_TIMEOUT)
        .ok_or_else(|| format!("{py} did not answer within {START_TIMEOUT:?}"))?;
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).ok();
    if !status.success() {
        return Err(format!("the test interpreter {py} failed: {}", err.trim()));
    }
    Ok(())
}

/// Waits for a child to exit; kills it and returns None on timeout.
fn wait_child(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// --------------------------------------------------------------- uvicorn

/// A running uvicorn (one process); killed on drop.
struct Uvicorn {
    child: Child,
    addr: String,
    log: std::path::PathBuf,
}

impl Uvicorn {
    /// `python -m uvicorn SPEC --port PORT --no-access-log` in `dir`, then
    /// waits until it accepts connections (after the lifespan startup).
    fn start(dir: &Path, spec: &str) -> Uvicorn {
        let port = free_port();
        let log = dir.join(".uvicorn.log");
        let out = File::create(&log).expect("uvicorn log file");
        let child = Command::new(python())
            .args(["-m", "uvicorn", spec, "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .args(["--no-access-log", "--app-dir"])
            .arg(dir)
            .current_dir(dir)
            .env_remove("VIRTUAL_ENV")
            .env_remove("WEB_CONCURRENCY")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            // Its own process group, so that drop kills anything it started.
            .process_group(0)
            .spawn()
            .expect("start uvicorn");
        let mut u = Uvicorn {
            child,
            addr: format!("127.0.0.1:{port}"),
            log,
        };
        u.wait_accepting();
        u
    }

    fn wait_accepting(&mut self) {
        let addr: SocketAddr = self.addr.parse().unwrap();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "uvicorn exited ({st}) before it listened; log:\n{}",
                    self.log_text()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "uvicorn did not accept connections on {addr} within {START_TIMEOUT:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Uvicorn {
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
    app: &'static App,
    corral: Corral,
    uvicorn: Uvicorn,
    _dir: AppDir,
}

impl Servers {
    fn start(app: &'static App) -> Servers {
        check_python();
        let dir = AppDir::new(&[app.file]);
        let path = dir.path().to_str().expect("utf-8 temp path").to_string();
        let uvicorn = Uvicorn::start(dir.path(), app.spec);
        let corral = Corral::start(
            dir.path(),
            &[
                app.spec,
                "-w",
                "1",
                "--interface",
                app.interface,
                "--chdir",
                &path,
            ],
            1,
        );
        Servers {
            app,
            corral,
            uvicorn,
            _dir: dir,
        }
    }

    /// (name, address) of each server, the reference first.
    fn both(&self) -> [(&'static str, &str); 2] {
        [
            ("uvicorn", &self.uvicorn.addr),
            ("corral", &self.corral.addr),
        ]
    }

    /// What each server logged, for failure messages.
    fn logs(&self) -> String {
        format!(
            "uvicorn log:\n{}\ncorral log:\n{}",
            self.uvicorn.log_text(),
            self.corral.log.text()
        )
    }
}

// -------------------------------------------------------------- requests

struct Req {
    label: &'static str,
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
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

    fn expect(mut self, status: u16, body_contains: &str) -> Req {
        self.expect = Some((status, body_contains.to_string()));
        self
    }
}

type Outcome = Result<Response, String>;

/// One request on a fresh connection, with timeouts; errors as text.
fn exchange(addr: &str, req: &Req) -> Outcome {
    let mut s = connect_with_timeouts(addr)?;
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.path);
    if !req
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("host"))
    {
        head.push_str("Host: localhost\r\n");
    }
    for (k, v) in &req.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let framed = req.headers.iter().any(|(k, _)| {
        k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding")
    });
    if !req.body.is_empty() && !framed {
        head.push_str(&format!("Content-Length: {}\r\n", req.body.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(&req.body))
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut r = BufReader::new(s);
    let mut interim = Vec::new();
    loop {
        let mut resp = read_response(&mut r, req.method == "HEAD")
            .map_err(|e| format!("reading the response: {e}"))?;
        if !(100..200).contains(&resp.status) {
            // Compared like a header: both servers must send the same ones.
            for status in interim {
                resp.headers
                    .push(("(interim response)".to_string(), status));
            }
            return Ok(resp);
        }
        interim.push(format!("{} {}", resp.status, resp.reason));
    }
}

fn connect_with_timeouts(addr: &str) -> Result<TcpStream, String> {
    let sock: SocketAddr = addr.parse().map_err(|e| format!("address {addr}: {e}"))?;
    let s = TcpStream::connect_timeout(&sock, IO_TIMEOUT)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    Ok(s)
}

/// The status line and headers of a response, as text.
fn read_head(r: &mut impl BufRead) -> std::io::Result<String> {
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        if r.read_line(&mut head)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(head)
}

/// One chunk of a chunked body (empty for the last one).
fn read_chunk(r: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let size = usize::from_str_radix(line.trim(), 16)
        .map_err(|_| std::io::Error::other(format!("bad chunk size line {line:?}")))?;
    let mut chunk = vec![0; size + 2];
    r.read_exact(&mut chunk)?;
    chunk.truncate(size);
    Ok(chunk)
}

// ------------------------------------------------------------ comparison

/// Sends `reqs` in order to both servers and fails with a readable diff of
/// every request they answered differently, or not as expected.
fn same_answers(servers: &Servers, reqs: &[Req]) {
    let mut problems = Vec::new();
    for (i, req) in reqs.iter().enumerate() {
        let u = exchange(&servers.uvicorn.addr, req).map(normalise);
        let c = exchange(&servers.corral.addr, req).map(normalise);
        let mut found = Vec::new();
        if let Some((status, needle)) = &req.expect {
            for (server, outcome) in [("uvicorn", &u), ("corral", &c)] {
                if let Ok(r) = outcome
                    && (r.status != *status || !contains(&r.body, needle.as_bytes()))
                {
                    found.push(format!(
                        "{server}: expected status {status} and a body containing {needle:?}; got {} {} with body {:?}",
                        r.status,
                        r.reason,
                        excerpt(&r.body)
                    ));
                }
            }
        }
        found.extend(differences(&u, &c));
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
        "{}: corral answered {} of {} requests differently from uvicorn, or not as the app should:\n\n{}\n\n{}",
        servers.app.name,
        problems.len(),
        reqs.len(),
        problems.join("\n\n"),
        servers.logs()
    );
}

/// Removes what legitimately differs between two servers running the same
/// app, so that everything else can compare byte for byte.
fn normalise(mut resp: Response) -> Response {
    // Starlette builds a 405's Allow from a set of method names, whose order
    // follows Python's per-process string hashing.
    for (name, value) in &mut resp.headers {
        if name == "allow" {
            let mut methods: Vec<&str> = value.split(',').map(str::trim).collect();
            methods.sort_unstable();
            *value = methods.join(", ");
        }
    }
    resp
}

/// What differs between the two answers, one line each.
fn differences(u: &Outcome, c: &Outcome) -> Vec<String> {
    let (u, c) = match (u, c) {
        (Ok(u), Ok(c)) => (u, c),
        (Err(ue), Err(ce)) => return vec![format!("no answer: uvicorn: {ue}; corral: {ce}")],
        (Err(ue), Ok(_)) => return vec![format!("uvicorn gave no answer: {ue}")],
        (Ok(u), Err(ce)) => {
            return vec![format!(
                "corral gave no answer ({ce}); uvicorn answered {} {}",
                u.status, u.reason
            )];
        }
    };
    let mut out = Vec::new();
    if (u.status, &u.reason) != (c.status, &c.reason) {
        out.push(format!(
            "status line: uvicorn \"{} {}\", corral \"{} {}\"",
            u.status, u.reason, c.status, c.reason
        ));
    }
    let names: BTreeSet<&str> = u
        .headers
        .iter()
        .chain(&c.headers)
        .map(|(k, _)| k.as_str())
        .filter(|k| !IGNORED_HEADERS.contains(k))
        .collect();
    for name in names {
        let (uv, cv) = (values(u, name), values(c, name));
        if name == "content-length" && (uv.is_empty() || cv.is_empty()) {
            continue;
        }
        if uv != cv {
            out.push(format!("header {name}: uvicorn {uv:?}, corral {cv:?}"));
        }
    }
    if u.body != c.body {
        out.push(format!(
            "body: uvicorn {:?}, corral {:?}",
            excerpt(&u.body),
            excerpt(&c.body)
        ));
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

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// The start of a body, as text.
fn excerpt(b: &[u8]) -> String {
    let mut s = String::from_utf8_lossy(&b[..b.len().min(400)]).into_owned();
    if b.len() > 400 {
        s.push('…');
    }
    s
}

/// Polls GET `path` on every server until its body contains `needle`.
fn wait_for_body(servers: &Servers, path: &str, needle: &str) {
    for (server, addr) in servers.both() {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let got = exchange(addr, &Req::get("poll", path));
            if got
                .as_ref()
                .is_ok_and(|r| contains(&r.body, needle.as_bytes()))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{server}: GET {path} never showed {needle:?}; last answer: {got:?}\n{}",
                servers.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

// ---------------------------------------------------------- request data

const JSON_TYPE: &str = "application/json";

/// Deterministic bytes covering every byte value.
fn binary(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x2545_f491;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect()
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
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

// ------------------------------------------------------------- WebSocket

/// What a WebSocket client does, step by step.
enum Step {
    Send(Message),
    /// Sends a close frame with this code and reason, or with no code.
    Close(Option<(u16, &'static str)>),
    /// Reads the next event from the server into the transcript.
    Receive,
}

fn text(s: &str) -> Step {
    Step::Send(Message::text(s))
}

/// Opens a WebSocket to `addr` + `path` (offering `subprotocols`, if any),
/// plays `steps` and returns what the client saw, one line per event:
/// the handshake's outcome, then every message or close received.
fn ws_transcript(addr: &str, path: &str, subprotocols: &str, steps: &[Step]) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
        if !subprotocols.is_empty() {
            req.headers_mut()
                .insert("Sec-WebSocket-Protocol", subprotocols.parse().unwrap());
        }
        let mut lines = Vec::new();
        let connect = tokio_tungstenite::connect_async(req);
        let mut ws = match tokio::time::timeout(IO_TIMEOUT, connect).await {
            Err(_) => return vec!["handshake timed out".to_string()],
            Ok(Err(WsError::Http(resp))) => {
                let body = resp.body().as_deref().unwrap_or_default();
                let mut headers = resp.headers().clone();
                if body.is_empty() {
                    // A Content-Type describes a body: uvicorn labels its
                    // empty 403 refusal text/plain, corral sends none.
                    headers.remove("content-type");
                }
                return vec![format!(
                    "refused: {}{} {:?}",
                    resp.status().as_u16(),
                    app_headers(&headers),
                    String::from_utf8_lossy(body)
                )];
            }
            Ok(Err(e)) => return vec![format!("handshake failed: {e}")],
            Ok(Ok((ws, resp))) => {
                let status = resp.status().as_u16();
                lines.push(format!("accepted: {status}{}", app_headers(resp.headers())));
                ws
            }
        };
        for step in steps {
            let outcome = match step {
                Step::Send(msg) => within("send", ws.send(msg.clone())).await.map(|()| None),
                Step::Close(code) => {
                    let frame = code.map(|(code, reason)| CloseFrame {
                        code: code.into(),
                        reason: reason.into(),
                    });
                    within("close", ws.close(frame)).await.map(|()| None)
                }
                Step::Receive => match tokio::time::timeout(IO_TIMEOUT, ws.next()).await {
                    Err(_) => Err("nothing received".to_string()),
                    Ok(None) => Ok(Some("end of stream".to_string())),
                    Ok(Some(Err(e))) => Err(format!("error: {e}")),
                    Ok(Some(Ok(msg))) => Ok(Some(describe(&msg))),
                },
            };
            match outcome {
                Ok(Some(line)) => lines.push(line),
                Ok(None) => {}
                // The steps left would only wait out their timeouts.
                Err(why) => {
                    lines.push(why);
                    break;
                }
            }
        }
        collapse(lines)
    })
}

/// A handshake answer's headers, but the ones any server sends (see
/// [`IGNORED_HEADERS`]) and the handshake's own, as " name=value" each.
fn app_headers(headers: &tokio_tungstenite::tungstenite::http::HeaderMap) -> String {
    const HANDSHAKE: &[&str] = &["upgrade", "sec-websocket-accept"];
    let mut out: Vec<String> = headers
        .iter()
        .filter(|(k, _)| !IGNORED_HEADERS.contains(&k.as_str()) && !HANDSHAKE.contains(&k.as_str()))
        .map(|(k, v)| format!(" {k}={}", String::from_utf8_lossy(v.as_bytes())))
        .collect();
    out.sort();
    out.concat()
}

/// `f`'s result, or what went wrong (it failed, or took over IO_TIMEOUT).
async fn within<T, E: std::fmt::Display>(
    what: &str,
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(IO_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what} failed: {e}")),
        Err(_) => Err(format!("{what} timed out")),
    }
}

/// Runs of the same line as one line ending in "(×N)".
fn collapse(lines: Vec<String>) -> Vec<String> {
    let mut out: Vec<(String, usize)> = Vec::new();
    for line in lines {
        match out.last_mut() {
            Some((last, n)) if *last == line => *n += 1,
            _ => out.push((line, 1)),
        }
    }
    out.into_iter()
        .map(|(line, n)| {
            if n == 1 {
                line
            } else {
                format!("{line} (×{n})")
            }
        })
        .collect()
}

fn describe(msg: &Message) -> String {
    match msg {
        Message::Text(t) if t.len() <= 120 => format!("text: {}", t.as_str()),
        Message::Text(t) => {
            let start: String = t.chars().take(20).collect();
            format!("text: {start}… ({} bytes)", t.len())
        }
        Message::Binary(b) if b.len() <= 32 => format!("binary: {:?}", &b[..]),
        Message::Binary(b) => format!("binary: {} bytes, sha256 {}", b.len(), sha256_hex(b)),
        Message::Close(Some(f)) => format!("close: {} {:?}", u16::from(f.code), f.reason.as_str()),
        Message::Close(None) => "close: no code".to_string(),
        other => format!("other: {other:?}"),
    }
}

/// Plays `steps` against both servers: uvicorn must give `expected`, and
/// corral what uvicorn gave.
fn same_transcript(
    servers: &Servers,
    path: &str,
    subprotocols: &str,
    steps: &[Step],
    expected: &[&str],
) {
    let [u, c] = servers
        .both()
        .map(|(_, addr)| ws_transcript(addr, path, subprotocols, steps));
    assert_eq!(
        u,
        expected,
        "{}: uvicorn's WebSocket {path} did not behave as the app should\n{}",
        servers.app.name,
        servers.logs()
    );
    assert_eq!(
        c,
        u,
        "{}: corral's WebSocket {path} (left) differs from uvicorn's (right)\n{}",
        servers.app.name,
        servers.logs()
    );
}

// --------------------------------------------------------------- FastAPI

#[test]
fn fastapi_path_query_and_json_bodies() {
    let servers = Servers::start(&FASTAPI);
    same_answers(
        &servers,
        &[
            Req::get("index", "/").expect(200, r#"{"hello":"FastAPI"}"#),
            Req::get(
                "int path parameter, query defaults",
                "/items/42?q=caf%C3%A9",
            )
            .expect(200, r#""item_id":42,"q":"café","limit":10"#),
            Req::get(
                "repeated and converted query parameters",
                "/items/7?limit=3&tags=a&tags=b+c",
            )
            .expect(200, r#""limit":3,"tags":["a","b c"]"#),
            Req::get("a path parameter that is not an int", "/items/abc")
                .expect(422, "int_parsing"),
            Req::get("a query parameter that is not an int", "/items/1?limit=x")
                .expect(422, "limit"),
            Req::get(
                "percent-encoded UTF-8 in a path parameter (a sync view)",
                "/hello/caf%C3%A9%20au%20lait",
            )
            .expect(200, "Hello, café au lait!"),
            Req::post(
                "a JSON body validated by a pydantic model",
                "/items",
                JSON_TYPE,
                r#"{"name": "naïve ✓", "price": 10.5, "tags": ["x"]}"#,
            )
            .expect(201, r#""total":12.6"#),
            Req::post(
                "a JSON body the model refuses",
                "/items",
                JSON_TYPE,
                r#"{"name": "", "price": -1}"#,
            )
            .expect(422, "greater_than"),
            Req::post("a body that is not JSON", "/items", JSON_TYPE, "{not json")
                .expect(422, "json_invalid"),
            Req::get(
                "an encoded slash stays inside a path parameter",
                "/hello/a%2Fb",
            )
            .expect(404, "Not Found"),
            Req::get("404 for an unknown path", "/no/such/page").expect(404, "Not Found"),
            Req::new("405 for HEAD on a GET route", "HEAD", "/").expect(405, ""),
            Req::get("500 when the view raises", "/boom").expect(500, "Internal Server Error"),
            Req::get("the app still serves after a 500", "/").expect(200, "FastAPI"),
        ],
    );
}

#[test]
fn fastapi_dependency_injection_and_lifespan_state() {
    let servers = Servers::start(&FASTAPI);
    same_answers(
        &servers,
        &[
            Req::get("dependency refuses without X-Token", "/users/me")
                .expect(401, "missing or bad X-Token"),
            Req::get("dependency refuses a bad X-Token", "/users/me")
                .header("X-Token", "admin")
                .expect(401, "missing or bad X-Token"),
            Req::get("dependency reads X-Token", "/users/me")
                .header("X-Token", "user-ada")
                .expect(200, r#"{"user":"ada"}"#),
            Req::get("state yielded by the lifespan, set once", "/lifespan")
                .expect(200, r#"{"greeting":"hello from the lifespan","boots":1}"#),
        ],
    );
}

/// The request scope the app sees: version, method, scheme, paths, query,
/// client and headers (names lower case, a repeated header's values in the
/// order sent; the app sorts them by name, see `/scope`).
#[test]
fn fastapi_sees_the_scope_as_under_uvicorn() {
    let servers = Servers::start(&FASTAPI);
    same_answers(
        &servers,
        &[
            Req::get(
                "scope of a plain request",
                "/scope?q=caf%C3%A9&x=1+2&empty=",
            )
            .header("Host", "example.test:8080")
            .header("User-Agent", "corral-tests/1.0")
            .header("X-Custom", "one")
            .expect(
                200,
                r#""url":"http://example.test:8080/scope?q=caf%C3%A9&x=1+2&empty=""#,
            ),
            Req::get("scope with a repeated header", "/scope")
                .header("X-Custom", "one")
                .header("X-Other", "1")
                .header("X-Custom", "two")
                .expect(
                    200,
                    r#"[["host","localhost"],["x-custom","one"],["x-custom","two"],["x-other","1"]],"client_host":"127.0.0.1""#,
                ),
        ],
    );
}

/// A background task runs after its response was sent (the response does
/// not wait for it), and a later request sees what it did.
#[test]
fn fastapi_background_tasks_run_after_the_response() {
    let servers = Servers::start(&FASTAPI);
    same_answers(
        &servers,
        &[
            Req::post(
                "queue a task held at its gate",
                "/tasks/report",
                JSON_TYPE,
                "",
            )
            .expect(202, r#"{"queued":"report"}"#),
            Req::get("the task has not run yet", "/tasks").expect(200, r#"{"done":[]}"#),
            Req::post("open the task's gate", "/gates/task-report", JSON_TYPE, "")
                .expect(200, "opened"),
        ],
    );
    wait_for_body(&servers, "/tasks", "report");
    same_answers(
        &servers,
        &[Req::get("the task ran", "/tasks").expect(200, r#"{"done":["report"]}"#)],
    );
}

#[test]
fn fastapi_streaming_response() {
    let servers = Servers::start(&FASTAPI);
    let lines: String = (0..50).map(|i| format!("line {i}\n")).collect();
    same_answers(
        &servers,
        &[
            Req::get("50 chunks from an async generator", "/stream/50").expect(200, &lines),
            Req::get("an empty stream", "/stream/0").expect(200, ""),
        ],
    );
}

/// Each chunk reaches the client when the app yields it: the first arrives
/// while the generator waits at its gate for a second request.
#[test]
fn fastapi_streaming_response_sends_chunks_as_they_come() {
    let servers = Servers::start(&FASTAPI);
    for (server, addr) in servers.both() {
        let mut s = connect_with_timeouts(addr).unwrap();
        s.write_all(b"GET /stream-gated HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut r = BufReader::new(s);
        let head = read_head(&mut r).unwrap_or_else(|e| panic!("{server}: head: {e}"));
        assert!(head.starts_with("HTTP/1.1 200"), "{server}: {head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("transfer-encoding: chunked"),
            "{server}: a stream of unknown length is chunked: {head}"
        );
        let first = read_chunk(&mut r).unwrap_or_else(|e| {
            panic!(
                "{server}: the first chunk did not arrive before the gate opened: {e}\n{}",
                servers.logs()
            )
        });
        assert_eq!(first, b"before the gate\n", "{server}");
        let open = Req::post("open", "/gates/stream", JSON_TYPE, "");
        assert_eq!(exchange(addr, &open).map(|r| r.status), Ok(200), "{server}");
        let rest = read_chunk(&mut r).unwrap_or_else(|e| panic!("{server}: {e}"));
        assert_eq!(rest, b"after the gate\n", "{server}");
        assert_eq!(read_chunk(&mut r).unwrap(), b"", "{server}: the last chunk");
    }
}

/// A client that goes away stops an endless stream: the app's generator
/// is closed (under uvicorn by Starlette's disconnect listener, under
/// corral by `send` raising once corral reports the client gone).
#[test]
fn fastapi_streaming_response_stops_when_the_client_goes() {
    let servers = Servers::start(&FASTAPI);
    for (server, addr) in servers.both() {
        let mut s = connect_with_timeouts(addr).unwrap();
        s.write_all(b"GET /stream-endless HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut r = BufReader::new(s);
        read_head(&mut r).unwrap_or_else(|e| panic!("{server}: head: {e}"));
        for _ in 0..3 {
            let tick = read_chunk(&mut r).unwrap_or_else(|e| panic!("{server}: {e}"));
            assert_eq!(tick, b"tick\n", "{server}");
        }
    }
    wait_for_body(&servers, "/stream-log", r#"{"log":["stopped"]}"#);
}

/// Text and binary messages both ways, 1 MiB ones too (several times
/// corral's flow-control windows), then the app closes with its own code.
#[test]
fn fastapi_websocket_echo_and_server_close() {
    let servers = Servers::start(&FASTAPI);
    let big = binary(1024 * 1024);
    let reversed: Vec<u8> = big.iter().rev().copied().collect();
    let big_line = format!("binary: 1048576 bytes, sha256 {}", sha256_hex(&reversed));
    same_transcript(
        &servers,
        "/ws/echo?name=ada",
        "",
        &[
            Step::Receive,
            text("shout this"),
            Step::Receive,
            Step::Send(Message::binary(vec![1, 2, 3])),
            Step::Receive,
            Step::Send(Message::binary(big.clone())),
            Step::Send(Message::binary(big)),
            Step::Receive,
            Step::Receive,
            text("bye"),
            Step::Receive,
            Step::Receive,
        ],
        &[
            "accepted: 101",
            "text: hello ada",
            "text: SHOUT THIS",
            "binary: [3, 2, 1]",
            &format!("{big_line} (×2)"),
            "close: 4000 \"bye ada\"",
            "end of stream",
        ],
    );
    wait_for_body(&servers, "/ws/log", "ada: server closed 4000");
}

/// A long exchange of non-ASCII text messages (3 bytes a character in
/// UTF-8): more bytes in all than corral's credit for client messages.
#[test]
fn fastapi_websocket_many_non_ascii_messages() {
    let servers = Servers::start(&FASTAPI);
    let message = "✓".repeat(1000);
    let mut steps = vec![Step::Receive];
    for _ in 0..300 {
        steps.push(text(&message));
        steps.push(Step::Receive);
    }
    steps.push(text("bye"));
    steps.push(Step::Receive);
    same_transcript(
        &servers,
        "/ws/echo?name=ada",
        "",
        &steps,
        &[
            "accepted: 101",
            "text: hello ada",
            "text: ✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓… (3000 bytes) (×300)",
            "close: 4000 \"bye ada\"",
        ],
    );
}

/// The app sees the code and reason of the client's close frame (1005 when
/// it has no code, as the ASGI spec says), and a WebSocket it closes before
/// accepting is refused with 403.
#[test]
fn fastapi_websocket_client_close_and_refusal() {
    let servers = Servers::start(&FASTAPI);
    same_transcript(
        &servers,
        "/ws/echo?name=bob",
        "",
        &[
            Step::Receive,
            Step::Close(Some((4002, "done ✓"))),
            Step::Receive,
        ],
        &["accepted: 101", "text: hello bob", "close: 4002 \"done ✓\""],
    );
    wait_for_body(&servers, "/ws/log", "bob: client closed 4002 done ✓");
    same_transcript(
        &servers,
        "/ws/echo?name=carol",
        "",
        &[Step::Receive, Step::Close(None), Step::Receive],
        &["accepted: 101", "text: hello carol", "close: no code"],
    );
    wait_for_body(&servers, "/ws/log", "carol: client closed 1005");
    same_transcript(
        &servers,
        "/ws/echo?name=mallory",
        "",
        &[],
        &["refused: 403 content-length=0 \"\""],
    );
    same_answers(
        &servers,
        &[
            Req::get("what the app saw of each close", "/ws/log").expect(
                200,
                r#"{"log":["bob: client closed 4002 done ✓","carol: client closed 1005 "]}"#,
            ),
        ],
    );
}

// ------------------------------------------------------------- Starlette

#[test]
fn starlette_routes() {
    let servers = Servers::start(&STARLETTE);
    same_answers(
        &servers,
        &[
            Req::get("index", "/").expect(200, "Hello from Starlette"),
            Req::new("HEAD of the index", "HEAD", "/").expect(200, ""),
            Req::get("int path convertor and query", "/users/42?b=2&a=1&a=0").expect(
                200,
                r#"{"user_id":42,"query":[["a","0"],["a","1"],["b","2"]]}"#,
            ),
            Req::get("path that does not match the convertor", "/users/abc")
                .expect(404, "Not Found"),
            Req::get("redirect to a URL built from the scope", "/go-home")
                .header("Host", "example.test:8080")
                .expect(303, ""),
            Req::post("405 for a POST to a GET route", "/", "text/plain", "x")
                .expect(405, "Method Not Allowed"),
            Req::post("echo a small body", "/echo", "text/plain", "naïve ✓").expect(200, "naïve ✓"),
            Req::post("echo an empty body", "/echo", "text/plain", "").expect(200, ""),
            Req::get("two Set-Cookie headers", "/cookies").expect(200, "cookies set"),
            Req::get(
                "a 3 MiB body in one message (past corral's response window)",
                "/download/3145728",
            )
            .expect(200, ""),
        ],
    );
}

/// A few MiB read with `request.stream()` arrive whole, with a length or
/// in chunks.
#[test]
fn starlette_streams_large_uploads() {
    let servers = Servers::start(&STARLETTE);
    let body = binary(4 * 1024 * 1024 + 123);
    let sha = sha256_hex(&body);
    let octets = "application/octet-stream";
    same_answers(
        &servers,
        &[
            Req::post("4 MiB with Content-Length", "/upload", octets, body.clone())
                .expect(200, &format!(r#""size":4194427,"sha256":"{sha}""#)),
            Req::post("4 MiB in chunks", "/upload", octets, chunked(&body, 65_536))
                .header("Transfer-Encoding", "chunked")
                .expect(200, &format!(r#""size":4194427,"sha256":"{sha}""#)),
            Req::post(
                "4 MiB after Expect: 100-continue",
                "/upload",
                octets,
                body.clone(),
            )
            .header("Expect", "100-continue")
            .expect(200, &format!(r#""size":4194427,"sha256":"{sha}""#)),
        ],
    );
}

#[test]
fn starlette_websocket_subprotocol_json_and_binary() {
    let servers = Servers::start(&STARLETTE);
    let big = binary(1024 * 1024);
    let big_line = format!("text: 1048576 bytes, sha256 {}", sha256_hex(&big));
    same_transcript(
        &servers,
        "/ws/lobby?token=secret",
        "chat.v1, chat.v2",
        &[
            Step::Receive,
            text("hi"),
            Step::Receive,
            Step::Send(Message::binary(big)),
            Step::Receive,
            text("close"),
            Step::Receive,
            Step::Receive,
        ],
        &[
            "accepted: 101 sec-websocket-protocol=chat.v2 x-room=lobby",
            r#"text: {"path":"/ws/lobby","room":"lobby","subprotocols":["chat.v1","chat.v2"]}"#,
            "text: echo: hi",
            &big_line,
            "close: 4001 \"closed by the room\"",
            "end of stream",
        ],
    );
}

/// An app may answer a WebSocket handshake with a plain HTTP response (the
/// `websocket.http.response` extension).
#[test]
fn starlette_websocket_denial_response() {
    let servers = Servers::start(&STARLETTE);
    same_transcript(
        &servers,
        "/ws/lobby",
        "",
        &[],
        &[
            "refused: 401 content-length=15 content-type=text/plain; charset=utf-8 \"token required\\n\"",
        ],
    );
}
