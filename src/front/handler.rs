//! One HTTP request: checked and answered in Rust when it is bad, otherwise
//! handed to the least-loaded worker and its response streamed back. Each
//! gets its `X-Request-ID` first ([`request_id`]), which goes to the app,
//! back in the response, and into every log line about the request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, Method, Response, StatusCode};
use hyper::body::Incoming;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant as TokioInstant;

use super::access::{self, Entry, Logger, Trace, WorkerRef};
use super::body::{Body, KeptBody, Producer, PumpGuard, Relay, StreamBody, watch_stalls};
use super::hangup::Hangup;
use super::reply::{
    BadApp, bad_app, bad_request, body_timed_out, broken_body, not_a_proxy, plain, refused,
    too_large, unavailable,
};
use super::upload::{self, PumpEnd};
use super::websocket::{self, Upgrade};
use super::{Drain, checks, forwarded, request_id};
use crate::config::{ForwardedAllow, Sticky};
use crate::metrics::{GatewayError, Metrics, Protocol};
use crate::router::{NoWorker, Router, Split};
use crate::worker::channel::{Channel, First, Stream};
use crate::worker::head::{ConnInfo, environ, scope};
use crate::worker::protocol;

/// What a request needs from the rest of corral.
pub struct Shared {
    pub router: Arc<Router>,
    pub timeout: Duration,
    pub max_body_bytes: u64,
    /// Longest a request body may go without a byte from the client.
    pub body_timeout: Duration,
    /// Longest a client may take no byte of its response
    /// (`server.send_timeout`): the socket's writes are timed in
    /// [`super::conn`], an HTTP/2 stream's progress by
    /// [`super::body::watch_stalls`].
    pub send_timeout: Duration,
    /// Least bytes per second of waiting a streaming body must average
    /// after its first `body_timeout` of waiting (0: none).
    pub body_min_rate: u64,
    /// Tells the supervisor to replace a worker (serial, reason).
    pub replace: mpsc::UnboundedSender<(u64, String)>,
    pub metrics: Arc<Metrics>,
    /// gunicorn's StatsD metrics, when `[log] statsd_host` is set.
    pub statsd: Option<Arc<crate::statsd::Statsd>>,
    /// The access log, when it is on.
    pub access: Option<Arc<Logger>>,
    /// gunicorn's `limit_request_*`.
    pub head_limits: crate::config::HeadLimits,
    /// Open connections and WebSockets, and the signal to finish them.
    pub drain: Arc<Drain>,
    /// Proxies whose X-Forwarded-For and X-Forwarded-Proto count.
    pub forwarded_allow: ForwardedAllow,
    /// The PROXY protocol headers a connection may begin with, and the
    /// peers they count from.
    pub proxy_protocol: crate::config::ProxyProtocol,
    pub proxy_allow: ForwardedAllow,
    /// What keeps a client on one generation during a canary.
    pub canary_sticky: Sticky,
    /// WebSocket pings and message limit.
    pub websocket: crate::config::WebSocketLimits,
    /// `[server.headers]`: added to every response that lacks them.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// What all requests hold of bodies read before dispatch.
    pub read_ahead: Arc<upload::ReadAhead>,
    /// What all WebSockets hold of client messages not yet whole.
    pub unfinished: Arc<websocket::Unfinished>,
    /// What corral keeps of whole bodies for HTTP/2 clients.
    pub outbox: Arc<super::body::Budget>,
    /// The response windows HTTP/2 requests in flight hold: what their
    /// workers may send before a client takes any of it. Once it is all
    /// held, a request's worker gets a small window
    /// (`protocol::FLAG_SMALL_WINDOW`).
    pub windows: Arc<super::body::Budget>,
}

/// The key that keeps a client on one side of a canary, if any: a hash of
/// its address, or of the header's or cookie's value.
fn sticky_key(sticky: &Sticky, headers: &http::HeaderMap, conn: &ConnInfo) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    match sticky {
        Sticky::None => return None,
        Sticky::ClientAddress => conn.remote_addr.hash(&mut h),
        Sticky::Header(name) => headers.get(name.as_str())?.as_bytes().hash(&mut h),
        Sticky::Cookie(name) => headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k == name).then_some(v)
            })?
            .hash(&mut h),
    }
    Some(h.finish())
}

/// Serves one request. What needs no wait (the request id, the access
/// log's copy, the checks that answer a bad head at once) runs before the
/// future is made, and the request is split there: the future, which
/// hyper moves into place for every request (an HTTP/2 stream's task, an
/// HTTP/1.1 connection's slot), then holds the head once. An `async fn`
/// would keep its arguments beside what it makes of them.
/// `hangup`: the watch on a plain HTTP/1.1 connection; the client leaving
/// ends the request with [`ClientGone`], which makes hyper close the
/// connection without an answer.
pub fn handle(
    mut req: http::Request<Incoming>,
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    hangup: Option<Hangup>,
) -> impl Future<Output = Result<Response<Body>, ClientGone>> + Send + 'static {
    let start = Instant::now();
    // Set before anything copies the headers: the app and the access log
    // see the id corral settled on, never an untrusted client's.
    let id = request_id::take(req.headers(), conn.trusted);
    req.headers_mut().insert(request_id::HEADER, id.clone());
    // What the access log needs, kept only when it is on.
    let logged = shared.access.as_ref().and_then(|log| {
        let mut b = http::Request::builder()
            .method(req.method().clone())
            .uri(req.uri().clone())
            .version(req.version());
        if log.needs_headers() {
            if let Some(headers) = b.headers_mut() {
                *headers = req.headers().clone();
            }
        } else {
            for name in [http::header::REFERER, http::header::USER_AGENT] {
                if let Some(v) = req.headers().get(&name) {
                    b = b.header(name, v.clone());
                }
            }
        }
        b.body(()).ok().map(|r| Box::new(r.into_parts().0))
    });
    // The answer boxed: it is rare, and the request's future holds it.
    let admitted = admit(&mut req, &shared.head_limits).map_err(Box::new);
    let (parts, body) = req.into_parts();
    async move {
        // Behind a trusted proxy, the client and scheme are the ones it
        // reports.
        let forwarded = forwarded::forwarded(&parts.headers, &conn, &shared.forwarded_allow);
        let conn: &ConnInfo = forwarded.as_ref().unwrap_or(&conn);
        let id_text = id.to_str().unwrap_or("-");
        let mut pending = Pending {
            shared: &shared,
            conn,
            id: id_text,
            start,
            logged,
            trace: Trace::default(),
            answered: false,
        };
        let mut side = None;
        let mut resp = match admitted {
            Ok(upgrade) => {
                let request = Request {
                    parts: &parts,
                    upgrade,
                    conn,
                    id: id_text,
                    start,
                    hangup,
                };
                let mut resp =
                    match dispatch(request, body, &shared, &mut pending.trace, &mut side).await {
                        Ok(resp) | Err(Early::Answer(resp)) => resp,
                        Err(Early::Gone) => return Err(ClientGone),
                    };
                // Corral's 500 for an invalid response: said with the
                // request and the worker.
                if let Some(BadApp(why)) = resp.extensions_mut().remove() {
                    let worker = pending.trace.worker.map_or(String::new(), |w| {
                        format!(" on worker {} (pid {})", w.slot, w.pid)
                    });
                    tracing::error!(
                        "request {id_text} {} {}: 500, the app sent an invalid response{worker}: {why}",
                        parts.method,
                        access::escape(parts.uri.path().as_bytes()),
                    );
                }
                resp
            }
            Err(resp) => *resp,
        };
        pending.answered = true;
        let (logged, trace) = (pending.logged.take(), pending.trace);
        drop(pending);
        if parts.version == http::Version::HTTP_2 {
            count_canned_body(&mut resp, &shared.outbox);
        }
        // `[server.headers]`, where the app set none of the same name.
        for (name, value) in &shared.headers {
            if let http::header::Entry::Vacant(slot) = resp.headers_mut().entry(name) {
                slot.insert(value.clone());
            }
        }
        let end = Instant::now();
        let elapsed = end - start;
        shared.metrics.record(resp.status().as_u16(), elapsed, end);
        if let Some(statsd) = &shared.statsd {
            statsd.request(resp.status().as_u16(), elapsed);
        }
        // During a canary, the generation that served counts the answer.
        if let Some((split, new)) = side {
            split.record(new, resp.status().as_u16(), elapsed);
        }
        if let (Some(parts), Some(log)) = (logged, &shared.access) {
            // The line is written when the body ends (see `body::Logged`),
            // with the bytes sent (none for HEAD, as gunicorn logs it).
            let (log, remote, status) = (log.clone(), conn.remote_addr.clone(), resp.status());
            // The response's headers only for a format that gives one,
            // with the X-Request-ID set below, as the client gets them.
            let response = if log.needs_response_headers() {
                let mut headers = resp.headers().clone();
                headers
                    .entry(request_id::HEADER)
                    .or_insert_with(|| id.clone());
                headers
            } else {
                http::HeaderMap::new()
            };
            let request_id = id_text.to_owned();
            let at_end = move |sent: u64| {
                log.log(&Entry {
                    remote: &remote,
                    parts: &parts,
                    status: status.as_u16(),
                    bytes: Some(sent),
                    elapsed: start.elapsed(),
                    response: &response,
                    request_id: &request_id,
                    trace,
                });
            };
            let inner = std::mem::replace(resp.body_mut(), Body::Full(None));
            *resp.body_mut() = Body::Logged(Box::new(super::body::Logged {
                inner,
                sent: 0,
                at_end: Some(Box::new(at_end)),
            }));
        }
        // The app's own X-Request-ID, if it set one, stands. Marked never to
        // be indexed by HTTP/2's header compression: a value that never
        // repeats would only push the headers that do out of the table.
        let mut id = id;
        id.set_sensitive(true);
        resp.headers_mut().entry(request_id::HEADER).or_insert(id);
        Ok(resp)
    }
}

/// A request not answered yet, and what its access line needs. Dropped
/// unanswered (its client closed the connection, or reset its HTTP/2
/// stream, before the answer's head), it is counted
/// (`corral_client_closed_requests_total`) and logged with status 499, as
/// nginx logs a request its client closed. Before, such a request left no
/// trace in the access log or in `/metrics`.
struct Pending<'a> {
    shared: &'a Shared,
    conn: &'a ConnInfo,
    id: &'a str,
    start: Instant,
    /// The access log's copy of the head, when the log is on.
    logged: Option<Box<Parts>>,
    /// Filled in by [`dispatch`]: the queue wait and the worker.
    trace: Trace,
    answered: bool,
}

/// The access log's status for a request whose client left before its
/// answer: nginx's "client closed request".
const CLIENT_CLOSED: u16 = 499;

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        self.shared.metrics.client_closed();
        if let (Some(parts), Some(log)) = (&self.logged, &self.shared.access) {
            log.log(&Entry {
                remote: &self.conn.remote_addr,
                parts,
                status: CLIENT_CLOSED,
                bytes: Some(0),
                elapsed: self.start.elapsed(),
                response: &http::HeaderMap::new(),
                request_id: self.id,
                trace: self.trace,
            });
        }
    }
}

/// Counts a body corral wrote itself (a 4xx or 5xx) in the outbox, as the
/// app's are: on HTTP/2 it waits, with its stream, for a window the client
/// may never give. A client that opened 100,000 streams with none held
/// 438 MiB of corral's 503 answers. Past half the outbox such an answer
/// goes without its text.
fn count_canned_body(resp: &mut Response<Body>, outbox: &Arc<super::body::Budget>) {
    let Body::Full(Some(text)) = resp.body_mut() else {
        return;
    };
    let text = std::mem::take(text);
    *resp.body_mut() = match outbox.keep_unwatched(text.len()) {
        Some(ticket) => Body::Small {
            data: Some(text),
            _ticket: ticket,
        },
        None => {
            resp.headers_mut()
                .insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            Body::empty()
        }
    };
}

/// The checks of a request's head that answer at once, before its body or
/// a worker: the WebSocket upgrade to take when it asks for one, or the
/// answer.
// The caller boxes the answer once, for the future that holds it.
#[allow(clippy::result_large_err)]
fn admit(
    req: &mut http::Request<Incoming>,
    limits: &crate::config::HeadLimits,
) -> Result<Option<hyper::upgrade::OnUpgrade>, Response<Body>> {
    if let Some(super::target::Unframed(why)) = req.extensions().get() {
        return Err(bad_request(why));
    }
    if let Some(why) = checks::refuse(req.version(), req.headers()) {
        return Err(bad_request(why));
    }
    if !checks::expectation_met(req.headers()) {
        return Err(refused(
            StatusCode::EXPECTATION_FAILED,
            "corral knows no expectation but 100-continue",
        ));
    }
    // The same Content-Length more than once is one (RFC 9110 section
    // 8.6), as hyper makes it on HTTP/1.1; h2 passed both, and the app saw
    // "5, 5" (werkzeug read no body, Django raised).
    if req.version() >= http::Version::HTTP_2 {
        let mut values = req.headers().get_all(http::header::CONTENT_LENGTH).iter();
        if let Some(first) = values.next().cloned()
            && values.next().is_some()
        {
            let all = req.headers().get_all(http::header::CONTENT_LENGTH);
            if all.iter().any(|v| v != first) {
                return Err(bad_request("Content-Length values differ"));
            }
            req.headers_mut()
                .insert(http::header::CONTENT_LENGTH, first);
        }
    }
    // The target's authority (an absolute-form target, `GET
    // http://host/path`, or HTTP/2's `:authority`) names the host: the app
    // gets it as `Host` (and `SERVER_NAME`), so that neither can differ
    // from the host a proxy in front routed by. It is checked as `Host`
    // is (no user info: `http://evil@good/`). RFC 9112 section 3.2.2 has
    // an HTTP/1.1 server ignore `Host` then, as nginx does; RFC 9113
    // section 8.3.1 calls an HTTP/2 request whose `Host` differs from its
    // `:authority` malformed.
    if let Some(authority) = req.uri().authority().map(|a| a.as_str().to_owned()) {
        let host = HeaderValue::from_str(&authority)
            .ok()
            .filter(|h| checks::is_authority(h.as_bytes()));
        let Some(host) = host else {
            return Err(bad_request("invalid authority in the request target"));
        };
        if req.version() >= http::Version::HTTP_2
            && req
                .headers()
                .get(http::header::HOST)
                .is_some_and(|h| !h.as_bytes().eq_ignore_ascii_case(host.as_bytes()))
        {
            return Err(bad_request("Host differs from :authority"));
        }
        req.headers_mut().insert(http::header::HOST, host);
    }
    // A tunnel (CONNECT host:port) or a question to the server itself
    // (OPTIONS *): not for the app, which would answer them as a path.
    if req.method() == Method::CONNECT {
        return Err(not_a_proxy());
    }
    if req.uri().path() == "*" {
        return Err(bad_request(
            "the asterisk-form target (OPTIONS *) is not served: ask a path",
        ));
    }
    if let Some((status, why)) = checks::over_limits(req, limits) {
        return Err(refused(status, why));
    }
    // A NUL in the decoded path (what open() and C code would cut the
    // path at), for WSGI and ASGI apps alike: hyper refuses a raw one, so
    // only `%00` decodes to it.
    if req.uri().path().contains("%00") {
        return Err(bad_request("NUL in path"));
    }
    match websocket::upgrade_kind(req) {
        Upgrade::None => Ok(None),
        Upgrade::WebSocket => Ok(Some(hyper::upgrade::on(req))),
        Upgrade::BadVersion => Err(websocket::bad_version()),
    }
}

/// An admitted request, as [`dispatch`] reads it. `start`: when it came.
struct Request<'a> {
    parts: &'a Parts,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    conn: &'a ConnInfo,
    id: &'a str,
    start: Instant,
    hangup: Option<Hangup>,
}

/// The client left before its answer: hyper closes the connection (a
/// service error) and writes nothing.
#[derive(Debug, thiserror::Error)]
#[error("the client closed its connection")]
pub struct ClientGone;

/// A request that ends before its app's answer: corral answers it itself,
/// or the client left.
// Boxing the answer would not shrink a `Reply`: its `Ok` is as large.
#[allow(clippy::large_enum_variant)]
enum Early {
    Answer(Response<Body>),
    Gone,
}

impl From<Response<Body>> for Early {
    fn from(resp: Response<Body>) -> Early {
        Early::Answer(resp)
    }
}

type Reply = Result<Response<Body>, Early>;

/// `trace` gets what corral learns on the way: the time queued, the
/// worker. `side` is set to the canary side that took the request, when a
/// canary runs.
// Each clock read costs: `start` and the instant a worker is leased serve
// for every time the request needs (queue wait, deadline, answer time).
async fn dispatch(
    request: Request<'_>,
    mut body: Incoming,
    shared: &Shared,
    trace: &mut Trace,
    side: &mut Option<(Arc<Split>, bool)>,
) -> Reply {
    let Request {
        parts,
        upgrade,
        conn,
        id,
        start,
        hangup,
    } = request;
    let is_head = parts.method == Method::HEAD;
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > shared.max_body_bytes) {
        return Err(too_large(shared.max_body_bytes).into());
    }

    // Read the start of the body before taking a worker's time, each wait
    // for the client bounded by the body timeout. Its buffers go to the
    // worker as they came, with no copy.
    let mut inline: Vec<Bytes> = Vec::new();
    let mut held = upload::Held::new(&shared.read_ahead);
    let mut received: u64 = 0;
    let mut more = !hyper::body::Body::is_end_stream(&body);
    let read_body = more;
    if more {
        let timer = tokio::time::sleep(shared.body_timeout);
        tokio::pin!(timer);
        while more && received < protocol::INLINE_BODY as u64 {
            if !shared.read_ahead.room(shared.body_timeout).await {
                shared.metrics.gateway_error(GatewayError::Busy);
                return Err(unavailable("too many request bodies are being read").into());
            }
            let next = upload::next_frame(&mut body, timer.as_mut(), shared.body_timeout).await;
            match next {
                None => return Err(body_timed_out(&shared.metrics).into()),
                Some(None) => more = false,
                Some(Some(Err(_))) => return Err(broken_body().into()),
                Some(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        received += data.len() as u64;
                        if received > shared.max_body_bytes {
                            return Err(too_large(shared.max_body_bytes).into());
                        }
                        if !data.is_empty() {
                            held.add(data.len());
                            inline.push(data);
                        }
                    }
                }
            }
        }
    }

    shared.metrics.request_body(received);
    let sticky = sticky_key(&shared.canary_sticky, &parts.headers, conn);
    // With no body read, nothing happened since `start` worth a clock read.
    let mut waiting = if read_body { Instant::now() } else { start };
    // A client that leaves while its request waits for a place frees its
    // place in the queue (with bytes still unread, the watch cannot tell).
    let watch = hangup.as_ref().filter(|_| !more);
    // A WSGI worker whose threads are all held by long requests gives back
    // the requests queued behind them, unstarted (`First::Returned`): they
    // go to another worker, or wait in corral's line for the first free
    // one, as under gunicorn a request waits in the listen queue rather
    // than behind a slow one. Only requests whose body came whole: their
    // bytes are still here.
    let mut moves = 0;
    // During a canary, the side is chosen once; the request counts there
    // as unanswered, with its age, from now until its response head, so
    // that a generation whose requests hang (or wait for its workers)
    // does not look clean for answering nothing.
    let chosen = shared.router.choose(sticky);
    let to_new = chosen.as_ref().map(|(_, new)| *new);
    let mut outstanding = chosen.map(|(split, new)| split.sent(new, waiting));
    let (lease, window, channel, mut stream, depth, sent, answer) = loop {
        let lease = shared.router.acquire_side(shared.timeout, to_new);
        let Some(lease) = Hangup::until(watch, lease).await else {
            return Err(Early::Gone);
        };
        let leased = Instant::now();
        let queued = leased - waiting;
        trace.queued = Some(trace.queued.unwrap_or_default() + queued);
        shared.metrics.queued(queued);
        let lease = match lease {
            Ok(lease) => lease,
            Err(NoWorker::NoneInService) => {
                shared.metrics.gateway_error(GatewayError::NoneInService);
                return Err(unavailable("no worker is in service").into());
            }
            Err(NoWorker::Busy) => {
                shared.metrics.gateway_error(GatewayError::Busy);
                static SAID: Throttle = Throttle::new();
                SAID.warn(|more| {
                    format!(
                        "request {id} {} {}: 503, all workers are busy: it waited {:?} (the timeout) for one{more}; more workers (-w), threads or a longer timeout would take more at once",
                        parts.method,
                        access::escape(parts.uri.path().as_bytes()),
                        shared.timeout
                    )
                });
                return Err(unavailable("all workers are busy").into());
            }
            Err(NoWorker::QueueFull) => {
                shared.metrics.gateway_error(GatewayError::QueueFull);
                static SAID: Throttle = Throttle::new();
                SAID.warn(|more| {
                    format!(
                        "request {id} {} {}: 503, all workers are busy and corral's queue is full{more}; more workers (-w), threads or [server] max_queued would take more at once",
                        parts.method,
                        access::escape(parts.uri.path().as_bytes()),
                    )
                });
                return Err(unavailable("all workers are busy and the queue is full").into());
            }
        };
        side.clone_from(&lease.side);
        if let (Some(outstanding), Some((_, new))) = (&mut outstanding, &lease.side) {
            outstanding.moved_to(*new);
        }
        let channel = lease.channel.clone();
        trace.worker = Some(WorkerRef {
            slot: channel.slot,
            pid: channel.pid,
            generation: channel.generation.load(Ordering::Relaxed),
        });
        let asgi = channel.is_asgi();
        let head = if asgi {
            scope::encode(parts, conn)
        } else {
            environ::encode(parts, conn)
                .map_err(|_| plain(StatusCode::BAD_REQUEST, "Bad Request: NUL in path\n"))?
        };
        // A WSGI app sees a WebSocket handshake as a plain request.
        let websocket = asgi && upgrade.is_some();
        // An HTTP/2 client may leave a hundred streams untaken per
        // connection: each response window it holds counts, and past the
        // budget its workers send no more than a small one before the
        // client takes it. (An HTTP/1.1 connection holds one at a time.)
        let window = (parts.version == http::Version::HTTP_2)
            .then(|| shared.windows.keep(protocol::RESPONSE_WINDOW));
        let small = matches!(window, Some(None));
        if small {
            shared.metrics.small_window();
        }
        let window = window.flatten();
        let flags = if websocket {
            protocol::FLAG_WEBSOCKET
        } else if more {
            protocol::FLAG_MORE_BODY
        } else if moves == MAX_MOVES {
            // Moved enough: it waits where it lands.
            protocol::FLAG_STAY
        } else {
            0
        } | if small {
            protocol::FLAG_SMALL_WINDOW
        } else {
            0
        };
        // With the whole body in the REQUEST frame, the channel's deadline is
        // the request timeout; a body that streams after it runs the timeout on
        // its own clock, which stops while the worker waits for the client.
        let streams_body = more && !websocket;
        let deadline = if streams_body {
            NO_DEADLINE
        } else {
            channel.timeout(shared.timeout)
        };
        let size = if small {
            protocol::SMALL_WINDOW
        } else {
            protocol::RESPONSE_WINDOW
        };
        let mut stream = channel.open(more || websocket, leased + deadline, size);
        let depth = channel.in_flight.load(Ordering::Relaxed);
        let frame = protocol::encode_request_head(stream.id, &head, received as usize, flags);
        channel.send_pieces(std::iter::once(frame).chain(inline.iter().cloned()));
        if moves == 0 {
            let protocol = match parts.version {
                _ if websocket => Protocol::WebSocket,
                http::Version::HTTP_10 => Protocol::Http10,
                http::Version::HTTP_2 => Protocol::Http2,
                _ => Protocol::Http11,
            };
            shared.metrics.dispatched(protocol, asgi);
        }
        // The body streams on under the upload's clock (below).
        if streams_body {
            break (lease, window, channel, stream, depth, leased, None);
        }
        let first = {
            let mut unanswered = Unanswered {
                channel: &channel,
                stream: stream.id,
                answered: false,
            };
            let Some(first) = Hangup::until(hangup.as_ref(), &mut stream.first).await else {
                return Err(Early::Gone);
            };
            unanswered.answered = true;
            first
        };
        if matches!(first, Ok(First::Returned)) && moves < MAX_MOVES {
            moves += 1;
            tracing::debug!(
                "request {id}: worker {} (pid {}) gave it back, its threads held by long requests",
                channel.slot,
                channel.pid
            );
            shared.metrics.moved();
            waiting = Instant::now();
            continue;
        }
        break (lease, window, channel, stream, depth, leased, Some(first));
    };
    let upgrade = upgrade.filter(|_| channel.is_asgi());
    let streams_body = more && upgrade.is_none();
    let mut uploading = match &stream.credit {
        Some(credit) if streams_body => {
            let clock = upload::Clock::start();
            let pump = upload::pump(
                body,
                channel.clone(),
                stream.id,
                credit.clone(),
                received,
                shared.max_body_bytes,
                upload::Pace {
                    idle: shared.body_timeout,
                    min_rate: shared.body_min_rate,
                },
                clock.clone(),
                shared.metrics.clone(),
            );
            Some(Upload {
                pump: Some(Box::pin(pump)),
                clock,
                channel: channel.clone(),
                stream: stream.id,
                settled: false,
            })
        }
        _ => None,
    };

    let first = match (answer, &mut uploading) {
        (Some(first), _) => first,
        // No answer yet only for a body that streams, whose stream came
        // with credit: never without an upload.
        (None, None) => return Err(broken_body().into()),
        (None, Some(up)) => {
            let timeout = channel.timeout(shared.timeout);
            let first = up.first_answer(&mut stream.first, timeout, hangup.as_ref());
            match first.await {
                Ok(first) => first,
                Err(Cut::Gone) => return Err(Early::Gone),
                Err(Cut::Pump(PumpEnd::TimedOut)) => {
                    return Err(body_timed_out(&shared.metrics).into());
                }
                Err(_) if overflowed(&stream) => {
                    return Err(too_large(shared.max_body_bytes).into());
                }
                Err(Cut::Pump(_)) => return Err(broken_body().into()),
            }
        }
    };
    // Answered (or timed out: the 504 is counted as such).
    drop(outstanding);
    // A body still streaming goes on beside the response (a stall now
    // cancels the request at the worker, which ends its response early).
    let pump = PumpGuard(uploading.and_then(|mut up| up.pump.take()).map(|pump| {
        let metrics = shared.metrics.clone();
        tokio::spawn(async move {
            if pump.await == PumpEnd::TimedOut {
                metrics.body_timed_out();
            }
        })
    }));
    let first = match first {
        Ok(First::TimedOut) => return Err(timed_out(shared, &channel, stream.id, parts, id).into()),
        Ok(First::Returned) => {
            // Sent with FLAG_STAY: the worker broke the protocol.
            shared.metrics.gateway_error(GatewayError::WorkerDied);
            tracing::error!(
                "request {id}: 502, worker {} (pid {}) gave it back though told to keep it",
                channel.slot,
                channel.pid
            );
            return Err(plain(
                StatusCode::BAD_GATEWAY,
                "Bad Gateway: the worker gave the request back\n",
            )
            .into());
        }
        Err(_) => {
            shared.metrics.gateway_error(GatewayError::WorkerDied);
            tracing::error!(
                "request {id} {} {}: 502, worker {} (pid {}) died before it answered",
                parts.method,
                access::escape(parts.uri.path().as_bytes()),
                channel.slot,
                channel.pid
            );
            return Err(plain(StatusCode::BAD_GATEWAY, "Bad Gateway: the worker died\n").into());
        }
        Ok(first) => first,
    };
    channel.count_served();
    channel.answered(sent.elapsed(), depth);
    match first {
        First::Full(payload) => {
            let Some((head, body)) = protocol::split_full(&payload) else {
                return Err(bad_app("malformed response frame").into());
            };
            // Bigger bodies must stream under the window: corral holds
            // this one until a client, perhaps a slow one, takes it.
            if body.len() > protocol::RESPONSE_WINDOW {
                return Err(bad_app(&format!(
                    "a whole body of {} bytes, over the response window of {}",
                    body.len(),
                    protocol::RESPONSE_WINDOW
                ))
                .into());
            }
            let mut resp = build(head, Body::empty())?;
            if !is_head && may_have_body(resp.status()) {
                let (body, short_of) = fit_to_content_length(resp.headers(), body);
                let sent = body.len() as u64;
                shared.metrics.response_body(sent);
                let h2 = parts.version == http::Version::HTTP_2;
                let small = (h2 && !body.is_empty() && body.len() <= super::body::H2_CHUNK)
                    .then(|| shared.outbox.keep_unwatched(body.len()))
                    .flatten();
                let whole = if let Some(ticket) = small {
                    Body::Small {
                        data: Some(body),
                        _ticket: ticket,
                    }
                } else if h2 && !body.is_empty() {
                    let kept = KeptBody::new(body, lease, window, &shared.outbox);
                    tokio::spawn(watch_stalls(
                        kept.relay(),
                        None,
                        shared.send_timeout,
                        shared.metrics.clone(),
                        super::streams::kill_switch(),
                    ));
                    Body::Kept(kept)
                } else {
                    Body::full(body)
                };
                *resp.body_mut() = match short_of {
                    Some(declared) => whole.short_of(
                        declared,
                        sent,
                        &format!(
                            "request {id} {} {} on worker {} (pid {})",
                            parts.method,
                            access::escape(parts.uri.path().as_bytes()),
                            channel.slot,
                            channel.pid
                        ),
                    ),
                    None => whole,
                };
            }
            // The app answered without reading the whole body: hyper will
            // close the connection, so say so rather than promise keep-alive.
            if pump.0.as_ref().is_some_and(|p| !p.is_finished()) {
                resp.headers_mut()
                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(resp)
        }
        First::Start(head, events) => {
            // A 204 or 304 has no body: hyper sends none, and ends the stream.
            let relay = Relay::new(lease, window);
            if parts.version == http::Version::HTTP_2 {
                tokio::spawn(watch_stalls(
                    relay.clone(),
                    Some(Producer {
                        channel: channel.clone(),
                        stream: stream.id,
                        window: stream.window.clone(),
                    }),
                    shared.send_timeout,
                    shared.metrics.clone(),
                    super::streams::kill_switch(),
                ));
            }
            let body = Body::Stream(StreamBody {
                events,
                stream: stream.id,
                channel: channel.clone(),
                relay,
                unacked: 0,
                window: stream.window.clone(),
                done: false,
                ending: None,
                declared: None,
                sent: 0,
                metrics: shared.metrics.clone(),
                hangup,
                _pump: pump,
                chunk: if parts.version == http::Version::HTTP_2 {
                    super::body::H2_CHUNK
                } else {
                    usize::MAX
                },
                pending: Bytes::new(),
            });
            // On an invalid head the body is dropped, which cancels the stream.
            let mut resp = build(head, body)?;
            let declared = resp
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .filter(|_| !is_head && may_have_body(resp.status()));
            if let Body::Stream(s) = resp.body_mut() {
                s.declared = declared;
            }
            Ok(resp)
        }
        First::Accept(head, events) => {
            let (Some(upgrade), Some(key), Some(credit)) = (
                upgrade,
                parts.headers.get(http::header::SEC_WEBSOCKET_KEY),
                stream.credit,
            ) else {
                return Err(bad_app("websocket.accept for a request that is no handshake").into());
            };
            let resp = websocket::accept_response(key, &head).map_err(|e| bad_app(&e))?;
            let session = websocket::Session {
                stream: stream.id,
                lease,
                events,
                credit,
                window: stream.window.clone(),
            };
            tokio::spawn(websocket::relay(
                upgrade,
                session,
                shared.drain.clone(),
                shared.websocket,
                shared.unfinished.clone(),
            ));
            Ok(resp)
        }
        First::TimedOut | First::Returned => unreachable!("handled above"),
    }
}

/// Whether the pump found the body larger than `max_body_bytes`.
fn overflowed(stream: &Stream) -> bool {
    stream
        .credit
        .as_ref()
        .is_some_and(|c| c.overflow.load(Ordering::Acquire))
}

/// How many times a request may be given back by a worker (see
/// `First::Returned`): a worker gives back only what it has not started,
/// and then takes nothing new until it answers, so a request moves more
/// than once only if its next worker too is taken by long requests before
/// it starts it. The last move sends it with `FLAG_STAY`: it waits where
/// it lands.
const MAX_MOVES: u32 = 8;

/// No deadline on the channel: [`upload::Clock`] keeps the request timeout.
/// Also the request timeout of `workers.timeout = 0` (none, as gunicorn's).
pub const NO_DEADLINE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A request whose body still streams to its worker, until its answer: the
/// pump, the request's clock, and the CANCEL owed to the worker if the
/// request is dropped first (the client went away), so that the app stops
/// waiting for the rest of the body.
struct Upload {
    pump: Option<Pin<Box<dyn Future<Output = PumpEnd> + Send>>>,
    clock: Arc<upload::Clock>,
    channel: Arc<Channel>,
    stream: u32,
    /// The worker answered, or was told the request is over.
    settled: bool,
}

/// Why a request whose body streams ended before its answer.
enum Cut {
    /// The pump ended it (it has sent the worker a CANCEL).
    Pump(PumpEnd),
    /// The client left once its body was in (the [`Upload`] owes the
    /// worker a CANCEL).
    Gone,
}

impl Upload {
    /// Waits for the worker's first answer while the pump runs: `timeout`
    /// counts the app's time only (see [`upload::Clock`]). Once the whole
    /// body is in, `hangup` watches for the client leaving.
    async fn first_answer(
        &mut self,
        first: &mut oneshot::Receiver<First>,
        timeout: Duration,
        hangup: Option<&Hangup>,
    ) -> Result<Result<First, oneshot::error::RecvError>, Cut> {
        let timer = tokio::time::sleep_until(self.clock.due(timeout, TokioInstant::now()));
        tokio::pin!(timer);
        loop {
            let pumping = self.pump.is_some();
            tokio::select! {
                biased;
                first = &mut *first => {
                    self.settled = true;
                    return Ok(first);
                }
                end = async { self.pump.as_mut().expect("pumping").await }, if pumping => {
                    self.pump = None;
                    if !matches!(end, PumpEnd::Done | PumpEnd::WorkerDone) {
                        self.settled = true;
                        return Err(Cut::Pump(end));
                    }
                }
                () = Hangup::gone(hangup), if !pumping => return Err(Cut::Gone),
                () = &mut timer => {
                    let now = TokioInstant::now();
                    let due = self.clock.due(timeout, now);
                    if due <= now {
                        self.settled = true;
                        return Ok(Ok(First::TimedOut));
                    }
                    timer.as_mut().reset(due);
                }
            }
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.settled {
            self.channel.send(protocol::encode(
                protocol::FrameKind::Cancel,
                self.stream,
                b"",
            ));
        }
    }
}

/// A request waiting for its worker's first answer, with its whole body
/// sent: dropped before the answer (the client closed the connection, or
/// reset the HTTP/2 stream), it owes the worker a CANCEL, so that an ASGI
/// app sees `http.disconnect` and its place is not freed while it works.
struct Unanswered<'a> {
    channel: &'a Channel,
    stream: u32,
    answered: bool,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.channel.send(protocol::encode(
                protocol::FrameKind::Cancel,
                self.stream,
                b"",
            ));
        }
    }
}

/// How long after a request past its timeout a threaded worker whose
/// every thread runs such a request is replaced: time for the requests
/// that only waited in its queue to end at their CANCEL.
const STUCK_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// The 504 for a request past the timeout; for a WSGI worker of one thread
/// (or whose every thread is so held) the worker is replaced, for ASGI the
/// request's task is cancelled, and for gevent its greenlet.
fn timed_out(
    shared: &Shared,
    channel: &Arc<Channel>,
    stream: u32,
    parts: &Parts,
    id: &str,
) -> Response<Body> {
    shared.metrics.gateway_error(GatewayError::Timeout);
    let reason = format!(
        "request {id} {} {} exceeded the timeout of {:?} on worker {} (pid {})",
        parts.method,
        access::escape(parts.uri.path().as_bytes()),
        channel.timeout(shared.timeout),
        channel.slot,
        channel.pid
    );
    if channel.is_cooperative() {
        // One slow coroutine (or greenlet) says nothing about the others on
        // its event loop: cancel it alone (a blocked loop stops the
        // heartbeat, and that replaces the worker).
        tracing::warn!("{reason}; cancelling it");
        channel.send(protocol::encode(protocol::FrameKind::Cancel, stream, b"t"));
    } else if channel.one_thread() {
        let _ = shared.replace.send((channel.serial, reason));
    } else {
        // Nor does one thread of several: the others' requests go on, as
        // under gunicorn's gthread worker. Its thread runs on (no thread
        // can be stopped); its answer goes nowhere. A request that only
        // waited in the worker's queue ends at the CANCEL; if every thread
        // still runs a request past its time a moment later, the worker
        // is replaced.
        tracing::warn!("{reason}; its thread runs on, the worker's others serve");
        channel.send(protocol::encode(protocol::FrameKind::Cancel, stream, b"t"));
        let (channel, replace) = (channel.clone(), shared.replace.clone());
        tokio::spawn(async move {
            tokio::time::sleep(STUCK_AFTER).await;
            if channel.stuck() && !channel.is_closed() {
                let _ = replace.send((channel.serial, reason));
            }
        });
    }
    plain(StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout\n")
}

/// A whole body against the app's Content-Length: PEP 3333 says never send
/// more than it declares (the rest is cut); with a shorter body, the
/// length declared, for [`Body::short_of`] (the response is sent cut, as a
/// streamed body that ends short is). [`build`] left at most one
/// Content-Length, a number.
fn fit_to_content_length(headers: &http::HeaderMap, body: Bytes) -> (Bytes, Option<u64>) {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n < body.len() as u64 => (body.slice(..n as usize), None),
        Some(n) if n > body.len() as u64 => (body, Some(n)),
        _ => (body, None),
    }
}

/// Whether a response with this status carries a body (RFC 9110 sections
/// 15.3.5 and 15.4.5; 1xx never ends a response here).
fn may_have_body(status: StatusCode) -> bool {
    !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
}

/// The app's Content-Length: one decimal number, or a list of the same
/// number repeated (RFC 9110 section 8.6); anything else is an error. With
/// it, whether it was written as anything but one plain number.
fn content_length(headers: &http::HeaderMap) -> Result<Option<(u64, bool)>, String> {
    let mut length = None;
    let mut parts = 0;
    for value in headers.get_all(http::header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            parts += 1;
            let n = std::str::from_utf8(part.trim_ascii())
                .ok()
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u64>().ok())
                .ok_or_else(|| {
                    format!(
                        "invalid Content-Length {}",
                        protocol::shown(value.as_bytes())
                    )
                })?;
            match length {
                Some(l) if l != n => {
                    return Err(format!("conflicting Content-Length values {l} and {n}"));
                }
                _ => length = Some(n),
            }
        }
    }
    let plain = parts == 1
        && headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes().iter().all(u8::is_ascii_digit));
    Ok(length.map(|n| (n, !plain)))
}

/// The response for a head from the worker, or a 500 (logged) when the head
/// is invalid: a field the worker should have refused, a status that cannot
/// end a response, a Content-Length that is no length. Framing is corral's:
/// Transfer-Encoding is dropped, and 204 and 304 carry no Content-Length.
// Boxing the `Err` response would not shrink the `Result`: `Ok` is as large.
#[allow(clippy::result_large_err)]
fn build(head: Bytes, body: Body) -> Result<Response<Body>, Response<Body>> {
    let head = protocol::parse_response_head(&head).map_err(|e| bad_app(&e.to_string()))?;
    let status = head.status;
    // 1xx are interim (and 101 only ends a WebSocket handshake, which corral
    // answers itself): a final response is 200 to 599.
    if !(200..=599).contains(&status.as_u16()) {
        return Err(bad_app(&format!(
            "status {} cannot end a response: expected 200 to 599",
            status.as_u16()
        )));
    }
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    match head.reason {
        Some(reason) if status.canonical_reason().map(str::as_bytes) != Some(reason.as_bytes()) => {
            resp.extensions_mut().insert(reason);
        }
        // A status with no standard reason (499, 420, 299) and none from
        // the app: an empty one, as uvicorn sends, where hyper would write
        // its placeholder `<none>`.
        None if status.canonical_reason().is_none() => {
            resp.extensions_mut()
                .insert(hyper::ext::ReasonPhrase::from_static(b""));
        }
        _ => {}
    }
    let headers = resp.headers_mut();
    // One more: the X-Request-ID the handler adds.
    headers.reserve(head.headers.len() + 1);
    let mut close = false;
    for (name, value) in head.headers {
        // Hop-by-hop headers describe corral's connection with the client,
        // which is corral's to manage (framing, keep-alive, upgrades); as
        // gunicorn does, they are dropped, and `Connection: close` is kept
        // as a request to close the connection after this response.
        if name == http::header::CONNECTION {
            close |= value
                .to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
            continue;
        }
        if is_hop_by_hop(&name) {
            continue;
        }
        headers.append(name, value);
    }
    if close {
        headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    let length = content_length(headers).map_err(|e| bad_app(&e))?;
    if !may_have_body(status) {
        headers.remove(http::header::CONTENT_LENGTH);
    } else if let Some((n, true)) = length {
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    Ok(resp)
}

/// RFC 9110 section 7.6.1's hop-by-hop headers (and the old
/// `Proxy-Connection`), but `Connection` itself.
fn is_hop_by_hop(name: &http::HeaderName) -> bool {
    use http::header::{TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
    name == TRANSFER_ENCODING
        || name == TE
        || name == TRAILER
        || name == UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// A warning that a client can make corral say often (a 503 of a flood):
/// said at most once every 10 s, with how many were not said since.
struct Throttle {
    /// Seconds since [`Throttle::epoch`] at the last line, plus one (0:
    /// never said).
    last: std::sync::atomic::AtomicU64,
    unsaid: std::sync::atomic::AtomicU64,
}

impl Throttle {
    const fn new() -> Throttle {
        Throttle {
            last: std::sync::atomic::AtomicU64::new(0),
            unsaid: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn epoch() -> Instant {
        static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *EPOCH.get_or_init(Instant::now)
    }

    /// `line` gets ", and N more since the last such line" (or "").
    fn warn(&self, line: impl FnOnce(&str) -> String) {
        let Some(unsaid) = self.due(Self::epoch().elapsed().as_secs()) else {
            return;
        };
        let more = match unsaid {
            0 => String::new(),
            n => format!(", and {n} more since the last such line"),
        };
        tracing::warn!("{}", line(&more));
    }

    /// At `secs`: how many went unsaid since the last line, when a line is
    /// due; else None (and this one counts as unsaid).
    fn due(&self, secs: u64) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = secs + 1;
        let last = self.last.load(Relaxed);
        if (last != 0 && now < last + 10)
            || self
                .last
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_err()
        {
            self.unsaid.fetch_add(1, Relaxed);
            return None;
        }
        Some(self.unsaid.swap(0, Relaxed))
    }
}

#[cfg(test)]
mod throttle_tests {
    use super::Throttle;

    #[test]
    fn a_line_at_most_every_10_s_with_the_count_of_those_unsaid() {
        let t = Throttle::new();
        assert_eq!(t.due(0), Some(0));
        assert_eq!(t.due(3), None);
        assert_eq!(t.due(9), None);
        assert_eq!(t.due(10), Some(2));
        assert_eq!(t.due(19), None);
        assert_eq!(t.due(40), Some(1));
    }
}
