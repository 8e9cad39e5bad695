//! deploy/prometheus/prometheus.yml and deploy/grafana/*.json against real proxies: the scrape
//! config parses and its `metrics_path` is where a running proxy's admin listener serves its
//! metrics, and every metric name a dashboard uses (in a query or a template variable) is one a
//! running proxy exports — a counter as `<name>_total`, a histogram as `<name>_bucket`, `_sum` or
//! `_count`, a gauge as itself — read from the `# TYPE` lines of a real scrape after traffic.
//! The control plane's own names (`weft_control_plane_*`) are checked against a real control
//! plane's scrape by weft-control's tests/metrics.rs; the helpers are `weft_testkit::dashboards`.

mod support;

use std::collections::BTreeMap;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_proxy::Proxy;
use weft_testkit::dashboards::{exported, repo, used_names, CONTROL_PLANE_PREFIX};
use weft_testkit::Pki;

/// A service `shaped` (`api`'s app and sidecar, under another address) with what fills the per-route and per-backend
/// families: an HTTPRoute with a mirror, a ResiliencePolicy (retries, a request timeout, an abort
/// fault), a connection limit of one request and outlier detection ejecting at the first 5xx.
fn shaped(app: std::net::SocketAddr, via: std::net::SocketAddr) -> String {
    format!(
        r#"  - name: shaped
    endpoints:
      - {{ address: "127.0.0.2:{port}", proxy: "{via}", identity: "{id}" }}
    outlier_detection: {{ consecutive_5xx: 1, max_ejection_percent: 100 }}
    backend_policy: {{ connection_limits: {{ maxRequests: 1 }} }}
    resilience:
      retry: {{ attempts: 1, retryOn: [5xx], budget: {{ ratio: 0.0, minPerSecond: 1, window: 10s }} }}
      timeouts: {{ request: 200ms }}
      faults: [{{ match: {{ pathPrefix: /fault }}, abort: {{ httpStatus: 503, percent: 100 }} }}]
    routes:
      - name: r
        namespace: default
        kind: HTTPRoute
        spec:
          parentRefs: [{{ name: shaped }}]
          rules:
            - matches: [{{ path: {{ type: PathPrefix, value: /mirror }} }}]
              filters: [{{ type: RequestMirror, requestMirror: {{ backendRef: {{ name: api }} }} }}]
              backendRefs: [{{ name: shaped }}]
            - backendRefs: [{{ name: shaped }}]
"#,
        port = app.port(),
        id = api_id()
    )
}

fn cfg_upstream(cfg: &mut weft_api::proxy::ProxyConfig, service: &str, port: u16) {
    cfg.outbound.as_mut().unwrap().upstreams.push(
        serde_json::from_value(serde_json::json!({ "listen": "127.0.0.1:0", "service": service, "port": port }))
            .unwrap(),
    );
}

/// Through `shaped`: a mirrored request, a fault, a request cut by the timeout, two at once past
/// the limit, and 5xx answers retried until the budget is spent (and the endpoint ejected).
async fn shaped_traffic(upstream: std::net::SocketAddr) {
    let get = |path: &'static str| async move { weft_testkit::http1_get(upstream, path).await.map(|r| r.status()) };
    let _ = get("/mirror").await;
    let _ = get("/fault").await;
    let _ = get("/delay/1000").await;
    let _ = tokio::join!(get("/delay/300"), get("/delay/300"), get("/delay/300"));
    // Last: the first 5xx ejects the endpoint.
    for _ in 0..4 {
        let _ = get("/status/500").await;
    }
}

/// A pair whose traffic fills every family the dashboards read: HTTP (allowed, audited, denied),
/// opaque TCP, a plaintext connection refused by the server (STRICT) and a failed TLS handshake
/// to a "peer" that closes at once.
async fn busy_pair() -> (Proxy, Proxy) {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let app_http = weft_testkit::http_echo("api").await;
    let app_tcp = weft_testkit::tcp_echo().await;
    let mut cfg = server_config(app_http.port(), app_tcp.port(), "");
    let authz = serde_json::json!({ "policies": [
        { "name": "default/watch", "spec": { "action": "AUDIT", "rules": [{ "to": [{ "operation": { "paths": ["/audited"] } }] }] } },
        { "name": "default/no", "spec": { "action": "DENY", "rules": [{ "to": [{ "operation": { "paths": ["/denied"], "ports": [app_http.port()] } }] }] } },
    ]});
    cfg.inbound.as_mut().unwrap().authorization = Some(serde_json::from_value(authz).unwrap());
    let server = Proxy::start(cfg, pki.store(SERVER.0, SERVER.1)).await.expect("server sidecar");
    let inbound = server.addrs.inbound.expect("inbound");
    // Accepts and closes: a TLS handshake with it fails.
    let closer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closing = closer.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = closer.accept().await {
            drop(s);
        }
    });
    let extra =
        format!("  - name: closing\n    endpoints:\n      - {{ address: \"{closing}\", proxy: \"{closing}\", identity: \"{}\" }}\n{}", api_id(), shaped(app_http, inbound));
    let mut cfg = client_config(app_http, app_tcp.port(), inbound, &api_id(), &extra);
    cfg_upstream(&mut cfg, "closing", closing.port());
    cfg_upstream(&mut cfg, "shaped", app_http.port());
    let client = Proxy::start(cfg, pki.store(CLIENT.0, CLIENT.1)).await.expect("client sidecar");
    let (http, tcp, closing) = (client.addrs.upstreams[0], client.addrs.upstreams[1], client.addrs.upstreams[2]);
    shaped_traffic(client.addrs.upstreams[3]).await;
    for (path, want) in [("/a", 200), ("/audited", 200), ("/denied", 403)] {
        assert_eq!(weft_testkit::http1_get(http, path).await.unwrap().status(), want, "{path}");
    }
    assert!(weft_testkit::http1_get(closing, "/").await.unwrap().status().is_server_error());
    let mut s = tokio::net::TcpStream::connect(tcp).await.unwrap();
    s.write_all(b"hello\n").await.unwrap();
    let mut buf = [0u8; 6];
    s.read_exact(&mut buf).await.unwrap();
    drop(s);
    // Plaintext to a STRICT inbound port: refused, counted.
    let mut plain = tokio::net::TcpStream::connect(inbound).await.unwrap();
    let _ = plain.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let _ = plain.read(&mut [0u8; 64]).await;
    (server, client)
}

#[tokio::test]
async fn dashboards_use_only_metric_names_a_running_proxy_exports() {
    let (server, client) = busy_pair().await;
    // The TCP connection's and the refused plaintext's counts land when the proxies see them end.
    let (srv, cli) = (&server, &client);
    weft_testkit::eventually("every family has samples", std::time::Duration::from_secs(10), || async move {
        let text = srv.metrics_text() + &cli.metrics_text();
        ["weft_tcp_bytes_total", "weft_protocol_errors_total", "weft_tls_handshake_errors_total"]
            .iter()
            .all(|n| text.contains(n))
            .then_some(())
    })
    .await;

    // The scrape config: parses, one job for the proxies, scraping where a proxy serves.
    let yml = std::fs::read_to_string(repo().join("deploy/prometheus/prometheus.yml")).expect("prometheus.yml");
    let cfg: serde_json::Value = serde_saphyr::from_str(&yml).expect("prometheus.yml is YAML");
    let jobs = cfg["scrape_configs"].as_array().expect("scrape_configs");
    let job = jobs.iter().find(|j| j["job_name"] == "weft-proxies").expect("a weft-proxies job");
    let path = job["metrics_path"].as_str().unwrap_or("/metrics");
    let admin = server.addrs.admin.expect("admin listener");
    let resp = weft_testkit::http1_get(admin, path).await.expect("scrape");
    assert_eq!(resp.status(), 200, "{path} on the admin listener");
    let mut text = String::from_utf8_lossy(resp.body()).to_string();
    text.push_str(&client.metrics_text());
    let names = exported(&text);
    assert!(names.contains("weft_http_requests_total") && names.contains("weft_http_response_latency_seconds_bucket"));

    // Every dashboard (valid JSON with a uid and panels) uses only exported names; the control
    // plane's are weft-control's tests/metrics.rs's to check.
    let mut unknown: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let used = used_names(|n| !n.starts_with(CONTROL_PLANE_PREFIX));
    for (name, at) in &used {
        if !names.contains(name) {
            unknown.entry(name.clone()).or_default().push(at.clone());
        }
    }
    assert!(used.len() > 20, "the dashboards query weft metrics ({} uses)", used.len());
    assert!(unknown.is_empty(), "names no proxy exports: {unknown:#?}\nexported: {names:#?}");
}
