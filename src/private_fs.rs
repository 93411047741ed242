//! Files and folders corral keeps for itself (the control socket's folder,
//! the state folder): checks that no other user can change them, and
//! writes that never leave a half-written file behind.
//!
//! The rule: corral only uses a folder that is not a symlink, belongs to
//! the user corral runs as (or to root), and that group and others cannot
//! write; otherwise another local user could swap what corral reads, or
//! put a socket of their own where corral's clients look for it. Where a
//! file may sit in a folder others may write to (log files, the pid file,
//! `unix:` binds), a corral running as root still needs every folder above
//! that one to be private ([`folders_above_not_private`]).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a folder is not private, or None when it is. `sticky_ok`: a
/// world-writable folder with the sticky bit (/tmp) owned by root counts
/// as private (nobody can remove or rename what another user put there).
pub fn not_private(dir: &Path, sticky_ok: bool) -> Option<String> {
    not_private_to(dir, sticky_ok, None)
}

/// [`not_private`], where the folder may also belong to `also` (the user
/// corral becomes with `drop_privileges`, who owns what corral made for
/// itself).
pub fn not_private_to(dir: &Path, sticky_ok: bool, also: Option<u32>) -> Option<String> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) => return Some(format!("cannot inspect it: {e}")),
    };
    if meta.file_type().is_symlink() {
        return Some("it is a symlink, which another user may have put there".into());
    }
    if !meta.is_dir() {
        return Some("it is not a folder".into());
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 && Some(meta.uid()) != also {
        return Some(format!(
            "it belongs to uid {}, not to uid {me} (corral's user) or root",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    // A folder of root's on a read-only mount counts as a sticky one: no
    // one may write to it here, but another mount of it (the one it was
    // made on) may be writable, where its mode is all that guards it. So
    // only root's and corral's user's links there are followed, and a
    // file there must be theirs, as in /tmp.
    let sticky = || meta.uid() == 0 && (mode & 0o1000 != 0 || mounted_read_only(dir));
    if mode & 0o022 != 0 && !(sticky_ok && sticky()) {
        return Some(format!("group or others may write to it (mode {mode:04o})"));
    }
    None
}

/// Whether the folder `dir` is on a file system mounted read-only here: a
/// Kubernetes ConfigMap or secret volume (a folder of root's, mode 0777
/// or 1777, always mounted read-only into the container). Only a folder
/// of root's counts, and only as a sticky one does (see
/// [`not_private_to`]): through another mount of the same folder (the
/// folder itself, bound read-only elsewhere; a unit's `ProtectHome=
/// read-only`), only its mode guards it, so a link or file of another
/// user's there is not taken.
fn mounted_read_only(dir: &Path) -> bool {
    nix::sys::statvfs::statvfs(dir)
        .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

/// Why a folder above the one that holds `path` is one that someone
/// other than root or corral's user may change, if one is, when corral
/// runs as root (`None` otherwise). Every folder on the way is checked, as
/// the path is resolved: each must belong to root or corral's user, and
/// group and others may not write to it unless it is root's and sticky
/// (/tmp); a symlink on the way is followed only when it belongs to root
/// or corral's user (it sits in a folder that passed), and the folders it
/// leads through are checked in turn. Otherwise whoever may change such a
/// folder could swap a folder below it for a symlink, and have root
/// create, append to, replace or delete a file in any folder of their
/// choosing. The folder that holds `path` itself is left to the caller's
/// own rule (see [`open_unfollowed`]); a folder that does not exist ends
/// the walk (nothing can be made there by another user: its folder passed).
pub fn folders_above_not_private(path: &Path) -> Option<String> {
    folders_not_private(path, false)
}

/// [`folders_above_not_private`], the folder that holds `path` included
/// (where the path's links lead): for a program corral runs as root.
fn folders_to_not_private(path: &Path) -> Option<String> {
    folders_not_private(path, true)
}

fn folders_not_private(path: &Path, holder_too: bool) -> Option<String> {
    use std::collections::VecDeque;
    use std::path::Component;
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let dir = folder_of(path).to_path_buf();
    let dir = if dir.is_absolute() {
        dir
    } else {
        match std::env::current_dir() {
            Ok(cwd) => cwd.join(dir),
            Err(e) => return Some(format!("cannot tell the current folder: {e}")),
        }
    };
    let not_private_on_the_way = |at: &Path| {
        let why = not_private_to(at, true, None).filter(|_| !system_group_writable(at))?;
        Some(format!(
            "the folder {0} on its way may be changed by another user ({why}); make it root's, \
             with no write access for group or others (chown root: {0}; chmod go-w {0}), or \
             choose a path whose folders only root can change",
            at.display()
        ))
    };
    let push_front = |todo: &mut VecDeque<std::ffi::OsString>, p: &Path| {
        for c in p.components().rev() {
            match c {
                Component::Normal(n) => todo.push_front(n.to_owned()),
                Component::ParentDir => todo.push_front("..".into()),
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
    };
    let mut todo = VecDeque::new();
    push_front(&mut todo, &dir);
    let mut at = PathBuf::from("/");
    let mut links = 0;
    let me = nix::unistd::geteuid().as_raw();
    while let Some(name) = todo.pop_front() {
        if name == ".." {
            at.pop();
            continue;
        }
        // `at` holds a folder on the way: it must be private.
        if let Some(why) = not_private_on_the_way(&at) {
            return Some(why);
        }
        let next = at.join(&name);
        let Ok(meta) = std::fs::symlink_metadata(&next) else {
            return None;
        };
        if meta.file_type().is_symlink() {
            if meta.uid() != me && meta.uid() != 0 {
                return Some(format!(
                    "{} on its way is a symlink that belongs to uid {}, not to root; \
                     give the real path, or remove the link",
                    next.display(),
                    meta.uid()
                ));
            }
            links += 1;
            let target = match std::fs::read_link(&next) {
                Ok(t) if links <= 40 => t,
                _ => return Some(format!("cannot resolve the symlink {}", next.display())),
            };
            if target.is_absolute() {
                at = PathBuf::from("/");
            }
            push_front(&mut todo, &target);
        } else {
            at = next;
        }
    }
    if holder_too {
        return not_private_on_the_way(&at);
    }
    None
}

/// The groups corral's workers run in (as root, with `workers.user`), set
/// once at start: [`folders_above_not_private`] lets a folder on the way
/// be writable by a system group only when the workers are not in it.
static WORKER_GROUPS: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();

/// Says which groups the workers run in ([`WORKER_GROUPS`]).
pub fn set_worker_groups(groups: Vec<u32>) {
    let _ = WORKER_GROUPS.set(groups);
}

/// Whether `dir` is root's, writable by its group but not by others, and
/// that group is a system one (below 1000) the workers are not in:
/// Ubuntu's `/var/log` (root:syslog 0775), where a root service's log
/// folders belong. Only the system daemon of that group could change it,
/// as logrotate, which takes a `su` for such folders, assumes too.
fn system_group_writable(dir: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(dir) else {
        return false;
    };
    let mode = meta.mode();
    meta.uid() == 0
        && mode & 0o002 == 0
        && meta.gid() < 1000
        && meta.gid() != 0
        && !WORKER_GROUPS
            .get()
            .is_some_and(|groups| groups.contains(&meta.gid()))
}

/// Opens `path` with `options`, adding `O_NOFOLLOW` when its folder is
/// one another user may change (so that no one can point corral at a file
/// elsewhere), and checks that what opened is a regular file. Returns the
/// file, its metadata and, for such a folder, why it is not private (the
/// caller's own checks on the file's owner depend on it).
///
/// Opened with `O_NONBLOCK`, cleared once the file is known to be regular:
/// opening a FIFO without it waits for its other end, so a FIFO that
/// another user put at the path would hang corral before any check ran.
pub fn open_unfollowed(
    path: &Path,
    options: &mut std::fs::OpenOptions,
) -> Result<(std::fs::File, std::fs::Metadata, Option<String>), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = folder_of(path);
    let shared = not_private(dir, false);
    let nofollow = if shared.is_some() {
        libc::O_NOFOLLOW
    } else {
        0
    };
    options.custom_flags(nofollow | libc::O_NOCTTY | libc::O_NONBLOCK);
    // The kernel refuses another user's link in a sticky folder itself
    // (`fs.protected_symlinks`: EACCES, even with O_NOFOLLOW and O_CREAT):
    // said as the link it is, as O_NOFOLLOW's ELOOP is.
    let link = |e: &std::io::Error| match e.raw_os_error() {
        Some(libc::ELOOP) => true,
        Some(libc::EACCES) => {
            shared.is_some()
                && std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
        }
        _ => false,
    };
    let file = options.open(path).map_err(|e| match e.raw_os_error() {
        _ if link(&e) => format!(
            "cannot open {}: it is a symlink in a folder another user may change ({}); \
             give the real path, or use a folder only corral's user or root can write to",
            path.display(),
            shared.as_deref().unwrap_or("")
        ),
        // A FIFO opened to write, without a reader.
        Some(libc::ENXIO) => format!("cannot open {}: {}", path.display(), not_regular(path)),
        _ => format!("cannot open {}: {e}", path.display()),
    })?;
    let meta = regular_only(&file).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    Ok((file, meta, shared))
}

/// Opens `path` with `options` so that no other user can point corral at
/// a file elsewhere: as root, every folder above the one that holds it
/// must be private ([`folders_above_not_private`]); in a holding folder
/// another user owns or may write to, a symlink is refused
/// ([`open_unfollowed`]), and so is a file with several hard links or one
/// that belongs to neither corral's user nor the folder's owner. The rule
/// of log files, and of the files corral reads as root that another user
/// must not swap for one of root's (a TLS key, the status token file).
pub fn open_guarded(
    path: &Path,
    options: &mut std::fs::OpenOptions,
) -> Result<(std::fs::File, std::fs::Metadata), String> {
    if let Some(why) = folders_above_not_private(path) {
        return Err(format!("refusing {}: {why}", path.display()));
    }
    let followed = follow_sticky_links(path);
    // Where links of root's led, the folders there are checked too.
    if followed != path
        && let Some(why) = folders_above_not_private(&followed)
    {
        return Err(format!("refusing {}: {why}", followed.display()));
    }
    let path = followed.as_path();
    let dir = folder_of(path);
    let (file, meta, shared) = open_unfollowed(path, options)?;
    if let Some(why) = shared {
        let me = nix::unistd::geteuid().as_raw();
        let dir_owner = std::fs::metadata(dir).map(|m| m.uid()).ok();
        if meta.uid() != me && Some(meta.uid()) != dir_owner {
            return Err(format!(
                "refusing {}: it belongs to uid {}, and its folder is not private ({why}); \
                 remove it, or chown it to corral's user",
                path.display(),
                meta.uid()
            ));
        }
        if meta.nlink() > 1 {
            return Err(format!(
                "refusing {}: it has {} hard links, and its folder is not private ({why})",
                path.display(),
                meta.nlink()
            ));
        }
    }
    Ok((file, meta))
}

/// `path` with the symlinks at its end followed as far as no other user
/// can change them: a link that belongs to root or corral's user and has
/// one name, in a folder of root's that others may write to only under
/// the sticky bit, where no one else can rename or remove it (the kernel's
/// own rule for links in such folders, `fs.protected_symlinks`). A
/// Kubernetes secret volume is such a folder: a tmpfs of mode 1777 whose
/// `tls.crt` leads through the `..data` link that each update swaps. Any
/// other link there is left for [`open_unfollowed`] to refuse; a link in
/// a private folder is left for the kernel to follow.
pub fn follow_sticky_links(path: &Path) -> PathBuf {
    let mut path = path.to_path_buf();
    for _ in 0..40 {
        if let Some(target) = sticky_link(&path) {
            path = folder_of(&path).join(target);
            continue;
        }
        // The folder it is in may be such a link too (`..data/tls.crt`).
        let dir = folder_of(&path);
        match (sticky_link(dir), path.file_name()) {
            (Some(target), Some(name)) => path = folder_of(dir).join(target).join(name),
            _ => break,
        }
    }
    path
}

/// The target of the link at `path` when [`follow_sticky_links`] follows
/// it: root's or corral's user's, one name, in a sticky folder of root's
/// that others may write to.
fn sticky_link(path: &Path) -> Option<PathBuf> {
    let me = nix::unistd::geteuid().as_raw();
    let meta = std::fs::symlink_metadata(path).ok()?;
    let dir = folder_of(path);
    let trusted = meta.file_type().is_symlink()
        && (meta.uid() == 0 || meta.uid() == me)
        && meta.nlink() == 1
        && not_private(dir, false).is_some()
        && not_private(dir, true).is_none();
    trusted.then(|| std::fs::read_link(path).ok()).flatten()
}

/// The bytes of the regular file at `path` under [`open_guarded`]'s rule.
pub fn read_guarded(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let (mut file, _) = open_guarded(path, std::fs::OpenOptions::new().read(true))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(bytes)
}

/// The bytes of the regular file at `path` (a symlink followed, as an
/// operator's own links are). Anything else is refused at once with an
/// error that says what it is: opened without `O_NONBLOCK`, a FIFO that
/// another user put where corral reads (`./corral.toml`, a certificate, a
/// token file) would hang corral before any check ran.
pub fn read_regular(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)?;
    regular_only(&file)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// [`read_regular`] as text.
pub fn read_regular_text(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read_regular(path)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "it is not UTF-8 text"))
}

/// The metadata of `file`, opened with `O_NONBLOCK`, when it is a regular
/// file, which then blocks again as files do; an error that says what it
/// is otherwise.
fn regular_only(file: &std::fs::File) -> std::io::Result<std::fs::Metadata> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            refusal(kind(&meta)),
        ));
    }
    let flags = OFlag::from_bits_truncate(fcntl(file, FcntlArg::F_GETFL)?);
    fcntl(file, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
    Ok(meta)
}

/// Why the node at `path` is refused, by what it is (when it can be
/// inspected).
fn not_regular(path: &Path) -> String {
    refusal(std::fs::metadata(path).ok().and_then(|m| kind(&m)))
}

/// Why a node that is no regular file is refused, naming what it is.
fn refusal(kind: Option<&str>) -> String {
    let what = kind.map_or("not a regular file".to_owned(), |k| {
        format!("{k}, not a regular file")
    });
    format!(
        "it is {what} (another user may have put it there); remove it, or give the path of a regular file"
    )
}

/// What kind of node `meta` describes, in words, for the kinds corral
/// may meet at a file's path.
fn kind(meta: &std::fs::Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_socket() {
        Some("a socket")
    } else if t.is_dir() {
        Some("a folder")
    } else if t.is_char_device() || t.is_block_device() {
        Some("a device")
    } else {
        None
    }
}

/// Whether `path`, or the nearest folder above it that exists, is on a
/// read-only file system (a read-only container's).
pub fn read_only(path: &Path) -> bool {
    path.ancestors()
        .find(|p| p.exists())
        .and_then(|p| nix::sys::statvfs::statvfs(p).ok())
        .is_some_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

/// Who besides corral's user and root may write to the file `meta`
/// describes, by its owner or its mode (its folder aside), if anyone.
pub fn writable_by_others(meta: &std::fs::Metadata) -> Option<String> {
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Some(format!("it belongs to uid {}", meta.uid()));
    }
    let mode = meta.mode() & 0o777;
    (mode & 0o022 != 0).then(|| format!("group or others may write to it (mode {mode:04o})"))
}

/// Who besides corral's user and root may change the file at `path`, if
/// anyone: its owner, group or others by its mode, or whoever may write
/// to its folder, where the links at its end lead as far as
/// [`open_guarded`] follows them (a Kubernetes volume's `..data`). `None`
/// when only corral's user or root can (or when it cannot be inspected:
/// opening it reports that).
pub fn changeable_by_others(path: &Path) -> Option<String> {
    let path = follow_sticky_links(path);
    let meta = std::fs::metadata(&path).ok()?;
    if let Some(why) = writable_by_others(&meta) {
        return Some(why);
    }
    let dir = folder_of(&path);
    not_private(dir, false).map(|why| format!("its folder {}: {why}", dir.display()))
}

/// Creates `dir` (and any missing parent) with `mode`, as a new folder
/// only: a parent that exists is left as it is.
pub fn create_dir(dir: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)?;
    // The umask may have taken bits away; the folder is ours to set.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

/// Replaces `dir/name` with `contents` (mode 0600) so that a reader sees
/// the old file or the new one, never a part: a temporary file with a
/// unique name, flushed to disk, renamed over the old one, and the folder
/// flushed so the rename survives a crash.
pub fn write_atomic(dir: &Path, name: &str, contents: &[u8]) -> std::io::Result<()> {
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    tmp.persist(dir.join(name)).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Whether `path` is a Unix socket (not following a symlink).
pub fn is_socket(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// Binds a Unix socket at `path` with `mode`, owned by `owner` (uid, gid)
/// when given: created under umask 077, so that no one else can connect
/// in the moment before the chmod; the owner and mode are then set through
/// a descriptor opened without following a symlink, so that whoever may
/// write to the folder cannot swap in a link and have corral chmod or
/// chown another file.
pub fn bind_unix(
    path: &Path,
    mode: u32,
    owner: Option<(u32, u32)>,
) -> std::io::Result<std::os::unix::net::UnixListener> {
    use nix::sys::stat::{Mode, umask};
    use std::os::fd::AsRawFd;
    let old = umask(Mode::from_bits_truncate(0o077));
    let bound = std::os::unix::net::UnixListener::bind(path);
    umask(old);
    let listener = bound?;
    let node = open_node(path, false)?;
    if !node.metadata()?.file_type().is_socket() {
        return Err(std::io::Error::other(
            "the socket's path was replaced as it was bound (by whoever may write to its folder)",
        ));
    }
    // The magic link names the node opened above, whatever the path is now.
    let this = format!("/proc/self/fd/{}", node.as_raw_fd());
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&this, Some(uid), Some(gid))?;
    }
    std::fs::set_permissions(&this, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// Opens the node at `path` itself (`O_PATH`: no read or write, so a
/// socket opens too), following a symlink only when `follow`, for checks
/// and changes that must reach the node that was checked (through
/// `/proc/self/fd/N`). Through `open(2)` directly: the standard library
/// drops `O_PATH` from custom flags on musl, whose `O_ACCMODE` holds it.
pub fn open_node(path: &Path, follow: bool) -> std::io::Result<std::fs::File> {
    use nix::fcntl::OFlag;
    let mut flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
    if !follow {
        flags |= OFlag::O_NOFOLLOW;
    }
    let fd = nix::fcntl::open(path, flags, nix::sys::stat::Mode::empty())?;
    Ok(std::fs::File::from(fd))
}

/// The permissions a file made now would get by default: 0666 under the
/// process umask (read without changing it for long).
pub fn default_mode() -> u32 {
    use nix::sys::stat::{Mode, umask};
    let old = umask(Mode::from_bits_truncate(0o077));
    umask(old);
    0o666 & !old.bits()
}

/// The folder `path` is in (`.` for a bare name).
pub fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `program` as a command runs it: a path as it is, a bare name the
/// first file of that name in `PATH`.
pub fn which(program: &Path) -> Option<PathBuf> {
    if program.as_os_str().as_encoded_bytes().contains(&b'/') {
        return Some(program.to_path_buf());
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Why corral, as root, must not run `argv`: its program, or a file an
/// argument names (by an absolute path, or relative to `dir`, where the
/// command runs: `["python3", "hook.py"]` runs `hook.py`), can be changed
/// by someone other than root (or corral's user), by the file's owner or
/// mode or through any folder above it; or the program is Python and
/// imports first from a folder someone else may add a module to
/// ([`python_path_head`]: `["python3", "-m", "mod"]` imports `mod` from
/// `dir` before the standard library). None when corral is not root, or
/// when nobody else can.
pub fn untrusted_command(argv: &[String], dir: Option<&std::path::Path>) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let (program, args) = argv.split_first()?;
    let program = which(Path::new(program))?;
    if let Some(head) = python_path_head(&program, args, dir)
        && let Some(why) = code_folder_not_private(&head)
    {
        return Some(format!(
            "`{}` puts {} first on Python's import path, and {why}: anyone who can add a module \
                 there (a {}.py of their own) could run code as root. Make the folder and the \
                 folders above it root's and writable by no one else (chown root, chmod go-w), \
                 give Python -P (3.11 and later: no such folder on the path), or run the \
                 command as the app's user, e.g. [\"runuser\", \"-u\", \"USER\", \"--\", ...]",
            argv.join(" ").escape_debug(),
            head.display(),
            python_module(args).unwrap_or("module"),
        ));
    }
    let named = args.iter().filter_map(|a| {
        let path = PathBuf::from(a);
        match dir {
            _ if path.is_absolute() => Some(path),
            Some(dir) => Some(dir.join(path)),
            None => None,
        }
    });
    let files = std::iter::once(program).chain(named.filter(|p| p.is_file()));
    for file in files {
        if let Some(why) = changeable(&file) {
            return Some(format!(
                "{} can be changed by others ({why}), and corral runs as root: anyone who can change it \
                 could run code as root. Make it and the folders above it root's and writable by no \
                 one else (chown root, chmod go-w), or run the command as the app's user, e.g. \
                 [\"runuser\", \"-u\", \"USER\", \"--\", ...]",
                file.display()
            ));
        }
    }
    None
}

/// The folder Python puts first on `sys.path` when `program` is a Python
/// interpreter run with `args` in `dir`, where no file check of
/// [`untrusted_command`]'s covers it: the working folder for `-m`, `-c`,
/// `-` and no script at all; a script that is a folder (its
/// `__main__.py`). None for another program, with `-P` before the `-m` or
/// `-c` (Python 3.11's "safe path"), and for a script file (its own
/// folder is checked with it).
fn python_path_head(program: &Path, args: &[String], dir: Option<&Path>) -> Option<PathBuf> {
    let name = program.file_name()?.to_str()?;
    if name == "env" {
        // `env [NAME=VALUE]... python3 -m mod`: the program env runs.
        let at = args
            .iter()
            .position(|a| !a.contains('=') && !a.starts_with('-'))?;
        return python_path_head(Path::new(&args[at]), &args[at + 1..], dir);
    }
    let version = name
        .strip_prefix("python")
        .or_else(|| name.strip_prefix("pypy"))?;
    if !version.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let cwd = || {
        dir.map(Path::to_path_buf)
            .or_else(|| std::env::current_dir().ok())
    };
    // A script that is a folder runs its `__main__.py`, the folder first on
    // the path; a script file's folder is checked with the file.
    let folder_script = |script: &str| {
        let script = dir.map_or_else(|| PathBuf::from(script), |d| d.join(script));
        script.is_dir().then_some(script)
    };
    let mut safe = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-" => return if safe { None } else { cwd() },
            "--" => break,
            a if a.starts_with("--") => {
                if a == "--check-hash-based-pycs" {
                    args.next();
                }
            }
            a if a.starts_with('-') => {
                for (i, c) in a.char_indices().skip(1) {
                    match c {
                        'P' => safe = true,
                        'm' | 'c' => return if safe { None } else { cwd() },
                        'W' | 'X' => {
                            if i + 1 == a.len() {
                                args.next();
                            }
                            break;
                        }
                        _ => {}
                    }
                }
            }
            script => return folder_script(script),
        }
    }
    // `--` then the script, or no script: Python reads stdin (closed).
    match args.next() {
        Some(script) => folder_script(script),
        None if safe => None,
        None => cwd(),
    }
}

/// The module `-m` names in a Python command's `args`, for a message.
fn python_module(args: &[String]) -> Option<&str> {
    let at = args.iter().position(|a| a == "-m")?;
    args.get(at + 1).map(String::as_str)
}

/// Why corral, as root, must not run Python code found in the folder
/// `dir` (a module a program imports from it): `dir`, or a folder above
/// it, can be changed by someone other than root or corral's user. None
/// when corral is not root, or when nobody else can. Unlike a folder on
/// the way, a sticky one (`/tmp`) does not pass: anyone may add a module
/// to it.
pub fn code_folder_not_private(dir: &Path) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    folders_above_not_private(&dir.join("_")).or_else(|| {
        let real = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        not_private(&real, false)
            .filter(|_| !system_group_writable(&real))
            .map(|why| format!("the folder {}: {why}", real.display()))
    })
}

/// Why corral, as root, must not start `python`: a folder it imports from
/// at start (its standard library, its site-packages, a virtualenv's) or a
/// `.pth` file there (whose `import` lines Python runs at start, before
/// any code of corral's) can be changed by someone other than root or
/// corral's user. The folders are `python`'s own answer, asked with `-I
/// -S` (no site-packages, no `.pth`, no environment); a virtualenv's and
/// the base install's site-packages are both checked. None when corral is
/// not root, or when nobody else can.
pub fn untrusted_python_paths(python: &Path) -> Option<String> {
    use std::io::Read;
    const PROBE: &str = "import json, os, site, sys\n\
        prefixes = [sys.prefix, sys.exec_prefix]\n\
        venv = os.path.dirname(os.path.dirname(os.path.abspath(sys.executable)))\n\
        if os.path.isfile(os.path.join(venv, 'pyvenv.cfg')):\n    prefixes.insert(0, venv)\n\
        dirs = list(sys.path) + site.getsitepackages(prefixes) + [site.getusersitepackages()]\n\
        print(json.dumps(dirs))\n";
    /// At most this many entries of a site-packages folder are looked at.
    const MOST_ENTRIES: usize = 10_000;
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let mut child = std::process::Command::new(python)
        .args(["-I", "-S", "-c", PROBE])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    // Read on a thread of its own, so that a Python that never exits
    // cannot hold corral's start: killed after 10 s.
    let stdout = child.stdout.take()?;
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        stdout.take(1 << 20).read_to_end(&mut out).map(|_| out)
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    let Ok(Ok(out)) = reader.join() else {
        return Some(format!(
            "cannot ask {} where it imports from",
            python.display()
        ));
    };
    let Ok(dirs) = serde_json::from_slice::<Vec<String>>(&out) else {
        return Some(format!(
            "cannot ask {} where it imports from (it printed no list of folders)",
            python.display()
        ));
    };
    for dir in dirs.iter().map(Path::new).filter(|d| d.is_dir()) {
        if let Some(why) = code_folder_not_private(dir) {
            return Some(format!("it imports from {}: {why}", dir.display()));
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten().take(MOST_ENTRIES) {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "pth") {
                if let Some(why) = changeable(&path) {
                    return Some(format!("it runs {} at start: {why}", path.display()));
                }
                if let Some(why) = pth_folders_not_private(dir, &path) {
                    return Some(why);
                }
            }
        }
    }
    None
}

/// Why a folder the `.pth` file `pth` (in the site-packages folder
/// `site`) puts on Python's path can be changed by someone other than
/// root or corral's user, if one can: Python imports `sitecustomize` and
/// `usercustomize` from its path at start, so whoever may add a module to
/// such a folder (an editable install's source tree, the app's) runs code
/// as root. A line is a folder unless it is empty, a comment or an
/// `import` line, as `site.addpackage` reads it; folders not there are
/// not added.
fn pth_folders_not_private(site: &Path, pth: &Path) -> Option<String> {
    use std::io::Read;
    let mut text = Vec::new();
    std::fs::File::open(pth)
        .ok()?
        .take(1 << 20)
        .read_to_end(&mut text)
        .ok()?;
    let text = String::from_utf8_lossy(&text);
    text.lines()
        .map(str::trim_end)
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with('#')
                && !l.starts_with("import ")
                && !l.starts_with("import\t")
        })
        .map(|l| site.join(l))
        .filter(|d| d.is_dir())
        .find_map(|d| {
            code_folder_not_private(&d).map(|why| {
                format!(
                    "{} puts {} on its path, where it imports sitecustomize from at start: {why}",
                    pth.display(),
                    d.display()
                )
            })
        })
}

/// Who besides root (or corral's user) may change the program `program`
/// runs as a command (a bare name looked up in `PATH`), when corral runs
/// as root: the file where its links lead, or a folder on the way to it.
pub fn program_changeable(program: &Path) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    changeable(&which(program)?)
}

/// Who besides root (or corral's user) may change `file`: the file where
/// its links lead, or any folder on the way to it.
fn changeable(file: &Path) -> Option<String> {
    let meta = std::fs::metadata(file).ok()?;
    writable_by_others(&meta).or_else(|| folders_to_not_private(file))
}

/// Why the user `uid` (primary group `gid`, supplementary `groups`) cannot
/// get at `path` by its mode bits: a folder on the way it may not search,
/// or the file itself it may not read (`exec`: nor run). None when it can,
/// or when a folder cannot be looked at. Mode bits only (no ACLs): for a
/// warning, never a refusal.
pub fn unreachable_for(
    path: &Path,
    uid: u32,
    gid: u32,
    groups: &[u32],
    exec: bool,
) -> Option<String> {
    if uid == 0 {
        return None;
    }
    // A symlink's folders, then its target's (a virtualenv's python
    // points into the folder its interpreter was installed in).
    let real = std::fs::canonicalize(path).ok()?;
    [path, real.as_path()]
        .into_iter()
        .find_map(|p| unreachable_path(p, uid, gid, groups, exec))
}

fn unreachable_path(path: &Path, uid: u32, gid: u32, groups: &[u32], exec: bool) -> Option<String> {
    let may = |meta: &std::fs::Metadata, bits: u32| {
        let mode = meta.mode();
        let class = if meta.uid() == uid {
            mode >> 6
        } else if meta.gid() == gid || groups.contains(&meta.gid()) {
            mode >> 3
        } else {
            mode
        };
        class & bits == bits
    };
    let mut folders: Vec<&Path> = path.ancestors().skip(1).collect();
    folders.reverse();
    for folder in folders.into_iter().filter(|f| !f.as_os_str().is_empty()) {
        let meta = std::fs::metadata(folder).ok()?;
        if !may(&meta, 0o1) {
            return Some(format!(
                "it may not enter {} (mode {:o}, owner uid {}, group {})",
                folder.display(),
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid()
            ));
        }
    }
    let meta = std::fs::metadata(path).ok()?;
    let bits = if meta.is_dir() || exec { 0o5 } else { 0o4 };
    (!may(&meta, bits)).then(|| {
        format!(
            "it may not {} {} (mode {:o}, owner uid {}, group {})",
            if exec && !meta.is_dir() {
                "run"
            } else {
                "read"
            },
            path.display(),
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_imports_first_from_the_working_folder_with_m_and_c_and_from_a_folder_script() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        std::fs::create_dir(dir.join("pkg")).unwrap();
        std::fs::write(dir.join("hook.py"), "").unwrap();
        let head = |program: &str, args: &[&str]| {
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            python_path_head(Path::new(program), &args, Some(dir))
        };
        let cwd = Some(dir.to_path_buf());
        for python in ["/usr/bin/python3", "python3.11", "python", "/opt/pypy3.10"] {
            assert_eq!(head(python, &["-m", "mod"]), cwd, "{python}");
        }
        assert_eq!(head("python3", &["-u", "-X", "dev", "-Bmmod"]), cwd);
        assert_eq!(head("/usr/bin/env", &["A=1", "python3", "-m", "mod"]), cwd);
        assert_eq!(head("/usr/bin/env", &["python3", "hook.py"]), None);
        assert_eq!(head("python3", &["-W", "error", "-c", "import mod"]), cwd);
        assert_eq!(head("python3", &["-I", "-m", "mod"]), cwd);
        assert_eq!(head("python3", &["-"]), cwd);
        assert_eq!(head("python3", &[]), cwd);
        assert_eq!(head("python3", &["pkg"]), Some(dir.join("pkg")));
        assert_eq!(head("python3", &["--", "pkg"]), Some(dir.join("pkg")));
        // A script file: its folder is checked with the file.
        assert_eq!(head("python3", &["hook.py", "-m", "x"]), None);
        // Python 3.11's safe path, and programs that are not Python.
        assert_eq!(head("python3", &["-P", "-m", "mod"]), None);
        assert_eq!(head("python3", &["-Pm", "mod"]), None);
        assert_eq!(head("/usr/bin/python3-config", &["-m"]), None);
        assert_eq!(head("sh", &["-c", "x"]), None);
        assert_eq!(head("pythonic", &["-m", "x"]), None);
    }

    #[test]
    fn only_folders_no_one_else_can_write_are_private() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("d");
        create_dir(&dir.join("sub"), 0o700).unwrap();
        assert_eq!(not_private(&dir.join("sub"), false), None);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(not_private(&dir, false).unwrap().contains("mode 0777"));
        std::os::unix::fs::symlink(&dir, t.path().join("link")).unwrap();
        assert!(
            not_private(&t.path().join("link"), false)
                .unwrap()
                .contains("symlink")
        );
        // /tmp: world-writable, sticky, root's.
        assert!(not_private(Path::new("/tmp"), false).is_some());
        assert_eq!(not_private(Path::new("/tmp"), true), None);
    }

    #[test]
    fn as_root_a_folder_on_the_way_a_system_group_may_write_passes_unless_workers_are_in_it() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: needs root (to give folders to groups)");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        // Ubuntu's /var/log: root:syslog 0775 (here the group adm, 4).
        let log = t.path().join("log");
        create_dir(&log.join("app"), 0o755).unwrap();
        std::os::unix::fs::chown(&log, Some(0), Some(4)).unwrap();
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o775)).unwrap();
        let file = log.join("app/error.log");
        assert_eq!(folders_above_not_private(&file), None);
        // A group of users' (1000 and up), or one others may write, does not.
        std::os::unix::fs::chown(&log, Some(0), Some(4242)).unwrap();
        assert!(folders_above_not_private(&file).is_some());
        std::os::unix::fs::chown(&log, Some(0), Some(4)).unwrap();
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(folders_above_not_private(&file).is_some());
        // The workers in that group: refused (set once for this process,
        // with a group no other test gives a folder).
        std::os::unix::fs::chown(&log, Some(0), Some(7)).unwrap();
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o775)).unwrap();
        set_worker_groups(vec![7]);
        assert!(folders_above_not_private(&file).is_some());
    }

    #[test]
    fn as_root_every_folder_on_the_way_must_be_private() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: needs root (to own folders as another user)");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let nobody = Some(65534);
        let theirs = t.path().join("theirs");
        create_dir(&theirs.join("logs"), 0o755).unwrap();
        // The folder that holds the file is left to the caller's rule.
        std::os::unix::fs::chown(theirs.join("logs"), nobody, nobody).unwrap();
        assert_eq!(
            folders_above_not_private(&theirs.join("logs/app.log")),
            None
        );
        // One above it is not.
        std::os::unix::fs::chown(&theirs, nobody, nobody).unwrap();
        let why = folders_above_not_private(&theirs.join("logs/app.log")).unwrap();
        assert!(
            why.contains(&format!("the folder {}", theirs.display())),
            "{why}"
        );
        assert!(why.contains("belongs to uid 65534"), "{why}");
        assert!(why.contains("chmod go-w"), "{why}");
        // Group-writable is not private either; a sticky root folder is.
        let shared = t.path().join("shared");
        create_dir(&shared.join("logs"), 0o755).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o775)).unwrap();
        let why = folders_above_not_private(&shared.join("logs/app.log")).unwrap();
        assert!(why.contains("mode 0775"), "{why}");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(
            folders_above_not_private(&shared.join("logs/app.log")),
            None
        );
        // A root symlink on the way is followed, and where it leads is
        // checked in turn; another user's symlink is refused.
        let link = t.path().join("link");
        std::os::unix::fs::symlink(theirs.join("logs"), &link).unwrap();
        let why = folders_above_not_private(&link.join("sub/app.log")).unwrap();
        assert!(
            why.contains(&format!("the folder {}", theirs.display())),
            "{why}"
        );
        std::fs::remove_file(&link).unwrap();
        let private = t.path().join("private");
        create_dir(&private.join("logs"), 0o755).unwrap();
        std::os::unix::fs::symlink(&private, &link).unwrap();
        assert_eq!(folders_above_not_private(&link.join("logs/app.log")), None);
        std::os::unix::fs::lchown(&link, nobody, nobody).unwrap();
        let why = folders_above_not_private(&link.join("logs/app.log")).unwrap();
        assert!(
            why.contains("is a symlink that belongs to uid 65534"),
            "{why}"
        );
        // `..` goes up from where a symlink led, as the kernel does.
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(theirs.join("logs"), &link).unwrap();
        let why = folders_above_not_private(&link.join("../logs/app.log")).unwrap();
        assert!(
            why.contains(&format!("the folder {}", theirs.display())),
            "{why}"
        );
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_its_other_end() {
        let t = tempfile::tempdir().unwrap();
        let fifo = t.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // Without O_NONBLOCK each of these would wait for a writer or a
        // reader that never comes.
        let err = read_regular(&fifo).unwrap_err();
        assert!(err.to_string().contains("it is a FIFO"), "{err}");
        for options in [
            std::fs::OpenOptions::new().read(true),
            std::fs::OpenOptions::new().append(true).create(true),
        ] {
            let err = open_unfollowed(&fifo, options).unwrap_err();
            assert!(err.contains("it is a FIFO, not a regular file"), "{err}");
        }
        // A regular file opens, and blocks again as files do.
        std::fs::write(t.path().join("f"), "x").unwrap();
        assert_eq!(read_regular(&t.path().join("f")).unwrap(), b"x");
        let mut options = std::fs::OpenOptions::new();
        let (file, ..) = open_unfollowed(&t.path().join("f"), options.read(true)).unwrap();
        let flags = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL).unwrap();
        assert_eq!(flags & libc::O_NONBLOCK, 0);
    }

    #[test]
    fn a_bound_socket_gets_its_mode_and_owner_through_its_own_node() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.sock");
        let root = nix::unistd::geteuid().is_root();
        let owner = root.then_some((65534, 65534));
        let _l = bind_unix(&path, 0o770, owner).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.mode() & 0o777, 0o770);
        if root {
            assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
        }
        // A second bind at a path that is taken fails, and changes nothing.
        assert!(bind_unix(&path, 0o777, None).is_err());
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o770);
    }

    #[test]
    fn atomic_writes_replace_whole_files_privately() {
        let t = tempfile::tempdir().unwrap();
        write_atomic(t.path(), "rev", b"one\n").unwrap();
        write_atomic(t.path(), "rev", b"two\n").unwrap();
        assert_eq!(std::fs::read(t.path().join("rev")).unwrap(), b"two\n");
        let mode = std::fs::metadata(t.path().join("rev")).unwrap().mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(t.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "no temporary file left behind");
    }
}
