//! East-west gateway: routes mTLS connections by SNI to a local endpoint *without terminating TLS*.
//! The gateway never holds a session key, so the caller's identity reaches the destination
//! sidecar intact and the gateway cannot read the traffic.
//!
//! ```text
//! accept ─► read ClientHello ─► SNI <port>.<svc>.<ns>.<cluster>.weft ─► endpoint of svc.ns ─► replay bytes, splice
//!                              └► SNI control.weft-system.<cluster>.weft ─► own control plane's gRPC listener
//! ```
//! The reserved SNI `control.weft-system.<cluster>.weft` ([`weft_api::link::control_sni`]) is how
//! a linked cluster's control plane reaches this cluster's control plane (the link stream) when
//! only the gateway faces other networks: forwarded, still encrypted, to `gateway.control_plane`
//! (default: `control.address`), which the operator configured, so it may be on this host. Any
//! other name in the `weft-system` namespace is refused (`reserved-sni`).
//! Forwarded only when the SNI names this gateway's cluster, a service it knows and one of that
//! service's ports, and the endpoint picked is in this cluster and not on this host (loopback),
//! unless the gateway itself listens on loopback, and never to the gateway itself. Each refusal is counted under its own reason
//! and logged with the SNI, at most once per reason and caller per 10 s (see [`crate::loglimit`]).

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
    crate::accept_loop(&ctx, listener, crate::Side::Peer, handle).await;
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

/// Counts a refusal under `reason` and logs it, naming the caller and the SNI it sent, at most
/// once per reason and caller per [`crate::loglimit::EVERY`] (the next line, or the proxy's
/// periodic flush, says how many were held back).
fn refuse(ctx: &Ctx, reason: &'static str, remote: SocketAddr, sni: &str, why: std::fmt::Arguments<'_>) {
    ctx.metrics.protocol_error(Direction::gateway, reason);
    let kind = crate::loglimit::Kind::GatewayRefusal(reason);
    let Some(suppressed) = ctx.logs.check(kind, remote.ip(), std::time::Instant::now()) else { return };
    if reason == "endpoint-not-allowed" {
        tracing::warn!(%remote, sni, reason, suppressed, "gateway refused a connection: {why}");
    } else {
        tracing::info!(%remote, sni, reason, suppressed, "gateway refused a connection: {why}");
    }
}

async fn handle(ctx: Arc<Ctx>, mut stream: TcpStream, remote: SocketAddr) {
    let mut buf = Vec::with_capacity(1024);
    let sni = match tokio::time::timeout(ctx.cfg.timeouts.detect.into(), read_sni(&mut stream, &mut buf)).await {
        Ok(Ok(Some(sni))) => sni,
        Ok(Ok(None)) => {
            let why = format_args!("the TLS ClientHello has no SNI; a gateway routes by SNI only");
            return refuse(&ctx, "no-sni", remote, "-", why);
        }
        // A probe that connects and closes: counted, not logged.
        Ok(Err("eof")) => return ctx.metrics.protocol_error(Direction::gateway, "eof"),
        Ok(Err(reason)) => {
            let why = format_args!("not a TLS ClientHello the gateway can read ({reason})");
            return refuse(&ctx, reason, remote, "-", why);
        }
        Err(_) => return ctx.metrics.protocol_error(Direction::gateway, "timeout"),
    };
    match weft_api::link::reserved_sni(&sni) {
        weft_api::link::Reserved::No => {}
        weft_api::link::Reserved::ControlPlane(cluster) => {
            return to_control_plane(&ctx, stream, buf, remote, &sni, cluster).await
        }
        weft_api::link::Reserved::Other => {
            let why = format_args!(
                "the namespace {} is reserved: the only name routed there is {} (this cluster's control plane)",
                weft_api::link::RESERVED_NAMESPACE,
                weft_api::link::control_sni(&ctx.cfg.cluster)
            );
            return refuse(&ctx, "reserved-sni", remote, &sni, why);
        }
    }
    let Some(target) = SniTarget::parse(&sni) else {
        let why = format_args!("the SNI is not a mesh name <port>.<service>.<namespace>.<cluster>.weft");
        return refuse(&ctx, "unknown-sni", remote, &sni, why);
    };
    // Only this cluster's services are routed here (a later issue forwards to other gateways).
    if target.cluster != ctx.cfg.cluster {
        let why = format_args!(
            "the SNI names cluster {:?}; this gateway routes only its own cluster {:?}",
            target.cluster, ctx.cfg.cluster
        );
        return refuse(&ctx, "wrong-cluster", remote, &sni, why);
    }
    let routes = ctx.routes.load();
    let Some(service) = routes.service(&target.service, &target.namespace) else {
        let why = format_args!(
            "no service {}.{} in this gateway's services; add it (with its endpoints) to the gateway's `services`",
            target.service, target.namespace
        );
        return refuse(&ctx, "unknown-service", remote, &sni, why);
    };
    if service.endpoints.is_empty() {
        let why = format_args!("service {} has no endpoint", service.key());
        return refuse(&ctx, "no-endpoint", remote, &sni, why);
    }
    // A port the service does not serve is refused here, not at the destination sidecar.
    let mut ports: Vec<u16> =
        service.endpoints.iter().map(|e| e.address.port()).chain(service.protocols.keys().copied()).collect();
    ports.sort_unstable();
    ports.dedup();
    if !ports.contains(&target.port) {
        let why = format_args!("service {} has no port {} (its ports: {ports:?})", service.key(), target.port);
        return refuse(&ctx, "unknown-port", remote, &sni, why);
    }
    // The SNI is the caller's word: the endpoint picked must itself be one the gateway may reach.
    let loopback_ok = ctx.cfg.gateway.as_ref().is_some_and(|g| g.listen.ip().to_canonical().is_loopback());
    // An endpoint whose `proxy` is this very gateway would be forwarded back to it, and again, one
    // new connection per hop: a remote cluster's gateway placed in the primary (its token made
    // without `--cluster`) gets its own cluster's endpoints pointed at itself.
    let this_gateway = stream.local_addr().ok();
    let is_self = |ep: &Endpoint| Some(ep.proxy) == this_gateway;
    let allowed =
        |ep: &Endpoint| ep.cluster == ctx.cfg.cluster && (loopback_ok || !is_local_host(ep.proxy.ip())) && !is_self(ep);
    let ep = (0..service.endpoints.len()).filter_map(|_| service.pick()).find(|ep| allowed(ep)).cloned();
    if ep.is_none() && service.endpoints.iter().any(|e| is_self(e)) {
        let why = format_args!(
            "the endpoints of {} are sent to this gateway itself ({}): its control plane placed it outside cluster {:?}; for the gateway of a remote cluster (primary-remote) make its token with `weft token create --cluster {}`",
            service.key(),
            this_gateway.map(|a| a.to_string()).unwrap_or_default(),
            ctx.cfg.cluster,
            ctx.cfg.cluster
        );
        return refuse(&ctx, "endpoint-is-this-gateway", remote, &sni, why);
    }
    let Some(ep) = ep else {
        let why = format_args!(
            "every endpoint of {} is in another cluster than {:?} or on this host (loopback); not forwarded",
            service.key(),
            ctx.cfg.cluster
        );
        return refuse(&ctx, "endpoint-not-allowed", remote, &sni, why);
    };
    drop(routes);
    let dst = Name::new(format!("{}.{}", target.service, target.namespace));
    let mut guard =
        ctx.metrics.tcp_conn(Peer { direction: Direction::gateway, src: Name::new("unknown"), dst: dst.clone() });
    let mut log = splice_log(ctx.as_ref(), remote, &sni, &dst, ep.proxy);
    match net::tcp_connect(ep.proxy, ctx.mark(), ctx.cfg.timeouts.connect.into()).await {
        Ok(mut up) => {
            let mut down = Prefixed::new(buf, stream);
            if let Ok((rx, tx)) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
                (guard.rx, guard.tx) = (rx, tx);
                if let Some(log) = &mut log {
                    log.bytes(rx, tx);
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, %sni, "gateway: endpoint unreachable");
            if let Some(log) = &mut log {
                log.failed("UF", "connect");
            }
        }
    }
}

/// The access log line of one spliced connection (access log on), written when it ends: the
/// caller's address as `src` (the gateway passes TLS through and sees no identity), the SNI as
/// `authority`, the service as `dst` and `service`, the endpoint's proxy as `upstream`, bytes each
/// way and duration.
fn splice_log(
    ctx: &Ctx,
    remote: SocketAddr,
    sni: &str,
    dst: &Name,
    upstream: SocketAddr,
) -> Option<crate::accesslog::TcpLog> {
    let mut log = ctx.access_log.tcp(Direction::gateway, &Name::new(remote.to_string()), dst, Some(upstream))?;
    log.set_service(dst);
    log.set_authority(sni);
    Some(log)
}

/// The reserved SNI of a control plane: forwarded to this cluster's own control plane only. The
/// TLS session is between the linked control planes (the caller verifies this cluster's control
/// identity against the root in its link credential); the gateway only splices.
async fn to_control_plane(ctx: &Ctx, stream: TcpStream, hello: Vec<u8>, remote: SocketAddr, sni: &str, cluster: &str) {
    if cluster != ctx.cfg.cluster {
        let why = format_args!(
            "the SNI asks for the control plane of cluster {cluster:?}; this gateway is cluster {:?}'s and routes only to its own control plane",
            ctx.cfg.cluster
        );
        return refuse(ctx, "wrong-cluster", remote, sni, why);
    }
    let target = ctx.cfg.gateway.as_ref().and_then(|g| g.control_plane_addr(ctx.cfg.control.as_ref()));
    let Some(target) = target else {
        let why = format_args!(
            "this gateway knows no control plane to route the control-plane SNI to; set `gateway.control_plane` (or run it with `control`)"
        );
        return refuse(ctx, "no-control-plane", remote, sni, why);
    };
    let dst = Name::new(format!("control.{}", weft_api::link::RESERVED_NAMESPACE));
    let mut guard =
        ctx.metrics.tcp_conn(Peer { direction: Direction::gateway, src: Name::new("unknown"), dst: dst.clone() });
    let mut log = splice_log(ctx, remote, sni, &dst, target);
    match net::tcp_connect(target, ctx.mark(), ctx.cfg.timeouts.connect.into()).await {
        Ok(mut up) => {
            let mut down = Prefixed::new(hello, stream);
            if let Ok((rx, tx)) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
                (guard.rx, guard.tx) = (rx, tx);
                if let Some(log) = &mut log {
                    log.bytes(rx, tx);
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, %sni, control_plane = %target, "gateway: the control plane is unreachable");
            if let Some(log) = &mut log {
                log.failed("UF", "connect");
            }
        }
    }
}
