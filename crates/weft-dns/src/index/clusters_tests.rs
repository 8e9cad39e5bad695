//! Names across clusters: spanning names, mirrors, `.global`, Consul datacenters, MCS, links down.

use std::net::IpAddr;

use super::*;
use crate::table::{Instance, Link, ServiceEntry, VirtualIp};

fn inst(addr: &str, cluster: &str, port: u16, tags: &[&str]) -> Instance {
    Instance {
        address: addr.parse().unwrap(),
        port,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        healthy: true,
        node: format!("{}-{}", if cluster.is_empty() { "east" } else { cluster }, addr.replace(['.', ':'], "-")),
        cluster: cluster.into(),
    }
}

fn vip(cluster: &str, addr: &str) -> VirtualIp {
    VirtualIp { cluster: cluster.into(), address: addr.parse().unwrap() }
}

fn svc(ns: &str, name: &str, instances: Vec<Instance>, clusters: &[&str], vips: Vec<VirtualIp>) -> ServiceEntry {
    ServiceEntry {
        name: name.into(),
        namespace: ns.into(),
        instances,
        clusters: clusters.iter().map(|c| c.to_string()).collect(),
        vips,
    }
}

/// Cluster `east`, linked to `west` (up) and `north` (down).
fn index() -> Index {
    let table = Table {
        cluster: "east".into(),
        links: vec![Link { cluster: "west".into(), up: true }, Link { cluster: "North".into(), up: false }],
        services: vec![
            svc(
                "default",
                "web",
                vec![
                    inst("10.0.0.1", "", 8080, &[]),
                    inst("10.9.0.1", "west", 8080, &["v2"]),
                    inst("10.8.0.1", "north", 8080, &[]),
                ],
                &["east", "west", "north"],
                vec![
                    vip("", "240.240.0.1"),
                    vip("west", "240.240.0.2"),
                    vip("north", "240.240.0.3"),
                    vip("east", "240.240.0.4"),
                ],
            ),
            svc("default", "local", vec![inst("10.0.5.1", "", 8080, &[])], &["east"], vec![vip("", "240.240.0.5")]),
            svc("default", "web-west", vec![inst("10.0.7.1", "", 8080, &[])], &["east"], vec![]),
            svc(
                "shop",
                "api",
                vec![inst("10.9.1.1", "west", 9090, &[])],
                &["west"],
                vec![vip("", "240.240.1.1"), vip("west", "240.240.1.2")],
            ),
            // Virtual IPs off: every cluster's addresses, this cluster's first; a down link's left out.
            svc(
                "shop",
                "flat",
                vec![
                    inst("10.9.6.1", "west", 8080, &[]),
                    inst("10.0.6.1", "", 8080, &[]),
                    inst("fd00::6", "", 8080, &[]),
                    inst("10.8.6.1", "north", 8080, &[]),
                ],
                &["east", "west", "north"],
                vec![],
            ),
        ],
    };
    Index::new(&table, 30, 7)
}

fn q(index: &Index, name: &str, qtype: RecordType) -> Resolution {
    index.resolve(&Name::from_ascii(name).unwrap().to_lowercase(), qtype)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn data_addrs(records: &[Record]) -> Vec<IpAddr> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

/// The addresses answered, in order.
fn a(index: &Index, name: &str) -> Vec<IpAddr> {
    match q(index, name, RecordType::A) {
        Resolution::Found { answers, .. } => data_addrs(&answers),
        other => panic!("{name}: {other:?}"),
    }
}

fn nxdomain(index: &Index, name: &str) -> bool {
    matches!(q(index, name, RecordType::A), Resolution::NxDomain { .. })
}

/// (port, target) of each SRV answer, and the additionals' addresses.
fn srv(index: &Index, name: &str) -> (Vec<(u16, String)>, Vec<IpAddr>) {
    let Resolution::Found { answers, additionals, .. } = q(index, name, RecordType::SRV) else {
        panic!("{name}: not found");
    };
    let srvs = answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some((s.port, s.target.to_ascii())),
            _ => None,
        })
        .collect();
    (srvs, data_addrs(&additionals))
}

#[test]
fn a_cluster_local_name_spans_clusters_and_answers_the_vip_when_another_cluster_has_instances() {
    let i = index();
    assert_eq!(a(&i, "web.default.svc.cluster.local."), vec![ip("240.240.0.1")]);
    assert_eq!(a(&i, "api.shop.svc.cluster.local."), vec![ip("240.240.1.1")], "a remote-only service");
    assert_eq!(a(&i, "local.default.svc.cluster.local."), vec![ip("10.0.5.1")], "this cluster only: its addresses");
    // No VIP: every up cluster's addresses, this cluster's first (and first after rotation: `lead`).
    let Resolution::Found { answers, lead, .. } = q(&i, "flat.shop.svc.cluster.local.", RecordType::A) else {
        panic!()
    };
    assert_eq!(data_addrs(&answers), vec![ip("10.0.6.1"), ip("10.9.6.1")], "north's link is down: left out");
    assert_eq!(lead, 1);
    assert_eq!(a(&i, "flat.shop.svc.cluster.local."), vec![ip("10.0.6.1"), ip("10.9.6.1")]);
    let Resolution::Found { answers, .. } = q(&i, "web.default.svc.cluster.local.", RecordType::AAAA) else { panic!() };
    assert!(answers.is_empty(), "an IPv4 VIP: no AAAA");
    assert!(nxdomain(&i, "nope.default.svc.cluster.local."));
}

#[test]
fn a_mirror_name_answers_one_cluster() {
    let i = index();
    assert_eq!(a(&i, "api-west.shop.svc.cluster.local."), vec![ip("240.240.1.2")]);
    assert_eq!(a(&i, "web-east.default.svc.cluster.local."), vec![ip("10.0.0.1")], "this cluster's: its addresses");
    assert_eq!(a(&i, "web-west.default.svc.cluster.local."), vec![ip("10.0.7.1")], "a real service of that name wins");
    assert_eq!(a(&i, "web-north.default.svc.cluster.local."), Vec::<IpAddr>::new(), "link down: empty, not stale");
    assert!(nxdomain(&i, "api-east.shop.svc.cluster.local."), "east has no api");
    assert!(nxdomain(&i, "web-mars.default.svc.cluster.local."), "no such cluster");
    assert!(nxdomain(&i, "nope-west.default.svc.cluster.local."), "no such service");
    // SRV of a mirror: the instances' ports, the mirror's own name as target, its VIP alongside.
    let (srvs, extra) = srv(&i, "_http._tcp.api-west.shop.svc.cluster.local.");
    assert_eq!(srvs, vec![(9090, "api-west.shop.svc.cluster.local.".to_string())]);
    assert_eq!(extra, vec![ip("240.240.1.2")]);
}

#[test]
fn global_names() {
    let i = index();
    assert_eq!(a(&i, "web.default.global."), vec![ip("240.240.0.1")]);
    assert_eq!(a(&i, "local.default.global."), vec![ip("10.0.5.1")]);
    assert_eq!(a(&i, "web.default.west.global."), vec![ip("240.240.0.2")]);
    assert_eq!(a(&i, "WEB.default.West.global."), vec![ip("240.240.0.2")], "case-insensitive");
    assert_eq!(a(&i, "web.default.east.global."), vec![ip("10.0.0.1")]);
    assert_eq!(a(&i, "web.default.north.global."), Vec::<IpAddr>::new(), "link down");
    assert_eq!(a(&i, "anything.default.north.global."), Vec::<IpAddr>::new(), "link down: nothing is known");
    assert!(nxdomain(&i, "web.default.mars.global."));
    assert!(nxdomain(&i, "api.shop.east.global."));
    assert!(nxdomain(&i, "nope.default.global."));
    assert!(nxdomain(&i, "a.b.c.d.global."));
    assert_eq!(a(&i, "default.global."), Vec::<IpAddr>::new(), "a namespace: NODATA");
}

#[test]
fn consul_datacenter_names() {
    let i = index();
    assert_eq!(a(&i, "web.service.consul."), vec![ip("10.0.0.1")], "this datacenter only, as Consul does");
    assert_eq!(a(&i, "web.service.east.consul."), vec![ip("10.0.0.1")]);
    assert_eq!(a(&i, "web.service.west.consul."), vec![ip("240.240.0.2")]);
    assert_eq!(a(&i, "v2.web.service.west.consul."), vec![ip("240.240.0.2")]);
    assert_eq!(a(&i, "v1.web.service.west.consul."), Vec::<IpAddr>::new(), "no instance carries the tag");
    assert_eq!(a(&i, "web.service.north.consul."), Vec::<IpAddr>::new(), "link down");
    assert!(matches!(q(&i, "web.service.mars.consul.", RecordType::A), Resolution::OtherDatacenter));
    assert!(nxdomain(&i, "nope.service.west.consul."));
    // RFC 2782 SRV of a linked datacenter: its ports, target the service's name there, VIP alongside.
    let (srvs, extra) = srv(&i, "_web._tcp.service.west.consul.");
    assert_eq!(srvs, vec![(8080, "web.service.west.consul.".to_string())]);
    assert_eq!(extra, vec![ip("240.240.0.2")]);
    let (srvs, _) = srv(&i, "_web._v2.service.west.consul.");
    assert_eq!(srvs, vec![(8080, "v2.web.service.west.consul.".to_string())]);
    let (srvs, extra) = srv(&i, "_web._tcp.service.north.consul.");
    assert!(srvs.is_empty() && extra.is_empty(), "link down");
    // This datacenter's SRV: one per instance, node targets, as before.
    let (srvs, extra) = srv(&i, "_web._tcp.service.consul.");
    assert_eq!(srvs, vec![(8080, "east-10-0-0-1.node.east.consul.".to_string())]);
    assert_eq!(extra, vec![ip("10.0.0.1")]);
}

#[test]
fn clusterset_names() {
    let i = index();
    assert_eq!(a(&i, "web.default.svc.clusterset.local."), vec![ip("240.240.0.1")]);
    assert_eq!(a(&i, "api.shop.svc.clusterset.local."), vec![ip("240.240.1.1")]);
    assert_eq!(a(&i, "local.default.svc.clusterset.local."), vec![ip("10.0.5.1")]);
    assert!(nxdomain(&i, "nope.default.svc.clusterset.local."));
    assert!(nxdomain(&i, "api-west.shop.svc.clusterset.local."), "no mirror names in the clusterset zone");
    let (srvs, extra) = srv(&i, "_http._tcp.api.shop.svc.clusterset.local.");
    assert_eq!(srvs, vec![(9090, "api.shop.svc.clusterset.local.".to_string())]);
    assert_eq!(extra, vec![ip("240.240.1.1")]);
    let (srvs, extra) = srv(&i, "_http._tcp.local.default.svc.clusterset.local.");
    assert_eq!(srvs, vec![(8080, "local.default.svc.clusterset.local.".to_string())]);
    assert_eq!(extra, vec![ip("10.0.5.1")]);
    assert_eq!(a(&i, "shop.svc.clusterset.local."), Vec::<IpAddr>::new(), "a namespace: NODATA");
    assert!(nxdomain(&i, "nope.svc.clusterset.local."));
}

#[test]
fn cluster_local_srv_of_a_vip_service_targets_the_service_name() {
    let i = index();
    let (srvs, extra) = srv(&i, "_http._tcp.web.default.svc.cluster.local.");
    assert_eq!(srvs, vec![(8080, "web.default.svc.cluster.local.".to_string())]);
    assert_eq!(extra, vec![ip("240.240.0.1")]);
    // Only this cluster's instances: per-instance records, as before.
    let (srvs, _) = srv(&i, "_http._tcp.local.default.svc.cluster.local.");
    assert_eq!(srvs, vec![(8080, "east-10-0-5-1.local.default.svc.cluster.local.".to_string())]);
}

#[test]
fn soa_of_the_new_zones() {
    let i = index();
    for (name, apex) in [("nope.global.", "global."), ("x.y.svc.clusterset.local.", "clusterset.local.")] {
        let Resolution::NxDomain { zone } = q(&i, name, RecordType::A) else { panic!("{name}") };
        assert_eq!(i.soa(zone).name.to_ascii(), apex);
    }
}

#[test]
fn two_mirrors_of_one_name_resolve_to_the_shorter_service() {
    let table = Table {
        cluster: "east".into(),
        links: vec![Link { cluster: "b".into(), up: true }, Link { cluster: "a-b".into(), up: true }],
        services: vec![
            svc("default", "x", vec![inst("10.1.0.1", "a-b", 80, &[])], &["a-b"], vec![]),
            svc("default", "x-a", vec![inst("10.2.0.1", "b", 80, &[])], &["b"], vec![]),
        ],
    };
    let i = Index::new(&table, 30, 1);
    for _ in 0..8 {
        assert_eq!(a(&i, "x-a-b.default.svc.cluster.local."), vec![ip("10.1.0.1")]);
    }
}

#[test]
fn kube_srv_without_vips_puts_other_clusters_after_this_one() {
    let i = index();
    let Resolution::Found { answers, lead, .. } = q(&i, "_http._tcp.flat.shop.svc.cluster.local.", RecordType::SRV)
    else {
        panic!()
    };
    let prio: Vec<(u16, String)> = answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some((s.priority, s.target.to_ascii())),
            _ => None,
        })
        .collect();
    assert_eq!(
        prio,
        vec![
            (1, "east-10-0-6-1.flat.shop.svc.cluster.local.".to_string()),
            (1, "east-fd00--6.flat.shop.svc.cluster.local.".to_string()),
            (2, "west-10-9-6-1.flat.shop.svc.cluster.local.".to_string()),
        ]
    );
    assert_eq!(lead, 2);
}
