//! weft-proxy: the data plane. One binary, two modes.
//!
//! ```text
//!  sidecar:   app ──► outbound (explicit 127.0.0.1:<port> | transparent :15001) ══mTLS══► peer inbound :15006 ──► app
//!  gateway:   peer ══mTLS (SNI)══► gateway :15443 ══same TLS, not terminated══► local sidecar inbound
//!  admin:     :15000  /live /ready /metrics /config_dump /tap
//! ```
//!
//! [`Proxy::start`] binds every listener (port 0 works and reports what it bound) and runs them on
//! the current tokio runtime. Routes and certificates are swapped atomically while it runs.
#![forbid(unsafe_code)]

pub mod accesslog;
mod admin;
mod app;
pub mod authn;
pub mod authz;
pub mod balance;
mod budget;
pub mod cli;
pub mod control;
mod cork;
pub mod detect;
mod drain;
pub mod error;
mod gateway;
mod h1;
mod h2body;
mod h2server;
pub mod httputil;
mod identity;
mod inbound;
pub mod iptables;
pub mod jwt;
mod loglimit;
pub mod metrics;
pub mod naming;
pub mod net;
mod opaque;
mod outbound;
pub mod outlier;
mod peer;
mod peerauth;
mod plainout;
mod pool;
pub mod resilience;
pub mod route;
pub mod routes;
pub mod sni;
pub mod stats;
pub mod tap;
pub mod trace;
pub mod workers;

use arc_swap::ArcSwap;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use weft_api::proxy::{Mode, ProxyConfig};
use weft_identity::CertStore;

pub use identity::{load_identity, IdentityError};
pub use routes::Routes;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("config: {0}")]
    Config(#[from] weft_api::ConfigError),
    #[error("cannot listen for {what} on {addr}: {source} (is another process using the port?)")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("identity: {0}")]
    Identity(#[from] weft_identity::Error),
}

/// Everything the data path shares. One per proxy.
pub struct Ctx {
    pub cfg: ProxyConfig,
    pub routes: ArcSwap<Routes>,
    pub certs: CertStore,
    pub tls: net::Tls,
    pub metrics: metrics::Metrics,
    registry: Registry,
    /// What HTTP/2 streams and connections may buffer (`limits`), see [`budget`].
    budget: Arc<budget::Budget>,
    pool: pool::Pool,
    drain: drain::Drain,
    /// Connections open from peers (inbound, gateway listeners), `limits.max_connections`.
    peer_slots: drain::Slots,
    /// Connections open from apps (outbound listeners), `limits.max_connections`.
    app_slots: drain::Slots,
    /// HTTP/1 connections: from apps (HTTP/2 goes to [`h2server`]), and `http/1.1` ones from
    /// peers (upgrades).
    server: hyper::server::conn::http1::Builder,
    apps: app::AppClients,
    /// HTTP clients for endpoints whose workload has mTLS DISABLE (see [`plainout`]).
    plain: plainout::PlainClients,
    /// Where accepted connections run (see [`workers`]).
    workers: workers::Workers,
    /// This proxy's SPIFFE ID, as a metric label.
    id_label: metrics::Name,
    ready: AtomicBool,
    /// What the listeners actually bound (ports 0 resolved), for `/config_dump`.
    bound: std::sync::OnceLock<Addrs>,
    /// Rate limits of the warnings a remote party can trigger (see [`loglimit`]).
    logs: loglimit::LogLimits,
    /// Endpoint health that outlives routing tables (see [`outlier`]).
    outliers: outlier::Store,
    outlier_metrics: outlier::Metrics,
    /// `weft_route_*` (see [`route`]).
    route_metrics: route::Metrics,
    /// Where this proxy runs (cluster, locality), for locality priority: the config's, or what
    /// the control plane says of the Workload it fronts.
    place: std::sync::Mutex<(String, String)>,
    /// Compiled ResiliencePolicies, their metrics and the inbound rate limit (see [`resilience`]).
    resilience: resilience::State,
    /// Compiled AuthorizationPolicies and their metrics (see [`authz`]).
    authz: authz::State,
    /// MeshConfig `extensionProviders` from the control plane: the external authorizers of CUSTOM
    /// authorization (see [`authz::custom::check`]).
    pub ext_authz: authz::ext::Providers,
    /// RequestAuthentication in force on inbound HTTP (see [`jwt`]).
    jwt: jwt::State,
    /// Live taps open on this proxy (see [`tap`]).
    pub taps: tap::Taps,
    /// Access logs, when a Telemetry or the config file turns them on (see [`accesslog`]).
    pub access_log: accesslog::AccessLog,
    /// Distributed tracing: spans and their export (see [`trace`]); off unless configured.
    pub tracing: trace::State,
}

impl Ctx {
    /// Serving and not draining (what `/ready` reports).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.drain.is_draining()
    }

    fn mark(&self) -> u32 {
        self.cfg.mark()
    }

    /// A routing table for `services`, balanced from where this proxy runs, with the endpoint
    /// health this proxy has seen so far.
    pub fn routes_for(&self, services: &[weft_api::proxy::Service]) -> Result<Routes, weft_api::ConfigError> {
        let policies = self.resilience.compile(wanted_policies(services));
        self.with_env(|env| Routes::from_services_in(services, env, &policies))
    }

    /// The routing table after an incremental update on top of `prev` (see
    /// [`Routes::from_changes`]): `keys` are every service's key after it, `changed` the
    /// services it added or changed. Only those are built (and their policies compiled); every
    /// other service is `prev`'s, balancer and all.
    pub fn routes_changed(
        &self,
        prev: &Routes,
        keys: &[String],
        changed: &[weft_api::proxy::Service],
    ) -> Result<Routes, weft_api::ConfigError> {
        let policies = self.resilience.compile_more(wanted_policies(changed));
        self.with_env(|env| Routes::from_changes(prev, keys, changed, env, &policies))
    }

    /// Balancing's view of where this proxy runs and what it has seen of endpoint health.
    fn with_env<R>(&self, f: impl FnOnce(&balance::Env) -> R) -> R {
        let place = self.place();
        f(&balance::Env {
            cluster: &place.0,
            locality: &place.1,
            outlier: &self.cfg.outlier_detection,
            store: &self.outliers,
        })
    }

    /// Where this proxy's workload runs, as balancing sees it: (cluster, locality).
    pub fn place(&self) -> (String, String) {
        self.place.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Where the control plane says this proxy's workload runs (a locality in the config wins).
    pub fn set_place(&self, cluster: &str, locality: &str) {
        let mut place = self.place.lock().unwrap_or_else(|p| p.into_inner());
        if !cluster.is_empty() {
            place.0 = cluster.to_string();
        }
        if self.cfg.locality.is_empty() {
            place.1 = locality.to_string();
        }
    }

    /// The protocol of an inbound app port: the local `inbound.ports` first, then the ports the
    /// control plane sent for this proxy's workload. `None`: not an app port of this sidecar.
    fn app_port(&self, port: u16) -> Option<weft_api::proxy::Protocol> {
        let local = self.cfg.inbound.as_ref().and_then(|i| i.ports.iter().find(|p| p.port == port));
        local.map(|p| p.protocol).or_else(|| self.routes.load().inbound_port(port))
    }

    /// Whether CONNECT tunnels may reach the app on `port` (`allow_connect`, from the same place
    /// as [`Ctx::app_port`]'s protocol).
    fn allows_connect(&self, port: u16) -> bool {
        let local = self.cfg.inbound.as_ref().and_then(|i| i.ports.iter().find(|p| p.port == port));
        local.map(|p| p.allow_connect).unwrap_or_else(|| self.routes.load().inbound_allows_connect(port))
    }

    /// The mTLS mode of an inbound app port (from the same place as [`Ctx::app_port`]'s
    /// protocol): the port's own `mtls`, else the control plane's for it, else `inbound.mtls`.
    fn mtls_mode(&self, port: u16) -> weft_api::peer_authentication::MtlsMode {
        let inbound = self.cfg.inbound.as_ref();
        let local = inbound.and_then(|i| i.ports.iter().find(|p| p.port == port)).and_then(|p| p.mtls);
        local.or_else(|| self.routes.load().inbound_mtls(port)).or(inbound.map(|i| i.mtls)).unwrap_or_default()
    }

    fn h2_settings(&self) -> h2server::Settings {
        h2server::Settings {
            max_header_list_size: self.cfg.limits.max_header_bytes as u32,
            handshake_timeout: self.cfg.timeouts.header_read.into(),
            budget: self.budget.clone(),
        }
    }

    fn app_host(&self) -> std::net::IpAddr {
        self.cfg.inbound.as_ref().map(|i| i.app_host).unwrap_or(std::net::Ipv4Addr::LOCALHOST.into())
    }

    fn pool_settings(&self) -> pool::Settings<'_> {
        pool::Settings {
            tls: &self.tls,
            mark: self.mark(),
            connect_timeout: self.cfg.timeouts.connect.into(),
            metrics: &self.metrics,
            budget: &self.budget,
            keep_alive: peer::KeepAlive {
                interval: self.cfg.timeouts.peer_keepalive.into(),
                timeout: self.cfg.timeouts.peer_keepalive_timeout.into(),
            },
        }
    }
}

/// The addresses a started proxy listens on.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Addrs {
    pub admin: Option<SocketAddr>,
    pub inbound: Option<SocketAddr>,
    pub transparent: Option<SocketAddr>,
    /// In the order of `outbound.upstreams`.
    pub upstreams: Vec<SocketAddr>,
    pub gateway: Option<SocketAddr>,
}

/// A running proxy.
pub struct Proxy {
    pub addrs: Addrs,
    ctx: Arc<Ctx>,
    tasks: Vec<JoinHandle<()>>,
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Bind { what, addr, source })
}

fn local(l: &TcpListener) -> Option<SocketAddr> {
    l.local_addr().ok()
}

/// One multiplexed connection per core to each peer (at most 8), and at least one per worker so
/// that no worker drives another's connection.
fn default_connections_per_peer(workers: usize) -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(8).max(workers)
}

impl Proxy {
    /// Validates `cfg`, binds every listener and starts serving on the current runtime.
    pub async fn start(cfg: ProxyConfig, certs: CertStore) -> Result<Proxy, StartError> {
        Proxy::start_on(cfg, certs, workers::Workers::default()).await
    }

    /// Like [`Proxy::start`], but accepted connections are spread over `workers` (thread-per-core,
    /// see [`workers`]); listeners, admin and control-plane tasks run on the current runtime.
    pub async fn start_on(cfg: ProxyConfig, certs: CertStore, workers: workers::Workers) -> Result<Proxy, StartError> {
        cfg.validate()?;
        let outliers = outlier::Store::default();
        let mut registry = Registry::default();
        let resilience = resilience::State::new(resilience::Metrics::register(&mut registry));
        let authz = authz::State::new(
            authz::Metrics::register(&mut registry),
            cfg.inbound.as_ref().and_then(|i| i.authorization.as_ref()),
            certs.id().trust_domain(),
        );
        let jwt = jwt::State::new(jwt::Metrics::register(&mut registry));
        let access_log =
            accesslog::AccessLog::new(accesslog::Metrics::register(&mut registry), cfg.access_log.as_ref());
        jwt.update(&jwt::from_config(&cfg));
        let policies = resilience.compile(wanted_policies(&cfg.services));
        let routes = Routes::from_services_in(
            &cfg.services,
            &balance::Env {
                cluster: &cfg.cluster,
                locality: &cfg.locality,
                outlier: &cfg.outlier_detection,
                store: &outliers,
            },
            &policies,
        )?
        .with_names(&cfg.cluster, &Routes::config_vips(&cfg));
        let metrics = metrics::Metrics::new(&mut registry);
        let outlier_metrics = outlier::Metrics::register(&mut registry);
        let route_metrics = route::Metrics::register(&mut registry);
        let ext_authz = authz::ext::Providers::with_metrics(cfg.mark(), authz::ext::Metrics::register(&mut registry));
        metrics.cert_expiry.set(identity::expiry_secs(&certs.leaf()));
        let tracing = trace::State::new(
            trace::Metrics::register(&mut registry),
            cfg.mark(),
            cfg.tracing.clone(),
            trace::Resource {
                identity: certs.id().to_string(),
                namespace: certs.id().namespace().to_string(),
                service_account: certs.id().service_account().to_string(),
                cluster: cfg.cluster.clone(),
            },
        );
        let mut server = hyper::server::conn::http1::Builder::new();
        server
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from(cfg.timeouts.header_read))
            .max_buf_size(cfg.limits.max_header_bytes.max(8192));
        let connect_timeout = cfg.timeouts.connect.into();
        let budget = budget::Budget::new(cfg.limits.clone(), &metrics);
        let slots = |cfg: &ProxyConfig, m: &metrics::Metrics, from: &'static str| {
            let l = metrics::Listener { from };
            drain::Slots::new(
                cfg.limits.max_connections,
                m.connections_open.get_or_create(&l).clone(),
                m.connections_at_limit.get_or_create(&l).clone(),
            )
        };
        let peer_slots = slots(&cfg, &metrics, "peer");
        let app_slots = slots(&cfg, &metrics, "app");
        let taps = tap::Taps::default();
        taps.register(&mut registry);
        let ctx = Arc::new(Ctx {
            taps,
            routes: ArcSwap::from_pointee(routes),
            tls: net::Tls::new(&certs)?,
            id_label: metrics::Name::new(certs.id().to_string()),
            certs,
            metrics,
            registry,
            pool: pool::Pool::new(
                cfg.outbound
                    .as_ref()
                    .and_then(|o| o.connections_per_peer)
                    .unwrap_or_else(|| default_connections_per_peer(workers.count())),
                workers.count(),
            ),
            drain: drain::Drain::default(),
            peer_slots,
            app_slots,
            server,
            apps: match &cfg.inbound {
                Some(inb) => app::AppClients::new(
                    inb.app_host,
                    inb.ports.iter().map(|p| p.port),
                    cfg.outbound.as_ref().map(|o| o.effective_mark()).unwrap_or(0),
                    connect_timeout,
                    workers.count(),
                    budget.clone(),
                ),
                None => app::AppClients::default(),
            },
            plain: plainout::PlainClients::new(
                cfg.outbound.as_ref().map(|o| o.effective_mark()).unwrap_or(0),
                connect_timeout,
                workers.count(),
                budget.clone(),
            ),
            workers,
            budget,
            ready: AtomicBool::new(false),
            bound: std::sync::OnceLock::new(),
            logs: loglimit::LogLimits::default(),
            outliers,
            outlier_metrics,
            route_metrics,
            place: std::sync::Mutex::new((cfg.cluster.clone(), cfg.locality.clone())),
            resilience,
            authz,
            ext_authz,
            jwt,
            access_log,
            tracing,
            cfg,
        });

        let mut addrs = Addrs::default();
        let mut tasks = vec![];
        let admin = bind("admin", ctx.cfg.admin.listen).await?;
        addrs.admin = local(&admin);
        match ctx.cfg.mode {
            Mode::Sidecar => {
                if let Some(inb) = &ctx.cfg.inbound {
                    let l = bind("inbound", inb.listen).await?;
                    addrs.inbound = local(&l);
                    tasks.push(tokio::spawn(inbound::serve(ctx.clone(), l)));
                }
                if let Some(out) = &ctx.cfg.outbound {
                    if let Some(t) = out.transparent {
                        let l = bind("transparent outbound", t).await?;
                        addrs.transparent = local(&l);
                        tasks.push(tokio::spawn(outbound::serve_transparent(ctx.clone(), l)));
                    }
                    for up in &out.upstreams {
                        let l = bind("upstream", up.listen).await?;
                        addrs.upstreams.extend(local(&l));
                        tasks.push(tokio::spawn(outbound::serve_upstream(ctx.clone(), l, up.clone())));
                    }
                }
            }
            Mode::Gateway => {
                if let Some(gw) = &ctx.cfg.gateway {
                    let l = bind("gateway", gw.listen).await?;
                    addrs.gateway = local(&l);
                    tasks.push(tokio::spawn(gateway::serve(ctx.clone(), l)));
                }
            }
        }
        tasks.push(tokio::spawn(admin::serve(ctx.clone(), admin)));
        tasks.push(tokio::spawn(flush_logs(Arc::downgrade(&ctx))));
        let _ = ctx.bound.set(addrs.clone());
        // With a control plane, ready means "has its first config" (set by the discovery loop).
        ctx.ready.store(ctx.cfg.control.is_none(), Ordering::Release);
        tracing::info!(id = %ctx.certs.id(), mode = ?ctx.cfg.mode, ?addrs, "weft-proxy ready");
        Ok(Proxy { addrs, ctx, tasks })
    }

    pub fn ctx(&self) -> &Arc<Ctx> {
        &self.ctx
    }

    pub fn certs(&self) -> &CertStore {
        &self.ctx.certs
    }

    /// Replaces the routing table (e.g. after a config reload); connections in flight keep theirs.
    pub fn set_routes(&self, routes: Routes) {
        self.ctx.routes.store(Arc::new(routes));
    }

    /// Connections open now on the data-plane listeners.
    pub fn open_connections(&self) -> usize {
        self.ctx.drain.open_connections()
    }

    /// The Prometheus text exposition, as `/metrics` serves it.
    pub fn metrics_text(&self) -> String {
        admin::encode_metrics(&self.ctx)
    }

    /// Watches the identity files and installs rotated certificates (see `identity.reload_interval`).
    pub fn watch_identity_files(&mut self) {
        self.tasks.push(tokio::spawn(identity::reload_loop(self.ctx.clone())));
    }

    /// Follows the control plane: routes from the discovery stream, certificate renewal at
    /// half-life. Returns the proxy id it reports as.
    pub fn follow_control_plane(&mut self, mut control: weft_api::proxy::Control) -> String {
        // Ask only for what the upstream listeners call, unless transparent mode needs everything.
        if let Some(out) =
            self.ctx.cfg.outbound.as_ref().filter(|o| o.transparent.is_none() && control.upstreams.is_empty())
        {
            control.upstreams = out
                .upstreams
                .iter()
                .map(|u| {
                    if u.service.contains('.') {
                        u.service.clone()
                    } else {
                        format!("{}.{}", u.service, weft_api::proxy::DEFAULT_NAMESPACE)
                    }
                })
                .collect();
        }
        let id = self.ctx.certs.id();
        let proxy_id =
            control.proxy_id.clone().unwrap_or_else(|| format!("{}-{}", id.service_account(), std::process::id()));
        self.tasks.push(tokio::spawn(control::discovery_loop(self.ctx.clone(), control.clone(), proxy_id.clone())));
        self.tasks.push(tokio::spawn(control::rotation_loop(self.ctx.clone(), control)));
        proxy_id
    }

    /// Graceful drain: stop accepting, let open connections finish (up to `timeouts.drain`), stop.
    /// Returns how many connections were still open when it gave up.
    pub async fn shutdown(self) -> usize {
        self.ctx.ready.store(false, Ordering::Release);
        let left = self.ctx.drain.drain(self.ctx.cfg.timeouts.drain.into()).await;
        for t in &self.tasks {
            t.abort();
        }
        left
    }
}

/// Who opens a listener's connections: which `limits.max_connections` count it draws on.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Side {
    /// Peer proxies and remote clients (inbound, gateway).
    Peer,
    /// Local apps (outbound listeners).
    App,
}

/// Accepts until drain starts; each connection runs on its own task and holds a drain guard and
/// a connection slot. With no free slot (`limits.max_connections` open) it stops accepting until
/// one closes: new connections wait in the listen backlog. With workers, the task runs on the next
/// worker (round robin) and the socket is registered with that worker's reactor, so its readiness
/// events wake that thread only.
pub(crate) async fn accept_loop<F, Fut>(ctx: &Arc<Ctx>, listener: TcpListener, side: Side, handler: F)
where
    F: Fn(Arc<Ctx>, TcpStream, SocketAddr) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = match side {
        Side::Peer => &ctx.peer_slots,
        Side::App => &ctx.app_slots,
    };
    let at_limit = || {
        loglimit::warn_limited!(
            ctx.logs,
            loglimit::Kind::ConnectionLimit,
            std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            from = ?side,
            max_connections = ctx.cfg.limits.max_connections,
            "limits.max_connections connections are open; not accepting more until one closes"
        );
    };
    loop {
        let mut slot = tokio::select! {
            slot = slots.take(at_limit) => slot,
            _ = ctx.drain.signaled() => break,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    slot.opened();
                    let guard = (ctx.drain.conn(), slot);
                    match ctx.workers.next() {
                        None => {
                            let fut = handler(ctx.clone(), stream, peer);
                            tokio::spawn(async move {
                                fut.await;
                                drop(guard);
                            });
                        }
                        Some(worker) => {
                            let std = match stream.into_std() {
                                Ok(s) => s,
                                Err(e) => {
                                    tracing::debug!(error = %e, "cannot hand over an accepted connection");
                                    continue;
                                }
                            };
                            let (ctx, handler) = (ctx.clone(), handler.clone());
                            worker.spawn(async move {
                                match TcpStream::from_std(std) {
                                    Ok(stream) => handler(ctx, stream, peer).await,
                                    Err(e) => tracing::debug!(error = %e, "cannot register an accepted connection"),
                                }
                                drop(guard);
                            });
                        }
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = ctx.drain.signaled() => break,
        }
    }
}

/// What serves the requests of one accepted HTTP connection: a peer's (inbound) or an app's
/// (outbound). [`serve_http`] and [`h2server::serve`] call it.
pub(crate) trait Handler: Send + Sync + 'static {
    /// A request to forward.
    fn request(
        &self,
        req: http::Request<httputil::Body>,
    ) -> impl Future<Output = http::Response<httputil::Body>> + Send;
    /// An HTTP/1.1 upgrade (WebSocket) or a CONNECT (HTTP/1.1 or HTTP/2), to be joined to a
    /// tunnel: `downstream` yields the caller's side once the response that opens it is sent.
    fn upgrade(
        &self,
        req: http::Request<httputil::Body>,
        downstream: httputil::Downstream,
    ) -> impl Future<Output = http::Response<httputil::Body>> + Send;
}

/// Serves HTTP/1.x on `io` with hyper until it closes or drain starts, then closes it gracefully
/// (`Connection: close` after the response in flight). HTTP/2 never comes here: detection and
/// ALPN send it to [`h2server::serve`].
pub(crate) async fn serve_http<I, H: Handler>(
    ctx: &Arc<Ctx>,
    io: I,
    handler: Arc<H>,
    src: SocketAddr,
    direction: metrics::Direction,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Whether a request head arrived: a header-read timeout after one closes an idle
    // keep-alive connection, not a client too slow to send its head.
    let served = Arc::new(AtomicBool::new(false));
    let seen = served.clone();
    let service = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        seen.store(true, Ordering::Relaxed);
        let handler = handler.clone();
        // Boxed: a pointer's size for hyper to move around, for one allocation; the rare upgrade
        // path boxed again so that it does not grow every request's future.
        Box::pin(async move {
            Ok::<_, std::convert::Infallible>(if httputil::is_upgrade(&req) {
                let downstream = httputil::hyper_downstream(&mut req);
                Box::pin(handler.upgrade(req.map(httputil::boxed), downstream)).await
            } else if hyper::body::Body::is_end_stream(req.body()) {
                handler.request(req.map(httputil::boxed)).await
            } else {
                // A body the client framed wrongly is the client's error (400), not the peer's.
                let failed = Arc::new(std::sync::OnceLock::new());
                let req = req.map(|b| httputil::watch_errors(b, failed.clone()));
                httputil::blame_client(handler.request(req).await, &failed)
            })
        })
    });
    let conn = ctx.server.serve_connection(TokioIo::new(io), service).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                if e.is_timeout() && !served.load(Ordering::Relaxed) {
                    header_read_timeout(ctx, src, direction);
                } else {
                    tracing::debug!(error = %e, "http connection ended with error");
                }
            }
        }
        _ = ctx.drain.signaled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// A client that sent no complete request head (HTTP/1) or connection preface (HTTP/2) within
/// `timeouts.header_read`: counted (`weft_protocol_errors_total{reason="header_read"}`) and
/// logged, rate limited.
pub(crate) fn header_read_timeout(ctx: &Ctx, src: SocketAddr, direction: metrics::Direction) {
    ctx.metrics.protocol_error(direction, "header_read");
    loglimit::warn_limited!(
        ctx.logs,
        loglimit::Kind::HeaderRead,
        src.ip(),
        %src,
        direction = ?direction,
        "no complete request head within timeouts.header_read ({:?}), connection closed",
        Duration::from(ctx.cfg.timeouts.header_read)
    );
}

/// Writes the counts of rate-limited warnings that no later line reported (see [`loglimit`]).
async fn flush_logs(ctx: std::sync::Weak<Ctx>) {
    let mut tick = tokio::time::interval(loglimit::EVERY);
    loop {
        tick.tick().await;
        let Some(ctx) = ctx.upgrade() else { return };
        weft_api::flush_limited!(ctx.logs);
    }
}

/// Every ResiliencePolicy of `services` to compile: each service's (by its key) and each route
/// rule's (by [`route::policy_key`]).
fn wanted_policies(
    services: &[weft_api::proxy::Service],
) -> impl Iterator<Item = (String, &weft_api::resilience::Resilience)> + '_ {
    services
        .iter()
        .filter_map(|s| Some((s.key(), s.resilience.as_ref()?)))
        .chain(services.iter().flat_map(|s| route::rule_policies(&s.routes)))
}
