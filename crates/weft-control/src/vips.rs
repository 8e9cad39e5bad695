//! Virtual IPs: one per service that has instances in another cluster, and one per other
//! cluster's mirror of a service (`<svc>-<cluster>`, `<svc>.<ns>.<cluster>.global`,
//! `<svc>.service.<cluster>.consul`); with remote clusters (primary-remote), whose pods see this
//! cluster as another one, one per service and per mirror of every cluster. They come from
//! MeshConfig `virtualIps.range` (240.240.0.0/16 by
//! default, as Istio's DNS auto-allocation). DNS answers them for names that reach other
//! clusters and proxies intercept them, so an app whose pod has no route to a remote network
//! still reaches a remote service by name.
//!
//! An address, once given, stays with its name: the allocations are saved in
//! `<data-dir>/vips.json` (0600, written to a temporary file and renamed) and read at start, so
//! a restart changes none. A new name takes the first free address from a hash of its name
//! (so the same name usually gets the same address even on another control plane), probing
//! upwards past taken ones. Names that are gone keep their address until the range runs out;
//! only then are theirs reused. Changing the range re-allocates the names outside it.

use crate::catalog::{Catalog, CatalogService, VipKey};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;

/// Allocations by name, shared by every catalog build.
pub struct Vips {
    path: Option<PathBuf>,
    given: Mutex<BTreeMap<VipKey, Ipv4Addr>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    namespace: String,
    service: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    cluster: String,
    address: Ipv4Addr,
}

impl Vips {
    /// Allocations kept in memory only (tests).
    pub fn in_memory() -> Vips {
        Vips { path: None, given: Mutex::default() }
    }

    /// Allocations saved in `path`, read now. An unreadable file is reported and set aside
    /// (`<path>.bad`): names get new addresses rather than the control plane not starting.
    pub fn open(path: PathBuf) -> Vips {
        let mut given = BTreeMap::new();
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Vec<Saved>>(&bytes) {
                Ok(saved) => {
                    given = saved.into_iter().map(|s| ((s.namespace, s.service, s.cluster), s.address)).collect()
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "virtual IP allocations unreadable; set aside as .bad, names get new addresses");
                    let _ = std::fs::rename(&path, path.with_extension("json.bad"));
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::error!(file = %path.display(), error = %e, "cannot read the virtual IP allocations"),
        }
        Vips { path: Some(path), given: Mutex::new(given) }
    }

    /// Fills `cat.vips`: every name that needs one (see the module docs) gets its address,
    /// allocating (and saving) those that have none in the range yet. With virtual IPs off, or
    /// a range that does not parse, `cat.vips` stays empty and the allocations are kept.
    pub fn assign(&self, cat: &mut Catalog) {
        let Ok(Some((base, prefix))) = cat.mesh.virtual_ips.parse() else { return };
        let local = cat.mesh.cluster.name.as_str();
        // Primary-remote: the remote clusters' proxies and DNS (`weft dns`) see this cluster as
        // another one, so every service and every cluster's mirror gets its address.
        let seen_from_elsewhere = !cat.mesh.remote_clusters.is_empty();
        let mut wanted: BTreeSet<VipKey> = BTreeSet::new();
        for s in cat.services.values() {
            wanted.extend(wanted_by(s, local, seen_from_elsewhere));
        }
        let mut given = self.given.lock().unwrap_or_else(|p| p.into_inner());
        let range = Range { base: u32::from(base), size: 1u32 << (32 - prefix) };
        let before = given.clone();
        given.retain(|_, ip| range.contains(*ip));
        let mut taken: BTreeSet<Ipv4Addr> = given.values().copied().collect();
        let mut full = false;
        for key in &wanted {
            if given.contains_key(key) {
                continue;
            }
            let mut ip = range.first_free(key, &taken);
            if ip.is_none() && !full {
                // Out of addresses: names that are gone give theirs back.
                full = true;
                given.retain(|k, _| wanted.contains(k));
                taken = given.values().copied().collect();
                ip = range.first_free(key, &taken);
            }
            match ip {
                Some(ip) => {
                    taken.insert(ip);
                    given.insert(key.clone(), ip);
                }
                None => tracing::warn!(
                    namespace = %key.0, service = %key.1, cluster = %key.2, range = %cat.mesh.virtual_ips.range,
                    "no virtual IP left in MeshConfig virtualIps.range; its names answer instance addresses (widen the range)"
                ),
            }
        }
        cat.vips = wanted.iter().filter_map(|k| given.get(k).map(|ip| (k.clone(), *ip))).collect();
        if *given != before {
            self.save(&given);
        }
    }

    /// [`Vips::assign`] for a catalog built from `old` (assigned already) in which only the
    /// services `changed` changed, were added or are gone: only those are looked at, the rest
    /// keep their addresses from `old.vips`. A change of the settings, or a range that runs
    /// out, assigns everything as [`Vips::assign`] does.
    pub fn assign_after(&self, cat: &mut Catalog, old: &Catalog, changed: &[(String, String)]) {
        let (m, o) = (&cat.mesh, &old.mesh);
        let same_settings = m.virtual_ips == o.virtual_ips
            && m.cluster.name == o.cluster.name
            && m.remote_clusters.is_empty() == o.remote_clusters.is_empty();
        let Ok(Some((base, prefix))) = cat.mesh.virtual_ips.parse() else { return };
        if !same_settings {
            return self.assign(cat);
        }
        let mut vips = old.vips.clone();
        if changed.is_empty() {
            cat.vips = vips;
            return;
        }
        let (local, seen_from_elsewhere) = (cat.mesh.cluster.name.as_str(), !cat.mesh.remote_clusters.is_empty());
        let mut wanted: BTreeSet<VipKey> = BTreeSet::new();
        for (ns, name) in changed {
            let first = (ns.clone(), name.clone(), String::new());
            let theirs: Vec<VipKey> =
                vips.range(first..).take_while(|((n, s, _), _)| n == ns && s == name).map(|(k, _)| k.clone()).collect();
            for k in theirs {
                vips.remove(&k);
            }
            if let Some(s) = cat.services.get(&(ns.clone(), name.clone())) {
                wanted.extend(wanted_by(s, local, seen_from_elsewhere));
            }
        }
        let mut given = self.given.lock().unwrap_or_else(|p| p.into_inner());
        let range = Range { base: u32::from(base), size: 1u32 << (32 - prefix) };
        let mut taken: Option<BTreeSet<Ipv4Addr>> = None;
        let mut added = false;
        for key in &wanted {
            if let Some(ip) = given.get(key) {
                vips.insert(key.clone(), *ip);
                continue;
            }
            let taken = taken.get_or_insert_with(|| given.values().copied().collect());
            let Some(ip) = range.first_free(key, taken) else {
                // Out of addresses: the whole assignment decides which names give theirs back.
                drop(given);
                return self.assign(cat);
            };
            taken.insert(ip);
            given.insert(key.clone(), ip);
            vips.insert(key.clone(), ip);
            added = true;
        }
        cat.vips = vips;
        if added {
            self.save(&given);
        }
    }

    /// Writes the allocations (blocking; small, and only when they change).
    fn save(&self, given: &BTreeMap<VipKey, Ipv4Addr>) {
        let Some(path) = &self.path else { return };
        let saved: Vec<Saved> = given
            .iter()
            .map(|((namespace, service, cluster), address)| Saved {
                namespace: namespace.clone(),
                service: service.clone(),
                cluster: cluster.clone(),
                address: *address,
            })
            .collect();
        let tmp = path.with_extension("json.tmp");
        let r = crate::tokens::write_private(&tmp, &serde_json::to_vec_pretty(&saved).unwrap_or_default())
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = r {
            tracing::error!(file = %path.display(), error = %e, "cannot save the virtual IP allocations; a restart may change them");
        }
    }
}

/// The names of `s` that need a virtual IP (see the module docs), seen from cluster `local`.
fn wanted_by(s: &CatalogService, local: &str, seen_from_elsewhere: bool) -> Vec<VipKey> {
    let clusters = s.all_clusters();
    if !seen_from_elsewhere && clusters.iter().all(|c| *c == local) {
        return vec![];
    }
    let key = |c: &str| (s.namespace.clone(), s.name.clone(), c.to_string());
    std::iter::once(key(""))
        .chain(clusters.iter().filter(|c| seen_from_elsewhere || **c != local).map(|c| key(c)))
        .collect()
}

/// The usable addresses of a CIDR: all but its first and last.
struct Range {
    base: u32,
    size: u32,
}

impl Range {
    fn contains(&self, ip: Ipv4Addr) -> bool {
        let offset = u32::from(ip).wrapping_sub(self.base);
        offset > 0 && offset < self.size - 1
    }

    /// The first address not in `taken`, starting at the name's hash and probing upwards.
    fn first_free(&self, key: &VipKey, taken: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        let usable = self.size - 2;
        let start = (fnv1a(key) % u64::from(usable)) as u32;
        (0..usable).map(|i| Ipv4Addr::from(self.base + 1 + (start + i) % usable)).find(|ip| !taken.contains(ip))
    }
}

/// FNV-1a over `namespace/service/cluster`: stable across versions and platforms (unlike
/// `DefaultHasher`).
fn fnv1a((ns, name, cluster): &VipKey) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ns.bytes().chain([b'/']).chain(name.bytes()).chain([b'/']).chain(cluster.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests;
