//! Pods on this machine for `weft up --netns`: a Linux bridge on the host and one network
//! namespace per workload, joined to it by a veth pair, each with its own IP, a default route via
//! the bridge and a resolv.conf that points at the control plane's DNS.
//!
//! ```text
//!  host netns                         pod netns "weft<tag>-api-v1"
//!  ┌───────────────────────────┐      ┌──────────────────────────────────────┐
//!  │ bridge wft<tag>  10.N.M.1 ├─veth─┤ eth0 10.N.M.2   lo                    │
//!  │  control plane: gRPC, DNS │      │ app · weft proxy · iptables (init)    │
//!  └───────────────────────────┘      └──────────────────────────────────────┘
//! ```
//! Everything is named after a tag (the process id), so two runs never collide, and everything is
//! removed on drop: the namespaces (and with them their iptables rules), `/etc/netns/<name>`, the
//! bridge. Needs root, iproute2 and iptables.

use anyhow::{bail, Context};
use std::net::Ipv4Addr;
use std::process::Command;

/// The bridge, its subnet, and the pods made so far.
pub struct PodNetwork {
    tag: String,
    bridge: String,
    /// The first three octets of the /24.
    prefix: [u8; 3],
    pods: Vec<Pod>,
}

#[derive(Clone, Debug)]
pub struct Pod {
    pub name: String,
    /// The network namespace (`ip netns exec <netns> ...`).
    pub netns: String,
    pub ip: Ipv4Addr,
}

fn run(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(args[0]).args(&args[1..]).output().with_context(|| format!("cannot run {}", args[0]))?;
    if !out.status.success() {
        bail!("`{}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A fixed MAC for a bridge whose subnet's third octet is `octet` (locally administered, unicast).
///
/// A Linux bridge created without an address takes the lowest MAC of its ports and changes it when
/// a port with a lower one joins. Peers that already resolved the bridge's address (the host's
/// leg, the gateway) keep sending to the old MAC, which the bridge no longer takes as its own, so
/// connections to the control plane stall for up to a minute until their ARP entry expires. An
/// address set at creation never changes.
pub fn bridge_mac(octet: u8, n: u8) -> String {
    format!("02:77:0a:d5:{octet:02x}:{n:02x}")
}

/// Held while a run picks its free 10.213.x.0/24 subnets and puts its addresses on them: another
/// `weft up --netns` starting at the same moment then sees them as used (without it, both could
/// read the host's addresses before either added its own and take the same subnet). Released
/// when dropped.
pub fn subnet_lock() -> anyhow::Result<std::fs::File> {
    let dir =
        if std::path::Path::new("/run").is_dir() { std::path::PathBuf::from("/run") } else { std::env::temp_dir() };
    let path = dir.join("weft-netns-subnets.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.lock().with_context(|| format!("cannot lock {}", path.display()))?;
    Ok(file)
}

/// Why this machine cannot run pods, if it cannot (not root, iproute2 or iptables missing).
pub fn unavailable() -> Option<String> {
    let root = run(&["id", "-u"]).map(|o| o.trim() == "0").unwrap_or(false);
    if !root {
        return Some("network namespaces need root: run `sudo weft up --netns`, or `weft up` without --netns".into());
    }
    if run(&["ip", "-V"]).is_err() {
        return Some("`ip` (iproute2) is not installed: apt-get install iproute2".into());
    }
    if run(&["iptables", "-V"]).is_err() {
        return Some("`iptables` is not installed: apt-get install iptables".into());
    }
    None
}

impl PodNetwork {
    /// Creates the bridge on a free 10.213.x.0/24 (one no interface on this host already uses).
    pub fn create() -> anyhow::Result<PodNetwork> {
        if let Some(why) = unavailable() {
            bail!(why);
        }
        let tag = (std::process::id() % 1_000_000).to_string();
        let bridge = format!("wft{tag}");
        let _picking = subnet_lock()?;
        let used = run(&["ip", "-o", "-4", "addr", "show"])?;
        let third = (0..250u16)
            .map(|i| ((std::process::id() as u16 % 200) + i) % 250 + 1)
            .find(|n| !used.contains(&format!("10.213.{n}.")))
            .context("no free 10.213.x.0/24 subnet on this host")?;
        let prefix = [10, 213, third as u8];
        let net = PodNetwork { tag, bridge, prefix, pods: vec![] };
        run(&["ip", "link", "add", &net.bridge, "address", &bridge_mac(third as u8, 0), "type", "bridge"])?;
        run(&["ip", "addr", "add", &format!("{}/24", net.gateway()), "dev", &net.bridge])?;
        run(&["ip", "link", "set", &net.bridge, "up"])?;
        Ok(net)
    }

    /// The host's address on the bridge: where pods reach the control plane.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.prefix[0], self.prefix[1], self.prefix[2], 1)
    }

    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// A new pod with the next free address, its DNS pointing at `dns` (port 53).
    pub fn pod(&mut self, name: &str, dns: Ipv4Addr) -> anyhow::Result<Pod> {
        let n = self.pods.len() as u8 + 2;
        let pod = Pod {
            name: name.to_string(),
            netns: format!("weft{}-{name}", self.tag),
            ip: Ipv4Addr::new(self.prefix[0], self.prefix[1], self.prefix[2], n),
        };
        let _ = run(&["ip", "netns", "del", &pod.netns]);
        run(&["ip", "netns", "add", &pod.netns])?;
        self.pods.push(pod.clone());
        let host_end = format!("wft{}v{n}", self.tag);
        run(&["ip", "-n", &pod.netns, "link", "set", "lo", "up"])?;
        run(&["ip", "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &pod.netns])?;
        run(&["ip", "link", "set", &host_end, "master", &self.bridge])?;
        run(&["ip", "link", "set", &host_end, "up"])?;
        run(&["ip", "-n", &pod.netns, "addr", "add", &format!("{}/24", pod.ip), "dev", "eth0"])?;
        run(&["ip", "-n", &pod.netns, "link", "set", "eth0", "up"])?;
        run(&["ip", "-n", &pod.netns, "route", "add", "default", "via", &self.gateway().to_string()])?;
        // `ip netns exec` bind-mounts /etc/netns/<netns>/resolv.conf over /etc/resolv.conf.
        let etc = std::path::Path::new("/etc/netns").join(&pod.netns);
        std::fs::create_dir_all(&etc).with_context(|| format!("cannot create {}", etc.display()))?;
        std::fs::write(etc.join("resolv.conf"), format!("nameserver {dns}\noptions ndots:1 timeout:2\n"))
            .with_context(|| format!("cannot write {}/resolv.conf", etc.display()))?;
        Ok(pod)
    }
}

impl Pod {
    /// `program args` to run inside this pod.
    pub fn command(&self, program: &std::path::Path) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("ip");
        c.args(["netns", "exec", &self.netns]).arg(program);
        c
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        for pod in &self.pods {
            let _ = run(&["ip", "netns", "del", &pod.netns]);
            let _ = std::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(&pod.netns));
        }
        // Deleting a namespace deletes its veth end, and with it the host end.
        let _ = run(&["ip", "link", "del", &self.bridge]);
    }
}
