//! Where a worker writes its Python stacks on SIGUSR1 (faulthandler), and
//! where corral reads them before it kills a hung worker.
//!
//! It is an anonymous memory file (memfd) that corral creates and hands to
//! the worker as an open fd: there is no path for a worker (or anyone else)
//! to swap for a symlink to a secret or for a FIFO that would block corral.
//! Its size is fixed and sealed ([`CAPACITY`]), so a worker cannot make
//! corral read more than that, and reading it never blocks.

use std::fs::File;
use std::io::Seek;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;

/// The most a worker can write into its dump file, all dumps together.
pub const CAPACITY: u64 = 1 << 20;
/// The most read from it at once (one dump, for the log and `/status`).
const READ_MAX: u64 = 256 * 1024;

/// A worker's stack dump file.
#[derive(Debug)]
pub struct Stacks {
    file: File,
    /// Bytes already taken by [`Stacks::take`].
    read: u64,
}

/// A new anonymous memory file of `len` bytes (close-on-exec), sealed at
/// that size: whoever else gets it can neither shrink it (which would make
/// a mapping of it fault) nor grow it.
pub fn sealed_memfd(name: &std::ffi::CStr, len: u64) -> std::io::Result<File> {
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};
    // The system call itself, not glibc's memfd_create (2.27): the
    // release wheel links against glibc 2.17.
    // SAFETY: a NUL-terminated name that outlives the call and flags;
    // on success the kernel returns a new fd that is ours alone.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_memfd_create,
            name.as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: see above: a fresh fd, owned by nothing else.
    let file = unsafe { File::from_raw_fd(fd as i32) };
    file.set_len(len)?;
    fcntl(
        file.as_fd(),
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_SEAL,
        ),
    )?;
    Ok(file)
}

impl Stacks {
    /// A new, empty dump file (close-on-exec in corral).
    pub fn new() -> std::io::Result<Stacks> {
        let file = sealed_memfd(c"corral-stacks", CAPACITY)?;
        Ok(Stacks { file, read: 0 })
    }

    /// A copy of the fd numbered at least `min`, close-on-exec, for the
    /// worker to get at a fixed number after the fork.
    pub fn dup_above(&self, min: i32) -> std::io::Result<OwnedFd> {
        super::process::dup_above(self.file.as_fd(), min)
    }

    /// What the worker wrote since the last call (at most [`READ_MAX`]
    /// bytes), if anything. The worker's writes move the file offset the
    /// two share; corral reads with pread and never moves it.
    pub fn take(&mut self) -> Option<String> {
        let written = (&self.file).stream_position().ok()?.min(CAPACITY);
        if written <= self.read {
            return None;
        }
        let len = (written - self.read).min(READ_MAX);
        let mut buf = vec![0; len as usize];
        let n = self.file.read_at(&mut buf, self.read).ok()?;
        buf.truncate(n);
        self.read = written;
        let text = String::from_utf8_lossy(&buf).into_owned();
        (!text.trim().is_empty()).then_some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn dumps_are_read_once_each_and_the_file_cannot_grow() {
        let mut s = Stacks::new().unwrap();
        assert_eq!(s.take(), None);
        // The worker's copy of the fd shares the offset.
        let mut worker = File::from(s.dup_above(10).unwrap());
        worker.write_all(b"Thread 1:\n  File \"app.py\"\n").unwrap();
        assert_eq!(s.take().unwrap(), "Thread 1:\n  File \"app.py\"\n");
        assert_eq!(s.take(), None);
        worker.write_all(b"second dump\n").unwrap();
        assert_eq!(s.take().unwrap(), "second dump\n");
        // Sealed: no growth past the capacity, no shrinking.
        worker.seek(std::io::SeekFrom::Start(CAPACITY - 2)).unwrap();
        assert!(worker.write_all(b"overflow").is_err());
        assert!(worker.set_len(0).is_err());
        assert!(s.take().is_some(), "what fit is read, capped");
    }
}
