//! The deploy policy's rules, one view of the worker table at a time.

use std::time::{Duration, Instant};

use super::*;

fn settings(hook: bool, builtin_rollback: bool) -> PolicySettings {
    PolicySettings {
        exit_on_boot_failure: false,
        builtin_rollback,
        hook,
        canary: None,
    }
}

/// Generation `generation` with `active` slots, all in service.
fn serving(generation: u64, active: usize) -> View {
    View {
        generation,
        reloading: false,
        active,
        in_service: active,
        in_service_of_generation: active,
        running: true,
        every_slot_failed: false,
        first_error: None,
        last_reload: None,
        now: Instant::now(),
        canary: None,
        samples: None,
        parent_serves: false,
    }
}

/// A cold start where every slot failed with `error`.
fn nothing_boots(error: &str) -> View {
    View {
        in_service: 0,
        in_service_of_generation: 0,
        every_slot_failed: true,
        first_error: Some(error.into()),
        ..serving(1, 2)
    }
}

fn failed(generation: u64, reason: &str) -> Option<ReloadOutcome> {
    Some(ReloadOutcome::Failed {
        generation,
        at: Instant::now(),
        reason: reason.into(),
        detail: Some(format!("Traceback\n{reason}")),
    })
}

#[test]
fn a_generation_is_recorded_good_once_when_every_active_slot_is_in_service() {
    let mut p = Policy::new(settings(true, true));
    let partly = View {
        in_service: 1,
        in_service_of_generation: 1,
        ..serving(1, 2)
    };
    assert_eq!(p.step(&partly), vec![]);
    assert_eq!(p.recorded_good(), 0);
    assert_eq!(p.step(&serving(1, 2)), vec![Decision::Good(1)]);
    assert_eq!(p.step(&serving(1, 2)), vec![], "recorded once");
    // While generation 2 starts beside 1, nothing new is good.
    let reloading = View {
        reloading: true,
        ..serving(1, 2)
    };
    assert_eq!(p.step(&reloading), vec![]);
    assert_eq!(p.step(&serving(2, 2)), vec![Decision::Good(2)]);
    assert_eq!(p.recorded_good(), 2);
}

#[test]
fn a_failed_reload_runs_the_rollback_once_per_failed_generation() {
    let mut p = Policy::new(settings(true, false));
    p.step(&serving(1, 2));
    let v = View {
        last_reload: failed(2, "ImportError: x"),
        ..serving(1, 2)
    };
    assert_eq!(
        p.step(&v),
        vec![
            Decision::ReloadFailed {
                generation: 2,
                reason: "ImportError: x".into(),
            },
            Decision::Rollback {
                generation: 2,
                reason: "ImportError: x".into(),
                detail: Some("Traceback\nImportError: x".into()),
                builtin: false,
            }
        ]
    );
    assert_eq!(p.step(&v), vec![], "once for generation 2");
    let v = View {
        last_reload: failed(3, "SyntaxError"),
        ..serving(1, 2)
    };
    assert_eq!(p.step(&v).len(), 2, "again for generation 3");
}

#[test]
fn a_reload_a_stop_cancelled_is_neither_reported_nor_rolled_back() {
    let mut p = Policy::new(settings(true, true));
    p.step(&serving(1, 2));
    let v = View {
        running: false,
        last_reload: Some(ReloadOutcome::Cancelled {
            generation: 2,
            at: Instant::now(),
            reason: "corral is stopping".into(),
        }),
        ..serving(1, 2)
    };
    assert_eq!(p.step(&v), vec![]);
    assert_eq!(p.step(&v), vec![]);
    assert_eq!(p.recorded_good(), 1, "the last good generation stays");
}

#[test]
fn without_a_hook_or_a_builtin_rollback_a_failure_is_only_reported() {
    let mut p = Policy::new(settings(false, false));
    p.step(&serving(1, 1));
    let v = View {
        last_reload: failed(2, "boom"),
        ..serving(1, 1)
    };
    let reported = Decision::ReloadFailed {
        generation: 2,
        reason: "boom".into(),
    };
    assert_eq!(p.step(&v), vec![reported]);
    assert_eq!(p.step(&v), vec![], "once");
}

#[test]
fn the_code_a_rollback_restored_is_not_rolled_back_again() {
    let mut p = Policy::new(settings(true, true));
    p.step(&serving(1, 1));
    let first = View {
        last_reload: failed(2, "broken"),
        ..serving(1, 1)
    };
    assert!(matches!(
        p.step(&first).as_slice(),
        [
            Decision::ReloadFailed { generation: 2, .. },
            Decision::Rollback { builtin: true, .. }
        ]
    ));
    // The built-in rollback restored the good code as generation 3; it fails too.
    p.rolled_back(3);
    let again = View {
        last_reload: failed(3, "still broken"),
        ..serving(1, 1)
    };
    assert_eq!(
        p.step(&again),
        vec![
            Decision::ReloadFailed {
                generation: 3,
                reason: "still broken".into(),
            },
            Decision::NoSecondRollback,
            Decision::Rollback {
                generation: 3,
                reason: "still broken".into(),
                detail: Some("Traceback\nstill broken".into()),
                builtin: false,
            }
        ],
        "the hook still hears of it; the built-in rollback does not run"
    );
    // Without a hook there is nothing left to run.
    let mut p = Policy::new(settings(false, true));
    p.step(&serving(1, 1));
    p.rolled_back(3);
    assert!(matches!(
        p.step(&again).as_slice(),
        [Decision::ReloadFailed { .. }, Decision::NoSecondRollback]
    ));
}

#[test]
fn a_cold_start_where_nothing_boots_runs_the_rollback_once_with_the_last_error_line() {
    let mut p = Policy::new(settings(true, false));
    let v = nothing_boots("Traceback (most recent call last):\n  ...\nKeyError: 'DATABASE_URL'\n");
    assert_eq!(
        p.step(&v),
        vec![Decision::Rollback {
            generation: 1,
            reason: "no worker of generation 1 could boot: KeyError: 'DATABASE_URL'".into(),
            detail: v.first_error.clone(),
            builtin: false,
        }]
    );
    assert_eq!(p.step(&v), vec![], "once");
}

#[test]
fn the_cold_start_rollback_waits_for_every_slot_and_never_follows_a_good_generation() {
    let mut p = Policy::new(settings(true, true));
    let one_left = View {
        every_slot_failed: false,
        ..nothing_boots("E")
    };
    assert_eq!(p.step(&one_left), vec![]);
    let stopping = View {
        running: false,
        ..nothing_boots("E")
    };
    assert_eq!(p.step(&stopping), vec![], "not while stopping");
    let mut p = Policy::new(settings(true, true));
    p.step(&serving(1, 2));
    assert_eq!(
        p.step(&nothing_boots("E")),
        vec![],
        "generation 1 served once: a crash loop later is no cold start"
    );
}

#[test]
fn a_new_corral_of_a_usr2_runs_no_rollback_while_the_old_one_serves() {
    // The old corral serves good code: the new one's failure (its
    // binary, its user, code changed on disk) is not rolled back, neither
    // by the hook nor by git-reset.
    let beside = View {
        parent_serves: true,
        ..nothing_boots("E")
    };
    let mut p = Policy::new(settings(true, true));
    assert_eq!(p.step(&beside), vec![Decision::NoRollbackBesideParent]);
    assert_eq!(p.step(&beside), vec![], "said once");
    let mut p = Policy::new(settings(false, false));
    assert_eq!(p.step(&beside), vec![], "nothing to hold back");
    // exit_on_boot_failure still exits: the old corral serves on.
    let mut p = Policy::new(PolicySettings {
        exit_on_boot_failure: true,
        ..settings(true, true)
    });
    assert_eq!(p.step(&beside), vec![Decision::ExitBootFailure]);
}

#[test]
fn exit_on_boot_failure_exits_at_a_cold_start_instead_of_rolling_back() {
    let mut p = Policy::new(PolicySettings {
        exit_on_boot_failure: true,
        ..settings(true, true)
    });
    assert_eq!(p.step(&nothing_boots("E")), vec![Decision::ExitBootFailure]);
    // A failed reload later is not a boot failure of the service.
    let mut p = Policy::new(PolicySettings {
        exit_on_boot_failure: true,
        ..settings(true, false)
    });
    p.step(&serving(1, 1));
    let v = View {
        last_reload: failed(2, "broken"),
        ..serving(1, 1)
    };
    assert!(matches!(
        p.step(&v).as_slice(),
        [Decision::ReloadFailed { .. }, Decision::Rollback { .. }]
    ));
}

fn canary_rules() -> PolicySettings {
    PolicySettings {
        canary: Some(Thresholds {
            duration: Duration::from_secs(60),
            min_requests: 100,
            confidence: 0.999,
            latency_ratio: 2.0,
            latency_floor: Duration::from_millis(50),
        }),
        ..settings(true, false)
    }
}

/// Generation 1 serves; generation 2's canary runs with `serving` of its
/// workers in service, at `now`, with these figures (old, new).
fn canary_at(now: Instant, serving_new: usize, old: u64, new: (u64, u64)) -> View {
    let ms = Duration::from_millis(5);
    View {
        reloading: true,
        now,
        canary: Some((2, serving_new, None)),
        samples: Some((Sample::of(old, 0, ms), Sample::of(new.0, new.1, ms))),
        ..serving(1, 2)
    }
}

fn verdicts(d: &[Decision]) -> Vec<Result<(), String>> {
    d.iter()
        .filter_map(|d| match d {
            Decision::Canary { verdict, .. } => Some(verdict.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_canary_window_starts_when_its_first_worker_is_in_service() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut p = Policy::new(canary_rules());
    p.step(&serving(1, 2));
    // Booting for a long time: no window yet, no verdict.
    assert_eq!(verdicts(&p.step(&canary_at(t0, 0, 0, (0, 0)))), vec![]);
    assert_eq!(
        verdicts(&p.step(&canary_at(t0 + s(100), 0, 0, (0, 0)))),
        vec![]
    );
    // In service at 100 s: the window runs to 160 s.
    let started = t0 + s(100);
    assert_eq!(verdicts(&p.step(&canary_at(started, 1, 0, (0, 0)))), vec![]);
    assert_eq!(
        verdicts(&p.step(&canary_at(started + s(59), 1, 900, (100, 0)))),
        vec![]
    );
    assert_eq!(
        verdicts(&p.step(&canary_at(started + s(60), 1, 900, (100, 0)))),
        vec![Ok(())]
    );
}

#[test]
fn a_canary_fails_early_on_errors_and_never_passes_on_no_evidence() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut p = Policy::new(canary_rules());
    p.step(&serving(1, 2));
    p.step(&canary_at(t0, 1, 0, (0, 0)));
    let got = verdicts(&p.step(&canary_at(t0 + s(5), 1, 900, (100, 25))));
    assert!(
        matches!(&got[..], [Err(why)] if why.starts_with("5xx on 25.0%")),
        "{got:?}"
    );

    // Another reload, generation 3, with almost no traffic.
    let quiet = |at: Instant| View {
        canary: Some((3, 2, None)),
        ..canary_at(at, 2, 40, (4, 0))
    };
    let mut p = Policy::new(canary_rules());
    p.step(&serving(1, 2));
    p.step(&quiet(t0));
    assert_eq!(verdicts(&p.step(&quiet(t0 + s(60)))), vec![], "extended");
    let got = verdicts(&p.step(&quiet(t0 + s(120))));
    assert!(
        matches!(&got[..], [Err(why)] if why.starts_with("too little traffic")),
        "{got:?}"
    );
}
