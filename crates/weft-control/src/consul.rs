//! Consul-shaped registration endpoints, so that what a Consul user already does works:
//!
//! ```sh
//! curl -X PUT -H "authorization: Bearer $TOKEN" localhost:15080/v1/agent/service/register -d '{
//!   "ID": "api-1", "Name": "api", "Address": "10.0.0.5", "Port": 8080, "Tags": ["v1"],
//!   "Check": { "HTTP": "http://10.0.0.5:8080/health", "Interval": "10s" } }'
//! ```
//!
//! A registration becomes a Workload (and its Service, if new) in the store, labelled
//! `weft.io/source: api`; deregistration deletes the Workload.

use crate::api::{ApiError, ApiState};
use crate::tokens::{Grant, TokenError};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use weft_api::kinds::{CheckSpec, ServiceSpec, WorkloadSpec};
use weft_api::resource::{Key, Kind, Metadata, Resource, Typed, Validate};
use weft_api::Duration;

pub const SOURCE_LABEL: &str = "weft.io/source";

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
    checks: Vec<ConsulCheck>,
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

pub async fn register(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: String,
) -> Result<Json<Value>, ApiError> {
    crate::api::require_write(&st, &headers)?;
    let reg: Registration = serde_json::from_str(&body).map_err(|e| bad(format!("registration: {e}")))?;
    let namespace = reg.namespace.unwrap_or_else(|| "default".into());
    let id = reg.id.unwrap_or_else(|| reg.name.clone());
    if !weft_api::valid_name(&id) {
        return Err(bad(format!(
            "ID: {id:?} must be a DNS label (lowercase letters, digits, '-'): weft names the workload after it"
        )));
    }
    let address = reg.address.parse().map_err(|_| bad(format!("Address: {:?} is not an IP address", reg.address)))?;
    let mut checks = Vec::new();
    for (i, c) in reg.check.into_iter().chain(reg.checks).enumerate() {
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
                labels: labels(BTreeMap::new()),
                resource_version: None,
            },
            spec: ServiceSpec { ports: vec![], tags: reg.tags.clone() },
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
    };
    spec.validate().map_err(|e| bad(e.to_string()))?;
    write.push(Resource::Workload(Typed {
        metadata: Metadata { name: id, namespace, labels: labels(reg.meta), resource_version: None },
        spec,
    }));
    crate::api::admit(&st, &write)?;
    let applied = crate::api::blocking(&st.store, move |s| s.apply(write)).await?;
    Ok(Json(json!({ "results": applied.iter().map(|a| a.to_string()).collect::<Vec<_>>() })))
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
    Ok(Json(json!({ "results": [format!("{key} deleted")] })))
}

/// `{"api": ["v1", "v2"], ...}` for one namespace, as Consul's catalog answers.
pub async fn services(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(q): Query<NsQuery>,
) -> Result<Json<Value>, ApiError> {
    crate::api::require_read(&st, &headers)?;
    let ns = q.ns.unwrap_or_else(|| "default".into());
    let cat = st.catalog.borrow().clone();
    let mut out = serde_json::Map::new();
    for s in cat.services.values().filter(|s| s.namespace == ns) {
        let mut tags: Vec<String> =
            s.tags.iter().chain(s.instances.iter().flat_map(|i| i.tags.iter())).cloned().collect();
        tags.sort();
        tags.dedup();
        out.insert(s.name.clone(), json!(tags));
    }
    Ok(Json(Value::Object(out)))
}

/// The instances of one service, Consul-shaped.
pub async fn service(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<NsQuery>,
) -> Result<Json<Value>, ApiError> {
    crate::api::require_read(&st, &headers)?;
    let ns = q.ns.unwrap_or_else(|| "default".into());
    let cat = st.catalog.borrow().clone();
    let Some(s) = cat.services.get(&(ns.clone(), name.clone())) else {
        return Ok(Json(json!([])));
    };
    let items: Vec<Value> = s
        .instances
        .iter()
        .map(|i| {
            json!({
                "ServiceID": i.name, "ServiceName": s.name, "ServiceAddress": i.address.ip().to_string(),
                "ServicePort": i.address.port(), "ServiceTags": i.tags, "ServiceMeta": i.labels,
                "Datacenter": i.cluster, "Namespace": ns, "Healthy": i.healthy, "Identity": i.identity,
            })
        })
        .collect();
    Ok(Json(Value::Array(items)))
}

/// Consul's TTL updates: `PUT /v1/agent/check/pass|warn|fail/<namespace>/<workload>/<check name>`.
pub async fn ttl(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((verdict, check_id)): Path<(String, String)>,
    body: String,
) -> Result<Json<Value>, ApiError> {
    may_report(&st, &headers, &check_id)?;
    let status = match verdict.as_str() {
        "pass" => weft_health::Status::Passing,
        "warn" => weft_health::Status::Warning,
        "fail" => weft_health::Status::Critical,
        other => return Err(bad(format!("{other:?}: use pass, warn or fail"))),
    };
    st.monitor
        .ttl_update(&check_id, status, body.trim())
        .map_err(|e| ApiError(StatusCode::NOT_FOUND, e.to_string()))?;
    Ok(Json(json!({ "check": check_id, "status": status.to_string() })))
}

/// TTL reports come from an admin, or from the workload itself: a bootstrap token may report the
/// checks of workloads that run as its identity (`<namespace>/<workload>/<check>`), and only those.
fn may_report(st: &ApiState, headers: &HeaderMap, check_id: &str) -> Result<(), ApiError> {
    let (namespace, service_account) = match crate::api::grant(st, headers)? {
        Grant::Admin => return Ok(()),
        Grant::Read => {
            return Err(TokenError::Forbidden(
                "reporting a TTL check needs an admin token or the workload's bootstrap token",
            )
            .into())
        }
        Grant::Bootstrap { namespace, service_account } => (namespace, service_account),
    };
    let mut parts = check_id.splitn(3, '/');
    let (ns, workload) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let identity = format!("spiffe://{}/ns/{namespace}/sa/{service_account}", st.mesh.trust_domain);
    let cat = st.catalog.borrow().clone();
    let own = cat
        .services
        .values()
        .filter(|s| s.namespace == ns)
        .flat_map(|s| &s.instances)
        .any(|i| i.name == workload && i.identity == identity);
    if own {
        Ok(())
    } else {
        Err(TokenError::Forbidden("a bootstrap token may only report the checks of workloads that run as its identity")
            .into())
    }
}
