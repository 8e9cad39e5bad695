use super::*;

fn p(name: &str) -> MeshName<'_> {
    let labels: Vec<&str> = name.trim_end_matches('.').split('.').collect();
    parse(&labels, "east")
}

#[test]
fn kube_names() {
    assert_eq!(p("web.shop.svc.cluster.local"), MeshName::KubeService { service: "web", namespace: "shop" });
    assert_eq!(p("_http._tcp.web.shop.svc.cluster.local"), MeshName::KubeSrv { service: "web", namespace: "shop" });
    assert_eq!(
        p("web-1.web.shop.svc.cluster.local"),
        MeshName::KubeInstance { node: "web-1", service: "web", namespace: "shop" }
    );
    assert_eq!(p("shop.svc.cluster.local"), MeshName::KubeNamespace { namespace: "shop" });
    assert_eq!(p("cluster.local"), MeshName::Structural { zone: Zone::Kube, apex: true });
    assert_eq!(p("svc.cluster.local"), MeshName::Structural { zone: Zone::Kube, apex: false });
    assert_eq!(p("_tcp.web.shop.svc.cluster.local"), MeshName::Structural { zone: Zone::Kube, apex: false });
    assert_eq!(p("1-2-3-4.shop.pod.cluster.local"), MeshName::Unknown(Zone::Kube));
    assert_eq!(p("a.b.c.d.e.svc.cluster.local"), MeshName::Unknown(Zone::Kube));
}

#[test]
fn consul_names() {
    let web = MeshName::ConsulService { service: "web", tag: None };
    assert_eq!(p("web.service.consul"), web);
    assert_eq!(p("web.service.east.consul"), web);
    assert_eq!(p("_web._tcp.service.consul"), web);
    assert_eq!(p("_web._tcp.service.east.consul"), web);
    assert_eq!(p("v2.web.service.consul"), MeshName::ConsulService { service: "web", tag: Some("v2") });
    assert_eq!(p("_web._v2.service.consul"), MeshName::ConsulService { service: "web", tag: Some("v2") });
    assert_eq!(p("web.service.west.consul"), MeshName::PeerConsulService { service: "web", tag: None, dc: "west" });
    assert_eq!(
        p("_web._v2.service.west.consul"),
        MeshName::PeerConsulService { service: "web", tag: Some("v2"), dc: "west" }
    );
    assert_eq!(p("service.west.consul"), MeshName::OtherDatacenter);
    assert_eq!(p("n1.node.west.consul"), MeshName::OtherDatacenter);
    assert_eq!(p("n1.node.east.consul"), MeshName::ConsulNode { node: "n1".into() });
    assert_eq!(p("n1.node.consul"), MeshName::ConsulNode { node: "n1".into() });
    assert_eq!(p("ip-10-0-0-1.ec2.node.consul"), MeshName::ConsulNode { node: "ip-10-0-0-1.ec2".into() });
    assert_eq!(p("consul"), MeshName::Structural { zone: Zone::Consul, apex: true });
    assert_eq!(p("service.consul"), MeshName::Structural { zone: Zone::Consul, apex: false });
    assert_eq!(p("east.consul"), MeshName::Structural { zone: Zone::Consul, apex: false });
    assert_eq!(p("a.b.c.service.consul"), MeshName::Unknown(Zone::Consul));
    assert_eq!(p("nothing.consul"), MeshName::Unknown(Zone::Consul));
}

#[test]
fn clusterset_and_global_names() {
    assert_eq!(p("web.shop.svc.clusterset.local"), MeshName::SetService { service: "web", namespace: "shop" });
    assert_eq!(p("_http._tcp.web.shop.svc.clusterset.local"), MeshName::SetSrv { service: "web", namespace: "shop" });
    assert_eq!(p("shop.svc.clusterset.local"), MeshName::Namespace { zone: Zone::ClusterSet, namespace: "shop" });
    assert_eq!(p("clusterset.local"), MeshName::Structural { zone: Zone::ClusterSet, apex: true });
    assert_eq!(p("x.web.shop.svc.clusterset.local"), MeshName::Unknown(Zone::ClusterSet));
    assert_eq!(p("web.shop.global"), MeshName::GlobalService { service: "web", namespace: "shop", cluster: None });
    assert_eq!(
        p("web.shop.west.global"),
        MeshName::GlobalService { service: "web", namespace: "shop", cluster: Some("west") }
    );
    assert_eq!(p("shop.global"), MeshName::Namespace { zone: Zone::Global, namespace: "shop" });
    assert_eq!(p("global"), MeshName::Structural { zone: Zone::Global, apex: true });
    assert_eq!(p("a.b.c.d.global"), MeshName::Unknown(Zone::Global));
}

#[test]
fn outside_names() {
    assert_eq!(p("example.com"), MeshName::Outside);
    assert_eq!(p("local"), MeshName::Outside);
    assert_eq!(p("consul.example.com"), MeshName::Outside);
}
