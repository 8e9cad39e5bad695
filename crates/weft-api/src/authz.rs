//! `AuthorizationPolicy`: who may call a workload, and what (Istio's AuthorizationPolicy, with
//! Linkerd's default policies and Consul's intentions expressible in it; docs/security.md,
//! "Authorization").
//!
//! ```text
//! request ─► CUSTOM policies ─► DENY policies ─► ALLOW policies ─► app
//!              (provider says)    (any match: denied)  (none exist: the default;
//!                                                       some exist and none matches: denied)
//! AUDIT policies mark matching requests and never change the decision.
//! ```
//!
//! Scope: a policy in the root namespace [`ROOT_NAMESPACE`] without `targetRef` applies to every
//! workload of the mesh; elsewhere, without `targetRef`, to every workload of its namespace; with
//! `targetRef`, to the instances of one Service or to one Workload of its namespace.
//!
//! The same type is what the control plane sends a proxy (as JSON, checked again there), so one
//! schema and one validator cover both. The proxy compiles it (`weft-proxy`'s `authz` module).

use crate::{valid_name, ConfigError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The namespace whose policies without `targetRef` apply mesh-wide (Istio's root namespace).
pub const ROOT_NAMESPACE: &str = "weft-system";
/// Most rules in one policy, and most values in one list of a rule: bounds the work of compiling.
pub const MAX_RULES: usize = 256;
pub const MAX_VALUES: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    /// A request matching a rule is allowed; once any ALLOW policy applies to a workload, a
    /// request matching none is denied.
    Allow,
    /// A request matching a rule is denied (before any ALLOW is looked at).
    Deny,
    /// A request matching a rule is counted and logged (`weft_authz_audit_total{policy}`); the
    /// decision is not changed.
    Audit,
    /// A request matching a rule is decided by the extension provider `provider.name`
    /// (MeshConfig `extensionProviders`), before DENY and ALLOW.
    Custom,
}

/// What a policy attaches to, in its namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum TargetKind {
    /// Every instance of the Service.
    Service,
    /// One Workload.
    Workload,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TargetRef {
    pub kind: TargetKind,
    pub name: String,
}

/// The extension provider of a CUSTOM policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Provider {
    /// The name of an entry of MeshConfig `extensionProviders`.
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    /// Unset: every workload of the namespace (of the mesh, in `weft-system`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default = "d_action")]
    pub action: Action,
    /// With `action: CUSTOM` only: who decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Provider>,
    /// A request matches the policy when it matches any rule. No rules: the policy matches no
    /// request (so an ALLOW policy without rules denies everything: Istio's allow-nothing); a
    /// rule `{}` matches every request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
}

fn d_action() -> Action {
    Action::Allow
}

/// Matches a request when every present field matches: one of `from`, one of `to`, all of `when`.
/// An empty rule (`{}`) matches every request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<From>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<To>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct From {
    pub source: Source,
}

/// Who sends the request. Each list present must have a match; an empty list is absent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Source {
    /// The peer's SPIFFE ID (`spiffe://td/ns/x/sa/y`) or its path (`td/ns/x/sa/y`, Istio's
    /// spelling), with `*` globs: `spiffe://mesh.local/ns/shop/*`, `*`. L4.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    /// The peer's namespace (from its SPIFFE ID), with `*` globs. L4.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// The peer's cluster: this mesh's cluster for a peer of its own trust domain, a linked
    /// cluster's name for a peer of that cluster's trust domain. L4.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<String>,
    /// The connection's source address, as CIDRs (`10.0.0.0/8`) or addresses. L4.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
    /// The verified JWT's `iss/sub` (RequestAuthentication), with `*` globs; `*` means "any
    /// valid token". L7.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct To {
    pub operation: Operation,
}

/// What the request asks for. Each list present must have a match.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Operation {
    /// The request's host (`:authority`/`Host`, without port), with `*` globs. L7.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// The app port the request is for. L4.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// HTTP methods (`GET`...). L7.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// The request path without the query, with `*` globs (`/api/*`). L7.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// gRPC methods as `package.Service/Method`, with `*` globs (`shop.Cart/*`); matches only
    /// gRPC requests. L7.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grpc_methods: Vec<String>,
}

/// A condition on a request attribute: it holds when the attribute has one of `values`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Condition {
    /// `request.headers[<name>]` or `request.auth.claims[<claim>]` (nested:
    /// `request.auth.claims[org][team]`). L7.
    pub key: String,
    /// Values, with `*` globs; a header or claim with several values matches when one does.
    pub values: Vec<String>,
}

/// What a condition's `key` reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConditionKey {
    /// A request header (lowercase name).
    Header(String),
    /// A JWT claim by path.
    Claim(Vec<String>),
}

impl ConditionKey {
    pub fn parse(key: &str) -> Result<ConditionKey, String> {
        let bracketed = |rest: &str| -> Option<Vec<String>> {
            let mut out = vec![];
            let mut r = rest;
            while !r.is_empty() {
                let inner = r.strip_prefix('[')?;
                let end = inner.find(']')?;
                if end == 0 {
                    return None;
                }
                out.push(inner[..end].to_string());
                r = &inner[end + 1..];
            }
            (!out.is_empty()).then_some(out)
        };
        let fix = "use request.headers[<name>] or request.auth.claims[<claim>] (nested: request.auth.claims[a][b])";
        if let Some(rest) = key.strip_prefix("request.headers") {
            match bracketed(rest) {
                Some(p) if p.len() == 1 && http_token(&p[0]) => Ok(ConditionKey::Header(p[0].to_ascii_lowercase())),
                _ => Err(format!("{key:?} is not a header condition; {fix}")),
            }
        } else if let Some(rest) = key.strip_prefix("request.auth.claims") {
            bracketed(rest).map(ConditionKey::Claim).ok_or_else(|| format!("{key:?} is not a claim condition; {fix}"))
        } else {
            Err(format!("{key:?} is not a known key; {fix}"))
        }
    }
}

fn http_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// An address block: `10.0.0.0/8`, `2001:db8::/32` or one address.
pub fn parse_cidr(s: &str) -> Result<(std::net::IpAddr, u8), String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: std::net::IpAddr = addr.parse().map_err(|_| format!("{s:?} is not an address or CIDR (10.0.0.0/8)"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("{s:?}: the prefix length must be 0-{max}"))?,
    };
    Ok((ip, len))
}

impl Rule {
    /// The first field of this rule that only HTTP carries (`to[0].operation.paths`...), if any.
    pub fn l7_field(&self) -> Option<String> {
        for (i, f) in self.from.iter().enumerate() {
            if !f.source.request_principals.is_empty() {
                return Some(format!("from[{i}].source.requestPrincipals"));
            }
        }
        for (i, t) in self.to.iter().enumerate() {
            let o = &t.operation;
            for (name, empty) in [
                ("hosts", o.hosts.is_empty()),
                ("methods", o.methods.is_empty()),
                ("paths", o.paths.is_empty()),
                ("grpcMethods", o.grpc_methods.is_empty()),
            ] {
                if !empty {
                    return Some(format!("to[{i}].operation.{name}"));
                }
            }
        }
        (!self.when.is_empty()).then(|| "when[0]".to_string())
    }

    /// The ports this rule names (`to[].operation.ports`); empty: every port.
    pub fn ports(&self) -> Vec<u16> {
        self.to.iter().flat_map(|t| t.operation.ports.iter().copied()).collect()
    }
}

fn check_list(field: String, values: &[String], what: &str) -> Result<(), ConfigError> {
    if values.len() > MAX_VALUES {
        return Err(ConfigError::invalid(field, format!("at most {MAX_VALUES} values; split the policy")));
    }
    for (i, v) in values.iter().enumerate() {
        if v.is_empty() {
            return Err(ConfigError::invalid(format!("{field}[{i}]"), format!("must not be empty: write {what}")));
        }
    }
    Ok(())
}

impl crate::resource::Validate for AuthorizationPolicySpec {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(t) = &self.target_ref {
            if !valid_name(&t.name) {
                return Err(ConfigError::invalid(
                    "targetRef.name",
                    "must be the name of a Service or Workload of the policy's namespace",
                ));
            }
        }
        match (self.action, &self.provider) {
            (Action::Custom, None) => {
                return Err(ConfigError::invalid(
                    "provider",
                    "action CUSTOM needs provider.name (an entry of MeshConfig extensionProviders)",
                ))
            }
            (Action::Custom, Some(p)) if p.name.is_empty() => {
                return Err(ConfigError::invalid(
                    "provider.name",
                    "must name an entry of MeshConfig extensionProviders",
                ))
            }
            (Action::Custom, Some(_)) => {}
            (_, Some(_)) => {
                return Err(ConfigError::invalid("provider", "only action CUSTOM takes a provider; remove it"))
            }
            (_, None) => {}
        }
        if self.rules.len() > MAX_RULES {
            return Err(ConfigError::invalid("rules", format!("at most {MAX_RULES} rules; split the policy")));
        }
        for (r, rule) in self.rules.iter().enumerate() {
            for (i, f) in rule.from.iter().enumerate() {
                let s = &f.source;
                let at = |k: &str| format!("rules[{r}].from[{i}].source.{k}");
                check_list(at("principals"), &s.principals, "a SPIFFE ID, a glob such as spiffe://td/ns/web/*, or *")?;
                check_list(at("namespaces"), &s.namespaces, "a namespace or a glob")?;
                check_list(at("clusters"), &s.clusters, "a cluster name")?;
                check_list(at("requestPrincipals"), &s.request_principals, "iss/sub, a glob, or *")?;
                check_list(at("ipBlocks"), &s.ip_blocks, "an address or CIDR")?;
                for (j, b) in s.ip_blocks.iter().enumerate() {
                    parse_cidr(b).map_err(|m| ConfigError::invalid(format!("{}[{j}]", at("ipBlocks")), m))?;
                }
            }
            for (i, t) in rule.to.iter().enumerate() {
                let o = &t.operation;
                let at = |k: &str| format!("rules[{r}].to[{i}].operation.{k}");
                check_list(at("hosts"), &o.hosts, "a host name or a glob such as *.example.com")?;
                check_list(at("methods"), &o.methods, "an HTTP method such as GET")?;
                check_list(at("paths"), &o.paths, "a path such as /api/* ")?;
                check_list(at("grpcMethods"), &o.grpc_methods, "package.Service/Method or package.Service/*")?;
                for (j, p) in o.paths.iter().enumerate() {
                    if !p.starts_with('/') && p != "*" {
                        return Err(ConfigError::invalid(
                            format!("{}[{j}]", at("paths")),
                            format!("{p:?} must start with '/' (or be *)"),
                        ));
                    }
                }
                for (j, m) in o.grpc_methods.iter().enumerate() {
                    if m.starts_with('/') || (!m.contains('/') && m != "*") {
                        return Err(ConfigError::invalid(
                            format!("{}[{j}]", at("grpcMethods")),
                            format!("{m:?}: write package.Service/Method (no leading '/'), or package.Service/*"),
                        ));
                    }
                }
                if o.ports.contains(&0) {
                    return Err(ConfigError::invalid(at("ports"), "ports are 1-65535"));
                }
            }
            for (i, c) in rule.when.iter().enumerate() {
                ConditionKey::parse(&c.key)
                    .map_err(|m| ConfigError::invalid(format!("rules[{r}].when[{i}].key"), m))?;
                if c.values.is_empty() {
                    return Err(ConfigError::invalid(
                        format!("rules[{r}].when[{i}].values"),
                        "give at least one value (or * for any)",
                    ));
                }
                check_list(format!("rules[{r}].when[{i}].values"), &c.values, "a value or a glob")?;
            }
        }
        Ok(())
    }
}

/// Who may call a workload that no ALLOW policy selects (Linkerd's default policies).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DefaultPolicy {
    /// Any peer with a verified mesh identity (any trust domain this mesh trusts).
    AllAuthenticated,
    /// Anyone that peer authentication lets in (the default, as in Istio and Linkerd): under
    /// STRICT mTLS, the built-in mode, that is only peers with a verified mesh identity; a
    /// PERMISSIVE or DISABLE port also admits plaintext callers, so a workload can join the
    /// mesh without downtime.
    #[default]
    AllUnauthenticated,
    /// Peers of this mesh's own trust domain only (not linked clusters').
    ClusterAuthenticated,
    /// Nobody: only what an ALLOW policy allows.
    Deny,
}

/// MeshConfig `authorization`: the default policy, mesh-wide and per namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorizationConfig {
    /// Default `all-unauthenticated`: whatever peer authentication admits.
    #[serde(default)]
    pub default: DefaultPolicy,
    /// Per namespace: replaces `default` for that namespace's workloads.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub namespaces: BTreeMap<String, DefaultPolicy>,
}

impl AuthorizationConfig {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    pub fn for_namespace(&self, ns: &str) -> DefaultPolicy {
        self.namespaces.get(ns).copied().unwrap_or(self.default)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for ns in self.namespaces.keys() {
            if !valid_name(ns) {
                return Err(ConfigError::invalid(
                    format!("authorization.namespaces.{ns}"),
                    "must be a namespace name (a DNS label)",
                ));
            }
        }
        Ok(())
    }
}

/// The policies in force at one proxy, as the control plane sends them (JSON in
/// `Inbound.authorization`) and as a proxy config file may give them (`inbound.authorization`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Authorization {
    #[serde(default)]
    pub default: DefaultPolicy,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<NamedPolicy>,
    /// Trust domain → cluster name, for `clusters` (this mesh's own and its linked clusters').
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub clusters: BTreeMap<String, String>,
    /// This mesh's own trust domain (for `cluster-authenticated`); empty: the proxy's own.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trust_domain: String,
}

/// A policy with its `namespace/name` (for metrics and logs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamedPolicy {
    pub name: String,
    pub spec: AuthorizationPolicySpec,
}

impl Authorization {
    pub fn validate(&self) -> Result<(), ConfigError> {
        use crate::resource::Validate;
        for (i, p) in self.policies.iter().enumerate() {
            p.spec.validate().map_err(|e| e.under(format_args!("policies[{i}] ({}).spec", p.name)))?;
        }
        Ok(())
    }
}

/// Refuses a policy whose rule needs HTTP (paths, methods, JWT...) on a port declared `tcp`
/// (opaque: the proxy sees only bytes there, so the rule could never be checked). The ports a
/// rule applies to: its `to[].operation.ports`, else every port of its target (the Service, the
/// Workload's port, or, without `targetRef`, only the ports it names).
pub fn check_l4_ports<'a>(
    all: impl IntoIterator<Item = &'a crate::resource::Resource> + Clone,
) -> Result<(), ConfigError> {
    use crate::proxy::Protocol;
    use crate::resource::Resource;
    let mut tcp: BTreeMap<(&str, &str), Vec<u16>> = BTreeMap::new();
    for r in all.clone() {
        if let Resource::Service(s) = r {
            let ports = s.spec.ports.iter().filter(|p| p.protocol == Protocol::Tcp).map(|p| p.port).collect();
            tcp.insert((s.metadata.namespace.as_str(), s.metadata.name.as_str()), ports);
        }
    }
    let workload = |ns: &str, name: &str| {
        all.clone().into_iter().find_map(|r| match r {
            Resource::Workload(w) if w.metadata.namespace == ns && w.metadata.name == name => {
                Some((w.spec.service.clone(), w.spec.port))
            }
            _ => None,
        })
    };
    for r in all.clone() {
        let Resource::AuthorizationPolicy(p) = r else { continue };
        let ns = p.metadata.namespace.as_str();
        for (i, rule) in p.spec.rules.iter().enumerate() {
            let Some(field) = rule.l7_field() else { continue };
            let named = rule.ports();
            // (service, its tcp ports this rule reaches)
            let hits: Vec<(String, u16)> = match &p.spec.target_ref {
                Some(TargetRef { kind: TargetKind::Service, name }) => tcp
                    .get(&(ns, name.as_str()))
                    .into_iter()
                    .flatten()
                    .filter(|port| named.is_empty() || named.contains(port))
                    .map(|port| (name.clone(), *port))
                    .collect(),
                Some(TargetRef { kind: TargetKind::Workload, name }) => match workload(ns, name) {
                    Some((svc, port)) if tcp.get(&(ns, svc.as_str())).is_some_and(|t| t.contains(&port)) => {
                        if named.is_empty() || named.contains(&port) {
                            vec![(svc, port)]
                        } else {
                            vec![]
                        }
                    }
                    _ => vec![],
                },
                None => tcp
                    .iter()
                    .filter(|((sns, _), _)| *sns == ns || ns == ROOT_NAMESPACE)
                    .flat_map(|((_, svc), ports)| {
                        ports.iter().filter(|port| named.contains(port)).map(|port| (svc.to_string(), *port))
                    })
                    .collect(),
            };
            if let Some((svc, port)) = hits.first() {
                let svc_ns = if p.spec.target_ref.is_none() && ns == ROOT_NAMESPACE {
                    tcp.keys().find(|(_, n)| n == svc).map(|(n, _)| *n).unwrap_or(ns)
                } else {
                    ns
                };
                return Err(ConfigError::invalid(
                    format!("{}: spec.rules[{i}].{field}", r.key()),
                    format!(
                        "needs HTTP, but port {port} of Service {svc_ns}/{svc} is opaque TCP (protocol: tcp), where only \
                         principals, namespaces, clusters, ipBlocks and ports can be checked; limit the rule to HTTP \
                         ports with to[].operation.ports, or drop the HTTP field"
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
