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
    let build = move |revision: u64, base: &catalog::Catalog, sources: &[Arc<dyn Source>]| {
        let mut cat = base.clone();
        cat.revision = revision;
        for imported in sources.iter().filter_map(|s| s.imported()) {
            catalog::merge_imported(&mut cat, imported);
        }
        vips.assign(&mut cat);
        cat
    };
    let mut own = base(&sources, &health);
    let mut first = build(0, &own, &sources);
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
            let mut cat = build(revision, &own, &sources);
            // Each service keeps the revision it last changed in (compared with the last catalog).
            cat.service_revisions = {
                let old = tx.borrow();
                // Its routes travel with it (`discovery::render_service_in`): a route change is a
                // change of the service.
                let same_routes = |k: &(String, String)| {
                    let key = format!("{}.{}", k.1, k.0);
                    old.routes_of(&key).eq(cat.routes_of(&key))
                };
                let kept = |k: &(String, String), s: &catalog::CatalogService| match old.services.get(k) {
                    Some(o) if o == s && same_routes(k) => old.service_revisions.get(k).copied(),
                    _ => None,
                };
                cat.services.iter().map(|(k, s)| (k.clone(), kept(k, s).unwrap_or(revision))).collect()
            };
            let cat = Arc::new(cat);
            tracing::debug!(
                revision,
                resources_changed,
                took_us = started.elapsed().as_micros() as u64,
                "catalog built"
            );
            // Publish only real changes: proxies get a push per change, not per write.
            tx.send_if_modified(|old| {
                // Equal revisions for the same services: no service changed.
                let same = old.service_revisions == cat.service_revisions
                    && old.mesh == cat.mesh
                    && old.peer_bundles == cat.peer_bundles
                    && old.links == cat.links
                    && old.vips == cat.vips
                    && old.ca == cat.ca
                    && old.routes == cat.routes
                    // A policy's condition can change with no change to what proxies get.
                    && old.policies == cat.policies
                    && old.authz == cat.authz
                    && old.request_authn == cat.request_authn
                    && old.telemetry == cat.telemetry;
                if !same {
                    *old = cat;
                }
                !same
            });
        }
    });
    rx
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
}
