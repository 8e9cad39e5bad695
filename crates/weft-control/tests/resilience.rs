//! ResiliencePolicy end to end on 127.0.0.1: a control plane, a client sidecar and a server
//! sidecar in front of an app that fails on purpose and counts what reaches it. Retries recover a
//! 503 rate; the budget caps them under a full outage; a per-try timeout moves on; POST and large
//! bodies are sent once; fault rates hold; a delay is applied; the rate limit answers 429 past its
//! bucket, per caller identity when asked; bad input is refused naming the field; a policy for a
//! missing Service is accepted and says so. gRPC: an abort is a trailers-only status a real gRPC
//! client reads; a trailers-only UNAVAILABLE is retried, a status in real trailers is not, and a
//! streaming call is never held back for a copy.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weft_control::{ControlConfig, ControlPlane};
use weft_proxy::Proxy;
use weft_testkit::{eventually, http1_get};

mod common;
use common::{admin_api, metric, sidecar, tempdir};

/// Requests that reached the app, by path, and the body length of the last one.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<(HashMap<String, u64>, usize)>>);

impl Seen {
    fn count(&self, path: &str) -> u64 {
        self.0.lock().unwrap().0.get(path).copied().unwrap_or(0)
    }
    fn last_body(&self) -> usize {
        self.0.lock().unwrap().1
    }
}

/// `/flaky`: every third request (the 1st, 4th...) is 503. `/down`: always 503. `/slow-once`:
/// the first request hangs for a minute, the others answer at once. `/hang`: every request
/// hangs for a minute. Anything else: 200.
async fn app() -> (SocketAddr, Seen) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Seen::default();
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = l.accept().await else { return };
            let s = s.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let s = s.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let body = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
                        let n = {
                            let mut g = s.0.lock().unwrap();
                            g.1 = body;
                            let n = g.0.entry(path.clone()).or_default();
                            *n += 1;
                            *n
                        };
                        let status = match path.as_str() {
                            "/flaky" if n % 3 == 1 => 503,
                            "/down" => 503,
                            "/hang" => {
                                tokio::time::sleep(Duration::from_secs(60)).await;
                                200
                            }
                            "/slow-once" if n == 1 => {
                                tokio::time::sleep(Duration::from_secs(60)).await;
                                200
                            }
                            _ => 200,
                        };
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder().status(status).body(Full::new(Bytes::from("ok"))).unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    (addr, seen)
}

struct Mesh {
    cp: ControlPlane,
    dir: std::path::PathBuf,
    seen: Seen,
    server: Proxy,
    client: Proxy,
    upstream: SocketAddr,
}

async fn mesh(name: &str) -> Mesh {
    weft_testkit::init_tracing();
    let dir = tempdir(name);
    let mut cfg = ControlConfig::new(dir.clone());
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    let cp = ControlPlane::start(cfg).await.expect("control plane");
    let (app, seen) = app().await;
    let server = sidecar(&cp, "default/api", Some("api-1"), "inbound: { listen: \"127.0.0.1:0\" }\n").await;
    let client =
        sidecar(&cp, "default/web", None, "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: api }] }\n")
            .await;
    let resources = format!(
        "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: api }}\nspec: {{ ports: [{{ port: {}, protocol: http1 }}] }}\n---\n\
         apiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: api-1 }}\nspec: {{ service: api, address: 127.0.0.1, port: {}, sidecar: \"{}\" }}\n",
        app.port(),
        app.port(),
        server.addrs.inbound.unwrap()
    );
    let (status, v) = admin_api(&cp, "POST", "/v1/apply", &resources).await;
    assert_eq!(status, 200, "{v}");
    let upstream = client.addrs.upstreams[0];
    eventually("the client routes to api", Duration::from_secs(10), || async move {
        (http1_get(upstream, "/ready").await.ok()?.status() == 200).then_some(())
    })
    .await;
    Mesh { cp, dir, seen, server, client, upstream }
}

impl Mesh {
    /// Applies the ResiliencePolicy `api` with `spec` (after `targetRef`) and waits until `proxy`
    /// shows it in `/config_dump` (`at`: the JSON pointer of the policy there).
    async fn policy(&self, spec: &str, on_server: bool) {
        let doc = format!(
            "apiVersion: weft.io/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{ name: api }}\nspec: {{ targetRef: {{ kind: Service, name: api }}, {spec} }}\n"
        );
        let (status, v) = admin_api(&self.cp, "POST", "/v1/apply", &doc).await;
        assert_eq!(status, 200, "{v}");
        let (_, stored) = admin_api(&self.cp, "GET", "/v1/resources/ResiliencePolicy/default/api", "").await;
        let want = stored["spec"].clone();
        let proxy = if on_server { &self.server } else { &self.client };
        let admin = proxy.addrs.admin.unwrap();
        let want = &want;
        eventually("the proxy has the policy", Duration::from_secs(10), || async move {
            let r = http1_get(admin, "/config_dump").await.ok()?;
            let v: serde_json::Value = serde_json::from_slice(r.body()).ok()?;
            let got = if on_server {
                v["inbound_resilience"].clone()
            } else {
                v["routes"].as_array()?.iter().find(|s| s["name"] == "api")?["resilience"].clone()
            };
            let same = ["retry", "timeouts", "faults", "rateLimit"].iter().all(|k| {
                let w = &want[*k];
                // The server gets the rate limit only.
                (on_server && *k != "rateLimit") || got[*k] == *w
            });
            (same && got["policy"] == "default/api").then_some(())
        })
        .await;
    }

    async fn send(&self, method: &str, path: &str, body: Bytes) -> u16 {
        let req =
            http::Request::builder().method(method).uri(path).header("host", "api").body(Full::new(body)).unwrap();
        weft_testkit::http1_request(self.upstream, req).await.expect("a response").status().as_u16()
    }

    async fn get(&self, path: &str) -> u16 {
        self.send("GET", path, Bytes::new()).await
    }

    fn client_metric(&self, name: &str) -> f64 {
        metric(&self.client.metrics_text(), name, &["service=\"api.default\""])
    }

    fn done(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_recover_a_503_rate_and_the_budget_caps_them_under_an_outage() {
    let m = mesh("resilience-retry").await;
    m.policy(
        "retry: { attempts: 2, retryOn: [5xx], backoff: { base: 1ms, max: 5ms }, budget: { ratio: 1, minPerSecond: 100 } }, timeouts: { request: 2s, perTry: 1s }",
        false,
    )
    .await;

    // One request in three fails at the app; each is retried once and succeeds.
    for i in 0..60 {
        assert_eq!(m.get("/flaky").await, 200, "request {i}");
    }
    // The app fails its 1st, 4th, 7th... request: every other call fails once.
    assert_eq!(m.seen.count("/flaky"), 90, "60 requests, 30 of them retried once");
    assert_eq!(m.client_metric("weft_retries_total"), 30.0);

    // A try that hangs is abandoned at its per-try timeout and retried.
    assert_eq!(m.get("/slow-once").await, 200);
    assert_eq!(m.seen.count("/slow-once"), 2);
    assert_eq!(metric(&m.client.metrics_text(), "weft_request_timeouts_total", &["timeout=\"per-try\""]), 1.0);
    // Every try hangs: the request timeout (2 s) ends it during the second try (1 s each).
    let req = http::Request::get("/hang").header("host", "api").body(Full::new(Bytes::new())).unwrap();
    let resp = weft_testkit::http1_request(m.upstream, req).await.unwrap();
    assert_eq!(resp.status(), 504);
    assert_eq!(resp.headers()["x-weft-error"], "request-timeout");
    assert_eq!(m.seen.count("/hang"), 2);

    // Not idempotent: sent once.
    assert_eq!(m.send("POST", "/down", Bytes::from("x")).await, 503);
    assert_eq!(m.seen.count("/down"), 1);
    // Idempotent with a small body: retried, the body intact each time.
    assert_eq!(m.send("PUT", "/down", Bytes::from(vec![7u8; 1000])).await, 503);
    assert_eq!(m.seen.count("/down"), 4, "1 + 3 tries");
    assert_eq!(m.seen.last_body(), 1000);
    // A body over maxBodyBytes (64 KiB by default): sent once, whole.
    assert_eq!(m.send("PUT", "/down", Bytes::from(vec![7u8; 100_000])).await, 503);
    assert_eq!(m.seen.count("/down"), 5);
    assert_eq!(m.seen.last_body(), 100_000);

    // A full outage under a tight budget: retries add at most 20 % plus 1/s over the window.
    m.policy("retry: { attempts: 3, retryOn: [5xx], backoff: { base: 1ms, max: 2ms }, budget: { ratio: 0.2, minPerSecond: 1, window: 10s } }", false)
        .await;
    let before = m.seen.count("/down");
    let started = Instant::now();
    let n = 200;
    for _ in 0..n {
        assert_eq!(m.get("/down").await, 503);
    }
    let upstream = m.seen.count("/down") - before;
    // The window is 10 s: were the loop slower, older requests and retries would leave it and
    // the bound would be per window; it is stated for this run's length.
    let windows = started.elapsed().as_secs() / 10 + 1;
    let bound = n + n / 5 + 10 * windows;
    assert!(upstream <= bound, "{upstream} requests reached the app for {n} calls (bound {bound})");
    assert!(upstream > n, "some retries were made: {upstream}");
    assert!(m.client_metric("weft_retry_budget_exhausted_total") > 0.0);
    // Without the budget it would have been 4 × 200 = 800.
    m.done();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_rate_limits_bad_input_and_missing_targets() {
    let m = mesh("resilience-faults").await;
    m.policy(
        "faults: [{ match: { pathPrefix: /fault }, abort: { httpStatus: 503, percent: 30 } }, { match: { pathPrefix: /delay }, delay: { fixed: 200ms, percent: 100 } }]",
        false,
    )
    .await;

    // Abort at 30 %: over 600 requests the sd is 11.2; ±60 is over 5 sd.
    let n = 600;
    let mut aborted = 0;
    for _ in 0..n {
        match m.get("/fault/x").await {
            503 => aborted += 1,
            200 => {}
            other => panic!("status {other}"),
        }
    }
    assert!((120..=240).contains(&aborted), "{aborted} of {n} aborted, expected 180 ± 60");
    assert_eq!(m.seen.count("/fault/x"), n - aborted, "an aborted request never reaches the app");
    let faults =
        |fault: &str| metric(&m.client.metrics_text(), "weft_faults_injected_total", &[&format!("fault=\"{fault}\"")]);
    assert_eq!(faults("abort"), aborted as f64);
    // Outside the match: untouched.
    for _ in 0..20 {
        assert_eq!(m.get("/other").await, 200);
    }
    assert_eq!(faults("abort"), aborted as f64);
    // The delay holds the request at least its time.
    let t = Instant::now();
    assert_eq!(m.get("/delay").await, 200);
    assert!(t.elapsed() >= Duration::from_millis(200), "{:?}", t.elapsed());
    assert_eq!(faults("delay"), 1.0);

    // Rate limit at the server's proxy: 5 tokens, refilled hourly.
    m.policy("rateLimit: { maxTokens: 5, fillInterval: 1h }", true).await;
    let mut codes = vec![];
    for _ in 0..8 {
        codes.push(m.get("/limited").await);
    }
    assert_eq!(codes, vec![200, 200, 200, 200, 200, 429, 429, 429]);
    assert_eq!(metric(&m.server.metrics_text(), "weft_rate_limited_total", &["service=\"api.default\""]), 3.0);
    assert_eq!(m.seen.count("/limited"), 5);

    // Bad input: refused, naming the field, nothing applied.
    for (spec, field) in [
        ("retry: { attempts: 0 }", "spec.retry.attempts"),
        ("retry: { attempts: -2 }", "spec.retry.attempts"),
        ("retry: { retryOn: [sometimes] }", "spec.retry.retryOn"),
        ("faults: [{ abort: { httpStatus: 503, percent: 150 } }]", "spec.faults[0].abort.percent"),
        ("timeouts: { request: 0s }", "spec.timeouts.request"),
        ("rateLimit: { maxTokens: 0, fillInterval: 1s }", "spec.rateLimit.maxTokens"),
    ] {
        let doc = format!(
            "apiVersion: weft.io/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{ name: api }}\nspec: {{ targetRef: {{ kind: Service, name: api }}, {spec} }}\n"
        );
        let (status, v) = admin_api(&m.cp, "POST", "/v1/apply", &doc).await;
        assert_eq!(status, 400, "{spec}: {v}");
        assert!(v.to_string().contains(field), "{spec}: {v}");
    }
    let (_, stored) = admin_api(&m.cp, "GET", "/v1/resources/ResiliencePolicy/default/api", "").await;
    assert_eq!(stored["spec"]["rateLimit"]["maxTokens"], 5, "the last good policy stays: {stored}");
    assert_eq!(stored["status"]["conditions"][0]["reason"], "Accepted", "{stored}");

    // A policy for a Service that does not exist (yet): accepted, and its status says so.
    let ghost = "apiVersion: weft.io/v1alpha1\nkind: ResiliencePolicy\nmetadata: { name: ghost }\nspec: { targetRef: { kind: Service, name: ghost }, retry: { attempts: 1 } }\n";
    let (status, v) = admin_api(&m.cp, "POST", "/v1/apply", ghost).await;
    assert_eq!(status, 200, "{v}");
    let (_, stored) = admin_api(&m.cp, "GET", "/v1/resources/ResiliencePolicy/default/ghost", "").await;
    let c = &stored["status"]["conditions"][0];
    assert_eq!((c["status"].as_str(), c["reason"].as_str()), (Some("False"), Some("TargetNotFound")), "{stored}");
    m.done();
}

/// Waits until the client's `/config_dump` shows, for rule `rule` of the HTTPRoute on `api`,
/// the policy `policy` (`None`: no policy of its own).
async fn rule_policy_in_force(m: &Mesh, rule: &str, policy: Option<&str>) {
    let admin = m.client.addrs.admin.unwrap();
    eventually("the client has the rule's policy", Duration::from_secs(10), || async move {
        let r = http1_get(admin, "/config_dump").await.ok()?;
        let v: serde_json::Value = serde_json::from_slice(r.body()).ok()?;
        let api = v["routes"].as_array()?.iter().find(|s| s["name"] == "api")?.clone();
        let entry = api["routes"]["http"].as_array()?.iter().find(|e| e["rule"] == rule)?.clone();
        (entry["resilience"]["policy"].as_str() == policy).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_policy_applies_to_its_rule_only_and_wins_over_the_service_policy() {
    let m = mesh("resilience-rule").await;
    let apply = |doc: String| {
        let cp = &m.cp;
        async move {
            let (status, v) = admin_api(cp, "POST", "/v1/apply", &doc).await;
            assert_eq!(status, 200, "{v}\n{doc}");
        }
    };
    apply(
        "apiVersion: weft.io/v1alpha1\nkind: HTTPRoute\nmetadata: { name: api-rules }\nspec:\n  parentRefs: [{ name: api }]\n  rules:\n    - name: broken\n      matches: [{ path: { type: PathPrefix, value: /broken } }]\n      backendRefs: [{ name: api }]\n    - name: fine\n      backendRefs: [{ name: api }]\n"
            .to_string(),
    )
    .await;
    let policy = |name: &str, target: &str, status: u16| {
        format!(
            "apiVersion: weft.io/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{ name: {name} }}\nspec: {{ targetRef: {target}, faults: [{{ abort: {{ httpStatus: {status}, percent: 100 }} }}] }}\n"
        )
    };
    apply(policy("broken-fault", "{ kind: HTTPRoute, name: api-rules, sectionName: broken }", 418)).await;
    rule_policy_in_force(&m, "broken", Some("default/broken-fault")).await;
    let (_, stored) = admin_api(&m.cp, "GET", "/v1/resources/ResiliencePolicy/default/broken-fault", "").await;
    assert_eq!(stored["status"]["conditions"][0]["reason"], "Accepted", "{stored}");

    // Every request of rule `broken` is aborted here; rule `fine`'s reach the app untouched.
    for i in 0..20 {
        assert_eq!(m.get("/broken/x").await, 418, "request {i}");
        assert_eq!(m.get("/fine").await, 200, "request {i}");
    }
    assert_eq!(m.seen.count("/broken/x"), 0, "an aborted request never reaches the app");
    assert_eq!(m.seen.count("/fine"), 20);

    // A Service policy aborting everything with 502: rule `broken` keeps its own policy (the
    // rule's wins), rule `fine`, with none of its own, takes the Service's.
    apply(policy("api", "{ kind: Service, name: api }", 502)).await;
    let admin = m.client.addrs.admin.unwrap();
    eventually("the client has the Service policy", Duration::from_secs(10), || async move {
        let r = http1_get(admin, "/config_dump").await.ok()?;
        let v: serde_json::Value = serde_json::from_slice(r.body()).ok()?;
        let api = v["routes"].as_array()?.iter().find(|s| s["name"] == "api")?.clone();
        (api["resilience"]["policy"] == "default/api").then_some(())
    })
    .await;
    for i in 0..10 {
        assert_eq!(m.get("/broken/x").await, 418, "request {i}");
        assert_eq!(m.get("/fine").await, 502, "request {i}");
    }
    assert_eq!(m.seen.count("/fine"), 20);

    // A policy naming a rule the route does not have: stored, not applied, and its status
    // names what is missing.
    apply(policy("typo", "{ kind: HTTPRoute, name: api-rules, sectionName: brokn }", 503)).await;
    let (_, stored) = admin_api(&m.cp, "GET", "/v1/resources/ResiliencePolicy/default/typo", "").await;
    let c = &stored["status"]["conditions"][0];
    assert_eq!((c["status"].as_str(), c["reason"].as_str()), (Some("False"), Some("TargetNotFound")), "{stored}");
    let msg = c["message"].as_str().unwrap();
    assert!(msg.contains("\"brokn\"") && msg.contains("broken, fine"), "{msg}");
    // And one naming a route that does not exist.
    apply(policy("nowhere", "{ kind: HTTPRoute, name: ghost-route }", 503)).await;
    let (_, stored) = admin_api(&m.cp, "GET", "/v1/resources/ResiliencePolicy/default/nowhere", "").await;
    let c = &stored["status"]["conditions"][0];
    assert_eq!(c["reason"], "TargetNotFound", "{stored}");
    assert!(c["message"].as_str().unwrap().contains("HTTPRoute default/ghost-route"), "{stored}");
    // Removing the rule's policy puts the rule back on the Service's.
    let (status, v) = admin_api(&m.cp, "DELETE", "/v1/resources/ResiliencePolicy/default/broken-fault", "").await;
    assert_eq!(status, 200, "{v}");
    rule_policy_in_force(&m, "broken", None).await;
    assert_eq!(m.get("/broken/x").await, 502);
    m.done();
}

/// `rateLimit.perCaller`: each caller identity has its own bucket at the server's sidecar. Two
/// real client sidecars (`default/web`, `default/batch`): web, past its 3 tokens, is answered
/// 429 `rate-limited` by the server's sidecar (counted in `weft_rate_limited_total`); batch,
/// calling after it, still has its 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_caller_rate_limit_limits_one_caller_and_not_another() {
    let m = mesh("resilience-per-caller").await;
    let batch =
        sidecar(&m.cp, "default/batch", None, "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: api }] }\n")
            .await;
    let batch_up = batch.addrs.upstreams[0];
    // Reachable before the limit is set, so the first limited request is the 4th.
    eventually("batch routes to api", Duration::from_secs(10), || async move {
        (http1_get(batch_up, "/ready").await.ok()?.status() == 200).then_some(())
    })
    .await;
    m.policy("rateLimit: { maxTokens: 3, fillInterval: 1h, perCaller: true }", true).await;
    let get = |addr: SocketAddr| async move {
        let req = http::Request::get("/limited").header("host", "api").body(Full::new(Bytes::new())).unwrap();
        let resp = weft_testkit::http1_request(addr, req).await.expect("a response");
        let err = resp.headers().get("x-weft-error").map(|v| v.to_str().unwrap().to_string());
        (resp.status().as_u16(), err)
    };
    let mut web = vec![];
    for _ in 0..5 {
        web.push(get(m.upstream).await);
    }
    let limited = (429, Some("rate-limited".to_string()));
    assert_eq!(web, vec![(200, None), (200, None), (200, None), limited.clone(), limited]);
    for i in 0..3 {
        assert_eq!(get(batch_up).await, (200, None), "batch's request {i}: its own bucket");
    }
    assert_eq!(get(batch_up).await.0, 429, "and batch too is limited past its own 3");
    assert_eq!(m.seen.count("/limited"), 6);
    assert_eq!(metric(&m.server.metrics_text(), "weft_rate_limited_total", &["service=\"api.default\""]), 3.0);
    drop(batch);
    m.done();
}

/// A gRPC abort (`abort.grpcStatus`) seen by a real gRPC client (tonic's health client over the
/// client sidecar's upstream listener): the call fails with that status and message, the app
/// never sees it; and on the wire the answer is trailers-only (one HEADERS frame with
/// END_STREAM, `:status 200`, no DATA), which is what gRPC clients require of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_abort_is_a_trailers_only_status_a_grpc_client_reads() {
    let m = mesh("resilience-grpc-abort").await;
    m.policy(
        "faults: [{ match: { pathPrefix: /grpc.health.v1.Health }, abort: { grpcStatus: unavailable, percent: 100 } }]",
        false,
    )
    .await;
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", m.upstream))
        .unwrap()
        .connect()
        .await
        .expect("the upstream listener speaks HTTP/2");
    let mut client = tonic_health::pb::health_client::HealthClient::new(ch);
    for _ in 0..5 {
        let err = client
            .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
            .await
            .expect_err("every call is aborted");
        assert_eq!((err.code(), err.message()), (tonic::Code::Unavailable, "fault injected"), "{err:?}");
    }
    assert_eq!(m.seen.count("/grpc.health.v1.Health/Check"), 0, "an aborted call never reaches the app");
    assert_eq!(
        metric(&m.client.metrics_text(), "weft_faults_injected_total", &["fault=\"abort\""]),
        5.0,
        "{}",
        m.client.metrics_text()
    );

    // The frames themselves.
    let frames = raw_h2_call(m.upstream, "/grpc.health.v1.Health/Check").await;
    let on_stream: Vec<&(u8, u8, Vec<u8>)> = frames.iter().filter(|f| f.0 == 0x1 || f.0 == 0x0).collect();
    assert_eq!(on_stream.len(), 1, "one HEADERS frame and no DATA: {frames:?}");
    let (kind, flags, _) = on_stream[0];
    assert_eq!((*kind, flags & 0x5), (0x1, 0x5), "HEADERS with END_STREAM and END_HEADERS");
    m.done();
}

/// One gRPC request on stream 1 of a fresh HTTP/2 connection, frames written by hand; returns
/// the (type, flags, payload) of each frame the server sent on stream 1, up to its END_STREAM.
async fn raw_h2_call(addr: SocketAddr, path: &str) -> Vec<(u8, u8, Vec<u8>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend([kind, flags]);
        f.extend(stream.to_be_bytes());
        f.extend(payload);
        f
    };
    // HPACK: literal header fields without indexing, new names, no Huffman (RFC 7541 §6.2.2).
    let mut block = vec![];
    for (k, v) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "api"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        block.push(0x00);
        block.push(k.len() as u8);
        block.extend(k.as_bytes());
        block.push(v.len() as u8);
        block.extend(v.as_bytes());
    }
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    out.extend(frame(0x1, 0x4, 1, &block));
    // An empty message (5-byte gRPC prefix), ending the request.
    out.extend(frame(0x0, 0x1, 1, &[0, 0, 0, 0, 0]));
    s.write_all(&out).await.unwrap();
    let mut got = vec![];
    loop {
        let mut head = [0u8; 9];
        s.read_exact(&mut head).await.expect("the server answers stream 1 before closing");
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.unwrap();
        match (stream, kind) {
            // SETTINGS from the server: acknowledge it.
            (0, 0x4) if flags & 0x1 == 0 => s.write_all(&frame(0x4, 0x1, 0, &[])).await.unwrap(),
            (1, _) => {
                got.push((kind, flags, payload));
                if flags & 0x1 != 0 || kind == 0x3 {
                    return got;
                }
            }
            _ => {}
        }
    }
}

/// A gRPC app on HTTP/2 that counts calls by path. `/grpc.health.v1.Health/Check`: the first
/// call is answered UNAVAILABLE in a trailers-only response (after its request has been read
/// whole, as a unary handler does), the next ones SERVING. `.../Watch`: a response head without
/// a status, no message, then UNAVAILABLE in real trailers.
async fn grpc_app() -> (SocketAddr, Seen) {
    use http_body_util::combinators::BoxBody;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Seen::default();
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = l.accept().await else { return };
            let s = s.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let s = s.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        if path == "/echo.Echo/Chat" {
                            return Ok(chat(req.into_body()));
                        }
                        let _ = req.into_body().collect().await;
                        let n = {
                            let mut g = s.0.lock().unwrap();
                            let n = g.0.entry(path.clone()).or_default();
                            *n += 1;
                            *n
                        };
                        let grpc = |b: BoxBody<Bytes, std::convert::Infallible>| {
                            http::Response::builder().header("content-type", "application/grpc").body(b).unwrap()
                        };
                        let trailers = |code: &str| {
                            let mut t = http::HeaderMap::new();
                            t.insert("grpc-status", code.parse().unwrap());
                            Frame::trailers(t)
                        };
                        let resp = match (path.as_str(), n) {
                            ("/grpc.health.v1.Health/Check", 1) => {
                                let mut r = grpc(Full::new(Bytes::new()).boxed());
                                r.headers_mut().insert("grpc-status", "14".parse().unwrap());
                                r
                            }
                            ("/grpc.health.v1.Health/Check", _) => {
                                // HealthCheckResponse { status: SERVING }: field 1, varint 1.
                                let frames =
                                    [Frame::data(Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 0x01])), trailers("0")];
                                grpc(
                                    http_body_util::StreamBody::new(futures_util::stream::iter(frames.map(Ok))).boxed(),
                                )
                            }
                            _ => grpc(
                                http_body_util::StreamBody::new(futures_util::stream::iter([Ok(trailers("14"))]))
                                    .boxed(),
                            ),
                        };
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// A bidirectional stream: each request frame echoed back at once as it comes, then
/// `grpc-status: 0` when the request ends.
fn chat(
    body: hyper::body::Incoming,
) -> http::Response<http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>> {
    let frames = futures_util::stream::unfold(Some(body), |body| async move {
        let mut body = body?;
        let next = match body.frame().await {
            Some(Ok(f)) if f.is_data() => return Some((Ok(f), Some(body))),
            Some(Ok(_)) | Some(Err(_)) | None => {
                let mut t = http::HeaderMap::new();
                t.insert("grpc-status", "0".parse().unwrap());
                Frame::trailers(t)
            }
        };
        Some((Ok(next), None))
    });
    http::Response::builder()
        .header("content-type", "application/grpc")
        .body(http_body_util::StreamBody::new(frames).boxed())
        .unwrap()
}

/// Retries on a gRPC status: a real gRPC client (tonic's health client) calls through its
/// sidecar a real HTTP/2 app that fails the first Check with UNAVAILABLE (trailers-only): the
/// call is retried (POST, yet a gRPC call is retried on its listed gRPC statuses, gRFC A6) and
/// succeeds. A status that comes in real trailers after a response head is not retried: the head
/// was forwarded, the call committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_is_retried_on_a_trailers_only_unavailable() {
    weft_testkit::init_tracing();
    let dir = tempdir("resilience-grpc-retry");
    let mut cfg = ControlConfig::new(dir.clone());
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    let cp = ControlPlane::start(cfg).await.expect("control plane");
    let (app, seen) = grpc_app().await;
    let server = sidecar(&cp, "default/api", Some("api-1"), "inbound: { listen: \"127.0.0.1:0\" }\n").await;
    let client =
        sidecar(&cp, "default/web", None, "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: api }] }\n")
            .await;
    let resources = format!(
        "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: api }}\nspec: {{ ports: [{{ port: {}, protocol: http2 }}] }}\n---\n\
         apiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: api-1 }}\nspec: {{ service: api, address: 127.0.0.1, port: {}, sidecar: \"{}\" }}\n",
        app.port(),
        app.port(),
        server.addrs.inbound.unwrap()
    );
    let (status, v) = admin_api(&cp, "POST", "/v1/apply", &resources).await;
    assert_eq!(status, 200, "{v}");
    let upstream = client.addrs.upstreams[0];
    let m = Mesh { cp, dir, seen, server, client, upstream };
    m.policy("retry: { attempts: 1, retryOn: [connect-failure], grpcStatusCodes: [unavailable], backoff: { base: 1ms, max: 2ms } }", false)
        .await;
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{upstream}")).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .expect("the UNAVAILABLE try is retried and the retry succeeds");
    assert_eq!(resp.into_inner().status, 1, "SERVING");
    assert_eq!(m.seen.count("/grpc.health.v1.Health/Check"), 2);
    assert_eq!(m.client_metric("weft_retries_total"), 1.0);

    // UNAVAILABLE in real trailers: the head went to the client, so no retry.
    let mut stream = health
        .watch(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .expect("the head carries no status")
        .into_inner();
    let err = stream.message().await.expect_err("the trailers carry UNAVAILABLE");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert_eq!(m.seen.count("/grpc.health.v1.Health/Watch"), 1, "not retried");
    assert_eq!(m.client_metric("weft_retries_total"), 1.0);

    // A streaming call to the same service (so retryable on its gRPC status) is not held back
    // for a copy: the first message is answered while the request is still open, and the next
    // message goes only after that answer (ping-pong), which would never happen were the
    // request body read whole before the first try.
    let stream = tokio::net::TcpStream::connect(upstream).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let body = http_body_util::StreamBody::new(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::convert::Infallible>(Frame::data(b)), rx))
    }))
    .boxed_unsync();
    let req = http::Request::post("http://api/echo.Echo/Chat")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .unwrap();
    // Bounded, not timed: a request held back would wait here for ever.
    let bound = Duration::from_secs(30);
    tx.send(Bytes::from_static(b"\0\0\0\0\x03one")).await.unwrap();
    let resp = tokio::time::timeout(bound, h2.send_request(req)).await.expect("the head comes while the call is open");
    let mut body = resp.unwrap().into_body();
    async fn next(body: &mut hyper::body::Incoming, bound: Duration) -> Frame<Bytes> {
        tokio::time::timeout(bound, body.frame()).await.expect("a frame").expect("not the end").unwrap()
    }
    assert_eq!(next(&mut body, bound).await.into_data().unwrap(), &b"\0\0\0\0\x03one"[..]);
    tx.send(Bytes::from_static(b"\0\0\0\0\x03two")).await.unwrap();
    assert_eq!(next(&mut body, bound).await.into_data().unwrap(), &b"\0\0\0\0\x03two"[..]);
    drop(tx);
    let trailers = next(&mut body, bound).await.into_trailers().expect("trailers after the end of the request");
    assert_eq!(trailers["grpc-status"], "0");
    m.done();
}
