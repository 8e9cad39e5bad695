//! Network namespaces joined by veth pairs: real hosts on one machine, for the tests that need a
//! real network (transparent interception, traffic between "pods"). Needs root; tests call
//! [`skip_unless_root`] first and skip with a message otherwise. Addresses are in 10.77.0.0/16,
//! only ever inside namespaces the test created.

use std::process::{Command, Output};

/// True when the test can create namespaces; otherwise prints why it is skipped.
pub fn skip_unless_root(test: &str) -> bool {
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
    let ip = Command::new("ip").arg("-V").output().is_ok();
    let ipt = Command::new("iptables").arg("-V").output().is_ok();
    if !(root && ip && ipt) {
        eprintln!("SKIPPED {test}: needs root, iproute2 and iptables (root={root} ip={ip} iptables={ipt}); CI runs it as root");
        return true;
    }
    false
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// A namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        run(&["ip", "netns", "add", name]);
        run(&["ip", "-n", name, "link", "set", "lo", "up"]);
        Netns { name: name.to_string() }
    }

    /// A command to run inside this namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs a command inside the namespace, asserting success.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        run(&full)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// Joins two namespaces with a veth pair, `a_ip`/`b_ip` in CIDR form (e.g. `10.77.1.1/24`).
pub fn link(a: &Netns, a_ip: &str, b: &Netns, b_ip: &str) {
    let (va, vb) = (format!("v{}", &a.name), format!("v{}", &b.name));
    let (va, vb) = (&va[..va.len().min(15)], &vb[..vb.len().min(15)]);
    run(&["ip", "link", "add", va, "netns", &a.name, "type", "veth", "peer", "name", vb, "netns", &b.name]);
    run(&["ip", "-n", &a.name, "addr", "add", a_ip, "dev", va]);
    run(&["ip", "-n", &b.name, "addr", "add", b_ip, "dev", vb]);
    run(&["ip", "-n", &a.name, "link", "set", va, "up"]);
    run(&["ip", "-n", &b.name, "link", "set", vb, "up"]);
}
