//! Routes (Gateway API HTTPRoute, GRPCRoute, TCPRoute attached to a service): compiled once per
//! routing table, applied per request (HTTP/1, HTTP/2, gRPC) or per connection (TCP).
//!
//! ```text
//! request ─► service has routes? ── no ─► (today's path: balance over the service)
//!                 │ yes
//!                 ▼
//!            entries in precedence order (weft_api::route::order) ─► first match ─► rule
//!                 │ none: 404                                             │
//!                 ▼                                                       ▼
//!            redirect? ─► answer 3xx          filters (headers, rewrite, mirror copy)
//!                                             weighted backend pick ─► that Service's balancer
//! ```
//!
//! A service without routes carries `None` and pays one branch. A table is immutable: a new
//! discovery update builds a new one and swaps it whole, so a weight change applies to the next
//! request and a request in flight keeps the service it was sent to.

mod filters;
mod matcher;
mod mirror;

use crate::httputil::{self as h, Body};
use http::{Request, Response, StatusCode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use weft_api::route::{AttachedRoute, BackendRef, RouteSpec};

pub use filters::Filters;
pub use matcher::{is_grpc, Match};
pub use mirror::{copies as mirror_copies, Mirror};

/// One service's compiled routes.
#[derive(Debug, Default)]
pub struct Table {
    /// HTTP and gRPC, in precedence order; a request takes the first whose match holds.
    pub entries: Vec<(Match, Arc<Rule>)>,
    /// The TCPRoute in force, for connections carried as TCP.
    pub tcp: Option<Arc<Rule>>,
    /// What was dropped while compiling, for the log and `/config_dump`.
    pub dropped: Vec<String>,
}

/// One rule: where its requests go and what is done to them on the way.
#[derive(Debug)]
pub struct Rule {
    /// `namespace/name` of the route, and the rule's name (or `rules[i]`): metric labels.
    pub route: crate::metrics::Name,
    pub rule: crate::metrics::Name,
    pub backends: Backends,
    pub filters: Filters,
    /// `timeouts.request` and `timeouts.backendRequest` (with no retries, the shorter one wins).
    pub timeout: Option<Duration>,
    /// The rule's ResiliencePolicy (targetRef HTTPRoute): its requests take it in place of
    /// their Service's.
    pub resilience: Option<Arc<crate::resilience::Policy>>,
    series: OnceLock<RuleSeries>,
}

/// Weighted backends, picked along a Weyl sequence: one atomic add per pick, no lock and no
/// random number, and over any n consecutive picks each backend's share is within a few picks of
/// its weight (low discrepancy), not merely on average.
#[derive(Debug)]
pub struct Backends {
    pub list: Vec<Backend>,
    /// Running sums of the weights of `list` (zero weights never picked).
    cumulative: Vec<u64>,
    next: AtomicU64,
}

#[derive(Debug, Clone)]
pub struct Backend {
    /// `name.namespace` of the Service.
    pub key: String,
    pub port: Option<u16>,
    pub weight: u32,
}

/// 2^64 / φ: consecutive multiples of it are spread evenly over the u64 range.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

impl Backends {
    fn new(refs: &[BackendRef], ns: &str) -> Backends {
        let list: Vec<Backend> =
            refs.iter().map(|b| Backend { key: b.key(ns), port: b.port, weight: b.weight() }).collect();
        let mut sum = 0u64;
        let cumulative = list
            .iter()
            .map(|b| {
                sum += u64::from(b.weight);
                sum
            })
            .collect();
        Backends { list, cumulative, next: AtomicU64::new(0) }
    }

    /// The next backend by weight; `None` when there is none (or every weight is 0).
    pub fn pick(&self) -> Option<&Backend> {
        let total = *self.cumulative.last()?;
        if total == 0 {
            return None;
        }
        if self.list.len() == 1 {
            return self.list.first();
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let x = ((u128::from(n.wrapping_mul(GOLDEN)) * u128::from(total)) >> 64) as u64;
        let i = self.cumulative.partition_point(|c| *c <= x);
        self.list.get(i)
    }
}

impl Table {
    /// Compiles the routes attached to one service (`service`: its `name.namespace`). A route that cannot be compiled (it passed
    /// the control plane's checks, so only a newer or hand-written config gets here) is dropped
    /// alone and named in `dropped`.
    pub fn compile(service: &str, routes: &[AttachedRoute]) -> Table {
        Table::compile_with(service, routes, &std::collections::HashMap::new())
    }

    /// [`Table::compile`], each rule with its compiled ResiliencePolicy from `policies` (by
    /// [`policy_key`]).
    pub fn compile_with(
        service: &str,
        routes: &[AttachedRoute],
        policies: &std::collections::HashMap<String, Arc<crate::resilience::Policy>>,
    ) -> Table {
        let mut t = Table::default();
        // By kind too: an HTTPRoute and a GRPCRoute may share a name.
        let mut rules: std::collections::HashMap<(&str, String, usize), Arc<Rule>> = Default::default();
        for e in weft_api::route::order::http_entries(routes) {
            let id = e.route.id();
            let kind = e.route.route.kind_str();
            let rule = match rules.get(&(kind, id.clone(), e.rule)) {
                Some(r) => r.clone(),
                None => match Rule::http(e.route, e.rule) {
                    Ok(mut r) => {
                        r.resilience = policies.get(&policy_key(e.route, &r.rule.0)).cloned();
                        let r = Arc::new(r);
                        rules.insert((kind, id.clone(), e.rule), r.clone());
                        r
                    }
                    Err(err) => {
                        t.dropped.push(format!("{} {id} rules[{}]: {err}", e.route.route.kind_str(), e.rule));
                        continue;
                    }
                },
            };
            match Match::compile(service, &e) {
                Ok(mut m) => {
                    m.desc = weft_api::route::order::describe_match(&e);
                    t.entries.push((m, rule))
                }
                Err(err) => t.dropped.push(format!("{} {id} rules[{}]: {err}", e.route.route.kind_str(), e.rule)),
            }
        }
        let (tcp, conflicted) = weft_api::route::order::tcp_route(routes);
        if let Some(r) = tcp {
            if let RouteSpec::TCPRoute(s) = &r.route {
                if let Some(rule) = s.rules.first() {
                    t.tcp = Some(Arc::new(Rule {
                        route: crate::metrics::Name::new(r.id()),
                        rule: crate::metrics::Name::new(weft_api::route::order::rule_name(r, 0)),
                        backends: Backends::new(&rule.backend_refs, &r.namespace),
                        filters: Filters::default(),
                        timeout: None,
                        resilience: None,
                        series: OnceLock::new(),
                    }));
                }
            }
        }
        for c in conflicted {
            t.dropped.push(format!("TCPRoute {}: another TCPRoute of this service comes first by name", c.id()));
        }
        t
    }

    /// What `/config_dump` shows: the entries in the order they apply, the TCPRoute, and what
    /// was dropped.
    pub fn describe(&self) -> serde_json::Value {
        let rule = |r: &Rule| {
            serde_json::json!({
                "route": r.route.0.as_ref(),
                "rule": r.rule.0.as_ref(),
                "backends": r.backends.list.iter().map(|b| serde_json::json!({
                    "service": b.key, "port": b.port, "weight": b.weight,
                })).collect::<Vec<_>>(),
                "timeout_ms": r.timeout.map(|t| t.as_millis() as u64),
                "resilience": r.resilience.as_ref().map(|p| p.describe()),
                "redirect": r.filters.redirect.is_some(),
                "rewrite": r.filters.rewrite.is_some(),
                "request_headers": r.filters.request_headers.is_some(),
                "response_headers": r.filters.response_headers.is_some(),
                "mirrors": r.filters.mirrors.iter().map(|m| serde_json::json!({
                    "service": m.key, "percent": f64::from(m.per_million) / 10_000.0,
                })).collect::<Vec<_>>(),
            })
        };
        serde_json::json!({
            "http": self.entries.iter().map(|(m, r)| {
                let mut v = rule(r);
                v["match"] = serde_json::Value::String(m.desc.clone());
                v
            }).collect::<Vec<_>>(),
            "tcp": self.tcp.as_deref().map(rule),
            "dropped": self.dropped,
        })
    }

    /// Whether it routes HTTP (else a request keeps the service's own balancing).
    pub fn routes_http(&self) -> bool {
        !self.entries.is_empty()
    }

    /// The first entry whose match holds.
    pub fn find<B>(&self, req: &Request<B>, port: Option<u16>) -> Option<(&Match, &Arc<Rule>)> {
        let grpc = matcher::is_grpc(req);
        self.entries.iter().find(|(m, _)| m.holds(req, grpc, port)).map(|(m, r)| (m, r))
    }
}

/// The key of the compiled policy of rule `rule` of `route`, in
/// [`crate::resilience::State::compile`] and its metric label: `namespace/name#rule` for an
/// HTTPRoute, `grpc:namespace/name#rule` for a GRPCRoute (an HTTPRoute and a GRPCRoute may share
/// a name, and their rules take different policies).
pub fn policy_key(route: &AttachedRoute, rule: &str) -> String {
    match route.route {
        RouteSpec::GRPCRoute(_) => format!("grpc:{}#{rule}", route.id()),
        _ => format!("{}#{rule}", route.id()),
    }
}

/// The (key, spec) of every rule policy of `routes`, for [`crate::resilience::State::compile`].
pub fn rule_policies(
    routes: &[AttachedRoute],
) -> impl Iterator<Item = (String, &weft_api::resilience::Resilience)> + '_ {
    routes.iter().flat_map(|r| r.resilience.iter().map(move |(rule, p)| (policy_key(r, rule), p)))
}

/// What the routes of a request's service decided.
pub enum Decision {
    /// Send it to `target` (now the backend the rule picked), then apply the rule's response
    /// filters and count it.
    Forward(Arc<Rule>),
    /// Answer it here: a redirect, 404 (no rule matched), 500 (the backend does not exist).
    Respond(Response<Body>, Option<Arc<Rule>>),
}

/// Applies the routes of `target`'s service to `req`: `None` when it has none (the request
/// takes today's path; this is one branch).
#[inline]
pub fn decide(
    ctx: &Arc<crate::Ctx>,
    target: &mut crate::outbound::Target,
    req: &mut Request<Body>,
) -> Option<Decision> {
    let table = target.service.route.as_ref()?.clone();
    if !table.routes_http() && table.tcp.is_none() {
        return None;
    }
    Some(decide_in(ctx, &table, target, req))
}

fn decide_in(
    ctx: &Arc<crate::Ctx>,
    table: &Table,
    target: &mut crate::outbound::Target,
    req: &mut Request<Body>,
) -> Decision {
    let rule = if table.routes_http() {
        let Some((m, rule)) = table.find(req, target.port) else {
            let text = format!("no route of {} matches {} {}", target.service.key(), req.method(), req.uri().path());
            return Decision::Respond(local(StatusCode::NOT_FOUND, "route-not-matched", text), None);
        };
        let rule = rule.clone();
        if let Some(resp) = rule.filters.redirect(req, m.prefix()) {
            return Decision::Respond(resp, Some(rule));
        }
        rule.filters.on_request(req, m.prefix());
        rule
    } else {
        // Only a TCPRoute: HTTP requests on the service are shifted by its weights too.
        let Some(rule) = table.tcp.clone() else {
            let text = format!("{} has no route that applies", target.service.key());
            return Decision::Respond(local(StatusCode::NOT_FOUND, "route-not-matched", text), None);
        };
        rule
    };
    match to_backend(ctx, &rule, target) {
        Ok(()) => Decision::Forward(rule),
        Err(resp) => Decision::Respond(*resp, Some(rule)),
    }
}

/// For an upgrade or CONNECT: the backend of the rule that matches (a redirect or a missing
/// match answers as for a request; other filters do not apply to a tunnel).
pub fn tunnel_backend<B>(
    ctx: &crate::Ctx,
    target: &mut crate::outbound::Target,
    req: &Request<B>,
) -> Result<(), Box<Response<Body>>> {
    let Some(table) = target.service.route.clone() else { return Ok(()) };
    let rule = if table.routes_http() {
        let Some((m, rule)) = table.find(req, target.port) else {
            let text = format!("no route of {} matches {} {}", target.service.key(), req.method(), req.uri().path());
            return Err(Box::new(local(StatusCode::NOT_FOUND, "route-not-matched", text)));
        };
        if let Some(resp) = rule.filters.redirect(req, m.prefix()) {
            return Err(Box::new(resp));
        }
        rule.clone()
    } else {
        match &table.tcp {
            Some(rule) => rule.clone(),
            None => return Ok(()),
        }
    };
    to_backend(ctx, &rule, target)
}

/// Points `target` at the backend `rule` picks next. `Err`: the answer when there is none.
pub fn to_backend(
    ctx: &crate::Ctx,
    rule: &Rule,
    target: &mut crate::outbound::Target,
) -> Result<(), Box<Response<Body>>> {
    let Some(b) = rule.backends.pick() else {
        let text = format!("route {} rule {} has no backend with a weight above 0", rule.route.0, rule.rule.0);
        return Err(Box::new(local(StatusCode::INTERNAL_SERVER_ERROR, "route-no-backend", text)));
    };
    if b.key != target.service.key() {
        let Some(svc) = ctx.routes.load().service_by_key(&b.key).cloned() else {
            let text = format!("route {} sends to Service {}, which does not exist", rule.route.0, b.key);
            return Err(Box::new(local(StatusCode::INTERNAL_SERVER_ERROR, "route-backend-not-found", text)));
        };
        // The dialled port when the backend declares it, else each endpoint's own.
        if target.port.is_some_and(|p| !svc.protocols.contains_key(&p)) {
            target.port = None;
        }
        target.service = svc;
    }
    if let Some(p) = b.port {
        target.port = Some(p);
    }
    Ok(())
}

impl Rule {
    fn http(route: &AttachedRoute, i: usize) -> Result<Rule, String> {
        let ns = &route.namespace;
        let (refs, filters, timeouts) = match &route.route {
            RouteSpec::HTTPRoute(s) => {
                let r = &s.rules[i];
                (&r.backend_refs, &r.filters, r.timeouts.as_ref())
            }
            RouteSpec::GRPCRoute(s) => (&s.rules[i].backend_refs, &s.rules[i].filters, None),
            RouteSpec::TCPRoute(_) => return Err("not an HTTP route".into()),
        };
        let timeout = timeouts.and_then(|t| {
            let d = |x: Option<weft_api::Duration>| x.map(Duration::from).filter(|d| !d.is_zero());
            match (d(t.request), d(t.backend_request)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        });
        Ok(Rule {
            route: crate::metrics::Name::new(route.id()),
            rule: crate::metrics::Name::new(weft_api::route::order::rule_name(route, i)),
            backends: Backends::new(refs, ns),
            filters: Filters::compile(filters, ns)?,
            timeout,
            resilience: None,
            series: OnceLock::new(),
        })
    }

    /// Counts one request of this rule (`weft_route_requests_total`, latency histogram).
    pub fn record(&self, metrics: &Metrics, status: u16, started: Instant) {
        let s = self.series.get_or_init(|| {
            let l = RouteLabels { route: self.route.clone(), rule: self.rule.clone() };
            RuleSeries {
                requests: metrics.requests.get_or_create(&l).clone(),
                latency: metrics.latency.get_or_create(&l).clone(),
            }
        });
        s.requests.inc();
        s.latency.observe(started.elapsed().as_secs_f64());
        if status >= 500 {
            metrics.errors.get_or_create(&RouteLabels { route: self.route.clone(), rule: self.rule.clone() }).inc();
        }
    }
}

#[derive(Debug)]
struct RuleSeries {
    requests: Counter,
    latency: Histogram,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct RouteLabels {
    pub route: crate::metrics::Name,
    pub rule: crate::metrics::Name,
}

/// `weft_route_*`: requests and latency per route and rule, mirror copies.
#[derive(Clone)]
pub struct Metrics {
    pub requests: Family<RouteLabels, Counter>,
    pub errors: Family<RouteLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram>,
    pub mirrored: Family<RouteLabels, Counter>,
    pub mirror_skipped: Family<RouteLabels, Counter>,
    pub mirror_abandoned: Family<RouteLabels, Counter>,
    pub tcp_connections: Family<RouteLabels, Counter>,
}

impl Metrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = Metrics {
            requests: Family::default(),
            errors: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16))
            }),
            mirrored: Family::default(),
            mirror_skipped: Family::default(),
            mirror_abandoned: Family::default(),
            tcp_connections: Family::default(),
        };
        let r = reg.sub_registry_with_prefix("weft_route");
        r.register("requests", "HTTP/gRPC requests by route and rule", m.requests.clone());
        r.register("errors", "Requests by route and rule answered 5xx", m.errors.clone());
        r.register("request_duration_seconds", "Request latency by route and rule", m.latency.clone());
        r.register("mirrored", "Request copies sent to a mirror", m.mirrored.clone());
        r.register(
            "mirror_skipped",
            "Request copies not sent (a body longer than the mirror limit, too many copies in flight, or an unknown mirror service)",
            m.mirror_skipped.clone(),
        );
        r.register(
            "mirror_abandoned",
            "Request copies given up while the body streamed (past the mirror limit, or the caller's body failed or was not read to its end)",
            m.mirror_abandoned.clone(),
        );
        r.register("tcp_connections", "TCP connections routed by a TCPRoute", m.tcp_connections.clone());
        m
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("route::Metrics")
    }
}

/// A response the proxy gives itself for a routed request, with `x-weft-error`.
pub fn local(status: StatusCode, kind: &'static str, text: String) -> Response<Body> {
    let mut resp = Response::new(h::full(format!("weft-proxy: {text}\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    resp.headers_mut().insert(h::PROXY_ERROR, http::HeaderValue::from_static(kind));
    resp
}

#[cfg(test)]
mod tests;
