//! Shared by the integration tests: check specs and small in-process backends.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use weft_api::kinds::CheckSpec;
use weft_health::{CheckResult, Monitor, Status};

/// How long any condition may take to come true (generous: the machine is shared).
pub const DEADLINE: Duration = Duration::from_secs(15);

/// A check with only its name and default thresholds; set one probe on it.
pub fn check(name: &str) -> CheckSpec {
    CheckSpec { name: name.into(), success_threshold: 1, failure_threshold: 1, ..CheckSpec::default() }
}

pub fn ms(n: u64) -> Option<weft_api::Duration> {
    Some(weft_api::Duration::from_millis(n))
}

/// An address nothing listens on (bound, then closed).
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// An HTTP/1.1 server answering every request with the status in `code`, changeable at any time.
pub async fn status_server(code: Arc<AtomicU16>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = l.accept().await else {
                continue;
            };
            let code = code.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let status = code.load(Ordering::SeqCst);
                    async move {
                        let mut resp = http::Response::new(Full::new(Bytes::from(format!("answering {status}\n"))));
                        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    addr
}

/// Waits until `workload` shows `status`; returns its checks then.
pub async fn until_status(m: &Monitor, workload: &str, status: Status) -> Vec<(String, CheckResult)> {
    weft_testkit::eventually(&format!("{workload} to be {status}"), DEADLINE, || async {
        (m.workload_status(workload) == Some(status)).then(|| m.checks(workload))
    })
    .await
}
