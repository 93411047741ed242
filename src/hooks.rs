//! `[hooks]`: the operator's commands run on life-cycle events: a worker
//! exited (`on_worker_exit`), a generation is in service (`on_ready`), a
//! reload failed (`on_reload_failed`). The supervisor only calls
//! [`Hooks::worker_exited`] and its siblings, which build the environment
//! and hand the command to a task of its own: a hook never runs on (or
//! blocks) the supervisor's loop.
//!
//! Each hook is an argv (no shell), spawned through the reaper's registry
//! ([`crate::reaper::spawn`]) like the rollback hook, with stdin closed,
//! its output logged line by line, and killed after `deploy.hook_timeout`,
//! with whatever it started: it leads a process group of its own
//! ([`ProcessGroup`]), and the whole group is killed.
//! Its environment is corral's minus the service manager's and corral's
//! own variables (as for workers: no `NOTIFY_SOCKET`, no status token),
//! plus `[app] env` and the event's `CORRAL_*` variables; it runs in the
//! app folder. At most [`AT_ONCE`] hooks run at once; the rest wait their
//! turn, so a crash loop cannot fork a storm of them. When corral exits it
//! first waits (at most [`AT_EXIT`]) for the hooks still running or
//! waiting, so that the workers' last exits during a stop are heard.
//!
//! As root, corral runs no command (a hook, the rollback hook, the
//! revision command) whose program, or a file its arguments name, someone
//! else could change ([`crate::private_fs::untrusted_command`]): a hook in the app's folder, or the
//! interpreter of a virtualenv the app's user owns, or `python3 -m mod` in
//! an app folder that user may add a `mod.py` to, would run that user's
//! code as root. The config is refused at start and at each reload, and a
//! file changed since is refused when the command would run.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{Semaphore, watch};

use crate::config::{Config, HooksConfig};

/// Most hooks running at once.
const AT_ONCE: usize = 4;
/// Longest corral waits for its hooks when it exits.
const AT_EXIT: Duration = Duration::from_secs(5);

/// The configured hooks and what every run of them shares.
#[derive(Debug, Clone)]
pub struct Hooks {
    config: HooksConfig,
    timeout: Duration,
    /// Where hooks run, and `CORRAL_APP_DIR`.
    dir: PathBuf,
    /// `[app] env`, set over corral's environment.
    app_env: Vec<(String, String)>,
    slots: Arc<Semaphore>,
    /// Hooks started and not yet ended.
    pending: Arc<watch::Sender<usize>>,
}

impl Hooks {
    pub fn new(cfg: &Config) -> Hooks {
        Hooks {
            config: cfg.hooks.clone(),
            timeout: cfg.deploy.hook_timeout,
            dir: cfg
                .app
                .chdir
                .clone()
                .unwrap_or_else(|| std::env::current_dir().unwrap_or_default()),
            app_env: cfg
                .app
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            slots: Arc::new(Semaphore::new(AT_ONCE)),
            pending: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Waits until every hook started so far has ended, or the smaller of
    /// [`AT_EXIT`] and `deploy.hook_timeout` has passed (corral is exiting).
    pub async fn finish(&self) {
        let mut rx = self.pending.subscribe();
        if *rx.borrow() == 0 {
            return;
        }
        tracing::info!("waiting for {} hook(s) to end", *rx.borrow());
        let _ = tokio::time::timeout(self.timeout.min(AT_EXIT), rx.wait_for(|n| *n == 0)).await;
    }

    /// A worker process exited (`on_worker_exit`).
    pub fn worker_exited(
        &self,
        pid: u32,
        slot: usize,
        generation: u64,
        status: std::process::ExitStatus,
    ) {
        let Some(argv) = &self.config.on_worker_exit else {
            return;
        };
        let mut env = vec![
            ("CORRAL_WORKER_PID", pid.to_string()),
            ("CORRAL_SLOT", slot.to_string()),
            ("CORRAL_GENERATION", generation.to_string()),
        ];
        env.push(match (status.code(), status.signal()) {
            (None, Some(sig)) => ("CORRAL_EXIT_SIGNAL", sig.to_string()),
            (code, _) => ("CORRAL_EXIT_CODE", code.unwrap_or(-1).to_string()),
        });
        self.run("on_worker_exit", argv, env);
    }

    /// `generation` is in service (`on_ready`).
    pub fn ready(&self, generation: u64, revision: Option<&str>) {
        let Some(argv) = &self.config.on_ready else {
            return;
        };
        let env = vec![
            ("CORRAL_GENERATION", generation.to_string()),
            ("CORRAL_REVISION", revision.unwrap_or("").to_owned()),
        ];
        self.run("on_ready", argv, env);
    }

    /// A reload to `generation` failed (`on_reload_failed`).
    pub fn reload_failed(&self, generation: u64, revision: Option<&str>, reason: &str) {
        let Some(argv) = &self.config.on_reload_failed else {
            return;
        };
        let env = vec![
            ("CORRAL_GENERATION", generation.to_string()),
            ("CORRAL_REVISION", revision.unwrap_or("").to_owned()),
            // It may quote the worker's boot error: control characters
            // shown (a NUL would keep the hook from starting at all).
            ("CORRAL_REASON", reason_line(reason)),
        ];
        self.run("on_reload_failed", argv, env);
    }

    /// Runs `argv` in a task of its own.
    fn run(&self, name: &'static str, argv: &[String], env: Vec<(&'static str, String)>) {
        let Some((program, args)) = argv.split_first() else {
            return;
        };
        if let Some(why) = crate::private_fs::untrusted_command(argv, Some(&self.dir)) {
            tracing::error!("hook {name} not run: {why}");
            return;
        }
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_none_or(crate::config::is_corral_own_env) {
                cmd.env_remove(&key);
            }
        }
        cmd.envs(self.app_env.iter().map(|(k, v)| (k, v)))
            .env("CORRAL_APP_DIR", &self.dir)
            .envs(env);
        let (program, timeout, slots) = (program.clone(), self.timeout, self.slots.clone());
        self.pending.send_modify(|n| *n += 1);
        let pending = self.pending.clone();
        tokio::spawn(async move {
            if let Ok(_turn) = slots.acquire_owned().await {
                run(name, &program, cmd, timeout).await;
            }
            pending.send_modify(|n| *n = n.saturating_sub(1));
        });
    }
}

/// Spawns `cmd`, logs its output, and waits for it at most `timeout`.
async fn run(name: &str, program: &str, mut cmd: tokio::process::Command, timeout: Duration) {
    // Registered until it is waited for: the orphan reaper leaves it alone.
    let (mut child, _ours) = match crate::reaper::spawn(|| cmd.spawn(), |c| c.id()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("hook {name}: cannot run {program}: {e}");
            return;
        }
    };
    // Killed whole if this task ends (a timeout, or corral exiting) before
    // the hook has.
    let mut group = ProcessGroup::led_by(child.id());
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let finished = async {
        tokio::join!(log_lines(name, out), log_lines(name, err));
        child.wait().await
    };
    match tokio::time::timeout(timeout, finished).await {
        Ok(result) => {
            group.exited();
            match result {
                Ok(status) if status.success() => tracing::debug!("hook {name}: done"),
                Ok(status) => tracing::warn!("hook {name}: {program} failed ({status})"),
                Err(e) => tracing::warn!("hook {name}: waiting for {program}: {e}"),
            }
        }
        Err(_) => {
            tracing::error!(
                "hook {name}: {program} still running after {timeout:?} (deploy.hook_timeout); killed"
            );
            group.kill();
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        }
    }
}

/// The process group a hook leads (spawned with `process_group(0)`), so
/// that killing the hook kills what it started too (a script's `sleep`,
/// a `git` it runs): SIGKILL to the group when [`ProcessGroup::kill`] is
/// called or the guard is dropped, unless the hook was seen to exit first
/// ([`ProcessGroup::exited`]; what it left running on purpose, its output
/// elsewhere, stays). The group's id is the hook's pid, which stays its
/// own until the hook is reaped, and it is reaped only where `exited` is
/// called.
pub(crate) struct ProcessGroup(Option<u32>);

impl ProcessGroup {
    pub(crate) fn led_by(pid: Option<u32>) -> ProcessGroup {
        // 0 and 1 would name corral's own group or every process.
        ProcessGroup(pid.filter(|p| *p > 1))
    }

    /// The hook has exited and been reaped: its group is left alone.
    pub(crate) fn exited(&mut self) {
        self.0 = None;
    }

    /// Kills every process of the group (once).
    pub(crate) fn kill(&mut self) {
        if let Some(pid) = self.0.take() {
            // SAFETY: kill(2) takes no pointers; a negative pid names the
            // group this hook leads.
            unsafe {
                libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
            }
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Logs each line `stream` gives until it ends.
async fn log_lines(name: &str, stream: Option<impl AsyncRead + Unpin>) {
    let Some(stream) = stream else { return };
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!("hook {name}: {line}");
    }
}

/// The first line of a reload's failure, for `CORRAL_REASON`: control
/// characters shown as `\xHH`, as in corral's log. The worker wrote part
/// of it (its boot error's last line), and an environment variable cannot
/// hold a NUL: with one, the hook would not start.
pub fn reason_line(reason: &str) -> String {
    let first = reason.lines().next().unwrap_or("");
    crate::worker::output::printable(first.trim_end_matches('\r')).into_owned()
}
