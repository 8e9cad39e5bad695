//! Every name form, answered from the table.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use crate::support::*;

#[tokio::test]
async fn kubernetes_names_answer_a_and_aaaa() {
    let server = start(east()).await;
    let addr = server.local_addr();

    let a = udp(addr, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_ips(&a, &["10.0.0.1", "10.0.0.2"]);
    assert!(a.metadata.authoritative);
    assert!(a.answers.iter().all(|r| r.ttl == weft_dns::DEFAULT_TTL));
    assert_ips(&udp(addr, "web.default.svc.cluster.local.", RecordType::AAAA).await, &["fd00::3"]);
    assert_ips(&udp(addr, "api.shop.svc.cluster.local.", RecordType::A).await, &["10.1.0.1"]);
    // A name with only IPv4 instances has no AAAA: NODATA.
    assert_negative(&udp(addr, "api.shop.svc.cluster.local.", RecordType::AAAA).await, ResponseCode::NoError);
    server.shutdown().await;
}

#[tokio::test]
async fn kubernetes_srv_names_instances() {
    let server = start(east()).await;
    let addr = server.local_addr();

    let srv = udp(addr, "_http._tcp.api.shop.svc.cluster.local.", RecordType::SRV).await;
    assert_eq!(srv.answers.len(), 1, "{srv:?}");
    let RData::SRV(record) = &srv.answers[0].data else { panic!("{srv:?}") };
    assert_eq!(record.target.to_ascii(), "api-1.api.shop.svc.cluster.local.");
    assert_eq!(record.port, 8080);
    assert_eq!(srv.additionals.len(), 1, "{srv:?}");
    assert_ips(&udp(addr, "api-1.api.shop.svc.cluster.local.", RecordType::A).await, &["10.1.0.1"]);
    server.shutdown().await;
}

#[tokio::test]
async fn consul_names_with_and_without_datacenter() {
    let server = start(east()).await;
    let addr = server.local_addr();

    for name in ["web.service.consul.", "web.service.east.consul."] {
        assert_ips(&udp(addr, name, RecordType::A).await, &["10.0.0.1", "10.0.0.2"]);
        assert_ips(&udp(addr, name, RecordType::AAAA).await, &["fd00::3"]);
    }
    // Consul names see only namespace `default`.
    assert_negative(&udp(addr, "api.service.consul.", RecordType::A).await, ResponseCode::NXDomain);
    server.shutdown().await;
}

#[tokio::test]
async fn consul_tags_filter_instances() {
    let server = start(east()).await;
    let addr = server.local_addr();

    assert_ips(&udp(addr, "v2.web.service.consul.", RecordType::A).await, &["10.0.0.1"]);
    assert_ips(&udp(addr, "v2.web.service.east.consul.", RecordType::AAAA).await, &["fd00::3"]);
    assert_ips(&udp(addr, "v1.web.service.consul.", RecordType::A).await, &["10.0.0.2"]);
    assert_ips(&udp(addr, "primary.web.service.consul.", RecordType::A).await, &["10.0.0.1"]);
    // A tag nobody carries: the service exists, so NODATA.
    assert_negative(&udp(addr, "v3.web.service.consul.", RecordType::A).await, ResponseCode::NoError);
    server.shutdown().await;
}

#[tokio::test]
async fn consul_srv_has_targets_and_additionals() {
    let server = start(east()).await;
    let addr = server.local_addr();

    for name in ["_web._tcp.service.consul.", "_web._tcp.service.east.consul."] {
        let srv = udp(addr, name, RecordType::SRV).await;
        assert_eq!(srv.metadata.response_code, ResponseCode::NoError);
        let mut targets: Vec<String> = srv
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::SRV(s) => {
                    assert_eq!((s.priority, s.weight, s.port), (1, 1, 8080), "{s:?}");
                    s.target.to_ascii()
                }
                other => panic!("not SRV: {other:?}"),
            })
            .collect();
        targets.sort();
        assert_eq!(targets, ["web-1.node.east.consul.", "web-2.node.east.consul.", "web-3.node.east.consul."]);
        let mut additionals: Vec<(String, String)> = srv
            .additionals
            .iter()
            .map(|r| {
                let address = match &r.data {
                    RData::A(a) => a.0.to_string(),
                    RData::AAAA(a) => a.0.to_string(),
                    other => panic!("not an address: {other:?}"),
                };
                (r.name.to_ascii(), address)
            })
            .collect();
        additionals.sort();
        assert_eq!(
            additionals,
            [
                ("web-1.node.east.consul.".to_string(), "10.0.0.1".to_string()),
                ("web-2.node.east.consul.".to_string(), "10.0.0.2".to_string()),
                ("web-3.node.east.consul.".to_string(), "fd00::3".to_string()),
            ]
        );
    }
    // A tag in place of the protocol filters, as in Consul.
    let tagged = udp(addr, "_web._v1.service.consul.", RecordType::SRV).await;
    assert_eq!(tagged.answers.len(), 1, "{tagged:?}");

    // The targets resolve.
    assert_ips(&udp(addr, "web-1.node.east.consul.", RecordType::A).await, &["10.0.0.1"]);
    assert_ips(&udp(addr, "web-3.node.east.consul.", RecordType::AAAA).await, &["fd00::3"]);
    assert_ips(&udp(addr, "web-2.node.consul.", RecordType::A).await, &["10.0.0.2"]);
    server.shutdown().await;
}

#[tokio::test]
async fn unhealthy_instances_are_not_answered() {
    let server = start(east()).await;
    let addr = server.local_addr();

    let a = udp(addr, "v2.web.service.consul.", RecordType::A).await;
    assert!(!ips(&a).contains(&ip("10.0.0.4")), "{a:?}");
    let srv = udp(addr, "_web._tcp.service.consul.", RecordType::SRV).await;
    assert!(!format!("{srv:?}").contains("web-4"), "{srv:?}");
    // A service whose instances are all unhealthy exists, with no records: NODATA.
    assert_negative(&udp(addr, "down.service.consul.", RecordType::A).await, ResponseCode::NoError);
    assert_negative(&udp(addr, "down.default.svc.cluster.local.", RecordType::A).await, ResponseCode::NoError);
    assert_negative(&udp(addr, "_down._tcp.service.consul.", RecordType::SRV).await, ResponseCode::NoError);
    // An unhealthy instance's node has no name.
    assert_negative(&udp(addr, "web-4.node.east.consul.", RecordType::A).await, ResponseCode::NXDomain);
    server.shutdown().await;
}

#[tokio::test]
async fn names_are_case_insensitive() {
    let server = start(east()).await;
    let addr = server.local_addr();

    assert_ips(&udp(addr, "WEB.Default.SVC.Cluster.LOCAL.", RecordType::A).await, &["10.0.0.1", "10.0.0.2"]);
    assert_ips(&udp(addr, "Web.Service.EAST.Consul.", RecordType::AAAA).await, &["fd00::3"]);
    assert_ips(&udp(addr, "V2.wEb.service.consul.", RecordType::A).await, &["10.0.0.1"]);
    assert_eq!(udp(addr, "_WEB._TCP.Service.Consul.", RecordType::SRV).await.answers.len(), 3);
    assert_ips(&udp(addr, "WEB-1.NODE.east.consul.", RecordType::A).await, &["10.0.0.1"]);
    server.shutdown().await;
}

#[tokio::test]
async fn set_table_is_seen_by_the_next_query() {
    let server = start(east()).await;
    let addr = server.local_addr();
    assert_negative(&udp(addr, "cart.service.consul.", RecordType::A).await, ResponseCode::NXDomain);

    let mut next = east();
    next.services[0].instances.push(inst("web-5", "10.0.0.5", &[]));
    server.set_table(next.service("default", "cart", [inst("cart-1", "10.3.0.1", &[])]));

    assert_ips(&udp(addr, "cart.service.consul.", RecordType::A).await, &["10.3.0.1"]);
    assert_ips(
        &udp(addr, "web.default.svc.cluster.local.", RecordType::A).await,
        &["10.0.0.1", "10.0.0.2", "10.0.0.5"],
    );

    // And back: a removed service is gone.
    server.set_table(east());
    assert_negative(&udp(addr, "cart.service.consul.", RecordType::A).await, ResponseCode::NXDomain);
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_names_in_our_zones_are_nxdomain() {
    let server = start(east()).await;
    let addr = server.local_addr();

    for name in [
        "nope.default.svc.cluster.local.",
        "web.nope.svc.cluster.local.",
        "x.pod.cluster.local.",
        "nope.service.consul.",
        "web.service.west.consul.",
        "nope.node.east.consul.",
        "what.consul.",
    ] {
        assert_negative(&udp(addr, name, RecordType::A).await, ResponseCode::NXDomain);
    }
    // Names that exist only as parents of ours are NODATA, not NXDOMAIN (RFC 8020).
    for name in ["cluster.local.", "svc.cluster.local.", "shop.svc.cluster.local.", "service.consul.", "east.consul."] {
        assert_negative(&udp(addr, name, RecordType::A).await, ResponseCode::NoError);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn names_outside_our_zones_are_refused_without_upstream() {
    let server = start(east()).await;
    let a = udp(server.local_addr(), "example.com.", RecordType::A).await;
    assert_eq!(a.metadata.response_code, ResponseCode::Refused, "{a:?}");
    assert!(a.answers.is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn tcp_queries_are_answered() {
    let server = start(east()).await;
    let addr = server.local_addr();
    assert_ips(&tcp(addr, "web.service.consul.", RecordType::A).await, &["10.0.0.1", "10.0.0.2"]);
    assert_ips(&tcp(addr, "web.default.svc.cluster.local.", RecordType::AAAA).await, &["fd00::3"]);
    server.shutdown().await;
}
