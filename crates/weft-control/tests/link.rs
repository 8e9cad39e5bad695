//! `weft link`, multi-primary on one network, on 127.0.0.1: two control planes with independent
//! roots and trust domains; cluster east links to cluster west with west's credential and its
//! sidecars call west's exported service directly, with mTLS, each side verifying the other
//! against the other's own root only.

use std::net::SocketAddr;
use std::time::Duration;
use weft_api::kinds::MeshConfigSpec;
use weft_control::{ControlConfig, ControlPlane};
use weft_testkit::{eventually, http1_get};

mod common;
use common::{admin_api as api, sidecar, tempdir};

const WAIT: Duration = Duration::from_secs(15);

async fn control(name: &str, trust_domain: &str) -> ControlPlane {
    control_in(tempdir(name), name, trust_domain).await
}

async fn control_in(dir: std::path::PathBuf, name: &str, trust_domain: &str) -> ControlPlane {
    control_at(dir, name, trust_domain, "127.0.0.1:0".parse().unwrap()).await
}

async fn control_at(dir: std::path::PathBuf, name: &str, trust_domain: &str, grpc: SocketAddr) -> ControlPlane {
    let mut cfg = ControlConfig::new(dir);
    cfg.grpc = grpc;
    cfg.api = "127.0.0.1:0".parse().unwrap();
    let mut mesh = MeshConfigSpec { trust_domain: trust_domain.into(), ..Default::default() };
    mesh.cluster.name = name.into();
    cfg.mesh = mesh;
    ControlPlane::start(cfg).await.expect("control plane")
}

fn workload(app: SocketAddr, sidecar: SocketAddr) -> String {
    format!(
        "apiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: api-1 }}\nspec: {{ service: api, address: 127.0.0.1, port: {}, sidecar: \"{sidecar}\" }}\n",
        app.port()
    )
}

/// The status of `upstream`'s answer to GET /hello, and its body when 200.
async fn call(upstream: SocketAddr) -> Option<(u16, serde_json::Value)> {
    let r = http1_get(upstream, "/hello").await.ok()?;
    let status = r.status().as_u16();
    Some((status, serde_json::from_slice(r.body()).unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_clusters_call_each_other_with_their_own_roots() {
    weft_testkit::init_tracing();
    let west = control("west", "west.example").await;
    let east = control("east", "east.example").await;

    // West: api, exported, with a real app behind its server sidecar.
    let app = weft_testkit::http_echo("api-in-west").await;
    let server = sidecar(&west, "default/api", Some("api-1"), "inbound: { listen: \"127.0.0.1:0\" }\n").await;
    let svc = "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: api }\nspec: { export: true }\n---\n";
    let (status, v) =
        api(&west, "POST", "/v1/apply", &format!("{svc}{}", workload(app, server.addrs.inbound.unwrap()))).await;
    assert_eq!(status, 200, "{v}");
    // And a service it does not export.
    let hidden = "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: secret }\nspec: {}\n";
    assert_eq!(api(&west, "POST", "/v1/apply", hidden).await.0, 200);

    // East: a client sidecar that calls api.
    let client =
        sidecar(&east, "default/web", None, "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: api }] }\n")
            .await;
    let upstream = client.addrs.upstreams[0];
    assert_ne!(call(upstream).await.map(|c| c.0), Some(200), "no api in east before the link");

    // West makes a credential; east applies it.
    let (status, v) = api(&west, "POST", "/v1/links/credential", r#"{"expires":"1h"}"#).await;
    assert_eq!(status, 200, "{v}");
    let cred = v["credential"].as_str().unwrap().to_string();
    assert!(!cred.contains('\n') && cred.starts_with("weftlink1."), "{cred}");
    let (status, v) = api(&east, "POST", "/v1/links", &cred).await;
    assert_eq!(status, 200, "{v}");

    // East's client reaches west's app, with mTLS, and the app sees east's identity.
    let body = eventually("east calls api in west", WAIT, || async move {
        call(upstream).await.filter(|c| c.0 == 200).map(|c| c.1)
    })
    .await;
    assert_eq!(body["peer_identity"], "spiffe://east.example/ns/default/sa/web", "{body}");
    assert_eq!(body["app"], "api-in-west", "{body}");
    let (_, v) = api(&east, "GET", "/v1/links", "").await;
    let link = &v["links"][0];
    assert_eq!((link["cluster"].as_str(), link["state"].as_str()), (Some("west"), Some("active")), "{v}");
    assert_eq!((link["importedServices"].as_u64(), link["importedEndpoints"].as_u64()), (Some(1), Some(1)), "{v}");
    assert!(link.get("secret").is_none() && link["lastSyncUnix"].as_u64().is_some(), "{v}");
    // The credential's expiring secret was exchanged for the link's own long-lived one, and
    // the link runs on it.
    let key = weft_api::resource::Key {
        kind: weft_api::resource::Kind::Link,
        namespace: "default".into(),
        name: "west".into(),
    };
    let east_ref = &east;
    let key_ref = &key;
    let original = weft_api::link::Credential::decode(&cred).unwrap().secret;
    let original_ref = &original;
    let stream_secret = eventually("east stores the link's stream secret", WAIT, || async move {
        match east_ref.store.get(key_ref).unwrap() {
            Some(weft_api::resource::Resource::Link(l)) if l.spec.secret != *original_ref => Some(l.spec.secret),
            _ => None,
        }
    })
    .await;
    eventually("the link is active on its stream secret", WAIT, || async move {
        let (_, v) = api(east_ref, "GET", "/v1/links", "").await;
        (v["links"][0]["state"] == "active").then_some(())
    })
    .await;
    assert_eq!(call(upstream).await.map(|c| c.0), Some(200));

    // Only the exported service was imported.
    let (_, cat) = api(&east, "GET", "/v1/catalog", "").await;
    assert!(!cat.to_string().contains("\"secret\""), "unexported service imported: {cat}");

    // Refused, with what is wrong and what to do; nothing stored.
    let (status, v) = api(&east, "POST", "/v1/links", &cred).await;
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("weft link remove west"), "{v}");
    let (status, v) = api(&west, "POST", "/v1/links", &cred).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("cannot link to itself"), "{v}");
    let mut expired = weft_api::link::Credential::decode(&cred).unwrap();
    expired.expires_unix = 1;
    let third = control("third", "third.example").await;
    let (status, v) = api(&third, "POST", "/v1/links", &expired.encode()).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("expired"), "{v}");
    let (status, v) = api(&third, "POST", "/v1/links", "weftlink1.!!!").await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("damaged"), "{v}");
    let (_, v) = api(&third, "GET", "/v1/links", "").await;
    assert_eq!(v["links"], serde_json::json!([]), "nothing half-applied: {v}");
    // Another cluster presenting east's stream secret is refused by west.
    let mut stolen = weft_api::link::Credential::decode(&cred).unwrap();
    stolen.secret = stream_secret;
    let (status, v) = api(&third, "POST", "/v1/links", &stolen.encode()).await;
    assert_eq!(status, 200, "{v}");
    let third_ref = &third;
    let err = eventually("west refuses a stream secret of another cluster", WAIT, || async move {
        let (_, v) = api(third_ref, "GET", "/v1/links", "").await;
        v["links"][0]["error"].as_str().filter(|e| e.contains("belongs to cluster")).map(str::to_string)
    })
    .await;
    assert!(err.contains("\"east\""), "{err}");
    assert_eq!(api(&third, "DELETE", "/v1/links/west", "").await.0, 200);
    let link_yaml = "apiVersion: weft.io/v1alpha1\nkind: Link\nmetadata: { name: west }\nspec: { cluster: west, trustDomain: west.example, address: \"127.0.0.1:1\", rootPem: \"-----BEGIN CERTIFICATE-----\", secret: x, expiresUnix: 1 }\n";
    let (status, v) = api(&third, "POST", "/v1/apply", link_yaml).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("weft link apply"), "{v}");

    // An endpoint removed in west leaves east's proxies; back when it returns.
    let (status, v) = api(&west, "DELETE", "/v1/resources/workload/default/api-1", "").await;
    assert_eq!(status, 200, "{v}");
    eventually("the removed endpoint leaves east", WAIT, || async move {
        call(upstream).await.filter(|c| c.0 == 503).map(|_| ())
    })
    .await;
    let (status, v) = api(&west, "POST", "/v1/apply", &workload(app, server.addrs.inbound.unwrap())).await;
    assert_eq!(status, 200, "{v}");
    eventually("the endpoint returns to east", WAIT, || async move {
        call(upstream).await.filter(|c| c.0 == 200).map(|_| ())
    })
    .await;

    // `weft link remove` withdraws everything it imported.
    let (status, v) = api(&east, "DELETE", "/v1/links/west", "").await;
    assert_eq!(status, 200, "{v}");
    // The service is gone from east altogether: the sidecar has no route for it.
    eventually("link removal withdraws api", WAIT, || async move {
        match call(upstream).await {
            Some((200, _)) => None,
            _ => Some(()),
        }
    })
    .await;
    let (_, v) = api(&east, "GET", "/v1/links", "").await;
    assert_eq!(v["links"], serde_json::json!([]), "{v}");
    let (status, v) = api(&east, "DELETE", "/v1/links/west", "").await;
    assert_eq!(status, 404, "{v}");
    drop(server);
}

/// The last snapshot of a link is kept in the data directory: a restarted control plane routes
/// to the peer's endpoints before the peer answers (here: never, it is gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_survive_a_restart_before_the_peer_answers() {
    weft_testkit::init_tracing();
    let west = control("west-r", "west.example").await;
    let east_dir = tempdir("east-r");
    let east = control_in(east_dir.clone(), "east-r", "east.example").await;
    let docs = "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: api }\nspec: { export: true }\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: { name: api-1 }\nspec: { service: api, address: 127.0.0.1, port: 9, sidecar: \"127.0.0.1:10\" }\n";
    assert_eq!(api(&west, "POST", "/v1/apply", docs).await.0, 200);
    let (_, v) = api(&west, "POST", "/v1/links/credential", "").await;
    let cred = v["credential"].as_str().unwrap().to_string();
    let (status, v) = api(&east, "POST", "/v1/links", &cred).await;
    assert_eq!(status, 200, "{v}");
    let imported = |cp: &ControlPlane| {
        let cat = cp.catalog.borrow().clone();
        cat.services
            .get(&("default".to_string(), "api".to_string()))
            .map(|s| s.instances.iter().map(|i| (i.cluster.clone(), i.address.to_string())).collect::<Vec<_>>())
    };
    let east_ref = &east;
    eventually("east imports api", WAIT, || async move { imported(east_ref).filter(|i| !i.is_empty()).map(|_| ()) })
        .await;

    // West goes away; east restarts on the same data directory.
    west.shutdown().await;
    east.shutdown().await;
    let east_dir_links = east_dir.join("links");
    assert!(east_dir_links.join("west-r.snapshot").exists());
    let east = control_in(east_dir, "east-r", "east.example").await;
    assert_eq!(imported(&east), Some(vec![("west-r".to_string(), "127.0.0.1:9".to_string())]), "restored at start");
    let (_, v) = api(&east, "GET", "/v1/links", "").await;
    assert_eq!(v["links"][0]["importedEndpoints"], 1, "{v}");
    assert_ne!(v["links"][0]["state"], "active", "{v}");
    // Removing the link withdraws the restored imports and forgets the snapshot.
    assert_eq!(api(&east, "DELETE", "/v1/links/west-r", "").await.0, 200);
    let east_ref = &east;
    eventually(
        "the restored imports are withdrawn",
        WAIT,
        || async move { imported(east_ref).is_none().then_some(()) },
    )
    .await;
    let saved = east_dir_links.join("west-r.snapshot");
    eventually("the snapshot is forgotten", WAIT, || {
        let gone = !saved.exists();
        async move { gone.then_some(()) }
    })
    .await;
}

/// Health travels with the link: an endpoint failing its check in its own cluster leaves the
/// linked cluster's catalog (and so its proxies), and returns when it passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_endpoint_leaves_the_linked_cluster() {
    weft_testkit::init_tracing();
    let west = control("west-h", "west.example").await;
    let east = control("east-h", "east.example").await;
    let docs = "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: api }\nspec: { export: true }\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: { name: api-1 }\nspec: { service: api, address: 127.0.0.1, port: 9, sidecar: \"127.0.0.1:10\", checks: [{ name: hb, ttl: 1m }] }\n";
    assert_eq!(api(&west, "POST", "/v1/apply", docs).await.0, 200);
    let (_, v) = api(&west, "POST", "/v1/links/credential", "").await;
    let (status, v) = api(&east, "POST", "/v1/links", v["credential"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{v}");
    let endpoints = |cp: &ControlPlane| {
        let cat = cp.catalog.borrow().clone();
        cat.services.get(&("default".to_string(), "api".to_string())).map(|s| s.instances.len())
    };
    let east_ref = &east;
    eventually("api imported, without its unreported endpoint", WAIT, || async move {
        (endpoints(east_ref) == Some(0)).then_some(())
    })
    .await;
    assert_eq!(api(&west, "PUT", "/v1/agent/check/pass/default/api-1/hb", "").await.0, 200);
    eventually(
        "the passing endpoint reaches east",
        WAIT,
        || async move { (endpoints(east_ref) == Some(1)).then_some(()) },
    )
    .await;
    assert_eq!(api(&west, "PUT", "/v1/agent/check/fail/default/api-1/hb", "").await.0, 200);
    eventually(
        "the failing endpoint leaves east",
        WAIT,
        || async move { (endpoints(east_ref) == Some(0)).then_some(()) },
    )
    .await;
}

/// The exporting control plane restarts: the link reconnects on its stream secret (the
/// credential's would do too, but the stream secret must survive the restart) and resyncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_resyncs_after_the_exporter_restarts() {
    weft_testkit::init_tracing();
    let west_dir = tempdir("west-x");
    let west = control_in(west_dir.clone(), "west-x", "west.example").await;
    let west_grpc = west.grpc_addr;
    let east = control("east-x", "east.example").await;
    let wl = |n: u16| {
        format!("apiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: api-{n} }}\nspec: {{ service: api, address: 127.0.0.{n}, port: 9, sidecar: \"127.0.0.{n}:10\" }}\n")
    };
    let svc = "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: api }\nspec: { export: true }\n---\n";
    assert_eq!(api(&west, "POST", "/v1/apply", &format!("{svc}{}", wl(1))).await.0, 200);
    let (_, v) = api(&west, "POST", "/v1/links/credential", "").await;
    let cred = v["credential"].as_str().unwrap().to_string();
    let (status, v) = api(&east, "POST", "/v1/links", &cred).await;
    assert_eq!(status, 200, "{v}");
    let endpoints = |cp: &ControlPlane| {
        let cat = cp.catalog.borrow().clone();
        cat.services.get(&("default".to_string(), "api".to_string())).map(|s| s.instances.len())
    };
    let east_ref = &east;
    eventually("one endpoint imported", WAIT, || async move { (endpoints(east_ref) == Some(1)).then_some(()) }).await;
    // Wait until the link runs on its stream secret, so the restart tests that secret.
    let original = weft_api::link::Credential::decode(&cred).unwrap().secret;
    let original_ref = &original;
    let key = weft_api::resource::Key {
        kind: weft_api::resource::Kind::Link,
        namespace: "default".into(),
        name: "west-x".into(),
    };
    let key_ref = &key;
    eventually("the stream secret is stored", WAIT, || async move {
        match east_ref.store.get(key_ref).unwrap() {
            Some(weft_api::resource::Resource::Link(l)) => (l.spec.secret != *original_ref).then_some(()),
            _ => None,
        }
    })
    .await;
    eventually("the link is established", WAIT, || async move {
        let (_, v) = api(east_ref, "GET", "/v1/links", "").await;
        (v["links"][0]["state"] == "active").then_some(())
    })
    .await;

    west.shutdown().await;
    eventually("east notices west is gone", WAIT, || async move {
        let (_, v) = api(east_ref, "GET", "/v1/links", "").await;
        (v["links"][0]["state"] == "failing").then_some(())
    })
    .await;
    assert_eq!(endpoints(&east), Some(1), "imports kept while the peer is away");
    let west = control_at(west_dir, "west-x", "west.example", west_grpc).await;
    assert_eq!(api(&west, "POST", "/v1/apply", &wl(2)).await.0, 200);
    eventually("east resyncs with the restarted west", WAIT, || async move {
        (endpoints(east_ref) == Some(2)).then_some(())
    })
    .await;
    let (_, v) = api(&east, "GET", "/v1/links", "").await;
    assert_eq!(v["links"][0]["state"], "active", "{v}");
}

/// `weft link revoke` on the exporting side cuts the link at once, the importer withdraws what
/// it imported, and old credentials are void; a new credential links again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_link_is_cut_withdrawn_and_its_credentials_void() {
    weft_testkit::init_tracing();
    let west = control("west-v", "west.example").await;
    let east = control("east-v", "east.example").await;
    let docs = "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: api }\nspec: { export: true }\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: { name: api-1 }\nspec: { service: api, address: 127.0.0.1, port: 9, sidecar: \"127.0.0.1:10\" }\n";
    assert_eq!(api(&west, "POST", "/v1/apply", docs).await.0, 200);
    let (_, v) = api(&west, "POST", "/v1/links/credential", "").await;
    let old = v["credential"].as_str().unwrap().to_string();
    assert_eq!(api(&east, "POST", "/v1/links", &old).await.0, 200);
    let endpoints = |cp: &ControlPlane| {
        let cat = cp.catalog.borrow().clone();
        cat.services.get(&("default".to_string(), "api".to_string())).map(|s| s.instances.len())
    };
    let east_ref = &east;
    eventually("api imported", WAIT, || async move { (endpoints(east_ref) == Some(1)).then_some(()) }).await;

    let (status, v) = api(&west, "POST", "/v1/links/east-v/revoke", "").await;
    assert_eq!(status, 200, "{v}");
    eventually("the revoked link's imports are withdrawn", WAIT, || async move {
        endpoints(east_ref).is_none().then_some(())
    })
    .await;
    let err = eventually("east says the link was revoked", WAIT, || async move {
        let (_, v) = api(east_ref, "GET", "/v1/links", "").await;
        v["links"][0]["error"].as_str().filter(|e| e.contains("revoked")).map(str::to_string)
    })
    .await;
    assert!(err.contains("weft link revoke"), "{err}");

    // The old credential is void; a new one links again.
    assert_eq!(api(&east, "DELETE", "/v1/links/west-v", "").await.0, 200);
    assert_eq!(api(&east, "POST", "/v1/links", &old).await.0, 200);
    eventually("the old credential is refused", WAIT, || async move {
        let (_, v) = api(east_ref, "GET", "/v1/links", "").await;
        v["links"][0]["error"].as_str().filter(|e| e.contains("credential was revoked")).map(|_| ())
    })
    .await;
    assert_eq!(api(&east, "DELETE", "/v1/links/west-v", "").await.0, 200);
    let (_, v) = api(&west, "POST", "/v1/links/credential", "").await;
    assert_eq!(api(&east, "POST", "/v1/links", v["credential"].as_str().unwrap()).await.0, 200);
    eventually("a new credential links again", WAIT, || async move { (endpoints(east_ref) == Some(1)).then_some(()) })
        .await;
}

/// The verdict and fix of check `name` in a `GET /v1/links/{cluster}/check` answer.
fn check_line<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v["checks"].as_array().and_then(|c| c.iter().find(|c| c["name"] == name)).unwrap_or(&serde_json::Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_check_names_an_untrusted_peer_and_a_revoked_link() {
    weft_testkit::init_tracing();
    let west = control("west-t", "west-t.example").await;
    let east = control("east-t", "east-t.example").await;
    let north = control("north-t", "north-t.example").await;
    let east_ref = &east;

    // A credential of west's whose address was changed to north's: the endpoint answers, but its
    // certificate does not verify against west's root.
    let (_, v) = api(&west, "POST", "/v1/links/credential", "").await;
    let mut cred = weft_api::link::Credential::decode(v["credential"].as_str().unwrap()).unwrap();
    cred.address = north.grpc_addr.to_string();
    assert_eq!(api(&east, "POST", "/v1/links", &cred.encode()).await.0, 200);
    let (status, v) = api(&east, "GET", "/v1/links/west-t/check", "").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(check_line(&v, "reachable")["verdict"], "pass", "{v}");
    let trusted = check_line(&v, "trusted");
    assert_eq!(trusted["verdict"], "fail", "{v}");
    assert!(trusted["detail"].as_str().unwrap().contains("TLS with the peer control plane"), "{v}");
    assert!(trusted["fix"].as_str().unwrap().contains("weft link remove west-t"), "{v}");
    assert_eq!(check_line(&v, "synced")["verdict"], "fail", "{v}");
    assert_eq!(api(&east, "DELETE", "/v1/links/west-t", "").await.0, 200);

    // The real credential: every check passes once the first snapshot is in.
    let (_, v) = api(&west, "POST", "/v1/links/credential", "").await;
    assert_eq!(api(&east, "POST", "/v1/links", v["credential"].as_str().unwrap()).await.0, 200);
    let v = eventually("the link checks pass", WAIT, || async move {
        let (_, v) = api(east_ref, "GET", "/v1/links/west-t/check", "").await;
        (v["ok"] == true).then_some(v)
    })
    .await;
    for name in ["reachable", "trusted", "secret", "stream", "synced"] {
        assert_eq!(check_line(&v, name)["verdict"], "pass", "{name}: {v}");
        assert!(check_line(&v, name)["fix"].is_null(), "{v}");
    }

    // West revokes east: the stream check fails and names the fix (a new credential).
    assert_eq!(api(&west, "POST", "/v1/links/east-t/revoke", "").await.0, 200);
    let v = eventually("the check shows the revocation", WAIT, || async move {
        let (_, v) = api(east_ref, "GET", "/v1/links/west-t/check", "").await;
        // Between the cut and the refusal the stream also fails, as `connecting`: wait for the
        // refusal itself.
        let stream = check_line(&v, "stream");
        (stream["verdict"] == "fail" && stream["detail"].as_str().is_some_and(|d| d.contains("revoked"))).then_some(v)
    })
    .await;
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(check_line(&v, "reachable")["verdict"], "pass", "{v}");
    assert_eq!(check_line(&v, "trusted")["verdict"], "pass", "{v}");
    let stream = check_line(&v, "stream");
    assert!(stream["detail"].as_str().unwrap().contains("revoked"), "{v}");
    assert!(stream["fix"].as_str().unwrap().contains("weft link create` on cluster west-t"), "{v}");

    // A link that does not exist.
    let (status, _) = api(&east, "GET", "/v1/links/nowhere/check", "").await;
    assert_eq!(status, 404);
}
