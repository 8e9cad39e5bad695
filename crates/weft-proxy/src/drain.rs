//! Graceful drain: a shutdown signal every accept loop and connection watches, and a count of open
//! connections to wait on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

#[derive(Clone)]
pub struct Drain {
    signal: watch::Sender<bool>,
    open: Arc<(AtomicUsize, Notify)>,
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
        Drain { signal: watch::channel(false).0, open: Arc::new((AtomicUsize::new(0), Notify::new())) }
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
        *self.signal.borrow()
    }

    /// Resolves once drain has started.
    pub async fn signaled(&self) {
        let mut rx = self.signal.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// Starts the drain and waits (up to `timeout`) for open connections to finish.
    pub async fn drain(&self, timeout: Duration) -> usize {
        self.signal.send_replace(true);
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
