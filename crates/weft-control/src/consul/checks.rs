//! Consul's TTL check updates, by any of the ids a check answers to:
//!
//! | id | names |
//! |---|---|
//! | `service:<workload>` | the workload's check, when it has one (Consul's default `CheckID`) |
//! | `service:<workload>:<n>` | its `n`th check, from 1, when it has several |
//! | the `CheckID` given at registration | that check |
//! | `<namespace>/<workload>/<check name>` | weft's own form |
//!
//! The first three are looked up in `?ns=` (default `default`). `PUT
//! /v1/agent/check/pass|warn|fail/<id>?note=<text>` and `PUT /v1/agent/check/update/<id>` with
//! `{"Status": "passing", "Output": "..."}`.

use super::keys::{Fields, Shape};
use super::register::{parse_body, CHECK_ID_LABEL};
use crate::api::{ApiError, ApiState};
use crate::catalog::{Catalog, Instance};
use crate::tokens::{Grant, TokenError};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use weft_health::Status;

/// The Consul check ids of an instance's checks, in spec order (`count` checks).
pub fn consul_ids(instance: &Instance, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| match instance.labels.get(&format!("{CHECK_ID_LABEL}{i}")) {
            Some(id) => id.clone(),
            None if count == 1 => format!("service:{}", instance.name),
            None => format!("service:{}:{}", instance.name, i + 1),
        })
        .collect()
}

/// `id` as weft's `<namespace>/<workload>/<check name>`.
fn resolve(st: &ApiState, cat: &Catalog, ns: &str, id: &str) -> String {
    for inst in cat.services.values().filter(|s| s.namespace == ns).flat_map(|s| &s.instances) {
        let workload = format!("{ns}/{}", inst.name);
        let checks = st.monitor.checks(&workload);
        let ids = consul_ids(inst, checks.len());
        if let Some(i) = ids.iter().position(|c| c == id) {
            return format!("{workload}/{}", checks[i].0);
        }
    }
    id.to_string()
}

const UPDATE: Fields = &[("Status", Shape::Any), ("Output", Shape::Any)];

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Update {
    status: String,
    #[serde(default)]
    output: String,
}

fn status(s: &str) -> Result<Status, ApiError> {
    match s {
        "passing" => Ok(Status::Passing),
        "warning" => Ok(Status::Warning),
        "critical" => Ok(Status::Critical),
        other => Err(super::bad(format!("Status: {other:?} is not passing, warning or critical"))),
    }
}

/// `PUT /v1/agent/check/{pass|warn|fail|update}/{id}`.
pub async fn update(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    uri: Uri,
    Path((verdict, check_id)): Path<(String, String)>,
    body: String,
) -> Result<Response, ApiError> {
    crate::api::grant(&st, &headers)?;
    let pairs = crate::api::query_pairs(&uri);
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let ns = get("ns").unwrap_or_else(|| "default".into());
    let note = get("note");
    let (status, output, ignored) = match verdict.as_str() {
        "pass" => (Status::Passing, note.unwrap_or_else(|| body.trim().into()), vec![]),
        "warn" => (Status::Warning, note.unwrap_or_else(|| body.trim().into()), vec![]),
        "fail" => (Status::Critical, note.unwrap_or_else(|| body.trim().into()), vec![]),
        "update" => {
            let (u, ignored): (Update, _) = parse_body("check update", &body, UPDATE)?;
            (status(&u.status)?, u.output, ignored)
        }
        other => {
            return Err(ApiError(
                StatusCode::NOT_IMPLEMENTED,
                format!("PUT /v1/agent/check/{other}/...: not supported by weft; checks are declared with their service (register it again with the new checks); TTL checks take pass, warn, fail and update"),
            ))
        }
    };
    let cat = st.catalog.borrow().clone();
    let id = resolve(&st, &cat, &ns, &check_id);
    may_report(&st, &cat, &headers, &id)?;
    st.monitor.ttl_update(&id, status, &output).map_err(|e| ApiError(StatusCode::NOT_FOUND, e.to_string()))?;
    Ok(super::register::with_ignored(json!({ "check": id, "status": status.to_string() }), &ignored))
}

/// TTL reports come from an admin, or from the workload itself: a bootstrap token may report the
/// checks of workloads that run as its identity (`<namespace>/<workload>/<check>`), and only those.
fn may_report(st: &ApiState, cat: &Catalog, headers: &HeaderMap, check_id: &str) -> Result<(), ApiError> {
    let (namespace, service_account) = match crate::api::grant(st, headers)? {
        Grant::Admin | Grant::Operator => return Ok(()),
        Grant::Writer { namespaces } if namespaces.iter().any(|n| check_id.split('/').next() == Some(n)) => {
            return Ok(())
        }
        Grant::Read | Grant::Writer { .. } | Grant::Link { .. } | Grant::LinkStream { .. } => {
            return Err(TokenError::Forbidden(
                "reporting a TTL check needs an operator or admin token, a writer token of the workload's namespace, or the workload's bootstrap token",
            )
            .into())
        }
        Grant::Bootstrap { namespace, service_account } => (namespace, service_account),
    };
    let mut parts = check_id.splitn(3, '/');
    let (ns, workload) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let identity = format!("spiffe://{}/ns/{namespace}/sa/{service_account}", st.mesh.trust_domain);
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
