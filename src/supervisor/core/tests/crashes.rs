//! Deaths corral did not ask for (a crash, a kill from outside, an exit of
//! the worker's own): logged at WARN or ERROR with how it ended, and counted
//! by the young rule, whether the worker's channel closes before its exit
//! is seen (the usual order) or after (a subprocess holds the channel).

use super::*;

fn logs(actions: &[Action]) -> Vec<(Level, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Log(level, m) => Some((*level, m.clone())),
            _ => None,
        })
        .collect()
}

fn closed(core: &mut Core, t: Instant, serial: u64) -> Vec<Action> {
    core.on_event(
        t,
        Event::ChannelClosed {
            serial,
            error: None,
        },
    )
}

/// One worker in service since `t0` dies `after` later with `exit`, its
/// channel closing first when `channel_first`: what is logged, and whether
/// its slot restarted at once.
fn death(after: Duration, exit: Exit, channel_first: bool) -> (Core, Vec<(Level, String)>, bool) {
    let t0 = Instant::now();
    let (mut core, serials) = running(1, t0);
    let t = t0 + after;
    let mut actions = Vec::new();
    if channel_first {
        let a = closed(&mut core, t, serials[0]);
        assert_eq!(published(&a), Some(vec![]), "out of service at once");
        assert!(logs(&a).is_empty(), "{a:?}");
        assert!(signals(&a).is_empty(), "{a:?}");
        actions.extend(a);
    }
    actions.extend(core.exited(t, serials[0], exit));
    if !channel_first {
        actions.extend(closed(&mut core, t, serials[0]));
    }
    let restarted = !spawns(&actions).is_empty();
    (core, logs(&actions), restarted)
}

#[test]
fn an_abort_seen_as_its_channel_closing_first_is_one_error_and_backs_off_as_when_the_exit_comes_first()
 {
    for channel_first in [true, false] {
        let (core, logs, restarted) = death(
            Duration::from_millis(300),
            Exit::Signal(libc::SIGABRT),
            channel_first,
        );
        let crash: Vec<_> = logs.iter().filter(|(_, m)| m.contains("pid 100")).collect();
        assert_eq!(crash.len(), 1, "logged once: {logs:?}");
        assert_eq!(crash[0].0, Level::Error, "{logs:?}");
        assert!(
            crash[0].1.contains("was killed by SIGABRT")
                && crash[0].1.contains("300ms after it entered service"),
            "{logs:?}"
        );
        assert!(!restarted, "backs off (channel first: {channel_first})");
        assert_eq!(core.slots[0].failures, 1);
        assert!(core.slots[0].start_at.is_some());
        assert!(
            logs.iter().any(|(_, m)| m.contains("next start in 100ms")),
            "{logs:?}"
        );
        assert_eq!(core.boot_failures, 0, "it had booted");
    }
}

#[test]
fn an_exit_of_its_own_in_service_is_a_warning_and_young_ones_back_off_doubling() {
    let t0 = Instant::now();
    let (mut core, serials) = running(1, t0);
    let mut serial = serials[0];
    let mut t = t0;
    for (n, delay) in [(1, 100), (2, 200), (3, 400)] {
        // It enters service, then exits with code 0 a moment later; its
        // channel closes first, as it does at a normal exit.
        t += Duration::from_millis(100);
        closed(&mut core, t, serial);
        let a = core.exited(t, serial, Exit::Code(0));
        let l = logs(&a);
        assert_eq!(l[0].0, Level::Warn, "{l:?}");
        assert!(l[0].1.contains("exited with code 0 on its own"), "{l:?}");
        assert!(spawns(&a).is_empty());
        assert_eq!(core.slots[0].failures, n);
        let at = core.slots[0].start_at.unwrap();
        assert_eq!(at, t + Duration::from_millis(delay), "back-off {n}");
        t = at;
        let a = core.tick_at(t);
        serial = spawns(&a)[0].1;
        core.spawned(t, serial, 100);
        core.booted(t, serial, 1.0);
    }
    // One that served past `young` restarts at once and clears the count.
    t += Duration::from_secs(5);
    closed(&mut core, t, serial);
    let a = core.exited(t, serial, Exit::Code(1));
    assert_eq!(logs(&a)[0].0, Level::Warn);
    assert_eq!(spawns(&a).len(), 1, "restarted at once");
    assert_eq!(core.slots[0].failures, 0);
}

#[test]
fn a_sigkill_corral_did_not_send_is_an_error_that_says_perhaps_out_of_memory() {
    for channel_first in [true, false] {
        let (core, logs, restarted) = death(
            Duration::from_secs(60),
            Exit::Signal(libc::SIGKILL),
            channel_first,
        );
        assert_eq!(logs.len(), 1, "{logs:?}");
        assert_eq!(logs[0].0, Level::Error);
        assert!(
            logs[0]
                .1
                .contains("was killed by SIGKILL, not by corral: perhaps out of memory"),
            "{logs:?}"
        );
        assert!(restarted, "served a minute: replaced at once");
        assert_eq!(core.slots[0].failures, 0);
    }
}

#[test]
fn a_worker_whose_channel_closed_and_that_lingers_is_killed_and_its_exit_is_still_a_crash() {
    let t0 = Instant::now();
    let (mut core, serials) = running(1, t0);
    core.settings.quit_grace = Duration::from_millis(500);
    let t = t0 + Duration::from_millis(200);
    closed(&mut core, t, serials[0]);
    assert_eq!(core.workers[&serials[0]].state, State::Exiting);
    assert_eq!(core.workers[&serials[0]].state.name(), "stopping");
    // A stop or a request timeout does not turn it into an expected exit.
    core.on_event(
        t,
        Event::Replace {
            serial: serials[0],
            reason: "request timed out".into(),
        },
    );
    assert_eq!(core.workers[&serials[0]].state, State::Exiting);
    let t = t + Duration::from_millis(500);
    let a = core.tick_at(t);
    assert_eq!(signals(&a), vec![(100, Sig::Kill)], "quit_grace later");
    let a = core.exited(t, serials[0], Exit::Signal(libc::SIGKILL));
    let l = logs(&a);
    assert_eq!(l[0].0, Level::Warn, "corral's own SIGKILL: {l:?}");
    assert!(
        l[0].1
            .contains("was killed by SIGKILL (by corral): its channel had closed"),
        "{l:?}"
    );
    assert_eq!(core.slots[0].failures, 1, "it died young: {l:?}");
}

#[test]
fn a_worker_corral_replaced_exits_at_info_and_restarts_at_once_even_young() {
    let t0 = Instant::now();
    let (mut core, serials) = running(2, t0);
    let t = t0 + Duration::from_millis(100);
    core.on_event(
        t,
        Event::Replace {
            serial: serials[0],
            reason: "request timed out".into(),
        },
    );
    closed(&mut core, t, serials[0]);
    let t = t + Duration::from_millis(200);
    core.tick_at(t);
    let a = core.exited(t, serials[0], Exit::Signal(libc::SIGKILL));
    let l = logs(&a);
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!(l[0].0, Level::Info, "{l:?}");
    assert!(
        l[0].1.contains("was killed by SIGKILL (by corral)"),
        "{l:?}"
    );
    assert_eq!(spawns(&a).len(), 1);
    assert_eq!(core.slots[0].failures, 0);
}

#[test]
fn a_probing_worker_whose_channel_closes_fails_its_boot_whichever_comes_first() {
    for channel_first in [true, false] {
        let t0 = Instant::now();
        let (mut core, s) = booted_probing(probed(1, 1), t0);
        let t = t0 + Duration::from_millis(50);
        if channel_first {
            closed(&mut core, t, s[0]);
            assert_eq!(core.workers[&s[0]].state, State::Probing);
            assert!(core.next_deadline().is_some());
        }
        let a = core.exited(t, s[0], Exit::Signal(libc::SIGSEGV));
        assert_eq!(core.boot_failures, 1, "channel first: {channel_first}");
        assert!(spawns(&a).is_empty());
        assert_eq!(core.slots[0].failures, 1);
    }
}

#[test]
fn a_slot_whose_worker_died_young_is_not_a_slot_that_cannot_boot() {
    let (core, _, restarted) = death(
        Duration::from_millis(300),
        Exit::Signal(libc::SIGABRT),
        true,
    );
    assert!(!restarted);
    let t = Instant::now() + Duration::from_millis(300);
    // A request waits for its restart (100 ms off) as after any death...
    assert!(core.starting(t));
    // ... and nothing booted is not what the cold-start rollback sees.
    let view = crate::supervisor::policy::View::of(&core, t);
    assert!(!view.every_slot_failed);
    // A boot that fails is both.
    let t0 = Instant::now();
    let (mut core, serial) = spawned_one(settings(1), t0);
    core.exited(t0, serial, Exit::Code(1));
    assert!(!core.starting(t0));
    assert!(crate::supervisor::policy::View::of(&core, t0).every_slot_failed);
}
