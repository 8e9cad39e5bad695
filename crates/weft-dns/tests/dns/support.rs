//! A small builder for tables, and a DNS client over UDP and TCP built on hickory-proto.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use weft_dns::{DnsConfig, DnsServer, Instance, ServiceEntry, Table};

/// Upper bound on waiting for any one answer; a test that hits it has failed.
pub const ANSWER_BOUND: Duration = Duration::from_secs(10);

/// `Table` builder: `table("east").service("default", "web", [inst(..), ..])`.
pub fn table(cluster: &str) -> Table {
    Table { cluster: cluster.into(), ..Default::default() }
}

pub trait TableExt {
    fn service(self, namespace: &str, name: &str, instances: impl IntoIterator<Item = Instance>) -> Self;
}

impl TableExt for Table {
    fn service(mut self, namespace: &str, name: &str, instances: impl IntoIterator<Item = Instance>) -> Self {
        self.services.push(ServiceEntry {
            name: name.into(),
            namespace: namespace.into(),
            instances: instances.into_iter().collect(),
            ..Default::default()
        });
        self
    }
}

/// A healthy instance on port 8080.
pub fn inst(node: &str, address: &str, tags: &[&str]) -> Instance {
    Instance {
        address: address.parse().expect("test address"),
        port: 8080,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        healthy: true,
        node: node.into(),
        cluster: String::new(),
    }
}

pub fn unhealthy(mut instance: Instance) -> Instance {
    instance.healthy = false;
    instance
}

/// The table most tests use: cluster `east`.
pub fn east() -> Table {
    table("east")
        .service(
            "default",
            "web",
            [
                inst("web-1", "10.0.0.1", &["v2", "primary"]),
                inst("web-2", "10.0.0.2", &["v1"]),
                inst("web-3", "fd00::3", &["v2"]),
                unhealthy(inst("web-4", "10.0.0.4", &["v2"])),
            ],
        )
        .service("shop", "api", [inst("api-1", "10.1.0.1", &[])])
        .service("default", "down", [unhealthy(inst("down-1", "10.2.0.1", &[]))])
}

pub fn localhost0() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub async fn start(table: Table) -> DnsServer {
    start_with(DnsConfig::new(localhost0()), table).await
}

pub async fn start_with(cfg: DnsConfig, table: Table) -> DnsServer {
    DnsServer::start(cfg, table).await.expect("DNS server starts")
}

static NEXT_ID: AtomicU16 = AtomicU16::new(1);

/// A query for `name`/`qtype` with a fresh id and RD set; no EDNS.
pub fn query(name: &str, qtype: RecordType) -> Message {
    let mut message = Message::query();
    message.metadata.id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).expect("test name"), qtype));
    message
}

/// The same query, advertising a 4096-byte UDP buffer with EDNS.
pub fn with_edns(mut message: Message) -> Message {
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    message.set_edns(edns);
    message
}

pub async fn udp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    udp_message(server, &query(name, qtype)).await
}

pub async fn tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    tcp_message(server, &query(name, qtype)).await
}

/// Sends `message` over UDP and returns the response with its id (checked).
pub async fn udp_message(server: SocketAddr, message: &Message) -> Message {
    let bytes = message.to_vec().expect("encode query");
    let response = udp_raw(server, &bytes).await.expect("an answer over UDP");
    let response = Message::from_vec(&response).expect("response parses");
    assert_eq!(response.metadata.id, message.metadata.id);
    response
}

/// Sends `bytes` as one datagram; returns the reply datagram, or `None` if none came within
/// `bound`.
pub async fn udp_raw_within(server: SocketAddr, bytes: &[u8], bound: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind(localhost0()).await.unwrap();
    socket.send_to(bytes, server).await.unwrap();
    let mut buf = vec![0; 65535];
    let (len, from) = tokio::time::timeout(bound, socket.recv_from(&mut buf)).await.ok()?.unwrap();
    assert_eq!(from, server);
    buf.truncate(len);
    Some(buf)
}

pub async fn udp_raw(server: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    udp_raw_within(server, bytes, ANSWER_BOUND).await
}

/// Sends `message` over TCP (RFC 1035 §4.2.2 framing) and returns the response.
pub async fn tcp_message(server: SocketAddr, message: &Message) -> Message {
    let bytes = message.to_vec().expect("encode query");
    let exchange = async {
        let mut stream = TcpStream::connect(server).await.unwrap();
        stream.write_all(&(bytes.len() as u16).to_be_bytes()).await.unwrap();
        stream.write_all(&bytes).await.unwrap();
        let mut len = [0; 2];
        stream.read_exact(&mut len).await.unwrap();
        let mut buf = vec![0; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut buf).await.unwrap();
        buf
    };
    let buf = tokio::time::timeout(ANSWER_BOUND, exchange).await.expect("an answer over TCP");
    let response = Message::from_vec(&buf).expect("response parses");
    assert_eq!(response.metadata.id, message.metadata.id);
    response
}

/// A and AAAA addresses in the answer section, sorted.
pub fn ips(message: &Message) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    ips.sort();
    ips
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Asserts NOERROR with the given addresses (any order).
#[track_caller]
pub fn assert_ips(message: &Message, expected: &[&str]) {
    assert_eq!(message.metadata.response_code, ResponseCode::NoError, "{message:?}");
    let mut expected: Vec<IpAddr> = expected.iter().map(|s| ip(s)).collect();
    expected.sort();
    assert_eq!(ips(message), expected, "{message:?}");
}

/// Asserts a negative answer (`code`, no answers) carrying the SOA of our zone.
#[track_caller]
pub fn assert_negative(message: &Message, code: ResponseCode) {
    assert_eq!(message.metadata.response_code, code, "{message:?}");
    assert!(message.answers.is_empty(), "{message:?}");
    assert!(message.metadata.authoritative, "{message:?}");
    assert!(
        message.authorities.iter().any(|r| r.record_type() == RecordType::SOA),
        "negative answers carry the SOA: {message:?}"
    );
}
