//! Tokens and the audit log in the HTTP API, all admin only: `POST /v1/tokens` (create; the
//! token is shown once, only its SHA-256 is kept), `GET /v1/tokens` (the records),
//! `DELETE /v1/tokens/{id-or-name}` (revoke), `GET /v1/audit?limit=N` (the last writes).

use crate::api::{bad, require_admin, ApiError, ApiState};
use crate::audit::Note;
use crate::tokens::Grant;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

type S = State<Arc<ApiState>>;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v1/tokens", get(list_tokens).post(create_token))
        .route("/v1/tokens/{id}", delete(revoke_token))
        .route("/v1/audit", get(audit))
}

/// A writer's namespaces: at least one, DNS labels, not the control plane's own.
fn writer_namespaces(ns: Option<Vec<String>>) -> Result<Vec<String>, ApiError> {
    let ns = ns.unwrap_or_default();
    if ns.is_empty() {
        return Err(bad("namespaces: a writer token names the namespaces it may write, e.g. [\"shop\"]"));
    }
    for n in &ns {
        if !weft_api::valid_name(n) {
            return Err(bad(format!("namespaces: {n:?} is not a DNS label (lower case letters, digits, '-')")));
        }
        if weft_identity::control::is_reserved_namespace(n) {
            return Err(bad(format!(
                "namespaces: {n:?} holds the control plane's own and mesh-wide settings; use an operator token instead"
            )));
        }
    }
    Ok(ns)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    /// The role: admin, operator, read (or read-only), writer, or bootstrap.
    #[serde(alias = "role")]
    kind: String,
    /// A name for `weft token list` and the audit log; default `<role>-<id>`.
    #[serde(default)]
    name: Option<String>,
    /// Writers: the namespaces they may write.
    #[serde(default)]
    namespaces: Option<Vec<String>>,
    /// `<namespace>/<service-account>`, for bootstrap tokens.
    identity: Option<String>,
    /// e.g. 24h; absent: no expiry.
    ttl: Option<weft_api::Duration>,
    /// Bootstrap tokens of a remote cluster's proxies (primary-remote): the cluster, one of
    /// MeshConfig `remoteClusters` (or this cluster's own name).
    #[serde(default)]
    cluster: Option<String>,
}

async fn create_token(State(st): S, headers: HeaderMap, body: String) -> Result<Response, ApiError> {
    require_admin(&st, &headers)?;
    // Any content type: curl users forget the header.
    let req: TokenRequest = serde_json::from_str(&body).map_err(|e| bad(format!("token request: {e}")))?;
    if let Some(name) = &req.name {
        if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
        {
            return Err(bad(format!(
                "name: {name:?} must be 1 to 64 letters, digits, '-', '_', '.' or '@' (e.g. ci-deploy)"
            )));
        }
    }
    let namespaces = req.namespaces.clone();
    if namespaces.is_some() && req.kind != "writer" {
        return Err(bad(format!("namespaces: only writer tokens name namespaces, not {}", req.kind)));
    }
    let grant = match (req.kind.as_str(), req.identity) {
        ("admin", None) => Grant::Admin,
        ("operator", None) => Grant::Operator,
        ("read" | "read-only", None) => Grant::Read,
        ("writer", None) => Grant::Writer { namespaces: writer_namespaces(namespaces)? },
        ("bootstrap", Some(id)) => {
            let (ns, sa) =
                id.split_once('/').ok_or_else(|| bad("identity: write it as <namespace>/<service-account>"))?;
            if !weft_api::valid_name(ns) || !weft_api::valid_name(sa) {
                return Err(bad("identity: namespace and service account must be DNS labels"));
            }
            if weft_identity::control::is_reserved_namespace(ns) {
                return Err(bad(format!(
                    "identity: the namespace {ns:?} is reserved for the control plane's own identity; pick another namespace"
                )));
            }
            Grant::Bootstrap { namespace: ns.into(), service_account: sa.into() }
        }
        ("bootstrap", None) => {
            return Err(bad("identity: a bootstrap token names an identity: <namespace>/<service-account>"))
        }
        (k @ ("admin" | "operator" | "read" | "read-only" | "writer"), Some(_)) => {
            return Err(bad(format!("identity: only bootstrap tokens name an identity, not {k}")))
        }
        (other, _) => return Err(bad(format!("kind: {other:?} is not admin, operator, read, writer or bootstrap"))),
    };
    let cluster = match req.cluster {
        Some(c) if !matches!(grant, Grant::Bootstrap { .. }) => {
            return Err(bad(format!("cluster: only bootstrap tokens name a cluster, not {} ({c:?})", req.kind)))
        }
        Some(c) => {
            let mesh = st.catalog.borrow().mesh.clone();
            // A MeshConfig applied a moment ago is in the store before the catalog is rebuilt:
            // a script that declares a remote cluster and then makes its token must not race.
            let stored = st.store.list(Some(weft_api::resource::Kind::MeshConfig), None).unwrap_or_default();
            let declared_in_store = stored.iter().any(|r| match r {
                weft_api::resource::Resource::MeshConfig(m) => m.spec.remote_clusters.iter().any(|r| r.name == c),
                _ => false,
            });
            if c == mesh.cluster.name {
                None
            } else if declared_in_store || mesh.remote_clusters.iter().any(|r| r.name == c) {
                Some(c)
            } else {
                let known: Vec<&str> = mesh.remote_clusters.iter().map(|r| r.name.as_str()).collect();
                return Err(bad(format!(
                    "cluster: {c:?} is neither this cluster ({:?}) nor one of its remote clusters {known:?}; declare it first in MeshConfig `remoteClusters` (name, network, gateways)",
                    mesh.cluster.name
                )));
            }
        }
        None => None,
    };
    let (token, record) = st
        .tokens
        .create(grant, req.ttl.map(Into::into), cluster, req.name)
        .map_err(|(_, e)| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("recording the token: {e}")))?;
    let record = record.ok_or_else(|| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "token not recorded".into()))?;
    let note = Note(format!("created token {} ({}, id {})", record.name, record.role, record.id));
    let body =
        json!({ "token": token, "id": record.id, "name": record.name, "role": record.role, "expires": record.expires });
    Ok((axum::Extension(note), Json(body)).into_response())
}

async fn list_tokens(State(st): S, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    require_admin(&st, &headers)?;
    Ok(Json(json!({ "tokens": st.tokens.store().list() })))
}

async fn revoke_token(State(st): S, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ApiError> {
    require_admin(&st, &headers)?;
    use crate::token_store::RevokeError;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let r = st.tokens.store().revoke(&id, now).map_err(|e| {
        let status = match &e {
            RevokeError::NotFound(_) => StatusCode::NOT_FOUND,
            RevokeError::Ambiguous(..) => StatusCode::CONFLICT,
            RevokeError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    })?;
    let note = Note(format!("revoked token {} ({}, id {})", r.name, r.role, r.id));
    Ok((axum::Extension(note), Json(json!({ "revoked": r }))).into_response())
}

#[derive(Deserialize)]
struct AuditQuery {
    limit: Option<usize>,
}

async fn audit(State(st): S, headers: HeaderMap, Query(q): Query<AuditQuery>) -> Result<Json<Value>, ApiError> {
    require_admin(&st, &headers)?;
    let limit = q.limit.unwrap_or(100).min(crate::audit::KEEP);
    Ok(Json(json!({ "entries": st.audit.recent(limit) })))
}
