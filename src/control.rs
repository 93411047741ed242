//! The control socket: a Unix socket (`[control] socket`) whose file
//! permissions (0600, in a folder corral creates 0700) are the access
//! control. `corral reload [--wait]`, `corral scale N`, `corral stop` and
//! `corral status` talk to it: one JSON request line, one JSON answer line.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::oneshot;

use crate::cli::ControlArgs;
use crate::config::{BindAddr, Place};
use crate::private_fs;
use crate::status::StatusState;
use crate::supervisor::{Msg, Signal};

/// The bound control socket, and the folder corral made for it (removed
/// again at exit).
pub struct Bound {
    pub listener: UnixListener,
    pub made_dir: Option<PathBuf>,
}

/// Binds the control socket. Its folder is created (0700) when missing,
/// and it and every folder above must be private (see `private_fs`): else
/// another user could replace the socket, and `corral reload` would talk
/// to them. A socket file nobody answers on is stale and replaced; a live
/// one means another corral uses it, unless `takeover` (we are the new
/// corral of a USR2 re-exec, replacing our parent). Anything at the path
/// that is not a socket is left alone and refused. `owner`: the user
/// corral becomes after `drop_privileges`, who must be able to remove the
/// socket at exit.
pub fn bind(path: &Path, takeover: bool, owner: Option<(u32, u32)>) -> Result<Bound, String> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // Every folder that exists is checked before anything is made in it.
    for folder in dir.ancestors().filter(|f| f.exists()) {
        // The socket's own folder may be the dropped-to user's: corral
        // gave it to that user at an earlier start.
        let also = owner.map(|(uid, _)| uid).filter(|_| folder == dir);
        if let Some(why) = private_fs::not_private_to(folder, true, also) {
            return Err(format!(
                "refusing the control socket {}: its folder {} is not private: {why}; remove it, or choose a folder only corral's user can write with [control] socket or --socket",
                path.display(),
                folder.display()
            ));
        }
    }
    let mut made_dir = None;
    if !dir.exists() {
        if let Some(parent) = dir.parent()
            && !parent.exists()
        {
            // A shared root like /run/corral: root's others may traverse it
            // (to reach their socket after dropping privileges), not write.
            let mode = if nix::unistd::geteuid().is_root() {
                0o755
            } else {
                0o700
            };
            private_fs::create_dir(parent, mode).map_err(|e| {
                format!(
                    "cannot create {} for the control socket: {e}",
                    parent.display()
                )
            })?;
        }
        private_fs::create_dir(dir, 0o700).map_err(|e| {
            format!(
                "cannot create {} for the control socket: {e}",
                dir.display()
            )
        })?;
        made_dir = Some(dir.to_path_buf());
    }
    if std::fs::symlink_metadata(path).is_ok() {
        if !private_fs::is_socket(path) {
            return Err(format!(
                "{} exists and is not a socket; corral does not delete it: remove it yourself, or choose another path with [control] socket or --socket",
                path.display()
            ));
        }
        if !takeover && std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!(
                "another corral is running with the control socket {}: stop it, or give this one its own with [control] socket or --socket",
                path.display()
            ));
        }
        let _ = std::fs::remove_file(path);
    }
    let std = private_fs::bind_unix(path, 0o600)
        .map_err(|e| format!("cannot create the control socket {}: {e}", path.display()))?;
    if let Some((uid, gid)) = owner {
        // Its folder too, so that the unprivileged corral can remove the
        // socket at exit (the empty folder stays: only root may remove it
        // from the folder above; the next start uses it again).
        let _ = std::os::unix::fs::chown(path, Some(uid), Some(gid));
        if made_dir.is_some() {
            let _ = std::os::unix::fs::chown(dir, Some(uid), Some(gid));
        }
    }
    std.set_nonblocking(true).map_err(|e| e.to_string())?;
    let listener = UnixListener::from_std(std).map_err(|e| e.to_string())?;
    Ok(Bound { listener, made_dir })
}

/// Whether the process answering on `stream` (at `path`) is one this user
/// can trust: itself or root, or, for root, a corral that dropped its
/// privileges in a folder only root could have made.
fn check_peer(stream: &std::os::unix::net::UnixStream, path: &Path) -> Result<(), String> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let peer = getsockopt(stream, PeerCredentials)
        .map_err(|e| format!("cannot tell who serves {}: {e}", path.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    if peer.uid() == me || peer.uid() == 0 {
        return Ok(());
    }
    let made_by_root = me == 0
        && path.parent().and_then(Path::parent).is_some_and(|above| {
            above
                .ancestors()
                .all(|f| private_fs::not_private(f, false).is_none())
        });
    if made_by_root {
        return Ok(());
    }
    Err(format!(
        "refusing to talk to {}: it is served by uid {} (pid {}), not by you (uid {me}) or root, in a folder others could write; another user may have put it there",
        path.display(),
        peer.uid(),
        peer.pid()
    ))
}

/// The longest control request line, and how long a client has to send it.
const REQUEST_MAX: u64 = 64 * 1024;
const REQUEST_WAIT: Duration = Duration::from_secs(10);

/// Serves control requests until the runtime stops.
pub fn serve(listener: UnixListener, state: Arc<StatusState>) {
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let state = state.clone();
            tokio::spawn(async move {
                let (rd, mut wr) = stream.into_split();
                let mut line = String::new();
                // One short line, sent at once: a client that sends more, or
                // nothing, does not keep a task and a socket for ever.
                let mut rd = tokio::io::BufReader::new(rd.take(REQUEST_MAX));
                match tokio::time::timeout(REQUEST_WAIT, rd.read_line(&mut line)).await {
                    Ok(Ok(_)) => {}
                    _ => return,
                }
                let answer = match serde_json::from_str::<Value>(&line) {
                    Ok(req) => handle(&req, &state).await,
                    Err(e) => json!({"ok": false, "error": format!("bad request: {e}")}),
                };
                let mut out = answer.to_string();
                out.push('\n');
                let _ = wr.write_all(out.as_bytes()).await;
            });
        }
    });
}

async fn handle(req: &Value, state: &StatusState) -> Value {
    let sup = &state.supervisor;
    match req["cmd"].as_str() {
        Some("status") => json!({"ok": true, "status": crate::status::status(state)}),
        Some("reload") => {
            let wait = req["wait"].as_bool().unwrap_or(false);
            let (tx, rx) = oneshot::channel();
            let timeout = req["timeout_ms"].as_u64().map(Duration::from_millis);
            if sup.send(Msg::Reload(timeout, Some(tx))).is_err() {
                return json!({"ok": false, "error": "corral is stopping"});
            }
            if !wait {
                return json!({"ok": true, "started": true});
            }
            match rx.await {
                Ok(Ok(done)) => json!({
                    "ok": true,
                    "generation": done.generation,
                    "revision": done.revision,
                }),
                Ok(Err(why)) => json!({"ok": false, "error": why}),
                Err(_) => json!({"ok": false, "error": "corral stopped during the reload"}),
            }
        }
        Some("scale") => match req["count"].as_u64() {
            Some(n) if n >= 1 => {
                let _ = sup.send(Msg::Scale(n as usize));
                json!({"ok": true, "count": n})
            }
            _ => json!({"ok": false, "error": "scale needs a count of at least 1"}),
        },
        Some("stop") => {
            let _ = sup.send(Msg::Signal(Signal::Term));
            json!({"ok": true})
        }
        _ => json!({"ok": false, "error": "unknown command: use status, reload, scale or stop"}),
    }
}

/// Sends one request to the control socket at `path` and reads the answer.
pub fn request(path: &Path, req: &Value, timeout: Option<Duration>) -> Result<Value, String> {
    let mut s = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                " (is corral running? pass -c FILE or --socket PATH if it uses another socket)"
            }
            std::io::ErrorKind::PermissionDenied => {
                " (the socket's permissions allow only the user corral runs as)"
            }
            _ => "",
        };
        format!(
            "cannot reach corral's control socket {}: {e}{hint}",
            path.display()
        )
    })?;
    check_peer(&s, path)?;
    s.set_read_timeout(timeout).ok();
    let mut line = req.to_string();
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
    let mut answer = String::new();
    BufReader::new(s)
        .read_line(&mut answer)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                "timed out waiting for corral's answer".to_string()
            }
            _ => e.to_string(),
        })?;
    serde_json::from_str(&answer).map_err(|_| "corral sent no answer".to_string())
}

/// The socket a client command talks to: `--socket`, else the config
/// file's (see [`crate::config::control_socket`]); given the app or bind
/// addresses of `corral run` instead, the one running instance that serves
/// them (see [`find_instance`]).
pub fn socket_for(args: &ControlArgs) -> Result<PathBuf, String> {
    if args.socket.is_none()
        && args.config.is_none()
        && (args.app.is_some() || !args.bind.is_empty())
    {
        return find_instance(args.app.as_deref(), &args.bind);
    }
    crate::config::control_socket(args.config.as_deref(), args.socket.as_deref())
        .map_err(|e| e.to_string())
}

/// The control socket of the one running instance (under the default
/// folder, see [`crate::config::running_sockets`]) that serves `app`
/// ("main:app"; "main" means "main:application" as for `run`) and listens
/// on every one of `binds`. Asking each instance is what makes this work
/// from any folder: the instance's name depends on the folder it was
/// started in, what it serves does not.
fn find_instance(app: Option<&str>, binds: &[BindAddr]) -> Result<PathBuf, String> {
    let want_app = app.map(full_app);
    let want_binds: Vec<String> = binds.iter().map(ToString::to_string).collect();
    let (place, sockets) = crate::config::running_sockets();
    let mut matches = Vec::new();
    let mut others = Vec::new();
    for socket in sockets {
        let seen = match status(&socket) {
            Ok(v) => {
                let sup = &v["supervisor"];
                let app = sup["app"].as_str().unwrap_or("?").to_string();
                let serving: Vec<String> = sup["binds"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|b| b.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                let fits = want_app.as_ref().is_none_or(|w| *w == app)
                    && want_binds.iter().all(|b| serving.contains(b));
                if fits {
                    matches.push(socket);
                    continue;
                }
                format!("{app} on {}", serving.join(", "))
            }
            Err(e) => format!("({e})"),
        };
        others.push(format!("  {}: {seen}", socket.display()));
    }
    let wanted = match (&want_app, want_binds.is_empty()) {
        (Some(app), true) => app.clone(),
        (Some(app), false) => format!("{app} on {}", want_binds.join(", ")),
        (None, _) => want_binds.join(", "),
    };
    match matches.len() {
        1 => Ok(matches.remove(0)),
        0 => {
            let root = match &place {
                Place::Fixed(p) | Place::PerInstance(p) => p.display().to_string(),
            };
            let running = if others.is_empty() {
                format!("no corral is running under {root}")
            } else {
                format!("running under {root}:\n{}", others.join("\n"))
            };
            Err(format!(
                "no running corral serves {wanted}; {running}\n\
                 (an instance with its own [control] socket is found with -c FILE or --socket PATH)"
            ))
        }
        _ => Err(format!(
            "{} running corrals serve {wanted}: pick one with --bind ADDR or --socket PATH:\n{}",
            matches.len(),
            matches
                .iter()
                .map(|s| format!("  {}", s.display()))
                .collect::<Vec<_>>()
                .join("\n")
        )),
    }
}

/// "main" as `run` reads it: "main:application".
fn full_app(app: &str) -> String {
    if app.contains(':') {
        app.to_string()
    } else {
        format!("{app}:application")
    }
}

/// `corral reload [--wait]`: exit 0 and the generation, or 1 and why.
pub fn reload_cmd(path: &Path, wait: bool, timeout: Option<Duration>) -> u8 {
    let req = json!({
        "cmd": "reload",
        "wait": wait,
        "timeout_ms": timeout.map(|t| t.as_millis() as u64),
    });
    // The server answers by the reload's own deadline; wait a little longer.
    let read_timeout = timeout.map(|t| t + Duration::from_secs(15));
    match request(path, &req, read_timeout) {
        Ok(v) if v["ok"] == true && wait => {
            println!(
                "reloaded: generation {} (revision {}) is in service",
                v["generation"],
                v["revision"].as_str().unwrap_or("unknown")
            );
            0
        }
        Ok(v) if v["ok"] == true => {
            println!("reload started");
            0
        }
        Ok(v) => {
            println!(
                "reload FAILED: {}",
                v["error"].as_str().unwrap_or("unknown error")
            );
            1
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// `corral scale N` and `corral stop`.
pub fn simple_cmd(path: &Path, req: Value, done: &str) -> u8 {
    match request(path, &req, Some(Duration::from_secs(10))) {
        Ok(v) if v["ok"] == true => {
            println!("{done}");
            0
        }
        Ok(v) => {
            eprintln!("error: {}", v["error"].as_str().unwrap_or("unknown error"));
            1
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// Shortcut for the status command: `/status` through the control socket.
pub fn status(path: &Path) -> Result<Value, String> {
    let v = request(
        path,
        &json!({"cmd": "status"}),
        Some(Duration::from_secs(10)),
    )?;
    Ok(v["status"].clone())
}
