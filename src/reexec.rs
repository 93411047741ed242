//! USR2: start a new corral binary without closing the listen sockets.
//!
//! The running corral (the parent) starts its own executable again, with the
//! same arguments, handing down its listen sockets as inherited fds named in
//! `CORRAL_INHERIT` (`ADDRESS=FD;...`, the addresses as configured). Both
//! accept on the same sockets meanwhile, so no connection is refused. The new
//! corral adopts the sockets instead of binding, takes over the control
//! socket, starts its workers, and once they are all in service tells the
//! parent (SIGTERM), which drains and exits. If the new one never gets there
//! (broken binary or code), it exits after `[deploy] ready_timeout` and the
//! parent keeps serving. Which socket goes under which name is the listener
//! table's business ([`crate::front::listeners`]); this module carries them
//! across the exec.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;

const INHERIT: &str = "CORRAL_INHERIT";
const PARENT: &str = "CORRAL_REEXEC_PARENT";

/// What a re-executed corral got from its parent (empty unless started by a
/// USR2).
#[derive(Debug, Default)]
pub struct Handover {
    /// The listen sockets, each under its name.
    pub fds: HashMap<String, RawFd>,
    /// The parent's pid.
    pub parent: Option<u32>,
}

/// Reads (and removes from the environment, so workers do not see them) the
/// variables a parent set. Call before any thread starts.
pub fn take_handover() -> Handover {
    let fds = std::env::var(INHERIT)
        .ok()
        .map(|v| {
            v.split(';')
                .filter_map(|kv| {
                    let (k, fd) = kv.rsplit_once('=')?;
                    Some((k.to_string(), fd.parse().ok()?))
                })
                .collect()
        })
        .unwrap_or_default();
    let parent = std::env::var(PARENT).ok().and_then(|p| p.parse().ok());
    // SAFETY: called at the start of main, before the runtime or any other
    // thread exists, so nothing reads the environment concurrently.
    unsafe {
        std::env::remove_var(INHERIT);
        std::env::remove_var(PARENT);
    }
    Handover { fds, parent }
}

/// Starts the new corral, handing it `sockets` (name, fd; see
/// [`crate::front::listeners::Listeners::handover`]) and `env` (systemd's
/// notify socket and watchdog, `systemd::NotifySocket::inherited_env`);
/// `exited` is called with its pid once it has exited.
pub fn spawn(
    sockets: &[(String, RawFd)],
    env: &[(&str, String)],
    exited: impl FnOnce(u32) + Send + 'static,
) -> std::io::Result<u32> {
    let exe = std::env::current_exe()?;
    let inherit = sockets
        .iter()
        .map(|(addr, fd)| format!("{addr}={fd}"))
        .collect::<Vec<_>>()
        .join(";");
    let fds: Vec<RawFd> = sockets.iter().map(|(_, fd)| *fd).collect();
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .env(INHERIT, inherit)
        .env(PARENT, std::process::id().to_string())
        .envs(env.iter().map(|(k, v)| (k, v)));
    // SAFETY: between fork and exec only fcntl(2) on fds we own, with no
    // allocation: the listen sockets stay open across exec in the child.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let (mut child, ours) = crate::reaper::spawn(|| cmd.spawn(), |c| Some(c.id()))?;
    let pid = child.id();
    // Its only reaper: the new corral outlives this one when all goes well.
    std::thread::spawn(move || {
        if let Ok(st) = child.wait()
            && !st.success()
        {
            tracing::error!("the new corral (pid {pid}) exited: {st}; this one keeps serving");
        }
        drop(ours);
        exited(pid);
    });
    Ok(pid)
}

/// Marks an adopted fd close-on-exec again, so workers do not inherit it.
pub fn set_cloexec(fd: RawFd) {
    // SAFETY: fcntl(2) on an fd this process owns; no pointers.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
}
