//! `GET /v1/diagnose` (`weft diagnose`): Linkerd's `check` and Istio's `analyze` in one. Every
//! finding names its check, says `ok`, `warn` or `fail`, what was found and, unless ok, the fix:
//!
//! - `control-plane`: the API answers (if this runs, it does), store and catalog revisions;
//! - `certificates`: each root, intermediate and external CA certificate: expired (fail) or
//!   under 30 days left (warn), as `weft check`; proxies' leaves expired (fail) or with under a
//!   quarter of their lifetime left (warn: renewal failing);
//! - `links`: every Link, checked live as `weft link check` does (reachable, trusted — the
//!   peer's certificate against the root stored for its trust domain —, secret, stream, synced,
//!   network); the first failing step is the finding;
//! - `proxies`: every connected proxy acknowledged its latest update (SYNCED) and did not reject
//!   it;
//! - `dns`: the control plane's own DNS server answers a query (for a service it knows, that
//!   the answer has an address);
//! - `resources`: resources that refer to things that do not exist (routes to missing Services,
//!   policies whose `targetRef` names no Service, Workload or HTTPRoute, a Telemetry selecting
//!   nothing), and namespace-wide policies in a namespace with no Workload.

use crate::api::{require_read, ApiError, ApiState};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use weft_api::resource::{Kind, Resource};

/// Under this much time left, a CA certificate is a warning (as `weft check`).
pub const CA_EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86400);
/// How long the DNS probe waits for an answer.
pub const DNS_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One finding of `weft diagnose`.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub status: Status,
    pub message: String,
    /// What to do; empty when ok.
    pub fix: String,
}

fn ok(check: &'static str, message: impl Into<String>) -> Finding {
    Finding { check, status: Status::Ok, message: message.into(), fix: String::new() }
}

fn warn(check: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding { check, status: Status::Warn, message: message.into(), fix: fix.into() }
}

fn fail(check: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding { check, status: Status::Fail, message: message.into(), fix: fix.into() }
}

pub async fn handler(State(st): State<Arc<ApiState>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    require_read(&st, &headers)?;
    let findings = run(&st).await;
    Ok(Json(serde_json::json!({ "findings": findings })))
}

/// Every check, in the order `weft diagnose` prints them.
pub async fn run(st: &ApiState) -> Vec<Finding> {
    let resources = st.store.list(None, None).unwrap_or_default();
    let cat = st.catalog.borrow().clone();
    let mut out = vec![ok(
        "control-plane",
        format!(
            "API answering; {} resources stored, catalog revision {}, {} services",
            resources.len(),
            cat.revision,
            cat.services.len()
        ),
    )];
    out.extend(certificates(st, cat.mesh.leaf_lifetime.into()));
    out.extend(links(st, &resources).await);
    out.extend(proxies(st));
    out.push(dns(st.dns_addr, &cat).await);
    out.extend(references(st, &resources));
    out
}

fn seconds_left(der: &[u8], now: SystemTime) -> Option<i64> {
    let t = weft_identity::tls::not_after(&der.to_vec().into()).ok()?;
    Some(match t.duration_since(now) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    })
}

fn days(secs: i64) -> String {
    format!("{:.1} days", secs as f64 / 86400.0)
}

fn certificates(st: &ApiState, leaf_lifetime: Duration) -> Vec<Finding> {
    let now = SystemTime::now();
    let (_serving, signer, roots, _) = st.ca.snapshot();
    let mut certs: Vec<(String, Vec<u8>)> =
        roots.iter().enumerate().map(|(i, r)| (format!("root {i}"), r.clone())).collect();
    certs.push(("intermediate".into(), signer.cert().to_vec()));
    if let crate::signer::Selected::External(ext) = st.ca.selected() {
        certs.extend(ext.roots.iter().map(|r| ("external root".to_string(), r.to_vec())));
        certs.extend(ext.intermediates.iter().map(|r| ("external intermediate".to_string(), r.to_vec())));
    }
    let mut out = vec![];
    let mut earliest: Option<(String, i64)> = None;
    for (what, der) in &certs {
        let Some(left) = seconds_left(der, now) else {
            out.push(fail(
                "certificates",
                format!("the {what} certificate cannot be read"),
                "replace the CA (`weft ca rotate`)",
            ));
            continue;
        };
        if left <= 0 {
            out.push(fail(
                "certificates",
                format!("the {what} certificate expired {} ago; no proxy can get a certificate under it", days(-left)),
                "rotate the CA now: `weft ca rotate` (or renew the external CA's certificate)",
            ));
        } else if left < CA_EXPIRY_WARNING.as_secs() as i64 {
            out.push(warn(
                "certificates",
                format!("the {what} certificate expires in {}", days(left)),
                "rotate the CA before it expires: `weft ca rotate` (leaves are cut at the CA's expiry)",
            ));
        }
        if earliest.as_ref().is_none_or(|(_, l)| left < *l) {
            earliest = Some((what.clone(), left));
        }
    }
    let unix_now = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
    let quarter = leaf_lifetime.as_secs() / 4;
    for p in st.proxies.list() {
        if p.leaf_not_after_unix == 0 {
            continue;
        }
        if p.leaf_not_after_unix <= unix_now {
            out.push(fail(
                "certificates",
                format!("proxy {}'s certificate ({}) has expired: its peers refuse it", p.proxy_id, p.identity),
                "look at the proxy's log for failed renewals (Identity.Sign), and restart it",
            ));
        } else if p.leaf_not_after_unix - unix_now < quarter {
            out.push(warn(
                "certificates",
                format!(
                    "proxy {}'s certificate expires in {}s, under a quarter of its lifetime: its renewal is failing",
                    p.proxy_id,
                    p.leaf_not_after_unix - unix_now
                ),
                "look at the proxy's log for failed renewals (Identity.Sign) and at its bootstrap token",
            ));
        }
    }
    if out.is_empty() {
        let detail =
            earliest.map(|(w, l)| format!("; the earliest to expire is the {w}, in {}", days(l))).unwrap_or_default();
        out.push(ok("certificates", format!("{} CA certificates valid for more than 30 days{detail}", certs.len())));
    }
    out
}

async fn links(st: &ApiState, resources: &[Resource]) -> Vec<Finding> {
    use crate::federation::check::Verdict;
    let local_network = st.catalog.borrow().mesh.cluster.network.clone();
    let probes = resources.iter().filter_map(|r| match r {
        Resource::Link(l) => Some(l),
        _ => None,
    });
    let probes = probes.map(|l| {
        let cluster = l.metadata.name.clone();
        let status = st.federation.status(&cluster);
        let peer = st.federation.peer_network(&cluster);
        let roots = st.federation.peer_roots(&cluster);
        let local_network = local_network.clone();
        async move {
            let checks = crate::federation::check::check(&cluster, &l.spec, &status, &local_network, peer, roots).await;
            match checks.iter().find(|c| c.verdict == Verdict::Fail) {
                Some(c) => fail(
                    "links",
                    format!("link to {cluster}: {} failed: {}", c.name, c.detail),
                    c.fix.clone().unwrap_or_else(|| format!("run `weft link check {cluster}`")),
                ),
                None => ok("links", format!("link to {cluster}: reachable, trusted, synced")),
            }
        }
    });
    let out = futures_util::future::join_all(probes).await;
    if out.is_empty() {
        return vec![ok("links", "no links (one cluster)")];
    }
    out
}

fn proxies(st: &ApiState) -> Vec<Finding> {
    let list = st.proxies.list();
    let mut out = vec![];
    for p in &list {
        if let Some(e) = &p.error {
            out.push(fail(
                "proxies",
                format!("proxy {} ({}) rejected update {}: {e}", p.proxy_id, p.identity, p.sent),
                "fix the resource the error names (`weft describe` it), then the next update applies",
            ));
        } else if p.status != "SYNCED" {
            out.push(fail(
                "proxies",
                format!(
                    "proxy {} ({}) has not acknowledged update {} (last acknowledged: {})",
                    p.proxy_id, p.identity, p.sent, p.acked
                ),
                "look at the proxy's log and its admin /ready; a proxy that stays STALE is overloaded or partitioned",
            ));
        }
    }
    if out.is_empty() {
        out.push(ok("proxies", format!("{} connected, all in sync", list.len())));
    }
    out
}

/// A DNS query for `name` (type A), answered with (rcode, answer count).
async fn query(dns: SocketAddr, name: &str) -> std::io::Result<(u8, u16)> {
    let id: u16 = rand_id();
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len().min(63) as u8);
        q.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let bind: SocketAddr = if dns.is_ipv6() { "[::]:0".parse().unwrap_or(dns) } else { ([0, 0, 0, 0], 0).into() };
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    sock.send_to(&q, dns).await?;
    let mut buf = [0u8; 1500];
    let deadline = tokio::time::Instant::now() + DNS_TIMEOUT;
    loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
        if n >= 12 && buf[..2] == id.to_be_bytes() {
            return Ok((buf[3] & 0x0f, u16::from_be_bytes([buf[6], buf[7]])));
        }
    }
}

fn rand_id() -> u16 {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    (nanos ^ (nanos >> 16)) as u16
}

async fn dns(addr: Option<SocketAddr>, cat: &crate::catalog::Catalog) -> Finding {
    let Some(addr) = addr else {
        return ok("dns", "the control plane serves no DNS (start it with `weft control --dns ADDR` to serve one)");
    };
    // A local service with a healthy instance should resolve; else any answer shows it serves.
    let known = cat
        .services
        .values()
        .find(|s| s.instances.iter().any(|i| i.healthy && i.cluster == cat.mesh.cluster.name))
        .map(|s| format!("{}.{}.svc.cluster.local.", s.name, s.namespace));
    let name = known.clone().unwrap_or_else(|| "weft-diagnose.service.consul.".into());
    match query(addr, &name).await {
        Err(e) => fail(
            "dns",
            format!("the DNS server at {addr} did not answer a query for {name}: {e}"),
            "check that `weft control --dns` listens there and that nothing blocks UDP to it",
        ),
        Ok((rcode, answers)) if known.is_some() && (rcode != 0 || answers == 0) => fail(
            "dns",
            format!("the DNS server at {addr} answered {name} with no address (rcode {rcode})"),
            "check the service's instances with `weft describe service`; DNS answers healthy instances only",
        ),
        Ok(_) => ok("dns", format!("the DNS server at {addr} answers ({name})")),
    }
}

/// `spec.targetRef` (kind, name) of a policy-like resource, from its JSON.
fn target_ref(r: &Resource) -> Option<(String, String)> {
    let spec = r.to_object().spec;
    let t = spec.get("targetRef")?;
    Some((t.get("kind")?.as_str()?.to_string(), t.get("name")?.as_str()?.to_string()))
}

fn references(st: &ApiState, resources: &[Resource]) -> Vec<Finding> {
    let all: Vec<&Resource> = resources.iter().collect();
    let named: BTreeSet<(Kind, &str, &str)> = resources
        .iter()
        .filter(|r| matches!(r.kind(), Kind::Service | Kind::Workload))
        .map(|r| (r.kind(), r.metadata().namespace.as_str(), r.metadata().name.as_str()))
        .collect();
    let exists = |kind: Kind, ns: &str, name: &str| named.contains(&(kind, ns, name));
    let namespaces_with_workloads: BTreeSet<&str> =
        resources.iter().filter(|r| r.kind() == Kind::Workload).map(|r| r.metadata().namespace.as_str()).collect();
    let mut out = vec![];
    for r in resources {
        let key = format!("{} {}/{}", r.kind(), r.metadata().namespace, r.metadata().name);
        // Routes, BackendPolicies and ResiliencePolicies: the conditions their status shows
        // (only these: a Service's or Workload's status reads the store again).
        let conditioned = matches!(
            r.kind(),
            Kind::HTTPRoute | Kind::GRPCRoute | Kind::TCPRoute | Kind::BackendPolicy | Kind::ResiliencePolicy
        );
        let v = if conditioned { crate::api::with_status(st, r, &all) } else { Value::Null };
        for c in v["status"]["conditions"].as_array().into_iter().flatten() {
            let bad = c["status"] == "False" || matches!(c["type"].as_str(), Some("TargetNotFound" | "Conflicted"));
            if bad {
                let message = c["message"].as_str().unwrap_or_default();
                let reason = c["reason"].as_str().or(c["type"].as_str()).unwrap_or("");
                out.push(fail(
                    "resources",
                    format!("{key}: {reason}: {message}"),
                    "apply what it refers to, or fix the reference (`weft describe` shows the resource's status)",
                ));
            }
        }
        // Policies that attach to a Service or Workload by name.
        let attaches = matches!(
            r.kind(),
            Kind::AuthorizationPolicy | Kind::PeerAuthentication | Kind::RequestAuthentication | Kind::Telemetry
        );
        if !attaches {
            continue;
        }
        let ns = r.metadata().namespace.as_str();
        match target_ref(r) {
            Some((kind, name)) => {
                let found = match kind.as_str() {
                    "Service" => exists(Kind::Service, ns, &name),
                    "Workload" => exists(Kind::Workload, ns, &name),
                    _ => true,
                };
                if !found {
                    out.push(fail(
                        "resources",
                        format!("{key}: targetRef names {kind} {ns}/{name}, which does not exist: it selects nothing"),
                        format!("apply {kind} {ns}/{name}, or point targetRef at one that exists"),
                    ));
                }
            }
            None if ns != weft_api::authz::ROOT_NAMESPACE && !namespaces_with_workloads.contains(ns) => {
                out.push(warn(
                    "resources",
                    format!("{key}: applies to namespace {ns}, which has no Workload: it selects nothing yet"),
                    "check the namespace (metadata.namespace), or ignore this until workloads register there",
                ));
            }
            None => {}
        }
    }
    if out.is_empty() {
        out.push(ok("resources", format!("{} resources, every reference resolves", resources.len())));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_order_by_severity_and_serialize_lowercase() {
        assert!(Status::Fail > Status::Warn && Status::Warn > Status::Ok);
        let f = fail("dns", "m", "f");
        assert_eq!(
            serde_json::to_value(&f).unwrap(),
            serde_json::json!({"check": "dns", "status": "fail", "message": "m", "fix": "f"})
        );
    }

    #[tokio::test]
    async fn a_silent_dns_server_is_a_failure() {
        // Bound and never answering.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let f = dns(Some(silent.local_addr().unwrap()), &crate::catalog::Catalog::default()).await;
        assert_eq!(f.status, Status::Fail, "{f:?}");
        assert!(f.message.contains("did not answer"), "{f:?}");
    }
}
