//! The catalog: every service and its instances, as the registry sees them right now, in the form
//! discovery and DNS consume. Built from resources (whatever their source) and health.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use weft_api::kinds::MeshConfigSpec;
use weft_api::proxy::Protocol;
use weft_api::resource::Resource;

#[derive(Clone, Debug, PartialEq)]
pub struct Catalog {
    /// Changes whenever anything in the catalog may have changed.
    pub revision: u64,
    pub mesh: MeshConfigSpec,
    pub services: BTreeMap<(String, String), CatalogService>,
    /// The roots of linked clusters' trust domains (`weft link`), by trust domain: proxies
    /// accept a peer of one of these domains only under that domain's roots.
    pub peer_bundles: BTreeMap<String, Vec<Vec<u8>>>,
}

/// What linked clusters contribute to the catalog (see [`crate::federation`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Imported {
    /// Services of other clusters with their instances (already marked with their cluster).
    pub services: Vec<CatalogService>,
    pub peer_bundles: BTreeMap<String, Vec<Vec<u8>>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CatalogService {
    pub name: String,
    pub namespace: String,
    pub ports: Vec<(u16, Protocol)>,
    /// The ports declared `allowConnect`.
    pub connect_ports: Vec<u16>,
    pub tags: Vec<String>,
    /// Shared with linked clusters (`spec.export`).
    pub export: bool,
    pub instances: Vec<Instance>,
    /// Clusters to fail over to, in order (`spec.failover`); this cluster's own policy, never
    /// imported.
    pub failover: Vec<String>,
    /// A fixed split between clusters (`spec.clusterWeights`).
    pub cluster_weights: BTreeMap<String, u32>,
    /// `spec.outlierDetection`.
    pub outlier_detection: Option<weft_api::traffic::ServiceOutlierDetection>,
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
}

/// The DNS server's view of the catalog.
pub fn dns_table(cat: &Catalog) -> weft_dns::Table {
    weft_dns::Table {
        cluster: cat.mesh.cluster.name.clone(),
        services: cat
            .services
            .values()
            .map(|s| weft_dns::ServiceEntry {
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
                    instances: vec![],
                    failover: spec.failover.clone(),
                    cluster_weights: spec.cluster_weights.clone(),
                    outlier_detection: spec.outlier_detection.clone(),
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
                network: w.spec.network.clone().unwrap_or_else(|| mesh.cluster.network.clone()),
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
            });
        }
    }
    for s in services.values_mut() {
        s.instances.sort_by(|a, b| a.name.cmp(&b.name));
    }
    Catalog { revision, mesh, services, peer_bundles: BTreeMap::new() }
}

/// Adds what linked clusters export: a service of the same name and namespace as a local one
/// gets the remote instances too (namespace sameness, local instances first); others are added
/// as they are. Imported services are never exported again.
pub fn merge_imported(cat: &mut Catalog, imported: &Imported) {
    for s in &imported.services {
        let key = (s.namespace.clone(), s.name.clone());
        match cat.services.get_mut(&key) {
            Some(local) => {
                local.instances.extend(s.instances.iter().cloned());
                for p in &s.ports {
                    if !local.ports.iter().any(|(n, _)| *n == p.0) {
                        local.ports.push(*p);
                    }
                }
            }
            None => {
                let mut s = s.clone();
                s.export = false;
                // A peer's routing policy is its own: here, this cluster's Service decides.
                (s.failover, s.cluster_weights, s.outlier_detection) = (vec![], BTreeMap::new(), None);
                cat.services.insert(key, s);
            }
        }
    }
    for (td, roots) in &imported.peer_bundles {
        cat.peer_bundles.entry(td.clone()).or_default().extend(roots.iter().cloned());
    }
}
