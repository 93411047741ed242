//! The worker life cycle as a pure state machine: no I/O and no clock of its
//! own. [`Core::on_event`] takes the time and one [`Event`] and returns the
//! [`Action`]s to perform; the actor in `supervisor/mod.rs` performs them
//! (spawn, signal, publish the in-service set, log). Timers are not tasks:
//! the core says when it next needs a [`Event::Tick`] ([`Core::next_deadline`]).
//!
//! ```text
//! spawned ─► Booting ─(BOOT_OK)─► Probing ─(ready_path 2xx)─► InService ─(replace, stop)─► Stopping ─► exited
//!               │                    │     (no ready_path: straight in)  │  ▲
//!               │ boot error, exit,  │ boot_timeout        unhealthy_after│  │ probe passes
//!               │ or boot_timeout    │                          failures ▼  │
//!               └────────────────────┴──► exited                       Unready
//! ```
//!
//! A slot whose worker failed to boot restarts after a back-off that doubles
//! per failure in a row (restart_backoff .. restart_backoff_max). Requests go
//! to InService workers; when fewer than `min_in_service` are, the *panic
//! threshold* (as in Envoy) routes to every booted worker rather than none.
//!
//! A worker that boots and then serves for at least [`Settings::young`] resets
//! its slot's failure count when it exits; one that fails to boot, or dies
//! younger than that, adds one.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Booting,
    /// Booted; waiting for its readiness path to answer 2xx.
    Probing,
    InService,
    /// Was in service; failed `unhealthy_after` probes in a row.
    Unready,
    Stopping,
}

impl State {
    /// Booted and not stopping: may take requests in a panic.
    fn live(self) -> bool {
        matches!(self, State::Probing | State::InService | State::Unready)
    }
}

/// How a worker process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub fn describe(&self) -> String {
        match self {
            Exit::Code(c) => format!("exited with code {c}"),
            Exit::Signal(s) => {
                let name = nix::sys::signal::Signal::try_from(*s)
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_else(|_| format!("signal {s}"));
                if *s == libc::SIGKILL {
                    format!("was killed by {name} (by corral, or the OOM killer)")
                } else {
                    format!("was killed by {name}")
                }
            }
        }
    }
}

/// Classifies how a child process ended.
pub fn exit_of(status: std::process::ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => Exit::Code(c),
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
    /// Seed of the jitter's random numbers (fixed in tests).
    pub seed: u64,
    /// How long a new generation may take to be all in service.
    pub reload_timeout: Duration,
    /// Rolling reloads with at most this many extra workers at a time
    /// (None: all at once).
    pub rolling: Option<usize>,
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
    /// new starts (no restarts, recycling, reloads or scaling).
    Drain,
    /// Stop everything: fast (QUIT/INT) or after the front drained (TERM).
    Stop {
        fast: bool,
    },
    /// Start the next generation beside the current one (SIGHUP); it must
    /// be all in service within `timeout` (default: reload_timeout).
    Reload {
        timeout: Option<Duration>,
    },
    /// Run this many workers (`corral scale`, TTIN/TTOU).
    Scale {
        count: usize,
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
    /// Send the readiness request to this worker; answer with ProbeResult.
    Probe {
        serial: u64,
    },
    /// The workers that take requests now.
    Publish(Vec<u64>),
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
    pub since: Instant,
    pub boot_time: Option<Duration>,
    pub import_ms: Option<f64>,
    boot_failed: bool,
    /// When SIGKILL is due (a stack dump, a drain or a stop is under way).
    kill_at: Option<Instant>,
    /// SIGKILL was sent: nothing more to do but wait for the exit.
    killed: bool,
    probe_fails: u32,
    next_probe: Option<Instant>,
    probing: bool,
    last_beat: Instant,
    /// The generation (code revision) this worker was started for.
    pub generation: u64,
    /// Requests after which this worker is recycled.
    pub recycle_after: Option<u64>,
    /// Its replacement is starting; it serves until that one is in service.
    pub recycling: bool,
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
    pub start_at: Option<Instant>,
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

pub struct Core {
    pub settings: Settings,
    pub slots: Vec<Slot>,
    pub workers: BTreeMap<u64, Worker>,
    pub phase: Phase,
    /// Boots that failed (error, crash or timeout), since the start.
    pub boot_failures: u64,
    pub probe_failures: u64,
    /// Routing to every live worker because too few are in service.
    pub panic: bool,
    next_serial: u64,
    /// Serials of spawns requested and not yet reported.
    spawning: BTreeMap<u64, (usize, u64)>,
    pub recycled: u64,
    /// The generation that serves.
    pub generation: u64,
    pub reload: Option<Reload>,
    pub last_reload: Option<ReloadOutcome>,
    rng: u64,
}

impl Core {
    pub fn new(settings: Settings) -> Core {
        Core {
            slots: vec![Slot::default(); settings.count],
            workers: BTreeMap::new(),
            phase: Phase::Running,
            boot_failures: 0,
            probe_failures: 0,
            panic: false,
            next_serial: 1,
            spawning: BTreeMap::new(),
            recycled: 0,
            generation: 1,
            reload: None,
            last_reload: None,
            rng: settings.seed | 1,
            settings,
        }
    }

    /// The first actions: start every slot.
    pub fn start(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        for slot in 0..self.slots.len() {
            self.spawn(slot, &mut out);
        }
        out
    }

    pub fn backoff(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32 << (failures - 1).min(20);
        self.settings
            .backoff
            .saturating_mul(factor)
            .min(self.settings.backoff_max)
    }

    pub fn in_service(&self) -> impl Iterator<Item = &Worker> {
        self.workers
            .values()
            .filter(|w| w.state == State::InService)
    }

    /// When the core next needs a [`Event::Tick`].
    pub fn next_deadline(&self) -> Option<Instant> {
        let starts = self.slots.iter().filter_map(|s| s.start_at);
        let boots = self
            .workers
            .values()
            .filter(|w| matches!(w.state, State::Booting | State::Probing) && w.kill_at.is_none())
            .map(|w| w.started + self.settings.boot_timeout);
        let kills = self.workers.values().filter_map(|w| w.kill_at);
        let probes = self
            .workers
            .values()
            .filter(|w| w.state.live() && !w.probing && w.kill_at.is_none())
            .filter_map(|w| w.next_probe);
        let beats = self.settings.heartbeat_timeout.into_iter().flat_map(|hb| {
            self.workers
                .values()
                .filter(|w| w.state.live() && w.kill_at.is_none())
                .map(move |w| w.last_beat + hb)
        });
        starts
            .chain(self.reload.as_ref().map(|r| r.deadline))
            .chain(boots)
            .chain(kills)
            .chain(probes)
            .chain(beats)
            .min()
    }

    pub fn on_event(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Spawned { serial, pid } => self.on_spawned(now, serial, pid, &mut out),
            Event::SpawnFailed { serial, error } => {
                if let Some((slot, _)) = self.spawning.remove(&serial) {
                    out.push(Action::Log(Level::Error, format!("worker {slot}: {error}")));
                    self.slots[slot].last_error = Some(BootError {
                        at: now,
                        serial,
                        text: error,
                    });
                    self.boot_failures += 1;
                    self.failed(now, slot, &mut out);
                }
            }
            Event::Booted { serial, import_ms } => self.on_booted(now, serial, import_ms, &mut out),
            Event::BootFailed { serial, error } => {
                if let Some(w) = self.workers.get_mut(&serial) {
                    w.boot_failed = true;
                    self.boot_failures += 1;
                    // It exits by itself; if it lingers (a thread the app
                    // started), it is killed.
                    w.kill_at.get_or_insert(now + self.settings.quit_grace);
                    // The full traceback is logged once; the same error
                    // again (each retry) gets one line.
                    let same = self.slots[w.slot]
                        .last_error
                        .as_ref()
                        .is_some_and(|e| e.text == error);
                    let msg = if same {
                        let last = error.trim_end().lines().last().unwrap_or("");
                        format!(
                            "worker {} (pid {}) failed to boot again with the same error: {last}",
                            w.slot, w.pid
                        )
                    } else {
                        format!(
                            "worker {} (pid {}) failed to boot:\n{}",
                            w.slot,
                            w.pid,
                            error.trim_end()
                        )
                    };
                    out.push(Action::Log(Level::Error, msg));
                    self.slots[w.slot].last_error = Some(BootError {
                        at: now,
                        serial,
                        text: error,
                    });
                }
            }
            Event::ChannelClosed { serial, error } => {
                self.on_channel_closed(now, serial, error, &mut out)
            }
            Event::Exited { serial, exit } => self.on_exited(now, serial, exit, &mut out),
            Event::Replace { serial, reason } => self.replace(now, serial, &reason, &mut out),
            Event::ProbeResult { serial, result } => self.on_probe(now, serial, result, &mut out),
            Event::Heartbeat { serial } => {
                if let Some(w) = self.workers.get_mut(&serial) {
                    w.last_beat = now;
                }
            }
            Event::Usage {
                serial,
                requests,
                rss,
            } => self.on_usage(now, serial, requests, rss, &mut out),
            Event::Drain => self.drain_all(now),
            Event::Stop { fast } => self.stop(now, fast, &mut out),
            Event::Reload { timeout } => self.start_reload(now, timeout, &mut out),
            Event::Scale { count } => self.scale(now, count, &mut out),
            Event::Tick => self.tick(now, &mut out),
        }
        out
    }

    fn spawn(&mut self, slot: usize, out: &mut Vec<Action>) {
        let serial = self.next_serial;
        self.next_serial += 1;
        self.slots[slot].start_at = None;
        let generation = self
            .reload
            .as_ref()
            .map_or(self.generation, |r| r.generation);
        self.spawning.insert(serial, (slot, generation));
        out.push(Action::Spawn {
            slot,
            serial,
            generation,
        });
    }

    fn on_spawned(&mut self, now: Instant, serial: u64, pid: u32, out: &mut Vec<Action>) {
        let Some((slot, generation)) = self.spawning.remove(&serial) else {
            return;
        };
        let recycling = self.slots[slot]
            .worker
            .and_then(|s| self.workers.get(&s))
            .is_some_and(|w| w.recycling);
        if recycling {
            self.slots[slot].successor = Some(serial);
        } else {
            self.slots[slot].worker = Some(serial);
        }
        let recycle_after = self.recycle_limit();
        self.workers.insert(
            serial,
            Worker {
                serial,
                slot,
                pid,
                state: State::Booting,
                started: now,
                since: now,
                boot_time: None,
                import_ms: None,
                boot_failed: false,
                kill_at: None,
                killed: false,
                probe_fails: 0,
                next_probe: None,
                probing: false,
                last_beat: now,
                generation,
                recycle_after,
                recycling: false,
            },
        );
        if self.phase == Phase::Stopping {
            // Started just before a stop: stop it too.
            out.push(Action::Signal {
                serial,
                pid,
                sig: Sig::Kill,
            });
        }
    }

    fn on_booted(&mut self, now: Instant, serial: u64, import_ms: f64, out: &mut Vec<Action>) {
        let stopping = self.phase == Phase::Stopping;
        let Some(w) = self.workers.get_mut(&serial) else {
            return;
        };
        if w.state != State::Booting || stopping || w.kill_at.is_some() {
            return;
        }
        w.since = now;
        w.last_beat = now;
        w.boot_time = Some(now - w.started);
        w.import_ms = Some(import_ms);
        out.push(Action::Log(
            Level::Info,
            format!(
                "worker {} (pid {}) booted in {:.0} ms (import {:.0} ms)",
                w.slot,
                w.pid,
                (now - w.started).as_secs_f64() * 1000.0,
                import_ms
            ),
        ));
        if self.settings.probe.is_some() {
            w.state = State::Probing;
            w.probing = true;
            out.push(Action::Probe { serial });
            out.push(self.publish());
        } else {
            w.state = State::InService;
            self.entered_service(now, out);
        }
    }

    fn entered_service(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.promote_successors(now, out);
        out.push(self.publish());
        let n = self.in_service().count();
        if n == self.active() {
            out.push(Action::Log(
                Level::Info,
                format!("all {n} workers in service"),
            ));
        }
    }

    fn on_probe(
        &mut self,
        now: Instant,
        serial: u64,
        result: Result<(), String>,
        out: &mut Vec<Action>,
    ) {
        let Some(probe) = self.settings.probe.clone() else {
            return;
        };
        let Some(w) = self.workers.get_mut(&serial) else {
            return;
        };
        w.probing = false;
        if !w.state.live() || w.kill_at.is_some() {
            return;
        }
        let (slot, pid) = (w.slot, w.pid);
        match result {
            Ok(()) => {
                w.probe_fails = 0;
                w.next_probe = Some(now + probe.interval);
                if matches!(w.state, State::Probing | State::Unready) {
                    let was = w.state;
                    w.state = State::InService;
                    w.since = now;
                    if was == State::Unready {
                        out.push(Action::Log(
                            Level::Info,
                            format!("worker {slot} (pid {pid}) is ready again; back in service"),
                        ));
                    }
                    self.entered_service(now, out);
                }
            }
            Err(why) => {
                self.probe_failures += 1;
                w.probe_fails += 1;
                let fails = w.probe_fails;
                match w.state {
                    State::Probing => {
                        w.next_probe = Some(now + probe.retry);
                        if fails == 1 {
                            out.push(Action::Log(
                                Level::Warn,
                                format!("worker {slot} (pid {pid}) is not ready yet: {why}"),
                            ));
                        }
                        self.slots[slot].last_error = Some(BootError {
                            at: now,
                            serial,
                            text: format!("readiness check failed: {why}"),
                        });
                    }
                    State::InService => {
                        w.next_probe = Some(now + probe.interval);
                        if fails >= probe.unhealthy_after {
                            w.state = State::Unready;
                            w.since = now;
                            out.push(Action::Log(
                                Level::Warn,
                                format!(
                                    "worker {slot} (pid {pid}) failed {fails} readiness checks in a row ({why}); out of service until it passes"
                                ),
                            ));
                            out.push(self.publish());
                        }
                    }
                    _ => w.next_probe = Some(now + probe.interval),
                }
            }
        }
    }

    fn on_exited(&mut self, now: Instant, serial: u64, exit: Exit, out: &mut Vec<Action>) {
        let Some(w) = self.workers.remove(&serial) else {
            return;
        };
        let slot = w.slot;
        let how = exit.describe();
        if self.slots[slot].worker != Some(serial) && self.slots[slot].successor != Some(serial) {
            // A recycled worker whose successor already took its slot.
            self.roll_next(out);
            out.push(Action::Log(
                Level::Info,
                format!("worker {slot} (pid {}) {how}; it no longer served (recycled, or its generation was stopped)", w.pid),
            ));
            if self.phase == Phase::Stopping && self.workers.is_empty() && self.spawning.is_empty()
            {
                out.push(Action::Exit);
            }
            return;
        }
        if self.slots[slot].successor == Some(serial)
            && self
                .reload
                .as_ref()
                .is_some_and(|r| r.generation == w.generation)
        {
            self.slots[slot].successor = None;
            let (what, detail) = match &self.slots[slot].last_error {
                Some(e) if e.serial == serial => (
                    e.text.trim_end().lines().last().unwrap_or("").to_string(),
                    Some(e.text.clone()),
                ),
                _ => (format!("its worker {how}"), None),
            };
            self.fail_reload(
                now,
                &format!("slot {slot} did not boot: {what}"),
                detail,
                out,
            );
            return;
        }
        if self.slots[slot].successor == Some(serial) {
            // The replacement of a recycled worker failed: the old one keeps
            // serving, and recycling is tried again after the back-off.
            self.slots[slot].successor = None;
            self.set_recycling(slot, false);
            if self.phase != Phase::Running {
                if self.phase == Phase::Stopping
                    && self.workers.is_empty()
                    && self.spawning.is_empty()
                {
                    out.push(Action::Exit);
                }
                return;
            }
            out.push(Action::Log(
                Level::Error,
                format!(
                    "worker {slot}: its replacement (pid {}) {how} before it was in service; the old worker keeps serving",
                    w.pid
                ),
            ));
            self.slots[slot].failures += 1;
            let delay = self.backoff(self.slots[slot].failures);
            self.slots[slot].start_at = Some(now + delay);
            return;
        }
        self.slots[slot].worker = None;
        self.slots[slot].last_exit = Some(how.clone());
        if w.state.live() {
            out.push(self.publish());
        }
        if self.phase != Phase::Running {
            // Stopping, or draining after SIGTERM: nothing is replaced.
            let note = if self.phase == Phase::Draining {
                " (corral is stopping: not replaced)"
            } else {
                ""
            };
            out.push(Action::Log(
                Level::Info,
                format!("worker {slot} (pid {}) {how}{note}", w.pid),
            ));
            if self.phase == Phase::Stopping && self.workers.is_empty() && self.spawning.is_empty()
            {
                out.push(Action::Exit);
            }
            return;
        }
        if self.slots[slot].retired {
            out.push(Action::Log(
                Level::Info,
                format!("worker {slot} (pid {}) {how} (scaled down)", w.pid),
            ));
            return;
        }
        self.slots[slot].restarts += 1;
        match w.state {
            State::Booting | State::Probing => {
                if !w.boot_failed {
                    // Died while importing without a report: a crash
                    // (os._exit, segfault) rather than a Python exception.
                    let text = format!("the worker {how} while booting, before it could report");
                    out.push(Action::Log(
                        Level::Error,
                        format!("worker {slot} (pid {}) failed to boot: {text}", w.pid),
                    ));
                    self.slots[slot].last_error = Some(BootError {
                        at: now,
                        serial,
                        text,
                    });
                    self.boot_failures += 1;
                }
                self.failed(now, slot, out);
            }
            State::InService | State::Unready | State::Stopping => {
                let level = if w.state == State::Stopping {
                    Level::Info
                } else {
                    Level::Warn
                };
                out.push(Action::Log(
                    level,
                    format!(
                        "worker {slot} (pid {}) {how}; starting its replacement",
                        w.pid
                    ),
                ));
                if self.slots[slot].retired {
                    // Scaled away: not replaced.
                } else if now - w.since < self.settings.young && w.state != State::Stopping {
                    self.failed(now, slot, out);
                } else {
                    self.slots[slot].failures = 0;
                    self.spawn(slot, out);
                }
            }
        }
    }

    /// Counts a failure for `slot` and schedules its restart.
    fn failed(&mut self, now: Instant, slot: usize, out: &mut Vec<Action>) {
        self.slots[slot].failures += 1;
        let delay = self.backoff(self.slots[slot].failures);
        self.slots[slot].start_at = Some(now + delay);
        out.push(Action::Log(
            Level::Info,
            format!(
                "worker {slot}: next start in {} ({} failure{} in a row)",
                human(delay),
                self.slots[slot].failures,
                if self.slots[slot].failures == 1 {
                    ""
                } else {
                    "s"
                }
            ),
        ));
    }

    /// A worker's channel closed. At a normal exit it closes a moment
    /// before the exit is seen; a worker still alive a `quit_grace` later is
    /// killed, so a slot never waits on a process that can no longer serve.
    /// When corral closed it over a protocol error, the worker is killed at
    /// once (its exit then starts the replacement).
    fn on_channel_closed(
        &mut self,
        now: Instant,
        serial: u64,
        error: Option<String>,
        out: &mut Vec<Action>,
    ) {
        let Some(w) = self.workers.get_mut(&serial) else {
            return;
        };
        let was_live = w.state.live();
        if was_live {
            w.state = State::Stopping;
            w.since = now;
        }
        match error {
            Some(why) => {
                out.push(Action::Log(
                    Level::Error,
                    format!(
                        "worker {} (pid {}) broke the worker protocol ({why}); killing it",
                        w.slot, w.pid
                    ),
                ));
                w.kill_at = Some(now + KILLED);
                w.killed = true;
                out.push(Action::Signal {
                    serial,
                    pid: w.pid,
                    sig: Sig::Kill,
                });
            }
            None => {
                let at = now + self.settings.quit_grace;
                w.kill_at = Some(w.kill_at.map_or(at, |k| k.min(at)));
            }
        }
        if was_live {
            out.push(self.publish());
        }
    }

    /// Asks a worker that no longer takes requests to finish those it holds
    /// and exit (SIGTERM); SIGKILL follows after `drain_grace`.
    fn drain(&mut self, now: Instant, serial: u64, out: &mut Vec<Action>) {
        let Some(w) = self.workers.get_mut(&serial) else {
            return;
        };
        w.state = State::Stopping;
        w.since = now;
        let at = now + self.settings.drain_grace;
        w.kill_at = Some(w.kill_at.map_or(at, |k| k.min(at)));
        out.push(Action::Signal {
            serial,
            pid: w.pid,
            sig: Sig::Term,
        });
    }

    /// SIGTERM arrived: nothing new starts from now on; the workers keep
    /// serving while the front drains, then [`Event::Stop`] stops them.
    fn drain_all(&mut self, _now: Instant) {
        if self.phase != Phase::Running {
            return;
        }
        self.phase = Phase::Draining;
        for s in &mut self.slots {
            s.start_at = None;
        }
    }

    fn replace(&mut self, now: Instant, serial: u64, reason: &str, out: &mut Vec<Action>) {
        let Some(w) = self.workers.get_mut(&serial) else {
            return;
        };
        // Already being killed soon (a draining worker is not: its deadline
        // is its grace period, and a hung request is reason to end it now).
        if w.killed
            || w.kill_at
                .is_some_and(|k| k <= now + self.settings.dump_grace)
        {
            return;
        }
        out.push(Action::Log(
            Level::Error,
            format!(
                "worker {} (pid {}): {reason}; dumping its Python stacks and replacing it",
                w.slot, w.pid
            ),
        ));
        let was = w.state;
        w.state = State::Stopping;
        w.since = now;
        w.kill_at = Some(now + self.settings.dump_grace);
        out.push(Action::Signal {
            serial,
            pid: w.pid,
            sig: Sig::DumpStacks,
        });
        if was.live() {
            out.push(self.publish());
        }
    }

    fn stop(&mut self, now: Instant, fast: bool, out: &mut Vec<Action>) {
        if self.phase == Phase::Stopping && !fast {
            return;
        }
        self.phase = Phase::Stopping;
        for s in &mut self.slots {
            s.start_at = None;
        }
        let (sig, grace) = if fast {
            (Sig::Quit, self.settings.quit_grace)
        } else {
            (Sig::Term, self.settings.term_grace)
        };
        for w in self.workers.values_mut() {
            w.state = State::Stopping;
            w.since = now;
            let kill_at = now + grace;
            w.kill_at = Some(w.kill_at.map_or(kill_at, |k| k.min(kill_at)));
            out.push(Action::Signal {
                serial: w.serial,
                pid: w.pid,
                sig,
            });
        }
        out.push(Action::Publish(Vec::new()));
        if self.workers.is_empty() && self.spawning.is_empty() {
            out.push(Action::Exit);
        }
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.phase == Phase::Running {
            let due: Vec<usize> = (0..self.slots.len())
                .filter(|&i| {
                    self.slots[i].worker.is_none()
                        && !self.slots[i].retired
                        && self.slots[i].start_at.is_some_and(|t| t <= now)
                })
                .collect();
            for slot in due {
                self.spawn(slot, out);
            }
        }
        if let Some(r) = &self.reload
            && r.deadline <= now
        {
            let why = format!(
                "generation {} was not all in service within {}",
                r.generation,
                human(r.deadline.saturating_duration_since(r.started))
            );
            self.fail_reload(now, &why, None, out);
        }
        let timeout = self.settings.boot_timeout;
        let mut timed_out = Vec::new();
        let mut wedged = Vec::new();
        for w in self.workers.values_mut() {
            if let Some(k) = w.kill_at
                && k <= now
            {
                w.kill_at = Some(now + KILLED);
                w.killed = true;
                out.push(Action::Signal {
                    serial: w.serial,
                    pid: w.pid,
                    sig: Sig::Kill,
                });
            } else if matches!(w.state, State::Booting | State::Probing)
                && w.kill_at.is_none()
                && now - w.started >= timeout
            {
                timed_out.push(w.serial);
            } else if let Some(hb) = self.settings.heartbeat_timeout
                && w.state.live()
                && w.kill_at.is_none()
                && now - w.last_beat >= hb
            {
                wedged.push(w.serial);
            } else if w.state.live()
                && !w.probing
                && w.kill_at.is_none()
                && w.next_probe.is_some_and(|t| t <= now)
            {
                w.probing = true;
                out.push(Action::Probe { serial: w.serial });
            }
        }
        for serial in timed_out {
            let w = self.workers.get_mut(&serial).unwrap();
            let text = if w.state == State::Probing {
                let last = self.slots[w.slot]
                    .last_error
                    .as_ref()
                    .map(|e| format!(" (last: {})", e.text))
                    .unwrap_or_default();
                format!(
                    "did not pass its readiness check within {}{last}",
                    human(timeout)
                )
            } else {
                format!(
                    "timed out after {} while booting (importing the app)",
                    human(timeout)
                )
            };
            let was_live = w.state.live();
            w.state = State::Booting;
            out.push(Action::Log(
                Level::Error,
                format!("worker {} (pid {}) {text}", w.slot, w.pid),
            ));
            w.kill_at = Some(now + self.settings.dump_grace);
            w.boot_failed = true;
            self.boot_failures += 1;
            out.push(Action::Signal {
                serial,
                pid: w.pid,
                sig: Sig::DumpStacks,
            });
            self.slots[w.slot].last_error = Some(BootError {
                at: now,
                serial,
                text,
            });
            if was_live {
                out.push(self.publish());
            }
        }
        for serial in wedged {
            let hb = self.settings.heartbeat_timeout.unwrap_or_default();
            let reason = format!(
                "sent no heartbeat for {} (its interpreter is wedged: a C call holding the GIL, or a deadlock)",
                human(hb)
            );
            self.replace(now, serial, &reason, out);
        }
    }

    /// Adds a worker's dumped stacks to its slot's boot error (a boot that
    /// hung), so /status shows where it hung.
    pub fn attach_stacks(&mut self, serial: u64, stacks: &str) {
        let Some(slot) = self.workers.get(&serial).map(|w| w.slot) else {
            return;
        };
        if let Some(err) = &mut self.slots[slot].last_error
            && err.serial == serial
        {
            err.text = format!(
                "{}\n\nPython stacks at that moment:\n{}",
                err.text.trim_end(),
                stacks.trim_end()
            );
        }
    }

    /// The number the next reload's generation gets: a failed generation's
    /// number is not reused.
    pub fn next_generation(&self) -> u64 {
        let failed = match &self.last_reload {
            Some(ReloadOutcome::Failed { generation, .. }) => *generation,
            _ => 0,
        };
        self.generation.max(failed) + 1
    }

    /// Marks the slot's current worker as being replaced (or not any more).
    fn set_recycling(&mut self, slot: usize, on: bool) {
        if let Some(w) = self.slots[slot]
            .worker
            .and_then(|s| self.workers.get_mut(&s))
        {
            w.recycling = on;
        }
    }

    /// Slots that are not scaled away.
    pub fn active(&self) -> usize {
        self.slots.iter().filter(|s| !s.retired).count()
    }

    /// Runs `count` workers: new slots start; slots beyond it drain and stop
    /// (the highest first).
    fn scale(&mut self, now: Instant, count: usize, out: &mut Vec<Action>) {
        if self.phase != Phase::Running || count == 0 {
            return;
        }
        let before = self.active();
        out.push(Action::Log(
            Level::Info,
            format!("scaling from {before} to {count} workers"),
        ));
        while self.slots.len() < count {
            self.slots.push(Slot::default());
        }
        let mut changed = false;
        for slot in 0..self.slots.len() {
            let keep = slot < count;
            let s = &mut self.slots[slot];
            if keep && s.retired {
                s.retired = false;
                s.failures = 0;
                if s.worker.is_none() {
                    self.spawn(slot, out);
                }
            } else if keep
                && s.worker.is_none()
                && s.start_at.is_none()
                && !self.spawning.values().any(|(sl, _)| *sl == slot)
            {
                self.spawn(slot, out);
            } else if !keep && !s.retired {
                s.retired = true;
                s.start_at = None;
                if let Some(next) = s.successor.take()
                    && let Some(w) = self.workers.get_mut(&next)
                {
                    w.state = State::Stopping;
                    w.kill_at = Some(now + self.settings.quit_grace);
                    out.push(Action::Signal {
                        serial: next,
                        pid: w.pid,
                        sig: Sig::Quit,
                    });
                }
                if let Some(id) = s.worker
                    && let Some(w) = self.workers.get(&id)
                {
                    changed |= w.state.live();
                    self.drain(now, id, out);
                }
            }
        }
        if changed {
            out.push(self.publish());
        }
    }

    /// Starts generation N+1 beside N: a successor for every slot.
    fn start_reload(&mut self, now: Instant, timeout: Option<Duration>, out: &mut Vec<Action>) {
        if self.phase != Phase::Running {
            return;
        }
        if let Some(r) = &self.reload {
            out.push(Action::Log(
                Level::Warn,
                format!(
                    "reload ignored: generation {} is still starting",
                    r.generation
                ),
            ));
            return;
        }
        let generation = self.next_generation();
        let mut slots: Vec<usize> = (0..self.slots.len())
            .filter(|&s| !self.slots[s].retired)
            .collect();
        let pending = match self.settings.rolling {
            Some(surge) if surge < slots.len() => slots.split_off(surge.max(1)),
            _ => Vec::new(),
        };
        self.reload = Some(Reload {
            generation,
            started: now,
            deadline: now + timeout.unwrap_or(self.settings.reload_timeout),
            pending,
        });
        out.push(Action::Log(
            Level::Info,
            format!(
                "reload: starting generation {generation} beside generation {}",
                self.generation
            ),
        ));
        for slot in slots {
            self.start_successor(slot, out);
        }
    }

    /// Starts the new generation's worker for `slot` beside the old one.
    fn start_successor(&mut self, slot: usize, out: &mut Vec<Action>) {
        // A successor that was recycling a worker is replaced by one of the
        // new generation.
        if let Some(old) = self.slots[slot].successor.take()
            && let Some(w) = self.workers.get(&old)
        {
            out.push(Action::Signal {
                serial: old,
                pid: w.pid,
                sig: Sig::Kill,
            });
        }
        self.set_recycling(slot, true);
        self.slots[slot].start_at = None;
        self.spawn(slot, out);
    }

    /// The new generation failed: stop its workers; the old one, which never
    /// stopped serving, stays.
    fn fail_reload(
        &mut self,
        now: Instant,
        why: &str,
        detail: Option<String>,
        out: &mut Vec<Action>,
    ) {
        let Some(r) = self.reload.take() else {
            return;
        };
        out.push(Action::Log(
            Level::Error,
            format!(
                "reload failed: {why}; generation {} keeps serving",
                self.generation
            ),
        ));
        self.last_reload = Some(ReloadOutcome::Failed {
            generation: r.generation,
            at: now,
            reason: why.to_string(),
            detail,
        });
        let mut unpublish = false;
        for slot in 0..self.slots.len() {
            if let Some(next) = self.slots[slot].successor.take()
                && let Some(w) = self.workers.get_mut(&next)
            {
                unpublish |= w.state.live();
                w.state = State::Stopping;
                w.kill_at = Some(now + self.settings.quit_grace);
                out.push(Action::Signal {
                    serial: next,
                    pid: w.pid,
                    sig: Sig::Quit,
                });
            }
            self.set_recycling(slot, false);
        }
        // Spawns of the new generation not reported yet are dropped.
        self.spawning.retain(|_, (_, g)| *g != r.generation);
        if unpublish {
            out.push(self.publish());
        }
    }

    /// max_requests plus jitter for a new worker (None: never).
    fn recycle_limit(&mut self) -> Option<u64> {
        if self.settings.max_requests == 0 {
            return None;
        }
        // xorshift64: deterministic for a given seed, good enough for jitter.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let jitter = self.rng % (self.settings.max_requests_jitter + 1);
        Some(self.settings.max_requests + jitter)
    }

    /// Starts recycling a worker that is past its request or memory limit:
    /// its replacement boots first; it keeps serving until then.
    fn on_usage(
        &mut self,
        now: Instant,
        serial: u64,
        requests: u64,
        rss: Option<u64>,
        out: &mut Vec<Action>,
    ) {
        if self.phase != Phase::Running || self.reload.is_some() {
            return;
        }
        let max_memory = self.settings.max_memory;
        let Some(w) = self.workers.get_mut(&serial) else {
            return;
        };
        let slot = w.slot;
        if w.state != State::InService
            || w.recycling
            || self.slots[slot].worker != Some(serial)
            || self.slots[slot].start_at.is_some_and(|t| t > now)
        {
            return;
        }
        let why = if let Some(limit) = w.recycle_after.filter(|l| requests >= *l) {
            format!("served {requests} requests (its limit: {limit}, max_requests plus jitter)")
        } else if let (Some(max), Some(rss)) = (max_memory, rss.filter(|r| Some(*r) > max_memory)) {
            format!(
                "uses {} MiB of memory (max_memory {} MiB)",
                rss / (1 << 20),
                max / (1 << 20)
            )
        } else {
            return;
        };
        w.recycling = true;
        out.push(Action::Log(
            Level::Info,
            format!(
                "worker {slot} (pid {}) {why}: recycling it; its replacement starts first",
                w.pid
            ),
        ));
        self.slots[slot].start_at = None;
        self.spawn(slot, out);
    }

    /// A successor in service takes its slot; the recycled worker stops
    /// taking requests, finishes those in flight, and is stopped.
    fn promote_successors(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.settings.rolling.is_some() && self.reload.is_some() {
            return self.roll(now, out);
        }
        if let Some(r) = &self.reload {
            // All at once: the old generation serves untouched until every
            // slot of the new one is in service.
            let ready = self.slots.iter().filter(|s| !s.retired).all(|s| {
                let id = s.successor.or(s.worker);
                id.and_then(|id| self.workers.get(&id))
                    .is_some_and(|w| w.generation == r.generation && w.state == State::InService)
            });
            if !ready {
                return;
            }
            self.reload_done(now, false, out);
        }
        for slot in 0..self.slots.len() {
            let Some(next) = self.slots[slot].successor else {
                continue;
            };
            if self.workers.get(&next).map(|w| w.state) != Some(State::InService) {
                continue;
            }
            self.recycled += 1;
            self.take_slot(now, slot, next, out);
        }
    }

    /// `next` (in service) takes `slot`; the worker it replaces leaves the
    /// routing set, drains and gets SIGTERM. False when there was none.
    fn take_slot(&mut self, now: Instant, slot: usize, next: u64, out: &mut Vec<Action>) -> bool {
        self.slots[slot].successor = None;
        let old = self.slots[slot].worker.replace(next);
        self.slots[slot].failures = 0;
        self.slots[slot].restarts += 1;
        match old.filter(|s| self.workers.contains_key(s)) {
            Some(old) => {
                self.drain(now, old, out);
                true
            }
            None => false,
        }
    }

    /// Rolling reload: each successor in service takes its slot at once (its
    /// old worker drains) and the next slot's successor starts, so at most
    /// max_surge extra workers run. When the last slot is done, so is the
    /// reload. (A failure part-way leaves the slots already moved on the new
    /// generation: they passed their checks.)
    fn roll(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Some(generation) = self.reload.as_ref().map(|r| r.generation) else {
            return;
        };
        for slot in 0..self.slots.len() {
            let Some(next) = self.slots[slot].successor else {
                continue;
            };
            if self.workers.get(&next).map(|w| (w.state, w.generation))
                != Some((State::InService, generation))
            {
                continue;
            }
            if !self.take_slot(now, slot, next, out) {
                // The slot had no old worker to drain: go on at once.
                self.roll_next(out);
            }
        }
        self.roll_done(now, out);
    }

    /// Rolling: an old worker is gone, so the next slot's successor may start
    /// without exceeding max_surge extra processes.
    fn roll_next(&mut self, out: &mut Vec<Action>) {
        if self.settings.rolling.is_none() || self.phase != Phase::Running {
            return;
        }
        let next = self
            .reload
            .as_mut()
            .and_then(|r| (!r.pending.is_empty()).then(|| r.pending.remove(0)));
        if let Some(slot) = next {
            self.start_successor(slot, out);
        }
    }

    fn roll_done(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Some(generation) = self.reload.as_ref().map(|r| r.generation) else {
            return;
        };
        let done = self.reload.as_ref().is_some_and(|r| r.pending.is_empty())
            && self.slots.iter().filter(|s| !s.retired).all(|s| {
                s.successor.is_none()
                    && s.worker
                        .and_then(|w| self.workers.get(&w))
                        .is_some_and(|w| w.generation == generation)
            });
        if done {
            self.reload_done(now, true, out);
        }
    }

    /// Ends the reload in progress: its generation is now the current one.
    fn reload_done(&mut self, now: Instant, rolling: bool, out: &mut Vec<Action>) {
        let r = self.reload.take().expect("a reload in progress");
        self.generation = r.generation;
        self.last_reload = Some(ReloadOutcome::Done {
            generation: r.generation,
            at: now,
        });
        let ms = now.saturating_duration_since(r.started).as_millis();
        let how = if rolling {
            format!("{ms} ms, rolling)")
        } else {
            format!("{ms} ms); generation {} drains", r.generation - 1)
        };
        out.push(Action::Log(
            Level::Info,
            format!(
                "reload done: generation {} is in service ({how}",
                r.generation
            ),
        ));
    }

    /// The routing set: workers in service, or every live worker while
    /// fewer than `min_in_service` are (the panic threshold).
    fn publish(&mut self) -> Action {
        let in_service: Vec<u64> = self.in_service().map(|w| w.serial).collect();
        let live: Vec<u64> = self
            .workers
            .values()
            .filter(|w| w.state.live() && w.kill_at.is_none())
            .map(|w| w.serial)
            .collect();
        let panic = self.phase != Phase::Stopping
            && in_service.len() < self.settings.min_in_service
            && live.len() > in_service.len();
        if panic != self.panic {
            self.panic = panic;
        }
        Action::Publish(if panic { live } else { in_service })
    }
}

/// Pushes a killed worker's deadline out of the way: SIGKILL is sent once.
const KILLED: Duration = Duration::from_secs(3600);

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

#[cfg(test)]
mod tests;
