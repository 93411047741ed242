//! Generations around the core: the folder and revision each one runs
//! (resolved once, when it starts), drift between that and the disk, the
//! deploy [`Policy`](super::policy::Policy)'s decisions carried out (the
//! state dir, the accept gate, the re-exec hand-over, the rollback hook and
//! the built-in rollback), systemd's view of it all, and the answers to
//! `reload --wait`.

use std::time::Instant;

use super::core::{Event, ReloadOutcome};
use super::policy::{Decision, View};
use super::{EXIT_BOOT_FAILURE, Handover, Msg, ReloadDone, ReloadError, Signal, Supervisor};

/// Generations whose folder and revision are kept after their workers
/// are gone, counted back from the newest.
const KEPT_GENERATIONS: u64 = 8;

impl Supervisor {
    /// A worker of a running generation is (re)started: if the code on disk
    /// is no longer the generation's, say so (the worker may run code the
    /// generation never checked; a reload is how to deploy it). The
    /// revision command (git) runs off this loop; the answer comes back as
    /// [`Msg::Drift`].
    pub(super) fn check_drift(
        &self,
        generation: u64,
        info: &crate::worker::process::GenerationInfo,
    ) {
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
    pub(super) fn start_generation(&mut self, generation: u64) {
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
        // The setups of generations that neither serve nor have a worker
        // any more go; so do their folders and revisions, but for the
        // last few (a failed one's revision is still asked for by its
        // rollback and `reload --wait`): one entry per reload, for the
        // life of the process, added up over thousands of reloads.
        let live: std::collections::HashSet<u64> =
            self.core.workers.values().map(|w| w.generation).collect();
        let serving = self.core.generation;
        self.setups.retain(|g, _| *g == serving || live.contains(g));
        self.gens
            .retain(|g, _| *g == serving || live.contains(g) || *g + KEPT_GENERATIONS > generation);
        let setup = super::GenSetup::of(&self.cfg, &self.launcher);
        self.setups.insert(generation, setup);
    }

    /// After each round of events: asks the deploy policy what follows
    /// from the worker table and does it.
    pub(super) fn deploy_bookkeeping(&mut self) {
        let mut view = View::of(&self.core, Instant::now());
        view.parent_serves = self.parent_serves();
        view.samples = self
            .split
            .as_ref()
            .map(|s| (s.old.sample(), s.new.sample()));
        for decision in self.policy.step(&view) {
            match decision {
                Decision::Canary {
                    generation,
                    verdict,
                    old,
                    new,
                } => self.canary_judged(generation, verdict, &old, &new),
                Decision::Good(generation) => self.record_good(generation),
                Decision::ExitBootFailure => {
                    tracing::error!(
                        "no worker could boot and exit_on_boot_failure is set: exiting with code {EXIT_BOOT_FAILURE}"
                    );
                    self.exit_code = EXIT_BOOT_FAILURE;
                    let _ = self.tx.send(Msg::FastStop("no worker could boot"));
                }
                Decision::ReloadFailed { generation, reason } => {
                    self.abandon(generation);
                    let revision = self.gens.get(&generation).and_then(|g| g.revision.clone());
                    self.hooks
                        .reload_failed(generation, revision.as_deref(), &reason);
                }
                Decision::NoSecondRollback => {
                    tracing::error!("the restored code failed too; not rolling back again");
                }
                Decision::NoRollbackBesideParent => {
                    if let Handover::FromParent(parent) = self.handover {
                        tracing::error!(
                            "re-exec: no worker of this new corral could boot; the old corral (pid {parent}) serves on, so no rollback runs (the code it serves is not this failure's to roll back)"
                        );
                    }
                }
                Decision::Rollback {
                    generation,
                    reason,
                    detail,
                    builtin,
                } => self.roll_back(generation, reason, detail, builtin),
            }
        }
    }

    /// The canary of `generation` was judged: the core promotes or stops
    /// it; a failure's figures go to the rollback hook, the log and
    /// `reload --wait`; then the policy looks again (a failed reload sets
    /// off the rollback).
    pub(super) fn canary_judged(
        &mut self,
        generation: u64,
        verdict: Result<(), String>,
        old: &crate::canary::Sample,
        new: &crate::canary::Sample,
    ) {
        let old_generation = self.core.generation;
        let table = crate::canary::table(old_generation, generation, old, new);
        let verdict = verdict.map_err(|why| {
            let mut env = crate::canary::env(old, new);
            env.push(("CORRAL_REASON".into(), "canary".into()));
            env.push(("CORRAL_CANARY_VERDICT".into(), why.clone()));
            self.canary_env = Some((generation, env));
            (format!("canary failed: {why}"), Some(table.clone()))
        });
        tracing::info!(
            "canary of generation {generation}: {}\n{}",
            if verdict.is_ok() { "passed" } else { "failed" },
            table.trim_end()
        );
        let actions = self.core.on_event(
            Instant::now(),
            Event::Canary {
                generation,
                verdict,
            },
        );
        if self.perform(actions) {
            let _ = self.tx.send(Msg::Signal(Signal::Quit));
        }
        self.answer_waiters();
        self.deploy_bookkeeping();
    }

    /// `generation` is all in service: it is the last known good one. A
    /// re-executed corral now accepts and asks the old one to stop.
    fn record_good(&mut self, generation: u64) {
        self.drift = None;
        self.commit(generation);
        if let Some(gate) = &self.accept_gate {
            let _ = gate.send(true);
        }
        if let Handover::FromParent(parent) = self.handover {
            self.handover = Handover::None;
            // The pid file and the control socket become this corral's
            // (renames, off this loop), then the old one is asked to stop.
            let takeover = self.takeover.take();
            tokio::task::spawn_blocking(move || {
                if let Some(takeover) = takeover {
                    takeover();
                }
                // The old corral started us: while it lives it is our
                // parent, and only then is the pid surely still its own.
                if std::os::unix::process::parent_id() == parent {
                    tracing::info!(
                        "re-exec: in service; asking the old corral (pid {parent}) to stop"
                    );
                    super::signal(parent, libc::SIGTERM);
                } else {
                    tracing::info!("re-exec: in service; the old corral (pid {parent}) is gone");
                }
            });
        }
        let revision = self.gens.get(&generation).and_then(|g| g.revision.clone());
        self.hooks.ready(generation, revision.as_deref());
        let workers = self.core.active();
        if let Some(arbiter) = &mut self.arbiter {
            arbiter.ready(workers);
        }
        if let Some(info) = self.gens.get(&generation) {
            if let Some(rev) = &info.revision {
                self.last_good = Some(rev.clone());
                tracing::info!("revision {rev} is the last known good one");
            }
            self.state.good(info.revision.clone(), info.chdir.clone());
        }
    }

    /// Runs the rollback hook (when set) and then, when `builtin`, the
    /// built-in rollback, off this loop; the results come back as
    /// [`Msg::HookDone`] and [`Msg::RolledBack`], and its end as
    /// [`Msg::RollbackEnded`]: until then no reload starts.
    fn roll_back(
        &mut self,
        generation: u64,
        reason: String,
        detail: Option<String>,
        builtin: bool,
    ) {
        self.rolling_back = Some((generation, Instant::now()));
        let env = match &self.canary_env {
            Some((g, env)) if *g == generation => env.clone(),
            _ => Vec::new(),
        };
        let failure = crate::deploy::Failure {
            revision: self.gens.get(&generation).and_then(|g| g.revision.clone()),
            reason,
            detail,
            env,
        };
        let cfg = self.cfg.clone();
        let tx = self.tx.clone();
        let state = self.state.clone();
        tokio::spawn(async move {
            // Said however the task ends, a panic in it too: reloads wait
            // for it.
            let _ended = RollbackEnded(tx.clone());
            // The hook's CORRAL_GOOD_REVISION and the built-in rollback read
            // the last good generation from the state folder, and it may
            // have been recorded a moment ago, its files not yet written.
            let flushed = move || state.flush(std::time::Duration::from_secs(10));
            let _ = tokio::task::spawn_blocking(flushed).await;
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

    /// Tells systemd what changed (see [`crate::systemd::Notifier`]).
    pub(super) fn notify_systemd(&mut self) {
        let active = self.core.active();
        let reloading = self.core.reload.as_ref().map(|r| r.generation);
        let in_service = |generation| {
            self.core
                .in_service()
                .filter(|w| w.generation == generation)
                .count()
        };
        let service = crate::systemd::Service {
            active,
            in_service: in_service(self.core.generation),
            required: self.cfg.health.min_ready.required(active).max(1),
            generation: self.core.generation,
            revision: self
                .gens
                .get(&self.core.generation)
                .and_then(|g| g.revision.clone()),
            reloading,
            reloading_in_service: reloading.map_or(0, in_service),
            stopping: self.stopping(),
            handing_over_to: match self.handover {
                // Handing over to the re-executed corral: it is the
                // service now, not a stop.
                Handover::ToChild(pid) if self.policy.recorded_good() > 0 => Some(pid),
                _ => None,
            },
            monotonic_usec: crate::systemd::monotonic_usec(),
            canary: self.split.as_ref().map(|s| {
                let (old, new) = (s.old.sample(), s.new.sample());
                format!(
                    "canary {}%: {:.1}% errors vs {:.1}%",
                    s.share_percent(),
                    100.0 * new.error_rate(),
                    100.0 * old.error_rate()
                )
            }),
            failed: match &self.core.last_reload {
                Some(crate::supervisor::core::ReloadOutcome::Failed {
                    generation, reason, ..
                }) => Some((*generation, reason.clone())),
                _ => None,
            },
        };
        if let Some(message) = self.notifier.update(&service) {
            self.systemd.send(&message);
        }
    }

    /// Starts the reload asked for while another was under way, once
    /// that one has ended (see [`super::QueuedReload`]), unless corral is
    /// stopping or the failed one's rollback runs (which would put the
    /// old code back over the new).
    pub(super) fn start_queued_reload(&mut self) {
        if self.core.reload.is_some() && !self.stopping() {
            return;
        }
        let Some(queued) = self.queued_reload.take() else {
            return;
        };
        let refused = if self.stopping() {
            Some(self.stop_answer())
        } else if self.rolling_back.is_some() {
            let why = self.rollback_under_way();
            tracing::warn!("the queued {why}");
            Some(ReloadError::NotStarted(why))
        } else {
            None
        };
        if let Some(refused) = refused {
            for w in queued.waiters {
                let _ = w.send(Err(refused.clone()));
            }
            return;
        }
        tracing::info!(
            "starting the reload queued while generation {} was starting",
            queued.behind
        );
        // One waiter for the supervisor; every caller hears its answer.
        let waiter = (!queued.waiters.is_empty()).then(|| {
            let (tx, rx) = tokio::sync::oneshot::channel::<super::ReloadAnswer>();
            let waiters = queued.waiters;
            tokio::spawn(async move {
                let answer = rx
                    .await
                    .unwrap_or_else(|_| Err("corral stopped during the reload".into()));
                for w in waiters {
                    let _ = w.send(answer.clone());
                }
            });
            super::Waiter::Outcome(tx)
        });
        let _ = self
            .tx
            .send(Msg::Reload(queued.timeout, queued.canary, waiter));
    }

    /// Tells `reload --wait` callers how their reload ended.
    pub(super) fn answer_waiters(&mut self) {
        if let Some((generation, w)) = self.new_waiter.take() {
            match (&self.core.reload, &self.core.last_reload) {
                (Some(r), _) => self.reload_waiters.push((r.generation, w)),
                // It ended as it began (a worker that could not even be
                // started): answered below from its outcome.
                (None, Some(last)) if last.generation() == generation => {
                    self.reload_waiters.push((generation, w));
                }
                (None, _) => {
                    let _ = w.send(Err("the reload did not start".into()));
                }
            }
        }
        let pending = self.core.reload.as_ref().map(|r| r.generation);
        let stopping = self.stopping();
        for (generation, w) in std::mem::take(&mut self.reload_waiters) {
            if pending == Some(generation) {
                self.reload_waiters.push((generation, w));
                continue;
            }
            let answer = match &self.core.last_reload {
                Some(ReloadOutcome::Done { generation: g, .. }) if *g == generation => {
                    Ok(ReloadDone {
                        generation,
                        revision: self.gens.get(&generation).and_then(|g| g.revision.clone()),
                    })
                }
                Some(ReloadOutcome::Failed {
                    generation: g,
                    reason,
                    detail,
                    ..
                }) if *g == generation => Err(ReloadError::Failed(match detail {
                    Some(d) => format!("{reason}\n\n{}", d.trim_end()),
                    None => reason.clone(),
                })),
                Some(ReloadOutcome::Cancelled { generation: g, .. }) if *g == generation => {
                    Err(self.stop_answer())
                }
                _ if stopping => Err(self.stop_answer()),
                _ => Err("the reload was superseded".into()),
            };
            let _ = w.send(answer);
        }
    }
}

/// Sends [`Msg::RollbackEnded`] when the rollback's task ends, whichever
/// way it ends.
struct RollbackEnded(tokio::sync::mpsc::UnboundedSender<Msg>);

impl Drop for RollbackEnded {
    fn drop(&mut self) {
        let _ = self.0.send(Msg::RollbackEnded);
    }
}
