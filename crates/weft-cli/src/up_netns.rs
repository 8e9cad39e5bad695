//! `weft up --netns` (root): the demo mesh with every workload in its own network namespace, its
//! traffic intercepted by iptables and carried over mTLS by a `weft proxy` process beside it, as
//! in a Kubernetes pod. The apps know nothing of the mesh: web calls
//! `api.default.svc.cluster.local:8080`, which weft's DNS resolves to the api pods' IPs.
//!
//! ```text
//!  host: weft up ─ control plane (gRPC + DNS on the bridge IP, API on 127.0.0.1)
//!        │ bridge
//!        ├─ pod web     demo-app (frontend :8080, reachable from the host) ─► iptables ─► weft proxy :15001
//!        ├─ pod api-v1  iptables ─► weft proxy :15006 (mTLS only) ─► demo-app :8080
//!        └─ pod api-v2  iptables ─► weft proxy :15006 (mTLS only) ─► demo-app :8080
//! ```
//! Health checks reach the apps through their sidecars' admin port (`/app-health/8080/health`),
//! since the app port itself only takes mTLS.

use crate::netns::{Pod, PodNetwork};
use crate::up::UpArgs;
use anyhow::Context;
use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use weft_api::resource::parse_documents;
use weft_control::tokens::Grant;
use weft_control::{ControlConfig, ControlPlane};

const APP_PORT: u16 = 8080;
/// How web calls api: a mesh DNS name, as an unmodified app would.
const API_NAME: &str = "api.default.svc.cluster.local";

/// Starts `program args` in `pod` and waits (at most 30 s) for a stdout line containing `marker`;
/// later output is drained so the child never blocks on a full pipe.
async fn spawn_in(pod: &Pod, args: &[&str], marker: &str) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("cannot find the weft binary")?;
    let mut cmd = pod.command(&exe);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true);
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "warn");
    }
    let mut child = cmd.spawn().with_context(|| format!("cannot start `weft {}` in {}", args.join(" "), pod.netns))?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(l)) = lines.next_line().await {
            if l.contains(marker) {
                return true;
            }
        }
        false
    })
    .await;
    match found {
        Ok(true) => {}
        Ok(false) => anyhow::bail!("`weft {}` in pod {} exited at start", args.join(" "), pod.name),
        Err(_) => anyhow::bail!("`weft {}` in pod {} not ready within 30s", args.join(" "), pod.name),
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(child)
}

/// SIGTERM (the proxies drain), then SIGKILL for what is left after 5 s.
async fn stop(children: Vec<Child>) {
    for c in &children {
        if let Some(pid) = c.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
    }
    for mut c in children {
        if tokio::time::timeout(Duration::from_secs(5), c.wait()).await.is_err() {
            let _ = c.kill().await;
        }
    }
}

/// The first nameserver of the host's resolv.conf, for names outside the mesh.
fn host_resolver() -> Option<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .find_map(|ip| ip.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
}

/// A pod's sidecar config: certificate and routes from the control plane, transparent outbound,
/// admin on the pod IP (for metrics and health checks), inbound ports from its Workload.
fn sidecar_config(cp: &ControlPlane, token_file: &std::path::Path, workload: &str) -> String {
    format!(
        "control: {{ address: \"{}\", token_file: \"{}\", proxy_id: {workload}, workload: {workload} }}\nadmin: {{ listen: \"0.0.0.0:15000\" }}\ninbound: {{ listen: \"0.0.0.0:15006\" }}\noutbound: {{ transparent: \"127.0.0.1:15001\" }}\n",
        cp.grpc_addr,
        token_file.display()
    )
}

fn resources(api: &[&Pod]) -> String {
    let mut out = format!(
        "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: api }}\nspec: {{ ports: [{{ port: {APP_PORT}, protocol: auto }}] }}\n"
    );
    for (pod, version) in api.iter().zip(["v1", "v2"]) {
        out.push_str(&format!(
            "---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: {}, labels: {{ version: {version} }} }}\nspec:\n  service: api\n  address: {}\n  port: {APP_PORT}\n  sidecar: \"{}:15006\"\n  tags: [{version}]\n  checks: [{{ name: http, http: \"http://{}:15000/app-health/{APP_PORT}/health\", interval: 2s, timeout: 1s }}]\n",
            pod.name, pod.ip, pod.ip, pod.ip
        ));
    }
    out
}

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    println!("==> weft up --netns: pods in network namespaces, traffic intercepted by iptables");
    let mut net = PodNetwork::create()?;
    println!("    removing the pods (network namespaces) and the bridge on exit");
    let data_dir =
        args.data_dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("weft-up-{}", std::process::id())));
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let result = run(&mut net, &data_dir, &args).await;
    if args.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    drop(net);
    result
}

async fn run(net: &mut PodNetwork, data_dir: &std::path::Path, args: &UpArgs) -> anyhow::Result<()> {
    let gw = net.gateway();
    let mut cfg = ControlConfig::new(data_dir.to_path_buf());
    cfg.grpc = SocketAddr::new(gw.into(), 15012);
    cfg.api = "127.0.0.1:0".parse()?;
    cfg.dns = Some(SocketAddr::new(gw.into(), 53));
    cfg.dns_upstream = host_resolver();
    cfg.mesh.leaf_lifetime = args.cert_lifetime;
    let cp = ControlPlane::start(cfg).await.context("cannot start the control plane on the bridge")?;
    println!(
        "    bridge {} ({gw}/24): control plane gRPC {} and DNS {gw}:53 for the pods; HTTP API {}",
        net.bridge(),
        cp.grpc_addr,
        cp.api_addr
    );
    let mut children = vec![];
    let result = pods_and_demo(net, data_dir, args, &cp, &mut children).await;
    println!("==> stopping");
    stop(children).await;
    cp.shutdown().await;
    let (sent, failures) = result?;
    crate::up::stopped(sent, failures)
}

async fn pods_and_demo(
    net: &mut PodNetwork,
    data_dir: &std::path::Path,
    args: &UpArgs,
    cp: &ControlPlane,
    children: &mut Vec<Child>,
) -> anyhow::Result<(u64, u64)> {
    let exe = std::env::current_exe().context("cannot find the weft binary")?;
    let mut pods = vec![];
    for (name, sa) in [("api-v1", "api"), ("api-v2", "api"), ("web", "web")] {
        let pod = net.pod(name, net.gateway())?;
        let token = cp.tokens.issue(Grant::Bootstrap { namespace: "default".into(), service_account: sa.into() }, None);
        let token_file = data_dir.join(format!("{name}.token"));
        crate::tls::write_private(&token_file, &token)?;
        let config = data_dir.join(format!("{name}-proxy.yaml"));
        std::fs::write(&config, sidecar_config(cp, &token_file, name))?;
        // web's app port stays reachable from the host: it is the demo's front door (in Kubernetes,
        // an ingress would sit there). Every other inbound port takes mTLS only.
        let exclude = if name == "web" { format!("15000,{APP_PORT}") } else { "15000".into() };
        let init = pod.command(&exe).args(["proxy", "init", "--exclude-inbound-ports", &exclude]).output().await?;
        anyhow::ensure!(
            init.status.success(),
            "installing the interception rules in pod {name}: {}",
            String::from_utf8_lossy(&init.stderr).trim()
        );
        let config = config.to_string_lossy().into_owned();
        children.push(spawn_in(&pod, &["proxy", "run", "--config", &config], "ready").await?);
        let (listen, upstream) = (format!("0.0.0.0:{APP_PORT}"), format!("{API_NAME}:{APP_PORT}"));
        let mut app = vec!["demo-app", "--name", name, "--listen", &listen];
        if name == "web" {
            app.extend(["--upstream", upstream.as_str()]);
        }
        children.push(spawn_in(&pod, &app, "listening").await?);
        println!(
            "    pod {:<7} {:<15} netns {}  app :{APP_PORT} behind `weft proxy` (iptables)",
            name, pod.ip, pod.netns
        );
        pods.push(pod);
    }
    cp.store.apply(parse_documents(&resources(&[&pods[0], &pods[1]]))?)?;

    // Wait (bounded) until both api versions pass their health checks and every sidecar has the
    // latest config.
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let healthy =
                cp.catalog.borrow().services.values().flat_map(|s| &s.instances).filter(|i| i.healthy).count();
            let proxies = cp.proxies.list();
            if healthy == 2 && proxies.len() == 3 && proxies.iter().all(|p| p.status == "SYNCED") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    if ready.is_err() {
        println!(
            "    (api is not routable yet: its health checks may be failing; see `weft describe workload api-v1`)"
        );
    }
    let (web, api1) = (&pods[2], &pods[0]);
    println!("==> mesh is up");
    println!(
        "    web      http://{}:{APP_PORT}/   calls http://{API_NAME}:{APP_PORT}/ (weft DNS; intercepted; mTLS)",
        web.ip
    );
    println!("    metrics  http://{}:15000/metrics (each pod's sidecar admin port)", api1.ip);
    println!("    DNS      dig @{gw} {API_NAME}   (also api.service.consul)", gw = net.gateway());
    println!("    try:     curl http://{}:{APP_PORT}/", web.ip);
    println!("             curl http://{}:{APP_PORT}/   (refused: plaintext into the mesh)", api1.ip);
    println!("             ip netns exec {} curl -s http://{API_NAME}:{APP_PORT}/", web.netns);
    println!("    and:     export WEFT_SERVER={} WEFT_TOKEN={}", cp.api_addr, cp.admin_token);
    println!("             weft get workloads; weft proxy-status; weft check");
    println!("==> demo traffic (Ctrl-C stops everything)");
    Ok(crate::up::demo_traffic(SocketAddr::new(web.ip.into(), APP_PORT), args, || {}).await)
}
