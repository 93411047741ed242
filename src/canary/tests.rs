use super::*;

const MS: Duration = Duration::from_millis(1);

fn rules() -> Thresholds {
    Thresholds {
        duration: Duration::from_secs(60),
        min_requests: 100,
        confidence: 0.999,
        latency_ratio: 2.0,
        latency_floor: 50 * MS,
    }
}

#[test]
fn fisher_matches_the_hypergeometric_tail_by_hand() {
    // 3 errors of 50 against 0 of 450: C(50,3)/C(500,3).
    let p = fisher_greater(3, 50, 0, 450);
    let exact = (50.0 * 49.0 * 48.0) / (500.0 * 499.0 * 498.0);
    assert!((p - exact).abs() < 1e-9, "{p} vs {exact}");
    // 1 error of 50 against 0 of 450: 50/500.
    assert!((fisher_greater(1, 50, 0, 450) - 0.1).abs() < 1e-9);
    // Nothing worse than the old: certain.
    assert!((fisher_greater(0, 50, 0, 450) - 1.0).abs() < 1e-9);
    // Large counts stay finite and tiny when the gap is real.
    let p = fisher_greater(2_000, 10_000, 1_000, 90_000);
    assert!((0.0..1e-100).contains(&p), "{p}");
}

#[test]
fn verdicts_on_tables_of_counts() {
    let fast = 5 * MS;
    let table: &[(&str, Sample, Sample, u64, &str)] = &[
        // (case, old, new, seconds into the window, verdict)
        (
            "no traffic yet",
            Sample::of(0, 0, fast),
            Sample::of(0, 0, fast),
            1,
            "wait",
        ),
        (
            "one error in five, early",
            Sample::of(900, 0, fast),
            Sample::of(100, 20, fast),
            3,
            "fail",
        ),
        (
            "errors before min_requests: no verdict yet",
            Sample::of(900, 0, fast),
            Sample::of(99, 20, fast),
            3,
            "wait",
        ),
        (
            "a single 5xx is no evidence",
            Sample::of(900, 0, fast),
            Sample::of(100, 1, fast),
            60,
            "pass",
        ),
        (
            "same error rate as the old",
            Sample::of(9_000, 90, fast),
            Sample::of(1_000, 10, fast),
            60,
            "pass",
        ),
        (
            "clean before the window's end: wait",
            Sample::of(9_000, 0, fast),
            Sample::of(1_000, 0, fast),
            59,
            "wait",
        ),
        (
            "ten times slower",
            Sample::of(9_000, 0, fast),
            Sample::of(1_000, 0, 100 * MS),
            60,
            "fail",
        ),
        (
            "slower only early: latency waits for the end",
            Sample::of(9_000, 0, fast),
            Sample::of(1_000, 0, 100 * MS),
            30,
            "wait",
        ),
        (
            "three times slower but under the floor",
            Sample::of(9_000, 0, MS),
            Sample::of(1_000, 0, 3 * MS),
            60,
            "pass",
        ),
        (
            "too little traffic: the window is extended",
            Sample::of(200, 0, fast),
            Sample::of(20, 0, fast),
            90,
            "wait",
        ),
        (
            "too little traffic after the extension: fail, never promoted",
            Sample::of(200, 0, fast),
            Sample::of(20, 0, fast),
            120,
            "fail",
        ),
        (
            "enough in the extension: pass",
            Sample::of(900, 0, fast),
            Sample::of(100, 0, fast),
            90,
            "pass",
        ),
    ];
    for (case, old, new, secs, want) in table {
        let got = judge(&rules(), old, new, Duration::from_secs(*secs));
        let name = match &got {
            Verdict::Wait => "wait",
            Verdict::Pass => "pass",
            Verdict::Fail(_) => "fail",
        };
        assert_eq!(name, *want, "{case}: {got:?}");
    }
}

#[test]
fn failures_say_why() {
    let got = judge(
        &rules(),
        &Sample::of(200, 0, MS),
        &Sample::of(20, 0, MS),
        Duration::from_secs(120),
    );
    let Verdict::Fail(why) = got else {
        panic!("{got:?}")
    };
    assert!(why.starts_with("too little traffic: 20 requests"), "{why}");
}

#[test]
fn tallies_count_errors_and_latency() {
    let t = Tally::default();
    for i in 0..100 {
        t.record(
            if i < 3 { 502 } else { 200 },
            if i < 98 { 2 * MS } else { 900 * MS },
        );
    }
    let s = t.sample();
    assert_eq!((s.requests, s.errors), (100, 3));
    let p50 = s.quantile(0.5);
    assert!(p50 >= 2 * MS && p50 < 3 * MS, "{p50:?}");
    let p99 = s.quantile(0.99);
    assert!(p99 >= 900 * MS && p99 < 1100 * MS, "{p99:?}");
    let table = table(1, 2, &Sample::default(), &s);
    assert!(table.contains("new (gen 2)"), "{table}");
    assert!(table.contains("3.00%"), "{table}");
}

#[test]
fn unanswered_requests_count_with_their_age_and_as_5xx_past_the_bound() {
    let s = |n| Duration::from_secs(n);
    // The bound: the latency the rule calls worse, at least HUNG_FLOOR.
    assert_eq!(
        hung_after(&rules(), &Sample::of(900, 0, 5 * MS)),
        HUNG_FLOOR
    );
    assert_eq!(hung_after(&rules(), &Sample::default()), HUNG_FLOOR);
    let slow_old = Sample::of(900, 0, 800 * MS);
    let bound = hung_after(&rules(), &slow_old);
    let p99 = slow_old.quantile(0.99);
    assert!(
        (bound.as_secs_f64() - 2.0 * p99.as_secs_f64()).abs() < 1e-6,
        "{bound:?} for a p99 of {p99:?}"
    );

    let new = Sample::of(100, 2, 5 * MS).waiting(&[10 * MS, 300 * MS, s(2), s(7)]);
    let got = new.counted(s(1));
    assert_eq!((got.requests, got.errors, got.hung), (104, 4, 2));
    assert_eq!(got.oldest, s(7));
    assert!(got.outstanding.is_empty());
    // Their ages are latencies: 4 of 104 reach 300 ms and more.
    assert!(got.quantile(0.99) >= s(2), "{:?}", got.quantile(0.99));
    assert!(got.quantile(0.95) < 10 * MS, "{:?}", got.quantile(0.95));
    // Counted once: counting again changes nothing.
    assert_eq!(got.counted(s(1)), got);
}

#[test]
fn verdicts_with_requests_unanswered() {
    let fast = MS;
    let s = |n: u64| Duration::from_secs(n);
    let ages = |n: usize, each: Duration| vec![each; n];
    let table: &[(&str, Sample, Sample, u64, &str)] = &[
        // (case, old, new, seconds into the window, verdict)
        (
            "the black-box repro: 8 requests stuck on a 30% canary for 2 s fail it early",
            Sample::of(15_000, 0, fast),
            Sample::of(6_324, 0, fast).waiting(&ages(8, s(2))),
            5,
            "fail",
        ),
        (
            "workers stopped: requests pile up waiting for them",
            Sample::of(3_000, 0, fast),
            Sample::of(1_000, 0, fast).waiting(&(1..=30).map(|i| i * 300 * MS).collect::<Vec<_>>()),
            8,
            "fail",
        ),
        (
            "healthy under load: the requests in flight at the judgment are young",
            Sample::of(90_000, 0, 20 * MS).waiting(&ages(64, 30 * MS)),
            Sample::of(10_000, 0, 20 * MS).waiting(&ages(16, 30 * MS)),
            60,
            "pass",
        ),
        (
            "a pause of a few hundred ms holding every request in flight is no failure",
            Sample::of(90_000, 0, fast),
            Sample::of(10_000, 0, fast).waiting(&ages(16, 600 * MS)),
            10,
            "wait",
        ),
        (
            "... nor at the window's end",
            Sample::of(90_000, 0, fast),
            Sample::of(10_000, 0, fast).waiting(&ages(16, 600 * MS)),
            60,
            "pass",
        ),
        (
            "one request hung at the window's end: no pass, the window waits",
            Sample::of(9_000, 0, fast),
            Sample::of(1_000, 0, fast).waiting(&[s(5)]),
            60,
            "wait",
        ),
        (
            "still hung at the extension's end: fail",
            Sample::of(9_000, 0, fast),
            Sample::of(1_000, 0, fast).waiting(&[s(5)]),
            120,
            "fail",
        ),
        (
            "a slow old generation: its own slow requests are no hang",
            Sample::of(9_000, 0, 2_000 * MS).waiting(&ages(8, s(3))),
            Sample::of(1_000, 0, 2_000 * MS).waiting(&ages(1, s(3))),
            60,
            "pass",
        ),
        (
            "both generations stuck alike (a database down): no early failure",
            Sample::of(9_000, 0, fast).waiting(&ages(80, s(3))),
            Sample::of(1_000, 0, fast).waiting(&ages(8, s(3))),
            10,
            "wait",
        ),
        (
            "too little traffic still waits for min_requests, unanswered ones included",
            Sample::of(900, 0, fast),
            Sample::of(50, 0, fast).waiting(&ages(10, 10 * MS)),
            10,
            "wait",
        ),
    ];
    for (case, old, new, secs, want) in table {
        let got = judge(&rules(), old, new, Duration::from_secs(*secs));
        let name = match &got {
            Verdict::Wait => "wait",
            Verdict::Pass => "pass",
            Verdict::Fail(_) => "fail",
        };
        assert_eq!(name, *want, "{case}: {got:?}");
    }
}

#[test]
fn a_failure_for_hung_requests_names_them() {
    let old = Sample::of(15_000, 0, MS);
    let new = Sample::of(6_324, 0, MS).waiting(&[Duration::from_secs(7); 8]);
    let got = judge(&rules(), &old, &new, Duration::from_secs(12));
    let Verdict::Fail(why) = got else {
        panic!("{got:?}")
    };
    assert!(
        why.starts_with(
            "5xx or no answer on 0.1% of 6332 requests (8 of them unanswered after 1000 ms, \
             the oldest for 7.0 s) against 0.0% of 15000"
        ),
        "{why}"
    );
    let got = judge(
        &rules(),
        &Sample::of(9_000, 0, MS),
        &Sample::of(1_000, 0, MS).waiting(&[Duration::from_secs(9)]),
        Duration::from_secs(120),
    );
    let Verdict::Fail(why) = got else {
        panic!("{got:?}")
    };
    assert!(
        why.starts_with("1 of 1001 requests still unanswered after 1000 ms at the window's end"),
        "{why}"
    );
    let (old, new) = counted(&rules(), &old, &new);
    let table = table(1, 2, &old, &new);
    assert!(
        table.contains("new (gen 2): 8 of the 5xx are requests unanswered, the oldest for 7.0 s"),
        "{table}"
    );
    assert!(!table.contains("old (gen 1): "), "{table}");
}

#[test]
fn tallies_count_requests_until_they_are_answered() {
    let t = Tally::default();
    let long_ago = Instant::now() - Duration::from_secs(3);
    let a = t.sent(long_ago);
    let b = t.sent(Instant::now());
    let s = t.sample();
    assert_eq!(s.outstanding.len(), 2);
    assert!(
        s.outstanding
            .iter()
            .any(|age| *age >= Duration::from_secs(3))
    );
    assert_eq!(s.json()["in_flight"], 2);
    assert!(s.json()["oldest_in_flight_ms"].as_f64() >= Some(3000.0));
    t.answered(a);
    t.answered(a); // twice: no harm
    let s = t.sample();
    assert_eq!(s.outstanding.len(), 1);
    assert!(s.outstanding[0] < Duration::from_secs(3));
    // A freed slot is reused.
    assert_eq!(t.sent(Instant::now()), a);
    t.answered(a);
    t.answered(b);
    assert!(t.sample().outstanding.is_empty());
}
