//! What the proxies refuse, and that refusing one client never hurts the others: plaintext,
//! untrusted and expired certificates, the wrong peer identity, garbage, slowloris, oversized
//! headers, abrupt resets.

mod support;

use bytes::Bytes;
use http_body_util::Full;
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_identity::{tls, CertStore, LeafKey};
use weft_testkit::{eventually, http1_get, http1_request, Pki};

/// Opens mTLS to `inbound` as `store`, sends an HTTP/2-less raw request; Ok(bytes) if anything
/// came back, Err if the server refused.
async fn raw_mtls_exchange(store: &CertStore, inbound: std::net::SocketAddr, port: u16) -> Result<Vec<u8>, String> {
    let cfg = tls::client_config(store, &[b"http/1.1"]).map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = TcpStream::connect(inbound).await.map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from(format!("{port}.api.default.local.weft")).unwrap();
    let mut s = connector.connect(name, tcp).await.map_err(|e| format!("handshake: {e}"))?;
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    match tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await {
        Ok(Ok(_)) if !out.is_empty() => Ok(out),
        Ok(Ok(_)) => Err("closed".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timeout".into()),
    }
}

async fn still_serves(p: &Pair) {
    let resp = http1_get(p.http, "/ok").await.unwrap();
    assert_eq!(resp.status(), 200, "the proxy keeps serving everyone else");
}

#[tokio::test]
async fn mesh_member_is_accepted_directly() {
    let p = pair().await;
    let ok =
        raw_mtls_exchange(&p.pki.store("default", "web"), p.server.addrs.inbound.unwrap(), p.app_http.port()).await;
    let body = String::from_utf8_lossy(&ok.expect("a mesh identity is accepted")).to_string();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
}

#[tokio::test]
async fn plaintext_client_is_refused() {
    let p = pair().await;
    let mut s = TcpStream::connect(p.server.addrs.inbound.unwrap()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    assert!(buf.is_empty(), "plaintext got an answer: {}", String::from_utf8_lossy(&buf));
    let m = p.server.metrics_text();
    assert_eq!(metric(&m, "weft_protocol_errors_total{direction=\"inbound\",reason=\"plaintext\"}"), 1.0, "{m}");
    still_serves(&p).await;
}

#[tokio::test]
async fn other_trust_domain_root_is_refused() {
    let p = pair().await;
    let stranger = Pki::new(); // same names, different root: not trusted
    let res =
        raw_mtls_exchange(&stranger.store("default", "web"), p.server.addrs.inbound.unwrap(), p.app_http.port()).await;
    assert!(res.is_err(), "untrusted client was served: {res:?}");
    let m = p.server.metrics_text();
    eventually("handshake error counted", Duration::from_secs(5), || {
        let m = p.server.metrics_text();
        async move { (metric(&m, "weft_tls_handshake_errors_total{direction=\"inbound\"") >= 1.0).then_some(()) }
    })
    .await;
    assert!(!m.is_empty());
    still_serves(&p).await;
}

#[tokio::test]
async fn expired_client_certificate_is_refused() {
    let p = pair().await;
    let id = Pki::id("default", "web");
    let key = LeafKey::generate(&id).unwrap();
    let now = weft_identity::time::OffsetDateTime::now_utc();
    let chain = p
        .pki
        .intermediate
        .sign_csr_between(
            &key.csr_der().unwrap(),
            &id,
            now - Duration::from_secs(7200),
            now - Duration::from_secs(3600),
        )
        .unwrap();
    let expired = CertStore::new(key.into_leaf(chain).unwrap(), p.pki.bundle()).unwrap();
    let res = raw_mtls_exchange(&expired, p.server.addrs.inbound.unwrap(), p.app_http.port()).await;
    assert!(res.is_err(), "expired client was served: {res:?}");
    eventually("expired cert counted", Duration::from_secs(5), || {
        let m = p.server.metrics_text();
        async move {
            (metric(&m, "weft_tls_handshake_errors_total{direction=\"inbound\",reason=\"expired-cert\"}") == 1.0)
                .then_some(())
        }
    })
    .await;
    still_serves(&p).await;
}

/// A certificate that is valid from an hour from now (a clock ahead, or a pre-issued one): refused
/// until then, counted as `not-yet-valid-cert`.
#[tokio::test]
async fn not_yet_valid_client_certificate_is_refused() {
    let p = pair().await;
    let id = Pki::id("default", "web");
    let key = LeafKey::generate(&id).unwrap();
    let now = weft_identity::time::OffsetDateTime::now_utc();
    let chain = p
        .pki
        .intermediate
        .sign_csr_between(
            &key.csr_der().unwrap(),
            &id,
            now + Duration::from_secs(3600),
            now + Duration::from_secs(7200),
        )
        .unwrap();
    let early = CertStore::new(key.into_leaf(chain).unwrap(), p.pki.bundle()).unwrap();
    let res = raw_mtls_exchange(&early, p.server.addrs.inbound.unwrap(), p.app_http.port()).await;
    assert!(res.is_err(), "a not yet valid client was served: {res:?}");
    eventually("not yet valid cert counted", Duration::from_secs(5), || {
        let m = p.server.metrics_text();
        async move {
            (metric(&m, "weft_tls_handshake_errors_total{direction=\"inbound\",reason=\"not-yet-valid-cert\"}") == 1.0)
                .then_some(())
        }
    })
    .await;
    still_serves(&p).await;
}

/// A workload of another trust domain (its own root, which this mesh does not trust, and an
/// identity `spiffe://other.example/...`): refused.
#[tokio::test]
async fn certificate_of_another_trust_domain_is_refused() {
    let p = pair().await;
    let root = weft_identity::Authority::new_root("other.example", weft_identity::DEFAULT_CA_LIFETIME).unwrap();
    let id = weft_identity::SpiffeId::workload("other.example", "default", "web").unwrap();
    let leaf = root.issue(&id, weft_identity::DEFAULT_LEAF_LIFETIME).unwrap();
    // It trusts this mesh's root too, so the handshake gets as far as its own certificate.
    let roots = weft_identity::TrustBundle::new(vec![root.root().clone(), p.pki.root.root().clone()]);
    let foreign = CertStore::new(leaf, roots).unwrap();
    let res = raw_mtls_exchange(&foreign, p.server.addrs.inbound.unwrap(), p.app_http.port()).await;
    assert!(res.is_err(), "a workload of another trust domain was served: {res:?}");
    eventually("foreign trust domain counted", Duration::from_secs(5), || {
        let m = p.server.metrics_text();
        async move {
            (metric(&m, "weft_tls_handshake_errors_total{direction=\"inbound\",reason=\"foreign-trust-domain\"}")
                == 1.0)
                .then_some(())
        }
    })
    .await;
    still_serves(&p).await;
}

#[tokio::test]
async fn server_with_unexpected_identity_is_refused_by_the_client() {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let app_http = weft_testkit::http_echo("api").await;
    let app_tcp = weft_testkit::tcp_echo().await;
    let server = start_server(&pki, app_http, app_tcp, "").await;
    // The client expects `db`, but the server is `api`: an impostor as far as the client knows.
    let db = Pki::id("default", "db").to_string();
    let client =
        start_client(pki.store("default", "web"), app_http, app_tcp, server.addrs.inbound.unwrap(), &db, "").await;
    let resp = http1_get(client.addrs.upstreams[0], "/").await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["x-weft-error"], "wrong-identity");
    let m = client.metrics_text();
    assert_eq!(
        metric(&m, "weft_tls_handshake_errors_total{direction=\"outbound\",reason=\"wrong-identity\"}"),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn unknown_app_port_in_sni_is_refused() {
    let p = pair().await;
    let res = raw_mtls_exchange(&p.pki.store("default", "web"), p.server.addrs.inbound.unwrap(), 1).await;
    assert!(res.is_err(), "{res:?}");
    let m = p.server.metrics_text();
    assert_eq!(metric(&m, "weft_protocol_errors_total{direction=\"inbound\",reason=\"unknown-port\"}"), 1.0, "{m}");
}

#[tokio::test]
async fn garbage_and_resets_do_not_disturb_the_proxy() {
    let p = pair().await;
    let inbound = p.server.addrs.inbound.unwrap();
    // TLS-looking garbage at the inbound port.
    for junk in [&b"\x16\x03\x01\x00\x05hello"[..], b"\x16\x03\x03\xff\xff", b"\x16"] {
        let mut s = TcpStream::connect(inbound).await.unwrap();
        let _ = s.write_all(junk).await;
        let _ = s.shutdown().await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    }
    // Abrupt reset in the middle of a request head, on the outbound side.
    let s = TcpStream::connect(p.http).await.unwrap();
    socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
    let mut s = s;
    s.write_all(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nparti").await.unwrap();
    drop(s);
    still_serves(&p).await;
    let m = p.server.metrics_text();
    assert!(metric(&m, "weft_tls_handshake_errors_total{direction=\"inbound\"") >= 1.0, "{m}");
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let p = pair().await;
    let big = "a".repeat(100 * 1024);
    let req = http::Request::get("/").header("host", "t").header("x-big", big).body(Full::new(Bytes::new())).unwrap();
    match http1_request(p.http, req).await {
        Ok(resp) => assert_eq!(resp.status(), 431),
        Err(e) => panic!("expected a 431 answer, got {e}"),
    }
    still_serves(&p).await;
}

#[tokio::test]
async fn slowloris_request_head_is_cut_off() {
    let p = pair_with("timeouts: { header_read: 1s }", None).await;
    let mut s = TcpStream::connect(p.http).await.unwrap();
    // A request head that never ends.
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ").await.unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await;
    assert!(n.is_ok(), "the proxy must close a connection whose head never completes");
    let text = String::from_utf8_lossy(&buf);
    assert!(buf.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
    still_serves(&p).await;
    let m = p.client.metrics_text();
    assert_eq!(
        metric(&m, "weft_protocol_errors_total{direction=\"outbound\",reason=\"header_read\"}"),
        1.0,
        "the header-read timeout is counted: {m}"
    );
}

#[tokio::test]
async fn no_endpoints_is_503() {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let cfg = weft_api::proxy::ProxyConfig::from_yaml(
        r#"
identity: { cert: u, key: u, bundle: u }
admin: { listen: "127.0.0.1:0" }
outbound: { upstreams: [{ listen: "127.0.0.1:0", service: api, port: 80 }] }
services: [{ name: api }]
"#,
    )
    .unwrap();
    let client = weft_proxy::Proxy::start(cfg, pki.store("default", "web")).await.unwrap();
    let resp = http1_get(client.addrs.upstreams[0], "/").await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["x-weft-error"], "no-endpoint");
    let m = client.metrics_text();
    assert_eq!(metric(&m, "weft_http_responses_total{direction=\"outbound\",src=\"spiffe://cluster.local/ns/default/sa/web\",dst=\"api.default\",status=\"503\"}"), 1.0, "{m}");
}

#[tokio::test]
async fn unreachable_peer_is_502_not_a_hang() {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let app = weft_testkit::http_echo("api").await;
    // A port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let client = start_client(pki.store("default", "web"), app, app, dead, &api_id(), "").await;
    let resp = http1_get(client.addrs.upstreams[0], "/").await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["x-weft-error"], "connect");
}
