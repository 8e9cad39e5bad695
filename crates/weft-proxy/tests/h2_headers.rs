//! HTTP/2 request header blocks past `limits.max_header_bytes`: `431` on that stream, and the
//! connection's other streams carry on (no GOAWAY).

mod support;

use bytes::Bytes;
use http::Request;
use support::*;
use tokio::net::TcpStream;

/// Over one h2c connection to the client sidecar: a POST whose body is still open, then a GET
/// with a 200 KB header block (20 headers of 10 KB). The GET gets 431; the POST then completes.
#[tokio::test]
async fn an_oversized_header_block_is_431_and_the_other_streams_complete() {
    let p = pair().await;
    let tcp = TcpStream::connect(p.http).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2c handshake");
    let driver = tokio::spawn(conn);
    let mut send = send.ready().await.unwrap();

    let post = Request::post("http://api/echo").body(()).unwrap();
    let (normal, mut body) = send.send_request(post, false).expect("POST opened");
    body.send_data(Bytes::from_static(b"first half, "), false).unwrap();

    let mut send = send.ready().await.unwrap();
    let mut big = Request::get("http://api/").body(()).unwrap();
    for i in 0..20u8 {
        let value = String::from(char::from(b'a' + i)).repeat(10 * 1024);
        big.headers_mut().append(http::HeaderName::try_from(format!("x-big-{i}")).unwrap(), value.parse().unwrap());
    }
    let (oversized, _) = send.send_request(big, true).expect("GET sent");
    let resp = oversized.await.expect("the oversized stream is answered, not reset with the connection");
    assert_eq!(resp.status(), 431);

    body.send_data(Bytes::from_static(b"second half"), true).unwrap();
    let resp = normal.await.expect("the open stream survives on the same connection");
    assert_eq!(resp.status(), 200);
    let mut recv = resp.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.expect("body");
        let _ = recv.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
    }
    assert!(!got.is_empty(), "the POST got its answer");
    assert!(!driver.is_finished(), "the connection is still up");
}
