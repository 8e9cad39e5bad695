//! ResiliencePolicies (docs/traffic.md, "Resilience"): which Service each attaches to, and the
//! status condition the API shows for it.
//!
//! A policy attaches to a Service of its own namespace (`spec.targetRef`). A policy naming a
//! missing target is accepted and stored, as the Gateway API does, with `Accepted: False,
//! TargetNotFound`; it applies as soon as the target exists. When several policies target one
//! Service, the first by name wins (the Gateway API's tie-break; weft keeps no creation time)
//! and the others say `Conflicted`.
//!
//! A policy may instead target an HTTPRoute or a GRPCRoute of its namespace (every rule) or one
//! rule of it (`sectionName` = the rule's `name`); the two kinds are told apart (an HTTPRoute and
//! a GRPCRoute may share a name). A rule's requests take the rule's policy in place of
//! their Service's: the policy naming the rule wins over one naming the whole route, and among
//! policies of one target the first by name wins (the others say `Conflicted`).

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

/// The rules of the route `ns/name` of `kind` (HTTPRoute or GRPCRoute) by name (`rules[i]` for
/// a rule without one, and whether it has a name); `None` when there is no such route.
fn route_rules(all: &[&Resource], kind: TargetKind, ns: &str, name: &str) -> Option<Vec<(String, bool)>> {
    let names = |names: Vec<Option<&String>>| {
        names
            .into_iter()
            .enumerate()
            .map(|(i, n)| match n {
                Some(n) => (n.clone(), true),
                None => (format!("rules[{i}]"), false),
            })
            .collect()
    };
    all.iter().find_map(|r| match (kind, r) {
        (TargetKind::HttpRoute, Resource::HTTPRoute(t)) if t.metadata.namespace == ns && t.metadata.name == name => {
            Some(names(t.spec.rules.iter().map(|r| r.name.as_ref()).collect()))
        }
        (TargetKind::GrpcRoute, Resource::GRPCRoute(t)) if t.metadata.namespace == ns && t.metadata.name == name => {
            Some(names(t.spec.rules.iter().map(|r| r.name.as_ref()).collect()))
        }
        _ => None,
    })
}

/// The policy that wins for rule `rule` of route `ns/route` of `kind`: the first by name naming
/// the rule, else the first by name naming the whole route.
fn rule_winner<'a>(
    policies: &[&'a Typed<ResiliencePolicySpec>],
    kind: TargetKind,
    ns: &str,
    route: &str,
    rule: &str,
) -> Option<&'a Typed<ResiliencePolicySpec>> {
    let of = |section: Option<&str>| {
        policies.iter().copied().find(|p| {
            p.metadata.namespace == ns
                && p.spec.target_ref.kind == kind
                && p.spec.target_ref.name == route
                && p.spec.target_ref.section_name.as_deref() == section
        })
    };
    of(Some(rule)).or_else(|| of(None))
}

/// Sets each HTTPRoute's and GRPCRoute's per-rule `resilience` from the policies that win for
/// its rules.
pub fn attach_routes(resources: &[&Resource], routes: &mut [crate::catalog::CatalogRoute]) {
    let ps = policies(resources);
    if !ps.iter().any(|p| p.spec.target_ref.kind.is_route()) {
        return;
    }
    for r in routes.iter_mut() {
        let (kind, rules): (TargetKind, Vec<Option<&String>>) = match &r.route {
            weft_api::route::RouteSpec::HTTPRoute(spec) => {
                (TargetKind::HttpRoute, spec.rules.iter().map(|r| r.name.as_ref()).collect())
            }
            weft_api::route::RouteSpec::GRPCRoute(spec) => {
                (TargetKind::GrpcRoute, spec.rules.iter().map(|r| r.name.as_ref()).collect())
            }
            weft_api::route::RouteSpec::TCPRoute(_) => continue,
        };
        let mut attached = BTreeMap::new();
        for (i, name) in rules.into_iter().enumerate() {
            let name = name.cloned().unwrap_or_else(|| format!("rules[{i}]"));
            if let Some(p) = rule_winner(&ps, kind, &r.namespace, &r.name, &name) {
                attached.insert(name, p.spec.resilience(format!("{}/{}", p.metadata.namespace, p.metadata.name)));
            }
        }
        r.resilience.extend(attached);
    }
}

/// The `status` of `policy` among `all` resources: Gateway API style conditions.
pub fn status(policy: &Typed<ResiliencePolicySpec>, all: &[&Resource]) -> Value {
    let ns = &policy.metadata.namespace;
    let t = &policy.spec.target_ref;
    let condition = |ok: bool, reason: &str, message: String| json!({ "conditions": [{ "type": "Accepted", "status": if ok { "True" } else { "False" }, "reason": reason, "message": message }] });
    match t.kind {
        kind @ (TargetKind::HttpRoute | TargetKind::GrpcRoute) => {
            let k = kind.as_str();
            let Some(rules) = route_rules(all, kind, ns, &t.name) else {
                return condition(
                    false,
                    "TargetNotFound",
                    format!("no {k} {ns}/{}: the policy is stored and applies once the route exists", t.name),
                );
            };
            let ps = policies(all);
            match t.section_name.as_deref() {
                Some(section) => {
                    if !rules.iter().any(|(n, named)| *named && n == section) {
                        let names: Vec<&str> =
                            rules.iter().filter(|(_, named)| *named).map(|(n, _)| n.as_str()).collect();
                        return condition(
                            false,
                            "TargetNotFound",
                            format!(
                                "{k} {ns}/{} has no rule named {section:?} (its named rules: {}): set sectionName to one of them, or give the rule that name",
                                t.name,
                                if names.is_empty() { "none".to_string() } else { names.join(", ") }
                            ),
                        );
                    }
                    match rule_winner(&ps, kind, ns, &t.name, section) {
                        Some(w) if w.metadata.name != policy.metadata.name => condition(
                            false,
                            "Conflicted",
                            format!(
                                "ResiliencePolicy {ns}/{} already attaches to rule {section} of {k} {ns}/{} (the first by name wins); merge the two",
                                w.metadata.name, t.name
                            ),
                        ),
                        _ => condition(true, "Accepted", format!("applies to rule {section} of {k} {ns}/{}", t.name)),
                    }
                }
                None => {
                    let first = ps.iter().find(|p| {
                        p.metadata.namespace == *ns
                            && p.spec.target_ref.kind == kind
                            && p.spec.target_ref.name == t.name
                            && p.spec.target_ref.section_name.is_none()
                    });
                    match first {
                        Some(w) if w.metadata.name != policy.metadata.name => condition(
                            false,
                            "Conflicted",
                            format!(
                                "ResiliencePolicy {ns}/{} already attaches to {k} {ns}/{} (the first by name wins); merge the two",
                                w.metadata.name, t.name
                            ),
                        ),
                        _ => condition(
                            true,
                            "Accepted",
                            format!(
                                "applies to {k} {ns}/{} (rules with a policy of their own keep theirs)",
                                t.name
                            ),
                        ),
                    }
                }
            }
        }
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

    #[test]
    fn a_rule_policy_wins_over_the_route_policy_and_missing_rules_are_named() {
        let rs = parse_documents(
            "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: api }\n---\n\
             apiVersion: weft.io/v1alpha1\nkind: HTTPRoute\nmetadata: { name: r }\nspec: { parentRefs: [{ name: api }], rules: [{ name: a, backendRefs: [{ name: api }] }, { backendRefs: [{ name: api }] }] }\n---\n\
             apiVersion: weft.io/v1alpha1\nkind: ResiliencePolicy\nmetadata: { name: whole }\nspec: { targetRef: { kind: HTTPRoute, name: r }, retry: { attempts: 1 } }\n---\n\
             apiVersion: weft.io/v1alpha1\nkind: ResiliencePolicy\nmetadata: { name: rule-a }\nspec: { targetRef: { kind: HTTPRoute, name: r, sectionName: a }, retry: { attempts: 2 } }\n---\n\
             apiVersion: weft.io/v1alpha1\nkind: ResiliencePolicy\nmetadata: { name: typo }\nspec: { targetRef: { kind: HTTPRoute, name: r, sectionName: b }, retry: { attempts: 2 } }\n",
        )
        .unwrap();
        let all: Vec<&Resource> = rs.iter().collect();
        let cat = crate::catalog::build(1, all.iter().copied(), &|_| true);
        let r = &cat.routes[0].resilience;
        assert_eq!(r["a"].policy, "default/rule-a");
        assert_eq!(r["rules[1]"].policy, "default/whole");
        let st = |i: usize| {
            let Resource::ResiliencePolicy(p) = &rs[i] else { panic!() };
            let c = &status(p, &all)["conditions"][0];
            (c["reason"].as_str().unwrap().to_string(), c["message"].as_str().unwrap().to_string())
        };
        assert_eq!(st(2).0, "Accepted");
        assert_eq!(st(3).0, "Accepted");
        let (reason, message) = st(4);
        assert_eq!(reason, "TargetNotFound");
        assert!(message.contains("no rule named \"b\" (its named rules: a)"), "{message}");
    }

    #[test]
    fn a_grpcroute_and_its_rules_take_policies_apart_from_an_httproute_of_the_same_name() {
        let rs = parse_documents(
            "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: api }\n---\n\
             apiVersion: weft.io/v1alpha1\nkind: GRPCRoute\nmetadata: { name: r }\nspec: { parentRefs: [{ name: api }], rules: [{ name: say, matches: [{ method: { service: echo.Echo, method: Say } }], backendRefs: [{ name: api }] }, { backendRefs: [{ name: api }] }] }\n---\n\
             apiVersion: weft.io/v1alpha1\nkind: HTTPRoute\nmetadata: { name: r }\nspec: { parentRefs: [{ name: api }], rules: [{ name: say, backendRefs: [{ name: api }] }] }\n---\n\
             apiVersion: weft.io/v1alpha1\nkind: ResiliencePolicy\nmetadata: { name: g-say }\nspec: { targetRef: { kind: GRPCRoute, name: r, sectionName: say }, retry: { attempts: 2 } }\n---\n\
             apiVersion: weft.io/v1alpha1\nkind: ResiliencePolicy\nmetadata: { name: g-whole }\nspec: { targetRef: { kind: GRPCRoute, name: r }, retry: { attempts: 1 } }\n---\n\
             apiVersion: weft.io/v1alpha1\nkind: ResiliencePolicy\nmetadata: { name: g-typo }\nspec: { targetRef: { kind: GRPCRoute, name: r, sectionName: shout }, retry: { attempts: 1 } }\n---\n\
             apiVersion: weft.io/v1alpha1\nkind: ResiliencePolicy\nmetadata: { name: g-ghost }\nspec: { targetRef: { kind: GRPCRoute, name: ghost }, retry: { attempts: 1 } }\n---\n\
             apiVersion: weft.io/v1alpha1\nkind: ResiliencePolicy\nmetadata: { name: g-later }\nspec: { targetRef: { kind: GRPCRoute, name: r, sectionName: say }, retry: { attempts: 3 } }\n",
        )
        .unwrap();
        let all: Vec<&Resource> = rs.iter().collect();
        let cat = crate::catalog::build(1, all.iter().copied(), &|_| true);
        let route = |kind: &str| {
            cat.routes.iter().find(|r| r.route.kind_str() == kind).unwrap_or_else(|| panic!("no {kind}")).clone()
        };
        let grpc = route("GRPCRoute");
        assert_eq!(grpc.resilience["say"].policy, "default/g-later", "the first by name that names the rule");
        assert_eq!(grpc.resilience["rules[1]"].policy, "default/g-whole", "the route's policy for the others");
        assert!(route("HTTPRoute").resilience.is_empty(), "an HTTPRoute of the same name takes none of them");
        let st = |i: usize| {
            let Resource::ResiliencePolicy(p) = &rs[i] else { panic!() };
            let c = &status(p, &all)["conditions"][0];
            (c["reason"].as_str().unwrap().to_string(), c["message"].as_str().unwrap().to_string())
        };
        assert_eq!(st(3).0, "Conflicted", "{:?}", st(3));
        assert!(st(3).1.contains("g-later") && st(3).1.contains("GRPCRoute default/r"), "{:?}", st(3));
        assert_eq!(
            st(4),
            ("Accepted".into(), "applies to GRPCRoute default/r (rules with a policy of their own keep theirs)".into())
        );
        let (reason, message) = st(5);
        assert_eq!(reason, "TargetNotFound");
        assert!(
            message.contains("GRPCRoute default/r has no rule named \"shout\" (its named rules: say)"),
            "{message}"
        );
        let (reason, message) = st(6);
        assert_eq!(reason, "TargetNotFound");
        assert!(message.contains("no GRPCRoute default/ghost"), "{message}");
        assert_eq!(st(7), ("Accepted".into(), "applies to rule say of GRPCRoute default/r".into()));
    }
}
