//! Federation between linked clusters (`weft link`): each control plane imports the exported
//! services of the clusters it links to. Endpoints on the importer's network are dialled
//! directly; those of another network through their cluster's east-west gateways
//! ([`crate::catalog::PeerNetwork`]), and the link stream itself goes through the peer's gateway
//! (reserved SNI `control.weft-system.<cluster>.weft`) when the peer has one.
//!
//! ```text
//!   cluster A (importer)                               cluster B (exporter)
//!   Link resource ──► import::run ── TLS (B's root, ───► Federation.Export (export.rs)
//!   (store)           one task per link  control.weft)    verifies the link secret,
//!        │                 ◄──── ExportSnapshot ─────      streams exported services + B's roots
//!        ▼                                                 A's roots ──► B's Federation state
//!   Federation state ──► registry (a Source) ──► catalog ──► discovery: endpoints + per-domain bundles
//! ```
//!
//! [`Federation`] holds what links imported (per peer cluster) and the roots importers sent; it is
//! a registry [`Source`] whose [`Source::imported`] the catalog merges.

pub mod check;
pub mod export;
pub mod import;

use crate::catalog::{CatalogService, Imported, PeerNetwork};
use crate::registry::Source;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::watch;
use weft_api::resource::Resource;

/// What `weft link list` shows of one link.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LinkStatus {
    /// `connecting`, `active` (stream open, snapshot received) or `failing` (see `error`).
    pub state: &'static str,
    /// When the last snapshot arrived (Unix seconds).
    pub last_sync_unix: Option<u64>,
    pub imported_services: usize,
    pub imported_endpoints: usize,
    pub error: Option<String>,
    /// Link messages applied since this control plane started (see [`LinkUpdates`]).
    pub updates: LinkUpdates,
}

/// What a link's stream carried since this control plane started: full snapshots (the first
/// message of every stream, or every message from an exporter without incremental updates),
/// deltas, and resyncs (a delta that did not apply on top of what the link held, so the link
/// reconnected for a full snapshot).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct LinkUpdates {
    pub full: u64,
    pub delta: u64,
    pub resyncs: u64,
}

/// A service's key in the catalog: (namespace, name).
pub type ServiceKey = (String, String);

#[derive(Default)]
struct LinkState {
    status: LinkStatus,
    trust_domain: String,
    roots: Vec<Vec<u8>>,
    /// As the catalog takes them ([`crate::catalog::strip_for_import`]), each behind an `Arc`
    /// that stays the same while the service does (the catalog shares it).
    services: BTreeMap<ServiceKey, Arc<CatalogService>>,
    network: PeerNetwork,
    /// The peer's remote clusters (primary-remote), whose endpoints it exports too.
    remotes: BTreeMap<String, PeerNetwork>,
    /// Hex SHA-256 of this cluster's roots that all the peer's proxies trust (its latest snapshot).
    trusts: Vec<String>,
}

/// What `weft link revoke` voided, kept in `<data-dir>/links/revoked.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Revocations {
    /// Credentials issued before this (Unix ms) are void.
    pub credentials_before_ms: u64,
    /// Per importing cluster: its stream secrets issued before this (Unix ms) are void.
    pub clusters: BTreeMap<String, u64>,
}

#[derive(Default)]
struct State {
    revoked: Revocations,
    /// Per peer cluster this cluster links to.
    links: BTreeMap<String, LinkState>,
    /// Clusters that import from this one: their trust domain and roots (from their Export call).
    importers: BTreeMap<String, (String, Vec<Vec<u8>>)>,
    /// What `weft link importers` shows of each cluster that opened an Export stream here since
    /// this control plane started.
    importer_streams: BTreeMap<String, ImporterStatus>,
    /// Open Export streams per importing cluster.
    streams: BTreeMap<String, usize>,
    /// Per importing cluster: hex SHA-256 of this cluster's roots that all its proxies trust (its
    /// latest `Trusts` call; root rotation waits on these).
    trusts: BTreeMap<String, Vec<String>>,
}

/// A cluster that imports from this one, as `weft link importers` (`GET /v1/importers`) shows it.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImporterStatus {
    pub cluster: String,
    pub trust_domain: String,
    /// When it first opened an Export stream since this control plane started (Unix seconds).
    pub since_unix: u64,
    /// When its last stream opened (Unix seconds).
    pub connected_unix: u64,
    /// When its last stream ended (Unix seconds; none while one is open or before any ended).
    pub disconnected_unix: Option<u64>,
    /// Whether an Export stream of it is open now.
    pub stream_open: bool,
    /// Where its last stream came from (its control plane, or a gateway in front of it).
    pub peer: String,
    #[serde(skip)]
    open: usize,
}

/// Marks an importer's Export stream open until dropped (the stream's task ends or is aborted).
pub struct ImporterStream {
    federation: std::sync::Arc<Federation>,
    cluster: String,
}

impl Drop for ImporterStream {
    fn drop(&mut self) {
        self.federation.with(|s| {
            if let Some(i) = s.importer_streams.get_mut(&self.cluster) {
                i.open = i.open.saturating_sub(1);
                i.stream_open = i.open > 0;
                if !i.stream_open {
                    i.disconnected_unix = Some(unix_now());
                }
            }
        });
    }
}

/// Imported services and peer roots, shared by the link tasks, the Export service and the
/// registry.
pub struct Federation {
    state: Mutex<State>,
    tx: watch::Sender<u64>,
    /// Where revocations are saved (none: kept in memory).
    revoked_path: Option<std::path::PathBuf>,
}

/// What a link's messages say about the peer besides its services: its trust domain and roots,
/// its network and gateways, and its remote clusters'.
pub struct Peer<'a> {
    pub trust_domain: &'a str,
    pub roots: Vec<Vec<u8>>,
    pub network: PeerNetwork,
    pub remotes: BTreeMap<String, PeerNetwork>,
}

/// Counts an open Export stream (see [`Federation::stream_opened`]).
pub struct StreamGuard {
    federation: Arc<Federation>,
    cluster: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.federation.with(|s| {
            if let Some(n) = s.streams.get_mut(&self.cluster) {
                *n -= 1;
                if *n == 0 {
                    s.streams.remove(&self.cluster);
                    s.trusts.remove(&self.cluster);
                }
            }
        });
    }
}

impl Default for Federation {
    fn default() -> Self {
        Federation { state: Mutex::default(), tx: watch::channel(0).0, revoked_path: None }
    }
}

pub(crate) fn unix_now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Federation {
    /// A federation whose revocations live in `dir/revoked.json` (read now).
    pub fn open(dir: &std::path::Path) -> Federation {
        let path = dir.join("revoked.json");
        let revoked = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::error!(file = %path.display(), error = %e, "link revocations unreadable: every credential and link secret is refused until fixed");
                Revocations { credentials_before_ms: u64::MAX, clusters: BTreeMap::new() }
            }),
            Err(_) => Revocations::default(),
        };
        let f = Federation { revoked_path: Some(path), ..Default::default() };
        f.with(|s| s.revoked = revoked);
        f
    }

    /// Voids `cluster`'s link secrets and every credential made before now; forgets its roots
    /// (saved before it takes effect; blocks on disk I/O).
    pub fn revoke(&self, cluster: &str) -> std::io::Result<()> {
        let now = unix_now_ms();
        let mut r = self.with(|s| s.revoked.clone());
        r.credentials_before_ms = r.credentials_before_ms.max(now);
        r.clusters.insert(cluster.to_string(), now);
        if let Some(path) = &self.revoked_path {
            if let Some(dir) = path.parent() {
                crate::datadir::create_private(dir)?;
            }
            let tmp = path.with_extension("json.tmp");
            crate::tokens::write_private(&tmp, &serde_json::to_vec(&r).unwrap_or_default())?;
            std::fs::rename(&tmp, path)?;
        }
        self.with(|s| {
            s.revoked = r;
            s.importers.remove(cluster);
            s.importer_streams.remove(cluster);
        });
        self.changed();
        Ok(())
    }

    /// Whether a link secret issued at `issued_ms` may still be used by importing `cluster`
    /// (`establishing`: a credential's secret).
    pub fn check_revoked(&self, cluster: &str, issued_ms: u64, establishing: bool) -> Result<(), String> {
        self.with(|s| {
            let r = &s.revoked;
            if establishing && r.credentials_before_ms > 0 && issued_ms <= r.credentials_before_ms {
                return Err("this link credential was revoked (`weft link revoke` on the exporting cluster); ask for a new one (`weft link create`)".to_string());
            }
            if r.clusters.get(cluster).is_some_and(|t| issued_ms <= *t) {
                return Err(format!(
                    "the link of cluster {cluster:?} was revoked (`weft link revoke {cluster}` on the exporting cluster); link again with a new credential"
                ));
            }
            Ok(())
        })
    }

    /// Changes whenever imports, peers or revocations change.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn changed(&self) {
        self.tx.send_modify(|v| *v += 1);
    }

    /// Updates a link's status. The catalog changes only when the link turns up or down (DNS
    /// answers nothing for a cluster whose link is down) or is first heard of.
    pub fn set_status(&self, cluster: &str, f: impl FnOnce(&mut LinkStatus)) {
        let changed = self.with(|s| {
            let new = !s.links.contains_key(cluster);
            let status = &mut s.links.entry(cluster.to_string()).or_default().status;
            let was = link_up(status.state);
            f(status);
            new || was != link_up(status.state)
        });
        if changed {
            self.changed();
        }
    }

    /// An Export stream of `cluster` opened; it counts as connected until the guard drops.
    pub fn stream_opened(self: &Arc<Self>, cluster: &str) -> StreamGuard {
        self.with(|s| *s.streams.entry(cluster.to_string()).or_default() += 1);
        StreamGuard { federation: self.clone(), cluster: cluster.to_string() }
    }

    /// Records which of this cluster's roots every proxy of importing `cluster` trusts.
    pub fn set_trusts(&self, cluster: &str, roots_hex: Vec<String>) {
        self.with(|s| s.trusts.insert(cluster.to_string(), roots_hex));
    }

    /// Records which of this cluster's roots all proxies of linked cluster `cluster` trust.
    pub fn set_peer_trusts(&self, cluster: &str, roots_hex: Vec<String>) {
        self.with(|s| {
            if let Some(l) = s.links.get_mut(cluster) {
                l.trusts = roots_hex;
            }
        });
    }

    /// The linked clusters this one imports from, with their link up now, whose proxies do not
    /// all trust this cluster's root `root_hex` yet.
    pub fn links_lacking(&self, root_hex: &str) -> Vec<String> {
        self.with(|s| {
            s.links
                .iter()
                .filter(|(_, l)| l.status.state == "active" && !l.trusts.iter().any(|r| r == root_hex))
                .map(|(c, _)| c.clone())
                .collect()
        })
    }

    /// The importing clusters connected now whose proxies do not all trust root `root_hex` yet.
    pub fn importers_lacking(&self, root_hex: &str) -> Vec<String> {
        self.with(|s| {
            s.streams
                .keys()
                .filter(|c| !s.trusts.get(*c).is_some_and(|t| t.iter().any(|r| r == root_hex)))
                .cloned()
                .collect()
        })
    }

    /// The roots `cluster` sent in its latest snapshot (empty: none yet). The link trusts them
    /// besides the credential's root, so a peer's root rotation does not cut the link.
    pub fn peer_roots(&self, cluster: &str) -> Vec<Vec<u8>> {
        self.with(|s| s.links.get(cluster).map(|l| l.roots.clone()).unwrap_or_default())
    }

    /// Replaces everything imported from `cluster` (a full snapshot), with its network and
    /// gateways, and those of the remote clusters it serves (`remotes`).
    pub fn import(
        &self,
        cluster: &str,
        trust_domain: &str,
        roots: Vec<Vec<u8>>,
        services_in: Vec<CatalogService>,
        network: PeerNetwork,
        remotes: BTreeMap<String, PeerNetwork>,
    ) {
        let peer = Peer { trust_domain, roots, network, remotes };
        self.import_with(cluster, peer, |held| {
            let mut changed = false;
            let mut services = BTreeMap::new();
            for s in services_in {
                let s = crate::catalog::strip_for_import(s);
                let key = (s.namespace.clone(), s.name.clone());
                // An unchanged service keeps its `Arc` (and the catalog its render).
                let s = match held.remove(&key) {
                    Some(old) if *old == s => old,
                    _ => {
                        changed = true;
                        Arc::new(s)
                    }
                };
                services.insert(key, s);
            }
            // Whatever is left was withdrawn.
            changed |= !held.is_empty();
            *held = services;
            changed
        });
    }

    /// Applies a delta of `cluster`'s exported services to what was imported from it:
    /// `changed` replaces the services of the same key (or adds them), `removed` are withdrawn;
    /// the peer's roots, network and remote clusters are replaced as in [`Federation::import`].
    pub fn import_delta(&self, cluster: &str, peer: Peer<'_>, changed: Vec<CatalogService>, removed: &[ServiceKey]) {
        self.import_with(cluster, peer, |held| {
            let mut any = false;
            for key in removed {
                any |= held.remove(key).is_some();
            }
            for s in changed {
                let s = crate::catalog::strip_for_import(s);
                let key = (s.namespace.clone(), s.name.clone());
                if held.get(&key).map(|h| &**h) != Some(&s) {
                    held.insert(key, Arc::new(s));
                    any = true;
                }
            }
            any
        });
    }

    fn import_with(
        &self,
        cluster: &str,
        peer: Peer<'_>,
        services: impl FnOnce(&mut BTreeMap<ServiceKey, Arc<CatalogService>>) -> bool,
    ) {
        let Peer { trust_domain, roots, network, remotes } = peer;
        let changed = self.with(|s| {
            let l = s.links.entry(cluster.to_string()).or_default();
            let was_up = link_up(l.status.state);
            l.status.state = "active";
            l.status.error = None;
            l.status.last_sync_unix = Some(unix_now());
            let services_changed = services(&mut l.services);
            l.status.imported_services = l.services.len();
            l.status.imported_endpoints = l.services.values().map(|s| s.instances.len()).sum();
            let changed = !was_up
                || services_changed
                || l.trust_domain != trust_domain
                || l.roots != roots
                || l.network != network
                || l.remotes != remotes;
            l.remotes = remotes;
            l.trust_domain = trust_domain.to_string();
            l.roots = roots;
            l.network = network;
            changed
        });
        if changed {
            self.changed();
        }
    }

    /// Counts a message applied on `cluster`'s link stream (`delta`: an incremental one).
    pub fn count_update(&self, cluster: &str, delta: bool) {
        self.with(|s| {
            if let Some(l) = s.links.get_mut(cluster) {
                let u = &mut l.status.updates;
                *(if delta { &mut u.delta } else { &mut u.full }) += 1;
            }
        });
    }

    /// Counts a resync of `cluster`'s link (a delta that did not apply: it reconnected).
    pub fn count_resync(&self, cluster: &str) {
        self.with(|s| {
            if let Some(l) = s.links.get_mut(cluster) {
                l.status.updates.resyncs += 1;
            }
        });
    }

    /// Drops what was imported from `cluster` outside `namespaces` (empty: keeps all), at once
    /// (the link's next snapshot is filtered the same way).
    pub fn restrict(&self, cluster: &str, namespaces: &[String]) {
        if namespaces.is_empty() {
            return;
        }
        let changed = self.with(|s| {
            let Some(l) = s.links.get_mut(cluster) else { return false };
            let before = l.services.len();
            l.services.retain(|(ns, _), _| namespaces.contains(ns));
            l.status.imported_services = l.services.len();
            l.status.imported_endpoints = l.services.values().map(|s| s.instances.len()).sum();
            l.services.len() != before
        });
        if changed {
            self.changed();
        }
    }

    /// Forgets everything imported from `cluster`, at once (`weft link remove`).
    pub fn withdraw(&self, cluster: &str) {
        if self.with(|s| s.links.remove(cluster).is_some()) {
            self.changed();
        }
    }

    /// Records the roots of a cluster that imports from this one, so this cluster's proxies
    /// accept its workloads (as its trust domain only).
    pub fn add_importer(&self, cluster: &str, trust_domain: &str, roots: Vec<Vec<u8>>) {
        let entry = (trust_domain.to_string(), roots);
        let changed = self.with(|s| s.importers.insert(cluster.to_string(), entry.clone()) != Some(entry));
        if changed {
            self.changed();
        }
    }

    /// Records that `cluster` (of `trust_domain`) opened an Export stream from `peer`; it counts
    /// as open until the returned guard is dropped.
    pub fn importer_connected(
        self: &std::sync::Arc<Self>,
        cluster: &str,
        trust_domain: &str,
        peer: String,
    ) -> ImporterStream {
        let now = unix_now();
        self.with(|s| {
            let i = s.importer_streams.entry(cluster.to_string()).or_insert_with(|| ImporterStatus {
                cluster: cluster.to_string(),
                since_unix: now,
                ..Default::default()
            });
            i.trust_domain = trust_domain.to_string();
            i.connected_unix = now;
            i.disconnected_unix = None;
            i.peer = peer;
            i.open += 1;
            i.stream_open = true;
        });
        ImporterStream { federation: self.clone(), cluster: cluster.to_string() }
    }

    /// The clusters that imported from this one since it started, by name.
    pub fn importers(&self) -> Vec<ImporterStatus> {
        self.with(|s| s.importer_streams.values().cloned().collect())
    }

    /// The network and gateways `cluster`'s last snapshot named (`None` before one).
    pub fn peer_network(&self, cluster: &str) -> Option<PeerNetwork> {
        self.with(|s| s.links.get(cluster).filter(|l| l.status.last_sync_unix.is_some()).map(|l| l.network.clone()))
    }

    /// The status of the link to `cluster` (`connecting` when its task has not reported yet).
    pub fn status(&self, cluster: &str) -> LinkStatus {
        self.with(|s| s.links.get(cluster).map(|l| l.status.clone()))
            .unwrap_or(LinkStatus { state: "connecting", ..Default::default() })
    }
}

/// Whether a link in `state` counts as up: its imports are current (`active`) or restored from
/// the last snapshot after a restart, until the peer answers (`restored`).
pub fn link_up(state: &str) -> bool {
    matches!(state, "active" | "restored")
}

impl Source for Federation {
    fn name(&self) -> &'static str {
        "federation"
    }
    fn resources(&self) -> Vec<Resource> {
        vec![]
    }
    fn has_resources(&self) -> bool {
        false
    }
    fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }
    fn imported(&self) -> Option<Imported> {
        self.with(|s| {
            let mut out = Imported::default();
            for (cluster, l) in &s.links {
                out.links.insert(cluster.clone(), link_up(l.status.state));
                // A peer's remote cluster never stands for another linked cluster: its endpoints
                // named so are dropped, and the link's own network wins.
                let theirs = |c: &str| c == cluster || (l.remotes.contains_key(c) && !s.links.contains_key(c));
                out.services.extend(l.services.values().map(|svc| {
                    if svc.instances.iter().all(|i| theirs(&i.cluster)) {
                        return svc.clone();
                    }
                    let mut svc = (**svc).clone();
                    svc.instances.retain(|i| theirs(&i.cluster));
                    Arc::new(svc)
                }));
                out.networks.insert(cluster.clone(), l.network.clone());
                for (remote, n) in &l.remotes {
                    if !s.links.contains_key(remote) {
                        out.networks.entry(remote.clone()).or_insert_with(|| n.clone());
                    }
                }
                if !l.trust_domain.is_empty() {
                    out.peer_bundles.entry(l.trust_domain.clone()).or_default().extend(l.roots.iter().cloned());
                }
            }
            for (td, roots) in s.importers.values() {
                let b = out.peer_bundles.entry(td.clone()).or_default();
                for r in roots {
                    if !b.contains(r) {
                        b.push(r.clone());
                    }
                }
            }
            Some(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Instance;

    fn service(clusters: &[&str]) -> CatalogService {
        CatalogService {
            name: "api".into(),
            namespace: "default".into(),
            instances: clusters
                .iter()
                .enumerate()
                .map(|(n, c)| Instance {
                    name: format!("{c}-{n}"),
                    address: format!("10.0.0.{n}:80").parse().unwrap(),
                    sidecar: format!("10.0.0.{n}:15006").parse().unwrap(),
                    identity: "spiffe://core.example/ns/default/sa/api".into(),
                    cluster: c.to_string(),
                    network: String::new(),
                    locality: String::new(),
                    labels: Default::default(),
                    tags: vec![],
                    healthy: true,
                    visibility: None,
                    weight: 1,
                    mtls: Default::default(),
                })
                .collect(),
            ..Default::default()
        }
    }

    /// A primary's remote clusters come with its link; one named like another linked cluster
    /// never stands for it (its endpoints are dropped, the linked cluster's network is kept).
    #[test]
    fn a_peers_remote_clusters_are_imported_but_never_as_another_link() {
        let f = Federation::default();
        let net = |n: &str, gw: &str| PeerNetwork { network: n.into(), gateways: vec![gw.parse().unwrap()] };
        f.import("west", "west.example", vec![vec![1]], vec![], net("net-west", "192.0.2.9:15443"), BTreeMap::new());
        let remotes: BTreeMap<String, PeerNetwork> =
            [("edge".to_string(), net("net-edge", "192.0.2.2:15443")), ("west".to_string(), net("x", "192.0.2.3:1"))]
                .into();
        let services = vec![service(&["core", "edge", "west"])];
        f.import("core", "core.example", vec![vec![2]], services, net("net-core", "192.0.2.1:15443"), remotes);
        let got = f.imported().unwrap();
        let clusters: Vec<&str> = got.services[0].instances.iter().map(|i| i.cluster.as_str()).collect();
        assert_eq!(clusters, ["core", "edge"]);
        assert_eq!(got.networks["edge"], net("net-edge", "192.0.2.2:15443"));
        assert_eq!(got.networks["west"], net("net-west", "192.0.2.9:15443"));
    }
}
