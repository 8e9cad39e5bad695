//! Golden metrics end to end (docs/observability.md, "weft stat and weft edges"): real control
//! planes and sidecars on 127.0.0.1, requests through them, then `/v1/stats` and `/v1/edges`
//! count exactly the requests sent, in one cluster and across two linked ones
//! (`Federation.Stats`).

use std::net::SocketAddr;
use std::time::Duration;
use weft_api::kinds::MeshConfigSpec;
use weft_control::{ControlConfig, ControlPlane};
use weft_proxy::Proxy;
use weft_testkit::{eventually, http1_get};

mod common;
use common::{admin_api, api, sidecar, tempdir};

const WAIT: Duration = Duration::from_secs(20);

async fn control(name: &str, trust_domain: &str) -> ControlPlane {
    let mut cfg = ControlConfig::new(tempdir(&format!("stats-{name}")));
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    // Reports every 200 ms, so the test waits little.
    cfg.stats_interval_ms = 200;
    let mut mesh = MeshConfigSpec { trust_domain: trust_domain.into(), ..Default::default() };
    mesh.cluster.name = name.into();
    cfg.mesh = mesh;
    ControlPlane::start(cfg).await.expect("control plane")
}

fn service_and_workload(app: SocketAddr, sidecar: SocketAddr, export: bool) -> String {
    format!(
        "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: api }}\nspec: {{ export: {export} }}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: api-1 }}\nspec: {{ service: api, address: 127.0.0.1, port: {}, sidecar: \"{sidecar}\" }}\n",
        app.port()
    )
}

/// The api server sidecar (with its Workload applied and its app port received).
async fn api_server(cp: &ControlPlane, export: bool) -> Proxy {
    let app = weft_testkit::http_echo("api").await;
    let server = sidecar(cp, "default/api", Some("api-1"), "inbound: { listen: \"127.0.0.1:0\" }\n").await;
    let (status, v) =
        admin_api(cp, "POST", "/v1/apply", &service_and_workload(app, server.addrs.inbound.unwrap(), export)).await;
    assert_eq!(status, 200, "{v}");
    let s = &server;
    eventually("the server sidecar gets its app port", WAIT, || async move {
        (!s.ctx().routes.load().inbound_ports().is_empty()).then_some(())
    })
    .await;
    server
}

/// Sends requests through `upstream`: waits until one reaches the app, then `ok` more that
/// answer 200 and `failing` that the app answers 500. Returns how many reached the app.
async fn traffic(upstream: SocketAddr, ok: u64, failing: u64) -> u64 {
    // Until the client has the endpoint its own proxy answers (never reaching the server).
    eventually("a first request reaches the app", WAIT, || async move {
        (http1_get(upstream, "/first").await.ok()?.status() == 200).then_some(())
    })
    .await;
    for i in 0..ok {
        assert_eq!(http1_get(upstream, &format!("/ok/{i}")).await.unwrap().status(), 200);
    }
    for _ in 0..failing {
        assert_eq!(http1_get(upstream, "/status/500").await.unwrap().status(), 500);
    }
    1 + ok + failing
}

/// `GET path` on `cp` until `pick` finds what it looks for in the answer.
async fn until<T>(cp: &ControlPlane, path: &str, what: &str, pick: impl Fn(&serde_json::Value) -> Option<T>) -> T {
    let pick = &pick;
    eventually(what, WAIT, || async move {
        let (status, v) = admin_api(cp, "GET", path, "").await;
        assert_eq!(status, 200, "{path}: {v}");
        pick(&v)
    })
    .await
}

fn row<'a>(v: &'a serde_json::Value, cluster: &str, service: &str) -> Option<&'a serde_json::Value> {
    v["rows"].as_array()?.iter().find(|r| r["cluster"] == cluster && r["service"] == service)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_and_edges_count_the_requests_sent() {
    weft_testkit::init_tracing();
    let cp = control("solo", "solo.example").await;
    let server = api_server(&cp, false).await;
    let client =
        sidecar(&cp, "default/web", None, "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: api }] }\n")
            .await;
    let sent = traffic(client.addrs.upstreams[0], 9, 2).await;
    assert_eq!(sent, 12);

    // By service: every request counted once, at the callee; 2 of 12 failed.
    let api_row = until(&cp, "/v1/stats?window=10m&history=1", "api's row counts 12 requests", |v| {
        row(v, "solo", "api").filter(|r| r["requests"] == sent).cloned()
    })
    .await;
    assert_eq!(api_row["namespace"], "default");
    assert_eq!(api_row["meshed"], true);
    let rate = api_row["success_rate"].as_f64().unwrap();
    assert!((rate - 10.0 / 12.0).abs() < 1e-9, "{api_row}");
    assert!((api_row["rps"].as_f64().unwrap() - 12.0 / 600.0).abs() < 1e-3, "{api_row}");
    for p in ["p50_ms", "p95_ms", "p99_ms"] {
        assert!(api_row[p].as_f64().is_some_and(|ms| ms > 0.0), "{p}: {api_row}");
    }
    let history = api_row["history"].as_array().unwrap();
    assert_eq!(history.len(), 60, "one point per minute for an hour");
    let in_history: f64 = history.iter().map(|h| h["rps"].as_f64().unwrap() * 60.0).sum();
    assert!((in_history - 12.0).abs() < 0.01, "{in_history}");

    // By workload and by cluster: the same requests.
    let (_, v) = admin_api(&cp, "GET", "/v1/stats?by=workload&window=10m", "").await;
    let w = v["rows"].as_array().unwrap().iter().find(|r| r["workload"] == "api-1").expect("api-1's row").clone();
    assert_eq!((w["service"].as_str(), w["requests"].as_u64()), (Some("api"), Some(sent)), "{v}");
    assert!(w.get("history").is_none(), "history only when asked: {w}");
    let (_, v) = admin_api(&cp, "GET", "/v1/stats?by=cluster&window=10m", "").await;
    assert_eq!(v["rows"][0]["requests"], sent, "{v}");
    assert_eq!(v["source"], "buffer");
    assert_eq!(v["clusters"][0], serde_json::json!({"name": "solo", "reachable": true, "error": null}));

    // The edge web → api, with both identities and mTLS.
    let (_, v) = admin_api(&cp, "GET", "/v1/edges?window=10m", "").await;
    let edges = v["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 1, "{v}");
    let e = &edges[0];
    assert_eq!(e["src"]["service"], "web");
    assert_eq!(e["src"]["identity"], "spiffe://solo.example/ns/default/sa/web");
    assert_eq!(e["src"]["cluster"], "solo");
    assert_eq!(e["dst"]["service"], "api");
    assert_eq!(e["dst"]["identity"], "spiffe://solo.example/ns/default/sa/api");
    assert_eq!((e["requests"].as_u64(), e["mtls"].as_bool()), (Some(sent), Some(true)), "{e}");

    // Bad queries name the parameter; a read token may read; no token may not.
    let (status, v) = admin_api(&cp, "GET", "/v1/stats?bye=service", "").await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("bye"), "{v}");
    let (status, v) = admin_api(&cp, "GET", "/v1/stats?window=2d", "").await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("window"), "{v}");
    let (status, v) = admin_api(&cp, "GET", "/v1/edges?cluster=nowhere", "").await;
    assert_eq!(status, 404, "{v}");
    let (_, t) = admin_api(&cp, "POST", "/v1/tokens", r#"{"kind":"read"}"#).await;
    let (status, _) = api(&cp, "GET", "/v1/stats", t["token"].as_str().unwrap(), "").await;
    assert_eq!(status, 200);
    let (status, _) = api(&cp, "GET", "/v1/stats", "", "").await;
    assert_eq!(status, 401);

    // A caller outside the mesh (plaintext, once the port is PERMISSIVE): an `unmeshed` edge.
    let permissive = "apiVersion: weft.io/v1alpha1\nkind: PeerAuthentication\nmetadata: { name: mesh, namespace: weft-system }\nspec: { mtls: { mode: PERMISSIVE } }\n";
    assert_eq!(admin_api(&cp, "POST", "/v1/apply", permissive).await.0, 200);
    let inbound = server.addrs.inbound.unwrap();
    eventually("plaintext is served", WAIT, || async move { plaintext_ok(inbound).await.then_some(()) }).await;
    for _ in 0..2 {
        assert!(plaintext_ok(inbound).await);
    }
    let e = until(&cp, "/v1/edges?window=10m", "the unmeshed edge counts 3 requests", |v| {
        v["edges"].as_array()?.iter().find(|e| e["src"]["service"] == "unmeshed" && e["requests"] == 3).cloned()
    })
    .await;
    assert_eq!((e["src"]["identity"].clone(), e["mtls"].as_bool()), (serde_json::Value::Null, Some(false)), "{e}");
    assert_eq!((e["src"]["cluster"].as_str(), e["dst"]["service"].as_str()), (Some("solo"), Some("api")), "{e}");

    // A route: its requests by route, as the caller's proxy counts them.
    let route = "apiVersion: weft.io/v1alpha1\nkind: HTTPRoute\nmetadata: { name: api-route }\nspec:\n  parentRefs: [{ name: api }]\n  rules:\n    - backendRefs: [{ name: api }]\n";
    let (status, v) = admin_api(&cp, "POST", "/v1/apply", route).await;
    assert_eq!(status, 200, "{v}");
    let upstream = client.addrs.upstreams[0];
    let cp_ref = &cp;
    let r = eventually("api-route has a row", WAIT, || async move {
        assert_eq!(http1_get(upstream, "/routed").await.ok()?.status(), 200);
        let (_, v) = admin_api(cp_ref, "GET", "/v1/stats?by=route&window=10m", "").await;
        v["rows"].as_array()?.iter().find(|r| r["route"] == "api-route" && r["requests"].as_u64() > Some(0)).cloned()
    })
    .await;
    assert_eq!((r["namespace"].as_str(), r["success_rate"].as_f64()), (Some("default"), Some(1.0)), "{r}");
}

/// One round trip through a TCP upstream to the echo: `ping` back.
async fn tcp_ping(upstream: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let round = async {
        let mut s = tokio::net::TcpStream::connect(upstream).await.ok()?;
        s.write_all(b"ping").await.ok()?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.ok()?;
        (&buf == b"ping").then_some(())
    };
    matches!(tokio::time::timeout(Duration::from_secs(10), round).await, Ok(Some(())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tcp_connections_are_edges_and_open_connections() {
    weft_testkit::init_tracing();
    let cp = control("tcp", "tcp.example").await;
    let app = weft_testkit::tcp_echo().await;
    let server = sidecar(&cp, "default/db", Some("db-1"), "inbound: { listen: \"127.0.0.1:0\" }\n").await;
    let doc = format!(
        "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: db }}\nspec: {{ ports: [{{ port: {0}, protocol: tcp }}] }}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: db-1 }}\nspec: {{ service: db, address: 127.0.0.1, port: {0}, sidecar: \"{1}\" }}\n",
        app.port(),
        server.addrs.inbound.unwrap()
    );
    assert_eq!(admin_api(&cp, "POST", "/v1/apply", &doc).await.0, 200);
    let s = &server;
    eventually("the db sidecar gets its app port", WAIT, || async move {
        (!s.ctx().routes.load().inbound_ports().is_empty()).then_some(())
    })
    .await;
    let client =
        sidecar(&cp, "default/web", None, "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: db }] }\n")
            .await;
    let upstream = client.addrs.upstreams[0];
    eventually("a first connection reaches db", WAIT, || async move { tcp_ping(upstream).await.then_some(()) }).await;
    for _ in 0..2 {
        assert!(tcp_ping(upstream).await);
    }
    let e = until(&cp, "/v1/edges?window=10m", "the web → db edge counts 3 connections", |v| {
        v["edges"].as_array()?.iter().find(|e| e["dst"]["service"] == "db" && e["tcp_connections"] == 3).cloned()
    })
    .await;
    assert_eq!(
        (e["src"]["service"].as_str(), e["mtls"].as_bool(), e["requests"].as_u64()),
        (Some("web"), Some(true), Some(0)),
        "{e}"
    );
    // Connections are not requests; one held open shows in TCP_CONN.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut held = tokio::net::TcpStream::connect(upstream).await.unwrap();
    held.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    held.read_exact(&mut buf).await.unwrap();
    let row = until(&cp, "/v1/stats?window=10m", "db shows one open connection", |v| {
        row(v, "tcp", "db").filter(|r| r["tcp_connections"] == 1).cloned()
    })
    .await;
    assert_eq!((row["requests"].as_u64(), row["success_rate"].is_null()), (Some(0), true), "{row}");
}

/// Whether a plaintext `GET /` to the sidecar's inbound listener is answered 200.
async fn plaintext_ok(inbound: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(inbound).await else { return false };
    if s.write_all(b"GET / HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n").await.is_err() {
        return false;
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    out.starts_with(b"HTTP/1.1 200")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_all_answers_for_linked_clusters_too() {
    weft_testkit::init_tracing();
    let west = control("west", "west.example").await;
    let east = control("east", "east.example").await;
    let _server = api_server(&west, true).await;
    let client =
        sidecar(&east, "default/web", None, "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: api }] }\n")
            .await;
    let (status, v) = admin_api(&west, "POST", "/v1/links/credential", r#"{"expires":"1h"}"#).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = admin_api(&east, "POST", "/v1/links", v["credential"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{v}");
    let sent = traffic(client.addrs.upstreams[0], 5, 0).await;

    // East asks west (Federation.Stats over the link): west's api row, counted by west's proxy.
    let v = until(&east, "/v1/stats?window=10m", "west's api row in east's answer", |v| {
        row(v, "west", "api").filter(|r| r["requests"] == sent).map(|_| v.clone())
    })
    .await;
    let clusters = v["clusters"].as_array().unwrap();
    assert!(clusters.contains(&serde_json::json!({"name": "west", "reachable": true, "error": null})), "{v}");
    // Only west: the same rows, asked of west alone.
    let (_, only) = admin_api(&east, "GET", "/v1/stats?window=10m&cluster=west", "").await;
    assert!(only["rows"].as_array().unwrap().iter().all(|r| r["cluster"] == "west"), "{only}");
    assert_eq!(row(&only, "west", "api").unwrap()["requests"], sent);
    // East alone has no api traffic of its own.
    let (_, local) = admin_api(&east, "GET", "/v1/stats?window=10m&cluster=east", "").await;
    assert!(row(&local, "west", "api").is_none(), "{local}");

    // The cross-cluster edge: east's web (its trust domain placed in east) → west's api.
    let (_, v) = admin_api(&east, "GET", "/v1/edges?window=10m", "").await;
    let e = v["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["dst"]["cluster"] == "west")
        .unwrap_or_else(|| panic!("no edge to west: {v}"))
        .clone();
    assert_eq!(e["src"]["cluster"], "east", "{e}");
    assert_eq!(e["src"]["identity"], "spiffe://east.example/ns/default/sa/web", "{e}");
    assert_eq!(
        (e["dst"]["service"].as_str(), e["requests"].as_u64(), e["mtls"].as_bool()),
        (Some("api"), Some(sent), Some(true))
    );

    // West gone: east still answers, saying west is unreachable.
    west.shutdown().await;
    let v = until(&east, "/v1/stats?window=10m", "west reported unreachable", |v| {
        v["clusters"].as_array()?.iter().find(|c| c["name"] == "west" && c["reachable"] == false).map(|_| v.clone())
    })
    .await;
    let c = v["clusters"].as_array().unwrap().iter().find(|c| c["name"] == "west").unwrap().clone();
    assert!(c["error"].as_str().is_some_and(|e| !e.is_empty()), "{c}");
}
