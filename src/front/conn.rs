//! One client connection below HTTP: the cap on open connections
//! (`server.max_connections`) and the send timeout (`server.send_timeout`).
//! Both live on the socket itself, so they hold for HTTP and for WebSockets
//! alike: an upgraded connection keeps its wrapper and its slot.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::metrics::Metrics;
use crate::shards::OnShard;

/// The open-connection cap and the send timeout of one server (the app
/// port, or the status server).
pub struct Limits {
    slots: Arc<Semaphore>,
    send_timeout: Duration,
    /// Where the app port counts its connections and timeouts; `None` for
    /// the status server.
    metrics: Option<Arc<Metrics>>,
}

impl Limits {
    pub fn new(max: usize, send_timeout: Duration, metrics: Option<Arc<Metrics>>) -> Arc<Limits> {
        Arc::new(Limits {
            slots: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            send_timeout,
            metrics,
        })
    }

    /// A slot if one is free now.
    pub fn try_slot(self: &Arc<Self>) -> Option<Slot> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        Some(Slot {
            _permit: permit,
            limits: self.clone(),
            open: false,
            on_shard: None,
        })
    }

    /// Waits until fewer than the cap are open. Accept only then: until
    /// a slot is free, new connections wait in the kernel's listen queue.
    /// (So each listen socket holds at most one slot while it waits in
    /// accept.)
    pub async fn slot(self: &Arc<Self>) -> Slot {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if let Some(m) = &self.metrics {
                    m.connections_capped();
                }
                self.slots
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed")
            }
        };
        Slot {
            _permit: permit,
            limits: self.clone(),
            open: false,
            on_shard: None,
        }
    }
}

/// One connection counted against the cap while it lives.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    limits: Arc<Limits>,
    /// A connection holds it (not just an accept loop waiting for one).
    open: bool,
    /// The connection counted on the front shard that serves it, for as
    /// long as the socket is open: a WebSocket's too, long after its
    /// HTTP connection ended, so that the shards (and so the workers)
    /// share long-lived connections evenly.
    on_shard: Option<OnShard>,
}

impl Slot {
    /// The slot, held by a connection from now on: by its stream
    /// ([`Guarded`]) and by whatever else keeps the socket open after the
    /// stream is gone (its lingering close).
    pub fn opened(self) -> Arc<Slot> {
        self.opened_on(None)
    }

    /// [`Slot::opened`], counted on its shard meanwhile.
    pub fn opened_on(mut self, on_shard: Option<OnShard>) -> Arc<Slot> {
        self.open = true;
        self.on_shard = on_shard;
        if let Some(m) = &self.limits.metrics {
            m.connection_opened();
        }
        Arc::new(self)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.open
            && let Some(m) = &self.limits.metrics
        {
            m.connection_closed();
        }
    }
}

/// A client stream that holds its [`Slot`] and fails a write that has made
/// no progress for the send timeout: hyper (or the WebSocket relay) then
/// drops the connection, which cancels its request at the worker.
pub struct Guarded<S> {
    io: S,
    slot: Arc<Slot>,
    /// Armed while writes are blocked (the client takes no bytes); made on
    /// the first stall and reset after, so a connection costs one timer at
    /// most.
    stall: Option<Pin<Box<Sleep>>>,
    stalled: bool,
    /// What the socket held for the client when the timer was last armed
    /// ([`Unsent::unsent`]).
    unsent: Option<usize>,
}

/// What the client has yet to take of what corral wrote: the bytes its
/// socket still holds (the kernel's send queue). `None` where it cannot
/// be known.
pub trait Unsent {
    fn unsent(&self) -> Option<usize>;
}

/// How much of what its socket holds a client whose writes stay blocked
/// must take within the send timeout to count as reading: about 800
/// bytes a second at the default 20 s. A blocked write goes on only once a
/// good part of the socket's send buffer is free (a third of it on Linux,
/// which grows the buffer to a few MiB), so a client that downloads slowly
/// but steadily can leave corral's writes blocked for longer than the
/// timeout; one that takes less than this is as good as stalled, and
/// holds its worker place as one.
pub const SEND_PROGRESS_BYTES: usize = 16 * 1024;

impl<S: Unsent> Guarded<S> {
    pub fn new(io: S, slot: Arc<Slot>) -> Guarded<S> {
        Guarded {
            io,
            slot,
            stall: None,
            stalled: false,
            unsent: None,
        }
    }

    /// Passes on a write's outcome; while writes stay blocked for the send
    /// timeout and the client takes less than [`SEND_PROGRESS_BYTES`] of
    /// what its socket holds meanwhile, answers an error instead.
    fn progress<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.stalled = false;
            return r;
        }
        let timeout = self.slot.limits.send_timeout;
        if !self.stalled {
            self.stalled = true;
            self.unsent = self.io.unsent();
            let deadline = Instant::now() + timeout;
            match &mut self.stall {
                Some(stall) => stall.as_mut().reset(deadline),
                None => self.stall = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let stall = self.stall.as_mut().expect("armed above");
        loop {
            ready!(stall.as_mut().poll(cx));
            // The writes are still blocked: did the client take enough of
            // what the socket held? (Nothing was added: corral's writes
            // are what is blocked.) Then it reads, and has another
            // timeout's worth of time.
            let now = self.io.unsent();
            match (self.unsent, now) {
                (Some(before), Some(now)) if before.saturating_sub(now) >= SEND_PROGRESS_BYTES => {
                    self.unsent = Some(now);
                    stall.as_mut().reset(Instant::now() + timeout);
                }
                _ => break,
            }
        }
        if let Some(m) = &self.slot.limits.metrics {
            m.send_timed_out();
        }
        tracing::debug!("a client took no bytes for {timeout:?}: closing its connection");
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client took no bytes for the send timeout",
        )))
    }
}

impl<S: AsyncRead + Unsent + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unsent + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.progress(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.progress(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    // Sockets flush and shut down at once: only writes can stall.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
