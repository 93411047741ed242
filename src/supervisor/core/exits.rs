//! What a worker's end sets off: its exit (a failed boot, or a death corral
//! did not ask for within `young` of entering service, counts a failure,
//! backs its slot off and restarts it; a drained or recycled one hands
//! over; a stop ends when the last is gone) and its channel closing (a
//! worker in service that corral did not ask to go is `Exiting`: its exit
//! is a crash whichever is seen first; a worker that lingers is killed). Part of the pure [`Core`]: no I/O,
//! the time comes in as `now`.

use std::time::Instant;

use super::{Action, BootError, Core, Exit, KILLED, KillCause, Level, Phase, Sig, State, human};

impl Core {
    pub(super) fn on_exited(
        &mut self,
        now: Instant,
        serial: u64,
        exit: Exit,
        out: &mut Vec<Action>,
    ) {
        let Some(w) = self.workers.remove(&serial) else {
            return;
        };
        let slot = w.slot;
        let how = exit.describe_worker(w.killed);
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
            // A worker that was in service (a canary's) and then died did
            // boot: say what happened to it.
            let why = if matches!(w.state, State::InService | State::Unready | State::Exiting) {
                format!("slot {slot}'s new worker {how} after it booted")
            } else {
                format!("slot {slot} did not boot: {what}")
            };
            self.fail_reload(now, &why, detail, out);
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
            self.slots[slot].boot_failing = true;
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
            State::Booting
            | State::Probing
            | State::Killing {
                cause: KillCause::BootTimeout,
            } => {
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
                self.failed(now, slot, true, out);
            }
            State::Stopping | State::Killing { .. } => {
                // Asked to go (drained, recycled, replaced for a fault that
                // was logged when corral found it): expected.
                out.push(Action::Log(
                    Level::Info,
                    format!(
                        "worker {slot} (pid {}) {how}; starting its replacement",
                        w.pid
                    ),
                ));
                self.slots[slot].failures = 0;
                self.spawn(slot, out);
            }
            State::InService | State::Unready | State::Exiting => {
                // Nothing corral asked for: a crash, or an exit of its own,
                // whether its channel closed first (Exiting) or not.
                let level = if exit.is_crash() && !w.killed {
                    Level::Error
                } else {
                    Level::Warn
                };
                let how = match exit {
                    Exit::Code(_) => format!("{how} on its own"),
                    _ if w.state == State::Exiting && w.killed => {
                        format!("{how}: its channel had closed and it did not exit")
                    }
                    _ => how,
                };
                let served = now.saturating_duration_since(w.since);
                if served < self.settings.young {
                    out.push(Action::Log(
                        level,
                        format!(
                            "worker {slot} (pid {}) {how}, {} after it entered service; its slot backs off",
                            w.pid,
                            human(served)
                        ),
                    ));
                    self.failed(now, slot, false, out);
                } else {
                    out.push(Action::Log(
                        level,
                        format!(
                            "worker {slot} (pid {}) {how}; starting its replacement",
                            w.pid
                        ),
                    ));
                    self.slots[slot].failures = 0;
                    self.spawn(slot, out);
                }
            }
        }
    }

    /// Counts a failure for `slot` (a failed `boot`, or a death within
    /// `young` of entering service) and schedules its restart.
    pub(super) fn failed(&mut self, now: Instant, slot: usize, boot: bool, out: &mut Vec<Action>) {
        self.slots[slot].failures += 1;
        self.slots[slot].boot_failing = boot;
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
    /// A worker in service that corral did not ask to go becomes `Exiting`,
    /// not `Stopping`: its exit is a crash, logged and backed off as if the
    /// exit had come first. When corral closed it over a protocol error,
    /// the worker is killed at once (its exit then starts the
    /// replacement).
    pub(super) fn on_channel_closed(
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
        match error {
            Some(why) => {
                if was_live || w.state == State::Stopping {
                    w.enter(State::Killing {
                        cause: KillCause::ProtocolError,
                    });
                    w.since = now;
                }
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
            // Not asked to go: it crashed or exited on its own. Out of
            // service now; its exit, which follows, is a crash.
            None if matches!(w.state, State::InService | State::Unready) => {
                w.enter(State::Exiting);
                let at = now + self.settings.quit_grace;
                w.kill_at = Some(w.kill_at.map_or(at, |k| k.min(at)));
            }
            // Booting or probing (its exit is a failed boot: the deadline
            // keeps it out of the routing set meanwhile), or already going.
            None => {
                let at = now + self.settings.quit_grace;
                w.kill_at = Some(w.kill_at.map_or(at, |k| k.min(at)));
            }
        }
        if was_live {
            out.push(self.publish());
        }
    }
}
