//! TLS on the control plane's gRPC listener (certificates and discovery for proxies).
//!
//! ```text
//!  TcpListener ─► accept ─► (own task, ≤ 10 s) TLS 1.3 handshake ─► channel ─► tonic serve_with_incoming
//! ```
//! The control plane serves as `spiffe://<td>/ns/weft-system/sa/control`, issued by its own
//! intermediate from a key made in this process, with the root in the chain (so that a token's
//! pin can be checked against it; see `weft_identity::control`). The certificate lasts 24 h and is
//! renewed at half-life in place; open streams keep their connection. Callers are authenticated by
//! their tokens, not by client certificates.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use weft_identity::{Authority, CertStore};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const SERVING_LIFETIME: Duration = weft_identity::DEFAULT_LEAF_LIFETIME;

/// The control plane's serving certificate (with the marker only it carries), kept fresh by
/// [`renew`].
pub fn serving_identity(ca: &Authority) -> Result<CertStore, weft_identity::Error> {
    CertStore::new(ca.issue_control_plane(SERVING_LIFETIME)?, ca.bundle())
}

/// Renews the serving certificate at half its remaining life until `stop`.
pub async fn renew(ca: Arc<Authority>, store: CertStore, mut stop: watch::Receiver<bool>) {
    loop {
        let wait = (store.leaf().remaining() / 2).max(Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let next = ca.issue_control_plane(SERVING_LIFETIME).and_then(|leaf| store.replace(leaf, None));
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

/// One accepted, handshaken connection, as tonic takes it.
pub struct TlsConn(TlsStream<TcpStream>);

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = Option<SocketAddr>;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.get_ref().0.peer_addr().ok()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
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
) -> impl futures_util::Stream<Item = Result<TlsConn, std::io::Error>> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = mpsc::channel::<TlsConn>(64);
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
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(TlsConn(tls)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::info!(%peer, error = %e, "gRPC: TLS handshake failed (proxies connect with TLS)")
                    }
                    Err(_) => tracing::info!(%peer, "gRPC: TLS handshake timed out"),
                }
            });
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (Ok(c), rx)) })
}
