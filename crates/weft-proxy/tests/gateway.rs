//! East-west gateway: a client sidecar reaches a server sidecar through a gateway that routes by
//! SNI and never terminates TLS.

mod support;

use bytes::Bytes;
use http_body_util::Full;
use std::net::SocketAddr;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_api::proxy::ProxyConfig;
use weft_proxy::Proxy;
use weft_testkit::{http1_request, Pki, Tap};

/// A gateway config routing `api` (the HTTP port of its endpoint `app`, and the TCP port
/// `tcp_port` declared in `ports`) to `server_inbound`.
fn gateway_yaml(server_inbound: SocketAddr, app: SocketAddr, tcp_port: u16) -> String {
    format!(
        r#"
mode: gateway
identity: {{ cert: u, key: u, bundle: u }}
admin: {{ listen: "127.0.0.1:0" }}
gateway: {{ listen: "127.0.0.1:0" }}
services:
  - name: api
    ports: [{{ port: {tcp_port}, protocol: tcp }}]
    endpoints: [{{ address: "{app}", proxy: "{server_inbound}", identity: "{id}" }}]
  - name: empty
    endpoints: []
"#,
        id = api_id()
    )
}

async fn gateway(pki: &Pki, server_inbound: SocketAddr, app: SocketAddr, tcp_port: u16) -> Proxy {
    let cfg = ProxyConfig::from_yaml(&gateway_yaml(server_inbound, app, tcp_port)).unwrap();
    Proxy::start(cfg, pki.store("istio-system", "gateway")).await.unwrap()
}

/// Sends a real ClientHello for `sni` to `gw`; the handshake's result.
async fn hello(pki: &Pki, gw: SocketAddr, sni: &str) -> std::io::Result<()> {
    let store = pki.store("default", "web");
    let cfg = weft_identity::tls::client_config(&store, &[b"h2"]).unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    let name = rustls_pki_types::ServerName::try_from(sni.to_string()).unwrap();
    connector.connect(name, TcpStream::connect(gw).await?).await.map(|_| ())
}

#[tokio::test]
async fn client_reaches_server_through_gateway_without_it_seeing_plaintext() {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let app_http = weft_testkit::http_echo("api").await;
    let app_tcp = weft_testkit::tcp_echo().await;
    let server = start_server(&pki, app_http, app_tcp, "").await;
    // The gateway forwards to the server sidecar through a tap: what the gateway emits is
    // exactly what it received, so the tap shows whether the gateway ever had plaintext.
    let tap = Tap::start(server.addrs.inbound.unwrap()).await;
    let gw = gateway(&pki, tap.addr, app_http, app_tcp.port()).await;
    let client =
        start_client(pki.store("default", "web"), app_http, app_tcp, gw.addrs.gateway.unwrap(), &api_id(), "").await;

    let secret = "gateway-must-not-see-this";
    let req = http::Request::post("/via-gw").header("host", "t").body(Full::new(Bytes::from(secret))).unwrap();
    let resp = http1_request(client.addrs.upstreams[0], req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
    assert_eq!(v["body"], secret);
    assert_eq!(v["peer_identity"], web_id(), "the caller's identity survives the gateway hop");

    let mut s = TcpStream::connect(client.addrs.upstreams[1]).await.unwrap();
    s.write_all(b"tcp-through-gateway").await.unwrap();
    let mut back = [0u8; 19];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"tcp-through-gateway");

    assert!(!tap.saw(secret.as_bytes()), "plaintext passed the gateway");
    assert!(!tap.saw(b"tcp-through-gateway"));
    assert_eq!(tap.seen()[0], 0x16);
    let m = gw.metrics_text();
    assert!(metric(&m, "weft_tcp_open_total{direction=\"gateway\"") >= 2.0, "{m}");
}

#[tokio::test]
async fn gateway_refuses_unknown_sni_and_plaintext() {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let app = weft_testkit::http_echo("api").await;
    let app_tcp = weft_testkit::tcp_echo().await;
    let server = start_server(&pki, app, app_tcp, "").await;
    let gw = gateway(&pki, server.addrs.inbound.unwrap(), app, app_tcp.port()).await;
    let gw_addr = gw.addrs.gateway.unwrap();

    let mut s = TcpStream::connect(gw_addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(buf.is_empty());

    // A real ClientHello for a service the gateway does not know.
    assert!(hello(&pki, gw_addr, "80.nope.default.local.weft").await.is_err());
    let m = gw.metrics_text();
    assert_eq!(metric(&m, "weft_protocol_errors_total{direction=\"gateway\",reason=\"not-tls\"}"), 1.0, "{m}");
    assert_eq!(metric(&m, "weft_protocol_errors_total{direction=\"gateway\",reason=\"unknown-service\"}"), 1.0, "{m}");
}

/// Each refusal has its own reason: another cluster, an unknown service, a service with no
/// endpoint, and a port the service does not serve, which the gateway refuses itself (before,
/// it passed to the destination sidecar, which refused it there). Nothing refused reaches the
/// sidecar behind the gateway.
#[tokio::test]
async fn gateway_refusals_say_why_and_a_wrong_port_stops_at_the_gateway() {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let app = weft_testkit::http_echo("api").await;
    let app_tcp = weft_testkit::tcp_echo().await;
    let server = start_server(&pki, app, app_tcp, "").await;
    let tap = Tap::start(server.addrs.inbound.unwrap()).await;
    let gw = gateway(&pki, tap.addr, app, app_tcp.port()).await;
    let gw_addr = gw.addrs.gateway.unwrap();
    let refused = [
        (format!("{}.api.default.west.weft", app.port()), "wrong-cluster"),
        (format!("{}.nope.default.local.weft", app.port()), "unknown-service"),
        (format!("{}.empty.default.local.weft", app.port()), "no-endpoint"),
        ("1.api.default.local.weft".to_string(), "unknown-port"),
    ];
    for (sni, _) in &refused {
        assert!(hello(&pki, gw_addr, sni).await.is_err(), "{sni} refused");
    }
    let m = gw.metrics_text();
    for (sni, reason) in &refused {
        let sample = format!("weft_protocol_errors_total{{direction=\"gateway\",reason=\"{reason}\"}}");
        assert_eq!(metric(&m, &sample), 1.0, "{sni}: {m}");
    }
    assert!(tap.seen().is_empty(), "a refused connection reached the sidecar behind the gateway");
    let sm = server.metrics_text();
    assert_eq!(metric(&sm, "weft_protocol_errors_total{direction=\"inbound\",reason=\"unknown-port\"}"), 0.0);

    // Both ports the gateway knows are forwarded: the endpoint's own and the declared TCP one.
    hello(&pki, gw_addr, &format!("{}.api.default.local.weft", app.port())).await.expect("the endpoint's port");
    hello(&pki, gw_addr, &format!("{}.api.default.local.weft", app_tcp.port())).await.expect("a declared port");
}

/// The refusal log names the SNI and the reason, once per reason per 10 s: a caller retrying in a
/// loop gives one line, not one per attempt. Run as a child `weft-proxy` to read its real log.
#[tokio::test]
async fn gateway_logs_each_refusal_reason_once_with_the_sni() {
    use std::io::Read;
    let pki = Pki::new();
    let dir = std::env::temp_dir().join(format!("weft-gw-log-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (c, k, b) = pki.write_files(&dir, "istio-system", "gateway");
    let unused: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let yaml = gateway_yaml(unused, "127.0.0.1:8080".parse().unwrap(), 9090)
        .replace("{ cert: u, key: u, bundle: u }", &format!("{{ cert: {c}, key: {k}, bundle: {b} }}"));
    std::fs::write(dir.join("gw.yaml"), yaml).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weft-proxy"))
        .args(["run", "--config"])
        .arg(dir.join("gw.yaml"))
        .env("RUST_LOG", "info")
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
    let (mut admin, mut gw) = (None, None);
    for line in std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap())) {
        let line = line.unwrap();
        if let Some(a) = line.strip_prefix("admin ") {
            admin = Some(a.parse::<SocketAddr>().unwrap());
        }
        if let Some(a) = line.strip_prefix("gateway ") {
            gw = Some(a.parse::<SocketAddr>().unwrap());
        }
        if line == "ready" {
            break;
        }
    }
    let (admin, gw) = (admin.expect("admin address printed"), gw.expect("gateway address printed"));
    for _ in 0..3 {
        assert!(hello(&pki, gw, "8080.api.default.west.weft").await.is_err());
    }
    assert!(hello(&pki, gw, "8080.nope.default.local.weft").await.is_err());
    weft_testkit::eventually("the four refusals counted", Duration::from_secs(20), || async move {
        let m = weft_testkit::http1_get(admin, "/metrics").await.ok()?;
        let m = String::from_utf8_lossy(m.body()).into_owned();
        let n = metric(&m, "weft_protocol_errors_total{direction=\"gateway\",reason=\"wrong-cluster\"}")
            + metric(&m, "weft_protocol_errors_total{direction=\"gateway\",reason=\"unknown-service\"}");
        (n == 4.0).then_some(())
    })
    .await;
    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    child.wait().unwrap();
    std::mem::forget(stop);
    let lines = |reason: &str| log.lines().filter(|l| l.contains(&format!("reason=\"{reason}\""))).count();
    assert_eq!(lines("wrong-cluster"), 1, "one line for three refusals: {log}");
    assert_eq!(lines("unknown-service"), 1, "{log}");
    assert!(log.contains("8080.api.default.west.weft") && log.contains("8080.nope.default.local.weft"), "{log}");
    assert!(log.contains("this gateway routes only its own cluster"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A gateway forwards only to endpoints in its own cluster, and never to its own host
/// (loopback) unless it listens on loopback itself: the endpoint it picks is checked, not only
/// the cluster the caller's SNI names.
#[tokio::test]
async fn gateway_forwards_only_to_endpoints_it_may_reach() {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let app = weft_testkit::http_echo("api").await;
    let app_tcp = weft_testkit::tcp_echo().await;
    let server = start_server(&pki, app, app_tcp, "").await;
    let inbound = server.addrs.inbound.unwrap();
    let start = |listen: &str, cluster: &str| {
        let cfg = ProxyConfig::from_yaml(&format!(
            r#"
mode: gateway
identity: {{ cert: u, key: u, bundle: u }}
admin: {{ listen: "127.0.0.1:0" }}
gateway: {{ listen: "{listen}" }}
services:
  - name: api
    endpoints: [{{ address: "{app}", proxy: "{inbound}", identity: "{id}", cluster: {cluster} }}]
"#,
            id = api_id()
        ))
        .unwrap();
        Proxy::start(cfg, pki.store("istio-system", "gateway"))
    };
    // A real ClientHello naming the gateway's own cluster (`local`) through `gw`.
    let hello = |gw: std::net::SocketAddr| {
        let store = pki.store("default", "web");
        async move {
            let cfg = weft_identity::tls::client_config(&store, &[b"h2"]).unwrap();
            let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
            let name =
                rustls_pki_types::ServerName::try_from(format!("{}.api.default.local.weft", app.port())).unwrap();
            connector.connect(name, TcpStream::connect(gw).await.unwrap()).await.map(|_| ())
        }
    };
    // The endpoint is in another cluster, though the SNI names this one.
    let other = start("127.0.0.1:0", "west").await.unwrap();
    assert!(hello(other.addrs.gateway.unwrap()).await.is_err(), "forwarded to another cluster's endpoint");
    let m = other.metrics_text();
    assert_eq!(
        metric(&m, "weft_protocol_errors_total{direction=\"gateway\",reason=\"endpoint-not-allowed\"}"),
        1.0,
        "{m}"
    );

    // A gateway listening on all addresses does not forward to a loopback endpoint.
    let wide = start("0.0.0.0:0", "local").await.unwrap();
    let port = wide.addrs.gateway.unwrap().port();
    assert!(hello(([127, 0, 0, 1], port).into()).await.is_err(), "forwarded to a loopback endpoint");
    let m = wide.metrics_text();
    assert_eq!(
        metric(&m, "weft_protocol_errors_total{direction=\"gateway\",reason=\"endpoint-not-allowed\"}"),
        1.0,
        "{m}"
    );

    // The same endpoint through a gateway on loopback (a local mesh) is reached.
    let local = start("127.0.0.1:0", "local").await.unwrap();
    hello(local.addrs.gateway.unwrap()).await.expect("a loopback gateway reaches loopback endpoints");
}

/// An endpoint whose `proxy` is the gateway itself (a remote cluster's gateway that its control
/// plane placed in the primary) is refused with its own reason, not forwarded back to the gateway
/// in a loop of new connections.
#[tokio::test]
async fn gateway_never_forwards_to_itself() {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let app = weft_testkit::http_echo("api").await;
    let yaml = |proxy: SocketAddr| {
        format!(
            r#"
mode: gateway
identity: {{ cert: u, key: u, bundle: u }}
admin: {{ listen: "127.0.0.1:0" }}
gateway: {{ listen: "127.0.0.1:0" }}
services:
  - name: api
    endpoints: [{{ address: "{app}", proxy: "{proxy}", identity: "{id}" }}]
"#,
            id = api_id()
        )
    };
    let gw =
        Proxy::start(ProxyConfig::from_yaml(&yaml(app)).unwrap(), pki.store("istio-system", "gateway")).await.unwrap();
    let gw_addr = gw.addrs.gateway.unwrap();
    // The routes as a control plane would send them: the endpoint's proxy is this gateway.
    let looped = ProxyConfig::from_yaml(&yaml(gw_addr)).unwrap();
    gw.set_routes(weft_proxy::Routes::try_from(&looped).unwrap());
    let sni = format!("{}.api.default.local.weft", app.port());
    // Bounded: before the fix the handshake never ended (each hop a new connection to itself).
    let refused = tokio::time::timeout(Duration::from_secs(20), hello(&pki, gw_addr, &sni)).await;
    assert!(matches!(refused, Ok(Err(_))), "refused at once, not forwarded to itself: {refused:?}");
    let m = gw.metrics_text();
    assert_eq!(
        metric(&m, "weft_protocol_errors_total{direction=\"gateway\",reason=\"endpoint-is-this-gateway\"}"),
        1.0,
        "{m}"
    );
    // One refusal, not a chain of connections to itself.
    assert_eq!(metric(&m, "weft_protocol_errors_total{direction=\"gateway\",reason=\"eof\"}"), 0.0, "{m}");
}

/// The reserved SNI `control.weft-system.<cluster>.weft` is forwarded, still encrypted, to the
/// gateway's own control plane (`gateway.control_plane`), and only its own cluster's; any other
/// name in the reserved namespace is refused, and so is the control-plane SNI when the gateway
/// knows no control plane.
#[tokio::test]
async fn gateway_routes_the_reserved_control_plane_sni_to_its_own_control_plane_only() {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    // Stands in for the control plane's gRPC listener: records what the gateway forwards.
    let cp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cp_addr = cp.local_addr().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = cp.accept().await {
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let _ = tx.send(buf[..n].to_vec());
        }
    });
    let unused: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let yaml = gateway_yaml(unused, "127.0.0.1:8080".parse().unwrap(), 9090);
    let with_cp = yaml.replace(
        r#"gateway: { listen: "127.0.0.1:0" }"#,
        &format!(r#"gateway: {{ listen: "127.0.0.1:0", control_plane: "{cp_addr}" }}"#),
    );
    assert_ne!(with_cp, yaml);
    let gw =
        Proxy::start(ProxyConfig::from_yaml(&with_cp).unwrap(), pki.store("istio-system", "gateway")).await.unwrap();
    let gw_addr = gw.addrs.gateway.unwrap();

    let _ = hello(&pki, gw_addr, "control.weft-system.local.weft").await;
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    assert!(got.windows(30).any(|w| w == b"control.weft-system.local.weft"), "the ClientHello is forwarded as it was");
    let m = gw.metrics_text();
    assert_eq!(
        metric(&m, "weft_tcp_open_total{direction=\"gateway\",src=\"unknown\",dst=\"control.weft-system\"}"),
        1.0,
        "{m}"
    );

    for (sni, reason) in [
        ("control.weft-system.west.weft", "wrong-cluster"),
        ("15012.control.weft-system.local.weft", "reserved-sni"),
        ("api.weft-system.local.weft", "reserved-sni"),
    ] {
        assert!(hello(&pki, gw_addr, sni).await.is_err(), "{sni} refused");
        let m = gw.metrics_text();
        assert!(
            metric(&m, &format!("weft_protocol_errors_total{{direction=\"gateway\",reason=\"{reason}\"}}")) >= 1.0,
            "{sni}: {m}"
        );
    }
    assert!(rx.try_recv().is_err(), "a refused name reached the control plane");

    // Without `control_plane` (and no `control`), the control-plane SNI has nowhere to go.
    let gw = Proxy::start(ProxyConfig::from_yaml(&yaml).unwrap(), pki.store("istio-system", "gateway")).await.unwrap();
    assert!(hello(&pki, gw.addrs.gateway.unwrap(), "control.weft-system.local.weft").await.is_err());
    let m = gw.metrics_text();
    assert_eq!(metric(&m, "weft_protocol_errors_total{direction=\"gateway\",reason=\"no-control-plane\"}"), 1.0, "{m}");
}

/// With `access_log` on, the gateway writes one line per spliced connection, when it ends: the
/// SNI it routed by, the caller's address, the service and endpoint, bytes each way, duration.
#[tokio::test]
async fn gateway_writes_an_access_log_line_per_spliced_connection() {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let app_http = weft_testkit::http_echo("api").await;
    let app_tcp = weft_testkit::tcp_echo().await;
    let server = start_server(&pki, app_http, app_tcp, "").await;
    let inbound = server.addrs.inbound.unwrap();
    let dir = std::env::temp_dir().join(format!("weft-gw-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.log");
    let _ = std::fs::remove_file(&path);
    let yaml = format!(
        "{}access_log: {{ enabled: true, format: json, path: \"{}\" }}\n",
        gateway_yaml(inbound, app_http, app_tcp.port()),
        path.display()
    );
    let gw = Proxy::start(ProxyConfig::from_yaml(&yaml).unwrap(), pki.store("istio-system", "gateway")).await.unwrap();
    let client =
        start_client(pki.store("default", "web"), app_http, app_tcp, gw.addrs.gateway.unwrap(), &api_id(), "").await;

    let mut s = TcpStream::connect(client.addrs.upstreams[1]).await.unwrap();
    s.write_all(b"through-the-gateway").await.unwrap();
    let mut back = [0u8; 19];
    s.read_exact(&mut back).await.unwrap();
    drop(s);

    let sni = format!("{}.api.default.local.weft", app_tcp.port());
    let path_ref = &path;
    let sni_ref = &sni;
    let line = weft_testkit::eventually("the gateway's line", Duration::from_secs(10), || async move {
        std::fs::read_to_string(path_ref)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .find(|v| v["authority"] == sni_ref.as_str())
    })
    .await;
    assert_eq!(line["direction"], "gateway", "{line}");
    assert_eq!(line["protocol"], "tcp", "{line}");
    assert_eq!((line["dst"].as_str(), line["service"].as_str()), (Some("api.default"), Some("api.default")), "{line}");
    assert_eq!(line["upstream"], inbound.to_string().as_str(), "{line}");
    let src: SocketAddr = line["src"].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{line}"));
    assert!(src.ip().is_loopback(), "the caller's address: {line}");
    // TLS records both ways: more than the 19 bytes of payload.
    assert!(line["bytes_received"].as_u64() > Some(19) && line["bytes_sent"].as_u64() > Some(19), "{line}");
    assert!(line["duration_ms"].as_f64().is_some(), "{line}");
    assert_eq!(line["response_flags"], "-", "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}
