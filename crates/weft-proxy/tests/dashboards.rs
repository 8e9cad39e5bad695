//! deploy/prometheus/prometheus.yml and deploy/grafana/*.json against real proxies: the scrape
//! config parses and its `metrics_path` is where a running proxy's admin listener serves its
//! metrics, and every metric name a dashboard uses (in a query or a template variable) is one a
//! running proxy exports — a counter as `<name>_total`, a histogram as `<name>_bucket`, `_sum` or
//! `_count`, a gauge as itself — read from the `# TYPE` lines of a real scrape after traffic.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_proxy::Proxy;
use weft_testkit::Pki;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every name a proxy's `/metrics` text lets a query use, from its `# TYPE` lines and samples.
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (Some(name), Some(kind)) = (it.next(), it.next()) else { continue };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !l.starts_with('#') && !l.is_empty() {
            let name = l.split(['{', ' ']).next().unwrap_or_default();
            names.insert(name.to_string());
        }
    }
    names
}

/// The `weft_*` metric names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let re = regex::Regex::new(r"\bweft_[a-zA-Z0-9_]+").unwrap();
    re.find_iter(expr).map(|m| m.as_str().to_string()).collect()
}

/// Every query string of a dashboard (panel targets, template variables), with where it is.
fn queries(v: &serde_json::Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let here = format!("{at}.{k}");
                match (k.as_str(), x) {
                    ("expr" | "query" | "definition", serde_json::Value::String(s)) => out.push((here, s.clone())),
                    _ => queries(x, &here, out),
                }
            }
        }
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                queries(x, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
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
        format!("  - name: closing\n    endpoints:\n      - {{ address: \"{closing}\", proxy: \"{closing}\", identity: \"{}\" }}\n", api_id());
    let mut cfg = client_config(app_http, app_tcp.port(), inbound, &api_id(), &extra);
    cfg.outbound.as_mut().unwrap().upstreams.push(
        serde_json::from_value(
            serde_json::json!({ "listen": "127.0.0.1:0", "service": "closing", "port": closing.port() }),
        )
        .unwrap(),
    );
    let client = Proxy::start(cfg, pki.store(CLIENT.0, CLIENT.1)).await.expect("client sidecar");
    let (http, tcp, closing) = (client.addrs.upstreams[0], client.addrs.upstreams[1], client.addrs.upstreams[2]);
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

    // Every dashboard: valid JSON with a uid and panels, and only exported names.
    let dir = repo().join("deploy/grafana");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/grafana")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "mesh overview, service and proxy dashboards: {files:?}");
    let mut unknown: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut used = 0;
    for f in &files {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap_or_else(|e| panic!("{f:?}: {e}"));
        assert!(v["uid"].as_str().is_some_and(|u| !u.is_empty()), "{f:?}: uid");
        assert!(v["panels"].as_array().is_some_and(|p| !p.is_empty()), "{f:?}: panels");
        let mut qs = vec![];
        queries(&v, "", &mut qs);
        for (at, q) in qs {
            for name in metric_names(&q) {
                used += 1;
                if !names.contains(&name) {
                    unknown.entry(name).or_default().push(format!("{}{at}", f.file_name().unwrap().to_string_lossy()));
                }
            }
        }
    }
    assert!(used > 20, "the dashboards query weft metrics ({used} uses)");
    assert!(unknown.is_empty(), "names no proxy exports: {unknown:#?}\nexported: {names:#?}");
}

#[test]
fn metric_names_are_found_in_queries_and_types_give_their_sample_names() {
    assert_eq!(
        metric_names("sum(rate(weft_http_requests_total{dst=~\"$s\"}[5m])) / weft_x"),
        ["weft_http_requests_total", "weft_x"]
    );
    let n = exported("# TYPE weft_a counter\n# TYPE weft_b histogram\n# TYPE weft_c gauge\nweft_c 1\n");
    for want in ["weft_a_total", "weft_b_bucket", "weft_b_sum", "weft_b_count", "weft_c"] {
        assert!(n.contains(want), "{want}: {n:?}");
    }
    assert!(!n.contains("weft_a"), "a counter is queried with _total");
}
