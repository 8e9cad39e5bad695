//! ResiliencePolicies (docs/traffic.md, "Resilience"): which Service each attaches to, and the
//! status condition the API shows for it.
//!
//! A policy attaches to a Service of its own namespace (`spec.targetRef`). A policy naming a
//! missing target is accepted and stored, as the Gateway API does, with `Accepted: False,
//! TargetNotFound`; it applies as soon as the target exists. When several policies target one
//! Service, the first by name wins (the Gateway API's tie-break; weft keeps no creation time)
//! and the others say `Conflicted`. A policy for an HTTPRoute rule is stored and shown but
//! applies only once routes are served (the route kinds are another part of the issue).

use crate::catalog::CatalogService;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use weft_api::resilience::{ResiliencePolicySpec, TargetKind};
use weft_api::resource::{Resource, Typed};

/// The policies of `resources`, sorted by namespace and name (the precedence order).
fn policies<'a>(resources: &[&'a Resource]) -> Vec<&'a Typed<ResiliencePolicySpec>> {
    let mut v: Vec<_> = resources
        .iter()
        .filter_map(|r| match r {
            Resource::ResiliencePolicy(p) => Some(p),
            _ => None,
        })
        .collect();
    v.sort_by(|a, b| (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name)));
    v
}

/// Sets each Service's `resilience` from the policy that wins for it.
pub fn attach(resources: &[&Resource], services: &mut BTreeMap<(String, String), CatalogService>) {
    for p in policies(resources) {
        if p.spec.target_ref.kind != TargetKind::Service {
            continue;
        }
        let key = (p.metadata.namespace.clone(), p.spec.target_ref.name.clone());
        if let Some(s) = services.get_mut(&key) {
            if s.resilience.is_none() {
                s.resilience = Some(p.spec.resilience(format!("{}/{}", p.metadata.namespace, p.metadata.name)));
            }
        }
    }
}

/// The `status` of `policy` among `all` resources: Gateway API style conditions.
pub fn status(policy: &Typed<ResiliencePolicySpec>, all: &[&Resource]) -> Value {
    let ns = &policy.metadata.namespace;
    let t = &policy.spec.target_ref;
    let condition = |ok: bool, reason: &str, message: String| json!({ "conditions": [{ "type": "Accepted", "status": if ok { "True" } else { "False" }, "reason": reason, "message": message }] });
    match t.kind {
        TargetKind::HttpRoute => condition(
            false,
            "TargetNotFound",
            format!("no HTTPRoute {ns}/{} is served: the policy is stored and applies once it is", t.name),
        ),
        TargetKind::Service => {
            let exists = all
                .iter()
                .any(|r| matches!(r, Resource::Service(s) if s.metadata.namespace == *ns && s.metadata.name == t.name));
            if !exists {
                return condition(
                    false,
                    "TargetNotFound",
                    format!("no Service {ns}/{}: the policy is stored and applies once the Service exists", t.name),
                );
            }
            let winner = policies(all).into_iter().find(|p| {
                p.metadata.namespace == *ns
                    && p.spec.target_ref.kind == TargetKind::Service
                    && p.spec.target_ref.name == t.name
            });
            match winner {
                Some(w) if w.metadata.name != policy.metadata.name => condition(
                    false,
                    "Conflicted",
                    format!(
                        "ResiliencePolicy {ns}/{} already attaches to Service {ns}/{} (the first by name wins); merge the two",
                        w.metadata.name, t.name
                    ),
                ),
                _ => condition(true, "Accepted", format!("applies to Service {ns}/{}", t.name)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_api::resource::parse_documents;

    #[test]
    fn first_policy_by_name_wins_and_missing_targets_are_said() {
        let rs = parse_documents(
            "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: api }\n---\n\
             apiVersion: weft.io/v1alpha1\nkind: ResiliencePolicy\nmetadata: { name: b }\nspec: { targetRef: { kind: Service, name: api }, retry: { attempts: 1 } }\n---\n\
             apiVersion: weft.io/v1alpha1\nkind: ResiliencePolicy\nmetadata: { name: a }\nspec: { targetRef: { kind: Service, name: api }, retry: { attempts: 2 } }\n---\n\
             apiVersion: weft.io/v1alpha1\nkind: ResiliencePolicy\nmetadata: { name: c }\nspec: { targetRef: { kind: Service, name: ghost }, retry: { attempts: 2 } }\n",
        )
        .unwrap();
        let all: Vec<&Resource> = rs.iter().collect();
        let cat = crate::catalog::build(1, all.iter().copied(), &|_| true);
        let api = &cat.services[&("default".to_string(), "api".to_string())];
        assert_eq!(api.resilience.as_ref().unwrap().policy, "default/a");
        let st = |i: usize| {
            let Resource::ResiliencePolicy(p) = &rs[i] else { panic!() };
            status(p, &all)["conditions"][0]["reason"].as_str().unwrap().to_string()
        };
        assert_eq!((st(1), st(2), st(3)), ("Conflicted".into(), "Accepted".into(), "TargetNotFound".into()));
    }
}
