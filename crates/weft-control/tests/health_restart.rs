//! Health state survives a restart of the control plane on the same data directory: a reported
//! TTL check stays passing (the endpoint is in the very first catalog after the start), a failed
//! one stays critical with its output, and a Workload re-applied with a changed check starts it
//! fresh. (weft-cli's `tests/control.rs` does the same with kill -9 under traffic.)

use std::net::SocketAddr;
use std::time::Duration;
use weft_control::{ControlConfig, ControlPlane};
use weft_testkit::eventually;

mod common;
use common::{admin_api as api, tempdir};

async fn control(dir: &std::path::Path) -> ControlPlane {
    let mut cfg = ControlConfig::new(dir.to_path_buf());
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    ControlPlane::start(cfg).await.expect("control plane")
}

/// Service `api` and Workload `api-1` with an HTTP check on `app` and a TTL check of `ttl`.
async fn apply(cp: &ControlPlane, app: SocketAddr, ttl: &str) {
    let yaml = format!(
        "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: api }}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: api-1 }}\nspec:\n  service: api\n  address: 127.0.0.1\n  port: {}\n  checks:\n  - {{ name: http, http: \"http://{app}/\", interval: 1s, successThreshold: 2 }}\n  - {{ name: heartbeat, ttl: {ttl} }}\n",
        app.port()
    );
    let (status, v) = api(cp, "POST", "/v1/apply", &yaml).await;
    assert_eq!(status, 200, "{v}");
}

/// Whether the catalog routes to api-1.
fn routed(cp: &ControlPlane) -> bool {
    cp.catalog.borrow().services.values().flat_map(|s| &s.instances).any(|i| i.name == "api-1" && i.healthy)
}

async fn heartbeat(cp: &ControlPlane) -> (String, String) {
    let (_, v) = api(cp, "GET", "/v1/health/workload/default/api-1", "").await;
    let c = v["checks"].as_array().unwrap().iter().find(|c| c["name"] == "heartbeat").unwrap().clone();
    (c["status"].as_str().unwrap().to_string(), c["output"].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_state_survives_a_restart_and_a_changed_check_starts_fresh() {
    weft_testkit::init_tracing();
    let dir = tempdir("health-restart");
    let app = weft_testkit::http_echo("api").await;
    let cp = control(&dir).await;
    apply(&cp, app, "5m").await;
    // The monitor takes the Workload's checks as soon as it sees the write.
    eventually("the TTL report is taken", Duration::from_secs(15), || async {
        let (status, _) = api(&cp, "PUT", "/v1/agent/check/pass/default/api-1/heartbeat", "all good").await;
        (status == 200).then_some(())
    })
    .await;
    eventually("api-1 routed", Duration::from_secs(15), || async { routed(&cp).then_some(()) }).await;
    cp.shutdown().await;

    // From the first catalog on: the HTTP check (2 passes needed) and the TTL need nothing new.
    let cp = control(&dir).await;
    assert!(routed(&cp), "api-1 is routed from the start: {:?}", cp.catalog.borrow().services);
    assert_eq!(heartbeat(&cp).await, ("passing".to_string(), "all good".to_string()));

    // A failed report stays failed across a restart.
    let (status, _) = api(&cp, "PUT", "/v1/agent/check/fail/default/api-1/heartbeat", "disk full").await;
    assert_eq!(status, 200);
    cp.shutdown().await;
    let cp = control(&dir).await;
    assert!(!routed(&cp), "a critical workload is not revived by a restart");
    assert_eq!(heartbeat(&cp).await, ("critical".to_string(), "disk full".to_string()));

    // Passing again, then the Workload re-applied with another TTL: that check starts fresh.
    api(&cp, "PUT", "/v1/agent/check/pass/default/api-1/heartbeat", "").await;
    apply(&cp, app, "10m").await;
    let (status, output) = eventually("the changed check starts fresh", Duration::from_secs(15), || async {
        let h = heartbeat(&cp).await;
        h.1.contains("no update").then_some(h)
    })
    .await;
    assert_eq!(status, "critical", "{output}");
    cp.shutdown().await;
    let cp = control(&dir).await;
    assert_eq!(heartbeat(&cp).await.0, "critical");
    assert!(!routed(&cp));
    cp.shutdown().await;
}
