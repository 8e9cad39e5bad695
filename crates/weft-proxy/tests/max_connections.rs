//! `limits.max_connections`: a peer that opens many connections cannot make the sidecar accept
//! them all (each would bring its own receive window). At the cap the sidecar stops accepting;
//! the next connection waits in the listen backlog and is served once another closes.

mod support;

use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio::net::TcpStream;
use weft_testkit::{eventually, http1_get, Pki};

/// A mesh peer's (`default/web`) mTLS HTTP/2 connection to the sidecar's inbound listener; the
/// task driving it owns the socket (aborting it closes the connection).
async fn peer_connection(
    pki: &Pki,
    inbound: SocketAddr,
    app_port: u16,
) -> (h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<()>) {
    let cfg = weft_identity::tls::client_config(&pki.store(CLIENT.0, CLIENT.1), &[b"h2"]).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let name = rustls_pki_types::ServerName::try_from(format!("{app_port}.api.default.local.weft")).unwrap();
    let tls = connector.connect(name, TcpStream::connect(inbound).await.unwrap()).await.unwrap();
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, task)
}

/// One GET over `send`; its status.
async fn get(send: &mut h2::client::SendRequest<Bytes>, app_port: u16) -> u16 {
    let req = http::Request::get(format!("http://{app_port}.api/ok")).body(()).unwrap();
    let (resp, _) = send.clone().ready().await.unwrap().send_request(req, true).unwrap();
    resp.await.unwrap().status().as_u16()
}

async fn metrics(admin: SocketAddr) -> String {
    String::from_utf8_lossy(http1_get(admin, "/metrics").await.unwrap().body()).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_max_connections_the_next_one_waits_until_one_closes() {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let app = weft_testkit::http_echo("api").await;
    let tcp = weft_testkit::tcp_echo().await;
    let server = start_server(&pki, app, tcp, "limits: { max_connections: 4 }").await;
    let (inbound, admin) = (server.addrs.inbound.unwrap(), server.addrs.admin.unwrap());
    let port = app.port();

    let mut open = vec![];
    for _ in 0..4 {
        let (mut send, task) = peer_connection(&pki, inbound, port).await;
        assert_eq!(get(&mut send, port).await, 200);
        open.push((send, task));
    }

    // The fifth: TCP connects (the kernel's backlog), but its handshake is not answered.
    let fifth = {
        let pki_store = pki.store(CLIENT.0, CLIENT.1);
        tokio::spawn(async move {
            let cfg = weft_identity::tls::client_config(&pki_store, &[b"h2"]).unwrap();
            let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
            let name = rustls_pki_types::ServerName::try_from(format!("{port}.api.default.local.weft")).unwrap();
            let tls = connector.connect(name, TcpStream::connect(inbound).await.unwrap()).await.unwrap();
            let (mut send, conn) = h2::client::handshake(tls).await.unwrap();
            tokio::spawn(async move {
                let _ = conn.await;
            });
            get(&mut send, port).await
        })
    };
    let text = eventually("the sidecar to report it is at limits.max_connections", Duration::from_secs(30), || async {
        let m = metrics(admin).await;
        (metric(&m, "weft_connections_at_limit_total{from=\"peer\"}") >= 1.0).then_some(m)
    })
    .await;
    assert_eq!(metric(&text, "weft_connections_open{from=\"peer\"}"), 4.0, "{text}");
    // The four are still served (a round trip each, time for the fifth to have been accepted,
    // were it going to be); the fifth is not.
    for (send, _) in &mut open {
        assert_eq!(get(send, port).await, 200);
    }
    assert!(!fifth.is_finished(), "the fifth connection was served beyond limits.max_connections: 4");
    assert_eq!(metric(&metrics(admin).await, "weft_connections_open{from=\"peer\"}"), 4.0);

    // One closes: the fifth is accepted and served.
    let (send, task) = open.remove(0);
    drop(send);
    task.abort();
    let status = tokio::time::timeout(Duration::from_secs(60), fifth)
        .await
        .expect("the fifth connection was not served after one closed")
        .unwrap();
    assert_eq!(status, 200);

    // A normal caller through its own sidecar keeps being served once the others close.
    for (send, task) in open.drain(..) {
        drop(send);
        task.abort();
    }
    let client = start_client(pki.store(CLIENT.0, CLIENT.1), app, tcp, inbound, &api_id(), "").await;
    for i in 0..5 {
        let resp = tokio::time::timeout(Duration::from_secs(60), http1_get(client.addrs.upstreams[0], "/ok"))
            .await
            .unwrap_or_else(|_| panic!("request {i} of a normal caller stalled"))
            .unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
    }
    eventually("the closed connections to free their slots", Duration::from_secs(30), || async {
        (metric(&metrics(admin).await, "weft_connections_open{from=\"peer\"}") < 4.0).then_some(())
    })
    .await;
}
