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
//!   InService/Unready ─(its channel closed, not asked)─► Exiting ─► exited (a crash)
//! ```
//!
//! A slot whose worker failed to boot restarts after a back-off that doubles
//! per failure in a row (restart_backoff .. restart_backoff_max). Requests go
//! to InService workers; when fewer than `min_in_service` are, the *panic
//! threshold* (as in Envoy) routes to every booted worker rather than none.
//!
//! A worker that boots and then serves for at least [`Settings::young`] resets
//! its slot's failure count when it exits; one that fails to boot, or dies
//! younger than that without corral asking it to go, adds one. An exit
//! corral did not ask for is a crash (WARN, or ERROR for a signal such as
//! SIGKILL or SIGABRT), whether the worker's channel closed before it was
//! seen ([`State::Exiting`]) or not.
//!
//! Every SIGKILL deadline is the core's: a worker's `kill_at` (stack dump,
//! drain, stop, a lingering exit) is a timer [`Core::tick`] acts on. A worker
//! killed for a fault is in [`State::Killing`] with its [`KillCause`]; every
//! state change goes through [`Worker::enter`], which checks it against
//! [`State::may_become`] (the table of allowed transitions).
//!
//! The types live in [`types`]; reloads, rolling reloads, recycling and
//! scaling (what moves workers between slots and generations) in
//! `generations.rs`; what a worker's exit or closed channel sets off
//! (failures, back-off, restarts, the kill of a lingering worker) in
//! `exits.rs`.

mod exits;
mod generations;
mod types;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub use types::{
    Action, BootError, CanaryRun, Event, Exit, KillCause, Level, Phase, ProbeSettings, Reload,
    ReloadOutcome, Settings, Sig, Slot, State, Worker, exit_of, human,
};

/// The settings a worker is recycled for, in the order of
/// [`Core::recycles`]; `/metrics` names them so.
pub const RECYCLE_CAUSES: [&str; 3] = ["max_requests", "max_memory", "max_lifetime"];

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
    /// Recycles begun since the start, by cause: max_requests, max_memory,
    /// max_lifetime (see [`RECYCLE_CAUSES`]).
    pub recycles: [u64; 3],
    /// The generation that serves.
    pub generation: u64,
    pub reload: Option<Reload>,
    pub last_reload: Option<ReloadOutcome>,
    /// Reloads that ended with their generation in service, that failed
    /// to come up, and whose canary failed.
    pub reloads_done: u64,
    pub reloads_failed: u64,
    pub canaries_failed: u64,
    /// Reloads a stop cancelled.
    pub reloads_cancelled: u64,
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
            recycles: [0; 3],
            generation: 1,
            reload: None,
            last_reload: None,
            reloads_done: 0,
            reloads_failed: 0,
            canaries_failed: 0,
            reloads_cancelled: 0,
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

    /// Whether a worker is on its way into service at `now`, for a request
    /// that finds none in service to wait for: a slot's worker spawning,
    /// booting, passing its readiness check or leaving (its restart
    /// follows), or its next start due within [`SOON`] (a worker that died
    /// restarts after `restart_backoff`, or at once). Not a slot whose boots
    /// fail (a broken app gets its 503 at once), nor while stopping.
    pub fn starting(&self, now: Instant) -> bool {
        self.phase == Phase::Running
            && self.slots.iter().enumerate().any(|(i, s)| {
                if s.retired || (s.failures > 0 && s.boot_failing) {
                    return false;
                }
                match s.worker.and_then(|serial| self.workers.get(&serial)) {
                    Some(w) => !matches!(w.state, State::InService | State::Unready),
                    None => {
                        self.spawning.values().any(|(slot, _)| *slot == i)
                            || s.start_at.is_some_and(|t| t <= now + SOON)
                    }
                }
            })
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
                if let Some((slot, generation)) = self.spawning.remove(&serial) {
                    out.push(Action::Log(Level::Error, format!("worker {slot}: {error}")));
                    self.slots[slot].last_error = Some(BootError {
                        at: now,
                        serial,
                        text: error.clone(),
                    });
                    self.boot_failures += 1;
                    // A reload's worker that cannot even be started (its
                    // interpreter gone, say) fails the reload now, as one
                    // that fails to boot does, not at its deadline.
                    let successor = self.slots[slot]
                        .worker
                        .and_then(|s| self.workers.get(&s))
                        .is_some_and(|w| w.recycling);
                    if successor
                        && self
                            .reload
                            .as_ref()
                            .is_some_and(|r| r.generation == generation)
                    {
                        let why = format!("slot {slot} did not start: {error}");
                        self.fail_reload(now, &why, None, &mut out);
                    } else {
                        self.failed(now, slot, true, &mut out);
                    }
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
            Event::Drain => self.drain_all(now, &mut out),
            Event::CancelReload => self.cancel_reload(now, true, &mut out),
            Event::Stop { fast } => self.stop(now, fast, &mut out),
            Event::Reload { timeout, canary } => self.start_reload(now, timeout, canary, &mut out),
            Event::Scale { count } => self.scale(now, count, &mut out),
            Event::Canary {
                generation,
                verdict,
            } => self.on_canary(now, generation, verdict, &mut out),
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
        if let Some(requests) = recycle_after {
            out.push(Action::RecycleAfter { serial, requests });
        }
        let retire_at = self.lifetime().map(|life| now + life);
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
                // Started just before a stop: SIGKILLed below.
                killed: self.phase == Phase::Stopping,
                probe_fails: 0,
                next_probe: None,
                probing: false,
                last_beat: now,
                generation,
                recycle_after,
                retire_at,
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
            w.enter(State::Probing);
            w.probing = true;
            out.push(Action::Probe { serial });
            out.push(self.publish());
        } else {
            w.enter(State::InService);
            self.forget_older_boot_error(serial);
            self.entered_service(now, out);
        }
    }

    /// A worker in service clears its slot's boot error from before it
    /// started: a later deploy's success leaves no earlier failure shown in
    /// `/status` and `corral status` as if it were the slot's state (the
    /// log keeps it). An error since (the same reload's other try) stays.
    fn forget_older_boot_error(&mut self, serial: u64) {
        let Some(w) = self.workers.get(&serial) else {
            return;
        };
        let (slot, started) = (w.slot, w.started);
        if let Some(slot) = self.slots.get_mut(slot)
            && slot.last_error.as_ref().is_some_and(|e| e.at < started)
        {
            slot.last_error = None;
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
                    w.enter(State::InService);
                    w.since = now;
                    self.forget_older_boot_error(serial);
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
                            w.enter(State::Unready);
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

    /// Asks a worker that no longer takes requests to finish those it holds
    /// and exit (SIGTERM); SIGKILL follows after `drain_grace`.
    fn drain(&mut self, now: Instant, serial: u64, out: &mut Vec<Action>) {
        let Some(w) = self.workers.get_mut(&serial) else {
            return;
        };
        w.stop_by(now, now + self.settings.drain_grace);
        out.push(Action::Signal {
            serial,
            pid: w.pid,
            sig: Sig::Term,
        });
    }

    /// SIGTERM arrived: nothing new starts from now on; the workers keep
    /// serving while the front drains, then [`Event::Stop`] stops them. A
    /// reload under way is cancelled: its workers stop now, so none of
    /// them takes over while the front drains.
    fn drain_all(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.phase != Phase::Running {
            return;
        }
        self.phase = Phase::Draining;
        self.cancel_reload(now, true, out);
        for s in &mut self.slots {
            s.start_at = None;
        }
    }

    fn replace(&mut self, now: Instant, serial: u64, reason: &str, out: &mut Vec<Action>) {
        let Some(w) = self.workers.get_mut(&serial) else {
            return;
        };
        // Already being killed soon (a draining worker is not: its deadline
        // is its grace period, and a hung request is reason to end it now),
        // or exiting on its own (its channel closed: its exit is a crash).
        if w.killed
            || matches!(w.state, State::Killing { .. } | State::Exiting)
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
        w.enter(State::Killing {
            cause: KillCause::Hung,
        });
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
        // The stop below signals every worker, the reload's too.
        self.cancel_reload(now, false, out);
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
            w.stop_by(now, now + grace);
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
                    "timed out after {} while booting (importing the app, or an ASGI app's lifespan startup); if it needs longer, raise [workers] boot_timeout (--boot-timeout) or --timeout",
                    human(timeout)
                )
            };
            let was_live = w.state.live();
            w.enter(State::Killing {
                cause: KillCause::BootTimeout,
            });
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
                "sent no heartbeat for {} (its interpreter is wedged: a C call holding the GIL, an ASGI event loop blocked by a call that does not await, or a deadlock; [workers] heartbeat_timeout, --heartbeat-timeout, sets how long it may)",
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

/// How soon a slot's next start must be for a request to wait for it
/// ([`Core::starting`]).
const SOON: Duration = Duration::from_secs(1);

/// Pushes a killed worker's deadline out of the way: SIGKILL is sent once.
const KILLED: Duration = Duration::from_secs(3600);

#[cfg(test)]
mod tests;
