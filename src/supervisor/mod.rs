//! The supervisor: one task that owns the worker table. The life-cycle rules
//! live in [`core`] (a pure state machine); this actor feeds it events
//! (control frames, exits, signals, timers) and performs its actions: spawn
//! a worker, signal one, publish the in-service set to the router, log. It
//! publishes a [`Snapshot`] of the table on a `watch` channel for the status
//! server. Each child is awaited exactly once, by its own task.
//!
//! Around the loop: `handlers.rs` (one `handle_*` per message kind),
//! [`policy`] (the deploy policy, pure: when a generation is good, when to
//! roll back or exit), `rollout.rs` (generations, the policy's decisions
//! carried out, systemd, `reload --wait`), [`snapshot`] (what the status
//! server reads). Others reach the loop through a [`SupervisorHandle`].

mod arbiter;
pub mod core;
mod handlers;
pub mod metrics;
pub mod policy;
mod rollout;
pub mod snapshot;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::front::Front;
use crate::router::{Router, Split};
use crate::systemd::NotifySocket;
use crate::worker::channel::{Channel, ControlEvent};
use crate::worker::pidfd::Process;
use crate::worker::process::Launcher;
use crate::worker::stacks::Stacks;
use core::{Action, CanaryRun, Core, Event, Level, ProbeSettings, Settings, Sig};
use policy::{Policy, PolicySettings};
pub use snapshot::{Snapshot, rss_bytes};

/// The signals corral acts on (see `signals.rs`, which forwards them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Int,
    Quit,
    Hup,
    /// One more worker.
    Ttin,
    /// One worker less.
    Ttou,
    /// Reopen log files.
    Usr1,
    /// Re-execute the binary without closing the listen sockets.
    Usr2,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Term => "SIGTERM",
            Signal::Int => "SIGINT",
            Signal::Quit => "SIGQUIT",
            Signal::Hup => "SIGHUP",
            Signal::Ttin => "SIGTTIN",
            Signal::Ttou => "SIGTTOU",
            Signal::Usr1 => "SIGUSR1",
            Signal::Usr2 => "SIGUSR2",
        }
    }
}

/// Reads the config file again, as corral read it at start (the same
/// flags and environment): set when corral runs from a file.
pub type ReadConfig = Arc<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// What a generation's workers are started with, fixed when it starts: a
/// reload that read new settings leaves the older generations' own (a
/// worker of the old generation that restarts during a failed reload runs
/// as before).
struct GenSetup {
    /// The app it serves (`app.module`), for `/status`.
    app: String,
    launcher: Arc<Launcher>,
    capacity: crate::worker::channel::Capacity,
    /// The request timeout (`workers.timeout`; none for 0).
    timeout: Duration,
}

impl GenSetup {
    fn of(cfg: &Config, launcher: &Arc<Launcher>) -> GenSetup {
        GenSetup {
            app: cfg.app.module.clone(),
            launcher: launcher.clone(),
            capacity: crate::worker::channel::Capacity {
                threads: cfg.workers.threads,
                concurrency: cfg.workers.concurrency,
            },
            // `timeout = 0`: no limit, as gunicorn's.
            timeout: match cfg.workers.timeout {
                t if t.is_zero() => crate::front::handler::NO_DEADLINE,
                t => t,
            },
        }
    }
}

/// New settings a reload read, on trial until their generation is in
/// service: the config and launcher they replaced, and the core's settings
/// they give.
struct Trial {
    generation: u64,
    before: (Arc<Config>, Arc<Launcher>),
    settings: Settings,
    /// The worker count the file changed to, applied with the rest.
    count: Option<usize>,
}

/// How the rest of corral talks to the supervisor loop: it queues a
/// [`Msg`]; the loop handles one at a time.
#[derive(Clone)]
pub struct SupervisorHandle {
    tx: mpsc::UnboundedSender<Msg>,
    replace: mpsc::UnboundedSender<(u64, String)>,
}

impl SupervisorHandle {
    pub fn send(&self, msg: Msg) -> Result<(), mpsc::error::SendError<Msg>> {
        self.tx.send(msg)
    }

    /// Where the front asks for a worker to be replaced (serial, reason:
    /// a request timed out on it); read by the loop itself.
    pub fn replace_requests(&self) -> mpsc::UnboundedSender<(u64, String)> {
        self.replace.clone()
    }
}

/// How far a TERM has got. From the TERM on, corral is not ready and
/// nothing reloads or re-executes; INT and QUIT go to the core's fast stop
/// at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Term {
    NotYet,
    /// Within `server.shutdown_delay`: serving as before.
    Delaying,
    /// The graceful stop: the front drains, then the workers stop.
    Draining,
}

/// Where this corral is in a USR2 hand-over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handover {
    None,
    /// Started by the corral with this pid: it is asked to stop once this
    /// one is in service.
    FromParent(u32),
    /// This corral started the new one with this pid, which takes over once
    /// its workers are in service.
    ToChild(u32),
}

/// A HUP or `reload` asked of this corral during a USR2 hand-over, until
/// the new corral takes over: if it gives up first, the reload is done
/// here (one passed on went with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ForChild {
    None,
    /// Not passed on yet: the new corral did not catch HUP yet.
    Waiting,
    /// Passed on to it as a SIGHUP.
    PassedOn,
}

/// How the supervisor stopped.
pub struct Stopped {
    pub code: i32,
    /// Another corral (the one a USR2 started, or the one that started this
    /// one) still serves on the listen sockets: their files stay.
    pub sockets_live_on: bool,
}

/// A reload that came up: its generation and revision.
#[derive(Debug, Clone)]
pub struct ReloadDone {
    pub generation: u64,
    pub revision: Option<String>,
}

/// How a reload ended that did not come up: it failed (the reason, and a
/// traceback or a canary's table), a stop cancelled it (no failure of
/// its code; `reload --wait` does not call it one), or it never started
/// because a failed reload's rollback was under way (nothing changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadError {
    Failed(String),
    Cancelled(String),
    NotStarted(String),
    /// This corral hands over to the one a USR2 started: that one is to
    /// be asked (`reload --wait` asks again until it answers).
    HandedOver(String),
}

impl From<String> for ReloadError {
    fn from(why: String) -> ReloadError {
        ReloadError::Failed(why)
    }
}

impl From<&str> for ReloadError {
    fn from(why: &str) -> ReloadError {
        ReloadError::Failed(why.to_string())
    }
}

/// What `reload --wait` hears.
pub type ReloadAnswer = Result<ReloadDone, ReloadError>;

/// Who asked for a reload on the control socket, and what they hear.
#[derive(Debug)]
pub enum Waiter {
    /// `reload --wait`: how the reload ended.
    Outcome(tokio::sync::oneshot::Sender<ReloadAnswer>),
    /// `reload`: what became of the request, at once: taken (started,
    /// queued or passed on; said in words), or refused, as `--wait`
    /// would hear it.
    Taken(tokio::sync::oneshot::Sender<Result<String, ReloadError>>),
}

impl Waiter {
    /// The reload's end, or a refusal; a [`Waiter::Taken`] hears it as
    /// taken when it came up.
    pub fn send(self, answer: ReloadAnswer) -> Result<(), ()> {
        match self {
            Waiter::Outcome(tx) => tx.send(answer).map_err(drop),
            Waiter::Taken(tx) => tx
                .send(answer.map(|d| format!("done: generation {} is in service", d.generation)))
                .map_err(drop),
        }
    }

    /// The reload was taken (`what`: started, queued, passed on): `reload`
    /// hears it now, and `reload --wait` goes on waiting (returned).
    pub fn taken(self, what: impl FnOnce() -> String) -> Option<Waiter> {
        match self {
            Waiter::Taken(tx) => {
                let _ = tx.send(Ok(what()));
                None
            }
            outcome => Some(outcome),
        }
    }

    /// Whether this one waits for the reload's end.
    pub fn waits(&self) -> bool {
        matches!(self, Waiter::Outcome(_))
    }
}

/// Reloads asked for while another was under way, folded into one: the
/// last one's timeout and canary, and every `reload --wait` waiting.
#[derive(Debug)]
struct QueuedReload {
    timeout: Option<Duration>,
    canary: Option<core::CanaryRun>,
    waiters: Vec<Waiter>,
    /// The generation that was starting when the first one came.
    behind: u64,
}

/// Everything that reaches the supervisor.
#[derive(Debug)]
pub enum Msg {
    Control(u64, ControlEvent),
    Exited(u64, std::process::ExitStatus),
    Replace(u64, String),
    Signal(Signal),
    /// A fast stop corral asks of itself, and why (the log says that, not
    /// a SIGQUIT no one sent).
    FastStop(&'static str),
    FrontDrained(bool),
    Probed(u64, Result<(), String>),
    /// The rollback hook finished.
    HookDone(crate::deploy::HookRun),
    /// A held exit may go to the core now, channel closed or not (a
    /// timer of the loop, as are `ReexecDeadline` and `DelayOver`).
    ExitHoldOver(u64),
    /// A re-executed corral had ready_timeout to get its workers in service.
    ReexecDeadline,
    /// The corral a USR2 started (this pid) has exited.
    ReexecExited(u32),
    /// The built-in rollback put the good code back (or could not).
    RolledBack(Result<String, String>),
    /// The rollback of a failed reload (its hook, then the built-in one)
    /// has ended: reloads may start again.
    RollbackEnded,
    /// Start a new generation; the sender (`corral reload --wait`) hears
    /// how it ended: Ok(generation and revision) or Err(reason and traceback).
    Reload(Option<Duration>, Option<core::CanaryRun>, Option<Waiter>),
    /// The config file, read again for a reload (a HUP's, when the waiter
    /// is None): the reload goes on with what it gives, or is refused.
    Reread(
        u64,
        Result<Box<Config>, String>,
        Option<Duration>,
        Option<core::CanaryRun>,
        Option<Waiter>,
    ),
    /// Run this many workers.
    Scale(usize),
    /// `corral promote` (true) or `corral abort` (false): end the running
    /// canary now; the sender hears whether one was running.
    Decide(bool, tokio::sync::oneshot::Sender<Result<(), String>>),
    /// What a revision check found: the drift message, or None.
    Drift(Option<String>),
    /// `server.shutdown_delay` after a TERM has passed.
    DelayOver,
    /// The status server checks that the loop answers (`/health/live`).
    Ping(tokio::sync::oneshot::Sender<()>),
}

pub struct Supervisor {
    /// The config the next generation starts with: what corral started
    /// with, then the `[app]` and `[workers]` of the file as each reload
    /// read it again (`config::reread`).
    cfg: Arc<Config>,
    launcher: Arc<Launcher>,
    /// Reads the config file again at each reload; `None`: corral runs
    /// from flags alone.
    reread: Option<ReadConfig>,
    /// Each live generation's launcher and worker capacity.
    setups: HashMap<u64, GenSetup>,
    /// What a reload read, until its generation is in service or fails.
    trial: Option<Trial>,
    /// The config file's reads for reloads: the last one started, and the
    /// last one handled.
    rereads: (u64, u64),
    /// The last read handled (`rereads.1`) read, and its reload started or
    /// was queued: a read that ends after it and is folded into it hears
    /// its outcome, even once it has ended.
    last_read_reloads: bool,
    /// Why the config file did not read at the last reload (cleared by one
    /// that read), for `/status`; and how many reloads that refused.
    config_error: Option<String>,
    refused: u64,
    router: Arc<Router>,
    /// The front's event loops: each worker's channel runs on its slot's.
    shards: Arc<crate::shards::Shards>,
    core: Core,
    channels: HashMap<u64, Arc<Channel>>,
    /// Each live worker's process handle (signals go through its pidfd)
    /// and stack dump file, until its exit is seen.
    procs: HashMap<u64, (Process, Stacks)>,
    /// `[hooks]`: each run in a task of its own.
    hooks: crate::hooks::Hooks,
    /// The process that runs gunicorn's arbiter hooks, when the config
    /// file has any ([`arbiter`]).
    arbiter: Option<arbiter::Arbiter>,
    /// Why the front asked for a worker to be replaced (a request, by its
    /// id, timed out on it), for the log line of its stacks.
    replace_reasons: HashMap<u64, String>,
    tx: mpsc::UnboundedSender<Msg>,
    rx: mpsc::UnboundedReceiver<Msg>,
    /// Worker control frames and the front's replace requests, read by the
    /// loop directly (no relay task).
    control_tx: mpsc::UnboundedSender<(u64, ControlEvent)>,
    control_rx: mpsc::UnboundedReceiver<(u64, ControlEvent)>,
    replace_tx: mpsc::UnboundedSender<(u64, String)>,
    replace_rx: mpsc::UnboundedReceiver<(u64, String)>,
    front: Option<Front>,
    /// The app port's TLS certificates, read again on each reload.
    tls: Option<Arc<crate::tls::Tls>>,
    /// How far a TERM has got.
    term: Term,
    /// The loop's own deadlines and what each delivers (see `after`).
    timers: Vec<(Instant, Msg)>,
    snapshot: watch::Sender<Snapshot>,
    started: Instant,
    /// `reload --wait` callers: the generation they wait for.
    reload_waiters: Vec<(u64, Waiter)>,
    new_waiter: Option<(u64, Waiter)>,
    /// Folder and revision of each generation, resolved when it started.
    gens: HashMap<u64, crate::worker::process::GenerationInfo>,
    /// When a generation is good, and what a failure sets off.
    policy: Policy,
    /// The last run of the rollback hook.
    hook: Option<crate::deploy::HookRun>,
    /// Runs of the rollback hook by how they ended, and built-in rollbacks.
    hook_runs: std::collections::BTreeMap<String, u64>,
    rollbacks: u64,
    /// A failed reload's rollback runs (the hook, the built-in one):
    /// its generation and since when. No reload starts meanwhile, or the
    /// rollback would put the old code back over the newer one.
    rolling_back: Option<(u64, Instant)>,
    /// A reload asked for while another was under way: it starts once
    /// that one has ended ([`Supervisor::start_queued_reload`]).
    queued_reload: Option<QueuedReload>,
    /// A HUP or `reload` during a USR2 hand-over: passed on to the new
    /// corral once it can take it, or started here if it gives up.
    reload_for_child: ForChild,
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
    /// Listen sockets a USR2 re-exec hands down.
    sockets: Vec<(String, std::os::fd::RawFd)>,
    handover: Handover,
    accept_gate: Option<watch::Sender<bool>>,
    /// What systemd has been told, and where to tell it.
    notifier: crate::systemd::Notifier,
    systemd: NotifySocket,
    /// The canary that runs (its share and both generations' figures), and
    /// the routing set last published, which it splits.
    split: Option<Arc<Split>>,
    published: Vec<u64>,
    /// A failed canary's figures for the rollback hook: its generation and
    /// the environment.
    canary_env: Option<(u64, Vec<(String, String)>)>,
    /// Started by a USR2 re-exec: what moves the pid file and the control
    /// socket from the old corral to this one, run once this one is in
    /// service (until then the old corral's stay as they are).
    takeover: Option<Takeover>,
}

/// See [`Supervisor::set_takeover`].
pub type Takeover = Box<dyn FnOnce() + Send>;

impl Supervisor {
    pub fn new(
        cfg: Arc<Config>,
        launcher: Launcher,
        router: Arc<Router>,
        systemd: NotifySocket,
    ) -> Supervisor {
        let (tx, rx) = mpsc::unbounded_channel();
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (replace_tx, replace_rx) = mpsc::unbounded_channel();
        let core = Core::new(settings(&cfg, std::process::id() as u64 ^ started_nanos()));
        let started = Instant::now();
        let last_good = crate::deploy::last_good(&cfg.deploy.state_dir);
        let state = crate::deploy::StateWriter::start(cfg.deploy.state_dir.clone());
        let (snapshot, _) = watch::channel(Snapshot::default());
        Supervisor {
            hooks: crate::hooks::Hooks::new(&cfg),
            arbiter: None,
            launcher: Arc::new(launcher),
            reread: None,
            setups: HashMap::new(),
            trial: None,
            rereads: (0, 0),
            last_read_reloads: false,
            config_error: None,
            refused: 0,
            router,
            shards: crate::shards::Shards::single(),
            core,
            channels: HashMap::new(),
            procs: HashMap::new(),
            replace_reasons: HashMap::new(),
            tx,
            rx,
            control_tx,
            control_rx,
            replace_tx,
            replace_rx,
            front: None,
            tls: None,
            term: Term::NotYet,
            timers: Vec::new(),
            snapshot,
            started,
            reload_waiters: Vec::new(),
            new_waiter: None,
            gens: HashMap::new(),
            policy: Policy::new(PolicySettings {
                exit_on_boot_failure: cfg.deploy.exit_on_boot_failure,
                builtin_rollback: cfg.deploy.rollback != crate::config::Rollback::None,
                hook: cfg.deploy.rollback_hook.is_some(),
                canary: cfg.deploy.canary.map(|c| c.thresholds),
            }),
            hook: None,
            hook_runs: Default::default(),
            rollbacks: 0,
            rolling_back: None,
            queued_reload: None,
            reload_for_child: ForChild::None,
            exit_code: 0,
            drift: None,
            last_good,
            state,
            drift_checks: false,
            held_exits: HashMap::new(),
            closed: std::collections::HashSet::new(),
            sockets: Vec::new(),
            handover: Handover::None,
            accept_gate: None,
            notifier: crate::systemd::Notifier::default(),
            systemd,
            split: None,
            published: Vec::new(),
            canary_env: None,
            takeover: None,
            cfg,
        }
    }

    /// Lets each reload read the config file again.
    pub fn set_reread(&mut self, reread: Option<ReadConfig>) {
        self.reread = reread;
    }

    /// Opened once this corral is in service (a re-exec accepts only then).
    pub fn set_accept_gate(&mut self, gate: watch::Sender<bool>) {
        self.accept_gate = Some(gate);
    }

    /// Started by a USR2 of the corral with this pid (from `CORRAL_REEXEC_PARENT`):
    /// it is asked to stop once this one is in service.
    /// The certificates `corral reload` and SIGHUP read again.
    pub fn set_tls(&mut self, tls: Arc<crate::tls::Tls>) {
        self.tls = Some(tls);
    }

    /// Reads the TLS files again (every certificate set); a bad new
    /// certificate or key on any set keeps every set in force, and the
    /// error is returned for the reload to report.
    fn reload_tls(&self) -> Result<(), String> {
        let Some(tls) = &self.tls else { return Ok(()) };
        match tls.reload() {
            Ok(()) => {
                tracing::info!("TLS: certificate and key read again");
                Ok(())
            }
            Err(e) => {
                let message = format!("TLS: {e}; the certificate in force stays");
                tracing::error!("{message}");
                Err(message)
            }
        }
    }

    pub fn set_reexec_parent(&mut self, parent: Option<u32>) {
        self.handover = match parent {
            Some(parent) => Handover::FromParent(parent),
            None => Handover::None,
        };
    }

    /// Started by a USR2 re-exec: `takeover` runs (off the loop) once this
    /// corral is in service, before the old one is asked to stop.
    pub fn set_takeover(&mut self, takeover: Takeover) {
        self.takeover = Some(takeover);
    }

    /// Whether the corral whose USR2 started this one still serves, this
    /// one not yet in service: while it lives it is our parent, and only
    /// then is the pid surely still its own.
    fn parent_serves(&self) -> bool {
        matches!(self.handover, Handover::FromParent(parent) if std::os::unix::process::parent_id() == parent)
    }

    /// The front's shards (by default the current runtime alone).
    pub fn set_shards(&mut self, shards: Arc<crate::shards::Shards>) {
        self.shards = shards;
    }

    /// The listen sockets (configured address, fd) a USR2 hands down.
    pub fn set_sockets(&mut self, sockets: Vec<(String, std::os::fd::RawFd)>) {
        self.sockets = sockets;
    }

    pub fn handle(&self) -> SupervisorHandle {
        SupervisorHandle {
            tx: self.tx.clone(),
            replace: self.replace_tx.clone(),
        }
    }

    /// A stop began: TERM (even within its shutdown delay), INT or QUIT.
    fn stopping(&self) -> bool {
        self.term != Term::NotYet || self.core.phase == core::Phase::Stopping
    }

    /// Snapshots of the worker table, for the status server.
    pub fn snapshots(&self) -> watch::Receiver<Snapshot> {
        self.snapshot.subscribe()
    }

    /// Runs until corral has stopped; returns the process exit code.
    /// Serves until corral stops: the exit code, and whether another
    /// corral still serves on the listen sockets (see [`Stopped`]).
    pub async fn run(mut self, front: Front) -> Stopped {
        let code = self.serve(front).await;
        let sockets_live_on = match self.handover {
            Handover::None => false,
            Handover::ToChild(_) => true,
            // Not in service, so the corral that started this one (while it
            // is still our parent) serves on.
            Handover::FromParent(_) => self.parent_serves(),
        };
        Stopped {
            code,
            sockets_live_on,
        }
    }

    async fn serve(&mut self, front: Front) -> i32 {
        self.front = Some(front);
        if let Handover::FromParent(parent) = self.handover {
            tracing::info!(
                "re-executed by corral pid {parent}: serving on its sockets; it stops once this one is in service"
            );
            self.after(self.cfg.deploy.ready_timeout, Msg::ReexecDeadline);
        }
        self.start_generation(1);
        if self.cfg.app.gunicorn_hooks.is_some() {
            // on_starting runs before any worker starts, as under gunicorn.
            let info = self.gens.get(&1).cloned().unwrap_or_default();
            self.arbiter =
                arbiter::Arbiter::start(&self.launcher, &info, self.cfg.deploy.hook_timeout).await;
        }
        let actions = self.core.start();
        if self.perform(actions) {
            return 0;
        }
        // /status shows the first generation booting, not an empty
        // supervisor (pid 0, no slot) until a worker's first report.
        self.publish_snapshot();
        self.drift_checks = true;
        let watchdog_every = self.systemd.watchdog_interval();
        let mut watchdog =
            tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
        let mut usage = tokio::time::interval(Duration::from_millis(500));
        usage.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // A canary is judged at least this often.
            let canary_check = self.split.as_ref().map(|_| Instant::now() + CANARY_CHECK);
            let deadline = self
                .core
                .next_deadline()
                .into_iter()
                .chain(self.next_timer())
                .chain(canary_check)
                .min();
            let events = tokio::select! {
                msg = self.rx.recv() => match msg {
                    Some(m) => self.receive(m),
                    None => return 0,
                },
                Some((serial, event)) = self.control_rx.recv() => {
                    self.receive(Msg::Control(serial, event))
                }
                Some((serial, reason)) = self.replace_rx.recv() => {
                    self.replace_reasons.entry(serial).or_insert_with(|| reason.clone());
                    self.receive(Msg::Replace(serial, reason))
                }
                _ = sleep_until(deadline) => self.on_deadline(),
                _ = usage.tick(), if self.recycling() => self.usage_events(),
                // Sent from this loop, so it stops when the loop is stuck.
                _ = watchdog.tick(), if watchdog_every.is_some() => {
                    self.systemd.send("WATCHDOG=1");
                    Vec::new()
                }
            };
            for event in events {
                if let Some(arbiter) = &self.arbiter {
                    match &event {
                        Event::Reload { .. } => arbiter.reloading(),
                        Event::Scale { count } => arbiter.scaled(*count, self.core.active()),
                        _ => {}
                    }
                }
                let actions = self.core.on_event(Instant::now(), event);
                if self.perform(actions) {
                    self.answer_waiters();
                    self.start_queued_reload();
                    // The workers' last exits are heard before corral goes.
                    if let Some(arbiter) = &mut self.arbiter {
                        arbiter.finish(self.cfg.deploy.hook_timeout).await;
                    }
                    self.hooks.finish().await;
                    return self.exit_code;
                }
            }
            self.answer_waiters();
            self.deploy_bookkeeping();
            self.start_queued_reload();
            self.notify_systemd();
            self.publish_snapshot();
        }
    }

    /// Delivers `msg` to this loop once `delay` has passed: the actor's own
    /// deadlines (exit holds, the shutdown delay, the re-exec deadline) are
    /// timers of the loop, as the workers' are the core's; no task sleeps
    /// on the side.
    fn after(&mut self, delay: Duration, msg: Msg) {
        self.timers.push((Instant::now() + delay, msg));
    }

    fn next_timer(&self) -> Option<Instant> {
        self.timers.iter().map(|(at, _)| *at).min()
    }

    /// A deadline passed: the loop's own timers that are due, then a tick
    /// for the core (which acts on whatever of its deadlines is due).
    fn on_deadline(&mut self) -> Vec<Event> {
        let now = Instant::now();
        let (due, later) = std::mem::take(&mut self.timers)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.timers = later;
        let mut events: Vec<Event> = due
            .into_iter()
            .flat_map(|(_, msg): (Instant, Msg)| self.receive(msg))
            .collect();
        events.push(Event::Tick);
        events
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
                self.after(EXIT_HOLD, Msg::ExitHoldOver(serial));
                Vec::new()
            }
            Msg::ExitHoldOver(serial) => match self.held_exits.remove(&serial) {
                Some(status) => vec![self.exited(serial, status)],
                None => Vec::new(),
            },
            other => self.dispatch(other).into_iter().collect(),
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
        self.replace_reasons.remove(&serial);
        self.closed.remove(&serial);
        if let Some(w) = self.core.workers.get(&serial) {
            self.hooks
                .worker_exited(w.pid, w.slot, w.generation, status);
            if let Some(arbiter) = &self.arbiter {
                arbiter.child_exited(w.pid, w.slot, status);
            }
        }
        Event::Exited {
            serial,
            exit: core::exit_of(status),
        }
    }

    /// Performs the core's actions; true when the supervisor may exit.
    fn perform(&mut self, actions: Vec<Action>) -> bool {
        // A worker on its way, as the core now has it, is announced before
        // a new routing set goes out below: a request woken by a set
        // without the worker that just died must find its successor
        // announced, or it gets 503 while that successor is a moment away.
        // (That none is on its way is said only after the set, below: said
        // first, it would wake the requests waiting for a worker that just
        // entered service before the set that holds it.)
        if self.core.starting(Instant::now()) {
            self.router.set_starting(true);
        }
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
                Action::RecycleAfter { serial, requests } => {
                    if let Some(ch) = self.channels.get(&serial) {
                        ch.recycle_after(requests);
                    }
                }
                Action::Probe { serial } => self.probe(serial),
                Action::Route(route) => {
                    self.split = route
                        .map(|(generation, permille)| Arc::new(Split::new(generation, permille)));
                    self.route(self.published.clone());
                }
                Action::Publish(serials) => {
                    self.route(serials);
                    // /status and /health/ready agree with the router (and
                    // with the log lines that follow) at once.
                    self.publish_snapshot();
                }
                // A message may quote what a worker wrote (its boot
                // traceback, the last line of it): control characters
                // shown, and lines after the first indented, so that no
                // line of it can pass for a record of corral's own.
                Action::Log(level, m) => {
                    let m = crate::worker::output::log_lines(&m);
                    match level {
                        Level::Info => tracing::info!("{m}"),
                        Level::Warn => tracing::warn!("{m}"),
                        Level::Error => tracing::error!("{m}"),
                    }
                }
                Action::Exit => exit = true,
            }
        }
        // After every step of the core: whether a request that finds no
        // worker in service waits for one that boots.
        self.router.set_starting(self.core.starting(Instant::now()));
        exit
    }

    /// Hands the routing set to the router, split when a canary runs.
    fn route(&mut self, serials: Vec<u64>) {
        let (list, canary) = serials
            .iter()
            .filter_map(|s| {
                let ch = self.channels.get(s)?.clone();
                let generation = self.core.workers.get(s).map(|w| w.generation);
                let new = self
                    .split
                    .as_ref()
                    .is_some_and(|sp| Some(sp.generation) == generation);
                Some((ch, new))
            })
            .unzip();
        self.router.publish_split(list, canary, self.split.clone());
        self.published = serials;
    }

    fn spawn(&mut self, slot: usize, serial: u64, generation: u64) -> Event {
        let info = self.gens.get(&generation).cloned().unwrap_or_default();
        if self.drift_checks && self.core.reload.is_none() && generation == self.core.generation {
            self.check_drift(generation, &info);
        }
        // The worker's channel (its socket, its rings and their tasks) and
        // its process's watchers live on its shard's event loop, where the
        // connections that mostly use it are served.
        let shard = self.shards.of_slot(slot);
        let shards = self.shards.clone();
        let _on_shard = shards.handle(shard).enter();
        let setup = match self.setups.get(&generation) {
            Some(setup) => setup,
            None => &GenSetup::of(&self.cfg, &self.launcher),
        };
        let (launcher, capacity, timeout) = (setup.launcher.clone(), setup.capacity, setup.timeout);
        let spawned = match launcher.spawn(slot, generation, &info) {
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
        let channel = Channel::start(
            crate::worker::channel::Ident {
                serial,
                slot,
                pid,
                shard,
            },
            spawned.sock,
            spawned.ring,
            self.control_tx.clone(),
            capacity,
        );
        channel
            .generation
            .store(generation, std::sync::atomic::Ordering::Relaxed);
        channel.set_timeout(timeout);
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

    /// Before a worker is killed: log the stacks it dumped (on SIGUSR1) and
    /// keep them with its boot error for /status.
    fn collect_stacks(&mut self, serial: u64, pid: u32) {
        let Some(stacks) = self.procs.get_mut(&serial).and_then(|(_, s)| s.take()) else {
            return;
        };
        let slot = self.core.workers.get(&serial).map(|w| w.slot);
        let why = self
            .replace_reasons
            .remove(&serial)
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        let slot = slot.map(|s| s.to_string()).unwrap_or_default();
        // The worker wrote the file and may have written anything: each
        // line is logged as its own, tagged and with its control
        // characters shown, as its stdout's are, so that it cannot pass
        // for a line of corral's.
        let lines: Vec<_> = stacks
            .trim_end()
            .split('\n')
            .map(|line| crate::worker::output::printable(line.trim_end_matches('\r')))
            .collect();
        tracing::error!("Python stacks of worker {slot} (pid {pid}) before it is killed{why}:");
        for line in lines.iter().filter(|l| !l.trim().is_empty()) {
            tracing::error!("worker {slot} (pid {pid}) stacks: {line}");
        }
        self.core.attach_stacks(serial, &lines.join("\n"));
    }

    /// Whether workers are recycled by their requests, memory or age (a
    /// reload may set or clear it).
    fn recycling(&self) -> bool {
        let w = &self.cfg.workers;
        w.max_requests > 0 || w.max_memory.is_some() || !w.max_lifetime.is_zero()
    }

    /// Reports each worker's requests and memory so the core can recycle.
    fn usage_events(&self) -> Vec<Event> {
        self.channels
            .iter()
            .map(|(serial, ch)| Event::Usage {
                serial: *serial,
                requests: ch.served.load(std::sync::atomic::Ordering::Relaxed),
                rss: self.cfg.workers.max_memory.and_then(|_| rss_bytes(ch.pid)),
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
        let mut snap = snapshot::take(&self.core, &self.channels, self.started, self.stopping());
        snap.revision = self
            .gens
            .get(&self.core.generation)
            .and_then(|g| g.revision.clone());
        snap.last_good_revision = self.last_good.clone();
        snap.rollback_hook = self.hook.clone();
        snap.hook_runs = self.hook_runs.clone();
        snap.reloads.rolled_back = self.rollbacks;
        snap.drift = self.drift.clone();
        snap.config_error = self.config_error.clone();
        snap.app = self
            .setups
            .get(&self.core.generation)
            .map(|s| s.app.clone());
        snap.reloads.failed += self.refused;
        self.snapshot.send_replace(snap);
    }
}

/// The core's settings from a config (`seed` picks each worker's
/// max_requests jitter).
fn settings(cfg: &Config, seed: u64) -> Settings {
    let w = &cfg.workers;
    Settings {
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
        max_lifetime: (!w.max_lifetime.is_zero()).then_some(w.max_lifetime),
        seed,
        reload_timeout: cfg.deploy.ready_timeout,
        rolling: (cfg.deploy.strategy == crate::config::Strategy::Rolling)
            .then_some(cfg.deploy.max_surge),
        canary: cfg.deploy.canary.map(|c| {
            CanaryRun {
                permille: u64::from(c.share) * 10,
                window: c.thresholds.duration,
            }
            .settings()
        }),
    }
}

/// Longest a child's exit waits for its channel's last words.
const EXIT_HOLD: Duration = Duration::from_millis(500);

/// How often a running canary is judged when nothing else happens.
const CANARY_CHECK: Duration = Duration::from_millis(250);

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
