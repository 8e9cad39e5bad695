//! `grpc`: one `grpc.health.v1.Health/Check` call on a fresh connection; `SERVING` is passing,
//! any other answer or error critical.

use super::error_chain;
use crate::CheckResult;
use std::net::SocketAddr;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

pub(super) async fn probe(addr: SocketAddr, service: &str) -> CheckResult {
    let target = if service.is_empty() { format!("{addr}") } else { format!("{addr}/{service}") };
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{addr}")) {
        Ok(e) => e,
        Err(e) => return CheckResult::critical(format!("gRPC check {target}: {e}")),
    };
    let channel = match endpoint.connect().await {
        Ok(c) => c,
        Err(e) => return CheckResult::critical(format!("gRPC check {target}: connect failed: {}", error_chain(&e))),
    };
    let request = HealthCheckRequest { service: service.to_string() };
    match HealthClient::new(channel).check(request).await {
        Ok(resp) => {
            let status = resp.into_inner().status;
            let name = ServingStatus::try_from(status)
                .map_or_else(|_| format!("unknown status {status}"), |s| s.as_str_name().into());
            if status == ServingStatus::Serving as i32 {
                CheckResult::passing(format!("gRPC check {target}: {name}"))
            } else {
                CheckResult::critical(format!("gRPC check {target}: {name}"))
            }
        }
        Err(status) => CheckResult::critical(format!("gRPC check {target}: {:?}: {}", status.code(), status.message())),
    }
}
