//! Names we do not know go to the upstream; the upstream here is a second `DnsServer`.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;
use weft_dns::DnsConfig;

use crate::support::*;

/// Cluster `west`, which the `east` server does not know.
fn west() -> weft_dns::Table {
    table("west").service("default", "web", [inst("web-w1", "10.9.0.1", &[])]).service(
        "shop",
        "cart",
        [inst("cart-w1", "10.9.1.1", &[])],
    )
}

fn big(n: u8) -> Vec<weft_dns::Instance> {
    (0..n).map(|i| inst(&format!("big-{i}"), &format!("10.8.0.{i}"), &[])).collect()
}

#[tokio::test]
async fn unknown_names_are_forwarded_to_the_upstream() {
    let upstream = start(west()).await;
    let mut cfg = DnsConfig::new(localhost0());
    cfg.upstream = Some(upstream.local_addr());
    let server = start_with(cfg, east()).await;
    let addr = server.local_addr();

    // Known here: answered here, not upstream.
    let own = udp(addr, "web.service.consul.", RecordType::A).await;
    assert_ips(&own, &["10.0.0.1", "10.0.0.2"]);
    assert!(own.metadata.recursion_available, "with an upstream we recurse: {own:?}");

    // Another datacenter's Consul names: unknown here, known upstream (the peer cluster's).
    assert_ips(&udp(addr, "web.service.west.consul.", RecordType::A).await, &["10.9.0.1"]);
    assert_ips(&tcp(addr, "web.service.west.consul.", RecordType::A).await, &["10.9.0.1"]);

    // The upstream's negative answers come back as they are.
    let nx = udp(addr, "nope.service.west.consul.", RecordType::A).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain, "{nx:?}");
    let outside = udp(addr, "example.com.", RecordType::A).await;
    assert_eq!(outside.metadata.response_code, ResponseCode::Refused, "upstream has no upstream: {outside:?}");

    server.shutdown().await;
    upstream.shutdown().await;
}

/// An upstream that answers every query with one A record, 192.0.2.53, and counts the queries.
struct AnswerAll {
    addr: std::net::SocketAddr,
    queries: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl AnswerAll {
    async fn start() -> Self {
        let socket = UdpSocket::bind(localhost0()).await.unwrap();
        let addr = socket.local_addr().unwrap();
        let queries = Arc::new(AtomicUsize::new(0));
        let counted = queries.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0; 65535];
            loop {
                let Ok((len, from)) = socket.recv_from(&mut buf).await else { return };
                let Ok(query) = Message::from_vec(&buf[..len]) else { continue };
                counted.fetch_add(1, Ordering::SeqCst);
                let mut response = Message::response(query.metadata.id, query.metadata.op_code);
                for q in &query.queries {
                    let rdata = RData::A(A(Ipv4Addr::new(192, 0, 2, 53)));
                    response.add_answer(Record::from_rdata(q.name().clone(), 60, rdata));
                }
                response.queries = query.queries;
                let _ = socket.send_to(&response.to_vec().unwrap(), from).await;
            }
        });
        AnswerAll { addr, queries, task }
    }
}

#[tokio::test]
async fn unknown_names_in_our_zones_are_nxdomain_even_with_an_upstream() {
    let upstream = AnswerAll::start().await;
    let mut cfg = DnsConfig::new(localhost0());
    cfg.upstream = Some(upstream.addr);
    let server = start_with(cfg, east()).await;
    let addr = server.local_addr();

    // The upstream works and answers anything it is asked.
    assert_ips(&udp(addr, "example.com.", RecordType::A).await, &["192.0.2.53"]);
    assert_eq!(upstream.queries.load(Ordering::SeqCst), 1);

    for name in [
        "nosuch.service.consul.",
        "nosuch.service.east.consul.",
        "nosuch.node.consul.",
        "nosuch.consul.",
        "nosuch.default.svc.cluster.local.",
        "cart.shop.svc.cluster.local.",
        "nosuch.svc.cluster.local.",
        "nosuch.cluster.local.",
    ] {
        assert_negative(&udp(addr, name, RecordType::A).await, ResponseCode::NXDomain);
        assert_negative(&tcp(addr, name, RecordType::AAAA).await, ResponseCode::NXDomain);
    }
    assert_eq!(upstream.queries.load(Ordering::SeqCst), 1, "no name of our zones went upstream");

    upstream.task.abort();
    server.shutdown().await;
}

#[tokio::test]
async fn truncated_upstream_answers_are_fetched_over_tcp_for_tcp_clients() {
    let upstream = start(west().service("default", "big", big(100))).await;
    let mut cfg = DnsConfig::new(localhost0());
    cfg.upstream = Some(upstream.local_addr());
    let server = start_with(cfg, east()).await;
    let addr = server.local_addr();

    // UDP client without EDNS: the answer does not fit in 512 bytes, TC tells it to use TCP.
    let query = query("big.service.west.consul.", RecordType::A);
    let bytes = udp_raw(addr, &query.to_vec().unwrap()).await.unwrap();
    assert!(bytes.len() <= 512, "{} bytes", bytes.len());
    let truncated = Message::from_vec(&bytes).unwrap();
    assert!(truncated.metadata.truncation, "{truncated:?}");

    // TCP client: we asked the upstream again over TCP and relay the whole answer.
    let whole = tcp(addr, "big.service.west.consul.", RecordType::A).await;
    assert!(!whole.metadata.truncation, "{whole:?}");
    assert_eq!(ips(&whole).len(), 100);

    server.shutdown().await;
    upstream.shutdown().await;
}

#[tokio::test]
async fn silent_upstream_gives_servfail() {
    let silent = UdpSocket::bind(localhost0()).await.unwrap();
    let mut cfg = DnsConfig::new(localhost0());
    cfg.upstream = Some(silent.local_addr().unwrap());
    cfg.forward_timeout = Duration::from_millis(200);
    let server = start_with(cfg, east()).await;
    let addr = server.local_addr();

    let query = query("example.com.", RecordType::A);
    let response = udp_message(addr, &query).await;
    assert_eq!(response.metadata.response_code, ResponseCode::ServFail, "{response:?}");

    // The query did reach the upstream, unchanged.
    let mut buf = vec![0; 65535];
    let (len, _) = tokio::time::timeout(ANSWER_BOUND, silent.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..len], &query.to_vec().unwrap()[..]);

    // Our own names do not depend on the upstream.
    assert_ips(&udp(addr, "web.service.consul.", RecordType::A).await, &["10.0.0.1", "10.0.0.2"]);
    server.shutdown().await;
}
