//! gRPC checks against a real tonic server with `tonic_health`'s reporter.

mod support;

use support::*;
use tokio::net::TcpListener;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use weft_api::kinds::CheckSpec;
use weft_health::{probe, Monitor, ProbeContext, Status};

/// The name `set_serving::<HealthServer<HealthService>>()` reports under.
const HEALTH: &str = "grpc.health.v1.Health";

async fn grpc_server() -> (HealthReporter, std::net::SocketAddr) {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<HealthServer<HealthService>>().await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(l)),
    );
    (reporter, addr)
}

fn grpc(addr: std::net::SocketAddr, service: Option<&str>) -> CheckSpec {
    CheckSpec { grpc: Some(addr), grpc_service: service.map(str::to_string), ..check("grpc") }
}

#[tokio::test]
async fn grpc_serving_unknown_and_closed() {
    let (_reporter, addr) = grpc_server().await;
    let ctx = ProbeContext::new("default/api-1");

    // The whole server ("") and a named service.
    for service in [None, Some(HEALTH)] {
        let r = probe(&grpc(addr, service), &ctx).await;
        assert_eq!(r.status, Status::Passing, "{service:?}: {}", r.output);
        assert!(r.output.contains("SERVING"), "{}", r.output);
    }

    let r = probe(&grpc(addr, Some("no.such.Service")), &ctx).await;
    assert_eq!(r.status, Status::Critical, "{}", r.output);
    assert!(r.output.contains("NotFound"), "{}", r.output);

    let r = probe(&grpc(closed_port().await, None), &ctx).await;
    assert_eq!(r.status, Status::Critical, "{}", r.output);
    assert!(r.output.contains("connect"), "{}", r.output);
}

#[tokio::test]
async fn grpc_not_serving_turns_the_workload_critical() {
    let (reporter, addr) = grpc_server().await;
    let m = Monitor::new();
    let mut spec = grpc(addr, Some(HEALTH));
    spec.interval = ms(200);
    m.set_checks("default/api-1", vec![spec]);
    until_status(&m, "default/api-1", Status::Passing).await;

    reporter.set_not_serving::<HealthServer<HealthService>>().await;
    let checks = until_status(&m, "default/api-1", Status::Critical).await;
    assert!(checks[0].1.output.contains("NOT_SERVING"), "{checks:?}");

    reporter.set_serving::<HealthServer<HealthService>>().await;
    until_status(&m, "default/api-1", Status::Passing).await;
}
