//! The table, indexed for lookups, and the records each name answers.
//!
//! Built from a [`Table`] outside any lock and published whole (see `server.rs`), so a query sees
//! either the old table or the new one, never a mix.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tracing::debug;

use crate::names::{self, MeshName, Zone};
use crate::table::{Table, CONSUL_NAMESPACE};

/// SOA timers for the synthesized zones (seconds). Only `minimum` (= the configured TTL) matters
/// to clients: it bounds how long they cache NXDOMAIN and NODATA (RFC 2308).
const SOA_REFRESH: i32 = 3600;
const SOA_RETRY: i32 = 600;
const SOA_EXPIRE: i32 = 86400;

/// A healthy instance, with lowercase tags and node.
#[derive(Clone, Debug)]
struct Endpoint {
    address: IpAddr,
    port: u16,
    tags: Vec<String>,
    node: String,
}

/// The answer to one question in our zones, or the news that it is not ours.
#[derive(Debug)]
pub(crate) enum Resolution {
    /// The name exists. Empty `answers` is NODATA.
    Found { zone: Zone, answers: Vec<Record>, additionals: Vec<Record> },
    /// In our zone, no such name.
    NxDomain { zone: Zone },
    /// Another Consul datacenter's name: forwarded when there is an upstream, else NXDOMAIN.
    OtherDatacenter,
    /// Not in our zones.
    Outside,
}

/// Lookup indexes over one [`Table`]: by (namespace, service), by Consul service, by node.
#[derive(Debug)]
pub(crate) struct Index {
    /// Lowercase Consul datacenter (= cluster).
    dc: String,
    ttl: u32,
    serial: u32,
    /// Healthy endpoints by (namespace, service). A service with none healthy is present, empty.
    kube: HashMap<(String, String), Vec<Endpoint>>,
    namespaces: HashSet<String>,
    /// Healthy endpoints of namespace [`CONSUL_NAMESPACE`] by service.
    consul: HashMap<String, Vec<Endpoint>>,
    /// Addresses of the healthy endpoints of namespace [`CONSUL_NAMESPACE`] by node.
    nodes: HashMap<String, Vec<IpAddr>>,
    /// `node.<dc>.consul.` (or `node.consul.` when the cluster name is no DNS label).
    node_suffix: Name,
}

impl Index {
    /// Indexes `table`. `serial` is the SOA serial (bumped on every swap).
    pub(crate) fn new(table: &Table, ttl: u32, serial: u32) -> Self {
        let dc = table.cluster.to_ascii_lowercase();
        let node_suffix = Name::from_ascii(format!("node.{dc}.consul."))
            .ok()
            .filter(|_| !dc.is_empty() && !dc.contains('.'))
            .unwrap_or_else(|| Name::from_ascii("node.consul.").expect("static name"));
        let mut index = Index {
            dc,
            ttl,
            serial,
            kube: HashMap::new(),
            namespaces: HashSet::new(),
            consul: HashMap::new(),
            nodes: HashMap::new(),
            node_suffix,
        };
        for service in &table.services {
            let namespace = service.namespace.to_ascii_lowercase();
            let name = service.name.to_ascii_lowercase();
            let healthy: Vec<Endpoint> = service
                .instances
                .iter()
                .filter(|i| i.healthy)
                .map(|i| Endpoint {
                    address: i.address,
                    port: i.port,
                    tags: i.tags.iter().map(|t| t.to_ascii_lowercase()).collect(),
                    node: i.node.to_ascii_lowercase(),
                })
                .collect();
            if namespace == CONSUL_NAMESPACE {
                for e in &healthy {
                    index.nodes.entry(e.node.clone()).or_default().push(e.address);
                }
                index.consul.entry(name.clone()).or_default().extend(healthy.iter().cloned());
            }
            index.namespaces.insert(namespace.clone());
            index.kube.entry((namespace, name)).or_default().extend(healthy);
        }
        index
    }

    /// Answers `qtype` for `qname` (lowercase, as hickory's `LowerName` gives it).
    pub(crate) fn resolve(&self, qname: &Name, qtype: RecordType) -> Resolution {
        let labels: Option<Vec<&str>> = qname.iter().map(|l| std::str::from_utf8(l).ok()).collect();
        let Some(labels) = labels else {
            // Not UTF-8: never one of our names. Ours if it ends in our zone, as labels go.
            return match qname.iter().next_back() {
                Some(b"consul") => Resolution::NxDomain { zone: Zone::Consul },
                Some(b"local") if qname.iter().rev().nth(1) == Some(b"cluster") => {
                    Resolution::NxDomain { zone: Zone::Kube }
                }
                _ => Resolution::Outside,
            };
        };
        let found = |zone, answers, additionals| Resolution::Found { zone, answers, additionals };
        let none = Vec::new;
        match names::parse(&labels, &self.dc) {
            MeshName::Outside => Resolution::Outside,
            MeshName::Unknown(zone) => Resolution::NxDomain { zone },
            MeshName::OtherDatacenter => Resolution::OtherDatacenter,
            MeshName::Structural { zone, apex } => {
                let answers = if apex && matches!(qtype, RecordType::SOA | RecordType::ANY) {
                    vec![self.soa(zone)]
                } else {
                    none()
                };
                found(zone, answers, none())
            }
            MeshName::KubeNamespace { namespace } if self.namespaces.contains(namespace) => {
                found(Zone::Kube, none(), none())
            }
            MeshName::KubeNamespace { .. } => Resolution::NxDomain { zone: Zone::Kube },
            MeshName::KubeService { service, namespace } => match self.kube_endpoints(service, namespace) {
                Some(eps) => {
                    let answers = self.address_records(qname, eps.iter().map(|e| e.address), qtype);
                    found(Zone::Kube, answers, none())
                }
                None => Resolution::NxDomain { zone: Zone::Kube },
            },
            MeshName::KubeSrv { service, namespace } => match self.kube_endpoints(service, namespace) {
                Some(eps) if qtype == RecordType::SRV => {
                    let parent = qname.trim_to(5);
                    let (answers, additionals) = self.srv_records(
                        qname,
                        eps,
                        |e| {
                            let target = Name::from_ascii(&e.node).ok()?.append_name(&parent).ok()?;
                            // Only single-label nodes can be parsed back as `KubeInstance`.
                            (target.num_labels() == parent.num_labels() + 1).then_some(target)
                        },
                        |e| vec![e.address],
                    );
                    found(Zone::Kube, answers, additionals)
                }
                Some(_) => found(Zone::Kube, none(), none()),
                None => Resolution::NxDomain { zone: Zone::Kube },
            },
            MeshName::KubeInstance { node, service, namespace } => {
                let addrs: Vec<IpAddr> = self
                    .kube_endpoints(service, namespace)
                    .unwrap_or_default()
                    .iter()
                    .filter(|e| e.node == node)
                    .map(|e| e.address)
                    .collect();
                if addrs.is_empty() {
                    Resolution::NxDomain { zone: Zone::Kube }
                } else {
                    found(Zone::Kube, self.address_records(qname, addrs.into_iter(), qtype), none())
                }
            }
            MeshName::ConsulService { service, tag } => {
                let Some(eps) = self.consul.get(service) else {
                    return Resolution::NxDomain { zone: Zone::Consul };
                };
                let eps: Vec<Endpoint> =
                    eps.iter().filter(|e| tag.is_none_or(|t| e.tags.iter().any(|et| et == t))).cloned().collect();
                if qtype == RecordType::SRV {
                    let (answers, additionals) = self.srv_records(
                        qname,
                        &eps,
                        |e| Name::from_ascii(&e.node).ok()?.append_name(&self.node_suffix).ok(),
                        |e| self.nodes.get(&e.node).cloned().unwrap_or_default(),
                    );
                    found(Zone::Consul, answers, additionals)
                } else {
                    let answers = self.address_records(qname, eps.iter().map(|e| e.address), qtype);
                    found(Zone::Consul, answers, none())
                }
            }
            MeshName::ConsulNode { node } => match self.nodes.get(&node) {
                Some(addrs) => found(Zone::Consul, self.address_records(qname, addrs.iter().copied(), qtype), none()),
                None => Resolution::NxDomain { zone: Zone::Consul },
            },
        }
    }

    /// The SOA serial this index was built with.
    #[cfg(test)]
    pub(crate) fn serial(&self) -> u32 {
        self.serial
    }

    /// The SOA record of `zone`, for the authority section of negative answers.
    pub(crate) fn soa(&self, zone: Zone) -> Record {
        let apex = match zone {
            Zone::Kube => "cluster.local.",
            Zone::Consul => "consul.",
        };
        let name = |prefix: &str| Name::from_ascii(format!("{prefix}{apex}")).expect("static name");
        let soa =
            SOA::new(name("ns.dns."), name("hostmaster."), self.serial, SOA_REFRESH, SOA_RETRY, SOA_EXPIRE, self.ttl);
        Record::from_rdata(name(""), self.ttl, RData::SOA(soa))
    }

    fn kube_endpoints(&self, service: &str, namespace: &str) -> Option<&[Endpoint]> {
        self.kube.get(&(namespace.to_owned(), service.to_owned())).map(Vec::as_slice)
    }

    /// A and/or AAAA records (as `qtype` asks) for `addrs`, without duplicates.
    fn address_records(&self, owner: &Name, addrs: impl Iterator<Item = IpAddr>, qtype: RecordType) -> Vec<Record> {
        let (want_v4, want_v6) = match qtype {
            RecordType::A => (true, false),
            RecordType::AAAA => (false, true),
            RecordType::ANY => (true, true),
            _ => return Vec::new(),
        };
        let mut seen = HashSet::new();
        addrs
            .filter(|a| seen.insert(*a))
            .filter_map(|a| match a {
                IpAddr::V4(v4) if want_v4 => Some(RData::A(A(v4))),
                IpAddr::V6(v6) if want_v6 => Some(RData::AAAA(AAAA(v6))),
                _ => None,
            })
            .map(|rdata| Record::from_rdata(owner.clone(), self.ttl, rdata))
            .collect()
    }

    /// SRV records (priority 1, weight 1) for `eps`, targets from `target`, and A/AAAA additionals
    /// for each target from `target_addrs`. An endpoint without a valid target is skipped.
    fn srv_records(
        &self,
        owner: &Name,
        eps: &[Endpoint],
        target: impl Fn(&Endpoint) -> Option<Name>,
        target_addrs: impl Fn(&Endpoint) -> Vec<IpAddr>,
    ) -> (Vec<Record>, Vec<Record>) {
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        let mut seen_srv = HashSet::new();
        let mut seen_target = HashSet::new();
        for e in eps {
            let Some(target_name) = target(e) else {
                debug!(node = %e.node, "instance node is no DNS name; no SRV record for it");
                continue;
            };
            if !seen_srv.insert((e.port, target_name.clone())) {
                continue;
            }
            let srv = SRV::new(1, 1, e.port, target_name.clone());
            answers.push(Record::from_rdata(owner.clone(), self.ttl, RData::SRV(srv)));
            if seen_target.insert(target_name.clone()) {
                additionals.extend(self.address_records(&target_name, target_addrs(e).into_iter(), RecordType::ANY));
            }
        }
        (answers, additionals)
    }
}

#[cfg(test)]
mod tests;
