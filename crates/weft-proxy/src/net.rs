//! Opening connections: plain TCP (with the interception-bypass mark) and mTLS to peer proxies
//! with the expected identity checked before any byte of the request is sent.

use crate::error::ProxyError;
use crate::routes::Endpoint;
use rustls_pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use weft_identity::{tls, CertStore};

/// Between proxies: HTTP multiplexed over HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// Between proxies: one HTTP/1.1 connection, used for upgrades (WebSocket) and CONNECT.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";
/// Between proxies: an opaque TCP stream.
pub const ALPN_TCP: &[u8] = b"weft-tcp";

/// The TLS configs of one proxy, built once; they read the current certificate on each handshake.
#[derive(Clone)]
pub struct Tls {
    h2: TlsConnector,
    http1: TlsConnector,
    tcp: TlsConnector,
    pub acceptor: TlsAcceptor,
}

#[derive(Clone, Copy, Debug)]
pub enum Alpn {
    H2,
    Http1,
    Tcp,
}

impl Tls {
    pub fn new(store: &CertStore) -> Result<Self, weft_identity::Error> {
        let client = |alpn: &[u8]| -> Result<TlsConnector, weft_identity::Error> {
            Ok(TlsConnector::from(Arc::new(tls::client_config(store, &[alpn])?)))
        };
        let server = tls::server_config(store, &[ALPN_H2, ALPN_HTTP1, ALPN_TCP])?;
        Ok(Tls {
            h2: client(ALPN_H2)?,
            http1: client(ALPN_HTTP1)?,
            tcp: client(ALPN_TCP)?,
            acceptor: TlsAcceptor::from(Arc::new(server)),
        })
    }
}

/// Connects with `SO_MARK = mark` (when non-zero) so the proxy's own traffic skips interception.
pub async fn tcp_connect(addr: SocketAddr, mark: u32, timeout: Duration) -> Result<TcpStream, ProxyError> {
    let sock = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
        .map_err(|source| ProxyError::Connect { addr, source })?;
    if mark != 0 {
        socket2::SockRef::from(&sock).set_mark(mark).map_err(|e| ProxyError::Connect {
            addr,
            source: std::io::Error::new(
                e.kind(),
                format!("setting SO_MARK {mark} failed ({e}): it needs CAP_NET_ADMIN; run the proxy with it, or set `outbound.mark: 0` and exclude the proxy's user with `weft-proxy init --proxy-uid`"),
            ),
        })?;
    }
    let stream = tokio::time::timeout(timeout, sock.connect(addr))
        .await
        .map_err(|_| ProxyError::ConnectTimeout(addr))?
        .map_err(|source| ProxyError::Connect { addr, source })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Opens an mTLS connection to `ep`'s proxy, naming `sni`, and checks the peer is `ep.identity`.
pub async fn connect_peer(
    tls_cfg: &Tls,
    ep: &Endpoint,
    sni: &str,
    alpn: Alpn,
    mark: u32,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>, ProxyError> {
    let addr = ep.proxy;
    let tcp = tcp_connect(addr, mark, timeout).await?;
    let name = ServerName::try_from(sni.to_string())
        .map_err(|e| ProxyError::Tls { addr, source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e) })?;
    let connector = match alpn {
        Alpn::H2 => &tls_cfg.h2,
        Alpn::Http1 => &tls_cfg.http1,
        Alpn::Tcp => &tls_cfg.tcp,
    };
    let stream = tokio::time::timeout(timeout, connector.connect(name, tcp))
        .await
        .map_err(|_| ProxyError::ConnectTimeout(addr))?
        .map_err(|source| ProxyError::Tls { addr, source })?;
    let got = tls::peer_identity(stream.get_ref().1.peer_certificates());
    match got {
        Some(id) if id == ep.identity => Ok(stream),
        other => Err(ProxyError::WrongIdentity {
            addr,
            expected: ep.identity.to_string(),
            got: other.map(|i| i.to_string()).unwrap_or_else(|| "unknown".into()),
        }),
    }
}

/// The destination a redirected (iptables `REDIRECT`) connection was addressed to.
pub(crate) fn original_dst(stream: &TcpStream) -> std::io::Result<SocketAddr> {
    let sock = socket2::SockRef::from(stream);
    let addr = if stream.local_addr()?.is_ipv4() { sock.original_dst_v4()? } else { sock.original_dst_v6()? };
    addr.as_socket().ok_or_else(|| std::io::Error::other("original destination is not an IP address"))
}
