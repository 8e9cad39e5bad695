//! Malformed requests from an app, through its client sidecar to the server sidecar and the demo
//! echo: `Host` ambiguities are settled as RFC 9110/9112/9113 say (one host reaches the app, or
//! `400`), and a body the client framed wrongly is the client's error (`400`), not the peer's.

mod support;

use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `raw` and reads the answer until the connection closes.
async fn exchange(addr: std::net::SocketAddr, raw: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await.expect("answered in time");
    String::from_utf8_lossy(&out).into_owned()
}

fn json(resp: &str) -> serde_json::Value {
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {resp}"))
}

fn assert_bad_request(resp: &str) {
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.to_lowercase().contains("x-weft-error: bad-request"), "{resp}");
}

async fn h2(p: &Pair) -> h2::client::SendRequest<bytes::Bytes> {
    let (client, conn) = h2::client::handshake(TcpStream::connect(p.http).await.unwrap()).await.unwrap();
    tokio::spawn(conn);
    client.ready().await.unwrap()
}

/// Two `Host` headers: 400 over HTTP/1.1 (RFC 9112 §3.2) and HTTP/2, nothing forwarded.
#[tokio::test]
async fn two_host_headers_are_refused() {
    let p = pair().await;
    let resp = exchange(p.http, "GET /who HTTP/1.1\r\nHost: api\r\nHost: admin\r\nConnection: close\r\n\r\n").await;
    assert_bad_request(&resp);

    let mut client = h2(&p).await;
    let req = http::Request::get("/who").header("host", "api").header("host", "admin").body(()).unwrap();
    let (resp, _) = client.send_request(req, true).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["x-weft-error"], "bad-request");
    let m = p.server.metrics_text();
    assert_eq!(
        metric(&m, "weft_http_requests_total{direction=\"inbound\""),
        0.0,
        "nothing reached the server side:\n{m}"
    );
}

/// HTTP/1.1 in absolute form: the target's authority wins over `Host` (RFC 9112 §3.2.2), and the
/// app reads that one host. HTTP/2 whose `host` differs from `:authority` is malformed (RFC 9113
/// §8.3.1): 400. When they agree, or only one is sent, the request goes through.
#[tokio::test]
async fn the_target_authority_and_host_are_one() {
    let p = pair().await;
    let resp = exchange(p.http, "GET http://api:80/who HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(json(&resp)["host"], "api:80", "{resp}");

    let mut client = h2(&p).await;
    let req = http::Request::get("http://api/who").header("host", "admin").body(()).unwrap();
    let (resp, _) = client.send_request(req, true).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["x-weft-error"], "bad-request");

    for req in [
        http::Request::get("http://api/who").header("host", "API").body(()).unwrap(),
        http::Request::get("http://api/who").body(()).unwrap(),
    ] {
        let (resp, _) = client.send_request(req, true).unwrap();
        assert_eq!(resp.await.unwrap().status(), 200);
    }
}

/// A chunk size that does not parse is the client's error: 400, not 502 `upstream`.
#[tokio::test]
async fn a_malformed_chunk_size_is_a_bad_request() {
    let p = pair().await;
    let resp = exchange(
        p.http,
        "POST /upload HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nffffffffffffffff1\r\nxx\r\n0\r\n\r\n",
    )
    .await;
    assert_bad_request(&resp);
    // The sidecar serves on.
    let resp = exchange(p.http, "GET /after HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}
