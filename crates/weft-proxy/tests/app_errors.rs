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
    let upgrade = http::Request::get("/ws")
        .header("host", "api")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_app_error("upgrade", &http1_request(upstream, upgrade).await.unwrap(), app);
}
