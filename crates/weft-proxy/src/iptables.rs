//! Transparent interception rules, installed in the workload's network namespace by
//! `weft-proxy init` (the job of istio-init / linkerd-init).
//!
//! ```text
//! nat PREROUTING ─► WEFT_INBOUND: inbound port & excluded ports RETURN; other TCP ─► REDIRECT :15006
//! nat OUTPUT     ─► WEFT_OUTPUT:  proxy's own traffic (SO_MARK, or its uid) RETURN; 127.0.0.0/8 RETURN;
//!                                 other TCP ─► REDIRECT :15001
//! ```
//! The rules are idempotent: the chains are flushed and rebuilt on every run. The virtual IP
//! range (MeshConfig `virtualIps.range`) is routed locally (`ip route replace local <range> dev
//! lo`) so connections to VIPs reach the OUTPUT rules in any pod.

use std::process::Command;

pub const INBOUND_CHAIN: &str = "WEFT_INBOUND";
pub const OUTPUT_CHAIN: &str = "WEFT_OUTPUT";

#[derive(Clone, Debug)]
pub struct InitOptions {
    pub inbound_port: u16,
    pub outbound_port: u16,
    /// Traffic with this SO_MARK is the proxy's own and is never redirected.
    pub proxy_mark: u32,
    /// Traffic from this uid is the proxy's own (when the proxy runs as a dedicated user).
    pub proxy_uid: Option<u32>,
    /// Inbound ports left alone (the admin port, ssh...).
    pub exclude_inbound_ports: Vec<u16>,
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot run {cmd}: {source} (install iptables: apt-get install iptables)")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("`{cmd}` failed: {stderr} (are you root in the workload's network namespace?)")]
    Failed { cmd: String, stderr: String },
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The `iptables` argument lists, in order.
pub fn rules(o: &InitOptions) -> Vec<Vec<String>> {
    let inbound = o.inbound_port.to_string();
    let outbound = o.outbound_port.to_string();
    let mut r = vec![];
    for chain in [INBOUND_CHAIN, OUTPUT_CHAIN] {
        r.push(strs(&["-t", "nat", "-F", chain]));
    }
    r.push(strs(&["-t", "nat", "-A", INBOUND_CHAIN, "-p", "tcp", "--dport", &inbound, "-j", "RETURN"]));
    for p in &o.exclude_inbound_ports {
        r.push(strs(&["-t", "nat", "-A", INBOUND_CHAIN, "-p", "tcp", "--dport", &p.to_string(), "-j", "RETURN"]));
    }
    r.push(strs(&["-t", "nat", "-A", INBOUND_CHAIN, "-p", "tcp", "-j", "REDIRECT", "--to-ports", &inbound]));
    if o.proxy_mark != 0 {
        let mark = o.proxy_mark.to_string();
        r.push(strs(&["-t", "nat", "-A", OUTPUT_CHAIN, "-m", "mark", "--mark", &mark, "-j", "RETURN"]));
    }
    if let Some(uid) = o.proxy_uid {
        let uid = uid.to_string();
        r.push(strs(&["-t", "nat", "-A", OUTPUT_CHAIN, "-m", "owner", "--uid-owner", &uid, "-j", "RETURN"]));
    }
    r.push(strs(&["-t", "nat", "-A", OUTPUT_CHAIN, "-d", "127.0.0.0/8", "-j", "RETURN"]));
    r.push(strs(&["-t", "nat", "-A", OUTPUT_CHAIN, "-p", "tcp", "-j", "REDIRECT", "--to-ports", &outbound]));
    r
}

fn run(args: &[String]) -> Result<(), InitError> {
    let cmd = format!("iptables {}", args.join(" "));
    let out =
        Command::new("iptables").args(args).output().map_err(|source| InitError::Spawn { cmd: cmd.clone(), source })?;
    if !out.status.success() {
        return Err(InitError::Failed { cmd, stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() });
    }
    Ok(())
}

fn ok(args: &[&str]) -> bool {
    Command::new("iptables").args(args).output().map(|o| o.status.success()).unwrap_or(false)
}

/// The chains and the jumps into them (`apply` adds only those missing).
pub fn chain_setup() -> Vec<Vec<String>> {
    let mut r = vec![];
    for (chain, hook) in [(INBOUND_CHAIN, "PREROUTING"), (OUTPUT_CHAIN, "OUTPUT")] {
        r.push(strs(&["-t", "nat", "-N", chain]));
        r.push(strs(&["-t", "nat", "-A", hook, "-p", "tcp", "-j", chain]));
    }
    r
}

/// Installs the rules (creating the chains and their jumps if missing). Returns the commands run.
pub fn apply(o: &InitOptions) -> Result<Vec<String>, InitError> {
    let mut done = vec![];
    for (chain, hook) in [(INBOUND_CHAIN, "PREROUTING"), (OUTPUT_CHAIN, "OUTPUT")] {
        if !ok(&["-t", "nat", "-L", chain, "-n"]) {
            let a = strs(&["-t", "nat", "-N", chain]);
            run(&a)?;
            done.push(a.join(" "));
        }
        if !ok(&["-t", "nat", "-C", hook, "-p", "tcp", "-j", chain]) {
            let a = strs(&["-t", "nat", "-A", hook, "-p", "tcp", "-j", chain]);
            run(&a)?;
            done.push(a.join(" "));
        }
    }
    for a in rules(o) {
        run(&a)?;
        done.push(a.join(" "));
    }
    Ok(done)
}

/// The `ip` arguments that route the virtual IP range to this namespace itself, so that an
/// app connects to a VIP even in a pod with no route there (it would get ENETUNREACH before
/// the OUTPUT rules see the connection) and is redirected like any other outgoing TCP.
pub fn vip_route(range: &str) -> Vec<String> {
    strs(&["route", "replace", "local", range, "dev", "lo"])
}

/// Installs [`vip_route`] (idempotent). Returns the command run.
pub fn add_vip_route(range: &str) -> Result<String, InitError> {
    let args = vip_route(range);
    let cmd = format!("ip {}", args.join(" "));
    let out =
        Command::new("ip").args(&args).output().map_err(|source| InitError::Spawn { cmd: cmd.clone(), source })?;
    if !out.status.success() {
        return Err(InitError::Failed { cmd, stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() });
    }
    Ok(args.join(" "))
}

/// Removes [`vip_route`], if present.
pub fn remove_vip_route(range: &str) {
    let _ = Command::new("ip").args(["route", "del", "local", range, "dev", "lo"]).output();
}

/// Removes the jumps and the chains.
pub fn remove() -> Result<(), InitError> {
    for (chain, hook) in [(INBOUND_CHAIN, "PREROUTING"), (OUTPUT_CHAIN, "OUTPUT")] {
        while ok(&["-t", "nat", "-D", hook, "-p", "tcp", "-j", chain]) {}
        if ok(&["-t", "nat", "-L", chain, "-n"]) {
            run(&strs(&["-t", "nat", "-F", chain]))?;
            run(&strs(&["-t", "nat", "-X", chain]))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_exclude_the_proxy_and_loopback_before_redirecting() {
        let o = InitOptions {
            inbound_port: 15006,
            outbound_port: 15001,
            proxy_mark: 1337,
            proxy_uid: Some(1337),
            exclude_inbound_ports: vec![15000],
        };
        let r: Vec<String> = rules(&o).into_iter().map(|a| a.join(" ")).collect();
        let pos = |needle: &str| r.iter().position(|l| l.contains(needle)).unwrap();
        assert!(pos("--mark 1337") < pos("--to-ports 15001"));
        assert!(pos("--uid-owner 1337") < pos("--to-ports 15001"));
        assert!(pos("127.0.0.0/8") < pos("--to-ports 15001"));
        assert!(pos("--dport 15000") < pos("--to-ports 15006"));
        assert!(pos("--dport 15006") < pos("--to-ports 15006"));
    }
}
