//! Certificate rotation under load, graceful drain, the admin port. (Identity from files and its
//! reload: `cli.rs`.)

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_testkit::{eventually, http1_get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_drops_nothing() {
    let p = pair().await;
    // A long-lived TCP stream opened before the rotation must survive it.
    let mut long = TcpStream::connect(p.tcp).await.unwrap();
    long.write_all(b"before").await.unwrap();
    let mut b = [0u8; 6];
    long.read_exact(&mut b).await.unwrap();

    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = vec![];
    for _ in 0..4 {
        let (ok, failed, stop, addr) = (ok.clone(), failed.clone(), stop.clone(), p.http);
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match http1_get(addr, "/load").await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    eventually("load running", Duration::from_secs(10), || {
        let n = ok.load(Ordering::Relaxed);
        async move { (n >= 20).then_some(()) }
    })
    .await;
    // Rotate both sides, several times, while requests flow.
    let mut new_server_leaf = None;
    for _ in 0..3 {
        p.client.certs().set_leaf(p.pki.leaf("default", "web")).unwrap();
        let leaf = p.pki.leaf("default", "api");
        p.server.certs().set_leaf(leaf.clone()).unwrap();
        new_server_leaf = Some(leaf);
        let before = ok.load(Ordering::Relaxed);
        eventually("requests after rotation", Duration::from_secs(10), || {
            let n = ok.load(Ordering::Relaxed);
            async move { (n >= before + 20).then_some(()) }
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during rotation ({} ok)",
        ok.load(Ordering::Relaxed)
    );

    long.write_all(b"after!").await.unwrap();
    long.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"after!", "the connection opened before rotation still works");

    // New handshakes present the new certificate.
    let cfg = weft_identity::tls::client_config(&p.pki.store("default", "web"), &[b"h2"]).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let name = rustls_pki_types::ServerName::try_from(format!("{}.api.default.local.weft", p.app_http.port())).unwrap();
    let tls =
        connector.connect(name, TcpStream::connect(p.server.addrs.inbound.unwrap()).await.unwrap()).await.unwrap();
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(presented, new_server_leaf.unwrap().chain()[0]);
}

#[tokio::test]
async fn rotation_refuses_a_different_identity() {
    let p = pair().await;
    let err = p.server.certs().set_leaf(p.pki.leaf("default", "other")).unwrap_err();
    assert!(err.to_string().contains("rotation keeps the identity"), "{err}");
    assert_eq!(p.server.certs().id().to_string(), api_id());
}

#[tokio::test]
async fn drain_finishes_in_flight_requests_then_stops() {
    let p = pair().await;
    let addr = p.http;
    let inflight = tokio::spawn(async move { http1_get(addr, "/delay/300").await });
    eventually("request in flight at the server sidecar", Duration::from_secs(10), || {
        let n = p.server.open_connections();
        async move { (n >= 1).then_some(()) }
    })
    .await;
    let inbound = p.server.addrs.inbound.unwrap();
    let left = p.server.shutdown().await;
    assert_eq!(left, 0, "all connections finished within the drain timeout");
    let resp = inflight.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200, "the in-flight request completed during drain");
    assert!(TcpStream::connect(inbound).await.is_err(), "a drained proxy accepts nothing new");
}

#[tokio::test]
async fn drain_waits_for_open_websocket_tunnels() {
    let p = pair().await;
    let mut ws = TcpStream::connect(p.http).await.unwrap();
    ws.write_all(b"GET /ws HTTP/1.1\r\nHost: api\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(ws.read(&mut b).await.unwrap(), 1);
        head.push(b[0]);
    }
    let server = p.server;
    let ctx = server.ctx().clone();
    let draining = tokio::spawn(server.shutdown());
    eventually("drain started", Duration::from_secs(10), || {
        let ctx = ctx.clone();
        async move { ctx_is_draining(&ctx).then_some(()) }
    })
    .await;
    // The tunnel still works while the proxy drains, and the drain waits for it.
    ws.write_all(b"still here").await.unwrap();
    let mut back = [0u8; 10];
    ws.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"still here");
    assert!(!draining.is_finished());
    drop(ws);
    assert_eq!(draining.await.unwrap(), 0, "drain ended when the tunnel closed");
}

fn ctx_is_draining(ctx: &weft_proxy::Ctx) -> bool {
    !ctx.is_ready()
}

#[tokio::test]
async fn admin_endpoints() {
    let p = pair().await;
    let admin = p.client.addrs.admin.unwrap();
    let _ = http1_get(p.http, "/warm").await.unwrap();
    assert_eq!(http1_get(admin, "/live").await.unwrap().status(), 200);
    assert_eq!(http1_get(admin, "/ready").await.unwrap().status(), 200);
    let metrics = http1_get(admin, "/metrics").await.unwrap();
    let text = String::from_utf8_lossy(metrics.body()).to_string();
    assert!(text.contains("weft_http_requests_total{direction=\"outbound\""), "{text}");
    assert!(text.contains(&format!("src=\"{}\"", web_id())), "identity labels: {text}");
    assert!(text.contains("weft_cert_expiry_timestamp_seconds"), "{text}");
    let dump = http1_get(admin, "/config_dump").await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(dump.body()).unwrap();
    assert_eq!(v["identity"], web_id());
    assert_eq!(v["routes"][0]["name"], "api");
    let up = v["listeners"]["upstreams"][0].as_str().unwrap();
    assert!(!up.ends_with(":0"), "bound ports, not configured ones: {up}");
    assert_eq!(v["routes"][0]["endpoints"][0]["identity"], api_id());
    assert!(v["certificate"]["expires_in_seconds"].as_u64().unwrap() > 23 * 3600);
    // The roots it trusts, by trust domain, and the one its certificate chains to.
    let bundle = v["trust_bundle"].as_array().unwrap();
    assert_eq!(bundle.len(), 1, "{v}");
    assert_eq!(bundle[0]["trust_domain"].as_str(), web_id().split('/').nth(2), "{v}");
    assert_eq!(bundle[0]["sha256"].as_str().map(str::len), Some(64), "{v}");
    assert_eq!(v["certificate"]["root_sha256"], bundle[0]["sha256"], "{v}");
    assert_eq!(http1_get(admin, "/nope").await.unwrap().status(), 404);

    // Health checks from outside the pod go through the server's admin port to its app.
    let admin = p.server.addrs.admin.unwrap();
    let probe = |path: String| async move { http1_get(admin, &path).await.unwrap() };
    let ok = probe(format!("/app-health/{}/health", p.app_http.port())).await;
    assert_eq!(ok.status(), 200, "{:?}", ok.body());
    let not_http = probe(format!("/app-health/{}/", p.app_tcp.port())).await;
    assert_eq!(not_http.status(), 503, "a TCP echo is not an HTTP app: {:?}", not_http.body());
    let not_app = probe("/app-health/1/health".into()).await;
    assert_eq!(not_app.status(), 404, "only the sidecar's app ports: {:?}", not_app.body());
    assert_eq!(probe("/app-health/x".into()).await.status(), 400);
}

#[tokio::test]
async fn route_changes_apply_to_open_keep_alive_connections() {
    let p = pair().await;
    let stream = TcpStream::connect(p.http).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let get =
        || http::Request::get("/").header("host", "t").body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
    assert_eq!(send.send_request(get()).await.unwrap().status(), 200);
    // The endpoint leaves the routes (deregistered, or its health checks failed).
    let empty = weft_api::proxy::Service {
        name: "api".into(),
        namespace: "default".into(),
        ports: vec![],
        endpoints: vec![],
        failover: vec![],
        cluster_weights: Default::default(),
        outlier_detection: None,
        routes: vec![],
        backend_policy: None,
        resilience: None,
    };
    p.client.set_routes(weft_proxy::Routes::from_services(&[empty]).unwrap());
    let resp = send.send_request(get()).await.unwrap();
    assert_eq!(resp.status(), 503, "the same keep-alive connection sees the new routes");
}
