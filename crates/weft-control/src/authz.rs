//! AuthorizationPolicies (docs/security.md, "Authorization"): which apply to the workload a proxy
//! fronts, rendered into its `Inbound.authorization` with the default policy in force there.
//!
//! A policy applies to a workload when it is in the root namespace (`weft-system`) without a
//! `targetRef` (mesh-wide), in the workload's namespace without a `targetRef`, or in its
//! namespace naming its Service or the Workload itself. A proxy gets only the policies that apply
//! to it; it compiles them when they arrive.

use crate::catalog::Catalog;
use std::collections::BTreeMap;
use weft_api::authz::{Authorization, AuthorizationPolicySpec, NamedPolicy, TargetKind, ROOT_NAMESPACE};
use weft_api::pb;
use weft_api::resource::{Resource, Typed};

/// What the catalog keeps of the authorization resources.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuthzCatalog {
    /// Every AuthorizationPolicy, by namespace and name.
    pub policies: Vec<Typed<AuthorizationPolicySpec>>,
    /// Trust domain → cluster: this mesh's and each linked cluster's (Link `trustDomain`).
    pub clusters: BTreeMap<String, String>,
}

impl AuthzCatalog {
    pub fn build(resources: &[&Resource], mesh: &weft_api::kinds::MeshConfigSpec) -> AuthzCatalog {
        let mut policies: Vec<_> = resources
            .iter()
            .filter_map(|r| match r {
                Resource::AuthorizationPolicy(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        policies
            .sort_by(|a, b| (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name)));
        let mut clusters: BTreeMap<String, String> = resources
            .iter()
            .filter_map(|r| match r {
                Resource::Link(l) => Some((l.spec.trust_domain.clone(), l.metadata.name.clone())),
                _ => None,
            })
            .collect();
        clusters.insert(mesh.trust_domain.clone(), mesh.cluster.name.clone());
        AuthzCatalog { policies, clusters }
    }
}

/// Whether `p` applies to the workload `workload` (an instance of `service`) in `namespace`.
pub fn applies(p: &Typed<AuthorizationPolicySpec>, namespace: &str, service: &str, workload: &str) -> bool {
    let ns = p.metadata.namespace.as_str();
    match &p.spec.target_ref {
        None => ns == ROOT_NAMESPACE || ns == namespace,
        Some(t) if ns == namespace => match t.kind {
            TargetKind::Service => t.name == service,
            TargetKind::Workload => t.name == workload,
        },
        Some(_) => false,
    }
}

/// The policies for the proxy of `identity` fronting `workload` (or every Workload that runs as
/// it), mesh-wide ones first, each once.
pub fn policies_for<'a>(
    cat: &'a Catalog,
    identity: &str,
    namespace: &str,
    workload: &str,
) -> Vec<&'a Typed<AuthorizationPolicySpec>> {
    let mine: Vec<(&str, &str)> = cat
        .services
        .values()
        .filter(|s| s.namespace == namespace)
        .flat_map(|s| s.instances.iter().map(move |i| (s, i)))
        .filter(|(_, i)| i.identity == identity && (workload.is_empty() || i.name == workload))
        .map(|(s, i)| (s.name.as_str(), i.name.as_str()))
        .collect();
    let mut out: Vec<_> = cat
        .authz
        .policies
        .iter()
        .filter(|p| {
            if p.spec.target_ref.is_none() {
                applies(p, namespace, "", "")
            } else {
                mine.iter().any(|(svc, wl)| applies(p, namespace, svc, wl))
            }
        })
        .collect();
    out.sort_by_key(|p| p.metadata.namespace != ROOT_NAMESPACE);
    out
}

/// `Inbound.authorization` for one proxy.
pub fn render(cat: &Catalog, identity: &str, namespace: &str, workload: &str) -> Option<pb::Authorization> {
    let policies = policies_for(cat, identity, namespace, workload);
    let default = cat.mesh.authorization.for_namespace(namespace);
    let a = Authorization {
        default,
        policies: policies
            .iter()
            .map(|p| NamedPolicy {
                name: format!("{}/{}", p.metadata.namespace, p.metadata.name),
                spec: p.spec.clone(),
            })
            .collect(),
        clusters: cat.authz.clusters.clone(),
        trust_domain: cat.mesh.trust_domain.clone(),
    };
    Some(pb::Authorization { json: serde_json::to_string(&a).ok()? })
}

/// What `weft describe service|workload` shows: the default in force for `namespace` and the
/// policies that apply to the instances of `service` (with `workload`, to that Workload), each
/// with its action. `workload` empty: policies naming one Workload of the Service are listed
/// with `workload` set.
pub fn status(cat: &Catalog, namespace: &str, service: &str, workload: &str) -> serde_json::Value {
    let instances: Vec<&str> = cat
        .services
        .get(&(namespace.to_string(), service.to_string()))
        .map(|s| s.instances.iter().map(|i| i.name.as_str()).collect())
        .unwrap_or_default();
    let policies: Vec<serde_json::Value> = cat
        .authz
        .policies
        .iter()
        .filter_map(|p| {
            let name = format!("{}/{}", p.metadata.namespace, p.metadata.name);
            let action = serde_json::to_value(p.spec.action).unwrap_or_default();
            if applies(p, namespace, service, workload) {
                return Some(serde_json::json!({ "name": name, "action": action }));
            }
            // On a Service: the policies of one of its Workloads.
            let t = p.spec.target_ref.as_ref()?;
            (workload.is_empty()
                && p.metadata.namespace == namespace
                && t.kind == TargetKind::Workload
                && instances.contains(&t.name.as_str()))
            .then(|| serde_json::json!({ "name": name, "action": action, "workload": t.name }))
        })
        .collect();
    serde_json::json!({
        "default": cat.mesh.authorization.for_namespace(namespace),
        "policies": policies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_api::resource::parse_documents;

    #[test]
    fn a_proxy_gets_the_mesh_namespace_service_and_workload_policies_that_apply_to_it() {
        let yaml = r#"
apiVersion: weft.io/v1alpha1
kind: Service
metadata: {name: api, namespace: shop}
spec: {ports: [{port: 8080}]}
---
apiVersion: weft.io/v1alpha1
kind: Workload
metadata: {name: api-1, namespace: shop}
spec: {service: api, address: 10.0.0.1, port: 8080}
---
apiVersion: weft.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: mesh, namespace: weft-system}
spec: {action: DENY, rules: [{from: [{source: {namespaces: [evil]}}]}]}
---
apiVersion: weft.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: ns, namespace: shop}
spec: {rules: [{}]}
---
apiVersion: weft.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: svc, namespace: shop}
spec: {targetRef: {kind: Service, name: api}, rules: [{}]}
---
apiVersion: weft.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: wl, namespace: shop}
spec: {targetRef: {kind: Workload, name: api-1}, rules: [{}]}
---
apiVersion: weft.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: other-svc, namespace: shop}
spec: {targetRef: {kind: Service, name: web}, rules: [{}]}
---
apiVersion: weft.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: other-ns, namespace: web}
spec: {rules: [{}]}
"#;
        let rs = parse_documents(yaml).unwrap();
        let cat = crate::catalog::build(1, rs.iter(), &|_| true);
        let id = &cat.services[&("shop".to_string(), "api".to_string())].instances[0].identity;
        let names: Vec<String> = policies_for(&cat, id, "shop", "api-1")
            .iter()
            .map(|p| format!("{}/{}", p.metadata.namespace, p.metadata.name))
            .collect();
        assert_eq!(names, ["weft-system/mesh", "shop/ns", "shop/svc", "shop/wl"]);
        // Another workload of the identity: not the Workload-targeted one.
        let names: Vec<_> = policies_for(&cat, id, "shop", "api-2").iter().map(|p| p.metadata.name.clone()).collect();
        assert_eq!(names, ["mesh", "ns"]);
        let json = render(&cat, id, "shop", "api-1").unwrap().json;
        let a: Authorization = serde_json::from_str(&json).unwrap();
        assert_eq!(a.clusters.get(&cat.mesh.trust_domain), Some(&cat.mesh.cluster.name));
        assert_eq!(a.policies.len(), 4);
        // What `weft describe` shows.
        let st = status(&cat, "shop", "api", "");
        assert_eq!(st["default"], "all-unauthenticated");
        let names: Vec<String> = st["policies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                format!(
                    "{} {}{}",
                    p["name"].as_str().unwrap(),
                    p["action"].as_str().unwrap(),
                    p["workload"].as_str().map(|w| format!(" @{w}")).unwrap_or_default()
                )
            })
            .collect();
        assert_eq!(names, ["shop/ns ALLOW", "shop/svc ALLOW", "shop/wl ALLOW @api-1", "weft-system/mesh DENY"]);
    }
}
