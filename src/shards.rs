//! The front's shards: `server.io_threads` event loops, each a thread of
//! its own that accepts connections, serves them and runs the channels of
//! its share of the workers (worker slot `i` belongs to shard
//! `i % io_threads`). A request goes to a worker of its own shard unless
//! another would start it sooner ([`crate::router`]), so most requests
//! never leave the thread that read them: no hand-off between threads, no
//! wake-up of another thread, no cache line that two threads fight over.
//! A connection is served by the shard that accepted it unless another
//! serves two fewer (it then moves there, once). It counts on its shard
//! while its socket is open: a WebSocket's for its whole life, so that
//! long-lived sockets spread over the shards, and so over the workers.
//!
//! Shard 0 is the thread of corral's main runtime (which also runs the
//! supervisor and the status server); each other shard is a
//! single-threaded tokio runtime on a thread of its own. One work-stealing
//! runtime with several threads did the opposite: a connection's task and
//! its worker's channel landed on different threads, and every request
//! paid for waking the other one (bench/README.md has the numbers).

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;

thread_local! {
    /// The shard whose event loop runs on this thread (0 on any other).
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// The shard whose thread this is.
pub fn current() -> usize {
    CURRENT.with(Cell::get)
}

/// The shards' runtimes, shard 0 first.
pub struct Shards {
    handles: Vec<Handle>,
    /// Connections each shard serves.
    open: Vec<AtomicUsize>,
}

/// Counts a connection on its shard while it lives.
pub struct OnShard(Arc<Shards>, usize);

impl Drop for OnShard {
    fn drop(&mut self) {
        self.0.open[self.1].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shards {
    /// Shard 0 only: the current runtime. Needs a tokio runtime.
    pub fn single() -> Arc<Shards> {
        Shards::of(vec![Handle::current()])
    }

    fn of(handles: Vec<Handle>) -> Arc<Shards> {
        let open = handles.iter().map(|_| AtomicUsize::new(0)).collect();
        Arc::new(Shards { handles, open })
    }

    /// `count` shards (at least 1): the current runtime, and a thread with
    /// a runtime of its own for each other. The threads live as long as the
    /// process. Needs a tokio runtime.
    pub fn start(count: usize) -> std::io::Result<Arc<Shards>> {
        let mut handles = vec![Handle::current()];
        for index in 1..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            std::thread::Builder::new()
                .name(format!("corral-front-{index}"))
                .spawn(move || {
                    CURRENT.with(|c| c.set(index));
                    runtime.block_on(std::future::pending::<()>());
                })?;
        }
        Ok(Shards::of(handles))
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// The shard that worker slot `slot` belongs to.
    pub fn of_slot(&self, slot: usize) -> usize {
        slot % self.handles.len()
    }

    /// Counts a connection on shard `index` until the guard drops.
    pub fn opened(self: &Arc<Self>, index: usize) -> OnShard {
        self.open[index].fetch_add(1, Ordering::Relaxed);
        OnShard(self.clone(), index)
    }

    /// Where a connection accepted on shard `here` is served: `here`,
    /// unless another shard serves at least two connections fewer (then
    /// the first such one with the fewest).
    pub fn fewest_open(&self, here: usize) -> usize {
        let load = |i: usize| self.open[i].load(Ordering::Relaxed);
        let mut best = here;
        for i in 0..self.open.len() {
            if load(i) < load(best) {
                best = i;
            }
        }
        if load(best) + 2 <= load(here) {
            best
        } else {
            here
        }
    }

    /// Shard `index`'s runtime.
    pub fn handle(&self, index: usize) -> &Handle {
        &self.handles[index % self.handles.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_shard_runs_its_tasks_on_its_own_thread() {
        let shards = Shards::start(3).unwrap();
        assert_eq!(shards.len(), 3);
        assert_eq!(shards.of_slot(4), 1);
        let mut threads = std::collections::HashSet::new();
        for i in 0..3 {
            let (shard, thread) = shards
                .handle(i)
                .spawn(async { (current(), std::thread::current().id()) })
                .await
                .unwrap();
            assert_eq!(shard, i);
            threads.insert(thread);
        }
        assert_eq!(threads.len(), 3, "one thread per shard");
    }

    #[tokio::test]
    async fn a_connection_goes_where_fewest_are_open_once_the_gap_is_two() {
        let shards = Shards::start(3).unwrap();
        assert_eq!(shards.fewest_open(1), 1, "all equal: stays");
        let a = shards.opened(1);
        assert_eq!(shards.fewest_open(1), 1, "one more: stays");
        let b = shards.opened(1);
        let c = shards.opened(0);
        assert_eq!(shards.fewest_open(1), 2, "two more than shard 2");
        assert_eq!(shards.fewest_open(0), 0);
        drop((a, b, c));
        assert_eq!(shards.fewest_open(1), 1, "closed connections count no more");
    }
}
