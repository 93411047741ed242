//! The supervisor: one task that owns the worker table. The life-cycle rules
//! live in [`core`] (a pure state machine); this actor feeds it events
//! (control frames, exits, signals, timers) and performs its actions: spawn
//! a worker, signal one, publish the in-service set to the router, log. It
//! publishes a [`Snapshot`] of the table on a `watch` channel for the status
//! server. Each child is awaited exactly once, by its own task.

pub mod core;
pub mod snapshot;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::front::Front;
use crate::router::Router;
use crate::signals::Sig as OsSignal;
use crate::worker::channel::{Channel, ControlEvent};
use crate::worker::pidfd::Process;
use crate::worker::process::Launcher;
use crate::worker::stacks::Stacks;
use core::{Action, Core, Event, Level, ProbeSettings, Settings, Sig};
pub use snapshot::Snapshot;

/// A reload that came up: its generation and revision.
#[derive(Debug, Clone)]
pub struct ReloadDone {
    pub generation: u64,
    pub revision: Option<String>,
}

/// Everything that reaches the supervisor.
#[derive(Debug)]
pub enum Msg {
    Control(u64, ControlEvent),
    Exited(u64, std::process::ExitStatus),
    Replace(u64, String),
    Signal(OsSignal),
    FrontDrained(bool),
    Probed(u64, Result<(), String>),
    /// The rollback hook finished.
    HookDone(crate::deploy::HookRun),
    /// A held exit may go to the core now, channel closed or not.
    ExitHoldOver(u64),
    /// A re-executed corral had ready_timeout to get its workers in service.
    ReexecDeadline,
    /// The built-in rollback put the good code back (or could not).
    RolledBack(Result<String, String>),
    /// Start a new generation; the sender (`corral reload --wait`) hears
    /// how it ended: Ok(generation and revision) or Err(reason and traceback).
    Reload(
        Option<Duration>,
        Option<tokio::sync::oneshot::Sender<Result<ReloadDone, String>>>,
    ),
    /// Run this many workers.
    Scale(usize),
    /// What a revision check found: the drift message, or None.
    Drift(Option<String>),
    /// `server.shutdown_delay` after a TERM has passed.
    DelayOver,
    /// The status server checks that the loop answers (`/health/live`).
    Ping(tokio::sync::oneshot::Sender<()>),
}

pub struct Supervisor {
    cfg: Arc<Config>,
    launcher: Launcher,
    router: Arc<Router>,
    core: Core,
    channels: HashMap<u64, Arc<Channel>>,
    /// Each live worker's process handle (signals go through its pidfd)
    /// and stack dump file, until its exit is seen.
    procs: HashMap<u64, (Process, Stacks)>,
    tx: mpsc::UnboundedSender<Msg>,
    rx: mpsc::UnboundedReceiver<Msg>,
    control_tx: mpsc::UnboundedSender<(u64, ControlEvent)>,
    front: Option<Front>,
    /// TERM arrived: not ready, no reload; the front drains unless
    /// `delaying`.
    draining: bool,
    /// Within `server.shutdown_delay` after TERM: serving as before.
    delaying: bool,
    snapshot: watch::Sender<Snapshot>,
    started: Instant,
    /// `reload --wait` callers: the generation they wait for.
    reload_waiters: Vec<(
        u64,
        tokio::sync::oneshot::Sender<Result<ReloadDone, String>>,
    )>,
    /// Folder and revision of each generation, resolved when it started.
    gens: HashMap<u64, crate::deploy::GenerationInfo>,
    /// The last generation recorded as good, and the last reload outcome
    /// handled (for the hook).
    recorded_good: u64,
    handled_failure: Option<u64>,
    cold_hook_ran: bool,
    hook: Option<crate::deploy::HookRun>,
    /// The generation a built-in rollback reloaded, if any (not rolled back
    /// again when it fails too).
    rollback_generation: Option<u64>,
    exit_code: i32,
    /// "generation N runs X; disk now has Y" while they differ.
    drift: Option<String>,
    /// The last known good revision (as kept in the state dir).
    last_good: Option<String>,
    /// Writes the state dir, off this loop.
    state: crate::deploy::StateWriter,
    /// Off while the first workers start (their code was just resolved).
    drift_checks: bool,
    /// Exits waiting for their channel to close, and channels closed
    /// before their exit was seen.
    held_exits: HashMap<u64, std::process::ExitStatus>,
    closed: std::collections::HashSet<u64>,
    /// Listen sockets a USR2 re-exec hands down, and whether one started.
    sockets: Vec<(String, std::os::fd::RawFd)>,
    reexec_started: bool,
    /// Re-executed by this parent: stop it once we are in service.
    reexec_parent: Option<u32>,
    accept_gate: Option<watch::Sender<bool>>,
    /// The new corral a USR2 started (it becomes systemd's MAINPID).
    reexec_child: Option<u32>,
    /// What systemd has been told.
    sd_ready: bool,
    sd_reloading: Option<u64>,
    sd_stopping: bool,
    sd_status: String,
    new_waiter: Option<tokio::sync::oneshot::Sender<Result<ReloadDone, String>>>,
}

impl Supervisor {
    pub fn new(cfg: Arc<Config>, launcher: Launcher, router: Arc<Router>) -> Supervisor {
        let (tx, rx) = mpsc::unbounded_channel();
        let (control_tx, mut control_rx) = mpsc::unbounded_channel();
        let fwd = tx.clone();
        tokio::spawn(async move {
            while let Some((serial, ev)) = control_rx.recv().await {
                if fwd.send(Msg::Control(serial, ev)).is_err() {
                    return;
                }
            }
        });
        let w = &cfg.workers;
        let core = Core::new(Settings {
            count: w.count,
            boot_timeout: w.boot_timeout,
            backoff: w.restart_backoff,
            backoff_max: w.restart_backoff_max,
            young: Duration::from_secs(1),
            dump_grace: Duration::from_millis(200),
            term_grace: Duration::from_secs(5),
            quit_grace: Duration::from_secs(1),
            // Past its own graceful timeout, a draining worker is stuck.
            drain_grace: w.graceful_timeout + Duration::from_secs(5),
            probe: cfg.health.ready_path.as_ref().map(|_| ProbeSettings {
                interval: cfg.health.probe_interval,
                retry: cfg.health.probe_interval.min(Duration::from_secs(1)),
                unhealthy_after: cfg.health.unhealthy_after,
            }),
            min_in_service: cfg.health.min_in_service.required(w.count),
            heartbeat_timeout: Some(w.heartbeat_timeout),
            max_requests: w.max_requests,
            max_requests_jitter: w.max_requests_jitter,
            max_memory: w.max_memory,
            seed: std::process::id() as u64 ^ started_nanos(),
            reload_timeout: cfg.deploy.ready_timeout,
            rolling: (cfg.deploy.strategy == crate::config::Strategy::Rolling)
                .then_some(cfg.deploy.max_surge),
        });
        let started = Instant::now();
        let last_good = crate::deploy::last_good(&cfg.deploy.state_dir);
        let state = crate::deploy::StateWriter::start(cfg.deploy.state_dir.clone());
        let (snapshot, _) = watch::channel(Snapshot::default());
        Supervisor {
            cfg,
            launcher,
            router,
            core,
            channels: HashMap::new(),
            procs: HashMap::new(),
            tx,
            rx,
            control_tx,
            front: None,
            draining: false,
            delaying: false,
            snapshot,
            started,
            reload_waiters: Vec::new(),
            new_waiter: None,
            gens: HashMap::new(),
            recorded_good: 0,
            handled_failure: None,
            cold_hook_ran: false,
            hook: None,
            rollback_generation: None,
            exit_code: 0,
            drift: None,
            last_good,
            state,
            drift_checks: false,
            held_exits: HashMap::new(),
            closed: std::collections::HashSet::new(),
            sockets: Vec::new(),
            reexec_started: false,
            reexec_parent: crate::reexec::inherited().parent,
            accept_gate: None,
            reexec_child: None,
            sd_ready: false,
            sd_reloading: None,
            sd_stopping: false,
            sd_status: String::new(),
        }
    }

    /// Opened once this corral is in service (a re-exec accepts only then).
    pub fn set_accept_gate(&mut self, gate: watch::Sender<bool>) {
        self.accept_gate = Some(gate);
    }

    /// The listen sockets (configured address, fd) a USR2 hands down.
    pub fn set_sockets(&mut self, sockets: Vec<(String, std::os::fd::RawFd)>) {
        self.sockets = sockets;
    }

    pub fn sender(&self) -> mpsc::UnboundedSender<Msg> {
        self.tx.clone()
    }

    /// Snapshots of the worker table, for the status server.
    pub fn snapshots(&self) -> watch::Receiver<Snapshot> {
        self.snapshot.subscribe()
    }

    /// Runs until corral has stopped; returns the process exit code.
    pub async fn run(mut self, front: Front) -> i32 {
        self.front = Some(front);
        if let Some(parent) = self.reexec_parent {
            tracing::info!(
                "re-executed by corral pid {parent}: serving on its sockets; it stops once this one is in service"
            );
            let tx = self.tx.clone();
            let limit = self.cfg.deploy.ready_timeout;
            tokio::spawn(async move {
                tokio::time::sleep(limit).await;
                let _ = tx.send(Msg::ReexecDeadline);
            });
        }
        self.start_generation(1);
        let actions = self.core.start();
        if self.perform(actions) {
            return 0;
        }
        self.drift_checks = true;
        let recycling = self.cfg.workers.max_requests > 0 || self.cfg.workers.max_memory.is_some();
        let watchdog_every = crate::systemd::watchdog_interval();
        let mut watchdog =
            tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
        let mut usage = tokio::time::interval(Duration::from_millis(500));
        usage.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.core.next_deadline();
            let events = tokio::select! {
                msg = self.rx.recv() => match msg {
                    Some(m) => self.receive(m),
                    None => return 0,
                },
                _ = sleep_until(deadline) => vec![Event::Tick],
                _ = usage.tick(), if recycling => self.usage_events(),
                // Sent from this loop, so it stops when the loop is stuck.
                _ = watchdog.tick(), if watchdog_every.is_some() => {
                    crate::systemd::notify("WATCHDOG=1");
                    Vec::new()
                }
            };
            for event in events {
                let actions = self.core.on_event(Instant::now(), event);
                if self.perform(actions) {
                    self.answer_waiters();
                    return self.exit_code;
                }
            }
            self.answer_waiters();
            self.deploy_bookkeeping();
            self.notify_systemd();
            self.publish_snapshot();
        }
    }

    /// Turns a message into core events. A child's exit is held until its
    /// channel has closed (at most [`EXIT_HOLD`]), so that everything the
    /// worker said before it died (its boot error) reaches the core first:
    /// the reaper and the channel reader are separate tasks.
    fn receive(&mut self, msg: Msg) -> Vec<Event> {
        match msg {
            Msg::Control(serial, ControlEvent::Closed(error)) => {
                let mut events = vec![Event::ChannelClosed { serial, error }];
                match self.held_exits.remove(&serial) {
                    Some(status) => events.push(self.exited(serial, status)),
                    None if self.channels.contains_key(&serial) => {
                        self.closed.insert(serial);
                    }
                    None => {}
                }
                events
            }
            Msg::Exited(serial, status) => {
                if self.closed.remove(&serial) || !self.channels.contains_key(&serial) {
                    return vec![self.exited(serial, status)];
                }
                self.held_exits.insert(serial, status);
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(EXIT_HOLD).await;
                    let _ = tx.send(Msg::ExitHoldOver(serial));
                });
                Vec::new()
            }
            Msg::ExitHoldOver(serial) => match self.held_exits.remove(&serial) {
                Some(status) => vec![self.exited(serial, status)],
                None => Vec::new(),
            },
            other => self.translate(other).into_iter().collect(),
        }
    }

    /// The worker process is gone: that, not its channel's EOF, ends it. A
    /// process it left behind (a subprocess holding its channel) keeps no
    /// request waiting: the channel is shut down here.
    fn exited(&mut self, serial: u64, status: std::process::ExitStatus) -> Event {
        if let Some(ch) = self.channels.remove(&serial) {
            ch.shutdown();
        }
        self.procs.remove(&serial);
        self.closed.remove(&serial);
        Event::Exited {
            serial,
            exit: core::exit_of(status),
        }
    }

    /// Turns a message into a core event (or handles it here).
    fn translate(&mut self, msg: Msg) -> Option<Event> {
        match msg {
            Msg::Control(serial, ControlEvent::Booted(info)) => Some(Event::Booted {
                serial,
                import_ms: info.import_ms,
            }),
            Msg::Control(serial, ControlEvent::BootFailed(error)) => {
                Some(Event::BootFailed { serial, error })
            }
            // Handled by `receive` (exits wait for their channel to close).
            Msg::Control(_, ControlEvent::Closed(_)) | Msg::Exited(..) | Msg::ExitHoldOver(_) => {
                None
            }
            Msg::Control(serial, ControlEvent::Heartbeat) => Some(Event::Heartbeat { serial }),
            Msg::ReexecDeadline => {
                if self.reexec_parent.is_some() && self.recorded_good == 0 {
                    tracing::error!(
                        "re-exec: not in service within {:?}; exiting, the old corral keeps serving",
                        self.cfg.deploy.ready_timeout
                    );
                    self.exit_code = 1;
                    self.front = None;
                    return Some(Event::Stop { fast: true });
                }
                None
            }
            Msg::Signal(OsSignal::Usr1) => {
                // Opening files is blocking I/O: not on the supervisor loop.
                tokio::task::spawn_blocking(|| {
                    let reopened = crate::logfile::reopen_all();
                    if reopened.is_empty() {
                        tracing::info!(
                            "SIGUSR1: corral logs to stderr; there is no log file to reopen"
                        );
                    }
                    for (path, error) in reopened {
                        match error {
                            None => tracing::info!("SIGUSR1: reopened {}", path.display()),
                            Some(e) => tracing::error!("SIGUSR1: kept the old file: {e}"),
                        }
                    }
                });
                None
            }
            Msg::Signal(OsSignal::Usr2) => {
                if self.reexec_started || self.draining {
                    tracing::warn!("SIGUSR2 ignored: a re-exec or a stop is already under way");
                    return None;
                }
                if crate::reaper::is_init() {
                    // The new corral would be our child, and when PID 1
                    // exits the kernel kills every process of the namespace.
                    tracing::warn!(
                        "SIGUSR2 ignored: corral is PID 1 (a container), which cannot hand over to a new corral; restart the container, or reload (SIGHUP) for new code"
                    );
                    return None;
                }
                match crate::reexec::spawn(&self.sockets) {
                    Ok(pid) => {
                        self.reexec_started = true;
                        self.reexec_child = Some(pid);
                        tracing::info!(
                            "SIGUSR2: started a new corral (pid {pid}) on the same sockets; this one (pid {}) stops once it is in service",
                            std::process::id()
                        );
                    }
                    Err(e) => tracing::error!("SIGUSR2: cannot start a new corral: {e}"),
                }
                None
            }
            Msg::Replace(serial, reason) => Some(Event::Replace { serial, reason }),
            Msg::Probed(serial, result) => Some(Event::ProbeResult { serial, result }),
            Msg::HookDone(run) => {
                self.hook = Some(run);
                None
            }
            Msg::RolledBack(Ok(what)) => {
                if self.core.reload.is_some() || self.core.phase != core::Phase::Running {
                    return None;
                }
                let generation = self.core.next_generation();
                tracing::warn!(
                    "rollback: {what}; reloading the restored code as generation {generation}"
                );
                self.rollback_generation = Some(generation);
                self.start_generation(generation);
                Some(Event::Reload { timeout: None })
            }
            Msg::RolledBack(Err(why)) => {
                tracing::error!("rollback failed: {why}");
                None
            }
            Msg::Reload(timeout, waiter) => {
                if self.draining || self.core.phase == core::Phase::Stopping {
                    if let Some(w) = waiter {
                        let _ = w.send(Err("corral is stopping".into()));
                    }
                    return None;
                }
                self.new_waiter = waiter;
                if self.core.reload.is_none() {
                    self.start_generation(self.core.next_generation());
                }
                Some(Event::Reload { timeout })
            }
            Msg::Scale(count) => Some(Event::Scale { count }),
            Msg::Drift(drift) => {
                if let Some(msg) = &drift
                    && self.drift.as_ref() != Some(msg)
                {
                    tracing::warn!("revision drift: {msg}");
                }
                self.drift = drift;
                None
            }
            Msg::Ping(reply) => {
                let _ = reply.send(());
                None
            }
            Msg::Signal(OsSignal::Term) => {
                if self.core.phase == core::Phase::Stopping {
                    return None;
                }
                if self.delaying {
                    return self.graceful_stop("SIGTERM again: the rest of shutdown_delay skipped");
                }
                if self.draining {
                    return None;
                }
                // Not ready from now on (the snapshot says stopping), and
                // nothing reloads or re-executes any more.
                self.draining = true;
                let delay = self.cfg.server.shutdown_delay;
                // A USR2 hand-over needs no delay: the new corral already
                // serves on the same sockets.
                if !delay.is_zero() && self.reexec_child.is_none() {
                    tracing::info!(
                        "SIGTERM: /health/ready answers 503 from now on; serving for shutdown_delay ({delay:?}) before the graceful stop (a second SIGTERM skips the wait)"
                    );
                    self.delaying = true;
                    let tx = self.tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = tx.send(Msg::DelayOver);
                    });
                    return None;
                }
                self.graceful_stop("SIGTERM")
            }
            Msg::DelayOver => {
                if !self.delaying {
                    return None;
                }
                self.graceful_stop("shutdown_delay is over")
            }
            Msg::Signal(sig @ (OsSignal::Int | OsSignal::Quit)) => {
                tracing::info!("{}: fast stop", sig.name());
                self.delaying = false;
                if let Some(front) = self.front.take() {
                    front.stop_now();
                }
                Some(Event::Stop { fast: true })
            }
            Msg::Signal(OsSignal::Hup) => {
                if self.draining {
                    return None;
                }
                tracing::info!("SIGHUP: reload");
                if self.core.reload.is_none() {
                    self.start_generation(self.core.next_generation());
                }
                Some(Event::Reload { timeout: None })
            }
            Msg::Signal(OsSignal::Ttin) => {
                let count = self.core.active() + 1;
                tracing::info!("SIGTTIN: one more worker ({count})");
                Some(Event::Scale { count })
            }
            Msg::Signal(OsSignal::Ttou) => {
                let count = self.core.active().saturating_sub(1);
                if count == 0 {
                    tracing::warn!("SIGTTOU: already at one worker; ignoring");
                    return None;
                }
                tracing::info!("SIGTTOU: one less worker ({count})");
                Some(Event::Scale { count })
            }
            Msg::FrontDrained(in_time) => {
                if !in_time {
                    tracing::warn!(
                        "graceful_timeout ({:?}) ran out with requests still in flight",
                        self.cfg.workers.graceful_timeout
                    );
                }
                Some(Event::Stop { fast: false })
            }
        }
    }

    /// The graceful stop (TERM, after `shutdown_delay`): the front stops
    /// accepting and finishes the requests in flight, then the workers stop.
    fn graceful_stop(&mut self, why: &str) -> Option<Event> {
        self.delaying = false;
        tracing::info!(
            "{why}: graceful stop (finishing requests in flight, up to {:?})",
            self.cfg.workers.graceful_timeout
        );
        if let Some(front) = self.front.take() {
            let grace = self.cfg.workers.graceful_timeout;
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let in_time = front.shutdown(grace).await;
                let _ = tx.send(Msg::FrontDrained(in_time));
            });
        }
        // Nothing starts any more, even if a worker exits meanwhile
        // (systemd sends TERM to every process of the unit).
        Some(Event::Drain)
    }

    /// Performs the core's actions; true when the supervisor may exit.
    fn perform(&mut self, actions: Vec<Action>) -> bool {
        let mut exit = false;
        for action in actions {
            match action {
                Action::Spawn {
                    slot,
                    serial,
                    generation,
                } => {
                    let event = self.spawn(slot, serial, generation);
                    let more = self.core.on_event(Instant::now(), event);
                    exit |= self.perform(more);
                }
                Action::Signal { serial, pid, sig } => {
                    if sig == Sig::Kill {
                        self.collect_stacks(serial, pid);
                    }
                    // Only through the handle: once the exit is seen there
                    // is none, and the pid may be someone else's.
                    if let Some((process, _)) = self.procs.get(&serial) {
                        process.signal(match sig {
                            Sig::Term => libc::SIGTERM,
                            Sig::Quit => libc::SIGQUIT,
                            Sig::Kill => libc::SIGKILL,
                            Sig::DumpStacks => libc::SIGUSR1,
                        });
                    }
                }
                Action::Probe { serial } => self.probe(serial),
                Action::Publish(serials) => {
                    let list = serials
                        .iter()
                        .filter_map(|s| self.channels.get(s).cloned())
                        .collect();
                    self.router.publish(list);
                    // /status and /health/ready agree with the router (and
                    // with the log lines that follow) at once.
                    self.publish_snapshot();
                }
                Action::Log(Level::Info, m) => tracing::info!("{m}"),
                Action::Log(Level::Warn, m) => tracing::warn!("{m}"),
                Action::Log(Level::Error, m) => tracing::error!("{m}"),
                Action::Exit => exit = true,
            }
        }
        exit
    }

    fn spawn(&mut self, slot: usize, serial: u64, generation: u64) -> Event {
        let info = self.gens.get(&generation).cloned().unwrap_or_default();
        if self.drift_checks && self.core.reload.is_none() && generation == self.core.generation {
            self.check_drift(generation, &info);
        }
        let spawned = match self.launcher.spawn(slot, generation, &info) {
            Ok(s) => s,
            Err(e) => {
                return Event::SpawnFailed {
                    serial,
                    error: e.to_string(),
                };
            }
        };
        let pid = spawned.pid;
        self.procs.insert(serial, (spawned.process, spawned.stacks));
        let mut child = spawned.child;
        if let Some(out) = child.stdout.take() {
            crate::worker::output::forward(out, slot, pid, "stdout");
        }
        if let Some(err) = child.stderr.take() {
            crate::worker::output::forward(err, slot, pid, "stderr");
        }
        let capacity = crate::worker::channel::Capacity {
            threads: self.cfg.workers.threads,
            asgi: self.cfg.workers.concurrency,
        };
        let channel = Channel::start(
            serial,
            slot,
            pid,
            spawned.sock,
            self.control_tx.clone(),
            capacity,
        );
        self.channels.insert(serial, channel);
        let tx = self.tx.clone();
        let (watch, ours) = (spawned.watch, spawned.ours);
        tokio::spawn(async move {
            // The app's subprocesses go with their worker: once it has
            // exited (drained, or killed after its grace period), whatever
            // is left in its process group is killed, while the unreaped
            // worker still holds the group's id (see `Process::exited`).
            watch.exited().await;
            watch.signal_group(libc::SIGKILL);
            if let Ok(status) = child.wait().await {
                let _ = tx.send(Msg::Exited(serial, status));
            }
            drop(ours);
        });
        tracing::debug!("worker {slot} (pid {pid}) starting");
        Event::Spawned { serial, pid }
    }

    /// A worker of a running generation is (re)started: if the code on disk
    /// is no longer the generation's, say so (the worker may run code the
    /// generation never checked; a reload is how to deploy it). The
    /// revision command (git) runs off this loop; the answer comes back as
    /// [`Msg::Drift`].
    fn check_drift(&self, generation: u64, info: &crate::deploy::GenerationInfo) {
        let Some(running) = info.revision.clone() else {
            return;
        };
        let dir = info
            .chdir
            .clone()
            .or_else(|| self.cfg.app.chdir.clone())
            .unwrap_or_else(|| std::env::current_dir().unwrap_or_default());
        let source = self.cfg.deploy.revision.clone();
        let tx = self.tx.clone();
        tokio::task::spawn_blocking(move || {
            let drift = match crate::deploy::revision(&source, &dir) {
                Some(disk) if disk != running => Some(format!(
                    "generation {generation} runs {running}; disk now has {disk}; reload to deploy it"
                )),
                _ => None,
            };
            let _ = tx.send(Msg::Drift(drift));
        });
    }

    /// Resolves the folder and revision the generation will run.
    fn start_generation(&mut self, generation: u64) {
        let info = crate::deploy::resolve(&self.cfg);
        tracing::info!(
            "generation {generation}: revision {}{}",
            info.revision.as_deref().unwrap_or("unknown"),
            info.chdir
                .as_ref()
                .map(|d| format!(", folder {}", d.display()))
                .unwrap_or_default()
        );
        self.gens.insert(generation, info);
    }

    /// Records good generations in the state dir, and runs the rollback
    /// hook once per failed generation (and once at a cold start that has
    /// no worker in service after every slot failed).
    fn deploy_bookkeeping(&mut self) {
        let generation = self.core.generation;
        if generation > self.recorded_good
            && self.core.reload.is_none()
            && self.core.active() > 0
            && self
                .core
                .in_service()
                .filter(|w| w.generation == generation)
                .count()
                >= self.core.active()
        {
            self.recorded_good = generation;
            self.drift = None;
            if let Some(gate) = &self.accept_gate {
                let _ = gate.send(true);
            }
            if let Some(parent) = self.reexec_parent.take() {
                // The old corral started us: while it lives it is our parent,
                // and only then is the pid surely still its own.
                if std::os::unix::process::parent_id() == parent {
                    tracing::info!(
                        "re-exec: in service; asking the old corral (pid {parent}) to stop"
                    );
                    signal(parent, libc::SIGTERM);
                } else {
                    tracing::info!("re-exec: in service; the old corral (pid {parent}) is gone");
                }
            }
            if let Some(info) = self.gens.get(&generation) {
                if let Some(rev) = &info.revision {
                    self.last_good = Some(rev.clone());
                    tracing::info!("revision {rev} is the last known good one");
                }
                self.state.good(info.revision.clone(), info.chdir.clone());
            }
        }
        let failure = match &self.core.last_reload {
            Some(core::ReloadOutcome::Failed {
                generation,
                reason,
                detail,
                ..
            }) if self.handled_failure != Some(*generation) => {
                self.handled_failure = Some(*generation);
                Some(crate::deploy::Failure {
                    revision: self.gens.get(generation).and_then(|g| g.revision.clone()),
                    reason: reason.clone(),
                    detail: detail.clone(),
                })
            }
            _ => None,
        };
        let failed_generation = match &self.core.last_reload {
            Some(core::ReloadOutcome::Failed { generation, .. }) => Some(*generation),
            _ => None,
        };
        let cold = if failure.is_none()
            && !self.cold_hook_ran
            && self.recorded_good == 0
            && self.core.phase == core::Phase::Running
            && self.core.in_service().count() == 0
            && self.core.slots.iter().all(|s| s.failures > 0)
        {
            self.cold_hook_ran = true;
            let err = self.core.slots.iter().find_map(|s| s.last_error.clone());
            Some(crate::deploy::Failure {
                revision: self.gens.get(&1).and_then(|g| g.revision.clone()),
                reason: format!(
                    "no worker of generation 1 could boot: {}",
                    err.as_ref()
                        .and_then(|e| e.text.trim_end().lines().last().map(str::to_string))
                        .unwrap_or_default()
                ),
                detail: err.map(|e| e.text),
            })
        } else {
            None
        };
        let is_cold = cold.is_some();
        if is_cold && self.cfg.deploy.exit_on_boot_failure {
            tracing::error!(
                "no worker could boot and exit_on_boot_failure is set: exiting with code {EXIT_BOOT_FAILURE}"
            );
            self.exit_code = EXIT_BOOT_FAILURE;
            let _ = self.tx.send(Msg::Signal(OsSignal::Quit));
            return;
        }
        let Some(failure) = failure.or(cold) else {
            return;
        };
        // The code a rollback restored failed too: say so, do not loop.
        let again = failed_generation.is_some()
            && failed_generation == self.rollback_generation
            && !is_cold;
        if again {
            tracing::error!("the restored code failed too; not rolling back again");
        }
        let builtin = self.cfg.deploy.rollback != crate::config::Rollback::None && !again;
        if self.cfg.deploy.rollback_hook.is_none() && !builtin {
            return;
        }
        let cfg = self.cfg.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            if let Some(run) = crate::deploy::run_hook(&cfg, &failure).await {
                let _ = tx.send(Msg::HookDone(run));
            }
            if builtin {
                let c = cfg.clone();
                let result =
                    tokio::task::spawn_blocking(move || crate::deploy::builtin_rollback(&c))
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()));
                let _ = tx.send(Msg::RolledBack(result));
            }
        });
    }

    /// Keeps systemd informed: READY=1 once min_ready workers are in service
    /// (so `systemctl start` waits, and fails on a broken deploy),
    /// RELOADING=1/READY=1 around reloads, STOPPING=1, and STATUS=.
    fn notify_systemd(&mut self) {
        use crate::systemd::notify;
        let active = self.core.active();
        let in_service = self.core.in_service().count();
        let status = format!(
            "STATUS={in_service}/{active} workers in service, generation {}, rev {}",
            self.core.generation,
            self.gens
                .get(&self.core.generation)
                .and_then(|g| g.revision.as_deref())
                .unwrap_or("unknown")
        );
        let stopping = self.draining || self.core.phase == core::Phase::Stopping;
        if stopping {
            if !self.sd_stopping {
                self.sd_stopping = true;
                match self.reexec_child {
                    // Handing over to the re-executed corral: it is the
                    // service now, not a stop.
                    Some(pid) if self.recorded_good > 0 => notify(&format!("MAINPID={pid}")),
                    _ => notify("STOPPING=1"),
                }
            }
            return;
        }
        let required = self.cfg.health.min_ready.required(active).max(1);
        let mut msg = Vec::new();
        if !self.sd_ready && in_service >= required {
            self.sd_ready = true;
            msg.push("READY=1".to_string());
        }
        match (&self.core.reload, self.sd_reloading) {
            (Some(r), None) => {
                self.sd_reloading = Some(r.generation);
                msg.push("RELOADING=1".into());
                msg.push(format!(
                    "MONOTONIC_USEC={}",
                    crate::systemd::monotonic_usec()
                ));
            }
            (None, Some(_)) => {
                self.sd_reloading = None;
                msg.push("READY=1".into());
            }
            _ => {}
        }
        if status != self.sd_status || !msg.is_empty() {
            self.sd_status = status.clone();
            msg.push(status);
        }
        if !msg.is_empty() && (self.sd_ready || msg.iter().any(|m| m.starts_with("STATUS"))) {
            notify(&msg.join("\n"));
        }
    }

    /// Tells `reload --wait` callers how their reload ended.
    fn answer_waiters(&mut self) {
        if let Some(w) = self.new_waiter.take() {
            match &self.core.reload {
                Some(r) => self.reload_waiters.push((r.generation, w)),
                None => {
                    let _ = w.send(Err("the reload did not start".into()));
                }
            }
        }
        let pending = self.core.reload.as_ref().map(|r| r.generation);
        let mut still = Vec::new();
        for (generation, w) in self.reload_waiters.drain(..) {
            if pending == Some(generation) {
                still.push((generation, w));
                continue;
            }
            let answer = match &self.core.last_reload {
                Some(core::ReloadOutcome::Done { generation: g, .. }) if *g == generation => {
                    Ok(ReloadDone {
                        generation,
                        revision: self.gens.get(&generation).and_then(|g| g.revision.clone()),
                    })
                }
                Some(core::ReloadOutcome::Failed {
                    generation: g,
                    reason,
                    detail,
                    ..
                }) if *g == generation => Err(match detail {
                    Some(d) => format!("{reason}\n\n{}", d.trim_end()),
                    None => reason.clone(),
                }),
                _ if self.core.phase == core::Phase::Stopping => Err("corral is stopping".into()),
                _ => Err("the reload was superseded".into()),
            };
            let _ = w.send(answer);
        }
        self.reload_waiters = still;
    }

    /// Before a worker is killed: log the stacks it dumped (on SIGUSR1) and
    /// keep them with its boot error for /status.
    fn collect_stacks(&mut self, serial: u64, pid: u32) {
        let Some(stacks) = self.procs.get_mut(&serial).and_then(|(_, s)| s.take()) else {
            return;
        };
        let slot = self.core.workers.get(&serial).map(|w| w.slot);
        tracing::error!(
            "Python stacks of worker {} (pid {pid}) before it is killed:\n{}",
            slot.map(|s| s.to_string()).unwrap_or_default(),
            stacks.trim_end()
        );
        self.core.attach_stacks(serial, &stacks);
    }

    /// Reports each worker's requests and memory so the core can recycle.
    fn usage_events(&self) -> Vec<Event> {
        self.channels
            .iter()
            .map(|(serial, ch)| Event::Usage {
                serial: *serial,
                requests: ch.served.load(std::sync::atomic::Ordering::Relaxed),
                rss: self
                    .cfg
                    .workers
                    .max_memory
                    .and_then(|_| crate::status::rss_bytes(ch.pid)),
            })
            .collect()
    }

    fn probe(&self, serial: u64) {
        let (Some(ch), Some(path)) = (self.channels.get(&serial), &self.cfg.health.ready_path)
        else {
            return;
        };
        let (ch, path, tx) = (ch.clone(), path.clone(), self.tx.clone());
        let timeout = self.cfg.health.probe_timeout;
        tokio::spawn(async move {
            let result = crate::worker::probe::probe(&ch, &path, timeout).await;
            let _ = tx.send(Msg::Probed(serial, result));
        });
    }

    fn publish_snapshot(&self) {
        let mut snap = snapshot::take(&self.core, &self.channels, self.started, self.draining);
        snap.revision = self
            .gens
            .get(&self.core.generation)
            .and_then(|g| g.revision.clone());
        snap.last_good_revision = self.last_good.clone();
        snap.rollback_hook = self.hook.clone();
        snap.drift = self.drift.clone();
        self.snapshot.send_replace(snap);
    }
}

/// Longest a child's exit waits for its channel's last words.
const EXIT_HOLD: Duration = Duration::from_millis(500);

/// Exit code when no worker could boot and `exit_on_boot_failure` is set.
pub const EXIT_BOOT_FAILURE: i32 = 3;

fn started_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// kill(2) on another corral's pid (the parent or child of a USR2
/// re-exec, which is not a worker); 0 is ignored.
pub fn signal(pid: u32, sig: i32) {
    if pid == 0 {
        return;
    }
    // SAFETY: kill(2) takes no pointers. Workers are never signalled this
    // way (see `Process`): this is for the corral that re-executed us,
    // checked to be our parent still, so its pid cannot have been reused.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}
