//! Bursts: many queries at once must all be answered, none dropped by the kernel.

use std::collections::HashSet;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use crate::support::*;

/// Queries sent back to back, without waiting for any answer.
const BURST: usize = 2_000;
/// How long the answers may take in all; generous, so only lost queries fail the test.
const BURST_BOUND: Duration = Duration::from_secs(60);

/// A client socket whose own receive buffer holds every answer of the burst, so that a loss
/// seen here is the server's.
fn client_socket() -> UdpSocket {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    socket.set_recv_buffer_size(8 << 20).unwrap();
    socket.bind(&localhost0().into()).unwrap();
    socket.set_nonblocking(true).unwrap();
    UdpSocket::from_std(socket.into()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpaced_burst_of_udp_queries_is_answered_in_full() {
    let server = start(east()).await;
    let addr = server.local_addr();
    let socket = std::sync::Arc::new(client_socket());

    let names = ["web.service.consul.", "api.shop.svc.cluster.local.", "nope.service.consul."];
    let queries: Vec<Vec<u8>> = (0..BURST)
        .map(|i| {
            let mut q = query(names[i % names.len()], RecordType::A);
            q.metadata.id = i as u16;
            q.to_vec().unwrap()
        })
        .collect();

    let receiver = {
        let socket = socket.clone();
        tokio::spawn(async move {
            let mut answered = HashSet::new();
            let mut buf = vec![0; 65535];
            let collect = async {
                while answered.len() < BURST {
                    let (len, _) = socket.recv_from(&mut buf).await.unwrap();
                    let response = Message::from_vec(&buf[..len]).expect("response parses");
                    assert_ne!(response.metadata.response_code, ResponseCode::ServFail, "{response:?}");
                    answered.insert(response.metadata.id);
                }
            };
            let _ = tokio::time::timeout(BURST_BOUND, collect).await;
            answered
        })
    };
    for q in &queries {
        socket.send_to(q, addr).await.unwrap();
    }
    let answered = receiver.await.unwrap();
    assert_eq!(answered.len(), BURST, "{} of {BURST} queries were never answered", BURST - answered.len());
    server.shutdown().await;
}
