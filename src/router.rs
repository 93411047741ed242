//! The router: which workers may take requests, and which one takes the next.
//!
//! The supervisor publishes the set of in-service workers; requests read it
//! without locking ([`arc_swap`]). A request goes to the worker with the
//! fewest requests outstanding (ties broken round-robin). Each worker holds
//! at most `per_worker` requests (the ones it runs plus a short prefetch
//! queue); beyond that, requests wait here, in corral, for the first free
//! worker, so a slow worker never collects a queue of its own.

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
    per_worker: usize,
}

/// Why no worker took a request.
#[derive(Debug, PartialEq, Eq)]
pub enum NoWorker {
    /// No worker is in service.
    NoneInService,
    /// Every worker stayed full for the whole wait.
    Busy,
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
    pub fn new(per_worker: usize) -> Arc<Router> {
        Arc::new(Router {
            in_service: ArcSwap::from_pointee(Vec::new()),
            next: AtomicUsize::new(0),
            freed: Notify::new(),
            per_worker: per_worker.max(1),
        })
    }

    /// Replaces the set of workers that take requests.
    pub fn publish(&self, workers: Vec<Arc<Channel>>) {
        self.in_service.store(Arc::new(workers));
        self.freed.notify_waiters();
    }

    /// Picks the least-loaded worker, waiting up to `wait` for a free place.
    pub async fn acquire(self: &Arc<Self>, wait: Duration) -> Result<Lease, NoWorker> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.try_acquire() {
                Ok(lease) => return Ok(lease),
                Err(NoWorker::NoneInService) => return Err(NoWorker::NoneInService),
                Err(NoWorker::Busy) => {}
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
        let mut best: Option<(&Arc<Channel>, usize)> = None;
        for i in 0..n {
            let ch = &workers[(start + i) % n];
            if ch.is_closed() {
                continue;
            }
            let load = ch.in_flight.load(Ordering::Acquire);
            if best.is_none_or(|(_, l)| load < l) {
                best = Some((ch, load));
            }
        }
        match best {
            Some((ch, load)) if load < self.per_worker => {
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
