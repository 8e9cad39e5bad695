//! Primary-remote: one control plane (the primary) serves proxies of several clusters. A remote
//! cluster has no control plane of its own; the primary declares it (MeshConfig `remoteClusters`:
//! name, network, gateways), its proxies follow the primary through the primary's east-west
//! gateway (reserved SNI `control.weft-system.<primary>.weft`), and its Workloads register with
//! the primary (`cluster: <remote>`, on the remote's network by default).
//!
//! ```text
//!  remote cluster (net-r)                              primary (net-p)
//!  sidecar / gateway ══ TLS, SNI control.weft-system.<primary>.weft ══► gateway ──► control plane
//!  sidecar ══ mTLS, SNI <port>.<svc>.<ns>.<primary>.weft ═════════════► gateway ──► sidecar
//!  gateway ◄═ mTLS, SNI <port>.<svc>.<ns>.<remote>.weft ══════════════════════════ sidecar
//! ```
//!
//! The catalog then holds endpoints of several networks for proxies of several networks, so
//! discovery gives each proxy its own view ([`for_proxy`]): an endpoint of another cluster on
//! another network than the proxy's gets that cluster's gateway as its sidecar address (the
//! same rerouting a link applies at import, [`crate::catalog::through_gateways`]).

use crate::catalog::{Catalog, Instance};
use crate::catalog::{CatalogService, PeerNetwork};
use std::borrow::Cow;
use std::collections::BTreeMap;
use weft_api::kinds::MeshConfigSpec;

/// Where a proxy runs: its cluster and its network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Place {
    pub cluster: String,
    pub network: String,
}

/// The clusters a MeshConfig places: this one and its remote clusters, with their networks and
/// gateways (addresses that do not parse are left out; the MeshConfig's validation refuses them).
pub fn declared_networks(mesh: &MeshConfigSpec) -> BTreeMap<String, PeerNetwork> {
    let parse = |gws: &[String]| gws.iter().filter_map(|g| g.parse().ok()).collect();
    let mut out = BTreeMap::new();
    out.insert(
        mesh.cluster.name.clone(),
        PeerNetwork { network: mesh.cluster.network.clone(), gateways: parse(&mesh.cluster.gateways) },
    );
    for r in &mesh.remote_clusters {
        out.entry(r.name.clone())
            .or_insert_with(|| PeerNetwork { network: r.network.clone(), gateways: parse(&r.gateways) });
    }
    out
}

/// Why a proxy's Hello names a cluster that cannot be where it runs.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HelloClusterError {
    /// The proxy's config names another cluster than its bootstrap token.
    #[error(
        "this {mode} names cluster {hello:?} in its config (`cluster:`) but its bootstrap token was made for cluster {token:?} (`weft token create --cluster {token}`); set `cluster: {token}` in the proxy's config, or give it a token made with `--cluster {hello}`"
    )]
    Contradicts { mode: String, hello: String, token: String },
    /// The proxy's config names a cluster that this control plane does not serve.
    #[error(
        "this {mode} names cluster {hello:?} in its config (`cluster:`), which is neither this control plane's cluster ({own:?}) nor one of its remote clusters [{remotes}]; declare it in MeshConfig `remoteClusters` (name, network, gateways), or fix the proxy's `cluster:`"
    )]
    Undeclared { mode: String, hello: String, own: String, remotes: String },
}

/// The cluster a proxy is placed in by what it was given (primary-remote): its token's cluster
/// when the token names one, else the cluster its config names in its Hello (`hello`, empty for
/// none), else none (its Workload's, then this control plane's, [`place_for`]). A Hello cluster
/// that contradicts the token, or that `mesh` declares neither as its own cluster nor in
/// `remoteClusters`, is refused.
pub fn asserted_cluster(
    mesh: &MeshConfigSpec,
    token: Option<&str>,
    hello: &str,
    mode: &str,
) -> Result<Option<String>, HelloClusterError> {
    let mode = if mode.is_empty() { "proxy" } else { mode }.to_string();
    if hello.is_empty() {
        return Ok(token.map(str::to_string));
    }
    if let Some(token) = token {
        if token != hello {
            return Err(HelloClusterError::Contradicts { mode, hello: hello.into(), token: token.into() });
        }
        return Ok(Some(token.into()));
    }
    if hello != mesh.cluster.name && !mesh.remote_clusters.iter().any(|r| r.name == hello) {
        let remotes = mesh.remote_clusters.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", ");
        return Err(HelloClusterError::Undeclared {
            mode,
            hello: hello.into(),
            own: mesh.cluster.name.clone(),
            remotes,
        });
    }
    Ok(Some(hello.into()))
}

/// Where the proxy of `identity` (fronting `workload`, or any Workload running as it) runs: the
/// cluster its token or its Hello names (`token_cluster`, [`asserted_cluster`]), else its Workload's, else this control
/// plane's; the network of its Workload (in that cluster), else its cluster's declared network.
pub fn place_for(cat: &Catalog, token_cluster: Option<&str>, identity: &str, namespace: &str, workload: &str) -> Place {
    let mine = |i: &&Instance| i.identity == identity && (workload.is_empty() || i.name == workload);
    let fronted: Option<&Instance> =
        cat.services.values().filter(|s| s.namespace == namespace).flat_map(|s| s.instances.iter()).find(mine);
    let cluster = token_cluster
        .map(str::to_string)
        .or_else(|| fronted.map(|i| i.cluster.clone()))
        .unwrap_or_else(|| cat.mesh.cluster.name.clone());
    let network = fronted
        .filter(|i| i.cluster == cluster)
        .map(|i| i.network.clone())
        .or_else(|| cat.networks.get(&cluster).map(|n| n.network.clone()))
        .unwrap_or_default();
    Place { cluster, network }
}

/// Service `s` as the proxy at `place` dials it (`None`: as the catalog holds it): endpoints of
/// another cluster on another network go through that cluster's gateways.
pub fn for_proxy<'a>(cat: &Catalog, place: Option<&Place>, s: &'a CatalogService) -> Cow<'a, CatalogService> {
    match place {
        // Cloned only when an instance changes (not for every other cluster's service).
        Some(p) if s.instances.iter().any(|i| crate::catalog::rerouted(&p.cluster, &p.network, &cat.networks, i)) => {
            Cow::Owned(crate::catalog::through_gateways(&p.cluster, &p.network, &cat.networks, s))
        }
        _ => Cow::Borrowed(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_api::kinds::RemoteCluster;

    fn instance(name: &str, cluster: &str, network: &str) -> Instance {
        Instance {
            name: name.into(),
            address: "10.0.0.1:8080".parse().unwrap(),
            sidecar: "10.0.0.1:15006".parse().unwrap(),
            identity: format!("spiffe://td/ns/default/sa/{name}"),
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

    fn catalog() -> Catalog {
        let mut mesh = MeshConfigSpec::default();
        mesh.cluster.name = "primary".into();
        mesh.cluster.network = "net-p".into();
        mesh.cluster.gateways = vec!["192.0.2.1:15443".into()];
        mesh.remote_clusters = vec![RemoteCluster {
            name: "remote".into(),
            network: "net-r".into(),
            gateways: vec!["192.0.2.2:15443".into()],
        }];
        let svc = CatalogService {
            name: "api".into(),
            namespace: "default".into(),
            instances: vec![instance("p", "primary", "net-p"), instance("r", "remote", "net-r")],
            ..Default::default()
        };
        Catalog {
            revision: 1,
            networks: declared_networks(&mesh),
            mesh,
            services: [(("default".to_string(), "api".to_string()), svc.into())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn each_proxy_reaches_other_networks_through_their_gateways() {
        let cat = catalog();
        let s = &cat.services[&("default".to_string(), "api".to_string())];
        let sidecars = |place: &Place| -> Vec<String> {
            for_proxy(&cat, Some(place), s).instances.iter().map(|i| format!("{} {}", i.name, i.sidecar)).collect()
        };
        let primary = Place { cluster: "primary".into(), network: "net-p".into() };
        assert_eq!(sidecars(&primary), ["p 10.0.0.1:15006", "r 192.0.2.2:15443"]);
        let remote = Place { cluster: "remote".into(), network: "net-r".into() };
        assert_eq!(sidecars(&remote), ["p 192.0.2.1:15443", "r 10.0.0.1:15006"]);
        // No place: as the catalog holds it.
        assert!(matches!(for_proxy(&cat, None, s), Cow::Borrowed(_)));
    }

    #[test]
    fn a_hello_cluster_places_a_proxy_unless_it_contradicts_the_token_or_is_undeclared() {
        let cat = catalog();
        let m = &cat.mesh;
        assert_eq!(asserted_cluster(m, None, "", "sidecar"), Ok(None));
        assert_eq!(asserted_cluster(m, Some("remote"), "", "sidecar"), Ok(Some("remote".into())));
        assert_eq!(asserted_cluster(m, None, "remote", "gateway"), Ok(Some("remote".into())));
        assert_eq!(asserted_cluster(m, None, "primary", "gateway"), Ok(Some("primary".into())));
        assert_eq!(asserted_cluster(m, Some("remote"), "remote", "gateway"), Ok(Some("remote".into())));
        let e = asserted_cluster(m, Some("remote"), "primary", "gateway").unwrap_err().to_string();
        assert!(e.contains("\"primary\"") && e.contains("--cluster remote") && e.contains("cluster: remote"), "{e}");
        let e = asserted_cluster(m, None, "far", "sidecar").unwrap_err().to_string();
        assert!(e.starts_with("this sidecar names cluster \"far\""), "{e}");
        assert!(e.contains("remoteClusters") && e.contains("[remote]"), "{e}");
    }

    #[test]
    fn a_proxy_is_placed_by_its_token_then_its_workload() {
        let cat = catalog();
        let id = "spiffe://td/ns/default/sa/r";
        // The remote Workload it fronts places it, on its Workload's network.
        assert_eq!(
            place_for(&cat, None, id, "default", ""),
            Place { cluster: "remote".into(), network: "net-r".into() }
        );
        // The token's cluster wins; the network is then its cluster's declared one.
        let gw = place_for(&cat, Some("remote"), "spiffe://td/ns/default/sa/gw", "default", "");
        assert_eq!(gw, Place { cluster: "remote".into(), network: "net-r".into() });
        // Neither: this control plane's cluster and network.
        let p = place_for(&cat, None, "spiffe://td/ns/default/sa/web", "default", "");
        assert_eq!(p, Place { cluster: "primary".into(), network: "net-p".into() });
    }
}
