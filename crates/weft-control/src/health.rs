//! Runs every Workload's health checks (weft-health) and feeds the results back: the registry
//! drops critical instances from the catalog (and so from proxies' load balancers and DNS), and
//! workloads whose checks stayed critical past `deregisterCriticalAfter` are deregistered.

use crate::registry::{merge, Source};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use weft_api::kinds::CheckSpec;
use weft_api::resource::{Key, Kind, Resource};
use weft_health::{Monitor, Status};
use weft_store::Store;

/// True when the workload (`namespace/name`) may receive traffic: its checks are known and not
/// critical. (Warning still serves, as in Consul.)
pub fn healthy(monitor: &Monitor, workload: &str) -> bool {
    monitor.workload_status(workload).is_some_and(|s| s != Status::Critical)
}

/// Keeps the monitor's checks equal to the Workloads' `checks`, until `stop`.
pub fn sync_checks(sources: Vec<Arc<dyn Source>>, monitor: Monitor, store: Store, mut stop: watch::Receiver<bool>) {
    let mut subs: Vec<watch::Receiver<u64>> = sources.iter().map(|s| s.subscribe()).collect();
    tokio::spawn(async move {
        let mut current: HashMap<String, Vec<CheckSpec>> = HashMap::new();
        let mut expiry = tokio::time::interval(Duration::from_secs(1));
        loop {
            let mut wanted: HashMap<String, Vec<CheckSpec>> = HashMap::new();
            for r in merge(&sources) {
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
            current = wanted;
            let changed = futures_util::future::select_all(subs.iter_mut().map(|r| Box::pin(r.changed())));
            tokio::select! {
                _ = changed => {}
                _ = expiry.tick() => deregister_expired(&monitor, &store),
                _ = stop.wait_for(|s| *s) => break,
            }
        }
    });
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
