//! The registry: services and endpoints from several sources behind one trait, merged by
//! precedence, published as a [`Catalog`] that changes whenever a source does.
//!
//! Precedence (first wins for the same resource key):
//! 1. the registry file (`--registry-file`, Consul's "service definitions in a config file",
//!    Istio's manual entries for external workloads);
//! 2. the store: resources applied through the API or CLI, and HTTP registrations (which the API
//!    writes to the store as Workloads, labelled `weft.io/source: api`).
//!
//! Later sources (Kubernetes, linked clusters) implement the same trait.

use crate::catalog::{self, Catalog};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use weft_api::resource::{Key, Resource};
use weft_store::Store;

/// A source of resources.
pub trait Source: Send + Sync {
    fn name(&self) -> &'static str;
    /// Everything this source holds now.
    fn resources(&self) -> Vec<Resource>;
    /// Changes whenever `resources` may have changed.
    fn subscribe(&self) -> watch::Receiver<u64>;
    /// Services and trust bundles of linked clusters (only [`crate::federation::Federation`]).
    fn imported(&self) -> Option<catalog::Imported> {
        None
    }
    /// Whether `resources` can hold anything. A source that only contributes [`Source::imported`]
    /// says no, so a change of it does not rebuild the catalog from every resource again.
    fn has_resources(&self) -> bool {
        true
    }
}

impl Source for Store {
    fn name(&self) -> &'static str {
        "store"
    }
    fn resources(&self) -> Vec<Resource> {
        self.snapshot().resources.into_values().collect()
    }
    fn subscribe(&self) -> watch::Receiver<u64> {
        Store::subscribe(self)
    }
}

/// Extra rules a source's resources must pass (see [`crate::api::admit_rules`]).
pub type Admit = Box<dyn Fn(&[Resource]) -> Result<(), String> + Send + Sync>;

/// Resources from a YAML/JSON file, re-read when it changes. A file that does not parse is
/// reported and its last good contents kept.
pub struct FileSource {
    tx: watch::Sender<u64>,
    current: Arc<std::sync::RwLock<Vec<Resource>>>,
}

impl FileSource {
    /// Reads `path` now (an error here stops the start) and again whenever it changes. `admit`
    /// holds the file to the same rules as a write through the API.
    pub fn start(path: PathBuf, admit: Admit) -> Result<FileSource, String> {
        let parse = move |text: &str| -> Result<Vec<Resource>, String> {
            let rs = weft_api::resource::parse_documents(text).map_err(|e| e.to_string())?;
            admit(&rs)?;
            Ok(rs)
        };
        let read = |path: &PathBuf| std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()));
        let mut seen = read(&path)?;
        let initial = parse(&seen).map_err(|e| format!("{}: {e}", path.display()))?;
        let (tx, _) = watch::channel(0);
        let current = Arc::new(std::sync::RwLock::new(initial));
        let (tx2, cur2) = (tx.clone(), current.clone());
        tokio::spawn(async move {
            // Compared by contents, not mtime: two writes within the clock's granularity count.
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let text = match read(&path) {
                    Ok(t) if t == seen => continue,
                    Ok(t) => t,
                    Err(e) => {
                        if !std::mem::take(&mut seen).is_empty() {
                            tracing::error!(error = %e, "registry file unreadable; keeping its last good contents");
                        }
                        continue;
                    }
                };
                match parse(&text) {
                    Ok(rs) => {
                        *cur2.write().unwrap_or_else(|p| p.into_inner()) = rs;
                        tx2.send_modify(|v| *v += 1);
                        tracing::info!(file = %path.display(), "registry file reloaded");
                    }
                    Err(e) => {
                        tracing::error!(file = %path.display(), error = %e, "registry file rejected; keeping its last good contents")
                    }
                }
                seen = text;
            }
        });
        Ok(FileSource { tx, current })
    }
}

impl Source for FileSource {
    fn name(&self) -> &'static str {
        "file"
    }
    fn resources(&self) -> Vec<Resource> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
    fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }
}

/// Merges `sources` (first wins per key).
pub fn merge(sources: &[Arc<dyn Source>]) -> Vec<Resource> {
    let mut by_key: BTreeMap<Key, Resource> = BTreeMap::new();
    for s in sources {
        for r in s.resources() {
            by_key.entry(r.key()).or_insert(r);
        }
    }
    by_key.into_values().collect()
}

/// Health of a workload (`namespace/name`): true when it may receive traffic.
pub type Health = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Recomputes the catalog whenever a source (or `extra`, e.g. health) changes, and publishes it
/// with its virtual IPs from `vips`. Stops (releasing the sources) when `stop` turns true.
pub fn run(
    sources: Vec<Arc<dyn Source>>,
    health: Health,
    mut extra: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
    vips: Arc<crate::vips::Vips>,
) -> watch::Receiver<Arc<Catalog>> {
    // The catalog of every source's resources, before the imports are merged in: built again
    // only when a source of resources (or health) changed, not for every change of a link's
    // imports (which would rebuild it from every resource per imported endpoint change).
    let base = move |sources: &[Arc<dyn Source>], health: &Health| {
        let merged = merge(sources);
        catalog::build(0, merged.iter(), &|w| health(w))
    };
    let mut own = base(&sources, &health);
    let mut first = next(0, &own, &sources, &vips, None);
    first.service_revisions = first.services.keys().map(|k| (k.clone(), 0)).collect();
    let (tx, rx) = watch::channel(Arc::new(first));
    let mut subs: Vec<watch::Receiver<u64>> = sources.iter().map(|s| s.subscribe()).collect();
    tokio::spawn(async move {
        let mut revision = 0u64;
        loop {
            // A closed `extra` (no health source) simply never fires again.
            let extra_changed = async {
                if extra.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            let stopped = stop.wait_for(|s| *s);
            let resources_changed = if subs.is_empty() {
                tokio::select! {
                    () = extra_changed => true,
                    _ = stopped => break,
                }
            } else {
                let changed = futures_util::future::select_all(subs.iter_mut().map(|r| Box::pin(r.changed())));
                tokio::select! {
                    (res, i, _) = changed => if res.is_err() { break } else { sources[i].has_resources() },
                    () = extra_changed => true,
                    _ = stopped => break,
                }
            };
            revision += 1;
            let started = std::time::Instant::now();
            if resources_changed {
                own = base(&sources, &health);
            }
            let old = tx.borrow().clone();
            let cat = Arc::new(next(revision, &own, &sources, &vips, Some(&old)));
            tracing::debug!(
                revision,
                resources_changed,
                took_us = started.elapsed().as_micros() as u64,
                "catalog built"
            );
            // Publish only real changes: proxies get a push per change, not per write.
            tx.send_if_modified(|old| {
                let same = same_for_proxies(old, &cat);
                if !same {
                    *old = cat;
                }
                !same
            });
        }
    });
    rx
}

/// The catalog at `revision`: `own` (the catalog of this cluster's resources) with every
/// source's imports merged in and virtual IPs assigned, compared with `old` (the last one
/// published): a service equal to its old self is `old`'s very `Arc` and keeps the revision it
/// last changed in; one that changed (or is new) gets `revision`. With no `old`, every service
/// gets `revision`.
///
/// What it costs per change: a clone of `own`'s map of `Arc`s, the imports merged (an imported
/// service that needs no rerouting is shared, not copied), and one comparison per service that
/// is pointer-equal for every service that did not change.
pub fn next(
    revision: u64,
    own: &Catalog,
    sources: &[Arc<dyn Source>],
    vips: &crate::vips::Vips,
    old: Option<&Catalog>,
) -> Catalog {
    let mut cat = own.clone();
    cat.revision = revision;
    for imported in sources.iter().filter_map(|s| s.imported()) {
        catalog::merge_imported(&mut cat, imported);
    }
    let Some(old) = old else {
        vips.assign(&mut cat);
        cat.service_revisions = cat.services.keys().map(|k| (k.clone(), revision)).collect();
        return cat;
    };
    // A service's routes travel with it (`discovery::render_service_in`): a route change is a
    // change of the service. Compared per service only when some route changed.
    let routes_same = old.routes == cat.routes;
    let new_routes = &cat.routes;
    let same_routes = |k: &(String, String)| {
        routes_same || {
            let key = format!("{}.{}", k.1, k.0);
            let of = |r: &&catalog::CatalogRoute| r.parents.contains(&key);
            old.routes.iter().filter(of).eq(new_routes.iter().filter(of))
        }
    };
    // One pass over both catalogs' services in key order (a merge, not a lookup per service).
    let revision_of = |k: &(String, String)| old.service_revisions.get(k).copied();
    let mut olds = old.services.iter().peekable();
    let mut changed: Vec<(String, String)> = vec![];
    let mut revisions: Vec<((String, String), u64)> = Vec::with_capacity(cat.services.len());
    for (k, s) in cat.services.iter_mut() {
        while let Some((ok, _)) = olds.next_if(|(ok, _)| *ok < k) {
            changed.push(ok.clone()); // gone
        }
        let o = olds.next_if(|(ok, _)| *ok == k).map(|(_, o)| o);
        let kept = match o {
            Some(o) if (Arc::ptr_eq(o, s) || **o == **s) && same_routes(k) => {
                // Equal: the old `Arc`, so the next comparison (and discovery's) is a pointer's.
                if !Arc::ptr_eq(o, s) {
                    *s = o.clone();
                }
                revision_of(k)
            }
            _ => None,
        };
        if kept.is_none() {
            changed.push(k.clone());
        }
        revisions.push((k.clone(), kept.unwrap_or(revision)));
    }
    changed.extend(olds.map(|(k, _)| k.clone()));
    // Sorted already: built in one pass.
    cat.service_revisions = revisions.into_iter().collect();
    // After the comparison: only the services that changed are looked at.
    vips.assign_after(&mut cat, old, &changed);
    cat
}

/// Whether proxies would get the same from `new` as from `old`: equal revisions for the same
/// services (no service changed, see [`next`]) and the same catalog-wide parts.
pub fn same_for_proxies(old: &Catalog, new: &Catalog) -> bool {
    old.service_revisions == new.service_revisions
        && old.mesh == new.mesh
        && old.peer_bundles == new.peer_bundles
        && old.links == new.links
        && old.vips == new.vips
        && old.ca == new.ca
        && old.routes == new.routes
        // A policy's condition can change with no change to what proxies get.
        && old.policies == new.policies
        && old.authz == new.authz
        && old.request_authn == new.request_authn
        && old.telemetry == new.telemetry
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A source of resources that counts how often they are read.
    struct Counting {
        tx: watch::Sender<u64>,
        reads: AtomicUsize,
    }

    impl Source for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        fn resources(&self) -> Vec<Resource> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            vec![]
        }
        fn subscribe(&self) -> watch::Receiver<u64> {
            self.tx.subscribe()
        }
    }

    /// A change of a link's imports merges the imports into the catalog of the resources as last
    /// built; it does not read and build every resource again (that made each imported endpoint
    /// change cost the whole catalog). A change of the resources does.
    #[tokio::test]
    async fn an_import_change_does_not_rebuild_the_catalog_from_every_resource() {
        let dir = std::env::temp_dir().join(format!("weft-registry-{}", std::process::id()));
        let resources = Arc::new(Counting { tx: watch::channel(0).0, reads: AtomicUsize::new(0) });
        let federation = Arc::new(crate::federation::Federation::default());
        let (_stop_tx, stop) = watch::channel(false);
        let (_extra_tx, extra) = watch::channel(0u64);
        let vips = Arc::new(crate::vips::Vips::open(dir.join("vips.json")));
        let sources: Vec<Arc<dyn Source>> = vec![resources.clone(), federation.clone()];
        let mut catalog = run(sources, Arc::new(|_: &str| true), extra, stop, vips);
        let reads = resources.reads.load(Ordering::SeqCst);
        let api =
            crate::catalog::CatalogService { name: "api".into(), namespace: "default".into(), ..Default::default() };
        federation.import("west", "west.example", vec![vec![1]], vec![api], Default::default(), BTreeMap::new());
        let deadline = Duration::from_secs(10);
        tokio::time::timeout(deadline, catalog.changed()).await.expect("the import reaches the catalog").unwrap();
        assert!(catalog.borrow().services.contains_key(&("default".to_string(), "api".to_string())));
        assert_eq!(resources.reads.load(Ordering::SeqCst), reads, "the resources were not read again");
        resources.tx.send_modify(|v| *v += 1);
        tokio::time::timeout(deadline, async {
            while resources.reads.load(Ordering::SeqCst) == reads {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("a change of the resources reads them again");
        let _ = std::fs::remove_dir_all(dir);
    }

    fn imported(name: &str, addrs: &[&str]) -> crate::catalog::CatalogService {
        crate::catalog::CatalogService {
            name: name.into(),
            namespace: "default".into(),
            export: true,
            clusters: vec!["west".into()],
            instances: addrs
                .iter()
                .enumerate()
                .map(|(n, a)| crate::catalog::Instance {
                    name: format!("{name}-{n}"),
                    address: a.parse().unwrap(),
                    sidecar: a.parse().unwrap(),
                    identity: "spiffe://west.example/ns/default/sa/x".into(),
                    cluster: "west".into(),
                    network: String::new(),
                    locality: String::new(),
                    labels: BTreeMap::new(),
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

    /// One imported service's change makes a catalog in which every other service is the last
    /// catalog's very `Arc` (and keeps its revision), the local service merged with imports of
    /// the same name included; it equals the catalog a full rebuild makes; a step with nothing
    /// changed is not published.
    #[test]
    fn a_change_shares_every_unchanged_service_and_equals_a_full_rebuild() {
        const RESOURCES: &str = "apiVersion: weft.io/v1alpha1\nkind: MeshConfig\nmetadata: { name: mesh }\nspec: { cluster: { name: east } }\n---\napiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: api }\nspec: { export: true }\n---\napiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: solo }\nspec: {}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: { name: api-1 }\nspec: { service: api, address: 10.0.0.1, port: 8080 }\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: { name: solo-1 }\nspec: { service: solo, address: 10.0.0.2, port: 8080 }\n";
        let rs = weft_api::resource::parse_documents(RESOURCES).unwrap();
        let own = catalog::build(0, rs.iter(), &|_| true);
        let federation = Arc::new(crate::federation::Federation::default());
        let west = || crate::federation::Peer {
            trust_domain: "west.example",
            roots: vec![vec![1]],
            network: Default::default(),
            remotes: BTreeMap::new(),
        };
        let services = vec![
            imported("api", &["10.1.0.1:8080"]),
            imported("w1", &["10.1.0.2:8080"]),
            imported("w2", &["10.1.0.3:8080"]),
        ];
        federation.import_delta("west", west(), services, &[]);
        let sources: Vec<Arc<dyn Source>> = vec![federation.clone()];
        let vips = crate::vips::Vips::in_memory();
        let first = next(1, &own, &sources, &vips, None);
        assert_eq!(first.services[&("default".to_string(), "api".to_string())].instances.len(), 2, "merged");
        assert!(!first.vips.is_empty(), "the imported services have virtual IPs");

        federation.import_delta("west", west(), vec![imported("w1", &["10.1.0.2:8080", "10.1.0.4:8080"])], &[]);
        let second = next(2, &own, &sources, &vips, Some(&first));
        let key = |n: &str| ("default".to_string(), n.to_string());
        for name in ["api", "solo", "w2"] {
            assert!(Arc::ptr_eq(&first.services[&key(name)], &second.services[&key(name)]), "{name} is shared");
            assert_eq!(second.service_revisions[&key(name)], 1, "{name} keeps its revision");
        }
        assert!(!Arc::ptr_eq(&first.services[&key("w1")], &second.services[&key("w1")]));
        assert_eq!(second.service_revisions[&key("w1")], 2);
        assert_eq!(second.services[&key("w1")].instances.len(), 2);
        assert!(!same_for_proxies(&first, &second));

        let full = next(2, &own, &sources, &vips, None);
        assert_eq!(full.services, second.services, "equal to a full rebuild");
        assert_eq!(full.vips, second.vips);
        assert_eq!(
            (&full.networks, &full.links, &full.peer_bundles),
            (&second.networks, &second.links, &second.peer_bundles)
        );

        // A service withdrawn: it leaves, with its virtual IPs; the rest stay shared.
        federation.import_delta("west", west(), vec![], &[key("w2")]);
        let third = next(3, &own, &sources, &vips, Some(&second));
        assert!(!third.services.contains_key(&key("w2")));
        assert!(third.vips.keys().all(|(_, name, _)| name != "w2"), "{:?}", third.vips);
        assert!(Arc::ptr_eq(&second.services[&key("w1")], &third.services[&key("w1")]));
        assert_eq!(next(3, &own, &sources, &vips, None).vips, third.vips);

        // Nothing changed: the same for proxies (not published).
        let fourth = next(4, &own, &sources, &vips, Some(&third));
        assert!(same_for_proxies(&third, &fourth));
    }
}
