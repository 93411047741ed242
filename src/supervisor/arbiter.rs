//! gunicorn's arbiter hooks (`on_starting`, `when_ready`, `on_reload`,
//! `nworkers_changed`, `child_exit`, `on_exit`), which gunicorn runs in its
//! master process. corral's supervisor runs no Python: when `[app]
//! gunicorn_hooks` names a gunicorn config file, one Python process of its
//! own (started by the workers' [`Launcher`], so with their interpreter,
//! user, environment and folder; `corral_worker/arbiter.py`) runs the file
//! once and calls these hooks when the supervisor tells it what happened,
//! one at a time, so that they share the file's module as gunicorn's
//! arbiter shares it.
//!
//! The channel carries JSON lines: the process first says which of the
//! hooks the file has (after `on_starting`, which the supervisor waits for,
//! at most `deploy.hook_timeout`, before it starts any worker), then reads
//! one event per line. A process that fails, or a file without these hooks,
//! costs nothing more: the events are only sent to a process that asked
//! for them. At a stop, `on_exit` runs and the supervisor waits for the
//! process to end (at most [`AT_EXIT`] or `deploy.hook_timeout`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};

use crate::worker::pidfd::Process;
use crate::worker::process::{GenerationInfo, Launcher};

/// Longest corral waits for `on_exit` when it stops.
const AT_EXIT: Duration = Duration::from_secs(5);

/// The most corral reads of the process's first line: it names a few
/// hooks. The process runs the app's code as the workers' user; what it
/// says is bounded like anything else from outside.
const MAX_READY_LINE: u64 = 64 * 1024;

/// Events waiting for the process to read them; past this the process is
/// not reading, and an event is dropped (with a warning) rather than held.
const MAX_QUEUED_EVENTS: usize = 1024;

/// What the process says first: the hooks the file defines.
#[derive(serde::Deserialize)]
struct Ready {
    ready: Vec<String>,
}

/// The running process and the hooks it has.
pub(super) struct Arbiter {
    hooks: Vec<String>,
    /// Lines for the process; dropped to close its channel.
    tx: Option<mpsc::Sender<String>>,
    /// True once the process has exited.
    gone: watch::Receiver<bool>,
    /// Set when corral closes the channel: the exit that follows is expected.
    closing: Arc<AtomicBool>,
    process: Process,
    /// Whether `when_ready` has run (once, as in gunicorn).
    was_ready: bool,
}

impl Arbiter {
    /// Starts the process and waits, at most `timeout`, until it has run
    /// the file and `on_starting`; `None` when it has no other hook to run
    /// (or could not run the file: its traceback is logged).
    pub(super) async fn start(
        launcher: &Launcher,
        info: &GenerationInfo,
        timeout: Duration,
    ) -> Option<Arbiter> {
        let spawned = match launcher.spawn_arbiter(info) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(
                    "gunicorn hooks: cannot start the process that runs the arbiter hooks: {e}"
                );
                return None;
            }
        };
        let pid = spawned.pid;
        let mut child = spawned.child;
        if let Some(out) = child.stdout.take() {
            crate::worker::output::forward_as(out, "gunicorn hooks".into(), pid, "stdout");
        }
        if let Some(err) = child.stderr.take() {
            crate::worker::output::forward_as(err, "gunicorn hooks".into(), pid, "stderr");
        }
        let (gone_tx, gone) = watch::channel(false);
        let closing = Arc::new(AtomicBool::new(false));
        let (watch_handle, ours) = (spawned.watch, spawned.ours);
        let expected = closing.clone();
        tokio::spawn(async move {
            watch_handle.exited().await;
            // What it started goes with it, as a worker's subprocesses do.
            watch_handle.signal_group(libc::SIGKILL);
            if let Ok(status) = child.wait().await {
                if expected.load(Ordering::Acquire) {
                    tracing::debug!("gunicorn hooks (pid {pid}) exited: {status}");
                } else {
                    tracing::warn!(
                        "gunicorn hooks (pid {pid}) exited ({status}): the arbiter hooks no longer run until corral restarts"
                    );
                }
            }
            let _ = gone_tx.send(true);
            drop(ours);
        });
        let (read, mut write) = spawned.sock.into_split();
        let mut line = String::new();
        let mut reader = BufReader::new(read).take(MAX_READY_LINE);
        let said = tokio::time::timeout(timeout, reader.read_line(&mut line)).await;
        // Err: the process is given up on (killed), with why.
        let hooks = match said {
            Ok(Ok(n)) if n as u64 >= MAX_READY_LINE && !line.ends_with('\n') => Err(format!(
                "the process said more than {MAX_READY_LINE} bytes without a newline where it \
                 names its hooks (does the file write to corral's channel, fd 3?); the arbiter \
                 hooks will not run"
            )),
            Ok(Ok(n)) if n > 0 => match serde_json::from_str::<Ready>(&line) {
                Ok(ready) => Ok(ready.ready),
                Err(e) => {
                    let said =
                        crate::front::access::escape(&line.as_bytes()[..line.len().min(200)]);
                    tracing::error!("gunicorn hooks: the process said \"{said}\": {e}");
                    Ok(Vec::new())
                }
            },
            Ok(Ok(_)) => {
                tracing::error!(
                    "gunicorn hooks: the process ended before it was ready; the arbiter hooks will not run"
                );
                Ok(Vec::new())
            }
            Ok(Err(e)) => Err(format!(
                "what the process said where it names its hooks is not text ({e}); the arbiter \
                 hooks will not run"
            )),
            Err(_) => Err(format!(
                "the file and its on_starting did not finish within {timeout:?} \
                 (deploy.hook_timeout); the workers start without the arbiter hooks"
            )),
        };
        let hooks = match hooks {
            Ok(hooks) => hooks,
            Err(why) => {
                tracing::error!("gunicorn hooks: {why}");
                closing.store(true, Ordering::Release);
                spawned.process.signal_group(libc::SIGKILL);
                return None;
            }
        };
        let hooks: Vec<String> = hooks.into_iter().filter(|h| h != "on_starting").collect();
        if hooks.is_empty() {
            // It ends now: nothing more to run.
            closing.store(true, Ordering::Release);
            return None;
        }
        tracing::info!(
            "gunicorn hooks (pid {pid}): {} {} in this process, as in gunicorn's arbiter",
            hooks.join(", "),
            if hooks.len() == 1 { "runs" } else { "run" }
        );
        let (tx, mut rx) = mpsc::channel::<String>(MAX_QUEUED_EVENTS);
        tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                if write.write_all(line.as_bytes()).await.is_err() {
                    return;
                }
            }
            let _ = write.shutdown().await;
        });
        Some(Arbiter {
            hooks,
            tx: Some(tx),
            gone,
            closing,
            process: spawned.process,
            was_ready: false,
        })
    }

    /// Tells the process to run `hook`, when the file has it.
    fn send(&self, hook: &str, mut event: serde_json::Value) {
        if !self.hooks.iter().any(|h| h == hook) {
            return;
        }
        let Some(tx) = &self.tx else { return };
        event["hook"] = serde_json::Value::from(hook);
        if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(format!("{event}\n")) {
            tracing::warn!(
                "gunicorn hooks: the process reads no events ({MAX_QUEUED_EVENTS} wait); {hook} dropped"
            );
        }
    }

    /// A worker exited (`child_exit`).
    pub(super) fn child_exited(&self, pid: u32, slot: usize, status: std::process::ExitStatus) {
        use std::os::unix::process::ExitStatusExt;
        let code = status.code().or(status.signal().map(|s| -s));
        self.send(
            "child_exit",
            serde_json::json!({"pid": pid, "slot": slot, "code": code}),
        );
    }

    /// A generation is in service (`when_ready`, the first time only).
    pub(super) fn ready(&mut self, workers: usize) {
        if !std::mem::replace(&mut self.was_ready, true) {
            self.send("when_ready", serde_json::json!({"workers": workers}));
        }
    }

    /// A reload starts (`on_reload`).
    pub(super) fn reloading(&self) {
        self.send("on_reload", serde_json::json!({}));
    }

    /// The number of workers changes (`nworkers_changed`).
    pub(super) fn scaled(&self, new: usize, old: usize) {
        if new != old {
            self.send(
                "nworkers_changed",
                serde_json::json!({"new": new, "old": old, "workers": new}),
            );
        }
    }

    /// corral stops: `on_exit`, then the channel closes and the process
    /// ends; waited for at most `timeout` (and [`AT_EXIT`]), then killed.
    pub(super) async fn finish(&mut self, timeout: Duration) {
        self.send("on_exit", serde_json::json!({}));
        self.closing.store(true, Ordering::Release);
        self.tx = None;
        let wait = self.gone.wait_for(|gone| *gone);
        if tokio::time::timeout(timeout.min(AT_EXIT), wait)
            .await
            .is_err()
        {
            tracing::warn!("gunicorn hooks: on_exit still running as corral stops; killed");
            self.process.signal_group(libc::SIGKILL);
        }
    }
}
