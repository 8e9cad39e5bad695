//! `weft intention allow|deny <source> <destination>`: Consul's intentions in one line. It writes
//! the AuthorizationPolicy `<source>-to-<destination>` on the destination Service, with the
//! source's identity (its service account, named like the service unless its Workloads say
//! otherwise) as the only principal (docs/security.md, "Intentions").

use anyhow::bail;

/// The AuthorizationPolicy of one intention, as YAML.
pub fn policy(
    action: &str,
    source: &str,
    destination: &str,
    namespace: &str,
    source_namespace: &str,
) -> anyhow::Result<String> {
    let action = match action {
        "allow" => "ALLOW",
        "deny" => "DENY",
        other => bail!("unknown intention {other:?}: use allow or deny"),
    };
    for (what, v) in [
        ("source", source),
        ("destination", destination),
        ("namespace", namespace),
        ("source namespace", source_namespace),
    ] {
        if !weft_api::valid_name(v) {
            bail!("{what} {v:?} must be a service or namespace name (lowercase letters, digits and '-')");
        }
    }
    let name = format!("{source}-to-{destination}");
    if !weft_api::valid_name(&name) {
        bail!("the policy name {name:?} would be longer than 63 characters; write the AuthorizationPolicy yourself");
    }
    Ok(format!(
        "apiVersion: weft.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{ name: {name}, namespace: {namespace} }}\nspec: {{ targetRef: {{ kind: Service, name: {destination} }}, action: {action}, rules: [ {{ from: [ {{ source: {{ principals: [\"*/ns/{source_namespace}/sa/{source}\"] }} }} ] }} ] }}\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::policy;

    #[test]
    fn an_intention_is_one_valid_authorization_policy() {
        let yaml = policy("allow", "web", "api", "shop", "front").unwrap();
        let rs = weft_api::resource::parse_documents(&yaml).unwrap();
        let weft_api::resource::Resource::AuthorizationPolicy(p) = &rs[0] else { panic!("{rs:?}") };
        assert_eq!((p.metadata.name.as_str(), p.metadata.namespace.as_str()), ("web-to-api", "shop"));
        assert_eq!(p.spec.action, weft_api::authz::Action::Allow);
        assert_eq!(p.spec.rules[0].from[0].source.principals, ["*/ns/front/sa/web"]);
        assert!(policy("maybe", "web", "api", "shop", "shop").unwrap_err().to_string().contains("allow or deny"));
        assert!(policy("deny", "Web", "api", "shop", "shop").unwrap_err().to_string().contains("source"));
    }
}
