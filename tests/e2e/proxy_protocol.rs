//! The PROXY protocol (`[server] proxy_protocol`, gunicorn's
//! `--proxy-protocol`): a load balancer that passes TCP through names the
//! client in a header before the connection's bytes. Raw TCP writes the
//! headers byte for byte; curl's `--haproxy-protocol` is a real client that
//! sends one, before TLS on an https URL.

use crate::common::*;
use std::io::{BufReader, Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Answers with what the environ says of the client.
const WSGI: &str = r#"
def app(environ, start_response):
    keys = ["REMOTE_ADDR", "REMOTE_PORT", "PROXY_PROTOCOL", "PROXY_ADDR", "PROXY_PORT",
            "wsgi.url_scheme", "SERVER_PROTOCOL"]
    body = " ".join("%s=%s" % (k, environ.get(k, "-")) for k in keys).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"#;

const ASGI: &str = r#"
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = repr(scope["client"]).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
"#;

const V1: &[u8] = b"PROXY TCP4 203.0.113.7 198.51.100.1 4711 443\r\n";
const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// A version 2 header: PROXY over TCP6, from [2001:db8::7]:4711 to [2001:db8::1]:443.
fn v2_tcp6() -> Vec<u8> {
    let mut b = b"\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x24".to_vec();
    let src: std::net::Ipv6Addr = "2001:db8::7".parse().unwrap();
    let dst: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
    b.extend_from_slice(&src.octets());
    b.extend_from_slice(&dst.octets());
    b.extend_from_slice(&4711u16.to_be_bytes());
    b.extend_from_slice(&443u16.to_be_bytes());
    b
}

fn start(args: &[&str]) -> (AppDir, Corral) {
    let app = AppDir::new(&[("app.py", WSGI), ("asgi_app.py", ASGI)]);
    let mut all = vec!["app:app", "-w", "1", "--status-bind", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let c = Corral::start(app.path(), &all, 1);
    (app, c)
}

/// Writes `first` then `requests` requests on one connection; their bodies.
fn bodies(addr: &str, first: &[u8], requests: usize) -> Vec<String> {
    let mut s = connect(addr);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(first).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    (0..requests)
        .map(|_| {
            s.write_all(GET).unwrap();
            let resp = read_response(&mut r, false).expect("a response");
            assert_eq!(resp.status, 200, "{}", resp.text());
            resp.text()
        })
        .collect()
}

/// What corral answers to `bytes` before it closes the connection.
fn refused(addr: &str, bytes: &[u8]) -> (u16, String) {
    let mut s = connect(addr);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let resp =
        read_response(&mut BufReader::new(s.try_clone().unwrap()), false).expect("a response");
    // And then the connection is closed.
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).map(|_| rest.len()).ok(), Some(0));
    (resp.status, resp.text())
}

fn metric(c: &Corral, name: &str) -> String {
    let text = c.status("/metrics").text();
    text.lines()
        .find_map(|l| Some(l.strip_prefix(name)?.strip_prefix(' ')?.to_owned()))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

#[test]
fn a_proxy_header_names_the_client_for_the_whole_connection_as_under_gunicorn() {
    let (_app, c) = start(&["--proxy-protocol", "--access-logfile", "-"]);
    let want = "REMOTE_ADDR=203.0.113.7 REMOTE_PORT=4711 PROXY_PROTOCOL=TCP4 \
                PROXY_ADDR=198.51.100.1 PROXY_PORT=443 wsgi.url_scheme=http SERVER_PROTOCOL=HTTP/1.1";
    // Two keep-alive requests after one header; then the header and the
    // request in one write.
    assert_eq!(bodies(&c.addr, V1, 2), [want, want]);
    assert_eq!(request_raw(&c.addr, &[V1, GET].concat()).text(), want);
    // The access log's client (%(h)s) is the header's too.
    let line = c
        .log
        .wait_for("\"GET / HTTP/1.1\" 200", Duration::from_secs(5));
    assert!(
        line.as_deref()
            .is_some_and(|l| l.starts_with("203.0.113.7 - - [")),
        "{line:?}"
    );
    // Version 2, IPv6.
    assert_eq!(
        bodies(&c.addr, &v2_tcp6(), 1),
        [
            "REMOTE_ADDR=2001:db8::7 REMOTE_PORT=4711 PROXY_PROTOCOL=TCP6 PROXY_ADDR=2001:db8::1 \
          PROXY_PORT=443 wsgi.url_scheme=http SERVER_PROTOCOL=HTTP/1.1"
        ]
    );
    // The proxy's own health check (UNKNOWN) and a connection with no
    // header at all: the socket's own client.
    for first in [&b"PROXY UNKNOWN\r\n"[..], b""] {
        let body = &bodies(&c.addr, first, 1)[0];
        assert!(
            body.starts_with("REMOTE_ADDR=127.0.0.1 REMOTE_PORT=")
                && body.contains(" PROXY_PROTOCOL=- PROXY_ADDR=- PROXY_PORT=- "),
            "{body}"
        );
    }
    assert_eq!(metric(&c, "corral_proxy_header_refusals_total"), "0");
}

#[test]
fn a_header_from_a_peer_not_allowed_gets_403_and_a_malformed_one_400() {
    let (_app, c) = start(&["--proxy-protocol", "v1", "--proxy-allow-from", "10.0.0.0/8"]);
    let (status, body) = refused(&c.addr, &[V1, GET].concat());
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not in proxy_allow_ips"), "{body}");
    // Without a header, the same peer is served as itself.
    assert!(bodies(&c.addr, b"", 1)[0].starts_with("REMOTE_ADDR=127.0.0.1 "));
    drop(c);

    let (_app, c) = start(&["--proxy-protocol", "auto"]);
    for bad in [
        &b"PROXY TCP4 203.0.113.7 198.51.100.1 4711\r\n"[..],
        b"PROXY TCP4 203.0.113.7 198.51.100.1 4711 99999\r\n",
        b"PROXY TCP6 203.0.113.7 198.51.100.1 4711 443\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x21\x12\x00\x0c............",
    ] {
        let (status, body) = refused(&c.addr, &[bad, GET].concat());
        assert_eq!(status, 400, "{:?}: {body}", String::from_utf8_lossy(bad));
        assert!(
            body.starts_with("invalid PROXY protocol header: "),
            "{body}"
        );
    }
    assert_eq!(metric(&c, "corral_proxy_header_refusals_total"), "4");
    // The worker served on: no refusal reached it.
    assert_eq!(c.get("/").status, 200);
}

#[test]
fn a_header_sent_a_byte_at_a_time_counts_and_one_that_stalls_is_closed_after_keepalive() {
    let (_app, c) = start(&["--proxy-protocol", "--keep-alive", "1"]);
    let mut s = connect(&c.addr);
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for b in V1 {
        s.write_all(&[*b]).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    s.write_all(GET).unwrap();
    let resp = read_response(&mut BufReader::new(s), false).expect("a response");
    assert!(
        resp.text()
            .starts_with("REMOTE_ADDR=203.0.113.7 REMOTE_PORT=4711 "),
        "{}",
        resp.text()
    );

    let mut s = connect(&c.addr);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"PROXY TCP4 203.0.113.7 ").unwrap();
    let start = std::time::Instant::now();
    let mut rest = Vec::new();
    let read = s.read_to_end(&mut rest);
    let waited = start.elapsed();
    assert!(
        matches!(read, Ok(0))
            && waited >= Duration::from_millis(800)
            && waited < Duration::from_secs(5),
        "{read:?} after {waited:?}: {}",
        String::from_utf8_lossy(&rest)
    );
}

/// A connection whose PROXY header corral took comes from a proxy in
/// front, which keeps idle connections: it gets at least 75 s between
/// requests, not `keepalive` (as a client's does). The loopback address
/// is taken out of `forwarded_allow_ips`, so only the header counts.
#[test]
fn a_proxied_connection_is_kept_idle_past_keepalive_for_the_proxy_to_close() {
    let (_app, c) = start(&[
        "--proxy-protocol",
        "--keep-alive",
        "1",
        "--forwarded-allow-ips",
        "192.0.2.1",
    ]);
    let mut s = connect(&c.addr);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&[V1, GET].concat()).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    assert_eq!(read_response(&mut r, false).unwrap().status, 200);
    std::thread::sleep(Duration::from_secs(3));
    s.write_all(GET).unwrap();
    let resp = read_response(&mut r, false).expect("served on the same connection");
    assert!(
        resp.text().starts_with("REMOTE_ADDR=203.0.113.7 "),
        "{}",
        resp.text()
    );
}

#[test]
fn without_proxy_protocol_a_header_is_an_ordinary_bad_request() {
    let (_app, c) = start(&[]);
    let resp = request_raw(&c.addr, &[V1, GET].concat());
    assert_eq!(resp.status, 400, "{}", resp.text());
}

fn request_raw(addr: &str, bytes: &[u8]) -> Response {
    let mut s = connect(addr);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    read_response(&mut BufReader::new(s), false).expect("a response")
}

fn curl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("curl")
        .current_dir(dir)
        .args(["-sS", "--max-time", "10", "--haproxy-protocol"])
        .args(args)
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn curl_sends_the_header_before_tls_and_before_http2() {
    let app = AppDir::new(&[("app.py", WSGI)]);
    crate::tls::make_certs(app.path(), "127.0.0.1");
    let tls = Corral::start(
        app.path(),
        &[
            "app:app",
            "-w",
            "1",
            "--proxy-protocol",
            "--certfile",
            "server.pem",
            "--keyfile",
            "server.key",
        ],
        1,
    );
    let body = curl(app.path(), &["-k", &format!("https://{}/", tls.addr)]);
    assert!(
        body.starts_with("REMOTE_ADDR=127.0.0.1 REMOTE_PORT=")
            && body.contains(" PROXY_PROTOCOL=TCP4 PROXY_ADDR=127.0.0.1 ")
            && body.ends_with(" wsgi.url_scheme=https SERVER_PROTOCOL=HTTP/2"),
        "{body}"
    );
    drop(tls);
    let plain = Corral::start(app.path(), &["app:app", "-w", "1", "--proxy-protocol"], 1);
    let url = format!("http://{}/", plain.addr);
    let body = curl(app.path(), &["--http2-prior-knowledge", &url]);
    assert!(
        body.contains(" PROXY_PROTOCOL=TCP4 ") && body.ends_with(" SERVER_PROTOCOL=HTTP/2"),
        "{body}"
    );
    let body = curl(app.path(), &[&url]);
    assert!(
        body.contains(" PROXY_PROTOCOL=TCP4 ") && body.ends_with("HTTP/1.1"),
        "{body}"
    );
}

#[test]
fn an_asgi_app_sees_the_client_the_header_named() {
    let app = AppDir::new(&[("asgi_app.py", ASGI)]);
    let c = Corral::start(
        app.path(),
        &[
            "asgi_app:app",
            "-w",
            "1",
            "--interface",
            "asgi",
            "--proxy-protocol",
            "v1",
        ],
        1,
    );
    assert_eq!(bodies(&c.addr, V1, 1), ["('203.0.113.7', 4711)"]);
}

/// A child killed and waited for on drop.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn haproxy() -> Option<&'static Path> {
    debian_program(&["/usr/sbin/haproxy", "/usr/bin/haproxy"], "haproxy")
}

#[test]
fn haproxy_in_front_with_send_proxy_v2_and_v1_names_the_real_client() {
    let Some(haproxy) = haproxy() else {
        return;
    };
    let (app, c) = start(&["--proxy-protocol"]);
    for send_proxy in ["send-proxy-v2", "send-proxy"] {
        let listen = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let cfg = app.path().join(format!("{send_proxy}.cfg"));
        std::fs::write(
            &cfg,
            format!(
                "global\n    maxconn 100\ndefaults\n    mode tcp\n    timeout connect 5s\n    \
                 timeout client 10s\n    timeout server 10s\nfrontend front\n    bind {listen}\n    \
                 default_backend corral\nbackend corral\n    server c {} {send_proxy}\n",
                c.addr
            ),
        )
        .unwrap();
        let _haproxy = Reaped(
            Command::new(haproxy)
                .args(["-db", "-f"])
                .arg(&cfg)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("haproxy starts"),
        );
        // Through haproxy, the client is this test's own socket: its port
        // is the one haproxy names, and PROXY_PORT is haproxy's.
        let mut s = None;
        for _ in 0..100 {
            if let Ok(conn) = std::net::TcpStream::connect(listen) {
                s = Some(conn);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut s = s.expect("haproxy listens");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let client_port = s.local_addr().unwrap().port();
        s.write_all(GET).unwrap();
        let resp = read_response(&mut BufReader::new(s), false).expect("a response");
        assert_eq!(
            resp.text(),
            format!(
                "REMOTE_ADDR=127.0.0.1 REMOTE_PORT={client_port} PROXY_PROTOCOL=TCP4 \
                 PROXY_ADDR=127.0.0.1 PROXY_PORT={} wsgi.url_scheme=http SERVER_PROTOCOL=HTTP/1.1",
                listen.port()
            ),
            "{send_proxy}"
        );
    }
}
