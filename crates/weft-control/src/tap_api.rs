//! `GET /v1/tap`: a live stream of request summaries from the proxies (NDJSON, one
//! [`weft_api::tap::TapEvent`] a line), open until `max` events, `seconds`, or the client leaves.
//! Read tokens may tap. See [`crate::tap`] for how the proxies are asked.

use crate::api::{bad, query_pairs, require_read, ApiError, ApiState};
use crate::tap::Target;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use weft_api::pb;
use weft_api::tap::TapEvent;
use weft_api::tap::{TapFilter, DEFAULT_EVENTS, DEFAULT_SECONDS, MAX_EVENTS, MAX_SECONDS};

/// The query parameters `GET /v1/tap` takes.
pub const PARAMS: [&str; 11] =
    ["namespace", "service", "workload", "src", "dst", "path", "method", "status", "max", "seconds", "cluster"];

/// A tap request as read from the query string.
#[derive(Debug, Default, PartialEq)]
pub struct TapQuery {
    pub target: Target,
    pub filter: TapFilter,
    pub max: u64,
    pub seconds: u64,
    /// `None`: this cluster; `all`: this one and every linked one; else one cluster's name.
    pub cluster: Option<String>,
}

fn number(name: &str, v: &str, max: u64) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("{name}: {v:?} must be a whole number from 1 to {max}")),
    }
}

/// Reads the query pairs of `GET /v1/tap`, naming any unknown or bad parameter.
pub fn parse(pairs: &[(String, String)]) -> Result<TapQuery, String> {
    let unknown: Vec<&str> =
        pairs.iter().map(|(k, _)| k.as_str()).filter(|k| !PARAMS.contains(k) && *k != "token").collect();
    if !unknown.is_empty() {
        return Err(format!("unknown query parameter(s) {}; /v1/tap takes {}", unknown.join(", "), PARAMS.join(", ")));
    }
    let mut q = TapQuery { max: DEFAULT_EVENTS, seconds: DEFAULT_SECONDS, ..Default::default() };
    for (k, v) in pairs {
        match k.as_str() {
            "namespace" => q.target.namespace = v.clone(),
            "service" => q.target.service = v.clone(),
            "workload" => q.target.workload = v.clone(),
            "src" => q.filter.src = v.clone(),
            "dst" => q.filter.dst = v.clone(),
            "path" => q.filter.path = v.clone(),
            "method" => q.filter.method = v.clone(),
            "status" => q.filter.status = v.clone(),
            "max" => q.max = number("max", v, MAX_EVENTS)?,
            "seconds" => q.seconds = number("seconds", v, MAX_SECONDS)?,
            "cluster" if v == "all" || weft_api::valid_name(v) => q.cluster = Some(v.clone()),
            "cluster" => return Err(format!("cluster: {v:?} must be a cluster's name or `all`")),
            _ => {}
        }
    }
    for (name, v) in
        [("namespace", &q.target.namespace), ("workload", &q.target.workload), ("service", &q.target.service)]
    {
        if !v.is_empty() && !weft_api::valid_name(v) {
            return Err(format!("{name}: {v:?} is not a name (lowercase letters, digits, '-')"));
        }
    }
    q.filter.validate()?;
    Ok(q)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// `GET /v1/tap`.
pub async fn tap(State(st): State<Arc<ApiState>>, headers: HeaderMap, uri: Uri) -> Result<Response, ApiError> {
    require_read(&st, &headers)?;
    let q = parse(&query_pairs(&uri)).map_err(bad)?;
    let local = st.mesh.cluster.name.clone();
    let peers = crate::tap::remote::peers(&st.store, &st.federation);
    let (here, peers): (bool, Vec<_>) = match q.cluster.as_deref() {
        None => (true, vec![]),
        Some("all") => (true, peers),
        Some(c) if c == local => (true, vec![]),
        Some(c) => match peers.into_iter().find(|p| p.cluster == c) {
            Some(p) => (false, vec![p]),
            None => {
                return Err(ApiError(
                    StatusCode::NOT_FOUND,
                    format!("cluster: this cluster ({local}) has no link to {c:?} (see `weft link list`)"),
                ))
            }
        },
    };
    // Every source (this cluster's tap, each linked cluster's) sends into one channel; the body
    // dropped (client gone, or done) closes it, and each source ends with it.
    let (tx, rx) = mpsc::channel::<Result<TapEvent, String>>(crate::tap::SINK);
    if here {
        let mut tap = st.proxies.tap().open(q.target.clone(), q.filter.clone(), now_ms() + q.seconds * 1000);
        tracing::info!(tap = tap.id, max = q.max, seconds = q.seconds, "tap opened");
        let tx = tx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    e = tap.events.recv() => match e {
                        Some(e) => if tx.send(Ok(e)).await.is_err() { break },
                        None => break,
                    },
                    _ = tx.closed() => break,
                }
            }
        });
    }
    for peer in peers {
        let req = pb::FederationTapRequest {
            cluster: String::new(),
            namespace: q.target.namespace.clone(),
            service: q.target.service.clone(),
            workload: q.target.workload.clone(),
            filter: Some(pb::Tap {
                src: q.filter.src.clone(),
                dst: q.filter.dst.clone(),
                path: q.filter.path.clone(),
                method: q.filter.method.clone(),
                status: q.filter.status.clone(),
                ..Default::default()
            }),
            max: q.max,
            seconds: q.seconds,
        };
        tokio::spawn(crate::tap::remote::follow(peer, local.clone(), req, tx.clone()));
    }
    drop(tx);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.seconds);
    let lines = futures_util::stream::unfold((rx, q.max), move |(mut rx, left)| async move {
        if left == 0 {
            return None;
        }
        let next = async {
            loop {
                match rx.recv().await? {
                    Ok(e) => return Some(e),
                    Err(e) => tracing::warn!(error = %e, "tap of a linked cluster failed"),
                }
            }
        };
        let event = tokio::time::timeout_at(deadline, next).await.ok().flatten()?;
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, std::convert::Infallible>(bytes::Bytes::from(line)), (rx, left - 1)))
    });
    let mut resp = (StatusCode::OK, Body::from_stream(lines)).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `GET /v1/proxies/{id}/config`: the proxy's effective config as it reports it (its
/// `/config_dump`), asked over its discovery stream.
pub async fn proxy_config(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    require_read(&st, &headers)?;
    match st.proxies.tap().config_dump(&id).await {
        Ok(v) => Ok(axum::Json(v).into_response()),
        Err(e @ crate::tap::DumpError::NotConnected(_)) => Err(ApiError(StatusCode::NOT_FOUND, e.to_string())),
        Err(e) => Err(ApiError(StatusCode::GATEWAY_TIMEOUT, e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_query_is_read_and_bad_parameters_named() {
        let q = parse(&pairs(&[("namespace", "demo"), ("service", "api"), ("status", "5xx"), ("max", "5")])).unwrap();
        assert_eq!((q.target.namespace.as_str(), q.target.service.as_str(), q.max), ("demo", "api", 5));
        assert_eq!(q.seconds, DEFAULT_SECONDS);
        let e = parse(&pairs(&[("nope", "1"), ("also", "2")])).unwrap_err();
        assert!(e.contains("nope, also"), "{e}");
        assert!(parse(&pairs(&[("max", "0")])).unwrap_err().starts_with("max"));
        assert!(parse(&pairs(&[("max", "10001")])).unwrap_err().starts_with("max"));
        assert!(parse(&pairs(&[("seconds", "601")])).unwrap_err().starts_with("seconds"));
        assert!(parse(&pairs(&[("status", "7xx")])).unwrap_err().starts_with("status"));
        assert!(parse(&pairs(&[("namespace", "Demo")])).unwrap_err().starts_with("namespace"));
    }
}
