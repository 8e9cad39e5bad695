//! Names across linked clusters, over the wire: spanning names (this cluster's instances first,
//! whatever the rotation), mirrors, `.global`, Consul datacenters, MCS, and a link that is down.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use weft_dns::{Instance, Link, ServiceEntry, Table, VirtualIp};

use crate::support::*;

fn remote(node: &str, address: &str, cluster: &str) -> Instance {
    Instance { cluster: cluster.into(), ..inst(node, address, &[]) }
}

/// `east`, linked to `west` (up) and `north` (down); `web` runs in all three, without VIPs;
/// `api` only in west, with VIPs.
fn linked() -> Table {
    let mut t = table("east");
    t.links = vec![Link { cluster: "west".into(), up: true }, Link { cluster: "north".into(), up: false }];
    t.services.push(ServiceEntry {
        name: "web".into(),
        namespace: "default".into(),
        instances: vec![
            remote("w1", "10.9.0.1", "west"),
            remote("w2", "10.9.0.2", "west"),
            inst("e1", "10.0.0.1", &[]),
            inst("e2", "10.0.0.2", &[]),
            remote("n1", "10.8.0.1", "north"),
        ],
        clusters: vec!["east".into(), "west".into(), "north".into()],
        vips: vec![],
    });
    t.services.push(ServiceEntry {
        name: "api".into(),
        namespace: "default".into(),
        instances: vec![remote("a1", "10.9.1.1", "west")],
        clusters: vec!["west".into()],
        vips: vec![
            VirtualIp { cluster: String::new(), address: ip("240.240.0.1") },
            VirtualIp { cluster: "west".into(), address: ip("240.240.0.2") },
        ],
    });
    t
}

#[tokio::test]
async fn this_clusters_instances_come_first_whatever_the_rotation() {
    let server = start(linked()).await;
    let addr = server.local_addr();
    for _ in 0..4 {
        let m = udp(addr, "web.default.svc.cluster.local.", RecordType::A).await;
        let order: Vec<String> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(order.len(), 4, "north's link is down: its instance is left out: {order:?}");
        let mut first: Vec<&str> = order[..2].iter().map(String::as_str).collect();
        first.sort();
        assert_eq!(first, ["10.0.0.1", "10.0.0.2"], "{order:?}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn every_cross_cluster_form_answers_and_unknown_names_do_not_exist() {
    let server = start(linked()).await;
    let addr = server.local_addr();
    for name in ["api.default.svc.cluster.local.", "api.default.global.", "api.default.svc.clusterset.local."] {
        assert_ips(&udp(addr, name, RecordType::A).await, &["240.240.0.1"]);
    }
    for name in ["api-west.default.svc.cluster.local.", "api.default.west.global.", "api.service.west.consul."] {
        assert_ips(&udp(addr, name, RecordType::A).await, &["240.240.0.2"]);
    }
    assert_ips(&udp(addr, "web-east.default.svc.cluster.local.", RecordType::A).await, &["10.0.0.1", "10.0.0.2"]);
    assert_ips(&udp(addr, "web.service.consul.", RecordType::A).await, &["10.0.0.1", "10.0.0.2"]);
    let srv = udp(addr, "_api._tcp.service.west.consul.", RecordType::SRV).await;
    let RData::SRV(record) = &srv.answers[0].data else { panic!("{srv:?}") };
    assert_eq!((record.port, record.target.to_ascii().as_str()), (8080, "api.service.west.consul."));
    let srv = udp(addr, "_http._tcp.api.default.svc.clusterset.local.", RecordType::SRV).await;
    let RData::SRV(record) = &srv.answers[0].data else { panic!("{srv:?}") };
    assert_eq!(record.target.to_ascii(), "api.default.svc.clusterset.local.");
    assert!(srv.additionals.iter().any(|r| matches!(&r.data, RData::A(a) if a.0.to_string() == "240.240.0.1")));

    for name in [
        "nope.default.svc.cluster.local.",
        "api-mars.default.svc.cluster.local.",
        "api.default.mars.global.",
        "nope.default.global.",
        "nope.default.svc.clusterset.local.",
        "nope.service.west.consul.",
    ] {
        assert_negative(&udp(addr, name, RecordType::A).await, ResponseCode::NXDomain);
    }
    // A known cluster whose link is down: an empty NOERROR, not a stale answer.
    for name in ["web-north.default.svc.cluster.local.", "web.default.north.global.", "web.service.north.consul."] {
        assert_negative(&udp(addr, name, RecordType::A).await, ResponseCode::NoError);
    }
    server.shutdown().await;
}
