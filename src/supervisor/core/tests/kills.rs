//! Drains and kill deadlines owned by the core, the kill causes, and the
//! table of allowed transitions.

use super::*;

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
        (InService, Exiting),
        (Unready, Exiting),
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
        (Booting, Exiting),
        (Probing, Exiting),
        (Stopping, Exiting),
        (hung, Exiting),
        (Exiting, Stopping),
        (Exiting, hung),
        (Exiting, InService),
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
