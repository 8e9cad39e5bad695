//! `weft stat` and `weft edges` from the real binary, against a control plane and sidecars in
//! this process that carry real requests: the tables show the numbers of the requests sent.

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::Duration;
use weft_api::proxy::{Control, ProxyConfig};
use weft_control::tokens::Grant;
use weft_control::{ControlConfig, ControlPlane};
use weft_proxy::Proxy;
use weft_testkit::{eventually, http1_get};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
const WAIT: Duration = Duration::from_secs(20);

async fn follower(cp: &ControlPlane, sa: &str, workload: Option<&str>, yaml: &str) -> Proxy {
    let token = cp.tokens.issue(Grant::Bootstrap { namespace: "default".into(), service_account: sa.into() }, None);
    let control = Control {
        proxy_id: Some(sa.into()),
        workload: workload.map(String::from),
        ..Control::new(cp.grpc_addr, token)
    };
    let mut cfg = ProxyConfig::from_yaml(&format!(
        "control: {{ address: \"{}\", token: t }}\nadmin: {{ listen: \"127.0.0.1:0\" }}\n{yaml}",
        cp.grpc_addr
    ))
    .unwrap();
    cfg.control = Some(control.clone());
    let store = weft_proxy::control::bootstrap(&control, 0).await.unwrap();
    let mut p = Proxy::start(cfg, store).await.unwrap();
    p.follow_control_plane(control);
    p
}

/// `weft <args> --server <cp> --token <admin> --ca-file <its API's root>` (run off the async
/// runtime's threads).
async fn weft(cp: &ControlPlane, args: &[&str]) -> Output {
    let mut cmd = Command::new(WEFT);
    cmd.args(args)
        .args(["--server", &cp.api_url(), "--token", &cp.admin_token])
        .arg("--ca-file")
        .arg(&cp.api_ca_file)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "weft failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_and_edges_print_the_requests_sent() {
    weft_testkit::init_tracing();
    let dir = std::env::temp_dir().join(format!("weft-cli-stat-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = ControlConfig::new(dir.clone());
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    cfg.stats_interval_ms = 200;
    cfg.mesh.cluster.name = "east".into();
    let cp = ControlPlane::start(cfg).await.unwrap();

    let app = weft_testkit::http_echo("api").await;
    let server = follower(&cp, "api", Some("api-1"), "inbound: { listen: \"127.0.0.1:0\" }\n").await;
    let file = dir.join("api.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: api }}\nspec: {{}}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: api-1 }}\nspec: {{ service: api, address: 127.0.0.1, port: {}, sidecar: \"{}\" }}\n",
            app.port(),
            server.addrs.inbound.unwrap()
        ),
    )
    .unwrap();
    stdout(&weft(&cp, &["apply", "-f", file.to_str().unwrap()]).await);
    let s = &server;
    eventually("the server sidecar gets its app port", WAIT, || async move {
        (!s.ctx().routes.load().inbound_ports().is_empty()).then_some(())
    })
    .await;
    let client =
        follower(&cp, "web", None, "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: api }] }\n").await;
    let upstream: SocketAddr = client.addrs.upstreams[0];
    eventually("a first request reaches the app", WAIT, || async move {
        (http1_get(upstream, "/").await.ok()?.status() == 200).then_some(())
    })
    .await;
    for _ in 0..10 {
        assert_eq!(http1_get(upstream, "/").await.unwrap().status(), 200);
    }
    assert_eq!(http1_get(upstream, "/status/500").await.unwrap().status(), 500);

    // JSON first, until the proxies' reports are in: 12 requests, one failed.
    let cp_ref = &cp;
    eventually("weft stat -o json counts 12 requests to api", WAIT, || async move {
        let v: serde_json::Value =
            serde_json::from_str(&stdout(&weft(cp_ref, &["stat", "--window", "10m", "-o", "json"]).await)).ok()?;
        v["rows"].as_array()?.iter().any(|r| r["service"] == "api" && r["requests"] == 12).then_some(())
    })
    .await;

    let table = stdout(&weft(&cp, &["stat", "svc", "-n", "default", "--window", "10m"]).await);
    let header = table.lines().next().unwrap();
    for col in ["NAME", "MESHED", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "TCP_CONN"] {
        assert!(header.contains(col), "{table}");
    }
    let api = table.lines().find(|l| l.split_whitespace().nth(2) == Some("api")).unwrap_or_else(|| panic!("{table}"));
    let cells: Vec<&str> = api.split_whitespace().collect();
    assert_eq!(cells[..6], ["east", "default", "api", "yes", "91.67%", "0.02rps"], "{table}");

    let table = stdout(&weft(&cp, &["edges", "--window", "10m"]).await);
    let edge = table.lines().nth(1).unwrap_or_else(|| panic!("{table}"));
    let cells: Vec<&str> = edge.split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "web.default@east",
            "api.default@east",
            "spiffe://cluster.local/ns/default/sa/web",
            "spiffe://cluster.local/ns/default/sa/api",
            "yes",
            "0.02rps",
            "91.67%",
            "0"
        ],
        "{table}"
    );

    // A bad window is refused by the API, named.
    let out = weft(&cp, &["stat", "--window", "3h"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("window"), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}
