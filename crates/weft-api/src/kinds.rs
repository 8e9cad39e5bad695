//! The specs of each resource kind. Every field is documented in docs/resources.md.

use crate::proxy::Protocol;
use crate::resource::Validate;
use crate::{valid_name, ConfigError, Duration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// Port of a sidecar's inbound mTLS listener when a workload does not say.
pub const DEFAULT_SIDECAR_PORT: u16 = 15006;

// ---------------------------------------------------------------- MeshConfig

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshConfigSpec {
    /// The SPIFFE trust domain of every identity in this mesh.
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    #[serde(default)]
    pub cluster: ClusterSpec,
    /// Lifetime of workload certificates (rotated at half-life).
    #[serde(default = "default_leaf_lifetime")]
    pub leaf_lifetime: Duration,
    /// Per-service virtual IPs for names that reach other clusters (docs/multicluster.md,
    /// "Naming across clusters").
    #[serde(default, skip_serializing_if = "VirtualIps::is_default")]
    pub virtual_ips: VirtualIps,
    /// Clusters with no control plane of their own that this one serves (primary-remote): their
    /// proxies follow this control plane through its gateways, and their Workloads (`cluster:
    /// <name>`) register here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_clusters: Vec<RemoteCluster>,
    /// The mesh's default mTLS mode (docs/security.md, "Peer authentication"); STRICT when
    /// absent. PeerAuthentication resources override it per namespace, workload and port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<crate::peer_authentication::MeshMtls>,
    /// Who may call a workload no ALLOW AuthorizationPolicy selects: mesh-wide and per
    /// namespace (docs/security.md, "Authorization").
    #[serde(default, skip_serializing_if = "crate::authz::AuthorizationConfig::is_default")]
    pub authorization: crate::authz::AuthorizationConfig,
    /// External authorization services that CUSTOM authorization rules name (docs/security.md,
    /// "External authorization").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extension_providers: Vec<crate::ext_authz::ExtensionProvider>,
    /// Which CA signs workload certificates: weft's own (default) or an external one
    /// ([`crate::ca::CaSpec`], docs/security.md).
    #[serde(default, skip_serializing_if = "crate::ca::CaSpec::is_builtin")]
    pub ca: crate::ca::CaSpec,
    /// Distributed tracing from every proxy (docs/observability.md, "Tracing"); off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<crate::trace::TracingSpec>,
}

/// Where the control plane takes per-service virtual IPs from: one for each service and one for
/// each cluster's mirror of it, stable across restarts; proxies intercept them (any port) and
/// route to that service or mirror, so an app with no route to another cluster's network reaches
/// a remote service by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VirtualIps {
    /// An IPv4 CIDR, /8 to /24, that no workload uses (Istio allocates from the same reserved
    /// class-E range); empty: no virtual IPs (names answer instance addresses).
    #[serde(default = "default_vip_range")]
    pub range: String,
}

/// The default [`VirtualIps::range`].
pub const DEFAULT_VIP_RANGE: &str = "240.240.0.0/16";

fn default_vip_range() -> String {
    DEFAULT_VIP_RANGE.into()
}

impl Default for VirtualIps {
    fn default() -> Self {
        VirtualIps { range: default_vip_range() }
    }
}

impl VirtualIps {
    fn is_default(&self) -> bool {
        *self == VirtualIps::default()
    }

    /// The range's first address and prefix length; `Ok(None)` when virtual IPs are off.
    pub fn parse(&self) -> Result<Option<(std::net::Ipv4Addr, u8)>, ConfigError> {
        let range = self.range.trim();
        if range.is_empty() {
            return Ok(None);
        }
        let bad = |why: &str| {
            ConfigError::invalid(
                "virtualIps.range",
                format!("{range:?} {why}; write an IPv4 CIDR such as {DEFAULT_VIP_RANGE}, or \"\" for no virtual IPs"),
            )
        };
        let (addr, prefix) = range.split_once('/').ok_or_else(|| bad("has no /prefix"))?;
        let addr: std::net::Ipv4Addr = addr.parse().map_err(|_| bad("does not start with an IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("has a prefix that is not a number"))?;
        if !(8..=24).contains(&prefix) {
            return Err(bad("must have a prefix from /8 to /24"));
        }
        let mask = u32::MAX << (32 - prefix);
        if u32::from(addr) & !mask != 0 {
            return Err(bad("has host bits set"));
        }
        if addr.is_loopback() || addr.is_unspecified() {
            return Err(bad("is loopback or unspecified (the proxy never intercepts those)"));
        }
        Ok(Some((addr, prefix)))
    }
}

/// A remote cluster of a primary (MeshConfig `remoteClusters`): its name, network and east-west
/// gateways, as other networks reach them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RemoteCluster {
    /// The remote cluster's name: the `cluster` of its Workloads and of its proxies' bootstrap
    /// tokens (`weft token create --cluster`), and its gateway's `cluster`.
    pub name: String,
    /// Its network (the default `network` of its Workloads); empty: the same as every network.
    #[serde(default)]
    pub network: String,
    /// `ip:port` of its east-west gateways: proxies on other networks reach its endpoints
    /// through them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
}

/// The most remote clusters a MeshConfig may declare.
pub const MAX_REMOTE_CLUSTERS: usize = 64;

/// Checks `remoteClusters` against this cluster (`cluster`): each name a DNS label, not this
/// cluster's and not repeated; gateways as [`validate_gateways`]; a remote cluster on another
/// network than this one names at least one gateway (its endpoints are reached only through it).
pub fn validate_remote_clusters(cluster: &ClusterSpec, remotes: &[RemoteCluster]) -> Result<(), ConfigError> {
    if remotes.len() > MAX_REMOTE_CLUSTERS {
        return Err(ConfigError::invalid("remoteClusters", format!("at most {MAX_REMOTE_CLUSTERS} remote clusters")));
    }
    for (i, r) in remotes.iter().enumerate() {
        let f = |k: &str| format!("remoteClusters[{i}].{k}");
        if !valid_name(&r.name) {
            return Err(ConfigError::invalid(f("name"), format!("{:?} must be a DNS label (a-z, 0-9, '-')", r.name)));
        }
        if r.name == cluster.name {
            return Err(ConfigError::invalid(
                f("name"),
                format!(
                    "{:?} is this cluster's own name (cluster.name); a remote cluster needs a name of its own",
                    r.name
                ),
            ));
        }
        if remotes[..i].iter().any(|o| o.name == r.name) {
            return Err(ConfigError::invalid(f("name"), format!("{:?} is declared twice", r.name)));
        }
        validate_gateways(&f("gateways"), &r.gateways)?;
        let same = r.network.is_empty() || cluster.network.is_empty() || r.network == cluster.network;
        if !same && r.gateways.is_empty() {
            return Err(ConfigError::invalid(
                f("gateways"),
                format!(
                    "remote cluster {:?} is on network {:?}, not this cluster's {:?}: its endpoints are reached only through its east-west gateways; name at least one (ip:port), or give it this cluster's network",
                    r.name, r.network, cluster.network
                ),
            ));
        }
    }
    Ok(())
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterSpec {
    #[serde(default = "default_cluster")]
    pub name: String,
    /// Clusters on the same network reach each other's endpoints directly.
    #[serde(default)]
    pub network: String,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub zone: String,
    /// `ip:port` of this cluster's east-west gateways, as other networks reach them
    /// (multi-network): linked clusters on another network reach this cluster's endpoints, and
    /// its control plane (reserved SNI), through them. Empty: dialled directly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            name: default_cluster(),
            network: String::new(),
            region: String::new(),
            zone: String::new(),
            gateways: vec![],
        }
    }
}

/// The most gateway addresses a cluster (`cluster.gateways`) or a link may name.
pub const MAX_GATEWAYS: usize = 16;

/// Checks a list of east-west gateway addresses (`field`: where it was read, for the error):
/// each `ip:port`, a real address (not `0.0.0.0`, not port 0), no repeats, at most
/// [`MAX_GATEWAYS`].
pub fn validate_gateways(field: &str, gateways: &[String]) -> Result<Vec<SocketAddr>, ConfigError> {
    if gateways.len() > MAX_GATEWAYS {
        return Err(ConfigError::invalid(field, format!("at most {MAX_GATEWAYS} gateways")));
    }
    let mut out: Vec<SocketAddr> = Vec::with_capacity(gateways.len());
    for (i, g) in gateways.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let a: SocketAddr = g.parse().map_err(|_| {
            ConfigError::invalid(&f, format!("{g:?} is not ip:port; write the gateway's address as other networks reach it, e.g. 203.0.113.7:15443"))
        })?;
        if a.ip().is_unspecified() || a.port() == 0 {
            return Err(ConfigError::invalid(
                &f,
                format!("{g:?} cannot be dialled from another network; give the gateway's reachable ip and port"),
            ));
        }
        if out.contains(&a) {
            return Err(ConfigError::invalid(&f, format!("{a} is listed twice")));
        }
        out.push(a);
    }
    Ok(out)
}

impl Default for MeshConfigSpec {
    fn default() -> Self {
        MeshConfigSpec {
            trust_domain: default_trust_domain(),
            cluster: ClusterSpec::default(),
            leaf_lifetime: default_leaf_lifetime(),
            virtual_ips: VirtualIps::default(),
            remote_clusters: vec![],
            mtls: None,
            authorization: Default::default(),
            extension_providers: vec![],
            ca: Default::default(),
            tracing: None,
        }
    }
}

fn default_trust_domain() -> String {
    DEFAULT_TRUST_DOMAIN.into()
}
fn default_cluster() -> String {
    crate::proxy::DEFAULT_CLUSTER.into()
}
fn default_leaf_lifetime() -> Duration {
    Duration::from_secs(24 * 3600)
}

impl Validate for MeshConfigSpec {
    fn validate(&self) -> Result<(), ConfigError> {
        let td = &self.trust_domain;
        if td.is_empty() || !td.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b)) {
            return Err(ConfigError::invalid(
                "trustDomain",
                format!("{td:?} must be lowercase letters, digits, '.', '-', '_'"),
            ));
        }
        if !valid_name(&self.cluster.name) {
            return Err(ConfigError::invalid("cluster.name", "must be a DNS label"));
        }
        validate_gateways("cluster.gateways", &self.cluster.gateways)?;
        validate_remote_clusters(&self.cluster, &self.remote_clusters)?;
        if self.leaf_lifetime < Duration::from_secs(1) {
            return Err(ConfigError::invalid("leafLifetime", "must be at least 1s"));
        }
        self.virtual_ips.parse()?;
        self.authorization.validate()?;
        crate::ext_authz::validate_providers(&self.extension_providers)?;
        self.ca.validate()?;
        if let Some(t) = &self.tracing {
            t.validate("tracing")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- Service

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// Consul-style tags; `<tag>.<service>.service.consul` resolves to the instances with the tag.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Share this service (and its healthy endpoints) with every linked cluster (`weft link`).
    /// Default false: a service stays in its own cluster unless exported.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub export: bool,
    /// Clusters to fail over to, in order, when the caller's own cluster has too few healthy
    /// endpoints (Consul's service-resolver failover); clusters not listed get no traffic.
    /// Empty: locality priority (same zone, same region, other clusters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<String>,
    /// A fixed split of traffic between clusters, by weight (`{east: 90, west: 10}`); clusters
    /// not listed get none. Exclusive with `failover`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub cluster_weights: std::collections::BTreeMap<String, u32>,
    /// When callers' proxies eject an endpoint of this service; each field set replaces the
    /// proxy's own `outlier_detection` value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<crate::traffic::ServiceOutlierDetection>,
    /// Keep this service to its own cluster (Istio's `clusterLocal` hosts): it is never exported,
    /// and linked clusters' services of the same name and namespace are not merged into it, so
    /// this cluster's callers reach only its own endpoints. Exclusive with `export`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cluster_local: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: u16,
    /// `auto` (detect), `http1`, `http2` or `tcp` (server-speaks-first).
    #[serde(default)]
    pub protocol: Protocol,
    /// Whether callers may open `CONNECT` tunnels to this port (default: no, answered `403
    /// connect-not-allowed`). A tunnel's bytes reach the app raw, without the caller identity
    /// header: allow it only for an app that is a forward proxy.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_connect: bool,
}

impl Validate for ServiceSpec {
    fn validate(&self) -> Result<(), ConfigError> {
        let mut seen = HashSet::new();
        for (i, p) in self.ports.iter().enumerate() {
            if p.port == 0 {
                return Err(ConfigError::invalid(format!("ports[{i}].port"), "must be 1-65535"));
            }
            if !seen.insert(p.port) {
                return Err(ConfigError::invalid(
                    format!("ports[{i}].port"),
                    format!("port {} is listed twice", p.port),
                ));
            }
        }
        for (i, t) in self.tags.iter().enumerate() {
            if !valid_name(t) {
                return Err(ConfigError::invalid(
                    format!("tags[{i}]"),
                    "must be a DNS label (it becomes part of DNS names)",
                ));
            }
        }
        if self.cluster_local && self.export {
            return Err(ConfigError::invalid(
                "clusterLocal",
                "cannot be true together with export: true: a cluster-local service is never shared with linked clusters; drop one of the two",
            ));
        }
        crate::traffic::check_cluster_policy(("failover", &self.failover), ("clusterWeights", &self.cluster_weights))?;
        if let Some(o) = &self.outlier_detection {
            o.check()?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- Workload

/// One registered instance of a service (Consul's service registration, Istio's WorkloadEntry).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadSpec {
    /// The Service this is an instance of (same namespace).
    pub service: String,
    pub address: IpAddr,
    pub port: u16,
    /// The identity's service account; defaults to the service name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// The workload's sidecar inbound (mTLS) address; defaults to `address:15006`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<SocketAddr>,
    /// Defaults to the MeshConfig's cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// `region/zone/subzone`, any prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub checks: Vec<CheckSpec>,
    /// The namespaces whose services this workload's proxy receives on its discovery stream (as
    /// Istio's Sidecar egress hosts); its own namespace always. Absent: every namespace
    /// (mesh-wide). It narrows what the proxy learns, not who may call whom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<Vec<String>>,
    /// This instance's share of load balancing against its service's other instances (1-10000;
    /// default 1), honoured by every load balancer within a locality tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

impl WorkloadSpec {
    pub fn service_account(&self) -> &str {
        self.service_account.as_deref().unwrap_or(&self.service)
    }

    pub fn sidecar(&self) -> SocketAddr {
        self.sidecar.unwrap_or(SocketAddr::new(self.address, DEFAULT_SIDECAR_PORT))
    }
}

impl Validate for WorkloadSpec {
    fn validate(&self) -> Result<(), ConfigError> {
        if !valid_name(&self.service) {
            return Err(ConfigError::invalid("service", "must name a Service (a DNS label)"));
        }
        if self.port == 0 {
            return Err(ConfigError::invalid("port", "must be 1-65535"));
        }
        if let Some(sa) = &self.service_account {
            if !valid_name(sa) {
                return Err(ConfigError::invalid("serviceAccount", "must be a DNS label"));
            }
        }
        if let Some(c) = &self.cluster {
            if !valid_name(c) {
                return Err(ConfigError::invalid("cluster", "must be a DNS label"));
            }
        }
        for (i, t) in self.tags.iter().enumerate() {
            if !valid_name(t) {
                return Err(ConfigError::invalid(format!("tags[{i}]"), "must be a DNS label"));
            }
        }
        for (i, ns) in self.visibility.iter().flatten().enumerate() {
            if !valid_name(ns) {
                return Err(ConfigError::invalid(
                    format!("visibility[{i}]"),
                    format!("{ns:?} must be a namespace (a DNS label); leave visibility out for every namespace"),
                ));
            }
        }
        if let Some(w) = self.weight.filter(|w| !(1..=crate::proxy::MAX_ENDPOINT_WEIGHT).contains(w)) {
            return Err(ConfigError::invalid("weight", format!("{w} must be 1-{}", crate::proxy::MAX_ENDPOINT_WEIGHT)));
        }
        let mut names = HashSet::new();
        for (i, c) in self.checks.iter().enumerate() {
            c.validate().map_err(|e| match e {
                ConfigError::Invalid { field, message } => {
                    ConfigError::invalid(format!("checks[{i}].{field}"), message)
                }
                other => other,
            })?;
            if !names.insert(c.name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("checks[{i}].name"),
                    format!("check {:?} is listed twice", c.name),
                ));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- health checks

/// A health check, shaped like Consul's: exactly one probe (`http`, `tcp`, `grpc`, `h2ping`,
/// `script`, `ttl`, `alias`, `docker`) and its timing.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CheckSpec {
    pub name: String,
    /// URL to GET; 2xx is passing, 429 warning, anything else critical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// `host:port` that must accept a TCP connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<SocketAddr>,
    /// `host:port` of a grpc.health.v1 server; `grpcService` picks the service (default: server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_service: Option<String>,
    /// `host:port` of an HTTP/2 server (prior knowledge) that must answer a PING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h2ping: Option<SocketAddr>,
    /// Command and arguments; exit 0 passing, 1 warning, other critical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<Vec<String>>,
    /// The workload reports itself (`PUT /v1/agent/check/pass/<id>`); critical if silent this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    /// Mirrors the health of another workload (its name, same namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Runs a command in a container through the Docker Engine API (needs a Docker engine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerCheck>,
    /// Defaults: gRPC, H2 ping and TCP 10s; HTTP and script 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Defaults to 10s, capped at the interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Consecutive passes before a critical check turns passing.
    #[serde(default = "one")]
    pub success_threshold: u32,
    /// Consecutive failures before a passing check turns critical.
    #[serde(default = "one")]
    pub failure_threshold: u32,
    /// Opt-in: deregister the workload after the check has been critical this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deregister_critical_after: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DockerCheck {
    pub container: String,
    pub args: Vec<String>,
    /// Docker Engine API socket.
    #[serde(default = "docker_socket")]
    pub socket: String,
}

fn one() -> u32 {
    1
}
fn docker_socket() -> String {
    "/var/run/docker.sock".into()
}

/// The probe kinds, for defaults and display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    Http,
    Tcp,
    Grpc,
    H2Ping,
    Script,
    Ttl,
    Alias,
    Docker,
}

impl CheckSpec {
    /// Which probe is set (validation guarantees exactly one).
    pub fn probe(&self) -> Option<ProbeKind> {
        let set = [
            (self.http.is_some(), ProbeKind::Http),
            (self.tcp.is_some(), ProbeKind::Tcp),
            (self.grpc.is_some(), ProbeKind::Grpc),
            (self.h2ping.is_some(), ProbeKind::H2Ping),
            (self.script.is_some(), ProbeKind::Script),
            (self.ttl.is_some(), ProbeKind::Ttl),
            (self.alias.is_some(), ProbeKind::Alias),
            (self.docker.is_some(), ProbeKind::Docker),
        ];
        let mut found = set.iter().filter(|(on, _)| *on).map(|(_, k)| *k);
        let first = found.next();
        if found.next().is_some() {
            None
        } else {
            first
        }
    }

    /// The interval in force: the configured one or the probe's default (Consul's).
    pub fn interval(&self) -> Duration {
        self.interval.unwrap_or(match self.probe() {
            Some(ProbeKind::Http | ProbeKind::Script | ProbeKind::Docker) => Duration::from_secs(30),
            _ => Duration::from_secs(10),
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(Duration::from_secs(10)).min(self.interval())
    }
}

impl Validate for CheckSpec {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::invalid("name", "every check needs a name"));
        }
        if self.probe().is_none() {
            return Err(ConfigError::invalid(
                "http",
                "set exactly one of http, tcp, grpc, h2ping, script, ttl, alias, docker",
            ));
        }
        if let Some(url) = &self.http {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::invalid("http", format!("{url:?} must be an http:// or https:// URL")));
            }
        }
        if let Some(script) = &self.script {
            if script.is_empty() || script[0].is_empty() {
                return Err(ConfigError::invalid(
                    "script",
                    "give the command and its arguments, e.g. [\"/bin/check\", \"--quick\"]",
                ));
            }
        }
        if self.grpc_service.is_some() && self.grpc.is_none() {
            return Err(ConfigError::invalid("grpcService", "only valid with `grpc`"));
        }
        if self.success_threshold == 0 || self.failure_threshold == 0 {
            return Err(ConfigError::invalid("failureThreshold", "thresholds must be at least 1"));
        }
        if let Some(i) = self.interval {
            if i < Duration::from_millis(100) {
                return Err(ConfigError::invalid("interval", "must be at least 100ms"));
            }
        }
        if let Some(t) = self.ttl {
            if t < Duration::from_secs(1) {
                return Err(ConfigError::invalid("ttl", "must be at least 1s"));
            }
        }
        if let Some(a) = &self.alias {
            if !valid_name(a) {
                return Err(ConfigError::invalid("alias", "must name a Workload (a DNS label)"));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- Link

/// A link to another cluster, stored by `weft link apply` from the credential the peer's
/// `weft link create` printed. The resource's name is the peer cluster's name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LinkSpec {
    /// The peer cluster's name (its MeshConfig `cluster.name`).
    pub cluster: String,
    /// The peer's SPIFFE trust domain; must differ from this mesh's.
    pub trust_domain: String,
    /// `host:port` of the peer control plane's gRPC listener (its federation endpoint).
    pub address: String,
    /// The peer's root certificate(s), PEM: its control plane is verified against them, and its
    /// workloads' identities (of `trustDomain` only) too.
    pub root_pem: String,
    /// The link secret the peer issued (it verifies it on every connection).
    pub secret: String,
    /// When the credential expires (Unix seconds).
    pub expires_unix: u64,
    /// The peer's network (its MeshConfig `cluster.network`; empty: the same as every network).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network: String,
    /// `ip:port` of the peer's east-west gateways. When set, `address` is one of them and the
    /// link stream goes through them (reserved SNI `control.weft-system.<cluster>.weft`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Only the peer's exported services of these namespaces are imported (empty: every
    /// namespace). Set with `weft link apply --namespaces shop,web`, changed with
    /// `weft link namespaces <cluster> ...`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
}

/// Checks a link's namespace restriction (`namespaces`): DNS labels, no repeats.
pub fn validate_link_namespaces(namespaces: &[String]) -> Result<(), ConfigError> {
    for (i, ns) in namespaces.iter().enumerate() {
        if !valid_name(ns) {
            return Err(ConfigError::invalid(
                format!("namespaces[{i}]"),
                format!("{ns:?} is not a namespace name (a DNS label: lowercase letters, digits, '-')"),
            ));
        }
        if namespaces[..i].contains(ns) {
            return Err(ConfigError::invalid(format!("namespaces[{i}]"), format!("{ns:?} is listed twice")));
        }
    }
    Ok(())
}

impl LinkSpec {
    /// Whether services of `namespace` are imported over this link.
    pub fn imports_namespace(&self, namespace: &str) -> bool {
        self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace)
    }

    /// Where the link stream may be opened, in order: the peer's gateways when it has any, else
    /// `address` (its control plane's gRPC listener).
    pub fn dial_addresses(&self) -> Vec<String> {
        if self.gateways.is_empty() {
            vec![self.address.clone()]
        } else {
            self.gateways.clone()
        }
    }
}

/// Whether `td` is a trust domain weft accepts (lowercase letters, digits, '.', '-', '_').
pub fn valid_trust_domain(td: &str) -> bool {
    !td.is_empty()
        && td.len() <= 255
        && td.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
}

impl Validate for LinkSpec {
    fn validate(&self) -> Result<(), ConfigError> {
        if !valid_name(&self.cluster) {
            return Err(ConfigError::invalid("cluster", "must be the peer cluster's name (a DNS label)"));
        }
        if !valid_trust_domain(&self.trust_domain) {
            return Err(ConfigError::invalid(
                "trustDomain",
                format!("{:?} must be lowercase letters, digits, '.', '-', '_'", self.trust_domain),
            ));
        }
        if self.address.parse::<SocketAddr>().is_err() {
            return Err(ConfigError::invalid(
                "address",
                format!("{:?} must be ip:port of the peer control plane's gRPC listener", self.address),
            ));
        }
        if !self.root_pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(ConfigError::invalid("rootPem", "must hold the peer's root certificate in PEM"));
        }
        if self.secret.is_empty() {
            return Err(ConfigError::invalid("secret", "must hold the link secret from `weft link create`"));
        }
        validate_gateways("gateways", &self.gateways)?;
        validate_link_namespaces(&self.namespaces)?;
        Ok(())
    }
}

#[cfg(test)]
mod virtual_ip_tests {
    use super::*;

    #[test]
    fn virtual_ip_range_is_checked_and_the_error_names_the_field() {
        let range = |r: &str| VirtualIps { range: r.into() }.parse();
        assert_eq!(range("240.240.0.0/16").unwrap(), Some(("240.240.0.0".parse().unwrap(), 16)));
        assert_eq!(range("").unwrap(), None, "empty: off");
        for bad in ["240.240.0.0", "240.240.0.1/16", "240.240.0.0/30", "fd00::/64", "127.0.0.0/8", "x/16"] {
            let e = range(bad).unwrap_err().to_string();
            assert!(e.contains("virtualIps.range"), "{bad}: {e}");
        }
        let mut m = MeshConfigSpec::default();
        m.virtual_ips.range = "10.0.0.0/33".into();
        assert!(m.validate().is_err());
    }
}
