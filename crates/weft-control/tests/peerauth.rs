//! PeerAuthentication end to end on 127.0.0.1: a control plane, a sidecar following it in front
//! of an HTTP app, and a caller outside the mesh speaking plaintext to the sidecar. The mode the
//! control plane resolves (MeshConfig `mtls`, namespace, Service, Workload, port; the most
//! specific wins) reaches the sidecar and decides; a bad policy is refused naming the field.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_control::{ControlConfig, ControlPlane};
use weft_proxy::Proxy;
use weft_testkit::{eventually, http1_get};

mod common;
use common::{admin_api, sidecar, tempdir};

/// Whether plaintext `GET /who` through `inbound` is answered 200 (refused: closed unanswered).
async fn plaintext_served(inbound: SocketAddr) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(inbound).await else { return false };
    let req = b"GET /who HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n";
    if s.write_all(req).await.is_err() {
        return false;
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    out.starts_with(b"HTTP/1.1 200")
}

async fn apply(cp: &ControlPlane, doc: &str) -> (u16, serde_json::Value) {
    admin_api(cp, "POST", "/v1/apply", doc).await
}

async fn wait_for(server: &Proxy, served: bool, what: &str) {
    let inbound = server.addrs.inbound.unwrap();
    eventually(
        what,
        Duration::from_secs(10),
        || async move { (plaintext_served(inbound).await == served).then_some(()) },
    )
    .await;
}

fn policy(name: &str, namespace: &str, spec: &str) -> String {
    format!(
        "apiVersion: weft.io/v1alpha1\nkind: PeerAuthentication\nmetadata: {{ name: {name}, namespace: {namespace} }}\nspec: {spec}\n"
    )
}

#[tokio::test]
async fn the_resolved_mode_reaches_the_sidecar_and_decides_plaintext() {
    weft_testkit::init_tracing();
    let dir = tempdir("peerauth");
    let mut cfg = ControlConfig::new(dir.clone());
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    let cp = ControlPlane::start(cfg).await.expect("control plane");
    let app = weft_testkit::http_echo("api").await;
    let server = sidecar(&cp, "default/api", Some("api-1"), "inbound: { listen: \"127.0.0.1:0\" }\n").await;
    let resources = format!(
        "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: api }}\nspec: {{ ports: [{{ port: {p} }}] }}\n---\n\
         apiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: api-1 }}\nspec: {{ service: api, address: 127.0.0.1, port: {p}, sidecar: \"{}\" }}\n",
        server.addrs.inbound.unwrap(),
        p = app.port(),
    );
    let (status, v) = apply(&cp, &resources).await;
    assert_eq!(status, 200, "{v}");
    let admin = server.addrs.admin.unwrap();
    eventually("the sidecar has its app port", Duration::from_secs(10), || async move {
        let r = http1_get(admin, "/config_dump").await.ok()?;
        String::from_utf8_lossy(r.body()).contains(&app.port().to_string()).then_some(())
    })
    .await;
    // STRICT by default.
    wait_for(&server, false, "STRICT refuses plaintext").await;

    // Mesh-wide PERMISSIVE (root namespace), then the namespace back to STRICT, then the Service's
    // port PERMISSIVE again: each more specific level wins over the one before.
    let (status, v) = apply(&cp, &policy("mesh", "weft-system", "{ mtls: { mode: PERMISSIVE } }")).await;
    assert_eq!(status, 200, "{v}");
    wait_for(&server, true, "mesh-wide PERMISSIVE serves plaintext").await;
    let (status, v) = apply(&cp, &policy("ns", "default", "{ mtls: { mode: STRICT } }")).await;
    assert_eq!(status, 200, "{v}");
    wait_for(&server, false, "the namespace's STRICT beats the mesh's PERMISSIVE").await;
    let port_level = format!(
        "{{ targetRef: {{ kind: Service, name: api }}, portLevelMtls: {{ \"{}\": {{ mode: DISABLE }} }} }}",
        app.port()
    );
    let (status, v) = apply(&cp, &policy("svc", "default", &port_level)).await;
    assert_eq!(status, 200, "{v}");
    wait_for(&server, true, "the Service's port DISABLE beats the namespace").await;
    let (status, v) =
        apply(&cp, &policy("wl", "default", "{ targetRef: { kind: Workload, name: api-1 }, mtls: { mode: STRICT } }"))
            .await;
    assert_eq!(status, 200, "{v}");
    wait_for(&server, false, "the Workload's STRICT beats the Service's port").await;

    // Bad input: refused, naming the field and the fix.
    let (status, v) = apply(&cp, &policy("bad", "default", "{ portLevelMtls: { \"80\": { mode: STRICT } } }")).await;
    assert_eq!(status, 400, "{v}");
    assert!(v.to_string().contains("spec.portLevelMtls") && v.to_string().contains("targetRef"), "{v}");
    let (status, v) = apply(&cp, &policy("bad", "default", "{ mtls: { mode: LOOSE } }")).await;
    assert_eq!(status, 400, "{v}");
    assert!(v.to_string().contains("spec.mtls.mode"), "{v}");
    let _ = std::fs::remove_dir_all(&dir);
}
