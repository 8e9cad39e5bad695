//! Mesh DNS for a remote cluster (primary-remote). A remote cluster has no control plane, so its
//! pods have no weft DNS of their own; `weft dns --control <primary gateway>` runs one there that
//! follows this control plane (gRPC `Naming.Table`, through the primary's east-west gateway like
//! every remote proxy) and answers every naming form from this catalog, as this control plane's
//! own DNS would if it ran in that cluster: "this cluster" is the remote one (its instances first,
//! `<svc>.service.consul` is its own, the primary's instances are another cluster's).
//!
//! ```text
//!  remote cluster                                   primary
//!  pod ──DNS──► weft dns ══ Naming.Table (TLS, SNI control.weft-system.<primary>.weft) ══► gateway ──► control plane
//! ```

use crate::catalog::{dns_table, Catalog};
use crate::tokens::Tokens;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status};
use weft_api::pb;

/// The naming table of `cat` as the DNS of `cluster` answers it (`cluster` is this control
/// plane's own or one of its remote clusters).
pub fn table_for(cat: &Catalog, cluster: &str) -> pb::NamingTable {
    let t = dns_table(cat);
    let own = cat.mesh.cluster.name.as_str();
    let named = |c: &str| if c.is_empty() { own.to_string() } else { c.to_string() };
    pb::NamingTable {
        cluster: cluster.to_string(),
        links: t.links.iter().map(|l| pb::NamingLink { cluster: l.cluster.clone(), up: l.up }).collect(),
        services: t
            .services
            .into_iter()
            .map(|s| pb::NamingService {
                instances: s
                    .instances
                    .iter()
                    .map(|i| pb::NamingInstance {
                        address: i.address.to_string(),
                        port: u32::from(i.port),
                        tags: i.tags.clone(),
                        healthy: i.healthy,
                        node: i.node.clone(),
                        cluster: named(&i.cluster),
                    })
                    .collect(),
                // Without clusters or instances a service is "this cluster's": name the primary.
                clusters: if s.clusters.is_empty() && s.instances.is_empty() {
                    vec![own.to_string()]
                } else {
                    s.clusters
                },
                vips: s
                    .vips
                    .iter()
                    .map(|v| pb::VirtualIp {
                        cluster: v.cluster.clone(),
                        address: v.address.to_string(),
                        ..Default::default()
                    })
                    .collect(),
                name: s.name,
                namespace: s.namespace,
            })
            .collect(),
    }
}

/// Why a naming table from a control plane cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("naming table: {field}: {value:?} is not an IP address")]
pub struct TableError {
    field: String,
    value: String,
}

/// A naming table as weft DNS answers from it. An address that does not parse refuses the whole
/// table (the DNS keeps answering from its last good one).
pub fn dns_table_from(t: &pb::NamingTable) -> Result<weft_dns::Table, TableError> {
    let ip = |field: String, v: &str| v.parse().map_err(|_| TableError { field, value: v.chars().take(64).collect() });
    let mut services = Vec::with_capacity(t.services.len());
    for (i, s) in t.services.iter().enumerate() {
        let mut instances = Vec::with_capacity(s.instances.len());
        for (j, n) in s.instances.iter().enumerate() {
            instances.push(weft_dns::Instance {
                address: ip(format!("services[{i}].instances[{j}].address"), &n.address)?,
                port: u16::try_from(n.port).unwrap_or(0),
                tags: n.tags.clone(),
                healthy: n.healthy,
                node: n.node.clone(),
                cluster: n.cluster.clone(),
            });
        }
        let mut vips = Vec::with_capacity(s.vips.len());
        for (j, v) in s.vips.iter().enumerate() {
            vips.push(weft_dns::VirtualIp {
                cluster: v.cluster.clone(),
                address: ip(format!("services[{i}].vips[{j}].address"), &v.address)?,
            });
        }
        services.push(weft_dns::ServiceEntry {
            name: s.name.clone(),
            namespace: s.namespace.clone(),
            instances,
            clusters: s.clusters.clone(),
            vips,
        });
    }
    Ok(weft_dns::Table {
        cluster: t.cluster.clone(),
        services,
        links: t.links.iter().map(|l| weft_dns::Link { cluster: l.cluster.clone(), up: l.up }).collect(),
    })
}

/// gRPC `Naming`: the naming table, streamed to a remote cluster's weft DNS.
pub struct NamingService {
    /// Open naming streams per token, at most `max_streams_per_token` each (as discovery's).
    pub streams: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    pub max_streams_per_token: usize,
    pub catalog: watch::Receiver<Arc<Catalog>>,
    pub tokens: Arc<Tokens>,
    pub trust_domain: String,
    pub stop: watch::Receiver<bool>,
}

type TableStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<pb::NamingTable, Status>> + Send>>;

#[tonic::async_trait]
impl pb::naming_server::Naming for NamingService {
    type TableStream = TableStream;

    async fn table(&self, req: Request<pb::NamingRequest>) -> Result<Response<TableStream>, Status> {
        let id = crate::ca::bootstrap_identity(&self.tokens, &self.trust_domain, &req)?;
        let header = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let token_cluster = self.tokens.verify_header_in(header).ok().and_then(|(_, c)| c);
        let asked = &req.get_ref().cluster;
        if !asked.is_empty() && !weft_api::valid_name(asked) {
            return Err(Status::invalid_argument(format!(
                "NamingRequest.cluster {:?} must be a cluster's name (a DNS label; `weft dns --cluster`)",
                asked.chars().take(64).collect::<String>()
            )));
        }
        let mesh = self.catalog.borrow().mesh.clone();
        let cluster = crate::remote::asserted_cluster(&mesh, token_cluster.as_deref(), asked, "weft dns")
            .map_err(|e| Status::failed_precondition(e.to_string()))?
            .unwrap_or_else(|| mesh.cluster.name.clone());
        let token = header.unwrap_or_default().to_string();
        let slot =
            crate::discovery::StreamSlot::take(&self.streams, &token, self.max_streams_per_token, "naming table")?;
        tracing::info!(identity = %id, %cluster, "weft dns follows the naming table");
        let (tx, rx) = mpsc::channel::<Result<pb::NamingTable, Status>>(2);
        let (mut catalog, mut stop) = (self.catalog.clone(), self.stop.clone());
        tokio::spawn(async move {
            // Held for as long as the stream is open.
            let _slot = slot;
            let mut last: Option<pb::NamingTable> = None;
            loop {
                let table = table_for(&catalog.borrow_and_update(), &cluster);
                if last.as_ref() != Some(&table) {
                    if tx.send(Ok(table.clone())).await.is_err() {
                        break;
                    }
                    last = Some(table);
                }
                tokio::select! {
                    changed = catalog.changed() => if changed.is_err() { break },
                    _ = tx.closed() => break,
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_round_trips_and_names_the_primary_on_its_instances() {
        let mut cat = Catalog::default();
        cat.mesh.cluster.name = "core".into();
        let svc = crate::catalog::CatalogService {
            name: "api".into(),
            namespace: "default".into(),
            instances: vec![crate::catalog::Instance {
                name: "api-1".into(),
                address: "10.0.0.1:8080".parse().unwrap(),
                sidecar: "10.0.0.1:15006".parse().unwrap(),
                identity: String::new(),
                cluster: String::new(),
                network: String::new(),
                locality: String::new(),
                labels: Default::default(),
                tags: vec!["v1".into()],
                healthy: true,
                visibility: None,
                weight: 1,
                mtls: Default::default(),
            }],
            ..Default::default()
        };
        cat.services.insert(("default".into(), "api".into()), svc.into());
        cat.vips.insert(("default".into(), "api".into(), String::new()), "240.0.0.1".parse().unwrap());
        let t = table_for(&cat, "edge");
        assert_eq!(t.cluster, "edge");
        assert_eq!(t.services[0].instances[0].cluster, "core");
        let d = dns_table_from(&t).unwrap();
        assert_eq!(d.cluster, "edge");
        assert_eq!(d.services[0].instances[0].address, "10.0.0.1".parse::<std::net::IpAddr>().unwrap());
        assert_eq!(d.services[0].instances[0].tags, ["v1"]);
        assert_eq!(d.services[0].vips[0].address, "240.0.0.1".parse::<std::net::IpAddr>().unwrap());
        let mut bad = t.clone();
        bad.services[0].instances[0].address = "nope".into();
        let e = dns_table_from(&bad).unwrap_err().to_string();
        assert!(e.contains("services[0].instances[0].address") && e.contains("nope"), "{e}");
    }
}
