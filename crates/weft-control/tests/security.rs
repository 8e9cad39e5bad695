//! The control plane's trust boundaries, attacked as a token holder, a workload or a peer would:
//! real control planes and proxies on 127.0.0.1, real TLS.

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::Full;
use std::time::Duration;
use weft_api::proxy::Control;
use weft_control::{ControlConfig, ControlPlane};
use weft_testkit::eventually;

mod common;
use common::{api, bootstrap_token, tempdir};

const DEADLINE: Duration = Duration::from_secs(10);

fn config(dir: &std::path::Path) -> ControlConfig {
    let mut cfg = ControlConfig::new(dir.to_path_buf());
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    cfg
}

async fn control(dir: &std::path::Path) -> ControlPlane {
    ControlPlane::start(config(dir)).await.expect("control plane")
}

#[tokio::test]
async fn the_control_planes_identity_is_reserved() {
    weft_testkit::init_tracing();
    let dir = tempdir("reserved");
    let cp = control(&dir).await;

    // No token for it.
    let body = r#"{"kind":"bootstrap","identity":"weft-system/control"}"#;
    let (status, v) = api(&cp, "POST", "/v1/tokens", &cp.admin_token, body).await;
    assert_eq!(status, 400, "{v}");
    let err = v["error"].as_str().unwrap();
    assert!(err.starts_with("identity:") && err.contains("reserved for the control plane"), "{err}");

    // No Workload that would run as it.
    let yaml = "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: control, namespace: weft-system }\nspec: {}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: { name: c, namespace: weft-system }\nspec: { service: control, address: 127.0.0.1, port: 80 }\n";
    let (status, v) = api(&cp, "POST", "/v1/apply", &cp.admin_token, yaml).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("metadata.namespace: \"weft-system\" is reserved"), "{v}");

    // A token for it made with the control plane's key (as one issued before the fix was): it
    // never gets a certificate.
    let key_holder = weft_control::tokens::Tokens::open(&dir).unwrap();
    key_holder.set_ca(&weft_identity::control::sha256(&pem_root(&cp).await), "cluster.local");
    let grant =
        weft_control::tokens::Grant::Bootstrap { namespace: "weft-system".into(), service_account: "control".into() };
    let forged = key_holder.issue(grant, None);
    let err = weft_proxy::control::sign(&Control::new(cp.grpc_addr, forged), 0).await.unwrap_err().to_string();
    assert!(err.contains("reserved for the control plane"), "{err}");

    // The real control plane is still accepted by a proxy with a new token.
    let token = bootstrap_token(&cp, "default/web").await;
    let (leaf, _) = weft_proxy::control::sign(&Control::new(cp.grpc_addr, token), 0).await.unwrap();
    assert_eq!(leaf.id().to_string(), "spiffe://cluster.local/ns/default/sa/web");
}

/// The mesh's root, DER, from `GET /v1/ca`.
async fn pem_root(cp: &ControlPlane) -> Vec<u8> {
    let (_, ca) = api(cp, "GET", "/v1/ca", &cp.admin_token, "").await;
    let bundle = weft_identity::TrustBundle::from_pem(ca["root_pem"].as_str().unwrap()).unwrap();
    bundle.roots()[0].to_vec()
}

#[tokio::test]
async fn a_token_without_a_trust_domain_is_refused_with_the_fix() {
    weft_testkit::init_tracing();
    let dir = tempdir("old-token");
    let cp = control(&dir).await;
    // A token as issued before tokens named the trust domain (the same key, no `td`).
    let old = weft_control::tokens::Tokens::open(&dir).unwrap();
    let grant = weft_control::tokens::Grant::Bootstrap { namespace: "default".into(), service_account: "web".into() };
    let token = old.issue(grant, None);
    let (_, ca) = api(&cp, "GET", "/v1/ca", &cp.admin_token, "").await;
    let root_file = dir.join("root.pem");
    std::fs::write(&root_file, ca["root_pem"].as_str().unwrap()).unwrap();
    let control = Control { ca_file: Some(root_file.display().to_string()), ..Control::new(cp.grpc_addr, token) };
    let err = weft_proxy::control::sign(&control, 0).await.unwrap_err().to_string();
    assert!(err.contains("control.token") && err.contains("weft token create"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_script_checks_stop_when_the_flag_is_off_after_a_restart() {
    weft_testkit::init_tracing();
    let dir = tempdir("scripts");
    let mark = dir.join("ran");
    let mut cfg = config(&dir);
    cfg.enable_script_checks = true;
    let cp = ControlPlane::start(cfg).await.unwrap();
    let yaml = format!(
        "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: api }}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: w }}\nspec: {{ service: api, address: 127.0.0.1, port: 80, checks: [{{ name: s, interval: 100ms, script: [sh, -c, \"echo ran > {}\"] }}] }}\n",
        mark.display()
    );
    let (status, v) = api(&cp, "POST", "/v1/apply", &cp.admin_token, &yaml).await;
    assert_eq!(status, 200, "{v}");
    let health = |cp: &ControlPlane| {
        let (addr, token, tls) = (cp.api_addr, cp.admin_token.clone(), cp.api_client_tls());
        async move {
            let req = http::Request::builder()
                .uri("/v1/health/workload/default/w")
                .header("host", "cp")
                .header("authorization", format!("Bearer {token}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let resp = weft_testkit::api_request(addr, tls, req).await.ok()?;
            serde_json::from_slice::<serde_json::Value>(resp.body()).ok()
        }
    };
    eventually("the script check passes while allowed", DEADLINE, || async {
        health(&cp).await.filter(|v| v["status"] == "passing")
    })
    .await;
    assert!(mark.exists());
    cp.shutdown().await;
    std::fs::remove_file(&mark).unwrap();

    // Restarted without the flag: the stored check is skipped and critical, saying why.
    let cp = ControlPlane::start(config(&dir)).await.unwrap();
    let v = eventually("the stored script check is reported off", DEADLINE, || async {
        health(&cp).await.filter(|v| v["status"] == "critical")
    })
    .await;
    assert_eq!(v["checks"][0]["output"], weft_health::SCRIPT_CHECKS_OFF, "{v}");
    assert!(!mark.exists(), "the script did not run");
}

#[tokio::test]
async fn a_ca_file_with_several_meshes_roots_accepts_only_the_tokens_control_plane() {
    weft_testkit::init_tracing();
    let (dir_a, dir_b) = (tempdir("td-a"), tempdir("td-b"));
    let a = control(&dir_a).await;
    let mut cfg = config(&dir_b);
    cfg.mesh.trust_domain = "other.mesh".into();
    let b = ControlPlane::start(cfg).await.unwrap();
    // One file with both meshes' roots, each labelled with its trust domain by `GET /v1/ca`.
    let mut pem = String::new();
    for cp in [&a, &b] {
        let (_, ca) = api(cp, "GET", "/v1/ca", &cp.admin_token, "").await;
        let root_pem = ca["root_pem"].as_str().unwrap();
        assert!(root_pem.starts_with(weft_identity::PEM_LABEL), "{root_pem}");
        pem.push_str(root_pem);
    }
    let file = dir_a.join("roots.pem");
    std::fs::write(&file, &pem).unwrap();
    let token = bootstrap_token(&a, "default/web").await;
    let at = |addr| Control { ca_file: Some(file.display().to_string()), ..Control::new(addr, token.clone()) };
    weft_proxy::control::connect(&at(a.grpc_addr), 0).await.expect("the token's own control plane");
    let err = weft_proxy::control::connect(&at(b.grpc_addr), 0).await.unwrap_err().to_string();
    assert!(err.contains("TLS with the control plane") && err.contains("UnknownIssuer"), "{err}");
    // The certificate it gets is bound the same way: its bundle holds a's root for cluster.local.
    let (leaf, bundle) = weft_proxy::control::sign(&at(a.grpc_addr), 0).await.unwrap();
    assert_eq!(
        bundle.domains().map(|(d, _)| d.map(str::to_string)).collect::<Vec<_>>(),
        vec![Some("cluster.local".to_string())]
    );
    assert_eq!(leaf.id().trust_domain(), "cluster.local");
}

/// Opens a discovery stream as `token`'s proxy (fronting `workload`, if named) and returns the
/// first update.
async fn first_update(cp: &ControlPlane, token: &str, workload: &str) -> weft_api::pb::ProxyUpdate {
    let control = Control::new(cp.grpc_addr, token.to_string());
    let channel = weft_proxy::control::connect(&control, 0).await.unwrap();
    let mut client = weft_api::pb::discovery_client::DiscoveryClient::new(channel);
    let hello = weft_api::pb::Hello { proxy_id: "probe".into(), workload: workload.into(), ..Default::default() };
    let msg = weft_api::pb::ProxyMessage { kind: Some(weft_api::pb::proxy_message::Kind::Hello(hello)) };
    let mut req = tonic::Request::new(futures_util::stream::iter(vec![msg]).chain(futures_util::stream::pending()));
    req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let mut updates = client.stream(req).await.unwrap().into_inner();
    updates.message().await.unwrap().unwrap()
}

fn names(u: &weft_api::pb::ProxyUpdate) -> Vec<String> {
    let mut v: Vec<String> = u.services.iter().map(|s| format!("{}/{}", s.namespace, s.name)).collect();
    v.sort();
    v
}

#[tokio::test]
async fn discovery_sends_only_what_proxies_use_and_visibility_narrows_it() {
    weft_testkit::init_tracing();
    let dir = tempdir("visibility");
    let cp = control(&dir).await;
    let yaml = "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: db, namespace: secret }\nspec: {}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: { name: db-1, namespace: secret, labels: { password-hint: hunter2 } }\nspec: { service: db, address: 127.0.0.1, port: 5432 }\n---\napiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: web }\nspec: {}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: { name: web-1 }\nspec: { service: web, address: 127.0.0.1, port: 8080 }\n";
    let (status, v) = api(&cp, "POST", "/v1/apply", &cp.admin_token, yaml).await;
    assert_eq!(status, 200, "{v}");
    let token = bootstrap_token(&cp, "default/web").await;
    // Mesh-wide by default (cross-namespace calls keep working), without labels.
    let u = first_update(&cp, &token, "web-1").await;
    assert_eq!(names(&u), ["default/web", "secret/db"]);
    assert!(u.services.iter().flat_map(|s| &s.endpoints).all(|e| e.labels.is_empty()), "{u:?}");
    // Narrowed to its own namespace.
    let narrowed = yaml.replace("port: 8080 }", "port: 8080, visibility: [] }");
    let (status, v) = api(&cp, "POST", "/v1/apply", &cp.admin_token, &narrowed).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(names(&first_update(&cp, &token, "web-1").await), ["default/web"]);
    assert_eq!(names(&first_update(&cp, &token, "").await), ["default/web"], "every Workload of the identity");
    let listed = yaml.replace("port: 8080 }", "port: 8080, visibility: [secret] }");
    assert_eq!(api(&cp, "POST", "/v1/apply", &cp.admin_token, &listed).await.0, 200);
    assert_eq!(names(&first_update(&cp, &token, "web-1").await), ["default/web", "secret/db"]);
    // A bad entry names the field.
    let bad = yaml.replace("port: 8080 }", "port: 8080, visibility: [\"Not A Namespace\"] }");
    let (status, v) = api(&cp, "POST", "/v1/apply", &cp.admin_token, &bad).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("spec.visibility[0]"), "{v}");
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn chmod(path: &std::path::Path, m: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(m)).unwrap();
}

#[tokio::test]
async fn the_data_dir_is_private_and_a_damaged_key_stops_the_start() {
    weft_testkit::init_tracing();
    let dir = tempdir("datadir");
    let cp = control(&dir).await;
    cp.shutdown().await;
    // As an older version left it: world-readable directories and files.
    let weft_files =
        ["token.key", "admin.token", "ca/root-key.pem", "ca/intermediate-key.pem", "ca/root.pem", "store/weft.redb"];
    for d in ["", "ca", "store"] {
        chmod(&dir.join(d), 0o755);
    }
    for f in weft_files {
        chmod(&dir.join(f), 0o644);
    }
    let other = dir.join("notes.txt");
    std::fs::write(&other, "not weft's").unwrap();
    chmod(&other, 0o644);
    let cp = control(&dir).await;
    for d in ["", "ca", "store"] {
        assert_eq!(mode(&dir.join(d)), 0o700, "{d}/");
    }
    for f in weft_files {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&other), 0o644, "only weft's own entries are touched");
    cp.shutdown().await;

    // A damaged token key: the start fails, naming the file, and the key is kept.
    std::fs::write(dir.join("token.key"), b"tiny").unwrap();
    let err = ControlPlane::start(config(&dir)).await.err().expect("refused").to_string();
    assert!(err.contains("token.key") && err.contains("4 bytes"), "{err}");
    assert_eq!(std::fs::read(dir.join("token.key")).unwrap(), b"tiny");
}

type Opened = (
    tokio::sync::mpsc::Sender<weft_api::pb::ProxyMessage>,
    Result<tonic::Streaming<weft_api::pb::ProxyUpdate>, tonic::Status>,
);

/// Opens a discovery stream with `hello`, presenting `certs` if given; the sender stays open
/// for acks.
async fn open_stream(
    cp: &ControlPlane,
    token: &str,
    hello: weft_api::pb::Hello,
    certs: Option<&weft_identity::CertStore>,
) -> Opened {
    let control = Control::new(cp.grpc_addr, token.to_string());
    let channel = match certs {
        Some(c) => weft_proxy::control::connect_presenting(&control, 0, c).await.unwrap(),
        None => weft_proxy::control::connect(&control, 0).await.unwrap(),
    };
    let mut client = weft_api::pb::discovery_client::DiscoveryClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let msg = weft_api::pb::ProxyMessage { kind: Some(weft_api::pb::proxy_message::Kind::Hello(hello)) };
    tx.send(msg).await.unwrap();
    let outbound = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut req = tonic::Request::new(outbound);
    req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    (tx, client.stream(req).await.map(|r| r.into_inner()))
}

fn hello(proxy_id: &str) -> weft_api::pb::Hello {
    weft_api::pb::Hello { proxy_id: proxy_id.into(), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_reported_fields_are_bounded_and_the_listed_identity_is_verified() {
    weft_testkit::init_tracing();
    let dir = tempdir("reported");
    let mut cfg = config(&dir);
    cfg.max_streams_per_token = 2;
    let cp = ControlPlane::start(cfg).await.unwrap();
    let token = bootstrap_token(&cp, "default/web").await;

    // Bounded, well-formed self-reports only.
    let refused = |o: Opened| o.1.expect_err("refused");
    let s = refused(open_stream(&cp, &token, hello(&"x".repeat(10_000)), None).await);
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    assert!(s.message().contains("Hello.proxy_id"), "{s:?}");
    let s = refused(open_stream(&cp, &token, hello("a\",\"identity\":\"spiffe://x"), None).await);
    assert!(s.message().contains("Hello.proxy_id"), "{s:?}");
    let many = weft_api::pb::Hello { upstreams: vec!["api.default".into(); 5000], ..hello("p") };
    let s = refused(open_stream(&cp, &token, many, None).await);
    assert!(s.message().contains("Hello.upstreams"), "{s:?}");

    // A proxy with its certificate: listed with the identity TLS verified; its Ack.error is cut.
    let (leaf, bundle) = weft_proxy::control::sign(&Control::new(cp.grpc_addr, token.clone()), 0).await.unwrap();
    let certs = weft_identity::CertStore::new(leaf, bundle).unwrap();
    let (tx, updates) = open_stream(&cp, &token, hello("web-1"), Some(&certs)).await;
    let mut updates = updates.unwrap();
    let first = updates.message().await.unwrap().unwrap();
    let ack = weft_api::pb::Ack { version: first.version, error: "e".repeat(1 << 20), ..Default::default() };
    tx.send(weft_api::pb::ProxyMessage { kind: Some(weft_api::pb::proxy_message::Kind::Ack(ack)) }).await.unwrap();
    let cp_ref = &cp;
    let listed = eventually("web-1 listed with its error", DEADLINE, || async move {
        let (_, v) = api(cp_ref, "GET", "/v1/proxies", &cp_ref.admin_token, "").await;
        v["proxies"].as_array()?.iter().find(|p| p["proxy_id"] == "web-1" && p["error"].is_string()).cloned()
    })
    .await;
    assert_eq!(listed["identity"], "spiffe://cluster.local/ns/default/sa/web");
    assert_eq!(listed["identity_from"], "certificate");
    assert!(listed["error"].as_str().unwrap().len() <= 1100, "Ack.error is bounded");

    // A certificate that is not the token's identity: refused.
    let api_token = bootstrap_token(&cp, "default/api").await;
    let s = refused(open_stream(&cp, &api_token, hello("api-1"), Some(&certs)).await);
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");

    // Streams per token: the second is allowed (no certificate: listed from the token), the
    // third is not, and a slot comes back when a stream ends.
    let (tx2, second) = open_stream(&cp, &token, hello("web-2"), None).await;
    let mut second = second.unwrap();
    second.message().await.unwrap().unwrap();
    let (_, v) = api(&cp, "GET", "/v1/proxies", &cp.admin_token, "").await;
    let web2 = v["proxies"].as_array().unwrap().iter().find(|p| p["proxy_id"] == "web-2").unwrap().clone();
    assert_eq!(web2["identity_from"], "token");
    let s = refused(open_stream(&cp, &token, hello("web-3"), None).await);
    assert_eq!(s.code(), tonic::Code::ResourceExhausted);
    assert!(s.message().contains("--max-streams-per-token"), "{s:?}");
    drop((tx2, second));
    eventually("a slot is free again", DEADLINE, || async {
        let (tx, r) = open_stream(&cp, &token, hello("web-3"), None).await;
        r.ok().map(|s| (tx, s))
    })
    .await;
    drop((tx, updates));
}

#[tokio::test]
async fn the_grpc_listener_closes_a_connection_that_never_sends_the_http2_preface() {
    use tokio::io::AsyncReadExt;
    weft_testkit::init_tracing();
    let dir = tempdir("preface");
    let cp = control(&dir).await;
    let pin = weft_identity::control::sha256(&pem_root(&cp).await);
    let tls =
        weft_identity::control::client_config(weft_identity::control::ControlTrust::Pin(pin), "cluster.local", None)
            .unwrap();
    let tcp = tokio::net::TcpStream::connect(cp.grpc_addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("control.weft").unwrap();
    let mut conn = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls)).connect(name, tcp).await.unwrap();
    // Handshake done; nothing more sent. The server closes within its handshake + preface limit.
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(weft_control::grpc_tls::HANDSHAKE_TIMEOUT * 3, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection was still open");
}

#[tokio::test]
async fn the_http_api_closes_slow_heads_and_caps_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    weft_testkit::init_tracing();
    let dir = tempdir("api-limits");
    let mut cfg = config(&dir);
    cfg.api_limits.header_read = Duration::from_secs(1);
    cfg.api_limits.max_connections = 2;
    let cp = ControlPlane::start(cfg).await.unwrap();

    // A head that never completes (after the TLS handshake): closed after header_read.
    let tcp = tokio::net::TcpStream::connect(cp.api_addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(cp.api_client_tls().unwrap());
    let mut slow = tls.connect(rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(), tcp).await.unwrap();
    slow.write_all(b"GET /v1/resources HTTP/1.1\r\nhost: cp\r\n").await.unwrap();
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(DEADLINE, async {
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a slow request head held its connection");

    // Two connections held open (each sending its head slowly): a third waits for a slot.
    let idle1 = tokio::net::TcpStream::connect(cp.api_addr).await.unwrap();
    let idle2 = tokio::net::TcpStream::connect(cp.api_addr).await.unwrap();
    let mut third = tokio::spawn({
        let (addr, token, tls) = (cp.api_addr, cp.admin_token.clone(), cp.api_client_tls());
        async move {
            let req = http::Request::builder()
                .uri("/v1/proxies")
                .header("host", "cp")
                .header("authorization", format!("Bearer {token}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            weft_testkit::api_request(addr, tls, req).await.map(|r| r.status().as_u16())
        }
    });
    assert!(tokio::time::timeout(Duration::from_millis(300), &mut third).await.is_err(), "served beyond the cap");
    drop((idle1, idle2));
    let status = tokio::time::timeout(DEADLINE, third).await.expect("served once a slot was free").unwrap().unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_root_that_does_not_anchor_the_intermediate_stops_the_start() {
    weft_testkit::init_tracing();
    let dir = tempdir("wrong-root");
    let cp = control(&dir).await;
    assert!(matches!(cp.root_key, weft_control::ca::RootKey::OnHost(_)), "{}", cp.root_key);
    cp.shutdown().await;
    std::fs::remove_file(dir.join("ca/root-key.pem")).unwrap();
    let cp = control(&dir).await;
    assert_eq!(cp.root_key, weft_control::ca::RootKey::Offline);
    cp.shutdown().await;
    // Another root in place of root.pem: refused, naming the file.
    let other = weft_identity::Authority::new_root("cluster.local", weft_identity::DEFAULT_CA_LIFETIME).unwrap();
    std::fs::write(dir.join("ca/root.pem"), other.cert_pem()).unwrap();
    let err = ControlPlane::start(config(&dir)).await.err().expect("refused").to_string();
    assert!(err.contains("root.pem") && err.contains("does not chain"), "{err}");
}
