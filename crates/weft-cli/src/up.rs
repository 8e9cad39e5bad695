//! `weft up`: a complete local mesh on this machine, from embedded defaults.
//!
//! ```text
//!  weft up (this process)                                      child processes (demo apps)
//!  ┌──────────────────────────────────────────────────────┐
//!  │ control plane: store · CA · registry · health · DNS   │
//!  │   ▲ certificates (CSR) and discovery (gRPC)           │
//!  │ web sidecar    :upstream ══mTLS══╗                    │    web (frontend) ─► web sidecar
//!  │ api-v1 sidecar :inbound ◄════════╣  round robin       │ ─► api-v1 (echo)
//!  │ api-v2 sidecar :inbound ◄════════╝                    │ ─► api-v2 (echo)
//!  └──────────────────────────────────────────────────────┘
//! ```
//! The sidecars get their keys made here, their certificates from the control plane's CA (with
//! bootstrap tokens) and their routes from its discovery stream, exactly as `weft proxy run`
//! processes do. The api workloads are registered with HTTP health checks, web without (the
//! same Workloads as `weft up --netns`).

use anyhow::Context;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use weft_api::proxy::{Control, ProxyConfig};
use weft_api::resource::parse_documents;
use weft_control::tokens::Grant;
use weft_control::{ControlConfig, ControlPlane};
use weft_proxy::Proxy;

#[derive(clap::Args)]
pub struct UpArgs {
    /// Port of the web frontend on 127.0.0.1 (0 picks a free port).
    #[arg(long, default_value_t = 0)]
    pub(crate) web_port: u16,
    /// Stop after this many demo requests (default: run until Ctrl-C).
    #[arg(long)]
    pub(crate) requests: Option<u64>,
    /// Time between demo requests, e.g. 1s, 500ms.
    #[arg(long, default_value = "1s")]
    pub(crate) interval: weft_api::Duration,
    /// Lifetime of workload certificates. Each sidecar renews at half-life without dropping
    /// connections; try `--cert-lifetime 1m` to watch rotations.
    /// Default: 24h, or the file's `mesh.leafLifetime`.
    #[arg(long)]
    pub(crate) cert_lifetime: Option<weft_api::Duration>,
    /// Keep the control plane's state here (default: a fresh temporary directory); with several
    /// clusters, each cluster's in `<dir>/<cluster>`.
    #[arg(long)]
    pub(crate) data_dir: Option<std::path::PathBuf>,
    /// How many linked clusters the demo runs (1 to 8, default 2). Each cluster has its own
    /// control plane, root CA, trust domain (`<name>.local`) and east-west gateway, and every pair
    /// is linked both ways (`weft link create` on one, `weft link apply` on the other). They are
    /// named east, west, then c3, c4, ...; web and api-v1 run in east, api-v2 in west, api-vN in
    /// cN, and web's calls to api cross between them. `--clusters 1` is a single cluster
    /// (`local`, trust domain `cluster.local`). A file (-f) lays out its own clusters.
    #[arg(long, value_name = "N")]
    pub(crate) clusters: Option<usize>,
    /// Run the services and workloads (commands) of this file instead of the built-in demo; see
    /// docs/getting-started.md for its format (`clusters:` in it lays out several clusters).
    #[arg(short = 'f', long = "file")]
    pub(crate) file: Option<std::path::PathBuf>,
    /// As root: run each workload in its own network namespace (a "pod" on a bridge), with its
    /// sidecar as a separate process and iptables interception, as in Kubernetes. Apps call each
    /// other by mesh DNS name; nothing in them knows about the mesh. Everything is removed on exit.
    /// Alone, or with a file: one cluster. With --clusters N (2 or more): the demo's clusters,
    /// each on its own bridge with its control plane and pods, joined only through their
    /// east-west gateways on a shared WAN bridge.
    #[arg(long)]
    pub(crate) netns: bool,
    /// Do not serve the web dashboard (by default each control plane serves one on a free
    /// 127.0.0.1 port, printed with a one-time login URL; see docs/dashboard.md).
    #[arg(long)]
    pub(crate) no_dashboard: bool,
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
    let line = wait_for_line(&mut child, "listening ", "demo app").await?;
    let addr = line.strip_prefix("listening ").context("unexpected demo app output")?.parse()?;
    Ok(App { child, addr })
}

/// How long a started process (control plane, proxy, app) may take to print its ready line. A
/// bound for a process that hangs, not a timing: one that fails exits and is reported at once, and
/// on a loaded 2-core machine a start can take tens of seconds.
const PROCESS_READY_WITHIN: Duration = Duration::from_secs(90);

/// Reads `child`'s stdout until a line containing `marker` (at most [`PROCESS_READY_WITHIN`]) and
/// returns that line; the rest of its output is drained in the background so it never blocks on a
/// full pipe.
pub(crate) async fn wait_for_line(child: &mut Child, marker: &str, what: &str) -> anyhow::Result<String> {
    let mut lines = BufReader::new(child.stdout.take().context("stdout not piped")?).lines();
    let found = tokio::time::timeout(PROCESS_READY_WITHIN, async {
        while let Ok(Some(l)) = lines.next_line().await {
            if l.contains(marker) {
                return Some(l);
            }
        }
        None
    })
    .await;
    let line = match found {
        Ok(Some(l)) => l,
        Ok(None) => anyhow::bail!("{what} exited at start"),
        Err(_) => anyhow::bail!("{what} not ready within {}s", PROCESS_READY_WITHIN.as_secs()),
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(line)
}

/// A sidecar in this process that follows the control plane like a `weft proxy run` would.
async fn sidecar(cp: &ControlPlane, sa: &str, proxy_id: &str, yaml: &str) -> anyhow::Result<Proxy> {
    follower(cp, sa, proxy_id, Some(proxy_id), yaml).await
}

/// A proxy in this process (sidecar or gateway, as `yaml` says) with identity `default/<sa>`,
/// following the control plane like a `weft proxy run` would; `workload` names the Workload whose
/// ports the control plane sends it as inbound ports.
pub(crate) async fn follower(
    cp: &ControlPlane,
    sa: &str,
    proxy_id: &str,
    workload: Option<&str>,
    yaml: &str,
) -> anyhow::Result<Proxy> {
    let token = cp.tokens.issue(Grant::Bootstrap { namespace: "default".into(), service_account: sa.into() }, None);
    let control = Control {
        proxy_id: Some(proxy_id.into()),
        workload: workload.map(String::from),
        ..Control::new(cp.grpc_addr, token)
    };
    let mut cfg = ProxyConfig::from_yaml(&format!(
        "control: {{ address: \"{}\", token: t }}\nadmin: {{ listen: \"127.0.0.1:0\" }}\n{yaml}",
        cp.grpc_addr
    ))?;
    cfg.control = Some(control.clone());
    let store = weft_proxy::control::bootstrap(&control, 0).await?;
    let mut p = Proxy::start(cfg, store).await?;
    p.follow_control_plane(control);
    Ok(p)
}

/// The demo's resources: the api Service and its two versions, each with an HTTP health check,
/// and the web Service and its one Workload (no check), as `weft up --netns` registers them.
/// `[api-v1, api-v2, web]`, each as (app, sidecar inbound).
fn demo_resources([(v1, s1), (v2, s2), (web, sw)]: [(SocketAddr, SocketAddr); 3]) -> String {
    let workload = |name: &str, version: &str, app: SocketAddr, sidecar: SocketAddr| {
        format!(
            "---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: {name}, labels: {{ version: {version} }} }}\nspec:\n  service: api\n  address: {}\n  port: {}\n  sidecar: \"{sidecar}\"\n  tags: [{version}]\n  checks: [{{ name: http, http: \"http://{app}/health\", interval: 2s, timeout: 1s }}]\n",
            app.ip(),
            app.port()
        )
    };
    format!(
        "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: api }}\nspec: {{ ports: [{{ port: {}, protocol: auto }}] }}\n{}{}---\napiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: web }}\nspec: {{ ports: [{{ port: {}, protocol: auto }}] }}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: web }}\nspec:\n  service: web\n  address: {}\n  port: {}\n  sidecar: \"{sw}\"\n",
        v1.port(),
        workload("api-v1", "v1", v1, s1),
        workload("api-v2", "v2", v2, s2),
        web.port(),
        web.ip(),
        web.port()
    )
}

/// What `weft up` runs, from its flags and file: checked before anything starts.
enum Layout {
    /// One cluster: the built-in demo, or a file without `clusters`.
    Single(Option<crate::upfile::UpFile>),
    /// Several linked clusters: the built-in demo spread over them, or a file with `clusters`.
    Multi {
        file: crate::upfile::UpFile,
        demo: bool,
    },
    Netns(crate::up_netns::Plan),
    /// The demo over N clusters, each on its own network in namespaces, joined through gateways.
    NetnsClusters(usize),
    /// A file's clusters, each on its own network in namespaces, joined through gateways.
    NetnsFileClusters(crate::up_netns::Plan, Vec<crate::upfile::FileCluster>),
}

fn layout(args: &UpArgs) -> anyhow::Result<Layout> {
    use crate::upfile::MAX_CLUSTERS;
    if let Some(n) = args.clusters {
        if n == 0 || n > MAX_CLUSTERS {
            anyhow::bail!(
                "--clusters: {n} is not a number of clusters weft up can run; give 1 (a single cluster) to {MAX_CLUSTERS} (default 2: east and west)"
            );
        }
    }
    if let (Some(n), Some(f)) = (args.clusters, &args.file) {
        anyhow::bail!(
            "--clusters {n}: {} lays out its own clusters (its `clusters:` list, or one cluster without it); drop --clusters",
            f.display()
        );
    }
    let file = args.file.as_deref().map(crate::upfile::UpFile::read).transpose()?;
    let several = file.as_ref().map(|f| !f.clusters.is_empty()).unwrap_or(args.clusters != Some(1));
    if args.netns {
        if let Some(n) = args.clusters.filter(|&n| n > 1) {
            return Ok(Layout::NetnsClusters(n));
        }
        return Ok(match file {
            // A file's clusters, each on its own network.
            Some(mut f) if !f.clusters.is_empty() => {
                let clusters = std::mem::take(&mut f.clusters);
                Layout::NetnsFileClusters(crate::up_netns::Plan::from_file(f)?, clusters)
            }
            Some(f) => Layout::Netns(crate::up_netns::Plan::from_file(f)?),
            None => Layout::Netns(crate::up_netns::Plan::demo()),
        });
    }
    Ok(match file {
        Some(file) if several => Layout::Multi { file, demo: false },
        None if several => {
            Layout::Multi { file: crate::up_multi::demo(args.clusters.unwrap_or(2), args.web_port), demo: true }
        }
        file => Layout::Single(file),
    })
}

pub fn run(args: UpArgs) -> anyhow::Result<()> {
    let layout = layout(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = rt.block_on(async move {
        // Before anything is made: a signal while starting cleans up what was made so far.
        let interrupt = crate::interrupt::Interrupt::listen();
        match layout {
            Layout::Netns(plan) => crate::up_netns::up(plan, &args, &interrupt).await,
            Layout::NetnsClusters(n) => crate::up_netns_clusters::up(n, &args, &interrupt).await,
            Layout::NetnsFileClusters(plan, clusters) => {
                crate::up_netns_clusters::up_file(plan, &clusters, &args, &interrupt).await
            }
            Layout::Multi { file, demo } => crate::up_multi::up(file, demo, &args, &interrupt).await,
            Layout::Single(file) => up(args, file, &interrupt).await,
        }
    });
    rt.shutdown_timeout(Duration::from_millis(200));
    result
}

/// The mesh settings for the control plane: the file's `mesh`, or the defaults; `--cert-lifetime`
/// wins over both.
pub(crate) fn mesh_config(
    args: &UpArgs,
    file: Option<&weft_api::kinds::MeshConfigSpec>,
) -> weft_api::kinds::MeshConfigSpec {
    let mut mesh = file.cloned().unwrap_or_default();
    if let Some(l) = args.cert_lifetime {
        mesh.leaf_lifetime = l;
    }
    println!("==> weft up: starting a local mesh (trust domain {}, cluster {})", mesh.trust_domain, mesh.cluster.name);
    mesh
}

async fn up(
    args: UpArgs,
    file: Option<crate::upfile::UpFile>,
    interrupt: &crate::interrupt::Interrupt,
) -> anyhow::Result<()> {
    let mesh = mesh_config(&args, file.as_ref().and_then(|f| f.mesh.as_ref()));
    if crate::netns::unavailable().is_none() {
        println!("    (running as root: `weft up --netns` puts each workload in its own network namespace)");
    }
    let data_dir =
        args.data_dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("weft-up-{}", std::process::id())));
    let mut cfg = ControlConfig::new(data_dir.clone());
    cfg.grpc = "127.0.0.1:0".parse()?;
    cfg.api = "127.0.0.1:0".parse()?;
    cfg.dns = Some("127.0.0.1:0".parse()?);
    cfg.dashboard = (!args.no_dashboard).then(|| ([127, 0, 0, 1], 0).into());
    // The control plane's own /metrics, on a free loopback port (printed with the dashboard).
    cfg.metrics = Some(([127, 0, 0, 1], 0).into());
    let leaf_lifetime = mesh.leaf_lifetime;
    cfg.mesh = mesh;
    let cp = ControlPlane::start(cfg).await?;
    if let Some(file) = file {
        let result = from_file(&cp, file, &args, interrupt).await;
        drop(cp);
        if args.data_dir.is_none() {
            let _ = std::fs::remove_dir_all(&data_dir);
        }
        return result;
    }
    println!(
        "    control plane: CA (root + intermediate), store in {}; certificates last {}, renewed at half-life",
        data_dir.display(),
        leaf_lifetime
    );

    let v1 = spawn_app(&["--name", "api-v1", "--app-version", "v1"]).await?;
    let v2 = spawn_app(&["--name", "api-v2", "--app-version", "v2"]).await?;
    // No app ports here: the control plane sends each sidecar its Workload's port.
    let inbound = "inbound: { listen: \"127.0.0.1:0\" }\n";
    let s1 = sidecar(&cp, "api", "api-v1", inbound).await?;
    let s2 = sidecar(&cp, "api", "api-v2", inbound).await?;
    let (i1, i2) = (s1.addrs.inbound.context("inbound")?, s2.addrs.inbound.context("inbound")?);
    // web is a Workload too, as under `--netns`: its sidecar also has an inbound listener.
    let outbound = "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: api }] }\n";
    let web_sidecar = sidecar(&cp, "web", "web", &format!("{inbound}{outbound}")).await?;
    let upstream = web_sidecar.addrs.upstreams[0];
    let listen = format!("127.0.0.1:{}", args.web_port);
    let web = spawn_app(&["--name", "web", "--listen", &listen, "--upstream", &upstream.to_string()])
        .await
        .with_context(|| format!("cannot start the web frontend on {listen}; pick another --web-port"))?;
    let iw = web_sidecar.addrs.inbound.context("inbound")?;
    cp.store.apply(parse_documents(&demo_resources([(v1.addr, i1), (v2.addr, i2), (web.addr, iw)]))?)?;

    // Wait (bounded) until discovery and the health checks have put both versions in web's routes.
    let ready = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let n = web_sidecar.ctx().routes.load().service("api", "default").map(|s| s.endpoints.len()).unwrap_or(0);
            if n == 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if ready.is_err() {
        println!(
            "    (api is not routable yet: its health checks may be failing; see `weft describe workload api-v1`)"
        );
    }

    let admin = |p: &Proxy| p.addrs.admin.map(|a| format!("http://{a}/metrics")).unwrap_or_default();
    println!("==> mesh is up");
    println!("    web      http://{}/   frontend; calls api through its sidecar ({upstream})", web.addr);
    println!("    api-v1   app {}  sidecar mTLS {i1}  metrics {}", v1.addr, admin(&s1));
    println!("    api-v2   app {}  sidecar mTLS {i2}  metrics {}", v2.addr, admin(&s2));
    println!(
        "    web sidecar mTLS {iw}  metrics {}   config {}",
        admin(&web_sidecar),
        admin(&web_sidecar).replace("/metrics", "/config_dump")
    );
    if let Some(d) = cp.dns_addr {
        println!(
            "    DNS      dig @{} -p {} api.service.consul   (also api.default.svc.cluster.local)",
            d.ip(),
            d.port()
        );
    }
    crate::dashboard::print_up(&cp, "    ");
    println!("    try:     curl http://{}/", web.addr);
    println!("    and:     {}", crate::client::export_cp(&cp));
    println!("             weft get workloads; weft proxy-status; weft check");
    println!("==> demo traffic (Ctrl-C stops everything)");

    let sidecars = [("web", &web_sidecar), ("api-v1", &s1), ("api-v2", &s2)];
    let mut expiry: Vec<_> = sidecars.iter().map(|(_, p)| p.certs().leaf().not_after()).collect();
    let (sent, failures) = demo_traffic(web.addr, &args, interrupt, None, || {
        for (i, (name, p)) in sidecars.iter().enumerate() {
            let now = p.certs().leaf().not_after();
            if now != expiry[i] {
                expiry[i] = now;
                println!(
                    "    rotated the certificate of {name} (new one valid {}s)",
                    p.certs().leaf().remaining().as_secs()
                );
            }
        }
    })
    .await;
    println!("==> stopping");
    for p in [web_sidecar, s1, s2] {
        p.shutdown().await;
    }
    for mut app in [web, v1, v2] {
        let _ = app.child.kill().await;
    }
    drop(cp);
    if args.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    stopped(sent, failures)
}

/// Waits for Ctrl-C/SIGTERM or, with `--requests n`, for n intervals (for scripts and tests).
pub(crate) async fn run_until_stopped(args: &UpArgs, interrupt: &crate::interrupt::Interrupt) {
    let ctrl_c = interrupt.wait();
    match args.requests {
        Some(n) => tokio::select! {
            _ = ctrl_c => {}
            _ = tokio::time::sleep(Duration::from(args.interval) * n as u32) => {}
        },
        None => ctrl_c.await,
    }
}

/// The last line of a demo run, and its verdict.
pub(crate) fn stopped(sent: u64, failures: u64) -> anyhow::Result<()> {
    println!("==> stopped after {sent} requests ({failures} failed)");
    if failures > 0 {
        anyhow::bail!("{failures} of {sent} demo requests failed");
    }
    Ok(())
}

/// Where the demo's apps run, with several clusters: web's cluster, and each app's by name.
pub(crate) struct Placement {
    pub web: String,
    pub apps: std::collections::BTreeMap<String, String>,
}

/// How many answers [`demo_traffic`] sums up in each of its split lines.
const SPLIT_WINDOW: u64 = 20;

/// Calls the web frontend every `--interval` until Ctrl-C/SIGTERM or `--requests`, printing what
/// each call shows of the mesh path (with `placement`, which cluster each side is in) and, every
/// [`SPLIT_WINDOW`] answers, how they were split between the api versions; `each` runs before
/// every call. Returns (sent, failed).
pub(crate) async fn demo_traffic(
    web: SocketAddr,
    args: &UpArgs,
    interrupt: &crate::interrupt::Interrupt,
    placement: Option<&Placement>,
    mut each: impl FnMut(),
) -> (u64, u64) {
    let mut tick = tokio::time::interval(args.interval.into());
    let (mut sent, mut failures) = (0u64, 0u64);
    let mut window: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let ctrl_c = interrupt.wait();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            // A signal that came before the first tick (while starting) ends it before any call.
            biased;
            _ = &mut ctrl_c => break,
            _ = tick.tick() => {}
        }
        each();
        if args.requests.is_some_and(|n| sent >= n) {
            break;
        }
        sent += 1;
        let answer = crate::call::http_get(web, "/")
            .await
            .and_then(|(_, body)| Ok(serde_json::from_str::<serde_json::Value>(&body)?));
        match answer {
            Ok(v) if v["upstream_status"] == 200 => {
                let app = v["upstream"]["app"].as_str().unwrap_or("?");
                let path = match placement {
                    None => format!("web -> {app}"),
                    Some(p) => {
                        format!("web ({}) -> {app} ({})", p.web, p.apps.get(app).map(String::as_str).unwrap_or("?"))
                    }
                };
                let version =
                    v["upstream"]["app_version"].as_str().map(|v| format!("; version {v}")).unwrap_or_default();
                println!(
                    "    {path} over mTLS: 200; api saw caller {}{version}",
                    v["upstream"]["peer_identity"].as_str().unwrap_or("?")
                );
                *window.entry(app.to_string()).or_default() += 1;
            }
            Ok(v) => {
                failures += 1;
                *window.entry("failed".to_string()).or_default() += 1;
                println!("    web -> api failed: {v}");
            }
            Err(e) => {
                failures += 1;
                *window.entry("failed".to_string()).or_default() += 1;
                println!("    web unreachable: {e}");
            }
        }
        if sent % SPLIT_WINDOW == 0 {
            println!("{}", split_line(&std::mem::take(&mut window)));
        }
    }
    (sent, failures)
}

/// `    split of the last 20 answers: api-v1 18 (90%), api-v2 2 (10%)`.
fn split_line(window: &std::collections::BTreeMap<String, u64>) -> String {
    let total: u64 = window.values().sum();
    let parts: Vec<String> =
        window.iter().map(|(app, n)| format!("{app} {n} ({:.0}%)", *n as f64 * 100.0 / total.max(1) as f64)).collect();
    format!("    split of the last {total} answers: {}", parts.join(", "))
}

/// A port free on 127.0.0.1 now, never one this process handed out before: the kernel may give
/// a just-released port again, and two processes of the mesh told the same port (an app and its
/// sidecar) fail with "Address already in use".
pub(crate) fn free_port() -> anyhow::Result<u16> {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    for _ in 0..1000 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if handed.insert(port) {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port on 127.0.0.1 that was not handed out already")
}

/// A file's workload, running: its sidecar and its command.
pub(crate) struct Started {
    pub proxy: Proxy,
    pub child: Child,
    /// The app's port on 127.0.0.1.
    pub port: u16,
    pub inbound: SocketAddr,
    /// Service name -> the sidecar's upstream listener for it.
    pub upstreams: std::collections::BTreeMap<String, String>,
    pub argv: Vec<String>,
    /// The Workload to register (a YAML document).
    pub resource: String,
}

/// Starts one workload of a file: its sidecar (following `cp`), then its command with `{port}`
/// and `{upstream.<service>}` filled in. Registering it (`resource`) is the caller's.
pub(crate) async fn start_workload(
    cp: &ControlPlane,
    service: &str,
    w: &crate::upfile::FileWorkload,
) -> anyhow::Result<Started> {
    use std::collections::BTreeMap;
    let port = match w.port {
        Some(p) => p,
        None => free_port()?,
    };
    let ups: String = w.upstreams.iter().map(|u| format!("{{ listen: \"127.0.0.1:0\", service: {u} }},")).collect();
    let mut yaml = "inbound: { listen: \"127.0.0.1:0\" }\n".to_string();
    if !ups.is_empty() {
        yaml.push_str(&format!("outbound: {{ upstreams: [{}] }}\n", ups.trim_end_matches(',')));
    }
    let proxy = sidecar(cp, service, &w.name, &yaml).await?;
    let upstreams: BTreeMap<String, String> =
        w.upstreams.iter().cloned().zip(proxy.addrs.upstreams.iter().map(|a| a.to_string())).collect();
    let argv =
        w.command.iter().map(|a| crate::upfile::expand(a, port, &upstreams)).collect::<anyhow::Result<Vec<_>>>()?;
    let child = crate::upfile::spawn(&argv)?;
    let inbound = proxy.addrs.inbound.context("inbound")?;
    let check = match &w.check {
        Some(c) if c.http.is_some() => format!(
            "  checks: [{{ name: http, http: \"http://127.0.0.1:{port}{}\", interval: {} }}]\n",
            c.http.as_deref().unwrap_or("/"),
            c.interval.unwrap_or(weft_api::Duration::from_secs(2))
        ),
        Some(c) if c.tcp => format!(
            "  checks: [{{ name: tcp, tcp: \"127.0.0.1:{port}\", interval: {} }}]\n",
            c.interval.unwrap_or(weft_api::Duration::from_secs(2))
        ),
        _ => String::new(),
    };
    let labels: String = w.labels.iter().map(|(k, v)| format!("{k}: \"{v}\", ")).collect();
    let resource = format!(
        "---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: {}, labels: {{ {} }} }}\nspec:\n  service: {service}\n  address: 127.0.0.1\n  port: {port}\n  sidecar: \"{inbound}\"\n{check}",
        w.name,
        labels.trim_end_matches(", "),
    );
    Ok(Started { proxy, child, port, inbound, upstreams, argv, resource })
}

/// `weft up -f`: the file's workloads, each with its sidecar, registered and health-checked.
async fn from_file(
    cp: &ControlPlane,
    file: crate::upfile::UpFile,
    args: &UpArgs,
    interrupt: &crate::interrupt::Interrupt,
) -> anyhow::Result<()> {
    let mut resources = String::new();
    let mut running = vec![];
    for svc in &file.services {
        resources.push_str(&format!(
            "---\napiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: {} }}\n",
            svc.name
        ));
        for w in &svc.workloads {
            let s = start_workload(cp, &svc.name, w).await?;
            resources.push_str(&s.resource);
            println!(
                "    {:<12} app 127.0.0.1:{}  sidecar mTLS {}  upstreams {:?}  command {}",
                w.name,
                s.port,
                s.inbound,
                s.upstreams,
                s.argv.join(" ")
            );
            running.push((s.proxy, s.child));
        }
    }
    cp.store.apply(parse_documents(&resources)?)?;
    println!("==> mesh is up ({} workloads)", running.len());
    println!("    and:     {}", crate::client::export_cp(cp));
    println!("             weft get workloads; weft proxy-status; weft check   (Ctrl-C stops everything)");
    crate::dashboard::print_up(cp, "    ");
    run_until_stopped(args, interrupt).await;
    println!("==> stopping");
    for (proxy, mut child) in running {
        proxy.shutdown().await;
        let _ = child.kill().await;
    }
    println!("==> stopped");
    Ok(())
}

#[cfg(test)]
mod port_tests {
    #[test]
    fn free_port_never_hands_out_a_port_twice() {
        let ports: Vec<u16> = (0..2000).map(|_| super::free_port().unwrap()).collect();
        let distinct: std::collections::BTreeSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len());
    }
}
