//! Signals to a worker through a pidfd: a handle on the process itself, not
//! on its number. Once the worker has exited and been reaped its pid may be
//! given to any other process, root's included; a signal sent through the
//! pidfd then fails with ESRCH instead of reaching that process.
//!
//! A worker leads its own process group (its id is the worker's pid), which
//! holds the subprocesses the app started. A process group id is a pid too,
//! and can be reused once the group is empty; but a pid stays taken while
//! its process is a zombie, so while the worker has exited and is not yet
//! reaped, no other process or group can have its number. That is the one
//! moment corral signals the group: [`Process::exited`] waits for the exit
//! without reaping, [`Process::signal_group`] kills what the worker left,
//! and only then does the worker's owner reap it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A child process corral started, to be signalled safely.
#[derive(Debug)]
pub struct Process {
    pid: u32,
    /// None only where the kernel has no pidfd_open (before Linux 5.3).
    fd: Option<OwnedFd>,
}

impl Process {
    /// Takes hold of `pid`, which must be a child of this process that has
    /// not been reaped yet (so the number is still the child's).
    pub fn open(pid: u32) -> Process {
        // SAFETY: pidfd_open takes a pid and flags, no pointers; on success
        // it returns a new fd that nothing else owns.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        let fd = (fd >= 0).then(|| {
            // SAFETY: `fd` was just returned by pidfd_open and is ours alone.
            unsafe { OwnedFd::from_raw_fd(fd as i32) }
        });
        Process { pid, fd }
    }

    /// Sends `sig`; false when the process is gone (or the call failed).
    pub fn signal(&self, sig: i32) -> bool {
        match &self.fd {
            // SAFETY: pidfd_send_signal on our own pidfd, with no siginfo
            // (a null pointer is allowed) and no flags.
            Some(fd) => unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    sig,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                ) == 0
            },
            // Old kernels: the pid, which stays ours until the exit is
            // reported and this handle is dropped (a window of one channel
            // hop between the reaping and that report).
            // SAFETY: kill(2) takes no pointers.
            None if self.pid != 0 => unsafe { libc::kill(self.pid as libc::pid_t, sig) == 0 },
            None => false,
        }
    }

    /// Waits until the process has exited, without reaping it: until its
    /// owner reaps it, its pid (and so its process group id) stays taken.
    pub async fn exited(&self) {
        if let Some(fd) = &self.fd
            && let Ok(copy) = fd.try_clone()
            // SAFETY: `copy` is an OwnedFd moved into the AsyncFd, which
            // keeps it open, and its raw fd the same, until dropped.
            && let Ok(fd) = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(copy, tokio::io::Interest::READABLE)
            }
        {
            // A pidfd turns readable when its process exits.
            let _ = fd.readable().await;
            return;
        }
        let pid = self.pid;
        let _ = tokio::task::spawn_blocking(move || {
            // SAFETY: waitid(2) writes only into our zeroed siginfo; WNOWAIT
            // leaves the child to be reaped by its owner.
            unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                libc::waitid(
                    libc::P_PID,
                    pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT,
                )
            }
        })
        .await;
    }

    /// Sends `sig` to every process in the group this process leads. Call
    /// it only between [`Process::exited`] and the reaping (or while the
    /// process surely lives): only then is the group id surely this
    /// process's. False when the group has no one left (or the call failed).
    pub fn signal_group(&self, sig: i32) -> bool {
        // 0 and 1 would name corral's own group or every process.
        if self.pid <= 1 {
            return false;
        }
        // SAFETY: kill(2) takes no pointers; a negative pid names a group.
        unsafe { libc::kill(-(self.pid as libc::pid_t), sig) == 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_reaches_the_child_and_never_a_reaped_one() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let p = Process::open(child.id());
        assert!(p.fd.is_some(), "pidfd_open works on this kernel");
        assert!(p.signal(0), "alive");
        assert!(p.signal(libc::SIGKILL));
        child.wait().unwrap();
        // Reaped: the pid may belong to anyone now; the pidfd knows better.
        assert!(!p.signal(0));
        assert!(!p.signal(libc::SIGKILL));
    }
}
