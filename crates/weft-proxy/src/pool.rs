//! One multiplexed mTLS HTTP/2 connection per (peer proxy, SNI), shared by every request to it.
//!
//! Fast path: one short std mutex lock and a clone of the sender. A miss takes a per-key async
//! lock so that a burst of first requests opens one connection, not one each.

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

type Key = (SocketAddr, String);

#[derive(Default)]
pub struct Pool {
    ready: Mutex<HashMap<Key, SendRequest<Body>>>,
    connecting: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

pub struct Settings<'a> {
    pub tls: &'a Tls,
    pub mark: u32,
    pub connect_timeout: Duration,
    pub metrics: &'a crate::metrics::Metrics,
}

impl Pool {
    fn cached(&self, key: &Key) -> Option<SendRequest<Body>> {
        let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        match ready.get(key) {
            Some(s) if !s.is_closed() => Some(s.clone()),
            Some(_) => {
                ready.remove(key);
                None
            }
            None => None,
        }
    }

    /// Drops a connection that failed, so the next request opens a new one.
    pub fn evict(&self, ep: &Endpoint, sni: &str) {
        self.ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(ep.proxy, sni.to_string()));
    }

    pub async fn get(
        &self,
        ep: &Endpoint,
        sni: &str,
        s: &Settings<'_>,
    ) -> Result<SendRequest<Body>, ProxyError> {
        let key = (ep.proxy, sni.to_string());
        if let Some(sender) = self.cached(&key) {
            s.metrics.peer_reuses.inc();
            return Ok(sender);
        }
        let gate = {
            let mut c = self.connecting.lock().unwrap_or_else(|p| p.into_inner());
            c.entry(key.clone()).or_default().clone()
        };
        let _g = gate.lock().await;
        if let Some(sender) = self.cached(&key) {
            s.metrics.peer_reuses.inc();
            return Ok(sender);
        }
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
        self.ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, sender.clone());
        Ok(sender)
    }
}
