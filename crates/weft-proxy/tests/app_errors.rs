//! What a caller sees when the server sidecar cannot reach its local app: `502` with
//! `x-weft-error: app` and the app's address in the body (docs/proxy.md, "Error responses"), so
//! the operator looks at the app, not at the network between the sidecars.

mod support;

use bytes::Bytes;
use http_body_util::Full;
use std::net::SocketAddr;
use support::*;
use weft_testkit::{http1_get, http1_request, http2_client, Pki};

/// A client sidecar → server sidecar pair whose app port has nothing listening on it. The socket
/// holding the port is returned: bound but never listening, so connecting is refused and no
/// other test can take the port meanwhile.
async fn pair_without_app() -> (Pki, weft_proxy::Proxy, weft_proxy::Proxy, SocketAddr, tokio::net::TcpSocket) {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let hold = tokio::net::TcpSocket::new_v4().unwrap();
    hold.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let dead = hold.local_addr().unwrap();
    let app_tcp = weft_testkit::tcp_echo().await;
    let server = start_server(&pki, dead, app_tcp, "").await;
    let inbound = server.addrs.inbound.unwrap();
    let client = start_client(pki.store(CLIENT.0, CLIENT.1), dead, app_tcp, inbound, &api_id(), "").await;
    (pki, client, server, dead, hold)
}

fn assert_app_error(what: &str, resp: &http::Response<Bytes>, app: SocketAddr) {
    let body = String::from_utf8_lossy(resp.body());
    assert_eq!(resp.status(), 502, "{what}: {body}");
    assert_eq!(resp.headers()["x-weft-error"], "app", "{what}: {body}");
    assert!(
        body.starts_with("weft-proxy:") && body.contains(&app.to_string()),
        "{what}: names the app's address: {body}"
    );
}

#[tokio::test]
async fn a_refused_app_connection_is_502_app_with_the_app_address() {
    let (_pki, client, _server, app, _hold) = pair_without_app().await;
    let upstream = client.addrs.upstreams[0];
    // HTTP/1.1 from the caller, without and with a body (two different app connection paths).
    assert_app_error("GET", &http1_get(upstream, "/").await.unwrap(), app);
    let post = http::Request::post("/").header("host", "api").body(Full::new(Bytes::from_static(b"hello"))).unwrap();
    assert_app_error("POST", &http1_request(upstream, post).await.unwrap(), app);
    // HTTP/2 from the caller: the server sidecar speaks HTTP/2 to the app.
    let mut h2 = http2_client(upstream).await.unwrap();
    let req = http::Request::get("http://api/").body(Full::new(Bytes::new())).unwrap();
    let resp = h2.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = http_body_util::BodyExt::collect(body).await.unwrap().to_bytes();
    assert_app_error("HTTP/2 GET", &http::Response::from_parts(parts, body), app);
    // An upgrade (WebSocket) is joined to the app over a connection of its own.
    assert_app_error("upgrade", &http1_request(upstream, upgrade_request()).await.unwrap(), app);
}

/// An app on 127.0.0.1:0 that reads a request head and answers `answer`, then closes.
async fn raw_app(answer: &'static [u8]) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(answer).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

fn upgrade_request() -> http::Request<Full<Bytes>> {
    http::Request::get("/ws")
        .header("host", "api")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Through an upgrade (its own connection to the app), as for every other request: an app that
/// answers something that is not HTTP is `app`, naming it, and an app's own `x-weft-error` does
/// not reach the caller (only proxies speak in that header).
#[tokio::test]
async fn upgrades_report_app_failures_as_app_and_drop_the_apps_own_error_header() {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let app_tcp = weft_testkit::tcp_echo().await;
    for (answer, want) in [
        (&b"garbage\r\n\r\n"[..], None),
        (
            &b"HTTP/1.1 400 Bad Request\r\nx-weft-error: connect\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"[..],
            Some(400),
        ),
    ] {
        let app = raw_app(answer).await;
        let server = start_server(&pki, app, app_tcp, "").await;
        let client =
            start_client(pki.store(CLIENT.0, CLIENT.1), app, app_tcp, server.addrs.inbound.unwrap(), &api_id(), "")
                .await;
        let resp = http1_request(client.addrs.upstreams[0], upgrade_request()).await.unwrap();
        match want {
            None => assert_app_error("upgrade to an app answering garbage", &resp, app),
            Some(status) => {
                assert_eq!(resp.status(), status);
                assert!(resp.headers().get("x-weft-error").is_none(), "the app's own header: {:?}", resp.headers());
            }
        }
    }
}
