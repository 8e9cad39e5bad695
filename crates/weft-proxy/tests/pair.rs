//! Client sidecar → server sidecar on 127.0.0.1: every protocol the proxy carries, the identity
//! the server app sees, and what is on the wire between the proxies.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_testkit::{http1_get, http1_request, http2_client, Tap};

/// Reads a response head byte by byte, leaving whatever follows (a tunnel) unread.
async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        let n = s.read(&mut b).await.unwrap();
        assert_eq!(n, 1, "closed before the end of the head: {}", String::from_utf8_lossy(&head));
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn json(b: &Bytes) -> serde_json::Value {
    serde_json::from_slice(b).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(b)))
}

#[tokio::test]
async fn http1_reaches_app_with_verified_caller_identity() {
    let p = pair().await;
    let resp = http1_get(p.http, "/hello?x=1").await.unwrap();
    assert_eq!(resp.status(), 200);
    let v = json(resp.body());
    assert_eq!(v["app"], "api");
    assert_eq!(v["path"], "/hello");
    assert_eq!(v["version"], "HTTP/1.1", "the server app is spoken to in the caller's HTTP version");
    assert_eq!(v["peer_identity"], web_id());
    assert_eq!(v["host"], "test", "Host header preserved");

    // A forged identity header from the calling app is replaced, not appended.
    let req = http::Request::post("/forge")
        .header("host", "test")
        .header("x-weft-peer-identity", "spiffe://cluster.local/ns/default/sa/admin")
        .header("connection", "x-hop")
        .header("x-hop", "must not pass")
        .body(Full::new(Bytes::from_static(b"payload")))
        .unwrap();
    let v = json(http1_request(p.http, req).await.unwrap().body());
    assert_eq!(v["peer_identity"], web_id());
    assert_eq!(v["peer_identity_headers"], 1);
    assert_eq!(v["body"], "payload");
}

/// An HTTP/1.1 app that answers one request per connection and then closes it without saying so
/// (no `Connection: close`), as servers with a short keep-alive timeout do: the server sidecar
/// notices (or, having sent an idempotent request into a closed connection, sends it again) and
/// every request is answered, each on a connection of its own.
#[tokio::test]
async fn app_closing_its_keep_alive_connections_costs_no_request() {
    weft_testkit::init_tracing();
    let (app_http, accepted) = raw_app(|mut s| async move {
        let _ = read_request_head(&mut s).await;
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
    })
    .await;
    let pki = weft_testkit::Pki::new();
    let app_tcp = weft_testkit::tcp_echo().await;
    let server = start_server(&pki, app_http, app_tcp, "").await;
    let inbound = server.addrs.inbound.unwrap();
    let client = start_client(pki.store(CLIENT.0, CLIENT.1), app_http, app_tcp, inbound, &api_id(), "").await;
    for i in 0..20 {
        let method = if i % 2 == 0 { http::Method::GET } else { http::Method::DELETE };
        let req = http::Request::builder().method(method).uri(format!("/{i}")).header("host", "t");
        let resp = http1_request(client.addrs.upstreams[0], req.body(Full::new(Bytes::new())).unwrap()).await.unwrap();
        assert_eq!((resp.status(), resp.body().as_ref()), (http::StatusCode::OK, &b"ok"[..]), "request {i}: {resp:?}");
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 20);
}

/// An HTTP/1.1 app (`protocol: http1`) answering in chunks with trailers, called over HTTP/2:
/// the body and the trailers reach the caller; a HEAD gets the head only; the app's keep-alive
/// connection is reused throughout.
#[tokio::test]
async fn chunked_response_with_trailers_from_an_http1_app_reaches_an_http2_caller() {
    weft_testkit::init_tracing();
    let (app_http, accepted) = raw_app(|mut s| async move {
        while let Ok(head) = read_request_head(&mut s).await {
            let reply: &[u8] = if head.starts_with(b"HEAD ") {
                b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: 42\r\n\r\n"
            };
            if s.write_all(reply).await.is_err() {
                return;
            }
        }
    })
    .await;
    let pki = weft_testkit::Pki::new();
    let app_tcp = weft_testkit::tcp_echo().await;
    let mut cfg = server_config(app_http.port(), app_tcp.port(), "");
    cfg.inbound.as_mut().unwrap().ports[0].protocol = weft_api::proxy::Protocol::Http1;
    let server = weft_proxy::Proxy::start(cfg, pki.store(SERVER.0, SERVER.1)).await.unwrap();
    let inbound = server.addrs.inbound.unwrap();
    let client = start_client(pki.store(CLIENT.0, CLIENT.1), app_http, app_tcp, inbound, &api_id(), "").await;
    let mut h2 = http2_client(client.addrs.upstreams[0]).await.unwrap();
    for _ in 0..3 {
        let req = http::Request::get("http://api/chunks").header("te", "trailers").body(Full::new(Bytes::new()));
        let resp = h2.send_request(req.unwrap()).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap();
        assert_eq!(body.trailers().map(|t| t["x-checksum"].clone()), Some(http::HeaderValue::from_static("42")));
        assert_eq!(body.to_bytes(), "hello world");

        let req = http::Request::head("http://api/chunks").body(Full::new(Bytes::new())).unwrap();
        let resp = h2.send_request(req).await.unwrap();
        assert_eq!((resp.status(), resp.headers()["content-length"].to_str().unwrap()), (http::StatusCode::OK, "11"));
        assert!(resp.into_body().collect().await.unwrap().to_bytes().is_empty());
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1, "one keep-alive connection to the app");
}

/// A hand-written app on 127.0.0.1 that runs `serve` on each connection it accepts; its address,
/// and how many connections it has accepted.
async fn raw_app<F, Fut>(serve: F) -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(serve(s));
        }
    });
    (addr, accepted)
}

/// Reads a request head (and nothing after it) from `s`.
async fn read_request_head(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        if s.read(&mut b).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(b[0]);
    }
    Ok(head)
}

#[tokio::test]
async fn chunked_bodies_and_keepalive_reuse_one_peer_connection() {
    let p = pair().await;
    let stream = TcpStream::connect(p.http).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    for i in 0..50 {
        // A streaming body of unknown length goes out chunked.
        let chunks: Vec<_> = (0..3)
            .map(|_| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(format!("chunk-{i}-")))))
            .collect();
        let body = StreamBody::new(futures_util::stream::iter(chunks));
        let req = http::Request::post("/echo").header("host", "t").body(body).unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let v = json(&resp.into_body().collect().await.unwrap().to_bytes());
        assert_eq!(v["body"], format!("chunk-{i}-").repeat(3));
    }
    let m = p.client.metrics_text();
    // A small fixed set of multiplexed connections (one per core) carries everything.
    let slots = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(8) as f64;
    let opened = metric(&m, "weft_peer_connections_total");
    assert!(opened >= 1.0 && opened <= slots, "{opened} connections for {slots} slots:\n{m}");
    assert!(metric(&m, "weft_peer_connection_reuses_total") >= 50.0 - slots, "{m}");
    assert_eq!(metric(&m, "weft_http_responses_total{direction=\"outbound\""), 50.0, "{m}");
}

#[tokio::test]
async fn http2_and_grpc_style_streaming_with_trailers() {
    let p = pair().await;
    let mut h2 = http2_client(p.http).await.unwrap();
    let req = http::Request::get("http://api/unary").body(Full::new(Bytes::new())).unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let v = json(&resp.into_body().collect().await.unwrap().to_bytes());
    assert_eq!(v["version"], "HTTP/2.0", "HTTP/2 from the caller stays HTTP/2 to the app");
    assert_eq!(v["peer_identity"], web_id());

    // The caller's :authority reaches the app, and an app cannot fake the protocol marker.
    let req = http::Request::get("http://api.example:8080/authority")
        .header("x-weft-orig-proto", "HTTP/1.1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let v = json(&h2.send_request(req).await.unwrap().into_body().collect().await.unwrap().to_bytes());
    assert_eq!(v["host"], "api.example:8080");
    assert_eq!(v["version"], "HTTP/2.0", "a spoofed x-weft-orig-proto is dropped");

    // Bidirectional streaming: each chunk comes back before the next is sent; trailers arrive.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(4);
    let body = StreamBody::new(Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|f| (f, rx))
    })));
    let io = hyper_util::rt::TokioIo::new(TcpStream::connect(p.http).await.unwrap());
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::post("http://api/stream")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .unwrap();
    let resp_fut = tokio::spawn(async move { sender.send_request(req).await.unwrap() });
    let mut received = Vec::new();
    tx.send(Ok(Frame::data(Bytes::from_static(b"one")))).await.unwrap();
    let resp = resp_fut.await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    received.push(first);
    tx.send(Ok(Frame::data(Bytes::from_static(b"two")))).await.unwrap();
    let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
    received.push(second);
    drop(tx);
    let mut trailers = None;
    while let Some(f) = body.frame().await {
        let f = f.unwrap();
        if f.is_trailers() {
            trailers = f.into_trailers().ok();
        }
    }
    assert_eq!(received, vec![Bytes::from_static(b"one"), Bytes::from_static(b"two")]);
    let trailers = trailers.expect("trailers reach the client");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-echo-chunks"], "2");
}

#[tokio::test]
async fn websocket_upgrade_is_tunnelled() {
    let p = pair().await;
    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: api\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await.to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    for msg in [&b"frame-1"[..], b"frame-2 longer"] {
        s.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(back, msg);
    }
}

#[tokio::test]
async fn opaque_tcp_with_half_close() {
    let p = pair().await;
    let mut s = TcpStream::connect(p.tcp).await.unwrap();
    s.write_all(b"\x00\x01binary\xff").await.unwrap();
    let mut back = [0u8; 9];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"\x00\x01binary\xff");
    // Half-close: the app sees EOF, still answers, then closes.
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"bye\n");
    let m = p.client.metrics_text();
    weft_testkit::eventually("tcp close recorded", Duration::from_secs(5), || {
        let m = p.client.metrics_text();
        async move { (metric(&m, "weft_tcp_close_total{direction=\"outbound\"") >= 1.0).then_some(()) }
    })
    .await;
    assert!(metric(&m, "weft_tcp_open_total{direction=\"outbound\"") >= 1.0, "{m}");
}

#[tokio::test]
async fn auto_detects_opaque_tcp_on_an_http_port() {
    let p = pair().await;
    // Not HTTP: detection falls back to TCP and the bytes reach the app unchanged.
    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"\x16\x03 not really tls").await.unwrap();
    s.shutdown().await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await.unwrap().unwrap();
    // The HTTP echo app rejects garbage with 400; either way the bytes travelled as TCP.
    let m = p.server.metrics_text();
    assert!(metric(&m, "weft_protocol_detected_total{direction=\"inbound\",protocol=\"tcp\"") >= 1.0, "{m}");
}

#[tokio::test]
async fn wire_between_proxies_is_tls_not_plaintext() {
    let tapped = std::sync::Arc::new(std::sync::Mutex::new(None::<Tap>));
    let p = {
        weft_testkit::init_tracing();
        let pki = weft_testkit::Pki::new();
        let app_http = weft_testkit::http_echo("api").await;
        let app_tcp = weft_testkit::tcp_echo().await;
        let server = start_server(&pki, app_http, app_tcp, "").await;
        let tap = Tap::start(server.addrs.inbound.unwrap()).await;
        *tapped.lock().unwrap() = Some(tap.clone());
        let client = start_client(pki.store(CLIENT.0, CLIENT.1), app_http, app_tcp, tap.addr, &api_id(), "").await;
        (client, server, tap)
    };
    let (client, _server, tap) = p;
    let secret = "top-secret-payload-8d1f";
    let req = http::Request::post("/x").header("host", "t").body(Full::new(Bytes::from(secret))).unwrap();
    let resp = http1_request(client.addrs.upstreams[0], req).await.unwrap();
    assert_eq!(json(resp.body())["body"], secret);
    let mut s = TcpStream::connect(client.addrs.upstreams[1]).await.unwrap();
    s.write_all(secret.as_bytes()).await.unwrap();
    let mut back = vec![0u8; secret.len()];
    s.read_exact(&mut back).await.unwrap();
    let seen = tap.seen();
    assert!(seen.len() > 1000, "the tap carried the traffic ({} bytes)", seen.len());
    assert_eq!(seen[0], 0x16, "first byte on the wire is a TLS handshake record");
    assert!(!tap.saw(secret.as_bytes()), "payload visible on the wire");
    assert!(!tap.saw(b"HTTP/1.1"), "HTTP visible on the wire");
}

#[tokio::test]
async fn server_speaks_first_port_declared_tcp_skips_detection() {
    weft_testkit::init_tracing();
    // An SMTP-like app: it greets first and the client only listens.
    let banner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let banner_addr = banner.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = banner.accept().await.unwrap();
            tokio::spawn(async move {
                let _ = s.write_all(b"220 ready\r\n").await;
                let mut sink = vec![0u8; 64];
                let _ = s.read(&mut sink).await;
            });
        }
    });
    let pki = weft_testkit::Pki::new();
    let app_http = weft_testkit::http_echo("api").await;
    let server = start_server(&pki, app_http, banner_addr, "").await;
    // Detection would wait an hour for the client to speak; the declared port must not wait.
    let client = start_client(
        pki.store(CLIENT.0, CLIENT.1),
        app_http,
        banner_addr,
        server.addrs.inbound.unwrap(),
        &api_id(),
        "timeouts: { detect: 1h }",
    )
    .await;
    // upstreams[1] is declared `protocol: tcp` by the upstream itself; check the service-level
    // declaration too by adding it to a second client whose upstream says nothing.
    let mut s = TcpStream::connect(client.addrs.upstreams[1]).await.unwrap();
    let mut greet = [0u8; 11];
    tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut greet))
        .await
        .expect("banner without waiting for detection")
        .unwrap();
    assert_eq!(&greet, b"220 ready\r\n");

    let cfg = weft_api::proxy::ProxyConfig::from_yaml(&format!(
        r#"
identity: {{ cert: u, key: u, bundle: u }}
admin: {{ listen: "127.0.0.1:0" }}
timeouts: {{ detect: 1h }}
outbound: {{ upstreams: [{{ listen: "127.0.0.1:0", service: api, port: {port} }}] }}
services:
  - name: api
    ports: [{{ port: {port}, protocol: tcp }}]
    endpoints: [{{ address: "{app_http}", proxy: "{inbound}", identity: "{id}" }}]
"#,
        port = banner_addr.port(),
        inbound = server.addrs.inbound.unwrap(),
        id = api_id()
    ))
    .unwrap();
    let client2 = weft_proxy::Proxy::start(cfg, pki.store(CLIENT.0, CLIENT.1)).await.unwrap();
    let mut s = TcpStream::connect(client2.addrs.upstreams[0]).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut greet))
        .await
        .expect("service-declared tcp port")
        .unwrap();
    assert_eq!(&greet, b"220 ready\r\n");
}

#[tokio::test]
async fn connect_tunnel_is_passed_through() {
    let p = pair_allowing_connect().await;
    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n").await.unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s.write_all(b"tunnelled bytes").await.unwrap();
    let mut back = [0u8; 15];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"tunnelled bytes");
}

#[tokio::test]
async fn connect_over_http2_is_tunnelled_and_the_connection_goes_on() {
    let p = pair_allowing_connect().await;
    let (client, conn) = h2::client::handshake(TcpStream::connect(p.http).await.unwrap()).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let (resp, mut up) =
        client.send_request(http::Request::connect("db.internal:5432").body(()).unwrap(), false).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    // The app (an echo behind the server sidecar) returns what goes through the tunnel, which
    // crosses the mesh as an HTTP/1.1 CONNECT over mTLS.
    let mut down = resp.into_body();
    for word in ["tunnelled ", "over ", "h2"] {
        up.send_data(bytes::Bytes::from_static(word.as_bytes()), false).unwrap();
        let mut got = Vec::new();
        while got.len() < word.len() {
            let chunk = down.data().await.expect("tunnel open").unwrap();
            let _ = down.flow_control().release_capacity(chunk.len());
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, word.as_bytes());
    }
    // Other streams on the same connection are served while the tunnel is open.
    let (resp, _) = client.send_request(http::Request::get("http://api/after").body(()).unwrap(), true).unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
    // The caller's half-close reaches the app, whose close ends the stream.
    up.send_data(bytes::Bytes::new(), true).unwrap();
    // (END_STREAM may come on an empty DATA frame, which h2 hands over as an empty chunk.)
    while let Some(chunk) = down.data().await {
        assert_eq!(chunk.unwrap(), "", "nothing after the echo");
    }
}

/// Upstreams declared `http1` and `http2` skip detection but read the HTTP version from the
/// preface: each serves an HTTP/1.1 client and an HTTP/2 (prior knowledge) client alike.
#[tokio::test]
async fn declared_http_upstreams_take_either_http_version() {
    let pki = weft_testkit::Pki::new();
    let app_http = weft_testkit::http_echo("api").await;
    let app_tcp = weft_testkit::tcp_echo().await;
    let server = start_server(&pki, app_http, app_tcp, "").await;
    let mut cfg = client_config(app_http, app_tcp.port(), server.addrs.inbound.unwrap(), &api_id(), "");
    let upstreams = &mut cfg.outbound.as_mut().unwrap().upstreams;
    let declared = upstreams.len();
    for protocol in [weft_api::proxy::Protocol::Http1, weft_api::proxy::Protocol::Http2] {
        let mut up = upstreams[0].clone();
        up.listen = "127.0.0.1:0".parse().unwrap();
        up.protocol = protocol;
        upstreams.push(up);
    }
    let client = weft_proxy::Proxy::start(cfg, pki.store(CLIENT.0, CLIENT.1)).await.unwrap();
    for (i, addr) in client.addrs.upstreams[declared..].iter().enumerate() {
        let resp = http1_get(*addr, "/h1").await.unwrap();
        assert_eq!(resp.status(), 200, "upstream {i}, HTTP/1.1");
        let mut h2 = http2_client(*addr).await.unwrap();
        let req = http::Request::get("http://api/h2").body(Full::new(Bytes::new())).unwrap();
        assert_eq!(h2.send_request(req).await.unwrap().status(), 200, "upstream {i}, HTTP/2");
    }
}

#[tokio::test]
async fn one_connection_per_peer_when_configured() {
    weft_testkit::init_tracing();
    let pki = weft_testkit::Pki::new();
    let app_http = weft_testkit::http_echo("api").await;
    let app_tcp = weft_testkit::tcp_echo().await;
    let server = start_server(&pki, app_http, app_tcp, "").await;
    let mut cfg = client_config(app_http, app_tcp.port(), server.addrs.inbound.unwrap(), &api_id(), "");
    cfg.outbound.as_mut().unwrap().connections_per_peer = Some(1);
    let client = weft_proxy::Proxy::start(cfg, pki.store(CLIENT.0, CLIENT.1)).await.unwrap();
    for _ in 0..20 {
        assert_eq!(weft_testkit::http1_get(client.addrs.upstreams[0], "/").await.unwrap().status(), 200);
    }
    let m = client.metrics_text();
    assert_eq!(metric(&m, "weft_peer_connections_total"), 1.0, "{m}");
    assert_eq!(metric(&m, "weft_peer_connection_reuses_total"), 19.0, "{m}");
}
