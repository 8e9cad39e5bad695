//! The HTTP API (JSON) that the CLI uses; documented in docs/api.md. Every call needs a token:
//! `read` tokens may read, `writer` tokens may also write resources of their namespaces,
//! `operator` tokens may write every resource (not tokens or the CA), `admin` tokens may do
//! everything. Every write is recorded in the audit log (`audit.rs`). Errors are JSON `{"error": "..."}`
//! with the field path and the fix, and the right status (400 invalid, 401/403 token, 404, 409
//! conflict).

use crate::consul;
use crate::discovery::Proxies;
use crate::tokens::{Grant, TokenError, Tokens, Verified};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use weft_api::resource::{parse_documents, Key, Kind};
use weft_identity::Authority;
use weft_store::{Store, StoreError};

pub struct ApiState {
    pub store: Store,
    pub tokens: Arc<Tokens>,
    pub proxies: Proxies,
    pub ca: Arc<crate::rotation::CaState>,
    pub catalog: tokio::sync::watch::Receiver<Arc<crate::catalog::Catalog>>,
    pub monitor: weft_health::Monitor,
    pub enable_script_checks: bool,
    /// The MeshConfig the CA and identities were set up with.
    pub mesh: weft_api::kinds::MeshConfigSpec,
    /// Where this API listens (Consul's `/v1/agent/self` names it).
    pub api_addr: std::net::SocketAddr,
    /// The web dashboard, when it runs (`POST /v1/dashboard/login` makes login URLs for it).
    pub dashboard: Option<Arc<crate::dashboard::Dashboard>>,
    /// Where the gRPC listener is (a link credential names it as the federation address).
    pub grpc_addr: std::net::SocketAddr,
    pub federation: Arc<crate::federation::Federation>,
    /// Every write, with the caller's token name.
    pub audit: Arc<crate::audit::Audit>,
    /// The control plane's own DNS server, when it runs one (`weft diagnose` queries it).
    pub dns_addr: Option<std::net::SocketAddr>,
    /// Golden metrics history (`/v1/stats`, `/v1/edges`; see [`crate::stats`]).
    pub stats: crate::stats::Stats,
}

/// Rules the control plane adds to a write: script/Docker checks only when enabled; the trust
/// domain and cluster name fixed after first start (certificates and identities depend on them).
pub fn admit(st: &ApiState, resources: &[weft_api::resource::Resource]) -> Result<(), ApiError> {
    admit_rules(st.enable_script_checks, &st.mesh, resources).map_err(bad)
}

/// [`admit`]'s rules, also applied to the registry file's contents.
pub fn admit_rules(
    enable_script_checks: bool,
    mesh: &weft_api::kinds::MeshConfigSpec,
    resources: &[weft_api::resource::Resource],
) -> Result<(), String> {
    use weft_api::resource::Resource;
    for r in resources {
        if let Resource::Link(_) = r {
            return Err(format!(
                "{}: a Link is made with `weft link apply -f <credential>`, which checks the credential first; it cannot be applied as a resource",
                r.key()
            ));
        }
        if let Resource::Workload(w) = r {
            if weft_identity::control::is_reserved_namespace(&w.metadata.namespace) {
                return Err(format!(
                    "{}: metadata.namespace: {:?} is reserved for the control plane's own identity (a Workload there would run as it); pick another namespace",
                    r.key(),
                    w.metadata.namespace
                ));
            }
        }
        match r {
            Resource::Workload(w) if !enable_script_checks => {
                if let Some(i) = w.spec.checks.iter().position(|c| c.script.is_some() || c.docker.is_some()) {
                    return Err(format!(
                        "{}: spec.checks[{i}]: script and Docker checks run commands on the control plane's host and are off; start `weft control --enable-script-checks` to allow them",
                        r.key()
                    ));
                }
            }
            Resource::MeshConfig(m)
                if m.spec.trust_domain != mesh.trust_domain || m.spec.cluster.name != mesh.cluster.name =>
            {
                return Err(format!(
                    "{}: spec.trustDomain / spec.cluster.name cannot change after first start (certificates and identities depend on them); they are {:?} / {:?}",
                    r.key(),
                    mesh.trust_domain,
                    mesh.cluster.name
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

type S = State<Arc<ApiState>>;

pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::Invalid(_) => StatusCode::BAD_REQUEST,
            StoreError::Conflict { .. } => StatusCode::CONFLICT,
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        let status =
            if matches!(e, TokenError::Forbidden(_)) { StatusCode::FORBIDDEN } else { StatusCode::UNAUTHORIZED };
        ApiError(status, e.to_string())
    }
}

/// Runs a store write off the async threads: it waits for a durable commit on disk.
pub async fn blocking<T: Send + 'static>(
    store: &Store,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("store write: {e}")))?
        .map_err(ApiError::from)
}

pub(crate) fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

/// Consul's token header.
pub const CONSUL_TOKEN: &str = "x-consul-token";

/// The grant of the token a request carries, in any of the forms Consul clients send:
/// `authorization: Bearer <token>` (the scheme in any case), `X-Consul-Token: <token>`, or
/// `?token=<token>` (which [`token_from_query`] moves into `X-Consul-Token`).
pub fn grant(st: &ApiState, headers: &HeaderMap) -> Result<Grant, ApiError> {
    verified(st, headers).map(|v| v.grant)
}

/// [`grant`], with the token's record (name, id, role).
pub fn verified(st: &ApiState, headers: &HeaderMap) -> Result<Verified, ApiError> {
    Ok(verify_token(st, headers)?)
}

fn verify_token(st: &ApiState, headers: &HeaderMap) -> Result<Verified, TokenError> {
    if let Some(v) = headers.get(axum::http::header::AUTHORIZATION) {
        return st.tokens.verify_header_full(Some(v.to_str().map_err(|_| TokenError::Invalid)?));
    }
    match headers.get(CONSUL_TOKEN) {
        Some(v) => st.tokens.verify_full(v.to_str().map_err(|_| TokenError::Invalid)?.trim()),
        None => Err(TokenError::Missing),
    }
}

/// Consul's `?token=<token>`: carried on as `X-Consul-Token` when the request has no token
/// header, so every guard reads one place.
async fn token_from_query(mut req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let headers = req.headers();
    if !headers.contains_key(axum::http::header::AUTHORIZATION) && !headers.contains_key(CONSUL_TOKEN) {
        let token = query_pairs(req.uri()).into_iter().find_map(|(k, v)| (k == "token").then_some(v));
        if let Some(v) = token.and_then(|t| axum::http::HeaderValue::from_str(&t).ok()) {
            req.headers_mut().insert(CONSUL_TOKEN, v);
        }
    }
    next.run(req).await
}

/// The pairs of a request's query string, percent-decoded (none if it does not parse).
pub fn query_pairs(uri: &axum::http::Uri) -> Vec<(String, String)> {
    Query::<Vec<(String, String)>>::try_from_uri(uri).map(|q| q.0).unwrap_or_default()
}

pub fn require_read(st: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    match grant(st, headers)? {
        Grant::Admin | Grant::Operator | Grant::Read | Grant::Writer { .. } => Ok(()),
        Grant::Bootstrap { .. } => {
            Err(TokenError::Forbidden("a bootstrap token is for proxies; use a read or admin token").into())
        }
        Grant::Link { .. } | Grant::LinkStream { .. } => {
            Err(TokenError::Forbidden("a link secret is for linked control planes; use a read or admin token").into())
        }
    }
}

/// Writes that are not one namespace's resources (registrations, links): admin or operator.
pub fn require_write(st: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    match grant(st, headers)? {
        Grant::Admin | Grant::Operator => Ok(()),
        Grant::Writer { .. } => Err(TokenError::Forbidden(
            "a namespace writer may only apply and delete resources of its namespaces; this needs an operator or admin token",
        )
        .into()),
        _ => Err(TokenError::Forbidden("writing needs an operator or admin token").into()),
    }
}

/// Tokens, the CA and the audit log: admin only.
pub fn require_admin(st: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    match grant(st, headers)? {
        Grant::Admin => Ok(()),
        _ => Err(TokenError::Forbidden("tokens, the CA and the audit log need an admin token").into()),
    }
}

/// Writes of these resources (kind, namespace): admin and operator tokens may write any; a
/// writer only namespaced kinds (not MeshConfig, which is mesh-wide) in its namespaces.
pub fn require_write_of<'a>(
    st: &ApiState,
    headers: &HeaderMap,
    targets: impl IntoIterator<Item = (Kind, &'a str)>,
) -> Result<(), ApiError> {
    let namespaces = match grant(st, headers)? {
        Grant::Admin | Grant::Operator => return Ok(()),
        Grant::Writer { namespaces } => namespaces,
        _ => return Err(TokenError::Forbidden("writing needs a writer, operator or admin token").into()),
    };
    for (kind, ns) in targets {
        if kind == Kind::MeshConfig {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                "this token may not do that: MeshConfig is mesh-wide and a namespace writer may not change it; use an operator or admin token".into(),
            ));
        }
        if !namespaces.iter().any(|n| n == ns) {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                format!("this token may not do that: it may write the namespaces {namespaces:?}, not {ns:?} ({kind}); use a writer token of {ns:?}, or an operator token"),
            ));
        }
    }
    Ok(())
}

/// Records every write (see [`crate::audit`]): who (the token's name and role), what (method,
/// path without its query, the handler's [`crate::audit::Note`]) and the answer's status.
async fn audit_writes(State(st): S, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use axum::http::Method;
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let (method, path) = (req.method().to_string(), req.uri().path().to_string());
    let who = match verify_token(&st, req.headers()) {
        Ok(v) => {
            let (name, id) = v.record.map_or_else(|| (v.grant.role().to_string(), None), |r| (r.name, Some(r.id)));
            (name, id, Some(v.grant.role().to_string()))
        }
        Err(TokenError::Missing) => ("(none)".to_string(), None, None),
        Err(_) => ("(invalid)".to_string(), None, None),
    };
    let resp = next.run(req).await;
    let detail = resp.extensions().get::<crate::audit::Note>().map(|n| n.0.clone());
    st.audit.record(crate::audit::Entry {
        time_ms: crate::audit::now_ms(),
        token: who.0,
        token_id: who.1,
        role: who.2,
        method,
        path,
        status: resp.status().as_u16(),
        detail,
    });
    resp
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/v1/apply", post(apply))
        .route("/v1/resources", get(list))
        .route("/v1/resources/{kind}/{namespace}/{name}", get(get_one).delete(delete_one))
        .route("/v1/proxies", get(proxies))
        .route("/v1/proxies/{id}/config", get(crate::tap_api::proxy_config))
        .route("/v1/tap", get(crate::tap_api::tap))
        .merge(crate::tokens_api::routes())
        .route("/v1/ca", get(ca))
        .route("/v1/ca/rotate", post(rotate).delete(abort_rotation))
        .merge(crate::dashboard::api_routes())
        .route("/v1/catalog", get(catalog))
        .route("/v1/services/{namespace}/{name}/routes", get(crate::routes_api::effective))
        .route("/v1/health/workload/{namespace}/{name}", get(workload_health))
        .route("/v1/diagnose", get(crate::diagnose::handler))
        .merge(crate::links::routes())
        .merge(crate::stats_api::routes())
        .merge(consul::routes())
        .route("/live", get(|| async { "live\n" }))
        .fallback(consul::fallback)
        .method_not_allowed_fallback(consul::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), audit_writes))
        .layer(axum::middleware::from_fn(token_from_query))
        .with_state(state)
}

async fn apply(State(st): S, headers: HeaderMap, body: String) -> Result<Response, ApiError> {
    // A token that may not write anything is refused before the body is read.
    require_write_of(&st, &headers, std::iter::empty::<(Kind, &str)>())?;
    let resources = parse_documents(&body).map_err(|e| bad(e.to_string()))?;
    require_write_of(&st, &headers, resources.iter().map(|r| (r.kind(), r.metadata().namespace.as_str())))?;
    admit(&st, &resources)?;
    let applied = blocking(&st.store, move |s| s.apply(resources)).await?;
    let results: Vec<String> = applied.iter().map(|a| a.to_string()).collect();
    let note = crate::audit::Note(results.join("; "));
    Ok((axum::Extension(note), Json(json!({ "results": results }))).into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    kind: Option<String>,
    namespace: Option<String>,
}

fn kind(s: &str) -> Result<Kind, ApiError> {
    Kind::parse_loose(s).ok_or_else(|| {
        bad(format!(
            "unknown kind {s:?}: use MeshConfig, Service, Workload, Link, HTTPRoute, GRPCRoute, TCPRoute, BackendPolicy, ResiliencePolicy or PeerAuthentication"
        ))
    })
}

/// A resource as the API shows it: a Link's secret is never shown (it lets its holder read this
/// cluster's exported services from the peer).
fn shown(r: &weft_api::resource::Resource) -> weft_api::resource::Object {
    let mut o = r.to_object();
    if let Some(secret) = o.spec.get_mut("secret") {
        if r.kind() == Kind::Link {
            *secret = Value::String("(hidden)".into());
        }
    }
    o
}

/// [`shown`], with a `status` for the kinds that have one: a BackendPolicy's condition, and on a
/// Service the BackendPolicy in force and every one that names it (from the catalog in force); a
/// ResiliencePolicy's, whether its target exists (see [`crate::resilience::status`]; `all` is
/// every stored resource).
pub(crate) fn with_status(
    st: &ApiState,
    r: &weft_api::resource::Resource,
    all: &[&weft_api::resource::Resource],
) -> Value {
    // Routes carry their Gateway API conditions (`routes_api`); the kinds below add theirs.
    let mut v = crate::routes_api::with_status(st, r, shown(r));
    let m = r.metadata();
    let status = match r.kind() {
        Kind::BackendPolicy => {
            let cat = st.catalog.borrow();
            let p = cat.policies.iter().find(|p| p.namespace == m.namespace && p.name == m.name);
            // Applied but not in the catalog yet (the catalog follows the store within moments).
            let conditions = match p {
                Some(p) => json!([{ "type": p.condition.kind(), "message": p.message() }]),
                None => json!([{ "type": "Pending", "message": "Pending: not in the catalog yet" }]),
            };
            Some(json!({ "conditions": conditions }))
        }
        Kind::Service => {
            let cat = st.catalog.borrow();
            let target = format!("{}/{}", m.namespace, m.name);
            let naming: Vec<Value> = cat
                .policies
                .iter()
                .filter(|p| p.target == target)
                .map(|p| json!({ "name": p.name, "condition": p.message() }))
                .collect();
            let in_force =
                cat.services.get(&(m.namespace.clone(), m.name.clone())).and_then(|s| s.backend_policy.clone());
            let outlier =
                cat.services.get(&(m.namespace.clone(), m.name.clone())).and_then(|s| s.outlier_detection.clone());
            (!naming.is_empty()).then(|| {
                json!({
                    "backendPolicy": in_force.map(|p| p.name),
                    "effectiveOutlierDetection": outlier,
                    "backendPolicies": naming,
                })
            })
        }
        _ => None,
    };
    if let Some(s) = status {
        v["status"] = s;
    }
    if let weft_api::resource::Resource::ResiliencePolicy(p) = r {
        v["status"] = crate::resilience::status(p, all);
    }
    // Which AuthorizationPolicies apply (`weft describe service|workload`).
    let (service, workload) = match r {
        weft_api::resource::Resource::Service(_) => (Some(m.name.as_str()), ""),
        weft_api::resource::Resource::Workload(w) => (Some(w.spec.service.as_str()), m.name.as_str()),
        _ => (None, ""),
    };
    if let Some(service) = service {
        let cat = st.catalog.borrow().clone();
        v["status"]["authorization"] = crate::authz::status(&cat, &m.namespace, service, workload);
        // The mTLS mode per port and the RequestAuthentications that apply (docs/security.md).
        let mut stored = st.store.list(Some(Kind::PeerAuthentication), None).unwrap_or_default();
        stored.extend(st.store.list(Some(Kind::Workload), Some(&m.namespace)).unwrap_or_default());
        v["status"]["mtls"] = crate::security_status::mtls(&cat, &stored, &m.namespace, service, workload);
        v["status"]["requestAuthentications"] =
            crate::security_status::request_authentications(&cat, &m.namespace, service, workload);
    }
    v
}

/// Every stored resource, when `kind` needs them for its status.
fn all_for_status(st: &ApiState, kind: Option<Kind>) -> Result<Vec<weft_api::resource::Resource>, ApiError> {
    match kind {
        Some(Kind::ResiliencePolicy) | None => Ok(st.store.list(None, None)?),
        _ => Ok(vec![]),
    }
}

async fn list(State(st): S, headers: HeaderMap, Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    require_read(&st, &headers)?;
    let k = q.kind.as_deref().map(kind).transpose()?;
    let all = all_for_status(&st, k)?;
    let all: Vec<_> = all.iter().collect();
    let items: Vec<_> = st.store.list(k, q.namespace.as_deref())?.iter().map(|r| with_status(&st, r, &all)).collect();
    Ok(Json(json!({ "revision": st.store.revision(), "items": items })))
}

async fn get_one(
    State(st): S,
    headers: HeaderMap,
    Path((k, namespace, name)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    require_read(&st, &headers)?;
    let key = Key { kind: kind(&k)?, namespace, name };
    match st.store.get(&key)? {
        Some(r) => {
            let all = all_for_status(&st, Some(key.kind))?;
            Ok(Json(with_status(&st, &r, &all.iter().collect::<Vec<_>>())))
        }
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("{key} not found"))),
    }
}

async fn delete_one(
    State(st): S,
    headers: HeaderMap,
    Path((k, namespace, name)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let key = Key { kind: kind(&k)?, namespace, name };
    require_write_of(&st, &headers, [(key.kind, key.namespace.as_str())])?;
    let k = key.clone();
    blocking(&st.store, move |s| s.delete(std::slice::from_ref(&k))).await?;
    Ok(Json(json!({ "results": [format!("{key} deleted")] })))
}

async fn proxies(State(st): S, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    require_read(&st, &headers)?;
    Ok(Json(json!({ "proxies": st.proxies.list() })))
}

async fn ca(State(st): S, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    require_read(&st, &headers)?;
    let describe = |der: &[u8]| -> Value {
        let fp = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
        let fingerprint = fp.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
        let (subject, not_after) = weft_identity::tls::describe(der).unwrap_or_default();
        let expires_in = weft_identity::tls::not_after(&der.to_vec().into())
            .ok()
            .and_then(|t| t.duration_since(std::time::SystemTime::now()).ok())
            .map(|d| d.as_secs())
            .unwrap_or(0);
        json!({ "subject": subject, "not_after": not_after, "expires_in_seconds": expires_in, "sha256_fingerprint": fingerprint })
    };
    let (serving, signer, roots, rotation) = st.ca.snapshot();
    Ok(Json(json!({
        "trust_domain": serving.trust_domain(),
        "root": describe(serving.root()),
        "intermediate": describe(signer.cert()),
        // Labelled with the trust domain it signs for (`# trust_domain: <td>`).
        "root_pem": root_pem(&serving),
        // Every root trusted now (two during a rotation), and the rotation in progress.
        "roots": roots.iter().map(|r| describe(r)).collect::<Vec<_>>(),
        "rotation": rotation,
        // MeshConfig `ca`: null for weft's own CA; else the external CA's state and roots.
        "external": match st.ca.selected() {
            crate::signer::Selected::Builtin => Value::Null,
            crate::signer::Selected::Failed { spec, error } => json!({ "kind": spec.kind, "status": "failed", "error": error }),
            crate::signer::Selected::External(ext) => json!({
                "kind": ext.spec.kind,
                "status": "ready",
                "roots": ext.roots.iter().map(|r| describe(r)).collect::<Vec<_>>(),
                "intermediates": ext.intermediates.iter().map(|r| describe(r)).collect::<Vec<_>>(),
                "roots_pem": weft_identity::TrustBundle::labelled(
                    ext.roots.iter().map(|r| (Some(serving.trust_domain().to_string()), r.clone())).collect()
                ).map(|b| b.to_pem()).unwrap_or_default(),
            }),
        },
    })))
}

/// The root in PEM, bound to the CA's trust domain; a plug-in root whose own SAN names another
/// domain is shown as it is.
pub fn root_pem(ca: &Authority) -> String {
    let root = ca.root().clone();
    weft_identity::TrustBundle::labelled(vec![(Some(ca.trust_domain().to_string()), root.clone())])
        .unwrap_or_else(|_| weft_identity::TrustBundle::new(vec![root]))
        .to_pem()
}

async fn workload_health(
    State(st): S,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    require_read(&st, &headers)?;
    let w = format!("{namespace}/{name}");
    let checks: Vec<Value> = st
        .monitor
        .checks(&w)
        .into_iter()
        .map(|(name, r)| json!({ "name": name, "status": r.status.to_string(), "output": r.output }))
        .collect();
    let status = st.monitor.workload_status(&w).map(|s| s.to_string());
    Ok(Json(json!({ "workload": w, "status": status, "checks": checks })))
}

async fn catalog(State(st): S, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    require_read(&st, &headers)?;
    let cat = st.catalog.borrow().clone();
    let services: Vec<Value> = cat
        .services
        .values()
        .map(|s| {
            json!({
                "name": s.name, "namespace": s.namespace, "tags": s.tags,
                "instances": s.instances.iter().map(|i| json!({
                    "name": i.name, "address": i.address.to_string(), "sidecar": i.sidecar.to_string(),
                    "identity": i.identity, "cluster": i.cluster, "healthy": i.healthy, "tags": i.tags,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({ "revision": cat.revision, "services": services })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateRequest {
    /// How long both roots stay trusted after signing switches to the new one; absent: the mesh's
    /// leaf lifetime (every certificate of the old root has expired by then).
    overlap: Option<weft_api::Duration>,
}

/// `POST /v1/ca/rotate`: starts a root rotation (see [`crate::rotation`]).
async fn rotate(State(st): S, headers: HeaderMap, body: String) -> Result<Json<Value>, ApiError> {
    require_admin(&st, &headers)?;
    let req: RotateRequest = if body.trim().is_empty() {
        RotateRequest::default()
    } else {
        serde_json::from_str(&body).map_err(|e| bad(format!("rotate request: {e} (send {{\"overlap\": \"24h\"}})")))?
    };
    let overlap: std::time::Duration = req.overlap.map(Into::into).unwrap_or_else(|| st.mesh.leaf_lifetime.into());
    st.ca.start(overlap).map_err(rotate_error)?;
    Ok(Json(json!({ "rotation": st.ca.status() })))
}

/// `DELETE /v1/ca/rotate`: aborts a rotation still in phase trust-both.
async fn abort_rotation(State(st): S, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    require_admin(&st, &headers)?;
    st.ca.abort().map_err(rotate_error)?;
    Ok(Json(json!({ "rotation": Value::Null })))
}

fn rotate_error(e: crate::rotation::RotateError) -> ApiError {
    use crate::rotation::RotateError as R;
    let status = match &e {
        R::InProgress { .. } | R::NotRotating | R::TooLate(_) | R::PlugIn => StatusCode::CONFLICT,
        R::Ca(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError(status, e.to_string())
}
