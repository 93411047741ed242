//! corral behind a real nginx, configured as gunicorn's "Deploying
//! Gunicorn" page configures it: an upstream on a Unix socket (or loopback
//! TCP) with `fail_timeout=0`, `X-Forwarded-For`, `X-Forwarded-Proto` and
//! `Host` passed on, `proxy_redirect off`, upstream keep-alive
//! (`keepalive 16`, `proxy_http_version 1.1`, `Connection ""`), the
//! WebSocket `Upgrade` map and `proxy_buffering off` for streaming.
//!
//! nginx runs in the foreground (`daemon off;`) with its own prefix, pid,
//! logs and temporary folders in a temporary folder, as `www-data` when
//! the test runs as root (as Debian's package runs it), and is killed by
//! its pid when the test ends. Debian's `nginx` package must be installed
//! (`.ci/run` installs it): without it the tests fail and say so.

use crate::common::compare::free_port;
use crate::common::*;
use std::io::{BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NGINX: &str = "/usr/sbin/nginx";

/// A Flask app that says what it sees of the client and the URL, echoes
/// uploads, streams and serves large bodies.
const FLASK: &str = r#"
import hashlib, os, time
from flask import Flask, Response, jsonify, request, url_for

# A slow import, when asked: the worker is in service only after it.
time.sleep(float(os.environ.get("SLOW_IMPORT", "0")))

app = Flask(__name__)

@app.route("/who")
def who():
    return jsonify(remote_addr=request.remote_addr, scheme=request.scheme,
                   secure=request.is_secure, host=request.host,
                   url=url_for("who", _external=True), pid=os.getpid(),
                   request_id=request.headers.get("X-Request-ID"))

@app.route("/echo", methods=["POST", "PUT"])
def echo():
    data = request.get_data()
    return jsonify(length=len(data), sha256=hashlib.sha256(data).hexdigest())

@app.route("/events")
def events():
    def gen():
        for i in range(4):
            yield "data: %d %.3f\n\n" % (i, time.time())
            time.sleep(0.4)
    r = Response(gen(), mimetype="text/event-stream")
    if request.args.get("accel"):
        r.headers["X-Accel-Buffering"] = "no"
    return r

@app.route("/big")
def big():
    n = int(request.args["n"])
    block = bytes(range(256)) * 256
    def gen():
        left = n
        while left > 0:
            piece = block[:min(left, len(block))]
            left -= len(piece)
            yield piece
    return Response(gen(), headers={"Content-Length": str(n)}, mimetype="application/octet-stream")

@app.route("/download")
def download():
    # django-sendfile2's and Flask's recipe: nginx serves the file.
    return Response(b"", headers={"X-Accel-Redirect": "/protected/report.txt",
                                  "Content-Type": "text/plain"})

@app.route("/slow")
def slow():
    time.sleep(float(request.args.get("s", "1")))
    return "slow done"
"#;

/// The same questions of a Django app with `SECURE_PROXY_SSL_HEADER`, as
/// Django's deployment checklist sets it behind a proxy.
const DJANGO: &str = r#"
import json
from django.conf import settings
settings.configure(
    DEBUG=False, ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__, SECRET_KEY="x" * 50,
    SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"), USE_X_FORWARDED_HOST=False,
)
from django.http import HttpResponse
from django.urls import path
from django.core.wsgi import get_wsgi_application

def who(request):
    return HttpResponse(json.dumps({
        "secure": request.is_secure(), "url": request.build_absolute_uri("/x?y=1"),
        "host": request.get_host(), "remote_addr": request.META.get("REMOTE_ADDR"),
    }), content_type="application/json")

urlpatterns = [path("who", who)]
application = get_wsgi_application()
"#;

/// A Starlette app with a WebSocket echo, for the `Upgrade` map.
const ASGI: &str = r#"
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute

async def home(request):
    return PlainTextResponse("home %s %s" % (request.url.scheme, request.client.host if request.client else "-"))

async def ws(websocket):
    await websocket.accept()
    await websocket.send_text("hello %s" % websocket.url.scheme)
    while True:
        msg = await websocket.receive_text()
        if msg == "bye":
            await websocket.close(1000)
            return
        await websocket.send_text("echo " + msg)

app = Starlette(routes=[Route("/", home), WebSocketRoute("/ws", ws)])
"#;

/// A running nginx: its master's pid is its process group's; the group is
/// killed on drop.
pub struct Nginx {
    child: Child,
    pub dir: tempfile::TempDir,
    /// `127.0.0.1:PORT` of its plain HTTP server.
    pub addr: String,
}

impl Nginx {
    /// nginx with the config of gunicorn's docs ([`gunicorn_docs_conf`],
    /// upstream keep-alive or not) in front of corral's Unix socket `sock`,
    /// on a free port.
    pub fn in_front_of(sock: &Path, keepalive: bool) -> Nginx {
        let port = free_port();
        let upstream = format!("unix:{}", sock.display());
        Nginx::start(&gunicorn_docs_conf(&upstream, port, keepalive, ""), port)
    }

    /// Starts nginx with `http` as its `http {}` block's body (after the
    /// prefix's temporary paths and logs), listening on `port`, and waits
    /// until it accepts there.
    pub fn start(http: &str, port: u16) -> Nginx {
        assert!(
            Path::new(NGINX).exists(),
            "nginx is not installed: these tests run corral behind a real nginx \
             (apt-get install -y nginx; .ci/run installs it)"
        );
        let dir = tempfile::tempdir().unwrap();
        // nginx's workers (www-data) reach their temporary folders here.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let p = dir.path().display().to_string();
        // SAFETY: geteuid has no preconditions.
        let user = match unsafe { libc::geteuid() } {
            0 => "user www-data www-data;\n",
            _ => "",
        };
        let conf = format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\n{user}pid {p}/nginx.pid;\n\
             error_log {p}/error.log info;\nevents {{ worker_connections 512; }}\n\
             http {{\n  access_log {p}/access.log;\n  client_body_temp_path {p}/body;\n  \
             proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  \
             scgi_temp_path {p}/scgi;\n{http}\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let mut cmd = Command::new(NGINX);
        cmd.args(["-p", &p, "-c", &format!("{p}/nginx.conf"), "-e"])
            .arg(format!("{p}/error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = cmd.spawn().expect("start nginx");
        let mut n = Nginx {
            child,
            dir,
            addr: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = n.child.try_wait() {
                panic!("nginx exited ({st}); error log:\n{}", n.error_log());
            }
            if std::net::TcpStream::connect(&n.addr).is_ok() {
                return n;
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not listen on {} in 10 s; error log:\n{}",
                n.addr,
                n.error_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// The error log's lines at level `[error]` or worse.
    pub fn errors(&self) -> Vec<String> {
        self.error_log()
            .lines()
            .filter(|l| {
                ["[error]", "[crit]", "[alert]", "[emerg]"]
                    .iter()
                    .any(|lvl| l.contains(lvl))
            })
            .map(str::to_owned)
            .collect()
    }

    pub fn get(&self, path: &str) -> Response {
        request(&self.addr, "GET", path, &[], b"")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: signalling the process group of a child we started (its
        // pid is the group's id: `process_group(0)`) and have not reaped.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// gunicorn's "Deploying Gunicorn" nginx configuration for an upstream at
/// `upstream` (`unix:/path` or `127.0.0.1:PORT`), listening on `port`,
/// with upstream keep-alive (`keepalive 16`) when `keepalive` is set and
/// `extra` added to the `location /` block.
fn gunicorn_docs_conf(upstream: &str, port: u16, keepalive: bool, extra: &str) -> String {
    let (pool, http11) = match keepalive {
        true => (
            "    keepalive 16;\n",
            "      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n",
        ),
        false => ("", ""),
    };
    format!(
        "  upstream app_server {{\n    server {upstream} fail_timeout=0;\n{pool}  }}\n\
         map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}\n\
         server {{\n    listen 127.0.0.1:{port};\n    client_max_body_size 64m;\n\
         location / {{\n      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n      \
         proxy_set_header X-Forwarded-Proto $scheme;\n      proxy_set_header Host $http_host;\n      \
         proxy_redirect off;\n{http11}{extra}      proxy_pass http://app_server;\n    }}\n\
         location /ws {{\n      proxy_http_version 1.1;\n      proxy_set_header Upgrade $http_upgrade;\n      \
         proxy_set_header Connection $connection_upgrade;\n      proxy_set_header Host $http_host;\n      \
         proxy_set_header X-Forwarded-Proto $scheme;\n      proxy_pass http://app_server;\n    }}\n  }}\n"
    )
}

/// The app's folder, readable by nginx's and the workers' users, with a
/// Unix socket path in it.
fn app_dir(files: &[(&str, &str)]) -> (AppDir, PathBuf) {
    let app = AppDir::new(files);
    std::fs::set_permissions(app.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = app.path().join("app.sock");
    (app, sock)
}

/// corral on `unix:SOCK` in `app`'s folder, reachable by nginx's group as
/// the README says (`-g www-data -m 007` as root), with `args` added.
fn corral_on_socket(app: &AppDir, sock: &Path, args: &[&str], workers: usize) -> Corral {
    let bind = format!("unix:{}", sock.display());
    let mut all = vec!["-b", &bind, "--status-bind", "127.0.0.1:0"];
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        all.extend(["-g", "www-data", "-m", "007"]);
    }
    all.extend_from_slice(args);
    let mut c = Corral::spawn(app.path(), &all, &[]);
    c.log
        .wait_for("listening on", Duration::from_secs(20))
        .unwrap_or_else(|| panic!("corral never listened; log:\n{}", c.log.text()));
    let line = c
        .log
        .wait_for("status server on http://", Duration::from_secs(5))
        .expect("corral's status server");
    let addr = line.split("status server on http://").nth(1).unwrap();
    c.status_addr = addr.split_whitespace().next().unwrap().to_string();
    if workers > 0 {
        c.wait_in_service(workers);
    }
    c
}

fn json(r: &Response) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
}

/// Sends `n` requests on one keep-alive connection to nginx, each after
/// `pause`; the statuses that were not 200.
fn keepalive_run(
    addr: &str,
    method: &str,
    path: &str,
    body: &[u8],
    n: usize,
    pause: Duration,
) -> Vec<String> {
    let mut bad = Vec::new();
    let mut s = connect(addr);
    let mut r = BufReader::new(s.try_clone().unwrap());
    for i in 0..n {
        std::thread::sleep(pause);
        send_request(&mut s, method, path, &[], body);
        match read_response(&mut r, false) {
            Ok(resp) if resp.status == 200 => {
                if resp.header("connection") == Some("close") {
                    s = connect(addr);
                    r = BufReader::new(s.try_clone().unwrap());
                }
            }
            Ok(resp) => {
                bad.push(format!(
                    "#{i} {method} {path}: {} {}",
                    resp.status,
                    resp.text()
                ));
                s = connect(addr);
                r = BufReader::new(s.try_clone().unwrap());
            }
            Err(e) => {
                bad.push(format!("#{i} {method} {path}: {e}"));
                s = connect(addr);
                r = BufReader::new(s.try_clone().unwrap());
            }
        }
    }
    bad
}

/// A TLS server block for nginx on `port` (its certificate made in `dir`)
/// with the same proxy headers, to the same upstream.
fn tls_server(dir: &Path, port: u16) -> String {
    crate::tls::make_certs(dir, "127.0.0.1");
    let d = dir.display();
    format!(
        "  server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {d}/server.pem;\n    \
         ssl_certificate_key {d}/server.key;\n    location / {{\n      \
         proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n      \
         proxy_set_header X-Forwarded-Proto $scheme;\n      proxy_set_header Host $http_host;\n      \
         proxy_redirect off;\n      proxy_pass http://app_server;\n    }}\n  }}\n"
    )
}

/// GET `path` from nginx's TLS server with `Host: host`, through curl.
fn curl_https(port: u16, path: &str, host: &str) -> serde_json::Value {
    let out = Command::new("curl")
        .args(["-sS", "-k", "--max-time", "10", "-H"])
        .arg(format!("Host: {host}"))
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn behind_nginx_a_unix_socket_for_www_data_serves_flask_the_client_address_scheme_and_host() {
    let (app, sock) = app_dir(&[("app.py", FLASK)]);
    let c = corral_on_socket(&app, &sock, &["app:app", "-w", "1"], 1);
    if unsafe { libc::geteuid() } == 0 {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&sock).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o770, "{sock:?}");
        assert_eq!(meta.gid(), 33, "the socket's group is www-data");
    }
    let (port, tls_port) = (free_port(), free_port());
    let mut conf = gunicorn_docs_conf(&format!("unix:{}", sock.display()), port, true, "");
    conf.push_str(&tls_server(app.path(), tls_port));
    let nginx = Nginx::start(&conf, port);
    let r = request(
        &nginx.addr,
        "GET",
        "/who",
        &[("Host", "shop.example:8080")],
        b"",
    );
    assert_eq!(r.status, 200, "{r:?}\n{}", nginx.error_log());
    let j = json(&r);
    assert_eq!(j["remote_addr"], "127.0.0.1", "{j}");
    assert_eq!(
        (&j["scheme"], &j["secure"]),
        (&"http".into(), &false.into()),
        "{j}"
    );
    assert_eq!(j["host"], "shop.example:8080", "{j}");
    assert_eq!(j["url"], "http://shop.example:8080/who", "{j}");
    let j = curl_https(tls_port, "/who", "shop.example");
    assert_eq!(
        (&j["scheme"], &j["secure"]),
        (&"https".into(), &true.into()),
        "{j}"
    );
    assert_eq!(j["url"], "https://shop.example/who", "{j}");
    assert_eq!(j["remote_addr"], "127.0.0.1", "{j}");
    // A client nginx does not trust (127.0.0.2 is not in
    // forwarded_allow_ips) cannot name another address or scheme: nginx
    // appends its address, the nearest untrusted hop.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--interface", "127.0.0.2"])
        .args([
            "-H",
            "X-Forwarded-For: 6.6.6.6",
            "-H",
            "X-Forwarded-Proto: https",
        ])
        .arg(format!("http://{}/who", nginx.addr))
        .output()
        .expect("curl runs");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(j["remote_addr"], "127.0.0.2", "{j}");
    assert_eq!(j["scheme"], "http", "{j}");
    assert!(nginx.errors().is_empty(), "{}", nginx.error_log());
    drop(c);
}

#[test]
fn behind_nginx_django_sees_https_through_secure_proxy_ssl_header() {
    let (app, sock) = app_dir(&[("dj.py", DJANGO)]);
    let _c = corral_on_socket(&app, &sock, &["dj:application", "-w", "1"], 1);
    let (port, tls_port) = (free_port(), free_port());
    let mut conf = gunicorn_docs_conf(&format!("unix:{}", sock.display()), port, true, "");
    conf.push_str(&tls_server(app.path(), tls_port));
    let nginx = Nginx::start(&conf, port);
    let j = json(&request(
        &nginx.addr,
        "GET",
        "/who",
        &[("Host", "shop.example")],
        b"",
    ));
    assert_eq!(j["secure"], false, "{j}");
    assert_eq!(j["url"], "http://shop.example/x?y=1", "{j}");
    let j = curl_https(tls_port, "/who", "shop.example");
    assert_eq!(j["secure"], true, "{j}");
    assert_eq!(j["url"], "https://shop.example/x?y=1", "{j}");
    assert_eq!(j["host"], "shop.example", "{j}");
    assert!(nginx.errors().is_empty(), "{}", nginx.error_log());
}

/// `n` requests through nginx, each on a new client connection, each after
/// a pause of about `pause`: from 2 ms less to 2 ms more, by 10 µs, so that
/// some fall on the moment a keep-alive timer of that length ends the
/// idle upstream connection nginx is about to reuse. GETs and POSTs by
/// turns; what was not 200.
fn keepalive_load(addr: &str, n: usize, pause: Duration) -> Vec<String> {
    let mut bad = Vec::new();
    for i in 0..n {
        let jitter = (i * 104_729 % 401) as i64 - 200;
        let wait = Duration::from_micros((pause.as_micros() as i64 + jitter * 10).max(0) as u64);
        let (method, path, body): (&str, &str, &[u8]) = match i % 2 {
            0 => ("GET", "/who", b""),
            _ => ("POST", "/echo", b"hello upstream"),
        };
        bad.extend(keepalive_run(addr, method, path, body, 1, wait));
    }
    bad
}

/// `corral_connections_open` on corral's status server.
fn open_connections(c: &Corral) -> f64 {
    let metrics = c.status("/metrics").text();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("corral_connections_open "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no corral_connections_open in /metrics:\n{metrics}"))
}

#[test]
fn behind_nginx_upstream_keepalive_across_corrals_keepalive_timeout_loses_no_request() {
    let (app, sock) = app_dir(&[("app.py", FLASK)]);
    // corral's keep-alive short, so that many requests meet its end: on a
    // Unix socket the proxy's idle connections outlast it.
    let c = corral_on_socket(
        &app,
        &sock,
        &["app:app", "-w", "2", "--keepalive", "50ms"],
        2,
    );
    let nginx = Nginx::in_front_of(&sock, true);
    let sent = 400;
    let bad = keepalive_load(&nginx.addr, sent, Duration::from_millis(50));
    let errors = nginx.errors();
    eprintln!(
        "{sent} requests, {} failed; nginx logged {} errors",
        bad.len(),
        errors.len()
    );
    assert!(
        bad.is_empty() && errors.is_empty(),
        "{} of {sent} requests failed through nginx:\n{}\nnginx's error log:\n{}",
        bad.len(),
        bad.join("\n"),
        errors.join("\n")
    );
    // nginx keeps its idle upstream connection past corral's keep-alive,
    // and closes it itself: corral holds it open meanwhile.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        open_connections(&c) >= 1.0,
        "nginx's idle upstream connection was closed"
    );
    drop((nginx, c));

    // On loopback TCP, nginx connects from 127.0.0.1, in the default
    // forwarded_allow_ips: a proxy, whose idle connections outlast corral's
    // keep-alive as on the Unix socket.
    let on_tcp = |extra: &[&str]| {
        let bind = format!("127.0.0.1:{}", free_port());
        let mut args = vec!["app:app", "-w", "2", "-b", &bind];
        args.extend(["--status-bind", "127.0.0.1:0"]);
        args.extend_from_slice(extra);
        let c = Corral::start(app.path(), &args, 2);
        let port = free_port();
        let nginx = Nginx::start(&gunicorn_docs_conf(&bind, port, true, ""), port);
        (c, nginx)
    };
    let (c, nginx) = on_tcp(&["--keepalive", "50ms"]);
    let bad = keepalive_load(&nginx.addr, sent, Duration::from_millis(50));
    assert!(
        bad.is_empty() && nginx.errors().is_empty(),
        "{bad:?}\n{}",
        nginx.error_log()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        open_connections(&c) >= 1.0,
        "nginx's idle upstream connection was closed"
    );
    drop((nginx, c));

    // A proxy corral does not trust (not in forwarded_allow_ips) is taken
    // for a client: with the README's --keepalive 75s.
    let (_c, nginx) = on_tcp(&["--keepalive", "75s", "--forwarded-allow-ips", "192.0.2.1"]);
    let bad = keepalive_load(&nginx.addr, 100, Duration::from_millis(50));
    assert!(
        bad.is_empty() && nginx.errors().is_empty(),
        "{bad:?}\n{}",
        nginx.error_log()
    );
}

/// Reads a response to GET `path` from nginx as it comes: the time each
/// `data:` line arrived, after the request was sent.
fn event_times(addr: &str, path: &str) -> Vec<(String, Duration)> {
    let mut s = connect(addr);
    let start = Instant::now();
    send_request(&mut s, "GET", path, &[("Connection", "close")], b"");
    let mut seen = Vec::new();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).expect("reading the stream");
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let lines = text.lines().filter(|l| l.starts_with("data: ")).count();
        while seen.len() < lines {
            let line = text
                .lines()
                .filter(|l| l.starts_with("data: "))
                .nth(seen.len())
                .unwrap();
            seen.push((line.to_string(), start.elapsed()));
        }
    }
    seen
}

/// Each of 4 events, 400 ms apart, arrives when it is sent, not all at
/// the end.
fn assert_piece_by_piece(what: &str, times: &[(String, Duration)]) {
    assert_eq!(times.len(), 4, "{what}: {times:?}");
    let first = times[0].1;
    let last = times[3].1;
    assert!(
        last.saturating_sub(first) >= Duration::from_millis(900),
        "{what}: the events came together, not as they were sent: {times:?}"
    );
}

#[test]
fn behind_nginx_a_stream_reaches_the_client_piece_by_piece() {
    let (app, sock) = app_dir(&[("app.py", FLASK)]);
    let _c = corral_on_socket(&app, &sock, &["app:app", "-w", "1", "--threads", "4"], 1);
    let upstream = format!("unix:{}", sock.display());
    // proxy_buffering off, over HTTP/1.0 (nginx's default) and over 1.1.
    for keepalive in [false, true] {
        let port = free_port();
        let nginx = Nginx::start(
            &gunicorn_docs_conf(&upstream, port, keepalive, "      proxy_buffering off;\n"),
            port,
        );
        assert_piece_by_piece(
            &format!("proxy_buffering off, keepalive {keepalive}"),
            &event_times(&nginx.addr, "/events"),
        );
        assert!(nginx.errors().is_empty(), "{}", nginx.error_log());
    }
    // Buffering on, and the app's X-Accel-Buffering: no.
    let port = free_port();
    let nginx = Nginx::start(&gunicorn_docs_conf(&upstream, port, true, ""), port);
    assert_piece_by_piece(
        "X-Accel-Buffering: no",
        &event_times(&nginx.addr, "/events?accel=1"),
    );
    assert!(nginx.errors().is_empty(), "{}", nginx.error_log());
}

#[test]
fn behind_nginx_large_uploads_and_downloads_arrive_whole() {
    let (app, sock) = app_dir(&[("app.py", FLASK)]);
    let _c = corral_on_socket(&app, &sock, &["app:app", "-w", "1"], 1);
    let nginx = Nginx::in_front_of(&sock, true);
    // 40 MiB up: nginx buffers it to disk, then sends it with Content-Length.
    let body: Vec<u8> = (0..40u32 << 20).map(|i| (i % 251) as u8).collect();
    let r = request(
        &nginx.addr,
        "POST",
        "/echo",
        &[("Content-Type", "application/octet-stream")],
        &body,
    );
    assert_eq!(r.status, 200, "{r:?}\n{}", nginx.error_log());
    let j = json(&r);
    assert_eq!(j["length"], body.len(), "{j}");
    use sha2::Digest;
    let want: String = sha2::Sha256::digest(&body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(j["sha256"], want, "{j}");
    // And the same up chunked (nginx 1.22 reads the whole chunked body first).
    let r = request(
        &nginx.addr,
        "POST",
        "/echo",
        &[("Transfer-Encoding", "chunked")],
        &crate::common::compare::chunked(&body[..5 << 20], 65536),
    );
    assert_eq!(json(&r)["length"], 5 << 20, "{r:?}");
    // 100 MiB down, through nginx's buffers and its temporary file.
    let n = 100usize << 20;
    let mut s = connect(&nginx.addr);
    send_request(
        &mut s,
        "GET",
        &format!("/big?n={n}"),
        &[("Connection", "close")],
        b"",
    );
    let mut r = BufReader::new(s);
    let mut head = String::new();
    let mut line = String::new();
    use std::io::BufRead;
    while r.read_line(&mut line).unwrap() > 2 {
        head.push_str(&line);
        line.clear();
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let k = r.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        got += k;
    }
    assert_eq!(got, n, "{head}\n{}", nginx.error_log());
    assert!(nginx.errors().is_empty(), "{}", nginx.error_log());
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_nginx_a_websocket_goes_through_the_upgrade_map_to_an_asgi_app() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (app, sock) = app_dir(&[("asgi_app.py", ASGI)]);
    // corral's pings keep an idle socket open past nginx's
    // proxy_read_timeout (60 s by default; 2 s here).
    let _c = corral_on_socket(
        &app,
        &sock,
        &["asgi_app:app", "-w", "1", "--ws-ping-interval", "500ms"],
        1,
    );
    let port = free_port();
    let conf = gunicorn_docs_conf(&format!("unix:{}", sock.display()), port, true, "").replace(
        "location /ws {",
        "location /ws {\n      proxy_read_timeout 2s;",
    );
    let nginx = Nginx::start(&conf, port);
    let t = Duration::from_secs(10);
    let (mut ws, resp) = tokio::time::timeout(
        t,
        tokio_tungstenite::connect_async(format!("ws://{}/ws", nginx.addr)),
    )
    .await
    .expect("a handshake within 10 s")
    .unwrap_or_else(|e| panic!("handshake through nginx: {e}\n{}", nginx.error_log()));
    assert_eq!(resp.status(), 101);
    // The next message that is not one of corral's pings (every 500 ms:
    // one may come between a message and its echo).
    let next = async |ws: &mut tokio_tungstenite::WebSocketStream<_>| loop {
        match tokio::time::timeout(t, ws.next()).await {
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(m))) => break m,
            m => panic!("expected a message within 10 s, got {m:?}"),
        }
    };
    assert_eq!(next(&mut ws).await, Message::Text("hello ws".into()));
    for i in 0..3 {
        ws.send(Message::Text(format!("m{i}").into()))
            .await
            .unwrap();
        assert_eq!(
            next(&mut ws).await,
            Message::Text(format!("echo m{i}").into())
        );
    }
    // Idle for 3 s, reading (tungstenite answers the pings meanwhile).
    let idle = Instant::now() + Duration::from_secs(3);
    let mut pings = 0;
    while let Ok(m) = tokio::time::timeout_at(idle.into(), ws.next()).await {
        match m {
            Some(Ok(Message::Ping(_))) => pings += 1,
            m => panic!("on an idle socket: {m:?}\n{}", nginx.error_log()),
        }
    }
    assert!(pings >= 3, "{pings} pings in 3 s");
    ws.send(Message::Text("after".into())).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::Text("echo after".into()));
    ws.send(Message::Text("bye".into())).await.unwrap();
    match next(&mut ws).await {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 1000),
        m => panic!("expected a close frame, got {m:?}"),
    }
    // Plain HTTP on the same app through nginx.
    let r = tokio::task::spawn_blocking({
        let addr = nginx.addr.clone();
        move || request(&addr, "GET", "/", &[], b"")
    })
    .await
    .unwrap();
    assert_eq!(r.text(), "home http 127.0.0.1", "{r:?}");
    assert!(nginx.errors().is_empty(), "{}", nginx.error_log());
}

/// `corral reload --wait` on corral's control socket, which succeeds.
fn reload(c: &Corral) {
    let (code, text) = reload_wait(c);
    assert_eq!(code, Some(0), "corral reload: {text}");
}

/// Keep-alive GETs and POSTs through nginx from `clients` threads until
/// `stop` is set: (requests, what was not 200).
fn load_until(
    addr: &str,
    clients: usize,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<std::thread::JoinHandle<(usize, Vec<String>)>> {
    (0..clients)
        .map(|t| {
            let (addr, stop) = (addr.to_string(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                let mut bad = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline
                {
                    let (method, path, body): (&str, &str, &[u8]) = match (n + t) % 2 {
                        0 => ("GET", "/who", b""),
                        _ => ("POST", "/echo", b"during a reload"),
                    };
                    bad.extend(keepalive_run(
                        &addr,
                        method,
                        path,
                        body,
                        5,
                        Duration::from_millis(2),
                    ));
                    n += 5;
                }
                (n, bad)
            })
        })
        .collect()
}

#[test]
fn behind_nginx_reload_hup_and_usr2_under_keepalive_load_lose_no_request() {
    let (app, sock) = app_dir(&[("app.py", FLASK)]);
    let mut c = corral_on_socket(&app, &sock, &["app:app", "-w", "2"], 2);
    let nginx = Nginx::in_front_of(&sock, true);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = load_until(&nginx.addr, 4, &stop);
    std::thread::sleep(Duration::from_millis(500));
    reload(&c);
    std::thread::sleep(Duration::from_millis(500));
    c.signal(libc::SIGHUP);
    c.log
        .wait_for(
            "reload done: generation 3 is in service",
            Duration::from_secs(30),
        )
        .unwrap_or_else(|| panic!("the HUP reload never finished; log:\n{}", c.log.text()));
    std::thread::sleep(Duration::from_millis(500));
    // And a new corral on the same socket (USR2), the old one draining
    // its connections to nginx.
    c.signal(libc::SIGUSR2);
    let _new = c.reexec_child();
    assert!(
        c.wait_exit(Duration::from_secs(30)).is_some(),
        "the old corral never stopped; log:\n{}",
        c.log.text()
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut sent, mut bad) = (0, Vec::new());
    for t in load {
        let (n, b) = t.join().unwrap();
        sent += n;
        bad.extend(b);
    }
    let errors = nginx.errors();
    eprintln!(
        "{sent} requests across a reload, a HUP and a USR2, {} failed",
        bad.len()
    );
    assert!(
        bad.is_empty() && errors.is_empty(),
        "{} of {sent} requests failed through nginx:\n{}\nnginx's error log:\n{}",
        bad.len(),
        bad.join("\n"),
        errors.join("\n")
    );
}

#[test]
fn behind_nginx_a_stopped_corral_is_a_clean_502_and_a_graceful_stop_finishes_what_is_in_flight() {
    let (app, sock) = app_dir(&[("app.py", FLASK)]);
    let mut c = corral_on_socket(&app, &sock, &["app:app", "-w", "1", "--threads", "2"], 1);
    let nginx = Nginx::in_front_of(&sock, true);
    assert_eq!(nginx.get("/who").status, 200);
    // A slow request in flight through nginx when corral is told to stop.
    let slow = {
        let addr = nginx.addr.clone();
        std::thread::spawn(move || request(&addr, "GET", "/slow?s=1.5", &[], b""))
    };
    std::thread::sleep(Duration::from_millis(400));
    c.signal(libc::SIGTERM);
    let r = slow.join().unwrap();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "slow done"),
        "{}",
        nginx.error_log()
    );
    assert!(
        c.wait_exit(Duration::from_secs(20)).is_some(),
        "corral did not stop"
    );
    // Stopped: nginx answers 502 at once.
    let started = Instant::now();
    let r = nginx.get("/who");
    assert_eq!(r.status, 502, "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Started again on the same socket: the first request, sent while its
    // worker still imports the app (a second), waits for it and is served
    // (`fail_timeout=0`: the 502 before did not mark corral down).
    let c = corral_on_socket(
        &app,
        &sock,
        &["app:app", "-w", "1", "-e", "SLOW_IMPORT=1"],
        0,
    );
    let sent = Instant::now();
    let r = nginx.get("/who");
    let took = sent.elapsed();
    // The in-service line can arrive after the answer.
    let in_service = c
        .log
        .wait_count("workers in service", 1, Duration::from_secs(10));
    assert!(
        in_service == 1 && took >= Duration::from_millis(500),
        "the request did not wait for the worker: {took:?}"
    );
    assert_eq!(
        r.status,
        200,
        "{r:?}\n{}\ncorral:\n{}",
        nginx.error_log(),
        c.log.text()
    );
}

#[test]
fn behind_nginx_workers_as_another_user_with_the_socket_in_nginxs_group() {
    if !require_root("switching the workers' user and the socket's owner") {
        return;
    }
    let plain = "import os\ndef app(environ, start_response):\n    body = ('%d %s' % (os.getuid(), environ.get('HTTP_X_FORWARDED_FOR'))).encode()\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [body]\n";
    let (app, sock) = app_dir(&[("plain.py", plain)]);
    // As the README says: -u app -g www-data -m 007 (nobody is the app's
    // user here; the system Python, which nobody may run).
    let _c = corral_on_socket(
        &app,
        &sock,
        &[
            "plain:app",
            "-w",
            "1",
            "-u",
            "nobody",
            "--python",
            "/usr/bin/python3",
        ],
        1,
    );
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&sock).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (65534, 33, 0o770)
    );
    let nginx = Nginx::in_front_of(&sock, false);
    let r = nginx.get("/");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "65534 127.0.0.1"),
        "{}",
        nginx.error_log()
    );
}

/// One HTTP/1.0 request with no `Host` (a health checker's, an old
/// client's) to nginx, as it is written.
fn http10_without_host(addr: &str) -> Response {
    let mut s = connect(addr);
    std::io::Write::write_all(&mut s, b"GET /who HTTP/1.0\r\n\r\n").unwrap();
    read_response(&mut BufReader::new(s), false).expect("a response")
}

#[test]
fn behind_nginx_an_http10_request_without_host_needs_host_not_http_host_with_http11_upstreams() {
    let (app, sock) = app_dir(&[("app.py", FLASK)]);
    let _c = corral_on_socket(&app, &sock, &["app:app", "-w", "1"], 1);
    let upstream = format!("unix:{}", sock.display());
    // `proxy_set_header Host $http_host` sends no Host for a client that
    // sent none; over HTTP/1.1 (upstream keep-alive) that request is
    // malformed (RFC 9112 section 3.2), and corral answers 400.
    let port = free_port();
    let nginx = Nginx::start(&gunicorn_docs_conf(&upstream, port, true, ""), port);
    let r = http10_without_host(&nginx.addr);
    assert_eq!(
        (r.status, r.text().trim()),
        (400, "Bad Request: no Host header")
    );
    // gunicorn serves it, behind the same nginx.
    let g_sock = app.path().join("gunicorn.sock");
    let mut gunicorn = Command::new(python());
    gunicorn
        .args(["-m", "gunicorn", "app:app", "-w", "1", "-m", "000", "-b"])
        .arg(format!("unix:{}", g_sock.display()))
        .current_dir(app.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let gunicorn = Group(gunicorn.spawn().expect("start gunicorn"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&g_sock).is_err() {
        assert!(
            Instant::now() < deadline,
            "gunicorn never listened on {g_sock:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let port = free_port();
    let g_nginx = Nginx::start(
        &gunicorn_docs_conf(&format!("unix:{}", g_sock.display()), port, true, ""),
        port,
    );
    assert_eq!(http10_without_host(&g_nginx.addr).status, 200);
    drop((g_nginx, gunicorn));
    // With `proxy_set_header Host $host` nginx always sends one: the
    // request's, else the server's name.
    let port = free_port();
    let conf = gunicorn_docs_conf(&upstream, port, true, "")
        .replace("Host $http_host;", "Host $host;")
        .replace(
            "listen 127.0.0.1",
            "server_name app.example;\n    listen 127.0.0.1",
        );
    let nginx = Nginx::start(&conf, port);
    let r = http10_without_host(&nginx.addr);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(json(&r)["host"], "app.example");
}

/// A child whose process group is killed on drop.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: signalling the process group of a child we started
        // (`process_group(0)`) and have not reaped.
        unsafe {
            libc::kill(-(self.0.id() as i32), libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

/// A POST of 200,000 bytes to nginx that stops halfway for `pause`: the
/// status it gets.
fn stalled_upload(addr: &str, pause: Duration) -> u16 {
    use std::io::Write;
    let mut s = connect(addr);
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n")
        .unwrap();
    s.write_all(&[b'a'; 100_000]).unwrap();
    std::thread::sleep(pause);
    // corral may have answered and nginx closed by now.
    let _ = s.write_all(&[b'a'; 100_000]);
    read_response(&mut BufReader::new(s), false)
        .expect("a response")
        .status
}

#[test]
fn behind_nginx_a_stalled_upload_meets_nginxs_timeouts_unless_request_buffering_is_off() {
    let (app, sock) = app_dir(&[("app.py", FLASK)]);
    let _c = corral_on_socket(
        &app,
        &sock,
        &["app:app", "-w", "1", "--body-timeout", "1s"],
        1,
    );
    let upstream = format!("unix:{}", sock.display());
    // nginx buffers the body (its default): corral gets it whole, at once.
    let port = free_port();
    let nginx = Nginx::start(&gunicorn_docs_conf(&upstream, port, true, ""), port);
    assert_eq!(stalled_upload(&nginx.addr, Duration::from_secs(2)), 200);
    // proxy_request_buffering off: the body streams to corral, whose
    // body_timeout (1 s here, 20 s by default) comes before nginx's
    // client_body_timeout (60 s).
    let port = free_port();
    let nginx = Nginx::start(
        &gunicorn_docs_conf(
            &upstream,
            port,
            true,
            "      proxy_request_buffering off;\n",
        ),
        port,
    );
    assert_eq!(stalled_upload(&nginx.addr, Duration::from_secs(2)), 408);
}

#[test]
fn behind_nginx_the_request_id_is_nginxs_when_it_sets_one_not_the_clients() {
    let (app, sock) = app_dir(&[("app.py", FLASK)]);
    let _c = corral_on_socket(&app, &sock, &["app:app", "-w", "1"], 1);
    let upstream = format!("unix:{}", sock.display());
    let chosen = [("X-Request-ID", "chosen-by-the-client")];
    // gunicorn's config passes the client's X-Request-ID on, and nginx is
    // a trusted peer: the client's id is kept.
    let port = free_port();
    let nginx = Nginx::start(&gunicorn_docs_conf(&upstream, port, true, ""), port);
    let r = request(&nginx.addr, "GET", "/who", &chosen, b"");
    assert_eq!(json(&r)["request_id"], "chosen-by-the-client");
    // With nginx's own id set, the app, the response and corral's log
    // have nginx's $request_id (32 hex digits), whatever the client sent.
    let port = free_port();
    let nginx = Nginx::start(
        &gunicorn_docs_conf(
            &upstream,
            port,
            true,
            "      proxy_set_header X-Request-ID $request_id;\n",
        ),
        port,
    );
    let r = request(&nginx.addr, "GET", "/who", &chosen, b"");
    let id = json(&r)["request_id"].as_str().unwrap_or("").to_string();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id:?}"
    );
    assert_eq!(r.header("x-request-id"), Some(id.as_str()));
}

#[test]
fn behind_nginx_x_accel_redirect_lets_nginx_serve_the_file() {
    let (app, sock) = app_dir(&[("app.py", FLASK), ("files/report.txt", "the report\n")]);
    let _c = corral_on_socket(&app, &sock, &["app:app", "-w", "1"], 1);
    let port = free_port();
    let files = app.path().join("files");
    let conf = gunicorn_docs_conf(&format!("unix:{}", sock.display()), port, true, "")
        .replace(
            "location /ws {",
            &format!(
                "    location /protected/ {{\n      internal;\n      alias {}/;\n    }}\n    location /ws {{",
                files.display()
            ),
        );
    let nginx = Nginx::start(&conf, port);
    let r = nginx.get("/download");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "the report\n"),
        "{r:?}\n{}",
        nginx.error_log()
    );
    // The internal location is not reachable from outside.
    assert_eq!(nginx.get("/protected/report.txt").status, 404);
}
