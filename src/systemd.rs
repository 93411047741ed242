//! systemd's notify protocol (sd_notify): `READY=1` once enough workers are
//! in service, `RELOADING=1` around reloads, `STOPPING=1`, a one-line
//! `STATUS=`, `WATCHDOG=1` from the supervisor loop, and `MAINPID=` when a
//! USR2 re-exec hands over. Nothing is sent when `NOTIFY_SOCKET` is unset.
//! The variables are taken out of the environment at start-up, so workers
//! never see them.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::OnceLock;
use std::time::Duration;

struct Notify {
    socket: Option<String>,
    watchdog: Option<Duration>,
}

static NOTIFY: OnceLock<Notify> = OnceLock::new();

/// Takes NOTIFY_SOCKET and WATCHDOG_USEC/WATCHDOG_PID from the environment.
/// Call at the start of main, before any thread exists.
pub fn init() {
    let socket = std::env::var("NOTIFY_SOCKET")
        .ok()
        .filter(|s| !s.is_empty());
    let pid_ok = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_none_or(|p| p == std::process::id());
    let watchdog = std::env::var("WATCHDOG_USEC")
        .ok()
        .and_then(|u| u.parse::<u64>().ok())
        .filter(|u| *u > 0 && pid_ok)
        .map(Duration::from_micros);
    // SAFETY: at the start of main, before the runtime or any other thread
    // exists, so nothing reads the environment concurrently.
    unsafe {
        for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            std::env::remove_var(var);
        }
    }
    let _ = NOTIFY.set(Notify { socket, watchdog });
}

/// NOTIFY_SOCKET and WATCHDOG_USEC as received, to hand to a re-executed
/// corral (USR2), which becomes the main process.
pub fn inherited_env() -> Vec<(&'static str, String)> {
    let mut env = Vec::new();
    if let Some(n) = NOTIFY.get() {
        if let Some(s) = &n.socket {
            env.push(("NOTIFY_SOCKET", s.clone()));
        }
        if let Some(w) = n.watchdog {
            env.push(("WATCHDOG_USEC", w.as_micros().to_string()));
        }
    }
    env
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`.
pub fn watchdog_interval() -> Option<Duration> {
    NOTIFY.get()?.watchdog.map(|w| w / 2)
}

/// Sends one notification (several `KEY=VALUE` lines); errors are ignored,
/// as sd_notify's are.
pub fn notify(message: &str) {
    let Some(path) = NOTIFY.get().and_then(|n| n.socket.as_deref()) else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let addr = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(path),
    };
    if let Ok(addr) = addr {
        let _ = sock.send_to_addr(message.as_bytes(), &addr);
    }
}

/// `MONOTONIC_USEC` for `RELOADING=1`: CLOCK_MONOTONIC in microseconds.
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass and nothing else.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}
