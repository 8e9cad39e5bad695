//! The registry view the DNS server answers from: plain domain types, filled by whoever watches
//! the registry and handed over whole with [`crate::DnsServer::set_table`].

use std::net::IpAddr;

/// One instance (endpoint) of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// Address answered in A (IPv4) or AAAA (IPv6) records.
    pub address: IpAddr,
    /// Port answered in SRV records.
    pub port: u16,
    /// Tags for Consul tag lookups (`<tag>.<svc>.service.consul`), compared case-insensitively.
    pub tags: Vec<String>,
    /// Only healthy instances are answered.
    pub healthy: bool,
    /// Instance name, used for SRV targets (`<node>.node.<dc>.consul.`). Must be a valid DNS name
    /// (one or more labels); an instance whose node is not gets no SRV record.
    pub node: String,
    /// The cluster the instance runs in; empty: this one ([`Table::cluster`]).
    pub cluster: String,
}

/// A service and its instances.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceEntry {
    /// Service name (one DNS label), compared case-insensitively.
    pub name: String,
    /// Kubernetes namespace. Consul-style names see only namespace [`CONSUL_NAMESPACE`].
    pub namespace: String,
    /// All instances, healthy or not.
    pub instances: Vec<Instance>,
    /// The clusters that have this service (define it, or export it to this one), besides those
    /// its instances name; a mirror name (`<svc>-<cluster>…`) exists for each. When neither
    /// names any, the service is this cluster's.
    pub clusters: Vec<String>,
    /// Its virtual IPs: the whole service's and each mirror's (see the crate docs for which
    /// names answer them).
    pub vips: Vec<VirtualIp>,
}

/// A virtual IP the proxies intercept and route to a service, or to one cluster's instances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualIp {
    /// Empty: the whole service (every cluster); else the mirror of that cluster.
    pub cluster: String,
    pub address: IpAddr,
}

/// A linked cluster and whether its link is up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub cluster: String,
    /// False while the link is down: names of that cluster answer nothing (an empty NOERROR),
    /// and its instances leave every answer.
    pub up: bool,
}

/// Everything the server answers for one cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// The cluster name; also the Consul datacenter in `<svc>.service.<dc>.consul`.
    pub cluster: String,
    /// Services; two entries with the same namespace and name are merged.
    pub services: Vec<ServiceEntry>,
    /// Linked clusters. A cluster that instances name but no link does (a remote cluster of a
    /// primary) counts as up.
    pub links: Vec<Link>,
}

/// The namespace whose services Consul-style names (`*.consul`) answer for; Consul itself has
/// no namespaces in its DNS names unless Enterprise namespaces are used.
pub const CONSUL_NAMESPACE: &str = "default";
