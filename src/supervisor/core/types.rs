//! The life cycle's vocabulary: a worker's [`State`] and the transitions
//! allowed between them, the [`Event`]s the core takes and the [`Action`]s
//! it asks for, and the settings, slots and workers it keeps.

use std::time::{Duration, Instant};

/// Where a worker is in its life cycle. The allowed transitions are
/// [`State::may_become`]; [`Worker::enter`] checks every change against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Booting,
    /// Booted; waiting for its readiness path to answer 2xx.
    Probing,
    InService,
    /// Was in service; failed `unhealthy_after` probes in a row.
    Unready,
    /// Asked to finish and exit (drained, stopped, a successor given up);
    /// SIGKILL follows if it outstays its grace.
    Stopping,
    /// Was in service (or unready) and its channel closed without corral
    /// asking it to go: it crashed or exited on its own. Out of service;
    /// its exit is a crash (logged at WARN or ERROR, counted by the young
    /// rule), the same as when the exit is seen first. SIGKILL follows if
    /// it is still there `quit_grace` later.
    Exiting,
    /// Being killed for a fault: its stacks are dumped, SIGKILL is due.
    Killing {
        cause: KillCause,
    },
}

/// Why a worker is being killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillCause {
    /// It did not boot (or pass its readiness check) within boot_timeout:
    /// its exit is a failed boot.
    BootTimeout,
    /// A request timed out on it, or it sent no heartbeat.
    Hung,
    /// It broke the worker protocol; corral closed its channel.
    ProtocolError,
}

impl State {
    /// Booted and not stopping: may take requests in a panic.
    pub(super) fn live(self) -> bool {
        matches!(self, State::Probing | State::InService | State::Unready)
    }

    /// The table of allowed transitions. A worker being killed, or exiting
    /// on its own, stays so until it exits; nothing returns to Booting.
    pub fn may_become(self, to: State) -> bool {
        use State::*;
        match (self, to) {
            (Killing { .. } | Exiting, _) => false,
            (_, Booting) => false,
            (InService | Unready, Exiting) => true,
            (_, Exiting) => false,
            (Booting, Probing | InService) => true,
            (Probing | Unready, InService) => true,
            (InService, Unready) => true,
            (
                Booting | Probing,
                Killing {
                    cause: KillCause::BootTimeout,
                },
            ) => true,
            (
                _,
                Killing {
                    cause: KillCause::BootTimeout,
                },
            ) => false,
            (Stopping, Stopping) => true,
            (Stopping, _) => matches!(to, Killing { .. }),
            (_, Stopping | Killing { .. }) => true,
            _ => false,
        }
    }

    /// The name /status shows. A worker killed for a boot timeout still
    /// counts as booting (its exit is a failed boot); one killed for
    /// another fault, or exiting on its own, as stopping.
    pub fn name(self) -> &'static str {
        match self {
            State::Booting
            | State::Killing {
                cause: KillCause::BootTimeout,
            } => "booting",
            State::Probing => "probing",
            State::InService => "in_service",
            State::Unready => "unready",
            State::Stopping | State::Exiting | State::Killing { .. } => "stopping",
        }
    }
}

impl serde::Serialize for State {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// How a worker process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// Killed by this signal, leaving a core dump.
    Core(i32),
}

impl Exit {
    pub fn describe(&self) -> String {
        let name = |s: i32| {
            nix::sys::signal::Signal::try_from(s)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|_| format!("signal {s}"))
        };
        match self {
            Exit::Code(c) => format!("exited with code {c}"),
            Exit::Core(s) => format!(
                "was killed by {} and dumped core (where to: `cat /proc/sys/kernel/core_pattern`; under systemd, `coredumpctl`)",
                name(*s)
            ),
            Exit::Signal(s) => {
                let name = name(*s);
                if *s == libc::SIGKILL {
                    format!("was killed by {name} (by corral, or the OOM killer)")
                } else {
                    format!("was killed by {name}")
                }
            }
        }
    }

    /// [`Exit::describe`] for a worker, knowing whether corral sent it
    /// SIGKILL: a SIGKILL corral did not send is most likely the kernel's
    /// OOM killer (gunicorn: "Perhaps out of memory?").
    pub fn describe_worker(&self, killed_by_corral: bool) -> String {
        match self {
            Exit::Signal(libc::SIGKILL) if killed_by_corral => {
                "was killed by SIGKILL (by corral)".to_string()
            }
            Exit::Signal(libc::SIGKILL) => {
                "was killed by SIGKILL, not by corral: perhaps out of memory (the OOM killer)"
                    .to_string()
            }
            _ => self.describe(),
        }
    }

    /// A signal that kills outright or reports a crash (SIGKILL, SIGSEGV,
    /// SIGABRT, SIGBUS, SIGFPE, SIGILL, SIGSYS, SIGTRAP, resource limits)
    /// rather than asks the process to stop (SIGTERM, SIGINT, SIGQUIT,
    /// SIGHUP, ...): an unexpected exit by one is logged at ERROR.
    pub fn is_crash(&self) -> bool {
        matches!(
            self,
            Exit::Core(_)
                | Exit::Signal(
                    libc::SIGKILL
                        | libc::SIGSEGV
                        | libc::SIGABRT
                        | libc::SIGBUS
                        | libc::SIGFPE
                        | libc::SIGILL
                        | libc::SIGSYS
                        | libc::SIGTRAP
                        | libc::SIGXCPU
                        | libc::SIGXFSZ
                )
        )
    }
}

/// Classifies how a child process ended.
pub fn exit_of(status: std::process::ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => Exit::Code(c),
        (None, Some(s)) if status.core_dumped() => Exit::Core(s),
        (None, Some(s)) => Exit::Signal(s),
        (None, None) => Exit::Code(-1),
    }
}

/// The life-cycle settings, from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub count: usize,
    pub boot_timeout: Duration,
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// A worker that exits sooner than this after booting counts as failed.
    pub young: Duration,
    /// Time between the stack dump and SIGKILL for a hung worker.
    pub dump_grace: Duration,
    /// Time workers get after SIGTERM (graceful) or SIGQUIT (fast) before SIGKILL.
    pub term_grace: Duration,
    pub quit_grace: Duration,
    /// Time a drained worker (SIGTERM while corral keeps running: recycled,
    /// replaced by a reload, scaled away) has to finish before SIGKILL: its
    /// own graceful timeout plus a margin.
    pub drain_grace: Duration,
    /// Readiness probing: None when no ready_path is configured.
    pub probe: Option<ProbeSettings>,
    /// Below this many workers in service, route to every live worker.
    pub min_in_service: usize,
    /// A live worker silent for this long is wedged (None: no check).
    pub heartbeat_timeout: Option<Duration>,
    /// Recycle a worker after this many requests (0: never) plus a random
    /// 0..=jitter, so workers do not all recycle at once.
    pub max_requests: u64,
    pub max_requests_jitter: u64,
    /// Recycle a worker whose RSS exceeds this many bytes.
    pub max_memory: Option<u64>,
    /// Recycle a worker after it has run this long plus a random 0..=a
    /// tenth of it (None: never).
    pub max_lifetime: Option<Duration>,
    /// Seed of the jitter's random numbers (fixed in tests).
    pub seed: u64,
    /// How long a new generation may take to be all in service.
    pub reload_timeout: Duration,
    /// Rolling reloads with at most this many extra workers at a time
    /// (None: all at once).
    pub rolling: Option<usize>,
    /// Canary reloads (None: a reload switches once it is in service).
    pub canary: Option<CanarySettings>,
}

/// `[deploy] canary_*` as far as the core is concerned: the new
/// generation's share of requests, and how much longer than
/// `reload_timeout` a reload may take (the canary's longest window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CanarySettings {
    pub permille: u64,
    pub hold: Duration,
}

/// A canary asked for by one reload (`corral reload --canary 10% --for
/// 2m`): the share in thousandths, and the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CanaryRun {
    pub permille: u64,
    pub window: Duration,
}

impl CanaryRun {
    /// How much longer than its `reload_timeout` a reload with this canary
    /// may take: twice the window (it may be extended), and a margin so the
    /// verdict, not the deadline, ends it.
    pub fn settings(self) -> CanarySettings {
        CanarySettings {
            permille: self.permille,
            hold: self.window * 2 + Duration::from_secs(5),
        }
    }
}

/// A reload in progress: generation `generation` is booting beside the
/// current one, which keeps serving untouched until every slot of the new
/// one is in service.
#[derive(Debug, Clone)]
pub struct Reload {
    pub generation: u64,
    pub started: Instant,
    pub deadline: Instant,
    /// Rolling: slots whose successor has not started yet.
    pub pending: Vec<usize>,
    /// A canary reload: None without one; Some(false) while it runs (the
    /// new generation gets its share and takes no slot); Some(true) once it
    /// passed.
    pub canary: Option<bool>,
    /// The canary's window when the reload asked for its own.
    pub window: Option<Duration>,
}

/// How the last reload ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ReloadOutcome {
    Done {
        generation: u64,
        at: Instant,
    },
    Failed {
        generation: u64,
        at: Instant,
        reason: String,
        /// The failing worker's full error (traceback), when there is one.
        detail: Option<String>,
    },
    /// A stop (TERM, INT, QUIT, `corral stop`) began while it was under
    /// way: no failure of its code (no rollback, not counted as failed),
    /// and its generation did not take over.
    Cancelled {
        generation: u64,
        at: Instant,
        reason: String,
    },
}

impl ReloadOutcome {
    /// The generation the reload started.
    pub fn generation(&self) -> u64 {
        match self {
            ReloadOutcome::Done { generation, .. }
            | ReloadOutcome::Failed { generation, .. }
            | ReloadOutcome::Cancelled { generation, .. } => *generation,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProbeSettings {
    pub interval: Duration,
    /// Time between probes of a worker that has not passed yet.
    pub retry: Duration,
    pub unhealthy_after: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    Term,
    Quit,
    Kill,
    /// SIGUSR1: the worker's faulthandler prints every thread's stack.
    DumpStacks,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Spawned {
        serial: u64,
        pid: u32,
    },
    SpawnFailed {
        serial: u64,
        error: String,
    },
    Booted {
        serial: u64,
        import_ms: f64,
    },
    BootFailed {
        serial: u64,
        error: String,
    },
    /// The worker's channel closed: at its exit, or because corral
    /// refused what the worker sent (`error`).
    ChannelClosed {
        serial: u64,
        error: Option<String>,
    },
    Exited {
        serial: u64,
        exit: Exit,
    },
    /// Take a worker out of service and kill it (e.g. a request timed out).
    Replace {
        serial: u64,
        reason: String,
    },
    /// The worker's interpreter is alive (it can take the GIL).
    Heartbeat {
        serial: u64,
    },
    /// What a worker has used so far: requests served and resident memory.
    Usage {
        serial: u64,
        requests: u64,
        rss: Option<u64>,
    },
    /// The answer to a readiness probe: a 2xx, or why not.
    ProbeResult {
        serial: u64,
        result: Result<(), String>,
    },
    /// SIGTERM arrived: the front drains its requests; from now on nothing
    /// new starts (no restarts, recycling, reloads or scaling), and a
    /// reload under way is cancelled.
    Drain,
    /// A stop began that does not reach the core yet (TERM within
    /// `shutdown_delay`, when the workers serve on as before): a reload
    /// under way is cancelled.
    CancelReload,
    /// Stop everything: fast (QUIT/INT) or after the front drained (TERM).
    Stop {
        fast: bool,
    },
    /// Start the next generation beside the current one (SIGHUP); it must
    /// be all in service within `timeout` (default: reload_timeout).
    Reload {
        timeout: Option<Duration>,
        /// A canary for this reload, in place of `[deploy] canary_*`.
        canary: Option<CanaryRun>,
    },
    /// Run this many workers (`corral scale`, TTIN/TTOU).
    Scale {
        count: usize,
    },
    /// The deploy policy judged the canary of `generation`: it passed
    /// (`Ok`), or failed (`Err(reason, detail)`).
    Canary {
        generation: u64,
        verdict: Result<(), (String, Option<String>)>,
    },
    Tick,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Spawn {
        slot: usize,
        serial: u64,
        /// The generation it belongs to (its code and folder).
        generation: u64,
    },
    Signal {
        serial: u64,
        pid: u32,
        sig: Sig,
    },
    /// Tell the worker's channel its request limit (`max_requests` plus
    /// its jitter): the answer that reaches it is reported at once, as
    /// [`Event::Usage`], rather than at the next poll.
    RecycleAfter {
        serial: u64,
        requests: u64,
    },
    /// Send the readiness request to this worker; answer with ProbeResult.
    Probe {
        serial: u64,
    },
    /// The workers that take requests now.
    Publish(Vec<u64>),
    /// From now on (and until the next `Route`) the workers of this
    /// generation get this share (thousandths) of the requests; None: no
    /// split. The next `Publish` carries it to the router.
    Route(Option<(u64, u64)>),
    Log(Level, String),
    /// Every worker is gone after a stop: the supervisor may exit.
    Exit,
}

#[derive(Debug, Clone)]
pub struct Worker {
    pub serial: u64,
    pub slot: usize,
    pub pid: u32,
    pub state: State,
    pub started: Instant,
    /// When it entered its state. An `Exiting` worker keeps the time it
    /// entered the state it left (in service, unready): the young rule
    /// measures from it, as it would had the exit come first.
    pub since: Instant,
    pub boot_time: Option<Duration>,
    pub import_ms: Option<f64>,
    pub(super) boot_failed: bool,
    /// When SIGKILL is due (a stack dump, a drain or a stop is under way).
    pub(super) kill_at: Option<Instant>,
    /// SIGKILL was sent: nothing more to do but wait for the exit.
    pub(super) killed: bool,
    pub(super) probe_fails: u32,
    pub(super) next_probe: Option<Instant>,
    pub(super) probing: bool,
    pub(super) last_beat: Instant,
    /// The generation (code revision) this worker was started for.
    pub generation: u64,
    /// Requests after which this worker is recycled.
    pub recycle_after: Option<u64>,
    /// When this worker is recycled for its age (`max_lifetime`).
    pub retire_at: Option<Instant>,
    /// Its replacement is starting; it serves until that one is in service.
    pub recycling: bool,
}

impl Worker {
    /// Moves the worker to `to`; a transition outside
    /// [`State::may_become`] is a bug (checked in debug builds).
    pub(super) fn enter(&mut self, to: State) {
        debug_assert!(
            self.state.may_become(to),
            "worker {}: {:?} may not become {:?}",
            self.serial,
            self.state,
            to
        );
        self.state = to;
    }

    /// Asks it to go: Stopping (unless it is being killed already, or
    /// exiting on its own, which it stays), with SIGKILL due by `deadline`
    /// at the latest.
    pub(super) fn stop_by(&mut self, now: Instant, deadline: Instant) {
        if !matches!(self.state, State::Killing { .. } | State::Exiting) {
            self.enter(State::Stopping);
            self.since = now;
        }
        self.kill_at = Some(self.kill_at.map_or(deadline, |k| k.min(deadline)));
    }
}

/// A boot failure kept for the status page and the logs.
#[derive(Debug, Clone, PartialEq)]
pub struct BootError {
    pub at: Instant,
    pub serial: u64,
    pub text: String,
}

#[derive(Debug, Clone, Default)]
pub struct Slot {
    pub worker: Option<u64>,
    /// A replacement booting while `worker` is recycled.
    pub successor: Option<u64>,
    /// Scaled away: its worker drains and the slot is not restarted.
    pub retired: bool,
    /// Failures in a row, for the back-off.
    pub failures: u32,
    /// The last of those failures was a boot that failed (not a death
    /// within `young` of entering service): a request does not wait for
    /// the slot's next start, and a cold start where every slot is so has
    /// booted nothing.
    pub boot_failing: bool,
    pub start_at: Option<Instant>,
    /// Workers started again after an exit corral did not ask for (not
    /// the replacements of reloads, recycling or scaling).
    pub restarts: u32,
    pub last_exit: Option<String>,
    pub last_error: Option<BootError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// SIGTERM: the front finishes its requests; workers keep serving, but
    /// none is started, restarted, recycled or added.
    Draining,
    Stopping,
}

/// "100ms", "1.6s", "30s".
pub fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
