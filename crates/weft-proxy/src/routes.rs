//! The proxy's routing table in domain form: services and endpoints with parsed identities,
//! indexed by name and by address. Built from the config file (or, later, the control plane) and
//! swapped atomically as a whole.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
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
    next: AtomicUsize,
}

impl Service {
    /// A service over `endpoints`; `key` is `name.namespace` (a mirror's: see [`crate::naming`]).
    pub fn new(
        name: String,
        namespace: String,
        key: String,
        protocols: HashMap<u16, Protocol>,
        endpoints: Vec<Arc<Endpoint>>,
    ) -> Service {
        Service {
            label: crate::metrics::Name::new(key.clone()),
            name,
            namespace,
            key,
            protocols,
            endpoints,
            next: AtomicUsize::new(0),
        }
    }

    /// The mirror of this service in `cluster`: the same service (name, namespace, ports; the
    /// SNI still names the service) over only that cluster's endpoints.
    pub fn view(&self, cluster: &str) -> Service {
        let endpoints = self.endpoints.iter().filter(|e| e.cluster.eq_ignore_ascii_case(cluster)).cloned().collect();
        let key = crate::naming::view_key(self, cluster);
        Service::new(self.name.clone(), self.namespace.clone(), key, self.protocols.clone(), endpoints)
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

    /// Round robin over the endpoints (one atomic add; no lock).
    pub fn pick(&self) -> Option<&Arc<Endpoint>> {
        if self.endpoints.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        self.endpoints.get(i)
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
    /// App ports from the control plane (the local config's `inbound.ports` come first).
    inbound: HashMap<u16, Protocol>,
    /// Those of them that allow CONNECT tunnels.
    inbound_connect: std::collections::HashSet<u16>,
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
        self.names = crate::naming::Names::build(self.by_name.values(), cluster, vips);
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
        self
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
        let vips: Vec<(String, String, std::net::IpAddr)> = cfg
            .virtual_ips
            .iter()
            .map(|v| {
                let key = cfg.service(&v.service).map_or_else(|| v.service.clone(), |s| s.key());
                (key, v.cluster.clone().unwrap_or_default(), v.address)
            })
            .collect();
        Ok(Routes::from_services(&cfg.services)?.with_names(&cfg.cluster, &vips))
    }
}

impl Routes {
    /// Builds the table from services in config form (the file's, or the control plane's after
    /// conversion). Errors name the field (`services[i].endpoints[j].identity`).
    pub fn from_services(services: &[weft_api::proxy::Service]) -> Result<Self, ConfigError> {
        let mut routes = Routes::default();
        for (i, s) in services.iter().enumerate() {
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
                endpoints.push(Arc::new(Endpoint {
                    label: crate::metrics::Name::new(identity.to_string()),
                    sni,
                    http_series: std::sync::OnceLock::new(),
                    address: e.address,
                    proxy: e
                        .proxy
                        .unwrap_or_else(|| SocketAddr::new(e.address.ip(), weft_api::proxy::DEFAULT_INBOUND_PORT)),
                    identity,
                    cluster: e.cluster.clone(),
                    network: e.network.clone(),
                    locality: e.locality.clone(),
                    labels: e.labels.clone(),
                }));
            }
            let svc = Arc::new(Service::new(
                s.name.clone(),
                s.namespace.clone(),
                s.key(),
                s.ports.iter().map(|p| (p.port, p.protocol)).collect(),
                endpoints,
            ));
            for ep in &svc.endpoints {
                routes.by_addr.insert(ep.address, (svc.clone(), ep.clone()));
            }
            routes.by_name.insert(svc.key.clone(), svc);
        }
        Ok(routes)
    }
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
            next: AtomicUsize::new(0),
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
