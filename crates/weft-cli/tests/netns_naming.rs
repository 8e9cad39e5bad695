//! Naming across two control planes in network namespaces (root; CI runs it as root, elsewhere it
//! skips with a message): `east` and `west`, each on its own bridge with its own control plane and
//! DNS, joined only through their gateways on the WAN (harness: `tests/mcnet/mod.rs`), linked both
//! ways. `api` runs in both clusters (`api-e`, `api-w`); a pod in each cluster resolves every
//! naming form of docs/multicluster.md ("Naming across clusters") through its cluster's weft DNS
//! and makes an unmodified call by it (transparent interception, virtual IPs), and the echo's
//! answer says which cluster answered. The loopback version of the DNS half is
//! `crates/weft-control/tests/naming.rs`.

mod mcnet;

use mcnet::{assert_nothing_left, eventually, App, Mesh, RecordType, ResponseCode, APP_PORT};
use std::time::Duration;

/// Which app answered a call by `name` from `cluster`'s pod `pod` (`None`: the call failed).
fn answered_by(mesh: &Mesh, cluster: &str, pod: &str, name: &str) -> Option<String> {
    let (_, status, body) = mesh.call_name(cluster, pod, name, APP_PORT, "/naming");
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    (status.contains("200") && v["path"] == "/naming").then(|| v["app"].as_str().unwrap_or_default().to_string())
}

/// Three calls by `name` are all answered by `app`.
fn routes_to(mesh: &Mesh, cluster: &str, pod: &str, name: &str, app: &str) {
    for _ in 0..3 {
        let by = answered_by(mesh, cluster, pod, name);
        assert_eq!(by.as_deref(), Some(app), "a call by {name} from {cluster}'s {pod}");
    }
}

fn is_vip(addr: &str) -> bool {
    addr.starts_with("240.240.")
}

/// Every naming form resolves through the pod's weft DNS and an unmodified call by it is answered
/// where the name says: spanning names (`svc.ns.svc.cluster.local`, `svc.ns.global`,
/// `svc.ns.svc.clusterset.local`, A and SRV) by this cluster's instance (local preferred), one-cluster
/// names (`svc-<cluster>.ns.svc.cluster.local`, `svc.ns.<cluster>.global`,
/// `[tag.]svc.service.<dc>.consul`, SRV `_svc._tcp.service.<dc>.consul`) by that cluster's; the
/// same from the other control plane's side; unknown names are NXDOMAIN; while the link to west
/// is down west's one-cluster names answer empty (NOERROR, no record) and the spanning name still
/// reaches east's own instance; healed, west's names route to west again.
#[test]
fn every_naming_form_resolves_and_routes_across_two_control_planes() {
    if mcnet::skip("every_naming_form_resolves_and_routes_across_two_control_planes") {
        return;
    }
    let mut mesh = Mesh::new(&["east", "west"]);
    let tag = mesh.tag.clone();
    mesh.add_pod("east", "api-e", "api", App::Echo);
    mesh.add_pod("east", "client-e", "client", App::Echo);
    mesh.add_pod("west", "api-w", "api", App::Echo);
    mesh.add_pod("west", "client-w", "client", App::Echo);
    // West's api carries a Consul tag (it travels with the link).
    mesh.apply(
        "west",
        "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: api }\nspec: { export: true, tags: [v2] }\n",
    );
    mesh.link("east", "west");
    mesh.link("west", "east");
    for (c, pod) in [("east", "client-e"), ("west", "client-w")] {
        eventually(&format!("{c}'s client routes api to east and west"), Duration::from_secs(30), || {
            (mesh.routed_clusters(c, pod, "api") == ["east", "west"]).then_some(())
        });
    }
    let api_e = mesh.pod("east", "api-e").ip.to_string();
    let a = |name: &str| mesh.dns("east", "client-e", name, RecordType::A);

    // Spanning names: one virtual IP (api has instances in another cluster), answered by east's
    // own instance (this cluster first).
    let whole = eventually("api's VIP in east's DNS", Duration::from_secs(20), || {
        let (code, ips) = a("api.default.svc.cluster.local");
        (code == ResponseCode::NoError && ips.len() == 1 && is_vip(&ips[0])).then(|| ips[0].clone())
    });
    for name in ["api.default.svc.cluster.local", "api.default.global", "api.default.svc.clusterset.local"] {
        assert_eq!(a(name), (ResponseCode::NoError, vec![whole.clone()]), "{name}");
        let (dialled, _, _) = mesh.call_name("east", "client-e", name, APP_PORT, "/naming");
        assert_eq!(dialled, whole, "the pod's resolver answers {name} with the VIP");
        routes_to(&mesh, "east", "client-e", name, "api-e");
    }

    // West's one-cluster names: west's mirror VIP, answered only by west's instance.
    let (code, mirror) = a("api-west.default.svc.cluster.local");
    assert!(code == ResponseCode::NoError && mirror.len() == 1 && is_vip(&mirror[0]), "{code:?} {mirror:?}");
    assert_ne!(mirror[0], whole, "the mirror has a VIP of its own");
    for name in [
        "api-west.default.svc.cluster.local",
        "api.default.west.global",
        "api.service.west.consul",
        "v2.api.service.west.consul",
    ] {
        assert_eq!(a(name), (ResponseCode::NoError, mirror.clone()), "{name}");
        routes_to(&mesh, "east", "client-e", name, "api-w");
    }
    // East's own one-cluster names answer east's instance address (no VIP needed).
    for name in ["api-east.default.svc.cluster.local", "api.default.east.global", "api.service.consul"] {
        assert_eq!(a(name), (ResponseCode::NoError, vec![api_e.clone()]), "{name}");
        routes_to(&mesh, "east", "client-e", name, "api-e");
    }

    // SRV: the record's target resolves (A) and is called on the record's port.
    let srv = |name: &str, target: &str, app: &str| {
        let (code, records) = mesh.dns("east", "client-e", name, RecordType::SRV);
        assert_eq!((code, records.clone()), (ResponseCode::NoError, vec![format!("{APP_PORT} {target}")]), "{name}");
        let target = target.trim_end_matches('.');
        assert!(!mesh.resolve("east", "client-e", target).is_empty(), "{target} (SRV target of {name})");
        routes_to(&mesh, "east", "client-e", target, app);
    };
    srv("_api._tcp.service.west.consul", "api.service.west.consul.", "api-w");
    srv("_http._tcp.api.default.svc.clusterset.local", "api.default.svc.clusterset.local.", "api-e");

    // The other control plane's view: the same forms from west, west's own instance first.
    for (name, app) in [
        ("api.default.svc.cluster.local", "api-w"),
        ("api.default.svc.clusterset.local", "api-w"),
        ("api-east.default.svc.cluster.local", "api-e"),
        ("api.default.east.global", "api-e"),
        ("api.service.east.consul", "api-e"),
        ("api-west.default.svc.cluster.local", "api-w"),
    ] {
        routes_to(&mesh, "west", "client-w", name, app);
    }

    // Unknown names: NXDOMAIN, and nothing to call.
    for name in [
        "nope.default.svc.cluster.local",
        "api-mars.default.svc.cluster.local",
        "api.default.mars.global",
        "nope.default.global",
        "nope.default.svc.clusterset.local",
        "nope.service.west.consul",
    ] {
        assert_eq!(a(name).0, ResponseCode::NXDomain, "{name}");
        let (_, status, _) = mesh.call_name("east", "client-e", name, APP_PORT, "/naming");
        assert!(status.starts_with("ERR"), "{name}: {status}");
    }

    // West's link down (its gateway's WAN leg cut): west's one-cluster names answer empty, not
    // the last VIP; the spanning name still reaches east's own instance.
    mesh.set_wan("west", false);
    mesh.wait_link_state("east", "west", "failing");
    eventually("west's names go empty in east", Duration::from_secs(20), || {
        (a("api-west.default.svc.cluster.local") == (ResponseCode::NoError, vec![])).then_some(())
    });
    for name in ["api.default.west.global", "api.service.west.consul", "v2.api.service.west.consul"] {
        assert_eq!(a(name), (ResponseCode::NoError, vec![]), "{name} while west's link is down");
    }
    assert_eq!(
        mesh.dns("east", "client-e", "_api._tcp.service.west.consul", RecordType::SRV),
        (ResponseCode::NoError, vec![])
    );
    routes_to(&mesh, "east", "client-e", "api.default.svc.cluster.local", "api-e");

    // Healed: west's names answer their VIP again and route to west.
    mesh.set_wan("west", true);
    mesh.wait_link_state("east", "west", "active");
    eventually("west's mirror name answers again", Duration::from_secs(20), || {
        (a("api-west.default.svc.cluster.local") == (ResponseCode::NoError, mirror.clone())).then_some(())
    });
    eventually("a call by west's mirror name reaches west again", Duration::from_secs(20), || {
        (answered_by(&mesh, "east", "client-e", "api.default.west.global").as_deref() == Some("api-w")).then_some(())
    });

    drop(mesh);
    assert_nothing_left(&tag);
}
