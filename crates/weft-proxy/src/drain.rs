//! Graceful drain: a shutdown signal every accept loop and connection watches, and a count of open
//! connections to wait on.

use futures_util::task::AtomicWaker;
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

#[derive(Clone)]
pub struct Drain {
    signal: Arc<Signal>,
    open: Arc<(AtomicUsize, Notify)>,
}

/// The drain signal. A connection task polls its [`Signaled`] future on every wake-up (it sits in
/// a `select!` beside the connection), so polling must not touch shared locks: a `watch` or
/// `Notify` takes a process-wide mutex on each such poll, which the worker threads then contend
/// for on every request. Here each waiter owns an `AtomicWaker` and registers it once; the
/// shared list is locked only when a waiter starts and when drain begins.
#[derive(Default)]
struct Signal {
    draining: AtomicBool,
    waiters: Mutex<Vec<Weak<AtomicWaker>>>,
}

/// Held by each open connection.
pub struct ConnGuard(Arc<(AtomicUsize, Notify)>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.0 .0.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0 .1.notify_waiters();
        }
    }
}

impl Default for Drain {
    fn default() -> Self {
        Drain { signal: Arc::default(), open: Arc::new((AtomicUsize::new(0), Notify::new())) }
    }
}

impl Drain {
    pub fn conn(&self) -> ConnGuard {
        self.open.0.fetch_add(1, Ordering::AcqRel);
        ConnGuard(self.open.clone())
    }

    pub fn open_connections(&self) -> usize {
        self.open.0.load(Ordering::Acquire)
    }

    pub fn is_draining(&self) -> bool {
        self.signal.draining.load(Ordering::Acquire)
    }

    /// Resolves once drain has started.
    pub fn signaled(&self) -> Signaled {
        Signaled { signal: self.signal.clone(), waker: None }
    }

    /// Starts the drain and waits (up to `timeout`) for open connections to finish.
    pub async fn drain(&self, timeout: Duration) -> usize {
        self.signal.draining.store(true, Ordering::Release);
        let waiters = std::mem::take(&mut *self.signal.waiters.lock().unwrap_or_else(|p| p.into_inner()));
        for w in waiters.iter().filter_map(Weak::upgrade) {
            w.wake();
        }
        let wait = async {
            loop {
                let notified = self.open.1.notified();
                if self.open_connections() == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
        self.open_connections()
    }
}

/// The connections one kind of listener may have open at once (`limits.max_connections`): the
/// peer-facing listeners (inbound, gateway) share one count, the app-facing (outbound) ones
/// another. An accept loop takes a slot *before* it accepts, so at the cap it stops accepting
/// and new connections wait in the kernel's listen backlog (as HAProxy's `maxconn`), rather than
/// being accepted and closed. Each listener's loop holds the slot it waits to accept into, so
/// with several listeners on one count a busy one may be held to a few fewer than the cap; the
/// cap itself is never exceeded.
pub struct Slots {
    sem: Arc<Semaphore>,
    open: Gauge,
    at_limit: Counter,
}

/// Taken before an accept, then held by the accepted connection with its [`ConnGuard`]; frees
/// the slot when dropped.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
    counted: bool,
}

impl Slot {
    /// A connection was accepted into this slot (counted in `weft_connections_open`).
    pub fn opened(&mut self) {
        self.open.inc();
        self.counted = true;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.counted {
            self.open.dec();
        }
    }
}

impl Slots {
    pub fn new(max: usize, open: Gauge, at_limit: Counter) -> Self {
        Slots { sem: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))), open, at_limit }
    }

    /// A free slot, waiting (and counting the wait in `weft_connections_at_limit_total`) while
    /// all are taken. `at_limit` runs once per wait, for the caller's (rate-limited) warning.
    pub async fn take(&self, at_limit: impl FnOnce()) -> Slot {
        let permit = match self.sem.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.at_limit.inc();
                at_limit();
                match self.sem.clone().acquire_owned().await {
                    Ok(p) => p,
                    // Never closed; should it be, stop accepting for good.
                    Err(_) => std::future::pending().await,
                }
            }
        };
        Slot { _permit: permit, open: self.open.clone(), counted: false }
    }
}

/// See [`Signal`].
pub struct Signaled {
    signal: Arc<Signal>,
    waker: Option<Arc<AtomicWaker>>,
}

impl Future for Signaled {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Polled at every wake-up of every connection's task: no `Arc` clone here (a shared
        // counter written from every worker thread), and nothing to do once draining.
        let this = self.get_mut();
        let signal = &this.signal;
        if signal.draining.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        let waker = this.waker.get_or_insert_with(|| {
            let w = Arc::new(AtomicWaker::new());
            let mut waiters = signal.waiters.lock().unwrap_or_else(|p| p.into_inner());
            // Forget waiters whose connection has ended, now and then (amortised O(1) per push).
            if waiters.len() >= 64 && waiters.len().is_power_of_two() {
                waiters.retain(|w| w.strong_count() > 0);
            }
            waiters.push(Arc::downgrade(&w));
            w
        });
        // Register before checking the flag, so a drain starting in between still wakes us.
        // (`AtomicWaker::register` does not clone the waker again when it would wake the same task.)
        waker.register(cx.waker());
        if signal.draining.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wake_on_drain_and_late_ones_resolve_at_once() {
        let d = Drain::default();
        let waiting: Vec<_> = (0..100).map(|_| tokio::spawn(d.signaled())).collect();
        tokio::task::yield_now().await;
        assert!(!d.is_draining());
        assert_eq!(d.drain(Duration::from_secs(1)).await, 0);
        for w in waiting {
            w.await.unwrap();
        }
        d.signaled().await;
    }
}
