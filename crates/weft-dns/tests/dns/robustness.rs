//! Bad input and bad configuration.

use hickory_proto::op::{Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use weft_dns::{DnsConfig, DnsError, DnsServer};

use crate::support::*;

/// Deterministic junk: a small linear congruential generator.
fn junk(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect()
}

#[tokio::test]
async fn garbage_does_not_stop_the_server() {
    let server = start(east()).await;
    let addr = server.local_addr();

    // Fire and forget: the server reads datagrams in order, so an answer to the query sent after
    // them shows it survived them all.
    let socket = UdpSocket::bind(localhost0()).await.unwrap();
    let mut response = query("x.", RecordType::A);
    response.metadata.message_type = hickory_proto::op::MessageType::Response;
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        junk(11, 1),
        junk(12, 2),
        junk(512, 3),
        junk(4000, 4),
        vec![0xff; 300],
        response.to_vec().unwrap(),
    ];
    for g in &garbage {
        socket.send_to(g, addr).await.unwrap();
    }
    for seed in 5..200 {
        socket.send_to(&junk(seed as usize, seed), addr).await.unwrap();
    }

    // A header that promises a question the packet does not hold: FORMERR.
    let formerr = [0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 3, b'w', b'e'];
    let reply = udp_raw(addr, &formerr).await.expect("FORMERR answer");
    let reply = Message::from_vec(&reply).unwrap();
    assert_eq!(reply.metadata.id, 0x1234);
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr, "{reply:?}");

    assert_ips(&udp(addr, "web.service.consul.", RecordType::A).await, &["10.0.0.1", "10.0.0.2"]);

    // TCP: a garbage frame kills only its own connection.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let bad = junk(100, 9);
    stream.write_all(&(bad.len() as u16).to_be_bytes()).await.unwrap();
    stream.write_all(&bad).await.unwrap();
    stream.write_all(&[0xff, 0xff, 1, 2, 3]).await.unwrap();
    drop(stream);
    assert_ips(&tcp(addr, "web.service.consul.", RecordType::A).await, &["10.0.0.1", "10.0.0.2"]);
    server.shutdown().await;
}

#[tokio::test]
async fn malformed_queries_get_error_codes() {
    let server = start(east()).await;
    let addr = server.local_addr();

    let mut two = query("web.service.consul.", RecordType::A);
    two.add_query(Query::query(Name::from_ascii("web.service.consul.").unwrap(), RecordType::AAAA));
    assert_eq!(udp_message(addr, &two).await.metadata.response_code, ResponseCode::FormErr);

    let mut none = query("web.service.consul.", RecordType::A);
    none.queries.clear();
    assert_eq!(udp_message(addr, &none).await.metadata.response_code, ResponseCode::FormErr);

    let mut status = query("web.service.consul.", RecordType::A);
    status.metadata.op_code = OpCode::Status;
    assert_eq!(udp_message(addr, &status).await.metadata.response_code, ResponseCode::NotImp);

    let axfr = udp(addr, "consul.", RecordType::AXFR).await;
    assert_eq!(axfr.metadata.response_code, ResponseCode::Refused);
    server.shutdown().await;
}

#[tokio::test]
async fn large_answers_truncate_over_udp_and_fit_with_edns_or_tcp() {
    let instances = (0..100).map(|i| inst(&format!("big-{i}"), &format!("10.8.0.{i}"), &[]));
    let server = start(table("east").service("default", "big", instances)).await;
    let addr = server.local_addr();
    let name = "big.service.consul.";

    let bytes = udp_raw(addr, &query(name, RecordType::A).to_vec().unwrap()).await.unwrap();
    assert!(bytes.len() <= 512, "{} bytes", bytes.len());
    assert!(Message::from_vec(&bytes).unwrap().metadata.truncation);

    let edns = udp_message(addr, &with_edns(query(name, RecordType::A))).await;
    assert!(!edns.metadata.truncation);
    assert_eq!(ips(&edns).len(), 100);
    assert_eq!(tcp(addr, name, RecordType::A).await.answers.len(), 100);
    server.shutdown().await;
}

#[tokio::test]
async fn answers_rotate_between_queries() {
    let server = start(east()).await;
    let addr = server.local_addr();
    let first = udp(addr, "web.service.consul.", RecordType::A).await.answers[0].data.clone();
    let second = udp(addr, "web.service.consul.", RecordType::A).await.answers[0].data.clone();
    assert_ne!(first, second);
    server.shutdown().await;
}

#[tokio::test]
async fn start_errors_name_the_setting() {
    let taken = start(east()).await;
    let err = DnsServer::start(DnsConfig::new(taken.local_addr()), east()).await.unwrap_err();
    assert!(matches!(err, DnsError::BindUdp { .. }), "{err}");
    assert!(err.to_string().contains("`listen`"), "{err}");

    let mut cfg = DnsConfig::new(localhost0());
    cfg.ttl = u32::MAX;
    let err = DnsServer::start(cfg, east()).await.unwrap_err();
    assert!(err.to_string().contains("`ttl`"), "{err}");
    taken.shutdown().await;
}
