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

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use futures_util::task::AtomicWaker;
use tokio::time::Instant;

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
        let mut stream = Some(Box::pin(Killable { stream, kill: None }) as Stream);
        let _ = INBOX.try_with(|inbox| inbox.borrow_mut().extend(stream.take()));
        if let Some(stream) = stream {
            tokio::spawn(stream);
        }
    }
}

/// Ends one HTTP/2 stream from outside hyper ([`kill_switch`]).
#[derive(Default)]
pub struct Kill {
    killed: AtomicBool,
    waker: AtomicWaker,
}

impl Kill {
    /// Drops the stream's future at its next poll: h2 resets the stream
    /// (RST_STREAM CANCEL) and frees what it holds for it.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.waker.wake();
    }
}

thread_local! {
    /// A stream without a kill switch is being polled: [`kill_switch`]
    /// may make one.
    static POLLING: Cell<bool> = const { Cell::new(false) };
    /// The switch made while it was polled, for it to keep.
    static MADE: Cell<Option<Arc<Kill>>> = const { Cell::new(None) };
}

/// A kill switch for the HTTP/2 stream whose future is being polled (None
/// outside one). A stream whose client gives it no window is never polled
/// by hyper again, so it cannot end itself: hyper waits for capacity that
/// never comes, holding its data meanwhile.
pub fn kill_switch() -> Option<Arc<Kill>> {
    if !POLLING.with(Cell::get) {
        return None;
    }
    let kill = Arc::new(Kill::default());
    MADE.with(|m| m.set(Some(kill.clone())));
    Some(kill)
}

/// Whether the stream's switch (if a handler took one) was thrown; the
/// task is woken when it is.
fn killed(kill: &Option<Arc<Kill>>, cx: &std::task::Context<'_>) -> bool {
    kill.as_ref().is_some_and(|k| {
        k.waker.register(cx.waker());
        k.killed.load(Ordering::Acquire)
    })
}

pin_project_lite::pin_project! {
    /// A stream's future, and the kill switch a handler took for it.
    struct Killable<F> {
        #[pin]
        stream: F,
        kill: Option<Arc<Kill>>,
    }
}

impl<F: Future<Output = ()>> Future for Killable<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.kill.is_some() {
            if killed(this.kill, cx) {
                return Poll::Ready(());
            }
            return this.stream.poll(cx);
        }
        let outer = POLLING.with(|p| p.replace(true));
        let polled = this.stream.poll(cx);
        POLLING.with(|p| p.set(outer));
        *this.kill = MADE.with(Cell::take);
        // A switch made in this very poll: watched from now on.
        if polled.is_pending() && killed(this.kill, cx) {
            return Poll::Ready(());
        }
        polled
    }
}

/// Drives `conn` and its streams until both are done; once `closing`
/// ends, or the connection has had no stream open for `idle` (as an
/// HTTP/1.1 connection is closed after `keepalive` without a request),
/// `shutdown` asks the connection to end gracefully (GOAWAY, then the
/// streams in flight finish). Without the idle close, a client could hold
/// connections that never send a request (a preface and nothing more)
/// for as long as it liked, up to `max_connections`. A connection closed
/// for idleness that then has no stream running for `grace` (the send
/// timeout: what a stream's last bytes, in h2's hands, may take) is
/// dropped: hyper's graceful end waits for the client to answer the PING
/// it sends with GOAWAY (or, on TLS, for a preface that never came), and
/// a client that answers nothing held it open for good.
pub async fn serve<C: Future>(
    conn: C,
    closing: impl Future,
    shutdown: impl Fn(Pin<&mut C>),
    idle: Duration,
    grace: Duration,
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
            // GOAWAY went for idleness; since when no stream has run.
            let mut idle_goaway = false;
            let mut quiet_since: Option<Instant> = None;
            let grace = grace.max(idle);
            let mut timer = pin!(tokio::time::sleep(idle));
            std::future::poll_fn(|cx| {
                if !shutting && closing.as_mut().poll(cx).is_ready() {
                    shutting = true;
                    shutdown(conn.as_mut());
                }
                if !done {
                    done = conn.as_mut().poll(cx).is_ready();
                }
                // The streams the connection took just now, polled at once:
                // nothing else would wake them for their first step.
                INBOX.with(|inbox| running.extend(inbox.borrow_mut().drain(..)));
                while let Poll::Ready(Some(())) = running.poll_next_unpin(cx) {}
                if done && running.is_empty() {
                    return Poll::Ready(());
                }
                if idle_goaway {
                    if !running.is_empty() {
                        quiet_since = None;
                        return Poll::Pending;
                    }
                    let since = *quiet_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= grace {
                        return Poll::Ready(());
                    }
                    timer.as_mut().reset(since + grace);
                    if timer.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(());
                    }
                    return Poll::Pending;
                }
                if shutting || done || !running.is_empty() {
                    idle_since = None;
                    return Poll::Pending;
                }
                let since = *idle_since.get_or_insert_with(Instant::now);
                while timer.as_mut().poll(cx).is_ready() {
                    if since.elapsed() >= idle {
                        // Idle for `idle`: GOAWAY, sent at the next poll.
                        shutting = true;
                        idle_goaway = true;
                        quiet_since = Some(Instant::now());
                        shutdown(conn.as_mut());
                        cx.waker().wake_by_ref();
                        break;
                    }
                    timer.as_mut().reset(since + idle);
                }
                Poll::Pending
            })
            .await
        })
        .await
}
