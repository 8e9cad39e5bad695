//! Failover between clusters, with a static-config client sidecar in cluster `east` and real
//! endpoint sidecars marked as `east`, `west` or `central`, each behind a switch that can kill it
//! (every connection closed, the port refusing, as after `kill -9`), bring it back on the same
//! port, or cut it (bytes dropped, nothing closed: a partition).
//!
//! Properties: killing every local endpoint moves the traffic to the other cluster with at most
//! one failed request per client connection, and it comes back when they return; cluster weights
//! hold over many requests; ordered failover follows the list; an endpoint answering 5xx, and a
//! partitioned one, is ejected and returns after its time.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use weft_api::proxy::ProxyConfig;
use weft_proxy::Proxy;
use weft_testkit::{eventually, Pki};

/// An app that answers its name, with a status that can be changed (to make it fail).
async fn app(name: &str, status: Arc<AtomicU16>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let name = Bytes::from(name.to_string());
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (name, status) = (name.clone(), status.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let mut resp = http::Response::new(Full::new(name.clone()));
                    *resp.status_mut() = http::StatusCode::from_u16(status.load(Ordering::SeqCst)).expect("status");
                    async move { Ok::<_, std::convert::Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
            });
        }
    });
    addr
}

/// A TCP relay in front of an endpoint's sidecar: `kill` closes every connection and stops
/// listening (connects are refused), `start` listens on the same port again, `cut` drops bytes
/// both ways without closing anything.
struct Switch {
    addr: SocketAddr,
    to: SocketAddr,
    cut: Arc<AtomicBool>,
    /// Each connection closes (unforwarded) at the next bytes the client side sends: a peer that
    /// died while its connections looked open.
    die: Arc<AtomicBool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Switch {
    async fn new(to: SocketAddr) -> Switch {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let s = Switch {
            addr: l.local_addr().expect("addr"),
            to,
            cut: Arc::default(),
            die: Arc::default(),
            task: Mutex::default(),
        };
        s.serve(l);
        s
    }

    fn serve(&self, l: TcpListener) {
        let (to, cut, die) = (self.to, self.cut.clone(), self.die.clone());
        // The connections live in the accept task's JoinSet: aborting the task closes them all.
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((down, _)) = l.accept().await {
                let (cut, die) = (cut.clone(), die.clone());
                conns.spawn(async move {
                    let Ok(up) = TcpStream::connect(to).await else { return };
                    let (dr, dw) = down.into_split();
                    let (ur, uw) = up.into_split();
                    // Both ways until both end, unless `die`: then both sockets close at once.
                    let up_cut = cut.clone();
                    let upstream = async move {
                        if pump(dr, uw, up_cut, Some(die)).await {
                            return;
                        }
                        std::future::pending::<()>().await
                    };
                    tokio::select! {
                        _ = upstream => {}
                        _ = pump(ur, dw, cut, None) => {}
                    }
                });
            }
        });
        *self.task.lock().unwrap() = Some(task);
    }

    fn kill(&self) {
        if let Some(t) = self.task.lock().unwrap().take() {
            t.abort();
        }
    }

    async fn start(&self) {
        let addr = self.addr;
        let l = eventually("the port can be bound again", Duration::from_secs(10), || async move {
            TcpListener::bind(addr).await.ok()
        })
        .await;
        self.serve(l);
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }
}

/// Copies `r` to `w`; `true` when it stopped because `die` was set (nothing more is written, not
/// even a shutdown).
async fn pump(
    mut r: impl AsyncRead + Unpin,
    mut w: impl AsyncWrite + Unpin,
    cut: Arc<AtomicBool>,
    die: Option<Arc<AtomicBool>>,
) -> bool {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) if die.as_ref().is_some_and(|d| d.load(Ordering::SeqCst)) => return true,
            Ok(_) if cut.load(Ordering::SeqCst) => continue,
            Ok(n) => {
                if w.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = w.shutdown().await;
    false
}

/// One endpoint: app ← its sidecar ← switch.
struct Endpoint {
    cluster: &'static str,
    app: SocketAddr,
    status: Arc<AtomicU16>,
    switch: Switch,
    _sidecar: Proxy,
}

async fn endpoint(pki: &Pki, cluster: &'static str, i: usize) -> Endpoint {
    let name = format!("{cluster}-{i}");
    let status = Arc::new(AtomicU16::new(200));
    let app = app(&name, status.clone()).await;
    let cfg = ProxyConfig::from_yaml(&format!(
        "identity: {{ cert: unused, key: unused, bundle: unused }}\nadmin: {{ listen: \"127.0.0.1:0\" }}\n\
         cluster: {cluster}\ninbound: {{ listen: \"127.0.0.1:0\", ports: [{{ port: {} }}] }}\n",
        app.port()
    ))
    .expect("endpoint config");
    let sidecar = Proxy::start(cfg, pki.store(SERVER.0, SERVER.1)).await.expect("endpoint sidecar");
    let switch = Switch::new(sidecar.addrs.inbound.expect("inbound")).await;
    Endpoint { cluster, app, status, switch, _sidecar: sidecar }
}

struct Mesh {
    endpoints: Vec<Endpoint>,
    client: Proxy,
    /// The client sidecar's upstream listener for `api`.
    http: SocketAddr,
}

impl Mesh {
    /// Endpoints per cluster (`[("east", 2), ("west", 2)]`), and a client sidecar in `east` whose
    /// `api` service has `service_extra` (e.g. `failover: [west]`) and config `extra`.
    async fn start(clusters: &[(&'static str, usize)], service_extra: &str, extra: &str) -> Mesh {
        weft_testkit::init_tracing();
        let pki = Pki::new();
        let mut endpoints = vec![];
        for (cluster, n) in clusters {
            for i in 0..*n {
                endpoints.push(endpoint(&pki, cluster, i).await);
            }
        }
        let eps: String = endpoints
            .iter()
            .map(|e| {
                format!(
                    "      - {{ address: \"{}\", proxy: \"{}\", identity: \"{}\", cluster: {} }}\n",
                    e.app,
                    e.switch.addr,
                    api_id(),
                    e.cluster
                )
            })
            .collect();
        let timeouts = if extra.contains("timeouts:") { "" } else { "timeouts: { connect: 2s }" };
        let cfg = ProxyConfig::from_yaml(&format!(
            "identity: {{ cert: unused, key: unused, bundle: unused }}\nadmin: {{ listen: \"127.0.0.1:0\" }}\n\
             cluster: east\noutbound:\n  connections_per_peer: 4\n  upstreams: [{{ listen: \"127.0.0.1:0\", service: api }}]\n\
             {timeouts}\n{extra}\nservices:\n  - name: api\n    {service_extra}\n    endpoints:\n{eps}"
        ))
        .expect("client config");
        let client = Proxy::start(cfg, pki.store(CLIENT.0, CLIENT.1)).await.expect("client sidecar");
        let http = client.addrs.upstreams[0];
        Mesh { endpoints, client, http }
    }

    fn in_cluster(&self, cluster: &str) -> impl Iterator<Item = &Endpoint> {
        let cluster = cluster.to_string();
        self.endpoints.iter().filter(move |e| e.cluster == cluster)
    }

    fn ejections(&self, reason: &str) -> f64 {
        metric(
            &self.client.metrics_text(),
            &format!("weft_outlier_ejections_total{{service=\"api.default\",reason=\"{reason}\"}}"),
        )
    }
}

/// A keep-alive HTTP/1.1 connection from an app to its sidecar, reopened if the sidecar closes it.
struct AppConn {
    addr: SocketAddr,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl AppConn {
    fn new(addr: SocketAddr) -> Self {
        AppConn { addr, sender: None }
    }

    /// `Ok(name of the endpoint that answered)`, or `Err(what failed)`.
    async fn get(&mut self) -> Result<String, String> {
        let sender = match &mut self.sender {
            Some(s) if !s.is_closed() => s,
            _ => {
                let stream = TcpStream::connect(self.addr).await.map_err(|e| e.to_string())?;
                let (s, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                self.sender.insert(s)
            }
        };
        sender.ready().await.map_err(|e| e.to_string())?;
        let req = http::Request::get("/").header("host", "api").body(Full::new(Bytes::new())).expect("request");
        let resp = tokio::time::timeout(Duration::from_secs(20), sender.send_request(req))
            .await
            .map_err(|_| "no answer within 20s".to_string())?
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let kind = resp.headers().get("x-weft-error").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        let body = String::from_utf8_lossy(&body).into_owned();
        if status == 200 {
            Ok(body)
        } else {
            Err(format!("{status} {kind} {body}"))
        }
    }
}

/// What one client connection saw, in order.
#[derive(Default)]
struct Log {
    answers: Vec<Result<String, String>>,
}

impl Log {
    fn failures(&self) -> Vec<&String> {
        self.answers.iter().filter_map(|a| a.as_ref().err()).collect()
    }

    /// Answers after the first `from`, from endpoints whose name starts with `prefix`.
    fn count_since(&self, from: usize, prefix: &str) -> usize {
        self.answers[from.min(self.answers.len())..]
            .iter()
            .filter(|a| a.as_ref().is_ok_and(|n| n.starts_with(prefix)))
            .count()
    }
}

#[tokio::test]
async fn killing_every_local_endpoint_fails_over_with_at_most_one_failure_per_connection_and_comes_back() {
    let mesh = Mesh::start(&[("east", 2), ("west", 2)], "", "outlier_detection: { base_ejection_time: 500ms }").await;
    let stop = Arc::new(AtomicBool::new(false));
    let logs: Vec<Arc<Mutex<Log>>> = (0..4).map(|_| Arc::default()).collect();
    let mut clients = vec![];
    for log in &logs {
        let (log, stop, addr) = (log.clone(), stop.clone(), mesh.http);
        clients.push(tokio::spawn(async move {
            let mut conn = AppConn::new(addr);
            while !stop.load(Ordering::SeqCst) {
                let answer = conn.get().await;
                log.lock().unwrap().answers.push(answer);
            }
        }));
    }
    let seen = |prefix: &'static str, since: Vec<usize>, n: usize| {
        let logs = logs.clone();
        move || {
            let ok = logs.iter().zip(&since).all(|(l, from)| l.lock().unwrap().count_since(*from, prefix) >= n);
            async move { ok.then_some(()) }
        }
    };
    let marks = || logs.iter().map(|l| l.lock().unwrap().answers.len()).collect::<Vec<_>>();
    eventually("every connection is served by east", Duration::from_secs(30), seen("east", marks(), 5)).await;
    for l in &logs {
        assert!(
            l.lock().unwrap().answers.iter().all(|a| a.as_ref().is_ok_and(|n| n.starts_with("east"))),
            "all local first"
        );
    }

    // kill -9 of every local endpoint, while the clients keep sending.
    for e in mesh.in_cluster("east") {
        e.switch.kill();
    }
    let killed = marks();
    eventually("every connection is served by west", Duration::from_secs(30), seen("west", killed.clone(), 20)).await;
    for (i, l) in logs.iter().enumerate() {
        let l = l.lock().unwrap();
        let failures = l.failures();
        assert!(failures.len() <= 1, "connection {i}: at most one failed request, got {failures:?}");
        let last: Vec<_> = l.answers[l.answers.len() - 10..].iter().collect();
        assert!(last.iter().all(|a| a.as_ref().is_ok_and(|n| n.starts_with("west"))), "connection {i}: {last:?}");
    }
    assert!(mesh.ejections("consecutive-connect-failures") >= 2.0, "both local endpoints ejected");

    // The local endpoints come back: once their ejection is over, traffic returns to them.
    for e in mesh.in_cluster("east") {
        e.switch.start().await;
    }
    eventually("traffic returns to east", Duration::from_secs(60), seen("east", marks(), 10)).await;
    let back = marks();
    eventually("and stays there", Duration::from_secs(30), seen("east", back.clone(), 10)).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.expect("client");
    }
    for (i, l) in logs.iter().enumerate() {
        let l = l.lock().unwrap();
        let after: Vec<_> =
            l.answers[back[i] + 5..].iter().filter(|a| !a.as_ref().is_ok_and(|n| n.starts_with("east"))).collect();
        assert!(after.is_empty(), "connection {i}: all local again once recovered, got {after:?}");
        assert!(l.failures().len() <= 1, "connection {i}: no failures on the way back: {:?}", l.failures());
    }
}

#[tokio::test]
async fn cluster_weights_split_traffic_within_tolerance() {
    let mesh = Mesh::start(&[("east", 2), ("west", 2)], "cluster_weights: { east: 80, west: 20 }", "").await;
    let mut conn = AppConn::new(mesh.http);
    let mut west = 0;
    const N: usize = 1000;
    for _ in 0..N {
        let name = conn.get().await.expect("answer");
        if name.starts_with("west") {
            west += 1;
        }
    }
    // 20% of 1000 = 200; the picks follow an even sequence, so a few percent is plenty.
    assert!((170..=230).contains(&west), "west answered {west} of {N}; expected 20% ± 3%");
}

/// 20 requests after a kill: at most one fails, every other one is answered by `expect`.
async fn after_kill(conn: &mut AppConn, expect: &str) {
    let mut got = vec![];
    for _ in 0..20 {
        got.push(conn.get().await);
    }
    let failures = got.iter().filter(|a| a.is_err()).count();
    assert!(failures <= 1, "at most one failed request: {got:?}");
    assert!(got.iter().flatten().all(|n| n == expect), "answered by {expect}: {got:?}");
}

#[tokio::test]
async fn ordered_failover_follows_the_list() {
    let mesh = Mesh::start(
        &[("east", 1), ("west", 1), ("central", 1)],
        "failover: [central, west]",
        "outlier_detection: { consecutive_connect_failures: 1, base_ejection_time: 1h, max_ejection_time: 1h }",
    )
    .await;
    let mut conn = AppConn::new(mesh.http);
    for _ in 0..10 {
        assert_eq!(conn.get().await.expect("answer"), "east-0", "own cluster first");
    }
    // After each kill, the one request that may already be on the dead pooled connection can
    // fail (502 upstream); every other one is answered by the next cluster in the list.
    mesh.in_cluster("east").for_each(|e| e.switch.kill());
    after_kill(&mut conn, "central-0").await;
    mesh.in_cluster("central").for_each(|e| e.switch.kill());
    after_kill(&mut conn, "west-0").await;
}

#[tokio::test]
async fn an_endpoint_answering_5xx_is_ejected_and_returns_after_its_time() {
    let mesh =
        Mesh::start(&[("east", 2)], "", "outlier_detection: { consecutive_5xx: 3, base_ejection_time: 200ms }").await;
    let bad = &mesh.endpoints[0];
    bad.status.store(500, Ordering::SeqCst);
    let mut conn = AppConn::new(mesh.http);
    let (mut failed, mut good) = (0, 0);
    // Ejected after 3 failures in a row; back after its time, it fails 3 times more and is ejected
    // again (for twice as long).
    while mesh.ejections("consecutive-5xx") < 2.0 {
        match conn.get().await {
            Ok(name) => {
                assert_eq!(name, "east-1");
                good += 1;
            }
            Err(e) => {
                assert!(e.starts_with("500"), "{e}");
                failed += 1;
            }
        }
        assert!(failed + good < 100_000, "the endpoint is ejected twice");
    }
    // While out it gets no request: each ejection costs exactly the threshold's failures.
    assert_eq!(failed, 6, "3 failures per ejection, none while ejected ({good} served by east-1)");
    // Fixed: back in the balancer after its time.
    bad.status.store(200, Ordering::SeqCst);
    let addr = mesh.http;
    eventually("the endpoint is back in the balancer", Duration::from_secs(30), || async move {
        (AppConn::new(addr).get().await.ok()? == "east-0").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_partitioned_endpoint_is_ejected() {
    let mesh = Mesh::start(
        &[("east", 2)],
        "",
        "outlier_detection: { consecutive_connect_failures: 1, base_ejection_time: 1h, max_ejection_time: 1h }",
    )
    .await;
    let mut conn = AppConn::new(mesh.http);
    for _ in 0..8 {
        conn.get().await.expect("both endpoints serve");
    }
    // Packets dropped, nothing closed: the pooled connection is found dead by its keep-alive
    // (504 peer-unresponsive, a connect failure for outlier detection), or a new connect times out.
    mesh.endpoints[0].switch.set_cut(true);
    let mut failures = vec![];
    while mesh.ejections("consecutive-connect-failures") < 1.0 {
        if let Err(e) = conn.get().await {
            failures.push(e);
        }
        assert!(failures.len() < 50, "ejected long before this: {failures:?}");
    }
    assert!(failures.len() <= 1, "at most the one request on the dead connection fails: {failures:?}");
    for _ in 0..10 {
        assert_eq!(conn.get().await.expect("answer"), "east-1", "the partitioned endpoint gets nothing");
    }
    let gauge = metric(&mesh.client.metrics_text(), "weft_outlier_ejected{service=\"api.default\"}");
    assert_eq!(gauge, 1.0, "the gauge counts the endpoint while it is out");
}

/// An endpoint dies while its pooled connections look open: the first request on one fails (it
/// was sent, and may have reached the app), and the next ones on the others do not: a GET
/// without a body is safe to send again, and goes to another endpoint.
#[tokio::test]
async fn requests_on_pooled_connections_to_a_dead_endpoint_fail_at_most_once() {
    // Long keep-alive: no PING reveals the dead connections before the requests do.
    let mesh = Mesh::start(&[("east", 2)], "", "timeouts: { connect: 2s, peer_keepalive: 60s }").await;
    let mut conn = AppConn::new(mesh.http);
    // Open every pooled connection (4 per endpoint) to both endpoints.
    for _ in 0..40 {
        conn.get().await.expect("both endpoints serve");
    }
    mesh.endpoints[0].switch.die.store(true, Ordering::SeqCst);
    let mut got = vec![];
    for _ in 0..20 {
        got.push(conn.get().await);
    }
    let failures: Vec<_> = got.iter().filter_map(|a| a.as_ref().err()).collect();
    assert!(failures.len() <= 1, "one failure at most, not one per pooled connection: {failures:?}");
    assert!(got.iter().flatten().all(|n| n == "east-1"), "{got:?}");
}
