//! The order in which a service's routes apply: the Gateway API's precedence, computed once here
//! for both the proxy (which compiles routes in this order) and `weft describe service` (which
//! shows it). docs/traffic.md has the table.
//!
//! HTTP and gRPC: every (route, hostname, rule, match) is one entry; a request takes the first
//! entry that matches. GRPCRoute entries come first and apply only to gRPC requests
//! (`content-type: application/grpc...`); then HTTPRoute entries, for every request. Within each
//! kind, the route hostname the request matched comes first (the Gateway API's rule: the most
//! characters in a matching exact hostname, then the most characters in a matching wildcard
//! hostname; a route without hostnames matches every host and comes last), then the most
//! specific match:
//!
//! | HTTPRoute, in order | GRPCRoute, in order |
//! |---|---|
//! | path: Exact, then RegularExpression, then PathPrefix | longest exact `service` |
//! | longest path value | longest exact `method` |
//! | a `method` condition | most header conditions |
//! | most header conditions | |
//! | most query parameter conditions | |
//!
//! Ties: route `namespace/name` in alphabetical order (the Gateway API's oldest-first needs a
//! creation time weft does not keep; alphabetical is its next rule), then rule order, then match
//! order within the rule. TCP: one TCPRoute per service applies, the first by `namespace/name`;
//! the others are shown as conflicted.

use super::{AttachedRoute, GrpcMethodMatchType, HttpRouteMatch, PathMatchType, RouteSpec, ValueMatchType};

/// One (route, rule, match) in the order they apply.
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    pub route: &'a AttachedRoute,
    pub rule: usize,
    /// The match within the rule; `None`: the rule has no match (it takes every request).
    pub matched: Option<usize>,
    /// The route hostname (index in `hostnames`) this entry is for; `None`: the route lists none
    /// and the entry takes every host.
    pub host: Option<usize>,
}

impl<'a> Entry<'a> {
    pub fn is_grpc(&self) -> bool {
        matches!(self.route.route, RouteSpec::GRPCRoute(_))
    }

    /// The route hostname this entry applies to (`None`: every host).
    pub fn hostname(&self) -> Option<&'a str> {
        self.host.and_then(|i| self.route.route.hostnames().get(i)).map(String::as_str)
    }
}

/// Hostname rank, larger first: (characters of an exact hostname, characters of the hostname).
/// An exact name beats any wildcard; a longer wildcard beats a shorter one; none comes last.
fn host_rank(h: Option<&str>) -> [usize; 2] {
    match h {
        None => [0, 0],
        Some(h) if h.starts_with('*') => [0, h.len()],
        Some(h) => [h.len(), h.len()],
    }
}

fn path_rank(m: Option<&HttpRouteMatch>) -> (u8, usize) {
    match m.and_then(|m| m.path.as_ref()) {
        None => (1, 1),
        Some(p) => match p.kind {
            PathMatchType::Exact => (3, p.value.len()),
            PathMatchType::RegularExpression => (2, p.value.len()),
            PathMatchType::PathPrefix => (1, p.value.trim_end_matches('/').len().max(1)),
        },
    }
}

/// Sort key, larger first: (grpc, hostname, specificity...), then id/rule/match ascending.
type Key = (bool, [usize; 2], [usize; 5]);

fn key_of(e: &Entry<'_>) -> Key {
    let (grpc, rest) = match_key(e);
    (grpc, host_rank(e.hostname()), rest)
}

fn match_key(e: &Entry<'_>) -> (bool, [usize; 5]) {
    match &e.route.route {
        RouteSpec::HTTPRoute(s) => {
            let m = e.matched.map(|i| &s.rules[e.rule].matches[i]);
            let (kind, len) = path_rank(m);
            (
                false,
                [
                    kind as usize,
                    len,
                    m.is_some_and(|m| m.method.is_some()) as usize,
                    m.map_or(0, |m| m.headers.len()),
                    m.map_or(0, |m| m.query_params.len()),
                ],
            )
        }
        RouteSpec::GRPCRoute(s) => {
            let m = e.matched.map(|i| &s.rules[e.rule].matches[i]);
            let mm = m.and_then(|m| m.method.as_ref());
            let exact = |v: Option<&String>| {
                mm.filter(|mm| mm.kind == GrpcMethodMatchType::Exact).and(v).map_or(0, |v| v.len())
            };
            let regex = mm.is_some_and(|mm| mm.kind == GrpcMethodMatchType::RegularExpression) as usize;
            (
                true,
                [
                    exact(mm.and_then(|mm| mm.service.as_ref())),
                    exact(mm.and_then(|mm| mm.method.as_ref())),
                    regex,
                    m.map_or(0, |m| m.headers.len()),
                    0,
                ],
            )
        }
        RouteSpec::TCPRoute(_) => (false, [0; 5]),
    }
}

/// The HTTP and gRPC entries of `routes` (the routes of one service, any order) in the order
/// they apply.
pub fn http_entries(routes: &[AttachedRoute]) -> Vec<Entry<'_>> {
    let mut out = Vec::new();
    for route in routes {
        let rules: Vec<usize> = match &route.route {
            RouteSpec::HTTPRoute(s) => s.rules.iter().map(|r| r.matches.len()).collect(),
            RouteSpec::GRPCRoute(s) => s.rules.iter().map(|r| r.matches.len()).collect(),
            RouteSpec::TCPRoute(_) => continue,
        };
        let hosts: Vec<Option<usize>> = match route.route.hostnames().len() {
            0 => vec![None],
            n => (0..n).map(Some).collect(),
        };
        for host in hosts {
            for (rule, &n) in rules.iter().enumerate() {
                if n == 0 {
                    out.push(Entry { route, rule, matched: None, host });
                }
                for m in 0..n {
                    out.push(Entry { route, rule, matched: Some(m), host });
                }
            }
        }
    }
    out.sort_by(|a, b| {
        let (ka, kb) = (key_of(a), key_of(b));
        kb.cmp(&ka)
            .then_with(|| (&a.route.namespace, &a.route.name).cmp(&(&b.route.namespace, &b.route.name)))
            .then_with(|| (a.host, a.rule, a.matched).cmp(&(b.host, b.rule, b.matched)))
    });
    out
}

/// The TCPRoute that applies (the first by `namespace/name`) and those that conflict with it.
pub fn tcp_route(routes: &[AttachedRoute]) -> (Option<&AttachedRoute>, Vec<&AttachedRoute>) {
    let mut tcp: Vec<&AttachedRoute> = routes.iter().filter(|r| matches!(r.route, RouteSpec::TCPRoute(_))).collect();
    tcp.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut it = tcp.into_iter();
    (it.next(), it.collect())
}

/// One entry in words, for `weft describe service`: the conditions of its match.
pub fn describe_match(e: &Entry<'_>) -> String {
    let vm = |v: &super::ValueMatch, sep: &str| match v.kind {
        ValueMatchType::Exact => format!("{}{sep}{}", v.name, v.value),
        ValueMatchType::RegularExpression => format!("{}{sep}~{}", v.name, v.value),
        ValueMatchType::Present => format!("{} present", v.name),
    };
    let mut parts = Vec::new();
    if let Some(h) = e.hostname() {
        parts.push(format!("host {h}"));
    }
    match &e.route.route {
        RouteSpec::HTTPRoute(s) => {
            let Some(m) = e.matched.map(|i| &s.rules[e.rule].matches[i]) else {
                parts.push("PathPrefix /".into());
                return parts.join(", ");
            };
            match &m.path {
                Some(p) => parts.push(format!("{:?} {}", p.kind, p.value)),
                None => parts.push("PathPrefix /".into()),
            }
            if let Some(method) = &m.method {
                parts.push(format!("method {method}"));
            }
            parts.extend(m.headers.iter().map(|h| format!("header {}", vm(h, "="))));
            parts.extend(m.query_params.iter().map(|q| format!("query {}", vm(q, "="))));
        }
        RouteSpec::GRPCRoute(s) => {
            let Some(m) = e.matched.map(|i| &s.rules[e.rule].matches[i]) else {
                parts.push("grpc *".into());
                return parts.join(", ");
            };
            if let Some(mm) = &m.method {
                let re = if mm.kind == GrpcMethodMatchType::RegularExpression { "~" } else { "" };
                parts.push(format!(
                    "grpc {re}{}/{re}{}",
                    mm.service.as_deref().unwrap_or("*"),
                    mm.method.as_deref().unwrap_or("*")
                ));
            } else {
                parts.push("grpc *".into());
            }
            parts.extend(m.headers.iter().map(|h| format!("header {}", vm(h, "="))));
        }
        RouteSpec::TCPRoute(_) => parts.push("every connection".into()),
    }
    parts.join(", ")
}

/// The rule's name, or its index (`rules[2]`).
pub fn rule_name(route: &AttachedRoute, rule: usize) -> String {
    let name = match &route.route {
        RouteSpec::HTTPRoute(s) => s.rules.get(rule).and_then(|r| r.name.clone()),
        RouteSpec::GRPCRoute(s) => s.rules.get(rule).and_then(|r| r.name.clone()),
        RouteSpec::TCPRoute(s) => s.rules.get(rule).and_then(|r| r.name.clone()),
    };
    name.unwrap_or_else(|| format!("rules[{rule}]"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::parse_documents;

    fn routes(yaml: &str) -> Vec<AttachedRoute> {
        parse_documents(yaml)
            .unwrap()
            .iter()
            .map(|r| AttachedRoute {
                name: r.metadata().name.clone(),
                namespace: r.metadata().namespace.clone(),
                route: r.route().unwrap(),
                resilience: Default::default(),
            })
            .collect()
    }

    #[test]
    fn gateway_api_precedence() {
        let rs = routes(
            "apiVersion: weft.io/v1alpha1\nkind: HTTPRoute\nmetadata: { name: b }\nspec:\n  parentRefs: [{ name: api }]\n  rules:\n    - backendRefs: [{ name: all }]\n    - matches: [{ path: { type: PathPrefix, value: /v2 } }]\n      backendRefs: [{ name: prefix }]\n    - matches: [{ path: { type: PathPrefix, value: /v2 }, headers: [{ name: x, value: z }] }]\n      backendRefs: [{ name: prefix-header }]\n---\napiVersion: weft.io/v1alpha1\nkind: HTTPRoute\nmetadata: { name: a }\nspec:\n  parentRefs: [{ name: api }]\n  rules:\n    - matches: [{ path: { type: Exact, value: /v2/x } }]\n      backendRefs: [{ name: exact }]\n    - matches: [{ path: { type: PathPrefix, value: /v2 } }]\n      backendRefs: [{ name: prefix-a }]\n---\napiVersion: weft.io/v1alpha1\nkind: GRPCRoute\nmetadata: { name: g }\nspec:\n  parentRefs: [{ name: api }]\n  rules:\n    - matches: [{ method: { service: echo.Echo } }]\n      backendRefs: [{ name: svc }]\n    - matches: [{ method: { service: echo.Echo, method: Say } }]\n      backendRefs: [{ name: svc-method }]\n",
        );
        let order: Vec<String> = http_entries(&rs)
            .iter()
            .map(|e| match &e.route.route {
                RouteSpec::HTTPRoute(s) => s.rules[e.rule].backend_refs[0].name.clone(),
                RouteSpec::GRPCRoute(s) => s.rules[e.rule].backend_refs[0].name.clone(),
                _ => unreachable!(),
            })
            .collect();
        // gRPC first (most specific first); then Exact; then /v2 with a header; then /v2 by
        // route name (a before b); then the catch-all.
        assert_eq!(order, ["svc-method", "svc", "exact", "prefix-header", "prefix-a", "prefix", "all"]);
    }

    #[test]
    fn a_more_specific_hostname_comes_before_any_path_rule() {
        let rs = routes(
            "apiVersion: weft.io/v1alpha1\nkind: HTTPRoute\nmetadata: { name: a-any }\nspec:\n  parentRefs: [{ name: api }]\n  rules:\n    - matches: [{ path: { type: Exact, value: /x } }]\n      backendRefs: [{ name: any }]\n---\napiVersion: weft.io/v1alpha1\nkind: HTTPRoute\nmetadata: { name: b-wild }\nspec:\n  parentRefs: [{ name: api }]\n  hostnames: [\"*.example.com\", \"*.a.example.com\"]\n  rules:\n    - backendRefs: [{ name: wild }]\n---\napiVersion: weft.io/v1alpha1\nkind: HTTPRoute\nmetadata: { name: c-exact }\nspec:\n  parentRefs: [{ name: api }]\n  hostnames: [b.example.com]\n  rules:\n    - backendRefs: [{ name: exact }]\n",
        );
        let order: Vec<String> = http_entries(&rs).iter().map(describe_match).collect();
        assert_eq!(
            order,
            [
                "host b.example.com, PathPrefix /",
                "host *.a.example.com, PathPrefix /",
                "host *.example.com, PathPrefix /",
                "Exact /x"
            ]
        );
    }
}
