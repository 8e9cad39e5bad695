//! Thread-per-core runtime for `weft-proxy run`: N single-threaded tokio runtimes ("workers"),
//! one per core, instead of one work-stealing runtime.
//!
//! ```text
//!  main thread: worker 0 (accept loops, admin, control plane, and its share of connections)
//!  thread 1..N: worker i (connections handed to it at accept)
//!
//!  accept ─► round robin ─► worker i: the connection, its requests, the pooled peer connection
//!                                     and app connections they use all run on worker i
//! ```
//!
//! Why: on a multi-threaded runtime a request hops between the task serving the app's connection,
//! the task driving the pooled HTTP/2 connection and (inbound) hyper's per-stream task; when those
//! sit on different workers each hop is a cross-thread wake-up (futex, context switch), and idle
//! workers wake up to steal. Measured on the 2-core bench machine, that was the largest single
//! cost per request. Here a connection is handed over once, at accept; after that everything it
//! touches stays on its worker: [`current`] tells the peer pool and the app pools which of their
//! per-worker connections to use.
//!
//! Without workers (`Proxy::start` on any runtime, as tests and `weft up` do) everything runs as
//! plain `tokio::spawn` tasks on the caller's runtime and [`current`] is 0.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::runtime::{Builder, Handle, Runtime};

thread_local! {
    /// Index of the worker whose runtime runs on this thread (0 elsewhere).
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The worker the calling task runs on (0 outside worker threads).
pub fn current() -> usize {
    INDEX.with(Cell::get)
}

/// Where accepted connections go. Empty: the current runtime.
#[derive(Clone, Default)]
pub struct Workers {
    handles: Arc<[Handle]>,
    next: Arc<AtomicUsize>,
}

impl Workers {
    /// How many workers serve connections (at least 1: the caller's runtime).
    pub fn count(&self) -> usize {
        self.handles.len().max(1)
    }

    /// The next worker in round robin, or `None` without workers.
    pub(crate) fn next(&self) -> Option<&Handle> {
        if self.handles.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles.get(i)
    }
}

/// Owns the worker threads of a process. Worker 0 is the runtime this returns, which the caller
/// drives with `block_on` on its own thread; workers 1.. run on threads started here and stop
/// when this is dropped (after the proxy has drained).
pub struct Threads {
    workers: Workers,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    joins: Vec<std::thread::JoinHandle<()>>,
}

impl Threads {
    /// Starts `n` (at least 1) single-threaded runtimes; returns the one for the calling thread.
    pub fn start(n: usize) -> std::io::Result<(Runtime, Threads)> {
        let main = Builder::new_current_thread().enable_all().build()?;
        let mut handles = vec![main.handle().clone()];
        let (mut stops, mut joins) = (vec![], vec![]);
        for i in 1..n.max(1) {
            let rt = Builder::new_current_thread().enable_all().build()?;
            handles.push(rt.handle().clone());
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let join = std::thread::Builder::new().name(format!("weft-worker-{i}")).spawn(move || {
                INDEX.with(|c| c.set(i));
                // Runs the tasks handed to this runtime until the process stops it.
                let _ = rt.block_on(stopped);
                rt.shutdown_timeout(std::time::Duration::from_millis(100));
            })?;
            stops.push(stop);
            joins.push(join);
        }
        Ok((main, Threads { workers: Workers { handles: handles.into(), next: Arc::default() }, stops, joins }))
    }

    pub fn workers(&self) -> Workers {
        self.workers.clone()
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        for s in self.stops.drain(..) {
            let _ = s.send(());
        }
        for j in self.joins.drain(..) {
            let _ = j.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_go_round_robin_and_know_their_worker() {
        let (rt, threads) = Threads::start(3).unwrap();
        let workers = threads.workers();
        assert_eq!(workers.count(), 3);
        let seen: Vec<usize> = rt.block_on(async {
            let mut seen = vec![];
            for _ in 0..6 {
                let h = workers.next().unwrap().spawn(async { current() });
                seen.push(h.await.unwrap());
            }
            seen
        });
        assert_eq!(seen, [0, 1, 2, 0, 1, 2]);
        drop(threads);
    }

    #[test]
    fn without_workers_everything_is_worker_0() {
        let w = Workers::default();
        assert_eq!(w.count(), 1);
        assert!(w.next().is_none());
        assert_eq!(current(), 0);
    }
}
