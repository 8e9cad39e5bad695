//! Real gRPC (tonic, grpc.health.v1) through a client sidecar → server sidecar pair: unary calls,
//! a server-streaming call that stays open while the server pushes changes, and error statuses
//! carried in trailers-only responses.

mod support;

use support::*;
use tokio::net::TcpListener;
use tonic_health::pb::health_check_response::ServingStatus as Wire;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::ServingStatus;

#[tokio::test]
async fn grpc_unary_streaming_and_status_through_the_mesh() {
    weft_testkit::init_tracing();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("weft.Demo", ServingStatus::Serving).await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_app = l.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(l)),
    );
    let tcp_app = weft_testkit::tcp_echo().await;
    let pki = weft_testkit::Pki::new();
    let server = start_server(&pki, grpc_app, tcp_app, "").await;
    let client =
        start_client(pki.store(CLIENT.0, CLIENT.1), grpc_app, tcp_app, server.addrs.inbound.unwrap(), &api_id(), "")
            .await;

    let channel = tonic::transport::Channel::from_shared(format!("http://{}", client.addrs.upstreams[0]))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);

    // Unary.
    let resp = health.check(HealthCheckRequest { service: "weft.Demo".into() }).await.unwrap();
    assert_eq!(resp.into_inner().status, Wire::Serving as i32);

    // An error status (a trailers-only response) arrives intact.
    let err = health.check(HealthCheckRequest { service: "nope".into() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");

    // Server streaming: the stream stays open and carries each change as it happens.
    let mut watch = health.watch(HealthCheckRequest { service: "weft.Demo".into() }).await.unwrap().into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status, Wire::Serving as i32);
    reporter.set_service_status("weft.Demo", ServingStatus::NotServing).await;
    assert_eq!(watch.message().await.unwrap().unwrap().status, Wire::NotServing as i32);
    reporter.set_service_status("weft.Demo", ServingStatus::Serving).await;
    assert_eq!(watch.message().await.unwrap().unwrap().status, Wire::Serving as i32);

    let m = server.metrics_text();
    assert!(metric(&m, "weft_http_responses_total{direction=\"inbound\"") >= 2.0, "{m}");
}
