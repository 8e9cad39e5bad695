//! An HTTP/2 caller in front of an app that speaks only HTTP/1.1, under the default
//! `protocol: auto`: the server sidecar learns what the app speaks and translates.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use support::*;
use tokio::net::TcpListener;
use weft_testkit::Pki;

/// A real HTTP/1.1-only server (hyper's `http1` connection, no HTTP/2): answers with the length
/// of the request body it read.
async fn http1_only_app() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let version = format!("{:?}", req.version());
                    let n = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(format!("{version} {n}")))))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_http2_caller_reaches_an_http1_only_app_under_auto() {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let app_http = http1_only_app().await;
    let app_tcp = weft_testkit::tcp_echo().await;
    let server = start_server(&pki, app_http, app_tcp, "").await;
    let inbound = server.addrs.inbound.expect("inbound");
    let client = start_client(pki.store(CLIENT.0, CLIENT.1), app_http, app_tcp, inbound, &api_id(), "").await;
    let mut h2 = weft_testkit::http2_client(client.addrs.upstreams[0]).await.expect("h2c to the client sidecar");

    let get = http::Request::get("http://api/").body(Full::new(Bytes::new())).unwrap();
    let resp = h2.send_request(get).await.expect("GET answered");
    let status = resp.status();
    let err = resp.headers().get("x-weft-error").cloned();
    let body = resp.into_body().collect().await.expect("GET body").to_bytes();
    assert_eq!(status, 200, "GET: x-weft-error {err:?}, body {body:?}");
    assert_eq!(&body[..], b"HTTP/1.1 0", "the app got the GET over HTTP/1.1");

    let big = Bytes::from(vec![b'x'; 5 * 1024 * 1024]);
    let post = http::Request::post("http://api/upload").body(Full::new(big)).unwrap();
    let resp = h2.send_request(post).await.expect("POST answered");
    let status = resp.status();
    let err = resp.headers().get("x-weft-error").cloned();
    let body = resp.into_body().collect().await.expect("POST body").to_bytes();
    assert_eq!(status, 200, "POST: x-weft-error {err:?}, body {body:?}");
    assert_eq!(&body[..], format!("HTTP/1.1 {}", 5 * 1024 * 1024).as_bytes(), "the app read the whole body");
}

/// Where the sidecar cannot translate (the port says `protocol: http2`, the app speaks only
/// HTTP/1.1): `502` with `x-weft-error: app`, a body naming the cause and the fix.
#[tokio::test]
async fn http2_forced_on_an_http1_only_app_is_a_clear_502() {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let app_http = http1_only_app().await;
    let app_tcp = weft_testkit::tcp_echo().await;
    let mut cfg = server_config(app_http.port(), app_tcp.port(), "");
    cfg.inbound.as_mut().expect("inbound").ports[0].protocol = weft_api::proxy::Protocol::Http2;
    let server = weft_proxy::Proxy::start(cfg, pki.store(SERVER.0, SERVER.1)).await.expect("server sidecar");
    let inbound = server.addrs.inbound.expect("inbound");
    let client = start_client(pki.store(CLIENT.0, CLIENT.1), app_http, app_tcp, inbound, &api_id(), "").await;
    let resp = weft_testkit::http1_get(client.addrs.upstreams[0], "/").await.expect("answered");
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers().get("x-weft-error").map(|v| v.as_bytes()), Some(&b"app"[..]));
    let body = String::from_utf8_lossy(resp.body());
    assert!(body.contains("HTTP/2 exchange") && body.contains("protocol: http1"), "{body}");
}
