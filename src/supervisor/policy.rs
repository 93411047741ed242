//! The deploy policy: when a generation counts as good, and what a failed
//! one (or a cold start where nothing boots) sets off. A pure state machine
//! like the life-cycle core: [`Policy::step`] looks at a [`View`] of the
//! worker table after each round of events and returns the [`Decision`]s;
//! the supervisor carries them out (state dir, accept gate, the rollback
//! hook, the built-in rollback, the exit).
//!
//! The rules:
//! - a generation whose every active slot is in service, with no reload
//!   pending, is recorded as good, once;
//! - a failed reload is reported once (`on_reload_failed`), and runs the
//!   rollback once per failed generation;
//! - a reload a stop cancelled (`ReloadOutcome::Cancelled`) is no failure:
//!   nothing is reported or rolled back;
//! - at a cold start (nothing recorded good yet) where every slot has failed
//!   and none is in service, the rollback runs once, or corral exits when
//!   `exit_on_boot_failure` is set; not in a corral a USR2 re-exec started
//!   while the old one serves on (its code is not the failure's: the new
//!   corral gives up at `ready_timeout` and the old one is as it was);
//! - the code a built-in rollback restored is not rolled back again when it
//!   fails too (no loop between two broken revisions);
//! - a canary's window starts when the first worker of its generation is in
//!   service; from then on each round judges the figures of both
//!   generations ([`crate::canary::judge`]) until a verdict, given once.

use std::time::{Duration, Instant};

use super::core::{Core, Phase, ReloadOutcome};
use crate::canary::{Sample, Thresholds, Verdict, counted, judge};

/// What the policy is configured to do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicySettings {
    /// `[deploy] exit_on_boot_failure`.
    pub exit_on_boot_failure: bool,
    /// `[deploy] rollback` is not "none".
    pub builtin_rollback: bool,
    /// `[deploy] rollback_hook` is set.
    pub hook: bool,
    /// `[deploy] canary_*`, when canary reloads are on.
    pub canary: Option<Thresholds>,
}

/// What the policy needs to know of the worker table.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// The serving generation.
    pub generation: u64,
    pub reloading: bool,
    /// Slots that are not scaled away.
    pub active: usize,
    /// Workers in service, and those of them from the serving generation.
    pub in_service: usize,
    pub in_service_of_generation: usize,
    /// Neither draining nor stopping.
    pub running: bool,
    /// Every slot's boots fail (at least once in a row; a worker that
    /// booted and died young does not count).
    pub every_slot_failed: bool,
    /// The first slot's boot error (a traceback), if any.
    pub first_error: Option<String>,
    pub last_reload: Option<ReloadOutcome>,
    pub now: Instant,
    /// A canary that runs: its generation, its workers in service, and
    /// its window when the reload asked for its own.
    pub canary: Option<(u64, usize, Option<Duration>)>,
    /// The figures of the old and the new generation so far (the
    /// supervisor reads them from the router).
    pub samples: Option<(Sample, Sample)>,
    /// Started by a USR2 re-exec, and the corral that started it still
    /// serves (the supervisor sets it).
    pub parent_serves: bool,
}

impl View {
    pub fn of(core: &Core, now: Instant) -> View {
        let generation = core.generation;
        let canary = core
            .reload
            .as_ref()
            .filter(|r| r.canary == Some(false))
            .map(|r| {
                let serving = core
                    .in_service()
                    .filter(|w| w.generation == r.generation)
                    .count();
                (r.generation, serving, r.window)
            });
        View {
            now,
            canary,
            samples: None,
            parent_serves: false,
            generation,
            reloading: core.reload.is_some(),
            active: core.active(),
            in_service: core.in_service().count(),
            in_service_of_generation: core
                .in_service()
                .filter(|w| w.generation == generation)
                .count(),
            running: core.phase == Phase::Running,
            every_slot_failed: core.slots.iter().all(|s| s.failures > 0 && s.boot_failing),
            first_error: core
                .slots
                .iter()
                .find_map(|s| s.last_error.as_ref().map(|e| e.text.clone())),
            last_reload: core.last_reload.clone(),
        }
    }
}

/// What the supervisor is to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// This generation is all in service: record it as the last known good.
    Good(u64),
    /// Nothing could boot at a cold start and `exit_on_boot_failure` is set.
    ExitBootFailure,
    /// A reload failed (reported once per generation): run `on_reload_failed`.
    ReloadFailed { generation: u64, reason: String },
    /// The code a rollback restored failed too: it is not rolled back again.
    NoSecondRollback,
    /// Nothing could boot in a corral a USR2 re-exec started, and the old
    /// corral serves on: no rollback (it gives up at `ready_timeout`).
    NoRollbackBesideParent,
    /// Run the rollback hook (when one is set) for this failed generation,
    /// then the built-in rollback when `builtin`.
    Rollback {
        generation: u64,
        reason: String,
        detail: Option<String>,
        builtin: bool,
    },
    /// The canary of `generation` is judged: it passed (`Ok`) or failed
    /// (`Err(why)`), on these figures of the old and the new generation.
    Canary {
        generation: u64,
        verdict: Result<(), String>,
        old: Sample,
        new: Sample,
    },
}

#[derive(Debug)]
pub struct Policy {
    settings: PolicySettings,
    /// The last generation recorded as good (0: none yet).
    recorded_good: u64,
    /// The last failed generation the rollback ran for.
    handled_failure: Option<u64>,
    /// The cold-start rollback ran (it runs once).
    cold_ran: bool,
    /// The generation a built-in rollback reloaded, if any.
    rollback_generation: Option<u64>,
    /// The canary that runs: its generation and when its window started
    /// (None until its first worker is in service).
    canary: Option<(u64, Option<Instant>)>,
}

impl Policy {
    pub fn new(settings: PolicySettings) -> Policy {
        Policy {
            settings,
            recorded_good: 0,
            handled_failure: None,
            cold_ran: false,
            rollback_generation: None,
            canary: None,
        }
    }

    /// The canary's verdict, once its window has started: judged on every
    /// round until it is not [`Verdict::Wait`].
    fn canary_step(&mut self, v: &View, out: &mut Vec<Decision>) {
        let Some((generation, serving, window)) = v.canary else {
            return;
        };
        // A reload may ask for a canary the config does not set up: the
        // default rule, with its own window.
        let mut t = self.settings.canary.unwrap_or(Thresholds::DEFAULT);
        if let Some(window) = window {
            t.duration = window;
        }
        if self.canary.is_none_or(|(g, _)| g != generation) {
            self.canary = Some((generation, None));
        }
        let Some((_, since)) = self.canary.as_mut() else {
            return;
        };
        if since.is_none() && serving > 0 {
            *since = Some(v.now);
        }
        let (Some(since), Some((old, new))) = (*since, &v.samples) else {
            return;
        };
        let verdict = match judge(&t, old, new, v.now.saturating_duration_since(since)) {
            Verdict::Wait => return,
            Verdict::Pass => Ok(()),
            Verdict::Fail(why) => Err(why),
        };
        // The figures the verdict went on: unanswered requests counted in.
        let (old, new) = counted(&t, old, new);
        out.push(Decision::Canary {
            generation,
            verdict,
            old,
            new,
        });
    }

    /// The last generation recorded as good; 0 before the first.
    pub fn recorded_good(&self) -> u64 {
        self.recorded_good
    }

    /// The built-in rollback restored the good code, which now starts as
    /// `generation`: if that fails too, it is not rolled back again.
    pub fn rolled_back(&mut self, generation: u64) {
        self.rollback_generation = Some(generation);
    }

    /// What to do after a round of events.
    pub fn step(&mut self, v: &View) -> Vec<Decision> {
        let mut out = Vec::new();
        self.canary_step(v, &mut out);
        if v.generation > self.recorded_good
            && !v.reloading
            && v.active > 0
            && v.in_service_of_generation >= v.active
        {
            self.recorded_good = v.generation;
            out.push(Decision::Good(v.generation));
        }
        let failed_generation = match &v.last_reload {
            Some(ReloadOutcome::Failed { generation, .. }) => Some(*generation),
            _ => None,
        };
        let failure = match &v.last_reload {
            Some(ReloadOutcome::Failed {
                generation,
                reason,
                detail,
                ..
            }) if self.handled_failure != Some(*generation) => {
                self.handled_failure = Some(*generation);
                out.push(Decision::ReloadFailed {
                    generation: *generation,
                    reason: reason.clone(),
                });
                Some((*generation, reason.clone(), detail.clone()))
            }
            _ => None,
        };
        let cold = if failure.is_none()
            && !self.cold_ran
            && self.recorded_good == 0
            && v.running
            && v.in_service == 0
            && v.every_slot_failed
        {
            self.cold_ran = true;
            let last_line = v
                .first_error
                .as_ref()
                .and_then(|e| e.trim_end().lines().last().map(str::to_string))
                .unwrap_or_default();
            Some((
                1,
                format!("no worker of generation 1 could boot: {last_line}"),
                v.first_error.clone(),
            ))
        } else {
            None
        };
        let is_cold = cold.is_some();
        if is_cold && self.settings.exit_on_boot_failure {
            out.push(Decision::ExitBootFailure);
            return out;
        }
        if is_cold && v.parent_serves {
            if self.settings.hook || self.settings.builtin_rollback {
                out.push(Decision::NoRollbackBesideParent);
            }
            return out;
        }
        let Some((generation, reason, detail)) = failure.or(cold) else {
            return out;
        };
        let again = !is_cold
            && failed_generation.is_some()
            && failed_generation == self.rollback_generation;
        if again {
            out.push(Decision::NoSecondRollback);
        }
        let builtin = self.settings.builtin_rollback && !again;
        if self.settings.hook || builtin {
            out.push(Decision::Rollback {
                generation,
                reason,
                detail,
                builtin,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests;
