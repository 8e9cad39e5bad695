//! The thread-per-core runtime `weft-proxy run` uses: a sidecar pair whose connections are spread
//! over two single-threaded workers serves HTTP/1.1 and HTTP/2 like the default runtime does,
//! with pooled peer and app connections reused and metrics counted.
mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use support::*;
use weft_proxy::workers::Threads;
use weft_proxy::Proxy;
use weft_testkit::{http1_get, http2_client, Pki};

#[test]
fn pair_on_two_workers_serves_http1_and_http2() {
    let (rt, threads) = Threads::start(2).unwrap();
    rt.block_on(async {
        weft_testkit::init_tracing();
        let pki = Pki::new();
        let app_http = weft_testkit::http_echo("api").await;
        let app_tcp = weft_testkit::tcp_echo().await;
        let server = Proxy::start_on(
            server_config(app_http.port(), app_tcp.port(), ""),
            pki.store(SERVER.0, SERVER.1),
            threads.workers(),
        )
        .await
        .unwrap();
        let via = server.addrs.inbound.unwrap();
        let client = Proxy::start_on(
            client_config(app_http, app_tcp.port(), via, &api_id(), ""),
            pki.store(CLIENT.0, CLIENT.1),
            threads.workers(),
        )
        .await
        .unwrap();
        let http = client.addrs.upstreams[0];

        // Several connections each way, so that both workers serve some.
        for _ in 0..4 {
            for _ in 0..3 {
                let resp = http1_get(http, "/h1").await.unwrap();
                assert_eq!(resp.status(), 200);
                let v: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
                assert_eq!(v["peer_identity"], web_id());
                assert_eq!(v["version"], "HTTP/1.1");
            }
            let mut h2 = http2_client(http).await.unwrap();
            for _ in 0..3 {
                let req = http::Request::get("http://api/h2").body(Full::new(Bytes::new())).unwrap();
                let resp = h2.send_request(req).await.unwrap();
                assert_eq!(resp.status(), 200);
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(v["version"], "HTTP/2.0");
                assert_eq!(v["peer_identity"], web_id());
            }
        }
        for p in [&client, &server] {
            let text = p.metrics_text();
            assert_eq!(metric(&text, "weft_http_requests_total"), 24.0, "{text}");
            assert_eq!(metric(&text, "weft_http_responses_total"), 24.0, "{text}");
        }
        // One pooled mTLS connection per worker at most, reused for everything else.
        let text = client.metrics_text();
        assert!(metric(&text, "weft_peer_connections_total") <= 2.0, "{text}");
        assert!(metric(&text, "weft_peer_connection_reuses_total") >= 22.0, "{text}");
        assert_eq!(client.shutdown().await, 0);
        assert_eq!(server.shutdown().await, 0);
    });
    drop(rt);
    drop(threads);
}
