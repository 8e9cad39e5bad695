//! `weft up --netns --clusters N` (root): the multi-cluster demo with each cluster on its own
//! network, joined only through the east-west gateways on a shared WAN (layout: netns_wan.rs);
//! `weft up --netns -f` of a file with `clusters:` lays out the file's clusters and workloads the
//! same way ([`up_file`]).
//! Every cluster runs `weft control` in its node namespace, a gateway (`weft proxy run`, `mode:
//! gateway`) in its gateway namespace, and its pods (sidecar, app, `weft proxy init`
//! interception). Clusters are linked both ways as `weft link create` / `weft link apply` do.
//! web (in east) calls `api.default.svc.cluster.local:8080` by name, unmodified: east's DNS
//! answers with the endpoints of every cluster, and east's sidecar dials the other clusters'
//! endpoints through their gateways on the WAN, with mTLS from sidecar to sidecar.

use crate::client::Conn;
use crate::interrupt::Interrupt;
use crate::netns::Pod;
use crate::netns_wan::{WanNetworks, GATEWAY_PORT};
use crate::up::{Placement, UpArgs};
use anyhow::Context;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Child;

const APP_PORT: u16 = 8080;
const API_NAME: &str = "api.default.svc.cluster.local";
/// The least time given to the mesh to be ready (links active, web answered from every cluster)
/// once everything is started; on a slow machine it is longer: see [`ready_within`].
const READY_AT_LEAST: Duration = Duration::from_secs(30);
/// How often the wait for the mesh says what it still waits for.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// How long to wait for the mesh to be ready, given how long starting its processes took: at
/// least [`READY_AT_LEAST`], and twice the start-up time on a machine slow enough (or loaded
/// enough) that starting took longer, since the links and the first health checks are slow
/// there in the same proportion.
fn ready_within(started_in: Duration) -> Duration {
    READY_AT_LEAST.max(started_in * 2)
}

struct Cluster {
    name: String,
    conn: Conn,
}

/// Starts `weft args` in `ns` and waits (bounded: `up::wait_for_line`) for a stdout line containing `marker`.
async fn spawn_in(ns: &Pod, args: &[&str], marker: &str) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("cannot find the weft binary")?;
    let mut cmd = ns.command(&exe);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true);
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "warn");
    }
    let what = format!("`weft {}` in {}", args.first().copied().unwrap_or_default(), ns.netns);
    let mut child = cmd.spawn().with_context(|| format!("cannot start {what}"))?;
    crate::up::wait_for_line(&mut child, marker, &what).await?;
    Ok(child)
}

/// A bootstrap token for `default/<sa>`, written (0600) to `dir/<file>`.
async fn token_file(conn: &Conn, sa: &str, dir: &std::path::Path, file: &str) -> anyhow::Result<std::path::PathBuf> {
    let req = serde_json::json!({ "kind": "bootstrap", "identity": format!("default/{sa}") });
    let v = conn.call("POST", "/v1/tokens", req.to_string()).await?;
    let path = dir.join(file);
    crate::tls::write_private(&path, v["token"].as_str().unwrap_or_default())?;
    Ok(path)
}

async fn apply(conn: &Conn, yaml: String) -> anyhow::Result<()> {
    conn.call("POST", "/v1/apply", yaml).await.map(|_| ())
}

/// Everything made here (namespaces, bridges, the host's legs, the processes) is removed when
/// this returns, also when Ctrl-C/SIGTERM (`stop`, listened for before the first namespace is
/// made) comes while it is still starting.
pub async fn up(n: usize, args: &UpArgs, interrupt: &Interrupt) -> anyhow::Result<()> {
    let names = crate::up_multi::cluster_names(n);
    println!(
        "==> weft up --netns: {n} linked clusters ({}), each on its own bridge, joined only through their east-west gateways on a WAN bridge",
        names.join(", ")
    );
    let mut net = WanNetworks::create(&names)?;
    println!("    removing the namespaces, bridges and the host's legs on exit");
    let base =
        args.data_dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("weft-up-{}", std::process::id())));
    std::fs::create_dir_all(&base).with_context(|| format!("cannot create {}", base.display()))?;
    let (mut controls, mut children) = (vec![], vec![]);
    let result = run(&mut net, &base, args, interrupt, &mut controls, &mut children).await;
    println!("==> stopping");
    // Pods and gateways first, so none sees its control plane go away.
    crate::up_netns::stop(children).await;
    crate::up_netns::stop(controls).await;
    if args.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&base);
    }
    drop(net);
    match result? {
        Some((sent, failures)) => crate::up::stopped(sent, failures),
        None => Ok(()),
    }
}

async fn run(
    net: &mut WanNetworks,
    base: &std::path::Path,
    args: &UpArgs,
    interrupt: &Interrupt,
    controls: &mut Vec<Child>,
    children: &mut Vec<Child>,
) -> anyhow::Result<Option<(u64, u64)>> {
    let start = std::time::Instant::now();
    println!("    WAN      {} (bridge in netns {}; only the gateways are on it)", net.wan_subnet, net.wan_ns);
    // A signal while starting drops the start where it stands: the processes started so far are
    // in `controls` and `children`, the namespaces in `net`; the caller removes them.
    let (clusters, pods, apps) = interrupt
        .unless_interrupted(async {
            let mut clusters = vec![];
            for c in &net.clusters {
                // api runs in every cluster and splits its calls evenly between them (`clusterWeights`):
                // with locality priority (the default) web in east would call only east's api.
                let weights: Vec<String> = net.clusters.iter().map(|c| format!("{}: 1", c.name)).collect();
                let services = [("api", format!(", clusterWeights: {{ {} }}", weights.join(", "))), ("web", String::new())].map(
                    |(s, extra)| {
                        format!("---\napiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: {s} }}\nspec: {{ export: true{extra} }}\n")
                    },
                );
                let site = Site { trust_domain: format!("{}.local", c.name), region: "", zone: "" };
                clusters.push(start_cluster(c, base, &site, &services.concat(), !args.no_dashboard, controls, children).await?);
            }
            link_all(&clusters).await?;

            // Pods: api-vK in the K-th cluster, web (a frontend calling api by name) in the first.
            let placed =
                (0..clusters.len()).map(|i| (i, format!("api-v{}", i + 1), "api")).chain([(0, "web".to_string(), "web")]);
            let mut pods: Vec<(Pod, &str)> = vec![];
            let mut apps = std::collections::BTreeMap::new();
            for (i, name, service) in placed {
                let c = &clusters[i];
                // web's app port stays reachable from the host (the demo traffic); the rest take mTLS only.
                let expose = (service == "web").then_some(APP_PORT);
                let pod = start_sidecar(net, i, c, base, &name, service, expose, children).await?;
                let listen = format!("0.0.0.0:{APP_PORT}");
                let upstream = format!("{API_NAME}:{APP_PORT}");
                let mut argv = vec!["demo-app", "--name", &name, "--listen", &listen];
                if service == "web" {
                    argv.extend(["--upstream", &upstream]);
                }
                children.push(spawn_in(&pod, &argv, "listening").await?);
                let check = if service == "api" {
                    format!(
                        "  checks: [{{ name: http, http: \"http://{}:15000/app-health/{APP_PORT}/health\", interval: 1s, timeout: 1s }}]\n",
                        pod.ip
                    )
                } else {
                    String::new()
                };
                let workload = format!(
                    "apiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: {name} }}\nspec:\n  service: {service}\n  address: {}\n  port: {APP_PORT}\n  sidecar: \"{}:15006\"\n{check}",
                    pod.ip, pod.ip
                );
                apply(&c.conn, workload).await.with_context(|| format!("workload {name} in {}", c.name))?;
                println!("    pod {:<7} {:<15} cluster {:<5} netns {}", name, pod.ip, c.name, pod.netns);
                apps.insert(name.clone(), c.name.clone());
                pods.push((pod, service));
            }
            Ok((clusters, pods, apps))
        })
        .await?;
    let web = pods.iter().find(|(_, s)| *s == "web").map(|(p, _)| p.clone()).context("web pod")?;
    let web_addr = SocketAddr::new(web.ip.into(), APP_PORT);

    // Bounded wait: links active, and web answered from every cluster. The bound scales with how
    // long starting took (a slow or loaded machine), and the wait says what it waits for.
    let within = ready_within(start.elapsed());
    let waiting = std::time::Instant::now();
    println!("    waiting (at most {}s) for the links and for web to reach api in every cluster", within.as_secs());
    let mut answered = std::collections::BTreeSet::new();
    let mut next_progress = waiting + PROGRESS_EVERY;
    let ready = tokio::time::timeout(within, async {
        loop {
            if interrupt.interrupted() {
                return;
            }
            let inactive = inactive_links(&clusters).await;
            if inactive.is_empty() {
                if let Ok((_, body)) = crate::call::http_get(web_addr, "/").await {
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    if v["upstream_status"] == 200 {
                        answered.insert(v["upstream"]["app"].as_str().unwrap_or_default().to_string());
                    }
                }
                if answered.len() == clusters.len() {
                    return;
                }
            }
            if std::time::Instant::now() >= next_progress {
                next_progress += PROGRESS_EVERY;
                let links = if inactive.is_empty() { "all active".to_string() } else { inactive.join(", ") };
                println!("    ... {}s: links {links}; web has reached {answered:?}", waiting.elapsed().as_secs());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    // Interrupted while waiting: straight to the cleanup.
    let result = if interrupt.interrupted() {
        (0, 0)
    } else {
        if ready.is_err() {
            for what in inactive_links(&clusters).await {
                println!("    (link not active yet: {what}; see `weft link check`)");
            }
            println!("    (web has reached {:?} so far: some api pods may not be routable yet)", answered);
        }
        println!(
            "==> mesh is up: {} clusters, each on its own network, joined only through the gateways",
            clusters.len()
        );
        println!("    web      http://{web_addr}/   calls http://{API_NAME}:{APP_PORT}/ (weft DNS; intercepted; mTLS; other clusters through their gateways)");
        println!("    try:     curl http://{web_addr}/");
        println!("             ip netns exec {} curl -s http://{API_NAME}:{APP_PORT}/", web.netns);
        println!("             ip netns exec {} tcpdump -ni br0 tcp   (the WAN: TLS only)", net.wan_ns);
        for c in &clusters {
            println!("    {:<8} {}", c.name, c.conn.export_line());
            print_dashboard(c).await;
        }
        println!("==> demo traffic (Ctrl-C stops everything)");
        let placement = Placement { web: clusters[0].name.clone(), apps };
        crate::up::demo_traffic(web_addr, args, interrupt, Some(&placement), || {}).await
    };
    // The links go first, so no link sees its peer stop.
    for c in &clusters {
        for peer in clusters.iter().filter(|p| p.name != c.name) {
            let _ = c.conn.call("DELETE", &format!("/v1/links/{}", peer.name), String::new()).await;
        }
    }
    Ok(Some(result))
}

/// The line for a cluster's dashboard: its URL and a one-time login URL (nothing without one).
async fn print_dashboard(c: &Cluster) {
    if let Ok(v) = c.conn.call("POST", "/v1/dashboard/login", String::new()).await {
        let root = c.conn.ca_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        println!(
            "             dashboard: {}  (log in once: {}; HTTPS: trust {root})",
            v["dashboard"].as_str().unwrap_or_default(),
            v["url"].as_str().unwrap_or_default()
        );
    }
}

/// What a cluster's MeshConfig says besides its name, network and gateway.
struct Site<'a> {
    trust_domain: String,
    region: &'a str,
    zone: &'a str,
}

/// One cluster on its network: its control plane in its node namespace (gRPC, DNS and API on the
/// bridge), its MeshConfig (network, gateway, locality) and `resources`, and its gateway.
async fn start_cluster(
    c: &crate::netns_wan::ClusterNet,
    base: &std::path::Path,
    site: &Site<'_>,
    resources: &str,
    dashboard: bool,
    controls: &mut Vec<Child>,
    children: &mut Vec<Child>,
) -> anyhow::Result<Cluster> {
    let dir = base.join(&c.name);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cip = c.control_ip();
    let d = dir.to_string_lossy().into_owned();
    let (grpc, api, dns) = (format!("{cip}:15012"), format!("{cip}:15080"), format!("{cip}:53"));
    let api_url = format!("https://{api}");
    let td = site.trust_domain.as_str();
    let control = ["control", "--data-dir", &d, "--grpc", &grpc, "--api", &api, "--dns", &dns];
    let mut argv = control.to_vec();
    argv.extend(["--trust-domain", td, "--cluster", &c.name]);
    // The dashboard on the control plane's bridge address, so the host reaches it: off loopback
    // it is HTTPS with the API's certificate (the browser must trust the cluster's root).
    let dash = format!("{cip}:15090");
    if dashboard {
        argv.extend(["--dashboard", &dash]);
    }
    controls.push(spawn_in(&c.node, &argv, "ready").await.with_context(|| format!("cluster {}", c.name))?);
    let token = std::fs::read_to_string(dir.join("admin.token")).context("the control plane's admin token")?;
    let conn = Conn {
        ca_file: Some(dir.join(crate::client::ROOT_FILE)),
        ..Conn::new(api_url, Some(token.trim().to_string()))
    };
    // Its network and gateway, declared before any credential is made; then the resources.
    let gw = SocketAddr::new(c.gateway_wan.into(), GATEWAY_PORT);
    let mesh = format!(
        "apiVersion: weft.io/v1alpha1\nkind: MeshConfig\nmetadata: {{ name: mesh }}\nspec: {{ trustDomain: {td}, cluster: {{ name: {0}, network: net-{0}, gateways: [\"{gw}\"], region: \"{1}\", zone: \"{2}\" }} }}\n",
        c.name, site.region, site.zone
    );
    apply(&conn, mesh + resources).await.with_context(|| format!("cluster {}: MeshConfig", c.name))?;
    let token = token_file(&conn, "east-west-gateway", &dir, "gateway.token").await?;
    let gw_cfg = dir.join("gateway.yaml");
    std::fs::write(
        &gw_cfg,
        format!(
            "mode: gateway\ncluster: {}\ngateway: {{ listen: \"0.0.0.0:{GATEWAY_PORT}\" }}\ncontrol: {{ address: \"{grpc}\", token_file: \"{}\", proxy_id: {}-gateway }}\n",
            c.name,
            token.display(),
            c.name
        ),
    )?;
    let gw_cfg = gw_cfg.to_string_lossy().into_owned();
    children.push(spawn_in(&c.gateway, &["proxy", "run", "--config", &gw_cfg], "ready").await?);
    println!(
        "    cluster {:<5} bridge {} in netns {}: control plane {cip} (gRPC :15012, DNS :53, API :15080); gateway {gw} on the WAN (netns {})",
        c.name,
        c.subnet(),
        c.node.netns,
        c.gateway.netns
    );
    Ok(Cluster { name: c.name.clone(), conn })
}

/// A pod `name` of `service` in cluster `i` (`c`): its namespace, interception rules (`expose`: an
/// app port left reachable without mTLS) and sidecar, following `c`'s control plane.
#[allow(clippy::too_many_arguments)]
async fn start_sidecar(
    net: &mut WanNetworks,
    i: usize,
    c: &Cluster,
    base: &std::path::Path,
    name: &str,
    service: &str,
    expose: Option<u16>,
    children: &mut Vec<Child>,
) -> anyhow::Result<Pod> {
    let exe = std::env::current_exe().context("cannot find the weft binary")?;
    let pod = net.pod(i, name)?;
    let dir = base.join(&c.name);
    let token = token_file(&c.conn, service, &dir, &format!("{name}.token")).await?;
    let cfg = dir.join(format!("{name}-proxy.yaml"));
    std::fs::write(
        &cfg,
        format!(
            "control: {{ address: \"{}:15012\", token_file: \"{}\", proxy_id: {name}, workload: {name} }}\nadmin: {{ listen: \"0.0.0.0:15000\" }}\ninbound: {{ listen: \"0.0.0.0:15006\" }}\noutbound: {{ transparent: \"127.0.0.1:15001\" }}\n",
            net.clusters[i].control_ip(),
            token.display()
        ),
    )?;
    let exclude = expose.map_or_else(|| "15000".to_string(), |p| format!("15000,{p}"));
    let init = pod.command(&exe).args(["proxy", "init", "--exclude-inbound-ports", &exclude]).output().await?;
    anyhow::ensure!(
        init.status.success(),
        "installing the interception rules in pod {name}: {}",
        String::from_utf8_lossy(&init.stderr).trim()
    );
    let cfg = cfg.to_string_lossy().into_owned();
    children.push(spawn_in(&pod, &["proxy", "run", "--config", &cfg], "ready").await?);
    Ok(pod)
}

/// `weft up --netns -f` of a file with `clusters`: each cluster on its own network as above,
/// linked both ways, every service exported from every cluster; each workload in its own pod of
/// its cluster, its command run unmodified (`{upstream.<svc>}` is the service's mesh DNS name).
pub async fn up_file(
    plan: crate::up_netns::Plan,
    file_clusters: &[crate::upfile::FileCluster],
    args: &UpArgs,
    interrupt: &Interrupt,
) -> anyhow::Result<()> {
    let names: Vec<String> = file_clusters.iter().map(|c| c.name.clone()).collect();
    println!(
        "==> weft up --netns: {} linked clusters ({}), each on its own bridge, joined only through their east-west gateways on a WAN bridge",
        names.len(),
        names.join(", ")
    );
    let mut net = WanNetworks::create(&names)?;
    println!("    removing the namespaces, bridges and the host's legs on exit");
    let base =
        args.data_dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("weft-up-{}", std::process::id())));
    std::fs::create_dir_all(&base).with_context(|| format!("cannot create {}", base.display()))?;
    let (mut controls, mut children) = (vec![], vec![]);
    let result = run_file(&plan, file_clusters, &mut net, &base, args, interrupt, &mut controls, &mut children).await;
    println!("==> stopping");
    crate::up_netns::stop(children).await;
    crate::up_netns::stop(controls).await;
    if args.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&base);
    }
    drop(net);
    result?;
    println!("==> stopped");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn run_file(
    plan: &crate::up_netns::Plan,
    file_clusters: &[crate::upfile::FileCluster],
    net: &mut WanNetworks,
    base: &std::path::Path,
    args: &UpArgs,
    interrupt: &Interrupt,
    controls: &mut Vec<Child>,
    children: &mut Vec<Child>,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the weft binary")?;
    println!("    WAN      {} (bridge in netns {}; only the gateways are on it)", net.wan_subnet, net.wan_ns);
    let services = plan.services(true);
    // A signal while starting drops the start where it stands (see `run`).
    let clusters = interrupt
        .unless_interrupted(async {
            let mut clusters = vec![];
            for (c, f) in net.clusters.iter().zip(file_clusters) {
                let site = Site { trust_domain: f.trust_domain(), region: &f.region, zone: &f.zone };
                clusters.push(start_cluster(c, base, &site, &services, !args.no_dashboard, controls, children).await?);
            }
            link_all(&clusters).await?;
            for p in &plan.pods {
                let i = p.cluster.as_ref().and_then(|n| clusters.iter().position(|c| &c.name == n)).unwrap_or(0);
                let c = &clusters[i];
                let pod =
                    start_sidecar(net, i, c, base, &p.name, &p.service, p.expose.then_some(p.port), children).await?;
                let program = if p.argv[0] == "weft" { exe.clone() } else { std::path::PathBuf::from(&p.argv[0]) };
                let mut cmd = pod.command(&program);
                cmd.args(&p.argv[1..]).stdout(Stdio::null()).stderr(Stdio::inherit()).kill_on_drop(true);
                children
                    .push(cmd.spawn().with_context(|| format!("cannot start {} in pod {}", p.argv.join(" "), p.name))?);
                apply(&c.conn, crate::up_netns::Plan::workload(p, &pod))
                    .await
                    .with_context(|| format!("workload {} in {}", p.name, c.name))?;
                println!(
                    "    pod {:<10} {:<15} cluster {:<5} netns {}  app :{}  {}",
                    p.name,
                    pod.ip,
                    c.name,
                    pod.netns,
                    p.port,
                    p.argv.join(" ")
                );
            }
            Ok(clusters)
        })
        .await?;
    println!("==> mesh is up: {} clusters, each on its own network, joined only through the gateways", clusters.len());
    for c in clusters.iter() {
        println!("    {:<8} {}", c.name, c.conn.export_line());
        print_dashboard(c).await;
    }
    println!("    (Ctrl-C stops everything)");
    crate::up::run_until_stopped(args, interrupt).await;
    // The links go first, so no link sees its peer stop.
    for c in &clusters {
        for peer in clusters.iter().filter(|p| p.name != c.name) {
            let _ = c.conn.call("DELETE", &format!("/v1/links/{}", peer.name), String::new()).await;
        }
    }
    Ok(())
}

/// Every pair linked both ways (`weft link create` on one, `weft link apply` on the other).
async fn link_all(clusters: &[Cluster]) -> anyhow::Result<()> {
    let mut pairs = vec![];
    for (i, a) in clusters.iter().enumerate() {
        for b in &clusters[i + 1..] {
            for (from, to) in [(a, b), (b, a)] {
                // A link kept in --data-dir from an earlier run points at that run's addresses.
                let _ = from.conn.call("DELETE", &format!("/v1/links/{}", to.name), String::new()).await;
                let cred = crate::link::create(&to.conn, None)
                    .await
                    .with_context(|| format!("weft link create on {}", to.name))?;
                crate::link::apply_credential(&from.conn, &cred)
                    .await
                    .with_context(|| format!("weft link apply of {}'s credential on {}", to.name, from.name))?;
            }
            pairs.push(format!("{} <-> {}", a.name, b.name));
        }
    }
    println!(
        "    linked   {}   (through the gateways; weft link create on one, weft link apply on the other)",
        pairs.join(", ")
    );
    Ok(())
}

/// Links that are not active yet, as `cluster -> peer (state)`.
async fn inactive_links(clusters: &[Cluster]) -> Vec<String> {
    let mut out = vec![];
    for c in clusters {
        match c.conn.call("GET", "/v1/links", String::new()).await {
            Ok(v) => {
                for l in v["links"].as_array().into_iter().flatten().filter(|l| l["state"] != "active") {
                    out.push(format!(
                        "{} -> {} ({})",
                        c.name,
                        l["cluster"].as_str().unwrap_or("?"),
                        l["state"].as_str().unwrap_or("?")
                    ));
                }
            }
            Err(e) => out.push(format!("{}: {e}", c.name)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wait for the mesh scales with how long starting took: a start-up of 110 s (a loaded
    /// 2-core machine) gets 220 s, not the 30 s that made such a run fail its demo requests.
    #[test]
    fn the_ready_wait_scales_with_the_start_up_time() {
        assert_eq!(ready_within(Duration::from_secs(3)), READY_AT_LEAST);
        assert_eq!(ready_within(Duration::from_secs(110)), Duration::from_secs(220));
    }
}
