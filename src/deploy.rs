//! Deploy bookkeeping around generations: what code a generation runs (its
//! folder, resolved once, and its revision), the last known good revision
//! (kept in `[deploy] state_dir` across restarts), and the rollback hook run
//! when a new generation fails to come up.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::config::{Config, RevisionSource, Rollback};
use crate::worker::process::GenerationInfo;

/// Resolves the folder and the revision for a generation starting now.
pub fn resolve(cfg: &Config) -> GenerationInfo {
    let chdir = cfg
        .app
        .chdir
        .as_ref()
        .map(|d| std::fs::canonicalize(d).unwrap_or_else(|_| d.clone()));
    let dir = cfg
        .app
        .chdir
        .clone()
        .unwrap_or_else(|| std::env::current_dir().unwrap_or_default());
    GenerationInfo {
        revision: revision(&cfg.deploy.revision, &dir),
        chdir,
    }
}

/// Names the code in `dir` as `source` says.
pub fn revision(source: &RevisionSource, dir: &Path) -> Option<String> {
    match source {
        RevisionSource::None => None,
        RevisionSource::Git => git(dir),
        RevisionSource::Symlink => symlink(dir),
        RevisionSource::Command(argv) => command(argv, dir),
        RevisionSource::Auto => {
            if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
                symlink(dir)
            } else {
                git(dir)
            }
        }
    }
}

fn git(dir: &Path) -> Option<String> {
    command(
        &[
            "git".into(),
            "rev-parse".into(),
            "--short=12".into(),
            "HEAD".into(),
        ],
        dir,
    )
}

fn symlink(dir: &Path) -> Option<String> {
    let target = std::fs::canonicalize(dir).ok()?;
    revision_text(target.file_name()?.as_encoded_bytes())
}

/// Runs `argv` in `dir` (at most 5 s); its first stdout line.
fn command(argv: &[String], dir: &Path) -> Option<String> {
    if let Some(why) = crate::private_fs::untrusted_command(argv, Some(dir)) {
        tracing::error!("deploy.revision not run: {why}");
        return None;
    }
    let (prog, args) = argv.split_first()?;
    let mut cmd = std::process::Command::new(prog);
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0);
    // Registered until this function returns, after every wait below.
    let (mut child, _ours) = crate::reaper::spawn(|| cmd.spawn(), |c| Some(c.id())).ok()?;
    // Killed with what it started, unless it exits first.
    let mut group = crate::hooks::ProcessGroup::led_by(Some(child.id()));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut out = Output::new(child.stdout.take()?)?;
    loop {
        // Read while it runs: a command that prints more than a pipe
        // holds would otherwise wait for the reader until the deadline.
        out.read();
        match child.try_wait() {
            Ok(Some(st)) => {
                group.exited();
                if st.success() {
                    break;
                }
                return None;
            }
            Err(_) => {
                group.exited();
                return None;
            }
            Ok(None) if Instant::now() >= deadline => {
                group.kill();
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    out.first_line(deadline)
}

/// A revision from a command's first line: UTF-8 with no control byte
/// (it goes into every worker's environment, where a NUL cannot go, and
/// into the log and `/status`); None otherwise, as for no line at all.
fn revision_text(line: &[u8]) -> Option<String> {
    let line = std::str::from_utf8(line).ok()?.trim();
    if line.is_empty() || line.chars().any(char::is_control) {
        if !line.is_empty() {
            tracing::warn!(
                "deploy.revision: {line:?} holds a control character; the revision is unknown"
            );
        }
        return None;
    }
    Some(line.to_string())
}

/// The most of a revision command's output kept: its first line is the
/// revision.
const OUTPUT_KEPT: usize = 64 * 1024;

/// A revision command's stdout, read without blocking: this runs on the
/// supervisor's loop.
struct Output {
    out: std::process::ChildStdout,
    text: Vec<u8>,
    ended: bool,
}

impl Output {
    fn new(out: std::process::ChildStdout) -> Option<Output> {
        use std::os::fd::AsFd;
        let flags = nix::fcntl::fcntl(out.as_fd(), nix::fcntl::FcntlArg::F_GETFL).ok()?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(out.as_fd(), nix::fcntl::FcntlArg::F_SETFL(flags)).ok()?;
        Some(Output {
            out,
            text: Vec::new(),
            ended: false,
        })
    }

    /// Reads what is there now; past [`OUTPUT_KEPT`], reads and drops it.
    fn read(&mut self) {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        while !self.ended {
            match self.out.read(&mut buf) {
                Ok(0) => self.ended = true,
                Ok(n) => {
                    let room = OUTPUT_KEPT.saturating_sub(self.text.len());
                    self.text.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => self.ended = true,
            }
        }
    }

    /// The first line, read up to the output's end, a newline or
    /// `deadline`: a process the command left in the background may hold
    /// its stdout open for as long as it likes.
    fn first_line(mut self, deadline: Instant) -> Option<String> {
        while !self.ended
            && !self.text.contains(&b'\n')
            && self.text.len() < OUTPUT_KEPT
            && Instant::now() < deadline
        {
            self.read();
            std::thread::sleep(Duration::from_millis(5));
        }
        let line = self.text.split(|&b| b == b'\n').next()?;
        revision_text(line)
    }
}

/// The last known good revision, from `state_dir`.
pub fn last_good(state_dir: &Path) -> Option<String> {
    let text = read_state(state_dir, "last-good-revision")?;
    let line = text.trim();
    (!line.is_empty()).then(|| line.to_string())
}

/// The state folder, created (0700) when missing; None, with a warning,
/// when it or the folder it is in is not private (see `private_fs`): its
/// files then cannot be trusted, and what corral would write there could
/// be read by others. The folder above counts too: whoever owns it (say,
/// another user who made `/tmp/corral-UID-state` first) could swap the
/// state folder for one of their own. State is optional: corral serves on
/// without a last known good revision.
fn state_folder(state_dir: &Path) -> Option<&Path> {
    if let Some(parent) = state_dir.parent().filter(|p| p.exists())
        && let Some(why) = crate::private_fs::not_private(parent, true)
    {
        tracing::warn!(
            "not using the state dir {}: the folder it is in, {}, is not private: {why} (another local user may have made it first); corral serves on without remembering the last known good revision; set XDG_STATE_HOME or [deploy] state_dir to a folder only corral's user can write to",
            state_dir.display(),
            parent.display()
        );
        return None;
    }
    if !state_dir.exists()
        && let Err(e) = crate::private_fs::create_dir(state_dir, 0o700)
    {
        tracing::warn!("cannot create the state dir {}: {e}", state_dir.display());
        return None;
    }
    match crate::private_fs::not_private(state_dir, false) {
        None => Some(state_dir),
        Some(why) => {
            tracing::warn!(
                "not using the state dir {}: {why}; make it corral's own with mode 0700, or set [deploy] state_dir",
                state_dir.display()
            );
            None
        }
    }
}

/// A state file's text, from a private state folder only.
fn read_state(state_dir: &Path, name: &str) -> Option<String> {
    if !state_dir.exists() {
        return None;
    }
    crate::private_fs::read_regular_text(&state_folder(state_dir)?.join(name)).ok()
}

/// Replaces a state file as a whole (see `private_fs::write_atomic`).
fn write_state(state_dir: &Path, name: &str, text: &str) {
    let Some(dir) = state_folder(state_dir) else {
        return;
    };
    if let Err(e) = crate::private_fs::write_atomic(dir, name, text.as_bytes()) {
        tracing::warn!("cannot write {}: {e}", dir.join(name).display());
    }
}

/// The state file naming the control socket of the corral whose state the
/// folder holds.
const CLAIM: &str = "control-socket";

/// The control socket of another running corral (`live` answers for the
/// socket the folder names) whose state `state_dir` holds, as when two
/// units share one `StateDirectory=`: each app's rollback would read the
/// other's last good release.
pub fn claimed_by_other(
    state_dir: &Path,
    socket: &Path,
    live: impl Fn(&Path) -> bool,
) -> Option<PathBuf> {
    if !state_dir.is_dir() {
        return None;
    }
    let text = read_state(state_dir, CLAIM)?;
    let other = PathBuf::from(text.trim_end_matches('\n'));
    (other != socket && live(&other)).then_some(other)
}

/// Claims an existing state folder for the corral serving the control
/// socket `socket` (see [`claimed_by_other`]). A folder not made yet is
/// left to the supervisor, which makes it as the user it runs as.
pub fn claim(state_dir: &Path, socket: &Path) {
    if state_dir.is_dir() {
        write_state(state_dir, CLAIM, &format!("{}\n", socket.display()));
    }
}

/// Remembers `revision` as the last known good one.
pub fn remember_good(state_dir: &Path, revision: &str) {
    write_state(state_dir, "last-good-revision", &format!("{revision}\n"));
}

/// Records good generations in the state folder from a thread of its own,
/// in order: the supervisor loop never waits on the disk.
#[derive(Clone)]
pub struct StateWriter(std::sync::mpsc::Sender<StateWrite>);

enum StateWrite {
    Good(Option<String>, Option<PathBuf>),
    /// Answered once everything sent before it is written.
    Flush(std::sync::mpsc::Sender<()>),
}

impl StateWriter {
    pub fn start(state_dir: PathBuf) -> StateWriter {
        let (tx, rx) = std::sync::mpsc::channel::<StateWrite>();
        std::thread::Builder::new()
            .name("corral-state".into())
            .spawn(move || {
                for write in rx {
                    match write {
                        StateWrite::Good(revision, dir) => {
                            if let Some(rev) = revision {
                                remember_good(&state_dir, &rev);
                            }
                            if let Some(dir) = dir {
                                remember_good_path(&state_dir, &dir);
                            }
                        }
                        StateWrite::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })
            .ok();
        StateWriter(tx)
    }

    /// Remembers a good generation's revision and folder.
    pub fn good(&self, revision: Option<String>, dir: Option<PathBuf>) {
        let _ = self.0.send(StateWrite::Good(revision, dir));
    }

    /// Waits, at most `limit`, until every generation recorded before is
    /// on disk: the rollback hook's environment and the built-in rollback
    /// read it there, and a reload that fails right after the first good
    /// generation must find it.
    pub fn flush(&self, limit: std::time::Duration) {
        let (done, wait) = std::sync::mpsc::channel();
        if self.0.send(StateWrite::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(limit);
        }
    }
}

/// Why a generation failed, for the hook.
#[derive(Debug, Clone)]
pub struct Failure {
    pub revision: Option<String>,
    pub reason: String,
    pub detail: Option<String>,
    /// More environment for the hook (a failed canary's figures, and
    /// CORRAL_REASON=canary), set after the rest.
    pub env: Vec<(String, String)>,
}

/// How the hook ended, for /status.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HookRun {
    pub at: f64,
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub output_tail: String,
}

/// Runs the rollback hook with the failure in its environment; its output
/// goes to the log line by line.
pub async fn run_hook(cfg: &Config, failure: &Failure) -> Option<HookRun> {
    let argv = cfg.deploy.rollback_hook.as_ref()?;
    let (prog, args) = argv.split_first()?;
    let state_dir = &cfg.deploy.state_dir;
    let error_file = state_dir.join("last-error.txt");
    // A traceback may hold secrets: the file is 0600 in a 0700 folder.
    let text = failure
        .detail
        .clone()
        .unwrap_or_else(|| failure.reason.clone());
    let dir = state_dir.clone();
    let _ = tokio::task::spawn_blocking(move || write_state(&dir, "last-error.txt", &text)).await;
    let app_dir = cfg
        .app
        .chdir
        .clone()
        .unwrap_or_else(|| std::env::current_dir().unwrap_or_default());
    if let Some(why) = crate::private_fs::untrusted_command(argv, Some(&app_dir)) {
        tracing::error!("the rollback hook not run: {why}");
        return None;
    }
    tracing::warn!("running the rollback hook {}", argv.join(" "));
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .env(
            "CORRAL_FAILED_REVISION",
            failure.revision.as_deref().unwrap_or(""),
        )
        .env(
            "CORRAL_GOOD_REVISION",
            last_good(state_dir).unwrap_or_default(),
        )
        .env("CORRAL_REASON", crate::hooks::reason_line(&failure.reason))
        .envs(failure.env.iter().map(|(k, v)| (k, v)))
        .env("CORRAL_ERROR_FILE", &error_file)
        .env("CORRAL_APP_DIR", &app_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    // Registered until this function returns. A hook past its timeout is
    // killed with its process group (what it started goes too), dropped
    // and left to tokio's reaping; should the orphan reaper get to it
    // first, tokio finds it gone, which it takes in its stride.
    let (mut child, _ours) = match crate::reaper::spawn(|| cmd.spawn(), |c| c.id()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("cannot run the rollback hook {prog}: {e}");
            return Some(HookRun {
                at: now,
                exit_code: None,
                timed_out: false,
                output_tail: format!("cannot run {prog}: {e}"),
            });
        }
    };
    let mut group = crate::hooks::ProcessGroup::led_by(child.id());
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let collect = async {
        let mut tail: Vec<String> = Vec::new();
        let mut out = out.map(|o| BufReader::new(o).lines());
        let mut err = err.map(|e| BufReader::new(e).lines());
        while out.is_some() || err.is_some() {
            let (line, from_out) = tokio::select! {
                l = next(&mut out), if out.is_some() => (l, true),
                l = next(&mut err), if err.is_some() => (l, false),
            };
            match line {
                Some(l) => {
                    tracing::info!("rollback hook: {l}");
                    tail.push(l);
                    if tail.len() > 20 {
                        tail.remove(0);
                    }
                }
                None if from_out => out = None,
                None => err = None,
            }
        }
        let status = child.wait().await.ok();
        (tail, status)
    };
    match tokio::time::timeout(cfg.deploy.hook_timeout, collect).await {
        Ok((tail, status)) => {
            group.exited();
            let code = status.and_then(|s| s.code());
            tracing::info!("rollback hook exited with code {code:?}");
            Some(HookRun {
                at: now,
                exit_code: code,
                timed_out: false,
                output_tail: tail.join("\n"),
            })
        }
        Err(_) => {
            group.kill();
            tracing::error!(
                "rollback hook timed out after {:?}; killed",
                cfg.deploy.hook_timeout
            );
            Some(HookRun {
                at: now,
                exit_code: None,
                timed_out: true,
                output_tail: String::new(),
            })
        }
    }
}

type Lines<R> = tokio::io::Lines<BufReader<R>>;

async fn next<R: tokio::io::AsyncRead + Unpin>(lines: &mut Option<Lines<R>>) -> Option<String> {
    match lines {
        Some(l) => l.next_line().await.ok().flatten(),
        None => None,
    }
}

/// The folder of the last known good generation (for the symlink rollback).
pub fn last_good_path(state_dir: &Path) -> Option<PathBuf> {
    let text = read_state(state_dir, "last-good-path")?;
    let line = text.trim();
    (!line.is_empty()).then(|| PathBuf::from(line))
}

/// Remembers the folder a good generation ran from.
pub fn remember_good_path(state_dir: &Path, dir: &Path) {
    write_state(state_dir, "last-good-path", &format!("{}\n", dir.display()));
}

/// The built-in rollbacks: put the last known good code back on disk.
/// Returns what was done, for the log.
pub fn builtin_rollback(cfg: &Config) -> Result<String, String> {
    let state = &cfg.deploy.state_dir;
    match cfg.deploy.rollback {
        Rollback::None => Err("no built-in rollback configured".into()),
        Rollback::GitReset => {
            let dir = cfg
                .app
                .chdir
                .clone()
                .unwrap_or_else(|| std::env::current_dir().unwrap_or_default());
            let good = last_good(state).ok_or("no last known good revision yet")?;
            let mut cmd = std::process::Command::new("git");
            cmd.args(["reset", "--hard", "--quiet", &good])
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let (child, ours) = crate::reaper::spawn(|| cmd.spawn(), |c| Some(c.id()))
                .map_err(|e| format!("cannot run git: {e}"))?;
            let out = child
                .wait_with_output()
                .map_err(|e| format!("cannot run git: {e}"))?;
            drop(ours);
            if !out.status.success() {
                return Err(format!(
                    "git reset --hard {good} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            Ok(format!(
                "reset {} to the last good commit {good}",
                dir.display()
            ))
        }
        Rollback::Symlink => {
            let link = cfg.app.chdir.clone().ok_or("app.chdir is not set")?;
            let good = last_good_path(state).ok_or("no last known good release yet")?;
            if !good.is_dir() {
                return Err(format!("the last good release {} is gone", good.display()));
            }
            // Atomic swap: a new link beside, renamed over the old one.
            let tmp = link.with_extension("corral-rollback");
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(&good, &tmp)
                .and_then(|()| std::fs::rename(&tmp, &link))
                .map_err(|e| {
                    format!("cannot point {} at {}: {e}", link.display(), good.display())
                })?;
            Ok(format!(
                "pointed {} back at the last good release {}",
                link.display(),
                good.display()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revision_command_that_leaves_its_stdout_open_in_the_background_returns_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let argv = |script: &str| vec!["sh".to_string(), "-c".into(), script.into()];
        let t = Instant::now();
        // The background sleep holds the pipe: reading to its end waited
        // for it, on the supervisor's loop.
        assert_eq!(
            command(
                &argv("echo r1; sleep 3 >/dev/null 2>&1 & sleep 3 &"),
                dir.path()
            ),
            Some("r1".to_string())
        );
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        let t = Instant::now();
        assert_eq!(command(&argv("sleep 3 &"), dir.path()), None);
        assert!(
            t.elapsed() < Duration::from_millis(5500),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn a_flush_returns_once_every_good_generation_sent_before_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let writer = StateWriter::start(dir.path().to_path_buf());
        for i in 0..50 {
            let release = dir.path().join(format!("r{i}"));
            writer.good(Some(format!("rev{i}")), Some(release.clone()));
            writer.flush(std::time::Duration::from_secs(10));
            assert_eq!(last_good_path(dir.path()), Some(release), "round {i}");
            assert_eq!(last_good(dir.path()), Some(format!("rev{i}")), "round {i}");
        }
    }
}
