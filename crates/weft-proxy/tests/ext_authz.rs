//! CUSTOM authorization's clients against a real external authorizer: a Python process
//! (`tests/ext_authz/authorizer.py`) serving Envoy's gRPC `envoy.service.auth.v3.Authorization/
//! Check` with grpcio, from stubs that grpcio-tools generates from weft's own .proto, and Envoy's
//! HTTP authorization service semantics with http.server. Every check goes through the proxy's
//! entry point, `weft_proxy::authz::custom::check`, over real sockets.
//!
//! grpcio and grpcio-tools are installed into a venv under `target/` on first run (`python3 -m
//! venv`, then `pip install`); the tests skip, saying so, only when PyPI cannot be reached.
//! `scripts/test.sh` installs python3 and its venv module when they are missing.

use http::{HeaderMap, Request, StatusCode};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use weft_api::ext_authz::ExtensionProvider;
use weft_proxy::authz::custom::{check, CheckContext, Decision, Denial};
use weft_proxy::authz::ext::Providers;

/// The releases the authorizer was written against.
const PACKAGES: &[&str] = &["grpcio==1.85.4", "grpcio-tools==1.85.4"];

const CALLER: &str = "spiffe://cluster.local/ns/default/sa/web";

/// The venv's python with grpcio and grpcio-tools, made on first use; `Err` with the reason when
/// PyPI cannot be reached.
fn python_with_grpcio() -> Result<PathBuf, String> {
    weft_testkit::python::venv(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "ext-authz-venv",
        PACKAGES,
        "grpc, grpc_tools.protoc",
        "the ext_authz tests",
    )
}

/// The authorizer process: ends when its stdin closes (dropped), killed if it does not.
struct Authorizer {
    child: Child,
    grpc: SocketAddr,
    http: SocketAddr,
    /// Where it generated its stubs (removed with it).
    stubs: PathBuf,
}

impl Drop for Authorizer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.stubs);
    }
}

/// Starts the authorizer; `None` (the test skips) when PyPI cannot be reached.
fn authorizer() -> Option<Authorizer> {
    let python = match python_with_grpcio() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("SKIPPED: grpcio could not be installed from PyPI: {why}");
            return None;
        }
    };
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let stubs = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("ext-authz-stubs-{}", std::process::id()));
    let mut child = Command::new(python)
        .arg(here.join("tests/ext_authz/authorizer.py"))
        .arg(here.join("../weft-api/proto"))
        .arg(&stubs)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the authorizer");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let port = |kind: &str| {
        let line =
            rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|e| panic!("authorizer said no {kind} port: {e}"));
        let p = line.strip_prefix(kind).unwrap_or_else(|| panic!("authorizer said {line:?}, not {kind}"));
        SocketAddr::from(([127, 0, 0, 1], p.trim().parse::<u16>().unwrap()))
    };
    let grpc = port("GRPC");
    let http = port("HTTP");
    Some(Authorizer { child, grpc, http, stubs })
}

fn provider(yaml: &str) -> ExtensionProvider {
    let p: ExtensionProvider = serde_saphyr::from_str(yaml).unwrap();
    p.validate("test").unwrap();
    p
}

fn providers(list: &[ExtensionProvider]) -> Providers {
    let p = Providers::new(0);
    p.update(list).unwrap();
    p
}

fn parts(method: &str, path: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = Request::builder().method(method).uri(path).header("host", "api.default.svc:8080");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

async fn decide(p: &Providers, name: &str, req: &http::request::Parts) -> Decision {
    let ctx = CheckContext {
        providers: p,
        source: "127.0.0.1:40000".parse().unwrap(),
        destination: "127.0.0.1:15006".parse().unwrap(),
        source_principal: Some(CALLER),
        destination_principal: Some("spiffe://cluster.local/ns/default/sa/api"),
    };
    check(&ctx, name, req).await
}

fn allowed(d: Decision, headers: &mut HeaderMap) {
    match d {
        Decision::Allow(a) => a.apply(headers),
        Decision::Deny(d) => panic!("denied: {d:?}"),
    }
}

fn denied(d: Decision) -> Denial {
    match d {
        Decision::Deny(d) => d,
        Decision::Allow(a) => panic!("allowed: {a:?}"),
    }
}

/// A loopback port with nothing listening.
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[tokio::test]
async fn grpc_allows_with_the_authorizers_headers_and_describes_the_request_as_envoy_does() {
    let Some(authz) = authorizer() else { return };
    let p = providers(&[provider(&format!("name: opa\nkind: grpc\naddress: {}\ntimeout: 20s\n", authz.grpc))]);
    let req = parts("POST", "/orders?id=7", &[("x-allow", "yes"), ("x-remove-me", "1"), ("x-authz-user", "forged")]);
    let mut headers = req.headers.clone();
    allowed(decide(&p, "opa", &req).await, &mut headers);
    assert_eq!(
        headers["x-authz-user"], CALLER,
        "the caller's SPIFFE ID reached the authorizer, its value replaced the forged one"
    );
    assert_eq!(headers.get_all("x-authz-user").iter().count(), 1);
    assert_eq!(headers["x-seen-path"], "/orders?id=7");
    assert_eq!(headers["x-seen-method"], "POST");
    assert_eq!(headers["x-seen-host"], "api.default.svc:8080");
    assert_eq!(headers["x-seen-port"], "15006");
    assert!(headers.get("x-remove-me").is_none(), "headers_to_remove applied");
    // The same channel serves a second check.
    allowed(decide(&p, "opa", &req).await, &mut headers);
}

#[tokio::test]
async fn grpc_denial_is_the_answer_the_authorizer_gives() {
    let Some(authz) = authorizer() else { return };
    let p = providers(&[provider(&format!("name: opa\nkind: grpc\naddress: {}\ntimeout: 20s\n", authz.grpc))]);
    let d = denied(decide(&p, "opa", &parts("GET", "/admin", &[])).await);
    assert_eq!(d.status, StatusCode::UNAUTHORIZED);
    assert_eq!(d.headers["www-authenticate"], "Bearer realm=\"py\"");
    assert_eq!(d.body, "denied by py");
    assert!(!d.failed);
    assert!(d.reason.contains("not allowed"), "{}", d.reason);
    let r = d.response();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn http_sends_the_chosen_headers_and_a_2xx_allows_with_only_the_listed_headers_upstream() {
    let Some(authz) = authorizer() else { return };
    let p = providers(&[
        provider(&format!(
            "name: ext\nkind: http\naddress: {}\ntimeout: 20s\npathPrefix: /check\nincludeRequestHeadersInCheck: [x-allow]\nheadersToUpstreamOnAllow: [x-authz-user, x-seen-path, x-seen-method, x-seen-host, x-seen-authorization]\n",
            authz.http
        )),
        // The same service, but `x-allow` is not sent to it: it denies.
        provider(&format!("name: plain\nkind: http\naddress: {}\ntimeout: 20s\npathPrefix: /check\n", authz.http)),
    ]);
    let req = parts("PUT", "/items/1?x=y", &[("x-allow", "yes"), ("authorization", "Bearer t")]);
    let mut headers = req.headers.clone();
    allowed(decide(&p, "ext", &req).await, &mut headers);
    assert_eq!(headers["x-authz-user"], "http-user");
    assert_eq!(headers["x-seen-path"], "/check/items/1?x=y", "pathPrefix, then the request's path and query");
    assert_eq!(headers["x-seen-method"], "PUT");
    assert_eq!(headers["x-seen-host"], "api.default.svc:8080");
    assert_eq!(headers["x-seen-authorization"], "Bearer t", "authorization is always sent");
    assert!(headers.get("x-not-forwarded").is_none(), "only headersToUpstreamOnAllow reach the app");

    let d = denied(decide(&p, "plain", &req).await);
    assert_eq!(d.status, StatusCode::UNAUTHORIZED, "x-allow was not sent to the authorizer");
}

#[tokio::test]
async fn http_denial_returns_the_authorizers_status_headers_and_body() {
    let Some(authz) = authorizer() else { return };
    let p = providers(&[provider(&format!(
        "name: ext\nkind: http\naddress: {}\ntimeout: 20s\npathPrefix: /check\nincludeRequestHeadersInCheck: [cookie]\n",
        authz.http
    ))]);
    let d = denied(decide(&p, "ext", &parts("GET", "/", &[("cookie", "session=1")])).await);
    assert_eq!(d.status, StatusCode::UNAUTHORIZED);
    assert_eq!(d.body, "denied by py");
    assert_eq!(d.headers["www-authenticate"], "Bearer realm=\"py\"");
    assert_eq!(d.headers["x-seen-cookie"], "session=1", "every header of the denial by default");
    assert!(d.headers.get("content-length").is_none(), "framing is the proxy's own");
    assert!(!d.failed);
}

#[tokio::test]
async fn an_authorizer_that_is_down_fails_closed_unless_fail_open() {
    let down = closed_port();
    for kind in ["grpc", "http"] {
        let p = providers(&[
            provider(&format!("name: closed\nkind: {kind}\naddress: {down}\ntimeout: 20s\n")),
            provider(&format!("name: open\nkind: {kind}\naddress: {down}\ntimeout: 20s\nfailOpen: true\n")),
        ]);
        let d = denied(decide(&p, "closed", &parts("GET", "/", &[("x-allow", "yes")])).await);
        assert_eq!(d.status, StatusCode::FORBIDDEN, "{kind}");
        assert!(d.failed, "{kind}");
        assert!(d.reason.contains(&down.to_string()), "{kind}: {}", d.reason);
        allowed(decide(&p, "open", &parts("GET", "/", &[])).await, &mut HeaderMap::new());
    }
}

#[tokio::test]
async fn a_slow_authorizer_times_out_and_fails_closed() {
    let Some(authz) = authorizer() else { return };
    let p = providers(&[
        provider(&format!("name: g\nkind: grpc\naddress: {}\ntimeout: 300ms\n", authz.grpc)),
        provider(&format!("name: h\nkind: http\naddress: {}\ntimeout: 300ms\npathPrefix: /check\n", authz.http)),
    ]);
    for name in ["g", "h"] {
        let d = denied(decide(&p, name, &parts("GET", "/slow", &[("x-allow", "yes")])).await);
        assert_eq!(d.status, StatusCode::FORBIDDEN, "{name}");
        assert!(d.failed, "{name}");
        assert!(d.reason.contains("timed out") || d.reason.contains("Timeout"), "{name}: {}", d.reason);
    }
}

#[tokio::test]
async fn an_authorizer_error_fails_closed_with_status_on_error() {
    let Some(authz) = authorizer() else { return };
    let p = providers(&[
        provider(&format!("name: g\nkind: grpc\naddress: {}\ntimeout: 20s\nstatusOnError: 503\n", authz.grpc)),
        provider(&format!(
            "name: h\nkind: http\naddress: {}\ntimeout: 20s\nstatusOnError: 503\npathPrefix: /check\n",
            authz.http
        )),
    ]);
    for name in ["g", "h"] {
        let d = denied(decide(&p, name, &parts("GET", "/error", &[("x-allow", "yes")])).await);
        assert_eq!(d.status, StatusCode::SERVICE_UNAVAILABLE, "{name}");
        assert!(d.failed, "{name}: {}", d.reason);
    }
}

#[tokio::test]
async fn an_undeclared_provider_denies() {
    let p = providers(&[]);
    let d = denied(decide(&p, "nobody", &parts("GET", "/", &[])).await);
    assert_eq!(d.status, StatusCode::FORBIDDEN);
    assert!(d.reason.contains("extensionProviders"), "{}", d.reason);
}
