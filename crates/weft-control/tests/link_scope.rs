//! The scope of a link, on 127.0.0.1 with two real control planes: which namespaces a link
//! imports (`LinkSpec.namespaces`), services kept to their own cluster (`clusterLocal`), and the
//! exporting side's list of the clusters that import from it.

use std::time::Duration;
use weft_api::kinds::MeshConfigSpec;
use weft_control::{ControlConfig, ControlPlane};
use weft_testkit::eventually;

mod common;
use common::{admin_api as api, tempdir};

const WAIT: Duration = Duration::from_secs(15);

async fn control(name: &str, trust_domain: &str) -> ControlPlane {
    let mut cfg = ControlConfig::new(tempdir(name));
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    let mut mesh = MeshConfigSpec { trust_domain: trust_domain.into(), ..Default::default() };
    mesh.cluster.name = name.into();
    cfg.mesh = mesh;
    ControlPlane::start(cfg).await.expect("control plane")
}

/// An exported service `api` in `namespace` with one workload at 127.0.0.1:`port`.
fn exported(namespace: &str, port: u16) -> String {
    format!(
        "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: api, namespace: {namespace} }}\nspec: {{ export: true }}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: api-1, namespace: {namespace} }}\nspec: {{ service: api, address: 127.0.0.1, port: {port} }}\n"
    )
}

/// The namespaces of `cp`'s catalog services named `api` that have an endpoint of `cluster`.
async fn namespaces_from(cp: &ControlPlane, cluster: &str) -> Vec<String> {
    let (_, cat) = api(cp, "GET", "/v1/catalog", "").await;
    let mut out: Vec<String> = cat["services"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["name"] == "api")
        .filter(|s| s["instances"].as_array().into_iter().flatten().any(|i| i["cluster"] == cluster))
        .filter_map(|s| s["namespace"].as_str().map(String::from))
        .collect();
    out.sort();
    out
}

async fn wait_for_namespaces(cp: &ControlPlane, cluster: &str, want: &[&str], what: &str) {
    eventually(what, WAIT, || async move { (namespaces_from(cp, cluster).await == want).then_some(()) }).await;
}

/// A link applied with namespaces imports only those; narrowing the list withdraws the others,
/// widening it back imports them again; bad namespaces are refused naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_imports_only_the_namespaces_it_names() {
    weft_testkit::init_tracing();
    let west = control("west", "west.example").await;
    let east = control("east", "east.example").await;
    for (n, ns) in ["shop", "web", "other"].into_iter().enumerate() {
        let (status, v) = api(&west, "POST", "/v1/apply", &exported(ns, 18080 + n as u16)).await;
        assert_eq!(status, 200, "{v}");
    }
    let (status, v) = api(&west, "POST", "/v1/links/credential", r#"{"expires":"1h"}"#).await;
    assert_eq!(status, 200, "{v}");
    let cred = v["credential"].as_str().unwrap().to_string();

    // Refused, naming the field; nothing stored.
    let body = serde_json::json!({ "credential": cred, "namespaces": ["shop", "Bad_NS"] }).to_string();
    let (status, v) = api(&east, "POST", "/v1/links", &body).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("namespaces[1]"), "{v}");
    assert_eq!(api(&east, "GET", "/v1/links", "").await.1["links"], serde_json::json!([]));

    let body = serde_json::json!({ "credential": cred, "namespaces": ["shop", "web"] }).to_string();
    let (status, v) = api(&east, "POST", "/v1/links", &body).await;
    assert_eq!(status, 200, "{v}");
    wait_for_namespaces(&east, "west", &["shop", "web"], "east imports shop and web from west").await;
    let (_, v) = api(&east, "GET", "/v1/links", "").await;
    assert_eq!(v["links"][0]["namespaces"], serde_json::json!(["shop", "web"]), "{v}");
    // Kept once the link's long-lived secret is stored (the Link is rewritten then).
    let key = weft_api::resource::Key {
        kind: weft_api::resource::Kind::Link,
        namespace: "default".into(),
        name: "west".into(),
    };
    let original = weft_api::link::Credential::decode(&cred).unwrap().secret;
    let (east_ref, key_ref, original_ref) = (&east, &key, &original);
    eventually("east stores the link's stream secret", WAIT, || async move {
        match east_ref.store.get(key_ref).unwrap() {
            Some(weft_api::resource::Resource::Link(l)) if l.spec.secret != *original_ref => Some(l.spec.namespaces),
            _ => None,
        }
    })
    .await;
    assert_eq!(namespaces_from(&east, "west").await, ["shop", "web"]);

    // Narrowed: web is withdrawn.
    let (status, v) = api(&east, "PUT", "/v1/links/west/namespaces", r#"{"namespaces":["shop"]}"#).await;
    assert_eq!(status, 200, "{v}");
    wait_for_namespaces(&east, "west", &["shop"], "web is withdrawn").await;
    // Bad input: named, nothing changed.
    let (status, v) = api(&east, "PUT", "/v1/links/west/namespaces", r#"{"namespaces":["shop","shop"]}"#).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("namespaces[1]"), "{v}");
    let (status, v) = api(&east, "PUT", "/v1/links/nowhere/namespaces", r#"{"namespaces":[]}"#).await;
    assert_eq!(status, 404, "{v}");
    // Every namespace again.
    let (status, v) = api(&east, "PUT", "/v1/links/west/namespaces", r#"{"namespaces":[]}"#).await;
    assert_eq!(status, 200, "{v}");
    wait_for_namespaces(&east, "west", &["other", "shop", "web"], "every namespace is imported again").await;
}

/// The instances' clusters of `namespace/name` in `cp`'s catalog, sorted.
async fn clusters_of(cp: &ControlPlane, namespace: &str, name: &str) -> Vec<String> {
    let (_, cat) = api(cp, "GET", "/v1/catalog", "").await;
    let mut out: Vec<String> = cat["services"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["name"] == name && s["namespace"] == namespace)
        .flat_map(|s| s["instances"].as_array().cloned().unwrap_or_default())
        .filter_map(|i| i["cluster"].as_str().map(String::from))
        .collect();
    out.sort();
    out
}

/// A cluster-local service is never exported (`export: true` with it is refused, naming both
/// fields) and never merged with a linked cluster's service of the same name: this cluster's
/// callers get only its own endpoints, while a service next to it that is not cluster-local
/// does get the peer's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_local_service_keeps_to_its_own_cluster() {
    weft_testkit::init_tracing();
    let west = control("west", "west.example").await;
    let east = control("east", "east.example").await;
    // Refused, naming both fields; nothing stored.
    let both = "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: api }\nspec: { export: true, clusterLocal: true }\n";
    let (status, v) = api(&west, "POST", "/v1/apply", both).await;
    assert_eq!(status, 400, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("clusterLocal") && e.contains("export"), "{v}");

    let workload = |name: &str, port: u16| {
        format!("---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: {name}-1 }}\nspec: {{ service: {name}, address: 127.0.0.1, port: {port} }}\n")
    };
    let svc = |name: &str, spec: &str| {
        format!("---\napiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: {name} }}\nspec: {spec}\n")
    };
    // West exports api and web; east has both too, api cluster-local, web exported.
    let yaml = [
        svc("api", "{ export: true }"),
        workload("api", 18181),
        svc("web", "{ export: true }"),
        workload("web", 18182),
    ];
    let (status, v) = api(&west, "POST", "/v1/apply", &yaml.concat()).await;
    assert_eq!(status, 200, "{v}");
    let yaml = [
        svc("api", "{ clusterLocal: true }"),
        workload("api", 18281),
        svc("web", "{ export: true }"),
        workload("web", 18282),
    ];
    let (status, v) = api(&east, "POST", "/v1/apply", &yaml.concat()).await;
    assert_eq!(status, 200, "{v}");

    let (_, v) = api(&west, "POST", "/v1/links/credential", r#"{"expires":"1h"}"#).await;
    let (status, v) = api(&east, "POST", "/v1/links", v["credential"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{v}");
    // web gets west's endpoint (so the snapshot holding api has been imported) ...
    let east_ref = &east;
    eventually("east's web merges west's", WAIT, || async move {
        (clusters_of(east_ref, "default", "web").await == ["east", "west"]).then_some(())
    })
    .await;
    let (_, v) = api(&east, "GET", "/v1/links", "").await;
    assert_eq!(v["links"][0]["importedServices"], 2, "{v}");
    // ... api keeps east's only.
    assert_eq!(clusters_of(&east, "default", "api").await, ["east"]);

    // Linked the other way, west imports east's web but never its cluster-local api.
    let (_, v) = api(&east, "POST", "/v1/links/credential", r#"{"expires":"1h"}"#).await;
    let (status, v) = api(&west, "POST", "/v1/links", v["credential"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{v}");
    let west_ref = &west;
    eventually("west's web merges east's", WAIT, || async move {
        (clusters_of(west_ref, "default", "web").await == ["east", "west"]).then_some(())
    })
    .await;
    assert_eq!(clusters_of(&west, "default", "api").await, ["west"]);
}

/// The exporting side lists the clusters that import from it: name, trust domain, since when,
/// and whether the stream is open; it shows closed once the importer removes its link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exporter_lists_the_clusters_that_import_from_it() {
    weft_testkit::init_tracing();
    let west = control("west", "west.example").await;
    let east = control("east", "east.example").await;
    let (status, v) = api(&west, "GET", "/v1/importers", "").await;
    assert_eq!((status, &v["importers"]), (200, &serde_json::json!([])), "{v}");

    let (_, v) = api(&west, "POST", "/v1/links/credential", r#"{"expires":"1h"}"#).await;
    let (status, v) = api(&east, "POST", "/v1/links", v["credential"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{v}");
    let west_ref = &west;
    let importer = |open: bool| async move {
        let (_, v) = api(west_ref, "GET", "/v1/importers", "").await;
        let list = v["importers"].as_array().cloned().unwrap_or_default();
        (list.len() == 1 && list[0]["streamOpen"] == open).then(|| list[0].clone())
    };
    let i = eventually("west lists east with its stream open", WAIT, || importer(true)).await;
    assert_eq!((i["cluster"].as_str(), i["trustDomain"].as_str()), (Some("east"), Some("east.example")), "{i}");
    let since = i["sinceUnix"].as_u64().unwrap();
    assert!(since > 0 && i["connectedUnix"].as_u64().unwrap() >= since && i["disconnectedUnix"].is_null(), "{i}");
    assert!(i["peer"].as_str().is_some_and(|p| p.starts_with("127.0.0.1:")), "{i}");

    // East removes its link: its stream ends, and west shows it closed (still listed).
    let (status, v) = api(&east, "DELETE", "/v1/links/west", "").await;
    assert_eq!(status, 200, "{v}");
    let i = eventually("west shows east's stream closed", WAIT, || importer(false)).await;
    assert_eq!(i["sinceUnix"].as_u64(), Some(since), "{i}");
    assert!(i["disconnectedUnix"].as_u64().is_some(), "{i}");

    // Revoked: no longer listed.
    let (status, v) = api(&west, "POST", "/v1/links/east/revoke", "").await;
    assert_eq!(status, 200, "{v}");
    let (_, v) = api(&west, "GET", "/v1/importers", "").await;
    assert_eq!(v["importers"], serde_json::json!([]), "{v}");
}
