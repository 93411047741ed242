//! The status server, on its own address (`[health] status_bind`):
//! `/health/live`, `/health/ready`, `/status` and `/metrics`, and at `/` a
//! status page for people (`status_page.html`: one self-contained file
//! that draws `/status` every 2 s, with the last minutes of traffic from
//! [`crate::history`]). It reads the
//! supervisor's published [`Snapshot`] and the front's [`Metrics`]; it never
//! touches the worker table.
//!
//! It shares corral's file descriptors with the app port, so a client may
//! cost it little: at most [`MAX_CONNECTIONS`] connections, the app port's
//! header timeout (`server.keepalive`) and send timeout, and a head of at
//! most [`MAX_HEADER_BYTES`]. When all the connections are taken, the one
//! open longest (at least [`MAKE_ROOM_AFTER`]) is closed for the next: a
//! client that holds connections open cannot keep a probe out, as it
//! could when new connections waited in the listen queue for a free one
//! (a probe's request comes at once and is answered in a millisecond). The probes (`/health/*`) say counts and
//! states only and are always open, as is the page (it holds no data and
//! asks for the token itself); `/status` (tracebacks) and `/metrics` take
//! the bearer token `[health] status_token` when one is set.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, Method, Response, StatusCode};
use hyper::service::service_fn;
use serde_json::json;
use tokio::sync::{Notify, oneshot, watch};

use crate::config::{Config, MinReady, Secret};
use crate::front::body::Body;
use crate::front::reply::plain as text;
use crate::front::{Listener, conn};
use crate::history::{History, SECONDS};
use crate::metrics::{self, Metrics};
use crate::router::Router;
use crate::supervisor::{self, Msg, Snapshot, SupervisorHandle, rss_bytes};

pub struct StatusState {
    pub snapshots: watch::Receiver<Snapshot>,
    pub metrics: Arc<Metrics>,
    pub supervisor: SupervisorHandle,
    pub cfg: Arc<Config>,
    pub router: Arc<Router>,
    /// The app port's TLS, when it has some.
    pub tls: Option<Arc<crate::tls::Tls>>,
}

/// The most connections the status server holds open at once; beyond, new
/// ones wait in its listen queue. Probes and scrapers need a handful.
pub const MAX_CONNECTIONS: usize = 64;
/// The largest request head it takes (431 beyond): its requests are GETs
/// of a short path.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// With every connection taken, the one open longest is closed for a new
/// one once it has been open this long: so a client that opens
/// connections as fast as they close gets at most [`MAX_CONNECTIONS`]
/// closed per this time, and a probe is answered in about this time at
/// most.
pub const MAKE_ROOM_AFTER: Duration = Duration::from_millis(250);

/// The status server's open connections, oldest first, each with what
/// closes it.
#[derive(Default)]
struct Open {
    conns: std::sync::Mutex<std::collections::VecDeque<(u64, Instant, Arc<Notify>)>>,
    next: std::sync::atomic::AtomicU64,
}

impl Open {
    fn add(&self) -> (u64, Arc<Notify>) {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        self.lock().push_back((id, Instant::now(), close.clone()));
        (id, close)
    }

    fn remove(&self, id: u64) {
        let mut conns = self.lock();
        if let Some(i) = conns.iter().position(|(c, _, _)| *c == id) {
            conns.remove(i);
        }
    }

    /// Closes the connection open longest if it has been open `age`, and
    /// answers `None`; `None` too with none open (nothing to wait for);
    /// else how long until it has been open `age`.
    fn close_oldest(&self, age: Duration) -> Option<Duration> {
        let mut conns = self.lock();
        let (_, at, _) = conns.front()?;
        let open = at.elapsed();
        if open < age {
            return Some(age - open);
        }
        if let Some((_, _, close)) = conns.pop_front() {
            close.notify_one();
        }
        None
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::VecDeque<(u64, Instant, Arc<Notify>)>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Serves the status endpoints on `listener` until the runtime stops (with
/// `gate`, from when it turns true: see `Front::start`).
pub fn start(listener: Listener, state: Arc<StatusState>, gate: Option<watch::Receiver<bool>>) {
    if state.cfg.health.status_token.is_none()
        && let Some(addr) = exposed(&listener)
    {
        tracing::warn!(
            "the status server on {addr} is reachable from other hosts and has no token: \
             anyone who reaches it reads /status (boot tracebacks) and /metrics; set \
             [health] status_token_file (or CORRAL_STATUS_TOKEN), or bind it to 127.0.0.1 \
             (which every local user can still reach)"
        );
    }
    let server = &state.cfg.server;
    let limits = conn::Limits::new(MAX_CONNECTIONS, server.send_timeout, None);
    let builder = crate::front::http1(server.keepalive, MAX_HEADER_BYTES);
    tokio::spawn(async move {
        if let Some(mut gate) = gate
            && gate.wait_for(|open| *open).await.is_err()
        {
            return;
        }
        let open = Arc::new(Open::default());
        loop {
            let slot = loop {
                if let Some(slot) = limits.try_slot() {
                    break slot;
                }
                // All taken: make room (see the module docs).
                match open.close_oldest(MAKE_ROOM_AFTER) {
                    None => break limits.slot().await,
                    Some(wait) => tokio::select! {
                        slot = limits.slot() => break slot,
                        () = tokio::time::sleep(wait) => {}
                    },
                }
            };
            let Ok((io, _)) = crate::front::accept(&listener, slot, None).await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let state = state.clone();
            let conn = builder.serve_connection(
                io,
                service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, std::convert::Infallible>(route(req, &state).await) }
                }),
            );
            let (id, close) = open.add();
            let open = open.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = conn => {}
                    () = close.notified() => {}
                }
                open.remove(id);
            });
        }
    });
}

/// The address of a TCP listener that other hosts can reach (not
/// loopback), as the log shows it.
fn exposed(listener: &Listener) -> Option<String> {
    match listener {
        Listener::Tcp(l) => {
            let addr = l.local_addr().ok()?;
            let ip = match addr.ip() {
                std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(v6.into(), Into::into),
                ip => ip,
            };
            (!ip.is_loopback()).then(|| addr.to_string())
        }
        Listener::Unix(..) => None,
    }
}

/// Whether the request carries `Authorization: Bearer TOKEN` with `token`.
fn authorized(headers: &http::HeaderMap, token: &Secret) -> bool {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    let Some(space) = value.iter().position(|&b| b == b' ') else {
        return false;
    };
    let (scheme, presented) = (&value[..space], value[space..].trim_ascii());
    scheme.eq_ignore_ascii_case(b"bearer") && same_bytes(presented, token.expose().as_bytes())
}

/// Equal bytes, compared in a time that depends only on the lengths, never
/// on where the first difference is (so the token cannot be guessed byte by
/// byte from response times).
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn unauthorized() -> Response<Body> {
    let mut r = text(
        StatusCode::UNAUTHORIZED,
        "Unauthorized: send Authorization: Bearer with the status token\n",
    );
    r.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"corral\""),
    );
    r
}

async fn route(req: http::Request<hyper::body::Incoming>, state: &StatusState) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    let path = req.uri().path();
    // The probes and the page are open: the page holds no data (it asks
    // for /status with the token itself).
    if let Some(token) = &state.cfg.health.status_token
        && !path.starts_with("/health/")
        && path != "/"
        && !authorized(req.headers(), token)
    {
        return unauthorized();
    }
    match path {
        "/" => page(),
        "/health/live" => live(state).await,
        "/health/ready" => {
            let (ok, body) = readiness(&state.snapshots.borrow(), &state.cfg.health.min_ready);
            json_response(
                if ok {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                },
                &body,
            )
        }
        "/status" => json_response(StatusCode::OK, &status(state)),
        "/metrics" => {
            let mut out = String::with_capacity(4096);
            state.metrics.render(&mut out);
            // A copy: the workers' /proc files are read without holding
            // the supervisor's snapshot.
            let snap = state.snapshots.borrow().clone();
            supervisor::metrics::render(&snap, &mut out);
            metrics::process::render_own(&mut out);
            metrics::scalar(
                &mut out,
                "corral_requests_queued",
                "gauge",
                "Requests waiting in corral for a worker.",
                state.router.queued(),
            );
            if let Some(tls) = &state.tls {
                let (expiry, reload_failures, long_chains) = tls.figures();
                metrics::tls(&expiry, reload_failures, long_chains, &mut out);
            }
            if let Some(split) = state.router.split() {
                metrics::canary(&split.old.sample(), &split.new.sample(), &mut out);
            }
            let mut r = text(StatusCode::OK, &out);
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try / (the status page), /health/live, /health/ready, /status or /metrics\n",
        ),
    }
}

/// The status page: one self-contained HTML file (no external asset) that
/// draws `/status` and refreshes itself.
const PAGE: &str = include_str!("status_page.html");

fn page() -> Response<Body> {
    let mut r = text(StatusCode::OK, PAGE);
    let headers = r.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Nothing but itself and /status: no other origin, no framing.
    headers.insert(
        http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src data:; frame-ancestors 'none'; base-uri 'none'; \
             form-action 'none'",
        ),
    );
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        http::header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// 200 when the supervisor loop answers a ping within a second.
async fn live(state: &StatusState) -> Response<Body> {
    let (tx, rx) = oneshot::channel();
    if state.supervisor.send(Msg::Ping(tx)).is_ok()
        && tokio::time::timeout(Duration::from_secs(1), rx)
            .await
            .is_ok_and(|r| r.is_ok())
    {
        return text(StatusCode::OK, "ok\n");
    }
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "the supervisor loop does not answer\n",
    )
}

/// Whether enough workers are in service, and the JSON that says so: counts
/// and states only (it is served to probes, on `/health/ready`; the boot
/// errors are in `/status`).
pub fn readiness(snap: &Snapshot, min_ready: &MinReady) -> (bool, serde_json::Value) {
    let required = min_ready.required(snap.workers_configured);
    let (ok, reason) = if snap.stopping {
        (false, "corral is stopping".to_string())
    } else if snap.in_service >= required {
        (
            true,
            format!(
                "{} of {} workers in service",
                snap.in_service, snap.workers_configured
            ),
        )
    } else {
        (
            false,
            format!(
                "{} of {} workers in service, {required} required",
                snap.in_service, snap.workers_configured
            ),
        )
    };
    let body = json!({
        "ready": ok,
        "in_service": snap.in_service,
        "booting": snap.booting,
        "workers": snap.workers_configured,
        "required": required,
        "reason": reason,
    });
    (ok, body)
}

fn last_line(text: &str) -> &str {
    text.trim_end().lines().last().unwrap_or("")
}

/// The `/status` document (also served on the control socket).
pub fn status(state: &StatusState) -> serde_json::Value {
    let snap = state.snapshots.borrow().clone();
    let (ready, mut readiness) = readiness(&snap, &state.cfg.health.min_ready);
    // Not ready: the latest boot error says why.
    if !ready
        && !snap.stopping
        && let Some(err) = snap
            .slots
            .iter()
            .filter_map(|s| s.last_boot_error.as_ref())
            .max_by(|a, b| a.at.total_cmp(&b.at))
    {
        let reason = format!(
            "{}; last boot error: {}",
            readiness["reason"].as_str().unwrap_or_default(),
            last_line(&err.text)
        );
        readiness["reason"] = json!(reason);
    }
    let mut v = serde_json::to_value(&snap).unwrap_or_default();
    // Request counters are live, not as of the last snapshot.
    let live = |w: &mut serde_json::Value| {
        let pid = w["pid"].as_u64().unwrap_or(0);
        if pid == 0 {
            return;
        }
        w["rss_bytes"] = json!(rss_bytes(pid as u32));
        let Some(ch) = snap
            .channels
            .iter()
            .map(|(_, c)| c)
            .find(|c| c.pid == pid as u32)
        else {
            return;
        };
        w["requests"] = json!(ch.served.load(std::sync::atomic::Ordering::Relaxed));
        w["in_flight"] = json!(ch.in_flight.load(std::sync::atomic::Ordering::Relaxed));
        // How many it may hold: ASGI's (and gevent's) concurrency, or
        // WSGI's threads plus a prefetch sized by its answer time.
        w["capacity"] = json!(ch.capacity.load(std::sync::atomic::Ordering::Relaxed));
        if w["state"] != "booting" {
            w["interface"] = json!(if ch.is_asgi() { "asgi" } else { "wsgi" });
            w["gevent"] = json!(ch.is_gevent());
            w["transport"] = json!(ch.transport());
        }
    };
    if let Some(slots) = v.get_mut("slots").and_then(|s| s.as_array_mut()) {
        for slot in slots {
            if let Some(w) = slot.get_mut("worker").filter(|w| w.is_object()) {
                live(w);
            }
            for w in slot
                .get_mut("also")
                .and_then(|a| a.as_array_mut())
                .into_iter()
                .flatten()
            {
                live(w);
            }
        }
    }
    json!({
        "supervisor": {
            "pid": snap.pid,
            "version": snap.version,
            // Now, not when the snapshot was taken (it is published on
            // changes only).
            "uptime_seconds": process_uptime().unwrap_or(snap.uptime_seconds),
            "config": state.cfg.source.as_ref().map(|p| p.display().to_string()),
            "instance": state.cfg.instance,
            "control_socket": state.cfg.control.socket,
            "state_dir": state.cfg.deploy.state_dir,
            "app": snap.app.as_deref().unwrap_or(&state.cfg.app.module),
            "binds": state.cfg.server.bind.iter().map(|b| b.addr.to_string()).collect::<Vec<_>>(),
            "insecure_binds": state.cfg.server.insecure_bind.iter().map(|b| b.addr.to_string()).collect::<Vec<_>>(),
            "stopping": snap.stopping,
            "rss_bytes": rss_bytes(snap.pid),
            // Requests waiting for a free worker place right now.
            "queued": state.router.queued(),
        },
        "ready": ready,
        "readiness": readiness,
        "generation": snap.generation,
        "revision": snap.revision,
        "last_good_revision": snap.last_good_revision,
        "revision_drift": snap.drift,
        "rollback_hook": snap.rollback_hook,
        "reloading": snap.reloading,
        "last_reload": snap.last_reload,
        "config_error": snap.config_error,
        // The certificates in force (per set), which listener serves which,
        // and the last reload of their files.
        "tls": state.tls.as_ref().map(|t| t.status()),
        // While a canary runs: its share and both generations' figures.
        "canary": state.router.split().map(|s| json!({
            "generation": s.generation,
            "share_percent": s.share_percent(),
            "old": s.old.sample().json(),
            "new": s.new.sample().json(),
        })),
        // Fewer than min_in_service workers in service: requests go to
        // every live worker (Envoy's panic threshold).
        "panic": snap.panic,
        "workers": {
            "configured": snap.workers_configured,
            "in_service": snap.in_service,
            "booting": snap.booting,
            "restarts": snap.restarts,
            "recycles": crate::supervisor::core::RECYCLE_CAUSES
                .iter()
                .zip(snap.recycles)
                .map(|(cause, n)| (cause.to_string(), json!(n)))
                .collect::<serde_json::Map<_, _>>(),
            "boot_failures": snap.boot_failures,
            "unready": snap.unready,
            "probe_failures": snap.probe_failures,
        },
        "slots": v["slots"],
        "recent": recent(&state.metrics.history),
    })
}

/// The last three minutes second by second, oldest first, in columns (the
/// status page draws them).
fn recent(history: &History) -> serde_json::Value {
    let seconds = history.recent(SECONDS - 1);
    json!({
        "seconds": seconds.len(),
        "requests": seconds.iter().map(|s| s.requests).collect::<Vec<_>>(),
        "errors": seconds.iter().map(|s| s.errors).collect::<Vec<_>>(),
        "p50_ms": seconds.iter().map(|s| s.p50_ms).collect::<Vec<_>>(),
        "p99_ms": seconds.iter().map(|s| s.p99_ms).collect::<Vec<_>>(),
    })
}

/// How long this process has run: the system's uptime minus the process's
/// start time (both from /proc, in clock ticks since boot).
fn process_uptime() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: starttime is field 22, the 20th after the ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let ticks: f64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let up: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| (up - ticks / hz as f64).max(0.0))
}

fn json_response(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
    body.push(b'\n');
    let mut r = Response::new(Body::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_must_match_exactly() {
        let token = Secret::new("0123456789abcdef".into());
        let with = |value: &'static str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::AUTHORIZATION, value.parse().unwrap());
            authorized(&h, &token)
        };
        assert!(with("Bearer 0123456789abcdef"));
        assert!(with("bearer  0123456789abcdef "));
        assert!(!with("Bearer 0123456789abcdeF"));
        assert!(!with("Bearer 0123456789abcdef0"));
        assert!(!with("Bearer 0123456789abcde"));
        assert!(!with("Basic 0123456789abcdef"));
        assert!(!with("Bearer"));
        assert!(!with("0123456789abcdef"));
        assert!(!authorized(&http::HeaderMap::new(), &token));
        assert!(same_bytes(b"", b""));
        assert!(!same_bytes(b"a", b""));
    }
}
