//! Primary-remote in network namespaces (root; CI runs it as root, elsewhere it skips with a
//! message): a primary cluster `core` (bridge, control plane, pods, east-west gateway) and a
//! remote cluster `edge` of it with no control plane (bridge, pods, gateway; `Mesh::add_remote`).
//! Only the two gateways are on the WAN: every edge proxy follows core's control plane through
//! core's gateway, and each side reaches the other's workloads through the other's gateway
//! (harness and diagram: `tests/mcnet/mod.rs`).
//!
//! Core's resolver is on core's bridge, out of edge's reach: edge's pods resolve through a
//! `weft dns` on edge's bridge that follows core's control plane through core's gateway. Edge's
//! apps call core's service by name (and by its endpoint's address), which their sidecar routes
//! through core's gateway. Core's app calls edge's service by name through core's DNS.

mod mcnet;

use mcnet::{assert_nothing_left, eventually, App, Mesh, APP_PORT};
use std::time::Duration;

/// The sum of a gateway's `weft_tcp_open_total{direction="gateway"}` for SNI destinations
/// starting with `dst` (its admin /metrics, read inside the gateway's namespace).
fn gateway_opens(mesh: &Mesh, gw_ns: &str, dst: &str) -> f64 {
    let (status, body) = mesh.call_from(gw_ns, "127.0.0.1:15000", "/metrics");
    assert!(status.contains("200"), "gateway metrics in {gw_ns}: {status} {body}");
    let label = format!("dst=\"{dst}");
    body.lines()
        .filter(|l| l.starts_with("weft_tcp_open_total") && l.contains("direction=\"gateway\"") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Edge's gateway and sidecar get certificates and routes only through core's gateway (edge has
/// no route to core's control plane); core's web calls edge's cart through edge's gateway and
/// cart's app sees web's identity; edge's cart calls core's api through core's gateway and api's
/// app sees cart's identity; nothing is left behind.
#[test]
fn remote_cluster_follows_the_primary_through_its_gateway_and_each_side_reaches_the_other() {
    if mcnet::skip("remote_cluster_follows_the_primary_through_its_gateway_and_each_side_reaches_the_other") {
        return;
    }
    let mut mesh = Mesh::new(&["core"]);
    let tag = mesh.tag.clone();
    mesh.add_remote("edge", "core");
    mesh.add_pod("core", "api-c", "api", App::Echo);
    mesh.add_pod(
        "core",
        "web",
        "web",
        App::Frontend { upstream: format!("cart.default.svc.cluster.local:{APP_PORT}") },
    );
    mesh.add_pod("edge", "cart-e", "cart", App::Echo);
    mesh.add_pod(
        "edge",
        "shop-e",
        "shop",
        App::Frontend { upstream: format!("api.default.svc.cluster.local:{APP_PORT}") },
    );
    let (core, edge) = (mesh.cluster("core"), mesh.cluster("edge"));
    let core_gw = format!("{}:15443", core.gateway_wan);
    let edge_gw = format!("{}:15443", edge.gateway_wan);
    let api_c = format!("{}:{APP_PORT}", mesh.pod("core", "api-c").ip);
    let cart_e = format!("{}:{APP_PORT}", mesh.pod("edge", "cart-e").ip);

    // Edge's network reaches core's gateway, never core's control plane: its proxies' certificates
    // and routes came through the gateway (the reserved control-plane SNI, counted there).
    let core_control = format!("{}:15012", core.control_ip());
    assert!(mesh.tcp_connects(&edge.gw_ns, &core_gw), "edge's gateway namespace does not reach {core_gw}");
    assert!(!mesh.tcp_connects(&edge.gw_ns, &core_control), "edge reaches core's control plane directly");
    assert!(!mesh.tcp_connects(&edge.ns, &core_control), "edge's node reaches core's control plane directly");
    let control_opens = gateway_opens(&mesh, &core.gw_ns, "control.weft-system");
    assert!(control_opens >= 2.0, "edge's gateway and sidecar through core's gateway: {control_opens}");

    // Edge's sidecar routes core's api through core's gateway, and core's web routes edge's cart
    // through edge's gateway: the routes each got from core's control plane.
    let endpoint = |cluster: &str, pod: &str, service: &str| {
        let routes = mesh.routes(cluster, pod);
        let r = routes.iter().find(|r| r["name"] == service)?;
        Some((r["endpoints"][0]["address"].as_str()?.to_string(), r["endpoints"][0]["proxy"].as_str()?.to_string()))
    };
    let got = eventually("edge's cart routes api", Duration::from_secs(20), || endpoint("edge", "cart-e", "api"));
    assert_eq!(got, (api_c.clone(), core_gw.clone()), "edge dials core's api through core's gateway");
    let got = eventually("core's web routes cart", Duration::from_secs(20), || endpoint("core", "web", "cart"));
    assert_eq!(got, (cart_e.clone(), edge_gw.clone()), "core dials edge's cart through edge's gateway");

    // Core's web calls cart by name: answered in edge, which sees core's caller.
    let v: serde_json::Value = eventually("core's web reaches edge's cart", Duration::from_secs(20), || {
        let (status, body) = mesh.call("core", "web", &format!("127.0.0.1:{APP_PORT}"), "/from-core");
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (status.contains("200") && v["upstream_status"] == 200).then_some(v)
    });
    assert_eq!(v["upstream"]["app"], "cart-e", "answered in edge: {v}");
    assert_eq!(v["upstream"]["peer_identity"], "spiffe://core.local/ns/default/sa/web", "{v}");
    assert!(gateway_opens(&mesh, &edge.gw_ns, "cart.default") >= 1.0, "not through edge's gateway");

    // Edge's cart (an unmodified call to api's address) reaches core's api through core's
    // gateway; api's app sees the remote caller's identity (core's trust domain).
    let via_core_gw = gateway_opens(&mesh, &core.gw_ns, "api.default");
    let (status, body) = mesh.call("edge", "cart-e", &api_c, "/from-edge");
    assert!(status.contains("200"), "edge's cart calling {api_c}: {status} {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(v["app"], "api-c", "answered in core: {v}");
    assert_eq!(v["path"], "/from-edge", "{v}");
    assert_eq!(v["peer_identity"], "spiffe://core.local/ns/default/sa/cart", "{v}");
    assert!(gateway_opens(&mesh, &core.gw_ns, "api.default") > via_core_gw, "not through core's gateway");

    // Edge's pods resolve every naming form through edge's `weft dns`, answered from core's
    // catalog with edge as "this cluster": core-only api answers its virtual IP (core gives one
    // to every name, as it has remote clusters), which edge's sidecars intercept; the mirror of
    // core its own; `<svc>.service.consul` is edge's own.
    let resolve = |name: &str| mesh.resolve("edge", "shop-e", name);
    let vip = eventually("edge resolves core's api by name", Duration::from_secs(20), || {
        let v = resolve("api.default.svc.cluster.local");
        (!v.is_empty()).then_some(v)
    });
    assert!(vip.len() == 1 && vip[0].starts_with("240.240."), "api's virtual IP: {vip:?}");
    for name in ["api.default.global", "api.default.svc.clusterset.local"] {
        assert_eq!(resolve(name), vip, "{name}");
    }
    let mirror = resolve("api-core.default.svc.cluster.local");
    assert!(mirror.len() == 1 && mirror[0].starts_with("240.240.") && mirror != vip, "core's mirror: {mirror:?}");
    for name in ["api.default.core.global", "api.service.core.consul"] {
        assert_eq!(resolve(name), mirror, "{name}");
    }
    // Core's own DNS still answers api's address (its instances are all in core).
    let api_ip = vec![mesh.pod("core", "api-c").ip.to_string()];
    assert_eq!(mesh.resolve("core", "web", "api.default.svc.cluster.local"), api_ip);
    // Cart is defined on core (a primary holds every cluster's Services) and runs in edge: its
    // spanning names answer its virtual IP, its Consul names (edge's own) its address.
    let vip = resolve("cart.default.svc.cluster.local");
    assert!(vip.len() == 1 && vip[0].starts_with("240.240."), "cart's virtual IP: {vip:?}");
    let cart_ip = vec![mesh.pod("edge", "cart-e").ip.to_string()];
    for name in ["cart.service.consul", "cart.service.edge.consul", "cart-edge.default.svc.cluster.local"] {
        assert_eq!(resolve(name), cart_ip, "{name}");
    }
    assert_eq!(resolve("api.service.consul"), Vec::<String>::new(), "edge has no api instance of its own");

    // Edge's shop (an unmodified app) calls core's api by name: its sidecar routes the virtual IP
    // through core's gateway, and api's app sees shop's identity.
    let via_core_gw = gateway_opens(&mesh, &core.gw_ns, "api.default");
    let v: serde_json::Value = eventually("edge's shop reaches core's api by name", Duration::from_secs(20), || {
        let (status, body) = mesh.call("edge", "shop-e", &format!("127.0.0.1:{APP_PORT}"), "/from-edge-by-name");
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (status.contains("200") && v["upstream_status"] == 200).then_some(v)
    });
    assert_eq!(v["upstream"]["app"], "api-c", "answered in core: {v}");
    assert_eq!(v["upstream"]["peer_identity"], "spiffe://core.local/ns/default/sa/shop", "{v}");
    assert!(gateway_opens(&mesh, &core.gw_ns, "api.default") > via_core_gw, "not through core's gateway");

    drop(mesh);
    assert_nothing_left(&tag);
}
