//! `GET /v1/diagnose` against a real control plane (with its DNS server) and a sidecar: a healthy
//! mesh has no failure and every check reports; then resources that refer to things that do not
//! exist (a route to a missing backend, policies whose targetRef names nothing, a Telemetry
//! selecting nothing) each become a failure naming the resource and the fix; a read token may
//! ask; a DNS server that does not answer is a failure.

use std::time::Duration;
use weft_control::{ControlConfig, ControlPlane};
use weft_testkit::{eventually, http1_get};

mod common;
use common::{admin_api, api, sidecar, tempdir};

fn doc(kind: &str, name: &str, spec: &str) -> String {
    format!("apiVersion: weft.io/v1alpha1\nkind: {kind}\nmetadata: {{ name: {name} }}\nspec: {spec}\n---\n")
}

async fn diagnose(cp: &ControlPlane, token: &str) -> Vec<serde_json::Value> {
    let (status, v) = api(cp, "GET", "/v1/diagnose", token, "").await;
    assert_eq!(status, 200, "{v}");
    v["findings"].as_array().cloned().unwrap_or_default()
}

fn failures(findings: &[serde_json::Value]) -> Vec<String> {
    findings.iter().filter(|f| f["status"] == "fail").map(|f| f["message"].as_str().unwrap_or("").to_string()).collect()
}

#[tokio::test]
async fn a_healthy_mesh_passes_and_broken_references_fail_with_a_fix() {
    weft_testkit::init_tracing();
    let mut cfg = ControlConfig::new(tempdir("diagnose"));
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    cfg.dns = Some("127.0.0.1:0".parse().unwrap());
    let cp = ControlPlane::start(cfg).await.expect("control plane");
    let app = weft_testkit::http_echo("api").await;
    let server = sidecar(&cp, "default/api", Some("api-1"), "inbound: { listen: \"127.0.0.1:0\" }\n").await;
    let client =
        sidecar(&cp, "default/web", None, "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: api }] }\n")
            .await;
    let resources = format!(
        "{}{}",
        doc("Service", "api", &format!("{{ ports: [{{ port: {}, protocol: http1 }}] }}", app.port())),
        doc(
            "Workload",
            "api-1",
            &format!(
                "{{ service: api, address: 127.0.0.1, port: {}, sidecar: \"{}\" }}",
                app.port(),
                server.addrs.inbound.unwrap()
            )
        ),
    );
    let (status, v) = admin_api(&cp, "POST", "/v1/apply", &resources).await;
    assert_eq!(status, 200, "{v}");
    let upstream = client.addrs.upstreams[0];
    eventually("the client routes to api", Duration::from_secs(10), || async move {
        (http1_get(upstream, "/ready").await.ok()?.status() == 200).then_some(())
    })
    .await;

    // Healthy: no failure, and every check says something. A read token may ask.
    let (status, v) = api(&cp, "POST", "/v1/tokens", &cp.admin_token, r#"{"kind":"read","name":"viewer"}"#).await;
    assert_eq!(status, 200, "{v}");
    let read = v["token"].as_str().unwrap().to_string();
    let findings = eventually("a healthy diagnosis", Duration::from_secs(10), || {
        let (cp, read) = (&cp, &read);
        async move {
            let f = diagnose(cp, read).await;
            failures(&f).is_empty().then_some(f)
        }
    })
    .await;
    for check in ["control-plane", "certificates", "links", "proxies", "dns", "resources"] {
        assert!(findings.iter().any(|f| f["check"] == check), "{check} missing: {findings:?}");
    }
    let dns = findings.iter().find(|f| f["check"] == "dns").unwrap();
    assert!(dns["message"].as_str().unwrap().contains("api.default.svc.cluster.local"), "{dns}");
    let proxies = findings.iter().find(|f| f["check"] == "proxies").unwrap();
    assert!(proxies["message"].as_str().unwrap().starts_with("2 connected"), "{proxies}");

    // Broken references: each a failure naming the resource, with a fix.
    let broken = format!(
        "{}{}{}",
        doc("HTTPRoute", "to-ghost", "{ parentRefs: [{ name: api }], rules: [{ backendRefs: [{ name: ghost }] }] }"),
        doc(
            "AuthorizationPolicy",
            "for-nobody",
            "{ targetRef: { kind: Service, name: nobody }, action: DENY, rules: [{}] }"
        ),
        doc(
            "Telemetry",
            "logs-gone",
            "{ targetRef: { kind: Workload, name: gone-1 }, accessLogging: { enabled: true } }"
        ),
    );
    let (status, v) = admin_api(&cp, "POST", "/v1/apply", &broken).await;
    assert_eq!(status, 200, "{v}");
    let findings = eventually("three failures", Duration::from_secs(10), || {
        let cp = &cp;
        async move {
            let f = diagnose(cp, &cp.admin_token).await;
            (failures(&f).len() >= 3).then_some(f)
        }
    })
    .await;
    let fails = failures(&findings);
    for (resource, missing) in [
        ("HTTPRoute default/to-ghost", "ghost.default"),
        ("AuthorizationPolicy default/for-nobody", "Service default/nobody"),
        ("Telemetry default/logs-gone", "Workload default/gone-1"),
    ] {
        assert!(fails.iter().any(|m| m.contains(resource) && m.contains(missing)), "{resource}: {fails:?}");
    }
    assert!(
        findings.iter().filter(|f| f["status"] == "fail").all(|f| !f["fix"].as_str().unwrap_or("").is_empty()),
        "every failure has a fix: {findings:?}"
    );
}
