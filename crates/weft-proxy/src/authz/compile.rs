//! AuthorizationPolicies compiled once, when an update (or the config file) brings them: globs
//! parsed, CIDRs parsed, header names and claim paths split, counters resolved. A request is then
//! a walk over plain data: no parsing, no allocation but the JWT principal's `iss/sub`.

use super::glob::Globs;
use crate::authn::RequestPrincipal;
use http::header::HeaderName;
use http::HeaderMap;
use prometheus_client::metrics::counter::Counter;
use std::net::IpAddr;
use std::sync::Arc;
use weft_api::authz::{Action, Authorization, AuthorizationPolicySpec, ConditionKey, DefaultPolicy, Rule};

/// Who sent a request, as the connection tells it (computed once per connection).
#[derive(Clone, Debug)]
pub struct Source {
    /// The verified peer identity (`spiffe://td/ns/x/sa/y`); `None` for a plaintext caller.
    pub principal: Option<String>,
    pub namespace: Option<String>,
    pub trust_domain: Option<String>,
    pub ip: IpAddr,
}

impl Source {
    pub fn mtls(id: &weft_identity::SpiffeId, ip: IpAddr) -> Source {
        Source {
            principal: Some(id.to_string()),
            namespace: Some(id.namespace().to_string()),
            trust_domain: Some(id.trust_domain().to_string()),
            ip,
        }
    }

    /// A caller that sent plaintext (admitted by PeerAuthentication PERMISSIVE or DISABLE):
    /// no identity, so only rules that need none (`ipBlocks`, unauthenticated defaults) match.
    pub fn plaintext(ip: IpAddr) -> Source {
        Source { principal: None, namespace: None, trust_domain: None, ip }
    }
}

/// What HTTP adds to a request's attributes.
pub struct HttpAttrs<'a> {
    /// Host without the port, lowercase.
    pub host: &'a str,
    pub method: &'a str,
    /// Path without the query.
    pub path: &'a str,
    pub grpc: bool,
    pub headers: &'a HeaderMap,
    pub principal: Option<&'a RequestPrincipal>,
}

/// Everything a rule can look at.
pub struct Attrs<'a> {
    pub source: &'a Source,
    /// The peer's cluster, from its trust domain.
    pub cluster: Option<&'a str>,
    /// The app port.
    pub port: u16,
    /// `None` on opaque TCP.
    pub http: Option<HttpAttrs<'a>>,
}

struct CSource {
    principals: Option<Globs>,
    namespaces: Option<Globs>,
    clusters: Option<Vec<String>>,
    ip_blocks: Option<Vec<(IpAddr, u8)>>,
    request_principals: Option<Globs>,
}

struct COperation {
    hosts: Option<Globs>,
    ports: Option<Vec<u16>>,
    methods: Option<Vec<String>>,
    paths: Option<Globs>,
    grpc_methods: Option<Globs>,
}

enum CKey {
    Header(HeaderName),
    Claim(Vec<String>),
}

struct CCondition {
    key: CKey,
    values: Globs,
}

struct CRule {
    from: Vec<CSource>,
    to: Vec<COperation>,
    when: Vec<CCondition>,
}

/// One policy, compiled.
pub struct CPolicy {
    /// `namespace/name`.
    pub name: Arc<str>,
    pub action: Action,
    /// CUSTOM: the extension provider.
    pub provider: Option<Arc<str>>,
    rules: Vec<CRule>,
    /// Requests it denied (DENY, CUSTOM) or audited (AUDIT); unused for ALLOW.
    pub(super) counter: Counter,
}

fn some<T>(v: &[T]) -> Option<&[T]> {
    (!v.is_empty()).then_some(v)
}

fn principal_globs(v: &[String]) -> Globs {
    // Istio writes principals without the scheme (`td/ns/x/sa/y`); either spelling matches.
    let full: Vec<String> =
        v.iter().map(|p| if p.starts_with("spiffe://") { p.clone() } else { format!("spiffe://{p}") }).collect();
    Globs::new(&full)
}

fn in_block(ip: IpAddr, (net, len): (IpAddr, u8)) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V4(_)) => a.to_ipv4_mapped().is_some_and(|a| in_block(IpAddr::V4(a), (net, len))),
        _ => false,
    }
}

impl CRule {
    fn new(r: &Rule) -> CRule {
        CRule {
            from: r
                .from
                .iter()
                .map(|f| {
                    let s = &f.source;
                    CSource {
                        principals: some(&s.principals).map(principal_globs),
                        namespaces: some(&s.namespaces).map(Globs::new),
                        clusters: some(&s.clusters).map(<[String]>::to_vec),
                        ip_blocks: some(&s.ip_blocks)
                            .map(|b| b.iter().filter_map(|c| weft_api::authz::parse_cidr(c).ok()).collect()),
                        request_principals: some(&s.request_principals).map(Globs::new),
                    }
                })
                .collect(),
            to: r
                .to
                .iter()
                .map(|t| {
                    let o = &t.operation;
                    let lower: Vec<String> = o.hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
                    COperation {
                        hosts: some(&lower).map(Globs::new),
                        ports: some(&o.ports).map(<[u16]>::to_vec),
                        methods: some(&o.methods).map(<[String]>::to_vec),
                        paths: some(&o.paths).map(Globs::new),
                        grpc_methods: some(&o.grpc_methods).map(Globs::new),
                    }
                })
                .collect(),
            when: r
                .when
                .iter()
                .filter_map(|c| {
                    let key = match ConditionKey::parse(&c.key).ok()? {
                        ConditionKey::Header(h) => CKey::Header(HeaderName::from_bytes(h.as_bytes()).ok()?),
                        ConditionKey::Claim(path) => CKey::Claim(path),
                    };
                    Some(CCondition { key, values: Globs::new(&c.values) })
                })
                .collect(),
        }
    }

    /// `l4`: what a field only HTTP carries counts as on opaque TCP (true: matched, for DENY and
    /// CUSTOM, so they only get stricter; false: not matched, for ALLOW and AUDIT).
    fn matches(&self, a: &Attrs<'_>, l4: bool) -> bool {
        let l7 =
            |present: bool, f: &dyn Fn(&HttpAttrs<'_>) -> bool| -> bool { !present || a.http.as_ref().map_or(l4, f) };
        let from_ok = self.from.is_empty()
            || self.from.iter().any(|s| {
                let principal = a.source.principal.as_deref();
                s.principals.as_ref().is_none_or(|g| principal.is_some_and(|p| g.matches(p)))
                    && s.namespaces.as_ref().is_none_or(|g| a.source.namespace.as_deref().is_some_and(|n| g.matches(n)))
                    && s.clusters.as_ref().is_none_or(|c| a.cluster.is_some_and(|cl| c.iter().any(|x| x == cl)))
                    && s.ip_blocks.as_ref().is_none_or(|b| b.iter().any(|blk| in_block(a.source.ip, *blk)))
                    && l7(s.request_principals.is_some(), &|h| {
                        let g = s.request_principals.as_ref().expect("present");
                        h.principal.is_some_and(|p| g.matches(&p.principal()))
                    })
            });
        if !from_ok {
            return false;
        }
        let to_ok = self.to.is_empty()
            || self.to.iter().any(|o| {
                o.ports.as_ref().is_none_or(|p| p.contains(&a.port))
                    && l7(o.hosts.is_some(), &|h| o.hosts.as_ref().is_some_and(|g| g.matches(h.host)))
                    && l7(o.methods.is_some(), &|h| o.methods.as_ref().is_some_and(|m| m.iter().any(|m| m == h.method)))
                    && l7(o.paths.is_some(), &|h| o.paths.as_ref().is_some_and(|g| g.matches(h.path)))
                    && l7(o.grpc_methods.is_some(), &|h| {
                        h.grpc && o.grpc_methods.as_ref().is_some_and(|g| g.matches(h.path.trim_start_matches('/')))
                    })
            });
        if !to_ok {
            return false;
        }
        self.when.iter().all(|c| {
            l7(true, &|h| match &c.key {
                CKey::Header(name) => {
                    h.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).any(|v| c.values.matches(v))
                }
                CKey::Claim(path) => h.principal.is_some_and(|p| {
                    let path: Vec<&str> = path.iter().map(String::as_str).collect();
                    p.claim_values(&path).iter().any(|v| c.values.matches(v))
                }),
            })
        })
    }
}

impl CPolicy {
    pub fn new(name: &str, spec: &AuthorizationPolicySpec, counter: Counter) -> CPolicy {
        CPolicy {
            name: name.into(),
            action: spec.action,
            provider: spec.provider.as_ref().map(|p| p.name.as_str().into()),
            rules: spec.rules.iter().map(CRule::new).collect(),
            counter,
        }
    }

    /// Whether a request matches (any rule).
    pub fn matches(&self, a: &Attrs<'_>) -> bool {
        let l4 = matches!(self.action, Action::Deny | Action::Custom);
        self.rules.iter().any(|r| r.matches(a, l4))
    }
}

/// Why a request was denied: the metric label (`policy`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    /// A DENY policy matched.
    Policy(Arc<str>),
    /// ALLOW policies apply and none matched.
    NoAllowMatched,
    /// The default policy (no ALLOW applies) refused the caller.
    Default(DefaultPolicy),
    /// A CUSTOM policy's provider said no (or could not be asked).
    Custom { policy: Arc<str>, reason: String },
}

impl Denied {
    pub fn label(&self) -> String {
        match self {
            Denied::Policy(p) | Denied::Custom { policy: p, .. } => p.to_string(),
            Denied::NoAllowMatched => "no-allow-matched".into(),
            Denied::Default(d) => format!(
                "default-{}",
                serde_json::to_value(d).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
            ),
        }
    }
}

/// The policies of one proxy, compiled, split by action in evaluation order.
pub struct Compiled {
    /// As given (for `/config_dump`, and to tell an unchanged set on the next update).
    pub spec: Authorization,
    pub custom: Vec<CPolicy>,
    pub deny: Vec<CPolicy>,
    pub allow: Vec<CPolicy>,
    pub audit: Vec<CPolicy>,
    pub default: DefaultPolicy,
    clusters: std::collections::HashMap<String, String>,
    trust_domain: String,
}

impl Compiled {
    /// `own_trust_domain`: the proxy's, used when the spec names none.
    /// `counter(name, action)`: the series a policy counts its matches in.
    pub fn new(spec: &Authorization, own_trust_domain: &str, counter: &dyn Fn(&str, Action) -> Counter) -> Compiled {
        let mut c = Compiled {
            spec: spec.clone(),
            custom: vec![],
            deny: vec![],
            allow: vec![],
            audit: vec![],
            default: spec.default,
            clusters: spec.clusters.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            trust_domain: if spec.trust_domain.is_empty() {
                own_trust_domain.into()
            } else {
                spec.trust_domain.clone()
            },
        };
        for p in &spec.policies {
            let compiled = CPolicy::new(&p.name, &p.spec, counter(&p.name, p.spec.action));
            match p.spec.action {
                Action::Custom => c.custom.push(compiled),
                Action::Deny => c.deny.push(compiled),
                Action::Allow => c.allow.push(compiled),
                Action::Audit => c.audit.push(compiled),
            }
        }
        c
    }

    /// The cluster of a peer of `trust_domain`.
    pub fn cluster_of(&self, trust_domain: Option<&str>) -> Option<&str> {
        self.clusters.get(trust_domain?).map(String::as_str)
    }

    /// The first CUSTOM policy that matches: its provider decides before DENY and ALLOW.
    pub fn custom(&self, a: &Attrs<'_>) -> Option<&CPolicy> {
        self.custom.iter().find(|p| p.matches(a))
    }

    /// DENY, then ALLOW (or the default when no ALLOW applies). AUDIT policies that match are
    /// returned for the caller to record; they never change the decision.
    pub fn decide(&self, a: &Attrs<'_>) -> Result<(), Denied> {
        if let Some(p) = self.deny.iter().find(|p| p.matches(a)) {
            return Err(Denied::Policy(p.name.clone()));
        }
        if !self.allow.is_empty() {
            return if self.allow.iter().any(|p| p.matches(a)) { Ok(()) } else { Err(Denied::NoAllowMatched) };
        }
        let ok = match self.default {
            DefaultPolicy::AllUnauthenticated => true,
            DefaultPolicy::AllAuthenticated => a.source.principal.is_some(),
            DefaultPolicy::ClusterAuthenticated => a.source.trust_domain.as_deref() == Some(self.trust_domain.as_str()),
            DefaultPolicy::Deny => false,
        };
        if ok {
            Ok(())
        } else {
            Err(Denied::Default(self.default))
        }
    }

    /// The AUDIT policies a request matches.
    pub fn audits<'s>(&'s self, a: &'s Attrs<'_>) -> impl Iterator<Item = &'s CPolicy> + 's {
        self.audit.iter().filter(move |p| p.matches(a))
    }

    /// Nothing to check: no policy, and a default every mTLS peer passes.
    pub fn is_open(&self) -> bool {
        self.custom.is_empty()
            && self.deny.is_empty()
            && self.allow.is_empty()
            && self.audit.is_empty()
            && matches!(self.default, DefaultPolicy::AllAuthenticated | DefaultPolicy::AllUnauthenticated)
    }
}
