//! One multiplexed mTLS HTTP/2 connection per (peer proxy, SNI), shared by every request to it.
//!
//! Fast path: one short std mutex lock, two map lookups by reference (no allocation) and a clone
//! of the sender. A miss takes a per-key async lock so that a burst of first requests opens one
//! connection, not one each.

use crate::error::ProxyError;
use crate::httputil::Body;
use crate::net::{connect_peer, Alpn, Tls};
use crate::routes::Endpoint;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Peer proxy address → SNI → connection.
type Map<T> = HashMap<SocketAddr, HashMap<String, T>>;

#[derive(Default)]
pub struct Pool {
    ready: Mutex<Map<SendRequest<Body>>>,
    connecting: Mutex<Map<Arc<tokio::sync::Mutex<()>>>>,
}

pub struct Settings<'a> {
    pub tls: &'a Tls,
    pub mark: u32,
    pub connect_timeout: Duration,
    pub metrics: &'a crate::metrics::Metrics,
}

impl Pool {
    fn cached(&self, peer: SocketAddr, sni: &str) -> Option<SendRequest<Body>> {
        let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        let by_sni = ready.get_mut(&peer)?;
        match by_sni.get(sni) {
            Some(s) if !s.is_closed() => Some(s.clone()),
            Some(_) => {
                by_sni.remove(sni);
                None
            }
            None => None,
        }
    }

    /// Drops a connection that failed, so the next request opens a new one.
    pub fn evict(&self, ep: &Endpoint, sni: &str) {
        let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(by_sni) = ready.get_mut(&ep.proxy) {
            by_sni.remove(sni);
        }
    }

    pub async fn get(&self, ep: &Endpoint, sni: &str, s: &Settings<'_>) -> Result<SendRequest<Body>, ProxyError> {
        if let Some(sender) = self.cached(ep.proxy, sni) {
            s.metrics.peer_reuses.inc();
            return Ok(sender);
        }
        let gate = {
            let mut c = self.connecting.lock().unwrap_or_else(|p| p.into_inner());
            c.entry(ep.proxy).or_default().entry(sni.to_string()).or_default().clone()
        };
        let _g = gate.lock().await;
        if let Some(sender) = self.cached(ep.proxy, sni) {
            s.metrics.peer_reuses.inc();
            return Ok(sender);
        }
        let result = self.connect(ep, sni, s).await;
        // The gate has done its job; drop it so the map does not grow with every peer ever seen.
        let mut c = self.connecting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(by_sni) = c.get_mut(&ep.proxy) {
            by_sni.remove(sni);
            if by_sni.is_empty() {
                c.remove(&ep.proxy);
            }
        }
        result
    }

    async fn connect(&self, ep: &Endpoint, sni: &str, s: &Settings<'_>) -> Result<SendRequest<Body>, ProxyError> {
        let tls = connect_peer(s.tls, ep, sni, Alpn::H2, s.mark, s.connect_timeout).await?;
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .adaptive_window(true)
            .handshake::<_, Body>(TokioIo::new(tls))
            .await
            .map_err(ProxyError::Upstream)?;
        let peer = ep.proxy;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "peer connection closed");
            }
        });
        s.metrics.peer_connects.inc();
        let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        ready.entry(ep.proxy).or_default().insert(sni.to_string(), sender.clone());
        Ok(sender)
    }
}
