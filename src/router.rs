//! The router: which workers may take requests, and which one takes the next.
//!
//! The supervisor publishes the set of in-service workers; requests read it
//! without locking ([`arc_swap`]). A request goes to the worker with the
//! fewest requests outstanding (ties broken round-robin). Each worker holds
//! at most its capacity (a WSGI worker: its threads plus a prefetch queue
//! sized by its answer time, see `Channel::answered`; an ASGI worker:
//! `[workers] concurrency`); beyond that, requests
//! wait here, in corral, for the first free worker, so a slow worker never
//! collects a queue of its own. At most `max_queued` requests wait; the
//! next one is refused at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use crate::worker::channel::Channel;

pub struct Router {
    in_service: ArcSwap<Vec<Arc<Channel>>>,
    next: AtomicUsize,
    freed: Notify,
    /// Requests waiting for a place, and how many may.
    waiting: AtomicUsize,
    max_queued: usize,
}

/// Why no worker took a request.
#[derive(Debug, PartialEq, Eq)]
pub enum NoWorker {
    /// No worker is in service.
    NoneInService,
    /// Every worker stayed full for the whole wait.
    Busy,
    /// Every worker is full and `max_queued` requests already wait.
    QueueFull,
}

/// Counts a request among the waiting while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request counted against a worker; dropping it frees the place.
pub struct Lease {
    pub channel: Arc<Channel>,
    router: Arc<Router>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.channel.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.router.freed.notify_one();
    }
}

impl Router {
    pub fn new(max_queued: usize) -> Arc<Router> {
        Arc::new(Router {
            in_service: ArcSwap::from_pointee(Vec::new()),
            next: AtomicUsize::new(0),
            freed: Notify::new(),
            waiting: AtomicUsize::new(0),
            max_queued,
        })
    }

    /// Requests waiting for a place right now.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Replaces the set of workers that take requests.
    pub fn publish(&self, workers: Vec<Arc<Channel>>) {
        self.in_service.store(Arc::new(workers));
        self.freed.notify_waiters();
    }

    /// Picks the least-loaded worker, waiting up to `wait` for a free place.
    pub async fn acquire(self: &Arc<Self>, wait: Duration) -> Result<Lease, NoWorker> {
        match self.try_acquire() {
            Err(NoWorker::Busy) => {}
            done => return done,
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_queued {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(NoWorker::QueueFull);
        }
        let _waiting = Waiting(&self.waiting);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.try_acquire() {
                Ok(lease) => return Ok(lease),
                Err(NoWorker::NoneInService) => return Err(NoWorker::NoneInService),
                Err(NoWorker::Busy | NoWorker::QueueFull) => {}
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(NoWorker::Busy);
            }
        }
    }

    fn try_acquire(self: &Arc<Self>) -> Result<Lease, NoWorker> {
        let workers = self.in_service.load();
        let n = workers.len();
        if n == 0 {
            return Err(NoWorker::NoneInService);
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<(&Arc<Channel>, usize, usize)> = None;
        for i in 0..n {
            let ch = &workers[(start + i) % n];
            if ch.is_closed() {
                continue;
            }
            // Load is the share of the worker's capacity in use, compared
            // without division: load_a / cap_a < load_b / cap_b.
            let load = ch.in_flight.load(Ordering::Acquire);
            let cap = ch.capacity.load(Ordering::Acquire).max(1);
            if best.is_none_or(|(_, l, c)| load * c < l * cap) {
                best = Some((ch, load, cap));
            }
        }
        match best {
            Some((ch, load, cap)) if load < cap => {
                ch.in_flight.fetch_add(1, Ordering::AcqRel);
                Ok(Lease {
                    channel: ch.clone(),
                    router: self.clone(),
                })
            }
            Some(_) => Err(NoWorker::Busy),
            None => Err(NoWorker::NoneInService),
        }
    }
}
