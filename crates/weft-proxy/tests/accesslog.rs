//! Access logs on real connections: a client sidecar → server sidecar pair over mTLS, each with
//! `access_log` on in its config file (JSON, to a file). Every line is parsed: HTTP and TCP,
//! inbound and outbound, identities, status, route-less upstream, response flags (a connect
//! failure is `UF`, a denial `UAEX`), the AUDIT mark; and a proxy without `access_log` writes
//! nothing.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_api::proxy::ProxyConfig;
use weft_proxy::Proxy;
use weft_testkit::Pki;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weft-accesslog-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn access_log(path: &Path, format: &str) -> String {
    format!("access_log: {{ enabled: true, format: {format}, path: \"{}\" }}", path.display())
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Waits until `path` holds a line for which `want` holds; returns it.
async fn line(path: &Path, what: &str, want: impl Fn(&Value) -> bool) -> Value {
    weft_testkit::eventually(what, Duration::from_secs(10), || {
        let found = lines(path).into_iter().find(|v| want(v));
        async move { found }
    })
    .await
}

/// The server sidecar, with an AUDIT policy on `/audited` and a DENY on `/denied`.
fn server_cfg(app_http: u16, app_tcp: u16, log: &Path) -> ProxyConfig {
    let mut cfg = server_config(app_http, app_tcp, &access_log(log, "json"));
    let authz = serde_json::json!({ "policies": [
        { "name": "default/watch", "spec": { "action": "AUDIT", "rules": [{ "to": [{ "operation": { "paths": ["/audited"] } }] }] } },
        // On the HTTP port only: an HTTP field of a DENY rule matches every opaque TCP connection.
        { "name": "default/no", "spec": { "action": "DENY", "rules": [{ "to": [{ "operation": { "paths": ["/denied"], "ports": [app_http] } }] }] } },
    ]});
    cfg.inbound.as_mut().expect("inbound").authorization = Some(serde_json::from_value(authz).expect("authorization"));
    cfg
}

#[tokio::test]
async fn json_lines_carry_identities_status_flags_and_audit_marks() {
    weft_testkit::init_tracing();
    let d = dir("json");
    let (client_log, server_log) = (d.join("client.log"), d.join("server.log"));
    let pki = Pki::new();
    let app_http = weft_testkit::http_echo("api").await;
    let app_tcp = weft_testkit::tcp_echo().await;
    let server = Proxy::start(server_cfg(app_http.port(), app_tcp.port(), &server_log), pki.store(SERVER.0, SERVER.1))
        .await
        .expect("server sidecar");
    let inbound = server.addrs.inbound.expect("inbound");
    // A port nothing listens on, for a connect failure.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let extra = format!(
        "  - name: gone\n    endpoints:\n      - {{ address: \"{closed}\", proxy: \"{closed}\", identity: \"{}\" }}\n{}",
        api_id(),
        access_log(&client_log, "json")
    );
    let mut cfg = client_config(app_http, app_tcp.port(), inbound, &api_id(), &extra);
    cfg.outbound.as_mut().unwrap().upstreams.push(
        serde_json::from_value(
            serde_json::json!({ "listen": "127.0.0.1:0", "service": "gone", "port": closed.port() }),
        )
        .expect("upstream"),
    );
    cfg.validate().expect("client config");
    let client = Proxy::start(cfg, pki.store(CLIENT.0, CLIENT.1)).await.expect("client sidecar");
    let (http, tcp, gone) = (client.addrs.upstreams[0], client.addrs.upstreams[1], client.addrs.upstreams[2]);

    let resp = weft_testkit::http1_get(http, "/items?page=2").await.unwrap();
    assert_eq!(resp.status(), 200);
    let out = line(&client_log, "the outbound line of /items", |v| v["path"] == "/items?page=2").await;
    assert_eq!(out["direction"], "outbound");
    assert_eq!(out["protocol"], "http");
    assert_eq!(out["method"], "GET");
    assert_eq!(out["status"], 200);
    assert_eq!(out["src"], web_id());
    assert_eq!(out["dst"], api_id());
    assert_eq!(out["service"], "api.default");
    assert_eq!(out["upstream"], app_http.to_string());
    assert_eq!(out["response_flags"], "-");
    assert!(out["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{out}");
    assert!(out["time"].as_str().is_some_and(|t| t.ends_with('Z') && t.len() == 24), "{out}");
    let inn = line(&server_log, "the inbound line of /items", |v| v["path"] == "/items?page=2").await;
    assert_eq!(inn["direction"], "inbound");
    assert_eq!(inn["src"], web_id(), "the caller's verified identity");
    assert_eq!(inn["dst"], api_id());
    assert_eq!(inn["upstream"], app_http.to_string());
    assert_eq!(inn["status"], 200);
    assert_eq!(inn["audit"], Value::Null);

    // AUDIT marks the request; it is served all the same.
    assert_eq!(weft_testkit::http1_get(http, "/audited").await.unwrap().status(), 200);
    let a = line(&server_log, "the AUDIT mark", |v| v["path"] == "/audited").await;
    assert_eq!(a["audit"], "default/watch");
    assert_eq!(a["status"], 200);

    // A denial: UAEX on the server's line, and on the client's (the answer carries it).
    assert_eq!(weft_testkit::http1_get(http, "/denied").await.unwrap().status(), 403);
    let denied = line(&server_log, "the denial", |v| v["path"] == "/denied").await;
    assert_eq!((denied["status"].as_u64(), denied["response_flags"].as_str()), (Some(403), Some("UAEX")));
    assert_eq!(denied["error"], "authz-denied");
    let denied = line(&client_log, "the denial, client side", |v| v["path"] == "/denied").await;
    assert_eq!(denied["response_flags"], "UAEX");

    // A connect failure: UF.
    let resp = weft_testkit::http1_get(gone, "/x").await.unwrap();
    assert!(resp.status().is_server_error(), "{resp:?}");
    let uf = line(&client_log, "the connect failure", |v| v["service"] == "gone.default").await;
    assert_eq!(uf["response_flags"], "UF", "{uf}");
    assert_eq!(uf["upstream"], closed.to_string());

    // One opaque TCP connection: one line per side when it closes, with its bytes.
    let mut s = tokio::net::TcpStream::connect(tcp).await.unwrap();
    s.write_all(b"hello\n").await.unwrap();
    let mut buf = [0u8; 6];
    s.read_exact(&mut buf).await.unwrap();
    drop(s);
    let t = line(&client_log, "the outbound TCP line", |v| v["protocol"] == "tcp").await;
    assert_eq!((t["direction"].as_str(), t["dst"].as_str()), (Some("outbound"), Some(api_id().as_str())));
    assert_eq!(t["bytes_received"].as_u64(), Some(6), "{t}");
    assert!(t["bytes_sent"].as_u64().is_some_and(|n| n >= 6), "the echo, at least: {t}");
    let t = line(&server_log, "the inbound TCP line", |v| v["protocol"] == "tcp").await;
    assert_eq!((t["src"].as_str(), t["upstream"].as_str()), (Some(web_id().as_str()), Some(&*app_tcp.to_string())));

    // A WebSocket upgrade: one line per side, answered 101 when the tunnel opens.
    let mut ws = tokio::net::TcpStream::connect(http).await.unwrap();
    ws.write_all(b"GET /ws HTTP/1.1\r\nHost: api\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    ws.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 101", "{}", String::from_utf8_lossy(&head));
    drop(ws);
    let up = line(&client_log, "the outbound upgrade", |v| v["path"] == "/ws").await;
    assert_eq!((up["status"].as_u64(), up["dst"].as_str()), (Some(101), Some(api_id().as_str())), "{up}");
    let up = line(&server_log, "the inbound upgrade", |v| v["path"] == "/ws").await;
    assert_eq!((up["status"].as_u64(), up["src"].as_str()), (Some(101), Some(web_id().as_str())), "{up}");

    // The counter agrees with the file.
    let written = metric(&server.metrics_text(), "weft_access_log_lines_total");
    assert_eq!(written as usize, lines(&server_log).len());
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test]
async fn text_format_and_off_by_default() {
    weft_testkit::init_tracing();
    let d = dir("text");
    let server_log = d.join("server.log");
    let pki = Pki::new();
    let app_http = weft_testkit::http_echo("api").await;
    let app_tcp = weft_testkit::tcp_echo().await;
    let server = start_server(&pki, app_http, app_tcp, &access_log(&server_log, "text")).await;
    let inbound = server.addrs.inbound.expect("inbound");
    // The client has no access_log: it writes nothing, anywhere.
    let client = start_client(pki.store(CLIENT.0, CLIENT.1), app_http, app_tcp, inbound, &api_id(), "").await;
    assert_eq!(weft_testkit::http1_get(client.addrs.upstreams[0], "/t").await.unwrap().status(), 200);
    let text = weft_testkit::eventually("a text line", Duration::from_secs(10), || {
        let t = std::fs::read_to_string(&server_log).unwrap_or_default();
        async move { t.contains("\"GET /t\"").then_some(t) }
    })
    .await;
    let l = text.lines().next().unwrap();
    assert!(l.starts_with('[') && l.contains("] inbound \"GET /t\" 200 - "), "{l}");
    assert!(l.contains(&format!("\"{}\"", web_id())), "{l}");
    assert!(serde_json::from_str::<Value>(l).is_err(), "text, not JSON: {l}");
    assert_eq!(metric(&client.metrics_text(), "weft_access_log_lines_total"), 0.0, "off by default");
    assert!(client.ctx().access_log.describe().is_null());
    let _ = std::fs::remove_dir_all(&d);
}
