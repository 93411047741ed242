//! The last few minutes of traffic, second by second, for the status page's
//! charts: a ring of [`SECONDS`] per-second counters (requests, 5xx
//! answers, and the latency histogram's buckets), about 11 KiB per front
//! shard, written with atomics on the request path (no lock, no
//! allocation).
//!
//! A slot is reused when its second comes round again: the first request
//! of a new second claims it and zeroes it. A request that races that
//! claim at a second's boundary may be counted in the old second or lost;
//! the charts are a picture, not an account (`/metrics` is the account).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Upper bounds (seconds) of the latency buckets, shared with `/metrics`'
/// histogram (`corral_request_duration_seconds`).
pub const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// How many seconds the ring holds.
pub const SECONDS: usize = 180;

struct Second {
    /// Which second (since `History::epoch`, plus one) the counts are of;
    /// 0: never used.
    stamp: AtomicU64,
    requests: AtomicU32,
    errors: AtomicU32,
    /// Counts per latency bucket (not cumulative); the last one is +Inf.
    buckets: [AtomicU32; BUCKETS.len() + 1],
}

/// One ring per front shard (`crate::shards`): a shard's thread counts in
/// its own, and [`History::recent`] adds them up.
pub struct History {
    epoch: Instant,
    rings: Box<[Box<[Second]>]>,
}

impl Default for History {
    fn default() -> Self {
        History::new(1)
    }
}

/// One second of [`History::recent`].
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct SecondStats {
    pub requests: u32,
    /// Answers with a 5xx status.
    pub errors: u32,
    /// Latency percentiles in milliseconds (the upper bound of the bucket
    /// the percentile falls in; `None` without requests, and above the
    /// last bucket the last bound is given).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl History {
    /// Rings for `shards` front shards.
    pub fn new(shards: usize) -> History {
        let ring = || {
            (0..SECONDS)
                .map(|_| Second {
                    stamp: AtomicU64::new(0),
                    requests: AtomicU32::new(0),
                    errors: AtomicU32::new(0),
                    buckets: Default::default(),
                })
                .collect()
        };
        History {
            epoch: Instant::now(),
            rings: (0..shards.max(1)).map(|_| ring()).collect(),
        }
    }

    fn second(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_secs() + 1
    }

    /// Counts one request answered at `at` (now, read once by the caller):
    /// `bucket` is its latency bucket (an index into [`BUCKETS`], or its
    /// length for +Inf).
    pub fn record_at(&self, at: Instant, status: u16, bucket: usize) {
        let now = self.second(at);
        let ring = &self.rings[crate::shards::current() % self.rings.len()];
        let slot = &ring[(now % SECONDS as u64) as usize];
        let seen = slot.stamp.load(Ordering::Relaxed);
        if seen != now
            && slot
                .stamp
                .compare_exchange(seen, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            slot.requests.store(0, Ordering::Relaxed);
            slot.errors.store(0, Ordering::Relaxed);
            for b in &slot.buckets {
                b.store(0, Ordering::Relaxed);
            }
        }
        slot.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            slot.errors.fetch_add(1, Ordering::Relaxed);
        }
        slot.buckets[bucket.min(BUCKETS.len())].fetch_add(1, Ordering::Relaxed);
    }

    /// The last `n` whole seconds (at most [`SECONDS`] − 1), oldest first;
    /// the current second, still counting, is left out.
    pub fn recent(&self, n: usize) -> Vec<SecondStats> {
        self.recent_at(Instant::now(), n)
    }

    fn recent_at(&self, at: Instant, n: usize) -> Vec<SecondStats> {
        let now = self.second(at);
        let n = n.min(SECONDS - 1) as u64;
        (now.saturating_sub(n)..now)
            .map(|s| {
                let mut requests = 0u32;
                let mut errors = 0u32;
                let mut counts = [0u32; BUCKETS.len() + 1];
                for ring in &self.rings {
                    let slot = &ring[(s % SECONDS as u64) as usize];
                    if s == 0 || slot.stamp.load(Ordering::Relaxed) != s {
                        continue;
                    }
                    requests = requests.wrapping_add(slot.requests.load(Ordering::Relaxed));
                    errors = errors.wrapping_add(slot.errors.load(Ordering::Relaxed));
                    for (c, b) in counts.iter_mut().zip(&slot.buckets) {
                        *c = c.wrapping_add(b.load(Ordering::Relaxed));
                    }
                }
                SecondStats {
                    requests,
                    errors,
                    p50_ms: percentile(&counts, 0.50),
                    p99_ms: percentile(&counts, 0.99),
                }
            })
            .collect()
    }
}

/// The upper bound (ms) of the bucket where the `q` quantile of `counts`
/// falls; the last finite bound for the +Inf bucket.
fn percentile(counts: &[u32], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, &c) in counts.iter().enumerate() {
        seen += u64::from(c);
        if seen >= rank {
            let bound = BUCKETS
                .get(i)
                .copied()
                .unwrap_or(BUCKETS[BUCKETS.len() - 1]);
            return Some(Duration::from_secs_f64(bound).as_secs_f64() * 1000.0);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket_of(ms: f64) -> usize {
        BUCKETS
            .iter()
            .position(|b| ms / 1000.0 <= *b)
            .unwrap_or(BUCKETS.len())
    }

    #[test]
    fn seconds_are_counted_apart_and_old_ones_fall_out() {
        let h = History::default();
        let t0 = h.epoch;
        // A fake clock: seconds after the ring's epoch.
        let at = |secs: u64| t0 + Duration::from_millis(secs * 1000 + 500);
        let record_at =
            |secs: u64, status: u16, ms: f64| h.record_at(at(secs), status, bucket_of(ms));
        for _ in 0..98 {
            record_at(3, 200, 2.0);
        }
        record_at(3, 502, 40.0);
        record_at(3, 200, 400.0);
        record_at(5, 200, 0.3);
        let recent = h.recent_at(at(6), 4);
        assert_eq!(recent.len(), 4, "seconds 2..=5");
        assert_eq!(recent[0], SecondStats::default());
        assert_eq!(
            recent[1],
            SecondStats {
                requests: 100,
                errors: 1,
                p50_ms: Some(2.5),
                p99_ms: Some(50.0)
            }
        );
        assert_eq!(recent[2].requests, 0);
        assert_eq!(recent[3].p99_ms, Some(0.5));
        // A lap later, second 3's slot holds another second: not reported
        // as second 3 + SECONDS's.
        let later = h.recent_at(at(3 + SECONDS as u64 + 1), 1);
        assert_eq!(later, vec![SecondStats::default()]);
    }

    #[test]
    fn percentiles_fall_back_to_the_last_bound() {
        assert_eq!(percentile(&[0, 0, 0], 0.5), None);
        let mut counts = [0; BUCKETS.len() + 1];
        counts[BUCKETS.len()] = 1;
        assert_eq!(percentile(&counts, 0.99), Some(5000.0));
    }
}
