//! `Federation.Export`, the exporting side of a link: verifies the caller's link secret and what
//! it says about itself, records its roots, and streams this cluster's exported services with
//! their healthy local endpoints (a full snapshot at once and on every change).

use super::Federation;
use crate::catalog::{Catalog, CatalogService};
use crate::tokens::{Grant, TokenError, Tokens};
use futures_util::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status};
use weft_api::pb;

pub struct ExportService {
    pub tokens: Arc<Tokens>,
    pub catalog: watch::Receiver<Arc<Catalog>>,
    pub federation: Arc<Federation>,
    /// This cluster's roots (DER).
    pub roots: Vec<Vec<u8>>,
    /// This cluster's proxies: each snapshot says which of the importer's roots they all trust.
    pub proxies: crate::discovery::Proxies,
    pub stop: watch::Receiver<bool>,
    /// Shared by the streams of every importer.
    pub renders: Arc<ExportRenders>,
    /// This cluster's metrics history, for linked clusters' `Federation.Stats`.
    pub stats: crate::stats::Stats,
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::ExportSnapshot, Status>> + Send>>;

/// The exported services of `cat` with their healthy endpoints of this cluster and of its remote
/// clusters (primary-remote; imported endpoints are never passed on). Only the exported services
/// are rendered, not the whole catalog (which holds every linked cluster's imports too).
pub fn render_export(cat: &Catalog) -> Vec<pb::Service> {
    exported(cat).map(|s| render_one(&cat.mesh, s)).collect()
}

/// The services of `cat` this cluster exports.
fn exported(cat: &Catalog) -> impl Iterator<Item = &CatalogService> {
    cat.services.values().map(|s| &**s).filter(|s| s.export && !s.cluster_local)
}

/// One exported service as the link carries it: its healthy endpoints of this cluster and of its
/// remote clusters, each with its Consul tags.
fn render_one(mesh: &weft_api::kinds::MeshConfigSpec, s: &CatalogService) -> pb::Service {
    let ours = |c: &str| c == mesh.cluster.name || mesh.remote_clusters.iter().any(|r| r.name == c);
    let mut own = s.clone();
    own.instances.retain(|i| ours(&i.cluster));
    let mut out = crate::discovery::render_service(&own);
    // This cluster's ResiliencePolicy is for its own callers; a peer decides its own.
    out.resilience = None;
    // Consul tags travel with the link (`<tag>.<svc>.service.<dc>.consul` on the peer).
    let by_addr: std::collections::HashMap<String, &crate::catalog::Instance> =
        own.instances.iter().map(|i| (i.address.to_string(), i)).collect();
    for e in &mut out.endpoints {
        if let Some(i) = by_addr.get(&e.address) {
            e.tags = own.tags.iter().chain(&i.tags).cloned().collect();
        }
    }
    out
}

/// What changed from the export `old` to `new`: the services added or changed (whole), and those
/// removed (by name).
pub fn diff(old: &[pb::Service], new: &[pb::Service]) -> (Vec<pb::Service>, Vec<pb::ServiceRef>) {
    use std::collections::HashMap;
    if std::ptr::eq(old, new) {
        return (vec![], vec![]);
    }
    let key = |s: &pb::Service| (s.namespace.clone(), s.name.clone());
    let before: HashMap<(String, String), &pb::Service> = old.iter().map(|s| (key(s), s)).collect();
    let changed = new.iter().filter(|s| before.get(&key(s)) != Some(s)).cloned().collect();
    let after: std::collections::HashSet<(String, String)> = new.iter().map(key).collect();
    let removed = old
        .iter()
        .filter(|s| !after.contains(&key(s)))
        .map(|s| pb::ServiceRef { namespace: s.namespace.clone(), name: s.name.clone() })
        .collect();
    (changed, removed)
}

/// This cluster's remote clusters, as a snapshot carries them.
fn remote_clusters(cat: &Catalog) -> Vec<pb::RemoteClusterNetwork> {
    cat.mesh
        .remote_clusters
        .iter()
        .map(|r| pb::RemoteClusterNetwork {
            name: r.name.clone(),
            network: r.network.clone(),
            gateways: r.gateways.clone(),
        })
        .collect()
}

/// The export of one catalog revision, rendered once and shared by every importer's stream
/// (each stream rendered it itself on every catalog change, so a cluster linked with N others
/// rendered it N times per change). Each service is rendered again only when it changed: a
/// change of one service, or of the imports only, does not render the whole export again, and
/// an unchanged export is the same `Arc` as before.
#[derive(Default)]
pub struct ExportRenders(std::sync::Mutex<Rendered>);

#[derive(Default)]
pub struct Rendered {
    revision: Option<u64>,
    mesh: weft_api::kinds::MeshConfigSpec,
    export: Arc<Vec<pb::Service>>,
    /// Per exported service: the catalog's service it was rendered from, and the render.
    by_service: std::collections::HashMap<(String, String), (CatalogService, pb::Service)>,
}

impl ExportRenders {
    /// The export of `cat` (rendered now unless a stream already did for its revision).
    pub fn get(&self, cat: &Catalog) -> Arc<Vec<pb::Service>> {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.revision == Some(cat.revision) {
            return g.export.clone();
        }
        if g.revision.is_none() || g.mesh != cat.mesh {
            g.by_service.clear();
            g.mesh = cat.mesh.clone();
        }
        g.revision = Some(cat.revision);
        let mut before = std::mem::take(&mut g.by_service);
        let mut changed = false;
        for s in exported(cat) {
            let key = (s.namespace.clone(), s.name.clone());
            let kept = before.remove(&key).filter(|(from, _)| from == s);
            changed |= kept.is_none();
            let entry = kept.unwrap_or_else(|| (s.clone(), render_one(&cat.mesh, s)));
            g.by_service.insert(key, entry);
        }
        if changed || !before.is_empty() || g.export.len() != g.by_service.len() {
            let export = exported(cat).filter_map(|s| g.by_service.get(&(s.namespace.clone(), s.name.clone())));
            g.export = Arc::new(export.map(|(_, r)| r.clone()).collect());
        }
        g.export.clone()
    }
}

fn check_request(cat: &Catalog, r: &pb::ExportRequest) -> Result<(String, Vec<Vec<u8>>), Status> {
    let mesh = &cat.mesh;
    if r.cluster == mesh.cluster.name {
        return Err(Status::failed_precondition(format!(
            "the linking cluster says it is {:?}, which is this cluster's name: a cluster cannot link to itself, and linked clusters need distinct names",
            r.cluster
        )));
    }
    if !weft_api::valid_name(&r.cluster) {
        return Err(Status::invalid_argument("ExportRequest.cluster must be the linking cluster's name (a DNS label)"));
    }
    let b = r.bundle.as_ref().ok_or_else(|| Status::invalid_argument("ExportRequest.bundle is missing"))?;
    if !weft_api::kinds::valid_trust_domain(&b.trust_domain) {
        return Err(Status::invalid_argument("ExportRequest.bundle.trust_domain is not a valid trust domain"));
    }
    if b.trust_domain == mesh.trust_domain {
        return Err(Status::failed_precondition(format!(
            "the linking cluster {:?} uses trust domain {:?}, the same as this cluster: linked clusters need distinct trust domains (each root vouches only for its own)",
            r.cluster, b.trust_domain
        )));
    }
    if b.roots_der.is_empty() || b.roots_der.len() > 16 {
        return Err(Status::invalid_argument("ExportRequest.bundle.roots_der must hold 1 to 16 roots"));
    }
    let labelled = b.roots_der.iter().map(|r| (Some(b.trust_domain.clone()), r.clone().into())).collect();
    weft_identity::TrustBundle::labelled(labelled)
        .map_err(|e| Status::invalid_argument(format!("ExportRequest.bundle: {e}")))?;
    Ok((b.trust_domain.clone(), b.roots_der.clone()))
}

/// SHA-256 of each of `roots` that every connected proxy trusts (acked an update holding it).
fn trusted_by_all(proxies: &crate::discovery::Proxies, roots: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let list = proxies.list();
    roots
        .iter()
        .filter(|r| {
            let hex = crate::rotation::fingerprint(r);
            list.iter().all(|p| p.status == "SYNCED" && p.roots.contains(&hex))
        })
        .map(|r| weft_identity::control::sha256(r).to_vec())
        .collect()
}

#[tonic::async_trait]
impl pb::federation_server::Federation for ExportService {
    type ExportStream = SnapshotStream;

    async fn trusts(&self, req: Request<pb::TrustsRequest>) -> Result<Response<pb::TrustsReply>, Status> {
        let header = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let cluster = &req.get_ref().cluster;
        let (establishing, issued_ms) = match self.tokens.verify_header(header) {
            Ok(Grant::Link { issued_ms }) => (true, issued_ms),
            Ok(Grant::LinkStream { cluster: c, issued_ms }) if c == *cluster => (false, issued_ms),
            Ok(_) => return Err(Status::permission_denied("Trusts needs this importer's link secret")),
            Err(e) => return Err(Status::unauthenticated(format!("link secret: {e}"))),
        };
        self.federation.check_revoked(cluster, issued_ms, establishing).map_err(Status::permission_denied)?;
        let roots = req.get_ref().roots_sha256.iter().map(|r| r.iter().map(|b| format!("{b:02x}")).collect());
        self.federation.set_trusts(cluster, roots.collect());
        Ok(Response::new(pb::TrustsReply {}))
    }

    type TapStream = crate::tap::remote::TapStream;

    async fn tap(
        &self,
        req: Request<pb::FederationTapRequest>,
    ) -> Result<Response<crate::tap::remote::TapStream>, Status> {
        let cluster = self.catalog.borrow().mesh.cluster.name.clone();
        crate::tap::remote::serve(&self.tokens, &self.federation, self.proxies.tap(), &cluster, req)
    }

    async fn stats(&self, req: Request<pb::StatsRequest>) -> Result<Response<pb::StatsReply>, Status> {
        // As Trusts: the caller's link secret (or the credential's, before the link stream set one).
        let header = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let cluster = &req.get_ref().cluster;
        let (establishing, issued_ms) = match self.tokens.verify_header(header) {
            Ok(Grant::Link { issued_ms }) => (true, issued_ms),
            Ok(Grant::LinkStream { cluster: c, issued_ms }) if c == *cluster => (false, issued_ms),
            Ok(_) => return Err(Status::permission_denied("Stats needs this cluster's link secret")),
            Err(e) => return Err(Status::unauthenticated(format!("link secret: {e}"))),
        };
        self.federation.check_revoked(cluster, issued_ms, establishing).map_err(Status::permission_denied)?;
        let cat = self.catalog.borrow().clone();
        let domains = crate::stats::federation::domains(None, &self.federation);
        crate::stats::federation::serve(&self.stats, &cat, &domains, req.get_ref()).await.map(Response::new)
    }

    async fn export(&self, req: Request<pb::ExportRequest>) -> Result<Response<SnapshotStream>, Status> {
        let header = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
        // An establishment secret (from a credential) or the stream secret of this very importer.
        let (establishing, issued_ms) = match self.tokens.verify_header(header) {
            Ok(Grant::Link { issued_ms }) => (true, issued_ms),
            Ok(Grant::LinkStream { cluster, issued_ms }) if cluster == req.get_ref().cluster => (false, issued_ms),
            Ok(Grant::LinkStream { cluster, .. }) => {
                let (this, importer) = (self.catalog.borrow().mesh.cluster.name.clone(), &req.get_ref().cluster);
                return Err(Status::permission_denied(format!(
                    "this link secret belongs to cluster {cluster:?}, not to {importer:?}: each cluster links with its own credential; run `weft link create` on cluster {this:?} and `weft link apply` that credential on {importer:?}"
                )));
            }
            Ok(_) => return Err(Status::permission_denied("Export needs a link secret (from `weft link create`)")),
            Err(TokenError::Expired) => {
                return Err(Status::unauthenticated(
                    "the link secret has expired: run `weft link create` on the exporting cluster and apply the new credential",
                ))
            }
            Err(e) => return Err(Status::unauthenticated(format!("link secret: {e}"))),
        };
        let peer = crate::grpc_tls::peer_of(&req);
        let r = req.into_inner();
        let (td, roots) = check_request(&self.catalog.borrow(), &r)?;
        let importer_roots = roots.clone();
        let proxies = self.proxies.clone();
        self.federation.check_revoked(&r.cluster, issued_ms, establishing).map_err(Status::permission_denied)?;
        self.federation.add_importer(&r.cluster, &td, roots);
        let listed = self.federation.importer_connected(&r.cluster, &td, peer.to_string());
        tracing::info!(importer = %r.cluster, trust_domain = %td, %peer, "linked cluster connected");

        let (tx, rx) = mpsc::channel::<Result<pb::ExportSnapshot, Status>>(2);
        let (mut catalog, mut stop, own_roots) = (self.catalog.clone(), self.stop.clone(), self.roots.clone());
        let renders = self.renders.clone();
        let mut stream_secret = if establishing {
            let grant = Grant::LinkStream { cluster: r.cluster.clone(), issued_ms: super::unix_now_ms() };
            self.tokens.issue(grant, None)
        } else {
            String::new()
        };
        let importer = r.cluster;
        // An importer that applies deltas gets one per change after the first full snapshot;
        // an older one, a full snapshot every time.
        let deltas = r.accepts_delta;
        let (federation, mut revocations) = (self.federation.clone(), self.federation.watch());
        let open = self.federation.stream_opened(&importer);
        let stream_issued_ms = if establishing { super::unix_now_ms() } else { issued_ms };
        tokio::spawn(async move {
            let _open = open;
            let _listed = listed; // `weft link importers`: open until this task ends
            let mut version = 0u64;
            type Sent =
                (Arc<Vec<pb::Service>>, String, Vec<String>, Vec<pb::RemoteClusterNetwork>, Vec<Vec<u8>>, Vec<Vec<u8>>);
            let mut last: Option<Sent> = None;
            loop {
                // Revoked while open: the stream ends with the reason.
                if let Err(e) = federation.check_revoked(&importer, stream_issued_ms, false) {
                    let _ = tx.send(Err(Status::permission_denied(e))).await;
                    break;
                }
                let cat = catalog.borrow_and_update().clone();
                let started = std::time::Instant::now();
                // What the snapshot says; a change of this cluster's network or gateways is sent too.
                // This cluster's roots as the catalog has them (both during a root rotation).
                let roots = if cat.ca.roots.is_empty() { own_roots.clone() } else { cat.ca.roots.clone() };
                let trusted = trusted_by_all(&proxies, &importer_roots);
                let all_trusted = trusted.len() == importer_roots.len();
                let now = (
                    renders.get(&cat),
                    cat.mesh.cluster.network.clone(),
                    cat.mesh.cluster.gateways.clone(),
                    remote_clusters(&cat),
                    roots,
                    trusted,
                );
                // The rendered export is shared per catalog revision: compared by pointer first.
                let same = last.as_ref().is_some_and(|l| {
                    (Arc::ptr_eq(&l.0, &now.0) || l.0 == now.0)
                        && (&l.1, &l.2, &l.3, &l.4, &l.5) == (&now.1, &now.2, &now.3, &now.4, &now.5)
                });
                if !same {
                    let base_version = version;
                    version += 1;
                    let (services, delta, removed_services) = match &last {
                        Some(l) if deltas => {
                            let (changed, removed) = diff(&l.0, &now.0);
                            (changed, true, removed)
                        }
                        _ => (now.0.as_ref().clone(), false, vec![]),
                    };
                    let snap = pb::ExportSnapshot {
                        version,
                        delta,
                        base_version: if delta { base_version } else { 0 },
                        removed_services,
                        cluster: cat.mesh.cluster.name.clone(),
                        bundle: Some(pb::TrustDomainBundle {
                            trust_domain: cat.mesh.trust_domain.clone(),
                            roots_der: now.4.clone(),
                        }),
                        services,
                        stream_secret: std::mem::take(&mut stream_secret),
                        network: now.1.clone(),
                        gateways: now.2.clone(),
                        remote_clusters: now.3.clone(),
                        trusted_importer_roots: now.5.clone(),
                    };
                    let took_us = started.elapsed().as_micros() as u64;
                    tracing::debug!(%importer, version, delta, services = snap.services.len(), took_us, "link message rendered");
                    if tx.send(Ok(snap)).await.is_err() {
                        break;
                    }
                    last = Some(now);
                }
                tokio::select! {
                    changed = catalog.changed() => if changed.is_err() { break },
                    changed = revocations.changed() => if changed.is_err() { break },
                    _ = tx.closed() => break,
                    _ = stop.wait_for(|s| *s) => break,
                    // Nothing to send: the stream stays open; HTTP/2 PINGs watch the connection.
                    // Until this cluster's proxies trust all the importer's roots (its root
                    // rotation), their acks are checked often.
                    () = tokio::time::sleep(if all_trusted { Duration::from_secs(3600) } else { Duration::from_millis(200) }) => {}
                }
            }
            tracing::info!(%importer, "linked cluster disconnected");
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESOURCES: &str = "apiVersion: weft.io/v1alpha1\nkind: MeshConfig\nmetadata: { name: mesh }\nspec: { cluster: { name: west } }\n---\napiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: api }\nspec: { export: true }\n---\napiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: hidden }\nspec: {}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: { name: api-1 }\nspec: { service: api, address: 10.0.0.1, port: 8080 }\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: { name: hidden-1 }\nspec: { service: hidden, address: 10.0.0.2, port: 8080 }\n";

    /// Every importer's stream shares one render per catalog revision, which holds only the
    /// exported services with this cluster's endpoints (not the imports of other links).
    #[test]
    fn the_export_is_rendered_once_per_revision_with_only_local_exported_endpoints() {
        let rs = weft_api::resource::parse_documents(RESOURCES).unwrap();
        let mut cat = crate::catalog::build(7, rs.iter(), &|_| true);
        // An endpoint imported from another cluster into the same service is not passed on.
        let api = Arc::make_mut(cat.services.get_mut(&("default".to_string(), "api".to_string())).unwrap());
        let mut imported = api.instances[0].clone();
        imported.cluster = "north".into();
        imported.address = "10.9.0.1:8080".parse().unwrap();
        api.instances.push(imported);
        let renders = ExportRenders::default();
        let (a, b) = (renders.get(&cat), renders.get(&cat));
        assert!(Arc::ptr_eq(&a, &b), "one render per revision, shared");
        assert_eq!(a.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["api"]);
        assert_eq!(a[0].endpoints.iter().map(|e| e.address.as_str()).collect::<Vec<_>>(), ["10.0.0.1:8080"]);
        cat.revision = 8;
        assert!(Arc::ptr_eq(&a, &renders.get(&cat)), "a new revision with the same export is the same render");
        Arc::make_mut(cat.services.get_mut(&("default".to_string(), "api".to_string())).unwrap()).instances.truncate(0);
        cat.revision = 9;
        let c = renders.get(&cat);
        assert!(!Arc::ptr_eq(&a, &c) && c[0].endpoints.is_empty(), "a changed service is rendered again");
    }
}
