//! The table, indexed for lookups, and the records each name answers.
//!
//! Built from a [`Table`] outside any lock and published whole (see `server.rs`), so a query sees
//! either the old table or the new one, never a mix. Which name answers what (and when a virtual
//! IP is answered) is in the crate docs, "Names across clusters".

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

/// A healthy instance of a cluster that is up, with lowercase tags, node and cluster.
#[derive(Clone, Debug)]
struct Endpoint {
    address: IpAddr,
    port: u16,
    tags: Vec<String>,
    node: String,
    cluster: String,
}

/// One service (namespace, name), every cluster's instances together.
#[derive(Debug, Default)]
struct Svc {
    /// Healthy instances of clusters that are up, this cluster's first.
    endpoints: Vec<Endpoint>,
    /// How many of `endpoints` are this cluster's.
    local: usize,
    /// The clusters that have the service (lowercase), whether up or not.
    clusters: HashSet<String>,
    /// The whole service's virtual IP.
    vip: Option<IpAddr>,
    /// Each mirror's virtual IP, by cluster.
    mirror_vips: HashMap<String, IpAddr>,
}

/// The answer to one question in our zones, or the news that it is not ours.
#[derive(Debug)]
pub(crate) enum Resolution {
    /// The name exists. Empty `answers` is NODATA. The first `lead` answers (this cluster's) go
    /// before the others; each group turns on its own from one query to the next.
    Found { zone: Zone, answers: Vec<Record>, additionals: Vec<Record>, lead: usize },
    /// In our zone, no such name.
    NxDomain { zone: Zone },
    /// Another Consul datacenter's name: forwarded when there is an upstream, else NXDOMAIN.
    OtherDatacenter,
    /// Not in our zones.
    Outside,
}

/// What a service-and-cluster name points at.
enum Target<'a> {
    /// Every cluster's instances.
    Span(&'a Svc),
    /// One cluster's instances (`cluster` lowercase, up).
    Mirror(&'a Svc, &'a str),
    /// A cluster whose link is down: nothing, not a stale answer.
    Down,
}

/// Lookup indexes over one [`Table`]: by (namespace, service), by node, and the clusters.
#[derive(Debug)]
pub(crate) struct Index {
    /// Lowercase Consul datacenter (= cluster).
    dc: String,
    ttl: u32,
    serial: u32,
    /// By (namespace, service). A service with none healthy is present, empty.
    kube: HashMap<(String, String), Svc>,
    namespaces: HashSet<String>,
    /// Addresses of this cluster's healthy endpoints of namespace [`CONSUL_NAMESPACE`] by node.
    nodes: HashMap<String, Vec<IpAddr>>,
    /// `node.<dc>.consul.` (or `node.consul.` when the cluster name is no DNS label).
    node_suffix: Name,
    /// Every cluster known (this one, linked ones, those instances name), lowercase: up or not.
    clusters: HashMap<String, bool>,
    /// The same, longest name first (mirror names are matched by suffix).
    clusters_by_length: Vec<(String, bool)>,
}

impl Index {
    /// Indexes `table`. `serial` is the SOA serial (bumped on every swap).
    pub(crate) fn new(table: &Table, ttl: u32, serial: u32) -> Self {
        let dc = table.cluster.to_ascii_lowercase();
        let node_suffix = Name::from_ascii(format!("node.{dc}.consul."))
            .ok()
            .filter(|_| !dc.is_empty() && !dc.contains('.'))
            .unwrap_or_else(|| Name::from_ascii("node.consul.").expect("static name"));
        let mut clusters: HashMap<String, bool> =
            table.links.iter().map(|l| (l.cluster.to_ascii_lowercase(), l.up)).collect();
        clusters.insert(dc.clone(), true);
        let cluster_of = |c: &str| if c.is_empty() { dc.clone() } else { c.to_ascii_lowercase() };
        for i in table.services.iter().flat_map(|s| &s.instances) {
            clusters.entry(cluster_of(&i.cluster)).or_insert(true);
        }
        let mut index = Index {
            dc: dc.clone(),
            ttl,
            serial,
            kube: HashMap::new(),
            namespaces: HashSet::new(),
            nodes: HashMap::new(),
            node_suffix,
            clusters_by_length: Vec::new(),
            clusters,
        };
        index.clusters_by_length = index.clusters.iter().map(|(c, up)| (c.clone(), *up)).collect();
        index.clusters_by_length.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        for service in &table.services {
            let namespace = service.namespace.to_ascii_lowercase();
            let name = service.name.to_ascii_lowercase();
            let svc = index.kube.entry((namespace.clone(), name)).or_default();
            svc.clusters.extend(service.clusters.iter().map(|c| cluster_of(c)));
            svc.clusters.extend(service.instances.iter().map(|i| cluster_of(&i.cluster)));
            for vip in &service.vips {
                match vip.cluster.as_str() {
                    "" => svc.vip = Some(vip.address),
                    c => {
                        svc.mirror_vips.insert(c.to_ascii_lowercase(), vip.address);
                    }
                }
            }
            let up = |c: &str| index.clusters.get(c).copied().unwrap_or(true);
            for i in service.instances.iter().filter(|i| i.healthy) {
                let cluster = cluster_of(&i.cluster);
                if !up(&cluster) {
                    continue;
                }
                let e = Endpoint {
                    address: i.address,
                    port: i.port,
                    tags: i.tags.iter().map(|t| t.to_ascii_lowercase()).collect(),
                    node: i.node.to_ascii_lowercase(),
                    cluster,
                };
                if e.cluster == dc {
                    if namespace == CONSUL_NAMESPACE {
                        index.nodes.entry(e.node.clone()).or_default().push(e.address);
                    }
                    svc.endpoints.insert(svc.local, e);
                    svc.local += 1;
                } else {
                    svc.endpoints.push(e);
                }
            }
            index.namespaces.insert(namespace);
        }
        for svc in index.kube.values_mut() {
            if svc.clusters.is_empty() {
                svc.clusters.insert(dc.clone());
            }
        }
        index
    }

    /// Answers `qtype` for `qname` (lowercase, as hickory's `LowerName` gives it).
    pub(crate) fn resolve(&self, qname: &Name, qtype: RecordType) -> Resolution {
        let labels: Option<Vec<&str>> = qname.iter().map(|l| std::str::from_utf8(l).ok()).collect();
        let Some(labels) = labels else {
            // Not UTF-8: never one of our names. Ours if it ends in our zone, as labels go.
            let mut rev = qname.iter().rev();
            return match (rev.next(), rev.next()) {
                (Some(b"consul"), _) => Resolution::NxDomain { zone: Zone::Consul },
                (Some(b"global"), _) => Resolution::NxDomain { zone: Zone::Global },
                (Some(b"local"), Some(b"cluster")) => Resolution::NxDomain { zone: Zone::Kube },
                (Some(b"local"), Some(b"clusterset")) => Resolution::NxDomain { zone: Zone::ClusterSet },
                _ => Resolution::Outside,
            };
        };
        let found = |zone, answers: Vec<Record>, additionals| {
            let lead = answers.len();
            Resolution::Found { zone, answers, additionals, lead }
        };
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
            MeshName::KubeNamespace { namespace } => self.namespace(Zone::Kube, namespace),
            MeshName::Namespace { zone, namespace } => self.namespace(zone, namespace),
            MeshName::KubeService { service, namespace } => match self.kube_target(service, namespace) {
                Some(target) => self.addresses(Zone::Kube, qname, target, None, qtype),
                None => Resolution::NxDomain { zone: Zone::Kube },
            },
            MeshName::KubeSrv { service, namespace } => match self.kube_target(service, namespace) {
                Some(_) if qtype != RecordType::SRV => found(Zone::Kube, none(), none()),
                // Every cluster's instances, all local: one record per instance, its own name.
                Some(Target::Span(svc)) if !self.answers_vip(svc) => {
                    let parent = qname.trim_to(5);
                    let (answers, additionals) = self.srv_records(
                        qname,
                        &svc.endpoints,
                        |e| {
                            let target = Name::from_ascii(&e.node).ok()?.append_name(&parent).ok()?;
                            // Only single-label nodes can be parsed back as `KubeInstance`.
                            (target.num_labels() == parent.num_labels() + 1).then_some(target)
                        },
                        |e| vec![e.address],
                    );
                    let lead = answers.iter().filter(|r| matches!(&r.data, RData::SRV(s) if s.priority == 1)).count();
                    Resolution::Found { zone: Zone::Kube, answers, additionals, lead }
                }
                Some(target) => {
                    let base = qname.trim_to(qname.num_labels() as usize - 2);
                    self.named_srv(Zone::Kube, qname, base, target, None)
                }
                None => Resolution::NxDomain { zone: Zone::Kube },
            },
            MeshName::KubeInstance { node, service, namespace } => {
                let addrs: Vec<IpAddr> = self
                    .kube
                    .get(&(namespace.to_owned(), service.to_owned()))
                    .map(|s| s.endpoints.as_slice())
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
            MeshName::SetService { service, namespace } => match self.service(namespace, service) {
                Some(svc) => self.addresses(Zone::ClusterSet, qname, Target::Span(svc), None, qtype),
                None => Resolution::NxDomain { zone: Zone::ClusterSet },
            },
            MeshName::SetSrv { service, namespace } => match self.service(namespace, service) {
                Some(_) if qtype != RecordType::SRV => found(Zone::ClusterSet, none(), none()),
                Some(svc) => {
                    let base = qname.trim_to(qname.num_labels() as usize - 2);
                    self.named_srv(Zone::ClusterSet, qname, base, Target::Span(svc), None)
                }
                None => Resolution::NxDomain { zone: Zone::ClusterSet },
            },
            MeshName::GlobalService { service, namespace, cluster } => {
                let target = match cluster {
                    None => self.service(namespace, service).map(Target::Span),
                    Some(c) => match self.clusters.get(c) {
                        Some(false) => Some(Target::Down),
                        Some(true) => self
                            .service(namespace, service)
                            .filter(|s| s.clusters.contains(c))
                            .map(|s| Target::Mirror(s, c)),
                        None => None,
                    },
                };
                match target {
                    Some(t) => self.addresses(Zone::Global, qname, t, None, qtype),
                    None => Resolution::NxDomain { zone: Zone::Global },
                }
            }
            MeshName::ConsulService { service, tag } => {
                // This datacenter's instances only, as Consul answers `<svc>.service.consul`.
                let Some(svc) = self.service(CONSUL_NAMESPACE, service).filter(|s| s.clusters.contains(&self.dc))
                else {
                    return Resolution::NxDomain { zone: Zone::Consul };
                };
                let eps: Vec<Endpoint> = svc.endpoints[..svc.local]
                    .iter()
                    .filter(|e| tag.is_none_or(|t| e.tags.iter().any(|et| et == t)))
                    .cloned()
                    .collect();
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
            MeshName::PeerConsulService { service, tag, dc } => {
                let target = match self.clusters.get_key_value(dc) {
                    None => return Resolution::OtherDatacenter,
                    Some((_, false)) => Target::Down,
                    Some((_, true)) => match self.service(CONSUL_NAMESPACE, service) {
                        Some(svc) if svc.clusters.contains(dc) => Target::Mirror(svc, dc),
                        _ => return Resolution::NxDomain { zone: Zone::Consul },
                    },
                };
                if qtype == RecordType::SRV {
                    let name = match tag {
                        Some(t) => format!("{t}.{service}.service.{dc}.consul."),
                        None => format!("{service}.service.{dc}.consul."),
                    };
                    let Ok(base) = Name::from_ascii(&name) else {
                        return Resolution::NxDomain { zone: Zone::Consul };
                    };
                    self.named_srv(Zone::Consul, qname, base, target, tag)
                } else {
                    self.addresses(Zone::Consul, qname, target, tag, qtype)
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
        let apex = zone.apex();
        let name = |prefix: &str| Name::from_ascii(format!("{prefix}{apex}")).expect("static name");
        let soa =
            SOA::new(name("ns.dns."), name("hostmaster."), self.serial, SOA_REFRESH, SOA_RETRY, SOA_EXPIRE, self.ttl);
        Record::from_rdata(name(""), self.ttl, RData::SOA(soa))
    }

    fn service(&self, namespace: &str, service: &str) -> Option<&Svc> {
        self.kube.get(&(namespace.to_owned(), service.to_owned()))
    }

    fn namespace(&self, zone: Zone, namespace: &str) -> Resolution {
        if self.namespaces.contains(namespace) {
            Resolution::Found { zone, answers: Vec::new(), additionals: Vec::new(), lead: 0 }
        } else {
            Resolution::NxDomain { zone }
        }
    }

    /// `<svc>.<ns>.svc.cluster.local`: the service itself, or else `<base>-<cluster>` names the
    /// mirror of a known cluster (Linkerd's service mirroring). A real service of that name wins;
    /// when two mirrors share a name (`x` of cluster `a-b`, `x-a` of `b`) the shorter base does.
    fn kube_target(&self, service: &str, namespace: &str) -> Option<Target<'_>> {
        if let Some(svc) = self.service(namespace, service) {
            return Some(Target::Span(svc));
        }
        for (cluster, up) in &self.clusters_by_length {
            let up = *up;
            let Some(base) = service.strip_suffix(cluster.as_str()).and_then(|b| b.strip_suffix('-')) else {
                continue;
            };
            match self.service(namespace, base) {
                Some(_) if !up => return Some(Target::Down),
                Some(svc) if svc.clusters.contains(cluster) => return Some(Target::Mirror(svc, cluster)),
                _ => {}
            }
        }
        None
    }

    /// Whether a name spanning every cluster answers the service's virtual IP: when the service
    /// has instances in another cluster (whatever their health) and has a VIP.
    fn answers_vip(&self, svc: &Svc) -> bool {
        svc.vip.is_some() && svc.clusters.iter().any(|c| *c != self.dc)
    }

    /// The A/AAAA answer of `target`: its VIP (see the crate docs for when), else the addresses of
    /// its healthy instances, this cluster's first. Nothing healthy: NODATA, VIP or not.
    fn addresses(
        &self,
        zone: Zone,
        owner: &Name,
        target: Target<'_>,
        tag: Option<&str>,
        qtype: RecordType,
    ) -> Resolution {
        let (answers, lead) = self.address_answer(owner, &target, tag, qtype);
        Resolution::Found { zone, answers, additionals: Vec::new(), lead }
    }

    fn address_answer(
        &self,
        owner: &Name,
        target: &Target<'_>,
        tag: Option<&str>,
        qtype: RecordType,
    ) -> (Vec<Record>, usize) {
        let tagged = |e: &&Endpoint| tag.is_none_or(|t| e.tags.iter().any(|et| et == t));
        let (eps, vip): (Vec<&Endpoint>, _) = match *target {
            Target::Down => return (Vec::new(), 0),
            Target::Span(svc) => {
                (svc.endpoints.iter().filter(tagged).collect(), svc.vip.filter(|_| self.answers_vip(svc)))
            }
            Target::Mirror(svc, cluster) => {
                let eps = svc.endpoints.iter().filter(|e| e.cluster == cluster).filter(tagged).collect();
                // This cluster's own instances are reachable as they are: no VIP for its mirror.
                (eps, svc.mirror_vips.get(cluster).copied().filter(|_| cluster != self.dc))
            }
        };
        if eps.is_empty() {
            return (Vec::new(), 0);
        }
        if let Some(vip) = vip {
            let answers = self.address_records(owner, std::iter::once(vip), qtype);
            let lead = answers.len();
            return (answers, lead);
        }
        let local = self.address_records(owner, eps.iter().filter(|e| e.cluster == self.dc).map(|e| e.address), qtype);
        let lead = local.len();
        let mut seen: HashSet<IpAddr> = eps.iter().filter(|e| e.cluster == self.dc).map(|e| e.address).collect();
        let remote = eps.iter().filter(|e| e.cluster != self.dc).map(|e| e.address).filter(|a| seen.insert(*a));
        let mut answers = local;
        answers.extend(self.address_records(owner, remote, qtype));
        (answers, lead)
    }

    /// SRV whose target is a name of the service itself (`base`, answering as `target` does): one
    /// record per port its instances listen on, with the target's A/AAAA as additionals. Used
    /// for names answered by a VIP and for names of other clusters' instances.
    fn named_srv(&self, zone: Zone, owner: &Name, base: Name, target: Target<'_>, tag: Option<&str>) -> Resolution {
        let (addresses, _) = self.address_answer(&base, &target, tag, RecordType::ANY);
        let mut ports: Vec<u16> = match target {
            Target::Down => Vec::new(),
            Target::Span(svc) => svc.endpoints.iter().map(|e| e.port).collect(),
            Target::Mirror(svc, cluster) => {
                svc.endpoints.iter().filter(|e| e.cluster == cluster).map(|e| e.port).collect()
            }
        };
        if addresses.is_empty() {
            ports.clear();
        }
        ports.sort_unstable();
        ports.dedup();
        let answers: Vec<Record> = ports
            .into_iter()
            .map(|port| Record::from_rdata(owner.clone(), self.ttl, RData::SRV(SRV::new(1, 1, port, base.clone()))))
            .collect();
        let lead = answers.len();
        let additionals = if answers.is_empty() { Vec::new() } else { addresses };
        Resolution::Found { zone, answers, additionals, lead }
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

    /// SRV records (priority 1 for this cluster's instances, 2 for others'; weight 1) for `eps`,
    /// targets from `target`, and A/AAAA additionals
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
            // Another cluster's instance comes after this cluster's (RFC 2782: lower first).
            let priority = if e.cluster == self.dc { 1 } else { 2 };
            let srv = SRV::new(priority, 1, e.port, target_name.clone());
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

#[cfg(test)]
mod clusters_tests;
