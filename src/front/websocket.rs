//! WebSockets for ASGI apps. hyper parses the upgrade request; the worker's
//! app accepts (`WS_ACCEPT`) or refuses (a plain response) it; corral then
//! answers 101 and relays whole messages between the client and the worker
//! for as long as both keep the socket open. tungstenite speaks the wire
//! protocol (framing, masking, fragmentation, ping/pong).
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
//! most of a `ws_max_message` cannot pile up corral's memory.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use super::Drain;
use super::body::Body;
use crate::config::WebSocketLimits;
use crate::router::Lease;
use crate::worker::channel::{Credit, Event, Window};
use crate::worker::protocol;

/// tungstenite allocates its read buffer up front: small, so that thousands
/// of idle sockets cost little (it grows for large messages).
const READ_BUFFER: usize = 2048;
/// What tungstenite may queue for a client beyond one whole message: a
/// frame's header, and a few pongs.
const WRITE_SLACK: usize = 4096;
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

type Sink = SplitSink<WebSocketStream<Counted>, Message>;
type Source = SplitStream<WebSocketStream<Counted>>;

/// The bytes all WebSockets have read since each one's last whole message,
/// and the most they may hold together.
pub struct Unfinished {
    held: AtomicUsize,
    cap: usize,
}

impl Unfinished {
    /// As much as 8 sockets each sending a whole `max_message` (the
    /// buffers that hold it grow by doubling: about twice that in memory).
    pub fn new(max_message: usize) -> Arc<Unfinished> {
        Arc::new(Unfinished {
            held: AtomicUsize::new(0),
            cap: max_message.saturating_mul(8),
        })
    }
}

/// A WebSocket's connection, counting what it reads into [`Unfinished`]
/// until [`Counted::whole`] says a message is complete. A read that takes
/// the count past the cap fails, and `over` says why. The pongs owed to a
/// client that does not read them count too ([`Counted::owe`]), until a
/// write goes through: each ping makes tungstenite queue a pong, and a
/// client that sends pings and reads nothing made it queue without end.
struct Counted {
    io: TokioIo<Upgraded>,
    all: Arc<Unfinished>,
    mine: Arc<AtomicUsize>,
    owed: Arc<AtomicUsize>,
    over: Arc<AtomicBool>,
}

impl Counted {
    /// A message came whole: what this socket read for it is given back.
    fn whole(all: &Unfinished, mine: &AtomicUsize) {
        let n = mine.swap(0, Ordering::AcqRel);
        all.held.fetch_sub(n, Ordering::AcqRel);
    }

    /// A control frame of `payload` bytes came (it may come between the
    /// fragments of a message): only its own bytes are given back, its
    /// payload and at most 6 bytes of header (a client's frames are
    /// masked), so that pings cannot clear what a message holds.
    fn control(all: &Unfinished, mine: &AtomicUsize, payload: usize) {
        let frame = payload + 6;
        let taken = mine
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(frame))
            })
            .map_or(0, |n| n.min(frame));
        all.held.fetch_sub(taken, Ordering::AcqRel);
    }

    /// A ping of `payload` bytes came: its pong (the payload and a 2-byte
    /// header) is owed until the client takes a byte. False when that takes
    /// all sockets over the cap.
    fn owe(all: &Unfinished, owed: &AtomicUsize, payload: usize) -> bool {
        let pong = payload + 2;
        owed.fetch_add(pong, Ordering::AcqRel);
        all.held.fetch_add(pong, Ordering::AcqRel) + pong <= all.cap
    }

    /// The client took bytes: the pongs queued for it are on their way.
    fn paid(all: &Unfinished, owed: &AtomicUsize) {
        let n = owed.swap(0, Ordering::AcqRel);
        if n > 0 {
            all.held.fetch_sub(n, Ordering::AcqRel);
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        Counted::whole(&self.all, &self.mine);
        Counted::paid(&self.all, &self.owed);
    }
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.mine.fetch_add(n, Ordering::AcqRel);
            if self.all.held.fetch_add(n, Ordering::AcqRel) + n > self.all.cap {
                self.over.store(true, Ordering::Release);
                return Poll::Ready(Err(std::io::Error::other(
                    "unfinished WebSocket messages over their cap",
                )));
            }
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let wrote = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(wrote, Poll::Ready(Ok(n)) if n > 0) {
            Counted::paid(&self.all, &self.owed);
        }
        wrote
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
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
    // What tungstenite may queue for the client: one message (a send
    // waits until the last one is written), or pongs up to that size.
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(limits.max_message.saturating_add(WRITE_SLACK))
        .max_message_size(Some(limits.max_message))
        .max_frame_size(Some(limits.max_message));
    let mine = Arc::new(AtomicUsize::new(0));
    let owed = Arc::new(AtomicUsize::new(0));
    let over = Arc::new(AtomicBool::new(false));
    let io = Counted {
        io: TokioIo::new(io),
        all: unfinished.clone(),
        mine: mine.clone(),
        owed: owed.clone(),
        over: over.clone(),
    };
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    let (mut sink, mut source) = ws.split();
    // The inbound side tells the outbound side (which owns the sink, so
    // sends the pings) of each pong, and whether it is held up waiting for
    // the app's credit (then it reads nothing, pongs included).
    let pong = Notify::new();
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
            let next = source.next().await;
            match &next {
                Some(Ok(Message::Ping(p))) => {
                    Counted::control(&unfinished, &mine, p.len());
                    if !Counted::owe(&unfinished, &owed, p.len()) {
                        return End::Busy;
                    }
                }
                Some(Ok(Message::Pong(p))) => {
                    Counted::control(&unfinished, &mine, p.len());
                }
                // A message came whole, or the socket ended: what was read
                // for it is no longer unfinished.
                _ => Counted::whole(&unfinished, &mine),
            }
            let (kind, data) = match next {
                Some(Ok(Message::Text(t))) => (protocol::FrameKind::WsText, Bytes::from(t)),
                Some(Ok(Message::Binary(b))) => (protocol::FrameKind::WsBinary, b),
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    return End::ClientClosed(code, reason);
                }
                Some(Ok(Message::Pong(_))) => {
                    pong.notify_one();
                    continue;
                }
                Some(Ok(_)) => continue, // a ping: tungstenite answers
                Some(Err(WsError::Capacity(_))) => return End::TooBig,
                Some(Err(_)) if over.load(Ordering::Acquire) => return End::Busy,
                Some(Err(_)) | None => return End::ClientGone,
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
                () = sleep_until(wake) => {
                    let Some(k) = keepalive.as_mut() else { continue };
                    let alive = starved.load(Ordering::Acquire);
                    match k.wake(Instant::now(), alive) {
                        Beat::Ping => {
                            if sink.send(Message::Ping(Bytes::new())).await.is_err() {
                                return End::ClientGone;
                            }
                        }
                        Beat::TimedOut => return End::NoPong,
                        Beat::Wait => {}
                    }
                    continue;
                }
            };
            let (msg, len) = match event {
                Some(Event::Message { binary: true, data }) => {
                    let len = data.len();
                    (Message::Binary(data), len)
                }
                Some(Event::Message {
                    binary: false,
                    data,
                }) => {
                    let len = data.len();
                    match Utf8Bytes::try_from(data) {
                        Ok(text) => (Message::Text(text), len),
                        Err(_) => {
                            tracing::error!("the app sent a text message that is not UTF-8");
                            return End::AppFailed;
                        }
                    }
                }
                Some(Event::Close(payload)) => {
                    let (code, reason) = protocol::decode_close(&payload);
                    return End::AppClosed(code, reason);
                }
                // The worker died, or ended the stream without closing.
                Some(_) | None => return End::AppFailed,
            };
            if sink.send(msg).await.is_err() {
                return End::ClientGone;
            }
            unacked += len;
            if unacked >= protocol::RESPONSE_WINDOW / 2 {
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
            // tungstenite queued the reply to the client's close.
            let _ = tokio::time::timeout(CLOSE_WAIT, sink.flush()).await;
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
                "a WebSocket closed (1013): the unfinished messages and unread pongs of all WebSockets are over {} MiB (8 times ws_max_message)",
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
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: clamp_reason(reason).into(),
    };
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        if sink.send(Message::Close(Some(frame))).await.is_ok() {
            while let Some(Ok(_)) = source.next().await {}
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
