//! AuthorizationPolicy end to end on 127.0.0.1: a control plane, a client sidecar (`web`) and a
//! server sidecar (`api`) in front of an HTTP echo. Policies applied through the API reach the
//! server's proxy over the discovery stream and decide real requests; the MeshConfig default and
//! its per-namespace override apply where no ALLOW does; an HTTP rule on an opaque TCP port is
//! refused at apply, naming the field.

use std::net::SocketAddr;
use std::time::Duration;
use weft_control::{ControlConfig, ControlPlane};
use weft_proxy::Proxy;
use weft_testkit::{eventually, http1_get};

mod common;
use common::{admin_api, metric, sidecar, tempdir};

struct Mesh {
    cp: ControlPlane,
    server: Proxy,
    _client: Proxy,
    upstream: SocketAddr,
    tcp_port: u16,
}

/// `with_tcp`: the Service also declares an opaque TCP port.
async fn mesh(name: &str, with_tcp: bool) -> Mesh {
    weft_testkit::init_tracing();
    let dir = tempdir(name);
    let mut cfg = ControlConfig::new(dir);
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    let cp = ControlPlane::start(cfg).await.expect("control plane");
    let app = weft_testkit::http_echo("api").await;
    let tcp_port = weft_testkit::tcp_echo().await.port();
    let server = sidecar(&cp, "default/api", Some("api-1"), "inbound: { listen: \"127.0.0.1:0\" }\n").await;
    let client =
        sidecar(&cp, "default/web", None, "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: api }] }\n")
            .await;
    let resources = format!(
        "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: api }}\nspec: {{ ports: [{{ port: {}, protocol: http1 }}{tcp}] }}\n---\n\
         apiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: api-1 }}\nspec: {{ service: api, address: 127.0.0.1, port: {}, sidecar: \"{}\" }}\n",
        app.port(),
        app.port(),
        server.addrs.inbound.unwrap(),
        tcp = if with_tcp { format!(", {{ port: {tcp_port}, protocol: tcp }}") } else { String::new() },
    );
    let (status, v) = admin_api(&cp, "POST", "/v1/apply", &resources).await;
    assert_eq!(status, 200, "{v}");
    let upstream = client.addrs.upstreams[0];
    eventually("the client routes to api", Duration::from_secs(10), || async move {
        (http1_get(upstream, "/ready").await.ok()?.status() == 200).then_some(())
    })
    .await;
    Mesh { cp, server, _client: client, upstream, tcp_port }
}

impl Mesh {
    async fn apply(&self, doc: &str) -> (u16, serde_json::Value) {
        admin_api(&self.cp, "POST", "/v1/apply", doc).await
    }

    /// Waits until `path` answers `want` through the mesh.
    async fn until(&self, path: &'static str, want: u16) {
        let upstream = self.upstream;
        eventually(&format!("{path} answers {want}"), Duration::from_secs(10), || async move {
            (http1_get(upstream, path).await.ok()?.status().as_u16() == want).then_some(())
        })
        .await;
    }
}

fn policy(name: &str, spec: &str) -> String {
    format!("apiVersion: weft.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{ name: {name} }}\nspec: {spec}\n")
}

#[tokio::test]
async fn policies_applied_through_the_api_decide_requests_at_the_server_proxy() {
    let m = mesh("authz-policies", false).await;
    m.until("/admin/x", 200).await;
    let (status, v) = m
        .apply(&policy(
            "no-admin",
            "{ targetRef: { kind: Service, name: api }, action: DENY, rules: [{ to: [{ operation: { paths: [\"/admin/*\"] } }] }] }",
        ))
        .await;
    assert_eq!(status, 200, "{v}");
    m.until("/admin/x", 403).await;
    m.until("/public", 200).await;
    // An ALLOW for another namespace's callers: web is now refused everywhere.
    let (status, v) = m.apply(&policy("from-ops", "{ rules: [{ from: [{ source: { namespaces: [ops] } }] }] }")).await;
    assert_eq!(status, 200, "{v}");
    m.until("/public", 403).await;
    // Allowing web by principal (Consul's `web → api: allow`) lets it back in; DENY still wins.
    let (status, v) = m
        .apply(&policy(
            "web-to-api",
            "{ targetRef: { kind: Service, name: api }, rules: [{ from: [{ source: { principals: [\"*/ns/default/sa/web\"] } }] }] }",
        ))
        .await;
    assert_eq!(status, 200, "{v}");
    m.until("/public", 200).await;
    m.until("/admin/x", 403).await;
    // `weft describe service api` / `workload api-1` show what applies.
    for path in ["/v1/resources/Service/default/api", "/v1/resources/Workload/default/api-1"] {
        let (_, v) = admin_api(&m.cp, "GET", path, "").await;
        let a = &v["status"]["authorization"];
        assert_eq!(a["default"], "all-unauthenticated", "{v}");
        let names: Vec<&str> = a["policies"].as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
        assert_eq!(names, ["default/from-ops", "default/no-admin", "default/web-to-api"], "{v}");
    }
    let text = m.server.metrics_text();
    assert!(metric(&text, "weft_authz_denied_total", &["policy=\"default/no-admin\""]) >= 1.0, "{text}");
    assert!(metric(&text, "weft_authz_denied_total", &["policy=\"no-allow-matched\""]) >= 1.0, "{text}");
}

#[tokio::test]
async fn the_mesh_default_and_a_namespace_default_apply_where_no_allow_does() {
    let m = mesh("authz-defaults", false).await;
    let mc = |authorization: &str| {
        format!("apiVersion: weft.io/v1alpha1\nkind: MeshConfig\nmetadata: {{ name: mesh }}\nspec: {{ authorization: {authorization} }}\n")
    };
    let (status, v) = m.apply(&mc("{ default: deny }")).await;
    assert_eq!(status, 200, "{v}");
    m.until("/", 403).await;
    let (status, v) = m.apply(&mc("{ default: deny, namespaces: { default: all-authenticated } }")).await;
    assert_eq!(status, 200, "{v}");
    m.until("/", 200).await;
    let (status, v) = m.apply(&mc("{ default: all-authenticated, namespaces: { default: deny } }")).await;
    assert_eq!(status, 200, "{v}");
    m.until("/", 403).await;
    let text = m.server.metrics_text();
    assert!(metric(&text, "weft_authz_denied_total", &["policy=\"default-deny\""]) >= 1.0, "{text}");
    // A mesh-wide ALLOW (weft-system) replaces the default.
    let doc = "apiVersion: weft.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: { name: all, namespace: weft-system }\nspec: { rules: [{}] }\n";
    let (status, v) = m.apply(doc).await;
    assert_eq!(status, 200, "{v}");
    m.until("/", 200).await;
}

#[tokio::test]
async fn an_http_rule_on_an_opaque_tcp_port_is_refused_when_applied() {
    let m = mesh("authz-l4", true).await;
    let (status, v) = m
        .apply(&policy(
            "bad",
            "{ targetRef: { kind: Service, name: api }, rules: [{ to: [{ operation: { methods: [GET] } }] }] }",
        ))
        .await;
    assert_eq!(status, 400, "{v}");
    let e = v.to_string();
    assert!(e.contains("spec.rules[0].to[0].operation.methods") && e.contains(&m.tcp_port.to_string()), "{e}");
    // The same rule kept to the HTTP port is accepted.
    let (_, svc) = admin_api(&m.cp, "GET", "/v1/resources/Service/default/api", "").await;
    let app_port = svc["spec"]["ports"][0]["port"].as_u64().unwrap();
    let (status, v) = m
        .apply(&policy(
            "good",
            &format!("{{ targetRef: {{ kind: Service, name: api }}, rules: [{{ to: [{{ operation: {{ ports: [{app_port}], methods: [GET] }} }}] }}] }}"),
        ))
        .await;
    assert_eq!(status, 200, "{v}");
}

/// An HTTP authorizer (Envoy's HTTP `ext_authz` service semantics): 200 with `x-user: ann` for
/// a check of a path under `/guarded/ok`, else 403 `no` with `x-why: policy`.
async fn authorizer() -> SocketAddr {
    use http_body_util::Full;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let ok = req.uri().path().starts_with("/guarded/ok");
                    let r = http::Response::builder()
                        .status(if ok { 200 } else { 403 })
                        .header(if ok { "x-user" } else { "x-why" }, if ok { "ann" } else { "policy" })
                        .body(Full::new(bytes::Bytes::from(if ok { "" } else { "no" })))
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(r)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// CUSTOM end to end: MeshConfig declares an HTTP authorizer, a CUSTOM policy sends the paths it
/// matches to it, and the server's sidecar forwards what it allows and returns its denial
/// (status, headers, body) as is (the headers an allow adds: `weft-proxy` tests/ext_authz.rs).
/// Paths the policy does not match never reach the authorizer. With the authorizer gone, the
/// matched paths fail closed.
#[tokio::test]
async fn a_custom_policy_asks_the_external_authorizer_through_the_sidecar() {
    let m = mesh("authz-custom", false).await;
    let authz = authorizer().await;
    let ask = policy(
        "ask-authz",
        "{ targetRef: { kind: Service, name: api }, action: CUSTOM, provider: { name: authz }, rules: [{ to: [{ operation: { paths: [\"/guarded/*\"] } }] }] }",
    );
    // A provider MeshConfig does not declare: refused, naming the field and the fix.
    let (status, v) = m.apply(&ask).await;
    assert_eq!(status, 400, "{v}");
    let e = v.to_string();
    assert!(e.contains("spec.provider.name") && e.contains("MeshConfig extensionProviders"), "{e}");
    let (status, mut mesh) = admin_api(&m.cp, "GET", "/v1/resources/MeshConfig/default/mesh", "").await;
    assert_eq!(status, 200, "{mesh}");
    mesh["spec"]["extensionProviders"] = serde_json::json!([
        { "name": "authz", "kind": "http", "address": authz.to_string(), "headersToUpstreamOnAllow": ["x-user"] }
    ]);
    let doc = serde_json::json!({ "apiVersion": mesh["apiVersion"], "kind": "MeshConfig", "metadata": { "name": "mesh" }, "spec": mesh["spec"] });
    let (status, v) = m.apply(&doc.to_string()).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = m.apply(&ask).await;
    assert_eq!(status, 200, "{v}");
    m.until("/guarded/no", 403).await;
    let r = http1_get(m.upstream, "/guarded/no").await.unwrap();
    assert_eq!(r.body().as_ref(), b"no", "the authorizer's own denial reaches the caller");
    assert_eq!(r.headers().get("x-why").map(|v| v.as_bytes()), Some(&b"policy"[..]));
    let r = http1_get(m.upstream, "/guarded/ok").await.unwrap();
    assert_eq!(r.status(), 200);
    let r = http1_get(m.upstream, "/public").await.unwrap();
    assert_eq!(r.status(), 200, "a path no CUSTOM rule matches is not sent to the authorizer");
    // No authorizer: the provider removed from MeshConfig, CUSTOM fails closed.
    mesh["spec"]["extensionProviders"] = serde_json::json!([]);
    let doc = serde_json::json!({ "apiVersion": mesh["apiVersion"], "kind": "MeshConfig", "metadata": { "name": "mesh" }, "spec": mesh["spec"] });
    let (status, v) = m.apply(&doc.to_string()).await;
    assert_eq!(status, 200, "{v}");
    m.until("/guarded/ok", 403).await;
    m.until("/public", 200).await;
    let text = m.server.metrics_text();
    assert!(metric(&text, "weft_authz_denied_total", &["policy=\"default/ask-authz\""]) >= 1.0, "{text}");
}

/// A RequestAuthentication applied on its own through the API reaches the server's sidecar: a
/// request without a token gets 401 once `requireToken` is set, and 200 again once the policy
/// is deleted. (The catalog is published only when a compared part changes; this failed when
/// RequestAuthentication was not compared.)
#[tokio::test]
async fn a_request_authentication_applied_alone_reaches_the_server_proxy() {
    let m = mesh("authz-jwt-alone", false).await;
    m.until("/public", 200).await;
    let jwks = r#"{\"keys\":[{\"kty\":\"oct\",\"kid\":\"k1\",\"alg\":\"HS256\",\"k\":\"c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0zMmJ5dGVz\"}]}"#;
    let doc = format!(
        "apiVersion: weft.io/v1alpha1\nkind: RequestAuthentication\nmetadata: {{ name: jwt }}\nspec: {{ targetRef: {{ kind: Service, name: api }}, requireToken: true, jwtRules: [{{ issuer: \"https://idp.test\", allowHmac: true, jwks: \"{jwks}\" }}] }}\n"
    );
    let (status, v) = m.apply(&doc).await;
    assert_eq!(status, 200, "{v}");
    m.until("/public", 401).await;
    // `weft describe service api` / `workload api-1` show it, and the mTLS mode per port with
    // the PeerAuthentication (and its level) that set it.
    let pa = "apiVersion: weft.io/v1alpha1\nkind: PeerAuthentication\nmetadata: { name: migrate }\nspec: { targetRef: { kind: Service, name: api }, mtls: { mode: PERMISSIVE } }\n";
    let (status, v) = m.apply(pa).await;
    assert_eq!(status, 200, "{v}");
    for path in ["/v1/resources/Service/default/api", "/v1/resources/Workload/default/api-1"] {
        let (_, v) = admin_api(&m.cp, "GET", path, "").await;
        assert_eq!(v["status"]["requestAuthentications"], serde_json::json!([{ "name": "default/jwt" }]), "{v}");
        let mtls = &v["status"]["mtls"];
        assert_eq!(mtls.as_array().map(Vec::len), Some(1), "{v}");
        assert_eq!(mtls[0]["workload"], "api-1", "{v}");
        assert_eq!(mtls[0]["mode"], "PERMISSIVE", "{v}");
        assert_eq!(mtls[0]["setBy"], "PeerAuthentication default/migrate (service level)", "{v}");
    }
    let (status, v) = admin_api(&m.cp, "DELETE", "/v1/resources/RequestAuthentication/default/jwt", "").await;
    assert_eq!(status, 200, "{v}");
    m.until("/public", 200).await;
}
