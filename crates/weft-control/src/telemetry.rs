//! Telemetry resources (docs/observability.md, "Access logs"): which one applies to the workload
//! a proxy fronts, rendered into its `Inbound.telemetry`. The most specific wins (Workload >
//! Service > namespace > `weft-system`), the first by namespace and name among equals; see
//! [`weft_api::telemetry`].

use crate::catalog::Catalog;
use weft_api::pb;
use weft_api::resource::{Resource, Typed};
use weft_api::telemetry::{scope_for, Scope, TelemetrySpec};

/// Every Telemetry, by namespace and name.
pub fn collect<'a>(resources: impl IntoIterator<Item = &'a Resource>) -> Vec<Typed<TelemetrySpec>> {
    let mut all: Vec<_> = resources
        .into_iter()
        .filter_map(|r| match r {
            Resource::Telemetry(t) => Some(t.clone()),
            _ => None,
        })
        .collect();
    all.sort_by(|a, b| (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name)));
    all
}

/// The (Service, Workload) names the proxy of `identity` fronts in `namespace` (`workload` set:
/// only that Workload).
fn fronted<'a>(cat: &'a Catalog, identity: &str, namespace: &str, workload: &str) -> Vec<(&'a str, &'a str)> {
    cat.services
        .values()
        .filter(|s| s.namespace == namespace)
        .flat_map(|s| s.instances.iter().map(move |i| (s, i)))
        .filter(|(_, i)| i.identity == identity && (workload.is_empty() || i.name == workload))
        .map(|(s, i)| (s.name.as_str(), i.name.as_str()))
        .collect()
}

/// The Telemetry that decides the access log of the proxy of `identity` fronting `workload`
/// in `namespace`, if any.
pub fn effective<'a>(
    cat: &'a Catalog,
    identity: &str,
    namespace: &str,
    workload: &str,
) -> Option<&'a Typed<TelemetrySpec>> {
    if cat.telemetry.is_empty() {
        return None;
    }
    let mine = fronted(cat, identity, namespace, workload);
    let mut best: Option<(Scope, &Typed<TelemetrySpec>)> = None;
    for t in cat.telemetry.iter().filter(|t| t.spec.access_logging.is_some()) {
        let ns = &t.metadata.namespace;
        let scope = if t.spec.target_ref.is_none() {
            scope_for(&t.spec, ns, namespace, "", "")
        } else {
            mine.iter().filter_map(|(svc, wl)| scope_for(&t.spec, ns, namespace, svc, wl)).max()
        };
        if let Some(s) = scope {
            if best.is_none_or(|(b, _)| s > b) {
                best = Some((s, t));
            }
        }
    }
    best.map(|(_, t)| t)
}

/// `Inbound.telemetry` for one proxy.
pub fn for_proxy(cat: &Catalog, identity: &str, namespace: &str, workload: &str) -> Option<pb::Telemetry> {
    let t = effective(cat, identity, namespace, workload)?;
    let a = t.spec.access_logging.as_ref()?;
    Some(pb::Telemetry {
        name: format!("{}/{}", t.metadata.namespace, t.metadata.name),
        access_log_json: serde_json::to_string(a).ok()?,
    })
}

/// Telemetries that select nothing: a `targetRef` naming a Service or Workload that does not
/// exist in its namespace, as `(namespace/name, what is missing)`. For `weft diagnose`.
pub fn selecting_nothing(cat: &Catalog) -> Vec<(String, String)> {
    use weft_api::authz::TargetKind;
    cat.telemetry
        .iter()
        .filter_map(|t| {
            let r = t.spec.target_ref.as_ref()?;
            let ns = &t.metadata.namespace;
            let found = match r.kind {
                TargetKind::Service => cat.services.contains_key(&(ns.clone(), r.name.clone())),
                TargetKind::Workload => cat
                    .services
                    .values()
                    .filter(|s| &s.namespace == ns)
                    .any(|s| s.instances.iter().any(|i| i.name == r.name)),
            };
            let kind = match r.kind {
                TargetKind::Service => "Service",
                TargetKind::Workload => "Workload",
            };
            (!found).then(|| (format!("{ns}/{}", t.metadata.name), format!("{kind} {ns}/{}", r.name)))
        })
        .collect()
}
