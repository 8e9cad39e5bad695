//! Dials an authorizer: `host:port` resolved at each connect (a DNS name may move), each address
//! tried in turn, with the proxy's SO_MARK, in plaintext. Shared by the HTTP and gRPC clients,
//! which pool the connections it makes.

use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;

#[derive(Clone)]
pub struct Connector {
    address: String,
    mark: u32,
    timeout: Duration,
}

impl Connector {
    pub fn new(address: &str, mark: u32, timeout: Duration) -> Self {
        Connector { address: address.to_string(), mark, timeout }
    }

    pub async fn connect(&self) -> Result<TcpStream, String> {
        let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host(&self.address)
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", self.address))?
            .collect();
        let mut last = format!("{} resolves to no address", self.address);
        for a in addrs {
            match crate::net::tcp_connect(a, self.mark, self.timeout).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(TokioIo::new(this.connect().await?)) })
    }
}
