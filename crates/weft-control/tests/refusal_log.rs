//! A proxy whose discovery stream is refused after its Hello retries again and again: the
//! control plane writes one "proxy refused" line per source per interval, and the count of the
//! lines left out reaches the log (on the next line, or from the control plane's flush).
//!
//! This file is its own test binary: it installs a global subscriber that captures every line.

use std::io::Write;
use std::sync::{Arc, Mutex};
use weft_api::kinds::MeshConfigSpec;
use weft_control::{ControlConfig, ControlPlane};
use weft_testkit::eventually;

mod common;
use common::tempdir;

/// The lines written so far.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines_with(&self, needle: &str) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        text.lines().filter(|l| l.contains(needle)).map(str::to_string).collect()
    }
}

/// Opens a discovery stream as `token`'s proxy with a Hello naming `cluster`, and returns the
/// status it is refused with (`None`: accepted).
async fn hello_refused(cp: &ControlPlane, token: &str, cluster: &str) -> Option<tonic::Status> {
    use futures_util::StreamExt;
    let hello = weft_api::pb::Hello { proxy_id: "probe".into(), cluster: cluster.into(), ..Default::default() };
    let control = weft_api::proxy::Control::new(cp.grpc_addr, token.to_string());
    let channel = weft_proxy::control::connect(&control, 0).await.unwrap();
    let mut client = weft_api::pb::discovery_client::DiscoveryClient::new(channel);
    let msg = weft_api::pb::ProxyMessage { kind: Some(weft_api::pb::proxy_message::Kind::Hello(hello)) };
    let mut req = tonic::Request::new(futures_util::stream::iter(vec![msg]).chain(futures_util::stream::pending()));
    req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    match client.stream(req).await {
        Ok(mut s) => s.get_mut().message().await.err(),
        Err(e) => Some(e),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_proxy_is_logged_once_per_interval_with_the_count_left_out() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter("weft_control=info,weft_api=info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let mut cfg = ControlConfig::new(tempdir("refusal-log"));
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    let mut mesh = MeshConfigSpec { trust_domain: "refusal.example".into(), ..Default::default() };
    mesh.cluster.name = "here".into();
    cfg.mesh = mesh;
    let cp = ControlPlane::start(cfg).await.expect("control plane");
    let token = common::bootstrap_token(&cp, "default/probe").await;

    // A proxy configured for a cluster the MeshConfig does not declare, retrying five times.
    const TRIES: usize = 5;
    for _ in 0..TRIES {
        let e = hello_refused(&cp, &token, "elsewhere").await.expect("refused");
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    }
    let refused = captured.lines_with("proxy refused");
    assert_eq!(refused.len(), 1, "one line for five refusals within the interval: {refused:#?}");
    let line = &refused[0];
    assert!(line.contains("kind=\"proxy-refused\"") || line.contains("kind=proxy-refused"), "{line}");
    assert!(line.contains("suppressed=0") && line.contains("elsewhere"), "{line}");

    // The four left out are reported once the interval has passed, by the control plane's flush
    // (no refusal follows that would carry them).
    let wait = weft_control::loglimit::DEFAULT_EVERY * 3;
    let flushed = eventually("the flush line with the count left out", wait, || {
        let lines = captured.lines_with("more proxy-refused lines from 127.0.0.1");
        async move { lines.into_iter().next() }
    })
    .await;
    assert!(flushed.contains(&format!("suppressed={}", TRIES - 1)), "{flushed}");
    assert_eq!(captured.lines_with("proxy refused").len(), 1, "no refusal line was added");
    cp.shutdown().await;
}
