//! Live tap and proxy config, end to end on 127.0.0.1: a control plane, an api app with its
//! sidecar and a web sidecar calling it; `GET /v1/tap` streams what the proxies saw, filtered,
//! and ends the proxies' tapping when the client leaves; `GET /v1/proxies/{id}/config` shows
//! what a running sidecar runs.

use std::net::SocketAddr;
use std::time::Duration;
use weft_control::{ControlConfig, ControlPlane};
use weft_proxy::Proxy;
use weft_testkit::{eventually, http1_get};

mod common;
use common::{api, api_stream, sidecar, tempdir, ApiStream};

const WEB: &str = "spiffe://cluster.local/ns/default/sa/web";
const API: &str = "spiffe://cluster.local/ns/default/sa/api";

struct Mesh {
    cp: ControlPlane,
    app: SocketAddr,
    server: Proxy,
    client: Proxy,
    upstream: SocketAddr,
}

async fn mesh(name: &str) -> Mesh {
    let mut cfg = ControlConfig::new(tempdir(name));
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    let cp = ControlPlane::start(cfg).await.expect("control plane");
    let app = weft_testkit::http_echo("api").await;
    let server = sidecar(&cp, "default/api", Some("api-1"), "inbound: { listen: \"127.0.0.1:0\" }\n").await;
    let client =
        sidecar(&cp, "default/web", None, "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: api }] }\n")
            .await;
    let upstream = client.addrs.upstreams[0];
    let yaml = format!(
        "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: api }}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: api-1 }}\nspec: {{ service: api, address: 127.0.0.1, port: {}, sidecar: \"127.0.0.1:{}\" }}\n",
        app.port(),
        server.addrs.inbound.unwrap().port()
    );
    let (status, v) = api(&cp, "POST", "/v1/apply", &cp.admin_token, &yaml).await;
    assert_eq!(status, 200, "{v}");
    eventually("the web sidecar routes to api", Duration::from_secs(10), || async move {
        let r = http1_get(upstream, "/ready").await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    Mesh { cp, app, server, client, upstream }
}

async fn get(upstream: SocketAddr, path: &str) {
    let r = http1_get(upstream, path).await.expect("request through the mesh");
    assert_eq!(r.status(), 200, "{path}");
}

async fn lines(s: &mut ApiStream, n: usize) -> Vec<serde_json::Value> {
    let mut out = vec![];
    while out.len() < n {
        let line = tokio::time::timeout(Duration::from_secs(20), s.next_line())
            .await
            .expect("an event within 20 s")
            .expect("the stream is open");
        out.push(serde_json::from_str(&line).expect("a JSON line"));
    }
    out
}

/// Waits until each of `proxies` has a tap open (the control plane sent it).
async fn tapping(proxies: &[&Proxy]) {
    eventually("the proxies tap", Duration::from_secs(10), || async {
        proxies.iter().all(|p| p.ctx().taps.on()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tap_streams_each_request_as_both_proxies_saw_it() {
    weft_testkit::init_tracing();
    let Mesh { cp, app, server, client, upstream } = mesh("tap-all").await;
    assert!(!server.ctx().taps.on() && !client.ctx().taps.on(), "no tap, no tapping");

    let mut s = api_stream(&cp, "/v1/tap?max=10&seconds=60", &cp.admin_token).await;
    assert_eq!(s.status, 200);
    tapping(&[&server, &client]).await;
    for i in 0..5 {
        get(upstream, &format!("/items/{i}")).await;
    }
    let events = lines(&mut s, 10).await;
    assert!(s.next_line().await.is_none(), "the stream ends after max events");
    let (inbound, outbound): (Vec<_>, Vec<_>) = events.iter().partition(|e| e["direction"] == "inbound");
    assert_eq!((inbound.len(), outbound.len()), (5, 5), "{events:#?}");
    let mut paths: Vec<&str> = inbound.iter().map(|e| e["path"].as_str().unwrap()).collect();
    paths.sort();
    assert_eq!(paths, ["/items/0", "/items/1", "/items/2", "/items/3", "/items/4"]);
    for e in &inbound {
        assert_eq!(e["proxy"], "default-api");
        assert_eq!(e["src"]["identity"], WEB);
        assert_eq!(e["dst"]["service"], "api");
        assert_eq!(e["dst"]["namespace"], "default");
        assert_eq!(e["dst"]["endpoint"], app.to_string());
        assert_eq!(
            (e["method"].as_str(), e["status"].as_u64(), e["mtls"].as_bool()),
            (Some("GET"), Some(200), Some(true))
        );
        assert!(e["duration_ms"].as_f64().unwrap() >= 0.0 && e["t_unix_ms"].as_u64().unwrap() > 0);
        assert_eq!(e["cluster"], "local");
    }
    for e in &outbound {
        assert_eq!(e["proxy"], "default-web");
        assert_eq!(e["src"]["identity"], WEB);
        assert_eq!(e["dst"]["service"], "api");
        assert_eq!(e["dst"]["identity"], API);
        assert_eq!(e["dst"]["endpoint"], app.to_string());
        assert_eq!(e["route"], serde_json::Value::Null);
    }
    // The tap ended with the stream: the proxies stop tapping.
    eventually("tapping stops", Duration::from_secs(10), || async {
        (!server.ctx().taps.on() && !client.ctx().taps.on()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_pick_the_proxies_and_the_requests() {
    weft_testkit::init_tracing();
    let Mesh { cp, server, client, upstream, .. } = mesh("tap-filter").await;
    // Only api's proxies, only paths under /only, only 2xx, from web.
    let path = "/v1/tap?namespace=default&service=api&path=/only&status=2xx&src=web.default&max=2";
    let mut s = api_stream(&cp, path, &cp.admin_token).await;
    assert_eq!(s.status, 200);
    tapping(&[&server]).await;
    assert!(!client.ctx().taps.on(), "web's proxy is not one of api's");
    get(upstream, "/other").await;
    get(upstream, "/only/1").await;
    get(upstream, "/only/2").await;
    let events = lines(&mut s, 2).await;
    for (e, want) in events.iter().zip(["/only/1", "/only/2"]) {
        assert_eq!((e["path"].as_str(), e["direction"].as_str()), (Some(want), Some("inbound")), "{e}");
    }

    // A dst filter on the service name matches web's outbound and api's inbound events. (The
    // first tap is gone first: a proxy still tapping for it would pass for one tapping for this.)
    drop(s);
    eventually("the first tap is gone", Duration::from_secs(10), || async { (!server.ctx().taps.on()).then_some(()) })
        .await;
    let mut s = api_stream(&cp, "/v1/tap?dst=api.default&method=GET&max=2", &cp.admin_token).await;
    tapping(&[&server, &client]).await;
    get(upstream, "/x").await;
    let events = lines(&mut s, 2).await;
    let mut dirs: Vec<&str> = events.iter().map(|e| e["direction"].as_str().unwrap()).collect();
    dirs.sort();
    assert_eq!(dirs, ["inbound", "outbound"]);

    // Bad filters are named.
    let (status, v) = api(&cp, "GET", "/v1/tap?status=7xx", &cp.admin_token, "").await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().starts_with("status"), "{v}");
    let (status, v) = api(&cp, "GET", "/v1/tap?color=red", &cp.admin_token, "").await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("color"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tap_ends_when_its_client_leaves() {
    weft_testkit::init_tracing();
    let Mesh { cp, server, client, upstream, .. } = mesh("tap-leave").await;
    let mut s = api_stream(&cp, "/v1/tap?seconds=600", &cp.admin_token).await;
    tapping(&[&server, &client]).await;
    get(upstream, "/first").await;
    assert_eq!(lines(&mut s, 1).await.len(), 1);
    drop(s);
    // The control plane notices when it next writes to the gone client.
    eventually("the proxies stop tapping", Duration::from_secs(20), || async {
        let _ = http1_get(upstream, "/after").await;
        (!server.ctx().taps.on() && !client.ctx().taps.on()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_config_shows_what_a_running_sidecar_runs() {
    weft_testkit::init_tracing();
    let Mesh { cp, app, .. } = mesh("proxy-config").await;
    let (status, v) = api(&cp, "GET", "/v1/proxies/default-web/config", &cp.admin_token, "").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["identity"], WEB);
    assert!(v["certificate"]["expires_in_seconds"].as_u64().unwrap() > 0, "{v}");
    assert!(v["certificate"]["root_sha256"].as_str().is_some_and(|r| r.len() == 64), "{v}");
    let api_route = v["routes"].as_array().unwrap().iter().find(|r| r["name"] == "api").expect("api's route");
    assert_eq!(api_route["endpoints"][0]["address"], app.to_string());
    let (status, v) = api(&cp, "GET", "/v1/proxies/nope/config", &cp.admin_token, "").await;
    assert_eq!(status, 404);
    assert!(v["error"].as_str().unwrap().contains("\"nope\""), "{v}");
}

/// A tap through a link: east (which links to west) taps west's proxies, alone or with its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tap_reaches_the_proxies_of_a_linked_cluster() {
    weft_testkit::init_tracing();
    let start = |name: &'static str| async move {
        let mut cfg = ControlConfig::new(tempdir(&format!("tap-link-{name}")));
        cfg.grpc = "127.0.0.1:0".parse().unwrap();
        cfg.api = "127.0.0.1:0".parse().unwrap();
        let mut mesh =
            weft_api::kinds::MeshConfigSpec { trust_domain: format!("{name}.example"), ..Default::default() };
        mesh.cluster.name = name.into();
        cfg.mesh = mesh;
        ControlPlane::start(cfg).await.expect("control plane")
    };
    let (west, east) = (start("west").await, start("east").await);
    // West: api and a web sidecar calling it, in west.
    let app = weft_testkit::http_echo("api").await;
    let server = sidecar(&west, "default/api", Some("api-1"), "inbound: { listen: \"127.0.0.1:0\" }\n").await;
    let client =
        sidecar(&west, "default/web", None, "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: api }] }\n")
            .await;
    let yaml = format!(
        "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: api }}\nspec: {{ export: true }}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: api-1 }}\nspec: {{ service: api, address: 127.0.0.1, port: {}, sidecar: \"127.0.0.1:{}\" }}\n",
        app.port(),
        server.addrs.inbound.unwrap().port()
    );
    assert_eq!(api(&west, "POST", "/v1/apply", &west.admin_token, &yaml).await.0, 200);
    let upstream = client.addrs.upstreams[0];
    // East links to west.
    let (status, v) = api(&west, "POST", "/v1/links/credential", &west.admin_token, r#"{"expires":"1h"}"#).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = api(&east, "POST", "/v1/links", &east.admin_token, v["credential"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{v}");
    eventually("east imports west's api", Duration::from_secs(15), || async {
        let (_, v) = api(&east, "GET", "/v1/catalog", &east.admin_token, "").await;
        v.to_string().contains("api").then_some(())
    })
    .await;

    for (query, want) in [("cluster=west&service=api", 2), ("cluster=all&service=api", 2)] {
        eventually("no tap left in west", Duration::from_secs(10), || async {
            (!server.ctx().taps.on()).then_some(())
        })
        .await;
        let mut s = api_stream(&east, &format!("/v1/tap?{query}&max={want}"), &east.admin_token).await;
        assert_eq!(s.status, 200, "{query}");
        tapping(&[&server]).await;
        get(upstream, "/west/1").await;
        get(upstream, "/west/2").await;
        let events = lines(&mut s, want).await;
        for e in &events {
            assert_eq!((e["cluster"].as_str(), e["proxy"].as_str()), (Some("west"), Some("default-api")), "{e}");
            assert_eq!(e["src"]["identity"], "spiffe://west.example/ns/default/sa/web");
            assert_eq!(e["direction"], "inbound");
        }
    }
    let (status, v) = api(&east, "GET", "/v1/tap?cluster=north", &east.admin_token, "").await;
    assert_eq!(status, 404, "{v}");
    assert!(v["error"].as_str().unwrap().contains("no link to \"north\""), "{v}");
}

/// The caller's proxy names the route whose rule it applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_event_names_the_route_that_matched() {
    weft_testkit::init_tracing();
    let Mesh { cp, server, client, upstream, .. } = mesh("tap-route").await;
    let route = "apiVersion: weft.io/v1alpha1\nkind: HTTPRoute\nmetadata: { name: api-rules }\nspec:\n  parentRefs: [{ name: api }]\n  rules:\n    - matches: [{ path: { type: PathPrefix, value: /routed } }]\n      backendRefs: [{ name: api }]\n";
    let (status, v) = api(&cp, "POST", "/v1/apply", &cp.admin_token, route).await;
    assert_eq!(status, 200, "{v}");
    eventually("web's proxy has api's route", Duration::from_secs(10), || async {
        let (_, v) = api(&cp, "GET", "/v1/proxies/default-web/config", &cp.admin_token, "").await;
        let routes = v["routes"].as_array()?.iter().find(|r| r["name"] == "api")?["routes"].clone();
        (!routes.is_null()).then_some(())
    })
    .await;
    let mut s = api_stream(&cp, "/v1/tap?path=/routed&max=2", &cp.admin_token).await;
    tapping(&[&server, &client]).await;
    get(upstream, "/routed/1").await;
    let events = lines(&mut s, 2).await;
    let out = events.iter().find(|e| e["direction"] == "outbound").expect("the caller's event");
    assert_eq!(out["route"], "default/api-rules", "{out}");
    let inb = events.iter().find(|e| e["direction"] == "inbound").expect("the callee's event");
    assert_eq!(inb["route"], serde_json::Value::Null);
}

/// A proxy taps itself on its admin port (loopback callers), with no control plane involved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_taps_itself_on_its_admin_port() {
    weft_testkit::init_tracing();
    let Mesh { server, upstream, .. } = mesh("tap-admin").await;
    let admin = server.addrs.admin.expect("an admin listener");
    let tapping = tokio::spawn(async move { http1_get(admin, "/tap?path=/adm&max=1&seconds=30").await.unwrap() });
    eventually("the admin tap is open", Duration::from_secs(10), || async { server.ctx().taps.on().then_some(()) })
        .await;
    get(upstream, "/adm/1").await;
    let resp = tokio::time::timeout(Duration::from_secs(30), tapping).await.expect("the tap ends at max").unwrap();
    assert_eq!(resp.status(), 200);
    let e: serde_json::Value = serde_json::from_slice(resp.body()).expect("one JSON line");
    assert_eq!((e["path"].as_str(), e["direction"].as_str()), (Some("/adm/1"), Some("inbound")), "{e}");
    assert_eq!(e["proxy"], "default-api");
    eventually("the admin tap is closed", Duration::from_secs(10), || async {
        (!server.ctx().taps.on()).then_some(())
    })
    .await;
    let r = http1_get(admin, "/tap?color=red").await.unwrap();
    assert_eq!(r.status(), 400);
}
