//! `weft up -f mesh.yaml`: a local mesh from a small file of services whose workloads are
//! commands. For each workload weft picks a free port for the app (`{port}` in its command), starts
//! a sidecar beside it (following the in-process control plane), gives it upstream listeners for
//! the services it calls (`{upstream.<service>}` in its command is that listener's address),
//! registers it with its health check, and runs the command.
//!
//! ```yaml
//! mesh: { trustDomain: example.org, cluster: { name: east, region: eu, zone: eu-1 } }   # optional
//! services:
//!   - name: api
//!     workloads:
//!       - name: api-v1
//!         command: [weft, demo-app, --name, api-v1, --listen, "127.0.0.1:{port}"]
//!         labels: { version: v1 }
//!         check: { http: /health, interval: 2s }
//!   - name: web
//!     workloads:
//!       - name: web
//!         command: [weft, demo-app, --name, web, --listen, "127.0.0.1:8080", --upstream, "{upstream.api}"]
//!         port: 8080
//!         upstreams: [api]
//! ```
//! `weft` as the command's program means this very binary.
//!
//! Several linked clusters: list them under `clusters` and place each workload with `cluster`
//! (default: the first cluster). Each cluster gets its own control plane, root CA, trust domain
//! (default `<name>.local`) and east-west gateway; every pair is linked both ways and every
//! service is exported, so a workload's `{upstream.<service>}` reaches that service's workloads in
//! every cluster (see `up_multi.rs`). `mesh` describes one cluster and cannot be given with it.
//!
//! ```yaml
//! clusters:
//!   - { name: east, region: eu }
//!   - { name: west, trustDomain: west.example.org, region: us }
//! services:
//!   - name: api
//!     workloads:
//!       - { name: api-east, cluster: east, command: [weft, demo-app, --name, api-east, --listen, "127.0.0.1:{port}"] }
//!       - { name: api-west, cluster: west, command: [weft, demo-app, --name, api-west, --listen, "127.0.0.1:{port}"] }
//! ```
//!
//! With `--netns` (root) each workload runs in its own network namespace instead (see
//! `up_netns.rs`): `{port}` defaults to 8080, `{upstream.<service>}` becomes the service's mesh DNS
//! name and port (`api.default.svc.cluster.local:8080`), and `expose: true` leaves a workload's
//! port reachable from the host.

use anyhow::{bail, Context};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::process::Stdio;
use weft_api::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpFile {
    /// The mesh and its cluster, as a MeshConfig's spec: `trustDomain`, `cluster: { name,
    /// network, region, zone }`, `leafLifetime`. Default: `cluster.local`, cluster `local`.
    #[serde(default)]
    pub mesh: Option<weft_api::kinds::MeshConfigSpec>,
    /// Several linked clusters (default: one, described by `mesh`).
    #[serde(default)]
    pub clusters: Vec<FileCluster>,
    pub services: Vec<FileService>,
}

/// The most clusters `weft up` lays out (`--clusters` or a file's `clusters`): each is a control
/// plane, a gateway and every pair a link both ways, all in one process on this machine.
pub const MAX_CLUSTERS: usize = 8;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileCluster {
    pub name: String,
    /// Default `<name>.local`. Linked clusters need distinct trust domains.
    #[serde(default)]
    pub trust_domain: Option<String>,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub zone: String,
}

impl FileCluster {
    pub fn trust_domain(&self) -> String {
        self.trust_domain.clone().unwrap_or_else(|| format!("{}.local", self.name))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileService {
    pub name: String,
    #[serde(default)]
    pub workloads: Vec<FileWorkload>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileWorkload {
    pub name: String,
    /// With `clusters`: the cluster this workload runs in (default: the first).
    #[serde(default)]
    pub cluster: Option<String>,
    /// Program and arguments; `{port}` and `{upstream.<service>}` are filled in.
    pub command: Vec<String>,
    /// The app's port, when the command fixes it (default: a free port, given as `{port}`).
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Services this workload calls: each gets an upstream listener on its sidecar.
    #[serde(default)]
    pub upstreams: Vec<String>,
    #[serde(default)]
    pub check: Option<FileCheck>,
    /// With `--netns`: leave the app's port reachable from the host without mTLS (a front door,
    /// where Kubernetes would put an ingress). The app must listen on `0.0.0.0:{port}` for it.
    #[serde(default)]
    pub expose: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCheck {
    /// Path on the app for an HTTP check, e.g. `/health`.
    #[serde(default)]
    pub http: Option<String>,
    /// A TCP check on the app's port.
    #[serde(default)]
    pub tcp: bool,
    #[serde(default)]
    pub interval: Option<Duration>,
}

impl UpFile {
    pub fn read(path: &std::path::Path) -> anyhow::Result<UpFile> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let f: UpFile = serde_saphyr::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        f.validate().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(f)
    }

    fn validate(&self) -> Result<(), String> {
        let names: Vec<&str> = self.services.iter().map(|s| s.name.as_str()).collect();
        if self.services.is_empty() {
            return Err("services: list at least one service".into());
        }
        if let Some(m) = &self.mesh {
            weft_api::resource::Validate::validate(m).map_err(|e| format!("mesh.{e}"))?;
        }
        self.validate_clusters()?;
        let clusters: Vec<&str> = self.clusters.iter().map(|c| c.name.as_str()).collect();
        for (i, s) in self.services.iter().enumerate() {
            if !weft_api::valid_name(&s.name) {
                return Err(format!("services[{i}].name: {:?} must be a DNS label", s.name));
            }
            for (j, w) in s.workloads.iter().enumerate() {
                let f = format!("services[{i}].workloads[{j}]");
                if !weft_api::valid_name(&w.name) {
                    return Err(format!("{f}.name: {:?} must be a DNS label", w.name));
                }
                if w.command.is_empty() {
                    return Err(format!("{f}.command: give the program and its arguments"));
                }
                match &w.cluster {
                    Some(c) if clusters.is_empty() => {
                        return Err(format!(
                            "{f}.cluster: {c:?} names a cluster, but this file has no `clusters:` list; list the clusters (e.g. `clusters: [{{ name: {c} }}]`) or remove `cluster`"
                        ))
                    }
                    Some(c) if !clusters.contains(&c.as_str()) => {
                        return Err(format!(
                            "{f}.cluster: no cluster {c:?} in this file's `clusters` (known: {})",
                            clusters.join(", ")
                        ))
                    }
                    _ => {}
                }
                for u in &w.upstreams {
                    if !names.contains(&u.as_str()) {
                        return Err(format!(
                            "{f}.upstreams: no service {u:?} in this file (known: {})",
                            names.join(", ")
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn validate_clusters(&self) -> Result<(), String> {
        if self.clusters.is_empty() {
            return Ok(());
        }
        if self.mesh.is_some() {
            return Err("mesh: describes one cluster; with `clusters`, give each cluster's trustDomain, region and zone in its entry (and the certificate lifetime with --cert-lifetime)".into());
        }
        if self.clusters.len() > MAX_CLUSTERS {
            return Err(format!(
                "clusters: {} clusters; weft up runs at most {MAX_CLUSTERS} on one machine",
                self.clusters.len()
            ));
        }
        for (i, c) in self.clusters.iter().enumerate() {
            if !weft_api::valid_name(&c.name) {
                return Err(format!("clusters[{i}].name: {:?} must be a DNS label (a-z, 0-9, '-')", c.name));
            }
            let mut mesh = weft_api::kinds::MeshConfigSpec { trust_domain: c.trust_domain(), ..Default::default() };
            mesh.cluster.name = c.name.clone();
            weft_api::resource::Validate::validate(&mesh).map_err(|e| format!("clusters[{i}].{e}"))?;
            for (j, d) in self.clusters[..i].iter().enumerate() {
                if d.name == c.name {
                    return Err(format!(
                        "clusters[{i}].name: {:?} is also clusters[{j}]; give each cluster its own name",
                        c.name
                    ));
                }
                if d.trust_domain() == c.trust_domain() {
                    return Err(format!(
                        "clusters[{i}].trustDomain: {:?} is also the trust domain of {:?}; linked clusters need distinct trust domains",
                        c.trust_domain(),
                        d.name
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Fills `{port}` and `{upstream.<svc>}` in a command.
pub fn expand(arg: &str, port: u16, upstreams: &BTreeMap<String, String>) -> anyhow::Result<String> {
    let mut out = arg.replace("{port}", &port.to_string());
    while let Some(i) = out.find("{upstream.") {
        let end = out[i..].find('}').map(|e| i + e).context("unclosed {upstream.<service>}")?;
        let svc = &out[i + "{upstream.".len()..end];
        let Some(addr) = upstreams.get(svc) else {
            bail!("{arg}: {{upstream.{svc}}} needs `upstreams: [{svc}]` on this workload");
        };
        out = format!("{}{addr}{}", &out[..i], &out[end + 1..]);
    }
    Ok(out)
}

/// Starts a workload's command.
pub fn spawn(argv: &[String]) -> anyhow::Result<tokio::process::Child> {
    let program = if argv[0] == "weft" { std::env::current_exe()?.display().to_string() } else { argv[0].clone() };
    tokio::process::Command::new(&program)
        .args(&argv[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {program}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_placeholders() {
        let ups = BTreeMap::from([("api".to_string(), "127.0.0.1:9000".to_string())]);
        assert_eq!(expand("127.0.0.1:{port}", 8080, &ups).unwrap(), "127.0.0.1:8080");
        assert_eq!(expand("http://{upstream.api}/x", 1, &ups).unwrap(), "http://127.0.0.1:9000/x");
        assert!(expand("{upstream.db}", 1, &ups).unwrap_err().to_string().contains("upstreams: [db]"));
        assert!(expand("{upstream.api", 1, &ups).is_err());
    }
}
