//! Life-cycle rules with a fake clock: every test drives [`Core`] with
//! events at chosen instants and checks the actions it asks for.

use super::types::CanarySettings;
use super::*;

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

#[test]
fn a_worker_takes_requests_only_after_it_booted() {
    let t0 = Instant::now();
    let mut core = Core::new(settings(2));
    let s = spawns(&core.start());
    assert_eq!(s.len(), 2);
    let a = core.spawned(t0, s[0].1, 10);
    assert_eq!(published(&a), None, "a booting worker is not published");
    let a = core.booted(t0, s[0].1, 3.0);
    assert_eq!(published(&a), Some(vec![s[0].1]));
    core.spawned(t0, s[1].1, 11);
    let a = core.booted(t0, s[1].1, 3.0);
    assert_eq!(published(&a), Some(vec![s[0].1, s[1].1]));
    assert!(a.contains(&Action::Log(Level::Info, "all 2 workers in service".into())));
}

#[test]
fn a_boot_failure_never_enters_service_and_backs_off_exponentially_up_to_the_cap() {
    let t0 = Instant::now();
    let mut core = Core::new(settings(1));
    let mut now = t0;
    let mut serial = spawns(&core.start())[0].1;
    let mut delays = Vec::new();
    for _ in 0..10 {
        core.spawned(now, serial, 7);
        let a = core.boot_failed(now, serial, "ImportError: x");
        assert_eq!(published(&a), None);
        let a = core.exited(now, serial, Exit::Code(1));
        assert!(spawns(&a).is_empty(), "no hot restart");
        let due = core.next_deadline().expect("a restart is scheduled");
        delays.push(due - now);
        // Nothing happens before the deadline...
        assert!(spawns(&core.tick_at(due - Duration::from_millis(1))).is_empty());
        // ...and the slot restarts at it.
        now = due;
        let s = spawns(&core.tick_at(now));
        assert_eq!(s.len(), 1);
        serial = s[0].1;
    }
    let ms: Vec<u128> = delays.iter().map(|d| d.as_millis()).collect();
    assert_eq!(
        ms,
        [100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000, 10000]
    );
    let err = core.slots[0].last_error.as_ref().unwrap();
    assert_eq!(err.text, "ImportError: x");
    assert_eq!(core.slots[0].restarts, 10);
}

#[test]
fn a_crash_at_import_without_a_report_is_recorded_as_a_boot_failure() {
    let t0 = Instant::now();
    let (mut core, serial) = spawned_one(settings(1), t0);
    core.exited(t0, serial, Exit::Signal(libc::SIGSEGV));
    let err = core.slots[0].last_error.as_ref().unwrap();
    assert!(err.text.contains("SIGSEGV"), "{}", err.text);
    assert_eq!(core.slots[0].failures, 1);
}

#[test]
fn a_boot_that_hangs_past_boot_timeout_is_dumped_then_killed() {
    let t0 = Instant::now();
    let (mut core, serial) = spawned_one(settings(1), t0);
    assert_eq!(core.next_deadline(), Some(t0 + Duration::from_secs(30)));
    assert!(signals(&core.tick_at(t0 + Duration::from_secs(29))).is_empty());
    let t1 = t0 + Duration::from_secs(30);
    let a = core.tick_at(t1);
    assert_eq!(signals(&a), vec![(7, Sig::DumpStacks)]);
    assert!(
        core.slots[0]
            .last_error
            .as_ref()
            .unwrap()
            .text
            .contains("timed out after 30s")
    );
    let a = core.tick_at(t1 + Duration::from_millis(200));
    assert_eq!(signals(&a), vec![(7, Sig::Kill)]);
    let a = core.exited(t1, serial, Exit::Signal(libc::SIGKILL));
    assert!(spawns(&a).is_empty());
    assert_eq!(core.slots[0].failures, 1);
    assert!(
        core.slots[0]
            .last_error
            .as_ref()
            .unwrap()
            .text
            .contains("timed out")
    );
}

#[test]
fn one_failing_slot_leaves_the_others_in_service() {
    let t0 = Instant::now();
    let (mut core, serials) = running(3, t0);
    let a = core.exited(t0, serials[1], Exit::Signal(9));
    assert_eq!(published(&a), Some(vec![serials[0], serials[2]]));
}

#[test]
fn a_worker_that_served_a_while_restarts_at_once_and_resets_its_failures() {
    let t0 = Instant::now();
    let (mut core, serials) = running(1, t0);
    core.slots[0].failures = 3;
    let later = t0 + Duration::from_secs(60);
    let a = core.exited(later, serials[0], Exit::Code(0));
    assert_eq!(spawns(&a).len(), 1, "restarted at once");
    assert_eq!(core.slots[0].failures, 0);
}

#[test]
fn a_worker_dying_young_counts_as_a_failure() {
    let t0 = Instant::now();
    let (mut core, serials) = running(1, t0);
    let a = core.exited(t0 + Duration::from_millis(300), serials[0], Exit::Code(1));
    assert!(spawns(&a).is_empty());
    assert_eq!(core.slots[0].failures, 1);
}

#[test]
fn replace_takes_the_worker_out_dumps_its_stacks_then_kills_it() {
    let t0 = Instant::now();
    let (mut core, serials) = running(2, t0);
    let a = core.on_event(
        t0,
        Event::Replace {
            serial: serials[0],
            reason: "timeout".into(),
        },
    );
    assert_eq!(published(&a), Some(vec![serials[1]]));
    assert_eq!(signals(&a), vec![(100, Sig::DumpStacks)]);
    let a = core.tick_at(t0 + Duration::from_millis(200));
    assert_eq!(signals(&a), vec![(100, Sig::Kill)]);
    let a = core.exited(t0 + Duration::from_secs(5), serials[0], Exit::Signal(9));
    assert_eq!(spawns(&a).len(), 1, "replaced");
}

#[test]
fn graceful_stop_terms_every_worker_then_kills_stragglers_and_exits_when_all_are_gone() {
    let t0 = Instant::now();
    let (mut core, serials) = running(2, t0);
    let a = core.on_event(t0, Event::Stop { fast: false });
    assert_eq!(signals(&a), vec![(100, Sig::Term), (101, Sig::Term)]);
    assert_eq!(published(&a), Some(vec![]));
    let a = core.exited(t0 + Duration::from_secs(1), serials[0], Exit::Code(0));
    assert!(spawns(&a).is_empty(), "no restarts while stopping");
    assert!(!a.contains(&Action::Exit));
    let a = core.tick_at(t0 + Duration::from_secs(5));
    assert_eq!(signals(&a), vec![(101, Sig::Kill)]);
    let a = core.exited(t0 + Duration::from_secs(5), serials[1], Exit::Signal(9));
    assert!(a.contains(&Action::Exit));
}

#[test]
fn fast_stop_quits_and_kills_after_a_second() {
    let t0 = Instant::now();
    let (mut core, _) = running(1, t0);
    let a = core.on_event(t0, Event::Stop { fast: true });
    assert_eq!(signals(&a), vec![(100, Sig::Quit)]);
    assert_eq!(core.next_deadline(), Some(t0 + Duration::from_secs(1)));
}

#[test]
fn a_stop_while_a_slot_waits_for_its_back_off_cancels_the_restart() {
    let t0 = Instant::now();
    let (mut core, serial) = spawned_one(settings(1), t0);
    core.exited(t0, serial, Exit::Code(1));
    let a = core.on_event(t0, Event::Stop { fast: false });
    assert!(a.contains(&Action::Exit), "nothing left to wait for");
    assert!(spawns(&core.tick_at(t0 + Duration::from_secs(60))).is_empty());
}

#[test]
fn with_a_ready_path_a_worker_enters_service_only_after_a_passing_probe() {
    let t0 = Instant::now();
    let (mut core, s) = booted_probing(probed(2, 1), t0);
    assert_eq!(core.in_service().count(), 0);
    let a = core.on_event(
        t0,
        Event::ProbeResult {
            serial: s[0],
            result: Err("503".into()),
        },
    );
    assert_eq!(published(&a), None);
    assert!(
        core.slots[0]
            .last_error
            .as_ref()
            .unwrap()
            .text
            .contains("readiness check failed: 503")
    );
    // Retried after `retry`, not `interval`.
    let a = core.tick_at(t0 + Duration::from_secs(1));
    assert_eq!(probes(&a), vec![s[0]]);
    let a = core.on_event(
        t0 + Duration::from_secs(1),
        Event::ProbeResult {
            serial: s[0],
            result: Ok(()),
        },
    );
    assert_eq!(published(&a), Some(vec![s[0]]));
}

#[test]
fn a_worker_never_passing_readiness_counts_as_a_boot_failure_at_boot_timeout() {
    let t0 = Instant::now();
    let (mut core, s) = booted_probing(probed(1, 1), t0);
    core.on_event(
        t0,
        Event::ProbeResult {
            serial: s[0],
            result: Err("GET /ready answered 503".into()),
        },
    );
    let a = core.tick_at(t0 + Duration::from_secs(30));
    assert_eq!(signals(&a), vec![(100, Sig::DumpStacks)]);
    let err = &core.slots[0].last_error.as_ref().unwrap().text;
    assert!(
        err.contains("did not pass its readiness check within 30s"),
        "{err}"
    );
    assert!(err.contains("503"), "{err}");
    core.exited(t0 + Duration::from_secs(30), s[0], Exit::Signal(9));
    assert_eq!(core.slots[0].failures, 1, "backs off like a boot failure");
}

#[test]
fn unhealthy_after_failed_probes_in_a_row_takes_a_worker_out_until_it_passes() {
    let t0 = Instant::now();
    let (mut core, s) = booted_probing(probed(2, 1), t0);
    for &serial in &s {
        core.on_event(
            t0,
            Event::ProbeResult {
                serial,
                result: Ok(()),
            },
        );
    }
    let mut now = t0;
    for i in 1..=3 {
        now += Duration::from_secs(10);
        for &serial in &s {
            core.on_event(now, Event::Heartbeat { serial });
        }
        let a = core.tick_at(now);
        assert!(probes(&a).contains(&s[0]), "re-probed every interval");
        core.on_event(
            now,
            Event::ProbeResult {
                serial: s[1],
                result: Ok(()),
            },
        );
        let a = core.on_event(
            now,
            Event::ProbeResult {
                serial: s[0],
                result: Err("db down".into()),
            },
        );
        if i < 3 {
            assert_eq!(published(&a), None, "still in service after {i} failures");
        } else {
            assert_eq!(published(&a), Some(vec![s[1]]), "out after 3 in a row");
        }
    }
    assert_eq!(core.workers[&s[0]].state, State::Unready);
    now += Duration::from_secs(10);
    core.tick_at(now);
    let a = core.on_event(
        now,
        Event::ProbeResult {
            serial: s[0],
            result: Ok(()),
        },
    );
    assert_eq!(published(&a), Some(vec![s[0], s[1]]), "back in service");
}

#[test]
fn below_min_in_service_requests_go_to_every_live_worker() {
    let t0 = Instant::now();
    // 4 workers, panic below 2 in service.
    let (mut core, s) = booted_probing(probed(4, 2), t0);
    // None passes: all 4 are live but unproven, so route to all of them.
    let a = core.on_event(
        t0,
        Event::ProbeResult {
            serial: s[0],
            result: Err("x".into()),
        },
    );
    assert_eq!(published(&a), None);
    let a = core.on_event(
        t0,
        Event::ProbeResult {
            serial: s[1],
            result: Ok(()),
        },
    );
    assert_eq!(
        published(&a),
        Some(s.clone()),
        "1 < 2 in service: panic routes to all live"
    );
    assert!(core.panic);
    let a = core.on_event(
        t0,
        Event::ProbeResult {
            serial: s[2],
            result: Ok(()),
        },
    );
    assert_eq!(
        published(&a),
        Some(vec![s[1], s[2]]),
        "2 in service: only those"
    );
    assert!(!core.panic);
}

#[test]
fn a_live_worker_without_heartbeats_is_dumped_and_replaced() {
    let t0 = Instant::now();
    let (mut core, s) = running(2, t0);
    let t1 = t0 + Duration::from_secs(20);
    core.on_event(t1, Event::Heartbeat { serial: s[1] });
    assert_eq!(core.next_deadline(), Some(t0 + Duration::from_secs(30)));
    let a = core.tick_at(t0 + Duration::from_secs(30));
    assert_eq!(
        signals(&a),
        vec![(100, Sig::DumpStacks)],
        "only the silent one"
    );
    assert_eq!(published(&a), Some(vec![s[1]]));
    assert!(a.iter().any(
        |x| matches!(x, Action::Log(Level::Error, m) if m.contains("sent no heartbeat for 30s"))
    ));
}

fn recycling(count: usize, max_requests: u64, jitter: u64) -> Settings {
    Settings {
        max_requests,
        max_requests_jitter: jitter,
        ..settings(count)
    }
}

#[test]
fn max_requests_recycles_with_the_replacement_in_service_first() {
    let t0 = Instant::now();
    let mut core = Core::new(recycling(2, 100, 0));
    let started = spawns(&core.start());
    for (slot, serial) in &started {
        core.spawned(t0, *serial, 100 + *slot as u32);
        core.booted(t0, *serial, 1.0);
    }
    let (old, other) = (started[0].1, started[1].1);
    let a = core.on_event(
        t0,
        Event::Usage {
            serial: old,
            requests: 99,
            rss: None,
        },
    );
    assert!(spawns(&a).is_empty());
    let a = core.on_event(
        t0,
        Event::Usage {
            serial: old,
            requests: 100,
            rss: None,
        },
    );
    let next = spawns(&a);
    assert_eq!(next.len(), 1, "the replacement starts");
    assert_eq!(published(&a), None, "the old worker still serves");
    let new = next[0].1;
    core.spawned(t0, new, 200);
    let a = core.booted(t0, new, 1.0);
    // The new one is in, the old one out, in one publish: capacity never drops.
    assert_eq!(published(&a), Some(vec![other, new]));
    assert!(a.contains(&Action::Signal {
        serial: old,
        pid: 100,
        sig: Sig::Term,
    }));
    let a = core.exited(t0, old, Exit::Code(0));
    assert!(
        spawns(&a).is_empty(),
        "no extra worker after the recycled one exits"
    );
    assert_eq!(core.slots[0].worker, Some(new));
    assert_eq!(core.recycled, 1);
}

#[test]
fn jitter_spreads_the_limits() {
    let mut core = Core::new(recycling(8, 1000, 100));
    let t0 = Instant::now();
    let mut limits = Vec::new();
    for (_, serial) in spawns(&core.start()) {
        core.spawned(t0, serial, 1);
        limits.push(core.workers[&serial].recycle_after.unwrap());
    }
    assert!(
        limits.iter().all(|l| (1000..=1100).contains(l)),
        "{limits:?}"
    );
    limits.sort();
    limits.dedup();
    assert!(limits.len() > 4, "not spread: {limits:?}");
}

#[test]
fn a_replacement_that_fails_to_boot_leaves_the_old_worker_serving() {
    let t0 = Instant::now();
    let mut core = Core::new(recycling(1, 10, 0));
    let serial = spawns(&core.start())[0].1;
    core.spawned(t0, serial, 100);
    core.booted(t0, serial, 1.0);
    let new = spawns(&core.on_event(
        t0,
        Event::Usage {
            serial,
            requests: 10,
            rss: None,
        },
    ))[0]
        .1;
    core.spawned(t0, new, 200);
    core.boot_failed(t0, new, "ImportError: new code");
    let a = core.exited(t0, new, Exit::Code(1));
    assert_eq!(published(&a), None, "the old worker was never unpublished");
    assert_eq!(
        core.in_service().map(|w| w.serial).collect::<Vec<_>>(),
        vec![serial]
    );
    // Tried again only after the back-off.
    assert!(
        spawns(&core.on_event(
            t0,
            Event::Usage {
                serial,
                requests: 11,
                rss: None
            }
        ))
        .is_empty()
    );
    let later = t0 + Duration::from_millis(100);
    assert_eq!(
        spawns(&core.on_event(
            later,
            Event::Usage {
                serial,
                requests: 12,
                rss: None
            }
        ))
        .len(),
        1
    );
}

#[test]
fn max_memory_recycles_a_worker_over_the_limit() {
    let t0 = Instant::now();
    let mut core = Core::new(Settings {
        max_memory: Some(100 << 20),
        ..settings(1)
    });
    let serial = spawns(&core.start())[0].1;
    core.spawned(t0, serial, 100);
    core.booted(t0, serial, 1.0);
    assert!(
        spawns(&core.on_event(
            t0,
            Event::Usage {
                serial,
                requests: 5,
                rss: Some(99 << 20)
            }
        ))
        .is_empty()
    );
    let a = core.on_event(
        t0,
        Event::Usage {
            serial,
            requests: 5,
            rss: Some(101 << 20),
        },
    );
    assert_eq!(spawns(&a).len(), 1);
    assert!(a.iter().any(|x| matches!(x, Action::Log(_, m) if m.contains("uses 101 MiB of memory (max_memory 100 MiB)"))));
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

#[test]
fn a_reload_moves_traffic_only_when_the_whole_new_generation_is_in_service() {
    let t0 = Instant::now();
    let (mut core, old) = running(2, t0);
    let a = core.on_event(
        t0,
        Event::Reload {
            timeout: None,
            canary: None,
        },
    );
    let new = boot_all(&mut core, &a, t0);
    assert_eq!(new.len(), 2, "a successor per slot");
    let a = core.booted(t0, new[0], 1.0);
    // The first new worker takes requests beside the old ones; none drains yet.
    assert_eq!(published(&a), Some(vec![old[0], old[1], new[0]]));
    assert!(signals(&a).is_empty(), "none drains yet");
    let a = core.booted(t0, new[1], 1.0);
    assert_eq!(published(&a), Some(vec![new[0], new[1]]));
    let drained: Vec<u64> = a
        .iter()
        .filter_map(|x| match x {
            Action::Signal {
                serial,
                sig: Sig::Term,
                ..
            } => Some(*serial),
            _ => None,
        })
        .collect();
    assert_eq!(drained, old);
    assert_eq!(core.generation, 2);
    assert!(matches!(
        core.last_reload,
        Some(ReloadOutcome::Done { generation: 2, .. })
    ));
    for s in old {
        let a = core.exited(t0, s, Exit::Code(0));
        assert!(spawns(&a).is_empty());
    }
    assert_eq!(
        core.in_service().map(|w| w.generation).collect::<Vec<_>>(),
        vec![2, 2]
    );
}

#[test]
fn a_reload_whose_new_code_fails_to_boot_leaves_the_old_generation_untouched() {
    let t0 = Instant::now();
    let (mut core, old) = running(2, t0);
    let a = core.on_event(
        t0,
        Event::Reload {
            timeout: None,
            canary: None,
        },
    );
    let new = boot_all(&mut core, &a, t0);
    core.booted(t0, new[0], 1.0);
    core.boot_failed(t0, new[1], "Traceback...\nSyntaxError: invalid syntax");
    let a = core.exited(t0, new[1], Exit::Code(1));
    assert!(a.iter().any(|x| matches!(x, Action::Log(Level::Error, m) if m.contains("reload failed: slot 1 did not boot: SyntaxError: invalid syntax; generation 1 keeps serving"))), "{a:?}");
    assert_eq!(
        signals(&a),
        vec![(300, Sig::Quit)],
        "the new generation's other worker stops"
    );
    assert_eq!(
        published(&a),
        Some(old.clone()),
        "only the old generation serves"
    );
    assert!(spawns(&a).is_empty(), "no retry of the broken generation");
    assert_eq!(core.generation, 1);
    assert!(matches!(
        &core.last_reload,
        Some(ReloadOutcome::Failed { generation: 2, .. })
    ));
    // The old workers are not recycling any more and keep their slots.
    assert!(old.iter().all(|s| !core.workers[s].recycling));
    let a = core.exited(t0, new[0], Exit::Code(0));
    assert!(spawns(&a).is_empty());
    assert_eq!(
        core.slots.iter().map(|s| s.worker).collect::<Vec<_>>(),
        vec![Some(old[0]), Some(old[1])]
    );
}

#[test]
fn the_reload_after_a_failed_one_names_the_generation_that_really_drains() {
    let t0 = Instant::now();
    let (mut core, _old) = running(1, t0);
    let reload = Event::Reload {
        timeout: None,
        canary: None,
    };
    let a = core.on_event(t0, reload.clone());
    let broken = boot_all(&mut core, &a, t0);
    core.boot_failed(t0, broken[0], "SyntaxError: invalid syntax");
    core.exited(t0, broken[0], Exit::Code(1));
    let a = core.on_event(t0, reload);
    let fixed = boot_all(&mut core, &a, t0);
    let a = core.booted(t0, fixed[0], 1.0);
    assert!(a.iter().any(|x| matches!(x, Action::Log(Level::Info, m) if m.contains("generation 3 is in service") && m.contains("generation 1 drains"))), "{a:?}");
}

#[test]
fn a_reload_that_does_not_come_up_in_time_fails_at_its_deadline() {
    let t0 = Instant::now();
    let (mut core, old) = running(1, t0);
    let a = core.on_event(
        t0,
        Event::Reload {
            timeout: None,
            canary: None,
        },
    );
    boot_all(&mut core, &a, t0);
    assert_eq!(core.next_deadline(), Some(t0 + Duration::from_secs(30)));
    core.on_event(
        t0 + Duration::from_secs(29),
        Event::Heartbeat { serial: old[0] },
    );
    let a = core.tick_at(t0 + Duration::from_secs(30));
    assert!(a.iter().any(|x| matches!(x, Action::Log(Level::Error, m) if m.contains("reload failed: generation 2 was not all in service within 30s"))), "{a:?}");
    assert_eq!(core.in_service().map(|w| w.serial).collect::<Vec<_>>(), old);
}

#[test]
fn scaling_up_starts_slots_and_down_drains_the_highest() {
    let t0 = Instant::now();
    let (mut core, s) = running(2, t0);
    let a = core.on_event(t0, Event::Scale { count: 3 });
    let new = spawns(&a);
    assert_eq!(
        new.iter().map(|(slot, _)| *slot).collect::<Vec<_>>(),
        vec![2]
    );
    core.spawned(t0, new[0].1, 102);
    let a = core.booted(t0, new[0].1, 1.0);
    assert!(a.contains(&Action::Log(Level::Info, "all 3 workers in service".into())));
    let a = core.on_event(t0, Event::Scale { count: 1 });
    assert_eq!(published(&a), Some(vec![s[0]]));
    let drained: Vec<u64> = a
        .iter()
        .filter_map(|x| match x {
            Action::Signal {
                serial,
                sig: Sig::Term,
                ..
            } => Some(*serial),
            _ => None,
        })
        .collect();
    assert_eq!(drained, vec![s[1], new[0].1]);
    let later = t0 + Duration::from_secs(60);
    core.on_event(later, Event::Heartbeat { serial: s[0] });
    let a = core.exited(later, s[1], Exit::Code(0));
    assert!(spawns(&a).is_empty(), "a scaled-away slot is not restarted");
    assert_eq!(core.active(), 1);
    // Scaling up again reuses the retired slot.
    let a = core.on_event(later, Event::Scale { count: 2 });
    assert_eq!(
        spawns(&a).iter().map(|(slot, _)| *slot).collect::<Vec<_>>(),
        vec![1]
    );
}

#[test]
fn a_rolling_reload_replaces_one_slot_at_a_time_within_max_surge() {
    let t0 = Instant::now();
    let mut core = Core::new(Settings {
        rolling: Some(1),
        ..settings(3)
    });
    let mut old = Vec::new();
    for (slot, serial) in spawns(&core.start()) {
        core.spawned(t0, serial, 100 + slot as u32);
        core.booted(t0, serial, 1.0);
        old.push(serial);
    }
    let mut a = core.on_event(
        t0,
        Event::Reload {
            timeout: None,
            canary: None,
        },
    );
    let mut max_alive = 0;
    for round in 0..3 {
        let s = spawns(&a);
        assert_eq!(s.len(), 1, "round {round}: one successor at a time");
        let (slot, new) = s[0];
        assert_eq!(slot, round);
        core.spawned(t0, new, 200 + slot as u32);
        max_alive = max_alive.max(core.workers.len());
        let b = core.booted(t0, new, 1.0);
        assert!(b.contains(&Action::Signal {
            serial: old[slot],
            pid: 100 + slot as u32,
            sig: Sig::Term,
        }));
        a = core.exited(t0, old[slot], Exit::Code(0));
    }
    assert_eq!(max_alive, 4, "never more than max_surge = 1 extra worker");
    assert!(core.reload.is_none());
    assert_eq!(core.generation, 2);
    assert!(core.in_service().all(|w| w.generation == 2));
}

/// Recycles slot 0 of two workers: returns the core, the old worker's
/// serial (pid 100, draining), and its successor's (pid 200, in service).
fn recycled_one(t0: Instant) -> (Core, u64, u64) {
    let (mut core, serials) = running(2, t0);
    core.settings.max_requests = 10;
    // Only the drain's own timer is left to watch.
    core.settings.heartbeat_timeout = None;
    let old = serials[0];
    core.workers.get_mut(&old).unwrap().recycle_after = Some(10);
    let a = core.on_event(
        t0,
        Event::Usage {
            serial: old,
            requests: 10,
            rss: None,
        },
    );
    let new = spawns(&a)[0].1;
    core.spawned(t0, new, 200);
    let a = core.booted(t0, new, 1.0);
    assert_eq!(signals(&a), vec![(100, Sig::Term)], "the old one drains");
    (core, old, new)
}

#[test]
fn a_drained_worker_that_outstays_its_grace_is_killed_by_the_core() {
    let t0 = Instant::now();
    let (mut core, _old, _) = recycled_one(t0);
    // The deadline is the core's own timer, not a task that outlives it.
    assert_eq!(core.next_deadline(), Some(t0 + Duration::from_secs(35)));
    let a = core.tick_at(t0 + Duration::from_secs(34));
    assert!(signals(&a).is_empty());
    let a = core.tick_at(t0 + Duration::from_secs(35));
    assert_eq!(signals(&a), vec![(100, Sig::Kill)]);
    let a = core.tick_at(t0 + Duration::from_secs(36));
    assert!(signals(&a).is_empty(), "SIGKILL is sent once");
}

#[test]
fn a_drained_worker_that_exits_in_time_is_never_signalled_again() {
    let t0 = Instant::now();
    let (mut core, old, _) = recycled_one(t0);
    core.exited(t0 + Duration::from_secs(2), old, Exit::Code(0));
    // Its pid may be anyone's now: no timer is left that would signal it.
    let a = core.tick_at(t0 + Duration::from_secs(3600));
    assert!(signals(&a).is_empty());
}

#[test]
fn a_hung_request_on_a_draining_worker_ends_it_now_not_at_its_deadline() {
    let t0 = Instant::now();
    let (mut core, old, _) = recycled_one(t0);
    let a = core.on_event(
        t0 + Duration::from_secs(1),
        Event::Replace {
            serial: old,
            reason: "request timed out".into(),
        },
    );
    assert_eq!(signals(&a), vec![(100, Sig::DumpStacks)]);
    let a = core.tick_at(t0 + Duration::from_millis(1200));
    assert_eq!(signals(&a), vec![(100, Sig::Kill)]);
    let a = core.on_event(
        t0 + Duration::from_secs(2),
        Event::Replace {
            serial: old,
            reason: "another request timed out".into(),
        },
    );
    assert!(signals(&a).is_empty(), "already killed");
}

#[test]
fn a_protocol_error_kills_the_worker_at_once_and_its_exit_replaces_it() {
    let t0 = Instant::now();
    let (mut core, serials) = running(2, t0);
    let later = t0 + Duration::from_secs(10);
    let a = core.on_event(
        later,
        Event::ChannelClosed {
            serial: serials[0],
            error: Some("bad frame".into()),
        },
    );
    assert_eq!(
        published(&a),
        Some(vec![serials[1]]),
        "out of service at once"
    );
    assert_eq!(signals(&a), vec![(100, Sig::Kill)]);
    let a = core.exited(later, serials[0], Exit::Signal(9));
    assert_eq!(spawns(&a).len(), 1, "replaced at once, no zombie slot");
}

#[test]
fn a_worker_that_closed_its_channel_but_lingers_is_killed() {
    let t0 = Instant::now();
    let (mut core, serials) = running(1, t0);
    let a = core.on_event(
        t0,
        Event::ChannelClosed {
            serial: serials[0],
            error: None,
        },
    );
    assert_eq!(published(&a), Some(vec![]));
    assert!(signals(&a).is_empty(), "a normal exit closes it first");
    let a = core.tick_at(t0 + Duration::from_secs(1));
    assert_eq!(signals(&a), vec![(100, Sig::Kill)], "still there: killed");
}

#[test]
fn after_sigterm_nothing_starts_even_when_a_worker_exits_before_the_stop() {
    let t0 = Instant::now();
    let (mut core, serials) = running(2, t0);
    core.settings.max_requests = 1;
    core.on_event(t0, Event::Drain);
    // systemd TERMs every process of the unit: a worker drains and exits
    // while the front is still finishing its requests.
    let a = core.exited(t0 + Duration::from_secs(5), serials[0], Exit::Code(0));
    assert!(spawns(&a).is_empty(), "not replaced");
    assert_eq!(published(&a), Some(vec![serials[1]]));
    assert!(!a.contains(&Action::Exit), "the front is still draining");
    let later = t0 + Duration::from_secs(60);
    assert!(spawns(&core.tick_at(later)).is_empty());
    let recycle = Event::Usage {
        serial: serials[1],
        requests: 1_000,
        rss: None,
    };
    assert!(spawns(&core.on_event(later, recycle)).is_empty());
    assert!(
        spawns(&core.on_event(
            later,
            Event::Reload {
                timeout: None,
                canary: None,
            }
        ))
        .is_empty()
    );
    assert!(spawns(&core.on_event(later, Event::Scale { count: 4 })).is_empty());
    let a = core.on_event(later, Event::Stop { fast: false });
    assert_eq!(signals(&a), vec![(101, Sig::Term)]);
    let a = core.exited(later, serials[1], Exit::Code(0));
    assert!(a.contains(&Action::Exit));
}

#[test]
fn a_crash_while_booting_is_a_boot_failure_even_after_its_channel_closed() {
    let t0 = Instant::now();
    let (mut core, serial) = spawned_one(settings(1), t0);
    core.on_event(
        t0,
        Event::ChannelClosed {
            serial,
            error: None,
        },
    );
    core.exited(t0, serial, Exit::Signal(11));
    assert_eq!(core.boot_failures, 1);
    assert!(
        core.slots[0]
            .last_error
            .as_ref()
            .is_some_and(|e| e.text.contains("SIGSEGV"))
    );
}

#[test]
fn the_transition_table_allows_the_life_cycle_and_nothing_else() {
    use State::*;
    let boot_timeout = Killing {
        cause: KillCause::BootTimeout,
    };
    let hung = Killing {
        cause: KillCause::Hung,
    };
    for (from, to) in [
        (Booting, Probing),
        (Booting, InService),
        (Probing, InService),
        (InService, Unready),
        (Unready, InService),
        (Booting, boot_timeout),
        (Probing, boot_timeout),
        (InService, Stopping),
        (Stopping, Stopping),
        (Stopping, hung),
        (InService, hung),
    ] {
        assert!(from.may_become(to), "{from:?} -> {to:?} must be allowed");
    }
    for (from, to) in [
        (InService, Booting),
        (Probing, Booting),
        (Stopping, InService),
        (Stopping, Probing),
        (Unready, Probing),
        (InService, boot_timeout),
        (Stopping, boot_timeout),
        (boot_timeout, Stopping),
        (hung, Stopping),
        (hung, InService),
    ] {
        assert!(!from.may_become(to), "{from:?} -> {to:?} must be refused");
    }
}

#[test]
fn a_probe_that_never_passes_puts_the_worker_in_killing_and_a_stop_keeps_its_deadline() {
    let t0 = Instant::now();
    let (mut core, s) = booted_probing(probed(1, 1), t0);
    let t1 = t0 + Duration::from_secs(30);
    let a = core.tick_at(t1);
    assert_eq!(signals(&a), vec![(100, Sig::DumpStacks)]);
    let w = &core.workers[&s[0]];
    assert_eq!(
        w.state,
        State::Killing {
            cause: KillCause::BootTimeout
        }
    );
    assert_eq!(w.state.name(), "booting", "/status still calls it booting");
    // A stop in the middle neither softens the state nor postpones SIGKILL.
    let a = core.on_event(t1 + Duration::from_millis(50), Event::Stop { fast: true });
    assert_eq!(signals(&a), vec![(100, Sig::Quit)]);
    assert!(matches!(core.workers[&s[0]].state, State::Killing { .. }));
    assert_eq!(core.next_deadline(), Some(t1 + Duration::from_millis(200)));
    let a = core.tick_at(t1 + Duration::from_millis(200));
    assert_eq!(signals(&a), vec![(100, Sig::Kill)]);
}

#[test]
fn a_boot_timeout_exit_is_a_failed_boot_and_a_hung_worker_exit_is_not() {
    let t0 = Instant::now();
    // Boot timeout: the exit counts as a failure and backs off.
    let (mut core, s) = booted_probing(probed(1, 1), t0);
    let t1 = t0 + Duration::from_secs(30);
    core.tick_at(t1);
    let a = core.exited(t1, s[0], Exit::Signal(libc::SIGKILL));
    assert!(spawns(&a).is_empty(), "backs off");
    assert_eq!(core.slots[0].failures, 1);
    assert_eq!(core.boot_failures, 1);
    // Hung (a request timed out) young or not: replaced at once, no failure.
    let (mut core, s) = running(1, t0);
    core.on_event(
        t0,
        Event::Replace {
            serial: s[0],
            reason: "request timed out".into(),
        },
    );
    assert_eq!(
        core.workers[&s[0]].state,
        State::Killing {
            cause: KillCause::Hung
        }
    );
    assert_eq!(core.workers[&s[0]].state.name(), "stopping");
    let a = core.exited(t0 + Duration::from_millis(300), s[0], Exit::Signal(9));
    assert_eq!(spawns(&a).len(), 1, "replaced at once");
    assert_eq!(core.slots[0].failures, 0);
}

#[test]
fn a_protocol_error_on_a_draining_worker_kills_it_for_that_cause() {
    let t0 = Instant::now();
    let (mut core, s) = running(2, t0);
    core.on_event(t0, Event::Scale { count: 1 });
    assert_eq!(core.workers[&s[1]].state, State::Stopping);
    let a = core.on_event(
        t0 + Duration::from_millis(10),
        Event::ChannelClosed {
            serial: s[1],
            error: Some("bad frame".into()),
        },
    );
    assert_eq!(signals(&a), vec![(101, Sig::Kill)]);
    assert_eq!(
        core.workers[&s[1]].state,
        State::Killing {
            cause: KillCause::ProtocolError
        }
    );
}

fn canary(count: usize) -> Settings {
    Settings {
        canary: Some(CanarySettings {
            permille: 100,
            hold: Duration::from_secs(125),
        }),
        ..settings(count)
    }
}

fn running_with(settings: Settings, t0: Instant) -> (Core, Vec<u64>) {
    let mut core = Core::new(settings);
    let mut serials = Vec::new();
    for (slot, serial) in spawns(&core.start()) {
        core.spawned(t0, serial, 100 + slot as u32);
        core.booted(t0, serial, 5.0);
        serials.push(serial);
    }
    (core, serials)
}

#[test]
fn a_canary_holds_the_switch_until_it_passes() {
    let t0 = Instant::now();
    let (mut core, old) = running_with(canary(2), t0);
    let a = core.on_event(
        t0,
        Event::Reload {
            timeout: None,
            canary: None,
        },
    );
    assert!(a.contains(&Action::Route(Some((2, 100)))), "{a:?}");
    // Its deadline leaves room for the canary's window.
    assert_eq!(
        core.reload.as_ref().map(|r| r.deadline),
        Some(t0 + Duration::from_secs(30 + 125))
    );
    let new = boot_all(&mut core, &a, t0);
    core.booted(t0, new[0], 1.0);
    let a = core.booted(t0, new[1], 1.0);
    // All in service: both generations take requests (the router splits),
    // nothing drains, the old one still serves.
    assert_eq!(published(&a), Some(vec![old[0], old[1], new[0], new[1]]));
    assert!(signals(&a).is_empty());
    assert_eq!(core.generation, 1);
    // A verdict for another generation changes nothing.
    let a = core.on_event(
        t0,
        Event::Canary {
            generation: 7,
            verdict: Ok(()),
        },
    );
    assert!(a.is_empty());
    let a = core.on_event(
        t0,
        Event::Canary {
            generation: 2,
            verdict: Ok(()),
        },
    );
    assert_eq!(published(&a), Some(vec![new[0], new[1]]));
    assert!(a.contains(&Action::Route(None)));
    assert_eq!(signals(&a), vec![(100, Sig::Term), (101, Sig::Term)]);
    assert_eq!(core.generation, 2);
}

#[test]
fn a_failed_canary_stops_the_new_generation_and_leaves_the_old_untouched() {
    let t0 = Instant::now();
    let (mut core, old) = running_with(canary(2), t0);
    let a = core.on_event(
        t0,
        Event::Reload {
            timeout: None,
            canary: None,
        },
    );
    let new = boot_all(&mut core, &a, t0);
    core.booted(t0, new[0], 1.0);
    let verdict = Err(("canary failed: 5xx".to_string(), Some("table".to_string())));
    let a = core.on_event(
        t0,
        Event::Canary {
            generation: 2,
            verdict,
        },
    );
    assert!(a.contains(&Action::Route(None)));
    assert_eq!(published(&a), Some(old.clone()));
    // The one in service finishes its requests; the one booting stops.
    assert_eq!(signals(&a), vec![(300, Sig::Term), (301, Sig::Quit)]);
    assert_eq!(core.generation, 1);
    assert!(matches!(
        &core.last_reload,
        Some(ReloadOutcome::Failed { generation: 2, reason, detail: Some(d), .. })
            if reason == "canary failed: 5xx" && d == "table"
    ));
}

#[test]
fn a_rolling_canary_keeps_its_first_successors_beside_the_old_workers() {
    let t0 = Instant::now();
    let (mut core, old) = running_with(
        Settings {
            rolling: Some(1),
            ..canary(3)
        },
        t0,
    );
    let a = core.on_event(
        t0,
        Event::Reload {
            timeout: None,
            canary: None,
        },
    );
    let new = boot_all(&mut core, &a, t0);
    assert_eq!(new.len(), 1, "max_surge at a time");
    let a = core.booted(t0, new[0], 1.0);
    assert_eq!(published(&a), Some(vec![old[0], old[1], old[2], new[0]]));
    assert!(signals(&a).is_empty(), "no slot is taken during the canary");
    let a = core.on_event(
        t0,
        Event::Canary {
            generation: 2,
            verdict: Ok(()),
        },
    );
    assert_eq!(signals(&a), vec![(100, Sig::Term)], "then the roll goes on");
}
