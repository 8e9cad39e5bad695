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

use crate::interrupt::Interrupt;
use crate::netns::{Pod, PodNetwork};
use crate::up::UpArgs;
use anyhow::Context;
use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Child;
use weft_api::resource::parse_documents;
use weft_control::tokens::Grant;
use weft_control::{ControlConfig, ControlPlane};

/// The app port of a pod when the file does not fix one (every pod has its own IP).
const APP_PORT: u16 = 8080;
/// How the demo's web calls api: a mesh DNS name, as an unmodified app would.
const API_NAME: &str = "api.default.svc.cluster.local";

/// What to run: pods, each with one workload of a service.
pub struct Plan {
    pub(crate) pods: Vec<PodPlan>,
    /// The file's `mesh`, if it has one.
    mesh: Option<weft_api::kinds::MeshConfigSpec>,
    /// The built-in demo (web → api-v1/api-v2, with demo traffic) or the user's file.
    demo: bool,
}

pub(crate) struct PodPlan {
    pub(crate) service: String,
    pub(crate) name: String,
    pub(crate) port: u16,
    /// The file's `cluster` of the workload (a file with `clusters`); `None`: the first.
    pub(crate) cluster: Option<String>,
    /// Program and arguments, placeholders filled in; `weft` means this binary.
    pub(crate) argv: Vec<String>,
    /// Path for an HTTP health check through the sidecar's `/app-health`.
    http_check: Option<(String, weft_api::Duration)>,
    labels: std::collections::BTreeMap<String, String>,
    tags: Vec<String>,
    /// The app port stays reachable from the host without mTLS.
    pub(crate) expose: bool,
}

impl Plan {
    /// The built-in demo: api-v1 and api-v2 (echo, HTTP checks) and the web frontend calling
    /// `api.default.svc.cluster.local:8080`.
    pub fn demo() -> Plan {
        let demo_app = |name: &str, extra: &[&str]| {
            let mut argv: Vec<String> =
                ["weft", "demo-app", "--name", name, "--listen", "0.0.0.0:8080"].map(String::from).to_vec();
            argv.extend(extra.iter().map(|s| s.to_string()));
            argv
        };
        let api = |name: &str, version: &str| PodPlan {
            service: "api".into(),
            name: name.into(),
            port: APP_PORT,
            cluster: None,
            argv: demo_app(name, &[]),
            http_check: Some(("/health".into(), weft_api::Duration::from_secs(2))),
            labels: [("version".to_string(), version.to_string())].into(),
            tags: vec![version.into()],
            expose: false,
        };
        let upstream = format!("{API_NAME}:{APP_PORT}");
        let web = PodPlan {
            service: "web".into(),
            name: "web".into(),
            port: APP_PORT,
            cluster: None,
            argv: demo_app("web", &["--upstream", &upstream]),
            http_check: None,
            labels: Default::default(),
            tags: vec![],
            expose: true,
        };
        Plan { pods: vec![api("api-v1", "v1"), api("api-v2", "v2"), web], mesh: None, demo: true }
    }

    /// The pods of a `weft up -f` file.
    pub fn from_file(file: crate::upfile::UpFile) -> anyhow::Result<Plan> {
        let port_of = |svc: &crate::upfile::FileService| svc.workloads.first().and_then(|w| w.port).unwrap_or(APP_PORT);
        let upstreams: std::collections::BTreeMap<String, String> = file
            .services
            .iter()
            .map(|s| (s.name.clone(), format!("{}.default.svc.cluster.local:{}", s.name, port_of(s))))
            .collect();
        let mut pods = vec![];
        for (i, svc) in file.services.iter().enumerate() {
            for (j, w) in svc.workloads.iter().enumerate() {
                let port = w.port.unwrap_or(APP_PORT);
                let argv = w
                    .command
                    .iter()
                    .map(|a| crate::upfile::expand(a, port, &upstreams))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let http_check = match &w.check {
                    Some(c) if c.tcp => anyhow::bail!(
                        "services[{i}].workloads[{j}].check.tcp: with --netns the app port takes mTLS only, so a TCP check from the control plane would always pass; use `check: {{ http: /path }}` (it goes through the sidecar's /app-health)"
                    ),
                    Some(c) => c.http.clone().map(|p| (p, c.interval.unwrap_or(weft_api::Duration::from_secs(2)))),
                    None => None,
                };
                pods.push(PodPlan {
                    service: svc.name.clone(),
                    name: w.name.clone(),
                    port,
                    cluster: w.cluster.clone(),
                    argv,
                    http_check,
                    labels: w.labels.clone(),
                    tags: vec![],
                    expose: w.expose,
                });
            }
        }
        anyhow::ensure!(!pods.is_empty(), "services: no workloads to run");
        anyhow::ensure!(pods.len() <= 250, "services: at most 250 workloads fit on the pods' /24");
        Ok(Plan { pods, mesh: file.mesh, demo: false })
    }

    /// Service and Workload resources for the pods, at their addresses.
    fn resources(&self, pods: &[Pod]) -> String {
        let mut out = self.services(false);
        for (plan, pod) in self.pods.iter().zip(pods) {
            out.push_str(&Self::workload(plan, pod));
        }
        out
    }

    /// The Service resources of the pods' services (`export`: shared with linked clusters).
    pub(crate) fn services(&self, export: bool) -> String {
        let mut out = String::new();
        let mut services: Vec<&str> = self.pods.iter().map(|p| p.service.as_str()).collect();
        services.sort_unstable();
        services.dedup();
        for svc in services {
            let mut ports: Vec<u16> = self.pods.iter().filter(|p| p.service == svc).map(|p| p.port).collect();
            ports.sort_unstable();
            ports.dedup();
            let ports: Vec<String> = ports.iter().map(|p| format!("{{ port: {p}, protocol: auto }}")).collect();
            out.push_str(&format!(
                "---\napiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: {svc} }}\nspec: {{ export: {export}, ports: [{}] }}\n",
                ports.join(", ")
            ));
        }
        out
    }

    /// The Workload resource of pod `plan` at `pod`'s address.
    pub(crate) fn workload(plan: &PodPlan, pod: &Pod) -> String {
        let labels: Vec<String> = plan.labels.iter().map(|(k, v)| format!("{k}: \"{v}\"")).collect();
        let check = match &plan.http_check {
            Some((path, interval)) => format!(
                "  checks: [{{ name: http, http: \"http://{}:15000/app-health/{}{path}\", interval: {interval}, timeout: 1s }}]\n",
                pod.ip, plan.port
            ),
            None => String::new(),
        };
        format!(
            "---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: {}, labels: {{ {} }} }}\nspec:\n  service: {}\n  address: {}\n  port: {}\n  sidecar: \"{}:15006\"\n  tags: [{}]\n{check}",
            plan.name,
            labels.join(", "),
            plan.service,
            pod.ip,
            plan.port,
            pod.ip,
            plan.tags.join(", ")
        )
    }
}

/// Starts `program args` in `pod` and waits (at most 30 s) for a stdout line containing `marker`;
/// later output is drained so the child never blocks on a full pipe.
async fn spawn_in(pod: &Pod, args: &[&str], marker: &str) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("cannot find the weft binary")?;
    let mut cmd = pod.command(&exe);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true);
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "warn");
    }
    let what = format!("`weft {}` in pod {}", args.join(" "), pod.name);
    let mut child = cmd.spawn().with_context(|| format!("cannot start {what}"))?;
    crate::up::wait_for_line(&mut child, marker, &what).await?;
    Ok(child)
}

/// SIGTERM (the proxies drain), then SIGKILL for what is left after 5 s.
pub(crate) async fn stop(children: Vec<Child>) {
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

/// Everything made here (the bridge, each pod's namespace, the processes) is removed when this
/// returns, also when Ctrl-C/SIGTERM (`stop`, listened for before the bridge is made) comes while
/// it is still starting.
pub async fn up(plan: Plan, args: &UpArgs, interrupt: &Interrupt) -> anyhow::Result<()> {
    let mesh = crate::up::mesh_config(args, plan.mesh.as_ref());
    println!("    --netns: pods in network namespaces, traffic intercepted by iptables");
    let mut net = PodNetwork::create()?;
    println!("    removing the pods (network namespaces) and the bridge on exit");
    let data_dir =
        args.data_dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("weft-up-{}", std::process::id())));
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let result = run(&plan, mesh, &mut net, &data_dir, args, interrupt).await;
    if args.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    drop(net);
    result
}

async fn run(
    plan: &Plan,
    mesh: weft_api::kinds::MeshConfigSpec,
    net: &mut PodNetwork,
    data_dir: &std::path::Path,
    args: &UpArgs,
    interrupt: &Interrupt,
) -> anyhow::Result<()> {
    let gw = net.gateway();
    let mut cfg = ControlConfig::new(data_dir.to_path_buf());
    cfg.grpc = SocketAddr::new(gw.into(), 15012);
    cfg.api = "127.0.0.1:0".parse()?;
    cfg.dns = Some(SocketAddr::new(gw.into(), 53));
    cfg.dns_upstream = host_resolver();
    cfg.dashboard = (!args.no_dashboard).then(|| ([127, 0, 0, 1], 0).into());
    // The control plane's own /metrics, on a free loopback port (printed with the dashboard).
    cfg.metrics = Some(([127, 0, 0, 1], 0).into());
    cfg.mesh = mesh;
    let cp = interrupt
        .unless_interrupted(async {
            ControlPlane::start(cfg).await.context("cannot start the control plane on the bridge")
        })
        .await?;
    println!(
        "    bridge {} ({gw}/24): control plane gRPC {} and DNS {gw}:53 for the pods; HTTP API {}",
        net.bridge(),
        cp.grpc_addr,
        cp.api_url()
    );
    let mut children = vec![];
    // A signal while the pods start drops the start where it stands; the processes started so far
    // are in `children` and are stopped below, the namespaces go with `net`.
    let result = interrupt.unless_interrupted(start_pods(plan, net, data_dir, &cp, &mut children)).await;
    let result = match result {
        Ok(pods) if plan.demo => demo(&cp, net, &pods, args, interrupt).await.map(Some),
        Ok(pods) => {
            file_mesh_up(&cp, net, plan, &pods);
            crate::up::run_until_stopped(args, interrupt).await;
            Ok(None)
        }
        Err(e) => Err(e),
    };
    println!("==> stopping");
    stop(children).await;
    cp.shutdown().await;
    match result? {
        Some((sent, failures)) => crate::up::stopped(sent, failures),
        None => {
            println!("==> stopped");
            Ok(())
        }
    }
}

/// Every pod: namespace, interception rules, sidecar process, app process; then the resources.
async fn start_pods(
    plan: &Plan,
    net: &mut PodNetwork,
    data_dir: &std::path::Path,
    cp: &ControlPlane,
    children: &mut Vec<Child>,
) -> anyhow::Result<Vec<Pod>> {
    let exe = std::env::current_exe().context("cannot find the weft binary")?;
    let mut pods = vec![];
    for p in &plan.pods {
        let name = p.name.as_str();
        let pod = net.pod(name, net.gateway())?;
        let grant = Grant::Bootstrap { namespace: "default".into(), service_account: p.service.clone() };
        let token_file = data_dir.join(format!("{name}.token"));
        crate::tls::write_private(&token_file, &cp.tokens.issue(grant, None))?;
        let config = data_dir.join(format!("{name}-proxy.yaml"));
        std::fs::write(&config, sidecar_config(cp, &token_file, name))?;
        // Every inbound port takes mTLS only, except the sidecar's admin port and an exposed app.
        let exclude = if p.expose { format!("15000,{}", p.port) } else { "15000".into() };
        let init = pod.command(&exe).args(["proxy", "init", "--exclude-inbound-ports", &exclude]).output().await?;
        anyhow::ensure!(
            init.status.success(),
            "installing the interception rules in pod {name}: {}",
            String::from_utf8_lossy(&init.stderr).trim()
        );
        let config = config.to_string_lossy().into_owned();
        children.push(spawn_in(&pod, &["proxy", "run", "--config", &config], "ready").await?);
        let program = if p.argv[0] == "weft" { exe.clone() } else { std::path::PathBuf::from(&p.argv[0]) };
        let mut cmd = pod.command(&program);
        cmd.args(&p.argv[1..]).stdout(Stdio::null()).stderr(Stdio::inherit()).kill_on_drop(true);
        children.push(cmd.spawn().with_context(|| format!("cannot start {} in pod {name}", p.argv.join(" ")))?);
        println!("    pod {:<10} {:<15} netns {}  app :{}  {}", name, pod.ip, pod.netns, p.port, p.argv.join(" "));
        pods.push(pod);
    }
    cp.store.apply(parse_documents(&plan.resources(&pods))?)?;
    Ok(pods)
}

fn file_mesh_up(cp: &ControlPlane, net: &PodNetwork, plan: &Plan, pods: &[Pod]) {
    println!("==> mesh is up ({} workloads)", pods.len());
    for (p, pod) in plan.pods.iter().zip(pods) {
        let how = if p.expose { "reachable from the host" } else { "mTLS only" };
        println!("    {:<10} http://{}:{}/ ({how})   ip netns exec {} <command>", p.name, pod.ip, p.port, pod.netns);
    }
    crate::dashboard::print_up(cp, "    ");
    println!("    DNS      dig @{} <service>.default.svc.cluster.local", net.gateway());
    println!("    and:     {}", crate::client::export_cp(cp));
    println!("             weft get workloads; weft proxy-status; weft check   (Ctrl-C stops everything)");
}

/// The demo: waits for the api pods, prints where to look, sends demo traffic.
async fn demo(
    cp: &ControlPlane,
    net: &PodNetwork,
    pods: &[Pod],
    args: &UpArgs,
    interrupt: &Interrupt,
) -> anyhow::Result<(u64, u64)> {
    // Wait (bounded) until both api versions pass their health checks and every sidecar has the
    // latest config.
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if interrupt.interrupted() {
                return;
            }
            let cat = cp.catalog.borrow().clone();
            let healthy = cat.services.values().filter(|s| s.name == "api").flat_map(|s| &s.instances);
            let healthy = healthy.filter(|i| i.healthy).count();
            let proxies = cp.proxies.list();
            if healthy == 2 && proxies.len() == 3 && proxies.iter().all(|p| p.status == "SYNCED") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    if interrupt.interrupted() {
        return Ok((0, 0));
    }
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
    println!("    DNS      dig @{} {API_NAME}   (also api.service.consul)", net.gateway());
    crate::dashboard::print_up(cp, "    ");
    println!("    try:     curl http://{}:{APP_PORT}/", web.ip);
    println!("             curl http://{}:{APP_PORT}/   (refused: plaintext into the mesh)", api1.ip);
    println!("             ip netns exec {} curl -s http://{API_NAME}:{APP_PORT}/", web.netns);
    println!("    and:     {}", crate::client::export_cp(cp));
    println!("             weft get workloads; weft proxy-status; weft check");
    // web's app may still be starting: its port answers before the first demo call.
    let web_addr = SocketAddr::new(web.ip.into(), APP_PORT);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while tokio::net::TcpStream::connect(web_addr).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    println!("==> demo traffic (Ctrl-C stops everything)");
    Ok(crate::up::demo_traffic(web_addr, args, interrupt, None, || {}).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(yaml: &str) -> anyhow::Result<Plan> {
        Plan::from_file(serde_saphyr::from_str(yaml)?)
    }

    #[test]
    fn a_file_becomes_pods_with_mesh_names_for_upstreams() {
        let plan = file(
            "services:\n  - name: api\n    workloads:\n      - { name: a1, port: 9000, command: [x, \"{port}\"] }\n  - name: web\n    workloads:\n      - { name: w, command: [y, \"{upstream.api}\"], expose: true }\n",
        )
        .unwrap();
        assert_eq!(plan.pods[0].argv, ["x", "9000"]);
        assert_eq!(plan.pods[1].argv, ["y", "api.default.svc.cluster.local:9000"]);
        assert_eq!(plan.pods[1].port, APP_PORT);
        assert!(plan.pods[1].expose && !plan.pods[0].expose);
    }

    #[test]
    fn tcp_checks_are_refused_with_netns() {
        let err = file(
            "services:\n  - name: api\n    workloads:\n      - { name: a1, command: [x], check: { tcp: true } }\n",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("services[0].workloads[0].check.tcp") && err.contains("http"), "{err}");
    }
}
