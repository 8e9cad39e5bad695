//! One multiplexed mTLS HTTP/2 connection per (peer proxy, SNI), shared by every request to it.
//!
//! Fast path: one short std mutex lock, two map lookups by reference (no allocation) and a clone
//! of the sender. A miss takes a per-key async lock so that a burst of first requests opens one
//! connection, not one each.

use crate::error::ProxyError;
use crate::net::{connect_peer, Alpn, Tls};
use crate::peer::PeerConn;
use crate::routes::Endpoint;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Peer proxy address → SNI → connections (one per slot).
type Map<T> = HashMap<SocketAddr, HashMap<String, Vec<Option<T>>>>;

type Gate = Arc<tokio::sync::Mutex<()>>;

/// A small fixed set of multiplexed connections per (peer, SNI): one per core by default, so
/// that framing and TLS for one peer are not serialised on one task.
pub struct Pool {
    slots: usize,
    /// Thread-per-core workers (1 without): each keeps to its own slots, see [`Pool::slot`].
    workers: usize,
    next: AtomicUsize,
    ready: Mutex<Map<PeerConn>>,
    /// One gate per (peer, SNI, slot) being connected, so a burst opens one connection.
    connecting: Mutex<HashMap<(SocketAddr, String, usize), Gate>>,
}

pub struct Settings<'a> {
    pub tls: &'a Tls,
    pub mark: u32,
    pub connect_timeout: Duration,
    pub metrics: &'a crate::metrics::Metrics,
}

impl Pool {
    pub fn new(slots: usize, workers: usize) -> Self {
        Pool {
            slots: slots.max(1),
            workers: workers.max(1),
            next: AtomicUsize::new(0),
            ready: Mutex::default(),
            connecting: Mutex::default(),
        }
    }

    /// The slot for the next request. A connection's task runs on the worker that opened it, so
    /// with `n` workers, worker `w` uses slots `w, w + n, w + 2n, ...` (round robin among them):
    /// its requests then never wake another thread. With fewer slots than workers, workers share.
    fn slot(&self) -> usize {
        let (n, w) = (self.workers, crate::workers::current() % self.workers);
        if self.slots >= n {
            w + n * (self.next.fetch_add(1, Ordering::Relaxed) % (self.slots / n))
        } else {
            w % self.slots
        }
    }

    fn cached(&self, peer: SocketAddr, sni: &str, slot: usize) -> Option<PeerConn> {
        let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        let entry = ready.get_mut(&peer)?.get_mut(sni)?.get_mut(slot)?;
        match entry {
            Some(s) if !s.is_closed() => Some(s.clone()),
            Some(_) => {
                *entry = None;
                None
            }
            None => None,
        }
    }

    /// Drops a connection that failed, so the next request on its slot opens a new one.
    pub fn evict(&self, ep: &Endpoint, sni: &str, slot: usize) {
        let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = ready.get_mut(&ep.proxy).and_then(|m| m.get_mut(sni)).and_then(|v| v.get_mut(slot)) {
            *entry = None;
        }
    }

    /// A sender for `ep`/`sni`, and the slot it came from (for [`Pool::evict`]).
    pub async fn get(&self, ep: &Endpoint, sni: &str, s: &Settings<'_>) -> Result<(PeerConn, usize), ProxyError> {
        let slot = self.slot();
        if let Some(sender) = self.cached(ep.proxy, sni, slot) {
            s.metrics.peer_reuses.inc();
            return Ok((sender, slot));
        }
        let key = (ep.proxy, sni.to_string(), slot);
        let gate = self.connecting.lock().unwrap_or_else(|p| p.into_inner()).entry(key.clone()).or_default().clone();
        let _g = gate.lock().await;
        if let Some(sender) = self.cached(ep.proxy, sni, slot) {
            s.metrics.peer_reuses.inc();
            return Ok((sender, slot));
        }
        // Boxed: rare, and it would otherwise grow every request's future.
        let result = Box::pin(self.connect(ep, sni, slot, s)).await;
        // The gate has done its job; drop it so the map does not grow with every peer ever seen.
        self.connecting.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
        result.map(|sender| (sender, slot))
    }

    async fn connect(&self, ep: &Endpoint, sni: &str, slot: usize, s: &Settings<'_>) -> Result<PeerConn, ProxyError> {
        let tls = connect_peer(s.tls, ep, sni, Alpn::H2, s.mark, s.connect_timeout).await?;
        let sender =
            PeerConn::handshake(crate::cork::Corked::new(tls)).await.map_err(|e| ProxyError::Upstream(e.into()))?;
        s.metrics.peer_connects.inc();
        let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        let slots = ready.entry(ep.proxy).or_default().entry(sni.to_string()).or_insert_with(|| vec![None; self.slots]);
        if let Some(entry) = slots.get_mut(slot) {
            *entry = Some(sender.clone());
        }
        Ok(sender)
    }
}
