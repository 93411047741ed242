//! An HTTP/2 connection's streams run in the connection's own task.
//!
//! hyper hands each new stream to its executor. tokio's would spawn a task
//! for it: an allocation aligned to 128 bytes (glibc's slow `memalign`
//! path, which also consolidates its free lists), the scheduler's
//! bookkeeping, and a wake-up of its own for every step. [`Local`] instead
//! puts the stream in its connection's inbox, and [`serve`] polls the
//! streams beside the connection, each only when it was woken
//! (`FuturesUnordered`). A connection's streams then share one thread, as
//! its frames do anyway.

use std::cell::RefCell;
use std::future::Future;
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

type Stream = Pin<Box<dyn Future<Output = ()> + Send>>;

tokio::task_local! {
    /// The streams hyper handed over while the connection was polled.
    static INBOX: RefCell<Vec<Stream>>;
}

/// hyper's executor for HTTP/2 streams: into the inbox of the connection
/// being polled, or a task of its own if hyper ever hands one over from
/// elsewhere.
#[derive(Clone, Copy, Default)]
pub struct Local;

impl<F: Future<Output = ()> + Send + 'static> hyper::rt::Executor<F> for Local {
    fn execute(&self, stream: F) {
        let mut stream = Some(Box::pin(stream) as Stream);
        let _ = INBOX.try_with(|inbox| inbox.borrow_mut().extend(stream.take()));
        if let Some(stream) = stream {
            tokio::spawn(stream);
        }
    }
}

/// Drives `conn` and its streams until both are done; once `closing`
/// ends, or the connection has had no stream open for `idle` (as an
/// HTTP/1.1 connection is closed after `keepalive` without a request),
/// `shutdown` asks the connection to end gracefully (GOAWAY, then the
/// streams in flight finish). Without the idle close, a client could hold
/// connections that never send a request (a preface and nothing more)
/// for as long as it liked, up to `max_connections`.
pub async fn serve<C: Future>(
    conn: C,
    closing: impl Future,
    shutdown: impl Fn(Pin<&mut C>),
    idle: Duration,
) {
    INBOX
        .scope(RefCell::new(Vec::new()), async move {
            let mut conn = pin!(conn);
            let mut closing = pin!(closing);
            let mut running = FuturesUnordered::<Stream>::new();
            let (mut done, mut shutting) = (false, false);
            // When the last stream ended (or the connection began); one
            // timer, set again only when it fires early, not per stream.
            let mut idle_since = Some(Instant::now());
            let mut timer = pin!(tokio::time::sleep(idle));
            std::future::poll_fn(|cx| {
                loop {
                    if !shutting && closing.as_mut().poll(cx).is_ready() {
                        shutting = true;
                        shutdown(conn.as_mut());
                    }
                    if !done {
                        done = conn.as_mut().poll(cx).is_ready();
                    }
                    // The streams the connection took just now, polled at
                    // once: nothing else would wake them for their first step.
                    INBOX.with(|inbox| running.extend(inbox.borrow_mut().drain(..)));
                    while let Poll::Ready(Some(())) = running.poll_next_unpin(cx) {}
                    if done && running.is_empty() {
                        return Poll::Ready(());
                    }
                    if shutting || done || !running.is_empty() {
                        idle_since = None;
                        return Poll::Pending;
                    }
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    if since.elapsed() < idle {
                        timer.as_mut().reset(since + idle);
                        continue;
                    }
                    // Idle for `idle`: GOAWAY, polled at once.
                    shutting = true;
                    shutdown(conn.as_mut());
                }
            })
            .await
        })
        .await
}
