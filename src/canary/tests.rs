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
