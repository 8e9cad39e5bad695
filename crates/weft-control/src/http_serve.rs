//! Serves the HTTP API (HTTP/1.1) with limits a slow or hostile client cannot get around:
//!
//! ```text
//!  accept ─► (≤ max_connections open; more wait in the listen backlog)
//!         ─► request head within header_read ─► handler within request ─► response
//! ```
//!
//! - **`header_read`** (10 s): a request head (the first one, and each one after on a kept-alive
//!   connection) must arrive whole in time, or the connection is closed (a slowloris holds
//!   nothing).
//! - **`request`** (30 s): a handler that takes longer is answered `503` with a JSON error. A
//!   Consul blocking query (`?index=`) gets its `?wait` (at most 10 min) on top.
//! - **`max_connections`** (1,024): connections beyond it are not accepted until one closes.
//! - **TLS** (the default, [`crate::api_tls`]): the handshake counts against `header_read`; a
//!   client that speaks plaintext HTTP to the TLS listener gets a 400 saying so, no API answer.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// The limits of the HTTP API's server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_read: Duration,
    pub request: Duration,
    pub max_connections: usize,
}

pub const DEFAULT_LIMITS: Limits =
    Limits { header_read: Duration::from_secs(10), request: Duration::from_secs(30), max_connections: 1024 };

impl Default for Limits {
    fn default() -> Self {
        DEFAULT_LIMITS
    }
}

/// `router` with every request bounded by `limit`.
pub fn with_request_timeout(router: Router, limit: Duration) -> Router {
    router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| async move {
            use axum::response::IntoResponse;
            // A Consul blocking query may wait its `?wait` on top.
            let limit = limit + crate::consul::extra_time(req.uri());
            match tokio::time::timeout(limit, next.run(req)).await {
                Ok(resp) => resp,
                Err(_) => crate::api::ApiError(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    format!("the request took longer than {} s; try again", limit.as_secs()),
                )
                .into_response(),
            }
        },
    ))
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serves `router` on `listener` until `stop` turns true; open connections end with it. With
/// `tls`, every connection is TLS ([`crate::api_tls`]); without, plaintext HTTP.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut stop: watch::Receiver<bool>,
) {
    let router = with_request_timeout(router, limits.request);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stopped(&mut stop) => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped(&mut stop) => return,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP API accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(router.clone());
        let acceptor = acceptor.clone();
        conns.spawn(async move {
            let _permit = permit;
            let Some(acceptor) = acceptor else {
                return serve_connection(tcp, service, limits, peer).await;
            };
            match tokio::time::timeout(limits.header_read, handshake(&acceptor, tcp)).await {
                Ok(Ok(Some(tls))) => serve_connection(tls, service, limits, peer).await,
                Ok(Ok(None)) => tracing::debug!(%peer, "HTTP API: plaintext HTTP on the TLS listener; answered 400"),
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "HTTP API: TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "HTTP API: TLS handshake not done in time; closed"),
            }
        });
    }
}

type Service = TowerToHyperService<Router>;

async fn serve_connection<I>(io: I, service: Service, limits: Limits, peer: std::net::SocketAddr)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "HTTP API connection ended");
    }
}

/// The TLS handshake; `None` when the client spoke plaintext HTTP (it was answered 400).
async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
) -> std::io::Result<Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    if !crate::api_tls::is_tls_record(first[0]) {
        let mut tcp = tcp;
        if first[0].is_ascii_uppercase() {
            // Read the request head first: closing with it unread would reset the connection
            // before the client reads the answer.
            let mut head = Vec::with_capacity(1024);
            let mut buf = [0u8; 1024];
            while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match tcp.read(&mut buf).await? {
                    0 => break,
                    n => head.extend_from_slice(&buf[..n]),
                }
            }
            tcp.write_all(&crate::api_tls::plaintext_refusal()).await?;
        }
        let _ = tcp.shutdown().await;
        return Ok(None);
    }
    acceptor.accept(tcp).await.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_past_its_limit_is_answered_503() {
        let router = Router::new()
            .route("/slow", axum::routing::get(std::future::pending::<&'static str>))
            .route("/fast", axum::routing::get(|| async { "ok" }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits { request: Duration::from_millis(100), ..DEFAULT_LIMITS };
        let (stop, rx) = watch::channel(false);
        tokio::spawn(serve(listener, router, limits, None, rx));
        let slow = weft_testkit::http1_get(addr, "/slow").await.unwrap();
        assert_eq!(slow.status(), 503);
        let body = String::from_utf8_lossy(slow.body()).to_string();
        assert!(body.contains("took longer than"), "{body}");
        assert_eq!(weft_testkit::http1_get(addr, "/fast").await.unwrap().status(), 200);
        stop.send_replace(true);
    }
}
