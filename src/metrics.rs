//! Request and connection counters kept by the front with atomics (no locks
//! on the request path), rendered with the supervisor's snapshot as
//! Prometheus text.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use crate::history::BUCKETS;
use crate::history::History;

#[derive(Default)]
pub struct Metrics {
    /// Responses by status class: index 0 is 1xx ... 4 is 5xx.
    by_class: [AtomicU64; 5],
    /// Counts per bucket (not cumulative); the last one is +Inf.
    latency: [AtomicU64; BUCKETS.len() + 1],
    latency_sum_us: AtomicU64,
    /// Client connections open now, WebSockets included.
    connections_open: AtomicU64,
    /// Times the accept loops stopped at `server.max_connections`.
    connections_capped: AtomicU64,
    /// Requests answered 408: no body byte for `server.body_timeout`.
    body_timeouts: AtomicU64,
    /// Connections closed: no response byte taken for `server.send_timeout`.
    send_timeouts: AtomicU64,
    /// The last minutes second by second, for the status page.
    pub history: History,
}

impl Metrics {
    /// Records one answered request: its status and time to the head.
    pub fn record(&self, status: u16, elapsed: Duration) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.history.record(status, bucket);
    }

    pub fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn connections_capped(&self) {
        self.connections_capped.fetch_add(1, Ordering::Relaxed);
    }

    pub fn body_timed_out(&self) {
        self.body_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    pub fn send_timed_out(&self) {
        self.send_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// The request and connection metrics in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        header(
            out,
            "corral_requests_total",
            "counter",
            "Requests answered, by status class.",
        );
        for (i, c) in self.by_class.iter().enumerate() {
            let _ = writeln!(
                out,
                "corral_requests_total{{class=\"{}xx\"}} {}",
                i + 1,
                c.load(Ordering::Relaxed)
            );
        }
        header(
            out,
            "corral_request_duration_seconds",
            "histogram",
            "Time from the request to the response head.",
        );
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.latency[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "corral_request_duration_seconds_bucket{{le=\"{b}\"}} {cumulative}"
            );
        }
        cumulative += self.latency[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "corral_request_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "corral_request_duration_seconds_sum {sum}");
        let _ = writeln!(out, "corral_request_duration_seconds_count {cumulative}");
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (name, kind, help, value) in [
            (
                "corral_connections_open",
                "gauge",
                "Client connections open, WebSockets included.",
                load(&self.connections_open),
            ),
            (
                "corral_connections_capped_total",
                "counter",
                "Times corral stopped accepting with server.max_connections connections open.",
                load(&self.connections_capped),
            ),
            (
                "corral_body_timeouts_total",
                "counter",
                "Requests answered 408: the client sent no body byte for server.body_timeout.",
                load(&self.body_timeouts),
            ),
            (
                "corral_send_timeouts_total",
                "counter",
                "Connections closed: the client took no response byte for server.send_timeout.",
                load(&self.send_timeouts),
            ),
        ] {
            scalar(out, name, kind, help, value);
        }
    }
}

/// The `# HELP` and `# TYPE` lines of one metric.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A metric with one unlabelled sample.
pub fn scalar(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_classes_count() {
        let m = Metrics::default();
        m.record(200, Duration::from_micros(300));
        m.record(204, Duration::from_millis(3));
        m.record(503, Duration::from_secs(10));
        let mut s = String::new();
        m.render(&mut s);
        assert!(s.contains("corral_requests_total{class=\"2xx\"} 2\n"));
        assert!(s.contains("corral_requests_total{class=\"5xx\"} 1\n"));
        assert!(s.contains("corral_request_duration_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(s.contains("corral_request_duration_seconds_bucket{le=\"0.005\"} 2\n"));
        assert!(s.contains("corral_request_duration_seconds_bucket{le=\"5\"} 2\n"));
        assert!(s.contains("corral_request_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(s.contains("corral_request_duration_seconds_count 3\n"));
        assert!(s.contains("corral_connections_open 0\n"));
    }

    #[test]
    fn connection_counters() {
        let m = Metrics::default();
        m.connection_opened();
        m.connection_opened();
        m.connection_closed();
        m.connections_capped();
        m.body_timed_out();
        m.send_timed_out();
        m.send_timed_out();
        let mut s = String::new();
        m.render(&mut s);
        assert!(s.contains("# TYPE corral_connections_open gauge\ncorral_connections_open 1\n"));
        assert!(s.contains("corral_connections_capped_total 1\n"));
        assert!(s.contains("corral_body_timeouts_total 1\n"));
        assert!(s.contains("corral_send_timeouts_total 2\n"));
    }
}
