//! Peer authentication on the inbound listener: what happens to a connection that does not open
//! with a TLS ClientHello (plaintext), by the mTLS mode of the app port it is for (MeshConfig
//! `mtls`, PeerAuthentication, or the config file's `inbound.mtls` / `ports[].mtls`).
//!
//! ```text
//! first bytes not TLS ─► app port? (original destination, else the only app port)
//!     ├─ STRICT (or no port) ─► refused: weft_protocol_errors_total{reason="plaintext"} + a
//!     │                         rate-limited warning naming the source address
//!     └─ PERMISSIVE, DISABLE ─► served as HTTP/1, HTTP/2 or opaque TCP, without an identity
//!                               (x-weft-peer-identity removed, never set)
//! ```
//! Plaintext carries no identity, so the peer label of its metrics is [`UNAUTHENTICATED`].
//! A DISABLE port still accepts mTLS from mesh proxies: callers send it plaintext (see
//! `plainout`) except for upgrades (WebSocket, CONNECT), which still go over mTLS.

use crate::detect::{Detected, Prefixed};
use crate::loglimit::{warn_limited, Kind};
use crate::metrics::{Direction, Name, Peer};
use crate::{net, Ctx};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use weft_api::peer_authentication::MtlsMode;

/// The `src` label of connections admitted without mTLS.
pub const UNAUTHENTICATED: &str = "unauthenticated";

/// The app port a connection without SNI is for: its original destination when interception
/// redirected it here, else the sidecar's only app port. `None`: it cannot be told.
fn plaintext_port(ctx: &Ctx, stream: &TcpStream) -> Option<u16> {
    let local = stream.local_addr().ok()?;
    if let Ok(dst) = net::original_dst(stream) {
        if dst != local {
            return Some(dst.port());
        }
    }
    let mut ports: Vec<u16> = ctx.cfg.inbound.iter().flat_map(|i| i.ports.iter().map(|p| p.port)).collect();
    ports.extend(ctx.routes.load().inbound_ports().into_iter().map(|(p, _)| p));
    ports.sort_unstable();
    ports.dedup();
    match ports.as_slice() {
        [only] => Some(*only),
        _ => None,
    }
}

/// Serves or refuses a connection whose first bytes (`prefix`, classified `proto`) are not mTLS.
pub(crate) async fn plaintext(ctx: Arc<Ctx>, stream: TcpStream, prefix: Vec<u8>, proto: Detected, remote: SocketAddr) {
    let port = plaintext_port(&ctx, &stream);
    let target = port.and_then(|p| Some((p, ctx.app_port(p)?)));
    let mode = target.map(|(p, _)| ctx.mtls_mode(p)).unwrap_or(MtlsMode::Strict);
    let Some((port, protocol)) = target.filter(|_| mode != MtlsMode::Strict) else {
        ctx.metrics.protocol_error(Direction::inbound, "plaintext");
        warn_limited!(ctx.logs, Kind::Plaintext, remote.ip(), %remote, port = ?port, detected = proto.as_str(),
            "inbound: plaintext refused (mTLS is STRICT for this port; the caller must use mTLS, or set the port PERMISSIVE with a PeerAuthentication)");
        return;
    };
    tracing::debug!(%remote, port, mode = mode.as_str(), detected = proto.as_str(), "inbound: plaintext admitted");
    let app = SocketAddr::new(ctx.app_host(), port);
    let label = Peer { direction: Direction::inbound, src: Name::new(UNAUTHENTICATED), dst: ctx.id_label.clone() };
    // What the plaintext speaks, in the terms of the mTLS path's ALPN.
    let alpn = match proto {
        Detected::Http2 => Some(net::ALPN_H2.to_vec()),
        Detected::Http1 => None,
        Detected::Tcp | Detected::Tls => Some(net::ALPN_TCP.to_vec()),
    };
    let source = crate::authz::compile::Source::plaintext(remote.ip());
    // Authorization of an opaque connection: what L4 knows, once; denied is a reset.
    if alpn.as_deref() == Some(net::ALPN_TCP) && crate::authz::check_tcp(&ctx, &source, port).is_err() {
        let _ = socket2::SockRef::from(&stream).set_linger(Some(std::time::Duration::ZERO));
        return;
    }
    // Held until flush like the mTLS path's writes (see `cork`).
    let io = crate::cork::Buffered::new(Prefixed::new(prefix, stream));
    crate::inbound::serve_app(ctx, io, remote, app, (port, protocol), label, alpn, None, source).await;
}
