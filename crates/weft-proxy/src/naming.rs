//! Mesh names and virtual IPs → services, for transparent mode: a request whose `Host` is a
//! mesh name goes to what that name names, and a connection to a virtual IP (any port) to its
//! service. Built once with the routing table (see [`crate::Routes`]); looking a name up
//! allocates nothing.
//!
//! | name (case-insensitive, trailing dot allowed) | routes to |
//! |---|---|
//! | `<svc>.<ns>.svc.cluster.local`, `<svc>.<ns>.global`, `<svc>.<ns>.svc.clusterset.local` | the service: every cluster's endpoints |
//! | `<svc>-<cluster>.<ns>.svc.cluster.local`, `<svc>.<ns>.<cluster>.global` | only that cluster's endpoints (its mirror) |
//! | `[<tag>.]<svc>.service.<cluster>.consul` (namespace `default`) | only that cluster's endpoints |
//! | `[<tag>.]<svc>.service.consul` | only this cluster's endpoints (Consul answers the local datacenter) |
//!
//! A real service named `<svc>-<cluster>` wins over the mirror name. Mirrors are per-cluster
//! [`Service`]s over the same endpoints, made here once per table, so picking an endpoint of a
//! mirror is the same as picking one of a service. Shorter names (`api`, `api.ns`, another
//! cluster domain) still re-balance a connection the app made to one endpoint of that same
//! service ([`Service::is_named_by`]).

use crate::routes::Service;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use weft_api::proxy::DEFAULT_NAMESPACE;

/// The longest DNS name (RFC 1035), and so the longest host looked up.
const MAX_NAME: usize = 253;

#[derive(Clone, Debug, Default)]
pub struct Names {
    /// Lowercase full names, without the trailing dot.
    by_name: HashMap<Box<str>, Arc<Service>>,
    by_vip: HashMap<IpAddr, Arc<Service>>,
    /// Mirrors by key (`<svc>.<ns>@<cluster>`), so a request on a kept-alive connection finds
    /// the current table's mirror.
    views: HashMap<String, Arc<Service>>,
    /// The service each mirror in `views` was made from (by the same key): a later table whose
    /// service is still that very `Arc` keeps the mirror ([`Names::build_from`]).
    parents: HashMap<String, Arc<Service>>,
    /// What it was built from: the proxy's cluster, the virtual IPs, each service by key with
    /// the (lowercase) clusters it has mirrors for. A later table that changes some services but
    /// none of these is patched ([`Names::build_from`]).
    local: String,
    vips: Vec<(String, String, IpAddr)>,
    services: HashMap<String, (Arc<Service>, BTreeSet<String>)>,
}

/// The names of a whole service (`n`, `ns` lowercase).
fn whole_names(n: &str, ns: &str) -> [String; 3] {
    [format!("{n}.{ns}.svc.cluster.local"), format!("{n}.{ns}.global"), format!("{n}.{ns}.svc.clusterset.local")]
}

/// The names of a service's mirror in cluster `c` (all lowercase; `local` is this proxy's).
fn mirror_names(n: &str, ns: &str, c: &str, local: &str) -> Vec<String> {
    let mut v = vec![format!("{n}-{c}.{ns}.svc.cluster.local"), format!("{n}.{ns}.{c}.global")];
    if ns == DEFAULT_NAMESPACE {
        v.push(format!("{n}.service.{c}.consul"));
        if c == local {
            v.push(format!("{n}.service.consul"));
        }
    }
    v
}

/// The clusters `s` has mirrors for: its endpoints', this proxy's (`local`) and those its
/// virtual IPs name, lowercase.
fn clusters_of(s: &Service, local: &str, vips: &[(String, String, IpAddr)]) -> BTreeSet<String> {
    let lower = |s: &str| s.to_ascii_lowercase();
    let mut set: BTreeSet<String> = s.endpoints.iter().map(|e| lower(&e.cluster)).collect();
    set.insert(lower(local));
    set.extend(vips.iter().filter(|(k, c, _)| k == s.key() && !c.is_empty()).map(|(_, c, _)| lower(c)));
    set
}

/// The key of the mirror of `service` in `cluster`.
pub fn view_key(service: &Service, cluster: &str) -> String {
    format!("{}@{cluster}", service.key())
}

impl Names {
    /// Indexes `services`; `local` is this proxy's cluster; `vips` are (service key, cluster,
    /// address) with an empty cluster for the whole service. A VIP of an unknown service is
    /// dropped (the service may not be visible to this proxy).
    pub fn build<'a>(
        services: impl Iterator<Item = &'a Arc<Service>> + Clone,
        local: &str,
        vips: &[(String, String, IpAddr)],
    ) -> Names {
        Names::build_from(services, local, vips, None)
    }

    /// [`Names::build`], taking from `prev` the mirror of every service that is the very `Arc`
    /// it was made from (same endpoints, balancer and health): an update rebuilds the mirrors of
    /// the services it changed, and the others keep theirs and their balancer state.
    pub fn build_from<'a>(
        services: impl Iterator<Item = &'a Arc<Service>> + Clone,
        local: &str,
        vips: &[(String, String, IpAddr)],
        prev: Option<&Names>,
    ) -> Names {
        if let Some(patched) = prev.and_then(|p| p.patched(services.clone(), local, vips)) {
            return patched;
        }
        let mut names = Names::default();
        let lower = |s: &str| s.to_ascii_lowercase();
        let by_key: HashMap<&str, &Arc<Service>> = services.clone().map(|s| (s.key(), s)).collect();
        // Clusters per service: its endpoints' and those its VIPs name.
        let mut clusters: HashMap<&str, BTreeSet<String>> = HashMap::new();
        for s in services.clone() {
            let set = clusters.entry(s.key()).or_default();
            set.extend(s.endpoints.iter().map(|e| lower(&e.cluster)));
            set.insert(lower(local));
        }
        for (key, cluster, _) in vips {
            if let Some(set) = clusters.get_mut(key.as_str()) {
                if !cluster.is_empty() {
                    set.insert(lower(cluster));
                }
            }
        }
        // Whole services first: a real `<svc>-<cluster>` wins over a mirror's name.
        for s in services.clone() {
            let (n, ns) = (lower(&s.name), lower(&s.namespace));
            for name in whole_names(&n, &ns) {
                names.by_name.insert(name.into(), s.clone());
            }
        }
        // Two mirrors may share a name (`x` of cluster `a-b`, `x-a` of `b`): the shorter service
        // name wins, as in DNS.
        let mut ordered: Vec<&Arc<Service>> = services.collect();
        ordered.sort_by(|a, b| a.name.len().cmp(&b.name.len()).then_with(|| a.key().cmp(b.key())));
        for s in ordered {
            let (n, ns) = (lower(&s.name), lower(&s.namespace));
            for c in clusters.get(s.key()).into_iter().flatten() {
                let key = view_key(s, c);
                let kept = prev.and_then(|p| Some((p.parents.get(&key)?, p.views.get(&key)?)));
                let view = match kept {
                    Some((parent, view)) if Arc::ptr_eq(parent, s) => view.clone(),
                    _ => Arc::new(s.view(c)),
                };
                for name in mirror_names(&n, &ns, c, &lower(local)) {
                    names.by_name.entry(name.into()).or_insert_with(|| view.clone());
                }
                names.parents.insert(key.clone(), (*s).clone());
                names.views.insert(key, view);
            }
        }
        for (key, cluster, ip) in vips {
            let target = if cluster.is_empty() {
                by_key.get(key.as_str()).map(|s| (*s).clone())
            } else {
                names.views.get(&format!("{key}@{}", lower(cluster))).cloned()
            };
            match target {
                Some(t) => {
                    names.by_vip.insert(*ip, t);
                }
                None => {
                    tracing::debug!(service = %key, %cluster, %ip, "virtual IP of a service this proxy does not see")
                }
            }
        }
        names.local = local.to_string();
        names.vips = vips.to_vec();
        names.services = by_key
            .iter()
            .map(|(k, s)| (k.to_string(), ((*s).clone(), clusters.remove(k).unwrap_or_default())))
            .collect();
        names
    }

    /// This index for a table in which only some services are new `Arc`s, their clusters, the
    /// set of services, `local` and `vips` all as before: their names, mirrors and virtual IPs
    /// point at the new ones, everything else is kept. `None` when anything else changed (then
    /// it is built again). Costs a copy of the index and the changed services' mirrors.
    fn patched<'a>(
        &self,
        services: impl Iterator<Item = &'a Arc<Service>>,
        local: &str,
        vips: &[(String, String, IpAddr)],
    ) -> Option<Names> {
        if self.local != local || self.vips != vips {
            return None;
        }
        let (mut changed, mut count) = (vec![], 0usize);
        for s in services {
            count += 1;
            let (old, clusters) = self.services.get(s.key())?;
            if !Arc::ptr_eq(old, s) {
                if *clusters != clusters_of(s, local, vips) {
                    return None;
                }
                changed.push((old, s, clusters));
            }
        }
        if count != self.services.len() {
            return None;
        }
        let mut names = self.clone();
        let lower_local = local.to_ascii_lowercase();
        // Old object (service or mirror) → its replacement, for the virtual IPs.
        let mut replaced: Vec<(Arc<Service>, Arc<Service>)> = vec![];
        for (old, s, clusters) in changed {
            let (n, ns) = (s.name.to_ascii_lowercase(), s.namespace.to_ascii_lowercase());
            let mut point = |name: String, from: &Arc<Service>, to: &Arc<Service>| {
                if let Some(v) = names.by_name.get_mut(name.as_str()) {
                    if Arc::ptr_eq(v, from) {
                        *v = to.clone();
                    }
                }
            };
            for name in whole_names(&n, &ns) {
                point(name, old, s);
            }
            for c in clusters {
                let key = view_key(s, c);
                let view = Arc::new(s.view(c));
                if let Some(old_view) = self.views.get(&key) {
                    for name in mirror_names(&n, &ns, c, &lower_local) {
                        point(name, old_view, &view);
                    }
                    replaced.push((old_view.clone(), view.clone()));
                }
                names.parents.insert(key.clone(), s.clone());
                names.views.insert(key, view);
            }
            replaced.push((old.clone(), s.clone()));
            names.services.insert(s.key().to_string(), (s.clone(), clusters.clone()));
        }
        for target in names.by_vip.values_mut() {
            if let Some((_, new)) = replaced.iter().find(|(old, _)| Arc::ptr_eq(old, target)) {
                *target = new.clone();
            }
        }
        Some(names)
    }

    /// The service or mirror a full mesh name names (`Host` without its port), if any.
    pub fn by_host(&self, host: &str) -> Option<&Arc<Service>> {
        let host = host.strip_suffix('.').unwrap_or(host);
        let mut buf = [0u8; MAX_NAME];
        let lower = buf.get_mut(..host.len())?;
        lower.copy_from_slice(host.as_bytes());
        lower.make_ascii_lowercase();
        let lower = std::str::from_utf8(lower).ok()?;
        if let Some(s) = self.by_name.get(lower) {
            return Some(s);
        }
        // A Consul tag in front: `<tag>.<svc>.service[.<dc>].consul` (tags do not select here).
        let (_, rest) = lower.split_once('.')?;
        if rest.ends_with(".consul") {
            return self.by_name.get(rest);
        }
        None
    }

    /// The service or mirror a virtual IP names.
    pub fn by_vip(&self, ip: IpAddr) -> Option<&Arc<Service>> {
        self.by_vip.get(&ip)
    }

    /// A mirror by its key ([`view_key`]).
    pub fn view(&self, key: &str) -> Option<&Arc<Service>> {
        self.views.get(key)
    }

    /// Every virtual IP and the key of what it names, sorted (for `/config_dump`).
    pub fn vips(&self) -> Vec<(IpAddr, String)> {
        let mut v: Vec<(IpAddr, String)> = self.by_vip.iter().map(|(ip, s)| (*ip, s.key().to_string())).collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests;
