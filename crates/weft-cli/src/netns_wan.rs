//! Clusters on separate networks for `weft up --netns --clusters N`: each cluster's bridge lives
//! in a namespace of its own (the cluster's "node", where its control plane runs), its pods are
//! namespaces on that bridge, and its east-west gateway is a namespace with one leg on the bridge
//! and one on a shared WAN bridge (in a namespace too). Clusters meet only at a gateway's port.
//!
//! ```text
//!  host: weft up ── wft<tag>h<i> 10.213.S.250 (API, demo traffic; no route to the WAN)
//!                      │
//!  netns weft<tag>-east (node)                 netns weft<tag>-wan        netns weft<tag>-west
//!  ┌─────────────────────────────┐             ┌────────────┐            ┌─────────────────────┐
//!  │ bridge br0 10.213.S.1/24    │             │ bridge br0 │            │ bridge br0 ...      │
//!  │ weft control (gRPC, DNS,    │             └──┬──────┬──┘            │ weft control        │
//!  │   API on 10.213.S.1)        │                │      │               └──────────┬──────────┘
//!  └──┬──────────────┬───────────┘                │      │                          │
//!     │ pods .2, .3  └ weft<tag>-east-gw: eth0 .254, wan0 10.213.W.1 ─ ─ 10.213.W.2 ─ west's gateway
//! ```
//! A pod's default route is its cluster's gateway namespace, which forwards to the WAN
//! (masqueraded) and lets only answers back in; it has no route to another cluster's subnet, so
//! an east pod reaches west only through west's gateway. The host has a leg on each cluster's
//! bridge (to call the control planes' APIs and the demo's web) and none on the WAN.
//! Everything is named after a tag (the process id) and removed on drop: namespaces (with their
//! bridges, veths and iptables rules), the host's legs, `/etc/netns/<name>`. Needs root,
//! iproute2 and iptables.

use crate::netns::Pod;
use anyhow::{bail, Context};
use std::net::Ipv4Addr;
use std::process::Command;

pub const GATEWAY_PORT: u16 = 15443;

fn run(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(args[0]).args(&args[1..]).output().with_context(|| format!("cannot run {}", args[0]))?;
    if !out.status.success() {
        bail!("`{}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ns_run(ns: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(args);
    run(&full)
}

/// One cluster's network.
pub struct ClusterNet {
    pub name: String,
    /// The node namespace: the bridge and the control plane.
    pub node: Pod,
    /// The gateway's namespace (`eth0` on the bridge, `wan0` on the WAN).
    pub gateway: Pod,
    /// The gateway's address on the WAN.
    pub gateway_wan: Ipv4Addr,
    prefix: [u8; 3],
    pods: u8,
}

impl ClusterNet {
    /// The control plane's address on the bridge.
    pub fn control_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.prefix[0], self.prefix[1], self.prefix[2], 1)
    }

    /// The gateway's leg on the bridge: the pods' default route.
    pub fn gateway_leg(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.prefix[0], self.prefix[1], self.prefix[2], 254)
    }

    /// The host's leg on the bridge.
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.prefix[0], self.prefix[1], self.prefix[2], 250)
    }

    pub fn subnet(&self) -> String {
        format!("{}.{}.{}.0/24", self.prefix[0], self.prefix[1], self.prefix[2])
    }
}

/// The WAN and the clusters; everything is removed on drop.
pub struct WanNetworks {
    tag: String,
    pub wan_ns: String,
    pub wan_subnet: String,
    pub clusters: Vec<ClusterNet>,
    namespaces: Vec<String>,
    host_links: Vec<String>,
}

impl WanNetworks {
    /// The WAN and one network per name, on free 10.213.x.0/24 subnets (one per cluster, one
    /// for the WAN) that no interface on this host uses.
    pub fn create(names: &[String]) -> anyhow::Result<WanNetworks> {
        if let Some(why) = crate::netns::unavailable() {
            bail!(why);
        }
        let tag = (std::process::id() % 1_000_000).to_string();
        // Until every cluster's host leg has its address (see `netns::subnet_lock`).
        let _picking = crate::netns::subnet_lock()?;
        let used = run(&["ip", "-o", "-4", "addr", "show"])?;
        let mut free = (0..250u16)
            .map(|i| ((std::process::id() as u16 % 200) + i) % 250 + 1)
            .filter(|n| !used.contains(&format!("10.213.{n}.")));
        let mut next = || free.next().map(|n| [10, 213, n as u8]).context("no free 10.213.x.0/24 subnet on this host");
        let wan = next()?;
        let mut net = WanNetworks {
            wan_ns: format!("weft{tag}-wan"),
            wan_subnet: format!("10.213.{}.0/24", wan[2]),
            tag,
            clusters: vec![],
            namespaces: vec![],
            host_links: vec![],
        };
        net.add_ns(&net.wan_ns.clone())?;
        // A fixed MAC: see `netns::bridge_mac`.
        let mac = crate::netns::bridge_mac(wan[2], 1);
        run(&["ip", "-n", &net.wan_ns, "link", "add", "br0", "address", &mac, "type", "bridge"])?;
        run(&["ip", "-n", &net.wan_ns, "link", "set", "br0", "up"])?;
        for (i, name) in names.iter().enumerate() {
            let prefix = next()?;
            net.add_cluster(name, i, prefix, Ipv4Addr::new(wan[0], wan[1], wan[2], i as u8 + 1))?;
        }
        Ok(net)
    }

    fn add_ns(&mut self, name: &str) -> anyhow::Result<()> {
        let _ = run(&["ip", "netns", "del", name]);
        run(&["ip", "netns", "add", name])?;
        self.namespaces.push(name.to_string());
        run(&["ip", "-n", name, "link", "set", "lo", "up"])?;
        Ok(())
    }

    fn add_cluster(&mut self, name: &str, i: usize, prefix: [u8; 3], gateway_wan: Ipv4Addr) -> anyhow::Result<()> {
        let pod = |ns: String, ip: Ipv4Addr| Pod { name: ns.clone(), netns: ns, ip };
        let node_ns = format!("weft{}-{name}", self.tag);
        let gw_ns = format!("{node_ns}-gw");
        let c = ClusterNet {
            name: name.into(),
            node: pod(node_ns.clone(), Ipv4Addr::new(prefix[0], prefix[1], prefix[2], 1)),
            gateway: pod(gw_ns.clone(), Ipv4Addr::new(prefix[0], prefix[1], prefix[2], 254)),
            gateway_wan,
            prefix,
            pods: 0,
        };
        self.add_ns(&node_ns)?;
        self.add_ns(&gw_ns)?;
        let mac = crate::netns::bridge_mac(prefix[2], 0);
        run(&["ip", "-n", &node_ns, "link", "add", "br0", "address", &mac, "type", "bridge"])?;
        run(&["ip", "-n", &node_ns, "addr", "add", &format!("{}/24", c.control_ip()), "dev", "br0"])?;
        run(&["ip", "-n", &node_ns, "link", "set", "br0", "up"])?;
        // The host's leg on the bridge.
        let host_end = format!("wft{}h{i}", self.tag);
        run(&["ip", "link", "add", &host_end, "type", "veth", "peer", "name", "vhost", "netns", &node_ns])?;
        self.host_links.push(host_end.clone());
        run(&["ip", "-n", &node_ns, "link", "set", "vhost", "master", "br0", "up"])?;
        run(&["ip", "addr", "add", &format!("{}/24", c.host_ip()), "dev", &host_end])?;
        run(&["ip", "link", "set", &host_end, "up"])?;
        // The gateway: a leg on the bridge, one on the WAN.
        run(&["ip", "link", "add", "eth0", "netns", &gw_ns, "type", "veth", "peer", "name", "vgw", "netns", &node_ns])?;
        run(&["ip", "-n", &node_ns, "link", "set", "vgw", "master", "br0", "up"])?;
        run(&["ip", "-n", &gw_ns, "addr", "add", &format!("{}/24", c.gateway_leg()), "dev", "eth0"])?;
        run(&["ip", "-n", &gw_ns, "link", "set", "eth0", "up"])?;
        let wan_end = format!("g{i}");
        run(&[
            "ip",
            "link",
            "add",
            "wan0",
            "netns",
            &gw_ns,
            "type",
            "veth",
            "peer",
            "name",
            &wan_end,
            "netns",
            &self.wan_ns,
        ])?;
        run(&["ip", "-n", &self.wan_ns, "link", "set", &wan_end, "master", "br0", "up"])?;
        run(&["ip", "-n", &gw_ns, "addr", "add", &format!("{gateway_wan}/24"), "dev", "wan0"])?;
        run(&["ip", "-n", &gw_ns, "link", "set", "wan0", "up"])?;
        // The gateway's namespace routes its cluster onto the WAN and lets only answers back.
        ns_run(&gw_ns, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])?;
        ns_run(&gw_ns, &["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-j", "MASQUERADE"])?;
        ns_run(&gw_ns, &["iptables", "-A", "FORWARD", "-i", "eth0", "-o", "wan0", "-j", "ACCEPT"])?;
        ns_run(
            &gw_ns,
            &["iptables", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
        )?;
        ns_run(&gw_ns, &["iptables", "-A", "FORWARD", "-j", "REJECT"])?;
        // The node (control plane) reaches the WAN through the gateway: links go out there.
        run(&["ip", "-n", &node_ns, "route", "add", "default", "via", &c.gateway_leg().to_string()])?;
        self.clusters.push(c);
        Ok(())
    }

    /// A new pod of cluster `i` with the next free address; default route through the cluster's
    /// gateway, DNS at the cluster's control plane (port 53).
    pub fn pod(&mut self, i: usize, name: &str) -> anyhow::Result<Pod> {
        let c = &self.clusters[i];
        let n = c.pods + 2;
        anyhow::ensure!(n < 250, "cluster {}: at most 248 pods fit on its /24", c.name);
        let pod = Pod {
            name: name.to_string(),
            netns: format!("{}-{name}", c.node.netns),
            ip: Ipv4Addr::new(c.prefix[0], c.prefix[1], c.prefix[2], n),
        };
        let (node, gw, dns) = (c.node.netns.clone(), c.gateway_leg(), c.control_ip());
        self.clusters[i].pods += 1;
        self.add_ns(&pod.netns)?;
        let host_end = format!("v{n}");
        run(&[
            "ip", "link", "add", "eth0", "netns", &pod.netns, "type", "veth", "peer", "name", &host_end, "netns", &node,
        ])?;
        run(&["ip", "-n", &node, "link", "set", &host_end, "master", "br0", "up"])?;
        run(&["ip", "-n", &pod.netns, "addr", "add", &format!("{}/24", pod.ip), "dev", "eth0"])?;
        run(&["ip", "-n", &pod.netns, "link", "set", "eth0", "up"])?;
        run(&["ip", "-n", &pod.netns, "route", "add", "default", "via", &gw.to_string()])?;
        let etc = std::path::Path::new("/etc/netns").join(&pod.netns);
        std::fs::create_dir_all(&etc).with_context(|| format!("cannot create {}", etc.display()))?;
        std::fs::write(etc.join("resolv.conf"), format!("nameserver {dns}\noptions ndots:1 timeout:2\n"))
            .with_context(|| format!("cannot write {}/resolv.conf", etc.display()))?;
        Ok(pod)
    }
}

impl Drop for WanNetworks {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            let _ = run(&["ip", "netns", "del", ns]);
            let _ = std::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(ns));
        }
        // Deleting the node namespace deletes the host legs' peers, and with them the legs.
        for l in &self.host_links {
            let _ = run(&["ip", "link", "del", l]);
        }
    }
}
