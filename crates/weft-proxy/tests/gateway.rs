//! East-west gateway: a client sidecar reaches a server sidecar through a gateway that routes by
//! SNI and never terminates TLS.

mod support;

use bytes::Bytes;
use http_body_util::Full;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_api::proxy::ProxyConfig;
use weft_proxy::Proxy;
use weft_testkit::{http1_request, Pki, Tap};

async fn gateway(pki: &Pki, server_inbound: std::net::SocketAddr, app: std::net::SocketAddr) -> Proxy {
    let cfg = ProxyConfig::from_yaml(&format!(
        r#"
mode: gateway
identity: {{ cert: u, key: u, bundle: u }}
admin: {{ listen: "127.0.0.1:0" }}
gateway: {{ listen: "127.0.0.1:0" }}
services:
  - name: api
    endpoints: [{{ address: "{app}", proxy: "{server_inbound}", identity: "{id}" }}]
"#,
        id = api_id()
    ))
    .unwrap();
    Proxy::start(cfg, pki.store("istio-system", "gateway")).await.unwrap()
}

#[tokio::test]
async fn client_reaches_server_through_gateway_without_it_seeing_plaintext() {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let app_http = weft_testkit::http_echo("api").await;
    let app_tcp = weft_testkit::tcp_echo().await;
    let server = start_server(&pki, app_http, app_tcp, "").await;
    // The gateway forwards to the server sidecar through a tap: what the gateway emits is
    // exactly what it received, so the tap shows whether the gateway ever had plaintext.
    let tap = Tap::start(server.addrs.inbound.unwrap()).await;
    let gw = gateway(&pki, tap.addr, app_http).await;
    let client =
        start_client(pki.store("default", "web"), app_http, app_tcp, gw.addrs.gateway.unwrap(), &api_id(), "").await;

    let secret = "gateway-must-not-see-this";
    let req = http::Request::post("/via-gw").header("host", "t").body(Full::new(Bytes::from(secret))).unwrap();
    let resp = http1_request(client.addrs.upstreams[0], req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
    assert_eq!(v["body"], secret);
    assert_eq!(v["peer_identity"], web_id(), "the caller's identity survives the gateway hop");

    let mut s = TcpStream::connect(client.addrs.upstreams[1]).await.unwrap();
    s.write_all(b"tcp-through-gateway").await.unwrap();
    let mut back = [0u8; 19];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"tcp-through-gateway");

    assert!(!tap.saw(secret.as_bytes()), "plaintext passed the gateway");
    assert!(!tap.saw(b"tcp-through-gateway"));
    assert_eq!(tap.seen()[0], 0x16);
    let m = gw.metrics_text();
    assert!(metric(&m, "weft_tcp_open_total{direction=\"gateway\"") >= 2.0, "{m}");
}

#[tokio::test]
async fn gateway_refuses_unknown_sni_and_plaintext() {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let app = weft_testkit::http_echo("api").await;
    let app_tcp = weft_testkit::tcp_echo().await;
    let server = start_server(&pki, app, app_tcp, "").await;
    let gw = gateway(&pki, server.addrs.inbound.unwrap(), app).await;
    let gw_addr = gw.addrs.gateway.unwrap();

    let mut s = TcpStream::connect(gw_addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(buf.is_empty());

    // A real ClientHello for a service the gateway does not know.
    let store = pki.store("default", "web");
    let cfg = weft_identity::tls::client_config(&store, &[b"h2"]).unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    let name = rustls_pki_types::ServerName::try_from("80.nope.default.local.weft").unwrap();
    let res = connector.connect(name, TcpStream::connect(gw_addr).await.unwrap()).await;
    assert!(res.is_err());
    let m = gw.metrics_text();
    assert_eq!(metric(&m, "weft_protocol_errors_total{direction=\"gateway\",reason=\"not-tls\"}"), 1.0, "{m}");
    assert_eq!(metric(&m, "weft_protocol_errors_total{direction=\"gateway\",reason=\"no-route\"}"), 1.0, "{m}");
}

/// A gateway forwards only to endpoints in its own cluster, and never to its own host
/// (loopback) unless it listens on loopback itself: the endpoint it picks is checked, not only
/// the cluster the caller's SNI names.
#[tokio::test]
async fn gateway_forwards_only_to_endpoints_it_may_reach() {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let app = weft_testkit::http_echo("api").await;
    let app_tcp = weft_testkit::tcp_echo().await;
    let server = start_server(&pki, app, app_tcp, "").await;
    let inbound = server.addrs.inbound.unwrap();
    let start = |listen: &str, cluster: &str| {
        let cfg = ProxyConfig::from_yaml(&format!(
            r#"
mode: gateway
identity: {{ cert: u, key: u, bundle: u }}
admin: {{ listen: "127.0.0.1:0" }}
gateway: {{ listen: "{listen}" }}
services:
  - name: api
    endpoints: [{{ address: "{app}", proxy: "{inbound}", identity: "{id}", cluster: {cluster} }}]
"#,
            id = api_id()
        ))
        .unwrap();
        Proxy::start(cfg, pki.store("istio-system", "gateway"))
    };
    // A real ClientHello naming the gateway's own cluster (`local`) through `gw`.
    let hello = |gw: std::net::SocketAddr| {
        let store = pki.store("default", "web");
        async move {
            let cfg = weft_identity::tls::client_config(&store, &[b"h2"]).unwrap();
            let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
            let name =
                rustls_pki_types::ServerName::try_from(format!("{}.api.default.local.weft", app.port())).unwrap();
            connector.connect(name, TcpStream::connect(gw).await.unwrap()).await.map(|_| ())
        }
    };
    // The endpoint is in another cluster, though the SNI names this one.
    let other = start("127.0.0.1:0", "west").await.unwrap();
    assert!(hello(other.addrs.gateway.unwrap()).await.is_err(), "forwarded to another cluster's endpoint");
    let m = other.metrics_text();
    assert_eq!(
        metric(&m, "weft_protocol_errors_total{direction=\"gateway\",reason=\"endpoint-not-allowed\"}"),
        1.0,
        "{m}"
    );

    // A gateway listening on all addresses does not forward to a loopback endpoint.
    let wide = start("0.0.0.0:0", "local").await.unwrap();
    let port = wide.addrs.gateway.unwrap().port();
    assert!(hello(([127, 0, 0, 1], port).into()).await.is_err(), "forwarded to a loopback endpoint");
    let m = wide.metrics_text();
    assert_eq!(
        metric(&m, "weft_protocol_errors_total{direction=\"gateway\",reason=\"endpoint-not-allowed\"}"),
        1.0,
        "{m}"
    );

    // The same endpoint through a gateway on loopback (a local mesh) is reached.
    let local = start("127.0.0.1:0", "local").await.unwrap();
    hello(local.addrs.gateway.unwrap()).await.expect("a loopback gateway reaches loopback endpoints");
}
