//! The private folder that holds the worker script while corral runs (and
//! nothing else: stack dumps go to files corral hands the workers as open
//! fds, see `worker::stacks`). Workers only read it, so they can never put
//! a file there that corral would open.
//!
//! | corral runs as | workers run as | folder | script |
//! |---|---|---|---|
//! | any user | the same user | 0700 | 0600 |
//! | root | `[workers] user`/`group` | 0750 root:their group | 0640 root:their group |
//! | root, `drop_privileges` | corral becomes their user | 0700 theirs | 0600 theirs |
//!
//! With `drop_privileges` the folder belongs to the user corral becomes, so
//! that corral can still remove it when it stops.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::Identity;
use crate::worker::process::WORKER_SCRIPT;

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
    /// and writes the worker script into it.
    pub fn create(prefix: &str, owner: Owner<'_>) -> std::io::Result<RuntimeDir> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()?;
        let script = dir.path().join("corral_worker.py");
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&script)?;
        f.write_all(WORKER_SCRIPT.as_bytes())?;
        f.sync_all()?;
        drop(f);
        let is_root = nix::unistd::geteuid().is_root();
        match owner.identity {
            Some(id) if is_root && owner.drop_privileges => {
                share(dir.path(), &script, Some(id.uid), id.gid, 0o700, 0o600)?
            }
            Some(id) if is_root => share(dir.path(), &script, None, id.gid, 0o750, 0o640)?,
            _ => {}
        }
        Ok(RuntimeDir { _dir: dir, script })
    }

    pub fn script(&self) -> &Path {
        &self.script
    }
}

fn share(
    dir: &Path,
    script: &Path,
    uid: Option<u32>,
    gid: u32,
    dir_mode: u32,
    script_mode: u32,
) -> std::io::Result<()> {
    std::os::unix::fs::chown(script, uid, Some(gid))?;
    std::fs::set_permissions(script, std::fs::Permissions::from_mode(script_mode))?;
    std::os::unix::fs::chown(dir, uid, Some(gid))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(dir_mode))
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
        )
        .unwrap();
        let path = rt.script().parent().unwrap().to_path_buf();
        let dir = std::fs::metadata(&path).unwrap();
        assert_eq!(dir.mode() & 0o7777, 0o700);
        let script = std::fs::metadata(rt.script()).unwrap();
        assert_eq!(script.mode() & 0o7777, 0o600);
        assert_eq!(std::fs::read_to_string(rt.script()).unwrap(), WORKER_SCRIPT);
        drop(rt);
        assert!(!path.exists(), "removed on drop");
    }
}
