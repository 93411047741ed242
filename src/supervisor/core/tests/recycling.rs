//! Recycling: `max_requests` (with jitter), `max_memory` and
//! `max_lifetime` (with jitter), the
//! replacement in service before the old worker drains.

use super::*;

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
    assert_eq!(core.recycles, [1, 0, 0], "one recycle, for max_requests");
}

#[test]
fn a_spawned_worker_tells_its_channel_its_limit_so_that_reaching_it_is_heard_at_once() {
    let t0 = Instant::now();
    let mut core = Core::new(recycling(1, 100, 10));
    let serial = spawns(&core.start())[0].1;
    let a = core.spawned(t0, serial, 100);
    let requests = core.workers[&serial].recycle_after.unwrap();
    assert!(a.contains(&Action::RecycleAfter { serial, requests }));
    let mut core = Core::new(settings(1));
    let serial = spawns(&core.start())[0].1;
    let a = core.spawned(t0, serial, 100);
    assert!(
        !a.iter().any(|a| matches!(a, Action::RecycleAfter { .. })),
        "no limit, nothing to tell"
    );
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

#[test]
fn max_lifetime_recycles_a_worker_past_its_age_with_the_ages_spread() {
    let t0 = Instant::now();
    let hour = Duration::from_secs(3600);
    let mut core = Core::new(Settings {
        max_lifetime: Some(hour),
        ..settings(8)
    });
    let started = spawns(&core.start());
    for (slot, serial) in &started {
        core.spawned(t0, *serial, 100 + *slot as u32);
        core.booted(t0, *serial, 1.0);
    }
    let ages: Vec<Duration> = started
        .iter()
        .map(|(_, s)| core.workers[s].retire_at.unwrap() - t0)
        .collect();
    assert!(
        ages.iter().all(|a| (hour..=hour + hour / 10).contains(a)),
        "{ages:?}"
    );
    let mut distinct = ages.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() > 4, "not spread: {ages:?}");
    // Younger than its age: nothing; past it: its replacement starts.
    let (slot, serial) = started[0];
    let usage = Event::Usage {
        serial,
        requests: 3,
        rss: None,
    };
    let before = t0 + ages[0] - Duration::from_millis(1);
    assert!(spawns(&core.on_event(before, usage.clone())).is_empty());
    let a = core.on_event(t0 + ages[0], usage);
    assert_eq!(spawns(&a), vec![(slot, spawns(&a)[0].1)]);
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::Log(_, m) if m.contains("max_lifetime 3600s"))),
        "{a:?}"
    );
}
