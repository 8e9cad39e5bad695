//! Query names → what they ask for. Pure parsing: no table, no records.
//!
//! Works on lowercase labels (hickory hands the handler a `LowerName`), which is what makes every
//! lookup case-insensitive.

/// The zones this server is authoritative for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Zone {
    /// `cluster.local.`
    Kube,
    /// `consul.`
    Consul,
    /// `clusterset.local.` (Kubernetes Multi-Cluster Services).
    ClusterSet,
    /// `global.` (Istio's older multi-cluster names).
    Global,
}

impl Zone {
    /// The zone's apex, absolute.
    pub(crate) fn apex(self) -> &'static str {
        match self {
            Zone::Kube => "cluster.local.",
            Zone::Consul => "consul.",
            Zone::ClusterSet => "clusterset.local.",
            Zone::Global => "global.",
        }
    }
}

/// What a name in (or out of) our zones refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum MeshName<'a> {
    /// `<svc>.<ns>.svc.cluster.local`
    KubeService { service: &'a str, namespace: &'a str },
    /// `_<port>._<proto>.<svc>.<ns>.svc.cluster.local` (SRV)
    KubeSrv { service: &'a str, namespace: &'a str },
    /// `<node>.<svc>.<ns>.svc.cluster.local`: one instance, the target of a Kubernetes-style SRV.
    KubeInstance { node: &'a str, service: &'a str, namespace: &'a str },
    /// `<ns>.svc.cluster.local`: exists when some service lives in the namespace.
    KubeNamespace { namespace: &'a str },
    /// `[<tag>.]<svc>.service[.<dc>].consul` or `_<svc>._<tag|tcp>.service[.<dc>].consul`
    ConsulService { service: &'a str, tag: Option<&'a str> },
    /// `[<tag>.]<svc>.service.<dc>.consul` or `_<svc>._<tag|tcp>.service.<dc>.consul` with `<dc>`
    /// not this cluster: a linked cluster's instances, or another datacenter's name.
    PeerConsulService { service: &'a str, tag: Option<&'a str>, dc: &'a str },
    /// `<node>.node[.<dc>].consul`
    ConsulNode { node: String },
    /// `<svc>.<ns>.svc.clusterset.local` (MCS): every cluster's instances.
    SetService { service: &'a str, namespace: &'a str },
    /// `_<port>._<proto>.<svc>.<ns>.svc.clusterset.local` (SRV).
    SetSrv { service: &'a str, namespace: &'a str },
    /// `<ns>.svc.clusterset.local`, `<ns>.global`: exist when some service lives in the namespace.
    Namespace { zone: Zone, namespace: &'a str },
    /// `<svc>.<ns>.global` (every cluster) or `<svc>.<ns>.<cluster>.global` (one cluster).
    GlobalService { service: &'a str, namespace: &'a str, cluster: Option<&'a str> },
    /// A name that exists only because names below it do: a zone apex (`apex`), `svc.cluster.local`,
    /// `service.consul`, `<dc>.consul`…
    Structural { zone: Zone, apex: bool },
    /// In one of our zones, but no such name can exist.
    Unknown(Zone),
    /// A Consul name of another datacenter (`….service.<other-dc>.consul`,
    /// `….node.<other-dc>.consul`): its owner is a peer, which the upstream may reach.
    OtherDatacenter,
    /// Not in our zones.
    Outside,
}

/// Classifies a name given as labels, leftmost first, without the root label.
/// `dc` is the lowercase Consul datacenter.
pub(crate) fn parse<'a>(labels: &[&'a str], dc: &str) -> MeshName<'a> {
    match labels {
        [rest @ .., "cluster", "local"] => parse_kube(rest),
        [rest @ .., "clusterset", "local"] => parse_clusterset(rest),
        [rest @ .., "global"] => parse_global(rest),
        [rest @ .., "consul"] => parse_consul(rest, dc),
        _ => MeshName::Outside,
    }
}

fn parse_clusterset<'a>(rest: &[&'a str]) -> MeshName<'a> {
    let structural = MeshName::Structural { zone: Zone::ClusterSet, apex: rest.is_empty() };
    match rest {
        [] | ["svc"] => structural,
        [namespace, "svc"] => MeshName::Namespace { zone: Zone::ClusterSet, namespace },
        [service, namespace, "svc"] => MeshName::SetService { service, namespace },
        [port, proto, service, namespace, "svc"] if is_underscored(port) && is_underscored(proto) => {
            MeshName::SetSrv { service, namespace }
        }
        [proto, _, _, "svc"] if is_underscored(proto) => structural,
        _ => MeshName::Unknown(Zone::ClusterSet),
    }
}

fn parse_global<'a>(rest: &[&'a str]) -> MeshName<'a> {
    match rest {
        [] => MeshName::Structural { zone: Zone::Global, apex: true },
        [namespace] => MeshName::Namespace { zone: Zone::Global, namespace },
        [service, namespace] => MeshName::GlobalService { service, namespace, cluster: None },
        [service, namespace, cluster] => MeshName::GlobalService { service, namespace, cluster: Some(cluster) },
        _ => MeshName::Unknown(Zone::Global),
    }
}

fn parse_kube<'a>(rest: &[&'a str]) -> MeshName<'a> {
    let structural = MeshName::Structural { zone: Zone::Kube, apex: rest.is_empty() };
    match rest {
        [] | ["svc"] => structural,
        [namespace, "svc"] => MeshName::KubeNamespace { namespace },
        [service, namespace, "svc"] => MeshName::KubeService { service, namespace },
        [port, proto, service, namespace, "svc"] if is_underscored(port) && is_underscored(proto) => {
            MeshName::KubeSrv { service, namespace }
        }
        // `_<proto>.<svc>.<ns>.svc…`: exists as the parent of SRV names.
        [proto, _, _, "svc"] if is_underscored(proto) => structural,
        [node, service, namespace, "svc"] => MeshName::KubeInstance { node, service, namespace },
        _ => MeshName::Unknown(Zone::Kube),
    }
}

fn parse_consul<'a>(rest: &[&'a str], dc: &str) -> MeshName<'a> {
    let structural = MeshName::Structural { zone: Zone::Consul, apex: rest.is_empty() };
    // `service` and `node` are checked before the datacenter, as Consul does.
    match rest {
        [] => structural,
        [prefix @ .., "service"] => parse_consul_service(prefix),
        [prefix @ .., "node"] => parse_consul_node(prefix),
        [prefix @ .., last] if !dc.is_empty() && *last == dc => match prefix {
            [] => structural,
            [prefix @ .., "service"] => parse_consul_service(prefix),
            [prefix @ .., "node"] => parse_consul_node(prefix),
            _ => MeshName::Unknown(Zone::Consul),
        },
        [prefix @ .., "service", other_dc] => match parse_consul_service(prefix) {
            MeshName::ConsulService { service, tag } => MeshName::PeerConsulService { service, tag, dc: other_dc },
            _ => MeshName::OtherDatacenter,
        },
        [.., "node", _other_dc] => MeshName::OtherDatacenter,
        _ => MeshName::Unknown(Zone::Consul),
    }
}

fn parse_consul_service<'a>(prefix: &[&'a str]) -> MeshName<'a> {
    match prefix {
        [] => MeshName::Structural { zone: Zone::Consul, apex: false },
        // RFC 2782 form; as in Consul, a protocol other than `tcp` is a tag filter.
        [service, proto] if is_underscored(service) && is_underscored(proto) => {
            let tag = &proto[1..];
            MeshName::ConsulService { service: &service[1..], tag: (tag != "tcp").then_some(tag) }
        }
        [service] => MeshName::ConsulService { service, tag: None },
        [tag, service] => MeshName::ConsulService { service, tag: Some(tag) },
        _ => MeshName::Unknown(Zone::Consul),
    }
}

fn parse_consul_node<'a>(prefix: &[&'a str]) -> MeshName<'a> {
    if prefix.is_empty() {
        MeshName::Structural { zone: Zone::Consul, apex: false }
    } else {
        MeshName::ConsulNode { node: prefix.join(".") }
    }
}

fn is_underscored(label: &str) -> bool {
    label.len() > 1 && label.starts_with('_')
}

#[cfg(test)]
mod tests;
