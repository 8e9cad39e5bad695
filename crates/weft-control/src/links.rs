//! The HTTP API of `weft link` (docs/api.md, docs/multicluster.md):
//! - `POST /v1/links/credential` (admin) `{"expires": "24h"}`: a link credential for another
//!   cluster to link to this one;
//! - `POST /v1/links` (admin), body: the credential line: checks it and stores a `Link`;
//! - `GET /v1/links` (read): every link with its state, last sync, imported counts and expiry;
//! - `DELETE /v1/links/{cluster}` (admin): removes the link; its imports are withdrawn at once;
//! - `PUT /v1/links/{cluster}/namespaces` (admin) `{"namespaces": ["shop"]}`: which namespaces the
//!   link imports (empty: all); services of others are withdrawn at once;
//! - `GET /v1/links/{cluster}/check` (read): probes the link now (`weft link check`);
//! - `GET /v1/importers` (read): the exporting side's view, the clusters that import from this
//!   one (`weft link importers`).

use crate::api::{bad, blocking, require_admin, require_read, require_write, ApiError, ApiState};
use crate::federation::unix_now;
use crate::tokens::Grant;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use weft_api::kinds::LinkSpec;
use weft_api::link::Credential;
use weft_api::resource::{Key, Kind, Metadata, Resource, Typed, Validate, DEFAULT_NAMESPACE};

/// Default lifetime of a link credential.
pub const DEFAULT_EXPIRES: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// The longest a link credential may live.
pub const MAX_EXPIRES: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

type S = State<Arc<ApiState>>;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v1/links/credential", post(create))
        .route("/v1/links", post(apply).get(list))
        .route("/v1/links/{cluster}", delete(remove))
        .route("/v1/links/{cluster}/revoke", post(revoke))
        .route("/v1/links/{cluster}/check", get(check_link))
        .route("/v1/links/{cluster}/namespaces", axum::routing::put(set_namespaces))
        .route("/v1/importers", get(importers))
}

/// `weft link importers`: the clusters that opened an Export stream to this one since it started,
/// with whether one is open now.
async fn importers(State(st): S, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    require_read(&st, &headers)?;
    Ok(Json(json!({ "importers": st.federation.importers() })))
}

/// `POST /v1/links` as JSON: the credential and which namespaces to import (empty: all).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyRequest {
    credential: String,
    #[serde(default)]
    namespaces: Vec<String>,
}

/// `PUT /v1/links/{cluster}/namespaces`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespacesRequest {
    namespaces: Vec<String>,
}

fn check_namespaces(namespaces: &[String]) -> Result<(), ApiError> {
    weft_api::kinds::validate_link_namespaces(namespaces)
        .map_err(|e| bad(format!("{e}; list namespaces like shop,web (none: every namespace)")))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    /// `24h`, `30m`, ...
    #[serde(default)]
    expires: Option<String>,
}

async fn create(State(st): S, headers: HeaderMap, body: String) -> Result<Json<Value>, ApiError> {
    // A link credential is a token: admin only.
    require_admin(&st, &headers)?;
    let req: CreateRequest = if body.trim().is_empty() {
        CreateRequest::default()
    } else {
        serde_json::from_str(&body).map_err(|e| bad(format!("link credential request: {e}")))?
    };
    let ttl = match req.expires {
        None => DEFAULT_EXPIRES,
        Some(s) => {
            let d: weft_api::Duration = serde_json::from_value(Value::String(s.clone()))
                .map_err(|_| bad(format!("expires: {s:?} is not a duration; write it like 24h, 30m or 7d")))?;
            d.into()
        }
    };
    if ttl < std::time::Duration::from_secs(60) || ttl > MAX_EXPIRES {
        return Err(bad("expires: must be between 1m and 365d"));
    }
    // This cluster's network and gateways as stored now (MeshConfig `cluster`).
    let cluster = st.catalog.borrow().mesh.cluster.clone();
    let address = match cluster.gateways.first() {
        // Through a gateway: the control plane's own listener need not be reachable.
        Some(gw) => gw.clone(),
        None if st.grpc_addr.ip().is_unspecified() => {
            return Err(bad(format!(
                "this control plane's gRPC listener is {} (every address), which another cluster cannot dial: start `weft control --grpc <ip>:<port>` with a reachable address, or declare this cluster's east-west gateways (MeshConfig `cluster.gateways`)",
                st.grpc_addr
            )))
        }
        None => st.grpc_addr.to_string(),
    };
    let root = weft_identity::TrustBundle::new(st.ca.roots().into_iter().map(Into::into).collect());
    let cred = Credential {
        cluster: st.mesh.cluster.name.clone(),
        trust_domain: st.mesh.trust_domain.clone(),
        address,
        root_pem: root.to_pem(),
        secret: st.tokens.issue(Grant::Link { issued_ms: crate::federation::unix_now_ms() }, Some(ttl)),
        expires_unix: unix_now() + ttl.as_secs(),
        network: cluster.network,
        gateways: cluster.gateways,
    };
    tracing::info!(expires_unix = cred.expires_unix, "link credential created");
    Ok(Json(json!({ "credential": cred.encode(), "cluster": cred.cluster, "expiresUnix": cred.expires_unix })))
}

/// The checks `weft link apply` makes before anything is stored.
fn check(st: &ApiState, cred: &Credential, existing: &[Resource]) -> Result<LinkSpec, ApiError> {
    let now = unix_now();
    if cred.expires_unix <= now {
        return Err(bad(format!(
            "the link credential for cluster {:?} expired {} s ago; run `weft link create` on that cluster again and apply the new credential",
            cred.cluster,
            now - cred.expires_unix
        )));
    }
    if cred.cluster == st.mesh.cluster.name {
        return Err(bad(format!(
            "the link credential is for cluster {:?}, which is this cluster: a cluster cannot link to itself; run `weft link create` on the other cluster and apply its credential here",
            cred.cluster
        )));
    }
    if st.catalog.borrow().mesh.remote_clusters.iter().any(|r| r.name == cred.cluster) {
        return Err(bad(format!(
            "the link credential is for cluster {:?}, which is one of this cluster's remote clusters (MeshConfig remoteClusters): its proxies follow this control plane, so there is no other control plane to link to; if it now runs its own, remove it from remoteClusters first",
            cred.cluster
        )));
    }
    if cred.trust_domain == st.mesh.trust_domain {
        return Err(bad(format!(
            "cluster {:?} uses trust domain {:?}, the same as this cluster: linked clusters need distinct trust domains, because each cluster's root vouches only for its own; give one of them another MeshConfig trustDomain (set before its first start)",
            cred.cluster, cred.trust_domain
        )));
    }
    let spec = LinkSpec {
        cluster: cred.cluster.clone(),
        trust_domain: cred.trust_domain.clone(),
        address: cred.address.clone(),
        root_pem: cred.root_pem.clone(),
        secret: cred.secret.clone(),
        expires_unix: cred.expires_unix,
        network: cred.network.clone(),
        gateways: cred.gateways.clone(),
        namespaces: vec![],
    };
    spec.validate().map_err(|e| bad(format!("the link credential: {e}")))?;
    let bundle = weft_identity::TrustBundle::from_pem(&spec.root_pem)
        .map_err(|e| bad(format!("the link credential's root certificate: {e}")))?;
    if bundle.roots().is_empty() {
        return Err(bad("the link credential holds no usable root certificate; copy it again"));
    }
    if let Some((Some(d), _)) = bundle.domains().find(|(d, _)| d.is_some_and(|d| d != spec.trust_domain)) {
        return Err(bad(format!(
            "the link credential's root is bound to trust domain {d:?}, but the credential names {:?}: it was altered or made wrongly",
            spec.trust_domain
        )));
    }
    for r in existing {
        if let Resource::Link(l) = r {
            if l.metadata.name == spec.cluster {
                return Err(ApiError(
                    StatusCode::CONFLICT,
                    format!(
                        "a link to cluster {:?} exists already; to replace it, run `weft link remove {}` first",
                        spec.cluster, spec.cluster
                    ),
                ));
            }
            if l.spec.trust_domain == spec.trust_domain {
                return Err(ApiError(
                    StatusCode::CONFLICT,
                    format!(
                        "the link to cluster {:?} already uses trust domain {:?}; two linked clusters cannot share one",
                        l.metadata.name, spec.trust_domain
                    ),
                ));
            }
        }
    }
    Ok(spec)
}

async fn apply(State(st): S, headers: HeaderMap, body: String) -> Result<Json<Value>, ApiError> {
    require_write(&st, &headers)?;
    // The bare credential line, or JSON with the namespaces to import.
    let (line, namespaces) = if body.trim_start().starts_with('{') {
        let req: ApplyRequest = serde_json::from_str(&body).map_err(|e| bad(format!("link request: {e}")))?;
        (req.credential, req.namespaces)
    } else {
        (body, vec![])
    };
    check_namespaces(&namespaces)?;
    let cred = Credential::decode(&line).map_err(bad)?;
    let existing = st.store.list(Some(Kind::Link), None)?;
    let mut spec = check(&st, &cred, &existing)?;
    spec.namespaces = namespaces;
    let name = spec.cluster.clone();
    let r = Resource::Link(Typed {
        metadata: Metadata {
            name: name.clone(),
            namespace: DEFAULT_NAMESPACE.into(),
            labels: Default::default(),
            resource_version: None,
            creation_revision: None,
        },
        spec,
    });
    blocking(&st.store, move |s| s.apply(vec![r])).await?;
    tracing::info!(cluster = %name, "link applied");
    Ok(Json(json!({ "results": [format!("link to cluster {name} created")] })))
}

async fn list(State(st): S, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    require_read(&st, &headers)?;
    let links: Vec<Value> = st
        .store
        .list(Some(Kind::Link), None)?
        .into_iter()
        .filter_map(|r| match r {
            Resource::Link(l) => Some(l),
            _ => None,
        })
        .map(|l| {
            let status = st.federation.status(&l.metadata.name);
            // The peer roots the link verifies the peer's control plane against (hex SHA-256).
            let trusted_roots: Vec<String> =
                crate::federation::import::link_roots(&l.spec, st.federation.peer_roots(&l.metadata.name))
                    .map(|b| b.roots().iter().map(|r| crate::rotation::fingerprint(r)).collect())
                    .unwrap_or_default();
            // The secret is not shown.
            json!({
                "cluster": l.metadata.name,
                "trustDomain": l.spec.trust_domain,
                "address": l.spec.address,
                "network": l.spec.network,
                "gateways": l.spec.gateways,
                "namespaces": l.spec.namespaces,
                "expiresUnix": l.spec.expires_unix,
                "state": status.state,
                "lastSyncUnix": status.last_sync_unix,
                "importedServices": status.imported_services,
                "importedEndpoints": status.imported_endpoints,
                "trustedRoots": trusted_roots,
                "error": status.error,
                // Messages applied on the link's streams: full snapshots, deltas, resyncs.
                "updates": status.updates,
            })
        })
        .collect();
    Ok(Json(json!({ "links": links })))
}

async fn remove(State(st): S, headers: HeaderMap, Path(cluster): Path<String>) -> Result<Json<Value>, ApiError> {
    require_write(&st, &headers)?;
    let key = Key { kind: Kind::Link, namespace: DEFAULT_NAMESPACE.into(), name: cluster.clone() };
    if st.store.get(&key)?.is_none() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no link to cluster {cluster:?}; `weft link list` shows the links"),
        ));
    }
    blocking(&st.store, move |s| s.delete(std::slice::from_ref(&key))).await?;
    // Withdrawn now, not when the link task notices.
    st.federation.withdraw(&cluster);
    tracing::info!(%cluster, "link removed");
    Ok(Json(json!({ "results": [format!("link to cluster {cluster} removed; its services are withdrawn")] })))
}

/// `weft link namespaces <cluster>`: changes which namespaces the link imports. Services of the
/// namespaces left out are withdrawn now; the link reconnects and its next snapshot is filtered
/// the new way.
async fn set_namespaces(
    State(st): S,
    headers: HeaderMap,
    Path(cluster): Path<String>,
    body: String,
) -> Result<Json<Value>, ApiError> {
    require_write(&st, &headers)?;
    let req: NamespacesRequest =
        serde_json::from_str(&body).map_err(|e| bad(format!("link namespaces request: {e}")))?;
    check_namespaces(&req.namespaces)?;
    let namespaces = req.namespaces.clone();
    let c = cluster.clone();
    let found = blocking(&st.store, move |s| update_link(s, &c, |spec| spec.namespaces = namespaces.clone())).await?;
    if !found {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no link to cluster {cluster:?}; `weft link list` shows the links"),
        ));
    }
    st.federation.restrict(&cluster, &req.namespaces);
    let scope = if req.namespaces.is_empty() { "every namespace".to_string() } else { req.namespaces.join(", ") };
    tracing::info!(%cluster, %scope, "link namespaces changed");
    Ok(Json(json!({ "results": [format!("link to cluster {cluster} imports {scope}")] })))
}

/// Changes the stored Link to `cluster` with `f`, as a compare-and-swap on its resource version
/// (retried on a conflict), so writers of different fields (its namespaces here, its stream
/// secret in the link task) never undo each other. False when there is no such Link. Blocks.
pub(crate) fn update_link(
    store: &weft_store::Store,
    cluster: &str,
    f: impl Fn(&mut LinkSpec),
) -> Result<bool, weft_store::StoreError> {
    let key = Key { kind: Kind::Link, namespace: DEFAULT_NAMESPACE.into(), name: cluster.to_string() };
    let mut attempt = 0;
    loop {
        let Some(Resource::Link(mut l)) = store.get(&key)? else { return Ok(false) };
        f(&mut l.spec);
        match store.apply(vec![Resource::Link(l)]) {
            Err(weft_store::StoreError::Conflict { .. }) if attempt < 16 => attempt += 1,
            r => return r.map(|_| true),
        }
    }
}

/// `weft link revoke <cluster>` on the exporting side: the cluster's link secret stops working
/// (its open stream is cut, its roots leave this cluster's proxies), and every credential made
/// before now is void too (an unused one could otherwise re-link it).
async fn revoke(State(st): S, headers: HeaderMap, Path(cluster): Path<String>) -> Result<Json<Value>, ApiError> {
    require_admin(&st, &headers)?;
    if !weft_api::valid_name(&cluster) {
        return Err(bad("cluster: must be a cluster's name (a DNS label)"));
    }
    let fed = st.federation.clone();
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || fed.revoke(&c))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot save the revocation: {e}")))?;
    tracing::info!(%cluster, "link revoked");
    Ok(Json(json!({ "results": [format!(
        "cluster {cluster} can no longer import from this cluster; credentials made before now are void (make a new one with `weft link create`)"
    )] })))
}

/// `weft link check <cluster>`: probes the peer now, from this control plane (which holds the
/// link's secret and root); see [`crate::federation::check`]. 200 whatever the verdicts: `ok` is
/// false when any check failed.
async fn check_link(State(st): S, headers: HeaderMap, Path(cluster): Path<String>) -> Result<Json<Value>, ApiError> {
    require_read(&st, &headers)?;
    let key = Key { kind: Kind::Link, namespace: DEFAULT_NAMESPACE.into(), name: cluster.clone() };
    let Some(Resource::Link(l)) = st.store.get(&key)? else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no link to cluster {cluster:?}; `weft link list` shows the links"),
        ));
    };
    let status = st.federation.status(&cluster);
    let local_network = st.catalog.borrow().mesh.cluster.network.clone();
    let peer = st.federation.peer_network(&cluster);
    let peer_roots = st.federation.peer_roots(&cluster);
    let checks = crate::federation::check::check(&cluster, &l.spec, &status, &local_network, peer, peer_roots).await;
    let ok = checks.iter().all(|c| c.verdict != crate::federation::check::Verdict::Fail);
    Ok(Json(json!({ "cluster": cluster, "address": l.spec.address, "ok": ok, "checks": checks })))
}
