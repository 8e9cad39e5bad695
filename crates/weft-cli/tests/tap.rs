//! `weft tap`, `weft top` and `weft proxy-config` as processes, against a control plane with an
//! api app, its sidecar, and a web sidecar calling it (in this process, on 127.0.0.1).

use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use weft_api::proxy::ProxyConfig;
use weft_control::{ControlConfig, ControlPlane};
use weft_proxy::Proxy;
use weft_testkit::{eventually, http1_get};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

async fn admin(cp: &ControlPlane, method: &str, path: &str, body: &str) -> serde_json::Value {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "cp")
        .header("authorization", format!("Bearer {}", cp.admin_token))
        .body(http_body_util::Full::new(bytes::Bytes::from(body.to_string())))
        .unwrap();
    let resp = weft_testkit::api_request(cp.api_addr, cp.api_client_tls(), req).await.unwrap();
    assert!(resp.status().is_success(), "{path}: {:?}", resp.body());
    serde_json::from_slice(resp.body()).unwrap()
}

/// `--server`, `--token` and `--ca-file` for `cp`'s API.
fn conn_args(cp: &ControlPlane) -> Vec<String> {
    let ca = cp.api_ca_file.display().to_string();
    ["--server", &cp.api_url(), "--token", &cp.admin_token, "--ca-file", &ca].map(String::from).to_vec()
}

fn weft(cp: &ControlPlane, args: &[&str]) -> Output {
    Command::new(WEFT).args(args).args(conn_args(cp)).stdin(Stdio::null()).output().unwrap()
}

async fn sidecar(cp: &ControlPlane, identity: &str, workload: &str, extra: &str) -> Proxy {
    let v = admin(cp, "POST", "/v1/tokens", &format!(r#"{{"kind":"bootstrap","identity":"{identity}"}}"#)).await;
    let token = v["token"].as_str().unwrap();
    let cfg = ProxyConfig::from_yaml(&format!(
        "control: {{ address: \"{}\", token: \"{token}\", proxy_id: \"{}\"{workload} }}\nadmin: {{ listen: \"127.0.0.1:0\" }}\n{extra}",
        cp.grpc_addr,
        identity.replace('/', "-")
    ))
    .unwrap();
    let control = cfg.control.clone().unwrap();
    let store = weft_proxy::control::bootstrap(&control, 0).await.unwrap();
    let mut p = Proxy::start(cfg, store).await.unwrap();
    p.follow_control_plane(control);
    p
}

struct Mesh {
    cp: ControlPlane,
    server: Proxy,
    client: Proxy,
    upstream: SocketAddr,
}

async fn mesh(name: &str) -> Mesh {
    let dir = std::env::temp_dir().join(format!("weft-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = ControlConfig::new(dir);
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    let cp = ControlPlane::start(cfg).await.unwrap();
    let app = weft_testkit::http_echo("api").await;
    let server = sidecar(&cp, "default/api", ", workload: api-1", "inbound: { listen: \"127.0.0.1:0\" }\n").await;
    let client =
        sidecar(&cp, "default/web", "", "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: api }] }\n").await;
    let yaml = format!(
        "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: api }}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: api-1 }}\nspec: {{ service: api, address: 127.0.0.1, port: {}, sidecar: \"127.0.0.1:{}\" }}\n",
        app.port(),
        server.addrs.inbound.unwrap().port()
    );
    admin(&cp, "POST", "/v1/apply", &yaml).await;
    let upstream = client.addrs.upstreams[0];
    eventually("web routes to api", Duration::from_secs(10), || async move {
        (http1_get(upstream, "/").await.ok()?.status() == 200).then_some(())
    })
    .await;
    Mesh { cp, server, client, upstream }
}

/// Runs `weft <args>` in the background, sends `paths` through the mesh once `proxies` tap, and
/// returns what the command printed.
async fn while_tapping(m: &Mesh, args: &[&str], proxies: &[&Proxy], paths: &[&str]) -> String {
    // The taps of a command before are gone (else a proxy still tapping for it passes for one
    // tapping for this one).
    eventually("no tap left", Duration::from_secs(20), || async {
        [&m.server, &m.client].iter().all(|p| !p.ctx().taps.on()).then_some(())
    })
    .await;
    let mut cmd = std::process::Command::new(WEFT);
    cmd.args(args).args(conn_args(&m.cp));
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let waiting = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap());
    eventually("the proxies tap", Duration::from_secs(20), || async {
        proxies.iter().all(|p| p.ctx().taps.on()).then_some(())
    })
    .await;
    for p in paths {
        assert_eq!(http1_get(m.upstream, p).await.unwrap().status(), 200);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), waiting).await.expect("the command ends").unwrap();
    assert!(out.status.success(), "weft {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tap_top_and_proxy_config_from_the_cli() {
    weft_testkit::init_tracing();
    let m = mesh("tap").await;

    // One line per request and proxy; -o json gives the API's lines.
    let out =
        while_tapping(&m, &["tap", "--max", "4", "--path", "/t"], &[&m.server, &m.client], &["/t/1", "/t/2"]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("in  src=web.default dst=api.default :method=GET") && l.contains(":path=/t/1")),
        "{out}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("out src=web.default dst=api.default") && l.contains(":status=200")),
        "{out}"
    );
    let out = while_tapping(&m, &["tap", "svc/api", "-o", "json", "--max", "1"], &[&m.server], &["/j"]).await;
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((v["direction"].as_str(), v["path"].as_str()), (Some("inbound"), Some("/j")));

    // Top, printed once: the busiest path first.
    let out =
        while_tapping(&m, &["top", "svc/api", "--once", "--max", "3"], &[&m.server], &["/busy", "/busy", "/quiet"])
            .await;
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["SOURCE", "DESTINATION", "METHOD", "PATH", "COUNT", "BEST", "WORST", "LAST", "SUCCESS"]);
    assert_eq!(rows[1][..5], ["web.default", "api.default", "GET", "/busy", "2"], "{out}");
    assert_eq!(rows[2][3..5], ["/quiet", "1"], "{out}");
    assert_eq!(rows[1][8], "100.00%");

    // proxy-config: the web sidecar's certificate and its route to api.
    let out = weft(&m.cp, &["proxy-config", "default-web"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("IDENTITY     spiffe://cluster.local/ns/default/sa/web"), "{text}");
    assert!(text.contains("CERTIFICATE  expires in"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("api.default") && l.contains("1")), "{text}");
    let out = weft(&m.cp, &["proxy-config", "default-web", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["identity"], "spiffe://cluster.local/ns/default/sa/web");
    let out = weft(&m.cp, &["proxy-config", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no proxy \"nope\" is connected"), "{out:?}");
}
