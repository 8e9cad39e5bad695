//! Primary-remote on 127.0.0.1: a primary control plane (network net-p, with its east-west
//! gateway) serves a remote cluster that has no control plane of its own (network net-r,
//! declared in the primary's MeshConfig `remoteClusters`). The remote cluster's gateway and
//! sidecars follow the primary through the primary's gateway (reserved SNI
//! `control.weft-system.<primary>.weft`), get their certificates and routes there, and its
//! Workload registers with the primary. Each side reaches the other's workloads through the other
//! side's gateway, with mTLS end to end: the app sees the caller's identity.

use std::net::SocketAddr;
use std::time::Duration;
use weft_api::kinds::MeshConfigSpec;
use weft_control::{ControlConfig, ControlPlane};
use weft_proxy::Proxy;
use weft_testkit::{eventually, http1_get};

mod common;
use common::{admin_api as api, forwarded, proxy_following, sidecar, tempdir};

const WAIT: Duration = Duration::from_secs(20);

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

/// A bootstrap token of `identity` for a proxy of `cluster` (`weft token create --cluster`).
async fn remote_token(cp: &ControlPlane, identity: &str, cluster: &str) -> (u16, serde_json::Value) {
    let body = format!(r#"{{"kind":"bootstrap","identity":"{identity}","cluster":"{cluster}"}}"#);
    api(cp, "POST", "/v1/tokens", &body).await
}

/// The primary's MeshConfig: its own network and gateway, and the remote cluster `remote`.
fn mesh_doc(primary_gw: SocketAddr, remote_gws: &str) -> String {
    format!(
        "apiVersion: weft.io/v1alpha1\nkind: MeshConfig\nmetadata: {{ name: mesh }}\nspec:\n  trustDomain: primary.example\n  cluster: {{ name: primary, network: net-p, gateways: [\"{primary_gw}\"] }}\n  remoteClusters:\n  - {{ name: remote, network: net-r, gateways: [{remote_gws}] }}\n"
    )
}

/// POSTs `mesh` (a MeshConfig with `spec.remoteClusters` replaced by `remotes`) and returns the error.
async fn refused(cp: &ControlPlane, remotes: &str) -> String {
    let doc = format!(
        "apiVersion: weft.io/v1alpha1\nkind: MeshConfig\nmetadata: {{ name: mesh }}\nspec:\n  trustDomain: primary.example\n  cluster: {{ name: primary, network: net-p }}\n  remoteClusters: {remotes}\n"
    );
    let (status, v) = api(cp, "POST", "/v1/apply", &doc).await;
    assert_eq!(status, 400, "{remotes}: {v}");
    v["error"].as_str().unwrap_or_default().to_string()
}

async fn call(upstream: SocketAddr, what: &str) -> serde_json::Value {
    eventually(what, WAIT, || async move {
        let r = http1_get(upstream, "/hello").await.ok()?;
        (r.status() == 200).then(|| serde_json::from_slice::<serde_json::Value>(r.body()).unwrap_or_default())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_cluster_follows_the_primary_through_its_gateway() {
    weft_testkit::init_tracing();
    let primary = control("primary", "primary.example", "net-p").await;

    // Bad declarations are refused, naming the field.
    let err = refused(&primary, "[{ name: primary, network: net-r, gateways: [\"127.0.0.1:1\"] }]").await;
    assert!(err.contains("remoteClusters[0].name") && err.contains("own name"), "{err}");
    let err = refused(&primary, "[{ name: remote, network: net-r, gateways: [\"gw.remote:15443\"] }]").await;
    assert!(err.contains("remoteClusters[0].gateways[0]") && err.contains("not ip:port"), "{err}");
    let err = refused(&primary, "[{ name: remote, network: net-r }]").await;
    assert!(err.contains("remoteClusters[0].gateways") && err.contains("net-r"), "{err}");
    let err = refused(
        &primary,
        "[{ name: remote, network: net-r, gateways: [\"127.0.0.1:1\"] }, { name: remote, gateways: [\"127.0.0.1:2\"] }]",
    )
    .await;
    assert!(err.contains("remoteClusters[1].name") && err.contains("twice"), "{err}");
    let err = refused(&primary, "[{ name: Remote_1, gateways: [\"127.0.0.1:1\"] }]").await;
    assert!(err.contains("remoteClusters[0].name") && err.contains("DNS label"), "{err}");
    // A token for an undeclared cluster is refused, naming the field and the fix.
    let (status, v) = remote_token(&primary, "default/web-r", "remote").await;
    assert_eq!(status, 400, "{v}");
    let err = v["error"].as_str().unwrap();
    assert!(err.contains("cluster") && err.contains("remoteClusters"), "{err}");

    // The primary: its gateway, and api-p with a real app behind its sidecar.
    let pgw = common::sidecar(
        &primary,
        "default/east-west-gateway",
        None,
        "mode: gateway\ncluster: primary\ngateway: { listen: \"127.0.0.1:0\" }\n",
    )
    .await;
    let pgw_addr = pgw.addrs.gateway.unwrap();
    // The remote's gateway address is not known yet: declared with a placeholder, then updated.
    let (status, v) = api(&primary, "POST", "/v1/apply", &mesh_doc(pgw_addr, "\"127.0.0.1:1\"")).await;
    assert_eq!(status, 200, "{v}");

    let app_p = weft_testkit::http_echo("api-in-primary").await;
    let server_p = sidecar(&primary, "default/api-p", Some("api-p-1"), "inbound: { listen: \"127.0.0.1:0\" }\n").await;

    // The remote cluster: every proxy follows the primary at the primary's gateway.
    let (status, v) = remote_token(&primary, "default/east-west-gateway", "remote").await;
    assert_eq!(status, 200, "{v}");
    let rgw = proxy_following(
        pgw_addr,
        v["token"].as_str().unwrap(),
        "default/east-west-gateway",
        None,
        "mode: gateway\ncluster: remote\ngateway: { listen: \"127.0.0.1:0\" }\n",
    )
    .await;
    let rgw_addr = rgw.addrs.gateway.unwrap();
    let (status, v) = api(&primary, "POST", "/v1/apply", &mesh_doc(pgw_addr, &format!("\"{rgw_addr}\""))).await;
    assert_eq!(status, 200, "{v}");

    // The remote server's token names no cluster: its Workload (cluster: remote) places it.
    let app_r = weft_testkit::http_echo("api-in-remote").await;
    let token = common::bootstrap_token(&primary, "default/api-r").await;
    let server_r =
        proxy_following(pgw_addr, &token, "default/api-r", Some("api-r-1"), "inbound: { listen: \"127.0.0.1:0\" }\n")
            .await;
    let docs = format!(
        "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: api-p }}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: api-p-1 }}\nspec: {{ service: api-p, address: 127.0.0.1, port: {}, sidecar: \"{}\" }}\n---\napiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: api-r }}\nspec: {{ export: true }}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: api-r-1 }}\nspec: {{ service: api-r, address: 127.0.0.1, port: {}, sidecar: \"{}\", cluster: remote }}\n",
        app_p.port(),
        server_p.addrs.inbound.unwrap(),
        app_r.port(),
        server_r.addrs.inbound.unwrap()
    );
    let (status, v) = api(&primary, "POST", "/v1/apply", &docs).await;
    assert_eq!(status, 200, "{v}");
    // Registered with the primary, labelled with its own cluster and the remote's network.
    let key = ("default".to_string(), "api-r".to_string());
    let cat = eventually("api-r in the primary's catalog", Duration::from_secs(10), || {
        let cat = primary.catalog.borrow().clone();
        let found = cat.services.contains_key(&key);
        async move { found.then_some(cat) }
    })
    .await;
    let r = &cat.services[&("default".to_string(), "api-r".to_string())].instances[0];
    assert_eq!((r.cluster.as_str(), r.network.as_str()), ("remote", "net-r"));

    // A client in each cluster.
    let upstream = |svc: &str| format!("outbound: {{ upstreams: [{{ listen: \"127.0.0.1:0\", service: {svc} }}] }}\n");
    let (status, v) = remote_token(&primary, "default/web-r", "remote").await;
    assert_eq!(status, 200, "{v}");
    let client_r =
        proxy_following(pgw_addr, v["token"].as_str().unwrap(), "default/web-r", None, &upstream("api-p")).await;
    let client_p = sidecar(&primary, "default/web-p", None, &upstream("api-r")).await;

    // The remote client reaches the primary's app through the primary's gateway, with mTLS.
    let body = call(client_r.addrs.upstreams[0], "the remote client calls api-p").await;
    assert_eq!(body["app"], "api-in-primary", "{body}");
    assert_eq!(body["peer_identity"], "spiffe://primary.example/ns/default/sa/web-r", "{body}");
    assert!(forwarded(&pgw, "api-p.default") >= 1.0, "{}", pgw.metrics_text());

    // The primary's client reaches the remote app through the remote's gateway, whose routes came
    // from the primary.
    let body = call(client_p.addrs.upstreams[0], "the primary client calls api-r").await;
    assert_eq!(body["app"], "api-in-remote", "{body}");
    assert_eq!(body["peer_identity"], "spiffe://primary.example/ns/default/sa/web-p", "{body}");
    assert!(forwarded(&rgw, "api-r.default") >= 1.0, "{}", rgw.metrics_text());

    // Every remote proxy (gateway, server, client) reached the control plane through the
    // primary's gateway: a certificate and a discovery stream each.
    assert!(forwarded(&pgw, "control.weft-system") >= 6.0, "{}", pgw.metrics_text());
    let (_, v) = api(&primary, "GET", "/v1/proxies", "").await;
    let synced = v["proxies"].as_array().map(|a| a.iter().filter(|p| p["status"] == "SYNCED").count()).unwrap_or(0);
    assert!(synced >= 6, "{v}");
    // Each proxy is shown where discovery placed it.
    let placed = |id: &str| {
        let p = v["proxies"].as_array().unwrap().iter().find(|p| p["proxy_id"] == id).cloned().unwrap_or_default();
        (p["cluster"].as_str().unwrap_or_default().to_string(), p["network"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(placed("default-web-r"), ("remote".into(), "net-r".into()), "by its token: {v}");
    assert_eq!(placed("default-api-r"), ("remote".into(), "net-r".into()), "by its Workload: {v}");
    assert_eq!(placed("default-web-p"), ("primary".into(), "net-p".into()), "{v}");

    // A third cluster, far (net-far), links to the primary: the exported api-r travels on the
    // link with its own cluster and network, and far's client reaches it through the remote
    // cluster's gateway (the link stream itself through the primary's gateway).
    let far = control("far", "far.example", "net-far").await;
    let primary_ref = &primary;
    let cred = eventually("the primary's credential names its gateway", WAIT, || async move {
        let (_, v) = api(primary_ref, "POST", "/v1/links/credential", "").await;
        let c = v["credential"].as_str()?.to_string();
        weft_api::link::Credential::decode(&c).ok().filter(|c| !c.gateways.is_empty()).map(|_| c)
    })
    .await;
    // Refused while far declares the primary as one of its own remote clusters.
    let far_mesh = "apiVersion: weft.io/v1alpha1\nkind: MeshConfig\nmetadata: { name: mesh }\nspec:\n  trustDomain: far.example\n  cluster: { name: far, network: net-far }\n  remoteClusters: [{ name: primary, network: net-far }]\n";
    assert_eq!(api(&far, "POST", "/v1/apply", far_mesh).await.0, 200);
    let (far_ref, cred_ref) = (&far, &cred);
    let v = eventually("the declaration is live", WAIT, || async move {
        let (status, v) = api(far_ref, "POST", "/v1/links", cred_ref).await;
        (status == 400).then_some(v)
    })
    .await;
    assert!(v["error"].as_str().unwrap().contains("one of this cluster's remote clusters"), "{v}");
    let far_mesh = far_mesh.replace("  remoteClusters: [{ name: primary, network: net-far }]\n", "");
    assert_eq!(api(&far, "POST", "/v1/apply", &far_mesh).await.0, 200);
    let v = eventually("far links to the primary", WAIT, || async move {
        let (status, v) = api(far_ref, "POST", "/v1/links", cred_ref).await;
        (status == 200).then_some(v)
    })
    .await;
    assert!(v["results"][0].as_str().unwrap().contains("primary"), "{v}");
    let client_f = sidecar(&far, "default/web-f", None, &upstream("api-r")).await;
    let via_rgw = forwarded(&rgw, "api-r.default");
    let body = call(client_f.addrs.upstreams[0], "far's client calls api-r in the remote cluster").await;
    assert_eq!(body["app"], "api-in-remote", "{body}");
    assert_eq!(body["peer_identity"], "spiffe://far.example/ns/default/sa/web-f", "{body}");
    assert!(forwarded(&rgw, "api-r.default") > via_rgw, "{}", rgw.metrics_text());
    let cat = far.catalog.borrow().clone();
    let imported = &cat.services[&("default".to_string(), "api-r".to_string())].instances[0];
    assert_eq!((imported.cluster.as_str(), imported.network.as_str()), ("remote", "net-r"));
    assert_eq!(imported.sidecar, rgw_addr, "far dials the remote cluster's gateway");
    drop((server_p, server_r, client_r, client_p, client_f, rgw));
}

/// A proxy of the remote cluster is given the primary's endpoints through the primary's gateway,
/// and its own cluster's directly; a proxy of the primary the reverse. Shown on the routes each
/// proxy received (its admin config), without traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_proxy_gets_the_endpoints_as_its_network_reaches_them() {
    weft_testkit::init_tracing();
    let primary = control("primary-v", "primary-v.example", "net-p").await;
    let doc = "apiVersion: weft.io/v1alpha1\nkind: MeshConfig\nmetadata: { name: mesh }\nspec:\n  trustDomain: primary-v.example\n  cluster: { name: primary-v, network: net-p, gateways: [\"127.0.0.2:15443\"] }\n  remoteClusters:\n  - { name: remote-v, network: net-r, gateways: [\"127.0.0.3:15443\"] }\n---\napiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: api }\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: { name: api-p }\nspec: { service: api, address: 10.0.0.1, port: 80, sidecar: \"10.0.0.1:15006\" }\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: { name: api-r }\nspec: { service: api, address: 10.1.0.1, port: 80, sidecar: \"10.1.0.1:15006\", cluster: remote-v }\n";
    let (status, v) = api(&primary, "POST", "/v1/apply", doc).await;
    assert_eq!(status, 200, "{v}");
    let (_, v) = remote_token(&primary, "default/web", "remote-v").await;
    let out = "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: api }] }\n";
    let remote_proxy = proxy_following(primary.grpc_addr, v["token"].as_str().unwrap(), "default/web", None, out).await;
    let primary_proxy = sidecar(&primary, "default/web", None, out).await;
    let proxies = |p: &Proxy| -> Vec<String> {
        let routes = p.ctx().routes.load();
        let mut v: Vec<String> = routes
            .services()
            .filter(|s| s.name == "api")
            .flat_map(|s| s.endpoints.iter().map(|e| format!("{} {}", e.address, e.proxy)))
            .collect();
        v.sort();
        v
    };
    let remote_ref = &remote_proxy;
    let got = eventually("the remote proxy has api", WAIT, || async move {
        let v = proxies(remote_ref);
        (v.len() == 2).then_some(v)
    })
    .await;
    assert_eq!(got, ["10.0.0.1:80 127.0.0.2:15443", "10.1.0.1:80 10.1.0.1:15006"]);
    let primary_ref = &primary_proxy;
    let got = eventually("the primary proxy has api", WAIT, || async move {
        let v = proxies(primary_ref);
        (v.len() == 2).then_some(v)
    })
    .await;
    assert_eq!(got, ["10.0.0.1:80 10.0.0.1:15006", "10.1.0.1:80 127.0.0.3:15443"]);
}

/// Opens a discovery stream as `token`'s proxy with `hello` and returns the error it is refused
/// with (`None`: accepted).
async fn hello_refused(cp: &ControlPlane, token: &str, hello: weft_api::pb::Hello) -> Option<tonic::Status> {
    use futures_util::StreamExt;
    let control = weft_api::proxy::Control::new(cp.grpc_addr, token.to_string());
    let channel = weft_proxy::control::connect(&control, 0).await.unwrap();
    let mut client = weft_api::pb::discovery_client::DiscoveryClient::new(channel);
    let msg = weft_api::pb::ProxyMessage { kind: Some(weft_api::pb::proxy_message::Kind::Hello(hello)) };
    let mut req = tonic::Request::new(futures_util::stream::iter(vec![msg]).chain(futures_util::stream::pending()));
    req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    match client.stream(req).await {
        Ok(mut s) => s.get_mut().message().await.err(),
        Err(e) => Some(e),
    }
}

/// A remote cluster's gateway whose token names no cluster (`weft token create` without
/// `--cluster`) is placed in the cluster its config names (`cluster: remote`, sent in its Hello),
/// not in the primary: it routes the remote cluster's SNI names to that cluster's endpoints, so a
/// primary sidecar reaches a remote workload through it. A Hello cluster that contradicts the
/// token's, or that the MeshConfig does not declare, is refused with the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_is_placed_in_the_cluster_its_config_names() {
    weft_testkit::init_tracing();
    let primary = control("primary-h", "primary-h.example", "net-p").await;
    let mesh = |rgw: &str| {
        format!(
            "apiVersion: weft.io/v1alpha1\nkind: MeshConfig\nmetadata: {{ name: mesh }}\nspec:\n  trustDomain: primary-h.example\n  cluster: {{ name: primary-h, network: net-p, gateways: [\"127.0.0.1:1\"] }}\n  remoteClusters:\n  - {{ name: remote-h, network: net-r, gateways: [\"{rgw}\"] }}\n"
        )
    };
    let (status, v) = api(&primary, "POST", "/v1/apply", &mesh("127.0.0.1:2")).await;
    assert_eq!(status, 200, "{v}");

    // The remote gateway: a token without --cluster, its config names its cluster.
    let gw_token = common::bootstrap_token(&primary, "default/east-west-gateway").await;
    let rgw = proxy_following(
        primary.grpc_addr,
        &gw_token,
        "default/east-west-gateway",
        None,
        "mode: gateway\ncluster: remote-h\ngateway: { listen: \"127.0.0.1:0\" }\n",
    )
    .await;
    let rgw_addr = rgw.addrs.gateway.unwrap();
    let (status, v) = api(&primary, "POST", "/v1/apply", &mesh(&rgw_addr.to_string())).await;
    assert_eq!(status, 200, "{v}");

    // A remote workload (its sidecar's token names no cluster either; its Workload places it).
    let app_r = weft_testkit::http_echo("api-in-remote-h").await;
    let server_r = sidecar(&primary, "default/api-r", Some("api-r-1"), "inbound: { listen: \"127.0.0.1:0\" }\n").await;
    let docs = format!(
        "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: api-r }}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: api-r-1 }}\nspec: {{ service: api-r, address: 127.0.0.1, port: {}, sidecar: \"{}\", cluster: remote-h }}\n",
        app_r.port(),
        server_r.addrs.inbound.unwrap()
    );
    let (status, v) = api(&primary, "POST", "/v1/apply", &docs).await;
    assert_eq!(status, 200, "{v}");

    // A primary client reaches it through the remote gateway.
    let client_p = sidecar(
        &primary,
        "default/web-p",
        None,
        "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: api-r }] }\n",
    )
    .await;
    let body = call(client_p.addrs.upstreams[0], "the primary client calls api-r through the remote gateway").await;
    assert_eq!(body["app"], "api-in-remote-h", "{body}");
    assert_eq!(body["peer_identity"], "spiffe://primary-h.example/ns/default/sa/web-p", "{body}");
    assert!(forwarded(&rgw, "api-r.default") >= 1.0, "{}", rgw.metrics_text());
    let (_, v) = api(&primary, "GET", "/v1/proxies", "").await;
    let gw = v["proxies"].as_array().unwrap().iter().find(|p| p["proxy_id"] == "default-east-west-gateway").cloned();
    let gw = gw.unwrap_or_default();
    assert_eq!(
        (gw["cluster"].as_str(), gw["network"].as_str(), gw["mode"].as_str()),
        (Some("remote-h"), Some("net-r"), Some("gateway")),
        "{v}"
    );

    // Refused: a Hello cluster contradicting the token's, and one the MeshConfig does not declare.
    let hello = |cluster: &str| weft_api::pb::Hello {
        proxy_id: "probe".into(),
        cluster: cluster.into(),
        mode: "gateway".into(),
        ..Default::default()
    };
    let (status, v) = remote_token(&primary, "default/probe", "remote-h").await;
    assert_eq!(status, 200, "{v}");
    let token = v["token"].as_str().unwrap();
    let e = hello_refused(&primary, token, hello("primary-h")).await.expect("refused");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("cluster \"primary-h\"") && e.message().contains("--cluster remote-h"), "{e}");
    assert!(hello_refused(&primary, token, hello("remote-h")).await.is_none(), "the token's own cluster");
    let token = common::bootstrap_token(&primary, "default/probe").await;
    let e = hello_refused(&primary, &token, hello("far-h")).await.expect("refused");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("\"far-h\"") && e.message().contains("remoteClusters"), "{e}");
    let e = hello_refused(&primary, &token, hello("Far_H")).await.expect("refused");
    assert!(e.message().contains("Hello.cluster"), "{e}");
    assert!(hello_refused(&primary, &token, hello("primary-h")).await.is_none(), "the primary's own cluster");
    drop((server_r, client_p, rgw));
}

/// The naming table `token`'s `weft dns` gets for `cluster` (empty: the token's), or its refusal.
async fn naming_table(
    cp: &ControlPlane,
    token: &str,
    cluster: &str,
) -> Result<weft_api::pb::NamingTable, tonic::Status> {
    naming_table_as(cp, token, token, cluster).await
}

/// As [`naming_table`], connecting (TLS) with `token` and presenting `auth` on the call.
async fn naming_table_as(
    cp: &ControlPlane,
    token: &str,
    auth: &str,
    cluster: &str,
) -> Result<weft_api::pb::NamingTable, tonic::Status> {
    let control = weft_api::proxy::Control::new(cp.grpc_addr, token.to_string());
    let channel = weft_proxy::control::connect(&control, 0).await.unwrap();
    let mut client = weft_api::pb::naming_client::NamingClient::new(channel);
    let mut req = tonic::Request::new(weft_api::pb::NamingRequest { cluster: cluster.into() });
    req.metadata_mut().insert("authorization", format!("Bearer {auth}").parse().unwrap());
    let mut tables = client.table(req).await?.into_inner();
    Ok(tables.message().await?.expect("a first table"))
}

/// A remote cluster's `weft dns` is sent the primary's catalog with the remote cluster as its
/// own (`Naming.Table`): every instance names its cluster, the primary's included. The cluster is
/// the token's, else the one asked for if the MeshConfig declares it; a token is needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_clusters_dns_gets_the_primarys_names_as_its_own_cluster() {
    weft_testkit::init_tracing();
    let primary = control("primary-n", "primary-n.example", "net-p").await;
    let doc = "apiVersion: weft.io/v1alpha1\nkind: MeshConfig\nmetadata: { name: mesh }\nspec:\n  trustDomain: primary-n.example\n  cluster: { name: primary-n, network: net-p, gateways: [\"127.0.0.2:15443\"] }\n  remoteClusters:\n  - { name: remote-n, network: net-r, gateways: [\"127.0.0.3:15443\"] }\n---\napiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: api }\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: { name: api-p }\nspec: { service: api, address: 10.0.0.1, port: 80 }\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: { name: api-r }\nspec: { service: api, address: 10.1.0.1, port: 80, cluster: remote-n }\n";
    let (status, v) = api(&primary, "POST", "/v1/apply", doc).await;
    assert_eq!(status, 200, "{v}");
    let (_, v) = remote_token(&primary, "default/dns", "remote-n").await;
    let token = v["token"].as_str().unwrap().to_string();
    let (primary_ref, token_ref) = (&primary, &token);
    let t = eventually("the remote's table has api", WAIT, || async move {
        let t = naming_table(primary_ref, token_ref, "").await.ok()?;
        t.services.iter().any(|s| s.name == "api" && s.instances.len() == 2).then_some(t)
    })
    .await;
    assert_eq!(t.cluster, "remote-n");
    let api_svc = t.services.iter().find(|s| s.name == "api").unwrap();
    let mut placed: Vec<String> = api_svc.instances.iter().map(|i| format!("{} {}", i.address, i.cluster)).collect();
    placed.sort();
    assert_eq!(placed, ["10.0.0.1 primary-n", "10.1.0.1 remote-n"]);
    // The DNS answers from it as weft DNS of the remote cluster.
    let table = weft_control::naming::dns_table_from(&t).unwrap();
    assert_eq!(table.cluster, "remote-n");

    // A token's cluster cannot be traded for another; an undeclared cluster is refused.
    let e = naming_table(&primary, &token, "primary-n").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("--cluster remote-n"), "{e}");
    let plain = common::bootstrap_token(&primary, "default/dns").await;
    let e = naming_table(&primary, &plain, "far").await.unwrap_err();
    assert!(e.message().contains("remoteClusters"), "{e}");
    assert_eq!(naming_table(&primary, &plain, "remote-n").await.unwrap().cluster, "remote-n");
    assert_eq!(naming_table(&primary, &plain, "").await.unwrap().cluster, "primary-n");
    let e = naming_table_as(&primary, &plain, "not-a-token", "").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");

    // One token holds at most --max-streams-per-token naming streams at once.
    let mut cfg = ControlConfig::new(tempdir("naming-limit"));
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    cfg.max_streams_per_token = 1;
    let limited = ControlPlane::start(cfg).await.expect("control plane");
    let token = common::bootstrap_token(&limited, "default/dns").await;
    let control = weft_api::proxy::Control::new(limited.grpc_addr, token.clone());
    let mut client =
        weft_api::pb::naming_client::NamingClient::new(weft_proxy::control::connect(&control, 0).await.unwrap());
    let mut req = tonic::Request::new(weft_api::pb::NamingRequest::default());
    req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let mut held = client.table(req).await.unwrap().into_inner();
    held.message().await.unwrap().expect("a first table");
    let e = naming_table(&limited, &token, "").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
    assert!(e.message().contains("naming table streams") && e.message().contains("--max-streams-per-token"), "{e}");
    drop(held);
}
