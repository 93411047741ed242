//! Log files corral writes itself (`[log] error_file`, `access_file`) and
//! its pid file: opened for appending so that no other local user can
//! point corral at a file of their choosing, and reopened at the same path
//! on SIGUSR1 ([`reopen_all`]), as gunicorn does for logrotate.
//!
//! The rule for opening (see also `private_fs`): in a folder only corral's
//! user or root may write to, the path is opened as given (an operator's
//! symlink is followed). In any other folder (another user's, or one others
//! may write to, like /tmp) a symlink is refused (`O_NOFOLLOW`), and so is a
//! file with more than one link or one owned by neither corral's user nor
//! the folder's owner: otherwise that user could make corral append to, or
//! create, a file elsewhere.
//!
//! Run as root, corral also refuses a log file or pid file whose path goes
//! through a folder, above the one that holds it, that another user may
//! change (see [`private_fs::folders_above_not_private`]): that user could
//! swap a folder below it for a symlink, and the rule above, which looks
//! at the last folder only, would then apply in a folder of their choosing.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::private_fs;

/// A log file that can be reopened at its path.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
    /// Lines that could not be written since the last that could (a full
    /// disk, a quota): said on stderr when it starts, and in the file when
    /// writing works again.
    lost: AtomicU64,
}

/// Every log file opened, for [`reopen_all`].
fn registry() -> &'static Mutex<Vec<Arc<LogFile>>> {
    static FILES: OnceLock<Mutex<Vec<Arc<LogFile>>>> = OnceLock::new();
    FILES.get_or_init(Mutex::default)
}

impl LogFile {
    /// Opens `path` for appending (see the module's rule) and registers it
    /// for [`reopen_all`].
    pub fn open(path: &Path) -> Result<Arc<LogFile>, String> {
        let file = open_append(path)?;
        let log = Arc::new(LogFile {
            path: path.to_owned(),
            file: Mutex::new(file),
            lost: AtomicU64::new(0),
        });
        registry()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(log.clone());
        Ok(log)
    }

    /// Writes `bytes` in one piece (whole lines stay whole under
    /// `O_APPEND`). Lines that cannot be written (a full disk) are lost,
    /// and counted: the first loss is said on stderr, and the count in the
    /// file once a write works again.
    pub fn write_all(&self, bytes: &[u8]) {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let lost = self.lost.load(Ordering::Relaxed);
        if lost > 0 {
            let notice = format!(
                "corral: {lost} line(s) of this log were lost: they could not be written to {}\n",
                self.path.display()
            );
            if file.write_all(notice.as_bytes()).is_ok() {
                self.lost.store(0, Ordering::Relaxed);
            }
        }
        if let Err(e) = file.write_all(bytes) {
            let lines = bytes.iter().filter(|&&b| b == b'\n').count().max(1) as u64;
            if self.lost.fetch_add(lines, Ordering::Relaxed) == 0 {
                let _ = crate::stdio::stderr().write_all(
                    format!(
                        "corral: cannot write to the log file {}: {e}; its lines are lost, and counted there, until it can\n",
                        self.path.display()
                    )
                    .as_bytes(),
                );
            }
        }
    }

    /// Opens the path again and writes there from now on; on failure the
    /// old file is kept.
    fn reopen(&self) -> Result<(), String> {
        let fresh = open_append(&self.path)?;
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }
}

/// A writer for `tracing_subscriber` over a [`LogFile`].
pub struct Writer(pub Arc<LogFile>);

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reopens every log file (SIGUSR1); returns each path with the error, if
/// its reopening failed.
pub fn reopen_all() -> Vec<(PathBuf, Option<String>)> {
    let files = registry().lock().unwrap_or_else(|e| e.into_inner()).clone();
    files
        .iter()
        .map(|f| (f.path.clone(), f.reopen().err()))
        .collect()
}

/// Opens `path` for appending, created mode 0640, under the module's rule.
/// `/dev/null` (gunicorn's `--error-logfile /dev/null`, for no log) is
/// the one device taken: what is written there is gone, as asked.
fn open_append(path: &Path) -> Result<File, String> {
    if path == Path::new("/dev/null") {
        return std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()));
    }
    let mut options = std::fs::OpenOptions::new();
    options.append(true).create(true).mode(0o640);
    private_fs::open_guarded(path, &mut options).map(|(file, _)| file)
}

/// A pid file, removed when the guard is dropped (whatever path `run`
/// leaves by) if it still names this process.
///
/// A corral started by a USR2 re-exec does not take the file over until it
/// is in service ([`PidFile::take_over`]): until then it is written beside
/// the path and the old corral's stays, so a new corral that never comes
/// up leaves it as it was, naming the old one that serves on. A corral
/// started beside another under `--reuse-port` takes the file over at once
/// and, at its exit, gives it back to that one if it still runs.
pub struct PidFile {
    path: PathBuf,
    /// Written beside the path, until [`PidFile::take_over`] renames it
    /// there; `None` once it is at the path.
    staged: Mutex<Option<tempfile::NamedTempFile>>,
    /// The corral the file named when this one took it over, running
    /// beside this one (`--reuse-port`).
    before: Option<u32>,
}

impl PidFile {
    /// Writes this process's pid to `path`, unless the file names another
    /// corral that still runs ([`refuse_a_running_corral`]). `handover`: the
    /// pid of the corral whose USR2 started this one (it runs until this one
    /// is in service, and its pid is in the file): the file is only made
    /// ready beside the path, for [`PidFile::take_over`]; `beside`:
    /// `--reuse-port`, under which a second corral is started beside the
    /// first on purpose.
    pub fn create(path: &Path, handover: Option<u32>, beside: bool) -> Result<PidFile, String> {
        let before = refuse_a_running_corral(path, handover, beside)?;
        let staged = stage_pid_file(path, std::process::id())?;
        let pid_file = PidFile {
            path: path.to_owned(),
            staged: Mutex::new(Some(staged)),
            before,
        };
        if handover.is_none() {
            pid_file.take_over()?;
        }
        Ok(pid_file)
    }

    /// Puts the file made ready at start at the path (a corral started by
    /// USR2 does it once it is in service, before it asks the old one to
    /// stop). Does nothing the second time.
    pub fn take_over(&self) -> Result<(), String> {
        let staged = self.staged.lock().unwrap_or_else(|e| e.into_inner()).take();
        match staged {
            Some(tmp) => tmp.persist(&self.path).map(drop).map_err(|e| {
                format!(
                    "cannot write the pid file {}: {}",
                    self.path.display(),
                    e.error
                )
            }),
            None => Ok(()),
        }
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Never taken over: the file made ready beside the path goes (the
        // temporary file's own drop), and the path is left as it is.
        let staged = self.staged.get_mut().unwrap_or_else(|e| e.into_inner());
        if staged.is_some() {
            return;
        }
        release_pid_file(&self.path, self.before);
    }
}

/// Refuses a pid file that names another corral that still runs: two
/// corrals on one pid file would leave it naming the last one started, and
/// `kill $(cat FILE)` would stop the wrong one. gunicorn refuses any live
/// process there ("Already running on PID N (or pid file is stale)"),
/// which keeps a service down after a crash once an unrelated process has
/// the old pid (common in containers and after a reboot); corral refuses
/// only a corral, and replaces a stale file or one naming another program,
/// saying so. Not refused: this process's own pid (PID 1 of a container
/// started again), the corral that handed over to this one by USR2, and any
/// corral under `--reuse-port`, where the next is started beside the last
/// on purpose (the file then names the newest, as before): that corral's
/// pid is returned, to give the file back to at exit.
fn refuse_a_running_corral(
    path: &Path,
    handover: Option<u32>,
    beside: bool,
) -> Result<Option<u32>, String> {
    let text = match private_fs::read_regular_text(path) {
        Ok(text) => text,
        // None yet, or not one corral would have written: replaced.
        Err(_) => return Ok(None),
    };
    let Ok(pid) = text.trim().parse::<u32>() else {
        tracing::info!("replacing the pid file {}: it holds no pid", path.display());
        return Ok(None);
    };
    if pid == std::process::id() || Some(pid) == handover {
        return Ok(None);
    }
    match running_program(pid) {
        None => {
            tracing::info!(
                "replacing the stale pid file {}: pid {pid} no longer runs",
                path.display()
            );
            Ok(None)
        }
        Some(program) if !is_corral(&program) => {
            tracing::warn!(
                "replacing the stale pid file {}: pid {pid} is now {program}, not a corral (the pid was reused)",
                path.display()
            );
            Ok(None)
        }
        Some(_) if beside => {
            tracing::info!(
                "the pid file {} named corral pid {pid}, which runs beside this one (--reuse-port): it now names this one, and names pid {pid} again when this one stops before it",
                path.display()
            );
            Ok(Some(pid))
        }
        Some(_) => Err(format!(
            "the pid file {} names corral pid {pid}, which is still running: stop that corral first, or give this one a pid file of its own (--pid, [server] pid_file)",
            path.display()
        )),
    }
}

/// The file name of the program process `pid` runs, `None` when no such
/// process lives (or it is a zombie). It is the name of `/proc/PID/exe`,
/// which the kernel sets at exec and the process cannot change (unlike its
/// `cmdline` or `comm`: a worker may name itself "corral: ..."); when that
/// link may not be read (another user's process, without root), the first
/// word of its `cmdline`.
fn running_program(pid: u32) -> Option<String> {
    let name = |p: &Path| {
        p.file_name().map(|n| {
            n.to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_owned()
        })
    };
    match std::fs::read_link(format!("/proc/{pid}/exe")) {
        Ok(exe) => name(&exe),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let arg0 = cmdline
                .split(|b| *b == 0)
                .next()
                .filter(|a| !a.is_empty())?;
            name(Path::new(&*String::from_utf8_lossy(arg0)))
        }
        Err(_) => None,
    }
}

/// Whether a program of this file name is a corral: named as this one's
/// executable is (an upgrade leaves the old one running under the same
/// name, its file deleted), or plain `corral`.
fn is_corral(program: &str) -> bool {
    program == "corral" || running_program(std::process::id()).is_some_and(|ours| ours == program)
}

/// A pid file naming `pid`, made ready beside `path` (mode 0644) for
/// `persist`, which renames it over the path: the file is written whole,
/// and a symlink at the path is replaced, not followed.
fn stage_pid_file(path: &Path, pid: u32) -> Result<tempfile::NamedTempFile, String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = crate::private_fs::folder_of(path);
    let name = path
        .file_name()
        .ok_or_else(|| format!("{} names no file", path.display()))?;
    if let Some(why) = private_fs::folders_above_not_private(path) {
        return Err(format!("refusing the pid file {}: {why}", path.display()));
    }
    // tempfile's errors name the temporary file (`at path .../.app.pid.x3Fq`),
    // which the user never asked for: say what is wrong with the folder.
    let fail = |e: std::io::Error| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => format!("the folder {} does not exist", dir.display()),
            std::io::ErrorKind::PermissionDenied => format!(
                "corral's user (uid {}) may not make files in {}: give the pid file a folder it may write to",
                nix::unistd::geteuid(),
                dir.display()
            ),
            // The OS's reason, without the temporary file's name.
            _ => e
                .get_ref()
                .and_then(|inner| inner.source())
                .map_or_else(|| e.kind().to_string(), |source| source.to_string()),
        };
        format!("cannot write the pid file {}: {why}", path.display())
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .permissions(std::fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)
        .map_err(fail)?;
    writeln!(tmp, "{pid}").map_err(fail)?;
    Ok(tmp)
}

/// Writes a pid file naming `pid` at `path` (see [`stage_pid_file`]).
fn write_pid_file(path: &Path, pid: u32) -> Result<(), String> {
    stage_pid_file(path, pid)?
        .persist(path)
        .map(drop)
        .map_err(|e| format!("cannot write the pid file {}: {}", path.display(), e.error))
}

/// At exit: the pid file is left alone unless it still names this process
/// (a corral started by USR2, or beside this one, has written its own by
/// then). Then it names `before` again, the corral this one took it over
/// from under `--reuse-port`, if that one still runs; else it is removed.
fn release_pid_file(path: &Path, before: Option<u32>) {
    let ours = private_fs::read_regular_text(path)
        .is_ok_and(|text| text.trim() == std::process::id().to_string());
    if !ours {
        return;
    }
    if let Some(pid) = before
        && running_program(pid).is_some_and(|program| is_corral(&program))
    {
        match write_pid_file(path, pid) {
            Ok(()) => {
                tracing::info!(
                    "the pid file {} names corral pid {pid} again, which serves on beside this one (--reuse-port)",
                    path.display()
                );
                return;
            }
            Err(e) => tracing::warn!("{e}"),
        }
    }
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!("cannot remove the pid file {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn lines_a_full_disk_loses_are_counted_in_the_file_once_it_can_write() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("app.log");
        let log = LogFile::open(&path).unwrap();
        // A file whose every write fails with ENOSPC, as on a full disk.
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let good = std::mem::replace(&mut *log.file.lock().unwrap(), full);
        log.write_all(b"one\n");
        log.write_all(b"two\nthree\n");
        assert_eq!(log.lost.load(Ordering::Relaxed), 3);
        *log.file.lock().unwrap() = good;
        log.write_all(b"four\n");
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!(
                "corral: 3 line(s) of this log were lost: they could not be written to {}\nfour\n",
                path.display()
            )
        );
        assert_eq!(log.lost.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn reopen_writes_to_a_new_file_at_the_old_path() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("app.log");
        let log = LogFile::open(&path).unwrap();
        log.write_all(b"one\n");
        std::fs::rename(&path, t.path().join("app.log.1")).unwrap();
        log.write_all(b"two\n");
        log.reopen().unwrap();
        log.write_all(b"three\n");
        assert_eq!(
            std::fs::read_to_string(t.path().join("app.log.1")).unwrap(),
            "one\ntwo\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode & 0o007, 0, "no access for others: {mode:o}");
    }

    #[test]
    fn a_symlink_in_a_folder_others_may_write_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let shared = t.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let target = t.path().join("target");
        std::fs::write(&target, "precious\n").unwrap();
        std::os::unix::fs::symlink(&target, shared.join("app.log")).unwrap();
        let err = LogFile::open(&shared.join("app.log")).unwrap_err();
        assert!(err.contains("symlink"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
        // In a private folder an operator's symlink is followed.
        let private = t.path().join("private");
        std::fs::create_dir(&private).unwrap();
        std::os::unix::fs::symlink(&target, private.join("app.log")).unwrap();
        LogFile::open(&private.join("app.log"))
            .unwrap()
            .write_all(b"more\n");
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "precious\nmore\n"
        );
    }

    #[test]
    fn pid_files_replace_a_symlink_and_are_removed_only_when_ours() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("target");
        std::fs::write(&target, "precious\n").unwrap();
        let pid = t.path().join("app.pid");
        std::os::unix::fs::symlink(&target, &pid).unwrap();
        let me = std::process::id();
        write_pid_file(&pid, me).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
        assert_eq!(std::fs::read_to_string(&pid).unwrap(), format!("{me}\n"));
        std::fs::write(&pid, "1\n").unwrap();
        release_pid_file(&pid, None);
        assert!(pid.exists(), "another process's pid file stays");
        write_pid_file(&pid, me).unwrap();
        release_pid_file(&pid, None);
        assert!(!pid.exists());
    }

    #[test]
    fn a_pid_file_that_cannot_be_made_names_its_folder_not_a_temporary_file() {
        let t = tempfile::tempdir().unwrap();
        let pid = t.path().join("missing").join("app.pid");
        let err = write_pid_file(&pid, 1).unwrap_err();
        assert_eq!(
            err,
            format!(
                "cannot write the pid file {}: the folder {} does not exist",
                pid.display(),
                t.path().join("missing").display()
            )
        );
        assert!(!err.contains(".app.pid."), "{err}");
    }
}
