//! Routes in the Kubernetes Gateway API's shapes (v1, GAMMA: routes attach to a Service):
//! `HTTPRoute`, `GRPCRoute` and `TCPRoute`. Field names and meanings are the Gateway API's; what
//! weft adds or leaves out is said on the field and in docs/traffic.md, with the precedence
//! rules. The control plane renders the routes of each service into the discovery stream; the
//! proxy compiles them (`weft-proxy`'s `route` module).
//!
//! Validation refuses what could never work (a regular expression that does not compile or is too
//! large, weights that sum to zero, an unknown filter, a redirect that would send a request back
//! to the rule that redirected it); a reference to a Service that does not exist is accepted and
//! reported by [`conditions`] (the Gateway API's `Accepted` / `ResolvedRefs`).

use crate::resource::Validate;
use crate::{valid_name, ConfigError, Duration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Gateway API limits (v1 CRDs): rules per route, matches per rule, and so on.
pub const MAX_RULES: usize = 16;
pub const MAX_MATCHES: usize = 64;
pub const MAX_FILTERS: usize = 16;
pub const MAX_BACKENDS: usize = 16;
pub const MAX_HEADER_MATCHES: usize = 16;
pub const MAX_PARENTS: usize = 32;
pub const MAX_HOSTNAMES: usize = 16;
/// Longest regular expression accepted, in bytes.
pub const MAX_REGEX_LEN: usize = 1024;
/// Most memory one compiled regular expression may take (the `regex` crate's size limit); one
/// that needs more (`(a{100}){100}`, say) is refused as too costly.
pub const MAX_REGEX_SIZE: usize = 256 * 1024;
/// Gateway API's largest backend weight.
pub const MAX_WEIGHT: u32 = 1_000_000;

/// Compiles a route's regular expression as the proxy will, bounded in size. `Err` says why.
pub fn compile_regex(pattern: &str) -> Result<regex::Regex, String> {
    if pattern.len() > MAX_REGEX_LEN {
        return Err(format!("is {} bytes; at most {MAX_REGEX_LEN}", pattern.len()));
    }
    // Anchored: the Gateway API matches the whole value (RE2 full match).
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(MAX_REGEX_SIZE)
        .dfa_size_limit(MAX_REGEX_SIZE)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => format!(
                "{pattern:?} is too costly (its compiled form passes {MAX_REGEX_SIZE} bytes); simplify it (fewer or smaller repetitions)"
            ),
            e => format!("{pattern:?} is not a valid regular expression (RE2 syntax): {}", first_line(&e.to_string())),
        })
}

/// Whether a request's `host` (from `Host` or `:authority`, port already stripped) matches a
/// route hostname `pattern` (validated, lowercase): the same name, ignoring ASCII case and one
/// trailing dot, or for `*.suffix` any name that ends in `.suffix` with at least one label
/// before it (the Gateway API's wildcard: `*.example.com` takes `a.b.example.com`, not
/// `example.com`). Allocates nothing.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    match pattern.strip_prefix('*') {
        // `suffix` keeps its leading '.'.
        Some(suffix) => {
            host.len() > suffix.len()
                && host.is_char_boundary(host.len() - suffix.len())
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        }
        None => host.eq_ignore_ascii_case(pattern),
    }
}

/// A request's host without its port: `api.example.com:8080` → `api.example.com`, `[::1]:80` →
/// `[::1]`.
pub fn strip_port(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((h, p))
            if !h.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (!h.contains(':') || h.ends_with(']')) =>
        {
            h
        }
        _ => authority,
    }
}

fn first_line(s: &str) -> String {
    s.lines().rfind(|l| !l.trim().is_empty()).unwrap_or(s).trim().to_string()
}

// ---------------------------------------------------------------- references

/// A route's parent: in a mesh (GAMMA) the Service whose callers the route applies to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ParentRef {
    /// `""` or `core` (the default): a Service. Gateways are not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `Service` (the default in weft, which has no Gateway kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    /// Default: the route's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Only calls to this port of the Service; absent: every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// A Service that receives traffic, with its share.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackendRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `Service` (the only kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Destination port; absent: the port the caller dialled when the backend declares it, else
    /// each endpoint's own port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Share of the rule's requests (or, for TCPRoute, connections): weight / sum of weights.
    /// Default 1; 0 sends none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

impl BackendRef {
    pub fn weight(&self) -> u32 {
        self.weight.unwrap_or(1)
    }
    /// `name.namespace`, the namespace defaulting to `ns`.
    pub fn key(&self, ns: &str) -> String {
        format!("{}.{}", self.name, self.namespace.as_deref().unwrap_or(ns))
    }
}

/// A reference to a Service without a weight (mirror targets).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackendObjectRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl BackendObjectRef {
    pub fn key(&self, ns: &str) -> String {
        format!("{}.{}", self.name, self.namespace.as_deref().unwrap_or(ns))
    }
}

// ---------------------------------------------------------------- matches

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PathMatchType {
    Exact,
    #[default]
    PathPrefix,
    RegularExpression,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpPathMatch {
    #[serde(default, rename = "type")]
    pub kind: PathMatchType,
    #[serde(default = "slash")]
    pub value: String,
}

fn slash() -> String {
    "/".into()
}

/// `Exact` and `RegularExpression` are the Gateway API's; `Present` (weft's) matches a header
/// that is there, whatever its value (`value` is then ignored).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ValueMatchType {
    #[default]
    Exact,
    RegularExpression,
    Present,
}

/// A header (case-insensitive name) or query parameter (exact name) condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ValueMatch {
    #[serde(default, rename = "type")]
    pub kind: ValueMatchType,
    pub name: String,
    #[serde(default)]
    pub value: String,
}

/// All conditions of one match must hold (AND); a rule applies when any of its matches holds (OR).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteMatch {
    /// Default: `PathPrefix /`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<ValueMatch>,
    /// `GET`, `POST`, ... (any method token, exact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

// ---------------------------------------------------------------- filters

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

/// `set` replaces, `add` appends, `remove` drops (names case-insensitive).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HeaderModifier {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HttpHeader>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HttpHeader>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PathModifierType {
    ReplaceFullPath,
    ReplacePrefixMatch,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpPathModifier {
    #[serde(rename = "type")]
    pub kind: PathModifierType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_full_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix_match: Option<String>,
}

/// Answers the request with a redirect; nothing is forwarded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestRedirect {
    /// `http` or `https`; default: the request's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// 301, 302 (default), 303, 307 or 308.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
}

/// Rewrites the request before it is forwarded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UrlRewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathModifier>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Fraction {
    pub numerator: u32,
    #[serde(default = "hundred")]
    pub denominator: u32,
}

fn hundred() -> u32 {
    100
}

/// Sends a copy of the request to another Service, fire and forget: its answer is dropped, and a
/// slow or failing mirror never delays or changes the real response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestMirror {
    pub backend_ref: BackendObjectRef,
    /// Share of requests copied, 0-100 (default: all). Exclusive with `fraction`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<Fraction>,
}

impl RequestMirror {
    /// The share copied as parts per million.
    pub fn per_million(&self) -> u32 {
        match (self.percent, self.fraction) {
            (Some(p), _) => p.min(100) * 10_000,
            (None, Some(f)) if f.denominator > 0 => {
                ((u64::from(f.numerator.min(f.denominator)) * 1_000_000) / u64::from(f.denominator)) as u32
            }
            _ => 1_000_000,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FilterType {
    RequestHeaderModifier,
    ResponseHeaderModifier,
    RequestRedirect,
    URLRewrite,
    RequestMirror,
    /// Accepted by the schema so the error can say it is not supported.
    ExtensionRef,
    CORS,
}

/// One filter: `type` names it, and the field of that name carries its settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteFilter {
    #[serde(rename = "type")]
    pub kind: FilterType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HeaderModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HeaderModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<RequestRedirect>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "urlRewrite")]
    pub url_rewrite: Option<UrlRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<RequestMirror>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_ref: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteTimeouts {
    /// The whole request, from the caller's first byte to the response head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Duration>,
    /// One try at a backend; at most `request`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<Duration>,
}

// ---------------------------------------------------------------- HTTPRoute

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteRule {
    /// Names the rule (for policies' `sectionName`, metrics and describe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Default: one match, `PathPrefix /`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpRouteMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpRouteFilter>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<BackendRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<HttpRouteTimeouts>,
}

/// `HTTPRoute` spec: rules for HTTP calls to the parent Services.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteSpec {
    pub parent_refs: Vec<ParentRef>,
    /// The route applies only to requests whose host (`Host` or `:authority`, without its
    /// port) is one of these: `api.example.com` exactly, or `*.example.com` for any name under
    /// `example.com` (not `example.com` itself). None listed: every host. See [`host_matches`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    #[serde(default)]
    pub rules: Vec<HttpRouteRule>,
}

// ---------------------------------------------------------------- GRPCRoute

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum GrpcMethodMatchType {
    #[default]
    Exact,
    RegularExpression,
}

/// `service` is the full name (`pkg.Service`), `method` the method's; either may be absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GrpcMethodMatch {
    #[serde(default, rename = "type")]
    pub kind: GrpcMethodMatchType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GrpcRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<GrpcMethodMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatch>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GrpcRouteRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<GrpcRouteMatch>,
    /// RequestHeaderModifier, ResponseHeaderModifier and RequestMirror.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpRouteFilter>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<BackendRef>,
}

/// `GRPCRoute` spec: rules for gRPC calls (by service and method) to the parent Services.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GrpcRouteSpec {
    pub parent_refs: Vec<ParentRef>,
    /// As HTTPRoute's `hostnames`: only requests to these hosts (`:authority`); none: every host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    #[serde(default)]
    pub rules: Vec<GrpcRouteRule>,
}

// ---------------------------------------------------------------- TCPRoute

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpRouteRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub backend_refs: Vec<BackendRef>,
}

/// `TCPRoute` spec: each new TCP connection to the parent Services goes to one backend, by weight.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpRouteSpec {
    pub parent_refs: Vec<ParentRef>,
    /// Exactly one rule (a TCP connection has nothing to match on).
    pub rules: Vec<TcpRouteRule>,
}

mod validate;
pub use validate::path_matches;

// ---------------------------------------------------------------- attached routes and status

/// The three route kinds, for code that treats them alike.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "spec")]
pub enum RouteSpec {
    HTTPRoute(HttpRouteSpec),
    GRPCRoute(GrpcRouteSpec),
    TCPRoute(TcpRouteSpec),
}

impl RouteSpec {
    pub fn kind_str(&self) -> &'static str {
        match self {
            RouteSpec::HTTPRoute(_) => "HTTPRoute",
            RouteSpec::GRPCRoute(_) => "GRPCRoute",
            RouteSpec::TCPRoute(_) => "TCPRoute",
        }
    }

    /// The route's `hostnames` (a TCPRoute has none).
    pub fn hostnames(&self) -> &[String] {
        match self {
            RouteSpec::HTTPRoute(s) => &s.hostnames,
            RouteSpec::GRPCRoute(s) => &s.hostnames,
            RouteSpec::TCPRoute(_) => &[],
        }
    }

    pub fn parent_refs(&self) -> &[ParentRef] {
        match self {
            RouteSpec::HTTPRoute(s) => &s.parent_refs,
            RouteSpec::GRPCRoute(s) => &s.parent_refs,
            RouteSpec::TCPRoute(s) => &s.parent_refs,
        }
    }

    /// Every Service the route sends to: backendRefs and mirror targets, as `name.namespace`.
    pub fn backend_keys(&self, ns: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mirrors = |filters: &[HttpRouteFilter], out: &mut Vec<String>| {
            for flt in filters {
                if let Some(m) = &flt.request_mirror {
                    out.push(m.backend_ref.key(ns));
                }
            }
        };
        match self {
            RouteSpec::HTTPRoute(s) => {
                for r in &s.rules {
                    out.extend(r.backend_refs.iter().map(|b| b.key(ns)));
                    mirrors(&r.filters, &mut out);
                }
            }
            RouteSpec::GRPCRoute(s) => {
                for r in &s.rules {
                    out.extend(r.backend_refs.iter().map(|b| b.key(ns)));
                    mirrors(&r.filters, &mut out);
                }
            }
            RouteSpec::TCPRoute(s) => {
                for r in &s.rules {
                    out.extend(r.backend_refs.iter().map(|b| b.key(ns)));
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The kind's own rules (what the control plane checks at apply).
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            RouteSpec::HTTPRoute(s) => s.validate(),
            RouteSpec::GRPCRoute(s) => s.validate(),
            RouteSpec::TCPRoute(s) => s.validate(),
        }
    }

    /// The spec alone as JSON (the wire form of discovery's `Route.spec_json`).
    pub fn spec_json(&self) -> String {
        match self {
            RouteSpec::HTTPRoute(s) => serde_json::to_string(s),
            RouteSpec::GRPCRoute(s) => serde_json::to_string(s),
            RouteSpec::TCPRoute(s) => serde_json::to_string(s),
        }
        .unwrap_or_default()
    }

    /// Reads and validates a route from its kind and spec JSON (the proxy's side of the wire).
    pub fn from_json(kind: &str, json: &str) -> Result<RouteSpec, ConfigError> {
        fn read<S: serde::de::DeserializeOwned + Validate>(json: &str) -> Result<S, ConfigError> {
            let mut de = serde_json::Deserializer::from_str(json);
            let s: S = serde_path_to_error::deserialize(&mut de)
                .map_err(|e| ConfigError::invalid(format!("spec.{}", e.path()), e.into_inner().to_string()))?;
            s.validate().map_err(|e| e.under("spec"))?;
            Ok(s)
        }
        Ok(match kind {
            "HTTPRoute" => RouteSpec::HTTPRoute(read(json)?),
            "GRPCRoute" => RouteSpec::GRPCRoute(read(json)?),
            "TCPRoute" => RouteSpec::TCPRoute(read(json)?),
            other => return Err(ConfigError::invalid("kind", format!("unknown route kind {other:?}"))),
        })
    }

    /// The parents as `name.namespace`.
    pub fn parent_keys(&self, ns: &str) -> Vec<String> {
        let mut v: Vec<String> =
            self.parent_refs().iter().map(|p| format!("{}.{}", p.name, p.namespace.as_deref().unwrap_or(ns))).collect();
        v.sort();
        v.dedup();
        v
    }
}

/// A route as the proxy receives it with a service: which route (kind, namespace, name) and its
/// spec. The proxy config file takes the same form under a service's `routes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachedRoute {
    pub name: String,
    pub namespace: String,
    #[serde(flatten)]
    pub route: RouteSpec,
    /// ResiliencePolicies of its rules, by rule name (`rules[i]` for a rule without one): a
    /// request a rule matches takes that rule's policy instead of its Service's.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub resilience: std::collections::BTreeMap<String, crate::resilience::Resilience>,
}

impl AttachedRoute {
    /// `namespace/name`, the route's metric label and log name.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A Gateway API status condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    /// `True` or `False`.
    pub status: String,
    pub reason: String,
    pub message: String,
}

/// The Gateway API conditions of a route in namespace `ns`, given which Services exist
/// (`exists("name.namespace")`): `Accepted` (false when no parent Service exists: it applies to
/// nothing yet) and `ResolvedRefs` (false when a backend or mirror Service is missing; requests
/// that would go to it are answered 500, as the Gateway API says).
pub fn conditions(route: &RouteSpec, ns: &str, exists: &dyn Fn(&str) -> bool) -> Vec<Condition> {
    let missing_parents: Vec<String> = route.parent_keys(ns).into_iter().filter(|k| !exists(k)).collect();
    let parents = route.parent_keys(ns).len();
    let accepted = if missing_parents.len() == parents {
        Condition {
            kind: "Accepted".into(),
            status: "False".into(),
            reason: "NoMatchingParent".into(),
            message: format!(
                "no parent Service exists ({}); the route applies to nothing yet",
                missing_parents.join(", ")
            ),
        }
    } else if !missing_parents.is_empty() {
        Condition {
            kind: "Accepted".into(),
            status: "True".into(),
            reason: "Accepted".into(),
            message: format!("attached; parents not found: {}", missing_parents.join(", ")),
        }
    } else {
        Condition {
            kind: "Accepted".into(),
            status: "True".into(),
            reason: "Accepted".into(),
            message: "attached".into(),
        }
    };
    let missing: Vec<String> = route.backend_keys(ns).into_iter().filter(|k| !exists(k)).collect();
    let resolved = if missing.is_empty() {
        Condition {
            kind: "ResolvedRefs".into(),
            status: "True".into(),
            reason: "ResolvedRefs".into(),
            message: "every backend Service exists".into(),
        }
    } else {
        Condition {
            kind: "ResolvedRefs".into(),
            status: "False".into(),
            reason: "BackendNotFound".into(),
            message: format!("no Service {}: requests for it are answered 500 until it exists", missing.join(", ")),
        }
    };
    vec![accepted, resolved]
}

pub mod order;
#[cfg(test)]
mod tests;
