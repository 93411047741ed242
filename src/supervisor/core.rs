//! The worker life cycle as a pure state machine: no I/O and no clock of its
//! own. [`Core::on_event`] takes the time and one [`Event`] and returns the
//! [`Action`]s to perform; the actor in `supervisor/mod.rs` performs them
//! (spawn, signal, publish the in-service set, log). Timers are not tasks:
//! the core says when it next needs a [`Event::Tick`] ([`Core::next_deadline`]).
//!
//! ```text
//! spawned ─► Booting ─(BOOT_OK)─► InService ─(replace, stop, channel closed)─► Stopping ─► exited
//!               │ boot error, exit, or boot_timeout
//!               └──► exited: the slot restarts after a back-off that doubles
//!                    per failure in a row (restart_backoff .. restart_backoff_max)
//! ```
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
    InService,
    Stopping,
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
    ChannelClosed {
        serial: u64,
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
    /// Stop everything: fast (QUIT/INT) or after the front drained (TERM).
    Stop {
        fast: bool,
    },
    Tick,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Spawn {
        slot: usize,
        serial: u64,
    },
    Signal {
        serial: u64,
        pid: u32,
        sig: Sig,
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
    kill_at: Option<Instant>,
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
    Stopping,
}

pub struct Core {
    pub settings: Settings,
    pub slots: Vec<Slot>,
    pub workers: BTreeMap<u64, Worker>,
    pub phase: Phase,
    /// Boots that failed (error, crash or timeout), since the start.
    pub boot_failures: u64,
    next_serial: u64,
    /// Serials of spawns requested and not yet reported.
    spawning: BTreeMap<u64, usize>,
}

impl Core {
    pub fn new(settings: Settings) -> Core {
        Core {
            slots: vec![Slot::default(); settings.count],
            settings,
            workers: BTreeMap::new(),
            phase: Phase::Running,
            boot_failures: 0,
            next_serial: 1,
            spawning: BTreeMap::new(),
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
            .filter(|w| w.state == State::Booting && w.kill_at.is_none())
            .map(|w| w.started + self.settings.boot_timeout);
        let kills = self.workers.values().filter_map(|w| w.kill_at);
        starts.chain(boots).chain(kills).min()
    }

    pub fn on_event(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Spawned { serial, pid } => self.on_spawned(now, serial, pid, &mut out),
            Event::SpawnFailed { serial, error } => {
                if let Some(slot) = self.spawning.remove(&serial) {
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
                    // It exits by itself; if it lingers (a thread the app
                    // started), it is killed.
                    w.kill_at.get_or_insert(now + self.settings.quit_grace);
                    out.push(Action::Log(
                        Level::Error,
                        format!(
                            "worker {} (pid {}) failed to boot:\n{}",
                            w.slot,
                            w.pid,
                            error.trim_end()
                        ),
                    ));
                    self.slots[w.slot].last_error = Some(BootError {
                        at: now,
                        serial,
                        text: error,
                    });
                }
            }
            Event::ChannelClosed { serial } => {
                if let Some(w) = self.workers.get_mut(&serial)
                    && w.state == State::InService
                {
                    w.state = State::Stopping;
                    w.since = now;
                    out.push(self.publish());
                }
            }
            Event::Exited { serial, exit } => self.on_exited(now, serial, exit, &mut out),
            Event::Replace { serial, reason } => self.replace(now, serial, &reason, &mut out),
            Event::Stop { fast } => self.stop(now, fast, &mut out),
            Event::Tick => self.tick(now, &mut out),
        }
        out
    }

    fn spawn(&mut self, slot: usize, out: &mut Vec<Action>) {
        let serial = self.next_serial;
        self.next_serial += 1;
        self.slots[slot].start_at = None;
        self.spawning.insert(serial, slot);
        out.push(Action::Spawn { slot, serial });
    }

    fn on_spawned(&mut self, now: Instant, serial: u64, pid: u32, out: &mut Vec<Action>) {
        let Some(slot) = self.spawning.remove(&serial) else {
            return;
        };
        self.slots[slot].worker = Some(serial);
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
        w.state = State::InService;
        w.since = now;
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
        out.push(self.publish());
        let n = self.in_service().count();
        if n == self.slots.len() {
            out.push(Action::Log(
                Level::Info,
                format!("all {n} workers in service"),
            ));
        }
    }

    fn on_exited(&mut self, now: Instant, serial: u64, exit: Exit, out: &mut Vec<Action>) {
        let Some(w) = self.workers.remove(&serial) else {
            return;
        };
        let slot = w.slot;
        if self.slots[slot].worker == Some(serial) {
            self.slots[slot].worker = None;
        }
        let how = exit.describe();
        self.slots[slot].last_exit = Some(how.clone());
        if w.state == State::InService {
            out.push(self.publish());
        }
        if self.phase == Phase::Stopping {
            out.push(Action::Log(
                Level::Info,
                format!("worker {slot} (pid {}) {how}", w.pid),
            ));
            if self.workers.is_empty() && self.spawning.is_empty() {
                out.push(Action::Exit);
            }
            return;
        }
        self.slots[slot].restarts += 1;
        match w.state {
            State::Booting => {
                if !w.boot_failed && w.kill_at.is_none() {
                    // Died while importing without a report: a crash
                    // (os._exit, segfault) rather than a Python exception.
                    let text = format!("the worker {how} while booting, before it could report");
                    self.slots[slot].last_error = Some(BootError {
                        at: now,
                        serial,
                        text,
                    });
                }
                out.push(Action::Log(
                    Level::Error,
                    format!("worker {slot} (pid {}) failed to boot: it {how}", w.pid),
                ));
                self.boot_failures += 1;
                self.failed(now, slot, out);
            }
            State::InService | State::Stopping => {
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
                if now - w.since < self.settings.young && w.state == State::InService {
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

    fn replace(&mut self, now: Instant, serial: u64, reason: &str, out: &mut Vec<Action>) {
        let Some(w) = self.workers.get_mut(&serial) else {
            return;
        };
        if w.kill_at.is_some() {
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
        if was == State::InService {
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
                        && self.slots[i].start_at.is_some_and(|t| t <= now)
                })
                .collect();
            for slot in due {
                self.spawn(slot, out);
            }
        }
        let timeout = self.settings.boot_timeout;
        let mut timed_out = Vec::new();
        for w in self.workers.values_mut() {
            if let Some(k) = w.kill_at
                && k <= now
            {
                w.kill_at = Some(now + Duration::from_secs(3600));
                out.push(Action::Signal {
                    serial: w.serial,
                    pid: w.pid,
                    sig: Sig::Kill,
                });
            } else if w.state == State::Booting && w.kill_at.is_none() && now - w.started >= timeout
            {
                timed_out.push(w.serial);
            }
        }
        for serial in timed_out {
            let w = self.workers.get_mut(&serial).unwrap();
            let text = format!(
                "timed out after {} while booting (importing the app); its Python stack is in the log",
                human(timeout)
            );
            out.push(Action::Log(
                Level::Error,
                format!("worker {} (pid {}) {text}", w.slot, w.pid),
            ));
            w.kill_at = Some(now + self.settings.dump_grace);
            w.boot_failed = true;
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
        }
    }

    fn publish(&self) -> Action {
        Action::Publish(self.in_service().map(|w| w.serial).collect())
    }
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

#[cfg(test)]
mod tests;
