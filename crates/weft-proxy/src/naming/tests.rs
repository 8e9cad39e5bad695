use crate::Routes;
use std::net::IpAddr;
use weft_api::proxy::ProxyConfig;

/// This proxy in `east`; api in east and west, web only in west, and a real `api-west`.
fn routes() -> Routes {
    let cfg = ProxyConfig::from_yaml(
        r#"
cluster: east
identity: { cert: c.pem, key: k.pem, bundle: b.pem }
outbound: { transparent: "127.0.0.1:15001" }
services:
  - name: api
    namespace: shop
    endpoints:
      - { address: "10.0.0.1:8080", identity: "spiffe://east.example/ns/shop/sa/api", cluster: east }
      - { address: "10.9.0.1:8080", identity: "spiffe://west.example/ns/shop/sa/api", cluster: west }
      - { address: "10.9.0.2:8080", identity: "spiffe://west.example/ns/shop/sa/api", cluster: west }
  - name: web
    endpoints:
      - { address: "10.9.1.1:80", identity: "spiffe://west.example/ns/default/sa/web", cluster: west }
  - name: api-west
    namespace: shop
    endpoints:
      - { address: "10.0.2.1:80", identity: "spiffe://east.example/ns/shop/sa/x", cluster: east }
virtual_ips:
  - { service: api.shop, address: 240.240.0.1 }
  - { service: api.shop, cluster: west, address: 240.240.0.2 }
  - { service: web, address: 240.240.0.3 }
  - { service: web, cluster: west, address: 240.240.0.4 }
"#,
    )
    .expect("config");
    Routes::try_from(&cfg).expect("routes")
}

/// (key, endpoint addresses) of what `host` routes to.
fn to(r: &Routes, host: &str) -> Option<(String, Vec<String>)> {
    r.by_host(host).map(|s| (s.key().to_string(), s.endpoints.iter().map(|e| e.address.to_string()).collect()))
}

fn key(r: &Routes, host: &str) -> Option<String> {
    to(r, host).map(|t| t.0)
}

#[test]
fn every_name_form_routes() {
    let r = routes();
    for whole in [
        "api.shop.svc.cluster.local",
        "API.Shop.svc.cluster.local.",
        "api.shop.global",
        "api.shop.svc.clusterset.local",
    ] {
        let (k, eps) = to(&r, whole).unwrap_or_else(|| panic!("{whole}"));
        assert_eq!((k.as_str(), eps.len()), ("api.shop", 3), "{whole}");
    }
    for west in ["web-west.default.svc.cluster.local", "api.shop.west.global"] {
        let want = if west.starts_with("web") { "web.default@west" } else { "api.shop@west" };
        assert_eq!(key(&r, west).as_deref(), Some(want), "{west}");
    }
    {
        let west = "api.shop.west.global";
        assert_eq!(to(&r, west), Some(("api.shop@west".into(), vec!["10.9.0.1:8080".into(), "10.9.0.2:8080".into()])));
    }
    for east in ["api-east.shop.svc.cluster.local", "api.shop.east.global"] {
        assert_eq!(to(&r, east), Some(("api.shop@east".into(), vec!["10.0.0.1:8080".into()])), "{east}");
    }
    // Consul names: namespace default; a datacenter names its cluster; none: this one.
    assert_eq!(key(&r, "web.service.west.consul"), Some("web.default@west".into()));
    assert_eq!(key(&r, "v2.web.service.west.consul"), Some("web.default@west".into()), "a tag in front");
    assert_eq!(key(&r, "web.service.consul"), Some("web.default@east".into()));
    assert_eq!(to(&r, "web.service.consul").unwrap().1, Vec::<String>::new(), "no web in east");
    assert_eq!(key(&r, "web.default.svc.cluster.local"), Some("web.default".into()));
    // A real service of the mirror's name wins.
    assert_eq!(key(&r, "api-west.shop.svc.cluster.local"), Some("api-west.shop".into()));
}

#[test]
fn unknown_names_route_nowhere() {
    let r = routes();
    for no in [
        "api",
        "api.shop",
        "nope.shop.svc.cluster.local",
        "api-mars.shop.svc.cluster.local",
        "api.shop.mars.global",
        "api.service.west.consul",
        "example.com",
        "",
        ".",
        &"a".repeat(300),
    ] {
        assert_eq!(key(&r, no), None, "{no}");
    }
}

#[test]
fn virtual_ips_route_to_a_service_or_a_mirror() {
    let r = routes();
    let vip = |s: &str| r.by_vip(s.parse::<IpAddr>().unwrap()).map(|s| s.key().to_string());
    assert_eq!(vip("240.240.0.1").as_deref(), Some("api.shop"));
    assert_eq!(vip("240.240.0.2").as_deref(), Some("api.shop@west"));
    assert_eq!(vip("240.240.0.3").as_deref(), Some("web.default"));
    assert_eq!(vip("240.240.0.4").as_deref(), Some("web.default@west"));
    assert_eq!(vip("240.240.0.9"), None);
    // A kept-alive connection finds the current table's mirror by key.
    assert_eq!(r.service_by_key("api.shop@west").map(|s| s.endpoints.len()), Some(2));
    // The mirror picks only its cluster's endpoints, and keeps the service's name for the SNI.
    let m = r.by_vip("240.240.0.2".parse().unwrap()).unwrap();
    assert_eq!((m.name.as_str(), m.namespace.as_str()), ("api", "shop"));
    for _ in 0..4 {
        assert_eq!(m.pick().unwrap().cluster, "west");
    }
}

#[test]
fn two_mirrors_of_one_name_route_to_the_shorter_service() {
    let cfg = ProxyConfig::from_yaml(
        r#"
cluster: east
identity: { cert: c.pem, key: k.pem, bundle: b.pem }
outbound: { transparent: "127.0.0.1:15001" }
services:
  - name: x-a
    endpoints: [{ address: "10.2.0.1:80", identity: "spiffe://b.example/ns/default/sa/x", cluster: b }]
  - name: x
    endpoints: [{ address: "10.1.0.1:80", identity: "spiffe://ab.example/ns/default/sa/x", cluster: a-b }]
"#,
    )
    .expect("config");
    let r = Routes::try_from(&cfg).expect("routes");
    assert_eq!(key(&r, "x-a-b.default.svc.cluster.local").as_deref(), Some("x.default@a-b"));
}
