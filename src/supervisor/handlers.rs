//! One handler per message kind, as in gunicorn's arbiter: the signal
//! thread and the other tasks only queue a [`Msg`]; the supervisor loop
//! takes one at a time and [`Supervisor::dispatch`] hands it to a small
//! `handle_*` method, which either handles it here (logs, the re-exec, the
//! shutdown delay) or turns it into an [`Event`] for the core.

use std::time::{Duration, Instant};

use super::core::{CanaryRun, Event, Phase};
use super::{ForChild, Handover, Msg, ReloadError, Signal, Supervisor, Term, Waiter};
use crate::worker::channel::ControlEvent;

/// What `reload --wait` hears when a stop cancelled its reload, or came
/// before it could start.
pub(super) const CANCELLED: &str = "the reload was cancelled: corral is stopping";

impl Supervisor {
    /// Turns a message into a core event (or handles it here). Exits and
    /// channel closes are not here: [`Supervisor::receive`] pairs them.
    pub(super) fn dispatch(&mut self, msg: Msg) -> Option<Event> {
        match msg {
            Msg::Control(serial, event) => {
                if matches!(event, ControlEvent::Heartbeat)
                    && let Some(ch) = self.channels.get(&serial)
                {
                    ch.beat_taken();
                }
                Self::handle_control(serial, event)
            }
            Msg::Exited(..) | Msg::ExitHoldOver(_) => None,
            Msg::Signal(sig) => self.handle_signal(sig),
            Msg::FastStop(why) => self.fast_stop(why),
            Msg::Replace(serial, reason) => Some(Event::Replace { serial, reason }),
            Msg::Probed(serial, result) => Some(Event::ProbeResult { serial, result }),
            Msg::HookDone(run) => {
                let exit = match (run.timed_out, run.exit_code) {
                    (true, _) => "timeout".to_string(),
                    (false, Some(code)) => code.to_string(),
                    (false, None) => "none".to_string(),
                };
                *self.hook_runs.entry(exit).or_default() += 1;
                self.hook = Some(run);
                None
            }
            Msg::RolledBack(result) => self.handle_rolled_back(result),
            Msg::RollbackEnded => {
                self.rolling_back = None;
                None
            }
            Msg::Reload(timeout, canary, waiter) => self.handle_reload(timeout, canary, waiter),
            Msg::Reread(seq, read, timeout, canary, waiter) => {
                self.handle_reread(seq, read, timeout, canary, waiter)
            }
            Msg::Scale(count) => Some(Event::Scale { count }),
            Msg::Decide(promote, reply) => {
                let _ = reply.send(self.handle_decide(promote));
                None
            }
            Msg::Drift(drift) => {
                self.handle_drift(drift);
                None
            }
            Msg::Ping(reply) => {
                let _ = reply.send(());
                None
            }
            Msg::DelayOver => self.handle_delay_over(),
            Msg::FrontDrained(in_time) => self.handle_front_drained(in_time),
            Msg::ReexecDeadline => self.handle_reexec_deadline(),
            Msg::ReexecExited(pid) => {
                // It gave up (or was stopped) before it took over: this one
                // is the service again, and a USR2 may try anew.
                if self.handover == Handover::ToChild(pid) && self.term == Term::NotYet {
                    self.handover = Handover::None;
                    tracing::info!(
                        "the new corral (pid {pid}) is gone; this one serves on, and SIGUSR2 may start another"
                    );
                    // Not yet passed on, or passed on to the one that
                    // gave up: either way not done.
                    let asked = std::mem::replace(&mut self.reload_for_child, ForChild::None);
                    if asked != ForChild::None {
                        tracing::info!(
                            "the reload asked for during the hand-over starts here instead"
                        );
                        return self.handle_reload(None, None, None);
                    }
                }
                None
            }
        }
    }

    /// `corral promote` / `corral abort`: the running canary ends now,
    /// judged by the operator (its figures so far go with it).
    fn handle_decide(&mut self, promote: bool) -> Result<(), String> {
        let running = self
            .core
            .reload
            .as_ref()
            .filter(|r| r.canary == Some(false));
        let (Some(r), Some(split)) = (running, self.split.clone()) else {
            return Err("no canary is running".into());
        };
        let generation = r.generation;
        let verdict = if promote {
            tracing::info!("canary of generation {generation}: promoted by `corral promote`");
            Ok(())
        } else {
            Err("aborted by `corral abort`".into())
        };
        let t = (self.cfg.deploy.canary.as_ref())
            .map_or(crate::canary::Thresholds::DEFAULT, |c| c.thresholds);
        let (old, new) = crate::canary::counted(&t, &split.old.sample(), &split.new.sample());
        self.canary_judged(generation, verdict, &old, &new);
        Ok(())
    }

    fn handle_control(serial: u64, event: ControlEvent) -> Option<Event> {
        match event {
            ControlEvent::Booted(info) => Some(Event::Booted {
                serial,
                import_ms: info.import_ms,
            }),
            ControlEvent::BootFailed(error) => Some(Event::BootFailed { serial, error }),
            ControlEvent::Heartbeat => Some(Event::Heartbeat { serial }),
            ControlEvent::AtLimit(requests) => Some(Event::Usage {
                serial,
                requests,
                rss: None,
            }),
            // Paired with the exit by `receive`.
            ControlEvent::Closed(_) => None,
        }
    }

    fn handle_signal(&mut self, sig: Signal) -> Option<Event> {
        match sig {
            Signal::Term => self.handle_term(),
            Signal::Int | Signal::Quit => self.fast_stop(sig.name()),
            Signal::Hup => self.handle_hup(),
            Signal::Ttin => self.handle_ttin(),
            Signal::Ttou => self.handle_ttou(),
            Signal::Usr1 => {
                Self::handle_usr1();
                None
            }
            Signal::Usr2 => {
                self.handle_usr2();
                None
            }
        }
    }

    /// TERM: not ready from now on; after `shutdown_delay` (or at once, or
    /// at a second TERM), the graceful stop.
    fn handle_term(&mut self) -> Option<Event> {
        // The new corral of a USR2 took over (or is told to serve alone):
        // a reload asked for before it could take one is its now.
        if let Handover::ToChild(child) = self.handover {
            if self.reload_for_child == ForChild::Waiting {
                self.pass_reload_on(child, None);
            }
            // The new corral serves on: a reload passed on is its own.
            self.reload_for_child = ForChild::None;
        }
        if self.core.phase == Phase::Stopping {
            return None;
        }
        match self.term {
            Term::Delaying => {
                return self.graceful_stop("SIGTERM again: the rest of shutdown_delay skipped");
            }
            Term::Draining => return None,
            Term::NotYet => {}
        }
        // Not ready from now on (the snapshot says stopping), and
        // nothing reloads or re-executes any more.
        let delay = self.cfg.server.shutdown_delay;
        // A USR2 hand-over needs no delay: the new corral already
        // serves on the same sockets.
        if !delay.is_zero() && !matches!(self.handover, Handover::ToChild(_)) {
            tracing::info!(
                "SIGTERM: /health/ready answers 503 from now on; serving for shutdown_delay ({delay:?}) before the graceful stop (a second SIGTERM skips the wait)"
            );
            self.term = Term::Delaying;
            self.after(delay, Msg::DelayOver);
            if let Some(front) = &self.front {
                front.leaving();
            }
            // The workers serve on, but a reload under way ends here: its
            // generation is not to take over (nor count as failed).
            return Some(Event::CancelReload);
        }
        self.graceful_stop("SIGTERM")
    }

    fn handle_delay_over(&mut self) -> Option<Event> {
        if self.term != Term::Delaying {
            return None;
        }
        self.graceful_stop("shutdown_delay is over")
    }

    /// INT, QUIT (`why`: the signal's name), or corral's own reason: the
    /// fast stop, at once.
    fn fast_stop(&mut self, why: &str) -> Option<Event> {
        tracing::info!("{why}: fast stop");
        if self.term == Term::Delaying {
            self.term = Term::Draining;
        }
        // The front closes its WebSockets with 1001 before the workers go.
        if let Some(front) = self.front.take() {
            front.stop_now();
        }
        Some(Event::Stop { fast: true })
    }

    /// The graceful stop (TERM, after `shutdown_delay`): the front stops
    /// accepting and finishes the requests in flight, then the workers stop.
    fn graceful_stop(&mut self, why: &str) -> Option<Event> {
        self.term = Term::Draining;
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

    fn handle_front_drained(&mut self, in_time: bool) -> Option<Event> {
        if !in_time {
            // The whole budget is spent: what still runs is cut now, as
            // gunicorn kills its workers at graceful_timeout, not given a
            // second graceful_timeout to finish (which a unit's stop
            // timeout sized as the README says would not wait for).
            tracing::warn!(
                "graceful_timeout ({:?}) ran out with requests still in flight: stopping the workers now",
                self.cfg.workers.graceful_timeout
            );
            return Some(Event::Stop { fast: true });
        }
        Some(Event::Stop { fast: false })
    }

    fn handle_hup(&mut self) -> Option<Event> {
        if let Handover::ToChild(child) = self.handover {
            tracing::info!("SIGHUP: reload");
            return self.pass_reload_on(child, None);
        }
        if self.term != Term::NotYet {
            return None;
        }
        tracing::info!("SIGHUP: reload");
        self.handle_reload(None, None, None)
    }

    /// The reload's waiter, or None (told why) once corral is stopping: no
    /// reload starts then.
    fn unless_stopping(&self, waiter: Option<Waiter>) -> Option<Option<Waiter>> {
        if self.stopping() {
            if let Some(w) = waiter {
                let _ = w.send(Err(self.stop_answer()));
            }
            return None;
        }
        Some(waiter)
    }

    /// What a `reload --wait` hears when a stop ends or refuses its
    /// reload: cancelled, or, when the stop is this corral's hand-over to
    /// the one a USR2 started, to ask that one (the client does, once it
    /// has taken over).
    pub(super) fn stop_answer(&self) -> ReloadError {
        match self.handover {
            Handover::ToChild(child) => ReloadError::HandedOver(format!(
                "a USR2 hand-over to a new corral (pid {child}) is under way: the reload goes to it once it has taken over"
            )),
            _ => ReloadError::Cancelled(CANCELLED.into()),
        }
    }

    /// A reload asked of this corral while the one a USR2 started takes
    /// over: not started here (the stop at the hand-over would cancel it,
    /// and the new corral may have read the code before it changed), but
    /// in the new corral. `reload --wait` is told to ask it (the client
    /// asks again until the new one answers); HUP and `reload` without
    /// `--wait` are passed on as a SIGHUP, once it takes one.
    fn pass_reload_on(&mut self, child: u32, waiter: Option<Waiter>) -> Option<Event> {
        // `reload --wait` asks the new corral itself, whose answer is the
        // one to wait for; `reload` is told it was passed on.
        match waiter {
            Some(w) if w.waits() => {
                let _ = w.send(Err(self.stop_answer()));
                return None;
            }
            Some(w) => {
                w.taken(|| {
                    format!(
                        "passed on to the new corral (pid {child}) of the USR2 hand-over under way"
                    )
                });
            }
            None => {}
        }
        if crate::reexec::catches_hup(child) {
            tracing::info!(
                "reload during a USR2 hand-over: passed on to the new corral (pid {child}) as a SIGHUP; it reloads with the code on disk now (done here instead if it gives up before it takes over)"
            );
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child as i32),
                nix::sys::signal::Signal::SIGHUP,
            );
            self.reload_for_child = ForChild::PassedOn;
        } else {
            tracing::info!(
                "reload during a USR2 hand-over: the new corral (pid {child}) is not ready for it yet; it is passed on once it is (or done here, if it gives up)"
            );
            self.reload_for_child = ForChild::Waiting;
        }
        None
    }

    /// `corral reload [--wait]` and HUP: the config file is read again
    /// first (off the loop: a gunicorn.conf.py runs Python), then
    /// [`Self::handle_reread`] goes on. The waiter hears how the reload
    /// ended.
    fn handle_reload(
        &mut self,
        timeout: Option<Duration>,
        canary: Option<CanaryRun>,
        waiter: Option<Waiter>,
    ) -> Option<Event> {
        if let Handover::ToChild(child) = self.handover {
            if !waiter.as_ref().is_some_and(Waiter::waits)
                && (timeout.is_some() || canary.is_some())
            {
                tracing::warn!(
                    "the reload's --timeout and --canary do not pass on to the new corral of a USR2 hand-over: it reloads with its configured ones"
                );
            }
            return self.pass_reload_on(child, waiter);
        }
        let waiter = self.unless_stopping(waiter)?;
        let Some(read) = self.reread.clone() else {
            if let Some(path) = &self.cfg.source {
                tracing::info!(
                    "{} is not read again (server.drop_privileges: corral no longer runs as root); the new generation starts with the config corral started with, and a restart applies a new one",
                    path.display()
                );
            }
            return self.reload_now(timeout, canary, waiter);
        };
        let tx = self.tx.clone();
        self.rereads.0 += 1;
        let seq = self.rereads.0;
        tokio::task::spawn_blocking(move || {
            let read = read().map(Box::new);
            let _ = tx.send(Msg::Reread(seq, read, timeout, canary, waiter));
        });
        None
    }

    /// The config file read again for a reload: the next generation takes
    /// its `[app]` and `[workers]` (`config::reread`); one that does not
    /// read refuses the reload, and the workers run on as they are.
    fn handle_reread(
        &mut self,
        seq: u64,
        read: Result<Box<crate::config::Config>, String>,
        timeout: Option<Duration>,
        canary: Option<CanaryRun>,
        waiter: Option<Waiter>,
    ) -> Option<Event> {
        if let Handover::ToChild(child) = self.handover {
            return self.pass_reload_on(child, waiter);
        }
        let waiter = self.unless_stopping(waiter)?;
        // Reads run side by side and may end in any order: one that ends
        // after a later one was handled read an older file.
        if seq < self.rereads.1 {
            // The later one deploys code at least as new, and is under way
            // or queued: this one's `reload --wait` hears its outcome.
            tracing::info!(
                "a reload whose read of the config file ended after a later one's is folded into that one"
            );
            let w = waiter?.taken(|| {
                "folded into a later reload, which read the config file after this one".into()
            })?;
            match (&mut self.queued_reload, &self.core.reload) {
                (Some(queued), _) => queued.waiters.push(w),
                (None, Some(r)) => self.reload_waiters.push((r.generation, w)),
                // The later one has ended already (its generation came up
                // while this read still ran): its outcome is this one's.
                (None, None) if self.last_read_reloads && self.core.last_reload.is_some() => {
                    let ended = self.core.last_reload.as_ref().map_or(0, |r| r.generation());
                    self.reload_waiters.push((ended, w));
                }
                (None, None) => {
                    let _ = w.send(Err(ReloadError::NotStarted(
                        "reload not started: a later reload read the config file after this one, and did not start either".into(),
                    )));
                }
            }
            return None;
        }
        self.rereads.1 = seq;
        self.last_read_reloads = read.is_ok() && self.rolling_back.is_none();
        let new = match read {
            Ok(new) => new,
            Err(e) => {
                let why = format!(
                    "reload refused: the config file does not read, so no new generation starts and generation {} serves on as it is; fix the file and reload again:\n{}",
                    self.core.generation,
                    e.trim_end()
                );
                tracing::error!("{why}");
                self.config_error = Some(e.trim_end().to_string());
                self.refused += 1;
                // The certificates are read again at every reload, this
                // one too (a renewed one is taken; a bad one is reported).
                let why = match self.reload_tls() {
                    Err(tls) => format!("{why}\n{tls}"),
                    Ok(()) => why,
                };
                if let Some(w) = waiter {
                    let _ = w.send(Err(why.into()));
                }
                return None;
            }
        };
        self.config_error = None;
        // A reload under way is not replaced (the core says so): what it
        // started with stays; nor is the config of a rollback's reload.
        if self.core.reload.is_none() && self.rolling_back.is_none() {
            self.apply(*new);
        }
        self.reload_now(timeout, canary, waiter)
    }

    /// Takes what a reload applies from the config just read.
    fn apply(&mut self, new: crate::config::Config) {
        let r = crate::config::reread::merge(&self.cfg, new);
        if let Some(path) = &self.cfg.source {
            if !r.kept.is_empty() {
                tracing::warn!(
                    "{}: {} changed and keep{} the value corral started with until a `kill -USR2` (a re-exec that keeps the sockets) or a restart; a reload applies [app] and [workers]",
                    path.display(),
                    r.kept.join(", "),
                    if r.kept.len() == 1 { "s" } else { "" }
                );
            }
            if !r.applied.is_empty() {
                tracing::info!(
                    "{}: the new generation starts with the changed {}",
                    path.display(),
                    r.applied.join(", ")
                );
            }
        }
        if r.applied.is_empty() {
            return;
        }
        // The file's count: the config from before holds the count the
        // file had (a TTIN, TTOU or `corral scale` count stays until the
        // file's changes).
        let count = (r.cfg.workers.count != self.cfg.workers.count).then_some(r.cfg.workers.count);
        let cfg = std::sync::Arc::new(r.cfg);
        let launcher = std::sync::Arc::new(self.launcher.with_config(&cfg));
        let mut settings = super::settings(&cfg, self.core.settings.seed);
        settings.count = self.core.settings.count;
        // Until the new generation is in service, the old one serves on
        // with its own timings: each is the more lenient of the two (a
        // shorter heartbeat_timeout in a file whose reload fails must not
        // kill the workers that serve), and they take the new ones only
        // once the new generation is in service (`Supervisor::commit`).
        let now = &mut self.core.settings;
        now.boot_timeout = now.boot_timeout.max(settings.boot_timeout);
        now.drain_grace = now.drain_grace.max(settings.drain_grace);
        now.heartbeat_timeout = now.heartbeat_timeout.max(settings.heartbeat_timeout);
        let before = (
            std::mem::replace(&mut self.cfg, cfg),
            std::mem::replace(&mut self.launcher, launcher),
        );
        self.trial = Some(super::Trial {
            generation: self.core.next_generation(),
            before,
            settings,
            count,
        });
    }

    /// The generation a reload read new settings for is in service: they
    /// are corral's from now on, a new worker count with them.
    pub(super) fn commit(&mut self, generation: u64) {
        if let Some(trial) = self.trial.take_if(|t| t.generation <= generation)
            && trial.generation == generation
        {
            self.core.settings = trial.settings;
            if let Some(count) = trial.count {
                let _ = self.tx.send(Msg::Scale(count));
            }
        }
    }

    /// The generation a reload read new settings for failed: the config
    /// and the timings go back to the ones the serving generation has.
    pub(super) fn abandon(&mut self, generation: u64) {
        if let Some(trial) = self.trial.take_if(|t| t.generation == generation) {
            (self.cfg, self.launcher) = trial.before;
            let mut settings = super::settings(&self.cfg, self.core.settings.seed);
            settings.count = self.core.settings.count;
            self.core.settings = settings;
            tracing::info!(
                "generation {generation} failed: the next reload reads the config file again; until then corral keeps the config generation {} runs with",
                self.core.generation
            );
        }
    }

    /// Starts the next generation (with the TLS certificates read again).
    fn reload_now(
        &mut self,
        timeout: Option<Duration>,
        canary: Option<CanaryRun>,
        waiter: Option<Waiter>,
    ) -> Option<Event> {
        // A bad certificate fails the reload for its waiter, `reload` or
        // `reload --wait` (the certificate in force stays); the code reload
        // goes on as any other, and the waiter hears what became of it.
        let (tls_failed, waiter) = match self.reload_tls() {
            Err(message) => (Some((message, waiter)), None),
            Ok(()) => (None, waiter),
        };
        let tell = move |what: String| {
            if let Some((message, Some(w))) = tls_failed {
                let _ = w.send(Err(format!("{message}; the code reload {what}").into()));
            }
        };
        match (&self.core.reload, waiter) {
            // It starts once that one has ended, with the config and
            // the code as they are then: the newest wins, as with
            // gunicorn's second HUP. Its waiter hears how it ends.
            (Some(r), waiter) => {
                let behind = r.generation;
                let queued = self.queued_reload.get_or_insert(super::QueuedReload {
                    timeout,
                    canary: None,
                    waiters: Vec::new(),
                    behind,
                });
                queued.timeout = timeout;
                queued.canary = canary;
                queued.waiters.extend(waiter.and_then(|w| {
                    w.taken(|| {
                        format!("queued: generation {behind} is still starting; the next one starts when it has ended")
                    })
                }));
                tracing::info!(
                    "reload queued: generation {behind} is still starting; the next one starts when it has ended, with the config file and the code as they are then"
                );
                tell(format!("is queued: generation {behind} is still starting"));
                return None;
            }
            (None, waiter) if self.rolling_back.is_some() => {
                // The rollback would put the old code back over the
                // new (the built-in one resets the checkout and
                // reloads it): the operator reloads once it is done.
                let why = self.rollback_under_way();
                tracing::warn!("{why}");
                if let Some(w) = waiter {
                    let _ = w.send(Err(ReloadError::NotStarted(why.clone())));
                }
                tell(format!("did not start: {why}"));
                return None;
            }
            (_, waiter) => {
                let (next, serving) = (self.core.next_generation(), self.core.generation);
                self.new_waiter = waiter
                    .and_then(|w| {
                        w.taken(|| {
                            format!(
                                "started: generation {next} is starting beside generation {serving}"
                            )
                        })
                    })
                    .map(|w| (next, w));
                tell(format!(
                    "goes on: generation {next} is starting beside generation {serving}"
                ));
            }
        }
        if self.core.reload.is_none() {
            self.start_generation(self.core.next_generation());
        }
        Some(Event::Reload { timeout, canary })
    }

    /// Why a reload does not start while a rollback runs.
    pub(super) fn rollback_under_way(&self) -> String {
        let (generation, since) = self.rolling_back.unwrap_or((0, Instant::now()));
        let builtin = self.cfg.deploy.rollback != crate::config::Rollback::None;
        let what = match (self.cfg.deploy.rollback_hook.is_some(), builtin) {
            (true, true) => "the rollback hook, then the built-in rollback,",
            (true, false) => "the rollback hook",
            _ => "the built-in rollback",
        };
        format!(
            "reload not started: generation {generation} failed and {what} still runs ({:.1}s so far, at most deploy.hook_timeout); a reload now would have it put the old code back over the new: reload again once it has ended",
            since.elapsed().as_secs_f64()
        )
    }

    /// The built-in rollback put the good code back: reload it (once; see
    /// `Policy::rolled_back`).
    fn handle_rolled_back(&mut self, result: Result<String, String>) -> Option<Event> {
        let what = match result {
            Ok(what) => what,
            Err(why) => {
                tracing::error!("rollback failed: {why}");
                return None;
            }
        };
        if self.core.reload.is_some() || self.core.phase != Phase::Running || self.stopping() {
            return None;
        }
        let generation = self.core.next_generation();
        self.rollbacks += 1;
        tracing::warn!("rollback: {what}; reloading the restored code as generation {generation}");
        self.policy.rolled_back(generation);
        self.start_generation(generation);
        Some(Event::Reload {
            timeout: None,
            canary: None,
        })
    }

    fn handle_ttin(&mut self) -> Option<Event> {
        let count = self.core.active() + 1;
        tracing::info!("SIGTTIN: one more worker ({count})");
        Some(Event::Scale { count })
    }

    fn handle_ttou(&mut self) -> Option<Event> {
        let count = self.core.active().saturating_sub(1);
        if count == 0 {
            tracing::warn!("SIGTTOU: already at one worker; ignoring");
            return None;
        }
        tracing::info!("SIGTTOU: one less worker ({count})");
        Some(Event::Scale { count })
    }

    /// USR1: reopen the log files.
    fn handle_usr1() {
        // Opening files is blocking I/O: not on the supervisor loop.
        tokio::task::spawn_blocking(|| {
            let reopened = crate::logfile::reopen_all();
            if reopened.is_empty() {
                tracing::info!("SIGUSR1: corral logs to stderr; there is no log file to reopen");
            }
            for (path, error) in reopened {
                match error {
                    None => tracing::info!("SIGUSR1: reopened {}", path.display()),
                    Some(e) => tracing::error!("SIGUSR1: kept the old file: {e}"),
                }
            }
        });
    }

    /// USR2: start a new corral on the same sockets; it takes over once its
    /// workers are in service.
    fn handle_usr2(&mut self) {
        if self.handover != Handover::None || self.term != Term::NotYet {
            tracing::warn!("SIGUSR2 ignored: a re-exec or a stop is already under way");
            return;
        }
        if crate::reaper::is_init() {
            // The new corral would be our child, and when PID 1
            // exits the kernel kills every process of the namespace.
            tracing::warn!(
                "SIGUSR2 ignored: corral is PID 1 (a container), which cannot hand over to a new corral; restart the container, or reload (SIGHUP) for new code"
            );
            return;
        }
        let tx = self.tx.clone();
        let exited = move |pid| drop(tx.send(Msg::ReexecExited(pid)));
        match crate::reexec::spawn(&self.sockets, &self.systemd.inherited_env(), exited) {
            Ok(pid) => {
                self.handover = Handover::ToChild(pid);
                tracing::info!(
                    "SIGUSR2: started a new corral (pid {pid}) on the same sockets; this one (pid {}) stops once it is in service",
                    std::process::id()
                );
            }
            Err(e) => tracing::error!("SIGUSR2: cannot start a new corral: {e}"),
        }
    }

    /// A re-executed corral not in service within ready_timeout gives up;
    /// the old one keeps serving.
    fn handle_reexec_deadline(&mut self) -> Option<Event> {
        if !matches!(self.handover, Handover::FromParent(_)) || self.policy.recorded_good() > 0 {
            return None;
        }
        if let Handover::FromParent(parent) = self.handover
            && !self.parent_serves()
        {
            // Exiting would leave nothing on the sockets: this one is the
            // service now, and its workers go on trying to come up.
            tracing::error!(
                "re-exec: not in service within {:?}, but the old corral (pid {parent}) is gone: this one serves on",
                self.cfg.deploy.ready_timeout
            );
            return None;
        }
        tracing::error!(
            "re-exec: not in service within {:?}; exiting, the old corral keeps serving",
            self.cfg.deploy.ready_timeout
        );
        self.exit_code = 1;
        self.front = None;
        Some(Event::Stop { fast: true })
    }

    /// What a revision check found: log a new drift once.
    fn handle_drift(&mut self, drift: Option<String>) {
        if let Some(msg) = &drift
            && self.drift.as_ref() != Some(msg)
        {
            tracing::warn!("revision drift: {msg}");
        }
        self.drift = drift;
    }
}
