use std::net::IpAddr;

use super::*;
use crate::table::{Instance, ServiceEntry};

fn inst(addr: &str, node: &str, tags: &[&str], healthy: bool) -> Instance {
    Instance {
        address: addr.parse().unwrap(),
        port: 8080,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        healthy,
        node: node.into(),
        cluster: String::new(),
    }
}

fn index() -> Index {
    let table = Table {
        links: vec![],
        cluster: "East".into(),
        services: vec![
            ServiceEntry {
                name: "Web".into(),
                namespace: "default".into(),
                instances: vec![
                    inst("10.0.0.1", "web-1", &["V2"], true),
                    inst("10.0.0.2", "web-2", &[], false),
                    inst("fd00::1", "web-3", &[], true),
                ],
                ..Default::default()
            },
            ServiceEntry {
                name: "db".into(),
                namespace: "shop".into(),
                instances: vec![inst("10.0.1.1", "db-1", &[], true)],
                ..Default::default()
            },
            ServiceEntry {
                name: "down".into(),
                namespace: "default".into(),
                instances: vec![inst("10.0.2.1", "down-1", &[], false)],
                ..Default::default()
            },
        ],
    };
    Index::new(&table, 30, 7)
}

fn addrs(r: &Resolution) -> Vec<IpAddr> {
    let Resolution::Found { answers, .. } = r else {
        panic!("not found: {r:?}");
    };
    let mut v: Vec<IpAddr> = answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn q(index: &Index, name: &str, qtype: RecordType) -> Resolution {
    let name = Name::from_ascii(name).unwrap().to_lowercase();
    index.resolve(&name, qtype)
}

#[test]
fn healthy_only_and_family_by_type() {
    let i = index();
    let v4: IpAddr = "10.0.0.1".parse().unwrap();
    let v6: IpAddr = "fd00::1".parse().unwrap();
    assert_eq!(addrs(&q(&i, "web.default.svc.cluster.local.", RecordType::A)), vec![v4]);
    assert_eq!(addrs(&q(&i, "web.default.svc.cluster.local.", RecordType::AAAA)), vec![v6]);
    assert_eq!(addrs(&q(&i, "web.service.consul.", RecordType::ANY)), vec![v4, v6]);
    assert_eq!(addrs(&q(&i, "v2.web.service.east.consul.", RecordType::A)), vec![v4]);
    assert_eq!(addrs(&q(&i, "down.service.consul.", RecordType::A)), Vec::<IpAddr>::new());
    assert_eq!(addrs(&q(&i, "web.service.consul.", RecordType::TXT)), Vec::<IpAddr>::new());
}

#[test]
fn consul_sees_only_the_default_namespace() {
    let i = index();
    assert!(matches!(q(&i, "db.service.consul.", RecordType::A), Resolution::NxDomain { zone: Zone::Consul }));
    assert_eq!(addrs(&q(&i, "db.shop.svc.cluster.local.", RecordType::A)).len(), 1);
}

#[test]
fn srv_with_additionals() {
    let i = index();
    let Resolution::Found { answers, additionals, .. } = q(&i, "_web._tcp.service.consul.", RecordType::SRV) else {
        panic!()
    };
    let mut targets: Vec<String> = answers
        .iter()
        .map(|r| match &r.data {
            RData::SRV(s) => {
                assert_eq!((s.priority, s.weight, s.port), (1, 1, 8080));
                s.target.to_ascii()
            }
            other => panic!("{other:?}"),
        })
        .collect();
    targets.sort();
    assert_eq!(targets, ["web-1.node.east.consul.", "web-3.node.east.consul."]);
    assert_eq!(additionals.len(), 2);
    assert_eq!(addrs(&q(&i, "web-1.node.east.consul.", RecordType::A)), vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
    // Unhealthy instances back no node name.
    assert!(matches!(q(&i, "web-2.node.consul.", RecordType::A), Resolution::NxDomain { .. }));
}

#[test]
fn kube_srv_targets_resolve() {
    let i = index();
    let Resolution::Found { answers, additionals, .. } =
        q(&i, "_http._tcp.db.shop.svc.cluster.local.", RecordType::SRV)
    else {
        panic!()
    };
    let RData::SRV(srv) = &answers[0].data else { panic!() };
    assert_eq!(srv.target.to_ascii(), "db-1.db.shop.svc.cluster.local.");
    assert_eq!(additionals.len(), 1);
    assert_eq!(addrs(&q(&i, "db-1.db.shop.svc.cluster.local.", RecordType::A)).len(), 1);
}

#[test]
fn negative_answers() {
    let i = index();
    assert!(matches!(
        q(&i, "nope.default.svc.cluster.local.", RecordType::A),
        Resolution::NxDomain { zone: Zone::Kube }
    ));
    assert!(matches!(q(&i, "nope.svc.cluster.local.", RecordType::A), Resolution::NxDomain { zone: Zone::Kube }));
    assert!(matches!(q(&i, "web.service.west.consul.", RecordType::A), Resolution::OtherDatacenter));
    assert!(matches!(q(&i, "nope.service.consul.", RecordType::A), Resolution::NxDomain { zone: Zone::Consul }));
    assert!(matches!(q(&i, "example.com.", RecordType::A), Resolution::Outside));
    assert_eq!(addrs(&q(&i, "shop.svc.cluster.local.", RecordType::A)), Vec::<IpAddr>::new());
    let Resolution::Found { answers, .. } = q(&i, "consul.", RecordType::SOA) else { panic!() };
    assert_eq!(answers[0].record_type(), RecordType::SOA);
}
