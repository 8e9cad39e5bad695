//! Assembles and runs a control plane: store, tokens, CA, registry, gRPC (Identity, Discovery),
//! HTTP API.

use crate::api::{self, ApiState};
use crate::ca::{self, PluginCa};
use crate::discovery::{DiscoveryService, Proxies};
use crate::registry::{self, FileSource, Health, Source};
use crate::tokens::{write_private, Grant, Tokens};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use weft_api::kinds::MeshConfigSpec;
use weft_api::pb;
use weft_api::resource::{Kind, Metadata, Resource, Typed};
use weft_store::Store;

pub const DEFAULT_GRPC: &str = "127.0.0.1:15012";
pub const DEFAULT_API: &str = "127.0.0.1:15080";

#[derive(Clone, Debug)]
pub struct ControlConfig {
    pub data_dir: PathBuf,
    pub grpc: SocketAddr,
    pub api: SocketAddr,
    /// Serve the web dashboard here (loopback only; [`crate::dashboard`]). None: no dashboard.
    pub dashboard: Option<SocketAddr>,
    /// Serve the control plane's Prometheus metrics here, plain HTTP, no token
    /// ([`crate::metrics`]; istiod's 15014). None: no metrics listener.
    pub metrics: Option<SocketAddr>,
    pub plugin_ca: Option<PluginCa>,
    /// Resources read from a file (the registry's first source).
    pub registry_file: Option<PathBuf>,
    /// Used when the store holds no MeshConfig yet (first start).
    pub mesh: MeshConfigSpec,
    /// Serve DNS for mesh names here (UDP and TCP).
    pub dns: Option<SocketAddr>,
    /// Where DNS forwards names it does not know; none: NXDOMAIN/REFUSED.
    pub dns_upstream: Option<SocketAddr>,
    /// DNS's UDP receive buffer in bytes (`weft_dns::DnsConfig::udp_receive_buffer`).
    pub dns_udp_receive_buffer: usize,
    /// Allow script and Docker checks, which run commands on the control plane's host (Consul's
    /// `enable_script_checks`). Off by default.
    pub enable_script_checks: bool,
    /// The most discovery streams one token may hold open at once.
    pub max_streams_per_token: usize,
    /// The HTTP API's header-read and request timeouts and connection cap.
    pub api_limits: crate::http_serve::Limits,
    /// TLS on the HTTP API (the default) or plaintext on loopback, and the certificate's extra names.
    pub api_tls: crate::api_tls::ApiTls,
    /// Secrets of the external CA MeshConfig `ca` may select (`weft control` reads them from its
    /// environment: [`crate::signer::CaCredentials::from_env`]).
    pub ca_credentials: crate::signer::CaCredentials,
    /// How often proxies send their golden metrics (`--stats-interval`); 0: their default, 10 s.
    pub stats_interval_ms: u64,
    /// The most metric series the history keeps (`--stats-max-series`).
    pub stats_max_series: usize,
    /// Answer `/v1/stats` from this Prometheus (`--prometheus-url`) instead of the history.
    pub prometheus_url: Option<String>,
}

impl ControlConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        ControlConfig {
            data_dir,
            grpc: DEFAULT_GRPC.parse().expect("constant"),
            api: DEFAULT_API.parse().expect("constant"),
            dashboard: None,
            metrics: None,
            plugin_ca: None,
            registry_file: None,
            mesh: MeshConfigSpec::default(),
            dns: None,
            dns_upstream: None,
            dns_udp_receive_buffer: weft_dns::DEFAULT_UDP_RECEIVE_BUFFER,
            enable_script_checks: false,
            max_streams_per_token: crate::discovery::DEFAULT_MAX_STREAMS_PER_TOKEN,
            api_limits: crate::http_serve::DEFAULT_LIMITS,
            api_tls: Default::default(),
            ca_credentials: Default::default(),
            stats_interval_ms: 0,
            stats_max_series: crate::stats::DEFAULT_MAX_SERIES,
            prometheus_url: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("store: {0}")]
    Store(#[from] weft_store::StoreError),
    #[error(transparent)]
    Dashboard(#[from] crate::dashboard::DashboardError),
    #[error("CA: {0}")]
    Ca(#[from] ca::CaError),
    #[error("registry file: {0}")]
    RegistryFile(String),
    #[error("DNS: {0}")]
    Dns(#[from] weft_dns::DnsError),
    #[error("the control plane's serving certificate: {0}")]
    Serving(#[from] weft_identity::Error),
    #[error("{0}")]
    ApiTls(#[from] crate::api_tls::ApiTlsError),
    #[error("cannot listen for {what} on {addr}: {source} (is another control plane running?)")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("metrics history: {0}")]
    Stats(String),
}

/// A running control plane.
pub struct ControlPlane {
    pub grpc_addr: SocketAddr,
    pub api_addr: SocketAddr,
    /// Whether the HTTP API is on TLS (the default; plaintext only with `--api-plaintext`).
    pub api_tls: bool,
    /// A file holding the root the API's certificate chains to, for clients on this host
    /// (`WEFT_CA_FILE`): `<data-dir>/ca/root.pem`, or a plug-in CA's chain file.
    pub api_ca_file: PathBuf,
    pub store: Store,
    pub tokens: Arc<Tokens>,
    pub proxies: Proxies,
    /// The admin token (also in `<data-dir>/admin.token`, 0600).
    pub admin_token: String,
    pub dns_addr: Option<SocketAddr>,
    /// The web dashboard, when `ControlConfig::dashboard` asked for one: its address and login URLs.
    pub dashboard: Option<Arc<crate::dashboard::Dashboard>>,
    /// Where `/metrics` is served (`ControlConfig::metrics`), as bound.
    pub metrics_addr: Option<SocketAddr>,
    /// Where the root CA's key is (on this host, offline, or a plug-in CA's).
    pub root_key: crate::ca::RootKey,
    pub monitor: weft_health::Monitor,
    /// The catalog as discovery and DNS see it, updated on every change.
    pub catalog: tokio::sync::watch::Receiver<Arc<crate::catalog::Catalog>>,
    ca: Arc<crate::rotation::CaState>,
    /// The serving certificate (gRPC and the HTTP API), renewed in place.
    serving: weft_identity::CertStore,
    tasks: Vec<JoinHandle<()>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Drop for ControlPlane {
    /// Stops listening and ends every discovery stream (proxies keep their config and reconnect),
    /// and saves the health-check state not saved yet (blocks on disk I/O).
    fn drop(&mut self) {
        self.stop.send_replace(true);
        for t in &self.tasks {
            t.abort();
        }
        self.monitor.flush();
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ControlError> {
    TcpListener::bind(addr).await.map_err(|source| ControlError::Bind { what, addr, source })
}

impl ControlPlane {
    /// Stops everything and waits (up to 5 s) until the store is closed, so that a new control
    /// plane can open the same data directory right away. Dropping stops too, without waiting.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        for t in std::mem::take(&mut self.tasks) {
            t.abort();
            let _ = t.await;
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.store.handles() > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// The API's URL: `https://ADDR`, or `http://ADDR` with `--api-plaintext`.
    pub fn api_url(&self) -> String {
        format!("{}://{}", if self.api_tls { "https" } else { "http" }, self.api_addr)
    }

    /// The root that the HTTP API's certificate chains to (PEM; what `weft ca --pem` prints and
    /// `<data-dir>/ca/root.pem` holds for weft's own CA).
    pub fn api_root_pem(&self) -> String {
        crate::api::root_pem(&self.ca.serving_ca())
    }

    /// A client config for the HTTP API that trusts this mesh's roots (for tests and in-process
    /// callers): [`ControlPlane::api_root_pem`], and the new root too during a `weft ca rotate`,
    /// so that no call fails while the serving certificate switches roots.
    pub fn api_client_config(&self) -> Result<rustls::ClientConfig, weft_identity::Error> {
        let roots: Vec<_> = self.ca.roots().into_iter().map(rustls::pki_types::CertificateDer::from).collect();
        weft_identity::https::client_config(&roots)
    }

    /// A server config presenting the HTTP API's certificate (renewed with it), for another
    /// HTTPS listener of this control plane to serve with ([`crate::http_serve::serve`] takes it).
    pub fn https_server_config(&self) -> Result<rustls::ServerConfig, weft_identity::Error> {
        weft_identity::https::server_config(&self.serving)
    }

    /// [`ControlPlane::api_client_config`] when the API is on TLS; `None` with `--api-plaintext`.
    pub fn api_client_tls(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.api_tls.then(|| self.api_client_config().map(Arc::new).ok()).flatten()
    }

    pub async fn start(cfg: ControlConfig) -> Result<ControlPlane, ControlError> {
        // Plaintext only on loopback, and only when asked for: refused before anything is made.
        cfg.api_tls.validate(cfg.api)?;
        let dir_err = |source| ControlError::DataDir { path: cfg.data_dir.display().to_string(), source };
        // Only its owner may read the data directory (CA keys, token key): 0700 before anything
        // is written into it.
        crate::datadir::create_private(&cfg.data_dir).map_err(dir_err)?;
        let store = Store::open(&cfg.data_dir.join("store"))?;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let tokens = Arc::new(Tokens::open(&cfg.data_dir).map_err(dir_err)?);
        let admin_path = cfg.data_dir.join("admin.token");
        // The bootstrap admin token: made at first start (and again if it was revoked or no longer
        // verifies), printed once in the log and kept in `admin.token` (0600) for the CLI on this
        // host.
        let admin_token = match std::fs::read_to_string(&admin_path) {
            Ok(t) if tokens.verify(&t) == Ok(Grant::Admin) => t.trim().to_string(),
            _ => {
                let (t, _) = tokens
                    .create(Grant::Admin, None, None, Some("bootstrap-admin".into()))
                    .map_err(|(_, e)| dir_err(e))?;
                write_private(&admin_path, t.as_bytes()).map_err(dir_err)?;
                tracing::warn!(
                    path = %admin_path.display(),
                    "a new bootstrap admin token was issued (shown once here; also in the file, 0600): {t}"
                );
                t
            }
        };
        let audit = Arc::new(crate::audit::Audit::open(&cfg.data_dir).map_err(dir_err)?);

        // The mesh's settings: stored on first start so that every later start agrees.
        let mesh = match store.list(Some(Kind::MeshConfig), None)?.into_iter().next() {
            Some(Resource::MeshConfig(m)) => m.spec,
            _ => {
                let r = Resource::MeshConfig(Typed {
                    metadata: Metadata {
                        name: "mesh".into(),
                        namespace: "default".into(),
                        labels: Default::default(),
                        resource_version: None,
                        creation_revision: None,
                    },
                    spec: cfg.mesh.clone(),
                });
                store.apply(vec![r])?;
                cfg.mesh.clone()
            }
        };
        let ca_state = crate::rotation::CaState::open(
            &cfg.data_dir,
            &mesh.trust_domain,
            &mesh.cluster.name,
            cfg.plugin_ca.as_ref(),
        )?;
        let authority = ca_state.serving_ca();
        // The serving certificate (gRPC and the HTTP API) names the API's addresses.
        ca_state.set_serving_names(cfg.api_tls.names(cfg.api));

        // Everything weft keeps there, made now or by an older version: 0700 / 0600.
        crate::datadir::secure(&cfg.data_dir).map_err(dir_err)?;

        let mut sources: Vec<Arc<dyn Source>> = vec![];
        if let Some(f) = &cfg.registry_file {
            let (scripts, mesh) = (cfg.enable_script_checks, mesh.clone());
            let admit: registry::Admit = Box::new(move |rs| crate::api::admit_rules(scripts, &mesh, rs));
            sources.push(Arc::new(FileSource::start(f.clone(), admit).map_err(ControlError::RegistryFile)?));
        }
        sources.push(Arc::new(store.clone()));
        let proxies = Proxies::default();
        // Linked clusters' services and roots (`weft link`).
        let federation = Arc::new(crate::federation::Federation::open(&cfg.data_dir.join("links")));
        let link_local = crate::federation::import::Local {
            cluster: mesh.cluster.name.clone(),
            trust_domain: mesh.trust_domain.clone(),
            ca: ca_state.clone(),
            dir: cfg.data_dir.join("links"),
            proxies: proxies.clone(),
        };
        crate::federation::import::restore(&store, &federation, &link_local);
        sources.push(federation.clone());
        // The CA's roots (both during a root rotation) reach proxies and links through the catalog.
        sources.push(ca_state.clone());
        // Stored script and Docker checks run only while the flag is on (not just when written).
        // Check state is saved in the store and resumed from it.
        let saved = Arc::new(crate::health::StoreCheckState(store.downgrade()));
        let monitor = weft_health::Monitor::with_store(cfg.enable_script_checks, saved);
        crate::health::sync_checks(sources.clone(), monitor.clone(), store.clone(), stop_rx.clone());
        let m = monitor.clone();
        let health: Health = Arc::new(move |w| crate::health::healthy(&m, w));
        // Virtual IPs stay with their names across restarts (`<data-dir>/vips.json`).
        let vips = Arc::new(crate::vips::Vips::open(cfg.data_dir.join("vips.json")));
        let catalog = registry::run(sources, health, monitor.subscribe(), stop_rx.clone(), vips);

        let bundle = vec![authority.root().to_vec()];
        // Bootstrap tokens carry the root's SHA-256: proxies check the gRPC listener against it.
        // and the trust domain: proxies expect that domain's control identity.
        tokens.set_ca(&weft_identity::control::sha256(authority.root()), &mesh.trust_domain);
        // And this cluster's name: proxies send its reserved SNI, so a gateway in front of this
        // control plane (primary-remote) forwards them here.
        tokens.set_cluster(&mesh.cluster.name);
        let mut stats = crate::stats::Stats::new(cfg.stats_max_series);
        stats.interval_ms = cfg.stats_interval_ms;
        if let Some(url) = &cfg.prometheus_url {
            stats.prometheus = Some(crate::stats::prom::Prometheus::parse(url).map_err(ControlError::Stats)?);
        }
        // Rate limits of the lines a remote party can trigger (refused connections and proxies),
        // flushed by a task of their own.
        let logs = Arc::new(crate::loglimit::LogLimits::default());
        let discovery = DiscoveryService {
            logs: logs.clone(),
            streams: Default::default(),
            max_streams_per_token: cfg.max_streams_per_token,
            catalog: catalog.clone(),
            tokens: tokens.clone(),
            trust_domain: mesh.trust_domain.clone(),
            bundle,
            proxies: proxies.clone(),
            next_conn: AtomicU64::new(1),
            stop: stop_rx.clone(),
            renders: Default::default(),
            stats: stats.clone(),
        };
        let export = crate::federation::export::ExportService {
            tokens: tokens.clone(),
            catalog: catalog.clone(),
            federation: federation.clone(),
            roots: vec![authority.root().to_vec()],
            proxies: proxies.clone(),
            stop: stop_rx.clone(),
            renders: Default::default(),
            stats: stats.clone(),
        };
        let naming = crate::naming::NamingService {
            streams: Default::default(),
            max_streams_per_token: cfg.max_streams_per_token,
            catalog: catalog.clone(),
            tokens: tokens.clone(),
            trust_domain: mesh.trust_domain.clone(),
            stop: stop_rx.clone(),
        };
        let identity = ca::IdentityService {
            ca: ca_state.clone(),
            tokens: tokens.clone(),
            leaf_lifetime: mesh.leaf_lifetime.into(),
        };
        let grpc = bind("gRPC", cfg.grpc).await?;
        let grpc_addr = grpc.local_addr().map_err(dir_err)?;
        let mut tasks = vec![];
        let serving = crate::grpc_tls::serving_identity(&authority, &ca_state.serving_names())?;
        let grpc_tls = weft_identity::control::server_config(&serving)?;
        // The HTTP API presents the same certificate, renewed with it (api_tls.rs).
        let api_tls = match cfg.api_tls.plaintext {
            true => None,
            false => Some(Arc::new(weft_identity::https::server_config(&serving)?)),
        };
        tasks.push(tokio::spawn(crate::grpc_tls::renew(ca_state.clone(), serving.clone(), stop_rx.clone())));
        // MeshConfig `ca`: weft's own CA or an external one (AWS Private CA, cfssl, Vault).
        tasks.push(tokio::spawn(crate::signer::run(
            ca_state.clone(),
            catalog.clone(),
            cfg.ca_credentials.clone(),
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(crate::rotation::run(
            ca_state.clone(),
            proxies.clone(),
            federation.clone(),
            tokens.clone(),
            serving.clone(),
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(crate::loglimit::flush(logs.clone(), stop_rx.clone())));
        tasks.push(tokio::spawn(async move {
            // HTTP/2 PINGs find proxies that vanished without closing their stream, so
            // `proxy-status` stops listing them within ~40 s.
            let r = tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
                .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
                .add_service(pb::identity_server::IdentityServer::new(identity))
                .add_service(pb::discovery_server::DiscoveryServer::new(discovery))
                .add_service(pb::federation_server::FederationServer::new(export))
                .add_service(pb::naming_server::NamingServer::new(naming))
                .serve_with_incoming(crate::grpc_tls::incoming(grpc, grpc_tls, logs))
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "gRPC server stopped");
            }
        }));
        let api_listener = bind("the HTTP API", cfg.api).await?;
        let dashboard = match cfg.dashboard {
            Some(addr) => Some(crate::dashboard::bind(addr, !cfg.api_tls.plaintext).await?),
            None => None,
        };
        let metrics_listener = match cfg.metrics {
            Some(addr) => Some(bind("metrics", addr).await?),
            None => None,
        };
        let metrics_addr = metrics_listener.as_ref().map(|l| l.local_addr()).transpose().map_err(dir_err)?;
        let api_stop = stop_rx.clone();
        let api_addr = api_listener.local_addr().map_err(dir_err)?;
        let mut dns_addr = None;
        if let Some(listen) = cfg.dns {
            let mut dns_cfg = weft_dns::DnsConfig::new(listen);
            dns_cfg.upstream = cfg.dns_upstream;
            dns_cfg.udp_receive_buffer = cfg.dns_udp_receive_buffer;
            let server = weft_dns::DnsServer::start(dns_cfg, crate::catalog::dns_table(&catalog.borrow())).await?;
            dns_addr = Some(server.local_addr());
            let (mut cat, mut stop) = (catalog.clone(), stop_rx.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        r = cat.changed() => if r.is_err() { break },
                        _ = stop.wait_for(|s| *s) => break,
                    }
                    let table = crate::catalog::dns_table(&cat.borrow_and_update());
                    server.set_table(table);
                }
                server.shutdown().await;
            }));
        }
        tasks.push(crate::federation::import::run(store.clone(), federation.clone(), link_local, stop_rx.clone()));
        let state = Arc::new(ApiState {
            store: store.clone(),
            tokens: tokens.clone(),
            proxies: proxies.clone(),
            ca: ca_state.clone(),
            catalog: catalog.clone(),
            monitor: monitor.clone(),
            enable_script_checks: cfg.enable_script_checks,
            mesh: mesh.clone(),
            api_addr,
            dashboard: dashboard.as_ref().map(|(_, d)| d.clone()),
            grpc_addr,
            federation,
            audit,
            dns_addr,
            stats,
        });
        if let Some((_, dash)) = &dashboard {
            tracing::info!(url = %dash.url(), "dashboard ready");
        }
        let dashboard = dashboard.map(|(listener, dash)| {
            // HTTPS with the API's certificate off loopback; plain HTTP on loopback.
            let tls = dash.is_tls().then(|| api_tls.clone()).flatten();
            tasks.push(tokio::spawn(crate::dashboard::serve(
                listener,
                dash.clone(),
                state.clone(),
                cfg.api_limits,
                tls,
                stop_rx.clone(),
            )));
            dash
        });
        let counters = proxies.metrics().clone();
        if let Some(listener) = metrics_listener {
            tracing::info!(addr = %metrics_addr.expect("bound"), "metrics ready");
            let router = crate::metrics::router(state.clone(), counters.clone());
            tasks.push(tokio::spawn(crate::http_serve::serve(listener, router, cfg.api_limits, None, stop_rx.clone())));
        }
        let api_is_tls = api_tls.is_some();
        let api_router =
            api::router(state).layer(axum::middleware::from_fn_with_state(counters, crate::metrics::count_api));
        tasks.push(tokio::spawn(crate::http_serve::serve(api_listener, api_router, cfg.api_limits, api_tls, api_stop)));
        tracing::info!(%grpc_addr, %api_addr, api_tls = api_is_tls, trust_domain = %mesh.trust_domain, cluster = %mesh.cluster.name, "control plane ready");
        Ok(ControlPlane {
            grpc_addr,
            api_addr,
            api_tls: api_is_tls,
            api_ca_file: match &cfg.plugin_ca {
                Some(p) => p.chain.clone(),
                None => cfg.data_dir.join(crate::api_tls::ROOT_FILE),
            },
            store,
            tokens,
            proxies,
            admin_token,
            dns_addr,
            dashboard,
            metrics_addr,
            root_key: ca::root_key(&cfg.data_dir, cfg.plugin_ca.as_ref()),
            monitor,
            catalog,
            ca: ca_state,
            serving,
            tasks,
            stop,
        })
    }
}
