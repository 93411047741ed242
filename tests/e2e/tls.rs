//! TLS, mutual TLS and HTTP/2 on the app port, with real clients: curl
//! (HTTP/2 by ALPN, h2c with prior knowledge, client certificates) against
//! certificates from a CA that each test makes with the openssl CLI; plain
//! `insecure_bind` listeners and per-bind certificate sets
//! (`[server.tls.bind."ADDR"]`) beside the TLS ones of the same corral.

use crate::common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const WSGI: &str = "def app(environ, start_response):\n    body = ' '.join(str(environ.get(k)) for k in ('wsgi.url_scheme', 'HTTPS', 'SERVER_PROTOCOL', 'SSL_CLIENT_S_DN')).encode()\n    start_response('200 OK', [('Content-Length', str(len(body)))])\n    return [body]\n";

const ASGI: &str = "async def app(scope, receive, send):\n    if scope['type'] != 'http':\n        return\n    tls = scope['extensions'].get('tls') or {}\n    body = ' '.join(str(x) for x in (scope['scheme'], scope['http_version'], tls.get('client_cert_name'), bool(tls.get('client_cert_chain')) and tls['client_cert_chain'][0].startswith('-----BEGIN CERTIFICATE-----\\n'), tls.get('tls_version'))).encode()\n    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n    await send({'type': 'http.response.body', 'body': body})\n";

/// A CA (ca.pem), a server certificate for 127.0.0.1 and 127.0.0.2 with subject
/// CN=`server_cn` (`server.pem`, `server.key`) and a client certificate
/// for O=Example, CN=alice (client.pem, client.key).
pub(crate) fn make_certs(dir: &Path, server_cn: &str) {
    let ext = dir.join("ext");
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1,IP:127.0.0.2\n").unwrap();
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
                // As a real CA's: Python 3.13's clients refuse one without.
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
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
        sign(dir, "client.csr", "client.pem", "2", "cext");
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
    sign(dir, "server.csr", "new.pem", "2", "ext");
    // Key first, then the certificate, each replaced whole.
    std::fs::rename(dir.join("new.key"), dir.join("server.key")).unwrap();
    std::fs::rename(dir.join("new.pem"), dir.join("server.pem")).unwrap();
}

/// Signs `csr` with the test's CA into `out`, valid for `days` (negative:
/// expired), with the extensions in `ext`.
fn sign(dir: &Path, csr: &str, out: &str, days: &str, ext: &str) {
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            out,
            "-days",
            days,
            "-extfile",
            ext,
        ],
    );
}

/// `corral reload --wait` on `c`'s control socket.
fn reload_wait(c: &Corral) -> std::process::Output {
    Command::new(corral_bin())
        .args(["reload", "--wait", "--socket", c.socket.to_str().unwrap()])
        .output()
        .unwrap()
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

/// A WSGI app served over HTTPS with the test's certificates, with
/// `extra` flags: its folder (the certificates are there) and corral.
fn start_https(extra: &[&str]) -> (AppDir, Corral) {
    let app = AppDir::new(&[("app.py", WSGI)]);
    make_certs(app.path(), "localhost");
    let mut args = vec!["app:app"];
    args.extend(extra);
    args.extend(tls_args());
    let c = Corral::start(app.path(), &args, 1);
    (app, c)
}

fn tls_args() -> Vec<&'static str> {
    vec!["--certfile", "server.pem", "--keyfile", "server.key"]
}

#[test]
fn https_serves_http2_by_alpn_and_http11_and_the_app_sees_https() {
    let (app, c) = start_https(&["--status-bind", "127.0.0.1:0"]);
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

/// A client whose ALPN list has neither `h2` nor `http/1.1` (`curl
/// --http1.0` offers `http/1.0` alone) is served HTTP/1.x with no protocol
/// agreed on, as gunicorn serves it, where rustls alone would refuse it with
/// alert `no_application_protocol`; after a reload it gets the new
/// certificate, and h2 and http/1.1 clients are still served as before.
#[test]
fn a_client_offering_neither_h2_nor_http11_by_alpn_is_served_http1() {
    let (app, c) = start_https(&[]);
    let url = format!("https://{}/", c.addr);
    let http10 = |app: &AppDir| {
        let (code, body, err) = curl(app.path(), &["-v", "--http1.0", "--cacert", "ca.pem", &url]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(body, "https on HTTP/1.0 None");
        assert!(err.contains("ALPN: offers http/1.0"), "{err}");
        assert!(!err.contains("ALPN: server accepted"), "{err}");
        err
    };
    let err = http10(&app);
    assert!(err.contains("subject: CN=localhost"), "{err}");
    // openssl's client, offering a protocol corral does not know.
    let out = Command::new("timeout")
        .args(["10", "openssl", "s_client", "-connect", &c.addr])
        .args(["-alpn", "spdy/3", "-CAfile", "ca.pem", "-quiet"])
        .current_dir(app.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            child.wait_with_output()
        })
        .expect("openssl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("https on HTTP/1.1 None"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Both configs of the set follow a reload.
    make_certs(app.path(), "renewed");
    let out = reload_wait(&c);
    assert!(out.status.success(), "{out:?}");
    let err = http10(&app);
    assert!(err.contains("subject: CN=renewed"), "{err}");
    let (code, body, err) = curl(app.path(), &["-v", "--http2", "--cacert", "ca.pem", &url]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(body, "https on HTTP/2 None");
    assert!(err.contains("ALPN: server accepted h2"), "{err}");
    let (code, body, err) = curl(app.path(), &["-v", "--http1.1", "--cacert", "ca.pem", &url]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(body, "https on HTTP/1.1 None");
    assert!(err.contains("ALPN: server accepted http/1.1"), "{err}");
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

/// A client certificate (bogus.pem, bogus.key) followed in bogus.pem by
/// `n` CA certificates that all name themselves CN=Inter, each with a key
/// of its own, none leading to the test's CA: webpki's path building would
/// try them in every order (the first issued the client's).
fn bogus_chain(dir: &Path, n: usize) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut chain = Vec::new();
    for i in 0..n {
        let (key, pem) = (format!("i{i}.key"), format!("i{i}.pem"));
        let mut args = vec!["req", "-x509", "-keyout", &key, "-out", &pem];
        args.extend(ec);
        args.extend(["-subj", "/CN=Inter", "-days", "2"]);
        args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
        args.extend(["-addext", "keyUsage=keyCertSign"]);
        openssl(dir, &args);
        chain.extend(std::fs::read(dir.join(pem)).unwrap());
    }
    let mut args = vec!["req", "-keyout", "bogus.key", "-out", "bogus.csr"];
    args.extend(ec);
    args.extend(["-subj", "/CN=mallory"]);
    openssl(dir, &args);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "bogus.csr",
            "-CA",
            "i0.pem",
            "-CAkey",
            "i0.key",
            "-set_serial",
            "999",
            "-days",
            "2",
            "-extfile",
            "cext",
            "-out",
            "bogus.pem",
        ],
    );
    let mut pem = std::fs::read(dir.join("bogus.pem")).unwrap();
    pem.extend(chain);
    std::fs::write(dir.join("bogus.pem"), pem).unwrap();
}

#[test]
fn a_client_chain_of_many_bogus_intermediates_is_refused_before_any_check_and_a_real_client_is_served()
 {
    let app = AppDir::new(&[("app.py", WSGI)]);
    make_certs(app.path(), "localhost");
    // 11 intermediates cost webpki the most: about 100 ms of CPU per
    // handshake before corral refused chains of more than 6 certificates.
    bogus_chain(app.path(), 11);
    for reqs in ["optional", "required"] {
        let mut args = vec!["app:app", "--status-bind", "127.0.0.1:0"];
        args.extend(tls_args());
        args.extend(["--ca-certs", "ca.pem", "--cert-reqs", reqs]);
        let c = Corral::start(app.path(), &args, 1);
        let url = format!("https://{}/", c.addr);
        let bogus = [
            "--cacert",
            "ca.pem",
            "--cert",
            "bogus.pem",
            "--key",
            "bogus.key",
        ];
        let cpu = crate::http2::cpu_time(c.pid());
        let tries = 30;
        for _ in 0..tries {
            let (code, body, _) = curl(app.path(), &[&bogus[..], &[url.as_str()]].concat());
            assert_ne!(code, 0, "{reqs}: served with a bogus chain: {body}");
        }
        let cpu = crate::http2::cpu_time(c.pid()) - cpu;
        // Counted: refused for their length, before webpki saw them.
        let metrics = c.status("/metrics").text();
        for line in [
            format!("corral_tls_long_client_chains_total {tries}\n"),
            format!("corral_tls_handshake_failures_total {tries}\n"),
        ] {
            assert!(
                metrics.contains(&line),
                "{reqs}: no {line:?} ({tries} bogus chains cost corral {cpu:?} of CPU) in:\n{metrics}"
            );
        }
        // A valid handshake costs about 1 ms; each of these cost 100 before.
        assert!(
            cpu < Duration::from_secs(1),
            "{reqs}: {tries} bogus chains cost corral {cpu:?} of CPU"
        );
        // A client with a real certificate is served, and under
        // "optional" one without any.
        let (code, body, err) = curl(
            app.path(),
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
        assert_eq!(
            (code, body.as_str()),
            (0, "https on HTTP/2 O=Example, CN=alice"),
            "{reqs}: {err}"
        );
        let (code, body, _) = curl(app.path(), &["--cacert", "ca.pem", &url]);
        assert_eq!(code == 0, reqs == "optional", "{reqs}: {body}");
    }
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
            [
                "--keyfile: ",
                "ca.key: is not the key of the certificate in ",
                "server.pem (their public keys differ)",
            ],
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

#[test]
fn a_certfile_holding_the_key_too_serves_without_a_keyfile_as_under_gunicorn() {
    // gunicorn (ssl's load_cert_chain with no keyfile) reads the key from
    // the certificate's file; so does corral, with a keyfile's checks.
    let app = AppDir::new(&[("app.py", WSGI)]);
    make_certs(app.path(), "localhost");
    let read = |name: &str| std::fs::read_to_string(app.path().join(name)).unwrap();
    std::fs::write(
        app.path().join("both.pem"),
        read("server.pem") + &read("server.key"),
    )
    .unwrap();
    let c = Corral::start(app.path(), &["app:app", "--certfile", "both.pem"], 1);
    let (code, body, err) = curl(
        app.path(),
        &["--cacert", "ca.pem", &format!("https://{}/", c.addr)],
    );
    assert_eq!(code, 0, "{err}");
    assert!(body.starts_with("https"), "{body}");
    drop(c);
    // [server.tls] certfile alone, the same.
    std::fs::write(
        app.path().join("corral.toml"),
        "[app]\nmodule = \"app:app\"\n[server.tls]\ncertfile = \"both.pem\"\n",
    )
    .unwrap();
    let c = Corral::start(app.path(), &["-c", "corral.toml"], 1);
    let (code, _, err) = curl(
        app.path(),
        &["--cacert", "ca.pem", &format!("https://{}/", c.addr)],
    );
    assert_eq!(code, 0, "{err}");
    drop(c);
    // An encrypted key there is refused as in a keyfile; a certfile with
    // no key says where the key is looked for.
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
    std::fs::write(
        app.path().join("both-encrypted.pem"),
        read("server.pem") + &read("encrypted.key"),
    )
    .unwrap();
    for (certfile, wanted) in [
        ("both-encrypted.pem", "--certfile: "),
        ("server.pem", "holds no PEM private key"),
    ] {
        let mut c = Corral::spawn(app.path(), &["app:app", "--certfile", certfile], &[]);
        let status = c.wait_exit(Duration::from_secs(20)).expect("corral exits");
        assert_eq!(status.code(), Some(2));
        let log = c.log.text();
        for w in [
            wanted,
            certfile,
            "; with no keyfile (--keyfile) the key is read from certfile, as gunicorn reads it: give keyfile, or put the key in certfile",
        ] {
            assert!(log.contains(w), "{certfile}: no {w:?} in:\n{log}");
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
    assert!(c.log.has("no PEM certificate"));
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

#[test]
fn an_expired_certificate_is_served_on_reload_with_a_warning_and_one_close_to_expiry_at_start() {
    let app = AppDir::new(&[("app.py", WSGI)]);
    make_certs(app.path(), "first");
    let certfile = app.path().join("server.pem");
    let mut args = vec!["app:app", "--status-bind", "127.0.0.1:0"];
    args.extend(tls_args());
    let c = Corral::start(app.path(), &args, 1);
    // The test's certificates are valid for 2 days: within the 7 warned of.
    let warned = |what: &str| {
        let wanted = format!(
            " WARN TLS: [server.tls] certificate {} (CN=first) {what}",
            certfile.display()
        );
        // After a reload the line can come after its answer.
        c.log.has(&wanted);
        c.log.text().lines().any(|l| {
            l.contains(&wanted) && l.contains(" (valid from 20") && l.contains(" UTC to 20")
        })
    };
    // "2 days" when made within the second, else "47 hours".
    assert!(warned("expires in "), "{}", c.log.text());
    // An expired certificate: warned of with its file and dates, and
    // served (clients that check dates refuse it, as under gunicorn).
    sign(app.path(), "server.csr", "expired.pem", "-1", "ext");
    std::fs::rename(app.path().join("expired.pem"), &certfile).unwrap();
    let out = reload_wait(&c);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(warned("expired 24 hours ago"), "{}", c.log.text());
    let tls = c.status_json()["tls"].clone();
    assert_eq!(tls["last_reload"]["ok"], true, "{tls}");
    assert!(tls["expires_in_days"].as_i64() < Some(0), "{tls}");
    let url = format!("https://{}/", c.addr);
    let (code, _, err) = curl(app.path(), &["--cacert", "ca.pem", &url]);
    assert_ne!(code, 0, "an expired certificate verified");
    assert!(err.contains("expired"), "{err}");
    let (code, body, err) = curl(app.path(), &["-k", &url]);
    assert_eq!((code, body.as_str()), (0, "https on HTTP/2 None"), "{err}");
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

/// Every app listener corral logged, in order: ("https", "127.0.0.1:PORT").
fn listening(c: &Corral) -> Vec<(String, String)> {
    c.log
        .text()
        .lines()
        .filter_map(|l| {
            let rest = l.split("listening on ").nth(1)?;
            let (scheme, addr) = rest.split_once("://")?;
            Some((
                scheme.to_owned(),
                addr.split_whitespace().next()?.to_owned(),
            ))
        })
        .collect()
}

/// `corral status` of `c`, as printed.
fn corral_status(c: &Corral) -> String {
    let out = Command::new(corral_bin())
        .args(["status", "--socket", c.socket.to_str().unwrap()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn an_insecure_bind_serves_plain_http_beside_the_tls_bind_and_the_app_sees_which() {
    for (interface, source, tls_answer, plain_answer, h2c_answer) in [
        (
            "wsgi",
            WSGI,
            "https on HTTP/2 None",
            "http None HTTP/1.1 None",
            "http None HTTP/2 None",
        ),
        (
            "asgi",
            ASGI,
            "https 2 None False 772",
            "http 1.1 None False None",
            "http 2 None False None",
        ),
    ] {
        let app = AppDir::new(&[("app.py", source)]);
        make_certs(app.path(), "localhost");
        let mut args = vec!["app:app", "--interface", interface, "--status-bind"];
        args.extend(["127.0.0.1:0", "-b", "127.0.0.1:0"]);
        args.extend(["--insecure-bind", "127.0.0.2:0"]);
        args.extend(tls_args());
        let c = Corral::start(app.path(), &args, 1);
        let binds = listening(&c);
        let [(tls_scheme, tls_addr), (plain_scheme, plain_addr)] = &binds[..] else {
            panic!("two listeners: {binds:?}\n{}", c.log.text())
        };
        assert_eq!(
            (tls_scheme.as_str(), plain_scheme.as_str()),
            ("https", "http")
        );
        assert!(plain_addr.starts_with("127.0.0.2:"), "{plain_addr}");
        assert!(
            c.log.text().contains(&format!(
                "listening on http://{plain_addr} (plain HTTP: insecure_bind)"
            )),
            "{}",
            c.log.text()
        );
        let tls_url = format!("https://{tls_addr}/");
        let plain_url = format!("http://{plain_addr}/");
        let (code, body, err) = curl(app.path(), &["--cacert", "ca.pem", &tls_url]);
        assert_eq!((code, body.as_str()), (0, tls_answer), "{err}");
        let (code, body, err) = curl(app.path(), &[&plain_url]);
        assert_eq!((code, body.as_str()), (0, plain_answer), "{err}");
        let (code, body, err) = curl(app.path(), &["--http2-prior-knowledge", &plain_url]);
        assert_eq!((code, body.as_str()), (0, h2c_answer), "{err}");
        // Neither bind speaks the other's protocol.
        let (code, _, _) = curl(app.path(), &[&format!("http://{tls_addr}/")]);
        assert_ne!(code, 0);
        let (code, _, _) = curl(
            app.path(),
            &["--cacert", "ca.pem", &format!("https://{plain_addr}/")],
        );
        assert_ne!(code, 0);
        // /status and `corral status` say which bind is which.
        let tls = c.status_json()["tls"].clone();
        assert_eq!(
            tls["binds"][0]["address"],
            tls_url.trim_end_matches('/'),
            "{tls}"
        );
        assert_eq!(tls["binds"][0]["tls"], true, "{tls}");
        assert_eq!(tls["binds"][0]["certificate"], "default", "{tls}");
        assert_eq!(
            tls["binds"][1]["address"],
            plain_url.trim_end_matches('/'),
            "{tls}"
        );
        assert_eq!(tls["binds"][1]["tls"], false, "{tls}");
        let status = corral_status(&c);
        for line in [
            format!("  https://{tls_addr}: TLS, [server.tls]\n"),
            format!("  http://{plain_addr}: plain HTTP (insecure_bind)\n"),
        ] {
            assert!(status.contains(&line), "no {line:?} in:\n{status}");
        }
    }
}

/// A corral.toml binding 127.0.0.1:0 and 127.0.0.2:0 with TLS, with
/// `extra` after its `[server.tls]` (server.pem, server.key).
fn two_tls_binds(dir: &Path, extra: &str) {
    let text = format!(
        "[app]\nmodule = \"app:app\"\n[server]\nbind = [\"127.0.0.1:0\", \"127.0.0.2:0\"]\n\
         [health]\nstatus_bind = \"127.0.0.1:0\"\n\
         [server.tls]\ncertfile = \"server.pem\"\nkeyfile = \"server.key\"\n{extra}"
    );
    std::fs::write(dir.join("corral.toml"), text).unwrap();
}

#[test]
fn a_per_bind_table_requires_client_certificates_on_one_bind_while_the_other_serves_without() {
    let app = AppDir::new(&[("app.py", WSGI)]);
    make_certs(app.path(), "localhost");
    two_tls_binds(
        app.path(),
        "[server.tls.bind.\"127.0.0.2:0\"]\nca_certs = \"ca.pem\"\ncert_reqs = \"required\"\n",
    );
    let c = Corral::start(app.path(), &["-c", "corral.toml"], 1);
    let binds = listening(&c);
    let [(_, public), (_, internal)] = &binds[..] else {
        panic!("two listeners: {binds:?}")
    };
    assert!(internal.starts_with("127.0.0.2:"), "{internal}");
    // The public bind serves a client without a certificate ...
    let (code, body, err) = curl(
        app.path(),
        &["--cacert", "ca.pem", &format!("https://{public}/")],
    );
    assert_eq!((code, body.as_str()), (0, "https on HTTP/2 None"), "{err}");
    // ... the internal one refuses it, and names the one with.
    assert_eq!(
        mutual_tls_answer(app.path(), internal),
        "https on HTTP/2 O=Example, CN=alice"
    );
    let tls = c.status_json()["tls"].clone();
    assert_eq!(tls["binds"][1]["certificate"], "127.0.0.2:0", "{tls}");
    assert_eq!(tls["certificates"][1]["cert_reqs"], "required", "{tls}");
    assert_eq!(tls["cert_reqs"], "none", "{tls}");
}

#[test]
fn a_bad_certificate_for_one_bind_on_reload_keeps_every_old_one_serving() {
    let app = AppDir::new(&[("app.py", WSGI)]);
    make_certs(app.path(), "internal-one");
    for ext in ["pem", "key"] {
        std::fs::rename(
            app.path().join(format!("server.{ext}")),
            app.path().join(format!("internal.{ext}")),
        )
        .unwrap();
    }
    make_certs(app.path(), "first");
    two_tls_binds(
        app.path(),
        "[server.tls.bind.\"127.0.0.2:0\"]\ncertfile = \"internal.pem\"\nkeyfile = \"internal.key\"\n",
    );
    let c = Corral::start(app.path(), &["-c", "corral.toml"], 1);
    let binds = listening(&c);
    let [(_, public), (_, internal)] = &binds[..] else {
        panic!("two listeners: {binds:?}")
    };
    assert_eq!(served_subject(app.path(), public), "CN=first");
    assert_eq!(served_subject(app.path(), internal), "CN=internal-one");
    // /status: each set's certificate and expiry (2 days, so 1 full day).
    let tls = c.status_json()["tls"].clone();
    let sets = tls["certificates"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = sets.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["default", "127.0.0.2:0"], "{tls}");
    assert_eq!(sets[0]["subject"], "CN=first", "{tls}");
    assert_eq!(sets[1]["subject"], "CN=internal-one", "{tls}");
    assert_eq!(sets[1]["expires_in_days"], 1, "{tls}");
    // /metrics: one expiry series per set, labelled by its bind.
    let metrics = c.status("/metrics").text();
    for (bind, set) in [("default", &sets[0]), ("127.0.0.2:0", &sets[1])] {
        let series = format!(
            "corral_tls_certificate_expiry_timestamp_seconds{{bind=\"{bind}\"}} {}\n",
            set["not_after"]
        );
        assert!(metrics.contains(&series), "no {series:?} in:\n{metrics}");
    }
    // A good new default certificate and a bad internal one: neither is
    // taken, both old ones serve.
    make_certs(app.path(), "second");
    std::fs::write(app.path().join("internal.pem"), "garbage\n").unwrap();
    let out = reload_wait(&c);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("[server.tls.bind.\"127.0.0.2:0\"] certfile")
            && text.contains("the certificate in force stays"),
        "{text}"
    );
    assert_eq!(served_subject(app.path(), public), "CN=first");
    assert_eq!(served_subject(app.path(), internal), "CN=internal-one");
    let tls = c.status_json()["tls"].clone();
    assert_eq!(tls["last_reload"]["ok"], false, "{tls}");
    assert_eq!(tls["certificates"][0]["subject"], "CN=first", "{tls}");
    assert_eq!(
        tls["certificates"][1]["subject"], "CN=internal-one",
        "{tls}"
    );
    let status = corral_status(&c);
    for line in [
        "tls: CN=first, expires in 1 days; last reload FAILED: [server.tls.bind.\"127.0.0.2:0\"] certfile",
        "tls [server.tls.bind.\"127.0.0.2:0\"]: CN=internal-one, expires in 1 days\n",
        &format!("  https://{internal}: TLS, [server.tls.bind.\"127.0.0.2:0\"]\n"),
    ] {
        assert!(status.contains(line), "no {line:?} in:\n{status}");
    }
    // Fixed, the next reload takes both new certificates.
    make_certs(app.path(), "internal-two");
    for ext in ["pem", "key"] {
        std::fs::rename(
            app.path().join(format!("server.{ext}")),
            app.path().join(format!("internal.{ext}")),
        )
        .unwrap();
    }
    make_certs(app.path(), "third");
    let out = reload_wait(&c);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(served_subject(app.path(), public), "CN=third");
    assert_eq!(served_subject(app.path(), internal), "CN=internal-two");
}

#[test]
fn insecure_and_per_bind_config_errors_say_where_and_how() {
    let app = AppDir::new(&[("app.py", WSGI)]);
    make_certs(app.path(), "localhost");
    let tls = "[server.tls]\ncertfile = \"server.pem\"\nkeyfile = \"server.key\"\n";
    for (text, wanted) in [
        (
            format!(
                "[app]\nmodule = \"app:app\"\n[server]\nbind = [\"127.0.0.1:8443\"]\ninsecure_bind = [\"127.0.0.1:8443\"]\n{tls}"
            ),
            "corral.toml:5: server.insecure_bind: 127.0.0.1:8443 is also a server.bind address (at corral.toml:4 (key server.bind)): an address serves either TLS (bind) or plain HTTP (insecure_bind); remove it from one of the two lists",
        ),
        (
            format!(
                "[app]\nmodule = \"app:app\"\n[server]\nbind = [\"127.0.0.1:8443\"]\n{tls}[server.tls.bind.\"127.0.0.1:9443\"]\ncert_reqs = \"required\"\n"
            ),
            "corral.toml:8: server.tls.bind.\"127.0.0.1:9443\": 127.0.0.1:9443 is not a server.bind address (those are \"127.0.0.1:8443\"): name one of them, written as in bind, or remove this table",
        ),
    ] {
        std::fs::write(app.path().join("corral.toml"), text).unwrap();
        let mut c = Corral::spawn(app.path(), &["-c", "corral.toml"], &[]);
        let status = c.wait_exit(Duration::from_secs(20)).expect("corral exits");
        assert!(!status.success());
        let log = c.log.text();
        assert!(log.contains(wanted), "no {wanted:?} in:\n{log}");
    }
}

/// A ClientHello whose SNI is no DNS name (here 4,000 '_') logs nothing:
/// rustls warned with the whole name, once per handshake, so any client
/// could fill the log (65 MB from 1,000 hellos in half a second). The
/// failed handshake is counted instead.
#[test]
fn an_invalid_sni_name_does_not_reach_the_log() {
    use std::io::{Read, Write};
    let (_app, c) = start_https(&["--status-bind", "127.0.0.1:0"]);
    let name = vec![b'_'; 4000];
    let u16b = |n: usize| (n as u16).to_be_bytes();
    let mut sni = Vec::new();
    sni.extend(u16b(0));
    sni.extend(u16b(name.len() + 5));
    sni.extend(u16b(name.len() + 3));
    sni.push(0);
    sni.extend(u16b(name.len()));
    sni.extend(&name);
    let mut body = vec![3, 3];
    body.extend([7u8; 32]);
    body.push(0);
    body.extend(u16b(4));
    body.extend([0x13, 0x01, 0xc0, 0x2f, 1, 0]);
    body.extend(u16b(sni.len()));
    body.extend(&sni);
    let mut hello = vec![1];
    hello.extend(&(body.len() as u32).to_be_bytes()[1..]);
    hello.extend(&body);
    let mut record = vec![0x16, 3, 1];
    record.extend(u16b(hello.len()));
    record.extend(&hello);
    for _ in 0..5 {
        let mut s = connect(&c.addr);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&record).unwrap();
        let _ = s.read(&mut [0u8; 100]);
    }
    let failures = "corral_tls_handshake_failures_total 5";
    c.wait_until("the handshakes counted", || {
        c.status("/metrics").text().contains(failures)
    });
    assert!(
        !c.log.text().contains("____"),
        "the name reached the log:\n{}",
        c.log.text()
    );
}

/// A TLS client that picks `h2` by ALPN and never sends the HTTP/2
/// preface is dropped after `keepalive` and `send_timeout`, as an idle
/// plain one is. Before, corral waited for the preface for good.
#[test]
fn an_h2_client_that_never_sends_its_preface_is_dropped() {
    // A client, not a proxy in front (which has 75 s).
    let (app, c) = start_https(&[
        "--keepalive",
        "1",
        "--send-timeout",
        "1s",
        "--forwarded-allow-ips",
        "192.0.2.1",
    ]);
    let port = c.addr.rsplit(':').next().unwrap();
    let script = r#"
import socket, ssl, sys, time
ctx = ssl.create_default_context(cafile=sys.argv[2])
ctx.set_alpn_protocols(["h2"])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1]))), server_hostname="localhost")
assert s.selected_alpn_protocol() == "h2", s.selected_alpn_protocol()
s.settimeout(10)
t = time.monotonic()
try:
    while s.recv(4096):
        pass
    print("closed", round(time.monotonic() - t, 1))
except (TimeoutError, socket.timeout):
    print("open", round(time.monotonic() - t, 1))
except OSError as e:
    print("closed", round(time.monotonic() - t, 1), e)
"#;
    let out = Command::new("timeout")
        .args(["20", &python(), "-c", script, port, "ca.pem"])
        .current_dir(app.path())
        .output()
        .expect("python runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("closed"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A WSGI app that answers `/big` with 2 MiB in 64 KiB pieces.
const BIG: &str = "def app(environ, start_response):\n    size = 2 << 20\n    start_response('200 OK', [('Content-Length', str(size))])\n    return (b'x' * 65536 for _ in range(size // 65536))\n";

/// Python's h2 client: CONNS connections over TLS, each with two 2 MiB
/// downloads, every DATA frame acknowledged as it is read (so the client
/// sends WINDOW_UPDATEs up to the end). Prints `started` once every
/// stream has its first bytes, then one line per stream: `ok`, or how it
/// ended. GOAWAY frames are taken out before h2 sees them: the package
/// closes its whole connection on one, where RFC 9113 has the streams
/// below its last stream id answered as usual.
const DOWNLOADS: &str = r#"
import socket, ssl, sys, threading, time
import h2.config, h2.connection, h2.events
port, conns, ca = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["h2"])
size, lock, results, first = 2 << 20, threading.Lock(), [], threading.Semaphore(0)

def no_goaway(buf):
    out = bytearray()
    while len(buf) >= 9:
        end = 9 + int.from_bytes(buf[:3], "big")
        if len(buf) < end:
            break
        if buf[3] != 7:
            out += buf[:end]
        del buf[:end]
    return bytes(out)

def client():
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=20),
                           server_hostname="localhost")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    got = {}
    for _ in range(2):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "GET"), (":scheme", "https"),
                                (":authority", "localhost"), (":path", "/big")], end_stream=True)
        got[sid] = 0
    sock.sendall(conn.data_to_send())
    buf, done = bytearray(), {}
    try:
        while len(done) < len(got):
            data = sock.recv(65536)
            if not data:
                break
            buf += data
            for ev in conn.receive_data(no_goaway(buf)):
                if isinstance(ev, h2.events.DataReceived):
                    if got[ev.stream_id] == 0:
                        first.release()
                    got[ev.stream_id] += len(ev.data)
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    done[ev.stream_id] = "ok" if got[ev.stream_id] == size else "short"
                elif isinstance(ev, h2.events.StreamReset):
                    done[ev.stream_id] = "reset"
            sock.sendall(conn.data_to_send())
            # A client busy with what it read: bytes wait in its socket.
            time.sleep(0.002)
        end = "EOF"
    except OSError as e:
        end = type(e).__name__
    with lock:
        for sid, n in got.items():
            results.append(done.get(sid) or "cut by %s after %d of %d bytes" % (end, n, size))

threads = [threading.Thread(target=client) for _ in range(conns)]
for t in threads:
    t.start()
for _ in range(2 * conns):
    first.acquire(timeout=20)
print("started", flush=True)
for t in threads:
    t.join(40)
for r in results:
    print(r)
"#;

/// A graceful stop lets HTTP/2 downloads in flight end whole. The client
/// acknowledges the last DATA frames with WINDOW_UPDATEs after corral has
/// sent them; a socket closed with those still unread sends RST, and the
/// client's kernel then drops the end of the response it had received
/// but not yet read (the stream ends short, "EOF occurred in violation
/// of protocol"). corral reads and drops them until the client closes.
#[test]
fn a_graceful_stop_lets_http2_downloads_in_flight_end_whole_over_tls() {
    use std::io::BufRead;
    let app = AppDir::new(&[("app.py", BIG)]);
    make_certs(app.path(), "localhost");
    let mut args = vec!["app:app", "-w", "2", "--threads", "4"];
    args.extend(tls_args());
    let mut c = Corral::start(app.path(), &args, 2);
    let port = c.addr.rsplit(':').next().unwrap().to_string();
    let ca = app.path().join("ca.pem");
    let mut client = Command::new("timeout")
        .arg("60")
        .arg(python())
        .args(["-c", DOWNLOADS, &port, "6", ca.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python");
    let mut lines = std::io::BufReader::new(client.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    c.signal(libc::SIGTERM);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let out = client.wait_with_output().unwrap();
    assert_eq!(first, "started", "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        rest.len(),
        12,
        "{rest:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cut: Vec<&String> = rest.iter().filter(|r| *r != "ok").collect();
    assert!(cut.is_empty(), "{cut:?}\n{}", c.log.text());
    let status = c.wait_exit(Duration::from_secs(30)).expect("corral exits");
    assert!(status.success());
}

/// A bad certificate at a `corral reload` without `--wait` fails it (exit
/// 1, the certificate in force stays) and the code reload goes on; the
/// answer said "reload FAILED" and no more while a generation started.
/// One asked while another generation was still starting was lost: the
/// code it came for never served. Both now say what became of the code
/// reload, and the queued one starts.
#[test]
fn a_bad_certificate_at_a_reload_says_what_became_of_the_code_reload() {
    const SLOW: &str = "import os, time\nif os.path.exists('slow'):\n    time.sleep(3)\nVERSION = open('version').read()\ndef app(environ, start_response):\n    start_response('200 OK', [('Content-Length', str(len(VERSION)))])\n    return [VERSION.encode()]\n";
    let app = AppDir::new(&[("app.py", SLOW), ("version", "v1")]);
    make_certs(app.path(), "localhost");
    let mut args = vec!["app:app"];
    args.extend(tls_args());
    let c = Corral::start(app.path(), &args, 1);
    let reload = || {
        let out = Command::new(corral_bin())
            .args(["reload", "--socket", c.socket.to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let served = || {
        let (code, body, err) = curl(
            app.path(),
            &["--cacert", "ca.pem", &format!("https://{}/", c.addr)],
        );
        assert_eq!(code, 0, "{err}");
        body
    };
    std::fs::write(app.path().join("server.pem"), "garbage\n").unwrap();
    std::fs::write(app.path().join("version"), "v2").unwrap();
    let (code, text) = reload();
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("the certificate in force stays; the code reload goes on: generation 2 is starting beside generation 1"),
        "{text}"
    );
    assert!(
        c.log
            .wait_for("generation 2 is in service", Duration::from_secs(30))
            .is_some(),
        "{}",
        c.log.text()
    );
    assert_eq!(served(), "v2");
    // A generation that takes 3 s to start, then a reload beside it.
    std::fs::write(app.path().join("slow"), "").unwrap();
    let (code, text) = reload();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("generation 3 is starting"), "{text}");
    std::fs::write(app.path().join("version"), "v4").unwrap();
    let (code, text) = reload();
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("the code reload is queued: generation 3 is still starting"),
        "{text}"
    );
    assert!(
        c.log
            .wait_for("generation 4 is in service", Duration::from_secs(30))
            .is_some(),
        "{}",
        c.log.text()
    );
    assert_eq!(served(), "v4");
}
