//! Routes in the HTTP API: the Gateway API status of each route (`Accepted`, `ResolvedRefs`),
//! added to what `GET /v1/resources` shows, and `GET /v1/services/{namespace}/{name}/routes`, the
//! routes of one Service in the order they apply (what `weft describe service` prints).
//! Both are computed from the current catalog.

use crate::api::{require_read, ApiError, ApiState};
use crate::catalog::Catalog;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;
use weft_api::resource::{Object, Resource};
use weft_api::route::order::{describe_match, http_entries, rule_name, tcp_route};
use weft_api::route::{AttachedRoute, BackendRef, HttpRouteFilter, RouteSpec};

fn exists(cat: &Catalog) -> impl Fn(&str) -> bool + '_ {
    |k: &str| k.split_once('.').is_some_and(|(n, ns)| cat.services.contains_key(&(ns.to_string(), n.to_string())))
}

/// `shown` as JSON, with `status.conditions` for a route.
pub fn with_status(st: &ApiState, r: &Resource, shown: Object) -> Value {
    let mut v = serde_json::to_value(shown).unwrap_or_default();
    if let Some(route) = r.route() {
        let cat = st.catalog.borrow().clone();
        let conditions = weft_api::route::conditions(&route, &r.metadata().namespace, &exists(&cat));
        v["status"] = json!({ "conditions": conditions });
    }
    v
}

fn backends(refs: &[BackendRef], ns: &str, exists: &dyn Fn(&str) -> bool) -> Vec<Value> {
    let total: u64 = refs.iter().map(|b| u64::from(b.weight())).sum();
    refs.iter()
        .map(|b| {
            let key = b.key(ns);
            json!({
                "service": key,
                "port": b.port,
                "weight": b.weight(),
                "percent": if total == 0 { 0.0 } else { f64::from(b.weight()) * 100.0 / total as f64 },
                "found": exists(&key),
            })
        })
        .collect()
}

fn filters(fs: &[HttpRouteFilter]) -> Vec<String> {
    fs.iter()
        .map(|f| match &f.request_mirror {
            Some(m) => format!("RequestMirror to {} ({}%)", m.backend_ref.name, f64::from(m.per_million()) / 10_000.0),
            None => format!("{:?}", f.kind),
        })
        .collect()
}

/// The routes of one Service as a proxy applies them.
pub fn effective_routes(cat: &Catalog, namespace: &str, name: &str) -> Value {
    let key = format!("{name}.{namespace}");
    let exists = exists(cat);
    let attached: Vec<AttachedRoute> = cat
        .routes_of(&key)
        .map(|r| AttachedRoute {
            name: r.name.clone(),
            namespace: r.namespace.clone(),
            route: r.route.clone(),
            resilience: r.resilience.clone(),
        })
        .collect();
    let http: Vec<Value> = http_entries(&attached)
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let ns = &e.route.namespace;
            let (refs, fs) = match &e.route.route {
                RouteSpec::HTTPRoute(s) => (&s.rules[e.rule].backend_refs, &s.rules[e.rule].filters),
                RouteSpec::GRPCRoute(s) => (&s.rules[e.rule].backend_refs, &s.rules[e.rule].filters),
                RouteSpec::TCPRoute(_) => unreachable!("http_entries has no TCPRoute"),
            };
            json!({
                "order": i + 1,
                "kind": e.route.route.kind_str(),
                "route": e.route.id(),
                "rule": rule_name(e.route, e.rule),
                "match": describe_match(e),
                "filters": filters(fs),
                "backends": backends(refs, ns, &exists),
                // The ResiliencePolicy of the rule, which its requests take instead of the
                // Service's; null: the Service's (if any).
                "resilience": e.route.resilience.get(&rule_name(e.route, e.rule)).map(|r| r.policy.clone()),
            })
        })
        .collect();
    let (tcp, conflicted) = tcp_route(&attached);
    let tcp = tcp.map(|r| {
        let RouteSpec::TCPRoute(s) = &r.route else { unreachable!("tcp_route returns TCPRoutes") };
        json!({ "route": r.id(), "backends": backends(&s.rules[0].backend_refs, &r.namespace, &exists) })
    });
    let service_policy = cat
        .services
        .get(&(namespace.to_string(), name.to_string()))
        .and_then(|s| s.resilience.as_ref())
        .map(|r| r.policy.clone());
    json!({
        "service": key,
        "found": exists(&key),
        "resilience": service_policy,
        "http": http,
        "tcp": tcp,
        "conflicted": conflicted.iter().map(|r| json!({
            "route": r.id(),
            "reason": "another TCPRoute of this Service comes first by namespace/name; one TCPRoute applies per Service",
        })).collect::<Vec<_>>(),
    })
}

/// `GET /v1/services/{namespace}/{name}/routes`.
pub async fn effective(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    require_read(&st, &headers)?;
    let cat = st.catalog.borrow().clone();
    Ok(Json(effective_routes(&cat, &namespace, &name)))
}
