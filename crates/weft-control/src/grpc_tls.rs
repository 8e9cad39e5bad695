//! TLS on the control plane's gRPC listener (certificates and discovery for proxies).
//!
//! ```text
//!  TcpListener ─► accept ─► (own task, ≤ 10 s) TLS 1.3 handshake ─► channel ─► tonic serve_with_incoming
//! ```
//! The control plane serves as `spiffe://<td>/ns/weft-system/sa/control`, issued by its own
//! intermediate from a key made in this process, with the root in the chain (so that a token's
//! pin can be checked against it; see `weft_identity::control`). The certificate lasts 24 h and is
//! renewed at half-life in place; open streams keep their connection. Callers are authenticated by
//! their tokens; a proxy that already has its certificate also presents it, and the verified
//! identity travels with each request ([`ConnInfo`]).
//!
//! Each connection must complete its TLS handshake and then send the HTTP/2 connection preface
//! within [`HANDSHAKE_TIMEOUT`], or it is closed before tonic sees it. Refused and timed-out
//! connections are logged at info, at most one line of each kind and source IP per
//! [`crate::loglimit::DEFAULT_EVERY`], with the count of those left out.

use crate::loglimit::{Kind, LogLimits};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use weft_identity::{Authority, CertStore};

/// The TLS handshake plus the HTTP/2 preface must arrive within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SERVING_LIFETIME: Duration = weft_identity::DEFAULT_LEAF_LIFETIME;

/// The control plane's serving certificate (with the marker only it carries, and `names`: the
/// HTTP API's names, see [`crate::api_tls`]), kept fresh by [`renew`]. The gRPC listener and the
/// HTTP API present the same certificate.
pub fn serving_identity(ca: &Authority, names: &[String]) -> Result<CertStore, weft_identity::Error> {
    CertStore::new(issue(ca, names)?, ca.bundle())
}

/// A new serving certificate from `ca` naming `names` (at start, at half-life, after a rotation).
pub fn issue(ca: &Authority, names: &[String]) -> Result<weft_identity::Leaf, weft_identity::Error> {
    ca.issue_control_plane_named(SERVING_LIFETIME, names)
}

/// Renews the serving certificate at half its remaining life until `stop`.
pub async fn renew(ca: Arc<crate::rotation::CaState>, store: CertStore, mut stop: watch::Receiver<bool>) {
    loop {
        let wait = (store.leaf().remaining() / 2).max(Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let next = issue(&ca.serving_ca(), &ca.serving_names()).and_then(|leaf| store.replace(leaf, None));
        match next {
            Ok(()) => tracing::info!("renewed the control plane's serving certificate"),
            Err(e) => {
                tracing::error!(error = %e, "cannot renew the control plane's serving certificate; retrying in 60s")
            }
        }
        if tokio::time::timeout(Duration::from_secs(60), stop.wait_for(|s| *s)).await.is_ok() {
            return;
        }
    }
}

/// One accepted, handshaken connection, as tonic takes it; `preface` is replayed first.
pub struct TlsConn(TlsStream<TcpStream>, Option<&'static [u8]>);

/// What a request knows of its connection (in the request's extensions).
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub peer: Option<SocketAddr>,
    /// The SPIFFE ID of the client certificate the peer presented and the handshake verified
    /// (against this control plane's roots); `None` when it presented none.
    pub identity: Option<weft_identity::SpiffeId>,
}

/// The peer address of a gRPC request, for log lines: `ip:port`, or `unknown`.
pub fn peer_of<T>(req: &tonic::Request<T>) -> String {
    peer_addr(req).map_or_else(|| "unknown".to_string(), |p| p.to_string())
}

/// The caller's address, when known.
pub fn peer_addr<T>(req: &tonic::Request<T>) -> Option<SocketAddr> {
    req.extensions().get::<ConnInfo>().and_then(|c| c.peer).or_else(|| req.remote_addr())
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        let (tcp, tls) = self.0.get_ref();
        ConnInfo { peer: tcp.peer_addr().ok(), identity: weft_identity::tls::peer_identity(tls.peer_certificates()) }
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if let Some(rest) = self.1 {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            self.1 = (n < rest.len()).then_some(&rest[n..]);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

/// The handshake, then the HTTP/2 preface (read here and replayed to tonic).
async fn accept(acceptor: &tokio_rustls::TlsAcceptor, tcp: TcpStream) -> Result<TlsConn, String> {
    use tokio::io::AsyncReadExt;
    let mut tls =
        acceptor.accept(tcp).await.map_err(|e| format!("TLS handshake failed (proxies connect with TLS): {e}"))?;
    let mut preface = [0u8; 24];
    tls.read_exact(&mut preface).await.map_err(|e| format!("no HTTP/2 preface after the handshake: {e}"))?;
    if &preface != PREFACE {
        return Err("not HTTP/2 after the handshake (gRPC needs it)".into());
    }
    Ok(TlsConn(tls, Some(PREFACE)))
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// Accepts TCP on `listener` and hands tonic the connections whose TLS handshake succeeded. A
/// slow or failing handshake (plaintext, garbage, a scanner) costs its own task only.
pub fn incoming(
    listener: TcpListener,
    config: rustls::ServerConfig,
    limits: Arc<LogLimits>,
) -> impl futures_util::Stream<Item = Result<TlsConn, std::io::Error>> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = mpsc::channel::<TlsConn>(64);
    // Refusals are logged at most once per kind and source per interval: a scan must not flood
    // the log.
    tokio::spawn(async move {
        loop {
            // When tonic stops (the control plane shuts down), the receiver goes: close the
            // listener at once so the port can be bound again.
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "gRPC accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx, limits) = (acceptor.clone(), tx.clone(), limits.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept(&acceptor, tcp)).await {
                    Ok(Ok(conn)) => {
                        let _ = tx.send(conn).await;
                    }
                    Ok(Err(e)) => {
                        if let Some(suppressed) = limits.check(Kind::GrpcRefused, peer.ip(), Instant::now()) {
                            tracing::info!(%peer, error = %e, suppressed, "gRPC: connection refused");
                        }
                    }
                    Err(_) => {
                        if let Some(suppressed) = limits.check(Kind::GrpcSlow, peer.ip(), Instant::now()) {
                            tracing::info!(%peer, suppressed, "gRPC: TLS handshake and HTTP/2 preface not done in time; closed");
                        }
                    }
                }
            });
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (Ok(c), rx)) })
}
