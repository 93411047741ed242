//! Request and connection counters kept by the front with atomics (no locks
//! on the request path; one set per front shard, added up when read),
//! rendered as Prometheus text, and the text format's
//! helpers ([`header`], [`scalar`]) and the `/proc` readings ([`process`])
//! that `supervisor::metrics` renders the supervisor's snapshot with. This
//! module sits below the front and imports nothing above it.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

// The latency buckets, which the queue-time histogram shares.
pub use crate::history::BUCKETS;
use crate::history::History;

pub mod process;

/// The request and connection counters, one set per front shard
/// (`crate::shards`), each on cache lines of its own: a shard's thread
/// adds to its own set only, so two shards never fight over a line, and
/// `/metrics` adds the sets up.
pub struct Metrics {
    shards: Box<[Counters]>,
    /// The last minutes second by second, for the status page.
    pub history: History,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(1)
    }
}

/// The statuses of `corral_malformed_requests_total`, as [`Metrics::malformed`]
/// counts them.
const MALFORMED: [u16; 2] = [400, 431];

/// One shard's counters.
#[derive(Default)]
#[repr(align(128))]
struct Counters {
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
    /// Requests whose client left before the answer's head (logged 499).
    client_closed: AtomicU64,
    /// Requests a worker gave back unstarted, its threads all held by long
    /// requests, to be sent to another.
    moved: AtomicU64,
    /// TLS handshakes that failed (`[server.tls]`).
    tls_handshake_failures: AtomicU64,
    /// Connections refused for their PROXY protocol header.
    proxy_header_refusals: AtomicU64,
    /// HTTP/2 connections cut off for frames that ask for nothing.
    http2_floods: AtomicU64,
    /// HTTP/2 requests whose worker got a small response window.
    small_windows: AtomicU64,
    /// HTTP/1 request heads hyper answered itself, before corral's
    /// handler: 400 (malformed), 431 (over `max_header_bytes`).
    malformed: [AtomicU64; 2],
    /// Requests by HTTP version: 1.0 (and 0.9), 1.1, 2.
    by_version: [AtomicU64; 3],
    /// Time requests waited in corral for a worker: counts per bucket (not
    /// cumulative, the last is +Inf) and the sum.
    queued: [AtomicU64; BUCKETS.len() + 1],
    queued_sum_us: AtomicU64,
    /// corral's own 502, 503 and 504 answers, by [`GatewayError`].
    gateway_errors: [AtomicU64; GatewayError::ALL.len()],
    /// Requests a worker took, by [`Protocol`] and interface (WSGI, ASGI).
    dispatched: [[AtomicU64; 2]; Protocol::ALL.len()],
    request_body_bytes: AtomicU64,
    response_body_bytes: AtomicU64,
}

impl Counters {
    /// Adds `other`'s counts to these (wrapping: a gauge counted up on one
    /// shard and down on another still adds up).
    fn add(&self, other: &Counters) {
        fn add_all(to: &[AtomicU64], from: &[AtomicU64]) {
            for (t, f) in to.iter().zip(from) {
                t.fetch_add(f.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
        add_all(&self.by_class, &other.by_class);
        add_all(&self.latency, &other.latency);
        add_all(&self.by_version, &other.by_version);
        add_all(&self.queued, &other.queued);
        add_all(&self.gateway_errors, &other.gateway_errors);
        add_all(&self.malformed, &other.malformed);
        for (t, f) in self.dispatched.iter().zip(&other.dispatched) {
            add_all(t, f);
        }
        for (t, f) in [
            (&self.latency_sum_us, &other.latency_sum_us),
            (&self.connections_open, &other.connections_open),
            (&self.connections_capped, &other.connections_capped),
            (&self.body_timeouts, &other.body_timeouts),
            (&self.send_timeouts, &other.send_timeouts),
            (&self.client_closed, &other.client_closed),
            (&self.moved, &other.moved),
            (&self.tls_handshake_failures, &other.tls_handshake_failures),
            (&self.proxy_header_refusals, &other.proxy_header_refusals),
            (&self.http2_floods, &other.http2_floods),
            (&self.small_windows, &other.small_windows),
            (&self.queued_sum_us, &other.queued_sum_us),
            (&self.request_body_bytes, &other.request_body_bytes),
            (&self.response_body_bytes, &other.response_body_bytes),
        ] {
            t.fetch_add(f.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }
}

/// Why corral answered a request itself with a 5xx instead of the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayError {
    /// 502: the worker died (or its channel broke) before it answered.
    WorkerDied,
    /// 503: no worker is in service.
    NoneInService,
    /// 503: every worker stayed busy for the whole request timeout.
    Busy,
    /// 503: every worker is busy and the queue is full.
    QueueFull,
    /// 504: the app took longer than the request timeout.
    Timeout,
}

impl GatewayError {
    const ALL: [GatewayError; 5] = [
        GatewayError::WorkerDied,
        GatewayError::NoneInService,
        GatewayError::Busy,
        GatewayError::QueueFull,
        GatewayError::Timeout,
    ];

    /// The `status` and `cause` labels.
    fn labels(self) -> (u16, &'static str) {
        match self {
            GatewayError::WorkerDied => (502, "worker_died"),
            GatewayError::NoneInService => (503, "none_in_service"),
            GatewayError::Busy => (503, "busy"),
            GatewayError::QueueFull => (503, "queue_full"),
            GatewayError::Timeout => (504, "timeout"),
        }
    }
}

/// How a request came, for `corral_requests_dispatched_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http10,
    Http11,
    Http2,
    WebSocket,
}

impl Protocol {
    const ALL: [Protocol; 4] = [
        Protocol::Http10,
        Protocol::Http11,
        Protocol::Http2,
        Protocol::WebSocket,
    ];

    fn label(self) -> &'static str {
        match self {
            Protocol::Http10 => "HTTP/1.0",
            Protocol::Http11 => "HTTP/1.1",
            Protocol::Http2 => "HTTP/2",
            Protocol::WebSocket => "WebSocket",
        }
    }
}

fn bucket_of(elapsed: Duration) -> usize {
    let secs = elapsed.as_secs_f64();
    BUCKETS
        .iter()
        .position(|b| secs <= *b)
        .unwrap_or(BUCKETS.len())
}

impl Metrics {
    /// Counters for `shards` front shards.
    pub fn new(shards: usize) -> Metrics {
        Metrics {
            shards: (0..shards.max(1)).map(|_| Counters::default()).collect(),
            history: History::new(shards),
        }
    }

    /// The counters of the shard whose thread this is.
    fn here(&self) -> &Counters {
        &self.shards[crate::shards::current() % self.shards.len()]
    }

    /// All shards' counters added up.
    fn totals(&self) -> Counters {
        let t = Counters::default();
        for c in &self.shards {
            t.add(c);
        }
        t
    }

    /// Records one answered request: its status, time to the head, and
    /// when that was (now; read once by the caller).
    pub fn record(&self, status: u16, elapsed: Duration, at: Instant) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        let here = self.here();
        here.by_class[class].fetch_add(1, Ordering::Relaxed);
        let bucket = bucket_of(elapsed);
        here.latency[bucket].fetch_add(1, Ordering::Relaxed);
        here.latency_sum_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.history.record_at(at, status, bucket);
    }

    /// Records the time a request waited in corral before a worker took it.
    pub fn queued(&self, waited: Duration) {
        let here = self.here();
        here.queued[bucket_of(waited)].fetch_add(1, Ordering::Relaxed);
        here.queued_sum_us
            .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn gateway_error(&self, why: GatewayError) {
        self.here().gateway_errors[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A worker took a request: `asgi` tells the interface.
    pub fn dispatched(&self, protocol: Protocol, asgi: bool) {
        self.here().dispatched[protocol as usize][usize::from(asgi)]
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn request_body(&self, bytes: u64) {
        self.here()
            .request_body_bytes
            .fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn response_body(&self, bytes: u64) {
        self.here()
            .response_body_bytes
            .fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn connection_opened(&self) {
        self.here().connections_open.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        self.here().connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn connections_capped(&self) {
        self.here()
            .connections_capped
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A worker gave a request back unstarted (see `First::Returned`).
    pub fn moved(&self) {
        self.here().moved.fetch_add(1, Ordering::Relaxed);
    }

    /// A request whose client closed its connection or reset its stream
    /// before the answer's head.
    pub fn client_closed(&self) {
        self.here().client_closed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn body_timed_out(&self) {
        self.here().body_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    pub fn tls_handshake_failed(&self) {
        self.here()
            .tls_handshake_failures
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn proxy_header_refused(&self) {
        self.here()
            .proxy_header_refusals
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn http2_flood(&self) {
        self.here().http2_floods.fetch_add(1, Ordering::Relaxed);
    }

    /// hyper answered a request head itself (see [`MALFORMED`]): `too_large`
    /// for 431, else 400. Counted among the 4xx answers too.
    pub fn malformed(&self, too_large: bool) {
        let here = self.here();
        here.malformed[usize::from(too_large)].fetch_add(1, Ordering::Relaxed);
        here.by_class[3].fetch_add(1, Ordering::Relaxed);
    }

    pub fn small_window(&self) {
        self.here().small_windows.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one request by its HTTP version.
    pub fn request_version(&self, version: http::Version) {
        let i = match version {
            http::Version::HTTP_2 => 2,
            http::Version::HTTP_11 => 1,
            _ => 0,
        };
        self.here().by_version[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn send_timed_out(&self) {
        self.here().send_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// The request and connection metrics in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let t = self.totals();
        header(
            out,
            "corral_requests_total",
            "counter",
            "Requests answered, by status class.",
        );
        for (i, c) in t.by_class.iter().enumerate() {
            let _ = writeln!(
                out,
                "corral_requests_total{{class=\"{}xx\"}} {}",
                i + 1,
                c.load(Ordering::Relaxed)
            );
        }
        histogram(
            out,
            "corral_request_duration_seconds",
            "Time from the request to the response head.",
            &t.latency,
            &t.latency_sum_us,
        );
        histogram(
            out,
            "corral_queue_wait_seconds",
            "Time requests waited in corral for a worker (503s after a wait included); add workers when it grows.",
            &t.queued,
            &t.queued_sum_us,
        );
        header(
            out,
            "corral_requests_dispatched_total",
            "counter",
            "Requests handed to a worker, by protocol and interface.",
        );
        for protocol in Protocol::ALL {
            for (i, interface) in ["wsgi", "asgi"].iter().enumerate() {
                let _ = writeln!(
                    out,
                    "corral_requests_dispatched_total{{protocol=\"{}\",interface=\"{interface}\"}} {}",
                    protocol.label(),
                    t.dispatched[protocol as usize][i].load(Ordering::Relaxed)
                );
            }
        }
        header(
            out,
            "corral_gateway_errors_total",
            "counter",
            "Requests corral answered 502, 503 or 504 itself, by cause.",
        );
        for why in GatewayError::ALL {
            let (status, cause) = why.labels();
            let _ = writeln!(
                out,
                "corral_gateway_errors_total{{status=\"{status}\",cause=\"{cause}\"}} {}",
                t.gateway_errors[why as usize].load(Ordering::Relaxed)
            );
        }
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (name, kind, help, value) in [
            (
                "corral_request_body_bytes_total",
                "counter",
                "Request body bytes received from clients.",
                load(&t.request_body_bytes),
            ),
            (
                "corral_response_body_bytes_total",
                "counter",
                "Response body bytes taken from workers for clients.",
                load(&t.response_body_bytes),
            ),
            (
                "corral_connections_open",
                "gauge",
                "Client connections open, WebSockets included.",
                load(&t.connections_open),
            ),
            (
                "corral_connections_capped_total",
                "counter",
                "Times corral stopped accepting with server.max_connections connections open.",
                load(&t.connections_capped),
            ),
            (
                "corral_body_timeouts_total",
                "counter",
                "Requests answered 408: the client sent no body byte for server.body_timeout.",
                load(&t.body_timeouts),
            ),
            (
                "corral_send_timeouts_total",
                "counter",
                "Connections closed: the client took no response byte for server.send_timeout.",
                load(&t.send_timeouts),
            ),
            (
                "corral_client_closed_requests_total",
                "counter",
                "Requests whose client closed its connection or reset its stream before the answer (logged with status 499).",
                load(&t.client_closed),
            ),
            (
                "corral_requests_moved_total",
                "counter",
                "Requests a WSGI worker gave back unstarted, every thread held by a long request, for another worker.",
                load(&t.moved),
            ),
            (
                "corral_tls_handshake_failures_total",
                "counter",
                "TLS handshakes that failed (server.tls): bad or missing client certificates, protocol errors, timeouts.",
                load(&t.tls_handshake_failures),
            ),
            (
                "corral_proxy_header_refusals_total",
                "counter",
                "Connections refused for their PROXY protocol header (server.proxy_protocol): malformed, or from a peer not in server.proxy_allow_ips.",
                load(&t.proxy_header_refusals),
            ),
            (
                "corral_http2_floods_total",
                "counter",
                "HTTP/2 connections cut off for sending more PRIORITY, WINDOW_UPDATE, SETTINGS, PING, RST_STREAM, empty DATA or unknown frames than their responses account for.",
                load(&t.http2_floods),
            ),
            (
                "corral_http2_small_windows_total",
                "counter",
                "HTTP/2 requests whose worker got a 16 KiB response window, not 256 KiB: the windows of HTTP/2 requests in flight held their budget (max_queued x 64 KiB).",
                load(&t.small_windows),
            ),
        ] {
            scalar(out, name, kind, help, value);
        }
        header(
            out,
            "corral_malformed_requests_total",
            "counter",
            "HTTP/1 request heads answered before the app, by status: 400 malformed (a header line without a colon, a bad method, target or version), 431 larger than server.max_header_bytes.",
        );
        for (status, count) in MALFORMED.iter().zip(&t.malformed) {
            let _ = writeln!(
                out,
                "corral_malformed_requests_total{{status=\"{status}\"}} {}",
                load(count)
            );
        }
        header(
            out,
            "corral_requests_by_version_total",
            "counter",
            "Requests received, by HTTP version.",
        );
        for (version, count) in ["1.0", "1.1", "2"].iter().zip(&t.by_version) {
            let _ = writeln!(
                out,
                "corral_requests_by_version_total{{version=\"{version}\"}} {}",
                load(count)
            );
        }
    }
}

/// A histogram over [`BUCKETS`] from per-bucket counts and a sum in µs.
fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    counts: &[AtomicU64; BUCKETS.len() + 1],
    sum_us: &AtomicU64,
) {
    header(out, name, "histogram", help);
    let mut cumulative = 0;
    for (i, b) in BUCKETS.iter().enumerate() {
        cumulative += counts[i].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
    }
    cumulative += counts[BUCKETS.len()].load(Ordering::Relaxed);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
    let sum = sum_us.load(Ordering::Relaxed) as f64 / 1e6;
    let _ = writeln!(out, "{name}_sum {sum}");
    let _ = writeln!(out, "{name}_count {cumulative}");
}

/// With `[server.tls]`: when each certificate set's certificate in force
/// expires (alert on it before it does) and the certificate reloads that
/// failed. `expiry`: each set's name and its certificate's last valid
/// moment; with more than one set (`[server.tls.bind."ADDR"]` tables), each
/// series has a `bind` label: the table's address, or "default" for
/// `[server.tls]`'s own set. `long_chains`: client certificate chains
/// refused for their length.
pub fn tls(
    expiry: &[(String, Option<i64>)],
    reload_failures: u64,
    long_chains: u64,
    out: &mut String,
) {
    let name = "corral_tls_certificate_expiry_timestamp_seconds";
    let known: Vec<(&String, i64)> = expiry
        .iter()
        .filter_map(|(set, t)| Some((set, (*t)?)))
        .collect();
    if !known.is_empty() {
        header(
            out,
            name,
            "gauge",
            "Unix time the certificate in force stops being valid.",
        );
        for (set, t) in known {
            if expiry.len() == 1 {
                let _ = writeln!(out, "{name} {t}");
            } else {
                let _ = writeln!(out, "{name}{{bind=\"{}\"}} {t}", label_value(set));
            }
        }
    }
    scalar(
        out,
        "corral_tls_reload_failures_total",
        "counter",
        "Certificate reloads that failed (the certificates before them kept serving).",
        reload_failures,
    );
    scalar(
        out,
        "corral_tls_long_client_chains_total",
        "counter",
        &format!(
            "TLS handshakes refused because the client sent more than {} certificates (its own and intermediates), before any was checked.",
            crate::tls::MAX_CLIENT_CHAIN
        ),
        long_chains,
    );
}

/// A label value in the text format: backslash, quote and newline escaped.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// While a canary runs: each generation's requests and 5xx answers.
pub fn canary(old: &crate::canary::Sample, new: &crate::canary::Sample, out: &mut String) {
    type Pick = fn(&crate::canary::Sample) -> u64;
    let metrics: [(&str, &str, Pick); 2] = [
        (
            "corral_canary_requests",
            "Requests answered during the running canary, by generation (old: serving, new: the canary).",
            |s| s.requests,
        ),
        (
            "corral_canary_errors",
            "5xx answers during the running canary, by generation.",
            |s| s.errors,
        ),
    ];
    for (name, help, pick) in metrics {
        header(out, name, "gauge", help);
        let _ = writeln!(out, "{name}{{generation=\"old\"}} {}", pick(old));
        let _ = writeln!(out, "{name}{{generation=\"new\"}} {}", pick(new));
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
        let now = Instant::now();
        m.record(200, Duration::from_micros(300), now);
        m.record(204, Duration::from_millis(3), now);
        m.record(503, Duration::from_secs(10), now);
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
        m.client_closed();
        let mut s = String::new();
        m.render(&mut s);
        assert!(s.contains("# TYPE corral_connections_open gauge\ncorral_connections_open 1\n"));
        assert!(s.contains("corral_connections_capped_total 1\n"));
        assert!(s.contains("corral_body_timeouts_total 1\n"));
        assert!(s.contains("corral_send_timeouts_total 2\n"));
        assert!(s.contains("corral_client_closed_requests_total 1\n"));
    }
}
