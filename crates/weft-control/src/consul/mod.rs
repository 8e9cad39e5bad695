//! The Consul-compatible HTTP API: what service registration and discovery tools (py-consul,
//! consul-template, the Go `api` package, `curl` scripts) call, answered from weft's store,
//! catalog and health monitor. docs/api.md has the compatibility table, endpoint by endpoint.
//!
//! ```text
//!   PUT  /v1/agent/service/register|deregister ─► register.rs ─► Store (Service + Workload)
//!   PUT  /v1/agent/check/pass|warn|fail|update ─► checks.rs ───► Monitor::ttl_update
//!   GET  /v1/catalog/*, /v1/health/*, /v1/agent/* ─► read.rs ◄── catalog watch (index, blocking)
//!   anything else under /v1/ ─► 501 naming what is not supported
//! ```
//!
//! - **Keys** of request bodies are matched as Consul's decoder matches them: in any case, with
//!   or without `_` (`Name`, `name`, `tagged_addresses`); `keys.rs`.
//! - **Reads** carry `X-Consul-Index` (the catalog's revision + 1), `X-Consul-KnownLeader: true`
//!   and `X-Consul-LastContact: 0`. With `?index=N`, a read waits until the index is no longer N
//!   or `?wait` (default 5m, at most 10m) passes: Consul's blocking query, on the catalog's watch.

mod checks;
mod keys;
mod read;
mod register;

use crate::api::{ApiError, ApiState};
use crate::catalog::Catalog;
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

pub use register::SOURCE_LABEL;

/// Consul's default `?wait` for a blocking query.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// Consul's longest `?wait`; longer values are cut to it.
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// The Consul routes, on the HTTP API's state.
pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v1/agent/service/register", put(register::register))
        .route("/v1/agent/service/deregister/{id}", put(register::deregister))
        .route("/v1/agent/check/{verdict}/{*check_id}", put(checks::update))
        .route("/v1/agent/services", get(read::agent_services))
        .route("/v1/agent/checks", get(read::agent_checks))
        .route("/v1/agent/self", get(read::agent_self))
        .route("/v1/catalog/datacenters", get(read::catalog_datacenters))
        .route("/v1/catalog/services", get(read::catalog_services))
        .route("/v1/catalog/service/{name}", get(read::catalog_service))
        .route("/v1/catalog/nodes", get(read::catalog_nodes))
        .route("/v1/health/service/{name}", get(read::health_service))
        .route("/v1/health/checks/{name}", get(read::health_checks))
        .route("/v1/health/state/{state}", get(read::health_state))
}

/// Every other path: under `/v1/`, 501 naming the call (a Consul client then says what it
/// tried); elsewhere 404. Both JSON, never an empty body.
pub async fn fallback(method: axum::http::Method, uri: Uri) -> ApiError {
    let path = uri.path();
    if path.starts_with("/v1/") {
        ApiError(
            StatusCode::NOT_IMPLEMENTED,
            format!(
                "{method} {path} is not supported by weft: its Consul-compatible API serves service registration and discovery only (agent services and checks, catalog, health); see docs/api.md#consul-compatibility"
            ),
        )
    } else {
        ApiError(StatusCode::NOT_FOUND, format!("{method} {path}: no such endpoint; see docs/api.md"))
    }
}

/// A known path with another method: 405, JSON.
pub async fn method_not_allowed(method: axum::http::Method, uri: Uri) -> ApiError {
    ApiError(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} {}: this endpoint does not take {method}; see docs/api.md", uri.path()),
    )
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

/// The `X-Consul-Index` of a catalog: its revision plus one (Consul's indexes are never 0).
pub fn index_of(cat: &Catalog) -> u64 {
    cat.revision + 1
}

/// A blocking query's `?index` and `?wait`.
#[derive(Debug, PartialEq)]
pub struct Blocking {
    pub index: u64,
    pub wait: Duration,
}

/// `?index=N&wait=W` of a request, if it has an `index`. `wait` takes weft's and Consul's usual
/// forms (`500ms`, `5s`, `5m`); absent: 5m; more than 10m: 10m.
pub fn blocking_of(uri: &Uri) -> Result<Option<Blocking>, ApiError> {
    let pairs = crate::api::query_pairs(uri);
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let Some(index) = get("index") else { return Ok(None) };
    let index = index.parse::<u64>().map_err(|_| {
        bad(format!("index: {index:?} is not a number; send the X-Consul-Index of the previous answer"))
    })?;
    let wait = match get("wait") {
        None | Some("") => DEFAULT_WAIT,
        Some(w) => w
            .parse::<weft_api::Duration>()
            .map(Duration::from)
            .map_err(|e| bad(format!("wait: {e} (e.g. wait=5s or wait=2m)")))?,
    };
    Ok(Some(Blocking { index, wait: wait.min(MAX_WAIT) }))
}

/// How long a request may run beyond the API's request limit: a blocking query's wait.
pub fn extra_time(uri: &Uri) -> Duration {
    blocking_of(uri).ok().flatten().map(|b| b.wait).unwrap_or_default()
}

/// The catalog to answer from: now, or for a blocking query once its index has moved from
/// `?index` (or its wait has passed). Waits on the catalog's watch; nothing polls.
pub async fn catalog_for(st: &ApiState, uri: &Uri) -> Result<Arc<Catalog>, ApiError> {
    let mut rx = st.catalog.clone();
    if let Some(b) = blocking_of(uri)? {
        // An index from before a restart (ahead of ours) answers at once, so the client resets.
        let moved = tokio::time::timeout(b.wait, rx.wait_for(|c| index_of(c) != b.index)).await;
        if let Ok(Ok(cat)) = moved {
            return Ok(cat.clone());
        }
    }
    let cat = rx.borrow().clone();
    Ok(cat)
}

/// A Consul read's answer: JSON with `X-Consul-Index`, `X-Consul-KnownLeader` and
/// `X-Consul-LastContact`.
pub fn answer(cat: &Catalog, body: Value) -> Response {
    let mut resp = Json(body).into_response();
    let h = resp.headers_mut();
    h.insert("x-consul-index", HeaderValue::from(index_of(cat)));
    h.insert("x-consul-knownleader", HeaderValue::from_static("true"));
    h.insert("x-consul-lastcontact", HeaderValue::from_static("0"));
    resp
}

#[cfg(test)]
mod tests;
