//! The HTTP API (JSON) that the CLI uses; documented in docs/api.md. Every call needs a token:
//! `read` tokens may read, `admin` tokens may do everything. Errors are JSON `{"error": "..."}`
//! with the field path and the fix, and the right status (400 invalid, 401/403 token, 404, 409
//! conflict).

use crate::consul;
use crate::discovery::Proxies;
use crate::tokens::{Grant, TokenError, Tokens};
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
    /// Where the gRPC listener is (a link credential names it as the federation address).
    pub grpc_addr: std::net::SocketAddr,
    pub federation: Arc<crate::federation::Federation>,
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
    if let Some(v) = headers.get(axum::http::header::AUTHORIZATION) {
        return Ok(st.tokens.verify_header(Some(v.to_str().map_err(|_| TokenError::Invalid)?))?);
    }
    match headers.get(CONSUL_TOKEN) {
        Some(v) => Ok(st.tokens.verify(v.to_str().map_err(|_| TokenError::Invalid)?.trim())?),
        None => Err(TokenError::Missing.into()),
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
        Grant::Admin | Grant::Read => Ok(()),
        Grant::Bootstrap { .. } => {
            Err(TokenError::Forbidden("a bootstrap token is for proxies; use a read or admin token").into())
        }
        Grant::Link { .. } | Grant::LinkStream { .. } => {
            Err(TokenError::Forbidden("a link secret is for linked control planes; use a read or admin token").into())
        }
    }
}

pub fn require_write(st: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    match grant(st, headers)? {
        Grant::Admin => Ok(()),
        _ => Err(TokenError::Forbidden("writing needs an admin token").into()),
    }
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/v1/apply", post(apply))
        .route("/v1/resources", get(list))
        .route("/v1/resources/{kind}/{namespace}/{name}", get(get_one).delete(delete_one))
        .route("/v1/proxies", get(proxies))
        .route("/v1/tokens", post(create_token))
        .route("/v1/ca", get(ca))
        .route("/v1/ca/rotate", post(rotate).delete(abort_rotation))
        .route("/v1/catalog", get(catalog))
        .route("/v1/services/{namespace}/{name}/routes", get(crate::routes_api::effective))
        .route("/v1/health/workload/{namespace}/{name}", get(workload_health))
        .merge(crate::links::routes())
        .merge(consul::routes())
        .route("/live", get(|| async { "live\n" }))
        .fallback(consul::fallback)
        .method_not_allowed_fallback(consul::method_not_allowed)
        .layer(axum::middleware::from_fn(token_from_query))
        .with_state(state)
}

async fn apply(State(st): S, headers: HeaderMap, body: String) -> Result<Json<Value>, ApiError> {
    require_write(&st, &headers)?;
    let resources = parse_documents(&body).map_err(|e| bad(e.to_string()))?;
    admit(&st, &resources)?;
    let applied = blocking(&st.store, move |s| s.apply(resources)).await?;
    Ok(Json(json!({ "results": applied.iter().map(|a| a.to_string()).collect::<Vec<_>>() })))
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
fn with_status(st: &ApiState, r: &weft_api::resource::Resource, all: &[&weft_api::resource::Resource]) -> Value {
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
        v["status"]["authorization"] = crate::authz::status(&st.catalog.borrow(), &m.namespace, service, workload);
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
    require_write(&st, &headers)?;
    let key = Key { kind: kind(&k)?, namespace, name };
    let k = key.clone();
    blocking(&st.store, move |s| s.delete(std::slice::from_ref(&k))).await?;
    Ok(Json(json!({ "results": [format!("{key} deleted")] })))
}

async fn proxies(State(st): S, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    require_read(&st, &headers)?;
    Ok(Json(json!({ "proxies": st.proxies.list() })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    /// admin, read or bootstrap.
    kind: String,
    /// `<namespace>/<service-account>`, for bootstrap tokens.
    identity: Option<String>,
    /// e.g. 24h; absent: no expiry.
    ttl: Option<weft_api::Duration>,
    /// Bootstrap tokens of a remote cluster's proxies (primary-remote): the cluster, one of
    /// MeshConfig `remoteClusters` (or this cluster's own name).
    #[serde(default)]
    cluster: Option<String>,
}

async fn create_token(State(st): S, headers: HeaderMap, body: String) -> Result<Json<Value>, ApiError> {
    require_write(&st, &headers)?;
    // Any content type: curl users forget the header.
    let req: TokenRequest = serde_json::from_str(&body).map_err(|e| bad(format!("token request: {e}")))?;
    let grant = match (req.kind.as_str(), req.identity) {
        ("admin", None) => Grant::Admin,
        ("read", None) => Grant::Read,
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
        (k @ ("admin" | "read"), Some(_)) => {
            return Err(bad(format!("identity: only bootstrap tokens name an identity, not {k}")))
        }
        (other, _) => return Err(bad(format!("kind: {other:?} is not admin, read or bootstrap"))),
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
    Ok(Json(json!({ "token": st.tokens.issue_in(grant, req.ttl.map(Into::into), cluster) })))
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
fn root_pem(ca: &Authority) -> String {
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
    require_write(&st, &headers)?;
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
    require_write(&st, &headers)?;
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
