//! AuthorizationPolicies on real connections: a client sidecar → server sidecar pair over mTLS
//! with the server's `inbound.authorization` (the same JSON the control plane sends). DENY beats
//! ALLOW, an unmatched request is denied once an ALLOW exists, the defaults, AUDIT records and
//! does not block, CUSTOM fails closed without a provider client, gRPC gets PERMISSION_DENIED
//! and opaque TCP a reset; each denial counted by policy.

mod support;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_proxy::Proxy;
use weft_testkit::Pki;

/// A pair whose server sidecar runs `authorization(app TCP port)` (JSON of
/// `weft_api::authz::Authorization`), with its app on `app_http` (HTTP echo unless given).
async fn pair_with(
    authorization: impl FnOnce(u16) -> serde_json::Value,
    app_http: Option<std::net::SocketAddr>,
) -> Pair {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let app_http = match app_http {
        Some(a) => a,
        None => weft_testkit::http_echo("api").await,
    };
    let app_tcp = weft_testkit::tcp_echo().await;
    let mut cfg = server_config(app_http.port(), app_tcp.port(), "");
    let authorization = serde_json::from_value(authorization(app_tcp.port())).expect("authorization");
    cfg.inbound.as_mut().expect("inbound").authorization = Some(authorization);
    cfg.validate().expect("valid config");
    let server = Proxy::start(cfg, pki.store(SERVER.0, SERVER.1)).await.expect("server sidecar");
    let inbound = server.addrs.inbound.expect("inbound");
    let client = start_client(pki.store(CLIENT.0, CLIENT.1), app_http, app_tcp, inbound, &api_id(), "").await;
    let (http, tcp) = (client.addrs.upstreams[0], client.addrs.upstreams[1]);
    Pair { pki, client, server, http, tcp, app_http, app_tcp }
}

async fn pair_with_authz(authorization: serde_json::Value, app_http: Option<std::net::SocketAddr>) -> Pair {
    pair_with(|_| authorization, app_http).await
}

fn policy(name: &str, action: &str, rules: serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "name": name, "spec": { "action": action, "rules": rules } })
}

async fn status(p: &Pair, path: &str) -> u16 {
    weft_testkit::http1_get(p.http, path).await.expect("response").status().as_u16()
}

fn denied(p: &Pair, policy: &str) -> f64 {
    metric(&p.server.metrics_text(), &format!("weft_authz_denied_total{{policy=\"{policy}\"}}"))
}

#[tokio::test]
async fn deny_beats_allow_and_an_unmatched_request_is_denied_once_an_allow_exists() {
    let web = web_id();
    let p = pair_with_authz(
        serde_json::json!({ "policies": [
            policy("default/allow-web", "ALLOW", serde_json::json!([{
                "from": [{ "source": { "principals": [web] } }],
                "to": [{ "operation": { "paths": ["/public/*", "/admin/*"] } }],
            }])),
            policy("default/no-admin", "DENY", serde_json::json!([{ "to": [{ "operation": { "paths": ["/admin/*"] } }] }])),
        ]}),
        None,
    )
    .await;
    assert_eq!(status(&p, "/public/x").await, 200);
    let resp = weft_testkit::http1_get(p.http, "/admin/users").await.unwrap();
    assert_eq!(resp.status().as_u16(), 403, "DENY beats ALLOW");
    assert!(String::from_utf8_lossy(resp.body()).contains("RBAC: access denied"), "{resp:?}");
    assert_eq!(status(&p, "/elsewhere").await, 403, "no ALLOW rule matches");
    assert_eq!(denied(&p, "default/no-admin"), 1.0);
    assert_eq!(denied(&p, "no-allow-matched"), 1.0);
}

#[tokio::test]
async fn an_allow_for_another_caller_denies_this_one() {
    let p = pair_with_authz(
        serde_json::json!({ "policies": [policy("default/only-admin-ns", "ALLOW", serde_json::json!([{
            "from": [{ "source": { "namespaces": ["admin"] } }],
        }]))]}),
        None,
    )
    .await;
    assert_eq!(status(&p, "/").await, 403);
    assert_eq!(denied(&p, "no-allow-matched"), 1.0);
}

#[tokio::test]
async fn the_default_policy_decides_when_no_allow_applies() {
    let p = pair_with_authz(serde_json::json!({ "default": "deny" }), None).await;
    assert_eq!(status(&p, "/").await, 403);
    assert_eq!(denied(&p, "default-deny"), 1.0);
    // The caller is of the server's own trust domain.
    let p = pair_with_authz(serde_json::json!({ "default": "cluster-authenticated" }), None).await;
    assert_eq!(status(&p, "/").await, 200);
    // A trust domain other than the caller's is "another cluster".
    let p =
        pair_with_authz(serde_json::json!({ "default": "cluster-authenticated", "trustDomain": "other.local" }), None)
            .await;
    assert_eq!(status(&p, "/").await, 403);
    assert_eq!(denied(&p, "default-cluster-authenticated"), 1.0);
    // An ALLOW that applies replaces the default.
    let p = pair_with_authz(
        serde_json::json!({ "default": "deny", "policies": [policy("default/all", "ALLOW", serde_json::json!([{}]))] }),
        None,
    )
    .await;
    assert_eq!(status(&p, "/").await, 200);
}

#[tokio::test]
async fn audit_records_a_matching_request_and_does_not_block_it() {
    let p = pair_with_authz(
        serde_json::json!({ "policies": [policy("default/watch", "AUDIT", serde_json::json!([{
            "to": [{ "operation": { "methods": ["GET"], "paths": ["/watched"] } }],
        }]))]}),
        None,
    )
    .await;
    assert_eq!(status(&p, "/watched").await, 200);
    assert_eq!(status(&p, "/other").await, 200);
    let m = p.server.metrics_text();
    assert_eq!(metric(&m, "weft_authz_audit_total{policy=\"default/watch\"}"), 1.0, "{m}");
    assert_eq!(metric(&m, "weft_authz_denied_total"), 0.0, "{m}");
}

#[tokio::test]
async fn custom_fails_closed_while_no_provider_can_be_asked() {
    let p = pair_with_authz(
        serde_json::json!({ "policies": [
            { "name": "default/ext", "spec": { "action": "CUSTOM", "provider": { "name": "opa" },
              "rules": [{ "to": [{ "operation": { "paths": ["/ext/*"] } }] }] } },
        ]}),
        None,
    )
    .await;
    assert_eq!(status(&p, "/ext/x").await, 403);
    assert_eq!(status(&p, "/plain").await, 200, "CUSTOM decides only what it matches");
    assert_eq!(denied(&p, "default/ext"), 1.0);
}

#[tokio::test]
async fn a_denied_grpc_call_gets_permission_denied() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    weft_testkit::init_tracing();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("weft.Demo", tonic_health::ServingStatus::Serving).await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_app = l.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(l)),
    );
    let p = pair_with_authz(
        serde_json::json!({ "policies": [policy("default/no-watch", "DENY", serde_json::json!([{
            "to": [{ "operation": { "grpcMethods": ["grpc.health.v1.Health/Watch"] } }],
        }]))]}),
        Some(grpc_app),
    )
    .await;
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", p.http)).unwrap().connect().await.unwrap();
    let mut client = HealthClient::new(channel);
    client.check(HealthCheckRequest { service: "weft.Demo".into() }).await.expect("Check is allowed");
    let err = client.watch(HealthCheckRequest { service: "weft.Demo".into() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert_eq!(denied(&p, "default/no-watch"), 1.0);
}

/// Sends `hello` over the client sidecar's TCP port: the echo, or what a refused connection gives.
async fn tcp_exchange(p: &Pair) -> Result<Vec<u8>, std::io::Error> {
    let mut s = TcpStream::connect(p.tcp).await?;
    s.write_all(b"hello").await?;
    let mut buf = vec![0u8; 5];
    tokio::time::timeout(std::time::Duration::from_secs(20), s.read_exact(&mut buf))
        .await
        .expect("answered in time")?;
    Ok(buf)
}

#[tokio::test]
async fn opaque_tcp_is_checked_with_what_l4_knows_and_a_denied_connection_is_reset() {
    let p = pair_with_authz(serde_json::json!({ "policies": [] }), None).await;
    assert_eq!(tcp_exchange(&p).await.expect("echo"), b"hello");
    // A DENY naming the TCP port with an HTTP field: HTTP fields count as matched on L4.
    let deny = |tcp_port: u16| {
        serde_json::json!({ "policies": [policy("default/no-tcp", "DENY", serde_json::json!([{
            "from": [{ "source": { "namespaces": ["default"] } }],
            "to": [{ "operation": { "ports": [tcp_port], "methods": ["GET"] } }],
        }]))]})
    };
    let p = pair_with(deny, None).await;
    assert!(tcp_exchange(&p).await.is_err(), "the connection is refused, nothing echoed");
    weft_testkit::eventually("the denial is counted", std::time::Duration::from_secs(20), || async {
        (denied(&p, "default/no-tcp") == 1.0).then_some(())
    })
    .await;
    // HTTP on the other port is not affected by the TCP port's rule.
    assert_eq!(status(&p, "/").await, 200);
}
