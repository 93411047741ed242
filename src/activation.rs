//! systemd socket activation: with `LISTEN_PID` (this process) and
//! `LISTEN_FDS`, corral serves on the inherited sockets (fds 3, 4, ...)
//! instead of binding `[server] bind`. A socket named `status` in
//! `LISTEN_FDNAMES` (`FileDescriptorName=status`) serves the status server.
//! The variables are removed and the fds marked close-on-exec at start-up,
//! so workers see neither; the sockets go into the
//! [`crate::front::listeners::Inherited`] that `main` passes down.

use std::os::fd::RawFd;

const FIRST_FD: RawFd = 3;

/// Takes the activation variables: the sockets systemd passed, each with
/// its name (empty when not socket-activated). Call at the start of main,
/// before any thread exists.
pub fn take_sockets() -> Vec<(RawFd, String)> {
    let pid_ok = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<i32>().ok())
        .filter(|n| *n > 0 && pid_ok)
        .unwrap_or(0);
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|n| n.split(':').map(str::to_string).collect())
        .unwrap_or_default();
    // SAFETY: at the start of main, before the runtime or any other thread
    // exists, so nothing reads the environment concurrently.
    unsafe {
        for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            std::env::remove_var(var);
        }
    }
    (0..count)
        .map(|i| {
            let fd = FIRST_FD + i;
            crate::reexec::set_cloexec(fd);
            let name = names.get(i as usize).cloned().unwrap_or_default();
            (fd, name)
        })
        .collect()
}

/// The file a Unix socket `fd` is bound to (`None` for an abstract or
/// unnamed one).
pub fn unix_path(fd: RawFd) -> Option<std::path::PathBuf> {
    use nix::sys::socket::{UnixAddr, getsockname};
    getsockname::<UnixAddr>(fd)
        .ok()?
        .path()
        .map(std::path::Path::to_path_buf)
}

/// Whether `fd` is a Unix socket (else TCP).
pub fn is_unix(fd: RawFd) -> bool {
    use nix::sys::socket::{AddressFamily, SockaddrLike, SockaddrStorage, getsockname};
    getsockname::<SockaddrStorage>(fd)
        .ok()
        .and_then(|a| a.family())
        == Some(AddressFamily::Unix)
}
