//! Helpers shared by the control plane's integration tests: a scratch directory, the HTTP API,
//! bootstrap tokens, sidecars following a control plane, and a minimal DNS A query.
#![allow(dead_code)] // each test binary uses its own part

use bytes::Bytes;
use http_body_util::Full;
use std::net::SocketAddr;
use std::time::Duration;
use weft_api::proxy::ProxyConfig;
use weft_control::ControlPlane;
use weft_proxy::Proxy;
use weft_testkit::api_request;

pub fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("weft-cp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Calls the control plane's HTTP API (over TLS, trusting its root; plaintext only when the
/// control plane runs with `--api-plaintext`).
pub async fn api(cp: &ControlPlane, method: &str, path: &str, token: &str, body: &str) -> (u16, serde_json::Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "cp")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = api_request(cp.api_addr, cp.api_client_tls(), req).await.unwrap();
    let v = serde_json::from_slice(resp.body()).unwrap_or(serde_json::Value::Null);
    (resp.status().as_u16(), v)
}

pub async fn bootstrap_token(cp: &ControlPlane, identity: &str) -> String {
    let (status, v) =
        api(cp, "POST", "/v1/tokens", &cp.admin_token, &format!(r#"{{"kind":"bootstrap","identity":"{identity}"}}"#))
            .await;
    assert_eq!(status, 200, "{v}");
    v["token"].as_str().unwrap().to_string()
}

/// A sidecar following `cp`; `workload` names the Workload it fronts (its inbound ports then come
/// from the control plane).
pub async fn sidecar(cp: &ControlPlane, identity: &str, workload: Option<&str>, extra: &str) -> Proxy {
    let token = bootstrap_token(cp, identity).await;
    proxy_following(cp.grpc_addr, &token, identity, workload, extra).await
}

/// A proxy following the control plane at `address` (its gRPC listener, or a gateway in front of
/// it) with bootstrap `token` of `identity`.
pub async fn proxy_following(
    address: SocketAddr,
    token: &str,
    identity: &str,
    workload: Option<&str>,
    extra: &str,
) -> Proxy {
    let workload = workload.map(|w| format!(", workload: {w}")).unwrap_or_default();
    let cfg = ProxyConfig::from_yaml(&format!(
        "control: {{ address: \"{address}\", token: \"{token}\", proxy_id: \"{}\"{workload} }}\nadmin: {{ listen: \"127.0.0.1:0\" }}\n{extra}",
        identity.replace('/', "-")
    ))
    .unwrap();
    let control = cfg.control.clone().unwrap();
    let store = weft_proxy::control::bootstrap(&control, 0).await.expect("certificate from the control plane");
    let mut p = Proxy::start(cfg, store).await.unwrap();
    p.follow_control_plane(control);
    p
}

/// A minimal DNS A query over UDP, answered addresses as strings.
pub async fn query_a(dns: SocketAddr, name: &str) -> Vec<String> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&q, dns).await.unwrap();
    let mut buf = [0u8; 1500];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf)).await.unwrap().unwrap();
    let resp = &buf[..n];
    // Skip the header and the echoed question, then read the A records.
    let ancount = u16::from_be_bytes([resp[6], resp[7]]) as usize;
    let mut i = q.len();
    let mut out = vec![];
    for _ in 0..ancount {
        // The owner name: labels ending in a zero byte, or a 2-byte compression pointer.
        while resp[i] != 0 && resp[i] & 0xc0 != 0xc0 {
            i += 1 + resp[i] as usize;
        }
        i += if resp[i] == 0 { 1 } else { 2 };
        let (ty, len) =
            (u16::from_be_bytes([resp[i], resp[i + 1]]), u16::from_be_bytes([resp[i + 8], resp[i + 9]]) as usize);
        i += 10;
        if ty == 1 && len == 4 {
            out.push(format!("{}.{}.{}.{}", resp[i], resp[i + 1], resp[i + 2], resp[i + 3]));
        }
        i += len;
    }
    out
}

/// [`api`] with the control plane's admin token.
pub async fn admin_api(cp: &ControlPlane, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    api(cp, method, path, &cp.admin_token, body).await
}

/// The sum of the samples of `name` whose labels contain every one of `labels`.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Connections gateway `gw` forwarded to `dst` (`service.namespace`, or `control.weft-system`).
pub fn forwarded(gw: &Proxy, dst: &str) -> f64 {
    metric(&gw.metrics_text(), "weft_tcp_open_total", &["direction=\"gateway\"", &format!("dst=\"{dst}\"")])
}

/// A connection to the HTTP API: TLS, or plaintext.
pub trait ApiIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> ApiIo for T {}

/// A streaming answer of the HTTP API (`GET /v1/tap`, NDJSON): its status and its lines as they
/// come. Dropping it closes the connection (the client going away).
pub struct ApiStream {
    pub status: u16,
    body: hyper::body::Incoming,
    buf: Vec<u8>,
}

impl ApiStream {
    /// The next line, or `None` when the answer ended.
    pub async fn next_line(&mut self) -> Option<String> {
        use http_body_util::BodyExt;
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(String::from_utf8_lossy(&line[..i]).into_owned());
            }
            match self.body.frame().await? {
                Ok(f) => self.buf.extend_from_slice(f.data_ref().map(|d| &d[..]).unwrap_or_default()),
                Err(_) => return None,
            }
        }
    }
}

/// Calls `GET path` on the HTTP API (over TLS as [`api`] does) and returns as soon as the
/// answer's head arrives.
pub async fn api_stream(cp: &ControlPlane, path: &str, token: &str) -> ApiStream {
    let tcp = tokio::net::TcpStream::connect(cp.api_addr).await.unwrap();
    let io: Box<dyn ApiIo> = match cp.api_client_tls() {
        Some(tls) => {
            let name = rustls::pki_types::ServerName::try_from(cp.api_addr.ip().to_string()).unwrap();
            Box::new(tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.unwrap())
        }
        None => Box::new(tcp),
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "cp")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    ApiStream { status: resp.status().as_u16(), body: resp.into_body(), buf: vec![] }
}
