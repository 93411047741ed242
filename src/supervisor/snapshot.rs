//! A read-only picture of the worker table, published by the supervisor
//! after every event for the status server (`/status`, `/health/ready`,
//! `/metrics`), which never locks the table itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::core::{Core, KillCause, State};
use crate::worker::channel::Channel;

#[derive(Clone, Default, Serialize)]
pub struct Snapshot {
    pub pid: u32,
    pub version: &'static str,
    pub uptime_seconds: f64,
    /// True once a stop began.
    pub stopping: bool,
    pub workers_configured: usize,
    pub in_service: usize,
    pub booting: usize,
    /// Booted workers failing their readiness checks.
    pub unready: usize,
    /// True while fewer than min_in_service workers are in service and
    /// requests go to every live worker (the panic threshold).
    pub panic: bool,
    pub boot_failures: u64,
    pub probe_failures: u64,
    /// The generation that serves, and the one starting during a reload.
    pub generation: u64,
    pub reloading: Option<u64>,
    /// "done" or "failed: why", for the last reload.
    pub last_reload: Option<String>,
    /// The serving generation's revision, and the last known good one.
    pub revision: Option<String>,
    pub last_good_revision: Option<String>,
    /// The last run of the rollback hook.
    pub rollback_hook: Option<crate::deploy::HookRun>,
    /// Set while the code on disk differs from the serving generation's.
    pub drift: Option<String>,
    /// Why the config file did not read at the last reload, which was
    /// refused (the workers run on as before); cleared by a reload that
    /// read it.
    pub config_error: Option<String>,
    /// The app the serving generation runs (a reload may change it).
    pub app: Option<String>,
    pub restarts: u64,
    /// Recycles begun, by cause (`core::RECYCLE_CAUSES`).
    #[serde(skip)]
    pub recycles: [u64; 3],
    /// Reloads by outcome and the Unix time the last one ended, for
    /// /metrics.
    #[serde(skip)]
    pub reloads: ReloadCounts,
    #[serde(skip)]
    pub last_reload_at: Option<f64>,
    /// Runs of the rollback hook by how they ended ("0", "1", ...,
    /// "timeout", "none": it could not start or a signal ended it).
    #[serde(skip)]
    pub hook_runs: std::collections::BTreeMap<String, u64>,
    pub slots: Vec<SlotView>,
    #[serde(skip)]
    pub channels: Vec<(usize, Arc<Channel>)>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ReloadCounts {
    pub ok: u64,
    pub failed: u64,
    /// Canaries judged bad (or aborted): the old generation kept serving.
    pub canary_failed: u64,
    /// Built-in rollbacks: the last good code restored and reloaded.
    pub rolled_back: u64,
    /// Reloads a stop cancelled (no failure of the new code).
    pub cancelled: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SlotView {
    pub slot: usize,
    /// The current process, if one runs.
    pub worker: Option<WorkerView>,
    pub restarts: u32,
    /// Failures in a row (drives the back-off).
    pub failures: u32,
    /// Seconds until the next start when the slot is backing off.
    pub next_start_in: Option<f64>,
    pub last_exit: Option<String>,
    pub last_boot_error: Option<ErrorView>,
    /// The slot's other workers: a reload's or a canary's new generation,
    /// a replacement starting beside a worker being recycled, one still
    /// draining.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<WorkerView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    pub pid: u32,
    pub generation: u64,
    pub state: State,
    /// Unix time (seconds) of the last state change.
    pub since: f64,
    pub boot_ms: Option<f64>,
    pub import_ms: Option<f64>,
    pub requests: u64,
    pub in_flight: usize,
    pub rss_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorView {
    /// Unix time (seconds).
    pub at: f64,
    pub text: String,
}

fn unix(now: Instant, then: Instant) -> f64 {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    wall - now.saturating_duration_since(then).as_secs_f64()
}

pub fn take(
    core: &Core,
    channels: &HashMap<u64, Arc<Channel>>,
    started: Instant,
    stopping: bool,
) -> Snapshot {
    let now = Instant::now();
    let mut snap = Snapshot {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: now.duration_since(started).as_secs_f64(),
        stopping,
        workers_configured: core.slots.len(),
        ..Snapshot::default()
    };
    snap.workers_configured = core.active();
    // Each slot's workers, oldest first, in one pass over them.
    let mut by_slot: Vec<Vec<&super::core::Worker>> = vec![Vec::new(); core.slots.len()];
    for w in core.workers.values() {
        if let Some(of) = by_slot.get_mut(w.slot) {
            of.push(w);
        }
    }
    for (i, slot) in core.slots.iter().enumerate() {
        if slot.retired && slot.worker.is_none() {
            continue;
        }
        let mut view = |w: &super::core::Worker| {
            let ch = channels.get(&w.serial);
            if let Some(ch) = ch {
                snap.channels.push((i, ch.clone()));
            }
            WorkerView {
                pid: w.pid,
                generation: w.generation,
                state: w.state,
                since: unix(now, w.since),
                boot_ms: w.boot_time.map(|d| d.as_secs_f64() * 1000.0),
                import_ms: w.import_ms,
                requests: ch.map_or(0, |c| c.served.load(Ordering::Relaxed)),
                in_flight: ch.map_or(0, |c| c.in_flight.load(Ordering::Relaxed)),
                rss_bytes: None,
            }
        };
        let current = slot.worker.and_then(|s| core.workers.get(&s));
        let worker = current.map(&mut view);
        let mut others = std::mem::take(&mut by_slot[i]);
        others.retain(|w| Some(w.serial) != slot.worker);
        others.sort_by_key(|w| w.serial);
        let also = others.into_iter().map(&mut view).collect();
        // The figures count each slot's own worker only.
        match current.map(|w| w.state) {
            Some(State::InService) => snap.in_service += 1,
            Some(
                State::Booting
                | State::Probing
                | State::Killing {
                    cause: KillCause::BootTimeout,
                },
            ) => snap.booting += 1,
            Some(State::Unready) => snap.unready += 1,
            _ => {}
        }
        snap.restarts += u64::from(slot.restarts);
        snap.slots.push(SlotView {
            slot: i,
            worker,
            restarts: slot.restarts,
            failures: slot.failures,
            next_start_in: slot
                .start_at
                .map(|t| t.saturating_duration_since(now).as_secs_f64()),
            last_exit: slot.last_exit.clone(),
            last_boot_error: slot.last_error.as_ref().map(|e| ErrorView {
                at: unix(now, e.at),
                text: e.text.clone(),
            }),
            also,
        });
    }
    snap.boot_failures = core.boot_failures;
    snap.recycles = core.recycles;
    snap.generation = core.generation;
    snap.reloading = core.reload.as_ref().map(|r| r.generation);
    snap.last_reload = core.last_reload.as_ref().map(|r| match r {
        super::core::ReloadOutcome::Done { generation, .. } => {
            format!("generation {generation} in service")
        }
        super::core::ReloadOutcome::Failed {
            generation, reason, ..
        } => format!("generation {generation} failed: {reason}"),
        super::core::ReloadOutcome::Cancelled {
            generation, reason, ..
        } => format!("generation {generation} cancelled: {reason}"),
    });
    snap.reloads.ok = core.reloads_done;
    snap.reloads.failed = core.reloads_failed;
    snap.reloads.canary_failed = core.canaries_failed;
    snap.reloads.cancelled = core.reloads_cancelled;
    snap.last_reload_at = core.last_reload.as_ref().map(|r| match r {
        super::core::ReloadOutcome::Done { at, .. }
        | super::core::ReloadOutcome::Failed { at, .. }
        | super::core::ReloadOutcome::Cancelled { at, .. } => unix(now, *at),
    });
    snap.probe_failures = core.probe_failures;
    snap.panic = core.panic;
    snap
}

/// Resident memory of a process, from /proc.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}
