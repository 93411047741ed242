//! Reloads, scaling, rolling reloads and canaries: traffic moves to a new
//! generation only when it may.

use super::*;

/// A reload as `corral reload` asks it: no timeout of its own, the
/// configured canary.
fn reload(core: &mut Core, t: Instant) -> Vec<Action> {
    core.on_event(
        t,
        Event::Reload {
            timeout: None,
            canary: None,
        },
    )
}

#[test]
fn a_reload_moves_traffic_only_when_the_whole_new_generation_is_in_service() {
    let t0 = Instant::now();
    let (mut core, old) = running(2, t0);
    let a = reload(&mut core, t0);
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
    let a = reload(&mut core, t0);
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
fn a_reload_whose_worker_cannot_be_started_fails_at_once_with_the_reason() {
    let t0 = Instant::now();
    let (mut core, old) = running(2, t0);
    let a = reload(&mut core, t0);
    let serial = spawns(&a)[0].1;
    let error = "cannot start `/srv/app/.venv/bin/python` for the worker: No such file or directory (os error 2)";
    let a = core.on_event(
        t0,
        Event::SpawnFailed {
            serial,
            error: error.into(),
        },
    );
    assert!(a.iter().any(|x| matches!(x, Action::Log(Level::Error, m) if m.contains("reload failed: slot 0 did not start: cannot start `/srv/app/.venv/bin/python`"))), "{a:?}");
    assert!(matches!(
        &core.last_reload,
        Some(ReloadOutcome::Failed { generation: 2, reason, detail: None, .. }) if reason.ends_with(error)
    ));
    assert_eq!(core.generation, 1);
    assert!(old.iter().all(|s| !core.workers[s].recycling));
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
    let a = reload(&mut core, t0);
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
    let mut a = reload(&mut core, t0);
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
    let a = reload(&mut core, t0);
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
fn a_canary_worker_that_dies_in_service_is_said_to_have_booted() {
    let t0 = Instant::now();
    let (mut core, _old) = running_with(canary(2), t0);
    let a = reload(&mut core, t0);
    let new = boot_all(&mut core, &a, t0);
    core.booted(t0, new[0], 1.0);
    core.booted(t0, new[1], 1.0);
    let a = core.exited(t0, new[0], Exit::Code(7));
    assert!(
        a.iter().any(|x| matches!(x, Action::Log(Level::Error, m)
            if m.contains("reload failed: slot 0's new worker exited with code 7 after it booted"))),
        "{a:?}"
    );
    assert!(!format!("{a:?}").contains("did not boot"), "{a:?}");
}

#[test]
fn a_failed_canary_stops_the_new_generation_and_leaves_the_old_untouched() {
    let t0 = Instant::now();
    let (mut core, old) = running_with(canary(2), t0);
    let a = reload(&mut core, t0);
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

/// A slot added by scaling during a canary starts on the canary's
/// generation; when the canary fails, that worker stops too and the slot
/// starts again on the generation that keeps serving. Before, it stayed in
/// service on the failed code with no end, taking its share of requests,
/// while the log said the old generation kept serving.
#[test]
fn a_slot_scaled_up_during_a_failed_canary_starts_again_on_the_old_generation() {
    let t0 = Instant::now();
    let (mut core, old) = running_with(canary(2), t0);
    let a = reload(&mut core, t0);
    let new = boot_all(&mut core, &a, t0);
    core.booted(t0, new[0], 1.0);
    core.booted(t0, new[1], 1.0);
    let a = core.on_event(t0, Event::Scale { count: 3 });
    let added = spawns(&a);
    assert_eq!(added.iter().map(|s| s.0).collect::<Vec<_>>(), vec![2]);
    core.spawned(t0, added[0].1, 302);
    core.booted(t0, added[0].1, 1.0);
    assert_eq!(core.workers[&added[0].1].generation, 2);
    let verdict = Err(("canary failed: 5xx".to_string(), None));
    let a = core.on_event(
        t0,
        Event::Canary {
            generation: 2,
            verdict,
        },
    );
    // Only the old generation routes; every worker of the failed one
    // finishes its requests and stops, the added slot's included.
    assert_eq!(published(&a), Some(old.clone()));
    assert_eq!(
        signals(&a),
        vec![(300, Sig::Term), (301, Sig::Term), (302, Sig::Term)]
    );
    // Its replacement is of generation 1.
    let a = core.exited(t0, added[0].1, Exit::Code(0));
    let again = spawns(&a);
    assert_eq!(again.iter().map(|s| s.0).collect::<Vec<_>>(), vec![2]);
    core.spawned(t0, again[0].1, 303);
    assert_eq!(core.workers[&again[0].1].generation, 1);
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
    let a = reload(&mut core, t0);
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

/// Whether the actions log a failed reload.
fn logs_failed_reload(actions: &[Action]) -> bool {
    actions
        .iter()
        .any(|x| matches!(x, Action::Log(_, m) if m.contains("reload failed")))
}

#[test]
fn a_stop_during_a_reload_cancels_it_and_is_no_failed_reload() {
    // TERM (the front drains, then the graceful stop) and INT/QUIT (the
    // fast stop at once), with one successor in service and one booting.
    for fast in [false, true] {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(3);
        let (mut core, old) = running(2, t0);
        let a = reload(&mut core, t0);
        let new = boot_all(&mut core, &a, t0);
        core.booted(t0, new[0], 1.0);
        let mut seen = Vec::new();
        if !fast {
            seen.extend(core.on_event(t1, Event::Drain));
            // A successor that boots while the front drains takes over
            // nothing: the generation that serves stays the last good one.
            seen.extend(core.booted(t1, new[1], 1.0));
            assert_eq!(core.generation, 1, "fast: {fast}");
            assert!(
                !matches!(core.last_reload, Some(ReloadOutcome::Done { .. })),
                "fast: {fast}"
            );
        }
        seen.extend(core.on_event(t1, Event::Stop { fast }));
        // Every worker exits as the stop asked: the booting successor
        // with code 0, as a Python worker does on SIGTERM.
        for s in new.iter().chain(&old) {
            seen.extend(core.exited(t1, *s, Exit::Code(0)));
        }
        seen.extend(core.tick_at(t0 + Duration::from_secs(60)));
        assert!(!logs_failed_reload(&seen), "fast: {fast}: {seen:?}");
        assert!(seen.contains(&Action::Exit), "fast: {fast}: {seen:?}");
        assert_eq!(core.reloads_failed, 0, "fast: {fast}");
        assert_eq!(core.reloads_cancelled, 1, "fast: {fast}");
        assert_eq!(core.generation, 1, "fast: {fast}");
        assert!(
            matches!(
                &core.last_reload,
                Some(ReloadOutcome::Cancelled { generation: 2, reason, .. })
                    if reason == "corral is stopping"
            ),
            "fast: {fast}: {:?}",
            core.last_reload
        );
    }
}

#[test]
fn a_term_within_shutdown_delay_cancels_a_canary_whose_workers_finish_their_requests() {
    let t0 = Instant::now();
    let (mut core, old) = running_with(canary(2), t0);
    let a = reload(&mut core, t0);
    let new = boot_all(&mut core, &a, t0);
    core.booted(t0, new[0], 1.0);
    let a = core.on_event(t0, Event::CancelReload);
    assert!(a.contains(&Action::Route(None)), "{a:?}");
    assert_eq!(published(&a), Some(old.clone()));
    // The canary's worker in service finishes its requests; the one
    // booting stops.
    assert_eq!(signals(&a), vec![(300, Sig::Term), (301, Sig::Quit)]);
    assert!(!logs_failed_reload(&a), "{a:?}");
    assert_eq!((core.reloads_failed, core.canaries_failed), (0, 0));
    // A verdict that comes late changes nothing.
    let a = core.on_event(
        t0,
        Event::Canary {
            generation: 2,
            verdict: Ok(()),
        },
    );
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(core.generation, 1);
}

#[test]
fn a_rolling_reload_starts_no_successor_for_a_slot_scaled_away() {
    let t0 = Instant::now();
    let (mut core, old) = running_with(
        Settings {
            rolling: Some(1),
            ..settings(3)
        },
        t0,
    );
    let a = reload(&mut core, t0);
    let first = boot_all(&mut core, &a, t0);
    core.on_event(t0, Event::Scale { count: 2 });
    core.booted(t0, first[0], 1.0);
    let a = core.exited(t0, old[0], Exit::Code(0));
    let second = spawns(&a);
    assert_eq!(second.iter().map(|s| s.0).collect::<Vec<_>>(), vec![1]);
    core.spawned(t0, second[0].1, 301);
    core.booted(t0, second[0].1, 1.0);
    let mut a = core.exited(t0, old[1], Exit::Code(0));
    a.extend(core.exited(t0, old[2], Exit::Code(0)));
    assert!(spawns(&a).is_empty(), "slot 2 is scaled away: {a:?}");
    assert!(core.reload.is_none());
    assert_eq!(core.generation, 2);
    assert_eq!(core.workers.len(), 2);
}

#[test]
fn a_slot_scaled_away_during_a_reload_does_not_hold_it_back() {
    let t0 = Instant::now();
    let (mut core, old) = running(2, t0);
    let a = core.on_event(t0, Event::Scale { count: 3 });
    let (_, third) = spawns(&a)[0];
    core.spawned(t0, third, 102);
    core.booted(t0, third, 1.0);
    let a = reload(&mut core, t0);
    let new = boot_all(&mut core, &a, t0);
    assert_eq!(new.len(), 3);
    core.booted(t0, new[0], 1.0);
    core.booted(t0, new[1], 1.0);
    assert!(core.reload.is_some(), "slot 2 of generation 2 still boots");
    // TTOU: slot 2 goes, its successor with it; slots 0 and 1 of the new
    // generation are in service, so the reload is done.
    let t1 = t0 + Duration::from_secs(1);
    let a = core.on_event(t1, Event::Scale { count: 2 });
    assert!(signals(&a).contains(&(302, Sig::Quit)), "{a:?}");
    assert!(core.reload.is_none(), "{a:?}");
    assert_eq!(core.generation, 2);
    assert_eq!(published(&a), Some(vec![new[0], new[1]]));
    for s in [old[0], old[1], third, new[2]] {
        assert!(!logs_failed_reload(&core.exited(t1, s, Exit::Code(0))));
    }
    // Past the reload's deadline (30 s) nothing fails it either.
    let later = t0 + Duration::from_secs(31);
    for serial in [new[0], new[1]] {
        core.on_event(later, Event::Heartbeat { serial });
    }
    let a = core.tick_at(later);
    assert!(!logs_failed_reload(&a), "{a:?}");
    assert_eq!(core.reloads_failed, 0);
    assert_eq!(
        core.in_service().map(|w| w.serial).collect::<Vec<_>>(),
        vec![new[0], new[1]]
    );
}
