//! Canary reloads: the figures each generation earns while both serve, and
//! the rule that judges them. [`Tally`] counts requests, 5xx answers and
//! latencies without locking (the front adds to it per request), and keeps
//! when each request not answered yet was sent (a lock held only to add or
//! take one); [`Tally::sample`] takes a plain copy, and [`judge`] (pure)
//! says whether the new generation passes, fails or needs more time.
//!
//! The rule (`[deploy] canary_*`, and the README's "Canary reloads"):
//! - errors: once the new generation has `min_requests` requests, it fails
//!   at once when its share of 5xx answers (502/504 from crashed or
//!   timed-out workers included) is higher than the old one's and Fisher's
//!   exact test, one-sided, puts the chance of a difference at least that
//!   large between equally good generations below `1 - confidence`;
//! - latency: at the window's end, with `min_requests` on both sides, it
//!   fails when its p99 is more than `latency_ratio` times the old one's and
//!   more than `latency_floor` above it;
//! - at the window's end it passes with `min_requests` requests and no
//!   failure; with fewer the window is extended once by its length, and
//!   then it fails for too little traffic: never promoted on no evidence;
//! - requests not yet answered count too ([`Sample::counted`]): each with
//!   its age so far as its latency, and one unanswered for longer than
//!   [`hung_after`] (the latency the rule calls worse, at least
//!   [`HUNG_FLOOR`]) as a 5xx. The new generation never passes while it
//!   holds such a request: the window waits for it, and fails at the
//!   extension's end if one is still unanswered. A generation whose
//!   requests hang never answers them, so without this it looked clean.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Latency buckets: bucket `i` holds times up to `FIRST_US * GROWTH^i`
/// microseconds (100 us up to about 3 minutes); the last takes the rest.
const BUCKETS: usize = 80;
const FIRST_US: f64 = 100.0;
const GROWTH: f64 = 1.2;

/// A request unanswered for at least this long counts as a 5xx even when
/// the latency the rule calls worse is shorter: a pause of a few hundred
/// ms (a garbage collection, a cache filled) holds every request in
/// flight on a worker at once, and these would all count together.
pub const HUNG_FLOOR: Duration = Duration::from_secs(1);

/// Live counters of one generation during a canary.
pub struct Tally {
    requests: AtomicU64,
    errors: AtomicU64,
    latency: [AtomicU64; BUCKETS],
    /// When each request sent to this side and not yet answered was sent
    /// (the front adds one per request during a canary, and takes it away
    /// at its response head, or when the request ends without one).
    pending: Mutex<Pending>,
}

/// Requests not yet answered: their start, in slots reused once free.
#[derive(Default)]
struct Pending {
    started: Vec<Option<Instant>>,
    free: Vec<usize>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            pending: Mutex::new(Pending::default()),
        }
    }
}

impl Tally {
    /// One answered request: its status and time to the response head.
    pub fn record(&self, status: u16, elapsed: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency[bucket(elapsed)].fetch_add(1, Ordering::Relaxed);
    }

    /// A request sent to this side at `since`, not answered yet: it counts
    /// as outstanding until [`Tally::answered`] with the slot returned.
    pub fn sent(&self, since: Instant) -> usize {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match p.free.pop() {
            Some(slot) => {
                p.started[slot] = Some(since);
                slot
            }
            None => {
                p.started.push(Some(since));
                p.started.len() - 1
            }
        }
    }

    /// The request of `slot` (from [`Tally::sent`]) got its answer or ended.
    pub fn answered(&self, slot: usize) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(started @ Some(_)) = p.started.get_mut(slot) {
            *started = None;
            p.free.push(slot);
        }
    }

    pub fn sample(&self) -> Sample {
        let now = Instant::now();
        let outstanding = {
            let p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.started
                .iter()
                .flatten()
                .map(|t| now.saturating_duration_since(*t))
                .collect()
        };
        Sample {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            latency: self
                .latency
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            outstanding,
            ..Sample::default()
        }
    }
}

fn bucket(elapsed: Duration) -> usize {
    let us = elapsed.as_secs_f64() * 1e6;
    if us <= FIRST_US {
        return 0;
    }
    let i = (us / FIRST_US).ln() / GROWTH.ln();
    (i.ceil() as usize).min(BUCKETS - 1)
}

/// A generation's figures at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub requests: u64,
    /// Answers with a 5xx status.
    pub errors: u64,
    /// Requests per latency bucket.
    pub latency: Vec<u64>,
    /// The age of each request sent and not answered yet; empty once
    /// [`Sample::counted`] took them in.
    pub outstanding: Vec<Duration>,
    /// Once counted: how many of `requests` and `errors` were unanswered
    /// for longer than the bound, and the oldest of them.
    pub hung: u64,
    pub oldest: Duration,
}

/// How long a request may go unanswered before it counts as a 5xx: the
/// latency the rule calls worse than the old generation's p99 (more than
/// `latency_ratio` times it and more than `latency_floor` above it), and
/// at least [`HUNG_FLOOR`].
pub fn hung_after(t: &Thresholds, old: &Sample) -> Duration {
    let was = old.quantile(0.99);
    was.mul_f64(t.latency_ratio.max(1.0))
        .max(was + t.latency_floor)
        .max(HUNG_FLOOR)
}

/// Both generations' figures with their unanswered requests counted in
/// ([`Sample::counted`]), against one bound taken from the old
/// generation's answers.
pub fn counted(t: &Thresholds, old: &Sample, new: &Sample) -> (Sample, Sample) {
    let bound = hung_after(t, old);
    (old.counted(bound), new.counted(bound))
}

impl Sample {
    /// The figures with each unanswered request counted as a request whose
    /// latency is its age so far, and as a 5xx once older than `bound`.
    pub fn counted(&self, bound: Duration) -> Sample {
        let mut s = self.clone();
        s.outstanding.clear();
        if s.latency.len() < BUCKETS {
            s.latency.resize(BUCKETS, 0);
        }
        for &age in &self.outstanding {
            s.requests += 1;
            s.latency[bucket(age)] += 1;
            if age > bound {
                s.errors += 1;
                s.hung += 1;
                s.oldest = s.oldest.max(age);
            }
        }
        s
    }

    /// " (N of them unanswered after B ms, the oldest for S s)", or nothing.
    fn hung_note(&self, bound: Duration) -> String {
        if self.hung == 0 {
            return String::new();
        }
        format!(
            " ({} of them unanswered after {} ms, the oldest for {:.1} s)",
            self.hung,
            bound.as_millis(),
            self.oldest.as_secs_f64()
        )
    }

    /// The share of 5xx answers (0 without requests).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// The `q` quantile of the latency (the upper bound of its bucket, so
    /// at most 20% high); zero without requests.
    pub fn quantile(&self, q: f64) -> Duration {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Duration::from_secs_f64(FIRST_US * GROWTH.powi(i as i32) / 1e6);
            }
        }
        Duration::ZERO
    }

    /// A sample with `requests` requests, `errors` of them 5xx, all
    /// answered in `each`.
    #[cfg(test)]
    pub fn of(requests: u64, errors: u64, each: Duration) -> Sample {
        let mut latency = vec![0; BUCKETS];
        latency[bucket(each)] = requests;
        Sample {
            requests,
            errors,
            latency,
            ..Sample::default()
        }
    }

    /// This sample with requests unanswered for these ages.
    #[cfg(test)]
    pub fn waiting(mut self, ages: &[Duration]) -> Sample {
        self.outstanding.extend_from_slice(ages);
        self
    }
}

/// The rule's thresholds (`[deploy] canary_*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// How long the canary runs before it may pass.
    pub duration: Duration,
    /// Canary requests needed for any verdict but "too little traffic".
    pub min_requests: u64,
    /// How sure the error test must be that the new generation is worse.
    pub confidence: f64,
    pub latency_ratio: f64,
    pub latency_floor: Duration,
}

impl Thresholds {
    /// The defaults of `[deploy] canary_*`.
    pub const DEFAULT: Thresholds = Thresholds {
        duration: Duration::from_secs(60),
        min_requests: 100,
        confidence: 0.999,
        latency_ratio: 2.0,
        latency_floor: Duration::from_millis(50),
    };
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not decided yet.
    Wait,
    Pass,
    Fail(String),
}

/// Judges the new generation against the old on what each has served and
/// holds unanswered; `elapsed` is the time since the canary's first worker
/// entered service.
pub fn judge(t: &Thresholds, old: &Sample, new: &Sample, elapsed: Duration) -> Verdict {
    let bound = hung_after(t, old);
    let (old, new) = (&old.counted(bound), &new.counted(bound));
    let enough = new.requests >= t.min_requests.max(1);
    if enough && new.error_rate() > old.error_rate() {
        let p = fisher_greater(new.errors, new.requests, old.errors, old.requests);
        if p < 1.0 - t.confidence {
            let what = if new.hung > 0 {
                "5xx or no answer"
            } else {
                "5xx"
            };
            return Verdict::Fail(format!(
                "{what} on {:.1}% of {} requests{} against {:.1}% of {} on the old generation \
                 (one-sided Fisher test: p = {p:.2e}, below {:.2e})",
                100.0 * new.error_rate(),
                new.requests,
                new.hung_note(bound),
                100.0 * old.error_rate(),
                old.requests,
                1.0 - t.confidence
            ));
        }
    }
    if elapsed < t.duration {
        return Verdict::Wait;
    }
    if enough && old.requests >= t.min_requests.max(1) {
        let (was, is) = (old.quantile(0.99), new.quantile(0.99));
        if is.as_secs_f64() > t.latency_ratio * was.as_secs_f64()
            && is.saturating_sub(was) > t.latency_floor
        {
            return Verdict::Fail(format!(
                "p99 latency {} ms{} against {} ms on the old generation (more than {} times, \
                 and more than {} ms above)",
                is.as_millis(),
                new.hung_note(bound),
                was.as_millis(),
                t.latency_ratio,
                t.latency_floor.as_millis()
            ));
        }
    }
    // Never promoted while requests on it hang: the window waits for
    // them to be answered (or to time out, a 504) until the extension's
    // end.
    if enough && new.hung == 0 {
        return Verdict::Pass;
    }
    if elapsed < t.duration * 2 {
        return Verdict::Wait;
    }
    if enough {
        return Verdict::Fail(format!(
            "{} of {} requests still unanswered after {} ms at the window's end, the oldest \
             for {:.1} s",
            new.hung,
            new.requests,
            bound.as_millis(),
            new.oldest.as_secs_f64()
        ));
    }
    Verdict::Fail(format!(
        "too little traffic: {} requests reached the new generation in {} s, fewer than \
         canary_min_requests ({}); nothing shows it is good",
        new.requests,
        elapsed.as_secs(),
        t.min_requests
    ))
}

/// The one-sided p-value of Fisher's exact test: the chance, were both
/// generations equally good, that the new one would get `e_new` or more of
/// all the errors, given the requests each served.
pub fn fisher_greater(e_new: u64, n_new: u64, e_old: u64, n_old: u64) -> f64 {
    let (total, errors) = (n_new + n_old, e_new + e_old);
    let ln_choose = |n: u64, k: u64| ln_fact(n) - ln_fact(k) - ln_fact(n - k);
    let ln_all = ln_choose(total, n_new);
    let last = errors.min(n_new);
    let mut p = 0.0;
    for k in e_new..=last {
        if n_new - k > total - errors {
            continue;
        }
        let term = (ln_choose(errors, k) + ln_choose(total - errors, n_new - k) - ln_all).exp();
        p += term;
        // Past the mode the terms only shrink: stop when they no longer count.
        if term < p * 1e-12 {
            break;
        }
    }
    p.min(1.0)
}

/// ln(n!): exact below 64, Stirling's series above (error below 1e-12).
fn ln_fact(n: u64) -> f64 {
    if n < 64 {
        return (2..=n).map(|i| (i as f64).ln()).sum();
    }
    let n = n as f64;
    n * n.ln() - n + 0.5 * (2.0 * std::f64::consts::PI * n).ln() + 1.0 / (12.0 * n)
        - 1.0 / (360.0 * n * n * n)
}

/// The side-by-side table `corral reload --wait` prints for a canary.
pub fn table(old_generation: u64, new_generation: u64, old: &Sample, new: &Sample) -> String {
    let row = |name: String, s: &Sample| {
        format!(
            "{name:<16} {:>9} {:>7} {:>7.2}% {:>8} {:>8}\n",
            s.requests,
            s.errors,
            100.0 * s.error_rate(),
            s.quantile(0.5).as_millis(),
            s.quantile(0.99).as_millis()
        )
    };
    let mut out = format!(
        "{:<16} {:>9} {:>7} {:>8} {:>8} {:>8}\n{}{}",
        "",
        "requests",
        "5xx",
        "5xx %",
        "p50 ms",
        "p99 ms",
        row(format!("old (gen {old_generation})"), old),
        row(format!("new (gen {new_generation})"), new)
    );
    // Requests that hung are in the counts above as 5xx; say which.
    for (name, generation, s) in [("old", old_generation, old), ("new", new_generation, new)] {
        if s.hung > 0 {
            out.push_str(&format!(
                "{name} (gen {generation}): {} of the 5xx are requests unanswered, the oldest for {:.1} s\n",
                s.hung,
                s.oldest.as_secs_f64()
            ));
        }
    }
    out
}

impl Sample {
    /// For `/status`: requests answered, 5xx, the p50 and p99 in ms, and
    /// the requests not answered yet and the age of the oldest.
    pub fn json(&self) -> serde_json::Value {
        let oldest = self.outstanding.iter().max().copied().unwrap_or_default();
        serde_json::json!({
            "requests": self.requests,
            "errors_5xx": self.errors,
            "p50_ms": self.quantile(0.5).as_secs_f64() * 1e3,
            "p99_ms": self.quantile(0.99).as_secs_f64() * 1e3,
            "in_flight": self.outstanding.len(),
            "oldest_in_flight_ms": oldest.as_secs_f64() * 1e3,
        })
    }
}

/// The figures for the rollback hook's environment.
pub fn env(old: &Sample, new: &Sample) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (side, s) in [("OLD", old), ("NEW", new)] {
        let key = |what: &str| format!("CORRAL_CANARY_{side}_{what}");
        out.push((key("REQUESTS"), s.requests.to_string()));
        out.push((key("ERRORS"), s.errors.to_string()));
        out.push((key("P50_MS"), s.quantile(0.5).as_millis().to_string()));
        out.push((key("P99_MS"), s.quantile(0.99).as_millis().to_string()));
        out.push((key("UNANSWERED"), s.hung.to_string()));
    }
    out
}

#[cfg(test)]
mod tests;
