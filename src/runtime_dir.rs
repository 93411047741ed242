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

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::Identity;
use crate::worker::script;

/// The tmpfs a read-only container still has.
const SHM: &str = "/dev/shm";

/// The folder (removed on drop) and the script in it.
pub struct RuntimeDir {
    /// Removed with everything in it on drop.
    _dir: tempfile::TempDir,
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
        builder
            .prefix(prefix)
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
        Ok(RuntimeDir { _dir: dir, script })
    }

    pub fn script(&self) -> &Path {
        &self.script
    }
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
}
