//! Peer authentication on real connections: plaintext against a STRICT port is refused (counted
//! and logged), accepted under PERMISSIVE beside mTLS and under DISABLE, and never carries an
//! identity; a port's own mode beats the sidecar's.

mod support;

use std::net::SocketAddr;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_api::proxy::ProxyConfig;
use weft_proxy::Proxy;
use weft_testkit::Pki;

const FORGED: &str = "spiffe://cluster.local/ns/default/sa/forged";

/// A server sidecar with one app port (so plaintext, which names no port, is for that one).
async fn server(pki: &Pki, app: SocketAddr, inbound_mtls: &str, port_extra: &str) -> Proxy {
    let cfg = ProxyConfig::from_yaml(&format!(
        r#"
identity: {{ cert: unused, key: unused, bundle: unused }}
admin: {{ listen: "127.0.0.1:0" }}
inbound:
  listen: "127.0.0.1:0"
  {inbound_mtls}
  ports: [{{ port: {port} {port_extra} }}]
"#,
        port = app.port()
    ))
    .expect("server config");
    Proxy::start(cfg, pki.store(SERVER.0, SERVER.1)).await.expect("server sidecar")
}

/// Writes `req` as plaintext to `addr`; everything that comes back until close (empty: refused).
async fn plaintext(addr: SocketAddr, req: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(req).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn who() -> Vec<u8> {
    format!("GET /who HTTP/1.1\r\nHost: api\r\nx-weft-peer-identity: {FORGED}\r\nConnection: close\r\n\r\n")
        .into_bytes()
}

fn body_json(resp: &str) -> serde_json::Value {
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not a JSON answer ({e}): {resp}"))
}

fn plaintext_refusals(p: &Proxy) -> f64 {
    metric(&p.metrics_text(), "weft_protocol_errors_total{direction=\"inbound\",reason=\"plaintext\"}")
}

#[tokio::test]
async fn strict_refuses_plaintext_and_counts_it() {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let app = weft_testkit::http_echo("api").await;
    let s = server(&pki, app, "", "").await;
    let resp = plaintext(s.addrs.inbound.unwrap(), &who()).await;
    assert!(resp.is_empty(), "STRICT answered plaintext: {resp}");
    assert_eq!(plaintext_refusals(&s), 1.0, "{}", s.metrics_text());
}

#[tokio::test]
async fn permissive_serves_plaintext_beside_mtls_without_an_identity() {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let app = weft_testkit::http_echo("api").await;
    let s = server(&pki, app, "mtls: PERMISSIVE", "").await;
    let inbound = s.addrs.inbound.unwrap();
    // A caller outside the mesh: served, and a forged identity header never reaches the app.
    let resp = plaintext(inbound, &who()).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(!resp.contains(FORGED), "the forged identity reached the app: {resp}");
    assert!(body_json(&resp)["peer_identity"].is_null(), "{resp}");
    // Opaque TCP that is not HTTP goes through too (the http echo answers 400 to garbage).
    let resp = plaintext(inbound, b"\x00\x01hello\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    // A mesh caller, over mTLS, on the same port: served with its verified identity.
    let tcp = weft_testkit::tcp_echo().await;
    let client = start_client(pki.store(CLIENT.0, CLIENT.1), app, tcp, inbound, &api_id(), "").await;
    let resp = weft_testkit::http1_get(client.addrs.upstreams[0], "/who").await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
    assert_eq!(v["peer_identity"], web_id(), "{v}");
    assert_eq!(plaintext_refusals(&s), 0.0);
    let m = s.metrics_text();
    assert!(m.contains("src=\"unauthenticated\""), "plaintext is counted as unauthenticated: {m}");
}

#[tokio::test]
async fn a_ports_own_mode_beats_the_sidecars() {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let app = weft_testkit::http_echo("api").await;
    let strict_port = server(&pki, app, "mtls: PERMISSIVE", ", mtls: STRICT").await;
    let resp = plaintext(strict_port.addrs.inbound.unwrap(), &who()).await;
    assert!(resp.is_empty(), "the port is STRICT: {resp}");
    assert_eq!(plaintext_refusals(&strict_port), 1.0);
    let disabled_port = server(&pki, app, "", ", mtls: DISABLE").await;
    let resp = plaintext(disabled_port.addrs.inbound.unwrap(), &who()).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "the port is DISABLE: {resp}");
}

#[tokio::test]
async fn disable_serves_plaintext_http2_and_tcp() {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let tcp = weft_testkit::tcp_echo().await;
    let s = server(&pki, tcp, "mtls: DISABLE", ", protocol: tcp").await;
    let mut c = TcpStream::connect(s.addrs.inbound.unwrap()).await.unwrap();
    c.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(10), c.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"hello");
    // HTTP/2 with prior knowledge, to an HTTP app.
    let app = weft_testkit::http_echo("api").await;
    let s = server(&pki, app, "mtls: DISABLE", "").await;
    let mut h2 = weft_testkit::http2_client(s.addrs.inbound.unwrap()).await.unwrap();
    let req = http::Request::get("http://api/who")
        .header("x-weft-peer-identity", FORGED)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(v["peer_identity"].is_null(), "{v}");
}

/// A client sidecar whose endpoints are marked `plaintext` (their workloads have mTLS DISABLE):
/// it sends HTTP and opaque TCP in the clear to the endpoint's address (seen on the wire by a
/// tap), where the DISABLE server sidecar admits them; the app sees no identity.
#[tokio::test]
async fn callers_send_plaintext_to_disable_endpoints() {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let app = weft_testkit::http_echo("api").await;
    let http_server = server(&pki, app, "mtls: DISABLE", "").await;
    let http_tap = weft_testkit::Tap::start(http_server.addrs.inbound.unwrap()).await;
    let echo = weft_testkit::tcp_echo().await;
    let tcp_server = server(&pki, echo, "mtls: DISABLE", ", protocol: tcp").await;
    let tcp_tap = weft_testkit::Tap::start(tcp_server.addrs.inbound.unwrap()).await;
    let cfg = ProxyConfig::from_yaml(&format!(
        r#"
identity: {{ cert: unused, key: unused, bundle: unused }}
admin: {{ listen: "127.0.0.1:0" }}
outbound:
  upstreams:
    - {{ listen: "127.0.0.1:0", service: api, port: {hp} }}
    - {{ listen: "127.0.0.1:0", service: echo, port: {tp}, protocol: tcp }}
services:
  - name: api
    endpoints: [{{ address: "{ha}", identity: "{id}", plaintext: true }}]
  - name: echo
    endpoints: [{{ address: "{ta}", identity: "{id}", plaintext: true }}]
"#,
        hp = http_tap.addr.port(),
        tp = tcp_tap.addr.port(),
        ha = http_tap.addr,
        ta = tcp_tap.addr,
        id = api_id(),
    ))
    .expect("client config");
    let client = Proxy::start(cfg, pki.store(CLIENT.0, CLIENT.1)).await.expect("client sidecar");
    let resp = weft_testkit::http1_get(client.addrs.upstreams[0], "/who").await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
    assert!(v["peer_identity"].is_null(), "plaintext carries no identity: {v}");
    assert!(http_tap.saw(b"GET /who HTTP/1.1"), "the request went in the clear");
    let mut c = TcpStream::connect(client.addrs.upstreams[1]).await.unwrap();
    c.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(10), c.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"hello");
    assert!(tcp_tap.saw(b"hello"), "the bytes went in the clear");
}

/// A STRICT refusal is logged with the source address of the refused connection: a real
/// `weft-proxy` process, its stderr read after it stops.
#[tokio::test]
async fn strict_refusal_logs_the_source_address() {
    use std::io::{BufRead, Read};
    let pki = Pki::new();
    let app = weft_testkit::http_echo("api").await;
    let dir = std::env::temp_dir().join(format!("weft-strict-log-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (c, k, b) = pki.write_files(&dir, SERVER.0, SERVER.1);
    let yaml = format!(
        "identity: {{ cert: {c}, key: {k}, bundle: {b} }}\nadmin: {{ listen: \"127.0.0.1:0\" }}\ninbound:\n  listen: \"127.0.0.1:0\"\n  ports: [{{ port: {} }}]\n",
        app.port()
    );
    std::fs::write(dir.join("sidecar.yaml"), yaml).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weft-proxy"))
        .args(["run", "--config"])
        .arg(dir.join("sidecar.yaml"))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Stops the child if an assertion fails before the clean stop below.
    struct KillOnDrop(u32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill").args(["-KILL", &self.0.to_string()]).status();
        }
    }
    let stop = KillOnDrop(child.id());
    let (mut admin, mut inbound) = (None, None);
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(a) = line.strip_prefix("admin ") {
            admin = Some(a.parse::<SocketAddr>().unwrap());
        }
        if let Some(a) = line.strip_prefix("inbound ") {
            inbound = Some(a.parse::<SocketAddr>().unwrap());
        }
        if line == "ready" {
            break;
        }
    }
    let (admin, inbound) = (admin.expect("admin address printed"), inbound.expect("inbound address printed"));
    // Plaintext from a socket whose address we know.
    let mut s = TcpStream::connect(inbound).await.unwrap();
    let source = s.local_addr().unwrap();
    s.write_all(&who()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert!(out.is_empty(), "STRICT answered plaintext: {}", String::from_utf8_lossy(&out));
    // Counted (so the refusal, and its log line, happened) before the process stops.
    weft_testkit::eventually("the refusal counted", Duration::from_secs(20), || async move {
        let m = weft_testkit::http1_get(admin, "/metrics").await.ok()?;
        let m = String::from_utf8_lossy(m.body()).into_owned();
        (metric(&m, "weft_protocol_errors_total{direction=\"inbound\",reason=\"plaintext\"}") == 1.0).then_some(())
    })
    .await;
    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    child.wait().unwrap();
    std::mem::forget(stop);
    let refused: Vec<&str> = log.lines().filter(|l| l.contains("plaintext refused")).collect();
    assert_eq!(refused.len(), 1, "{log}");
    assert!(refused[0].contains("WARN"), "{}", refused[0]);
    assert!(refused[0].contains(&format!("remote={source}")), "the line names the source {source}: {}", refused[0]);
    assert!(refused[0].contains("STRICT"), "{}", refused[0]);
    let _ = std::fs::remove_dir_all(&dir);
}
