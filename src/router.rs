//! The router: which workers may take requests, and which one takes the next.
//!
//! The supervisor publishes the set of in-service workers; requests read it
//! without locking ([`arc_swap`]). A request goes to a worker of its own
//! front shard ([`crate::shards`]) unless another would start it sooner
//! (see `pick`), else to the worker with the fewest requests outstanding
//! relative to its capacity (ties broken round-robin). A worker that
//! answered the requests it is recycled after (`Channel::is_spent`: its
//! replacement boots) is picked only when no other would start the
//! request at once. Each worker holds
//! at most its capacity (a WSGI worker: its threads plus a prefetch queue
//! sized by its answer time, see `Channel::answered`; an ASGI or gevent
//! worker: `[workers] concurrency`); beyond that, requests
//! wait here, in corral, for the first free worker, so a slow worker never
//! collects a queue of its own (and a WSGI worker whose threads are all
//! held by long requests gives back what it queued: `First::Returned`). They are served first come, first served,
//! in one line per front shard: a freed place wakes the request that has
//! waited longest in the line of the worker's shard (else in the first
//! line with one), so that it stays on the worker's thread; a request that
//! comes while others wait queues behind them rather than taking the place
//! (which would send the one woken for it to the back of the line; during
//! a canary it does not, as those waiting may wait for the other side),
//! and a request that finds room for more than itself wakes the next in
//! line. With no worker in service, a request waits the same way while
//! one boots (`set_starting`), and gets [`NoWorker::NoneInService`] at
//! once otherwise. During a canary a request woken for the other side's place hands
//! the wake-up on to a line that holds a request for that side (its own
//! shard's first), and yields so that one runs, until one that may take it
//! does. At
//! most `max_queued` requests wait; the next one is refused at once.
//!
//! During a canary reload the set carries a [`Split`]: each request
//! independently goes to the new generation's workers for `share` of the
//! requests (spread evenly, not at random), to the old one's for the rest;
//! a side with no live worker sends its requests to the other. The front
//! asks for the side first ([`Router::choose`]) and counts the request
//! there as unanswered ([`Split::sent`]) while it waits for a place and
//! for its response head; the lease says which side served, so the front
//! adds the answer to that side's [`Tally`]. A WebSocket keeps the worker,
//! so the generation, that accepted it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use crate::canary::Tally;
use crate::worker::channel::Channel;

/// A canary in progress: which share of requests the new generation gets,
/// and what each side answered.
pub struct Split {
    pub generation: u64,
    /// The new generation's share, in thousandths.
    permille: u64,
    sent: AtomicUsize,
    pub old: Tally,
    pub new: Tally,
}

impl Split {
    /// The new generation's share, in percent.
    pub fn share_percent(&self) -> f64 {
        self.permille as f64 / 10.0
    }

    pub fn new(generation: u64, permille: u64) -> Split {
        Split {
            generation,
            permille: permille.min(1000),
            sent: AtomicUsize::new(0),
            old: Tally::default(),
            new: Tally::default(),
        }
    }

    /// Whether the next request goes to the new generation: exactly
    /// `permille` of every thousand, spread evenly.
    fn next_is_new(&self) -> bool {
        let n = self.sent.fetch_add(1, Ordering::Relaxed) as u64;
        (n + 1) * self.permille / 1000 > n * self.permille / 1000
    }

    pub fn record(&self, new: bool, status: u16, elapsed: Duration) {
        self.side(new).record(status, elapsed);
    }

    fn side(&self, new: bool) -> &Tally {
        if new { &self.new } else { &self.old }
    }

    /// A request sent to one side at `since`: it counts there as
    /// unanswered, with its age, while the guard lives (the front drops it
    /// at the response head).
    pub fn sent(self: &Arc<Self>, new: bool, since: std::time::Instant) -> Outstanding {
        let slot = self.side(new).sent(since);
        Outstanding {
            split: self.clone(),
            new,
            since,
            slot,
        }
    }
}

/// A request a side of a canary has not answered yet ([`Split::sent`]).
pub struct Outstanding {
    split: Arc<Split>,
    new: bool,
    since: std::time::Instant,
    slot: usize,
}

impl Outstanding {
    /// The request went to the other side after all (the chosen one had no
    /// live worker left): it counts there, from when it was sent.
    pub fn moved_to(&mut self, new: bool) {
        if new != self.new {
            self.split.side(self.new).answered(self.slot);
            self.slot = self.split.side(new).sent(self.since);
            self.new = new;
        }
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.split.side(self.new).answered(self.slot);
    }
}

/// The workers that take requests; with a split, which of them are the
/// canary's.
#[derive(Default)]
struct Routing {
    workers: Vec<Arc<Channel>>,
    canary: Vec<bool>,
    split: Option<Arc<Split>>,
}

pub struct Router {
    in_service: ArcSwap<Routing>,
    /// Each front shard's line of requests waiting for a place and where
    /// its next look for a worker starts.
    lines: [Line; LINES],
    /// Requests waiting for a place, and how many may.
    waiting: AtomicUsize,
    max_queued: usize,
    /// During a canary, those of them waiting for the old (0) and the new
    /// (1) generation.
    waiting_for: [AtomicUsize; 2],
    /// No worker is in service but one is booting (at start, or after the
    /// only one died): a request waits for it, as a connection waits in
    /// gunicorn's listen queue, rather than get 503 at once.
    starting: std::sync::atomic::AtomicBool,
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
    /// During a canary: the split, and whether the new generation serves.
    pub side: Option<(Arc<Split>, bool)>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Only when a request waits: a wake-up with none is a write to a
        // line every shard reads. A request that starts to wait counts
        // itself before it looks (both sequentially consistent), so
        // either it sees this place free or this sees it wait.
        self.channel.in_flight.fetch_sub(1, Ordering::SeqCst);
        let waiting = self.router.waiting.load(Ordering::SeqCst);
        // Places the worker's capacity gained (taken even with none
        // waiting, so that they do not pile up for a later line).
        let gained = self.channel.take_grown();
        if waiting > 0 {
            // One wake-up for this place, and one for each place gained:
            // never two requests woken for one place, as the one that found
            // it taken would go to the back of its line (see
            // `Router::acquire_side`).
            for _ in 0..(1 + gained).min(waiting) {
                self.router.wake_one(self.channel.shard);
            }
        }
    }
}

/// Lines kept: a shard beyond them shares the line of its number modulo
/// this.
const LINES: usize = 16;

/// One front shard's requests that wait for a place, first come first
/// served, how many they are, and where its next look for a worker starts
/// (ties go round-robin); on cache lines of its own.
#[derive(Default)]
#[repr(align(128))]
struct Line {
    freed: Notify,
    waiting: AtomicUsize,
    /// During a canary, those of them waiting for the old (0) and the new
    /// (1) generation: a wake-up handed on for one side goes to a line
    /// that holds a request for it.
    waiting_for: [AtomicUsize; 2],
    next: AtomicUsize,
}

impl Router {
    pub fn new(max_queued: usize) -> Arc<Router> {
        Arc::new(Router {
            in_service: ArcSwap::from_pointee(Routing::default()),
            lines: Default::default(),
            waiting: AtomicUsize::new(0),
            max_queued,
            waiting_for: Default::default(),
            // corral starts its first workers at once: a request that
            // comes before the supervisor's first step waits for them.
            starting: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// Says whether a worker is booting (see `starting`); when the last
    /// boot ends, requests waiting for it look again (with none in
    /// service, they get 503).
    pub fn set_starting(&self, starting: bool) {
        if self.starting.swap(starting, Ordering::AcqRel) && !starting {
            for line in &self.lines {
                line.freed.notify_waiters();
            }
        }
    }

    /// No worker in service, and none booting: a request need not wait.
    /// Workers still in the set whose channel closed (they died, and the
    /// supervisor has not taken them out yet) count as news to wait for:
    /// it publishes the set anew, or their successors, in a moment.
    fn none_coming(&self) -> bool {
        !self.starting.load(Ordering::Acquire) && self.in_service.load().workers.is_empty()
    }

    /// The canary that runs, if any.
    pub fn split(&self) -> Option<Arc<Split>> {
        self.in_service.load().split.clone()
    }

    /// Requests waiting for a place right now.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Replaces the set of workers that take requests (no split).
    #[cfg(test)]
    pub fn publish(&self, workers: Vec<Arc<Channel>>) {
        let canary = vec![false; workers.len()];
        self.publish_split(workers, canary, None);
    }

    /// Replaces the set, with a canary: `canary[i]` says whether
    /// `workers[i]` belongs to the split's new generation.
    pub fn publish_split(
        &self,
        workers: Vec<Arc<Channel>>,
        canary: Vec<bool>,
        split: Option<Arc<Split>>,
    ) {
        self.in_service.store(Arc::new(Routing {
            workers,
            canary,
            split,
        }));
        for line in &self.lines {
            line.freed.notify_waiters();
        }
    }

    fn line(&self, shard: usize) -> &Line {
        &self.lines[shard % self.lines.len()]
    }

    /// Wakes one waiting request: the first of `shard`'s line (the shard of
    /// the worker whose place was freed, so the request stays on the
    /// worker's thread), else of the first line with one. With none
    /// counted in a line yet (one counted itself waiting, but not yet in
    /// its line), every line keeps the wake-up for its next waiter.
    fn wake_one(&self, shard: usize) {
        let own = self.line(shard);
        let line = std::iter::once(own)
            .chain(&self.lines)
            .find(|l| l.waiting.load(Ordering::SeqCst) > 0);
        match line {
            Some(line) => line.freed.notify_one(),
            None => {
                for line in &self.lines {
                    line.freed.notify_one();
                }
            }
        }
    }

    /// Picks the least-loaded worker, waiting up to `wait` for a free place.
    #[cfg(test)]
    pub async fn acquire(self: &Arc<Self>, wait: Duration) -> Result<Lease, NoWorker> {
        self.acquire_for(wait, None).await
    }

    /// [`Router::acquire`] on the side [`Router::choose`] picks for `sticky`.
    #[cfg(test)]
    pub async fn acquire_for(
        self: &Arc<Self>,
        wait: Duration,
        sticky: Option<u64>,
    ) -> Result<Lease, NoWorker> {
        let to_new = self.choose(sticky).map(|(_, new)| new);
        self.acquire_side(wait, to_new).await
    }

    /// During a canary, the split and the side a request goes to: a
    /// `sticky` key (a hash of the client's address, header or cookie)
    /// always picks the same side; without one each request goes on its
    /// own. The side is chosen once per request, then kept while it waits.
    pub fn choose(&self, sticky: Option<u64>) -> Option<(Arc<Split>, bool)> {
        let split = self.in_service.load().split.clone()?;
        let new = match sticky {
            Some(key) => key % 1000 < split.permille,
            None => split.next_is_new(),
        };
        Some((split, new))
    }

    /// [`Router::acquire`] for a request whose canary side `to_new` was
    /// chosen ([`Router::choose`]; None without a canary).
    pub async fn acquire_side(
        self: &Arc<Self>,
        wait: Duration,
        to_new: Option<bool>,
    ) -> Result<Lease, NoWorker> {
        // First come, first served: while requests wait, a new one queues
        // behind them instead of taking the place the first of them was
        // woken for (which would send that one to the back of the queue).
        // Not during a canary: those waiting may wait for the other side,
        // whose congestion must not hold this one back.
        let behind = to_new.is_none() && self.waiting.load(Ordering::Acquire) > 0;
        let mut none_yet = false;
        if !behind {
            match self.try_acquire(to_new) {
                Err(NoWorker::Busy) => {}
                Err(NoWorker::NoneInService) if !self.none_coming() => none_yet = true,
                done => return done,
            }
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_queued {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(if none_yet {
                NoWorker::NoneInService
            } else {
                NoWorker::QueueFull
            });
        }
        let _waiting = Waiting(&self.waiting);
        let line = self.line(crate::shards::current());
        line.waiting.fetch_add(1, Ordering::SeqCst);
        let _in_line = Waiting(&line.waiting);
        let _side = to_new.map(|new| {
            let counts = [
                &self.waiting_for[usize::from(new)],
                &line.waiting_for[usize::from(new)],
            ];
            counts.map(|count| {
                count.fetch_add(1, Ordering::SeqCst);
                Waiting(count)
            })
        });
        let deadline = tokio::time::Instant::now() + wait;
        let mut first = true;
        loop {
            let freed = line.freed.notified();
            tokio::pin!(freed);
            // Registered before the look, so a place freed in between is
            // not missed. After the first look, every look follows a
            // wake-up, which this request may have to hand on.
            let notified = freed.as_mut().enable() || !first;
            first = false;
            if notified || !behind {
                match self.try_acquire(to_new) {
                    // It does not wake the next in line for any room it sees
                    // left: that room may be the place another request was
                    // just woken for, and of two woken for one place, the
                    // one that finds it taken goes to the back of its line
                    // (with that, there were 0.7 such losses per wait on
                    // `echo` at 256 connections, and p99 was 15.5 ms
                    // against 9.7 without). Each freed place wakes one
                    // request (`Lease::drop`), and so does each place a
                    // worker's capacity gains; a worker that comes into
                    // service wakes them all (`publish_split`).
                    Ok(lease) => return Ok(lease),
                    Err(NoWorker::NoneInService) if self.none_coming() => {
                        return Err(NoWorker::NoneInService);
                    }
                    Err(NoWorker::NoneInService) => {}
                    Err(NoWorker::Busy | NoWorker::QueueFull) => {
                        // During a canary, a wake-up for a place on the other
                        // side, which this request may not take, goes on while
                        // requests wait for that side: the next in line looks,
                        // and so on until one of them takes it. Otherwise the
                        // place would stay free until the next one is freed,
                        // or their deadline.
                        if notified && let Some(other) = to_new.map(|new| !new) {
                            let others =
                                self.waiting_for[usize::from(other)].load(Ordering::Acquire);
                            if self.wake_next(others, other) {
                                // The request it woke may be on this thread,
                                // and this one may be woken back before it
                                // runs: let it run.
                                tokio::task::yield_now().await;
                            }
                        }
                    }
                }
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                let live = self
                    .in_service
                    .load()
                    .workers
                    .iter()
                    .any(|c| !c.is_closed());
                return Err(if live {
                    NoWorker::Busy
                } else {
                    NoWorker::NoneInService
                });
            }
        }
    }

    /// During a canary, wakes the next request waiting for `side` when
    /// `waiting` do and a worker of that side has room: in a line that
    /// holds one (this shard's first). Whether it woke one.
    fn wake_next(&self, waiting: usize, side: bool) -> bool {
        if waiting == 0 || self.pick(&self.in_service.load(), Some(side)).is_err() {
            return false;
        }
        let shard = crate::shards::current();
        let line = std::iter::once(self.line(shard))
            .chain(&self.lines)
            .find(|l| l.waiting_for[usize::from(side)].load(Ordering::SeqCst) > 0);
        match line {
            Some(line) => line.freed.notify_one(),
            // Counted, but not in a line yet: it looks before it waits.
            None => self.wake_one(shard),
        }
        true
    }

    fn try_acquire(self: &Arc<Self>, to_new: Option<bool>) -> Result<Lease, NoWorker> {
        let routing = self.in_service.load();
        // The place is taken only if the worker still holds the load it was
        // picked at: another shard's thread may pick the same worker at the
        // same moment, and both would take its last free place (two
        // requests on one worker while another stays idle). The one that
        // loses picks again.
        let (ch, new) = loop {
            let (ch, new, load) = self.pick(&routing, to_new)?;
            let taken =
                ch.in_flight
                    .compare_exchange(load, load + 1, Ordering::SeqCst, Ordering::SeqCst);
            if taken.is_ok() {
                break (ch, new);
            }
        };
        Ok(Lease {
            channel: ch.clone(),
            router: self.clone(),
            side: routing.split.clone().map(|s| (s, new)),
        })
    }

    /// The least-loaded worker with room, whether it is the canary's, and
    /// the requests it held when picked.
    fn pick<'r>(
        &self,
        routing: &'r Routing,
        to_new: Option<bool>,
    ) -> Result<(&'r Arc<Channel>, bool, usize), NoWorker> {
        let workers = &routing.workers;
        let n = workers.len();
        if n == 0 {
            return Err(NoWorker::NoneInService);
        }
        // With a split, only the chosen side's workers, unless none of
        // them is live.
        let side = to_new.filter(|_| routing.split.is_some()).filter(|&new| {
            (0..n).any(|i| routing.canary.get(i) == Some(&new) && !workers[i].is_closed())
        });
        let shard = crate::shards::current();
        let start = self.line(shard).next.fetch_add(1, Ordering::Relaxed);
        // Whether a worker past its request limit was passed over.
        let spent_seen = std::cell::Cell::new(false);
        // The least-loaded worker among those `mine` takes, spent ones
        // only with `with_spent`.
        let lightest = |with_spent: bool, mine: &dyn Fn(&Channel) -> bool| {
            let mut best: Option<Candidate> = None;
            for i in 0..n {
                let at = (start + i) % n;
                let ch = &workers[at];
                let new = routing.canary.get(at).copied().unwrap_or(false);
                if ch.is_closed() || side.is_some_and(|s| s != new) || !mine(ch) {
                    continue;
                }
                if !with_spent && ch.is_spent() {
                    spent_seen.set(true);
                    continue;
                }
                let c = Candidate {
                    at,
                    new,
                    load: ch.in_flight.load(Ordering::SeqCst),
                    cap: ch.capacity.load(Ordering::Acquire).max(1),
                };
                if best.is_none_or(|b| c.lighter_than(&b)) {
                    best = Some(c);
                }
            }
            best
        };
        // This shard's lightest worker when it would start the request at
        // once: the others' counters are not even read (they are lines
        // their own threads write). Else the lightest of all if it would
        // start it at once; else, as every worker's threads are busy, this
        // shard's unless it is full or another is lighter by more than an
        // eighth of its capacity (2 to 16 requests): a request never waits
        // behind another while a worker elsewhere is free, and otherwise
        // mostly stays on the thread that read it.
        let choose = |with_spent: bool| {
            let local = lightest(with_spent, &|ch| ch.shard == shard);
            match local {
                Some(l) if workers[l.at].has_room_now(l.load, l.cap) => Some(l),
                _ => {
                    // The other shards' workers only (none with one shard).
                    let best = match (local, lightest(with_spent, &|ch| ch.shard != shard)) {
                        (Some(l), Some(r)) if !r.lighter_than(&l) => Some(l),
                        (l, r) => r.or(l),
                    };
                    match (local, best) {
                        (_, Some(b)) if workers[b.at].has_room_now(b.load, b.cap) => Some(b),
                        (Some(l), Some(b))
                            if l.load < l.cap && !b.lighter_by(&l, shard_slack(l.cap)) =>
                        {
                            Some(l)
                        }
                        (_, b) => b,
                    }
                }
            }
        };
        // A worker past its request limit (its replacement boots) takes a
        // request only when no other would start it at once: it serves
        // close to its limit, and no request waits behind another while it
        // has room.
        let chosen = match choose(false) {
            Some(c) if workers[c.at].has_room_now(c.load, c.cap) => Some(c),
            _ if spent_seen.get() => choose(true),
            fresh => fresh,
        };
        match chosen {
            Some(c) if c.load < c.cap => Ok((&workers[c.at], c.new, c.load)),
            Some(_) => Err(NoWorker::Busy),
            None => Err(NoWorker::NoneInService),
        }
    }
}

/// A worker [`Router::pick`] considers: its index, whether it is the
/// canary's, and its load and capacity.
#[derive(Clone, Copy)]
struct Candidate {
    at: usize,
    new: bool,
    load: usize,
    cap: usize,
}

impl Candidate {
    /// Whether this worker's share of its capacity in use is below
    /// `other`'s (compared without division: load_a / cap_a < load_b /
    /// cap_b).
    fn lighter_than(&self, other: &Candidate) -> bool {
        self.lighter_by(other, 0)
    }

    /// [`Candidate::lighter_than`] with `slack` more requests on this one.
    fn lighter_by(&self, other: &Candidate, slack: usize) -> bool {
        (self.load + slack) * other.cap < other.load * self.cap
    }
}

/// How many more requests this shard's worker may hold than the lightest
/// other before a request goes to that one, when every worker's threads
/// are busy: an eighth of its capacity, 2 to 16 requests.
fn shard_slack(cap: usize) -> usize {
    (cap / 8).clamp(2, 16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixStream;

    /// A worker's channel with room for `capacity` requests, and the
    /// worker's end of it (dropping that closes the channel).
    struct Worker {
        channel: Arc<Channel>,
        theirs: Option<UnixStream>,
    }

    fn worker(serial: u64, capacity: usize) -> Worker {
        worker_on(serial, capacity, 0)
    }

    /// A worker whose channel belongs to front shard `shard`.
    fn worker_on(serial: u64, capacity: usize, shard: usize) -> Worker {
        let (channel, theirs) = Channel::of_one_thread(serial, shard);
        channel.capacity.store(capacity, Ordering::Release);
        Worker {
            channel,
            theirs: Some(theirs),
        }
    }

    fn serials(leases: &[Lease]) -> Vec<u64> {
        leases.iter().map(|l| l.channel.serial).collect()
    }

    async fn until(what: &str, done: impl Fn() -> bool) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what} within 5s"));
    }

    const NOW: Duration = Duration::ZERO;

    #[tokio::test]
    async fn a_request_before_the_first_workers_are_in_service_waits_for_them() {
        // Before the supervisor's first step, too: the front accepts as
        // soon as the sockets are bound.
        let router = Router::new(10);
        let r = router.clone();
        let waiting = tokio::spawn(async move {
            r.acquire(Duration::from_secs(5))
                .await
                .map(|l| l.channel.serial)
        });
        until("the request waits", || router.queued() == 1).await;
        let a = worker(1, 1);
        router.publish(vec![a.channel.clone()]);
        assert_eq!(waiting.await.unwrap(), Ok(1));
    }

    #[tokio::test]
    async fn with_no_worker_in_service_and_none_booting_a_request_is_refused_at_once() {
        let router = Router::new(10);
        router.set_starting(false);
        let started = std::time::Instant::now();
        let got = router.acquire(Duration::from_secs(5)).await;
        assert_eq!(got.err(), Some(NoWorker::NoneInService));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(router.queued(), 0);
    }

    #[tokio::test]
    async fn requests_go_to_the_least_loaded_worker_up_to_its_capacity() {
        let router = Router::new(0);
        let (a, b) = (worker(1, 2), worker(2, 2));
        router.publish(vec![a.channel.clone(), b.channel.clone()]);
        let mut leases = Vec::new();
        for _ in 0..4 {
            leases.push(router.acquire(NOW).await.unwrap());
        }
        let mut got = serials(&leases);
        got.sort_unstable();
        assert_eq!(got, [1, 1, 2, 2], "two each");
        assert_eq!(a.channel.in_flight.load(Ordering::Acquire), 2);
        // Both full, and no request may wait.
        assert_eq!(router.acquire(NOW).await.err(), Some(NoWorker::QueueFull));
        // A lease dropped frees its worker's place, and that worker takes
        // the next request.
        let freed = leases.iter().position(|l| l.channel.serial == 2).unwrap();
        drop(leases.remove(freed));
        assert_eq!(b.channel.in_flight.load(Ordering::Acquire), 1);
        let next = router.acquire(NOW).await.unwrap();
        assert_eq!(next.channel.serial, 2);
    }

    #[tokio::test]
    async fn a_request_stays_on_its_shard_unless_a_worker_elsewhere_is_free_or_much_lighter() {
        // The test's thread is no shard's: it counts as shard 0. Each
        // worker has one thread.
        let router = Router::new(0);
        let (mine, other) = (worker_on(1, 16, 0), worker_on(2, 16, 1));
        router.publish(vec![other.channel.clone(), mine.channel.clone()]);
        let load = |w: &Worker| w.channel.in_flight.load(Ordering::Acquire);
        let mut leases = Vec::new();
        let mut take = async |n: usize| {
            let mut got = Vec::new();
            for _ in 0..n {
                let lease = router.acquire(NOW).await.unwrap();
                got.push(lease.channel.serial);
                leases.push(lease);
            }
            got
        };
        // This shard's worker while its thread is free; then the other,
        // whose thread is free; then, both busy, this shard's until it
        // holds more than the slack (16 / 8 = 2) beyond the other's.
        assert_eq!(take(6).await, [1, 2, 1, 1, 1, 2]);
        assert_eq!(take(4).await, [1, 2, 1, 2]);
        assert_eq!((load(&mine), load(&other)), (6, 4));
        // Both fill up; then a request is refused (no queue here).
        for _ in 0..22 {
            leases.push(router.acquire(NOW).await.unwrap());
        }
        assert_eq!((load(&mine), load(&other)), (16, 16));
        assert_eq!(router.acquire(NOW).await.err(), Some(NoWorker::QueueFull));
    }

    #[tokio::test]
    async fn load_is_the_share_of_a_workers_capacity_in_use() {
        let router = Router::new(0);
        let (big, small) = (worker(1, 4), worker(2, 1));
        router.publish(vec![big.channel.clone(), small.channel.clone()]);
        // 1/4 of the big one in use is less than 1/1 of the small one, and
        // 0/1 is less than 1/4: one request each, whoever is first.
        let mut held = vec![router.acquire(NOW).await.unwrap()];
        held.push(router.acquire(NOW).await.unwrap());
        let mut got = serials(&held);
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
        // With the small one full, the big one takes the rest of its room.
        for _ in 0..3 {
            held.push(router.acquire(NOW).await.unwrap());
        }
        assert_eq!(serials(&held[2..]), [1, 1, 1]);
        assert_eq!(router.acquire(NOW).await.err(), Some(NoWorker::QueueFull));
    }

    #[tokio::test]
    async fn equally_loaded_workers_take_turns() {
        let router = Router::new(0);
        let workers: Vec<Worker> = (1..=3).map(|s| worker(s, 4)).collect();
        router.publish(workers.iter().map(|w| w.channel.clone()).collect());
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..30 {
            // Taken and given back at once: every worker is always idle.
            let lease = router.acquire(NOW).await.unwrap();
            *seen.entry(lease.channel.serial).or_insert(0) += 1;
        }
        let seen: Vec<(u64, i32)> = seen.into_iter().collect();
        assert_eq!(seen, [(1, 10), (2, 10), (3, 10)]);
    }

    #[tokio::test]
    async fn a_worker_past_its_request_limit_takes_only_what_no_other_would_start_at_once() {
        let router = Router::new(0);
        let (spent, fresh) = (worker(1, 4), worker(2, 4));
        spent.channel.recycle_after(1);
        spent.channel.count_served();
        assert!(spent.channel.is_spent());
        router.publish(vec![spent.channel.clone(), fresh.channel.clone()]);
        for _ in 0..10 {
            // Given back at once: the other's thread is always free.
            assert_eq!(router.acquire(NOW).await.unwrap().channel.serial, 2);
        }
        // The other's one thread busy: the spent one is idle, so it takes
        // the next rather than let it wait behind that one.
        let busy = router.acquire(NOW).await.unwrap();
        assert_eq!(busy.channel.serial, 2);
        let mut held = vec![router.acquire(NOW).await.unwrap()];
        assert_eq!(serials(&held), [1]);
        // Both hold one: the least loaded again, whichever it is, up to
        // both full, and never a request refused while one has room.
        for _ in 0..6 {
            held.push(router.acquire(NOW).await.unwrap());
        }
        assert_eq!(router.acquire(NOW).await.err(), Some(NoWorker::QueueFull));
        // With only spent workers, they serve.
        drop((busy, held));
        router.publish(vec![spent.channel.clone()]);
        assert_eq!(router.acquire(NOW).await.unwrap().channel.serial, 1);
    }

    #[tokio::test]
    async fn a_split_sends_its_share_to_the_new_generation() {
        let router = Router::new(0);
        let (old, new) = (worker(1, 8), worker(2, 8));
        let split = Arc::new(Split::new(2, 100));
        router.publish_split(
            vec![old.channel.clone(), new.channel.clone()],
            vec![false, true],
            Some(split.clone()),
        );
        let mut to_new = 0;
        for _ in 0..1000 {
            let lease = router.acquire(NOW).await.unwrap();
            let (_, is_new) = lease.side.clone().expect("a side during a split");
            assert_eq!(is_new, lease.channel.serial == 2);
            to_new += usize::from(is_new);
        }
        assert_eq!(to_new, 100, "10% exactly");
        // A side with no live worker sends its share to the other.
        let mut gone = new;
        gone.theirs = None;
        until("the channel closes", || gone.channel.is_closed()).await;
        for _ in 0..20 {
            assert_eq!(router.acquire(NOW).await.unwrap().channel.serial, 1);
        }
        // A sticky key always picks the same side, and the keys spread by
        // the share.
        let (new2, mut sides) = (worker(3, 8), std::collections::HashMap::new());
        router.publish_split(
            vec![old.channel.clone(), new2.channel.clone()],
            vec![false, true],
            Some(split.clone()),
        );
        for key in 0..1000u64 {
            let lease = router.acquire_for(NOW, Some(key * 7919)).await.unwrap();
            let again = router.acquire_for(NOW, Some(key * 7919)).await.unwrap();
            assert_eq!(lease.channel.serial, again.channel.serial);
            *sides.entry(lease.channel.serial).or_insert(0) += 1;
        }
        assert_eq!(sides[&3], 100, "{sides:?}");
        // Without a split, no side is counted.
        router.publish(vec![old.channel.clone()]);
        assert!(router.acquire(NOW).await.unwrap().side.is_none());
    }

    #[tokio::test]
    async fn a_closed_channel_takes_no_request() {
        let router = Router::new(0);
        let (mut a, b) = (worker(1, 8), worker(2, 8));
        router.publish(vec![a.channel.clone(), b.channel.clone()]);
        // The worker exits: its channel reads EOF.
        a.theirs = None;
        until("the channel closes", || a.channel.is_closed()).await;
        for _ in 0..4 {
            assert_eq!(router.acquire(NOW).await.unwrap().channel.serial, 2);
        }
        b.channel.shutdown();
        until("the channel closes", || b.channel.is_closed()).await;
        assert_eq!(
            router.acquire(NOW).await.err(),
            Some(NoWorker::NoneInService)
        );
    }

    #[tokio::test]
    async fn a_request_waits_in_corral_for_the_first_free_place() {
        let router = Router::new(1);
        let a = worker(1, 1);
        router.publish(vec![a.channel.clone()]);
        let held = router.acquire(NOW).await.unwrap();
        let waiter = tokio::spawn({
            let router = router.clone();
            async move {
                let lease = router.acquire(Duration::from_secs(10)).await;
                lease.map(|l| l.channel.serial)
            }
        });
        until("the request waits", || router.queued() == 1).await;
        // One waits already: the next is refused at once.
        assert_eq!(router.acquire(NOW).await.err(), Some(NoWorker::QueueFull));
        drop(held);
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter is woken by the freed place")
            .unwrap();
        assert_eq!(got, Ok(1));
        assert_eq!(router.queued(), 0);
    }

    /// Starts a request that waits for a place in `router`, once the
    /// `n - 1` before it wait; it notes its `id` in `served` when it gets
    /// a place, and keeps the place while `hold`.
    async fn waiter(
        router: &Arc<Router>,
        id: u64,
        served: &Arc<std::sync::Mutex<Vec<u64>>>,
        hold: bool,
    ) -> tokio::task::JoinHandle<Option<Lease>> {
        let n = router.queued() + 1;
        let task = tokio::spawn({
            let (router, served) = (router.clone(), served.clone());
            async move {
                let lease = router.acquire(Duration::from_secs(10)).await.ok()?;
                served.lock().unwrap().push(id);
                hold.then_some(lease)
            }
        });
        until("the request waits", || router.queued() == n).await;
        task
    }

    /// A worker with one place, taken (`held`), and three requests that
    /// wait for it, started in the order 1, 2, 3.
    struct Line {
        router: Arc<Router>,
        worker: Worker,
        held: Lease,
        served: Arc<std::sync::Mutex<Vec<u64>>>,
        tasks: Vec<tokio::task::JoinHandle<Option<Lease>>>,
    }

    async fn three_waiting(hold: bool) -> Line {
        let router = Router::new(10);
        let worker = worker(1, 1);
        router.publish(vec![worker.channel.clone()]);
        let held = router.acquire(NOW).await.unwrap();
        let served = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for id in 1..=3 {
            tasks.push(waiter(&router, id, &served, hold).await);
        }
        Line {
            router,
            worker,
            held,
            served,
            tasks,
        }
    }

    #[tokio::test]
    async fn waiting_requests_are_served_first_come_first_served() {
        let Line {
            router,
            worker: _a,
            held,
            served,
            tasks,
        } = three_waiting(false).await;
        // The place is freed, and before the first in line runs, a new
        // request comes: it queues behind the three instead of taking the
        // place (which would send the first to the back of the line).
        drop(held);
        let mut late = Box::pin(router.acquire(Duration::from_secs(10)));
        assert!(futures_util::poll!(&mut late).is_pending());
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("every waiter gets its turn")
                .unwrap();
        }
        let late = tokio::time::timeout(Duration::from_secs(5), late)
            .await
            .expect("the late request gets its turn");
        assert!(late.is_ok());
        assert_eq!(*served.lock().unwrap(), [1, 2, 3]);
    }

    /// Sticky keys that pick the new and the old generation of a 50% split.
    const NEW: u64 = 0;
    const OLD: u64 = 999;

    /// A canary at 50%: the old generation's worker (serial 1) and the
    /// new one's (serial 2), one place each.
    fn canary_of_one_place_each() -> (Arc<Router>, Worker, Worker) {
        let router = Router::new(10);
        let (old, new) = (worker(1, 1), worker(2, 1));
        router.publish_split(
            vec![old.channel.clone(), new.channel.clone()],
            vec![false, true],
            Some(Arc::new(Split::new(2, 500))),
        );
        (router, old, new)
    }

    /// A request with the sticky `key` that waits up to 10 s for a place:
    /// the serial of the worker it got.
    fn waiting_for(
        router: &Arc<Router>,
        key: u64,
    ) -> tokio::task::JoinHandle<Result<u64, NoWorker>> {
        let router = router.clone();
        tokio::spawn(async move {
            router
                .acquire_for(Duration::from_secs(10), Some(key))
                .await
                .map(|l| l.channel.serial)
        })
    }

    #[tokio::test]
    async fn during_a_canary_a_request_does_not_queue_behind_the_other_sides() {
        let (router, _old, _new) = canary_of_one_place_each();
        let _new_held = router.acquire_for(NOW, Some(NEW)).await.unwrap();
        let new_waiter = waiting_for(&router, NEW);
        until("the request for the new side waits", || {
            router.queued() == 1
        })
        .await;
        let got = tokio::time::timeout(
            Duration::from_secs(5),
            router.acquire_for(Duration::from_secs(10), Some(OLD)),
        )
        .await
        .expect("the old side's free place is taken at once");
        assert_eq!(got.unwrap().channel.serial, 1);
        new_waiter.abort();
    }

    #[tokio::test]
    async fn during_a_canary_a_place_freed_on_one_side_reaches_a_request_behind_the_other_sides() {
        let (router, _old, _new) = canary_of_one_place_each();
        // Both are full; a request for the new side waits first, then one
        // for the old side.
        let old_held = router.acquire_for(NOW, Some(OLD)).await.unwrap();
        let _new_held = router.acquire_for(NOW, Some(NEW)).await.unwrap();
        let for_new = waiting_for(&router, NEW);
        until("the request for the new side waits", || {
            router.queued() == 1
        })
        .await;
        let for_old = waiting_for(&router, OLD);
        until("the request for the old side waits", || {
            router.queued() == 2
        })
        .await;
        // The old side's place is freed: the wake-up goes to the first in
        // line, which may not take it, and reaches the request behind.
        drop(old_held);
        let got = tokio::time::timeout(Duration::from_secs(5), for_old)
            .await
            .expect("the old side's request gets the freed place")
            .unwrap();
        assert_eq!(got, Ok(1));
        assert!(!for_new.is_finished(), "the new side is still full");
        for_new.abort();
    }

    /// The request woken for the freed place waits for the other side, and
    /// the one that may take it waits in another shard's line: the wake-up
    /// goes there (it went back to the first one's own line, which woke
    /// itself again and again without yielding: both front threads spun,
    /// and corral answered nothing).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn during_a_canary_a_place_freed_reaches_a_request_for_it_in_another_shards_line() {
        let shards = crate::shards::Shards::start(2).unwrap();
        let (router, _old, _new) = canary_of_one_place_each();
        let old_held = router.acquire_for(NOW, Some(OLD)).await.unwrap();
        let _new_held = router.acquire_for(NOW, Some(NEW)).await.unwrap();
        // Line 0: a request for the new side.
        let for_new = waiting_for(&router, NEW);
        until("the request for the new side waits", || {
            router.queued() == 1
        })
        .await;
        // Line 1: a request for the old side, on shard 1's thread.
        let for_old = {
            let router = router.clone();
            shards.handle(1).spawn(async move {
                router
                    .acquire_for(Duration::from_secs(10), Some(OLD))
                    .await
                    .map(|l| l.channel.serial)
            })
        };
        until("the request for the old side waits", || {
            router.queued() == 2
        })
        .await;
        drop(old_held);
        let got = tokio::time::timeout(Duration::from_secs(5), for_old)
            .await
            .expect("the old side's request gets the freed place")
            .unwrap();
        assert_eq!(got, Ok(1));
        assert!(!for_new.is_finished(), "the new side is still full");
        for_new.abort();
    }

    #[tokio::test]
    async fn threads_picking_at_once_never_put_two_requests_in_one_place() {
        // Two workers with one place each, taken and given back by four
        // threads at once (as the front's shards do): a place is taken by
        // one request, never by two that both saw it free.
        let router = Router::new(0);
        let workers = [worker(1, 1), worker(2, 1)];
        router.publish(workers.iter().map(|w| w.channel.clone()).collect());
        let over = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (router, over) = (router.clone(), over.clone());
                std::thread::spawn(move || {
                    for _ in 0..50_000 {
                        if let Ok(lease) = router.try_acquire(None)
                            && lease.channel.in_flight.load(Ordering::SeqCst) > 1
                        {
                            over.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(over.load(Ordering::Relaxed), 0, "a place held twice");
    }

    #[tokio::test]
    async fn a_request_woken_for_a_place_keeps_its_turn() {
        // Two places, both taken; four requests wait, in the order 1 to 4,
        // and keep the place they get.
        let router = Router::new(10);
        let worker = worker(1, 2);
        router.publish(vec![worker.channel.clone()]);
        let first = router.acquire(NOW).await.unwrap();
        let second = router.acquire(NOW).await.unwrap();
        let served = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for id in 1..=4 {
            tasks.push(waiter(&router, id, &served, true).await);
        }
        // Both places are freed before the two woken run. The first takes
        // one; it must not wake the third for the other, which the second
        // was woken for: the third would find none, and lose its turn to
        // the fourth.
        drop(first);
        drop(second);
        let mut tasks = tasks.into_iter();
        let mut held = Vec::new();
        for _ in 0..2 {
            let task = tasks.next().unwrap();
            let lease = tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("the two woken are served")
                .unwrap();
            held.push(lease.expect("a place"));
        }
        for (place, n) in held.into_iter().zip(3..) {
            drop(place);
            until("the next in line is served", || {
                served.lock().unwrap().len() == n
            })
            .await;
        }
        assert_eq!(*served.lock().unwrap(), [1, 2, 3, 4]);
        for task in tasks {
            task.abort();
        }
    }

    #[tokio::test]
    async fn room_for_several_waiters_serves_them_all() {
        let Line {
            router: _router,
            worker: a,
            held,
            served,
            tasks,
        } = three_waiting(true).await;
        // The worker's capacity grows (it answers fast), and one place is
        // freed: a wake-up for that place and one for each place gained.
        a.channel.resize(3);
        drop(held);
        let mut leases = Vec::new();
        for task in tasks {
            let lease = tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("each place wakes one")
                .unwrap();
            leases.push(lease.expect("a place"));
        }
        assert_eq!(*served.lock().unwrap(), [1, 2, 3]);
        assert_eq!(a.channel.in_flight.load(Ordering::Acquire), 3);
    }

    #[tokio::test]
    async fn a_wait_ends_busy_at_its_deadline_or_with_a_newly_published_worker() {
        let router = Router::new(4);
        let a = worker(1, 1);
        router.publish(vec![a.channel.clone()]);
        let _held = router.acquire(NOW).await.unwrap();
        let started = std::time::Instant::now();
        let got = router.acquire(Duration::from_millis(50)).await;
        assert_eq!(got.err(), Some(NoWorker::Busy));
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(router.queued(), 0, "no longer counted as waiting");
        let waiter = tokio::spawn({
            let router = router.clone();
            async move {
                let lease = router.acquire(Duration::from_secs(10)).await;
                lease.map(|l| l.channel.serial)
            }
        });
        until("the request waits", || router.queued() == 1).await;
        let b = worker(2, 1);
        router.publish(vec![a.channel.clone(), b.channel.clone()]);
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("publishing wakes the waiter")
            .unwrap();
        assert_eq!(got, Ok(2));
    }
}
