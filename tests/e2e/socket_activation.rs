//! systemd socket activation, through Debian's `systemd-socket-activate`:
//! corral serves on the socket it is handed instead of binding, and the
//! LISTEN_*, NOTIFY_SOCKET and WATCHDOG_* variables (set here, and used by
//! corral: it reports ready) and the fd never reach the workers, even with
//! `pass_env = ["*"]`.

use crate::common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const APP: &str = r#"
import os, json

def app(environ, start_response):
    fds = sorted(int(f) for f in os.listdir("/proc/self/fd"))
    listening = []
    for fd in fds:
        try:
            target = os.readlink("/proc/self/fd/%d" % fd)
        except OSError:
            continue
        listening.append(target)
    body = json.dumps({
        "env": sorted(k for k in os.environ if k.startswith(("LISTEN_", "NOTIFY_", "WATCHDOG_"))),
        "fds": listening,
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
"#;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn corral_serves_on_the_socket_systemd_hands_it() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // corral's own bind would be a different port: it must not be used.
    let unused = free_port();
    // pass_env = ["*"] hands workers all of corral's environment, so only
    // corral's own clearing of systemd's variables keeps them out.
    let config = format!(
        "[app]\nmodule = \"app:app\"\npass_env = [\"*\"]\n[workers]\ncount = 2\n[server]\nbind = [\"127.0.0.1:{unused}\"]\n"
    );
    let app = AppDir::new(&[("app.py", APP), ("corral.toml", &config)]);
    // systemd's variables for corral itself: they must not reach workers.
    let notify_path = app.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let notify_env = format!("NOTIFY_SOCKET={}", notify_path.display());
    let child = Command::new("systemd-socket-activate")
        .args(["-l", &addr, "-E", "CORRAL_TEST=1", "-E", &notify_env])
        .args(["-E", "WATCHDOG_USEC=10000000"])
        .arg(corral_bin())
        .args(["-c", "corral.toml", "--python", &python()])
        .arg("--socket")
        .arg(app.path().join("ctl.sock"))
        .current_dir(app.path())
        .env("STATE_DIRECTORY", app.path().join(".corral-state"))
        .env_remove("VIRTUAL_ENV")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("systemd-socket-activate (Debian package systemd)");
    let _guard = Killed(child);
    // systemd-socket-activate starts corral on the first connection; corral
    // answers it once its workers are in service (no 503 on a cold start).
    let deadline = Instant::now() + Duration::from_secs(20);
    let resp = loop {
        if let Ok(s) = std::net::TcpStream::connect(&addr) {
            drop(s);
            break request(&addr, "GET", "/", &[], b"");
        }
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(
        v["env"],
        serde_json::json!([]),
        "LISTEN_*, NOTIFY_SOCKET and WATCHDOG_* cleared before workers start: {v}"
    );
    // corral itself got them: it reports ready on that socket.
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    while !seen.iter().any(|m: &String| m.contains("READY=1")) {
        let n = notify
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no READY=1 on NOTIFY_SOCKET ({e}); got {seen:?}"));
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let sockets: Vec<&str> = v["fds"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f.as_str())
        .filter(|f| f.starts_with("socket:"))
        .collect();
    // The worker holds its own channel socket only, not the listen socket.
    assert_eq!(sockets.len(), 1, "fds leaked into the worker: {v}");
    assert!(
        std::net::TcpStream::connect(format!("127.0.0.1:{unused}")).is_err(),
        "corral bound -b anyway"
    );
}

#[test]
fn binds_given_beside_socket_activation_are_named_as_not_used() {
    // The sockets come from systemd: a -b given too is not bound, and the
    // log says so once, naming it, rather than nothing.
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let unused = format!("127.0.0.1:{}", free_port());
    let app = AppDir::new(&[("app.py", APP)]);
    let log_path = app.path().join("corral.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new("systemd-socket-activate")
        .args(["-l", &addr])
        .arg(corral_bin())
        .args(["app:app", "-b", &unused, "--python", &python()])
        .arg("--socket")
        .arg(app.path().join("ctl.sock"))
        .current_dir(app.path())
        .env_remove("VIRTUAL_ENV")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("systemd-socket-activate (Debian package systemd)");
    let _guard = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if std::net::TcpStream::connect(&addr).is_ok() {
            let resp = request(&addr, "GET", "/", &[], b"");
            assert_eq!(resp.status, 200, "{}", resp.text());
            break;
        }
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let said = format!(
        "socket activation: not binding {unused} (--bind): the sockets came from systemd, whose .socket unit (ListenStream=) sets the addresses served"
    );
    let text = log_with(&log_path, &said);
    assert_eq!(text.matches(&said).count(), 1, "{said} once in:\n{text}");
}

/// In a container (here: a Kubernetes pod's variable), a socket systemd
/// hands over is what is served: no warning that the default
/// 127.0.0.1:8000, never bound, is out of reach.
#[test]
fn a_socket_activated_corral_in_a_container_does_not_warn_of_the_default_address() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let app = AppDir::new(&[("app.py", APP)]);
    let log_path = app.path().join("corral.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new("systemd-socket-activate")
        .args(["-l", &addr, "-E", "KUBERNETES_SERVICE_HOST=10.0.0.1"])
        .arg(corral_bin())
        .args(["app:app", "--python", &python()])
        .arg("--socket")
        .arg(app.path().join("ctl.sock"))
        .current_dir(app.path())
        .env_remove("VIRTUAL_ENV")
        .env_remove("PORT")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("systemd-socket-activate (Debian package systemd)");
    let _guard = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if std::net::TcpStream::connect(&addr).is_ok() {
            assert_eq!(request(&addr, "GET", "/", &[], b"").status, 200);
            break;
        }
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = log_with(&log_path, "workers in service");
    assert!(
        text.contains(&format!("listening on http://{addr}")),
        "{text}"
    );
    assert!(!text.contains("nothing outside it can connect"), "{text}");
}

/// The log file's text once it has `needle` (or after 10 s): corral's
/// lines reach it from a writer thread of their own.
fn log_with(path: &std::path::Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        if log.contains(needle) || Instant::now() > deadline {
            return log;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Two apps on one host, each socket-activated on a Unix socket of its
/// own (`corral@shop.socket`, `corral@blog.socket`: nginx in front), each
/// with its unit's runtime folder. corral is known by the socket systemd
/// passed, not by the address it would have bound (the default
/// 127.0.0.1:8000, never bound here): the log and `/status` name the
/// socket's file, `corral status` lists it, and `corral status -b` or
/// `corral reload -b unix:PATH` reach that app and not the other.
#[test]
fn two_socket_activated_apps_are_known_by_their_own_unix_sockets() {
    use std::os::unix::fs::DirBuilderExt;
    let run = tempfile::tempdir().unwrap();
    let units = run.path().join("corral");
    let mut guards = Vec::new();
    let mut sockets = Vec::new();
    let mut apps = Vec::new();
    for name in ["shop", "blog"] {
        let runtime = units.join(name);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&runtime)
            .unwrap();
        let conf = "[app]\nmodule = \"app:app\"\n[workers]\ncount = 1\n";
        let app = AppDir::new(&[("app.py", APP), ("corral.toml", conf)]);
        let sock = run.path().join(format!("corral-{name}.sock"));
        let log = std::fs::File::create(app.path().join("corral.log")).unwrap();
        let child = Command::new("systemd-socket-activate")
            .arg("-l")
            .arg(&sock)
            .arg("-E")
            .arg(format!("RUNTIME_DIRECTORY={}", runtime.display()))
            .arg("-E")
            .arg(format!("STATE_DIRECTORY={}/state", app.path().display()))
            .arg(corral_bin())
            .args(["run", "-c", "corral.toml", "--python", &python()])
            .current_dir(app.path())
            .env_remove("VIRTUAL_ENV")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("systemd-socket-activate (Debian package systemd)");
        guards.push(Killed(child));
        // The first connection starts corral; it answers once in service.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !sock.exists() {
            assert!(Instant::now() < deadline, "no {}", sock.display());
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(get_unix(&sock).status, 200);
        sockets.push(sock);
        apps.push(app);
    }
    let client = |args: &[&str]| {
        let out = Command::new(corral_bin())
            .args(args)
            .current_dir(run.path())
            .env("XDG_RUNTIME_DIR", run.path())
            .env_remove("RUNTIME_DIRECTORY")
            .output()
            .expect("run corral");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text, out.stdout)
    };
    let (code, list, _) = client(&["status"]);
    assert_eq!(code, Some(0), "{list}");
    for (sock, app) in sockets.iter().zip(&apps) {
        let bind = format!("unix:{}", sock.display());
        assert!(list.contains(&bind), "{bind} in:\n{list}");
        let log = log_with(
            &app.path().join("corral.log"),
            &format!("listening on {bind}"),
        );
        assert!(
            log.contains(&format!("listening on {bind}")),
            "{bind} in:\n{log}"
        );
        let (code, text, stdout) = client(&["status", "--json", "-b", &bind]);
        assert_eq!(code, Some(0), "{text}");
        let v: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
        assert_eq!(v["supervisor"]["binds"], serde_json::json!([bind]), "{v}");
    }
    assert!(!list.contains("127.0.0.1:8000"), "{list}");
    // A reload by the socket nginx knows the app by: that app's alone.
    let shop = format!("unix:{}", sockets[0].display());
    let (code, text, _) = client(&["reload", "--wait", "-b", &shop]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("generation 2"), "{text}");
    // The file read again has the [server] the corral started with: no
    // word of a change that waits for a restart.
    // (The line saying so is written as the answer goes, or just after.)
    let log = log_with(&apps[0].path().join("corral.log"), "reload done");
    assert!(
        log.contains("reload done") && !log.contains("server changed"),
        "{log}"
    );
    let blog = format!("unix:{}", sockets[1].display());
    let (_, _, stdout) = client(&["status", "--json", "-b", &blog]);
    let v: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(v["generation"], 1, "{v}");
}
