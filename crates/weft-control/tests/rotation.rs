//! `weft ca rotate`: root rotation with an overlap, on real control planes and real proxies with
//! mTLS on 127.0.0.1. Requests flow through a sidecar pair the whole time; none may fail.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use weft_api::kinds::MeshConfigSpec;
use weft_control::{ControlConfig, ControlPlane};
use weft_identity::TrustBundle;
use weft_testkit::eventually;

mod common;
use common::{admin_api as api, sidecar, tempdir};

const WAIT: Duration = Duration::from_secs(30);

async fn control_in(dir: std::path::PathBuf, name: &str, trust_domain: &str) -> ControlPlane {
    control_with(dir, name, trust_domain, MeshConfigSpec::default().leaf_lifetime).await
}

async fn control_with(
    dir: std::path::PathBuf,
    name: &str,
    trust_domain: &str,
    leaf_lifetime: weft_api::Duration,
) -> ControlPlane {
    let mut cfg = ControlConfig::new(dir);
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    let mut mesh = MeshConfigSpec { trust_domain: trust_domain.into(), leaf_lifetime, ..Default::default() };
    mesh.cluster.name = name.into();
    cfg.mesh = mesh;
    ControlPlane::start(cfg).await.expect("control plane")
}

/// Service `api` (a TCP port, `export` as given) and its one Workload.
fn service(app: SocketAddr, sidecar: SocketAddr, export: bool) -> String {
    format!(
        "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: api }}\nspec: {{ export: {export}, ports: [{{ port: {}, protocol: tcp }}] }}\n---\n{}",
        app.port(),
        workload(app, sidecar)
    )
}

fn workload(app: SocketAddr, sidecar: SocketAddr) -> String {
    format!(
        "apiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: api-1 }}\nspec: {{ service: api, address: 127.0.0.1, port: {}, sidecar: \"{sidecar}\" }}\n",
        app.port()
    )
}

/// One round trip over a fresh connection to a TCP (opaque) service: every call is a new mTLS
/// handshake between the sidecars, so each one checks the certificates and bundles in force.
async fn ok(upstream: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let round = async {
        let mut s = tokio::net::TcpStream::connect(upstream).await.ok()?;
        s.write_all(b"ping").await.ok()?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.ok()?;
        (&buf == b"ping").then_some(())
    };
    matches!(tokio::time::timeout(Duration::from_secs(10), round).await, Ok(Some(())))
}

/// Calls `upstream` back to back until stopped, counting answers and failures.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(upstream: SocketAddr) -> Load {
        let (stop, sent, failed): (_, Arc<AtomicU64>, Arc<AtomicU64>) =
            (Arc::new(AtomicBool::new(false)), Arc::default(), Arc::default());
        let (s, n, f) = (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&failed));
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                if !ok(upstream).await {
                    f.fetch_add(1, Ordering::Relaxed);
                }
                n.fetch_add(1, Ordering::Relaxed);
            }
        });
        Load { stop, sent, failed, task }
    }

    /// Waits until `more` further requests were answered, so the load covers what came before.
    async fn go_on(&self, more: u64) {
        let target = self.sent.load(Ordering::Relaxed) + more;
        let sent = &self.sent;
        eventually("more requests under load", WAIT, || async move {
            (sent.load(Ordering::Relaxed) >= target).then_some(())
        })
        .await;
    }

    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        (self.sent.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}

/// The DER of the roots `GET /v1/ca` lists, by their fingerprints.
fn fingerprint(der: &[u8]) -> String {
    weft_identity::control::sha256(der).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// Waits until the control plane says no rotation is in progress.
async fn rotation_done(cp: &ControlPlane) -> serde_json::Value {
    eventually("the rotation finishes", WAIT, || async move {
        let (_, v) = api(cp, "GET", "/v1/ca", "").await;
        v["rotation"].is_null().then_some(v)
    })
    .await
}

/// The proxy's leaf chains to `root` and its bundle holds `root` and no other root of `td`.
fn only_under(p: &weft_proxy::Proxy, td: &str, root: &str) -> bool {
    let bundle = p.certs().bundle();
    let own = bundle.roots_for(td, td);
    own.len() == 1
        && fingerprint(&own[0]) == root
        && p.certs().leaf().verify_chain(&TrustBundle::new(own.clone())).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_root_under_load_fails_no_request() {
    weft_testkit::init_tracing();
    let cp = control_in(tempdir("rotate-load"), "east", "rotate.example").await;
    let app = weft_testkit::tcp_echo().await;
    let server = sidecar(&cp, "default/api", Some("api-1"), "inbound: { listen: \"127.0.0.1:0\" }\n").await;
    let (status, v) = api(&cp, "POST", "/v1/apply", &service(app, server.addrs.inbound.unwrap(), false)).await;
    assert_eq!(status, 200, "{v}");
    let client =
        sidecar(&cp, "default/web", None, "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: api }] }\n")
            .await;
    let upstream = client.addrs.upstreams[0];
    eventually("web calls api", WAIT, || async move { ok(upstream).await.then_some(()) }).await;
    let (_, before) = api(&cp, "GET", "/v1/ca", "").await;
    let old_root = before["root"]["sha256_fingerprint"].as_str().unwrap().to_string();

    let load = Load::start(upstream);
    load.go_on(20).await;
    let (status, v) = api(&cp, "POST", "/v1/ca/rotate", r#"{"overlap":"0s"}"#).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["rotation"]["phase"], "trust-both", "{v}");
    let after = rotation_done(&cp).await;
    let new_root = after["root"]["sha256_fingerprint"].as_str().unwrap().to_string();
    assert_ne!(new_root, old_root, "{after}");
    assert_eq!(after["roots"].as_array().unwrap().len(), 1, "only the new root is trusted: {after}");
    let (server_ref, client_ref, root_ref) = (&server, &client, &new_root);
    eventually("both proxies hold only the new root and a leaf from it", WAIT, || async move {
        (only_under(server_ref, "rotate.example", root_ref) && only_under(client_ref, "rotate.example", root_ref))
            .then_some(())
    })
    .await;
    load.go_on(20).await;
    let (sent, failed) = load.finish().await;
    assert_eq!(failed, 0, "{failed} of {sent} requests failed during the rotation");

    // New connections: a sidecar started now (its token pins the new root) calls the server,
    // which presents a leaf of the new root.
    let late =
        sidecar(&cp, "default/late", None, "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: api }] }\n")
            .await;
    let late_up = late.addrs.upstreams[0];
    eventually("a new sidecar calls api", WAIT, || async move { ok(late_up).await.then_some(()) }).await;
    assert!(only_under(&late, "rotate.example", &new_root));
    // proxy-status shows the root each proxy's certificate chains to.
    let (_, v) = api(&cp, "GET", "/v1/proxies", "").await;
    let want = new_root.replace(':', "").to_lowercase();
    for p in v["proxies"].as_array().unwrap() {
        assert_eq!(p["leaf_root"], want.as_str(), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_rotation_resumes_its_phase_and_bad_requests_are_refused() {
    weft_testkit::init_tracing();
    let dir = tempdir("rotate-restart");
    let cp = control_in(dir.clone(), "east", "restart.example").await;
    let (_, before) = api(&cp, "GET", "/v1/ca", "").await;
    assert!(before["rotation"].is_null(), "{before}");

    // Bad input first: a malformed overlap, and a read token.
    let (status, v) = api(&cp, "POST", "/v1/ca/rotate", r#"{"overlap":"soon"}"#).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("overlap"), "{v}");
    let (status, v) = api(&cp, "POST", "/v1/ca/rotate", r#"{"overlap":"1h","extra":1}"#).await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = api(&cp, "DELETE", "/v1/ca/rotate", "").await;
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("nothing to abort"), "{v}");
    let (_, t) = api(&cp, "POST", "/v1/tokens", r#"{"kind":"read"}"#).await;
    let (status, _) = common::api(&cp, "POST", "/v1/ca/rotate", t["token"].as_str().unwrap(), "").await;
    assert_eq!(status, 403);

    // A long overlap: with no proxy to wait for, the rotation reaches sign-new and stays there.
    let (status, v) = api(&cp, "POST", "/v1/ca/rotate", r#"{"overlap":"1h"}"#).await;
    assert_eq!(status, 200, "{v}");
    let new_root = v["rotation"]["new_root_sha256"].as_str().unwrap().to_string();
    let cp_ref = &cp;
    eventually("phase sign-new", WAIT, || async move {
        let (_, v) = api(cp_ref, "GET", "/v1/ca", "").await;
        (v["rotation"]["phase"] == "sign-new").then_some(())
    })
    .await;
    eventually("the rotation says it waits for the overlap", WAIT, || async move {
        let (_, v) = api(cp_ref, "GET", "/v1/ca", "").await;
        v["rotation"]["waiting_for"].as_str()?.contains("the overlap, until").then_some(())
    })
    .await;
    let (status, v) = api(&cp, "POST", "/v1/ca/rotate", "").await;
    assert_eq!(status, 409, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("already in progress") && e.contains("sign-new") && e.contains("--status"), "{v}");
    let (status, v) = api(&cp, "DELETE", "/v1/ca/rotate", "").await;
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("can no longer be aborted"), "{v}");

    // Restart: the same phase, the same new root; a new sidecar gets a leaf of the new root and
    // trusts both.
    cp.shutdown().await;
    let cp = control_in(dir, "east", "restart.example").await;
    let (_, v) = api(&cp, "GET", "/v1/ca", "").await;
    assert_eq!(v["rotation"]["phase"], "sign-new", "{v}");
    assert_eq!(v["rotation"]["new_root_sha256"], new_root.as_str(), "{v}");
    assert_eq!(v["roots"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["root"]["sha256_fingerprint"], before["root"]["sha256_fingerprint"], "serving root unchanged: {v}");
    let p = sidecar(&cp, "default/web", None, "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: api }] }\n")
        .await;
    let bundle = p.certs().bundle();
    assert_eq!(bundle.roots_for("restart.example", "restart.example").len(), 2);
    let new_der: Vec<_> = bundle
        .roots_for("restart.example", "restart.example")
        .into_iter()
        .filter(|r| weft_control::rotation::fingerprint(r) == new_root)
        .collect();
    assert!(p.certs().leaf().verify_chain(&TrustBundle::new(new_der)).is_ok(), "leaf from the new root");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_either_linked_clusters_root_reaches_the_peers_proxies_and_fails_no_request() {
    weft_testkit::init_tracing();
    let west = control_in(tempdir("rotate-west"), "west", "west.example").await;
    let east = control_in(tempdir("rotate-east"), "east", "east.example").await;
    let app = weft_testkit::tcp_echo().await;
    let server = sidecar(&west, "default/api", Some("api-1"), "inbound: { listen: \"127.0.0.1:0\" }\n").await;
    let (status, v) = api(&west, "POST", "/v1/apply", &service(app, server.addrs.inbound.unwrap(), true)).await;
    assert_eq!(status, 200, "{v}");
    let client =
        sidecar(&east, "default/web", None, "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: api }] }\n")
            .await;
    let upstream = client.addrs.upstreams[0];
    let (status, v) = api(&west, "POST", "/v1/links/credential", r#"{"expires":"1h"}"#).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = api(&east, "POST", "/v1/links", v["credential"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{v}");
    eventually("east calls api in west", WAIT, || async move { ok(upstream).await.then_some(()) }).await;
    let (_, before) = api(&west, "GET", "/v1/ca", "").await;
    let old_root = before["root"]["sha256_fingerprint"].as_str().unwrap().to_string();

    let load = Load::start(upstream);
    load.go_on(20).await;
    let (status, v) = api(&west, "POST", "/v1/ca/rotate", r#"{"overlap":"0s"}"#).await;
    assert_eq!(status, 200, "{v}");
    let after = rotation_done(&west).await;
    let new_root = after["root"]["sha256_fingerprint"].as_str().unwrap().to_string();
    assert_ne!(new_root, old_root, "{after}");
    let (server_ref, client_ref, root_ref) = (&server, &client, &new_root);
    eventually("west's new root alone, in west's server and in east's client", WAIT, || async move {
        let east_has = {
            let b = client_ref.certs().bundle();
            let west_roots = b.roots_for("west.example", "east.example");
            west_roots.len() == 1 && fingerprint(&west_roots[0]) == *root_ref
        };
        (only_under(server_ref, "west.example", root_ref) && east_has).then_some(())
    })
    .await;
    load.go_on(20).await;
    // East's own root is untouched.
    assert_eq!(client.certs().bundle().roots_for("east.example", "east.example").len(), 1);

    // Now the importing side: east rotates while it keeps calling west. West's server sidecar
    // must trust east's new root before east's client presents a certificate of it.
    let (_, before) = api(&east, "GET", "/v1/ca", "").await;
    let east_old = before["root"]["sha256_fingerprint"].as_str().unwrap().to_string();
    let (status, v) = api(&east, "POST", "/v1/ca/rotate", r#"{"overlap":"0s"}"#).await;
    assert_eq!(status, 200, "{v}");
    let after = rotation_done(&east).await;
    let east_new = after["root"]["sha256_fingerprint"].as_str().unwrap().to_string();
    assert_ne!(east_new, east_old, "{after}");
    let east_ref = &east_new;
    eventually("east's new root alone, in east's client and in west's server", WAIT, || async move {
        let west_has = {
            let b = server_ref.certs().bundle();
            let east_roots = b.roots_for("east.example", "west.example");
            east_roots.len() == 1 && fingerprint(&east_roots[0]) == *east_ref
        };
        (only_under(client_ref, "east.example", east_ref) && west_has).then_some(())
    })
    .await;
    load.go_on(20).await;
    let (sent, failed) = load.finish().await;
    assert_eq!(failed, 0, "{failed} of {sent} requests from east to west failed during the rotations");
    let (east_ref, server_ref) = (&east, &server);
    eventually("the link is active again", WAIT, || async move {
        let (_, v) = api(east_ref, "GET", "/v1/links", "").await;
        (v["links"][0]["state"] == "active").then_some(())
    })
    .await;
    let _ = server_ref;
    // `weft link check` trusts west's new root too (it was sent over the verified link).
    let (_, v) = api(&east, "GET", "/v1/links/west/check", "").await;
    let trusted = v["checks"].as_array().unwrap().iter().find(|c| c["name"] == "trusted").cloned();
    assert_eq!(trusted.as_ref().map(|c| c["verdict"].clone()), Some("pass".into()), "{v}");
}

/// A renewal at half-life (not a rotation) keeps the linked cluster's roots that discovery
/// installed: the Sign answer holds only this mesh's roots, and once replaced the bundle by it,
/// so that calls to the linked cluster failed until the next discovery update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_at_half_life_keeps_the_linked_clusters_roots() {
    weft_testkit::init_tracing();
    let west = control_in(tempdir("renew-west"), "west", "west.example").await;
    // East's leaves live 4 s: its client renews every ~2 s.
    let east = control_with(tempdir("renew-east"), "east", "east.example", "4s".parse().unwrap()).await;
    let app = weft_testkit::tcp_echo().await;
    let server = sidecar(&west, "default/api", Some("api-1"), "inbound: { listen: \"127.0.0.1:0\" }\n").await;
    let (status, v) = api(&west, "POST", "/v1/apply", &service(app, server.addrs.inbound.unwrap(), true)).await;
    assert_eq!(status, 200, "{v}");
    let client =
        sidecar(&east, "default/web", None, "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: api }] }\n")
            .await;
    let upstream = client.addrs.upstreams[0];
    let (_, v) = api(&west, "POST", "/v1/links/credential", r#"{"expires":"1h"}"#).await;
    let (status, v) = api(&east, "POST", "/v1/links", v["credential"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{v}");
    eventually("east calls api in west", WAIT, || async move { ok(upstream).await.then_some(()) }).await;
    let first = client.certs().leaf().chain()[0].clone();
    let (client_ref, first) = (&client, &first);
    eventually("east's client renews its certificate", WAIT, || async move {
        (client_ref.certs().leaf().chain()[0] != *first).then_some(())
    })
    .await;
    assert_eq!(client.certs().bundle().roots_for("west.example", "east.example").len(), 1, "west's root kept");
    assert!(ok(upstream).await, "east still calls west after renewing");
}
