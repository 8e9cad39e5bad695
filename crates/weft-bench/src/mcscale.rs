//! `weft-bench mcscale`: the multi-cluster scale simulation of issue 16 (bench/multicluster.sh).
//!
//! Starts N `weft control` processes on loopback (separate processes, so each one's RSS is its
//! own), registers in each `--services` exported services with `--endpoints` endpoints through
//! the HTTP API (batches of 1,000 resources, one store transaction each), starts two real
//! proxies (`weft proxy run`) following cluster 0's control plane, links the clusters (full mesh,
//! or every cluster with a hub only) and measures:
//!
//! - each control plane's RSS before linking and once everything is imported;
//! - the time from the first `weft link apply` to every link showing all of its peer's services
//!   and endpoints imported (`GET /v1/links`, polled every 20 ms), and to the all-services proxy
//!   applying the update that holds them all (its `applied config` log line, with its timestamp);
//! - the time from an endpoint registered in cluster 1 (the API write) to each proxy following
//!   cluster 0 having applied the update that carries it: the proxies' `weft_config_version`
//!   gauge (set after the new routes are installed) is polled every 1 ms on their admin port;
//!   the narrow proxy's `/config_dump` is then checked to hold the new endpoint;
//! - per endpoint change: every control plane's CPU; and the size of one full link snapshot
//!   (what the exporter sends each importer on every change: the file the importer saves).

use crate::procstat;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(clap::Args, Clone)]
pub struct McScaleArgs {
    /// The `weft` binary (control planes and proxies).
    #[arg(long, default_value = "target/release/weft")]
    pub weft: PathBuf,
    #[arg(long, default_value_t = 5)]
    pub clusters: usize,
    /// Exported services per cluster (distinct names per cluster).
    #[arg(long, default_value_t = 1000)]
    pub services: usize,
    /// Endpoints per cluster, spread evenly over its services.
    #[arg(long, default_value_t = 10000)]
    pub endpoints: usize,
    /// Endpoint changes measured (registrations in cluster 1).
    #[arg(long, default_value_t = 100)]
    pub changes: usize,
    /// `mesh`: every cluster links to every other; `hub`: cluster 0 links to every other, and
    /// every other to cluster 0 only.
    #[arg(long, default_value = "mesh")]
    pub topology: String,
}

struct Cp {
    dir: PathBuf,
    api: Api,
    grpc: SocketAddr,
    token: String,
    child: Child,
}

impl Drop for Cp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Px {
    admin: SocketAddr,
    log: PathBuf,
    child: Child,
}

impl Drop for Px {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// A control plane's HTTP API: TLS, trusting the root in its data directory.
struct Api {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
}

impl Api {
    /// Once `weft control` has written its root (`<data>/ca/root.pem`).
    fn new(addr: SocketAddr, data: &Path) -> anyhow::Result<Api> {
        let pem = std::fs::read_to_string(data.join("ca/root.pem"))?;
        let roots = weft_identity::https::certs_from_pem(&pem, "ca/root.pem")?;
        Ok(Api { addr, tls: Arc::new(weft_identity::https::client_config(&roots)?) })
    }
}

/// One HTTP/1.1 request over TLS to a control plane's API, `Connection: close`; (status, body).
fn https(api: &Api, method: &str, path: &str, token: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let tcp = TcpStream::connect_timeout(&api.addr, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(120)))?;
    let name = rustls::pki_types::ServerName::from(api.addr.ip());
    let conn = rustls::ClientConnection::new(api.tls.clone(), name)?;
    exchange(rustls::StreamOwned::new(conn, tcp), method, path, token, body)
}

/// One plaintext HTTP/1.1 request with `Connection: close` (a proxy's admin port); (status, body).
fn http(addr: SocketAddr, method: &str, path: &str, token: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    exchange(s, method, path, token, body)
}

fn exchange(
    mut s: impl Read + Write,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let auth = if token.is_empty() { String::new() } else { format!("Authorization: Bearer {token}\r\n") };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: bench\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    s.flush()?;
    let mut out = Vec::new();
    // A TLS server may close without close_notify once it has answered.
    match s.read_to_end(&mut out) {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {}
        r => {
            r?;
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(h, b)| dechunk(h, b)).unwrap_or_default();
    Ok((status, body))
}

fn dechunk(head: &str, body: &str) -> String {
    if !head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return body.to_string();
    }
    let (mut out, mut rest) = (String::new(), body);
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

fn ok(r: anyhow::Result<(u16, String)>, what: &str) -> anyhow::Result<String> {
    let (status, body) = r?;
    anyhow::ensure!(status == 200, "{what}: HTTP {status}: {}", body.chars().take(400).collect::<String>());
    Ok(body)
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn start_cp(weft: &Path, root: &Path, name: &str) -> anyhow::Result<Cp> {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir)?;
    let (grpc, api): (SocketAddr, SocketAddr) =
        (format!("127.0.0.1:{}", free_port()).parse()?, format!("127.0.0.1:{}", free_port()).parse()?);
    let log = std::fs::File::create(root.join(format!("{name}.log")))?;
    let child = Command::new(weft)
        .args(["control", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--grpc", &grpc.to_string(), "--api", &api.to_string(), "--dns", "off", "--cluster", name])
        .args(["--trust-domain", &format!("{name}.local")])
        // MCSCALE_CP_LOG (e.g. `weft_control=debug`, which logs how long each catalog build
        // took) sets the control planes' log filter; their logs are then kept.
        .env("RUST_LOG", std::env::var("MCSCALE_CP_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| anyhow::anyhow!("start {}: {e}", weft.display()))?;
    let mut child = child;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let (Ok(t), Ok(api)) =
            (std::fs::read_to_string(dir.join("data/admin.token")), Api::new(api, &dir.join("data")))
        {
            if https(&api, "GET", "/live", "", "").is_ok_and(|(s, _)| s == 200) {
                return Ok(Cp { dir: dir.clone(), api, grpc, token: t.trim().to_string(), child });
            }
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("control plane {name} did not start (see {name}.log)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn svc_name(cluster: usize, s: usize) -> String {
    format!("c{cluster}-s{s:04}")
}

/// Services and endpoints of cluster `c`, registered in batches of 1,000 resources.
fn register(cp: &Cp, c: usize, a: &McScaleArgs) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let mut docs: Vec<serde_json::Value> = (0..a.services)
        .map(|s| {
            serde_json::json!({"apiVersion": "weft.io/v1alpha1", "kind": "Service",
                "metadata": {"name": svc_name(c, s)}, "spec": {"export": true, "ports": [{"port": 8080}]}})
        })
        .collect();
    for e in 0..a.endpoints {
        let s = e % a.services;
        docs.push(serde_json::json!({"apiVersion": "weft.io/v1alpha1", "kind": "Workload",
            "metadata": {"name": format!("w{e:05}")},
            "spec": {"service": svc_name(c, s), "address": format!("10.{}.{}.{}", c + 1, e / 250, e % 250 + 1), "port": 8080}}));
    }
    for batch in docs.chunks(1000) {
        let body = serde_json::Value::Array(batch.to_vec()).to_string();
        ok(https(&cp.api, "POST", "/v1/apply", &cp.token, &body), "register")?;
    }
    Ok(t.elapsed())
}

fn bootstrap_token(cp: &Cp) -> anyhow::Result<String> {
    let body = ok(
        https(&cp.api, "POST", "/v1/tokens", &cp.token, r#"{"kind":"bootstrap","identity":"default/web"}"#),
        "token",
    )?;
    let v: serde_json::Value = serde_json::from_str(&body)?;
    Ok(v["token"].as_str().unwrap_or_default().to_string())
}

fn start_proxy(weft: &Path, root: &Path, cp: &Cp, name: &str, upstreams: &[String]) -> anyhow::Result<Px> {
    let token = bootstrap_token(cp)?;
    let tf = root.join(format!("{name}.token"));
    std::fs::write(&tf, &token)?;
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
    let ups = upstreams.iter().map(|u| format!("{u:?}")).collect::<Vec<_>>().join(", ");
    let cfg = format!(
        "mode: sidecar\ncontrol:\n  address: \"{}\"\n  token_file: {:?}\n  proxy_id: {name}\n  upstreams: [{ups}]\nadmin: {{ listen: \"{admin}\" }}\ninbound: {{ listen: \"127.0.0.1:0\", ports: [{{ port: 8080 }}] }}\n",
        cp.grpc,
        tf.display().to_string()
    );
    let cf = root.join(format!("{name}.yaml"));
    std::fs::write(&cf, cfg)?;
    let log = root.join(format!("{name}.log"));
    let child = Command::new(weft)
        .args(["proxy", "run", "--config"])
        .arg(&cf)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::fs::File::create(root.join(format!("{name}.out")))?)
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let px = Px { admin, log, child };
    let deadline = Instant::now() + Duration::from_secs(60);
    while config_version(&px).is_none() {
        anyhow::ensure!(Instant::now() < deadline, "proxy {name} did not come up (see {name}.log)");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(px)
}

/// The proxy's `weft_config_version` (the last discovery update it applied).
fn config_version(px: &Px) -> Option<i64> {
    let (s, body) = http(px.admin, "GET", "/metrics", "", "").ok()?;
    if s != 200 {
        return None;
    }
    body.lines().find(|l| l.starts_with("weft_config_version")).and_then(|l| l.split_whitespace().last()?.parse().ok())
}

/// Seconds since midnight UTC of a tracing timestamp (`2026-12-06T23:20:01.123456Z ...`).
fn log_time(line: &str) -> Option<f64> {
    let t = line.split_whitespace().next()?.split_once('T')?.1.trim_end_matches('Z');
    let mut it = t.split(':');
    let (h, m, s): (f64, f64, f64) = (it.next()?.parse().ok()?, it.next()?.parse().ok()?, it.next()?.parse().ok()?);
    Some(h * 3600.0 + m * 60.0 + s)
}

fn now_of_day() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64() % 86400.0).unwrap_or(0.0)
}

fn pctl(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * v.len() as f64 - 1e-9).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn links_done(cp: &Cp, a: &McScaleArgs, want: usize) -> bool {
    let Ok((200, body)) = https(&cp.api, "GET", "/v1/links", &cp.token, "") else { return false };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else { return false };
    let links = v["links"].as_array().cloned().unwrap_or_default();
    links.len() == want
        && links.iter().all(|l| {
            l["importedServices"].as_u64() == Some(a.services as u64)
                && l["importedEndpoints"].as_u64() == Some(a.endpoints as u64)
        })
}

pub fn run(a: &McScaleArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.clusters >= 2, "--clusters: at least 2");
    anyhow::ensure!(a.services >= 1 && a.endpoints >= a.services, "--endpoints must be at least --services");
    anyhow::ensure!(a.topology == "mesh" || a.topology == "hub", "--topology: mesh or hub");
    let root = std::env::temp_dir().join(format!("weft-mcscale-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    let r = run_in(a, &root);
    match &r {
        Ok(()) if std::env::var_os("MCSCALE_CP_LOG").is_some() => eprintln!("logs kept in {}", root.display()),
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&root);
        }
        Err(_) => eprintln!("logs kept in {}", root.display()),
    }
    r
}

fn run_in(a: &McScaleArgs, root: &Path) -> anyhow::Result<()> {
    let n = a.clusters;
    println!(
        "== {n} control planes ({}), {} exported services and {} endpoints each, {} changes",
        a.topology, a.services, a.endpoints, a.changes
    );
    let mut cps = vec![];
    for i in 0..n {
        cps.push(start_cp(&a.weft, root, &format!("c{i}"))?);
    }
    let pids: Vec<u32> = cps.iter().map(|c| c.child.id()).collect();
    let idle: Vec<u64> = pids.iter().map(|p| procstat::rss_kb(&[*p])).collect();
    // Registration, one thread per cluster.
    let times: Vec<anyhow::Result<Duration>> = std::thread::scope(|s| {
        let hs: Vec<_> = cps.iter().enumerate().map(|(i, cp)| s.spawn(move || register(cp, i, a))).collect();
        hs.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("panicked")))).collect()
    });
    for (i, t) in times.into_iter().enumerate() {
        println!("registered cluster c{i} in {:.1} s", t?.as_secs_f64());
    }
    // Proxies following c0: one asking for one service of c1, one for every service.
    let narrow = start_proxy(&a.weft, root, &cps[0], "proxy-narrow", &[format!("{}.default", svc_name(1, 0))])?;
    let wide = start_proxy(&a.weft, root, &cps[0], "proxy-all", &[])?;
    std::thread::sleep(Duration::from_secs(2));
    let own: Vec<(u64, u64)> = pids.iter().map(|p| (procstat::rss_kb(&[*p]), procstat::rss_anon_kb(&[*p]))).collect();

    // Links.
    let creds: Vec<String> = cps
        .iter()
        .map(|cp| {
            let b = ok(https(&cp.api, "POST", "/v1/links/credential", &cp.token, "{}"), "credential")?;
            let v: serde_json::Value = serde_json::from_str(&b)?;
            Ok(v["credential"].as_str().unwrap_or_default().to_string())
        })
        .collect::<anyhow::Result<_>>()?;
    let pairs: Vec<(usize, usize)> = if a.topology == "mesh" {
        (0..n).flat_map(|i| (0..n).filter(move |j| *j != i).map(move |j| (i, j))).collect()
    } else {
        (1..n).flat_map(|j| [(0, j), (j, 0)]).collect()
    };
    let want: Vec<usize> = (0..n).map(|i| pairs.iter().filter(|(x, _)| *x == i).count()).collect();
    let wall0 = now_of_day();
    let t0 = Instant::now();
    for (i, j) in &pairs {
        ok(https(&cps[*i].api, "POST", "/v1/links", &cps[*i].token, &creds[*j]), "link apply")?;
    }
    let applied = t0.elapsed();
    let mut done: Vec<Option<Duration>> = vec![None; n];
    let deadline = Instant::now() + Duration::from_secs(600);
    while done.iter().any(Option::is_none) {
        for i in 0..n {
            if done[i].is_none() && links_done(&cps[i], a, want[i]) {
                done[i] = Some(t0.elapsed());
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "the imports did not complete in 600 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let total_services = a.services * (1 + want[0]);
    println!(
        "links: {} applied in {:.2} s; every link's imports complete after (per control plane): {}",
        pairs.len(),
        applied.as_secs_f64(),
        done.iter()
            .enumerate()
            .map(|(i, d)| format!("c{i} {:.2} s", d.unwrap_or_default().as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // The all-services proxy: when it applied the update holding every service.
    let want_line = format!("services={total_services}");
    let deadline = Instant::now() + Duration::from_secs(120);
    let at = loop {
        let log = std::fs::read_to_string(&wide.log).unwrap_or_default();
        if let Some(t) = log.lines().find(|l| l.contains("applied config") && l.contains(&want_line)).and_then(log_time)
        {
            break Some(t);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    match at {
        Some(t) => println!(
            "proxy following c0 with every service: update with all {total_services} services applied {:.2} s after the first link apply",
            (t - wall0 + 86400.0) % 86400.0
        ),
        None => println!("proxy following c0 with every service: no update with {total_services} services seen in its log"),
    }
    std::thread::sleep(Duration::from_secs(3));
    let imported: Vec<(u64, u64)> =
        pids.iter().map(|p| (procstat::rss_kb(&[*p]), procstat::rss_anon_kb(&[*p]))).collect();
    for i in 0..n {
        println!(
            "c{i} RSS MiB: idle {:.1}; with its own services {:.1} (anon {:.1}); after import of {} links {:.1} (anon {:.1})",
            mib(idle[i]),
            mib(own[i].0),
            mib(own[i].1),
            want[i],
            mib(imported[i].0),
            mib(imported[i].1)
        );
    }
    let snap = std::fs::metadata(cps[0].dir.join("data/links/c1.snapshot")).map(|m| m.len()).unwrap_or(0);
    println!(
        "c1's link snapshot as saved by c0 (the protobuf of one full ExportSnapshot): {:.0} KiB",
        snap as f64 / 1024.0
    );

    // Endpoint changes in c1, seen by the proxies following c0.
    let (mut d_narrow, mut d_wide) = (vec![], vec![]);
    let cpu0: Vec<f64> = pids.iter().map(|p| procstat::cpu_ms(&[*p])).collect();
    for c in 0..a.changes {
        let (v_n, v_w) = (config_version(&narrow).unwrap_or(0), config_version(&wide).unwrap_or(0));
        let addr = format!("10.250.{}.{}", c / 250, c % 250 + 1);
        let w = serde_json::json!({"apiVersion": "weft.io/v1alpha1", "kind": "Workload",
            "metadata": {"name": format!("chg{c:05}")},
            "spec": {"service": svc_name(1, 0), "address": addr, "port": 8080}});
        let t = Instant::now();
        ok(https(&cps[1].api, "POST", "/v1/apply", &cps[1].token, &w.to_string()), "change")?;
        let (mut seen_n, mut seen_w) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen_n.is_none() || seen_w.is_none() {
            if seen_n.is_none() && config_version(&narrow).is_some_and(|v| v > v_n) {
                seen_n = Some(t.elapsed());
            }
            if seen_w.is_none() && config_version(&wide).is_some_and(|v| v > v_w) {
                seen_w = Some(t.elapsed());
            }
            anyhow::ensure!(Instant::now() < deadline, "change {c} did not reach the proxies in 60 s");
            std::thread::sleep(Duration::from_millis(1));
        }
        let dump = ok(http(narrow.admin, "GET", "/config_dump", "", ""), "config_dump")?;
        anyhow::ensure!(
            dump.contains(&format!("\"{addr}:8080\"")),
            "change {c}: {addr} not in the narrow proxy's routes"
        );
        d_narrow.push(seen_n.unwrap_or_default().as_secs_f64() * 1e3);
        d_wide.push(seen_w.unwrap_or_default().as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_millis(50));
    }
    let k = a.changes.max(1) as f64;
    let cpu: Vec<f64> = pids.iter().zip(&cpu0).map(|(p, c)| (procstat::cpu_ms(&[*p]) - c) / k).collect();
    for (what, d) in [("proxy asking for that service", &mut d_narrow), ("proxy with every service", &mut d_wide)] {
        let (p50, p90, p99, max) = (pctl(d, 50.0), pctl(d, 90.0), pctl(d, 99.0), pctl(d, 100.0));
        println!(
            "endpoint change in c1 -> {what} following c0 (from the API write): p50 {p50:.1} ms  p90 {p90:.1}  p99 {p99:.1}  max {max:.1} ({} changes)",
            d.len()
        );
    }
    println!(
        "per change (including the 50 ms pauses between changes): CPU-ms of each control plane {}",
        cpu.iter().enumerate().map(|(i, c)| format!("c{i} {c:.1}")).collect::<Vec<_>>().join(", ")
    );
    // What carried the changes: c0's link to c1 (full snapshots, deltas, resyncs) and c0's proxies.
    let links = ok(https(&cps[0].api, "GET", "/v1/links", &cps[0].token, ""), "links")?;
    let links: serde_json::Value = serde_json::from_str(&links)?;
    if let Some(l) = links["links"].as_array().and_then(|v| v.iter().find(|l| l["cluster"] == "c1")) {
        println!("c0's link to c1 applied (since the start): {}", l["updates"]);
    }
    let proxies = ok(https(&cps[0].api, "GET", "/v1/proxies", &cps[0].token, ""), "proxies")?;
    let proxies: serde_json::Value = serde_json::from_str(&proxies)?;
    for p in proxies["proxies"].as_array().into_iter().flatten() {
        println!("c0's proxy {}: updates full {}, delta {}", p["proxy_id"], p["updates_full"], p["updates_delta"]);
    }
    let fin: Vec<u64> = pids.iter().map(|p| procstat::rss_kb(&[*p])).collect();
    println!(
        "RSS MiB after the changes: {}; proxies: narrow {:.1}, every service {:.1}",
        fin.iter().enumerate().map(|(i, r)| format!("c{i} {:.1}", mib(*r))).collect::<Vec<_>>().join(", "),
        mib(procstat::rss_kb(&[narrow.child.id()])),
        mib(procstat::rss_kb(&[wide.child.id()]))
    );
    Ok(())
}
