//! Who sent an inbound request, beyond the peer's mTLS identity: the JWT that request
//! authentication (RequestAuthentication, module `jwt`) verified. `jwt` puts a
//! [`RequestPrincipal`] in the request's extensions; authorization (`authz`) reads it for
//! `requestPrincipals` and `when: request.auth.claims[...]`. Kept apart so neither module
//! depends on the other.

use serde_json::{Map, Value};

/// A verified JWT's identity and claims.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestPrincipal {
    /// `iss` claim.
    pub issuer: String,
    /// `sub` claim.
    pub subject: String,
    /// `aud` claim (a string or a list in the token; always a list here).
    pub audiences: Vec<String>,
    /// Every claim, as sent.
    pub claims: Map<String, Value>,
}

impl RequestPrincipal {
    /// `iss/sub`, as Istio spells a request principal (`requestPrincipals: ["iss/sub"]`).
    pub fn principal(&self) -> String {
        format!("{}/{}", self.issuer, self.subject)
    }

    /// A claim by path: `groups`, or `a.b` for a nested object (`request.auth.claims[a][b]`).
    pub fn claim(&self, path: &[&str]) -> Option<&Value> {
        let (first, rest) = path.split_first()?;
        let mut v = self.claims.get(*first)?;
        for k in rest {
            v = v.as_object()?.get(*k)?;
        }
        Some(v)
    }

    /// A claim's values as strings: a string claim is one value, a list of strings many.
    pub fn claim_values(&self, path: &[&str]) -> Vec<&str> {
        match self.claim(path) {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_read_by_path_and_lists_become_values() {
        let claims = serde_json::json!({ "groups": ["a", "b"], "org": { "team": "x" }, "n": 1 });
        let p = RequestPrincipal {
            issuer: "https://idp".into(),
            subject: "alice".into(),
            audiences: vec![],
            claims: claims.as_object().unwrap().clone(),
        };
        assert_eq!(p.principal(), "https://idp/alice");
        assert_eq!(p.claim_values(&["groups"]), ["a", "b"]);
        assert_eq!(p.claim_values(&["org", "team"]), ["x"]);
        assert!(p.claim_values(&["n"]).is_empty());
        assert!(p.claim(&["missing"]).is_none());
    }
}
