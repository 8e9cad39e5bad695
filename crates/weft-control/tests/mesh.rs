//! End to end on 127.0.0.1: a control plane, sidecars that get their certificates and routes from
//! it, registration over the Consul-shaped HTTP API, and what happens when things go wrong.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use weft_control::{ControlConfig, ControlPlane};
use weft_proxy::Proxy;
use weft_testkit::{eventually, http1_get};

mod common;
use common::{api, bootstrap_token, query_a, sidecar, tempdir};

async fn control(dir: &std::path::Path, grpc: Option<SocketAddr>) -> ControlPlane {
    let mut cfg = ControlConfig::new(dir.to_path_buf());
    cfg.grpc = grpc.unwrap_or("127.0.0.1:0".parse().unwrap());
    cfg.api = "127.0.0.1:0".parse().unwrap();
    ControlPlane::start(cfg).await.expect("control plane")
}

/// The api app with its sidecar, and a web sidecar with an upstream listener for api.
struct Mesh {
    app: SocketAddr,
    server: Proxy,
    client: Proxy,
    upstream: SocketAddr,
}

async fn mesh(cp: &ControlPlane) -> Mesh {
    let app = weft_testkit::http_echo("api").await;
    // No local app ports: the control plane sends api-1's port once it is registered.
    let server = sidecar(cp, "default/api", Some("api-1"), "inbound: { listen: \"127.0.0.1:0\" }\n").await;
    let client =
        sidecar(cp, "default/web", None, "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: api }] }\n")
            .await;
    let upstream = client.addrs.upstreams[0];
    Mesh { app, server, client, upstream }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_over_http_and_the_proxy_routes_to_it() {
    weft_testkit::init_tracing();
    let dir = tempdir("register");
    let cp = control(&dir, None).await;
    let Mesh { app, server, client, upstream } = mesh(&cp).await;
    assert_eq!(client.certs().id().to_string(), "spiffe://cluster.local/ns/default/sa/web", "identity from the token");

    // Consul-shaped registration.
    let reg = format!(
        r#"{{"ID":"api-1","Name":"api","Address":"127.0.0.1","Port":{},"Tags":["v1"],"Connect":{{"SidecarService":{{"Port":{}}}}}}}"#,
        app.port(),
        server.addrs.inbound.unwrap().port()
    );
    let (status, v) = api(&cp, "PUT", "/v1/agent/service/register", &cp.admin_token, &reg).await;
    assert_eq!(status, 200, "{v}");
    let body =
        eventually("the client sidecar routes to the registered instance", Duration::from_secs(10), || async move {
            let r = http1_get(upstream, "/hello").await.ok()?;
            (r.status() == 200).then(|| r.into_body())
        })
        .await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["peer_identity"], "spiffe://cluster.local/ns/default/sa/web");
    // The server sidecar has no local app ports: it got api-1's from the control plane.
    assert_eq!(server.ctx().routes.load().inbound_ports(), vec![(app.port(), weft_api::proxy::Protocol::Auto)]);

    // Consul-shaped catalog reads.
    let (_, services) = api(&cp, "GET", "/v1/catalog/services", &cp.admin_token, "").await;
    assert_eq!(services["api"], serde_json::json!(["v1"]));

    // Every connected proxy acknowledged the latest config.
    let statuses = eventually("both proxies SYNCED", Duration::from_secs(10), || async {
        let (_, v) = api(&cp, "GET", "/v1/proxies", &cp.admin_token, "").await;
        let list = v["proxies"].as_array()?.clone();
        (list.len() == 2 && list.iter().all(|p| p["status"] == "SYNCED")).then_some(list)
    })
    .await;
    assert_eq!(statuses[0]["proxy_id"], "default-api");

    // Deregistration: the endpoint leaves the client's routes.
    let (status, _) = api(&cp, "PUT", "/v1/agent/service/deregister/api-1", &cp.admin_token, "").await;
    assert_eq!(status, 200);
    eventually("no endpoints after deregistration", Duration::from_secs(10), || async move {
        let r = http1_get(upstream, "/").await.ok()?;
        (r.status() == 503).then_some(())
    })
    .await;
    let server = &server;
    eventually("the server sidecar drops the app port", Duration::from_secs(10), || async move {
        server.ctx().routes.load().inbound_ports().is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_keep_serving_while_the_control_plane_is_down_and_resync() {
    weft_testkit::init_tracing();
    let dir = tempdir("down");
    let cp = control(&dir, None).await;
    let grpc = cp.grpc_addr;
    let Mesh { app, server, client, upstream } = mesh(&cp).await;
    let apply = |port: u16, inbound: u16| {
        format!(
            "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: api }}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: api-1 }}\nspec: {{ service: api, address: 127.0.0.1, port: {port}, sidecar: \"127.0.0.1:{inbound}\" }}\n"
        )
    };
    let (status, v) =
        api(&cp, "POST", "/v1/apply", &cp.admin_token, &apply(app.port(), server.addrs.inbound.unwrap().port())).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["results"][1], "Workload default/api-1 created");
    eventually("routes arrive", Duration::from_secs(10), || async move {
        (http1_get(upstream, "/").await.ok()?.status() == 200).then_some(())
    })
    .await;
    let admin_token = cp.admin_token.clone();
    cp.shutdown().await;
    // The control plane is gone: traffic keeps flowing on the last good config.
    eventually("the client notices the control plane is gone", Duration::from_secs(10), || {
        let m = client.metrics_text();
        async move { m.contains("weft_control_connected 0").then_some(()) }
    })
    .await;
    assert_eq!(http1_get(upstream, "/still").await.unwrap().status(), 200);

    // Back on the same data directory and port: state intact, proxies reconnect and resync.
    let cp = control(&dir, Some(grpc)).await;
    assert_eq!(cp.admin_token, admin_token, "same data directory, same admin token");
    let (status, v) = api(&cp, "GET", "/v1/resources/workload/default/api-1", &cp.admin_token, "").await;
    assert_eq!(status, 200, "{v}");
    eventually("proxies resync", Duration::from_secs(20), || async {
        let (_, v) = api(&cp, "GET", "/v1/proxies", &cp.admin_token, "").await;
        let list = v["proxies"].as_array()?.clone();
        (list.len() == 2 && list.iter().all(|p| p["status"] == "SYNCED")).then_some(())
    })
    .await;
    assert_eq!(http1_get(upstream, "/after").await.unwrap().status(), 200);
}

#[tokio::test]
async fn bad_input_is_refused_whole_and_changes_nothing() {
    weft_testkit::init_tracing();
    let dir = tempdir("bad");
    let cp = control(&dir, None).await;
    let t = cp.admin_token.clone();
    let before = cp.store.revision();
    let svc =
        "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: api }\nspec: { ports: [{ port: 8080 }] }\n";
    // A bad field in the second document: neither is written.
    let two = format!("{svc}---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: w }}\nspec: {{ service: api, address: 1.2.3.4, port: 0 }}\n");
    let (status, v) = api(&cp, "POST", "/v1/apply", &t, &two).await;
    assert_eq!(status, 400);
    assert_eq!(v["error"], "Workload default/w: spec.port: must be 1-65535");
    // A dangling reference.
    let dangling = "apiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: { name: w }\nspec: { service: nope, address: 1.2.3.4, port: 80 }\n";
    let (status, v) = api(&cp, "POST", "/v1/apply", &t, dangling).await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("no Service default/nope"), "{v}");
    for garbage in ["", ": : :", "{\"apiVersion\": 3}", "\u{0}\u{1}"] {
        let (status, _) = api(&cp, "POST", "/v1/apply", &t, garbage).await;
        assert_eq!(status, 400, "{garbage:?}");
    }
    // Two workloads at one address and port conflict.
    let two_at_once = format!("{svc}---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: a }}\nspec: {{ service: api, address: 1.2.3.4, port: 80 }}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: b }}\nspec: {{ service: api, address: 1.2.3.4, port: 80 }}\n");
    let (status, v) = api(&cp, "POST", "/v1/apply", &t, &two_at_once).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(
        v["error"],
        "Workload default/b: spec.address: 1.2.3.4:80 is already the address and port of Workload default/a; two workloads cannot share one (change one, or delete Workload default/a)"
    );
    assert_eq!(cp.store.revision(), before, "nothing was written");

    // Optimistic concurrency: a stale resourceVersion is refused with 409.
    let (status, v) = api(&cp, "POST", "/v1/apply", &t, svc).await;
    assert_eq!(status, 200, "{v}");
    let (_, obj) = api(&cp, "GET", "/v1/resources/service/default/api", &t, "").await;
    let version = obj["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let with_version = svc.replace("{ name: api }", &format!("{{ name: api, resourceVersion: \"{version}\" }}"));
    assert_eq!(api(&cp, "POST", "/v1/apply", &t, &with_version.replace("8080", "8081")).await.0, 200);
    let (status, v) = api(&cp, "POST", "/v1/apply", &t, &with_version.replace("8080", "8082")).await;
    assert_eq!(status, 409, "{v}");

    // Tokens: none, garbage, read-only writing, bootstrap reading.
    assert_eq!(api(&cp, "GET", "/v1/resources", "", "").await.0, 401);
    assert_eq!(api(&cp, "GET", "/v1/resources", "wft_00.00", "").await.0, 401);
    let (_, v) = api(&cp, "POST", "/v1/tokens", &t, r#"{"kind":"read"}"#).await;
    let read = v["token"].as_str().unwrap().to_string();
    assert_eq!(api(&cp, "GET", "/v1/resources", &read, "").await.0, 200);
    assert_eq!(api(&cp, "POST", "/v1/apply", &read, svc).await.0, 403);
    let boot = bootstrap_token(&cp, "default/web").await;
    assert_eq!(api(&cp, "GET", "/v1/resources", &boot, "").await.0, 403);
    let (status, v) = api(&cp, "POST", "/v1/tokens", &t, r#"{"kind":"bootstrap","identity":"nope"}"#).await;
    assert_eq!(status, 400, "{v}");
}

#[tokio::test]
async fn a_token_for_one_identity_cannot_get_a_certificate_for_another() {
    weft_testkit::init_tracing();
    let dir = tempdir("identity");
    let cp = control(&dir, None).await;
    let token = bootstrap_token(&cp, "default/web").await;
    // A CSR asking for `api` with a token for `web`.
    let api_id = weft_identity::SpiffeId::workload("cluster.local", "default", "api").unwrap();
    let key = weft_identity::LeafKey::generate(&api_id).unwrap();
    let control = weft_api::proxy::Control::new(cp.grpc_addr, token.clone());
    // The gRPC listener takes TLS only.
    let plain =
        tonic::transport::Endpoint::from_shared(format!("http://{}", cp.grpc_addr)).unwrap().connect().await.unwrap();
    let mut req = tonic::Request::new(weft_api::pb::SignRequest { csr_der: key.csr_der().unwrap() });
    req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let err = weft_api::pb::identity_client::IdentityClient::new(plain).sign(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unknown, "plaintext gets no answer: {err:?}");
    // Trust from a root file instead of the token's pin: the mesh's root works, another does not.
    let (_, ca) = api(&cp, "GET", "/v1/ca", &cp.admin_token, "").await;
    let root_file = dir.join("root.pem");
    std::fs::write(&root_file, ca["root_pem"].as_str().unwrap()).unwrap();
    let with_file = weft_api::proxy::Control { ca_file: Some(root_file.display().to_string()), ..control.clone() };
    weft_proxy::control::connect(&with_file, 0).await.expect("verified with the root file");
    let other = weft_identity::Authority::new_root("cluster.local", weft_identity::DEFAULT_CA_LIFETIME).unwrap();
    std::fs::write(&root_file, other.cert_pem()).unwrap();
    let err = weft_proxy::control::connect(&with_file, 0).await.unwrap_err().to_string();
    assert!(err.contains("TLS with the control plane"), "{err}");
    let channel = weft_proxy::control::connect(&control, 0).await.unwrap();
    let mut client = weft_api::pb::identity_client::IdentityClient::new(channel);
    let mut req = tonic::Request::new(weft_api::pb::SignRequest { csr_der: key.csr_der().unwrap() });
    req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let err = client.sign(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    // An admin token is not a proxy's credential either.
    let mut req = tonic::Request::new(weft_api::pb::SignRequest { csr_der: key.csr_der().unwrap() });
    req.metadata_mut().insert("authorization", format!("Bearer {}", cp.admin_token).parse().unwrap());
    assert_eq!(client.sign(req).await.unwrap_err().code(), tonic::Code::PermissionDenied);
    // No token at all.
    let req = tonic::Request::new(weft_api::pb::SignRequest { csr_der: key.csr_der().unwrap() });
    assert_eq!(client.sign(req).await.unwrap_err().code(), tonic::Code::Unauthenticated);
    // The right token, an unnamed CSR: the certificate names the token's identity.
    let (leaf, _) = weft_proxy::control::sign(&control, 0).await.unwrap();
    assert_eq!(leaf.id().to_string(), "spiffe://cluster.local/ns/default/sa/web");
}

/// A Workload with one health check, through the API.
async fn register_checked(cp: &ControlPlane, app: SocketAddr, sidecar: SocketAddr, check: &str) {
    let yaml = format!(
        "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: api }}\nspec: {{ tags: [primary] }}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: api-1 }}\nspec:\n  service: api\n  address: 127.0.0.1\n  port: {}\n  sidecar: \"{sidecar}\"\n  checks: [{check}]\n",
        app.port()
    );
    let (status, v) = api(cp, "POST", "/v1/apply", &cp.admin_token, &yaml).await;
    assert_eq!(status, 200, "{v}");
}

/// Something a health check probes, that the test can make healthy or not: a TCP port that is
/// open or closed, an HTTP `/health` that answers 200 or 503, a grpc.health.v1 server that says
/// SERVING or NOT_SERVING.
enum Probed {
    Tcp(SocketAddr, Option<tokio::net::TcpListener>),
    Http(SocketAddr, Arc<AtomicBool>),
    Grpc(SocketAddr, tonic_health::server::HealthReporter),
}

impl Probed {
    async fn start(kind: &str) -> Probed {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        match kind {
            "tcp" => Probed::Tcp(addr, Some(l)),
            "http" => {
                let healthy = Arc::new(AtomicBool::new(true));
                let flag = healthy.clone();
                tokio::spawn(async move {
                    while let Ok((mut s, _)) = l.accept().await {
                        let status = if flag.load(Ordering::SeqCst) { "200 OK" } else { "503 Service Unavailable" };
                        tokio::spawn(async move {
                            use tokio::io::{AsyncReadExt, AsyncWriteExt};
                            let mut buf = [0u8; 2048];
                            let _ = s.read(&mut buf).await;
                            let resp = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                            let _ = s.write_all(resp.as_bytes()).await;
                        });
                    }
                });
                Probed::Http(addr, healthy)
            }
            "grpc" => {
                let (reporter, health) = tonic_health::server::health_reporter();
                tokio::spawn(
                    tonic::transport::Server::builder()
                        .add_service(health)
                        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(l)),
                );
                Probed::Grpc(addr, reporter)
            }
            _ => unreachable!("unknown probe kind {kind}"),
        }
    }

    /// The check, as it goes in the Workload.
    fn check(&self) -> String {
        let timing = "interval: 100ms, timeout: 500ms";
        match self {
            Probed::Tcp(a, _) => format!("{{ name: tcp, tcp: \"{a}\", {timing} }}"),
            Probed::Http(a, _) => format!("{{ name: http, http: \"http://{a}/health\", {timing} }}"),
            Probed::Grpc(a, _) => format!("{{ name: grpc, grpc: \"{a}\", {timing} }}"),
        }
    }

    async fn set_healthy(&mut self, healthy: bool) {
        match self {
            Probed::Tcp(addr, l) if healthy => *l = Some(tokio::net::TcpListener::bind(*addr).await.unwrap()),
            Probed::Tcp(_, l) => *l = None,
            Probed::Http(_, flag) => flag.store(healthy, Ordering::SeqCst),
            // The check asks about the whole server (service "").
            Probed::Grpc(_, r) => {
                use tonic_health::ServingStatus::{NotServing, Serving};
                r.set_service_status("", if healthy { Serving } else { NotServing }).await
            }
        }
    }
}

/// A workload with a `kind` check: routed while it passes, out of the client's load balancer
/// (503 from its sidecar, "critical" in the API) while it fails, back when it recovers.
async fn check_flips_the_endpoint(kind: &str) {
    weft_testkit::init_tracing();
    let dir = tempdir(&format!("health-{kind}"));
    let cp = control(&dir, None).await;
    let Mesh { app, server, client: _client, upstream } = mesh(&cp).await;
    let mut probed = Probed::start(kind).await;
    register_checked(&cp, app, server.addrs.inbound.unwrap(), &probed.check()).await;
    let status = |want: u16| async move {
        eventually(&format!("{kind}: client sees {want}"), Duration::from_secs(15), || async move {
            (http1_get(upstream, "/").await.ok()?.status() == want).then_some(())
        })
        .await
    };
    status(200).await;
    probed.set_healthy(false).await;
    status(503).await;
    let (_, v) = api(&cp, "GET", "/v1/health/workload/default/api-1", &cp.admin_token, "").await;
    assert_eq!(v["status"], "critical", "{kind}: {v}");
    probed.set_healthy(true).await;
    status(200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_tcp_check_removes_the_endpoint_and_recovery_restores_it() {
    check_flips_the_endpoint("tcp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_http_check_removes_the_endpoint_and_recovery_restores_it() {
    check_flips_the_endpoint("http").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_grpc_check_removes_the_endpoint_and_recovery_restores_it() {
    check_flips_the_endpoint("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_check_passes_when_reported_and_expires_when_silent() {
    weft_testkit::init_tracing();
    let dir = tempdir("ttl");
    let cp = control(&dir, None).await;
    let app = weft_testkit::http_echo("api").await;
    register_checked(&cp, app, "127.0.0.1:1".parse().unwrap(), "{ name: alive, ttl: 1s }").await;
    let cp = &cp;
    let healthy = |want: bool| async move {
        eventually(&format!("catalog healthy={want}"), Duration::from_secs(15), || async move {
            let (_, v) = api(cp, "GET", "/v1/catalog", &cp.admin_token, "").await;
            (v["services"][0]["instances"][0]["healthy"] == want).then_some(())
        })
        .await
    };
    healthy(false).await;
    // The workload reports with its own bootstrap token; another identity's token may not.
    let other = bootstrap_token(cp, "default/web").await;
    let (status, v) = api(cp, "PUT", "/v1/agent/check/pass/default/api-1/alive", &other, "").await;
    assert_eq!(status, 403, "{v}");
    let own = bootstrap_token(cp, "default/api").await;
    let (status, v) = api(cp, "PUT", "/v1/agent/check/pass/default/api-1/alive", &own, "all good").await;
    assert_eq!(status, 200, "{v}");
    healthy(true).await;
    // Silent for longer than the TTL: critical again.
    healthy(false).await;
    let (status, _) = api(cp, "PUT", "/v1/agent/check/pass/default/api-1/nope", &cp.admin_token, "").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn dns_answers_registered_services() {
    weft_testkit::init_tracing();
    let dir = tempdir("dns");
    let mut cfg = ControlConfig::new(dir.clone());
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    cfg.dns = Some("127.0.0.1:0".parse().unwrap());
    let cp = ControlPlane::start(cfg).await.unwrap();
    let dns = cp.dns_addr.unwrap();
    let app = weft_testkit::http_echo("api").await;
    register_checked(&cp, app, "127.0.0.1:1".parse().unwrap(), "{ name: tcp, tcp: \"127.0.0.1:1\", interval: 1h }")
        .await;
    // The check fails (nothing on port 1): no address yet. Then a passing registration.
    let reg = r#"{"ID":"api-2","Name":"api","Address":"127.0.0.7","Port":8080,"Tags":["v2"]}"#;
    assert_eq!(api(&cp, "PUT", "/v1/agent/service/register", &cp.admin_token, reg).await.0, 200);
    for name in
        ["api.default.svc.cluster.local.", "api.service.consul.", "api.service.local.consul.", "v2.api.service.consul."]
    {
        let addrs = eventually(name, Duration::from_secs(10), || async move {
            let a = query_a(dns, name).await;
            (!a.is_empty()).then_some(a)
        })
        .await;
        assert_eq!(addrs, vec!["127.0.0.7".to_string()], "{name}: only the healthy instance");
    }
    assert!(query_a(dns, "nope.service.consul.").await.is_empty());
}

#[tokio::test]
async fn script_checks_are_opt_in_and_the_trust_domain_is_fixed() {
    weft_testkit::init_tracing();
    let dir = tempdir("admit");
    let cp = control(&dir, None).await;
    let t = cp.admin_token.clone();
    let with_script = "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: api }\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: { name: w }\nspec: { service: api, address: 1.2.3.4, port: 80, checks: [{ name: s, script: [\"/bin/true\"] }] }\n";
    let (status, v) = api(&cp, "POST", "/v1/apply", &t, with_script).await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("--enable-script-checks"), "{v}");
    let docker = r#"{"ID":"d","Name":"api","Address":"1.2.3.4","Port":80,"Check":{"DockerContainerID":"c1","Args":["/bin/true"],"Interval":"10s"}}"#;
    assert_eq!(api(&cp, "PUT", "/v1/agent/service/register", &t, docker).await.0, 400);
    let mesh =
        "apiVersion: weft.io/v1alpha1\nkind: MeshConfig\nmetadata: { name: mesh }\nspec: { trustDomain: other.org }\n";
    let (status, v) = api(&cp, "POST", "/v1/apply", &t, mesh).await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("cannot change after first start"), "{v}");
}

/// Consul's "services from a configuration file": the registry file's workloads reach the catalog,
/// a changed file is picked up, a broken one keeps its last good contents, and the file is held
/// to the API's rules (no script checks unless enabled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_file_entries_are_served_and_held_to_the_api_rules() {
    weft_testkit::init_tracing();
    let dir = tempdir("regfile");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("registry.yaml");
    let entries = |port: u16, extra: &str| {
        format!(
            "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: legacy }}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: legacy-vm }}\nspec: {{ service: legacy, address: 10.0.0.7, port: {port}{extra} }}\n"
        )
    };
    let start = |file: &std::path::Path| {
        let mut cfg = ControlConfig::new(dir.join("data"));
        cfg.grpc = "127.0.0.1:0".parse().unwrap();
        cfg.api = "127.0.0.1:0".parse().unwrap();
        cfg.registry_file = Some(file.to_path_buf());
        ControlPlane::start(cfg)
    };

    std::fs::write(&file, entries(8080, ", checks: [{ name: s, script: [/bin/true] }]")).unwrap();
    let err = start(&file).await.err().expect("a script check in the file is refused");
    assert!(err.to_string().contains("enable-script-checks"), "{err}");

    std::fs::write(&file, entries(8080, "")).unwrap();
    let cp = start(&file).await.expect("control plane");
    let port = |cp: &ControlPlane| {
        cp.catalog.borrow().services.values().flat_map(|s| &s.instances).map(|i| i.address.port()).next()
    };
    assert_eq!(port(&cp), Some(8080));
    // A change is picked up (the file is polled every second); mtime must move.
    std::fs::write(&file, entries(9090, "")).unwrap();
    let cp = &cp;
    eventually("file change reaches the catalog", Duration::from_secs(10), || async move {
        (port(cp) == Some(9090)).then_some(())
    })
    .await;
    // A broken file is reported and its last good contents kept.
    std::fs::write(&file, "kind: Workload\nspec: [").unwrap();
    let (_, v) = api(cp, "GET", "/v1/catalog", &cp.admin_token, "").await;
    assert_eq!(v["services"][0]["name"], "legacy", "{v}");
    assert_eq!(port(cp), Some(9090));
}

/// `allowConnect` on a Service port travels to the server sidecar: CONNECT to the app is refused
/// (`403 connect-not-allowed`) until the port allows it, and then tunnelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_connect_on_a_service_port_reaches_the_server_sidecar() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    weft_testkit::init_tracing();
    let dir = tempdir("connect");
    let cp = control(&dir, None).await;
    let Mesh { app, server, client: _client, upstream } = mesh(&cp).await;
    let apply = |allow: bool| {
        format!(
            "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: api }}\nspec: {{ ports: [{{ port: {port}, allowConnect: {allow} }}] }}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: api-1 }}\nspec: {{ service: api, address: 127.0.0.1, port: {port}, sidecar: \"127.0.0.1:{inbound}\" }}\n",
            port = app.port(),
            inbound = server.addrs.inbound.unwrap().port()
        )
    };
    let connect = || async move {
        let mut s = tokio::net::TcpStream::connect(upstream).await.ok()?;
        s.write_all(b"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n").await.ok()?;
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            (s.read(&mut b).await.ok()? == 1).then_some(())?;
            head.push(b[0]);
        }
        Some((String::from_utf8_lossy(&head).into_owned(), s))
    };
    let (status, v) = api(&cp, "POST", "/v1/apply", &cp.admin_token, &apply(false)).await;
    assert_eq!(status, 200, "{v}");
    eventually("CONNECT refused by the server sidecar", Duration::from_secs(10), || async move {
        let (head, _) = connect().await?;
        (head.starts_with("HTTP/1.1 403") && head.contains("connect-not-allowed")).then_some(())
    })
    .await;
    let (status, v) = api(&cp, "POST", "/v1/apply", &cp.admin_token, &apply(true)).await;
    assert_eq!(status, 200, "{v}");
    let mut tunnel = eventually("CONNECT allowed", Duration::from_secs(10), || async move {
        let (head, s) = connect().await?;
        head.starts_with("HTTP/1.1 200").then_some(s)
    })
    .await;
    tunnel.write_all(b"through").await.unwrap();
    let mut back = [0u8; 7];
    tunnel.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"through");
}
