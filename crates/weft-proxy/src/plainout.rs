//! Outbound to an endpoint whose workload has mTLS DISABLE (PeerAuthentication): the control
//! plane marks it `plaintext`, and the caller's proxy sends it what the app sent, in the clear,
//! to the workload's own address (`address`, at the port called), not over mTLS to its sidecar.
//!
//! ```text
//! app ─► outbound ─► endpoint.plaintext? ── no ─► mTLS to endpoint.proxy (the usual path)
//!                          │ yes
//!                          ▼
//!        HTTP: HTTP/1.1 (or HTTP/2 if the caller spoke it and the server does) to address:port
//!        TCP:  spliced to address:port
//! ```
//! With interception on the workload's side, its sidecar takes the connection as plaintext
//! (its DISABLE port admits it; see `peerauth`); without, it reaches the app. Upgrades
//! (WebSocket, CONNECT) still go over mTLS, which a DISABLE sidecar still accepts.

use crate::app::{AppClients, AppProto};
use crate::budget::Budget;
use crate::error::ProxyError;
use crate::httputil::{self as h, Body};
use http::{Request, Response};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The most plaintext destinations hosts kept at once; past it the table starts over (a mesh
/// has few DISABLE workloads; this only bounds a misconfiguration).
const MAX_HOSTS: usize = 1024;

/// HTTP clients for plaintext endpoints, one [`AppClients`] per host (its ports added as called).
pub struct PlainClients {
    hosts: Mutex<HashMap<IpAddr, Arc<AppClients>>>,
    mark: u32,
    timeout: Duration,
    workers: usize,
    budget: Arc<Budget>,
}

impl PlainClients {
    pub fn new(mark: u32, timeout: Duration, workers: usize, budget: Arc<Budget>) -> Self {
        PlainClients { hosts: Mutex::default(), mark, timeout, workers, budget }
    }

    fn clients(&self, addr: SocketAddr) -> Arc<AppClients> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        if hosts.len() >= MAX_HOSTS && !hosts.contains_key(&addr.ip()) {
            hosts.clear();
        }
        let c = hosts
            .entry(addr.ip())
            .or_insert_with(|| {
                Arc::new(AppClients::new(addr.ip(), [], self.mark, self.timeout, self.workers, self.budget.clone()))
            })
            .clone();
        c.add_ports([addr.port()]);
        c
    }

    /// Sends `req`, prepared for the HTTP/2 hop between proxies (absolute URI, HTTP/2, and
    /// `x-weft-orig-proto` for an HTTP/1 caller), to `addr` as the caller spoke it.
    pub async fn send(&self, addr: SocketAddr, mut req: Request<Body>) -> Result<Response<Body>, ProxyError> {
        let h1 = req.headers_mut().remove(h::ORIG_PROTO).is_some_and(|v| v == h::ORIG_PROTO_HTTP1);
        let proto = if h1 { AppProto::Http1 } else { AppProto::Learn };
        *req.version_mut() = if h1 { http::Version::HTTP_11 } else { http::Version::HTTP_2 };
        let mut resp = self.clients(addr).send(addr.port(), proto, req).await?;
        h::strip_hop_by_hop(resp.headers_mut());
        Ok(resp)
    }
}
