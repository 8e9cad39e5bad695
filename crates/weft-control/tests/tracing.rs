//! MeshConfig `tracing` end to end on 127.0.0.1: applied alone to a real control plane (no other
//! change in the catalog, so the registry must see the MeshConfig changed), sent over the
//! discovery stream to a real sidecar, and shown in its `/config_dump`; a change and a removal
//! reach it too. A bad spec is refused at apply, naming the field. Then the whole path: a mesh
//! of two sidecars following the control plane, MeshConfig `tracing` pointing at a real OTLP
//! receiver (`weft_testkit::otlp`, Python; skipped only when PyPI cannot be reached), and one
//! request's client and server spans arriving as one trace.

use std::time::Duration;
use weft_control::{ControlConfig, ControlPlane};
use weft_proxy::Proxy;
use weft_testkit::{eventually, http1_get};

mod common;
use common::{admin_api, sidecar, tempdir};

/// Applies the stored MeshConfig with `tracing` (null: none).
async fn set_tracing(cp: &ControlPlane, tracing: serde_json::Value) -> (u16, serde_json::Value) {
    let (status, mut mesh) = admin_api(cp, "GET", "/v1/resources/MeshConfig/default/mesh", "").await;
    assert_eq!(status, 200, "{mesh}");
    match tracing {
        serde_json::Value::Null => {
            mesh["spec"].as_object_mut().unwrap().remove("tracing");
        }
        t => mesh["spec"]["tracing"] = t,
    }
    let doc = serde_json::json!({ "apiVersion": mesh["apiVersion"], "kind": "MeshConfig", "metadata": { "name": "mesh" }, "spec": mesh["spec"] });
    admin_api(cp, "POST", "/v1/apply", &doc.to_string()).await
}

async fn dumped(proxy: &Proxy) -> serde_json::Value {
    let r = http1_get(proxy.addrs.admin.unwrap(), "/config_dump").await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    v["tracing"].clone()
}

#[tokio::test]
async fn mesh_config_tracing_alone_reaches_proxies() {
    weft_testkit::init_tracing();
    let dir = tempdir("tracing");
    let mut cfg = ControlConfig::new(dir.clone());
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    let cp = ControlPlane::start(cfg).await.expect("control plane");
    let proxy = sidecar(&cp, "default/api", None, "inbound: { listen: \"127.0.0.1:0\" }\n").await;
    let p = &proxy;
    eventually("the proxy is ready", Duration::from_secs(10), || async move { p.ctx().is_ready().then_some(()) }).await;
    assert!(dumped(&proxy).await.is_null(), "off by default");
    assert!(proxy.ctx().tracing.tracer().is_none());

    // Refused at apply, naming the field and the fix.
    let (status, v) =
        set_tracing(&cp, serde_json::json!({ "sampling": 150, "otlp": { "endpoint": "http://127.0.0.1:4317" } })).await;
    assert_eq!(status, 400, "{v}");
    assert!(v.to_string().contains("tracing.sampling") && v.to_string().contains("0 to 100"), "{v}");
    let (status, v) = set_tracing(&cp, serde_json::json!({ "otlp": { "endpoint": "127.0.0.1:4317" } })).await;
    assert_eq!(status, 400, "{v}");
    assert!(v.to_string().contains("tracing.otlp.endpoint") && v.to_string().contains("http://"), "{v}");

    let (status, v) = set_tracing(
        &cp,
        serde_json::json!({ "sampling": 25.5, "otlp": { "endpoint": "http://127.0.0.1:4317" }, "propagation": ["b3"] }),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let got = eventually("the proxy has MeshConfig tracing", Duration::from_secs(10), || async move {
        let d = dumped(p).await;
        (!d.is_null()).then_some(d)
    })
    .await;
    assert_eq!(got["sampling"], 25.5);
    assert_eq!(got["otlp"]["endpoint"], "http://127.0.0.1:4317");
    assert_eq!(got["propagation"], serde_json::json!(["b3"]));
    assert!(proxy.ctx().tracing.tracer().is_some());

    // A change to the sampling alone reaches it.
    let (status, v) =
        set_tracing(&cp, serde_json::json!({ "sampling": 100, "otlp": { "endpoint": "http://127.0.0.1:4317" } })).await;
    assert_eq!(status, 200, "{v}");
    eventually("the proxy has the new sampling", Duration::from_secs(10), || async move {
        (dumped(p).await["sampling"] == 100.0).then_some(())
    })
    .await;

    // Removed: off again.
    let (status, v) = set_tracing(&cp, serde_json::Value::Null).await;
    assert_eq!(status, 200, "{v}");
    eventually("the proxy turned tracing off", Duration::from_secs(10), || async move {
        dumped(p).await.is_null().then_some(())
    })
    .await;
    assert!(proxy.ctx().tracing.tracer().is_none());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_config_tracing_makes_one_trace_of_a_request_through_the_mesh() {
    let Some(rx) = weft_testkit::otlp::Receiver::start(std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))) else {
        return;
    };
    weft_testkit::init_tracing();
    let dir = tempdir("tracing-e2e");
    let mut cfg = ControlConfig::new(dir.clone());
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    let cp = ControlPlane::start(cfg).await.expect("control plane");
    let app = weft_testkit::http_echo("api").await;
    let server = sidecar(&cp, "default/api", Some("api-1"), "inbound: { listen: \"127.0.0.1:0\" }\n").await;
    let client =
        sidecar(&cp, "default/web", None, "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: api }] }\n")
            .await;
    let reg = format!(
        r#"{{"ID":"api-1","Name":"api","Address":"127.0.0.1","Port":{},"Connect":{{"SidecarService":{{"Port":{}}}}}}}"#,
        app.port(),
        server.addrs.inbound.unwrap().port()
    );
    let (status, v) = admin_api(&cp, "PUT", "/v1/agent/service/register", &reg).await;
    assert_eq!(status, 200, "{v}");
    let endpoint = format!("http://127.0.0.1:{}", rx.port);
    let (status, v) = set_tracing(&cp, serde_json::json!({ "sampling": 100, "otlp": { "endpoint": endpoint } })).await;
    assert_eq!(status, 200, "{v}");
    let (c, s) = (&client, &server);
    eventually("both sidecars trace", Duration::from_secs(10), || async move {
        (c.ctx().tracing.tracer().is_some() && s.ctx().tracing.tracer().is_some()).then_some(())
    })
    .await;
    let upstream = client.addrs.upstreams[0];
    let seen = eventually("the client sidecar routes to api-1", Duration::from_secs(10), || async move {
        let r = http1_get(upstream, "/traced").await.ok()?;
        (r.status() == 200).then(|| serde_json::from_slice::<serde_json::Value>(r.body()).unwrap())
    })
    .await;
    let trace_id = seen["traceparent"].as_str().expect("the app got a traceparent")[3..35].to_string();
    let spans = eventually("the request's two spans", Duration::from_secs(30), || {
        let trace_id = trace_id.clone();
        let rx = &rx;
        async move {
            let spans: Vec<serde_json::Value> = rx
                .spans()
                .iter()
                .map(|s| serde_json::from_str::<serde_json::Value>(s).unwrap())
                .filter(|s| s["trace_id"] == trace_id.as_str())
                .collect();
            (spans.len() >= 2).then_some(spans)
        }
    })
    .await;
    let kind =
        |k: i64| spans.iter().find(|s| s["kind"] == k).unwrap_or_else(|| panic!("no span of kind {k}: {spans:#?}"));
    let (client_span, server_span) = (kind(3), kind(2));
    assert_eq!(server_span["parent_span_id"], client_span["span_id"], "the server span is the client span's child");
    assert_eq!(client_span["resource"]["weft.identity"], "spiffe://cluster.local/ns/default/sa/web");
    assert_eq!(server_span["resource"]["weft.identity"], "spiffe://cluster.local/ns/default/sa/api");
    assert_eq!(server_span["attributes"]["weft.peer.identity"], "spiffe://cluster.local/ns/default/sa/web");
    assert_eq!(client_span["attributes"]["weft.cluster"], "local", "the cluster the control plane names");
    let _ = std::fs::remove_dir_all(dir);
}
