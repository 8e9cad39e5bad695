//! A multi-cluster mesh in network namespaces (root): each cluster on its own bridge, only the
//! east-west gateways also on a shared "WAN" bridge. Used by `tests/netns_clusters.rs`,
//! `tests/netns_remote.rs`, `tests/netns_naming.rs` and `tests/netns_trust.rs`.
//!
//! ```text
//!  netns <p>-east (cluster "node")           netns <p>-wan            netns <p>-west
//!  ┌──────────────────────────────┐          ┌────────────┐          ┌──────────────────────────────┐
//!  │ bridge br0 10.77.20.1/24     │          │ bridge br0 │          │ bridge br0 10.77.21.1/24     │
//!  │ weft control (gRPC, DNS :53, │          │ (no IP;    │          │ weft control ...             │
//!  │   API 127.0.0.1:15080)       │          │  tcpdump)  │          │                              │
//!  └─┬───────────┬────────────────┘          └──┬──────┬──┘          └──────────────┬───────────┬─┘
//!    │ pods      │ netns <p>-east-gw            │      │           netns <p>-west-gw│     pods  │
//!    │ .2, .3    └ eth0 .254 ── gateway ── wan0 10.77.99.1   10.77.99.2 wan0 ── gateway ── eth0 .254
//!    │           (routes its cluster's pods onto the WAN, NAT; nothing from the WAN into the cluster)
//!  netns <p>-east-web: eth0 10.77.20.2, default via .254, resolv.conf → 10.77.20.1 (weft DNS),
//!                      `weft proxy init` rules, `weft proxy run` sidecar, the app
//! ```
//! Every cluster lives wholly inside namespaces, so nothing is added to the host's network and
//! two harnesses (parallel tests) never collide even with the same addresses; only the namespace
//! names carry a tag unique per harness. A gateway namespace forwards from its cluster to the WAN
//! (masqueraded) and only answers back (conntrack ESTABLISHED); it has no route to another
//! cluster's subnet, so a cluster reaches another only through that cluster's gateway port.
//! [`Mesh`]'s drop kills every process it started and deletes every namespace (and with them the
//! bridges, veths and iptables rules) and `/etc/netns/<ns>`, also when a test panics.
//!
//! Seams for later checks: [`Mesh::resolve`] (naming forms through a pod's resolver),
//! [`Mesh::stop_app`] / [`Mesh::start_app`] (kill and restart a pod's app, for failover),
//! [`Mesh::routes`] (what a sidecar routes to), [`Mesh::weft`] (any CLI verb against a cluster),
//! [`Mesh::add_remote`] (a remote cluster of a primary: no control plane, a `weft dns` following
//! the primary; used by `tests/netns_remote.rs`),
//! [`Mesh::dns`] / [`dns_query`] (a DNS query, A or SRV, with its response code, from inside a
//! namespace), [`Mesh::call_name`] (an unmodified call by name), [`Mesh::tcp_call`],
//! [`Mesh::config_dump`] (a sidecar's or gateway's roots and certificate).

#![allow(dead_code)] // Not every test file uses every helper.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use hickory_proto::op::ResponseCode;
pub use hickory_proto::rr::RecordType;

pub const WEFT: &str = env!("CARGO_BIN_EXE_weft");
/// The app port of every pod (each pod has its own IP).
pub const APP_PORT: u16 = 8080;
/// Where each cluster's control plane serves its HTTP API, inside the cluster's namespace.
const API: &str = "127.0.0.1:15080";
const GATEWAY_PORT: u16 = 15443;
/// Bound for every process's start-up (its ready line). A bound, not a timing: on a loaded
/// 2-core CI machine a start can take tens of seconds.
pub const WAIT: Duration = Duration::from_secs(60);

/// True when this machine cannot run the harness; prints why (the test then returns: skipped).
pub fn skip(test: &str) -> bool {
    if weft_testkit::netns::skip_unless_root(test) {
        return true;
    }
    if Command::new("tcpdump").arg("--version").output().is_err() {
        eprintln!(
            "SKIPPED {test}: tcpdump is not installed (apt-get install tcpdump; scripts/test.sh installs it as root)"
        );
        return true;
    }
    false
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// `ip netns exec <ns> <args>`, asserting success.
fn ns_run(ns: &str, args: &[&str]) -> Output {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(args);
    run(&full)
}

/// A started process: its stdout and stderr lines arrive on a channel.
struct Proc {
    what: String,
    child: Child,
}

/// Starts `program args` in `ns` and waits (bounded) for an output line containing `marker`.
fn spawn(ns: &str, program: &str, args: &[&str], env: &[(&str, String)], marker: &str) -> Proc {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, program])
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program} in {ns}: {e}"));
    let (tx, rx) = mpsc::channel::<String>();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(l.clone()).is_err() && std::env::var_os("WEFT_TEST_LOGS").is_some() {
                    eprintln!("{l}");
                }
            }
        });
    }
    drop(tx);
    let what = format!("{program} {} in {ns}", args.join(" "));
    let deadline = Instant::now() + WAIT;
    let mut seen = vec![];
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) if l.contains(marker) => break,
            Ok(l) => seen.push(l),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("{what}: no `{marker}` within {WAIT:?}:\n{}", seen.join("\n"))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = child.kill();
                panic!("{what} exited before `{marker}`:\n{}", seen.join("\n"))
            }
        }
    }
    // Later lines are dropped (or shown with WEFT_TEST_LOGS=1); the pipes keep draining.
    std::thread::spawn(move || {
        for l in rx {
            if std::env::var_os("WEFT_TEST_LOGS").is_some() {
                eprintln!("{l}");
            }
        }
    });
    Proc { what, child }
}

impl Proc {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A pod: a namespace on its cluster's bridge with a sidecar, interception rules and an app.
pub struct Pod {
    pub name: String,
    pub service: String,
    pub ns: String,
    pub ip: Ipv4Addr,
    sidecar: Proc,
    /// The sidecar's config file (to start it again after [`Mesh::kill_pod`]).
    sidecar_cfg: String,
    app: Option<Proc>,
    app_argv: Vec<String>,
}

pub struct Cluster {
    pub name: String,
    /// The namespace holding the bridge and the control plane.
    pub ns: String,
    /// The gateway's namespace: a leg on the cluster's bridge (`eth0`), one on the WAN (`wan0`).
    pub gw_ns: String,
    /// The third octet of the cluster's 10.77.x.0/24.
    subnet: u8,
    /// The gateway's address on the WAN.
    pub gateway_wan: Ipv4Addr,
    data_dir: PathBuf,
    pub pods: Vec<Pod>,
    control: Option<Proc>,
    /// A remote cluster's `weft dns` (on the bridge's address, :53), following the primary.
    dns: Option<Proc>,
    gateway: Option<Proc>,
    /// For a remote cluster (primary-remote, [`Mesh::add_remote`]): the primary's name. Such a
    /// cluster has no control plane: its proxies follow the primary through the primary's gateway.
    pub primary: Option<String>,
}

impl Cluster {
    /// The control plane's address on the bridge (gRPC :15012, DNS :53).
    pub fn control_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 1)
    }

    /// The gateway's address on its cluster's bridge (the pods' default route).
    pub fn gateway_leg(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 254)
    }

    pub fn trust_domain(&self) -> String {
        format!("{}.local", self.name)
    }

    pub fn pod(&self, name: &str) -> &Pod {
        self.pods.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("no pod {name} in {}", self.name))
    }

    /// The control plane's data directory (its CA, token key, store).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

/// What an app in a pod runs.
pub enum App {
    /// `weft demo-app` echo on `0.0.0.0:8080`, answering with the caller's identity.
    Echo,
    /// `weft demo-app` frontend on `127.0.0.1:8080` calling `upstream` (host:port, by name
    /// through the pod's resolver: weft DNS).
    Frontend { upstream: String },
    /// `weft demo-app --tcp` echo on `0.0.0.0:8080`; its Service declares the port `tcp`
    /// (opaque: each connection between sidecars is a TLS handshake of its own). No health check.
    TcpEcho,
}

pub struct Mesh {
    pub tag: String,
    pub wan_ns: String,
    pub clusters: Vec<Cluster>,
    dir: PathBuf,
    /// Every namespace made, deleted on drop (after the processes are gone).
    namespaces: Vec<String>,
}

static HARNESSES: AtomicU32 = AtomicU32::new(0);

fn create_ns(name: &str) {
    let _ = Command::new("ip").args(["netns", "del", name]).output();
    run(&["ip", "netns", "add", name]);
    run(&["ip", "-n", name, "link", "set", "lo", "up"]);
}

/// A veth pair with one end in each namespace (never in the host's).
fn veth(a_ns: &str, a: &str, b_ns: &str, b: &str) {
    run(&["ip", "link", "add", a, "netns", a_ns, "type", "veth", "peer", "name", b, "netns", b_ns]);
}

impl Mesh {
    /// The WAN, and per name a cluster: bridge, control plane (trust domain `<name>.local`,
    /// network `net-<name>`, its gateway declared in its MeshConfig) and gateway. Not linked.
    pub fn new(names: &[&str]) -> Mesh {
        let n = HARNESSES.fetch_add(1, Ordering::Relaxed);
        let tag = format!("wmc{}x{n}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(format!("weft-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut mesh = Mesh { wan_ns: format!("{tag}-wan"), tag, clusters: vec![], dir, namespaces: vec![] };
        mesh.namespaces.push(mesh.wan_ns.clone());
        create_ns(&mesh.wan_ns);
        // Bridges get a fixed MAC: one created without takes its lowest port's and changes it as
        // ports join, and peers holding the old one in their ARP cache stall for a minute.
        run(&["ip", "-n", &mesh.wan_ns, "link", "add", "br0", "address", "02:77:0a:4d:63:01", "type", "bridge"]);
        run(&["ip", "-n", &mesh.wan_ns, "link", "set", "br0", "up"]);
        for (i, name) in names.iter().enumerate() {
            mesh.add_cluster(name, i as u8);
        }
        mesh
    }

    fn add_cluster(&mut self, name: &str, i: u8) {
        let ns = format!("{}-{name}", self.tag);
        let gw_ns = format!("{ns}-gw");
        let data_dir = self.dir.join(name);
        let mut c = Cluster {
            name: name.into(),
            ns: ns.clone(),
            gw_ns: gw_ns.clone(),
            subnet: 20 + i,
            gateway_wan: Ipv4Addr::new(10, 77, 99, 1 + i),
            data_dir,
            pods: vec![],
            control: None,
            dns: None,
            gateway: None,
            primary: None,
        };
        self.wire_cluster(&c);

        // The control plane.
        let cip = c.control_ip();
        let data = c.data_dir.to_string_lossy().into_owned();
        c.control = Some(spawn(
            &ns,
            WEFT,
            &[
                "control",
                "--data-dir",
                &data,
                "--grpc",
                &format!("{cip}:15012"),
                "--api",
                API,
                "--dns",
                &format!("{cip}:53"),
                "--trust-domain",
                &c.trust_domain(),
                "--cluster",
                name,
            ],
            &[],
            "ready",
        ));
        // Its network and gateway (as `weft apply` of the MeshConfig), before any credential.
        self.apply_in(&c, &self.mesh_config(&c));
        self.start_gateway(c);
    }

    /// A cluster's namespaces: its bridge, and its gateway's with legs on the bridge and the WAN.
    fn wire_cluster(&mut self, c: &Cluster) {
        let (ns, gw_ns, name) = (c.ns.as_str(), c.gw_ns.as_str(), c.name.as_str());
        for n in [ns, gw_ns] {
            self.namespaces.push(n.to_string());
            create_ns(n);
        }
        // The cluster's bridge, with the control plane's address.
        let mac = format!("02:77:0a:4d:{:02x}:00", c.subnet);
        run(&["ip", "-n", ns, "link", "add", "br0", "address", &mac, "type", "bridge"]);
        run(&["ip", "-n", ns, "addr", "add", &format!("{}/24", c.control_ip()), "dev", "br0"]);
        run(&["ip", "-n", ns, "link", "set", "br0", "up"]);
        // The gateway: a leg on the cluster's bridge, one on the WAN.
        veth(gw_ns, "eth0", ns, "vgw");
        run(&["ip", "-n", ns, "link", "set", "vgw", "master", "br0", "up"]);
        run(&["ip", "-n", gw_ns, "addr", "add", &format!("{}/24", c.gateway_leg()), "dev", "eth0"]);
        run(&["ip", "-n", gw_ns, "link", "set", "eth0", "up"]);
        let wan_end = format!("g{name}");
        veth(gw_ns, "wan0", &self.wan_ns, &wan_end[..wan_end.len().min(15)]);
        run(&["ip", "-n", &self.wan_ns, "link", "set", &wan_end[..wan_end.len().min(15)], "master", "br0", "up"]);
        run(&["ip", "-n", gw_ns, "addr", "add", &format!("{}/24", c.gateway_wan), "dev", "wan0"]);
        run(&["ip", "-n", gw_ns, "link", "set", "wan0", "up"]);
        // The gateway's namespace routes its cluster onto the WAN (masqueraded) and lets only
        // answers back in: nothing on the WAN reaches the cluster except through the gateway's port.
        ns_run(gw_ns, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
        ns_run(gw_ns, &["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-j", "MASQUERADE"]);
        ns_run(gw_ns, &["iptables", "-A", "FORWARD", "-i", "eth0", "-o", "wan0", "-j", "ACCEPT"]);
        ns_run(
            gw_ns,
            &["iptables", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
        );
        ns_run(gw_ns, &["iptables", "-A", "FORWARD", "-j", "REJECT"]);
        // The control plane's namespace reaches the WAN through the gateway (links go out there).
        run(&["ip", "-n", ns, "route", "add", "default", "via", &c.gateway_leg().to_string()]);
    }

    /// The MeshConfig of a cluster with a control plane: its network and gateway, and every remote
    /// cluster it is the primary of.
    fn mesh_config(&self, c: &Cluster) -> String {
        let remotes: Vec<String> = self
            .clusters
            .iter()
            .filter(|r| r.primary.as_deref() == Some(c.name.as_str()))
            .map(|r| {
                format!("{{ name: {0}, network: net-{0}, gateways: [\"{1}:{GATEWAY_PORT}\"] }}", r.name, r.gateway_wan)
            })
            .collect();
        format!(
            "apiVersion: weft.io/v1alpha1\nkind: MeshConfig\nmetadata: {{ name: mesh }}\nspec: {{ trustDomain: {}, cluster: {{ name: {1}, network: net-{1}, gateways: [\"{2}:{GATEWAY_PORT}\"] }}, remoteClusters: [{3}] }}\n",
            c.trust_domain(),
            c.name,
            c.gateway_wan,
            remotes.join(", ")
        )
    }

    /// Where a cluster's proxies follow their control plane: its own (gRPC on the bridge) or, for
    /// a remote cluster, the primary's gateway on the WAN.
    fn control_address(&self, c: &Cluster) -> String {
        match &c.primary {
            Some(p) => format!("{}:{GATEWAY_PORT}", self.cluster(p).gateway_wan),
            None => format!("{}:15012", c.control_ip()),
        }
    }

    /// Starts a cluster's east-west gateway (admin on its namespace's loopback :15000) and adds
    /// the cluster to the mesh.
    fn start_gateway(&mut self, mut c: Cluster) {
        let name = c.name.clone();
        let token = self.token_file(&c, "east-west-gateway");
        let control = self.control_address(&c);
        let cfg = self.write(
            &format!("{name}-gateway.yaml"),
            &format!(
                "mode: gateway\ncluster: {name}\ngateway: {{ listen: \"0.0.0.0:{GATEWAY_PORT}\" }}\nadmin: {{ listen: \"127.0.0.1:15000\" }}\ncontrol: {{ address: \"{control}\", token_file: \"{token}\", proxy_id: {name}-gateway }}\n"
            ),
        );
        c.gateway = Some(spawn(&c.gw_ns, WEFT, &["proxy", "run", "--config", &cfg], &[], "ready"));
        self.clusters.push(c);
    }

    /// A remote cluster `name` of `primary` (primary-remote): a bridge and a gateway like any
    /// cluster's, but no control plane. The primary's MeshConfig declares it in `remoteClusters`
    /// (network `net-<name>`, its gateway's WAN address); its gateway and pods follow the primary
    /// through the primary's gateway, with tokens made on the primary with `--cluster <name>`, and
    /// its Workloads are applied to the primary (`cluster: <name>`). Its pods' resolver is a
    /// `weft dns` on its bridge (the primary's DNS is on the primary's bridge, which the remote
    /// network does not reach) that follows the primary through the primary's gateway and answers
    /// from the primary's catalog.
    pub fn add_remote(&mut self, name: &str, primary: &str) {
        let i = self.clusters.len() as u8;
        let ns = format!("{}-{name}", self.tag);
        let gw_ns = format!("{ns}-gw");
        let c = Cluster {
            name: name.into(),
            ns: ns.clone(),
            gw_ns: gw_ns.clone(),
            subnet: 20 + i,
            gateway_wan: Ipv4Addr::new(10, 77, 99, 1 + i),
            data_dir: self.dir.join(name),
            pods: vec![],
            control: None,
            dns: None,
            gateway: None,
            primary: Some(primary.into()),
        };
        self.wire_cluster(&c);
        // Declared on the primary before any token of it is made.
        let mut mesh = self.mesh_config(self.cluster(primary));
        let decl = format!("{{ name: {name}, network: net-{name}, gateways: [\"{}:{GATEWAY_PORT}\"] }}", c.gateway_wan);
        mesh = if mesh.contains("remoteClusters: []") {
            mesh.replace("remoteClusters: []", &format!("remoteClusters: [{decl}]"))
        } else {
            mesh.replace("remoteClusters: [", &format!("remoteClusters: [{decl}, "))
        };
        self.apply(primary, &mesh);
        self.start_gateway(c);
        let c = self.cluster(name);
        let token = self.token_file(c, "dns");
        let control = self.control_address(c);
        let listen = format!("{}:53", c.control_ip());
        let args = ["dns", "--control", &control, "--token-file", &token, "--listen", &listen];
        let dns = spawn(&c.ns, WEFT, &args, &[], "ready");
        self.cluster_mut(name).dns = Some(dns);
    }

    /// Writes `text` to `name` in the harness's directory (removed on drop); returns its path.
    pub fn write(&self, name: &str, text: &str) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }

    pub fn cluster(&self, name: &str) -> &Cluster {
        self.clusters.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no cluster {name}"))
    }

    fn cluster_mut(&mut self, name: &str) -> &mut Cluster {
        self.clusters.iter_mut().find(|c| c.name == name).unwrap_or_else(|| panic!("no cluster {name}"))
    }

    fn cli(c: &Cluster, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &c.ns, WEFT])
            .args(args)
            .env("WEFT_SERVER", API)
            .env("WEFT_DATA_DIR", &c.data_dir)
            .env_remove("WEFT_TOKEN")
            .output()
            .unwrap()
    }

    /// The cluster whose control plane serves `c`: `c`, or a remote cluster's primary.
    fn control_of<'a>(&'a self, c: &'a Cluster) -> &'a Cluster {
        c.primary.as_deref().map_or(c, |p| self.cluster(p))
    }

    /// `weft <args>` against cluster `cluster`'s control plane (run in its namespace; a remote
    /// cluster's primary's).
    pub fn weft(&self, cluster: &str, args: &[&str]) -> Output {
        Self::cli(self.control_of(self.cluster(cluster)), args)
    }

    /// As [`Mesh::weft`], asserting success; stdout.
    pub fn weft_ok(&self, cluster: &str, args: &[&str]) -> String {
        let out = self.weft(cluster, args);
        assert!(out.status.success(), "weft {args:?} on {cluster}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn apply_in(&self, c: &Cluster, yaml: &str) {
        let file = self.write(&format!("{}-apply-{}.yaml", c.name, rand()), yaml);
        let out = Self::cli(self.control_of(c), &["apply", "-f", &file]);
        assert!(out.status.success(), "weft apply on {}: {}", c.name, String::from_utf8_lossy(&out.stderr));
    }

    /// `weft apply -f` of `yaml` in cluster `cluster`.
    pub fn apply(&self, cluster: &str, yaml: &str) {
        self.apply_in(self.cluster(cluster), yaml);
    }

    /// A bootstrap token file for `default/<sa>` of cluster `c` (of a remote cluster: made on its
    /// primary with `--cluster <c>`).
    fn token_file(&self, c: &Cluster, sa: &str) -> String {
        let identity = format!("default/{sa}");
        let mut args = vec!["token", "create", "--identity", &identity];
        if c.primary.is_some() {
            args.extend(["--cluster", &c.name]);
        }
        let out = Self::cli(self.control_of(c), &args);
        assert!(out.status.success(), "weft token create on {}: {}", c.name, String::from_utf8_lossy(&out.stderr));
        let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
        self.write(&format!("{}-{sa}-{}.token", c.name, rand()), &token)
    }

    /// A pod `name` of `service` in `cluster`, with interception, its sidecar and `app`; its
    /// Service (exported) and Workload (an echo with an HTTP check) are applied. The sidecar's
    /// connect timeout is 2 s so a cut WAN is reported quickly.
    pub fn add_pod(&mut self, cluster: &str, name: &str, service: &str, app: App) {
        let ns = format!("{}-{name}", self.cluster(cluster).ns);
        self.namespaces.push(ns.clone());
        create_ns(&ns);
        let c = self.cluster(cluster);
        let ip = Ipv4Addr::new(10, 77, c.subnet, 2 + c.pods.len() as u8);
        let host_end = format!("v{name}");
        let host_end = &host_end[..host_end.len().min(15)];
        veth(&ns, "eth0", &c.ns, host_end);
        run(&["ip", "-n", &c.ns, "link", "set", host_end, "master", "br0", "up"]);
        run(&["ip", "-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        run(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        run(&["ip", "-n", &ns, "route", "add", "default", "via", &c.gateway_leg().to_string()]);
        // `ip netns exec` bind-mounts /etc/netns/<ns>/resolv.conf over /etc/resolv.conf. The
        // cluster's weft DNS is on its bridge: its control plane's, or a remote cluster's
        // `weft dns` (see [`Mesh::add_remote`]).
        let etc = Path::new("/etc/netns").join(&ns);
        std::fs::create_dir_all(&etc).unwrap();
        let resolver = c.control_ip();
        std::fs::write(
            etc.join("resolv.conf"),
            format!("nameserver {resolver}\noptions ndots:1 timeout:1 attempts:1\n"),
        )
        .unwrap();

        let token = self.token_file(c, service);
        let cfg = self.write(
            &format!("{}-{name}-sidecar.yaml", c.name),
            &format!(
                "control: {{ address: \"{}\", token_file: \"{token}\", proxy_id: {name}, workload: {name} }}\nadmin: {{ listen: \"0.0.0.0:15000\" }}\ninbound: {{ listen: \"0.0.0.0:15006\" }}\noutbound: {{ transparent: \"127.0.0.1:15001\" }}\ntimeouts: {{ connect: 2s }}\n",
                self.control_address(c)
            ),
        );
        let init = Command::new("ip")
            .args(["netns", "exec", &ns, WEFT, "proxy", "init", "--exclude-inbound-ports", "15000"])
            .output()
            .unwrap();
        assert!(init.status.success(), "proxy init in {ns}: {}", String::from_utf8_lossy(&init.stderr));
        let sidecar = spawn(&ns, WEFT, &["proxy", "run", "--config", &cfg], &[], "ready");
        let is_echo = matches!(app, App::Echo);
        let ports = if matches!(app, App::TcpEcho) {
            format!(", ports: [{{ port: {APP_PORT}, protocol: tcp }}]")
        } else {
            String::new()
        };
        let placed = c.primary.as_ref().map(|_| format!(", cluster: {}", c.name)).unwrap_or_default();
        let app_argv: Vec<String> = match app {
            App::Echo => {
                vec!["demo-app".into(), "--name".into(), name.into(), "--listen".into(), "0.0.0.0:8080".into()]
            }
            App::TcpEcho => vec![
                "demo-app".into(),
                "--name".into(),
                name.into(),
                "--listen".into(),
                "0.0.0.0:8080".into(),
                "--tcp".into(),
            ],
            App::Frontend { upstream } => vec![
                "demo-app".into(),
                "--name".into(),
                name.into(),
                "--listen".into(),
                "127.0.0.1:8080".into(),
                "--upstream".into(),
                upstream,
            ],
        };
        let argv: Vec<&str> = app_argv.iter().map(String::as_str).collect();
        let app = Some(spawn(&ns, WEFT, &argv, &[], "listening"));
        // An echo is health-checked through its sidecar's /app-health (its app port takes mTLS
        // only), so a killed app leaves its cluster's catalog, and the linked clusters', in about
        // a second. Not in a remote cluster: the primary's control plane runs checks, and it does
        // not reach the remote network.
        let check = if is_echo && c.primary.is_none() {
            format!(", checks: [{{ name: http, http: \"http://{ip}:15000/app-health/{APP_PORT}/health\", interval: 1s, timeout: 1s }}]")
        } else {
            String::new()
        };
        let docs = format!(
            "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: {service} }}\nspec: {{ export: true{ports} }}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: {name} }}\nspec: {{ service: {service}, address: {ip}, port: {APP_PORT}, sidecar: \"{ip}:15006\"{check}{placed} }}\n"
        );
        self.apply_in(c, &docs);
        let pod = Pod { name: name.into(), service: service.into(), ns, ip, sidecar, sidecar_cfg: cfg, app, app_argv };
        self.cluster_mut(cluster).pods.push(pod);
    }

    pub fn pod(&self, cluster: &str, name: &str) -> &Pod {
        self.cluster(cluster).pod(name)
    }

    /// Kills a pod's app (kill -9); its sidecar stays. For failover checks.
    pub fn stop_app(&mut self, cluster: &str, pod: &str) {
        let c = self.cluster_mut(cluster);
        let p = c.pods.iter_mut().find(|p| p.name == pod).expect("pod");
        if let Some(mut app) = p.app.take() {
            app.kill();
        }
    }

    /// Starts a pod's app again (after [`Mesh::stop_app`]).
    pub fn start_app(&mut self, cluster: &str, pod: &str) {
        let c = self.cluster_mut(cluster);
        let p = c.pods.iter_mut().find(|p| p.name == pod).expect("pod");
        let argv: Vec<&str> = p.app_argv.iter().map(String::as_str).collect();
        p.app = Some(spawn(&p.ns, WEFT, &argv, &[], "listening"));
    }

    /// Kills a pod's app and its sidecar (kill -9 of the whole endpoint): connections to it are
    /// refused from then on. For failover checks; [`Mesh::restart_pod`] brings it back.
    pub fn kill_pod(&mut self, cluster: &str, pod: &str) {
        let c = self.cluster_mut(cluster);
        let p = c.pods.iter_mut().find(|p| p.name == pod).expect("pod");
        if let Some(mut app) = p.app.take() {
            app.kill();
        }
        p.sidecar.kill();
    }

    /// Starts a pod's sidecar and app again (after [`Mesh::kill_pod`]).
    pub fn restart_pod(&mut self, cluster: &str, pod: &str) {
        let c = self.cluster_mut(cluster);
        let p = c.pods.iter_mut().find(|p| p.name == pod).expect("pod");
        p.sidecar = spawn(&p.ns, WEFT, &["proxy", "run", "--config", &p.sidecar_cfg], &[], "ready");
        let argv: Vec<&str> = p.app_argv.iter().map(String::as_str).collect();
        p.app = Some(spawn(&p.ns, WEFT, &argv, &[], "listening"));
    }

    /// Links `from` to `to` (`weft link create` on `to`, `weft link apply` on `from`) and waits
    /// until the link is active.
    pub fn link(&self, from: &str, to: &str) {
        let cred = self.weft_ok(to, &["link", "create"]);
        let file = self.write(&format!("{to}-{}.link", rand()), cred.trim());
        self.weft_ok(from, &["link", "apply", "-f", &file]);
        self.wait_link_state(from, to, "active");
    }

    /// `from`'s link to `to` as `weft link list -o json` shows it (Null when there is none).
    pub fn link_status(&self, from: &str, to: &str) -> serde_json::Value {
        let out = self.weft_ok(from, &["link", "list", "-o", "json"]);
        let text = out.trim();
        if !text.starts_with('[') {
            return serde_json::Value::Null; // "No links. ..."
        }
        let links: Vec<serde_json::Value> = serde_json::from_str(text).unwrap();
        links.into_iter().find(|l| l["cluster"] == to).unwrap_or(serde_json::Value::Null)
    }

    /// Polls (bounded) until `from`'s link to `to` is in `state`; returns the link.
    pub fn wait_link_state(&self, from: &str, to: &str, state: &str) -> serde_json::Value {
        eventually(&format!("{from}'s link to {to} is {state}"), Duration::from_secs(40), || {
            let l = self.link_status(from, to);
            (l["state"] == state).then_some(l)
        })
    }

    /// The services and endpoints a pod's sidecar routes to (`/config_dump` `routes`, read from
    /// inside the pod: it is served to loopback only).
    pub fn routes(&self, cluster: &str, pod: &str) -> Vec<serde_json::Value> {
        let p = self.pod(cluster, pod);
        let (status, body) = self.call(cluster, pod, "127.0.0.1:15000", "/config_dump");
        assert!(status.contains("200"), "config_dump of {}: {status} {body}", p.name);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["routes"].as_array().cloned().unwrap_or_default()
    }

    /// The clusters of the endpoints of `service` in a pod's sidecar routes.
    pub fn routed_clusters(&self, cluster: &str, pod: &str, service: &str) -> Vec<String> {
        let routes = self.routes(cluster, pod);
        let mut out: Vec<String> = routes
            .iter()
            .filter(|r| r["name"] == service)
            .flat_map(|r| r["endpoints"].as_array().cloned().unwrap_or_default())
            .map(|e| e["cluster"].as_str().unwrap_or_default().to_string())
            .collect();
        out.sort();
        out
    }

    /// An unmodified app's call from inside a pod: `weft demo-call addr --path path`. Returns the
    /// status line and body, or the error as the status (`ERR: ...`).
    pub fn call(&self, cluster: &str, pod: &str, addr: &str, path: &str) -> (String, String) {
        let p = self.pod(cluster, pod);
        self.call_from(&p.ns, addr, path)
    }

    /// [`Mesh::call`] from any namespace of the harness.
    pub fn call_from(&self, ns: &str, addr: &str, path: &str) -> (String, String) {
        let out =
            Command::new("ip").args(["netns", "exec", ns, WEFT, "demo-call", addr, "--path", path]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return (format!("ERR: {}", String::from_utf8_lossy(&out.stderr).trim()), text);
        }
        let (status, body) = text.split_once('\n').unwrap_or((&text, ""));
        (status.to_string(), body.trim().to_string())
    }

    /// Whether a TCP connection from namespace `ns` to `ip:port` is accepted (within 3 s), made
    /// with bash's `/dev/tcp` (no interception is involved unless `ns` is a pod).
    pub fn tcp_connects(&self, ns: &str, addr: &str) -> bool {
        let (ip, port) = addr.rsplit_once(':').expect("ip:port");
        Command::new("ip")
            .args(["netns", "exec", ns, "timeout", "3", "bash", "-c", &format!("exec 3<>/dev/tcp/{ip}/{port}")])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// The IPv4 addresses `name` resolves to through a pod's resolver (weft DNS); empty when the
    /// name does not resolve.
    pub fn resolve(&self, cluster: &str, pod: &str, name: &str) -> Vec<String> {
        let p = self.pod(cluster, pod);
        let out = Command::new("ip").args(["netns", "exec", &p.ns, "getent", "ahostsv4", name]).output().unwrap();
        let mut ips: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
        ips.sort();
        ips.dedup();
        ips
    }

    /// A DNS query from a pod to its cluster's DNS (the server in its resolv.conf): the response
    /// code and the answers (A as addresses, SRV as `port target`).
    pub fn dns(&self, cluster: &str, pod: &str, name: &str, qtype: RecordType) -> (ResponseCode, Vec<String>) {
        dns_query(&self.pod(cluster, pod).ns, self.cluster(cluster).control_ip(), name, qtype)
    }

    /// An unmodified app's call by name from inside a pod: `name` resolved through the pod's
    /// resolver (weft DNS), the first address dialled on `port` with `Host: name:port`. Returns the
    /// address dialled, the status line and the body (`ERR: ...` as the status when the call or
    /// the resolution failed).
    pub fn call_name(&self, cluster: &str, pod: &str, name: &str, port: u16, path: &str) -> (String, String, String) {
        let Some(ip) = self.resolve(cluster, pod, name).into_iter().next() else {
            return (String::new(), format!("ERR: {name} does not resolve"), String::new());
        };
        let p = self.pod(cluster, pod);
        let out = Command::new("ip")
            .args(["netns", "exec", &p.ns, WEFT, "demo-call", &format!("{ip}:{port}"), "--path", path])
            .args(["--host", &format!("{name}:{port}")])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return (ip, format!("ERR: {}", String::from_utf8_lossy(&out.stderr).trim()), text);
        }
        let (status, body) = text.split_once('\n').unwrap_or((&text, ""));
        (ip, status.to_string(), body.trim().to_string())
    }

    /// An unmodified app's TCP exchange from inside a pod: `data` sent to `addr`, half-closed,
    /// and what came back (`weft demo-call --tcp`); `Err` with the error when it failed.
    pub fn tcp_call(&self, cluster: &str, pod: &str, addr: &str, data: &str) -> Result<String, String> {
        let p = self.pod(cluster, pod);
        let out =
            Command::new("ip").args(["netns", "exec", &p.ns, WEFT, "demo-call", addr, "--tcp", data]).output().unwrap();
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A proxy's `/config_dump` (its admin on `127.0.0.1:15000` of namespace `ns`: a pod's or a
    /// gateway's).
    pub fn config_dump(&self, ns: &str) -> serde_json::Value {
        let (status, body) = self.call_from(ns, "127.0.0.1:15000", "/config_dump");
        assert!(status.contains("200"), "config_dump in {ns}: {status} {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("config_dump in {ns}: {e}: {body}"))
    }

    /// Cuts (`down`) or heals (`up`) a cluster's gateway leg on the WAN.
    pub fn set_wan(&self, cluster: &str, up: bool) {
        let c = self.cluster(cluster);
        run(&["ip", "-n", &c.gw_ns, "link", "set", "wan0", if up { "up" } else { "down" }]);
    }

    /// Starts a packet capture on the WAN bridge.
    pub fn capture_wan(&self) -> Capture {
        let file = self.dir.join(format!("wan-{}.pcap", rand()));
        let f = file.to_string_lossy().into_owned();
        let proc = spawn(
            &self.wan_ns,
            "tcpdump",
            &["-Z", "root", "-i", "br0", "-U", "-s", "0", "-w", &f, "tcp"],
            &[],
            "listening on",
        );
        Capture { proc, file }
    }
}

/// A running tcpdump; [`Capture::finish`] stops it and returns what it wrote.
pub struct Capture {
    proc: Proc,
    file: PathBuf,
}

impl Capture {
    /// Waits (bounded) until the capture holds at least `min` bytes, stops tcpdump (SIGINT, so
    /// it flushes) and returns the file's bytes.
    pub fn finish(mut self, min: u64) -> Vec<u8> {
        let size = || std::fs::metadata(&self.file).map(|m| m.len()).unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(10);
        while size() < min && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-INT", &self.proc.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.proc.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::read(&self.file).unwrap_or_default()
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        // Processes first: a namespace with a process in it outlives `ip netns del`.
        for c in &mut self.clusters {
            for p in &mut c.pods {
                if let Some(mut a) = p.app.take() {
                    a.kill();
                }
                p.sidecar.kill();
            }
            if let Some(mut g) = c.gateway.take() {
                g.kill();
            }
            if let Some(mut cp) = c.control.take() {
                cp.kill();
            }
            if let Some(mut d) = c.dns.take() {
                d.kill();
            }
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(ns));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A DNS query sent from inside namespace `ns` (a thread of this process enters it) to
/// `server:53`: the response code and the answers (A as addresses, SRV as `port target`).
/// Retried twice when no answer comes within 2 s.
pub fn dns_query(ns: &str, server: Ipv4Addr, name: &str, qtype: RecordType) -> (ResponseCode, Vec<String>) {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RData};
    use std::os::fd::AsRawFd;
    let (ns, name) = (ns.to_string(), name.to_string());
    std::thread::spawn(move || {
        let f = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap_or_else(|e| panic!("netns {ns}: {e}"));
        // SAFETY: setns on this thread only (a new thread, ended below); the fd is open.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut q = Message::query();
        q.metadata.id = 7;
        q.add_query(Query::query(Name::from_ascii(&name).unwrap(), qtype));
        let bytes = q.to_vec().unwrap();
        let mut buf = vec![0u8; 4096];
        for _ in 0..3 {
            sock.send_to(&bytes, (server, 53)).unwrap();
            let Ok(n) = sock.recv(&mut buf) else { continue };
            let m = Message::from_vec(&buf[..n]).unwrap();
            let answers = m
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(a.0.to_string()),
                    RData::SRV(s) => Some(format!("{} {}", s.port, s.target.to_ascii())),
                    _ => None,
                })
                .collect();
            return (m.metadata.response_code, answers);
        }
        panic!("no DNS answer from {server}:53 in {ns} for {name}")
    })
    .join()
    .unwrap()
}

/// Polls `f` (every 100 ms) until it returns `Some`, at most `within`.
pub fn eventually<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn rand() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

/// Whether `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every namespace and `/etc/netns` entry of this harness's tag is gone.
pub fn assert_nothing_left(tag: &str) {
    let list = run(&["ip", "netns", "list"]);
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(!list.contains(tag), "namespaces left behind: {list}");
    let links = run(&["ip", "link"]);
    assert!(!String::from_utf8_lossy(&links.stdout).contains(tag), "host links left behind");
    let etc = std::fs::read_dir("/etc/netns")
        .map(|d| d.filter_map(Result::ok).any(|e| e.file_name().to_string_lossy().contains(tag)));
    assert!(!etc.unwrap_or(false), "/etc/netns entries left behind");
}
