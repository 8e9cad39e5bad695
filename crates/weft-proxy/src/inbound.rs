//! Inbound: mTLS from peer proxies (and, in transparent mode, everything redirected to this port)
//! is terminated here and delivered to the local app.
//!
//! ```text
//! accept ─► TLS? ─ no ─► plaintext: the port's mTLS mode decides (see `peerauth`)
//!             │ yes
//!             ▼
//!   mTLS handshake (peer SPIFFE ID) ─► SNI names the app port ─┬─ ALPN h2/http1 ─► HTTP to app
//!                                                               └─ ALPN weft-tcp ─► TCP to app
//! ```
//! (opaque TCP never carries HTTP: see [`crate::opaque`])
//! Plaintext on a STRICT port, an untrusted, expired or not yet valid peer certificate, or an
//! unknown port: refused, counted.

use crate::app::AppProto;
use crate::detect::{detect, Detected, Prefixed};
use crate::error::ProxyError;
use crate::httputil::{self as h, Body};
use crate::loglimit::{warn_limited, Kind};
use crate::metrics::{Direction, HttpSeries, Name, Peer, Proto};
use crate::net;
use crate::sni::SniTarget;
use crate::{Ctx, Handler};
use http::{HeaderValue, Request, Response, Uri};
use http_body::Body as _;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tokio::net::{TcpListener, TcpStream};
use weft_api::proxy::Protocol;
use weft_identity::tls;

pub async fn serve(ctx: Arc<Ctx>, listener: TcpListener) {
    crate::accept_loop(&ctx, listener, crate::Side::Peer, handle).await;
}

/// Why a handshake failed, as a metric label.
fn tls_reason(e: &std::io::Error) -> &'static str {
    let s = e.to_string();
    if s.contains("Expired") || s.contains("expired") {
        "expired-cert"
    } else if s.contains("NotValidYet") || s.contains("not valid yet") {
        "not-yet-valid-cert"
    } else if s.contains("UnknownIssuer") || s.contains("unknown issuer") || s.contains("BadSignature") {
        "untrusted-cert"
    } else if s.contains("peer sent no certificates") || s.contains("NoCertificatesPresented") {
        "no-client-cert"
    } else if s.contains("outside trust domain") {
        "foreign-trust-domain"
    } else if s.contains("spiffe") {
        "no-spiffe-id"
    } else {
        "handshake"
    }
}

async fn handle(ctx: Arc<Ctx>, mut stream: TcpStream, remote: SocketAddr) {
    let detect_timeout = ctx.cfg.timeouts.detect.into();
    let (proto, prefix) = match detect(&mut stream, detect_timeout).await {
        Ok(d) => d,
        Err(_) => return,
    };
    if proto != Detected::Tls {
        crate::peerauth::plaintext(ctx, stream, prefix, proto, remote).await;
        return;
    }
    let accept = ctx.tls.acceptor.accept(Prefixed::new(prefix, stream));
    let tls = match tokio::time::timeout(detect_timeout, accept).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let reason = tls_reason(&e);
            ctx.metrics.tls_error(Direction::inbound, reason);
            warn_limited!(ctx.logs, Kind::Handshake, remote.ip(), %remote, reason, error = %e, "inbound TLS handshake failed");
            return;
        }
        Err(_) => {
            ctx.metrics.tls_error(Direction::inbound, "timeout");
            warn_limited!(ctx.logs, Kind::Handshake, remote.ip(), %remote, reason = "timeout", "inbound TLS handshake not done within timeouts.detect");
            return;
        }
    };
    let (_, conn) = tls.get_ref();
    let Some(peer_id) = tls::peer_identity(conn.peer_certificates()) else {
        ctx.metrics.tls_error(Direction::inbound, "no-spiffe-id");
        return;
    };
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    let target = conn.server_name().and_then(SniTarget::parse);
    let port = match (&target, &ctx.cfg.inbound) {
        (Some(t), Some(_)) => ctx.app_port(t.port).map(|proto| (t.port, proto)),
        _ => None,
    };
    let Some((port, protocol)) = port else {
        ctx.metrics.protocol_error(Direction::inbound, "unknown-port");
        tracing::info!(%remote, sni = ?conn.server_name(), "inbound: SNI names no configured app port");
        return;
    };
    let app = SocketAddr::new(ctx.app_host(), port);
    let label = Peer { direction: Direction::inbound, src: Name::new(peer_id.to_string()), dst: ctx.id_label.clone() };
    let source = crate::authz::compile::Source::mtls(&peer_id, remote.ip());
    // Authorization of an opaque connection: what L4 knows, once; denied is a reset.
    if alpn.as_deref() == Some(net::ALPN_TCP) && crate::authz::check_tcp(&ctx, &source, port).is_err() {
        let (io, _) = tls.get_ref();
        let _ = socket2::SockRef::from(io.get_ref()).set_linger(Some(std::time::Duration::ZERO));
        return;
    }
    serve_app(ctx, tls, remote, app, (port, protocol), label, alpn, Some(peer_id.to_string()), source).await;
}

/// Serves one authenticated (mTLS) or admitted plaintext connection to the app: HTTP/2 (`alpn`
/// h2), opaque TCP (`alpn` weft-tcp) or HTTP/1. `peer` is the verified identity, `None` for
/// plaintext (the identity header is then removed, never set). An opaque connection's
/// authorization (`source`, the port) is checked by the caller, which can reset the socket.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve_app<T>(
    ctx: Arc<Ctx>,
    tls: T,
    remote: SocketAddr,
    app: SocketAddr,
    (port, protocol): (u16, Protocol),
    label: Peer,
    alpn: Option<Vec<u8>>,
    peer: Option<String>,
    source: crate::authz::compile::Source,
) where
    T: crate::cork::Session + Send + 'static,
{
    if alpn.as_deref() == Some(net::ALPN_TCP) {
        // Opaque TCP only where no HTTP can pass (see `opaque`).
        crate::opaque::serve(ctx, tls, app, protocol, label).await;
        return;
    }
    ctx.metrics
        .detected
        .get_or_create(&Proto {
            direction: Direction::inbound,
            protocol: if alpn.as_deref() == Some(net::ALPN_H2) { "http2" } else { "http1" },
        })
        .inc();
    // Built once per connection: every request on it carries the same verified identity and
    // counts in the same metric series (a service call clones one `Arc`).
    let peer_header = match peer.map(|p| HeaderValue::from_str(&p)) {
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => return,
        None => None,
    };
    let allow_connect = ctx.allows_connect(port);
    let conn = Conn {
        ctx: ctx.clone(),
        peer_header,
        label,
        series: OnceLock::new(),
        app,
        protocol,
        allow_connect,
        remote,
        source,
    };
    // Corked: responses to many requests on one connection leave in one write (see `cork`).
    let io = crate::cork::Corked::new(tls);
    if alpn.as_deref() == Some(net::ALPN_H2) {
        if crate::h2server::serve(io, ctx.h2_settings(), &ctx.drain, &conn).await == crate::h2server::Ended::NoPreface {
            crate::header_read_timeout(&ctx, remote, Direction::inbound);
        }
    } else {
        crate::serve_http(&ctx, io, Arc::new(conn), remote, Direction::inbound).await;
    }
}

/// What every request of one inbound HTTP connection shares.
struct Conn {
    ctx: Arc<Ctx>,
    /// The verified peer identity, as the `x-weft-peer-identity` value; `None` for plaintext
    /// (admitted by PERMISSIVE or DISABLE), whose requests carry no identity header at all.
    peer_header: Option<HeaderValue>,
    label: Peer,
    series: OnceLock<HttpSeries>,
    app: SocketAddr,
    protocol: Protocol,
    /// CONNECT tunnels to the app are allowed (`allow_connect`).
    allow_connect: bool,
    /// The peer proxy's address, for rate-limited warnings.
    remote: SocketAddr,
    /// Who the peer is, for authorization (see [`crate::authz`]).
    source: crate::authz::compile::Source,
}

impl Conn {
    /// Sets the identity header and drops the client sidecar's own; how the app gets the
    /// request (under `auto`, an HTTP/2 caller's request goes over HTTP/2 if the app speaks it).
    fn prepare(&self, req: &mut Request<Body>) -> AppProto {
        // Nor in trailers, which come after the headers (a body that has ended has none).
        if !req.body().is_end_stream() {
            let body = std::mem::replace(req.body_mut(), h::full(bytes::Bytes::new()));
            *req.body_mut() = h::strip_identity_trailers(body);
        }
        // The app may trust this header: any copy from outside, in any spelling an app could
        // read as it, is replaced by the verified identity.
        h::strip_peer_identity(req.headers_mut());
        if let Some(v) = &self.peer_header {
            req.headers_mut().insert(h::PEER_IDENTITY, v.clone());
        }
        // Only the exact value the client sidecar sets counts; anything else is dropped.
        let orig_h1 = req.headers_mut().remove(h::ORIG_PROTO).is_some_and(|v| v == h::ORIG_PROTO_HTTP1)
            || req.version() != http::Version::HTTP_2;
        match self.protocol {
            Protocol::Http2 => AppProto::Http2,
            Protocol::Http1 => AppProto::Http1,
            _ if orig_h1 => AppProto::Http1,
            _ => AppProto::Learn,
        }
    }

    /// The response to send back (a failure answered by the proxy), counted.
    fn finish(&self, result: Result<Response<Body>, ProxyError>, started: Instant) -> Response<Body> {
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                let resp = h::rescue(&e);
                let (src, app) = (self.remote.ip(), self.app);
                if is_app_refused(&e) {
                    warn_limited!(self.ctx.logs, Kind::AppRefused, src, %app, error = %e, "inbound: the app refused the connection (502)");
                } else if resp.status() == http::StatusCode::BAD_GATEWAY {
                    let code =
                        resp.headers().get(h::PROXY_ERROR).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    warn_limited!(self.ctx.logs, Kind::BadGateway, src, %app, peer = %self.remote, code, error = %e, "inbound: answered 502");
                } else {
                    tracing::debug!(error = %e, app = %self.app, "inbound: app request failed");
                }
                resp
            }
        };
        self.series
            .get_or_init(|| HttpSeries::new(&self.ctx.metrics, self.label.clone()))
            .record(resp.status().as_u16(), started);
        resp
    }
}

impl Conn {
    /// One request from a peer: with tracing on, inside a server span (see [`crate::trace`]);
    /// off, one branch. `log` (access log on) takes the AUDIT mark.
    async fn traced(&self, mut req: Request<Body>, log: &mut Option<Box<crate::accesslog::Pending>>) -> Response<Body> {
        let span = self.server_span(&mut req);
        let resp = self.serve(req, log).await;
        if let Some(span) = span {
            span.end(resp.status().as_u16());
        }
        resp
    }

    /// The server span of a sampled request from this peer (see [`crate::trace`]).
    fn server_span(&self, req: &mut Request<Body>) -> Option<Box<crate::trace::Span>> {
        let mut span = self.ctx.tracing.span(crate::trace::Kind::Server, req)?;
        span.upstream = Some(self.app);
        span.peer_identity = self.peer_header.as_ref().and_then(|v| v.to_str().ok()).map(str::to_string);
        Some(span)
    }

    async fn serve(&self, mut req: Request<Body>, log: &mut Option<Box<crate::accesslog::Pending>>) -> Response<Body> {
        let started = Instant::now();
        // The rate limit of the service this proxy fronts (ResiliencePolicy `rateLimit`).
        if let Some(refused) = crate::resilience::limit_inbound(&self.ctx.resilience, &self.label.src) {
            return self.finish(Ok(refused), started);
        }
        if let Err(e) = h::check_host(&mut req) {
            return self.finish(Err(e), started);
        }
        // Before the identity is set: a `Connection` header must not name it away.
        h::strip_hop_by_hop(req.headers_mut());
        let proto = self.prepare(&mut req);
        // RequestAuthentication: a bad token (or none, where one is required) ends here.
        if let Err(refused) = self.ctx.jwt.authenticate(&mut req).await {
            return self.finish(Ok(refused), started);
        }
        // After `prepare`: a condition on a header sees the verified identity, never a copy
        // from outside.
        let checked = crate::authz::check_http(&self.ctx, &self.source, self.remote, self.app.port(), &mut req).await;
        if let Some(log) = log {
            log.take_audit(&mut req);
        }
        let extra = match checked {
            Ok(extra) => extra,
            Err(denied) => return self.finish(Ok(denied), started),
        };
        let mut result = forward(&self.ctx, self.app, proto, req).await;
        // Headers an external authorizer (CUSTOM) asked for on the response.
        if let (false, Ok(resp)) = (extra.is_empty(), &mut result) {
            for (name, value) in extra {
                resp.headers_mut().append(name, value);
            }
        }
        self.finish(result, started)
    }

    /// [`Conn::tunnel`] inside a server span while tracing is on. As Envoy's, the span covers the
    /// upgrade's request and response, not the life of the tunnel after it. An upgrade to HTTP
    /// (h2c) is served as a request, which `traced` spans.
    async fn traced_tunnel(
        &self,
        mut req: Request<Body>,
        downstream: h::Downstream,
        log: &mut Option<Box<crate::accesslog::Pending>>,
    ) -> Response<Body> {
        let span = if h::upgrades_to_http(&req) { None } else { self.server_span(&mut req) };
        let resp = self.tunnel(req, downstream, log).await;
        if let Some(span) = span {
            span.end(resp.status().as_u16());
        }
        resp
    }

    /// An upgrade or CONNECT: joined to the app over a fresh connection; `log` (access log on)
    /// takes the AUDIT mark.
    async fn tunnel(
        &self,
        mut req: Request<Body>,
        downstream: h::Downstream,
        log: &mut Option<Box<crate::accesslog::Pending>>,
    ) -> Response<Body> {
        let started = Instant::now();
        // A tunnel's bytes reach the app raw, past the identity header: only where allowed.
        if req.method() == http::Method::CONNECT && !self.allow_connect {
            tracing::info!(src = %self.label.src.0, port = self.app.port(), "inbound: CONNECT refused (allow_connect is off)");
            return self.finish(Err(ProxyError::ConnectNotAllowed(self.app.port())), started);
        }
        // An upgrade to HTTP (h2c) would hand the app a raw stream of requests the sidecar never
        // sees: it is served as the ordinary request it also is (a server may ignore Upgrade,
        // RFC 9110 §7.8).
        if h::upgrades_to_http(&req) {
            h::strip_hop_by_hop(req.headers_mut());
            req.headers_mut().remove("http2-settings");
            return self.traced(req, log).await;
        }
        if let Err(e) = h::check_host(&mut req) {
            return self.finish(Err(e), started);
        }
        self.prepare(&mut req);
        if let Err(refused) = self.ctx.jwt.authenticate(&mut req).await {
            return self.finish(Ok(refused), started);
        }
        let checked = crate::authz::check_http(&self.ctx, &self.source, self.remote, self.app.port(), &mut req).await;
        if let Some(log) = log {
            log.take_audit(&mut req);
        }
        if let Err(denied) = checked {
            return self.finish(Ok(denied), started);
        }
        let (ctx, app) = (&self.ctx, self.app);
        let result = async {
            let tcp = crate::app::connect(app, ctx.mark(), ctx.cfg.timeouts.connect.into()).await?;
            crate::app::upgraded(app, h::forward_upgrade(req, downstream, tcp, ctx.drain.conn()).await)
        };
        self.finish(result.await, started)
    }
}

impl Handler for Conn {
    async fn request(&self, req: Request<Body>) -> Response<Body> {
        // Live tap: one atomic load unless a tap is open (see `crate::tap`).
        let tap = crate::tap::Tapped::start(&self.ctx.taps, &req);
        // Access log: while it is off, this one check is all the request pays.
        let resp = match self.ctx.access_log.begin(&req) {
            None => self.traced(req, &mut None).await,
            Some(log) => {
                let mut log = Some(log);
                let resp = self.traced(req, &mut log).await;
                if let Some(log) = log {
                    let src = self.peer_header.as_ref().map(|_| &self.label.src);
                    log.inbound(src, &self.ctx.id_label, self.app, &resp);
                }
                resp
            }
        };
        if let Some(tap) = tap {
            let id = self.ctx.certs.id();
            let peer = self.peer_header.as_ref().and_then(|v| v.to_str().ok());
            let status = resp.status().as_u16();
            tap.inbound(&self.ctx.taps, (&self.ctx.id_label.0, id.namespace()), peer, self.remote, self.app, status);
        }
        resp
    }

    /// Joined to the app over a fresh connection (see `tunnel`), with its access log line.
    async fn upgrade(&self, req: Request<Body>, downstream: h::Downstream) -> Response<Body> {
        let Some(log) = self.ctx.access_log.begin(&req) else {
            return self.traced_tunnel(req, downstream, &mut None).await;
        };
        let mut log = Some(log);
        let resp = self.traced_tunnel(req, downstream, &mut log).await;
        if let Some(log) = log {
            let src = self.peer_header.as_ref().map(|_| &self.label.src);
            log.inbound(src, &self.ctx.id_label, self.app, &resp);
        }
        resp
    }
}

/// A failed connection to the local app (the app is down or not listening).
fn is_app_refused(e: &ProxyError) -> bool {
    match e {
        ProxyError::Connect { .. } | ProxyError::ConnectTimeout(_) => true,
        ProxyError::App(m) => m.starts_with("connect to "),
        _ => false,
    }
}

async fn forward(
    ctx: &Ctx,
    app: SocketAddr,
    proto: AppProto,
    mut req: Request<Body>,
) -> Result<Response<Body>, ProxyError> {
    h::strip_hop_by_hop(req.headers_mut());
    // The client sidecar sends an absolute URI carrying the caller's authority; keep it (the
    // connector dials the app whatever it says). Otherwise name the app.
    if req.uri().authority().is_none() {
        let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
        *req.uri_mut() = format!("http://{app}{path}").parse::<Uri>().map_err(|e| ProxyError::App(e.to_string()))?;
    }
    *req.version_mut() = if proto == AppProto::Http1 { http::Version::HTTP_11 } else { http::Version::HTTP_2 };
    let mut resp = ctx.apps.send(app.port(), proto, req).await?;
    h::strip_hop_by_hop(resp.headers_mut());
    // Only proxies speak in this header.
    resp.headers_mut().remove(h::PROXY_ERROR);
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<'a, A, F>(_: impl FnOnce(&'a Conn, A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every request's future is moved whole into its stream's task (see `h2server`), so its
    /// size is paid per request. Rare paths (an external authorizer, JWT checks, a sampled span,
    /// an access log line) are boxed so that they do not grow it: if this fails, box the path
    /// that grew it. `size_of` is a layout fact, the same in debug and release builds.
    #[test]
    fn a_request_future_stays_small() {
        let size = future_size(<Conn as Handler>::request);
        eprintln!("inbound request future: {size} bytes");
        assert!(size <= 6 * 1024, "the inbound request future grew to {size} bytes");
    }
}
