//! Telemetry end to end on 127.0.0.1: a control plane, a client sidecar (`web`) and a server
//! sidecar (`api`, Workload `api-1`) in front of an HTTP echo. Access logs are off until a
//! Telemetry turns them on; a Telemetry applied alone (no other change) reaches the proxy it
//! selects over the discovery stream, the most specific one wins, an AUDIT policy marks the
//! line, and deleting the Telemetry turns the log off again.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use weft_control::{ControlConfig, ControlPlane};
use weft_proxy::Proxy;
use weft_testkit::{eventually, http1_get};

mod common;
use common::{admin_api, sidecar, tempdir};

struct Mesh {
    cp: ControlPlane,
    server: Proxy,
    client: Proxy,
    upstream: SocketAddr,
}

async fn mesh(name: &str) -> Mesh {
    weft_testkit::init_tracing();
    let dir = tempdir(name);
    let mut cfg = ControlConfig::new(dir);
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    let cp = ControlPlane::start(cfg).await.expect("control plane");
    let app = weft_testkit::http_echo("api").await;
    let server = sidecar(&cp, "default/api", Some("api-1"), "inbound: { listen: \"127.0.0.1:0\" }\n").await;
    let client =
        sidecar(&cp, "default/web", None, "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: api }] }\n")
            .await;
    let resources = format!(
        "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: api }}\nspec: {{ ports: [{{ port: {}, protocol: http1 }}] }}\n---\n\
         apiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: api-1 }}\nspec: {{ service: api, address: 127.0.0.1, port: {}, sidecar: \"{}\" }}\n",
        app.port(),
        app.port(),
        server.addrs.inbound.unwrap(),
    );
    let (status, v) = admin_api(&cp, "POST", "/v1/apply", &resources).await;
    assert_eq!(status, 200, "{v}");
    let upstream = client.addrs.upstreams[0];
    eventually("the client routes to api", Duration::from_secs(10), || async move {
        (http1_get(upstream, "/ready").await.ok()?.status() == 200).then_some(())
    })
    .await;
    Mesh { cp, server, client, upstream }
}

fn telemetry(name: &str, namespace: &str, spec: &str) -> String {
    format!(
        "apiVersion: weft.io/v1alpha1\nkind: Telemetry\nmetadata: {{ name: {name}, namespace: {namespace} }}\nspec: {spec}\n"
    )
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Sends `GET path` until a line for it shows up in `log`; returns that line.
async fn logged(m: &Mesh, log: &Path, path: &'static str) -> serde_json::Value {
    let upstream = m.upstream;
    eventually(&format!("a line for {path} in {}", log.display()), Duration::from_secs(10), || async move {
        http1_get(upstream, path).await.ok()?;
        lines(log).into_iter().find(|v| v["path"] == path)
    })
    .await
}

#[tokio::test]
async fn a_telemetry_applied_alone_turns_access_logs_on_for_the_workloads_it_selects() {
    let m = mesh("telemetry-on").await;
    let dir = tempdir("telemetry-files");
    std::fs::create_dir_all(&dir).unwrap();
    let (ns_log, wl_log) = (dir.join("namespace.log"), dir.join("workload.log"));

    // Off by default: nothing is in force on either proxy.
    assert_eq!(http1_get(m.upstream, "/before").await.unwrap().status(), 200);
    assert!(m.server.ctx().access_log.describe().is_null());
    assert!(m.client.ctx().access_log.describe().is_null());

    // A namespace-wide Telemetry, applied alone: both proxies of `default` log.
    let spec = format!("{{ accessLogging: {{ enabled: true, path: \"{}\" }} }}", ns_log.display());
    let (status, v) = admin_api(&m.cp, "POST", "/v1/apply", &telemetry("logs", "default", &spec)).await;
    assert_eq!(status, 200, "{v}");
    let inbound = logged(&m, &ns_log, "/one").await;
    assert_eq!(inbound["status"], 200);
    let client = m.client.ctx().access_log.describe();
    assert_eq!(client["source"], "Telemetry default/logs", "{client}");

    // A Telemetry naming the Workload wins over the namespace's for that workload only; an
    // AUDIT policy marks its lines.
    let spec = format!(
        "{{ targetRef: {{ kind: Workload, name: api-1 }}, accessLogging: {{ enabled: true, path: \"{}\" }} }}",
        wl_log.display()
    );
    let audit = "apiVersion: weft.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: { name: watch }\n\
                 spec: { targetRef: { kind: Service, name: api }, action: AUDIT, rules: [{ to: [{ operation: { paths: [\"/two\"] } }] }] }\n";
    let (status, v) =
        admin_api(&m.cp, "POST", "/v1/apply", &format!("{}---\n{audit}", telemetry("api-1", "default", &spec))).await;
    assert_eq!(status, 200, "{v}");
    let line = logged(&m, &wl_log, "/two").await;
    assert_eq!(line["direction"], "inbound", "only the server's proxy writes here: {line}");
    assert_eq!(line["audit"], "default/watch", "{line}");
    assert!(line["src"].as_str().is_some_and(|s| s.ends_with("/ns/default/sa/web")), "{line}");
    eventually("the client's outbound line for /two", Duration::from_secs(10), || async {
        lines(&ns_log).into_iter().find(|v| v["path"] == "/two" && v["direction"] == "outbound")
    })
    .await;
    assert!(lines(&wl_log).iter().all(|v| v["direction"] == "inbound"), "the client is not selected");

    // Deleting both turns logging off again.
    for name in ["logs", "api-1"] {
        let (status, v) = admin_api(&m.cp, "DELETE", &format!("/v1/resources/Telemetry/default/{name}"), "").await;
        assert!(status == 200 || status == 204, "{status} {v}");
    }
    let (server, client) = (m.server.ctx().clone(), m.client.ctx().clone());
    eventually("both proxies stop logging", Duration::from_secs(10), || {
        let off = server.access_log.describe().is_null() && client.access_log.describe().is_null();
        async move { off.then_some(()) }
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_telemetry_with_a_bad_path_is_refused_naming_the_field() {
    let m = mesh("telemetry-bad").await;
    let (status, v) = admin_api(
        &m.cp,
        "POST",
        "/v1/apply",
        &telemetry("bad", "default", "{ accessLogging: { enabled: true, path: logs/access.log } }"),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    let text = v.to_string();
    assert!(text.contains("spec.accessLogging.path") && text.contains("absolute"), "{text}");
}

/// Sends `GET path` until a line for it with response flags `flags` shows up in `log`.
async fn flagged(
    m: &Mesh,
    log: &Path,
    path: &'static str,
    direction: &'static str,
    flags: &'static str,
) -> serde_json::Value {
    let upstream = m.upstream;
    eventually(&format!("{direction} {path} flagged {flags}"), Duration::from_secs(10), || async move {
        http1_get(upstream, path).await.ok()?;
        lines(log)
            .into_iter()
            .find(|v| v["path"] == path && v["direction"] == direction && v["response_flags"] == flags)
    })
    .await
}

#[tokio::test]
async fn response_flags_show_retries_used_up_injected_faults_and_rate_limits() {
    let m = mesh("telemetry-flags").await;
    let dir = tempdir("telemetry-flags-files");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let spec = format!("{{ accessLogging: {{ enabled: true, path: \"{}\" }} }}", log.display());
    let (status, v) = admin_api(&m.cp, "POST", "/v1/apply", &telemetry("logs", "default", &spec)).await;
    assert_eq!(status, 200, "{v}");
    let policy = |spec: &str| {
        format!("apiVersion: weft.io/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{ name: api }}\nspec: {{ targetRef: {{ kind: Service, name: api }}, {spec} }}\n")
    };
    let (status, v) = admin_api(
        &m.cp,
        "POST",
        "/v1/apply",
        &policy(
            "retry: { attempts: 2, retryOn: [5xx], backoff: { base: 1ms, max: 2ms }, budget: { ratio: 1, minPerSecond: 100 } }, \
             faults: [{ match: { pathPrefix: /fault }, abort: { httpStatus: 418, percent: 100 } }]",
        ),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    // The app answers 503 to every try: the retries are used up.
    let urx = flagged(&m, &log, "/status/503", "outbound", "URX").await;
    assert_eq!(urx["status"], 503, "{urx}");
    let fi = flagged(&m, &log, "/fault", "outbound", "FI").await;
    assert_eq!((fi["status"].as_u64(), fi["error"].as_str()), (Some(418), Some("fault-abort")), "{fi}");
    // A rate limit at the server's proxy: RL on its line and on the caller's.
    let (status, v) =
        admin_api(&m.cp, "POST", "/v1/apply", &policy("rateLimit: { maxTokens: 1, fillInterval: 1h }")).await;
    assert_eq!(status, 200, "{v}");
    let rl = flagged(&m, &log, "/limited", "inbound", "RL").await;
    assert_eq!(rl["status"], 429, "{rl}");
    flagged(&m, &log, "/limited", "outbound", "RL").await;
    let _ = std::fs::remove_dir_all(&dir);
}
