//! Access to the control plane's HTTP API, attacked as a token holder would: roles (admin,
//! operator, read, namespace writer), tokens recorded by their SHA-256 with expiry and
//! revocation, and the audit log of every write. Real control planes on 127.0.0.1.

use std::time::Duration;
use weft_api::proxy::Control;
use weft_control::{ControlConfig, ControlPlane};
use weft_testkit::eventually;

mod common;
use common::{api, tempdir};

const DEADLINE: Duration = Duration::from_secs(10);

async fn control(dir: &std::path::Path) -> ControlPlane {
    let mut cfg = ControlConfig::new(dir.to_path_buf());
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    ControlPlane::start(cfg).await.expect("control plane")
}

/// Creates a token with the admin token; returns (token, id).
async fn token(cp: &ControlPlane, body: &str) -> (String, String) {
    let (status, v) = api(cp, "POST", "/v1/tokens", &cp.admin_token, body).await;
    assert_eq!(status, 200, "{body}: {v}");
    (v["token"].as_str().unwrap().to_string(), v["id"].as_str().unwrap().to_string())
}

fn service(ns: &str, name: &str) -> String {
    format!("apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: {name}, namespace: {ns} }}\nspec: {{}}\n")
}

const MESH: &str = "apiVersion: weft.io/v1alpha1\nkind: MeshConfig\nmetadata: { name: mesh, namespace: default }\nspec: { trustDomain: cluster.local }\n";

#[tokio::test]
async fn each_role_may_do_its_part_and_nothing_more() {
    weft_testkit::init_tracing();
    let dir = tempdir("roles");
    let cp = control(&dir).await;
    let (read, _) = token(&cp, r#"{"kind":"read-only","name":"dashboard"}"#).await;
    let (writer, _) = token(&cp, r#"{"kind":"writer","name":"shop-ci","namespaces":["shop"]}"#).await;
    let (operator, _) = token(&cp, r#"{"kind":"operator","name":"ops"}"#).await;

    // Read-only: reads, never writes.
    assert_eq!(api(&cp, "GET", "/v1/resources", &read, "").await.0, 200);
    let (status, v) = api(&cp, "POST", "/v1/apply", &read, &service("shop", "a")).await;
    assert_eq!(status, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("writer, operator or admin token"), "{v}");
    assert_eq!(api(&cp, "DELETE", "/v1/resources/Service/shop/a", &read, "").await.0, 403);

    // A namespace writer: its namespace, nowhere else, not even in the same batch, and not the
    // mesh-wide MeshConfig.
    let (status, v) = api(&cp, "POST", "/v1/apply", &writer, &service("shop", "cart")).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = api(&cp, "POST", "/v1/apply", &writer, &service("default", "web")).await;
    assert_eq!(status, 403, "{v}");
    let err = v["error"].as_str().unwrap();
    assert!(err.contains("[\"shop\"]") && err.contains("not \"default\""), "{err}");
    let both = format!("{}---\n{}", service("shop", "b"), service("default", "c"));
    assert_eq!(api(&cp, "POST", "/v1/apply", &writer, &both).await.0, 403, "a batch touching another namespace");
    assert_eq!(api(&cp, "GET", "/v1/resources/Service/shop/b", &cp.admin_token, "").await.0, 404, "nothing applied");
    let (status, v) = api(&cp, "POST", "/v1/apply", &writer, &MESH.replace("default", "shop")).await;
    assert_eq!(status, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("MeshConfig is mesh-wide"), "{v}");
    assert_eq!(api(&cp, "POST", "/v1/apply", &cp.admin_token, &service("default", "web")).await.0, 200);
    assert_eq!(api(&cp, "DELETE", "/v1/resources/Service/default/web", &writer, "").await.0, 403);
    assert_eq!(api(&cp, "DELETE", "/v1/resources/Service/shop/cart", &writer, "").await.0, 200);
    // Registrations are not one namespace's resources.
    assert_eq!(api(&cp, "PUT", "/v1/agent/service/register", &writer, r#"{"Name":"x","Port":1}"#).await.0, 403);

    // Operator: every resource, not tokens, the CA or the audit log.
    assert_eq!(api(&cp, "POST", "/v1/apply", &operator, &service("default", "api")).await.0, 200);
    assert_eq!(api(&cp, "DELETE", "/v1/resources/Service/default/api", &operator, "").await.0, 200);
    for (method, path, body) in [
        ("POST", "/v1/tokens", r#"{"kind":"admin"}"#),
        ("GET", "/v1/tokens", ""),
        ("DELETE", "/v1/tokens/dashboard", ""),
        ("POST", "/v1/ca/rotate", ""),
        ("GET", "/v1/audit", ""),
        ("POST", "/v1/links/credential", "{}"),
    ] {
        let (status, v) = api(&cp, method, path, &operator, body).await;
        assert_eq!(status, 403, "operator {method} {path}: {v}");
    }
    // Writers and readers cannot make tokens either (no escalation).
    for t in [&read, &writer] {
        assert_eq!(api(&cp, "POST", "/v1/tokens", t, r#"{"kind":"admin"}"#).await.0, 403);
    }

    // Bad token requests name the field.
    for (body, field) in [
        (r#"{"kind":"writer"}"#, "namespaces:"),
        (r#"{"kind":"writer","namespaces":["weft-system"]}"#, "namespaces:"),
        (r#"{"kind":"writer","namespaces":["Not A Label"]}"#, "namespaces:"),
        (r#"{"kind":"read","namespaces":["shop"]}"#, "namespaces:"),
        (r#"{"kind":"read","name":"has space"}"#, "name:"),
        (r#"{"kind":"root"}"#, "kind:"),
    ] {
        let (status, v) = api(&cp, "POST", "/v1/tokens", &cp.admin_token, body).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().starts_with(field), "{body}: {v}");
    }
}

#[tokio::test]
async fn tokens_are_kept_hashed_and_a_revoked_or_expired_one_is_refused() {
    weft_testkit::init_tracing();
    let dir = tempdir("revoke");
    let cp = control(&dir).await;
    let (read, read_id) = token(&cp, r#"{"kind":"read","name":"laptop"}"#).await;
    let (ops, _) = token(&cp, r#"{"kind":"operator","name":"ops"}"#).await;
    let (boot, _) = token(&cp, r#"{"kind":"bootstrap","identity":"default/web","name":"web"}"#).await;
    assert_eq!(api(&cp, "GET", "/v1/resources", &read, "").await.0, 200);

    // Only the SHA-256 is stored; the list shows names, roles and ids, never a token.
    let file = std::fs::read_to_string(dir.join("tokens.json")).unwrap();
    for t in [&read, &ops, &boot, &cp.admin_token] {
        assert!(!file.contains(t.as_str()), "a token in tokens.json");
    }
    let sha = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, read.as_bytes());
    let sha: String = sha.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert!(file.contains(&sha), "its SHA-256 is");
    let (_, list) = api(&cp, "GET", "/v1/tokens", &cp.admin_token, "").await;
    let mut names: Vec<&str> = list["tokens"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["bootstrap-admin", "laptop", "ops", "web"], "{list}");
    let laptop = list["tokens"].as_array().unwrap().iter().find(|t| t["name"] == "laptop").unwrap();
    assert_eq!((laptop["role"].as_str(), laptop["id"].as_str()), (Some("read"), Some(read_id.as_str())));
    assert!(!list.to_string().contains(&read), "the list shows no token");

    // Revoked by id: refused at once, with a reason; revoked by name likewise.
    let (status, v) = api(&cp, "DELETE", &format!("/v1/tokens/{read_id}"), &cp.admin_token, "").await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = api(&cp, "GET", "/v1/resources", &read, "").await;
    assert_eq!(status, 401, "{v}");
    assert!(v["error"].as_str().unwrap().contains("revoked"), "{v}");
    assert_eq!(api(&cp, "DELETE", "/v1/tokens/ops", &cp.admin_token, "").await.0, 200);
    assert_eq!(api(&cp, "POST", "/v1/apply", &ops, &service("default", "x")).await.0, 401);
    let (status, v) = api(&cp, "DELETE", "/v1/tokens/nobody", &cp.admin_token, "").await;
    assert_eq!(status, 404, "{v}");
    // A revoked bootstrap token gets no certificate.
    assert!(weft_proxy::control::sign(&Control::new(cp.grpc_addr, boot.clone()), 0).await.is_ok());
    assert_eq!(api(&cp, "DELETE", "/v1/tokens/web", &cp.admin_token, "").await.0, 200);
    let err = weft_proxy::control::sign(&Control::new(cp.grpc_addr, boot.clone()), 0).await.unwrap_err();
    assert!(err.to_string().contains("revoked"), "{err}");

    // A token past its expiry is refused (polled: it expires within two seconds).
    let (short, _) = token(&cp, r#"{"kind":"read","ttl":"1s"}"#).await;
    let v = eventually("the short token expires", DEADLINE, || async {
        let (status, v) = api(&cp, "GET", "/v1/resources", &short, "").await;
        (status == 401).then_some(v)
    })
    .await;
    assert!(v["error"].as_str().unwrap().contains("expired"), "{v}");

    // Revocations survive a restart; the admin token stays the same.
    let admin = cp.admin_token.clone();
    cp.shutdown().await;
    let cp = control(&dir).await;
    assert_eq!(cp.admin_token, admin);
    assert_eq!(api(&cp, "GET", "/v1/resources", &read, "").await.0, 401);
}

/// A request without an `authorization` header (the token, if any, in the query string).
async fn raw(cp: &ControlPlane, method: &str, path: &str, body: &str) -> u16 {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "cp")
        .body(http_body_util::Full::new(bytes::Bytes::from(body.to_string())))
        .unwrap();
    weft_testkit::api_request(cp.api_addr, cp.api_client_tls(), req).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn every_write_is_in_the_audit_log_with_the_tokens_name() {
    weft_testkit::init_tracing();
    let dir = tempdir("audit");
    let cp = control(&dir).await;
    let (ci, ci_id) = token(&cp, r#"{"kind":"writer","name":"shop-ci","namespaces":["shop"]}"#).await;
    let (read, _) = token(&cp, r#"{"kind":"read","name":"viewer"}"#).await;
    assert_eq!(api(&cp, "POST", "/v1/apply", &ci, &service("shop", "cart")).await.0, 200);
    assert_eq!(api(&cp, "POST", "/v1/apply", &read, &service("shop", "evil")).await.0, 403);
    // A token in the query string (Consul's form) is not written to the log.
    assert_eq!(raw(&cp, "DELETE", &format!("/v1/resources/Service/shop/cart?token={ci}"), "").await, 200);
    assert_eq!(raw(&cp, "POST", "/v1/apply", &service("shop", "anon")).await, 401);
    assert_eq!(api(&cp, "GET", "/v1/resources", &ci, "").await.0, 200, "reads are not audited");

    let (status, v) = api(&cp, "GET", "/v1/audit", &cp.admin_token, "").await;
    assert_eq!(status, 200, "{v}");
    let entries = v["entries"].as_array().unwrap();
    let summary: Vec<(String, String, u64)> = entries
        .iter()
        .map(|e| {
            (e["token"].as_str().unwrap().into(), e["path"].as_str().unwrap().into(), e["status"].as_u64().unwrap())
        })
        .collect();
    let expect = |t: &str, p: &str, s: u64| (t.to_string(), p.to_string(), s);
    assert_eq!(
        summary,
        [
            expect("bootstrap-admin", "/v1/tokens", 200),
            expect("bootstrap-admin", "/v1/tokens", 200),
            expect("shop-ci", "/v1/apply", 200),
            expect("viewer", "/v1/apply", 403),
            expect("shop-ci", "/v1/resources/Service/shop/cart", 200),
            expect("(none)", "/v1/apply", 401),
        ],
        "{v}"
    );
    assert_eq!(entries[2]["tokenId"].as_str(), Some(ci_id.as_str()));
    assert_eq!(entries[2]["role"], "writer");
    assert!(entries[2]["detail"].as_str().unwrap().contains("shop"), "{v}");
    assert!(entries[0]["detail"].as_str().unwrap().contains("shop-ci"), "{v}");
    assert!(!v.to_string().contains(&ci), "no token in the audit log");

    // The same entries in the data directory's file, one JSON line each, only the owner can read.
    let file = std::fs::read_to_string(dir.join("audit.log")).unwrap();
    assert_eq!(file.lines().count(), entries.len(), "{file}");
    assert!(!file.contains(&ci));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(dir.join("audit.log")).unwrap().permissions().mode() & 0o777, 0o600);

    // Only an admin reads it.
    assert_eq!(api(&cp, "GET", "/v1/audit", &read, "").await.0, 403);
}
