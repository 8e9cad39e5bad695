//! The control plane's own `/metrics` (`weft control --metrics`, crate::metrics): a real scrape
//! of a running control plane, before and after a change — resources applied through the API, a
//! sidecar connecting, a link to another cluster coming up and going down — and the series that
//! must follow. And deploy/: the `weft-control` job of
//! the Prometheus scrape config, and every `weft_control_plane_*` name a Grafana dashboard uses,
//! against that real scrape (the proxies' names are weft-proxy's tests/dashboards.rs's).

use std::time::Duration;
use weft_api::kinds::MeshConfigSpec;
use weft_control::{ControlConfig, ControlPlane};
use weft_testkit::dashboards::{exported, repo, used_names, CONTROL_PLANE_PREFIX};
use weft_testkit::{eventually, http1_get};

mod common;
use common::{admin_api as api, metric, sidecar, tempdir};

const WAIT: Duration = Duration::from_secs(20);

/// The value of the unlabelled sample `name`.
fn value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn control(name: &str, trust_domain: &str, metrics: bool) -> ControlPlane {
    let mut cfg = ControlConfig::new(tempdir(&format!("metrics-{name}")));
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    cfg.metrics = metrics.then(|| "127.0.0.1:0".parse().unwrap());
    let mut mesh = MeshConfigSpec { trust_domain: trust_domain.into(), ..Default::default() };
    mesh.cluster.name = name.into();
    cfg.mesh = mesh;
    ControlPlane::start(cfg).await.expect("control plane")
}

async fn scrape(cp: &ControlPlane) -> String {
    let resp = http1_get(cp.metrics_addr.expect("metrics listener"), "/metrics").await.expect("scrape");
    assert_eq!(resp.status(), 200);
    String::from_utf8_lossy(resp.body()).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_metrics_follow_the_catalog_proxies_and_api() {
    weft_testkit::init_tracing();
    // East, with metrics, will link to west.
    let west = control("west", "west.example", false).await;
    let cp = control("east", "east.example", true).await;
    let before = scrape(&cp).await;
    for name in [
        "weft_control_plane_services",
        "weft_control_plane_endpoints",
        "weft_control_plane_proxies_connected",
        "weft_control_plane_proxies_not_synced",
        "weft_control_plane_stats_series",
        "weft_control_plane_stats_memory_bytes",
    ] {
        assert!(value(&before, name).is_some(), "{name} in\n{before}");
    }
    assert_eq!(value(&before, "weft_control_plane_services"), Some(0.0), "{before}");
    assert_eq!(value(&before, "weft_control_plane_proxies_connected"), Some(0.0), "{before}");

    // A Service with one Workload, through the API.
    let resources = "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: api }\nspec: {}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: { name: api-1 }\nspec: { service: api, address: 127.0.0.1, port: 8080 }\n";
    assert_eq!(api(&cp, "POST", "/v1/apply", resources).await.0, 200);
    let cp_ref = &cp;
    let text = eventually("the catalog's gauges", WAIT, || async move {
        let t = scrape(cp_ref).await;
        (value(&t, "weft_control_plane_services") == Some(1.0)
            && value(&t, "weft_control_plane_endpoints") == Some(1.0))
        .then_some(t)
    })
    .await;
    assert!(
        metric(&text, "weft_control_plane_api_requests_total", &["method=\"POST\"", "status=\"200\""]) >= 1.0,
        "the apply is counted:\n{text}"
    );

    // A sidecar connects: one proxy, synced, and at least its first (full) update sent.
    let _proxy =
        sidecar(&cp, "default/web", None, "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: api }] }\n")
            .await;
    let text = eventually("the proxy's gauges", WAIT, || async move {
        let t = scrape(cp_ref).await;
        (value(&t, "weft_control_plane_proxies_connected") == Some(1.0)
            && value(&t, "weft_control_plane_proxies_not_synced") == Some(0.0))
        .then_some(t)
    })
    .await;
    assert!(metric(&text, "weft_control_plane_proxy_updates_sent_total", &["kind=\"full\""]) >= 1.0, "{text}");
    // The bootstrap token's POST and the apply: two POSTs answered 200.
    assert!(
        metric(&text, "weft_control_plane_api_requests_total", &["method=\"POST\"", "status=\"200\""]) >= 2.0,
        "{text}"
    );
    // A link to west: up once active, down once west is gone.
    let (status, v) = api(&west, "POST", "/v1/links/credential", r#"{"expires":"1h"}"#).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = api(&cp, "POST", "/v1/links", v["credential"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{v}");
    let up = |t: &str| metric(t, "weft_control_plane_link_up", &["peer_cluster=\"west\""]);
    let text = eventually("the link is up", WAIT, || async move {
        let t = scrape(cp_ref).await;
        (up(&t) == 1.0).then_some(t)
    })
    .await;
    west.shutdown().await;
    eventually("the link is down", WAIT, || async move {
        let t = scrape(cp_ref).await;
        (t.contains("peer_cluster=\"west\"") && up(&t) == 0.0).then_some(())
    })
    .await;

    // The scrape config has a job for the control plane at the path it serves; the dashboards
    // use only names it exports.
    let yml = std::fs::read_to_string(repo().join("deploy/prometheus/prometheus.yml")).expect("prometheus.yml");
    let cfg: serde_json::Value = serde_saphyr::from_str(&yml).expect("prometheus.yml is YAML");
    let jobs = cfg["scrape_configs"].as_array().expect("scrape_configs");
    let job = jobs.iter().find(|j| j["job_name"] == "weft-control").expect("a weft-control job");
    assert_eq!(job["metrics_path"].as_str().unwrap_or("/metrics"), "/metrics");
    let names = exported(&text);
    let used = used_names(|n| n.starts_with(CONTROL_PLANE_PREFIX));
    assert!(used.len() >= 5, "the dashboards show the control plane: {used:?}");
    let unknown: Vec<_> = used.iter().filter(|(n, _)| !names.contains(n)).collect();
    assert!(unknown.is_empty(), "names the control plane does not export: {unknown:#?}\nexported: {names:#?}");
    // Only /metrics is served there.
    let resp = http1_get(cp.metrics_addr.unwrap(), "/v1/resources").await.unwrap();
    assert_eq!(resp.status(), 404);
}
