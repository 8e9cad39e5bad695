//! The catalog: every service and its instances, as the registry sees them right now, in the form
//! discovery and DNS consume. Built from resources (whatever their source) and health.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use weft_api::kinds::MeshConfigSpec;
use weft_api::proxy::Protocol;
use weft_api::resource::Resource;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Catalog {
    /// Changes whenever anything in the catalog may have changed.
    pub revision: u64,
    pub mesh: MeshConfigSpec,
    /// Each service behind its own `Arc`: a catalog built from the last one shares every
    /// service that did not change (pointer-equal), so cloning a catalog, merging imports and
    /// comparing with the last one cost the services that changed, not every service.
    pub services: BTreeMap<(String, String), Arc<CatalogService>>,
    /// The roots of linked clusters' trust domains (`weft link`), by trust domain: proxies
    /// accept a peer of one of these domains only under that domain's roots.
    pub peer_bundles: BTreeMap<String, Vec<Vec<u8>>>,
    /// Linked clusters, and whether each link is up (`active` or `restored`).
    pub links: BTreeMap<String, bool>,
    /// Virtual IPs (see [`crate::vips`]) by (namespace, service, cluster); an empty cluster is
    /// the whole service's, another one its mirror's.
    pub vips: BTreeMap<VipKey, std::net::Ipv4Addr>,
    /// Every cluster this catalog knows the place of, by name: this one (`cluster.network`,
    /// `cluster.gateways`), its remote clusters (`remoteClusters`) and the linked clusters (their
    /// snapshots). Discovery reroutes each proxy's endpoints of other networks through them
    /// ([`crate::remote`]).
    pub networks: BTreeMap<String, PeerNetwork>,
    /// This mesh's own roots and the one new certificates are signed under (see
    /// [`crate::rotation`]); empty until the CA's source has contributed them.
    pub ca: CaView,
    /// Every HTTPRoute, GRPCRoute and TCPRoute, by (namespace, name, kind); discovery sends each
    /// with the Services its parentRefs name.
    pub routes: Vec<CatalogRoute>,
    /// Every BackendPolicy's condition (see [`crate::policies`]).
    pub policies: Vec<crate::policies::PolicyStatus>,
    /// Per service: the catalog revision in which it last changed (set by the registry): what
    /// discovery keeps each service's render by, so one service's change renders that service
    /// again, not every service a proxy sees.
    pub service_revisions: BTreeMap<(String, String), u64>,
    /// AuthorizationPolicies and what rendering them needs (see [`crate::authz`]).
    pub authz: crate::authz::AuthzCatalog,
    /// Every RequestAuthentication, oldest first (see [`crate::request_authn`]).
    pub request_authn: Vec<crate::request_authn::Policy>,
    /// Every Telemetry, by namespace and name (see [`crate::telemetry`]).
    pub telemetry: Vec<weft_api::resource::Typed<weft_api::telemetry::TelemetrySpec>>,
}

/// A route as discovery sends it.
#[derive(Clone, Debug, PartialEq)]
pub struct CatalogRoute {
    pub name: String,
    pub namespace: String,
    pub route: weft_api::route::RouteSpec,
    /// `name.namespace` of its parents and of the Services it sends to (backends, mirrors).
    pub parents: Vec<String>,
    pub backends: Vec<String>,
    /// The ResiliencePolicy of each rule that has one, by rule name (see
    /// [`crate::resilience::attach_routes`]).
    pub resilience: BTreeMap<String, weft_api::resilience::Resilience>,
}

impl Catalog {
    /// The routes attached to the service `key` (`name.namespace`).
    pub fn routes_of<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a CatalogRoute> + 'a {
        self.routes.iter().filter(move |r| r.parents.iter().any(|p| p == key))
    }
}

/// The CA as proxies and linked clusters see it: during a root rotation both roots are trusted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CaView {
    /// DER, the mesh's trust domain's roots.
    pub roots: Vec<Vec<u8>>,
    /// SHA-256 of the root new certificates chain to.
    pub signing_root: Vec<u8>,
}

/// (namespace, service, cluster): what a virtual IP names; cluster empty: the whole service.
pub type VipKey = (String, String, String);

/// What linked clusters contribute to the catalog (see [`crate::federation`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Imported {
    /// Services of other clusters with their instances (already marked with their cluster),
    /// shared with the link's state: an unchanged service is the same `Arc` in every import.
    pub services: Vec<Arc<CatalogService>>,
    pub peer_bundles: BTreeMap<String, Vec<Vec<u8>>>,
    /// Per linked cluster: its network and east-west gateways (multi-network).
    pub networks: BTreeMap<String, PeerNetwork>,
    /// Every linked cluster, and whether its link is up.
    pub links: BTreeMap<String, bool>,
    /// The CA's roots (only the CA's own source sets it).
    pub ca: Option<CaView>,
}

/// A linked cluster's network and the `ip:port` of its east-west gateways.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PeerNetwork {
    pub network: String,
    pub gateways: Vec<SocketAddr>,
}

/// Istio's rule: two networks are the same when equal, and an empty network is the same as
/// every network.
pub fn same_network(a: &str, b: &str) -> bool {
    a.is_empty() || b.is_empty() || a == b
}

/// A service as the proxies of cluster `local_cluster` on network `local_network` dial it: each
/// instance of another cluster on another network than `local_network` gets one of its cluster's gateways as its sidecar address (spread over them in
/// turn; it keeps its SNI, which names its cluster, so that gateway routes it); an instance on
/// another network whose cluster has no gateway is left out (it cannot be reached). Instances on
/// the same network, and those of `local_cluster` itself, are dialled as they are. Used at import
/// time (catalog-wide, for this cluster's network) and per proxy by discovery.
pub(crate) fn through_gateways(
    local_cluster: &str,
    local_network: &str,
    networks: &BTreeMap<String, PeerNetwork>,
    s: &CatalogService,
) -> CatalogService {
    let mut s = s.clone();
    reroute(local_cluster, local_network, networks, &mut s);
    s
}

/// Whether [`through_gateways`] changes instance `i` (gives it a gateway, or leaves it out).
pub(crate) fn rerouted(
    local_cluster: &str,
    local_network: &str,
    networks: &BTreeMap<String, PeerNetwork>,
    i: &Instance,
) -> bool {
    if i.cluster == local_cluster || local_network.is_empty() {
        return false;
    }
    let network = if i.network.is_empty() {
        networks.get(&i.cluster).map(|p| p.network.as_str()).unwrap_or_default()
    } else {
        i.network.as_str()
    };
    !same_network(local_network, network)
}

/// [`through_gateways`] in place.
fn reroute(local_cluster: &str, local_network: &str, networks: &BTreeMap<String, PeerNetwork>, s: &mut CatalogService) {
    let mut turn = 0usize;
    s.instances.retain_mut(|i| {
        if i.cluster == local_cluster {
            return true;
        }
        if !rerouted(local_cluster, local_network, networks, i) {
            return true;
        }
        let peer = networks.get(&i.cluster);
        let Some(gateways) = peer.map(|p| &p.gateways).filter(|g| !g.is_empty()) else { return false };
        i.sidecar = gateways[turn % gateways.len()];
        turn += 1;
        true
    });
}

/// `Default` is an empty, unexported service with no name (tests fill in what they need).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CatalogService {
    pub name: String,
    pub namespace: String,
    pub ports: Vec<(u16, Protocol)>,
    /// The ports declared `allowConnect`.
    pub connect_ports: Vec<u16>,
    pub tags: Vec<String>,
    /// Shared with linked clusters (`spec.export`).
    pub export: bool,
    /// Kept to this cluster (`spec.clusterLocal`): never exported, and linked clusters' services
    /// of the same name and namespace are not merged into it.
    pub cluster_local: bool,
    pub instances: Vec<Instance>,
    /// The clusters that have this service: this one when it is defined here, and each linked
    /// cluster that exports it (whether or not it has endpoints now).
    pub clusters: Vec<String>,
    /// Clusters to fail over to, in order (`spec.failover`); this cluster's own policy, never
    /// imported.
    pub failover: Vec<String>,
    /// A fixed split between clusters (`spec.clusterWeights`).
    pub cluster_weights: BTreeMap<String, u32>,
    /// `spec.outlierDetection`, with the BackendPolicy's `outlierDetection` fields over it.
    pub outlier_detection: Option<weft_api::traffic::ServiceOutlierDetection>,
    /// The BackendPolicy in force (the oldest naming this Service; see [`crate::policies`]).
    pub backend_policy: Option<weft_api::backend_policy::BackendPolicy>,
    /// The ResiliencePolicy attached to it ([`crate::resilience`]); this cluster's own, never
    /// imported.
    pub resilience: Option<weft_api::resilience::Resilience>,
}

impl CatalogService {
    /// `clusters` and the clusters its instances name (a primary's remote clusters), sorted.
    pub fn all_clusters(&self) -> Vec<&str> {
        let mut v: Vec<&str> =
            self.clusters.iter().map(String::as_str).chain(self.instances.iter().map(|i| i.cluster.as_str())).collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    /// The Workload's name.
    pub name: String,
    pub address: SocketAddr,
    pub sidecar: SocketAddr,
    /// SPIFFE ID URI.
    pub identity: String,
    pub cluster: String,
    pub network: String,
    pub locality: String,
    pub labels: BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub healthy: bool,
    /// The namespaces whose services its proxy receives; `None`: every namespace.
    pub visibility: Option<Vec<String>>,
    /// Its share of load balancing (Workload `weight`, default 1).
    pub weight: u32,
    /// Whether its proxy requires mTLS on its port: MeshConfig `mtls` and PeerAuthentication
    /// resolved ([`weft_api::peer_authentication::resolve`]). Imported instances: STRICT.
    pub mtls: weft_api::peer_authentication::MtlsMode,
}

/// The DNS server's view of the catalog: services with their instances (and each instance's
/// cluster), the clusters that have each, their virtual IPs, and which links are up.
pub fn dns_table(cat: &Catalog) -> weft_dns::Table {
    let mut vips: std::collections::HashMap<(&str, &str), Vec<weft_dns::VirtualIp>> = Default::default();
    for ((ns, name, cluster), ip) in &cat.vips {
        vips.entry((ns, name))
            .or_default()
            .push(weft_dns::VirtualIp { cluster: cluster.clone(), address: std::net::IpAddr::V4(*ip) });
    }
    weft_dns::Table {
        cluster: cat.mesh.cluster.name.clone(),
        links: cat.links.iter().map(|(c, up)| weft_dns::Link { cluster: c.clone(), up: *up }).collect(),
        services: cat
            .services
            .values()
            .map(|s| weft_dns::ServiceEntry {
                clusters: s.clusters.clone(),
                vips: vips.remove(&(s.namespace.as_str(), s.name.as_str())).unwrap_or_default(),
                name: s.name.clone(),
                namespace: s.namespace.clone(),
                instances: s
                    .instances
                    .iter()
                    .map(|i| weft_dns::Instance {
                        address: i.address.ip(),
                        port: i.address.port(),
                        tags: s.tags.iter().chain(&i.tags).cloned().collect(),
                        healthy: i.healthy,
                        node: i.name.clone(),
                        cluster: i.cluster.clone(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// Health of a workload (`namespace/name`): true when passing or without checks.
pub type HealthFn<'a> = &'a dyn Fn(&str) -> bool;

/// Builds the catalog from the merged resources.
pub fn build<'a>(revision: u64, resources: impl IntoIterator<Item = &'a Resource>, healthy: HealthFn<'_>) -> Catalog {
    let resources: Vec<&Resource> = resources.into_iter().collect();
    let mesh = resources
        .iter()
        .find_map(|r| match r {
            Resource::MeshConfig(m) => Some(m.spec.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let mut services: BTreeMap<(String, String), CatalogService> = BTreeMap::new();
    let networks = crate::remote::declared_networks(&mesh);
    for r in &resources {
        if let Resource::Service(s) = r {
            let spec = &s.spec;
            services.insert(
                (s.metadata.namespace.clone(), s.metadata.name.clone()),
                CatalogService {
                    name: s.metadata.name.clone(),
                    namespace: s.metadata.namespace.clone(),
                    ports: spec.ports.iter().map(|p| (p.port, p.protocol)).collect(),
                    connect_ports: spec.ports.iter().filter(|p| p.allow_connect).map(|p| p.port).collect(),
                    // A Service a Consul registration created has no tags of its own: tags are
                    // per instance. (Older versions copied the first registration's tags here.)
                    tags: if s.metadata.labels.get(crate::consul::SOURCE_LABEL).is_some_and(|v| v == "api") {
                        vec![]
                    } else {
                        spec.tags.clone()
                    },
                    export: spec.export,
                    cluster_local: spec.cluster_local,
                    instances: vec![],
                    clusters: vec![mesh.cluster.name.clone()],
                    failover: spec.failover.clone(),
                    cluster_weights: spec.cluster_weights.clone(),
                    outlier_detection: spec.outlier_detection.clone(),
                    backend_policy: None,
                    resilience: None,
                },
            );
        }
    }
    for r in &resources {
        if let Resource::Workload(w) = r {
            let m = &w.metadata;
            let Some(svc) = services.get_mut(&(m.namespace.clone(), w.spec.service.clone())) else { continue };
            let identity = format!("spiffe://{}/ns/{}/sa/{}", mesh.trust_domain, m.namespace, w.spec.service_account());
            svc.instances.push(Instance {
                name: m.name.clone(),
                address: SocketAddr::new(w.spec.address, w.spec.port),
                sidecar: w.spec.sidecar(),
                identity,
                cluster: w.spec.cluster.clone().unwrap_or_else(|| mesh.cluster.name.clone()),
                // A remote cluster's Workload is on that cluster's declared network by default.
                network: w.spec.network.clone().unwrap_or_else(|| match &w.spec.cluster {
                    Some(c) => networks.get(c).map(|n| n.network.clone()).unwrap_or_default(),
                    None => mesh.cluster.network.clone(),
                }),
                locality: w.spec.locality.clone().unwrap_or_else(|| {
                    [mesh.cluster.region.as_str(), mesh.cluster.zone.as_str()]
                        .iter()
                        .filter(|s| !s.is_empty())
                        .copied()
                        .collect::<Vec<_>>()
                        .join("/")
                }),
                labels: m.labels.clone(),
                tags: w.spec.tags.clone(),
                // No checks: always routable. With checks: only once they pass (a workload the
                // monitor has not probed yet is not routed).
                healthy: w.spec.checks.is_empty() || healthy(&format!("{}/{}", m.namespace, m.name)),
                visibility: w.spec.visibility.clone(),
                weight: w.spec.weight.unwrap_or(weft_api::proxy::DEFAULT_ENDPOINT_WEIGHT),
                mtls: Default::default(),
            });
        }
    }
    resolve_mtls(&mesh, &resources, &mut services);
    for s in services.values_mut() {
        s.instances.sort_by(|a, b| a.name.cmp(&b.name));
    }
    let mut routes: Vec<CatalogRoute> = resources
        .iter()
        .filter_map(|r| {
            let route = r.route()?;
            let m = r.metadata();
            Some(CatalogRoute {
                parents: route.parent_keys(&m.namespace),
                backends: route.backend_keys(&m.namespace),
                name: m.name.clone(),
                namespace: m.namespace.clone(),
                route,
                resilience: BTreeMap::new(),
            })
        })
        .collect();
    routes
        .sort_by(|a, b| (&a.namespace, &a.name, a.route.kind_str()).cmp(&(&b.namespace, &b.name, b.route.kind_str())));
    let policies: Vec<_> = resources
        .iter()
        .filter_map(|r| match r {
            Resource::BackendPolicy(p) => Some(p),
            _ => None,
        })
        .collect();
    let (winners, policies) =
        crate::policies::resolve(&policies, |ns, name| services.contains_key(&(ns.to_string(), name.to_string())));
    for (key, p) in winners {
        let Some(s) = services.get_mut(&key) else { continue };
        s.backend_policy = Some(p.spec.effective(&p.metadata.name));
        if let Some(o) = &p.spec.outlier_detection {
            s.outlier_detection = Some(s.outlier_detection.clone().unwrap_or_default().overlaid(o));
        }
    }
    crate::resilience::attach(&resources, &mut services);
    crate::resilience::attach_routes(&resources, &mut routes);
    let authz = crate::authz::AuthzCatalog::build(&resources, &mesh);
    Catalog {
        authz,
        routes,
        policies,
        revision,
        mesh,
        services: services.into_iter().map(|(k, s)| (k, Arc::new(s))).collect(),
        peer_bundles: BTreeMap::new(),
        links: BTreeMap::new(),
        vips: BTreeMap::new(),
        networks,
        ca: CaView::default(),
        service_revisions: BTreeMap::new(),
        request_authn: crate::request_authn::collect(resources.iter().copied()),
        telemetry: crate::telemetry::collect(resources.iter().copied()),
    }
}

/// Gives every local instance its mTLS mode (MeshConfig `mtls`, then PeerAuthentication).
fn resolve_mtls(
    mesh: &MeshConfigSpec,
    resources: &[&Resource],
    services: &mut BTreeMap<(String, String), CatalogService>,
) {
    use weft_api::peer_authentication::{resolve, Policy};
    let policies: Vec<Policy<'_>> = resources
        .iter()
        .filter_map(|r| match r {
            Resource::PeerAuthentication(p) => Some(Policy {
                namespace: &p.metadata.namespace,
                name: &p.metadata.name,
                created: p.metadata.creation_revision.unwrap_or(u64::MAX),
                spec: &p.spec,
            }),
            _ => None,
        })
        .collect();
    let default = mesh.mtls.map(|m| m.mode).unwrap_or_default();
    for s in services.values_mut() {
        for i in &mut s.instances {
            i.mtls = resolve(default, &policies, &s.namespace, &s.name, &i.name, i.address.port());
        }
    }
}

/// Adds what linked clusters export: a service of the same name and namespace as a local one
/// gets the remote instances too (namespace sameness, local instances first); others are added
/// as they are. Imported services are never exported again.
///
/// An imported service that needs no change here (nothing to reroute through a gateway, no
/// exporter's policy to drop) enters the catalog as the very `Arc` the link holds: an import
/// costs the services that need work, not a copy of every imported one.
pub fn merge_imported(cat: &mut Catalog, imported: Imported) {
    if let Some(ca) = &imported.ca {
        cat.ca = ca.clone();
    }
    let (local_cluster, local_network) = (cat.mesh.cluster.name.clone(), cat.mesh.cluster.network.clone());
    for mut s in imported.services {
        // An importer with no network is on every network: nothing to look at.
        let needs_reroute = !local_network.is_empty()
            && s.instances.iter().any(|i| rerouted(&local_cluster, &local_network, &imported.networks, i));
        if needs_reroute {
            reroute(&local_cluster, &local_network, &imported.networks, Arc::make_mut(&mut s));
        }
        let key = (s.namespace.clone(), s.name.clone());
        match cat.services.get_mut(&key) {
            // Cluster-local: this cluster's callers see only its own endpoints.
            Some(local) if local.cluster_local => {}
            Some(local) => {
                let local = Arc::make_mut(local);
                // This cluster's instances stay first (DNS answers them first).
                local.instances.extend(s.instances.iter().cloned());
                for c in &s.clusters {
                    if !local.clusters.contains(c) {
                        local.clusters.push(c.clone());
                    }
                }
                for p in &s.ports {
                    if !local.ports.iter().any(|(n, _)| *n == p.0) {
                        local.ports.push(*p);
                    }
                }
            }
            None => {
                if !is_bare_import(&s) {
                    let s = Arc::make_mut(&mut s);
                    s.export = false;
                    // A peer's routing policy is its own: here, this cluster's Service decides.
                    (s.failover, s.cluster_weights, s.outlier_detection) = (vec![], BTreeMap::new(), None);
                    s.backend_policy = None;
                    s.resilience = None;
                }
                cat.services.insert(key, s);
            }
        }
    }
    for (cluster, n) in &imported.networks {
        // A linked cluster never takes the place of this one or of a declared remote cluster.
        cat.networks.entry(cluster.clone()).or_insert_with(|| n.clone());
    }
    for (td, roots) in &imported.peer_bundles {
        cat.peer_bundles.entry(td.clone()).or_default().extend(roots.iter().cloned());
    }
    cat.links.extend(imported.links.iter().map(|(c, up)| (c.clone(), *up)));
}

/// Whether an imported service already has none of what [`merge_imported`] drops from a peer's
/// service (its export flag and its routing policy): the link stores services so
/// ([`strip_for_import`]), and they then enter the catalog unchanged.
fn is_bare_import(s: &CatalogService) -> bool {
    !s.export
        && s.failover.is_empty()
        && s.cluster_weights.is_empty()
        && s.outlier_detection.is_none()
        && s.backend_policy.is_none()
        && s.resilience.is_none()
}

/// A peer's service as an importer keeps it: not exported again, without the peer's routing
/// policy (this cluster's Service decides). What [`merge_imported`] would drop, dropped once
/// when the link receives it rather than on every catalog build.
pub fn strip_for_import(mut s: CatalogService) -> CatalogService {
    s.export = false;
    (s.failover, s.cluster_weights, s.outlier_detection) = (vec![], BTreeMap::new(), None);
    s.backend_policy = None;
    s.resilience = None;
    s
}

#[cfg(test)]
mod gateway_tests {
    use super::*;

    fn instance(n: u8, cluster: &str, network: &str) -> Instance {
        Instance {
            name: format!("api-{n}"),
            address: format!("10.1.0.{n}:8080").parse().unwrap(),
            sidecar: format!("10.1.0.{n}:15006").parse().unwrap(),
            identity: "spiffe://west.example/ns/default/sa/api".into(),
            cluster: cluster.into(),
            network: network.into(),
            locality: String::new(),
            labels: BTreeMap::new(),
            tags: vec![],
            healthy: true,
            visibility: None,
            weight: 1,
            mtls: Default::default(),
        }
    }

    #[test]
    fn other_networks_go_through_their_gateways_in_turn() {
        let gws: Vec<SocketAddr> = vec!["203.0.113.1:15443".parse().unwrap(), "203.0.113.2:15443".parse().unwrap()];
        let mut networks = BTreeMap::new();
        networks.insert("west".to_string(), PeerNetwork { network: "net-west".into(), gateways: gws.clone() });
        networks.insert("north".to_string(), PeerNetwork { network: "net-north".into(), gateways: vec![] });
        let svc = CatalogService {
            name: "api".into(),
            namespace: "default".into(),
            instances: vec![
                instance(1, "west", "net-west"),
                instance(2, "west", ""), // the cluster's network
                instance(3, "west", "net-east"),
                instance(4, "west", "net-west"),
                instance(5, "north", "net-north"), // another network and no gateway: unreachable
            ],
            ..Default::default()
        };
        let got = through_gateways("east", "net-east", &networks, &svc);
        let sidecars: Vec<String> = got.instances.iter().map(|i| format!("{} {}", i.name, i.sidecar)).collect();
        assert_eq!(
            sidecars,
            ["api-1 203.0.113.1:15443", "api-2 203.0.113.2:15443", "api-3 10.1.0.3:15006", "api-4 203.0.113.1:15443",]
        );
        // Addresses (what transparent interception and DNS use) are kept.
        assert_eq!(got.instances[0].address, svc.instances[0].address);
        // An importer with no network is on every network: everything is dialled directly.
        assert_eq!(through_gateways("east", "", &networks, &svc), svc);
        // Instances of the proxy's own cluster are dialled as they are, whatever their network.
        let own = through_gateways("west", "net-east", &networks, &svc);
        assert_eq!(own.instances[..4], svc.instances[..4]);
    }
}
