//! The HTTP API on TLS, on real sockets: the certificate names its SANs and chains to the root of
//! `weft ca --pem`; a client that does not trust that root fails the handshake; plaintext HTTP
//! against the TLS API gets no API answer; `--api-plaintext` is refused off loopback and works on
//! it; and after `weft ca rotate` new connections get the new root's certificate.

use bytes::Bytes;
use http_body_util::Full;
use std::sync::Arc;
use std::time::Duration;
use weft_control::api_tls::ApiTls;
use weft_control::{ControlConfig, ControlPlane};
use weft_testkit::{eventually, http1_request, https1_request};

mod common;
use common::{admin_api, tempdir};

const WAIT: Duration = Duration::from_secs(30);

fn config(dir: &std::path::Path) -> ControlConfig {
    let mut cfg = ControlConfig::new(dir.to_path_buf());
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    cfg
}

fn get(path: &str, token: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(path)
        .header("host", "cp")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// A client config trusting only the roots in `pem`.
fn trusting(pem: &str) -> Arc<rustls::ClientConfig> {
    let roots = weft_identity::https::certs_from_pem(pem, "roots").unwrap();
    Arc::new(weft_identity::https::client_config(&roots).unwrap())
}

/// The chain the API presents to a client trusting `tls`, verified as `name`.
async fn served_chain(
    cp: &ControlPlane,
    tls: Arc<rustls::ClientConfig>,
    name: &str,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, std::io::Error> {
    let tcp = tokio::net::TcpStream::connect(cp.api_addr).await?;
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    let s = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await?;
    Ok(s.get_ref().1.peer_certificates().unwrap_or_default().iter().map(|c| c.clone().into_owned()).collect())
}

#[tokio::test]
async fn the_certificate_names_its_sans_and_chains_to_weft_ca_pem() {
    weft_testkit::init_tracing();
    let dir = tempdir("apitls-sans");
    let mut cfg = config(&dir);
    cfg.api_tls = ApiTls { plaintext: false, sans: vec!["cp.example.com".into(), "10.9.8.7".into()] };
    let cp = ControlPlane::start(cfg).await.unwrap();
    assert!(cp.api_tls && cp.api_url().starts_with("https://"), "{}", cp.api_url());
    // The root `weft ca --pem` prints (GET /v1/ca), and the file CLIs on this host read.
    let (status, ca) = admin_api(&cp, "GET", "/v1/ca", "").await;
    assert_eq!(status, 200, "{ca}");
    let pem = ca["root_pem"].as_str().unwrap().to_string();
    let file = std::fs::read_to_string(&cp.api_ca_file).unwrap();
    assert_eq!(
        weft_identity::https::certs_from_pem(&pem, "api").unwrap(),
        weft_identity::https::certs_from_pem(&file, "file").unwrap()
    );
    let tls = trusting(&pem);
    for name in ["localhost", "control.weft", "127.0.0.1", "cp.example.com", "10.9.8.7"] {
        let chain = served_chain(&cp, tls.clone(), name).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(chain.len(), 3, "leaf, intermediate and root");
        assert_eq!(&chain[2], &weft_identity::https::certs_from_pem(&pem, "root").unwrap()[0]);
        let resp = https1_request(cp.api_addr, tls.clone(), name, get("/v1/resources", &cp.admin_token)).await.unwrap();
        assert_eq!(resp.status(), 200, "{name}");
    }
    let e = served_chain(&cp, tls, "other.example.com").await.unwrap_err().to_string();
    assert!(e.contains("not valid for name"), "a name it does not carry: {e}");
    cp.shutdown().await;
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_root_fails_the_handshake() {
    weft_testkit::init_tracing();
    let dir = tempdir("apitls-stranger");
    let cp = ControlPlane::start(config(&dir)).await.unwrap();
    let other = weft_identity::Authority::new_root("cluster.local", weft_identity::DEFAULT_CA_LIFETIME).unwrap();
    let stranger = trusting(&other.cert_pem());
    let e = https1_request(cp.api_addr, stranger, "127.0.0.1", get("/v1/resources", &cp.admin_token))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("UnknownIssuer"), "{e}");
    cp.shutdown().await;
}

#[tokio::test]
async fn plaintext_http_against_the_tls_api_gets_no_api_answer() {
    weft_testkit::init_tracing();
    let dir = tempdir("apitls-plain-client");
    let cp = ControlPlane::start(config(&dir)).await.unwrap();
    common::bootstrap_token(&cp, "default/web").await;
    let resp = http1_request(cp.api_addr, get("/v1/tokens", &cp.admin_token)).await.unwrap();
    assert_eq!(resp.status(), 400);
    let body = String::from_utf8_lossy(resp.body()).to_string();
    assert!(body.contains("over TLS only") && body.contains("https://"), "{body}");
    assert!(!body.contains("bootstrap"), "no API data in plaintext: {body}");
    // Bytes that are neither TLS nor HTTP: closed without an answer.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(cp.api_addr).await.unwrap();
    s.write_all(b"\x00\x01garbage").await.unwrap();
    let mut out = vec![];
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await.expect("closed");
    assert!(out.is_empty(), "{out:?}");
    cp.shutdown().await;
}

#[tokio::test]
async fn api_plaintext_is_refused_off_loopback_and_served_on_it() {
    weft_testkit::init_tracing();
    let dir = tempdir("apitls-plaintext");
    let mut cfg = config(&dir);
    cfg.api = "0.0.0.0:0".parse().unwrap();
    cfg.api_tls.plaintext = true;
    let e = ControlPlane::start(cfg).await.err().expect("refused off loopback").to_string();
    assert!(e.contains("--api-plaintext") && e.contains("0.0.0.0"), "{e}");

    let mut cfg = config(&dir);
    cfg.api_tls.plaintext = true;
    let cp = ControlPlane::start(cfg).await.unwrap();
    assert!(!cp.api_tls && cp.api_url().starts_with("http://"), "{}", cp.api_url());
    let resp = http1_request(cp.api_addr, get("/v1/resources", &cp.admin_token)).await.unwrap();
    assert_eq!(resp.status(), 200);
    // A TLS client against it fails (the server is plaintext).
    let tls = Arc::new(cp.api_client_config().unwrap());
    assert!(https1_request(cp.api_addr, tls, "127.0.0.1", get("/v1/resources", &cp.admin_token)).await.is_err());
    cp.shutdown().await;
}

#[tokio::test]
async fn after_weft_ca_rotate_new_connections_get_the_new_roots_certificate() {
    weft_testkit::init_tracing();
    let dir = tempdir("apitls-rotate");
    let cp = ControlPlane::start(config(&dir)).await.unwrap();
    let old_pem = cp.api_root_pem();
    let old = trusting(&old_pem);
    served_chain(&cp, old.clone(), "127.0.0.1").await.unwrap();
    let (status, v) = admin_api(&cp, "POST", "/v1/ca/rotate", r#"{"overlap":"0s"}"#).await;
    assert_eq!(status, 200, "{v}");
    // With no proxy to wait for, the rotation finishes on its own.
    let new_pem = eventually("the rotation finishes", WAIT, || async {
        let (_, v) = admin_api(&cp, "GET", "/v1/ca", "").await;
        let pem = v["root_pem"].as_str()?.to_string();
        (v["rotation"].is_null() && pem != old_pem).then_some(pem)
    })
    .await;
    let new = trusting(&new_pem);
    let chain = served_chain(&cp, new, "127.0.0.1").await.expect("the new root's certificate is served");
    assert_eq!(chain.last(), weft_identity::https::certs_from_pem(&new_pem, "new").unwrap().first());
    let e = served_chain(&cp, old, "127.0.0.1").await.unwrap_err().to_string();
    assert!(e.contains("UnknownIssuer"), "the old root no longer anchors it: {e}");
    // The file clients on this host read has followed.
    let file = std::fs::read_to_string(&cp.api_ca_file).unwrap();
    assert_eq!(
        weft_identity::https::certs_from_pem(&file, "file").unwrap(),
        weft_identity::https::certs_from_pem(&new_pem, "new").unwrap()
    );
    cp.shutdown().await;
}

/// Another listener of the control plane (e.g. a dashboard) serves HTTPS with the API's
/// certificate through `http_serve::serve`.
#[tokio::test]
async fn another_listener_serves_with_the_apis_certificate() {
    weft_testkit::init_tracing();
    let dir = tempdir("apitls-other");
    let cp = ControlPlane::start(config(&dir)).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum_router();
    let tls = Arc::new(cp.https_server_config().unwrap());
    let (stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(weft_control::http_serve::serve(listener, router, Default::default(), Some(tls), rx));
    let resp =
        https1_request(addr, Arc::new(cp.api_client_config().unwrap()), "localhost", get("/hi", "")).await.unwrap();
    assert_eq!((resp.status().as_u16(), resp.body().as_ref()), (200, b"hi".as_ref()));
    stop.send_replace(true);
    cp.shutdown().await;
}

fn axum_router() -> axum::Router {
    axum::Router::new().route("/hi", axum::routing::get(|| async { "hi" }))
}
