//! RequestAuthentication (docs/security.md, "Request authentication"): which policies apply to
//! which proxy. A policy applies, in its own namespace, to every workload (no `targetRef`), to
//! the workloads of one Service (`targetRef: {kind: Service}`) or to one Workload
//! (`targetRef: {kind: Workload}`); a policy without `targetRef` in `weft-system` applies to
//! every workload of the mesh. Every policy that applies is sent, oldest first; the proxy uses
//! each issuer's rule from the oldest policy that has one.

use crate::catalog::Catalog;
use weft_api::pb;
use weft_api::request_authn::{RequestAuthenticationSpec, ROOT_NAMESPACE};
use weft_api::resource::Resource;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub namespace: String,
    pub name: String,
    /// The store revision that created it: the oldest wins an issuer.
    pub revision: u64,
    pub spec: RequestAuthenticationSpec,
}

/// Every RequestAuthentication of `resources`, oldest first (then by namespace and name).
pub fn collect<'a>(resources: impl IntoIterator<Item = &'a Resource>) -> Vec<Policy> {
    let mut v: Vec<Policy> = resources
        .into_iter()
        .filter_map(|r| match r {
            Resource::RequestAuthentication(p) => Some(Policy {
                namespace: p.metadata.namespace.clone(),
                name: p.metadata.name.clone(),
                revision: p.metadata.creation_revision.unwrap_or(u64::MAX),
                spec: p.spec.clone(),
            }),
            _ => None,
        })
        .collect();
    v.sort_by(|a, b| (a.revision, &a.namespace, &a.name).cmp(&(b.revision, &b.namespace, &b.name)));
    v
}

/// Whether `p` applies to a workload named `workload` of `services`, in `namespace`.
pub fn applies(p: &Policy, namespace: &str, workload: Option<&str>, services: &[&str]) -> bool {
    match &p.spec.target_ref {
        None => p.namespace == ROOT_NAMESPACE || p.namespace == namespace,
        Some(_) if p.namespace != namespace => false,
        Some(t) if t.kind == "Service" => services.contains(&t.name.as_str()),
        Some(t) => workload == Some(t.name.as_str()),
    }
}

/// The policies for the proxy of `identity` fronting `workload` (or every Workload that runs as
/// `identity`), as sent on the discovery stream.
pub fn for_proxy(cat: &Catalog, identity: &str, namespace: &str, workload: &str) -> Vec<pb::RequestAuthentication> {
    if cat.request_authn.is_empty() {
        return vec![];
    }
    let mut workloads: Vec<&str> = vec![];
    let mut services: Vec<&str> = vec![];
    for s in cat.services.values().filter(|s| s.namespace == namespace) {
        for i in s.instances.iter().filter(|i| i.identity == identity && (workload.is_empty() || i.name == workload)) {
            workloads.push(&i.name);
            services.push(&s.name);
        }
    }
    if !workload.is_empty() && !workloads.contains(&workload) {
        workloads.push(workload);
    }
    cat.request_authn
        .iter()
        .filter(|p| {
            if workloads.is_empty() {
                applies(p, namespace, None, &services)
            } else {
                workloads.iter().any(|w| applies(p, namespace, Some(w), &services))
            }
        })
        .filter_map(|p| {
            Some(pb::RequestAuthentication {
                name: format!("{}/{}", p.namespace, p.name),
                spec_json: serde_json::to_string(&p.spec).ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies(yaml: &str) -> Vec<Policy> {
        let rs = weft_api::resource::parse_documents(yaml).unwrap();
        collect(&rs)
    }

    #[test]
    fn mesh_namespace_service_and_workload_scopes() {
        let ps = policies(
            "apiVersion: weft.io/v1alpha1\nkind: RequestAuthentication\nmetadata: { name: mesh, namespace: weft-system }\nspec: { jwtRules: [{ issuer: \"https://a\" }] }\n---\n\
             apiVersion: weft.io/v1alpha1\nkind: RequestAuthentication\nmetadata: { name: ns }\nspec: { jwtRules: [{ issuer: \"https://b\" }] }\n---\n\
             apiVersion: weft.io/v1alpha1\nkind: RequestAuthentication\nmetadata: { name: svc }\nspec: { targetRef: { kind: Service, name: api }, jwtRules: [{ issuer: \"https://c\" }] }\n---\n\
             apiVersion: weft.io/v1alpha1\nkind: RequestAuthentication\nmetadata: { name: wl }\nspec: { targetRef: { kind: Workload, name: api-1 }, jwtRules: [{ issuer: \"https://d\" }] }\n---\n\
             apiVersion: weft.io/v1alpha1\nkind: RequestAuthentication\nmetadata: { name: other, namespace: shop }\nspec: { jwtRules: [{ issuer: \"https://e\" }] }\n",
        );
        let names = |ns: &str, w: Option<&str>, s: &[&str]| -> Vec<String> {
            let mut v: Vec<String> = ps.iter().filter(|p| applies(p, ns, w, s)).map(|p| p.name.clone()).collect();
            v.sort();
            v
        };
        assert_eq!(names("default", Some("api-1"), &["api"]), ["mesh", "ns", "svc", "wl"]);
        assert_eq!(names("default", Some("api-2"), &["api"]), ["mesh", "ns", "svc"]);
        assert_eq!(names("default", Some("web-1"), &["web"]), ["mesh", "ns"]);
        assert_eq!(names("shop", Some("api-1"), &["api"]), ["mesh", "other"]);
    }

    #[test]
    fn a_proxy_is_sent_the_policies_of_its_workload_and_no_others() {
        let rs = weft_api::resource::parse_documents(
            "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: api }\nspec: {}\n---\n\
             apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: web }\nspec: {}\n---\n\
             apiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: { name: api-1 }\nspec: { service: api, address: 10.0.0.1, port: 8080 }\n---\n\
             apiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: { name: web-1 }\nspec: { service: web, address: 10.0.0.2, port: 8080 }\n---\n\
             apiVersion: weft.io/v1alpha1\nkind: RequestAuthentication\nmetadata: { name: api-jwt }\nspec: { targetRef: { kind: Service, name: api }, requireToken: true, jwtRules: [{ issuer: \"https://idp\" }] }\n",
        )
        .unwrap();
        let cat = crate::catalog::build(1, rs.iter(), &|_| true);
        let id = |svc: &str| cat.services[&("default".to_string(), svc.to_string())].instances[0].identity.clone();
        let api = for_proxy(&cat, &id("api"), "default", "api-1");
        assert_eq!(api.len(), 1);
        assert_eq!(api[0].name, "default/api-jwt");
        let spec: RequestAuthenticationSpec = serde_json::from_str(&api[0].spec_json).unwrap();
        assert!(spec.require_token);
        assert!(for_proxy(&cat, &id("web"), "default", "web-1").is_empty());
        assert!(crate::discovery::inbound_for(&cat, &id("web"), "default", "").request_authentication.is_empty());
        assert_eq!(crate::discovery::inbound_for(&cat, &id("api"), "default", "").request_authentication, api);
    }
}
