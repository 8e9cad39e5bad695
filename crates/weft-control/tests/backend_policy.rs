//! A BackendPolicy reaches the proxies on the discovery stream: its load balancer and limits, and
//! its outlier detection over the Service's; the oldest of two policies on one Service applies;
//! a policy naming a missing Service is accepted with a condition that says so, and applies once
//! the Service exists. Real control plane, real sidecar, `/config_dump` read back.

use std::time::Duration;
use weft_control::{ControlConfig, ControlPlane};
use weft_testkit::{eventually, http1_get};

mod common;
use common::{api, sidecar, tempdir};

const RESOURCES: &str = r#"
apiVersion: weft.io/v1alpha1
kind: Service
metadata: { name: api }
spec: { ports: [{ port: 8080 }], outlierDetection: { consecutive5xx: 2, baseEjectionTime: 10s } }
---
apiVersion: weft.io/v1alpha1
kind: Workload
metadata: { name: api-1 }
spec: { service: api, address: 127.0.0.3, port: 8080, weight: 3 }
---
apiVersion: weft.io/v1alpha1
kind: BackendPolicy
metadata: { name: first }
spec:
  targetRef: { kind: Service, name: api }
  loadBalancer: { type: Maglev, hashOn: { header: x-user } }
  connectionLimits: { maxRequests: 7 }
  outlierDetection: { consecutiveGatewayErrors: 4, baseEjectionTime: 20s }
---
apiVersion: weft.io/v1alpha1
kind: BackendPolicy
metadata: { name: orphan }
spec: { targetRef: { kind: Service, name: db }, loadBalancer: { type: Random } }
"#;

const LATER: &str = r#"
apiVersion: weft.io/v1alpha1
kind: BackendPolicy
metadata: { name: a-later }
spec: { targetRef: { kind: Service, name: api }, loadBalancer: { type: Random } }
"#;

async fn dump_of(
    admin: std::net::SocketAddr,
    name: &'static str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    eventually("the proxy's config", Duration::from_secs(10), || {
        let check = &check;
        async move {
            let r = http1_get(admin, "/config_dump").await.ok()?;
            let v: serde_json::Value = serde_json::from_slice(r.body()).ok()?;
            let s = v["routes"].as_array()?.iter().find(|s| s["name"] == name)?.clone();
            check(&s).then_some(s)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_policy_reaches_the_proxy_and_the_oldest_wins() {
    weft_testkit::init_tracing();
    let dir = tempdir("backend-policy");
    let mut cfg = ControlConfig::new(dir.clone());
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    let cp = ControlPlane::start(cfg).await.expect("control plane");
    let (status, v) = api(&cp, "POST", "/v1/apply", &cp.admin_token, RESOURCES).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = api(&cp, "POST", "/v1/apply", &cp.admin_token, LATER).await;
    assert_eq!(status, 200, "{v}");

    let client =
        sidecar(&cp, "default/web", None, "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: api }, { listen: \"127.0.0.1:0\", service: db }] }\n")
            .await;
    let admin = client.addrs.admin.expect("admin");
    let svc = dump_of(admin, "api", |s| !s["balance"]["backend_policy"].is_null()).await;
    let b = &svc["balance"];
    assert_eq!(b["backend_policy"]["name"], "first", "the older policy applies: {b}");
    assert_eq!(b["load_balancer"], "Maglev", "{b}");
    assert_eq!(b["connection_limits"]["max-requests"]["max"], 7, "{b}");
    let o = &b["outlier_detection"];
    assert_eq!(o["consecutive_gateway_errors"], 4, "the policy's field: {o}");
    assert_eq!(o["base_ejection_time"], "20s", "the policy's over the Service's: {o}");
    assert_eq!(o["consecutive_5xx"], 2, "the Service's where the policy says nothing: {o}");

    // Status: which applies, which conflicts, which has no target (once the catalog has them all).
    let condition = |name: &'static str| {
        let cp = &cp;
        async move {
            let path = format!("/v1/resources/BackendPolicy/default/{name}");
            let (_, v) = api(cp, "GET", &path, &cp.admin_token, "").await;
            v["status"]["conditions"][0]["message"].as_str().unwrap_or_default().to_string()
        }
    };
    let later = eventually("the later policy's condition", Duration::from_secs(10), || async {
        Some(condition("a-later").await).filter(|m| !m.starts_with("Pending"))
    })
    .await;
    assert!(later.starts_with("Conflicted: BackendPolicy first is older"), "{later}");
    let orphan = condition("orphan").await;
    assert!(orphan.starts_with("TargetNotFound: Service default/db"), "{orphan}");
    let (_, v) = api(&cp, "GET", "/v1/resources/BackendPolicy/default/orphan", &cp.admin_token, "").await;
    assert_eq!(v["status"]["conditions"][0]["type"], "TargetNotFound", "{v}");
    let (_, svc) = api(&cp, "GET", "/v1/resources/Service/default/api", &cp.admin_token, "").await;
    assert_eq!(svc["status"]["backendPolicy"], "first", "{svc}");
    assert_eq!(svc["status"]["backendPolicies"].as_array().map(Vec::len), Some(2), "both naming it are shown: {svc}");

    // Once the Service exists, the orphan applies.
    let db = "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: db }\nspec: {}\n";
    let (status, v) = api(&cp, "POST", "/v1/apply", &cp.admin_token, db).await;
    assert_eq!(status, 200, "{v}");
    let db = dump_of(admin, "db", |s| s["balance"]["load_balancer"] == "Random").await;
    assert_eq!(db["balance"]["backend_policy"]["name"], "orphan");

    // A bad policy is refused, naming the field.
    let bad = "apiVersion: weft.io/v1alpha1\nkind: BackendPolicy\nmetadata: { name: bad }\n\
               spec: { targetRef: { kind: Service, name: api }, loadBalancer: { type: RingHash } }\n";
    let (status, v) = api(&cp, "POST", "/v1/apply", &cp.admin_token, bad).await;
    assert_eq!(status, 400, "{v}");
    assert!(v.to_string().contains("spec.loadBalancer.hashOn"), "{v}");
}
