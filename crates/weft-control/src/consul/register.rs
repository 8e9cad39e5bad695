//! Consul's service registration, so that what a Consul user already does works:
//!
//! ```sh
//! curl -X PUT -H "X-Consul-Token: $TOKEN" localhost:15080/v1/agent/service/register -d '{
//!   "ID": "api-1", "Name": "api", "Address": "10.0.0.5", "Port": 8080, "Tags": ["v1"],
//!   "Check": { "HTTP": "http://10.0.0.5:8080/health", "Interval": "10s" } }'
//! ```
//!
//! A registration becomes a Workload (and its Service, if new) in the store, labelled
//! `weft.io/source: api`; deregistration deletes the Workload. Tags are the Workload's own: a
//! Service a registration creates carries none, so each instance answers with its own tags.

use super::keys::{canonical, Fields, Shape};
use crate::api::{ApiError, ApiState};
use crate::catalog::Instance;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use weft_api::kinds::{CheckSpec, ServiceSpec, WorkloadSpec};
use weft_api::resource::{Key, Kind, Metadata, Resource, Typed, Validate};
use weft_api::Duration;

pub const SOURCE_LABEL: &str = "weft.io/source";

/// A Workload label that keeps the `CheckID` a registration gave its check `<n>` (0-based), so
/// the check answers to it: `weft.io/check-id.0: redis-alive`.
pub const CHECK_ID_LABEL: &str = "weft.io/check-id.";

const CHECK: Fields = &[
    ("CheckID", Shape::Any),
    ("Name", Shape::Any),
    ("HTTP", Shape::Any),
    ("TCP", Shape::Any),
    ("GRPC", Shape::Any),
    ("H2PING", Shape::Any),
    ("Args", Shape::Any),
    ("TTL", Shape::Any),
    ("DockerContainerID", Shape::Any),
    ("AliasService", Shape::Any),
    ("Interval", Shape::Any),
    ("Timeout", Shape::Any),
    ("SuccessBeforePassing", Shape::Any),
    ("FailuresBeforeCritical", Shape::Any),
    ("DeregisterCriticalServiceAfter", Shape::Any),
];
const SIDECAR: Fields = &[("Port", Shape::Any)];
const CONNECT: Fields = &[("SidecarService", Shape::Struct(SIDECAR))];
const REGISTRATION: Fields = &[
    ("ID", Shape::Any),
    ("Name", Shape::Any),
    ("Tags", Shape::Any),
    ("Address", Shape::Any),
    ("Port", Shape::Any),
    ("Meta", Shape::Any),
    ("Namespace", Shape::Any),
    ("Check", Shape::Struct(CHECK)),
    ("Checks", Shape::List(CHECK)),
    ("Connect", Shape::Struct(CONNECT)),
];

/// The header that names the fields of a request weft did not read.
pub const IGNORED_HEADER: &str = "x-weft-ignored-fields";

/// Parses a Consul request body as `T`, its keys matched in any case; also returns the fields
/// that were ignored.
pub fn parse_body<T: serde::de::DeserializeOwned>(
    what: &str,
    body: &str,
    fields: Fields,
) -> Result<(T, Vec<String>), ApiError> {
    let v: Value = serde_json::from_str(body).map_err(|e| bad(format!("{what}: {e}")))?;
    let mut ignored = vec![];
    let v = canonical(v, Shape::Struct(fields), "", &mut ignored);
    let t = serde_json::from_value(v).map_err(|e| bad(format!("{what}: {e}")))?;
    Ok((t, ignored))
}

/// `body` as the answer, naming the ignored fields in [`IGNORED_HEADER`].
pub fn with_ignored(body: Value, ignored: &[String]) -> Response {
    let mut resp = Json(body).into_response();
    if !ignored.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&ignored.join(", ")) {
            resp.headers_mut().insert(IGNORED_HEADER, v);
        }
    }
    resp
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ConsulCheck {
    #[serde(rename = "CheckID")]
    check_id: Option<String>,
    name: Option<String>,
    #[serde(rename = "HTTP")]
    http: Option<String>,
    #[serde(rename = "TCP")]
    tcp: Option<String>,
    #[serde(rename = "GRPC")]
    grpc: Option<String>,
    #[serde(rename = "H2PING")]
    h2ping: Option<String>,
    args: Option<Vec<String>>,
    #[serde(rename = "TTL")]
    ttl: Option<String>,
    /// With `Args`: Consul's Docker check.
    #[serde(rename = "DockerContainerID")]
    docker_container_id: Option<String>,
    alias_service: Option<String>,
    interval: Option<String>,
    timeout: Option<String>,
    success_before_passing: Option<u32>,
    failures_before_critical: Option<u32>,
    deregister_critical_service_after: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SidecarService {
    port: u16,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Connect {
    sidecar_service: Option<SidecarService>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Registration {
    #[serde(rename = "ID")]
    id: Option<String>,
    name: String,
    #[serde(default)]
    tags: Vec<String>,
    address: String,
    port: u16,
    #[serde(default)]
    meta: BTreeMap<String, String>,
    namespace: Option<String>,
    check: Option<ConsulCheck>,
    #[serde(default)]
    checks: Option<Vec<ConsulCheck>>,
    connect: Option<Connect>,
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn duration(field: &str, v: &Option<String>) -> Result<Option<Duration>, ApiError> {
    v.as_ref().map(|s| s.parse::<Duration>().map_err(|e| bad(format!("{field}: {e}")))).transpose()
}

fn check(i: usize, c: ConsulCheck) -> Result<CheckSpec, ApiError> {
    let f = |k: &str| format!("Checks[{i}].{k}");
    let addr = |k: &str, v: Option<String>| {
        v.map(|s| s.parse().map_err(|_| bad(format!("{}: {s:?} is not ip:port", f(k))))).transpose()
    };
    let spec = CheckSpec {
        name: c.name.or(c.check_id).unwrap_or_else(|| format!("check-{i}")),
        http: c.http,
        tcp: addr("TCP", c.tcp)?,
        grpc: addr("GRPC", c.grpc)?,
        grpc_service: None,
        h2ping: addr("H2PING", c.h2ping)?,
        docker: match (&c.docker_container_id, &c.args) {
            (Some(container), Some(args)) => Some(weft_api::kinds::DockerCheck {
                container: container.clone(),
                args: args.clone(),
                socket: "/var/run/docker.sock".into(),
            }),
            _ => None,
        },
        script: if c.docker_container_id.is_some() { None } else { c.args },
        ttl: duration(&f("TTL"), &c.ttl)?,
        alias: c.alias_service,
        interval: duration(&f("Interval"), &c.interval)?,
        timeout: duration(&f("Timeout"), &c.timeout)?,
        success_threshold: c.success_before_passing.unwrap_or(1).max(1),
        failure_threshold: c.failures_before_critical.unwrap_or(1).max(1),
        deregister_critical_after: duration(
            &f("DeregisterCriticalServiceAfter"),
            &c.deregister_critical_service_after,
        )?,
    };
    spec.validate().map_err(|e| bad(format!("Checks[{i}]: {e}")))?;
    Ok(spec)
}

fn labels(meta: BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut l = meta;
    l.insert(SOURCE_LABEL.into(), "api".into());
    l
}

pub async fn register(State(st): State<Arc<ApiState>>, headers: HeaderMap, body: String) -> Result<Response, ApiError> {
    crate::api::require_write(&st, &headers)?;
    let (reg, ignored): (Registration, _) = parse_body("registration", &body, REGISTRATION)?;
    let namespace = reg.namespace.unwrap_or_else(|| "default".into());
    let id = reg.id.unwrap_or_else(|| reg.name.clone());
    if !weft_api::valid_name(&id) {
        return Err(bad(format!(
            "ID: {id:?} must be a DNS label (lowercase letters, digits, '-'): weft names the workload after it"
        )));
    }
    let address = reg.address.parse().map_err(|_| bad(format!("Address: {:?} is not an IP address", reg.address)))?;
    let mut checks = Vec::new();
    let mut labels = labels(reg.meta);
    for (i, c) in reg.check.into_iter().chain(reg.checks.unwrap_or_default()).enumerate() {
        if let Some(id) = c.check_id.as_ref().filter(|id| !id.is_empty()) {
            labels.insert(format!("{CHECK_ID_LABEL}{i}"), id.clone());
        }
        checks.push(check(i, c)?);
    }
    let sidecar = reg.connect.and_then(|c| c.sidecar_service).map(|s| std::net::SocketAddr::new(address, s.port));
    let mut write = vec![];
    let svc_key = Key { kind: Kind::Service, namespace: namespace.clone(), name: reg.name.clone() };
    if st.store.get(&svc_key)?.is_none() {
        write.push(Resource::Service(Typed {
            metadata: Metadata {
                name: reg.name.clone(),
                namespace: namespace.clone(),
                labels: self::labels(BTreeMap::new()),
                resource_version: None,
                creation_revision: None,
            },
            // Tags are per instance (the Workload's); the Service has none of its own.
            spec: ServiceSpec { ports: vec![], tags: vec![], export: false, ..Default::default() },
        }));
    }
    let spec = WorkloadSpec {
        service: reg.name,
        address,
        port: reg.port,
        service_account: None,
        sidecar,
        cluster: None,
        network: None,
        locality: None,
        tags: reg.tags,
        checks,
        visibility: None,
        weight: None,
    };
    spec.validate().map_err(|e| bad(e.to_string()))?;
    let (wanted, wl_ns, wl_id) =
        ((SocketAddr::new(spec.address, spec.port), spec.tags.clone()), namespace.clone(), id.clone());
    write.push(Resource::Workload(Typed {
        metadata: Metadata { name: id, namespace, labels, resource_version: None, creation_revision: None },
        spec,
    }));
    crate::api::admit(&st, &write)?;
    let applied = crate::api::blocking(&st.store, move |s| s.apply(write)).await?;
    settle(&st, &wl_ns, &wl_id, |i| i.is_some_and(|i| (i.address, &i.tags) == (wanted.0, &wanted.1))).await;
    let results: Vec<String> = applied.iter().map(|a| a.to_string()).collect();
    Ok(with_ignored(json!({ "results": results }), &ignored))
}

/// How long a registration waits for the catalog to show it.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits (at most [`SETTLE`], on the catalog's watch) until the instance `ns/id` is as `done`
/// wants it: a Consul agent's catalog shows a registration when the call returns, and clients
/// read their own writes right after. (A registry-file entry of the same name wins over a
/// registration; then the wait runs out and the call still succeeds.)
async fn settle(st: &ApiState, ns: &str, id: &str, done: impl Fn(Option<&Instance>) -> bool) {
    let mut rx = st.catalog.clone();
    let find = |c: &crate::catalog::Catalog| {
        done(c.services.values().filter(|s| s.namespace == ns).flat_map(|s| &s.instances).find(|i| i.name == id))
    };
    let _ = tokio::time::timeout(SETTLE, rx.wait_for(|c| find(c))).await;
}

#[derive(Deserialize)]
pub struct NsQuery {
    ns: Option<String>,
}

pub async fn deregister(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<NsQuery>,
) -> Result<Json<Value>, ApiError> {
    crate::api::require_write(&st, &headers)?;
    let key = Key { kind: Kind::Workload, namespace: q.ns.unwrap_or_else(|| "default".into()), name: id };
    let k = key.clone();
    crate::api::blocking(&st.store, move |s| s.delete(std::slice::from_ref(&k))).await?;
    settle(&st, &key.namespace, &key.name, |i| i.is_none()).await;
    Ok(Json(json!({ "results": [format!("{key} deleted")] })))
}
