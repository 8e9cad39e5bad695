//! Outbound: the app's calls enter here, on an explicit per-upstream listener or on the
//! transparent listener that iptables redirects to, and leave as mTLS to the destination's proxy.
//!
//! ```text
//! accept ─► target (upstream config | SO_ORIGINAL_DST) ─► detect ─┬─ HTTP ─► h2 pool (one mTLS conn per peer)
//!                                                                 └─ TCP  ─► mTLS stream (ALPN weft-tcp)
//! ```

use crate::cork::{Buffered, Corked};
use crate::detect::{detect, detect_http, Detected, Prefixed};
use crate::error::ProxyError;
use crate::httputil::{self as h, Body};
use crate::metrics::{Direction, HttpSeries, Name, Peer, Proto};
use crate::net::{self, Alpn};
use crate::outlier::Outcome;
use crate::peer::SendError;
use crate::routes::{Endpoint, Service};
use crate::sni::SniTarget;
use crate::{Ctx, Handler};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::{TcpListener, TcpStream};
use weft_api::proxy::{Protocol, Upstream};

/// Where an app connection goes.
#[derive(Clone)]
pub struct Target {
    pub service: Arc<Service>,
    /// Transparent mode: the app dialled this endpoint itself.
    pub pinned: Option<Arc<Endpoint>>,
    /// Destination port; `None`: the endpoint's own port.
    pub port: Option<u16>,
    pub protocol: Protocol,
    /// Intercepted (transparent mode): a request whose `Host` is a mesh name goes where that
    /// name says (see [`crate::naming`]).
    pub by_host: bool,
    /// The app's address (the `sourceIP` hash key); set once the connection is accepted.
    pub client: Option<std::net::IpAddr>,
}

impl Target {
    /// The endpoint for a request (or connection) whose hash key is `key`.
    pub(crate) fn endpoint(&self, now: Instant, key: Option<u64>) -> Result<Arc<Endpoint>, ProxyError> {
        match &self.pinned {
            Some(ep) => Ok(ep.clone()),
            None => self
                .service
                .pick_keyed(now, key)
                .cloned()
                .ok_or_else(|| ProxyError::NoEndpoint(self.service.key().to_string())),
        }
    }

    /// Another endpoint after failed connects to each of `tried`: none for a pinned target (the
    /// app dialled that address itself).
    pub(crate) fn other_endpoint(&self, tried: &[Arc<Endpoint>]) -> Option<Arc<Endpoint>> {
        match self.pinned {
            Some(_) => None,
            None => self.service.pick_other(tried, Instant::now()).cloned(),
        }
    }

    /// The SNI naming this target on `ep`; precomputed unless the port differs from the endpoint's.
    /// Where plaintext to `ep` goes (its workload has mTLS DISABLE): its address, at the port
    /// called.
    fn plain_addr(&self, ep: &Endpoint) -> std::net::SocketAddr {
        std::net::SocketAddr::new(ep.address.ip(), self.port.unwrap_or(ep.address.port()))
    }

    fn sni<'a>(&self, ep: &'a Endpoint) -> Cow<'a, str> {
        match self.port {
            Some(port) if port != ep.address.port() => Cow::Owned(
                SniTarget {
                    port,
                    service: self.service.name.clone(),
                    namespace: self.service.namespace.clone(),
                    cluster: ep.cluster.clone(),
                }
                .to_sni(),
            ),
            _ => Cow::Borrowed(&ep.sni),
        }
    }
}

/// Accept loop of one explicit upstream listener.
pub async fn serve_upstream(ctx: Arc<Ctx>, listener: TcpListener, up: Upstream) {
    let (name, ns) = up.service.split_once('.').unwrap_or((up.service.as_str(), weft_api::proxy::DEFAULT_NAMESPACE));
    let (name, ns) = (name.to_string(), ns.to_string());
    crate::accept_loop(&ctx, listener, crate::Side::App, move |ctx, stream, _peer| {
        let service = ctx.routes.load().service(&name, &ns).cloned();
        let up = up.clone();
        let (name, ns) = (name.clone(), ns.clone());
        async move {
            // Not known yet (before the control plane's first update, or before the Service is
            // applied): accepted all the same. Each HTTP request resolves the service by key
            // (`503 no-endpoint` until it exists); opaque TCP waits for it (see `tcp`).
            let service = service.unwrap_or_else(|| {
                tracing::debug!(service = %up.service, "upstream service not known yet; resolving it per request");
                Arc::new(Service::unknown(&name, &ns))
            });
            // The upstream's own setting wins; otherwise what the service declares for the port.
            let protocol = match (up.protocol, up.port) {
                (Protocol::Auto, Some(port)) => service.protocol(port),
                (p, _) => p,
            };
            let target = Target { service, pinned: None, port: up.port, protocol, by_host: false, client: None };
            handle(ctx, stream, target).await;
        }
    })
    .await;
}

/// Accept loop of the transparent listener: the destination is the connection's original one.
pub async fn serve_transparent(ctx: Arc<Ctx>, listener: TcpListener) {
    let own = listener.local_addr().ok();
    crate::accept_loop(&ctx, listener, crate::Side::App, move |ctx, stream, _peer| async move {
        let dst = match crate::net::original_dst(&stream) {
            Ok(d) if Some(d) != own => d,
            Ok(_) => {
                ctx.metrics.protocol_error(Direction::outbound, "loop");
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "no original destination; was the connection redirected?");
                ctx.metrics.protocol_error(Direction::outbound, "no-original-dst");
                return;
            }
        };
        let (found, vip) = {
            let routes = ctx.routes.load();
            (routes.by_address(&dst).cloned(), routes.by_vip(dst.ip()).cloned())
        };
        match (found, vip) {
            (Some((service, ep)), _) => {
                let protocol = service.protocol(dst.port());
                let target =
                    Target { service, pinned: Some(ep), port: Some(dst.port()), protocol, by_host: true, client: None };
                handle(ctx, stream, target).await;
            }
            // A virtual IP, on any port: balanced over its service (or its cluster's mirror),
            // to the port the app dialled when the service declares it, else to each
            // endpoint's own port (instances may listen on different ones).
            (None, Some(service)) => {
                let protocol = service.protocol(dst.port());
                let port = service.protocols.contains_key(&dst.port()).then_some(dst.port());
                let target = Target { service, pinned: None, port, protocol, by_host: true, client: None };
                handle(ctx, stream, target).await;
            }
            (None, None) => passthrough(ctx, stream, dst).await,
        }
    })
    .await;
}

/// A destination outside the mesh: forwarded as it is (Istio's PassthroughCluster).
async fn passthrough(ctx: Arc<Ctx>, mut stream: TcpStream, dst: SocketAddr) {
    let mut guard = ctx.metrics.tcp_conn(Peer {
        direction: Direction::outbound,
        src: ctx.id_label.clone(),
        // One label for all non-mesh destinations: raw addresses would grow without bound.
        dst: Name::new("passthrough"),
    });
    let mut log = ctx.access_log.tcp(Direction::outbound, &ctx.id_label, &Name::new("passthrough"), Some(dst));
    match net::tcp_connect(dst, ctx.mark(), ctx.cfg.timeouts.connect.into()).await {
        Ok(mut up) => {
            if let Ok((rx, tx)) = tokio::io::copy_bidirectional(&mut stream, &mut up).await {
                (guard.rx, guard.tx) = (rx, tx);
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, "passthrough connect failed");
            if let Some(l) = &mut log {
                l.failed("UF", "connect");
            }
        }
    }
    if let Some(l) = &mut log {
        l.bytes(guard.rx, guard.tx);
    }
}

async fn handle(ctx: Arc<Ctx>, mut stream: TcpStream, mut target: Target) {
    let detected = match target.protocol {
        Protocol::Tcp => Ok((Detected::Tcp, vec![])),
        // Declared HTTP: only the version is read, from the preface, within the time an HTTP
        // client has for its request head.
        Protocol::Http1 | Protocol::Http2 => detect_http(&mut stream, ctx.cfg.timeouts.header_read.into()).await,
        Protocol::Auto => detect(&mut stream, ctx.cfg.timeouts.detect.into()).await,
    };
    let Ok((proto, prefix)) = detected else { return };
    let src = stream.peer_addr().unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
    target.client = Some(src.ip());
    ctx.metrics.detected.get_or_create(&Proto { direction: Direction::outbound, protocol: proto.as_str() }).inc();
    let io = Prefixed::new(prefix, stream);
    match proto {
        Detected::Http2 => {
            // Corked: the frames of many responses leave in one write (see `cork`).
            let io = Corked::new(Buffered::new(io));
            let conn = AppConn { ctx: ctx.clone(), target };
            if crate::h2server::serve(io, ctx.h2_settings(), &ctx.drain, &conn).await
                == crate::h2server::Ended::NoPreface
            {
                crate::header_read_timeout(&ctx, src, Direction::outbound);
            }
        }
        Detected::Http1 => {
            let conn = Arc::new(AppConn { ctx: ctx.clone(), target });
            crate::serve_http(&ctx, io, conn, src, Direction::outbound).await;
        }
        Detected::Tcp | Detected::Tls => tcp(ctx, io, target).await,
    }
}

/// How long an opaque TCP connection to a service this proxy does not know yet waits for it
/// (to appear with an endpoint or a TCPRoute) before it is closed.
pub const TCP_SERVICE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// `target`'s service as the routing table has it. One the table lacks is waited for, polled
/// up to [`TCP_SERVICE_WAIT`] (or until drain), until it is there with an endpoint or a route;
/// `false` if it never appeared.
async fn wait_for_service(ctx: &Ctx, target: &mut Target) -> bool {
    let deadline = tokio::time::Instant::now() + TCP_SERVICE_WAIT;
    let mut drain = std::pin::pin!(ctx.drain.signaled());
    let mut waited = false;
    loop {
        let found = ctx.routes.load().service_by_key(target.service.key()).cloned();
        let next = tokio::time::Instant::now() + std::time::Duration::from_millis(50);
        match found {
            // Known from the start: as it is (no endpoint is then answered at once, as before).
            Some(s) if !waited || !s.endpoints.is_empty() || s.route.is_some() || next > deadline => {
                target.service = s;
                return true;
            }
            None if next > deadline => return false,
            _ => {}
        }
        waited = true;
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = &mut drain => return false,
        }
    }
}

async fn tcp(ctx: Arc<Ctx>, mut io: Prefixed<TcpStream>, mut target: Target) {
    // An upstream service this proxy does not know yet: wait a bounded time for it rather than
    // close at once. (A known one with endpoints or a route costs these two checks.)
    if target.pinned.is_none()
        && target.service.endpoints.is_empty()
        && target.service.route.is_none()
        && !wait_for_service(&ctx, &mut target).await
    {
        tracing::warn!(service = %target.service.key(), waited = ?TCP_SERVICE_WAIT, "tcp: this proxy has no config for the upstream service; closing");
        return;
    }
    // A TCPRoute of the service picks the backend Service of this connection by weight.
    if let Some(rule) = target.service.route.as_ref().and_then(|t| t.tcp.clone()).filter(|_| target.pinned.is_none()) {
        if crate::route::to_backend(&ctx, &rule, &mut target).is_err() {
            tracing::debug!(route = %rule.route.0, "tcp: the route's backend does not exist");
            return;
        }
        let labels = crate::route::RouteLabels { route: rule.route.clone(), rule: rule.rule.clone() };
        ctx.route_metrics.tcp_connections.get_or_create(&labels).inc();
    }
    // Circuit breaking: each TCP stream is a connection to the service (held until it ends).
    let _permit = match target.service.balance.acquire(crate::balance::limits::Limit::Connections) {
        Ok(p) => p,
        Err(limit) => {
            overflowed(&ctx, &target.service, limit);
            return;
        }
    };
    // A TCP connection hashes on the source IP only (it has no headers, cookies or query).
    let key = match target.service.balance.hash_on() {
        Some(crate::balance::hash::HashOn::SourceIp) => target.client.map(crate::balance::hash::ip_key),
        _ => None,
    };
    let ep = match target.endpoint(Instant::now(), key) {
        Ok(ep) => ep,
        Err(e) => {
            tracing::debug!(error = %e, "tcp: no endpoint");
            return;
        }
    };
    if ep.plaintext {
        plain_tcp(&ctx, &target, &ep, io).await;
        return;
    }
    let (ep, connected) = connect(&ctx, &target, ep, Alpn::Tcp).await;
    let mut guard =
        ctx.metrics.tcp_conn(Peer { direction: Direction::outbound, src: ctx.id_label.clone(), dst: ep.label.clone() });
    let mut log = ctx.access_log.tcp(Direction::outbound, &ctx.id_label, &ep.label, Some(ep.address));
    if let Some(l) = &mut log {
        l.set_service(&target.service.label);
    }
    match connected {
        Ok(mut up) => {
            if let Ok((rx, tx)) = tokio::io::copy_bidirectional(&mut io, &mut up).await {
                (guard.rx, guard.tx) = (rx, tx);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "tcp: cannot reach peer");
            if let Some(l) = &mut log {
                l.failed(crate::accesslog::flag_of(e.kind()).unwrap_or("UF"), e.kind());
            }
        }
    }
    if let Some(l) = &mut log {
        l.bytes(guard.rx, guard.tx);
    }
}

/// Opaque TCP to an endpoint whose workload has mTLS DISABLE: spliced in plaintext to its
/// address at the port called (see [`crate::plainout`]).
async fn plain_tcp(ctx: &Ctx, target: &Target, ep: &Arc<Endpoint>, mut io: Prefixed<TcpStream>) {
    let addr = target.plain_addr(ep);
    let mut guard =
        ctx.metrics.tcp_conn(Peer { direction: Direction::outbound, src: ctx.id_label.clone(), dst: ep.label.clone() });
    let mut log = ctx.access_log.tcp(Direction::outbound, &ctx.id_label, &ep.label, Some(addr));
    if let Some(l) = &mut log {
        l.set_service(&target.service.label);
    }
    match net::tcp_connect(addr, ctx.mark(), ctx.cfg.timeouts.connect.into()).await {
        Ok(mut up) => {
            report(ctx, &target.service, ep, Outcome::Connected);
            if let Ok((rx, tx)) = tokio::io::copy_bidirectional(&mut io, &mut up).await {
                (guard.rx, guard.tx) = (rx, tx);
            }
            if let Some(l) = &mut log {
                l.bytes(guard.rx, guard.tx);
            }
        }
        Err(e) => {
            if let Some(l) = &mut log {
                l.failed("UF", "connect");
            }
            record_connect_error(ctx, &e);
            report(ctx, &target.service, ep, Outcome::ConnectFailure);
            tracing::warn!(error = %e, %addr, "tcp: cannot reach plaintext (mTLS DISABLE) endpoint");
        }
    }
}

/// An mTLS connection to `ep` or, when that connect fails (nothing was sent yet), to another
/// endpoint at once; every failure counts for outlier detection. Returns the endpoint last tried.
async fn connect(
    ctx: &Ctx,
    target: &Target,
    mut ep: Arc<Endpoint>,
    alpn: Alpn,
) -> (Arc<Endpoint>, Result<tokio_rustls::client::TlsStream<TcpStream>, ProxyError>) {
    let mut tried = Vec::new();
    loop {
        let result = {
            let sni = target.sni(&ep);
            net::connect_peer(&ctx.tls, &ep, &sni, alpn, ctx.mark(), ctx.cfg.timeouts.connect.into()).await
        };
        match result {
            Ok(stream) => {
                report(ctx, &target.service, &ep, Outcome::Connected);
                return (ep, Ok(stream));
            }
            Err(e) => {
                record_connect_error(ctx, &e);
                report(ctx, &target.service, &ep, Outcome::ConnectFailure);
                tried.push(ep.clone());
                match target.other_endpoint(&tried) {
                    Some(next) => {
                        tracing::debug!(error = %e, next = %next.proxy, "connect failed; trying another endpoint");
                        ep = next;
                    }
                    None => return (ep, Err(e)),
                }
            }
        }
    }
}

/// Counts a request or connection refused at a circuit-breaking limit
/// (`weft_overflow_total{service,limit}`).
pub(crate) fn overflowed(ctx: &Ctx, service: &Service, limit: crate::balance::limits::Limit) {
    let labels = crate::outlier::OverflowLabels { service: service.label.clone(), limit: limit.as_str() };
    ctx.outlier_metrics.overflows.get_or_create(&labels).inc();
}

/// Counts `outcome` on `ep` for outlier detection; an ejection (of `ep`, or of another endpoint
/// for its success rate) is counted (`weft_outlier_ejections_total`) and logged, rate limited
/// per endpoint host.
fn report(ctx: &Ctx, service: &Service, ep: &Endpoint, outcome: Outcome) {
    let mut others = |other: &Endpoint, e: crate::outlier::Ejection| ejected(ctx, service, other, e);
    let Some(e) = service.report_with(ep, outcome, &mut others) else { return };
    ejected(ctx, service, ep, e);
}

fn ejected(ctx: &Ctx, service: &Service, ep: &Endpoint, e: crate::outlier::Ejection) {
    let labels = crate::outlier::EjectionLabels { service: service.label.clone(), reason: e.reason };
    ctx.outlier_metrics.ejections.get_or_create(&labels).inc();
    crate::loglimit::warn_limited!(
        ctx.logs,
        crate::loglimit::Kind::Ejection,
        ep.proxy.ip(),
        service = service.key(),
        endpoint = %ep.address,
        proxy = %ep.proxy,
        cluster = %ep.cluster,
        reason = e.reason,
        ejections_in_a_row = e.times,
        duration = ?e.duration,
        "outbound: endpoint ejected from load balancing"
    );
}

/// What a failed request says about its endpoint: connect failures (the peer-unresponsive 504
/// of a dead pooled connection among them) and gateway errors (502 upstream).
fn outcome_of(e: &ProxyError) -> Option<Outcome> {
    match e {
        ProxyError::Connect { .. }
        | ProxyError::ConnectTimeout(_)
        | ProxyError::Tls { .. }
        | ProxyError::WrongIdentity { .. }
        | ProxyError::PeerUnresponsive(_) => Some(Outcome::ConnectFailure),
        ProxyError::Upstream(_) => Some(Outcome::GatewayError),
        _ => None,
    }
}

fn record_connect_error(ctx: &Ctx, e: &ProxyError) {
    if matches!(e, ProxyError::Tls { .. } | ProxyError::WrongIdentity { .. }) {
        ctx.metrics.tls_error(Direction::outbound, e.kind());
    }
}

/// The request's host (authority or `Host` header), without the port.
fn host_of<B>(req: &Request<B>) -> Option<&str> {
    let host = match req.uri().authority() {
        Some(a) => a.host(),
        None => req.headers().get(http::header::HOST)?.to_str().ok()?,
    };
    Some(host.rsplit_once(':').map_or(host, |(h, port)| if port.parse::<u16>().is_ok() { h } else { host }))
}

/// Absolute `http://authority/path` for the HTTP/2 hop. Built from the parts of the request's
/// URI (reference-counted, no copy) rather than formatted and parsed again: an HTTP/2 request
/// already carries both; HTTP/1.1 takes its authority from `Host`.
fn absolute_uri<B>(req: &Request<B>, fallback: &str) -> Uri {
    let uri = req.uri();
    if uri.scheme() == Some(&Scheme::HTTP) && uri.authority().is_some() {
        return uri.clone();
    }
    let authority = match (uri.authority(), req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok())) {
        (Some(a), _) => Ok(a.clone()),
        (None, Some(host)) => Authority::try_from(host),
        (None, None) => Authority::try_from(fallback),
    };
    let Ok(authority) = authority else {
        return Uri::from_static("http://invalid/");
    };
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority);
    parts.path_and_query = Some(uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")));
    Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("http://invalid/"))
}

/// The service (or pinned endpoint) a request whose host is `host` goes to, from the routing
/// table in force now.
fn resolve(ctx: &Ctx, target: &mut Target, host: Option<&str>) -> Result<(), ProxyError> {
    // Balance over the endpoints in force now, not those of when the app connected: a
    // keep-alive connection must not keep sending to a deregistered or unhealthy endpoint.
    // Transparent mode: the app dialled one endpoint's IP, but a request whose Host names the
    // service (`api`, `api.default.svc.cluster.local`, `api.service.consul`...) is balanced over
    // the whole service, as Linkerd does. One addressed by IP stays where it was sent. A full
    // mesh name of another service, or of one cluster's mirror, goes there (`crate::naming`).
    if let Some(h) = host.filter(|_| target.by_host) {
        if let Some(named) = ctx.routes.load().by_host(h) {
            if !Arc::ptr_eq(named, &target.service) {
                // The port dialled was the other service's: each endpoint's own port then.
                if named.name != target.service.name || named.namespace != target.service.namespace {
                    target.port = None;
                }
                target.service = named.clone();
            }
            if target.pinned.take().is_some() {
                target.port = None;
            }
        } else if target.pinned.is_some() && target.service.is_named_by(h) {
            (target.pinned, target.port) = (None, None);
        }
    }
    if target.pinned.is_none() {
        match ctx.routes.load().service_by_key(target.service.key()) {
            Some(current) if !Arc::ptr_eq(current, &target.service) => target.service = current.clone(),
            Some(_) => {}
            None => return Err(ProxyError::NoConfig(target.service.key().to_string())),
        }
    }
    Ok(())
}

/// Picks the endpoint for `req` at `now` in the service `resolve` (and the routes) chose; with
/// the cookie to set on its response when the service hashes on a cookie the request did not
/// carry.
fn pick<B>(
    target: &Target,
    req: &Request<B>,
    now: Instant,
) -> Result<(Arc<Endpoint>, Option<HeaderValue>), ProxyError> {
    // Only a hashing balancer reads the request: round robin costs one branch here.
    let key = match (target.pinned.is_none(), target.service.balance.hash_on()) {
        (true, Some(how)) => crate::balance::hash::key_of(how, req, target.client),
        _ => Default::default(),
    };
    Ok((target.endpoint(now, key.hash)?, key.set_cookie))
}

/// The answer to a request no endpoint can take, counted against the service.
fn unrouted(ctx: &Ctx, target: &Target, e: &ProxyError, started: Instant) -> Response<Body> {
    let mut resp = h::rescue(e);
    let peer = Peer { direction: Direction::outbound, src: ctx.id_label.clone(), dst: target.service.label.clone() };
    ctx.metrics.http(&peer, resp.status().as_u16(), started);
    if ctx.access_log.on() {
        let up = crate::accesslog::Upstream { service: target.service.label.clone(), endpoint: None, route: None };
        resp.extensions_mut().insert(up);
    }
    resp
}

/// The response to send back to the app (a failure answered by the proxy), counted.
fn finish(
    ctx: &Ctx,
    target: &Target,
    ep: &Endpoint,
    result: Result<Response<Body>, ProxyError>,
    started: Instant,
) -> Response<Body> {
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            record_connect_error(ctx, &e);
            let resp = h::rescue(&e);
            if resp.status() == http::StatusCode::BAD_GATEWAY {
                let code = resp.headers().get(h::PROXY_ERROR).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                crate::loglimit::warn_limited!(
                    ctx.logs,
                    crate::loglimit::Kind::BadGateway,
                    ep.address.ip(),
                    endpoint = %ep.address,
                    dst = %ep.identity,
                    code,
                    error = %e,
                    "outbound: answered 502"
                );
            } else {
                tracing::debug!(error = %e, dst = %ep.identity, "outbound request failed");
            }
            resp
        }
    };
    ep.http_series
        .get_or_init(|| {
            let peer = Peer { direction: Direction::outbound, src: ctx.id_label.clone(), dst: ep.label.clone() };
            HttpSeries::new(&ctx.metrics, peer)
        })
        .record(resp.status().as_u16(), started);
    if ctx.access_log.on() {
        let up = crate::accesslog::Upstream {
            service: target.service.label.clone(),
            endpoint: Some((ep.address, ep.label.clone())),
            route: None,
        };
        resp.extensions_mut().insert(up);
    }
    resp
}

/// Names the route whose rule `resp` answered in the access log.
fn log_route(ctx: &Ctx, target: &Target, resp: &mut Response<Body>, rule: &crate::route::Rule) {
    if ctx.access_log.on() {
        match resp.extensions_mut().get_mut::<crate::accesslog::Upstream>() {
            Some(up) => up.route = Some(rule.route.clone()),
            None => {
                let up = crate::accesslog::Upstream {
                    service: target.service.label.clone(),
                    endpoint: None,
                    route: Some(rule.route.clone()),
                };
                resp.extensions_mut().insert(up);
            }
        }
    }
}

/// One HTTP connection from the app, and where its requests go.
struct AppConn {
    ctx: Arc<Ctx>,
    target: Target,
}

impl Handler for AppConn {
    fn request(&self, req: Request<Body>) -> impl Future<Output = Response<Body>> + Send {
        // Access log: while it is off, this one check is all the request pays.
        let log = self.ctx.access_log.begin(&req);
        async move {
            let resp = tapped(&self.ctx, self.target.clone(), req).await;
            if let Some(log) = log {
                log.outbound(&self.ctx.id_label, &resp);
            }
            resp
        }
    }

    fn upgrade(&self, req: Request<Body>, downstream: h::Downstream) -> impl Future<Output = Response<Body>> + Send {
        let log = self.ctx.access_log.begin(&req);
        async move {
            let resp = traced_upgrade(&self.ctx, self.target.clone(), req, downstream).await;
            if let Some(log) = log {
                log.outbound(&self.ctx.id_label, &resp);
            }
            resp
        }
    }
}

/// [`request`], summarized for the live tap when one is open (one atomic load otherwise).
async fn tapped(ctx: &Arc<Ctx>, target: Target, req: Request<Body>) -> Response<Body> {
    let mut tap = crate::tap::Tapped::start(&ctx.taps, &req);
    if tap.is_none() {
        return request(ctx, target, req, &mut None).await;
    }
    let client = target.client;
    let resp = request(ctx, target, req, &mut tap).await;
    if let Some(t) = tap {
        t.outbound(&ctx.taps, &ctx.id_label.0, client, resp.status().as_u16());
    }
    resp
}

/// One request from the app: with tracing on, inside a client span (see [`crate::trace`]); off,
/// one branch.
async fn request(
    ctx: &Arc<Ctx>,
    target: Target,
    mut req: Request<Body>,
    tap: &mut Option<Box<crate::tap::Tapped>>,
) -> Response<Body> {
    let mut span = ctx.tracing.span(crate::trace::Kind::Client, &mut req);
    let resp = routed(ctx, target, req, span.as_deref_mut(), tap).await;
    if let Some(span) = span {
        span.end(resp.status().as_u16());
    }
    resp
}

/// Where the endpoint a request went to is recorded on its client span.
fn traced(span: &mut Option<&mut crate::trace::Span>, ep: &Endpoint) {
    if let Some(span) = span {
        span.upstream = Some(ep.address);
        span.peer_identity = Some(ep.identity.to_string());
    }
}

async fn routed(
    ctx: &Arc<Ctx>,
    mut target: Target,
    mut req: Request<Body>,
    mut span: Option<&mut crate::trace::Span>,
    tap: &mut Option<Box<crate::tap::Tapped>>,
) -> Response<Body> {
    let started = Instant::now();
    if let Err(e) = h::check_host(&mut req) {
        return unrouted(ctx, &target, &e, started);
    }
    let resolved = resolve(ctx, &mut target, host_of(&req));
    if let Some(t) = tap {
        t.service(&target.service);
    }
    if let Err(e) = resolved {
        return unrouted(ctx, &target, &e, started);
    }
    // The service's routes (HTTPRoute, GRPCRoute; see `crate::route`), if it has any.
    let rule = match target.pinned.is_none().then(|| crate::route::decide(ctx, &mut target, &mut req)).flatten() {
        None => None,
        Some(crate::route::Decision::Forward(rule)) => {
            if let Some(span) = span.as_mut() {
                span.route = Some(rule.route.0.clone());
            }
            Some(rule)
        }
        Some(crate::route::Decision::Respond(mut resp, rule)) => {
            if let Some(rule) = rule {
                log_route(ctx, &target, &mut resp, &rule);
                rule.filters.on_response(&mut resp);
                rule.record(&ctx.route_metrics, resp.status().as_u16(), started);
            }
            return resp;
        }
    };
    let (ep, set_cookie) = match pick(&target, &req, started) {
        Ok(found) => found,
        Err(e) => {
            let mut resp = unrouted(ctx, &target, &e, started);
            if let Some(rule) = rule {
                log_route(ctx, &target, &mut resp, &rule);
                rule.filters.on_response(&mut resp);
                rule.record(&ctx.route_metrics, resp.status().as_u16(), started);
            }
            return resp;
        }
    };
    // Circuit breaking: a request over the service's limit is answered here, at once.
    let _permit = match target.service.balance.acquire(crate::balance::limits::Limit::Requests) {
        Ok(p) => p,
        Err(limit) => {
            overflowed(ctx, &target.service, limit);
            let mut resp = unrouted(ctx, &target, &ProxyError::Overflow(limit), started);
            if let Some(rule) = rule {
                log_route(ctx, &target, &mut resp, &rule);
                rule.filters.on_response(&mut resp);
                rule.record(&ctx.route_metrics, resp.status().as_u16(), started);
            }
            return resp;
        }
    };
    if let (Some(t), Some(rule)) = (tap.as_mut(), &rule) {
        t.route(&rule.route.0);
    }
    let mut resp = match rule {
        None => {
            let (ep, result) = forward_policy(ctx, &target, None, ep, req, started).await;
            if let Some(t) = tap {
                t.endpoint(&ep);
            }
            traced(&mut span, &ep);
            finish(ctx, &target, &ep, result, started)
        }
        Some(rule) => {
            if !rule.filters.mirrors.is_empty() {
                if let Err(resp) = crate::route::mirror_copies(ctx, &rule, &mut req).await {
                    rule.record(&ctx.route_metrics, resp.status().as_u16(), started);
                    return *resp;
                }
            }
            let (ep, result) = match rule.timeout {
                None => forward_policy(ctx, &target, Some(&rule), ep, req, started).await,
                Some(limit) => {
                    let first = ep.clone();
                    let timed =
                        tokio::time::timeout(limit, forward_policy(ctx, &target, Some(&rule), ep, req, started));
                    // Boxed: only a route with a timeout carries the timer.
                    match Box::pin(timed).await {
                        Ok(done) => done,
                        Err(_) => {
                            let text = format!(
                                "route {} rule {}: no response within {limit:?} (timeouts)",
                                rule.route.0, rule.rule.0
                            );
                            (first, Ok(crate::route::local(http::StatusCode::GATEWAY_TIMEOUT, "route-timeout", text)))
                        }
                    }
                }
            };
            if let Some(t) = tap {
                t.endpoint(&ep);
            }
            traced(&mut span, &ep);
            let mut resp = finish(ctx, &target, &ep, result, started);
            log_route(ctx, &target, &mut resp, &rule);
            rule.filters.on_response(&mut resp);
            rule.record(&ctx.route_metrics, resp.status().as_u16(), started);
            resp
        }
    };
    if let Some(c) = set_cookie {
        resp.headers_mut().append(http::header::SET_COOKIE, c);
    }
    resp
}

/// A mirror's copy of a request (see `crate::route::mirror`): sent to an endpoint of `service`
/// like any request, its response dropped. The caller of the original never waits for it.
pub(crate) async fn send_copy(ctx: &Ctx, service: Arc<Service>, port: Option<u16>, mut req: Request<Body>) {
    let target = Target { service, pinned: None, port, protocol: Protocol::Auto, by_host: false, client: None };
    let Ok(ep) = target.endpoint(Instant::now(), None) else { return };
    let orig_h1 = req.version() != http::Version::HTTP_2;
    *req.uri_mut() = absolute_uri(&req, target.service.key());
    h::strip_hop_by_hop(req.headers_mut());
    req.headers_mut().remove(h::ORIG_PROTO);
    if orig_h1 {
        req.headers_mut().insert(h::ORIG_PROTO, HeaderValue::from_static(h::ORIG_PROTO_HTTP1));
    }
    *req.version_mut() = http::Version::HTTP_2;
    match send(ctx, &target, &ep, req, None).await {
        Ok(resp) => {
            // Read to the end so the stream closes cleanly, dropping each frame as it comes.
            let mut body = resp.into_body();
            while let Some(Ok(_)) = http_body_util::BodyExt::frame(&mut body).await {}
        }
        Err(_) => tracing::debug!(service = %target.service.key(), "mirror copy failed (the caller is not affected)"),
    }
}

/// Forwards `req` with the ResiliencePolicy (faults, timeouts, retries; see
/// `crate::resilience`) of its route rule, else of its service, when there is one; else as
/// [`forward`] does.
async fn forward_policy(
    ctx: &Ctx,
    target: &Target,
    rule: Option<&crate::route::Rule>,
    ep: Arc<Endpoint>,
    req: Request<Body>,
    started: Instant,
) -> (Arc<Endpoint>, Result<Response<Body>, ProxyError>) {
    match rule.and_then(|r| r.resilience.as_ref()).or(target.service.resilience.as_ref()) {
        None => forward(ctx, target, ep, req, started).await,
        // Boxed: a request without a policy does not carry the policy path's larger future.
        Some(p) => Box::pin(crate::resilience::forward(ctx, target, p, ep, req, started)).await,
    }
}

/// [`upgrade`] inside a client span while tracing is on. As Envoy's, the span covers the upgrade's
/// request and response (it ends at the `101`, the CONNECT's `200` or the refusal), not the life
/// of the tunnel after it.
async fn traced_upgrade(
    ctx: &Ctx,
    target: Target,
    mut req: Request<Body>,
    downstream: h::Downstream,
) -> Response<Body> {
    let mut span = ctx.tracing.span(crate::trace::Kind::Client, &mut req);
    let resp = upgrade(ctx, target, req, downstream, span.as_deref_mut()).await;
    if let Some(span) = span {
        span.end(resp.status().as_u16());
    }
    resp
}

/// An HTTP/1.1 upgrade (WebSocket) or a CONNECT (HTTP/1.1 or HTTP/2): carried to the peer as an
/// HTTP/1.1 upgrade over a TLS connection of its own (ALPN http/1.1), then joined byte for byte.
async fn upgrade(
    ctx: &Ctx,
    mut target: Target,
    mut req: Request<Body>,
    downstream: h::Downstream,
    mut span: Option<&mut crate::trace::Span>,
) -> Response<Body> {
    let started = Instant::now();
    if let Err(e) = h::check_host(&mut req) {
        return unrouted(ctx, &target, &e, started);
    }
    if let Err(e) = resolve(ctx, &mut target, host_of(&req)) {
        return unrouted(ctx, &target, &e, started);
    }
    // Routes pick the backend of a tunnel too (its filters do not apply to a byte stream).
    if target.pinned.is_none() {
        if let Err(resp) = crate::route::tunnel_backend(ctx, &mut target, &req) {
            return *resp;
        }
    }
    let ep = match pick(&target, &req, started) {
        Ok((ep, _)) => ep,
        Err(e) => return unrouted(ctx, &target, &e, started),
    };
    let (ep, connected) = connect(ctx, &target, ep, Alpn::Http1).await;
    traced(&mut span, &ep);
    let result = match connected {
        Ok(tls) => h::forward_upgrade(req, downstream, tls, ctx.drain.conn()).await,
        Err(e) => Err(e),
    };
    finish(ctx, &target, &ep, result, started)
}

/// Sends the request to `ep` or, when it cannot be sent there (a failed connect: nothing went
/// out), to another endpoint at once. Every outcome counts for outlier detection. Returns the
/// endpoint that answered (or last failed).
///
/// A request that went out on a pooled connection which then broke (its peer was killed, say)
/// fails, except one that is safe to send again (an idempotent method, no body; RFC 9110
/// §9.2.2) while its service has seen a connection fail in the last
/// [`crate::outlier::REPLAY_WINDOW_MS`]: that one goes to another endpoint, once. So when every
/// local endpoint dies, a client connection sees at most the one failure that was in flight, not
/// one more for each pooled connection not yet known dead. Outside the window nothing is copied.
async fn forward(
    ctx: &Ctx,
    target: &Target,
    ep: Arc<Endpoint>,
    req: Request<Body>,
    started: Instant,
) -> (Arc<Endpoint>, Result<Response<Body>, ProxyError>) {
    forward_with(ctx, target, ep, req, started, None).await
}

/// [`forward`] with a connect timeout for new connections other than the proxy's own
/// `timeouts.connect` (a ResiliencePolicy's `timeouts.connect`).
pub(crate) async fn forward_with(
    ctx: &Ctx,
    target: &Target,
    mut ep: Arc<Endpoint>,
    mut req: Request<Body>,
    started: Instant,
    connect_timeout: Option<std::time::Duration>,
) -> (Arc<Endpoint>, Result<Response<Body>, ProxyError>) {
    let orig_h1 = req.version() != http::Version::HTTP_2;
    *req.uri_mut() = absolute_uri(&req, target.service.key());
    h::strip_hop_by_hop(req.headers_mut());
    // Set by this proxy only: an app's own copy is dropped.
    req.headers_mut().remove(h::ORIG_PROTO);
    if orig_h1 {
        req.headers_mut().insert(h::ORIG_PROTO, HeaderValue::from_static(h::ORIG_PROTO_HTTP1));
    }
    *req.version_mut() = http::Version::HTTP_2;
    let mut replay =
        (target.pinned.is_none() && target.service.recently_broken(started)).then(|| replayable_head(&req)).flatten();
    let mut tried = Vec::new();
    loop {
        // LeastRequest and PeakEWMA: in flight until the response head (or failure) is back.
        let in_flight = target.service.balance.tracks_load().then(|| crate::balance::load::Load::start(&ep.health));
        let sent = send(ctx, target, &ep, req, connect_timeout).await;
        drop(in_flight);
        match sent {
            Ok(resp) => {
                report(ctx, &target.service, &ep, Outcome::Status(resp.status().as_u16()));
                return (ep, Ok(resp));
            }
            Err(failed) => {
                let (unsent, broke, e) = match failed {
                    Failed::Unsent(req, e) => (Some(*req), false, e),
                    Failed::Broken(e) => (None, true, e),
                    Failed::Other(e) => (None, false, e),
                };
                if let Some(outcome) = outcome_of(&e) {
                    report(ctx, &target.service, &ep, outcome);
                }
                let again = match unsent {
                    Some(req) => req,
                    None => match (broke, replay.take()) {
                        (true, Some(head)) => Request::from_parts(head, h::full("")),
                        _ => return (ep, Err(e)),
                    },
                };
                tried.push(ep.clone());
                match target.other_endpoint(&tried) {
                    Some(next) => {
                        tracing::debug!(error = %e, next = %next.proxy, "request not sent or safe to repeat; trying another endpoint");
                        (ep, req) = (next, again);
                    }
                    None => return (ep, Err(e)),
                }
            }
        }
    }
}

/// A copy of the head of a request that may be sent again after its connection broke: an
/// idempotent method and no body.
fn replayable_head(req: &Request<Body>) -> Option<http::request::Parts> {
    use http::Method;
    let idempotent = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    );
    if !idempotent || !http_body::Body::is_end_stream(req.body()) {
        return None;
    }
    let mut head = Request::new(());
    *head.method_mut() = req.method().clone();
    *head.uri_mut() = req.uri().clone();
    *head.version_mut() = req.version();
    *head.headers_mut() = req.headers().clone();
    Some(head.into_parts().0)
}

/// Why one endpoint's try failed.
enum Failed {
    /// Not sent (a failed connect, or a connection that broke before the request went out,
    /// twice): the request is handed back.
    Unsent(Box<Request<Body>>, ProxyError),
    /// Sent on a connection that broke before the response came.
    Broken(ProxyError),
    Other(ProxyError),
}

async fn send(
    ctx: &Ctx,
    target: &Target,
    ep: &Endpoint,
    mut req: Request<Body>,
    connect_timeout: Option<std::time::Duration>,
) -> Result<Response<Body>, Failed> {
    if ep.plaintext {
        // mTLS DISABLE: in the clear to the workload's address (see `plainout`).
        // Boxed: plaintext is rare, and its future would otherwise grow every request's.
        return Box::pin(ctx.plain.send(target.plain_addr(ep), req)).await.map_err(Failed::Other);
    }
    let sni = target.sni(ep);
    let mut settings = ctx.pool_settings();
    if let Some(t) = connect_timeout {
        settings.connect_timeout = t;
    }
    // A pooled connection can close between the check and the send; the request is then handed
    // back unsent and goes out once more on a fresh connection.
    let mut attempts = 0;
    loop {
        attempts += 1;
        // Circuit breaking: waiting for a connection counts as pending (a ready pooled one
        // returns at once).
        let pending = match target.service.balance.acquire(crate::balance::limits::Limit::PendingRequests) {
            Ok(p) => p,
            Err(limit) => {
                overflowed(ctx, &target.service, limit);
                return Err(Failed::Other(ProxyError::Overflow(limit)));
            }
        };
        let got = ctx.pool.get(ep, &sni, &settings).await;
        drop(pending);
        let (conn, slot) = match got {
            Ok(c) => c,
            Err(e) if matches!(outcome_of(&e), Some(Outcome::ConnectFailure)) => {
                return Err(Failed::Unsent(Box::new(req), e))
            }
            Err(e) => return Err(Failed::Other(e)),
        };
        match conn.send(req).await {
            Ok(mut resp) => {
                h::strip_hop_by_hop(resp.headers_mut());
                return Ok(resp);
            }
            Err(e) => {
                let broke = e.broke_connection();
                if broke {
                    ctx.pool.evict(ep, &sni, slot);
                }
                match e {
                    SendError::Unsent(unsent, _) if attempts < 2 => req = *unsent,
                    SendError::Unsent(unsent, e) => {
                        let e = ProxyError::Connect { addr: ep.proxy, source: std::io::Error::other(e) };
                        return Err(Failed::Unsent(unsent, e));
                    }
                    SendError::Unresponsive(_) => return Err(Failed::Other(ProxyError::PeerUnresponsive(ep.proxy))),
                    e if broke => return Err(Failed::Broken(ProxyError::Upstream(e.into_error().into()))),
                    e => return Err(Failed::Other(ProxyError::Upstream(e.into_error().into()))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri_of(req: Request<()>) -> String {
        absolute_uri(&req, "api.default").to_string()
    }

    #[test]
    fn absolute_uri_for_the_h2_hop() {
        let r = |uri: &str, host: Option<&str>| {
            let mut b = Request::builder().uri(uri);
            if let Some(h) = host {
                b = b.header("host", h);
            }
            uri_of(b.body(()).unwrap())
        };
        assert_eq!(r("/a?b=1", Some("api:8080")), "http://api:8080/a?b=1");
        assert_eq!(r("http://x:1/p", Some("other")), "http://x:1/p");
        assert_eq!(r("https://x/p", None), "http://x/p");
        assert_eq!(r("/p", None), "http://api.default/p");
        assert_eq!(r("/p", Some("bad host")), "http://invalid/");
    }

    fn future_size<'a, A, F>(_: impl FnOnce(&'a AppConn, A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// As `inbound`'s test of the same name: the future of a request with every feature off is
    /// moved per request (into hyper's dispatcher, or a stream's task), so rare paths are boxed.
    #[test]
    fn a_request_future_stays_small() {
        let size = future_size(<AppConn as Handler>::request);
        eprintln!("outbound request future: {size} bytes");
        assert!(size <= 6 * 1024, "the outbound request future grew to {size} bytes");
    }
}
