//! USR2: start a new corral binary without closing the listen sockets.
//!
//! The running corral (the parent) starts its own executable again, with the
//! same arguments, handing down its listen sockets as inherited fds named in
//! `CORRAL_INHERIT` (`ADDRESS=FD;...`, the addresses as configured). Both
//! accept on the same sockets meanwhile, so no connection is refused. The new
//! corral adopts the sockets instead of binding, binds its control socket
//! and writes its pid file beside the parent's, starts its workers, and
//! once they are all in service moves both over the parent's and tells the
//! parent (SIGTERM), which drains and exits. If the new one never gets there
//! (broken binary or code), it exits after `[deploy] ready_timeout`, and the
//! parent keeps serving with its pid file and control socket as they were;
//! the new one runs no rollback meanwhile. A reload asked of the parent
//! meanwhile is the new corral's (the parent's would be cancelled at the
//! hand-over): `reload --wait` is told to ask it, and a HUP is passed on
//! once the new one has its handler ([`catches_hup`]). Which socket goes under which name is the listener
//! table's business ([`crate::front::listeners`]); this module carries them
//! across the exec.
//!
//! The new corral is the file at the path this one was started from
//! ([`remember_exe`]), as gunicorn re-executes itself by its path: an
//! upgrade (pip, apt, `install`) puts a new file there and leaves the
//! running one's deleted, so `/proc/self/exe` would start the old binary,
//! and its path, which then ends in " (deleted)", nothing at all.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The path corral was started from ([`remember_exe`]).
static EXE: OnceLock<PathBuf> = OnceLock::new();

/// Notes the path this corral was started from, for USR2: `argv[0]` made
/// absolute against the folder it started in, or found on `PATH` as
/// execvp found it. Call at the start of `main`, before anything changes
/// the working folder.
pub fn remember_exe() {
    let arg0 = std::env::args_os().next();
    let cwd = std::env::current_dir().ok();
    let path = std::env::var_os("PATH");
    if let Some(exe) = started_from(arg0.as_deref(), cwd.as_deref(), path.as_deref()) {
        let _ = EXE.set(exe);
    }
}

/// Where a program run as `arg0` from `cwd` with `path` is: a name with a
/// slash is a path (relative to `cwd`), one without is looked up in
/// `path`, the first executable file.
fn started_from(arg0: Option<&OsStr>, cwd: Option<&Path>, path: Option<&OsStr>) -> Option<PathBuf> {
    let arg0 = Path::new(arg0.filter(|a| !a.is_empty())?);
    let found = if arg0.as_os_str().as_bytes().contains(&b'/') {
        arg0.to_path_buf()
    } else {
        std::env::split_paths(path?)
            .map(|dir| dir.join(arg0))
            .find(|p| {
                p.metadata()
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })?
    };
    match found.is_absolute() {
        true => Some(found),
        false => Some(cwd?.join(found)),
    }
}

/// The program a USR2 starts: the file at the path corral was started
/// from, or, when none is there any more, the running binary again.
fn program() -> PathBuf {
    match EXE.get() {
        Some(exe) if exe.is_file() => exe.clone(),
        Some(exe) => {
            tracing::warn!(
                "SIGUSR2: {} (the path corral was started from) is no file any more: the new corral is the running binary again",
                exe.display()
            );
            PathBuf::from("/proc/self/exe")
        }
        None => PathBuf::from("/proc/self/exe"),
    }
}

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
    let exe = program();
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

/// Whether the new corral with this pid, started by this one, has its
/// SIGHUP handler in place (`SigCgt` in `/proc/PID/status`): a HUP sent
/// before it has would end it (the default action), not reload it.
pub fn catches_hup(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    catches_hup_in(&status, std::process::id())
}

fn catches_hup_in(status: &str, parent: u32) -> bool {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    // Still this one's child: not a process that took a reaped pid.
    let ours = field("PPid").and_then(|p| p.parse::<u32>().ok()) == Some(parent);
    let caught = field("SigCgt").and_then(|m| u64::from_str_radix(m, 16).ok());
    ours && caught.is_some_and(|mask| mask & (1 << (libc::SIGHUP - 1)) != 0)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hup_is_passed_on_only_to_our_child_once_it_catches_one() {
        let status =
            |ppid: u32, cgt: &str| format!("Name:\tcorral\nPPid:\t{ppid}\nSigCgt:\t{cgt}\n");
        assert!(catches_hup_in(&status(7, "0000000000014a03"), 7));
        // HUP not caught yet (just exec'd), or someone else's process.
        assert!(!catches_hup_in(&status(7, "0000000000014a02"), 7));
        assert!(!catches_hup_in(&status(8, "0000000000014a03"), 7));
        assert!(!catches_hup_in("Name:\tcorral\n", 7));
        assert!(!catches_hup(std::process::id()), "not a child of its own");
    }

    #[test]
    fn the_path_started_from_is_argv0_made_absolute_or_found_on_path() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let exe = bin.join("corral");
        std::fs::write(&exe, b"").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Not executable: execvp passes it by, and so does the lookup.
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("corral"), b"").unwrap();
        let cwd = Path::new("/srv/app");
        let from = |arg0: &str, path: Option<String>| {
            started_from(
                Some(OsStr::new(arg0)),
                Some(cwd),
                path.as_deref().map(OsStr::new),
            )
        };
        assert_eq!(
            from("/opt/corral/bin/corral", None),
            Some(PathBuf::from("/opt/corral/bin/corral"))
        );
        assert_eq!(
            from("./venv/bin/corral", None),
            Some(PathBuf::from("/srv/app/./venv/bin/corral"))
        );
        let path = format!("{}:{}", other.display(), bin.display());
        assert_eq!(from("corral", Some(path.clone())), Some(exe));
        assert_eq!(from("nothere", Some(path)), None);
        assert_eq!(from("corral", None), None);
        assert_eq!(from("", None), None);
    }
}
