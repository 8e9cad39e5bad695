//! `weft up`: a complete local mesh on this machine, from embedded defaults.
//!
//! ```text
//!  weft up (this process: CA + sidecars)          child processes (demo apps)
//!  ┌──────────────────────────────────────┐
//!  │ CA: root ─► intermediate "local"      │
//!  │ web sidecar  :upstream ══mTLS══╗     │       web  (frontend) ─► web sidecar upstream
//!  │ api-v1 sidecar :inbound ◄══════╣     │ ───►  api-v1 (echo)
//!  │ api-v2 sidecar :inbound ◄══════╝     │ ───►  api-v2 (echo)
//!  └──────────────────────────────────────┘
//! ```
//! Each sidecar's key is generated in this process, which is the process that uses it.

use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use weft_api::proxy::ProxyConfig;
use weft_identity::{Authority, CertStore, SpiffeId, DEFAULT_CA_LIFETIME};
use weft_proxy::Proxy;

const TRUST_DOMAIN: &str = "cluster.local";

#[derive(clap::Args)]
pub struct UpArgs {
    /// Port of the web frontend on 127.0.0.1 (0 picks a free port).
    #[arg(long, default_value_t = 0)]
    web_port: u16,
    /// Stop after this many demo requests (default: run until Ctrl-C).
    #[arg(long)]
    requests: Option<u64>,
    /// Time between demo requests, e.g. 1s, 500ms.
    #[arg(long, default_value = "1s")]
    interval: weft_api::Duration,
    /// Lifetime of workload certificates. Each sidecar gets a new one at half-life, without
    /// dropping connections; try `--cert-lifetime 1m` to watch rotations.
    #[arg(long, default_value = "24h")]
    cert_lifetime: weft_api::Duration,
}

/// Issues each sidecar a new certificate at half its lifetime, as the control plane will.
fn rotate_at_half_life(ca: Arc<Authority>, name: &'static str, store: CertStore, lifetime: Duration) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(store.leaf().remaining() / 2).await;
            match ca.issue(&store.id(), lifetime).map(|leaf| store.set_leaf(leaf)) {
                Ok(Ok(())) => println!(
                    "    rotated the certificate of {name} (new one valid {}s)",
                    store.leaf().remaining().as_secs()
                ),
                Ok(Err(e)) | Err(e) => {
                    eprintln!("    certificate rotation for {name} failed: {e}; retrying in 10s");
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
            }
        }
    });
}

struct App {
    child: Child,
    addr: SocketAddr,
}

/// Starts `weft demo-app ...` and waits for its `listening <addr>` line.
async fn spawn_app(args: &[&str]) -> anyhow::Result<App> {
    let exe = std::env::current_exe().context("cannot find the weft binary")?;
    let mut child = Command::new(exe)
        .arg("demo-app")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start demo app")?;
    let stdout = child.stdout.take().context("demo app stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .context("demo app did not start within 20s")??
        .context("demo app exited at start")?;
    let addr = line.strip_prefix("listening ").context("unexpected demo app output")?.parse()?;
    Ok(App { child, addr })
}

fn store(ca: &Authority, ns: &str, sa: &str, lifetime: Duration) -> anyhow::Result<CertStore> {
    let id = SpiffeId::workload(TRUST_DOMAIN, ns, sa)?;
    Ok(CertStore::new(ca.issue(&id, lifetime)?, ca.bundle())?)
}

async fn api_sidecar(ca: &Authority, app: SocketAddr, lifetime: Duration) -> anyhow::Result<Proxy> {
    let cfg = ProxyConfig::from_yaml(&format!(
        r#"
identity: {{ cert: in-memory, key: in-memory, bundle: in-memory }}
admin: {{ listen: "127.0.0.1:0" }}
inbound: {{ listen: "127.0.0.1:0", ports: [{{ port: {} }}] }}
"#,
        app.port()
    ))?;
    Ok(Proxy::start(cfg, store(ca, "default", "api", lifetime)?).await?)
}

pub fn run(args: UpArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(up(args))
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    println!("==> weft up: starting a local mesh (trust domain {TRUST_DOMAIN}, cluster local)");
    let root = Authority::new_root(TRUST_DOMAIN, DEFAULT_CA_LIFETIME)?;
    let ca = Arc::new(root.new_intermediate("local", DEFAULT_CA_LIFETIME)?);
    let lifetime: Duration = args.cert_lifetime.into();
    if lifetime < Duration::from_secs(1) {
        bail!("--cert-lifetime must be at least 1s");
    }
    println!(
        "    CA: root + intermediate for cluster local; workload certificates last {}, renewed at half-life",
        args.cert_lifetime
    );

    let v1 = spawn_app(&["--name", "api-v1"]).await?;
    let v2 = spawn_app(&["--name", "api-v2"]).await?;
    let s1 = api_sidecar(&ca, v1.addr, lifetime).await?;
    let s2 = api_sidecar(&ca, v2.addr, lifetime).await?;
    let api_id = SpiffeId::workload(TRUST_DOMAIN, "default", "api")?;
    let web_cfg = ProxyConfig::from_yaml(&format!(
        r#"
identity: {{ cert: in-memory, key: in-memory, bundle: in-memory }}
admin: {{ listen: "127.0.0.1:0" }}
outbound:
  upstreams: [{{ listen: "127.0.0.1:0", service: api }}]
services:
  - name: api
    endpoints:
      - {{ address: "{a1}", proxy: "{p1}", identity: "{api_id}", labels: {{ version: v1 }} }}
      - {{ address: "{a2}", proxy: "{p2}", identity: "{api_id}", labels: {{ version: v2 }} }}
"#,
        a1 = v1.addr,
        a2 = v2.addr,
        p1 = s1.addrs.inbound.context("inbound")?,
        p2 = s2.addrs.inbound.context("inbound")?,
    ))?;
    let web_sidecar = Proxy::start(web_cfg, store(&ca, "default", "web", lifetime)?).await?;
    for (name, p) in [("web", &web_sidecar), ("api-v1", &s1), ("api-v2", &s2)] {
        rotate_at_half_life(ca.clone(), name, p.certs().clone(), lifetime);
    }
    let upstream = web_sidecar.addrs.upstreams[0];
    let listen = format!("127.0.0.1:{}", args.web_port);
    let web = spawn_app(&["--name", "web", "--listen", &listen, "--upstream", &upstream.to_string()])
        .await
        .with_context(|| format!("cannot start the web frontend on {listen}; pick another --web-port"))?;

    let admin = |p: &Proxy| p.addrs.admin.map(|a| format!("http://{a}/metrics")).unwrap_or_default();
    println!("==> mesh is up");
    println!("    web      http://{}/   frontend; calls api through its sidecar ({upstream})", web.addr);
    println!(
        "    api-v1   app {}  sidecar mTLS {}  metrics {}",
        v1.addr,
        s1.addrs.inbound.unwrap_or(v1.addr),
        admin(&s1)
    );
    println!(
        "    api-v2   app {}  sidecar mTLS {}  metrics {}",
        v2.addr,
        s2.addrs.inbound.unwrap_or(v2.addr),
        admin(&s2)
    );
    println!(
        "    web sidecar metrics {}   config {}",
        admin(&web_sidecar),
        admin(&web_sidecar).replace("/metrics", "/config_dump")
    );
    println!("    try: curl http://{}/", web.addr);
    println!("==> demo traffic (Ctrl-C stops everything)");

    let mut tick = tokio::time::interval(args.interval.into());
    let mut sent = 0u64;
    let mut failures = 0u64;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            _ = tick.tick() => {}
        }
        if args.requests.is_some_and(|n| sent >= n) {
            break;
        }
        sent += 1;
        match crate::call::http_get(web.addr, "/")
            .await
            .and_then(|(_, body)| Ok(serde_json::from_str::<serde_json::Value>(&body)?))
        {
            Ok(v) if v["upstream_status"] == 200 => println!(
                "    web -> {} over mTLS: 200; api saw caller {}",
                v["upstream"]["app"].as_str().unwrap_or("?"),
                v["upstream"]["peer_identity"].as_str().unwrap_or("?")
            ),
            Ok(v) => {
                failures += 1;
                println!("    web -> api failed: {v}");
            }
            Err(e) => {
                failures += 1;
                println!("    web unreachable: {e}");
            }
        }
    }
    println!("==> stopping");
    for p in [web_sidecar, s1, s2] {
        p.shutdown().await;
    }
    for mut app in [web, v1, v2] {
        let _ = app.child.kill().await;
    }
    println!("==> stopped after {sent} requests ({failures} failed)");
    if failures > 0 {
        bail!("{failures} of {sent} demo requests failed");
    }
    Ok(())
}
