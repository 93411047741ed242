//! Response bodies: a whole body the worker sent in one frame, or a stream of
//! DATA frames that grants the worker more credit as the client takes it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::mpsc;

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
}

pub enum Body {
    Full(Option<Bytes>),
    Stream(StreamBody),
}

impl Body {
    pub fn full(b: impl Into<Bytes>) -> Body {
        let b = b.into();
        Body::Full(if b.is_empty() { None } else { Some(b) })
    }

    pub fn empty() -> Body {
        Body::Full(None)
    }
}

/// A response streamed from a worker.
pub struct StreamBody {
    pub events: mpsc::UnboundedReceiver<Event>,
    pub stream: u32,
    /// Holds the worker's place until the response is complete.
    pub lease: Option<Lease>,
    pub unacked: usize,
    /// The worker's response credit on this stream.
    pub window: Arc<Window>,
    pub done: bool,
    /// The app ended its body short of its Content-Length: the body ends
    /// at the next poll, which makes hyper close the connection, and not
    /// at once, so that hyper first sends what it holds of the response
    /// (the client sees the head and a cut body, as from gunicorn, not an
    /// empty reply).
    pub short: bool,
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

impl StreamBody {
    fn channel(&self) -> Option<&Arc<Channel>> {
        self.lease.as_ref().map(|l| &l.channel)
    }
}

impl Drop for StreamBody {
    fn drop(&mut self) {
        self.metrics.response_body(self.sent);
        if !self.done
            && let Some(ch) = self.channel()
        {
            // The client went away: tell the app to stop producing.
            ch.send(protocol::encode(
                protocol::FrameKind::Cancel,
                self.stream,
                b"",
            ));
            // The worker is busy with the stream until it ends it (a WSGI
            // thread learns of the CANCEL at its next piece): its place
            // stays taken till then, so that no request waits behind a
            // response nobody reads while another worker is free.
            if let (Some(lease), Ok(rt)) =
                (self.lease.take(), tokio::runtime::Handle::try_current())
            {
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

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(s) => {
                if s.done {
                    return Poll::Ready(None);
                }
                if s.short {
                    s.done = true;
                    return Poll::Ready(None);
                }
                match s.events.poll_recv(cx) {
                    // The client left: hyper closes the connection and drops
                    // the body, which cancels the request.
                    Poll::Pending if s.hangup.as_ref().is_some_and(|h| h.poll(cx).is_ready()) => {
                        Poll::Ready(Some(Err(BodyError::ClientGone)))
                    }
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Some(Event::Data(b))) => {
                        s.unacked += b.len();
                        s.sent += b.len() as u64;
                        if s.unacked >= protocol::RESPONSE_WINDOW / 2 {
                            let grant = s.unacked as u32;
                            s.unacked = 0;
                            if let Some(ch) = s.channel() {
                                ch.grant(s.stream, &s.window, grant);
                            }
                        }
                        Poll::Ready(Some(Ok(Frame::data(b))))
                    }
                    Poll::Ready(Some(Event::End)) => {
                        s.lease = None;
                        if let Some(n) = s.declared.filter(|&n| n > s.sent) {
                            // hyper ends the connection: the client sees a cut body.
                            tracing::warn!(
                                "the app declared Content-Length: {n} but sent {} bytes",
                                s.sent
                            );
                            // One pass of hyper's loop first: it flushes.
                            s.short = true;
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                        s.done = true;
                        Poll::Ready(None)
                    }
                    // WebSocket events on an HTTP response: the app is confused.
                    Poll::Ready(Some(Event::Abort | Event::Message { .. } | Event::Close(_))) => {
                        s.done = true;
                        s.lease = None;
                        Poll::Ready(Some(Err(BodyError::AppFailed)))
                    }
                    Poll::Ready(None) => {
                        s.done = true;
                        s.lease = None;
                        Poll::Ready(Some(Err(BodyError::WorkerGone)))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(b) => b.is_none(),
            Body::Stream(s) => s.done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Stream(_) => SizeHint::default(),
        }
    }
}
