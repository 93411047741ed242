//! Life-cycle rules with a fake clock: every test drives [`Core`] with
//! events at chosen instants and checks the actions it asks for. This file
//! holds the harness; the rules are grouped by what they are about.

use super::types::CanarySettings;
use super::*;

mod boot;
mod crashes;
mod kills;
mod recycling;
mod reload;

/// Shorthands for the events every test sends, so a test reads as its
/// story: `core.spawned(t, serial, pid)`, `core.booted(...)`, ...
trait Drive {
    fn spawned(&mut self, t: Instant, serial: u64, pid: u32) -> Vec<Action>;
    fn booted(&mut self, t: Instant, serial: u64, import_ms: f64) -> Vec<Action>;
    fn boot_failed(&mut self, t: Instant, serial: u64, error: &str) -> Vec<Action>;
    fn exited(&mut self, t: Instant, serial: u64, exit: Exit) -> Vec<Action>;
    fn tick_at(&mut self, t: Instant) -> Vec<Action>;
}

impl Drive for Core {
    fn spawned(&mut self, t: Instant, serial: u64, pid: u32) -> Vec<Action> {
        self.on_event(t, Event::Spawned { serial, pid })
    }
    fn booted(&mut self, t: Instant, serial: u64, import_ms: f64) -> Vec<Action> {
        self.on_event(t, Event::Booted { serial, import_ms })
    }
    fn boot_failed(&mut self, t: Instant, serial: u64, error: &str) -> Vec<Action> {
        let error = error.to_string();
        self.on_event(t, Event::BootFailed { serial, error })
    }
    fn exited(&mut self, t: Instant, serial: u64, exit: Exit) -> Vec<Action> {
        self.on_event(t, Event::Exited { serial, exit })
    }
    fn tick_at(&mut self, t: Instant) -> Vec<Action> {
        self.on_event(t, Event::Tick)
    }
}

/// One slot's worker spawned (pid 7) and not booted yet, at `t0`.
fn spawned_one(settings: Settings, t0: Instant) -> (Core, u64) {
    let mut core = Core::new(settings);
    let serial = spawns(&core.start())[0].1;
    core.spawned(t0, serial, 7);
    (core, serial)
}

fn settings(count: usize) -> Settings {
    Settings {
        count,
        boot_timeout: Duration::from_secs(30),
        backoff: Duration::from_millis(100),
        backoff_max: Duration::from_secs(10),
        young: Duration::from_secs(1),
        dump_grace: Duration::from_millis(200),
        term_grace: Duration::from_secs(5),
        quit_grace: Duration::from_secs(1),
        drain_grace: Duration::from_secs(35),
        probe: None,
        min_in_service: 1,
        heartbeat_timeout: Some(Duration::from_secs(30)),
        max_requests: 0,
        max_requests_jitter: 0,
        max_memory: None,
        max_lifetime: None,
        seed: 42,
        reload_timeout: Duration::from_secs(30),
        rolling: None,
        canary: None,
    }
}

fn probed(count: usize, min_in_service: usize) -> Settings {
    Settings {
        probe: Some(ProbeSettings {
            interval: Duration::from_secs(10),
            retry: Duration::from_secs(1),
            unhealthy_after: 3,
        }),
        min_in_service,
        ..settings(count)
    }
}

fn probes(actions: &[Action]) -> Vec<u64> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Probe { serial } => Some(*serial),
            _ => None,
        })
        .collect()
}

/// Starts and boots `count` workers with probing on; none has passed yet.
fn booted_probing(settings: Settings, t0: Instant) -> (Core, Vec<u64>) {
    let mut core = Core::new(settings);
    let mut serials = Vec::new();
    for (slot, serial) in spawns(&core.start()) {
        core.spawned(t0, serial, 100 + slot as u32);
        let a = core.booted(t0, serial, 1.0);
        assert_eq!(probes(&a), vec![serial], "probed as soon as it booted");
        serials.push(serial);
    }
    (core, serials)
}

fn spawns(actions: &[Action]) -> Vec<(usize, u64)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Spawn { slot, serial, .. } => Some((*slot, *serial)),
            _ => None,
        })
        .collect()
}

fn published(actions: &[Action]) -> Option<Vec<u64>> {
    actions.iter().rev().find_map(|a| match a {
        Action::Publish(v) => Some(v.clone()),
        _ => None,
    })
}

fn signals(actions: &[Action]) -> Vec<(u32, Sig)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Signal { pid, sig, .. } => Some((*pid, *sig)),
            _ => None,
        })
        .collect()
}

/// Starts `count` workers and boots them all; returns the core and serials.
fn running(count: usize, t0: Instant) -> (Core, Vec<u64>) {
    let mut core = Core::new(settings(count));
    let started = spawns(&core.start());
    let mut serials = Vec::new();
    for (slot, serial) in started {
        core.spawned(t0, serial, 100 + slot as u32);
        core.booted(t0, serial, 5.0);
        serials.push(serial);
    }
    (core, serials)
}

fn recycling(count: usize, max_requests: u64, jitter: u64) -> Settings {
    Settings {
        max_requests,
        max_requests_jitter: jitter,
        ..settings(count)
    }
}

/// Boots the successors that a reload asked for; returns their serials.
fn boot_all(core: &mut Core, actions: &[Action], t: Instant) -> Vec<u64> {
    let mut out = Vec::new();
    for (slot, serial) in spawns(actions) {
        core.spawned(t, serial, 300 + slot as u32);
        out.push(serial);
    }
    out
}
