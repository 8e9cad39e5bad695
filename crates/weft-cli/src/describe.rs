//! The summary lines `weft describe` prints under a resource for the policies that apply: on a
//! Service or Workload, the AuthorizationPolicies, the mTLS mode per port and the
//! RequestAuthentications; on a Service, the BackendPolicy in force and each other one naming it (in the order the control
//! plane resolved them: the oldest applies); on a BackendPolicy, its condition.

use serde_json::Value;

pub fn policy_lines(kind: &str, v: &Value) -> Vec<String> {
    let status = &v["status"];
    let mut out = authorization_lines(&status["authorization"]);
    out.extend(mtls_lines(&status["mtls"]));
    out.extend(request_authn_lines(&status["requestAuthentications"]));
    out.extend(other_policy_lines(kind, status));
    out
}

/// On a Service or Workload: the AuthorizationPolicies that apply and the default in force.
fn authorization_lines(a: &Value) -> Vec<String> {
    let Some(policies) = a["policies"].as_array() else { return vec![] };
    let mut out = vec![format!(
        "authorization: default {}{}",
        a["default"].as_str().unwrap_or("all-unauthenticated"),
        if policies.is_empty() { ", no policies" } else { "" }
    )];
    for p in policies {
        let on = p["workload"].as_str().map(|w| format!(" (on Workload {w})")).unwrap_or_default();
        out.push(format!("  {:<8} {}{on}", p["action"].as_str().unwrap_or(""), p["name"].as_str().unwrap_or("")));
    }
    out
}

/// On a Service or Workload: the mTLS mode on each workload's port and what set it
/// (PeerAuthentication and its level, MeshConfig `mtls`, or the mesh default).
fn mtls_lines(ports: &Value) -> Vec<String> {
    let Some(ports) = ports.as_array() else { return vec![] };
    if ports.is_empty() {
        return vec!["mtls: no local workloads".to_string()];
    }
    let mut out = vec!["mtls:".to_string()];
    for p in ports {
        let at = format!("{}:{}", p["workload"].as_str().unwrap_or(""), p["port"]);
        out.push(format!("  {at:<20} {:<10} {}", p["mode"].as_str().unwrap_or(""), p["setBy"].as_str().unwrap_or("")));
    }
    out
}

/// On a Service or Workload: the RequestAuthentications that apply, oldest first.
fn request_authn_lines(list: &Value) -> Vec<String> {
    let Some(list) = list.as_array() else { return vec![] };
    if list.is_empty() {
        return vec!["request authentication: none".to_string()];
    }
    let mut out = vec!["request authentication:".to_string()];
    for p in list {
        let on = p["workload"].as_str().map(|w| format!(" (on Workload {w})")).unwrap_or_default();
        out.push(format!("  {}{on}", p["name"].as_str().unwrap_or("")));
    }
    out
}

fn other_policy_lines(kind: &str, status: &Value) -> Vec<String> {
    match kind {
        "Service" => {
            let mut out = vec![];
            let Some(all) = status["backendPolicies"].as_array() else { return out };
            match status["backendPolicy"].as_str() {
                Some(p) => out.push(format!("backend policy: {p} (applies)")),
                None => out.push("backend policy: none applies".to_string()),
            }
            for p in all {
                out.push(format!(
                    "  {:<24} {}",
                    p["name"].as_str().unwrap_or(""),
                    p["condition"].as_str().unwrap_or("")
                ));
            }
            out
        }
        "BackendPolicy" => status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| format!("condition: {}", c["message"].as_str().unwrap_or("")))
            .collect(),
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_service_shows_the_policy_in_force_then_the_others() {
        let v = json!({ "status": {
            "backendPolicy": "old",
            "backendPolicies": [
                { "name": "new", "condition": "Conflicted: BackendPolicy old is older and applies" },
                { "name": "old", "condition": "Accepted: applies to Service default/api" },
            ]
        }});
        let lines = policy_lines("Service", &v);
        assert_eq!(lines[0], "backend policy: old (applies)");
        assert!(lines[1].contains("new") && lines[1].contains("Conflicted"));
        assert!(policy_lines("Service", &json!({})).is_empty(), "no policy: nothing printed");
        let p =
            json!({ "status": { "conditions": [{ "message": "TargetNotFound: Service default/x does not exist" }] } });
        assert_eq!(
            policy_lines("BackendPolicy", &p),
            vec!["condition: TargetNotFound: Service default/x does not exist"]
        );
    }

    #[test]
    fn a_service_or_workload_shows_the_authorization_policies_that_apply() {
        let v = json!({ "status": { "authorization": { "default": "deny", "policies": [
            { "name": "default/web-to-api", "action": "ALLOW" },
            { "name": "default/one", "action": "DENY", "workload": "api-1" },
        ]}}});
        assert_eq!(
            policy_lines("Workload", &v),
            [
                "authorization: default deny",
                "  ALLOW    default/web-to-api",
                "  DENY     default/one (on Workload api-1)"
            ]
        );
        let none = json!({ "status": { "authorization": { "default": "all-authenticated", "policies": [] } } });
        assert_eq!(policy_lines("Service", &none), ["authorization: default all-authenticated, no policies"]);
    }

    #[test]
    fn a_service_or_workload_shows_the_mtls_mode_per_port_and_the_request_authentications() {
        let v = json!({ "status": {
            "mtls": [
                { "workload": "api-1", "port": 8080, "mode": "PERMISSIVE", "setBy": "PeerAuthentication default/migrate (workload level)" },
                { "workload": "api-2", "port": 8080, "mode": "STRICT", "setBy": "mesh default" },
            ],
            "requestAuthentications": [
                { "name": "weft-system/corp-sso" },
                { "name": "default/api-jwt", "workload": "api-1" },
            ],
        }});
        assert_eq!(
            policy_lines("Service", &v),
            [
                "mtls:",
                "  api-1:8080           PERMISSIVE PeerAuthentication default/migrate (workload level)",
                "  api-2:8080           STRICT     mesh default",
                "request authentication:",
                "  weft-system/corp-sso",
                "  default/api-jwt (on Workload api-1)",
            ]
        );
        let none = json!({ "status": { "mtls": [], "requestAuthentications": [] } });
        assert_eq!(policy_lines("Workload", &none), ["mtls: no local workloads", "request authentication: none"]);
    }
}
