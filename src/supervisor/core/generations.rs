//! How workers move between slots and generations: reloads (all at once or
//! rolling), recycling past `max_requests`/`max_memory`, and scaling. Part of
//! the pure [`Core`]: no I/O, the time comes in as `now`.

use std::time::{Duration, Instant};

use super::{Action, CanaryRun, Core, Level, Phase, Reload, ReloadOutcome, Sig, Slot, State};

impl Core {
    /// The number the next reload's generation gets: a failed generation's
    /// number is not reused.
    pub fn next_generation(&self) -> u64 {
        let failed = match &self.last_reload {
            Some(
                ReloadOutcome::Failed { generation, .. }
                | ReloadOutcome::Cancelled { generation, .. },
            ) => *generation,
            _ => 0,
        };
        self.generation.max(failed) + 1
    }

    /// Marks the slot's current worker as being replaced (or not any more).
    pub(super) fn set_recycling(&mut self, slot: usize, on: bool) {
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
    pub(super) fn scale(&mut self, now: Instant, count: usize, out: &mut Vec<Action>) {
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
                // A rolling reload does not start a successor for it.
                if let Some(r) = &mut self.reload {
                    r.pending.retain(|p| *p != slot);
                }
                if let Some(next) = s.successor.take()
                    && let Some(w) = self.workers.get_mut(&next)
                {
                    if w.state.live() {
                        // In service already (a reload's successor takes
                        // requests beside the old worker): it finishes them.
                        changed = true;
                        self.drain(now, next, out);
                    } else {
                        w.stop_by(now, now + self.settings.quit_grace);
                        out.push(Action::Signal {
                            serial: next,
                            pid: w.pid,
                            sig: Sig::Quit,
                        });
                    }
                }
                let s = &self.slots[slot];
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
        // A reload waits only for the slots still wanted: if the ones it
        // waited for were scaled away, the rest may be all it needs.
        if self.reload.is_some() {
            self.promote_successors(now, out);
        }
    }

    /// Starts generation N+1 beside N: a successor for every slot.
    pub(super) fn start_reload(
        &mut self,
        now: Instant,
        timeout: Option<Duration>,
        run: Option<CanaryRun>,
        out: &mut Vec<Action>,
    ) {
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
        let canary = run.map(CanaryRun::settings).or(self.settings.canary);
        let hold = canary.map_or(Duration::ZERO, |c| c.hold);
        self.reload = Some(Reload {
            generation,
            started: now,
            deadline: now + timeout.unwrap_or(self.settings.reload_timeout) + hold,
            pending,
            canary: canary.map(|_| false),
            window: run.map(|r| r.window),
        });
        if let Some(c) = canary {
            out.push(Action::Route(Some((generation, c.permille))));
        }
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
    pub(super) fn start_successor(&mut self, slot: usize, out: &mut Vec<Action>) {
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
    pub(super) fn fail_reload(
        &mut self,
        now: Instant,
        why: &str,
        detail: Option<String>,
        out: &mut Vec<Action>,
    ) {
        if self.reload.is_some() {
            self.reloads_failed += 1;
        }
        self.end_reload(now, why, detail, out);
    }

    /// Ends the reload under way, which failed (its canary included): the
    /// old generation keeps serving.
    fn end_reload(
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
        let served = r.canary.is_some();
        self.stop_successors(now, &r, served, out);
    }

    /// A stop began during a reload: the reload ends, cancelled rather than
    /// failed (its code is not to blame: no rollback, not counted as a
    /// failure), and its generation does not take over. Its workers stop
    /// now when `signal` (those in service finish their requests first);
    /// otherwise the stop that follows signals them with every other.
    pub(super) fn cancel_reload(&mut self, now: Instant, signal: bool, out: &mut Vec<Action>) {
        let Some(r) = self.reload.take() else {
            return;
        };
        const WHY: &str = "corral is stopping";
        out.push(Action::Log(
            Level::Info,
            format!(
                "reload of generation {} cancelled: {WHY}; generation {} keeps serving until the stop",
                r.generation, self.generation
            ),
        ));
        self.reloads_cancelled += 1;
        self.last_reload = Some(ReloadOutcome::Cancelled {
            generation: r.generation,
            at: now,
            reason: WHY.to_string(),
        });
        if signal {
            self.stop_successors(now, &r, true, out);
            return;
        }
        if r.canary.is_some() {
            out.push(Action::Route(None));
        }
        for slot in 0..self.slots.len() {
            self.slots[slot].successor = None;
            self.set_recycling(slot, false);
        }
        self.spawning.retain(|_, (_, g)| *g != r.generation);
    }

    /// Stops the workers of the reload `r`, which ended without taking
    /// over. With `finish_requests` (a canary's served real requests, and
    /// a reload a stop cancelled may have served some beside the old
    /// generation), those in service finish theirs (SIGTERM, as in a
    /// drain); the others get SIGQUIT.
    fn stop_successors(
        &mut self,
        now: Instant,
        r: &Reload,
        finish_requests: bool,
        out: &mut Vec<Action>,
    ) {
        if r.canary.is_some() {
            out.push(Action::Route(None));
        }
        let mut unpublish = false;
        let signals_from = out.len();
        for slot in 0..self.slots.len() {
            if let Some(next) = self.slots[slot].successor.take() {
                unpublish |= self.stop_unpromoted(now, next, finish_requests, out);
            }
            self.set_recycling(slot, false);
            // A slot added by scaling during the reload started on its
            // generation: that worker goes too, and the slot starts again
            // on the generation that keeps serving (its exit, asked for,
            // starts the replacement).
            if let Some(id) = self.slots[slot].worker
                && self
                    .workers
                    .get(&id)
                    .is_some_and(|w| w.generation == r.generation && w.kill_at.is_none())
            {
                unpublish |= self.stop_unpromoted(now, id, finish_requests, out);
            }
        }
        // Spawns of the new generation not reported yet are dropped.
        self.spawning.retain(|_, (_, g)| *g != r.generation);
        if finish_requests {
            // Out of the routing set before the signals: no new request
            // reaches a worker told to stop.
            let publish = self.publish();
            out.insert(signals_from, publish);
        } else if unpublish {
            out.push(self.publish());
        }
    }

    /// Stops `serial`, a worker of a reload that ended without taking
    /// over: with `finish_requests`, one in service finishes its requests
    /// (SIGTERM, as in a drain); any other gets SIGQUIT. Whether it was
    /// live (in the routing set).
    fn stop_unpromoted(
        &mut self,
        now: Instant,
        serial: u64,
        finish_requests: bool,
        out: &mut Vec<Action>,
    ) -> bool {
        let Some(w) = self.workers.get_mut(&serial) else {
            return false;
        };
        let live = w.state.live();
        if finish_requests && live {
            self.drain(now, serial, out);
        } else {
            w.stop_by(now, now + self.settings.quit_grace);
            out.push(Action::Signal {
                serial,
                pid: w.pid,
                sig: Sig::Quit,
            });
        }
        live
    }

    /// The deploy policy's verdict on a canary: a pass lets the new
    /// generation take over as in any reload; a failure stops it.
    pub(super) fn on_canary(
        &mut self,
        now: Instant,
        generation: u64,
        verdict: Result<(), (String, Option<String>)>,
        out: &mut Vec<Action>,
    ) {
        // A stop has begun: the verdict changes nothing any more.
        if self.phase != Phase::Running {
            return;
        }
        let Some(r) = self.reload.as_mut() else {
            return;
        };
        if r.generation != generation || r.canary != Some(false) {
            return;
        }
        match verdict {
            Ok(()) => {
                r.canary = Some(true);
                out.push(Action::Log(
                    Level::Info,
                    format!("canary passed: generation {generation} takes over"),
                ));
                self.promote_successors(now, out);
                out.push(self.publish());
            }
            Err((reason, detail)) => {
                // Counted apart from the reloads that fail to come up.
                self.canaries_failed += 1;
                self.end_reload(now, &reason, detail, out);
            }
        }
    }

    /// max_requests plus jitter for a new worker (None: never).
    pub(super) fn recycle_limit(&mut self) -> Option<u64> {
        if self.settings.max_requests == 0 {
            return None;
        }
        let jitter = self.random() % (self.settings.max_requests_jitter + 1);
        Some(self.settings.max_requests + jitter)
    }

    /// max_lifetime plus up to a tenth of it, for a new worker (None: never).
    pub(super) fn lifetime(&mut self) -> Option<std::time::Duration> {
        let life = self.settings.max_lifetime?;
        let tenth = (life.as_millis() / 10) as u64;
        let jitter = self.random() % (tenth + 1);
        Some(life + std::time::Duration::from_millis(jitter))
    }

    /// The next number of the jitters' xorshift64: deterministic for a
    /// given seed, good enough for jitter.
    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Starts recycling a worker that is past its request, memory or age limit:
    /// its replacement boots first; it keeps serving until then.
    pub(super) fn on_usage(
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
        // The cause, as an index of RECYCLE_CAUSES, and what the log says.
        let (cause, why) = if let Some(limit) = w.recycle_after.filter(|l| requests >= *l) {
            (
                0,
                format!(
                    "served {requests} requests (its limit: {limit}, max_requests plus jitter)"
                ),
            )
        } else if let (Some(max), Some(rss)) = (max_memory, rss.filter(|r| Some(*r) > max_memory)) {
            (
                1,
                format!(
                    "uses {} MiB of memory (max_memory {} MiB)",
                    rss / (1 << 20),
                    max / (1 << 20)
                ),
            )
        } else if w.retire_at.is_some_and(|at| now >= at) {
            (
                2,
                format!(
                    "has served for {} s (max_lifetime {:?}, plus up to a tenth)",
                    now.saturating_duration_since(w.started).as_secs(),
                    self.settings.max_lifetime.unwrap_or_default()
                ),
            )
        } else {
            return;
        };
        w.recycling = true;
        self.recycles[cause] += 1;
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
    pub(super) fn promote_successors(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.settings.rolling.is_some() && self.reload.is_some() {
            return self.roll(now, out);
        }
        let finishing = self.reload.is_some();
        if let Some(r) = &self.reload {
            // All at once: the old generation serves untouched until every
            // slot of the new one is in service.
            let ready = self.slots.iter().filter(|s| !s.retired).all(|s| {
                let id = s.successor.or(s.worker);
                id.and_then(|id| self.workers.get(&id))
                    .is_some_and(|w| w.generation == r.generation && w.state == State::InService)
            });
            // A canary holds the switch until it passed.
            if !ready || r.canary == Some(false) {
                return;
            }
        }
        for slot in 0..self.slots.len() {
            let Some(next) = self.slots[slot].successor else {
                continue;
            };
            if self.workers.get(&next).map(|w| w.state) != Some(State::InService) {
                continue;
            }
            self.take_slot(now, slot, next, out);
        }
        if finishing {
            self.reload_done(now, false, out);
        }
    }

    /// `next` (in service) takes `slot`; the worker it replaces leaves the
    /// routing set, drains and gets SIGTERM. False when there was none.
    pub(super) fn take_slot(
        &mut self,
        now: Instant,
        slot: usize,
        next: u64,
        out: &mut Vec<Action>,
    ) -> bool {
        self.slots[slot].successor = None;
        let old = self.slots[slot].worker.replace(next);
        // Not a restart: those count the exits corral did not ask for
        // (what an alert on them is for), not deploys and recycling.
        self.slots[slot].failures = 0;
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
    pub(super) fn roll(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Some(generation) = self.reload.as_ref().map(|r| r.generation) else {
            return;
        };
        // During a canary the first successors serve their share beside
        // the old workers, and take no slot yet.
        if self
            .reload
            .as_ref()
            .is_some_and(|r| r.canary == Some(false))
        {
            return;
        }
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
    pub(super) fn roll_next(&mut self, out: &mut Vec<Action>) {
        if self.settings.rolling.is_none() || self.phase != Phase::Running {
            return;
        }
        let Some(r) = self.reload.as_mut() else {
            return;
        };
        // A slot scaled away since the reload started gets no successor.
        let slots = &self.slots;
        r.pending.retain(|p| !slots[*p].retired);
        if !r.pending.is_empty() {
            let slot = r.pending.remove(0);
            self.start_successor(slot, out);
        }
    }

    pub(super) fn roll_done(&mut self, now: Instant, out: &mut Vec<Action>) {
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
    pub(super) fn reload_done(&mut self, now: Instant, rolling: bool, out: &mut Vec<Action>) {
        let r = self.reload.take().expect("a reload in progress");
        if r.canary.is_some() {
            out.push(Action::Route(None));
        }
        // The new routing goes out before the line that says so: a client
        // that reads "reload done" and asks again meets the new generation.
        out.push(self.publish());
        // After a failed reload the one before is not r.generation - 1.
        let old = std::mem::replace(&mut self.generation, r.generation);
        self.reloads_done += 1;
        self.last_reload = Some(ReloadOutcome::Done {
            generation: r.generation,
            at: now,
        });
        let ms = now.saturating_duration_since(r.started).as_millis();
        let how = if rolling {
            format!("{ms} ms, rolling)")
        } else {
            format!("{ms} ms); generation {old} drains")
        };
        out.push(Action::Log(
            Level::Info,
            format!(
                "reload done: generation {} is in service ({how}",
                r.generation
            ),
        ));
    }
}
