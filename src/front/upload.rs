//! A request body that streams to its worker after the REQUEST frame (one
//! larger than what is read before dispatch): [`pump`] forwards it under
//! the worker's credit and gives up after `server.body_timeout` without a
//! byte from the client, or when, past its first `body_timeout` of
//! waiting for the client, the body averages less than
//! `server.body_min_rate` per second of that waiting ([`Pace`]: a byte now
//! and then would otherwise hold the worker's thread without end);
//! [`Clock`] is the request timeout of such a request, which stops while
//! the worker waits for the client, so that a slow client can never make
//! its worker look hung. [`ReadAhead`] bounds what all requests together
//! hold of the bodies read before dispatch.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::worker::channel::{Channel, Credit};
use crate::worker::protocol;

/// The bytes of request bodies read ahead of dispatch (each request's
/// first [`protocol::INLINE_BODY`], so that a small body goes to its worker
/// whole), over all connections. At the cap a request waits to read more
/// until others give some back, at most `body_timeout`, then gets 503:
/// without it, HTTP/2 clients that open many streams and send most of a
/// small body on each, then a byte now and then, held 64 KiB per stream
/// (`max_concurrent_streams` of them per connection) for as long as they
/// liked. (Sending such bodies on to the workers instead would give those
/// clients the workers' threads.) Requests without a body never wait.
pub struct ReadAhead {
    held: AtomicUsize,
    cap: usize,
    /// Told when the bytes held go from the cap or more to below it.
    freed: tokio::sync::Notify,
}

impl ReadAhead {
    /// As much as `max_queued` requests waiting for a worker would hold
    /// (64 MiB at the default 1,024), and no less than 16 of them.
    pub fn for_queue(max_queued: usize) -> Arc<ReadAhead> {
        Arc::new(ReadAhead {
            held: AtomicUsize::new(0),
            cap: max_queued.max(16).saturating_mul(protocol::INLINE_BODY),
            freed: tokio::sync::Notify::new(),
        })
    }

    /// Waits until all requests together hold less than the cap, at most
    /// `limit`; false when they still do not.
    pub async fn room(&self, limit: Duration) -> bool {
        if self.held.load(Ordering::Acquire) < self.cap {
            return true;
        }
        let deadline = Instant::now() + limit;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.held.load(Ordering::Acquire) < self.cap {
                return true;
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return self.held.load(Ordering::Acquire) < self.cap;
            }
        }
    }
}

/// What one request holds of the [`ReadAhead`]: given back when dropped,
/// with the buffers it counts.
pub struct Held<'a> {
    budget: &'a ReadAhead,
    bytes: usize,
}

impl<'a> Held<'a> {
    pub fn new(budget: &'a ReadAhead) -> Held<'a> {
        Held { budget, bytes: 0 }
    }

    /// Counts `n` bytes read ahead (they are in hand).
    pub fn add(&mut self, n: usize) {
        self.bytes += n;
        self.budget.held.fetch_add(n, Ordering::AcqRel);
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        let before = self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
        if before >= self.budget.cap && before - self.bytes < self.budget.cap {
            self.budget.freed.notify_waiters();
        }
    }
}

/// How a [`pump`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PumpEnd {
    /// The whole body went to the worker.
    Done,
    /// The worker finished the request (or its channel closed) first.
    WorkerDone,
    /// The client broke the body off (its connection closed or its chunked
    /// framing was wrong), or the body grew past `max_body_bytes` (then
    /// `Credit::overflow` is set): the worker got a CANCEL.
    Cancelled,
    /// No byte from the client for the body timeout, or the body came
    /// slower than its least rate: the worker got a CANCEL.
    TimedOut,
}

/// How long a streaming body may keep its worker waiting for the client.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// The longest wait for one byte (`server.body_timeout`), and the
    /// waiting allowed before `min_rate` counts.
    pub idle: Duration,
    /// The least bytes per second of waiting the body must average once
    /// the waiting passes `idle` (`server.body_min_rate`); 0: none.
    pub min_rate: u64,
}

impl Pace {
    /// How long the next wait for the client may last, with `received`
    /// bytes come while the worker waited `waited` for them so far.
    pub fn next_wait(&self, received: u64, waited: Duration) -> Duration {
        if self.min_rate == 0 {
            return self.idle;
        }
        // The body may have kept the worker waiting `idle` plus a second
        // per `min_rate` bytes it brought.
        let earned = self.idle + Duration::from_secs_f64(received as f64 / self.min_rate as f64);
        self.idle.min(earned.saturating_sub(waited))
    }
}

/// The app's time on a request whose body streams: the time since
/// dispatch, less the time the pump waited for the client.
pub struct Clock {
    start: Instant,
    /// Nanoseconds since `start` at which the pump began waiting for the
    /// client, plus one; 0 while it is not waiting.
    waiting_since: AtomicU64,
    /// Nanoseconds the pump waited for the client, finished waits only.
    waited: AtomicU64,
}

impl Clock {
    /// A clock that starts now, as the request goes to its worker.
    pub fn start() -> Arc<Clock> {
        Arc::new(Clock {
            start: Instant::now(),
            waiting_since: AtomicU64::new(0),
            waited: AtomicU64::new(0),
        })
    }

    fn nanos(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_nanos() as u64
    }

    fn wait_begins(&self) {
        let now = self.nanos(Instant::now());
        self.waiting_since.store(now + 1, Ordering::Relaxed);
    }

    fn wait_ends(&self) {
        let since = self.waiting_since.swap(0, Ordering::Relaxed);
        if since != 0 {
            let now = self.nanos(Instant::now());
            self.waited
                .fetch_add(now.saturating_sub(since - 1), Ordering::Relaxed);
        }
    }

    /// How long the pump has waited for the client, finished waits only.
    fn client_time(&self) -> Duration {
        Duration::from_nanos(self.waited.load(Ordering::Relaxed))
    }

    /// When `timeout` of the app's time will have passed, as far as is
    /// known at `now` (a wait for the client that is still going on moves
    /// it later).
    pub fn due(&self, timeout: Duration, now: Instant) -> Instant {
        let mut waited = self.waited.load(Ordering::Relaxed);
        let since = self.waiting_since.load(Ordering::Relaxed);
        if since != 0 {
            waited += self.nanos(now).saturating_sub(since - 1);
        }
        self.start + timeout + Duration::from_nanos(waited)
    }
}

/// The next frame of `body` (`Some(None)` at its end), or `None` when the
/// client sent nothing for `idle`; `timer` is the caller's, reused.
pub async fn next_frame(
    body: &mut Incoming,
    mut timer: Pin<&mut Sleep>,
    idle: Duration,
) -> Option<Option<Result<Frame<Bytes>, hyper::Error>>> {
    timer.as_mut().reset(Instant::now() + idle);
    tokio::select! {
        biased;
        frame = body.frame() => Some(frame),
        () = timer => None,
    }
}

/// Streams the rest of a request body to the worker as it grants credit.
/// Waiting for credit is the app's time; waiting for the client stops
/// `clock` and lasts as long as `pace` allows.
#[allow(clippy::too_many_arguments)]
pub async fn pump(
    mut body: Incoming,
    channel: Arc<Channel>,
    stream: u32,
    credit: Arc<Credit>,
    mut received: u64,
    max: u64,
    pace: Pace,
    clock: Arc<Clock>,
    metrics: Arc<crate::metrics::Metrics>,
) -> PumpEnd {
    let cancel = || channel.send(protocol::encode(protocol::FrameKind::Cancel, stream, b""));
    let timer = tokio::time::sleep(pace.idle);
    tokio::pin!(timer);
    // What `pace` judges is what came since dispatch.
    let before = received;
    loop {
        // Wait for credit.
        loop {
            let notified = credit.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if credit.closed.load(Ordering::Acquire) {
                return PumpEnd::WorkerDone;
            }
            if credit.available.load(Ordering::Acquire) > 0 {
                break;
            }
            notified.await;
        }
        let wait = pace.next_wait(received - before, clock.client_time());
        clock.wait_begins();
        let frame = next_frame(&mut body, timer.as_mut(), wait).await;
        clock.wait_ends();
        let Some(frame) = frame else {
            cancel();
            return PumpEnd::TimedOut;
        };
        match frame {
            None => {
                channel.send(protocol::encode(protocol::FrameKind::BodyEnd, stream, b""));
                return PumpEnd::Done;
            }
            Some(Err(_)) => {
                cancel();
                return PumpEnd::Cancelled;
            }
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                received += data.len() as u64;
                metrics.request_body(data.len() as u64);
                if received > max {
                    credit.overflow.store(true, Ordering::Release);
                    cancel();
                    return PumpEnd::Cancelled;
                }
                // The client's buffer goes to the worker as it is, behind
                // a header of its own per frame.
                let mut at = 0;
                while at < data.len() {
                    let end = data.len().min(at + protocol::MAX_FRAME);
                    let header =
                        protocol::frame_header(protocol::FrameKind::Body, stream, end - at);
                    channel.send_pieces([header, data.slice(at..end)]);
                    at = end;
                }
                credit
                    .available
                    .fetch_sub(data.len() as i64, Ordering::AcqRel);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_the_read_ahead_cap_a_request_waits_until_another_gives_back() {
        let budget = ReadAhead::for_queue(16);
        let cap = 16 * protocol::INLINE_BODY;
        let mut a = Held::new(&budget);
        a.add(cap);
        let waits = tokio::time::timeout(
            Duration::from_millis(50),
            budget.room(Duration::from_secs(5)),
        );
        assert!(waits.await.is_err(), "no room at the cap");
        assert!(
            !budget.room(Duration::from_millis(20)).await,
            "none within the limit"
        );
        let room = tokio::spawn({
            let budget = budget.clone();
            async move { budget.room(Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(a);
        assert!(room.await.unwrap(), "room once it was given back");
        assert_eq!(budget.held.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_body_may_keep_its_worker_waiting_body_timeout_then_a_second_per_min_rate_bytes() {
        let s = Duration::from_secs;
        let pace = Pace {
            idle: s(20),
            min_rate: 240,
        };
        assert_eq!(pace.next_wait(0, s(0)), s(20));
        assert_eq!(pace.next_wait(0, s(15)), s(5));
        assert_eq!(pace.next_wait(0, s(21)), s(0));
        // 2,400 bytes earned 10 s more.
        assert_eq!(pace.next_wait(2_400, s(25)), s(5));
        // Never more than the body timeout at a time.
        assert_eq!(pace.next_wait(240_000, s(25)), s(20));
        let off = Pace {
            idle: s(20),
            min_rate: 0,
        };
        assert_eq!(off.next_wait(0, s(1_000)), s(20));
    }
}
