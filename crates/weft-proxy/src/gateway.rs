//! East-west gateway: routes mTLS connections by SNI to a local endpoint *without terminating TLS*.
//! The gateway never holds a session key, so the caller's identity reaches the destination
//! sidecar intact and the gateway cannot read the traffic.
//!
//! ```text
//! accept ─► read ClientHello ─► SNI <port>.<svc>.<ns>.<cluster>.weft ─► endpoint of svc.ns ─► replay bytes, splice
//! ```
//! Forwarded only when the SNI names this gateway's cluster and the endpoint picked is in this
//! cluster and not on this host (loopback), unless the gateway itself listens on loopback.

use crate::detect::Prefixed;
use crate::metrics::{Direction, Name, Peer};
use crate::net;
use crate::routes::Endpoint;
use crate::sni::{peek_sni, Peek, SniTarget};
use crate::Ctx;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// An address that reaches this host itself: loopback, or unspecified (`0.0.0.0` and `::`
/// connect to the local host). A gateway never forwards there, unless it listens on loopback
/// itself (a local mesh: everything is on 127.0.0.1), so a caller cannot use it to reach the
/// gateway host's own services.
fn is_local_host(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    ip.is_loopback() || ip.is_unspecified()
}

/// Largest ClientHello the gateway buffers.
const MAX_HELLO: usize = 16 * 1024 + 2048 + 5;

pub async fn serve(ctx: Arc<Ctx>, listener: TcpListener) {
    crate::accept_loop(&ctx, listener, handle).await;
}

async fn read_sni(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Option<String>, &'static str> {
    loop {
        match peek_sni(buf) {
            Peek::Sni(sni) => return Ok(sni),
            Peek::NotTls => return Err("not-tls"),
            Peek::NeedMore if buf.len() >= MAX_HELLO => return Err("hello-too-large"),
            Peek::NeedMore => {}
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err("eof"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn handle(ctx: Arc<Ctx>, mut stream: TcpStream, remote: SocketAddr) {
    let mut buf = Vec::with_capacity(1024);
    let sni = match tokio::time::timeout(ctx.cfg.timeouts.detect.into(), read_sni(&mut stream, &mut buf)).await {
        Ok(Ok(Some(sni))) => sni,
        Ok(Ok(None)) => {
            ctx.metrics.protocol_error(Direction::gateway, "no-sni");
            return;
        }
        Ok(Err(reason)) => {
            ctx.metrics.protocol_error(Direction::gateway, reason);
            return;
        }
        Err(_) => {
            ctx.metrics.protocol_error(Direction::gateway, "timeout");
            return;
        }
    };
    let Some(target) = SniTarget::parse(&sni) else {
        ctx.metrics.protocol_error(Direction::gateway, "unknown-sni");
        tracing::info!(%remote, %sni, "gateway: SNI is not a mesh name");
        return;
    };
    let routes = ctx.routes.load();
    // Only this cluster's services are routed here (a later issue forwards to other gateways).
    let local = target.cluster == ctx.cfg.cluster;
    let Some(service) = routes.service(&target.service, &target.namespace).filter(|s| local && !s.endpoints.is_empty())
    else {
        ctx.metrics.protocol_error(Direction::gateway, "no-route");
        tracing::info!(%remote, %sni, "gateway: no local endpoint for this SNI");
        return;
    };
    // The SNI is the caller's word: the endpoint picked must itself be one the gateway may reach.
    let loopback_ok = ctx.cfg.gateway.as_ref().is_some_and(|g| g.listen.ip().to_canonical().is_loopback());
    let allowed = |ep: &Endpoint| ep.cluster == ctx.cfg.cluster && (loopback_ok || !is_local_host(ep.proxy.ip()));
    let ep = (0..service.endpoints.len()).filter_map(|_| service.pick()).find(|ep| allowed(ep)).cloned();
    let Some(ep) = ep else {
        ctx.metrics.protocol_error(Direction::gateway, "endpoint-not-allowed");
        tracing::warn!(%remote, %sni, cluster = %ctx.cfg.cluster,
            "gateway: every endpoint of the service is in another cluster or on this host (loopback); not forwarded");
        return;
    };
    drop(routes);
    let mut guard = ctx.metrics.tcp_conn(Peer {
        direction: Direction::gateway,
        src: Name::new("unknown"),
        dst: Name::new(format!("{}.{}", target.service, target.namespace)),
    });
    match net::tcp_connect(ep.proxy, ctx.mark(), ctx.cfg.timeouts.connect.into()).await {
        Ok(mut up) => {
            let mut down = Prefixed::new(buf, stream);
            if let Ok((rx, tx)) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
                (guard.rx, guard.tx) = (rx, tx);
            }
        }
        Err(e) => tracing::warn!(error = %e, %sni, "gateway: endpoint unreachable"),
    }
}
