//! One multiplexed mTLS HTTP/2 connection per (peer proxy, SNI), shared by every request to it.
//!
//! Fast path: one short std mutex lock, two map lookups by reference (no allocation) and a clone
//! of the sender. A miss takes a per-key async lock so that a burst of first requests opens one
//! connection, not one each.
//!
//! A connection carries at most `limits.max_concurrent_streams` requests at once (or fewer, if the
//! peer allows fewer). When a slot's connection is full (requests held by slow apps or callers),
//! the request goes out on an overflow connection to the same peer, opened on demand and dropped
//! once idle, instead of queueing behind the held ones.

use crate::error::ProxyError;
use crate::net::{connect_peer, Alpn, Tls};
use crate::peer::PeerConn;
use crate::routes::Endpoint;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Peer proxy address → SNI → connections.
type Map = HashMap<SocketAddr, HashMap<String, Conns>>;

/// The connections to one (peer, SNI).
struct Conns {
    /// One per slot.
    slots: Vec<Option<PeerConn>>,
    /// Opened when a slot's connection was full.
    overflow: Vec<PeerConn>,
}

/// The slot [`Pool::get`] returns for an overflow connection.
const OVERFLOW: usize = usize::MAX;

type Gate = Arc<tokio::sync::Mutex<()>>;

/// A small fixed set of multiplexed connections per (peer, SNI): one per core by default, so
/// that framing and TLS for one peer are not serialised on one task.
pub struct Pool {
    slots: usize,
    /// Thread-per-core workers (1 without): each keeps to its own slots, see [`Pool::slot`].
    workers: usize,
    next: AtomicUsize,
    ready: Mutex<Map>,
    /// One gate per (peer, SNI, slot) being connected, so a burst opens one connection.
    connecting: Mutex<HashMap<(SocketAddr, String, usize), Gate>>,
}

pub struct Settings<'a> {
    pub tls: &'a Tls,
    pub mark: u32,
    pub connect_timeout: Duration,
    pub metrics: &'a crate::metrics::Metrics,
    pub budget: &'a Arc<crate::budget::Budget>,
    /// `timeouts.peer_keepalive` / `peer_keepalive_timeout`.
    pub keep_alive: crate::peer::KeepAlive,
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

    /// The open connection of `slot`, or, when it is full, an overflow connection with room;
    /// `Err(true)` when every one is full (open an overflow one), `Err(false)` when the slot has
    /// no connection.
    fn cached(&self, peer: SocketAddr, sni: &str, slot: usize, max: usize) -> Result<(PeerConn, usize), bool> {
        let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        let conns = ready.get_mut(&peer).and_then(|m| m.get_mut(sni)).ok_or(false)?;
        let entry = conns.slots.get_mut(slot).ok_or(false)?;
        match entry {
            Some(s) if !s.is_closed() => {
                if s.open_streams() < max.min(s.peer_max_streams()) {
                    let conn = s.clone();
                    if !conns.overflow.is_empty() {
                        // The slot has room again: overflow connections go once they are idle.
                        conns.overflow.retain(|c| !c.is_closed() && c.open_streams() > 0);
                    }
                    return Ok((conn, slot));
                }
            }
            Some(_) => {
                *entry = None;
                return Err(false);
            }
            None => return Err(false),
        }
        conns.overflow.retain(|c| !c.is_closed());
        let room = |c: &&PeerConn| c.open_streams() < max.min(c.peer_max_streams());
        conns.overflow.iter().find(room).map(|c| (c.clone(), OVERFLOW)).ok_or(true)
    }

    /// Drops a connection that failed, so the next request on its slot opens a new one.
    pub fn evict(&self, ep: &Endpoint, sni: &str, slot: usize) {
        let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        let Some(conns) = ready.get_mut(&ep.proxy).and_then(|m| m.get_mut(sni)) else { return };
        if slot == OVERFLOW {
            conns.overflow.retain(|c| !c.is_closed());
        } else if let Some(entry) = conns.slots.get_mut(slot) {
            *entry = None;
        }
    }

    /// A sender for `ep`/`sni`, and the slot it came from (for [`Pool::evict`]).
    pub async fn get(&self, ep: &Endpoint, sni: &str, s: &Settings<'_>) -> Result<(PeerConn, usize), ProxyError> {
        let slot = self.slot();
        let max = s.budget.limits.max_concurrent_streams as usize;
        let full = match self.cached(ep.proxy, sni, slot, max) {
            Ok(found) => {
                s.metrics.peer_reuses.inc();
                return Ok(found);
            }
            Err(full) => full,
        };
        let key = (ep.proxy, sni.to_string(), if full { OVERFLOW } else { slot });
        let gate = self.connecting.lock().unwrap_or_else(|p| p.into_inner()).entry(key.clone()).or_default().clone();
        let _g = gate.lock().await;
        let full = match self.cached(ep.proxy, sni, slot, max) {
            Ok(found) => {
                s.metrics.peer_reuses.inc();
                return Ok(found);
            }
            Err(full) => full,
        };
        let slot = if full { OVERFLOW } else { slot };
        // Boxed: rare, and it would otherwise grow every request's future.
        let result = Box::pin(self.connect(ep, sni, slot, s)).await;
        // The gate has done its job; drop it so the map does not grow with every peer ever seen.
        self.connecting.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
        result.map(|sender| (sender, slot))
    }

    async fn connect(&self, ep: &Endpoint, sni: &str, slot: usize, s: &Settings<'_>) -> Result<PeerConn, ProxyError> {
        let tls = connect_peer(s.tls, ep, sni, Alpn::H2, s.mark, s.connect_timeout).await?;
        let sender = PeerConn::handshake(crate::cork::Corked::new(tls), s.budget, s.keep_alive)
            .await
            .map_err(|e| ProxyError::Upstream(e.into()))?;
        s.metrics.peer_connects.inc();
        let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        let conns = ready
            .entry(ep.proxy)
            .or_default()
            .entry(sni.to_string())
            .or_insert_with(|| Conns { slots: vec![None; self.slots], overflow: Vec::new() });
        if slot == OVERFLOW {
            conns.overflow.push(sender.clone());
        } else if let Some(entry) = conns.slots.get_mut(slot) {
            *entry = Some(sender.clone());
        }
        Ok(sender)
    }
}
