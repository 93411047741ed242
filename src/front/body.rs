//! Response bodies: a whole body the worker sent in one frame, or a stream of
//! DATA frames that grants the worker more credit as the client takes it.
//!
//! Over HTTP/2 a client can stop taking one stream's bytes without
//! stopping its connection (a zero window): hyper then stops polling the
//! body and no write ever blocks, so `send_timeout` on the socket never
//! fires while the worker's thread waits for credit. [`watch_stalls`]
//! ends such a stream after `send_timeout` without progress.
//!
//! On HTTP/2, hyper is handed at most [`H2_CHUNK`] bytes at a time: it
//! takes a chunk before the stream has window for it, and h2 queues all
//! of a chunk it was given once the window has a byte, so a bigger piece
//! would sit in hyper for as long as the client liked, on each of a
//! connection's streams. A whole body bigger than a chunk, which the
//! worker sent at once and then went on to other requests, is a
//! [`KeptBody`]: corral holds it for the client, counted in the
//! outbox ([`Budget::outbox`]) over all connections, and watched for stalls like a
//! stream. Past the outbox's cap the body keeps its worker's place until
//! it is taken, as a streamed body does: a client that opened stream after
//! stream and took nothing made corral hold 200 KiB for each (500 MiB for
//! 50 connections in two seconds), for as long as it kept them open.
//!
//! A smaller whole body is counted in the outbox too ([`Body::Small`]),
//! while hyper holds it, without a stall watch of its own (a task per
//! response) while the outbox is under half full; past that it is kept as
//! a big one is. Before, such bodies were counted nowhere: a client that
//! opened 100 streams on each of 1,000 connections with no window made
//! corral hold 16 KB answers for all of them (434 MiB in two seconds), for
//! as long as it liked.
//!
//! A body shorter than the app's Content-Length, streamed or whole
//! ([`Body::Short`]), goes out under that length and ends in an error
//! ([`BodyError::Short`]) after a flush: hyper closes an HTTP/1.1
//! connection, resets an HTTP/2 stream, and the client sees the response
//! cut, as from gunicorn and uvicorn. (An HTTP/2 stream that ended
//! cleanly short of its length was a malformed response, RFC 9113 section
//! 8.1.1.)

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::{Notify, mpsc};

use super::hangup::Hangup;
use crate::router::Lease;
use crate::worker::channel::{Channel, Event, Window};
use crate::worker::protocol;

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the worker died while sending the response")]
    WorkerGone,
    #[error("the app failed while sending the response")]
    AppFailed,
    #[error("the client closed its connection")]
    ClientGone,
    #[error("the client took no bytes of the stream for the send timeout")]
    Stalled,
    #[error("the app sent less than its Content-Length")]
    Short,
}

/// The most of a response body hyper is handed at once on HTTP/2: one
/// DATA frame at h2's default frame size.
pub const H2_CHUNK: usize = 16 * 1024;

pub enum Body {
    Full(Option<Bytes>),
    /// A whole body of at most [`H2_CHUNK`] for an HTTP/2 client, counted
    /// in the outbox ([`Budget::outbox`]) for as long as hyper holds the body: hyper takes
    /// the bytes at once, and keeps them (and the body) until the stream
    /// has window for a byte, which a client may never give.
    Small {
        data: Option<Bytes>,
        _ticket: Ticket,
    },
    Stream(StreamBody),
    Kept(KeptBody),
    /// A whole body shorter than the app's Content-Length, which is sent
    /// as the app declared it: the body ends as a streamed one that ends
    /// short does, so that the client sees it cut.
    Short(Box<ShortBody>),
    /// A body whose access line waits for its end ([`Logged`]).
    Logged(Box<Logged>),
}

/// A response body that counts the bytes hyper takes of it, and calls
/// `at_end` with them when it is dropped: sent whole, cut, reset, or its
/// client gone. The access log writes its line there, as gunicorn writes
/// its line once the body is sent (`%(b)s` the bytes sent, `%(D)s` the
/// whole response's time).
pub struct Logged {
    pub inner: Body,
    pub sent: u64,
    pub at_end: Option<Box<dyn FnOnce(u64) + Send>>,
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some(at_end) = self.at_end.take() {
            at_end(self.sent);
        }
    }
}

/// What a body kept for an HTTP/2 client is counted as at least: its
/// stream's own state, in hyper and h2, which lives as long as the body
/// waits for window (about 4.4 KB a stream, measured with 100,000 of them).
const STREAM_COST: usize = 4096;

/// Bytes corral may hold for HTTP/2 clients over all connections, counted
/// by [`Ticket`]s: the outbox, whole bodies kept for clients
/// ([`KeptBody`], [`Body::Small`]; past it a body holds its worker's place
/// until the client takes it), and the response windows of requests in
/// flight (past it a worker gets a small one).
pub struct Budget {
    held: AtomicUsize,
    cap: usize,
    /// The least one ticket counts.
    floor: usize,
}

impl Budget {
    /// The outbox: as much as the bodies read ahead of dispatch may hold
    /// ([`super::upload::ReadAhead::for_queue`]): 64 MiB at the default
    /// `max_queued` of 1,024, and no less than 16 times 64 KiB. Each body
    /// counts as at least its stream's state.
    pub fn outbox(max_queued: usize) -> Arc<Budget> {
        Budget::for_queue(max_queued, STREAM_COST)
    }

    /// The response windows of HTTP/2 requests in flight, as big as the
    /// outbox.
    pub fn windows(max_queued: usize) -> Arc<Budget> {
        Budget::for_queue(max_queued, 0)
    }

    fn for_queue(max_queued: usize, floor: usize) -> Arc<Budget> {
        Arc::new(Budget {
            held: AtomicUsize::new(0),
            cap: max_queued.max(16).saturating_mul(protocol::INLINE_BODY),
            floor,
        })
    }

    /// Counts `n` bytes kept until the ticket is dropped; None when that
    /// would take the budget over its cap.
    pub fn keep(self: &Arc<Self>, n: usize) -> Option<Ticket> {
        self.keep_within(n, self.cap)
    }

    /// [`Budget::keep`] for a small body that no stall watch will cut:
    /// only while the outbox is under half full. A client that never
    /// takes such bodies holds at most that half for as long as it keeps
    /// its connections; past it, small bodies are kept as big ones are,
    /// and cut after `send_timeout`.
    pub fn keep_unwatched(self: &Arc<Self>, n: usize) -> Option<Ticket> {
        self.keep_within(n, self.cap / 2)
    }

    fn keep_within(self: &Arc<Self>, n: usize, cap: usize) -> Option<Ticket> {
        let n = n.max(self.floor);
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held + n <= cap).then_some(held + n)
            })
            .ok()?;
        Some(Ticket {
            budget: self.clone(),
            bytes: n,
        })
    }
}

/// Bytes counted in a [`Budget`], given back when dropped.
pub struct Ticket {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// A whole body corral holds for an HTTP/2 client, handed to hyper a
/// chunk at a time (see the module's doc).
pub struct KeptBody {
    rest: Bytes,
    /// The worker's place while the body is over the outbox's cap, and the
    /// progress the stall watch reads.
    relay: Arc<Relay>,
    _ticket: Option<Ticket>,
}

impl KeptBody {
    /// Keeps `body`: counted in `outbox` if it has room (the worker's place
    /// and its `window` are freed), or else holding them until the body is
    /// taken or cut.
    pub fn new(
        body: Bytes,
        lease: Lease,
        window: Option<Ticket>,
        outbox: &Arc<Budget>,
    ) -> KeptBody {
        let ticket = outbox.keep(body.len());
        let relay = Relay::new(lease, window);
        if ticket.is_some() {
            relay.release();
        }
        KeptBody {
            rest: body,
            relay,
            _ticket: ticket,
        }
    }

    /// What the stall watch shares with the body.
    pub fn relay(&self) -> Arc<Relay> {
        self.relay.clone()
    }
}

impl Drop for KeptBody {
    fn drop(&mut self) {
        self.relay.gone.notify_one();
        self.relay.release();
    }
}

impl Body {
    pub fn full(b: impl Into<Bytes>) -> Body {
        let b = b.into();
        Body::Full(if b.is_empty() { None } else { Some(b) })
    }

    pub fn empty() -> Body {
        Body::Full(None)
    }

    /// `self`, a whole body of `sent` bytes, under a Content-Length of
    /// `declared`, more than that. The length goes out as the app declared
    /// it, as gunicorn and uvicorn send it: corral's length of what was
    /// sent would have made a cut response look complete to the client and
    /// to any cache in front.
    /// `whose`: the request and its worker, for the log.
    pub fn short_of(self, declared: u64, sent: u64, whose: &str) -> Body {
        warn_short(declared, sent, whose);
        Body::Short(Box::new(ShortBody {
            body: self,
            ending: None,
            done: false,
        }))
    }
}

/// Says that the app ended a body of `sent` bytes short of its
/// Content-Length.
fn warn_short(declared: u64, sent: u64, whose: &str) {
    tracing::warn!("{whose}: the app declared Content-Length: {declared} but sent {sent} bytes");
}

/// A streamed response's worker, as the log names it (its request is not
/// kept for a line this rare: the access line has it, with the bytes).
fn worker_of(s: &StreamBody) -> String {
    format!("worker {} (pid {})", s.channel.slot, s.channel.pid)
}

/// Ends a body as `end` says at its next poll, and not at once, so that
/// hyper first sends what it holds of the response: the client sees the
/// head and every byte the app produced, then a cut body, as from
/// gunicorn, not an empty reply. An error ends the response: hyper closes
/// an HTTP/1.1 connection and resets an HTTP/2 stream (h2 drops what it
/// has not yet written of the stream, so an HTTP/2 client may get less).
fn end_after_a_flush<T>(
    ending: &mut Option<BodyError>,
    cx: &mut Context<'_>,
    end: BodyError,
) -> Poll<T> {
    *ending = Some(end);
    cx.waker().wake_by_ref();
    Poll::Pending
}

/// A whole body shorter than its Content-Length ([`Body::short_of`]).
pub struct ShortBody {
    body: Body,
    /// How the body ends at the next poll (see [`end_after_a_flush`]).
    ending: Option<BodyError>,
    done: bool,
}

/// A response streamed from a worker.
pub struct StreamBody {
    pub events: mpsc::UnboundedReceiver<Event>,
    pub stream: u32,
    /// The worker's channel: credit and CANCEL go there.
    pub channel: Arc<Channel>,
    /// The worker's place, held until the response is complete, and the
    /// progress a stall watch reads.
    pub relay: Arc<Relay>,
    pub unacked: usize,
    /// The worker's response credit on this stream.
    pub window: Arc<Window>,
    pub done: bool,
    /// How the body ends at the next poll (see [`end_after_a_flush`]): the
    /// app ended it short of its Content-Length, failed, or its worker
    /// died mid-body.
    pub ending: Option<BodyError>,
    /// The app's Content-Length, when the response carries a body.
    pub declared: Option<u64>,
    /// Body bytes taken from the worker so far.
    pub sent: u64,
    /// Where `sent` is counted when the response is over.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The watch for the client leaving while the app has nothing to send
    /// (plain HTTP/1.1: see [`super::hangup`]).
    pub hangup: Option<Hangup>,
    /// The task streaming the request body, stopped with the response.
    pub _pump: PumpGuard,
    /// The most hyper is handed at once ([`H2_CHUNK`] on HTTP/2).
    pub chunk: usize,
    /// What is left of the worker's last DATA frame.
    pub pending: Bytes,
}

/// A worker's place for one response, and the response window it holds
/// of the budget ([`Shared::windows`](super::handler::Shared)), given back
/// together.
pub struct Place {
    _lease: Lease,
    _window: Option<Ticket>,
}

/// What a streamed response shares with its stall watch.
pub struct Relay {
    /// The worker's place, until the response is complete (or cut).
    lease: Mutex<Option<Place>>,
    /// Body frames hyper has taken.
    taken: AtomicU64,
    /// The watch ended the stream: the next poll fails it.
    cut: AtomicBool,
    /// The body is gone: the watch ends.
    gone: Notify,
}

impl Relay {
    pub fn new(lease: Lease, window: Option<Ticket>) -> Arc<Relay> {
        Arc::new(Relay {
            lease: Mutex::new(Some(Place {
                _lease: lease,
                _window: window,
            })),
            taken: AtomicU64::new(0),
            cut: AtomicBool::new(false),
            gone: Notify::new(),
        })
    }

    /// Frees the worker's place, once.
    fn release(&self) -> Option<Place> {
        self.lease.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The worker a streamed response is waiting on, for [`watch_stalls`].
pub struct Producer {
    pub channel: Arc<Channel>,
    pub stream: u32,
    /// The worker's credit: a stall is the client's only when the worker
    /// waits for it.
    pub window: Arc<Window>,
}

/// Ends an HTTP/2 stream whose client took none of its bytes for `timeout`
/// while its worker waits for credit, or while corral keeps its whole body
/// (`producer` None: a [`KeptBody`]). See the module's doc. The worker
/// gets CANCEL (its app's next write raises, as when a client leaves), its
/// place is freed, and the stream is reset at once through its `kill`
/// switch (hyper, waiting for window the client never gives, would not
/// poll the body again, and held the stream's data meanwhile: a client
/// that did this to stream after stream grew corral without bound). Runs
/// until the body is gone.
pub async fn watch_stalls(
    relay: Arc<Relay>,
    producer: Option<Producer>,
    timeout: Duration,
    metrics: Arc<crate::metrics::Metrics>,
    kill: Option<Arc<super::streams::Kill>>,
) {
    let mut taken = relay.taken.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            () = relay.gone.notified() => return,
            () = tokio::time::sleep(timeout) => {}
        }
        let now = relay.taken.load(Ordering::Relaxed);
        if now == taken && producer.as_ref().is_none_or(|p| p.window.exhausted()) {
            let lease = relay.release();
            if let Some(p) = &producer {
                // The response is complete: what stalls now is not ours.
                if lease.is_none() {
                    return;
                }
                p.channel
                    .send(protocol::encode(protocol::FrameKind::Cancel, p.stream, b""));
            }
            relay.cut.store(true, Ordering::Release);
            metrics.send_timed_out();
            tracing::debug!(
                "an HTTP/2 client took no bytes of a stream for {timeout:?}: cancelled"
            );
            drop(lease);
            if let Some(kill) = kill {
                kill.kill();
            }
            return;
        }
        taken = now;
    }
}

/// Aborts the request-body pump when the request is over.
pub struct PumpGuard(pub Option<tokio::task::JoinHandle<()>>);

impl Drop for PumpGuard {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

impl Drop for StreamBody {
    fn drop(&mut self) {
        self.metrics.response_body(self.sent);
        self.relay.gone.notify_one();
        let lease = self.relay.release();
        if !self.done
            && let Some(lease) = lease
        {
            // The client went away: tell the app to stop producing.
            self.channel.send(protocol::encode(
                protocol::FrameKind::Cancel,
                self.stream,
                b"",
            ));
            // The worker is busy with the stream until it ends it (a WSGI
            // thread learns of the CANCEL at its next piece): its place
            // stays taken till then, so that no request waits behind a
            // response nobody reads while another worker is free.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let (_, none) = mpsc::unbounded_channel();
                let mut events = std::mem::replace(&mut self.events, none);
                rt.spawn(async move {
                    let _lease = lease;
                    // Data the worker sent before it knew; the channel's
                    // end if the worker died.
                    while let Some(event) = events.recv().await {
                        if matches!(event, Event::End | Event::Abort | Event::Close(_)) {
                            break;
                        }
                    }
                });
            }
        }
    }
}

impl StreamBody {
    /// The next chunk of the worker's last DATA frame, counted as taken:
    /// the worker gets credit for it.
    fn hand_over(&mut self) -> Bytes {
        let b = self.pending.split_to(self.pending.len().min(self.chunk));
        self.unacked += b.len();
        self.sent += b.len() as u64;
        self.relay.taken.fetch_add(1, Ordering::Relaxed);
        if self.unacked >= self.window.size() / 2 {
            let grant = self.unacked as u32;
            self.unacked = 0;
            self.channel.grant(self.stream, &self.window, grant);
        }
        b
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Small { data, .. } => Poll::Ready(data.take().map(|b| Ok(Frame::data(b)))),
            Body::Kept(k) => {
                if k.relay.cut.load(Ordering::Acquire) {
                    k.rest.clear();
                    return Poll::Ready(Some(Err(BodyError::Stalled)));
                }
                if k.rest.is_empty() {
                    return Poll::Ready(None);
                }
                k.relay.taken.fetch_add(1, Ordering::Relaxed);
                let n = k.rest.len().min(H2_CHUNK);
                Poll::Ready(Some(Ok(Frame::data(k.rest.split_to(n)))))
            }
            Body::Stream(s) => {
                if s.done {
                    return Poll::Ready(None);
                }
                if let Some(end) = s.ending.take() {
                    s.done = true;
                    return Poll::Ready(Some(Err(end)));
                }
                if s.relay.cut.load(Ordering::Acquire) {
                    // The stall watch cancelled it: hyper resets the stream.
                    s.done = true;
                    return Poll::Ready(Some(Err(BodyError::Stalled)));
                }
                if !s.pending.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(s.hand_over()))));
                }
                match s.events.poll_recv(cx) {
                    // The client left: hyper closes the connection and drops
                    // the body, which cancels the request.
                    Poll::Pending if s.hangup.as_ref().is_some_and(|h| h.poll(cx).is_ready()) => {
                        Poll::Ready(Some(Err(BodyError::ClientGone)))
                    }
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Some(Event::Data(b))) => {
                        s.pending = b;
                        Poll::Ready(Some(Ok(Frame::data(s.hand_over()))))
                    }
                    Poll::Ready(Some(Event::End)) => {
                        s.relay.release();
                        if let Some(n) = s.declared.filter(|&n| n > s.sent) {
                            // The client sees a cut body.
                            warn_short(n, s.sent, &format!("a response of {}", worker_of(s)));
                            return end_after_a_flush(&mut s.ending, cx, BodyError::Short);
                        }
                        s.done = true;
                        Poll::Ready(None)
                    }
                    // WebSocket events on an HTTP response: the app is confused.
                    Poll::Ready(Some(Event::Abort | Event::Message { .. } | Event::Close(_))) => {
                        s.relay.release();
                        end_after_a_flush(&mut s.ending, cx, BodyError::AppFailed)
                    }
                    Poll::Ready(None) => {
                        s.relay.release();
                        if s.ending.is_none() {
                            tracing::error!(
                                "{} ended mid-response: the client got the head and {} bytes of the body, then a cut",
                                worker_of(s),
                                s.sent
                            );
                        }
                        end_after_a_flush(&mut s.ending, cx, BodyError::WorkerGone)
                    }
                }
            }
            Body::Logged(l) => {
                let frame = Pin::new(&mut l.inner).poll_frame(cx);
                if let Poll::Ready(Some(Ok(f))) = &frame
                    && let Some(data) = f.data_ref()
                {
                    l.sent += data.len() as u64;
                }
                frame
            }
            Body::Short(s) => {
                if s.done {
                    return Poll::Ready(None);
                }
                if let Some(end) = s.ending.take() {
                    s.done = true;
                    return Poll::Ready(Some(Err(end)));
                }
                match Pin::new(&mut s.body).poll_frame(cx) {
                    Poll::Ready(None) => end_after_a_flush(&mut s.ending, cx, BodyError::Short),
                    Poll::Ready(Some(Err(e))) => {
                        s.done = true;
                        Poll::Ready(Some(Err(e)))
                    }
                    other => other,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(b) => b.is_none(),
            Body::Small { data, .. } => data.is_none(),
            Body::Kept(k) => k.rest.is_empty(),
            Body::Stream(s) => s.done,
            Body::Short(s) => s.done,
            Body::Logged(l) => l.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Small { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |b| b.len() as u64))
            }
            Body::Kept(k) => SizeHint::with_exact(k.rest.len() as u64),
            // hyper frames these by the Content-Length the app declared.
            Body::Stream(_) | Body::Short(_) => SizeHint::default(),
            Body::Logged(l) => l.inner.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outbox_keeps_up_to_its_cap_and_a_dropped_ticket_gives_back() {
        // 16 times 64 KiB: 1 MiB.
        let outbox = Budget::windows(1);
        let a = outbox.keep(600 << 10).expect("room");
        assert!(outbox.keep(500 << 10).is_none(), "over the cap");
        let b = outbox.keep(424 << 10).expect("up to the cap exactly");
        drop(a);
        let c = outbox.keep(500 << 10).expect("room again");
        drop((b, c));
        assert_eq!(outbox.held.load(Ordering::Relaxed), 0);
    }
}
