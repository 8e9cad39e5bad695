//! The proxy's routing table in domain form: services and endpoints with parsed identities,
//! indexed by name and by address. Built from the config file (or, later, the control plane) and
//! swapped atomically as a whole.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use weft_api::peer_authentication::MtlsMode;
use weft_api::proxy::{Protocol, ProxyConfig};
use weft_api::ConfigError;
use weft_identity::SpiffeId;

#[derive(Debug)]
pub struct Endpoint {
    pub address: SocketAddr,
    /// Where the mTLS connection goes: the endpoint's sidecar, or a gateway in front of it.
    pub proxy: SocketAddr,
    pub identity: SpiffeId,
    pub cluster: String,
    pub network: String,
    pub locality: String,
    pub labels: BTreeMap<String, String>,
    /// `identity` as a metric label.
    pub label: crate::metrics::Name,
    /// The SNI for this endpoint's own port (see [`crate::sni`]).
    pub sni: String,
    /// Outbound HTTP metrics towards this endpoint, resolved at its first request.
    pub http_series: std::sync::OnceLock<crate::metrics::HttpSeries>,
    /// Outlier detection state, kept across routing tables (see [`crate::outlier`]).
    pub health: Arc<crate::outlier::Health>,
    /// Its share of load balancing within its group (1 unless set).
    pub weight: u32,
    /// Its workload has mTLS DISABLE: reached in plaintext at `address` (see `plainout`).
    pub plaintext: bool,
}

#[derive(Debug)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    key: String,
    /// `name.namespace` as a metric label (used when no endpoint is known).
    pub label: crate::metrics::Name,
    /// Declared protocol per port; other ports are detected.
    pub protocols: HashMap<u16, Protocol>,
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Picks among `endpoints` by priority and health (see [`crate::balance`]).
    pub balance: crate::balance::Balancer,
    /// Its routes, compiled (see [`crate::route`]); `None`: none, and requests take the plain path.
    pub route: Option<Arc<crate::route::Table>>,
    /// Retries, timeouts and faults for requests to it (see [`crate::resilience`]).
    pub resilience: Option<Arc<crate::resilience::Policy>>,
}

impl Service {
    /// The mirror of this service in `cluster`: the same service (name, namespace, ports; the
    /// SNI still names the service) over only that cluster's endpoints, balanced with this
    /// service's endpoint health (an endpoint ejected here is ejected in the mirror too).
    pub fn view(&self, cluster: &str) -> Service {
        let endpoints: Vec<Arc<Endpoint>> =
            self.endpoints.iter().filter(|e| e.cluster.eq_ignore_ascii_case(cluster)).cloned().collect();
        let key = crate::naming::view_key(self, cluster);
        let balance = self.balance.subset(&endpoints, (cluster, ""));
        Service {
            label: crate::metrics::Name::new(key.clone()),
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            key,
            protocols: self.protocols.clone(),
            endpoints,
            balance,
            // A mirror is one cluster's endpoints of the service, reached by name: no routes.
            route: None,
            resilience: self.resilience.clone(),
        }
    }

    /// A stand-in for a service not in the routing table (yet): no endpoints, no ports, no
    /// routes. An upstream listener accepts connections with it; each request resolves the
    /// real one by key (see `crate::outbound`).
    pub fn unknown(name: &str, namespace: &str) -> Service {
        let key = format!("{name}.{namespace}");
        let (outlier, store) = (Default::default(), Default::default());
        let env = crate::balance::Env { cluster: "", locality: "", outlier: &outlier, store: &store };
        Service {
            name: name.to_string(),
            namespace: namespace.to_string(),
            label: crate::metrics::Name::new(key.clone()),
            key,
            protocols: HashMap::new(),
            endpoints: vec![],
            balance: crate::balance::Balancer::new(&[], Default::default(), &env, Default::default()),
            route: None,
            resilience: None,
        }
    }

    /// `name.namespace`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The protocol to assume for connections to `port` (`Auto`: detect).
    pub fn protocol(&self, port: u16) -> Protocol {
        self.protocols.get(&port).copied().unwrap_or_default()
    }

    /// Whether `host` is one of this service's DNS names: `name`, `name.namespace`,
    /// `name.namespace.svc[.<domain>]`, `[tag.]name.service[.<dc>].consul` (case-insensitive).
    pub fn is_named_by(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        // `service[.<dc>].consul`
        let consul = |r: &str| {
            strip_label(r, "service").is_some_and(|dc| {
                let dc = dc.to_ascii_lowercase();
                dc == "consul" || dc.ends_with(".consul")
            })
        };
        if let Some(rest) = strip_label(host, &self.name) {
            if rest.is_empty() || consul(rest) {
                return true;
            }
            if let Some(after_ns) = strip_label(rest, &self.namespace) {
                return after_ns.is_empty() || strip_label(after_ns, "svc").is_some();
            }
        }
        // A Consul tag in front of the name.
        host.split_once('.').and_then(|(_, h)| strip_label(h, &self.name)).is_some_and(consul)
    }

    /// The next endpoint by priority and health (see [`crate::balance`]).
    pub fn pick(&self) -> Option<&Arc<Endpoint>> {
        self.pick_at(Instant::now())
    }

    /// [`Service::pick`] with the time the caller already read (the request's start).
    pub fn pick_at(&self, now: Instant) -> Option<&Arc<Endpoint>> {
        self.balance.pick(&self.endpoints, now)
    }

    /// [`Service::pick_at`] for a request whose hash key is `key` (see
    /// [`crate::balance::hash`]).
    pub fn pick_keyed(&self, now: Instant, key: Option<u64>) -> Option<&Arc<Endpoint>> {
        self.balance.pick_keyed(&self.endpoints, now, key)
    }

    /// Another endpoint after a failed connect to each of `tried` (nothing was sent).
    pub fn pick_other(&self, tried: &[Arc<Endpoint>], now: Instant) -> Option<&Arc<Endpoint>> {
        self.balance.pick_other(&self.endpoints, tried, now)
    }

    /// Whether a connection to one of its endpoints failed or broke lately (see
    /// [`crate::outlier::REPLAY_WINDOW_MS`]).
    pub fn recently_broken(&self, now: Instant) -> bool {
        self.balance.recently_broken(now)
    }

    /// Counts what happened on `ep` for outlier detection; `Some` when it is ejected now.
    pub fn report(&self, ep: &Endpoint, outcome: crate::outlier::Outcome) -> Option<crate::outlier::Ejection> {
        self.balance.report(&self.endpoints, ep, outcome)
    }

    /// [`Service::report`], with every endpoint ejected now (success-rate outliers too) handed
    /// to `ejected`.
    pub fn report_with(
        &self,
        ep: &Endpoint,
        outcome: crate::outlier::Outcome,
        ejected: &mut dyn FnMut(&Endpoint, crate::outlier::Ejection),
    ) -> Option<crate::outlier::Ejection> {
        self.balance.report_with(&self.endpoints, ep, outcome, ejected)
    }
}

/// `s` without its first label when that label is `label` (case-insensitive): `Some(rest)`, where
/// `rest` is empty or what follows the dot.
fn strip_label<'a>(s: &'a str, label: &str) -> Option<&'a str> {
    let (first, rest) = s.split_once('.').unwrap_or((s, ""));
    first.eq_ignore_ascii_case(label).then_some(rest)
}

#[derive(Debug, Default)]
pub struct Routes {
    /// By `name.namespace`.
    by_name: HashMap<String, Arc<Service>>,
    by_addr: HashMap<SocketAddr, (Arc<Service>, Arc<Endpoint>)>,
    /// The addresses more than one service has (the later service in the update wins in
    /// `by_addr`): an incremental update touching one of them indexes every address again.
    shared_addrs: std::collections::HashSet<SocketAddr>,
    /// App ports from the control plane (the local config's `inbound.ports` come first).
    inbound: HashMap<u16, Protocol>,
    /// Those of them that allow CONNECT tunnels.
    inbound_connect: std::collections::HashSet<u16>,
    /// The mTLS mode of each inbound app port the control plane sent (PeerAuthentication).
    inbound_mtls: HashMap<u16, MtlsMode>,
    /// Mesh names, mirrors and virtual IPs (see [`crate::naming`]).
    names: crate::naming::Names,
}

impl Routes {
    pub fn service(&self, name: &str, namespace: &str) -> Option<&Arc<Service>> {
        self.by_name.get(&format!("{name}.{namespace}"))
    }

    /// By `name.namespace` (or a mirror's key), without allocating (the request path uses it).
    pub fn service_by_key(&self, key: &str) -> Option<&Arc<Service>> {
        self.by_name.get(key).or_else(|| self.names.view(key))
    }

    /// The service or mirror a full mesh name names (a request's `Host`), without allocating.
    pub fn by_host(&self, host: &str) -> Option<&Arc<Service>> {
        self.names.by_host(host)
    }

    /// The service or mirror whose virtual IP is `ip` (transparent interception).
    pub fn by_vip(&self, ip: std::net::IpAddr) -> Option<&Arc<Service>> {
        self.names.by_vip(ip)
    }

    /// Every virtual IP and what it names.
    pub fn virtual_ips(&self) -> Vec<(std::net::IpAddr, String)> {
        self.names.vips()
    }

    /// Indexes the mesh names of the services, their mirrors and `vips` (service key, cluster or
    /// empty, address); `cluster` is this proxy's. Called once per table, after the services.
    pub fn with_names(mut self, cluster: &str, vips: &[(String, String, std::net::IpAddr)]) -> Self {
        self.names = crate::naming::Names::build_from(self.by_name.values(), cluster, vips, None);
        self
    }

    /// The service and endpoint whose workload address is `addr` (transparent interception).
    pub fn by_address(&self, addr: &SocketAddr) -> Option<&(Arc<Service>, Arc<Endpoint>)> {
        self.by_addr.get(addr)
    }

    pub fn services(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.by_name.values()
    }

    /// Adds the inbound app ports the control plane sent.
    pub fn with_inbound(mut self, ports: &[weft_api::proxy::AppPort]) -> Self {
        self.inbound = ports.iter().map(|p| (p.port, p.protocol)).collect();
        self.inbound_connect = ports.iter().filter(|p| p.allow_connect).map(|p| p.port).collect();
        self.inbound_mtls = ports.iter().filter_map(|p| Some((p.port, p.mtls?))).collect();
        self
    }

    /// The mTLS mode the control plane sent for an inbound app port.
    pub fn inbound_mtls(&self, port: u16) -> Option<MtlsMode> {
        self.inbound_mtls.get(&port).copied()
    }

    /// The protocol of an inbound app port the control plane sent, if it sent that port.
    pub fn inbound_port(&self, port: u16) -> Option<Protocol> {
        self.inbound.get(&port).copied()
    }

    /// Whether the control plane allows CONNECT tunnels to this inbound app port.
    pub fn inbound_allows_connect(&self, port: u16) -> bool {
        self.inbound_connect.contains(&port)
    }

    /// The inbound app ports the control plane sent, sorted.
    pub fn inbound_ports(&self) -> Vec<(u16, Protocol)> {
        let mut v: Vec<_> = self.inbound.iter().map(|(p, proto)| (*p, *proto)).collect();
        v.sort_unstable_by_key(|(p, _)| *p);
        v
    }
}

impl TryFrom<&ProxyConfig> for Routes {
    type Error = ConfigError;

    fn try_from(cfg: &ProxyConfig) -> Result<Self, ConfigError> {
        Ok(Routes::from_services(&cfg.services)?.with_names(&cfg.cluster, &Routes::config_vips(cfg)))
    }
}

impl Routes {
    /// The config file's `virtual_ips` as [`Routes::with_names`] takes them: (service key,
    /// cluster or empty, address).
    pub fn config_vips(cfg: &ProxyConfig) -> Vec<(String, String, std::net::IpAddr)> {
        cfg.virtual_ips
            .iter()
            .map(|v| {
                let key = cfg.service(&v.service).map_or_else(|| v.service.clone(), |s| s.key());
                (key, v.cluster.clone().unwrap_or_default(), v.address)
            })
            .collect()
    }

    /// Builds the table from services in config form, seen from cluster `local` with default
    /// outlier detection and fresh health (tests, config checks). See [`Routes::from_services_with`].
    pub fn from_services(services: &[weft_api::proxy::Service]) -> Result<Self, ConfigError> {
        let (outlier, store) = (Default::default(), Default::default());
        let env = crate::balance::Env {
            cluster: weft_api::proxy::DEFAULT_CLUSTER,
            locality: "",
            outlier: &outlier,
            store: &store,
        };
        Routes::from_services_with(services, &env)
    }

    /// Builds the table from services in config form (the file's, or the control plane's after
    /// conversion), balanced from where `env` says this proxy is, with endpoint health from
    /// `env.store`. Errors name the field (`services[i].endpoints[j].identity`).
    pub fn from_services_with(
        services: &[weft_api::proxy::Service],
        env: &crate::balance::Env<'_>,
    ) -> Result<Self, ConfigError> {
        Routes::from_services_in(services, env, &HashMap::new())
    }

    /// [`Routes::from_services_with`], each service with its compiled policy from `policies`
    /// (by service key; see [`crate::resilience::State::compile`]).
    pub fn from_services_in(
        services: &[weft_api::proxy::Service],
        env: &crate::balance::Env<'_>,
        policies: &HashMap<String, Arc<crate::resilience::Policy>>,
    ) -> Result<Self, ConfigError> {
        let mut routes = Routes::default();
        for (i, s) in services.iter().enumerate() {
            let svc = build_service(i, s, env, policies)?;
            routes.index_addresses(&svc);
            routes.by_name.insert(svc.key.clone(), svc);
        }
        Ok(routes)
    }

    /// Adds `svc`'s endpoints to the address index (over any other service's of the same address).
    fn index_addresses(&mut self, svc: &Arc<Service>) {
        for ep in &svc.endpoints {
            if let Some((other, _)) = self.by_addr.insert(ep.address, (svc.clone(), ep.clone())) {
                if !Arc::ptr_eq(&other, svc) {
                    self.shared_addrs.insert(ep.address);
                }
            }
        }
    }

    /// The table after an incremental update, from `prev` (the table of the update it applies
    /// to): `keys` are every service's key (`name.namespace`) after the update, in the update's
    /// order; the services in `changed` are built from config (errors name `services[i]` of
    /// `changed`), and every other one is `prev`'s very `Arc` — its balancer, endpoint health and
    /// compiled routes carry on. A key neither changed nor in `prev` is an error (the update
    /// does not apply on top of `prev`). The inbound ports are `prev`'s; call
    /// [`Routes::with_inbound`] and [`Routes::with_names_from`] after, as after a full build.
    ///
    /// Costs the changed services' builds, plus one pass over every endpoint's address (the
    /// address index is rebuilt in the update's order, so it equals a full build's).
    pub fn from_changes(
        prev: &Routes,
        keys: &[String],
        changed: &[weft_api::proxy::Service],
        env: &crate::balance::Env<'_>,
        policies: &HashMap<String, Arc<crate::resilience::Policy>>,
    ) -> Result<Self, ConfigError> {
        let mut built: HashMap<String, Arc<Service>> = HashMap::with_capacity(changed.len());
        for (i, s) in changed.iter().enumerate() {
            let svc = build_service(i, s, env, policies)?;
            built.insert(svc.key.clone(), svc);
        }
        let mut by_name = HashMap::with_capacity(keys.len());
        for key in keys {
            let svc = match built.get(key) {
                Some(s) => s.clone(),
                None => prev.by_name.get(key).cloned().ok_or_else(|| {
                    ConfigError::invalid("services", format!("{key} is neither in this update nor in the one before"))
                })?,
            };
            by_name.insert(key.clone(), svc);
        }
        // The address index: `prev`'s, with the old endpoints of the services changed or gone
        // taken out and the new ones put in, unless an address two services share is touched
        // (then which one wins depends on the order of every service: indexed again).
        let gone: Vec<&Arc<Service>> = prev
            .by_name
            .iter()
            .filter(|(k, s)| by_name.get(*k).is_none_or(|n| !Arc::ptr_eq(n, s)))
            .map(|(_, s)| s)
            .collect();
        let touches_shared = |addr: &SocketAddr| prev.shared_addrs.contains(addr);
        let mut routes = Routes { by_name, ..Routes::default() };
        let simple = gone.iter().all(|s| !s.endpoints.iter().any(|e| touches_shared(&e.address)));
        if simple {
            let (mut by_addr, mut shared) = (prev.by_addr.clone(), false);
            for old in &gone {
                for e in &old.endpoints {
                    by_addr.remove(&e.address);
                }
            }
            for svc in built.values() {
                for ep in &svc.endpoints {
                    shared |= by_addr.insert(ep.address, (svc.clone(), ep.clone())).is_some();
                }
            }
            if !shared {
                routes.by_addr = by_addr;
                routes.shared_addrs = prev.shared_addrs.clone();
                return Ok(routes);
            }
        }
        for key in keys {
            let svc = routes.by_name[key].clone();
            routes.index_addresses(&svc);
        }
        Ok(routes)
    }

    /// [`Routes::with_names`], reusing `prev`'s mirror of every service that is `prev`'s very
    /// `Arc` (its balancer state carries on); the mirrors of the others are built again.
    pub fn with_names_from(
        mut self,
        cluster: &str,
        vips: &[(String, String, std::net::IpAddr)],
        prev: &Routes,
    ) -> Self {
        self.names = crate::naming::Names::build_from(self.by_name.values(), cluster, vips, Some(&prev.names));
        self
    }
}

/// One service of the table from its config form (`services[i]`, for errors).
fn build_service(
    i: usize,
    s: &weft_api::proxy::Service,
    env: &crate::balance::Env<'_>,
    policies: &HashMap<String, Arc<crate::resilience::Policy>>,
) -> Result<Arc<Service>, ConfigError> {
    let key = s.key();
    let mut endpoints = Vec::with_capacity(s.endpoints.len());
    for (j, e) in s.endpoints.iter().enumerate() {
        let identity: SpiffeId = e.identity.parse().map_err(|err: weft_identity::Error| {
            ConfigError::invalid(format!("services[{i}].endpoints[{j}].identity"), err.to_string())
        })?;
        let sni = crate::sni::SniTarget {
            port: e.address.port(),
            service: s.name.clone(),
            namespace: s.namespace.clone(),
            cluster: e.cluster.clone(),
        }
        .to_sni();
        let proxy = e.proxy.unwrap_or_else(|| SocketAddr::new(e.address.ip(), weft_api::proxy::DEFAULT_INBOUND_PORT));
        endpoints.push(Arc::new(Endpoint {
            health: env.store.endpoint(&key, e.address, proxy),
            label: crate::metrics::Name::new(identity.to_string()),
            sni,
            http_series: std::sync::OnceLock::new(),
            address: e.address,
            proxy,
            identity,
            cluster: e.cluster.clone(),
            network: e.network.clone(),
            locality: e.locality.clone(),
            labels: e.labels.clone(),
            weight: e.weight.max(1),
            plaintext: e.plaintext,
        }));
    }
    Ok(Arc::new(Service {
        name: s.name.clone(),
        namespace: s.namespace.clone(),
        key: s.key(),
        label: crate::metrics::Name::new(s.key()),
        protocols: s.ports.iter().map(|p| (p.port, p.protocol)).collect(),
        balance: crate::balance::Balancer::new(
            &endpoints,
            crate::balance::Policy {
                failover: &s.failover,
                cluster_weights: Some(&s.cluster_weights),
                outlier: s.outlier_detection.as_ref(),
                backend: s.backend_policy.as_ref(),
            },
            env,
            env.store.service(&key),
        ),
        resilience: policies.get(&key).cloned(),
        endpoints,
        route: (!s.routes.is_empty()).then(|| {
            let table = crate::route::Table::compile_with(&key, &s.routes, policies);
            for d in &table.dropped {
                tracing::warn!(service = %key, "route not applied: {d}");
            }
            Arc::new(table)
        }),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api() -> Service {
        Service {
            name: "api".into(),
            namespace: "shop".into(),
            key: "api.shop".into(),
            label: crate::metrics::Name::new("api.shop"),
            protocols: HashMap::new(),
            endpoints: vec![],
            balance: crate::balance::Balancer::new(
                &[],
                Default::default(),
                &crate::balance::Env {
                    cluster: "local",
                    locality: "",
                    outlier: &Default::default(),
                    store: &Default::default(),
                },
                Default::default(),
            ),
            route: None,
            resilience: None,
        }
    }

    #[test]
    fn service_names_that_balance_in_transparent_mode() {
        let s = api();
        for yes in [
            "api",
            "API",
            "api.shop",
            "api.shop.svc",
            "api.shop.svc.cluster.local",
            "api.shop.svc.cluster.local.",
            "api.service.consul",
            "api.service.dc1.consul",
            "v1.api.service.consul",
        ] {
            assert!(s.is_named_by(yes), "{yes}");
        }
        for no in ["10.0.0.3", "apix", "web.shop", "api.other", "api.shop.x", "api.service.consulx", "", "shop.api"] {
            assert!(!s.is_named_by(no), "{no}");
        }
    }
}
