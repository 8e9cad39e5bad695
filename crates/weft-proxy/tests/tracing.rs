//! Tracing against a real OTLP receiver: a Python process (`weft_testkit::otlp`) serving
//! OpenTelemetry's `TraceService/Export` with grpcio and the `opentelemetry-proto` package's own
//! generated code, so what weft sends is read by OpenTelemetry's definition of OTLP, not weft's.
//! A request goes client sidecar → server sidecar → app on 127.0.0.1; both proxies export to the
//! receiver.
//!
//! grpcio and opentelemetry-proto are installed into a venv under `target/` on first run; the
//! test skips, saying so, only when PyPI cannot be reached.

mod support;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use support::*;

/// The receiver, with the spans it got as JSON.
struct Receiver(weft_testkit::otlp::Receiver);

impl Receiver {
    fn port(&self) -> u16 {
        self.0.port
    }

    fn spans(&self) -> Vec<Value> {
        self.0.spans().iter().map(|s| serde_json::from_str(s).expect("a span line is JSON")).collect()
    }

    /// The spans of `trace_id` once there are `n` of them.
    async fn trace(&self, trace_id: &str, n: usize) -> Vec<Value> {
        weft_testkit::eventually(&format!("{n} spans of trace {trace_id}"), Duration::from_secs(30), || async {
            let spans: Vec<Value> = self.spans().into_iter().filter(|s| s["trace_id"] == trace_id).collect();
            (spans.len() >= n).then_some(spans)
        })
        .await
    }
}

/// Starts the receiver; `None` (the test skips) when PyPI cannot be reached.
fn receiver() -> Option<Receiver> {
    weft_testkit::otlp::Receiver::start(Path::new(env!("CARGO_TARGET_TMPDIR"))).map(Receiver)
}

fn tracing_yaml(port: u16, sampling: &str) -> String {
    format!("tracing:\n  sampling: {sampling}\n  otlp: {{ endpoint: \"http://127.0.0.1:{port}\", timeout: 5s }}\n")
}

async fn get(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> Value {
    let mut req = http::Request::get(path).header("host", "api");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = weft_testkit::http1_request(addr, req.body(Full::new(Bytes::new())).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);
    serde_json::from_slice(resp.body()).unwrap()
}

fn one(spans: &[Value], kind: i64) -> &Value {
    let of: Vec<&Value> = spans.iter().filter(|s| s["kind"] == kind).collect();
    assert_eq!(of.len(), 1, "one span of kind {kind}: {spans:#?}");
    of[0]
}

const SERVER_KIND: i64 = 2;
const CLIENT_KIND: i64 = 3;

/// The parent id in a `traceparent` value.
fn parent_of(traceparent: &Value) -> String {
    let v = traceparent.as_str().unwrap_or_else(|| panic!("no traceparent: {traceparent}"));
    v.split('-').nth(2).unwrap().to_string()
}

#[tokio::test]
async fn one_request_through_two_proxies_is_one_trace_at_the_otlp_receiver() {
    let Some(rx) = receiver() else { return };
    weft_testkit::init_tracing();
    let pki = weft_testkit::Pki::new();
    let app_http = weft_testkit::http_echo("api").await;
    let app_tcp = weft_testkit::tcp_echo().await;
    let yaml = tracing_yaml(rx.port(), "100");
    let server = start_server(&pki, app_http, app_tcp, &yaml).await;
    let inbound = server.addrs.inbound.unwrap();
    let client = start_client(pki.store(CLIENT.0, CLIENT.1), app_http, app_tcp, inbound, &api_id(), &yaml).await;
    let http = client.addrs.upstreams[0];

    // A request with no trace: the client sidecar starts one (100 %).
    let seen = get(http, "/items?x=1", &[]).await;
    let trace_id = seen["traceparent"].as_str().expect("the app got a traceparent")[3..35].to_string();
    let spans = rx.trace(&trace_id, 2).await;
    let (c, s) = (one(&spans, CLIENT_KIND), one(&spans, SERVER_KIND));
    assert_eq!(c["parent_span_id"], "", "the client span is the root");
    assert_eq!(s["parent_span_id"], c["span_id"], "the server span is the client span's child");
    assert_eq!(parent_of(&seen["traceparent"]), s["span_id"].as_str().unwrap(), "the app's parent is the server span");
    assert_eq!(seen["x_b3_spanid"], s["span_id"], "B3 carried the same parent");
    for span in [c, s] {
        let a = &span["attributes"];
        assert_eq!(a["http.request.method"], "GET");
        assert_eq!(a["url.path"], "/items");
        assert_eq!(a["http.response.status_code"], 200);
        assert_eq!(a["weft.cluster"], "local");
        assert_eq!(span["name"], "GET /items");
        assert_eq!(span["scope"], "weft-proxy");
        assert!(span["end"].as_u64() >= span["start"].as_u64());
    }
    assert_eq!(c["attributes"]["weft.peer.identity"], api_id().as_str(), "the client span names the callee");
    assert_eq!(c["attributes"]["weft.upstream.address"], app_http.to_string().as_str(), "and the endpoint");
    assert_eq!(s["attributes"]["weft.peer.identity"], web_id().as_str(), "the server span names the verified caller");
    assert_eq!(s["attributes"]["weft.upstream.address"], app_http.to_string().as_str());
    assert_eq!(c["resource"]["weft.identity"], web_id().as_str());
    assert_eq!(s["resource"]["weft.identity"], api_id().as_str());
    assert_eq!(s["resource"]["service.name"], "api");

    // The caller's own trace (W3C and single B3), sampled: continued, its span the client span's
    // parent, both formats rewritten.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let tp = format!("00-{caller_trace}-00f067aa0ba902b7-01");
    let b3 = format!("{caller_trace}-00f067aa0ba902b7-1");
    let seen = get(http, "/caller", &[("traceparent", &tp), ("b3", &b3), ("tracestate", "k=v")]).await;
    let spans = rx.trace(caller_trace, 2).await;
    let (c, s) = (one(&spans, CLIENT_KIND), one(&spans, SERVER_KIND));
    assert_eq!(c["parent_span_id"], "00f067aa0ba902b7");
    assert_eq!(s["parent_span_id"], c["span_id"]);
    assert_eq!(parent_of(&seen["traceparent"]), s["span_id"].as_str().unwrap());
    let b3_seen = seen["b3"].as_str().expect("b3 forwarded");
    assert!(b3_seen.starts_with(&format!("{caller_trace}-{}-1", s["span_id"].as_str().unwrap())), "{b3_seen}");

    // The caller decided not to sample: no span. (Spans leave each proxy in order, so once the
    // next sampled request's spans are in, none of this one's is still on its way.)
    let unsampled = "11111111111111111111111111111111";
    let seen = get(http, "/unsampled", &[("traceparent", &format!("00-{unsampled}-00f067aa0ba902b7-00"))]).await;
    assert_eq!(seen["traceparent"], format!("00-{unsampled}-00f067aa0ba902b7-00").as_str(), "passed on untouched");
    let seen = get(http, "/after", &[]).await;
    rx.trace(&seen["traceparent"].as_str().unwrap()[3..35], 2).await;
    assert!(rx.spans().iter().all(|s| s["trace_id"] != unsampled), "no span for an unsampled trace");

    weft_testkit::eventually("exported spans counted", Duration::from_secs(30), || async {
        client.metrics_text().contains("weft_trace_spans_total{outcome=\"exported\"}").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_collector_that_is_down_costs_no_request() {
    weft_testkit::init_tracing();
    // Nothing listens on this port: every export fails; requests are served all the same.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let pki = weft_testkit::Pki::new();
    let app_http = weft_testkit::http_echo("api").await;
    let app_tcp = weft_testkit::tcp_echo().await;
    let yaml = tracing_yaml(closed, "100");
    let server = start_server(&pki, app_http, app_tcp, &yaml).await;
    let inbound = server.addrs.inbound.unwrap();
    let client = start_client(pki.store(CLIENT.0, CLIENT.1), app_http, app_tcp, inbound, &api_id(), &yaml).await;
    for i in 0..20 {
        get(client.addrs.upstreams[0], &format!("/{i}"), &[]).await;
    }
    weft_testkit::eventually("failed exports counted", Duration::from_secs(30), || async {
        client.metrics_text().contains("weft_trace_spans_total{outcome=\"failed\"}").then_some(())
    })
    .await;
}

/// Through an east-west gateway (SNI passthrough, no TLS termination): the caller's trace id
/// reaches the server sidecar, whose span is the client span's child.
#[tokio::test]
async fn a_trace_id_survives_the_gateway_hop() {
    let Some(rx) = receiver() else { return };
    weft_testkit::init_tracing();
    let pki = weft_testkit::Pki::new();
    let app_http = weft_testkit::http_echo("api").await;
    let app_tcp = weft_testkit::tcp_echo().await;
    let yaml = tracing_yaml(rx.port(), "0");
    let server = start_server(&pki, app_http, app_tcp, &yaml).await;
    let gw_cfg = weft_api::proxy::ProxyConfig::from_yaml(&format!(
        r#"
mode: gateway
identity: {{ cert: u, key: u, bundle: u }}
admin: {{ listen: "127.0.0.1:0" }}
gateway: {{ listen: "127.0.0.1:0" }}
services:
  - name: api
    endpoints: [{{ address: "{app_http}", proxy: "{inbound}", identity: "{id}" }}]
"#,
        inbound = server.addrs.inbound.unwrap(),
        id = api_id()
    ))
    .unwrap();
    let gw = weft_proxy::Proxy::start(gw_cfg, pki.store("istio-system", "gateway")).await.unwrap();
    let via = gw.addrs.gateway.unwrap();
    let client = start_client(pki.store(CLIENT.0, CLIENT.1), app_http, app_tcp, via, &api_id(), &yaml).await;

    // Sampling 0 %: only the caller's sampled trace is recorded.
    let caller_trace = "0af7651916cd43dd8448eb211c80319c";
    let tp = format!("00-{caller_trace}-b7ad6b7169203331-01");
    let seen = get(client.addrs.upstreams[0], "/via-gw", &[("traceparent", &tp)]).await;
    let spans = rx.trace(caller_trace, 2).await;
    let (c, s) = (one(&spans, CLIENT_KIND), one(&spans, SERVER_KIND));
    assert_eq!(c["parent_span_id"], "b7ad6b7169203331");
    assert_eq!(s["parent_span_id"], c["span_id"], "the server span is the client span's child across the gateway");
    assert_eq!(parent_of(&seen["traceparent"]), s["span_id"].as_str().unwrap());
    assert_eq!(c["attributes"]["weft.peer.identity"], api_id().as_str());
    assert_eq!(s["attributes"]["weft.peer.identity"], web_id().as_str(), "the caller's identity crossed it too");
}

/// A WebSocket upgrade through both proxies gets a client and a server span of the caller's
/// trace, as a request does; each covers the upgrade's request and its `101` (Envoy's rule), and
/// ends then, while the tunnel stays open.
#[tokio::test]
async fn a_websocket_upgrade_gets_client_and_server_spans() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(rx) = receiver() else { return };
    weft_testkit::init_tracing();
    let pki = weft_testkit::Pki::new();
    let app_http = weft_testkit::http_echo("api").await;
    let app_tcp = weft_testkit::tcp_echo().await;
    let yaml = tracing_yaml(rx.port(), "100");
    let server = start_server(&pki, app_http, app_tcp, &yaml).await;
    let inbound = server.addrs.inbound.unwrap();
    let client = start_client(pki.store(CLIENT.0, CLIENT.1), app_http, app_tcp, inbound, &api_id(), &yaml).await;

    let trace = "5bf92f3577b34da6a3ce929d0e0e4737";
    let mut s = tokio::net::TcpStream::connect(client.addrs.upstreams[0]).await.unwrap();
    let head = format!(
        "GET /ws HTTP/1.1\r\nHost: api\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\ntraceparent: 00-{trace}-00f067aa0ba902b7-01\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    while !got.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).await.unwrap(), 1, "the head ends before EOF: {got:?}");
        got.push(b[0]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 101"), "{}", String::from_utf8_lossy(&got));

    // Both spans arrive while the tunnel is still open, and it still carries bytes.
    let spans = rx.trace(trace, 2).await;
    let (c, sv) = (one(&spans, CLIENT_KIND), one(&spans, SERVER_KIND));
    assert_eq!(c["parent_span_id"], "00f067aa0ba902b7", "the caller's span is the client span's parent");
    assert_eq!(sv["parent_span_id"], c["span_id"], "the server span is the client span's child");
    for span in [c, sv] {
        let a = &span["attributes"];
        assert_eq!(a["http.request.method"], "GET");
        assert_eq!(a["url.path"], "/ws");
        assert_eq!(a["http.response.status_code"], 101);
    }
    assert_eq!(c["attributes"]["weft.peer.identity"], api_id().as_str(), "the client span names the callee");
    assert_eq!(sv["attributes"]["weft.peer.identity"], web_id().as_str(), "the server span the caller");
    s.write_all(b"frame").await.unwrap();
    let mut back = [0u8; 5];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"frame");
}
