//! Connections from the inbound side to the local app: one pooled HTTP/1.1 and one HTTP/2 client
//! per app port. The connector ignores the request's authority and always dials the app's port
//! (with the bypass mark), so the request keeps the `Host`/`:authority` its caller sent.

use crate::error::ProxyError;
use crate::httputil::Body;
use crate::net;
use arc_swap::ArcSwap;
use http::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;

/// Dials one fixed address, whatever the URI says.
#[derive(Clone)]
pub struct AppConnector {
    addr: SocketAddr,
    mark: u32,
    timeout: Duration,
}

impl tower_service::Service<Uri> for AppConnector {
    type Response = TokioIo<TcpStream>;
    type Error = ProxyError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ProxyError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let (addr, mark, timeout) = (self.addr, self.mark, self.timeout);
        Box::pin(async move { net::tcp_connect(addr, mark, timeout).await.map(TokioIo::new) })
    }
}

pub type AppClient = Client<AppConnector, Body>;

type ByPort = HashMap<u16, (AppClient, AppClient)>;

/// Clients for every app port: (HTTP/1.1, HTTP/2). Ports the control plane sends later are added
/// with [`AppClients::add_ports`]; readers never lock.
pub struct AppClients {
    host: IpAddr,
    mark: u32,
    timeout: Duration,
    by_port: ArcSwap<ByPort>,
}

impl Default for AppClients {
    fn default() -> Self {
        AppClients::new(std::net::Ipv4Addr::LOCALHOST.into(), [], 0, Duration::from_secs(1))
    }
}

impl AppClients {
    pub fn new(host: IpAddr, ports: impl IntoIterator<Item = u16>, mark: u32, timeout: Duration) -> Self {
        let clients = AppClients { host, mark, timeout, by_port: ArcSwap::from_pointee(HashMap::new()) };
        clients.add_ports(ports);
        clients
    }

    fn client(&self, port: u16, h2: bool) -> AppClient {
        let connector = AppConnector { addr: SocketAddr::new(self.host, port), mark: self.mark, timeout: self.timeout };
        let mut b = Client::builder(TokioExecutor::new());
        b.timer(TokioTimer::new()).pool_timer(TokioTimer::new()).pool_idle_timeout(Duration::from_secs(90));
        if h2 {
            b.http2_only(true);
        }
        b.build(connector)
    }

    /// Makes clients for the ports that have none yet (existing ones keep their pools).
    pub fn add_ports(&self, ports: impl IntoIterator<Item = u16>) {
        let missing: Vec<u16> = ports.into_iter().filter(|p| !self.by_port.load().contains_key(p)).collect();
        if missing.is_empty() {
            return;
        }
        let mut next: ByPort = (**self.by_port.load()).clone();
        for p in missing {
            next.entry(p).or_insert_with(|| (self.client(p, false), self.client(p, true)));
        }
        self.by_port.store(std::sync::Arc::new(next));
    }

    pub fn get(&self, port: u16, h2: bool) -> Option<AppClient> {
        self.by_port.load().get(&port).map(|(h1, h2c)| if h2 { h2c.clone() } else { h1.clone() })
    }
}
