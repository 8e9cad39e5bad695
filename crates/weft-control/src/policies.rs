//! Which BackendPolicy applies to each Service, and what each policy's status is.
//!
//! As the Gateway API resolves conflicting policies: of the policies that name one Service, the
//! oldest wins (the lowest `metadata.creationRevision`; on a tie, namespace/name in alphabetical
//! order); the others are `Conflicted`, naming the winner. A policy whose Service does not exist
//! is accepted and stored, with the condition `TargetNotFound`; it applies once the Service
//! exists.

use serde::Serialize;
use std::collections::BTreeMap;
use weft_api::backend_policy::BackendPolicySpec;
use weft_api::resource::Typed;

/// A policy's condition (the `status.conditions[0]` `weft describe` shows).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type")]
pub enum Condition {
    /// It applies to its Service.
    Accepted,
    /// Its Service does not exist (yet): stored, applied nowhere.
    TargetNotFound,
    /// An older policy names the same Service and applies instead.
    Conflicted { winner: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyStatus {
    pub namespace: String,
    pub name: String,
    /// The Service it names, `namespace/name`.
    pub target: String,
    pub condition: Condition,
}

impl Condition {
    /// The condition's type, as Kubernetes conditions name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Condition::Accepted => "Accepted",
            Condition::TargetNotFound => "TargetNotFound",
            Condition::Conflicted { .. } => "Conflicted",
        }
    }
}

impl PolicyStatus {
    /// The words `weft describe` prints.
    pub fn message(&self) -> String {
        match &self.condition {
            Condition::Accepted => format!("Accepted: applies to Service {}", self.target),
            Condition::TargetNotFound => {
                format!("TargetNotFound: Service {} does not exist; the policy applies once it does", self.target)
            }
            Condition::Conflicted { winner } => format!(
                "Conflicted: BackendPolicy {winner} is older and applies to Service {} instead (the oldest policy wins)",
                self.target
            ),
        }
    }
}

/// The policy in force per Service `(namespace, name)`.
pub type Winners<'a> = BTreeMap<(String, String), &'a Typed<BackendPolicySpec>>;

/// The winning policy per Service `(namespace, name)`, and every policy's status (sorted by
/// namespace and name). `exists(namespace, name)`: whether the Service exists.
pub fn resolve<'a>(
    policies: &[&'a Typed<BackendPolicySpec>],
    exists: impl Fn(&str, &str) -> bool,
) -> (Winners<'a>, Vec<PolicyStatus>) {
    let mut ordered: Vec<&Typed<BackendPolicySpec>> = policies.to_vec();
    ordered.sort_by(|a, b| {
        let age = |p: &Typed<BackendPolicySpec>| p.metadata.creation_revision.unwrap_or(0);
        (age(a), &a.metadata.namespace, &a.metadata.name).cmp(&(age(b), &b.metadata.namespace, &b.metadata.name))
    });
    let mut winners: Winners<'a> = BTreeMap::new();
    let mut status = vec![];
    for p in ordered {
        let (ns, target) = (p.metadata.namespace.clone(), p.spec.target_ref.name.clone());
        let condition = if !exists(&ns, &target) {
            Condition::TargetNotFound
        } else if let Some(w) = winners.get(&(ns.clone(), target.clone())) {
            Condition::Conflicted { winner: w.metadata.name.clone() }
        } else {
            winners.insert((ns.clone(), target.clone()), p);
            Condition::Accepted
        };
        status.push(PolicyStatus {
            target: format!("{ns}/{target}"),
            namespace: ns,
            name: p.metadata.name.clone(),
            condition,
        });
    }
    status.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    (winners, status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_api::resource::Metadata;

    fn policy(name: &str, target: &str, created: u64) -> Typed<BackendPolicySpec> {
        Typed {
            metadata: Metadata {
                name: name.into(),
                namespace: "default".into(),
                labels: Default::default(),
                resource_version: Some(created.to_string()),
                creation_revision: Some(created),
            },
            spec: serde_json::from_value(serde_json::json!({
                "targetRef": { "kind": "Service", "name": target },
                "loadBalancer": { "type": "Random" }
            }))
            .unwrap(),
        }
    }

    #[test]
    fn the_oldest_policy_wins_and_a_missing_target_is_accepted_with_a_condition() {
        let (young, old, lonely) = (policy("a-young", "api", 9), policy("z-old", "api", 3), policy("l", "gone", 1));
        let (winners, status) = resolve(&[&young, &old, &lonely], |_, name| name == "api");
        assert_eq!(winners.len(), 1);
        assert_eq!(winners[&("default".into(), "api".into())].metadata.name, "z-old", "older, though later by name");
        let by_name: BTreeMap<&str, &Condition> = status.iter().map(|s| (s.name.as_str(), &s.condition)).collect();
        assert_eq!(by_name["z-old"], &Condition::Accepted);
        assert_eq!(by_name["a-young"], &Condition::Conflicted { winner: "z-old".into() });
        assert_eq!(by_name["l"], &Condition::TargetNotFound);
        assert!(status
            .iter()
            .find(|s| s.name == "l")
            .unwrap()
            .message()
            .starts_with("TargetNotFound: Service default/gone"));
        // Same age: alphabetical by namespace/name.
        let (b, a) = (policy("b", "api", 5), policy("a", "api", 5));
        let (winners, _) = resolve(&[&b, &a], |_, _| true);
        assert_eq!(winners[&("default".into(), "api".into())].metadata.name, "a");
    }
}
