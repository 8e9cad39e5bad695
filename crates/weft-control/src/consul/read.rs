//! Consul's reads: catalog, health and agent endpoints, answered from the catalog (one snapshot
//! per answer) and the health monitor. weft has no Consul nodes: each instance is its own node,
//! named after its Workload, with the instance's address, in its cluster as the datacenter (the
//! same names weft's DNS gives in `<node>.node.<dc>.consul`). The agent is the control plane.

use super::checks::consul_ids;
use super::{answer, catalog_for};
use crate::api::{ApiError, ApiState};
use crate::catalog::{Catalog, CatalogService, Instance};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use weft_health::Status;

type S = State<Arc<ApiState>>;

/// The query parameters Consul reads take (the rest are accepted and ignored).
struct Params {
    ns: String,
    tag: Vec<String>,
    passing: bool,
    /// `?dc`: the datacenter (cluster) whose instances the catalog and health reads list.
    dc: Option<String>,
}

fn params(uri: &Uri) -> Params {
    let pairs = crate::api::query_pairs(uri);
    let passing = pairs.iter().any(|(k, v)| k == "passing" && !matches!(v.as_str(), "0" | "false"));
    Params {
        ns: pairs.iter().find(|(k, _)| k == "ns").map(|(_, v)| v.clone()).unwrap_or_else(|| "default".into()),
        tag: pairs.iter().filter(|(k, _)| k == "tag").map(|(_, v)| v.clone()).collect(),
        passing,
        dc: pairs.iter().find(|(k, v)| k == "dc" && !v.is_empty()).map(|(_, v)| v.to_ascii_lowercase()),
    }
}

/// The datacenters a catalog knows, this cluster first: this cluster, its linked clusters, its
/// remote clusters (primary-remote), and any other cluster an instance names (a linked primary's
/// remote clusters).
fn datacenters(cat: &Catalog) -> Vec<String> {
    let mut out = vec![cat.mesh.cluster.name.clone()];
    let others = cat.links.keys().chain(cat.mesh.remote_clusters.iter().map(|r| &r.name));
    for c in others.chain(cat.services.values().flat_map(|s| s.instances.iter().map(|i| &i.cluster))) {
        if !c.is_empty() && !out.contains(c) {
            out.push(c.clone());
        }
    }
    out[1..].sort();
    out
}

/// The datacenter a read lists, as Consul picks it: `?dc`, else the agent's own (this cluster).
/// A datacenter the catalog does not know answers 500 `No path to datacenter`, as Consul does.
fn dc_of(cat: &Catalog, p: &Params) -> Result<String, ApiError> {
    let Some(dc) = &p.dc else { return Ok(cat.mesh.cluster.name.clone()) };
    let known = datacenters(cat);
    if known.contains(dc) {
        return Ok(dc.clone());
    }
    Err(ApiError(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        format!(
            "No path to datacenter: dc {dc:?} is neither this cluster nor a linked or remote cluster (known: {}); link it (`weft link add`) or fix ?dc",
            known.join(", ")
        ),
    ))
}

/// An instance's tags: its own, and its Service's if the Service declares some.
fn tags(s: &CatalogService, i: &Instance) -> Vec<String> {
    let mut t: Vec<String> = Vec::with_capacity(s.tags.len() + i.tags.len());
    for tag in s.tags.iter().chain(&i.tags) {
        if !t.contains(tag) {
            t.push(tag.clone());
        }
    }
    t
}

/// Every `?tag=` is among the instance's tags (Consul ANDs repeated `tag`s).
fn has_tags(s: &CatalogService, i: &Instance, want: &[String]) -> bool {
    let t = tags(s, i);
    want.iter().all(|w| t.iter().any(|x| x.eq_ignore_ascii_case(w)))
}

/// The Workload's labels as Consul's `Meta`, without weft's bookkeeping labels.
fn meta(i: &Instance) -> BTreeMap<&str, &str> {
    i.labels
        .iter()
        .filter(|(k, _)| !k.starts_with(super::register::CHECK_ID_LABEL))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

fn node(i: &Instance) -> Value {
    json!({ "ID": "", "Node": i.name, "Address": i.address.ip().to_string(), "Datacenter": i.cluster,
        "TaggedAddresses": {}, "Meta": {} })
}

fn agent_service(s: &CatalogService, i: &Instance) -> Value {
    json!({ "ID": i.name, "Service": s.name, "Tags": tags(s, i), "Address": i.address.ip().to_string(),
        "Port": i.address.port(), "Meta": meta(i), "Namespace": s.namespace, "Datacenter": i.cluster,
        "Weights": { "Passing": 1, "Warning": 1 }, "EnableTagOverride": false, "Kind": "" })
}

/// The instance's checks, Consul-shaped, and its status (Passing when it has none).
fn checks(st: &ApiState, cat: &Catalog, s: &CatalogService, i: &Instance) -> (Vec<Value>, Status) {
    let workload = format!("{}/{}", s.namespace, i.name);
    let results = st.monitor.checks(&workload);
    let ids = consul_ids(i, results.len());
    let worst = results.iter().map(|(_, r)| r.status).max().unwrap_or(Status::Passing);
    let index = super::index_of(cat);
    let list = results
        .into_iter()
        .zip(ids)
        .map(|((name, r), id)| {
            json!({ "Node": i.name, "CheckID": id, "Name": name, "Status": r.status.as_str(), "Notes": "",
                "Output": r.output, "ServiceID": i.name, "ServiceName": s.name, "ServiceTags": tags(s, i),
                "Type": "", "Namespace": s.namespace, "Definition": {}, "CreateIndex": index, "ModifyIndex": index })
        })
        .collect();
    (list, worst)
}

/// The instances of namespace `ns` in datacenter `dc`.
fn instances<'a>(
    cat: &'a Catalog,
    ns: &'a str,
    dc: &'a str,
) -> impl Iterator<Item = (&'a CatalogService, &'a Instance)> {
    cat.services
        .values()
        .filter(move |s| s.namespace == ns)
        .flat_map(move |s| s.instances.iter().filter(move |i| i.cluster == dc).map(move |i| (&**s, i)))
}

/// `GET /v1/catalog/datacenters`: this cluster, then every other cluster it knows, sorted.
pub async fn catalog_datacenters(State(st): S, headers: HeaderMap, uri: Uri) -> Result<Response, ApiError> {
    crate::api::require_read(&st, &headers)?;
    let cat = catalog_for(&st, &uri).await?;
    Ok(answer(&cat, json!(datacenters(&cat))))
}

/// `GET /v1/catalog/services`: every service of `?ns` that has instances in `?dc`, with their tags.
pub async fn catalog_services(State(st): S, headers: HeaderMap, uri: Uri) -> Result<Response, ApiError> {
    crate::api::require_read(&st, &headers)?;
    let p = params(&uri);
    let cat = catalog_for(&st, &uri).await?;
    let dc = dc_of(&cat, &p)?;
    let mut out = Map::new();
    for s in cat.services.values().filter(|s| s.namespace == p.ns) {
        let mut here = s.instances.iter().filter(|i| i.cluster == dc).peekable();
        if here.peek().is_none() {
            continue;
        }
        let mut t: Vec<String> = here.flat_map(|i| tags(s, i)).collect();
        t.sort();
        t.dedup();
        out.insert(s.name.clone(), json!(t));
    }
    Ok(answer(&cat, Value::Object(out)))
}

/// `GET /v1/catalog/service/<name>`: its instances in `?dc` (`?tag` filters), critical ones included.
pub async fn catalog_service(
    State(st): S,
    headers: HeaderMap,
    uri: Uri,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    crate::api::require_read(&st, &headers)?;
    let p = params(&uri);
    let cat = catalog_for(&st, &uri).await?;
    let dc = dc_of(&cat, &p)?;
    let index = super::index_of(&cat);
    let items: Vec<Value> = cat
        .services
        .get(&(p.ns.clone(), name))
        .map(|s| {
            s.instances
                .iter()
                .filter(|i| i.cluster == dc && has_tags(s, i, &p.tag))
                .map(|i| {
                    json!({
                        "ID": "", "Node": i.name, "Address": i.address.ip().to_string(), "Datacenter": i.cluster,
                        "TaggedAddresses": {}, "NodeMeta": {},
                        "ServiceID": i.name, "ServiceName": s.name, "ServiceAddress": i.address.ip().to_string(),
                        "ServicePort": i.address.port(), "ServiceTags": tags(s, i), "ServiceMeta": meta(i),
                        "ServiceKind": "", "ServiceWeights": { "Passing": 1, "Warning": 1 },
                        "ServiceEnableTagOverride": false, "Namespace": s.namespace,
                        "CreateIndex": index, "ModifyIndex": index,
                        "Healthy": i.healthy, "Identity": i.identity,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(answer(&cat, Value::Array(items)))
}

/// `GET /v1/catalog/nodes`: one node per instance in `?dc`, every namespace.
pub async fn catalog_nodes(State(st): S, headers: HeaderMap, uri: Uri) -> Result<Response, ApiError> {
    crate::api::require_read(&st, &headers)?;
    let cat = catalog_for(&st, &uri).await?;
    let dc = dc_of(&cat, &params(&uri))?;
    let mut nodes: BTreeMap<&str, Value> = BTreeMap::new();
    for i in cat.services.values().flat_map(|s| &s.instances).filter(|i| i.cluster == dc) {
        nodes.entry(i.name.as_str()).or_insert_with(|| node(i));
    }
    Ok(answer(&cat, Value::Array(nodes.into_values().collect())))
}

/// `GET /v1/health/service/<name>`: node, service and checks of each instance; `?passing`: only
/// instances whose checks all pass; `?tag` filters.
pub async fn health_service(
    State(st): S,
    headers: HeaderMap,
    uri: Uri,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    crate::api::require_read(&st, &headers)?;
    let p = params(&uri);
    let cat = catalog_for(&st, &uri).await?;
    let dc = dc_of(&cat, &p)?;
    let mut out = vec![];
    if let Some(s) = cat.services.get(&(p.ns.clone(), name)) {
        for i in s.instances.iter().filter(|i| i.cluster == dc && has_tags(s, i, &p.tag)) {
            let (list, worst) = checks(&st, &cat, s, i);
            if p.passing && worst != Status::Passing {
                continue;
            }
            out.push(json!({ "Node": node(i), "Service": agent_service(s, i), "Checks": list }));
        }
    }
    Ok(answer(&cat, Value::Array(out)))
}

/// `GET /v1/health/checks/<service>`: the checks of its instances.
pub async fn health_checks(
    State(st): S,
    headers: HeaderMap,
    uri: Uri,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    crate::api::require_read(&st, &headers)?;
    let p = params(&uri);
    let cat = catalog_for(&st, &uri).await?;
    let dc = dc_of(&cat, &p)?;
    let mut out = vec![];
    if let Some(s) = cat.services.get(&(p.ns.clone(), name)) {
        for i in s.instances.iter().filter(|i| i.cluster == dc) {
            out.extend(checks(&st, &cat, s, i).0);
        }
    }
    Ok(answer(&cat, Value::Array(out)))
}

/// `GET /v1/health/state/<any|passing|warning|critical>`: every check of `?ns` in that state.
pub async fn health_state(
    State(st): S,
    headers: HeaderMap,
    uri: Uri,
    Path(state): Path<String>,
) -> Result<Response, ApiError> {
    crate::api::require_read(&st, &headers)?;
    if !matches!(state.as_str(), "any" | "passing" | "warning" | "critical") {
        return Err(super::bad(format!("state: {state:?} is not any, passing, warning or critical")));
    }
    let p = params(&uri);
    let cat = catalog_for(&st, &uri).await?;
    let dc = dc_of(&cat, &p)?;
    let mut out = vec![];
    for (s, i) in instances(&cat, &p.ns, &dc) {
        out.extend(checks(&st, &cat, s, i).0.into_iter().filter(|c| state == "any" || c["Status"] == state.as_str()));
    }
    Ok(answer(&cat, Value::Array(out)))
}

/// `GET /v1/agent/services`: every instance of `?ns` in this cluster (the agent's), by ID.
pub async fn agent_services(State(st): S, headers: HeaderMap, uri: Uri) -> Result<Response, ApiError> {
    crate::api::require_read(&st, &headers)?;
    let p = params(&uri);
    let cat = catalog_for(&st, &uri).await?;
    let own = cat.mesh.cluster.name.clone();
    let out: Map<String, Value> =
        instances(&cat, &p.ns, &own).map(|(s, i)| (i.name.clone(), agent_service(s, i))).collect();
    Ok(answer(&cat, Value::Object(out)))
}

/// `GET /v1/agent/checks`: every check of `?ns` in this cluster (the agent's), by Consul check id.
pub async fn agent_checks(State(st): S, headers: HeaderMap, uri: Uri) -> Result<Response, ApiError> {
    crate::api::require_read(&st, &headers)?;
    let p = params(&uri);
    let cat = catalog_for(&st, &uri).await?;
    let own = cat.mesh.cluster.name.clone();
    let mut out = Map::new();
    for (s, i) in instances(&cat, &p.ns, &own) {
        for c in checks(&st, &cat, s, i).0 {
            out.insert(c["CheckID"].as_str().unwrap_or_default().to_string(), c);
        }
    }
    Ok(answer(&cat, Value::Object(out)))
}

/// `GET /v1/agent/self`: the control plane as the agent, with what clients read of it. No token
/// needed: py-consul's `agent.self()` sends none, and it shows only the cluster's name, weft's
/// version and this API's address.
pub async fn agent_self(State(st): S) -> Result<Response, ApiError> {
    let cat = st.catalog.borrow().clone();
    let dc = &st.mesh.cluster.name;
    let version = env!("CARGO_PKG_VERSION");
    let addr = st.api_addr;
    Ok(answer(
        &cat,
        json!({
            "Config": { "Datacenter": dc, "PrimaryDatacenter": dc, "NodeName": "weft-control", "NodeID": "",
                "Server": true, "Revision": "", "Version": version },
            "Member": { "Name": "weft-control", "Addr": addr.ip().to_string(), "Port": addr.port(), "Status": 1,
                "Tags": { "dc": dc, "role": "consul", "build": version } },
            "Meta": {},
            "DebugConfig": {},
            "Coord": null,
            "Stats": {},
        }),
    ))
}
