//! External CAs selected by MeshConfig `ca`, each a real implementation started by the test:
//! AWS Private CA as implemented by moto's server mode (PyPI `moto[server]`, set up with boto3
//! the way one sets up a root CA on AWS), and cfssl's signing API (Debian `golang-cfssl`). A real
//! control plane signs real proxies' CSRs through them; the proxies then serve mTLS to each other.
//!
//! moto is installed into a venv under `target/` on first run; the test skips, saying so, only
//! when PyPI cannot be reached. cfssl is installed with apt-get when the test runs as root; the
//! test skips, saying so, when it is missing and cannot be installed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use weft_api::ca::{AwsPcaSpec, CaKind, CaSpec, CfsslSpec};
use weft_api::kinds::MeshConfigSpec;
use weft_control::signer::{AwsCredentials, CaCredentials};
use weft_control::{ControlConfig, ControlPlane};
use weft_identity::TrustBundle;

mod common;
use common::{admin_api as api, sidecar, tempdir};

/// The moto release the setup script was written against.
const MOTO: &str = "moto[server]==5.2.6";
const TD: &str = "ext.example";

/// A child process killed (SIGKILL) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The venv's python with moto and boto3, made on first use; `Err` when PyPI cannot be reached.
fn python_with_moto() -> Result<PathBuf, String> {
    weft_testkit::python::venv(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "moto-venv",
        &[MOTO],
        "moto.server, boto3",
        "the moto test",
    )
}

/// moto's server with a root CA made in it: the child, its endpoint and the CA's ARN.
fn moto_pca(python: &Path) -> (Proc, String, String) {
    use std::io::{BufRead, BufReader};

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ca/moto_pca.py");
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto");
    // The first JSON line (moto may print a banner before it).
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.find(|l| l.as_ref().map_or(true, |l| l.starts_with('{'))).and_then(Result::ok).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("moto setup said {line:?}: {e}"));
    (Proc(child), v["endpoint"].as_str().unwrap().into(), v["arn"].as_str().unwrap().into())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `cfssl`, installed from Debian when missing and this runs as root; `Err` saying why not.
fn cfssl() -> Result<(), String> {
    let has = || Command::new("cfssl").arg("version").output().is_ok_and(|o| o.status.success());
    if has() {
        return Ok(());
    }
    if !is_root() {
        return Err("cfssl is not installed and this test is not root (apt-get install golang-cfssl)".into());
    }
    let out = Command::new("apt-get")
        .args(["install", "-y", "golang-cfssl"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .map_err(|e| format!("no apt-get to install golang-cfssl: {e}"))?;
    if !out.status.success() || !has() {
        return Err(format!("apt-get install golang-cfssl failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}

/// A port free now (cfssl prints the port it was given, not the one it bound).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `cfssl serve` with a root CA made by `cfssl gencert -initca`, and a profile that allows the
/// subjectAltName extension weft sends. Returns the child and its endpoint.
async fn cfssl_serve(dir: &Path) -> (Proc, String) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("csr.json"), r#"{"CN":"weft test cfssl root","key":{"algo":"ecdsa","size":256}}"#).unwrap();
    let out = Command::new("cfssl").args(["gencert", "-initca"]).arg(dir.join("csr.json")).output().unwrap();
    assert!(out.status.success(), "cfssl gencert -initca: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    std::fs::write(dir.join("ca.pem"), v["cert"].as_str().unwrap()).unwrap();
    std::fs::write(dir.join("ca-key.pem"), v["key"].as_str().unwrap()).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"signing":{"default":{"expiry":"24h","usages":["digital signature","key encipherment","server auth","client auth"],"allowed_extensions":["2.5.29.17"]}}}"#,
    )
    .unwrap();
    let port = free_port();
    let child = Command::new("cfssl")
        .args(["serve", "-address", "127.0.0.1", "-port", &port.to_string()])
        .arg(format!("-ca={}", dir.join("ca.pem").display()))
        .arg(format!("-ca-key={}", dir.join("ca-key.pem").display()))
        .arg(format!("-config={}", dir.join("config.json").display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start cfssl serve");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    weft_testkit::eventually("cfssl serve listens", Duration::from_secs(30), || async move {
        tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
    })
    .await;
    (Proc(child), format!("http://{addr}"))
}

async fn control(dir: PathBuf, ca: CaSpec, creds: CaCredentials) -> ControlPlane {
    let mut cfg = ControlConfig::new(dir);
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    cfg.mesh = MeshConfigSpec { trust_domain: TD.into(), ca, ..Default::default() };
    cfg.ca_credentials = creds;
    ControlPlane::start(cfg).await.expect("control plane")
}

/// Service `api` (opaque TCP) and its one Workload behind `sidecar`.
fn service(app: SocketAddr, sidecar: SocketAddr) -> String {
    format!(
        "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: api }}\nspec: {{ ports: [{{ port: {0}, protocol: tcp }}] }}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: api-1 }}\nspec: {{ service: api, address: 127.0.0.1, port: {0}, sidecar: \"{sidecar}\" }}\n",
        app.port()
    )
}

/// One round trip through the client sidecar: a fresh mTLS handshake between the sidecars.
async fn echo(upstream: SocketAddr) -> Option<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let round = async {
        let mut s = tokio::net::TcpStream::connect(upstream).await.ok()?;
        s.write_all(b"ping").await.ok()?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.ok()?;
        (&buf == b"ping").then_some(())
    };
    tokio::time::timeout(Duration::from_secs(10), round).await.ok().flatten()
}

/// Two sidecars of `cp` (server `api`, client `web`) whose leaves must come from the CA whose
/// root is `root`; then a request through them.
async fn sidecars_serve_mtls_under(cp: &ControlPlane, root: &[u8]) {
    let app = weft_testkit::tcp_echo().await;
    let server = sidecar(cp, "default/api", Some("api-1"), "inbound: { listen: \"127.0.0.1:0\" }\n").await;
    let (status, v) = api(cp, "POST", "/v1/apply", &service(app, server.addrs.inbound.unwrap())).await;
    assert_eq!(status, 200, "{v}");
    let client =
        sidecar(cp, "default/web", None, "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: api }] }\n")
            .await;
    let only_root = TrustBundle::new(vec![root.to_vec().into()]);
    for (p, id) in [(&server, "default/sa/api"), (&client, "default/sa/web")] {
        let leaf = p.certs().leaf();
        assert_eq!(leaf.id().uri(), format!("spiffe://{TD}/ns/{id}"), "identity");
        leaf.verify_chain(&only_root).expect("the leaf chains to the external CA's root");
        assert!(p.certs().bundle().roots().iter().any(|r| r.as_ref() == root), "the bundle holds the external root");
    }
    let upstream = client.addrs.upstreams[0];
    weft_testkit::eventually(
        "a request over mTLS between sidecars signed by the external CA",
        Duration::from_secs(30),
        || echo(upstream),
    )
    .await;
    // Each proxy reports its certificate's expiry in its Acks (`weft check` warns from it).
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    weft_testkit::eventually("proxies report their leaf's expiry", Duration::from_secs(30), || async {
        let (_, v) = api(cp, "GET", "/v1/proxies", "").await;
        let list = v["proxies"].as_array()?.clone();
        (list.len() == 2 && list.iter().all(|p| p["leaf_not_after_unix"].as_u64().unwrap_or(0) > now)).then_some(())
    })
    .await;
}

/// The DER of the first certificate in `pem`.
fn der_of_pem(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_private_ca_in_moto_signs_the_proxies_csrs() {
    weft_testkit::init_tracing();
    let python = match python_with_moto() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("SKIPPED: PyPI unreachable, cannot install {MOTO}: {why}");
            return;
        }
    };
    let (_moto, endpoint, arn) = moto_pca(&python);
    let ca = CaSpec {
        kind: CaKind::AwsPca,
        aws_pca: Some(AwsPcaSpec {
            certificate_authority_arn: arn,
            region: None,
            endpoint: Some(endpoint),
            template_arn: None,
            signing_algorithm: None,
        }),
        ..Default::default()
    };
    let creds = CaCredentials {
        aws: Some(AwsCredentials {
            access_key_id: "AKIDWEFTTEST".into(),
            secret_access_key: "weft-test-secret".into(),
            session_token: None,
        }),
        ..Default::default()
    };
    let cp = control(tempdir("ext-pca"), ca, creds).await;
    let root = external_root(&cp).await;
    sidecars_serve_mtls_under(&cp, &root).await;
    cp.shutdown().await;
}

/// Debian's cfssl (1.2.0+git20160825) cannot put a URI SAN in what it signs through its API:
/// weft's control plane installs it (its root is fetched from `/api/v1/cfssl/info`) and then
/// refuses every certificate it returns, so no proxy gets a certificate without its identity;
/// the proxy is told why, with UNAVAILABLE (it retries: a newer cfssl can be put in place).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cfssl_is_installed_and_a_certificate_without_the_identity_is_refused() {
    weft_testkit::init_tracing();
    if let Err(why) = cfssl() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let dir = tempdir("ext-cfssl");
    let (_cfssl, endpoint) = cfssl_serve(&dir.join("cfssl")).await;
    let ca = CaSpec {
        kind: CaKind::Cfssl,
        cfssl: Some(CfsslSpec { endpoint, profile: None, label: None }),
        ..Default::default()
    };
    let cp = control(dir.join("cp"), ca, CaCredentials::default()).await;
    let root = external_root(&cp).await;
    assert_eq!(root, der_of_pem(&std::fs::read_to_string(dir.join("cfssl/ca.pem")).unwrap()));
    let version = Command::new("cfssl").arg("version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout).to_string();
    let token = common::bootstrap_token(&cp, "default/api").await;
    let control = control_of(&cp, &token);
    match weft_proxy::control::sign(&control, 0).await {
        Err(weft_proxy::control::ControlError::Refused(s)) => {
            assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
            assert!(s.message().contains("names []") || s.message().contains("not exactly"), "{s:?}");
        }
        Ok((leaf, _)) => {
            // A cfssl that issues URI SANs (1.3 or later): the certificate is right.
            assert!(!version.contains("1.2.0"), "cfssl {version} issued {leaf:?}");
            assert_eq!(leaf.id().uri(), format!("spiffe://{TD}/ns/default/sa/api"));
            leaf.verify_chain(&TrustBundle::new(vec![root.into()])).unwrap();
        }
        Err(e) => panic!("unexpected: {e}"),
    }
    cp.shutdown().await;
}

/// What the Vault stand-in does on `sign`.
#[derive(Clone, Copy, PartialEq)]
enum VaultMode {
    Honest,
    /// Answers with a certificate for another key (a CA bug or an attack): weft must refuse it.
    OtherKey,
}

/// A stand-in for Vault's PKI secrets engine, speaking the documented subset weft uses (no
/// Vault server can be installed here): `GET /v1/pki/ca_chain` and `POST /v1/pki/sign/<role>`
/// with `X-Vault-Token`, `csr` and `uri_sans`. It signs with a root and intermediate of its own.
async fn vault_stand_in(mode: VaultMode) -> (String, Vec<u8>, tokio::task::JoinHandle<()>) {
    use axum::extract::{Path as P, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{get, post};
    use axum::Json;
    use std::sync::Arc;
    use weft_identity::Authority;
    let root = Authority::new_root(TD, Duration::from_secs(86400 * 30)).unwrap();
    let inter = Arc::new(root.new_intermediate("vault", Duration::from_secs(86400 * 10)).unwrap());
    let root_der = root.root().to_vec();
    let pem = |der: &[u8]| weft_control::signer::http::pem("CERTIFICATE", der);
    let chain_pem = format!("{}{}", pem(inter.cert()), pem(inter.root()));
    let sign = move |State(ca): State<Arc<Authority>>,
                     P(role): P<String>,
                     h: HeaderMap,
                     Json(body): Json<serde_json::Value>| async move {
        if h.get("x-vault-token").and_then(|v| v.to_str().ok()) != Some("s.weft-test") {
            return (StatusCode::FORBIDDEN, Json(serde_json::json!({ "errors": ["permission denied"] })));
        }
        assert_eq!(role, "weft");
        use rustls::pki_types::pem::PemObject;
        let csr = rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(
            body["csr"].as_str().unwrap_or("").as_bytes(),
        );
        let id: weft_identity::SpiffeId = match body["uri_sans"].as_str().unwrap_or("").parse() {
            Ok(id) => id,
            Err(e) => return (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "errors": [e.to_string()] }))),
        };
        let chain = match (mode, csr) {
            (VaultMode::Honest, Ok(csr)) => ca.sign_csr(csr.as_ref(), &id, Duration::from_secs(3600)),
            (VaultMode::OtherKey, _) => ca.issue(&id, Duration::from_secs(3600)).map(|l| l.chain().to_vec()),
            (_, Err(e)) => return (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "errors": [e.to_string()] }))),
        };
        match chain {
            Ok(chain) => (
                StatusCode::OK,
                Json(serde_json::json!({ "data": {
                    "certificate": weft_control::signer::http::pem("CERTIFICATE", &chain[0]),
                    "issuing_ca": weft_control::signer::http::pem("CERTIFICATE", ca.cert()),
                    "ca_chain": [weft_control::signer::http::pem("CERTIFICATE", ca.cert()), weft_control::signer::http::pem("CERTIFICATE", ca.root())],
                }})),
            ),
            Err(e) => (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "errors": [e.to_string()] }))),
        }
    };
    let app = axum::Router::new()
        .route("/v1/pki/ca_chain", get(move || async move { chain_pem }))
        .route("/v1/pki/sign/{role}", post(sign))
        .with_state(inter);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), root_der, task)
}

fn vault_ca(endpoint: String) -> (CaSpec, CaCredentials) {
    let spec = CaSpec {
        kind: CaKind::Vault,
        vault: Some(weft_api::ca::VaultSpec { endpoint, mount: None, role: "weft".into(), namespace: None }),
        ..Default::default()
    };
    (spec, CaCredentials { vault_token: Some("s.weft-test".into()), ..Default::default() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_pki_stand_in_signs_the_proxies_csrs() {
    weft_testkit::init_tracing();
    let (endpoint, root, _vault) = vault_stand_in(VaultMode::Honest).await;
    let (spec, creds) = vault_ca(endpoint);
    let cp = control(tempdir("ext-vault"), spec, creds).await;
    assert_eq!(external_root(&cp).await, root);
    sidecars_serve_mtls_under(&cp, &root).await;
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_key_is_refused() {
    weft_testkit::init_tracing();
    let (endpoint, _root, _vault) = vault_stand_in(VaultMode::OtherKey).await;
    let (spec, creds) = vault_ca(endpoint);
    let cp = control(tempdir("ext-vault-bad"), spec, creds).await;
    external_root(&cp).await;
    let token = common::bootstrap_token(&cp, "default/api").await;
    let control = control_of(&cp, &token);
    match weft_proxy::control::sign(&control, 0).await {
        Err(weft_proxy::control::ControlError::Refused(s)) => {
            assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
            assert!(s.message().contains("another key"), "{s:?}");
        }
        other => panic!("a certificate for another key got through: {:?}", other.map(|(l, _)| l)),
    }
    cp.shutdown().await;
}

/// A proxy's `control` settings for `token` (to call `Identity.Sign` the way a proxy does).
fn control_of(cp: &ControlPlane, token: &str) -> weft_api::proxy::Control {
    weft_api::proxy::ProxyConfig::from_yaml(&format!(
        "control: {{ address: \"{}\", token: \"{token}\", proxy_id: p }}\ninbound: {{ listen: \"127.0.0.1:0\" }}\n",
        cp.grpc_addr
    ))
    .unwrap()
    .control
    .unwrap()
}

/// The external CA's root once the control plane has installed it (`GET /v1/ca` lists it).
async fn external_root(cp: &ControlPlane) -> Vec<u8> {
    weft_testkit::eventually("the control plane installs the external CA", Duration::from_secs(30), || async {
        let (_, v) = api(cp, "GET", "/v1/ca", "").await;
        let ext = v.get("external")?;
        let pem = ext["roots_pem"].as_str().filter(|_| ext["status"] == "ready")?;
        Some(der_of_pem(pem))
    })
    .await
}
