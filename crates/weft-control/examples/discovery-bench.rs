//! Discovery propagation benchmark: how long an endpoint change takes to reach N connected
//! proxies, and the control plane's memory with them connected.
//!
//! It starts `weft control` as a separate process (so its memory is its own), connects N
//! simulated proxies (real gRPC discovery streams with bootstrap tokens, one HTTP/2 connection
//! each, as real proxies have), then registers endpoints one at a time and measures, for every
//! proxy, the time from the registration being acknowledged by the API to the update carrying it
//! arriving on that proxy's stream.
//!
//! ```sh
//! cargo run --release -p weft-control --example discovery-bench -- --weft target/release/weft --proxies 1000 --changes 20
//! ```
//! `bench/discovery.sh` runs it and prints the summary that goes into bench/RESULTS.md.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft_api::pb;

/// Per proxy, per change: when the update carrying it arrived (ns since the start; 0 = not yet).
/// Lock-free, so recording never delays another proxy.
type Seen = Vec<Vec<std::sync::atomic::AtomicU64>>;

struct Args {
    weft: String,
    proxies: usize,
    changes: usize,
}

fn args() -> Args {
    let mut a = Args { weft: "target/release/weft".into(), proxies: 1000, changes: 20 };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_default();
        match k.as_str() {
            "--weft" => a.weft = v,
            "--proxies" => a.proxies = v.parse().expect("--proxies N"),
            "--changes" => a.changes = v.parse().expect("--changes N"),
            other => panic!("unknown flag {other}; use --weft PATH --proxies N --changes N"),
        }
    }
    a
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The control plane's HTTP API (TLS, trusting the root in its data directory).
struct Api {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
}

impl Api {
    fn new(addr: &str, dir: &std::path::Path) -> Api {
        let pem = std::fs::read_to_string(dir.join(weft_control::api_tls::ROOT_FILE)).expect("the root CA");
        let roots = weft_identity::https::certs_from_pem(&pem, "root.pem").expect("root.pem");
        let tls = Arc::new(weft_identity::https::client_config(&roots).expect("client config"));
        Api { addr: addr.parse().expect("api address"), tls }
    }
}

async fn api(api: &Api, token: &str, method: &str, path: &str, body: String) -> String {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "cp")
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let resp = weft_testkit::api_request(api.addr, Some(api.tls.clone()), req).await.expect("api");
    format!("HTTP/1.1 {}\r\n\r\n{}", resp.status(), String::from_utf8_lossy(resp.body()))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let a = args();
    let dir = std::env::temp_dir().join(format!("weft-discovery-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (grpc, api_addr) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let mut cp = Command::new(&a.weft)
        .args(["control", "--data-dir", dir.to_str().unwrap(), "--grpc", &grpc, "--api", &api_addr, "--dns", "off"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start weft control (build it: cargo build --release -p weft-cli)");
    let token_file = dir.join("admin.token");
    let deadline = Instant::now() + Duration::from_secs(30);
    let admin = loop {
        if let Ok(t) = std::fs::read_to_string(&token_file) {
            if tokio::net::TcpStream::connect(&api_addr).await.is_ok() {
                break t.trim().to_string();
            }
        }
        assert!(Instant::now() < deadline, "control plane did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let api_addr = Api::new(&api_addr, &dir);
    let base_rss = rss_kib(cp.id());
    let svc = "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: api }\n".to_string();
    api(&api_addr, &admin, "POST", "/v1/apply", svc).await;
    let resp =
        api(&api_addr, &admin, "POST", "/v1/tokens", r#"{"kind":"bootstrap","identity":"default/web"}"#.into()).await;
    let token = resp.split("\"token\":\"").nth(1).and_then(|s| s.split('"').next()).expect("token").to_string();

    // N proxies, each with its own connection and stream; each records when it sees each version.
    let grpc_addr: SocketAddr = grpc.parse().unwrap();
    let start = Instant::now();
    let seen: Arc<Seen> =
        Arc::new((0..a.proxies).map(|_| (0..=a.changes).map(|_| Default::default()).collect()).collect());
    let connected = Arc::new(tokio::sync::Semaphore::new(0));
    for i in 0..a.proxies {
        let (token, seen, connected) = (token.clone(), seen.clone(), connected.clone());
        tokio::spawn(async move {
            // TLS, verified against the root fingerprint in the token, as a proxy connects.
            let control = weft_api::proxy::Control::new(grpc_addr, token.clone());
            let ch = weft_proxy::control::connect(&control, 0).await.expect("connect");
            let mut client = pb::discovery_client::DiscoveryClient::new(ch);
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tx.send(pb::ProxyMessage {
                kind: Some(pb::proxy_message::Kind::Hello(pb::Hello {
                    proxy_id: format!("sim-{i}"),
                    upstreams: vec!["api.default".into()],
                    ..Default::default()
                })),
            })
            .await
            .unwrap();
            let out = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
            let mut req = tonic::Request::new(out);
            req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
            let mut updates = client.stream(req).await.expect("stream").into_inner();
            let mut first = true;
            while let Ok(Some(u)) = updates.message().await {
                let endpoints = u.services.iter().map(|s| s.endpoints.len()).sum::<usize>();
                if let Some(slot) = seen[i].get(endpoints) {
                    let now = start.elapsed().as_nanos() as u64;
                    let _ = slot.compare_exchange(
                        0,
                        now,
                        std::sync::atomic::Ordering::Relaxed,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                }
                let _ = tx
                    .send(pb::ProxyMessage {
                        kind: Some(pb::proxy_message::Kind::Ack(pb::Ack {
                            version: u.version,
                            error: String::new(),
                            ..Default::default()
                        })),
                    })
                    .await;
                if first {
                    connected.add_permits(1);
                    first = false;
                }
            }
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(120), connected.acquire_many(a.proxies as u32))
        .await
        .expect("all proxies connected");
    let connected_rss = rss_kib(cp.id());

    // One endpoint change at a time; measure each proxy's delay.
    let mut delays_ms = vec![];
    let mut after_ack_ms = vec![];
    for c in 1..=a.changes {
        let w = format!(
            "apiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: api-{c} }}\nspec: {{ service: api, address: 10.1.{}.{}, port: 8080 }}\n",
            c / 250,
            c % 250 + 1
        );
        let t0 = start.elapsed().as_nanos() as u64;
        let r = api(&api_addr, &admin, "POST", "/v1/apply", w).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        let t_ack = start.elapsed().as_nanos() as u64;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let arrived: Vec<f64> = seen
                .iter()
                .map(|v| v[c].load(std::sync::atomic::Ordering::Relaxed))
                .filter(|t| *t != 0)
                .map(|t| t.saturating_sub(t0) as f64 / 1e6)
                .collect();
            if arrived.len() == a.proxies {
                let shift = (t_ack - t0) as f64 / 1e6;
                after_ack_ms.extend(arrived.iter().map(|d| (d - shift).max(0.0)));
                delays_ms.extend(arrived);
                break;
            }
            assert!(Instant::now() < deadline, "change {c} did not reach every proxy in 30s");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let peak_rss = rss_kib(cp.id());
    delays_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    after_ack_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("proxies {}  changes {}  samples {}", a.proxies, a.changes, delays_ms.len());
    for (what, d) in
        [("from the apply request", &delays_ms), ("from the API's answer (write committed)", &after_ack_ms)]
    {
        println!(
            "propagation ms {what}: p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
            percentile(d, 50.0),
            percentile(d, 90.0),
            percentile(d, 99.0),
            percentile(d, 100.0)
        );
    }
    println!(
        "control plane RSS MiB: idle {:.1}  with proxies {:.1}  after changes {:.1}",
        base_rss as f64 / 1024.0,
        connected_rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0
    );
    let _ = cp.kill();
    let _ = cp.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
