//! Incremental link updates: after a stream's first full snapshot, a change in the exporting
//! cluster travels as a delta (only the services that changed), a removal by delta withdraws the
//! endpoint or service from the importing cluster's proxies, and a new stream (a reconnect)
//! starts again with a full snapshot. Observed through the link's status (`GET /v1/links`:
//! `updates.full`, `updates.delta`) and a real sidecar's `/config_dump`; the sidecar itself gets
//! one full update and then deltas (`GET /v1/proxies`: `updates_full`, `updates_delta`).

use std::net::SocketAddr;
use std::time::Duration;
use weft_api::kinds::MeshConfigSpec;
use weft_control::{ControlConfig, ControlPlane};
use weft_testkit::{eventually, http1_get};

mod common;
use common::{admin_api as api, sidecar, tempdir};

const WAIT: Duration = Duration::from_secs(20);

async fn control_at(dir: std::path::PathBuf, name: &str, trust_domain: &str, grpc: SocketAddr) -> ControlPlane {
    let mut cfg = ControlConfig::new(dir);
    cfg.grpc = grpc;
    cfg.api = "127.0.0.1:0".parse().unwrap();
    let mut mesh = MeshConfigSpec { trust_domain: trust_domain.into(), ..Default::default() };
    mesh.cluster.name = name.into();
    cfg.mesh = mesh;
    ControlPlane::start(cfg).await.expect("control plane")
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn service(name: &str) -> String {
    format!(
        "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: {name} }}\nspec: {{ export: true }}\n---\n"
    )
}

fn workload(service: &str, n: u8) -> String {
    format!("apiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: {service}-{n} }}\nspec: {{ service: {service}, address: 127.0.0.{n}, port: 9, sidecar: \"127.0.0.{n}:10\" }}\n---\n")
}

/// The link's `updates` counters (full, delta, resyncs) as `GET /v1/links` shows them.
async fn updates(cp: &ControlPlane) -> (u64, u64, u64) {
    let (_, v) = api(cp, "GET", "/v1/links", "").await;
    let u = &v["links"][0]["updates"];
    (u["full"].as_u64().unwrap_or(0), u["delta"].as_u64().unwrap_or(0), u["resyncs"].as_u64().unwrap_or(0))
}

/// The endpoint addresses of `service` in the catalog of `cp`, sorted.
fn endpoints(cp: &ControlPlane, service: &str) -> Option<Vec<String>> {
    let cat = cp.catalog.borrow().clone();
    let s = cat.services.get(&("default".to_string(), service.to_string()))?;
    let mut v: Vec<String> = s.instances.iter().map(|i| i.address.to_string()).collect();
    v.sort();
    Some(v)
}

/// The route of `service` in the proxy's `/config_dump`, as JSON text (`None`: no such route).
async fn route(admin: SocketAddr, service: &str) -> Option<String> {
    let r = http1_get(admin, "/config_dump").await.ok()?;
    let v: serde_json::Value = serde_json::from_slice(r.body()).ok()?;
    v["routes"].as_array()?.iter().find(|s| s["name"] == service).map(|s| s.to_string())
}

/// Links east to west and waits until the link runs on its own stream secret (storing it
/// restarts the link's task, which opens a second stream) with both services imported.
async fn linked(west: &ControlPlane, east: &ControlPlane) {
    let (_, v) = api(west, "POST", "/v1/links/credential", "").await;
    let cred = v["credential"].as_str().unwrap().to_string();
    let (status, v) = api(east, "POST", "/v1/links", &cred).await;
    assert_eq!(status, 200, "{v}");
    let original = weft_api::link::Credential::decode(&cred).unwrap().secret;
    let key = weft_api::resource::Key {
        kind: weft_api::resource::Kind::Link,
        namespace: "default".into(),
        name: "west".into(),
    };
    let (key, original) = (&key, &original);
    eventually("the stream secret is stored and its stream imported", WAIT, || async move {
        let stored = match east.store.get(key).unwrap() {
            Some(weft_api::resource::Resource::Link(l)) => l.spec.secret != *original,
            _ => false,
        };
        // The second stream (on the stored secret) started with a full snapshot too.
        (stored && updates(east).await.0 >= 2 && endpoints(east, "web").is_some()).then_some(())
    })
    .await;
}

/// After the initial sync, one endpoint added in west reaches east as a delta, not a full
/// snapshot; an endpoint removed and a whole service removed travel as deltas too and leave
/// east's sidecar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_travels_as_a_delta_and_a_removal_leaves_the_proxies() {
    weft_testkit::init_tracing();
    let west = control_at(tempdir("west-d"), "west", "west.example", any_port()).await;
    let east = control_at(tempdir("east-d"), "east", "east.example", any_port()).await;
    let docs = [service("api"), workload("api", 1), workload("api", 2), service("web"), workload("web", 5)].concat();
    assert_eq!(api(&west, "POST", "/v1/apply", &docs).await.0, 200);
    linked(&west, &east).await;
    let client = sidecar(
        &east,
        "default/client",
        None,
        "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: api }, { listen: \"127.0.0.1:0\", service: web }] }\n",
    )
    .await;
    let admin = client.addrs.admin.expect("admin");
    eventually("east's sidecar routes to both of west's services", WAIT, || async move {
        let api = route(admin, "api").await?;
        (api.contains("127.0.0.1:9") && api.contains("127.0.0.2:9") && route(admin, "web").await.is_some())
            .then_some(())
    })
    .await;
    let (full, delta, _) = updates(&east).await;

    // One endpoint added.
    assert_eq!(api(&west, "POST", "/v1/apply", &workload("api", 3)).await.0, 200);
    let east_ref = &east;
    eventually("the new endpoint reaches east", WAIT, || async move {
        (endpoints(east_ref, "api")?.len() == 3).then_some(())
    })
    .await;
    let (full_now, delta_now, _) = updates(&east).await;
    assert_eq!(full_now, full, "no full snapshot after the initial sync");
    assert!(delta_now > delta, "the change came as a delta ({delta} -> {delta_now})");
    eventually("and east's sidecar", WAIT, || async move {
        route(admin, "api").await.filter(|r| r.contains("127.0.0.3:9")).map(|_| ())
    })
    .await;

    // One endpoint removed, then a whole service.
    let (status, v) = api(&west, "DELETE", "/v1/resources/workload/default/api-1", "").await;
    assert_eq!(status, 200, "{v}");
    eventually("the removed endpoint leaves east's sidecar", WAIT, || async move {
        route(admin, "api").await.filter(|r| !r.contains("127.0.0.1:9") && r.contains("127.0.0.2:9")).map(|_| ())
    })
    .await;
    for path in ["/v1/resources/workload/default/web-5", "/v1/resources/service/default/web"] {
        let (status, v) = api(&west, "DELETE", path, "").await;
        assert_eq!(status, 200, "{v}");
    }
    eventually("the removed service leaves east and its sidecar", WAIT, || async move {
        (endpoints(east_ref, "web").is_none() && route(admin, "web").await.is_none()).then_some(())
    })
    .await;
    let (full_end, delta_end, resyncs) = updates(&east).await;
    assert_eq!(full_end, full, "removals came as deltas too");
    assert!(delta_end >= delta_now + 2, "{delta_now} -> {delta_end}");
    assert_eq!(resyncs, 0);
    assert_eq!(endpoints(&east, "api").unwrap(), ["127.0.0.2:9", "127.0.0.3:9"]);
    // East's sidecar got one full update, then only what changed for it.
    let (_, v) = api(&east, "GET", "/v1/proxies", "").await;
    let p = &v["proxies"][0];
    assert_eq!(p["updates_full"], 1, "{p}");
    assert!(p["updates_delta"].as_u64().unwrap() >= 3, "{p}");
}

/// A new stream starts with a full snapshot: after the exporter restarts (with changes made
/// meanwhile), the link resyncs in full, holds exactly the exporter's state, and goes on with
/// deltas on the new stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_resyncs_with_a_full_snapshot_then_deltas() {
    weft_testkit::init_tracing();
    let west_dir = tempdir("west-r");
    let west = control_at(west_dir.clone(), "west", "west.example", any_port()).await;
    let west_grpc = west.grpc_addr;
    let east = control_at(tempdir("east-r"), "east", "east.example", any_port()).await;
    let docs = [service("api"), workload("api", 1), workload("api", 2), service("web"), workload("web", 5)].concat();
    assert_eq!(api(&west, "POST", "/v1/apply", &docs).await.0, 200);
    linked(&west, &east).await;
    let (full, _, _) = updates(&east).await;

    west.shutdown().await;
    let east_ref = &east;
    eventually("east notices west is gone", WAIT, || async move {
        let (_, v) = api(east_ref, "GET", "/v1/links", "").await;
        (v["links"][0]["state"] == "failing").then_some(())
    })
    .await;
    // While east is cut off, west changes: one endpoint gone, one new.
    let west = control_at(west_dir, "west", "west.example", west_grpc).await;
    let (status, v) = api(&west, "DELETE", "/v1/resources/workload/default/api-1", "").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(api(&west, "POST", "/v1/apply", &workload("api", 4)).await.0, 200);
    eventually("east resyncs with the restarted west", WAIT, || async move {
        (endpoints(east_ref, "api")? == ["127.0.0.2:9", "127.0.0.4:9"]).then_some(())
    })
    .await;
    let (full_now, delta_now, _) = updates(&east).await;
    assert!(full_now > full, "the new stream started with a full snapshot ({full} -> {full_now})");

    assert_eq!(api(&west, "POST", "/v1/apply", &workload("api", 6)).await.0, 200);
    eventually("a later change on the new stream", WAIT, || async move {
        (endpoints(east_ref, "api")?.len() == 3).then_some(())
    })
    .await;
    let (full_end, delta_end, _) = updates(&east).await;
    assert_eq!(full_end, full_now, "one full snapshot per stream");
    assert!(delta_end > delta_now, "then deltas ({delta_now} -> {delta_end})");
}
