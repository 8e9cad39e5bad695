//! `GET /v1/stats` and `GET /v1/edges` (docs/observability.md, "weft stat and weft edges"):
//! golden metrics of this cluster from its ring buffer ([`crate::stats`]) or Prometheus, and of
//! every linked cluster through `Federation.Stats` when `cluster=all` (the default).

use crate::api::{bad, require_read, ApiError, ApiState};
use crate::stats::federation::{fan_out, ClusterState, PeerAnswer};
use crate::stats::query::{By, Query};
use axum::extract::{Query as Params, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use weft_api::pb;

type S = State<Arc<ApiState>>;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new().route("/v1/stats", get(stats)).route("/v1/edges", get(edges))
}

/// The window in seconds: `30s`, `1m`, `1h` or plain seconds, 10 s to 1 h.
pub fn parse_window(s: &str) -> Result<u64, String> {
    let secs = match s.parse::<u64>() {
        Ok(n) => n,
        Err(_) => s
            .parse::<weft_api::Duration>()
            .map(|d| d.0.as_secs())
            .map_err(|_| format!("window={s:?} is not a duration; write e.g. 30s, 1m or 1h"))?,
    };
    if !(10..=3600).contains(&secs) {
        return Err(format!("window={s:?} must be between 10s and 1h"));
    }
    Ok(secs)
}

fn check_params(p: &HashMap<String, String>, known: &[&str]) -> Result<(), ApiError> {
    let mut unknown: Vec<&str> = p.keys().map(String::as_str).filter(|k| !known.contains(k) && *k != "token").collect();
    unknown.sort();
    if !unknown.is_empty() {
        return Err(bad(format!("unknown query parameter(s) {}; known: {}", unknown.join(", "), known.join(", "))));
    }
    Ok(())
}

/// `cluster=`: `all` (every linked cluster too), this cluster's name, or a linked cluster's.
enum Scope {
    All,
    Local,
    Peer(String),
}

fn scope(st: &ApiState, p: &HashMap<String, String>) -> Scope {
    match p.get("cluster").map(String::as_str) {
        None | Some("all") | Some("") => Scope::All,
        Some(c) if c == st.mesh.cluster.name => Scope::Local,
        Some(c) => Scope::Peer(c.to_string()),
    }
}

fn common(p: &HashMap<String, String>) -> Result<(u64, Option<String>), ApiError> {
    let window = parse_window(p.get("window").map_or("1m", String::as_str)).map_err(bad)?;
    let namespace = p.get("namespace").filter(|n| !n.is_empty()).cloned();
    if let Some(ns) = &namespace {
        if !weft_api::valid_name(ns) {
            return Err(bad(format!("namespace={ns:?} must be a namespace name (a DNS label)")));
        }
    }
    Ok((window, namespace))
}

/// Asks the linked clusters of `sc` (none for `Local`); a named cluster that is not linked is a 404.
async fn peers(
    st: &ApiState,
    sc: &Scope,
    req: pb::StatsRequest,
) -> Result<Vec<(ClusterState, Option<PeerAnswer>)>, ApiError> {
    let only = match sc {
        Scope::Local => return Ok(vec![]),
        Scope::All => None,
        Scope::Peer(c) => Some(c.as_str()),
    };
    let out = fan_out(&st.store, &st.federation, &st.mesh.cluster.name, req, only).await;
    if let (Some(c), true) = (only, out.is_empty()) {
        return Err(ApiError(
            axum::http::StatusCode::NOT_FOUND,
            format!(
                "cluster={c:?} is neither this cluster ({}) nor a linked one; see `weft link list`",
                st.mesh.cluster.name
            ),
        ));
    }
    Ok(out)
}

async fn stats(
    State(st): S,
    headers: HeaderMap,
    Params(p): Params<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    require_read(&st, &headers)?;
    check_params(&p, &["by", "window", "cluster", "namespace", "history"])?;
    let by_s = p.get("by").map_or("service", String::as_str);
    let by = By::parse(by_s).ok_or_else(|| bad(format!("by={by_s:?} must be service, workload, route or cluster")))?;
    let (window, namespace) = common(&p)?;
    let history = match p.get("history").map(String::as_str) {
        None | Some("0") | Some("false") => false,
        Some("1") | Some("true") => true,
        Some(h) => return Err(bad(format!("history={h:?} must be 1 or 0"))),
    };
    let q = Query { by, window, namespace: namespace.clone(), history };
    let sc = scope(&st, &p);
    let cat = st.catalog.borrow().clone();
    let now = crate::stats::unix_now();
    let (source, mut rows) = match (&sc, &st.stats.prometheus) {
        (Scope::Peer(_), _) => ("buffer", vec![]),
        (_, Some(prom)) => {
            let rows = prom.rows(&cat, &q).await.map_err(|e| ApiError(axum::http::StatusCode::BAD_GATEWAY, e))?;
            ("prometheus", rows)
        }
        (_, None) => ("buffer", {
            let domains = crate::stats::federation::domains(Some(&st.store), &st.federation);
            st.stats.with(|i| crate::stats::query::rows(i, &cat, &domains, &q, now))
        }),
    };
    let req = pb::StatsRequest {
        cluster: String::new(),
        query: "stats".into(),
        by: by.as_str().into(),
        window_seconds: window,
        namespace: namespace.unwrap_or_default(),
        history,
    };
    let mut clusters = vec![];
    if !matches!(sc, Scope::Peer(_)) {
        clusters.push(ClusterState { name: st.mesh.cluster.name.clone(), reachable: true, error: None });
    }
    for (state, answer) in peers(&st, &sc, req).await? {
        if let Some(PeerAnswer::Rows(r)) = answer {
            rows.extend(r);
        }
        clusters.push(state);
    }
    Ok(Json(json!({
        "window_seconds": window,
        "generated_unix": now,
        "source": source,
        "rows": rows,
        "clusters": clusters,
        // Beyond the contract: this cluster's buffer (series kept, cap, dropped).
        "buffer": st.stats.buffer_json(),
    })))
}

async fn edges(
    State(st): S,
    headers: HeaderMap,
    Params(p): Params<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    require_read(&st, &headers)?;
    check_params(&p, &["window", "cluster", "namespace"])?;
    let (window, namespace) = common(&p)?;
    let sc = scope(&st, &p);
    let cat = st.catalog.borrow().clone();
    let now = crate::stats::unix_now();
    let mut edges = match sc {
        Scope::Peer(_) => vec![],
        _ => {
            let domains = crate::stats::federation::domains(Some(&st.store), &st.federation);
            match &st.stats.prometheus {
                Some(prom) => prom
                    .edges(&cat, &domains, window, namespace.as_deref())
                    .await
                    .map_err(|e| ApiError(axum::http::StatusCode::BAD_GATEWAY, e))?,
                None => {
                    st.stats.with(|i| crate::stats::query::edges(i, &cat, &domains, window, namespace.as_deref(), now))
                }
            }
        }
    };
    let req = pb::StatsRequest {
        cluster: String::new(),
        query: "edges".into(),
        by: String::new(),
        window_seconds: window,
        namespace: namespace.unwrap_or_default(),
        history: false,
    };
    let mut clusters = vec![];
    if !matches!(sc, Scope::Peer(_)) {
        clusters.push(ClusterState { name: st.mesh.cluster.name.clone(), reachable: true, error: None });
    }
    for (state, answer) in peers(&st, &sc, req).await? {
        if let Some(PeerAnswer::Edges(e)) = answer {
            edges.extend(e);
        }
        clusters.push(state);
    }
    Ok(Json(json!({ "window_seconds": window, "edges": edges, "clusters": clusters })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_durations_between_10s_and_1h() {
        assert_eq!(parse_window("1m"), Ok(60));
        assert_eq!(parse_window("90"), Ok(90));
        assert_eq!(parse_window("1h"), Ok(3600));
        assert!(parse_window("5s").unwrap_err().contains("between 10s and 1h"));
        assert!(parse_window("soon").unwrap_err().contains("not a duration"));
    }
}
