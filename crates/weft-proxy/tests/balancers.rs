//! Load balancers, circuit breaking and outlier detection through real proxies: a client sidecar
//! (static config, services[].backend_policy as the control plane renders a BackendPolicy) in
//! front of real endpoint sidecars, each in front of an app whose status, delay and holding of
//! requests the test sets.
//!
//! Properties: weighted picks land within a stated tolerance; a hash key (header, cookie) keeps
//! its endpoint, and a cookie is set when absent; peak EWMA moves load away from a slow endpoint;
//! a breaker at `maxRequests` answers 503 + `x-weft-overflow` + a metric; an endpoint is ejected
//! after the configured consecutive gateway errors and returns after its time.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio::net::{TcpListener, TcpStream};
use weft_api::proxy::ProxyConfig;
use weft_proxy::Proxy;
use weft_testkit::{eventually, Pki};

/// What an app does, set by the test while it runs.
#[derive(Default)]
struct Ctl {
    status: AtomicU16,
    delay_ms: AtomicU64,
    /// Requests wait while set (to hold them in flight).
    hold: AtomicBool,
    release: tokio::sync::Notify,
    /// Requests that arrived (held ones included).
    arrived: AtomicUsize,
}

async fn app(name: String, ctl: Arc<Ctl>) -> SocketAddr {
    ctl.status.store(200, SeqCst);
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (name, ctl) = (Bytes::from(name.clone()), ctl.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let (name, ctl) = (name.clone(), ctl.clone());
                    async move {
                        ctl.arrived.fetch_add(1, SeqCst);
                        while ctl.hold.load(SeqCst) {
                            let released = ctl.release.notified();
                            if !ctl.hold.load(SeqCst) {
                                break;
                            }
                            released.await;
                        }
                        let delay = ctl.delay_ms.load(SeqCst);
                        if delay > 0 {
                            // The app is slow: that is what the test is about, not a wait for a condition.
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                        }
                        let mut resp = http::Response::new(Full::new(name));
                        *resp.status_mut() = http::StatusCode::from_u16(ctl.status.load(SeqCst)).expect("status");
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
            });
        }
    });
    addr
}

struct Endpoint {
    name: String,
    ctl: Arc<Ctl>,
    _sidecar: Proxy,
}

struct Mesh {
    endpoints: Vec<Endpoint>,
    client: Proxy,
    http: SocketAddr,
}

impl Mesh {
    /// One endpoint per weight; the client's `api` service gets `service_extra` (e.g. a
    /// `backend_policy`), its config `extra`.
    async fn start(weights: &[u32], service_extra: &str, extra: &str) -> Mesh {
        weft_testkit::init_tracing();
        let pki = Pki::new();
        let mut endpoints = vec![];
        let mut lines = String::new();
        for (i, w) in weights.iter().enumerate() {
            let (name, ctl) = (format!("ep-{i}"), Arc::new(Ctl::default()));
            let addr = app(name.clone(), ctl.clone()).await;
            let cfg = ProxyConfig::from_yaml(&format!(
                "identity: {{ cert: unused, key: unused, bundle: unused }}\nadmin: {{ listen: \"127.0.0.1:0\" }}\n\
                 inbound: {{ listen: \"127.0.0.1:0\", ports: [{{ port: {} }}] }}\n",
                addr.port()
            ))
            .expect("endpoint config");
            let sidecar = Proxy::start(cfg, pki.store(SERVER.0, SERVER.1)).await.expect("endpoint sidecar");
            lines.push_str(&format!(
                "      - {{ address: \"{addr}\", proxy: \"{}\", identity: \"{}\", weight: {w} }}\n",
                sidecar.addrs.inbound.expect("inbound"),
                api_id()
            ));
            endpoints.push(Endpoint { name, ctl, _sidecar: sidecar });
        }
        let cfg = ProxyConfig::from_yaml(&format!(
            "identity: {{ cert: unused, key: unused, bundle: unused }}\nadmin: {{ listen: \"127.0.0.1:0\" }}\n\
             outbound:\n  upstreams: [{{ listen: \"127.0.0.1:0\", service: api }}]\n{extra}\n\
             services:\n  - name: api\n    {service_extra}\n    endpoints:\n{lines}"
        ))
        .expect("client config");
        let client = Proxy::start(cfg, pki.store(CLIENT.0, CLIENT.1)).await.expect("client sidecar");
        let http = client.addrs.upstreams[0];
        Mesh { endpoints, client, http }
    }

    fn metric(&self, sample: &str) -> f64 {
        metric(&self.client.metrics_text(), sample)
    }
}

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: String,
}

/// A keep-alive HTTP/1.1 connection from an app to its sidecar, reopened when closed.
struct AppConn {
    addr: SocketAddr,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl AppConn {
    fn new(addr: SocketAddr) -> Self {
        AppConn { addr, sender: None }
    }

    async fn get(&mut self, headers: &[(&str, &str)]) -> Answer {
        let sender = match &mut self.sender {
            Some(s) if !s.is_closed() => s,
            _ => {
                let stream = TcpStream::connect(self.addr).await.expect("connect");
                let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
                tokio::spawn(conn);
                self.sender.insert(s)
            }
        };
        sender.ready().await.expect("ready");
        let mut req = http::Request::get("/").header("host", "api");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = tokio::time::timeout(
            Duration::from_secs(20),
            sender.send_request(req.body(Full::new(Bytes::new())).expect("request")),
        )
        .await
        .expect("an answer within 20s")
        .expect("response");
        let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        Answer { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
    }
}

/// Answers by endpoint name over `n` requests.
async fn counts(mesh: &Mesh, n: usize, headers: &[(&str, &str)]) -> HashMap<String, usize> {
    let mut conn = AppConn::new(mesh.http);
    let mut out = HashMap::new();
    for _ in 0..n {
        let a = conn.get(headers).await;
        assert_eq!(a.status, 200, "{}", a.body);
        *out.entry(a.body).or_default() += 1;
    }
    out
}

#[tokio::test]
async fn weighted_random_lands_within_tolerance() {
    let mesh = Mesh::start(&[1, 3], "backend_policy: { load_balancer: { type: Random } }", "").await;
    const N: usize = 2000;
    let got = counts(&mesh, N, &[]).await;
    // p = 0.75 for ep-1: mean 1500, σ = √(2000 × 0.75 × 0.25) ≈ 19.4; ±100 is over 5σ.
    let heavy = got.get("ep-1").copied().unwrap_or(0);
    assert!((1400..=1600).contains(&heavy), "weight 3 of 4 got {heavy} of {N}: {got:?}");
}

#[tokio::test]
async fn a_hash_key_keeps_its_endpoint_and_a_cookie_is_set_when_absent() {
    let mesh = Mesh::start(
        &[1, 1, 1, 1],
        "backend_policy: { load_balancer: { type: RingHash, hashOn: { header: x-user } } }",
        "",
    )
    .await;
    // Each user sticks to one endpoint; different users spread over several.
    let mut homes = std::collections::HashSet::new();
    for user in ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"] {
        let got = counts(&mesh, 20, &[("x-user", user)]).await;
        assert_eq!(got.len(), 1, "{user} always lands on one endpoint: {got:?}");
        homes.extend(got.into_keys());
    }
    assert!(homes.len() >= 2, "eight users spread over more than one endpoint: {homes:?}");

    let mesh = Mesh::start(
        &[1, 1, 1, 1],
        "backend_policy: { load_balancer: { type: Maglev, hashOn: { cookie: { name: sticky, ttl: 10m } } } }",
        "",
    )
    .await;
    let mut conn = AppConn::new(mesh.http);
    let first = conn.get(&[]).await;
    let set = first.headers.get("set-cookie").expect("a cookie is set when absent").to_str().unwrap().to_string();
    assert!(set.starts_with("sticky=") && set.contains("Max-Age=600"), "{set}");
    let cookie = set.split(';').next().unwrap().to_string();
    for _ in 0..20 {
        let a = conn.get(&[("cookie", &cookie)]).await;
        assert_eq!(a.body, first.body, "the cookie keeps its endpoint");
        assert!(a.headers.get("set-cookie").is_none(), "no new cookie when the request has one");
    }
}

#[tokio::test]
async fn peak_ewma_moves_load_away_from_a_slow_endpoint() {
    let mesh = Mesh::start(&[1, 1, 1], "backend_policy: { load_balancer: { type: PeakEWMA } }", "").await;
    // All fast: each endpoint is tried (an unmeasured one costs nothing while idle).
    let got = counts(&mesh, 60, &[]).await;
    assert_eq!(got.len(), 3, "every endpoint gets traffic: {got:?}");
    mesh.endpoints[0].ctl.delay_ms.store(300, SeqCst);
    const N: usize = 90;
    let got = counts(&mesh, N, &[]).await;
    let slow = got.get(&mesh.endpoints[0].name).copied().unwrap_or(0);
    // Round robin would give it 30. Once its first slow answer is in, two distinct candidates
    // never make it the cheaper one until its average decays (tens of seconds).
    assert!(slow <= 3, "the slow endpoint got {slow} of {N}: {got:?}");
}

#[tokio::test]
async fn a_breaker_overflows_at_max_requests_with_503_a_header_and_a_metric() {
    let mesh = Mesh::start(&[1], "backend_policy: { connection_limits: { maxRequests: 2 } }", "").await;
    let ctl = mesh.endpoints[0].ctl.clone();
    ctl.hold.store(true, SeqCst);
    // Two requests in flight (held by the app)...
    let held: Vec<_> = (0..2)
        .map(|_| {
            let addr = mesh.http;
            tokio::spawn(async move { AppConn::new(addr).get(&[]).await.status })
        })
        .collect();
    let c = ctl.clone();
    eventually("two requests reach the app", Duration::from_secs(20), || {
        let c = c.clone();
        async move { (c.arrived.load(SeqCst) == 2).then_some(()) }
    })
    .await;
    // ...so the third is refused at once.
    let over = AppConn::new(mesh.http).get(&[]).await;
    assert_eq!(over.status, 503, "{}", over.body);
    assert_eq!(over.headers.get("x-weft-overflow").map(|v| v.to_str().unwrap()), Some("max-requests"));
    assert_eq!(mesh.metric("weft_overflow_total{service=\"api.default\",limit=\"max-requests\"}"), 1.0);
    assert_eq!(ctl.arrived.load(SeqCst), 2, "the refused request never reached the app");
    // Released, the limit admits again.
    ctl.hold.store(false, SeqCst);
    ctl.release.notify_waiters();
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
    assert_eq!(AppConn::new(mesh.http).get(&[]).await.status, 200);
}

#[tokio::test]
async fn an_endpoint_is_ejected_after_consecutive_gateway_errors_and_returns() {
    let mesh = Mesh::start(
        &[1, 1],
        "",
        "outlier_detection: { consecutive_5xx: 0, consecutive_gateway_errors: 3, base_ejection_time: 300ms }",
    )
    .await;
    let bad = mesh.endpoints[0].ctl.clone();
    bad.status.store(503, SeqCst);
    let mut conn = AppConn::new(mesh.http);
    let sample = "weft_outlier_ejections_total{service=\"api.default\",reason=\"consecutive-gateway-errors\"}";
    let mut failures = 0;
    while mesh.metric(sample) < 1.0 {
        if conn.get(&[]).await.status == 503 {
            failures += 1;
        }
        assert!(failures <= 3, "ejected at the third gateway error in a row, not later");
    }
    assert_eq!(failures, 3);
    // Healthy again, it comes back once its time is up (polled with a deadline: each poll is a
    // request).
    bad.status.store(200, SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let a = conn.get(&[]).await;
        assert_eq!(a.status, 200);
        if a.body == mesh.endpoints[0].name {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the ejected endpoint never came back");
    }
}

/// A client sidecar whose `api` service has `policy` and one endpoint whose mTLS goes to `via`,
/// with an HTTP upstream and a TCP one (to `app_tcp`'s port).
async fn client_with(pki: &Pki, app: SocketAddr, app_tcp: SocketAddr, via: SocketAddr, policy: &str) -> Proxy {
    let cfg = ProxyConfig::from_yaml(&format!(
        "identity: {{ cert: unused, key: unused, bundle: unused }}\nadmin: {{ listen: \"127.0.0.1:0\" }}\n\
         timeouts: {{ connect: 20s }}\n\
         outbound:\n  upstreams:\n    - {{ listen: \"127.0.0.1:0\", service: api, port: {} }}\n    \
         - {{ listen: \"127.0.0.1:0\", service: api, port: {}, protocol: tcp }}\n\
         services:\n  - name: api\n    {policy}\n    endpoints:\n      \
         - {{ address: \"{app}\", proxy: \"{via}\", identity: \"{}\" }}\n",
        app.port(),
        app_tcp.port(),
        api_id()
    ))
    .expect("client config");
    Proxy::start(cfg, pki.store(CLIENT.0, CLIENT.1)).await.expect("client sidecar")
}

#[tokio::test]
async fn a_request_waiting_for_a_connection_past_max_pending_is_refused_at_once() {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    // The endpoint's proxy accepts and never answers the TLS handshake: a connect that hangs.
    let hole = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let via = hole.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((s, _)) = hole.accept().await {
            a.fetch_add(1, SeqCst);
            held.push(s);
        }
    });
    let app: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let client =
        client_with(&pki, app, app, via, "backend_policy: { connection_limits: { maxPendingRequests: 1 } }").await;
    let http = client.addrs.upstreams[0];
    // The first request waits for its connection...
    let first = tokio::spawn(async move { AppConn::new(http).get(&[]).await.status });
    let a = accepted.clone();
    eventually("the first request is connecting", Duration::from_secs(20), || {
        let a = a.clone();
        async move { (a.load(SeqCst) >= 1).then_some(()) }
    })
    .await;
    // ...so the second, which would wait too, is refused at once.
    let second = AppConn::new(http).get(&[]).await;
    assert_eq!(second.status, 503, "{}", second.body);
    assert_eq!(second.headers.get("x-weft-overflow").map(|v| v.to_str().unwrap()), Some("max-pending-requests"));
    let sample = "weft_overflow_total{service=\"api.default\",limit=\"max-pending-requests\"}";
    assert_eq!(metric(&client.metrics_text(), sample), 1.0);
    first.abort();
}

#[tokio::test]
async fn a_tcp_connection_past_max_connections_is_closed_and_counted() {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let app_http = weft_testkit::http_echo("api").await;
    let app_tcp = weft_testkit::tcp_echo().await;
    let server = start_server(&pki, app_http, app_tcp, "").await;
    let via = server.addrs.inbound.expect("inbound");
    let client =
        client_with(&pki, app_http, app_tcp, via, "backend_policy: { connection_limits: { maxConnections: 1 } }").await;
    let tcp = client.addrs.upstreams[1];
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The first connection is carried (an echo)...
    let mut one = TcpStream::connect(tcp).await.expect("connect");
    one.write_all(b"ping").await.expect("write");
    let mut buf = [0u8; 4];
    one.read_exact(&mut buf).await.expect("echo");
    assert_eq!(&buf, b"ping");
    // ...the second, while it is open, is closed without a byte.
    let mut two = TcpStream::connect(tcp).await.expect("connect");
    let _ = two.write_all(b"ping").await;
    let mut rest = vec![];
    let read = tokio::time::timeout(Duration::from_secs(20), two.read_to_end(&mut rest)).await.expect("closed");
    assert!(read.is_err() || rest.is_empty(), "nothing echoed: {rest:?}");
    let sample = "weft_overflow_total{service=\"api.default\",limit=\"max-connections\"}";
    assert_eq!(metric(&client.metrics_text(), sample), 1.0);
    // Closed, the first frees its place.
    drop(one);
    eventually("a connection is carried again", Duration::from_secs(20), || async move {
        let mut s = TcpStream::connect(tcp).await.ok()?;
        s.write_all(b"pong").await.ok()?;
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf)).await.ok()?.ok()?;
        (&buf == b"pong").then_some(())
    })
    .await;
}
