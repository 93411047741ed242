//! The metrics the supervisor's [`Snapshot`] answers: workers by state,
//! each slot's worker (memory, CPU, requests, in flight, state; labelled
//! `slot` and `generation`, so there are as many series as slots, not as
//! pids), restarts, reloads and the rollback hook, the generation in
//! service and whether the code on disk drifted from it.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use super::Snapshot;
use crate::metrics::process;
use crate::metrics::{header, scalar};
use crate::worker::channel::Channel;

/// The states a worker's `corral_worker_state` series name.
const STATES: [&str; 5] = ["booting", "probing", "in_service", "unready", "stopping"];

pub fn render(snap: &Snapshot, out: &mut String) {
    header(
        out,
        "corral_build_info",
        "gauge",
        "Always 1: the version of corral that serves.",
    );
    let _ = writeln!(out, "corral_build_info{{version=\"{}\"}} 1", snap.version);
    scalar(
        out,
        "corral_generation",
        "gauge",
        "The generation in service (1 at start, one more each reload).",
        snap.generation,
    );
    render_counts(snap, out);
    render_reloads(snap, out);
    render_slots(snap, out);
}

fn render_counts(snap: &Snapshot, out: &mut String) {
    let stopping = snap.slots.iter().filter_map(|s| s.worker.as_ref()).count()
        - snap.in_service
        - snap.booting
        - snap.unready;
    header(out, "corral_workers", "gauge", "Worker processes by state.");
    for (state, n) in [
        ("booting", snap.booting),
        ("in_service", snap.in_service),
        ("unready", snap.unready),
        ("stopping", stopping),
    ] {
        let _ = writeln!(out, "corral_workers{{state=\"{state}\"}} {n}");
    }
    for (name, kind, help, value) in [
        (
            "corral_workers_configured",
            "gauge",
            "Worker slots configured.",
            snap.workers_configured as u64,
        ),
        (
            "corral_boot_failures_total",
            "counter",
            "Worker boots that failed.",
            snap.boot_failures,
        ),
        (
            "corral_probe_failures_total",
            "counter",
            "Readiness probes that failed.",
            snap.probe_failures,
        ),
        (
            "corral_worker_restarts_total",
            "counter",
            "Worker processes started again after an exit corral did not ask for (a crash, a request's timeout); not the replacements of reloads, recycling (max_requests, max_memory, max_lifetime) or scaling.",
            snap.restarts,
        ),
    ] {
        scalar(out, name, kind, help, value);
    }
    header(
        out,
        "corral_worker_recycles_total",
        "counter",
        "Workers recycled (a replacement started beside them) by the limit they reached: max_requests, max_memory or max_lifetime.",
    );
    for (cause, n) in super::core::RECYCLE_CAUSES.iter().zip(snap.recycles) {
        let _ = writeln!(out, "corral_worker_recycles_total{{cause=\"{cause}\"}} {n}");
    }
}

fn render_reloads(snap: &Snapshot, out: &mut String) {
    header(
        out,
        "corral_reloads_total",
        "counter",
        "Reloads by outcome: ok (the new generation serves), failed (it did not \
         come up, or the config file did not read; the old one kept serving), canary_failed (its canary was judged bad \
         or aborted), rolled_back (the last good code was restored and reloaded), cancelled (a stop \
         began before the new generation served: no failure of its code).",
    );
    for (outcome, n) in [
        ("ok", snap.reloads.ok),
        ("failed", snap.reloads.failed),
        ("canary_failed", snap.reloads.canary_failed),
        ("rolled_back", snap.reloads.rolled_back),
        ("cancelled", snap.reloads.cancelled),
    ] {
        let _ = writeln!(out, "corral_reloads_total{{outcome=\"{outcome}\"}} {n}");
    }
    if let Some(at) = snap.last_reload_at {
        scalar(
            out,
            "corral_last_reload_timestamp_seconds",
            "gauge",
            "Unix time the last reload ended (in success or failure).",
            at,
        );
    }
    header(
        out,
        "corral_rollback_hook_runs_total",
        "counter",
        "Runs of [deploy] rollback_hook by exit code (timeout: killed at hook_timeout; \
         none: it could not start or a signal ended it).",
    );
    for (exit, n) in &snap.hook_runs {
        let _ = writeln!(
            out,
            "corral_rollback_hook_runs_total{{exit=\"{exit}\"}} {n}"
        );
    }
    scalar(
        out,
        "corral_revision_drift",
        "gauge",
        "1 while the code on disk differs from the serving generation's revision.",
        u8::from(snap.drift.is_some()),
    );
}

/// One series per slot and its worker's generation.
fn render_slots(snap: &Snapshot, out: &mut String) {
    header(
        out,
        "corral_slot_restarts_total",
        "counter",
        "Worker processes started again in each slot after an exit corral did not ask for (as corral_worker_restarts_total).",
    );
    for s in &snap.slots {
        let _ = writeln!(
            out,
            "corral_slot_restarts_total{{slot=\"{}\"}} {}",
            s.slot, s.restarts
        );
    }
    let workers: Vec<_> = snap
        .slots
        .iter()
        .filter_map(|s| s.worker.as_ref().map(|w| (s.slot, w)))
        .collect();
    let usage: Vec<_> = workers
        .iter()
        .map(|(_, w)| process::usage(&w.pid.to_string()))
        .collect();
    let labels =
        |slot: usize, generation: u64| format!("slot=\"{slot}\",generation=\"{generation}\"");
    header(
        out,
        "corral_worker_state",
        "gauge",
        "1 for the state each slot's worker is in, 0 for the others.",
    );
    for (slot, w) in &workers {
        for state in STATES {
            let _ = writeln!(
                out,
                "corral_worker_state{{{},state=\"{state}\"}} {}",
                labels(*slot, w.generation),
                u8::from(w.state.name() == state)
            );
        }
    }
    header(
        out,
        "corral_worker_requests_total",
        "counter",
        "Requests each slot's worker has answered.",
    );
    // Counted live on the channels (the snapshot's copies are as old as
    // the supervisor's last event).
    // By pid: a slot may have other workers' channels too (a reload's new
    // generation, see `SlotView::also`).
    let live = |pid: u32, pick: fn(&Channel) -> u64, stale: u64| {
        snap.channels
            .iter()
            .find(|(_, ch)| ch.pid == pid)
            .map_or(stale, |(_, ch)| pick(ch))
    };
    for (slot, w) in &workers {
        let l = labels(*slot, w.generation);
        let n = live(w.pid, |ch| ch.served.load(Ordering::Relaxed), w.requests);
        let _ = writeln!(out, "corral_worker_requests_total{{{l}}} {n}");
    }
    header(
        out,
        "corral_worker_in_flight",
        "gauge",
        "Requests each slot's worker holds now.",
    );
    for (slot, w) in &workers {
        let l = labels(*slot, w.generation);
        let n = live(
            w.pid,
            |ch| ch.in_flight.load(Ordering::Relaxed) as u64,
            w.in_flight as u64,
        );
        let _ = writeln!(out, "corral_worker_in_flight{{{l}}} {n}");
    }
    header(
        out,
        "corral_worker_resident_memory_bytes",
        "gauge",
        "Resident memory of each slot's worker.",
    );
    for ((slot, w), u) in workers.iter().zip(&usage) {
        if let Some(u) = u {
            let l = labels(*slot, w.generation);
            let _ = writeln!(
                out,
                "corral_worker_resident_memory_bytes{{{l}}} {}",
                u.rss_bytes
            );
        }
    }
    header(
        out,
        "corral_worker_cpu_seconds_total",
        "counter",
        "User and system CPU time of each slot's worker (from 0 for each new process).",
    );
    for ((slot, w), u) in workers.iter().zip(&usage) {
        if let Some(u) = u {
            let l = labels(*slot, w.generation);
            let _ = writeln!(
                out,
                "corral_worker_cpu_seconds_total{{{l}}} {}",
                u.cpu_seconds
            );
        }
    }
}
