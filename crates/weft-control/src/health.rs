//! Runs every Workload's health checks (weft-health) and feeds the results back: the registry
//! drops critical instances from the catalog (and so from proxies' load balancers and DNS), and
//! workloads whose checks stayed critical past `deregisterCriticalAfter` are deregistered.
//! Check state is saved in the store ([`StoreCheckState`]), so a restart resumes it.

use crate::registry::{merge, Source};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use weft_api::kinds::CheckSpec;
use weft_api::resource::{Key, Kind, Resource};
use weft_health::{CheckStateStore, Monitor, Status};
use weft_store::{Store, WeakStore};

/// The monitor's saved check state, in the store's `health` table. It holds the store weakly:
/// the monitor never keeps a closed control plane's store open.
pub struct StoreCheckState(pub WeakStore);

impl CheckStateStore for StoreCheckState {
    fn load(&self) -> Result<Vec<(String, Vec<u8>)>, String> {
        let store = self.0.upgrade().ok_or("the store is closed")?;
        store.check_states().map_err(|e| e.to_string())
    }

    fn save(&self, changes: &[(String, Option<Vec<u8>>)]) -> Result<(), String> {
        match self.0.upgrade() {
            Some(store) => store.save_check_states(changes).map_err(|e| e.to_string()),
            None => {
                // Shutting down: the store closed before the monitor's last handle.
                tracing::debug!(checks = changes.len(), "store closed; health-check state not saved");
                Ok(())
            }
        }
    }
}

/// True when the workload (`namespace/name`) may receive traffic: its checks are known and not
/// critical. (Warning still serves, as in Consul.)
pub fn healthy(monitor: &Monitor, workload: &str) -> bool {
    monitor.workload_status(workload).is_some_and(|s| s != Status::Critical)
}

/// Keeps the monitor's checks equal to the Workloads' `checks`, until `stop`.
///
/// The first pass runs before this returns, so a catalog built afterwards already sees every
/// Workload's (restored) health; saved state of checks no Workload has any more is then dropped.
pub fn sync_checks(sources: Vec<Arc<dyn Source>>, monitor: Monitor, store: Store, mut stop: watch::Receiver<bool>) {
    // Only sources of resources can change a Workload's checks: a link's imports (or the CA's
    // roots) changing does not read every resource again.
    let mut subs: Vec<watch::Receiver<u64>> =
        sources.iter().filter(|s| s.has_resources()).map(|s| s.subscribe()).collect();
    for s in &mut subs {
        s.borrow_and_update();
    }
    let mut current = HashMap::new();
    sync_once(&sources, &monitor, &mut current);
    monitor.forget_unclaimed();
    tokio::spawn(async move {
        let mut expiry = tokio::time::interval(Duration::from_secs(1));
        loop {
            let changed = futures_util::future::select_all(subs.iter_mut().map(|r| Box::pin(r.changed())));
            tokio::select! {
                _ = changed => {}
                // A deregistration writes the store, which syncs on its own: the tick does not
                // read every resource again each second.
                _ = expiry.tick() => {
                    deregister_expired(&monitor, &store);
                    continue;
                }
                _ = stop.wait_for(|s| *s) => break,
            }
            sync_once(&sources, &monitor, &mut current);
        }
    });
}

/// Sets the checks of every Workload whose checks differ from `current`, removes the ones gone.
fn sync_once(sources: &[Arc<dyn Source>], monitor: &Monitor, current: &mut HashMap<String, Vec<CheckSpec>>) {
    let mut wanted: HashMap<String, Vec<CheckSpec>> = HashMap::new();
    for r in merge(sources) {
        if let Resource::Workload(w) = r {
            wanted.insert(format!("{}/{}", w.metadata.namespace, w.metadata.name), w.spec.checks);
        }
    }
    for (w, checks) in &wanted {
        if current.get(w) != Some(checks) {
            monitor.set_checks(w, checks.clone());
        }
    }
    for w in current.keys().filter(|w| !wanted.contains_key(*w)) {
        monitor.remove(w);
    }
    *current = wanted;
}

/// Consul's DeregisterCriticalServiceAfter: opt-in per check.
fn deregister_expired(monitor: &Monitor, store: &Store) {
    for w in monitor.expired() {
        let Some((namespace, name)) = w.split_once('/') else { continue };
        let key = Key { kind: Kind::Workload, namespace: namespace.into(), name: name.into() };
        match store.delete(std::slice::from_ref(&key)) {
            Ok(_) => {
                tracing::warn!(%key, "deregistered: its health check stayed critical past deregisterCriticalAfter")
            }
            Err(e) => tracing::debug!(%key, error = %e, "could not deregister"),
        }
    }
}
