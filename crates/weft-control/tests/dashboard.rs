//! The dashboard's server (crates/weft-control/src/dashboard): nothing without a session; token
//! login and one-time login URLs; the session's token used for pages and `/api/v1/...` (roles
//! enforced by the API: a read session cannot remove a link); loopback only. The pages in a real
//! browser: crates/weft-cli/tests/dashboard.rs.

mod common;

use bytes::Bytes;
use common::{admin_api, api, tempdir};
use http_body_util::Full;
use std::net::SocketAddr;
use weft_control::{ControlConfig, ControlPlane};
use weft_testkit::http1_request;

async fn start(name: &str) -> ControlPlane {
    let mut cfg = ControlConfig::new(tempdir(name));
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    cfg.dashboard = Some("127.0.0.1:0".parse().unwrap());
    ControlPlane::start(cfg).await.unwrap()
}

struct Resp {
    status: u16,
    headers: http::HeaderMap,
    body: String,
}

async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    extra: &[(&str, &str)],
    body: &str,
) -> Resp {
    let mut b = http::Request::builder().method(method).uri(path).header("host", addr.to_string());
    if let Some(c) = cookie {
        b = b.header("cookie", format!("weft_session={c}"));
    }
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    let resp = http1_request(addr, b.body(Full::new(Bytes::from(body.to_string()))).unwrap()).await.unwrap();
    Resp {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: String::from_utf8_lossy(resp.body()).to_string(),
    }
}

/// Logs in with `token` through the form; the session cookie's value.
async fn login(addr: SocketAddr, token: &str) -> String {
    let r = call(
        addr,
        "POST",
        "/login",
        None,
        &[("content-type", "application/x-www-form-urlencoded")],
        &format!("token={token}&next=%2Fproxies"),
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.headers["location"], "/proxies");
    cookie_of(&r)
}

fn cookie_of(r: &Resp) -> String {
    let c = r.headers.get("set-cookie").expect("a session cookie").to_str().unwrap().to_string();
    assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict"), "{c}");
    c.split(';').next().unwrap().trim_start_matches("weft_session=").to_string()
}

#[tokio::test]
async fn nothing_but_the_login_page_without_a_session() {
    let cp = start("dash-nosession").await;
    let d = cp.dashboard.as_ref().unwrap().addr();
    for path in ["/", "/services", "/topology", "/proxies", "/tap", "/assets/dash.js", "/services/default/api"] {
        let r = call(d, "GET", path, None, &[], "").await;
        assert_eq!(r.status, 303, "{path}");
        assert!(r.headers["location"].to_str().unwrap().starts_with("/login?next="), "{path}");
    }
    let r = call(d, "GET", "/api/v1/proxies", None, &[], "").await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = call(d, "GET", "/api/v1/proxies", Some("not-a-session"), &[], "").await;
    assert_eq!(r.status, 401);
    // An API token in the usual header does not open the dashboard either.
    let auth = format!("Bearer {}", cp.admin_token);
    let r = call(d, "GET", "/api/v1/proxies", None, &[("authorization", &auth)], "").await;
    assert_eq!(r.status, 401);
    let r = call(d, "GET", "/login", None, &[], "").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("name=\"token\""), "{}", r.body);
    assert!(r.headers["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
}

#[tokio::test]
async fn a_token_login_opens_a_session_that_reads_through_the_api() {
    let cp = start("dash-login").await;
    let d = cp.dashboard.as_ref().unwrap().addr();
    let bad = call(d, "POST", "/login", None, &[], "token=wft_nope.nope").await;
    assert_eq!(bad.status, 401);
    assert!(bad.body.contains("token refused"), "{}", bad.body);
    assert!(bad.headers.get("set-cookie").is_none());
    let empty = call(d, "POST", "/login", None, &[], "token=").await;
    assert!(empty.body.contains("token: empty"), "{}", empty.body);

    let c = login(d, &cp.admin_token).await;
    for (path, marker) in [
        ("/", "Clusters and links"),
        ("/services", "<table id=\"services\""),
        ("/topology", "<h1>Topology</h1>"),
        ("/proxies", "<table id=\"proxies\""),
        ("/tap", "id=\"tap-form\""),
    ] {
        let r = call(d, "GET", path, Some(&c), &[], "").await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert!(r.body.contains(marker), "{path}: {}", r.body);
    }
    // The endpoints other parts of the mesh serve later say "no data yet", not an error.
    let r = call(d, "GET", "/services", Some(&c), &[], "").await;
    if !r.body.contains("id=\"edges\"") {
        assert!(r.body.contains("id=\"edges-empty\"") || r.body.contains("No data yet"), "{}", r.body);
    }
    let r = call(d, "GET", "/api/v1/proxies", Some(&c), &[], "").await;
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert!(v["proxies"].is_array(), "{v}");
    // Only /v1/... reaches the API.
    assert_eq!(call(d, "GET", "/api/live", Some(&c), &[], "").await.status, 404);

    // Logging out ends the session.
    let r = call(d, "POST", "/logout", Some(&c), &[], "").await;
    assert_eq!(r.status, 303);
    assert_eq!(call(d, "GET", "/api/v1/proxies", Some(&c), &[], "").await.status, 401);
}

#[tokio::test]
async fn a_read_session_sees_and_cannot_act_an_admin_session_acts() {
    let cp = start("dash-roles").await;
    let d = cp.dashboard.as_ref().unwrap().addr();
    let (status, v) = admin_api(&cp, "POST", "/v1/tokens", r#"{"kind":"read","name":"viewer"}"#).await;
    assert_eq!(status, 200, "{v}");
    let read = v["token"].as_str().unwrap().to_string();
    let (status, v) = admin_api(&cp, "POST", "/v1/apply", "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: shop, namespace: default }\nspec: { ports: [{ port: 80 }] }\n").await;
    assert_eq!(status, 200, "{v}");

    let rc = login(d, &read).await;
    let page = call(d, "GET", "/services/default/shop", Some(&rc), &[], "").await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("class=\"act\""), "a read session is offered no action");
    assert!(call(d, "GET", "/", Some(&rc), &[], "").await.body.contains("need an admin token"));
    // A change without the dashboard's header is refused before the API (a cross-site form).
    let r = call(d, "DELETE", "/api/v1/resources/service/default/shop", Some(&rc), &[], "").await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("x-weft-dashboard"), "{}", r.body);
    // With it, the API refuses the read token.
    let r =
        call(d, "DELETE", "/api/v1/resources/service/default/shop", Some(&rc), &[("x-weft-dashboard", "1")], "").await;
    assert_eq!(r.status, 403, "{}", r.body);

    let ac = login(d, &cp.admin_token).await;
    let page = call(d, "GET", "/services/default/shop", Some(&ac), &[], "").await;
    assert!(page.body.contains("data-url=\"/api/v1/resources/service/default/shop\""), "{}", page.body);
    let r =
        call(d, "DELETE", "/api/v1/resources/service/default/shop", Some(&ac), &[("x-weft-dashboard", "1")], "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (status, _) = admin_api(&cp, "GET", "/v1/resources/service/default/shop", "").await;
    assert_eq!(status, 404);
    // The audit log names the tokens: the refused read and the admin's delete.
    let (_, v) = admin_api(&cp, "GET", "/v1/audit?limit=10", "").await;
    let entries = v["entries"].as_array().unwrap();
    assert!(entries.iter().any(|e| e["token"] == "viewer" && e["status"] == 403), "{v}");
    assert!(entries.iter().any(|e| e["role"] == "admin" && e["method"] == "DELETE" && e["status"] == 200), "{v}");
    let overview = call(d, "GET", "/", Some(&ac), &[], "").await;
    assert!(overview.body.contains("<table id=\"audit\""), "{}", overview.body);

    // Revoking the token ends its sessions.
    let (status, v) = admin_api(&cp, "DELETE", "/v1/tokens/viewer", "").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(call(d, "GET", "/api/v1/proxies", Some(&rc), &[], "").await.status, 401);
}

#[tokio::test]
async fn a_one_time_login_url_works_once() {
    let cp = start("dash-code").await;
    let dash = cp.dashboard.as_ref().unwrap();
    let d = dash.addr();
    let (status, v) = api(&cp, "POST", "/v1/dashboard/login", &cp.admin_token, "").await;
    assert_eq!(status, 200, "{v}");
    let url = v["url"].as_str().unwrap();
    let path = url.strip_prefix(&format!("http://{d}")).unwrap();
    let first = call(d, "GET", &format!("{path}&next=/topology"), None, &[], "").await;
    assert_eq!(first.status, 303, "{}", first.body);
    assert_eq!(first.headers["location"], "/topology");
    let c = cookie_of(&first);
    assert_eq!(call(d, "GET", "/topology", Some(&c), &[], "").await.status, 200);
    let again = call(d, "GET", path, None, &[], "").await;
    assert!(again.headers.get("set-cookie").is_none());
    assert!(again.body.contains("used already or has expired"), "{}", again.body);
    // A bootstrap token may not log in, by URL or form.
    let boot = common::bootstrap_token(&cp, "default/web").await;
    let (status, _) = api(&cp, "POST", "/v1/dashboard/login", &boot, "").await;
    assert_eq!(status, 403);
    let url = dash.login_url(&boot);
    let r = call(d, "GET", url.strip_prefix(&format!("http://{d}")).unwrap(), None, &[], "").await;
    assert!(r.headers.get("set-cookie").is_none(), "{}", r.body);
}

#[tokio::test]
async fn off_loopback_the_dashboard_is_https_or_refused() {
    // With the API in plaintext, a dashboard off loopback is refused.
    let mut cfg = ControlConfig::new(tempdir("dash-plain"));
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    cfg.api_tls.plaintext = true;
    cfg.dashboard = Some("0.0.0.0:0".parse().unwrap());
    let err = ControlPlane::start(cfg).await.err().expect("refused").to_string();
    assert!(err.contains("--api-plaintext") && err.contains("loopback"), "{err}");

    // With the API on TLS (the default), it is served over HTTPS with the API's certificate, and
    // its cookie is `Secure`.
    let mut cfg = ControlConfig::new(tempdir("dash-https"));
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    cfg.dashboard = Some("0.0.0.0:0".parse().unwrap());
    let cp = ControlPlane::start(cfg).await.unwrap();
    let dash = cp.dashboard.as_ref().unwrap();
    assert!(dash.url().starts_with("https://"), "{}", dash.url());
    let addr: SocketAddr = ([127, 0, 0, 1], dash.addr().port()).into();
    let tls = std::sync::Arc::new(cp.api_client_config().unwrap());
    let req = http::Request::post("/login")
        .header("host", addr.to_string())
        .body(Full::new(Bytes::from(format!("token={}", cp.admin_token))))
        .unwrap();
    let resp = weft_testkit::https1_request(addr, tls, "127.0.0.1", req).await.unwrap();
    assert_eq!(resp.status(), 303, "{:?}", resp.body());
    let cookie = resp.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("Secure") && cookie.contains("HttpOnly"), "{cookie}");

    // Without a dashboard, the API says how to get one.
    let mut cfg = ControlConfig::new(tempdir("dash-none"));
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    let cp = ControlPlane::start(cfg).await.unwrap();
    let (status, v) = admin_api(&cp, "POST", "/v1/dashboard/login", "").await;
    assert_eq!(status, 404);
    assert!(v["error"].as_str().unwrap().contains("--dashboard"), "{v}");
}
