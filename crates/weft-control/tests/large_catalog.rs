//! Scale (issue 16, bench/multicluster.sh): a linked cluster's snapshot and a proxy's discovery
//! update larger than gRPC's default 4 MiB message limit still arrive. Before, a proxy that
//! receives every service (a gateway, a sidecar in transparent mode) in a mesh of about 45,000
//! endpoints kept its last config and reconnected every 5 s, and a link whose peer exports
//! about 50,000 endpoints never imported them.

use std::time::Duration;
use weft_api::kinds::MeshConfigSpec;
use weft_control::{ControlConfig, ControlPlane};
use weft_testkit::eventually;

mod common;
use common::{admin_api as api, sidecar, tempdir};

/// With the long locality below, each endpoint is about 400 bytes on the wire: 12,000 of them
/// make a snapshot and an update of about 5 MB.
const ENDPOINTS: usize = 12_000;

async fn control(name: &str, trust_domain: &str) -> ControlPlane {
    let mut cfg = ControlConfig::new(tempdir(&format!("large-{name}")));
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    let mut mesh = MeshConfigSpec { trust_domain: trust_domain.into(), ..Default::default() };
    mesh.cluster.name = name.into();
    cfg.mesh = mesh;
    ControlPlane::start(cfg).await.expect("control plane")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_and_an_update_over_4_mib_reach_the_linked_cluster_and_its_proxy() {
    weft_testkit::init_tracing();
    let west = control("west", "west.example").await;
    let east = control("east", "east.example").await;

    // West: one exported service with ENDPOINTS endpoints, written to the store in batches.
    let locality = format!("{}/{}/{}", "r".repeat(100), "z".repeat(100), "s".repeat(100));
    let mut docs = vec![serde_json::json!({"apiVersion": "weft.io/v1alpha1", "kind": "Service",
        "metadata": {"name": "api"}, "spec": {"export": true}})];
    for e in 0..ENDPOINTS {
        docs.push(serde_json::json!({"apiVersion": "weft.io/v1alpha1", "kind": "Workload",
            "metadata": {"name": format!("api-{e}")},
            "spec": {"service": "api", "address": format!("10.1.{}.{}", e / 250, e % 250 + 1), "port": 8080,
                     "locality": locality}}));
    }
    for batch in docs.chunks(1000) {
        let rs = weft_api::resource::parse_documents(&serde_json::Value::Array(batch.to_vec()).to_string()).unwrap();
        west.store.apply(rs).unwrap();
    }

    // East links to west and runs a proxy that receives every service.
    let (status, v) = api(&west, "POST", "/v1/links/credential", r#"{"expires":"1h"}"#).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = api(&east, "POST", "/v1/links", v["credential"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{v}");
    let east_ref = &east;
    eventually("east imports every endpoint of west", Duration::from_secs(120), || async move {
        let (_, v) = api(east_ref, "GET", "/v1/links", "").await;
        (v["links"][0]["importedEndpoints"].as_u64() == Some(ENDPOINTS as u64)).then_some(())
    })
    .await;
    let proxy = sidecar(&east, "default/web", None, "inbound: { listen: \"127.0.0.1:0\" }\n").await;
    let proxy = &proxy;
    eventually("east's proxy routes to every endpoint of west", Duration::from_secs(120), || async move {
        let routes = proxy.ctx().routes.load();
        let api = routes.services().find(|s| s.name == "api")?;
        (api.endpoints.len() == ENDPOINTS).then_some(())
    })
    .await;
    let east_dir = std::env::temp_dir().join(format!("weft-cp-large-east-{}", std::process::id()));
    let saved = std::fs::metadata(east_dir.join("links/west.snapshot")).unwrap().len();
    assert!(saved > 4 << 20, "the snapshot is over 4 MiB: {saved} bytes");
}
