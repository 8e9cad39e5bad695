//! MeshConfig `extensionProviders`: the external authorization services that CUSTOM
//! authorization rules delegate to (docs/security.md, "External authorization"). Each is an HTTP
//! service with Envoy's `ext_authz` HTTP semantics or a gRPC service implementing Envoy's
//! `envoy.service.auth.v3.Authorization/Check`, so authorizers written for Envoy (OPA's Envoy
//! plugin) answer weft unchanged.
//!
//! ```yaml
//! extensionProviders:
//! - name: opa
//!   kind: grpc
//!   address: opa.example.internal:9191
//!   timeout: 500ms
//! - name: oauth
//!   kind: http
//!   address: 127.0.0.1:8000
//!   pathPrefix: /check
//!   includeRequestHeadersInCheck: [cookie, x-user]
//!   headersToUpstreamOnAllow: [x-user-id]
//! ```

use crate::authz::Action;
use crate::resource::{Key, Resource};
use crate::{valid_name, ConfigError, Duration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The most providers a MeshConfig may declare.
pub const MAX_EXTENSION_PROVIDERS: usize = 64;
/// The most header names one list of a provider may hold.
pub const MAX_HEADER_NAMES: usize = 64;
/// How long a check may take when a provider does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest `timeout` accepted: a check holds the request it decides on.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// The status of a request denied because the authorizer failed (Envoy's default).
pub const DEFAULT_STATUS_ON_ERROR: u16 = 403;

/// An external authorization service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExtensionProvider {
    /// What CUSTOM authorization rules call it by (`provider.name`): a DNS label.
    pub name: String,
    /// `http` (Envoy's HTTP ext_authz service) or `grpc` (Envoy's `Authorization/Check`).
    pub kind: ProviderKind,
    /// `host:port` of the service, dialled in plaintext from the proxy (run it beside the
    /// workload or on a trusted network); `host` is an IP address or a DNS name.
    pub address: String,
    /// How long one check may take, connecting included; past it the check has failed (see
    /// `failOpen`).
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// When the service cannot be reached, times out or answers garbage (an HTTP service: a 5xx):
    /// false (the default) denies the request with `statusOnError`; true lets it through.
    #[serde(default)]
    pub fail_open: bool,
    /// The status of a request denied because the check failed (not because the service said no).
    #[serde(default = "default_status_on_error")]
    pub status_on_error: u16,
    /// `http` only: prepended to the request's path in the check request.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path_prefix: String,
    /// `http` only: request headers sent in the check besides those always sent (`host`,
    /// `authorization`, the method and path). Lowercase names. (A gRPC check carries every
    /// request header, as Envoy's does.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_request_headers_in_check: Vec<String>,
    /// `http` only: headers of the service's 2xx answer set on the request sent on to the app.
    /// Empty: none. (A gRPC service lists them itself in `OkHttpResponse.headers`.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_upstream_on_allow: Vec<String>,
    /// `http` only: headers of the service's denial passed to the caller. Empty: all of them
    /// (Envoy's default), `content-length` and hop-by-hop headers excepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_downstream_on_deny: Vec<String>,
}

/// The protocol of an [`ExtensionProvider`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Envoy's HTTP authorization service: the request's method, path and chosen headers are
    /// sent with no body; a 2xx answer allows it, any other answer is the denial returned.
    Http,
    /// Envoy's gRPC `envoy.service.auth.v3.Authorization/Check`.
    Grpc,
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}
fn default_status_on_error() -> u16 {
    DEFAULT_STATUS_ON_ERROR
}

impl ExtensionProvider {
    /// Checks one provider; `field` is where it was read (`extensionProviders[0]`).
    pub fn validate(&self, field: &str) -> Result<(), ConfigError> {
        let f = |k: &str| format!("{field}.{k}");
        if !valid_name(&self.name) {
            return Err(ConfigError::invalid(
                f("name"),
                format!("{:?} must be a DNS label (a-z, 0-9, '-'), e.g. \"opa\"", self.name),
            ));
        }
        validate_address(&f("address"), &self.address)?;
        if self.timeout < Duration::from_millis(1) || self.timeout > MAX_TIMEOUT {
            return Err(ConfigError::invalid(
                f("timeout"),
                format!("{} is out of range; give 1ms to {MAX_TIMEOUT}, e.g. 500ms", self.timeout),
            ));
        }
        if !(200..=599).contains(&self.status_on_error) {
            return Err(ConfigError::invalid(
                f("statusOnError"),
                format!("{} is not an HTTP status from 200 to 599; 403 is the usual one", self.status_on_error),
            ));
        }
        if self.kind == ProviderKind::Grpc {
            let http_only = [
                ("pathPrefix", !self.path_prefix.is_empty()),
                ("includeRequestHeadersInCheck", !self.include_request_headers_in_check.is_empty()),
                ("headersToUpstreamOnAllow", !self.headers_to_upstream_on_allow.is_empty()),
                ("headersToDownstreamOnDeny", !self.headers_to_downstream_on_deny.is_empty()),
            ];
            if let Some((name, _)) = http_only.iter().find(|(_, set)| *set) {
                return Err(ConfigError::invalid(
                    f(name),
                    "applies to `kind: http` only: a gRPC check carries every request header, and the service says in its CheckResponse which headers to add or return; remove the field or use `kind: http`",
                ));
            }
        }
        if !self.path_prefix.is_empty()
            && (!self.path_prefix.starts_with('/')
                || self.path_prefix.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'?'))
        {
            return Err(ConfigError::invalid(
                f("pathPrefix"),
                format!("{:?} must start with '/' and hold no spaces, controls or '?', e.g. /check", self.path_prefix),
            ));
        }
        for (k, list) in [
            ("includeRequestHeadersInCheck", &self.include_request_headers_in_check),
            ("headersToUpstreamOnAllow", &self.headers_to_upstream_on_allow),
            ("headersToDownstreamOnDeny", &self.headers_to_downstream_on_deny),
        ] {
            validate_header_names(&f(k), list)?;
        }
        Ok(())
    }
}

/// Checks a MeshConfig's `extensionProviders`: each valid, names unique, at most
/// [`MAX_EXTENSION_PROVIDERS`].
pub fn validate_providers(providers: &[ExtensionProvider]) -> Result<(), ConfigError> {
    if providers.len() > MAX_EXTENSION_PROVIDERS {
        return Err(ConfigError::invalid("extensionProviders", format!("at most {MAX_EXTENSION_PROVIDERS} providers")));
    }
    for (i, p) in providers.iter().enumerate() {
        let field = format!("extensionProviders[{i}]");
        p.validate(&field)?;
        if providers[..i].iter().any(|o| o.name == p.name) {
            return Err(ConfigError::invalid(
                format!("{field}.name"),
                format!("{:?} is declared twice; give each provider its own name", p.name),
            ));
        }
    }
    Ok(())
}

/// The providers the MeshConfig among `all` declares (none without a MeshConfig).
fn declared<'a>(all: impl IntoIterator<Item = &'a Resource>) -> Vec<&'a str> {
    all.into_iter()
        .filter_map(|r| match r {
            Resource::MeshConfig(m) => Some(m.spec.extension_providers.iter().map(|p| p.name.as_str())),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The CUSTOM AuthorizationPolicies among `all` whose `provider.name` the MeshConfig among `all`
/// does not declare, with that name: they deny what their rules match (fail closed).
pub fn policies_without_provider<'a>(all: impl IntoIterator<Item = &'a Resource> + Clone) -> Vec<(Key, String)> {
    let providers = declared(all.clone());
    all.into_iter()
        .filter_map(|r| match r {
            Resource::AuthorizationPolicy(p) if p.spec.action == Action::Custom => {
                let name = p.spec.provider.as_ref().map_or("", |p| p.name.as_str());
                (!providers.contains(&name)).then(|| (r.key(), name.to_string()))
            }
            _ => None,
        })
        .collect()
}

/// A CUSTOM AuthorizationPolicy being written (`written`) names a provider that the MeshConfig
/// of the resulting set (`all`) declares. Only written policies are checked: removing a provider
/// a stored policy still names stays allowed (that policy then fails closed), so that an
/// operator can take a broken authorizer out of service.
pub fn check_custom_providers<'a>(
    written: impl IntoIterator<Item = &'a Resource>,
    all: impl IntoIterator<Item = &'a Resource> + Clone,
) -> Result<(), ConfigError> {
    let providers = declared(all);
    for r in written {
        if let Resource::AuthorizationPolicy(p) = r {
            let Some(provider) = p.spec.provider.as_ref().filter(|_| p.spec.action == Action::Custom) else {
                continue;
            };
            if !providers.contains(&provider.name.as_str()) {
                let known = if providers.is_empty() { "none".to_string() } else { providers.join(", ") };
                return Err(ConfigError::invalid(
                    format!("{}: spec.provider.name", r.key()),
                    format!(
                        "no extension provider {:?} is declared (declared: {known}); declare it in MeshConfig extensionProviders (in the same apply or before), or name a declared one",
                        provider.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// `host:port`: a non-zero port after the last ':', an IP (IPv6 in brackets) or a DNS name.
fn validate_address(field: &str, address: &str) -> Result<(), ConfigError> {
    let bad = |why: &str| {
        ConfigError::invalid(
            field,
            format!(
                "{address:?} {why}; write host:port, e.g. 127.0.0.1:9191 or authz.example.internal:9191 (no scheme)"
            ),
        )
    };
    if address.contains("://") {
        return Err(bad("has a scheme"));
    }
    let (host, port) = address.rsplit_once(':').ok_or_else(|| bad("has no port"))?;
    match port.parse::<u16>() {
        Ok(p) if p != 0 => {}
        _ => return Err(bad("has no valid port (1-65535)")),
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().map(|_| ()).map_err(|_| bad("has a bad IPv6 address"));
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(bad("has a host that is neither an IP address nor a DNS name"));
    }
    Ok(())
}

/// Headers that frame a message or belong to one connection: never sent in a check, nor copied
/// from an authorizer's answer onto the request (a `content-length` from the authorizer would
/// reframe the request's body).
pub const FRAMING_HEADERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    "te",
    "trailer",
];

/// Header names: HTTP tokens, lowercase, no pseudo-headers, no repeats.
fn validate_header_names(field: &str, names: &[String]) -> Result<(), ConfigError> {
    if names.len() > MAX_HEADER_NAMES {
        return Err(ConfigError::invalid(field, format!("at most {MAX_HEADER_NAMES} header names")));
    }
    for (i, n) in names.iter().enumerate() {
        let token = !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            return Err(ConfigError::invalid(
                format!("{field}[{i}]"),
                format!("{n:?} is not a lowercase HTTP header name, e.g. x-user-id"),
            ));
        }
        if FRAMING_HEADERS.contains(&n.as_str()) && !field.ends_with("headersToDownstreamOnDeny") {
            return Err(ConfigError::invalid(
                format!("{field}[{i}]"),
                format!("{n:?} frames the message or belongs to one connection: the proxy sets it itself; remove it"),
            ));
        }
        if names[..i].contains(n) {
            return Err(ConfigError::invalid(format!("{field}[{i}]"), format!("{n:?} is listed twice")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> ExtensionProvider {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn error(yaml: &str) -> String {
        parse(yaml).validate("extensionProviders[0]").unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_fail_closed_with_a_bounded_timeout() {
        let p = parse("name: opa\nkind: grpc\naddress: 127.0.0.1:9191\n");
        p.validate("p").unwrap();
        assert!(!p.fail_open);
        assert_eq!(p.timeout, DEFAULT_TIMEOUT);
        assert_eq!(p.status_on_error, 403);
    }

    #[test]
    fn bad_fields_are_named_with_the_fix() {
        let e = error("name: opa\nkind: http\naddress: http://a:1\n");
        assert!(e.contains("extensionProviders[0].address") && e.contains("no scheme"), "{e}");
        let e = error("name: opa\nkind: http\naddress: a\n");
        assert!(e.contains("has no port"), "{e}");
        let e = error("name: opa\nkind: http\naddress: a:0\n");
        assert!(e.contains("valid port"), "{e}");
        let e = error("name: Opa\nkind: http\naddress: a:1\n");
        assert!(e.contains("extensionProviders[0].name"), "{e}");
        let e = error("name: opa\nkind: http\naddress: a:1\ntimeout: 0s\n");
        assert!(e.contains(".timeout"), "{e}");
        let e = error("name: opa\nkind: http\naddress: a:1\nstatusOnError: 99\n");
        assert!(e.contains(".statusOnError"), "{e}");
        let e = error("name: opa\nkind: grpc\naddress: a:1\npathPrefix: /x\n");
        assert!(e.contains(".pathPrefix") && e.contains("kind: http"), "{e}");
        let e = error("name: opa\nkind: http\naddress: a:1\npathPrefix: x\n");
        assert!(e.contains(".pathPrefix"), "{e}");
        let e = error("name: opa\nkind: http\naddress: a:1\nheadersToUpstreamOnAllow: [X-User]\n");
        assert!(e.contains("headersToUpstreamOnAllow[0]") && e.contains("lowercase"), "{e}");
        let e = error("name: opa\nkind: http\naddress: a:1\nheadersToUpstreamOnAllow: [x-user, content-length]\n");
        assert!(e.contains("headersToUpstreamOnAllow[1]") && e.contains("sets it itself"), "{e}");
        let e = error("name: opa\nkind: http\naddress: a:1\nincludeRequestHeadersInCheck: [transfer-encoding]\n");
        assert!(e.contains("includeRequestHeadersInCheck[0]"), "{e}");
        let unknown = serde_saphyr::from_str::<ExtensionProvider>("name: a\nkind: tcp\naddress: a:1\n").unwrap_err();
        assert!(unknown.to_string().contains("tcp"), "{unknown}");
    }

    #[test]
    fn a_custom_policy_must_name_a_declared_provider() {
        let policy = "apiVersion: weft.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: { name: ask }\nspec: { action: CUSTOM, provider: { name: opa }, rules: [{}] }\n";
        let mesh = "---\napiVersion: weft.io/v1alpha1\nkind: MeshConfig\nmetadata: { name: mesh }\nspec: { extensionProviders: [{ name: opa, kind: grpc, address: \"127.0.0.1:9191\" }] }\n";
        let alone = crate::resource::parse_documents(policy).unwrap();
        let e = check_custom_providers(&alone, &alone).unwrap_err().to_string();
        assert!(e.starts_with("AuthorizationPolicy default/ask: spec.provider.name"), "{e}");
        assert!(e.contains("\"opa\"") && e.contains("MeshConfig extensionProviders"), "{e}");
        let both = crate::resource::parse_documents(&format!("{policy}{mesh}")).unwrap();
        check_custom_providers(&both, &both).unwrap();
        assert!(policies_without_provider(&both).is_empty());
        // A stored policy left without its provider is not refused, only reported.
        let without = crate::resource::parse_documents(&mesh.replace("opa", "other")).unwrap();
        let stored: Vec<_> = both[..1].iter().chain(&without).collect();
        check_custom_providers(&without, stored.iter().copied()).unwrap();
        let orphans = policies_without_provider(stored.iter().copied());
        assert_eq!(orphans.len(), 1);
        assert_eq!(
            (orphans[0].0.to_string().as_str(), orphans[0].1.as_str()),
            ("AuthorizationPolicy default/ask", "opa")
        );
    }

    #[test]
    fn names_are_unique() {
        let p = parse("name: opa\nkind: grpc\naddress: 127.0.0.1:9191\n");
        let e = validate_providers(&[p.clone(), p]).unwrap_err().to_string();
        assert!(e.contains("extensionProviders[1].name") && e.contains("twice"), "{e}");
    }

    #[test]
    fn addresses_take_ips_and_dns_names() {
        for ok in ["127.0.0.1:1", "[::1]:9191", "opa:9191", "authz.example.internal:80"] {
            validate_address("a", ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["[::1:9191", "a b:1", ":1", "-a:1"] {
            assert!(validate_address("a", bad).is_err(), "{bad}");
        }
    }
}
