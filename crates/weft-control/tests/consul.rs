//! The Consul-compatible HTTP API as Consul clients use it: the token forms, index headers and
//! blocking queries, case-insensitive JSON keys, the agent/health/catalog reads, TTL updates by
//! Consul check id, per-instance tags and the 501 for what is not supported. A real control plane
//! on 127.0.0.1; the py-consul library itself is driven from weft-cli's `consul_client` test.

use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;
use weft_control::{ControlConfig, ControlPlane};
use weft_testkit::http1_request;

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("weft-consul-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

async fn control(name: &str) -> ControlPlane {
    let mut cfg = ControlConfig::new(tempdir(name));
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    ControlPlane::start(cfg).await.expect("control plane")
}

struct Resp {
    status: u16,
    headers: http::HeaderMap,
    body: Value,
}

/// A request with the given extra headers (no token unless one is among them).
async fn call(cp: &ControlPlane, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let mut req = http::Request::builder().method(method).uri(path).header("host", "cp");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = http1_request(cp.api_addr, req.body(Full::new(Bytes::from(body.to_string()))).unwrap()).await.unwrap();
    let body = serde_json::from_slice(resp.body()).unwrap_or_else(|_| Value::String(format!("{:?}", resp.body())));
    Resp { status: resp.status().as_u16(), headers: resp.headers().clone(), body }
}

/// A request with the admin token in `X-Consul-Token`, as Consul clients send it.
async fn consul(cp: &ControlPlane, method: &str, path: &str, body: &str) -> Resp {
    call(cp, method, path, &[("x-consul-token", &cp.admin_token)], body).await
}

#[tokio::test]
async fn every_consul_token_form_is_accepted_and_none_is_refused_clearly() {
    let cp = control("tokens").await;
    let tok = cp.admin_token.clone();
    for (what, headers, query) in [
        ("X-Consul-Token", vec![("x-consul-token", tok.clone())], String::new()),
        ("?token=", vec![], format!("?token={tok}")),
        ("Bearer", vec![("authorization", format!("Bearer {tok}"))], String::new()),
        ("BEARER", vec![("authorization", format!("BEARER {tok}"))], String::new()),
        ("bEaReR", vec![("authorization", format!("bEaReR {tok}"))], String::new()),
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = call(&cp, "GET", &format!("/v1/catalog/services{query}"), &h, "").await;
        assert_eq!(r.status, 200, "{what}: {}", r.body);
    }
    assert_eq!(consul(&cp, "GET", "/v1/catalog/services", "").await.status, 200);
    let r = call(&cp, "GET", "/v1/catalog/services", &[], "").await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.headers["content-type"], "application/json");
    let msg = r.body["error"].as_str().unwrap();
    assert!(msg.contains("X-Consul-Token") && msg.contains("authorization: Bearer"), "{msg}");
    let r = call(&cp, "GET", "/v1/catalog/services", &[("x-consul-token", "wft_00.00")], "").await;
    assert_eq!(r.status, 401, "{}", r.body);
}
