//! Builds client/server sidecar pairs (and gateways) on 127.0.0.1:0 for the integration tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use weft_api::proxy::ProxyConfig;
use weft_identity::CertStore;
use weft_proxy::Proxy;
use weft_testkit::Pki;

pub const CLIENT: (&str, &str) = ("default", "web");
pub const SERVER: (&str, &str) = ("default", "api");

pub struct Pair {
    pub pki: Pki,
    pub client: Proxy,
    pub server: Proxy,
    /// Client sidecar's upstream listener for the HTTP port (auto-detect).
    pub http: SocketAddr,
    /// Client sidecar's upstream listener for the TCP port (protocol: tcp).
    pub tcp: SocketAddr,
    pub app_http: SocketAddr,
    pub app_tcp: SocketAddr,
}

pub fn server_config(app_http: u16, app_tcp: u16, extra: &str) -> ProxyConfig {
    ProxyConfig::from_yaml(&format!(
        r#"
identity: {{ cert: unused, key: unused, bundle: unused }}
admin: {{ listen: "127.0.0.1:0" }}
inbound:
  listen: "127.0.0.1:0"
  ports: [{{ port: {app_http} }}, {{ port: {app_tcp}, protocol: tcp }}]
{extra}
"#
    ))
    .expect("server config")
}

/// A client sidecar config whose `api` endpoint's mTLS goes to `via` (the server sidecar, a tap or
/// a gateway), expecting `identity`.
pub fn client_config(app_http: SocketAddr, app_tcp: u16, via: SocketAddr, identity: &str, extra: &str) -> ProxyConfig {
    ProxyConfig::from_yaml(&format!(
        r#"
identity: {{ cert: unused, key: unused, bundle: unused }}
admin: {{ listen: "127.0.0.1:0" }}
outbound:
  upstreams:
    - {{ listen: "127.0.0.1:0", service: api, port: {http_port} }}
    - {{ listen: "127.0.0.1:0", service: api, port: {app_tcp}, protocol: tcp }}
services:
  - name: api
    endpoints:
      - {{ address: "{app_http}", proxy: "{via}", identity: "{identity}" }}
{extra}
"#,
        http_port = app_http.port()
    ))
    .expect("client config")
}

pub fn api_id() -> String {
    Pki::id(SERVER.0, SERVER.1).to_string()
}

pub fn web_id() -> String {
    Pki::id(CLIENT.0, CLIENT.1).to_string()
}

pub async fn start_server(pki: &Pki, app_http: SocketAddr, app_tcp: SocketAddr, extra: &str) -> Proxy {
    Proxy::start(server_config(app_http.port(), app_tcp.port(), extra), pki.store(SERVER.0, SERVER.1))
        .await
        .expect("server sidecar")
}

pub async fn start_client(
    store: CertStore,
    app_http: SocketAddr,
    app_tcp: SocketAddr,
    via: SocketAddr,
    identity: &str,
    extra: &str,
) -> Proxy {
    Proxy::start(client_config(app_http, app_tcp.port(), via, identity, extra), store).await.expect("client sidecar")
}

/// app ← server sidecar ← (optional tap) ← client sidecar, all on 127.0.0.1.
pub async fn pair_with(extra_client: &str, through: Option<fn(SocketAddr) -> SocketAddr>) -> Pair {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let app_http = weft_testkit::http_echo("api").await;
    let app_tcp = weft_testkit::tcp_echo().await;
    let server = start_server(&pki, app_http, app_tcp, "").await;
    let inbound = server.addrs.inbound.expect("inbound");
    let via = through.map(|f| f(inbound)).unwrap_or(inbound);
    let client = start_client(pki.store(CLIENT.0, CLIENT.1), app_http, app_tcp, via, &api_id(), extra_client).await;
    let (http, tcp) = (client.addrs.upstreams[0], client.addrs.upstreams[1]);
    Pair { pki, client, server, http, tcp, app_http, app_tcp }
}

pub async fn pair() -> Pair {
    pair_with("", None).await
}

/// Like [`pair`], with CONNECT tunnels allowed to the server app's HTTP port (`allow_connect`).
pub async fn pair_allowing_connect() -> Pair {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let app_http = weft_testkit::http_echo("api").await;
    let app_tcp = weft_testkit::tcp_echo().await;
    let mut cfg = server_config(app_http.port(), app_tcp.port(), "");
    cfg.inbound.as_mut().expect("inbound").ports[0].allow_connect = true;
    let server = Proxy::start(cfg, pki.store(SERVER.0, SERVER.1)).await.expect("server sidecar");
    let inbound = server.addrs.inbound.expect("inbound");
    let client = start_client(pki.store(CLIENT.0, CLIENT.1), app_http, app_tcp, inbound, &api_id(), "").await;
    let (http, tcp) = (client.addrs.upstreams[0], client.addrs.upstreams[1]);
    Pair { pki, client, server, http, tcp, app_http, app_tcp }
}

/// The value of one metric sample line, e.g. `weft_peer_connections_total`.
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}
