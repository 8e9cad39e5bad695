//! Shared by the request authentication tests: the JWT peers (PyJWT, oidc-provider) installed by
//! `scripts/jwt-peers.sh` under target/, an app that echoes the headers it got, and a client →
//! server sidecar pair whose server has RequestAuthentication policies.
#![allow(dead_code)]

use crate::support::*;
use bytes::Bytes;
use http_body_util::Full;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use weft_api::request_authn::RequestAuthenticationSpec;
use weft_proxy::Proxy;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where `scripts/jwt-peers.sh` installs (in this crate's target tmpdir).
pub fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("jwt-peers")
}

/// Runs `scripts/jwt-peers.sh <dir> <what>`; `Err` with the script's reason when a needed tool
/// (node/npm, python3-venv) is missing; panics on any other failure.
pub fn install(what: &str) -> Result<PathBuf, String> {
    let dir = peers_dir();
    let out = Command::new(repo().join("scripts/jwt-peers.sh")).arg(&dir).arg(what).output().expect("run jwt-peers.sh");
    match out.status.code() {
        Some(0) => Ok(dir),
        Some(3) => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        _ => panic!(
            "scripts/jwt-peers.sh {what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// An HTTP/1 app answering every request with a JSON object of its headers (names lowercase;
/// a header sent twice is joined with `, `).
pub async fn header_echo() -> SocketAddr {
    use hyper::service::service_fn;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let mut m = serde_json::Map::new();
                    for (k, v) in req.headers() {
                        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                        let joined = match m.get(k.as_str()).and_then(|o| o.as_str()) {
                            Some(old) => format!("{old}, {v}"),
                            None => v,
                        };
                        m.insert(k.to_string(), joined.into());
                    }
                    let body = serde_json::Value::Object(m).to_string();
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

pub struct JwtPair {
    pub server: Proxy,
    /// Kept alive for the test.
    pub _client: Proxy,
    /// The client sidecar's listener for the server app.
    pub http: SocketAddr,
}

/// app (header echo) ← server sidecar with `specs` ← client sidecar.
pub async fn jwt_pair(specs: Vec<RequestAuthenticationSpec>) -> JwtPair {
    weft_testkit::init_tracing();
    let pki = weft_testkit::Pki::new();
    let app = header_echo().await;
    let app_tcp = weft_testkit::tcp_echo().await;
    let mut cfg = server_config(app.port(), app_tcp.port(), "");
    cfg.inbound.as_mut().unwrap().request_authentication = specs;
    let server = Proxy::start(cfg, pki.store(SERVER.0, SERVER.1)).await.expect("server sidecar");
    let inbound = server.addrs.inbound.unwrap();
    let client = start_client(pki.store(CLIENT.0, CLIENT.1), app, app_tcp, inbound, &api_id(), "").await;
    let http = client.addrs.upstreams[0];
    JwtPair { server, _client: client, http }
}

/// A request through the pair with `headers`; (status, WWW-Authenticate, the app's JSON).
pub async fn call(p: &JwtPair, path: &str, headers: &[(&str, &str)]) -> (u16, String, serde_json::Value) {
    let mut b = http::Request::get(path).header("host", "api");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = weft_testkit::http1_request(p.http, b.body(Full::new(Bytes::new())).unwrap()).await.unwrap();
    let www = resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let json = serde_json::from_slice(resp.body()).unwrap_or(serde_json::Value::Null);
    (resp.status().as_u16(), www, json)
}

/// The server sidecar's `/metrics`.
pub async fn metrics(p: &JwtPair) -> String {
    let resp = weft_testkit::http1_get(p.server.addrs.admin.unwrap(), "/metrics").await.unwrap();
    String::from_utf8_lossy(resp.body()).into_owned()
}
