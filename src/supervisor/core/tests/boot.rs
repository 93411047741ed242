//! Booting, readiness probes, health, heartbeats and stopping.

use super::*;

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
