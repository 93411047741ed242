//! The control socket: a Unix socket (`[control] socket`) whose file
//! permissions (0600, in a folder corral creates 0700) are the access
//! control. `corral reload [--wait]`, `corral scale N`, `corral stop` and
//! `corral status` talk to it: one JSON request line ([`ControlRequest`]),
//! one JSON answer line ([`ControlReply`]); client and server share the
//! types.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::oneshot;

use crate::canary::Thresholds;
use crate::cli::ControlArgs;
use crate::config::{BindAddr, Place};
use crate::private_fs;
use crate::status::StatusState;
use crate::supervisor::core::CanaryRun;
use crate::supervisor::{Msg, ReloadError, Signal, Waiter};
use crate::worker::output::{printable, printable_lines};

/// A request on the control socket: `{"cmd": "status"}`, `{"cmd":
/// "reload", "wait": true, "timeout_ms": 30000}`, `{"cmd": "scale",
/// "count": 4}`, `{"cmd": "stop"}`, `{"cmd": "promote"}`, `{"cmd": "abort"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum ControlRequest {
    Status,
    Reload {
        /// Answer when the new generation is in service (or failed),
        /// rather than when it starts.
        #[serde(default)]
        wait: bool,
        /// The reload's deadline, instead of the configured one.
        #[serde(default)]
        timeout_ms: Option<u64>,
        /// A canary for this reload: the new generation's share of the
        /// requests (thousandths) and its window.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        canary_permille: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        canary_ms: Option<u64>,
    },
    Scale {
        count: usize,
    },
    Stop,
    /// End the running canary now: the new generation takes over.
    Promote,
    /// End the running canary now: the new generation is stopped, as when
    /// it fails.
    Abort,
}

impl ControlRequest {
    /// Reads a request line; the error is the answer to send instead.
    fn parse(line: &str) -> Result<ControlRequest, String> {
        const SCALE: &str = "scale needs a count of at least 1";
        match serde_json::from_str::<ControlRequest>(line) {
            Ok(ControlRequest::Scale { count: 0 }) => Err(SCALE.into()),
            Ok(req) => Ok(req),
            Err(e) => match serde_json::from_str::<Value>(line) {
                Err(e) => Err(format!("bad request: {e}")),
                Ok(v) => match v["cmd"].as_str() {
                    Some("scale") => Err(SCALE.into()),
                    Some("status" | "reload" | "stop" | "promote" | "abort") => {
                        Err(format!("bad request: {e}"))
                    }
                    _ => Err(
                        "unknown command: use status, reload, scale, stop, promote or abort".into(),
                    ),
                },
            },
        }
    }
}

/// The answer to a [`ControlRequest`]: `{"ok": true, ...}` with what the
/// request asked for, or `{"ok": false, "error": "why"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "ReplyFields", from = "ReplyFields")]
pub enum ControlReply {
    /// `status`: what `/status` shows.
    Status(Value),
    /// `reload` without `wait`: the reload was taken, and how ("started:
    /// generation 3 is starting beside generation 2", "queued: ...",
    /// "passed on to ..."; empty from an older corral). On the wire
    /// `"started": true` and `"taken"`.
    ReloadStarted(String),
    /// `reload` with `wait`: the new generation is in service.
    Reloaded {
        generation: u64,
        revision: Option<String>,
    },
    /// `scale`: the number of workers from now on.
    Scaled { count: usize },
    /// `stop` (corral is stopping), `promote`, `abort`: done, a plain
    /// `{"ok": true}`.
    Done,
    /// Any request that failed, and why.
    Failed(String),
    /// `reload` with `wait`: a stop cancelled the reload (no failure of
    /// the new code), and why. On the wire a failure with `"cancelled":
    /// true`, so an older client still reads it as one.
    Cancelled(String),
    /// `reload` with `wait`: the reload did not start (a failed one's
    /// rollback was under way; nothing changed), and why.
    /// On the wire a failure with `"not_started": true`.
    NotStarted(String),
    /// `reload` with `wait`: this corral hands over to the one a USR2
    /// started, which is to be asked: the client asks again (the socket
    /// is that one's once it has taken over). On the wire a failure with
    /// `"handed_over": true`.
    HandedOver(String),
}

/// A [`ControlReply`] as it is on the wire.
#[derive(Serialize, Deserialize)]
struct ReplyFields {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    started: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    generation: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    count: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cancelled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    not_started: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    handed_over: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    taken: Option<String>,
}

impl From<ControlReply> for ReplyFields {
    fn from(reply: ControlReply) -> ReplyFields {
        let mut f = ReplyFields {
            ok: true,
            error: None,
            status: None,
            started: None,
            generation: None,
            revision: None,
            count: None,
            cancelled: None,
            not_started: None,
            handed_over: None,
            taken: None,
        };
        match reply {
            ControlReply::Status(v) => f.status = Some(v),
            ControlReply::ReloadStarted(how) => {
                f.started = Some(true);
                f.taken = Some(how).filter(|h| !h.is_empty());
            }
            ControlReply::Reloaded {
                generation,
                revision,
            } => {
                f.generation = Some(generation);
                f.revision = revision;
            }
            ControlReply::Scaled { count } => f.count = Some(count),
            ControlReply::Done => {}
            ControlReply::Failed(why) => {
                f.ok = false;
                f.error = Some(why);
            }
            ControlReply::Cancelled(why) => {
                f.ok = false;
                f.error = Some(why);
                f.cancelled = Some(true);
            }
            ControlReply::NotStarted(why) => {
                f.ok = false;
                f.error = Some(why);
                f.not_started = Some(true);
            }
            ControlReply::HandedOver(why) => {
                f.ok = false;
                f.error = Some(why);
                f.handed_over = Some(true);
            }
        }
        f
    }
}

impl From<ReplyFields> for ControlReply {
    fn from(f: ReplyFields) -> ControlReply {
        match f {
            ReplyFields {
                ok: false,
                error,
                cancelled: Some(true),
                ..
            } => ControlReply::Cancelled(error.unwrap_or_else(|| "cancelled".into())),
            ReplyFields {
                ok: false,
                error,
                not_started: Some(true),
                ..
            } => ControlReply::NotStarted(error.unwrap_or_else(|| "not started".into())),
            ReplyFields {
                ok: false,
                error,
                handed_over: Some(true),
                ..
            } => ControlReply::HandedOver(error.unwrap_or_else(|| "handed over".into())),
            ReplyFields {
                ok: false, error, ..
            } => ControlReply::Failed(error.unwrap_or_else(|| "unknown error".into())),
            ReplyFields {
                status: Some(v), ..
            } => ControlReply::Status(v),
            ReplyFields {
                generation: Some(generation),
                revision,
                ..
            } => ControlReply::Reloaded {
                generation,
                revision,
            },
            ReplyFields {
                started: Some(true),
                taken,
                ..
            } => ControlReply::ReloadStarted(taken.unwrap_or_default()),
            ReplyFields {
                count: Some(count), ..
            } => ControlReply::Scaled { count },
            _ => ControlReply::Done,
        }
    }
}

/// The bound control socket, and the folder corral made for it (removed
/// again at exit).
pub struct Bound {
    pub listener: UnixListener,
    pub made_dir: Option<PathBuf>,
    /// Where a corral started by a USR2 re-exec bound its socket: beside
    /// the path, which holds the old corral's until this one is in service
    /// and [`take_over`] moves this one there.
    pub staged: Option<PathBuf>,
}

/// Where the new corral of a USR2 re-exec binds its control socket until
/// it is in service: a dot-file beside `path`, in the same folder.
pub fn staged_path(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let dot = if name.starts_with('.') { "" } else { "." };
    path.with_file_name(format!("{dot}{name}.new"))
}

/// Moves the control socket bound at `staged` to `path`, over the old
/// corral's (rename(2): `path` is never without a socket, and clients
/// reach this corral from then on). The old corral's stays open but
/// unnamed, and at its exit it leaves this one alone (not its inode).
pub fn take_over(staged: &Path, path: &Path) -> Result<(), String> {
    std::fs::rename(staged, path).map_err(|e| {
        format!(
            "cannot move the control socket {} to {}: {e}",
            staged.display(),
            path.display()
        )
    })
}

/// Binds the control socket. Its folder is created (0700) when missing,
/// and it and every folder above must be private (see `private_fs`): else
/// another user could replace the socket, and `corral reload` would talk
/// to them. A socket file nobody answers on is stale and replaced; a live
/// one means another corral uses it, unless `takeover` (we are the new
/// corral of a USR2 re-exec, replacing our parent): then the socket is
/// bound beside the path ([`staged_path`]; one there is a crashed new
/// corral's, and replaced), and the parent's stays until this corral is in
/// service ([`take_over`]), so that a new corral that never comes up
/// leaves the old one reachable. Anything at the path
/// that is not a socket is left alone and refused, except in the folder
/// corral gave the user it drops to (`owner`: the user corral becomes after
/// `drop_privileges`, who must be able to remove the socket at exit): a
/// symlink, file or FIFO that user left there is unlinked, with a warning,
/// so that a worker cannot keep root's corral from starting again.
pub fn bind(path: &Path, takeover: bool, owner: Option<(u32, u32)>) -> Result<Bound, String> {
    let dir = private_fs::folder_of(path);
    if let Some(why) = folder_not_private(path, owner) {
        return Err(format!(
            "refusing the control socket {}: {why}; remove it, or choose a folder only corral's user can write with [control] socket or --socket",
            path.display(),
        ));
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
    let staged = takeover.then(|| staged_path(path));
    let path = staged.as_deref().unwrap_or(path);
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() && left_by_dropped_user(dir, &meta, owner) {
            // The folder corral gave the user it drops to (an earlier
            // start's): only that user (or root) can have put this here,
            // and it could remove the socket anyway. unlink removes the
            // name only: it never follows a symlink, and a target or
            // another link of the same file stays as it was.
            std::fs::remove_file(path).map_err(|e| {
                format!(
                    "cannot remove what is in the way at {}: {e}",
                    path.display()
                )
            })?;
            tracing::warn!(
                "removed {} (a {}, owned by uid {}) from the control socket's folder, which belongs to the user corral drops to: only that user can have put it there (a worker, perhaps)",
                path.display(),
                node_kind(&meta),
                meta.uid()
            );
        } else if !meta.file_type().is_socket() {
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
    // The owner is set through the socket's own node, never by path: the
    // folder may be the dropped-to user's, who could swap a symlink in.
    let std = private_fs::bind_unix(path, 0o600, owner)
        .map_err(|e| format!("cannot create the control socket {}: {e}", path.display()))?;
    if let Some((uid, gid)) = owner {
        // Its folder too, so that the unprivileged corral can remove the
        // socket at exit (the empty folder stays: only root may remove it
        // from the folder above; the next start uses it again). Only a
        // folder made just now, in folders checked above.
        if made_dir.is_some() {
            let _ = std::os::unix::fs::chown(dir, Some(uid), Some(gid));
        }
    }
    std.set_nonblocking(true).map_err(|e| e.to_string())?;
    let listener = UnixListener::from_std(std).map_err(|e| e.to_string())?;
    Ok(Bound {
        listener,
        made_dir,
        staged,
    })
}

/// Whether what `meta` describes, at the control socket's path in `dir`,
/// was left in the folder corral (as root) gave the user it drops to
/// (`owner`): a symlink, file or FIFO, no folder, in a folder of that
/// user's own, in which only that user and root can put anything.
fn left_by_dropped_user(dir: &Path, meta: &std::fs::Metadata, owner: Option<(u32, u32)>) -> bool {
    let Some((uid, _)) = owner else {
        return false;
    };
    let dir_meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(_) => return false,
    };
    nix::unistd::geteuid().is_root()
        && !meta.is_dir()
        && dir_meta.is_dir()
        && dir_meta.uid() == uid
        && dir_meta.mode() & 0o022 == 0
}

/// What a node that is not a socket is, in a word.
fn node_kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_symlink() {
        "symlink"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_file() {
        "regular file"
    } else {
        "node"
    }
}

/// Why the folders of the control socket at `path` are not corral's alone
/// (`owner`: the user corral drops to, see [`bind`]), if they are not:
/// every folder of it that exists is checked before anything is made in
/// it, else whoever may change one could swap the socket.
pub fn folder_not_private(path: &Path, owner: Option<(u32, u32)>) -> Option<String> {
    let dir = private_fs::folder_of(path);
    dir.ancestors().filter(|f| f.exists()).find_map(|folder| {
        // The socket's own folder may be the dropped-to user's: corral
        // gave it to that user at an earlier start.
        let also = owner.map(|(uid, _)| uid).filter(|_| folder == dir);
        private_fs::not_private_to(folder, true, also)
            .map(|why| format!("its folder {} is not private: {why}", folder.display()))
    })
}

/// Whether a corral answers on the control socket at `path`.
pub fn in_use(path: &Path) -> bool {
    private_fs::is_socket(path) && std::os::unix::net::UnixStream::connect(path).is_ok()
}

/// Whether the process answering on `stream` (at `path`) is one this user
/// can trust: itself or root, or, for root, a corral that dropped its
/// privileges in a folder only root could have made.
pub fn check_peer(stream: &std::os::unix::net::UnixStream, path: &Path) -> Result<(), String> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let peer = getsockopt(stream, PeerCredentials)
        .map_err(|e| format!("cannot tell who serves {}: {e}", path.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    if peer.uid() == me || peer.uid() == 0 {
        return Ok(());
    }
    // The socket's own folder too: a sticky one anyone may write to
    // (/run/lock) lets anyone put a socket there.
    let made_by_root = me == 0
        && path.parent().is_some_and(|folder| {
            private_fs::not_private_to(folder, false, Some(peer.uid())).is_none()
        })
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

/// Where the control socket is made again if it goes (see [`serve`]).
pub struct Remake {
    pub path: PathBuf,
    pub owner: Option<(u32, u32)>,
    /// The inode of the socket at `path`, for the clean-up at exit.
    pub inode: Arc<std::sync::atomic::AtomicU64>,
}

/// How often [`serve`] looks whether its socket is still at its path.
const LOOK_EVERY: Duration = Duration::from_secs(10);

/// Serves control requests until the runtime stops. With `remake`, a
/// socket that is gone from its path (removed by hand, or by a clean-up
/// of old files in /tmp) is made again within [`LOOK_EVERY`]: else
/// `corral reload` and `corral stop` could not reach this corral until
/// a restart.
pub fn serve(listener: UnixListener, state: Arc<StatusState>, remake: Option<Remake>) {
    tokio::spawn(async move {
        let mut listener = listener;
        let mut look = tokio::time::interval(LOOK_EVERY);
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut warned = false;
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = look.tick(), if remake.is_some() => {
                    let Some(r) = &remake else { continue };
                    if std::fs::symlink_metadata(&r.path).is_ok() {
                        continue;
                    }
                    match bind(&r.path, false, r.owner) {
                        Ok(bound) => {
                            listener = bound.listener;
                            if let Ok(meta) = std::fs::metadata(&r.path) {
                                r.inode.store(meta.ino(), std::sync::atomic::Ordering::Relaxed);
                            }
                            warned = false;
                            tracing::warn!(
                                "the control socket {} was gone (removed by hand, or by a clean-up of old files): made it again",
                                r.path.display()
                            );
                        }
                        Err(e) if !warned => {
                            warned = true;
                            tracing::warn!(
                                "the control socket {} is gone and cannot be made again: {e}; `corral reload`, `scale` and `stop` cannot reach this corral (signals still work)",
                                r.path.display()
                            );
                        }
                        Err(_) => {}
                    }
                    continue;
                }
            };
            let Ok((stream, _)) = accepted else { break };
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
                let answer = match ControlRequest::parse(&line) {
                    Ok(req) => handle(req, &state).await,
                    Err(why) => ControlReply::Failed(why),
                };
                let mut out = serde_json::to_string(&answer).unwrap_or_default();
                out.push('\n');
                let _ = wr.write_all(out.as_bytes()).await;
            });
        }
    });
}

async fn handle(req: ControlRequest, state: &StatusState) -> ControlReply {
    let sup = &state.supervisor;
    match req {
        ControlRequest::Status => ControlReply::Status(crate::status::status(state)),
        ControlRequest::Reload {
            wait,
            timeout_ms,
            canary_permille,
            canary_ms,
        } => {
            let timeout = timeout_ms.map(Duration::from_millis);
            let canary = canary_permille.map(|permille| CanaryRun {
                permille: permille.clamp(1, 1000),
                window: Duration::from_millis(
                    canary_ms.unwrap_or(Thresholds::DEFAULT.duration.as_millis() as u64),
                ),
            });
            let ask = |waiter| {
                sup.send(Msg::Reload(timeout, canary, Some(waiter)))
                    .map_err(|_| ControlReply::Failed("corral is stopping".into()))
            };
            // Without --wait, what became of the request: taken (started,
            // queued, passed on) or refused, at once.
            if !wait {
                let (tx, rx) = oneshot::channel();
                if let Err(stopping) = ask(Waiter::Taken(tx)) {
                    return stopping;
                }
                return match rx.await {
                    Ok(Ok(how)) => ControlReply::ReloadStarted(how),
                    Ok(Err(e)) => reload_refused(e),
                    Err(_) => {
                        ControlReply::Failed("corral stopped before it took the reload".into())
                    }
                };
            }
            let (tx, rx) = oneshot::channel();
            if let Err(stopping) = ask(Waiter::Outcome(tx)) {
                return stopping;
            }
            match rx.await {
                Ok(Ok(done)) => ControlReply::Reloaded {
                    generation: done.generation,
                    revision: done.revision,
                },
                Ok(Err(e)) => reload_refused(e),
                Err(_) => ControlReply::Failed("corral stopped during the reload".into()),
            }
        }
        ControlRequest::Scale { count } => {
            let _ = sup.send(Msg::Scale(count));
            ControlReply::Scaled { count }
        }
        ControlRequest::Stop => {
            let _ = sup.send(Msg::Signal(Signal::Term));
            ControlReply::Done
        }
        ControlRequest::Promote | ControlRequest::Abort => {
            let (tx, rx) = oneshot::channel();
            let promote = req == ControlRequest::Promote;
            if sup.send(Msg::Decide(promote, tx)).is_err() {
                return ControlReply::Failed("corral is stopping".into());
            }
            match rx.await {
                Ok(Ok(())) => ControlReply::Done,
                Ok(Err(why)) => ControlReply::Failed(why),
                Err(_) => ControlReply::Failed("corral is stopping".into()),
            }
        }
    }
}

/// A reload that failed, was cancelled or did not start, as answered.
fn reload_refused(e: ReloadError) -> ControlReply {
    match e {
        ReloadError::Failed(why) => ControlReply::Failed(why),
        ReloadError::Cancelled(why) => ControlReply::Cancelled(why),
        ReloadError::NotStarted(why) => ControlReply::NotStarted(why),
        ReloadError::HandedOver(why) => ControlReply::HandedOver(why),
    }
}

/// Sends one request to the control socket at `path` and reads the answer.
pub fn request(
    path: &Path,
    req: &ControlRequest,
    timeout: Option<Duration>,
) -> Result<ControlReply, String> {
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
    let mut line = serde_json::to_string(req).map_err(|e| e.to_string())?;
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
/// them (see [`find_instance`]). When the file's socket has no corral
/// behind it (an instance started with the file and flags of its own is
/// named after both), the one running instance started with that file
/// (and serving `--bind`, when given).
pub fn socket_for(args: &ControlArgs) -> Result<PathBuf, String> {
    if args.socket.is_none()
        && args.config.is_none()
        && (args.app.is_some() || !args.bind.is_empty())
    {
        return find_instance(args.app.as_deref(), &args.bind);
    }
    let path = crate::config::control_socket(args.config.as_deref(), args.socket.as_deref())
        .map_err(|e| e.to_string())?;
    if args.socket.is_some() || in_use(&path) {
        return Ok(path);
    }
    let file = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_FILE));
    let Ok(file) = std::fs::canonicalize(&file) else {
        return Ok(path);
    };
    let want_binds: Vec<String> = args.bind.iter().map(ToString::to_string).collect();
    let (_, mut matches, _) = scan(|seen| {
        seen.config
            .as_deref()
            .and_then(|c| std::fs::canonicalize(c).ok())
            .is_some_and(|c| c == file)
            && want_binds.iter().all(|b| seen.binds.contains(b))
    });
    match matches.len() {
        0 => Ok(path),
        1 => Ok(matches.remove(0).0),
        _ => Err(pick_one(
            &format!("were started with {}", file.display()),
            matches
                .iter()
                .map(|(socket, seen)| format!("--socket {}: {seen}", socket.display())),
        )),
    }
}

/// What a running instance says it is.
struct Seen {
    app: String,
    binds: Vec<String>,
    config: Option<String>,
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} on {}", self.app, self.binds.join(", "))
    }
}

/// The running instances under the default folder (see
/// [`crate::config::running_sockets`]): those `fits` takes, with what they
/// said, and a line for each of the others.
fn scan(fits: impl Fn(&Seen) -> bool) -> (Place, Vec<(PathBuf, Seen)>, Vec<String>) {
    let (place, sockets) = crate::config::running_sockets();
    let mut matches = Vec::new();
    let mut others = Vec::new();
    for socket in sockets {
        let line = match status(&socket) {
            Ok(v) => {
                let sup = &v["supervisor"];
                let seen = Seen {
                    app: sup["app"].as_str().unwrap_or("?").to_string(),
                    binds: sup["binds"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|b| b.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default(),
                    config: sup["config"].as_str().map(str::to_string),
                };
                if fits(&seen) {
                    matches.push((socket, seen));
                    continue;
                }
                seen.to_string()
            }
            Err(e) => format!("({e})"),
        };
        others.push(format!("  {}: {line}", socket.display()));
    }
    (place, matches, others)
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
    let (place, mut matches, others) = scan(|seen| {
        want_app.as_ref().is_none_or(|w| *w == seen.app)
            && want_binds.iter().all(|b| seen.binds.contains(b))
    });
    let wanted = match (&want_app, want_binds.is_empty()) {
        (Some(app), true) => app.clone(),
        (Some(app), false) => format!("{app} on {}", want_binds.join(", ")),
        (None, _) => want_binds.join(", "),
    };
    match matches.len() {
        1 => Ok(matches.remove(0).0),
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
        _ => Err(pick_one(
            &format!("serve {wanted}"),
            matches
                .iter()
                .map(|(socket, seen)| format!("--socket {}: {seen}", socket.display())),
        )),
    }
}

/// "N running corrals WHAT: pick one ...", then each candidate on a line.
fn pick_one(what: &str, candidates: impl Iterator<Item = String>) -> String {
    let lines: Vec<String> = candidates.map(|c| format!("  {c}")).collect();
    format!(
        "{} running corrals {what}: pick one with --bind ADDR or --socket PATH:\n{}",
        lines.len(),
        lines.join("\n")
    )
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
///
/// `canary`: a canary for this reload, its share in percent and its window.
/// `reload --wait`'s exit code when a stop cancelled the reload: not 1
/// (the new code failed), so that a deploy script can tell the two apart.
pub const EXIT_CANCELLED: u8 = 3;
/// `reload --wait`'s exit code when the reload did not start: a failed
/// reload's rollback was under way. Nothing changed; the same reload may
/// be asked for again once it has ended.
pub const EXIT_NOT_STARTED: u8 = 4;

pub fn reload_cmd(
    path: &Path,
    wait: bool,
    timeout: Option<Duration>,
    canary: Option<(u32, Option<Duration>)>,
) -> u8 {
    let req = ControlRequest::Reload {
        wait,
        timeout_ms: timeout.map(|t| t.as_millis() as u64),
        canary_permille: canary.map(|(percent, _)| u64::from(percent) * 10),
        canary_ms: canary.and_then(|(_, window)| window.map(|w| w.as_millis() as u64)),
    };
    // The server answers by the reload's own deadline (a canary's window,
    // perhaps extended, comes on top); wait a little longer.
    let window = canary.map_or(Duration::ZERO, |(_, w)| {
        w.unwrap_or(Thresholds::DEFAULT.duration) * 2
    });
    let read_timeout = timeout.map(|t| t + window + Duration::from_secs(15));
    match ask_past_handover(path, &req, read_timeout, timeout) {
        Ok(ControlReply::Reloaded {
            generation,
            revision,
        }) if wait => {
            println!(
                "reloaded: generation {generation} (revision {}) is in service",
                printable(revision.as_deref().unwrap_or("unknown"))
            );
            0
        }
        Ok(ControlReply::Failed(why)) => {
            // A boot traceback from the new workers, among others.
            println!("reload FAILED: {}", printable_lines(&why));
            1
        }
        Ok(ControlReply::Cancelled(why)) => {
            // A stop began: the new code did not fail, it was not given
            // the time to come up (nothing was rolled back). An exit code
            // of its own, so that a deploy script does not roll back.
            println!("{}", printable_lines(&why));
            EXIT_CANCELLED
        }
        Ok(ControlReply::NotStarted(why)) => {
            println!("{}", printable_lines(&why));
            EXIT_NOT_STARTED
        }
        Ok(ControlReply::HandedOver(why)) => {
            println!(
                "reload not answered: {}, and still was after 10 minutes",
                printable_lines(&why)
            );
            1
        }
        Ok(ControlReply::ReloadStarted(how)) if !how.is_empty() => {
            println!("reload {}", printable(&how));
            0
        }
        Ok(_) => {
            println!("reload started");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// Sends a reload request; while the corral at `path` hands over to the
/// one a USR2 started, asks again (every 250 ms) until the new one answers
/// at `path` (it takes the socket over once in service), or the old one
/// does because the new one gave up. A hand-over ends within the new
/// corral's `deploy.ready_timeout`; this waits at most 10 minutes (or the
/// reload's timeout and a minute, if longer), and a socket nobody answers
/// on for 30 s ends it.
fn ask_past_handover(
    path: &Path,
    req: &ControlRequest,
    read_timeout: Option<Duration>,
    timeout: Option<Duration>,
) -> Result<ControlReply, String> {
    let deadline = std::time::Instant::now()
        + timeout
            .map_or(Duration::ZERO, |t| t + Duration::from_secs(60))
            .max(Duration::from_secs(600));
    let mut told = false;
    let mut answered = std::time::Instant::now();
    loop {
        let answer = request(path, req, read_timeout);
        let handed_over = match &answer {
            Ok(ControlReply::HandedOver(why)) => {
                if !told {
                    eprintln!(
                        "{}; asking it when it answers at {}",
                        printable(why),
                        path.display()
                    );
                    told = true;
                }
                answered = std::time::Instant::now();
                true
            }
            // The new corral moves its socket to `path` before it asks
            // the old one to stop, so nobody answering there is not a step
            // of the hand-over; it is given 30 s all the same.
            Err(_) if told => answered.elapsed() < Duration::from_secs(30),
            _ => false,
        };
        if !handed_over || std::time::Instant::now() >= deadline {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `corral scale N` and `corral stop`.
pub fn simple_cmd(path: &Path, req: ControlRequest, done: &str) -> u8 {
    match request(path, &req, Some(Duration::from_secs(10))) {
        Ok(ControlReply::Failed(why)) => {
            eprintln!("error: {}", printable_lines(&why));
            1
        }
        Ok(_) => {
            println!("{done}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// Shortcut for the status command: `/status` through the control socket.
pub fn status(path: &Path) -> Result<Value, String> {
    match request(path, &ControlRequest::Status, Some(Duration::from_secs(10)))? {
        ControlReply::Status(v) => Ok(v),
        ControlReply::Failed(why) => Err(why),
        other => Err(format!("corral answered {other:?} to status")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_read_as_the_clients_write_them() {
        let cases = [
            (json!({"cmd": "status"}), ControlRequest::Status),
            (json!({"cmd": "promote"}), ControlRequest::Promote),
            (json!({"cmd": "abort"}), ControlRequest::Abort),
            (
                json!({"cmd": "reload", "wait": true, "canary_permille": 100, "canary_ms": 120000}),
                ControlRequest::Reload {
                    wait: true,
                    timeout_ms: None,
                    canary_permille: Some(100),
                    canary_ms: Some(120_000),
                },
            ),
            (
                json!({"cmd": "reload", "wait": true, "timeout_ms": 5000}),
                ControlRequest::Reload {
                    wait: true,
                    timeout_ms: Some(5000),
                    canary_permille: None,
                    canary_ms: None,
                },
            ),
            (
                json!({"cmd": "reload", "wait": false, "timeout_ms": null}),
                ControlRequest::Reload {
                    wait: false,
                    timeout_ms: None,
                    canary_permille: None,
                    canary_ms: None,
                },
            ),
            (
                json!({"cmd": "reload"}),
                ControlRequest::Reload {
                    wait: false,
                    timeout_ms: None,
                    canary_permille: None,
                    canary_ms: None,
                },
            ),
            (
                json!({"cmd": "scale", "count": 4}),
                ControlRequest::Scale { count: 4 },
            ),
            (json!({"cmd": "stop"}), ControlRequest::Stop),
        ];
        for (wire, req) in cases {
            assert_eq!(ControlRequest::parse(&wire.to_string()), Ok(req.clone()));
            let back = serde_json::to_string(&req).unwrap();
            assert_eq!(ControlRequest::parse(&back), Ok(req));
        }
    }

    #[test]
    fn a_bad_request_is_answered_with_what_is_wrong() {
        let scale = "scale needs a count of at least 1";
        for (line, why) in [
            (r#"{"cmd": "scale", "count": 0}"#, scale),
            (r#"{"cmd": "scale"}"#, scale),
            (r#"{"cmd": "scale", "count": "four"}"#, scale),
            (r#"{"cmd": "scale", "count": -1}"#, scale),
            (
                r#"{"cmd": "restart"}"#,
                "unknown command: use status, reload, scale, stop, promote or abort",
            ),
            (
                r#"{"verb": "stop"}"#,
                "unknown command: use status, reload, scale, stop, promote or abort",
            ),
            (
                r#"[1, 2]"#,
                "unknown command: use status, reload, scale, stop, promote or abort",
            ),
        ] {
            assert_eq!(ControlRequest::parse(line), Err(why.to_string()), "{line}");
        }
        for line in ["", "{", "stop\n", r#"{"cmd": "reload", "wait": "yes"}"#] {
            let err = ControlRequest::parse(line).unwrap_err();
            assert!(err.starts_with("bad request: "), "{line}: {err}");
        }
    }

    #[test]
    fn replies_have_their_wire_shape_and_read_back() {
        let cases = [
            (
                ControlReply::Status(json!({"ready": true})),
                json!({"ok": true, "status": {"ready": true}}),
            ),
            (
                ControlReply::ReloadStarted(String::new()),
                json!({"ok": true, "started": true}),
            ),
            (
                ControlReply::ReloadStarted("queued: generation 2 is still starting".into()),
                json!({"ok": true, "started": true, "taken": "queued: generation 2 is still starting"}),
            ),
            (
                ControlReply::Reloaded {
                    generation: 3,
                    revision: Some("abc123".into()),
                },
                json!({"ok": true, "generation": 3, "revision": "abc123"}),
            ),
            (
                ControlReply::Reloaded {
                    generation: 2,
                    revision: None,
                },
                json!({"ok": true, "generation": 2}),
            ),
            (
                ControlReply::Scaled { count: 4 },
                json!({"ok": true, "count": 4}),
            ),
            (ControlReply::Done, json!({"ok": true})),
            (
                ControlReply::Failed("corral is stopping".into()),
                json!({"ok": false, "error": "corral is stopping"}),
            ),
            (
                ControlReply::Cancelled("the reload was cancelled: corral is stopping".into()),
                json!({"ok": false, "error": "the reload was cancelled: corral is stopping", "cancelled": true}),
            ),
        ];
        for (reply, wire) in cases {
            assert_eq!(serde_json::to_value(&reply).unwrap(), wire);
            let back: ControlReply = serde_json::from_value(wire).unwrap();
            assert_eq!(back, reply);
        }
        // What an older corral wrote reads the same.
        let old = json!({"ok": true, "generation": 2, "revision": null});
        assert_eq!(
            serde_json::from_value::<ControlReply>(old).unwrap(),
            ControlReply::Reloaded {
                generation: 2,
                revision: None
            }
        );
        let old = json!({"ok": false});
        assert_eq!(
            serde_json::from_value::<ControlReply>(old).unwrap(),
            ControlReply::Failed("unknown error".into())
        );
    }
}
