use std::net::SocketAddr;
use std::time::Duration;

use super::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn upstream_loops_are_detected() {
    assert!(is_self(addr("127.0.0.1:5353"), addr("127.0.0.1:5353")));
    assert!(is_self(addr("0.0.0.0:5353"), addr("127.0.0.1:5353")));
    assert!(is_self(addr("[::]:5353"), addr("[::1]:5353")));
    assert!(!is_self(addr("127.0.0.1:5353"), addr("127.0.0.1:53")));
    assert!(!is_self(addr("127.0.0.1:5353"), addr("10.0.0.10:5353")));
}

#[test]
fn validate_names_the_setting() {
    let mut cfg = DnsConfig::new(addr("127.0.0.1:0"));
    assert!(cfg.validate().is_ok());
    cfg.ttl = u32::MAX;
    assert!(cfg.validate().unwrap_err().to_string().contains("`ttl`"));
    cfg.ttl = DEFAULT_TTL;
    cfg.upstream = Some(addr("127.0.0.1:53"));
    cfg.forward_timeout = Duration::ZERO;
    assert!(cfg.validate().unwrap_err().to_string().contains("`forward_timeout`"));
}

#[tokio::test]
async fn newer_tables_are_never_replaced_by_older_ones() {
    let server = DnsServer::start(DnsConfig::new(addr("127.0.0.1:0")), Table::default()).await.unwrap();
    let stale = server.next_serial.fetch_add(1, Ordering::Relaxed);
    server.set_table(Table::default());
    let newer = *server.published.lock().unwrap();
    assert!(newer > stale);

    // A table built before the one above but published after it is dropped.
    server.publish(stale, Index::new(&Table::default(), DEFAULT_TTL, stale));
    assert_eq!(*server.published.lock().unwrap(), newer);
    assert_eq!(server.index.load().serial(), newer);
    server.shutdown().await;
}

#[test]
fn validate_names_the_udp_settings() {
    let mut cfg = DnsConfig::new(addr("127.0.0.1:0"));
    assert_eq!(cfg.udp_receive_buffer, DEFAULT_UDP_RECEIVE_BUFFER);
    cfg.udp_receive_buffer = usize::MAX;
    assert!(cfg.validate().unwrap_err().to_string().contains("`udp_receive_buffer`"));
    cfg.udp_receive_buffer = 0;
    cfg.udp_tasks = 1000;
    assert!(cfg.validate().unwrap_err().to_string().contains("`udp_tasks`"));
    cfg.udp_tasks = 2;
    assert!(cfg.validate().is_ok());
}
