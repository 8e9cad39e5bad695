//! MeshConfig `extensionProviders` end to end on 127.0.0.1: applied to a real control plane,
//! sent over the discovery stream to a real sidecar, shown in its `/config_dump`, and used by its
//! CUSTOM authorization entry point (`weft_proxy::authz::custom::check`) against a real HTTP
//! authorizer. A bad provider is refused at apply, naming the field; removing the providers
//! reaches the proxy too (a check then denies: fail closed).

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;
use weft_control::{ControlConfig, ControlPlane};
use weft_proxy::authz::custom::{check, CheckContext, Decision};
use weft_proxy::Proxy;
use weft_testkit::{eventually, http1_get};

mod common;
use common::{admin_api, sidecar, tempdir};

/// An HTTP authorizer: 200 with `x-user: ann` when the check carries `x-allow: yes`, else 403.
async fn authorizer() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let ok = req.headers().get("x-allow").is_some_and(|v| v == "yes");
                    let r = http::Response::builder()
                        .status(if ok { 200 } else { 403 })
                        .header("x-user", "ann")
                        .body(Full::new(Bytes::from(if ok { "" } else { "no" })))
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(r)
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    addr
}

/// Applies the stored MeshConfig with `providers` as its `extensionProviders`.
async fn set_providers(cp: &ControlPlane, providers: serde_json::Value) -> (u16, serde_json::Value) {
    let (status, mut mesh) = admin_api(cp, "GET", "/v1/resources/MeshConfig/default/mesh", "").await;
    assert_eq!(status, 200, "{mesh}");
    mesh["spec"]["extensionProviders"] = providers;
    let doc = serde_json::json!({ "apiVersion": mesh["apiVersion"], "kind": "MeshConfig", "metadata": { "name": "mesh" }, "spec": mesh["spec"] });
    admin_api(cp, "POST", "/v1/apply", &doc.to_string()).await
}

async fn dumped(proxy: &Proxy) -> serde_json::Value {
    let r = http1_get(proxy.addrs.admin.unwrap(), "/config_dump").await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    v["extension_providers"].clone()
}

async fn decide(proxy: &Proxy, allow: bool) -> Decision {
    let mut req = http::Request::builder().uri("/orders").header("host", "api");
    if allow {
        req = req.header("x-allow", "yes");
    }
    let (parts, ()) = req.body(()).unwrap().into_parts();
    let ctx = CheckContext {
        providers: &proxy.ctx().ext_authz,
        source: "127.0.0.1:1".parse().unwrap(),
        destination: "127.0.0.1:2".parse().unwrap(),
        source_principal: None,
        destination_principal: None,
    };
    check(&ctx, "ext", &parts).await
}

#[tokio::test]
async fn extension_providers_reach_proxies_and_decide_through_them() {
    weft_testkit::init_tracing();
    let dir = tempdir("ext-authz");
    let mut cfg = ControlConfig::new(dir.clone());
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    let cp = ControlPlane::start(cfg).await.expect("control plane");
    let proxy = sidecar(&cp, "default/api", None, "inbound: { listen: \"127.0.0.1:0\" }\n").await;
    let authz = authorizer().await;

    // Refused at apply, naming the field and the fix; nothing reaches the proxy.
    let (status, v) = set_providers(
        &cp,
        serde_json::json!([{ "name": "ext", "kind": "http", "address": format!("http://{authz}") }]),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(v.to_string().contains("extensionProviders[0].address") && v.to_string().contains("no scheme"), "{v}");

    let provider = serde_json::json!([{
        "name": "ext", "kind": "http", "address": authz.to_string(), "timeout": "10s",
        "includeRequestHeadersInCheck": ["x-allow"], "headersToUpstreamOnAllow": ["x-user"],
    }]);
    let (status, v) = set_providers(&cp, provider).await;
    assert_eq!(status, 200, "{v}");
    let p = &proxy;
    let got = eventually("the proxy has the provider", Duration::from_secs(10), || async move {
        let d = dumped(p).await;
        (d.as_array()?.len() == 1).then_some(d)
    })
    .await;
    assert_eq!(got[0]["address"], authz.to_string());
    assert_eq!(got[0]["failOpen"], false, "fail closed by default");

    let mut headers = http::HeaderMap::new();
    match decide(&proxy, true).await {
        Decision::Allow(a) => a.apply(&mut headers),
        Decision::Deny(d) => panic!("denied: {d:?}"),
    }
    assert_eq!(headers["x-user"], "ann");
    match decide(&proxy, false).await {
        Decision::Deny(d) => assert_eq!((d.status.as_u16(), &d.body[..], d.failed), (403, &b"no"[..], false)),
        Decision::Allow(a) => panic!("allowed: {a:?}"),
    }

    let text = proxy.metrics_text();
    for result in ["allow", "deny"] {
        let line = format!("weft_ext_authz_checks_total{{provider=\"ext\",result=\"{result}\"}} 1");
        assert!(text.contains(&line), "no {line:?} in\n{text}");
    }

    // Removed from the MeshConfig: gone from the proxy, and a check naming it denies.
    let (status, v) = set_providers(&cp, serde_json::json!([])).await;
    assert_eq!(status, 200, "{v}");
    eventually("the proxy dropped the provider", Duration::from_secs(10), || async move {
        dumped(p).await.as_array()?.is_empty().then_some(())
    })
    .await;
    match decide(&proxy, true).await {
        Decision::Deny(d) => assert!(d.failed && d.reason.contains("no extension provider"), "{}", d.reason),
        Decision::Allow(a) => panic!("allowed: {a:?}"),
    }
    assert!(proxy.metrics_text().contains("weft_ext_authz_checks_total{provider=\"ext\",result=\"failed_closed\"} 1"));
    let _ = std::fs::remove_dir_all(dir);
}
