//! TLS, mutual TLS and HTTP/2 on the app port, with real clients: curl
//! (HTTP/2 by ALPN, h2c with prior knowledge, client certificates) against
//! certificates from a CA that each test makes with the openssl CLI.

use crate::common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const WSGI: &str = "def app(environ, start_response):\n    body = ' '.join(str(environ.get(k)) for k in ('wsgi.url_scheme', 'HTTPS', 'SERVER_PROTOCOL', 'SSL_CLIENT_S_DN')).encode()\n    start_response('200 OK', [('Content-Length', str(len(body)))])\n    return [body]\n";

const ASGI: &str = "async def app(scope, receive, send):\n    if scope['type'] != 'http':\n        return\n    tls = scope['extensions'].get('tls') or {}\n    body = ' '.join(str(x) for x in (scope['scheme'], scope['http_version'], tls.get('client_cert_name'), bool(tls.get('client_cert_chain')) and tls['client_cert_chain'][0].startswith('-----BEGIN CERTIFICATE-----\\n'), tls.get('tls_version'))).encode()\n    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n    await send({'type': 'http.response.body', 'body': body})\n";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
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

/// A CA (ca.pem), a server certificate for 127.0.0.1 with subject
/// CN=`server_cn` (`server.pem`, `server.key`) and a client certificate
/// for O=Example, CN=alice (client.pem, client.key).
fn make_certs(dir: &Path, server_cn: &str) {
    let ext = dir.join("ext");
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\n").unwrap();
    std::fs::write(dir.join("cext"), "extendedKeyUsage=clientAuth\n").unwrap();
    if !dir.join("ca.pem").exists() {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=Test CA",
            ],
        );
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "client.key",
                "-out",
                "client.csr",
                "-subj",
                "/O=Example/CN=alice",
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "client.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "client.pem",
                "-days",
                "2",
                "-extfile",
                "cext",
            ],
        );
    }
    let subj = format!("/CN={server_cn}");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "new.key",
            "-out",
            "server.csr",
            "-subj",
            &subj,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "new.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ],
    );
    // Key first, then the certificate, each replaced whole.
    std::fs::rename(dir.join("new.key"), dir.join("server.key")).unwrap();
    std::fs::rename(dir.join("new.pem"), dir.join("server.pem")).unwrap();
}

/// curl with `args` and a 10 s limit: (exit code, body, stderr).
fn curl(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new("curl")
        .current_dir(dir)
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tls_args() -> Vec<&'static str> {
    vec!["--certfile", "server.pem", "--keyfile", "server.key"]
}

#[test]
fn https_serves_http2_by_alpn_and_http11_and_the_app_sees_https() {
    let app = AppDir::new(&[("app.py", WSGI)]);
    make_certs(app.path(), "localhost");
    let mut args = vec!["app:app", "--status-bind", "127.0.0.1:0"];
    args.extend(tls_args());
    let c = Corral::start(app.path(), &args, 1);
    let url = format!("https://{}/", c.addr);
    let (code, body, err) = curl(app.path(), &["--http2", "--cacert", "ca.pem", &url]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(body, "https on HTTP/2 None");
    let (code, body, err) = curl(app.path(), &["--http1.1", "--cacert", "ca.pem", &url]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(body, "https on HTTP/1.1 None");
    // Plain HTTP on a TLS bind is a failed handshake, counted.
    let (code, _, _) = curl(app.path(), &[&format!("http://{}/", c.addr)]);
    assert_ne!(code, 0);
    let metrics = c.status("/metrics").text();
    assert!(
        metrics.contains("corral_requests_by_version_total{version=\"2\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("corral_requests_by_version_total{version=\"1.1\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("corral_tls_handshake_failures_total 1"),
        "{metrics}"
    );
}

#[test]
fn h2c_with_prior_knowledge_on_a_plain_bind_beside_http11() {
    let app = AppDir::new(&[("app.py", ASGI)]);
    let c = Corral::start(app.path(), &["app:app", "--interface", "asgi"], 1);
    let url = format!("http://{}/", c.addr);
    let (code, body, err) = curl(app.path(), &["--http2-prior-knowledge", &url]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(body, "http 2 None False None");
    let (code, body, err) = curl(app.path(), &[&url]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(body, "http 1.1 None False None");
    // `Upgrade: h2c` is not taken up: the request is answered on HTTP/1.1.
    let (code, body, err) = curl(app.path(), &["--http2", &url]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(body, "http 1.1 None False None");
}

#[test]
fn mutual_tls_refuses_a_client_without_a_certificate_and_names_the_one_with() {
    for (interface, source, expected) in [
        ("wsgi", WSGI, "https on HTTP/2 O=Example, CN=alice"),
        ("asgi", ASGI, "https 2 O=Example, CN=alice True 772"),
    ] {
        let app = AppDir::new(&[("app.py", source)]);
        make_certs(app.path(), "localhost");
        let mut args = vec!["app:app", "--interface", interface];
        args.extend(tls_args());
        args.extend(["--ca-certs", "ca.pem", "--cert-reqs", "required"]);
        let c = Corral::start(app.path(), &args, 1);
        assert_eq!(mutual_tls_answer(app.path(), &c.addr), expected);
    }
}

/// Asks `addr` over HTTPS without a client certificate (which must be
/// refused) and then with `client.pem`; the answer to the second.
fn mutual_tls_answer(dir: &Path, addr: &str) -> String {
    let url = format!("https://{addr}/");
    let (code, body, _) = curl(dir, &["--cacert", "ca.pem", &url]);
    assert_ne!(code, 0, "served without a client certificate: {body}");
    let (code, body, err) = curl(
        dir,
        &[
            "--cacert",
            "ca.pem",
            "--cert",
            "client.pem",
            "--key",
            "client.key",
            &url,
        ],
    );
    assert_eq!(code, 0, "{err}");
    body
}

/// A gunicorn config with mutual TLS, as gunicorn's docs write it.
const GUNICORN_TLS_CONF: &str = "import ssl\nbind = '127.0.0.1:0'\ncertfile = 'server.pem'\nkeyfile = 'server.key'\nca_certs = 'ca.pem'\ncert_reqs = ssl.CERT_REQUIRED\nssl_version = ssl.PROTOCOL_TLS_SERVER\nwsgi_app = 'app:app'\n";

#[test]
fn import_gunicorn_carries_mutual_tls_over_and_the_converted_file_serves_it() {
    let app = AppDir::new(&[("app.py", WSGI), ("gunicorn.conf.py", GUNICORN_TLS_CONF)]);
    make_certs(app.path(), "localhost");
    let out = Command::new(corral_bin())
        .current_dir(app.path())
        .args(["import-gunicorn", "gunicorn.conf.py", "--python", &python()])
        .output()
        .unwrap();
    let toml = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(toml.contains("\n[server.tls]\n"), "{toml}");
    assert!(toml.contains("\ncertfile = \""), "{toml}");
    assert!(toml.contains("cert_reqs = \"required\"\n"), "{toml}");
    assert!(
        !toml.contains("min_version") && !stderr.contains("ssl_version"),
        "PROTOCOL_TLS_SERVER needs nothing: {toml}{stderr}"
    );
    std::fs::write(app.path().join("corral.toml"), &toml).unwrap();
    let c = Corral::start(app.path(), &["-c", "corral.toml"], 1);
    assert_eq!(
        mutual_tls_answer(app.path(), &c.addr),
        "https on HTTP/2 O=Example, CN=alice"
    );
}

#[test]
fn bad_certificates_and_keys_are_config_errors_that_say_where() {
    let app = AppDir::new(&[("app.py", WSGI)]);
    make_certs(app.path(), "localhost");
    openssl(
        app.path(),
        &[
            "pkey",
            "-in",
            "server.key",
            "-aes256",
            "-passout",
            "pass:secret",
            "-out",
            "encrypted.key",
        ],
    );
    std::fs::write(app.path().join("junk.pem"), "not a certificate\n").unwrap();
    std::fs::write(
        app.path().join("corral.toml"),
        "[app]\nmodule = \"app:app\"\n[server.tls]\ncertfile = \"server.pem\"\nkeyfile = \"encrypted.key\"\n",
    )
    .unwrap();
    for (args, wanted) in [
        (
            vec!["-c", "corral.toml"],
            [
                "corral.toml:5",
                "server.tls.keyfile",
                "encrypted private key",
            ],
        ),
        (
            vec![
                "app:app",
                "--certfile",
                "junk.pem",
                "--keyfile",
                "server.key",
            ],
            ["--certfile", "junk.pem", "no PEM certificate"],
        ),
        (
            vec!["app:app", "--certfile", "server.pem", "--keyfile", "ca.key"],
            ["--keyfile", "ca.key", "the key of this certificate"],
        ),
        (
            vec![
                "app:app",
                "--certfile",
                "server.pem",
                "--keyfile",
                "server.key",
                "--cert-reqs",
                "required",
            ],
            ["--cert-reqs", "needs ca_certs", ""],
        ),
    ] {
        let mut c = Corral::spawn(app.path(), &args, &[]);
        let status = c.wait_exit(Duration::from_secs(20)).expect("corral exits");
        assert!(!status.success());
        let log = c.log.text();
        for w in wanted {
            assert!(log.contains(w), "{args:?}: no {w:?} in:\n{log}");
        }
    }
}

/// The subject of the certificate the server at `addr` presents.
fn served_subject(dir: &Path, addr: &str) -> String {
    let (_, _, err) = curl(
        dir,
        &["-v", "--cacert", "ca.pem", &format!("https://{addr}/")],
    );
    err.lines()
        .find_map(|l| l.trim().strip_prefix("*  subject: "))
        .unwrap_or_else(|| panic!("no subject in:\n{err}"))
        .to_owned()
}

#[test]
fn reload_reads_a_new_certificate_and_keeps_the_old_one_when_the_new_is_bad() {
    let app = AppDir::new(&[("app.py", WSGI)]);
    make_certs(app.path(), "first");
    let mut args = vec!["app:app", "--status-bind", "127.0.0.1:0"];
    args.extend(tls_args());
    let c = Corral::start(app.path(), &args, 1);
    assert_eq!(served_subject(app.path(), &c.addr), "CN=first");
    // /status shows the certificate in force: subject and expiry (the
    // test's certificates are valid for 2 days).
    let tls = c.status_json()["tls"].clone();
    assert_eq!(tls["subject"], "CN=first", "{tls}");
    assert_eq!(tls["expires_in_days"], 1, "{tls}");
    assert!(tls["last_reload"].is_null(), "{tls}");
    let reload = || {
        Command::new(corral_bin())
            .args(["reload", "--wait", "--socket", c.socket.to_str().unwrap()])
            .output()
            .unwrap()
    };
    make_certs(app.path(), "second");
    let out = reload();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(served_subject(app.path(), &c.addr), "CN=second");
    let tls = c.status_json()["tls"].clone();
    assert_eq!(tls["subject"], "CN=second", "{tls}");
    assert_eq!(tls["last_reload"]["ok"], true, "{tls}");
    std::fs::write(app.path().join("server.pem"), "garbage\n").unwrap();
    let out = reload();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("the certificate in force stays"), "{text}");
    assert_eq!(served_subject(app.path(), &c.addr), "CN=second");
    assert!(c.log.text().contains("no PEM certificate"));
    // /status and `corral status` report the failed reload beside the
    // certificate still in force.
    let tls = c.status_json()["tls"].clone();
    assert_eq!(tls["subject"], "CN=second", "{tls}");
    assert_eq!(tls["last_reload"]["ok"], false, "{tls}");
    assert_eq!(tls["reload_failures"], 1, "{tls}");
    // /metrics: the failure, and the expiry of the certificate in force.
    let metrics = c.status("/metrics").text();
    assert!(
        metrics.contains("corral_tls_reload_failures_total 1\n"),
        "{metrics}"
    );
    let expiry = format!(
        "corral_tls_certificate_expiry_timestamp_seconds {}\n",
        tls["not_after"]
    );
    assert!(metrics.contains(&expiry), "no {expiry:?} in:\n{metrics}");
    let error = tls["last_reload"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("[server.tls] certfile") && error.contains("no PEM certificate"),
        "{tls}"
    );
    let out = Command::new(corral_bin())
        .args(["status", "--socket", c.socket.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "tls: CN=second, expires in 1 days; last reload FAILED: [server.tls] certfile"
        ),
        "{text}"
    );
}

const WS_ECHO: &str = "async def app(scope, receive, send):\n    if scope['type'] != 'websocket':\n        return\n    await receive()\n    await send({'type': 'websocket.accept'})\n    while True:\n        msg = await receive()\n        if msg['type'] != 'websocket.receive':\n            return\n        await send({'type': 'websocket.send', 'text': scope['scheme'] + ' ' + msg['text']})\n";

#[tokio::test(flavor = "multi_thread")]
async fn websockets_work_over_tls_as_wss() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_rustls::rustls;
    use tokio_tungstenite::tungstenite::Message;

    let app = AppDir::new(&[("app.py", WS_ECHO)]);
    make_certs(app.path(), "localhost");
    let mut args = vec!["app:app", "--interface", "asgi"];
    args.extend(tls_args());
    let dir = app.path().to_owned();
    let c = tokio::task::spawn_blocking(move || Corral::start(&dir, &args, 1))
        .await
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(app.path().join("ca.pem")).unwrap();
    let ca = rustls_pki_types::pem::PemObject::from_pem_slice(&ca).unwrap();
    roots.add(ca).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let step = async {
        let tcp = tokio::net::TcpStream::connect(&c.addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls = connector.connect(name, tcp).await.expect("TLS handshake");
        let url = format!("wss://{}/ws", c.addr);
        let (mut ws, _) = tokio_tungstenite::client_async(url, tls)
            .await
            .expect("WebSocket handshake");
        ws.send(Message::text("hello")).await.unwrap();
        let reply = ws.next().await.expect("a reply").unwrap();
        assert_eq!(reply.into_text().unwrap().as_str(), "wss hello");
    };
    tokio::time::timeout(Duration::from_secs(20), step)
        .await
        .expect("within 20 s");
}
