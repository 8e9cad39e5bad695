//! `RequestAuthentication`: which JSON Web Tokens a workload's proxy accepts on inbound HTTP
//! requests (Istio's kind of the same name). The proxy verifies a token it finds (signature
//! against the issuer's JWKS, `iss`, `aud`, `exp`/`nbf` with a clock skew), puts the verified
//! principal where authorization reads it, and answers 401 with `WWW-Authenticate` when a token
//! is invalid, or missing where `requireToken` is set. docs/security.md has the worked example.
//!
//! ```text
//! RequestAuthentication (namespace; targetRef Service|Workload, or none: the whole namespace;
//!   in weft-system: the whole mesh) ─► control plane ─► Inbound.request_authentication of each
//!   proxy it applies to ─► proxy `jwt` module
//! ```

use crate::resource::Validate;
use crate::{valid_name, ConfigError, Duration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The namespace whose policies apply to every workload of the mesh.
pub const ROOT_NAMESPACE: &str = "weft-system";
/// Default `clockSkew`: how far `exp` and `nbf` may be off.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);
/// The most rules one policy holds.
pub const MAX_JWT_RULES: usize = 64;
/// The largest inline `jwks`.
pub const MAX_INLINE_JWKS: usize = 256 * 1024;

/// What a policy applies to, in its own namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TargetRef {
    /// Empty or `weft.io`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// `Service` (every workload of it) or `Workload` (one).
    pub kind: String,
    pub name: String,
}

/// Where a token is read from: a header, with a prefix stripped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JwtHeader {
    pub name: String,
    /// Stripped from the value (`Bearer ` for `Authorization`); a value without it is no token.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
}

/// A claim copied into a request header for the app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClaimToHeader {
    pub header: String,
    /// The claim's name; `a.b` for a nested one. A string, number or boolean is copied as is; a
    /// list of strings joined with `,`.
    pub claim: String,
}

/// One issuer the proxy accepts tokens of.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JwtRule {
    /// The token's `iss` must be exactly this.
    pub issuer: String,
    /// The token's `aud` must hold one of these; empty: any audience (or none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// The issuer's keys, a JWKS document inline (JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    /// The issuer's keys, a JWKS file on the proxy's host (read again when it changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<String>,
    /// The issuer's keys, fetched from this `http(s)` URL, cached, fetched again when a token
    /// names a `kid` not in the cache (at most once per 5 seconds) and every 10 minutes. With
    /// none of `jwks`, `jwksFile` and `jwksUri`: OpenID Connect discovery finds it
    /// (`<issuer>/.well-known/openid-configuration` → `jwks_uri`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Where the token is; default `Authorization: Bearer <token>`. The first place holding
    /// one is used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<JwtHeader>,
    /// Query parameters that may carry the token (`?access_token=...`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    /// Cookies that may carry the token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_cookies: Vec<String>,
    /// Claims copied into request headers (any copy the caller sent is removed first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// Keep the token in the request to the app. Default: removed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forward_original_token: bool,
    /// Accept HS256/HS384/HS512 tokens, verified with the JWKS's symmetric (`kty: oct`) keys.
    /// Off by default: asymmetric algorithms only (RS256/384/512, PS256/384/512, ES256/384,
    /// EdDSA), and a token naming an HMAC algorithm is refused whatever its key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_hmac: bool,
    /// How far `exp` and `nbf` may be off. Default 60s.
    #[serde(default = "d_skew")]
    pub clock_skew: Duration,
}

fn d_skew() -> Duration {
    DEFAULT_CLOCK_SKEW
}

/// The resource's spec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestAuthenticationSpec {
    /// The Service or Workload it applies to; none: every workload in the namespace (in
    /// `weft-system`, the whole mesh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    /// The issuers accepted. A token is checked against the rule of its `iss`; a token of no
    /// rule's issuer is refused.
    pub jwt_rules: Vec<JwtRule>,
    /// Refuse a request that carries no token (401). Default: such a request passes without a
    /// request principal (as in Istio), and an authorization policy decides.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_token: bool,
}

/// A header name as `http` accepts it (lowercase token characters).
fn valid_header(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_!#$%&'*+.^`|~".contains(&b))
}

fn valid_url(s: &str, field: &str) -> Result<(), ConfigError> {
    let rest = s.strip_prefix("http://").or_else(|| s.strip_prefix("https://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !s.chars().any(char::is_whitespace) => Ok(()),
        _ => Err(ConfigError::invalid(field, format!("{s:?} is not an http:// or https:// URL with a host"))),
    }
}

impl JwtRule {
    /// Checks one rule; `at` is its field path (`spec.jwtRules[0]`).
    pub fn validate_at(&self, at: &str) -> Result<(), ConfigError> {
        if self.issuer.is_empty() {
            return Err(ConfigError::invalid(format!("{at}.issuer"), "required: the tokens' `iss`"));
        }
        let sources = [self.jwks.is_some(), self.jwks_file.is_some(), self.jwks_uri.is_some()];
        if sources.iter().filter(|s| **s).count() > 1 {
            return Err(ConfigError::invalid(
                format!("{at}.jwks"),
                "set at most one of `jwks`, `jwksFile` and `jwksUri` (none: OpenID Connect discovery at the issuer)",
            ));
        }
        if let Some(j) = &self.jwks {
            if j.len() > MAX_INLINE_JWKS {
                return Err(ConfigError::invalid(format!("{at}.jwks"), "larger than 256 KiB; use `jwksFile`"));
            }
            let v: serde_json::Value = serde_json::from_str(j).map_err(|e| {
                ConfigError::invalid(format!("{at}.jwks"), format!("not JSON ({e}); give a JWKS: {{\"keys\": [...]}}"))
            })?;
            if !v.get("keys").is_some_and(serde_json::Value::is_array) {
                return Err(ConfigError::invalid(format!("{at}.jwks"), "a JWKS needs a `keys` list"));
            }
        }
        if let Some(f) = &self.jwks_file {
            if f.is_empty() {
                return Err(ConfigError::invalid(format!("{at}.jwksFile"), "empty: give a path"));
            }
        }
        if let Some(u) = &self.jwks_uri {
            valid_url(u, &format!("{at}.jwksUri"))?;
        }
        if sources.iter().all(|s| !s) {
            valid_url(&self.issuer, &format!("{at}.issuer")).map_err(|_| {
                ConfigError::invalid(
                    format!("{at}.issuer"),
                    format!(
                        "{:?}: without `jwks`, `jwksFile` or `jwksUri` the keys are found by OpenID Connect discovery, which needs an http(s) issuer URL; give the keys instead",
                        self.issuer
                    ),
                )
            })?;
        }
        for (i, h) in self.from_headers.iter().enumerate() {
            if !valid_header(&h.name) {
                return Err(ConfigError::invalid(format!("{at}.fromHeaders[{i}].name"), "not a valid header name"));
            }
        }
        for (i, p) in self.from_params.iter().enumerate() {
            if p.is_empty() {
                return Err(ConfigError::invalid(format!("{at}.fromParams[{i}]"), "empty: name a query parameter"));
            }
        }
        for (i, c) in self.from_cookies.iter().enumerate() {
            if !valid_header(c) {
                return Err(ConfigError::invalid(format!("{at}.fromCookies[{i}]"), "not a valid cookie name"));
            }
        }
        for (i, o) in self.output_claim_to_headers.iter().enumerate() {
            if !valid_header(&o.header) || o.header.to_ascii_lowercase().starts_with("x-weft-") {
                return Err(ConfigError::invalid(
                    format!("{at}.outputClaimToHeaders[{i}].header"),
                    "not a valid header name (and `x-weft-*` is the proxy's own)",
                ));
            }
            if o.claim.is_empty() || o.claim.split('.').any(str::is_empty) {
                return Err(ConfigError::invalid(
                    format!("{at}.outputClaimToHeaders[{i}].claim"),
                    "name a claim: `sub`, or `a.b` for a nested one",
                ));
            }
        }
        Ok(())
    }
}

impl Validate for RequestAuthenticationSpec {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(t) = &self.target_ref {
            if !(t.group.is_empty() || t.group == "weft.io") {
                return Err(ConfigError::invalid("spec.targetRef.group", "leave empty or `weft.io`"));
            }
            if t.kind != "Service" && t.kind != "Workload" {
                return Err(ConfigError::invalid(
                    "spec.targetRef.kind",
                    format!("{:?}: `Service` or `Workload` (omit targetRef for the whole namespace)", t.kind),
                ));
            }
            if !valid_name(&t.name) {
                return Err(ConfigError::invalid("spec.targetRef.name", "a resource name (lowercase, digits, '-')"));
            }
        }
        if self.jwt_rules.is_empty() {
            return Err(ConfigError::invalid("spec.jwtRules", "give at least one rule (`issuer` and its keys)"));
        }
        if self.jwt_rules.len() > MAX_JWT_RULES {
            return Err(ConfigError::invalid("spec.jwtRules", format!("at most {MAX_JWT_RULES} rules")));
        }
        for (i, r) in self.jwt_rules.iter().enumerate() {
            r.validate_at(&format!("spec.jwtRules[{i}]"))?;
            if self.jwt_rules[..i].iter().any(|o| o.issuer == r.issuer) {
                return Err(ConfigError::invalid(
                    format!("spec.jwtRules[{i}].issuer"),
                    format!("{:?} has a rule already; merge the two", r.issuer),
                ));
            }
        }
        Ok(())
    }
}

/// [`Validate::validate`], with field paths under `at` instead of `spec` (a proxy config file's
/// `inbound.request_authentication[0]`, a discovery update's policy).
pub fn validate_at(spec: &RequestAuthenticationSpec, at: &str) -> Result<(), ConfigError> {
    spec.validate().map_err(|e| {
        e.map_field(|field| match field.strip_prefix("spec") {
            Some(rest) => format!("{at}{rest}"),
            None => field,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> Result<RequestAuthenticationSpec, String> {
        let s: RequestAuthenticationSpec = serde_saphyr::from_str(yaml).map_err(|e| e.to_string())?;
        s.validate().map_err(|e| e.to_string())?;
        Ok(s)
    }

    #[test]
    fn a_rule_with_discovery_is_read_with_defaults() {
        let s = spec("jwtRules: [{ issuer: \"https://idp.example\" }]").unwrap();
        assert_eq!(s.jwt_rules[0].clock_skew, DEFAULT_CLOCK_SKEW);
        assert!(!s.jwt_rules[0].allow_hmac && !s.require_token);
    }

    #[test]
    fn bad_rules_are_refused_naming_the_field() {
        for (yaml, field) in [
            ("jwtRules: []", "spec.jwtRules"),
            ("jwtRules: [{ issuer: \"\" }]", "spec.jwtRules[0].issuer"),
            ("jwtRules: [{ issuer: idp }]", "spec.jwtRules[0].issuer"),
            ("jwtRules: [{ issuer: a, jwks: \"{}\" }]", "spec.jwtRules[0].jwks"),
            ("jwtRules: [{ issuer: a, jwks: \"x\" }]", "spec.jwtRules[0].jwks"),
            ("jwtRules: [{ issuer: a, jwksUri: \"ftp://x\" }]", "spec.jwtRules[0].jwksUri"),
            ("jwtRules: [{ issuer: a, jwksFile: f, jwksUri: \"http://x\" }]", "spec.jwtRules[0].jwks"),
            ("jwtRules: [{ issuer: a, jwksFile: f, fromHeaders: [{ name: \"a b\" }] }]", "fromHeaders[0].name"),
            ("jwtRules: [{ issuer: a, jwksFile: f, outputClaimToHeaders: [{ header: x-weft-peer-identity, claim: sub }] }]", "outputClaimToHeaders[0].header"),
            ("jwtRules: [{ issuer: a, jwksFile: f }, { issuer: a, jwksFile: g }]", "spec.jwtRules[1].issuer"),
            ("targetRef: { kind: HTTPRoute, name: r }\njwtRules: [{ issuer: a, jwksFile: f }]", "spec.targetRef.kind"),
        ] {
            let e = spec(yaml).expect_err(yaml);
            assert!(e.contains(field), "{yaml}: {e}");
        }
    }
}
