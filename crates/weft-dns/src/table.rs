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
}

/// A service and its instances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEntry {
    /// Service name (one DNS label), compared case-insensitively.
    pub name: String,
    /// Kubernetes namespace. Consul-style names see only namespace [`CONSUL_NAMESPACE`].
    pub namespace: String,
    /// All instances, healthy or not.
    pub instances: Vec<Instance>,
}

/// Everything the server answers for one cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// The cluster name; also the Consul datacenter in `<svc>.service.<dc>.consul`.
    pub cluster: String,
    /// Services; two entries with the same namespace and name are merged.
    pub services: Vec<ServiceEntry>,
}

/// The namespace whose services Consul-style names (`*.consul`) answer for; Consul itself has
/// no namespaces in its DNS names unless Enterprise namespaces are used.
pub const CONSUL_NAMESPACE: &str = "default";
