//! `corral status`: asks a running corral's status server for `/status` and
//! prints it as a table (or the JSON with `--json`). With several instances
//! on the host and none named, a line for each (with `--json`, an array of
//! `{"instance", "socket", "status"}`, `"error"` in place of `"status"` for
//! one that did not answer).
//!
//! The exit code says what a health check wants to know, as `systemctl
//! status` does: 0 when corral answered and is ready (`/health/ready`'s
//! 200), [`NOT_READY`] when it answered but is not (its workers are still
//! booting or fail to, or it is stopping), 1 when it could not be asked.
//! So a Dockerfile's `HEALTHCHECK CMD corral status` marks a container
//! whose app cannot import unhealthy. With several instances listed, the
//! code is 0 only when every one is ready.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::Value;

use crate::cli::StatusArgs;
use crate::config::BindAddr;
use crate::config::Overrides;
use crate::worker::output::{printable, printable_lines};

/// The string `v` holds (else `missing`) with its control characters
/// escaped: what the status server sends comes from the workers (a boot
/// traceback, a revision), the app or whatever answers at that address,
/// and must not drive the operator's terminal.
fn text<'a>(v: &'a Value, missing: &'a str) -> std::borrow::Cow<'a, str> {
    printable(v.as_str().unwrap_or(missing))
}

/// The exit code of a corral that answered but is not ready (`systemctl
/// status`'s for a unit that is not active).
pub const NOT_READY: u8 = 3;

/// The exit code for one instance's `/status`.
fn code(v: &Value) -> u8 {
    if v["ready"] == true { 0 } else { NOT_READY }
}

pub fn run(args: &StatusArgs) -> u8 {
    let c = &args.control;
    if c.config.is_none()
        && c.socket.is_none()
        && c.app.is_none()
        && c.bind.is_empty()
        && args.status_bind.is_none()
        && !std::path::Path::new("corral.toml").exists()
        && let (_, found) = crate::config::running_sockets()
        && found.len() > 1
    {
        let all: Vec<Value> = found.iter().map(|s| instance_json(s)).collect();
        if args.json {
            let all = Value::Array(all.clone());
            println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
        } else {
            print!("{}", list(&found, &all));
        }
        return all
            .iter()
            .map(|one| match one.get("status") {
                Some(v) => code(v),
                None => 1,
            })
            .max()
            .unwrap_or(0);
    }
    match fetch(args) {
        Ok(v) if args.json => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            code(&v)
        }
        Ok(v) => {
            print!("{}", render(&v));
            code(&v)
        }
        Err(e) => {
            eprintln!("error: {}", printable_lines(&e));
            1
        }
    }
}

/// The status server's address, and its token when the config file names
/// one (`$CORRAL_STATUS_TOKEN` wins, as for `corral run`).
fn address(args: &StatusArgs) -> Result<(BindAddr, Option<String>), String> {
    let env_token = std::env::var(crate::config::STATUS_TOKEN_ENV).ok();
    if let Some(a) = &args.status_bind {
        return Ok((a.clone(), env_token));
    }
    let run = Overrides {
        config: args.control.config.clone(),
        ..Overrides::default()
    };
    // The app may be missing from the file (it can come from flags at run
    // time); only the status address matters here.
    let cfg = crate::config::load(
        &Overrides {
            app: Some("unused:app".into()),
            ..run
        },
        None,
    )
    .map_err(|e| e.to_string())?;
    let source = cfg
        .source
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "no config file".into());
    let token = env_token.or(cfg.health.status_token.map(|t| t.expose().to_owned()));
    cfg.health.status_bind.map(|b| (b.addr, token)).ok_or_else(|| {
        format!(
            "{source} has no [health] status_bind: start corral with one, or pass --status-bind ADDR"
        )
    })
}

/// Whether the server at the other end of `s` (at `addr`), when it runs
/// on this host, is this user's or root's: the owner of its socket, in
/// the kernel's table of TCP sockets (`/proc/net/tcp`, `tcp6`), as
/// [`crate::control::check_peer`] checks a Unix socket's. A server on
/// another host is not in the table, and is not checked.
fn check_tcp_peer(s: &std::net::TcpStream, addr: &BindAddr) -> Result<(), String> {
    let (Ok(mine), Ok(theirs)) = (s.local_addr(), s.peer_addr()) else {
        return Err(format!("cannot tell who serves {addr}"));
    };
    let Some(uid) = tcp_socket_owner(theirs, mine) else {
        // A server on this host is in the table, unless the table cannot
        // be read (a /proc without it: systemd's ProcSubset=pid, a
        // sandbox): then who serves is unknown, and the token stays.
        if on_this_host(theirs, mine) {
            return Err(format!(
                "refusing to send the status token to {addr}: it is served on this host, and \
                 the kernel's table of TCP sockets (/proc/net/tcp, tcp6) does not say by whom \
                 (is /proc mounted, with its net folder?); ask through the control socket \
                 (-c FILE or --socket)"
            ));
        }
        return Ok(());
    };
    let me = nix::unistd::geteuid().as_raw();
    if uid == me || uid == 0 {
        return Ok(());
    }
    Err(format!(
        "refusing to send the status token to {addr}: it is served by uid {uid}, not by you \
         (uid {me}) or root, and any user may serve a port while corral is down; run \
         `corral status` as uid {uid}, or ask through the control socket (-c FILE or --socket)"
    ))
}

/// Whether the server at `remote` (reached from `local`) is on this host:
/// a loopback address, or the very address this end has (a connection to
/// one of this host's own addresses leaves from it).
fn on_this_host(remote: std::net::SocketAddr, local: std::net::SocketAddr) -> bool {
    let ip = remote.ip().to_canonical();
    ip.is_loopback() || ip.is_unspecified() || ip == local.ip().to_canonical()
}

/// The owner of this host's TCP socket whose local end is `local` and
/// whose other end is `remote`, if there is one.
fn tcp_socket_owner(local: std::net::SocketAddr, remote: std::net::SocketAddr) -> Option<u32> {
    let canonical = |a: std::net::SocketAddr| (a.ip().to_canonical(), a.port());
    let (local, remote) = (canonical(local), canonical(remote));
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .find_map(|table| {
            let text = std::fs::read_to_string(table).ok()?;
            text.lines().skip(1).find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let here = proc_net_addr(fields.get(1)?)?;
                let there = proc_net_addr(fields.get(2)?)?;
                (here == local && there == remote)
                    .then(|| fields.get(7)?.parse().ok())
                    .flatten()
            })
        })
}

/// An address of `/proc/net/tcp` (`0100007F:1F90`) or `tcp6`: the address
/// as the kernel holds it, printed 32 bits at a time in this machine's
/// byte order, then the port.
fn proc_net_addr(text: &str) -> Option<(std::net::IpAddr, u16)> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for word in ip.as_bytes().chunks(8) {
        let word = u32::from_str_radix(std::str::from_utf8(word).ok()?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => std::net::IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some((ip.to_canonical(), port))
}

fn fetch(args: &StatusArgs) -> Result<Value, String> {
    // The control socket first (it is always there); the status server when
    // asked for by address.
    let mut no_socket = None;
    if args.status_bind.is_none() {
        let c = &args.control;
        let socket = crate::control::socket_for(c)?;
        if socket.exists() || c.socket.is_some() || c.app.is_some() || !c.bind.is_empty() {
            return crate::control::status(&socket);
        }
        no_socket = Some(socket);
    }
    // Without a control socket, the config file's status server: a file
    // that does not name one (or does not load here, as another user:
    // its `[workers] user` is for `corral run`) means no corral runs.
    let (addr, token) = match (address(args), no_socket) {
        (Ok(found), _) => found,
        (Err(e), Some(socket)) => {
            return Err(format!(
                "no corral answers at {} (is it running with this config?), and the status server could not be asked: {e}",
                socket.display()
            ));
        }
        (Err(e), None) => return Err(e),
    };
    let has_token = token.is_some();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!("GET /status HTTP/1.0\r\nHost: localhost\r\n{auth}\r\n");
    let request = request.as_bytes();
    let timeout = Some(Duration::from_secs(5));
    let mut raw = Vec::new();
    let unreachable = |e: std::io::Error| {
        format!("cannot reach the status server at {addr}: {e} (is corral running?)")
    };
    match &addr {
        BindAddr::Tcp(a) => {
            let mut s = std::net::TcpStream::connect_timeout(a, Duration::from_secs(5))
                .map_err(unreachable)?;
            // A port on this host is anyone's while corral is down: the
            // token goes only to one this user or root serves.
            if has_token {
                check_tcp_peer(&s, &addr)?;
            }
            s.set_read_timeout(timeout).ok();
            s.write_all(request).map_err(unreachable)?;
            s.read_to_end(&mut raw).map_err(unreachable)?;
        }
        BindAddr::Unix(p) => {
            let mut s = std::os::unix::net::UnixStream::connect(p).map_err(unreachable)?;
            // The token goes only where the control socket's requests go:
            // to a server of this user's or root's, so that another user
            // who may write to the socket's folder cannot put a socket of
            // their own there and be sent it.
            if has_token {
                crate::control::check_peer(&s, p)?;
            }
            s.set_read_timeout(timeout).ok();
            s.write_all(request).map_err(unreachable)?;
            s.read_to_end(&mut raw).map_err(unreachable)?;
        }
    }
    let text = String::from_utf8_lossy(&raw);
    if text.starts_with("HTTP/1.1 401") || text.starts_with("HTTP/1.0 401") {
        return Err(format!(
            "the status server at {addr} wants its token: set {} or [health] \
             status_token_file in the config file",
            crate::config::STATUS_TOKEN_ENV
        ));
    }
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .ok_or("the status server sent no HTTP response")?;
    serde_json::from_str(body).map_err(|e| format!("the status server sent no JSON: {e}"))
}

/// One line per running instance (`corral status` on a host with
/// several and no hint which one is meant).
/// The instance whose control socket is `socket` (its folder's name), for
/// `--json` with several: its `/status` object, or the error asking it.
fn instance_json(socket: &std::path::Path) -> Value {
    let mut out = serde_json::json!({
        "instance": instance_name(socket),
        "socket": socket.display().to_string(),
    });
    match crate::control::status(socket) {
        Ok(v) => out["status"] = v,
        Err(e) => out["error"] = Value::String(e),
    }
    out
}

/// An instance's name: its control socket's folder's.
fn instance_name(socket: &std::path::Path) -> String {
    socket
        .parent()
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The table of instances: each one's `socket` beside its answer as
/// [`instance_json`] made it (asked once, for the table and the code).
fn list(sockets: &[std::path::PathBuf], answers: &[Value]) -> String {
    let mut out = format!(
        "{} corral instances; `corral status APP`, `--bind ADDR`, `-c FILE` or `--socket PATH` shows one:\n\n\
         {:<24} {:<8} {:<6} {:<24} {:<22} {}\n",
        sockets.len(),
        "INSTANCE",
        "PID",
        "READY",
        "APP",
        "BIND",
        "SOCKET"
    );
    for (socket, answer) in sockets.iter().zip(answers) {
        let name = instance_name(socket);
        let asked = match (answer.get("status"), answer.get("error")) {
            (Some(v), _) => Ok(v),
            (None, e) => Err(e.and_then(Value::as_str).unwrap_or("no answer")),
        };
        let (pid, ready, app, bind) = match asked {
            Ok(v) => (
                v["supervisor"]["pid"].to_string(),
                if v["ready"] == true { "yes" } else { "NO" }.to_string(),
                text(&v["supervisor"]["app"], "?").into_owned(),
                v["supervisor"]["binds"]
                    .as_array()
                    .map(|a| {
                        let binds: Vec<_> = a.iter().filter_map(Value::as_str).collect();
                        printable(&binds.join(",")).into_owned()
                    })
                    .unwrap_or_default(),
            ),
            Err(e) => (
                "-".into(),
                "?".into(),
                format!("({})", printable(e)),
                String::new(),
            ),
        };
        out.push_str(&format!(
            "{name:<24} {pid:<8} {ready:<6} {app:<24} {bind:<22} {}\n",
            socket.display()
        ));
    }
    out
}

fn ago(unix: f64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(unix);
    duration((now - unix).max(0.0))
}

fn duration(secs: f64) -> String {
    let s = secs as u64;
    match s {
        0..=59 => format!("{secs:.0}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

/// One row of the table: the worker `w` (of `slot`, whose restarts the
/// row gives when it is the slot's own).
fn worker_row(slot_name: &str, w: &Value, slot: &Value, last_exit: &str) -> String {
    format!(
        "{:<5} {:<8} {:>4} {:<11} {:>7} {:>8} {:>9} {:>9} {:>9} {:>8}  {}\n",
        slot_name,
        w["pid"].to_string(),
        w["generation"].to_string(),
        text(&w["state"], "?"),
        w["since"].as_f64().map(ago).unwrap_or_default(),
        w["boot_ms"]
            .as_f64()
            .map(|ms| format!("{ms:.0}ms"))
            .unwrap_or_else(|| "-".into()),
        w["requests"].to_string(),
        format!("{}/{}", w["in_flight"], w["capacity"]),
        w["rss_bytes"]
            .as_u64()
            .map(|b| format!("{:.1}MiB", b as f64 / 1048576.0))
            .unwrap_or_else(|| "-".into()),
        slot["restarts"]
            .as_u64()
            .map_or("-".into(), |r| r.to_string()),
        last_exit,
    )
}

/// The human-readable form of `/status`.
pub fn render(v: &Value) -> String {
    let mut out = String::new();
    let sup = &v["supervisor"];
    out.push_str(&format!(
        "corral {} (pid {}), up {}, app {}{}\n",
        text(&sup["version"], "?"),
        sup["pid"],
        duration(sup["uptime_seconds"].as_f64().unwrap_or(0.0)),
        text(&sup["app"], "?"),
        sup["config"]
            .as_str()
            .map(|c| format!(", config {}", printable(c)))
            .unwrap_or_default(),
    ));
    if let Some(tls) = v["tls"].as_object() {
        out.push_str(&format!(
            "tls: {}, expires in {} days",
            tls.get("subject").map_or("?".into(), |s| text(s, "?")),
            tls.get("expires_in_days")
                .map(Value::to_string)
                .unwrap_or_default(),
        ));
        if let Some(err) = tls
            .get("last_reload")
            .and_then(|r| r.get("error"))
            .and_then(Value::as_str)
        {
            out.push_str(&format!("; last reload FAILED: {}", printable(err)));
        }
        out.push('\n');
        tls_sets(tls, &mut out);
    }
    out.push_str(&format!(
        "ready: {} ({})\n",
        if v["ready"].as_bool() == Some(true) {
            "yes"
        } else {
            "NO"
        },
        text(&v["readiness"]["reason"], "")
    ));
    // How the last deploy ended: a failed or rolled back one is not seen
    // in a table of healthy workers.
    if let Some(last) = v["last_reload"].as_str() {
        out.push_str(&format!("last reload: {}\n", printable(last)));
    }
    out.push('\n');
    if let Some(generation) = v["reloading"].as_u64() {
        out.push_str(&format!(
            "reload: generation {generation} is starting beside generation {}\n",
            v["generation"]
        ));
    }
    if let Some(canary) = v["canary"].as_object() {
        let side = |s: &Value| {
            format!(
                "{} requests, {} 5xx, p99 {:.1} ms",
                s["requests"],
                s["errors_5xx"],
                s["p99_ms"].as_f64().unwrap_or(0.0)
            )
        };
        let new = canary.get("generation").unwrap_or(&Value::Null);
        out.push_str(&format!(
            "canary: generation {new} gets {}% of requests; generation {new}: {}; generation {}: {}\n",
            canary
                .get("share_percent")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
            side(canary.get("new").unwrap_or(&Value::Null)),
            v["generation"],
            side(canary.get("old").unwrap_or(&Value::Null)),
        ));
    }
    if v["reloading"].is_u64() || v["canary"].is_object() {
        out.push('\n');
    }
    out.push_str(&format!(
        "{:<5} {:<8} {:>4} {:<11} {:>7} {:>8} {:>9} {:>9} {:>9} {:>8}  {}\n",
        "SLOT",
        "PID",
        "GEN",
        "STATE",
        "SINCE",
        "BOOT",
        "REQUESTS",
        "INFL/CAP",
        "RSS",
        "RESTARTS",
        "LAST EXIT"
    ));
    let empty = Vec::new();
    for slot in v["slots"].as_array().unwrap_or(&empty) {
        let w = &slot["worker"];
        let last_exit = text(&slot["last_exit"], "-");
        if w.is_null() {
            let state = slot["next_start_in"]
                .as_f64()
                .map(|s| format!("(next start in {s:.1}s)"))
                .unwrap_or_else(|| "(none)".into());
            out.push_str(&format!(
                "{:<5} {:<8} {:>4} {:<59} {:>8}  {}\n",
                slot["slot"].to_string(),
                "-",
                "-",
                state,
                slot["restarts"].to_string(),
                last_exit
            ));
        } else {
            out.push_str(&worker_row(&slot["slot"].to_string(), w, slot, &last_exit));
        }
        // The slot's other workers (a reload's new generation, a
        // replacement, one draining), under it.
        for w in slot["also"].as_array().unwrap_or(&empty) {
            out.push_str(&worker_row("", w, &Value::Null, "-"));
        }
    }
    for slot in v["slots"].as_array().unwrap_or(&empty) {
        if let Some(err) = slot["last_boot_error"].as_object() {
            out.push_str(&format!(
                "\nslot {}: last boot error, {} ago:\n",
                slot["slot"],
                err.get("at")
                    .and_then(|a| a.as_f64())
                    .map(ago)
                    .unwrap_or_default()
            ));
            for line in err
                .get("text")
                .and_then(|t| t.as_str())
                .unwrap_or("")
                .lines()
            {
                out.push_str("  ");
                out.push_str(&printable(line));
                out.push('\n');
            }
        }
    }
    out
}

/// With `[server.tls.bind."ADDR"]` sets or `insecure_bind` listeners: each
/// other set's certificate, and each listener with what it serves.
fn tls_sets(tls: &serde_json::Map<String, Value>, out: &mut String) {
    let empty = Vec::new();
    let sets = tls
        .get("certificates")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let binds = tls.get("binds").and_then(Value::as_array).unwrap_or(&empty);
    let plain = binds.iter().any(|b| b["tls"] == false);
    if sets.len() < 2 && !plain {
        return;
    }
    for set in sets.iter().skip(1) {
        out.push_str(&format!(
            "tls [server.tls.bind.\"{}\"]: {}, expires in {} days\n",
            text(&set["name"], "?"),
            text(&set["subject"], "?"),
            set["expires_in_days"],
        ));
    }
    for bind in binds {
        let what = match bind["certificate"].as_str() {
            None => "plain HTTP (insecure_bind)".to_owned(),
            Some("default") => "TLS, [server.tls]".to_owned(),
            Some(name) => format!("TLS, [server.tls.bind.\"{}\"]", printable(name)),
        };
        out.push_str(&format!("  {}: {what}\n", text(&bind["address"], "?")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_server_on_a_loopback_or_this_hosts_own_address_is_on_this_host() {
        let at = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        assert!(on_this_host(at("127.0.0.1:9000"), at("127.0.0.1:40000")));
        assert!(on_this_host(at("127.0.0.2:9000"), at("127.0.0.1:40000")));
        assert!(on_this_host(at("[::1]:9000"), at("[::1]:40000")));
        assert!(on_this_host(
            at("[::ffff:127.0.0.1]:9000"),
            at("[::ffff:127.0.0.1]:40000")
        ));
        assert!(on_this_host(at("10.0.0.5:9000"), at("10.0.0.5:40000")));
        assert!(!on_this_host(at("10.0.0.6:9000"), at("10.0.0.5:40000")));
        assert!(!on_this_host(
            at("[2001:db8::2]:9000"),
            at("[2001:db8::1]:40000")
        ));
    }

    #[test]
    fn the_owner_of_a_tcp_server_on_this_host_is_found_on_v4_and_v6() {
        for listen in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(server) = std::net::TcpListener::bind(listen) else {
                continue;
            };
            let client = std::net::TcpStream::connect(server.local_addr().unwrap()).unwrap();
            let (mine, theirs) = (client.local_addr().unwrap(), client.peer_addr().unwrap());
            let me = nix::unistd::geteuid().as_raw();
            assert_eq!(tcp_socket_owner(theirs, mine), Some(me), "{listen}");
            // The client's own end, looked up the other way round.
            assert_eq!(tcp_socket_owner(mine, theirs), Some(me), "{listen}");
            // No such connection.
            let elsewhere = "192.0.2.1:9".parse().unwrap();
            assert_eq!(tcp_socket_owner(theirs, elsewhere), None, "{listen}");
        }
        // As a little-endian machine's kernel prints 127.0.0.1:8080.
        #[cfg(target_endian = "little")]
        assert_eq!(
            proc_net_addr("0100007F:1F90"),
            Some(("127.0.0.1".parse().unwrap(), 8080))
        );
        assert_eq!(proc_net_addr("zz:1F90"), None);
        assert_eq!(proc_net_addr("0100007F"), None);
    }

    #[test]
    fn what_workers_and_the_server_send_cannot_drive_the_terminal() {
        // A worker's boot traceback (and its exit, the revision, the app's
        // name) holding a title change, a screen clear, a bell and a
        // carriage return that would overwrite the line before it.
        let evil = "\x1b]0;pwned\x07\x1b[2J\rfake";
        let v = json!({
            "supervisor": {"version": evil, "pid": 7, "uptime_seconds": 3.0,
                           "app": evil, "config": evil},
            "tls": {"subject": evil, "expires_in_days": 9,
                    "last_reload": {"error": evil},
                    "certificates": [{"name": "a"}, {"name": evil, "subject": evil}],
                    "binds": [{"address": evil, "certificate": evil},
                              {"address": evil, "tls": false}]},
            "ready": false,
            "readiness": {"reason": evil},
            "last_reload": format!("generation 2 failed: {evil}"),
            "slots": [
                {"slot": 0, "worker": null, "restarts": 2, "last_exit": evil,
                 "last_boot_error": {"at": 0.0,
                     "text": format!("Traceback (most recent call last):\r\n  {evil}\nValueError: {evil}\n")}},
                {"slot": 1, "restarts": 0, "last_exit": evil,
                 "worker": {"pid": 9, "state": evil, "since": 0.0, "requests": 1,
                            "in_flight": 0, "capacity": 1}},
            ],
        });
        let out = render(&v);
        for c in ['\x1b', '\x07', '\r'] {
            assert!(!out.contains(c), "{c:?} reaches the terminal:\n{out}");
        }
        assert!(out.contains(r"\x1b]0;pwned\x07\x1b[2J\x0dfake"), "{out}");
        assert!(
            out.contains("\nlast reload: generation 2 failed: \\x1b]0;pwned"),
            "{out}"
        );
        // The traceback keeps its lines.
        assert!(
            out.contains("  Traceback (most recent call last):\n    \\x1b]0;"),
            "{out}"
        );
        assert!(out.contains("\n  ValueError: \\x1b]0;"), "{out}");
    }
}
