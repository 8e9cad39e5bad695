//! A Service's `failover` and `clusterWeights` reach the proxies on the discovery stream, and a
//! proxy learns its own cluster and locality from the Workload it fronts (Placement). A Service's
//! `outlierDetection` replaces the proxy's settings field by field.

use std::time::Duration;
use weft_control::{ControlConfig, ControlPlane};
use weft_testkit::{eventually, http1_get};

mod common;
use common::{api, sidecar, tempdir};

const RESOURCES: &str = r#"
apiVersion: weft.io/v1alpha1
kind: Service
metadata: { name: api }
spec: { ports: [{ port: 8080 }], failover: [west, central], outlierDetection: { consecutive5xx: 2, baseEjectionTime: 10s } }
---
apiVersion: weft.io/v1alpha1
kind: Service
metadata: { name: db }
spec: { clusterWeights: { east: 90, west: 10 } }
---
apiVersion: weft.io/v1alpha1
kind: Workload
metadata: { name: web-1 }
spec: { service: web, address: 127.0.0.2, port: 8080, locality: us-east/b }
---
apiVersion: weft.io/v1alpha1
kind: Service
metadata: { name: web }
spec: {}
---
apiVersion: weft.io/v1alpha1
kind: Workload
metadata: { name: api-1 }
spec: { service: api, address: 127.0.0.3, port: 8080, cluster: east }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_failover_cluster_weights_and_outlier_detection_reach_the_proxy() {
    weft_testkit::init_tracing();
    let dir = tempdir("failover-fields");
    let mut cfg = ControlConfig::new(dir.clone());
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    cfg.mesh.cluster.name = "east".into();
    let cp = ControlPlane::start(cfg).await.expect("control plane");
    let (status, v) = api(&cp, "POST", "/v1/apply", &cp.admin_token, RESOURCES).await;
    assert_eq!(status, 200, "{v}");

    let client = sidecar(
        &cp,
        "default/web",
        Some("web-1"),
        "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: api }, { listen: \"127.0.0.1:0\", service: db }] }\n",
    )
    .await;
    let admin = client.addrs.admin.expect("admin");
    let dump = eventually("the proxy has both services", Duration::from_secs(10), || async move {
        let r = http1_get(admin, "/config_dump").await.ok()?;
        let v: serde_json::Value = serde_json::from_slice(r.body()).ok()?;
        let routes = v["routes"].as_array()?;
        (routes.iter().filter(|s| s["name"] == "api" || s["name"] == "db").count() == 2).then_some(v)
    })
    .await;
    let service = |name: &str| dump["routes"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap().clone();
    let api_svc = service("api");
    assert_eq!(api_svc["balance"]["failover"], serde_json::json!(["west", "central"]), "{api_svc}");
    assert_eq!(
        api_svc["balance"]["own"],
        serde_json::json!({ "cluster": "east", "locality": "us-east/b" }),
        "placement from the Workload the proxy fronts: {api_svc}"
    );
    assert_eq!(api_svc["balance"]["tiers"], serde_json::json!([[{ "weight": 1, "endpoints": ["127.0.0.3:8080"] }]]));
    let outlier = &api_svc["balance"]["outlier_detection"];
    assert_eq!(outlier["consecutive_5xx"], 2, "the Service's own setting: {outlier}");
    assert_eq!(outlier["base_ejection_time"], "10s", "{outlier}");
    assert_eq!(outlier["consecutive_connect_failures"], 5, "the proxy's default for what it leaves out: {outlier}");
    let db = service("db");
    assert_eq!(db["balance"]["cluster_weights"], serde_json::json!({ "east": 90, "west": 10 }), "{db}");

    // Bad input names the field and changes nothing.
    let bad = "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: db }\nspec: { clusterWeights: { east: 0, west: 0 } }\n";
    let (status, v) = api(&cp, "POST", "/v1/apply", &cp.admin_token, bad).await;
    assert_eq!(status, 400, "{v}");
    assert!(v.to_string().contains("clusterWeights"), "{v}");
    let _ = std::fs::remove_dir_all(&dir);
}
