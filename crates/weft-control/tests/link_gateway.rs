//! `weft link`, multi-primary on separate networks, on 127.0.0.1: cluster west declares an
//! east-west gateway (MeshConfig `cluster.gateways`) and runs one (a real `weft-proxy` gateway
//! following west's control plane). East links with west's credential: the link stream goes
//! through west's gateway (reserved SNI `control.weft-system.west-g.weft`), and east's sidecars
//! reach west's endpoints of another network through it, with mTLS end to end; endpoints on the
//! same network are still dialled directly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use weft_api::kinds::MeshConfigSpec;
use weft_control::{ControlConfig, ControlPlane};
use weft_proxy::Proxy;
use weft_testkit::{eventually, http1_get};

mod common;
use common::{admin_api as api, forwarded, metric, sidecar, tempdir};

const WAIT: Duration = Duration::from_secs(15);

async fn control(name: &str, trust_domain: &str, network: &str) -> ControlPlane {
    let mut cfg = ControlConfig::new(tempdir(name));
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    let mut mesh = MeshConfigSpec { trust_domain: trust_domain.into(), ..Default::default() };
    mesh.cluster.name = name.into();
    mesh.cluster.network = network.into();
    cfg.mesh = mesh;
    ControlPlane::start(cfg).await.expect("control plane")
}

/// A gateway proxy of cluster `cluster`, following `cp` (so it forwards the control-plane SNI to
/// `cp`'s gRPC listener), listening on loopback.
async fn gateway(cp: &ControlPlane, cluster: &str) -> Proxy {
    let extra = format!("mode: gateway\ncluster: {cluster}\ngateway: {{ listen: \"127.0.0.1:0\" }}\n");
    sidecar(cp, "default/east-west-gateway", None, &extra).await
}

/// Declares `gateways` as `cp`'s east-west gateways (MeshConfig `cluster.gateways`).
async fn declare_gateways(
    cp: &ControlPlane,
    trust_domain: &str,
    cluster: &str,
    network: &str,
    gateways: &[SocketAddr],
) {
    let list: Vec<String> = gateways.iter().map(|g| format!("\"{g}\"")).collect();
    let mesh = format!(
        "apiVersion: weft.io/v1alpha1\nkind: MeshConfig\nmetadata: {{ name: mesh }}\nspec: {{ trustDomain: {trust_domain}, cluster: {{ name: {cluster}, network: \"{network}\", gateways: [{}] }} }}\n",
        list.join(", ")
    );
    let (status, v) = api(cp, "POST", "/v1/apply", &mesh).await;
    assert_eq!(status, 200, "{v}");
}

fn refusals(gw: &Proxy, reason: &str) -> f64 {
    metric(
        &gw.metrics_text(),
        "weft_protocol_errors_total",
        &["direction=\"gateway\"", &format!("reason=\"{reason}\"")],
    )
}

/// The sidecar address east's catalog holds for each instance of `api`, by instance address.
fn imported_sidecars(cp: &ControlPlane) -> Vec<(String, String)> {
    let cat = cp.catalog.borrow().clone();
    cat.services
        .get(&("default".to_string(), "api".to_string()))
        .map(|s| s.instances.iter().map(|i| (i.address.to_string(), i.sidecar.to_string())).collect())
        .unwrap_or_default()
}

/// A TLS ClientHello for `sni` sent to `gw` (verifying a control plane of `trust_domain` under
/// `root_pem`): the handshake's result.
async fn hello(gw: SocketAddr, sni: &str, root_pem: &str, trust_domain: &str) -> Result<(), String> {
    let roots = weft_identity::TrustBundle::from_pem(root_pem).unwrap();
    let cfg =
        weft_identity::control::client_config(weft_identity::control::ControlTrust::Roots(roots), trust_domain, None)
            .unwrap();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let tcp = tokio::net::TcpStream::connect(gw).await.map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    match tokio::time::timeout(WAIT, tls.connect(name, tcp)).await {
        Ok(r) => r.map(|_| ()).map_err(|e| e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// The verdict and detail of check `name` in a `GET /v1/links/{cluster}/check` answer.
fn check_line<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v["checks"].as_array().and_then(|c| c.iter().find(|c| c["name"] == name)).unwrap_or(&serde_json::Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_networks_link_and_call_through_the_peer_gateway() {
    weft_testkit::init_tracing();
    let west = control("west-g", "west-g.example", "net-west").await;
    let east = control("east-g", "east-g.example", "net-east").await;

    // West: api, exported, with a real app behind its server sidecar, and a gateway.
    let app = weft_testkit::http_echo("api-in-west").await;
    let server = sidecar(&west, "default/api", Some("api-1"), "inbound: { listen: \"127.0.0.1:0\" }\n").await;
    let server_inbound = server.addrs.inbound.unwrap();
    let docs = format!(
        "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: api }}\nspec: {{ export: true }}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: api-1 }}\nspec: {{ service: api, address: 127.0.0.1, port: {}, sidecar: \"{server_inbound}\" }}\n",
        app.port()
    );
    let (status, v) = api(&west, "POST", "/v1/apply", &docs).await;
    assert_eq!(status, 200, "{v}");
    let gw = gateway(&west, "west-g").await;
    let gw_addr = gw.addrs.gateway.unwrap();

    // Bad input: a gateway address that does not parse is refused, naming the field.
    let bad = "apiVersion: weft.io/v1alpha1\nkind: MeshConfig\nmetadata: { name: mesh }\nspec: { trustDomain: west-g.example, cluster: { name: west-g, network: net-west, gateways: [\"gw.west:15443\"] } }\n";
    let (status, v) = api(&west, "POST", "/v1/apply", bad).await;
    assert_eq!(status, 400, "{v}");
    let err = v["error"].as_str().unwrap();
    assert!(err.contains("spec.cluster.gateways[0]") && err.contains("not ip:port"), "{err}");
    declare_gateways(&west, "west-g.example", "west-g", "net-west", &[gw_addr]).await;

    // West's credential names its network and gateway, and its federation address is the gateway,
    // not its control plane's gRPC listener.
    let west_ref = &west;
    let cred = eventually("the credential names the gateway", WAIT, || async move {
        let (_, v) = api(west_ref, "POST", "/v1/links/credential", "").await;
        let cred = weft_api::link::Credential::decode(v["credential"].as_str()?).ok()?;
        (!cred.gateways.is_empty()).then_some(cred)
    })
    .await;
    assert_eq!(cred.gateways, vec![gw_addr.to_string()]);
    assert_eq!(cred.network, "net-west");
    assert_eq!(cred.address, gw_addr.to_string());
    assert_ne!(cred.address, west.grpc_addr.to_string());

    // A credential whose gateway address does not parse is refused, naming the field.
    let mut broken = cred.clone();
    broken.gateways = vec!["not-an-address".into()];
    let (status, v) = api(&east, "POST", "/v1/links", &broken.encode()).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("gateways[0]"), "{v}");

    // East: a client sidecar that calls api; east links to west.
    let client =
        sidecar(&east, "default/web", None, "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: api }] }\n")
            .await;
    let upstream = client.addrs.upstreams[0];
    let (status, v) = api(&east, "POST", "/v1/links", &cred.encode()).await;
    assert_eq!(status, 200, "{v}");

    // (b) East's client reaches west's app through west's gateway, with mTLS: the app sees east's
    // caller identity, not the gateway's.
    let body = eventually("east calls api in west through its gateway", WAIT, || async move {
        let r = http1_get(upstream, "/hello").await.ok()?;
        (r.status() == 200).then(|| serde_json::from_slice::<serde_json::Value>(r.body()).unwrap_or_default())
    })
    .await;
    assert_eq!(body["peer_identity"], "spiffe://east-g.example/ns/default/sa/web", "{body}");
    assert_eq!(body["app"], "api-in-west", "{body}");
    assert_eq!(imported_sidecars(&east), vec![(app.to_string(), gw_addr.to_string())], "dialled via the gateway");
    assert!(forwarded(&gw, "api.default") >= 1.0, "{}", gw.metrics_text());

    // (a) The link stream itself went through the gateway (the control-plane SNI).
    assert!(forwarded(&gw, "control.weft-system") >= 1.0, "{}", gw.metrics_text());
    let (_, v) = api(&east, "GET", "/v1/links", "").await;
    let link = &v["links"][0];
    assert_eq!(link["state"], "active", "{v}");
    assert_eq!(link["gateways"], serde_json::json!([gw_addr.to_string()]), "{v}");
    assert_eq!(link["network"], "net-west", "{v}");
    let east_ref = &east;
    let v = eventually("the link checks pass through the gateway", WAIT, || async move {
        let (_, v) = api(east_ref, "GET", "/v1/links/west-g/check", "").await;
        (v["ok"] == true).then_some(v)
    })
    .await;
    let reachable = check_line(&v, "reachable")["detail"].as_str().unwrap().to_string();
    assert!(reachable.contains("east-west gateway") && reachable.contains(&gw_addr.to_string()), "{v}");
    assert!(check_line(&v, "trusted")["detail"].as_str().unwrap().contains("through its gateway"), "{v}");
    let network = check_line(&v, "network")["detail"].as_str().unwrap().to_string();
    assert!(network.contains("\"net-west\"") && network.contains(&format!("through its gateway(s) {gw_addr}")), "{v}");

    // (d) The gateway refuses, with its reason, the control-plane SNI of another cluster and any
    // other name in the reserved namespace; the right one passes (and verifies as west's control
    // plane, end to end).
    let root = &cred.root_pem;
    hello(gw_addr, "control.weft-system.west-g.weft", root, "west-g.example").await.expect("the control plane");
    let wrong = refusals(&gw, "wrong-cluster");
    assert!(hello(gw_addr, "control.weft-system.east-g.weft", root, "west-g.example").await.is_err());
    assert_eq!(refusals(&gw, "wrong-cluster"), wrong + 1.0, "{}", gw.metrics_text());
    assert!(hello(gw_addr, "15012.control.weft-system.west-g.weft", root, "west-g.example").await.is_err());
    assert!(hello(gw_addr, "api.weft-system.west-g.weft", root, "west-g.example").await.is_err());
    assert_eq!(refusals(&gw, "reserved-sni"), 2.0, "{}", gw.metrics_text());

    // A link whose credential sends east's control plane through west's gateway (a credential of
    // another cluster, north, with its gateway swapped for west's): the gateway refuses north's
    // control-plane SNI, and `weft link check` says so.
    let north = control("north-g", "north-g.example", "net-north").await;
    let (_, v) = api(&north, "POST", "/v1/links/credential", "").await;
    let mut misrouted = weft_api::link::Credential::decode(v["credential"].as_str().unwrap()).unwrap();
    misrouted.gateways = vec![gw_addr.to_string()];
    misrouted.address = gw_addr.to_string();
    assert_eq!(api(&east, "POST", "/v1/links", &misrouted.encode()).await.0, 200);
    let (_, v) = api(&east, "GET", "/v1/links/north-g/check", "").await;
    assert_eq!(check_line(&v, "reachable")["verdict"], "pass", "{v}");
    let trusted = check_line(&v, "trusted");
    assert_eq!(trusted["verdict"], "fail", "{v}");
    assert!(trusted["detail"].as_str().unwrap().contains("does not route the control-plane SNI"), "{v}");
    assert!(trusted["fix"].as_str().unwrap().contains("cluster: north-g"), "{v}");
    drop(server);
}

/// (c) Endpoints on the importer's network, or of no network (Istio's rule: the same as every
/// network), are dialled directly; one on another network goes through the peer's gateway. The
/// link stream goes through the gateway either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_network_endpoints_are_dialled_directly() {
    weft_testkit::init_tracing();
    let west = control("west-n", "west-n.example", "net-1").await;
    let east = control("east-n", "east-n.example", "net-1").await;
    let wl = |n: u8, network: &str| {
        format!("---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: api-{n} }}\nspec: {{ service: api, address: 127.0.0.{n}, port: 9, sidecar: \"127.0.0.{n}:10\"{network} }}\n")
    };
    let docs = format!(
        "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: api }}\nspec: {{ export: true }}\n{}{}{}",
        wl(1, ""),
        wl(2, ", network: net-2"),
        wl(3, ", network: \"\"")
    );
    let (status, v) = api(&west, "POST", "/v1/apply", &docs).await;
    assert_eq!(status, 200, "{v}");
    let gw = gateway(&west, "west-n").await;
    let gw_addr = gw.addrs.gateway.unwrap();
    declare_gateways(&west, "west-n.example", "west-n", "net-1", &[gw_addr]).await;
    let west_ref = &west;
    let cred = eventually("the credential names the gateway", WAIT, || async move {
        let (_, v) = api(west_ref, "POST", "/v1/links/credential", "").await;
        v["credential"]
            .as_str()
            .filter(|c| weft_api::link::Credential::decode(c).is_ok_and(|c| !c.gateways.is_empty()))
            .map(str::to_string)
    })
    .await;
    assert_eq!(api(&east, "POST", "/v1/links", &cred).await.0, 200);
    let east_ref = &east;
    let got = eventually("api imported", WAIT, || async move {
        let s = imported_sidecars(east_ref);
        (s.len() == 3).then_some(s)
    })
    .await;
    assert_eq!(
        got,
        vec![
            ("127.0.0.1:9".to_string(), "127.0.0.1:10".to_string()),
            ("127.0.0.2:9".to_string(), gw_addr.to_string()),
            ("127.0.0.3:9".to_string(), "127.0.0.3:10".to_string()),
        ]
    );
    assert!(forwarded(&gw, "control.weft-system") >= 1.0, "{}", gw.metrics_text());
}
