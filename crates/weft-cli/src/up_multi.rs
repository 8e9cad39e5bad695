//! `weft up` with several linked clusters: the default demo (`east` and `west`), `--clusters N`,
//! and files with `clusters:` (upfile.rs).
//!
//! ```text
//!  weft up (this process)
//!  ┌─ cluster east ─────────────────────────┐  link   ┌─ cluster west ─────────────────────────┐
//!  │ control plane (root CA, east.local)    │◄═══════►│ control plane (root CA, west.local)    │
//!  │ gateway :15443-like (SNI passthrough)  │ (both   │ gateway                                │
//!  │ web ─► web sidecar ══mTLS══╗           │  ways)  │                                        │
//!  │ api-v1 sidecar ◄═══════════╣          │         │                                        │
//!  └────────────────────────────╫───────────┘         │ west's gateway ══► api-v2 sidecar      │
//!                               ╚═════════════════════► (SNI names cluster west; each cluster  │
//!                                                     │  on its own network)                   │
//!                                                     └────────────────────────────────────────┘
//! ```
//! Each cluster is a real control plane of its own (data directory, trust domain `<name>.local`,
//! root CA, MeshConfig cluster name) with an east-west gateway (`mode: gateway`) following it.
//! Every pair is linked both ways with the API `weft link create` / `weft link apply` call, and
//! every service is exported, so a caller's sidecar gets the endpoints of the service in every
//! cluster (namespace sameness) and the callee sees the caller's identity in its own trust domain.
//! Where each cluster sits on the network is decided in one place, [`cluster_net`].

use crate::client::Conn;
use crate::up::{Placement, Started, UpArgs};
use crate::upfile::{FileCheck, FileCluster, FileService, FileWorkload, UpFile};
use anyhow::Context;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;
use weft_api::resource::parse_documents;
use weft_control::{ControlConfig, ControlPlane};
use weft_proxy::Proxy;

/// How long start-up waits for the links to become active and the demo's routes to span the
/// clusters, before it says what is missing and goes on.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// The names `--clusters N` gives: east, west, then c3, c4, ...
pub fn cluster_names(n: usize) -> Vec<String> {
    (1..=n)
        .map(|i| match i {
            1 => "east".to_string(),
            2 => "west".to_string(),
            i => format!("c{i}"),
        })
        .collect()
}

/// The built-in demo over `n` clusters (n ≥ 2), GAMMA style: callers call Service `api`, which
/// has no workloads of its own; each version is a Service of its own (`api-v1` in the first
/// cluster, east; `api-v2` in the second, west; `api-vK` in the K-th), and the HTTPRoute of
/// [`demo_routes`] splits `api` between them. web (in east) calls api through its sidecar.
pub fn demo(n: usize, web_port: u16) -> UpFile {
    let names = cluster_names(n);
    let app = |name: &str| -> Vec<String> {
        ["weft", "demo-app", "--name", name, "--listen", "127.0.0.1:{port}"].map(String::from).to_vec()
    };
    let versions = names.iter().enumerate().map(|(i, cluster)| {
        let version = format!("v{}", i + 1);
        let name = format!("api-{version}");
        let mut command = app(&name);
        command.extend(["--app-version".to_string(), version.clone()]);
        let workload = FileWorkload {
            command,
            cluster: Some(cluster.clone()),
            port: None,
            labels: BTreeMap::from([("version".to_string(), version)]),
            upstreams: vec![],
            check: Some(FileCheck {
                http: Some("/health".into()),
                tcp: false,
                interval: Some(weft_api::Duration::from_secs(1)),
            }),
            expose: false,
            name: name.clone(),
        };
        FileService { name, workloads: vec![workload] }
    });
    let mut web_cmd = app("web");
    web_cmd.extend(["--upstream".to_string(), "{upstream.api}".to_string()]);
    let web = FileWorkload {
        name: "web".into(),
        cluster: Some(names[0].clone()),
        command: web_cmd,
        port: (web_port != 0).then_some(web_port),
        labels: BTreeMap::new(),
        upstreams: vec!["api".into()],
        check: None,
        expose: false,
    };
    let mut services = vec![FileService { name: "api".into(), workloads: vec![] }];
    services.extend(versions);
    services.push(FileService { name: "web".into(), workloads: vec![web] });
    UpFile {
        mesh: None,
        clusters: names
            .into_iter()
            .map(|name| FileCluster { name, trust_domain: None, region: String::new(), zone: String::new() })
            .collect(),
        services,
    }
}

/// The demo's HTTPRoute name (docs/getting-started.md applies new weights to it).
pub const DEMO_ROUTE: &str = "api-split";

/// The demo's traffic management, applied in web's cluster (the caller's: a GAMMA route is
/// applied where the calls are made): the HTTPRoute `api-split` attached to Service `api`
/// (`parentRefs`) sending 90 % to `api-v1` and the rest to the other versions (with two clusters:
/// 90/10 to `api-v1`/`api-v2`), and a ResiliencePolicy on that route with retries and timeouts.
pub fn demo_routes(n: usize) -> String {
    let n = n.max(2) as u32;
    // api-v1 takes 90 %; the other n-1 versions share the other 10 % equally.
    let refs: String = (1..=n)
        .map(|v| format!("        - {{ name: api-v{v}, weight: {} }}\n", if v == 1 { 90 * (n - 1) } else { 10 }))
        .collect();
    format!(
        "---\napiVersion: weft.io/v1alpha1\nkind: HTTPRoute\nmetadata: {{ name: {DEMO_ROUTE} }}\nspec:\n  parentRefs: [{{ name: api }}]\n  rules:\n    - name: split\n      backendRefs:\n{refs}---\napiVersion: weft.io/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{ name: api-resilience }}\nspec:\n  targetRef: {{ kind: HTTPRoute, name: {DEMO_ROUTE} }}\n  retry: {{ attempts: 2, retryOn: [gateway-error, connect-failure, reset] }}\n  timeouts: {{ request: 5s, perTry: 2s }}\n"
    )
}

/// Where a cluster sits: its network (MeshConfig `cluster.network`, carried by its endpoints) and
/// where its east-west gateway listens.
pub(crate) struct ClusterNet {
    pub network: String,
    pub gateway_listen: SocketAddr,
}

/// The one place that decides each cluster's network and gateway address: every cluster on a
/// network of its own, named after it (multi-primary, separate networks). Its gateway is declared
/// as the cluster's (MeshConfig `cluster.gateways`), so the link streams from other clusters and
/// their calls to this cluster's endpoints go through it; nothing is dialled directly across
/// clusters. Give every cluster the same network here to dial remote endpoints directly (flat).
pub(crate) fn cluster_net(cluster: &str) -> ClusterNet {
    ClusterNet { network: cluster.into(), gateway_listen: "127.0.0.1:0".parse().expect("constant") }
}

struct Cluster {
    name: String,
    trust_domain: String,
    network: String,
    dir: std::path::PathBuf,
    cp: ControlPlane,
    gateway: Proxy,
    /// (workload name, running workload)
    running: Vec<(String, Started)>,
}

impl Cluster {
    fn conn(&self) -> Conn {
        crate::client::conn_cp(&self.cp)
    }
}

async fn start_cluster(c: &FileCluster, base: &std::path::Path, args: &UpArgs) -> anyhow::Result<Cluster> {
    let net = cluster_net(&c.name);
    let dir = base.join(&c.name);
    let mut cfg = ControlConfig::new(dir.clone());
    cfg.grpc = "127.0.0.1:0".parse()?;
    cfg.api = "127.0.0.1:0".parse()?;
    cfg.dns = Some("127.0.0.1:0".parse()?);
    cfg.dashboard = (!args.no_dashboard).then(|| ([127, 0, 0, 1], 0).into());
    // The control plane's own /metrics, on a free loopback port (printed with the dashboard).
    cfg.metrics = Some(([127, 0, 0, 1], 0).into());
    cfg.mesh.trust_domain = c.trust_domain();
    cfg.mesh.cluster.name = c.name.clone();
    cfg.mesh.cluster.network = net.network.clone();
    cfg.mesh.cluster.region = c.region.clone();
    cfg.mesh.cluster.zone = c.zone.clone();
    if let Some(l) = args.cert_lifetime {
        cfg.mesh.leaf_lifetime = l;
    }
    let cp = ControlPlane::start(cfg).await.with_context(|| format!("cluster {}: control plane", c.name))?;
    let gw_yaml = format!("mode: gateway\ncluster: {}\ngateway: {{ listen: \"{}\" }}\n", c.name, net.gateway_listen);
    let gateway = crate::up::follower(&cp, "east-west-gateway", &format!("{}-gateway", c.name), None, &gw_yaml)
        .await
        .with_context(|| format!("cluster {}: east-west gateway", c.name))?;
    // Declared (as `weft apply` of the MeshConfig would): credentials made from now on name it.
    let mut mesh = cp.catalog.borrow().mesh.clone();
    mesh.cluster.network = net.network.clone();
    mesh.cluster.gateways = gateway.addrs.gateway.iter().map(|a| a.to_string()).collect();
    let doc = format!(
        "apiVersion: weft.io/v1alpha1\nkind: MeshConfig\nmetadata: {{ name: mesh }}\nspec: {}\n",
        serde_json::to_string(&mesh)?
    );
    cp.store.apply(parse_documents(&doc)?).with_context(|| format!("cluster {}: declaring its gateway", c.name))?;
    Ok(Cluster {
        name: c.name.clone(),
        trust_domain: c.trust_domain(),
        network: net.network,
        dir,
        cp,
        gateway,
        running: vec![],
    })
}

/// Links every pair both ways, as `weft link create` on one cluster and `weft link apply` on the
/// other do. A link kept in `--data-dir` from an earlier run points at that run's addresses: it is
/// removed (`weft link remove`) and made again.
async fn link_all(clusters: &[Cluster]) -> anyhow::Result<()> {
    let mut pairs = vec![];
    for (i, a) in clusters.iter().enumerate() {
        for b in &clusters[i + 1..] {
            for (from, to) in [(a, b), (b, a)] {
                let links = from.conn().call("GET", "/v1/links", String::new()).await?;
                if links["links"].as_array().into_iter().flatten().any(|l| l["cluster"] == to.name.as_str()) {
                    from.conn().call("DELETE", &format!("/v1/links/{}", to.name), String::new()).await.with_context(
                        || format!("weft link remove {} on {} (a link from an earlier run)", to.name, from.name),
                    )?;
                }
                let cred = crate::link::create(&to.conn(), None)
                    .await
                    .with_context(|| format!("weft link create on {}", to.name))?;
                crate::link::apply_credential(&from.conn(), &cred)
                    .await
                    .with_context(|| format!("weft link apply of {}'s credential on {}", to.name, from.name))?;
            }
            pairs.push(format!("{} <-> {}", a.name, b.name));
        }
    }
    println!(
        "    {:<8} {}   (weft link create on one, weft link apply on the other, both ways)",
        "linked",
        pairs.join(", ")
    );
    Ok(())
}

/// The Service resource for `s`, applied in every cluster: exported.
fn service_resource(s: &FileService) -> String {
    format!(
        "---\napiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: {} }}\nspec: {{ export: true }}\n",
        s.name
    )
}

/// `weft link remove` of every link of every cluster (errors ignored: this is the way out).
async fn unlink_all(clusters: &[Cluster]) {
    for c in clusters {
        for peer in clusters.iter().filter(|p| p.name != c.name) {
            let _ = c.conn().call("DELETE", &format!("/v1/links/{}", peer.name), String::new()).await;
        }
    }
}

/// Links that are not active yet, as `cluster -> peer (state)`.
async fn inactive_links(clusters: &[Cluster]) -> Vec<String> {
    let mut out = vec![];
    for c in clusters {
        let links = match c.conn().call("GET", "/v1/links", String::new()).await {
            Ok(v) => v["links"].as_array().cloned().unwrap_or_default(),
            Err(e) => {
                out.push(format!("{}: {e}", c.name));
                continue;
            }
        };
        for l in links.iter().filter(|l| l["state"] != "active") {
            out.push(format!(
                "{} -> {} ({})",
                c.name,
                l["cluster"].as_str().unwrap_or("?"),
                l["state"].as_str().unwrap_or("?")
            ));
        }
    }
    out
}

/// What each caller's sidecar cannot route yet: `(caller, service)` pairs whose routes lack an
/// endpoint of some cluster that runs the service. A called service in `routed` (the demo's
/// `api`) is reached through its HTTPRoute: the caller needs that route in force and the
/// endpoints of every backend it lists.
fn unrouted(
    clusters: &[Cluster],
    hosts: &BTreeMap<String, BTreeSet<String>>,
    routed: &BTreeMap<String, Vec<String>>,
) -> Vec<String> {
    let mut out = vec![];
    for c in clusters {
        for (name, s) in &c.running {
            let routes = s.proxy.ctx().routes.load();
            for svc in s.upstreams.keys() {
                let targets = match routed.get(svc) {
                    Some(backends) => {
                        if routes.service(svc, "default").and_then(|r| r.route.as_ref()).is_none() {
                            out.push(format!("{name} ({}) has no HTTPRoute for {svc}", c.name));
                        }
                        backends.clone()
                    }
                    None => vec![svc.clone()],
                };
                for target in &targets {
                    let want = hosts.get(target).cloned().unwrap_or_default();
                    let have: BTreeSet<String> = routes
                        .service(target, "default")
                        .map(|r| r.endpoints.iter().map(|e| e.cluster.clone()).collect())
                        .unwrap_or_default();
                    let missing: Vec<&String> = want.difference(&have).collect();
                    if !missing.is_empty() {
                        out.push(format!(
                            "{name} ({}) has no route to {target} in {}",
                            c.name,
                            missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                        ));
                    }
                }
            }
        }
    }
    out
}

/// Waits (bounded) until the workload's app accepts connections on its port; an error if it
/// exited first (e.g. the port was taken).
async fn wait_listening(s: &mut Started, name: &str) -> anyhow::Result<()> {
    let port = s.port;
    let ready = tokio::time::timeout(READY_WITHIN, async {
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Ok(Some(status)) = s.child.try_wait() {
                return Err(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    })
    .await;
    match ready {
        Ok(Err(status)) => anyhow::bail!(
            "{name} exited at start ({status}) instead of listening on 127.0.0.1:{port}; if that port is taken, pick another --web-port"
        ),
        Err(_) => println!("    ({name} is not listening on 127.0.0.1:{port} yet)"),
        Ok(Ok(())) => {}
    }
    Ok(())
}

pub async fn up(
    file: UpFile,
    demo: bool,
    args: &UpArgs,
    interrupt: &crate::interrupt::Interrupt,
) -> anyhow::Result<()> {
    let names: Vec<&str> = file.clusters.iter().map(|c| c.name.as_str()).collect();
    println!(
        "==> weft up: {} linked clusters ({}), each with its own control plane, root CA, trust domain and east-west gateway",
        names.len(),
        names.join(", ")
    );
    let base =
        args.data_dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("weft-up-{}", std::process::id())));
    let result = run(&file, demo, args, interrupt, &base).await;
    if args.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&base);
    }
    result
}

async fn run(
    file: &UpFile,
    demo: bool,
    args: &UpArgs,
    interrupt: &crate::interrupt::Interrupt,
    base: &std::path::Path,
) -> anyhow::Result<()> {
    if demo && args.web_port != 0 {
        // Checked first: web would exit on a taken port, but the port would still answer.
        std::net::TcpListener::bind(("127.0.0.1", args.web_port)).with_context(|| {
            format!("cannot start the web frontend on 127.0.0.1:{}; pick another --web-port", args.web_port)
        })?;
    }
    let mut clusters = vec![];
    for c in &file.clusters {
        let cl = start_cluster(c, base, args).await?;
        println!(
            "    {:<8} control plane {} (trust domain {}, store in {}), gateway {}",
            cl.name,
            cl.cp.api_url(),
            cl.trust_domain,
            cl.dir.display(),
            cl.gateway.addrs.gateway.map(|a| a.to_string()).unwrap_or_default()
        );
        clusters.push(cl);
    }
    link_all(&clusters).await?;

    // Every service exists, exported, in every cluster; each workload runs in its own.
    let services: String = file.services.iter().map(service_resource).collect();
    let mut hosts: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for c in &clusters {
        c.cp.store.apply(parse_documents(&services)?)?;
    }
    // The demo's route and policy, in web's cluster (the first): the caller's side, as GAMMA has it.
    let mut routed = BTreeMap::new();
    if let Some(first) = clusters.first().filter(|_| demo) {
        first.cp.store.apply(parse_documents(&demo_routes(clusters.len()))?).context("the demo's HTTPRoute")?;
        let versions = file.services.iter().filter(|s| s.name.starts_with("api-")).map(|s| s.name.clone());
        routed.insert("api".to_string(), versions.collect::<Vec<_>>());
    }
    for svc in &file.services {
        for w in &svc.workloads {
            let cluster = w.cluster.as_deref().unwrap_or(&file.clusters[0].name);
            let c = clusters.iter_mut().find(|c| c.name == cluster).context("validated: known cluster")?;
            let s = crate::up::start_workload(&c.cp, &svc.name, w)
                .await
                .with_context(|| format!("workload {} in cluster {cluster}", w.name))?;
            c.cp.store.apply(parse_documents(&s.resource)?)?;
            hosts.entry(svc.name.clone()).or_default().insert(cluster.to_string());
            c.running.push((w.name.clone(), s));
        }
    }
    for c in &clusters {
        let ws: Vec<&str> = c.running.iter().map(|(n, _)| n.as_str()).collect();
        println!(
            "    {:<8} started {} with sidecars",
            c.name,
            if ws.is_empty() { "nothing".into() } else { ws.join(", ") }
        );
    }

    // Bounded wait: links active, and each caller routes to its services in every cluster.
    let ready = tokio::time::timeout(READY_WITHIN, async {
        loop {
            // Ctrl-C/SIGTERM: on to the demo loop, which ends at once, and the cleanup.
            if interrupt.interrupted() {
                return;
            }
            if inactive_links(&clusters).await.is_empty() && unrouted(&clusters, &hosts, &routed).is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if ready.is_err() {
        for what in inactive_links(&clusters).await {
            println!("    (link not active yet: {what}; see `weft link check`)");
        }
        for what in unrouted(&clusters, &hosts, &routed) {
            println!("    ({what} yet: its health checks may be failing; see `weft get workloads`)");
        }
    }

    let mut web = None;
    for c in clusters.iter_mut().filter(|_| demo) {
        if let Some((name, s)) = c.running.iter_mut().find(|(n, _)| n == "web") {
            wait_listening(s, name).await?;
            web = Some((c.name.clone(), s.port));
        }
    }
    print_up(&clusters, demo);

    let (sent, failures) = match web {
        Some((web_cluster, port)) => {
            println!("==> demo traffic (Ctrl-C stops everything)");
            let placement = Placement {
                web: web_cluster,
                apps: clusters
                    .iter()
                    .flat_map(|c| c.running.iter().map(|(n, _)| (n.clone(), c.name.clone())))
                    .collect(),
            };
            let sidecars: Vec<(String, &Proxy)> = clusters
                .iter()
                .flat_map(|c| c.running.iter().map(move |(n, s)| (format!("{n} ({})", c.name), &s.proxy)))
                .collect();
            let mut expiry: Vec<_> = sidecars.iter().map(|(_, p)| p.certs().leaf().not_after()).collect();
            let web_addr = SocketAddr::from(([127, 0, 0, 1], port));
            crate::up::demo_traffic(web_addr, args, interrupt, Some(&placement), || {
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
            .await
        }
        None => {
            println!("    (Ctrl-C stops everything)");
            crate::up::run_until_stopped(args, interrupt).await;
            (0, 0)
        }
    };
    println!("==> stopping");
    // The links go first, so no link sees its peer stop and warns, and a later run on the same
    // --data-dir starts without links to this run's addresses.
    unlink_all(&clusters).await;
    for c in clusters {
        for (_, s) in c.running {
            s.proxy.shutdown().await;
            let mut child = s.child;
            let _ = child.kill().await;
        }
        c.gateway.shutdown().await;
        c.cp.shutdown().await;
    }
    if demo {
        crate::up::stopped(sent, failures)
    } else {
        println!("==> stopped");
        Ok(())
    }
}

/// The summary: per cluster its gateway, DNS, workloads and the line that points `weft` at it.
fn print_up(clusters: &[Cluster], demo: bool) {
    let admin = |p: &Proxy| p.addrs.admin.map(|a| format!("http://{a}/metrics")).unwrap_or_default();
    let networks: BTreeSet<&str> = clusters.iter().map(|c| c.network.as_str()).collect();
    let topology = match networks.len() {
        1 => "one network (remote endpoints dialled directly)",
        _ => "each on its own network, joined only through the gateways",
    };
    println!("==> mesh is up: {} clusters, every pair linked both ways, {topology}", clusters.len());
    let mut web = None;
    let width = clusters.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in clusters {
        let dns = c.cp.dns_addr.map(|d| format!("   DNS {d}")).unwrap_or_default();
        println!(
            "    cluster {:<width$}   trust domain {}   network {}   gateway {}{dns}",
            c.name,
            c.trust_domain,
            c.network,
            c.gateway.addrs.gateway.map(|a| a.to_string()).unwrap_or_default()
        );
        crate::dashboard::print_up(&c.cp, "      ");
        for (name, s) in &c.running {
            if demo && name == "web" {
                web = Some(s.port);
                let up = s.upstreams.get("api").cloned().unwrap_or_default();
                println!(
                    "      web      http://127.0.0.1:{}/   frontend; calls api through its sidecar ({up})",
                    s.port
                );
            } else if demo {
                println!(
                    "      {name:<8} app 127.0.0.1:{}  sidecar mTLS {}  metrics {}",
                    s.port,
                    s.inbound,
                    admin(&s.proxy)
                );
            } else {
                println!(
                    "      {name:<12} app 127.0.0.1:{}  sidecar mTLS {}  upstreams {:?}  command {}",
                    s.port,
                    s.inbound,
                    s.upstreams,
                    s.argv.join(" ")
                );
            }
        }
        println!("      {}", crate::client::export_cp(&c.cp));
    }
    if let Some(port) = web {
        let n = clusters.len();
        let split: Vec<String> = (1..=n)
            .map(|v| {
                format!("api-v{v} {}", if v == 1 { "90%".into() } else { format!("{:.0}%", 10.0 / (n - 1) as f64) })
            })
            .collect();
        println!(
            "    routes   HTTPRoute {DEMO_ROUTE} (in {}): api -> {}; ResiliencePolicy api-resilience: 2 retries, timeouts 5s (2s a try)",
            clusters[0].name,
            split.join(", ")
        );
        println!("    try:     curl http://127.0.0.1:{port}/");
        println!(
            "             weft get httproutes; weft describe service api; weft stat service   (after {}'s export line)",
            clusters[0].name
        );
    }
    println!("             weft link list; weft link check; weft get workloads   (after a cluster's export line)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_demo_layout() {
        assert_eq!(cluster_names(4), ["east", "west", "c3", "c4"]);
        let d = demo(3, 0);
        let placed: Vec<(&str, &str)> = d
            .services
            .iter()
            .flat_map(|s| s.workloads.iter().map(|w| (w.name.as_str(), w.cluster.as_deref().unwrap())))
            .collect();
        assert_eq!(placed, [("api-v1", "east"), ("api-v2", "west"), ("api-v3", "c3"), ("web", "east")]);
        assert_eq!(d.clusters[2].trust_domain(), "c3.local");
        let services: Vec<&str> = d.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(services, ["api", "api-v1", "api-v2", "api-v3", "web"], "api has no workloads: its route splits it");
    }

    #[test]
    fn demo_routes_are_valid_resources_that_split_90_10() {
        let weights = |n: usize| -> Vec<(String, u32)> {
            let docs = parse_documents(&demo_routes(n)).expect("the demo's route and policy parse and validate");
            assert!(matches!(&docs[1], weft_api::resource::Resource::ResiliencePolicy(_)), "{docs:?}");
            let weft_api::resource::Resource::HTTPRoute(r) = &docs[0] else { panic!("an HTTPRoute first: {docs:?}") };
            assert_eq!(r.spec.parent_refs[0].name, "api");
            r.spec.rules[0].backend_refs.iter().map(|b| (b.name.clone(), b.weight())).collect()
        };
        assert_eq!(weights(2), [("api-v1".to_string(), 90), ("api-v2".to_string(), 10)]);
        // api-v1 keeps 90 %; the others share the rest.
        assert_eq!(weights(3), [("api-v1".to_string(), 180), ("api-v2".to_string(), 10), ("api-v3".to_string(), 10)]);
    }
}
