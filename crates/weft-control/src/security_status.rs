//! The security lines of a Service's or Workload's status (`weft describe service|workload`,
//! beside [`crate::authz::status`]): the mTLS mode in force on each workload's port and what set
//! it (a PeerAuthentication and its level, MeshConfig `mtls`, or the mesh default), and the
//! RequestAuthentications that apply.

use crate::catalog::Catalog;
use serde_json::{json, Value};
use weft_api::peer_authentication::{resolve_with_source, Policy};
use weft_api::resource::Resource;

/// `[{workload, port, mode, setBy}]` for the local workloads of `service` in `namespace` (only
/// `workload`, if not empty). `stored` holds the stored PeerAuthentications and the Workloads of
/// `namespace` (instances imported from linked clusters are not shown: their mode is theirs).
pub fn mtls(cat: &Catalog, stored: &[Resource], namespace: &str, service: &str, workload: &str) -> Value {
    let policies: Vec<Policy<'_>> = stored
        .iter()
        .filter_map(|r| match r {
            Resource::PeerAuthentication(p) => Some(Policy {
                namespace: &p.metadata.namespace,
                name: &p.metadata.name,
                created: p.metadata.creation_revision.unwrap_or(u64::MAX),
                spec: &p.spec,
            }),
            _ => None,
        })
        .collect();
    let local = |name: &str| {
        stored.iter().any(|r| {
            matches!(r, Resource::Workload(w) if w.metadata.namespace == namespace && w.metadata.name == name && w.spec.service == service)
        })
    };
    let default = cat.mesh.mtls.map(|m| m.mode).unwrap_or_default();
    let Some(s) = cat.services.get(&(namespace.to_string(), service.to_string())) else { return json!([]) };
    let ports: Vec<Value> = s
        .instances
        .iter()
        .filter(|i| (workload.is_empty() || i.name == workload) && local(&i.name))
        .map(|i| {
            let port = i.address.port();
            let (mode, source) = resolve_with_source(default, &policies, namespace, service, &i.name, port);
            let set_by = match source {
                Some((p, scope)) => format!("PeerAuthentication {}/{} ({} level)", p.namespace, p.name, scope.as_str()),
                None if cat.mesh.mtls.is_some() => "MeshConfig mtls".to_string(),
                None => "mesh default".to_string(),
            };
            json!({ "workload": i.name, "port": port, "mode": mode.as_str(), "setBy": set_by })
        })
        .collect();
    Value::Array(ports)
}

/// `[{name, workload?}]`: the RequestAuthentications that apply to `workload` (if not empty) or
/// to the workloads of `service` (on a Service, a policy of one of its Workloads carries
/// `workload`), oldest first.
pub fn request_authentications(cat: &Catalog, namespace: &str, service: &str, workload: &str) -> Value {
    let instances: Vec<&str> = cat
        .services
        .get(&(namespace.to_string(), service.to_string()))
        .map(|s| s.instances.iter().map(|i| i.name.as_str()).collect())
        .unwrap_or_default();
    let services = [service];
    let list: Vec<Value> = cat
        .request_authn
        .iter()
        .filter_map(|p| {
            let name = format!("{}/{}", p.namespace, p.name);
            let target = (!workload.is_empty()).then_some(workload);
            if crate::request_authn::applies(p, namespace, target, &services) {
                return Some(json!({ "name": name }));
            }
            let w = instances
                .iter()
                .find(|w| workload.is_empty() && crate::request_authn::applies(p, namespace, Some(w), &[]))?;
            Some(json!({ "name": name, "workload": w }))
        })
        .collect();
    Value::Array(list)
}
