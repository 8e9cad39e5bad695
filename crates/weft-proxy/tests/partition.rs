//! A partition between two sidecars (packets dropped, no RST, sockets left open): the pooled
//! connection is found dead by its keep-alive PING within about two seconds, the request on it is
//! answered 504 `peer-unresponsive`, the next one opens a new connection (504 `connect-timeout`
//! while the cut lasts), and requests succeed again once the network heals.

mod support;

use bytes::Bytes;
use http_body_util::Full;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_testkit::{eventually, http1_get, Pki};

/// A TCP relay that can be cut: while cut, it reads and drops every byte in both directions and
/// closes nothing, as a WAN partition does (new connections are accepted and blackholed too).
struct Relay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
}

impl Relay {
    async fn start(to: SocketAddr) -> Relay {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let relay = Relay { addr: l.local_addr().expect("addr"), cut: Arc::default() };
        let cut = relay.cut.clone();
        tokio::spawn(async move {
            while let Ok((down, _)) = l.accept().await {
                let Ok(up) = TcpStream::connect(to).await else { continue };
                let (dr, dw) = down.into_split();
                let (ur, uw) = up.into_split();
                tokio::spawn(pump(dr, uw, cut.clone()));
                tokio::spawn(pump(ur, dw, cut.clone()));
            }
        });
        relay
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }
}

async fn pump(mut r: impl AsyncRead + Unpin, mut w: impl AsyncWrite + Unpin, cut: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) if cut.load(Ordering::SeqCst) => continue,
            Ok(n) => {
                if w.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = w.shutdown().await;
}

/// `GET /ok` through the client sidecar, with a deadline far below the old 30 s + 10 s keep-alive.
async fn get_within(addr: SocketAddr, deadline: Duration) -> http::Response<Bytes> {
    tokio::time::timeout(deadline, http1_get(addr, "/ok"))
        .await
        .expect("the proxy answers within the deadline (a dead peer must not hang the request)")
        .expect("a response")
}

fn error_kind(resp: &http::Response<Bytes>) -> &str {
    resp.headers().get("x-weft-error").and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test]
async fn partition_fails_pooled_requests_fast_and_heals() {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let app_http = weft_testkit::http_echo("api").await;
    let app_tcp = weft_testkit::tcp_echo().await;
    let server = start_server(&pki, app_http, app_tcp, "").await;
    let relay = Relay::start(server.addrs.inbound.expect("inbound")).await;
    let client = start_client(
        pki.store(CLIENT.0, CLIENT.1),
        app_http,
        app_tcp,
        relay.addr,
        &api_id(),
        "timeouts: { connect: 2s }",
    )
    .await;
    let http = client.addrs.upstreams[0];

    // Warm every pool slot (one connection per core by default; requests take them in turn).
    for _ in 0..8 {
        let resp = get_within(http, Duration::from_secs(15)).await;
        assert_eq!(resp.status(), 200, "pool warm");
    }

    relay.set_cut(true);
    // On the pooled connection: answered once its PING goes unanswered.
    let resp = get_within(http, Duration::from_secs(15)).await;
    assert_eq!(resp.status(), 504, "{resp:?}");
    assert_eq!(error_kind(&resp), "peer-unresponsive", "{resp:?}");
    // Dead connections leave the pool: soon a request dials anew, into the partition. (Another
    // slot's connection may still be found dead first.)
    eventually("a request dials a new connection", Duration::from_secs(30), || async {
        let resp = get_within(http, Duration::from_secs(15)).await;
        assert_eq!(resp.status(), 504, "{resp:?}");
        let kind = error_kind(&resp).to_string();
        assert!(kind == "peer-unresponsive" || kind == "connect-timeout", "{resp:?}");
        (kind == "connect-timeout").then_some(())
    })
    .await;

    relay.set_cut(false);
    eventually("requests succeed once the network heals", Duration::from_secs(15), || async {
        let resp = get_within(http, Duration::from_secs(15)).await;
        (resp.status() == 200).then_some(())
    })
    .await;
}

/// The short keep-alive fails only dead peers: a request the app takes several keep-alive
/// periods to answer, on a healthy connection, succeeds.
#[tokio::test]
async fn healthy_long_request_outlives_keepalive_periods() {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let slow = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_http = slow.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = slow.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    // The app's own latency (not the test waiting): four keep-alive periods.
                    tokio::time::sleep(Duration::from_secs(4)).await;
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(b"slow"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let app_tcp = weft_testkit::tcp_echo().await;
    let server = start_server(&pki, app_http, app_tcp, "").await;
    let relay = Relay::start(server.addrs.inbound.expect("inbound")).await;
    let client = start_client(pki.store(CLIENT.0, CLIENT.1), app_http, app_tcp, relay.addr, &api_id(), "").await;
    let resp = get_within(client.addrs.upstreams[0], Duration::from_secs(30)).await;
    assert_eq!(resp.status(), 200, "{resp:?}");
    assert_eq!(resp.body().as_ref(), b"slow");
}
