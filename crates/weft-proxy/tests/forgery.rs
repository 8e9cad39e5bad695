//! The caller identity header (`x-weft-peer-identity`) cannot be forged: on every path into the
//! server sidecar, what the app reads as that header is the verified caller, or the request does
//! not reach the app. Real sidecars, real mTLS, and the demo echo app, which reports every field
//! that reads as the identity header (`identity_like`).

mod support;

use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_testkit::Pki;

const FORGED: &str = "spiffe://cluster.local/ns/admin/sa/root";

/// Sends `raw` on `s` and reads until the other side closes (every request says
/// `Connection: close`, or the connection is refused).
async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: &mut S, raw: &[u8]) -> String {
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await.expect("closed in time");
    // A refused connection may end in a reset rather than a clean close.
    let _ = read;
    String::from_utf8_lossy(&out).into_owned()
}

fn body_json(resp: &str) -> serde_json::Value {
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not a JSON answer ({e}): {resp}"))
}

fn forged_request(prefix: &str, method: &str) -> String {
    format!(
        "{prefix}{method} /who HTTP/1.1\r\nHost: api\r\nx-weft-peer-identity: {FORGED}\r\nConnection: close\r\n\r\n"
    )
}

/// A local app, through its client sidecar on an `auto` port: empty lines before the request
/// line (which HTTP servers skip, RFC 9112 §2.2) and methods outside the usual list do not make
/// the request opaque TCP; it is HTTP, and the app sees the verified caller. A lowercase method
/// is refused by the server sidecar.
#[tokio::test]
async fn requests_that_look_opaque_are_still_http_with_the_verified_identity() {
    let p = pair().await;
    for (prefix, method) in [("\r\n", "GET"), ("\n", "GET"), ("\r\n\r\n\n", "POST"), ("", "PROPFIND"), ("\n", "MKCOL")]
    {
        let mut s = TcpStream::connect(p.http).await.unwrap();
        let resp = exchange(&mut s, forged_request(prefix, method).as_bytes()).await;
        assert!(!resp.contains(FORGED), "{prefix:?} {method}: the forged identity reached the app: {resp}");
        assert!(resp.starts_with("HTTP/1.1 200"), "{prefix:?} {method}: {resp}");
        let v = body_json(&resp);
        assert_eq!(v["peer_identity"], web_id(), "{resp}");
        assert_eq!(v["identity_like"].as_array().unwrap().len(), 1, "{resp}");
    }
    let m = p.server.metrics_text();
    assert_eq!(metric(&m, "weft_protocol_detected_total{direction=\"inbound\",protocol=\"tcp\""), 0.0, "{m}");
    // A lowercase method (which some servers take) is opaque to the client sidecar, so a text
    // protocol's `hello` is not held up; the server sidecar refuses it as HTTP over opaque TCP.
    let mut s = TcpStream::connect(p.http).await.unwrap();
    let resp = exchange(&mut s, forged_request("\r\n", "get").as_bytes()).await;
    assert!(resp.is_empty(), "{resp}");
    let m = p.server.metrics_text();
    assert_eq!(metric(&m, "weft_protocol_errors_total{direction=\"inbound\",reason=\"http-over-tcp\"}"), 1.0, "{m}");
}

/// A local app that stays silent past `timeouts.detect` is taken as opaque TCP by its client
/// sidecar; when it then sends an HTTP request, the server sidecar sees HTTP arriving over
/// `weft-tcp` and refuses it: nothing reaches the app.
#[tokio::test]
async fn a_request_sent_after_the_detection_deadline_is_refused() {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let app_http = weft_testkit::http_echo("api").await;
    let app_tcp = weft_testkit::tcp_echo().await;
    let server = start_server(&pki, app_http, app_tcp, "").await;
    let inbound = server.addrs.inbound.unwrap();
    let client = start_client(
        pki.store(CLIENT.0, CLIENT.1),
        app_http,
        app_tcp,
        inbound,
        &api_id(),
        "timeouts: { detect: 50ms }",
    )
    .await;
    let mut s = TcpStream::connect(client.addrs.upstreams[0]).await.unwrap();
    // Wait (polling, no sleep) until the client sidecar has given up and opened opaque TCP.
    weft_testkit::eventually("the client sidecar chose opaque TCP", Duration::from_secs(10), || {
        let m = server.metrics_text();
        async move { (metric(&m, "weft_tcp_open_total{direction=\"inbound\"") >= 1.0).then_some(()) }
    })
    .await;
    let resp = exchange(&mut s, forged_request("", "GET").as_bytes()).await;
    assert!(resp.is_empty(), "the request reached the app over opaque TCP: {resp}");
    let m = server.metrics_text();
    assert_eq!(metric(&m, "weft_protocol_errors_total{direction=\"inbound\",reason=\"http-over-tcp\"}"), 1.0, "{m}");
}

/// A TLS client holding a mesh certificate (any peer), speaking straight to the server sidecar
/// with ALPN `weft-tcp` for the app port `port`.
async fn weft_tcp(pki: &Pki, inbound: std::net::SocketAddr, port: u16) -> tokio_rustls::client::TlsStream<TcpStream> {
    let store = pki.store(CLIENT.0, CLIENT.1);
    let cfg = weft_identity::tls::client_config(&store, &[b"weft-tcp"]).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let name = rustls_pki_types::ServerName::try_from(format!("{port}.api.default.local.weft")).unwrap();
    connector.connect(name, TcpStream::connect(inbound).await.unwrap()).await.expect("mTLS handshake")
}

/// A mesh peer that asks for `weft-tcp` on a port declared `http1` is refused before anything
/// reaches the app; on an `auto` port, HTTP over `weft-tcp` is refused (even after empty lines),
/// while other bytes are carried.
#[tokio::test]
async fn a_peer_cannot_splice_http_to_the_app_over_weft_tcp() {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let app_http = weft_testkit::http_echo("api").await;
    let app_auto = weft_testkit::http_echo("api-auto").await;
    let app_tcp = weft_testkit::tcp_echo().await;
    let cfg = weft_api::proxy::ProxyConfig::from_yaml(&format!(
        r#"
identity: {{ cert: u, key: u, bundle: u }}
admin: {{ listen: "127.0.0.1:0" }}
inbound:
  listen: "127.0.0.1:0"
  ports: [{{ port: {}, protocol: http1 }}, {{ port: {} }}, {{ port: {}, protocol: tcp }}]
"#,
        app_http.port(),
        app_auto.port(),
        app_tcp.port()
    ))
    .unwrap();
    let server = weft_proxy::Proxy::start(cfg, pki.store(SERVER.0, SERVER.1)).await.unwrap();
    let inbound = server.addrs.inbound.unwrap();

    let mut tls = weft_tcp(&pki, inbound, app_http.port()).await;
    let resp = exchange(&mut tls, forged_request("", "GET").as_bytes()).await;
    assert!(resp.is_empty(), "http1 port: {resp}");

    for prefix in ["", "\r\n", "\n\n"] {
        let mut tls = weft_tcp(&pki, inbound, app_auto.port()).await;
        let resp = exchange(&mut tls, forged_request(prefix, "GET").as_bytes()).await;
        assert!(resp.is_empty(), "auto port, {prefix:?}: {resp}");
    }
    // The HTTP/2 preface too.
    let mut tls = weft_tcp(&pki, inbound, app_auto.port()).await;
    assert!(exchange(&mut tls, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.is_empty());

    // Opaque bytes are still carried, on the `auto` port and the `tcp` one.
    let mut tls = weft_tcp(&pki, inbound, app_tcp.port()).await;
    tls.write_all(b"\x00\x01opaque").await.unwrap();
    let mut back = [0u8; 8];
    tls.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"\x00\x01opaque");

    let m = server.metrics_text();
    assert_eq!(metric(&m, "weft_protocol_errors_total{direction=\"inbound\",reason=\"tcp-on-http-port\"}"), 1.0, "{m}");
    assert_eq!(metric(&m, "weft_protocol_errors_total{direction=\"inbound\",reason=\"http-over-tcp\"}"), 4.0, "{m}");
}

/// Only the verified header reaches the app: copies in CGI spellings (`x_weft_peer_identity`, any
/// case) and in trailers (HTTP/1 chunked, HTTP/2) are removed.
#[tokio::test]
async fn no_other_spelling_and_no_trailer_carries_an_identity_to_the_app() {
    let p = pair().await;
    let verified = vec![serde_json::Value::from(format!("header x-weft-peer-identity: {}", web_id()))];
    let raw = format!(
        "POST /who HTTP/1.1\r\nHost: api\r\nx_weft_peer_identity: {FORGED}\r\nX-Weft-Peer_Identity: {FORGED}\r\n\
         Trailer: x-weft-peer-identity, x_weft_peer_identity\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         4\r\nbody\r\n0\r\nx-weft-peer-identity: {FORGED}\r\nx_weft_peer_identity: {FORGED}\r\n\r\n"
    );
    let mut s = TcpStream::connect(p.http).await.unwrap();
    let resp = exchange(&mut s, raw.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let v = body_json(&resp);
    assert_eq!(v["body"], "body");
    assert_eq!(v["identity_like"].as_array().unwrap(), &verified, "{resp}");

    // HTTP/2 (h2c from the app), the forged copies in the trailers.
    let (client, conn) = h2::client::handshake(TcpStream::connect(p.http).await.unwrap()).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = http::Request::post("http://api/who").header("x_weft_peer_identity", FORGED).body(()).unwrap();
    let (resp, mut send) = client.send_request(req, false).unwrap();
    send.send_data(bytes::Bytes::from_static(b"body"), false).unwrap();
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-weft-peer-identity", http::HeaderValue::from_static(FORGED));
    trailers.insert("x_weft_peer_identity", http::HeaderValue::from_static(FORGED));
    send.send_trailers(trailers).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["body"], "body");
    assert_eq!(v["identity_like"].as_array().unwrap(), &verified, "{v}");
}

/// A CONNECT tunnel's bytes reach the app raw, past the identity header: the server sidecar
/// refuses CONNECT (`403 connect-not-allowed`) on a port that does not set `allow_connect`,
/// over HTTP/1.1 and HTTP/2 alike, and nothing reaches the app. (`pair.rs` has the tunnels on a
/// port that allows them.)
#[tokio::test]
async fn connect_is_refused_unless_the_port_allows_it() {
    let p = pair().await;
    let mut s = TcpStream::connect(p.http).await.unwrap();
    let resp =
        exchange(&mut s, b"CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\nConnection: close\r\n\r\n")
            .await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert!(resp.to_lowercase().contains("x-weft-error: connect-not-allowed"), "{resp}");

    let (client, conn) = h2::client::handshake(TcpStream::connect(p.http).await.unwrap()).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let (resp, _up) = client.send_request(http::Request::connect("db.internal:5432").body(()).unwrap(), false).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["x-weft-error"], "connect-not-allowed");
    // The connection goes on.
    let (resp, _) = client.send_request(http::Request::get("http://api/after").body(()).unwrap(), true).unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
}

/// An upgrade to h2c would hand the app a raw HTTP/2 stream whose requests no sidecar sees: the
/// server sidecar serves it as the ordinary request it also is (the app answers it, with the
/// verified identity, and nothing switches); WebSocket upgrades still switch (`pair.rs`).
#[tokio::test]
async fn an_upgrade_to_h2c_is_served_as_an_ordinary_request() {
    let p = pair().await;
    let mut s = TcpStream::connect(p.http).await.unwrap();
    let raw = format!(
        "GET /who HTTP/1.1\r\nHost: api\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
         HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nx-weft-peer-identity: {FORGED}\r\n\r\n"
    );
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).await.unwrap(), 1, "closed: {}", String::from_utf8_lossy(&head));
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "the upgrade switched: {head}");
    let len: usize = head.split("content-length: ").nth(1).and_then(|r| r.split("\r\n").next()?.parse().ok()).unwrap();
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["peer_identity"], web_id());
}

/// A peer speaking HTTP/1.1 straight to the server sidecar (ALPN `http/1.1`, as used for
/// upgrades) cannot make the sidecar drop the verified header by naming it in `Connection`.
#[tokio::test]
async fn connection_cannot_name_the_identity_header_away() {
    let p = pair().await;
    let store = p.pki.store(CLIENT.0, CLIENT.1);
    let cfg = weft_identity::tls::client_config(&store, &[b"http/1.1"]).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let name = rustls_pki_types::ServerName::try_from(format!("{}.api.default.local.weft", p.app_http.port())).unwrap();
    let tcp = TcpStream::connect(p.server.addrs.inbound.unwrap()).await.unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("mTLS handshake");
    let resp = exchange(
        &mut tls,
        b"GET /who HTTP/1.1\r\nHost: api\r\nConnection: close, x-weft-peer-identity, x_weft_peer_identity\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(body_json(&resp)["peer_identity"], web_id(), "{resp}");
}
