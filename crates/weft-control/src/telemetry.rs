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

#[cfg(test)]
mod tests {
    use super::*;
    use weft_api::resource::parse_documents;

    fn catalog(yaml: &str) -> Catalog {
        let resources = parse_documents(yaml).expect("resources");
        crate::catalog::build(1, resources.iter(), &|_: &str| true)
    }

    const BASE: &str = "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: api }\nspec: { ports: [{ port: 8080 }] }\n---\n\
        apiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: { name: api-1 }\nspec: { service: api, address: 10.0.0.1, port: 8080 }\n---\n\
        apiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: { name: api-2 }\nspec: { service: api, address: 10.0.0.2, port: 8080 }\n";

    fn t(name: &str, ns: &str, target: &str, path: &str) -> String {
        format!("---\napiVersion: weft.io/v1alpha1\nkind: Telemetry\nmetadata: {{ name: {name}, namespace: {ns} }}\nspec: {{ {target} accessLogging: {{ enabled: true, path: {path} }} }}\n")
    }

    #[test]
    fn the_most_specific_telemetry_decides_each_workload() {
        let id = "spiffe://cluster.local/ns/default/sa/api";
        let cat = catalog(&format!(
            "{BASE}{}{}{}",
            t("mesh", "weft-system", "", "/m"),
            t("ns", "default", "", "/n"),
            t("one", "default", "targetRef: { kind: Workload, name: api-2 },", "/w")
        ));
        let path = |wl: &str| {
            let t = for_proxy(&cat, id, "default", wl).expect("a telemetry applies");
            serde_json::from_str::<serde_json::Value>(&t.access_log_json).unwrap()["path"].as_str().unwrap().to_string()
        };
        assert_eq!(path("api-1"), "/n", "the namespace's beats the mesh's");
        assert_eq!(path("api-2"), "/w", "the Workload's beats the namespace's");
        assert_eq!(
            for_proxy(&cat, "spiffe://cluster.local/ns/other/sa/x", "other", "").unwrap().name,
            "weft-system/mesh"
        );
        assert!(for_proxy(&catalog(BASE), id, "default", "api-1").is_none(), "none: off");
    }
}
