//! WebSockets for ASGI apps. hyper parses the upgrade request; the worker's
//! app accepts (`WS_ACCEPT`) or refuses (a plain response) it; corral then
//! answers 101 and relays whole messages between the client and the worker
//! for as long as both keep the socket open. corral reads and writes the
//! frames itself ([`frames`]: a socket holds no buffer the size of its
//! largest message once the message is through).
//! A ping is answered with a pong for the latest ping only (RFC 6455
//! section 5.5.3 allows it), so a client that sends pings and reads
//! nothing queues at most one.
//!
//! Flow control is the same as for bodies: corral forwards at most
//! [`protocol::BODY_CREDIT`] bytes of client messages before the worker
//! grants more (it grants as the app receives them), and the worker sends
//! at most [`protocol::RESPONSE_WINDOW`] bytes before corral grants more (it
//! grants as the client takes them). A WebSocket holds its worker place (its
//! lease) until it closes.
//!
//! Limits (`server.ws_*`, [`WebSocketLimits`]): a client message over
//! `ws_max_message` closes the socket with 1009 (the app hears 1009 too);
//! corral pings every `ws_ping_interval`, and a client that answers no ping
//! within `ws_ping_timeout` is closed with 1011 (the pure [`KeepAlive`]
//! decides when); a close code the app may not send (see `sendable`) goes
//! out as 1011, logged; close reasons are cut to 123 bytes. The app's
//! `WS_ACCEPT` headers are checked like a response head. No extension is
//! negotiated (tungstenite has no permessage-deflate). What clients have
//! sent of messages not yet whole (fragments, a frame still arriving) is
//! counted over every socket ([`Unfinished`]): past 8 times
//! `ws_max_message` (128 MiB at the default) the socket that reads more is
//! closed with 1013 (try again later), so that many sockets each sending
//! most of a `ws_max_message` cannot pile up corral's memory. A frame RFC
//! 6455 forbids (unmasked, reserved bits or opcodes, a control frame over
//! 125 bytes or fragmented, a continuation out of place) closes with
//! 1002, text that is not UTF-8 with 1007.

mod frames;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use self::frames::{Incoming, Refused};

use super::Drain;
use super::body::Body;
use crate::config::WebSocketLimits;
use crate::router::Lease;
use crate::worker::channel::{Credit, Event, Window};
use crate::worker::protocol;

/// How long a closing handshake may take before the socket is dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// What kind of upgrade a request asks for (RFC 6455 section 4.2.1).
#[derive(Debug, PartialEq, Eq)]
pub enum Upgrade {
    /// Not a WebSocket handshake: plain HTTP.
    None,
    /// A WebSocket handshake corral can take.
    WebSocket,
    /// A WebSocket handshake for a protocol version other than 13.
    BadVersion,
}

pub fn upgrade_kind<B>(req: &http::Request<B>) -> Upgrade {
    let h = req.headers();
    if req.method() != Method::GET
        || req.version() != Version::HTTP_11
        || !has_token(h, &CONNECTION, "upgrade")
        || !has_token(h, &UPGRADE, "websocket")
        || !h.contains_key(SEC_WEBSOCKET_KEY)
    {
        return Upgrade::None;
    }
    match h.get(SEC_WEBSOCKET_VERSION) {
        Some(v) if v == "13" => Upgrade::WebSocket,
        _ => Upgrade::BadVersion,
    }
}

fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// The 426 answer to a handshake for an unsupported protocol version.
pub fn bad_version() -> Response<Body> {
    let mut r = super::reply::plain(
        StatusCode::UPGRADE_REQUIRED,
        "Upgrade Required: WebSocket version 13 only\n",
    );
    r.headers_mut()
        .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    r
}

/// The 101 answer to a handshake the app accepted: `payload` is the
/// worker's `WS_ACCEPT` (subprotocol and headers, checked again here).
pub fn accept_response(key: &HeaderValue, payload: &Bytes) -> Result<Response<Body>, String> {
    let accept = protocol::parse_accept(payload).map_err(|e| format!("websocket.accept: {e}"))?;
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    for (name, value) in accept.headers {
        // The handshake's own headers are corral's to write.
        if ![
            UPGRADE,
            CONNECTION,
            SEC_WEBSOCKET_ACCEPT,
            SEC_WEBSOCKET_PROTOCOL,
            // No extension is in use: an app may not claim one.
            SEC_WEBSOCKET_EXTENSIONS,
        ]
        .contains(&name)
            && name != http::header::CONTENT_LENGTH
            && name != http::header::TRANSFER_ENCODING
        {
            h.append(name, value);
        }
    }
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    let accept_key = derive_accept_key(key.as_bytes());
    h.insert(
        SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept_key).map_err(|e| e.to_string())?,
    );
    if let Some(subprotocol) = accept.subprotocol {
        h.insert(SEC_WEBSOCKET_PROTOCOL, subprotocol);
    }
    Ok(resp)
}

/// An accepted WebSocket: its stream on the worker's channel.
pub struct Session {
    pub stream: u32,
    /// Holds the worker's place while the socket is open.
    pub lease: Lease,
    pub events: mpsc::UnboundedReceiver<Event>,
    pub credit: Arc<Credit>,
    /// The app's credit for messages to the client.
    pub window: Arc<Window>,
}

type Sink = frames::Writer<WriteHalf<TokioIo<Upgraded>>>;
type Source = frames::Reader<ReadHalf<TokioIo<Upgraded>>>;

/// The bytes all WebSockets have read since each one's last whole message,
/// and the most they may hold together.
pub struct Unfinished {
    held: AtomicUsize,
    cap: usize,
}

impl Unfinished {
    /// As much as 8 sockets each sending a whole `max_message`.
    pub fn new(max_message: usize) -> Arc<Unfinished> {
        Arc::new(Unfinished {
            held: AtomicUsize::new(0),
            cap: max_message.saturating_mul(8),
        })
    }
}

/// Why a relay ended.
enum End {
    /// The client sent a close frame (code, reason).
    ClientClosed(u16, String),
    /// The client's connection broke without a close frame.
    ClientGone,
    /// The client sent a message over `ws_max_message`.
    TooBig,
    /// The client sent a frame RFC 6455 forbids (the close code: 1002,
    /// or 1007 for text that is not UTF-8).
    Broke(u16, &'static str),
    /// Unfinished messages of all sockets are over their cap.
    Busy,
    /// The client answered no ping within `ws_ping_timeout`.
    NoPong,
    /// The app closed the socket (code, reason).
    AppClosed(u16, String),
    /// The worker died, or broke the protocol.
    AppFailed,
    /// corral is stopping.
    Shutdown,
}

/// Relays messages between the client and the app until either closes, the
/// worker dies (1011) or corral stops (1001). The two directions run side by
/// side, so a client that writes without reading cannot wedge the other.
pub async fn relay(
    upgrade: OnUpgrade,
    session: Session,
    drain: Arc<Drain>,
    limits: WebSocketLimits,
    unfinished: Arc<Unfinished>,
) {
    let _open = drain.enter();
    let mut closing = drain.closing();
    let Session {
        stream: id,
        lease,
        mut events,
        credit,
        window,
    } = session;
    let channel = lease.channel.clone();
    let io = match upgrade.await {
        Ok(io) => io,
        Err(_) => {
            channel.send(protocol::encode_close(id, 1006, ""));
            return;
        }
    };
    let (read, write) = tokio::io::split(TokioIo::new(io));
    let mut source = frames::Reader::new(read, limits.max_message, unfinished.clone());
    let mut sink = frames::Writer::new(write);
    // The inbound side tells the outbound side (which owns the sink) of
    // each pong, of the latest ping to answer, and whether it is held up
    // waiting for the app's credit (then it reads nothing, pongs included).
    let pong = Notify::new();
    let ping: std::sync::Mutex<Option<Bytes>> = std::sync::Mutex::new(None);
    let pinged = Notify::new();
    let starved = std::sync::atomic::AtomicBool::new(false);

    let inbound = async {
        loop {
            while credit.available.load(Ordering::Acquire) <= 0 {
                let granted = credit.notify.notified();
                tokio::pin!(granted);
                granted.as_mut().enable();
                if credit.available.load(Ordering::Acquire) > 0 {
                    break;
                }
                starved.store(true, Ordering::Release);
                granted.await;
                starved.store(false, Ordering::Release);
            }
            let (kind, data) = match source.next().await {
                Ok(Incoming::Message { text: true, data }) => (protocol::FrameKind::WsText, data),
                Ok(Incoming::Message { text: false, data }) => {
                    (protocol::FrameKind::WsBinary, data)
                }
                Ok(Incoming::Close(frame)) => {
                    let (code, reason) = frame.unwrap_or((1005, String::new()));
                    return End::ClientClosed(code, reason);
                }
                Ok(Incoming::Pong) => {
                    pong.notify_one();
                    continue;
                }
                Ok(Incoming::Ping(payload)) => {
                    // Only the latest ping is answered: one pong at most
                    // waits for a client that does not read.
                    *ping.lock().unwrap_or_else(|e| e.into_inner()) = Some(payload);
                    pinged.notify_one();
                    continue;
                }
                Err(Refused::TooBig) => return End::TooBig,
                Err(Refused::Busy) => return End::Busy,
                Err(Refused::Protocol(why)) => return End::Broke(1002, why),
                Err(Refused::NotUtf8) => return End::Broke(1007, "text that is not UTF-8"),
                Err(Refused::Gone) => return End::ClientGone,
            };
            credit
                .available
                .fetch_sub(data.len() as i64, Ordering::AcqRel);
            channel.send(protocol::encode(kind, id, &data));
        }
    };
    let outbound = async {
        let mut unacked = 0usize;
        let mut keepalive = limits
            .ping_interval
            .map(|interval| KeepAlive::new(Instant::now(), interval, limits.ping_timeout));
        loop {
            let wake = keepalive.as_ref().map(KeepAlive::wake_at);
            let event = tokio::select! {
                event = events.recv() => event,
                () = pong.notified() => {
                    if let Some(k) = keepalive.as_mut() {
                        k.answered();
                    }
                    continue;
                }
                () = pinged.notified() => {
                    let payload = ping.lock().unwrap_or_else(|e| e.into_inner()).take();
                    if let Some(payload) = payload
                        && sink.send(frames::PONG, &payload).await.is_err()
                    {
                        return End::ClientGone;
                    }
                    continue;
                }
                () = sleep_until(wake) => {
                    let Some(k) = keepalive.as_mut() else { continue };
                    let alive = starved.load(Ordering::Acquire);
                    match k.wake(Instant::now(), alive) {
                        Beat::Ping => {
                            if sink.send(frames::PING, b"").await.is_err() {
                                return End::ClientGone;
                            }
                        }
                        Beat::TimedOut => return End::NoPong,
                        Beat::Wait => {}
                    }
                    continue;
                }
            };
            let (opcode, data) = match event {
                Some(Event::Message { binary: true, data }) => (frames::BINARY, data),
                Some(Event::Message {
                    binary: false,
                    data,
                }) => {
                    if std::str::from_utf8(&data).is_err() {
                        tracing::error!("the app sent a text message that is not UTF-8");
                        return End::AppFailed;
                    }
                    (frames::TEXT, data)
                }
                Some(Event::Close(payload)) => {
                    let (code, reason) = protocol::decode_close(&payload);
                    return End::AppClosed(code, reason);
                }
                // The worker died, or ended the stream without closing.
                Some(_) | None => return End::AppFailed,
            };
            if sink.send(opcode, &data).await.is_err() {
                return End::ClientGone;
            }
            let len = data.len();
            unacked += len;
            if unacked >= window.size() / 2 {
                channel.grant(id, &window, unacked as u32);
                unacked = 0;
            }
        }
    };
    let end = tokio::select! {
        end = inbound => end,
        end = outbound => end,
        _ = super::closed(&mut closing) => End::Shutdown,
    };
    const GOING_AWAY: &str = "server shutting down";
    match end {
        End::ClientClosed(code, reason) => {
            channel.send(protocol::encode_close(id, code, &reason));
            // The reply to the client's close echoes its code (none for none).
            let code = (code != 1005).then_some(code);
            let reply = sink.close(code, clamp_reason(&reason));
            let _ = tokio::time::timeout(CLOSE_WAIT, reply).await;
        }
        End::Broke(code, why) => {
            tracing::debug!("a WebSocket client broke the protocol ({why}): closed with {code}");
            channel.send(protocol::encode_close(id, 1006, ""));
            close(sink, source, code, why).await;
        }
        End::ClientGone => {
            channel.send(protocol::encode_close(id, 1006, ""));
        }
        End::TooBig => {
            const TOO_BIG: &str = "message too big";
            channel.send(protocol::encode_close(id, 1009, TOO_BIG));
            close(sink, source, 1009, TOO_BIG).await;
        }
        End::Busy => {
            const BUSY: &str = "too many unfinished messages";
            tracing::warn!(
                "a WebSocket closed (1013): the unfinished messages of all WebSockets are over {} MiB (8 times ws_max_message)",
                unfinished.cap >> 20
            );
            channel.send(protocol::encode_close(id, 1013, BUSY));
            close(sink, source, 1013, BUSY).await;
        }
        End::NoPong => {
            const NO_PONG: &str = "no pong in time";
            channel.send(protocol::encode_close(id, 1011, NO_PONG));
            close(sink, source, 1011, NO_PONG).await;
        }
        End::AppClosed(code, reason) => {
            let code = if sendable(code) {
                code
            } else {
                tracing::error!(
                    "the app closed a WebSocket with code {code}, which may not be sent \
                     (RFC 6455 section 7.4): sending 1011 instead"
                );
                1011
            };
            close(sink, source, code, &reason).await;
        }
        // A worker stopped by a fast stop: corral is going away.
        End::AppFailed if *closing.borrow() => {
            close(sink, source, 1001, GOING_AWAY).await;
        }
        End::AppFailed => {
            channel.send(protocol::encode_close(id, 1011, ""));
            close(sink, source, 1011, "").await;
        }
        End::Shutdown => {
            channel.send(protocol::encode_close(id, 1001, GOING_AWAY));
            close(sink, source, 1001, GOING_AWAY).await;
        }
    }
}

/// Sleeps until `at`; forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What the keep-alive clock asks for when it wakes.
#[derive(Debug, PartialEq, Eq)]
enum Beat {
    /// Send a ping now.
    Ping,
    /// The last ping went unanswered for `ping_timeout`: close with 1011.
    TimedOut,
    /// Nothing to do yet.
    Wait,
}

/// The keep-alive clock of one socket, without I/O: one ping every
/// `interval`, and at most one unanswered at a time; a ping unanswered for
/// `timeout` ends the socket.
#[derive(Debug)]
struct KeepAlive {
    interval: Duration,
    timeout: Duration,
    /// When the next ping is due.
    next_ping: Instant,
    /// When the ping not yet answered went out.
    unanswered: Option<Instant>,
}

impl KeepAlive {
    fn new(now: Instant, interval: Duration, timeout: Duration) -> KeepAlive {
        KeepAlive {
            interval,
            timeout,
            next_ping: now + interval,
            unanswered: None,
        }
    }

    /// When [`KeepAlive::wake`] is next due.
    fn wake_at(&self) -> Instant {
        match self.unanswered {
            Some(sent) => sent + self.timeout,
            None => self.next_ping,
        }
    }

    /// A pong came.
    fn answered(&mut self) {
        self.unanswered = None;
    }

    /// The clock woke at `now`. `alive`: the client is known to be there
    /// though its pong may not have been read (its messages wait for the
    /// app, so corral reads nothing from it).
    fn wake(&mut self, now: Instant, alive: bool) -> Beat {
        if alive {
            self.unanswered = None;
        }
        if let Some(sent) = self.unanswered {
            return if now >= sent + self.timeout {
                Beat::TimedOut
            } else {
                Beat::Wait
            };
        }
        if now < self.next_ping {
            return Beat::Wait;
        }
        self.unanswered = Some(now);
        self.next_ping = now + self.interval;
        Beat::Ping
    }
}

/// Close codes an endpoint may send: RFC 6455 section 7.4 and the IANA
/// registry (1004 is reserved; 1005, 1006 and 1015 never go in a frame;
/// 1016 to 2999 are for the protocol itself).
fn sendable(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A close reason cut to the 123 bytes a close frame has room for, on a
/// character boundary.
fn clamp_reason(reason: &str) -> &str {
    const MAX_REASON: usize = 123;
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// Sends a close frame and waits (briefly) for the client's reply.
async fn close(mut sink: Sink, mut source: Source, code: u16, reason: &str) {
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        if sink.close(Some(code), clamp_reason(reason)).await.is_ok() {
            while let Ok(m) = source.next().await {
                if matches!(m, Incoming::Close(_)) {
                    break;
                }
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_cut_on_a_character_boundary() {
        assert_eq!(clamp_reason("bye"), "bye");
        let long = "é".repeat(100); // 200 bytes
        let cut = clamp_reason(&long);
        assert_eq!(cut.len(), 122);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(clamp_reason(&"x".repeat(500)).len(), 123);
    }

    #[test]
    fn keepalive_pings_each_interval_and_times_out_an_unanswered_ping() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut k = KeepAlive::new(t0, s(20), s(5));
        assert_eq!(k.wake_at(), t0 + s(20));
        assert_eq!(k.wake(t0 + s(10), false), Beat::Wait);
        assert_eq!(k.wake(t0 + s(20), false), Beat::Ping);
        // Unanswered: the deadline is the next wake, not the next ping.
        assert_eq!(k.wake_at(), t0 + s(25));
        assert_eq!(k.wake(t0 + s(24), false), Beat::Wait);
        k.answered();
        assert_eq!(k.wake_at(), t0 + s(40));
        assert_eq!(k.wake(t0 + s(40), false), Beat::Ping);
        assert_eq!(k.wake(t0 + s(45), false), Beat::TimedOut);
    }

    #[test]
    fn keepalive_sends_one_ping_at_a_time_and_trusts_a_starved_client() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // A timeout longer than the interval: no second ping meanwhile.
        let mut k = KeepAlive::new(t0, s(1), s(10));
        assert_eq!(k.wake(t0 + s(1), false), Beat::Ping);
        assert_eq!(k.wake_at(), t0 + s(11));
        assert_eq!(k.wake(t0 + s(2), false), Beat::Wait);
        // A client whose messages wait for the app is alive.
        assert_eq!(k.wake(t0 + s(11), true), Beat::Ping);
        assert_eq!(k.wake(t0 + s(21), false), Beat::TimedOut);
    }

    #[test]
    fn only_sendable_close_codes_pass() {
        for code in [1000, 1001, 1003, 1007, 1011, 1012, 1014, 3000, 4999] {
            assert!(sendable(code), "{code}");
        }
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            assert!(!sendable(code), "{code}");
        }
    }
}
