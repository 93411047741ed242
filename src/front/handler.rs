//! One HTTP request: checked and answered in Rust when it is bad, otherwise
//! handed to the least-loaded worker and its response streamed back.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::mpsc;

use super::access::{AccessLog, Entry};
use super::body::{Body, PumpGuard, StreamBody};
use super::environ::{self, ConnInfo};
use super::websocket::{self, Upgrade};
use super::{Drain, scope};
use crate::config::ForwardedAllow;
use crate::metrics::Metrics;
use crate::router::{NoWorker, Router};
use crate::worker::channel::{Channel, Credit, First};
use crate::worker::protocol;

/// What a request needs from the rest of corral.
pub struct Shared {
    pub router: Arc<Router>,
    pub timeout: Duration,
    pub max_body_bytes: u64,
    /// Tells the supervisor to replace a worker (serial, reason).
    pub replace: mpsc::UnboundedSender<(u64, String)>,
    pub metrics: Arc<Metrics>,
    pub access: AccessLog,
    /// Open connections and WebSockets, and the signal to finish them.
    pub drain: Arc<Drain>,
    /// Proxies whose X-Forwarded-For and X-Forwarded-Proto count.
    pub forwarded_allow: ForwardedAllow,
}

pub async fn handle(
    req: http::Request<Incoming>,
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let start = Instant::now();
    // What the access log needs, kept only when it is on.
    let logged = (shared.access != AccessLog::Off).then(|| {
        let mut b = http::Request::builder()
            .method(req.method().clone())
            .uri(req.uri().clone())
            .version(req.version());
        for name in [http::header::REFERER, http::header::USER_AGENT] {
            if let Some(v) = req.headers().get(&name) {
                b = b.header(name, v.clone());
            }
        }
        b.body(()).map(|r| r.into_parts().0)
    });
    // Behind a trusted proxy, the client and scheme are the ones it reports.
    let forwarded = environ::forwarded(req.headers(), &conn, &shared.forwarded_allow);
    let conn: &ConnInfo = forwarded.as_ref().unwrap_or(&conn);
    let resp = match dispatch(req, &shared, conn).await {
        Ok(resp) => resp,
        Err(resp) => resp,
    };
    let elapsed = start.elapsed();
    shared.metrics.record(resp.status().as_u16(), elapsed);
    if let Some(Ok(parts)) = logged {
        let bytes = resp
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        shared.access.log(&Entry {
            remote: &conn.remote_addr,
            parts: &parts,
            status: resp.status().as_u16(),
            bytes,
            elapsed,
        });
    }
    Ok(resp)
}

/// Both arms are responses: `Err` is the early answer corral gives itself.
type Reply = Result<Response<Body>, Response<Body>>;

async fn dispatch(mut req: http::Request<Incoming>, shared: &Shared, conn: &ConnInfo) -> Reply {
    let upgrade = match websocket::upgrade_kind(&req) {
        Upgrade::None => None,
        Upgrade::WebSocket => Some(hyper::upgrade::on(&mut req)),
        Upgrade::BadVersion => return Err(websocket::bad_version()),
    };
    let (parts, mut body) = req.into_parts();
    let is_head = parts.method == Method::HEAD;
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > shared.max_body_bytes) {
        return Err(too_large(shared.max_body_bytes));
    }

    // Read the start of the body before taking a worker's time.
    let mut inline = BytesMut::new();
    let mut received: u64 = 0;
    let mut more = !hyper::body::Body::is_end_stream(&body);
    while more && inline.len() < protocol::INLINE_BODY {
        match body.frame().await {
            None => more = false,
            Some(Err(_)) => {
                return Err(plain(StatusCode::BAD_REQUEST, "Bad Request: broken body\n"));
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    received += data.len() as u64;
                    if received > shared.max_body_bytes {
                        return Err(too_large(shared.max_body_bytes));
                    }
                    inline.extend_from_slice(&data);
                }
            }
        }
    }

    let lease = match shared.router.acquire(shared.timeout).await {
        Ok(lease) => lease,
        Err(NoWorker::NoneInService) => return Err(unavailable("no worker is in service")),
        Err(NoWorker::Busy) => return Err(unavailable("all workers are busy")),
        Err(NoWorker::QueueFull) => {
            return Err(unavailable("all workers are busy and the queue is full"));
        }
    };
    let channel = lease.channel.clone();
    let asgi = channel.is_asgi();
    let head = if asgi {
        scope::encode(&parts, conn)
    } else {
        environ::encode(&parts, conn)
            .map_err(|_| plain(StatusCode::BAD_REQUEST, "Bad Request: NUL in path\n"))?
    };
    // A WSGI app sees a WebSocket handshake as a plain request.
    let upgrade = upgrade.filter(|_| asgi);
    let flags = if upgrade.is_some() {
        protocol::FLAG_WEBSOCKET
    } else if more {
        protocol::FLAG_MORE_BODY
    } else {
        0
    };
    let stream = channel.open(more || upgrade.is_some(), shared.timeout);
    let depth = channel.in_flight.load(Ordering::Relaxed);
    let sent = Instant::now();
    channel.send(protocol::encode_request(stream.id, &head, &inline, flags));
    drop(inline);
    let pump = match &stream.credit {
        Some(credit) if upgrade.is_none() => Some(tokio::spawn(pump_body(
            body,
            channel.clone(),
            stream.id,
            credit.clone(),
            received,
            shared.max_body_bytes,
        ))),
        _ => None,
    };
    let pump = PumpGuard(pump);

    let first = stream.first.await;
    if stream
        .credit
        .as_ref()
        .is_some_and(|c| c.overflow.load(Ordering::Acquire))
    {
        return Err(too_large(shared.max_body_bytes));
    }
    let first = match first {
        Ok(First::TimedOut) => {
            let reason = format!(
                "request {} {} exceeded the timeout of {:?} on worker {} (pid {})",
                parts.method,
                parts.uri.path(),
                shared.timeout,
                channel.slot,
                channel.pid
            );
            if asgi {
                // One slow coroutine says nothing about the others on its
                // event loop: cancel it alone (a blocked loop stops the
                // heartbeat, and that replaces the worker).
                tracing::warn!("{reason}; cancelling it");
                channel.send(protocol::encode(protocol::CANCEL, stream.id, b"t"));
            } else {
                let _ = shared.replace.send((channel.serial, reason));
            }
            return Err(plain(StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout\n"));
        }
        Err(_) => {
            return Err(plain(
                StatusCode::BAD_GATEWAY,
                "Bad Gateway: the worker died\n",
            ));
        }
        Ok(first) => first,
    };
    channel.served.fetch_add(1, Ordering::Relaxed);
    channel.answered(sent.elapsed(), depth);
    match first {
        First::Full(payload) => {
            drop(lease);
            let Some((head, body)) = protocol::split_full(&payload) else {
                return Err(bad_app("malformed response frame"));
            };
            // Bigger bodies must stream under the window: corral holds
            // this one until a client, perhaps a slow one, takes it.
            if body.len() > protocol::RESPONSE_WINDOW {
                return Err(bad_app(&format!(
                    "a whole body of {} bytes, over the response window of {}",
                    body.len(),
                    protocol::RESPONSE_WINDOW
                )));
            }
            let mut resp = build(head, Body::empty())?;
            if !is_head && may_have_body(resp.status()) {
                *resp.body_mut() = Body::full(fit_to_content_length(&mut resp, body));
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
            let body = Body::Stream(StreamBody {
                events,
                stream: stream.id,
                lease: Some(lease),
                unacked: 0,
                done: false,
                declared: None,
                sent: 0,
                _pump: pump,
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
                return Err(bad_app(
                    "websocket.accept for a request that is no handshake",
                ));
            };
            let resp = websocket::accept_response(key, &head).map_err(|e| bad_app(&e))?;
            let session = websocket::Session {
                stream: stream.id,
                lease,
                events,
                credit,
            };
            tokio::spawn(websocket::relay(upgrade, session, shared.drain.clone()));
            Ok(resp)
        }
        First::TimedOut => unreachable!("handled above"),
    }
}

/// Streams the rest of a request body to the worker as it grants credit.
async fn pump_body(
    mut body: Incoming,
    channel: Arc<Channel>,
    stream: u32,
    credit: Arc<Credit>,
    mut received: u64,
    max: u64,
) {
    loop {
        // Wait for credit.
        loop {
            let notified = credit.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if credit.closed.load(Ordering::Acquire) {
                return;
            }
            if credit.available.load(Ordering::Acquire) > 0 {
                break;
            }
            notified.await;
        }
        match body.frame().await {
            None => {
                channel.send(protocol::encode(protocol::BODY_END, stream, b""));
                return;
            }
            Some(Err(_)) => {
                channel.send(protocol::encode(protocol::CANCEL, stream, b""));
                return;
            }
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                received += data.len() as u64;
                if received > max {
                    credit.overflow.store(true, Ordering::Release);
                    channel.send(protocol::encode(protocol::CANCEL, stream, b""));
                    return;
                }
                for chunk in data.chunks(protocol::MAX_FRAME) {
                    channel.send(protocol::encode(protocol::BODY, stream, chunk));
                }
                credit
                    .available
                    .fetch_sub(data.len() as i64, Ordering::AcqRel);
            }
        }
    }
}

/// A whole body must match the app's Content-Length: PEP 3333 says never
/// send more than it declares (the rest is cut), and a shorter body than
/// declared would leave the client waiting (its header is corrected).
/// [`build`] left at most one Content-Length, a number.
fn fit_to_content_length(resp: &mut Response<Body>, body: Bytes) -> Bytes {
    let declared = resp
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    match declared {
        Some(n) if n < body.len() => body.slice(..n),
        Some(n) if n > body.len() => {
            tracing::warn!(
                "the app declared Content-Length: {n} but sent {} bytes; sending what it sent",
                body.len()
            );
            resp.headers_mut()
                .insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            body
        }
        _ => body,
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
fn build(head: Bytes, body: Body) -> Reply {
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
    if let Some(reason) = head.reason
        && status.canonical_reason().map(str::as_bytes) != Some(reason.as_bytes())
    {
        resp.extensions_mut().insert(reason);
    }
    let headers = resp.headers_mut();
    headers.reserve(head.headers.len());
    for (name, value) in head.headers {
        if name == http::header::TRANSFER_ENCODING {
            continue; // framing is corral's job
        }
        headers.append(name, value);
    }
    let length = content_length(headers).map_err(|e| bad_app(&e))?;
    if !may_have_body(status) {
        headers.remove(http::header::CONTENT_LENGTH);
    } else if let Some((n, true)) = length {
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    Ok(resp)
}

fn bad_app(why: &str) -> Response<Body> {
    tracing::error!("the app sent an invalid response: {why}");
    plain(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n")
}

fn too_large(max: u64) -> Response<Body> {
    let mut r = plain(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("Payload Too Large: the limit is {max} bytes\n"),
    );
    r.headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    r
}

fn unavailable(why: &str) -> Response<Body> {
    let mut r = plain(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("Service Unavailable: {why}\n"),
    );
    r.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

pub fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(Body::full(Bytes::copy_from_slice(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
