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
//! "Folders" are the folder, the one in it that holds the script
//! ([`worker::script::FOLDER`](crate::worker::script::FOLDER), named the
//! same at every start) and the package's folder beside the script
//! ([`worker::script::PACKAGE`](crate::worker::script::PACKAGE)). With
//! `drop_privileges` all three belong to the user corral becomes, so that
//! corral can still remove them when it stops.
//!
//! The folder is made in `--worker-tmp-dir` (gunicorn's flag) when given,
//! else in `$TMPDIR` or /tmp; when that is read-only (a read-only
//! container), in /dev/shm, which stays a tmpfs there.
//!
//! Whoever may write to that place (the workers' user, for a
//! `--worker-tmp-dir` of theirs) may rename or replace what corral makes
//! there at any moment, so nothing is done by path: the place is opened
//! once (`O_DIRECTORY|O_NOFOLLOW`; a symlink there is refused), the folder
//! is made in it with `mkdirat`, opened by its descriptor and checked to be
//! the private folder corral made (its owner, no access for group or
//! others) before anything is put in it; every file and subfolder is made
//! relative to its folder's descriptor (`O_CREAT|O_EXCL|O_NOFOLLOW`), and
//! owner and mode are set with `fchown`/`fchmod` on the open descriptors,
//! so that no swapped folder or planted symlink can make root change
//! another file. Removal at exit works from the same descriptors.
//!
//! A corral that is killed (SIGKILL, the OOM killer) cannot remove its
//! folder. Each corral holds a lock on its own (`flock`, released by the
//! kernel when the process ends, whatever its PID namespace), and removes,
//! where it makes its own, the folders of its user named `corral-PID-...`
//! whose PID is not running here and whose lock nobody holds: what killed
//! corrals left behind. That sweep never follows a symlink (entries are
//! inspected and opened relative to the place's descriptor, with
//! `O_NOFOLLOW`), and looks at no more than [`SWEEP_LOOKS`] entries a
//! start, so that a place filled with names cannot slow a start down
//! without bound; when it stops early it says so.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, unlinkat};

use crate::config::Identity;
use crate::worker::script;

/// The tmpfs a read-only container still has.
const SHM: &str = "/dev/shm";

/// The most entries of the place one start's sweep looks at.
pub const SWEEP_LOOKS: usize = 1000;

/// How deep the removal of a folder goes (corral's folders are three deep).
const REMOVE_DEPTH: usize = 8;

/// The folder (removed on drop) and the script in it.
pub struct RuntimeDir {
    /// The place the folder is in, open.
    place: File,
    /// The folder's name in `place`.
    name: OsString,
    /// The folder, open and locked while corral runs (see the module doc).
    dir: File,
    script: PathBuf,
}

/// Who will run the script: the workers' identity when it is not corral's
/// own, and whether corral itself becomes that identity.
pub struct Owner<'a> {
    pub identity: Option<&'a Identity>,
    pub drop_privileges: bool,
}

/// Flags for a folder opened to work in: never through a symlink.
fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

fn io(e: nix::errno::Errno) -> std::io::Error {
    std::io::Error::from(e)
}

/// Opens the place the folder is made in, refusing a symlink there.
fn open_place(place: &Path) -> std::io::Result<File> {
    match nix::fcntl::open(place, dir_flags(), Mode::empty()) {
        Ok(fd) => Ok(File::from(fd)),
        // O_NOFOLLOW with O_DIRECTORY: ENOTDIR for a symlink.
        Err(nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR) if place.is_symlink() => {
            Err(std::io::Error::other(format!(
                "{} is a symlink; corral does not follow one there (whoever may change it could \
             point corral at another folder): give the folder's real path",
                place.display()
            )))
        }
        Err(e) => Err(std::io::Error::other(format!("{}: {e}", place.display()))),
    }
}

/// A name `{named}XXXXXX` with six random letters or digits.
fn random_name(named: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let mut n = h.finish();
    let mut s = named.to_owned();
    for _ in 0..6 {
        s.push(CHARS[(n % CHARS.len() as u64) as usize] as char);
        n /= CHARS.len() as u64;
    }
    s
}

/// Why the folder open as `st` is not the private one corral just made,
/// if it is not: a folder, owned by corral's user, no access for group or
/// others.
fn not_ours(st: &FileStat) -> Option<String> {
    let me = nix::unistd::geteuid().as_raw();
    let mode = st.st_mode & 0o7777;
    if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFDIR {
        return Some("it is not a folder".into());
    }
    if st.st_uid != me || mode & 0o077 != 0 {
        return Some(format!(
            "it belongs to uid {} with mode {mode:04o}, not to uid {me} with no access for others",
            st.st_uid
        ));
    }
    None
}

/// Who besides root and the workers' user (`id`) may rename or replace
/// folders in the place `st` describes, if anyone: its owner, its group,
/// or others, unless it is root's and sticky (/tmp). Root's own files stay
/// safe either way (see the module doc); the workers, though, run the
/// script from there by its path.
fn third_writer(st: &FileStat, id: &Identity) -> Option<String> {
    let mode = st.st_mode & 0o7777;
    if mode & 0o1000 != 0 && st.st_uid == 0 {
        return None;
    }
    if st.st_uid != 0 && st.st_uid != id.uid {
        return Some(format!("its owner, uid {}", st.st_uid));
    }
    if mode & 0o002 != 0 {
        return Some(format!("any user (mode {mode:04o})"));
    }
    if mode & 0o020 != 0 && st.st_gid != 0 && st.st_gid != id.gid {
        return Some(format!("group {} (mode {mode:04o})", st.st_gid));
    }
    None
}

/// Makes the folder `name` in `parent` (0700) and opens it, checked to be
/// the one made (another user who may write to `parent` may have swapped
/// it between the two calls).
fn make_dir_at(parent: &File, name: &OsStr, shown: &Path) -> std::io::Result<File> {
    mkdirat(parent, name, Mode::from_bits_truncate(0o700)).map_err(io)?;
    let dir = File::from(openat(parent, name, dir_flags(), Mode::empty()).map_err(io)?);
    let st = fstat(&dir).map_err(io)?;
    if let Some(why) = not_ours(&st) {
        return Err(std::io::Error::other(format!(
            "the folder corral made, {}, was replaced before corral could open it ({why}); \
             another user may write to {}: choose a folder only corral's user or root can write \
             to (or a sticky one such as /tmp)",
            shown.display(),
            shown.parent().unwrap_or(Path::new("/")).display()
        )));
    }
    // The umask may have taken bits away; the folder is ours to set.
    fchmod(&dir, Mode::from_bits_truncate(0o700)).map_err(io)?;
    Ok(dir)
}

/// Makes the new file `name` in `dir` (0600) and writes `text` to it.
fn write_new_at(dir: &File, name: &str, text: &str) -> std::io::Result<File> {
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut f = File::from(openat(dir, name, flags, Mode::from_bits_truncate(0o600)).map_err(io)?);
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(f)
}

/// Gives the open `fd` its owner and mode.
fn share(fd: impl AsFd, uid: Option<u32>, gid: u32, mode: u32) -> std::io::Result<()> {
    fchown(fd.as_fd(), uid.map(Uid::from_raw), Some(Gid::from_raw(gid))).map_err(io)?;
    fchmod(fd.as_fd(), Mode::from_bits_truncate(mode)).map_err(io)
}

impl RuntimeDir {
    /// Creates the folder named `prefix...` in `place` (`--worker-tmp-dir`),
    /// else under `$TMPDIR` (else /tmp), else in /dev/shm, and writes the
    /// worker script and its package into it. An error names the folders
    /// tried.
    pub fn create(
        prefix: &str,
        owner: Owner<'_>,
        place: Option<&Path>,
    ) -> std::io::Result<RuntimeDir> {
        let named = |place: &Path, e: std::io::Error| {
            std::io::Error::new(e.kind(), format!("in {}: {e}", place.display()))
        };
        if let Some(place) = place {
            return Self::create_in(prefix, &owner, place).map_err(|e| named(place, e));
        }
        let tmp = std::env::temp_dir();
        let shm = Path::new(SHM);
        // A read-only container: its /dev/shm is still a tmpfs (gunicorn's
        // advice, --worker-tmp-dir /dev/shm).
        if crate::private_fs::read_only(&tmp) && shm.is_dir() {
            return Self::create_in(prefix, &owner, shm).map_err(|e| named(shm, e));
        }
        match Self::create_in(prefix, &owner, &tmp) {
            Ok(rt) => Ok(rt),
            // Any other trouble with the temporary folder (missing, not
            // writable, a symlink): /dev/shm, as Python's tempfile tries
            // one folder after another.
            Err(first) if shm.is_dir() => match Self::create_in(prefix, &owner, shm) {
                Ok(rt) => {
                    tracing::warn!(
                        "the worker script's folder is in {SHM}: not in {}: {first}",
                        tmp.display()
                    );
                    Ok(rt)
                }
                Err(e) => Err(std::io::Error::new(
                    first.kind(),
                    format!(
                        "in {}: {first}; in {SHM}: {e}; give --worker-tmp-dir (or TMPDIR) a folder corral's user may write to",
                        tmp.display()
                    ),
                )),
            },
            Err(first) => Err(named(&tmp, first)),
        }
    }

    /// [`RuntimeDir::create`] in `place`.
    fn create_in(prefix: &str, owner: &Owner<'_>, place: &Path) -> std::io::Result<RuntimeDir> {
        let (place_path, place) = (place.to_path_buf(), open_place(place)?);
        if let Some(id) = owner.identity
            && nix::unistd::geteuid().is_root()
            && let Some(who) = fstat(&place).ok().and_then(|st| third_writer(&st, id))
        {
            tracing::warn!(
                "{}: {who} may write to it, and could replace the worker script that the workers (as {}) run from it; choose a folder only root and the workers' user can write to, or a sticky one such as /tmp",
                place_path.display(),
                id.user
            );
        }
        let named = format!("{prefix}{}-", std::process::id());
        let mut made = None;
        for _ in 0..100 {
            let name = OsString::from(random_name(&named));
            match make_dir_at(&place, &name, &place_path.join(&name)) {
                Ok(dir) => {
                    made = Some((name, dir));
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        let Some((name, dir)) = made else {
            return Err(std::io::Error::other(format!(
                "no free name for a folder in {}",
                place_path.display()
            )));
        };
        let mut rt = RuntimeDir {
            script: place_path
                .join(&name)
                .join(script::FOLDER)
                .join(script::SCRIPT),
            place,
            name,
            dir,
        };
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(rt.dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        rt.fill(owner)?;
        let swept = sweep(&rt.place, prefix);
        if swept.removed > 0 {
            tracing::info!(
                "removed {} worker folder(s) that killed corrals left in {}",
                swept.removed,
                place_path.display()
            );
        }
        if swept.stopped_early {
            tracing::info!(
                "looked for folders that killed corrals left in {} at only {SWEEP_LOOKS} of its entries, so that the start stays quick; the next start looks again",
                place_path.display()
            );
        }
        Ok(rt)
    }

    /// Writes the script and its package into the open folder, and gives
    /// them to `owner` (see the module doc), all through descriptors.
    fn fill(&mut self, owner: &Owner<'_>) -> std::io::Result<()> {
        let folder = make_dir_at(
            &self.dir,
            OsStr::new(script::FOLDER),
            Path::new(script::FOLDER),
        )?;
        let package = make_dir_at(
            &folder,
            OsStr::new(script::PACKAGE),
            &Path::new(script::FOLDER).join(script::PACKAGE),
        )?;
        let mut files = Vec::with_capacity(script::FILES.len());
        for (name, text) in script::FILES {
            let file = match name
                .strip_prefix(script::PACKAGE)
                .and_then(|n| n.strip_prefix('/'))
            {
                Some(inner) => write_new_at(&package, inner, text)?,
                None => write_new_at(&folder, name, text)?,
            };
            files.push(file);
        }
        let is_root = nix::unistd::geteuid().is_root();
        let (uid, gid, dir_mode, file_mode) = match owner.identity {
            Some(id) if is_root && owner.drop_privileges => (Some(id.uid), id.gid, 0o700, 0o600),
            Some(id) if is_root => (None, id.gid, 0o750, 0o640),
            _ => return Ok(()),
        };
        for file in &files {
            share(file, uid, gid, file_mode)?;
        }
        // The folder last: until then, nobody else may enter it.
        share(&package, uid, gid, dir_mode)?;
        share(&folder, uid, gid, dir_mode)?;
        share(&self.dir, uid, gid, dir_mode)
    }

    pub fn script(&self) -> &Path {
        &self.script
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = remove_contents(&self.dir, 0);
        remove_if_same(&self.place, &self.name, &self.dir);
    }
}

/// Removes the empty folder `name` in `place` if it is still the folder
/// open as `dir` (not one put in its place since).
fn remove_if_same(place: &File, name: &OsStr, dir: &File) {
    let (Ok(open), Ok(now)) = (
        fstat(dir),
        fstatat(place, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW),
    ) else {
        return;
    };
    if (open.st_dev, open.st_ino) == (now.st_dev, now.st_ino) {
        let _ = unlinkat(place, name, UnlinkatFlags::RemoveDir);
    }
}

/// Removes everything in the open folder `dir`, never following a
/// symlink (each entry is inspected and opened relative to `dir`).
fn remove_contents(dir: &File, depth: usize) -> std::io::Result<()> {
    let mut names = Vec::new();
    let mut listing = Dir::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io)?;
    for entry in listing.iter().flatten() {
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_owned());
        }
    }
    for name in names {
        let st = fstatat(
            dir,
            name.as_os_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(io)?;
        if st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits() {
            if depth >= REMOVE_DEPTH {
                return Err(std::io::Error::other("folders nested too deep"));
            }
            let sub =
                File::from(openat(dir, name.as_os_str(), dir_flags(), Mode::empty()).map_err(io)?);
            remove_contents(&sub, depth + 1)?;
            unlinkat(dir, name.as_os_str(), UnlinkatFlags::RemoveDir).map_err(io)?;
        } else {
            unlinkat(dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir).map_err(io)?;
        }
    }
    Ok(())
}

/// What one sweep did.
#[derive(Debug, Default, PartialEq)]
struct Swept {
    removed: usize,
    /// It looked at [`SWEEP_LOOKS`] entries and left the rest.
    stopped_early: bool,
}

/// Removes the folders in the open `place` named `{prefix}PID-...` that
/// belong to this user and that no corral holds locked (see the module
/// doc), looking at no more than [`SWEEP_LOOKS`] entries.
fn sweep(place: &File, prefix: &str) -> Swept {
    let mut swept = Swept::default();
    let Ok(mut listing) = Dir::openat(
        place,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        return swept;
    };
    let me = nix::unistd::geteuid().as_raw();
    for (looked, entry) in listing.iter().flatten().enumerate() {
        if looked >= SWEEP_LOOKS {
            swept.stopped_early = true;
            break;
        }
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
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
        // A folder of this user's, not a link: another user cannot make
        // one, and in a sticky /tmp cannot rename or replace it. Checked
        // again on the descriptor, which is what is removed from.
        let Ok(dir) = openat(place, name, dir_flags(), Mode::empty()).map(File::from) else {
            continue;
        };
        if fstat(&dir).map_or(true, |st| st.st_uid != me) {
            continue;
        }
        // SAFETY: flock on a descriptor this function owns.
        let free = unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if free && remove_contents(&dir, 0).is_ok() {
            remove_if_same(place, name, &dir);
            swept.removed += 1;
        }
    }
    swept
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
        let folder = rt.script().parent().unwrap().to_path_buf();
        assert!(folder.ends_with(script::FOLDER), "{}", folder.display());
        let path = folder.parent().unwrap().to_path_buf();
        for dir in [path.clone(), folder.clone(), folder.join(script::PACKAGE)] {
            let meta = std::fs::metadata(&dir).unwrap();
            assert_eq!(meta.mode() & 0o7777, 0o700, "{}", dir.display());
        }
        assert_eq!(rt.script(), folder.join(script::SCRIPT));
        for (name, text) in script::FILES {
            let file = folder.join(name);
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
        let place = open_place(parent.path()).unwrap();
        assert_eq!(sweep(&place, "corral-").removed, 1);
        assert!(!left.exists());
        for kept in [&mine, &older, &other, &locked] {
            assert!(kept.exists(), "{}", kept.display());
        }
        drop(lock);
        assert_eq!(sweep(&place, "corral-").removed, 1);
        assert!(!locked.exists());
    }

    /// A PID nobody runs here: a child that has exited and been reaped.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        dead
    }

    #[test]
    fn the_sweep_follows_no_symlink() {
        let t = tempfile::tempdir().unwrap();
        let place = t.path().join("place");
        std::fs::create_dir(&place).unwrap();
        // A folder of this user's elsewhere, with a file and a link in it.
        let elsewhere = t.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("precious"), "keep").unwrap();
        let dead = dead_pid();
        // A link named like a dead corral's folder, to that folder.
        std::os::unix::fs::symlink(&elsewhere, place.join(format!("corral-{dead}-link01")))
            .unwrap();
        // A dead corral's folder that holds a link to it.
        let left = place.join(format!("corral-{dead}-left01"));
        std::fs::create_dir(&left).unwrap();
        std::os::unix::fs::symlink(&elsewhere, left.join("corral_worker")).unwrap();
        let swept = sweep(&open_place(&place).unwrap(), "corral-");
        assert_eq!(swept.removed, 1, "{swept:?}");
        assert!(!left.exists());
        assert_eq!(
            std::fs::read_to_string(elsewhere.join("precious")).unwrap(),
            "keep"
        );
        assert!(place.join(format!("corral-{dead}-link01")).is_symlink());
    }

    #[test]
    fn the_sweep_looks_at_a_bounded_number_of_entries() {
        let t = tempfile::tempdir().unwrap();
        // Names like a corral's of PID 1, which always runs: each costs a
        // look at /proc (the filler an attacker would use).
        for n in 0..SWEEP_LOOKS + 500 {
            std::fs::File::create(t.path().join(format!("corral-1-{n}"))).unwrap();
        }
        let swept = sweep(&open_place(t.path()).unwrap(), "corral-");
        assert_eq!(
            swept,
            Swept {
                removed: 0,
                stopped_early: true
            }
        );
    }

    #[test]
    fn a_symlink_as_the_place_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let owner = || Owner {
            identity: None,
            drop_privileges: false,
        };
        let err = RuntimeDir::create("corral-test-", owner(), Some(&link))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("is a symlink"), "{err}");
        assert_eq!(std::fs::read_dir(&real).unwrap().count(), 0);
        let rt = RuntimeDir::create("corral-test-", owner(), Some(&real)).unwrap();
        assert!(rt.script().starts_with(&real));
        drop(rt);
        assert_eq!(
            std::fs::read_dir(&real).unwrap().count(),
            0,
            "removed on drop"
        );
    }

    #[test]
    fn a_place_a_third_user_may_write_to_is_named() {
        let id = Identity {
            user: "app".into(),
            uid: 1002,
            gid: 1002,
            groups: vec![1002],
        };
        let t = tempfile::tempdir().unwrap();
        let st = |mode: u32| {
            std::fs::set_permissions(t.path(), std::os::unix::fs::PermissionsExt::from_mode(mode))
                .unwrap();
            let mut st = fstat(open_place(t.path()).unwrap()).unwrap();
            st.st_uid = 0;
            st.st_gid = 0;
            st
        };
        assert_eq!(third_writer(&st(0o755), &id), None);
        assert_eq!(third_writer(&st(0o1777), &id), None);
        assert!(third_writer(&st(0o777), &id).unwrap().contains("any user"));
        let mut theirs = st(0o755);
        theirs.st_uid = 1002;
        assert_eq!(third_writer(&theirs, &id), None, "the workers' own");
        theirs.st_uid = 1003;
        assert!(third_writer(&theirs, &id).unwrap().contains("uid 1003"));
        let mut group = st(0o775);
        group.st_gid = 1002;
        assert_eq!(third_writer(&group, &id), None, "the workers' group");
        group.st_gid = 50;
        assert!(third_writer(&group, &id).unwrap().contains("group 50"));
    }

    /// What corral opens after `mkdirat` must be the private folder it
    /// made: a folder another user put at that name (theirs, or open to
    /// others) is not.
    #[test]
    fn only_a_private_folder_of_ours_passes_the_check() {
        let t = tempfile::tempdir().unwrap();
        let place = open_place(t.path()).unwrap();
        let name = OsStr::new("corral-1-swapped");
        // What an attacker's folder looks like to corral: not 0700.
        std::fs::create_dir(t.path().join("theirs")).unwrap();
        std::fs::set_permissions(
            t.path().join("theirs"),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let st = nix::sys::stat::stat(&t.path().join("theirs")).unwrap();
        assert!(not_ours(&st).unwrap().contains("mode 0777"));
        let dir = make_dir_at(&place, name, &t.path().join(name)).unwrap();
        assert_eq!(not_ours(&fstat(&dir).unwrap()), None);
    }
}
