//! The private folder that holds the worker script and its package while
//! corral runs (and nothing else: stack dumps go to files corral hands the
//! workers as open fds, see `worker::stacks`). Workers only read it, so they
//! can never put a file there that corral would open; the script imports
//! the package without writing bytecode beside it.
//!
//! | corral runs as | workers run as | folders | files |
//! |---|---|---|---|
//! | any user | the same user | 0700 | 0600 |
//! | root | `[workers] user`/`group` | 0750 root:their group | 0640 root:their group |
//! | root, `drop_privileges` | corral becomes their user | 0700 theirs | 0600 theirs |
//!
//! "Folders" are the folder and the package's folder in it
//! ([`worker::script::PACKAGE`](crate::worker::script::PACKAGE)). With
//! `drop_privileges` both belong to the user corral becomes, so that corral
//! can still remove them when it stops.
//!
//! The folder is made in `--worker-tmp-dir` (gunicorn's flag) when given,
//! else in `$TMPDIR` or /tmp; when that is read-only (a read-only
//! container), in /dev/shm, which stays a tmpfs there.
//!
//! A corral that is killed (SIGKILL, the OOM killer) cannot remove its
//! folder. Each corral holds a lock on its own (`flock`, released by the
//! kernel when the process ends, whatever its PID namespace), and removes,
//! where it makes its own, the folders of its user named `corral-PID-...`
//! whose PID is not running here and whose lock nobody holds: what killed
//! corrals left behind.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::Identity;
use crate::worker::script;

/// The tmpfs a read-only container still has.
const SHM: &str = "/dev/shm";

/// The folder (removed on drop) and the script in it.
pub struct RuntimeDir {
    /// Removed with everything in it on drop.
    _dir: tempfile::TempDir,
    /// The folder, open and locked while corral runs (see the module doc).
    _lock: std::fs::File,
    script: PathBuf,
}

/// Who will run the script: the workers' identity when it is not corral's
/// own, and whether corral itself becomes that identity.
pub struct Owner<'a> {
    pub identity: Option<&'a Identity>,
    pub drop_privileges: bool,
}

impl RuntimeDir {
    /// Creates the folder (under `$TMPDIR`, else /tmp) named `prefix...`
    /// and writes the worker script and its package into it.
    pub fn create(
        prefix: &str,
        owner: Owner<'_>,
        place: Option<&Path>,
    ) -> std::io::Result<RuntimeDir> {
        let mut builder = tempfile::Builder::new();
        let named = format!("{prefix}{}-", std::process::id());
        builder
            .prefix(&named)
            .permissions(std::fs::Permissions::from_mode(0o700));
        let dir = match place {
            Some(place) => builder.tempdir_in(place)?,
            None => match builder.tempdir() {
                Ok(dir) => dir,
                // A read-only container: its /dev/shm is still a tmpfs
                // (gunicorn's advice, --worker-tmp-dir /dev/shm).
                Err(e)
                    if crate::private_fs::read_only(&std::env::temp_dir())
                        && Path::new(SHM).is_dir() =>
                {
                    builder.tempdir_in(SHM).map_err(|_| e)?
                }
                Err(e) => return Err(e),
            },
        };
        let lock = std::fs::File::open(dir.path())?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if let Some(parent) = dir.path().parent() {
            let removed = sweep(parent, prefix);
            if removed > 0 {
                tracing::info!(
                    "removed {removed} worker folder(s) that killed corrals left in {}",
                    parent.display()
                );
            }
        }
        let package = dir.path().join(script::PACKAGE);
        DirBuilder::new().mode(0o700).create(&package)?;
        let mut files = Vec::with_capacity(script::FILES.len());
        for (name, text) in script::FILES {
            let path = dir.path().join(name);
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            files.push(path);
        }
        let is_root = nix::unistd::geteuid().is_root();
        // The folder last: until then, nobody else may enter it.
        let folders = [package.as_path(), dir.path()];
        match owner.identity {
            Some(id) if is_root && owner.drop_privileges => {
                share(&files, &folders, Some(id.uid), id.gid, 0o700, 0o600)?
            }
            Some(id) if is_root => share(&files, &folders, None, id.gid, 0o750, 0o640)?,
            _ => {}
        }
        let script = dir.path().join(script::SCRIPT);
        Ok(RuntimeDir {
            _dir: dir,
            _lock: lock,
            script,
        })
    }

    pub fn script(&self) -> &Path {
        &self.script
    }
}

/// Removes the folders in `parent` named `{prefix}PID-...` that belong to
/// this user and that no corral holds locked (see the module doc); how
/// many. At most 1,000 a start, so that a start stays quick.
fn sweep(parent: &Path, prefix: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return 0;
    };
    let me = nix::unistd::geteuid().as_raw();
    let mut removed = 0;
    for entry in entries.flatten() {
        if removed >= 1000 {
            break;
        }
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
            continue;
        };
        // Only this naming: `corral-PID-RANDOM` (older folders, named
        // `corral-RANDOM`, cannot be told from a live corral's).
        let Some((pid, _)) = rest.split_once('-') else {
            continue;
        };
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // A corral of this PID namespace that runs (or is just making its
        // folder, not locked yet) is left alone without a look at its lock.
        if Path::new("/proc").join(pid).exists() {
            continue;
        }
        let path = entry.path();
        // A folder of this user's, not a link: another user cannot make
        // one, and in a sticky /tmp cannot rename or replace it.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != me {
            continue;
        }
        let Ok(dir) = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(&path)
        else {
            continue;
        };
        // SAFETY: flock on a descriptor this function owns.
        let free = unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if free && std::fs::remove_dir_all(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

fn share(
    files: &[PathBuf],
    folders: &[&Path],
    uid: Option<u32>,
    gid: u32,
    dir_mode: u32,
    file_mode: u32,
) -> std::io::Result<()> {
    for file in files {
        std::os::unix::fs::chown(file, uid, Some(gid))?;
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(file_mode))?;
    }
    for dir in folders {
        std::os::unix::fs::chown(dir, uid, Some(gid))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(dir_mode))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn the_folder_and_script_are_private() {
        let rt = RuntimeDir::create(
            "corral-test-",
            Owner {
                identity: None,
                drop_privileges: false,
            },
            None,
        )
        .unwrap();
        let path = rt.script().parent().unwrap().to_path_buf();
        for dir in [path.clone(), path.join(script::PACKAGE)] {
            let meta = std::fs::metadata(&dir).unwrap();
            assert_eq!(meta.mode() & 0o7777, 0o700, "{}", dir.display());
        }
        assert_eq!(rt.script(), path.join(script::SCRIPT));
        for (name, text) in script::FILES {
            let file = path.join(name);
            let meta = std::fs::metadata(&file).unwrap();
            assert_eq!(meta.mode() & 0o7777, 0o600, "{name}");
            assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
        }
        drop(rt);
        assert!(!path.exists(), "removed on drop");
    }

    #[test]
    fn a_start_removes_only_what_dead_corrals_left() {
        let parent = tempfile::tempdir().unwrap();
        // A PID nobody runs: a child that has exited and been reaped.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let make = |name: &str| {
            let dir = parent.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("corral_worker.py"), "x").unwrap();
            dir
        };
        let left = make(&format!("corral-{dead}-abc123"));
        let mine = make(&format!("corral-{}-def456", std::process::id()));
        let older = make("corral-x1Yz9Q");
        let other = make(&format!("gunicorn-{dead}-abc"));
        // Dead PID here, but locked: a corral of another PID namespace.
        let locked = make(&format!("corral-{dead}-ghi789"));
        let lock = std::fs::File::open(&locked).unwrap();
        // SAFETY: flock on a descriptor the test owns.
        assert_eq!(
            unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
            0
        );
        assert_eq!(sweep(parent.path(), "corral-"), 1);
        assert!(!left.exists());
        for kept in [&mine, &older, &other, &locked] {
            assert!(kept.exists(), "{}", kept.display());
        }
        drop(lock);
        assert_eq!(sweep(parent.path(), "corral-"), 1);
        assert!(!locked.exists());
    }
}
